/* CUDA runtime stand-in (declarations and scope in simt_runtime.h).
 *
 * Device memory is heap memory of the exact requested size (ASan reports an access past its
 * end), 256-byte aligned as cudaMalloc's. Live allocations are tracked so that the API can
 * refuse what a GPU would refuse: copies whose "device" side is not device memory (or runs past
 * an allocation), a host pointer given to cudaMemset or cudaFree, a double free. Kernels run to
 * completion inside their launch, so every copy is synchronous and streams, events and
 * synchronisation only check their handles, except around library work that completes later
 * (stream_begin_work: the NCCL stand-in's collectives), which events and whatever is queued
 * behind it wait for.
 *
 * Threads: every API call holds api_mutex(); the current device and the sticky launch error
 * belong to the calling host thread, as in the CUDA runtime. A wait for library work holds only
 * the work lock, never the API lock, so the thread that completes the work can get on. */
/* The standard headers first: simt.h's CUDA keyword macros (__noinline__) would break them. */
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>

#include "simt.h"

namespace {

std::map<uintptr_t, size_t> g_allocs; /* start -> bytes of every live cudaMalloc */
size_t g_bytes_in_use;
int g_devices = 1;
thread_local int g_current_device;
thread_local cudaError_t g_last_error = cudaSuccess;
std::set<const void *> g_streams;
std::map<const void *, unsigned> g_events;   /* event -> its creation flags */
std::map<const void *, double> g_event_time; /* event -> seconds when recorded */

std::recursive_mutex g_api;
using api_lock = std::lock_guard<std::recursive_mutex>;

/* Library work in flight on one stream. */
struct stream_work {
    uint64_t next = 1;          /* the next ticket */
    std::set<uint64_t> pending; /* tickets begun and not yet ended */
};
/* Under g_work_mu; g_work_cv announces every retirement. */
std::mutex g_work_mu;
std::condition_variable g_work_cv;
std::map<const void *, stream_work> g_work;
/* event -> its stream and the first ticket its last record does NOT wait for */
std::map<const void *, std::pair<const void *, uint64_t>> g_event_work;

/* Work queued on `stream` before ticket `before` still runs (g_work_mu held). */
bool busy_before(const void *stream, uint64_t before) {
    auto it = g_work.find(stream);
    return it != g_work.end() && !it->second.pending.empty() &&
           *it->second.pending.begin() < before;
}

bool any_busy() {
    for (const auto &w : g_work)
        if (!w.second.pending.empty()) return true;
    return false;
}

/* The first ticket not yet handed out on `stream` (g_work_mu held). */
uint64_t next_ticket(const void *stream) {
    auto it = g_work.find(stream);
    return it == g_work.end() ? 1 : it->second.next;
}

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

bool is_device_range(const void *p, size_t bytes) {
    api_lock hold(g_api);
    return find_alloc(p, bytes) != g_allocs.end();
}

void set_last_error(cudaError_t e) {
    if (g_last_error == cudaSuccess) g_last_error = e;
}

std::recursive_mutex &api_mutex() { return g_api; }

cudaError_t stream_begin_work(cudaStream_t stream, uint64_t *ticket) {
    {
        api_lock hold(g_api);
        if (!stream_ok(stream)) return cudaErrorInvalidResourceHandle;
    }
    std::lock_guard<std::mutex> hold(g_work_mu);
    stream_work &w = g_work[stream];
    *ticket = w.next++;
    w.pending.insert(*ticket);
    return cudaSuccess;
}

void stream_end_work(cudaStream_t stream, uint64_t ticket) {
    {
        std::lock_guard<std::mutex> hold(g_work_mu);
        auto it = g_work.find(stream);
        if (it == g_work.end() || !it->second.pending.erase(ticket)) {
            std::fprintf(stderr, "simt: ticket %llu of stream %p ended twice or never began\n",
                         (unsigned long long)ticket, (const void *)stream);
            std::abort();
        }
    }
    g_work_cv.notify_all();
}

void stream_wait(cudaStream_t stream) {
    std::unique_lock<std::mutex> hold(g_work_mu);
    if (!stream) {
        g_work_cv.wait(hold, [] { return !any_busy(); });
        return;
    }
    uint64_t before = next_ticket(stream);
    g_work_cv.wait(hold, [&] { return !busy_before(stream, before); });
}

} // namespace simt

