/* The config system: defaults and automatic values, one error test per type and per check with
 * the exact FILE:LINE:COL message, did-you-mean, --set, the `config show` round trip, the
 * fingerprint, the shipped configs, docs/config.md against the key table, and the CLI. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../model/config.h"

/* ---- helpers ------------------------------------------------------------------------------- */

/* A temporary YAML file with `text`; path receives its name. Removed at process exit by the
 * test that made it (each Criterion test is its own process). */
static void write_temp(const char *text, char path[64]) {
    strcpy(path, "/tmp/ms_config_XXXXXX");
    int fd = mkstemp(path);
    cr_assert(fd >= 0, "mkstemp failed");
    FILE *f = fdopen(fd, "w");
    cr_assert(f);
    fputs(text, f);
    cr_assert(fclose(f) == 0);
}

typedef struct {
    char path[64];
    ms_config cfg;
    ms_config_errors errs;
    int n;
} loaded;

static loaded *load_sets(const char *text, int n_sets, const char *const *sets) {
    static loaded L; /* one per test process */
    write_temp(text, L.path);
    ms_config_errors_free(&L.errs); /* the previous load's messages */
    L.n = ms_config_load(&L.cfg, L.path, n_sets, sets, &L.errs);
    unlink(L.path);
    cr_assert_eq(L.n, L.errs.n, "the return value counts the errors");
    return &L;
}

static loaded *load(const char *text) { return load_sets(text, 0, NULL); }

static void dump(const loaded *L) {
    for (int i = 0; i < L->errs.n; i++)
        fprintf(stderr, "  [%d] %s\n", i, L->errs.msg[i]);
}

static void expect_ok(const loaded *L) {
    if (L->n) dump(L);
    cr_assert_eq(L->n, 0, "expected no errors, got %d (listed above)", L->n);
}

/* Exactly one error, equal to fmt (with %s standing for the file's path). */
static void expect_only(const loaded *L, const char *fmt) {
    char want[1024];
    snprintf(want, sizeof want, fmt, L->path);
    if (L->n != 1 || strcmp(L->errs.msg[0], want) != 0) dump(L);
    cr_assert_eq(L->n, 1, "expected exactly one error: %s", want);
    cr_assert_str_eq(L->errs.msg[0], want);
}

/* Some error equal to fmt (with %s standing for the file's path). */
static void expect_has(const loaded *L, const char *fmt) {
    char want[1024];
    snprintf(want, sizeof want, fmt, L->path);
    for (int i = 0; i < L->errs.n; i++)
        if (!strcmp(L->errs.msg[i], want)) return;
    dump(L);
    cr_assert_fail("no error reads: %s", want);
}

static ms_config load_file_ok(const char *path) {
    ms_config cfg;
    ms_config_errors errs;
    ms_config_errors_init(&errs);
    int n = ms_config_load(&cfg, path, 0, NULL, &errs);
    if (n) ms_config_errors_print(&errs, stderr);
    cr_assert_eq(n, 0, "%s should load without errors", path);
    ms_config_errors_free(&errs);
    return cfg;
}

/* Prints cfg with ms_config_print, loads the text back and checks every key is equal. */
static void expect_round_trip(const ms_config *cfg) {
    char path[64];
    write_temp("", path);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    ms_config_print(cfg, f);
    cr_assert(fclose(f) == 0);
    ms_config back = load_file_ok(path);
    unlink(path);
    const char *diff = NULL;
    bool same = ms_config_equal(cfg, &back, &diff);
    cr_assert(same, "round trip changed %s", diff ? diff : "?");
    char a[MS_FINGERPRINT_LEN + 1], b[MS_FINGERPRINT_LEN + 1];
    ms_config_fingerprint(cfg, a);
    ms_config_fingerprint(&back, b);
    cr_assert_str_eq(a, b);
}

/* ---- defaults and automatic values --------------------------------------------------------- */

Test(config_defaults, table_defaults) {
    ms_config c;
    ms_config_defaults(&c);
    cr_assert_str_eq(c.run.dir, "runs");
    cr_assert_str_eq(c.run.device, "auto");
    cr_assert_eq(c.run.seed, 0);
    cr_assert_eq(c.data.dataset, MS_DATASET_TASKONOMY);
    cr_assert_eq(c.data.image_size, 224);
    cr_assert_eq(c.data.resize, 256);
    cr_assert_eq(c.data.tasks.n, 0);
    cr_assert(c.data.index_cache && c.data.augment);
    cr_assert_eq(c.model.arch, MS_ARCH_MODSQUAD);
    cr_assert_eq(c.model.dim, 384);
    cr_assert_eq(c.model.depth, 12);
    cr_assert_eq(c.model.heads, 6);
    cr_assert_eq(c.model.head_dim, 0);
    cr_assert_eq(c.model.attn_experts, 15);
    cr_assert_eq(c.model.attn_topk, 6);
    cr_assert_eq(c.model.mlp_experts, 16);
    cr_assert_eq(c.model.mlp_topk, 4);
    cr_assert_eq(c.model.moe_attn_blocks.mode, MS_BLOCKS_EVEN);
    cr_assert_eq(c.model.moe_mlp_blocks.mode, MS_BLOCKS_ODD);
    cr_assert_eq(c.model.router_eps, 1e-4);
    cr_assert_eq(c.model.w_mi, 0.005);
    cr_assert_eq(c.model.drop_path, 0.1);
    cr_assert_eq(c.model.edge_pos_weight, 0.95);
    cr_assert_eq(c.model.head, MS_HEAD_AUTO);
    cr_assert_eq(c.train.epochs, 100);
    cr_assert_eq(c.train.blr, 4e-4);
    cr_assert_eq(c.train.lr, 0.0);
    cr_assert_eq(c.train.min_lr, 1e-6);
    cr_assert_eq(c.train.warmup_epochs, 10.0);
    cr_assert_eq(c.train.beta2, 0.999);
    cr_assert_eq(c.train.eps, 1e-4);
    cr_assert_eq(c.train.precision, MS_PRECISION_FP32);
    cr_assert_eq(c.eval.usage_threshold, 3.0);
    cr_assert_str_eq(c.eval.split, "val");
}

