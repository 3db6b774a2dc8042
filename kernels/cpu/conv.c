/* The PASCAL-Context convolution head on the CPU (METHOD.md section 4): conv2d (stride 1, zero
 * padding k/2, k odd), BatchNorm2d, ReLU and bilinear x2 upsampling, forward and backward.
 *
 * Threading and determinism: the convolution GEMMs run image by image (and row tile by row
 * tile) through cblas_sgemm, which OpenBLAS threads itself; im2col / col2im and every
 * per-channel or per-plane loop are partitioned so that each output element is produced by
 * exactly one thread in a fixed order.
 * No atomics and no floating-point reduction clauses, so results do not depend on timing. */
#include "cpu.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* ---- conv2d ----------------------------------------------------------------------------- */

/* A k > 1 convolution runs as GEMMs over tiles of whole output rows (ms_conv_tile_rows,
 * kernels/backend.h, which is also how callers size col_ws): the im2col of one tile,
 * col[Ci*k*k, rows*W], instead of one image's [Ci*k*k, H*W]. At the last layers of the
 * PASCAL-Context head (256 channels, 256x256 pixels) a whole image's im2col is 600 MB; a tile
 * is 19 MB there, and the GEMMs stay wide (Co x Ci*k*k x >= MS_CONV_TILE_COLS columns): 1024
 * columns were ~5% slower at that layer, 2048 and 4096 as fast as whole images. */

/* col[Ci*k*k, (r1-r0)*W] (row (ci, ky, kx), column (oy - r0, ox)) =
 * x[ci, oy + ky - k/2, ox + kx - k/2] for output rows oy in [r0, r1), zero outside the image;
 * x[Ci, H, W] is one image. Row order matches w[Co, Ci, k, k]. */
static void im2col_rows(float *col, const float *x, int Ci, int H, int W, int k, int r0, int r1) {
    const int pad = k / 2, rows = Ci * k * k;
    const size_t P = (size_t)H * W, T = (size_t)(r1 - r0) * W;
#pragma omp parallel for schedule(static) if ((size_t)rows * T >= CPU_PAR_MIN)
    for (int r = 0; r < rows; r++) {
        const int ci = r / (k * k), ky = (r / k) % k, kx = r % k;
        /* Columns ox whose source ix = ox + kx - pad lies inside [0, W). */
        int lo = pad - kx > 0 ? pad - kx : 0;
        int hi = W + pad - kx < W ? W + pad - kx : W;
        if (hi < lo) hi = lo;
        for (int oy = r0; oy < r1; oy++) {
            float *dst = col + (size_t)r * T + (size_t)(oy - r0) * W;  /* [W] */
            const int iy = oy + ky - pad;
            if (iy < 0 || iy >= H) {
                memset(dst, 0, (size_t)W * sizeof(float));
                continue;
            }
            const float *src = x + (size_t)ci * P + (size_t)iy * W + (kx - pad);
            memset(dst, 0, (size_t)lo * sizeof(float));
            if (hi > lo) memcpy(dst + lo, src + lo, (size_t)(hi - lo) * sizeof(float));
            memset(dst + hi, 0, (size_t)(W - hi) * sizeof(float));
        }
    }
}

/* The adjoint of im2col_rows, accumulated: dx[ci, oy + ky - k/2, ox + kx - k/2] +=
 * dcol[(ci, ky, kx), (oy - r0, ox)] for the taps inside the image. A plane of dx belongs to one
 * thread, and every element receives its terms tile after tile, then by output row and
 * (ky, kx) within a tile: a fixed order, whatever the thread count. */
