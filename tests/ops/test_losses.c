/* Task losses and uncertainty weighting (kernels/cpu/losses.c): forward against naive double
 * references, backward against central finite differences of those references, hand-computed
 * values, the degenerate batches (nothing valid, no positives, no negatives), large logits and
 * determinism. */
#include "../testutil.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COS_EPS 1e-8 /* the norm epsilon of kernels/cpu/losses.c */
#define FD_H 1e-5    /* with compensated sums in the references, FD noise stays ~1e-6 relative */
#define FD_MAX 48    /* sampled gradient entries per check */
#define FWD_TOL 1e-5
#define GRAD_TOL 1e-4
#define DLOSS 1.7f   /* a non-unit upstream gradient */
#define GARBAGE 7.0f /* pre-fill of gradient outputs: the op must overwrite every entry */

/* ---- double references -------------------------------------------------------------------- */

/* Neumaier-compensated sum: a finite difference of a mean over ~1e5 terms would otherwise be
 * swamped by the rounding of the running sum. */
typedef struct {
    double s, c;
} ksum;

static void ksum_add(ksum *a, double v) {
    double t = a->s + v;
    a->c += fabs(a->s) >= fabs(v) ? (a->s - t) + v : (v - t) + a->s;
    a->s = t;
}

static double ksum_get(const ksum *a) { return a->s + a->c; }

typedef struct ref_ctx ref_ctx;
typedef double (*ref_fn)(const ref_ctx *c, const double *x);

struct ref_ctx {
    int B, C, P;
    const double *target;  /* [B, C, P] (L1, MSE, cosine) */
    const uint8_t *valid;  /* [B, P] or NULL */
    const int32_t *labels; /* [B, P] (CE) */
    const uint8_t *bin;    /* [B, P] in {0, 1, 255} (BCE) */
    int ignore;            /* CE ignore index */
    double pos_weight;     /* BCE; < 0: share of negatives */
    ref_fn loss;
    double dloss;
};

static int ref_valid(const ref_ctx *c, int b, int p) {
    return !c->valid || c->valid[(size_t)b * c->P + p];
}

static double ref_regression(const ref_ctx *c, const double *x, int squared) {
    ksum s = {0, 0};
    long n = 0;
    for (int b = 0; b < c->B; b++)
        for (int ch = 0; ch < c->C; ch++)
            for (int p = 0; p < c->P; p++) {
                if (!ref_valid(c, b, p)) continue;
                size_t i = ((size_t)b * c->C + ch) * c->P + p;
                double d = x[i] - c->target[i];
                ksum_add(&s, squared ? d * d : fabs(d));
                n++;
            }
    return n ? ksum_get(&s) / n : 0.0;
}

static double ref_l1(const ref_ctx *c, const double *x) { return ref_regression(c, x, 0); }
static double ref_mse(const ref_ctx *c, const double *x) { return ref_regression(c, x, 1); }

static double ref_cosine(const ref_ctx *c, const double *x) {
    ksum s = {0, 0};
    long n = 0;
    for (int b = 0; b < c->B; b++)
        for (int p = 0; p < c->P; p++) {
            if (!ref_valid(c, b, p)) continue;
            double dot = 0, xx = 0, tt = 0;
            for (int ch = 0; ch < c->C; ch++) {
                size_t i = ((size_t)b * c->C + ch) * c->P + p;
                dot += x[i] * c->target[i], xx += x[i] * x[i], tt += c->target[i] * c->target[i];
            }
            double e2 = COS_EPS * COS_EPS;
            ksum_add(&s, 1.0 - dot / (sqrt(xx + e2) * sqrt(tt + e2)));
            n++;
        }
    return n ? ksum_get(&s) / n : 0.0;
}

/* Cross-entropy written directly as -log(exp(x_label) / sum_c exp(x_c)) (fine in double for
 * the moderate logits the random tests use). */
static double ref_ce(const ref_ctx *c, const double *x) {
    ksum s = {0, 0};
    long n = 0;
    for (int b = 0; b < c->B; b++)
        for (int p = 0; p < c->P; p++) {
            int lab = c->labels[(size_t)b * c->P + p];
            if (lab == c->ignore || lab < 0 || lab >= c->C) continue;
            double z = 0;
            for (int ch = 0; ch < c->C; ch++) z += exp(x[((size_t)b * c->C + ch) * c->P + p]);
            ksum_add(&s, -log(exp(x[((size_t)b * c->C + lab) * c->P + p]) / z));
            n++;
        }
    return n ? ksum_get(&s) / n : 0.0;
}

static double ref_bce(const ref_ctx *c, const double *x) {
    ksum sp = {0, 0}, sn = {0, 0};
    long np = 0, nn = 0;
    for (size_t i = 0; i < (size_t)c->B * c->P; i++) {
        if (c->bin[i] == 255) continue;
        if (c->bin[i])
            ksum_add(&sp, -log(1.0 / (1.0 + exp(-x[i])))), np++;
        else
            ksum_add(&sn, -log(1.0 - 1.0 / (1.0 + exp(-x[i])))), nn++;
    }
    long n = np + nn;
    if (!n) return 0.0;
    double w = c->pos_weight >= 0 ? c->pos_weight : (double)nn / n;
    return (w * ksum_get(&sp) + (1 - w) * ksum_get(&sn)) / n;
}

