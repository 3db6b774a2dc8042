/* The whole model (model/model.h): backbone + heads + losses + task weighting + routing losses.
 * Gradients of every tensor of every arch against finite differences of the total loss, a task
 * run alone against its pass inside the multi-task step, determinism, evaluation mode, experts
 * without tokens, the parameter counts of the paper presets and the memory plan. */
#include "../../model/arena.h"
#include "../../model/model.h"
#include "../../model/tasks.h"
#include "model_fd.h"

#define STEP 3

/* Taskonomy tasks of three loss kinds (masked L1, cosine, MSE on soft class targets). */
static const char *const TASKONOMY_SETS[] = {
    "data.tasks=[depth_euclidean, normal, class_scene]"};
/* PASCAL-Context tasks with linear heads (CE, balanced BCE, normals L1) and fixed weights. */
static const char *const PASCAL_SETS[] = {
    "data.dataset=pascal_context", "data.tasks=[semseg, sal, normals, edge, human_parts]",
    "model.head=linear", "data.resize=16"};

typedef struct {
    ms_config cfg;
    ms_backend *be;
    ms_model *m;
    ms_batch batch;
    int B, T;
    size_t sig_len;
} mm;

/* Targets far from what the model predicts (|target| >= 2), so no L1 kink lies within a
 * finite-difference step; a few invalid / ignored pixels. */
static void fill_batch(mm *x, uint64_t seed) {
    tu_rng r = tu_seed(seed);
    ms_batch *b = &x->batch;
    size_t P = (size_t)b->H * b->W;
    tu_fill_normal(&r, b->images, (size_t)b->B * 3 * P, 1.0);
    for (int t = 0; t < b->T; t++) {
        const ms_task_def *d = ms_task_find(x->cfg.data.dataset, x->cfg.data.tasks.name[t]);
        ms_target *g = &b->target[t];
        size_t BP = (size_t)b->B * P;
        switch (d->target) {
        case MS_TARGET_DENSE:
            for (size_t i = 0; i < BP * d->channels; i++)
                g->dense[i] = (float)((tu_uniform(&r) < 0.5 ? -1 : 1) * (2 + tu_uniform(&r)));
            for (size_t i = 0; i < BP; i++) g->valid[i] = tu_uniform(&r) < 0.9;
            break;
        case MS_TARGET_LABELS:
            for (size_t i = 0; i < BP; i++)
                g->labels[i] = tu_uniform(&r) < 0.1 ? d->ignore_index
                                                    : tu_randint(&r, 0, d->channels - 1);
            break;
        case MS_TARGET_BINARY:
            for (size_t i = 0; i < BP; i++) g->binary[i] = tu_uniform(&r) < 0.05 ? 255 : tu_uniform(&r) < 0.3;
            break;
        case MS_TARGET_VECTOR:
            for (int i = 0; i < b->B; i++) {
                double s = 0, *e = tu_doubles((size_t)d->channels);
                for (int c = 0; c < d->channels; c++) s += e[c] = exp(2 * tu_normal(&r));
                for (int c = 0; c < d->channels; c++)
                    g->vector[(size_t)i * d->channels + c] = (float)(e[c] / s);
                free(e);
            }
            break;
        }
    }
}

static void mm_setup(mm *x, const char *const *sets1, int n1, const char *const *sets2, int n2,
                     int B, uint64_t seed) {
    memset(x, 0, sizeof *x);
    const char *sets[16];
    cr_assert(n1 + n2 <= 16);
    for (int i = 0; i < n1; i++) sets[i] = sets1[i];
    for (int i = 0; i < n2; i++) sets[n1 + i] = sets2[i];
    fd_config(&x->cfg, FD_TINY_YAML, n1 + n2, sets);
    x->be = tu_cpu();
    x->B = B, x->T = x->cfg.data.tasks.n;
    x->m = ms_model_create(&x->cfg, x->be, &(ms_model_opts){.batch = B});
    ms_model_init(x->m, seed);
    ms_model_zero_grads(x->m);
    ms_batch_alloc(&x->batch, &x->cfg, B, 16, 16);
    fill_batch(x, 1000); /* the same data whatever the weights */
    int M = B * ms_vit_tokens_per_image(ms_model_backbone(x->m));
    for (int l = 0; l < ms_model_moe_layers(x->m); l++)
        x->sig_len += (size_t)ms_vit_passes(ms_model_backbone(x->m)) * M *
                      ms_model_moe_info(x->m, l).K;
}

