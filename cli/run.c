#include "run.h"

#include <errno.h>
#include <math.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../data/loader.h"
#include "../kernels/backend_select.h"
#include "../kernels/util.h"
#include "../model/tasks.h"
#include "commands.h"

static int report(int n, ms_config_errors *errs) {
    if (n) ms_config_errors_print(errs, stderr);
    ms_config_errors_free(errs);
    return n ? 1 : 0;
}

int ms_cli_load_config(ms_config *cfg, const char *path, int n_sets, const char *const *sets) {
    ms_config_errors errs;
    ms_config_errors_init(&errs);
    return report(ms_config_load(cfg, path, n_sets, sets, &errs), &errs);
}

int ms_cli_load_config_text(ms_config *cfg, const char *name, const char *text, int n_sets,
                            const char *const *sets) {
    ms_config_errors errs;
    ms_config_errors_init(&errs);
    return report(ms_config_load_text(cfg, name, text, strlen(text), n_sets, sets, &errs), &errs);
}

int ms_cli_load_checkpoint(ms_st_file *w, ms_config *cfg, const char *path, int n_sets,
                           const char *const *sets) {
    char err[1024];
    if (ms_safetensors_read(path, w, err, sizeof err)) {
        fprintf(stderr, "modsquad: error: %s\n", err);
        return 1;
    }
    const char *yaml = ms_st_meta(w, "modsquad.config");
    if (!yaml)
        fprintf(stderr, "modsquad: error: %s has no 'modsquad.config' metadata: not a modsquad "
                "checkpoint\n", path);
    char name[4200];
    snprintf(name, sizeof name, "%s (stored config)", path);
    if (!yaml || ms_cli_load_config_text(cfg, name, yaml, n_sets, sets)) {
        ms_safetensors_free(w);
        return 1;
    }
    return 0;
}

/* The backend of cfg on `device` with `threads` CPU threads in place of run.device and
 * run.threads (a data-parallel rank's own GPU or share of the cores); NULL with a message. */
static ms_backend *open_backend_on(const ms_config *cfg, const char *device, int threads) {
    char err[512];
    int bf16 = cfg->train.precision == MS_PRECISION_BF16;
    unsigned precision = (bf16 ? MS_BACKEND_BF16 : 0) | (cfg->train.tf32 ? MS_BACKEND_TF32 : 0);
    ms_backend *be = ms_backend_create(device, threads, precision, err, sizeof err);
    if (!be) {
        fprintf(stderr, "modsquad: error: run.device '%s': %s\n", device, err);
        return NULL;
    }
    return be;
}

ms_backend *ms_cli_open_backend(const ms_config *cfg) {
    return open_backend_on(cfg, cfg->run.device, cfg->run.threads);
}

/* ---- several ranks ----------------------------------------------------------------------- */

double ms_cli_comm_timeout(const char *arg) {
    const char *v = arg ? arg : getenv("MODSQUAD_COMM_TIMEOUT");
    if (!v || !*v) return MS_COMM_TIMEOUT_DEFAULT;
    char *end;
    double s = strtod(v, &end);
    return *end || !(s > 0) || !isfinite(s) ? -1 : s;
}

ms_backend *ms_cli_open_backend_rank(const ms_config *cfg, const ms_comm_env *env) {
    if (env->world == 1) return ms_cli_open_backend(cfg);
    char device[MS_NAME_MAX];
    snprintf(device, sizeof device, "%s", cfg->run.device);
    int threads = cfg->run.threads;
    if (strcmp(cfg->run.device, "auto") == 0 || strcmp(cfg->run.device, "cuda") == 0) {
        int gpu = ms_comm_gpu_of(env);
        if (gpu >= 0) snprintf(device, sizeof device, "cuda:%d", gpu);
    }
    if (threads == 0 && !getenv("OMP_NUM_THREADS") && env->local_world > 1) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cores / env->local_world > 1 ? (int)(cores / env->local_world) : 1;
    }
    return open_backend_on(cfg, device, threads);
}

ms_world *ms_cli_open_world(const ms_config *cfg, const ms_comm_env *env, ms_backend *be,
                            double timeout_s, const char *rendezvous_dir) {
    static const ms_world_kind kinds[] = {[MS_COMM_AUTO] = MS_WORLD_AUTO,
                                          [MS_COMM_NONE] = MS_WORLD_NONE,
                                          [MS_COMM_MPI] = MS_WORLD_MPI,
                                          [MS_COMM_NCCL] = MS_WORLD_NCCL};
    ms_world_opts wo = {kinds[cfg->run.comm], timeout_s, rendezvous_dir};
    char err[1024];
    ms_world *w = ms_world_open(&wo, env, be, err, sizeof err);
    if (!w) fprintf(stderr, "modsquad: error: run.comm '%s': %s\n", ms_comm_names[cfg->run.comm], err);
    return w;
}

