/* Elementwise CUDA ops: add, add_row and its backward sum_rows (a segmented column sum also used
 * for bias gradients), scale_f32, GELU (erf form) and row softmax.
 *
 * Same semantics as kernels/cpu/elementwise.c. The elementwise kernels are grid-stride loops
 * (memory bound: one read and one write per element); each output element is written by one
 * thread, so aliasing y with an input is safe. Column sums and softmax row sums are accumulated
 * in double in a fixed order, as on the CPU, so results do not depend on timing. GELU uses
 * erfcf so the left tail keeps its relative accuracy (1 + erf(x) would cancel). */
#include "cuda_common.h"

#define EW_THREADS 256
#define COLSUM_COLS 32  /* columns per block: one warp reads 32 consecutive floats of a row */
#define COLSUM_ROWS 16  /* row groups per block, combined in shared memory in a fixed order */
#define SOFTMAX_WARPS 4 /* rows per block: one warp per row */

/* Blocks for a grid-stride loop over n elements. */
static unsigned ew_grid(size_t n) {
    unsigned blocks = cdiv(n, EW_THREADS);
    return blocks < 65536 ? blocks : 65536;
}

#define GRID_STRIDE(i, n)                                                                          \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                        \
         i += (size_t)gridDim.x * blockDim.x)

/* ---- add, add_row, scale --------------------------------------------------------------------- */

template <typename T>
__global__ void __launch_bounds__(EW_THREADS) add_kernel(T *y, const T *a, const T *b, size_t n) {
    GRID_STRIDE(i, n) st(&y[i], ld(a[i]) + ld(b[i]));
}

template <typename T>
__global__ void __launch_bounds__(EW_THREADS)
    add_row_kernel(T *y, const T *x, const float *v, size_t n, int D) {
    GRID_STRIDE(i, n) st(&y[i], ld(x[i]) + v[i % (size_t)D]);
}

__global__ void __launch_bounds__(EW_THREADS) scale_kernel(float *x, float s, size_t n) {
    GRID_STRIDE(i, n) x[i] *= s;
}

template <typename T>
static void add_t(ms_backend *be, ms_act *y, const ms_act *a, const ms_act *b, size_t n) {
    MS_LAUNCH(add_kernel<T>, ew_grid(n), EW_THREADS, 0, cuda_stream(be), (T *)y, (const T *)a,
              (const T *)b, n);
}

static void cuda_add(ms_backend *be, ms_act *y, const ms_act *a, const ms_act *b, size_t n) {
    if (n) ACT_DISPATCH(be, add_t, be, y, a, b, n);
}

template <typename T>
static void add_row_t(ms_backend *be, ms_act *y, const ms_act *x, const float *v, int M, int D) {
    size_t n = (size_t)M * D;
    MS_LAUNCH(add_row_kernel<T>, ew_grid(n), EW_THREADS, 0, cuda_stream(be), (T *)y, (const T *)x,
              v, n, D);
}

static void cuda_add_row(ms_backend *be, ms_act *y, const ms_act *x, const float *v, int M, int D) {
    if (M > 0 && D > 0) ACT_DISPATCH(be, add_row_t, be, y, x, v, M, D);
}

static void cuda_scale_f32(ms_backend *be, float *x, float s, size_t n) {
    if (n) MS_LAUNCH(scale_kernel, ew_grid(n), EW_THREADS, 0, cuda_stream(be), x, s, n);
}

/* ---- segmented column sums (sum_rows, bias gradients) ---------------------------------------- */

/* Block (COLSUM_COLS, COLSUM_ROWS) sums columns [32 bx, 32 bx + 32) of segment by: thread
 * (c, g) adds rows g, g + 16, ... of the segment in order, then row group 0 adds the 16
 * partials in order. */