static void mm_free(mm *x) {
    ms_model_destroy(x->m);
    ms_batch_free(&x->batch);
}

static const ms_tensor_info *find(const ms_param_table *pt, const char *name) {
    int j = ms_params_find(pt, name);
    cr_assert(j >= 0, "tensor %s missing", name);
    return &pt->t[j];
}

static void scale(mm *x, const char *part, float s) {
    const ms_param_table *pt = ms_model_params(x->m);
    float *p = ms_model_param_data(x->m);
    for (int j = 0; j < pt->n; j++) {
        const ms_tensor_info *ti = &pt->t[j];
        if (!strstr(ti->name, part) || ti->buffer) continue;
        float *h = tu_floats(ti->numel);
        x->be->download(x->be, h, p + ti->offset, ti->numel * sizeof(float));
        for (size_t i = 0; i < ti->numel; i++) h[i] *= s;
        x->be->upload(x->be, p + ti->offset, h, ti->numel * sizeof(float));
        free(h);
    }
}

/* As in test_backbone.c: decisive routing and gradients above the fp32 noise everywhere. */
static void condition(mm *x) {
    scale(x, "f_gate", 30.0f);
    const char *linears[] = {"qkv.weight", "proj.weight", "fc1.weight", "fc2.weight",
                             "kv_proj.0.weight", "pos_embed", "cls_token"};
    for (int k = 0; k < 7; k++) scale(x, linears[k], 3.0f);
    /* Predictions of order 1: the cosine and normalised-L1 losses curve on the scale of |pred|,
     * which trunc_normal(.02) heads make ~0.05, too small for the finite-difference step. */
    scale(x, "task_heads", 10.0f);
}

static void routing(mm *x, int32_t *sig) {
    ms_vit *v = ms_model_backbone(x->m);
    int M = x->B * ms_vit_tokens_per_image(v);
    size_t o = 0;
    for (int l = 0; l < ms_model_moe_layers(x->m); l++)
        for (int p = 0; p < ms_vit_passes(v); p++) {
            size_t n = (size_t)M * ms_model_moe_info(x->m, l).K;
            x->be->download(x->be, sig + o, ms_vit_route_idx(v, l, p), n * sizeof(int32_t));
            o += n;
        }
}

static double total_loss(void *ctx, int32_t *sig) {
    mm *x = ctx;
    ms_model_forward(x->m, &x->batch, 1, STEP);
    ms_losses L;
    ms_model_losses(x->m, &L);
    if (sig) routing(x, sig);
    return L.total;
}

static float *analytic(mm *x) {
    const ms_param_table *pt = ms_model_params(x->m);
    ms_model_zero_grads(x->m);
    ms_model_forward(x->m, &x->batch, 1, STEP);
    ms_model_backward(x->m);
    float *g = tu_floats(pt->total);
    x->be->download(x->be, g, ms_model_grad_data(x->m), pt->total * sizeof(float));
    return g;
}

static void grad_check(const char *const *sets, int n, const char *const *data, int nd,
                       uint64_t seed) {
    static mm x;
    mm_setup(&x, data, nd, sets, n, 2, seed);
    condition(&x);
    float *g = analytic(&x);
    const ms_param_table *pt = ms_model_params(x.m);
    fd_spec s = {x.be, pt, ms_model_param_data(x.m), total_loss, &x, x.sig_len, 4, seed, NULL, NULL};
    /* Every tensor within 2% beyond the measured fp32 noise, all entries together within 1%,
     * at most 15% of the entries skipped for routing flips (model_fd.h). */
    fd_result r = fd_check(&s, g, 2e-2, 1e-2, 0.15);
    int trained = 0;
    for (int j = 0; j < pt->n; j++) trained += !pt->t[j].buffer;
    cr_assert(r.tensors >= trained - trained / 10, "only %d of %d tensors checked", r.tensors,
              trained);
    cr_log_info("%s: %d tensors, %d entries, %d skipped, overall %.2e, worst %.2e (%s)",
                ms_arch_names[x.cfg.model.arch], r.tensors, r.checked, r.skipped, r.total_rel,
                r.worst_rel, r.worst);
    mm_free(&x);
}

