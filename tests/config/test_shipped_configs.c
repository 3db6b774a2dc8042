/* The configs shipped under configs/ (configs/README.md): every YAML file there, found by walking
 * the directory so that a config added later is checked without touching this test, loads
 * without errors, survives the `config show` round trip, and builds a model plan (parameter
 * table, counts, FLOPs, memory; nothing allocated) with sane parameter counts. The paper
 * configs are pinned to the figures docs/model.md prints, and the baselines of each dataset to
 * the data and schedule of that dataset's Mod-Squad config, so the comparison stays fair.
 * Tests run from the repository root, like tests/config/test_config.c. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../../model/config.h"
#include "../../model/model.h"
#include "../testutil.h"

/* ---- finding the configs ------------------------------------------------------------------- */

#define MAX_CONFIGS 256

typedef struct {
    int n;
    char path[MAX_CONFIGS][MS_PATH_MAX]; /* [n] sorted */
} config_list;

static bool is_yaml(const char *name) {
    size_t n = strlen(name);
    return (n > 5 && !strcmp(name + n - 5, ".yaml")) || (n > 4 && !strcmp(name + n - 4, ".yml"));
}

/* Every *.yaml / *.yml under dir, subdirectories included (configs/presets/...). */
static void walk(const char *dir, config_list *out, int depth) {
    cr_assert(depth < 8, "%s: directories nested too deep", dir);
    DIR *d = opendir(dir);
    cr_assert(d, "cannot open %s (run the tests from the repository root)", dir);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[MS_PATH_MAX];
        int len = snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        cr_assert(len > 0 && len < (int)sizeof path, "path too long under %s", dir);
        struct stat st;
        cr_assert(stat(path, &st) == 0, "cannot stat %s", path);
        if (S_ISDIR(st.st_mode)) {
            walk(path, out, depth + 1);
        } else if (S_ISREG(st.st_mode) && is_yaml(e->d_name)) {
            cr_assert(out->n < MAX_CONFIGS, "more than %d configs under configs/", MAX_CONFIGS);
            strcpy(out->path[out->n++], path);
        }
    }
    closedir(d);
}

static int cmp_path(const void *a, const void *b) { return strcmp(a, b); }

static const config_list *shipped(void) {
    static config_list L; /* one per test process */
    if (L.n) return &L;
    walk("configs", &L, 0);
    qsort(L.path, (size_t)L.n, sizeof L.path[0], cmp_path);
    return &L;
}

/* Loads path; on errors prints them and returns false (the caller names the file). */
static bool try_load(const char *path, ms_config *cfg) {
    ms_config_errors errs;
    ms_config_errors_init(&errs);
    int n = ms_config_load(cfg, path, 0, NULL, &errs);
    if (n) ms_config_errors_print(&errs, stderr);
    ms_config_errors_free(&errs);
    return n == 0;
}

static ms_config *load_ok(const char *path) {
    ms_config *cfg = calloc(1, sizeof *cfg);
    cr_assert(cfg);
    cr_assert(try_load(path, cfg), "%s does not load (errors above)", path);
    return cfg;
}