Test(config_defaults, empty_file_resolves_the_paper_small_model) {
    loaded *L = load("");
    expect_ok(L);
    const ms_config *c = &L->cfg;
    cr_assert_str_eq(c->run.name, L->path + strlen("/tmp/"), "run.name = the file's base name");
    cr_assert_eq(c->data.tasks.n, 14, "every Taskonomy task");
    cr_assert_str_eq(c->data.tasks.name[0], "depth_euclidean");
    cr_assert_str_eq(c->data.tasks.name[13], "class_scene");
    cr_assert_eq(c->model.head_dim, 128, "2*384/6 as the official code");
    cr_assert_eq(c->model.attn_expert_dim, 128);
    cr_assert_eq(c->model.expert_hidden, 384, "4*384/4");
    cr_assert_eq(c->model.moe_attn_blocks.mask, 0x555ull, "even blocks of 12");
    cr_assert_eq(c->model.moe_mlp_blocks.mask, 0xaaaull, "odd blocks of 12");
    cr_assert_eq(c->model.head, MS_HEAD_LINEAR);
    cr_assert_eq(c->model.task_weighting, MS_WEIGHTING_UNCERTAINTY);
    cr_assert_eq(c->model.task_weights.n, 14);
    cr_assert_eq(c->model.task_weights.value[3], 1.0);
    cr_assert_eq(c->train.lr, 4e-4 * 8 / 256);
    cr_assert_str_eq(c->data.split_file, "", "no root, no split file");
    cr_assert(c->origin[0].automatic, "run.name is marked automatic");
}

Test(config_defaults, pascal_resolution) {
    loaded *L = load("data:\n  dataset: pascal_context\n  root: /d/PASCAL_MT/\n"
                     "model:\n  arch: hard_sharing\n  task_weights: {edge: 20}\n");
    expect_ok(L);
    const ms_config *c = &L->cfg;
    const char *names[] = {"semseg", "human_parts", "sal", "normals", "edge"};
    const double weights[] = {1, 2, 5, 10, 20};
    cr_assert_eq(c->data.tasks.n, 5);
    cr_assert_eq(c->model.task_weights.n, 5);
    for (int t = 0; t < 5; t++) {
        cr_assert_str_eq(c->data.tasks.name[t], names[t]);
        cr_assert_str_eq(c->model.task_weights.name[t], names[t]);
        cr_assert_eq(c->model.task_weights.value[t], weights[t], "weight of %s", names[t]);
    }
    cr_assert_eq(c->model.head, MS_HEAD_CONV);
    cr_assert_eq(c->model.task_weighting, MS_WEIGHTING_FIXED);
    cr_assert_eq(c->model.head_dim, 64, "dense archs: dim/heads");
    cr_assert_eq(c->model.moe_attn_blocks.mode, MS_BLOCKS_NONE, "dense: no MoE");
    cr_assert_eq(c->model.moe_mlp_blocks.mask, 0ull);
    cr_assert_str_eq(c->data.split_file, "", "the split CSV is Taskonomy's");
}

Test(config_defaults, task_weights_follow_task_order_and_drop_untrained) {
    loaded *L = load("data:\n  dataset: pascal_context\n  tasks: [edge, semseg]\n"
                     "model:\n  task_weights: {semseg: 3, sal: 7}\n");
    expect_ok(L);
    const ms_weight_map *w = &L->cfg.model.task_weights;
    cr_assert_eq(w->n, 2);
    cr_assert_str_eq(w->name[0], "edge");
    cr_assert_eq(w->value[0], 50.0);
    cr_assert_str_eq(w->name[1], "semseg");
    cr_assert_eq(w->value[1], 3.0);
}

Test(config_defaults, m3vit_and_block_lists) {
    loaded *L = load("model:\n  arch: m3vit\n  depth: 6\n  moe_mlp_blocks: [1, 5]\n");
    expect_ok(L);
    cr_assert_eq(L->cfg.model.moe_attn_blocks.mode, MS_BLOCKS_NONE, "m3vit: MoE MLPs only");
    cr_assert_eq(L->cfg.model.moe_mlp_blocks.mask, (1ull << 1) | (1ull << 5));
    cr_assert_eq(L->cfg.model.head_dim, 64, "m3vit uses dim/heads");
    L = load("model:\n  depth: 5\n  moe_attn_blocks: all\n  moe_mlp_blocks: none\n");
    expect_ok(L);
    cr_assert_eq(L->cfg.model.moe_attn_blocks.mask, 0x1full);
    cr_assert_eq(L->cfg.model.moe_mlp_blocks.mask, 0ull);
}

Test(config_defaults, device_strings) {
    int idx = -1;
    cr_assert_eq(ms_config_parse_device("auto", &idx), MS_DEVICE_AUTO);
    cr_assert_eq(ms_config_parse_device("cpu", &idx), MS_DEVICE_CPU);
    cr_assert_eq(ms_config_parse_device("cuda", &idx), MS_DEVICE_CUDA);
    cr_assert_eq(idx, 0);
    cr_assert_eq(ms_config_parse_device("cuda:3", &idx), MS_DEVICE_CUDA);
    cr_assert_eq(idx, 3);
    cr_assert_eq(ms_config_parse_device("cuda:", &idx), -1);
    cr_assert_eq(ms_config_parse_device("cuda:x", &idx), -1);
    cr_assert_eq(ms_config_parse_device("gpu", &idx), -1);
    loaded *L = load("run:\n  device: cuda:1\n");
    expect_ok(L);
    cr_assert_str_eq(L->cfg.run.device, "cuda:1");
}

