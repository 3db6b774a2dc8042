/* linear (both weight layouts, with and without bias) and LayerNorm against double references;
 * every input and parameter gradient against central finite differences of the double
 * reference; write (=) vs accumulate (+=) semantics; bit-identical reruns on threaded shapes. */
#include "../testutil.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

static const char *layout_name(ms_wlayout l) { return l == MS_W_OUT_IN ? "(O,I)" : "(I,O)"; }

/* A non-zero starting gradient on the scale of ref (its rms), so that what an accumulating op
 * adds stays well above the rounding of the start when recovered by added(). */
static float *start_like(tu_rng *r, const float *ref, size_t n) {
    double ss = 0;
    for (size_t i = 0; i < n; i++) ss += (double)ref[i] * ref[i];
    double rms = n ? sqrt(ss / n) : 0;
    float *s = tu_floats(n);
    tu_fill(r, s, n, -(rms > 0 ? rms : 1), rms > 0 ? rms : 1);
    return s;
}

/* got - start, in double: the part an accumulating op added. */
static float *added(const float *got, const float *start, size_t n) {
    float *d = tu_floats(n);
    for (size_t i = 0; i < n; i++) d[i] = (float)((double)got[i] - start[i]);
    return d;
}

/* ---- linear -------------------------------------------------------------------------------- */

/* y[M, O] = x[M, I] W + b with W read in its layout: (O, I) holds W^T as nn.Linear does. */
static void ref_linear(double *y, const double *x, const double *w, const double *b, int M, int I,
                       int O, ms_wlayout layout) {
    for (int m = 0; m < M; m++)
        for (int o = 0; o < O; o++) {
            double s = b ? b[o] : 0;
            for (int i = 0; i < I; i++)
                s += x[(size_t)m * I + i] *
                     (layout == MS_W_OUT_IN ? w[(size_t)o * I + i] : w[(size_t)i * O + o]);
            y[(size_t)m * O + o] = s;
        }
}

typedef struct {
    int M, I, O, which; /* which input varies: 0 x, 1 w, 2 b */
    ms_wlayout layout;
    double *x, *w, *b; /* [M, I], [O*I], [O] or NULL */
    const double *g;   /* [M, O] objective weights */
    double *y;         /* [M, O] scratch */
} linear_ctx;

static double linear_objective(void *ctx_, const double *v) {
    linear_ctx *c = ctx_;
    ref_linear(c->y, c->which == 0 ? v : c->x, c->which == 1 ? v : c->w,
               c->which == 2 ? v : c->b, c->M, c->I, c->O, c->layout);
    double L = 0;
    for (size_t i = 0; i < (size_t)c->M * c->O; i++) L += c->g[i] * c->y[i];
    return L;
}

