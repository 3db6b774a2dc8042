/* Never losing a run (issue 9), end to end on a tiny synthetic dataset: kill -9 at three moments
 * and --resume auto each time ends bit-identical to a run that never stopped; a run whose
 * gradients blow up skips the non-finite steps, logs them and stops naming a checkpoint that
 * still evaluates; a table of broken configs, each with its FILE:LINE:COL; an unwritable run
 * directory found before any step. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../model/config.h"
#include "../../model/safetensors.h"
#include "../testutil.h"

static char dir[64], data[128];

static const char *bin(void) {
    const char *b = getenv("MODSQUAD_BIN");
    return b ? b : "./modsquad";
}

/* The tiny model and data of tests/cli/test_train.c: a few tens of ms per step. */
#define TINY                                                                                    \
    "--set data.image_size=32 --set data.resize=36 --set model.patch=8 --set model.dim=32 "      \
    "--set model.depth=2 --set model.heads=2 --set model.attn_experts=4 --set model.attn_topk=2 " \
    "--set model.mlp_experts=4 --set model.mlp_topk=2 --set train.batch_size=4 "                 \
    "--set train.warmup_steps=2 --set eval.batch_size=4 --set eval.max_images=8 "              \
    "--set run.progress=off --set train.checkpoint_every=0 --set train.eval_every=0 "

static void setup(void) {
    snprintf(dir, sizeof dir, "/tmp/ms_robust_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(data, sizeof data, "%s/data", dir);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s synth --out %s --layout taskonomy --count 60 --size 36 --seed 3 -q >/dev/null 2>&1", bin(), data);
    cr_assert_eq(system(cmd), 0, "synth failed: %s", cmd);
}

