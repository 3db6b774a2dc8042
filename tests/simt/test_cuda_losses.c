/* The CUDA task losses (kernels/cuda/losses.cu) run by the emulator against the CPU ops, with
 * fp32 and bf16 activations: forward losses (device scalars) and backward gradients (scaled by
 * a device dloss), masks that keep some, all or no pixels, labels that are ignored or out of
 * range, a single pixel, C = 1, sizes that do not fill a block, and shapes large enough that the
 * reduction grids loop (more than RED_MAX_BLOCKS x 256 work items, more than 1024 images).
 *
 * Tolerances (harness.h): a loss is an fp32 scalar that both sides sum in double from the same
 * (bf16-rounded) inputs, so SIM_TOL_F32 for both activation types; gradients are activations,
 * sim_tol (the bf16 result is rounded once more). A loss or gradient over no valid element must
 * be exactly 0. */
#include "harness.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define DT(dt) ((dt) == MS_BF16 ? "bf16" : "fp32")
#define DLOSS 0.37f /* dTotal/dLoss fed to every backward, from a device scalar */

enum { MASK_NONE, MASK_SOME, MASK_ALL }; /* valid == NULL; ~70 % valid; nothing valid */

/* Random activations of be's precision (bf16-rounded for bf16, so the CPU sees the same). */
static float *acts(ms_backend *be, tu_rng *r, size_t n, double lo, double hi) {
    float *x = tu_floats(n);
    tu_fill(r, x, n, lo, hi);
    sim_round_like(be, x, n);
    return x;
}

static uint8_t *mask_of(tu_rng *r, size_t n, int mode) {
    if (mode == MASK_NONE) return NULL;
    uint8_t *m = tu_bytes(n);
    for (size_t i = 0; i < n; i++) m[i] = mode == MASK_SOME && tu_uniform(r) < 0.7;
    return m;
}

/* A device copy of n bytes (NULL stays NULL). */
static void *bytes_dev(ms_backend *be, const void *host, size_t n) {
    if (!host) return NULL;
    void *d = sim_garbage(be, n);
    be->upload(be, d, host, n);
    return d;
}

static void expect_zeros(const char *what, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        cr_assert(x[i] == 0.0f, "%s: [%zu] is %g, want 0 (nothing valid)", what, i, (double)x[i]);
}

/* The device loss scalar against the CPU's (exactly 0 when nothing is valid). */
static void expect_loss(const char *what, ms_backend *be, const float *dloss_dev, float ref,
                        int none_valid) {
    float *got = sim_get_f32(be, dloss_dev, 1);
    if (none_valid) {
        expect_zeros(what, got, 1);
        cr_assert(ref == 0.0f, "%s: the CPU loss is %g with nothing valid", what, (double)ref);
    } else {
        sim_expect_close(what, got, &ref, 1, SIM_TOL_F32);
    }
}

/* ---- L1, MSE, cosine: pred[B, C, P] against target with a pixel mask ------------------------- */

enum { LOSS_L1, LOSS_MSE, LOSS_COSINE };
static const char *const masked_name[] = {"l1", "mse", "cosine"};

typedef void (*masked_loss_fn)(ms_backend *, float *, const ms_act *, const float *,
                               const uint8_t *, int, int, int);
typedef void (*masked_bwd_fn)(ms_backend *, ms_act *, const float *, const ms_act *, const float *,
                              const uint8_t *, int, int, int);

static masked_loss_fn masked_fwd(ms_backend *be, int kind) {
    return kind == LOSS_L1 ? be->loss_l1 : kind == LOSS_MSE ? be->loss_mse : be->loss_cosine;
}
static masked_bwd_fn masked_bwd(ms_backend *be, int kind) {
    return kind == LOSS_L1    ? be->loss_l1_bwd
           : kind == LOSS_MSE ? be->loss_mse_bwd
                              : be->loss_cosine_bwd;
}

