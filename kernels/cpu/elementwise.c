/* Elementwise CPU ops: add, add_row and its backward sum_rows, scale, drop path, GELU (erf
 * form) and row softmax.
 *
 * Threading: a loop forks only above ~20 us of one thread's work, since waking the OpenMP
 * workers under OMP_WAIT_POLICY=passive (what modsquad runs with) costs 5 us on an idle machine
 * and ~40 us on a busy one. One thread adds ~16 floats per ns from cache, so the copy-like ops
 * (add, add_row, sum_rows, scale, drop path) fork from COPY_PAR_MIN elements; GELU costs ~0.6 ns
 * per element and forks from 2 x CPU_PAR_MIN, softmax (~10 flops per element) from
 * CPU_PAR_MIN / 4. Every output element is produced by one thread in a fixed order, so results
 * do not depend on timing.
 * Column sums (sum_rows) are split by column blocks, never by rows, so they do not even depend
 * on the thread count.
 *
 * Vectorisation: glibc only provides SIMD erff/expf under -ffast-math, which the build does
 * not use, and a scalar erff costs ~5 ns per element (comparable to the GEMMs around a GELU). So
 * GELU and softmax use the inline exp_f (fast_math.h) and erfc_f below, written with selects
 * instead of fminf/branches so that GCC vectorises them; both are within a few float ulps. The
 * combined `parallel for simd` pragmas scope their if clause to `parallel:`, since an unscoped
 * if also switches the simd part off below the threshold (OpenMP 5.0), ten times slower there. */
#include "cpu.h"
#include "fast_math.h"

#include <stdint.h>

/* Elements from which the copy-like ops fork: ~16 us of one thread's work in cache, more beyond
 * (1 MB of floats per operand). */
#define COPY_PAR_MIN (8 * CPU_PAR_MIN)
/* Columns summed per block in sum_rows: the double accumulators stay in registers. */
#define COL_BLOCK 64
/* Elements per work item of drop_path (a sample may be split across threads). */
#define DP_CHUNK 8192

/* erfc(z) for z >= 0. Chebyshev-fitted form of Press et al., Numerical Recipes 6.2 (erfcc):
 * t e^(q(t) - z^2) with fractional error < 1.2e-7 for every z >= 0, so it stays accurate in the
 * tail where 1 + erf(x) would cancel. One exp of the combined exponent: GELU's forward needs no
 * other, and an exp is a third of its cost. */
static inline float erfc_f(float z) {
    float t = 1.0f / (1.0f + 0.5f * z);
    float q = 0.17087277f;
    q = q * t - 0.82215223f;
    q = q * t + 1.48851587f;
    q = q * t - 1.13520398f;
    q = q * t + 0.27886807f;
    q = q * t - 0.18628806f;
    q = q * t + 0.09678418f;
    q = q * t + 0.37409196f;
    q = q * t + 1.00002368f;
    q = q * t - 1.26551223f;
    return t * exp_f(q - z * z);
}

/* Standard normal CDF Phi(v): GELU(v) = v Phi(v). */
static inline float normal_cdf(float v) {
    float z = (v < 0.0f ? -v : v) * 0.70710678118654752f;
    float half_erfc = 0.5f * erfc_f(z);
    return v < 0.0f ? half_erfc : 1.0f - half_erfc;
}

