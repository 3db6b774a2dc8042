/* After the file and the --set overrides: fill in the automatic values (auto / 0 sentinels that
 * the config alone determines) and check what involves several keys. A check is skipped when a
 * key it reads was rejected, so one mistake gives one message. Messages point at the key's
 * FILE:LINE:COL (or its --set) and name every key involved. */
#include <math.h>
#include <string.h>

#include "config_internal.h"
#include "tasks.h"

typedef struct {
    ms_config *cfg;
    const char *const *sets;
    ms_config_errors *errs;
} checker;

static int key(const char *name) {
    int k = ms_config_key_index(name);
    MS_ASSERT(k >= 0);
    return k;
}

/* The key's value was accepted (checks about rejected values would only repeat the error). */
static bool ok(const checker *c, const char *name) { return !c->cfg->origin[key(name)].bad; }

static void mark_auto(checker *c, const char *name) { c->cfg->origin[key(name)].automatic = 1; }

/* An error about key a and the keys in `others` (space-separated, may be NULL): located at the
 * first of them that the user set (file position or --set), else at the file. */
static void fail(checker *c, const char *a, const char *others, const char *fmt, ...)
    MS_PRINTF(4, 5);
static void fail(checker *c, const char *a, const char *others, const char *fmt, ...) {
    int k = key(a);
    while (others && *others && c->cfg->origin[k].kind == MS_ORIGIN_DEFAULT) {
        char name[64];
        size_t n = strcspn(others, " ");
        snprintf(name, sizeof name, "%.*s", (int)n, others);
        if (c->cfg->origin[key(name)].kind != MS_ORIGIN_DEFAULT) k = key(name);
        others += n + (others[n] == ' ');
    }
    ms_where w = ms_config_key_where(c->cfg, k, c->sets);
    va_list ap;
    va_start(ap, fmt);
    ms_config_verror(c->errs, &w, fmt, ap);
    va_end(ap);
}

static bool known_task(ms_dataset d, const char *name) { return ms_task_find(d, name) != NULL; }

/* " (did you mean 'x'?)" for a near miss, or the tasks that start with name ("depth"). */
static void task_hint(ms_dataset d, const char *name, char *buf, size_t cap) {
    const char *names[MS_MAX_TASKS];
    int n = ms_task_count(d);
    for (int i = 0; i < n; i++)
        names[i] = ms_task_at(d, i)->name;
    const char *near = ms_closest_name(name, names, n);
    buf[0] = 0;
    if (near) {
        snprintf(buf, cap, " (did you mean '%s'?)", near);
        return;
    }
    int found = 0;
    for (int i = 0; i < n; i++) {
        if (strncmp(names[i], name, strlen(name)) != 0) continue;
        size_t len = strlen(buf);
        snprintf(buf + len, cap - len, "%s'%s'", found++ ? " or " : " (did you mean ", names[i]);
    }
    if (found) strncat(buf, "?)", cap - strlen(buf) - 1);
}

static void task_list_text(ms_dataset d, char *buf, size_t cap) {
    buf[0] = 0;
    for (int i = 0; i < ms_task_count(d); i++) {
        size_t len = strlen(buf);
        snprintf(buf + len, cap - len, "%s%s", i ? ", " : "", ms_task_at(d, i)->name);
    }
}

/* ---- run and data -------------------------------------------------------------------------- */

static void resolve_run(checker *c) {
    ms_config *cfg = c->cfg;
    if (cfg->run.name[0]) return;
    /* The config file's base name without extension: configs/demo.yaml -> demo. */
    const char *base = strrchr(cfg->source, '/');
    base = base ? base + 1 : cfg->source;
    size_t n = strcspn(base, ".");
    if (n == 0 || n >= sizeof cfg->run.name) base = "modsquad", n = strlen(base);
    snprintf(cfg->run.name, sizeof cfg->run.name, "%.*s", (int)n, base);
    mark_auto(c, "run.name");
}