/* The objective whose gradient the op's backward (fed *dloss = DLOSS) must return. */
static double fd_objective(void *ctx, const double *x) {
    const ref_ctx *c = ctx;
    return c->dloss * c->loss(c, x);
}

/* ---- checking helpers ---------------------------------------------------------------------- */

static void expect_loss(const char *what, float got, double want) {
    tu_expect_close(what, &got, &want, 1, FWD_TOL);
}

/* Compares dx (the op's gradient of DLOSS * loss w.r.t. x, n values) with finite differences
 * of the reference on sampled entries. */
static void expect_grad_fd(const char *what, ref_ctx *c, const float *x, const float *dx, size_t n,
                           tu_rng *r) {
    double *xd = tu_doubles(n), *fd = tu_doubles(FD_MAX);
    size_t *idx = calloc(FD_MAX, sizeof *idx);
    tu_to_double(xd, x, n);
    size_t k = tu_sample_indices(r, n, FD_MAX, idx);
    c->dloss = DLOSS;
    tu_fd_grad(fd_objective, c, xd, n, idx, k, FD_H, fd);
    tu_expect_grad(what, dx, fd, idx, k, GRAD_TOL);
    free(idx);
}

static void fill_garbage(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = GARBAGE;
}

static void expect_all_zero(const char *what, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        cr_assert(x[i] == 0.0f, "%s: entry %zu is %g, want 0", what, i, (double)x[i]);
}

/* ---- L1 / MSE / cosine: pred, target [B, C, P], valid [B, P] --------------------------------- */

typedef void (*masked_fwd)(ms_backend *, float *, const ms_act *, const float *, const uint8_t *,
                           int, int, int);
typedef void (*masked_bwd)(ms_backend *, ms_act *, const float *, const ms_act *, const float *,
                           const uint8_t *, int, int, int);

typedef struct {
    const char *name;
    masked_fwd fwd;
    masked_bwd bwd;
    ref_fn ref;
} masked_loss;

static masked_loss masked_l1(void) {
    return (masked_loss){"L1", tu_cpu()->loss_l1, tu_cpu()->loss_l1_bwd, ref_l1};
}
static masked_loss masked_mse(void) {
    return (masked_loss){"MSE", tu_cpu()->loss_mse, tu_cpu()->loss_mse_bwd, ref_mse};
}
static masked_loss masked_cos(void) {
    return (masked_loss){"cosine", tu_cpu()->loss_cosine, tu_cpu()->loss_cosine_bwd, ref_cosine};
}

/* mask: 0 valid = NULL, 1 random (70% valid), 2 random with image 0 all masked, 3 all masked. */
static void check_masked(masked_loss L, int B, int C, int P, int mask, uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    size_t n = (size_t)B * C * P;
    float *pred = tu_floats(n), *target = tu_floats(n), *dpred = tu_floats(n); /* [B, C, P] */
    tu_fill_normal(&r, pred, n, 1.0);
    tu_fill_normal(&r, target, n, 1.0);
    uint8_t *valid = NULL; /* [B, P] */
    if (mask) {
        valid = tu_bytes((size_t)B * P);
        for (size_t i = 0; i < (size_t)B * P; i++)
            valid[i] = mask == 3 ? 0 : mask == 2 && i < (size_t)P ? 0 : tu_uniform(&r) < 0.7;
    }
    double *td = tu_doubles(n);
    tu_to_double(td, target, n);
    ref_ctx c = {.B = B, .C = C, .P = P, .target = td, .valid = valid, .loss = L.ref};
    double *xd = tu_doubles(n);
    tu_to_double(xd, pred, n);

    char what[128];
    snprintf(what, sizeof what, "%s B=%d C=%d P=%d mask=%d: loss", L.name, B, C, P, mask);
    float loss = -1;
    L.fwd(be, &loss, pred, target, valid, B, C, P);
    expect_loss(what, loss, L.ref(&c, xd));
    if (mask == 3)
        cr_assert(loss == 0.0f, "%s is %g with every pixel masked, want 0", what, (double)loss);

    fill_garbage(dpred, n);
    float dl = DLOSS;
    L.bwd(be, dpred, &dl, pred, target, valid, B, C, P);
    snprintf(what, sizeof what, "%s B=%d C=%d P=%d mask=%d: dpred", L.name, B, C, P, mask);
    for (size_t i = 0; i < n && valid; i++) {
        size_t b = i / ((size_t)C * P), p = i % P;
        if (!valid[b * P + p])
            cr_assert(dpred[i] == 0.0f, "%s: masked entry %zu is %g, want 0", what, i,
                      (double)dpred[i]);
    }
    expect_grad_fd(what, &c, pred, dpred, n, &r);
}

