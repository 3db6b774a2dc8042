/* Data parallelism (issue 7): `modsquad train` started as 2 MPI ranks against 1 process with the
 * same global batch (weights, MI statistics, masked losses, SyncBatchNorm, losses, sharded
 * evaluation), the gradient all-reduce overlapped with the backward against after it, `modsquad
 * eval` (metrics, usage, saved predictions) and `modsquad extract` on 2 ranks against 1, a signal
 * that every rank turns into the same checkpoint, ranks that hang or die, and the launcher
 * environment read by kernels/comm.
 *
 * mpirun runs with what a sandbox without a network allows: shared memory only (btl self,vader
 * without the CMA single copy, which needs ptrace rights), more ranks than cores, no binding, root
 * allowed when the tests run as root, one OpenMP thread per rank. */
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/hooks.h>

#include "../../kernels/comm/comm.h"
#include "../../model/safetensors.h"
#include "../testutil.h"

static char dir[128], data[192], pascal[192];

static const char *bin(void) {
    const char *b = getenv("MODSQUAD_BIN");
    return b ? b : "./modsquad";
}

static void need_mpi(void) {
#ifndef MS_HAVE_MPI
    cr_skip_test("this build has no MPI (make found no mpicc, or MPI=0)");
#endif
}

/* The synthetic datasets shared by all the tests of a run, named after the Criterion runner
 * (every test's parent): the first test that needs one writes it into a directory of its own and
 * renames that into place, so that tests running in parallel never read half of one (a test
 * that loses the race drops its copy); the runner removes them when every test is done. */
static void shared_dataset(char *path, size_t cap, const char *kind, const char *synth_args) {
    snprintf(path, cap, "/tmp/ms_mpi_%s_%ld", kind, (long)getppid());
    char marker[256], mine[256], cmd[1024];
    snprintf(marker, sizeof marker, "%s/.complete", path);
    if (access(marker, F_OK) == 0) return;
    snprintf(mine, sizeof mine, "%s.%ld", path, (long)getpid());
    snprintf(cmd, sizeof cmd, "%s synth --out %s %s -q >/dev/null 2>&1 && touch %s/.complete",
             bin(), mine, synth_args, mine);
    cr_assert_eq(system(cmd), 0, "synth failed: %s", cmd);
    if (rename(mine, path) != 0) {
        snprintf(cmd, sizeof cmd, "rm -rf %s", mine);
        cr_assert_eq(system(cmd), 0);
    }
    cr_assert_eq(access(marker, F_OK), 0, "no dataset at %s", path);
}

static void shared_data(void) {
    shared_dataset(data, sizeof data, "data", "--layout taskonomy --count 60 --size 36 --seed 3");
}

/* PASCAL-Context scenes for the conv head: 16 training and 8 validation images. */
static void shared_pascal(void) {
    shared_dataset(pascal, sizeof pascal, "pascal",
                   "--layout pascal --count 24 --size 40 --splits 16,8,0 --seed 3");
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats) {
    (void)stats;
    static const char *kinds[] = {"data", "pascal"};
    for (int i = 0; i < 2; i++) {
        char shared[64];
        snprintf(shared, sizeof shared, "/tmp/ms_mpi_%s_%ld", kinds[i], (long)getpid());
        if (access(shared, F_OK) == 0) tu_tmpdir_remove(shared);
    }
}

static void setup(void) {
    need_mpi();
    tu_tmpdir_make(dir, sizeof dir, "mpi");
    shared_data();
}

static void teardown(void) {
    if (dir[0]) tu_tmpdir_remove(dir);
}

/* A tiny model on 32-pixel images, as tests/cli/test_train.c trains it; drop path on, so that
 * its per-sample masks must follow the sample, not the rank. PLAIN_TASKS are tasks whose loss
 * is a plain mean over the batch (the tests of signals and failures use them); the demo's own
 * tasks include masked pixels (depth_euclidean, normal) and ignored labels (segment_semantic). */
#define TINY                                                                                    \
    "--set data.image_size=32 --set data.resize=36 --set model.patch=8 --set model.dim=32 "      \
    "--set model.depth=2 --set model.heads=2 --set model.attn_experts=4 --set model.attn_topk=2 " \
    "--set model.mlp_experts=4 --set model.mlp_topk=2 --set train.batch_size=4 "                 \
    "--set train.warmup_steps=2 --set eval.batch_size=4 --set model.drop_path=0.1 "            \
    "--set run.progress=off --set run.log_every=1 --set train.checkpoint_every=0 "               \
    "--set train.eval_every=0 "
#define PLAIN_TASKS "--set 'data.tasks=[edge_texture, keypoints2d, segment_unsup2d, class_object]' "

/* The command that runs `modsquad ARGS` on `ranks` ranks (1: no mpirun), output in
 * DIR/NAME.out. */
