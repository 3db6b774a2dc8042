/* The CUDA routing extras (kernels/cuda/moe_aux.cu) run by the emulator against the CPU ops:
 * noisy gating and its backward (fp32 and bf16, with and without noise, raw logits across
 * softplus's linear threshold, E over one warp), the cv^2 balance loss and its backward (E = 1,
 * empty experts, K = E), and the task bias of a shared router with its backward.
 *
 * Tolerances (harness.h): activations at sim_tol; the balance loss, its importance gradient and
 * the task bias are fp32 values summed in double on both sides in different orders, SIM_TOL_F32;
 * the fp32 accumulations dgate += dimp[idx] are the same single addition on both sides, so they
 * are compared bit for bit. */
#include "harness.h"

#include <stdio.h>

#define DT(dt) ((dt) == MS_BF16 ? "bf16" : "fp32")
#define EPS 1e-4f

/* ---- noisy gating ---------------------------------------------------------------------------- */

static void check_noisy(ms_dtype dt, int M, int E, int with_noise, uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(dt);
    tu_rng r = tu_seed(seed);
    size_t n = (size_t)M * E;
    float *l2 = tu_floats(2 * n), *noise = tu_floats(n), *dy = tu_floats(n); /* [M, 2E], [M, E] */
    tu_fill(&r, l2, 2 * n, -30, 30); /* raw logits on both sides of softplus's threshold 20 */
    tu_fill_normal(&r, noise, n, 1.0);
    tu_fill(&r, dy, n, -1, 1);
    sim_round_like(be, l2, 2 * n);
    sim_round_like(be, dy, n);
    const float *nz = with_noise ? noise : NULL;
    float *y = tu_floats(n), *dl2 = tu_floats(2 * n);
    cpu->noisy_logits(cpu, y, l2, nz, M, E);
    cpu->noisy_logits_bwd(cpu, dl2, dy, l2, nz, M, E);

    void *gl2 = sim_act(be, l2, 2 * n), *gy = sim_garbage(be, n * be->act_size);
    void *gdl2 = sim_garbage(be, 2 * n * be->act_size);
    float *gnz = with_noise ? sim_f32(be, noise, n) : NULL;
    be->noisy_logits(be, gy, gl2, gnz, M, E);
    be->noisy_logits_bwd(be, gdl2, sim_act(be, dy, n), gl2, gnz, M, E);
    char what[96];
    snprintf(what, sizeof what, "noisy_logits %s M %d E %d noise %d", DT(dt), M, E, with_noise);
    sim_expect_close(what, sim_get_act(be, gy, n), y, n, sim_tol(be));
    snprintf(what, sizeof what, "noisy_logits_bwd %s M %d E %d noise %d", DT(dt), M, E, with_noise);
    sim_expect_close(what, sim_get_act(be, gdl2, 2 * n), dl2, 2 * n, sim_tol(be));
    sim_free_all();
}

static void noisy_cases(ms_dtype dt) {
    uint64_t s = 10 * (uint64_t)dt;
    for (int noise = 0; noise < 2; noise++) {
        check_noisy(dt, 1, 1, noise, s + 1);   /* a single token and expert */
        check_noisy(dt, 37, 16, noise, s + 2); /* M3ViT's MLP MoE, blocks of 4 tokens not full */
        check_noisy(dt, 9, 40, noise, s + 3);  /* E over one warp */
    }
}

Test(cuda_moe_aux, noisy_logits_fp32) { noisy_cases(MS_F32); }
Test(cuda_moe_aux, noisy_logits_bf16) { noisy_cases(MS_BF16); }

/* ---- cv^2 balance loss ----------------------------------------------------------------------- */

/* A routing of M tokens over the first `used` of E experts (the rest stay empty), K per token,
 * by the CPU's route on random logits: gate[M, K], idx[M, K]. */
static void routing(tu_rng *r, int M, int E, int K, int used, float *gate, int32_t *idx) {
    ms_backend *cpu = tu_cpu();
    size_t ne = (size_t)M * E;
    float *logits = tu_floats(ne), *probs = tu_floats(ne);
    tu_fill(r, logits, ne, -3, 3);
    for (int m = 0; m < M; m++)
        for (int e = used; e < E; e++) logits[(size_t)m * E + e] = -1e4f; /* never chosen */
    cpu->route(cpu, probs, idx, gate, logits, M, E, K, EPS);
}

