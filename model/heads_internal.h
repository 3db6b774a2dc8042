/* Internals shared by the task heads' files: heads.c (lifecycle, targets, weighting, dispatch),
 * head_dense.c (Taskonomy per-token linear head), head_class.c (classification head),
 * head_conv.c (M3ViT up-sampling conv head) and task_loss.c (loss per task). Not part of the
 * model's interface: model/heads.h is. */
#ifndef MS_HEADS_INTERNAL_H
#define MS_HEADS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "heads.h"
#include "tasks.h"

#define HEAD_LN_EPS 1e-6f       /* norm, fc_norm and the conv head's norm (timm / M3ViT) */
#define HEAD_CLASS_LN_EPS 1e-5f /* task_heads.{t}.0: a default nn.LayerNorm in models_mt.py */
#define HEAD_BN_EPS 1e-5f       /* BatchNorm2d defaults (M3ViT's SyncBN config keeps them) */
#define HEAD_BN_MOMENTUM 0.1f
#define HEAD_NORMALS_EPS 1e-12f /* MTL-PyTorch NormalsLoss: out / (|out| + 1e-12) */
#define HEAD_CONV3 4            /* conv3x3 + BN + ReLU layers of the conv head (M3ViT num_conv) */
#define HEAD_CONV_LAYERS (HEAD_CONV3 + 1) /* ... and the 1x1 classifier */

/* How the heads initialise a tensor (ms_heads_init). */
typedef enum {
    HEAD_INIT_ZERO,
    HEAD_INIT_ONE,
    HEAD_INIT_TRUNC_NORMAL, /* timm _init_weights for nn.Linear: trunc_normal(std .02, +-2) */
    HEAD_INIT_FAN_IN,       /* PyTorch Conv2d default: U(+-1/sqrt(fan_in)), weight and bias */
} head_init;

/* One tensor the heads registered in the parameter table. */
typedef struct {
    char name[MS_TENSOR_NAME_MAX];
    int index;     /* in the parameter table */
    size_t offset; /* floats from the start of the parameter (and gradient) buffer */
    size_t numel;
    head_init init;
    int fan_in;    /* HEAD_INIT_FAN_IN */
} head_tensor;

typedef enum { HEAD_DENSE_LINEAR, HEAD_CLASS, HEAD_CONV } head_kind;

/* One layer of the conv head: a stride-1 convolution at spatial size hh x ww, then (bn) BatchNorm
 * and ReLU, then (up) bilinear x2. Tensor fields are indices into ms_heads.tensor, -1 if none. */
typedef struct {
    int ci, co, k, hh, ww;
    int bn, up;
    int w, b, gamma, beta, rmean, rvar;
    ms_act *in;         /* [B, ci, hh, ww] the previous layer's out (layer 0: the token map) */
    ms_act *z;          /* [B, co, hh, ww] convolution output (BatchNorm's input) */
    ms_act *r;          /* [B, co, hh, ww] relu(bn(z)) (bn layers only) */
    ms_act *out;        /* [B, co, 2hh, 2ww] with up; else r (bn) or z (classifier) */
    float *mean, *rstd; /* [co] batch statistics of the last training forward */
    float *var;         /* [co] their biased variance (SyncBatchNorm: the backward's correction
                         * normalises with it, as the forward did) */
} conv_layer;

/* Everything about task t's head: definition, tensors, activations and device targets. */
typedef struct {
    const ms_task_def *def;
    head_kind kind;
    int C;            /* output channels */
    float pos_weight; /* balanced BCE: fixed weight of the positives, < 0 automatic */
    int use_valid;    /* dense targets: the loss reads the batch's valid mask */
    int trained;      /* the last forward ran in training mode (backward needs it) */
    /* Data parallelism (heads.c, ms_heads_share_counts); every ms_heads_set_targets resets them
     * to a plain mean over this rank's batch (scale 1, the op's own BCE weight). */
    int64_t count;          /* target elements of this rank's batch the loss averages over */
    int64_t negatives;      /* balanced BCE: negatives among them */
    float loss_scale;       /* count / the ranks' total count x world */
    float batch_pos_weight; /* automatic BCE weight of the global batch; < 0: the op's own */

    int ln_w, ln_b;   /* class: task_heads.{t}.0; conv: task_heads.{t}.norm */
    int lin_w, lin_b; /* dense and class: task_heads.{t}.1 */
    conv_layer conv[HEAD_CONV_LAYERS];

    float *mean, *rstd;   /* [B*N] norm (dense, conv) or [B] fc_norm (class) statistics */
    float *mean2, *rstd2; /* [B] class: task_heads.{t}.0 statistics */
    ms_act *xn;           /* dense: [B, N, D] norm(x), the Linear's input */
    ms_act *m, *f, *g;    /* class: [B, D] token mean, fc_norm(m), LayerNorm(f) */
    ms_act *fmap;         /* conv: [B, D, h, w] normalised patch tokens as a feature map */
    ms_act *pred;         /* [B, C, H, W] dense, [B, C] class */

    /* device targets (the ones the task's target kind uses; others NULL) */
    float *dense;    /* [B, C, P] */
    uint8_t *valid;  /* [B, P] */
    int32_t *labels; /* [B, P] */
    uint8_t *binary; /* [B, P] */
    float *vector;   /* [B, C] */
} task_head;