/* Removes the test's directory once it passed (a failure keeps it for its messages). */
static void cleanup(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

static void train_cmd(char *cmd, size_t cap, const char *name, const char *extra) {
    snprintf(cmd, cap,
             "%s train configs/demo.yaml " TINY "--set data.root=%s --set run.dir=%s --set run.name=%s %s >>%s/%s.out 2>&1",
             bin(), data, dir, name, extra, dir, name);
}

/* Runs `modsquad train` for run `name`; returns the exit status. Output goes to DIR/NAME.out. */
static int train(const char *name, const char *extra) {
    char cmd[2048];
    train_cmd(cmd, sizeof cmd, name, extra);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc(n + 1);
    size_t got = fread(s, 1, n, f);
    s[got] = 0;
    fclose(f);
    return s;
}

static float *weights(const char *path, size_t *n) {
    ms_st_file f;
    char err[512];
    cr_assert_eq(ms_safetensors_read(path, &f, err, sizeof err), 0, "%s", err);
    float *w = malloc(f.data_bytes);
    memcpy(w, f.data, f.data_bytes);
    *n = f.data_bytes / sizeof(float);
    ms_safetensors_free(&f);
    return w;
}

/* ---- kill -9 and resume ---------------------------------------------------------------------- */

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

/* Whether log.jsonl holds the step record of (0-based) step k past byte `from` (the log is
 * appended to by every resume). */
static int log_has_step(const char *log, long from, long k) {
    char *all = slurp(log);
    if (!all) return 0;
    long len = (long)strlen(all);
    char *s = all + (len >= from ? from : len);
    const char *kind = "\"kind\":\"step\",";
    char num[32];
    snprintf(num, sizeof num, "\"step\":%ld,", k);
    int found = 0;
    for (char *line = s; line && *line && !found;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        found = strstr(line, kind) && strstr(line, num);
        line = nl ? nl + 1 : NULL;
    }
    free(all);
    return found;
}

/* xorshift64: the kill moments come from a fixed seed, so a failure replays. */
static uint64_t next_rand(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

Test(robust, kill9_three_times_resumes_bit_identical, .init = setup, .timeout = 120) {
    const char *args = "--set train.steps=16 --set train.checkpoint_every=2";
    cr_assert_eq(train("full", args), 0);

    /* Three increasing steps in 1..10 of 16 and a delay of 0..4 ms after each is logged (a step
     * takes several ms), so a kill lands inside a step, inside a checkpoint write (after every
     * even step) or between them. */
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    long at[3];
    int delay_us[3];
    long lo = 1;
    for (int i = 0; i < 3; i++) {
        long span = 10 - lo - 2 * (2 - i); /* leave room for the later moments */
        at[i] = lo + (long)(next_rand(&seed) % (uint64_t)(span + 1));
        delay_us[i] = (int)(next_rand(&seed) % 5000);
        lo = at[i] + 2;
    }
    cr_log_info("kill -9 after steps %ld, %ld, %ld (+%d, %d, %d us)", at[0], at[1], at[2],
                delay_us[0], delay_us[1], delay_us[2]);
    char log[256], cmd[2048];
    snprintf(log, sizeof log, "%s/k/log.jsonl", dir);
    for (int i = 0; i < 3; i++) {
        char extra[256];
        snprintf(extra, sizeof extra, "%s --resume auto", args);
        train_cmd(cmd, sizeof cmd, "k", extra);
        char exec_cmd[2100];
        snprintf(exec_cmd, sizeof exec_cmd, "exec %s", cmd);
        long from = file_size(log);
        pid_t pid = fork();
        cr_assert_neq(pid, -1);
        if (pid == 0) {
            execl("/bin/sh", "sh", "-c", exec_cmd, (char *)NULL);
            _exit(127);
        }
        int seen = 0;
        for (int t = 0; t < 20000 && !seen; t++) { /* up to ~20 s */
            seen = log_has_step(log, from, at[i]);
            if (!seen) usleep(1000);
        }
        cr_assert(seen, "kill %d: step %ld never appeared in %s", i, at[i], log);
        usleep(delay_us[i]);
        kill(pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);
        cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
                  "kill %d after step %ld: the run ended by itself before the kill (status %d)", i,
                  at[i], st);
    }
    /* The last resume runs to the end. */
    char extra[256];
    snprintf(extra, sizeof extra, "%s --resume auto", args);
    cr_assert_eq(train("k", extra), 0, "the final resume failed: see %s/k.out", dir);
    char a[256], b[256];
    snprintf(a, sizeof a, "%s/full/last.safetensors", dir);
    snprintf(b, sizeof b, "%s/k/last.safetensors", dir);
    size_t na, nb;
    float *wa = weights(a, &na), *wb = weights(b, &nb);
    cr_assert_eq(na, nb);
    cr_assert_eq(memcmp(wa, wb, na * sizeof(float)), 0,
                 "killed at steps %ld, %ld, %ld and resumed: the weights differ from %s", at[0],
                 at[1], at[2], a);
    free(wa), free(wb);
    /* Every resume said where it came from: three of them found a checkpoint or started over. */
    char out[256];
    snprintf(out, sizeof out, "%s/k.out", dir);
    char *o = slurp(out);
    cr_assert_not_null(o);
    int resumes = 0;
    for (const char *p = o; (p = strstr(p, "resumed from")); p++) resumes++;
    cr_assert(resumes >= 2, "expected at least two resumes from a checkpoint, saw %d", resumes);
    free(o);
    cleanup();
}

/* ---- non-finite steps ------------------------------------------------------------------------ */

/* With lr 10 and weight decay 10, AdamW multiplies each decayed weight by 1 - lr*wd = -99 per
 * step, so the gradients overflow after a few steps (through the config alone); a skipped step
 * leaves the weights as they were, so every later step overflows too and the run stops after
 * train.max_bad_steps of them. With finite task losses the record names the gradient norm. */
Test(robust, non_finite_steps_are_skipped_then_stop, .init = setup, .timeout = 120) {
    int rc = train("nan", "--set train.steps=40 --set train.lr=10 --set train.weight_decay=10 "
                          "--set train.warmup_steps=1 --set train.max_bad_steps=3 "
                          "--set train.checkpoint_every=2");
    char path[256];
    snprintf(path, sizeof path, "%s/nan.out", dir);
    char *out = slurp(path);
    cr_assert_not_null(out);
    cr_assert_eq(rc, 1, "expected exit status 1 after 3 bad steps, got %d:\n%s", rc, out);

    /* log.jsonl: skipped_step records, the last three in a row, and no step after them. */
    snprintf(path, sizeof path, "%s/nan/log.jsonl", dir);
    char *log = slurp(path);
    cr_assert_not_null(log);
    int skipped = 0, run = 0, steps = 0;
    long first_bad = -1;
    for (char *line = log; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        if (strstr(line, "\"kind\":\"skipped_step\"")) {
            skipped++, run++;
            cr_assert(strstr(line, "non-finite step skipped") && strstr(line, "gradient norm"),
                      "a skipped_step record does not say what was non-finite: %s", line);
            if (first_bad < 0) sscanf(strstr(line, "\"step\":") + 7, "%ld", &first_bad);
        } else if (strstr(line, "\"kind\":\"step\"")) {
            steps++, run = 0;
        }
        line = nl ? nl + 1 : NULL;
    }
    cr_assert_eq(run, 3, "expected the log to end with 3 skipped steps in a row (%d skipped, %d "
                         "run at the end):\n%s", skipped, run, log);
    cr_assert(steps > 0 && first_bad == steps,
              "the good steps 0..%d come first, then the bad ones (first bad step %ld)", steps - 1,
              first_bad);
    free(log);

    /* stderr names the last good checkpoint, which loads and evaluates. */
    const char *tag = "The last good checkpoint is ";
    char *p = strstr(out, tag);
    cr_assert_not_null(p, "the stop message does not name the last good checkpoint:\n%s", out);
    cr_assert(strstr(out, "3 steps in a row had non-finite losses or gradients"), "%s", out);
    char ckpt[512];
    cr_assert_eq(sscanf(p + strlen(tag), "%511s", ckpt), 1);
    cr_assert(strstr(ckpt, "/nan/ckpt-") != NULL, "not a checkpoint of the run: %s", ckpt);
    free(out);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s eval --checkpoint %s --out %s/m.json >%s/eval.out 2>&1", bin(),
             ckpt, dir, dir);
    cr_assert_eq(system(cmd), 0, "eval of the last good checkpoint failed: see %s/eval.out", dir);
    /* The named checkpoint holds finite weights. */
    size_t n;
    float *w = weights(ckpt, &n);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += !(w[i] - w[i] == 0.0f);
    cr_assert_eq(bad, 0, "%zu non-finite weights in %s", bad, ckpt);
    free(w);
    cleanup();
}

