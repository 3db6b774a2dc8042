/* Scaled dot-product attention on the GPU: standard multi-head attention (timm's packed qkv) and
 * the multi-query attention of Mod-Squad's MoE attention layer, both as batched cuBLAS GEMMs
 * around a fused row softmax kernel.
 *
 * Semantics and GEMM calls are those of kernels/cpu/attention.c (read its header for the
 * relation to the official MoETaskAttention); tests/simt/test_cuda_attention.c compares them.
 * Both ops are one batch of attention matrices (b, h): Nq query rows over Nk keys, head dim hd,
 * every operand read in place through its leading dimension:
 *   forward   S = scale Q K^T;  P = softmax_rows(S) (kept as att);  O = P V
 *   backward  dP = dO V^T;  dS = P (dP - rowsum(dP P));  dQ = scale dS K;  dK = scale dS^T Q;
 *             dV = P^T dO.
 * Each product is ONE cublasGemmBatchedEx call over all B H (or B) matrices, whose addresses a
 * small kernel writes into a device pointer table first (pointer_tables): in the packed qkv the
 * head (b, h) starts b N 3 H hd + h hd elements in, which no single stride of a strided batch
 * expresses, and looping strided calls over min(B, H) would multiply the launches (at batch 8
 * per GPU each of those calls would be shorter than its own launch). cuBLAS cannot check the
 * alignment of addresses it reads from a table, so the fp32 score scratch pads its rows to keep
 * every matrix 16-byte aligned, and a bf16 layout that is still not aligned (an odd head dim)
 * falls back to one GEMM per matrix (gemm_all). dK and dV sum over all query rows inside one
 * GEMM, so their order is fixed as on the CPU; there are no atomics.
 *
 * Why GEMMs plus a softmax kernel and not a fused (flash) kernel. The interface keeps the
 * probabilities att for the backward, so the Nq x Nk matrix goes to memory in any case, and what
 * a fused kernel saves is the round trips of the scores. At the base config (B 64, N 197, MoE
 * attention with K 12 query heads of hd 128: 29.8 M scores, 15.3 GFLOP forward) the forward
 * moves, in bf16: Q and O 2 x 39 MB, K and V 6 MB, fp32 scores written and read 2 x 119 MB, att
 * written and read 2 x 60 MB: about 440 MB, 132 us at 3.35 TB/s against 15 us of bf16
 * tensor-core arithmetic. So it is bound by memory traffic, and a fused kernel would bring it to
 * about 145 MB (43 us), but only on tensor cores (mma / wgmma; a CUDA-core fused kernel needs
 * 15.3 GFLOP / 67 TFLOP/s = 228 us before any memory traffic), which the emulator that runs
 * every kernel in CI cannot execute. cuBLAS keeps the GEMMs on tensor cores in bf16. In fp32
 * (CUBLAS_COMPUTE_32F, no TF32) the same GEMMs take 228 us of FMA against 192 us of traffic:
 * arithmetic bound, where fusion would not help. docs/kernels.md has the per-op table.
 *
 * Precision. With bf16 activations the scores S and their gradient dP are GEMM outputs in fp32
 * (SCRATCH_SCORES), not bf16: rounding a score of 10 to bf16 moves it by up to 0.03, so its
 * probability by up to 3 %, and dS = P (dP - c) cancels. The softmax kernels read them in fp32
 * and round once, to the bf16 att and dS that the next GEMMs take (the simt test checks att
 * element by element against that). With fp32 activations S lives in att and dP in datt_ws,
 * and the softmax runs in place. Row sums are double, as on the CPU. */
#include "cuda_common.h"

#define SOFTMAX_WARPS 4 /* rows per block: one warp per row */

/* ---- fused row softmax and its backward ------------------------------------------------------ */

/* p[r, :] = softmax(s[r, :]) for rows r < rows of n values (rows of s lds apart, of p n apart):
 * max, sum of exponentials in double, normalised write (exp * (float)(1 / sum), the CPU's
 * rounding). Each lane reads s[j] before it writes p[j], so p may alias s (fp32, lds = n). */
