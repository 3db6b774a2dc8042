/* Elementwise ops against double references: add, add_row / sum_rows, scale, drop path, GELU
 * (against the exact erf formula) and row softmax; backward ops against central finite
 * differences of the double reference; bit-identical reruns on shapes large enough to thread. */
#include "../testutil.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- add ------------------------------------------------------------------------------------- */

static void check_add(size_t n, uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    float *a = tu_floats(n), *b = tu_floats(n), *y = tu_floats(n); /* [n] */
    double *ref = tu_doubles(n);
    tu_fill(&r, a, n, -3, 3);
    tu_fill(&r, b, n, -3, 3);
    for (size_t i = 0; i < n; i++) ref[i] = (double)a[i] + b[i];
    tu_fill_nan(y, n);
    float *da = tu_dev_from(a, n), *db = tu_dev_from(b, n), *dy = tu_dev_from(y, n);
    char what[96];
    be->add(be, dy, da, db, n);
    snprintf(what, sizeof what, "add (n %zu)", n);
    tu_expect_close(what, tu_to_host(dy, n), ref, n, 1e-6);
    be->add(be, da, da, db, n); /* y aliases a */
    snprintf(what, sizeof what, "add in place on a (n %zu)", n);
    tu_expect_close(what, tu_to_host(da, n), ref, n, 1e-6);
    be->upload_act(be, da, a, n);
    be->add(be, db, da, db, n); /* y aliases b */
    snprintf(what, sizeof what, "add in place on b (n %zu)", n);
    tu_expect_close(what, tu_to_host(db, n), ref, n, 1e-6);
}

Test(elementwise, add) {
    check_add(1, 1);
    check_add(7, 2);
    check_add(1000, 3);
    check_add(300007, 4); /* threaded (COPY_PAR_MIN = 262144 elements) */
}

/* ---- add_row and its backward sum_rows ------------------------------------------------------ */

static void check_add_row(int M, int D, uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    size_t n = (size_t)M * D;
    float *x = tu_floats(n), *v = tu_floats(D); /* [M, D], [D] */
    double *ref = tu_doubles(n);
    tu_fill(&r, x, n, -2, 2);
    tu_fill(&r, v, D, -2, 2);
    for (int m = 0; m < M; m++)
        for (int d = 0; d < D; d++) ref[(size_t)m * D + d] = (double)x[(size_t)m * D + d] + v[d];
    float *y = tu_floats(n);
    tu_fill_nan(y, n);
    float *dx = tu_dev_from(x, n), *dy = tu_dev_from(y, n), *dv = tu_dev_from(v, D);
    char what[96];
    be->add_row(be, dy, dx, dv, M, D);
    snprintf(what, sizeof what, "add_row (M %d D %d)", M, D);
    tu_expect_close(what, tu_to_host(dy, n), ref, n, 1e-6);
    be->add_row(be, dx, dx, dv, M, D);
    snprintf(what, sizeof what, "add_row in place (M %d D %d)", M, D);
    tu_expect_close(what, tu_to_host(dx, n), ref, n, 1e-6);
}

Test(elementwise, add_row) {
    check_add_row(1, 1, 10);
    check_add_row(3, 7, 11);
    check_add_row(1, 384, 12);
    check_add_row(2057, 129, 13); /* threaded */
}

typedef struct {
    int M, D;
    const double *x; /* [M, D] */
    const double *w; /* [M, D] objective weights */
} add_row_ctx;

/* L(v) = sum w .* (x + v broadcast over rows). */
static double add_row_objective(void *ctx_, const double *v) {
    const add_row_ctx *c = ctx_;
    double L = 0;
    for (int m = 0; m < c->M; m++)
        for (int d = 0; d < c->D; d++) {
            size_t i = (size_t)m * c->D + d;
            L += c->w[i] * (c->x[i] + v[d]);
        }
    return L;
}

/* sum_rows accumulates the column sums into a non-zero dv; checked against a double sum and,
 * as add_row's backward, against finite differences of add_row. */
