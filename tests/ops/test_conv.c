/* The convolution head ops (kernels/cpu/conv.c): conv2d, BatchNorm2d, ReLU, bilinear x2
 * upsampling. Forward against direct double references, backward against central finite
 * differences of L = sum(gy .* forward(...)) in double, plus hand-checked values. */
#include "../testutil.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

#define FD_H 1e-6
#define FD_MAX 160 /* sampled entries per gradient check */

static double dot(const double *a, const double *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* got - start, the amount an accumulating op added (fails on = instead of +=). */
static float *added(const float *got, const float *start, size_t n) {
    float *d = tu_floats(n);
    for (size_t i = 0; i < n; i++) d[i] = got[i] - start[i];
    return d;
}

/* ================================ conv2d ================================================ */

typedef struct { int B, Ci, H, W, Co, k; } conv_shape;

static size_t conv_nx(conv_shape s) { return (size_t)s.B * s.Ci * s.H * s.W; }
static size_t conv_ny(conv_shape s) { return (size_t)s.B * s.Co * s.H * s.W; }
static size_t conv_nw(conv_shape s) { return (size_t)s.Co * s.Ci * s.k * s.k; }
static size_t conv_ncol(conv_shape s) { return (size_t)s.Ci * s.k * s.k * s.H * s.W; }

/* Direct convolution, stride 1, zero padding k/2: y[B, Co, H, W] from x[B, Ci, H, W],
 * w[Co, Ci, k, k], b[Co] (NULL: none). */
static void ref_conv(double *y, const double *x, const double *w, const double *b,
                     conv_shape s) {
    const int pad = s.k / 2;
    for (int bi = 0; bi < s.B; bi++)
        for (int co = 0; co < s.Co; co++)
            for (int oy = 0; oy < s.H; oy++)
                for (int ox = 0; ox < s.W; ox++) {
                    double acc = b ? b[co] : 0.0;
                    for (int ci = 0; ci < s.Ci; ci++)
                        for (int ky = 0; ky < s.k; ky++)
                            for (int kx = 0; kx < s.k; kx++) {
                                int iy = oy + ky - pad, ix = ox + kx - pad;
                                if (iy < 0 || iy >= s.H || ix < 0 || ix >= s.W) continue;
                                acc += w[((co * s.Ci + ci) * s.k + ky) * s.k + kx] *
                                       x[((size_t)(bi * s.Ci + ci) * s.H + iy) * s.W + ix];
                            }
                    y[((size_t)(bi * s.Co + co) * s.H + oy) * s.W + ox] = acc;
                }
}

/* Test tensors of one conv, float (for the op) and double (for the reference). */
typedef struct {
    conv_shape s;
    float *x, *w, *b, *col;    /* b NULL when the conv has no bias */
    double *xd, *wd, *bd, *yd, *gy;
} conv_case;

static conv_case conv_make(tu_rng *r, conv_shape s, int bias) {
    conv_case c = {.s = s};
    c.x = tu_floats(conv_nx(s));
    c.w = tu_floats(conv_nw(s));
    c.col = tu_floats(conv_ncol(s));
    tu_fill(r, c.x, conv_nx(s), -1, 1);
    tu_fill_normal(r, c.w, conv_nw(s), 0.5);
    c.xd = tu_doubles(conv_nx(s));
    c.wd = tu_doubles(conv_nw(s));
    tu_to_double(c.xd, c.x, conv_nx(s));
    tu_to_double(c.wd, c.w, conv_nw(s));
    if (bias) {
        c.b = tu_floats(s.Co);
        tu_fill(r, c.b, s.Co, -1, 1);
        c.bd = tu_doubles(s.Co);
        tu_to_double(c.bd, c.b, s.Co);
    }
    c.yd = tu_doubles(conv_ny(s));
    c.gy = tu_doubles(conv_ny(s));
    for (size_t i = 0; i < conv_ny(s); i++) c.gy[i] = tu_uniform(r) * 2 - 1;
    return c;
}

/* L = sum(gy .* conv(x, w, b)); the FD helper perturbs c->xd / wd / bd in place. */
static double conv_objective(void *ctx, const double *unused) {
    (void)unused;
    conv_case *c = ctx;
    ref_conv(c->yd, c->xd, c->wd, c->bd, c->s);
    return dot(c->gy, c->yd, conv_ny(c->s));
}

static const conv_shape conv_shapes[] = {
    {2, 3, 5, 7, 4, 3},  /* H != W */
    {1, 1, 1, 1, 1, 3},  /* every tap but the centre falls in the padding */
    {3, 2, 1, 6, 5, 3},  /* H = 1 */
    {2, 4, 6, 1, 3, 3},  /* W = 1 */
    {2, 1, 4, 5, 1, 3},  /* Ci = Co = 1 */
    {2, 5, 4, 3, 6, 1},  /* k = 1 */
    {1, 3, 7, 1, 2, 1},  /* k = 1, W = 1 */
    {2, 2, 6, 5, 3, 5},  /* k = 5 (any odd k) */
    {2, 2, 2, 3, 2, 5},  /* k = 5 larger than the image */
    {2, 16, 13, 17, 8, 3}, /* large enough for threaded im2col / col2im */
    {2, 2, 60, 40, 3, 3},  /* row tiles of 52 + 8 rows (MS_CONV_TILE_COLS 2048 / W 40) */
    {1, 3, 9, 600, 2, 5},  /* k = 5 over tiles of 4 + 4 + 1 rows: taps cross tile edges */
};
#define N_CONV_SHAPES (sizeof conv_shapes / sizeof conv_shapes[0])

Test(conv, forward_matches_direct_convolution) {
    tu_rng r = tu_seed(11);
    for (size_t t = 0; t < N_CONV_SHAPES; t++)
        for (int bias = 0; bias <= 1; bias++) {
            conv_shape s = conv_shapes[t];
            conv_case c = conv_make(&r, s, bias);
            float *y = tu_floats(conv_ny(s));
            tu_fill(&r, y, conv_ny(s), 5, 6); /* garbage: y must be written, not added to */
            tu_cpu()->conv2d(tu_cpu(), y, c.x, c.w, c.b, s.B, s.Ci, s.H, s.W, s.Co, s.k, c.col);
            ref_conv(c.yd, c.xd, c.wd, c.bd, s);
            char what[96];
            snprintf(what, sizeof what, "conv2d y (shape %zu, bias %d)", t, bias);
            tu_expect_close(what, y, c.yd, conv_ny(s), 1e-5);
        }
}

Test(conv, forward_hand_checked_3x3) {
    /* 3x3 image 1..9, all-ones 3x3 kernel, bias 0.5: each output is the sum of its zero-padded
     * neighbourhood plus 0.5. */
    float x[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, w[9], b = 0.5f, y[9], col[81];
    for (int i = 0; i < 9; i++) w[i] = 1;
    const float want[9] = {12.5f, 21.5f, 16.5f, 27.5f, 45.5f, 33.5f, 24.5f, 39.5f, 28.5f};
    tu_cpu()->conv2d(tu_cpu(), y, x, w, &b, 1, 1, 3, 3, 1, 3, col);
    for (int i = 0; i < 9; i++) cr_assert_float_eq(y[i], want[i], 1e-6, "y[%d] = %g, want %g", i, y[i], want[i]);
}

/* Runs conv2d_bwd on a case and checks dx (written), dw and db (accumulated) against FD. */
static void conv_check_backward(tu_rng *r, conv_shape s, int bias, const char *tag) {
    conv_case c = conv_make(r, s, bias);
    const size_t nx = conv_nx(s), nw = conv_nw(s), ny = conv_ny(s);
    float *dy = tu_floats(ny), *dx = tu_floats(nx), *dw = tu_floats(nw), *dw0 = tu_floats(nw);
    tu_to_float(dy, c.gy, ny);
    tu_to_double(c.gy, dy, ny); /* the reference uses exactly the float dy the op sees */
    tu_fill(r, dx, nx, 3, 4);   /* garbage: dx is written */
    tu_fill(r, dw0, nw, -1, 1);
    memcpy(dw, dw0, nw * sizeof(float));
    float *db = NULL, *db0 = NULL;
    if (bias) {
        db = tu_floats(s.Co), db0 = tu_floats(s.Co);
        tu_fill(r, db0, s.Co, -1, 1);
        memcpy(db, db0, s.Co * sizeof(float));
    }
    tu_cpu()->conv2d_bwd(tu_cpu(), dx, dw, db, dy, c.x, c.w, s.B, s.Ci, s.H, s.W, s.Co, s.k,
                         c.col);
    char what[128];
    size_t idx[FD_MAX], n_idx = tu_sample_indices(r, nx, FD_MAX, idx);
    double *fd = tu_doubles(FD_MAX);
    tu_fd_grad(conv_objective, &c, c.xd, nx, idx, n_idx, FD_H, fd);
    snprintf(what, sizeof what, "conv2d dx (%s)", tag);
    tu_expect_grad(what, dx, fd, idx, n_idx, 1e-4);

    n_idx = tu_sample_indices(r, nw, FD_MAX, idx);
    tu_fd_grad(conv_objective, &c, c.wd, nw, idx, n_idx, FD_H, fd);
    snprintf(what, sizeof what, "conv2d dw (%s)", tag);
    tu_expect_grad(what, added(dw, dw0, nw), fd, idx, n_idx, 1e-4);

    if (bias) {
        tu_fd_grad(conv_objective, &c, c.bd, s.Co, NULL, s.Co, FD_H, fd);
        snprintf(what, sizeof what, "conv2d db (%s)", tag);
        tu_expect_grad(what, added(db, db0, s.Co), fd, NULL, s.Co, 1e-4);
    }
}

Test(conv, backward_matches_finite_differences) {
    tu_rng r = tu_seed(12);
    for (size_t t = 0; t < N_CONV_SHAPES; t++) {
        char tag[32];
        snprintf(tag, sizeof tag, "shape %zu", t);
        conv_check_backward(&r, conv_shapes[t], (int)(t % 3 != 2), tag);
    }
}

Test(conv, backward_skips_null_dx_and_db) {
    /* dx NULL and db NULL (a conv without bias whose input needs no gradient): dw must equal
     * the full call's. */
    tu_rng r = tu_seed(13);
    for (int k = 1; k <= 3; k += 2) {
        conv_shape s = {2, 3, 4, 5, 4, k};
        conv_case c = conv_make(&r, s, 0);
        float *dy = tu_floats(conv_ny(s)), *dx = tu_floats(conv_nx(s));
        float *dw1 = tu_floats(conv_nw(s)), *dw2 = tu_floats(conv_nw(s)), db[4] = {0};
        tu_fill(&r, dy, conv_ny(s), -1, 1);
        tu_cpu()->conv2d_bwd(tu_cpu(), dx, dw1, db, dy, c.x, c.w, s.B, s.Ci, s.H, s.W, s.Co,
                             s.k, c.col);
        tu_cpu()->conv2d_bwd(tu_cpu(), NULL, dw2, NULL, dy, c.x, c.w, s.B, s.Ci, s.H, s.W,
                             s.Co, s.k, c.col);
        tu_expect_equal("conv2d dw without dx/db", dw2, dw1, conv_nw(s));
        double nz = 0;
        for (size_t i = 0; i < conv_nw(s); i++) nz += fabs(dw1[i]);
        cr_assert(nz > 0, "conv2d dw is all zero");
    }
}

Test(conv, scratch_of_one_row_tile_suffices) {
    /* col_ws of one tile (not one image) followed by canaries: the forward and backward must
     * stay inside it and still match the full-scratch results bit for bit. */
    tu_rng r = tu_seed(15);
    conv_shape s = {2, 4, 100, 64, 5, 3}; /* tiles of 32 rows: 32 + 32 + 32 + 4 */
    conv_case c = conv_make(&r, s, 1);
    const size_t nx = conv_nx(s), ny = conv_ny(s), nw = conv_nw(s);
    const size_t ntile = (size_t)s.Ci * s.k * s.k * ms_conv_tile_rows(s.H, s.W) * s.W, guard = 4096;
    cr_assert(ntile * 3 < conv_ncol(s), "the shape must need several tiles");
    float *col = tu_floats(ntile + guard), *dy = tu_floats(ny);
    for (size_t i = 0; i < guard; i++) col[ntile + i] = 1234.5f;
    tu_fill(&r, dy, ny, -1, 1);
    float *y[2], *dx[2], *dw[2], *db[2];
    for (int run = 0; run < 2; run++) {
        float *ws = run ? col : c.col;
        y[run] = tu_floats(ny), dx[run] = tu_floats(nx);
        dw[run] = tu_floats(nw), db[run] = tu_floats(s.Co);
        tu_cpu()->conv2d(tu_cpu(), y[run], c.x, c.w, c.b, s.B, s.Ci, s.H, s.W, s.Co, s.k, ws);
        tu_cpu()->conv2d_bwd(tu_cpu(), dx[run], dw[run], db[run], dy, c.x, c.w, s.B, s.Ci, s.H,
                             s.W, s.Co, s.k, ws);
    }
    for (size_t i = 0; i < guard; i++)
        cr_assert(col[ntile + i] == 1234.5f, "conv2d wrote past one tile of scratch at %zu", i);
    tu_expect_equal("conv2d y, tile-sized scratch", y[1], y[0], ny);
    tu_expect_equal("conv2d dx, tile-sized scratch", dx[1], dx[0], nx);
    tu_expect_equal("conv2d dw, tile-sized scratch", dw[1], dw[0], nw);
    ref_conv(c.yd, c.xd, c.wd, c.bd, s);
    tu_expect_close("conv2d y over row tiles", y[1], c.yd, ny, 1e-5);
}

Test(conv, deterministic) {
    tu_rng r = tu_seed(14);
    conv_shape s = {2, 24, 80, 30, 16, 3}; /* two row tiles: 69 + 11 */
    conv_case c = conv_make(&r, s, 1);
    const size_t nx = conv_nx(s), ny = conv_ny(s), nw = conv_nw(s);
    float *y[2], *dx[2], *dw[2], *db[2], *dy = tu_floats(ny);
    tu_fill(&r, dy, ny, -1, 1);
    for (int run = 0; run < 2; run++) {
        y[run] = tu_floats(ny), dx[run] = tu_floats(nx);
        dw[run] = tu_floats(nw), db[run] = tu_floats(s.Co);
        tu_cpu()->conv2d(tu_cpu(), y[run], c.x, c.w, c.b, s.B, s.Ci, s.H, s.W, s.Co, s.k, c.col);
        tu_cpu()->conv2d_bwd(tu_cpu(), dx[run], dw[run], db[run], dy, c.x, c.w, s.B, s.Ci, s.H,
                             s.W, s.Co, s.k, c.col);
    }
    tu_expect_equal("conv2d y twice", y[1], y[0], ny);
    tu_expect_equal("conv2d dx twice", dx[1], dx[0], nx);
    tu_expect_equal("conv2d dw twice", dw[1], dw[0], nw);
    tu_expect_equal("conv2d db twice", db[1], db[0], s.Co);
}

/* ================================ BatchNorm2d =========================================== */

typedef struct { int B, C, P; } bn_shape;

static size_t bn_n(bn_shape s) { return (size_t)s.B * s.C * s.P; }

/* Training-mode BatchNorm2d in double: biased batch variance. mean/var may be NULL. */
static void ref_bn_train(double *y, double *mean, double *var, const double *x,
                         const double *gamma, const double *beta, bn_shape s, double eps) {
    const double n = (double)s.B * s.P;
    for (int c = 0; c < s.C; c++) {
        double mu = 0, v = 0;
        for (int b = 0; b < s.B; b++)
            for (int p = 0; p < s.P; p++) mu += x[((size_t)b * s.C + c) * s.P + p];
        mu /= n;
        for (int b = 0; b < s.B; b++)
            for (int p = 0; p < s.P; p++) {
                double d = x[((size_t)b * s.C + c) * s.P + p] - mu;
                v += d * d;
            }
        v /= n;
        if (mean) mean[c] = mu;
        if (var) var[c] = v;
        for (int b = 0; b < s.B; b++)
            for (int p = 0; p < s.P; p++) {
                size_t i = ((size_t)b * s.C + c) * s.P + p;
                y[i] = (x[i] - mu) / sqrt(v + eps) * gamma[c] + beta[c];
            }
    }
}

typedef struct {
    bn_shape s;
    double eps;
    double *x, *gamma, *beta, *y, *gy;
} bn_ctx;

static double bn_objective(void *ctx, const double *unused) {
    (void)unused;
    bn_ctx *c = ctx;
    ref_bn_train(c->y, NULL, NULL, c->x, c->gamma, c->beta, c->s, c->eps);
    return dot(c->gy, c->y, bn_n(c->s));
}

static const bn_shape bn_shapes[] = {
    {2, 3, 5}, {1, 2, 7}, {3, 1, 1}, {1, 4, 3}, {4, 2, 9}, {2, 5, 33}, {4, 16, 600},
};
#define N_BN_SHAPES (sizeof bn_shapes / sizeof bn_shapes[0])

Test(batchnorm, train_forward_and_running_stats) {
    tu_rng r = tu_seed(21);
    const float eps = 1e-5f, momentum = 0.1f;
    for (size_t t = 0; t < N_BN_SHAPES; t++) {
        bn_shape s = bn_shapes[t];
        const size_t n = bn_n(s);
        float *x = tu_floats(n), *y = tu_floats(n), *g = tu_floats(s.C), *bt = tu_floats(s.C);
        float *mean = tu_floats(s.C), *rstd = tu_floats(s.C);
        float *rm = tu_floats(s.C), *rv = tu_floats(s.C);
        tu_fill_normal(&r, x, n, 2.0);
        for (size_t i = 0; i < n; i++) x[i] += 3.0f; /* a mean far from 0 */
        tu_fill(&r, g, s.C, 0.5, 1.5);
        tu_fill(&r, bt, s.C, -1, 1);
        tu_fill(&r, rm, s.C, -1, 1);
        tu_fill(&r, rv, s.C, 0.5, 2);
        double *xd = tu_doubles(n), *gd = tu_doubles(s.C), *bd = tu_doubles(s.C);
        double *yd = tu_doubles(n), *md = tu_doubles(s.C), *vd = tu_doubles(s.C);
        double *rsd = tu_doubles(s.C), *rmd = tu_doubles(s.C), *rvd = tu_doubles(s.C);
        tu_to_double(xd, x, n);
        tu_to_double(gd, g, s.C);
        tu_to_double(bd, bt, s.C);
        ref_bn_train(yd, md, vd, xd, gd, bd, s, eps);
        const double cnt = (double)s.B * s.P;
        for (int c = 0; c < s.C; c++) {
            rsd[c] = 1.0 / sqrt(vd[c] + eps);
            double unbiased = cnt > 1 ? vd[c] * cnt / (cnt - 1) : vd[c];
            rmd[c] = (1 - momentum) * (double)rm[c] + momentum * md[c];
            rvd[c] = (1 - momentum) * (double)rv[c] + momentum * unbiased;
        }
        tu_cpu()->batchnorm_train(tu_cpu(), y, mean, rstd, rm, rv, x, g, bt, s.B, s.C, s.P, eps,
                                  momentum);
        char what[64];
        snprintf(what, sizeof what, "batchnorm y (shape %zu)", t);
        tu_expect_close(what, y, yd, n, 1e-5);
        snprintf(what, sizeof what, "batchnorm mean (shape %zu)", t);
        tu_expect_close(what, mean, md, s.C, 1e-6);
        snprintf(what, sizeof what, "batchnorm rstd (shape %zu)", t);
        tu_expect_close(what, rstd, rsd, s.C, 1e-6);
        snprintf(what, sizeof what, "batchnorm running_mean (shape %zu)", t);
        tu_expect_close(what, rm, rmd, s.C, 1e-6);
        snprintf(what, sizeof what, "batchnorm running_var (shape %zu)", t);
        tu_expect_close(what, rv, rvd, s.C, 1e-6);
    }
}

Test(batchnorm, hand_checked_values) {
    /* x[B=2, C=2, P=2]: channel 0 holds 1, 2 | 3, 4 (mean 2.5, biased var 1.25, unbiased 5/3);
     * channel 1 holds 10, 10 | 10, 14 (mean 11, biased var 3, unbiased 4). */
    const float x[8] = {1, 2, 10, 10, 3, 4, 10, 14};
    const float g[2] = {2, 1}, bt[2] = {0.5f, 0};
    float rm[2] = {0.5f, -1}, rv[2] = {2, 1}, mean[2], rstd[2], y[8];
    tu_cpu()->batchnorm_train(tu_cpu(), y, mean, rstd, rm, rv, x, g, bt, 2, 2, 2, 1e-5f, 0.1f);
    cr_assert_float_eq(mean[0], 2.5f, 1e-6);
    cr_assert_float_eq(mean[1], 11.0f, 1e-6);
    cr_assert_float_eq(rstd[0], 1 / sqrt(1.25 + 1e-5), 1e-6);
    cr_assert_float_eq(rstd[1], 1 / sqrt(3.0 + 1e-5), 1e-6);
    /* running = 0.9 running + 0.1 batch, with the unbiased variance */
    cr_assert_float_eq(rm[0], 0.7f, 1e-6, "running_mean[0] = %.9g", rm[0]);
    cr_assert_float_eq(rm[1], 0.2f, 1e-6, "running_mean[1] = %.9g", rm[1]);
    cr_assert_float_eq(rv[0], 1.8 + 0.1 * 5.0 / 3.0, 1e-6, "running_var[0] = %.9g", rv[0]);
    cr_assert_float_eq(rv[1], 1.3f, 1e-6, "running_var[1] = %.9g", rv[1]);
    /* y[b=0, c=0, p=0] = (1 - 2.5) / sqrt(1.25 + eps) * 2 + 0.5; y[b=1, c=1, p=1] = sqrt(3) */
    cr_assert_float_eq(y[0], -1.5 / sqrt(1.25 + 1e-5) * 2 + 0.5, 1e-5, "y[0] = %.9g", y[0]);
    cr_assert_float_eq(y[7], 3 / sqrt(3.0 + 1e-5), 1e-5, "y[7] = %.9g", y[7]);
}

Test(batchnorm, single_value_per_channel_stays_finite) {
    /* B = P = 1: PyTorch refuses to train; we normalise to beta and track a variance of 0. */
    const float x[2] = {3, -7}, g[2] = {1.5f, 2}, bt[2] = {0.25f, -0.5f};
    float rm[2] = {0, 0}, rv[2] = {1, 1}, mean[2], rstd[2], y[2];
    tu_cpu()->batchnorm_train(tu_cpu(), y, mean, rstd, rm, rv, x, g, bt, 1, 2, 1, 1e-5f, 0.1f);
    cr_assert_float_eq(y[0], 0.25f, 1e-6);
    cr_assert_float_eq(y[1], -0.5f, 1e-6);
    cr_assert_float_eq(rm[0], 0.3f, 1e-6);
    cr_assert_float_eq(rm[1], -0.7f, 1e-6);
    cr_assert_float_eq(rv[0], 0.9f, 1e-6);
    cr_assert_float_eq(rv[1], 0.9f, 1e-6);
}

Test(batchnorm, eval_uses_running_stats) {
    tu_rng r = tu_seed(22);
    for (size_t t = 0; t < N_BN_SHAPES; t++) {
        bn_shape s = bn_shapes[t];
        const size_t n = bn_n(s);
        float *x = tu_floats(n), *y = tu_floats(n), *g = tu_floats(s.C), *bt = tu_floats(s.C);
        float *rm = tu_floats(s.C), *rv = tu_floats(s.C);
        tu_fill_normal(&r, x, n, 1.0);
        tu_fill(&r, g, s.C, 0.5, 1.5);
        tu_fill(&r, bt, s.C, -1, 1);
        tu_fill(&r, rm, s.C, -1, 1);
        tu_fill(&r, rv, s.C, 0.2, 3);
        double *yd = tu_doubles(n);
        for (int b = 0; b < s.B; b++)
            for (int c = 0; c < s.C; c++)
                for (int p = 0; p < s.P; p++) {
                    size_t i = ((size_t)b * s.C + c) * s.P + p;
                    yd[i] = ((double)x[i] - rm[c]) / sqrt((double)rv[c] + 1e-5) * g[c] + bt[c];
                }
        tu_cpu()->batchnorm_eval(tu_cpu(), y, x, rm, rv, g, bt, s.B, s.C, s.P, 1e-5f);
        char what[64];
        snprintf(what, sizeof what, "batchnorm eval y (shape %zu)", t);
        tu_expect_close(what, y, yd, n, 1e-5);
    }
}

Test(batchnorm, backward_matches_finite_differences) {
    tu_rng r = tu_seed(23);
    const float eps = 1e-5f;
    for (size_t t = 0; t < N_BN_SHAPES; t++) {
        bn_shape s = bn_shapes[t];
        const size_t n = bn_n(s);
        float *x = tu_floats(n), *y = tu_floats(n), *g = tu_floats(s.C), *bt = tu_floats(s.C);
        float *mean = tu_floats(s.C), *rstd = tu_floats(s.C);
        float *rm = tu_floats(s.C), *rv = tu_floats(s.C);
        float *dy = tu_floats(n), *dx = tu_floats(n);
        float *dg = tu_floats(s.C), *dg0 = tu_floats(s.C), *db = tu_floats(s.C),
              *db0 = tu_floats(s.C);
        tu_fill_normal(&r, x, n, 1.5);
        tu_fill(&r, g, s.C, 0.5, 1.5);
        tu_fill(&r, bt, s.C, -1, 1);
        tu_fill(&r, dy, n, -1, 1);
        tu_fill(&r, dx, n, 7, 8); /* garbage: dx is written */
        tu_fill(&r, dg0, s.C, -1, 1);
        tu_fill(&r, db0, s.C, -1, 1);
        memcpy(dg, dg0, s.C * sizeof(float));
        memcpy(db, db0, s.C * sizeof(float));
        tu_cpu()->batchnorm_train(tu_cpu(), y, mean, rstd, rm, rv, x, g, bt, s.B, s.C, s.P, eps,
                                  0.1f);
        tu_cpu()->batchnorm_bwd(tu_cpu(), dx, dg, db, dy, x, mean, rstd, g, s.B, s.C, s.P);

        bn_ctx c = {.s = s, .eps = eps};
        c.x = tu_doubles(n), c.gamma = tu_doubles(s.C), c.beta = tu_doubles(s.C);
        c.y = tu_doubles(n), c.gy = tu_doubles(n);
        tu_to_double(c.x, x, n);
        tu_to_double(c.gamma, g, s.C);
        tu_to_double(c.beta, bt, s.C);
        tu_to_double(c.gy, dy, n);
        char what[64];
        size_t idx[FD_MAX], n_idx = tu_sample_indices(&r, n, FD_MAX, idx);
        double *fd = tu_doubles(FD_MAX);
        tu_fd_grad(bn_objective, &c, c.x, n, idx, n_idx, FD_H, fd);
        snprintf(what, sizeof what, "batchnorm dx (shape %zu)", t);
        tu_expect_grad(what, dx, fd, idx, n_idx, 1e-4);
        tu_fd_grad(bn_objective, &c, c.gamma, s.C, NULL, s.C, FD_H, fd);
        snprintf(what, sizeof what, "batchnorm dgamma (shape %zu)", t);
        tu_expect_grad(what, added(dg, dg0, s.C), fd, NULL, s.C, 1e-4);
        tu_fd_grad(bn_objective, &c, c.beta, s.C, NULL, s.C, FD_H, fd);
        snprintf(what, sizeof what, "batchnorm dbeta (shape %zu)", t);
        tu_expect_grad(what, added(db, db0, s.C), fd, NULL, s.C, 1e-4);
    }
}

Test(batchnorm, deterministic_across_runs_and_threads) {
    tu_rng r = tu_seed(24);
    bn_shape s = {4, 16, 777};
    const size_t n = bn_n(s);
    float *x = tu_floats(n), *g = tu_floats(s.C), *bt = tu_floats(s.C), *dy = tu_floats(n);
    tu_fill_normal(&r, x, n, 1.0);
    tu_fill(&r, g, s.C, 0.5, 1.5);
    tu_fill(&r, bt, s.C, -1, 1);
    tu_fill(&r, dy, n, -1, 1);
    float *y[3], *dx[3], *dg[3], *db[3], *mean = tu_floats(s.C), *rstd = tu_floats(s.C);
    float *rm = tu_floats(s.C), *rv = tu_floats(s.C);
    const int threads = omp_get_max_threads();
    for (int run = 0; run < 3; run++) {
        omp_set_num_threads(run == 2 ? 1 : threads); /* per-channel sums: thread count free */
        y[run] = tu_floats(n), dx[run] = tu_floats(n);
        dg[run] = tu_floats(s.C), db[run] = tu_floats(s.C);
        tu_cpu()->batchnorm_train(tu_cpu(), y[run], mean, rstd, rm, rv, x, g, bt, s.B, s.C, s.P,
                                  1e-5f, 0.1f);
        tu_cpu()->batchnorm_bwd(tu_cpu(), dx[run], dg[run], db[run], dy, x, mean, rstd, g, s.B,
                                s.C, s.P);
    }
    omp_set_num_threads(threads);
    for (int run = 1; run < 3; run++) {
        tu_expect_equal("batchnorm y", y[run], y[0], n);
        tu_expect_equal("batchnorm dx", dx[run], dx[0], n);
        tu_expect_equal("batchnorm dgamma", dg[run], dg[0], s.C);
        tu_expect_equal("batchnorm dbeta", db[run], db[0], s.C);
    }
}

/* ================================ ReLU ================================================== */

Test(relu, forward_and_backward_from_output) {
    tu_rng r = tu_seed(31);
    const size_t sizes[] = {1, 7, 100003};
    for (size_t t = 0; t < 3; t++) {
        const size_t n = sizes[t];
        float *x = tu_floats(n), *y = tu_floats(n), *dy = tu_floats(n), *dx = tu_floats(n);
        tu_fill(&r, x, n, -1, 1);
        tu_fill(&r, dy, n, -1, 1);
        for (size_t i = 0; i < n; i += 5) x[i] = 0.0f; /* exact zeros pass no gradient */
        tu_cpu()->relu(tu_cpu(), y, x, n);
        tu_cpu()->relu_bwd(tu_cpu(), dx, dy, y, n);
        for (size_t i = 0; i < n; i++) {
            const float want_y = x[i] > 0 ? x[i] : 0.0f, want_dx = x[i] > 0 ? dy[i] : 0.0f;
            cr_assert(y[i] == want_y, "relu y[%zu] = %g for x = %g", i, y[i], x[i]);
            cr_assert(dx[i] == want_dx, "relu dx[%zu] = %g for x = %g, dy = %g", i, dx[i], x[i],
                      dy[i]);
        }
    }
}

Test(relu, propagates_nan) {
    float x[3] = {NAN, -1, 2}, y[3];
    tu_cpu()->relu(tu_cpu(), y, x, 3);
    cr_assert(isnan(y[0]), "relu(NaN) = %g, want NaN", y[0]);
    cr_assert(y[1] == 0 && y[2] == 2, "relu values %g %g", y[1], y[2]);
}

/* ================================ upsample2x ============================================ */

/* Bilinear x2 straight from PyTorch's align_corners=False definition, in double. */
static void ref_up_axis(int o, int n, int *i0, int *i1, double *l1) {
    double src = (o + 0.5) / 2.0 - 0.5;
    if (src < 0) src = 0;
    *i0 = (int)floor(src);
    *i1 = *i0 + 1 < n ? *i0 + 1 : n - 1;
    *l1 = src - *i0;
}

static void ref_upsample(double *y, const double *x, int BC, int H, int W) {
    for (int pl = 0; pl < BC; pl++)
        for (int oy = 0; oy < 2 * H; oy++)
            for (int ox = 0; ox < 2 * W; ox++) {
                int y0, y1, x0, x1;
                double ly, lx;
                ref_up_axis(oy, H, &y0, &y1, &ly);
                ref_up_axis(ox, W, &x0, &x1, &lx);
                const double *xp = x + (size_t)pl * H * W;
                y[((size_t)pl * 2 * H + oy) * 2 * W + ox] =
                    (1 - ly) * ((1 - lx) * xp[y0 * W + x0] + lx * xp[y0 * W + x1]) +
                    ly * ((1 - lx) * xp[y1 * W + x0] + lx * xp[y1 * W + x1]);
            }
}

typedef struct { int BC, H, W; double *x, *y, *gy; } up_ctx;

static double up_objective(void *ctx, const double *unused) {
    (void)unused;
    up_ctx *c = ctx;
    ref_upsample(c->y, c->x, c->BC, c->H, c->W);
    return dot(c->gy, c->y, (size_t)c->BC * 4 * c->H * c->W);
}

typedef struct { int BC, H, W; } up_shape;
static const up_shape up_shapes[] = {
    {3, 5, 7}, {1, 1, 1}, {2, 1, 6}, {2, 6, 1}, {1, 2, 2}, {5, 17, 13}, {4, 40, 300},
};
#define N_UP_SHAPES (sizeof up_shapes / sizeof up_shapes[0])

Test(upsample, hand_checked_2x2) {
    /* torch.nn.functional.interpolate([[1, 2], [3, 4]], scale_factor=2, mode="bilinear",
     * align_corners=False) */
    const float x[4] = {1, 2, 3, 4};
    const float want[16] = {1.00f, 1.25f, 1.75f, 2.00f, 1.50f, 1.75f, 2.25f, 2.50f,
                            2.50f, 2.75f, 3.25f, 3.50f, 3.00f, 3.25f, 3.75f, 4.00f};
    float y[16];
    tu_cpu()->upsample2x(tu_cpu(), y, x, 1, 2, 2);
    for (int i = 0; i < 16; i++)
        cr_assert(y[i] == want[i], "upsample y[%d] = %g, want %g", i, y[i], want[i]);
}

Test(upsample, forward_matches_definition) {
    tu_rng r = tu_seed(41);
    for (size_t t = 0; t < N_UP_SHAPES; t++) {
        up_shape s = up_shapes[t];
        const size_t nx = (size_t)s.BC * s.H * s.W, ny = 4 * nx;
        float *x = tu_floats(nx), *y = tu_floats(ny);
        double *xd = tu_doubles(nx), *yd = tu_doubles(ny);
        tu_fill(&r, x, nx, -2, 2);
        tu_to_double(xd, x, nx);
        ref_upsample(yd, xd, s.BC, s.H, s.W);
        tu_cpu()->upsample2x(tu_cpu(), y, x, s.BC, s.H, s.W);
        char what[64];
        snprintf(what, sizeof what, "upsample y (shape %zu)", t);
        tu_expect_close(what, y, yd, ny, 1e-6);
    }
}

Test(upsample, backward_of_ones_is_four) {
    /* Along each axis every input's weights over the outputs sum to 2 (edges included, thanks
     * to the clamping), so a gradient of ones comes back as exactly 4 everywhere. */
    for (size_t t = 0; t < N_UP_SHAPES; t++) {
        up_shape s = up_shapes[t];
        const size_t nx = (size_t)s.BC * s.H * s.W, ny = 4 * nx;
        float *dy = tu_floats(ny), *dx = tu_floats(nx);
        for (size_t i = 0; i < ny; i++) dy[i] = 1;
        tu_cpu()->upsample2x_bwd(tu_cpu(), dx, dy, s.BC, s.H, s.W);
        for (size_t i = 0; i < nx; i++)
            cr_assert(dx[i] == 4.0f, "shape %zu: dx[%zu] = %g, want 4", t, i, dx[i]);
    }
}

Test(upsample, backward_matches_finite_differences) {
    tu_rng r = tu_seed(42);
    for (size_t t = 0; t < N_UP_SHAPES; t++) {
        up_shape s = up_shapes[t];
        const size_t nx = (size_t)s.BC * s.H * s.W, ny = 4 * nx;
        float *x = tu_floats(nx), *dy = tu_floats(ny), *dx = tu_floats(nx);
        tu_fill(&r, x, nx, -1, 1);
        tu_fill(&r, dy, ny, -1, 1);
        tu_fill(&r, dx, nx, 9, 10); /* garbage: dx is written */
        tu_cpu()->upsample2x_bwd(tu_cpu(), dx, dy, s.BC, s.H, s.W);
        up_ctx c = {s.BC, s.H, s.W, tu_doubles(nx), tu_doubles(ny), tu_doubles(ny)};
        tu_to_double(c.x, x, nx);
        tu_to_double(c.gy, dy, ny);
        size_t idx[FD_MAX], n_idx = tu_sample_indices(&r, nx, FD_MAX, idx);
        double *fd = tu_doubles(FD_MAX);
        tu_fd_grad(up_objective, &c, c.x, nx, idx, n_idx, FD_H, fd);
        char what[64];
        snprintf(what, sizeof what, "upsample dx (shape %zu)", t);
        tu_expect_grad(what, dx, fd, idx, n_idx, 1e-5);
    }
}

Test(upsample, backward_matches_scatter_reference) {
    /* Every entry (edges and the gather's chunk seams at W > 256 included) against the
     * transpose of the forward written as a double scatter: each output pixel sends its
     * gradient to its four source taps with the forward's weights. */
    tu_rng r = tu_seed(43);
    for (size_t t = 0; t < N_UP_SHAPES; t++) {
        up_shape s = up_shapes[t];
        const size_t nx = (size_t)s.BC * s.H * s.W, ny = 4 * nx;
        float *dy = tu_floats(ny), *dx = tu_floats(nx);
        tu_fill(&r, dy, ny, -1, 1);
        tu_cpu()->upsample2x_bwd(tu_cpu(), dx, dy, s.BC, s.H, s.W);
        double *dxd = tu_doubles(nx);
        for (int pl = 0; pl < s.BC; pl++)
            for (int oy = 0; oy < 2 * s.H; oy++)
                for (int ox = 0; ox < 2 * s.W; ox++) {
                    int y0, y1, x0, x1;
                    double ly, lx, g = dy[((size_t)pl * 2 * s.H + oy) * 2 * s.W + ox];
                    ref_up_axis(oy, s.H, &y0, &y1, &ly);
                    ref_up_axis(ox, s.W, &x0, &x1, &lx);
                    double *p = dxd + (size_t)pl * s.H * s.W;
                    p[y0 * s.W + x0] += (1 - ly) * (1 - lx) * g;
                    p[y0 * s.W + x1] += (1 - ly) * lx * g;
                    p[y1 * s.W + x0] += ly * (1 - lx) * g;
                    p[y1 * s.W + x1] += ly * lx * g;
                }
        char what[64];
        snprintf(what, sizeof what, "upsample dx (shape %zu)", t);
        tu_expect_close(what, dx, dxd, nx, 1e-6);
    }
}

Test(upsample, deterministic_across_runs_and_threads) {
    tu_rng r = tu_seed(44);
    const int BC = 6, H = 37, W = 301;
    const size_t nx = (size_t)BC * H * W, ny = 4 * nx;
    float *x = tu_floats(nx), *dy = tu_floats(ny), *y[3], *dx[3];
    tu_fill(&r, x, nx, -1, 1);
    tu_fill(&r, dy, ny, -1, 1);
    const int threads = omp_get_max_threads();
    for (int run = 0; run < 3; run++) {
        omp_set_num_threads(run == 2 ? 1 : threads);
        y[run] = tu_floats(ny), dx[run] = tu_floats(nx);
        tu_cpu()->upsample2x(tu_cpu(), y[run], x, BC, H, W);
        tu_cpu()->upsample2x_bwd(tu_cpu(), dx[run], dy, BC, H, W);
    }
    omp_set_num_threads(threads);
    for (int run = 1; run < 3; run++) {
        tu_expect_equal("upsample y", y[run], y[0], ny);
        tu_expect_equal("upsample dx", dx[run], dx[0], nx);
    }
}
