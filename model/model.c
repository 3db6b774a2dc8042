/* The network of one config: backbone + heads over one parameter buffer and one arena, and
 * the step orchestration (model/model.h).
 *
 * Step: the backbone runs its passes (T, or one for hard_sharing) and leaves the routing losses
 * on the device; each task's head reads the final tokens of its pass; the heads weigh the task
 * losses. Backward: each head writes dL/dtokens of its task into the backbone's gradient input,
 * then the backbone runs every pass backward. The total loss differentiated is
 *     weighted task losses + w_mi * sum_layers L_MI + w_balance * sum_{layers, passes} cv^2,
 * the routing terms entering through the router probabilities inside the backbone.
 *
 * Data parallelism (ms_model_opts.stats_sum): the backbone sums the MI statistics over the
 * ranks, the heads the counts behind every masked loss and the conv head's BatchNorm
 * statistics, so that gradients averaged over the ranks are those of the global batch. */
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/util.h"
#include "arena.h"
#include "heads.h"
#include "tasks.h"

struct ms_model {
    const ms_config *cfg;
    ms_backend *be;
    int B, T, plan_only;
    ms_param_table pt;
    ms_vit *vit;
    ms_heads *heads;
    int n_backbone;       /* the first n_backbone tensors of pt are the backbone's */
    ms_range_fn grads_ready; /* ms_model_opts.grads_ready */
    void *grads_ctx;
    void *arena_base;     /* device, arena_bytes */
    size_t arena_bytes;
    float *params, *grads; /* device [pt.total] */
    float *total;          /* device scalar: the weighted task loss */
    int forwarded, training;
};

/* Every buffer of a step, in one sequence run twice: measuring, then placing. */
static void plan(ms_model *m, ms_arena *a) {
    ms_vit_alloc(m->vit, a);
    ms_heads_alloc(m->heads, a);
    m->total = ms_arena_alloc(a, sizeof(float));
}

static void *device_alloc(ms_backend *be, size_t bytes, const char *what) {
    void *p = be->alloc(be, bytes ? bytes : 64);
    if (!p)
        ms_fatal("out of %s memory allocating %.1f MiB for the %s; lower train.batch_size (or "
                 "eval.batch_size) or the model size",
                 be->name, bytes / 1048576.0, what);
    return p;
}

ms_model *ms_model_create(const ms_config *cfg, ms_backend *be, const ms_model_opts *o) {
    MS_ASSERT(o && o->batch >= 1);
    ms_model *m = ms_calloc(1, sizeof *m);
    m->cfg = cfg, m->be = be, m->B = o->batch, m->T = cfg->data.tasks.n;
    m->plan_only = o->plan_only;
    m->vit = ms_vit_create(cfg, be, m->B, o->rank, &m->pt);
    if (o->stats_sum) ms_vit_set_stats_sum(m->vit, o->stats_sum, o->stats_ctx, o->world);
    ms_vit_set_grads_ready(m->vit, o->grads_ready, o->grads_ctx);
    m->grads_ready = o->grads_ready, m->grads_ctx = o->grads_ctx;
    m->n_backbone = m->pt.n;
    ms_head_shape shape = {cfg, be, m->B, cfg->data.image_size, cfg->data.image_size,
                           ms_vit_tokens_per_image(m->vit), cfg->model.dim, m->T};
    m->heads = ms_heads_create(&shape, &m->pt);
    if (o->stats_sum) ms_heads_set_stats_sum(m->heads, o->stats_sum, o->stats_ctx, o->world);
    /* BatchNorm running statistics ride in the buffer but are not trained. */
    const int *buffers;
    int n_buffers = ms_heads_buffers(m->heads, &buffers);
    for (int i = 0; i < n_buffers; i++) ms_params_set_buffer(&m->pt, buffers[i]);

    ms_arena a;
    ms_arena_measure(&a);
    plan(m, &a);
    m->arena_bytes = ms_arena_size(&a);
    if (m->plan_only) return m;

    m->arena_base = device_alloc(be, m->arena_bytes, "activations");
    ms_arena_place(&a, m->arena_base, m->arena_bytes);
    plan(m, &a);
    size_t bytes = m->pt.total * sizeof(float);
    m->params = device_alloc(be, bytes, "parameters");
    m->grads = device_alloc(be, bytes, "gradients");
    be->zero(be, m->params, bytes);
    be->zero(be, m->grads, bytes);
    ms_vit_bind(m->vit, m->params, m->grads);
    ms_heads_bind(m->heads, m->params, m->grads);
    return m;
}