static void col2im_rows_add(float *dx, const float *dcol, int Ci, int H, int W, int k, int r0,
                            int r1) {
    const int pad = k / 2;
    const size_t P = (size_t)H * W, T = (size_t)(r1 - r0) * W;
#pragma omp parallel for schedule(static) if ((size_t)Ci * k * k * T >= CPU_PAR_MIN)
    for (int ci = 0; ci < Ci; ci++) {
        for (int oy = r0; oy < r1; oy++) {
            for (int ky = 0; ky < k; ky++) {
                const int iy = oy + ky - pad;
                if (iy < 0 || iy >= H) continue;
                float *dst = dx + (size_t)ci * P + (size_t)iy * W;  /* [W] */
                for (int kx = 0; kx < k; kx++) {
                    const float *src = dcol + ((size_t)(ci * k + ky) * k + kx) * T +
                                       (size_t)(oy - r0) * W + (pad - kx);
                    /* Columns ix whose tap ox = ix - kx + pad lies inside [0, W). */
                    const int lo = kx - pad > 0 ? kx - pad : 0;
                    const int hi = W + kx - pad < W ? W + kx - pad : W;
#pragma omp simd
                    for (int ix = lo; ix < hi; ix++) dst[ix] += src[ix];
                }
            }
        }
    }
}

/* y_b[Co, P] = w[Co, Ci*k*k] col_b[Ci*k*k, P] + b per image, one GEMM per row tile. k == 1
 * multiplies x directly and never touches col_ws (which may then be NULL). */
static void cpu_conv2d(ms_backend *be, ms_act *y, const ms_act *x, const float *w,
                       const float *b, int B, int Ci, int H, int W, int Co, int k,
                       ms_act *col_ws) {
    (void)be;
    const int CKK = Ci * k * k, tile = k == 1 ? H : ms_conv_tile_rows(H, W);
    const size_t P = (size_t)H * W;
    float *col = F(col_ws); /* [Ci*k*k, tile*W] */
    for (int bi = 0; bi < B; bi++) {
        const float *xb = CF(x) + (size_t)bi * Ci * P;  /* [Ci, P] */
        float *yb = F(y) + (size_t)bi * Co * P;          /* [Co, P] */
        for (int r0 = 0; r0 < H; r0 += tile) {
            const int r1 = r0 + tile < H ? r0 + tile : H, T = (r1 - r0) * W;
            /* The bias seeds the tile's outputs just before the GEMM adds into them (beta 1),
             * while they are in cache. */
            for (int co = 0; co < Co && b; co++) {
                float *yr = yb + (size_t)co * P + (size_t)r0 * W; /* [T] */
#pragma omp simd
                for (int p = 0; p < T; p++) yr[p] = b[co];
            }
            const float *src = xb + (size_t)r0 * W; /* [Ci*k*k, T], row stride ld */
            int ld = (int)P;
            if (k != 1) {
                im2col_rows(col, xb, Ci, H, W, k, r0, r1);
                src = col, ld = T;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Co, T, CKK, 1.0f, w, CKK,
                        src, ld, b ? 1.0f : 0.0f, yb + (size_t)r0 * W, (int)P);
        }
    }
}

/* db[co] += sum over images and pixels of dy[b, co, :], in double, channels split over threads. */
static void conv_bias_grad(float *db, const float *dy, int B, int Co, size_t P) {
#pragma omp parallel for schedule(static) if ((size_t)B * Co * P >= CPU_PAR_MIN)
    for (int co = 0; co < Co; co++) {
        double s = 0;
        for (int bi = 0; bi < B; bi++) {
            const float *d = dy + ((size_t)bi * Co + co) * P;
            for (size_t p = 0; p < P; p++) s += d[p];
        }
        db[co] += (float)s;
    }
}

/* dw[Co, Ci*k*k] += dy_b col_b^T per image and row tile (in order); db[Co] += spatial sums
 * (NULL: skipped, for a conv without bias); dx[B, Ci, H, W] written through dcol = w^T dy_b and
 * col2im (NULL: skipped, for a conv whose input needs no gradient). col_ws holds the im2col of
 * a tile of x_b for dw first and is then reused for its dcol, so one tile of scratch suffices. */