static ms_param_counts plan_counts(const ms_config *cfg) {
    ms_model *m = ms_model_create(cfg, tu_cpu(), &(ms_model_opts){.batch = 1, .plan_only = 1});
    cr_assert(m, "%s: no model plan", cfg->source);
    ms_param_counts c;
    ms_model_param_counts(m, &c);
    ms_model_destroy(m);
    return c;
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* ---- every file ---------------------------------------------------------------------------- */

/* The files the docs and configs/README.md promise (presets: docs/parallel.md, performance.md,
 * model.md and config.md use them). */
static const char *const promised[] = {
    "configs/demo.yaml",
    "configs/presets/vit_s_modsquad.yaml",
    "configs/presets/vit_b_modsquad.yaml",
    "configs/pascal_vit_s.yaml",
    "configs/pascal_hard_sharing_vit_s.yaml",
    "configs/pascal_separate_bottom_vit_s.yaml",
    "configs/pascal_task_moe_vit_s.yaml",
    "configs/pascal_m3vit_vit_s.yaml",
    "configs/pascal_single_task_vit_s.yaml",
    "configs/taskonomy_vit_s.yaml",
    "configs/taskonomy_vit_b.yaml",
    "configs/taskonomy_hard_sharing_vit_s.yaml",
    "configs/taskonomy_separate_bottom_vit_s.yaml",
    "configs/taskonomy_task_moe_vit_s.yaml",
    "configs/taskonomy_m3vit_vit_s.yaml",
    "configs/taskonomy_single_task_vit_s.yaml",
};
#define N_PROMISED (int)(sizeof promised / sizeof promised[0])

Test(shipped_configs, the_promised_files_are_there) {
    const config_list *L = shipped();
    for (int i = 0; i < N_PROMISED; i++) {
        bool found = bsearch(promised[i], L->path, (size_t)L->n, sizeof L->path[0], cmp_path);
        cr_assert(found, "%s is missing (configs/README.md lists it)", promised[i]);
    }
}

Test(shipped_configs, every_config_loads_without_errors) {
    const config_list *L = shipped();
    cr_assert_geq(L->n, N_PROMISED);
    int bad = 0;
    ms_config *cfg = calloc(1, sizeof *cfg);
    for (int i = 0; i < L->n; i++) {
        if (try_load(L->path[i], cfg)) continue;
        cr_expect_fail("%s has configuration errors (listed above)", L->path[i]);
        bad++;
    }
    cr_assert_eq(bad, 0, "%d of %d shipped configs do not load", bad, L->n);
    free(cfg);
}

/* `modsquad config show` prints ms_config_to_yaml; what it prints must load back to the same
 * configuration and fingerprint, and printing that again gives the same text. */
Test(shipped_configs, config_show_round_trip) {
    const config_list *L = shipped();
    ms_config *back = calloc(1, sizeof *back), *again = calloc(1, sizeof *again);
    for (int i = 0; i < L->n; i++) {
        ms_config *cfg = load_ok(L->path[i]);
        char *text = ms_config_to_yaml(cfg);
        ms_config_errors errs;
        ms_config_errors_init(&errs);
        int n = ms_config_load_text(back, cfg->source, text, strlen(text), 0, NULL, &errs);
        if (n) ms_config_errors_print(&errs, stderr);
        ms_config_errors_free(&errs);
        cr_assert_eq(n, 0, "%s: the text of `config show` does not load back:\n%s", L->path[i],
                     text);
        const char *diff = NULL;
        cr_assert(ms_config_equal(cfg, back, &diff), "%s: the round trip changed %s",
                  L->path[i], diff ? diff : "?");
        char fa[MS_FINGERPRINT_LEN + 1], fb[MS_FINGERPRINT_LEN + 1];
        ms_config_fingerprint(cfg, fa);
        ms_config_fingerprint(back, fb);
        cr_assert_str_eq(fa, fb, "%s: the round trip changed the fingerprint", L->path[i]);

        char *text2 = ms_config_to_yaml(back);
        ms_config_errors_init(&errs);
        cr_assert_eq(ms_config_load_text(again, cfg->source, text2, strlen(text2), 0, NULL, &errs),
                     0);
        ms_config_errors_free(&errs);
        char *text3 = ms_config_to_yaml(again);
        cr_assert_str_eq(text2, text3, "%s: `config show` of its own output is not stable",
                         L->path[i]);
        free(text);
        free(text2);
        free(text3);
        free(cfg);
    }
    free(back);
    free(again);
}

/* A plan-only build of each model: the parameter table and counts, no device memory. The
 * counts must add up, and each task's active set must be a non-empty part of the whole. */
Test(shipped_configs, every_model_builds_as_a_plan) {
    const config_list *L = shipped();
    for (int i = 0; i < L->n; i++) {
        ms_config *cfg = load_ok(L->path[i]);
        ms_model *m =
            ms_model_create(cfg, tu_cpu(), &(ms_model_opts){.batch = 1, .plan_only = 1});
        cr_assert(m, "%s: ms_model_create failed", L->path[i]);
        ms_param_counts c;
        ms_model_param_counts(m, &c);
        const ms_param_table *pt = ms_model_params(m);
        ms_memory_plan mem = ms_model_memory(m);
        const char *p = L->path[i];
        cr_assert_gt(c.backbone, 0, "%s: empty backbone", p);
        cr_assert_gt(c.heads, 0, "%s: no heads", p);
        cr_assert_eq(c.total, c.backbone + c.heads + c.weighting,
                     "%s: total %.0f != backbone %.0f + heads %.0f + weighting %.0f", p, c.total,
                     c.backbone, c.heads, c.weighting);
        /* The buffer holds every parameter (plus alignment padding; BatchNorm statistics). */
        cr_assert_geq((double)pt->total, c.total, "%s: parameter buffer smaller than the count",
                      p);
        cr_assert_geq(mem.params, (size_t)c.total * sizeof(float), "%s", p);
        bool uncertainty = cfg->model.task_weighting == MS_WEIGHTING_UNCERTAINTY;
        cr_assert_eq(c.weighting, uncertainty ? cfg->data.tasks.n : 0,
                     "%s: one uncertainty weight per task under uncertainty weighting", p);
        /* Sane sizes for a ViT that trains on one GPU: 0.1 M to 1 G parameters. */
        cr_assert(c.total > 1e5 && c.total < 1e9, "%s: %.0f parameters", p, c.total);
        for (int t = 0; t < cfg->data.tasks.n; t++) {
            cr_assert(c.active[t] > 0 && c.active[t] <= c.total,
                      "%s: task %s uses %.0f of %.0f parameters", p, cfg->data.tasks.name[t],
                      c.active[t], c.total);
            cr_assert_gt(ms_model_flops(m, t), 0, "%s: no FLOPs for task %d", p, t);
        }
        ms_model_destroy(m);
        free(cfg);
    }
}

/* Header convention of configs/README.md: what it reproduces, how to point it at the data and
 * a typical override. demo.yaml is exempt: it reads the synthetic scenes `make demo` writes. */
Test(shipped_configs, every_config_has_a_header) {
    const config_list *L = shipped();
    for (int i = 0; i < L->n; i++) {
        if (!strcmp(L->path[i], "configs/demo.yaml")) continue;
        FILE *f = fopen(L->path[i], "r");
        cr_assert(f, "cannot read %s", L->path[i]);
        static char head[1 << 14];
        size_t n = 0;
        /* The leading comment block, up to the first line that is not a comment. */
        while (n + 512 < sizeof head && fgets(head + n, 512, f) && head[n] == '#')
            n += strlen(head + n);
        head[n] = 0;
        fclose(f);
        cr_assert_gt(n, 0, "%s: starts without a header comment", L->path[i]);
        cr_assert(strstr(head, "data.root"), "%s: the header does not say how to set data.root",
                  L->path[i]);
        cr_assert(strstr(head, "--set"), "%s: the header names no --set override", L->path[i]);
    }
}

/* ---- the paper models and the baselines ---------------------------------------------------- */

/* timm's ViT-S/16 trunk without its head and final norm, for N tokens: patch embedding, CLS,
 * position embedding and 12 blocks (2 LayerNorms, qkv, proj, fc1, fc2). */
static double vit_s_trunk(int tokens) {
    const double D = 384, H = 4 * D;
    double block = 4 * D + (D * 3 * D + 3 * D) + (D * D + D) + (D * H + H) + (H * D + D);
    return (D * 3 * 16 * 16 + D) + D + tokens * D + 12 * block;
}

Test(shipped_configs, hard_sharing_trunk_is_timm_vit_s) {
    /* docs/model.md: 21,664,896 at 224 (197 tokens); PASCAL's 512 has 1025 tokens. */
    cr_assert_eq(vit_s_trunk(197), 21664896.0);
    const struct {
        const char *path;
        int tokens;
    } dense[] = {{"configs/taskonomy_hard_sharing_vit_s.yaml", 197},
                 {"configs/taskonomy_single_task_vit_s.yaml", 197},
                 {"configs/pascal_hard_sharing_vit_s.yaml", 1025},
                 {"configs/pascal_single_task_vit_s.yaml", 1025}};
    for (int i = 0; i < 4; i++) {
        ms_config *cfg = load_ok(dense[i].path);
        ms_param_counts c = plan_counts(cfg);
        cr_assert_eq(c.backbone, vit_s_trunk(dense[i].tokens), "%s: backbone %.0f, want %.0f",
                     dense[i].path, c.backbone, vit_s_trunk(dense[i].tokens));
        free(cfg);
    }
    /* docs/model.md's figure for the hard-sharing ViT-S on the 13 Taskonomy tasks. */
    ms_config *cfg = load_ok("configs/taskonomy_hard_sharing_vit_s.yaml");
    cr_assert_eq(plan_counts(cfg).total, 23770466.0);
    free(cfg);
}

Test(shipped_configs, mod_squad_taskonomy_is_the_preset_model) {
    const struct {
        const char *file, *preset;
        double total; /* docs/model.md */
    } pairs[] = {{"configs/taskonomy_vit_s.yaml", "configs/presets/vit_s_modsquad.yaml", 55436258},
                 {"configs/taskonomy_vit_b.yaml", "configs/presets/vit_b_modsquad.yaml",
                  206956130}};
    for (int i = 0; i < 2; i++) {
        ms_config *a = load_ok(pairs[i].file), *b = load_ok(pairs[i].preset);
        char fa[MS_FINGERPRINT_LEN + 1], fb[MS_FINGERPRINT_LEN + 1];
        ms_config_fingerprint(a, fa);
        ms_config_fingerprint(b, fb);
        cr_assert_str_eq(fa, fb, "%s and %s should describe the same model", pairs[i].file,
                         pairs[i].preset);
        cr_assert_eq(plan_counts(a).total, pairs[i].total, "%s: %.0f parameters", pairs[i].file,
                     plan_counts(a).total);
        free(a);
        free(b);
    }
}

/* What each arch adds to the dense trunk, in parameters: Mod-Squad and task-MoE share one
 * layout (task-MoE only drops the MI loss), M3ViT has MoE MLPs only, separate bottom adds the
 * per-task blocks; all are above hard sharing, which equals a single-task model's trunk. */
Test(shipped_configs, parameter_counts_rank_as_the_archs_do) {
    const char *const sets[] = {"pascal", "taskonomy"};
    for (int s = 0; s < 2; s++) {
        char path[6][128];
        const char *const archs[] = {"vit_s", "task_moe_vit_s", "m3vit_vit_s",
                                     "separate_bottom_vit_s", "hard_sharing_vit_s",
                                     "single_task_vit_s"};
        ms_param_counts c[6];
        for (int a = 0; a < 6; a++) {
            snprintf(path[a], sizeof path[a], "configs/%s_%s.yaml", sets[s], archs[a]);
            ms_config *cfg = load_ok(path[a]);
            c[a] = plan_counts(cfg);
            free(cfg);
        }
        cr_assert_eq(c[0].total, c[1].total, "%s: task-MoE must have Mod-Squad's parameters",
                     path[1]);
        for (int a = 0; a < 4; a++)
            cr_assert_gt(c[a].total, c[4].total, "%s (%.0f) must be larger than %s (%.0f)",
                         path[a], c[a].total, path[4], c[4].total);
        cr_assert_gt(c[0].total, c[2].total, "Mod-Squad adds MoE attention to M3ViT's layout");
        cr_assert_eq(c[4].backbone, c[5].backbone, "%s: single task has the hard-sharing trunk",
                     path[5]);
        /* One task's active set of Mod-Squad is near a dense ViT-S's, not the whole model. */
        cr_assert_lt(c[0].active[0], 0.6 * c[0].total, "%s: active %.0f of %.0f", path[0],
                     c[0].active[0], c[0].total);
    }
}

/* The baselines of a dataset train on the same data with the same schedule and trunk shape
 * as that dataset's Mod-Squad config ({dataset}_vit_s.yaml); only the arch keys differ. */
Test(shipped_configs, baselines_share_data_and_schedule) {
    const config_list *L = shipped();
    const char *const sets[] = {"pascal_", "taskonomy_"};
    int compared = 0;
    for (int s = 0; s < 2; s++) {
        char ref_path[64];
        snprintf(ref_path, sizeof ref_path, "configs/%svit_s.yaml", sets[s]);
        ms_config *ref = load_ok(ref_path);
        for (int i = 0; i < L->n; i++) {
            const char *name = base_name(L->path[i]);
            if (strncmp(name, sets[s], strlen(sets[s])) || !strcmp(L->path[i], ref_path))
                continue;
            ms_config *c = load_ok(L->path[i]);
            const char *p = L->path[i];
            const ms_data_config *d = &c->data, *rd = &ref->data;
            cr_assert_eq(d->dataset, rd->dataset, "%s: dataset", p);
            cr_assert_str_eq(d->root, rd->root, "%s: data.root", p);
            cr_assert_str_eq(d->split_file, rd->split_file, "%s: data.split_file", p);
            cr_assert_str_eq(d->train_split, rd->train_split, "%s: data.train_split", p);
            cr_assert_str_eq(d->val_split, rd->val_split, "%s: data.val_split", p);
            cr_assert_eq(d->image_size, rd->image_size, "%s: data.image_size", p);
            cr_assert_eq(d->resize, rd->resize, "%s: data.resize", p);
            if (c->model.arch == MS_ARCH_SINGLE_TASK) {
                cr_assert_eq(d->tasks.n, 1, "%s: one task", p);
                cr_assert_geq(ms_config_task_index(ref, d->tasks.name[0]), 0,
                              "%s: %s is not a task of %s", p, d->tasks.name[0], ref_path);
            } else {
                cr_assert_eq(d->tasks.n, rd->tasks.n, "%s: data.tasks", p);
                for (int t = 0; t < d->tasks.n; t++)
                    cr_assert_str_eq(d->tasks.name[t], rd->tasks.name[t], "%s: data.tasks", p);
                cr_assert_eq(c->model.task_weighting, ref->model.task_weighting,
                             "%s: model.task_weighting", p);
                for (int t = 0; t < d->tasks.n; t++)
                    cr_assert_eq(c->model.task_weights.value[t], ref->model.task_weights.value[t],
                                 "%s: model.task_weights.%s", p, d->tasks.name[t]);
            }
            const ms_model_config *m = &c->model, *rm = &ref->model;
            cr_assert_eq(m->patch, rm->patch, "%s: model.patch", p);
            cr_assert_eq(m->depth, rm->depth, "%s: model.depth", p);
            cr_assert_eq(m->mlp_ratio, rm->mlp_ratio, "%s: model.mlp_ratio", p);
            cr_assert_eq(m->drop_path, rm->drop_path, "%s: model.drop_path", p);
            cr_assert_eq(m->head, rm->head, "%s: model.head", p);
            cr_assert_eq(m->head_channels, rm->head_channels, "%s: model.head_channels", p);
            cr_assert_eq(m->edge_pos_weight, rm->edge_pos_weight, "%s: model.edge_pos_weight", p);
            if (!strstr(name, "vit_b")) {
                cr_assert_eq(m->dim, rm->dim, "%s: model.dim", p);
                cr_assert_eq(m->heads, rm->heads, "%s: model.heads", p);
            }
            const ms_train_config *tr = &c->train, *rt = &ref->train;
            cr_assert_eq(tr->epochs, rt->epochs, "%s: train.epochs", p);
            cr_assert_eq(tr->steps, rt->steps, "%s: train.steps", p);
            cr_assert_eq(tr->warmup_epochs, rt->warmup_epochs, "%s: train.warmup_epochs", p);
            cr_assert_eq(tr->warmup_steps, rt->warmup_steps, "%s: train.warmup_steps", p);
            cr_assert_eq(tr->batch_size, rt->batch_size, "%s: train.batch_size", p);
            cr_assert_eq(tr->accum_steps, rt->accum_steps, "%s: train.accum_steps", p);
            cr_assert_eq(tr->lr, rt->lr, "%s: train.lr", p);
            cr_assert_eq(tr->min_lr, rt->min_lr, "%s: train.min_lr", p);
            cr_assert_eq(tr->weight_decay, rt->weight_decay, "%s: train.weight_decay", p);
            cr_assert_eq(tr->beta1, rt->beta1, "%s: train.beta1", p);
            cr_assert_eq(tr->beta2, rt->beta2, "%s: train.beta2", p);
            cr_assert_eq(tr->eps, rt->eps, "%s: train.eps", p);
            cr_assert_eq(tr->precision, rt->precision, "%s: train.precision", p);
            /* METHOD.md section 6: clipping 3.0 for the dense baselines only. */
            bool dense = m->arch == MS_ARCH_HARD_SHARING || m->arch == MS_ARCH_SEPARATE_BOTTOM ||
                         m->arch == MS_ARCH_SINGLE_TASK;
            cr_assert_eq(tr->clip_grad, dense ? 3.0 : 0.0, "%s: train.clip_grad %g", p,
                         tr->clip_grad);
            compared++;
            free(c);
        }
        free(ref);
    }
    cr_assert_geq(compared, 11, "expected the baselines of both datasets, compared %d", compared);
}

/* PASCAL-Context: the M3ViT recipe's input size, tasks, head and loss weights. */
Test(shipped_configs, pascal_follows_the_m3vit_setup) {
    ms_config *c = load_ok("configs/pascal_vit_s.yaml");
    cr_assert_eq(c->data.dataset, MS_DATASET_PASCAL_CONTEXT);
    cr_assert_str_eq(c->data.root, "data/PASCAL_MT");
    cr_assert_eq(c->data.image_size, 512);
    cr_assert_eq(c->model.head, MS_HEAD_CONV);
    cr_assert_eq(c->model.head_channels, 256);
    cr_assert_eq(c->model.task_weighting, MS_WEIGHTING_FIXED);
    const struct {
        const char *task;
        double weight;
    } w[] = {{"semseg", 1}, {"human_parts", 2}, {"sal", 5}, {"normals", 10}, {"edge", 50}};
    cr_assert_eq(c->data.tasks.n, 5);
    for (int i = 0; i < 5; i++) {
        int t = ms_config_task_index(c, w[i].task);
        cr_assert_geq(t, 0, "pascal_vit_s trains %s", w[i].task);
        cr_assert_eq(c->model.task_weights.value[t], w[i].weight, "weight of %s", w[i].task);
    }
    cr_assert_eq(c->model.edge_pos_weight, 0.95);
    cr_assert_eq(c->model.arch, MS_ARCH_MODSQUAD);
    cr_assert_eq(c->model.w_mi, 0.005);
    cr_assert_eq(c->train.eps, 1e-4);
    cr_assert_eq(c->train.weight_decay, 0.05);
    cr_assert_eq(c->train.blr, 4e-4);
    cr_assert_eq(c->train.clip_grad, 0);
    free(c);

    /* M3ViT's MoE: 16 experts, top 4, hidden 1 x D on the odd blocks, no MoE attention. */
    c = load_ok("configs/pascal_m3vit_vit_s.yaml");
    cr_assert_eq(c->model.arch, MS_ARCH_M3VIT);
    cr_assert_eq(c->model.mlp_experts, 16);
    cr_assert_eq(c->model.mlp_topk, 4);
    cr_assert_eq(c->model.expert_hidden, c->model.dim);
    cr_assert_eq(c->model.moe_mlp_blocks.mask, 0xaaaull);
    cr_assert_eq(c->model.moe_attn_blocks.mask, 0);
    free(c);
}

/* The single-task files train any one task of their dataset with --set data.tasks=[...], as
 * their headers say, and then weigh it 1. */
Test(shipped_configs, single_task_takes_each_task_by_override) {
    const char *const files[] = {"configs/pascal_single_task_vit_s.yaml",
                                 "configs/taskonomy_single_task_vit_s.yaml"};
    for (int f = 0; f < 2; f++) {
        ms_config *ref = load_ok(files[f]);
        cr_assert_eq(ref->model.arch, MS_ARCH_SINGLE_TASK);
        ms_dataset ds = ref->data.dataset;
        free(ref);
        const char *multi = ds == MS_DATASET_PASCAL_CONTEXT ? "configs/pascal_vit_s.yaml"
                                                            : "configs/taskonomy_vit_s.yaml";
        ms_config *all = load_ok(multi);
        ms_config *c = calloc(1, sizeof *c);
        for (int t = 0; t < all->data.tasks.n; t++) {
            char set[96];
            snprintf(set, sizeof set, "data.tasks=[%s]", all->data.tasks.name[t]);
            const char *sets[] = {set};
            ms_config_errors errs;
            ms_config_errors_init(&errs);
            int n = ms_config_load(c, files[f], 1, sets, &errs);
            if (n) ms_config_errors_print(&errs, stderr);
            ms_config_errors_free(&errs);
            cr_assert_eq(n, 0, "%s --set %s does not load", files[f], set);
            cr_assert_eq(c->data.tasks.n, 1);
            cr_assert_eq(c->model.task_weighting, MS_WEIGHTING_FIXED, "%s", files[f]);
            cr_assert_eq(c->model.task_weights.value[0], 1.0, "%s --set %s: weight %g", files[f],
                         set, c->model.task_weights.value[0]);
            ms_param_counts pc = plan_counts(c);
            cr_assert_eq(pc.active[0], pc.total, "%s --set %s: a dense single-task model uses "
                         "all its parameters", files[f], set);
        }
        free(c);
        free(all);
    }
}