void ms_model_destroy(ms_model *m) {
    if (!m) return;
    if (m->arena_base) m->be->free(m->be, m->arena_base);
    if (m->params) m->be->free(m->be, m->params);
    if (m->grads) m->be->free(m->be, m->grads);
    ms_heads_destroy(m->heads);
    ms_vit_destroy(m->vit);
    ms_params_free(&m->pt);
    free(m);
}

/* A model with model.kept_experts holds a subset of a trained model's experts: only
 * `modsquad extract` makes one (from a checkpoint), and it is evaluated, not trained. */
static void refuse_extracted(const ms_model *m, const char *what) {
    if (m->cfg->model.kept_experts.layers == 0) return;
    ms_fatal("%s: model.kept_experts is set, so this config describes a single-task model "
             "extracted by `modsquad extract` from a trained checkpoint; it runs evaluation and "
             "inference (modsquad eval --checkpoint EXTRACTED) but cannot be %s. Train the full "
             "model (model.kept_experts: []) and extract again",
             m->cfg->source, what);
}

void ms_model_init(ms_model *m, uint64_t seed) {
    MS_ASSERT(!m->plan_only);
    refuse_extracted(m, "initialised or trained");
    float *host = ms_calloc(m->pt.total, sizeof(float)); /* padding stays 0 */
    ms_vit_init(m->vit, host, seed);
    ms_heads_init(m->heads, host, seed);
    m->be->upload(m->be, m->params, host, m->pt.total * sizeof(float));
    free(host);
}

void ms_model_zero_grads(ms_model *m) {
    MS_ASSERT(!m->plan_only);
    m->be->zero(m->be, m->grads, m->pt.total * sizeof(float));
}

/* ---- step ------------------------------------------------------------------------------------ */

void ms_model_forward(ms_model *m, const ms_batch *b, int training, int64_t step) {
    MS_ASSERT(!m->plan_only);
    int size = m->cfg->data.image_size;
    if (b->B != m->B || b->H != size || b->W != size || b->T != m->T)
        ms_fatal("the batch holds %d images of %dx%d with %d tasks, but the model was built for "
                 "%d images of %dx%d (data.image_size) with %d tasks (data.tasks)",
                 b->B, b->H, b->W, b->T, m->B, size, size, m->T);
    if (training) refuse_extracted(m, "trained");
    ms_vit_set_images(m->vit, b->images);
    ms_heads_set_targets(m->heads, b);
    if (training) ms_heads_share_counts(m->heads);
    ms_vit_forward(m->vit, training, step);
    for (int t = 0; t < m->T; t++)
        ms_heads_forward(m->heads, t, ms_vit_tokens(m->vit, t), training);
    /* The weighting adds its own parameter gradient as it weighs; an evaluation forward must
     * leave the gradients alone, so it weighs without a gradient buffer. */
    if (!training) ms_heads_bind(m->heads, m->params, NULL);
    ms_heads_weigh(m->heads, m->total);
    if (!training) ms_heads_bind(m->heads, m->params, m->grads);
    m->forwarded = 1, m->training = training;
}

void ms_model_backward(ms_model *m) {
    MS_ASSERT(m->forwarded && m->training);
    for (int t = 0; t < m->T; t++)
        ms_heads_backward(m->heads, t, ms_vit_tokens(m->vit, t), ms_vit_grad_in(m->vit, t));
    /* The heads' tensors follow the backbone's; some (norm, fc_norm) serve several tasks, so
     * their part is final after the last head. The weighting's gradient came in the forward. */
    if (m->grads_ready && m->pt.n > m->n_backbone) {
        size_t start = m->pt.t[m->n_backbone].offset;
        m->grads_ready(m->grads_ctx, start, m->pt.total - start);
    }
    ms_vit_backward(m->vit);
}

void ms_model_losses(const ms_model *m, ms_losses *out) {
    MS_ASSERT(m->forwarded);
    memset(out, 0, sizeof *out);
    out->T = m->T;
    float task[MS_MAX_TASKS], total;
    m->be->download(m->be, task, ms_heads_losses(m->heads), (size_t)m->T * sizeof(float));
    m->be->download(m->be, &total, m->total, sizeof total);
    for (int t = 0; t < m->T; t++) out->task[t] = task[t];
    out->weighted = total;
    ms_vit_aux_losses(m->vit, &out->mi, &out->balance);
    out->total = out->weighted + out->mi + out->balance;
}

