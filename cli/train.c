/* modsquad train CONFIG [--set key=value ...] [--resume auto|PATH]
 *
 * The training loop of METHOD.md section 6: every step runs all T task passes of
 * train.accum_steps micro-batches, then one AdamW step on the warmup + half-cosine schedule.
 * Checkpoints (weights + training state) every train.checkpoint_every steps and at the end;
 * SIGTERM / SIGINT / SIGUSR1 finish the step, checkpoint and exit with MS_EXIT_REQUEUE;
 * non-finite losses or gradients skip the step, and train.max_bad_steps of them in a row stop
 * the run (the last good checkpoint stays). On the CPU a resumed run is bit-identical to one
 * that never stopped: everything random is keyed by (seed, step), the loader position, the
 * optimizer moments and the BatchNorm statistics are all in the checkpoint.
 *
 * Data parallelism (docs/parallel.md): started as several ranks (mpirun, srun), each rank runs
 * train.batch_size / ranks images of every global batch; the MI statistics, the masked losses'
 * counts and the BatchNorm statistics are summed over the ranks inside the forward (model
 * hooks), the gradients averaged in a few large buckets that start while the last
 * micro-batch's backward still runs (ms_grad_sync; MODSQUAD_OVERLAP=0 starts them after it),
 * and the losses reduced with one small collective per step, which also carries the stop
 * signals so that every rank checkpoints at the same step. Only rank 0 writes the log,
 * config.yaml and the checkpoints; every rank resumes from the one checkpoint rank 0 picks. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../data/loader.h"
#include "../kernels/comm/comm.h"
#include "../kernels/util.h"
#include "../model/checkpoint.h"
#include "../model/optim.h"
#include "../model/tasks.h"
#include "commands.h"
#include "run.h"
#include "runlog.h"
#include "signals.h"

#define MAX_SETS 64

static void usage(FILE *f) {
    fprintf(f,
            "Usage: modsquad train CONFIG [--set key=value ...] [--resume auto|PATH]\n\n"
            "Trains the model of CONFIG (see docs/config.md). The run directory is\n"
            "run.dir/run.name: the resolved config, log.jsonl and checkpoints go there.\n\n"
            "Options:\n"
            "  -s, --set KEY=VALUE  override a config key (repeatable)\n"
            "  -r, --resume WHAT    'auto': continue from the newest complete checkpoint of the\n"
            "                       run directory (start fresh when there is none); or the path\n"
            "                       of a ckpt-STEP.safetensors to continue from\n"
            "      --stop-at STEP   stop after STEP steps (of the full schedule) with a checkpoint,\n"
            "                       e.g. to split a run over scheduler jobs; resume to continue\n"
            "      --comm-timeout S with several ranks: the longest any rank waits for the others\n"
            "                       in a collective before every rank stops (default: the\n"
            "                       MODSQUAD_COMM_TIMEOUT environment variable, else %.0f s)\n"
            "  -h, --help           show this help\n\n"
            "Data parallel: start several ranks with mpirun or srun (docs/parallel.md);\n"
            "train.batch_size is the global batch, split evenly over the ranks. The gradient\n"
            "all-reduce overlaps the backward; MODSQUAD_OVERLAP=0 runs it after the backward\n"
            "(the same sums: the weights are identical).\n\n"
            "Exit status: 0 done, 1 error, 2 usage error, %d stopped by a signal after writing a\n"
            "checkpoint (requeue and run the same command with --resume auto).\n",
            MS_COMM_TIMEOUT_DEFAULT, MS_EXIT_REQUEUE);
}

/* Finds out before training whether the run directory takes files. */
static int check_writable(const char *dir) {
    char probe[4096];
    snprintf(probe, sizeof probe, "%s/.modsquad-write-test.%ld", dir, (long)getpid());
    FILE *f = fopen(probe, "w");
    int ok = f && fputs("ok\n", f) >= 0;
    if (f) ok = (fclose(f) == 0) && ok;
    unlink(probe);
    return ok ? 0 : -1;
}