/* ---- one error per type, with the exact position --------------------------------------------- */

Test(config_errors, integer) {
    expect_only(load("model:\n  dim: abc\n"), "%s:2:8: model.dim: expected an integer, got 'abc'");
    expect_only(load("model:\n  depth: 1.5\n"),
                "%s:2:10: model.depth: expected an integer, got '1.5'");
    expect_only(load("model:\n  depth: \"12\"\n"),
                "%s:2:10: model.depth: expected an integer, got the quoted string '12'");
    expect_only(load("model:\n  depth: 0\n"),
                "%s:2:10: model.depth: 0 is out of range (allowed: 1 to 64)");
    expect_only(load("run:\n  seed: -1\n"),
                "%s:2:9: run.seed: -1 is out of range (allowed: 0 or more)");
    expect_only(load("run:\n  seed: 99999999999\n"),
                "%s:2:9: run.seed: 99999999999 is out of range (allowed: 0 or more)");
    expect_only(load("train:\n  batch_size: 0\n"),
                "%s:2:15: train.batch_size: 0 is out of range (allowed: 1 to 1048576)");
    expect_only(load("train:\n  steps:\n"), "%s:2:9: train.steps: expected an integer, got an "
                                            "empty value");
}

Test(config_errors, number) {
    expect_only(load("train:\n  blr: fast\n"), "%s:2:8: train.blr: expected a number, got 'fast'");
    expect_only(load("train:\n  blr: .inf\n"), "%s:2:8: train.blr: expected a number, got '.inf'");
    expect_only(load("train:\n  blr: 0\n"),
                "%s:2:8: train.blr: 0 is out of range (allowed: 0 < value <= 10)");
    expect_only(load("model:\n  drop_path: 1\n"),
                "%s:2:14: model.drop_path: 1 is out of range (allowed: 0 <= value < 1)");
    expect_only(load("model:\n  edge_pos_weight: 1.5\n"),
                "%s:2:20: model.edge_pos_weight: 1.5 is out of range (allowed: 0 < value < 1)");
    loaded *L = load("train:\n  blr: 1.5e-4\n  min_lr: 1e-7\n  beta1: 0.95\n");
    expect_ok(L);
    cr_assert_eq(L->cfg.train.blr, 1.5e-4);
    cr_assert_eq(L->cfg.train.beta1, 0.95);
}

Test(config_errors, boolean) {
    expect_only(load("model:\n  qkv_bias: maybe\n"),
                "%s:2:13: model.qkv_bias: expected true or false, got 'maybe'");
    expect_only(load("model:\n  qkv_bias: [true]\n"),
                "%s:2:13: model.qkv_bias: expected true or false, got a list");
    loaded *L = load("model:\n  qkv_bias: no\n  noisy_gating: True\n");
    expect_ok(L);
    cr_assert(!L->cfg.model.qkv_bias && L->cfg.model.noisy_gating);
}