static void cpu_conv2d_bwd(ms_backend *be, ms_act *dx, float *dw, float *db, const ms_act *dy,
                           const ms_act *x, const float *w, int B, int Ci, int H, int W, int Co,
                           int k, ms_act *col_ws) {
    (void)be;
    const int CKK = Ci * k * k;
    const size_t P = (size_t)H * W;
    if (db) conv_bias_grad(db, CF(dy), B, Co, P);
    if (k == 1) {
        /* No im2col: one GEMM per image and weight. */
        for (int bi = 0; bi < B; bi++) {
            const float *xb = CF(x) + (size_t)bi * Ci * P;   /* [Ci, P] */
            const float *dyb = CF(dy) + (size_t)bi * Co * P; /* [Co, P] */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Co, Ci, (int)P, 1.0f, dyb,
                        (int)P, xb, (int)P, 1.0f, dw, Ci);
            if (dx)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Ci, (int)P, Co, 1.0f, w, Ci,
                            dyb, (int)P, 0.0f, F(dx) + (size_t)bi * Ci * P, (int)P);
        }
        return;
    }
    const int tile = ms_conv_tile_rows(H, W);
    float *col = F(col_ws); /* [Ci*k*k, tile*W]: im2col of the tile, then its dcol */
    for (int bi = 0; bi < B; bi++) {
        const float *xb = CF(x) + (size_t)bi * Ci * P;    /* [Ci, P] */
        const float *dyb = CF(dy) + (size_t)bi * Co * P;  /* [Co, P] */
        float *dxb = dx ? F(dx) + (size_t)bi * Ci * P : NULL; /* [Ci, P] */
        if (dxb) memset(dxb, 0, (size_t)Ci * P * sizeof(float));
        for (int r0 = 0; r0 < H; r0 += tile) {
            const int r1 = r0 + tile < H ? r0 + tile : H, T = (r1 - r0) * W;
            const float *dyt = dyb + (size_t)r0 * W; /* [Co, T], row stride P */
            im2col_rows(col, xb, Ci, H, W, k, r0, r1);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Co, CKK, T, 1.0f, dyt, (int)P,
                        col, T, 1.0f, dw, CKK);
            if (!dxb) continue;
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, CKK, T, Co, 1.0f, w, CKK, dyt,
                        (int)P, 0.0f, col, T);
            col2im_rows_add(dxb, col, Ci, H, W, k, r0, r1);
        }
    }
}

/* ---- BatchNorm2d ------------------------------------------------------------------------ */
/* Statistics per channel over its B*P values; one thread owns a channel and sums it in
 * (b, p) order in double, so the result does not depend on the thread count either. */

static void cpu_batchnorm_train(ms_backend *be, ms_act *y, float *mean, float *rstd,
                                float *running_mean, float *running_var, const ms_act *x,
                                const float *gamma, const float *beta, int B, int C, int P,
                                float eps, float momentum) {
    (void)be;
    const size_t n = (size_t)B * P;
#pragma omp parallel for schedule(static) if ((size_t)C * n >= CPU_PAR_MIN)
    for (int c = 0; c < C; c++) {
        double s = 0;
        for (int bi = 0; bi < B; bi++) {
            const float *xc = CF(x) + ((size_t)bi * C + c) * P;
            for (int p = 0; p < P; p++) s += xc[p];
        }
        const double mu = s / (double)n;
        /* Two passes: the variance of shifted values does not cancel catastrophically. */
        double ss = 0;
        for (int bi = 0; bi < B; bi++) {
            const float *xc = CF(x) + ((size_t)bi * C + c) * P;
            for (int p = 0; p < P; p++) {
                const double d = xc[p] - mu;
                ss += d * d;
            }
        }
        const double var = ss / (double)n;  /* biased: what normalises, as in PyTorch */
        const double rs = 1.0 / sqrt(var + (double)eps);
        mean[c] = (float)mu;
        rstd[c] = (float)rs;
        /* PyTorch tracks the unbiased variance. With a single value per channel it is
         * undefined (PyTorch refuses to train then); we keep the biased one (0) so the running
         * statistics stay finite. */
        const double var_unbiased = n > 1 ? ss / (double)(n - 1) : var;
        running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * mu);
        running_var[c] = (float)((1.0 - momentum) * running_var[c] + momentum * var_unbiased);
        const float m = (float)mu, scale = (float)(rs * gamma[c]), shift = beta[c];
        for (int bi = 0; bi < B; bi++) {
            const float *xc = CF(x) + ((size_t)bi * C + c) * P;
            float *yc = F(y) + ((size_t)bi * C + c) * P;
            for (int p = 0; p < P; p++) yc[p] = (xc[p] - m) * scale + shift;
        }
    }
}

