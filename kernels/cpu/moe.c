/* Mixture-of-experts ops on the CPU: routing, dispatch, grouped expert GEMMs, combine and the
 * mutual-information loss of Mod-Squad.
 *
 * Relation to the official code (UMass-Foundation-Model/Mod-Squad,
 * parallel_linear/parallel_experts/moe.py, class TaskMoE; models_mt.py,
 * MTVisionTransformerMoETaskGating):
 *
 * Routing. TaskMoE.top_k_gating computes probs = softmax(logits) + 1e-4 and takes
 * probs.topk(k); the gates are those top-k values as they are, never renormalised. Adding the
 * same constant to every entry leaves the top-k order unchanged, so here route() returns the
 * pure softmax `probs` and the gates gate = probs[idx] + eps (eps = 1e-4 reproduces the
 * official gates exactly). d gate / d probs = 1, which route_bwd uses. torch.topk leaves the
 * order of ties unspecified; we break ties towards the lower expert index so every backend
 * and run agrees.
 *
 * MI statistics. update_aux_statistics does MI_task_gate[t] += probs.sum(0) with the SAME
 * probs (softmax + 1e-4), and acc_freq += (gates > 0).sum(0), where gates scatters the top-k
 * values (all > 0), i.e. the number of (token, slot) selections of each expert. models_mt.py
 * runs all T task passes and then calls get_aux_loss_and_clear once, so A[T, E] and freq[E]
 * are sums over all T passes of the step. Our mi_accumulate does exactly this:
 *   A_row[e] += sum_m (probs[m, e] + eps),  freq[e] += #{(m, j) : idx[m, j] == e}.
 *
 * MI loss. get_aux_loss_and_clear computes, with eps = 1e-4 in the four places below,
 *   tot     = sum_e freq[e] / K
 *   P[t,e]  = A[t,e] / (tot + eps)
 *   PT[t]   = sum_e P[t,e] + eps
 *   PE[e]   = sum_t P[t,e] + eps
 *   L_MI    = - sum_{t,e} P[t,e] * log( P[t,e] / PT[t] / PE[e] + eps )
 * and adds w_MI * L_MI to the loss. This is METHOD.md section 3 (L_MI = -I(T;E)) with the
 * official epsilons; mi_loss implements it in double and returns weight * L_MI. freq (hence
 * tot) is a constant: the selection counts carry no gradient.
 *
 * Gradient of L_MI (our derivation). With q = P / (PT PE), r = q + eps, w = P / r:
 *   dL/dP[t,e] = -log r[t,e] - w[t,e] / (PT[t] PE[e])
 *                + (sum_e' w[t,e'] q[t,e']) / PT[t] + (sum_t' w[t',e] q[t',e]) / PE[e]
 *   dL/dA[t,e] = dL/dP[t,e] / (tot + eps).
 * (With every eps = 0 this reduces to the familiar 1 - log q.) Terms with P[t,e] = 0 add 0 to
 * the loss (the limit of P log P); with eps = 0 their gradient is infinite, which the model
 * never meets because mi_accumulate adds eps > 0 to every probability.
 *
 * Dispatch. The official compute_gating keeps the pairs with a non-zero gate (all of them,
 * since every gate is >= eps) and sorts the flattened (token, slot) pairs by expert with
 * torch's sort, whose order within one expert is unspecified. dispatch_plan groups them the
 * same way with a stable counting sort (increasing pair p = m*K + j within an expert), so
 * the row order, and with it every GEMM's summation order, is fixed.
 */
#include "cpu.h"
#include "fast_math.h"
#include "../util.h"

#include <cblas.h>
#include <math.h>
#include <string.h>


/* ---- routing --------------------------------------------------------------------------- */

/* Position of pair (pa, ea) after (pb, eb) in the routing order: descending probability, ties
 * to the lower expert index. */
static int after(float pa, int ea, float pb, int eb) { return pa < pb || (pa == pb && ea > eb); }

