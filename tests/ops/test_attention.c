/* Attention ops against naive double-precision references: forward values, gradients by central
 * finite differences, multi-query with one head per token against standard single-head
 * attention, and bit-identical reruns on shapes large enough to thread. */
#include "../testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- double references ------------------------------------------------------------------ */

/* One attention row: s[Nk] scores in, probabilities out (max-shifted softmax). */
static void ref_softmax(double *s, int Nk) {
    double mx = s[0], sum = 0;
    for (int j = 1; j < Nk; j++) mx = fmax(mx, s[j]);
    for (int j = 0; j < Nk; j++) sum += (s[j] = exp(s[j] - mx));
    for (int j = 0; j < Nk; j++) s[j] /= sum;
}

/* qkv[B, N, 3, H, hd] -> out[B, N, H, hd], att[B, H, N, N] (att may be NULL). */
static void ref_attention(const double *qkv, int B, int N, int H, int hd, double scale,
                          double *out, double *att) {
    double s[256]; /* [N] one row of scores */
    cr_assert(N <= 256, "ref_attention: N = %d exceeds its row buffer", N);
#define QKV(b, n, c, h, d) qkv[((((size_t)(b) * N + (n)) * 3 + (c)) * H + (h)) * hd + (d)]
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < N; i++) {
                for (int j = 0; j < N; j++) {
                    double dot = 0;
                    for (int d = 0; d < hd; d++) dot += QKV(b, i, 0, h, d) * QKV(b, j, 1, h, d);
                    s[j] = dot * scale;
                }
                ref_softmax(s, N);
                if (att) memcpy(att + (((size_t)b * H + h) * N + i) * N, s, N * sizeof(double));
                for (int d = 0; d < hd; d++) {
                    double acc = 0;
                    for (int j = 0; j < N; j++) acc += s[j] * QKV(b, j, 2, h, d);
                    out[(((size_t)b * N + i) * H + h) * hd + d] = acc;
                }
            }
#undef QKV
}

/* q[B, N, K, hd], kv[B, N, 2, hd] -> out[B, N, K, hd], att[B, N*K, N] (att may be NULL). */
static void ref_mq_attention(const double *q, const double *kv, int B, int N, int K, int hd,
                             double scale, double *out, double *att) {
    double s[256]; /* [N] one row of scores */
    cr_assert(N <= 256, "ref_mq_attention: N = %d exceeds its row buffer", N);
    for (int b = 0; b < B; b++)
        for (int i = 0; i < N; i++)
            for (int j = 0; j < K; j++) {
                const double *qr = q + (((size_t)b * N + i) * K + j) * hd;
                for (int m = 0; m < N; m++) {
                    const double *kr = kv + ((size_t)b * N + m) * 2 * hd;
                    double dot = 0;
                    for (int d = 0; d < hd; d++) dot += qr[d] * kr[d];
                    s[m] = dot * scale;
                }
                ref_softmax(s, N);
                size_t row = ((size_t)b * N + i) * K + j; /* = b*N*K + (i*K + j) */
                if (att) memcpy(att + row * N, s, N * sizeof(double));
                for (int d = 0; d < hd; d++) {
                    double acc = 0;
                    for (int m = 0; m < N; m++)
                        acc += s[m] * kv[((size_t)b * N + m) * 2 * hd + hd + d];
                    out[row * hd + d] = acc;
                }
            }
}

/* ---- device helpers ---------------------------------------------------------------------- */

static ms_act *dev_upload(const float *host, size_t n) {
    ms_backend *be = tu_cpu();
    ms_act *d = be->alloc(be, n * be->act_size);
    cr_assert_not_null(d);
    be->upload_act(be, d, host, n);
    return d;
}

/* Device buffer of n activations pre-filled with NaN, so an op that reads before writing, or
 * leaves an element unwritten, shows up as a non-finite value. */
static ms_act *dev_nan(size_t n) {
    float *h = tu_floats(n);
    for (size_t i = 0; i < n; i++) h[i] = NAN;
    return dev_upload(h, n);
}

static float *dev_download(const ms_act *d, size_t n) {
    ms_backend *be = tu_cpu();
    float *h = tu_floats(n);
    be->download_act(be, h, d, n);
    return h;
}

/* ---- forward ----------------------------------------------------------------------------- */

