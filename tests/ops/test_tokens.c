/* Token plumbing: patchify / unpatchify in both patch orders (against an index-by-index
 * transcription of the definition, bit-identical round trips, each other's backward), token
 * assembly with CLS and position embedding, slicing and the token mean, with finite-difference
 * checks of every backward and bit-identical reruns on threaded shapes. */
#include "../testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* Objective L = sum w .* op(in) of patchify (what 0) or unpatchify (what 1), in double. Both
 * ops are linear, so central differences are exact up to rounding for any step h. */
typedef struct {
    int what;
    int B, C, Hi, Wi, p, order;
    const double *w; /* [B*C*Hi*Wi] objective weights over the op's output */
    double *out;     /* [B*C*Hi*Wi] scratch: the op's output */
} obj_ctx;

/* ---- patchify / unpatchify ----------------------------------------------------------------- */

/* Index of element (b, c, y, x) of the image inside patches[B, Np, C*p*p], straight from the
 * definition: patch (y / p, x / p) in a row-major grid, element (c, ky, kx) or (ky, kx, c). */
static size_t patch_index(int order, int C, int Hi, int Wi, int p, int b, int c, int y, int x) {
    int Gh = Hi / p, Gw = Wi / p, ky = y % p, kx = x % p;
    size_t patch = (size_t)b * Gh * Gw + (size_t)(y / p) * Gw + x / p;
    size_t elem = order == MS_PATCH_CHW ? ((size_t)c * p + ky) * p + kx
                                        : ((size_t)ky * p + kx) * C + c;
    return patch * ((size_t)C * p * p) + elem;
}

static void ref_patchify(double *patches, const double *img, int B, int C, int Hi, int Wi, int p,
                         int order) {
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++)
            for (int y = 0; y < Hi; y++)
                for (int x = 0; x < Wi; x++)
                    patches[patch_index(order, C, Hi, Wi, p, b, c, y, x)] =
                        img[(((size_t)b * C + c) * Hi + y) * Wi + x];
}

static void ref_unpatchify(double *img, const double *patches, int B, int C, int Hi, int Wi,
                           int p, int order) {
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++)
            for (int y = 0; y < Hi; y++)
                for (int x = 0; x < Wi; x++)
                    img[(((size_t)b * C + c) * Hi + y) * Wi + x] =
                        patches[patch_index(order, C, Hi, Wi, p, b, c, y, x)];
}

static double patch_objective(void *ctx_, const double *in) {
    obj_ctx *c = ctx_;
    size_t n = (size_t)c->B * c->C * c->Hi * c->Wi;
    if (c->what == 0)
        ref_patchify(c->out, in, c->B, c->C, c->Hi, c->Wi, c->p, c->order);
    else
        ref_unpatchify(c->out, in, c->B, c->C, c->Hi, c->Wi, c->p, c->order);
    double L = 0;
    for (size_t i = 0; i < n; i++) L += c->w[i] * c->out[i];
    return L;
}

static const char *order_name(int order) { return order == MS_PATCH_CHW ? "CHW" : "HWC"; }

