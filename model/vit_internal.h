/* Internal to the backbone (model/vit.c, model/blocks.c, model/moe_layer.c): the data structures
 * of one ViT with its MoE layers and the activations of every task pass of a step.
 *
 * Letters: B images, N tokens (1 + patches), D width, M = B*N token rows, E experts, K top-k,
 * R = M*K dispatched rows, T tasks, P passes (T, or 1 for hard_sharing), H heads, hd head width. */
#ifndef MS_VIT_INTERNAL_H
#define MS_VIT_INTERNAL_H

#include <stdint.h>

#include "../kernels/backend.h"
#include "arena.h"
#include "config.h"
#include "params.h"
#include "vit.h"

#define LN_EPS 1e-6f /* timm's partial(nn.LayerNorm, eps=1e-6) in every block */

/* How a tensor is initialised (model/vit.c, official init; see docs/model.md). */
typedef enum {
    INIT_TRUNC02, /* timm trunc_normal_(std .02) with absolute bounds [-2, 2]: nn.Linear weights,
                   * pos_embed, cls_token */
    INIT_ZERO,    /* nn.Linear biases, LayerNorm biases */
    INIT_ONE,     /* LayerNorm weights */
    INIT_UNIFORM, /* U(-bound, bound): parallel experts, the patch-embedding Conv2d */
    INIT_NORMAL,  /* N(0, 1): task_embedding (torch.randn) */
} init_kind;

typedef struct {
    int id; /* parameter table index */
    init_kind kind;
    double bound; /* INIT_UNIFORM */
} init_rule;

/* ---- MoE sub-layer -------------------------------------------------------------------------- */

typedef enum { MOE_ATTN, MOE_MLP } moe_kind;

/* What one task pass through a MoE layer keeps for the backward. Tokens in expert order
 * (gathered x) are recomputed in the backward instead of kept (K times the size of the token
 * stream); the expert outputs are not needed at all (expert_gate_bwd forms the gate gradient
 * without them). */
typedef struct {
    ms_act *logits2;  /* [M, 2E] router Linear output (noisy gating only, else NULL) */
    float *noise;     /* [M, E] N(0, 1) draws (noisy gating only) */
    int noise_used;   /* noise was applied in this pass (training) */
    float *probs;     /* [M, E] softmax of the router logits */
    int32_t *idx;     /* [M, K] selected experts, descending probability */
    float *gate;      /* [M, K] probs at idx + router_eps */
    int32_t *offsets; /* [E + 2] device: expert row ranges in dispatch order (E + 1 used, or
                       * E_keep + 2 by an extracted layer) */
    int32_t *perm;    /* [R] dispatch row -> (token, slot) pair */
    int32_t *inv;     /* [R] (token, slot) pair -> dispatch row */
    int32_t *offsets_host; /* [E + 2] host copy (malloc'ed, not arena) */
    int32_t *sidx;    /* extracted: [M, K] idx as stored-expert indices (E_keep: dropped) */
    int32_t *route_offsets_host; /* extracted: [E + 1] host offsets of the selections by
                       * full-model expert (malloc'ed): the usage counts */
    ms_act *h;        /* MLP: [R, Hx] expert pre-activations */
    ms_act *q;        /* attention: [R, hd] = [B, N, K, hd] queries in token order */
    ms_act *kv;       /* attention: [M, 2 hd] the shared key and value head */
    ms_act *att;      /* attention: [B, N*K, N] attention probabilities */
    ms_act *od;       /* attention: [R, hd] attention outputs in dispatch order */
    float *dimp;      /* [E] balance loss: dloss / dimportance (m3vit) */
    float *task_bias; /* [E'] shared router: the task half's logits (E' = 2E when noisy) */
} moe_pass;