static void check_attention_fwd(int B, int N, int H, int hd, double std, double tol,
                                uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    size_t nx = (size_t)B * N * 3 * H * hd, no = (size_t)B * N * H * hd, na = (size_t)B * H * N * N;
    float *x = tu_floats(nx);
    tu_fill_normal(&r, x, nx, std);
    double *xd = tu_doubles(nx), *od = tu_doubles(no), *ad = tu_doubles(na);
    tu_to_double(xd, x, nx);
    float scale = 1.0f / sqrtf((float)hd);
    ref_attention(xd, B, N, H, hd, scale, od, ad);

    ms_act *dx = dev_upload(x, nx), *dout = dev_nan(no), *datt = dev_nan(na);
    be->attention(be, dout, datt, dx, B, N, H, hd, scale);
    char what[96];
    snprintf(what, sizeof what, "attention out B%d N%d H%d hd%d", B, N, H, hd);
    tu_expect_close(what, dev_download(dout, no), od, no, tol);
    snprintf(what, sizeof what, "attention att B%d N%d H%d hd%d", B, N, H, hd);
    tu_expect_close(what, dev_download(datt, na), ad, na, tol);
}

static void check_mq_fwd(int B, int N, int K, int hd, double std, double tol, uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    size_t nq = (size_t)B * N * K * hd, nkv = (size_t)B * N * 2 * hd, na = (size_t)B * N * K * N;
    float *q = tu_floats(nq), *kv = tu_floats(nkv);
    tu_fill_normal(&r, q, nq, std);
    tu_fill_normal(&r, kv, nkv, std);
    double *qd = tu_doubles(nq), *kvd = tu_doubles(nkv), *od = tu_doubles(nq), *ad = tu_doubles(na);
    tu_to_double(qd, q, nq);
    tu_to_double(kvd, kv, nkv);
    float scale = 1.0f / sqrtf((float)hd);
    ref_mq_attention(qd, kvd, B, N, K, hd, scale, od, ad);

    ms_act *dq = dev_upload(q, nq), *dkv = dev_upload(kv, nkv);
    ms_act *dout = dev_nan(nq), *datt = dev_nan(na);
    be->mq_attention(be, dout, datt, dq, dkv, B, N, K, hd, scale);
    char what[96];
    snprintf(what, sizeof what, "mq_attention out B%d N%d K%d hd%d", B, N, K, hd);
    tu_expect_close(what, dev_download(dout, nq), od, nq, tol);
    snprintf(what, sizeof what, "mq_attention att B%d N%d K%d hd%d", B, N, K, hd);
    tu_expect_close(what, dev_download(datt, na), ad, na, tol);
}

/* {B, N, H or K, hd}: odd sizes, single token, single head, batch of one. */
static const int fwd_shapes[][4] = {
    {2, 5, 3, 4}, {1, 1, 1, 1}, {1, 7, 1, 3}, {3, 1, 2, 5}, {2, 17, 4, 9}, {1, 33, 6, 16},
};

Test(attention, forward) {
    for (size_t s = 0; s < sizeof fwd_shapes / sizeof fwd_shapes[0]; s++)
        check_attention_fwd(fwd_shapes[s][0], fwd_shapes[s][1], fwd_shapes[s][2], fwd_shapes[s][3],
                            1.0, 1e-5, 100 + s);
}

Test(attention, mq_forward) {
    for (size_t s = 0; s < sizeof fwd_shapes / sizeof fwd_shapes[0]; s++)
        check_mq_fwd(fwd_shapes[s][0], fwd_shapes[s][1], fwd_shapes[s][2], fwd_shapes[s][3], 1.0,
                     1e-5, 200 + s);
}

/* Scores in the thousands: a softmax without the max shift overflows expf to inf/NaN. */
Test(attention, large_scores_stay_finite) {
    check_attention_fwd(2, 12, 2, 8, 40.0, 1e-5, 300);
    check_mq_fwd(2, 12, 3, 8, 40.0, 1e-5, 301);
}

/* ---- backward: finite differences of L = sum(w .* out) ------------------------------------ */

typedef struct {
    int B, N, H, hd;  /* H holds K for the multi-query losses */
    double scale;
    const double *w;  /* [B, N, H, hd] */
    double *out;      /* [B, N, H, hd] scratch */
    const double *q;  /* mq only: the input not being differentiated */
    const double *kv;
} fd_ctx;

static double dot_w(const double *w, const double *y, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += w[i] * y[i];
    return s;
}

