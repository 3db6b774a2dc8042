/* The trunk ops of the CUDA backend (kernels/cuda/trunk.cu) run by the emulator against the CPU
 * ops, fp32 and bf16 activations: drop path, patch (un)folding in both element orders, CLS and
 * position assembly, token slices, the token mean and LayerNorm, on shapes that leave the last
 * block partial (D not a multiple of 32, odd token counts), a single token, B = 1, and the
 * accumulate semantics (dcls, dpos, dgamma, dbeta +=; dx = or += with accum_dx) from non-zero
 * starting gradients. Outputs the op must write start as NaN garbage.
 *
 * Tolerances (harness.h): activations SIM_TOL_F32 / SIM_TOL_BF16. Pure copies (patchify,
 * tokens_slice, dpe) must be bit-identical in both types. Parameter gradients (dcls, dpos, dgamma,
 * dbeta) and the LayerNorm statistics are fp32 sums over the same (bf16-rounded) inputs on both
 * sides, so they keep SIM_TOL_F32 with bf16 activations too. */
#include "harness.h"

#include <stdio.h>
#include <string.h>

#define DT(dt) ((dt) == MS_BF16 ? "bf16" : "fp32")

/* Random values in [lo, hi), rounded to be's activation type (so the CPU op sees what the CUDA
 * op sees). */
static float *acts(ms_backend *be, tu_rng *r, size_t n, double lo, double hi) {
    float *x = tu_floats(n);
    tu_fill(r, x, n, lo, hi);
    sim_round_like(be, x, n);
    return x;
}

static float *params(tu_rng *r, size_t n, double lo, double hi) {
    float *x = tu_floats(n);
    tu_fill(r, x, n, lo, hi);
    return x;
}

static float *copy_of(const float *x, size_t n) {
    float *c = tu_floats(n);
    memcpy(c, x, n * sizeof(float));
    return c;
}

/* ---- drop path ------------------------------------------------------------------------------- */

static void check_drop_path(ms_dtype dt, int B, size_t n, uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(dt);
    tu_rng r = tu_seed(seed);
    size_t total = (size_t)B * n;
    float *x = acts(be, &r, total, -3, 3), *scale = tu_floats((size_t)B), *y = tu_floats(total);
    for (int b = 0; b < B; b++) scale[b] = b % 3 == 1 ? 0.0f : 1.0f / 0.9f; /* dropped or kept */
    cpu->drop_path(cpu, y, x, scale, B, n);
    float *gs = sim_f32(be, scale, (size_t)B);
    void *gx = sim_act(be, x, total), *gy = sim_garbage(be, total * be->act_size);
    char what[96];
    be->drop_path(be, gy, gx, gs, B, n);
    snprintf(what, sizeof what, "drop_path %s B %d n %zu", DT(dt), B, n);
    sim_expect_close(what, sim_get_act(be, gy, total), y, total, sim_tol(be));
    be->drop_path(be, gx, gx, gs, B, n); /* in place, as the backward runs */
    snprintf(what, sizeof what, "drop_path in place %s B %d n %zu", DT(dt), B, n);
    sim_expect_close(what, sim_get_act(be, gx, total), y, total, sim_tol(be));
    sim_free_all();
}

Test(cuda_trunk, drop_path) {
    for (int dt = 0; dt < 2; dt++) {
        check_drop_path(dt, 1, 1, 1);
        check_drop_path(dt, 3, 257, 2);
        check_drop_path(dt, 4, 5000, 3);
    }
}

/* ---- patchify / unpatchify ------------------------------------------------------------------- */

