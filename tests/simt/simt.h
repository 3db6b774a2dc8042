/* tests/simt: CUDA C executed on the CPU.
 *
 * The CUDA sources of kernels/cuda are compiled twice: by nvcc for the GPU, and by the host C++
 * compiler (g++ -x c++ -DMS_SIMT) against this header, which stands in for the CUDA language
 * extensions (__global__, threadIdx, __syncthreads, warp intrinsics, atomics, bf16, device math)
 * and, through simt_runtime.h and simt_cublas.h, for the CUDA runtime and cuBLAS. Every kernel
 * launch of our sources goes through MS_LAUNCH (kernels/cuda/launch.h), which here calls
 * simt::launch (emulator.cc): each block's threads run as cooperative fibers, so barriers and
 * warp collectives have their GPU meaning, and misuse is reported instead of silently
 * producing numbers (see emulator.cc for what is checked).
 *
 * Shared memory. `__shared__` is defined as `static`, which is valid because the emulator runs
 * one block at a time on one OS thread: every fiber of the block sees the one static object, and
 * nothing else runs while the block does. But such statics are zero-initialised, keep their
 * values from block to block, and (in templates, whose statics are COMDAT objects) get no
 * AddressSanitizer redzones, so out-of-bounds accesses and reads of never-written shared memory
 * go unnoticed. Our kernels therefore declare shared memory with MS_SHARED / MS_DYNAMIC_SMEM
 * (launch.h), which here allocate per block from the heap: exact size (ASan catches an
 * out-of-bounds access), filled with 0xff bytes (a read before any write sees NaN / -1 as
 * garbage on a GPU would), freed when the block ends. kernels/cuda/cuda_common.h poisons the
 * bare keyword so the backend cannot fall back to it.
 *
 * Extension points. Library stand-ins live next to this file, one header + one .cc per library,
 * declaring exactly the subset the backend calls with the real names and signatures:
 * simt_runtime.h / runtime.cc (CUDA runtime), simt_cublas.h / cublas.cc (cuBLAS), simt_cudnn.h /
 * cudnn.cc (convolutions on the CPU, included by kernels/cuda/dnn.cu) and simt_nccl.h / nccl.cc
 * (collectives between ranks that are host threads, included by kernels/comm/comm_nccl.cu).
 * The Makefile links every .cc file of tests/simt.
 */
#ifndef MS_SIMT_H
#define MS_SIMT_H

#ifndef __cplusplus
#error "simt.h is C++: compile CUDA sources with g++ -x c++ -DMS_SIMT"
#endif

#include <cfloat>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>

#include "simt_runtime.h" /* first: the cuBLAS stand-in uses its stream and data types */
#include "simt_cublas.h"

/* ---- language keywords ----------------------------------------------------------------------- */
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __shared__ static

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};

namespace simt {

/* A source location: barriers and warp collectives are reported by where they were called. */
struct site {
    const char *file;
    int line;
};

enum warp_op {
    OP_SHFL_IDX,
    OP_SHFL_UP,
    OP_SHFL_DOWN,
    OP_SHFL_XOR,
    OP_BALLOT,
    OP_ANY,
    OP_ALL,
    OP_MATCH_ANY,
    OP_SYNCWARP,
};

/* The running thread's coordinates, set by the emulator whenever it switches fibers. */
extern uint3 g_thread_idx, g_block_idx;
extern dim3 g_block_dim, g_grid_dim;

/* Runs body() once per thread of every block of the grid (emulator.cc). */
void launch(const char *kernel, site where, dim3 grid, dim3 block, size_t dynamic_smem,
            cudaStream_t stream, const std::function<void()> &body);
void syncthreads(site where);
/* One warp collective: blocks until every lane named in mask arrives, then returns this lane's
 * result. value/arg/width as the intrinsic's (value as raw bits, up to 8 bytes). */
uint64_t warp_collective(site where, warp_op op, unsigned mask, uint64_t value, int arg, int width);
void *dynamic_smem();
/* Per-block storage of one MS_SHARED declaration (key: its address-unique tag). */
void *static_smem(const void *key, size_t bytes, site where);
[[noreturn]] void trap(site where, const char *what);

template <typename A>
inline A &shared_ref(const void *key, site where) {
    return *static_cast<A *>(static_smem(key, sizeof(A), where));
}

template <typename T>
inline uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value,
                  "warp intrinsics move values of at most 8 bytes");
    uint64_t b = 0;
    std::memcpy(&b, &v, sizeof v);
    return b;
}
template <typename T>
inline T from_bits(uint64_t b) {
    T v;
    std::memcpy(&v, &b, sizeof v);
    return v;
}