static void modsquad_cmd(char *cmd, size_t cap, int ranks, const char *name, const char *args) {
    char launch[512] = "";
    if (ranks > 1)
        snprintf(launch, sizeof launch, "mpirun --oversubscribe --bind-to none %s -np %d ",
                 geteuid() == 0 ? "--allow-run-as-root" : "", ranks);
    /* Under SANITIZE=1 the ranks skip the leak check: OpenMPI keeps its own allocations (many
     * from plugins it has unloaded, so no suppression can name them) past MPI_Finalize. The
     * 1-process runs of the same code keep it. */
    snprintf(cmd, cap,
             "OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive OMPI_MCA_btl=self,vader "
             "OMPI_MCA_btl_vader_single_copy_mechanism=none %s exec %s%s %s >%s/%s.out 2>&1",
             ranks > 1 ? "ASAN_OPTIONS=\"$ASAN_OPTIONS:detect_leaks=0\"" : "", launch, bin(), args,
             dir, name);
}

/* The command that trains run `name` of the demo config on the Taskonomy data. */
static void train_cmd(char *cmd, size_t cap, int ranks, const char *name, const char *extra) {
    char args[3072];
    snprintf(args, sizeof args,
             "train configs/demo.yaml " TINY "--set data.root=%s --set run.dir=%s --set run.name=%s %s",
             data, dir, name, extra);
    modsquad_cmd(cmd, cap, ranks, name, args);
}

/* Runs `modsquad ARGS` to the end; returns the exit status. */
static int run(int ranks, const char *name, const char *args) {
    char cmd[4096];
    modsquad_cmd(cmd, sizeof cmd, ranks, name, args);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Runs it to the end; returns the exit status. */
static int train(int ranks, const char *name, const char *extra) {
    char cmd[4096];
    train_cmd(cmd, sizeof cmd, ranks, name, extra);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Starts it in the background; returns the pid of mpirun itself (the shell execs it). */
static pid_t start(int ranks, const char *name, const char *extra) {
    char cmd[4096];
    train_cmd(cmd, sizeof cmd, ranks, name, extra);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static int file_has(const char *path, const char *text) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) found = strstr(line, text) != NULL;
    fclose(f);
    return found;
}

/* Waits until run `name` has logged its first step (rank 0 writes the log). */
static void wait_first_step(const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s/log.jsonl", dir, name);
    for (int i = 0; i < 1500 && !file_has(path, "\"kind\":\"step\""); i++) usleep(20000);
    cr_assert(file_has(path, "\"kind\":\"step\""), "%s never logged a step", name);
}

/* The child of mpirun that is rank `rank` (OpenMPI puts OMPI_COMM_WORLD_RANK in its
 * environment). */
static pid_t rank_pid(pid_t launcher, int rank) {
    char want[64];
    int wlen = snprintf(want, sizeof want, "OMPI_COMM_WORLD_RANK=%d", rank) + 1; /* with the NUL */
    DIR *d = opendir("/proc");
    cr_assert_not_null(d);
    struct dirent *e;
    pid_t found = -1;
    while (found < 0 && (e = readdir(d))) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0) continue;
        char path[64], buf[1 << 16];
        snprintf(path, sizeof path, "/proc/%ld/stat", pid);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        const char *paren = strrchr(buf, ')'); /* the command name may hold spaces */
        long ppid = -1;
        if (!paren || sscanf(paren + 1, " %*c %ld", &ppid) != 1 || ppid != launcher) continue;
        snprintf(path, sizeof path, "/proc/%ld/environ", pid);
        if (!(f = fopen(path, "r"))) continue;
        n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        for (size_t i = 0; i + (size_t)wlen <= n; i += strlen(buf + i) + 1)
            if (memcmp(buf + i, want, (size_t)wlen) == 0) found = (pid_t)pid;
    }
    closedir(d);
    cr_assert(found > 0, "no rank %d under mpirun (pid %d)", rank, (int)launcher);
    return found;
}

/* waitpid with a limit: the exit status (128 + signal when killed), or -1 after `limit` s. */
static int wait_exit(pid_t pid, double limit, double *took) {
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        clock_gettime(CLOCK_MONOTONIC, &t);
        *took = (double)(t.tv_sec - t0.tv_sec) + 1e-9 * (double)(t.tv_nsec - t0.tv_nsec);
        if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (*took > limit) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        usleep(20000);
    }
}

/* ---- weights and logs -------------------------------------------------------------------- */

/* Every tensor of two checkpoints within tol of the larger magnitude of the first (tol 0:
 * bit-identical). */