static void cpu_batchnorm_eval(ms_backend *be, ms_act *y, const ms_act *x,
                               const float *running_mean, const float *running_var,
                               const float *gamma, const float *beta, int B, int C, int P,
                               float eps) {
    (void)be;
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)B * C * P >= CPU_PAR_MIN)
    for (int bi = 0; bi < B; bi++) {
        for (int c = 0; c < C; c++) {
            const float m = running_mean[c];
            const float scale = (float)(gamma[c] / sqrt((double)running_var[c] + (double)eps));
            const float shift = beta[c];
            const float *xc = CF(x) + ((size_t)bi * C + c) * P;
            float *yc = F(y) + ((size_t)bi * C + c) * P;
            for (int p = 0; p < P; p++) yc[p] = (xc[p] - m) * scale + shift;
        }
    }
}

/* Backward of the TRAINING forward (batch statistics; the head is never backpropagated in
 * eval mode). With xhat = (x - mean) rstd and n = B*P values per channel:
 *   dbeta += sum dy, dgamma += sum dy xhat,
 *   dx = gamma rstd (dy - sum(dy)/n - xhat sum(dy xhat)/n)   (written; dx NULL: skipped). */
static void cpu_batchnorm_bwd(ms_backend *be, ms_act *dx, float *dgamma, float *dbeta,
                              const ms_act *dy, const ms_act *x, const float *mean,
                              const float *rstd, const float *gamma, int B, int C, int P) {
    (void)be;
    const size_t n = (size_t)B * P;
#pragma omp parallel for schedule(static) if ((size_t)C * n >= CPU_PAR_MIN)
    for (int c = 0; c < C; c++) {
        const double m = mean[c], rs = rstd[c];
        double sdy = 0, sdyx = 0;
        for (int bi = 0; bi < B; bi++) {
            const float *xc = CF(x) + ((size_t)bi * C + c) * P;
            const float *dyc = CF(dy) + ((size_t)bi * C + c) * P;
            for (int p = 0; p < P; p++) {
                sdy += dyc[p];
                sdyx += dyc[p] * ((xc[p] - m) * rs);
            }
        }
        dbeta[c] += (float)sdy;
        dgamma[c] += (float)sdyx;
        if (!dx) continue;
        const double k = gamma[c] * rs, a = sdy / (double)n, g = sdyx / (double)n;
        for (int bi = 0; bi < B; bi++) {
            const float *xc = CF(x) + ((size_t)bi * C + c) * P;
            const float *dyc = CF(dy) + ((size_t)bi * C + c) * P;
            float *dxc = F(dx) + ((size_t)bi * C + c) * P;
            for (int p = 0; p < P; p++)
                dxc[p] = (float)(k * (dyc[p] - a - (xc[p] - m) * rs * g));
        }
    }
}

/* ---- ReLU ------------------------------------------------------------------------------- */