static void check_linear(int M, int I, int O, ms_wlayout layout, int bias, uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    size_t nx = (size_t)M * I, nw = (size_t)I * O, ny = (size_t)M * O;
    float *x = tu_floats(nx), *w = tu_floats(nw), *b = tu_floats(O), *y = tu_floats(ny);
    tu_fill_normal(&r, x, nx, 1.0);
    tu_fill_normal(&r, w, nw, 1.0 / sqrt(I));
    tu_fill_normal(&r, b, O, 1.0);
    double *xd = tu_doubles(nx), *wd = tu_doubles(nw), *bd = tu_doubles(O), *ref = tu_doubles(ny);
    tu_to_double(xd, x, nx);
    tu_to_double(wd, w, nw);
    tu_to_double(bd, b, O);
    ref_linear(ref, xd, wd, bias ? bd : NULL, M, I, O, layout);
    tu_fill_nan(y, ny); /* without bias y must be written, never read */
    float *d_x = tu_dev_from(x, nx), *d_w = tu_dev_from(w, nw), *d_b = tu_dev_from(b, O);
    float *d_y = tu_dev_from(y, ny);
    be->linear(be, d_y, d_x, d_w, bias ? d_b : NULL, M, I, O, layout);
    char what[160], shape[96];
    snprintf(shape, sizeof shape, "M %d I %d O %d W %s %s", M, I, O, layout_name(layout),
             bias ? "bias" : "no bias");
    snprintf(what, sizeof what, "linear (%s)", shape);
    tu_expect_close(what, tu_to_host(d_y, ny), ref, ny, 1e-5);

    /* Backward fed dy = g: from zero parameter grads and a garbage dx first ... */
    float *g = tu_floats(ny);
    tu_fill(&r, g, ny, -1, 1);
    double *gd = tu_doubles(ny);
    tu_to_double(gd, g, ny);
    float *d_g = tu_dev_from(g, ny), *d_dx = be->alloc(be, nx * sizeof(float));
    float *nan_dx = tu_floats(nx);
    tu_fill_nan(nan_dx, nx);
    be->upload(be, d_dx, nan_dx, nx * sizeof(float));
    float *d_dw = be->alloc(be, nw * sizeof(float)), *d_db = be->alloc(be, O * sizeof(float));
    be->zero(be, d_dw, nw * sizeof(float));
    be->zero(be, d_db, O * sizeof(float));
    be->linear_bwd(be, d_dx, d_dw, bias ? d_db : NULL, d_g, d_x, d_w, M, I, O, layout, 0);
    float *gx = tu_to_host(d_dx, nx), *gw = tu_to_host(d_dw, nw), *gb = tu_to_host(d_db, O);

    linear_ctx ctx = {M, I, O, 0, layout, xd, wd, bias ? bd : NULL, gd, tu_doubles(ny)};
    size_t idx[256];
    double fd[256];
    size_t k = tu_sample_indices(&r, nx, 256, idx);
    tu_fd_grad(linear_objective, &ctx, xd, nx, idx, k, 1e-6, fd);
    snprintf(what, sizeof what, "linear_bwd dx (%s)", shape);
    tu_expect_grad(what, gx, fd, idx, k, 1e-5);
    ctx.which = 1;
    k = tu_sample_indices(&r, nw, 256, idx);
    tu_fd_grad(linear_objective, &ctx, wd, nw, idx, k, 1e-6, fd);
    snprintf(what, sizeof what, "linear_bwd dw (%s)", shape);
    tu_expect_grad(what, gw, fd, idx, k, 1e-5);
    if (bias) {
        ctx.which = 2;
        k = tu_sample_indices(&r, O, 256, idx);
        tu_fd_grad(linear_objective, &ctx, bd, O, idx, k, 1e-6, fd);
        snprintf(what, sizeof what, "linear_bwd db (%s)", shape);
        tu_expect_grad(what, gb, fd, idx, k, 1e-5);
    } else {
        for (int o = 0; o < O; o++) cr_assert(gb[o] == 0, "linear_bwd touched db passed as NULL");
    }

    /* ... then onto non-zero buffers: accum_dx adds to dx, dw and db always add. */
    float *sx = start_like(&r, gx, nx), *sw = start_like(&r, gw, nw), *sb = start_like(&r, gb, O);
    be->upload(be, d_dx, sx, nx * sizeof(float));
    be->upload(be, d_dw, sw, nw * sizeof(float));
    be->upload(be, d_db, sb, O * sizeof(float));
    be->linear_bwd(be, d_dx, d_dw, d_db, d_g, d_x, d_w, M, I, O, layout, 1);
    double *want = tu_doubles(nx > nw ? nx : nw);
    tu_to_double(want, gx, nx);
    snprintf(what, sizeof what, "linear_bwd dx with accum_dx (%s)", shape);
    tu_expect_close(what, added(tu_to_host(d_dx, nx), sx, nx), want, nx, 1e-6);
    tu_to_double(want, gw, nw);
    snprintf(what, sizeof what, "linear_bwd dw accumulated (%s)", shape);
    tu_expect_close(what, added(tu_to_host(d_dw, nw), sw, nw), want, nw, 1e-6);
    if (bias) {
        tu_to_double(want, gb, O);
        snprintf(what, sizeof what, "linear_bwd db accumulated (%s)", shape);
        tu_expect_close(what, added(tu_to_host(d_db, O), sb, O), want, O, 1e-6);
    }

    /* NULL outputs are skipped; the others come out identical. */
    be->zero(be, d_dw, nw * sizeof(float));
    be->linear_bwd(be, NULL, d_dw, NULL, d_g, d_x, d_w, M, I, O, layout, 0);
    snprintf(what, sizeof what, "linear_bwd dw with dx NULL (%s)", shape);
    tu_expect_equal(what, tu_to_host(d_dw, nw), gw, nw);
    be->upload(be, d_dx, nan_dx, nx * sizeof(float));
    be->zero(be, d_db, O * sizeof(float));
    be->linear_bwd(be, d_dx, NULL, bias ? d_db : NULL, d_g, d_x, d_w, M, I, O, layout, 0);
    snprintf(what, sizeof what, "linear_bwd dx with dw NULL (%s)", shape);
    tu_expect_equal(what, tu_to_host(d_dx, nx), gx, nx);
    snprintf(what, sizeof what, "linear_bwd db with dw NULL (%s)", shape);
    tu_expect_equal(what, tu_to_host(d_db, O), gb, O);
}