/* One token: probs_row[E] = softmax(logits_row[E]), idx_row[K], gate_row[K]. */
static void route_row(float *probs_row, int32_t *idx_row, float *gate_row,
                      const float *logits_row, int E, int K, float eps) {
    float mx = logits_row[0];
    for (int e = 1; e < E; e++)
        if (logits_row[e] > mx) mx = logits_row[e];
    double sum = 0.0;
    for (int e = 0; e < E; e++) {
        float ex = expf(logits_row[e] - mx);
        probs_row[e] = ex;
        sum += ex;
    }
    float inv = (float)(1.0 / sum);
    for (int e = 0; e < E; e++) probs_row[e] *= inv;

    /* Selection by repeated scans: pick j is the best expert that comes after pick j-1 in the
     * routing order. The strict > while scanning e upward keeps the lower index among ties. */
    for (int j = 0; j < K; j++) {
        int best = -1;
        for (int e = 0; e < E; e++) {
            if (j > 0 && !after(probs_row[e], e, probs_row[idx_row[j - 1]], idx_row[j - 1]))
                continue;
            if (best < 0 || probs_row[e] > probs_row[best]) best = e;
        }
        if (best < 0) {
            /* Only reachable with NaN probabilities (diverged logits): still emit K distinct
             * valid experts so dispatch never indexes out of range. */
            for (int e = 0; e < E && best < 0; e++) {
                int used = 0;
                for (int i = 0; i < j; i++) used |= idx_row[i] == e;
                if (!used) best = e;
            }
        }
        idx_row[j] = best;
        gate_row[j] = probs_row[best] + eps;
    }
}

static void cpu_route(ms_backend *be, float *probs, int32_t *idx, float *gate,
                      const ms_act *logits, int M, int E, int K, float eps) {
    (void)be;
    MS_ASSERT(K >= 1 && K <= E);
    const float *x = CF(logits);
    long work = (long)M * E * (K + 4);
#pragma omp parallel for schedule(static) if (work >= CPU_PAR_MIN)
    for (int m = 0; m < M; m++)
        route_row(probs + (size_t)m * E, idx + (size_t)m * K, gate + (size_t)m * K,
                  x + (size_t)m * E, E, K, eps);
}

/* dprobs = dA_row + scatter(dgate); dlogits = p * (dprobs - sum(dprobs * p)). The scatter is
 * applied after the dense part so no E-sized scratch is needed. */
static void cpu_route_bwd(ms_backend *be, ms_act *dlogits, const float *dgate,
                          const float *dA_row, const float *probs, const int32_t *idx, int M,
                          int E, int K) {
    (void)be;
    float *dx = F(dlogits);
    long work = (long)M * (E + K) * 2;
#pragma omp parallel for schedule(static) if (work >= CPU_PAR_MIN)
    for (int m = 0; m < M; m++) {
        const float *p = probs + (size_t)m * E;
        const int32_t *id = idx + (size_t)m * K;
        const float *dg = dgate ? dgate + (size_t)m * K : NULL;
        float *d = dx + (size_t)m * E;
        double dot = 0.0;
        if (dA_row)
            for (int e = 0; e < E; e++) dot += (double)dA_row[e] * p[e];
        if (dg)
            for (int j = 0; j < K; j++) dot += (double)dg[j] * p[id[j]];
        for (int e = 0; e < E; e++) d[e] = (float)(p[e] * ((dA_row ? dA_row[e] : 0.0) - dot));
        if (dg)
            for (int j = 0; j < K; j++) d[id[j]] += p[id[j]] * dg[j];
    }
}

/* ---- dispatch ---------------------------------------------------------------------------- */

/* Stable counting sort of the R = M*K pairs by expert. It is O(R + E) with R at most a few
 * hundred thousand, far below what a thread fork would save, so it runs serially; serial
 * placement is stable by construction. */