/* zeros: for the cosine, a zero prediction at pixel 0 and a zero target at pixel 1 (the
 * gradient at a zero prediction is ~1/COS_EPS, so it gets a case of its own). */
static void check_masked(int kind, ms_dtype dt, int B, int C, int P, int mask, int zeros,
                         uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(dt);
    tu_rng r = tu_seed(seed);
    size_t n = (size_t)B * C * P, npix = (size_t)B * P;
    float *pred = acts(be, &r, n, -2, 2), *target = tu_floats(n);
    tu_fill(&r, target, n, -2, 2);
    if (kind == LOSS_MSE || kind == LOSS_L1)
        for (size_t i = 0; i < n; i += 7) target[i] = pred[i]; /* d = 0: L1's sign is 0 there */
    if (zeros && npix >= 2)
        for (int c = 0; c < C; c++) {
            pred[(size_t)c * P] = 0.0f;
            target[((size_t)(1 / P) * C + c) * P + 1 % P] = 0.0f;
        }
    uint8_t *valid = mask_of(&r, npix, mask);
    char what[128];
    snprintf(what, sizeof what, "%s %s B %d C %d P %d mask %d", masked_name[kind], DT(dt), B, C, P,
             mask);

    float loss;
    masked_fwd(cpu, kind)(cpu, &loss, pred, target, valid, B, C, P);
    void *dpred = sim_act(be, pred, n);
    float *dtarget = sim_f32(be, target, n), *dl = sim_garbage(be, 4);
    const uint8_t *dvalid = bytes_dev(be, valid, npix);
    masked_fwd(be, kind)(be, dl, dpred, dtarget, dvalid, B, C, P);
    expect_loss(what, be, dl, loss, mask == MASK_ALL);

    float dloss = DLOSS, *ref = tu_floats(n);
    masked_bwd(cpu, kind)(cpu, ref, &dloss, pred, target, valid, B, C, P);
    void *dx = sim_garbage(be, n * be->act_size);
    masked_bwd(be, kind)(be, dx, sim_f32(be, &dloss, 1), dpred, dtarget, dvalid, B, C, P);
    float *got = sim_get_act(be, dx, n);
    strncat(what, ": gradient", sizeof what - strlen(what) - 1);
    if (mask == MASK_ALL) {
        expect_zeros(what, got, n);
    } else if (kind == LOSS_COSINE && C == 1) {
        /* cos of two scalars is their sign's product: the gradient is 0 up to rounding */
        for (size_t i = 0; i < n; i++)
            cr_assert(fabsf(got[i]) < 1e-9f && fabsf(ref[i]) < 1e-9f, "%s: [%zu] %g (CPU %g)", what,
                      i, (double)got[i], (double)ref[i]);
    } else {
        sim_expect_close(what, got, ref, n, sim_tol(be));
    }
    sim_free_all();
}

static void masked_cases(int kind, ms_dtype dt) {
    uint64_t s = 1000 * (uint64_t)kind + 100 * (uint64_t)dt;
    for (int mask = MASK_NONE; mask <= MASK_ALL; mask++) {
        check_masked(kind, dt, 1, 1, 1, mask, 0, s + 1);    /* a single pixel */
        check_masked(kind, dt, 2, 3, 257, mask, 0, s + 2);  /* P not a multiple of the block */
        check_masked(kind, dt, 3, 1, 1000, mask, 0, s + 3); /* C = 1 */
    }
    check_masked(kind, dt, 5, 300, 1, MASK_NONE, 0, s + 4); /* P = 1, the classification heads */
    check_masked(kind, dt, 5, 300, 1, MASK_SOME, 0, s + 5);
    check_masked(kind, dt, 1, 3, 2, MASK_NONE, 1, s + 6); /* zero vectors (cosine: COS_EPS) */
}

