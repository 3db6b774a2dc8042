/* Task heads: lifecycle, parameters, targets, task weighting and the per-task dispatch to the
 * three head kinds (METHOD.md section 4; .notes/official_model.md sections 1, 2 and 5).
 *
 * Parameter names (all registered after the backbone's):
 *   norm.weight / norm.bias (D)            final LayerNorm of the linear dense heads (eps 1e-6)
 *   fc_norm.weight / fc_norm.bias (D)      LayerNorm shared by the classification heads
 *   task_heads.{t}.*                       per task, see head_dense.c, head_class.c, head_conv.c
 *   awl.params (T)                         uncertainty weighting s_t (init 1)
 * `norm` and `fc_norm` exist only when a task uses them, awl.params only under uncertainty
 * weighting. The fixed weights of model.task_weights are not parameters; they live in a small
 * device array (h->dloss, which is also what the backward passes read).
 *
 * Weight decay flags follow the official param_groups_lrd: tensors of 2 or more dimensions are
 * decayed, 1-D ones (biases, norms) are not; awl.params IS decayed, as in the official code
 * (its own param group with weight_decay 0.05). BatchNorm running statistics are buffers:
 * decay 0, never a gradient (ms_heads_buffers lists them). */
#include "heads_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/util.h"
#include "rng.h"

int head_add_tensor(ms_heads *h, ms_param_table *pt, const char *name, int ndim,
                    const int64_t *shape, int decay, head_init init, int fan_in) {
    if (h->ntensor == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 32;
        head_tensor *t = realloc(h->tensor, (size_t)h->cap * sizeof *t);
        if (!t) ms_fatal("out of memory growing the heads' tensor list to %d entries", h->cap);
        h->tensor = t;
    }
    int index = ms_params_add(pt, name, ndim, shape, decay);
    head_tensor *t = &h->tensor[h->ntensor];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->index = index;
    t->offset = pt->t[index].offset;
    t->numel = pt->t[index].numel;
    t->init = init;
    t->fan_in = fan_in;
    return h->ntensor++;
}

ms_act *head_take_act(ms_heads *h, ms_arena *a, size_t n) {
    return ms_arena_alloc(a, (n ? n : 1) * h->be->act_size);
}
float *head_take_f32(ms_arena *a, size_t n) { return ms_arena_alloc(a, (n ? n : 1) * sizeof(float)); }
uint8_t *head_take_u8(ms_arena *a, size_t n) { return ms_arena_alloc(a, n ? n : 1); }
int32_t *head_take_i32(ms_arena *a, size_t n) {
    return ms_arena_alloc(a, (n ? n : 1) * sizeof(int32_t));
}

static int64_t shape1(int64_t n) { return n; }

/* The shared LayerNorms are registered by the first task that needs them. */
static void add_shared_norms(ms_heads *h, ms_param_table *pt, int dense_linear, int cls) {
    int64_t d = shape1(h->D);
    if (dense_linear && h->norm_w < 0) {
        h->norm_w = head_add_tensor(h, pt, "norm.weight", 1, &d, 0, HEAD_INIT_ONE, 0);
        h->norm_b = head_add_tensor(h, pt, "norm.bias", 1, &d, 0, HEAD_INIT_ZERO, 0);
    }
    if (cls && h->fc_w < 0) {
        h->fc_w = head_add_tensor(h, pt, "fc_norm.weight", 1, &d, 0, HEAD_INIT_ONE, 0);
        h->fc_b = head_add_tensor(h, pt, "fc_norm.bias", 1, &d, 0, HEAD_INIT_ZERO, 0);
    }
}

static void check_shape(const ms_head_shape *s) {
    const ms_config *cfg = s->cfg;
    int p = cfg->model.patch;
    if (s->T != cfg->data.tasks.n || s->T < 1 || s->T > MS_MAX_TASKS)
        ms_fatal("heads: %d tasks requested but data.tasks lists %d (1 to %d allowed)", s->T,
                 cfg->data.tasks.n, MS_MAX_TASKS);
    if (p < 1 || s->H % p || s->W % p)
        ms_fatal("heads: model.patch (%d) must divide the image size %dx%d", p, s->H, s->W);
    MS_ASSERT(s->B >= 1 && s->D >= 1);
    MS_ASSERT(s->N == 1 + (s->H / p) * (s->W / p));
    if (cfg->model.head != MS_HEAD_LINEAR && cfg->model.head != MS_HEAD_CONV)
        ms_fatal("heads: model.head must be resolved to linear or conv before building the heads");
    if (cfg->model.task_weighting != MS_WEIGHTING_UNCERTAINTY &&
        cfg->model.task_weighting != MS_WEIGHTING_FIXED)
        ms_fatal("heads: model.task_weighting must be resolved to uncertainty or fixed before "
                 "building the heads");
    if (cfg->model.task_weighting == MS_WEIGHTING_FIXED && cfg->model.task_weights.n != s->T)
        ms_fatal("heads: model.task_weights has %d entries, want one per task of data.tasks (%d)",
                 cfg->model.task_weights.n, s->T);
}

