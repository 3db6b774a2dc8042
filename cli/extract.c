/* modsquad extract --task NAME --checkpoint P --out Q [--threshold PCT] [--split S] [--images N]
 *                  [--json FILE] [--set key=value ...]
 *
 * Takes one task's standalone model out of a trained multi-task checkpoint (METHOD.md section 5,
 * model/extract.h): a calibration pass of the full model in evaluation mode measures how much
 * of the task's tokens select each expert, the experts above the threshold are kept (at least
 * top-k per layer), and Q is written atomically: a checkpoint of the same architecture for that
 * one task, which `modsquad eval --checkpoint Q` evaluates as it is.
 *
 * Started as several ranks (mpirun, srun; docs/parallel.md) the ranks split the calibration
 * pass (ms_cli_evaluate_dist sums the expert counts over them); rank 0 alone chooses, prints and
 * writes, so the result is that of one process. */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../kernels/util.h"
#include "../model/extract.h"
#include "../model/safetensors.h"
#include "commands.h"
#include "run.h"

#define MAX_SETS 64

static void usage(FILE *f) {
    fputs("Usage: modsquad extract --task NAME --checkpoint PATH --out PATH [--threshold PCT]\n"
          "                        [--split NAME] [--images N] [--json FILE] [--set key=value ...]\n"
          "\n"
          "Extracts task NAME's standalone model from a multi-task checkpoint (METHOD.md section\n"
          "5). The full model first runs in evaluation mode over the calibration images and\n"
          "counts, in every MoE layer, the share of the task's tokens that select each expert\n"
          "(its usage, in percent; a token selects top-k experts, so usages sum to 100 x k; the\n"
          "official main_pruning.py test 'share of selections > threshold / k' is the same).\n"
          "Experts used more than the threshold are kept; when fewer than top-k are, the top-k\n"
          "most used are (ties to the lower index). The extracted model keeps the shared weights,\n"
          "the kept experts, the task's routers with the rows of EVERY expert (so routing is\n"
          "exactly the full model's; a token slot that picks a dropped expert adds nothing), the\n"
          "task's embedding row and head. Without a dropped expert ever selected it computes\n"
          "exactly what the full model computes for the task. Architectures without MoE layers\n"
          "keep everything the task uses. The result is for evaluation and inference:\n"
          "  modsquad eval --checkpoint PATH\n"
          "\n"
          "Options:\n"
          "  -t, --task NAME        the task to extract (one of the checkpoint's data.tasks)\n"
          "  -c, --checkpoint PATH  weights written by modsquad train (e.g. RUN/last.safetensors)\n"
          "  -o, --out PATH         the extracted checkpoint (written atomically)\n"
          "  -T, --threshold PCT    keep experts used by more than PCT percent of the task's\n"
          "                         tokens, 0 to 100 (default: eval.usage_threshold, 3)\n"
          "  -S, --split NAME       calibration split (default: eval.split)\n"
          "  -n, --images N         calibration images, 0 = all (default: eval.calibration_images)\n"
          "  -j, --json FILE        also write a summary (kept experts, usage, params, FLOPs) as JSON\n"
          "  -s, --set KEY=VALUE    override a key of the stored config (e.g. data.root); the\n"
          "                         extracted checkpoint stores the config with the overrides\n"
          "      --comm-timeout S   with several ranks: the longest any rank waits for the\n"
          "                         others (default: MODSQUAD_COMM_TIMEOUT, else 600 s)\n"
          "  -h, --help             show this help\n"
          "\n"
          "Several ranks (mpirun, srun; docs/parallel.md) split the calibration images, each\n"
          "batch of eval.batch_size over all of them; rank 0 writes the results.\n",
          f);
}

/* "3", "0.5" or "3%": a percentage in [0, 100]. */
static int parse_percent(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end != s && *end == '%') end++;
    if (errno || end == s || *end || !isfinite(v) || v < 0 || v > 100) return -1;
    *out = v;
    return 0;
}

static int parse_count(const char *s, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 0 || v > INT_MAX) return -1;
    *out = v;
    return 0;
}

/* The output's directory exists (made if needed) and is writable, and the output is not the
 * checkpoint itself: checked before the calibration pass, which may take long. */