static void check_linear_shapes(ms_wlayout layout, int bias, uint64_t seed) {
    const int shapes[][3] = {{1, 1, 1},   {1, 7, 5},   {3, 1, 4},   {5, 6, 1},
                             {17, 33, 29}, {64, 96, 80}, {1, 384, 150}};
    for (int s = 0; s < 7; s++)
        check_linear(shapes[s][0], shapes[s][1], shapes[s][2], layout, bias, seed + s);
}

Test(linear, out_in_bias) { check_linear_shapes(MS_W_OUT_IN, 1, 100); }
Test(linear, out_in_no_bias) { check_linear_shapes(MS_W_OUT_IN, 0, 200); }
Test(linear, in_out_bias) { check_linear_shapes(MS_W_IN_OUT, 1, 300); }
Test(linear, in_out_no_bias) { check_linear_shapes(MS_W_IN_OUT, 0, 400); }

/* The layouts hold the same W transposed: feeding W^T in (I, O) gives the (O, I) result. */
Test(linear, layouts_agree) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(500);
    const int M = 9, I = 13, O = 11;
    float *x = tu_floats((size_t)M * I), *w = tu_floats((size_t)O * I);
    float *wt = tu_floats((size_t)I * O);
    float *b = tu_floats(O);
    tu_fill_normal(&r, x, (size_t)M * I, 1.0);
    tu_fill_normal(&r, w, (size_t)O * I, 1.0);
    tu_fill_normal(&r, b, O, 1.0);
    for (int o = 0; o < O; o++)
        for (int i = 0; i < I; i++) wt[(size_t)i * O + o] = w[(size_t)o * I + i];
    float *d_x = tu_dev_from(x, (size_t)M * I), *d_w = tu_dev_from(w, (size_t)O * I);
    float *d_wt = tu_dev_from(wt, (size_t)I * O), *d_b = tu_dev_from(b, O);
    float *d_y1 = be->alloc(be, (size_t)M * O * 4), *d_y2 = be->alloc(be, (size_t)M * O * 4);
    be->linear(be, d_y1, d_x, d_w, d_b, M, I, O, MS_W_OUT_IN);
    be->linear(be, d_y2, d_x, d_wt, d_b, M, I, O, MS_W_IN_OUT);
    float *y1 = tu_to_host(d_y1, (size_t)M * O);
    double *y2 = tu_doubles((size_t)M * O);
    tu_to_double(y2, tu_to_host(d_y2, (size_t)M * O), (size_t)M * O);
    tu_expect_close("linear (O,I) vs (I,O) of the transposed weight", y1, y2, (size_t)M * O, 1e-6);
}

/* ---- LayerNorm ----------------------------------------------------------------------------- */

/* Per row, in double: biased variance, y = (x - mean) / sqrt(var + eps) gamma + beta. */
static void ref_layernorm(double *y, double *mean, double *rstd, const double *x, const double *g,
                          const double *b, int M, int D, double eps) {
    for (int m = 0; m < M; m++) {
        const double *xr = x + (size_t)m * D;
        double mu = 0, var = 0;
        for (int d = 0; d < D; d++) mu += xr[d];
        mu /= D;
        for (int d = 0; d < D; d++) var += (xr[d] - mu) * (xr[d] - mu);
        double rs = 1.0 / sqrt(var / D + eps);
        if (mean) mean[m] = mu, rstd[m] = rs;
        for (int d = 0; d < D; d++) y[(size_t)m * D + d] = (xr[d] - mu) * rs * g[d] + b[d];
    }
}