static void check_balance(int M, int E, int K, int used, uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(MS_F32);
    tu_rng r = tu_seed(seed);
    size_t nk = (size_t)M * K;
    float *gate = tu_floats(nk), *dimp = tu_floats((size_t)E), loss;
    int32_t *idx = tu_ints(nk);
    routing(&r, M, E, K, used, gate, idx);
    const float weight = 0.01f;
    cpu->balance_loss(cpu, &loss, dimp, gate, idx, M, E, K, weight);
    float *dl = sim_garbage(be, 4), *ddimp = sim_garbage(be, (size_t)E * 4);
    float *dgate_dev = sim_f32(be, gate, nk);
    int32_t *didx = sim_i32(be, idx, nk);
    be->balance_loss(be, dl, ddimp, dgate_dev, didx, M, E, K, weight);
    char what[96];
    snprintf(what, sizeof what, "balance_loss M %d E %d K %d used %d: loss", M, E, K, used);
    sim_expect_close(what, sim_get_f32(be, dl, 1), &loss, 1, SIM_TOL_F32);
    snprintf(what, sizeof what, "balance_loss M %d E %d K %d used %d: dimp", M, E, K, used);
    sim_expect_close(what, sim_get_f32(be, ddimp, (size_t)E), dimp, (size_t)E, SIM_TOL_F32);
    if (E == 1) {
        float *got = sim_get_f32(be, dl, 1), *gd = sim_get_f32(be, ddimp, 1);
        cr_assert(*got == 0.0f && *gd == 0.0f, "balance_loss E 1: loss %g dimp %g, want 0 and 0",
                  (double)*got, (double)*gd);
    }

    /* the backward adds onto the gate gradient of the routing op */
    float *dg = tu_floats(nk);
    tu_fill(&r, dg, nk, -1, 1);
    float *ddg = sim_f32(be, dg, nk);
    cpu->balance_loss_bwd(cpu, dg, dimp, idx, M, K);
    be->balance_loss_bwd(be, ddg, sim_f32(be, dimp, (size_t)E), didx, M, K);
    snprintf(what, sizeof what, "balance_loss_bwd M %d E %d K %d (+=)", M, E, K);
    tu_expect_equal(what, sim_get_f32(be, ddg, nk), dg, nk);
    sim_free_all();
}

Test(cuda_moe_aux, balance_loss) {
    check_balance(1, 1, 1, 1, 31);     /* one expert: cv^2 is 0, so are the loss and gradient */
    check_balance(1, 4, 2, 4, 32);     /* a single token: two experts get nothing */
    check_balance(300, 16, 4, 16, 33); /* M3ViT's MLP MoE */
    check_balance(200, 24, 4, 10, 34); /* 14 empty experts */
    check_balance(50, 7, 7, 7, 35);    /* K = E: equal loads */
    check_balance(90, 40, 5, 40, 36);  /* E over one warp */
}

/* ---- task bias of a shared router ------------------------------------------------------------ */

static void check_task_bias(int E, int D, uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(MS_F32);
    tu_rng r = tu_seed(seed);
    size_t n = (size_t)E * D;
    float *w = tu_floats(n), *v = tu_floats((size_t)D), *bias = tu_floats((size_t)E);
    float *dbias = tu_floats((size_t)E), *dw = tu_floats(n), *dv = tu_floats((size_t)D);
    tu_fill(&r, w, n, -0.1, 0.1);
    tu_fill(&r, v, (size_t)D, -1, 1);
    tu_fill(&r, dbias, (size_t)E, -1, 1);
    tu_fill(&r, dw, n, -1, 1); /* parameter gradients accumulate */
    tu_fill(&r, dv, (size_t)D, -1, 1);
    float *gw = sim_f32(be, w, n), *gv = sim_f32(be, v, (size_t)D);
    float *gbias = sim_garbage(be, (size_t)E * 4);
    float *gdw = sim_f32(be, dw, n), *gdv = sim_f32(be, dv, (size_t)D);
    cpu->router_task_bias(cpu, bias, w, v, E, D);
    cpu->router_task_bias_bwd(cpu, dw, dv, dbias, w, v, E, D);
    be->router_task_bias(be, gbias, gw, gv, E, D);
    be->router_task_bias_bwd(be, gdw, gdv, sim_f32(be, dbias, (size_t)E), gw, gv, E, D);
    char what[96];
    snprintf(what, sizeof what, "router_task_bias E %d D %d", E, D);
    sim_expect_close(what, sim_get_f32(be, gbias, (size_t)E), bias, (size_t)E, SIM_TOL_F32);
    snprintf(what, sizeof what, "router_task_bias_bwd E %d D %d: dw (+=)", E, D);
    sim_expect_close(what, sim_get_f32(be, gdw, n), dw, n, SIM_TOL_F32);
    snprintf(what, sizeof what, "router_task_bias_bwd E %d D %d: dv (+=)", E, D);
    sim_expect_close(what, sim_get_f32(be, gdv, (size_t)D), dv, (size_t)D, SIM_TOL_F32);
    sim_free_all();
}

Test(cuda_moe_aux, router_task_bias) {
    check_task_bias(1, 1, 41);
    check_task_bias(16, 384, 42); /* small model */
    check_task_bias(24, 768, 43); /* base model, attention experts */
    check_task_bias(7, 300, 44);  /* E not a multiple of the 4 experts per block */
}