static void resolve_tasks(checker *c) {
    ms_config *cfg = c->cfg;
    ms_data_config *data = &cfg->data;
    if (!ok(c, "data.tasks") || !ok(c, "data.dataset")) return;
    char hint[160], all[512];
    const char *dataset = ms_dataset_names[data->dataset];
    int bad = 0;
    for (int t = 0; t < data->tasks.n; t++) {
        if (known_task(data->dataset, data->tasks.name[t])) continue;
        task_hint(data->dataset, data->tasks.name[t], hint, sizeof hint);
        task_list_text(data->dataset, all, sizeof all);
        fail(c, "data.tasks", "data.dataset",
             "data.tasks: '%s' is not a task of data.dataset %s%s; its tasks are %s",
             data->tasks.name[t], dataset, hint, all);
        bad++;
    }
    if (bad) {
        cfg->origin[key("data.tasks")].bad = 1;
        return;
    }
    bool single = ok(c, "model.arch") && cfg->model.arch == MS_ARCH_SINGLE_TASK;
    if (single && data->tasks.n != 1) {
        fail(c, "data.tasks", "model.arch",
             "model.arch single_task trains exactly one task, but data.tasks lists %d; give one, "
             "e.g. data.tasks: [%s]",
             data->tasks.n,
             data->tasks.n ? data->tasks.name[0] : ms_task_at(data->dataset, 0)->name);
        cfg->origin[key("data.tasks")].bad = 1;
        return;
    }
    if (data->tasks.n == 0) {
        int n = ms_task_count(data->dataset);
        for (int i = 0; i < n; i++)
            strcpy(data->tasks.name[i], ms_task_at(data->dataset, i)->name);
        data->tasks.n = n;
        mark_auto(c, "data.tasks");
    }
}

static void check_data(checker *c) {
    ms_config *cfg = c->cfg;
    ms_data_config *data = &cfg->data;
    if (data->dataset == MS_DATASET_TASKONOMY && !data->split_file[0] && data->root[0] &&
        ok(c, "data.root")) {
        const char *sep = data->root[strlen(data->root) - 1] == '/' ? "" : "/";
        int n =
            snprintf(data->split_file, sizeof data->split_file, "%s%ssplits.csv", data->root, sep);
        if (n < (int)sizeof data->split_file)
            mark_auto(c, "data.split_file");
        else
            fail(c, "data.root", NULL,
                 "data.root is too long to hold splits.csv (at most %zu characters); set "
                 "data.split_file",
                 sizeof data->split_file - 12);
    }
    if (data->dataset == MS_DATASET_TASKONOMY && ok(c, "data.resize") && ok(c, "data.image_size") &&
        data->resize < data->image_size)
        fail(c, "data.resize", "data.image_size",
             "data.resize (%d) is smaller than data.image_size (%d); Taskonomy images are resized "
             "to data.resize, then cropped to data.image_size",
             data->resize, data->image_size);
    if (ok(c, "model.patch") && ok(c, "data.image_size") && data->image_size % cfg->model.patch)
        fail(c, "model.patch", "data.image_size",
             "model.patch (%d) must divide data.image_size (%d) into whole patches",
             cfg->model.patch, data->image_size);
}

/* ---- model --------------------------------------------------------------------------------- */

static bool is_moe_arch(ms_arch a) {
    return a == MS_ARCH_MODSQUAD || a == MS_ARCH_TASK_MOE || a == MS_ARCH_M3VIT;
}

static void resolve_blocks(checker *c, const char *name, ms_block_set *b, bool used) {
    ms_config *cfg = c->cfg;
    int depth = cfg->model.depth;
    if (!used && b->mode != MS_BLOCKS_NONE) {
        *b = (ms_block_set){.mode = MS_BLOCKS_NONE};
        mark_auto(c, name);
    }
    b->mask = 0;
    for (int i = 0; i < depth; i++) {
        bool on = b->mode == MS_BLOCKS_ALL || (b->mode == MS_BLOCKS_EVEN && i % 2 == 0) ||
                  (b->mode == MS_BLOCKS_ODD && i % 2 == 1);
        if (on) b->mask |= 1ull << i;
    }
    if (b->mode != MS_BLOCKS_LIST) return;
    for (int j = 0; j < b->n; j++) {
        if (b->index[j] < depth) {
            b->mask |= 1ull << b->index[j];
            continue;
        }
        fail(c, name, "model.depth",
             "%s: block %d does not exist; model.depth is %d (blocks 0 to %d)", name, b->index[j],
             depth, depth - 1);
        cfg->origin[key(name)].bad = 1;
    }
}

/* Top-k of the MoE layers of one kind ("attn" or "mlp") that some block has. A top-k above the
 * expert count is marked rejected, so widths derived from it are not checked as well. */
