/* MoE ops of the CPU backend (kernels/cpu/moe.c) against double-precision references and
 * central finite differences. */
#include "../testutil.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#define EPS 1e-4f /* the official probability epsilon */

/* ---- double references -------------------------------------------------------------------- */

static void ref_softmax(double *p, const double *x, int E) {
    double mx = x[0], s = 0;
    for (int e = 1; e < E; e++) mx = fmax(mx, x[e]);
    for (int e = 0; e < E; e++) s += p[e] = exp(x[e] - mx);
    for (int e = 0; e < E; e++) p[e] /= s;
}

/* K largest of p[E], descending, ties to the lower index (insertion into a sorted list). */
static void ref_topk(int *idx, const double *p, int E, int K) {
    int n = 0;
    for (int e = 0; e < E; e++) {
        int pos = n;
        while (pos > 0 && p[e] > p[idx[pos - 1]]) pos--;
        if (pos >= K) continue;
        for (int i = (n < K ? n : K - 1); i > pos; i--) idx[i] = idx[i - 1];
        idx[pos] = e;
        if (n < K) n++;
    }
}

/* The official MI loss (moe.py TaskMoE.get_aux_loss_and_clear) in double, times weight. */
static double ref_mi_loss(const double *A, const double *freq, int T, int E, int K, double eps,
                          double weight) {
    double tot = 0;
    for (int e = 0; e < E; e++) tot += freq[e];
    tot /= K;
    double PT[16], PE[64], L = 0;
    cr_assert(T <= 16 && E <= 64, "reference sized for T <= 16, E <= 64");
    for (int t = 0; t < T; t++) PT[t] = eps;
    for (int e = 0; e < E; e++) PE[e] = eps;
    for (int t = 0; t < T; t++)
        for (int e = 0; e < E; e++) {
            double P = A[t * E + e] / (tot + eps);
            PT[t] += P;
            PE[e] += P;
        }
    for (int t = 0; t < T; t++)
        for (int e = 0; e < E; e++) {
            double P = A[t * E + e] / (tot + eps);
            if (P != 0) L -= P * log(P / PT[t] / PE[e] + eps);
        }
    return weight * L;
}

/* Logits with every pair of experts at least 0.3 apart within a row: no ties, and top-k sets
 * that finite-difference steps cannot flip. */
static void spaced_logits(tu_rng *r, float *x, int M, int E) {
    int perm[64];
    cr_assert(E <= 64);
    for (int m = 0; m < M; m++) {
        for (int e = 0; e < E; e++) perm[e] = e;
        for (int e = E - 1; e > 0; e--) {
            int j = tu_randint(r, 0, e), t = perm[e];
            perm[e] = perm[j], perm[j] = t;
        }
        for (int e = 0; e < E; e++)
            x[(size_t)m * E + e] = (float)(0.4 * (perm[e] - E / 2) + 0.05 * tu_uniform(r));
    }
}

/* ---- route ------------------------------------------------------------------------------- */

static void check_route(int M, int E, int K, uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    float *logits = tu_floats((size_t)M * E), *probs = tu_floats((size_t)M * E);
    float *gate = tu_floats((size_t)M * K);
    int32_t *idx = tu_ints((size_t)M * K);
    tu_fill_normal(&r, logits, (size_t)M * E, 2.0);
    be->route(be, probs, idx, gate, logits, M, E, K, EPS);

    double *pref = tu_doubles((size_t)M * E), *gref = tu_doubles((size_t)M * K);
    double *xd = tu_doubles(E);
    int iref[64];
    for (int m = 0; m < M; m++) {
        tu_to_double(xd, logits + (size_t)m * E, E);
        ref_softmax(pref + (size_t)m * E, xd, E);
        ref_topk(iref, pref + (size_t)m * E, E, K);
        for (int j = 0; j < K; j++) {
            cr_assert_eq(idx[m * K + j], iref[j], "route M=%d E=%d K=%d: idx[%d,%d] = %d, want %d",
                         M, E, K, m, j, idx[m * K + j], iref[j]);
            gref[m * K + j] = pref[(size_t)m * E + iref[j]] + (double)EPS;
        }
    }
    tu_expect_close("route probs", probs, pref, (size_t)M * E, 1e-6);
    tu_expect_close("route gate", gate, gref, (size_t)M * K, 1e-6);
}

Test(moe, route_forward) {
    check_route(1, 1, 1, 1);
    check_route(1, 7, 3, 2);
    check_route(37, 16, 4, 3);
    check_route(29, 15, 6, 4);
    check_route(11, 5, 5, 5); /* K == E */
    check_route(3000, 16, 4, 6); /* threaded */
}

Test(moe, route_ties_to_lower_index) {
    ms_backend *be = tu_cpu();
    float probs[16], gate[16];
    int32_t idx[16];
    /* All equal: idx 0..K-1, every gate 1/E + eps. */
    float flat[6] = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f};
    be->route(be, probs, idx, gate, flat, 1, 6, 4, EPS);
    for (int j = 0; j < 4; j++) {
        cr_assert_eq(idx[j], j, "all-equal logits: idx[%d] = %d", j, idx[j]);
        cr_assert_float_eq(gate[j], 1.0f / 6 + EPS, 1e-7);
    }
    /* Three-way tie at the top, then a lower one. */
    float tie3[5] = {1, 3, 3, 0, 3};
    int want3[3] = {1, 2, 4};
    be->route(be, probs, idx, gate, tie3, 1, 5, 3, EPS);
    for (int j = 0; j < 3; j++) cr_assert_eq(idx[j], want3[j], "tie3: idx[%d] = %d", j, idx[j]);
    /* K == E with two tied pairs: the full order. */
    float pairs[4] = {2, 5, 2, 5};
    int wantp[4] = {1, 3, 0, 2};
    be->route(be, probs, idx, gate, pairs, 1, 4, 4, EPS);
    for (int j = 0; j < 4; j++) cr_assert_eq(idx[j], wantp[j], "pairs: idx[%d] = %d", j, idx[j]);
    /* K == E == 1. */
    float one[1] = {-3};
    be->route(be, probs, idx, gate, one, 1, 1, 1, EPS);
    cr_assert_eq(idx[0], 0);
    cr_assert_float_eq(probs[0], 1.0f, 0);
    cr_assert_float_eq(gate[0], 1.0f + EPS, 0);
}

/* L(logits) = sum_m [ sum_j wg[m,j] gate[m,j] + sum_e dA[e] probs[m,e] ], top-k recomputed. */
typedef struct {
    int M, E, K;
    const double *wg, *dA; /* [M, K], [E]; either may be NULL */
} route_ctx;

static double route_objective(void *vctx, const double *x) {
    route_ctx *c = vctx;
    double p[64], L = 0;
    int id[64];
    for (int m = 0; m < c->M; m++) {
        ref_softmax(p, x + (size_t)m * c->E, c->E);
        ref_topk(id, p, c->E, c->K);
        if (c->wg)
            for (int j = 0; j < c->K; j++) L += c->wg[m * c->K + j] * (p[id[j]] + (double)EPS);
        if (c->dA)
            for (int e = 0; e < c->E; e++) L += c->dA[e] * p[e];
    }
    return L;
}

static void check_route_bwd(int M, int E, int K, int use_dgate, int use_dA, uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    size_t ME = (size_t)M * E, MK = (size_t)M * K;
    float *logits = tu_floats(ME), *probs = tu_floats(ME), *gate = tu_floats(MK);
    float *dgate = tu_floats(MK), *dA = tu_floats(E), *dlogits = tu_floats(ME);
    int32_t *idx = tu_ints(MK);
    spaced_logits(&r, logits, M, E);
    tu_fill(&r, dgate, MK, -1, 1);
    tu_fill(&r, dA, E, -1, 1);
    for (size_t i = 0; i < ME; i++) dlogits[i] = 1e3f; /* written, not accumulated */
    be->route(be, probs, idx, gate, logits, M, E, K, EPS);
    be->route_bwd(be, dlogits, use_dgate ? dgate : NULL, use_dA ? dA : NULL, probs, idx, M, E, K);

    double *wg = tu_doubles(MK), *dAd = tu_doubles(E), *x = tu_doubles(ME), *fd = tu_doubles(ME);
    tu_to_double(wg, dgate, MK);
    tu_to_double(dAd, dA, E);
    tu_to_double(x, logits, ME);
    route_ctx c = {M, E, K, use_dgate ? wg : NULL, use_dA ? dAd : NULL};
    tu_fd_grad(route_objective, &c, x, ME, NULL, ME, 1e-6, fd);
    if (!use_dgate && !use_dA) {
        for (size_t i = 0; i < ME; i++) cr_assert_eq(dlogits[i], 0.0f, "no upstream: dlogits 0");
        return;
    }
    tu_expect_grad("route_bwd dlogits", dlogits, fd, NULL, ME, 1e-5);
}

