/* The whole network of one config (METHOD.md sections 1 to 4): the backbone of model.arch
 * (model/vit.h), the task heads, losses and task weighting (model/heads.h), and the routing
 * losses, over ONE parameter buffer and ONE activation arena. This is the step API used by
 * train, eval, extract and bench:
 *
 *     ms_model *m = ms_model_create(cfg, be, &(ms_model_opts){.batch = B});
 *     ms_model_init(m, seed);                       (or load a checkpoint into the params)
 *     loop:  ms_model_zero_grads(m);                once per optimizer step, BEFORE the forward
 *            ms_model_forward(m, &batch, 1, step);  all T task passes, heads, weighting, MI
 *            ms_model_backward(m);                  gradients accumulate into the grad buffer
 *            optimizer over ms_model_params / ms_model_param_data / ms_model_grad_data
 *     ms_model_losses(m, &losses);                  host copies, when wanted
 *
 * The model prints nothing; `modsquad info` and `train` print what ms_model_memory,
 * ms_model_param_counts and ms_model_flops return. Nothing is allocated after create. */
#ifndef MS_MODEL_H
#define MS_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "../kernels/backend.h"
#include "batch.h"
#include "config.h"
#include "params.h"
#include "vit.h"

typedef struct ms_model ms_model;

typedef struct {
    int batch;     /* B: images per forward on this rank */
    int rank;      /* this rank's index: keys the per-sample randomness (drop path, noise) */
    int plan_only; /* build the parameter table, counts, FLOPs and the memory plan, but allocate
                    * nothing on the device (forward / backward are then not available) */
    /* Data parallelism: an all-reduce (sum) over `world` ranks of device floats. Every forward
     * applies it to the MI statistics before the MI loss (model/vit.h ms_vit_set_stats_sum);
     * a training forward also to the counts behind the masked task losses and to the conv
     * head's BatchNorm statistics, and its backward to BatchNorm's gradient sums (model/heads.h
     * ms_heads_set_stats_sum). With the gradients then averaged over the ranks, a step equals
     * one process's on the global batch. NULL with world 0 or 1 for a single process. */
    ms_sum_fn stats_sum;
    void *stats_ctx;
    int world;
    /* Gradient overlap (kernels/comm/comm.h ms_grad_sync_ready): every training backward calls
     * grads_ready(grads_ctx, offset, count), on the host, each time floats [offset, offset +
     * count) of the gradient buffer have their final value for this backward, i.e. once the
     * work queued on the backend so far has run: the heads' part (after every head), then each
     * transformer block from the last to the first, the task embedding, the embeddings. The
     * ranges tile [0, params.total) once per backward; the order is the same in every
     * backward. NULL: not called. */
    ms_range_fn grads_ready;
    void *grads_ctx;
} ms_model_opts;

/* Device memory of a run, in bytes. */
typedef struct {
    size_t params;      /* the parameter buffer, fp32, 64-byte aligned tensors */
    size_t grads;       /* its mirror */
    size_t optimizer;   /* AdamW's two moments: 2 x params */
    size_t activations; /* the arena: every task pass's activations, targets, scratch */
    size_t total;
} ms_memory_plan;

typedef struct {
    double total;       /* trainable parameters (BatchNorm running statistics excluded) */
    double backbone;    /* of which the backbone's (model/vit.h) */
    double heads;       /* norm, fc_norm and task_heads.* */
    double weighting;   /* awl.params (uncertainty weighting) */
    /* Parameters one token of task t uses: the backbone's active set (K of E experts, task t's
     * router and task-embedding row, its separate blocks) plus task t's head with the norm it
     * reads. */
    double active[MS_MAX_TASKS];
} ms_param_counts;

/* Host copies of the losses of the last forward. */
typedef struct {
    int T;
    double task[MS_MAX_TASKS]; /* unweighted task losses, data.tasks order */
    double weighted;           /* their weighted sum (uncertainty weighting or fixed weights) */
    double mi;                 /* model.w_mi x sum over MoE layers of L_MI (modsquad) */
    double balance;            /* model.w_balance x sum of the cv^2 losses (m3vit) */
    double total;              /* weighted + mi + balance: what ms_model_backward differentiates */
} ms_losses;

/* Builds the network of cfg (which must stay alive) for batches of o->batch images. Exits with
 * a message naming the size when the device is out of memory. */
ms_model *ms_model_create(const ms_config *cfg, ms_backend *be, const ms_model_opts *o);
void ms_model_destroy(ms_model *m);

/* Official initialisation of every tensor from `seed` (streams keyed by tensor name), uploaded
 * to the device. Drop path and noise are keyed by run.seed, not by this seed. A model extracted
 * by `modsquad extract` (model.kept_experts) exists only as weights taken from a trained model:
 * initialising it, or a training forward, stops the program with a message saying so. */
void ms_model_init(ms_model *m, uint64_t seed);
void ms_model_zero_grads(ms_model *m);

/* Forward of one batch (b->B == o->batch images of data.image_size): every task pass, every
 * head and loss, the task weighting and the routing losses. training: drop path, noisy gating,
 * BatchNorm batch statistics; `step` keys drop path and noise. Evaluation (training 0) is
 * deterministic and leaves the gradients untouched. Under uncertainty weighting a training
 * forward already adds the weighting's own gradient (hence: zero the gradients first). */
void ms_model_forward(ms_model *m, const ms_batch *b, int training, int64_t step);
/* Backward of the last training forward: parameter gradients accumulated (+=), reported to
 * ms_model_opts.grads_ready range by range as they become final. */
void ms_model_backward(ms_model *m);
/* Downloads the losses of the last forward. */
void ms_model_losses(const ms_model *m, ms_losses *out);

/* The parameter table and the device buffers it describes (pt->total floats each). */
const ms_param_table *ms_model_params(const ms_model *m);
float *ms_model_param_data(ms_model *m);
float *ms_model_grad_data(ms_model *m);

/* Device prediction of task t after a forward: [B, C, H, W] dense, [B, C] classification. */
const ms_act *ms_model_prediction(const ms_model *m, int t);
/* Device tokens [B, N, D] that task t's head read (the backbone's output, before any norm). */
const ms_act *ms_model_tokens(const ms_model *m, int t);

/* MoE layers in block order, and how many (token, slot) selections expert e got in task t's
 * pass of the last forward (counts[E], host; full-model expert indices, also in an extracted
 * model). */
int ms_model_moe_layers(const ms_model *m);
ms_moe_info ms_model_moe_info(const ms_model *m, int layer);
void ms_model_expert_counts(const ms_model *m, int layer, int t, int64_t *counts);
/* The same over the first n images of the batch only (1 <= n <= B): a short last batch of an
 * evaluation is padded with copies of an image, which must not count twice. */
void ms_model_expert_counts_of(const ms_model *m, int layer, int t, int n, int64_t *counts);

/* Forward FLOPs per image of task t (GEMM multiply-adds x 2, attention included; backbone pass
 * plus head), parameter counts and the memory plan. The FLOPs count K experts per token in
 * every MoE layer; in an extracted model the pairs routed to dropped experts skip their expert
 * GEMMs (ms_moe_info.pair_flops each), which depends on the data (modsquad extract reports it
 * for its calibration images). */
double ms_model_flops(const ms_model *m, int t);
void ms_model_param_counts(const ms_model *m, ms_param_counts *out);
ms_memory_plan ms_model_memory(const ms_model *m);

/* The parts, for code that needs more than the step API (extraction, tests). */
ms_vit *ms_model_backbone(ms_model *m);
struct ms_heads *ms_model_heads(ms_model *m);

#endif