extern "C" {

cudaError_t cudaGetDeviceCount(int *count) {
    api_lock hold(g_api);
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
    api_lock hold(g_api);
    if (device < 0 || device >= g_devices) return cudaErrorInvalidDevice;
    g_current_device = device;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device) {
    api_lock hold(g_api);
    if (!device) return cudaErrorInvalidValue;
    if (!g_devices) return cudaErrorNoDevice;
    *device = g_current_device;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device) {
    api_lock hold(g_api);
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

cudaError_t cudaDeviceSynchronize(void) {
    {
        api_lock hold(g_api);
        if (!g_devices) return cudaErrorNoDevice;
    }
    simt::stream_wait(nullptr);
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **ptr, size_t bytes) {
    api_lock hold(g_api);
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
    api_lock hold(g_api);
    if (!ptr) return cudaSuccess;
    auto it = g_allocs.find((uintptr_t)ptr);
    if (it == g_allocs.end()) return cudaErrorInvalidDevicePointer;
    g_bytes_in_use -= it->second;
    g_allocs.erase(it);
    std::free(ptr);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    api_lock hold(g_api);
    cudaError_t e = check_copy(dst, src, bytes, kind);
    if (e == cudaSuccess && bytes) std::memmove(dst, src, bytes);
    return e;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
    simt::stream_wait(stream);
    api_lock hold(g_api);
    if (!stream_ok(stream)) return cudaErrorInvalidResourceHandle;
    return cudaMemcpy(dst, src, bytes, kind);
}

cudaError_t cudaMemset(void *dst, int value, size_t bytes) {
    api_lock hold(g_api);
    if (bytes == 0) return cudaSuccess;
    if (!simt::is_device_range(dst, bytes)) return cudaErrorInvalidValue;
    std::memset(dst, value, bytes);
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *dst, int value, size_t bytes, cudaStream_t stream) {
    simt::stream_wait(stream);
    api_lock hold(g_api);
    if (!stream_ok(stream)) return cudaErrorInvalidResourceHandle;
    return cudaMemset(dst, value, bytes);
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    api_lock hold(g_api);
    if (!free_bytes || !total_bytes) return cudaErrorInvalidValue;
    *total_bytes = (size_t)1 << 34;
    *free_bytes = *total_bytes > g_bytes_in_use ? *total_bytes - g_bytes_in_use : 0;
    return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *stream) { return cudaStreamCreateWithFlags(stream, 0); }

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned flags) {
    api_lock hold(g_api);
    if (!stream || flags > cudaStreamNonBlocking) return cudaErrorInvalidValue;
    if (!g_devices) return cudaErrorNoDevice;
    /* A distinct non-null handle; nothing is ever stored behind it. */
    *stream = reinterpret_cast<cudaStream_t>(new char);
    g_streams.insert(*stream);
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    simt::stream_wait(stream); /* the GPU finishes a destroyed stream's work */
    api_lock hold(g_api);
    if (!stream || !g_streams.erase(stream)) return cudaErrorInvalidResourceHandle;
    {
        std::lock_guard<std::mutex> work(g_work_mu);
        g_work.erase(stream);
    }
    delete reinterpret_cast<char *>(stream);
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
    {
        api_lock hold(g_api);
        if (!stream_ok(stream)) return cudaErrorInvalidResourceHandle;
    }
    simt::stream_wait(stream);
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *event) { return cudaEventCreateWithFlags(event, 0); }

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned flags) {
    api_lock hold(g_api);
    if (!event || flags > (cudaEventBlockingSync | cudaEventDisableTiming))
        return cudaErrorInvalidValue;
    *event = reinterpret_cast<cudaEvent_t>(new char);
    g_events[*event] = flags;
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
    api_lock hold(g_api);
    if (!event || !g_events.erase(event)) return cudaErrorInvalidResourceHandle;
    g_event_time.erase(event);
    {
        std::lock_guard<std::mutex> work(g_work_mu);
        g_event_work.erase(event);
    }
    delete reinterpret_cast<char *>(event);
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
    api_lock hold(g_api);
    if (!g_events.count(event) || !stream_ok(stream)) return cudaErrorInvalidResourceHandle;
    g_event_time[event] = now_seconds();
    std::lock_guard<std::mutex> work(g_work_mu);
    g_event_work[event] = {stream, next_ticket(stream)};
    return cudaSuccess;
}

cudaError_t cudaEventQuery(cudaEvent_t event) {
    api_lock hold(g_api);
    if (!g_events.count(event)) return cudaErrorInvalidResourceHandle;
    std::lock_guard<std::mutex> work(g_work_mu);
    auto it = g_event_work.find(event); /* never recorded: complete, as in CUDA */
    return it != g_event_work.end() && busy_before(it->second.first, it->second.second)
               ? cudaErrorNotReady
               : cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
    {
        api_lock hold(g_api);
        if (!g_events.count(event)) return cudaErrorInvalidResourceHandle;
    }
    std::unique_lock<std::mutex> work(g_work_mu);
    auto it = g_event_work.find(event);
    if (it == g_event_work.end()) return cudaSuccess;
    std::pair<const void *, uint64_t> at = it->second;
    g_work_cv.wait(work, [&] { return !busy_before(at.first, at.second); });
    return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    api_lock hold(g_api);
    if (!ms) return cudaErrorInvalidValue;
    auto fa = g_events.find(start), fb = g_events.find(end);
    if (fa == g_events.end() || fb == g_events.end() ||
        ((fa->second | fb->second) & cudaEventDisableTiming))
        return cudaErrorInvalidResourceHandle;
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
    case cudaErrorNotReady:
        return "cudaErrorNotReady";
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
    case cudaErrorNotReady:
        return "device not ready";
    }
    return "unknown error";
}

void simt_set_device_count(int n) {
    api_lock hold(g_api);
    g_devices = n < 0 ? 0 : n;
}

size_t simt_device_bytes_in_use(void) {
    api_lock hold(g_api);
    return g_bytes_in_use;
}
}
