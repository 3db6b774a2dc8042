/* modsquad bench [CONFIG] [--steps N] [--warmup N] [--extract TASK] [--threshold PCT] [--json]
 *               [--set key=value ...]
 *
 * How fast a training step of CONFIG runs on this machine, and how far that is from what the
 * hardware allows (issue 8): the single-precision GEMM peak of this BLAS at this thread count,
 * step time on one in-memory batch and on the real loader, achieved model GFLOP/s against that
 * peak, where the step time goes (a timed copy of the backend, cli/bench_timing.h), peak RSS
 * against the memory plan, and whether the step loop allocates (backend allocations counted by
 * the timed backend, host heap and RSS growth over the measured steps); then inference of one
 * task's extracted model against the full model (cli/bench_infer.h). Nothing here changes the
 * model: it runs the same step API as train and eval. */
#include <getopt.h>
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "../data/loader.h"
#include "../kernels/util.h"
#include "../model/optim.h"
#include "bench_infer.h"
#include "bench_timing.h"
#include "commands.h"
#include "run.h"

/* After the project headers: cblas.h pulls in complex.h, whose I macro they use as a name. */
#include <cblas.h>

#define MAX_SETS 64
#define MAX_SHAPES 8
#define DEFAULT_CONFIG "configs/demo.yaml"

static void usage(FILE *f) {
    fputs("Usage: modsquad bench [CONFIG] [--steps N] [--warmup N] [--extract TASK] [--threshold PCT]\n"
          "                      [--json] [--set key=value ...]\n\n"
          "Measures training speed for CONFIG (default " DEFAULT_CONFIG "):\n"
          "  - the single-precision GEMM peak of this BLAS and thread count (cblas_sgemm at the\n"
          "    model's GEMM shapes and at 2048^3; the best is the peak);\n"
          "  - training steps on one in-memory batch and on the real data loader: median step\n"
          "    time, images/s, model GFLOP/s (3 x forward FLOPs per step) and its share of the peak;\n"
          "  - the share of step time per kind of work (GEMMs, attention, MoE routing, norms and\n"
          "    activations, elementwise, losses, optimizer, memory traffic, data);\n"
          "  - peak RSS against the memory plan of `modsquad info`, and what the measured steps\n"
          "    allocate (backend allocations, host heap and RSS growth: all 0 when nothing does);\n"
          "  - inference of one task: the full model's evaluation forward (every task's pass,\n"
          "    what a user of the multi-task model runs for that task's predictions) against\n"
          "    the task's extracted model (expert choice as `modsquad extract`, calibrated on\n"
          "    the in-memory batch) and against the full model restricted to the task's pass:\n"
          "    ms/image, images/s, parameters, weight MB, forward GFLOP/image. Top-k routing\n"
          "    keeps a token's FLOPs the same however many experts a layer stores, so the\n"
          "    passes skipped are where the time goes; dropped experts save weight memory.\n\n"
          "Options:\n"
          "  -n, --steps N        measured steps per run, and inference forwards (default 10)\n"
          "  -w, --warmup N       unmeasured steps / forwards before them (default 2)\n"
          "  -x, --extract TASK   the task of the inference line (default: the first of data.tasks)\n"
          "  -T, --threshold PCT  keep experts used by more than PCT percent of the task's tokens,\n"
          "                       at least top-k (default: eval.usage_threshold)\n"
          "  -j, --json           print every number as one JSON object instead\n"
          "  -s, --set KEY=VALUE  override a config key (repeatable)\n"
          "  -h, --help           show this help\n",
          f);
}

typedef struct {
    int M, K, N;     /* C[M, N] = A[M, K] B */
    int trans_b;     /* B stored (N, K), as nn.Linear weights */
    const char *what;
    double gflops;   /* best of the repetitions */
} gemm_shape;