static double loss_attention(void *vc, const double *qkv) {
    fd_ctx *c = vc;
    ref_attention(qkv, c->B, c->N, c->H, c->hd, c->scale, c->out, NULL);
    return dot_w(c->w, c->out, (size_t)c->B * c->N * c->H * c->hd);
}

static double loss_mq_q(void *vc, const double *q) {
    fd_ctx *c = vc;
    ref_mq_attention(q, c->kv, c->B, c->N, c->H, c->hd, c->scale, c->out, NULL);
    return dot_w(c->w, c->out, (size_t)c->B * c->N * c->H * c->hd);
}

static double loss_mq_kv(void *vc, const double *kv) {
    fd_ctx *c = vc;
    ref_mq_attention(c->q, kv, c->B, c->N, c->H, c->hd, c->scale, c->out, NULL);
    return dot_w(c->w, c->out, (size_t)c->B * c->N * c->H * c->hd);
}

#define GRAD_TOL 2e-4
#define FD_H 1e-6

static void check_attention_bwd(int B, int N, int H, int hd, size_t max_idx, uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    size_t nx = (size_t)B * N * 3 * H * hd, no = (size_t)B * N * H * hd, na = (size_t)B * H * N * N;
    float *x = tu_floats(nx), *w = tu_floats(no);
    tu_fill_normal(&r, x, nx, 1.0);
    tu_fill(&r, w, no, -1.0, 1.0);
    float scale = 1.0f / sqrtf((float)hd);

    ms_act *dx = dev_upload(x, nx), *dout = dev_nan(no), *datt = dev_nan(na);
    ms_act *dw = dev_upload(w, no), *dgrad = dev_nan(nx), *ws = dev_nan(na);
    be->attention(be, dout, datt, dx, B, N, H, hd, scale);
    be->attention_bwd(be, dgrad, ws, dw, dx, datt, B, N, H, hd, scale);
    float *g = dev_download(dgrad, nx);

    double *xd = tu_doubles(nx), *wd = tu_doubles(no);
    tu_to_double(xd, x, nx);
    tu_to_double(wd, w, no);
    fd_ctx c = {B, N, H, hd, scale, wd, tu_doubles(no), NULL, NULL};
    size_t *idx = calloc(max_idx, sizeof *idx);
    size_t k = tu_sample_indices(&r, nx, max_idx, idx);
    double *fd = tu_doubles(k);
    tu_fd_grad(loss_attention, &c, xd, nx, idx, k, FD_H, fd);
    char what[96];
    snprintf(what, sizeof what, "attention dqkv B%d N%d H%d hd%d", B, N, H, hd);
    tu_expect_grad(what, g, fd, idx, k, GRAD_TOL);
    free(idx);
}

static void check_mq_bwd(int B, int N, int K, int hd, size_t max_idx, uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    size_t nq = (size_t)B * N * K * hd, nkv = (size_t)B * N * 2 * hd, na = (size_t)B * N * K * N;
    float *q = tu_floats(nq), *kv = tu_floats(nkv), *w = tu_floats(nq);
    tu_fill_normal(&r, q, nq, 1.0);
    tu_fill_normal(&r, kv, nkv, 1.0);
    tu_fill(&r, w, nq, -1.0, 1.0);
    float scale = 1.0f / sqrtf((float)hd);

    ms_act *dq = dev_upload(q, nq), *dkv = dev_upload(kv, nkv), *dw = dev_upload(w, nq);
    ms_act *dout = dev_nan(nq), *datt = dev_nan(na), *ws = dev_nan(na);
    ms_act *gq = dev_nan(nq), *gkv = dev_nan(nkv);
    be->mq_attention(be, dout, datt, dq, dkv, B, N, K, hd, scale);
    be->mq_attention_bwd(be, gq, gkv, ws, dw, dq, dkv, datt, B, N, K, hd, scale);
    float *hq = dev_download(gq, nq), *hkv = dev_download(gkv, nkv);

    double *qd = tu_doubles(nq), *kvd = tu_doubles(nkv), *wd = tu_doubles(nq);
    tu_to_double(qd, q, nq);
    tu_to_double(kvd, kv, nkv);
    tu_to_double(wd, w, nq);
    fd_ctx c = {B, N, K, hd, scale, wd, tu_doubles(nq), qd, kvd};
    size_t *idx = calloc(max_idx, sizeof *idx);
    char what[96];

    size_t k = tu_sample_indices(&r, nq, max_idx, idx);
    double *fd = tu_doubles(k);
    tu_fd_grad(loss_mq_q, &c, qd, nq, idx, k, FD_H, fd);
    snprintf(what, sizeof what, "mq_attention dq B%d N%d K%d hd%d", B, N, K, hd);
    tu_expect_grad(what, hq, fd, idx, k, GRAD_TOL);

    k = tu_sample_indices(&r, nkv, max_idx, idx);
    fd = tu_doubles(k);
    tu_fd_grad(loss_mq_kv, &c, kvd, nkv, idx, k, FD_H, fd);
    snprintf(what, sizeof what, "mq_attention dkv B%d N%d K%d hd%d", B, N, K, hd);
    tu_expect_grad(what, hkv, fd, idx, k, GRAD_TOL);
    free(idx);
}