Test(config_errors, string) {
    expect_only(load("run:\n  name: [a, b]\n"), "%s:2:9: run.name: expected a string, got a list");
    expect_only(load("run:\n  device: gpu\n"),
                "%s:2:11: run.device: 'gpu' is not allowed; expected auto, cpu, cuda or cuda:N "
                "(N = GPU index)");
    expect_only(load("run:\n  name: a/b\n"),
                "%s:2:9: run.name: 'a/b' is not allowed; expected a directory name without '/' "
                "(not . or ..)");
    expect_only(load("data:\n  val_split: \"\"\n"),
                "%s:2:14: data.val_split: the quoted string '' is not allowed; expected a split "
                "name of letters, digits, _ . -");
    char text[2200] = "data:\n  root: ";
    memset(text + strlen(text), 'x', 1100);
    strcat(text, "\n");
    expect_only(load(text),
                "%s:2:9: data.root: 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                "xx...' is too long (at most 1023 characters)");
}

Test(config_errors, enumeration) {
    expect_only(load("model:\n  arch: modsqad\n"),
                "%s:2:9: model.arch: expected modsquad, task_moe, m3vit, hard_sharing, "
                "separate_bottom or single_task, got 'modsqad' (did you mean 'modsquad'?)");
    expect_only(
        load("train:\n  precision: fp33\n"),
        "%s:2:14: train.precision: expected fp32 or bf16, got 'fp33' (did you mean 'fp32'?)");
    expect_only(load("train:\n  precision: xyz\n"),
                "%s:2:14: train.precision: expected fp32 or bf16, got 'xyz'");
    loaded *L = load("model:\n  arch: \"task_moe\"\n"); /* a quoted name is still a name */
    expect_ok(L);
    cr_assert_eq(L->cfg.model.arch, MS_ARCH_TASK_MOE);
}

Test(config_errors, list_of_names) {
    expect_only(load("data:\n  tasks: normal\n"),
                "%s:2:10: data.tasks: expected a list of names like [a, b], got 'normal'");
    expect_only(load("data:\n  tasks: [normal, {a: 1}]\n"),
                "%s:2:19: data.tasks[1]: expected a name, got a mapping");
    expect_only(load("data:\n  tasks:\n    - normal\n    - reshading\n    - normal\n"),
                "%s:5:7: data.tasks: 'normal' is listed twice");
    loaded *L = load("data:\n  tasks: [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q]\n");
    expect_only(L, "%s:2:10: data.tasks: at most 16 names, got 17");
}

Test(config_errors, map_of_numbers) {
    expect_only(load("data:\n  dataset: pascal_context\nmodel:\n  task_weights: 3\n"),
                "%s:4:17: model.task_weights: expected a mapping of task: weight like {semseg: 1, "
                "edge: 50}, got '3'");
    expect_only(load("data:\n  dataset: pascal_context\nmodel:\n  task_weights:\n    sal: x\n"),
                "%s:5:10: model.task_weights.sal: expected a number, got 'x'");
    expect_only(load("data:\n  dataset: pascal_context\nmodel:\n  task_weights: {sal: -1}\n"),
                "%s:4:23: model.task_weights.sal: -1 is out of range (allowed: 0 to 1000000)");
    expect_only(
        load("data:\n  dataset: pascal_context\nmodel:\n  task_weights: {sal: 1, sal: 2}\n"),
        "%s:4:26: model.task_weights: duplicate entry 'sal'");
}

Test(config_errors, block_set) {
    expect_only(
        load("model:\n  moe_attn_blocks: evn\n"),
        "%s:2:20: model.moe_attn_blocks: expected even, odd, all or none or a list of block "
        "indices like [0, 2], got 'evn' (did you mean 'even'?)");
    expect_only(load("model:\n  moe_mlp_blocks: [1, x]\n"),
                "%s:2:23: model.moe_mlp_blocks[1]: expected an integer, got 'x'");
    expect_only(load("model:\n  moe_mlp_blocks: [1, 1]\n"),
                "%s:2:23: model.moe_mlp_blocks: block 1 is listed twice");
    expect_only(load("model:\n  moe_mlp_blocks: [1, 13]\n"),
                "%s:2:19: model.moe_mlp_blocks: block 13 does not exist; model.depth is 12 (blocks "
                "0 to 11)");
}

Test(config_errors, yaml_syntax) {
    /* libyaml's problem text at its position, with its context. */
    expect_only(load("model:\n  dim: [1, 2\ntrain:\n  steps: 3\n"),
                "%s:3:6: YAML syntax error: did not find expected ',' or ']' (while parsing a flow "
                "sequence at line 2, column 8)");
    expect_only(load("model:\n\tdim: 3\n"),
                "%s:2:1: YAML syntax error: found character that cannot start any token (while "
                "scanning for the next token at line 2, column 1)");
    expect_only(load("model:\n  dim: \xff\n"),
                "%s:2:8: YAML syntax error: invalid leading UTF-8 octet at byte 14");
    expect_only(load("model:\n  dim: 1\n---\nmodel:\n  dim: 2\n"),
                "%s:4:1: a second YAML document; a config is one document");
}

Test(config_errors, structure) {
    expect_only(load("model:\n  dim: 12\n  dim: 24\n"),
                "%s:3:3: duplicate key 'model.dim' (first set at line 2)");
    expect_only(load("model:\n  dim: 96\nmodel:\n  depth: 2\n"),
                "%s:3:1: duplicate section 'model' (first at line 1, column 1)");
    expect_only(
        load("model: 3\n"),
        "%s:1:8: 'model' must be a mapping of its keys (indented 'key: value' lines), got '3'");
    expect_only(
        load("train:\n  - steps\n"),
        "%s:2:3: 'train' must be a mapping of its keys (indented 'key: value' lines), got a list");
    expect_only(
        load("- a\n- b\n"),
        "%s:1:1: a config is a mapping of sections (run:, data:, model:, train:, eval:), got "
        "a list");
    expect_only(
        load("model.dim: 3\n"),
        "%s:1:1: unknown key 'model.dim' at the top level; write it as 'model:' with 'dim:' "
        "indented below");
    expect_only(load("model:\n  [a]: 3\n"), "%s:2:3: keys of 'model' must be names, got a list");
    expect_ok(load("model:\neval: ~\n")); /* empty sections are fine */
    expect_ok(load("# only a comment\n"));
}

Test(config_errors, unknown_keys_and_suggestions) {
    expect_only(load("model:\n  dimm: 384\n"),
                "%s:2:3: unknown key 'model.dimm' (did you mean 'model.dim'?)");
    expect_only(load("model:\n  xyz: 1\n"), "%s:2:3: unknown key 'model.xyz'");
    expect_only(load("model:\n  batch_size: 4\n"),
                "%s:2:3: unknown key 'model.batch_size' (did you mean 'train.batch_size'?)");
    expect_only(load("train:\n  bacth_size: 4\n"),
                "%s:2:3: unknown key 'train.bacth_size' (did you mean 'train.batch_size'?)");
    expect_only(load("modle:\n  dim: 4\n"),
                "%s:1:1: unknown section 'modle' (did you mean 'model'?)");
    expect_only(load("optimizer:\n  lr: 1\n"), "%s:1:1: unknown key 'optimizer'");
}

Test(config_errors, every_error_of_a_file_is_reported) {
    loaded *L = load("run:\n  seed: -1\n  device: gpu\n"
                     "model:\n  dimm: 384\n  depth: abc\n  qkv_bias: maybe\n  mlp_topk: 20\n"
                     "data:\n  tasks: [depth, normals]\n"
                     "evl:\n  split: val\n");
    cr_assert_eq(L->n, 8, "got %d errors", L->n);
    expect_has(L, "%s:2:9: run.seed: -1 is out of range (allowed: 0 or more)");
    expect_has(L, "%s:5:3: unknown key 'model.dimm' (did you mean 'model.dim'?)");
    expect_has(L, "%s:6:10: model.depth: expected an integer, got 'abc'");
    expect_has(L, "%s:11:1: unknown section 'evl' (did you mean 'eval'?)");
    /* Checks that involve a rejected key are skipped (depth was rejected: no MoE checks). */
    expect_has(L, "%s:10:10: data.tasks: 'depth' is not a task of data.dataset taskonomy (did you "
                  "mean 'depth_euclidean' or 'depth_zbuffer'?); its tasks are depth_euclidean, "
                  "depth_zbuffer, normal, principal_curvature, reshading, edge_texture, "
                  "edge_occlusion, keypoints2d, keypoints3d, segment_unsup2d, segment_unsup25d, "
                  "segment_semantic, class_object, class_scene");
}

Test(config_errors, unreadable_file) {
    ms_config cfg;
    ms_config_errors errs;
    ms_config_errors_init(&errs);
    cr_assert_eq(ms_config_load(&cfg, "/nonexistent/cfg.yaml", 0, NULL, &errs), 1);
    cr_assert_str_eq(errs.msg[0], "/nonexistent/cfg.yaml: cannot open the config: No such file or "
                                  "directory");
    ms_config_errors_free(&errs);
    cr_assert_eq(errs.n, 0);
}

/* ---- --set ----------------------------------------------------------------------------------- */

Test(config_set, overrides_every_type) {
    const char *sets[] = {"model.dim=192",
                          "model.dim=96", /* later wins */
                          "data.tasks=[normal, depth_zbuffer]",
                          "model.noisy_gating=true",
                          "model.arch=task_moe",
                          "model.router=shared_task_conditioned",
                          "train.blr=2e-4",
                          "run.name=my run",
                          "model.moe_attn_blocks=[0, 3]",
                          "model.task_weights={normal: 2}",
                          "model.task_weights.depth_zbuffer=4"};
    loaded *L = load_sets("model:\n  dim: 384\n", 11, sets);
    expect_ok(L);
    const ms_config *c = &L->cfg;
    cr_assert_eq(c->model.dim, 96);
    cr_assert_eq(c->model.head_dim, 32, "auto recomputed from the overridden dim: 2*96/6");
    cr_assert_eq(c->data.tasks.n, 2);
    cr_assert_str_eq(c->data.tasks.name[1], "depth_zbuffer");
    cr_assert(c->model.noisy_gating);
    cr_assert_eq(c->model.router, MS_ROUTER_SHARED_TASK_CONDITIONED);
    cr_assert_eq(c->train.blr, 2e-4);
    cr_assert_str_eq(c->run.name, "my run");
    cr_assert_eq(c->model.moe_attn_blocks.mask, 0x9ull);
    cr_assert_eq(c->model.task_weights.value[0], 2.0);
    cr_assert_eq(c->model.task_weights.value[1], 4.0);
    int k_dim = -1;
    for (int k = 0; k < MS_CONFIG_MAX_KEYS && k_dim < 0; k++)
        if (c->origin[k].kind == MS_ORIGIN_SET && c->origin[k].line == 1) k_dim = k;
    cr_assert(k_dim >= 0, "model.dim's origin names --set number 1");
}

Test(config_set, empty_value_is_null) {
    const char *sets[] = {"run.name=", "data.tasks="};
    loaded *L = load_sets("run:\n  name: x\ndata:\n  tasks: [normal]\n", 2, sets);
    expect_ok(L);
    cr_assert_str_eq(L->cfg.run.name, L->path + strlen("/tmp/"));
    cr_assert_eq(L->cfg.data.tasks.n, 14);
}

Test(config_set, bad_overrides) {
    const char *sets[] = {
        "model.dim=abc", "model.dimm=3",   "model.depth=100",          "model=3",
        "nokey",         "train.lr=[1, 2", "model.task_weights.sal=x", "data.tasks=normal"};
    loaded *L = load_sets("", 8, sets);
    cr_assert_eq(L->n, 8);
    expect_has(L, "--set model.dim=abc: expected an integer, got 'abc'");
    expect_has(L, "--set model.dimm=3: unknown key 'model.dimm' (did you mean 'model.dim'?)");
    expect_has(L, "--set model.depth=100: 100 is out of range (allowed: 1 to 64)");
    expect_has(L, "--set model=3: 'model' is a section; set one of its keys (model.KEY=VALUE)");
    expect_has(L, "--set nokey: expected key=value, e.g. --set model.dim=384");
    expect_has(L, "--set train.lr=[1, 2: YAML syntax error in the value: did not find expected ',' "
                  "or ']' (while parsing a flow sequence)");
    expect_has(L, "--set model.task_weights.sal=x: model.task_weights.sal: expected a number, got "
                  "'x'");
    expect_has(L, "--set data.tasks=normal: expected a list of names like [a, b], got 'normal'");
}

Test(config_set, cross_check_names_the_override) {
    const char *sets[] = {"model.attn_topk=20"};
    loaded *L = load_sets("", 1, sets);
    expect_only(L, "--set model.attn_topk=20: model.attn_topk (20) must not exceed "
                   "model.attn_experts (15): each token selects top-k distinct experts");
}

/* ---- checks across keys --------------------------------------------------------------------- */

Test(config_check, topk_and_experts) {
    /* topk is the default, so the message points at the experts line the user wrote. */
    expect_only(load("model:\n  attn_experts: 4\n"),
                "%s:2:17: model.attn_topk (6) must not exceed model.attn_experts (4): each token "
                "selects top-k distinct experts");
    expect_only(load("model:\n  mlp_topk: 17\n"),
                "%s:2:13: model.mlp_topk (17) must not exceed model.mlp_experts (16): each token "
                "selects top-k distinct experts");
    /* No MoE attention: its top-k does not matter. */
    expect_ok(load("model:\n  attn_experts: 4\n  moe_attn_blocks: none\n"));
    expect_ok(load("model:\n  arch: hard_sharing\n  attn_experts: 4\n"));
}

Test(config_check, widths) {
    expect_only(load("model:\n  patch: 10\n"),
                "%s:2:10: model.patch (10) must divide data.image_size (224) into whole patches");
    expect_only(load("model:\n  dim: 100\n"),
                "%s:2:8: model.head_dim 0 (auto) is 2*model.dim/model.heads, but 200 is not "
                "divisible by model.heads (6); set model.head_dim");
    expect_ok(load("model:\n  dim: 100\n  head_dim: 32\n  mlp_topk: 5\n"));
    expect_only(load("model:\n  mlp_topk: 5\n"),
                "%s:2:13: model.expert_hidden 0 (auto) is mlp_ratio*dim/mlp_topk, but 1536 is not "
                "divisible by model.mlp_topk (5); set model.expert_hidden");
    expect_only(load("model:\n  mlp_ratio: 2.001\n"),
                "%s:2:14: model.mlp_ratio (2.001) * model.dim (384) = 768.384 must be a whole "
                "number of hidden units");
    expect_only(load("data:\n  resize: 200\n"),
                "%s:2:11: data.resize (200) is smaller than data.image_size (224); Taskonomy "
                "images are resized to data.resize, then cropped to data.image_size");
}

Test(config_check, tasks) {
    expect_only(load("data:\n  dataset: pascal_context\n  tasks: [semseg, normal]\n"),
                "%s:3:10: data.tasks: 'normal' is not a task of data.dataset pascal_context (did "
                "you mean 'normals'?); its tasks are semseg, human_parts, sal, normals, edge");
    expect_only(load("model:\n  arch: single_task\ndata:\n  tasks: [normal, reshading]\n"),
                "%s:4:10: model.arch single_task trains exactly one task, but data.tasks lists 2; "
                "give one, e.g. data.tasks: [normal]");
    expect_only(load("model:\n  arch: single_task\n"),
                "%s:2:9: model.arch single_task trains exactly one task, but data.tasks lists 0; "
                "give one, e.g. data.tasks: [depth_euclidean]");
    loaded *L = load("model:\n  arch: single_task\ndata:\n  tasks: [normal]\n");
    expect_ok(L);
    cr_assert_eq(L->cfg.model.moe_attn_blocks.mask | L->cfg.model.moe_mlp_blocks.mask, 0ull);
    expect_only(load("model:\n  task_weights: {semseg: 2}\n"),
                "%s:2:17: model.task_weights: 'semseg' is not a task of data.dataset taskonomy");
    expect_only(
        load("model:\n  task_weights: {normals: 2}\n"),
        "%s:2:17: model.task_weights: 'normals' is not a task of data.dataset taskonomy (did "
        "you mean 'normal'?)");
}

Test(config_check, archs) {
    expect_only(load("model:\n  router: shared_task_conditioned\n"),
                "%s:2:11: model.router shared_task_conditioned is the task_moe router; model.arch "
                "modsquad uses per_task");
    expect_only(load("model:\n  arch: separate_bottom\n"),
                "%s:2:9: model.separate_layers (0) must be 1 to model.depth (12) for model.arch "
                "separate_bottom");
    expect_ok(load("model:\n  arch: separate_bottom\n  separate_layers: 3\n"));
    expect_only(load("model:\n  moe_attn_blocks: none\n  moe_mlp_blocks: []\n"),
                "%s:2:20: model.arch modsquad needs at least one MoE block, but neither "
                "model.moe_attn_blocks nor model.moe_mlp_blocks selects any");
    expect_only(load("model:\n  arch: m3vit\n  moe_mlp_blocks: none\n"),
                "%s:3:19: model.arch m3vit needs MoE MLP blocks, but model.moe_mlp_blocks selects "
                "none");
}

Test(config_check, schedule) {
    expect_only(load("train:\n  lr: 1e-4\n  min_lr: 1e-3\n"),
                "%s:3:11: train.min_lr (0.001) is above the peak learning rate train.lr (0.0001)");
    expect_only(load("train:\n  steps: 100\n  warmup_steps: 200\n"),
                "%s:3:17: train.warmup_steps (200) is more than train.steps (100)");
    expect_only(load("train:\n  epochs: 5\n"),
                "%s:2:11: train.warmup_epochs (10) is more than train.epochs (5)");
    expect_ok(load("train:\n  epochs: 5\n  steps: 50\n"));
}

Test(config_check, world_size) {
    loaded *L = load("train:\n  batch_size: 12\n");
    expect_ok(L);
    ms_config_errors errs;
    ms_config_errors_init(&errs);
    cr_assert_eq(ms_config_check_world(&L->cfg, 4, &errs), 0);
    cr_assert_eq(ms_config_check_world(&L->cfg, 3, &errs), 1, "eval.batch_size 8 over 3 ranks");
    cr_assert_eq(ms_config_check_world(&L->cfg, 5, &errs), 2);
    char want[256];
    snprintf(want, sizeof want,
             "%s:2:15: train.batch_size (12) is the global batch and must be "
             "divisible by the 5 ranks",
             L->path);
    cr_assert_str_eq(errs.msg[1], want);
    snprintf(want, sizeof want,
             "%s: eval.batch_size (8) is the global batch and must be divisible "
             "by the 3 ranks",
             L->path);
    cr_assert_str_eq(errs.msg[0], want);
    ms_config_errors_free(&errs);
}

/* ---- show, equality, fingerprint ------------------------------------------------------------ */

Test(config_show, round_trip_of_unusual_values) {
    loaded *L = load("run:\n  name: \"run #1: \\\"quoted\\\"\"\n  device: cuda:2\n"
                     "data:\n  root: \"/data/with space/~x\"\n  tasks: [reshading, normal]\n"
                     "  split_file: null\n"
                     "model:\n  arch: task_moe\n  moe_attn_blocks: [4, 0, 2]\n  mlp_ratio: 2.5\n"
                     "  task_weights: {normal: 0.1, reshading: 3.3333333333333335}\n"
                     "train:\n  blr: 1.5e-4\n  min_lr: 0\n  clip_grad: 3\n  warmup_epochs: 0.25\n");
    expect_ok(L);
    cr_assert_str_eq(L->cfg.run.name, "run #1: \"quoted\"");
    cr_assert_str_eq(L->cfg.data.split_file, "/data/with space/~x/splits.csv");
    expect_round_trip(&L->cfg);
}

Test(config_show, round_trip_of_defaults_and_printed_text) {
    loaded *L = load("");
    expect_ok(L);
    expect_round_trip(&L->cfg);
    char *text = ms_config_to_yaml(&L->cfg);
    cr_assert(strstr(text, "\nmodel:\n  arch: modsquad\n  patch: 16\n  dim: 384\n"), "%s", text);
    cr_assert(strstr(text, "\n  head_dim: 128  # auto\n"));
    cr_assert(strstr(text, "\n  warmup_epochs: 10.0\n"));
    cr_assert(strstr(text, "\n  lr: 1.25e-05  # auto\n"));
    cr_assert(strstr(text, "\n  moe_mlp_blocks: odd\n"));
    free(text);
}

Test(config_show, load_text_reads_what_to_yaml_wrote) {
    loaded *L = load("model:\n  dim: 192\n  arch: m3vit\n");
    expect_ok(L);
    char *text = ms_config_to_yaml(&L->cfg);
    ms_config back;
    ms_config_errors errs;
    ms_config_errors_init(&errs);
    cr_assert_eq(
        ms_config_load_text(&back, "ckpt.safetensors:config", text, strlen(text), 0, NULL, &errs),
        0);
    cr_assert(ms_config_equal(&L->cfg, &back, NULL));
    cr_assert_str_eq(back.source, "ckpt.safetensors:config");
    const char *bad = "model:\n  dim: x\n";
    cr_assert_eq(ms_config_load_text(&back, "ckpt", bad, strlen(bad), 0, NULL, &errs), 1);
    cr_assert_str_eq(errs.msg[0], "ckpt:2:8: model.dim: expected an integer, got 'x'");
    ms_config_errors_free(&errs);
    free(text);
}

Test(config_show, equal_names_the_first_difference) {
    loaded *L = load("");
    ms_config a = L->cfg, b = L->cfg;
    const char *diff = NULL;
    cr_assert(ms_config_equal(&a, &b, &diff));
    b.model.task_weights.value[2] += 1e-12;
    cr_assert(!ms_config_equal(&a, &b, &diff));
    cr_assert_str_eq(diff, "model.task_weights");
    b = a;
    b.origin[3].line = 99; /* where a value came from is not part of the config */
    cr_assert(ms_config_equal(&a, &b, NULL));
}

Test(config_show, fingerprint_covers_the_model_only) {
    char base[MS_FINGERPRINT_LEN + 1], fp[MS_FINGERPRINT_LEN + 1];
    ms_config_fingerprint(&load("")->cfg, base);
    cr_assert_eq(strlen(base), MS_FINGERPRINT_LEN);
    const char *same[] = {"train:\n  blr: 1e-3\n", "model:\n  drop_path: 0.2\n",
                          "model:\n  w_mi: 0.1\n", "run:\n  seed: 7\n",
                          "data:\n  workers: 5\n", "model:\n  head_dim: 128\n"};
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        ms_config_fingerprint(&load(same[i])->cfg, fp);
        cr_assert_str_eq(fp, base, "%s must not change the fingerprint", same[i]);
    }
    const char *differ[] = {"model:\n  dim: 192\n",       "model:\n  attn_topk: 5\n",
                            "data:\n  tasks: [normal]\n", "model:\n  moe_mlp_blocks: [1]\n",
                            "data:\n  image_size: 192\n", "model:\n  arch: task_moe\n"};
    for (size_t i = 0; i < sizeof differ / sizeof differ[0]; i++) {
        ms_config_fingerprint(&load(differ[i])->cfg, fp);
        cr_assert_str_neq(fp, base, "%s must change the fingerprint", differ[i]);
    }
}

