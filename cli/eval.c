/* modsquad eval --checkpoint P [--split NAME] [--out FILE] [--baseline FILE]
 *               [--save-predictions DIR] [--set k=v ...]
 * modsquad eval --config CONFIG ...   (the freshly initialised model: the reference "before")
 *
 * Evaluates a checkpoint on a split with the metrics of DATASETS.md (the dataset of the config
 * stored in the checkpoint), prints a table, writes the metrics as JSON, the task x expert usage
 * of every MoE layer as CSV and as a PNG heatmap, Delta_m against a baseline metrics file, and
 * optionally every prediction in the dataset's own file formats (predictions.h).
 *
 * Started as several ranks (mpirun, srun; docs/parallel.md) the ranks split every batch
 * (ms_cli_evaluate_dist) and sum the metric accumulators and expert counts, so the results
 * equal one process's; rank 0 alone prints and writes them. --save-predictions: every rank
 * writes the files of its own images into DIR, rank 0 the README. */
#include <getopt.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/util.h"
#include "../model/heatmap.h"
#include "../model/safetensors.h"
#include "../model/tasks.h"
#include "commands.h"
#include "predictions.h"
#include "run.h"

#define MAX_SETS 64

static void usage(FILE *f) {
    fprintf(f,
            "Usage: modsquad eval --checkpoint PATH [--split NAME] [--out FILE] [--baseline FILE]\n"
            "                     [--save-predictions DIR] [--set key=value ...]\n"
            "       modsquad eval --config CONFIG [same options]\n\n"
            "Evaluates a checkpoint (its config is stored in it) on a split of its dataset, or\n"
            "with --config the model of CONFIG as initialised from run.seed (before training).\n\n"
            "Options:\n"
            "  -c, --checkpoint PATH  weights written by modsquad train (e.g. RUN/last.safetensors)\n"
            "  -C, --config CONFIG    evaluate the initial model of CONFIG instead\n"
            "  -S, --split NAME       split to evaluate (default: eval.split of the config)\n"
            "  -o, --out FILE         metrics JSON (default: next to the checkpoint,\n"
            "                         metrics-SPLIT-stepN.json, or metrics-init.json in the run\n"
            "                         directory with --config); usage CSV and PNG go beside it\n"
            "  -b, --baseline FILE    a metrics JSON of the reference (e.g. single-task runs):\n"
            "                         prints Delta_m of this model against it\n"
            "  -p, --save-predictions DIR\n"
            "                         write every prediction as the file the dataset holds for\n"
            "                         that sample (DIR/TASK/..., encodings in DIR/README.txt and\n"
            "                         docs/datasets.md), at the evaluated size\n"
            "  -s, --set KEY=VALUE    override a key of the stored config (e.g. data.root)\n"
            "      --comm-timeout S   with several ranks: the longest any rank waits for the\n"
            "                         others (default: MODSQUAD_COMM_TIMEOUT, else %.0f s)\n"
            "  -h, --help             show this help\n\n"
            "Several ranks (mpirun, srun; docs/parallel.md) split every batch of\n"
            "eval.batch_size images; rank 0 prints and writes the results, and with\n"
            "--save-predictions every rank writes its own images' files.\n",
            MS_COMM_TIMEOUT_DEFAULT);
}

/* Writes usage.csv and usage.png next to `json_path`. */
static int write_usage(const char *json_path, const ms_config *cfg, const ms_model *m,
                       const ms_usage *u) {
    if (!u->layers) return 0;
    char base[4300], csv[4400], png[4400];
    snprintf(base, sizeof base, "%s", json_path);
    char *dot = strrchr(base, '.');
    if (dot && !strchr(dot, '/')) *dot = 0;
    snprintf(csv, sizeof csv, "%s-usage.csv", base);
    snprintf(png, sizeof png, "%s-usage.png", base);
    FILE *f = fopen(csv, "w");
    if (!f) {
        fprintf(stderr, "modsquad: error: cannot write %s\n", csv);
        return -1;
    }
    fprintf(f, "layer,block,kind,task,expert,percent\n");
    ms_heatmap_panel panels[64];
    static char titles[64][96];
    const char *rows[MS_MAX_TASKS];
    double *values = ms_calloc((size_t)u->layers * u->T * u->maxE, sizeof(double));
    for (int t = 0; t < u->T; t++) rows[t] = cfg->data.tasks.name[t];
    size_t off = 0; /* panel l's values: [T, E[l]] starting here */
    for (int l = 0; l < u->layers; l++) {
        ms_moe_info mi = ms_model_moe_info(m, l);
        for (int t = 0; t < u->T; t++)
            for (int e = 0; e < u->E[l]; e++) {
                double p = ms_usage_percent(u, l, t, e);
                values[off + (size_t)t * u->E[l] + e] = p;
                fprintf(f, "%d,%d,%s,%s,%d,%.4f\n", l, mi.block, mi.attn ? "attention" : "mlp",
                        rows[t], e, p);
            }
        snprintf(titles[l], sizeof titles[l], "block %d %s (E=%d, k=%d): %% of each task's selections",
                 mi.block, mi.attn ? "attention" : "MLP", mi.E, mi.K);
        panels[l] = (ms_heatmap_panel){titles[l], u->T, u->E[l], rows, values + off, 0};
        off += (size_t)u->T * u->E[l];
    }
    fclose(f);
    char err[1024];
    int rc = ms_heatmap_write(png, "expert usage per task", u->layers, panels, err, sizeof err);
    free(values);
    if (rc) {
        fprintf(stderr, "modsquad: error: %s\n", err);
        return -1;
    }
    printf("usage: %s, %s\n", csv, png);
    return 0;
}