static const int SHAPES[][3] = {{1, 1, 1},   {2, 3, 17},   {3, 1, 64},   {1, 3, 65},
                                {4, 2, 129}, {2, 3, 5000}, {2, 3, 40000}};
#define NSHAPES (int)(sizeof SHAPES / sizeof SHAPES[0])

static void check_masked_all_shapes(masked_loss L, uint64_t seed) {
    for (int s = 0; s < NSHAPES; s++)
        for (int mask = 0; mask <= 2; mask++)
            check_masked(L, SHAPES[s][0], SHAPES[s][1], SHAPES[s][2], mask, seed + 10 * s + mask);
}

Test(losses, l1_random) { check_masked_all_shapes(masked_l1(), 100); }
Test(losses, mse_random) { check_masked_all_shapes(masked_mse(), 200); }
Test(losses, cosine_random) { check_masked_all_shapes(masked_cos(), 300); }

Test(losses, masked_all_pixels_gives_zero) {
    masked_loss losses[3] = {masked_l1(), masked_mse(), masked_cos()};
    for (int l = 0; l < 3; l++) {
        check_masked(losses[l], 2, 3, 17, 3, 400 + l);
        check_masked(losses[l], 1, 3, 40000, 3, 410 + l);
        /* The loss scalar must also be exactly 0 and the gradient exactly 0, checked directly. */
        ms_backend *be = tu_cpu();
        float pred[6] = {1, 2, 3, 4, 5, 6}, target[6] = {0}, dpred[6], loss = -1, dl = DLOSS;
        uint8_t valid[2] = {0, 0};
        losses[l].fwd(be, &loss, pred, target, valid, 1, 3, 2);
        cr_assert(loss == 0.0f, "%s with every pixel masked: %g, want 0", losses[l].name,
                  (double)loss);
        fill_garbage(dpred, 6);
        losses[l].bwd(be, dpred, &dl, pred, target, valid, 1, 3, 2);
        expect_all_zero(losses[l].name, dpred, 6);
    }
}

Test(losses, masked_one_whole_image) {
    masked_loss losses[3] = {masked_l1(), masked_mse(), masked_cos()};
    for (int l = 0; l < 3; l++) check_masked(losses[l], 3, 3, 33, 2, 500 + l);
}

Test(losses, l1_mse_known_values) {
    ms_backend *be = tu_cpu();
    float pred[4] = {1, -2, 3.5f, 0}, target[4] = {0, 1, 3, 0}, dpred[4], loss, dl = 2.0f;
    uint8_t valid[4] = {1, 1, 0, 1};
    be->loss_l1(be, &loss, pred, target, NULL, 1, 1, 4);
    cr_assert_float_eq(loss, 1.125f, 1e-7, "L1 of |1|,|-3|,|0.5|,|0|: %g, want 1.125",
                       (double)loss);
    be->loss_l1(be, &loss, pred, target, valid, 1, 1, 4);
    cr_assert_float_eq(loss, 4.0f / 3.0f, 1e-7, "masked L1: %g, want 4/3", (double)loss);
    be->loss_l1_bwd(be, dpred, &dl, pred, target, valid, 1, 1, 4);
    float want_l1[4] = {2.0f / 3, -2.0f / 3, 0, 0}; /* sign(0) = 0 */
    for (int i = 0; i < 4; i++)
        cr_assert_float_eq(dpred[i], want_l1[i], 1e-7, "L1 grad[%d] = %g, want %g", i,
                           (double)dpred[i], (double)want_l1[i]);
    be->loss_mse(be, &loss, pred, target, NULL, 1, 1, 4);
    cr_assert_float_eq(loss, 2.5625f, 1e-7, "MSE: %g, want (1 + 9 + 0.25) / 4", (double)loss);
    be->loss_mse_bwd(be, dpred, &dl, pred, target, valid, 1, 1, 4);
    float want_mse[4] = {2 * 2 * 1.0f / 3, 2 * 2 * -3.0f / 3, 0, 0};
    for (int i = 0; i < 4; i++)
        cr_assert_float_eq(dpred[i], want_mse[i], 1e-6, "MSE grad[%d] = %g, want %g", i,
                           (double)dpred[i], (double)want_mse[i]);
    /* The pixel mask applies to every channel and the mean is over valid pixels x C. */
    float p2[4] = {1, 5, 2, 7}, t2[4] = {0, 0, 0, 0}; /* [1, 2, 2] */
    uint8_t v2[2] = {1, 0};
    be->loss_l1(be, &loss, p2, t2, v2, 1, 2, 2);
    cr_assert_float_eq(loss, 1.5f, 1e-7, "L1 over channels: %g, want (1 + 2) / 2", (double)loss);
}

Test(losses, cosine_known_values) {
    ms_backend *be = tu_cpu();
    /* [1, 3, 4]: pixel 0 orthogonal (1), 1 opposite (2), 2 parallel and scaled (0), 3 at 60 deg. */
    float pred[12] = {1, -1, 2, 1, 0, 0, 0, 0, 0, 0, 4, 1.7320508f};
    float target[12] = {0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 2, 0};
    float loss;
    be->loss_cosine(be, &loss, pred, target, NULL, 1, 3, 4);
    cr_assert_float_eq(loss, (1 + 2 + 0 + 0.5f) / 4, 1e-6, "cosine: %g, want 0.875", (double)loss);
}