typedef struct {
    moe_kind kind;
    int block;   /* transformer block index */
    int index;   /* position among the MoE layers (statistics, noise keys) */
    int E, K;
    /* An extracted model (model.kept_experts) stores E_keep of the E experts. It routes over
     * all E as the full model does; the pairs of dropped experts go to the stored index E_keep,
     * a "null" expert whose rows are zero, so they add exactly nothing. */
    int E_keep;  /* experts whose weights exist: E, or the kept ones */
    int extracted;
    const int16_t *kept; /* [E_keep] full-model index of each stored expert (extracted only) */
    int32_t *map;        /* [E] device: full-model index -> stored index (extracted only) */
    int hidden;  /* MLP: expert hidden width Hx; attention: expert head width hd */
    int E_out;   /* router outputs: E, or 2E with noisy gating */
    /* parameter table indices (-1: absent) */
    int w_in, b_in;      /* experts.w [E_keep, D, Hx|hd], experts.b [E_keep, Hx] (MLP only) */
    int w_out, b_out;    /* output_experts.w [E_keep, Hx|hd, D], output_experts.b [E_keep, D]
                          * (MLP only) */
    int kv_w, kv_b;      /* attention: kv_proj.0.weight [2hd, D], .bias [2hd] */
    int gate_w[MS_MAX_TASKS]; /* per_task: f_gate.{t}.0.weight [E', D] */
    int gate_tok, gate_task;  /* shared_task_conditioned: the token and task halves [E', D] */
    moe_pass pass[MS_MAX_TASKS];
    /* mutual information (modsquad), device fp32 */
    float *A;    /* [T, E] sum of probs + eps per task */
    float *freq; /* [E] selections over all passes */
    float *dA;   /* [T, E] dL/dA of the weighted MI loss */
    int aux_mi;  /* slot of this layer's MI loss in the aux array, or -1 */
    int aux_balance[MS_MAX_TASKS]; /* slots of the per-pass balance losses, or -1 */
} moe_layer;

/* ---- transformer blocks --------------------------------------------------------------------- */

/* Parameter indices of one copy of a block (separate_bottom has one copy per task in its first
 * blocks). Dense sub-layers only; MoE sub-layers are moe_layer. -1: absent. */
typedef struct {
    int n1w, n1b, n2w, n2b;   /* norm1 / norm2 [D] */
    int qkv_w, qkv_b;         /* attn.qkv [3 H hd, D], [3 H hd] (bias optional) */
    int proj_w, proj_b;       /* attn.proj [D, H hd], [D] */
    int fc1_w, fc1_b;         /* mlp.fc1 [Hd, D], [Hd] */
    int fc2_w, fc2_b;         /* mlp.fc2 [D, Hd], [D] */
} block_params;

/* Activations of one block in one pass. */
typedef struct {
    ms_act *xn1, *xn2;        /* [M, D] norm1 / norm2 outputs */
    float *mean1, *rstd1;     /* [M] */
    float *mean2, *rstd2;     /* [M] */
    ms_act *x_mid;            /* [M, D] residual stream after the attention */
    ms_act *qkv;              /* dense attention: [M, 3 H hd] */
    ms_act *att;              /* dense attention: [B, H, N, N] */
    ms_act *o;                /* dense attention: [M, H hd] */
    ms_act *h;                /* dense MLP: [M, Hd] fc1 output (GELU recomputed in backward) */
    float *dp_scale[2];       /* [B] drop-path sample scales of the two residuals (device) */
} block_pass;

typedef struct {
    int first_param;          /* parameter table index of the block's first tensor: its
                               * tensors (every copy, MoE sub-layers included) follow in a row */
    int n_copies;             /* 1, or T for separate_bottom's per-task blocks */
    block_params p[MS_MAX_TASKS];
    moe_layer *attn_moe;      /* NULL: dense attention */
    moe_layer *mlp_moe;       /* NULL: dense MLP */
    double dpr;               /* drop-path rate */
    block_pass pass[MS_MAX_TASKS];
} vit_block;

/* Scratch shared by all passes: each buffer's content lives for one sub-layer call. */
typedef struct {
    ms_act *md[4];    /* [M, D] branch output, its gradient, norm-input gradient, sum buffer */
    ms_act *rd[3];    /* [Rmax, D] gathered tokens, expert outputs, their gradients */
    ms_act *hid[2];   /* [max(M Hd, Rmlp Hx)] activations of the hidden layer and its gradient */
    ms_act *rh[3];    /* [Rattn, hd] expert queries / attention outputs and their gradients */
    ms_act *dqkv;     /* [M, 3 H hd] */
    ms_act *dob;      /* [M, H hd] */
    ms_act *datt;     /* [max(B H N N, B N Kattn N)] */
    ms_act *dkv;      /* [M, 2 hd_attn] */
    ms_act *logits;   /* [M, Emax] */
    ms_act *dlog;     /* [M, Emax] */
    ms_act *dlog2;    /* [M, 2 Emax] */
    float *dgate;     /* [M, Kmax] */
    float *dbias;     /* [2 Emax] */
} vit_scratch;

struct ms_vit {
    const ms_config *cfg;
    ms_backend *be;
    const ms_param_table *pt;
    float *params, *grads; /* device [pt->total] */

    /* shape */
    int B, N, D, M, T, P; /* P passes: T, or 1 (hard_sharing) */
    int Hi, Wi, patch, Np, depth;
    int heads, head_dim, mlp_hidden;
    int rank;
    uint64_t rng_seed;    /* run.seed: drop path and noise */