typedef struct {
    ms_config cfg;
    const char *config_path;
    char run_dir[MS_PATH_MAX + MS_RUN_NAME_MAX + 2];
    ms_backend *be;
    ms_model *model;
    ms_optim opt;
    ms_data *train, *val;
    ms_loader *loader;
    ms_world *world;            /* the ranks (a world of one without data parallelism) */
    ms_grad_sync *grad_sync;    /* the gradient buckets, armed for each step's last backward */
    int B;                      /* images per micro-batch on this rank */
    long steps, warmup, step;   /* total optimizer steps, warmup steps, next step */
    int64_t steps_per_epoch;
    int bad_steps;              /* non-finite steps in a row */
    float *host_params, *host_m, *host_v; /* checkpoint staging [pt->total] */
    /* The step's collective: task losses [T], total, MI, stop requests, summed over the ranks.
     * The BatchNorm running statistics need none: SyncBatchNorm (model/head_conv.c) updates
     * them from the global batch's statistics, the same bits on every rank. [T + 3] */
    double *step_sums;
    int stop_agreed;            /* some rank received a stop signal (several ranks) */
} trainer;

static int is_root(const trainer *tr) { return tr->world->rank == 0; }

/* A collective of the training loop. One that fails has printed why (a rank stopped or hangs);
 * every rank is then stopped, since the others would wait on it. */
static void reduce(trainer *tr, void *x, size_t n, ms_comm_dtype t, ms_comm_op op,
                   const char *what) {
    if (ms_world_allreduce(tr->world, x, n, t, op, what)) ms_world_abort(tr->world, 1);
}

/* The run log lives on rank 0; the other ranks pass NULL. */
static void log_event(ms_runlog *log, long step, const char *kind, const char *msg) {
    if (log) ms_runlog_event(log, step, kind, msg);
}
static void log_break(ms_runlog *log) {
    if (log) ms_runlog_break(log);
}

/* A hash of this rank's weights, optimizer moments and step, downloaded into the staging
 * buffers: equal on every rank while the replicas agree. */
static uint64_t state_hash(trainer *tr) {
    const ms_param_table *pt = ms_model_params(tr->model);
    size_t bytes = pt->total * sizeof(float);
    tr->be->download(tr->be, tr->host_params, ms_model_param_data(tr->model), bytes);
    tr->be->download(tr->be, tr->host_m, tr->opt.m, bytes);
    tr->be->download(tr->be, tr->host_v, tr->opt.v, bytes);
    uint64_t h = ms_comm_hash(tr->host_params, bytes, MS_COMM_HASH_SEED);
    h = ms_comm_hash(tr->host_m, bytes, h);
    h = ms_comm_hash(tr->host_v, bytes, h);
    return ms_comm_hash(&tr->step, sizeof tr->step, h);
}

/* Fails (on every rank) when the ranks' replicas differ: a bug or a rank that resumed from
 * another checkpoint, which must not be saved as if it were the run. */
static int check_replicas(trainer *tr, const char *when) {
    if (tr->world->size == 1) return 0;
    int same = ms_world_same(tr->world, state_hash(tr), "the comparison of the replicas");
    if (same < 0) ms_world_abort(tr->world, 1);
    if (!same && is_root(tr))
        fprintf(stderr, "modsquad: error: %s at step %ld the %d ranks hold different weights or "
                        "optimizer states; refusing to go on (a rank resumed from another "
                        "checkpoint, or a bug: please report it)\n",
                when, tr->step, tr->world->size);
    return same ? 0 : -1;
}

/* Writes the checkpoint pair from the staging buffers (already downloaded). */
static int save_checkpoint_here(trainer *tr, ms_runlog *log) {
    const ms_param_table *pt = ms_model_params(tr->model);
    ms_cli_meta meta;
    ms_cli_meta_make(&meta, &tr->cfg, tr->step);
    ms_loader_pos pos = ms_loader_tell(tr->loader);
    char epoch[32], lstep[32], bad[32];
    snprintf(epoch, sizeof epoch, "%lld", (long long)pos.epoch);
    snprintf(lstep, sizeof lstep, "%lld", (long long)pos.step);
    snprintf(bad, sizeof bad, "%d", tr->bad_steps);
    ms_kv smeta[] = {{"modsquad.step", meta.step},
                     {"modsquad.fingerprint", meta.fingerprint},
                     {"modsquad.loader_epoch", epoch},
                     {"modsquad.loader_step", lstep},
                     {"modsquad.bad_steps", bad}};
    ms_ckpt_array state[] = {{"optimizer.exp_avg", tr->host_m, pt->total},
                             {"optimizer.exp_avg_sq", tr->host_v, pt->total}};
    char err[1024];
    int rc = ms_ckpt_save(tr->run_dir, tr->step, pt, tr->host_params, meta.kv, meta.n, state, 2,
                          smeta, 5, tr->cfg.train.keep_checkpoints, err, sizeof err);
    ms_cli_meta_free(&meta);
    if (rc) {
        ms_runlog_break(log);
        fprintf(stderr, "modsquad: error: checkpoint at step %ld failed: %s\n", tr->step, err);
        return -1;
    }
    char msg[64];
    snprintf(msg, sizeof msg, "step %ld", tr->step);
    ms_runlog_event(log, tr->step, "checkpoint", msg);
    return 0;
}