Test(moe, route_bwd_finite_differences) {
    check_route_bwd(9, 7, 3, 1, 0, 11);
    check_route_bwd(9, 7, 3, 0, 1, 12);
    check_route_bwd(9, 7, 3, 1, 1, 13);
    check_route_bwd(1, 5, 5, 1, 1, 14); /* M = 1, K == E */
    check_route_bwd(6, 16, 4, 1, 1, 15);
    check_route_bwd(4, 6, 2, 0, 0, 16);
}

/* ---- dispatch plan ------------------------------------------------------------------------ */

static void check_plan(const int32_t *idx, int M, int K, int E) {
    ms_backend *be = tu_cpu();
    int R = M * K;
    int32_t *off = tu_ints(E + 1), *offh = tu_ints(E + 1), *perm = tu_ints(R), *inv = tu_ints(R);
    be->dispatch_plan(be, off, perm, inv, offh, idx, M, K, E);
    int start = 0;
    for (int e = 0; e < E; e++) {
        int count = 0;
        for (int p = 0; p < R; p++) count += idx[p] == e;
        cr_assert_eq(off[e], start, "offsets[%d] = %d, want %d", e, off[e], start);
        cr_assert_eq(offh[e], start, "offsets_host[%d] = %d, want %d", e, offh[e], start);
        /* Rows of expert e: exactly its pairs, in increasing pair order (stable). */
        int prev = -1;
        for (int rr = start; rr < start + count; rr++) {
            cr_assert_eq(idx[perm[rr]], e, "row %d belongs to expert %d", rr, e);
            cr_assert(perm[rr] > prev, "expert %d rows not in increasing pair order at row %d", e,
                      rr);
            prev = perm[rr];
        }
        start += count;
    }
    cr_assert_eq(off[E], R);
    cr_assert_eq(offh[E], R);
    for (int p = 0; p < R; p++) {
        cr_assert(inv[p] >= 0 && inv[p] < R);
        cr_assert_eq(perm[inv[p]], p, "perm[inv[%d]] != %d", p, p);
    }
    for (int rr = 0; rr < R; rr++) cr_assert_eq(inv[perm[rr]], rr, "inv[perm[%d]] != %d", rr, rr);
}

Test(moe, dispatch_plan_stable_and_inverse) {
    tu_rng r = tu_seed(21);
    /* Routed indices (distinct per token), with expert 3 never chosen. */
    int M = 53, K = 3, E = 7;
    int32_t *idx = tu_ints((size_t)M * K);
    for (int m = 0; m < M; m++) {
        int n = 0;
        while (n < K) {
            int e = tu_randint(&r, 0, E - 1), dup = e == 3;
            for (int j = 0; j < n; j++) dup |= idx[m * K + j] == e;
            if (!dup) idx[m * K + n++] = e;
        }
    }
    check_plan(idx, M, K, E);
    /* Arbitrary indices with repeats, experts 0 and E-1 empty. */
    int32_t *rep = tu_ints(41 * 2);
    for (int p = 0; p < 82; p++) rep[p] = tu_randint(&r, 1, 4);
    check_plan(rep, 41, 2, 6);
    /* One token, K == E. */
    int32_t one[5] = {4, 0, 3, 1, 2};
    check_plan(one, 1, 5, 5);
    /* Every pair to one expert. */
    int32_t same[9] = {2, 2, 2, 2, 2, 2, 2, 2, 2};
    check_plan(same, 9, 1, 3);
}

Test(moe, dispatch_plan_deterministic) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(22);
    int M = 4000, K = 4, E = 16, R = M * K;
    int32_t *idx = tu_ints(R);
    for (int p = 0; p < R; p++) idx[p] = tu_randint(&r, 0, E - 1);
    int32_t *a[4], *b[4];
    for (int i = 0; i < 4; i++) a[i] = tu_ints(R + 1), b[i] = tu_ints(R + 1);
    be->dispatch_plan(be, a[0], a[1], a[2], a[3], idx, M, K, E);
    be->dispatch_plan(be, b[0], b[1], b[2], b[3], idx, M, K, E);
    cr_assert(memcmp(a[0], b[0], (E + 1) * 4) == 0 && memcmp(a[1], b[1], R * 4) == 0 &&
              memcmp(a[2], b[2], R * 4) == 0 && memcmp(a[3], b[3], (E + 1) * 4) == 0);
    check_plan(idx, M, K, E);
}

/* ---- remap_experts (extracted models) ------------------------------------------------------ */

/* out = map[idx] against a plain lookup, out of place and in place, then as an extracted layer
 * uses it: dispatch over E_keep + 1 experts puts the dropped experts' pairs last, in pair
 * order. */
Test(moe, remap_experts) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(23);
    int E = 11, kept[4] = {1, 4, 5, 9}, Ek = 4;
    int32_t map[11];
    for (int e = 0; e < E; e++) map[e] = Ek;
    for (int c = 0; c < Ek; c++) map[kept[c]] = c;
    int sizes[3] = {1, 7, 3001};
    for (int s = 0; s < 3; s++) {
        int n = sizes[s];
        int32_t *idx = tu_ints(n), *out = tu_ints(n), *copy = tu_ints(n);
        for (int i = 0; i < n; i++) idx[i] = tu_randint(&r, 0, E - 1);
        memset(out, 0xff, (size_t)n * sizeof *out);
        be->remap_experts(be, out, idx, map, n);
        for (int i = 0; i < n; i++) {
            int want = Ek;
            for (int c = 0; c < Ek; c++)
                if (kept[c] == idx[i]) want = c;
            cr_assert_eq(out[i], want, "n %d: out[%d] = %d for expert %d, want %d", n, i, out[i],
                         idx[i], want);
        }
        memcpy(copy, idx, (size_t)n * sizeof *idx);
        be->remap_experts(be, copy, copy, map, n); /* in place */
        cr_assert(memcmp(copy, out, (size_t)n * sizeof *out) == 0, "in place differs (n %d)", n);
    }
    /* n = 0 touches nothing */
    int32_t untouched = 77, src = 3;
    be->remap_experts(be, &untouched, &src, map, 0);
    cr_assert_eq(untouched, 77);

    /* The extracted layer's plan: M tokens, K slots, the dropped pairs grouped last. */
    int M = 31, K = 3, R = M * K;
    int32_t *idx = tu_ints(R), *sidx = tu_ints(R);
    for (int p = 0; p < R; p++) idx[p] = tu_randint(&r, 0, E - 1);
    be->remap_experts(be, sidx, idx, map, R);
    check_plan(sidx, M, K, Ek + 1);
    int32_t *off = tu_ints(Ek + 2), *offh = tu_ints(Ek + 2), *perm = tu_ints(R), *inv = tu_ints(R);
    be->dispatch_plan(be, off, perm, inv, offh, sidx, M, K, Ek + 1);
    int dropped = 0;
    for (int p = 0; p < R; p++) dropped += map[idx[p]] == Ek;
    cr_assert_eq(R - offh[Ek], dropped, "the null bucket holds %d pairs, want %d", R - offh[Ek],
                 dropped);
    cr_assert_gt(dropped, 0);
}

/* ---- gather / combine ---------------------------------------------------------------------- */

Test(moe, gather_rows) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(31);
    int shapes[][3] = {{1, 1, 1}, {13, 3, 5}, {7, 1, 33}, {1000, 4, 40}}; /* M, div, D */
    for (int s = 0; s < 4; s++) {
        int M = shapes[s][0], div = shapes[s][1], D = shapes[s][2], R = M * div;
        float *in = tu_floats((size_t)M * D), *out = tu_floats((size_t)R * D);
        int32_t *idx = tu_ints(R);
        tu_fill(&r, in, (size_t)M * D, -1, 1);
        for (int i = 0; i < R; i++) idx[i] = tu_randint(&r, 0, R - 1);
        be->gather_rows(be, out, in, idx, div, R, D);
        float *want = tu_floats((size_t)R * D);
        for (int i = 0; i < R; i++)
            memcpy(want + (size_t)i * D, in + (size_t)(idx[i] / div) * D, (size_t)D * 4);
        tu_expect_equal("gather_rows", out, want, (size_t)R * D);
    }
}