static void cpu_dispatch_plan(ms_backend *be, int32_t *offsets, int32_t *perm, int32_t *inv,
                              int32_t *offsets_host, const int32_t *idx, int M, int K, int E) {
    (void)be;
    int R = M * K;
    memset(offsets, 0, (size_t)(E + 1) * sizeof *offsets);
    for (int p = 0; p < R; p++) {
        MS_ASSERT(idx[p] >= 0 && idx[p] < E);
        offsets[idx[p] + 1]++;
    }
    for (int e = 0; e < E; e++) offsets[e + 1] += offsets[e];
    /* offsets[e] serves as expert e's write cursor; afterwards it holds the end of e (= start
     * of e+1) and one shift restores the exclusive scan. */
    for (int p = 0; p < R; p++) {
        int r = offsets[idx[p]]++;
        perm[r] = p;
        inv[p] = r;
    }
    for (int e = E; e > 0; e--) offsets[e] = offsets[e - 1];
    offsets[0] = 0;
    if (offsets_host != offsets) memcpy(offsets_host, offsets, (size_t)(E + 1) * sizeof *offsets);
}

/* A table lookup over at most a few hundred thousand pairs: serial, like the dispatch it
 * feeds. Each element is read before it is written, so out may alias idx. */
static void cpu_remap_experts(ms_backend *be, int32_t *out, const int32_t *idx, const int32_t *map,
                              int n) {
    (void)be;
    for (int i = 0; i < n; i++) out[i] = map[idx[i]];
}

static void cpu_gather_rows(ms_backend *be, ms_act *out, const ms_act *in, const int32_t *idx,
                            int div, int R, int D) {
    (void)be;
    float *y = F(out);
    const float *x = CF(in);
    long work = (long)R * D;
#pragma omp parallel for schedule(static) if (work >= CPU_PAR_MIN)
    for (int r = 0; r < R; r++)
        memcpy(y + (size_t)r * D, x + (size_t)(idx[r] / div) * D, (size_t)D * sizeof(float));
}

/* Each token gathers its K expert rows (fixed j order), so no two threads touch one output. */
static void cpu_combine(ms_backend *be, ms_act *y, const ms_act *yd, const float *gate,
                        const int32_t *inv, int M, int K, int D) {
    (void)be;
    float *out = F(y);
    const float *src = CF(yd);
    long work = (long)M * K * D;
#pragma omp parallel for schedule(static) if (work >= CPU_PAR_MIN)
    for (int m = 0; m < M; m++) {
        float *o = out + (size_t)m * D;
        for (int j = 0; j < K; j++) {
            const float *row = src + (size_t)inv[(size_t)m * K + j] * D;
            float g = gate ? gate[(size_t)m * K + j] : 1.0f;
            if (j == 0)
                for (int d = 0; d < D; d++) o[d] = g * row[d];
            else
                for (int d = 0; d < D; d++) o[d] += g * row[d];
        }
    }
}

/* inv is a permutation, so the rows written for different tokens never overlap. */
static void cpu_combine_bwd(ms_backend *be, ms_act *dyd, float *dgate, const ms_act *dy,
                            const ms_act *yd, const float *gate, const int32_t *inv, int M,
                            int K, int D) {
    (void)be;
    float *dsrc = F(dyd);
    const float *g_out = CF(dy);
    const float *src = CF(yd);
    long work = (long)M * K * D * (dgate ? 2 : 1);
#pragma omp parallel for schedule(static) if (work >= CPU_PAR_MIN)
    for (int m = 0; m < M; m++) {
        const float *go = g_out + (size_t)m * D;
        for (int j = 0; j < K; j++) {
            size_t p = (size_t)m * K + j;
            size_t r = (size_t)inv[p];
            if (dsrc) {
                float g = gate ? gate[p] : 1.0f;
                float *dr = dsrc + r * D;
                for (int d = 0; d < D; d++) dr[d] = g * go[d];
            }
            if (dgate) {
                const float *row = src + r * D;
                double acc = 0.0;
                for (int d = 0; d < D; d++) acc += (double)go[d] * row[d];
                dgate[p] = (float)acc;
            }
        }
    }
}

/* Each token owns its K rows (inv is a permutation): no two threads touch one row or one
 * dgate entry. The dots read a row before it is scaled, so one pass per row does both. */