ms_heads *ms_heads_create(const ms_head_shape *s, ms_param_table *pt) {
    check_shape(s);
    const ms_config *cfg = s->cfg;
    ms_heads *h = ms_calloc(1, sizeof *h);
    h->cfg = cfg, h->be = s->be;
    h->B = s->B, h->H = s->H, h->W = s->W, h->N = s->N, h->D = s->D, h->T = s->T;
    h->p = cfg->model.patch;
    h->gh = s->H / h->p, h->gw = s->W / h->p, h->Np = s->N - 1;
    h->norm_w = h->norm_b = h->fc_w = h->fc_b = h->awl = -1;
    h->world = 1;
    h->sync_n = (size_t)4 * h->T; /* ms_heads_share_counts; the conv head grows it */
    for (int t = 0; t < h->T; t++) {
        task_head *th = &h->task[t];
        th->loss_scale = 1.0f, th->batch_pos_weight = -1.0f;
        th->def = ms_task_find(cfg->data.dataset, cfg->data.tasks.name[t]);
        if (!th->def)
            ms_fatal("heads: data.tasks[%d] '%s' is not a task of data.dataset %s", t,
                     cfg->data.tasks.name[t], ms_dataset_names[cfg->data.dataset]);
        th->C = th->def->channels;
        th->ln_w = th->ln_b = th->lin_w = th->lin_b = -1;
        th->kind = th->def->classification     ? HEAD_CLASS
                   : cfg->model.head == MS_HEAD_CONV ? HEAD_CONV
                                                     : HEAD_DENSE_LINEAR;
        add_shared_norms(h, pt, th->kind == HEAD_DENSE_LINEAR, th->kind == HEAD_CLASS);
        switch (th->kind) {
        case HEAD_DENSE_LINEAR: head_dense_create(h, t, pt); break;
        case HEAD_CLASS: head_class_create(h, t, pt); break;
        case HEAD_CONV: head_conv_create(h, t, pt); break;
        }
        task_loss_create(h, t);
    }
    if (cfg->model.task_weighting == MS_WEIGHTING_UNCERTAINTY) {
        int64_t T = shape1(h->T);
        h->awl = head_add_tensor(h, pt, "awl.params", 1, &T, 1, HEAD_INIT_ONE, 0);
    }
    return h;
}

void ms_heads_destroy(ms_heads *h) {
    if (!h) return;
    free(h->host_sync);
    free(h->tensor);
    free(h);
}

/* Device targets of task t, in the layout of its target kind (model/batch.h). */
static void alloc_targets(ms_heads *h, int t, ms_arena *a) {
    task_head *th = &h->task[t];
    size_t BP = (size_t)h->B * h->H * h->W;
    switch (th->def->target) {
    case MS_TARGET_DENSE:
        th->dense = head_take_f32(a, BP * th->C);
        th->valid = th->use_valid ? head_take_u8(a, BP) : NULL;
        break;
    case MS_TARGET_LABELS: th->labels = head_take_i32(a, BP); break;
    case MS_TARGET_BINARY: th->binary = head_take_u8(a, BP); break;
    case MS_TARGET_VECTOR: th->vector = head_take_f32(a, (size_t)h->B * th->C); break;
    }
}

void ms_heads_alloc(ms_heads *h, ms_arena *a) {
    for (int t = 0; t < h->T; t++) {
        switch (h->task[t].kind) {
        case HEAD_DENSE_LINEAR: head_dense_alloc(h, t, a); break;
        case HEAD_CLASS: head_class_alloc(h, t, a); break;
        case HEAD_CONV: head_conv_alloc(h, t, a); break;
        }
        alloc_targets(h, t, a);
    }
    h->tmp0 = head_take_act(h, a, h->tmp_n);
    h->tmp1 = head_take_act(h, a, h->tmp_n);
    h->g0 = head_take_act(h, a, h->grad_n);
    h->g1 = head_take_act(h, a, h->grad_n);
    h->col = h->col_n ? head_take_act(h, a, h->col_n) : NULL;
    h->loss = head_take_f32(a, (size_t)h->T);
    h->dloss = head_take_f32(a, (size_t)h->T);
    h->ds_ws = head_take_f32(a, (size_t)h->T);
    h->dloss_scaled = head_take_f32(a, (size_t)h->T);
    h->sync = head_take_f32(a, h->sync_n);
    /* The fixed weights never change: they are written once, when the arena is real. */
    if (a->base && h->awl < 0) {
        float w[MS_MAX_TASKS]; /* [T] */
        for (int t = 0; t < h->T; t++) w[t] = (float)h->cfg->model.task_weights.value[t];
        h->be->upload(h->be, h->dloss, w, (size_t)h->T * sizeof(float));
    }
}