/* Rank 0 writes; every rank returns its status. */
static int save_checkpoint(trainer *tr, ms_runlog *log) {
    if (tr->world->size > 1) {
        if (check_replicas(tr, "before the checkpoint")) return -1;
        return ms_cli_agree(tr->world, is_root(tr) ? save_checkpoint_here(tr, log) : 0);
    }
    const ms_param_table *pt = ms_model_params(tr->model);
    ms_backend *be = tr->be;
    size_t bytes = pt->total * sizeof(float);
    be->download(be, tr->host_params, ms_model_param_data(tr->model), bytes);
    be->download(be, tr->host_m, tr->opt.m, bytes);
    be->download(be, tr->host_v, tr->opt.v, bytes);
    return save_checkpoint_here(tr, log);
}

static long meta_long(const ms_st_file *f, const char *key, const char *path, int *bad) {
    const char *v = ms_st_meta(f, key);
    char *end;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || *end) {
        fprintf(stderr, "modsquad: error: %s: metadata '%s' is missing or not a number\n", path, key);
        *bad = 1;
    }
    return x;
}

/* Restores weights, optimizer moments, step and loader position from a checkpoint pair. */
static int resume_from(trainer *tr, const char *wpath) {
    char spath[4200], err[1024];
    ms_ckpt_state_path(wpath, spath, sizeof spath);
    const ms_param_table *pt = ms_model_params(tr->model);
    ms_st_file w, s;
    if (ms_safetensors_read(wpath, &w, err, sizeof err)) {
        fprintf(stderr, "modsquad: error: cannot resume: %s\n", err);
        return -1;
    }
    char fp[MS_FINGERPRINT_LEN + 1];
    ms_config_fingerprint(&tr->cfg, fp);
    const char *cfp = ms_st_meta(&w, "modsquad.fingerprint");
    if (!cfp || strcmp(cfp, fp) != 0) {
        fprintf(stderr,
                "modsquad: error: cannot resume from %s: it was trained with another model or "
                "data config (fingerprint %s, this config %s); its config is in the file's "
                "'modsquad.config' metadata\n",
                wpath, cfp ? cfp : "missing", fp);
        ms_safetensors_free(&w);
        return -1;
    }
    int rc = ms_safetensors_load_params(&w, wpath, pt, tr->host_params, err, sizeof err);
    ms_safetensors_free(&w);
    if (rc || ms_safetensors_read(spath, &s, err, sizeof err)) {
        fprintf(stderr, "modsquad: error: cannot resume: %s\n", err);
        return -1;
    }
    int bad = 0;
    tr->step = meta_long(&s, "modsquad.step", spath, &bad);
    ms_loader_pos pos = {meta_long(&s, "modsquad.loader_epoch", spath, &bad),
                         meta_long(&s, "modsquad.loader_step", spath, &bad)};
    tr->bad_steps = (int)meta_long(&s, "modsquad.bad_steps", spath, &bad);
    if (!bad && (ms_st_get_array(&s, spath, "optimizer.exp_avg", tr->host_m, pt->total, err, sizeof err) ||
                 ms_st_get_array(&s, spath, "optimizer.exp_avg_sq", tr->host_v, pt->total, err, sizeof err))) {
        fprintf(stderr, "modsquad: error: cannot resume: %s\n", err);
        bad = 1;
    }
    ms_safetensors_free(&s);
    if (bad) return -1;
    size_t bytes = pt->total * sizeof(float);
    tr->be->upload(tr->be, ms_model_param_data(tr->model), tr->host_params, bytes);
    tr->be->upload(tr->be, tr->opt.m, tr->host_m, bytes);
    tr->be->upload(tr->be, tr->opt.v, tr->host_v, bytes);
    ms_io_err lerr = {0};
    if (ms_loader_seek(tr->loader, pos, &lerr)) {
        fprintf(stderr, "modsquad: error: cannot resume the data loader: %s\n", lerr.msg);
        return -1;
    }
    return 0;
}