static void check_sum_rows(int M, int D, uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    size_t n = (size_t)M * D;
    float *g = tu_floats(n), *v0 = tu_floats(D), *x = tu_floats(n); /* [M, D], [D], [M, D] */
    tu_fill(&r, g, n, -1, 1);
    tu_fill(&r, v0, D, -1, 1);
    tu_fill(&r, x, n, -1, 1);
    double *ref = tu_doubles(D);
    for (int d = 0; d < D; d++) ref[d] = v0[d];
    for (int m = 0; m < M; m++)
        for (int d = 0; d < D; d++) ref[d] += g[(size_t)m * D + d];
    float *dg = tu_dev_from(g, n), *dv = tu_dev_from(v0, D);
    be->sum_rows(be, dv, dg, M, D);
    char what[96];
    snprintf(what, sizeof what, "sum_rows accumulated (M %d D %d)", M, D);
    tu_expect_close(what, tu_to_host(dv, D), ref, D, 1e-6);

    /* Finite differences of L(v) = sum g .* add_row(x, v) give dL/dv = sum_rows(g). */
    double *xd = tu_doubles(n), *gd = tu_doubles(n), *vd = tu_doubles(D), *fd = tu_doubles(D);
    tu_to_double(xd, x, n);
    tu_to_double(gd, g, n);
    tu_to_double(vd, v0, D);
    add_row_ctx ctx = {M, D, xd, gd};
    tu_fd_grad(add_row_objective, &ctx, vd, D, NULL, D, 1e-6, fd);
    be->zero(be, dv, D * sizeof(float));
    be->sum_rows(be, dv, dg, M, D);
    snprintf(what, sizeof what, "sum_rows as add_row backward (M %d D %d)", M, D);
    tu_expect_grad(what, tu_to_host(dv, D), fd, NULL, D, 1e-6);
}

Test(elementwise, sum_rows) {
    check_sum_rows(1, 1, 20);
    check_sum_rows(5, 3, 21);
    check_sum_rows(1, 200, 22);
    check_sum_rows(4000, 67, 23);  /* threaded, one full and one partial column block */
    check_sum_rows(3000, 1, 24);   /* one column, many rows */
}

/* A sum over 10^5 rows keeps double accuracy: a float running sum of +-1 values with a common
 * offset drifts far beyond 1e-6. */
Test(elementwise, sum_rows_long_accuracy) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(25);
    int M = 100000, D = 3;
    size_t n = (size_t)M * D;
    float *g = tu_floats(n);
    tu_fill(&r, g, n, 0.9, 1.1);
    double ref[3] = {0, 0, 0};
    for (int m = 0; m < M; m++)
        for (int d = 0; d < D; d++) ref[d] += g[(size_t)m * D + d];
    float zero[3] = {0, 0, 0};
    float *dg = tu_dev_from(g, n), *dv = tu_dev_from(zero, 3);
    be->sum_rows(be, dv, dg, M, D);
    tu_expect_close("sum_rows over 1e5 rows", tu_to_host(dv, 3), ref, 3, 1e-7);
}

/* ---- scale and drop path -------------------------------------------------------------------- */

Test(elementwise, scale_f32) {
    ms_backend *be = tu_cpu();
    const size_t sizes[] = {1, 5, 270001}; /* the last one threaded */
    const float scales[] = {0.5f, -3.0f, 0.0f};
    for (int k = 0; k < 3; k++) {
        size_t n = sizes[k];
        tu_rng r = tu_seed(30 + k);
        float *x = tu_floats(n);
        double *ref = tu_doubles(n);
        tu_fill(&r, x, n, -5, 5);
        for (size_t i = 0; i < n; i++) ref[i] = (double)x[i] * scales[k];
        float *dx = be->alloc(be, n * sizeof(float));
        be->upload(be, dx, x, n * sizeof(float));
        be->scale_f32(be, dx, scales[k], n);
        float *got = tu_floats(n);
        be->download(be, got, dx, n * sizeof(float));
        char what[96];
        snprintf(what, sizeof what, "scale_f32 (n %zu s %g)", n, (double)scales[k]);
        tu_expect_close(what, got, ref, n, 1e-7);
    }
}

/* The scale is per sample: 0 (dropped) or 1/keep_prob. The op is linear, and its backward is
 * the op applied to dy; finite differences of the reference check that claim. */