Test(cuda_losses, l1_fp32) { masked_cases(LOSS_L1, MS_F32); }
Test(cuda_losses, l1_bf16) { masked_cases(LOSS_L1, MS_BF16); }
Test(cuda_losses, mse_fp32) { masked_cases(LOSS_MSE, MS_F32); }
Test(cuda_losses, mse_bf16) { masked_cases(LOSS_MSE, MS_BF16); }
Test(cuda_losses, cosine_fp32) { masked_cases(LOSS_COSINE, MS_F32); }
Test(cuda_losses, cosine_bf16) { masked_cases(LOSS_COSINE, MS_BF16); }

/* ---- cross-entropy --------------------------------------------------------------------------- */

#define IGNORE 255

/* Labels of [B, P]: classes in [0, C), with `ignored` (0..1) of them IGNORE or out of range. */
static int32_t *labels_of(tu_rng *r, size_t n, int C, double ignored) {
    int32_t *lab = tu_ints(n);
    for (size_t i = 0; i < n; i++) {
        if (tu_uniform(r) < ignored) {
            int k = tu_randint(r, 0, 2); /* ignore_index, -1 and C are all left out */
            lab[i] = k == 0 ? IGNORE : k == 1 ? -1 : C;
        } else {
            lab[i] = tu_randint(r, 0, C - 1);
        }
    }
    return lab;
}

static void check_ce(ms_dtype dt, int B, int C, int P, double ignored, uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(dt);
    tu_rng r = tu_seed(seed);
    size_t n = (size_t)B * C * P, npix = (size_t)B * P;
    float *logits = acts(be, &r, n, -8, 8);
    int32_t *lab = labels_of(&r, npix, C, ignored);
    char what[128];
    snprintf(what, sizeof what, "ce %s B %d C %d P %d ignored %.1f", DT(dt), B, C, P, ignored);

    float loss;
    cpu->loss_ce(cpu, &loss, logits, lab, IGNORE, B, C, P);
    void *dlogits = sim_act(be, logits, n);
    int32_t *dlab = sim_i32(be, lab, npix);
    float *dl = sim_garbage(be, 4);
    be->loss_ce(be, dl, dlogits, dlab, IGNORE, B, C, P);
    expect_loss(what, be, dl, loss, ignored >= 1.0);

    float dloss = DLOSS, *ref = tu_floats(n);
    cpu->loss_ce_bwd(cpu, ref, &dloss, logits, lab, IGNORE, B, C, P);
    void *dx = sim_garbage(be, n * be->act_size);
    be->loss_ce_bwd(be, dx, sim_f32(be, &dloss, 1), dlogits, dlab, IGNORE, B, C, P);
    float *got = sim_get_act(be, dx, n);
    strncat(what, ": gradient", sizeof what - strlen(what) - 1);
    if (ignored >= 1.0)
        expect_zeros(what, got, n);
    else
        sim_expect_close(what, got, ref, n, sim_tol(be));
    sim_free_all();
}

static void ce_cases(ms_dtype dt) {
    uint64_t s = 200 + 10 * (uint64_t)dt;
    check_ce(dt, 1, 1, 1, 0.0, s + 1);    /* one pixel, one class: loss 0, gradient 0 */
    check_ce(dt, 1, 5, 1, 0.0, s + 2);    /* one pixel */
    check_ce(dt, 2, 21, 300, 0.2, s + 3); /* semseg classes */
    check_ce(dt, 3, 7, 1000, 0.5, s + 4); /* human parts */
    check_ce(dt, 2, 7, 130, 1.0, s + 5);  /* every label ignored */
}

Test(cuda_losses, ce_fp32) { ce_cases(MS_F32); }
Test(cuda_losses, ce_bf16) { ce_cases(MS_BF16); }

/* ---- balanced BCE ---------------------------------------------------------------------------- */

/* Labels of [n]: 0 negative, 1 or 7 positive (any non-zero but 255), 255 ignored. pos_share and
 * ignored (0..1) set the mix. */