/* ---- accessors ------------------------------------------------------------------------------- */

const ms_param_table *ms_model_params(const ms_model *m) { return &m->pt; }
float *ms_model_param_data(ms_model *m) { return m->params; }
float *ms_model_grad_data(ms_model *m) { return m->grads; }

const ms_act *ms_model_prediction(const ms_model *m, int t) {
    MS_ASSERT(t >= 0 && t < m->T);
    return ms_heads_prediction(m->heads, t);
}

const ms_act *ms_model_tokens(const ms_model *m, int t) { return ms_vit_tokens(m->vit, t); }

int ms_model_moe_layers(const ms_model *m) { return ms_vit_moe_layers(m->vit); }
ms_moe_info ms_model_moe_info(const ms_model *m, int layer) {
    return ms_vit_moe_info(m->vit, layer);
}
void ms_model_expert_counts(const ms_model *m, int layer, int t, int64_t *counts) {
    ms_vit_expert_counts(m->vit, layer, t, counts);
}

void ms_model_expert_counts_of(const ms_model *m, int layer, int t, int n, int64_t *counts) {
    MS_ASSERT(n >= 1 && n <= m->B);
    if (n == m->B) {
        ms_vit_expert_counts(m->vit, layer, t, counts);
        return;
    }
    /* The routing's rows are tokens, image by image: the first n N rows are the n images'.
     * Only a short last batch of an evaluation comes here, so the host copy is made here. */
    ms_moe_info mi = ms_vit_moe_info(m->vit, layer);
    size_t rows = (size_t)n * ms_vit_tokens_per_image(m->vit) * mi.K;
    int32_t *idx = ms_malloc(rows * sizeof(int32_t)); /* [n N, K] full-model expert indices */
    m->be->download(m->be, idx, ms_vit_route_idx(m->vit, layer, t), rows * sizeof(int32_t));
    memset(counts, 0, (size_t)mi.E * sizeof(int64_t));
    for (size_t i = 0; i < rows; i++) {
        MS_ASSERT(idx[i] >= 0 && idx[i] < mi.E);
        counts[idx[i]]++;
    }
    free(idx);
}

double ms_model_flops(const ms_model *m, int t) {
    return ms_vit_flops(m->vit, t) + ms_heads_flops(m->heads, t);
}

static int has_prefix(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

void ms_model_param_counts(const ms_model *m, ms_param_counts *out) {
    memset(out, 0, sizeof *out);
    const ms_param_table *pt = &m->pt;
    double head_t[MS_MAX_TASKS] = {0}, norm = 0, fc_norm = 0;
    for (int j = 0; j < pt->n; j++) {
        const ms_tensor_info *ti = &pt->t[j];
        if (ti->buffer) continue;
        double n = (double)ti->numel;
        out->total += n;
        if (j < m->n_backbone) {
            out->backbone += n;
        } else if (has_prefix(ti->name, "awl.")) {
            out->weighting += n;
        } else {
            out->heads += n;
            if (has_prefix(ti->name, "norm.")) norm += n;
            if (has_prefix(ti->name, "fc_norm.")) fc_norm += n;
            int t;
            if (sscanf(ti->name, "task_heads.%d.", &t) == 1 && t >= 0 && t < m->T) head_t[t] += n;
        }
    }
    for (int t = 0; t < m->T; t++) {
        const ms_task_def *d = ms_task_find(m->cfg->data.dataset, m->cfg->data.tasks.name[t]);
        /* which shared norm task t's head reads (the conv head has its own, in task_heads.t) */
        double shared = d->classification                    ? fc_norm
                        : m->cfg->model.head == MS_HEAD_LINEAR ? norm
                                                               : 0;
        out->active[t] = ms_vit_active_params(m->vit, t) + head_t[t] + shared;
    }
}

ms_memory_plan ms_model_memory(const ms_model *m) {
    ms_memory_plan p;
    p.params = m->pt.total * sizeof(float);
    p.grads = p.params;
    p.optimizer = 2 * p.params;
    p.activations = m->arena_bytes;
    p.total = p.params + p.grads + p.optimizer + p.activations;
    return p;
}

ms_vit *ms_model_backbone(ms_model *m) { return m->vit; }
struct ms_heads *ms_model_heads(ms_model *m) { return m->heads; }