static void check_drop_path(int B, size_t n, uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    size_t total = (size_t)B * n;
    float *x = tu_floats(total), *s = tu_floats(B), *y = tu_floats(total); /* [B, n], [B] */
    tu_fill(&r, x, total, -2, 2);
    for (int b = 0; b < B; b++) s[b] = (b % 3 == 1) ? 0.0f : 1.0f / 0.9f;
    double *ref = tu_doubles(total);
    for (int b = 0; b < B; b++)
        for (size_t i = 0; i < n; i++) ref[b * n + i] = (double)x[b * n + i] * s[b];
    tu_fill_nan(y, total);
    float *dx = tu_dev_from(x, total), *dy = tu_dev_from(y, total), *ds = tu_dev_from(s, B);
    char what[96];
    be->drop_path(be, dy, dx, ds, B, n);
    snprintf(what, sizeof what, "drop_path (B %d n %zu)", B, n);
    tu_expect_close(what, tu_to_host(dy, total), ref, total, 1e-7);
    be->drop_path(be, dx, dx, ds, B, n);
    snprintf(what, sizeof what, "drop_path in place (B %d n %zu)", B, n);
    tu_expect_close(what, tu_to_host(dx, total), ref, total, 1e-7);
    /* Backward: d/dx sum w .* (x s_b) = w s_b, i.e. drop_path(w); the FD of the (linear)
     * reference is that exactly up to rounding. */
    double *fd = tu_doubles(total);
    for (int b = 0; b < B; b++)
        for (size_t i = 0; i < n; i++) {
            double w = 0.25 + (double)((b * n + i) % 7), h = 1e-3;
            double xp = x[b * n + i] + h, xm = x[b * n + i] - h;
            fd[b * n + i] = (w * xp * s[b] - w * xm * s[b]) / (2 * h);
            y[b * n + i] = (float)w;
        }
    be->upload_act(be, dy, y, total);
    be->drop_path(be, dx, dy, ds, B, n);
    snprintf(what, sizeof what, "drop_path backward (B %d n %zu)", B, n);
    tu_expect_grad(what, tu_to_host(dx, total), fd, NULL, total, 1e-6);
}

Test(elementwise, drop_path) {
    check_drop_path(1, 1, 40);
    check_drop_path(3, 17, 41);
    check_drop_path(5, 1000, 42);
    check_drop_path(2, 140000, 43); /* threaded; samples split across work items */
}

/* ---- GELU --------------------------------------------------------------------------------- */

/* Exact GELU in double: x Phi(x) = x/2 erfc(-x / sqrt 2) (the erfc form avoids 1 + erf
 * cancelling for negative x, so the reference is exact in the tail too). */
static double ref_gelu(double x) { return 0.5 * x * erfc(-x / sqrt(2.0)); }

/* On a dense grid over [-10, 10] (and a few large values) every element must be within 1e-5
 * relative of the exact value: this also holds deep in the negative tail, where computing
 * 1 + erff(x / sqrt 2) in float would lose every digit. */
Test(elementwise, gelu_matches_erf_form) {
    ms_backend *be = tu_cpu();
    const size_t n = 20001 + 6;
    float *x = tu_floats(n);
    double *ref = tu_doubles(n);
    for (size_t i = 0; i < 20001; i++) x[i] = (float)(-10.0 + 20.0 * (double)i / 20000.0);
    const float extra[6] = {-30.0f, -15.0f, 15.0f, 30.0f, 1e-20f, -1e-20f};
    for (int k = 0; k < 6; k++) x[20001 + k] = extra[k];
    for (size_t i = 0; i < n; i++) ref[i] = ref_gelu(x[i]);
    float *dx = tu_dev_from(x, n), *dy = tu_dev_from(x, n);
    be->gelu(be, dy, dx, n);
    float *y = tu_to_host(dy, n);
    tu_expect_close("gelu on [-10, 10]", y, ref, n, 1e-6);
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)y[i] - ref[i]);
        /* Below ~1e-37 the exact value is subnormal and the op may flush it to zero. */
        double bound = fmax(1e-5 * fabs(ref[i]), 1e-37);
        cr_assert(err <= bound, "gelu(%.9g) = %.9g, exact %.9g (relative error %.3g)", (double)x[i],
                  (double)y[i], ref[i], err / fmax(fabs(ref[i]), 1e-300));
    }
    be->gelu(be, dx, dx, n); /* in place */
    tu_expect_equal("gelu in place", tu_to_host(dx, n), y, n);
}

static void check_gelu_random(size_t n, uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    float *x = tu_floats(n);
    double *ref = tu_doubles(n);
    tu_fill_normal(&r, x, n, 3.0);
    for (size_t i = 0; i < n; i++) ref[i] = ref_gelu(x[i]);
    float *dx = tu_dev_from(x, n), *dy = tu_dev_from(x, n);
    be->gelu(be, dy, dx, n);
    char what[64];
    snprintf(what, sizeof what, "gelu (n %zu)", n);
    tu_expect_close(what, tu_to_host(dy, n), ref, n, 1e-6);
}