typedef struct {
    int M, D, which; /* which input varies: 0 x, 1 gamma, 2 beta */
    double eps;
    double *x, *g, *b; /* [M, D], [D], [D] */
    const double *w;   /* [M, D] objective weights */
    double *y;         /* [M, D] scratch */
} ln_ctx;

static double ln_objective(void *ctx_, const double *v) {
    ln_ctx *c = ctx_;
    ref_layernorm(c->y, NULL, NULL, c->which == 0 ? v : c->x, c->which == 1 ? v : c->g,
                  c->which == 2 ? v : c->b, c->M, c->D, c->eps);
    double L = 0;
    for (size_t i = 0; i < (size_t)c->M * c->D; i++) L += c->w[i] * c->y[i];
    return L;
}

/* Rows are offset + std * N(0, 1): a large offset relative to std is where a one-pass float
 * variance (E[x^2] - E[x]^2) loses every digit. */
static void check_layernorm(int M, int D, double offset, double std, float eps, uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    size_t n = (size_t)M * D;
    float *x = tu_floats(n), *g = tu_floats(D), *b = tu_floats(D), *y = tu_floats(n);
    for (size_t i = 0; i < n; i++) x[i] = (float)(offset + std * tu_normal(&r));
    tu_fill(&r, g, D, 0.5, 1.5);
    tu_fill(&r, b, D, -0.5, 0.5);
    double *xd = tu_doubles(n), *gd = tu_doubles(D), *bd = tu_doubles(D), *ref = tu_doubles(n);
    double *mref = tu_doubles(M), *rref = tu_doubles(M);
    tu_to_double(xd, x, n);
    tu_to_double(gd, g, D);
    tu_to_double(bd, b, D);
    ref_layernorm(ref, mref, rref, xd, gd, bd, M, D, eps);
    tu_fill_nan(y, n);
    float *d_x = tu_dev_from(x, n), *d_g = tu_dev_from(g, D), *d_b = tu_dev_from(b, D);
    float *d_y = tu_dev_from(y, n);
    float *d_mean = be->alloc(be, M * sizeof(float)), *d_rstd = be->alloc(be, M * sizeof(float));
    be->layernorm(be, d_y, d_mean, d_rstd, d_x, d_g, d_b, M, D, eps);
    char what[160], shape[96];
    snprintf(shape, sizeof shape, "M %d D %d offset %g std %g eps %g", M, D, offset, std,
             (double)eps);
    snprintf(what, sizeof what, "layernorm y (%s)", shape);
    float *got_y = tu_to_host(d_y, n);
    tu_expect_close(what, got_y, ref, n, 1e-5);
    snprintf(what, sizeof what, "layernorm mean (%s)", shape);
    tu_expect_close(what, tu_to_host(d_mean, M), mref, M, 1e-6);
    snprintf(what, sizeof what, "layernorm rstd (%s)", shape);
    tu_expect_close(what, tu_to_host(d_rstd, M), rref, M, 1e-6);
    /* Statistics not wanted (evaluation) and in place: the same y. */
    be->layernorm(be, d_x, NULL, NULL, d_x, d_g, d_b, M, D, eps);
    snprintf(what, sizeof what, "layernorm in place without statistics (%s)", shape);
    tu_expect_equal(what, tu_to_host(d_x, n), got_y, n);
    be->upload(be, d_x, x, n * sizeof(float));

    /* Backward fed dy = w: dx written over garbage, dgamma/dbeta from zero ... */
    float *w = tu_floats(n);
    tu_fill(&r, w, n, -1, 1);
    double *wd = tu_doubles(n);
    tu_to_double(wd, w, n);
    float *d_w = tu_dev_from(w, n), *d_dx = tu_dev_from(y, n);
    float *d_dg = be->alloc(be, D * sizeof(float)), *d_db = be->alloc(be, D * sizeof(float));
    be->zero(be, d_dg, D * sizeof(float));
    be->zero(be, d_db, D * sizeof(float));
    be->layernorm_bwd(be, d_dx, d_dg, d_db, d_w, d_x, d_mean, d_rstd, d_g, M, D, 0);
    float *gx = tu_to_host(d_dx, n), *gg = tu_to_host(d_dg, D), *gb = tu_to_host(d_db, D);

    ln_ctx ctx = {M, D, 0, eps, xd, gd, bd, wd, tu_doubles(n)};
    size_t idx[256];
    double fd[256];
    /* The step follows the row scale so that it resolves the normalisation. */
    size_t k = tu_sample_indices(&r, n, 256, idx);
    tu_fd_grad(ln_objective, &ctx, xd, n, idx, k, 1e-6 * std, fd);
    snprintf(what, sizeof what, "layernorm_bwd dx (%s)", shape);
    /* With |mean| >> std the float inputs themselves carry ~offset * 6e-8 / std relative
     * rounding in (x - mean), which bounds any float backward. */
    double tol_x = fmax(1e-4, 3e-7 * fabs(offset) / std);
    tu_expect_grad(what, gx, fd, idx, k, tol_x);
    ctx.which = 1;
    k = tu_sample_indices(&r, D, 256, idx);
    tu_fd_grad(ln_objective, &ctx, gd, D, idx, k, 1e-6, fd);
    snprintf(what, sizeof what, "layernorm_bwd dgamma (%s)", shape);
    tu_expect_grad(what, gg, fd, idx, k, tol_x);
    ctx.which = 2;
    tu_fd_grad(ln_objective, &ctx, bd, D, idx, k, 1e-6, fd);
    snprintf(what, sizeof what, "layernorm_bwd dbeta (%s)", shape);
    tu_expect_grad(what, gb, fd, idx, k, 1e-5);

    /* ... then accumulating onto non-zero buffers. */
    float *sx = start_like(&r, gx, n), *sg = start_like(&r, gg, D), *sb = start_like(&r, gb, D);
    be->upload(be, d_dx, sx, n * sizeof(float));
    be->upload(be, d_dg, sg, D * sizeof(float));
    be->upload(be, d_db, sb, D * sizeof(float));
    be->layernorm_bwd(be, d_dx, d_dg, d_db, d_w, d_x, d_mean, d_rstd, d_g, M, D, 1);
    double *want = tu_doubles(n);
    tu_to_double(want, gx, n);
    snprintf(what, sizeof what, "layernorm_bwd dx with accum_dx (%s)", shape);
    tu_expect_close(what, added(tu_to_host(d_dx, n), sx, n), want, n, 1e-5);
    tu_to_double(want, gg, D);
    snprintf(what, sizeof what, "layernorm_bwd dgamma accumulated (%s)", shape);
    tu_expect_close(what, added(tu_to_host(d_dg, D), sg, D), want, D, 1e-5);
    tu_to_double(want, gb, D);
    snprintf(what, sizeof what, "layernorm_bwd dbeta accumulated (%s)", shape);
    tu_expect_close(what, added(tu_to_host(d_db, D), sb, D), want, D, 1e-5);

    /* dx NULL (a frozen input) leaves the parameter gradients as they were. */
    be->zero(be, d_dg, D * sizeof(float));
    be->zero(be, d_db, D * sizeof(float));
    be->layernorm_bwd(be, NULL, d_dg, d_db, d_w, d_x, d_mean, d_rstd, d_g, M, D, 0);
    snprintf(what, sizeof what, "layernorm_bwd dgamma with dx NULL (%s)", shape);
    tu_expect_equal(what, tu_to_host(d_dg, D), gg, D);
    snprintf(what, sizeof what, "layernorm_bwd dbeta with dx NULL (%s)", shape);
    tu_expect_equal(what, tu_to_host(d_db, D), gb, D);
}