/* ---- broken configs -------------------------------------------------------------------------- */

typedef struct {
    const char *yaml;
    const char *where; /* ":LINE:COL: " right after the file's path */
    const char *says;  /* a substring of that message */
    int world;         /* > 0: the error comes from ms_config_check_world with this many ranks */
} bad_config;

static const bad_config bad_configs[] = {
    /* YAML syntax */
    {"model:\n  dim: [1, 2\ntrain:\n  steps: 3\n", ":3:6: ", "did not find expected ',' or ']'", 0},
    {"model:\n\tdim: 3\n", ":2:1: ", "found character that cannot start any token", 0},
    {"model:\n  dim: \xff\n", ":2:8: ", "invalid leading UTF-8 octet", 0},
    {"model:\n  dim: 1\n---\nmodel:\n  dim: 2\n", ":4:1: ", "a second YAML document", 0},
    {"run:\n  name: \"abc\n", ":3:1: ", "found unexpected end of stream", 0},
    {"model:\n  dim: 3\n   depth: 2\n", ":3:9: ", "mapping values are not allowed in this context", 0},
    /* unknown keys */
    {"model:\n  dimm: 384\n", ":2:3: ", "unknown key 'model.dimm' (did you mean 'model.dim'?)", 0},
    {"modle:\n  dim: 4\n", ":1:1: ", "unknown section 'modle' (did you mean 'model'?)", 0},
    {"train:\n  bacth_size: 4\n", ":2:3: ", "(did you mean 'train.batch_size'?)", 0},
    {"model:\n  batch_size: 4\n", ":2:3: ", "(did you mean 'train.batch_size'?)", 0},
    {"model.dim: 3\n", ":1:1: ", "write it as 'model:' with 'dim:' indented below", 0},
    /* wrong types */
    {"model:\n  dim: abc\n", ":2:8: ", "model.dim: expected an integer, got 'abc'", 0},
    {"model:\n  depth: \"12\"\n", ":2:10: ", "got the quoted string '12'", 0},
    {"train:\n  blr: fast\n", ":2:8: ", "train.blr: expected a number, got 'fast'", 0},
    {"model:\n  qkv_bias: maybe\n", ":2:13: ", "expected true or false, got 'maybe'", 0},
    {"run:\n  name: [a, b]\n", ":2:9: ", "run.name: expected a string, got a list", 0},
    {"data:\n  tasks: normal\n", ":2:10: ", "expected a list of names like [a, b], got 'normal'", 0},
    {"train:\n  steps:\n", ":2:9: ", "expected an integer, got an empty value", 0},
    /* out-of-range values */
    {"model:\n  depth: 0\n", ":2:10: ", "0 is out of range (allowed: 1 to 64)", 0},
    {"run:\n  seed: -1\n", ":2:9: ", "-1 is out of range (allowed: 0 or more)", 0},
    {"train:\n  lr: 1e30\n", ":2:7: ", "1e30 is out of range (allowed: 0 to 10)", 0},
    {"model:\n  drop_path: 1\n", ":2:14: ", "(allowed: 0 <= value < 1)", 0},
    {"train:\n  max_bad_steps: 0\n", ":2:18: ", "train.max_bad_steps: 0 is out of range", 0},
    {"model:\n  moe_mlp_blocks: [1, 13]\n", ":2:19: ", "block 13 does not exist", 0},
    /* tasks the dataset does not have */
    {"data:\n  dataset: pascal_context\n  tasks: [semseg, normal]\n", ":3:10: ",
     "'normal' is not a task of data.dataset pascal_context (did you mean 'normals'?)", 0},
    {"data:\n  tasks: [depth, normal]\n", ":2:10: ", "'depth' is not a task of data.dataset taskonomy", 0},
    {"model:\n  task_weights: {normals: 2}\n", ":2:17: ", "'normals' is not a task of data.dataset taskonomy", 0},
    {"data:\n  tasks:\n    - normal\n    - reshading\n    - normal\n", ":5:7: ", "'normal' is listed twice", 0},
    /* top-k above the number of experts */
    {"model:\n  mlp_topk: 17\n", ":2:13: ", "model.mlp_topk (17) must not exceed model.mlp_experts (16)", 0},
    {"model:\n  attn_experts: 4\n", ":2:17: ", "model.attn_topk (6) must not exceed model.attn_experts (4)", 0},
    /* shapes */
    {"model:\n  patch: 10\n", ":2:10: ", "model.patch (10) must divide data.image_size (224)", 0},
    {"data:\n  image_size: 200\n  resize: 256\n", ":2:15: ", "must divide data.image_size (200)", 0},
    {"data:\n  resize: 200\n", ":2:11: ", "data.resize (200) is smaller than data.image_size (224)", 0},
    /* bad enumeration values */
    {"model:\n  arch: modsqad\n", ":2:9: ", "got 'modsqad' (did you mean 'modsquad'?)", 0},
    {"train:\n  precision: fp33\n", ":2:14: ", "expected fp32 or bf16, got 'fp33'", 0},
    {"run:\n  device: gpu\n", ":2:11: ", "expected auto, cpu, cuda or cuda:N", 0},
    /* duplicates */
    {"model:\n  dim: 12\n  dim: 24\n", ":3:3: ", "duplicate key 'model.dim' (first set at line 2)", 0},
    {"model:\n  dim: 96\nmodel:\n  depth: 2\n", ":3:1: ", "duplicate section 'model' (first at line 1", 0},
    /* sections that are not mappings */
    {"model: 3\n", ":1:8: ", "'model' must be a mapping of its keys", 0},
    {"train:\n  - steps\n", ":2:3: ", "'train' must be a mapping of its keys (indented 'key: value' lines), got a list", 0},
    {"- a\n- b\n", ":1:1: ", "a config is a mapping of sections", 0},
    /* schedule */
    {"train:\n  lr: 1e-4\n  min_lr: 1e-3\n", ":3:11: ", "is above the peak learning rate train.lr", 0},
    {"train:\n  steps: 100\n  warmup_steps: 200\n", ":3:17: ", "train.warmup_steps (200) is more than train.steps (100)", 0},
    /* a batch that the ranks do not divide */
    {"train:\n  batch_size: 12\n", ":2:15: ", "train.batch_size (12) is the global batch and must be divisible by the 5 ranks", 5},
    {"train:\n  batch_size: 7\n", ":2:15: ", "divisible by the 2 ranks", 2},
};