Test(elementwise, gelu_random) {
    check_gelu_random(1, 50);
    check_gelu_random(13, 51);
    check_gelu_random(65537, 52); /* threaded, odd tail */
}

/* GELU is elementwise, so dL/dx_i of L = sum w .* gelu(x) only involves x_i: the central
 * difference of w_i gelu(x_i) per element is the full finite-difference gradient. */
static void check_gelu_bwd(size_t n, uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    float *x = tu_floats(n), *w = tu_floats(n), *dx = tu_floats(n);
    tu_fill_normal(&r, x, n, 3.0);
    tu_fill(&r, w, n, -1, 1);
    double *fd = tu_doubles(n);
    const double h = 1e-6;
    for (size_t i = 0; i < n; i++)
        fd[i] = w[i] * (ref_gelu((double)x[i] + h) - ref_gelu((double)x[i] - h)) / (2 * h);
    tu_fill_nan(dx, n);
    float *d_x = tu_dev_from(x, n), *d_w = tu_dev_from(w, n), *d_dx = tu_dev_from(dx, n);
    be->gelu_bwd(be, d_dx, d_w, d_x, n);
    char what[64];
    snprintf(what, sizeof what, "gelu_bwd (n %zu)", n);
    float *got = tu_to_host(d_dx, n);
    tu_expect_grad(what, got, fd, NULL, n, 1e-5);
    be->gelu_bwd(be, d_w, d_w, d_x, n); /* dx aliases dy */
    tu_expect_equal("gelu_bwd in place", tu_to_host(d_w, n), got, n);
}

Test(elementwise, gelu_bwd) {
    check_gelu_bwd(1, 60);
    check_gelu_bwd(31, 61);
    check_gelu_bwd(65537, 62); /* threaded */
}

/* ---- softmax --------------------------------------------------------------------------------- */

static void ref_softmax(double *y, const double *x, int M, int N) {
    for (int m = 0; m < M; m++) {
        const double *xr = x + (size_t)m * N;
        double *yr = y + (size_t)m * N, mx = xr[0], s = 0;
        for (int j = 1; j < N; j++) mx = fmax(mx, xr[j]);
        for (int j = 0; j < N; j++) s += yr[j] = exp(xr[j] - mx);
        for (int j = 0; j < N; j++) yr[j] /= s;
    }
}

/* Rows get a large common offset (softmax is shift invariant; without the max subtraction
 * exp overflows) and a wide spread, so some entries underflow next to the row's maximum. */
static void check_softmax(int M, int N, double offset, double spread, uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    size_t n = (size_t)M * N;
    float *x = tu_floats(n), *y = tu_floats(n); /* [M, N] */
    for (size_t i = 0; i < n; i++) x[i] = (float)(offset + spread * tu_normal(&r));
    double *xd = tu_doubles(n), *ref = tu_doubles(n);
    tu_to_double(xd, x, n);
    ref_softmax(ref, xd, M, N);
    tu_fill_nan(y, n);
    float *d_x = tu_dev_from(x, n), *d_y = tu_dev_from(y, n);
    be->softmax(be, d_y, d_x, M, N);
    char what[96];
    snprintf(what, sizeof what, "softmax (M %d N %d offset %g spread %g)", M, N, offset, spread);
    float *got = tu_to_host(d_y, n);
    tu_expect_close(what, got, ref, n, 1e-6);
    be->softmax(be, d_x, d_x, M, N);
    tu_expect_equal("softmax in place", tu_to_host(d_x, n), got, n);
}

Test(elementwise, softmax) {
    check_softmax(1, 1, 0, 1, 70);
    check_softmax(3, 7, 0, 1, 71);
    check_softmax(5, 197, 1000, 3, 72);
    check_softmax(4, 16, -500, 30, 73);
    check_softmax(600, 197, 0, 5, 74); /* threaded */
    check_softmax(2, 1000, 80, 1, 75); /* exp(80) alone would overflow a float sum */
}

typedef struct {
    int M, N;
    const double *w; /* [M, N] objective weights */
    double *y;       /* [M, N] scratch */
} softmax_ctx;

static double softmax_objective(void *ctx_, const double *x) {
    softmax_ctx *c = ctx_;
    ref_softmax(c->y, x, c->M, c->N);
    double L = 0;
    for (size_t i = 0; i < (size_t)c->M * c->N; i++) L += c->w[i] * c->y[i];
    return L;
}