static void check_topk(checker *c, const char *kind, uint64_t mask, int topk, int experts) {
    char blocks[64], k_key[64], e_key[64];
    snprintf(blocks, sizeof blocks, "model.moe_%s_blocks", kind);
    snprintf(k_key, sizeof k_key, "model.%s_topk", kind);
    snprintf(e_key, sizeof e_key, "model.%s_experts", kind);
    if (!mask || !ok(c, blocks) || !ok(c, k_key) || !ok(c, e_key) || topk <= experts) return;
    fail(c, k_key, e_key,
         "%s (%d) must not exceed %s (%d): each token selects top-k distinct experts", k_key, topk,
         e_key, experts);
    c->cfg->origin[key(k_key)].bad = 1;
}

static void check_model_arch(checker *c) {
    ms_config *cfg = c->cfg;
    ms_model_config *m = &cfg->model;
    if (!ok(c, "model.arch") || !ok(c, "model.depth")) return;
    const char *arch = ms_arch_names[m->arch];
    /* Dense archs have no MoE layers; M3ViT has MoE MLPs only (METHOD.md section 7). */
    if (ok(c, "model.moe_attn_blocks"))
        resolve_blocks(c, "model.moe_attn_blocks", &m->moe_attn_blocks,
                       m->arch == MS_ARCH_MODSQUAD || m->arch == MS_ARCH_TASK_MOE);
    if (ok(c, "model.moe_mlp_blocks"))
        resolve_blocks(c, "model.moe_mlp_blocks", &m->moe_mlp_blocks, is_moe_arch(m->arch));
    bool blocks_ok = ok(c, "model.moe_attn_blocks") && ok(c, "model.moe_mlp_blocks");
    if (blocks_ok && m->arch == MS_ARCH_M3VIT && !m->moe_mlp_blocks.mask)
        fail(c, "model.moe_mlp_blocks", "model.arch",
             "model.arch m3vit needs MoE MLP blocks, but model.moe_mlp_blocks selects none");
    else if (blocks_ok && is_moe_arch(m->arch) && !m->moe_attn_blocks.mask &&
             !m->moe_mlp_blocks.mask)
        fail(c, "model.moe_attn_blocks", "model.arch",
             "model.arch %s needs at least one MoE block, but neither model.moe_attn_blocks nor "
             "model.moe_mlp_blocks selects any",
             arch);
    check_topk(c, "attn", m->moe_attn_blocks.mask, m->attn_topk, m->attn_experts);
    check_topk(c, "mlp", m->moe_mlp_blocks.mask, m->mlp_topk, m->mlp_experts);
    if (ok(c, "model.router") && m->router == MS_ROUTER_SHARED_TASK_CONDITIONED &&
        m->arch != MS_ARCH_TASK_MOE)
        fail(c, "model.router", "model.arch",
             "model.router shared_task_conditioned is the task_moe router; model.arch %s uses "
             "per_task",
             arch);
    if (m->arch == MS_ARCH_SEPARATE_BOTTOM && ok(c, "model.separate_layers") &&
        (m->separate_layers < 1 || m->separate_layers > m->depth))
        fail(c, "model.separate_layers", "model.arch",
             "model.separate_layers (%d) must be 1 to model.depth (%d) for model.arch "
             "separate_bottom",
             m->separate_layers, m->depth);
}

/* model.kept_experts (an extracted model): one list per MoE layer, in the model's layer order
 * (block by block, attention before MLP), each with at least top-k experts below the layer's
 * expert count, and one task. */