static void check_patches(ms_dtype dt, int B, int C, int Hi, int Wi, int p, ms_patch_order order,
                          uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(dt);
    tu_rng r = tu_seed(seed);
    size_t n = (size_t)B * C * Hi * Wi;
    float *img = acts(be, &r, n, -2, 2), *patches = tu_floats(n), *back = tu_floats(n);
    cpu->patchify(cpu, patches, img, B, C, Hi, Wi, p, order);
    void *gimg = sim_act(be, img, n), *gp = sim_garbage(be, n * be->act_size),
         *gback = sim_garbage(be, n * be->act_size);
    be->patchify(be, gp, gimg, B, C, Hi, Wi, p, order);
    char what[128];
    snprintf(what, sizeof what, "patchify %s B %d C %d %dx%d p %d order %d", DT(dt), B, C, Hi, Wi,
             p, order);
    tu_expect_equal(what, sim_get_act(be, gp, n), patches, n);
    /* unpatchify of other data (not just the round trip) against the CPU, then the round trip */
    float *other = acts(be, &r, n, -2, 2);
    cpu->unpatchify(cpu, back, other, B, C, Hi, Wi, p, order);
    be->unpatchify(be, gback, sim_act(be, other, n), B, C, Hi, Wi, p, order);
    snprintf(what, sizeof what, "unpatchify %s B %d C %d %dx%d p %d order %d", DT(dt), B, C, Hi,
             Wi, p, order);
    tu_expect_equal(what, sim_get_act(be, gback, n), back, n);
    be->unpatchify(be, gback, gp, B, C, Hi, Wi, p, order);
    snprintf(what, sizeof what, "patch round trip %s B %d C %d p %d order %d", DT(dt), B, C, p,
             order);
    tu_expect_equal(what, sim_get_act(be, gback, n), img, n);
    sim_free_all();
}

Test(cuda_trunk, patchify_unpatchify) {
    for (int dt = 0; dt < 2; dt++)
        for (int o = 0; o < 2; o++) {
            check_patches(dt, 1, 1, 2, 2, 2, o, 10);   /* one patch, one channel */
            check_patches(dt, 2, 3, 12, 8, 4, o, 11);  /* RGB, non-square grid */
            check_patches(dt, 1, 5, 9, 6, 3, o, 12);   /* odd channels and patch size */
            check_patches(dt, 3, 3, 32, 32, 16, o, 13); /* base patch size */
            /* 32 or more channels: the (ky, kx, c) order goes through the tiled transpose */
            check_patches(dt, 2, 40, 6, 10, 2, o, 14);  /* channel tile partial */
            check_patches(dt, 1, 33, 3, 35, 1, o, 15);  /* p = 1 (conv head), x tile partial */
            check_patches(dt, 2, 64, 4, 4, 1, o, 16);   /* whole channel tiles, narrow rows */
        }
}

/* ---- CLS token and position embedding -------------------------------------------------------- */

static void check_assemble(ms_dtype dt, int B, int N, int D, int with_dpe, int with_dcls,
                           uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(dt);
    tu_rng r = tu_seed(seed);
    size_t nx = (size_t)B * N * D, npe = (size_t)B * (N - 1) * D, npos = (size_t)N * D;
    float *pe = acts(be, &r, npe, -2, 2), *cls = params(&r, (size_t)D, -1, 1),
          *pos = params(&r, npos, -1, 1), *x = tu_floats(nx);
    cpu->tokens_assemble(cpu, x, pe, cls, pos, B, N, D);
    void *gx = sim_garbage(be, nx * be->act_size);
    be->tokens_assemble(be, gx, sim_act(be, pe, npe), sim_f32(be, cls, (size_t)D),
                        sim_f32(be, pos, npos), B, N, D);
    char what[128];
    snprintf(what, sizeof what, "tokens_assemble %s B %d N %d D %d", DT(dt), B, N, D);
    sim_expect_close(what, sim_get_act(be, gx, nx), x, nx, sim_tol(be));

    /* backward: dcls and dpos accumulate onto non-zero starts */
    float *dx = acts(be, &r, nx, -1, 1), *dpe = tu_floats(npe ? npe : 1);
    float *dcls = params(&r, (size_t)D, -1, 1), *dpos = params(&r, npos, -1, 1);
    float *gdcls = sim_f32(be, dcls, (size_t)D), *gdpos = sim_f32(be, dpos, npos);
    void *gdpe = sim_garbage(be, (npe ? npe : 1) * be->act_size);
    cpu->tokens_assemble_bwd(cpu, with_dpe ? dpe : NULL, with_dcls ? dcls : NULL, dpos, dx, B, N,
                             D);
    be->tokens_assemble_bwd(be, with_dpe ? gdpe : NULL, with_dcls ? gdcls : NULL, gdpos,
                            sim_act(be, dx, nx), B, N, D);
    snprintf(what, sizeof what, "tokens_assemble_bwd %s B %d N %d D %d: dpos", DT(dt), B, N, D);
    sim_expect_close(what, sim_get_f32(be, gdpos, npos), dpos, npos, SIM_TOL_F32);
    snprintf(what, sizeof what, "tokens_assemble_bwd %s B %d N %d D %d: dcls", DT(dt), B, N, D);
    sim_expect_close(what, sim_get_f32(be, gdcls, (size_t)D), dcls, (size_t)D, SIM_TOL_F32);
    if (with_dpe && npe) {
        snprintf(what, sizeof what, "tokens_assemble_bwd %s B %d N %d D %d: dpe", DT(dt), B, N, D);
        tu_expect_equal(what, sim_get_act(be, gdpe, npe), dpe, npe);
    }
    sim_free_all();
}