Test(losses, cosine_zero_vectors_stay_finite) {
    ms_backend *be = tu_cpu();
    /* [1, 3, 3]: pixel 0 has a zero prediction, pixel 1 a zero target, pixel 2 is parallel. */
    float pred[9] = {0, 1, 1, 0, 2, 0, 0, 0, 1}, target[9] = {1, 0, 1, 0, 0, 0, 1, 0, 1};
    float loss, dpred[9], dl = DLOSS;
    be->loss_cosine(be, &loss, pred, target, NULL, 1, 3, 3);
    double want = (1.0 + 1.0 + 0.0) / 3;
    expect_loss("cosine with zero vectors", loss, want);
    be->loss_cosine_bwd(be, dpred, &dl, pred, target, NULL, 1, 3, 3);
    for (int i = 0; i < 9; i++) cr_assert(isfinite(dpred[i]), "dpred[%d] is not finite", i);
    for (int c = 0; c < 3; c++)
        cr_assert(dpred[c * 3 + 1] == 0.0f, "a zero target gives no gradient: channel %d is %g", c,
                  (double)dpred[c * 3 + 1]);
}

/* ---- cross-entropy: logits [B, C, P], labels [B, P] ---------------------------------------- */

static void check_ce(int B, int C, int P, int ignore, double ignore_share, uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    size_t n = (size_t)B * C * P;
    float *logits = tu_floats(n), *dlogits = tu_floats(n); /* [B, C, P] */
    int32_t *labels = tu_ints((size_t)B * P);              /* [B, P] */
    tu_fill_normal(&r, logits, n, 2.0);
    int lo = ignore == 0 ? 1 : 0; /* Taskonomy segment_semantic ignores class 0 */
    for (size_t i = 0; i < (size_t)B * P; i++)
        labels[i] = tu_uniform(&r) < ignore_share ? ignore : tu_randint(&r, lo, C - 1);
    ref_ctx c = {.B = B, .C = C, .P = P, .labels = labels, .ignore = ignore, .loss = ref_ce};
    double *xd = tu_doubles(n);
    tu_to_double(xd, logits, n);

    char what[128];
    snprintf(what, sizeof what, "CE B=%d C=%d P=%d ignore=%d: loss", B, C, P, ignore);
    float loss = -1, dl = DLOSS;
    be->loss_ce(be, &loss, logits, labels, ignore, B, C, P);
    expect_loss(what, loss, ref_ce(&c, xd));
    fill_garbage(dlogits, n);
    be->loss_ce_bwd(be, dlogits, &dl, logits, labels, ignore, B, C, P);
    snprintf(what, sizeof what, "CE B=%d C=%d P=%d ignore=%d: dlogits", B, C, P, ignore);
    for (size_t i = 0; i < n; i++) {
        size_t b = i / ((size_t)C * P), p = i % P;
        if (labels[b * P + p] == ignore)
            cr_assert(dlogits[i] == 0.0f, "%s: ignored entry %zu is %g", what, i,
                      (double)dlogits[i]);
    }
    expect_grad_fd(what, &c, logits, dlogits, n, &r);
}

Test(losses, ce_random) {
    static const int shapes[][3] = {{1, 1, 1},  {1, 2, 1},   {2, 21, 17},
                                    {3, 7, 65}, {1, 5, 129}, {2, 5, 40000}};
    for (int s = 0; s < 6; s++) {
        check_ce(shapes[s][0], shapes[s][1], shapes[s][2], 255, 0.2, 600 + s);
        if (shapes[s][1] > 1) check_ce(shapes[s][0], shapes[s][1], shapes[s][2], 0, 0.2, 610 + s);
    }
}

Test(losses, ce_uniform_logits_is_log_C) {
    ms_backend *be = tu_cpu();
    enum { B = 2, C = 21, P = 5 };
    float logits[B * C * P], dlogits[B * C * P], loss, dl = DLOSS;
    int32_t labels[B * P] = {0, 3, 20, 255, 7, 1, 255, 19, 2, 4};
    for (int i = 0; i < B * C * P; i++) logits[i] = 0.25f;
    be->loss_ce(be, &loss, logits, labels, 255, B, C, P);
    cr_assert_float_eq(loss, logf(21.0f), 1e-6, "CE of uniform logits: %g, want log 21",
                       (double)loss);
    /* Gradient: DLOSS / 8 * (1/C - onehot) on the 8 labelled pixels. */
    be->loss_ce_bwd(be, dlogits, &dl, logits, labels, 255, B, C, P);
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++)
            for (int p = 0; p < P; p++) {
                int lab = labels[b * P + p];
                double want = lab == 255 ? 0.0 : DLOSS / 8.0 * (1.0 / C - (c == lab));
                cr_assert_float_eq(dlogits[(b * C + c) * P + p], (float)want, 1e-7,
                                   "dlogits[%d, %d, %d] = %g, want %g", b, c, p,
                                   (double)dlogits[(b * C + c) * P + p], want);
            }
}

