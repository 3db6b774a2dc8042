/* The CUDA MoE ops (kernels/cuda/moe.cu, expert GEMMs in test_cuda_linear.c) run by the emulator
 * against the CPU ops, with fp32 and bf16 activations: routing (ties, K = E, a single token,
 * E not a multiple of the warp, E = 256), its backward, the dispatch plan (bit-identical to the
 * CPU's stable order, several tiles, empty experts), the expert remap of extracted models,
 * gather, combine and its backward, the gate gradient of the output experts (expert_gate_bwd),
 * and the mutual-information statistics and loss. Tolerances: harness.h. */
#include "harness.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define EPS 1e-4f

/* Logits k / 8 with k drawn from [-spread, spread]: exactly representable in bf16 too, distinct
 * values at least 1/8 apart (so float rounding cannot reorder them), and with a small spread
 * many exact ties, which both backends must break towards the lower expert. */
static void grid_logits(tu_rng *r, float *x, size_t n, int spread) {
    for (size_t i = 0; i < n; i++) x[i] = (float)tu_randint(r, -spread, spread) / 8.0f;
}

/* ---- route ----------------------------------------------------------------------------------- */

static void check_route(ms_dtype dt, int M, int E, int K, int spread, uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(dt);
    tu_rng r = tu_seed(seed);
    size_t ne = (size_t)M * E, nk = (size_t)M * K;
    float *logits = tu_floats(ne); /* [M, E] */
    grid_logits(&r, logits, ne, spread);
    sim_round_like(be, logits, ne); /* beyond |k| = 256, bf16 rounding adds ties */
    float *probs = tu_floats(ne), *gate = tu_floats(nk);
    int32_t *idx = tu_ints(nk);
    cpu->route(cpu, probs, idx, gate, logits, M, E, K, EPS);

    float *dprobs = sim_garbage(be, ne * 4), *dgate = sim_garbage(be, nk * 4);
    int32_t *didx = sim_garbage(be, nk * 4);
    be->route(be, dprobs, didx, dgate, sim_act(be, logits, ne), M, E, K, EPS);
    char what[128];
    snprintf(what, sizeof what, "route %s M %d E %d K %d: idx", dt ? "bf16" : "fp32", M, E, K);
    sim_expect_ints(what, sim_get_i32(be, didx, nk), idx, nk);
    snprintf(what, sizeof what, "route %s M %d E %d K %d: probs", dt ? "bf16" : "fp32", M, E, K);
    sim_expect_close(what, sim_get_f32(be, dprobs, ne), probs, ne, SIM_TOL_F32);
    snprintf(what, sizeof what, "route %s M %d E %d K %d: gate", dt ? "bf16" : "fp32", M, E, K);
    sim_expect_close(what, sim_get_f32(be, dgate, nk), gate, nk, SIM_TOL_F32);
    sim_free_all();
}

static void route_cases(ms_dtype dt) {
    check_route(dt, 1, 2, 1, 100, 1);    /* a single token */
    check_route(dt, 37, 24, 12, 100, 2); /* base attention MoE */
    check_route(dt, 70, 16, 4, 100, 3);  /* base MLP MoE, blocks of 4 tokens not full */
    check_route(dt, 5, 7, 7, 100, 4);    /* K = E */
    check_route(dt, 33, 40, 5, 100, 5);  /* E over one warp */
    check_route(dt, 9, 256, 17, 400, 6); /* the most experts */
    check_route(dt, 8, 1, 1, 10, 7);     /* one expert */
    check_route(dt, 50, 24, 12, 2, 8);   /* ties everywhere */
    check_route(dt, 20, 13, 13, 0, 9);   /* all equal: idx 0..E-1 */
}

Test(cuda_moe, route_fp32) { route_cases(MS_F32); }
Test(cuda_moe, route_bf16) { route_cases(MS_BF16); }

/* ---- route_bwd ------------------------------------------------------------------------------- */

