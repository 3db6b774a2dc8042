/* CUDA runtime stand-in (declarations and scope in simt_runtime.h).
 *
 * Device memory is heap memory of the exact requested size (ASan reports an access past its
 * end), 256-byte aligned as cudaMalloc's. Live allocations are tracked so that the API can
 * refuse what a GPU would refuse: copies whose "device" side is not device memory (or runs past
 * an allocation), a host pointer given to cudaMemset or cudaFree, a double free. Kernels run to
 * completion inside their launch, so every copy is synchronous and streams, events and
 * synchronisation only check their handles. */
#include "simt.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>

namespace {

std::map<uintptr_t, size_t> g_allocs; /* start -> bytes of every live cudaMalloc */
size_t g_bytes_in_use;
int g_devices = 1;
int g_current_device;
cudaError_t g_last_error = cudaSuccess;
std::set<const void *> g_streams, g_events;
std::map<const void *, double> g_event_time; /* event -> seconds when recorded */

/* The allocation containing [p, p + bytes), or g_allocs.end(). */
std::map<uintptr_t, size_t>::const_iterator find_alloc(const void *p, size_t bytes) {
    uintptr_t a = (uintptr_t)p;
    auto it = g_allocs.upper_bound(a);
    if (it == g_allocs.begin()) return g_allocs.end();
    --it;
    if (a < it->first || a + bytes > it->first + it->second || a + bytes < a) return g_allocs.end();
    return it;
}

bool any_device_overlap(const void *p, size_t bytes) {
    uintptr_t a = (uintptr_t)p;
    auto it = g_allocs.upper_bound(a + (bytes ? bytes - 1 : 0));
    if (it == g_allocs.begin()) return false;
    --it;
    return it->first + it->second > a;
}

bool stream_ok(cudaStream_t s) { return s == nullptr || g_streams.count(s) != 0; }

/* Errors of the API calls themselves are returned, not sticky; launch errors are sticky until
 * cudaGetLastError, as in the real runtime. */
cudaError_t check_copy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    if (bytes == 0) return cudaSuccess;
    if (!dst || !src) return cudaErrorInvalidValue;
    bool dst_dev = simt::is_device_range(dst, bytes), src_dev = simt::is_device_range(src, bytes);
    switch (kind) {
    case cudaMemcpyHostToDevice:
        if (!dst_dev || any_device_overlap(src, bytes)) return cudaErrorInvalidValue;
        break;
    case cudaMemcpyDeviceToHost:
        if (!src_dev || any_device_overlap(dst, bytes)) return cudaErrorInvalidValue;
        break;
    case cudaMemcpyDeviceToDevice:
        if (!src_dev || !dst_dev) return cudaErrorInvalidValue;
        break;
    case cudaMemcpyHostToHost:
        if (any_device_overlap(src, bytes) || any_device_overlap(dst, bytes))
            return cudaErrorInvalidValue;
        break;
    case cudaMemcpyDefault:
        if ((!dst_dev && any_device_overlap(dst, bytes)) ||
            (!src_dev && any_device_overlap(src, bytes)))
            return cudaErrorInvalidValue;
        break;
    default:
        return cudaErrorInvalidMemcpyDirection;
    }
    return cudaSuccess;
}

double now_seconds() {
    using clock = std::chrono::steady_clock;
    return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

} // namespace

namespace simt {

bool is_device_range(const void *p, size_t bytes) { return find_alloc(p, bytes) != g_allocs.end(); }

void set_last_error(cudaError_t e) {
    if (g_last_error == cudaSuccess) g_last_error = e;
}

} // namespace simt