int ms_cli_agree(ms_world *w, int rc) {
    if (w->size == 1) return rc != 0;
    int64_t worst = rc != 0;
    if (ms_world_allreduce(w, &worst, 1, MS_COMM_I64, MS_COMM_MAX,
                           "the all-reduce of the ranks' status"))
        ms_world_abort(w, 1);
    if (worst && !rc && w->rank == 0)
        fprintf(stderr,
                "modsquad: error: another rank failed (its message above says why); stopping\n");
    return (int)worst;
}

int ms_cli_same_config(ms_world *w, const ms_config *cfg) {
    if (w->size == 1) return 0;
    char *yaml = ms_config_to_yaml(cfg);
    int same = ms_world_same(w, ms_comm_hash(yaml, strlen(yaml), MS_COMM_HASH_SEED),
                             "the comparison of the configs");
    free(yaml);
    if (same < 0) ms_world_abort(w, 1);
    if (!same && w->rank == 0)
        fprintf(stderr, "modsquad: error: the %d ranks resolved different configs (another "
                        "checkpoint, config file or --set on some rank?); every rank must run "
                        "the same command\n",
                w->size);
    return same ? 0 : -1;
}

int ms_cli_check_eval_world(const ms_config *cfg, const ms_comm_env *env, const char *cmd) {
    int B = cfg->eval.batch_size, ranks = env->world;
    if (B % ranks == 0) return 0;
    if (env->rank == 0) {
        int fit = B / ranks > 0 ? B / ranks * ranks : ranks;
        fprintf(stderr, "modsquad: error: %s on %d ranks: eval.batch_size (%d) is the global "
                        "evaluation batch and must be divisible by the ranks; add --set "
                        "eval.batch_size=%d\n",
                cmd, ranks, B, fit);
    }
    return 1;
}