static int check_output(const char *out, const char *ckpt) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", out);
    char *d = dirname(dir);
    struct stat st;
    if (stat(out, &st) == 0 && S_ISDIR(st.st_mode)) {
        fprintf(stderr, "modsquad: error: --out %s is a directory; give the file to write, e.g. "
                "%s/extracted.safetensors\n", out, out);
        return -1;
    }
    if (ms_cli_make_dirs(d) != 0 || access(d, W_OK) != 0) {
        fprintf(stderr, "modsquad: error: cannot write %s: directory %s is not writable (%s)\n",
                out, d, strerror(errno));
        return -1;
    }
    if (stat(d, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "modsquad: error: cannot write %s: %s is not a directory, so the output "
                "is not writable there\n", out, d);
        return -1;
    }
    char a[PATH_MAX], b[PATH_MAX];
    if (realpath(out, a) && realpath(ckpt, b) && strcmp(a, b) == 0) {
        fprintf(stderr, "modsquad: error: --out %s is the checkpoint being extracted from; write "
                "the extracted model to another file\n", out);
        return -1;
    }
    return 0;
}

/* What extraction decided for one MoE layer. */
typedef struct {
    ms_moe_info info;
    double *usage;                 /* [E] percent of the task's tokens */
    int16_t *kept;                 /* [n_kept] of [E] */
    int n_kept;
    double dropped_share;          /* of the task's selections that went to dropped experts */
} layer_choice;

/* The experts of every MoE layer from the calibration counts of task t. */
static void choose(const ms_model *m, const ms_usage *u, int t, double threshold,
                   layer_choice *lc, ms_expert_sets *sets) {
    memset(sets, 0, sizeof *sets);
    int total = 0;
    for (int l = 0; l < u->layers; l++) {
        layer_choice *c = &lc[l];
        c->info = ms_model_moe_info(m, l);
        int E = c->info.E, K = c->info.K;
        c->usage = ms_calloc((size_t)E, sizeof *c->usage);
        c->kept = ms_calloc((size_t)E, sizeof *c->kept);
        const int64_t *counts = u->counts + ((size_t)l * u->T + t) * u->maxE;
        ms_extract_usage(counts, E, K, c->usage);
        c->n_kept = ms_extract_choose(c->usage, E, K, threshold, c->kept);
        int64_t all = 0, dropped = 0;
        for (int e = 0, k = 0; e < E; e++) {
            all += counts[e];
            if (k < c->n_kept && c->kept[k] == e)
                k++;
            else
                dropped += counts[e];
        }
        c->dropped_share = all ? (double)dropped / (double)all : 0.0;
        MS_ASSERT(total + c->n_kept <= MS_MAX_KEPT);
        memcpy(sets->expert + total, c->kept, (size_t)c->n_kept * sizeof(int16_t));
        sets->count[l] = c->n_kept;
        total += c->n_kept;
    }
    sets->layers = u->layers;
}

static void print_layers(const layer_choice *lc, int layers, const char *task, double threshold) {
    printf("\nexperts kept for %s (usage: %% of its tokens that select the expert; kept above "
           "%g%%, at least top-k)\n", task, threshold);
    for (int l = 0; l < layers; l++) {
        const layer_choice *c = &lc[l];
        int E = c->info.E;
        printf("  block %d %-9s keeps %2d of %2d:", c->info.block,
               c->info.attn ? "attention" : "MLP", c->n_kept, E);
        for (int k = 0; k < c->n_kept; k++) printf(" %d (%.1f%%)", c->kept[k], c->usage[c->kept[k]]);
        printf("\n  %*s dropped:", 24, "");
        int any = 0;
        for (int e = 0, k = 0; e < E; e++) {
            if (k < c->n_kept && c->kept[k] == e) {
                k++;
                continue;
            }
            printf(" %d (%.1f%%)", e, c->usage[e]);
            any = 1;
        }
        if (!any) printf(" none");
        printf("\n");
    }
}

/* The FLOPs per image of the extracted model when its token slots route as in the calibration
 * pass: the pairs routed to dropped experts skip their expert GEMMs. */