static uint8_t *bce_labels(tu_rng *r, size_t n, double pos_share, double ignored) {
    uint8_t *lab = tu_bytes(n);
    for (size_t i = 0; i < n; i++) {
        if (tu_uniform(r) < ignored)
            lab[i] = 255;
        else
            lab[i] = tu_uniform(r) < pos_share ? (tu_uniform(r) < 0.5 ? 1 : 7) : 0;
    }
    return lab;
}

static void check_bce(ms_dtype dt, int B, int P, float pos_weight, double pos_share, double ignored,
                      uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(dt);
    tu_rng r = tu_seed(seed);
    size_t n = (size_t)B * P;
    float *logits = acts(be, &r, n, -30, 30); /* beyond the exp range of a naive softplus */
    uint8_t *lab = bce_labels(&r, n, pos_share, ignored);
    char what[128];
    snprintf(what, sizeof what, "bce %s B %d P %d pos_weight %g pos %.2f ignored %.1f", DT(dt), B,
             P, (double)pos_weight, pos_share, ignored);

    float loss;
    cpu->loss_bce_balanced(cpu, &loss, logits, lab, pos_weight, B, P);
    void *dlogits = sim_act(be, logits, n);
    const uint8_t *dlab = bytes_dev(be, lab, n);
    float *dl = sim_garbage(be, 4);
    be->loss_bce_balanced(be, dl, dlogits, dlab, pos_weight, B, P);
    expect_loss(what, be, dl, loss, ignored >= 1.0);

    float dloss = DLOSS, *ref = tu_floats(n);
    cpu->loss_bce_balanced_bwd(cpu, ref, &dloss, logits, lab, pos_weight, B, P);
    void *dx = sim_garbage(be, n * be->act_size);
    be->loss_bce_balanced_bwd(be, dx, sim_f32(be, &dloss, 1), dlogits, dlab, pos_weight, B, P);
    float *got = sim_get_act(be, dx, n);
    strncat(what, ": gradient", sizeof what - strlen(what) - 1);
    if (ignored >= 1.0)
        expect_zeros(what, got, n);
    else
        sim_expect_close(what, got, ref, n, sim_tol(be));
    sim_free_all();
}

static void bce_cases(ms_dtype dt) {
    uint64_t s = 300 + 10 * (uint64_t)dt;
    check_bce(dt, 1, 1, -1.0f, 0.5, 0.0, s + 1);    /* a single pixel */
    check_bce(dt, 2, 300, -1.0f, 0.1, 0.1, s + 2);  /* saliency: automatic weight */
    check_bce(dt, 3, 999, 0.95f, 0.05, 0.2, s + 3); /* edges: fixed weight 0.95 */
    check_bce(dt, 2, 100, 0.0f, 0.5, 0.0, s + 4);   /* weight 0: negatives only */
    check_bce(dt, 2, 100, -1.0f, 1.0, 0.3, s + 5);  /* all positive: automatic weight 0 */
    check_bce(dt, 2, 100, -1.0f, 0.5, 1.0, s + 6);  /* every pixel ignored */
}

Test(cuda_losses, bce_fp32) { bce_cases(MS_F32); }
Test(cuda_losses, bce_bf16) { bce_cases(MS_BF16); }

/* Reduction grids that loop (each launch of RED_MAX_BLOCKS x 256 emulated threads costs seconds,
 * so one case each): 8 x 33000 pixels are more than the 8 x 128 blocks of the per-image grid
 * cover and, as 264000 mask bytes, more than the counting grid; 1030 images are more rows than
 * the 1024 blocks allow. */
Test(cuda_losses, grids_that_loop) {
    check_masked(LOSS_L1, MS_F32, 8, 1, 33000, MASK_SOME, 0, 51);
    check_ce(MS_F32, 1030, 2, 1, 0.3, 52);
}

/* ---- empty inputs and determinism ------------------------------------------------------------ */