static void print_summary(trainer *tr) {
    const ms_config *c = &tr->cfg;
    const int ranks = tr->world->size;
    ms_param_counts pc;
    ms_model_param_counts(tr->model, &pc);
    ms_memory_plan mp = ms_model_memory(tr->model);
    double flops = 0;
    for (int t = 0; t < c->data.tasks.n; t++) flops += ms_model_flops(tr->model, t);
    printf("modsquad train %s\n", tr->config_path);
    printf("  run dir    %s (resolved config in config.yaml, log in log.jsonl)\n", tr->run_dir);
    printf("  device     %s, %d threads%s\n", tr->be->name, tr->be->threads, ranks > 1 ? " per rank" : "");
    if (ranks > 1) {
        const ms_param_table *pt = ms_model_params(tr->model);
        printf("  ranks      %d (%s): %d of each global batch's %d images per rank, "
               "collective timeout %.0f s\n",
               ranks, tr->world->name, tr->B, tr->B * ranks, tr->world->timeout_s);
        printf("             gradients summed in buckets of up to %.1f MB, %s\n",
               ms_grad_bucket_floats(pt->total) * sizeof(float) / 1e6,
               ms_grad_sync_overlaps(tr->grad_sync) ? "overlapped with the backward"
                                                    : "after the backward");
    }
    printf("  data       %s at %s: %s %lld samples, %s %lld samples\n",
           ms_dataset_names[c->data.dataset], c->data.root, c->data.train_split,
           (long long)tr->train->n, c->data.val_split, (long long)(tr->val ? tr->val->n : 0));
    for (int t = 0; t < c->data.tasks.n; t++)
        printf("             %-20s %lld files found, %lld missing\n", c->data.tasks.name[t],
               (long long)tr->train->found[t], (long long)tr->train->missing[t]);
    printf("  model      %s: %.3fM parameters (backbone %.3fM, heads %.3fM)\n",
           ms_arch_names[c->model.arch], pc.total / 1e6, pc.backbone / 1e6, pc.heads / 1e6);
    printf("  compute    %.3f GFLOP forward per step (%d images x %d tasks), ~3x that with backward\n",
           flops * tr->B * ranks * c->train.accum_steps / 1e9, tr->B * ranks * c->train.accum_steps,
           c->data.tasks.n);
    printf("  memory     params %.1f MB, grads %.1f MB, optimizer %.1f MB, activations %.1f MB: %.1f MB%s\n",
           mp.params / 1e6, mp.grads / 1e6, mp.optimizer / 1e6, mp.activations / 1e6, mp.total / 1e6,
           ranks > 1 ? " per rank" : "");
    printf("  schedule   %ld steps (%lld per epoch), warmup %ld, lr %.3g -> %.3g, batch %d x accum %d\n",
           tr->steps, (long long)tr->steps_per_epoch, tr->warmup, c->train.lr, c->train.min_lr,
           tr->B * ranks, c->train.accum_steps);
    fflush(stdout);
}

static int evaluate_and_log(trainer *tr, ms_runlog *log) {
    if (!tr->val) return 0;
    const ms_config *c = &tr->cfg;
    ms_metric_result res[MS_MAX_TASKS];
    if (ms_cli_evaluate_dist(tr->model, tr->be, tr->B, tr->val, c, c->eval.max_images, res, NULL,
                             NULL, NULL, tr->world))
        return -1;
    if (!log) return 0;
    const char *names[MS_MAX_TASKS];
    for (int t = 0; t < c->data.tasks.n; t++) names[t] = c->data.tasks.name[t];
    static char json[1 << 16];
    ms_metrics_json_format(json, sizeof json, c->data.tasks.n, names, res);
    ms_runlog_eval(log, tr->step, c->data.val_split, json);
    ms_runlog_break(log);
    fprintf(stderr, "eval at step %ld on %s:", tr->step, c->data.val_split);
    for (int t = 0; t < c->data.tasks.n; t++)
        fprintf(stderr, "  %s %s %.4g", names[t], res[t].values[0].name, res[t].primary);
    fputc('\n', stderr);
    return 0;
}

