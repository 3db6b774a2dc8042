/* Emulator self-test kernels (selftest.h), compiled only by the simt build. */
#include "../../kernels/cuda/launch.h"
#include "selftest.h"

#define FULL 0xffffffffu

/* Emulated device copies of host arrays. */
template <typename T>
static T *to_device(const T *host, size_t n) {
    T *d = nullptr;
    if (cudaMalloc((void **)&d, n * sizeof(T)) != cudaSuccess) __builtin_trap();
    if (host && cudaMemcpy(d, host, n * sizeof(T), cudaMemcpyHostToDevice) != cudaSuccess)
        __builtin_trap();
    return d;
}
template <typename T>
static void to_host(T *host, const T *d, size_t n) {
    if (cudaMemcpy(host, d, n * sizeof(T), cudaMemcpyDeviceToHost) != cudaSuccess) __builtin_trap();
    cudaFree((void *)d);
}

__global__ void block_sums_kernel(float *out, const float *in, int n) {
    MS_SHARED(float, partial, [8]);
    int i = blockIdx.x * 256 + threadIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float v = i < n ? in[i] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(FULL, v, o);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < 8 ? partial[lane] : 0.0f;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(FULL, v, o);
        if (lane == 0) out[blockIdx.x] = v;
    }
}

__global__ void reverse_kernel(float *out, const float *in, int with_barrier) {
    MS_DYNAMIC_SMEM(float, s);
    int t = threadIdx.x, n = blockDim.x;
    size_t base = (size_t)blockIdx.x * n;
    s[t] = in[base + t];
    if (with_barrier) __syncthreads();
    out[base + t] = s[n - 1 - t];
}

__global__ void warp_ops_kernel(int *out) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int *o = out + threadIdx.x * SELFTEST_WARP_RESULTS;
    o[0] = __shfl_sync(FULL, lane * 10, (lane + 3) & 31);
    o[1] = __shfl_sync(FULL, lane, 2, 8);
    o[2] = __shfl_up_sync(FULL, lane, 3);
    o[3] = __shfl_down_sync(FULL, lane, 5, 16);
    o[4] = __shfl_xor_sync(FULL, lane, 1);
    o[5] = (int)__ballot_sync(FULL, lane % 3 == 0);
    o[6] = __any_sync(FULL, lane == 7 && warp == 1);
    o[7] = __all_sync(FULL, lane < 32) + 2 * __all_sync(FULL, lane < 31);
    o[8] = (int)__match_any_sync(FULL, lane / 4);
    if (lane < 16) /* two independent half-warp collectives */
        o[9] = __shfl_xor_sync(0x0000ffffu, lane, 8);
    else
        o[9] = __shfl_sync(0xffff0000u, lane, 31);
    o[10] = (int)(2.0 * __shfl_xor_sync(FULL, lane + 0.25, 2));
}

__global__ void atomics_kernel(int *counter, float *sum, int *mx, int *winner) {
    int id = blockIdx.x * blockDim.x + threadIdx.x;
    atomicAdd(counter, 1);
    atomicAdd(sum, 0.5f);
    atomicMax(mx, id);
    atomicCAS(winner, -1, id);
}

__global__ void indices_kernel(int *out) {
    int bl = blockIdx.x + gridDim.x * blockIdx.y;
    int th = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    int threads = blockDim.x * blockDim.y * blockDim.z;
    out[bl * threads + th] = threadIdx.x | threadIdx.y << 4 | threadIdx.z << 8 | blockIdx.x << 12 |
                             blockIdx.y << 16 | blockIdx.z << 20;
}

__global__ void nothing_kernel() {}

extern "C" void selftest_block_sums(float *out, const float *in, int n) {
    int blocks = (n + 255) / 256;
    float *din = to_device(in, (size_t)n), *dout = to_device<float>(nullptr, (size_t)blocks);
    MS_LAUNCH(block_sums_kernel, blocks, 256, 0, nullptr, dout, din, n);
    to_host(out, dout, (size_t)blocks);
    cudaFree(din);
}

extern "C" void selftest_reverse(float *out, const float *in, int blocks, int threads,
                                 int with_barrier) {
    size_t n = (size_t)blocks * threads;
    float *din = to_device(in, n), *dout = to_device<float>(nullptr, n);
    MS_LAUNCH(reverse_kernel, blocks, threads, threads * sizeof(float), nullptr, dout, din,
              with_barrier);
    to_host(out, dout, n);
    cudaFree(din);
}

extern "C" void selftest_warp_ops(int *out) {
    int *d = to_device<int>(nullptr, 64 * SELFTEST_WARP_RESULTS);
    MS_LAUNCH(warp_ops_kernel, 1, 64, 0, nullptr, d);
    to_host(out, d, 64 * SELFTEST_WARP_RESULTS);
}

extern "C" void selftest_atomics(float *out) {
    int init[3] = {0, -1, -1};
    float zero = 0.0f;
    int *counter = to_device(&init[0], 1), *mx = to_device(&init[1], 1),
        *winner = to_device(&init[2], 1);
    float *sum = to_device(&zero, 1);
    MS_LAUNCH(atomics_kernel, 3, 96, 0, nullptr, counter, sum, mx, winner);
    int c, m, w;
    to_host(&c, counter, 1);
    to_host(&m, mx, 1);
    to_host(&w, winner, 1);
    to_host(&out[1], sum, 1);
    out[0] = (float)c, out[2] = (float)m, out[3] = (float)w;
}

extern "C" void selftest_indices(int *out) {
    int *d = to_device<int>(nullptr, 2 * 3 * 16);
    MS_LAUNCH(indices_kernel, dim3(2, 3, 1), dim3(4, 2, 2), 0, nullptr, d);
    to_host(out, d, 2 * 3 * 16);
}

extern "C" void selftest_bad_config(int *first, int *second) {
    /* Straight to the emulator: MS_LAUNCH would (rightly) stop the program. */
    ::simt::launch("nothing_kernel", SIMT_SITE, dim3(1), dim3(2048), 0, nullptr,
                   [] { nothing_kernel(); });
    *first = (int)cudaGetLastError();
    *second = (int)cudaGetLastError();
}