/* A loss over no elements writes 0 (it must not leave the scalar as it was). */
Test(cuda_losses, empty_inputs_give_zero) {
    ms_backend *be = sim_cuda(MS_F32);
    float *dl = sim_garbage(be, 4), *t = sim_f32(be, (float[]){0}, 1);
    void *x = sim_act(be, (float[]){0}, 1);
    int32_t *lab = sim_i32(be, (int32_t[]){0}, 1);
    be->loss_l1(be, dl, x, t, NULL, 0, 3, 5);
    expect_zeros("loss_l1 B 0", sim_get_f32(be, dl, 1), 1);
    be->upload(be, dl, (float[]){NAN}, 4);
    be->loss_ce(be, dl, x, lab, IGNORE, 2, 4, 0);
    expect_zeros("loss_ce P 0", sim_get_f32(be, dl, 1), 1);
    be->upload(be, dl, (float[]){NAN}, 4);
    be->loss_bce_balanced(be, dl, x, (const uint8_t *)lab, 0.5f, 0, 9);
    expect_zeros("loss_bce_balanced B 0", sim_get_f32(be, dl, 1), 1);
    sim_free_all();
}

/* The same inputs give bit-identical losses and gradients (the grids depend on the shape only). */
Test(cuda_losses, deterministic) {
    ms_backend *be = sim_cuda(MS_F32);
    tu_rng r = tu_seed(400);
    int B = 3, C = 7, P = 700;
    size_t n = (size_t)B * C * P, npix = (size_t)B * P;
    float *logits = acts(be, &r, n, -5, 5);
    int32_t *lab = labels_of(&r, npix, C, 0.2);
    void *dlogits = sim_act(be, logits, n);
    int32_t *dlab = sim_i32(be, lab, npix);
    float *l1 = sim_garbage(be, 4), *l2 = sim_garbage(be, 4), dloss = DLOSS;
    void *g1 = sim_garbage(be, n * 4), *g2 = sim_garbage(be, n * 4);
    float *ddl = sim_f32(be, &dloss, 1);
    for (int k = 0; k < 2; k++) {
        be->loss_ce(be, k ? l2 : l1, dlogits, dlab, IGNORE, B, C, P);
        be->loss_ce_bwd(be, k ? g2 : g1, ddl, dlogits, dlab, IGNORE, B, C, P);
    }
    tu_expect_equal("loss_ce twice", sim_get_f32(be, l2, 1), sim_get_f32(be, l1, 1), 1);
    tu_expect_equal("loss_ce_bwd twice", sim_get_act(be, g2, n), sim_get_act(be, g1, n), n);
    sim_free_all();
}

/* ---- task weighting -------------------------------------------------------------------------- */

static void check_uncertainty(int T, uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(MS_F32);
    tu_rng r = tu_seed(seed);
    float *L = tu_floats((size_t)T), *s = tu_floats((size_t)T), *ds = tu_floats((size_t)T);
    tu_fill(&r, L, (size_t)T, 0.05, 3);
    tu_fill(&r, s, (size_t)T, 0.3, 2);
    tu_fill(&r, ds, (size_t)T, -1, 1); /* accumulates onto other gradients of s */
    float *dds = sim_f32(be, ds, (size_t)T), *dtotal = sim_garbage(be, 4);
    float *ddL = sim_garbage(be, (size_t)T * 4);
    float total, *dL = tu_floats((size_t)T);
    cpu->uncertainty_weighting(cpu, &total, dL, ds, L, s, T);
    be->uncertainty_weighting(be, dtotal, ddL, dds, sim_f32(be, L, (size_t)T),
                              sim_f32(be, s, (size_t)T), T);
    char what[64];
    snprintf(what, sizeof what, "uncertainty_weighting T %d: total", T);
    sim_expect_close(what, sim_get_f32(be, dtotal, 1), &total, 1, SIM_TOL_F32);
    snprintf(what, sizeof what, "uncertainty_weighting T %d: dL", T);
    sim_expect_close(what, sim_get_f32(be, ddL, (size_t)T), dL, (size_t)T, SIM_TOL_F32);
    snprintf(what, sizeof what, "uncertainty_weighting T %d: ds (+=)", T);
    sim_expect_close(what, sim_get_f32(be, dds, (size_t)T), ds, (size_t)T, SIM_TOL_F32);
    sim_free_all();
}