template <typename T>
__global__ void __launch_bounds__(SOFTMAX_WARPS * 32)
    att_softmax_kernel(T *p, const float *s, size_t rows, int n, int lds) {
    int lane = threadIdx.x & 31;
    size_t r = (size_t)blockIdx.x * SOFTMAX_WARPS + (threadIdx.x >> 5);
    if (r >= rows) return; /* the whole warp */
    const float *sr = s + r * lds;
    T *pr = p + r * n;
    float mx = -INFINITY;
    for (int j = lane; j < n; j += 32) mx = fmaxf(mx, sr[j]);
    mx = warp_max(mx);
    double sum = 0.0;
    for (int j = lane; j < n; j += 32) sum += expf(sr[j] - mx);
    float inv = (float)(1.0 / warp_sum(sum)); /* sum >= 1: the maximum contributes exp(0) */
    for (int j = lane; j < n; j += 32) st(&pr[j], expf(sr[j] - mx) * inv);
}

/* ds[r, :] = p (dp - sum_j dp_j p_j), the dot in double; rows of dp ldp apart, of p and ds n
 * apart. ds may alias dp (fp32, ldp = n). */
template <typename T>
__global__ void __launch_bounds__(SOFTMAX_WARPS * 32)
    att_softmax_bwd_kernel(T *ds, const float *dp, const T *p, size_t rows, int n, int ldp) {
    int lane = threadIdx.x & 31;
    size_t r = (size_t)blockIdx.x * SOFTMAX_WARPS + (threadIdx.x >> 5);
    if (r >= rows) return;
    size_t row = r * n;
    const float *dpr = dp + r * ldp;
    double dot = 0.0;
    for (int j = lane; j < n; j += 32) dot += (double)dpr[j] * ld(p[row + j]);
    float c = (float)warp_sum(dot);
    for (int j = lane; j < n; j += 32) st(&ds[row + j], ld(p[row + j]) * (dpr[j] - c));
}

template <typename T>
static void softmax_t(ms_backend *be, ms_act *p, const float *s, size_t rows, int n, int lds) {
    MS_LAUNCH(att_softmax_kernel<T>, cdiv(rows, SOFTMAX_WARPS), SOFTMAX_WARPS * 32, 0,
              cuda_stream(be), (T *)p, s, rows, n, lds);
}

template <typename T>
static void softmax_bwd_t(ms_backend *be, ms_act *ds, const float *dp, const ms_act *p,
                          size_t rows, int n, int ldp) {
    MS_LAUNCH(att_softmax_bwd_kernel<T>, cdiv(rows, SOFTMAX_WARPS), SOFTMAX_WARPS * 32, 0,
              cuda_stream(be), (T *)ds, dp, (const T *)p, rows, n, ldp);
}

/* ---- batches of attention matrices ----------------------------------------------------------- */

#define PTR_THREADS 256
#define ATT_MAX_OPERANDS 10 /* the backward's distinct operands */

/* nb x nh matrices (b, h), each Nq query rows over Nk keys with head dim hd. */
struct att_shape {
    int nb, nh, Nq, Nk, hd;
};

/* An operand: matrix (b, h) starts b sb + h sh elements after p, rows ld elements apart. */
struct att_operand {
    const void *p;
    cudaDataType type;
    int ld;
    long long sb, sh;
};

/* An [Nq, Nk] matrix per (b, h) with rows ld apart, matrices in (b, h) order: att, datt_ws
 * (ld = Nk), the fp32 score scratch. */
static att_operand dense_scores(const void *p, cudaDataType type, const att_shape &s, int ld) {
    long long m = (long long)s.Nq * ld;
    att_operand o = {p, type, ld, m * s.nh, m};
    return o;
}

static size_t type_size(cudaDataType t) { return t == CUDA_R_32F ? 4 : 2; }

/* The operands' matrix addresses, as a kernel argument (strides in bytes). */
struct att_pointer_plan {
    const char *base[ATT_MAX_OPERANDS];
    long long sb[ATT_MAX_OPERANDS], sh[ATT_MAX_OPERANDS];
};

/* table[o, b nh + h] = address of matrix (b, h) of operand o, for n operands. */
__global__ void __launch_bounds__(PTR_THREADS)
    att_pointers_kernel(const void **table, att_pointer_plan plan, int n, int nb, int nh) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int per = nb * nh;
    if (i >= n * per) return;
    int o = i / per, bh = i - o * per, b = bh / nh, h = bh - b * nh;
    table[i] = plan.base[o] + b * plan.sb[o] + h * plan.sh[o];
}