static double routed_flops(double flops, const layer_choice *lc, int layers, int N) {
    for (int l = 0; l < layers; l++)
        flops -= (double)N * lc[l].info.K * lc[l].dropped_share * lc[l].info.pair_flops;
    return flops;
}

typedef struct {
    double params, active, flops, flops_routed;
} model_cost;

static model_cost cost_of(const ms_model *m, int t) {
    ms_param_counts pc;
    ms_model_param_counts(m, &pc);
    double f = ms_model_flops(m, t);
    return (model_cost){pc.total, pc.active[t], f, f};
}

static void print_costs(const char *task, model_cost full, model_cost ext) {
    printf("\n%-44s %14s %14s\n", "", "full model", "extracted");
    printf("%-44s %12.3f M %12.3f M  (%.1f%%)\n", "parameters", full.params / 1e6, ext.params / 1e6,
           100.0 * ext.params / full.params);
    char what[96];
    snprintf(what, sizeof what, "parameters one %s token uses", task);
    printf("%-44s %12.3f M %12.3f M\n", what, full.active / 1e6, ext.active / 1e6);
    snprintf(what, sizeof what, "forward GFLOPs per image (%s)", task);
    printf("%-44s %14.5g %14.5g\n", what, full.flops / 1e9, ext.flops / 1e9);
    if (ext.flops_routed != ext.flops)
        printf("%-44s %14s %14.5g\n", "  with the calibration routing", "", ext.flops_routed / 1e9);
    printf("(FLOPs count top-k experts per token; in the extracted model a token slot routed to a "
           "dropped expert skips that expert's GEMMs)\n");
}

