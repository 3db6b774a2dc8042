/* modsquad train CONFIG [--set key=value ...] [--resume auto|PATH]
 *
 * The training loop of METHOD.md section 6: every step runs all T task passes of
 * train.accum_steps micro-batches, then one AdamW step on the warmup + half-cosine schedule.
 * Checkpoints (weights + training state) every train.checkpoint_every steps and at the end;
 * SIGTERM / SIGINT / SIGUSR1 finish the step, checkpoint and exit with MS_EXIT_REQUEUE;
 * non-finite losses or gradients skip the step, and train.max_bad_steps of them in a row stop
 * the run (the last good checkpoint stays). On the CPU a resumed run is bit-identical to one
 * that never stopped: everything random is keyed by (seed, step), the loader position, the
 * optimizer moments and the BatchNorm statistics are all in the checkpoint. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../data/loader.h"
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
            "  -h, --help           show this help\n\n"
            "Exit status: 0 done, 1 error, 2 usage error, %d stopped by a signal after writing a\n"
            "checkpoint (requeue and run the same command with --resume auto).\n",
            MS_EXIT_REQUEUE);
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
    int B;                      /* images per micro-batch */
    long steps, warmup, step;   /* total optimizer steps, warmup steps, next step */
    int64_t steps_per_epoch;
    int bad_steps;              /* non-finite steps in a row */
    float *host_params, *host_m, *host_v; /* checkpoint staging [pt->total] */
} trainer;

static int save_checkpoint(trainer *tr, ms_runlog *log) {
    const ms_param_table *pt = ms_model_params(tr->model);
    ms_backend *be = tr->be;
    size_t bytes = pt->total * sizeof(float);
    be->download(be, tr->host_params, ms_model_param_data(tr->model), bytes);
    be->download(be, tr->host_m, tr->opt.m, bytes);
    be->download(be, tr->host_v, tr->opt.v, bytes);
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
    ms_param_counts pc;
    ms_model_param_counts(tr->model, &pc);
    ms_memory_plan mp = ms_model_memory(tr->model);
    double flops = 0;
    for (int t = 0; t < c->data.tasks.n; t++) flops += ms_model_flops(tr->model, t);
    printf("modsquad train %s\n", tr->config_path);
    printf("  run dir    %s (resolved config in config.yaml, log in log.jsonl)\n", tr->run_dir);
    printf("  device     %s, %d threads\n", tr->be->name, tr->be->threads);
    printf("  data       %s at %s: %s %lld samples, %s %lld samples\n",
           ms_dataset_names[c->data.dataset], c->data.root, c->data.train_split,
           (long long)tr->train->n, c->data.val_split, (long long)(tr->val ? tr->val->n : 0));
    for (int t = 0; t < c->data.tasks.n; t++)
        printf("             %-20s %lld files found, %lld missing\n", c->data.tasks.name[t],
               (long long)tr->train->found[t], (long long)tr->train->missing[t]);
    printf("  model      %s: %.3fM parameters (backbone %.3fM, heads %.3fM)\n",
           ms_arch_names[c->model.arch], pc.total / 1e6, pc.backbone / 1e6, pc.heads / 1e6);
    printf("  compute    %.3f GFLOP forward per step (%d images x %d tasks), ~3x that with backward\n",
           flops * tr->B * c->train.accum_steps / 1e9, tr->B * c->train.accum_steps, c->data.tasks.n);
    printf("  memory     params %.1f MB, grads %.1f MB, optimizer %.1f MB, activations %.1f MB: %.1f MB\n",
           mp.params / 1e6, mp.grads / 1e6, mp.optimizer / 1e6, mp.activations / 1e6, mp.total / 1e6);
    printf("  schedule   %ld steps (%lld per epoch), warmup %ld, lr %.3g -> %.3g, batch %d x accum %d\n",
           tr->steps, (long long)tr->steps_per_epoch, tr->warmup, c->train.lr, c->train.min_lr, tr->B,
           c->train.accum_steps);
    fflush(stdout);
}