/* The metrics JSON: --out, else next to the checkpoint, else in the run directory (made). */
static void json_path(char *json, size_t cap, const char *out, const char *ckpt, const char *step,
                      const char *split, const ms_config *cfg) {
    char dir[4096];
    if (out) {
        snprintf(json, cap, "%s", out);
    } else if (!ckpt) {
        snprintf(dir, sizeof dir, "%s/%s", cfg->run.dir, cfg->run.name);
        snprintf(json, cap, "%s/metrics-init-%s.json", dir, split);
    } else {
        snprintf(dir, sizeof dir, "%s", ckpt);
        snprintf(json, cap, "%s/metrics-%s-step%s.json", dirname(dir), split, step ? step : "x");
    }
}

/* Rank 0's outputs after the evaluation: the table, the metrics JSON, the usage CSV and PNG
 * and Delta_m against the baseline. */
static int report(const ms_config *cfg, const ms_model *m, const ms_metric_result *res,
                  const ms_usage *u, const char *json, const char *baseline) {
    const int T = cfg->data.tasks.n;
    char err[1024];
    const char *names[MS_MAX_TASKS];
    const ms_task_def *defs[MS_MAX_TASKS];
    for (int t = 0; t < T; t++) {
        names[t] = cfg->data.tasks.name[t];
        defs[t] = ms_task_find(cfg->data.dataset, names[t]);
    }
    {
        char jdir[4300];
        snprintf(jdir, sizeof jdir, "%s", json);
        ms_cli_make_dirs(dirname(jdir));
    }
    if (ms_metrics_json_write(json, T, names, res, err, sizeof err)) {
        fprintf(stderr, "modsquad: error: %s\n", err);
        return -1;
    }
    printf("metrics: %s\n", json);
    if (write_usage(json, cfg, m, u)) return -1;
    if (baseline) {
        static ms_metrics_file bf;
        double dm;
        if (ms_metrics_json_read(baseline, &bf, err, sizeof err) ||
            ms_delta_m_baseline(T, defs, res, &bf, baseline, &dm, err, sizeof err)) {
            fprintf(stderr, "modsquad: error: %s\n", err);
            return -1;
        }
        printf("Delta_m against %s: %+.2f%%\n", baseline, dm);
    }
    return 0;
}

/* The checkpoint's weights into m (every rank reads the file itself). */
static int load_weights(ms_model *m, ms_backend *be, ms_st_file *w, const char *ckpt,
                        float **host) {
    char err[1024];
    const ms_param_table *pt = ms_model_params(m);
    *host = ms_calloc(pt->total, sizeof(float));
    if (ms_safetensors_load_params(w, ckpt, pt, *host, err, sizeof err)) {
        fprintf(stderr, "modsquad: error: %s\n", err);
        return -1;
    }
    be->upload(be, ms_model_param_data(m), *host, pt->total * sizeof(float));
    return 0;
}

