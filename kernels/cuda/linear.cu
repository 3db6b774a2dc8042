/* Dense and grouped-expert linear layers on the GPU through cuBLAS.
 *
 * Same semantics and the same GEMM calls as kernels/cpu/linear.c and the expert part of
 * kernels/cpu/moe.c (cuda_gemm takes cblas's row-major arguments). A bias is seeded into y by a
 * kernel and the GEMM adds into it (beta = 1), as on the CPU. Bias gradients are segmented
 * column sums (cuda_colsum, double sums in a fixed order); weight gradients accumulate through
 * the GEMM's beta = 1 straight into the fp32 gradient buffer, also with bf16 activations.
 *
 * Grouped experts. The rows of expert e are offsets_host[e] .. offsets_host[e+1]-1, on the host
 * since dispatch_plan (moe.cu); each expert with rows is one cuBLAS call (E calls per layer and
 * direction), experts without rows are skipped, so their weight and bias gradients are never
 * touched. A device-side grouped GEMM would remove dispatch_plan's host synchronisation; with
 * E <= 24 large experts per layer the per-call overhead is small next to the GEMMs
 * (docs/kernels.md). */
#include "cuda_common.h"

#define BIAS_THREADS 256
#define BIAS_MAX_ROW_BLOCKS 4096 /* row blocks per segment; each loops over the rest */

/* Block (bx, s): rows bx, bx + gridDim.x, ... of segment s; threads over the O columns. */
template <typename T>
__global__ void __launch_bounds__(BIAS_THREADS)
    fill_bias_kernel(T *y, const float *b, cuda_segments seg, int O) {
    int s = blockIdx.y;
    int r1 = seg.off[s + 1];
    const float *bs = b + (size_t)s * O;
    for (int r = seg.off[s] + (int)blockIdx.x; r < r1; r += gridDim.x)
        for (int o = threadIdx.x; o < O; o += BIAS_THREADS) st(&y[(size_t)r * O + o], bs[o]);
}

template <typename T>
static void fill_bias_t(ms_backend *be, ms_act *y, const float *b, const cuda_segments &seg,
                        int O) {
    int most = 0;
    for (int s = 0; s < seg.n; s++)
        if (seg.off[s + 1] - seg.off[s] > most) most = seg.off[s + 1] - seg.off[s];
    if (most == 0) return;
    dim3 grid(most < BIAS_MAX_ROW_BLOCKS ? most : BIAS_MAX_ROW_BLOCKS, (unsigned)seg.n);
    MS_LAUNCH(fill_bias_kernel<T>, grid, BIAS_THREADS, 0, cuda_stream(be), (T *)y, b, seg, O);
}

void cuda_fill_bias(ms_backend *be, ms_act *y, const float *b, const cuda_segments &seg, int O) {
    if (O > 0 && seg.n > 0) ACT_DISPATCH(be, fill_bias_t, be, y, b, seg, O);
}

/* The expert row ranges as a kernel argument, checked: E within the supported range and the
 * offsets a non-decreasing sequence from 0. */
static cuda_segments expert_segments(const int32_t *offsets_host, int E) {
    if (E < 1 || E > MS_CUDA_MAX_EXPERTS)
        ms_fatal("CUDA backend: a layer with %d experts; the CUDA backend supports 1 to %d", E,
                 MS_CUDA_MAX_EXPERTS);
    cuda_segments seg = {};
    seg.n = E;
    for (int e = 0; e <= E; e++) seg.off[e] = offsets_host[e];
    MS_ASSERT(seg.off[0] == 0);
    for (int e = 0; e < E; e++) MS_ASSERT(seg.off[e] <= seg.off[e + 1]);
    return seg;
}

/* ---- dense linear ---------------------------------------------------------------------------- */

static void cuda_linear(ms_backend *be, ms_act *y, const ms_act *x, const float *w, const float *b,
                        int M, int I, int O, ms_wlayout layout) {
    if (M <= 0 || O <= 0) return;
    if (b) {
        cuda_segments seg = {};
        seg.n = 1;
        seg.off[1] = M;
        cuda_fill_bias(be, y, b, seg, O);
    }
    cudaDataType at = cuda_act_type(be);
    const void *wa = cuda_weights_as_act(be, w, (size_t)I * O); /* [O, I] or [I, O] */
    if (layout == MS_W_OUT_IN)
        cuda_gemm(be, false, true, M, O, I, 1.0f, x, at, I, wa, at, I, b ? 1.0f : 0.0f, y, at, O);
    else
        cuda_gemm(be, false, false, M, O, I, 1.0f, x, at, I, wa, at, O, b ? 1.0f : 0.0f, y, at, O);
}