static void check_route_bwd(ms_dtype dt, int M, int E, int K, int with_dgate, int with_dA,
                            uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(dt);
    tu_rng r = tu_seed(seed);
    size_t ne = (size_t)M * E, nk = (size_t)M * K;
    float *logits = tu_floats(ne), *probs = tu_floats(ne), *gate = tu_floats(nk);
    int32_t *idx = tu_ints(nk);
    grid_logits(&r, logits, ne, 50);
    sim_round_like(be, logits, ne);
    cpu->route(cpu, probs, idx, gate, logits, M, E, K, EPS);
    float *dg = tu_floats(nk), *dA = tu_floats((size_t)E), *ref = tu_floats(ne);
    tu_fill(&r, dg, nk, -1, 1);
    tu_fill(&r, dA, (size_t)E, -1, 1);
    cpu->route_bwd(cpu, ref, with_dgate ? dg : NULL, with_dA ? dA : NULL, probs, idx, M, E, K);

    void *dl = sim_garbage(be, ne * be->act_size);
    be->route_bwd(be, dl, with_dgate ? sim_f32(be, dg, nk) : NULL,
                  with_dA ? sim_f32(be, dA, (size_t)E) : NULL, sim_f32(be, probs, ne),
                  sim_i32(be, idx, nk), M, E, K);
    char what[128];
    snprintf(what, sizeof what, "route_bwd %s M %d E %d K %d dgate %d dA %d", dt ? "bf16" : "fp32",
             M, E, K, with_dgate, with_dA);
    sim_expect_close(what, sim_get_act(be, dl, ne), ref, ne, sim_tol(be));
    sim_free_all();
}

static void route_bwd_cases(ms_dtype dt) {
    check_route_bwd(dt, 1, 3, 2, 1, 1, 11);
    check_route_bwd(dt, 41, 24, 12, 1, 1, 12);
    check_route_bwd(dt, 29, 16, 4, 1, 0, 13);
    check_route_bwd(dt, 29, 16, 4, 0, 1, 14);
    check_route_bwd(dt, 6, 40, 40, 1, 1, 15); /* K = E over one warp */
}

Test(cuda_moe, route_bwd_fp32) { route_bwd_cases(MS_F32); }
Test(cuda_moe, route_bwd_bf16) { route_bwd_cases(MS_BF16); }

/* ---- dispatch_plan --------------------------------------------------------------------------- */

/* idx[M, K]: K distinct experts per token drawn from the first `used` experts (the others of
 * the layer stay empty). */
static void random_selection(tu_rng *r, int32_t *idx, int M, int K, int used) {
    int perm[256];
    for (int m = 0; m < M; m++) {
        for (int e = 0; e < used; e++) perm[e] = e;
        for (int j = 0; j < K; j++) {
            int k = tu_randint(r, j, used - 1), t = perm[j];
            perm[j] = perm[k], perm[k] = t;
            idx[(size_t)m * K + j] = perm[j];
        }
    }
}

static void check_dispatch(int M, int K, int E, int used, uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(MS_F32);
    tu_rng r = tu_seed(seed);
    size_t R = (size_t)M * K;
    int32_t *idx = tu_ints(R);
    random_selection(&r, idx, M, K, used);
    int32_t *off = tu_ints((size_t)E + 1), *perm = tu_ints(R), *inv = tu_ints(R),
            *offh = tu_ints((size_t)E + 1);
    cpu->dispatch_plan(cpu, off, perm, inv, offh, idx, M, K, E);

    int32_t *doff = sim_garbage(be, (E + 1) * 4), *dperm = sim_garbage(be, R * 4),
            *dinv = sim_garbage(be, R * 4);
    int32_t *host_off = tu_ints((size_t)E + 1);
    memset(host_off, 0xff, (E + 1) * sizeof(int32_t));
    be->dispatch_plan(be, doff, dperm, dinv, host_off, sim_i32(be, idx, R), M, K, E);
    char what[96];
    snprintf(what, sizeof what, "dispatch M %d K %d E %d (used %d): offsets", M, K, E, used);
    sim_expect_ints(what, sim_get_i32(be, doff, (size_t)E + 1), off, (size_t)E + 1);
    snprintf(what, sizeof what, "dispatch M %d K %d E %d: offsets_host", M, K, E);
    sim_expect_ints(what, host_off, off, (size_t)E + 1);
    snprintf(what, sizeof what, "dispatch M %d K %d E %d: perm", M, K, E);
    sim_expect_ints(what, sim_get_i32(be, dperm, R), perm, R);
    snprintf(what, sizeof what, "dispatch M %d K %d E %d: inv", M, K, E);
    sim_expect_ints(what, sim_get_i32(be, dinv, R), inv, R);
    sim_free_all();
}