static void cpu_expert_gate_bwd(ms_backend *be, float *dgate, ms_act *du, ms_act *dyd,
                                const ms_act *h, const float *b, const float *gate,
                                const int32_t *idx, const int32_t *inv, int M, int K, int H,
                                int D) {
    (void)be;
    float *u = F(du), *g_out = F(dyd); /* [R, H], [R, D] */
    const float *hin = CF(h);          /* [R, H] */
    long work = (long)M * K * (H + D);
#pragma omp parallel for schedule(static) if (work >= CPU_PAR_MIN)
    for (int m = 0; m < M; m++) {
        for (int j = 0; j < K; j++) {
            size_t p = (size_t)m * K + j, r = (size_t)inv[p];
            float *ur = u + r * H, *dr = g_out + r * D;
            double acc = dot_blocks(ur, hin + r * H, H);
            if (b) acc += dot_blocks(dr, b + (size_t)idx[p] * D, D);
            dgate[p] = (float)acc;
            const float g = gate[p];
#pragma omp simd
            for (int i = 0; i < H; i++) ur[i] *= g;
#pragma omp simd
            for (int d = 0; d < D; d++) dr[d] *= g;
        }
    }
}

/* ---- grouped expert linear --------------------------------------------------------------- */

/* One sgemm per expert over its contiguous rows. Two ways to use the threads, measured on
 * the 2-core dev machine (R = 25k rows, E = 16, 384 x 96 and 96 x 384; R = 38k, E = 15,
 * 384 x 128; uniform and skewed expert sizes): spreading experts over threads with
 * single-threaded GEMMs (OpenBLAS runs serially inside an OpenMP region) was within 3% of
 * letting OpenBLAS thread each GEMM or up to 11% faster (skewed sizes), and about 2x faster
 * for small experts (64 x 64); but with more threads than a few experts per thread,
 * data-dependent (skewed) expert sizes leave threads idle. So experts go to threads when there
 * are at least EXPERTS_PER_THREAD busy experts per thread, else BLAS threads each GEMM. Either
 * way every output element is written by one GEMM in a fixed order: deterministic. */
#define EXPERTS_PER_THREAD 4

static int spread_experts(const int32_t *offsets_host, int E, long flops_per_row) {
    int busy = 0;
    for (int e = 0; e < E; e++) busy += offsets_host[e + 1] > offsets_host[e];
    long work = (long)offsets_host[E] * flops_per_row;
    return work >= CPU_PAR_MIN && busy >= EXPERTS_PER_THREAD * omp_get_max_threads();
}

static void cpu_expert_linear(ms_backend *be, ms_act *y, const ms_act *x, const float *w,
                              const float *b, const int32_t *offsets_host, int E, int I, int O) {
    (void)be;
    float *out = F(y);
    const float *in = CF(x);
    int spread = spread_experts(offsets_host, E, (long)I * O);
#pragma omp parallel for schedule(dynamic, 1) if (spread)
    for (int e = 0; e < E; e++) {
        int r0 = offsets_host[e], n = offsets_host[e + 1] - r0;
        if (n <= 0) continue;
        float *ye = out + (size_t)r0 * O; /* [n, O] */
        float beta = 0.0f;
        if (b) {
            const float *bias = b + (size_t)e * O;
            for (int r = 0; r < n; r++) memcpy(ye + (size_t)r * O, bias, (size_t)O * sizeof(float));
            beta = 1.0f;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, O, I, 1.0f,
                    in + (size_t)r0 * I, I, w + (size_t)e * I * O, O, beta, ye, O);
    }
}

/* db[O] += column sums of dy_e[n, O], accumulated in double in row order per column. */
static void bias_grad(float *db, const float *dy, int n, int O) {
    long work = (long)n * O;
#pragma omp parallel for schedule(static) if (work >= CPU_PAR_MIN && !omp_in_parallel())
    for (int o = 0; o < O; o++) {
        double acc = 0.0;
        for (int r = 0; r < n; r++) acc += dy[(size_t)r * O + o];
        db[o] += (float)acc;
    }
}