/* dx[M, I] = dy W^T (+= with accum_dx), dw += x^T dy in w's layout, db[O] += colsum(dy); each of
 * dx, dw, db may be NULL. */
static void cuda_linear_bwd(ms_backend *be, ms_act *dx, float *dw, float *db, const ms_act *dy,
                            const ms_act *x, const float *w, int M, int I, int O, ms_wlayout layout,
                            int accum_dx) {
    if (M <= 0) return;
    int out_in = layout == MS_W_OUT_IN;
    cudaDataType at = cuda_act_type(be);
    if (dx) {
        const void *wa = cuda_weights_as_act(be, w, (size_t)I * O);
        cuda_gemm(be, false, !out_in, M, I, O, 1.0f, dy, at, O, wa, at, out_in ? I : O,
                  accum_dx ? 1.0f : 0.0f, dx, at, I);
    }
    if (dw) {
        if (out_in) /* dw[O, I] += dy^T x */
            cuda_gemm(be, true, false, O, I, M, 1.0f, dy, at, O, x, at, I, 1.0f, dw, CUDA_R_32F, I);
        else /* dw[I, O] += x^T dy */
            cuda_gemm(be, true, false, I, O, M, 1.0f, x, at, I, dy, at, O, 1.0f, dw, CUDA_R_32F, O);
    }
    if (db) be->sum_rows(be, db, dy, M, O);
}

/* ---- grouped expert linear ------------------------------------------------------------------- */

static void cuda_expert_linear(ms_backend *be, ms_act *y, const ms_act *x, const float *w,
                               const float *b, const int32_t *offsets_host, int E, int I, int O) {
    cuda_segments seg = expert_segments(offsets_host, E);
    if (seg.off[E] == 0 || O <= 0) return;
    if (b) cuda_fill_bias(be, y, b, seg, O);
    cudaDataType at = cuda_act_type(be);
    const void *wa = cuda_weights_as_act(be, w, (size_t)E * I * O); /* [E, I, O] */
    for (int e = 0; e < E; e++) {
        int r0 = seg.off[e], n = seg.off[e + 1] - r0;
        if (n <= 0) continue;
        cuda_gemm(be, false, false, n, O, I, 1.0f, act_at(be, x, (size_t)r0 * I), at, I,
                  act_at(be, wa, (size_t)e * I * O), at, O, b ? 1.0f : 0.0f,
                  act_at(be, y, (size_t)r0 * O), at, O);
    }
}

static void cuda_expert_linear_bwd(ms_backend *be, ms_act *dx, float *dw, float *db,
                                   const ms_act *dy, const ms_act *x, const float *w,
                                   const int32_t *offsets_host, int E, int I, int O) {
    cuda_segments seg = expert_segments(offsets_host, E);
    if (seg.off[E] == 0) return;
    cudaDataType at = cuda_act_type(be);
    const void *wa = dx ? cuda_weights_as_act(be, w, (size_t)E * I * O) : NULL; /* [E, I, O] */
    for (int e = 0; e < E; e++) {
        int r0 = seg.off[e], n = seg.off[e + 1] - r0;
        if (n <= 0) continue;
        const void *dye = act_at(be, dy, (size_t)r0 * O); /* [n, O] */
        if (dx)                                           /* dx_e[n, I] = dy_e w_e^T */
            cuda_gemm(be, false, true, n, I, O, 1.0f, dye, at, O, act_at(be, wa, (size_t)e * I * O),
                      at, O, 0.0f, act_at(be, dx, (size_t)r0 * I), at, I);
        if (dw) /* dw_e[I, O] += x_e^T dy_e */
            cuda_gemm(be, true, false, I, O, n, 1.0f, act_at(be, x, (size_t)r0 * I), at, I, dye, at,
                      O, 1.0f, dw + (size_t)e * I * O, CUDA_R_32F, O);
    }
    if (db) cuda_colsum(be, db, dy, seg, O);
}

void cuda_register_linear(ms_backend *be) {
    be->linear = cuda_linear;
    be->linear_bwd = cuda_linear_bwd;
    be->expert_linear = cuda_expert_linear;
    be->expert_linear_bwd = cuda_expert_linear_bwd;
}