/* ---- the shipped configs and docs (tests run from the repository root) ----------------------- */

Test(config_files, demo) {
    ms_config c = load_file_ok("configs/demo.yaml");
    cr_assert_eq(c.data.dataset, MS_DATASET_TASKONOMY);
    cr_assert_geq(c.data.tasks.n, 5);
    const char *kinds[] = {"depth_euclidean", "normal", "edge_texture", "segment_semantic",
                           "class_object"};
    for (int i = 0; i < 5; i++)
        cr_assert_geq(ms_config_task_index(&c, kinds[i]), 0, "the demo trains %s", kinds[i]);
    cr_assert_leq(c.data.image_size, 96);
    cr_assert_leq(c.model.dim, 128);
    cr_assert_leq(c.model.depth, 6);
    cr_assert_eq(c.model.arch, MS_ARCH_MODSQUAD);
    cr_assert_str_eq(c.run.name, "demo");
    expect_round_trip(&c);
}

Test(config_files, presets_have_the_paper_sizes) {
    struct {
        const char *path;
        int dim, heads, attn_e, attn_k, hidden;
    } presets[] = {{"configs/presets/vit_s_modsquad.yaml", 384, 6, 15, 6, 384},
                   {"configs/presets/vit_b_modsquad.yaml", 768, 12, 24, 12, 768}};
    for (int i = 0; i < 2; i++) {
        ms_config c = load_file_ok(presets[i].path);
        cr_assert_eq(c.data.image_size, 224);
        cr_assert_eq(c.model.patch, 16);
        cr_assert_eq(c.model.depth, 12);
        cr_assert_eq(c.model.dim, presets[i].dim);
        cr_assert_eq(c.model.heads, presets[i].heads);
        cr_assert_eq(c.model.head_dim, 128);
        cr_assert_eq(c.model.attn_expert_dim, 128);
        cr_assert_eq(c.model.attn_experts, presets[i].attn_e);
        cr_assert_eq(c.model.attn_topk, presets[i].attn_k);
        cr_assert_eq(c.model.mlp_experts, 16);
        cr_assert_eq(c.model.mlp_topk, 4);
        cr_assert_eq(c.model.expert_hidden, presets[i].hidden);
        cr_assert_eq(c.model.moe_attn_blocks.mask, 0x555ull);
        cr_assert_eq(c.model.moe_mlp_blocks.mask, 0xaaaull);
        cr_assert_eq(c.data.tasks.n, 13);
        expect_round_trip(&c);
    }
}