/* Best GFLOP/s of cblas_sgemm at one shape: repeats for about 0.3 s, at least 3 times. */
static double time_sgemm(gemm_shape *g, float *a, float *b, float *c) {
    int ldb = g->trans_b ? g->K : g->N;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, g->trans_b ? CblasTrans : CblasNoTrans, g->M, g->N,
                g->K, 1.0f, a, g->K, b, ldb, 0.0f, c, g->N);
    double best = INFINITY, start = ms_now();
    for (int rep = 0; rep < 3 || ms_now() - start < 0.3; rep++) {
        double t0 = ms_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, g->trans_b ? CblasTrans : CblasNoTrans, g->M,
                    g->N, g->K, 1.0f, a, g->K, b, ldb, 0.0f, c, g->N);
        double dt = ms_now() - t0;
        if (dt < best) best = dt;
    }
    g->gflops = 2.0 * g->M * g->K * g->N / best / 1e9;
    return g->gflops;
}

static int add_shape(gemm_shape *s, int n, int M, int K, int N, int trans_b, const char *what) {
    if (n == MAX_SHAPES || M < 1 || K < 1 || N < 1) return n;
    s[n] = (gemm_shape){M, K, N, trans_b, what, 0};
    return n + 1;
}

/* The GEMM shapes of a step (forward orientation): tokens M = B * N against the model's
 * widths, the per-expert shapes with the rows an expert gets under balanced routing, and one
 * large square GEMM that shows what the BLAS reaches when shapes are not the limit. */
static int model_shapes(gemm_shape *s, const ms_config *cfg, int B, int tokens) {
    const ms_model_config *mc = &cfg->model;
    int M = B * tokens, D = mc->dim, hidden = (int)nearbyint(mc->mlp_ratio * D), n = 0;
    n = add_shape(s, n, M, D, 3 * mc->heads * mc->head_dim, 1, "qkv: tokens x D x 3*heads*head_dim");
    n = add_shape(s, n, M, D, hidden, 1, "mlp fc1: tokens x D x mlp_ratio*D");
    n = add_shape(s, n, M, hidden, D, 1, "mlp fc2: tokens x mlp_ratio*D x D");
    if (mc->mlp_experts > 0) {
        int rows = (int)((long)M * mc->mlp_topk / mc->mlp_experts);
        n = add_shape(s, n, rows, D, mc->expert_hidden, 0, "mlp expert fc1: tokens*K/E x D x H");
        n = add_shape(s, n, rows, mc->expert_hidden, D, 0, "mlp expert fc2: tokens*K/E x H x D");
    }
    if (mc->attn_experts > 0) {
        int rows = (int)((long)M * mc->attn_topk / mc->attn_experts);
        n = add_shape(s, n, rows, D, mc->attn_expert_dim, 0, "attention expert q: tokens*K/E x D x hd");
    }
    n = add_shape(s, n, 2048, 2048, 2048, 0, "square 2048^3");
    return n;
}