static const int bwd_shapes[][4] = {
    {2, 5, 3, 4}, {1, 1, 1, 1}, {1, 6, 1, 3}, {3, 1, 2, 5}, {2, 9, 2, 7},
};

Test(attention, backward) {
    for (size_t s = 0; s < sizeof bwd_shapes / sizeof bwd_shapes[0]; s++)
        check_attention_bwd(bwd_shapes[s][0], bwd_shapes[s][1], bwd_shapes[s][2], bwd_shapes[s][3],
                            400, 500 + s);
}

Test(attention, mq_backward) {
    for (size_t s = 0; s < sizeof bwd_shapes / sizeof bwd_shapes[0]; s++)
        check_mq_bwd(bwd_shapes[s][0], bwd_shapes[s][1], bwd_shapes[s][2], bwd_shapes[s][3], 400,
                     600 + s);
}

/* Shapes whose work exceeds CPU_PAR_MIN, so the threaded path is the one checked. */
Test(attention, threaded_shapes_match_reference) {
    check_attention_fwd(4, 64, 4, 32, 1.0, 1e-5, 700);
    check_mq_fwd(4, 50, 6, 32, 1.0, 1e-5, 701);
    check_attention_bwd(4, 64, 4, 32, 48, 702);
    check_mq_bwd(3, 40, 6, 24, 48, 703);
}

/* ---- multi-query with one head per token is standard single-head attention --------------- */

static void check_mq_k1_equals_h1(int B, int N, int hd, uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    size_t nq = (size_t)B * N * hd, nkv = 2 * nq, nx = 3 * nq, na = (size_t)B * N * N;
    float *q = tu_floats(nq), *kv = tu_floats(nkv), *w = tu_floats(nq), *x = tu_floats(nx);
    tu_fill_normal(&r, q, nq, 1.0);
    tu_fill_normal(&r, kv, nkv, 1.0);
    tu_fill(&r, w, nq, -1.0, 1.0);
    /* qkv[b, n, 0, 0, :] = q[b, n, 0, :]; qkv[b, n, 1:3, 0, :] = kv[b, n, 0:2, :] */
    for (size_t t = 0; t < (size_t)B * N; t++) {
        memcpy(x + t * 3 * hd, q + t * hd, hd * sizeof(float));
        memcpy(x + t * 3 * hd + hd, kv + t * 2 * hd, 2 * hd * sizeof(float));
    }
    float scale = 1.0f / sqrtf((float)hd);

    ms_act *dq = dev_upload(q, nq), *dkv = dev_upload(kv, nkv), *dx = dev_upload(x, nx);
    ms_act *dw = dev_upload(w, nq);
    ms_act *o1 = dev_nan(nq), *a1 = dev_nan(na), *o2 = dev_nan(nq), *a2 = dev_nan(na);
    ms_act *ws = dev_nan(na), *gq = dev_nan(nq), *gkv = dev_nan(nkv), *gx = dev_nan(nx);
    be->mq_attention(be, o1, a1, dq, dkv, B, N, 1, hd, scale);
    be->attention(be, o2, a2, dx, B, N, 1, hd, scale);
    tu_expect_equal("mq K=1 vs attention H=1: out", dev_download(o1, nq), dev_download(o2, nq), nq);
    tu_expect_equal("mq K=1 vs attention H=1: att", dev_download(a1, na), dev_download(a2, na), na);

    be->mq_attention_bwd(be, gq, gkv, ws, dw, dq, dkv, a1, B, N, 1, hd, scale);
    be->attention_bwd(be, gx, ws, dw, dx, a2, B, N, 1, hd, scale);
    float *hq = dev_download(gq, nq), *hkv = dev_download(gkv, nkv), *hx = dev_download(gx, nx);
    float *split_q = tu_floats(nq), *split_kv = tu_floats(nkv);
    for (size_t t = 0; t < (size_t)B * N; t++) {
        memcpy(split_q + t * hd, hx + t * 3 * hd, hd * sizeof(float));
        memcpy(split_kv + t * 2 * hd, hx + t * 3 * hd + hd, 2 * hd * sizeof(float));
    }
    tu_expect_equal("mq K=1 vs attention H=1: dq", hq, split_q, nq);
    tu_expect_equal("mq K=1 vs attention H=1: dkv", hkv, split_kv, nkv);
}

