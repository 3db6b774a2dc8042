/* One MoE sub-layer (METHOD.md section 2) for every task pass: router (per task, or one shared
 * router fed [token ; task embedding]), optional noisy gating, top-k without renormalisation,
 * stable dispatch, grouped expert GEMMs, gated combine; the MI statistics (modsquad) and the
 * cv^2 balance loss (m3vit).
 *
 * Official counterparts (UMass-Foundation-Model/Mod-Squad, parallel_experts/moe.py TaskMoE,
 * models_moe.py MoETaskAttention): the MoE MLP is
 *     y = sum_j gate_j * (GELU(x W1[e_j] + b1[e_j]) W2[e_j] + b2[e_j]),
 * the MoE attention ("mixture of attention heads") gives each token K query heads, one per
 * selected expert (q = x Wq[e], no bias), over ONE shared key/value head (kv_proj, with bias):
 *     y = sum_j gate_j * (softmax(q_j K^T / sqrt(hd)) V) Wo[e_j].
 * Tensors in dispatch (expert) order that are K times the size of the token stream are not
 * kept: the backward gathers the inputs again and, for the MLP, reapplies GELU; the expert
 * outputs it does without (output_experts_bwd).
 *
 * A layer of a model extracted for one task (model.kept_experts, model/extract.h) stores only
 * the kept experts but routes over all E exactly as the full model; the pairs that select a
 * dropped expert are dispatched to one extra group that computes nothing (moe_forward). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../kernels/util.h"
#include "rng.h"
#include "vit_internal.h"

#define ACT(v, n) ((size_t)(n) * (v)->be->act_size)

/* ---- parameters ----------------------------------------------------------------------------- */

/* prefix + suffix into a tensor name; names are short, so overflowing is a bug. */
static const char *tname(char *out, const char *prefix, const char *suffix) {
    int n = snprintf(out, MS_TENSOR_NAME_MAX, "%s%s", prefix, suffix);
    MS_ASSERT(n > 0 && n < MS_TENSOR_NAME_MAX);
    return out;
}

static int add1(ms_vit *v, ms_param_table *pt, const char *prefix, const char *suffix, int64_t a,
                init_kind k) {
    char name[MS_TENSOR_NAME_MAX];
    return vit_add(v, pt, tname(name, prefix, suffix), 1, &a, k, 0);
}

static int add2(ms_vit *v, ms_param_table *pt, const char *prefix, const char *suffix, int64_t a,
                int64_t b, init_kind k, double bound) {
    char name[MS_TENSOR_NAME_MAX];
    int64_t s[2] = {a, b};
    return vit_add(v, pt, tname(name, prefix, suffix), 2, s, k, bound);
}

static int add3(ms_vit *v, ms_param_table *pt, const char *prefix, const char *suffix, int64_t a,
                int64_t b, int64_t c, init_kind k, double bound) {
    char name[MS_TENSOR_NAME_MAX];
    int64_t s[3] = {a, b, c};
    return vit_add(v, pt, tname(name, prefix, suffix), 3, s, k, bound);
}

/* Names follow the official state_dict: the experts live under `mlp.` for the MoE MLP and under
 * `attn.q_proj.` for the MoE attention (the TaskMoE module is the attention's q_proj).
 * Initialisation: ParallelExperts.reset_parameters draws w ~ U(+-1/in) (1/fan_in, not
 * 1/sqrt) and b ~ U(+-1/sqrt(out)); routers and kv_proj are nn.Linear, re-initialised by the
 * model's final apply(_init_weights) to trunc_normal(.02) with zero bias. */