Test(cuda_trunk, tokens_assemble) {
    for (int dt = 0; dt < 2; dt++) {
        check_assemble(dt, 1, 1, 1, 1, 1, 20);   /* only the CLS token */
        check_assemble(dt, 1, 2, 5, 1, 1, 21);   /* B = 1, one patch */
        check_assemble(dt, 3, 5, 33, 1, 1, 22);  /* D not a multiple of 32 */
        check_assemble(dt, 4, 17, 96, 0, 1, 23); /* dpe skipped */
        check_assemble(dt, 2, 50, 70, 1, 0, 24); /* frozen CLS token, more than one block */
    }
}

/* ---- token slices ---------------------------------------------------------------------------- */

static void check_slice(ms_dtype dt, int B, int N, int D, int n0, int n1, uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(dt);
    tu_rng r = tu_seed(seed);
    size_t nx = (size_t)B * N * D, no = (size_t)B * (n1 - n0) * D;
    float *x = acts(be, &r, nx, -2, 2), *out = tu_floats(no ? no : 1);
    cpu->tokens_slice(cpu, out, x, B, N, D, n0, n1);
    void *gout = sim_garbage(be, (no ? no : 1) * be->act_size);
    be->tokens_slice(be, gout, sim_act(be, x, nx), B, N, D, n0, n1);
    char what[128];
    snprintf(what, sizeof what, "tokens_slice %s B %d N %d D %d [%d, %d)", DT(dt), B, N, D, n0,
             n1);
    if (no) tu_expect_equal(what, sim_get_act(be, gout, no), out, no);

    float *dout = acts(be, &r, no ? no : 1, -1, 1), *dx = tu_floats(nx);
    cpu->tokens_slice_bwd(cpu, dx, dout, B, N, D, n0, n1);
    void *gdx = sim_garbage(be, nx * be->act_size); /* zeros outside the slice must be written */
    be->tokens_slice_bwd(be, gdx, sim_act(be, dout, no ? no : 1), B, N, D, n0, n1);
    snprintf(what, sizeof what, "tokens_slice_bwd %s B %d N %d D %d [%d, %d)", DT(dt), B, N, D,
             n0, n1);
    tu_expect_equal(what, sim_get_act(be, gdx, nx), dx, nx);
    sim_free_all();
}

Test(cuda_trunk, tokens_slice) {
    for (int dt = 0; dt < 2; dt++) {
        check_slice(dt, 1, 1, 1, 0, 1, 30);    /* a single token, all of it */
        check_slice(dt, 3, 9, 33, 1, 9, 31);   /* drop the CLS token */
        check_slice(dt, 2, 9, 33, 0, 1, 32);   /* only the CLS token */
        check_slice(dt, 2, 20, 70, 4, 13, 33); /* interior */
        check_slice(dt, 2, 5, 7, 3, 3, 34);    /* empty slice: bwd writes zeros */
    }
}

/* ---- token mean ------------------------------------------------------------------------------ */

static void check_mean(ms_dtype dt, int B, int N, int D, int n0, uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(dt);
    tu_rng r = tu_seed(seed);
    size_t nx = (size_t)B * N * D, no = (size_t)B * D;
    float *x = acts(be, &r, nx, -2, 3), *out = tu_floats(no);
    cpu->tokens_mean(cpu, out, x, B, N, D, n0);
    void *gout = sim_garbage(be, no * be->act_size);
    be->tokens_mean(be, gout, sim_act(be, x, nx), B, N, D, n0);
    char what[128];
    snprintf(what, sizeof what, "tokens_mean %s B %d N %d D %d n0 %d", DT(dt), B, N, D, n0);
    sim_expect_close(what, sim_get_act(be, gout, no), out, no, sim_tol(be));

    float *dout = acts(be, &r, no, -1, 1), *dx = tu_floats(nx);
    cpu->tokens_mean_bwd(cpu, dx, dout, B, N, D, n0);
    void *gdx = sim_garbage(be, nx * be->act_size);
    be->tokens_mean_bwd(be, gdx, sim_act(be, dout, no), B, N, D, n0);
    snprintf(what, sizeof what, "tokens_mean_bwd %s B %d N %d D %d n0 %d", DT(dt), B, N, D, n0);
    sim_expect_close(what, sim_get_act(be, gdx, nx), dx, nx, sim_tol(be));
    sim_free_all();
}

