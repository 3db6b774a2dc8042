/* modsquad extract end to end on a tiny trained model (synthetic data, a few training steps):
 * (a) threshold 0 drops only experts the evaluation images never select, and the extracted
 *     checkpoint's predictions are bit-identical to the full model's for that task, as are the
 *     metrics `modsquad eval` reports for it;
 * (b) a threshold that drops experts the router does select: the predictions are bit-identical
 *     to the full model's with those experts' output weights and biases zeroed, and the metrics
 *     differ from the full model's;
 * (c) fewer parameters, and the top-k minimum when nothing passes the threshold;
 * (d) bad input: unknown task (did you mean), missing and corrupt checkpoints, thresholds out of
 *     range, an unwritable output; and `modsquad train` refusing an extracted config. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../data/dataset.h"
#include "../../data/loader.h"
#include "../../model/model.h"
#include "../../model/safetensors.h"
#include "../testutil.h"

#define TASK "depth_euclidean"

static char dir[64], data[128], full_ckpt[192];

static const char *bin(void) {
    const char *b = getenv("MODSQUAD_BIN");
    return b && b[0] ? b : "./modsquad";
}

/* Patches of 16 on 32-pixel images (5 tokens), 16 attention and 32 MLP experts of which each
 * token takes 2: four evaluation images leave experts unselected. Calibration and evaluation
 * read the same four validation images, in one batch. */
#define TINY                                                                                    \
    "--set data.image_size=32 --set data.resize=36 --set model.patch=16 --set model.dim=32 "     \
    "--set model.depth=2 --set model.heads=2 --set model.attn_experts=16 --set model.attn_topk=2 " \
    "--set model.mlp_experts=32 --set model.mlp_topk=2 --set train.batch_size=4 "                \
    "--set train.warmup_steps=2 --set eval.batch_size=4 --set eval.max_images=4 "              \
    "--set eval.calibration_images=4 --set run.progress=off --set train.checkpoint_every=0 "    \
    "--set train.eval_every=0 --set data.workers=0 "

/* Runs a shell command line; returns the exit status. */
static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    cr_assert(st != -1 && WIFEXITED(st), "could not run: %s", cmd);
    return WEXITSTATUS(st);
}