void moe_register(ms_vit *v, ms_param_table *pt, moe_layer *l, moe_kind kind, int block,
                  const char *prefix) {
    const ms_model_config *mc = &v->cfg->model;
    int D = v->D;
    l->kind = kind;
    l->block = block;
    l->E = kind == MOE_ATTN ? mc->attn_experts : mc->mlp_experts;
    l->K = kind == MOE_ATTN ? mc->attn_topk : mc->mlp_topk;
    l->hidden = kind == MOE_ATTN ? mc->attn_expert_dim : mc->expert_hidden;
    l->E_out = v->noisy ? 2 * l->E : l->E;
    l->E_keep = l->E;
    l->extracted = v->extracted;
    l->kept = NULL;
    l->map = NULL;
    if (l->extracted) {
        /* the config checked one list per MoE layer, indices below E, at least K of them */
        l->kept = ms_expert_sets_layer(&mc->kept_experts, l->index, &l->E_keep);
        MS_ASSERT(l->E_keep >= l->K && l->E_keep <= l->E && l->kept[l->E_keep - 1] < l->E);
    }
    l->w_in = l->b_in = l->w_out = l->b_out = l->kv_w = l->kv_b = -1;
    l->gate_tok = l->gate_task = -1;
    for (int t = 0; t < MS_MAX_TASKS; t++) l->gate_w[t] = -1, l->aux_balance[t] = -1;
    l->aux_mi = -1;
    int E = l->E_keep, Hx = l->hidden; /* expert tensors: the stored experts only */
    /* where the experts and routers live */
    char moe[MS_TENSOR_NAME_MAX];
    tname(moe, prefix, kind == MOE_ATTN ? "attn.q_proj." : "mlp.");

    l->w_in = add3(v, pt, moe, "experts.w", E, D, Hx, INIT_UNIFORM, 1.0 / D);
    if (kind == MOE_MLP) l->b_in = add2(v, pt, moe, "experts.b", E, Hx, INIT_UNIFORM, 1.0 / sqrt(Hx));
    l->w_out = add3(v, pt, moe, "output_experts.w", E, Hx, D, INIT_UNIFORM, 1.0 / Hx);
    if (kind == MOE_MLP)
        l->b_out = add2(v, pt, moe, "output_experts.b", E, D, INIT_UNIFORM, 1.0 / sqrt(D));
    if (v->shared_router) {
        /* One Linear(2D -> E') of [token ; task embedding], stored as its two column blocks so
         * that the token half is an ordinary (E', D) Linear: W = [token | task]. */
        l->gate_tok = add2(v, pt, moe, "f_gate.token.weight", l->E_out, D, INIT_TRUNC02, 0);
        l->gate_task = add2(v, pt, moe, "f_gate.task.weight", l->E_out, D, INIT_TRUNC02, 0);
    } else {
        for (int t = 0; t < v->T; t++) {
            char suffix[32];
            snprintf(suffix, sizeof suffix, "f_gate.%d.0.weight", t);
            l->gate_w[t] = add2(v, pt, moe, suffix, l->E_out, D, INIT_TRUNC02, 0);
        }
    }
    if (kind == MOE_ATTN) {
        l->kv_w = add2(v, pt, prefix, "attn.kv_proj.0.weight", 2 * Hx, D, INIT_TRUNC02, 0);
        l->kv_b = add1(v, pt, prefix, "attn.kv_proj.0.bias", 2 * Hx, INIT_ZERO);
    }
}

/* ---- activations ----------------------------------------------------------------------------- */

void moe_alloc(ms_vit *v, moe_layer *l, ms_arena *a) {
    int M = v->M, E = l->E, K = l->K, R = M * K, Hx = l->hidden, N = v->N, B = v->B;
    for (int p = 0; p < v->P; p++) {
        moe_pass *s = &l->pass[p];
        s->logits2 = v->noisy ? ms_arena_alloc(a, ACT(v, (size_t)M * 2 * E)) : NULL;
        s->noise = v->noisy ? ms_arena_alloc(a, (size_t)M * E * sizeof(float)) : NULL;
        s->probs = ms_arena_alloc(a, (size_t)M * E * sizeof(float));
        s->idx = ms_arena_alloc(a, (size_t)M * K * sizeof(int32_t));
        s->gate = ms_arena_alloc(a, (size_t)M * K * sizeof(float));
        s->offsets = ms_arena_alloc(a, (size_t)(E + 2) * sizeof(int32_t));
        s->perm = ms_arena_alloc(a, (size_t)R * sizeof(int32_t));
        s->inv = ms_arena_alloc(a, (size_t)R * sizeof(int32_t));
        s->sidx = l->extracted ? ms_arena_alloc(a, (size_t)R * sizeof(int32_t)) : NULL;
        s->dimp = v->use_balance ? ms_arena_alloc(a, (size_t)E * sizeof(float)) : NULL;
        s->task_bias = v->shared_router ? ms_arena_alloc(a, (size_t)l->E_out * sizeof(float))
                                        : NULL;
        if (l->kind == MOE_MLP) {
            s->h = ms_arena_alloc(a, ACT(v, (size_t)R * Hx));
        } else {
            s->q = ms_arena_alloc(a, ACT(v, (size_t)R * Hx));
            s->kv = ms_arena_alloc(a, ACT(v, (size_t)M * 2 * Hx));
            s->att = ms_arena_alloc(a, ACT(v, (size_t)B * N * K * N));
            s->od = ms_arena_alloc(a, ACT(v, (size_t)R * Hx));
        }
    }
    /* A and freq live in the backbone's contiguous statistics buffer (one all-reduce) */
    if (v->use_mi) l->dA = ms_arena_alloc(a, (size_t)v->T * E * sizeof(float));
    if (l->extracted) l->map = ms_arena_alloc(a, (size_t)E * sizeof(int32_t));
}