Test(losses, ce_all_ignored_gives_zero) {
    ms_backend *be = tu_cpu();
    enum { B = 2, C = 4, P = 3 };
    float logits[B * C * P], dlogits[B * C * P], loss = -1, dl = DLOSS;
    int32_t labels[B * P];
    for (int i = 0; i < B * C * P; i++) logits[i] = (float)(i % 5) - 2;
    for (int i = 0; i < B * P; i++) labels[i] = 255;
    be->loss_ce(be, &loss, logits, labels, 255, B, C, P);
    cr_assert(loss == 0.0f, "CE with every label ignored: %g, want 0", (double)loss);
    fill_garbage(dlogits, B * C * P);
    be->loss_ce_bwd(be, dlogits, &dl, logits, labels, 255, B, C, P);
    expect_all_zero("CE gradient with every label ignored", dlogits, B * C * P);
    /* Labels outside [0, C) are ignored as well (documented in losses.c). */
    for (int i = 0; i < B * P; i++) labels[i] = i % 2 ? -1 : C;
    be->loss_ce(be, &loss, logits, labels, 255, B, C, P);
    cr_assert(loss == 0.0f, "CE with only out-of-range labels: %g, want 0", (double)loss);
}

Test(losses, ce_large_logits) {
    ms_backend *be = tu_cpu();
    enum { C = 3, P = 2 };
    /* pixel 0: label 0 at +80, others -80 (loss ~ 2 e^-160); pixel 1: label 0 at -80, class 2 at
     * +80 (loss ~ 160). */
    float logits[C * P] = {80, -80, -80, -80, -80, 80}, dlogits[C * P], loss, dl = DLOSS;
    int32_t labels[P] = {0, 0};
    be->loss_ce(be, &loss, logits, labels, 255, 1, C, P);
    cr_assert_float_eq(loss, 80.0f, 1e-4, "CE at |x| = 80: %g, want (0 + 160) / 2", (double)loss);
    be->loss_ce_bwd(be, dlogits, &dl, logits, labels, 255, 1, C, P);
    float want[C * P] = {0, -DLOSS / 2, 0, 0, 0, DLOSS / 2};
    for (int i = 0; i < C * P; i++)
        cr_assert_float_eq(dlogits[i], want[i], 1e-6, "dlogits[%d] = %g, want %g", i,
                           (double)dlogits[i], (double)want[i]);
}

/* ---- balanced BCE: logits, labels [B, P] --------------------------------------------------- */

/* kind: 0 random {0, 1, 255}; 1 no positives; 2 no negatives; 3 everything ignored. */
static void check_bce(int B, int P, float pos_weight, int kind, uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    size_t n = (size_t)B * P;
    float *logits = tu_floats(n), *dlogits = tu_floats(n); /* [B, P] */
    uint8_t *labels = tu_bytes(n);                         /* [B, P] */
    tu_fill_normal(&r, logits, n, 2.0);
    for (size_t i = 0; i < n; i++) {
        double u = tu_uniform(&r);
        uint8_t present = kind == 1 ? 0 : kind == 2 ? 1 : u < 0.3;
        labels[i] = kind == 3 || u > 0.85 ? 255 : present;
    }
    ref_ctx c = {.B = B, .P = P, .bin = labels, .pos_weight = pos_weight, .loss = ref_bce};
    double *xd = tu_doubles(n);
    tu_to_double(xd, logits, n);

    char what[128];
    snprintf(what, sizeof what, "BCE B=%d P=%d w=%g kind=%d: loss", B, P, (double)pos_weight, kind);
    float loss = -1, dl = DLOSS;
    be->loss_bce_balanced(be, &loss, logits, labels, pos_weight, B, P);
    expect_loss(what, loss, ref_bce(&c, xd));
    int degenerate = kind == 3 || (pos_weight < 0 && kind != 0);
    if (degenerate) cr_assert(loss == 0.0f, "%s is %g, want exactly 0", what, (double)loss);
    fill_garbage(dlogits, n);
    be->loss_bce_balanced_bwd(be, dlogits, &dl, logits, labels, pos_weight, B, P);
    snprintf(what, sizeof what, "BCE B=%d P=%d w=%g kind=%d: dlogits", B, P, (double)pos_weight,
             kind);
    if (degenerate) expect_all_zero(what, dlogits, n);
    for (size_t i = 0; i < n; i++)
        if (labels[i] == 255)
            cr_assert(dlogits[i] == 0.0f, "%s: ignored entry %zu is %g", what, i,
                      (double)dlogits[i]);
    expect_grad_fd(what, &c, logits, dlogits, n, &r);
}