extern "C" {

cudaError_t cudaGetDeviceCount(int *count) {
    if (!count) return cudaErrorInvalidValue;
    *count = g_devices;
    return g_devices ? cudaSuccess : cudaErrorNoDevice;
}

/* The emulator stands in for CUDA 13.0, driver and runtime alike. */
cudaError_t cudaDriverGetVersion(int *version) {
    if (!version) return cudaErrorInvalidValue;
    *version = 13000;
    return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int *version) {
    if (!version) return cudaErrorInvalidValue;
    *version = 13000;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
    if (device < 0 || device >= g_devices) return cudaErrorInvalidDevice;
    g_current_device = device;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device) {
    if (!device) return cudaErrorInvalidValue;
    if (!g_devices) return cudaErrorNoDevice;
    *device = g_current_device;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device) {
    if (!prop) return cudaErrorInvalidValue;
    if (device < 0 || device >= g_devices) return cudaErrorInvalidDevice;
    std::memset(prop, 0, sizeof *prop);
    std::snprintf(prop->name, sizeof prop->name, "simt emulator (CPU)");
    prop->totalGlobalMem = (size_t)1 << 34;
    prop->multiProcessorCount = 1;
    prop->major = 9;
    prop->minor = 0;
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) { return g_devices ? cudaSuccess : cudaErrorNoDevice; }

cudaError_t cudaMalloc(void **ptr, size_t bytes) {
    if (!ptr) return cudaErrorInvalidValue;
    *ptr = nullptr;
    if (!g_devices) return cudaErrorNoDevice;
    void *p = nullptr;
    if (posix_memalign(&p, 256, bytes ? bytes : 1) != 0) return cudaErrorMemoryAllocation;
    /* Fresh device memory holds garbage, not zeros. */
    std::memset(p, 0xa5, bytes);
    g_allocs[(uintptr_t)p] = bytes ? bytes : 1; /* a zero-byte allocation still owns an address */
    g_bytes_in_use += bytes ? bytes : 1;
    *ptr = p;
    return cudaSuccess;
}

cudaError_t cudaFree(void *ptr) {
    if (!ptr) return cudaSuccess;
    auto it = g_allocs.find((uintptr_t)ptr);
    if (it == g_allocs.end()) return cudaErrorInvalidDevicePointer;
    g_bytes_in_use -= it->second;
    g_allocs.erase(it);
    std::free(ptr);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    cudaError_t e = check_copy(dst, src, bytes, kind);
    if (e == cudaSuccess && bytes) std::memmove(dst, src, bytes);
    return e;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
    if (!stream_ok(stream)) return cudaErrorInvalidResourceHandle;
    return cudaMemcpy(dst, src, bytes, kind);
}

cudaError_t cudaMemset(void *dst, int value, size_t bytes) {
    if (bytes == 0) return cudaSuccess;
    if (!simt::is_device_range(dst, bytes)) return cudaErrorInvalidValue;
    std::memset(dst, value, bytes);
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *dst, int value, size_t bytes, cudaStream_t stream) {
    if (!stream_ok(stream)) return cudaErrorInvalidResourceHandle;
    return cudaMemset(dst, value, bytes);
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    if (!free_bytes || !total_bytes) return cudaErrorInvalidValue;
    *total_bytes = (size_t)1 << 34;
    *free_bytes = *total_bytes > g_bytes_in_use ? *total_bytes - g_bytes_in_use : 0;
    return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *stream) { return cudaStreamCreateWithFlags(stream, 0); }

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned flags) {
    if (!stream || flags > cudaStreamNonBlocking) return cudaErrorInvalidValue;
    if (!g_devices) return cudaErrorNoDevice;
    /* A distinct non-null handle; nothing is ever stored behind it. */
    *stream = reinterpret_cast<cudaStream_t>(new char);
    g_streams.insert(*stream);
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    if (!stream || !g_streams.erase(stream)) return cudaErrorInvalidResourceHandle;
    delete reinterpret_cast<char *>(stream);
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
    return stream_ok(stream) ? cudaSuccess : cudaErrorInvalidResourceHandle;
}

cudaError_t cudaEventCreate(cudaEvent_t *event) {
    if (!event) return cudaErrorInvalidValue;
    *event = reinterpret_cast<cudaEvent_t>(new char);
    g_events.insert(*event);
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
    if (!event || !g_events.erase(event)) return cudaErrorInvalidResourceHandle;
    g_event_time.erase(event);
    delete reinterpret_cast<char *>(event);
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
    if (!g_events.count(event) || !stream_ok(stream)) return cudaErrorInvalidResourceHandle;
    g_event_time[event] = now_seconds();
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
    return g_events.count(event) ? cudaSuccess : cudaErrorInvalidResourceHandle;
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    if (!ms) return cudaErrorInvalidValue;
    auto a = g_event_time.find(start), b = g_event_time.find(end);
    if (a == g_event_time.end() || b == g_event_time.end()) return cudaErrorInvalidResourceHandle;
    *ms = (float)((b->second - a->second) * 1e3);
    return cudaSuccess;
}

cudaError_t cudaGetLastError(void) {
    cudaError_t e = g_last_error;
    g_last_error = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError(void) { return g_last_error; }

const char *cudaGetErrorName(cudaError_t error) {
    switch (error) {
    case cudaSuccess:
        return "cudaSuccess";
    case cudaErrorInvalidValue:
        return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation:
        return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration:
        return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer:
        return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection:
        return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorInsufficientDriver:
        return "cudaErrorInsufficientDriver";
    case cudaErrorNoDevice:
        return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice:
        return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle:
        return "cudaErrorInvalidResourceHandle";
    }
    return "cudaErrorUnknown";
}

const char *cudaGetErrorString(cudaError_t error) {
    switch (error) {
    case cudaSuccess:
        return "no error";
    case cudaErrorInvalidValue:
        return "invalid argument";
    case cudaErrorMemoryAllocation:
        return "out of memory";
    case cudaErrorInvalidConfiguration:
        return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer:
        return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection:
        return "invalid copy direction for memcpy";
    case cudaErrorInsufficientDriver:
        return "CUDA driver version is insufficient for CUDA runtime version";
    case cudaErrorNoDevice:
        return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice:
        return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle:
        return "invalid resource handle";
    }
    return "unknown error";
}

void simt_set_device_count(int n) { g_devices = n < 0 ? 0 : n; }

size_t simt_device_bytes_in_use(void) { return g_bytes_in_use; }
}