/* Measures every shape; returns the index of the fastest (the peak). */
static int measure_peak(gemm_shape *s, int n) {
    size_t amax = 0, bmax = 0, cmax = 0;
    for (int i = 0; i < n; i++) {
        size_t a = (size_t)s[i].M * s[i].K, b = (size_t)s[i].K * s[i].N, c = (size_t)s[i].M * s[i].N;
        amax = a > amax ? a : amax, bmax = b > bmax ? b : bmax, cmax = c > cmax ? c : cmax;
    }
    float *a = ms_malloc(amax * sizeof(float)); /* [M, K] */
    float *b = ms_malloc(bmax * sizeof(float)); /* [K, N] or [N, K] */
    float *c = ms_malloc(cmax * sizeof(float)); /* [M, N] */
    /* Values of a trained network's size: denormals or zeros would time a different machine. */
    for (size_t i = 0; i < amax; i++) a[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
    for (size_t i = 0; i < bmax; i++) b[i] = (float)((i * 40503u) % 1000) * 1e-3f - 0.5f;
    int best = 0;
    for (int i = 0; i < n; i++)
        if (time_sgemm(&s[i], a, b, c) > s[best].gflops) best = i;
    free(a), free(b), free(c);
    return best;
}

typedef struct {
    double median_s;           /* median step time */
    double best_s;             /* fastest step: the one least disturbed by other processes */
    double total_s;            /* sum of the measured steps */
    double sec[MS_CAT_N];      /* per category over the measured steps */
    long allocs;               /* be->alloc + be->free calls during the measured steps */
    double heap_growth;        /* host heap bytes in use after the measured steps minus before */
    double rss_growth;         /* resident bytes after the measured steps minus before */
} run_result;

/* Resident set size now, in bytes (0 where /proc is missing). */
static double current_rss(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages_total, pages_resident;
    int ok = f && fscanf(f, "%ld %ld", &pages_total, &pages_resident) == 2;
    if (f) fclose(f);
    return ok ? (double)pages_resident * (double)sysconf(_SC_PAGESIZE) : 0.0;
}

/* Bytes the host heap hands out now (every malloc arena plus mmap-served blocks). */
static double heap_in_use(void) {
    struct mallinfo2 mi = mallinfo2();
    return (double)mi.uordblks + (double)mi.hblkhd;
}

typedef struct {
    ms_config cfg;
    ms_backend *real;
    ms_timed_backend tb;
    ms_model *model;
    ms_optim opt;
    int B, accum;
    long step;
} bench;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One optimizer step as train does it (accum micro-batches, gradient norm, clipping, AdamW).
 * L NULL: reuse *batch. Returns the step's wall time, or -1 when the loader failed. */
static double one_step(bench *bx, ms_loader *L, ms_batch **batch) {
    ms_backend *be = &bx->tb.be;
    double t0 = ms_now();
    ms_model_zero_grads(bx->model);
    for (int a = 0; a < bx->accum; a++) {
        if (L) {
            ms_io_err err = {0};
            double td = ms_now();
            int got = ms_loader_next(L, batch, &err);
            bx->tb.sec[MS_CAT_DATA] += ms_now() - td;
            if (got != 1) {
                fprintf(stderr, "modsquad: error: %s\n", got < 0 ? err.msg : "the training data ended");
                return -1;
            }
        }
        ms_model_forward(bx->model, *batch, 1, bx->step * bx->accum + a);
        ms_model_backward(bx->model);
        ms_losses l;
        ms_model_losses(bx->model, &l);
    }
    float *grads = ms_model_grad_data(bx->model);
    const ms_param_table *pt = ms_model_params(bx->model);
    if (bx->accum > 1) be->scale_f32(be, grads, 1.0f / bx->accum, pt->total);
    double gnorm = ms_optim_grad_norm(&bx->opt, grads);
    if (bx->cfg.train.clip_grad > 0 && gnorm > bx->cfg.train.clip_grad)
        be->scale_f32(be, grads, (float)(bx->cfg.train.clip_grad / gnorm), pt->total);
    ms_optim_step(&bx->opt, ms_model_param_data(bx->model), grads, ms_optim_lr(&bx->opt, bx->step),
                  bx->step);
    be->synchronize(be);
    bx->step++;
    return ms_now() - t0;
}

static int run_steps(bench *bx, ms_loader *L, ms_batch **batch, int warmup, int steps, run_result *r) {
    double *dt = ms_malloc((size_t)steps * sizeof *dt); /* [steps] */
    int rc = 0;
    for (int s = 0; s < warmup && !rc; s++) rc = one_step(bx, L, batch) < 0;
    ms_timed_backend_reset(&bx->tb);
    r->total_s = 0;
    /* DESIGN.md principle 4: after the first step nothing more is allocated, so the heap and
     * the resident set stay put over the measured steps. */
    double heap0 = heap_in_use(), rss0 = current_rss();
    for (int s = 0; s < steps && !rc; s++) {
        dt[s] = one_step(bx, L, batch);
        rc = dt[s] < 0;
        r->total_s += dt[s];
    }
    r->heap_growth = heap_in_use() - heap0;
    r->rss_growth = current_rss() - rss0;
    r->allocs = bx->tb.allocs + bx->tb.frees;
    if (!rc) {
        memcpy(r->sec, bx->tb.sec, sizeof r->sec);
        qsort(dt, (size_t)steps, sizeof *dt, cmp_double);
        r->median_s = steps % 2 ? dt[steps / 2] : 0.5 * (dt[steps / 2 - 1] + dt[steps / 2]);
        r->best_s = dt[0];
    }
    free(dt);
    return rc;
}

static int open_loader(ms_loader **L, ms_data *d, const ms_config *cfg) {
    ms_loader_opts lo;
    ms_loader_opts_from_config(&lo, cfg, 1, 0, 1);
    ms_io_err err = {0};
    if (ms_loader_open(L, d, cfg, &lo, &err)) {
        fprintf(stderr, "modsquad: error: %s\n", err.msg);
        return -1;
    }
    return 0;
}

typedef struct {
    const char *config;
    int steps, warmup, json, threads;
    const char *device;
    int B, accum, T, n_shapes, peak;
    gemm_shape shapes[MAX_SHAPES];
    double flops_step;          /* 3 x forward FLOPs of a step's images */
    run_result mem, real;
    double rss_bytes, plan_bytes;
    double rss_base_bytes;      /* resident before the model: program, libraries, data, loader */
    ms_bench_infer infer;
} report;

static double gflops(const report *rp, const run_result *r) { return rp->flops_step / r->median_s / 1e9; }

static void print_text(const report *rp) {
    const gemm_shape *pk = &rp->shapes[rp->peak];
    int imgs = rp->B * rp->accum;
    printf("modsquad bench %s: %s backend, %d threads; %d images x %d tasks per step; %d steps after %d warmup\n",
           rp->config, rp->device, rp->threads, imgs, rp->T, rp->steps, rp->warmup);
    printf("GEMM peak     %.1f GFLOP/s: cblas_sgemm, best of the shapes below (%s)\n", pk->gflops, pk->what);
    for (int i = 0; i < rp->n_shapes; i++)
        printf("                %5d x %5d x %5d  %7.1f GFLOP/s  %s\n", rp->shapes[i].M, rp->shapes[i].K,
               rp->shapes[i].N, rp->shapes[i].gflops, rp->shapes[i].what);
    printf("model FLOPs   %.3f GFLOP per step: 3 x forward FLOPs (forward + backward by the 3x\n"
           "              convention) of ms_model_flops over %d tasks x %d images\n",
           rp->flops_step / 1e9, rp->T, imgs);
    const run_result *runs[2] = {&rp->mem, &rp->real};
    const char *names[2] = {"in-memory", "real loader"};
    /* The best step next to the median: on a shared machine the peak (a best of repetitions)
     * compares with the step least slowed down by other processes. */
    for (int i = 0; i < 2; i++)
        printf("%-13s step %.1f ms (median; best %.1f), %.2f images/s, %.2f GFLOP/s = %.3f of peak "
               "(best step %.3f)\n",
               names[i], runs[i]->median_s * 1e3, runs[i]->best_s * 1e3, imgs / runs[i]->median_s,
               gflops(rp, runs[i]), gflops(rp, runs[i]) / pk->gflops,
               rp->flops_step / runs[i]->best_s / 1e9 / pk->gflops);
    printf("loader cost   real-loader step / in-memory step = %.3f\n", rp->real.median_s / rp->mem.median_s);
    printf("time shares   of the real-loader steps (timed backend ops; data = waiting in the loader):\n");
    double timed = 0;
    for (int c = 0; c < MS_CAT_N; c++) {
        printf("                %-18s %5.1f%%\n", ms_time_cat_names[c], 100 * rp->real.sec[c] / rp->real.total_s);
        timed += rp->real.sec[c];
    }
    printf("                %-18s %5.1f%%  (host code between ops)\n", "untimed",
           100 * fmax(0, 1 - timed / rp->real.total_s));
    printf("memory        peak RSS %.1f MB against the plan's %.1f MB (%.2fx): %.1f MB before the\n"
           "              model existed (program, libraries, data index, loader), %.1f MB since (%.2fx)\n",
           rp->rss_bytes / 1e6, rp->plan_bytes / 1e6, rp->rss_bytes / rp->plan_bytes,
           rp->rss_base_bytes / 1e6, (rp->rss_bytes - rp->rss_base_bytes) / 1e6,
           (rp->rss_bytes - rp->rss_base_bytes) / rp->plan_bytes);
    for (int i = 0; i < 2; i++)
        printf("%-13s %ld backend allocations, host heap %+.0f bytes, RSS %+.1f MB over the %s steps\n",
               i ? "" : "allocation", runs[i]->allocs, runs[i]->heap_growth, runs[i]->rss_growth / 1e6,
               names[i]);
    ms_bench_infer_print_text(&rp->infer);
}

static void print_json(const report *rp) {
    const gemm_shape *pk = &rp->shapes[rp->peak];
    int imgs = rp->B * rp->accum;
    printf("{\"config\": \"%s\", \"device\": \"%s\", \"threads\": %d, \"images_per_step\": %d, "
           "\"tasks\": %d, \"steps\": %d, \"warmup\": %d,\n",
           rp->config, rp->device, rp->threads, imgs, rp->T, rp->steps, rp->warmup);
    printf(" \"gemm_peak_gflops\": %.4f, \"gemm_peak_shape\": [%d, %d, %d], \"gemm_shapes\": [", pk->gflops,
           pk->M, pk->K, pk->N);
    for (int i = 0; i < rp->n_shapes; i++)
        printf("%s{\"m\": %d, \"k\": %d, \"n\": %d, \"gflops\": %.4f}", i ? ", " : "", rp->shapes[i].M,
               rp->shapes[i].K, rp->shapes[i].N, rp->shapes[i].gflops);
    printf("],\n \"flops_per_step\": %.6g,\n", rp->flops_step);
    const run_result *runs[2] = {&rp->mem, &rp->real};
    const char *names[2] = {"memory", "loader"};
    for (int i = 0; i < 2; i++)
        printf(" \"step_ms_%s\": %.4f, \"images_per_s_%s\": %.4f, \"gflops_%s\": %.4f, "
               "\"peak_fraction_%s\": %.5f, \"best_step_ms_%s\": %.4f, "
               "\"best_peak_fraction_%s\": %.5f,\n",
               names[i], runs[i]->median_s * 1e3, names[i], imgs / runs[i]->median_s, names[i],
               gflops(rp, runs[i]), names[i], gflops(rp, runs[i]) / pk->gflops, names[i],
               runs[i]->best_s * 1e3, names[i], rp->flops_step / runs[i]->best_s / 1e9 / pk->gflops);
    printf(" \"loader_vs_memory\": %.5f,\n \"share\": {", rp->real.median_s / rp->mem.median_s);
    double timed = 0;
    for (int c = 0; c < MS_CAT_N; c++) {
        printf("\"%s\": %.5f, ", ms_time_cat_names[c], rp->real.sec[c] / rp->real.total_s);
        timed += rp->real.sec[c];
    }
    printf("\"untimed\": %.5f},\n", fmax(0, 1 - timed / rp->real.total_s));
    printf(" \"peak_rss_mb\": %.3f, \"plan_mb\": %.3f, \"rss_vs_plan\": %.5f, "
           "\"rss_before_model_mb\": %.3f, \"rss_model_vs_plan\": %.5f,\n",
           rp->rss_bytes / 1e6, rp->plan_bytes / 1e6,
           rp->rss_bytes / rp->plan_bytes, rp->rss_base_bytes / 1e6,
           (rp->rss_bytes - rp->rss_base_bytes) / rp->plan_bytes);
    for (int i = 0; i < 2; i++)
        printf(" \"step_allocs_%s\": %ld, \"heap_growth_bytes_%s\": %.0f, \"rss_growth_mb_%s\": %.3f,\n",
               names[i], runs[i]->allocs, names[i], runs[i]->heap_growth, names[i],
               runs[i]->rss_growth / 1e6);
    ms_bench_infer_print_json(&rp->infer);
    printf(" \"infer_reps\": %d}\n", rp->infer.reps);
}

static int parse_count(const char *s, int min, const char *opt, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || v < min || v > 1000000)
        return ms_usage_error("bench", "%s needs a whole number >= %d, not '%s'", opt, min, s);
    *out = (int)v;
    return 0;
}