int cmd_eval(int argc, char **argv) {
    static const struct option opts[] = {{"checkpoint", required_argument, 0, 'c'},
                                         {"config", required_argument, 0, 'C'},
                                         {"split", required_argument, 0, 'S'},
                                         {"out", required_argument, 0, 'o'},
                                         {"baseline", required_argument, 0, 'b'},
                                         {"save-predictions", required_argument, 0, 'p'},
                                         {"set", required_argument, 0, 's'},
                                         {"comm-timeout", required_argument, 0, 'T'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *ckpt = NULL, *config = NULL, *split = NULL, *out = NULL, *baseline = NULL;
    const char *save_dir = NULL, *timeout_arg = NULL;
    const char *sets[MAX_SETS];
    int n_sets = 0, c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "c:C:S:o:b:p:s:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': ckpt = optarg; break;
        case 'C': config = optarg; break;
        case 'S': split = optarg; break;
        case 'o': out = optarg; break;
        case 'b': baseline = optarg; break;
        case 'p': save_dir = optarg; break;
        case 'T': timeout_arg = optarg; break;
        case 's':
            if (n_sets == MAX_SETS) return ms_usage_error("eval", "at most %d --set options", MAX_SETS);
            sets[n_sets++] = optarg;
            break;
        case 'h': usage(stdout); return 0;
        default: return ms_usage_error("eval", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc) return ms_usage_error("eval", "unexpected argument '%s'", argv[optind]);
    if (!ckpt == !config) return ms_usage_error("eval", "give --checkpoint or --config (one of them)");
    double timeout_s = ms_cli_comm_timeout(timeout_arg);
    if (timeout_s < 0)
        return ms_usage_error("eval", "%s needs a positive number of seconds, not '%s'",
                              timeout_arg ? "--comm-timeout" : "MODSQUAD_COMM_TIMEOUT",
                              timeout_arg ? timeout_arg : getenv("MODSQUAD_COMM_TIMEOUT"));

    ms_st_file w = {0};
    static ms_config cfg;
    if (ckpt) {
        if (ms_cli_load_checkpoint(&w, &cfg, ckpt, n_sets, sets)) return 1;
    } else if (ms_cli_load_config(&cfg, config, n_sets, sets)) {
        return 1;
    }
    const char *step = ckpt ? ms_st_meta(&w, "modsquad.step") : "0";
    if (!split) split = cfg.eval.split;
    ms_comm_env env;
    ms_comm_env_detect(&env);
    if (ms_cli_check_eval_world(&cfg, &env, "eval")) {
        ms_safetensors_free(&w);
        return 1;
    }
    char json[4200];
    json_path(json, sizeof json, out, ckpt, step, split, &cfg);
    int rc = 1;
    ms_backend *be = ms_cli_open_backend_rank(&cfg, &env);
    ms_world *world = NULL;
    ms_model *m = NULL;
    ms_data *d = NULL;
    float *host = NULL;
    ms_usage u = {0};
    ms_pred_writer *saver = NULL;
    if (!be) goto out;
    {
        /* NCCL without MPI meets in the directory of the metrics JSON, which rank 0 writes. */
        char rdir[4300];
        snprintf(rdir, sizeof rdir, "%s", json);
        if (env.world > 1 && env.rank == 0) ms_cli_make_dirs(dirname(rdir));
        snprintf(rdir, sizeof rdir, "%s", json);
        world = ms_cli_open_world(&cfg, &env, be, timeout_s, dirname(rdir));
    }
    if (!world || ms_cli_same_config(world, &cfg)) goto out;
    const int root = world->rank == 0, ranks = world->size;
    /* Each rank evaluates its share of every batch of eval.batch_size images. */
    int B = cfg.eval.batch_size / ranks;
    ms_model_opts mo = {.batch = B, .rank = world->rank};
    if (ranks > 1) mo.stats_sum = ms_world_sum_hook, mo.stats_ctx = world, mo.world = ranks;
    m = ms_model_create(&cfg, be, &mo);
    if (ckpt) {
        if (ms_cli_agree(world, load_weights(m, be, &w, ckpt, &host))) goto out;
    } else {
        ms_model_init(m, (uint64_t)cfg.run.seed);
    }
    ms_io_err ierr = {0};
    ms_data_open_opts dopt = {0};
    int opened = ms_data_open(&d, &cfg, split, &dopt, &ierr);
    if (opened) fprintf(stderr, "modsquad: error: %s\n", ierr.msg);
    if (ms_cli_agree(world, opened)) goto out;
    const int T = cfg.data.tasks.n;
    ms_metric_result res[MS_MAX_TASKS];
    ms_usage_init(&u, m, T);
    if (root) {
        printf("modsquad eval %s (step %s) on %s/%s: %lld images\n", ckpt ? ckpt : config,
               step ? step : "?", cfg.data.root, split,
               (long long)(cfg.eval.max_images > 0 && cfg.eval.max_images < d->n ? cfg.eval.max_images : d->n));
        if (ranks > 1)
            printf("ranks: %d (%s), %d of each batch's %d images per rank\n", ranks, world->name,
                   B, B * ranks);
        fflush(stdout);
    }
    ms_pred_sink sink = {0};
    if (save_dir) {
        /* Rank 0 makes the directory and README.txt first (a directory that cannot be made
         * is then reported once); every rank writes the files of its own images. */
        if (root) saver = ms_pred_writer_open(save_dir, &cfg, d, 1);
        if (ms_cli_agree(world, root && !saver)) goto out;
        if (!root) saver = ms_pred_writer_open(save_dir, &cfg, d, 0);
        if (ms_cli_agree(world, !saver)) goto out;
        sink = ms_pred_writer_sink(saver);
    }
    if (ms_cli_evaluate_dist(m, be, B, d, &cfg, cfg.eval.max_images, res, &u, NULL,
                             saver ? &sink : NULL, world))
        goto out;
    int64_t files = saver ? ms_pred_writer_files(saver) : 0;
    if (saver && ms_world_allreduce(world, &files, 1, MS_COMM_I64, MS_COMM_SUM,
                                    "the all-reduce of the saved predictions' count"))
        ms_world_abort(world, 1);
    if (!root) {
        rc = 0;
        goto out;
    }
    ms_cli_print_metrics(&cfg, res);
    if (saver)
        printf("predictions: %s (%lld files, encodings in %s/README.txt)\n", save_dir,
               (long long)files, save_dir);
    if (report(&cfg, m, res, &u, json, baseline)) goto out;
    rc = 0;
out:
    ms_pred_writer_close(saver);
    ms_usage_free(&u);
    ms_data_close(d);
    free(host);
    if (m) ms_model_destroy(m);
    ms_world_close(world);
    if (be) be->destroy(be);
    ms_safetensors_free(&w);
    return rc;
}