static void check_patch(int B, int C, int Hi, int Wi, int p, int order, uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    size_t n = (size_t)B * C * Hi * Wi;
    float *img = tu_floats(n), *pat = tu_floats(n); /* [B, C, Hi, Wi], [B, Np, C*p*p] */
    tu_fill_normal(&r, img, n, 1.0);
    double *imgd = tu_doubles(n), *patd = tu_doubles(n);
    tu_to_double(imgd, img, n);
    ref_patchify(patd, imgd, B, C, Hi, Wi, p, order);
    float *ref = tu_floats(n);
    tu_to_float(ref, patd, n); /* a permutation: the reference is exact in float */
    tu_fill_nan(pat, n);
    float *d_img = tu_dev_from(img, n), *d_pat = tu_dev_from(pat, n);
    char what[128];
    snprintf(what, sizeof what, "patchify %s (B %d C %d %dx%d p %d)", order_name(order), B, C, Hi,
             Wi, p);
    be->patchify(be, d_pat, d_img, B, C, Hi, Wi, p, order);
    float *got = tu_to_host(d_pat, n);
    tu_expect_equal(what, got, ref, n);

    /* unpatchify of independent random patches against the reference ... */
    float *pat2 = tu_floats(n), *img2 = tu_floats(n);
    tu_fill_normal(&r, pat2, n, 1.0);
    double *pat2d = tu_doubles(n), *img2d = tu_doubles(n);
    tu_to_double(pat2d, pat2, n);
    ref_unpatchify(img2d, pat2d, B, C, Hi, Wi, p, order);
    float *ref2 = tu_floats(n);
    tu_to_float(ref2, img2d, n);
    tu_fill_nan(img2, n);
    float *d_pat2 = tu_dev_from(pat2, n), *d_img2 = tu_dev_from(img2, n);
    be->unpatchify(be, d_img2, d_pat2, B, C, Hi, Wi, p, order);
    snprintf(what, sizeof what, "unpatchify %s (B %d C %d %dx%d p %d)", order_name(order), B, C,
             Hi, Wi, p);
    tu_expect_equal(what, tu_to_host(d_img2, n), ref2, n);

    /* ... and both round trips are the identity, bit for bit. */
    float *d_back = tu_dev_from(pat, n);
    be->unpatchify(be, d_back, d_pat, B, C, Hi, Wi, p, order);
    snprintf(what, sizeof what, "unpatchify(patchify(img)) %s (B %d C %d %dx%d p %d)",
             order_name(order), B, C, Hi, Wi, p);
    tu_expect_equal(what, tu_to_host(d_back, n), img, n);
    be->patchify(be, d_back, d_img2, B, C, Hi, Wi, p, order);
    snprintf(what, sizeof what, "patchify(unpatchify(patches)) %s (B %d C %d %dx%d p %d)",
             order_name(order), B, C, Hi, Wi, p);
    tu_expect_equal(what, tu_to_host(d_back, n), pat2, n);

    /* Backward: the gradient of sum w .* patchify(img) is unpatchify(w), and vice versa. */
    if (n > 4096) return;
    float *w = tu_floats(n);
    tu_fill(&r, w, n, -1, 1);
    double *wd = tu_doubles(n), *scratch = tu_doubles(n), *fd = tu_doubles(n);
    tu_to_double(wd, w, n);
    float *d_w = tu_dev_from(w, n), *d_g = tu_dev_from(w, n);
    obj_ctx ctx = {.what = 0, .B = B, .C = C, .Hi = Hi, .Wi = Wi, .p = p, .order = order,
                   .w = wd, .out = scratch};
    tu_fd_grad(patch_objective, &ctx, imgd, n, NULL, n, 0.5, fd);
    be->unpatchify(be, d_g, d_w, B, C, Hi, Wi, p, order);
    snprintf(what, sizeof what, "patchify backward = unpatchify %s (B %d C %d %dx%d p %d)",
             order_name(order), B, C, Hi, Wi, p);
    tu_expect_grad(what, tu_to_host(d_g, n), fd, NULL, n, 1e-7);
    ctx.what = 1;
    tu_fd_grad(patch_objective, &ctx, pat2d, n, NULL, n, 0.5, fd);
    be->patchify(be, d_g, d_w, B, C, Hi, Wi, p, order);
    snprintf(what, sizeof what, "unpatchify backward = patchify %s (B %d C %d %dx%d p %d)",
             order_name(order), B, C, Hi, Wi, p);
    tu_expect_grad(what, tu_to_host(d_g, n), fd, NULL, n, 1e-7);
}

Test(tokens, patchify_chw) {
    check_patch(1, 1, 1, 1, 1, MS_PATCH_CHW, 1);
    check_patch(2, 3, 8, 12, 4, MS_PATCH_CHW, 2);  /* wider than high */
    check_patch(1, 3, 6, 4, 2, MS_PATCH_CHW, 3);   /* higher than wide */
    check_patch(3, 2, 15, 10, 5, MS_PATCH_CHW, 4); /* odd patch size */
    check_patch(2, 5, 3, 7, 1, MS_PATCH_CHW, 5);   /* p = 1 */
    check_patch(2, 1, 8, 12, 4, MS_PATCH_CHW, 7);
    check_patch(4, 3, 64, 96, 16, MS_PATCH_CHW, 6); /* threaded */
}