static void expect_weights(const char *run_a, const char *run_b, double tol) {
    char a[512], b[512], err[512];
    snprintf(a, sizeof a, "%s/%s/last.safetensors", dir, run_a);
    snprintf(b, sizeof b, "%s/%s/last.safetensors", dir, run_b);
    ms_st_file fa, fb;
    cr_assert_eq(ms_safetensors_read(a, &fa, err, sizeof err), 0, "%s", err);
    cr_assert_eq(ms_safetensors_read(b, &fb, err, sizeof err), 0, "%s", err);
    cr_assert_eq(fa.n, fb.n);
    for (int i = 0; i < fa.n; i++) {
        const ms_st_tensor *ta = &fa.t[i], *tb = &fb.t[i];
        cr_assert_str_eq(ta->name, tb->name);
        cr_assert_eq(ta->end - ta->begin, tb->end - tb->begin);
        size_t n = (ta->end - ta->begin) / sizeof(float);
        const float *x = (const float *)(fa.data + ta->begin), *y = (const float *)(fb.data + tb->begin);
        if (tol == 0) {
            cr_assert_eq(memcmp(x, y, n * sizeof(float)), 0, "%s differs between %s and %s", ta->name, a, b);
            continue;
        }
        double scale = 1e-3, worst = 0;
        for (size_t k = 0; k < n; k++) scale = fmax(scale, fabs(x[k]));
        for (size_t k = 0; k < n; k++) worst = fmax(worst, fabs((double)x[k] - y[k]));
        cr_assert(worst <= tol * scale, "%s: %s and %s differ by %g (scale %g, tolerance %g)",
                  ta->name, run_a, run_b, worst, scale, tol * scale);
    }
    ms_safetensors_free(&fa);
    ms_safetensors_free(&fb);
}

/* `key`'s value in each step record of run `name`'s log; returns how many. */
static int step_values(const char *name, const char *key, double *out, int cap) {
    char path[512], line[8192], pat[64];
    snprintf(path, sizeof path, "%s/%s/log.jsonl", dir, name);
    snprintf(pat, sizeof pat, "\"%s\":", key);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "no log %s", path);
    int n = 0;
    while (n < cap && fgets(line, sizeof line, f)) {
        if (!strstr(line, "\"kind\":\"step\"")) continue;
        const char *p = strstr(line, pat);
        cr_assert_not_null(p, "a step of %s has no %s", path, key);
        out[n++] = strtod(p + strlen(pat), NULL);
    }
    fclose(f);
    return n;
}

static void expect_logs_close(const char *a, const char *b, const char *key, double rel) {
    double va[64], vb[64];
    int na = step_values(a, key, va, 64), nb = step_values(b, key, vb, 64);
    cr_assert(na > 0 && na == nb, "%s has %d steps, %s %d", a, na, b, nb);
    for (int i = 0; i < na; i++)
        cr_assert(fabs(va[i] - vb[i]) <= rel * fabs(va[i]) + 1e-12,
                  "step %d: %s %.9g in %s, %.9g in %s", i, key, va[i], a, vb[i], b);
}

/* The last evaluation record of run `name`'s log into buf. */
static void last_eval(const char *name, char *buf, size_t cap) {
    char path[512], line[1 << 15];
    snprintf(path, sizeof path, "%s/%s/log.jsonl", dir, name);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "no log %s", path);
    buf[0] = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "\"kind\":\"eval\"")) snprintf(buf, cap, "%s", strstr(line, "\"metrics\""));
    fclose(f);
    cr_assert(buf[0], "%s logged no evaluation", name);
}

/* Two metrics texts: the same names in the same order, every number within rel. */
static void expect_metrics_close(const char *a, const char *b, double rel) {
    int values = 0;
    while (*a && *b) {
        if ((*a == '-' || (*a >= '0' && *a <= '9')) && a[-1] != '"' && a[-1] != '_') {
            char *ea, *eb;
            double x = strtod(a, &ea), y = strtod(b, &eb);
            cr_assert(eb != b, "the metrics differ in shape at ...%.40s", a);
            cr_assert(fabs(x - y) <= rel * fabs(x) + 1e-12, "%.17g against %.17g at ...%.60s", x, y, a);
            a = ea, b = eb, values++;
            continue;
        }
        cr_assert_eq(*a, *b, "the metrics differ in shape at ...%.40s", a);
        a++, b++;
    }
    cr_assert(values > 10, "only %d numbers compared", values);
}

/* ---- the tests ------------------------------------------------------------------------------ */

TestSuite(mpi, .init = setup, .fini = teardown, .timeout = 120);

/* 2 ranks with half of every global batch each train the weights 1 process trains on the whole
 * batch: the gradients averaged, the MI statistics summed before the MI loss, the losses
 * reduced. Two micro-steps per step check the averaging over both. The demo's tasks include
 * masked pixels and ignored labels, whose counts differ between the ranks' halves: each rank's
 * loss is scaled by its share of the global count (model/heads.h ms_heads_share_counts).
 * Measured on the development machine: weights within 4e-7 of the largest value of their
 * tensor, losses and gradient norms within 6e-8 relative (without the scaling the weights
 * differ by 1.4e-2). */
