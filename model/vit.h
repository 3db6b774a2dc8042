/* The backbone (METHOD.md sections 1 to 3 and 7): patch embedding, CLS token, position
 * embedding, task embedding, `depth` pre-norm blocks with dense or MoE attention and MLP, the
 * routers of every task, and the auxiliary routing losses (mutual information for modsquad,
 * cv^2 balance for m3vit). One object serves every model.arch:
 *
 *   modsquad         T passes, task embedding, MoE attention / MLP on the configured blocks,
 *                    one router per task and MoE layer, MI loss over all T passes
 *   task_moe         the same layers without MI loss; router per_task, or one shared router fed
 *                    [token ; task embedding]
 *   m3vit            T passes, MoE MLP only, per-task routers, no task embedding, cv^2 balance
 *   hard_sharing     one dense trunk, ONE pass whose tokens every task head reads
 *   separate_bottom  T passes; blocks < separate_layers are per task, the rest shared
 *   single_task      one dense pass for the one task
 *
 * The final tokens of each pass are NOT normalised: the heads own norm / fc_norm. The backbone
 * is written once against the backend interface and allocates nothing after ms_vit_alloc. */
#ifndef MS_VIT_H
#define MS_VIT_H

#include <stdint.h>

#include "../kernels/backend.h"
#include "arena.h"
#include "config.h"
#include "params.h"

typedef struct ms_vit ms_vit;

/* Registers the backbone's parameters in pt (official names; docs/model.md lists them).
 * B: images per forward on this rank; rank: keys the per-sample randomness. */
ms_vit *ms_vit_create(const ms_config *cfg, ms_backend *be, int B, int rank, ms_param_table *pt);
void ms_vit_destroy(ms_vit *v);
/* Takes every activation buffer from the arena; call it in both arena passes. */
void ms_vit_alloc(ms_vit *v, ms_arena *a);
/* Official initialisation of the backbone's tensors in the host copy of the parameter buffer:
 * every tensor from its own random stream keyed by (seed, tensor name). */
void ms_vit_init(const ms_vit *v, float *host_params, uint64_t seed);
/* The device parameter and gradient buffers (pt->total floats each). */
void ms_vit_bind(ms_vit *v, float *params, float *grads);

/* Data parallelism: fn sums n device floats over all `world` ranks in place (an all-reduce).
 * The backbone calls it once per forward on the MI statistics (A and freq of every MoE layer)
 * before the MI loss, which is then the exact loss of the whole global batch (the official code
 * uses each GPU's own statistics). Gradients are then meant to be averaged over the ranks. */
typedef void (*ms_sum_fn)(void *ctx, float *x, size_t n);
void ms_vit_set_stats_sum(ms_vit *v, ms_sum_fn fn, void *ctx, int world);

/* Gradient overlap: fn(ctx, offset, count) says that floats [offset, offset + count) of the
 * flat gradient buffer hold their final value for this backward once the work queued on the
 * backend so far has run (model/model.h ms_model_opts.grads_ready). */
typedef void (*ms_range_fn)(void *ctx, size_t offset, size_t count);
/* The backbone reports its ranges during ms_vit_backward: each block's once every pass has
 * gone through it (from the last block to the first), then the task embedding's, then the
 * embeddings' (cls_token, pos_embed, patch_embed). Together they tile [0, end), where end is
 * the offset of the first tensor registered after the backbone (the heads' part). */
void ms_vit_set_grads_ready(ms_vit *v, ms_range_fn fn, void *ctx);

/* Images [B, 3, H, W] (host, fp32) to the device. */
void ms_vit_set_images(ms_vit *v, const float *images);
/* Every pass on the uploaded images. training: drop path and noisy gating on; `step` keys their
 * randomness together with run.seed, the task name, the block and the sample. */
void ms_vit_forward(ms_vit *v, int training, int64_t step);
/* Final tokens x[B, N, D] seen by task t's head after the last forward. */
const ms_act *ms_vit_tokens(const ms_vit *v, int t);
/* Where the caller writes dL/d tokens[B, N, D] of task t before ms_vit_backward. */
ms_act *ms_vit_grad_in(ms_vit *v, int t);
/* Backward of the last (training) forward: parameter gradients accumulated (+=), the routing
 * losses' gradients included. ms_vit_grad_in of every task is overwritten. The blocks run from
 * the last to the first, each for every pass in turn, so that a block's gradients are
 * complete as early as possible (each tensor still receives the passes in task order). */
void ms_vit_backward(ms_vit *v);

/* The routing losses of the last forward, downloaded: MI (summed over MoE layers, weighted by
 * model.w_mi) and balance (summed over MoE layers and passes, weighted by model.w_balance). */
void ms_vit_aux_losses(const ms_vit *v, double *mi, double *balance);

/* MoE layers, in block order. */
typedef struct {
    int block;    /* transformer block */
    int attn;     /* 1: MoE attention, 0: MoE MLP */
    int E, K;     /* experts routed over, experts each token selects */
    /* An extracted model (model.kept_experts) stores E_keep of the E experts: kept[E_keep] are
     * their full-model indices. A normal model: E_keep = E, kept NULL. */
    int E_keep;
    const int16_t *kept;
    double pair_flops; /* forward FLOPs of the expert GEMMs of one (token, slot) pair */
} ms_moe_info;
int ms_vit_moe_layers(const ms_vit *v);
ms_moe_info ms_vit_moe_info(const ms_vit *v, int layer);
/* counts[E] = how many (token, slot) selections expert e got in task t's pass of the last
 * forward (host; no device traffic). Indices are the full model's, also in an extracted model,
 * whose dropped experts are counted as the router picked them (they computed nothing). */
void ms_vit_expert_counts(const ms_vit *v, int layer, int t, int64_t *counts);
/* Device routing of task t's pass in the last forward: idx[M, K] and probs[M, E]. */
const int32_t *ms_vit_route_idx(const ms_vit *v, int layer, int t);
const float *ms_vit_route_probs(const ms_vit *v, int layer, int t);

/* Passes per step (T, or 1 for hard_sharing) and tokens per image (1 + patches). */
int ms_vit_passes(const ms_vit *v);
int ms_vit_tokens_per_image(const ms_vit *v);
/* Forward FLOPs per image of task t's pass: GEMM multiply-adds x 2, attention included. */
double ms_vit_flops(const ms_vit *v, int t);
/* Backbone parameters that one token of task t uses: everything task t's pass reads, with the
 * expert tensors counted for K of E experts; other tasks' routers, task-embedding rows and
 * separate blocks excluded. */
double ms_vit_active_params(const ms_vit *v, int t);

#endif