Test(tokens, patchify_hwc) {
    check_patch(1, 1, 1, 1, 1, MS_PATCH_HWC, 11);
    check_patch(2, 3, 8, 12, 4, MS_PATCH_HWC, 12);
    check_patch(1, 3, 6, 4, 2, MS_PATCH_HWC, 13);
    check_patch(3, 2, 15, 10, 5, MS_PATCH_HWC, 14);
    check_patch(2, 5, 3, 7, 1, MS_PATCH_HWC, 15);
    check_patch(2, 1, 8, 12, 4, MS_PATCH_HWC, 17); /* one channel: both orders coincide */
    check_patch(1, 17, 6, 9, 3, MS_PATCH_HWC, 18); /* many channels */
    check_patch(4, 3, 64, 96, 16, MS_PATCH_HWC, 16);
}

/* The two orders differ whenever C > 1 and p > 1 (otherwise a test above could pass with the
 * orders swapped). */
Test(tokens, patch_orders_differ) {
    ms_backend *be = tu_cpu();
    const int B = 1, C = 3, Hi = 4, Wi = 6, p = 2;
    size_t n = (size_t)B * C * Hi * Wi;
    float *img = tu_floats(n);
    for (size_t i = 0; i < n; i++) img[i] = (float)i;
    float *d_img = tu_dev_from(img, n), *d_a = tu_dev_from(img, n), *d_b = tu_dev_from(img, n);
    be->patchify(be, d_a, d_img, B, C, Hi, Wi, p, MS_PATCH_CHW);
    be->patchify(be, d_b, d_img, B, C, Hi, Wi, p, MS_PATCH_HWC);
    float *a = tu_to_host(d_a, n), *b = tu_to_host(d_b, n);
    /* First patch, CHW: channel 0's 2x2 block first; HWC: pixel (0,0) of every channel. */
    cr_assert_float_eq(a[1], img[1], 0, "CHW element (c0, ky0, kx1) is image pixel (0, 1)");
    cr_assert_float_eq(b[1], img[Hi * Wi], 0,
                       "HWC element (ky0, kx0, c1) is channel 1 pixel (0, 0)");
}

/* ---- tokens_assemble ----------------------------------------------------------------------- */

static void ref_assemble(double *x, const double *pe, const double *cls, const double *pos, int B,
                         int N, int D) {
    for (int b = 0; b < B; b++)
        for (int n = 0; n < N; n++)
            for (int d = 0; d < D; d++)
                x[((size_t)b * N + n) * D + d] =
                    (n == 0 ? cls[d] : pe[((size_t)b * (N - 1) + n - 1) * D + d]) +
                    pos[(size_t)n * D + d];
}

typedef struct {
    int B, N, D, which;  /* which input varies: 0 pe, 1 cls, 2 pos */
    double *pe, *cls, *pos; /* [B, N-1, D], [D], [N, D] */
    const double *w;     /* [B, N, D] */
    double *x;           /* [B, N, D] scratch */
} assemble_ctx;

static double assemble_objective(void *ctx_, const double *v) {
    assemble_ctx *c = ctx_;
    const double *pe = c->which == 0 ? v : c->pe, *cls = c->which == 1 ? v : c->cls;
    const double *pos = c->which == 2 ? v : c->pos;
    ref_assemble(c->x, pe, cls, pos, c->B, c->N, c->D);
    double L = 0;
    for (size_t i = 0; i < (size_t)c->B * c->N * c->D; i++) L += c->w[i] * c->x[i];
    return L;
}