/* ---- whole-model gradients ----------------------------------------------------------------- */

Test(model, grad_modsquad_taskonomy) {
    const char *sets[] = {"model.w_mi=0.5"};
    grad_check(sets, 1, TASKONOMY_SETS, 1, 1);
}

Test(model, grad_modsquad_pascal_fixed_weights) {
    const char *sets[] = {"model.noisy_gating=true"};
    grad_check(sets, 1, PASCAL_SETS, 4, 2);
}

Test(model, grad_task_moe) {
    const char *sets[] = {"model.arch=task_moe"};
    grad_check(sets, 1, TASKONOMY_SETS, 1, 3);
}

Test(model, grad_task_moe_shared_router) {
    const char *sets[] = {"model.arch=task_moe", "model.router=shared_task_conditioned"};
    grad_check(sets, 2, TASKONOMY_SETS, 1, 4);
}

Test(model, grad_m3vit) {
    const char *sets[] = {"model.arch=m3vit", "model.noisy_gating=true", "model.w_balance=0.5"};
    grad_check(sets, 3, TASKONOMY_SETS, 1, 5);
}

Test(model, grad_hard_sharing) {
    const char *sets[] = {"model.arch=hard_sharing"};
    grad_check(sets, 1, TASKONOMY_SETS, 1, 6);
}

Test(model, grad_separate_bottom) {
    const char *sets[] = {"model.arch=separate_bottom", "model.separate_layers=2"};
    grad_check(sets, 2, PASCAL_SETS, 4, 7);
}

Test(model, grad_single_task) {
    const char *sets[] = {"model.arch=single_task", "data.tasks=[normal]"};
    grad_check(sets, 2, NULL, 0, 8);
}

/* ---- a task alone -------------------------------------------------------------------------- */

/* Name in the one-task model -> name in the multi-task model, for task t. */
static void multi_name(char *out, size_t cap, const char *name, int t) {
    const char *keys[] = {"f_gate.0.", "task_blocks.0.", "task_heads.0."};
    for (int k = 0; k < 3; k++) {
        const char *at = strstr(name, keys[k]);
        if (!at) continue;
        size_t pre = (size_t)(at - name), klen = strlen(keys[k]);
        snprintf(out, cap, "%.*s%.*s%d.%s", (int)pre, name, (int)(klen - 2), keys[k], t,
                 at + klen);
        return;
    }
    snprintf(out, cap, "%s", name);
}

/* Copies every tensor of `one` from `multi` by name; rows of task t of task_embedding and
 * awl.params. */
static void copy_task_weights(mm *one, mm *multi, int t) {
    const ms_param_table *pm = ms_model_params(multi->m), *po = ms_model_params(one->m);
    float *src = tu_floats(pm->total), *dst = tu_floats(po->total);
    multi->be->download(multi->be, src, ms_model_param_data(multi->m), pm->total * sizeof(float));
    for (int j = 0; j < po->n; j++) {
        const ms_tensor_info *ti = &po->t[j];
        char name[MS_TENSOR_NAME_MAX];
        multi_name(name, sizeof name, ti->name, t);
        const ms_tensor_info *si = find(pm, name);
        size_t off = 0;
        if (!strcmp(ti->name, "task_embedding")) off = (size_t)t * multi->cfg.model.dim;
        if (!strcmp(ti->name, "awl.params")) off = (size_t)t;
        cr_assert(off + ti->numel <= si->numel, "%s does not fit %s", ti->name, name);
        memcpy(dst + ti->offset, src + si->offset + off, ti->numel * sizeof(float));
    }
    one->be->upload(one->be, ms_model_param_data(one->m), dst, po->total * sizeof(float));
}

static size_t pred_size(const mm *x, int t) {
    const ms_task_def *d = ms_task_find(x->cfg.data.dataset, x->cfg.data.tasks.name[t]);
    return (size_t)x->B * d->channels * (d->classification ? 1 : 16 * 16);
}

