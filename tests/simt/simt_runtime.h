/* Stand-in for the subset of the CUDA runtime API that kernels/cuda calls, with the real names,
 * signatures and error codes (values as in driver_types.h), implemented in runtime.cc on the
 * host: device memory is heap memory (tracked, so a host pointer passed where device memory is
 * expected, a copy in the wrong direction or past the end of an allocation is an error, as on the
 * GPU), copies are synchronous, streams and events are bookkeeping only. Add a function here and
 * in runtime.cc when the backend starts calling it. */
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
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream);
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

namespace simt {
/* True when [p, p + bytes) lies inside one live cudaMalloc allocation. */
bool is_device_range(const void *p, size_t bytes);
/* Records a launch-configuration error for cudaGetLastError (emulator.cc). */
void set_last_error(cudaError_t e);
} // namespace simt

#endif