/* A routing (idx, inv) of M tokens over E experts, built by the op under test's own plan. */
static void make_routing(tu_rng *r, int M, int E, int K, float *gate, int32_t *idx, int32_t *off,
                         int32_t *offh, int32_t *perm, int32_t *inv) {
    ms_backend *be = tu_cpu();
    float *logits = tu_floats((size_t)M * E), *probs = tu_floats((size_t)M * E);
    tu_fill_normal(r, logits, (size_t)M * E, 1.5);
    be->route(be, probs, idx, gate, logits, M, E, K, EPS);
    be->dispatch_plan(be, off, perm, inv, offh, idx, M, K, E);
}

typedef struct {
    int M, K, D;
    const int32_t *inv;
    double *yd, *gate, *w; /* [R, D], [M, K] (NULL: plain sum), [M, D] */
} combine_ctx;

static void ref_combine(double *y, const combine_ctx *c) {
    for (int m = 0; m < c->M; m++)
        for (int d = 0; d < c->D; d++) {
            double s = 0;
            for (int j = 0; j < c->K; j++)
                s += (c->gate ? c->gate[m * c->K + j] : 1.0) *
                     c->yd[(size_t)c->inv[m * c->K + j] * c->D + d];
            y[(size_t)m * c->D + d] = s;
        }
}

static double combine_objective(void *vctx, const double *x) {
    (void)x; /* the perturbed array is one of the context's own */
    combine_ctx *c = vctx;
    double L = 0;
    for (int m = 0; m < c->M; m++)
        for (int d = 0; d < c->D; d++) {
            double s = 0;
            for (int j = 0; j < c->K; j++)
                s += (c->gate ? c->gate[m * c->K + j] : 1.0) *
                     c->yd[(size_t)c->inv[m * c->K + j] * c->D + d];
            L += c->w[(size_t)m * c->D + d] * s;
        }
    return L;
}

static void check_combine(int M, int E, int K, int D, int use_gate, uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    int R = M * K;
    float *gate = tu_floats((size_t)M * K), *yd = tu_floats((size_t)R * D);
    float *y = tu_floats((size_t)M * D), *dy = tu_floats((size_t)M * D);
    float *dyd = tu_floats((size_t)R * D), *dgate = tu_floats((size_t)M * K);
    int32_t *idx = tu_ints(R), *off = tu_ints(E + 1), *offh = tu_ints(E + 1);
    int32_t *perm = tu_ints(R), *inv = tu_ints(R);
    make_routing(&r, M, E, K, gate, idx, off, offh, perm, inv);
    tu_fill(&r, yd, (size_t)R * D, -1, 1);
    tu_fill(&r, dy, (size_t)M * D, -1, 1);
    for (size_t i = 0; i < (size_t)R * D; i++) dyd[i] = 1e3f;
    for (size_t i = 0; i < (size_t)M * K; i++) dgate[i] = 1e3f;

    const float *g = use_gate ? gate : NULL;
    be->combine(be, y, yd, g, inv, M, K, D);
    be->combine_bwd(be, dyd, dgate, dy, yd, g, inv, M, K, D);

    double *ydd = tu_doubles((size_t)R * D), *gd = tu_doubles((size_t)M * K);
    double *wd = tu_doubles((size_t)M * D), *yref = tu_doubles((size_t)M * D);
    tu_to_double(ydd, yd, (size_t)R * D);
    tu_to_double(gd, gate, (size_t)M * K);
    tu_to_double(wd, dy, (size_t)M * D);
    combine_ctx c = {M, K, D, inv, ydd, use_gate ? gd : NULL, wd};
    ref_combine(yref, &c);
    tu_expect_close("combine", y, yref, (size_t)M * D, 1e-6);

    size_t sidx[400];
    size_t n = tu_sample_indices(&r, (size_t)R * D, 400, sidx);
    double *fd = tu_doubles(n);
    tu_fd_grad(combine_objective, &c, ydd, (size_t)R * D, sidx, n, 1e-6, fd);
    tu_expect_grad("combine_bwd dyd", dyd, fd, sidx, n, 1e-6);
    if (use_gate) {
        double *fdg = tu_doubles((size_t)M * K);
        tu_fd_grad(combine_objective, &c, gd, (size_t)M * K, NULL, (size_t)M * K, 1e-6, fdg);
        tu_expect_grad("combine_bwd dgate", dgate, fdg, NULL, (size_t)M * K, 1e-6);
    }
}

Test(moe, combine_and_bwd) {
    check_combine(1, 4, 2, 3, 1, 41);
    check_combine(17, 6, 3, 9, 1, 42);
    check_combine(17, 6, 3, 9, 0, 43);
    check_combine(5, 5, 5, 1, 1, 44); /* K == E, D == 1 */
    check_combine(300, 16, 4, 33, 1, 45); /* threaded */
}

/* combine(gate NULL) is the adjoint of gather_rows(perm, div = K): <gather(u), v> = <u, combine(v)>. */
Test(moe, combine_is_adjoint_of_gather) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(46);
    int M = 23, E = 5, K = 2, D = 7, R = M * K;
    float *gate = tu_floats(M * K), *u = tu_floats(M * D), *v = tu_floats(R * D);
    float *gu = tu_floats(R * D), *cv = tu_floats(M * D);
    int32_t *idx = tu_ints(R), *off = tu_ints(E + 1), *offh = tu_ints(E + 1);
    int32_t *perm = tu_ints(R), *inv = tu_ints(R);
    make_routing(&r, M, E, K, gate, idx, off, offh, perm, inv);
    tu_fill(&r, u, M * D, -1, 1);
    tu_fill(&r, v, R * D, -1, 1);
    be->gather_rows(be, gu, u, perm, K, R, D);
    be->combine(be, cv, v, NULL, inv, M, K, D);
    double a = 0, b = 0;
    for (int i = 0; i < R * D; i++) a += (double)gu[i] * v[i];
    for (int i = 0; i < M * D; i++) b += (double)u[i] * cv[i];
    cr_assert(fabs(a - b) <= 1e-5 * fabs(a), "<gather u, v> = %.9g but <u, combine v> = %.9g", a, b);
}

/* ---- expert linear ------------------------------------------------------------------------- */

typedef struct {
    int E, I, O;
    const int32_t *off;
    double *x, *w, *b, *wy; /* [R, I], [E, I, O], [E, O] (may be NULL), [R, O] */
    double *y;              /* [R, O] scratch of the objective */
} elin_ctx;

static void ref_expert_linear(double *y, const elin_ctx *c) {
    for (int e = 0; e < c->E; e++)
        for (int rr = c->off[e]; rr < c->off[e + 1]; rr++)
            for (int o = 0; o < c->O; o++) {
                double s = c->b ? c->b[e * c->O + o] : 0;
                for (int i = 0; i < c->I; i++)
                    s += c->x[(size_t)rr * c->I + i] * c->w[((size_t)e * c->I + i) * c->O + o];
                y[(size_t)rr * c->O + o] = s;
            }
}

static double elin_objective(void *vctx, const double *xx) {
    (void)xx; /* the perturbed array is one of the context's own */
    elin_ctx *c = vctx;
    size_t R = (size_t)c->off[c->E];
    double L = 0;
    ref_expert_linear(c->y, c);
    for (size_t i = 0; i < R * c->O; i++) L += c->wy[i] * c->y[i];
    return L;
}