Test(linear, layernorm) {
    check_layernorm(1, 1, 0.0, 1.0, 1e-6f, 600);   /* D = 1: y = beta, every x-gradient 0 */
    /* D = 2 normalises to +-1 whatever x is: the x-gradient exists only through eps, so a
     * large eps gives it a scale that float arithmetic can resolve. */
    check_layernorm(1, 2, 0.0, 1.0, 0.5f, 601);
    check_layernorm(1, 3, 0.0, 1.0, 1e-6f, 607);
    check_layernorm(3, 7, 0.5, 2.0, 1e-5f, 602);
    check_layernorm(17, 384, 0.0, 1.0, 1e-6f, 603);
    check_layernorm(5, 1000, -2.0, 0.1, 1e-6f, 604);
    check_layernorm(2, 5, 0.0, 1e-3, 1e-6f, 605);    /* variance near eps: eps matters */
    check_layernorm(600, 130, 0.0, 1.0, 1e-6f, 606); /* threaded, partial column block */
}

Test(linear, layernorm_large_offset) {
    check_layernorm(4, 384, 1000.0, 1.0, 1e-6f, 610);
    check_layernorm(3, 77, -300.0, 0.05, 1e-6f, 611);
}

/* ---- determinism ----------------------------------------------------------------------------- */