    /* what the architecture uses */
    int task_embed;       /* task_embedding added before every block (modsquad, task_moe) */
    int use_mi;           /* MI loss (modsquad with T >= 2 and w_mi > 0) */
    int use_balance;      /* cv^2 balance loss (m3vit with w_balance > 0) */
    int extracted;        /* model.kept_experts: a single-task model for evaluation only */
    int noisy;            /* noisy gating */
    int shared_router;    /* task_moe with model.router shared_task_conditioned */
    float router_eps;

    /* parameters */
    int cls, pos, pe_w, pe_b, temb; /* temb -1 when absent */
    vit_block blk[MS_MAX_DEPTH];
    moe_layer *moe;       /* [n_moe] in block order (attention before MLP within a block) */
    int n_moe;
    init_rule *init;      /* [n_init] */
    int n_init, cap_init;

    /* activations */
    ms_act *img;          /* [B, 3, Hi, Wi] */
    ms_act *patches;      /* [B, Np, 3 p p] */
    ms_act *x0;           /* [M, D] tokens after embedding, shared by every pass */
    ms_act *res[MS_MAX_TASKS][MS_MAX_DEPTH + 1]; /* [M, D] input of block i in pass p (task
                           * embedding added); res[p][depth] = the final tokens */
    ms_act *grad_in[MS_MAX_TASKS]; /* [M, D] dL/d final tokens of task t (written by caller) */
    ms_act *dx0;          /* [M, D] */
    float *dp_all;        /* [P, depth, 2, B] drop-path scales, device */
    float *dp_host;       /* same, host staging */
    float *noise_host;    /* [M, Emax] host staging for noise draws */
    float *aux;           /* [n_aux] device: MI losses per layer, balance losses per layer/pass */
    int n_aux;
    float *mi_stats;      /* [n_stats] device: A [T, E] then freq [E] of every MoE layer */
    size_t n_stats;
    ms_sum_fn stats_sum;  /* sums mi_stats over the ranks (data parallelism), or NULL */
    void *stats_ctx;
    int world;            /* ranks */
    ms_range_fn grads_ready; /* reports final gradient ranges in the backward, or NULL */
    void *grads_ctx;
    int n_params;         /* the backbone's tensors are the first n_params of the table */
    vit_scratch s;

    /* state of the last forward */
    int training;
    int64_t step;
    int forwarded;
};

/* Parameter pointers (valid after ms_vit_bind). */
static inline float *vp(const ms_vit *v, int id) { return v->params + v->pt->t[id].offset; }
static inline float *vg(const ms_vit *v, int id) { return v->grads + v->pt->t[id].offset; }

/* Registers a tensor with the given init rule. */
int vit_add(ms_vit *v, ms_param_table *pt, const char *name, int ndim, const int64_t *shape,
            init_kind kind, double bound);

/* The task name keying pass p's randomness ("shared" for the single hard_sharing pass). */
const char *vit_pass_name(const ms_vit *v, int p);

/* model/moe_layer.c */
void moe_register(ms_vit *v, ms_param_table *pt, moe_layer *l, moe_kind kind, int block,
                  const char *prefix);
void moe_alloc(ms_vit *v, moe_layer *l, ms_arena *a);
/* x_n[M, D] (the normed tokens) -> y[M, D] for pass p (task p). */
void moe_forward(ms_vit *v, moe_layer *l, int p, const ms_act *xn, ms_act *y);
/* dy[M, D] -> dxn[M, D] written; parameter gradients accumulated. */
void moe_backward(ms_vit *v, moe_layer *l, int p, const ms_act *xn, const ms_act *dy,
                  ms_act *dxn);
/* After every pass: the layer's MI loss into the aux array (modsquad). */
void moe_finish(ms_vit *v, moe_layer *l);
/* Multiply-adds per token of one pass, and parameters active per token of task t. */
double moe_macs_per_token(const ms_vit *v, const moe_layer *l);
double moe_active_params(const ms_vit *v, const moe_layer *l);
/* Multiply-adds of the expert GEMMs of one (token, slot) pair: what a pair routed to a dropped
 * expert of an extracted model does not compute. */
double moe_macs_per_pair(const ms_vit *v, const moe_layer *l);
/* Extracted layers: uploads the full -> stored index map (after ms_vit_bind). */
void moe_upload_map(ms_vit *v, moe_layer *l);

/* model/blocks.c */
void block_register(ms_vit *v, ms_param_table *pt, int i);
void block_alloc(ms_vit *v, int i, ms_arena *a);
void block_forward(ms_vit *v, int i, int p, const ms_act *x, ms_act *out);
/* dres[M, D]: on entry dL/d(block output), on return dL/d(block input). */
void block_backward(ms_vit *v, int i, int p, const ms_act *x, ms_act *dres);
double block_macs_per_token(const ms_vit *v, int i);

#endif