template <typename T>
inline T shfl(site s, warp_op op, unsigned mask, T v, int arg, int width = 32) {
    return from_bits<T>(warp_collective(s, op, mask, to_bits(v), arg, width));
}
template <typename T>
inline unsigned match_any(site s, unsigned mask, T v) {
    return (unsigned)warp_collective(s, OP_MATCH_ANY, mask, to_bits(v), 0, 32);
}
inline unsigned vote(site s, warp_op op, unsigned mask, int pred) {
    return (unsigned)warp_collective(s, op, mask, pred != 0, 0, 32);
}
inline void syncwarp(site s, unsigned mask = 0xffffffffu) {
    warp_collective(s, OP_SYNCWARP, mask, 0, 0, 32);
}

} // namespace simt

#define SIMT_SITE (::simt::site{__FILE__, __LINE__})

/* Read-only views, as on the GPU. */
#define threadIdx (static_cast<const uint3 &>(::simt::g_thread_idx))
#define blockIdx (static_cast<const uint3 &>(::simt::g_block_idx))
#define blockDim (static_cast<const dim3 &>(::simt::g_block_dim))
#define gridDim (static_cast<const dim3 &>(::simt::g_grid_dim))
#define warpSize 32

#define __syncthreads() ::simt::syncthreads(SIMT_SITE)
#define __syncwarp(...) ::simt::syncwarp(SIMT_SITE, ##__VA_ARGS__)
#define __shfl_sync(mask, v, ...) ::simt::shfl(SIMT_SITE, ::simt::OP_SHFL_IDX, mask, v, __VA_ARGS__)
#define __shfl_up_sync(mask, v, ...)                                                               \
    ::simt::shfl(SIMT_SITE, ::simt::OP_SHFL_UP, mask, v, __VA_ARGS__)
#define __shfl_down_sync(mask, v, ...)                                                             \
    ::simt::shfl(SIMT_SITE, ::simt::OP_SHFL_DOWN, mask, v, __VA_ARGS__)
#define __shfl_xor_sync(mask, v, ...)                                                              \
    ::simt::shfl(SIMT_SITE, ::simt::OP_SHFL_XOR, mask, v, __VA_ARGS__)
#define __ballot_sync(mask, pred) ::simt::vote(SIMT_SITE, ::simt::OP_BALLOT, mask, pred)
#define __any_sync(mask, pred) ((int)::simt::vote(SIMT_SITE, ::simt::OP_ANY, mask, pred))
#define __all_sync(mask, pred) ((int)::simt::vote(SIMT_SITE, ::simt::OP_ALL, mask, pred))
#define __match_any_sync(mask, v) ::simt::match_any(SIMT_SITE, mask, v)
#define __trap() ::simt::trap(SIMT_SITE, "__trap()")
#define __threadfence() ((void)0)
#define __threadfence_block() ((void)0)

/* ---- atomics: fibers of one OS thread never interleave inside a read-modify-write ------------ */
template <typename T>
inline T atomicAdd(T *a, T v) {
    T old = *a;
    *a = old + v;
    return old;
}
template <typename T>
inline T atomicMax(T *a, T v) {
    T old = *a;
    *a = old > v ? old : v;
    return old;
}
template <typename T>
inline T atomicMin(T *a, T v) {
    T old = *a;
    *a = old < v ? old : v;
    return old;
}
template <typename T>
inline T atomicExch(T *a, T v) {
    T old = *a;
    *a = v;
    return old;
}
template <typename T>
inline T atomicCAS(T *a, T compare, T v) {
    T old = *a;
    if (old == compare) *a = v;
    return old;
}

/* ---- bfloat16 -------------------------------------------------------------------------------- */
/* Storage only: our kernels convert explicitly, so the arithmetic operators of cuda_bf16.h are
 * deliberately absent (a kernel that relies on them fails to compile here, not silently). */
struct __nv_bfloat16 {
    unsigned short x;
};
typedef __nv_bfloat16 nv_bfloat16;

/* Round to nearest even, NaN kept quiet: what __float2bfloat16 does on the GPU. */
inline __nv_bfloat16 __float2bfloat16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    __nv_bfloat16 h;
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        h.x = (unsigned short)((u >> 16) | 0x40u);
        return h;
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    h.x = (unsigned short)(u >> 16);
    return h;
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __float2bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 h) {
    uint32_t u = (uint32_t)h.x << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

/* ---- device math and bit casts --------------------------------------------------------------- */
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline int __float_as_int(float f) { return simt::from_bits<int>(simt::to_bits(f)); }
inline unsigned __float_as_uint(float f) { return simt::from_bits<unsigned>(simt::to_bits(f)); }
inline float __int_as_float(int i) { return simt::from_bits<float>(simt::to_bits(i)); }
inline float __uint_as_float(unsigned u) { return simt::from_bits<float>(simt::to_bits(u)); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
template <typename T>
inline T __ldg(const T *p) {
    return *p;
}

/* CUDA's global min/max overloads for integers (device code calls them unqualified). */
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }

#endif