/* Device tables of the n operands' matrix addresses, [n][nb nh] in SCRATCH_ATT_PTRS. cuBLAS's
 * pointer-array GEMM takes every (b, h) in one call, where a strided batch cannot: in the packed
 * qkv a head starts b N 3 H hd + h hd elements in, which is no single stride, and a loop of
 * strided calls over min(B, H) costs that many launches per GEMM. */
static const void **pointer_tables(ms_backend *be, const att_shape &s, const att_operand *ops,
                                   int n) {
    att_pointer_plan plan = {};
    for (int o = 0; o < n; o++) {
        size_t es = type_size(ops[o].type);
        plan.base[o] = (const char *)ops[o].p;
        plan.sb[o] = ops[o].sb * (long long)es;
        plan.sh[o] = ops[o].sh * (long long)es;
    }
    size_t entries = (size_t)n * s.nb * s.nh;
    const void **table =
        (const void **)cuda_scratch(be, SCRATCH_ATT_PTRS, entries * sizeof(const void *));
    MS_LAUNCH(att_pointers_kernel, cdiv(entries, PTR_THREADS), PTR_THREADS, 0, cuda_stream(be),
              table, plan, n, s.nb, s.nh);
    return table;
}

/* The alignment cuBLAS may assume, without being able to check it, for the matrices of a
 * pointer-array GEMM with bf16 operands and inner dimension K (the rule tests/simt/cublas.cc
 * enforces). */
static size_t batched_alignment(cudaDataType t, int K) {
    if (t != CUDA_R_16BF) return 1;
    return (K * 2) % 16 == 0 ? 16 : (K * 2) % 4 == 0 ? 4 : 1;
}

/* True when every matrix (b, h) of o starts on a multiple of `align` bytes. */
static bool matrices_aligned(const att_operand &o, size_t align) {
    long long es = (long long)type_size(o.type);
    return (uintptr_t)o.p % align == 0 && (size_t)(o.sb * es) % align == 0 &&
           (size_t)(o.sh * es) % align == 0;
}

static const void *matrix(const att_operand &o, int b, int h) {
    return (const char *)o.p + (b * o.sb + h * o.sh) * (long long)type_size(o.type);
}

/* C = alpha op(A) op(B) (row-major, [M, N] per matrix) for every matrix (b, h): one call with
 * the pointer table (a, b, c index the operands and their table rows). Layouts whose matrices
 * are not aligned as that call may assume (bf16 with an odd head dim, say) take one
 * cublasGemmEx per matrix instead, which checks alignment itself: correct, but nb nh calls. */
static void gemm_all(ms_backend *be, const att_shape &s, const void **table,
                     const att_operand *ops, bool ta, bool tb, int M, int N, int K, float alpha,
                     int a, int b, int c) {
    size_t per = (size_t)s.nb * s.nh;
    size_t align = batched_alignment(ops[a].type, K);
    if (matrices_aligned(ops[a], align) && matrices_aligned(ops[b], align) &&
        matrices_aligned(ops[c], align)) {
        cuda_gemm_ptr_batched(be, ta, tb, M, N, K, alpha, table + a * per, ops[a].type,
                              ops[a].ld, table + b * per, ops[b].type, ops[b].ld, 0.0f,
                              (void *const *)(table + c * per), ops[c].type, ops[c].ld, (int)per);
        return;
    }
    for (int ib = 0; ib < s.nb; ib++)
        for (int ih = 0; ih < s.nh; ih++)
            cuda_gemm(be, ta, tb, M, N, K, alpha, matrix(ops[a], ib, ih), ops[a].type, ops[a].ld,
                      matrix(ops[b], ib, ih), ops[b].type, ops[b].ld, 0.0f,
                      (void *)matrix(ops[c], ib, ih), ops[c].type, ops[c].ld);
}

/* Where the fp32 scores (or their gradient) of every matrix go. fp32 activations: `own` (att or
 * datt_ws), rows of Nk. bf16 activations: scratch with rows padded to a multiple of 4 floats, so
 * every matrix starts 16-byte aligned whatever N is. The pointer-array GEMM cannot check the
 * addresses it reads on the device, and with 16-bit operands and k = hd a multiple of 8 cuBLAS
 * may assume 16-byte aligned matrices (tests/simt/cublas.cc enforces that). */