static float *prediction(mm *x, int t) {
    size_t n = pred_size(x, t);
    float *p = tu_floats(n);
    x->be->download_act(x->be, p, ms_model_prediction(x->m, t), n);
    return p;
}

static void check_alone(const char *const *sets, int n) {
    static mm multi, one;
    mm_setup(&multi, TASKONOMY_SETS, 1, sets, n, 2, 31);
    const char *one_sets[8];
    for (int i = 0; i < n; i++) one_sets[i] = sets[i];
    one_sets[n] = "data.tasks=[normal]"; /* task 1 of TASKONOMY_SETS */
    mm_setup(&one, NULL, 0, one_sets, n + 1, 2, 32);
    /* the batch of the one-task model holds task 1's targets */
    memcpy(one.batch.images, multi.batch.images, (size_t)2 * 3 * 256 * sizeof(float));
    memcpy(one.batch.target[0].dense, multi.batch.target[1].dense, (size_t)2 * 3 * 256 * 4);
    memcpy(one.batch.target[0].valid, multi.batch.target[1].valid, (size_t)2 * 256);
    copy_task_weights(&one, &multi, 1);
    for (int training = 1; training >= 0; training--) {
        ms_model_forward(multi.m, &multi.batch, training, 9);
        ms_model_forward(one.m, &one.batch, training, 9);
        tu_expect_equal(training ? "task alone: prediction (training)"
                                 : "task alone: prediction (eval)",
                        prediction(&one, 0), prediction(&multi, 1), pred_size(&one, 0));
        ms_losses a, b;
        ms_model_losses(multi.m, &a);
        ms_model_losses(one.m, &b);
        cr_assert_eq((float)b.task[0], (float)a.task[1], "task alone: loss %.9g vs %.9g",
                     b.task[0], a.task[1]);
    }
    mm_free(&multi), mm_free(&one);
}

Test(model, task_alone_matches_multi_task_step) {
    const char *mod[] = {"model.noisy_gating=true"};
    check_alone(mod, 1);
    const char *tm[] = {"model.arch=task_moe", "model.router=shared_task_conditioned"};
    check_alone(tm, 2);
    const char *m3[] = {"model.arch=m3vit", "model.noisy_gating=true"};
    check_alone(m3, 2);
    const char *sep[] = {"model.arch=separate_bottom", "model.separate_layers=2"};
    check_alone(sep, 2);
}

/* ---- determinism and evaluation ------------------------------------------------------------ */

Test(model, same_seed_same_outputs_and_gradients) {
    static mm a, b;
    const char *sets[] = {"model.noisy_gating=true"};
    mm_setup(&a, TASKONOMY_SETS, 1, sets, 1, 3, 41);
    mm_setup(&b, TASKONOMY_SETS, 1, sets, 1, 3, 41);
    float *ga = analytic(&a), *gb = analytic(&b);
    const ms_param_table *pt = ms_model_params(a.m);
    tu_expect_equal("same seed: gradients", gb, ga, pt->total);
    for (int t = 0; t < a.T; t++)
        tu_expect_equal("same seed: predictions", prediction(&b, t), prediction(&a, t),
                        pred_size(&a, t));
    ms_losses la, lb;
    ms_model_losses(a.m, &la);
    ms_model_losses(b.m, &lb);
    cr_assert_eq(la.total, lb.total);
    cr_assert(la.mi < 0, "L_MI = -I(T;E) is negative once routing depends on the task: %g", la.mi);
    mm_free(&a), mm_free(&b);
}

Test(model, eval_is_deterministic_and_leaves_gradients) {
    static mm x;
    const char *sets[] = {"model.noisy_gating=true"};
    mm_setup(&x, TASKONOMY_SETS, 1, sets, 1, 2, 51);
    const ms_param_table *pt = ms_model_params(x.m);
    float *zero = tu_floats(pt->total), *g = tu_floats(pt->total);
    ms_model_zero_grads(x.m);
    ms_model_forward(x.m, &x.batch, 0, 1);
    float *p1 = prediction(&x, 2);
    ms_model_forward(x.m, &x.batch, 0, 2); /* another step: eval draws nothing */
    tu_expect_equal("eval forward twice", prediction(&x, 2), p1, pred_size(&x, 2));
    x.be->download(x.be, g, ms_model_grad_data(x.m), pt->total * sizeof(float));
    tu_expect_equal("gradients after evaluation forwards", g, zero, pt->total);
    /* training differs from evaluation (drop path, noise) */
    ms_model_forward(x.m, &x.batch, 1, 2);
    cr_assert(memcmp(prediction(&x, 2), p1, pred_size(&x, 2) * sizeof(float)) != 0);
    mm_free(&x);
}