/* Threaded shapes twice (forward in one weight layout, backward in the other): bit-identical.
 * The LayerNorm parameter gradients and db are split by columns only, so one thread must also
 * agree with the default thread count. */
Test(linear, deterministic_threaded) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(700);
    const int M = 1024, I = 384, O = 320; /* M*O above the bias fill's fork threshold */
    size_t nx = (size_t)M * I, nw = (size_t)I * O, ny = (size_t)M * O;
    float *x = tu_floats(nx), *w = tu_floats(nw), *b = tu_floats(O), *g = tu_floats(ny);
    tu_fill_normal(&r, x, nx, 1.0);
    tu_fill_normal(&r, w, nw, 0.05);
    tu_fill_normal(&r, b, O, 1.0);
    tu_fill(&r, g, ny, -1, 1);
    float *d_x = tu_dev_from(x, nx), *d_w = tu_dev_from(w, nw), *d_b = tu_dev_from(b, O);
    float *d_g = tu_dev_from(g, ny);
    float *d_y = be->alloc(be, ny * 4), *d_dx = be->alloc(be, nx * 4);
    float *d_ln = be->alloc(be, nx * 4); /* [M, I] LayerNorm output */
    float *d_dw = be->alloc(be, nw * 4), *d_db = be->alloc(be, O * 4);
    float *d_mean = be->alloc(be, M * 4), *d_rstd = be->alloc(be, M * 4);
    float *d_dg = be->alloc(be, I * 4), *d_dbeta = be->alloc(be, I * 4);
    size_t total = ny + nx + nw + O + nx + nx + 2 * (size_t)I;
    float *res[3];
    int threads = omp_get_max_threads();
    for (int rep = 0; rep < 3; rep++) {
        if (rep == 2) omp_set_num_threads(1);
        float *o = res[rep] = tu_floats(total);
        be->zero(be, d_dw, nw * 4);
        be->zero(be, d_db, O * 4);
        be->zero(be, d_dg, I * 4);
        be->zero(be, d_dbeta, I * 4);
        be->linear(be, d_y, d_x, d_w, d_b, M, I, O, MS_W_OUT_IN);
        be->download(be, o, d_y, ny * 4), o += ny;
        be->linear_bwd(be, d_dx, d_dw, d_db, d_g, d_x, d_w, M, I, O, MS_W_IN_OUT, 0);
        be->download(be, o, d_dx, nx * 4), o += nx;
        be->download(be, o, d_dw, nw * 4), o += nw;
        be->download(be, o, d_db, O * 4), o += O;
        be->layernorm(be, d_ln, d_mean, d_rstd, d_x, d_w, d_w + I, M, I, 1e-6f);
        be->download(be, o, d_ln, nx * 4), o += nx;
        be->layernorm_bwd(be, d_dx, d_dg, d_dbeta, d_x, d_x, d_mean, d_rstd, d_w, M, I, 0);
        be->download(be, o, d_dx, nx * 4), o += nx;
        be->download(be, o, d_dg, I * 4), o += I;
        be->download(be, o, d_dbeta, I * 4);
    }
    omp_set_num_threads(threads);
    tu_expect_equal("linear, linear_bwd, layernorm, layernorm_bwd rerun", res[1], res[0], total);
    /* Single-thread run: LayerNorm forward and all LayerNorm gradients, and db. */
    size_t off_db = ny + nx + nw, off_ln = off_db + O;
    tu_expect_equal("linear_bwd db on one thread", res[2] + off_db, res[0] + off_db, O);
    tu_expect_equal("layernorm(+bwd) on one thread", res[2] + off_ln, res[0] + off_ln,
                    total - off_ln);
}