static void check_softmax_bwd(int M, int N, uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    size_t n = (size_t)M * N;
    float *x = tu_floats(n), *w = tu_floats(n), *dx = tu_floats(n); /* [M, N] */
    tu_fill_normal(&r, x, n, 2.0);
    tu_fill(&r, w, n, -1, 1);
    float *d_x = tu_dev_from(x, n), *d_y = tu_dev_from(x, n), *d_w = tu_dev_from(w, n);
    be->softmax(be, d_y, d_x, M, N);
    tu_fill_nan(dx, n);
    float *d_dx = tu_dev_from(dx, n);
    be->softmax_bwd(be, d_dx, d_w, d_y, M, N);
    float *got = tu_to_host(d_dx, n);

    double *xd = tu_doubles(n), *wd = tu_doubles(n), *ys = tu_doubles(n);
    tu_to_double(xd, x, n);
    tu_to_double(wd, w, n);
    size_t *idx = calloc(400, sizeof *idx);
    size_t k = tu_sample_indices(&r, n, 400, idx);
    double *fd = tu_doubles(k);
    softmax_ctx ctx = {M, N, wd, ys};
    tu_fd_grad(softmax_objective, &ctx, xd, n, idx, k, 1e-6, fd);
    char what[96];
    snprintf(what, sizeof what, "softmax_bwd (M %d N %d)", M, N);
    tu_expect_grad(what, got, fd, idx, k, 1e-5);
    be->softmax_bwd(be, d_w, d_w, d_y, M, N); /* dx aliases dy */
    tu_expect_equal("softmax_bwd in place", tu_to_host(d_w, n), got, n);
    free(idx);
}

Test(elementwise, softmax_bwd) {
    check_softmax_bwd(1, 1, 80);
    check_softmax_bwd(3, 7, 81);
    check_softmax_bwd(2, 197, 82);
    check_softmax_bwd(300, 130, 83); /* threaded */
}

/* ---- determinism ----------------------------------------------------------------------------- */

/* Every threaded op twice on the same inputs: bit-identical. The column sums of sum_rows are
 * also independent of the thread count (split by columns only), so one thread must agree. */
Test(elementwise, deterministic_threaded) {
    ms_backend *be = tu_cpu();
    cr_assert(omp_get_max_threads() >= 1);
    tu_rng r = tu_seed(90);
    const int M = 1024, D = 384;
    size_t n = (size_t)M * D;
    float *x = tu_floats(n), *g = tu_floats(n), *s = tu_floats(4);
    tu_fill_normal(&r, x, n, 2.0);
    tu_fill(&r, g, n, -1, 1);
    s[0] = 0, s[1] = s[2] = s[3] = 1.0f / 0.9f;
    float *d_x = tu_dev_from(x, n), *d_g = tu_dev_from(g, n), *d_s = tu_dev_from(s, 4);
    float *out[2], *vsum[3];
    float *d_y = tu_dev_from(x, n);
    for (int rep = 0; rep < 2; rep++) {
        out[rep] = tu_floats(6 * n);
        be->gelu(be, d_y, d_x, n);
        be->download_act(be, out[rep], d_y, n);
        be->gelu_bwd(be, d_y, d_g, d_x, n);
        be->download_act(be, out[rep] + n, d_y, n);
        be->softmax(be, d_y, d_x, M, D);
        be->download_act(be, out[rep] + 2 * n, d_y, n);
        be->softmax_bwd(be, d_y, d_g, d_y, M, D);
        be->download_act(be, out[rep] + 3 * n, d_y, n);
        be->drop_path(be, d_y, d_x, d_s, 4, n / 4);
        be->download_act(be, out[rep] + 4 * n, d_y, n);
        be->add_row(be, d_y, d_x, d_g, M, D);
        be->download_act(be, out[rep] + 5 * n, d_y, n);
    }
    tu_expect_equal("gelu, gelu_bwd, softmax, softmax_bwd, drop_path, add_row rerun", out[1],
                    out[0], 6 * n);
    float *d_dv = be->alloc(be, D * sizeof(float));
    int threads = omp_get_max_threads();
    for (int rep = 0; rep < 3; rep++) {
        omp_set_num_threads(rep == 2 ? 1 : threads);
        be->zero(be, d_dv, D * sizeof(float));
        be->sum_rows(be, d_dv, d_g, M, D);
        vsum[rep] = tu_floats(D);
        be->download(be, vsum[rep], d_dv, D * sizeof(float));
    }
    omp_set_num_threads(threads);
    tu_expect_equal("sum_rows rerun", vsum[1], vsum[0], D);
    tu_expect_equal("sum_rows on one thread", vsum[2], vsum[0], D);
}