/* One optimizer step; returns 0, or 1 when it was skipped as non-finite. */
static int train_step(trainer *tr, ms_runlog *log, ms_batch **batch_io, int *rc) {
    const ms_config *c = &tr->cfg;
    const int T = c->data.tasks.n;
    const int ranks = tr->world->size;
    ms_backend *be = tr->be;
    double t0 = ms_now();
    ms_model_zero_grads(tr->model);
    double task_loss[MS_MAX_TASKS] = {0}, total = 0, mi = 0;
    for (int a = 0; a < c->train.accum_steps; a++) {
        ms_io_err err = {0};
        int got = ms_loader_next(tr->loader, batch_io, &err);
        if (got != 1) {
            fprintf(stderr, "modsquad: error: %s%s\n", got < 0 ? err.msg : "the training data ended",
                    ranks > 1 ? "; stopping every rank" : "");
            /* The other ranks would wait for this one in the next collective. */
            if (ranks > 1) ms_world_abort(tr->world, 1);
            *rc = 1;
            return -1;
        }
        ms_model_forward(tr->model, *batch_io, 1, tr->step * c->train.accum_steps + a);
        /* Only the last micro-batch's backward completes the step's gradients. */
        if (a == c->train.accum_steps - 1)
            ms_grad_sync_arm(tr->grad_sync, ms_model_grad_data(tr->model),
                             ms_model_params(tr->model)->total);
        ms_model_backward(tr->model);
        ms_losses l;
        ms_model_losses(tr->model, &l);
        for (int t = 0; t < T; t++) task_loss[t] += l.task[t] / c->train.accum_steps;
        total += l.total / c->train.accum_steps;
        mi += l.mi / c->train.accum_steps;
    }
    float *grads = ms_model_grad_data(tr->model);
    const ms_param_table *pt = ms_model_params(tr->model);
    /* The mean gradient of the global batch: summed over the ranks (the buckets the backward
     * started, and the rest), divided by ranks x micro-steps (each micro-step's loss is
     * already a mean over its images). */
    float scale = 1.0f / (float)(c->train.accum_steps * ranks);
    if (ms_grad_sync_finish(tr->grad_sync, scale)) ms_world_abort(tr->world, 1);
    if (ranks > 1) {
        /* One small collective: the losses for the log and the skip decision, the stop
         * requests (so that every rank stops at the same step). */
        double *sums = tr->step_sums;
        for (int t = 0; t < T; t++) sums[t] = task_loss[t];
        sums[T] = total, sums[T + 1] = mi, sums[T + 2] = ms_stop_signal ? 1.0 : 0.0;
        reduce(tr, sums, (size_t)T + 3, MS_COMM_F64, MS_COMM_SUM,
               "the all-reduce of the step's losses");
        for (int t = 0; t < T; t++) task_loss[t] = sums[t] / ranks;
        total = sums[T] / ranks, mi = sums[T + 1] / ranks;
        tr->stop_agreed = sums[T + 2] > 0;
    }
    double gnorm = ms_optim_grad_norm(&tr->opt, grads);
    int finite = isfinite(total) && isfinite(gnorm);
    for (int t = 0; t < T; t++) finite = finite && isfinite(task_loss[t]);
    double lr = ms_optim_lr(&tr->opt, tr->step);
    const char *names[MS_MAX_TASKS];
    for (int t = 0; t < T; t++) names[t] = c->data.tasks.name[t];
    if (!finite) {
        /* Every rank decides alike: the losses and gradients were reduced. */
        tr->bad_steps++;
        if (!log) return 1;
        char msg[768];
        int n = snprintf(msg, sizeof msg, "non-finite step skipped:");
        for (int t = 0; t < T && n < (int)sizeof msg; t++)
            if (!isfinite(task_loss[t])) n += snprintf(msg + n, sizeof msg - n, " %s loss %g", names[t], task_loss[t]);
        if (n < (int)sizeof msg) n += snprintf(msg + n, sizeof msg - n, " (total %g, gradient norm %g)", total, gnorm);
        /* Only on a bad step: the first parameter tensor whose gradient is not finite names the
         * layer where it started (the table is in forward order). */
        be->download(be, tr->host_m, grads, pt->total * sizeof(float));
        for (int i = 0; i < pt->n && n < (int)sizeof msg; i++) {
            const float *g = tr->host_m + pt->t[i].offset;
            size_t k = 0;
            while (k < pt->t[i].numel && isfinite(g[k])) k++;
            if (k < pt->t[i].numel) {
                snprintf(msg + n, sizeof msg - n, "; first non-finite gradient in %s", pt->t[i].name);
                break;
            }
        }
        ms_runlog_event(log, tr->step, "skipped_step", msg);
        ms_runlog_break(log);
        ms_warn("step %ld: %s", tr->step, msg);
        return 1;
    }
    tr->bad_steps = 0;
    if (c->train.clip_grad > 0 && gnorm > c->train.clip_grad)
        be->scale_f32(be, grads, (float)(c->train.clip_grad / gnorm), pt->total);
    ms_optim_step(&tr->opt, ms_model_param_data(tr->model), grads, lr, tr->step);
    if (!log) return 0;
    double dt = ms_now() - t0;
    double epoch = (double)tr->step * c->train.accum_steps / (double)tr->steps_per_epoch;
    ms_runlog_step(log, tr->step, epoch, total, T, names, task_loss, mi, lr, gnorm,
                   (double)tr->B * ranks * c->train.accum_steps / dt);
    return 0;
}

