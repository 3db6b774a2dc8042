/* Internal to the CUDA backend: headers, error checks, the backend context, element types and
 * the warp/block reductions shared by the kernels of kernels/cuda (one .cu per op family).
 *
 * Compiled by nvcc, or by g++ -DMS_SIMT against tests/simt (launch.h). */
#ifndef MS_CUDA_COMMON_H
#define MS_CUDA_COMMON_H

#include "launch.h"

#ifdef MS_SIMT
/* Bare __shared__ is unchecked under the emulator (simt.h): the backend uses MS_SHARED. */
#undef __shared__
#pragma GCC poison __shared__
#else
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#endif

#include <stddef.h>
#include <stdint.h>

extern "C" {
#include "../backend.h"
#include "../util.h"
}

typedef __nv_bfloat16 bf16;

/* ---- checks: every runtime and cuBLAS call, reported with file:line and the library's words -- */

MS_NORETURN void ms_cuda_fail(cudaError_t e, const char *call, const char *file, int line);
MS_NORETURN void ms_cublas_fail(cublasStatus_t s, const char *call, const char *file, int line);

#define CUDA_CHECK(call)                                                                           \
    do {                                                                                           \
        cudaError_t ms_e_ = (call);                                                                \
        if (ms_e_ != cudaSuccess) ms_cuda_fail(ms_e_, #call, __FILE__, __LINE__);                  \
    } while (0)

#define CUBLAS_CHECK(call)                                                                         \
    do {                                                                                           \
        cublasStatus_t ms_s_ = (call);                                                             \
        if (ms_s_ != CUBLAS_STATUS_SUCCESS) ms_cublas_fail(ms_s_, #call, __FILE__, __LINE__);      \
    } while (0)

/* ---- cuBLAS, loaded at run time (blas.cu) ---------------------------------------------------- */

/* The cuBLAS entry points the backend calls, resolved by cuda_blas_load: modsquad does not link
 * cuBLAS, so call it only through these. */
struct cuda_blas_api {
    cublasStatus_t (*create)(cublasHandle_t *handle);
    cublasStatus_t (*destroy)(cublasHandle_t handle);
    cublasStatus_t (*set_stream)(cublasHandle_t handle, cudaStream_t stream);
    cublasStatus_t (*set_math_mode)(cublasHandle_t handle, cublasMath_t mode);
    const char *(*status_string)(cublasStatus_t status);
    cublasStatus_t (*gemm_ex)(cublasHandle_t handle, cublasOperation_t transa,
                              cublasOperation_t transb, int m, int n, int k, const void *alpha,
                              const void *A, cudaDataType Atype, int lda, const void *B,
                              cudaDataType Btype, int ldb, const void *beta, void *C,
                              cudaDataType Ctype, int ldc, cublasComputeType_t compute,
                              cublasGemmAlgo_t algo);
    cublasStatus_t (*gemm_batched_ex)(cublasHandle_t handle, cublasOperation_t transa,
                                      cublasOperation_t transb, int m, int n, int k,
                                      const void *alpha, const void *const Aarray[],
                                      cudaDataType Atype, int lda, const void *const Barray[],
                                      cudaDataType Btype, int ldb, const void *beta,
                                      void *const Carray[], cudaDataType Ctype, int ldc,
                                      int batch, cublasComputeType_t compute,
                                      cublasGemmAlgo_t algo);
};
extern cuda_blas_api g_blas;

/* Loads cuBLAS once per process; false with the reason in err[cap]. */
bool cuda_blas_load(char *err, size_t cap);

/* ---- backend context ------------------------------------------------------------------------- */

/* Growing device scratch buffers owned by the backend, one per purpose so that an op can hold
 * two at once. They reach their high-water mark during the first training step and are then
 * reused, so ops do not allocate in the steady state (DESIGN.md principle 4). */
enum cuda_scratch_slot {
    SCRATCH_STAGING = 0, /* fp32 staging of upload_act / download_act with bf16 activations */
    SCRATCH_WEIGHTS,     /* bf16 copy of an fp32 weight for a bf16 GEMM */
    SCRATCH_DISPATCH,    /* dispatch_plan's per-tile expert counts and error flag */
    SCRATCH_SCORES,      /* fp32 attention scores / their gradients with bf16 activations */
    SCRATCH_ATT_PTRS,    /* device pointer tables of attention's batched GEMMs */
    SCRATCH_PARTIALS,    /* per-block double partial sums of LayerNorm's dgamma and dbeta */
    SCRATCH_REDUCE,      /* per-block partials and results of the losses, sumsq, balance_loss */
    SCRATCH_CUDNN,       /* cuDNN convolution workspace (dnn.cu) */
    SCRATCH_CONV,        /* conv head: per-channel double partial sums, a bf16 filter gradient */
    SCRATCH_SLOTS
};

struct cuda_ctx {
    int device;
    bool tf32;           /* fp32 GEMMs and convolutions may use TF32 (train.tf32) */
    cudaStream_t stream; /* every op is ordered on this one stream */
    cublasHandle_t blas;
    void *scratch[SCRATCH_SLOTS];
    size_t scratch_bytes[SCRATCH_SLOTS];
};

static inline cuda_ctx *cuda_of(ms_backend *be) { return (cuda_ctx *)be->ctx; }
static inline cudaStream_t cuda_stream(ms_backend *be) { return cuda_of(be)->stream; }

/* Scratch of at least `bytes` from `slot`; previous contents are not kept. */
void *cuda_scratch(ms_backend *be, cuda_scratch_slot slot, size_t bytes);

/* Row-major GEMM: C[M, N] = alpha op(A)[M, K] op(B)[K, N] + beta C with row-major leading
 * dimensions, the same arguments as cblas_sgemm(CblasRowMajor, ...) so the CUDA ops mirror the
 * CPU ones call for call. Types: A and B alike (fp32 or bf16), C that type or fp32; the sums are
 * fp32 (CUBLAS_COMPUTE_32F), and fp32 operands are rounded to TF32 on the tensor cores
 * (CUBLAS_COMPUTE_32F_FAST_TF32) only when the backend allows it (cuda_ctx.tf32). */
void cuda_gemm(ms_backend *be, bool trans_a, bool trans_b, int M, int N, int K, float alpha,
               const void *A, cudaDataType a_type, int lda, const void *B, cudaDataType b_type,
               int ldb, float beta, void *C, cudaDataType c_type, int ldc);

/* cuda_gemm over `batch` independent problems of one shape: problem i reads A[i], B[i] and
 * writes C[i], where A, B, C are arrays of `batch` matrix pointers in DEVICE memory (one
 * cublasGemmBatchedEx call, so operands need no common stride). */
void cuda_gemm_ptr_batched(ms_backend *be, bool trans_a, bool trans_b, int M, int N, int K,
                           float alpha, const void *const *A, cudaDataType a_type, int lda,
                           const void *const *B, cudaDataType b_type, int ldb, float beta,
                           void *const *C, cudaDataType c_type, int ldc, int batch);

/* The cuBLAS type of the activations. */
static inline cudaDataType cuda_act_type(const ms_backend *be) {
    return be->act_dtype == MS_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

/* An fp32 weight w[n] in the activation type, for a GEMM with activations: w itself in fp32,
 * else a bf16 copy converted into SCRATCH_WEIGHTS (valid until the next call). */
const void *cuda_weights_as_act(ms_backend *be, const float *w, size_t n);

/* Activation pointer p advanced by `elements` activations. */
static inline const void *act_at(const ms_backend *be, const void *p, size_t elements) {
    return (const char *)p + elements * be->act_size;
}
static inline void *act_at(const ms_backend *be, void *p, size_t elements) {
    return (char *)p + elements * be->act_size;
}

/* Calls fn<float>(args) or fn<bf16>(args) by the backend's activation type. */
#define ACT_DISPATCH(be, fn, ...)                                                                  \
    ((be)->act_dtype == MS_BF16 ? fn<bf16>(__VA_ARGS__) : fn<float>(__VA_ARGS__))

/* ---- expert segments ------------------------------------------------------------------------- */

/* The most experts one MoE layer may have on the CUDA backend (route keeps one probability per
 * lane and slot in registers: 32 lanes x 8 slots; segment tables travel as kernel arguments). */
#define MS_CUDA_MAX_EXPERTS 256

/* Row ranges [off[s], off[s+1]) of n segments (experts), passed by value to kernels. */
struct cuda_segments {
    int n;
    int off[MS_CUDA_MAX_EXPERTS + 1];
};

/* out[s, c] += sum of x[r, c] over the rows r of segment s (C columns, double sums in a fixed
 * order); segments without rows are left untouched. x holds activations. elementwise.cu. */
void cuda_colsum(ms_backend *be, float *out, const ms_act *x, const cuda_segments &seg, int C);

/* y[r, :] = b[s, :] for every row r of every segment s (seeds a GEMM with beta = 1). linear.cu */
void cuda_fill_bias(ms_backend *be, ms_act *y, const float *b, const cuda_segments &seg, int O);

/* ---- cuDNN convolutions (dnn.cu; cuDNN is loaded on first use) ------------------------------- */

/* Stride 1, zero padding k/2, k odd, cross-correlation (PyTorch's Conv2d) over NCHW tensors of
 * the activation type, fp32 sums, deterministic algorithms only: x[B, Ci, H, W],
 * w[Co, Ci, k, k] (in the activation type too), y[B, Co, H, W].
 *   fwd:    y = conv(x, w) + beta y           bwd_data: dx = conv^T(dy, w) (written)
 *   bwd_filter: dw = sum over images and pixels of dy x-patches + beta dw */
void cuda_conv_fwd(ms_backend *be, void *y, float beta, const void *x, const void *w, int B,
                   int Ci, int H, int W, int Co, int k);
void cuda_conv_bwd_data(ms_backend *be, void *dx, const void *dy, const void *w, int B, int Ci,
                        int H, int W, int Co, int k);
void cuda_conv_bwd_filter(ms_backend *be, void *dw, float beta, const void *dy, const void *x,
                          int B, int Ci, int H, int W, int Co, int k);

/* ---- per-family registration ----------------------------------------------------------------- */
void cuda_register_elementwise(ms_backend *be); /* add, add_row, sum_rows, scale, gelu, softmax */
void cuda_register_linear(ms_backend *be);      /* linear, expert_linear                        */
void cuda_register_moe(ms_backend *be);         /* route, dispatch, combine, MI                 */
void cuda_register_trunk(ms_backend *be);     /* drop_path, patchify, tokens_*, layernorm       */
void cuda_register_attention(ms_backend *be); /* attention, mq_attention                        */
void cuda_register_moe_aux(ms_backend *be);   /* noisy_logits, balance_loss, router_task_bias   */
void cuda_register_losses(ms_backend *be);    /* task losses, task weighting, l2_normalize      */
void cuda_register_optim(ms_backend *be);     /* adamw, sumsq                                   */
void cuda_register_conv(ms_backend *be);      /* conv2d (cuDNN), batchnorm, relu, upsample2x    */

/* ---- device helpers -------------------------------------------------------------------------- */

#define FULL_MASK 0xffffffffu

static inline unsigned cdiv(size_t a, unsigned b) { return (unsigned)((a + b - 1) / b); }

__device__ __forceinline__ float ld(float x) { return x; }
__device__ __forceinline__ float ld(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ void st(float *p, float v) { *p = v; }
__device__ __forceinline__ void st(bf16 *p, float v) { *p = __float2bfloat16(v); }

/* Butterfly reductions: every lane ends with the same value (a + b == b + a exactly), so the
 * result does not depend on the lane. */
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}
__device__ __forceinline__ double warp_sum(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32, one-dimensional), returned to every thread;
 * the order is fixed (warp butterflies, then the warp partials in warp order). */
__device__ __forceinline__ double block_sum(double v) {
    MS_SHARED(double, partial, [32]);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); /* a previous block_sum may still be reading `partial` */
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    return warp_sum(lane < warps ? partial[lane] : 0.0);
}

#endif