Test(cuda_moe, dispatch_plan) {
    check_dispatch(1, 1, 1, 1, 21);      /* a single pair */
    check_dispatch(1, 12, 24, 24, 22);   /* a single token */
    check_dispatch(197, 4, 16, 16, 23);  /* R = 788: one partial tile */
    check_dispatch(256, 4, 16, 16, 24);  /* R = 1024: exactly one tile */
    check_dispatch(700, 4, 16, 9, 25);   /* three tiles, experts 9..15 empty */
    check_dispatch(300, 12, 24, 24, 26); /* base attention MoE, four tiles */
    check_dispatch(90, 7, 7, 7, 27);     /* K = E */
    check_dispatch(40, 3, 256, 200, 28); /* the most experts */
}

/* An expert index outside [0, E) stops the program with a message rather than writing out of
 * bounds (the CPU backend asserts the same). */
Test(cuda_moe, dispatch_plan_rejects_a_bad_index, .exit_code = 1, .init = sim_silence_stderr) {
    ms_backend *be = sim_cuda(MS_F32);
    int32_t idx[6] = {0, 1, 2, 3, 9, 1}, offh[5];
    int32_t *doff = sim_garbage(be, 5 * 4), *dperm = sim_garbage(be, 6 * 4),
            *dinv = sim_garbage(be, 6 * 4);
    be->dispatch_plan(be, doff, dperm, dinv, offh, sim_i32(be, idx, 6), 3, 2, 4);
}

/* ---- remap_experts ----------------------------------------------------------------------------- */

/* The table lookup of an extracted model's layer, out of place and in place, against the CPU;
 * sizes from one pair to several blocks. */
static void check_remap(int n, int E, int E_keep, uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(MS_F32);
    tu_rng r = tu_seed(seed);
    int32_t *idx = tu_ints((size_t)n), *map = tu_ints((size_t)E), *ref = tu_ints((size_t)n);
    for (int e = 0; e < E; e++) map[e] = E_keep; /* dropped */
    for (int c = 0, e = 0; c < E_keep; c++, e += E / E_keep) map[e] = c;
    for (int i = 0; i < n; i++) idx[i] = tu_randint(&r, 0, E - 1);
    cpu->remap_experts(cpu, ref, idx, map, n);

    int32_t *dmap = sim_i32(be, map, (size_t)E), *didx = sim_i32(be, idx, (size_t)n);
    int32_t *dout = sim_garbage(be, (size_t)n * 4);
    be->remap_experts(be, dout, didx, dmap, n);
    char what[96];
    snprintf(what, sizeof what, "remap_experts n %d E %d E_keep %d", n, E, E_keep);
    sim_expect_ints(what, sim_get_i32(be, dout, (size_t)n), ref, (size_t)n);
    be->remap_experts(be, didx, didx, dmap, n); /* in place */
    snprintf(what, sizeof what, "remap_experts in place n %d E %d E_keep %d", n, E, E_keep);
    sim_expect_ints(what, sim_get_i32(be, didx, (size_t)n), ref, (size_t)n);
    sim_free_all();
}

Test(cuda_moe, remap_experts) {
    check_remap(1, 4, 2, 41);      /* a single pair */
    check_remap(255, 16, 5, 42);   /* one partial block */
    check_remap(788, 24, 12, 43);  /* several blocks, the last partial */
    check_remap(1024, 8, 8, 44);   /* nothing dropped: the identity */
    check_remap(100, 256, 3, 45);  /* the most experts */
    ms_backend *be = sim_cuda(MS_F32);
    be->remap_experts(be, NULL, NULL, NULL, 0); /* no pairs: no launch */
}

/* ---- gather, combine ------------------------------------------------------------------------- */