/* Rank 0 picks the checkpoint to resume from (--resume auto) and every rank loads it. Returns
 * the agreed status. */
static int resume(trainer *tr, const char *what) {
    char wpath[4096] = "";
    if (strcmp(what, "auto") != 0) {
        snprintf(wpath, sizeof wpath, "%s", what);
    } else if (is_root(tr)) {
        if (ms_ckpt_latest(tr->run_dir, wpath, sizeof wpath) < 0) wpath[0] = 0;
    }
    if (ms_world_broadcast(tr->world, wpath, sizeof wpath, 0, "the broadcast of the checkpoint's path"))
        ms_world_abort(tr->world, 1);
    if (!wpath[0]) {
        if (is_root(tr)) printf("no checkpoint in %s: starting from scratch\n", tr->run_dir);
        return 0;
    }
    if (ms_cli_agree(tr->world, resume_from(tr, wpath))) return -1;
    if (is_root(tr)) printf("resumed from %s (step %ld)\n", wpath, tr->step);
    return 0;
}

/* Everything before the first step, on every rank: data, loader, model, optimizer, resume.
 * Returns the agreed status. */
static int prepare(trainer *tr, const char *resume_what) {
    ms_config *cfg = &tr->cfg;
    const int rank = tr->world->rank, ranks = tr->world->size;
    ms_io_err err = {0};
    ms_data_open_opts dopt = {0};
    int rc = 0;
    if (ms_data_open(&tr->train, cfg, cfg->data.train_split, &dopt, &err) ||
        ms_data_open(&tr->val, cfg, cfg->data.val_split, &dopt, &err)) {
        fprintf(stderr, "modsquad: error: %s\n", err.msg);
        rc = 1;
    }
    ms_loader_opts lo;
    ms_loader_opts_from_config(&lo, cfg, 1, rank, ranks);
    tr->B = lo.batch_size;
    if (!rc && ms_loader_open(&tr->loader, tr->train, cfg, &lo, &err)) {
        fprintf(stderr, "modsquad: error: %s\n", err.msg);
        rc = 1;
    }
    if (!rc) {
        tr->steps_per_epoch = ms_loader_steps_per_epoch(tr->loader) / cfg->train.accum_steps;
        if (tr->steps_per_epoch < 1) {
            fprintf(stderr,
                    "modsquad: error: %s split '%s' has %lld samples, fewer than one step of %d x %d images\n",
                    cfg->data.root, cfg->data.train_split, (long long)tr->train->n, tr->B * ranks,
                    cfg->train.accum_steps);
            rc = 1;
        }
    }
    if (ms_cli_agree(tr->world, rc)) return -1;
    tr->steps = cfg->train.steps ? cfg->train.steps : (long)(cfg->train.epochs * tr->steps_per_epoch);
    tr->warmup = cfg->train.warmup_steps ? cfg->train.warmup_steps
                                         : (long)(cfg->train.warmup_epochs * (double)tr->steps_per_epoch);
    if (tr->warmup >= tr->steps) tr->warmup = tr->steps / 10;

    ms_model_opts mo = {.batch = tr->B, .rank = rank, .grads_ready = ms_grad_sync_ready,
                        .grads_ctx = tr->grad_sync};
    if (ranks > 1) mo.stats_sum = ms_world_sum_hook, mo.stats_ctx = tr->world, mo.world = ranks;
    tr->model = ms_model_create(cfg, tr->be, &mo);
    ms_model_init(tr->model, (uint64_t)cfg->run.seed);
    const ms_param_table *pt = ms_model_params(tr->model);
    rc = ms_optim_create(&tr->opt, tr->be, pt, &cfg->train, tr->warmup, tr->steps) ? 1 : 0;
    if (rc)
        fprintf(stderr, "modsquad: error: out of device memory for the optimizer state (%.1f MB)\n",
                2.0 * pt->total * sizeof(float) / 1e6);
    if (ms_cli_agree(tr->world, rc)) return -1;
    tr->host_params = ms_malloc(pt->total * sizeof(float));
    tr->host_m = ms_malloc(pt->total * sizeof(float));
    tr->host_v = ms_malloc(pt->total * sizeof(float));
    tr->step_sums = ms_malloc(((size_t)cfg->data.tasks.n + 3) * sizeof(double));
    if (resume_what && resume(tr, resume_what)) return -1;
    return check_replicas(tr, "after the start");
}