static void cpu_expert_linear_bwd(ms_backend *be, ms_act *dx, float *dw, float *db,
                                  const ms_act *dy, const ms_act *x, const float *w,
                                  const int32_t *offsets_host, int E, int I, int O) {
    (void)be;
    float *gin = F(dx);
    const float *gout = CF(dy);
    const float *in = CF(x);
    int spread = spread_experts(offsets_host, E, 2L * I * O);
#pragma omp parallel for schedule(dynamic, 1) if (spread)
    for (int e = 0; e < E; e++) {
        int r0 = offsets_host[e], n = offsets_host[e + 1] - r0;
        if (n <= 0) continue;
        const float *dye = gout + (size_t)r0 * O; /* [n, O] */
        const float *xe = in + (size_t)r0 * I;    /* [n, I] */
        const float *we = w + (size_t)e * I * O;  /* [I, O] */
        /* dx_e[n, I] = dy_e w_e^T */
        if (gin)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, I, O, 1.0f, dye, O, we, O,
                        0.0f, gin + (size_t)r0 * I, I);
        /* dw_e[I, O] += x_e^T dy_e */
        if (dw)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, I, O, n, 1.0f, xe, I, dye, O,
                        1.0f, dw + (size_t)e * I * O, O);
        if (db) bias_grad(db + (size_t)e * O, dye, n, O);
    }
}

/* ---- mutual-information loss --------------------------------------------------------------- */

/* Fixed number of row chunks for the probability sums: partials are combined in chunk order,
 * so A_row does not depend on the thread count. */
#define MI_CHUNKS 16

static void cpu_mi_accumulate(ms_backend *be, float *A_row, float *freq, const float *probs,
                              const int32_t *idx, int M, int E, int K, float eps) {
    (void)be;
    double part[MI_CHUNKS][E]; /* per-chunk sums of probs + eps; E is a model size (tens) */
    long work = (long)M * E;
#pragma omp parallel for schedule(static) if (work >= CPU_PAR_MIN)
    for (int c = 0; c < MI_CHUNKS; c++) {
        int m0 = (int)((long)M * c / MI_CHUNKS), m1 = (int)((long)M * (c + 1) / MI_CHUNKS);
        for (int e = 0; e < E; e++) part[c][e] = 0.0;
        for (int m = m0; m < m1; m++)
            for (int e = 0; e < E; e++) part[c][e] += (double)probs[(size_t)m * E + e] + eps;
    }
    for (int e = 0; e < E; e++) {
        double s = 0.0;
        for (int c = 0; c < MI_CHUNKS; c++) s += part[c][e];
        A_row[e] += (float)s;
    }
    /* Counts are integers: exact in float up to 2^24 per expert and step. */
    long count[E];
    for (int e = 0; e < E; e++) count[e] = 0;
    for (long p = 0; p < (long)M * K; p++) count[idx[p]]++;
    for (int e = 0; e < E; e++) freq[e] += (float)count[e];
}

static void cpu_mi_loss(ms_backend *be, float *loss, float *dA, const float *A,
                        const float *freq, int T, int E, int K, float eps, float weight) {
    (void)be;
    double tot = 0.0;
    for (int e = 0; e < E; e++) tot += freq[e];
    double S = tot / K + eps; /* normaliser of A, constant for the gradient */
    double PT[T], PE[E];      /* marginals P(t) and P(e), eps included; T and E are tens */
    for (int t = 0; t < T; t++) PT[t] = eps;
    for (int e = 0; e < E; e++) PE[e] = eps;
    for (int t = 0; t < T; t++)
        for (int e = 0; e < E; e++) {
            double P = A[(size_t)t * E + e] / S;
            PT[t] += P;
            PE[e] += P;
        }
    /* U[t] = sum_e w q, V[e] = sum_t w q: the terms of dL/dP that come through the marginals. */
    double U[T], V[E];
    for (int t = 0; t < T; t++) U[t] = 0.0;
    for (int e = 0; e < E; e++) V[e] = 0.0;
    double L = 0.0;
    for (int t = 0; t < T; t++)
        for (int e = 0; e < E; e++) {
            double P = A[(size_t)t * E + e] / S;
            if (P == 0.0) continue;
            double q = P / PT[t] / PE[e], r = q + eps;
            double wq = P / r * q;
            L -= P * log(r);
            U[t] += wq;
            V[e] += wq;
        }
    for (int t = 0; t < T; t++)
        for (int e = 0; e < E; e++) {
            double P = A[(size_t)t * E + e] / S;
            double q = P / PT[t] / PE[e], r = q + eps;
            double w = P == 0.0 ? 0.0 : P / r;
            double G = -log(r) - w / (PT[t] * PE[e]) + U[t] / PT[t] + V[e] / PE[e];
            dA[(size_t)t * E + e] = (float)(weight * G / S);
        }
    *loss = (float)(weight * L);
}