struct score_buffer {
    float *p;
    int ld;
};

static score_buffer scores_for(ms_backend *be, const att_shape &s, ms_act *own) {
    if (be->act_dtype == MS_F32) return {(float *)own, s.Nk};
    int ld = (s.Nk + 3) / 4 * 4;
    size_t n = (size_t)s.nb * s.nh * s.Nq * ld;
    return {(float *)cuda_scratch(be, SCRATCH_SCORES, n * sizeof(float)), ld};
}

static void att_forward(ms_backend *be, const att_shape &s, const att_operand &q,
                        const att_operand &k, const att_operand &v, const att_operand &o,
                        ms_act *att, float scale) {
    cudaDataType at = cuda_act_type(be);
    score_buffer scores = scores_for(be, s, att); /* [nb, nh, Nq, ld] fp32 */
    enum { Q, K, S, P, V, O, COUNT };
    att_operand ops[COUNT] = {q, k, dense_scores(scores.p, CUDA_R_32F, s, scores.ld),
                              dense_scores(att, at, s, s.Nk), v, o};
    const void **table = pointer_tables(be, s, ops, COUNT);
    gemm_all(be, s, table, ops, false, true, s.Nq, s.Nk, s.hd, scale, Q, K, S);
    size_t rows = (size_t)s.nb * s.nh * s.Nq;
    ACT_DISPATCH(be, softmax_t, be, att, scores.p, rows, s.Nk, scores.ld);
    gemm_all(be, s, table, ops, false, false, s.Nq, s.hd, s.Nk, 1.0f, P, V, O);
}

static void att_backward(ms_backend *be, const att_shape &s, const att_operand &q,
                         const att_operand &k, const att_operand &v, const att_operand &dout,
                         const att_operand &dq, const att_operand &dk, const att_operand &dv,
                         const ms_act *att, ms_act *datt_ws, float scale) {
    cudaDataType at = cuda_act_type(be);
    score_buffer dp = scores_for(be, s, datt_ws); /* [nb, nh, Nq, ld] fp32 */
    enum { Q, K, V, DOUT, DQ, DK, DV, P, DP, DS, COUNT };
    att_operand ops[COUNT] = {q,
                              k,
                              v,
                              dout,
                              dq,
                              dk,
                              dv,
                              dense_scores(att, at, s, s.Nk),
                              dense_scores(dp.p, CUDA_R_32F, s, dp.ld),
                              dense_scores(datt_ws, at, s, s.Nk)};
    const void **table = pointer_tables(be, s, ops, COUNT);
    gemm_all(be, s, table, ops, false, true, s.Nq, s.Nk, s.hd, 1.0f, DOUT, V, DP);
    size_t rows = (size_t)s.nb * s.nh * s.Nq;
    ACT_DISPATCH(be, softmax_bwd_t, be, datt_ws, dp.p, att, rows, s.Nk, dp.ld);
    gemm_all(be, s, table, ops, false, false, s.Nq, s.hd, s.Nk, scale, DS, K, DQ);
    gemm_all(be, s, table, ops, true, false, s.Nk, s.hd, s.Nq, scale, DS, Q, DK);
    gemm_all(be, s, table, ops, true, false, s.Nk, s.hd, s.Nq, 1.0f, P, DOUT, DV);
}

/* ---- standard multi-head attention ----------------------------------------------------------- */

/* The operands of head h of image b inside qkv[B, N, 3, H, hd] (which = 0, 1, 2: q, k, v;
 * row stride 3 H hd) and out[B, N, H, hd] (row stride H hd). */
static att_operand qkv_part(const void *qkv, cudaDataType t, int N, int H, int hd, int which) {
    long long hs = (long long)H * hd;
    att_operand o = {(const char *)qkv + which * hs * type_size(t), t, (int)(3 * hs),
                     (long long)N * 3 * hs, hd};
    return o;
}

static att_operand heads_out(const void *out, cudaDataType t, int N, int H, int hd) {
    att_operand o = {out, t, H * hd, (long long)N * H * hd, hd};
    return o;
}