Test(mpi, two_ranks_train_like_one_process) {
    const char *extra = "--set train.steps=6 --set train.accum_steps=2 --set eval.max_images=8";
    cr_assert_eq(train(1, "one", extra), 0, "see %s/one.out", dir);
    cr_assert_eq(train(2, "two", extra), 0, "see %s/two.out", dir);
    expect_weights("one", "two", 2e-6);
    /* The MI loss is computed from the summed statistics: without the sum each rank would see
     * half the batch and the value would differ in the second digit. */
    expect_logs_close("one", "two", "mi_loss", 1e-4);
    expect_logs_close("one", "two", "loss", 1e-6);
    expect_logs_close("one", "two", "grad_norm", 1e-6);
    expect_logs_close("one", "two", "depth_euclidean", 1e-6); /* masked pixels */
    expect_logs_close("one", "two", "segment_semantic", 1e-6); /* ignored labels */
    char out[512];
    snprintf(out, sizeof out, "%s/two.out", dir);
    cr_assert(file_has(out, "ranks      2 (mpi)"), "%s does not say it ran on 2 ranks", out);
}

/* The gradient all-reduce overlapped with the backward (the default: each bucket starts as soon
 * as the backward has finished its layers) sums the same buckets as the all-reduce after the
 * backward (MODSQUAD_OVERLAP=0), so the weights and logs are identical, bit for bit. A bucket
 * started before its gradients were final, or a range summed twice or never, would show here.
 * Two micro-batches per step: only the last one's backward starts buckets. */
Test(mpi, overlapped_gradient_all_reduce_changes_no_bit) {
    const char *extra = "--set train.steps=4 --set train.accum_steps=2 --set eval.max_images=8";
    cr_assert_eq(train(2, "ovl", extra), 0, "see %s/ovl.out", dir);
    setenv("MODSQUAD_OVERLAP", "0", 1);
    int rc = train(2, "seq", extra);
    setenv("MODSQUAD_OVERLAP", "yes", 1);
    int bad = train(1, "bad", extra);
    unsetenv("MODSQUAD_OVERLAP");
    cr_assert_eq(rc, 0, "see %s/seq.out", dir);
    char out[512];
    snprintf(out, sizeof out, "%s/ovl.out", dir);
    cr_assert(file_has(out, "overlapped with the backward"), "%s did not overlap", out);
    snprintf(out, sizeof out, "%s/seq.out", dir);
    cr_assert(file_has(out, "after the backward"), "%s overlapped with MODSQUAD_OVERLAP=0", out);
    expect_weights("ovl", "seq", 0);
    expect_logs_close("ovl", "seq", "loss", 0);
    expect_logs_close("ovl", "seq", "grad_norm", 0);
    cr_assert_eq(bad, 2, "MODSQUAD_OVERLAP=yes should be a usage error");
    snprintf(out, sizeof out, "%s/bad.out", dir);
    cr_assert(file_has(out, "MODSQUAD_OVERLAP must be 0"), "see %s", out);
}

/* The PASCAL-Context conv head on 2 ranks of 2 images each: its BatchNorm normalises with the
 * global batch's statistics and back-propagates through them (SyncBatchNorm), and the losses
 * average over data-dependent counts (CE ignoring 255 for semseg and human parts, balanced BCE
 * with the batch's own weight for saliency, normals over valid pixels). Measured: weights
 * within 2e-5 to 1.0e-4 of each tensor's scale depending on the machine (the conv biases in
 * front of a BatchNorm have a gradient that is zero up to rounding, which AdamW turns into
 * steps of either sign, and those spread), hence 1e-3; losses within 2e-7; with each rank's own
 * batch statistics the weights differ by more than 100%. */
Test(mpi, conv_head_batchnorm_is_synchronised) {
    shared_pascal();
    char extra[1024];
    snprintf(extra, sizeof extra,
             "--set data.root=%s --set data.dataset=pascal_context --set data.train_split=train "
             "--set data.val_split=val --set eval.split=val "
             "--set 'data.tasks=[semseg, human_parts, sal, normals, edge]' --set model.head=conv "
             "--set model.head_channels=8 --set train.steps=6 --set train.accum_steps=2 "
             "--set eval.max_images=8",
             pascal);
    cr_assert_eq(train(1, "conv1", extra), 0, "see %s/conv1.out", dir);
    cr_assert_eq(train(2, "conv2", extra), 0, "see %s/conv2.out", dir);
    expect_weights("conv1", "conv2", 1e-3);
    expect_logs_close("conv1", "conv2", "loss", 1e-6);
    expect_logs_close("conv1", "conv2", "grad_norm", 1e-4);
    expect_logs_close("conv1", "conv2", "sal", 1e-6);
    expect_logs_close("conv1", "conv2", "semseg", 1e-6);
}

/* The same weights evaluated by 1 and by 2 ranks give the same metrics, all tasks of the demo
 * (masked pixels, ignored labels, classification). The validation split has 5 images, so the
 * second global batch leaves rank 1 nothing: it must still take part. Training to the last step
 * and resuming there makes `train` evaluate without training, on 1 rank and on 2 (every rank
 * loading the checkpoint). */