static void check_assemble(int B, int N, int D, uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    size_t npe = (size_t)B * (N - 1) * D, nx = (size_t)B * N * D, npos = (size_t)N * D;
    float *pe = tu_floats(npe + 1), *cls = tu_floats(D), *pos = tu_floats(npos);
    tu_fill_normal(&r, pe, npe, 1.0);
    tu_fill_normal(&r, cls, D, 1.0);
    tu_fill_normal(&r, pos, npos, 1.0);
    double *ped = tu_doubles(npe + 1), *clsd = tu_doubles(D), *posd = tu_doubles(npos);
    double *xref = tu_doubles(nx);
    tu_to_double(ped, pe, npe);
    tu_to_double(clsd, cls, D);
    tu_to_double(posd, pos, npos);
    ref_assemble(xref, ped, clsd, posd, B, N, D);
    float *x = tu_floats(nx);
    tu_fill_nan(x, nx);
    float *d_pe = tu_dev_from(pe, npe), *d_x = tu_dev_from(x, nx);
    float *d_cls = tu_dev_from(cls, D), *d_pos = tu_dev_from(pos, npos);
    be->tokens_assemble(be, d_x, d_pe, d_cls, d_pos, B, N, D);
    char what[128];
    snprintf(what, sizeof what, "tokens_assemble (B %d N %d D %d)", B, N, D);
    tu_expect_close(what, tu_to_host(d_x, nx), xref, nx, 1e-7);

    /* Backward, fed dx = w: dpe written over garbage, dcls / dpos accumulated onto a start. */
    float *w = tu_floats(nx), *start_cls = tu_floats(D), *start_pos = tu_floats(npos);
    tu_fill(&r, w, nx, -1, 1);
    tu_fill(&r, start_cls, D, -1, 1);
    tu_fill(&r, start_pos, npos, -1, 1);
    float *dpe = tu_floats(npe + 1);
    tu_fill_nan(dpe, npe);
    float *d_w = tu_dev_from(w, nx), *d_dpe = tu_dev_from(dpe, npe);
    float *d_dcls = tu_dev_from(start_cls, D), *d_dpos = tu_dev_from(start_pos, npos);
    be->tokens_assemble_bwd(be, d_dpe, d_dcls, d_dpos, d_w, B, N, D);
    float *g_pe = tu_to_host(d_dpe, npe), *g_cls = tu_to_host(d_dcls, D), *g_pos = tu_to_host(d_dpos, npos);

    double *wd = tu_doubles(nx);
    tu_to_double(wd, w, nx);
    assemble_ctx ctx = {B, N, D, 0, ped, clsd, posd, wd, tu_doubles(nx)};
    size_t *idx = calloc(300, sizeof *idx);
    double *fd = tu_doubles(300);
    if (npe) {
        size_t k = tu_sample_indices(&r, npe, 300, idx);
        tu_fd_grad(assemble_objective, &ctx, ped, npe, idx, k, 1e-3, fd);
        snprintf(what, sizeof what, "tokens_assemble dpe (B %d N %d D %d)", B, N, D);
        tu_expect_grad(what, g_pe, fd, idx, k, 1e-6);
    }
    /* The accumulated grads minus their start must match finite differences. */
    ctx.which = 1;
    size_t k = tu_sample_indices(&r, D, 300, idx);
    tu_fd_grad(assemble_objective, &ctx, clsd, D, idx, k, 1e-3, fd);
    for (size_t i = 0; i < k; i++) fd[i] += start_cls[idx[i]];
    snprintf(what, sizeof what, "tokens_assemble dcls accumulated (B %d N %d D %d)", B, N, D);
    tu_expect_grad(what, g_cls, fd, idx, k, 1e-6);
    ctx.which = 2;
    k = tu_sample_indices(&r, npos, 300, idx);
    tu_fd_grad(assemble_objective, &ctx, posd, npos, idx, k, 1e-3, fd);
    for (size_t i = 0; i < k; i++) fd[i] += start_pos[idx[i]];
    snprintf(what, sizeof what, "tokens_assemble dpos accumulated (B %d N %d D %d)", B, N, D);
    tu_expect_grad(what, g_pos, fd, idx, k, 1e-6);

    /* dpe NULL: the parameter gradients are the same. */
    be->upload(be, d_dcls, start_cls, D * sizeof(float));
    be->upload(be, d_dpos, start_pos, npos * sizeof(float));
    be->tokens_assemble_bwd(be, NULL, d_dcls, d_dpos, d_w, B, N, D);
    tu_expect_equal("tokens_assemble_bwd dcls with dpe NULL", tu_to_host(d_dcls, D), g_cls, D);
    tu_expect_equal("tokens_assemble_bwd dpos with dpe NULL", tu_to_host(d_dpos, npos), g_pos, npos);
    free(idx);
}

Test(tokens, assemble) {
    check_assemble(1, 1, 1, 20);   /* CLS only */
    check_assemble(1, 2, 1, 21);   /* D = 1 */
    check_assemble(2, 5, 3, 22);
    check_assemble(3, 17, 70, 23); /* partial column block */
    check_assemble(2, 197, 96, 24); /* threaded */
}

/* ---- tokens_slice -------------------------------------------------------------------------- */

