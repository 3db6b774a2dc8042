/* Dense layers on the CPU: linear (OpenBLAS sgemm, both weight layouts) and LayerNorm.
 *
 * OpenBLAS threads its GEMMs itself (OpenMP build) and its results are fixed for a fixed thread
 * count. Column sums (bias, gamma and beta gradients) are split over column blocks, each summed
 * over all rows in order by one thread in double, so they do not depend on the thread count. */
#include "cpu.h"

#include <cblas.h>
#include <math.h>

/* Columns per work item of the LayerNorm parameter-gradient sums. */
#define COL_BLOCK 64
/* Waking the passive OpenMP workers costs 5 us on an idle machine and ~40 us on a busy one, so
 * a loop forks only above ~20 us of one thread's work: LayerNorm costs ~0.3 ns per element,
 * seeding y with the bias (a copy) ~0.06 ns. */
#define LN_PAR_MIN (2 * CPU_PAR_MIN)
#define FILL_PAR_MIN (8 * CPU_PAR_MIN)

/* y[M, O] = x[M, I] W (+ b). Layout MS_W_OUT_IN stores W^T, i.e. w[O, I] as nn.Linear. */
static void cpu_linear(ms_backend *be, ms_act *y_, const ms_act *x_, const float *w,
                       const float *b, int M, int I, int O, ms_wlayout layout) {
    (void)be;
    float *y = F(y_);        /* [M, O] */
    const float *x = CF(x_); /* [M, I]; w [O, I] or [I, O]; b [O] or NULL */
    if (M <= 0 || O <= 0) return;
    if (b) {
        /* Seed y with the bias and let sgemm add into it (beta = 1): one pass fewer over y
         * than a separate bias add after the GEMM. */
#pragma omp parallel for if ((size_t)M * O > FILL_PAR_MIN) schedule(static)
        for (int m = 0; m < M; m++) {
            float *yr = y + (size_t)m * O;
#pragma omp simd
            for (int o = 0; o < O; o++) yr[o] = b[o];
        }
    }
    if (layout == MS_W_OUT_IN)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, O, I, 1.0f, x, I, w, I,
                    b ? 1.0f : 0.0f, y, O);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, O, I, 1.0f, x, I, w, O,
                    b ? 1.0f : 0.0f, y, O);
}

/* dx[M, I] = dy W^T (+= with accum_dx; NULL skips), dw += x^T dy in w's layout,
 * db[O] += colsum(dy) (NULL skips; dw NULL skips too, for frozen weights). */
static void cpu_linear_bwd(ms_backend *be, ms_act *dx_, float *dw, float *db, const ms_act *dy_,
                           const ms_act *x_, const float *w, int M, int I, int O,
                           ms_wlayout layout, int accum_dx) {
    float *dx = F(dx_);        /* [M, I] or NULL */
    const float *dy = CF(dy_); /* [M, O] */
    const float *x = CF(x_);   /* [M, I] */
    if (M <= 0) return;
    int out_in = layout == MS_W_OUT_IN;
    if (dx)
        /* sgemm with beta = 0 writes C without reading it, so stale dx contents never leak. */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, out_in ? CblasNoTrans : CblasTrans, M, I, O,
                    1.0f, dy, O, w, out_in ? I : O, accum_dx ? 1.0f : 0.0f, dx, I);
    if (dw) {
        if (out_in) /* dw[O, I] += dy^T x */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, O, I, M, 1.0f, dy, O, x, I, 1.0f,
                        dw, I);
        else /* dw[I, O] += x^T dy */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, I, O, M, 1.0f, x, I, dy, O, 1.0f,
                        dw, O);
    }
    /* The bias gradient is exactly add_row's backward: reuse the deterministic column sum. */
    if (db) be->sum_rows(be, db, dy, M, O);
}

/* Per row: mean and biased variance over D in double (two passes, so rows with a large offset
 * keep their variance), y = (x - mean) rstd gamma + beta. The double mean is applied as a float
 * pair hi + lo: x - hi is exact for x near the mean, so y keeps float accuracy even when
 * |mean| >> std, at float vector speed. mean (= hi) and rstd are saved as float and may be
 * NULL when no backward follows (evaluation). */