void ms_heads_init(ms_heads *h, float *host_params, uint64_t seed) {
    for (int k = 0; k < h->ntensor; k++) {
        const head_tensor *t = &h->tensor[k];
        float *p = host_params + t->offset;
        uint64_t stream = ms_rng_stream(t->name);
        double bound = t->fan_in > 0 ? 1.0 / sqrt((double)t->fan_in) : 0.0;
        for (size_t i = 0; i < t->numel; i++) {
            switch (t->init) {
            case HEAD_INIT_ZERO: p[i] = 0.0f; break;
            case HEAD_INIT_ONE: p[i] = 1.0f; break;
            case HEAD_INIT_TRUNC_NORMAL:
                p[i] = (float)ms_rng_trunc_normal(seed, stream, i, 0.02, -2.0, 2.0);
                break;
            case HEAD_INIT_FAN_IN:
                p[i] = (float)((2.0 * ms_rng_uniform(seed, stream, i) - 1.0) * bound);
                break;
            }
        }
    }
}

void ms_heads_bind(ms_heads *h, float *params, float *grads) {
    h->params = params;
    h->grads = grads;
}

/* ---- targets and data parallelism ---------------------------------------------------------- */

#define HEAD_BCE_IGNORE 255 /* loss_bce_balanced's ignored label (kernels/backend.h) */

/* The elements of the targets g (of B images) that task th's loss averages over, as the loss
 * ops count them (kernels/backend.h): the valid pixels of a masked dense task (the mask covers
 * every channel, so pixels stand for pixels x C), labels other than ignore_index inside [0, C)
 * for CE, labels other than 255 for BCE (*negatives: those that are 0); else every element. */
static int64_t count_targets(const task_head *th, const ms_target *g, int B, size_t P,
                             int64_t *negatives) {
    size_t n = (size_t)B * P;
    int64_t count = 0;
    *negatives = 0;
    switch (th->def->loss) {
    case MS_LOSS_CE:
        for (size_t i = 0; i < n; i++) {
            int32_t lab = g->labels[i];
            count += lab != th->def->ignore_index && lab >= 0 && lab < th->C;
        }
        return count;
    case MS_LOSS_BCE_BALANCED:
        for (size_t i = 0; i < n; i++) {
            count += g->binary[i] != HEAD_BCE_IGNORE;
            *negatives += g->binary[i] == 0;
        }
        return count;
    default:
        if (th->def->target == MS_TARGET_VECTOR) return B;
        if (!th->use_valid) return (int64_t)n;
        for (size_t i = 0; i < n; i++) count += g->valid[i] != 0;
        return count;
    }
}

void ms_heads_set_stats_sum(ms_heads *h, ms_sum_fn fn, void *ctx, int world) {
    MS_ASSERT(world >= 1 && (fn || world == 1));
    h->stats_sum = fn, h->stats_ctx = ctx, h->world = world;
    if (world > 1 && !h->host_sync) h->host_sync = ms_malloc(4 * h->sync_n * sizeof(float));
}

void head_all_sum(ms_heads *h, float *x, size_t n) {
    MS_ASSERT(h->stats_sum && n <= h->sync_n);
    h->be->upload(h->be, h->sync, x, n * sizeof(float));
    h->stats_sum(h->stats_ctx, h->sync, n);
    h->be->download(h->be, x, h->sync, n * sizeof(float));
}

/* Counts travel as floats (the hook sums floats), split at 2^12 into two parts that each stay
 * an exact float sum below 2^24: exact for global counts below 2^36. */
#define COUNT_SPLIT 4096

void ms_heads_share_counts(ms_heads *h) {
    if (h->world <= 1) return;
    float *x = h->host_sync; /* [T, 4]: count high, low, negatives high, low */
    for (int t = 0; t < h->T; t++) {
        const task_head *th = &h->task[t];
        x[4 * t + 0] = (float)(th->count / COUNT_SPLIT);
        x[4 * t + 1] = (float)(th->count % COUNT_SPLIT);
        x[4 * t + 2] = (float)(th->negatives / COUNT_SPLIT);
        x[4 * t + 3] = (float)(th->negatives % COUNT_SPLIT);
    }
    head_all_sum(h, x, (size_t)4 * h->T);
    for (int t = 0; t < h->T; t++) {
        task_head *th = &h->task[t];
        double all = (double)x[4 * t] * COUNT_SPLIT + x[4 * t + 1];
        double neg = (double)x[4 * t + 2] * COUNT_SPLIT + x[4 * t + 3];
        /* No valid element on any rank: every loss and gradient is 0 anyway. */
        th->loss_scale = all > 0 ? (float)((double)th->count * h->world / all) : 1.0f;
        if (th->def->loss == MS_LOSS_BCE_BALANCED && th->pos_weight < 0)
            th->batch_pos_weight = all > 0 ? (float)(neg / all) : 0.0f;
    }
}

