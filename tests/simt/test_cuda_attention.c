/* Attention on the CUDA backend (kernels/cuda/attention.cu: pointer-array batched cuBLAS GEMMs
 * through the emulator's stand-in, which also checks the pointers' alignment, and the fused row
 * softmax kernels) against the CPU ops, fp32 and bf16 activations: standard multi-head
 * attention with H >= B and B > H, multi-query attention, a single token, one head, token
 * counts that are not multiples of the warp or of 4 (the padded fp32 score rows with bf16), odd
 * head dims (bf16: the per-matrix GEMM fallback), and large scores (the softmax's max shift).
 * Every output starts as NaN garbage, so an element the op fails to write shows.
 *
 * The backward runs on both sides from the same probabilities att: the CPU forward's, rounded to
 * bf16 for bf16 activations (what the CUDA forward stores). Tolerances (harness.h): SIM_TOL_F32
 * and SIM_TOL_BF16 for every output (the largest fp32 error seen is 3e-7, in the backward with
 * scores up to 64). With bf16 activations att is also checked element by element: the scores
 * stay fp32 and each probability is rounded to bf16 once, so it is within ATT_BF16_ULP
 * (2^-8 relative, one bf16 step, which includes the half-step rounding and the fp32 noise) of
 * the CPU's; bf16 scores would miss that by up to a few percent on large scores. */
#include "harness.h"

#include <math.h>
#include <stdio.h>

#define DT(dt) ((dt) == MS_BF16 ? "bf16" : "fp32")
#define ATT_BF16_ULP (1.0 / 256)

static float *acts(ms_backend *be, tu_rng *r, size_t n, double lo, double hi) {
    float *x = tu_floats(n);
    tu_fill(r, x, n, lo, hi);
    sim_round_like(be, x, n);
    return x;
}

/* bf16 att: every probability within one bf16 step of the CPU's (see the header). */
static void expect_rounded_once(const char *what, const float *got, const float *ref, size_t n) {
    for (size_t i = 0; i < n; i++)
        cr_assert(fabs((double)got[i] - ref[i]) <= ATT_BF16_ULP * fabs(ref[i]) + 1e-30,
                  "%s: att[%zu] = %.9g, CPU %.9g: more than one bf16 step apart", what, i,
                  (double)got[i], (double)ref[i]);
}

/* att from a forward: the tolerance of the type, and for bf16 the per-element bound. */
static void expect_att(ms_backend *be, const char *what, const float *got, const float *ref,
                       size_t n) {
    sim_expect_close(what, got, ref, n, sim_tol(be));
    if (be->act_dtype == MS_BF16) expect_rounded_once(what, got, ref, n);
}

/* ---- standard multi-head attention ----------------------------------------------------------- */

static void check_attention(ms_dtype dt, int B, int N, int H, int hd, float scale,
                            uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(dt);
    tu_rng r = tu_seed(seed);
    size_t nqkv = (size_t)B * N * 3 * H * hd, no = (size_t)B * N * H * hd,
           na = (size_t)B * H * N * N;
    float *qkv = acts(be, &r, nqkv, -2, 2), *out = tu_floats(no), *att = tu_floats(na);
    cpu->attention(cpu, out, att, qkv, B, N, H, hd, scale);

    void *gqkv = sim_act(be, qkv, nqkv), *gout = sim_garbage(be, no * be->act_size),
         *gatt = sim_garbage(be, na * be->act_size);
    be->attention(be, gout, gatt, gqkv, B, N, H, hd, scale);
    char what[128];
    snprintf(what, sizeof what, "attention %s B %d N %d H %d hd %d: att", DT(dt), B, N, H, hd);
    expect_att(be, what, sim_get_act(be, gatt, na), att, na);
    snprintf(what, sizeof what, "attention %s B %d N %d H %d hd %d: out", DT(dt), B, N, H, hd);
    sim_expect_close(what, sim_get_act(be, gout, no), out, no, sim_tol(be));

    sim_round_like(be, att, na); /* both backwards from the att the CUDA forward would keep */
    float *dout = acts(be, &r, no, -1, 1), *dqkv = tu_floats(nqkv), *ws = tu_floats(na);
    cpu->attention_bwd(cpu, dqkv, ws, dout, qkv, att, B, N, H, hd, scale);
    void *gdqkv = sim_garbage(be, nqkv * be->act_size), *gws = sim_garbage(be, na * be->act_size);
    be->attention_bwd(be, gdqkv, gws, sim_act(be, dout, no), gqkv, sim_act(be, att, na), B, N, H,
                      hd, scale);
    snprintf(what, sizeof what, "attention_bwd %s B %d N %d H %d hd %d: dqkv", DT(dt), B, N, H,
             hd);
    sim_expect_close(what, sim_get_act(be, gdqkv, nqkv), dqkv, nqkv, sim_tol(be));
    sim_free_all();
}