/* "3", "0.5" or "3%": a percentage in [0, 100]. */
static int parse_percent(const char *s, double *out) {
    char *end;
    double v = strtod(s, &end);
    if (end != s && *end == '%') end++;
    if (end == s || *end || !isfinite(v) || v < 0 || v > 100)
        return ms_usage_error("bench", "--threshold takes a percentage from 0 to 100, not '%s'", s);
    *out = v;
    return 0;
}

/* The index of the inference line's task (NULL: the first), or -1 after saying which exist. */
static int inference_task(const ms_config *cfg, const char *name, const char *config) {
    if (!name) return 0;
    int t = ms_config_task_index(cfg, name);
    if (t >= 0) return t;
    char list[MS_MAX_TASKS * (MS_NAME_MAX + 2)] = "";
    for (int i = 0; i < cfg->data.tasks.n; i++) {
        size_t n = strlen(list);
        snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "", cfg->data.tasks.name[i]);
    }
    fprintf(stderr, "modsquad: error: --extract %s: not a task of %s; its data.tasks are %s\n", name,
            config, list);
    return -1;
}

int cmd_bench(int argc, char **argv) {
    static const struct option opts[] = {{"steps", required_argument, 0, 'n'},
                                         {"warmup", required_argument, 0, 'w'},
                                         {"extract", required_argument, 0, 'x'},
                                         {"threshold", required_argument, 0, 'T'},
                                         {"json", no_argument, 0, 'j'},
                                         {"set", required_argument, 0, 's'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    static report rp;
    memset(&rp, 0, sizeof rp);
    rp.steps = 10, rp.warmup = 2, rp.config = DEFAULT_CONFIG;
    const char *sets[MAX_SETS], *infer_task = NULL;
    double threshold = -1; /* < 0: eval.usage_threshold */
    int n_sets = 0, c;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "n:w:x:T:js:h", opts, NULL)) != -1) {
        switch (c) {
        case 'n': if (parse_count(optarg, 1, "--steps", &rp.steps)) return MS_EXIT_USAGE; break;
        case 'w': if (parse_count(optarg, 0, "--warmup", &rp.warmup)) return MS_EXIT_USAGE; break;
        case 'x': infer_task = optarg; break;
        case 'T': if (parse_percent(optarg, &threshold)) return MS_EXIT_USAGE; break;
        case 'j': rp.json = 1; break;
        case 's':
            if (n_sets == MAX_SETS) return ms_usage_error("bench", "at most %d --set options", MAX_SETS);
            sets[n_sets++] = optarg;
            break;
        case 'h': usage(stdout); return 0;
        default: return ms_usage_error("bench", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind > 1) return ms_usage_error("bench", "one CONFIG only");
    if (optind < argc) rp.config = argv[optind];

    static bench bx_s;
    bench *bx = &bx_s;
    memset(bx, 0, sizeof *bx);
    if (ms_cli_load_config(&bx->cfg, rp.config, n_sets, sets)) return 1;
    ms_config *cfg = &bx->cfg;
    int infer_t = inference_task(cfg, infer_task, rp.config);
    if (infer_t < 0) return 1;
    if (threshold < 0) threshold = cfg->eval.usage_threshold;
    bx->real = ms_cli_open_backend(cfg);
    if (!bx->real) return 1;
    ms_timed_backend_init(&bx->tb, bx->real);
    int rc = 1;
    ms_data *data = NULL;
    ms_loader *L = NULL;
    ms_io_err err = {0};
    ms_data_open_opts dopt = {0};
    if (ms_data_open(&data, cfg, cfg->data.train_split, &dopt, &err)) {
        fprintf(stderr, "modsquad: error: %s\n", err.msg);
        goto out;
    }
    if (open_loader(&L, data, cfg)) goto out;
    if (ms_loader_steps_per_epoch(L) < 1) {
        fprintf(stderr, "modsquad: error: %s split '%s' has %lld samples, fewer than one batch of %d\n",
                cfg->data.root, cfg->data.train_split, (long long)data->n, cfg->train.batch_size);
        goto out;
    }
    bx->B = cfg->train.batch_size;
    bx->accum = cfg->train.accum_steps;
    rp.B = bx->B, rp.accum = bx->accum, rp.T = cfg->data.tasks.n;
    rp.device = bx->real->name, rp.threads = bx->real->threads;
    rp.rss_base_bytes = current_rss();
    bx->model = ms_model_create(cfg, &bx->tb.be, &(ms_model_opts){.batch = bx->B});
    ms_model_init(bx->model, (uint64_t)cfg->run.seed);
    long total = (long)rp.warmup * 2 + rp.steps * 2 + 1;
    if (ms_optim_create(&bx->opt, &bx->tb.be, ms_model_params(bx->model), &cfg->train, 1, total)) {
        fprintf(stderr, "modsquad: error: out of device memory for the optimizer state\n");
        goto out;
    }
    rp.flops_step = 3.0 * ms_bench_forward_flops(bx->model, rp.T) * bx->B * bx->accum;
    rp.plan_bytes = (double)ms_model_memory(bx->model).total;

    /* In memory: one batch read once and reused, so no step waits for data. */
    ms_batch *batch = NULL;
    if (one_step(bx, L, &batch) < 0 || run_steps(bx, NULL, &batch, rp.warmup, rp.steps, &rp.mem))
        goto out;
    /* A fresh loader, so the batches prefetched during the in-memory run do not flatter it. */
    ms_loader_close(L);
    L = NULL;
    if (open_loader(&L, data, cfg) || run_steps(bx, L, &batch, rp.warmup, rp.steps, &rp.real)) goto out;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    rp.rss_bytes = (double)ru.ru_maxrss * 1024.0; /* Linux reports KiB */

    /* Inference after the peak RSS was read: the two single-task models it builds are not
     * part of the training step's memory. */
    if (ms_bench_infer_run(bx->model, cfg, &bx->tb.be, batch, infer_t, threshold, rp.warmup,
                           rp.steps, &rp.infer))
        goto out;

    /* The GEMM peak last, so its large buffers do not count in the step's peak RSS. */
    rp.n_shapes = model_shapes(rp.shapes, cfg, bx->B, ms_vit_tokens_per_image(ms_model_backbone(bx->model)));
    rp.peak = measure_peak(rp.shapes, rp.n_shapes);
    if (rp.json) print_json(&rp);
    else print_text(&rp);
    rc = 0;
out:
    if (L) ms_loader_close(L);
    ms_data_close(data);
    if (bx->model) ms_model_destroy(bx->model);
    if (bx->opt.be) ms_optim_destroy(&bx->opt);
    bx->real->destroy(bx->real);
    return rc;
}