/* counts[E]: rows per expert (zeros allowed). */
static void check_expert_linear(const int *counts, int E, int I, int O, int use_bias,
                                uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    int32_t *off = tu_ints(E + 1);
    for (int e = 0; e < E; e++) off[e + 1] = off[e] + counts[e];
    int R = off[E];
    size_t nx = (size_t)R * I, nw = (size_t)E * I * O, nb = (size_t)E * O, ny = (size_t)R * O;
    float *x = tu_floats(nx), *w = tu_floats(nw), *b = tu_floats(nb), *y = tu_floats(ny);
    float *dy = tu_floats(ny), *dx = tu_floats(nx), *dw = tu_floats(nw), *db = tu_floats(nb);
    float *dw0 = tu_floats(nw), *db0 = tu_floats(nb);
    tu_fill(&r, x, nx, -1, 1);
    tu_fill(&r, w, nw, -0.5, 0.5);
    tu_fill(&r, b, nb, -0.5, 0.5);
    tu_fill(&r, dy, ny, -1, 1);
    tu_fill(&r, dw0, nw, -1, 1); /* non-zero start: the op must accumulate */
    tu_fill(&r, db0, nb, -1, 1);
    memcpy(dw, dw0, nw * 4);
    memcpy(db, db0, nb * 4);
    for (size_t i = 0; i < ny; i++) y[i] = NAN; /* every row must be written */
    for (size_t i = 0; i < nx; i++) dx[i] = NAN;

    const float *bb = use_bias ? b : NULL;
    be->expert_linear(be, y, x, w, bb, off, E, I, O);
    be->expert_linear_bwd(be, dx, dw, use_bias ? db : NULL, dy, x, w, off, E, I, O);

    double *xd = tu_doubles(nx), *wd = tu_doubles(nw), *bd = tu_doubles(nb);
    double *wyd = tu_doubles(ny), *yref = tu_doubles(ny);
    tu_to_double(xd, x, nx);
    tu_to_double(wd, w, nw);
    tu_to_double(bd, b, nb);
    tu_to_double(wyd, dy, ny);
    elin_ctx c = {E, I, O, off, xd, wd, use_bias ? bd : NULL, wyd, tu_doubles(ny)};
    ref_expert_linear(yref, &c);
    tu_expect_close("expert_linear", y, yref, ny, 1e-5);

    /* Accumulated gradients: compare the increment dw - dw0 with finite differences. */
    float *ddw = tu_floats(nw), *ddb = tu_floats(nb);
    for (size_t i = 0; i < nw; i++) ddw[i] = dw[i] - dw0[i];
    for (size_t i = 0; i < nb; i++) ddb[i] = db[i] - db0[i];
    size_t sidx[300];
    size_t n = tu_sample_indices(&r, nx, 300, sidx);
    double *fd = tu_doubles(nx + nw + nb);
    tu_fd_grad(elin_objective, &c, xd, nx, sidx, n, 1e-6, fd);
    tu_expect_grad("expert_linear_bwd dx", dx, fd, sidx, n, 1e-5);
    n = tu_sample_indices(&r, nw, 300, sidx);
    tu_fd_grad(elin_objective, &c, wd, nw, sidx, n, 1e-6, fd);
    tu_expect_grad("expert_linear_bwd dw", ddw, fd, sidx, n, 1e-4);
    if (use_bias) {
        tu_fd_grad(elin_objective, &c, bd, nb, NULL, nb, 1e-6, fd);
        tu_expect_grad("expert_linear_bwd db", ddb, fd, NULL, nb, 1e-4);
    } else {
        tu_expect_equal("db untouched without bias", db, db0, nb);
    }
    /* Experts with no rows: their gradients stay bit-exactly at the starting values. */
    for (int e = 0; e < E; e++)
        if (counts[e] == 0) {
            tu_expect_equal("dw of an empty expert", dw + (size_t)e * I * O, dw0 + (size_t)e * I * O,
                            (size_t)I * O);
            tu_expect_equal("db of an empty expert", db + (size_t)e * O, db0 + (size_t)e * O, O);
        }
}

Test(moe, expert_linear_and_bwd) {
    int c1[5] = {9, 0, 13, 1, 14}; /* R = 37, expert 1 empty */
    check_expert_linear(c1, 5, 7, 6, 1, 51);
    check_expert_linear(c1, 5, 7, 6, 0, 52);
    int c2[1] = {1}; /* a single row */
    check_expert_linear(c2, 1, 1, 1, 1, 53);
    int c3[3] = {0, 0, 5}; /* leading empty experts */
    check_expert_linear(c3, 3, 4, 9, 1, 54);
    int c4[16]; /* many experts with data: experts spread over threads */
    for (int e = 0; e < 16; e++) c4[e] = e == 7 ? 0 : 97 + 13 * e;
    check_expert_linear(c4, 16, 24, 20, 1, 55);
    int c5[3] = {700, 0, 555}; /* few busy experts: BLAS threads each GEMM */
    check_expert_linear(c5, 3, 40, 33, 1, 56);
}

/* Round trip: route -> plan -> gather -> expert_linear -> combine equals, per token, the
 * gate-weighted sum over its K experts of x W_e + b_e. */
Test(moe, round_trip_matches_per_token_sum) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(61);
    int M = 45, E = 6, K = 2, D = 11, O = 8, R = M * K;
    float *x = tu_floats(M * D), *logits = tu_floats(M * E), *probs = tu_floats(M * E);
    float *gate = tu_floats(M * K), *w = tu_floats(E * D * O), *b = tu_floats(E * O);
    float *xd = tu_floats(R * D), *yd = tu_floats(R * O), *y = tu_floats(M * O);
    int32_t *idx = tu_ints(R), *off = tu_ints(E + 1), *offh = tu_ints(E + 1);
    int32_t *perm = tu_ints(R), *inv = tu_ints(R);
    tu_fill(&r, x, M * D, -1, 1);
    tu_fill_normal(&r, logits, M * E, 1.0);
    for (int m = 0; m < M; m++) logits[m * E + 4] = -30; /* expert 4 never chosen */
    tu_fill(&r, w, E * D * O, -0.5, 0.5);
    tu_fill(&r, b, E * O, -0.5, 0.5);
    be->route(be, probs, idx, gate, logits, M, E, K, EPS);
    be->dispatch_plan(be, off, perm, inv, offh, idx, M, K, E);
    cr_assert_eq(offh[5] - offh[4], 0, "expert 4 should get no tokens");
    be->gather_rows(be, xd, x, perm, K, R, D);
    be->expert_linear(be, yd, xd, w, b, offh, E, D, O);
    be->combine(be, y, yd, gate, inv, M, K, O);

    double *want = tu_doubles(M * O);
    double p[8];
    int id[8];
    for (int m = 0; m < M; m++) {
        double lx[8];
        tu_to_double(lx, logits + m * E, E);
        ref_softmax(p, lx, E);
        ref_topk(id, p, E, K);
        for (int o = 0; o < O; o++) {
            double s = 0;
            for (int j = 0; j < K; j++) {
                double h = b[id[j] * O + o];
                for (int d = 0; d < D; d++) h += (double)x[m * D + d] * w[(id[j] * D + d) * O + o];
                s += (p[id[j]] + (double)EPS) * h;
            }
            want[m * O + o] = s;
        }
    }
    tu_expect_close("round trip", y, want, M * O, 1e-5);
}

/* ---- gate gradient without the expert outputs ------------------------------------------------ */

/* The output experts and the gated combine as the model's backward runs them: y[m] = sum_j
 * gate[m, j] (h[r] W_e + b_e), r = inv[m*K + j], e = idx[m*K + j]. */
typedef struct {
    int M, K, E, H, D;
    const int32_t *idx, *inv;
    double *h, *w, *b, *gate, *wy; /* [R, H], [E, H, D], [E, D] (may be NULL), [M, K], [M, D] */
} gate_ctx;

/* dy[m] . (h[r] W_e + b_e): the gate gradient the op must give, straight from its definition. */
static double ref_gate_grad(const gate_ctx *c, int m, int j) {
    size_t p = (size_t)m * c->K + j, r = (size_t)c->inv[p], e = (size_t)c->idx[p];
    double s = 0;
    for (int d = 0; d < c->D; d++) {
        double yd = c->b ? c->b[e * c->D + d] : 0;
        for (int i = 0; i < c->H; i++) yd += c->h[r * c->H + i] * c->w[(e * c->H + i) * c->D + d];
        s += c->wy[(size_t)m * c->D + d] * yd;
    }
    return s;
}

static double gate_objective(void *vctx, const double *x) {
    (void)x; /* the perturbed array is one of the context's own */
    gate_ctx *c = vctx;
    double L = 0;
    for (int m = 0; m < c->M; m++)
        for (int j = 0; j < c->K; j++) L += c->gate[m * c->K + j] * ref_gate_grad(c, m, j);
    return L;
}

/* The model's sequence (model/moe_layer.c, output_experts_bwd): ungated rows, u in the dx GEMM,
 * expert_gate_bwd, the dW GEMM; every gradient against finite differences of the objective
 * sum(dy .* y), and dgate, dh and the gated rows against their definitions in double.
 * zero_gate sets some gates to exactly 0 (router_eps = 0 with an underflowed probability). */