static void check_slice(int B, int N, int D, int n0, int n1, uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    size_t nx = (size_t)B * N * D, no = (size_t)B * (n1 - n0) * D;
    float *x = tu_floats(nx), *out = tu_floats(no + 1);
    tu_fill_normal(&r, x, nx, 1.0);
    float *ref = tu_floats(no + 1);
    for (int b = 0; b < B; b++)
        for (int n = n0; n < n1; n++)
            for (int d = 0; d < D; d++)
                ref[((size_t)b * (n1 - n0) + n - n0) * D + d] = x[((size_t)b * N + n) * D + d];
    tu_fill_nan(out, no);
    float *d_x = tu_dev_from(x, nx), *d_out = tu_dev_from(out, no);
    be->tokens_slice(be, d_out, d_x, B, N, D, n0, n1);
    char what[128];
    snprintf(what, sizeof what, "tokens_slice (B %d N %d D %d, %d:%d)", B, N, D, n0, n1);
    tu_expect_equal(what, tu_to_host(d_out, no), ref, no);

    /* Backward: dx = dout inside n0:n1 and zero outside (written over garbage); the FD of
     * L = sum w .* slice(x) with h = 1 is exact for this linear map. */
    float *w = tu_floats(no + 1), *dx = tu_floats(nx);
    tu_fill(&r, w, no, -1, 1);
    tu_fill_nan(dx, nx);
    double *fd = tu_doubles(nx);
    for (int b = 0; b < B; b++)
        for (int n = 0; n < N; n++)
            for (int d = 0; d < D; d++) {
                size_t i = ((size_t)b * N + n) * D + d;
                double wi = (n >= n0 && n < n1) ? w[((size_t)b * (n1 - n0) + n - n0) * D + d] : 0;
                fd[i] = (wi * (x[i] + 1.0) - wi * (x[i] - 1.0)) / 2.0;
            }
    float *d_w = tu_dev_from(w, no), *d_dx = tu_dev_from(dx, nx);
    be->tokens_slice_bwd(be, d_dx, d_w, B, N, D, n0, n1);
    float *got = tu_to_host(d_dx, nx);
    snprintf(what, sizeof what, "tokens_slice_bwd (B %d N %d D %d, %d:%d)", B, N, D, n0, n1);
    tu_expect_grad(what, got, fd, NULL, nx, 1e-7);
    for (size_t i = 0; i < nx; i++)
        if (fd[i] == 0)
            cr_assert(got[i] == 0, "%s: entry %zu outside the slice is %g", what, i,
                      (double)got[i]);
}

Test(tokens, slice) {
    check_slice(1, 1, 1, 0, 1, 30);
    check_slice(2, 5, 3, 0, 5, 31);  /* everything */
    check_slice(2, 5, 3, 1, 5, 32);  /* drop CLS */
    check_slice(3, 9, 4, 0, 1, 33);  /* CLS only */
    check_slice(3, 9, 4, 2, 7, 34);  /* a middle range */
    check_slice(2, 6, 5, 3, 3, 35);  /* empty */
    check_slice(8, 197, 64, 1, 197, 36); /* threaded */
}

/* ---- tokens_mean --------------------------------------------------------------------------- */