Test(losses, bce_random) {
    static const int shapes[][2] = {{1, 1}, {2, 17}, {3, 65}, {1, 4097}, {4, 30000}};
    for (int s = 0; s < 5; s++) {
        check_bce(shapes[s][0], shapes[s][1], -1.0f, 0, 700 + s);
        check_bce(shapes[s][0], shapes[s][1], 0.95f, 0, 710 + s);
    }
}

Test(losses, bce_degenerate_batches) {
    for (int kind = 1; kind <= 3; kind++) {
        check_bce(2, 33, -1.0f, kind, 720 + kind); /* automatic weight: loss and grad exactly 0 */
        check_bce(2, 33, 0.95f, kind,
                  730 + kind); /* fixed weight: a regular loss (0 if all ignored) */
    }
}

Test(losses, bce_known_values) {
    ms_backend *be = tu_cpu();
    float logits[4] = {2.0f, -1.0f, 0.5f, 3.0f}, loss;
    uint8_t labels[4] = {1, 0, 255, 0};
    /* 1 positive, 2 negatives: automatic w = 2/3. */
    double sp = log1p(exp(-2.0)), sn = log1p(exp(-1.0)) + log1p(exp(3.0));
    be->loss_bce_balanced(be, &loss, logits, labels, -1.0f, 1, 4);
    expect_loss("BCE automatic weight", loss, (2.0 / 3 * sp + 1.0 / 3 * sn) / 3);
    be->loss_bce_balanced(be, &loss, logits, labels, 0.95f, 1, 4);
    expect_loss("BCE pos_weight 0.95", loss, ((double)0.95f * sp + (1 - (double)0.95f) * sn) / 3);
}

Test(losses, bce_large_logits) {
    ms_backend *be = tu_cpu();
    /* Confidently wrong at |x| = 80 costs 80 per pixel; confidently right costs ~e^-80. */
    float logits[4] = {-80, 80, 80, -80}, dlogits[4], loss, dl = DLOSS;
    uint8_t labels[4] = {1, 0, 1, 0};
    be->loss_bce_balanced(be, &loss, logits, labels, 0.95f, 1, 4);
    expect_loss("BCE at |x| = 80", loss, (0.95 * 80 + 0.05 * 80) / 4);
    be->loss_bce_balanced_bwd(be, dlogits, &dl, logits, labels, 0.95f, 1, 4);
    float want[4] = {-DLOSS / 4 * 0.95f, DLOSS / 4 * 0.05f, 0, 0};
    for (int i = 0; i < 4; i++)
        cr_assert_float_eq(dlogits[i], want[i], 1e-6, "dlogits[%d] = %g, want %g", i,
                           (double)dlogits[i], (double)want[i]);
}

/* ---- determinism ----------------------------------------------------------------------------- */

/* Runs every loss forward and backward on inputs large enough to be threaded; out receives the
 * losses followed by all gradients. */
static size_t run_all_losses(float *out) {
    ms_backend *be = tu_cpu();
    enum { B = 2, C = 5, P = 40000, N = B * C * P };
    static float pred[N], target[N], logits2[B * P];
    static uint8_t valid[B * P], bin[B * P];
    static int32_t labels[B * P];
    tu_rng r = tu_seed(900);
    tu_fill_normal(&r, pred, N, 1.0);
    tu_fill_normal(&r, target, N, 1.0);
    tu_fill_normal(&r, logits2, B * P, 2.0);
    for (int i = 0; i < B * P; i++) {
        valid[i] = tu_uniform(&r) < 0.8;
        bin[i] = tu_uniform(&r) < 0.1 ? 255 : tu_uniform(&r) < 0.2;
        labels[i] = tu_uniform(&r) < 0.1 ? 255 : tu_randint(&r, 0, C - 1);
    }
    float dl = DLOSS;
    size_t k = 0;
    be->loss_l1(be, out + k++, pred, target, valid, B, C, P);
    be->loss_mse(be, out + k++, pred, target, valid, B, C, P);
    be->loss_cosine(be, out + k++, pred, target, valid, B, C, P);
    be->loss_ce(be, out + k++, pred, labels, 255, B, C, P);
    be->loss_bce_balanced(be, out + k++, logits2, bin, -1.0f, B, P);
    be->loss_l1_bwd(be, out + k, &dl, pred, target, valid, B, C, P), k += N;
    be->loss_mse_bwd(be, out + k, &dl, pred, target, valid, B, C, P), k += N;
    be->loss_cosine_bwd(be, out + k, &dl, pred, target, valid, B, C, P), k += N;
    be->loss_ce_bwd(be, out + k, &dl, pred, labels, 255, B, C, P), k += N;
    be->loss_bce_balanced_bwd(be, out + k, &dl, logits2, bin, -1.0f, B, P), k += B * P;
    return k;
}

Test(losses, deterministic_across_runs_and_thread_counts) {
    size_t cap = 5 + 4 * 400000 + 80000;
    float *a = tu_floats(cap), *b = tu_floats(cap), *c = tu_floats(cap);
    size_t n = run_all_losses(a);
    cr_assert(n <= cap, "output buffer too small: %zu > %zu", n, cap);
    run_all_losses(b);
    tu_expect_equal("losses and gradients, two runs", a, b, n);
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    run_all_losses(c);
    omp_set_num_threads(threads);
    tu_expect_equal("losses and gradients, 1 thread vs default", a, c, n);
}