/* ---- noisy gating ------------------------------------------------------------------------ */

/* torch.nn.Softplus with beta 1 and threshold 20: linear above the threshold. */
static float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }
/* Its derivative as torch computes it: sigmoid below the threshold, 1 above. */
static float softplus_grad(float x) { return x > 20.0f ? 1.0f : 1.0f / (1.0f + expf(-x)); }

#define NOISE_EPS 1e-2f /* the official noise_epsilon */

static void cpu_noisy_logits(ms_backend *be, ms_act *y_, const ms_act *logits2,
                             const float *noise, int M, int E) {
    (void)be;
    float *y = F(y_);              /* [M, E] */
    const float *l2 = CF(logits2); /* [M, 2E]: clean | raw */
    long work = (long)M * E * 8;
#pragma omp parallel for schedule(static) if (work >= CPU_PAR_MIN)
    for (int m = 0; m < M; m++) {
        const float *clean = l2 + (size_t)m * 2 * E, *raw = clean + E;
        float *yr = y + (size_t)m * E;
        if (!noise) {
            memcpy(yr, clean, (size_t)E * sizeof(float));
            continue;
        }
        const float *nz = noise + (size_t)m * E;
        for (int e = 0; e < E; e++) yr[e] = clean[e] + nz[e] * (softplus(raw[e]) + NOISE_EPS);
    }
}

static void cpu_noisy_logits_bwd(ms_backend *be, ms_act *dlogits2, const ms_act *dy_,
                                 const ms_act *logits2, const float *noise, int M, int E) {
    (void)be;
    float *dl2 = F(dlogits2);      /* [M, 2E] */
    const float *dy = CF(dy_);     /* [M, E] */
    const float *l2 = CF(logits2); /* [M, 2E] */
    long work = (long)M * E * 8;
#pragma omp parallel for schedule(static) if (work >= CPU_PAR_MIN)
    for (int m = 0; m < M; m++) {
        const float *dyr = dy + (size_t)m * E, *raw = l2 + (size_t)m * 2 * E + E;
        float *dclean = dl2 + (size_t)m * 2 * E, *draw = dclean + E;
        memcpy(dclean, dyr, (size_t)E * sizeof(float));
        for (int e = 0; e < E; e++)
            draw[e] = noise ? dyr[e] * noise[(size_t)m * E + e] * softplus_grad(raw[e]) : 0.0f;
    }
}

/* ---- cv^2 balance loss ----------------------------------------------------------------------
 *
 * M3ViT (models/gate_funs/noisy_gate.py, NoisyGate.forward and cv_squared) adds, per gate call,
 * cv_squared(importance) + cv_squared(load) with importance = gates.sum(0) and, in training with
 * k < E, load = the smooth probability-in-top-k estimate (else the selection counts); the
 * training loop scales the sum by the loss weight. Our op receives the gates and the selection
 * of the shared routing op (softmax over all E, not renormalised over the top k) and uses the
 * selection counts as the load in every mode: that term is a constant (it reports the imbalance
 * but carries no gradient), and the importance term is the one that trains the router.
 *
 * With S = mean^2 + 1e-10 and var the unbiased variance,
 *   d cv2 / d x_e = 2 (x_e - mean) / ((E - 1) S) - var * 2 mean / (E S^2). */

#define CV_EPS 1e-10