/* ---- experts without tokens ----------------------------------------------------------------- */

static void set_tensor(mm *x, const char *name, float (*value)(size_t i, int D), int D) {
    const ms_tensor_info *ti = find(ms_model_params(x->m), name);
    float *h = tu_floats(ti->numel);
    for (size_t i = 0; i < ti->numel; i++) h[i] = value(i, D);
    x->be->upload(x->be, ms_model_param_data(x->m) + ti->offset, h, ti->numel * sizeof(float));
}
static float zero_v(size_t i, int D) { return (void)i, (void)D, 0.0f; }
static float one_v(size_t i, int D) { return (void)i, (void)D, 1.0f; }
static float row_v(size_t i, int D) { return (float)(0.5 - (double)(i / (size_t)D)); }

/* Every token routed to experts 0 and 1 of block 1's MoE MLP: experts 2 and 3 get none, their
 * gradients are exactly zero, nothing is NaN, and a few SGD steps lower the loss. */
Test(model, expert_without_tokens_still_trains) {
    static mm x;
    mm_setup(&x, TASKONOMY_SETS, 1, NULL, 0, 2, 61);
    int D = x.cfg.model.dim;
    set_tensor(&x, "blocks.1.norm2.weight", zero_v, D);
    set_tensor(&x, "blocks.1.norm2.bias", one_v, D);
    set_tensor(&x, "blocks.1.mlp.f_gate.0.0.weight", row_v, D);
    set_tensor(&x, "blocks.1.mlp.f_gate.1.0.weight", row_v, D);
    set_tensor(&x, "blocks.1.mlp.f_gate.2.0.weight", row_v, D);
    const ms_param_table *pt = ms_model_params(x.m);
    float *p = tu_floats(pt->total);
    double first = 0, last = 0;
    for (int it = 0; it < 4; it++) {
        float *g = analytic(&x);
        ms_losses L;
        ms_model_losses(x.m, &L);
        cr_assert(isfinite(L.total), "loss not finite at step %d", it);
        if (it == 0) first = L.total;
        last = L.total;
        int layer = -1;
        for (int l = 0; l < ms_model_moe_layers(x.m); l++)
            if (ms_model_moe_info(x.m, l).block == 1) layer = l;
        for (int t = 0; t < x.T; t++) {
            int64_t c[4];
            ms_model_expert_counts(x.m, layer, t, c);
            cr_assert(c[2] == 0 && c[3] == 0 && c[0] > 0, "task %d: experts 2, 3 must be empty", t);
        }
        for (size_t i = 0; i < pt->total; i++) cr_assert(isfinite(g[i]), "gradient %zu", i);
        const char *ex[] = {"blocks.1.mlp.experts.w", "blocks.1.mlp.experts.b",
                            "blocks.1.mlp.output_experts.w", "blocks.1.mlp.output_experts.b"};
        for (int k = 0; k < 4; k++) {
            const ms_tensor_info *ti = find(pt, ex[k]);
            size_t per = ti->numel / 4;
            for (size_t i = 2 * per; i < ti->numel; i++)
                cr_assert_eq(g[ti->offset + i], 0.0f, "%s: empty expert has a gradient", ex[k]);
        }
        /* plain SGD on the host copy, all trained tensors */
        x.be->download(x.be, p, ms_model_param_data(x.m), pt->total * sizeof(float));
        for (int j = 0; j < pt->n; j++) {
            const ms_tensor_info *ti = &pt->t[j];
            if (ti->buffer) continue;
            for (size_t i = 0; i < ti->numel; i++) p[ti->offset + i] -= 0.05f * g[ti->offset + i];
        }
        x.be->upload(x.be, ms_model_param_data(x.m), p, pt->total * sizeof(float));
    }
    cr_assert(last < first, "training must lower the loss: %g -> %g", first, last);
    mm_free(&x);
}