Test(mpi, sharded_evaluation_equals_one_process) {
    cr_assert_eq(train(1, "ev1", "--set train.steps=2 --set eval.max_images=0"), 0, "see %s/ev1.out", dir);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cp -r %s/ev1 %s/ev2", dir, dir);
    cr_assert_eq(system(cmd), 0);
    cr_assert_eq(train(1, "ev1", "--set train.steps=2 --set eval.max_images=0 --resume auto"), 0);
    cr_assert_eq(train(2, "ev2", "--set train.steps=2 --set eval.max_images=0 --resume auto"), 0,
                 "see %s/ev2.out", dir);
    static char a[1 << 15], b[1 << 15];
    last_eval("ev1", a, sizeof a);
    last_eval("ev2", b, sizeof b);
    expect_metrics_close(a, b, 1e-9);
    expect_weights("ev1", "ev2", 0);
}

/* ---- eval and extract ---------------------------------------------------------------------- */

/* The bytes of a file (NUL-terminated, *len without it); free() it. */
static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot read %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    cr_assert_not_null(buf);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    buf[n] = 0;
    if (len) *len = (size_t)n;
    return buf;
}

static void expect_same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = slurp(a, &na), *y = slurp(b, &nb);
    cr_assert(na == nb && memcmp(x, y, na) == 0, "%s and %s differ", a, b);
    free(x);
    free(y);
}

/* The lines of run `name`'s output from the first that starts with `from` up to (without) the
 * first after it that starts with `to`. */
static void output_part(const char *name, const char *from, const char *to, char *buf, size_t cap) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s.out", dir, name);
    char *text = slurp(path, NULL), *a = strstr(text, from), *b = a ? strstr(a + 1, to) : NULL;
    cr_assert(a && b, "%s has no '%s' ... '%s'", path, from, to);
    snprintf(buf, cap, "%.*s", (int)(b - a), a);
    free(text);
}

/* `modsquad eval` on 2 ranks prints and writes what 1 process does: the metrics (their double
 * sums to rounding), the expert usage and, with --save-predictions, every rank's files in one
 * directory. The validation split has 5 images: with batches of 4 the second global batch gives
 * rank 0 one image (padded) and rank 1 none. The same batch of 4 on 1 process checks the
 * metrics, whose sums run in another order; 1 process with batches of 2 runs the very GEMMs the
 * ranks run (results may differ in the last bit with the rows of a GEMM), so everything it
 * writes must be identical, byte for byte. */
Test(mpi, eval_on_two_ranks_equals_one_process) {
    cr_assert_eq(train(1, "evck", "--set train.steps=2"), 0, "see %s/evck.out", dir);
    const struct { int ranks, batch; const char *name; } runs[] = {
        {1, 4, "eva"}, {2, 4, "evb"}, {1, 2, "evc"}};
    for (int i = 0; i < 3; i++) {
        char args[2048];
        snprintf(args, sizeof args,
                 "eval --checkpoint %s/evck/last.safetensors --out %s/%s/m.json "
                 "--save-predictions %s/%s/pred --set eval.max_images=0 --set eval.batch_size=%d",
                 dir, dir, runs[i].name, dir, runs[i].name, runs[i].batch);
        cr_assert_eq(run(runs[i].ranks, runs[i].name, args), 0, "see %s/%s.out", dir, runs[i].name);
    }
    char a[4096], b[4096], pa[512], pb[512];
    output_part("eva", "task ", "predictions:", a, sizeof a);
    output_part("evb", "task ", "predictions:", b, sizeof b);
    cr_assert_str_eq(a, b, "the printed metrics differ");
    snprintf(pa, sizeof pa, "%s/evb.out", dir);
    cr_assert(file_has(pa, "ranks: 2 (mpi)"), "%s does not say it ran on 2 ranks", pa);
    cr_assert(file_has(pa, "(25 files,"), "%s: 2 ranks did not save 5 images x 5 tasks", pa);
    snprintf(pa, sizeof pa, "%s/eva/m.json", dir);
    snprintf(pb, sizeof pb, "%s/evb/m.json", dir);
    char *ja = slurp(pa, NULL), *jb = slurp(pb, NULL);
    expect_metrics_close(ja, jb, 1e-9);
    free(ja);
    free(jb);
    snprintf(pa, sizeof pa, "%s/eva/m-usage.csv", dir);
    snprintf(pb, sizeof pb, "%s/evb/m-usage.csv", dir);
    expect_same_file(pa, pb);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "diff -r %s/evc %s/evb >%s/diff.out 2>&1", dir, dir, dir);
    cr_assert_eq(system(cmd), 0, "2 ranks wrote other files than 1 process: see %s/diff.out", dir);
}

/* `modsquad extract` on 2 ranks (the calibration split over them) keeps the experts 1 process
 * keeps and writes the same checkpoint, byte for byte. The 5 calibration images leave a padded
 * last batch, whose copies of an image must not count in the usage. */