Test(robust, broken_configs_name_file_line_col) {
    const int n = (int)(sizeof bad_configs / sizeof bad_configs[0]);
    cr_assert_geq(n, 30);
    for (int i = 0; i < n; i++) {
        const bad_config *b = &bad_configs[i];
        char path[64] = "/tmp/ms_robust_cfg_XXXXXX";
        int fd = mkstemp(path);
        cr_assert(fd >= 0);
        cr_assert_eq(write(fd, b->yaml, strlen(b->yaml)), (ssize_t)strlen(b->yaml));
        close(fd);
        ms_config cfg;
        ms_config_errors errs;
        ms_config_errors_init(&errs);
        int n_err = ms_config_load(&cfg, path, 0, NULL, &errs);
        if (b->world) {
            cr_assert_eq(n_err, 0, "row %d: %s", i, n_err ? errs.msg[0] : "");
            n_err = ms_config_check_world(&cfg, b->world, &errs);
        }
        unlink(path);
        cr_assert(n_err > 0, "row %d: no error for:\n%s", i, b->yaml);
        char want[128];
        snprintf(want, sizeof want, "%s%s", path, b->where);
        int hit = 0;
        for (int e = 0; e < errs.n && !hit; e++)
            hit = strncmp(errs.msg[e], want, strlen(want)) == 0 && strstr(errs.msg[e], b->says);
        if (!hit)
            for (int e = 0; e < errs.n; e++) fprintf(stderr, "row %d: [%d] %s\n", i, e, errs.msg[e]);
        cr_assert(hit, "row %d: no error starting '%s' and saying '%s' (errors above)", i, want, b->says);
        ms_config_errors_free(&errs);
    }
}