void moe_upload_map(ms_vit *v, moe_layer *l) {
    if (!l->extracted) return;
    int32_t map[l->E]; /* [E] a few dozen entries */
    for (int e = 0; e < l->E; e++) map[e] = l->E_keep;
    for (int c = 0; c < l->E_keep; c++) map[l->kept[c]] = c;
    v->be->upload(v->be, l->map, map, (size_t)l->E * sizeof(int32_t));
}

/* ---- router ---------------------------------------------------------------------------------- */

/* N(0, 1) noise of pass p: one stream per (task, MoE layer, step), counter = the token's
 * global index (rank, sample, token) times E plus the expert, so the draws do not depend on the
 * order of passes, on which other tasks run, or on the thread count. */
static void draw_noise(ms_vit *v, const moe_layer *l, int p, float *host) {
    char key[160];
    snprintf(key, sizeof key, "noise/%s/moe%d/step%lld", vit_pass_name(v, p), l->index,
             (long long)v->step);
    uint64_t stream = ms_rng_stream(key);
    uint64_t base = (uint64_t)v->rank * v->M * l->E; /* rank r's tokens follow rank r-1's */
    for (size_t i = 0; i < (size_t)v->M * l->E; i++)
        host[i] = (float)ms_rng_normal(v->rng_seed, stream, base + i);
}

static const float *task_emb(const ms_vit *v, int t) { return vp(v, v->temb) + (size_t)t * v->D; }

/* logits -> probs, idx, gate of pass p; the routing statistics. */
static void route(ms_vit *v, moe_layer *l, int p, const ms_act *xn) {
    ms_backend *be = v->be;
    moe_pass *s = &l->pass[p];
    int M = v->M, D = v->D, E = l->E, K = l->K, Eo = l->E_out;
    ms_act *lin = v->noisy ? s->logits2 : v->s.logits; /* [M, E'] */
    if (v->shared_router) {
        be->router_task_bias(be, s->task_bias, vp(v, l->gate_task), task_emb(v, p), Eo, D);
        be->linear(be, lin, xn, vp(v, l->gate_tok), s->task_bias, M, D, Eo, MS_W_OUT_IN);
    } else {
        be->linear(be, lin, xn, vp(v, l->gate_w[p]), NULL, M, D, Eo, MS_W_OUT_IN);
    }
    if (v->noisy) {
        /* M3ViT and the config key: noise in training only (the official Mod-Squad code, with
         * its `self.training` test commented out, also adds it in evaluation). */
        s->noise_used = v->training;
        if (s->noise_used) {
            draw_noise(v, l, p, v->noise_host);
            be->upload(be, s->noise, v->noise_host, (size_t)M * E * sizeof(float));
        }
        be->noisy_logits(be, v->s.logits, s->logits2, s->noise_used ? s->noise : NULL, M, E);
    }
    be->route(be, s->probs, s->idx, s->gate, v->s.logits, M, E, K, v->router_eps);
    if (v->use_mi) be->mi_accumulate(be, l->A + (size_t)p * E, l->freq, s->probs, s->idx, M, E, K,
                                     v->router_eps);
    if (v->use_balance)
        be->balance_loss(be, v->aux + l->aux_balance[p], s->dimp, s->gate, s->idx, M, E, K,
                         (float)v->cfg->model.w_balance);
    if (!l->extracted) {
        be->dispatch_plan(be, s->offsets, s->perm, s->inv, s->offsets_host, s->idx, M, K, E);
        return;
    }
    /* Extracted: a first plan over the full-model indices only for its offsets, the usage
     * counts by full-model expert (eval then shows which dropped experts the router still
     * picks; O(M K), next to nothing beside the expert GEMMs). The plan the GEMMs use groups
     * the stored experts, then the dropped experts' pairs as one extra expert E_keep. */
    be->dispatch_plan(be, s->offsets, s->perm, s->inv, s->route_offsets_host, s->idx, M, K, E);
    be->remap_experts(be, s->sidx, s->idx, l->map, M * K);
    be->dispatch_plan(be, s->offsets, s->perm, s->inv, s->offsets_host, s->sidx, M, K,
                      l->E_keep + 1);
}