Test(cuda_trunk, tokens_mean) {
    for (int dt = 0; dt < 2; dt++) {
        check_mean(dt, 1, 1, 1, 0, 40);    /* a single token */
        check_mean(dt, 2, 2, 5, 1, 41);    /* one token after the CLS token */
        check_mean(dt, 3, 17, 33, 1, 42);  /* token groups not full */
        check_mean(dt, 2, 30, 96, 0, 43);  /* CLS token included */
        check_mean(dt, 1, 9, 100, 8, 44);  /* only the last token */
    }
}

/* ---- LayerNorm ------------------------------------------------------------------------------- */

/* x has a per-row offset up to `offset` on top of values in [-2, 2], so rows with |mean| >> std
 * check the hi + lo mean split. */
static void check_layernorm(ms_dtype dt, int M, int D, double offset, uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(dt);
    tu_rng r = tu_seed(seed);
    size_t n = (size_t)M * D;
    float *x = tu_floats(n);
    for (int m = 0; m < M; m++) {
        double off = offset * (2 * tu_uniform(&r) - 1);
        for (int d = 0; d < D; d++) x[(size_t)m * D + d] = (float)(off + 4 * tu_uniform(&r) - 2);
    }
    sim_round_like(be, x, n);
    float *gamma = params(&r, (size_t)D, 0.5, 1.5), *beta = params(&r, (size_t)D, -1, 1);
    float *y = tu_floats(n), *mean = tu_floats((size_t)M), *rstd = tu_floats((size_t)M);
    const float eps = 1e-6f;
    cpu->layernorm(cpu, y, mean, rstd, x, gamma, beta, M, D, eps);

    void *gx = sim_act(be, x, n), *gy = sim_garbage(be, n * be->act_size);
    float *ggamma = sim_f32(be, gamma, (size_t)D), *gbeta = sim_f32(be, beta, (size_t)D);
    float *gmean = sim_garbage(be, (size_t)M * 4), *grstd = sim_garbage(be, (size_t)M * 4);
    be->layernorm(be, gy, gmean, grstd, gx, ggamma, gbeta, M, D, eps);
    char what[128];
    snprintf(what, sizeof what, "layernorm %s M %d D %d offset %g", DT(dt), M, D, offset);
    sim_expect_close(what, sim_get_act(be, gy, n), y, n, sim_tol(be));
    snprintf(what, sizeof what, "layernorm %s M %d D %d: mean", DT(dt), M, D);
    sim_expect_close(what, sim_get_f32(be, gmean, (size_t)M), mean, (size_t)M, SIM_TOL_F32);
    snprintf(what, sizeof what, "layernorm %s M %d D %d: rstd", DT(dt), M, D);
    sim_expect_close(what, sim_get_f32(be, grstd, (size_t)M), rstd, (size_t)M, SIM_TOL_F32);
    /* in place without statistics (evaluation) */
    void *gx2 = sim_act(be, x, n);
    be->layernorm(be, gx2, NULL, NULL, gx2, ggamma, gbeta, M, D, eps);
    snprintf(what, sizeof what, "layernorm in place %s M %d D %d", DT(dt), M, D);
    sim_expect_close(what, sim_get_act(be, gx2, n), y, n, sim_tol(be));

    /* backward from the CPU's statistics, so both sides normalise with the same numbers */
    float *dy = acts(be, &r, n, -1, 1);
    void *gdy = sim_act(be, dy, n);
    float *gm = sim_f32(be, mean, (size_t)M),
          *gr = sim_f32(be, rstd, (size_t)M);
    for (int accum = 0; accum < 2; accum++) {
        float *dx = acts(be, &r, n, -1, 1), *dgamma = params(&r, (size_t)D, -1, 1),
              *dbeta = params(&r, (size_t)D, -1, 1);
        void *gdx = accum ? sim_act(be, dx, n) : sim_garbage(be, n * be->act_size);
        float *gdg = sim_f32(be, dgamma, (size_t)D), *gdb = sim_f32(be, dbeta, (size_t)D);
        cpu->layernorm_bwd(cpu, dx, dgamma, dbeta, dy, x, mean, rstd, gamma, M, D, accum);
        be->layernorm_bwd(be, gdx, gdg, gdb, gdy, gx, gm, gr, ggamma, M, D, accum);
        snprintf(what, sizeof what, "layernorm_bwd %s M %d D %d accum %d: dx", DT(dt), M, D,
                 accum);
        sim_expect_close(what, sim_get_act(be, gdx, n), dx, n, sim_tol(be));
        snprintf(what, sizeof what, "layernorm_bwd %s M %d D %d: dgamma", DT(dt), M, D);
        sim_expect_close(what, sim_get_f32(be, gdg, (size_t)D), dgamma, (size_t)D, SIM_TOL_F32);
        snprintf(what, sizeof what, "layernorm_bwd %s M %d D %d: dbeta", DT(dt), M, D);
        sim_expect_close(what, sim_get_f32(be, gdb, (size_t)D), dbeta, (size_t)D, SIM_TOL_F32);
    }
    /* parameter gradients only (dx NULL), then dx only: the other outputs stay untouched */
    float *dgamma = params(&r, (size_t)D, -1, 1), *dbeta = params(&r, (size_t)D, -1, 1);
    float *start = copy_of(dbeta, (size_t)D);
    float *gdg = sim_f32(be, dgamma, (size_t)D), *gdb = sim_f32(be, dbeta, (size_t)D);
    cpu->layernorm_bwd(cpu, NULL, dgamma, NULL, dy, x, mean, rstd, gamma, M, D, 0);
    be->layernorm_bwd(be, NULL, gdg, NULL, gdy, gx, gm, gr, ggamma, M, D, 0);
    snprintf(what, sizeof what, "layernorm_bwd %s M %d D %d dgamma only", DT(dt), M, D);
    sim_expect_close(what, sim_get_f32(be, gdg, (size_t)D), dgamma, (size_t)D, SIM_TOL_F32);
    float *dx = tu_floats(n);
    void *gdx = sim_garbage(be, n * be->act_size);
    cpu->layernorm_bwd(cpu, dx, NULL, NULL, dy, x, mean, rstd, gamma, M, D, 0);
    be->layernorm_bwd(be, gdx, NULL, NULL, gdy, gx, gm, gr, ggamma, M, D, 0);
    snprintf(what, sizeof what, "layernorm_bwd %s M %d D %d dx only", DT(dt), M, D);
    sim_expect_close(what, sim_get_act(be, gdx, n), dx, n, sim_tol(be));
    snprintf(what, sizeof what, "layernorm_bwd %s M %d D %d: dbeta untouched", DT(dt), M, D);
    tu_expect_equal(what, sim_get_f32(be, gdb, (size_t)D), start, (size_t)D);
    sim_free_all();
}

Test(cuda_trunk, layernorm_fp32) {
    check_layernorm(MS_F32, 1, 7, 0, 50);     /* a single row narrower than a warp */
    check_layernorm(MS_F32, 3, 33, 0, 51);    /* D not a multiple of 32 */
    check_layernorm(MS_F32, 7, 96, 1000, 52); /* |mean| >> std: needs the hi + lo mean */
    check_layernorm(MS_F32, 150, 45, 1, 53);  /* three 64-row chunks, the last partial */
    check_layernorm(MS_F32, 66, 300, 3, 54);  /* wide rows, several column blocks */
}

Test(cuda_trunk, layernorm_bf16) {
    check_layernorm(MS_BF16, 1, 7, 0, 60);
    check_layernorm(MS_BF16, 3, 33, 0, 61);
    check_layernorm(MS_BF16, 7, 96, 100, 62); /* (bf16 spacing at 1000 would flatten rows) */
    check_layernorm(MS_BF16, 150, 45, 1, 63);
    check_layernorm(MS_BF16, 66, 300, 3, 64);
}