static void check_gate_bwd(int M, int E, int K, int H, int D, int use_bias, int zero_gate,
                           uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    int R = M * K;
    size_t nh = (size_t)R * H, nw = (size_t)E * H * D, nb = (size_t)E * D, nd = (size_t)R * D;
    float *gate = tu_floats((size_t)M * K), *h = tu_floats(nh), *w = tu_floats(nw);
    float *b = tu_floats(nb), *dy = tu_floats((size_t)M * D), *dyd = tu_floats(nd);
    float *dh = tu_floats(nh), *u = tu_floats(nh), *rows = tu_floats(nd);
    float *dgate = tu_floats((size_t)M * K), *dw = tu_floats(nw), *db = tu_floats(nb);
    float *dw0 = tu_floats(nw), *db0 = tu_floats(nb);
    int32_t *idx = tu_ints(R), *off = tu_ints(E + 1), *offh = tu_ints(E + 1);
    int32_t *perm = tu_ints(R), *inv = tu_ints(R);
    make_routing(&r, M, E, K, gate, idx, off, offh, perm, inv);
    if (zero_gate)
        for (int p = 0; p < R; p += 3) gate[p] = 0.0f;
    tu_fill(&r, h, nh, -1, 1);
    tu_fill(&r, w, nw, -0.5, 0.5);
    tu_fill(&r, b, nb, -0.5, 0.5);
    tu_fill(&r, dy, (size_t)M * D, -1, 1);
    tu_fill(&r, dw0, nw, -1, 1); /* non-zero start: weight gradients accumulate */
    tu_fill(&r, db0, nb, -1, 1);
    memcpy(dw, dw0, nw * 4);
    memcpy(db, db0, nb * 4);
    for (size_t i = 0; i < (size_t)M * K; i++) dgate[i] = NAN; /* every entry must be written */
    const float *bb = use_bias ? b : NULL;

    be->combine_bwd(be, dyd, NULL, dy, NULL, NULL, inv, M, K, D);
    be->expert_linear_bwd(be, dh, NULL, NULL, dyd, h, w, offh, E, H, D);
    memcpy(u, dh, nh * 4);
    memcpy(rows, dyd, nd * 4);
    be->expert_gate_bwd(be, dgate, dh, dyd, h, bb, gate, idx, inv, M, K, H, D);
    be->expert_linear_bwd(be, NULL, dw, use_bias ? db : NULL, dyd, h, w, offh, E, H, D);

    /* The gates are multiplied in, bit for bit as a float product. */
    float *want_dh = tu_floats(nh), *want_dyd = tu_floats(nd);
    for (int p = 0; p < R; p++) {
        size_t rr = (size_t)inv[p];
        for (int i = 0; i < H; i++) want_dh[rr * H + i] = gate[p] * u[rr * H + i];
        for (int d = 0; d < D; d++) want_dyd[rr * D + d] = gate[p] * rows[rr * D + d];
    }
    tu_expect_equal("expert_gate_bwd du", dh, want_dh, nh);
    tu_expect_equal("expert_gate_bwd dyd", dyd, want_dyd, nd);

    double *hd = tu_doubles(nh), *wd = tu_doubles(nw), *bd = tu_doubles(nb);
    double *gd = tu_doubles((size_t)M * K), *wyd = tu_doubles((size_t)M * D);
    tu_to_double(hd, h, nh);
    tu_to_double(wd, w, nw);
    tu_to_double(bd, b, nb);
    tu_to_double(gd, gate, (size_t)M * K);
    tu_to_double(wyd, dy, (size_t)M * D);
    gate_ctx c = {M, K, E, H, D, idx, inv, hd, wd, use_bias ? bd : NULL, gd, wyd};
    double *dgref = tu_doubles((size_t)M * K);
    for (int m = 0; m < M; m++)
        for (int j = 0; j < K; j++) dgref[m * K + j] = ref_gate_grad(&c, m, j);
    tu_expect_close("expert_gate_bwd dgate", dgate, dgref, (size_t)M * K, 1e-5);

    size_t sidx[300];
    double *fd = tu_doubles(nh + nw + nb + (size_t)M * K);
    size_t n = tu_sample_indices(&r, (size_t)M * K, 300, sidx);
    tu_fd_grad(gate_objective, &c, gd, (size_t)M * K, sidx, n, 1e-6, fd);
    tu_expect_grad("dgate vs finite differences", dgate, fd, sidx, n, 1e-5);
    n = tu_sample_indices(&r, nh, 300, sidx);
    tu_fd_grad(gate_objective, &c, hd, nh, sidx, n, 1e-6, fd);
    tu_expect_grad("dh vs finite differences", dh, fd, sidx, n, 1e-5);
    float *ddw = tu_floats(nw), *ddb = tu_floats(nb);
    for (size_t i = 0; i < nw; i++) ddw[i] = dw[i] - dw0[i];
    for (size_t i = 0; i < nb; i++) ddb[i] = db[i] - db0[i];
    n = tu_sample_indices(&r, nw, 300, sidx);
    tu_fd_grad(gate_objective, &c, wd, nw, sidx, n, 1e-6, fd);
    tu_expect_grad("dW vs finite differences", ddw, fd, sidx, n, 1e-4);
    if (use_bias) {
        tu_fd_grad(gate_objective, &c, bd, nb, NULL, nb, 1e-6, fd);
        tu_expect_grad("db vs finite differences", ddb, fd, NULL, nb, 1e-4);
    }
}

Test(moe, expert_gate_bwd) {
    check_gate_bwd(1, 1, 1, 1, 1, 1, 0, 81);    /* a single row */
    check_gate_bwd(13, 5, 2, 7, 9, 1, 0, 82);   /* odd sizes, with bias (MoE MLP) */
    check_gate_bwd(13, 5, 2, 7, 9, 0, 0, 83);   /* no bias (MoE attention) */
    check_gate_bwd(6, 4, 4, 3, 5, 1, 0, 84);    /* K == E */
    check_gate_bwd(21, 6, 3, 5, 4, 1, 1, 85);   /* gates exactly 0: dgate still exact */
    check_gate_bwd(300, 16, 4, 33, 20, 1, 0, 86); /* threaded; some experts may be empty */
    check_gate_bwd(40, 3, 2, 600, 7, 1, 0, 87); /* rows longer than a sum block */
}

/* Threaded expert_gate_bwd is bit-identical run to run, and equal to one thread's result. */
Test(moe, expert_gate_bwd_threaded_bit_identical) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(88);
    int M = 3000, E = 16, K = 4, H = 40, D = 24, R = M * K;
    float *gate = tu_floats((size_t)M * K), *h = tu_floats((size_t)R * H), *b = tu_floats(E * D);
    float *u = tu_floats((size_t)R * H), *rows = tu_floats((size_t)R * D);
    int32_t *idx = tu_ints(R), *off = tu_ints(E + 1), *offh = tu_ints(E + 1);
    int32_t *perm = tu_ints(R), *inv = tu_ints(R);
    make_routing(&r, M, E, K, gate, idx, off, offh, perm, inv);
    tu_fill(&r, h, (size_t)R * H, -1, 1);
    tu_fill(&r, b, E * D, -1, 1);
    tu_fill(&r, u, (size_t)R * H, -1, 1);
    tu_fill(&r, rows, (size_t)R * D, -1, 1);
    float *out[3][3];
    int max_threads = omp_get_max_threads();
    for (int run = 0; run < 3; run++) {
        float *dg = tu_floats((size_t)M * K), *du = tu_floats((size_t)R * H);
        float *dyd = tu_floats((size_t)R * D);
        memcpy(du, u, (size_t)R * H * 4);
        memcpy(dyd, rows, (size_t)R * D * 4);
        if (run == 2) omp_set_num_threads(1);
        be->expert_gate_bwd(be, dg, du, dyd, h, b, gate, idx, inv, M, K, H, D);
        if (run == 2) omp_set_num_threads(max_threads);
        out[run][0] = dg, out[run][1] = du, out[run][2] = dyd;
    }
    size_t sizes[3] = {(size_t)M * K, (size_t)R * H, (size_t)R * D};
    const char *names[3] = {"dgate", "du", "dyd"};
    for (int run = 1; run < 3; run++)
        for (int i = 0; i < 3; i++) tu_expect_equal(names[i], out[run][i], out[0][i], sizes[i]);
}