/* rows [r0, R) of x[R, cols]: the dispatch rows of the pairs routed to dropped experts. */
static void zero_rows(ms_vit *v, ms_act *x, int r0, int R, int cols) {
    if (r0 < R)
        v->be->zero(v->be, (char *)x + ACT(v, (size_t)r0 * cols), ACT(v, (size_t)(R - r0) * cols));
}

/* dgate[M, K] (the gate gradient) -> dxn[M, D] += router input gradient; router gradients. */
static void route_backward(ms_vit *v, moe_layer *l, int p, const ms_act *xn, ms_act *dxn) {
    ms_backend *be = v->be;
    moe_pass *s = &l->pass[p];
    int M = v->M, D = v->D, E = l->E, K = l->K, Eo = l->E_out;
    if (v->use_balance) be->balance_loss_bwd(be, v->s.dgate, s->dimp, s->idx, M, K);
    const float *dA_row = v->use_mi ? l->dA + (size_t)p * E : NULL;
    be->route_bwd(be, v->s.dlog, v->s.dgate, dA_row, s->probs, s->idx, M, E, K);
    ms_act *dlin = v->s.dlog; /* [M, E'] */
    if (v->noisy) {
        be->noisy_logits_bwd(be, v->s.dlog2, v->s.dlog, s->logits2,
                             s->noise_used ? s->noise : NULL, M, E);
        dlin = v->s.dlog2;
    }
    if (v->shared_router) {
        be->zero(be, v->s.dbias, (size_t)Eo * sizeof(float));
        be->linear_bwd(be, dxn, vg(v, l->gate_tok), v->s.dbias, dlin, xn, vp(v, l->gate_tok), M,
                       D, Eo, MS_W_OUT_IN, 1);
        be->router_task_bias_bwd(be, vg(v, l->gate_task), vg(v, v->temb) + (size_t)p * D,
                                 v->s.dbias, vp(v, l->gate_task), task_emb(v, p), Eo, D);
    } else {
        be->linear_bwd(be, dxn, vg(v, l->gate_w[p]), NULL, dlin, xn, vp(v, l->gate_w[p]), M, D,
                       Eo, MS_W_OUT_IN, 1);
    }
}

/* ---- forward / backward ---------------------------------------------------------------------- */

/* An extracted layer computes the stored experts' rows [0, Rk) of the dispatch order only; the
 * rows [Rk, R) of the pairs routed to dropped experts are set to zero wherever a later step
 * reads them (the queries, which the attention reads for every slot, and the expert outputs,
 * which the combine reads), so those pairs add exactly 0 to the token: the value a full
 * model gives with the dropped experts' output weights and biases set to zero. */