template <typename T>
__global__ void __launch_bounds__(COLSUM_COLS *COLSUM_ROWS)
    colsum_kernel(float *out, const T *x, cuda_segments seg, int C) {
    int s = blockIdx.y;
    int r0 = seg.off[s], r1 = seg.off[s + 1];
    if (r0 >= r1) return; /* the whole block: an empty expert gets no update */
    int c = blockIdx.x * COLSUM_COLS + threadIdx.x;
    double acc = 0.0;
    if (c < C)
        for (int r = r0 + (int)threadIdx.y; r < r1; r += COLSUM_ROWS)
            acc += ld(x[(size_t)r * C + c]);
    MS_SHARED(double, part, [COLSUM_ROWS][COLSUM_COLS]);
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        double sum = 0.0;
        for (int g = 0; g < COLSUM_ROWS; g++) sum += part[g][threadIdx.x];
        float *o = &out[(size_t)s * C + c];
        *o = (float)((double)*o + sum);
    }
}

template <typename T>
static void colsum_t(ms_backend *be, float *out, const ms_act *x, const cuda_segments &seg, int C) {
    dim3 grid(cdiv((size_t)C, COLSUM_COLS), (unsigned)seg.n);
    MS_LAUNCH(colsum_kernel<T>, grid, dim3(COLSUM_COLS, COLSUM_ROWS), 0, cuda_stream(be), out,
              (const T *)x, seg, C);
}

void cuda_colsum(ms_backend *be, float *out, const ms_act *x, const cuda_segments &seg, int C) {
    MS_ASSERT(seg.n >= 0 && seg.n <= MS_CUDA_MAX_EXPERTS);
    if (C > 0 && seg.n > 0 && seg.off[seg.n] > seg.off[0])
        ACT_DISPATCH(be, colsum_t, be, out, x, seg, C);
}

static void cuda_sum_rows(ms_backend *be, float *dv, const ms_act *dy, int M, int D) {
    cuda_segments seg = {};
    seg.n = 1;
    seg.off[1] = M > 0 ? M : 0;
    cuda_colsum(be, dv, dy, seg, D);
}

/* ---- GELU ------------------------------------------------------------------------------------ */

/* Phi(v), the standard normal CDF, as erfc so both tails keep relative accuracy. */
__device__ __forceinline__ float normal_cdf(float v) {
    return 0.5f * erfcf(-v * 0.70710678118654752f);
}

template <typename T>
__global__ void __launch_bounds__(EW_THREADS) gelu_kernel(T *y, const T *x, size_t n) {
    GRID_STRIDE(i, n) {
        float v = ld(x[i]);
        st(&y[i], v * normal_cdf(v));
    }
}

/* d/dx [x Phi(x)] = Phi(x) + x phi(x). */
template <typename T>
__global__ void __launch_bounds__(EW_THREADS)
    gelu_bwd_kernel(T *dx, const T *dy, const T *x, size_t n) {
    GRID_STRIDE(i, n) {
        float v = ld(x[i]);
        float pdf = expf(-0.5f * v * v) * 0.39894228040143268f;
        st(&dx[i], ld(dy[i]) * (normal_cdf(v) + v * pdf));
    }
}

template <typename T>
static void gelu_t(ms_backend *be, ms_act *y, const ms_act *x, size_t n) {
    MS_LAUNCH(gelu_kernel<T>, ew_grid(n), EW_THREADS, 0, cuda_stream(be), (T *)y, (const T *)x, n);
}

static void cuda_gelu(ms_backend *be, ms_act *y, const ms_act *x, size_t n) {
    if (n) ACT_DISPATCH(be, gelu_t, be, y, x, n);
}

template <typename T>
static void gelu_bwd_t(ms_backend *be, ms_act *dx, const ms_act *dy, const ms_act *x, size_t n) {
    MS_LAUNCH(gelu_bwd_kernel<T>, ew_grid(n), EW_THREADS, 0, cuda_stream(be), (T *)dx,
              (const T *)dy, (const T *)x, n);
}

static void cuda_gelu_bwd(ms_backend *be, ms_act *dx, const ms_act *dy, const ms_act *x, size_t n) {
    if (n) ACT_DISPATCH(be, gelu_bwd_t, be, dx, dy, x, n);
}