static int evaluate_and_log(trainer *tr, ms_runlog *log) {
    if (!tr->val) return 0;
    const ms_config *c = &tr->cfg;
    ms_metric_result res[MS_MAX_TASKS];
    if (ms_cli_evaluate(tr->model, tr->be, tr->B, tr->val, c, c->eval.max_images, res, NULL, NULL))
        return -1;
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
    ms_backend *be = tr->be;
    double t0 = ms_now();
    ms_model_zero_grads(tr->model);
    double task_loss[MS_MAX_TASKS] = {0}, total = 0, mi = 0;
    for (int a = 0; a < c->train.accum_steps; a++) {
        ms_io_err err = {0};
        int got = ms_loader_next(tr->loader, batch_io, &err);
        if (got != 1) {
            fprintf(stderr, "modsquad: error: %s\n", got < 0 ? err.msg : "the training data ended");
            *rc = 1;
            return -1;
        }
        ms_model_forward(tr->model, *batch_io, 1, tr->step * c->train.accum_steps + a);
        ms_model_backward(tr->model);
        ms_losses l;
        ms_model_losses(tr->model, &l);
        for (int t = 0; t < T; t++) task_loss[t] += l.task[t] / c->train.accum_steps;
        total += l.total / c->train.accum_steps;
        mi += l.mi / c->train.accum_steps;
    }
    float *grads = ms_model_grad_data(tr->model);
    const ms_param_table *pt = ms_model_params(tr->model);
    if (c->train.accum_steps > 1) be->scale_f32(be, grads, 1.0f / c->train.accum_steps, pt->total);
    double gnorm = ms_optim_grad_norm(&tr->opt, grads);
    int finite = isfinite(total) && isfinite(gnorm);
    for (int t = 0; t < T; t++) finite = finite && isfinite(task_loss[t]);
    double lr = ms_optim_lr(&tr->opt, tr->step);
    const char *names[MS_MAX_TASKS];
    for (int t = 0; t < T; t++) names[t] = c->data.tasks.name[t];
    if (!finite) {
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
        tr->bad_steps++;
        return 1;
    }
    tr->bad_steps = 0;
    if (c->train.clip_grad > 0 && gnorm > c->train.clip_grad)
        be->scale_f32(be, grads, (float)(c->train.clip_grad / gnorm), pt->total);
    ms_optim_step(&tr->opt, ms_model_param_data(tr->model), grads, lr, tr->step);
    double dt = ms_now() - t0;
    double epoch = (double)tr->step * c->train.accum_steps / (double)tr->steps_per_epoch;
    ms_runlog_step(log, tr->step, epoch, total, T, names, task_loss, mi, lr, gnorm,
                   tr->B * c->train.accum_steps / dt);
    return 0;
}