/* ---- uncertainty weighting ------------------------------------------------------------------ */

typedef struct {
    int T;
    const double *other; /* the fixed L (when differentiating s) or s (when differentiating L) */
    int wrt_s;
} uw_ctx;

static double ref_uw(void *ctx, const double *x) {
    const uw_ctx *u = ctx;
    double total = 0;
    for (int t = 0; t < u->T; t++) {
        double s = u->wrt_s ? x[t] : u->other[t], L = u->wrt_s ? u->other[t] : x[t];
        total += 0.5 / (s * s) * L + log(1 + s * s);
    }
    return total;
}

Test(uncertainty, known_values) {
    ms_backend *be = tu_cpu();
    float L[2] = {1.0f, 2.0f}, s[2] = {1.0f, 2.0f}, dL[2] = {GARBAGE, GARBAGE},
          ds[2] = {0.1f, -0.2f};
    float total;
    be->uncertainty_weighting(be, &total, dL, ds, L, s, 2);
    /* 0.5 * 1 + log 2 + 0.125 * 2 + log 5 */
    cr_assert_float_eq(total, (float)(0.75 + log(10.0)), 1e-6, "total %g, want 0.75 + log 10",
                       (double)total);
    cr_assert_float_eq(dL[0], 0.5f, 1e-7, "dL[0] = %g, want 0.5 (written)", (double)dL[0]);
    cr_assert_float_eq(dL[1], 0.125f, 1e-7, "dL[1] = %g, want 0.125", (double)dL[1]);
    /* ds: -L/s^3 + 2s/(1+s^2) = 0 and -0.25 + 0.8, added to the initial 0.1 and -0.2. */
    cr_assert_float_eq(ds[0], 0.1f, 1e-7, "ds[0] = %g, want 0.1 + 0", (double)ds[0]);
    cr_assert_float_eq(ds[1], 0.35f, 1e-6, "ds[1] = %g, want -0.2 + 0.55", (double)ds[1]);
}

Test(uncertainty, finite_differences) {
    ms_backend *be = tu_cpu();
    enum { T = 7 };
    tu_rng r = tu_seed(1000);
    float L[T], s[T], dL[T], ds[T], ds0[T], total;
    tu_fill(&r, L, T, 0.01, 3.0);
    tu_fill(&r, s, T, 0.3, 2.5);
    tu_fill(&r, ds0, T, -1.0, 1.0);
    memcpy(ds, ds0, sizeof ds);
    fill_garbage(dL, T);
    be->uncertainty_weighting(be, &total, dL, ds, L, s, T);
    double Ld[T], sd[T], fd[T];
    tu_to_double(Ld, L, T);
    tu_to_double(sd, s, T);
    uw_ctx cs = {T, Ld, 1}, cl = {T, sd, 0};
    expect_loss("uncertainty total", total, ref_uw(&cs, sd));
    float ds_new[T];
    for (int t = 0; t < T; t++) ds_new[t] = ds[t] - ds0[t];
    tu_fd_grad(ref_uw, &cs, sd, T, NULL, T, 1e-6, fd);
    tu_expect_grad("uncertainty ds (accumulated part)", ds_new, fd, NULL, T, 1e-5);
    tu_fd_grad(ref_uw, &cl, Ld, T, NULL, T, 1e-6, fd);
    tu_expect_grad("uncertainty dL", dL, fd, NULL, T, 1e-6);
}

/* ---- fixed task weights ---------------------------------------------------------------------- */

Test(weighted_sum, known_values) {
    ms_backend *be = tu_cpu();
    float L[3] = {0.5f, 2.0f, 4.0f}, w[3] = {1.0f, 2.0f, 50.0f}, total = -1;
    be->loss_weighted_sum(be, &total, L, w, 3);
    cr_assert_float_eq(total, 204.5f, 1e-5, "weighted sum %g, want 0.5 + 4 + 200", (double)total);
    be->loss_weighted_sum(be, &total, L, w, 1);
    cr_assert_float_eq(total, 0.5f, 1e-7, "one task: %g, want 0.5", (double)total);
}

/* ---- L2 normalisation over channels ---------------------------------------------------------- */

#define L2_EPS 1e-12f

typedef struct {
    int B, C, P;
    const double *w; /* [B, C, P] weights of the objective sum(w .* y) */
} l2_ctx;

static void ref_l2(const l2_ctx *c, const double *x, double *y) {
    for (int b = 0; b < c->B; b++)
        for (int p = 0; p < c->P; p++) {
            double n = 0;
            for (int ch = 0; ch < c->C; ch++) {
                double v = x[((size_t)b * c->C + ch) * c->P + p];
                n += v * v;
            }
            n = sqrt(n);
            for (int ch = 0; ch < c->C; ch++) {
                size_t i = ((size_t)b * c->C + ch) * c->P + p;
                y[i] = x[i] / (n + (double)L2_EPS);
            }
        }
}