static void attention_cases(ms_dtype dt) {
    check_attention(dt, 1, 1, 1, 1, 1.0f, 1);                 /* a single token: att = 1 */
    check_attention(dt, 1, 5, 1, 4, 0.5f, 2);                 /* one head */
    check_attention(dt, 2, 7, 3, 5, 1.0f / sqrtf(5.0f), 3);   /* batched over heads */
    check_attention(dt, 3, 33, 2, 16, 0.25f, 4);              /* batched over images, N > 32 */
    check_attention(dt, 2, 9, 2, 8, 4.0f, 5);                 /* scores up to 64: max shift */
}

Test(cuda_attention, attention_fp32) { attention_cases(MS_F32); }
Test(cuda_attention, attention_bf16) { attention_cases(MS_BF16); }

/* ---- multi-query attention ------------------------------------------------------------------- */

static void check_mq(ms_dtype dt, int B, int N, int K, int hd, float scale, uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(dt);
    tu_rng r = tu_seed(seed);
    size_t nq = (size_t)B * N * K * hd, nkv = (size_t)B * N * 2 * hd,
           na = (size_t)B * N * K * N;
    float *q = acts(be, &r, nq, -2, 2), *kv = acts(be, &r, nkv, -2, 2), *out = tu_floats(nq),
          *att = tu_floats(na);
    cpu->mq_attention(cpu, out, att, q, kv, B, N, K, hd, scale);

    void *gq = sim_act(be, q, nq), *gkv = sim_act(be, kv, nkv),
         *gout = sim_garbage(be, nq * be->act_size), *gatt = sim_garbage(be, na * be->act_size);
    be->mq_attention(be, gout, gatt, gq, gkv, B, N, K, hd, scale);
    char what[128];
    snprintf(what, sizeof what, "mq_attention %s B %d N %d K %d hd %d: att", DT(dt), B, N, K, hd);
    expect_att(be, what, sim_get_act(be, gatt, na), att, na);
    snprintf(what, sizeof what, "mq_attention %s B %d N %d K %d hd %d: out", DT(dt), B, N, K, hd);
    sim_expect_close(what, sim_get_act(be, gout, nq), out, nq, sim_tol(be));

    sim_round_like(be, att, na);
    float *dout = acts(be, &r, nq, -1, 1), *dq = tu_floats(nq), *dkv = tu_floats(nkv),
          *ws = tu_floats(na);
    cpu->mq_attention_bwd(cpu, dq, dkv, ws, dout, q, kv, att, B, N, K, hd, scale);
    void *gdq = sim_garbage(be, nq * be->act_size), *gdkv = sim_garbage(be, nkv * be->act_size),
         *gws = sim_garbage(be, na * be->act_size);
    be->mq_attention_bwd(be, gdq, gdkv, gws, sim_act(be, dout, nq), gq, gkv, sim_act(be, att, na),
                         B, N, K, hd, scale);
    snprintf(what, sizeof what, "mq_attention_bwd %s B %d N %d K %d hd %d: dq", DT(dt), B, N, K,
             hd);
    sim_expect_close(what, sim_get_act(be, gdq, nq), dq, nq, sim_tol(be));
    snprintf(what, sizeof what, "mq_attention_bwd %s B %d N %d K %d hd %d: dkv", DT(dt), B, N, K,
             hd);
    sim_expect_close(what, sim_get_act(be, gdkv, nkv), dkv, nkv, sim_tol(be));
    sim_free_all();
}

static void mq_cases(ms_dtype dt) {
    check_mq(dt, 1, 1, 1, 1, 1.0f, 11);                /* a single token and query head */
    check_mq(dt, 1, 6, 1, 7, 0.5f, 12);                /* K = 1: plain single-head attention */
    check_mq(dt, 2, 9, 3, 8, 1.0f / sqrtf(8.0f), 13);  /* several images in one batched call */
    check_mq(dt, 3, 35, 4, 16, 0.25f, 14);             /* keys over one warp */
    check_mq(dt, 2, 5, 12, 4, 4.0f, 15);               /* K = 12 as the base layer; big scores */
}

Test(cuda_attention, mq_attention_fp32) { mq_cases(MS_F32); }
Test(cuda_attention, mq_attention_bf16) { mq_cases(MS_BF16); }