Test(mpi, extract_on_two_ranks_equals_one_process) {
    cr_assert_eq(train(1, "xck", "--set train.steps=2"), 0, "see %s/xck.out", dir);
    for (int ranks = 1; ranks <= 2; ranks++) {
        char args[2048], name[16];
        snprintf(name, sizeof name, "x%d", ranks);
        snprintf(args, sizeof args,
                 "extract --task depth_euclidean --checkpoint %s/xck/last.safetensors "
                 "--out %s/x%d.safetensors --json %s/x%d.json --images 0",
                 dir, dir, ranks, dir, ranks);
        cr_assert_eq(run(ranks, name, args), 0, "see %s/%s.out", dir, name);
    }
    char a[8192], b[8192], pa[512], pb[512];
    output_part("x1", "experts kept", "wrote ", a, sizeof a);
    output_part("x2", "experts kept", "wrote ", b, sizeof b);
    cr_assert_str_eq(a, b, "1 process and 2 ranks printed different choices");
    snprintf(pa, sizeof pa, "%s/x1.safetensors", dir);
    snprintf(pb, sizeof pb, "%s/x2.safetensors", dir);
    expect_same_file(pa, pb);
    snprintf(pa, sizeof pa, "%s/x1.json", dir);
    snprintf(pb, sizeof pb, "%s/x2.json", dir);
    char *ja = slurp(pa, NULL), *jb = slurp(pb, NULL);
    cr_assert(strstr(ja, "\"threshold\"") && strstr(jb, "\"threshold\""), "no threshold in %s", pa);
    cr_assert_str_eq(strstr(ja, "\"threshold\""), strstr(jb, "\"threshold\""),
                     "the usage or the kept experts differ between %s and %s", pa, pb);
    free(ja);
    free(jb);
}

/* SIGUSR1 to mpirun (which forwards it, as srun does) stops every rank at the same step S with
 * one checkpoint and status 75; 2 ranks resuming from it to step S + 3 end bit-identical to a run
 * of the same schedule that never stopped before S + 3 (--stop-at). The schedule is 100000 steps
 * long, so the signal always comes before the end, however fast the machine is. */
Test(mpi, signal_checkpoints_and_every_rank_resumes) {
    const char *extra = PLAIN_TASKS "--set train.steps=100000 --set eval.max_images=8";
    pid_t pid = start(2, "sig", extra);
    wait_first_step("sig");
    kill(pid, SIGUSR1);
    double took;
    int code = wait_exit(pid, 60, &took);
    cr_assert_neq(code, -1, "the ranks did not stop after SIGUSR1");
    cr_assert_eq(code, 75, "SIGUSR1 should end in 75 (requeue), got %d: see %s/sig.out", code, dir);
    char out[512];
    snprintf(out, sizeof out, "%s/sig.out", dir);
    char *text = slurp(out, NULL);
    const char *at = strstr(text, "modsquad: stopped by signal");
    at = at ? strstr(at, " after step ") : NULL;
    cr_assert(at, "no stop message in %s", out);
    long stopped = strtol(at + strlen(" after step "), NULL, 10);
    free(text);
    cr_assert(stopped >= 1 && stopped < 100000, "stopped after step %ld", stopped);
    char extra2[768];
    snprintf(extra2, sizeof extra2, "%s --resume auto --stop-at %ld", extra, stopped + 3);
    cr_assert_eq(train(2, "sig", extra2), 0, "see %s/sig.out", dir);
    snprintf(extra2, sizeof extra2, "%s --stop-at %ld", extra, stopped + 3);
    cr_assert_eq(train(2, "full", extra2), 0, "see %s/full.out", dir);
    expect_weights("full", "sig", 0);
}

/* A rank that stops answering (SIGSTOP) makes the other give up at the collective timeout with
 * a message naming it, and the whole job ends non-zero. */
Test(mpi, hung_rank_stops_every_rank_at_the_timeout) {
    pid_t pid = start(2, "hang", PLAIN_TASKS "--set train.steps=100000 --comm-timeout 4");
    wait_first_step("hang");
    pid_t r1 = rank_pid(pid, 1);
    kill(r1, SIGSTOP);
    double took;
    int code = wait_exit(pid, 60, &took);
    kill(r1, SIGKILL); /* in case it is still stopped */
    cr_assert_neq(code, -1, "the job still runs 60 s after rank 1 stopped");
    cr_assert_neq(code, 0);
    cr_assert(took < 30, "the job took %.1f s to stop", took);
    char out[512];
    snprintf(out, sizeof out, "%s/hang.out", dir);
    cr_assert(file_has(out, "did not complete within 4 s: another rank has stopped or hangs"),
              "no timeout message in %s", out);
}

/* A rank killed outright: the launcher and the timeout end the others too. */
Test(mpi, killed_rank_stops_every_rank) {
    pid_t pid = start(2, "kill", PLAIN_TASKS "--set train.steps=100000 --comm-timeout 4");
    wait_first_step("kill");
    kill(rank_pid(pid, 1), SIGKILL);
    double took;
    int code = wait_exit(pid, 60, &took);
    cr_assert_neq(code, -1, "the job still runs 60 s after rank 1 died");
    cr_assert_neq(code, 0);
    cr_assert(took < 30, "the job took %.1f s to stop", took);
}