static void check_gather(ms_dtype dt, int N, int R, int div, int D, uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(dt);
    tu_rng r = tu_seed(seed);
    float *in = tu_floats((size_t)N * D), *ref = tu_floats((size_t)R * D);
    int32_t *idx = tu_ints((size_t)R);
    tu_fill(&r, in, (size_t)N * D, -2, 2);
    sim_round_like(be, in, (size_t)N * D);
    for (int i = 0; i < R; i++) idx[i] = tu_randint(&r, 0, N * div - 1);
    cpu->gather_rows(cpu, ref, in, idx, div, R, D);
    void *out = sim_garbage(be, (size_t)R * D * be->act_size);
    be->gather_rows(be, out, sim_act(be, in, (size_t)N * D), sim_i32(be, idx, (size_t)R), div, R,
                    D);
    char what[96];
    snprintf(what, sizeof what, "gather_rows %s N %d R %d div %d D %d", dt ? "bf16" : "fp32", N, R,
             div, D);
    tu_expect_equal(what, sim_get_act(be, out, (size_t)R * D), ref, (size_t)R * D);
    sim_free_all();
}

Test(cuda_moe, gather_rows) {
    for (int dt = 0; dt < 2; dt++) {
        check_gather(dt, 1, 1, 1, 1, 31);
        check_gather(dt, 50, 200, 4, 37, 32); /* tokens into expert order, D not a block multiple */
        check_gather(dt, 64, 64, 1, 300, 33); /* a row permutation */
    }
}

/* A random permutation of [0, n). */
static void random_perm(tu_rng *r, int32_t *p, int n) {
    for (int i = 0; i < n; i++) p[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = tu_randint(r, 0, i), t = p[i];
        p[i] = p[j], p[j] = t;
    }
}

static void check_combine(ms_dtype dt, int M, int K, int D, int gated, uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(dt);
    tu_rng r = tu_seed(seed);
    size_t R = (size_t)M * K;
    float *yd = tu_floats(R * D), *gate = tu_floats(R), *ref = tu_floats((size_t)M * D);
    int32_t *inv = tu_ints(R);
    tu_fill(&r, yd, R * D, -2, 2);
    sim_round_like(be, yd, R * D);
    tu_fill(&r, gate, R, 0, 1);
    random_perm(&r, inv, (int)R);
    cpu->combine(cpu, ref, yd, gated ? gate : NULL, inv, M, K, D);
    void *y = sim_garbage(be, (size_t)M * D * be->act_size);
    be->combine(be, y, sim_act(be, yd, R * D), gated ? sim_f32(be, gate, R) : NULL,
                sim_i32(be, inv, R), M, K, D);
    char what[96];
    snprintf(what, sizeof what, "combine %s M %d K %d D %d gated %d", dt ? "bf16" : "fp32", M, K, D,
             gated);
    sim_expect_close(what, sim_get_act(be, y, (size_t)M * D), ref, (size_t)M * D, sim_tol(be));
    sim_free_all();
}

Test(cuda_moe, combine) {
    for (int dt = 0; dt < 2; dt++) {
        check_combine(dt, 1, 1, 1, 1, 41);
        check_combine(dt, 37, 12, 70, 1, 42);
        check_combine(dt, 60, 4, 130, 1, 43);
        check_combine(dt, 23, 4, 33, 0, 44); /* plain sum: gather_rows' backward */
    }
}

static void check_combine_bwd(ms_dtype dt, int M, int K, int D, int gated, int want_dyd,
                              int want_dgate, uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(dt);
    tu_rng r = tu_seed(seed);
    size_t R = (size_t)M * K;
    float *yd = tu_floats(R * D), *dy = tu_floats((size_t)M * D), *gate = tu_floats(R);
    int32_t *inv = tu_ints(R);
    tu_fill(&r, yd, R * D, -2, 2);
    tu_fill(&r, dy, (size_t)M * D, -2, 2);
    sim_round_like(be, yd, R * D);
    sim_round_like(be, dy, (size_t)M * D);
    tu_fill(&r, gate, R, 0, 1);
    random_perm(&r, inv, (int)R);
    float *ref_dyd = tu_floats(R * D), *ref_dg = tu_floats(R);
    cpu->combine_bwd(cpu, want_dyd ? ref_dyd : NULL, want_dgate ? ref_dg : NULL, dy, yd,
                     gated ? gate : NULL, inv, M, K, D);
    void *dyd = want_dyd ? sim_garbage(be, R * D * be->act_size) : NULL;
    float *dg = want_dgate ? sim_garbage(be, R * 4) : NULL;
    be->combine_bwd(be, dyd, dg, sim_act(be, dy, (size_t)M * D), sim_act(be, yd, R * D),
                    gated ? sim_f32(be, gate, R) : NULL, sim_i32(be, inv, R), M, K, D);
    char what[128];
    snprintf(what, sizeof what, "combine_bwd %s M %d K %d D %d gated %d: dyd", dt ? "bf16" : "fp32",
             M, K, D, gated);
    if (want_dyd) sim_expect_close(what, sim_get_act(be, dyd, R * D), ref_dyd, R * D, sim_tol(be));
    /* dgate is an fp32 dot product of the same (rounded) inputs on both sides. */
    snprintf(what, sizeof what, "combine_bwd %s M %d K %d D %d: dgate", dt ? "bf16" : "fp32", M, K,
             D);
    if (want_dgate) sim_expect_close(what, sim_get_f32(be, dg, R), ref_dg, R, SIM_TOL_F32);
    sim_free_all();
}