static void cuda_attention(ms_backend *be, ms_act *out, ms_act *att, const ms_act *qkv, int B,
                           int N, int H, int hd, float scale) {
    if (B <= 0 || N <= 0 || H <= 0 || hd <= 0) return;
    cudaDataType t = cuda_act_type(be);
    att_shape s = {B, H, N, N, hd};
    att_forward(be, s, qkv_part(qkv, t, N, H, hd, 0), qkv_part(qkv, t, N, H, hd, 1),
                qkv_part(qkv, t, N, H, hd, 2), heads_out(out, t, N, H, hd), att, scale);
}

/* dqkv[B, N, 3, H, hd] written (every element belongs to one head's dq, dk or dv);
 * datt_ws[B, H, N, N] scratch. */
static void cuda_attention_bwd(ms_backend *be, ms_act *dqkv, ms_act *datt_ws, const ms_act *dout,
                               const ms_act *qkv, const ms_act *att, int B, int N, int H, int hd,
                               float scale) {
    if (B <= 0 || N <= 0 || H <= 0 || hd <= 0) return;
    cudaDataType t = cuda_act_type(be);
    att_shape s = {B, H, N, N, hd};
    att_backward(be, s, qkv_part(qkv, t, N, H, hd, 0), qkv_part(qkv, t, N, H, hd, 1),
                 qkv_part(qkv, t, N, H, hd, 2), heads_out(dout, t, N, H, hd),
                 qkv_part(dqkv, t, N, H, hd, 0), qkv_part(dqkv, t, N, H, hd, 1),
                 qkv_part(dqkv, t, N, H, hd, 2), att, datt_ws, scale);
}

/* ---- multi-query attention (MoE attention) --------------------------------------------------- */

/* q[B, N, K, hd] and out: the N K query rows of image b are one [N K, hd] matrix. */
static att_operand mq_rows(const void *q, cudaDataType t, int N, int K, int hd) {
    att_operand o = {q, t, hd, (long long)N * K * hd, 0};
    return o;
}

/* kv[B, N, 2, hd]: k (which 0) or v (which 1) of image b, row stride 2 hd. */
static att_operand mq_kv(const void *kv, cudaDataType t, int N, int hd, int which) {
    att_operand o = {(const char *)kv + (size_t)which * hd * type_size(t), t, 2 * hd,
                     (long long)N * 2 * hd, 0};
    return o;
}

static void cuda_mq_attention(ms_backend *be, ms_act *out, ms_act *att, const ms_act *q,
                              const ms_act *kv, int B, int N, int K, int hd, float scale) {
    if (B <= 0 || N <= 0 || K <= 0 || hd <= 0) return;
    cudaDataType t = cuda_act_type(be);
    att_shape s = {B, 1, N * K, N, hd};
    att_forward(be, s, mq_rows(q, t, N, K, hd), mq_kv(kv, t, N, hd, 0), mq_kv(kv, t, N, hd, 1),
                mq_rows(out, t, N, K, hd), att, scale);
}

/* dq[B, N, K, hd] and dkv[B, N, 2, hd] written; datt_ws[B, N*K, N] scratch. */
static void cuda_mq_attention_bwd(ms_backend *be, ms_act *dq, ms_act *dkv, ms_act *datt_ws,
                                  const ms_act *dout, const ms_act *q, const ms_act *kv,
                                  const ms_act *att, int B, int N, int K, int hd, float scale) {
    if (B <= 0 || N <= 0 || K <= 0 || hd <= 0) return;
    cudaDataType t = cuda_act_type(be);
    att_shape s = {B, 1, N * K, N, hd};
    att_backward(be, s, mq_rows(q, t, N, K, hd), mq_kv(kv, t, N, hd, 0), mq_kv(kv, t, N, hd, 1),
                 mq_rows(dout, t, N, K, hd), mq_rows(dq, t, N, K, hd), mq_kv(dkv, t, N, hd, 0),
                 mq_kv(dkv, t, N, hd, 1), att, datt_ws, scale);
}

void cuda_register_attention(ms_backend *be) {
    be->attention = cuda_attention;
    be->attention_bwd = cuda_attention_bwd;
    be->mq_attention = cuda_mq_attention;
    be->mq_attention_bwd = cuda_mq_attention_bwd;
}