static void cpu_add(ms_backend *be, ms_act *y_, const ms_act *a_, const ms_act *b_, size_t n) {
    (void)be;
    float *y = F(y_);        /* [n], may alias a or b */
    const float *a = CF(a_); /* [n] */
    const float *b = CF(b_); /* [n] */
    /* omp simd: aliasing is exact (same index), so vectorising needs no runtime overlap test. */
#pragma omp parallel for simd if (parallel : n > COPY_PAR_MIN) schedule(static)
    for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

static void cpu_add_row(ms_backend *be, ms_act *y_, const ms_act *x_, const float *v, int M,
                        int D) {
    (void)be;
    float *y = F(y_);        /* [M, D], may alias x */
    const float *x = CF(x_); /* [M, D] */
#pragma omp parallel for if ((size_t)M * D > COPY_PAR_MIN) schedule(static)
    for (int m = 0; m < M; m++) {
        float *yr = y + (size_t)m * D;
        const float *xr = x + (size_t)m * D;
#pragma omp simd
        for (int j = 0; j < D; j++) yr[j] = xr[j] + v[j];
    }
}

static void cpu_sum_rows(ms_backend *be, float *dv, const ms_act *dy_, int M, int D) {
    (void)be;
    const float *dy = CF(dy_); /* [M, D]; dv [D] accumulated */
    int blocks = (D + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for if ((size_t)M * D > COPY_PAR_MIN && blocks > 1) schedule(static)
    for (int c = 0; c < blocks; c++) {
        int j0 = c * COL_BLOCK;
        int w = D - j0 < COL_BLOCK ? D - j0 : COL_BLOCK;
        double acc[COL_BLOCK] = {0}; /* [w] column sums in double: M can be 10^4 rows */
        for (int m = 0; m < M; m++) {
            const float *row = dy + (size_t)m * D + j0;
#pragma omp simd
            for (int j = 0; j < w; j++) acc[j] += row[j];
        }
        for (int j = 0; j < w; j++) dv[j0 + j] = (float)((double)dv[j0 + j] + acc[j]);
    }
}

static void cpu_scale_f32(ms_backend *be, float *x, float s, size_t n) {
    (void)be;
#pragma omp parallel for simd if (parallel : n > COPY_PAR_MIN) schedule(static)
    for (size_t i = 0; i < n; i++) x[i] *= s;
}

static void cpu_drop_path(ms_backend *be, ms_act *y_, const ms_act *x_,
                          const float *sample_scale, int B, size_t n) {
    (void)be;
    float *y = F(y_);        /* [B, n], may alias x (the backward runs in place on dy) */
    const float *x = CF(x_); /* [B, n]; sample_scale [B] */
    /* Work items are (sample, chunk) so a batch of two large samples still uses every thread. */
    size_t per = (n + DP_CHUNK - 1) / DP_CHUNK;
    size_t items = (size_t)B * per;
#pragma omp parallel for if ((size_t)B * n > COPY_PAR_MIN) schedule(static)
    for (size_t t = 0; t < items; t++) {
        size_t b = t / per, i0 = (t % per) * DP_CHUNK;
        size_t i1 = i0 + DP_CHUNK < n ? i0 + DP_CHUNK : n;
        float s = sample_scale[b];
        float *yr = y + b * n;
        const float *xr = x + b * n;
#pragma omp simd
        for (size_t i = i0; i < i1; i++) yr[i] = xr[i] * s;
    }
}

static void cpu_gelu(ms_backend *be, ms_act *y_, const ms_act *x_, size_t n) {
    (void)be;
    float *y = F(y_);        /* [n], may alias x */
    const float *x = CF(x_); /* [n] */
#pragma omp parallel for simd if (parallel : n > 2 * CPU_PAR_MIN) schedule(static)
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        y[i] = v * normal_cdf(v);
    }
}

/* d/dx [x Phi(x)] = Phi(x) + x phi(x), phi the standard normal density. */
static void cpu_gelu_bwd(ms_backend *be, ms_act *dx_, const ms_act *dy_, const ms_act *x_,
                         size_t n) {
    (void)be;
    float *dx = F(dx_);        /* [n], may alias dy */
    const float *dy = CF(dy_); /* [n] */
    const float *x = CF(x_);   /* [n] */
#pragma omp parallel for simd if (parallel : n > 2 * CPU_PAR_MIN) schedule(static)
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        float g = exp_f(-0.5f * v * v);
        dx[i] = dy[i] * (normal_cdf(v) + v * g * 0.39894228040143268f);
    }
}

static void cpu_softmax(ms_backend *be, ms_act *y_, const ms_act *x_, int M, int N) {
    (void)be;
    float *y = F(y_);        /* [M, N], may alias x */
    const float *x = CF(x_); /* [M, N] */
#pragma omp parallel for if ((size_t)M * N > CPU_PAR_MIN / 4) schedule(static)
    for (int m = 0; m < M; m++) softmax_row(y + (size_t)m * N, x + (size_t)m * N, N);
}

/* dx = y (dy - sum_j dy_j y_j), the softmax Jacobian applied to dy. */
static void cpu_softmax_bwd(ms_backend *be, ms_act *dx_, const ms_act *dy_, const ms_act *y_,
                            int M, int N) {
    (void)be;
    float *dx = F(dx_);        /* [M, N], may alias dy */
    const float *dy = CF(dy_); /* [M, N] */
    const float *y = CF(y_);   /* [M, N] */
#pragma omp parallel for if ((size_t)M * N > CPU_PAR_MIN) schedule(static)
    for (int m = 0; m < M; m++)
        softmax_row_bwd(dx + (size_t)m * N, dy + (size_t)m * N, y + (size_t)m * N, N);
}

void cpu_register_elementwise(ms_backend *be) {
    be->add = cpu_add;
    be->add_row = cpu_add_row;
    be->sum_rows = cpu_sum_rows;
    be->scale_f32 = cpu_scale_f32;
    be->drop_path = cpu_drop_path;
    be->gelu = cpu_gelu;
    be->gelu_bwd = cpu_gelu_bwd;
    be->softmax = cpu_softmax;
    be->softmax_bwd = cpu_softmax_bwd;
}