/* ---- mutual-information statistics and loss --------------------------------------------------- */

Test(moe, mi_accumulate) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(71);
    int shapes[][3] = {{1, 3, 1}, {37, 7, 3}, {3000, 16, 4}}; /* M, E, K */
    for (int s = 0; s < 3; s++) {
        int M = shapes[s][0], E = shapes[s][1], K = shapes[s][2];
        float *logits = tu_floats(M * E), *probs = tu_floats(M * E), *gate = tu_floats(M * K);
        int32_t *idx = tu_ints(M * K);
        float *A = tu_floats(E), *freq = tu_floats(E);
        tu_fill_normal(&r, logits, M * E, 1.0);
        be->route(be, probs, idx, gate, logits, M, E, K, EPS);
        double *Aref = tu_doubles(E), *fref = tu_doubles(E);
        for (int e = 0; e < E; e++) {
            A[e] = (float)(5 * e + 1); /* accumulates onto existing statistics */
            freq[e] = (float)(3 * e);
            Aref[e] = A[e];
            fref[e] = freq[e];
        }
        for (int m = 0; m < M; m++) {
            for (int e = 0; e < E; e++) Aref[e] += (double)probs[m * E + e] + (double)EPS;
            for (int j = 0; j < K; j++) fref[idx[m * K + j]] += 1;
        }
        be->mi_accumulate(be, A, freq, probs, idx, M, E, K, EPS);
        tu_expect_close("mi_accumulate A", A, Aref, E, 1e-6);
        for (int e = 0; e < E; e++)
            cr_assert_eq(freq[e], (float)fref[e], "freq[%d] = %g, want %g", e, freq[e], fref[e]);
    }
}

/* Thread-count independence of the probability sums (fixed chunking) and run-to-run equality. */
Test(moe, mi_accumulate_deterministic) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(72);
    int M = 5000, E = 15, K = 6;
    float *probs = tu_floats(M * E);
    int32_t *idx = tu_ints(M * K);
    tu_fill(&r, probs, M * E, 0, 0.2);
    for (int i = 0; i < M * K; i++) idx[i] = tu_randint(&r, 0, E - 1);
    float *A[3], *f[3];
    for (int k = 0; k < 3; k++) A[k] = tu_floats(E), f[k] = tu_floats(E);
    be->mi_accumulate(be, A[0], f[0], probs, idx, M, E, K, EPS);
    be->mi_accumulate(be, A[1], f[1], probs, idx, M, E, K, EPS);
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    be->mi_accumulate(be, A[2], f[2], probs, idx, M, E, K, EPS);
    omp_set_num_threads(nt);
    tu_expect_equal("A run twice", A[1], A[0], E);
    tu_expect_equal("A on one thread", A[2], A[0], E);
    tu_expect_equal("freq", f[1], f[0], E);
}

Test(moe, mi_loss_uniform_routing_is_zero) {
    ms_backend *be = tu_cpu();
    int T = 4, E = 8, K = 2, M = 100;
    float A[32], freq[8], dA[32], loss;
    /* Every token of every task spreads probability 1/E over all experts; each expert gets the
     * same number of selections. */
    for (int i = 0; i < T * E; i++) A[i] = M * (1.0f / E + EPS);
    for (int e = 0; e < E; e++) freq[e] = (float)(T * M * K / E);
    be->mi_loss(be, &loss, dA, A, freq, T, E, K, EPS, 1.0f);
    /* The official epsilons move q = P(t,e) / (P(t) P(e)) from 1 by about (T + 2E) eps. */
    cr_assert(fabs(loss) < 2 * (T + 2 * E) * EPS, "uniform routing: L_MI = %g, want 0 up to eps",
              loss);
    for (int i = 0; i < T * E; i++) A[i] = M * (1.0f / E);
    be->mi_loss(be, &loss, dA, A, freq, T, E, K, 0.0f, 1.0f);
    cr_assert(fabs(loss) < 1e-6, "uniform routing, eps 0: L_MI = %g, want 0", loss);
}

Test(moe, mi_loss_disjoint_experts_is_minus_log_T) {
    ms_backend *be = tu_cpu();
    int Ts[3] = {2, 3, 5};
    for (int k = 0; k < 3; k++) {
        int T = Ts[k], S = 3, E = T * S, K = 1, M = 60; /* task t owns experts t*S .. t*S+S-1 */
        float A[128], freq[128], dA[128], loss; /* T * E <= 75 */
        for (int e = 0; e < E; e++) freq[e] = (float)(M * K / S);
        for (int t = 0; t < T; t++)
            for (int e = 0; e < E; e++) A[t * E + e] = e / S == t ? (float)M / S : 0.0f;
        be->mi_loss(be, &loss, dA, A, freq, T, E, K, 0.0f, 1.0f);
        cr_assert(fabs(loss + log(T)) < 1e-6, "T=%d disjoint, eps 0: L_MI = %.9g, want -log T = %.9g",
                  T, loss, -log(T));
        /* The same routing as mi_accumulate records it, official eps, weight 0.005: the eps
         * floor on the other tasks' experts costs about (T - 1) S eps |log eps| / T of the
         * information, well under 2% here, and the value matches the official formula. */
        for (int t = 0; t < T; t++)
            for (int e = 0; e < E; e++) A[t * E + e] = M * ((e / S == t ? 1.0f / S : 0.0f) + EPS);
        be->mi_loss(be, &loss, dA, A, freq, T, E, K, EPS, 0.005f);
        double Ad[128], fd[128];
        tu_to_double(Ad, A, T * E);
        tu_to_double(fd, freq, E);
        double want = ref_mi_loss(Ad, fd, T, E, K, EPS, 0.005);
        cr_assert(fabs(loss - want) <= 1e-5 * fabs(want), "T=%d disjoint, eps 1e-4: %.9g, want %.9g",
                  T, loss, want);
        cr_assert(fabs(loss / 0.005 + log(T)) < 0.02 * log(T),
                  "T=%d disjoint, eps 1e-4: L_MI = %.9g, want about -log T = %.9g", T, loss / 0.005,
                  -log(T));
    }
}

typedef struct {
    int T, E, K;
    double eps, weight;
    const double *freq;
} mi_ctx;

static double mi_objective(void *vctx, const double *A) {
    mi_ctx *c = vctx;
    return ref_mi_loss(A, c->freq, c->T, c->E, c->K, c->eps, c->weight);
}

static void check_mi_loss(int T, int E, int K, float eps, float weight, uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    int n = T * E, M = 40;
    float *A = tu_floats(n), *freq = tu_floats(E), *dA = tu_floats(n), loss;
    /* A shaped like real statistics: each task's rows sum to M (1 + E eps). */
    for (int t = 0; t < T; t++) {
        double s = 0;
        for (int e = 0; e < E; e++) s += A[t * E + e] = (float)(0.05 + tu_uniform(&r));
        for (int e = 0; e < E; e++) A[t * E + e] = (float)(M * (A[t * E + e] / s + eps));
    }
    int left = T * M * K;
    for (int e = 0; e < E - 1; e++) {
        freq[e] = (float)tu_randint(&r, 0, left / (E - e));
        left -= (int)freq[e];
    }
    freq[E - 1] = (float)left;
    for (int i = 0; i < n; i++) dA[i] = 1e3f;
    be->mi_loss(be, &loss, dA, A, freq, T, E, K, eps, weight);

    double *Ad = tu_doubles(n), *fd = tu_doubles(E), *g = tu_doubles(n);
    tu_to_double(Ad, A, n);
    tu_to_double(fd, freq, E);
    mi_ctx c = {T, E, K, eps, weight, fd};
    double want = mi_objective(&c, Ad);
    cr_assert(fabs(loss - want) <= 1e-5 * fabs(want) + 1e-9, "mi_loss T=%d E=%d: %.9g, want %.9g",
              T, E, loss, want);
    if (T > 1) cr_assert(want < 0, "L_MI = -I(T;E) must be negative for task-dependent routing");
    tu_fd_grad(mi_objective, &c, Ad, n, NULL, n, 1e-5, g);
    tu_expect_grad("mi_loss dA", dA, g, NULL, n, 1e-5);
}

