/* Task heads, task losses and task weighting (METHOD.md section 4): everything between the
 * last transformer block of a task's pass and that task's loss, forward and backward.
 *
 * The backbone (model/model.c) hands the heads the tokens x[B, N, D] (N = 1 + patches, CLS
 * first) that the last block produced in task t's pass, BEFORE any final norm: the heads own
 * `norm.*` (dense tasks), `fc_norm.*` (classification tasks, shared), `task_heads.{t}.*` and the
 * uncertainty-weighting parameters. Written once against the backend interface. */
#ifndef MS_HEADS_H
#define MS_HEADS_H

#include <stdint.h>

#include "../kernels/backend.h"
#include "arena.h"
#include "batch.h"
#include "config.h"
#include "params.h"
#include "vit.h" /* ms_sum_fn */

typedef struct ms_heads ms_heads;

typedef struct {
    const ms_config *cfg;
    ms_backend *be;
    int B;    /* images per step on this rank */
    int H, W; /* image size */
    int N, D; /* tokens (with CLS) and width */
    int T;    /* tasks, in cfg->data.tasks order */
} ms_head_shape;

/* Registers the heads' parameters in pt with official names (after the backbone's). */
ms_heads *ms_heads_create(const ms_head_shape *s, ms_param_table *pt);
void ms_heads_destroy(ms_heads *h);
/* Takes every activation and target buffer from the arena; called in both arena passes. */
void ms_heads_alloc(ms_heads *h, ms_arena *a);
/* Official initialisation of the heads' tensors in the host copy of the parameter buffer. */
void ms_heads_init(ms_heads *h, float *host_params, uint64_t seed);
/* The device parameter and gradient buffers (pt->total floats each). */
void ms_heads_bind(ms_heads *h, float *params, float *grads);
/* Uploads the batch's targets to the device. The losses are then each a mean over this rank's
 * batch (until ms_heads_share_counts). */
void ms_heads_set_targets(ms_heads *h, const ms_batch *b);

/* Data parallelism (docs/parallel.md): fn sums n device floats over `world` ranks in place (the
 * model's stats_sum hook, a collective). With world > 1 the TRAINING forwards and backwards of
 * the ranks together compute what one process computes on the global batch, given that the
 * gradients are then averaged over the ranks:
 *   - ms_heads_share_counts makes every task loss exact (below);
 *   - the conv head's BatchNorm normalises with the global batch's statistics and its backward
 *     uses the global sums of dy and dy * xhat (SyncBatchNorm, head_conv.c).
 * Every rank must then run the same sequence of training forwards and backwards. */
void ms_heads_set_stats_sum(ms_heads *h, ms_sum_fn fn, void *ctx, int world);
/* After ms_heads_set_targets, before the task forwards of a training step (a collective when
 * world > 1, else nothing): sums over the ranks, per task, the number of target elements its
 * loss averages over (valid pixels, counted labels; the negatives of an automatically balanced
 * BCE), counted on the host from the batch. Each rank's loss and its gradient are then scaled by
 * its count / the global count x world, so that the MEAN of the ranks' losses is the mean over
 * the global batch; the automatic BCE weight becomes the global batch's share of negatives. */
void ms_heads_share_counts(ms_heads *h);
/* Task t: prediction and loss (device scalar) from x[B, N, D]. training selects BatchNorm batch
 * statistics (and updates the running ones); eval uses the running statistics. */
void ms_heads_forward(ms_heads *h, int t, const ms_act *x, int training);
/* After every task's forward: *total (device scalar) = the weighted sum of the task losses
 * (uncertainty weighting or fixed weights) and dTotal/dLoss_t for the backward passes. Under
 * uncertainty weighting it also ADDS dTotal/ds to the gradient of awl.params (call it once per
 * micro-step; without bound gradients the value goes to scratch). */
void ms_heads_weigh(ms_heads *h, float *total);
/* Task t: dx[B, N, D] written (parameter gradients accumulated). */
void ms_heads_backward(ms_heads *h, int t, const ms_act *x, ms_act *dx);
/* Device prediction of task t: [B, C, H, W] for dense tasks, [B, C] for classification. */
const ms_act *ms_heads_prediction(const ms_heads *h, int t);
/* Device task losses [T] after the forwards (unweighted). */
const float *ms_heads_losses(const ms_heads *h);
/* Forward multiply-adds x 2 per image of task t's head (for `modsquad info`). */
double ms_heads_flops(const ms_heads *h, int t);
/* Parameter-table indices of the heads' tensors that are state, not trained: the conv head's
 * BatchNorm running statistics (task_heads.{t}.bn_{i}.running_mean / running_var). They live in
 * the parameter buffer so that checkpoints carry them, are registered with decay 0 and never get
 * a gradient; a training forward updates them in place. The optimizer must skip them (AdamW
 * with a zero gradient and no decay would leave them unchanged anyway). With data parallelism
 * every rank updates them alike from the global batch's statistics (SyncBatchNorm).
 * Returns how many; *idx points into h. */
int ms_heads_buffers(const ms_heads *h, const int **idx);

#endif