static void check_kept_experts(checker *c) {
    ms_config *cfg = c->cfg;
    ms_model_config *m = &cfg->model;
    const ms_expert_sets *ks = &m->kept_experts;
    if (!ks->layers || !ok(c, "model.kept_experts")) return;
    if (!ok(c, "model.arch") || !ok(c, "model.depth") || !ok(c, "model.moe_attn_blocks") ||
        !ok(c, "model.moe_mlp_blocks"))
        return;
    if (!is_moe_arch(m->arch)) {
        fail(c, "model.kept_experts", "model.arch",
             "model.kept_experts lists the experts an extracted MoE model keeps, but model.arch "
             "%s has no MoE layers; leave it empty ([])",
             ms_arch_names[m->arch]);
        return;
    }
    if (ok(c, "data.tasks") && cfg->data.tasks.n != 1)
        fail(c, "model.kept_experts", "data.tasks",
             "model.kept_experts describes a model extracted for one task, but data.tasks lists "
             "%d tasks",
             cfg->data.tasks.n);
    int E[MS_MAX_MOE_LAYERS], K[MS_MAX_MOE_LAYERS], block[MS_MAX_MOE_LAYERS], attn[MS_MAX_MOE_LAYERS];
    int layers = 0;
    for (int i = 0; i < m->depth; i++) {
        if (m->moe_attn_blocks.mask >> i & 1)
            E[layers] = m->attn_experts, K[layers] = m->attn_topk, block[layers] = i,
            attn[layers++] = 1;
        if (m->moe_mlp_blocks.mask >> i & 1)
            E[layers] = m->mlp_experts, K[layers] = m->mlp_topk, block[layers] = i,
            attn[layers++] = 0;
    }
    if (ks->layers != layers) {
        fail(c, "model.kept_experts", "model.moe_attn_blocks model.moe_mlp_blocks model.depth",
             "model.kept_experts has %d lists, but the model has %d MoE layers (one list per "
             "layer, block by block, attention before MLP)",
             ks->layers, layers);
        return;
    }
    for (int l = 0; l < layers; l++) {
        int n;
        const int16_t *kept = ms_expert_sets_layer(ks, l, &n);
        const char *kind = attn[l] ? "attention" : "MLP";
        if (kept[n - 1] >= E[l])
            fail(c, "model.kept_experts", attn[l] ? "model.attn_experts" : "model.mlp_experts",
                 "model.kept_experts[%d] (block %d %s) keeps expert %d, but the layer has %d "
                 "experts (0 to %d)",
                 l, block[l], kind, kept[n - 1], E[l], E[l] - 1);
        else if (n < K[l])
            fail(c, "model.kept_experts", attn[l] ? "model.attn_topk" : "model.mlp_topk",
                 "model.kept_experts[%d] (block %d %s) keeps %d experts, fewer than the %d each "
                 "token selects",
                 l, block[l], kind, n, K[l]);
    }
}

static void resolve_widths(checker *c) {
    ms_config *cfg = c->cfg;
    ms_model_config *m = &cfg->model;
    if (!ok(c, "model.dim") || !ok(c, "model.heads") || !ok(c, "model.arch")) return;
    if (m->head_dim == 0 && ok(c, "model.head_dim")) {
        /* The official Mod-Squad code uses heads x (2 dim / heads) for its attention. */
        int factor = m->arch == MS_ARCH_MODSQUAD || m->arch == MS_ARCH_TASK_MOE ? 2 : 1;
        if (factor * m->dim % m->heads)
            fail(c, "model.head_dim", "model.heads model.dim model.arch",
                 "model.head_dim 0 (auto) is %s/model.heads, but %d is not divisible by "
                 "model.heads (%d); set model.head_dim",
                 factor == 2 ? "2*model.dim" : "model.dim", factor * m->dim, m->heads);
        else {
            m->head_dim = factor * m->dim / m->heads;
            mark_auto(c, "model.head_dim");
        }
    }
    if (m->attn_expert_dim == 0 && m->head_dim > 0 && ok(c, "model.attn_expert_dim")) {
        m->attn_expert_dim = m->head_dim;
        mark_auto(c, "model.attn_expert_dim");
    }
    if (!ok(c, "model.mlp_ratio")) return;
    double hidden = m->mlp_ratio * m->dim;
    if (fabs(hidden - nearbyint(hidden)) > 1e-9 * hidden) {
        fail(c, "model.mlp_ratio", "model.dim",
             "model.mlp_ratio (%g) * model.dim (%d) = %g must be a whole number of hidden units",
             m->mlp_ratio, m->dim, hidden);
        return;
    }
    int h = (int)nearbyint(hidden);
    bool moe_mlp = ok(c, "model.moe_mlp_blocks") && m->moe_mlp_blocks.mask;
    if (m->expert_hidden == 0 && ok(c, "model.expert_hidden") && ok(c, "model.mlp_topk")) {
        /* Official: each of the k selected experts gets 1/k of the dense MLP's width. */
        if (h % m->mlp_topk == 0) {
            m->expert_hidden = h / m->mlp_topk;
            mark_auto(c, "model.expert_hidden");
        } else if (moe_mlp)
            fail(c, "model.expert_hidden", "model.mlp_topk model.mlp_ratio model.dim",
                 "model.expert_hidden 0 (auto) is mlp_ratio*dim/mlp_topk, but %d is not divisible "
                 "by model.mlp_topk (%d); set model.expert_hidden",
                 h, m->mlp_topk);
    }
}