/* NaN propagates (x < 0 is false for NaN), as torch.relu does, so divergence stays visible. */
static void cpu_relu(ms_backend *be, ms_act *y, const ms_act *x, size_t n) {
    (void)be;
    const float *xs = CF(x);
    float *ys = F(y);
#pragma omp parallel for simd schedule(static) if (n >= CPU_PAR_MIN)
    for (size_t i = 0; i < n; i++) ys[i] = xs[i] < 0.0f ? 0.0f : xs[i];
}

/* From the output, as PyTorch's threshold_backward: the gradient passes where y > 0. */
static void cpu_relu_bwd(ms_backend *be, ms_act *dx, const ms_act *dy, const ms_act *y,
                         size_t n) {
    (void)be;
    const float *dys = CF(dy), *ys = CF(y);
    float *dxs = F(dx);
#pragma omp parallel for simd schedule(static) if (n >= CPU_PAR_MIN)
    for (size_t i = 0; i < n; i++) dxs[i] = ys[i] > 0.0f ? dys[i] : 0.0f;
}

/* ---- bilinear x2 upsampling (align_corners = False) -------------------------------------- */

/* Source taps of output index o along an axis of n inputs, as PyTorch computes them for
 * align_corners=False: src = (o + 0.5) / 2 - 0.5 clamped below at 0, i0 = floor(src),
 * i1 = min(i0 + 1, n - 1), weights l0 = 1 - (src - i0) and l1 = src - i0. For scale 2 the
 * weights are exactly 0, 0.25, 0.75 or 1. */
typedef struct { int i0, i1; float l0, l1; } up_tap;

static inline up_tap up_src(int o, int n) {
    float src = 0.5f * ((float)o + 0.5f) - 0.5f;
    if (src < 0.0f) src = 0.0f;
    up_tap t;
    t.i0 = (int)src;
    t.i1 = t.i0 < n - 1 ? t.i0 + 1 : t.i0;
    t.l1 = src - (float)t.i0;
    t.l0 = 1.0f - t.l1;
    return t;
}

/* Weight of input i in output o (both taps may name i at the clamped edge). */
static inline float up_weight(int o, int i, int n) {
    const up_tap t = up_src(o, n);
    return (t.i0 == i ? t.l0 : 0.0f) + (t.i1 == i ? t.l1 : 0.0f);
}

/* Outputs that can read input i lie in [2i - 2, 2i + 3]: i0(o) is o/2 - 1 or o/2 rounded down
 * (0 at the clamp) and i1 is i0 + 1 at most. */
#define UP_SPAN 6

/* Output columns per pass of the forward: the column taps are tabulated once per plane and
 * chunk (on the stack) instead of once per pixel. */
#define UP_OCHUNK 512

static void cpu_upsample2x(ms_backend *be, ms_act *y, const ms_act *x, int BC, int H, int W) {
    (void)be;
    const int Ho = 2 * H, Wo = 2 * W, nchunk = (Wo + UP_OCHUNK - 1) / UP_OCHUNK;
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)BC * Ho * Wo >= CPU_PAR_MIN)
    for (int pl = 0; pl < BC; pl++) {
        for (int ch = 0; ch < nchunk; ch++) {
            const float *xp = CF(x) + (size_t)pl * H * W;  /* [H, W] */
            const int q0 = ch * UP_OCHUNK, q1 = q0 + UP_OCHUNK < Wo ? q0 + UP_OCHUNK : Wo;
            up_tap tx[UP_OCHUNK];                          /* [q1 - q0] */
            for (int q = q0; q < q1; q++) tx[q - q0] = up_src(q, W);
            for (int oy = 0; oy < Ho; oy++) {
                const up_tap ty = up_src(oy, H);
                const float *r0 = xp + (size_t)ty.i0 * W, *r1 = xp + (size_t)ty.i1 * W;
                float *yr = F(y) + ((size_t)pl * Ho + oy) * Wo;  /* [Wo] */
                for (int q = q0; q < q1; q++) {
                    const up_tap t = tx[q - q0];
                    yr[q] = ty.l0 * (t.l0 * r0[t.i0] + t.l1 * r0[t.i1]) +
                            ty.l1 * (t.l0 * r1[t.i0] + t.l1 * r1[t.i1]);
                }
            }
        }
    }
}