static void check_mean(int B, int N, int D, int n0, uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    size_t nx = (size_t)B * N * D, no = (size_t)B * D;
    float *x = tu_floats(nx), *out = tu_floats(no);
    tu_fill_normal(&r, x, nx, 1.0);
    for (size_t i = 0; i < nx; i++) x[i] += 3.0f; /* a common offset: sums are not tiny */
    double *ref = tu_doubles(no);
    for (int b = 0; b < B; b++)
        for (int d = 0; d < D; d++) {
            double s = 0;
            for (int n = n0; n < N; n++) s += x[((size_t)b * N + n) * D + d];
            ref[(size_t)b * D + d] = s / (N - n0);
        }
    tu_fill_nan(out, no);
    float *d_x = tu_dev_from(x, nx), *d_out = tu_dev_from(out, no);
    be->tokens_mean(be, d_out, d_x, B, N, D, n0);
    char what[128];
    snprintf(what, sizeof what, "tokens_mean (B %d N %d D %d n0 %d)", B, N, D, n0);
    tu_expect_close(what, tu_to_host(d_out, no), ref, no, 1e-6);

    /* Backward: d/dx of sum w .* mean(x) is w / (N - n0) on tokens >= n0, 0 before. */
    float *w = tu_floats(no), *dx = tu_floats(nx);
    tu_fill(&r, w, no, -1, 1);
    tu_fill_nan(dx, nx);
    double *fd = tu_doubles(nx);
    for (int b = 0; b < B; b++)
        for (int n = 0; n < N; n++)
            for (int d = 0; d < D; d++) {
                size_t i = ((size_t)b * N + n) * D + d;
                double c = n >= n0 ? (double)w[(size_t)b * D + d] / (N - n0) : 0;
                fd[i] = (c * (x[i] + 0.5) - c * (x[i] - 0.5)) / 1.0;
            }
    float *d_w = tu_dev_from(w, no), *d_dx = tu_dev_from(dx, nx);
    be->tokens_mean_bwd(be, d_dx, d_w, B, N, D, n0);
    float *got = tu_to_host(d_dx, nx);
    snprintf(what, sizeof what, "tokens_mean_bwd (B %d N %d D %d n0 %d)", B, N, D, n0);
    tu_expect_grad(what, got, fd, NULL, nx, 1e-6);
    for (size_t i = 0; i < nx; i++)
        if (fd[i] == 0)
            cr_assert(got[i] == 0, "%s: entry %zu before n0 is %g", what, i, (double)got[i]);
}

Test(tokens, mean) {
    check_mean(1, 1, 1, 0, 40);
    check_mean(2, 5, 3, 0, 41);
    check_mean(2, 5, 3, 1, 42);   /* skip CLS */
    check_mean(3, 6, 7, 5, 43);   /* a single token */
    check_mean(2, 9, 130, 1, 44); /* partial column block */
    check_mean(16, 197, 96, 1, 45); /* threaded */
}

/* A mean over 10^5 tokens keeps double accuracy. */
Test(tokens, mean_long_accuracy) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(46);
    const int B = 1, N = 100000, D = 2;
    size_t nx = (size_t)B * N * D;
    float *x = tu_floats(nx);
    tu_fill(&r, x, nx, 0.9, 1.1);
    double ref[2] = {0, 0};
    for (int n = 0; n < N; n++)
        for (int d = 0; d < D; d++) ref[d] += x[(size_t)n * D + d];
    ref[0] /= N, ref[1] /= N;
    float *d_x = tu_dev_from(x, nx), *d_out = tu_dev_from(x, 2);
    be->tokens_mean(be, d_out, d_x, B, N, D, 0);
    tu_expect_close("tokens_mean over 1e5 tokens", tu_to_host(d_out, 2), ref, 2, 1e-7);
}

/* ---- determinism ----------------------------------------------------------------------------- */

Test(tokens, deterministic_threaded) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(50);
    const int B = 8, N = 197, D = 192;
    size_t nx = (size_t)B * N * D, npos = (size_t)N * D;
    float *x = tu_floats(nx);
    tu_fill_normal(&r, x, nx, 1.0);
    float *d_x = tu_dev_from(x, nx), *d_y = tu_dev_from(x, nx), *d_pe = tu_dev_from(x, nx);
    float *d_cls = be->alloc(be, D * sizeof(float)), *d_pos = be->alloc(be, npos * sizeof(float));
    size_t total = npos + D + (size_t)B * D + nx; /* dpos, dcls, mean, mean backward */
    float *res[2];
    for (int rep = 0; rep < 2; rep++) {
        res[rep] = tu_floats(total);
        be->zero(be, d_cls, D * sizeof(float));
        be->zero(be, d_pos, npos * sizeof(float));
        be->tokens_assemble_bwd(be, d_pe, d_cls, d_pos, d_x, B, N, D);
        be->download(be, res[rep], d_pos, npos * sizeof(float));
        be->download(be, res[rep] + npos, d_cls, D * sizeof(float));
        be->tokens_mean(be, d_y, d_x, B, N, D, 1);
        be->download_act(be, res[rep] + npos + D, d_y, (size_t)B * D);
        be->tokens_mean_bwd(be, d_y, d_x, B, N, D, 1);
        be->download_act(be, res[rep] + npos + D + (size_t)B * D, d_y, nx);
    }
    tu_expect_equal("tokens_assemble_bwd and tokens_mean(+bwd) rerun", res[1], res[0], total);
}