/* Worlds that cannot work are refused with a reason before any step. */
Test(mpi, impossible_worlds_are_explained) {
    cr_assert_neq(train(3, "odd", "--set train.steps=2"), 0);
    char out[512];
    snprintf(out, sizeof out, "%s/odd.out", dir);
    cr_assert(file_has(out, "must be divisible by the 3 ranks"), "see %s", out);
    cr_assert_neq(train(2, "none", "--set train.steps=2 --set run.comm=none"), 0);
    snprintf(out, sizeof out, "%s/none.out", dir);
    cr_assert(file_has(out, "but run.comm is none"), "see %s", out);
    cr_assert_neq(train(2, "nccl", "--set train.steps=2 --set run.comm=nccl --set run.device=cpu"), 0);
    snprintf(out, sizeof out, "%s/nccl.out", dir);
    cr_assert(file_has(out, "run.comm 'nccl'"), "see %s", out);
}

/* ---- the launcher's environment (kernels/comm/comm_env.c) ---------------------------------- */

static void clear_launcher_env(void) {
    static const char *vars[] = {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                                 "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE",
                                 "PMIX_RANK", "PMIX_NAMESPACE", "PMI_RANK", "PMI_SIZE",
                                 "MPI_LOCALRANKID", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS",
                                 "SLURM_LOCALID", "SLURM_NODEID", "SLURM_STEP_TASKS_PER_NODE",
                                 "SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_RESTART_COUNT",
                                 "SLURM_NTASKS"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) unsetenv(vars[i]);
}

Test(comm_env, no_launcher_is_one_rank) {
    clear_launcher_env();
    setenv("SLURM_NTASKS", "4", 1); /* the batch script itself: still one process */
    ms_comm_env e;
    ms_comm_env_detect(&e);
    cr_assert_eq(e.rank, 0);
    cr_assert_eq(e.world, 1);
    cr_assert_eq(e.mpi, 0);
    cr_assert_str_eq(e.launcher, "none");
}

Test(comm_env, openmpi) {
    clear_launcher_env();
    setenv("OMPI_COMM_WORLD_RANK", "5", 1);
    setenv("OMPI_COMM_WORLD_SIZE", "8", 1);
    setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1", 1);
    setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "4", 1);
    ms_comm_env e;
    ms_comm_env_detect(&e);
    cr_assert(e.rank == 5 && e.world == 8 && e.local_rank == 1 && e.local_world == 4 && e.mpi);
    cr_assert_str_eq(e.launcher, "OpenMPI");
}

Test(comm_env, srun_without_mpi) {
    clear_launcher_env();
    setenv("SLURM_PROCID", "6", 1);
    setenv("SLURM_STEP_NUM_TASKS", "7", 1);
    setenv("SLURM_LOCALID", "0", 1);
    setenv("SLURM_NODEID", "3", 1);
    setenv("SLURM_STEP_TASKS_PER_NODE", "2(x3),1", 1);
    setenv("SLURM_JOB_ID", "1234", 1);
    setenv("SLURM_STEP_ID", "0", 1);
    setenv("SLURM_RESTART_COUNT", "2", 1);
    ms_comm_env e;
    ms_comm_env_detect(&e);
    cr_assert(e.rank == 6 && e.world == 7 && e.local_rank == 0 && !e.mpi);
    cr_assert_eq(e.local_world, 1, "node 3 of 2(x3),1 runs 1 task, not %d", e.local_world);
    cr_assert_str_eq(e.launcher, "SLURM");
    cr_assert_str_eq(e.job, "slurm-1234.0.2");
}

Test(comm_env, pmix_and_pmi) {
    clear_launcher_env();
    setenv("PMIX_RANK", "2", 1);
    setenv("SLURM_STEP_NUM_TASKS", "4", 1);
    setenv("SLURM_LOCALID", "2", 1);
    ms_comm_env e;
    ms_comm_env_detect(&e);
    cr_assert(e.rank == 2 && e.world == 4 && e.local_rank == 2 && e.mpi);
    cr_assert_str_eq(e.launcher, "PMIx");
    clear_launcher_env();
    setenv("PMI_RANK", "3", 1);
    setenv("PMI_SIZE", "4", 1);
    setenv("MPI_LOCALRANKID", "1", 1);
    ms_comm_env_detect(&e);
    cr_assert(e.rank == 3 && e.world == 4 && e.local_rank == 1 && e.mpi);
    /* A rank outside the world is no launch at all. */
    setenv("PMI_RANK", "4", 1);
    ms_comm_env_detect(&e);
    cr_assert(e.rank == 0 && e.world == 1);
}

/* ---- the single-process world (kernels/comm/comm.c, comm_none.c) ---------------------------- */