Test(moe, mi_loss_gradient) {
    check_mi_loss(3, 5, 2, EPS, 1.0f, 81);
    check_mi_loss(2, 16, 4, EPS, 0.005f, 82);
    check_mi_loss(9, 15, 6, EPS, 0.005f, 83);
    check_mi_loss(4, 6, 1, 0.0f, 1.0f, 84);
    check_mi_loss(1, 4, 2, EPS, 1.0f, 85); /* a single task: I(T;E) = 0 up to eps */
}

/* The whole MI chain of one MoE layer over T task passes: route -> mi_accumulate -> mi_loss ->
 * route_bwd(dA_row = dA[t]) against finite differences of the loss in the logits. */
typedef struct {
    int T, M, E, K;
    float weight;
    const double *freq;
} chain_ctx;

static double chain_objective(void *vctx, const double *x) {
    chain_ctx *c = vctx;
    double A[64] = {0}, p[16];
    for (int t = 0; t < c->T; t++)
        for (int m = 0; m < c->M; m++) {
            ref_softmax(p, x + ((size_t)t * c->M + m) * c->E, c->E);
            for (int e = 0; e < c->E; e++) A[t * c->E + e] += p[e] + (double)EPS;
        }
    return ref_mi_loss(A, c->freq, c->T, c->E, c->K, EPS, c->weight);
}

Test(moe, mi_chain_through_router) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(91);
    int T = 3, M = 7, E = 5, K = 2, n = T * M * E;
    float weight = 0.5f;
    float *logits = tu_floats(n), *probs = tu_floats(n), *gate = tu_floats(T * M * K);
    float *dlogits = tu_floats(n), A[15] = {0}, freq[5] = {0}, dA[15], loss;
    int32_t *idx = tu_ints(T * M * K);
    spaced_logits(&r, logits, T * M, E);
    for (int t = 0; t < T; t++) {
        be->route(be, probs + t * M * E, idx + t * M * K, gate + t * M * K, logits + t * M * E, M,
                  E, K, EPS);
        be->mi_accumulate(be, A + t * E, freq, probs + t * M * E, idx + t * M * K, M, E, K, EPS);
    }
    be->mi_loss(be, &loss, dA, A, freq, T, E, K, EPS, weight);
    for (int t = 0; t < T; t++)
        be->route_bwd(be, dlogits + t * M * E, NULL, dA + t * E, probs + t * M * E,
                      idx + t * M * K, M, E, K);

    double *x = tu_doubles(n), *fd = tu_doubles(n), fq[5];
    tu_to_double(x, logits, n);
    tu_to_double(fq, freq, E);
    chain_ctx c = {T, M, E, K, weight, fq};
    double want = chain_objective(&c, x);
    cr_assert(fabs(loss - want) <= 1e-5 * fabs(want), "chain loss %.9g, want %.9g", loss, want);
    tu_fd_grad(chain_objective, &c, x, n, NULL, n, 1e-6, fd);
    tu_expect_grad("MI loss through the router", dlogits, fd, NULL, n, 1e-4);
}

/* ---- determinism of the threaded ops ---------------------------------------------------------- */

Test(moe, threaded_ops_bit_identical) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(101);
    int M = 3000, E = 16, K = 4, D = 24, O = 20, R = M * K;
    float *logits = tu_floats(M * E), *x = tu_floats(M * D), *w = tu_floats(E * D * O);
    float *b = tu_floats(E * O), *dy = tu_floats(M * O), *dg = tu_floats(M * K);
    float *dAr = tu_floats(E);
    tu_fill_normal(&r, logits, M * E, 1.0);
    tu_fill(&r, x, M * D, -1, 1);
    tu_fill(&r, w, E * D * O, -0.5, 0.5);
    tu_fill(&r, b, E * O, -0.5, 0.5);
    tu_fill(&r, dy, M * O, -1, 1);
    tu_fill(&r, dg, M * K, -1, 1);
    tu_fill(&r, dAr, E, -1, 1);
    float *out[2][11];
    int32_t *idx[2];
    for (int run = 0; run < 2; run++) {
        float *probs = tu_floats(M * E), *gate = tu_floats(M * K), *xd = tu_floats(R * D);
        float *yd = tu_floats(R * O), *y = tu_floats(M * O), *dyd = tu_floats(R * O);
        float *dgate = tu_floats(M * K), *dxd = tu_floats(R * D), *dw = tu_floats(E * D * O);
        float *db = tu_floats(E * O), *dl = tu_floats(M * E);
        int32_t *off = tu_ints(E + 1), *offh = tu_ints(E + 1), *perm = tu_ints(R);
        int32_t *inv = tu_ints(R);
        idx[run] = tu_ints(R);
        be->route(be, probs, idx[run], gate, logits, M, E, K, EPS);
        be->dispatch_plan(be, off, perm, inv, offh, idx[run], M, K, E);
        be->gather_rows(be, xd, x, perm, K, R, D);
        be->expert_linear(be, yd, xd, w, b, offh, E, D, O);
        be->combine(be, y, yd, gate, inv, M, K, O);
        be->combine_bwd(be, dyd, dgate, dy, yd, gate, inv, M, K, O);
        be->expert_linear_bwd(be, dxd, dw, db, dyd, xd, w, offh, E, D, O);
        be->route_bwd(be, dl, dg, dAr, probs, idx[run], M, E, K);
        float *list[11] = {probs, gate, xd, yd, y, dyd, dgate, dxd, dw, db, dl};
        memcpy(out[run], list, sizeof list);
    }
    size_t sizes[11] = {M * E, M * K, R * D, R * O, M * O, R * O, M * K, R * D, E * D * O, E * O,
                        M * E};
    const char *names[11] = {"probs", "gate", "gathered", "expert out", "combined", "dyd",
                             "dgate", "dx", "dw", "db", "dlogits"};
    cr_assert(memcmp(idx[0], idx[1], R * sizeof(int32_t)) == 0, "idx differs between runs");
    for (int i = 0; i < 11; i++) tu_expect_equal(names[i], out[1][i], out[0][i], sizes[i]);
}

/* ---- noisy gating --------------------------------------------------------------------------- */

static double ref_softplus(double x) { return x > 20 ? x : log1p(exp(x)); }

typedef struct {
    int M, E;
    const double *noise, *w; /* [M, E] each; noise may be NULL */
} noisy_ctx;

static void ref_noisy(double *y, const noisy_ctx *c, const double *l2) {
    for (int m = 0; m < c->M; m++)
        for (int e = 0; e < c->E; e++) {
            const double *row = l2 + (size_t)m * 2 * c->E;
            double n = c->noise ? c->noise[(size_t)m * c->E + e] : 0.0;
            y[(size_t)m * c->E + e] = row[e] + n * (ref_softplus(row[c->E + e]) + 1e-2);
        }
}

static double noisy_objective(void *vctx, const double *l2) {
    noisy_ctx *c = vctx;
    double y[4096], L = 0;
    ref_noisy(y, c, l2);
    for (int i = 0; i < c->M * c->E; i++) L += c->w[i] * y[i];
    return L;
}

static void check_noisy(int M, int E, int use_noise, uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    size_t ME = (size_t)M * E;
    cr_assert(ME <= 2048);
    float *l2 = tu_floats(2 * ME), *noise = tu_floats(ME), *y = tu_floats(ME);
    float *dy = tu_floats(ME), *dl2 = tu_floats(2 * ME);
    tu_fill_normal(&r, l2, 2 * ME, 2.0);
    l2[E] = 25.0f; /* a raw value above softplus's linear threshold */
    if (M > 1) l2[3 * E - 1] = -30.0f;
    tu_fill_normal(&r, noise, ME, 1.0);
    tu_fill(&r, dy, ME, -1, 1);
    tu_fill_nan(y, ME);
    tu_fill_nan(dl2, 2 * ME);
    be->noisy_logits(be, y, l2, use_noise ? noise : NULL, M, E);
    be->noisy_logits_bwd(be, dl2, dy, l2, use_noise ? noise : NULL, M, E);

    double *l2d = tu_doubles(2 * ME), *nd = tu_doubles(ME), *wd = tu_doubles(ME);
    double *yref = tu_doubles(ME), *fd = tu_doubles(2 * ME);
    tu_to_double(l2d, l2, 2 * ME);
    tu_to_double(nd, noise, ME);
    tu_to_double(wd, dy, ME);
    noisy_ctx c = {M, E, use_noise ? nd : NULL, wd};
    ref_noisy(yref, &c, l2d);
    tu_expect_close("noisy_logits", y, yref, ME, 1e-6);
    tu_fd_grad(noisy_objective, &c, l2d, 2 * ME, NULL, 2 * ME, 1e-6, fd);
    tu_expect_grad("noisy_logits_bwd", dl2, fd, NULL, 2 * ME, 1e-5);
    if (!use_noise)
        for (size_t i = 0; i < ME; i++) {
            cr_assert_eq(y[i], l2[(i / E) * 2 * E + i % E], "no noise: y is the clean half");
            cr_assert_eq(dl2[(i / E) * 2 * E + E + i % E], 0.0f, "no noise: no raw gradient");
        }
}