static void resolve_heads_and_weights(checker *c) {
    ms_config *cfg = c->cfg;
    ms_model_config *m = &cfg->model;
    if (!ok(c, "data.dataset")) return;
    bool pascal = cfg->data.dataset == MS_DATASET_PASCAL_CONTEXT;
    if (m->head == MS_HEAD_AUTO && ok(c, "model.head")) {
        m->head = pascal ? MS_HEAD_CONV : MS_HEAD_LINEAR;
        mark_auto(c, "model.head");
    }
    if (m->task_weighting == MS_WEIGHTING_AUTO && ok(c, "model.task_weighting")) {
        m->task_weighting = pascal ? MS_WEIGHTING_FIXED : MS_WEIGHTING_UNCERTAINTY;
        mark_auto(c, "model.task_weighting");
    }
    if (!ok(c, "model.task_weights") || !ok(c, "data.tasks")) return;
    ms_weight_map *given = &m->task_weights;
    char hint[160];
    bool bad = false;
    for (int i = 0; i < given->n; i++) {
        if (known_task(cfg->data.dataset, given->name[i])) continue;
        task_hint(cfg->data.dataset, given->name[i], hint, sizeof hint);
        fail(c, "model.task_weights", "data.dataset",
             "model.task_weights: '%s' is not a task of data.dataset %s%s", given->name[i],
             ms_dataset_names[cfg->data.dataset], hint);
        bad = true;
    }
    if (bad) return;
    /* One weight per task in data.tasks order; weights of known tasks not trained are dropped. */
    ms_weight_map full = {.n = cfg->data.tasks.n};
    bool changed = given->n != full.n;
    for (int t = 0; t < full.n; t++) {
        const char *name = cfg->data.tasks.name[t];
        strcpy(full.name[t], name);
        full.value[t] = ms_task_find(cfg->data.dataset, name)->fixed_weight;
        bool found = false;
        for (int i = 0; i < given->n; i++)
            if (!strcmp(given->name[i], name)) full.value[t] = given->value[i], found = true;
        changed |= !found || t >= given->n || strcmp(given->name[t], name) != 0;
    }
    if (changed) mark_auto(c, "model.task_weights");
    *given = full;
}

/* ---- train --------------------------------------------------------------------------------- */

static void check_train(checker *c) {
    ms_train_config *t = &c->cfg->train;
    if (t->lr == 0 && ok(c, "train.lr") && ok(c, "train.blr") && ok(c, "train.batch_size") &&
        ok(c, "train.accum_steps")) {
        /* The official recipe: lr = blr * effective batch / 256. */
        t->lr = t->blr * t->batch_size * t->accum_steps / 256.0;
        mark_auto(c, "train.lr");
    }
    if (t->lr > 0 && ok(c, "train.lr") && ok(c, "train.min_lr") && t->min_lr > t->lr)
        fail(c, "train.min_lr", "train.lr train.blr train.batch_size",
             "train.min_lr (%g) is above the peak learning rate train.lr (%g)", t->min_lr, t->lr);
    if (t->steps > 0 && ok(c, "train.steps") && ok(c, "train.warmup_steps") &&
        t->warmup_steps > t->steps)
        fail(c, "train.warmup_steps", "train.steps",
             "train.warmup_steps (%d) is more than train.steps (%d)", t->warmup_steps, t->steps);
    if (t->steps == 0 && t->warmup_steps == 0 && ok(c, "train.epochs") &&
        ok(c, "train.warmup_epochs") && t->warmup_epochs > t->epochs)
        fail(c, "train.warmup_epochs", "train.epochs",
             "train.warmup_epochs (%g) is more than train.epochs (%d)", t->warmup_epochs,
             t->epochs);
}

void ms_config_resolve_and_check(ms_config *cfg, const char *const *sets, ms_config_errors *errs) {
    checker c = {cfg, sets, errs};
    resolve_run(&c);
    resolve_tasks(&c);
    check_data(&c);
    check_model_arch(&c);
    check_kept_experts(&c);
    resolve_widths(&c);
    resolve_heads_and_weights(&c);
    check_train(&c);
}

int ms_config_check_world(const ms_config *cfg, int world_size, ms_config_errors *errs) {
    MS_ASSERT(world_size >= 1);
    int before = errs->n;
    checker c = {(ms_config *)cfg, NULL, errs};
    if (cfg->train.batch_size % world_size)
        fail(&c, "train.batch_size", NULL,
             "train.batch_size (%d) is the global batch and must be divisible by the %d ranks",
             cfg->train.batch_size, world_size);
    if (cfg->eval.batch_size % world_size)
        fail(&c, "eval.batch_size", NULL,
             "eval.batch_size (%d) is the global batch and must be divisible by the %d ranks",
             cfg->eval.batch_size, world_size);
    return errs->n - before;
}
