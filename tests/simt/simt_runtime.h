/* Stand-in for the subset of the CUDA runtime API that kernels/cuda calls, with the real names,
 * signatures and error codes (values as in driver_types.h), implemented in runtime.cc on the
 * host: device memory is heap memory (tracked, so a host pointer passed where device memory is
 * expected, a copy in the wrong direction or past the end of an allocation is an error, as on the
 * GPU), copies are synchronous, streams and events are bookkeeping only, except for the library
 * work that completes later (simt::stream_begin_work below). Add a function here and in
 * runtime.cc when the backend starts calling it.
 *
 * Threads. The NCCL tests run their ranks as host threads of one process, each with its own
 * device (cudaSetDevice is per host thread, as is the sticky launch error). Every call here
 * and every kernel launch holds one process-wide lock, so the emulator and its bookkeeping see
 * one caller at a time. */
#ifndef MS_SIMT_RUNTIME_H
#define MS_SIMT_RUNTIME_H

#include <stddef.h>

extern "C" {

typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDevicePointer = 17,
    cudaErrorInvalidMemcpyDirection = 21,
    cudaErrorInsufficientDriver = 35,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorNotReady = 600,
} cudaError_t;

enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
};

typedef struct simt_stream *cudaStream_t;
typedef struct simt_event *cudaEvent_t;

#define cudaStreamDefault 0x00
#define cudaStreamNonBlocking 0x01

#define cudaEventDefault 0x00
#define cudaEventBlockingSync 0x01
#define cudaEventDisableTiming 0x02

/* The members of cudaDeviceProp that kernels/cuda reads. */
struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem;
    int multiProcessorCount;
    int major, minor;
};

cudaError_t cudaGetDeviceCount(int *count);
cudaError_t cudaDriverGetVersion(int *version);
cudaError_t cudaRuntimeGetVersion(int *version);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int *device);
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *prop, int device);
cudaError_t cudaDeviceSynchronize(void);

cudaError_t cudaMalloc(void **ptr, size_t bytes);
cudaError_t cudaFree(void *ptr);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind,
                            cudaStream_t stream);
cudaError_t cudaMemset(void *dst, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void *dst, int value, size_t bytes, cudaStream_t stream);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);

cudaError_t cudaStreamCreate(cudaStream_t *stream);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);

cudaError_t cudaEventCreate(cudaEvent_t *event);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream);
/* cudaErrorNotReady while library work queued on the stream before the record is running. */
cudaError_t cudaEventQuery(cudaEvent_t event);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end);

/* The sticky launch error as on the GPU: cudaGetLastError returns and clears it. */
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
const char *cudaGetErrorString(cudaError_t error);
const char *cudaGetErrorName(cudaError_t error);

/* ---- emulator controls (not CUDA API) -------------------------------------------------------- */
/* How many devices cudaGetDeviceCount reports (default 1): tests of the no-GPU paths set 0. */
void simt_set_device_count(int n);
/* Bytes of emulated device memory currently allocated (leak checks in tests). */
size_t simt_device_bytes_in_use(void);
}

#include <cstdint>
#include <mutex>

namespace simt {
/* True when [p, p + bytes) lies inside one live cudaMalloc allocation. */
bool is_device_range(const void *p, size_t bytes);
/* Records a launch-configuration error for cudaGetLastError (emulator.cc). */
void set_last_error(cudaError_t e);
/* The process-wide lock of the runtime and of kernel launches (recursive: a call may make
 * another). */
std::recursive_mutex &api_mutex();

/* Library work queued on a stream that completes later, from whichever host thread completes
 * it: the NCCL stand-in's collectives, which finish when the last rank arrives. begin checks the
 * stream and hands out a ticket; end retires it. Until then events recorded on the stream after
 * it are not ready, and what is queued behind it (copies, memsets, kernel launches, cuBLAS
 * calls, stream and event synchronisation) waits for it on the host: the emulator runs every
 * operation when it is queued, and this keeps the stream's order. A GPU would not hold the
 * host there, so a backend that queues more work behind a collective that never completes
 * hangs here where the GPU would hang at its next synchronisation. */
cudaError_t stream_begin_work(cudaStream_t stream, uint64_t *ticket);
void stream_end_work(cudaStream_t stream, uint64_t ticket);
/* Blocks until the library work queued on the stream so far has completed (nullptr: every
 * stream's, as cudaDeviceSynchronize). */
void stream_wait(cudaStream_t stream);
} // namespace simt

#endif