void moe_forward(ms_vit *v, moe_layer *l, int p, const ms_act *xn, ms_act *y) {
    ms_backend *be = v->be;
    moe_pass *s = &l->pass[p];
    int M = v->M, D = v->D, E = l->E_keep, K = l->K, R = M * K, Hx = l->hidden;
    route(v, l, p, xn);
    int Rk = l->extracted ? s->offsets_host[E] : R; /* rows of stored experts */
    ms_act *xg = v->s.rd[0], *yd = v->s.rd[1]; /* [R, D] */
    be->gather_rows(be, xg, xn, s->perm, K, Rk, D);
    if (l->kind == MOE_MLP) {
        ms_act *act = v->s.hid[0]; /* [R, Hx] */
        be->expert_linear(be, s->h, xg, vp(v, l->w_in), vp(v, l->b_in), s->offsets_host, E, D,
                          Hx);
        be->gelu(be, act, s->h, (size_t)Rk * Hx);
        be->expert_linear(be, yd, act, vp(v, l->w_out), vp(v, l->b_out), s->offsets_host, E, Hx,
                          D);
    } else {
        ms_act *qd = v->s.rh[0], *otok = v->s.rh[1]; /* [R, hd] */
        float scale = 1.0f / sqrtf((float)Hx);
        be->expert_linear(be, qd, xg, vp(v, l->w_in), NULL, s->offsets_host, E, D, Hx);
        zero_rows(v, qd, Rk, R, Hx);
        be->gather_rows(be, s->q, qd, s->inv, 1, R, Hx); /* dispatch order -> (token, slot) */
        be->linear(be, s->kv, xn, vp(v, l->kv_w), vp(v, l->kv_b), M, D, 2 * Hx, MS_W_OUT_IN);
        be->mq_attention(be, otok, s->att, s->q, s->kv, v->B, v->N, K, Hx, scale);
        be->gather_rows(be, s->od, otok, s->perm, 1, Rk, Hx); /* (token, slot) -> dispatch */
        be->expert_linear(be, yd, s->od, vp(v, l->w_out), NULL, s->offsets_host, E, Hx, D);
    }
    zero_rows(v, yd, Rk, R, D);
    be->combine(be, y, yd, s->gate, s->inv, M, K, D);
}

/* Backward of the output experts and the gated combine, y[m] = sum_j g_j (h[r] W_e + b_e):
 * dh[R, Hx] (gated), the gate gradient v->s.dgate[M, K], and the weight gradients, from
 * dy[M, D] and the experts' inputs h[R, Hx] (act or od), through the scratch dyd[R, D].
 * The gate gradient dy[m] . yd[r] would need the expert outputs yd, which are not kept; with
 * u[r] = dy[m] W_e^T (the ungated row through W_e) it is u[r] . h[r] + dy[m] . b_e, and u is
 * what dh needs anyway. So: ungated rows, u in the dx GEMM, then expert_gate_bwd gives dgate
 * and applies the gates to u (= dh) and to the rows (for dW, which needs the gated rows), then
 * the dW GEMM. Two GEMMs, as many as the backward of one expert linear; the gates are
 * multiplied in, never divided out (router_eps may be 0, and a gate can underflow to 0). */
static void output_experts_bwd(ms_vit *v, moe_layer *l, int p, const ms_act *dy, ms_act *dyd,
                               ms_act *dh, const ms_act *h) {
    ms_backend *be = v->be;
    moe_pass *s = &l->pass[p];
    int M = v->M, D = v->D, E = l->E, K = l->K, Hx = l->hidden;
    const float *b_out = l->b_out >= 0 ? vp(v, l->b_out) : NULL;
    float *db_out = l->b_out >= 0 ? vg(v, l->b_out) : NULL;
    be->combine_bwd(be, dyd, NULL, dy, NULL, NULL, s->inv, M, K, D);
    be->expert_linear_bwd(be, dh, NULL, NULL, dyd, h, vp(v, l->w_out), s->offsets_host, E, Hx, D);
    be->expert_gate_bwd(be, v->s.dgate, dh, dyd, h, b_out, s->gate, s->idx, s->inv, M, K, Hx, D);
    be->expert_linear_bwd(be, NULL, vg(v, l->w_out), db_out, dyd, h, vp(v, l->w_out),
                          s->offsets_host, E, Hx, D);
}