void ms_heads_set_targets(ms_heads *h, const ms_batch *b) {
    if (b->B != h->B || b->H != h->H || b->W != h->W || b->T != h->T)
        ms_fatal("heads: the batch holds %d images of %dx%d with %d tasks, but the heads were "
                 "built for %d images of %dx%d with %d tasks",
                 b->B, b->H, b->W, b->T, h->B, h->H, h->W, h->T);
    ms_backend *be = h->be;
    size_t BP = (size_t)h->B * h->H * h->W;
    for (int t = 0; t < h->T; t++) {
        task_head *th = &h->task[t];
        th->loss_scale = 1.0f, th->batch_pos_weight = -1.0f;
        if (h->world > 1)
            th->count = count_targets(th, &b->target[t], h->B, (size_t)h->H * h->W, &th->negatives);
    }
    for (int t = 0; t < h->T; t++) {
        const task_head *th = &h->task[t];
        const ms_target *g = &b->target[t];
        switch (th->def->target) {
        case MS_TARGET_DENSE:
            be->upload(be, th->dense, g->dense, BP * th->C * sizeof(float));
            if (th->valid) be->upload(be, th->valid, g->valid, BP);
            break;
        case MS_TARGET_LABELS: be->upload(be, th->labels, g->labels, BP * sizeof(int32_t)); break;
        case MS_TARGET_BINARY: be->upload(be, th->binary, g->binary, BP); break;
        case MS_TARGET_VECTOR:
            be->upload(be, th->vector, g->vector, (size_t)h->B * th->C * sizeof(float));
            break;
        }
    }
}

void ms_heads_forward(ms_heads *h, int t, const ms_act *x, int training) {
    MS_ASSERT(t >= 0 && t < h->T && h->params);
    switch (h->task[t].kind) {
    case HEAD_DENSE_LINEAR: head_dense_forward(h, t, x); break;
    case HEAD_CLASS: head_class_forward(h, t, x); break;
    case HEAD_CONV: head_conv_forward(h, t, x, training); break;
    }
    task_loss_forward(h, t);
    h->task[t].trained = training != 0;
}

void ms_heads_weigh(ms_heads *h, float *total) {
    ms_backend *be = h->be;
    if (h->awl >= 0)
        /* Without a gradient buffer (evaluation only) ds lands in scratch. */
        be->uncertainty_weighting(be, total, h->dloss, h->grads ? head_grad(h, h->awl) : h->ds_ws,
                                  h->loss, head_param(h, h->awl), h->T);
    else
        be->loss_weighted_sum(be, total, h->loss, h->dloss, h->T);
}

void ms_heads_backward(ms_heads *h, int t, const ms_act *x, ms_act *dx) {
    MS_ASSERT(t >= 0 && t < h->T && h->grads);
    /* BatchNorm's backward is that of the batch statistics: an eval-mode forward has none. */
    if (!h->task[t].trained)
        ms_fatal("heads: backward of task %s after an evaluation-mode forward (internal error)",
                 h->task[t].def->name);
    task_loss_backward(h, t);
    switch (h->task[t].kind) {
    case HEAD_DENSE_LINEAR: head_dense_backward(h, t, x, dx); break;
    case HEAD_CLASS: head_class_backward(h, t, x, dx); break;
    case HEAD_CONV: head_conv_backward(h, t, x, dx); break;
    }
}

const ms_act *ms_heads_prediction(const ms_heads *h, int t) {
    MS_ASSERT(t >= 0 && t < h->T);
    return h->task[t].pred;
}

const float *ms_heads_losses(const ms_heads *h) { return h->loss; }

double ms_heads_flops(const ms_heads *h, int t) {
    MS_ASSERT(t >= 0 && t < h->T);
    switch (h->task[t].kind) {
    case HEAD_DENSE_LINEAR: return head_dense_flops(h, t);
    case HEAD_CLASS: return head_class_flops(h, t);
    case HEAD_CONV: return head_conv_flops(h, t);
    }
    return 0;
}

int ms_heads_buffers(const ms_heads *h, const int **idx) {
    *idx = h->buffers;
    return h->nbuffers;
}