Test(cuda_moe, combine_bwd) {
    for (int dt = 0; dt < 2; dt++) {
        check_combine_bwd(dt, 1, 1, 1, 1, 1, 1, 51);
        check_combine_bwd(dt, 31, 12, 77, 1, 1, 1, 52);
        check_combine_bwd(dt, 45, 4, 129, 1, 1, 1, 53);
        check_combine_bwd(dt, 20, 5, 40, 0, 1, 0, 54); /* ungated, no gate gradient */
        check_combine_bwd(dt, 20, 5, 40, 1, 0, 1, 55); /* only the gate gradient */
    }
}

/* expert_gate_bwd on the same (rounded) inputs: dgate is an fp32 output reduced in double on
 * both sides (CPU: float blocks of 256 added in double), du and dyd are activations. */
static void check_gate_bwd(ms_dtype dt, int M, int E, int K, int H, int D, int use_bias,
                           uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(dt);
    tu_rng r = tu_seed(seed);
    size_t R = (size_t)M * K;
    float *u = tu_floats(R * H), *h = tu_floats(R * H), *rows = tu_floats(R * D);
    float *b = tu_floats((size_t)E * D), *gate = tu_floats(R);
    int32_t *idx = tu_ints(R), *inv = tu_ints(R);
    tu_fill(&r, u, R * H, -2, 2);
    tu_fill(&r, h, R * H, -2, 2);
    tu_fill(&r, rows, R * D, -2, 2);
    tu_fill(&r, b, (size_t)E * D, -1, 1);
    sim_round_like(be, u, R * H);
    sim_round_like(be, h, R * H);
    sim_round_like(be, rows, R * D);
    tu_fill(&r, gate, R, 0, 1);
    gate[0] = 0.0f; /* router_eps 0 and an underflowed probability */
    for (size_t p = 0; p < R; p++) idx[p] = tu_randint(&r, 0, E - 1);
    random_perm(&r, inv, (int)R);
    const float *bb = use_bias ? b : NULL;

    void *du = sim_act(be, u, R * H), *dyd = sim_act(be, rows, R * D);
    float *dg = sim_garbage(be, R * 4);
    float *b_dev = use_bias ? sim_f32(be, b, (size_t)E * D) : NULL;
    be->expert_gate_bwd(be, dg, du, dyd, sim_act(be, h, R * H), b_dev, sim_f32(be, gate, R),
                        sim_i32(be, idx, R), sim_i32(be, inv, R), M, K, H, D);
    float *ref_dg = tu_floats(R);
    cpu->expert_gate_bwd(cpu, ref_dg, u, rows, h, bb, gate, idx, inv, M, K, H, D);
    char what[128];
    snprintf(what, sizeof what, "expert_gate_bwd %s M %d K %d H %d D %d bias %d: dgate",
             dt ? "bf16" : "fp32", M, K, H, D, use_bias);
    sim_expect_close(what, sim_get_f32(be, dg, R), ref_dg, R, SIM_TOL_F32);
    snprintf(what, sizeof what, "expert_gate_bwd %s M %d K %d H %d D %d: du", dt ? "bf16" : "fp32",
             M, K, H, D);
    sim_expect_close(what, sim_get_act(be, du, R * H), u, R * H, sim_tol(be));
    snprintf(what, sizeof what, "expert_gate_bwd %s M %d K %d H %d D %d: dyd", dt ? "bf16" : "fp32",
             M, K, H, D);
    sim_expect_close(what, sim_get_act(be, dyd, R * D), rows, R * D, sim_tol(be));
    sim_free_all();
}