/* The suite's model: synthetic scenes and three training steps of the tiny Mod-Squad. */
static void setup(void) {
    snprintf(dir, sizeof dir, "/tmp/ms_extract_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(data, sizeof data, "%s/data", dir);
    cr_assert_eq(sh("%s synth --out %s --layout taskonomy --count 60 --size 36 --seed 3 -q "
                    ">/dev/null 2>&1", bin(), data), 0);
    cr_assert_eq(sh("%s train configs/demo.yaml " TINY "--set data.root=%s --set run.dir=%s "
                    "--set run.name=full --set train.steps=3 >%s/train.out 2>&1",
                    bin(), data, dir, dir),
                 0, "training failed: see %s/train.out", dir);
    snprintf(full_ckpt, sizeof full_ckpt, "%s/full/last.safetensors", dir);
}

static void teardown(void) { tu_tmpdir_remove(dir); }

/* `modsquad extract` of TASK into dir/NAME.safetensors; output in dir/NAME.out. */
static int extract(const char *name, const char *extra) {
    return sh("%s extract --task " TASK " --checkpoint %s --out %s/%s.safetensors %s "
              ">%s/%s.out 2>&1", bin(), full_ckpt, dir, name, extra, dir, name);
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot read %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    cr_assert_eq(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = 0;
    fclose(f);
    return s;
}

/* Whether TASK's metrics objects in two metrics JSON files of `modsquad eval` are the same
 * text (every value printed with the digits that read back to the same double); prints both
 * when they differ and `expect_same`. */
static int same_task_metrics(const char *path_a, const char *path_b, int expect_same) {
    char *text[2] = {slurp(path_a), slurp(path_b)}, *obj[2];
    for (int i = 0; i < 2; i++) {
        obj[i] = strstr(text[i], "\"" TASK "\": {");
        cr_assert_not_null(obj[i], "%s has no metrics of " TASK, i ? path_b : path_a);
        char *end = strchr(obj[i], '}');
        cr_assert_not_null(end);
        end[1] = 0;
    }
    int same = strcmp(obj[0], obj[1]) == 0;
    if (!same && expect_same) fprintf(stderr, "%s: %s\n%s: %s\n", path_a, obj[0], path_b, obj[1]);
    free(text[0]), free(text[1]);
    return same;
}

static void eval_to(const char *ckpt, const char *json) {
    cr_assert_eq(sh("%s eval --checkpoint %s --out %s >%s.out 2>&1", bin(), ckpt, json, json), 0,
                 "eval of %s failed: see %s.out", ckpt, json);
}

/* ---- checkpoints in-process ----------------------------------------------------------------- */

typedef struct {
    ms_config cfg;
    ms_model *m;
    float *host; /* the parameters, host copy */
} net;

static net *load(const char *path) {
    net *x = calloc(1, sizeof *x);
    ms_st_file w;
    char err[1024];
    cr_assert_eq(ms_safetensors_read(path, &w, err, sizeof err), 0, "%s", err);
    const char *yaml = ms_st_meta(&w, "modsquad.config");
    cr_assert_not_null(yaml);
    ms_config_errors errs;
    ms_config_errors_init(&errs);
    int n = ms_config_load_text(&x->cfg, path, yaml, strlen(yaml), 0, NULL, &errs);
    if (n) ms_config_errors_print(&errs, stderr);
    cr_assert_eq(n, 0, "the config stored in %s does not load", path);
    ms_config_errors_free(&errs);
    x->m = ms_model_create(&x->cfg, tu_cpu(), &(ms_model_opts){.batch = x->cfg.eval.batch_size});
    const ms_param_table *pt = ms_model_params(x->m);
    x->host = tu_floats(pt->total);
    cr_assert_eq(ms_safetensors_load_params(&w, path, pt, x->host, err, sizeof err), 0, "%s", err);
    ms_safetensors_free(&w);
    tu_cpu()->upload(tu_cpu(), ms_model_param_data(x->m), x->host, pt->total * sizeof(float));
    return x;
}

static void unload(net *x) {
    ms_model_destroy(x->m);
    free(x);
}

/* Task t's predictions on the evaluation images (one batch of four), as `modsquad eval` makes
 * them; the model's last forward is that batch (for its expert counts). */
static float *predict(net *x, int t, size_t *n) {
    ms_data *d;
    ms_io_err err = {0};
    cr_assert_eq(ms_data_open(&d, &x->cfg, x->cfg.eval.split, &(ms_data_open_opts){0}, &err), 0,
                 "%s", err.msg);
    ms_loader_opts o;
    ms_loader_opts_from_config(&o, &x->cfg, 0, 0, 1);
    o.workers = 0;
    ms_loader *L;
    cr_assert_eq(ms_loader_open(&L, d, &x->cfg, &o, &err), 0, "%s", err.msg);
    ms_batch *b;
    cr_assert_eq(ms_loader_next(L, &b, &err), 1, "%s", err.msg);
    cr_assert_eq(b->B, x->cfg.eval.batch_size);
    ms_model_forward(x->m, b, 0, 0);
    *n = (size_t)b->B * b->H * b->W; /* depth: one channel */
    float *p = tu_floats(*n);
    tu_cpu()->download_act(tu_cpu(), p, ms_model_prediction(x->m, t), *n);
    ms_loader_close(L);
    ms_data_close(d);
    return p;
}

static int task_of(const net *x) {
    int t = ms_config_task_index(&x->cfg, TASK);
    cr_assert_geq(t, 0);
    return t;
}

/* Selections of experts the extracted model dropped, in the full model's last forward. */
static long dropped_selections(const net *full, const net *ext) {
    long n = 0;
    const ms_expert_sets *ks = &ext->cfg.model.kept_experts;
    for (int l = 0; l < ks->layers; l++) {
        int count;
        const int16_t *kept = ms_expert_sets_layer(ks, l, &count);
        int64_t sel[64];
        ms_model_expert_counts(full->m, l, task_of(full), sel);
        for (int e = 0, k = 0; e < ms_model_moe_info(full->m, l).E; e++) {
            if (k < count && kept[k] == e)
                k++;
            else
                n += (long)sel[e];
        }
    }
    return n;
}

/* ---- (a) nothing dropped is ever selected ---------------------------------------------------- */

Test(extract_cli, threshold_0_is_bit_identical, .init = setup, .fini = teardown, .timeout = 120) {
    cr_assert_eq(extract("x0", "--threshold 0"), 0, "see %s/x0.out", dir);
    char path[256];
    snprintf(path, sizeof path, "%s/x0.safetensors", dir);
    net *full = load(full_ckpt), *ext = load(path);
    const ms_expert_sets *ks = &ext->cfg.model.kept_experts;
    cr_assert_eq(ks->layers, ms_model_moe_layers(full->m));
    int dropped = 0;
    for (int l = 0; l < ks->layers; l++) dropped += ms_model_moe_info(full->m, l).E - ks->count[l];
    cr_assert_gt(dropped, 0, "no expert dropped: the case is not exercised");

    size_t n_full, n_ext;
    float *want = predict(full, task_of(full), &n_full);
    float *got = predict(ext, 0, &n_ext);
    cr_assert_eq(n_ext, n_full);
    cr_assert_eq(dropped_selections(full, ext), 0);
    tu_expect_equal("extracted predictions", got, want, n_full);

    char a[256], b[256];
    snprintf(a, sizeof a, "%s/m-full.json", dir);
    snprintf(b, sizeof b, "%s/m-x0.json", dir);
    eval_to(full_ckpt, a);
    eval_to(path, b);
    cr_assert(same_task_metrics(a, b, 1), "the metrics of " TASK " differ");
    unload(full), unload(ext);
}

/* ---- (b) dropped experts that are selected ----------------------------------------------------- */

Test(extract_cli, dropped_experts_add_nothing, .init = setup, .fini = teardown, .timeout = 120) {
    cr_assert_eq(extract("x40", "--threshold 40"), 0, "see %s/x40.out", dir);
    char path[256];
    snprintf(path, sizeof path, "%s/x40.safetensors", dir);
    net *full = load(full_ckpt), *ext = load(path);
    int t = task_of(full);
    size_t n, n_ext;
    float *unmodified = predict(full, t, &n);
    cr_assert_gt(dropped_selections(full, ext), 0, "no dropped expert is selected");

    /* the full model with each dropped expert's output projection and bias set to zero */
    const ms_param_table *pt = ms_model_params(full->m);
    const ms_expert_sets *ks = &ext->cfg.model.kept_experts;
    for (int l = 0; l < ks->layers; l++) {
        ms_moe_info mi = ms_model_moe_info(full->m, l);
        int count;
        const int16_t *kept = ms_expert_sets_layer(ks, l, &count);
        const char *suffix[2] = {"output_experts.w", "output_experts.b"};
        for (int s = 0; s < 2; s++) {
            char name[96];
            snprintf(name, sizeof name, "blocks.%d.%s%s", mi.block,
                     mi.attn ? "attn.q_proj." : "mlp.", suffix[s]);
            int id = ms_params_find(pt, name);
            if (id < 0) continue; /* attention experts have no output bias */
            size_t row = pt->t[id].numel / (size_t)mi.E;
            for (int e = 0, k = 0; e < mi.E; e++) {
                if (k < count && kept[k] == e)
                    k++;
                else
                    memset(full->host + pt->t[id].offset + e * row, 0, row * sizeof(float));
            }
        }
    }
    tu_cpu()->upload(tu_cpu(), ms_model_param_data(full->m), full->host, pt->total * sizeof(float));
    float *zeroed = predict(full, t, &n);
    float *got = predict(ext, 0, &n_ext);
    cr_assert_eq(n_ext, n);
    tu_expect_equal("extracted vs zeroed dropped experts", got, zeroed, n);
    cr_assert(memcmp(got, unmodified, n * sizeof(float)) != 0,
              "the dropped experts changed nothing: the case is not exercised");

    char a[256], b[256];
    snprintf(a, sizeof a, "%s/m-full.json", dir);
    snprintf(b, sizeof b, "%s/m-x40.json", dir);
    eval_to(full_ckpt, a);
    eval_to(path, b);
    cr_assert(!same_task_metrics(a, b, 0), "dropping selected experts left the metrics unchanged");
    unload(full), unload(ext);
}

/* ---- (c) parameters and the top-k minimum ------------------------------------------------------- */

static double stored_floats(const char *path) {
    ms_st_file w;
    char err[1024];
    cr_assert_eq(ms_safetensors_read(path, &w, err, sizeof err), 0, "%s", err);
    double n = (double)w.data_bytes / sizeof(float);
    ms_safetensors_free(&w);
    return n;
}

Test(extract_cli, fewer_params_and_the_top_k_minimum, .init = setup, .fini = teardown,
     .timeout = 120) {
    char json[256], path[256];
    snprintf(json, sizeof json, "--threshold 100 --json %s/x100.json", dir);
    cr_assert_eq(extract("x100", json), 0, "see %s/x100.out", dir);
    snprintf(path, sizeof path, "%s/x100.safetensors", dir);
    cr_assert_lt(stored_floats(path), stored_floats(full_ckpt));

    /* nothing is used by more than 100% of the tokens: each layer keeps its top k, the experts
     * the full model's task selects most on the calibration images (ties: lower index) */
    net *full = load(full_ckpt), *ext = load(path);
    size_t n;
    predict(full, task_of(full), &n);
    const ms_expert_sets *ks = &ext->cfg.model.kept_experts;
    for (int l = 0; l < ks->layers; l++) {
        ms_moe_info mi = ms_model_moe_info(full->m, l);
        int count;
        const int16_t *kept = ms_expert_sets_layer(ks, l, &count);
        cr_assert_eq(count, mi.K, "layer %d keeps %d, not top-k %d", l, count, mi.K);
        int64_t sel[64];
        int taken[64] = {0};
        ms_model_expert_counts(full->m, l, task_of(full), sel);
        for (int k = 0; k < mi.K; k++) {
            int best = -1;
            for (int e = 0; e < mi.E; e++)
                if (!taken[e] && (best < 0 || sel[e] > sel[best])) best = e;
            taken[best] = 1;
        }
        for (int k = 0; k < count; k++)
            cr_assert(taken[kept[k]], "layer %d keeps expert %d, not one of its top %d", l,
                      kept[k], mi.K);
    }
    unload(full), unload(ext);

    /* the summary and the printed report agree on the shrink */
    snprintf(path, sizeof path, "%s/x100.json", dir);
    char *s = slurp(path);
    double pf = 0, pe = 0;
    cr_assert(strstr(s, "\"params_full\": ") && strstr(s, "\"params_extracted\": "), "%s", s);
    sscanf(strstr(s, "\"params_full\": ") + 15, "%lf", &pf);
    sscanf(strstr(s, "\"params_extracted\": ") + 20, "%lf", &pe);
    cr_assert(pe > 0 && pe < pf, "params %g -> %g", pf, pe);
    free(s);
    snprintf(path, sizeof path, "%s/x100.out", dir);
    s = slurp(path);
    cr_assert(strstr(s, "keeps  2 of 16") && strstr(s, "keeps  2 of 32"), "%s", s);
    cr_assert(strstr(s, "with the calibration routing"), "%s", s);
    free(s);
}

/* ---- (d) bad input ------------------------------------------------------------------------------ */

static void expect_fail(int want, const char *args, const char *needle) {
    char out[256];
    snprintf(out, sizeof out, "%s/bad.out", dir);
    int rc = sh("%s extract %s >%s 2>&1", bin(), args, out);
    char *s = slurp(out);
    cr_assert_eq(rc, want, "extract %s: exit %d, want %d: %s", args, rc, want, s);
    cr_assert(strstr(s, needle), "extract %s: the message lacks '%s': %s", args, needle, s);
    free(s);
}

Test(extract_cli, bad_input_is_explained, .init = setup, .fini = teardown, .timeout = 120) {
    char a[1024], out[256];
    snprintf(out, sizeof out, "%s/x.safetensors", dir);
    snprintf(a, sizeof a, "--task depth --checkpoint %s --out %s", full_ckpt, out);
    expect_fail(1, a, "did you mean '" TASK "'?");
    expect_fail(1, a, "its tasks are " TASK ", normal");
    snprintf(a, sizeof a, "--task " TASK " --checkpoint %s/none.safetensors --out %s", dir, out);
    expect_fail(1, a, "none.safetensors");
    /* a checkpoint cut short */
    cr_assert_eq(sh("head -c 3000 %s > %s/cut.safetensors", full_ckpt, dir), 0);
    snprintf(a, sizeof a, "--task " TASK " --checkpoint %s/cut.safetensors --out %s", dir, out);
    expect_fail(1, a, "cut.safetensors");
    const char *bad[] = {"150", "-1", "abc", "nan"};
    for (int i = 0; i < 4; i++) {
        snprintf(a, sizeof a, "--task " TASK " --checkpoint %s --out %s --threshold %s", full_ckpt,
                 out, bad[i]);
        expect_fail(2, a, "--threshold takes a percentage from 0 to 100");
    }
    snprintf(a, sizeof a, "--checkpoint %s --out %s", full_ckpt, out);
    expect_fail(2, a, "missing --task");
    /* a regular file where the output's directory should be */
    snprintf(a, sizeof a, "--task " TASK " --checkpoint %s --out %s/x", full_ckpt, full_ckpt);
    expect_fail(1, a, "is not writable");
    snprintf(a, sizeof a, "--task " TASK " --checkpoint %s --out %s", full_ckpt, full_ckpt);
    expect_fail(1, a, "is the checkpoint being extracted from");
    cr_assert_eq(access(out, F_OK), -1, "a failed extract left %s", out);
    /* an extracted model is not extracted again */
    cr_assert_eq(extract("x0", "--threshold 0"), 0);
    snprintf(a, sizeof a, "--task " TASK " --checkpoint %s/x0.safetensors --out %s", dir, out);
    expect_fail(1, a, "already a model extracted");
}

Test(extract_cli, train_refuses_an_extracted_config, .init = setup, .fini = teardown,
     .timeout = 120) {
    cr_assert_eq(extract("x0", "--threshold 0"), 0);
    char path[256];
    snprintf(path, sizeof path, "%s/x0.safetensors", dir);
    ms_st_file w;
    char err[1024];
    cr_assert_eq(ms_safetensors_read(path, &w, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(ms_st_meta(&w, "modsquad.extract.task"), TASK);
    cr_assert_str_eq(ms_st_meta(&w, "modsquad.extract.source"), full_ckpt);
    snprintf(path, sizeof path, "%s/extracted.yaml", dir);
    FILE *f = fopen(path, "w");
    fputs(ms_st_meta(&w, "modsquad.config"), f);
    fclose(f);
    ms_safetensors_free(&w);
    /* `config show` reads it back and keeps the expert lists */
    cr_assert_eq(sh("%s config show %s > %s/shown.yaml 2>&1", bin(), path, dir), 0);
    char shown[256];
    snprintf(shown, sizeof shown, "%s/shown.yaml", dir);
    char *text = slurp(shown);
    cr_assert(strstr(text, "  kept_experts: [["), "%s", text);
    free(text);
    cr_assert_eq(sh("%s train %s --set run.dir=%s --set run.name=again >%s/again.out 2>&1",
                    bin(), path, dir, dir),
                 1);
    snprintf(path, sizeof path, "%s/again.out", dir);
    char *s = slurp(path);
    cr_assert(strstr(s, "extracted by `modsquad extract`") && strstr(s, "cannot be"), "%s", s);
    free(s);
}