int ms_cli_make_dirs(const char *path) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(tmp, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

/* ---- expert usage ------------------------------------------------------------------------- */

void ms_usage_init(ms_usage *u, const ms_model *m, int T) {
    memset(u, 0, sizeof *u);
    u->layers = ms_model_moe_layers(m);
    MS_ASSERT(u->layers <= 64);
    u->T = T;
    for (int l = 0; l < u->layers; l++) {
        ms_moe_info mi = ms_model_moe_info(m, l);
        u->E[l] = mi.E, u->K[l] = mi.K;
        if (mi.E > u->maxE) u->maxE = mi.E;
    }
    u->counts = ms_calloc((size_t)(u->layers ? u->layers : 1) * T * (u->maxE ? u->maxE : 1),
                          sizeof(int64_t));
}

void ms_usage_free(ms_usage *u) {
    free(u->counts);
    memset(u, 0, sizeof *u);
}

static int64_t *usage_row(const ms_usage *u, int l, int t) {
    return u->counts + ((size_t)l * u->T + t) * u->maxE;
}

double ms_usage_percent(const ms_usage *u, int l, int t, int e) {
    const int64_t *row = usage_row(u, l, t);
    int64_t total = 0;
    for (int i = 0; i < u->E[l]; i++) total += row[i];
    return total ? 100.0 * (double)row[e] / (double)total : 0.0;
}

/* Adds the selections of the first n images of the last forward (the rest is padding). */
static void usage_add(ms_usage *u, const ms_model *m, int n) {
    int64_t tmp[1024];
    for (int l = 0; l < u->layers; l++)
        for (int t = 0; t < u->T; t++) {
            MS_ASSERT(u->E[l] <= 1024);
            ms_model_expert_counts_of(m, l, t, n, tmp);
            int64_t *row = usage_row(u, l, t);
            for (int e = 0; e < u->E[l]; e++) row[e] += tmp[e];
        }
}

/* ---- evaluation --------------------------------------------------------------------------- */

/* Copies slot `from` of src into slot `to` of dst (batches of one config and image size). */
static void copy_slot(ms_batch *dst, int to, const ms_batch *src, int from, const ms_config *cfg) {
    size_t P = (size_t)src->H * src->W;
    memcpy(dst->images + to * 3 * P, src->images + from * 3 * P, 3 * P * sizeof(float));
    dst->sample[to] = src->sample[from];
    for (int t = 0; t < src->T; t++) {
        const ms_task_def *d = ms_task_find(cfg->data.dataset, cfg->data.tasks.name[t]);
        const ms_target *s = &src->target[t];
        ms_target *g = &dst->target[t];
        size_t C = (size_t)d->channels;
        if (s->dense) memcpy(g->dense + to * C * P, s->dense + from * C * P, C * P * sizeof(float));
        if (s->valid) memcpy(g->valid + to * P, s->valid + from * P, P);
        if (s->labels) memcpy(g->labels + to * P, s->labels + from * P, P * sizeof(int32_t));
        if (s->binary) memcpy(g->binary + to * P, s->binary + from * P, P);
        if (s->vector) memcpy(g->vector + to * C, s->vector + from * C, C * sizeof(float));
    }
}

int ms_cli_evaluate(ms_model *m, ms_backend *be, int B, ms_data *d, const ms_config *cfg,
                    int64_t max_images, ms_metric_result *results, ms_usage *usage,
                    double *mean_loss, const ms_pred_sink *sink) {
    return ms_cli_evaluate_dist(m, be, B, d, cfg, max_images, results, usage, mean_loss, sink,
                                NULL);
}

/* A collective of the evaluation; a failed one (a rank stopped or hangs) stops every rank. */
static void eval_reduce(ms_world *w, void *x, size_t n, ms_comm_dtype t, ms_comm_op op) {
    if (ms_world_allreduce(w, x, n, t, op, "the all-reduce of the evaluation's metrics"))
        ms_world_abort(w, 1);
}

/* Sums every rank's accumulators, expert selections and losses, so that each rank holds the
 * metrics of the whole split. The accumulators only ever add up (model/metrics.h): their
 * counts merge exactly, their double sums to rounding. */
static void reduce_evaluation(ms_world *w, int T, ms_metric_acc *const *acc, ms_usage *usage,
                              double *loss_sum, int64_t *batches) {
    for (int t = 0; t < T; t++) {
        size_t n;
        double *sums = ms_metric_sums(acc[t], &n);
        eval_reduce(w, sums, n, MS_COMM_F64, MS_COMM_SUM);
        int64_t *counts = ms_metric_counts(acc[t], &n);
        eval_reduce(w, counts, n, MS_COMM_I64, MS_COMM_SUM);
    }
    if (usage)
        eval_reduce(w, usage->counts, (size_t)(usage->layers ? usage->layers : 1) * usage->T *
                                          (usage->maxE ? usage->maxE : 1),
                    MS_COMM_I64, MS_COMM_SUM);
    eval_reduce(w, loss_sum, (size_t)T, MS_COMM_F64, MS_COMM_SUM);
    eval_reduce(w, batches, 1, MS_COMM_I64, MS_COMM_SUM);
}

int ms_cli_evaluate_dist(ms_model *m, ms_backend *be, int B, ms_data *d, const ms_config *cfg,
                         int64_t max_images, ms_metric_result *results, ms_usage *usage,
                         double *mean_loss, const ms_pred_sink *sink, ms_world *world) {
    const int T = cfg->data.tasks.n;
    const int ranks = world ? world->size : 1;
    ms_loader_opts o;
    ms_loader_opts_from_config(&o, cfg, 0, world ? world->rank : 0, ranks);
    ms_metric_options mopt = ms_metric_options_default();
    ms_metric_acc *acc[MS_MAX_TASKS];
    const ms_task_def *def[MS_MAX_TASKS];
    for (int t = 0; t < T; t++) {
        def[t] = ms_task_find(cfg->data.dataset, cfg->data.tasks.name[t]);
        acc[t] = ms_metric_acc_new(def[t], &mopt);
    }
    o.batch_size = B;
    o.max_samples = max_images > 0 ? max_images : 0;
    o.workers = cfg->data.workers;
    ms_loader *L;
    ms_io_err err = {0};
    int rc = 1;
    float *pred = NULL;
    size_t pred_cap = 0;
    double loss_sum[MS_MAX_TASKS] = {0};
    int64_t batches = 0;
    if (ms_loader_open(&L, d, cfg, &o, &err)) {
        /* Every rank sees the same split and options, so every rank fails here alike. */
        fprintf(stderr, "modsquad: error: %s\n", err.msg);
        goto out;
    }
    ms_batch padded = {0}, blank = {0};
    int failed = 0;
    /* Every rank takes the same number of batches (the loader's contract); with several ranks
     * each runs one forward per global batch even when its share is empty or it has failed,
     * because the forward meets the other ranks in the MI-statistics all-reduce. */
    const int64_t steps = ms_loader_steps_per_epoch(L);
    for (int64_t s = 0; s < steps && !(failed && ranks == 1); s++) {
        ms_batch *b = NULL;
        int n = 0;
        if (!failed) {
            int got = ms_loader_next(L, &b, &err);
            if (got < 0) {
                fprintf(stderr, "modsquad: error: %s\n", err.msg);
                failed = 1;
            } else if (got == 1) {
                n = b->B;
            }
        }
        if (n == 0) {
            if (ranks == 1) continue;
            if (!blank.images) ms_batch_alloc(&blank, cfg, B, d->size, d->size);
            ms_model_forward(m, &blank, 0, 0); /* zeros, not scored */
            continue;
        }
        const ms_batch *in = b;
        if (n < B) {
            /* A short last batch: repeat its last image; only the first n are scored. */
            if (!padded.images) ms_batch_alloc(&padded, cfg, B, b->H, b->W);
            for (int i = 0; i < B; i++) copy_slot(&padded, i, b, i < n ? i : n - 1, cfg);
            in = &padded;
        }
        ms_model_forward(m, in, 0, 0);
        ms_losses l;
        ms_model_losses(m, &l);
        for (int t = 0; t < T; t++) loss_sum[t] += l.task[t];
        batches++;
        if (usage) usage_add(usage, m, n);
        for (int t = 0; t < T && !failed; t++) {
            size_t per = def[t]->classification ? (size_t)def[t]->channels
                                                : (size_t)def[t]->channels * in->H * in->W;
            size_t need = per * B;
            if (need > pred_cap) {
                free(pred);
                pred = ms_malloc(need * sizeof(float));
                pred_cap = need;
            }
            be->download_act(be, pred, ms_model_prediction(m, t), need);
            ms_metric_update(acc[t], pred, &in->target[t], n, in->H, in->W);
            if (sink && sink->fn(sink->ctx, t, pred, in, n)) failed = 1;
        }
    }
    ms_loader_close(L);
    if (padded.images) ms_batch_free(&padded);
    if (blank.images) ms_batch_free(&blank);
    if (ranks > 1) {
        int64_t any = failed;
        eval_reduce(world, &any, 1, MS_COMM_I64, MS_COMM_MAX);
        if (any && !failed)
            fprintf(stderr, "modsquad: error: rank %d of %d: the evaluation failed on another rank "
                            "(its message says why)\n", world->rank, ranks);
        failed = (int)any;
    }
    if (failed) goto out;
    if (ranks > 1) reduce_evaluation(world, T, acc, usage, loss_sum, &batches);
    for (int t = 0; t < T; t++) {
        ms_metric_result_get(acc[t], &results[t]);
        if (mean_loss) mean_loss[t] = batches ? loss_sum[t] / (double)batches : NAN;
    }
    rc = 0;
out:
    free(pred);
    for (int t = 0; t < T; t++) ms_metric_acc_free(acc[t]);
    return rc;
}

void ms_cli_print_metrics(const ms_config *cfg, const ms_metric_result *results) {
    printf("%-22s %-12s %12s\n", "task", "metric", "value");
    for (int t = 0; t < cfg->data.tasks.n; t++) {
        const ms_task_def *d = ms_task_find(cfg->data.dataset, cfg->data.tasks.name[t]);
        printf("%-22s %-12s %12.5g %s\n", d->name, results[t].values[0].name, results[t].primary,
               d->units);
    }
}

/* ---- checkpoint metadata ------------------------------------------------------------------- */

void ms_cli_meta_make(ms_cli_meta *m, const ms_config *cfg, long step) {
    memset(m, 0, sizeof *m);
    m->yaml = ms_config_to_yaml(cfg);
    snprintf(m->step, sizeof m->step, "%ld", step);
    ms_config_fingerprint(cfg, m->fingerprint);
    m->kv[m->n++] = (ms_kv){"format", "pt"};
    m->kv[m->n++] = (ms_kv){"modsquad.version", MS_VERSION};
    m->kv[m->n++] = (ms_kv){"modsquad.step", m->step};
    m->kv[m->n++] = (ms_kv){"modsquad.fingerprint", m->fingerprint};
    m->kv[m->n++] = (ms_kv){"modsquad.config", m->yaml};
}

void ms_cli_meta_free(ms_cli_meta *m) {
    free(m->yaml);
    memset(m, 0, sizeof *m);
}
