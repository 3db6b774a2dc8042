/* modsquad train / eval end to end on a tiny synthetic dataset: exact resume (2n steps versus
 * n + resume + n), SIGTERM leaving a checkpoint that resumes exactly, a corrupt newest
 * checkpoint skipped by --resume auto, a config/checkpoint mismatch named, and eval output. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../model/safetensors.h"
#include "../testutil.h"

static char dir[64], data[128];

static const char *bin(void) {
    const char *b = getenv("MODSQUAD_BIN");
    return b ? b : "./modsquad";
}

/* A small dataset and a tiny model: a few seconds for a dozen steps. */
#define TINY                                                                                    \
    "--set data.image_size=32 --set data.resize=36 --set model.patch=8 --set model.dim=32 "      \
    "--set model.depth=2 --set model.heads=2 --set model.attn_experts=4 --set model.attn_topk=2 " \
    "--set model.mlp_experts=4 --set model.mlp_topk=2 --set train.batch_size=4 "                 \
    "--set train.warmup_steps=2 --set eval.batch_size=4 --set eval.max_images=8 "              \
    "--set run.progress=off --set train.checkpoint_every=0 --set train.eval_every=0 "

static void setup(void) {
    snprintf(dir, sizeof dir, "/tmp/ms_train_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(data, sizeof data, "%s/data", dir);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s synth --out %s --layout taskonomy --count 60 --size 36 --seed 3 -q >/dev/null 2>&1", bin(), data);
    cr_assert_eq(system(cmd), 0, "synth failed: %s", cmd);
}

/* Runs `modsquad train` for run `name` with extra arguments; returns the exit status. */
static int train(const char *name, const char *extra) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "%s train configs/demo.yaml " TINY "--set data.root=%s --set run.dir=%s --set run.name=%s %s >%s/%s.out 2>&1",
             bin(), data, dir, name, extra, dir, name);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
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

static void expect_same_weights(const char *run_a, const char *run_b) {
    char a[256], b[256];
    snprintf(a, sizeof a, "%s/%s/last.safetensors", dir, run_a);
    snprintf(b, sizeof b, "%s/%s/last.safetensors", dir, run_b);
    size_t na, nb;
    float *wa = weights(a, &na), *wb = weights(b, &nb);
    cr_assert_eq(na, nb);
    cr_assert_eq(memcmp(wa, wb, na * sizeof(float)), 0, "%s and %s differ", a, b);
    free(wa), free(wb);
}

Test(train, resume_is_bit_identical, .init = setup, .timeout = 300) {
    cr_assert_eq(train("full", "--set train.steps=8"), 0);
    cr_assert_eq(train("split", "--set train.steps=8 --stop-at 4"), 0);
    cr_assert_eq(train("split", "--set train.steps=8 --resume auto"), 0);
    expect_same_weights("full", "split");
    /* The resumed run said where it came from. */
    char path[256], line[512];
    snprintf(path, sizeof path, "%s/split.out", dir);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    int found = 0;
    while (fgets(line, sizeof line, f)) found |= strstr(line, "resumed from") != NULL;
    fclose(f);
    cr_assert(found, "the resumed run does not report its checkpoint");
}

/* SIGTERM after the first logged step: a checkpoint of step S, exit 75, and resuming to S + 3
 * equals a run of the same schedule stopped at S + 3 (--stop-at). The schedule is 100000 steps
 * long so that the signal always arrives before the end, however fast the machine is. */
Test(train, sigterm_checkpoints_and_resumes_exactly, .init = setup, .timeout = 300) {
    const char *sched = "--set train.steps=100000";
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "exec %s train configs/demo.yaml " TINY "--set data.root=%s --set run.dir=%s "
             "--set run.name=sig %s >%s/sig.out 2>&1",
             bin(), data, dir, sched, dir);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    /* Wait for the first logged step, then ask it to stop. */
    char log[256];
    snprintf(log, sizeof log, "%s/sig/log.jsonl", dir);
    for (int i = 0; i < 600; i++) {
        FILE *f = fopen(log, "r");
        long size = 0;
        if (f) {
            fseek(f, 0, SEEK_END);
            size = ftell(f);
            fclose(f);
        }
        if (size > 0) break;
        usleep(20000);
    }
    kill(pid, SIGTERM);
    int st;
    waitpid(pid, &st, 0);
    cr_assert(WIFEXITED(st), "the run did not exit cleanly");
    cr_assert_eq(WEXITSTATUS(st), 75, "SIGTERM should exit with 75 (requeue), got %d",
                 WEXITSTATUS(st));
    char out[256], line[1024], extra[256];
    snprintf(out, sizeof out, "%s/sig.out", dir);
    FILE *f = fopen(out, "r");
    cr_assert(f, "no %s", out);
    long stopped = -1;
    while (fgets(line, sizeof line, f)) {
        const char *at = strstr(line, "modsquad: stopped by signal");
        at = at ? strstr(at, " after step ") : NULL;
        if (at) stopped = strtol(at + strlen(" after step "), NULL, 10);
    }
    fclose(f);
    cr_assert(stopped >= 1 && stopped < 100000, "no stop message with its step in %s", out);
    snprintf(extra, sizeof extra, "%s --resume auto --stop-at %ld", sched, stopped + 3);
    cr_assert_eq(train("sig", extra), 0);
    snprintf(extra, sizeof extra, "%s --stop-at %ld", sched, stopped + 3);
    cr_assert_eq(train("full", extra), 0);
    expect_same_weights("full", "sig");
}