/* Rank 0 writes the resolved config and opens the log. Returns the agreed status. */
static int open_outputs(trainer *tr, ms_runlog *log) {
    if (!is_root(tr)) return ms_cli_agree(tr->world, 0);
    ms_config *cfg = &tr->cfg;
    char cpath[4096];
    snprintf(cpath, sizeof cpath, "%s/config.yaml", tr->run_dir);
    FILE *f = fopen(cpath, "w");
    if (!f) {
        fprintf(stderr, "modsquad: error: cannot write %s: %s\n", cpath, strerror(errno));
        return ms_cli_agree(tr->world, 1);
    }
    ms_config_print(cfg, f);
    fclose(f);
    print_summary(tr);
    char lerr[1024];
    int progress = cfg->run.progress == MS_PROGRESS_AUTO ? -1 : cfg->run.progress == MS_PROGRESS_ON;
    if (ms_runlog_open(log, tr->run_dir, progress, cfg->run.log_every, tr->steps, tr->step, lerr, sizeof lerr)) {
        fprintf(stderr, "modsquad: error: %s\n", lerr);
        return ms_cli_agree(tr->world, 1);
    }
    if (ms_cli_agree(tr->world, 0)) {
        ms_runlog_close(log);
        return -1;
    }
    return 0;
}

/* The steps from tr->step to the end; returns the exit status. */
static int train_loop(trainer *tr, ms_runlog *log, long stop_at) {
    ms_config *cfg = &tr->cfg;
    const int ranks = tr->world->size;
    int rc = 1;
    ms_batch *batch = NULL;
    while (tr->step < tr->steps) {
        int r = train_step(tr, log, &batch, &rc);
        if (r < 0) return rc;
        if (r == 1 && tr->bad_steps >= cfg->train.max_bad_steps) {
            if (!log) return 1;
            char last[4096];
            long s = ms_ckpt_latest(tr->run_dir, last, sizeof last);
            fprintf(stderr,
                    "modsquad: error: %d steps in a row had non-finite losses or gradients; "
                    "stopping. %s%s\n",
                    tr->bad_steps, s >= 0 ? "The last good checkpoint is " : "No checkpoint was written yet.",
                    s >= 0 ? last : "");
            return 1;
        }
        tr->step++;
        int last = tr->step == tr->steps;
        if (!last && cfg->train.eval_every && tr->step % cfg->train.eval_every == 0 &&
            evaluate_and_log(tr, log))
            return 1;
        if (!last && cfg->train.checkpoint_every && tr->step % cfg->train.checkpoint_every == 0 &&
            save_checkpoint(tr, log))
            return 1;
        if (tr->step == stop_at && !last) {
            if (save_checkpoint(tr, log)) return 1;
            log_break(log);
            if (log) printf("stopped at step %ld as asked (--stop-at); checkpoint in %s\n", tr->step, tr->run_dir);
            return 0;
        }
        /* Several ranks act on the stop requests they agreed on in the step's collective. */
        int stop = ranks > 1 ? tr->stop_agreed : ms_stop_signal != 0;
        if (stop) {
            log_break(log);
            char msg[64];
            if (ms_stop_signal) snprintf(msg, sizeof msg, "signal %d", (int)ms_stop_signal);
            else snprintf(msg, sizeof msg, "signal on another rank");
            log_event(log, tr->step, "signal", msg);
            if (save_checkpoint(tr, log)) return 1;
            if (log)
                fprintf(stderr, "modsquad: stopped by %s after step %ld; checkpoint written to %s. "
                                "Run the same command with --resume auto to continue.\n",
                        msg, tr->step, tr->run_dir);
            return MS_EXIT_REQUEUE;
        }
    }
    if (save_checkpoint(tr, log) || evaluate_and_log(tr, log)) return 1;
    if (log) printf("done: %ld steps; weights in %s/last.safetensors\n", tr->steps, tr->run_dir);
    return 0;
}