/* Columns of input handled per pass of the backward gather: bounds its stack buffers. */
#define UP_CHUNK 256

/* The adjoint of upsample2x as a gather over each input pixel's contributing outputs:
 * dx[i, j] = sum_o wy(o, i) sum_q wx(q, j) dy[o, q], o in [2i-2, 2i+3], q in [2j-2, 2j+3].
 * Rows are combined first into a buffer over the chunk's output columns, then columns. Each
 * dx element is written by one thread in a fixed order, so the result is deterministic. */
static void cpu_upsample2x_bwd(ms_backend *be, ms_act *dx, const ms_act *dy, int BC, int H,
                               int W) {
    (void)be;
    const int Ho = 2 * H, Wo = 2 * W, nchunk = (W + UP_CHUNK - 1) / UP_CHUNK;
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)BC * Ho * Wo >= CPU_PAR_MIN)
    for (int pl = 0; pl < BC; pl++) {
        for (int ch = 0; ch < nchunk; ch++) {
            const float *dyp = CF(dy) + (size_t)pl * Ho * Wo;  /* [Ho, Wo] */
            float *dxp = F(dx) + (size_t)pl * H * W;           /* [H, W] */
            const int j0 = ch * UP_CHUNK, j1 = j0 + UP_CHUNK < W ? j0 + UP_CHUNK : W;
            /* Output columns the chunk reads: [q0, q1). */
            const int q0 = 2 * j0 - 2 > 0 ? 2 * j0 - 2 : 0;
            const int q1 = 2 * j1 + 2 < Wo ? 2 * j1 + 2 : Wo;
            float wx[UP_CHUNK][UP_SPAN];                 /* wx[j - j0][q - (2j - 2)] */
            float rowsum[2 * UP_CHUNK + 4];              /* [q1 - q0] */
            for (int j = j0; j < j1; j++)
                for (int s = 0; s < UP_SPAN; s++) {
                    const int q = 2 * j - 2 + s;
                    wx[j - j0][s] = q >= 0 && q < Wo ? up_weight(q, j, W) : 0.0f;
                }
            for (int i = 0; i < H; i++) {
                float wy[UP_SPAN];
                for (int s = 0; s < UP_SPAN; s++) {
                    const int o = 2 * i - 2 + s;
                    wy[s] = o >= 0 && o < Ho ? up_weight(o, i, H) : 0.0f;
                }
                for (int q = q0; q < q1; q++) {
                    float acc = 0.0f;
                    for (int s = 0; s < UP_SPAN; s++)
                        if (wy[s] != 0.0f) acc += wy[s] * dyp[(size_t)(2 * i - 2 + s) * Wo + q];
                    rowsum[q - q0] = acc;
                }
                float *dxr = dxp + (size_t)i * W;
                for (int j = j0; j < j1; j++) {
                    float acc = 0.0f;
                    for (int s = 0; s < UP_SPAN; s++) {
                        const int q = 2 * j - 2 + s;
                        if (wx[j - j0][s] != 0.0f) acc += wx[j - j0][s] * rowsum[q - q0];
                    }
                    dxr[j] = acc;
                }
            }
        }
    }
}

void cpu_register_conv(ms_backend *be) {
    be->conv2d = cpu_conv2d;
    be->conv2d_bwd = cpu_conv2d_bwd;
    be->batchnorm_train = cpu_batchnorm_train;
    be->batchnorm_eval = cpu_batchnorm_eval;
    be->batchnorm_bwd = cpu_batchnorm_bwd;
    be->relu = cpu_relu;
    be->relu_bwd = cpu_relu_bwd;
    be->upsample2x = cpu_upsample2x;
    be->upsample2x_bwd = cpu_upsample2x_bwd;
}