int cmd_train(int argc, char **argv) {
    static const struct option opts[] = {{"set", required_argument, 0, 's'},
                                         {"resume", required_argument, 0, 'r'},
                                         {"stop-at", required_argument, 0, 'S'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *sets[MAX_SETS];
    int n_sets = 0;
    const char *resume = NULL;
    long stop_at = -1;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "s:r:h", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            if (n_sets == MAX_SETS) return ms_usage_error("train", "at most %d --set options", MAX_SETS);
            sets[n_sets++] = optarg;
            break;
        case 'r': resume = optarg; break;
        case 'S': {
            char *end;
            stop_at = strtol(optarg, &end, 10);
            if (*end || stop_at < 1) return ms_usage_error("train", "--stop-at needs a step >= 1, not '%s'", optarg);
            break;
        }
        case 'h': usage(stdout); return 0;
        default: return ms_usage_error("train", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1)
        return ms_usage_error("train", optind >= argc ? "missing CONFIG" : "one CONFIG only");

    static trainer tr_s;
    trainer *tr = &tr_s;
    memset(tr, 0, sizeof *tr);
    tr->config_path = argv[optind];
    if (ms_cli_load_config(&tr->cfg, tr->config_path, n_sets, sets)) return 1;
    ms_config *cfg = &tr->cfg;
    {
        ms_config_errors errs;
        ms_config_errors_init(&errs);
        int n = ms_config_check_world(cfg, 1, &errs);
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
    tr->be = ms_cli_open_backend(cfg);
    if (!tr->be) return 1;
    ms_io_err err = {0};
    ms_data_open_opts dopt = {0};
    if (ms_data_open(&tr->train, cfg, cfg->data.train_split, &dopt, &err)) {
        fprintf(stderr, "modsquad: error: %s\n", err.msg);
        goto out;
    }
    if (ms_data_open(&tr->val, cfg, cfg->data.val_split, &dopt, &err)) {
        fprintf(stderr, "modsquad: error: %s\n", err.msg);
        goto out;
    }
    ms_loader_opts lo;
    ms_loader_opts_from_config(&lo, cfg, 1, 0, 1);
    tr->B = lo.batch_size;
    if (ms_loader_open(&tr->loader, tr->train, cfg, &lo, &err)) {
        fprintf(stderr, "modsquad: error: %s\n", err.msg);
        goto out;
    }
    tr->steps_per_epoch = ms_loader_steps_per_epoch(tr->loader) / cfg->train.accum_steps;
    if (tr->steps_per_epoch < 1) {
        fprintf(stderr, "modsquad: error: %s split '%s' has %lld samples, fewer than one step of %d x %d images\n",
                cfg->data.root, cfg->data.train_split, (long long)tr->train->n, tr->B, cfg->train.accum_steps);
        goto out;
    }
    tr->steps = cfg->train.steps ? cfg->train.steps : (long)(cfg->train.epochs * tr->steps_per_epoch);
    tr->warmup = cfg->train.warmup_steps ? cfg->train.warmup_steps
                                         : (long)(cfg->train.warmup_epochs * (double)tr->steps_per_epoch);
    if (tr->warmup >= tr->steps) tr->warmup = tr->steps / 10;

    tr->model = ms_model_create(cfg, tr->be, &(ms_model_opts){.batch = tr->B});
    ms_model_init(tr->model, (uint64_t)cfg->run.seed);
    const ms_param_table *pt = ms_model_params(tr->model);
    if (ms_optim_create(&tr->opt, tr->be, pt, &cfg->train, tr->warmup, tr->steps)) {
        fprintf(stderr, "modsquad: error: out of device memory for the optimizer state (%.1f MB)\n",
                2.0 * pt->total * sizeof(float) / 1e6);
        goto out;
    }
    tr->host_params = ms_malloc(pt->total * sizeof(float));
    tr->host_m = ms_malloc(pt->total * sizeof(float));
    tr->host_v = ms_malloc(pt->total * sizeof(float));

    if (resume) {
        char wpath[4096];
        if (strcmp(resume, "auto") == 0) {
            long s = ms_ckpt_latest(tr->run_dir, wpath, sizeof wpath);
            if (s >= 0) {
                if (resume_from(tr, wpath)) goto out;
                printf("resumed from %s (step %ld)\n", wpath, tr->step);
            } else {
                printf("no checkpoint in %s: starting from scratch\n", tr->run_dir);
            }
        } else {
            if (resume_from(tr, resume)) goto out;
            printf("resumed from %s (step %ld)\n", resume, tr->step);
        }
    }
    {
        char cpath[4096];
        snprintf(cpath, sizeof cpath, "%s/config.yaml", tr->run_dir);
        FILE *f = fopen(cpath, "w");
        if (!f) {
            fprintf(stderr, "modsquad: error: cannot write %s: %s\n", cpath, strerror(errno));
            goto out;
        }
        ms_config_print(cfg, f);
        fclose(f);
    }
    print_summary(tr);

    ms_runlog log;
    char lerr[1024];
    int progress = cfg->run.progress == MS_PROGRESS_AUTO ? -1 : cfg->run.progress == MS_PROGRESS_ON;
    if (ms_runlog_open(&log, tr->run_dir, progress, cfg->run.log_every, tr->steps, tr->step, lerr, sizeof lerr)) {
        fprintf(stderr, "modsquad: error: %s\n", lerr);
        goto out;
    }
    ms_signals_install();
    ms_batch *batch = NULL;
    while (tr->step < tr->steps) {
        int r = train_step(tr, &log, &batch, &rc);
        if (r < 0) goto out_log;
        if (r == 1 && tr->bad_steps >= cfg->train.max_bad_steps) {
            char last[4096];
            long s = ms_ckpt_latest(tr->run_dir, last, sizeof last);
            fprintf(stderr,
                    "modsquad: error: %d steps in a row had non-finite losses or gradients; "
                    "stopping. %s%s\n",
                    tr->bad_steps, s >= 0 ? "The last good checkpoint is " : "No checkpoint was written yet.",
                    s >= 0 ? last : "");
            rc = 1;
            goto out_log;
        }
        tr->step++;
        int last = tr->step == tr->steps;
        if (!last && cfg->train.eval_every && tr->step % cfg->train.eval_every == 0 &&
            evaluate_and_log(tr, &log))
            goto out_log;
        if (!last && cfg->train.checkpoint_every && tr->step % cfg->train.checkpoint_every == 0 &&
            save_checkpoint(tr, &log))
            goto out_log;
        if (tr->step == stop_at && !last) {
            if (save_checkpoint(tr, &log)) goto out_log;
            ms_runlog_break(&log);
            printf("stopped at step %ld as asked (--stop-at); checkpoint in %s\n", tr->step, tr->run_dir);
            rc = 0;
            goto out_log;
        }
        if (ms_stop_signal) {
            ms_runlog_break(&log);
            char msg[64];
            snprintf(msg, sizeof msg, "signal %d", (int)ms_stop_signal);
            ms_runlog_event(&log, tr->step, "signal", msg);
            if (save_checkpoint(tr, &log)) goto out_log;
            fprintf(stderr, "modsquad: stopped by signal %d after step %ld; checkpoint written to %s. "
                            "Run the same command with --resume auto to continue.\n",
                    (int)ms_stop_signal, tr->step, tr->run_dir);
            rc = MS_EXIT_REQUEUE;
            goto out_log;
        }
    }
    if (save_checkpoint(tr, &log) || evaluate_and_log(tr, &log)) goto out_log;
    printf("done: %ld steps; weights in %s/last.safetensors\n", tr->steps, tr->run_dir);
    rc = 0;
out_log:
    ms_runlog_close(&log);
out:
    if (tr->loader) ms_loader_close(tr->loader);
    ms_data_close(tr->train);
    ms_data_close(tr->val);
    if (tr->model) ms_model_destroy(tr->model);
    if (tr->opt.be) ms_optim_destroy(&tr->opt);
    free(tr->host_params), free(tr->host_m), free(tr->host_v);
    if (tr->be) tr->be->destroy(tr->be);
    return rc;
}