Test(config_files, docs_reference_matches_the_key_table) {
    FILE *f = fopen("docs/config.md", "r");
    cr_assert(f, "docs/config.md is missing (run the tests from the repository root)");
    static char doc[1 << 17];
    size_t n = fread(doc, 1, sizeof doc - 1, f);
    fclose(f);
    doc[n] = 0;
    const char *begin = strstr(doc, "<!-- keys:begin -->\n"),
               *end = strstr(doc, "<!-- keys:end -->");
    cr_assert(begin && end && end > begin, "docs/config.md lacks the keys:begin/end markers");
    begin += strlen("<!-- keys:begin -->\n");
    char *want = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&want, &len);
    ms_config_print_keys(m);
    fclose(m);
    bool same = (size_t)(end - begin) == len && memcmp(begin, want, len) == 0;
    cr_assert(same,
              "docs/config.md's reference differs from `modsquad config keys`; regenerate it");
    free(want);
}

/* ---- the command line ----------------------------------------------------------------------- */

static const char *bin(void) {
    const char *b = getenv("MODSQUAD_BIN");
    b = b && b[0] ? b : "./modsquad";
    cr_assert(access(b, X_OK) == 0, "%s is not built (make modsquad, or set MODSQUAD_BIN)", b);
    return b;
}