Test(cuda_losses, uncertainty_weighting) {
    check_uncertainty(1, 501);
    check_uncertainty(5, 502);
    check_uncertainty(13, 503);
}

Test(cuda_losses, loss_weighted_sum) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(MS_F32);
    int sizes[] = {1, 5};
    for (int k = 0; k < 2; k++) {
        int T = sizes[k];
        tu_rng r = tu_seed(510 + k);
        float *L = tu_floats((size_t)T), *w = tu_floats((size_t)T), total;
        tu_fill(&r, L, (size_t)T, 0, 3);
        tu_fill(&r, w, (size_t)T, 0, 50);
        cpu->loss_weighted_sum(cpu, &total, L, w, T);
        float *dtotal = sim_garbage(be, 4);
        be->loss_weighted_sum(be, dtotal, sim_f32(be, L, (size_t)T), sim_f32(be, w, (size_t)T), T);
        char what[64];
        snprintf(what, sizeof what, "loss_weighted_sum T %d", T);
        sim_expect_close(what, sim_get_f32(be, dtotal, 1), &total, 1, SIM_TOL_F32);
        sim_free_all();
    }
}

/* ---- L2 normalisation over channels ---------------------------------------------------------- */

static void check_l2(ms_dtype dt, int B, int C, int P, int zero_pixel, uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(dt);
    tu_rng r = tu_seed(seed);
    size_t n = (size_t)B * C * P;
    const float eps = 1e-12f;
    float *x = acts(be, &r, n, -2, 2), *dy = acts(be, &r, n, -1, 1);
    if (zero_pixel)
        for (int c = 0; c < C; c++) x[(size_t)c * P] = 0.0f; /* |x| = 0: dx = dy / eps there */
    float *y = tu_floats(n), *dx = tu_floats(n);
    cpu->l2_normalize(cpu, y, x, B, C, P, eps);
    cpu->l2_normalize_bwd(cpu, dx, dy, x, B, C, P, eps);
    void *gx = sim_act(be, x, n), *gy = sim_garbage(be, n * be->act_size);
    void *gdx = sim_garbage(be, n * be->act_size);
    be->l2_normalize(be, gy, gx, B, C, P, eps);
    be->l2_normalize_bwd(be, gdx, sim_act(be, dy, n), gx, B, C, P, eps);
    char what[96];
    snprintf(what, sizeof what, "l2_normalize %s B %d C %d P %d", DT(dt), B, C, P);
    sim_expect_close(what, sim_get_act(be, gy, n), y, n, sim_tol(be));
    snprintf(what, sizeof what, "l2_normalize_bwd %s B %d C %d P %d", DT(dt), B, C, P);
    sim_expect_close(what, sim_get_act(be, gdx, n), dx, n, sim_tol(be));
    sim_free_all();
}

static void l2_cases(ms_dtype dt) {
    uint64_t s = 600 + 10 * (uint64_t)dt;
    check_l2(dt, 1, 3, 1, 0, s + 1);   /* a single pixel */
    check_l2(dt, 2, 3, 300, 0, s + 2); /* PASCAL normals */
    check_l2(dt, 3, 1, 100, 0, s + 3); /* C = 1 */
    check_l2(dt, 2, 5, 777, 0, s + 4);
    check_l2(dt, 1, 3, 1, 1, s + 5); /* a zero vector alone (its gradient dy / eps) */
}

Test(cuda_losses, l2_normalize_fp32) { l2_cases(MS_F32); }
Test(cuda_losses, l2_normalize_bf16) { l2_cases(MS_BF16); }