/* cv2(x[E]) and, when grad is not NULL, its gradient scaled by `scale` into grad[E]. */
static double cv_squared(const double *x, int E, double scale, float *grad) {
    if (E < 2) {
        if (grad) grad[0] = 0.0f;
        return 0.0;
    }
    double mean = 0.0, var = 0.0;
    for (int e = 0; e < E; e++) mean += x[e];
    mean /= E;
    for (int e = 0; e < E; e++) var += (x[e] - mean) * (x[e] - mean);
    var /= E - 1;
    double S = mean * mean + CV_EPS;
    if (grad)
        for (int e = 0; e < E; e++)
            grad[e] = (float)(scale * (2.0 * (x[e] - mean) / ((E - 1) * S) -
                                       var * 2.0 * mean / (E * S * S)));
    return var / S;
}

/* Serial: O(M K + E) with M K at most a few hundred thousand, and the sums stay in one fixed
 * order. */
static void cpu_balance_loss(ms_backend *be, float *loss, float *dimp, const float *gate,
                             const int32_t *idx, int M, int E, int K, float weight) {
    (void)be;
    double importance[E], load[E]; /* E is a model size (tens) */
    for (int e = 0; e < E; e++) importance[e] = load[e] = 0.0;
    for (long p = 0; p < (long)M * K; p++) {
        MS_ASSERT(idx[p] >= 0 && idx[p] < E);
        importance[idx[p]] += gate[p];
        load[idx[p]] += 1.0;
    }
    double L = cv_squared(importance, E, weight, dimp) + cv_squared(load, E, 0.0, NULL);
    *loss = (float)(weight * L);
}

static void cpu_balance_loss_bwd(ms_backend *be, float *dgate, const float *dimp,
                                 const int32_t *idx, int M, int K) {
    (void)be;
    long n = (long)M * K;
#pragma omp parallel for schedule(static) if (n >= CPU_PAR_MIN)
    for (long p = 0; p < n; p++) dgate[p] += dimp[idx[p]];
}

/* ---- task-conditioned router ------------------------------------------------------------- */

static void cpu_router_task_bias(ms_backend *be, float *bias, const float *w, const float *v,
                                 int E, int D) {
    (void)be;
    for (int e = 0; e < E; e++) {
        double acc = 0.0;
        for (int d = 0; d < D; d++) acc += (double)w[(size_t)e * D + d] * v[d];
        bias[e] = (float)acc;
    }
}

static void cpu_router_task_bias_bwd(ms_backend *be, float *dw, float *dv, const float *dbias,
                                     const float *w, const float *v, int E, int D) {
    (void)be;
    for (int e = 0; e < E; e++)
        for (int d = 0; d < D; d++) dw[(size_t)e * D + d] += dbias[e] * v[d];
    for (int d = 0; d < D; d++) {
        double acc = 0.0;
        for (int e = 0; e < E; e++) acc += (double)w[(size_t)e * D + d] * dbias[e];
        dv[d] += (float)acc;
    }
}

void cpu_register_moe(ms_backend *be) {
    be->route = cpu_route;
    be->route_bwd = cpu_route_bwd;
    be->dispatch_plan = cpu_dispatch_plan;
    be->remap_experts = cpu_remap_experts;
    be->gather_rows = cpu_gather_rows;
    be->combine = cpu_combine;
    be->combine_bwd = cpu_combine_bwd;
    be->expert_gate_bwd = cpu_expert_gate_bwd;
    be->expert_linear = cpu_expert_linear;
    be->expert_linear_bwd = cpu_expert_linear_bwd;
    be->mi_accumulate = cpu_mi_accumulate;
    be->mi_loss = cpu_mi_loss;
    be->noisy_logits = cpu_noisy_logits;
    be->noisy_logits_bwd = cpu_noisy_logits_bwd;
    be->balance_loss = cpu_balance_loss;
    be->balance_loss_bwd = cpu_balance_loss_bwd;
    be->router_task_bias = cpu_router_task_bias;
    be->router_task_bias_bwd = cpu_router_task_bias_bwd;
}