static void cpu_layernorm(ms_backend *be, ms_act *y_, float *mean, float *rstd, const ms_act *x_,
                          const float *gamma, const float *beta, int M, int D, float eps) {
    (void)be;
    float *y = F(y_);        /* [M, D], may alias x */
    const float *x = CF(x_); /* [M, D]; gamma, beta [D]; mean, rstd [M] */
#pragma omp parallel for if ((size_t)M * D > LN_PAR_MIN) schedule(static)
    for (int m = 0; m < M; m++) {
        const float *xr = x + (size_t)m * D;
        float *yr = y + (size_t)m * D;
        double s = 0;
#pragma omp simd reduction(+ : s)
        for (int j = 0; j < D; j++) s += xr[j];
        double mu = s / D, ss = 0;
#pragma omp simd reduction(+ : ss)
        for (int j = 0; j < D; j++) ss += ((double)xr[j] - mu) * ((double)xr[j] - mu);
        float mu_hi = (float)mu, mu_lo = (float)(mu - mu_hi);
        float rs = (float)(1.0 / sqrt(ss / D + (double)eps));
        if (mean) mean[m] = mu_hi;
        if (rstd) rstd[m] = rs;
#pragma omp simd
        for (int j = 0; j < D; j++) yr[j] = ((xr[j] - mu_hi) - mu_lo) * rs * gamma[j] + beta[j];
    }
}

/* With xhat = (x - mean) rstd and g = dy gamma:
 *   dx = rstd (g - mean_D(g) - xhat mean_D(g xhat)),
 *   dgamma += sum_M dy xhat, dbeta += sum_M dy.
 * dx, dgamma and dbeta may each be NULL (skipped). */
static void cpu_layernorm_bwd(ms_backend *be, ms_act *dx_, float *dgamma, float *dbeta,
                              const ms_act *dy_, const ms_act *x_, const float *mean,
                              const float *rstd, const float *gamma, int M, int D, int accum_dx) {
    (void)be;
    float *dx = F(dx_);        /* [M, D] or NULL */
    const float *dy = CF(dy_); /* [M, D] */
    const float *x = CF(x_);   /* [M, D]; mean, rstd [M]; gamma, dgamma, dbeta [D] */
    if (dx) {
#pragma omp parallel for if ((size_t)M * D > LN_PAR_MIN) schedule(static)
        for (int m = 0; m < M; m++) {
            const float *xr = x + (size_t)m * D, *dyr = dy + (size_t)m * D;
            float *dxr = dx + (size_t)m * D;
            float mu = mean[m], rs = rstd[m];
            double sg = 0, sgx = 0;
#pragma omp simd reduction(+ : sg, sgx)
            for (int j = 0; j < D; j++) {
                float g = dyr[j] * gamma[j];
                sg += g;
                sgx += (double)g * ((xr[j] - mu) * rs);
            }
            float mg = (float)(sg / D), mgx = (float)(sgx / D);
            if (accum_dx) {
#pragma omp simd
                for (int j = 0; j < D; j++)
                    dxr[j] += rs * (dyr[j] * gamma[j] - mg - (xr[j] - mu) * rs * mgx);
            } else {
#pragma omp simd
                for (int j = 0; j < D; j++)
                    dxr[j] = rs * (dyr[j] * gamma[j] - mg - (xr[j] - mu) * rs * mgx);
            }
        }
    }
    if (!dgamma && !dbeta) return;
    int blocks = (D + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for if ((size_t)M * D > LN_PAR_MIN && blocks > 1) schedule(static)
    for (int c = 0; c < blocks; c++) {
        int j0 = c * COL_BLOCK;
        int w = D - j0 < COL_BLOCK ? D - j0 : COL_BLOCK;
        double ag[COL_BLOCK] = {0}, ab[COL_BLOCK] = {0}; /* [w] gamma and beta sums */
        for (int m = 0; m < M; m++) {
            const float *xr = x + (size_t)m * D + j0, *dyr = dy + (size_t)m * D + j0;
            float mu = mean[m], rs = rstd[m];
#pragma omp simd
            for (int j = 0; j < w; j++) {
                ag[j] += dyr[j] * ((xr[j] - mu) * rs);
                ab[j] += dyr[j];
            }
        }
        if (dgamma)
            for (int j = 0; j < w; j++) dgamma[j0 + j] = (float)(dgamma[j0 + j] + ag[j]);
        if (dbeta)
            for (int j = 0; j < w; j++) dbeta[j0 + j] = (float)(dbeta[j0 + j] + ab[j]);
    }
}

void cpu_register_linear(ms_backend *be) {
    be->linear = cpu_linear;
    be->linear_bwd = cpu_linear_bwd;
    be->layernorm = cpu_layernorm;
    be->layernorm_bwd = cpu_layernorm_bwd;
}