/* ---- counts, FLOPs, memory plan ------------------------------------------------------------- */

static ms_model *plan_model(ms_config *cfg, const char *path, int n, const char *const *sets) {
    ms_config_errors errs;
    ms_config_errors_init(&errs);
    int bad = ms_config_load(cfg, path, n, sets, &errs);
    if (bad) ms_config_errors_print(&errs, stderr);
    cr_assert_eq(bad, 0, "%s does not load", path);
    ms_config_errors_free(&errs);
    return ms_model_create(cfg, tu_cpu(), &(ms_model_opts){.batch = 8, .plan_only = 1});
}

/* The official code's parameter counts (.notes/official_model.md section 8; awl.params is not
 * counted there): Mod-Squad small 55.44M and base 206.96M as coded, and the printed comments
 * 34.17M (small with expert hidden 96) and 195.80M (base with 15 attention experts). */
Test(model, preset_parameter_counts_match_the_official_code) {
    static ms_config cfg;
    struct {
        const char *path, *set;
        double want;
    } c[] = {
        {"configs/presets/vit_s_modsquad.yaml", NULL, 55436245},
        {"configs/presets/vit_b_modsquad.yaml", NULL, 206956117},
        {"configs/presets/vit_s_modsquad.yaml", "model.expert_hidden=96", 34174933},
        {"configs/presets/vit_b_modsquad.yaml", "model.attn_experts=15", 195800149},
    };
    for (int k = 0; k < 4; k++) {
        const char *sets[1] = {c[k].set};
        ms_model *m = plan_model(&cfg, c[k].path, c[k].set ? 1 : 0, sets);
        ms_param_counts pc;
        ms_model_param_counts(m, &pc);
        cr_assert_eq(pc.total - pc.weighting, c[k].want, "%s %s: %.0f parameters, want %.0f",
                     c[k].path, c[k].set ? c[k].set : "", pc.total - pc.weighting, c[k].want);
        ms_model_destroy(m);
    }
    /* a dense ViT-S trunk (timm: 21.66M without its final norm and head) with the 13 heads */
    const char *dense[] = {"model.arch=hard_sharing", "model.head_dim=0"};
    ms_model *m = plan_model(&cfg, "configs/presets/vit_s_modsquad.yaml", 2, dense);
    ms_param_counts pc;
    ms_model_param_counts(m, &pc);
    cr_assert_eq(pc.backbone, 21664896);
    /* class_object: trunk + fc_norm + LayerNorm + Linear(384, 1000) = timm's ViT-S/16 22.05M
     * less its final norm, plus fc_norm and the head's own LayerNorm */
    cr_assert_eq(pc.active[0], 21664896 + 768 + 768 + 385000);
    cr_assert(fabs(ms_model_flops(m, 0) / 2e9 - 4.6) < 0.05, "ViT-S: %.3f GMACs",
              ms_model_flops(m, 0) / 2e9);
    ms_model_destroy(m);
}

/* The plan of a plan-only model is the arena a real one allocates; FLOPs = backbone + head. */
Test(model, memory_plan_and_flops) {
    static mm x;
    mm_setup(&x, TASKONOMY_SETS, 1, NULL, 0, 2, 71);
    ms_model *plan = ms_model_create(&x.cfg, x.be, &(ms_model_opts){.batch = 2, .plan_only = 1});
    ms_memory_plan a = ms_model_memory(x.m), b = ms_model_memory(plan);
    cr_assert_eq(a.activations, b.activations);
    cr_assert_eq(a.params, ms_model_params(x.m)->total * sizeof(float));
    cr_assert_eq(a.optimizer, 2 * a.params);
    cr_assert_eq(a.total, a.params + a.grads + a.optimizer + a.activations);
    ms_param_counts pc;
    ms_model_param_counts(x.m, &pc);
    cr_assert_eq(pc.total, pc.backbone + pc.heads + pc.weighting);
    for (int t = 0; t < x.T; t++) {
        cr_assert(pc.active[t] < pc.total);
        cr_assert(ms_model_flops(x.m, t) > ms_vit_flops(ms_model_backbone(x.m), t));
    }
    ms_model_destroy(plan);
    mm_free(&x);
}