/* Runs `modsquad ARGS` with stdout and stderr to files; returns the exit status. */
static int run(const char *args, const char *out, const char *err) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s >%s 2>%s", bin(), args, out, err);
    int st = system(cmd);
    cr_assert(st != -1 && WIFEXITED(st), "could not run: %s", cmd);
    return WEXITSTATUS(st);
}

static char *slurp(const char *path) {
    static char buf[1 << 16];
    FILE *f = fopen(path, "r");
    cr_assert(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

Test(config_cli, show_prints_a_config_that_loads_back) {
    char out[64], err[64];
    write_temp("", out);
    write_temp("", err);
    cr_assert_eq(
        run("config show configs/demo.yaml --set model.dim=64 -s train.steps=70", out, err), 0,
        "stderr: %s", slurp(err));
    ms_config shown = load_file_ok(out);
    const char *sets[] = {"model.dim=64", "train.steps=70"};
    ms_config direct;
    ms_config_errors errs;
    ms_config_errors_init(&errs);
    cr_assert_eq(ms_config_load(&direct, "configs/demo.yaml", 2, sets, &errs), 0);
    const char *diff = NULL;
    cr_assert(ms_config_equal(&direct, &shown, &diff), "shown config differs in %s", diff);
    cr_assert_eq(shown.model.dim, 64);
    unlink(out);
    unlink(err);
}

Test(config_cli, usage_and_errors) {
    char out[64], err[64], bad[64];
    write_temp("", out);
    write_temp("", err);
    cr_assert_eq(run("config --help", out, err), 0);
    cr_assert(strstr(slurp(out), "Usage: modsquad config <subcommand>"));
    cr_assert_eq(run("config show --help", out, err), 0);
    cr_assert(strstr(slurp(out), "Usage: modsquad config show FILE [--set KEY=VALUE ...]"));
    cr_assert_eq(run("config show --bogus configs/demo.yaml", out, err), 2);
    cr_assert(strstr(slurp(err), "unknown option '--bogus'"), "%s", slurp(err));
    cr_assert_eq(run("config show", out, err), 2);
    cr_assert_eq(run("config show configs/demo.yaml --set", out, err), 2);
    cr_assert_eq(run("config", out, err), 2);
    cr_assert_eq(run("config frobnicate", out, err), 2);
    cr_assert_eq(run("config keys", out, err), 0);
    cr_assert(strstr(slurp(out), "| `model.dim` | integer | `384` |"));

    write_temp("model:\n  dimm: 3\n  depth: x\n", bad);
    char args[256], want[256];
    snprintf(args, sizeof args, "config show %s --set train.lr=abc", bad);
    cr_assert_eq(run(args, out, err), 1);
    const char *e = slurp(err);
    snprintf(want, sizeof want, "%s:2:3: unknown key 'model.dimm' (did you mean 'model.dim'?)\n",
             bad);
    cr_assert(strstr(e, want), "%s", e);
    snprintf(want, sizeof want, "%s:3:10: model.depth: expected an integer, got 'x'\n", bad);
    cr_assert(strstr(e, want), "%s", e);
    cr_assert(strstr(e, "--set train.lr=abc: expected a number, got 'abc'\n"), "%s", e);
    cr_assert(strstr(e, "3 errors in the configuration"), "%s", e);
    cr_assert_str_eq(slurp(out), "", "nothing on stdout for a bad config");
    unlink(bad);
    unlink(out);
    unlink(err);
}