Test(moe, noisy_logits_and_bwd) {
    check_noisy(1, 1, 1, 201);
    check_noisy(7, 5, 1, 202);
    check_noisy(33, 16, 1, 203);
    check_noisy(9, 4, 0, 204);
}

Test(moe, noisy_logits_threaded_bit_identical) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(205);
    int M = 4000, E = 16;
    float *l2 = tu_floats(2 * M * E), *noise = tu_floats(M * E), *dy = tu_floats(M * E);
    tu_fill_normal(&r, l2, 2 * M * E, 2.0);
    tu_fill_normal(&r, noise, M * E, 1.0);
    tu_fill(&r, dy, M * E, -1, 1);
    float *y[2], *dl[2];
    for (int run = 0; run < 2; run++) {
        y[run] = tu_floats(M * E), dl[run] = tu_floats(2 * M * E);
        be->noisy_logits(be, y[run], l2, noise, M, E);
        be->noisy_logits_bwd(be, dl[run], dy, l2, noise, M, E);
    }
    tu_expect_equal("noisy_logits", y[1], y[0], M * E);
    tu_expect_equal("noisy_logits_bwd", dl[1], dl[0], 2 * M * E);
}

/* ---- cv^2 balance loss ------------------------------------------------------------------------ */

static double ref_cv2(const double *x, int E) {
    if (E < 2) return 0;
    double mean = 0, var = 0;
    for (int e = 0; e < E; e++) mean += x[e];
    mean /= E;
    for (int e = 0; e < E; e++) var += (x[e] - mean) * (x[e] - mean);
    return var / (E - 1) / (mean * mean + 1e-10);
}

typedef struct {
    int M, E, K;
    const int32_t *idx;
    double weight;
} balance_ctx;

static double balance_objective(void *vctx, const double *gate) {
    balance_ctx *c = vctx;
    double imp[64] = {0}, load[64] = {0};
    for (int p = 0; p < c->M * c->K; p++) imp[c->idx[p]] += gate[p], load[c->idx[p]] += 1;
    return c->weight * (ref_cv2(imp, c->E) + ref_cv2(load, c->E));
}

static void check_balance(int M, int E, int K, float weight, uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    int MK = M * K;
    float *logits = tu_floats(M * E), *probs = tu_floats(M * E), *gate = tu_floats(MK);
    float *dimp = tu_floats(E), loss;
    int32_t *idx = tu_ints(MK);
    tu_fill_normal(&r, logits, M * E, 1.5);
    be->route(be, probs, idx, gate, logits, M, E, K, EPS);
    tu_fill_nan(dimp, E);
    be->balance_loss(be, &loss, dimp, gate, idx, M, E, K, weight);

    double *gd = tu_doubles(MK), *fd = tu_doubles(MK);
    tu_to_double(gd, gate, MK);
    balance_ctx c = {M, E, K, idx, weight};
    double want = balance_objective(&c, gd);
    cr_assert(fabs(loss - want) <= 1e-5 * fabs(want) + 1e-12,
              "balance_loss M=%d E=%d K=%d: %.9g, want %.9g", M, E, K, loss, want);
    tu_fd_grad(balance_objective, &c, gd, MK, NULL, MK, 1e-6, fd);
    /* The op's gate gradient: dgate = start + dimp[idx], checked against start + FD. */
    float *dgate = tu_floats(MK);
    double *want_dg = tu_doubles(MK);
    for (int p = 0; p < MK; p++) {
        dgate[p] = (float)(0.25 * (p % 5) - 0.5);
        want_dg[p] = dgate[p] + fd[p];
    }
    be->balance_loss_bwd(be, dgate, dimp, idx, M, K);
    tu_expect_close("balance_loss_bwd (accumulated)", dgate, want_dg, MK, 1e-4);
}

Test(moe, balance_loss_and_bwd) {
    check_balance(13, 4, 2, 1.0f, 301);
    check_balance(50, 16, 4, 0.01f, 302);
    check_balance(5, 6, 6, 1.0f, 303); /* K == E: every expert gets every token */
}

Test(moe, balance_loss_hand_computed) {
    ms_backend *be = tu_cpu();
    /* Two experts, top-1: three tokens on expert 0 with gate 0.5, one on expert 1 with gate 1.
     * importance (1.5, 1): mean 1.25, var 0.125 -> cv2 0.08; load (3, 1): mean 2, var 2 -> 0.5. */
    float gate[4] = {0.5f, 0.5f, 0.5f, 1.0f}, dimp[2], loss;
    int32_t idx[4] = {0, 0, 0, 1};
    be->balance_loss(be, &loss, dimp, gate, idx, 4, 2, 1, 2.0f);
    cr_assert_float_eq(loss, 2.0f * (0.08f + 0.5f), 1e-6);
    /* Balanced routing: zero loss and zero gradient. */
    float g2[4] = {0.7f, 0.7f, 0.7f, 0.7f};
    int32_t i2[4] = {0, 1, 1, 0};
    be->balance_loss(be, &loss, dimp, g2, i2, 4, 2, 1, 1.0f);
    cr_assert_float_eq(loss, 0.0f, 1e-9);
    cr_assert_float_eq(dimp[0], 0.0f, 1e-9);
    cr_assert_float_eq(dimp[1], 0.0f, 1e-9);
    /* One expert: cv2 is 0 by definition (M3ViT's cv_squared). */
    int32_t i1[4] = {0, 0, 0, 0};
    be->balance_loss(be, &loss, dimp, gate, i1, 4, 1, 1, 1.0f);
    cr_assert_eq(loss, 0.0f);
    cr_assert_eq(dimp[0], 0.0f);
}

/* ---- task-conditioned router bias ------------------------------------------------------------ */

typedef struct {
    int E, D;
    const double *wb; /* [E] objective weights */
} tbias_ctx;

/* x = [w (E*D) ; v (D)]; L = sum_e wb[e] (w v)[e]. */
static double tbias_objective(void *vctx, const double *x) {
    tbias_ctx *c = vctx;
    double L = 0;
    for (int e = 0; e < c->E; e++) {
        double acc = 0;
        for (int d = 0; d < c->D; d++) acc += x[e * c->D + d] * x[c->E * c->D + d];
        L += c->wb[e] * acc;
    }
    return L;
}

static void check_task_bias(int E, int D, uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    int n = E * D + D;
    float *x = tu_floats(n), *bias = tu_floats(E), *dbias = tu_floats(E);
    float *grad = tu_floats(n);
    tu_fill(&r, x, n, -1, 1);
    tu_fill(&r, dbias, E, -1, 1);
    tu_fill(&r, grad, n, -1, 1); /* non-zero start: both gradients accumulate */
    double *start = tu_doubles(n);
    tu_to_double(start, grad, n);
    be->router_task_bias(be, bias, x, x + E * D, E, D);
    be->router_task_bias_bwd(be, grad, grad + E * D, dbias, x, x + E * D, E, D);

    double *xd = tu_doubles(n), *ref = tu_doubles(E), *fd = tu_doubles(n), *wb = tu_doubles(E);
    tu_to_double(xd, x, n);
    tu_to_double(wb, dbias, E);
    for (int e = 0; e < E; e++) {
        ref[e] = 0;
        for (int d = 0; d < D; d++) ref[e] += xd[e * D + d] * xd[E * D + d];
    }
    tu_expect_close("router_task_bias", bias, ref, E, 1e-6);
    tbias_ctx c = {E, D, wb};
    tu_fd_grad(tbias_objective, &c, xd, n, NULL, n, 1e-6, fd);
    for (int i = 0; i < n; i++) fd[i] += start[i];
    tu_expect_close("router_task_bias_bwd (accumulated)", grad, fd, n, 1e-5);
}

Test(moe, router_task_bias_and_bwd) {
    check_task_bias(1, 1, 401);
    check_task_bias(4, 8, 402);
    check_task_bias(16, 37, 403);
}