/* s as a JSON string literal (paths may hold quotes, backslashes or control characters). */
static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static int write_json(const char *path, const char *ckpt, const char *out, const char *task,
                      double threshold, const layer_choice *lc, int layers, model_cost full,
                      model_cost ext) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "modsquad: error: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    fputs("{\n  \"task\": ", f);
    json_string(f, task);
    fputs(",\n  \"checkpoint\": ", f);
    json_string(f, ckpt);
    fputs(",\n  \"out\": ", f);
    json_string(f, out);
    fputs(",\n", f);
    fprintf(f, "  \"threshold\": %.17g,\n", threshold);
    fprintf(f, "  \"params_full\": %.0f,\n  \"params_extracted\": %.0f,\n", full.params,
            ext.params);
    fprintf(f, "  \"active_params_full\": %.0f,\n  \"active_params_extracted\": %.0f,\n",
            full.active, ext.active);
    fprintf(f, "  \"flops_full\": %.17g,\n  \"flops_extracted\": %.17g,\n", full.flops, ext.flops);
    fprintf(f, "  \"flops_extracted_routed\": %.17g,\n  \"layers\": [", ext.flops_routed);
    for (int l = 0; l < layers; l++) {
        const layer_choice *c = &lc[l];
        fprintf(f, "%s\n    {\"block\": %d, \"kind\": \"%s\", \"experts\": %d, \"topk\": %d, "
                "\"kept\": [", l ? "," : "", c->info.block, c->info.attn ? "attention" : "mlp",
                c->info.E, c->info.K);
        for (int k = 0; k < c->n_kept; k++) fprintf(f, "%s%d", k ? ", " : "", c->kept[k]);
        fprintf(f, "], \"usage\": [");
        for (int e = 0; e < c->info.E; e++) fprintf(f, "%s%.6g", e ? ", " : "", c->usage[e]);
        fprintf(f, "], \"dropped_share\": %.6g}", c->dropped_share);
    }
    fprintf(f, "%s]\n}\n", layers ? "\n  " : "");
    if (fclose(f) != 0) {
        fprintf(stderr, "modsquad: error: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

typedef struct {
    const char *task, *ckpt, *out, *split, *json, *timeout;
    double threshold; /* < 0: eval.usage_threshold */
    long images;      /* < 0: eval.calibration_images */
    const char *sets[MAX_SETS];
    int n_sets;
} args;

static int parse_args(int argc, char **argv, args *a, int *done) {
    static const struct option opts[] = {{"task", required_argument, 0, 't'},
                                         {"checkpoint", required_argument, 0, 'c'},
                                         {"out", required_argument, 0, 'o'},
                                         {"threshold", required_argument, 0, 'T'},
                                         {"split", required_argument, 0, 'S'},
                                         {"images", required_argument, 0, 'n'},
                                         {"json", required_argument, 0, 'j'},
                                         {"set", required_argument, 0, 's'},
                                         {"comm-timeout", required_argument, 0, 'C'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    memset(a, 0, sizeof *a);
    a->threshold = -1, a->images = -1;
    *done = 0;
    opterr = 0;
    int c;
    /* the leading ':' tells a missing value (':') from an unknown option ('?') */
    while ((c = getopt_long(argc, argv, ":t:c:o:T:S:n:j:s:h", opts, NULL)) != -1) {
        switch (c) {
        case 't': a->task = optarg; break;
        case 'c': a->ckpt = optarg; break;
        case 'o': a->out = optarg; break;
        case 'S': a->split = optarg; break;
        case 'j': a->json = optarg; break;
        case 'C': a->timeout = optarg; break;
        case 'T':
            if (parse_percent(optarg, &a->threshold))
                return ms_usage_error("extract", "--threshold takes a percentage from 0 to 100, "
                                      "not '%s'", optarg);
            break;
        case 'n':
            if (parse_count(optarg, &a->images))
                return ms_usage_error("extract", "--images takes a count of 0 (all) or more, "
                                      "not '%s'", optarg);
            break;
        case 's':
            if (a->n_sets == MAX_SETS)
                return ms_usage_error("extract", "at most %d --set options", MAX_SETS);
            a->sets[a->n_sets++] = optarg;
            break;
        case 'h': usage(stdout); *done = 1; return 0;
        case ':': return ms_usage_error("extract", "option '%s' needs a value", argv[optind - 1]);
        default: return ms_usage_error("extract", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc) return ms_usage_error("extract", "unexpected argument '%s'", argv[optind]);
    if (!a->task) return ms_usage_error("extract", "missing --task NAME");
    if (!a->ckpt) return ms_usage_error("extract", "missing --checkpoint PATH");
    if (!a->out) return ms_usage_error("extract", "missing --out PATH");
    if (ms_cli_comm_timeout(a->timeout) < 0)
        return ms_usage_error("extract", "%s needs a positive number of seconds, not '%s'",
                              a->timeout ? "--comm-timeout" : "MODSQUAD_COMM_TIMEOUT",
                              a->timeout ? a->timeout : getenv("MODSQUAD_COMM_TIMEOUT"));
    return 0;
}

/* The checkpoint's config (with the --set overrides) and weights file. */
static int load_checkpoint(const args *a, ms_st_file *w, ms_config *cfg) {
    if (ms_cli_load_checkpoint(w, cfg, a->ckpt, a->n_sets, a->sets)) return -1;
    if (cfg->model.kept_experts.layers) {
        fprintf(stderr, "modsquad: error: %s is already a model extracted for task %s "
                "(model.kept_experts is set); extract from the full model's checkpoint\n",
                a->ckpt, cfg->data.tasks.name[0]);
        return -1;
    }
    return 0;
}

static int find_task(const ms_config *cfg, const args *a) {
    int t = ms_config_task_index(cfg, a->task);
    if (t >= 0) return t;
    char hint[256], list[MS_MAX_TASKS * (MS_NAME_MAX + 2)] = "";
    ms_config_task_hint(cfg, a->task, hint, sizeof hint);
    for (int i = 0; i < cfg->data.tasks.n; i++) {
        size_t n = strlen(list);
        snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "", cfg->data.tasks.name[i]);
    }
    fprintf(stderr, "modsquad: error: --task %s: not a task of %s%s; its tasks are %s\n",
            a->task, a->ckpt, hint, list);
    return -1;
}

/* Metadata of the extracted checkpoint: the usual (config, step, fingerprint) plus where it
 * came from. */
static int write_extracted(const args *a, const ms_config *ext_cfg, const ms_model *ext,
                           const float *data, long step, double threshold, const char *calib) {
    ms_cli_meta meta;
    ms_cli_meta_make(&meta, ext_cfg, step);
    ms_kv kv[16];
    int n = 0;
    for (int i = 0; i < meta.n; i++) kv[n++] = meta.kv[i];
    char thr[32];
    snprintf(thr, sizeof thr, "%.17g", threshold);
    kv[n++] = (ms_kv){"modsquad.extract.source", a->ckpt};
    kv[n++] = (ms_kv){"modsquad.extract.task", a->task};
    kv[n++] = (ms_kv){"modsquad.extract.threshold", thr};
    kv[n++] = (ms_kv){"modsquad.extract.calibration", calib};
    char err[1024];
    const ms_param_table *pt = ms_model_params(ext);
    int rc = ms_safetensors_write(a->out, pt, data, kv, n, err, sizeof err);
    if (rc)
        fprintf(stderr, "modsquad: error: %s\n", err);
    else
        printf("\nwrote %s: %d tensors, %.2f MB (step %ld; evaluate it with modsquad eval "
               "--checkpoint %s)\n", a->out, pt->n, (double)ms_params_count(pt) * 4 / 1e6, step,
               a->out);
    ms_cli_meta_free(&meta);
    return rc;
}

/* The calibration pass over the ranks of `world`: u receives every rank's expert selections
 * of the split. 0, or -1 on every rank. */
static int calibrate(ms_model *m, ms_backend *be, int B, const ms_config *cfg, const char *split,
                     long images, ms_world *world, ms_usage *u, ms_data **d, char *calib,
                     size_t cap) {
    ms_io_err ierr = {0};
    int rc = ms_data_open(d, cfg, split, &(ms_data_open_opts){0}, &ierr);
    if (rc) fprintf(stderr, "modsquad: error: %s\n", ierr.msg);
    if (ms_cli_agree(world, rc)) return -1;
    long n_img = images > 0 && images < (*d)->n ? images : (long)(*d)->n;
    snprintf(calib, cap, "%s/%s, %ld images", cfg->data.root, split, n_img);
    if (world->rank == 0) {
        printf("calibration: the full model in evaluation mode on %s", calib);
        if (world->size > 1)
            printf(" (%d ranks, %d of each batch's %d images per rank)", world->size, B,
                   B * world->size);
        printf("\n");
        fflush(stdout);
    }
    ms_metric_result res[MS_MAX_TASKS];
    ms_usage_init(u, m, cfg->data.tasks.n);
    return ms_cli_evaluate_dist(m, be, B, *d, cfg, images, res, u, NULL, NULL, world) ? -1 : 0;
}

int cmd_extract(int argc, char **argv) {
    args a;
    int done;
    int rc = parse_args(argc, argv, &a, &done);
    if (rc || done) return rc;
    double t0 = ms_now();

    static ms_config cfg, ext_cfg;
    ms_st_file w = {0};
    ms_backend *be = NULL;
    ms_world *world = NULL;
    ms_model *m = NULL, *ext = NULL;
    ms_data *d = NULL;
    float *host = NULL, *ext_host = NULL;
    ms_usage u = {0};
    layer_choice *lc = NULL;
    static ms_expert_sets sets;
    int layers = 0;
    rc = 1;
    char err[1024];
    if (load_checkpoint(&a, &w, &cfg)) goto out;
    int t = find_task(&cfg, &a);
    if (t < 0) goto out;
    ms_comm_env env;
    ms_comm_env_detect(&env);
    if (ms_cli_check_eval_world(&cfg, &env, "extract")) goto out;
    /* Rank 0 writes the output (checked before the calibration, which may take long); its
     * directory is also where NCCL without MPI meets. */
    int bad_out = env.rank == 0 && check_output(a.out, a.ckpt);
    if (bad_out && env.world == 1) goto out;
    const char *step_text = ms_st_meta(&w, "modsquad.step");
    long step = step_text ? strtol(step_text, NULL, 10) : 0;
    double threshold = a.threshold >= 0 ? a.threshold : cfg.eval.usage_threshold;
    long images = a.images >= 0 ? a.images : cfg.eval.calibration_images;
    const char *split = a.split ? a.split : cfg.eval.split;

    be = ms_cli_open_backend_rank(&cfg, &env);
    if (!be) goto out;
    {
        char rdir[4096];
        snprintf(rdir, sizeof rdir, "%s", a.out);
        world = ms_cli_open_world(&cfg, &env, be, ms_cli_comm_timeout(a.timeout), dirname(rdir));
    }
    if (!world || ms_cli_agree(world, bad_out) || ms_cli_same_config(world, &cfg)) goto out;
    const int root = world->rank == 0;
    if (root)
        printf("modsquad extract %s from %s (step %ld, model.arch %s, %d tasks)\n", a.task, a.ckpt,
               step, ms_arch_names[cfg.model.arch], cfg.data.tasks.n);
    /* Each rank evaluates its share of every batch of eval.batch_size images. */
    int B = cfg.eval.batch_size / world->size;
    ms_model_opts mo = {.batch = B, .rank = world->rank};
    if (world->size > 1)
        mo.stats_sum = ms_world_sum_hook, mo.stats_ctx = world, mo.world = world->size;
    m = ms_model_create(&cfg, be, &mo);
    const ms_param_table *pt = ms_model_params(m);
    host = ms_calloc(pt->total, sizeof(float));
    int loaded = ms_safetensors_load_params(&w, a.ckpt, pt, host, err, sizeof err);
    if (loaded) fprintf(stderr, "modsquad: error: %s\n", err);
    if (ms_cli_agree(world, loaded)) goto out;
    be->upload(be, ms_model_param_data(m), host, pt->total * sizeof(float));

    layers = ms_model_moe_layers(m);
    char calib[MS_PATH_MAX + 128] = "none (no MoE layers)";
    lc = ms_calloc(layers ? (size_t)layers : 1, sizeof *lc);
    if (layers) {
        if (calibrate(m, be, B, &cfg, split, images, world, &u, &d, calib, sizeof calib))
            goto out;
        if (!root) {
            rc = 0;
            goto out;
        }
        choose(m, &u, t, threshold, lc, &sets);
        print_layers(lc, layers, a.task, threshold);
    } else {
        if (!root) {
            rc = 0;
            goto out;
        }
        memset(&sets, 0, sizeof sets);
        printf("model.arch %s has no MoE layers: the extracted model keeps the weights %s uses "
               "(no calibration)\n", ms_arch_names[cfg.model.arch], a.task);
    }

    char name[4200];
    snprintf(name, sizeof name, "%s (extracted for %s)", a.ckpt, a.task);
    ms_config_errors errs;
    ms_config_errors_init(&errs);
    if (ms_extract_config(&ext_cfg, &cfg, t, &sets, name, &errs)) {
        ms_config_errors_print(&errs, stderr);
        ms_config_errors_free(&errs);
        goto out;
    }
    ms_config_errors_free(&errs);
    ext = ms_model_create(&ext_cfg, be, &(ms_model_opts){.batch = 1, .plan_only = 1});
    ext_host = ms_malloc(ms_model_params(ext)->total * sizeof(float));
    if (ms_extract_params(pt, host, t, ext, ext_host, err, sizeof err)) {
        fprintf(stderr, "modsquad: error: %s: %s\n", a.ckpt, err);
        goto out;
    }
    model_cost full = cost_of(m, t), small = cost_of(ext, 0);
    small.flops_routed =
        routed_flops(small.flops, lc, layers, ms_vit_tokens_per_image(ms_model_backbone(ext)));
    print_costs(a.task, full, small);
    if (write_extracted(&a, &ext_cfg, ext, ext_host, step, threshold, calib)) goto out;
    if (a.json && write_json(a.json, a.ckpt, a.out, a.task, threshold, lc, layers, full, small))
        goto out;
    printf("done in %.1f s\n", ms_now() - t0);
    rc = 0;
out:
    ms_usage_free(&u);
    ms_data_close(d);
    for (int l = 0; l < layers; l++) free(lc[l].usage), free(lc[l].kept);
    free(lc);
    free(host);
    free(ext_host);
    if (ext) ms_model_destroy(ext);
    if (m) ms_model_destroy(m);
    ms_world_close(world);
    if (be) be->destroy(be);
    ms_safetensors_free(&w);
    return rc;
}