Test(train, corrupt_newest_checkpoint_is_skipped, .init = setup, .timeout = 300) {
    cr_assert_eq(train("full", "--set train.steps=6"), 0);
    cr_assert_eq(train("c", "--set train.steps=6 --set train.checkpoint_every=2 --stop-at 4"), 0);
    /* Cut the step-4 weights short: --resume auto must fall back to step 2. */
    char p[256];
    snprintf(p, sizeof p, "%s/c/ckpt-00000004.safetensors", dir);
    cr_assert_eq(truncate(p, 200), 0);
    cr_assert_eq(train("c", "--set train.steps=6 --set train.checkpoint_every=2 --resume auto"), 0);
    char out[256], line[1024];
    snprintf(out, sizeof out, "%s/c.out", dir);
    FILE *f = fopen(out, "r");
    int warned = 0, resumed2 = 0;
    while (fgets(line, sizeof line, f)) {
        warned |= strstr(line, "skipping checkpoint step 4") != NULL;
        resumed2 |= strstr(line, "(step 2)") != NULL;
    }
    fclose(f);
    cr_assert(warned && resumed2, "expected a warning about step 4 and a resume from step 2");
    expect_same_weights("full", "c");
}

Test(train, checkpoint_of_another_config_is_named, .init = setup, .timeout = 120) {
    cr_assert_eq(train("a", "--set train.steps=2"), 0);
    cr_assert_eq(train("a", "--set train.steps=4 --set model.dim=48 --resume auto"), 1);
    char out[256], line[1024];
    snprintf(out, sizeof out, "%s/a.out", dir);
    FILE *f = fopen(out, "r");
    int named = 0;
    while (fgets(line, sizeof line, f)) named |= strstr(line, "another model or data config") != NULL;
    fclose(f);
    cr_assert(named, "the mismatch is not explained");
}

Test(train, eval_writes_metrics_and_usage, .init = setup, .timeout = 120) {
    /* Tasks whose metrics cannot be 0 after two steps (Delta_m divides by the baseline). */
    cr_assert_eq(train("e", "--set train.steps=2 --set 'data.tasks=[depth_euclidean, normal]'"), 0);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s eval --checkpoint %s/e/last.safetensors --out %s/m.json >%s/eval.out 2>&1",
             bin(), dir, dir, dir);
    cr_assert_eq(system(cmd), 0, "eval failed: see %s/eval.out", dir);
    char p[256];
    snprintf(p, sizeof p, "%s/m.json", dir);
    cr_assert_eq(access(p, F_OK), 0);
    snprintf(p, sizeof p, "%s/m-usage.csv", dir);
    cr_assert_eq(access(p, F_OK), 0);
    snprintf(p, sizeof p, "%s/m-usage.png", dir);
    cr_assert_eq(access(p, F_OK), 0);
    /* Delta_m of a model against itself is 0. */
    snprintf(cmd, sizeof cmd, "%s eval --checkpoint %s/e/last.safetensors --out %s/m2.json --baseline %s/m.json 2>&1 | grep -q 'Delta_m against .*: +0.00%%'",
             bin(), dir, dir, dir);
    cr_assert_eq(system(cmd), 0, "Delta_m against itself is not 0");
}

/* The shortened demo: the trained model beats the initial one on every task. */
Test(train, short_demo_improves_every_task, .timeout = 600) {
    char tmp[64];
    snprintf(tmp, sizeof tmp, "/tmp/ms_demo_XXXXXX");
    cr_assert_not_null(mkdtemp(tmp));
    char cmd[512];
    snprintf(cmd, sizeof cmd, "DEMO_STEPS=150 DEMO_DIR=%s bash scripts/demo.sh >%s/demo.out 2>&1", tmp, tmp);
    int st = system(cmd);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "the shortened demo failed or did not improve every task: see %s/demo.out", tmp);
}