int cmd_train(int argc, char **argv) {
    static const struct option opts[] = {{"set", required_argument, 0, 's'},
                                         {"resume", required_argument, 0, 'r'},
                                         {"stop-at", required_argument, 0, 'S'},
                                         {"comm-timeout", required_argument, 0, 'T'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *sets[MAX_SETS];
    int n_sets = 0;
    const char *resume_what = NULL, *timeout_arg = NULL;
    long stop_at = -1;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "s:r:h", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            if (n_sets == MAX_SETS) return ms_usage_error("train", "at most %d --set options", MAX_SETS);
            sets[n_sets++] = optarg;
            break;
        case 'r': resume_what = optarg; break;
        case 'S': {
            char *end;
            stop_at = strtol(optarg, &end, 10);
            if (*end || stop_at < 1) return ms_usage_error("train", "--stop-at needs a step >= 1, not '%s'", optarg);
            break;
        }
        case 'T': timeout_arg = optarg; break;
        case 'h': usage(stdout); return 0;
        default: return ms_usage_error("train", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1)
        return ms_usage_error("train", optind >= argc ? "missing CONFIG" : "one CONFIG only");
    double timeout_s = ms_cli_comm_timeout(timeout_arg);
    if (timeout_s < 0)
        return ms_usage_error("train", "%s needs a positive number of seconds, not '%s'",
                              timeout_arg ? "--comm-timeout" : "MODSQUAD_COMM_TIMEOUT",
                              timeout_arg ? timeout_arg : getenv("MODSQUAD_COMM_TIMEOUT"));
    const char *overlap_env = getenv("MODSQUAD_OVERLAP");
    if (overlap_env && strcmp(overlap_env, "0") != 0 && strcmp(overlap_env, "1") != 0)
        return ms_usage_error("train", "MODSQUAD_OVERLAP must be 0 (the gradient all-reduce "
                                       "after the backward) or 1 (overlapped, the default), not "
                                       "'%s'", overlap_env);
    int overlap = !overlap_env || strcmp(overlap_env, "1") == 0;

    static trainer tr_s;
    trainer *tr = &tr_s;
    memset(tr, 0, sizeof *tr);
    tr->config_path = argv[optind];
    if (ms_cli_load_config(&tr->cfg, tr->config_path, n_sets, sets)) return 1;
    ms_config *cfg = &tr->cfg;
    ms_comm_env env;
    ms_comm_env_detect(&env);
    {
        ms_config_errors errs;
        ms_config_errors_init(&errs);
        int n = ms_config_check_world(cfg, env.world, &errs);
        if (n) {
            ms_config_errors_print(&errs, stderr);
            ms_config_errors_free(&errs);
            return 1;
        }
        ms_config_errors_free(&errs);
    }
    snprintf(tr->run_dir, sizeof tr->run_dir, "%s/%s", cfg->run.dir, cfg->run.name);
    if (ms_cli_make_dirs(tr->run_dir) || check_writable(tr->run_dir)) {
        fprintf(stderr, "modsquad: error: the run directory %s is not writable (%s); set run.dir or run.name\n",
                tr->run_dir, strerror(errno));
        return 1;
    }
    int rc = 1;
    tr->be = ms_cli_open_backend_rank(cfg, &env);
    if (!tr->be) return 1;
    tr->world = ms_cli_open_world(cfg, &env, tr->be, timeout_s, tr->run_dir);
    if (!tr->world) goto out;
    tr->grad_sync = ms_grad_sync_create(tr->world, overlap);
    ms_signals_install();
    if (ms_cli_same_config(tr->world, cfg) || prepare(tr, resume_what)) goto out;
    ms_runlog log_s, *log = is_root(tr) ? &log_s : NULL;
    if (open_outputs(tr, log)) goto out;
    rc = train_loop(tr, log, stop_at);
    if (log) ms_runlog_close(log);
out:
    if (tr->loader) ms_loader_close(tr->loader);
    ms_data_close(tr->train);
    ms_data_close(tr->val);
    if (tr->model) ms_model_destroy(tr->model);
    if (tr->opt.be) ms_optim_destroy(&tr->opt);
    free(tr->host_params), free(tr->host_m), free(tr->host_v);
    free(tr->step_sums);
    ms_grad_sync_destroy(tr->grad_sync);
    ms_world_close(tr->world);
    if (tr->be) tr->be->destroy(tr->be);
    return rc;
}