/* Through the CLI: exit 1, FILE:LINE:COL on stderr, and no run directory made. */
Test(robust, broken_config_stops_the_cli_before_the_run_dir, .init = setup, .timeout = 60) {
    static const struct {
        const char *body, *where, *says;
    } rows[] = {
        {"model:\n  dimm: 3\n", ":5:3: ", "unknown key 'model.dimm'"},
        {"data:\n  tasks: [depth, normal]\n", ":5:10: ", "'depth' is not a task of data.dataset taskonomy"},
    };
    for (int i = 0; i < 2; i++) {
        char cfg[256], err[256], text[1024];
        snprintf(cfg, sizeof cfg, "%s/bad%d.yaml", dir, i);
        snprintf(err, sizeof err, "%s/bad%d.err", dir, i);
        snprintf(text, sizeof text, "run:\n  dir: %s/runs\n  name: r%d\n%s", dir, i, rows[i].body);
        FILE *f = fopen(cfg, "w");
        cr_assert_not_null(f);
        fputs(text, f);
        fclose(f);
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "%s train %s >/dev/null 2>%s", bin(), cfg, err);
        int st = system(cmd);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1, "row %d: expected exit status 1", i);
        char *e = slurp(err);
        char want[512];
        snprintf(want, sizeof want, "%s%s", cfg, rows[i].where);
        cr_assert(e && strstr(e, want) && strstr(e, rows[i].says), "row %d: stderr lacks '%s...%s':\n%s",
                  i, want, rows[i].says, e ? e : "");
        free(e);
        char rd[256];
        snprintf(rd, sizeof rd, "%s/runs", dir);
        cr_assert_neq(access(rd, F_OK), 0, "row %d: %s was created for a broken config", i, rd);
    }
    cleanup();
}

/* ---- unwritable run directory ---------------------------------------------------------------- */

Test(robust, unwritable_run_dir_is_found_before_training, .init = setup, .timeout = 60) {
    char file[256], extra[512];
    snprintf(file, sizeof file, "%s/file", dir);
    FILE *f = fopen(file, "w");
    cr_assert_not_null(f);
    fclose(f);
    snprintf(extra, sizeof extra, "--set train.steps=4 --set run.dir=%s/sub", file);
    /* The later --set run.dir wins over the one train() passes. */
    cr_assert_eq(train("w", extra), 1);
    char out[256];
    snprintf(out, sizeof out, "%s/w.out", dir);
    char *o = slurp(out);
    cr_assert_not_null(o);
    char want[512];
    snprintf(want, sizeof want, "the run directory %s/sub/w is not writable", file);
    cr_assert(strstr(o, want), "the message does not name the directory:\n%s", o);
    cr_assert(!strstr(o, "step "), "a step ran:\n%s", o);
    cr_assert(!strstr(o, "schedule"), "training was set up before the check:\n%s", o);
    free(o);
    struct stat st;
    cr_assert_eq(stat(file, &st), 0);
    cr_assert(S_ISREG(st.st_mode) && st.st_size == 0, "the blocking file was changed");
    cleanup();
}