void moe_backward(ms_vit *v, moe_layer *l, int p, const ms_act *xn, const ms_act *dy,
                  ms_act *dxn) {
    ms_backend *be = v->be;
    moe_pass *s = &l->pass[p];
    int M = v->M, D = v->D, E = l->E, K = l->K, R = M * K, Hx = l->hidden;
    MS_ASSERT(!l->extracted); /* ms_model_forward refuses to train an extracted model */
    ms_act *xg = v->s.rd[0], *dxg = v->s.rd[1], *dyd = v->s.rd[2]; /* [R, D] */
    be->gather_rows(be, xg, xn, s->perm, K, R, D);
    if (l->kind == MOE_MLP) {
        ms_act *act = v->s.hid[0], *dact = v->s.hid[1]; /* [R, Hx] */
        be->gelu(be, act, s->h, (size_t)R * Hx);
        output_experts_bwd(v, l, p, dy, dyd, dact, act);
        be->gelu_bwd(be, dact, dact, s->h, (size_t)R * Hx);
        be->expert_linear_bwd(be, dxg, vg(v, l->w_in), vg(v, l->b_in), dact, xg, vp(v, l->w_in),
                              s->offsets_host, E, D, Hx);
        be->combine(be, dxn, dxg, NULL, s->inv, M, K, D); /* sum over each token's K rows */
    } else {
        ms_act *dod = v->s.rh[0], *dotok = v->s.rh[1], *dq = v->s.rh[2]; /* [R, hd] */
        ms_act *dqd = dod;
        float scale = 1.0f / sqrtf((float)Hx);
        output_experts_bwd(v, l, p, dy, dyd, dod, s->od);
        be->gather_rows(be, dotok, dod, s->inv, 1, R, Hx);
        be->mq_attention_bwd(be, dq, v->s.dkv, v->s.datt, dotok, s->q, s->kv, s->att, v->B, v->N,
                             K, Hx, scale);
        be->linear_bwd(be, dxn, vg(v, l->kv_w), vg(v, l->kv_b), v->s.dkv, xn, vp(v, l->kv_w), M,
                       D, 2 * Hx, MS_W_OUT_IN, 0);
        be->gather_rows(be, dqd, dq, s->perm, 1, R, Hx);
        be->expert_linear_bwd(be, dxg, vg(v, l->w_in), NULL, dqd, xg, vp(v, l->w_in),
                              s->offsets_host, E, D, Hx);
        ms_act *sum = v->s.md[3]; /* [M, D] */
        be->combine(be, sum, dxg, NULL, s->inv, M, K, D);
        be->add(be, dxn, dxn, sum, (size_t)M * D);
    }
    route_backward(v, l, p, xn, dxn);
}

/* With data parallelism A and freq were summed over the ranks, so the loss is the exact
 * full-batch one; each rank's backward then uses world x dL/dA, so that gradients AVERAGED over
 * the ranks (the DDP convention) are exactly the gradient of that one loss. The reported value
 * is divided back (ms_vit_aux_losses). */
void moe_finish(ms_vit *v, moe_layer *l) {
    if (!v->use_mi) return;
    v->be->mi_loss(v->be, v->aux + l->aux_mi, l->dA, l->A, l->freq, v->T, l->E, l->K,
                   v->router_eps, (float)(v->cfg->model.w_mi * v->world));
}

/* ---- accounting ------------------------------------------------------------------------------ */

double moe_macs_per_token(const ms_vit *v, const moe_layer *l) {
    double D = v->D, N = v->N, K = l->K, Hx = l->hidden;
    double router = D * l->E_out;
    if (l->kind == MOE_MLP) return router + K * (D * Hx + Hx * D);
    /* queries, shared key/value, K heads of q.k and att.v over N keys, output experts */
    return router + K * D * Hx + D * 2 * Hx + 2 * K * N * Hx + K * Hx * D;
}

double moe_macs_per_pair(const ms_vit *v, const moe_layer *l) {
    return 2.0 * v->D * l->hidden; /* in and out projections of one expert */
}

double moe_active_params(const ms_vit *v, const moe_layer *l) {
    const ms_param_table *pt = v->pt;
    double per_expert = 0;
    int ids[4] = {l->w_in, l->b_in, l->w_out, l->b_out};
    for (int i = 0; i < 4; i++)
        if (ids[i] >= 0) per_expert += (double)pt->t[ids[i]].numel / l->E_keep;
    double n = l->K * per_expert;
    /* one task's router (the shared one has both halves) */
    n += (double)l->E_out * v->D * (v->shared_router ? 2 : 1);
    if (l->kv_w >= 0) n += (double)pt->t[l->kv_w].numel + pt->t[l->kv_b].numel;
    return n;
}
