/* build/tests/simt_faults FAULT: runs one deliberately broken kernel under the emulator, for the
 * tests of what it reports (tests/simt/test_emulator.c runs this in a subprocess and checks the
 * exit status and message). Exits 0 only when the fault went unnoticed. */
#include "../../kernels/cuda/launch.h"

#include <cstdio>
#include <cstring>

#define FULL 0xffffffffu

/* Half of the block returns before the barrier the other half waits at. */
__global__ void partial_barrier_kernel(float *out) {
    if (threadIdx.x >= 16) return;
    __syncthreads();
    out[threadIdx.x] = 1.0f;
}

/* Both halves reach "a" barrier, but not the same one. */
__global__ void divergent_barrier_kernel(float *out) {
    if (threadIdx.x < 32) {
        __syncthreads();
    } else {
        __syncthreads();
    }
    out[threadIdx.x] = 1.0f;
}

/* Lanes 0-15 name the whole warp, lanes 16-31 only their half. */
__global__ void mismatched_masks_kernel(float *out) {
    unsigned mask = threadIdx.x < 16 ? FULL : 0xffff0000u;
    out[threadIdx.x] = __shfl_xor_sync(mask, (float)threadIdx.x, 1);
}

/* Lane 5 leaves; the others shuffle with a mask that still names it. */
__global__ void exited_lane_kernel(float *out) {
    if (threadIdx.x == 5) return;
    out[threadIdx.x] = __shfl_down_sync(FULL, (float)threadIdx.x, 1);
}

/* A half-warp collective reading a lane of the other half. */
__global__ void lane_outside_mask_kernel(float *out) {
    if (threadIdx.x < 16) out[threadIdx.x] = __shfl_sync(0x0000ffffu, (float)threadIdx.x, 20);
}

/* Thread 31 writes one float past a 32-float static shared array. */
__global__ void oob_static_shared_kernel(float *out) {
    MS_SHARED(float, s, [32]);
    s[threadIdx.x + 1] = (float)threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = s[threadIdx.x];
}

/* Thread 31 reads one float past the launch's 32 floats of dynamic shared memory. */
__global__ void oob_dynamic_shared_kernel(float *out) {
    MS_DYNAMIC_SMEM(float, s);
    s[threadIdx.x] = (float)threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = s[threadIdx.x + 1];
}

/* The last thread writes out[32] of a 32-float device buffer. */
__global__ void oob_global_kernel(float *out) { out[threadIdx.x + 1] = 1.0f; }

__global__ void trap_kernel(float *out) {
    if (threadIdx.x == 3) __trap();
    out[threadIdx.x] = 0.0f;
}

__global__ void empty_kernel(float *out) { out[threadIdx.x] = 0.0f; }

int main(int argc, char **argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: simt_faults FAULT\n");
        return 2;
    }
    const char *f = argv[1];
    float *out = nullptr;
    if (cudaMalloc((void **)&out, 64 * sizeof(float)) != cudaSuccess) return 3;
    float *out32 = nullptr;
    if (cudaMalloc((void **)&out32, 32 * sizeof(float)) != cudaSuccess) return 3;
    if (!std::strcmp(f, "partial_barrier"))
        MS_LAUNCH(partial_barrier_kernel, 1, 32, 0, nullptr, out);
    else if (!std::strcmp(f, "divergent_barrier"))
        MS_LAUNCH(divergent_barrier_kernel, 1, 64, 0, nullptr, out);
    else if (!std::strcmp(f, "mismatched_masks"))
        MS_LAUNCH(mismatched_masks_kernel, 1, 32, 0, nullptr, out);
    else if (!std::strcmp(f, "exited_lane"))
        MS_LAUNCH(exited_lane_kernel, 1, 32, 0, nullptr, out);
    else if (!std::strcmp(f, "lane_outside_mask"))
        MS_LAUNCH(lane_outside_mask_kernel, 1, 32, 0, nullptr, out);
    else if (!std::strcmp(f, "oob_static_shared"))
        MS_LAUNCH(oob_static_shared_kernel, 1, 32, 0, nullptr, out);
    else if (!std::strcmp(f, "oob_dynamic_shared"))
        MS_LAUNCH(oob_dynamic_shared_kernel, 1, 32, 32 * sizeof(float), nullptr, out);
    else if (!std::strcmp(f, "oob_global"))
        MS_LAUNCH(oob_global_kernel, 1, 32, 0, nullptr, out32);
    else if (!std::strcmp(f, "trap"))
        MS_LAUNCH(trap_kernel, 1, 32, 0, nullptr, out);
    else if (!std::strcmp(f, "bad_config"))
        MS_LAUNCH(empty_kernel, 1, 2048, 0, nullptr, out);
    else if (!std::strcmp(f, "none"))
        MS_LAUNCH(empty_kernel, 2, 32, 0, nullptr, out);
    else {
        std::fprintf(stderr, "simt_faults: unknown fault %s\n", f);
        return 2;
    }
    cudaFree(out);
    cudaFree(out32);
    return 0;
}