struct ms_heads {
    const ms_config *cfg;
    ms_backend *be;
    int B, H, W, N, D, T;
    int p, gh, gw, Np; /* patch side, patch grid, patch tokens (N - 1) */

    head_tensor *tensor; /* [ntensor] in registration order */
    int ntensor, cap;
    int norm_w, norm_b, fc_w, fc_b, awl; /* shared tensors, -1 when not used */
    int buffers[MS_MAX_TASKS * HEAD_CONV3 * 2]; /* table indices of BN running statistics */
    int nbuffers;
    task_head task[MS_MAX_TASKS]; /* [T] */

    float *params, *grads; /* device, bound by ms_heads_bind */

    /* Buffers shared by all tasks (sizes in activations, fixed at create). */
    size_t tmp_n, grad_n, col_n;
    ms_act *tmp0, *tmp1; /* [tmp_n] forward temporaries (and the normals loss' scratch) */
    ms_act *g0, *g1;     /* [grad_n] backward ping-pong: every backward step reads one, writes
                          * the other */
    ms_act *col;         /* [col_n] im2col of one image for the conv head */
    float *loss;         /* [T] unweighted task losses */
    float *dloss;        /* [T] dTotal/dLoss_t; under fixed weighting it holds the weights */
    float *ds_ws;        /* [T] dTotal/ds when no gradient buffer is bound */
    float *dloss_scaled; /* [T] dloss[t] x loss_scale of task t, for the loss backward */

    /* Data parallelism (ms_heads_set_stats_sum): NULL / 1 in one process. */
    ms_sum_fn stats_sum;
    void *stats_ctx;
    int world;
    size_t sync_n;      /* floats of the largest exchange: 4 T counts, 2 co BatchNorm sums */
    float *sync;        /* device [sync_n] what the hook sums */
    float *host_sync;   /* host [4 sync_n] staging, local values kept across the exchange */
};

/* The device parameter / gradient of head tensor k. */
static inline float *head_param(const ms_heads *h, int k) { return h->params + h->tensor[k].offset; }
static inline float *head_grad(const ms_heads *h, int k) { return h->grads + h->tensor[k].offset; }

/* Registers a tensor (decay: AdamW weight decay applies) and returns its index in h->tensor. */
int head_add_tensor(ms_heads *h, ms_param_table *pt, const char *name, int ndim,
                    const int64_t *shape, int decay, head_init init, int fan_in);
/* Arena pieces of n activations / n floats / n bytes / n int32. */
ms_act *head_take_act(ms_heads *h, ms_arena *a, size_t n);
float *head_take_f32(ms_arena *a, size_t n);
uint8_t *head_take_u8(ms_arena *a, size_t n);
int32_t *head_take_i32(ms_arena *a, size_t n);
/* max(*m, n). */
static inline void head_grow(size_t *m, size_t n) {
    if (n > *m) *m = n;
}

/* Data parallelism: host x[n] (n <= sync_n) summed over the ranks in place, through the device
 * buffer h->sync and the stats_sum hook (a collective). */
void head_all_sum(ms_heads *h, float *x, size_t n);

/* Per head kind: register tensors (and the shared buffer sizes they need), take activations,
 * forward, backward (dpred in h->g0 -> dx written), FLOPs per image. */
void head_dense_create(ms_heads *h, int t, ms_param_table *pt);
void head_dense_alloc(ms_heads *h, int t, ms_arena *a);
void head_dense_forward(ms_heads *h, int t, const ms_act *x);
void head_dense_backward(ms_heads *h, int t, const ms_act *x, ms_act *dx);
double head_dense_flops(const ms_heads *h, int t);

void head_class_create(ms_heads *h, int t, ms_param_table *pt);
void head_class_alloc(ms_heads *h, int t, ms_arena *a);
void head_class_forward(ms_heads *h, int t, const ms_act *x);
void head_class_backward(ms_heads *h, int t, const ms_act *x, ms_act *dx);
double head_class_flops(const ms_heads *h, int t);

void head_conv_create(ms_heads *h, int t, ms_param_table *pt);
void head_conv_alloc(ms_heads *h, int t, ms_arena *a);
void head_conv_forward(ms_heads *h, int t, const ms_act *x, int training);
void head_conv_backward(ms_heads *h, int t, const ms_act *x, ms_act *dx);
double head_conv_flops(const ms_heads *h, int t);

/* Task losses (task_loss.c): the loss settings of task t and the scratch they need; forward
 * writes h->loss[t]; backward writes dLoss/dpred * dloss[t] into h->g0. */
void task_loss_create(ms_heads *h, int t);
void task_loss_forward(ms_heads *h, int t);
void task_loss_backward(ms_heads *h, int t);

#endif