/* ---- row softmax: one warp per row ----------------------------------------------------------- */

/* Three passes over the row (max, sum of exponentials in double, normalised write), each lane
 * taking columns lane, lane + 32, ...: y may alias x because pass 3 reads x[j] and writes y[j]
 * in the same thread, and recomputing the exponential there rounds each output once (bf16). */
template <typename T>
__global__ void __launch_bounds__(SOFTMAX_WARPS * 32)
    softmax_kernel(T *y, const T *x, int M, int N) {
    int lane = threadIdx.x & 31;
    int m = blockIdx.x * SOFTMAX_WARPS + (threadIdx.x >> 5);
    if (m >= M) return; /* the whole warp */
    const T *xr = x + (size_t)m * N;
    T *yr = y + (size_t)m * N;
    float mx = -INFINITY;
    for (int j = lane; j < N; j += 32) mx = fmaxf(mx, ld(xr[j]));
    mx = warp_max(mx);
    double sum = 0.0;
    for (int j = lane; j < N; j += 32) sum += expf(ld(xr[j]) - mx);
    float inv = (float)(1.0 / warp_sum(sum));
    for (int j = lane; j < N; j += 32) st(&yr[j], expf(ld(xr[j]) - mx) * inv);
}

/* dx = y (dy - sum_j dy_j y_j); dx may alias dy (same thread reads then writes each j). */
template <typename T>
__global__ void __launch_bounds__(SOFTMAX_WARPS * 32)
    softmax_bwd_kernel(T *dx, const T *dy, const T *y, int M, int N) {
    int lane = threadIdx.x & 31;
    int m = blockIdx.x * SOFTMAX_WARPS + (threadIdx.x >> 5);
    if (m >= M) return;
    size_t row = (size_t)m * N;
    double dot = 0.0;
    for (int j = lane; j < N; j += 32) dot += (double)ld(dy[row + j]) * ld(y[row + j]);
    float d = (float)warp_sum(dot);
    for (int j = lane; j < N; j += 32) st(&dx[row + j], ld(y[row + j]) * (ld(dy[row + j]) - d));
}

template <typename T>
static void softmax_t(ms_backend *be, ms_act *y, const ms_act *x, int M, int N) {
    MS_LAUNCH(softmax_kernel<T>, cdiv((size_t)M, SOFTMAX_WARPS), SOFTMAX_WARPS * 32, 0,
              cuda_stream(be), (T *)y, (const T *)x, M, N);
}

static void cuda_softmax(ms_backend *be, ms_act *y, const ms_act *x, int M, int N) {
    if (M > 0 && N > 0) ACT_DISPATCH(be, softmax_t, be, y, x, M, N);
}

template <typename T>
static void softmax_bwd_t(ms_backend *be, ms_act *dx, const ms_act *dy, const ms_act *y, int M,
                          int N) {
    MS_LAUNCH(softmax_bwd_kernel<T>, cdiv((size_t)M, SOFTMAX_WARPS), SOFTMAX_WARPS * 32, 0,
              cuda_stream(be), (T *)dx, (const T *)dy, (const T *)y, M, N);
}

static void cuda_softmax_bwd(ms_backend *be, ms_act *dx, const ms_act *dy, const ms_act *y, int M,
                             int N) {
    if (M > 0 && N > 0) ACT_DISPATCH(be, softmax_bwd_t, be, dx, dy, y, M, N);
}

void cuda_register_elementwise(ms_backend *be) {
    be->add = cuda_add;
    be->add_row = cuda_add_row;
    be->sum_rows = cuda_sum_rows;
    be->scale_f32 = cuda_scale_f32;
    be->gelu = cuda_gelu;
    be->gelu_bwd = cuda_gelu_bwd;
    be->softmax = cuda_softmax;
    be->softmax_bwd = cuda_softmax_bwd;
}