Test(cuda_moe, expert_gate_bwd) {
    for (int dt = 0; dt < 2; dt++) {
        check_gate_bwd(dt, 1, 1, 1, 1, 1, 1, 61);      /* a single row */
        check_gate_bwd(dt, 31, 16, 4, 77, 40, 1, 62);  /* MLP: bias, K < warps per block */
        check_gate_bwd(dt, 29, 15, 6, 45, 130, 0, 63); /* attention: no bias, K > warps */
        check_gate_bwd(dt, 9, 5, 5, 300, 3, 1, 64);    /* K == E, long rows */
    }
}

/* ---- mutual-information statistics and loss -------------------------------------------------- */

static void check_mi_accumulate(int M, int E, int K, uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(MS_F32);
    tu_rng r = tu_seed(seed);
    size_t ne = (size_t)M * E, nk = (size_t)M * K;
    float *logits = tu_floats(ne), *probs = tu_floats(ne), *gate = tu_floats(nk);
    int32_t *idx = tu_ints(nk);
    grid_logits(&r, logits, ne, 40);
    cpu->route(cpu, probs, idx, gate, logits, M, E, K, EPS);
    float *A = tu_floats((size_t)E), *freq = tu_floats((size_t)E);
    tu_fill(&r, A, (size_t)E, 0, 50); /* accumulates onto earlier passes */
    for (int e = 0; e < E; e++) freq[e] = (float)tu_randint(&r, 0, 100);
    float *dA = sim_f32(be, A, (size_t)E), *dfreq = sim_f32(be, freq, (size_t)E);
    cpu->mi_accumulate(cpu, A, freq, probs, idx, M, E, K, EPS);
    be->mi_accumulate(be, dA, dfreq, sim_f32(be, probs, ne), sim_i32(be, idx, nk), M, E, K, EPS);
    char what[96];
    snprintf(what, sizeof what, "mi_accumulate M %d E %d K %d: A_row", M, E, K);
    sim_expect_close(what, sim_get_f32(be, dA, (size_t)E), A, (size_t)E, SIM_TOL_F32);
    snprintf(what, sizeof what, "mi_accumulate M %d E %d K %d: freq", M, E, K);
    tu_expect_equal(what, sim_get_f32(be, dfreq, (size_t)E), freq, (size_t)E);
    sim_free_all();
}

Test(cuda_moe, mi_accumulate) {
    check_mi_accumulate(1, 2, 1, 61);
    check_mi_accumulate(300, 24, 12, 62);
    check_mi_accumulate(777, 16, 4, 63);
}

static void check_mi_loss(int T, int E, int K, int zeros, uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(MS_F32);
    tu_rng r = tu_seed(seed);
    size_t n = (size_t)T * E;
    float *A = tu_floats(n), *freq = tu_floats((size_t)E);
    tu_fill(&r, A, n, 0.5, 40);
    for (int i = 0; i < zeros; i++) A[tu_randint(&r, 0, (int)n - 1)] = 0.0f; /* P = 0 terms */
    for (int e = 0; e < E; e++) freq[e] = (float)tu_randint(&r, 1, 200);
    float loss, *dA = tu_floats(n);
    cpu->mi_loss(cpu, &loss, dA, A, freq, T, E, K, EPS, 0.005f);
    float *dloss = sim_garbage(be, 4), *ddA = sim_garbage(be, n * 4);
    be->mi_loss(be, dloss, ddA, sim_f32(be, A, n), sim_f32(be, freq, (size_t)E), T, E, K, EPS,
                0.005f);
    char what[96];
    snprintf(what, sizeof what, "mi_loss T %d E %d K %d: loss", T, E, K);
    sim_expect_close(what, sim_get_f32(be, dloss, 1), &loss, 1, SIM_TOL_F32);
    snprintf(what, sizeof what, "mi_loss T %d E %d K %d: dA", T, E, K);
    sim_expect_close(what, sim_get_f32(be, ddA, n), dA, n, SIM_TOL_F32);
    sim_free_all();
}

Test(cuda_moe, mi_loss) {
    check_mi_loss(1, 1, 1, 0, 71);
    check_mi_loss(3, 16, 4, 0, 72);
    check_mi_loss(5, 24, 12, 6, 73);
    check_mi_loss(11, 256, 17, 20, 74); /* more experts than threads in the block */
}