static double l2_objective(void *ctx, const double *x) {
    const l2_ctx *c = ctx;
    size_t n = (size_t)c->B * c->C * c->P;
    double *y = malloc(n * sizeof *y), s = 0;
    ref_l2(c, x, y);
    for (size_t i = 0; i < n; i++) s += c->w[i] * y[i];
    free(y);
    return s;
}

static void check_l2(int B, int C, int P, uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    size_t n = (size_t)B * C * P;
    float *x = tu_floats(n), *y = tu_floats(n), *dy = tu_floats(n), *dx = tu_floats(n);
    tu_fill_normal(&r, x, n, 1.5);
    tu_fill_normal(&r, dy, n, 1.0);
    double *xd = tu_doubles(n), *wd = tu_doubles(n), *yd = tu_doubles(n);
    tu_to_double(xd, x, n);
    tu_to_double(wd, dy, n);
    l2_ctx c = {B, C, P, wd};
    ref_l2(&c, xd, yd);
    char what[96];
    snprintf(what, sizeof what, "l2_normalize B=%d C=%d P=%d: y", B, C, P);
    fill_garbage(y, n);
    be->l2_normalize(be, y, x, B, C, P, L2_EPS);
    tu_expect_close(what, y, yd, n, FWD_TOL);
    fill_garbage(dx, n);
    be->l2_normalize_bwd(be, dx, dy, x, B, C, P, L2_EPS);
    snprintf(what, sizeof what, "l2_normalize B=%d C=%d P=%d: dx", B, C, P);
    double *fd = tu_doubles(FD_MAX);
    size_t idx[FD_MAX];
    size_t k = tu_sample_indices(&r, n, FD_MAX, idx);
    tu_fd_grad(l2_objective, &c, xd, n, idx, k, 1e-6, fd);
    tu_expect_grad(what, dx, fd, idx, k, GRAD_TOL);
}

Test(l2_normalize, random_shapes) {
    static const int shapes[][3] = {{1, 1, 1}, {2, 3, 17}, {1, 3, 65}, {3, 2, 129}, {2, 3, 20000}};
    for (int s = 0; s < 5; s++) check_l2(shapes[s][0], shapes[s][1], shapes[s][2], 1100 + s);
}

Test(l2_normalize, known_values_and_zero_vector) {
    ms_backend *be = tu_cpu();
    /* [1, 3, 2]: pixel 0 = (3, 0, 4) has norm 5; pixel 1 is the zero vector. */
    float x[6] = {3, 0, 0, 0, 4, 0}, y[6], dy[6] = {1, 2, 3, 4, 5, 6}, dx[6];
    be->l2_normalize(be, y, x, 1, 3, 2, L2_EPS);
    float want[6] = {0.6f, 0, 0, 0, 0.8f, 0};
    for (int i = 0; i < 6; i++)
        cr_assert_float_eq(y[i], want[i], 1e-7, "y[%d] = %g, want %g", i, (double)y[i],
                           (double)want[i]);
    be->l2_normalize_bwd(be, dx, dy, x, 1, 3, 2, L2_EPS);
    /* Pixel 0: (dy - y (y . dy)) / 5 with y . dy = 0.6 + 4 = 4.6; pixel 1: dy / eps. */
    double g0[3] = {(1 - 0.6 * 4.6) / 5, 3.0 / 5, (5 - 0.8 * 4.6) / 5};
    for (int c = 0; c < 3; c++) {
        cr_assert_float_eq(dx[2 * c], (float)g0[c], 1e-6, "dx[%d, 0] = %g, want %g", c,
                           (double)dx[2 * c], g0[c]);
        double g1 = dy[2 * c + 1] / (double)L2_EPS;
        cr_assert(fabs(dx[2 * c + 1] - g1) <= 1e-6 * g1, "dx[%d, 1] = %g, want dy / eps = %g", c,
                  (double)dx[2 * c + 1], g1);
    }
}

Test(l2_normalize, deterministic_across_thread_counts) {
    ms_backend *be = tu_cpu();
    enum { B = 2, C = 3, P = 30000, N = B * C * P };
    float *x = tu_floats(N), *dy = tu_floats(N), *a = tu_floats(2 * N), *b = tu_floats(2 * N);
    tu_rng r = tu_seed(1200);
    tu_fill_normal(&r, x, N, 1.0);
    tu_fill_normal(&r, dy, N, 1.0);
    be->l2_normalize(be, a, x, B, C, P, L2_EPS);
    be->l2_normalize_bwd(be, a + N, dy, x, B, C, P, L2_EPS);
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    be->l2_normalize(be, b, x, B, C, P, L2_EPS);
    be->l2_normalize_bwd(be, b + N, dy, x, B, C, P, L2_EPS);
    omp_set_num_threads(threads);
    tu_expect_equal("l2_normalize forward and backward, 1 thread vs default", a, b, 2 * N);
}