Test(comm, one_process_world) {
    ms_comm_env e;
    clear_launcher_env();
    ms_comm_env_detect(&e);
    char err[512];
    ms_world_opts o = {MS_WORLD_AUTO, 10, NULL};
    ms_world *w = ms_world_open(&o, &e, NULL, err, sizeof err);
    cr_assert_not_null(w, "%s", err);
    cr_assert_str_eq(w->name, "none");
    cr_assert(w->rank == 0 && w->size == 1);
    double x[3] = {1, 2, 3};
    cr_assert_eq(ms_world_allreduce(w, x, 3, MS_COMM_F64, MS_COMM_SUM, "a test"), 0);
    cr_assert(x[0] == 1 && x[1] == 2 && x[2] == 3);
    float g[5] = {2, 4, 6, 8, 10};
    ms_grad_sync *gs = ms_grad_sync_create(w, 1);
    cr_assert_not(ms_grad_sync_overlaps(gs), "one process has nothing to overlap");
    ms_grad_sync_arm(gs, g, 5);
    ms_grad_sync_ready(gs, 0, 5);
    cr_assert_eq(ms_grad_sync_finish(gs, 0.5f), 0);
    cr_assert(g[0] == 1 && g[4] == 5, "the gradients were not scaled");
    ms_grad_sync_destroy(gs);
    cr_assert_eq(ms_world_same(w, 42, "a test"), 1);
    ms_world_close(w);
    /* NCCL needs a GPU backend, whatever the build. */
    o.kind = MS_WORLD_NCCL;
    cr_assert_null(ms_world_open(&o, &e, NULL, err, sizeof err));
    cr_assert(strstr(err, "nccl"), "%s", err);
    /* A launch of several ranks with collectives switched off is refused. */
    e.world = 2, e.rank = 1;
    o.kind = MS_WORLD_NONE;
    cr_assert_null(ms_world_open(&o, &e, NULL, err, sizeof err));
    cr_assert(strstr(err, "run.comm is none"), "%s", err);
}

/* The gradient buckets: ranges reported in the model's order (the heads at the end of the
 * buffer, the blocks from the last to the first, the task embedding between the blocks and the
 * heads, the embeddings at the start) coalesce while they are adjacent, a bucket closes at
 * ms_grad_bucket_floats (n / 4 here) or when a range does not touch it, and one that grew past
 * it is split in equal pieces. Reports outside an armed backward change nothing. */
Test(comm, gradient_buckets_follow_the_backward) {
    ms_world *w = ms_world_none();
    const size_t n = 100000, K = 1000;
    cr_assert_eq(ms_grad_bucket_floats(n), 25 * K);
    cr_assert_eq(ms_grad_bucket_floats(10), 3);
    cr_assert_eq(ms_grad_bucket_floats((size_t)1 << 40), MS_COMM_BUCKET_FLOATS);
    float *g = malloc(n * sizeof *g);
    for (size_t i = 0; i < n; i++) g[i] = (float)(i % 7);
    ms_grad_sync *gs = ms_grad_sync_create(w, 0);
    ms_grad_sync_ready(gs, 0, n); /* not armed: an earlier micro-batch */
    const size_t ranges[][2] = {{96 * K, 4 * K},  /* heads: alone, the next does not touch it */
                                {72 * K, 22 * K}, /* block 3 */
                                {50 * K, 22 * K}, /* block 2: 44 K in all, two buckets of 22 K */
                                {28 * K, 22 * K}, /* block 1 */
                                {6 * K, 22 * K},  /* block 0: two more */
                                {94 * K, 2 * K},  /* the task embedding: alone */
                                {0, 6 * K}};      /* the embeddings: closed by finish */
    for (int step = 0; step < 2; step++) {
        ms_grad_sync_arm(gs, g, n);
        for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++)
            ms_grad_sync_ready(gs, ranges[r][0], ranges[r][1]);
        cr_assert_eq(ms_grad_sync_finish(gs, 2.0f), 0);
        int early = -1;
        cr_assert_eq(ms_grad_sync_buckets(gs, &early), 7, "step %d", step);
        cr_assert_eq(early, 0, "nothing starts early without overlap");
    }
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(g[i], (float)(i % 7) * 4.0f, "g[%zu] = %g: scaled once per finish", i, g[i]);
    ms_grad_sync_destroy(gs);
    free(g);
    ms_world_close(w);
}

Test(comm, hash_tells_replicas_apart) {
    float a[33], b[33];
    for (int i = 0; i < 33; i++) a[i] = b[i] = (float)i * 0.25f;
    uint64_t ha = ms_comm_hash(a, sizeof a, MS_COMM_HASH_SEED);
    cr_assert_eq(ha, ms_comm_hash(b, sizeof b, MS_COMM_HASH_SEED));
    b[32] = nextafterf(b[32], 100.0f); /* the last bit of the tail */
    cr_assert_neq(ha, ms_comm_hash(b, sizeof b, MS_COMM_HASH_SEED));
    b[32] = a[32], b[0] = nextafterf(b[0], 1.0f);
    cr_assert_neq(ha, ms_comm_hash(b, sizeof b, MS_COMM_HASH_SEED));
}