Test(attention, mq_k1_equals_single_head) {
    check_mq_k1_equals_h1(3, 11, 5, 800);  /* below the threading threshold */
    check_mq_k1_equals_h1(4, 64, 32, 801); /* threaded over images in both ops */
}

/* ---- determinism ------------------------------------------------------------------------- */

Test(attention, deterministic) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(900);
    const int B = 4, N = 96, H = 4, hd = 32;
    size_t nx = (size_t)B * N * 3 * H * hd, no = (size_t)B * N * H * hd, na = (size_t)B * H * N * N;
    float *x = tu_floats(nx), *w = tu_floats(no);
    tu_fill_normal(&r, x, nx, 1.0);
    tu_fill(&r, w, no, -1.0, 1.0);
    ms_act *dx = dev_upload(x, nx), *dw = dev_upload(w, no);
    float *res[2][3]; /* [run][out, att, dqkv] */
    for (int run = 0; run < 2; run++) {
        ms_act *o = dev_nan(no), *a = dev_nan(na), *ws = dev_nan(na), *g = dev_nan(nx);
        be->attention(be, o, a, dx, B, N, H, hd, 0.17f);
        be->attention_bwd(be, g, ws, dw, dx, a, B, N, H, hd, 0.17f);
        res[run][0] = dev_download(o, no);
        res[run][1] = dev_download(a, na);
        res[run][2] = dev_download(g, nx);
    }
    tu_expect_equal("attention out rerun", res[1][0], res[0][0], no);
    tu_expect_equal("attention att rerun", res[1][1], res[0][1], na);
    tu_expect_equal("attention dqkv rerun", res[1][2], res[0][2], nx);
}

Test(attention, mq_deterministic) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(901);
    const int B = 4, N = 80, K = 6, hd = 32;
    size_t nq = (size_t)B * N * K * hd, nkv = (size_t)B * N * 2 * hd, na = (size_t)B * N * K * N;
    float *q = tu_floats(nq), *kv = tu_floats(nkv), *w = tu_floats(nq);
    tu_fill_normal(&r, q, nq, 1.0);
    tu_fill_normal(&r, kv, nkv, 1.0);
    tu_fill(&r, w, nq, -1.0, 1.0);
    ms_act *dq = dev_upload(q, nq), *dkv = dev_upload(kv, nkv), *dw = dev_upload(w, nq);
    float *res[2][4]; /* [run][out, att, dq, dkv] */
    for (int run = 0; run < 2; run++) {
        ms_act *o = dev_nan(nq), *a = dev_nan(na), *ws = dev_nan(na);
        ms_act *gq = dev_nan(nq), *gkv = dev_nan(nkv);
        be->mq_attention(be, o, a, dq, dkv, B, N, K, hd, 0.17f);
        be->mq_attention_bwd(be, gq, gkv, ws, dw, dq, dkv, a, B, N, K, hd, 0.17f);
        res[run][0] = dev_download(o, nq);
        res[run][1] = dev_download(a, na);
        res[run][2] = dev_download(gq, nq);
        res[run][3] = dev_download(gkv, nkv);
    }
    tu_expect_equal("mq_attention out rerun", res[1][0], res[0][0], nq);
    tu_expect_equal("mq_attention att rerun", res[1][1], res[0][1], na);
    tu_expect_equal("mq_attention dq rerun", res[1][2], res[0][2], nq);
    tu_expect_equal("mq_attention dkv rerun", res[1][3], res[0][3], nkv);
}
