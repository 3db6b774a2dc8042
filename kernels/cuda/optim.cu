/* Optimizer ops on the GPU: the AdamW update and the sum of squares behind the global gradient
 * norm, over up to ~10^8 fp32 values per call.
 *
 * Semantics are those of kernels/cpu/optimizer.c: PyTorch's single-tensor AdamW step in its
 * order, with the scalar coefficients formed in double on the host and rounded to fp32 once,
 * exactly as the CPU does, so the two differ only where a compiler contracts a multiply-add
 * into an fma (a last-bit difference). sumsq writes a device scalar.
 *
 * Both are grid-stride loops over a grid that depends only on n. adamw is elementwise (each
 * element read and written by one thread). sumsq sums in double per thread, reduces over the
 * block (block_sum) into one partial per block in scratch, and one block adds the partials in
 * block order: bit-identical run to run, no float atomics. */
#include "cuda_common.h"

#define OPT_THREADS 256
#define OPT_MAX_BLOCKS 65536  /* adamw grid cap: larger n loops */
#define SUMSQ_MAX_BLOCKS 1024 /* sumsq partials: about one wave of blocks on an H100 */
/* At least 4 resident blocks per SM, i.e. a budget of 64 registers: without it ptxas may aim a
 * grid-stride loop at 32 registers and spill. */
#define OPT_MIN_BLOCKS 4

#define GRID_STRIDE(i, n)                                                                          \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                        \
         i += (size_t)gridDim.x * blockDim.x)

static unsigned grid_for(size_t n, unsigned cap) {
    unsigned blocks = cdiv(n, OPT_THREADS);
    return blocks < cap ? blocks : cap;
}

/* ---- AdamW ----------------------------------------------------------------------------------- */

/* torch.lerp for a scalar weight, evaluated from the nearer end (w = 1 returns b exactly). */
static __device__ __forceinline__ float lerpf(float a, float b, float w) {
    return w < 0.5f ? a + w * (b - a) : b - (b - a) * (1.0f - w);
}

/* p, m, v [n] updated in place from g [n]; the coefficients as in kernels/cpu/optimizer.c. */
static __global__ void __launch_bounds__(OPT_THREADS, OPT_MIN_BLOCKS)
    adamw_kernel(float *p, const float *g, float *m, float *v, size_t n, float decay, float w1,
                 float beta2, float w2, float step_size, float bc2_sqrt, float eps) {
    GRID_STRIDE(i, n) {
        float gi = g[i];
        float pi = p[i] * decay;
        float mi = lerpf(m[i], gi, w1);
        float vi = v[i] * beta2 + w2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
    }
}

static void cuda_adamw(ms_backend *be, float *p, const float *g, float *m, float *v, size_t n,
                       float lr, float beta1, float beta2, float eps, float weight_decay,
                       int step) {
    MS_ASSERT(step >= 1);
    if (!n) return;
    /* PyTorch's Python-float scalars: double, rounded to fp32 once (as the CPU backend). */
    const double bc1 = 1.0 - pow((double)beta1, step);
    const double bc2 = 1.0 - pow((double)beta2, step);
    const float decay = (float)(1.0 - (double)lr * weight_decay);
    const float w1 = (float)(1.0 - (double)beta1);
    const float w2 = (float)(1.0 - (double)beta2);
    const float step_size = (float)((double)lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    MS_LAUNCH(adamw_kernel, grid_for(n, OPT_MAX_BLOCKS), OPT_THREADS, 0, cuda_stream(be), p, g, m,
              v, n, decay, w1, beta2, w2, step_size, bc2_sqrt, eps);
}

/* ---- sum of squares -------------------------------------------------------------------------- */

/* part[block] = sum of x[i]^2 over the block's grid-stride share, in double. */
static __global__ void __launch_bounds__(OPT_THREADS, OPT_MIN_BLOCKS)
    sumsq_part_kernel(double *part, const float *x, size_t n) {
    double s = 0.0;
    GRID_STRIDE(i, n) {
        double xi = x[i];
        s += xi * xi;
    }
    s = block_sum(s);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

/* *out = the nb partials added in block order (each thread a strided share, then block_sum). */
static __global__ void __launch_bounds__(OPT_THREADS, OPT_MIN_BLOCKS)
    sumsq_finish_kernel(float *out, const double *part, int nb) {
    double s = 0.0;
    for (int i = threadIdx.x; i < nb; i += OPT_THREADS) s += part[i];
    s = block_sum(s);
    if (threadIdx.x == 0) *out = (float)s;
}

static void cuda_sumsq(ms_backend *be, float *out, const float *x, size_t n) {
    cudaStream_t st = cuda_stream(be);
    if (!n) {
        CUDA_CHECK(cudaMemsetAsync(out, 0, sizeof *out, st));
        return;
    }
    unsigned nb = grid_for(n, SUMSQ_MAX_BLOCKS);
    double *part = (double *)cuda_scratch(be, SCRATCH_REDUCE, nb * sizeof(double)); /* [nb] */
    MS_LAUNCH(sumsq_part_kernel, nb, OPT_THREADS, 0, st, part, x, n);
    MS_LAUNCH(sumsq_finish_kernel, 1, OPT_THREADS, 0, st, out, part, (int)nb);
}

void cuda_register_optim(ms_backend *be) {
    be->adamw = cuda_adamw;
    be->sumsq = cuda_sumsq;
}
