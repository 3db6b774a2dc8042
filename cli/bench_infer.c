/* The inference line of `modsquad bench` (cli/bench_infer.h): the extracted and the one-pass
 * models are built from the bench's model the way `modsquad extract` builds a checkpoint
 * (model/extract.h: expert choice, config, tensors by name), without files. */
#include "bench_infer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/util.h"
#include "../model/extract.h"
#include "../model/tasks.h"

double ms_bench_forward_flops(ms_model *m, int T) {
    ms_vit *v = ms_model_backbone(m);
    int passes = ms_vit_passes(v);
    double f = 0;
    for (int t = 0; t < T; t++) f += ms_model_flops(m, t) - ms_vit_flops(v, t); /* head t */
    for (int p = 0; p < passes; p++) f += ms_vit_flops(v, passes == T ? p : 0);
    return f;
}

/* The expert choice of `modsquad extract` from the selections of task t in the full model's
 * last forward (the calibration pass): kept gets the chosen experts, all every expert. Fills
 * the expert counts and the dropped share of r, and returns the FLOPs per image that the
 * dropped pairs' expert GEMMs would cost. */
static double choose_experts(const ms_model *m, int t, int N, ms_expert_sets *kept,
                             ms_expert_sets *all, ms_bench_infer *r) {
    memset(kept, 0, sizeof *kept);
    memset(all, 0, sizeof *all);
    int layers = ms_model_moe_layers(m), n_kept = 0, n_all = 0;
    int64_t dropped = 0, selections = 0;
    double skipped_flops = 0;
    for (int l = 0; l < layers; l++) {
        ms_moe_info mi = ms_model_moe_info(m, l);
        int64_t *counts = ms_calloc((size_t)mi.E, sizeof *counts); /* [E] */
        double *usage = ms_calloc((size_t)mi.E, sizeof *usage);    /* [E] percent of tokens */
        ms_model_expert_counts(m, l, t, counts);
        ms_extract_usage(counts, mi.E, mi.K, usage);
        MS_ASSERT(n_all + mi.E <= MS_MAX_KEPT);
        int16_t *k = kept->expert + n_kept;
        kept->count[l] = ms_extract_choose(usage, mi.E, mi.K, r->threshold, k);
        int64_t layer_all = 0, layer_dropped = 0;
        for (int e = 0, i = 0; e < mi.E; e++) {
            all->expert[n_all + e] = (int16_t)e;
            layer_all += counts[e];
            if (i < kept->count[l] && k[i] == e)
                i++;
            else
                layer_dropped += counts[e];
        }
        if (layer_all)
            skipped_flops += (double)N * mi.K * ((double)layer_dropped / (double)layer_all) *
                             mi.pair_flops;
        all->count[l] = mi.E;
        n_kept += kept->count[l], n_all += mi.E;
        dropped += layer_dropped, selections += layer_all;
        free(counts), free(usage);
    }
    kept->layers = all->layers = layers;
    r->experts_kept = n_kept, r->experts_total = n_all;
    r->dropped_share = selections ? (double)dropped / (double)selections : 0.0;
    return skipped_flops;
}

/* A single-task model of task t with the experts `sets`, its weights taken from the full
 * model's (src, src_host) and uploaded. *cfg_out must outlive the model. NULL after printing
 * why when the config or a tensor does not fit. */
static ms_model *single_task_model(const ms_config *cfg, int t, const ms_expert_sets *sets,
                                   const char *what, ms_backend *be, int B,
                                   const ms_param_table *src, const float *src_host,
                                   ms_config *cfg_out) {
    char name[256];
    snprintf(name, sizeof name, "bench: the %s model of task %s", what, cfg->data.tasks.name[t]);
    ms_config_errors errs;
    ms_config_errors_init(&errs);
    int bad = ms_extract_config(cfg_out, cfg, t, sets, name, &errs);
    if (bad) ms_config_errors_print(&errs, stderr);
    ms_config_errors_free(&errs);
    if (bad) return NULL;
    ms_model *m = ms_model_create(cfg_out, be, &(ms_model_opts){.batch = B});
    const ms_param_table *pt = ms_model_params(m);
    float *host = ms_malloc(pt->total * sizeof(float)); /* [params] */
    char err[512];
    if (ms_extract_params(src, src_host, t, m, host, err, sizeof err)) {
        fprintf(stderr, "modsquad: error: %s: %s\n", name, err);
        free(host);
        ms_model_destroy(m);
        return NULL;
    }
    be->upload(be, ms_model_param_data(m), host, pt->total * sizeof(float));
    free(host);
    return m;
}

static double timed_forward(ms_model *m, const ms_batch *b, ms_backend *be) {
    be->synchronize(be);
    double t0 = ms_now();
    ms_model_forward(m, b, 0, 0);
    be->synchronize(be);
    return ms_now() - t0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void set_times(ms_infer_model *im, double *dt, int n) {
    qsort(dt, (size_t)n, sizeof *dt, cmp_double);
    im->median_s = n % 2 ? dt[n / 2] : 0.5 * (dt[n / 2 - 1] + dt[n / 2]);
    im->best_s = dt[0];
}

static void set_sizes(ms_infer_model *im, ms_model *m, int T) {
    ms_param_counts pc;
    ms_model_param_counts(m, &pc);
    im->params = pc.total;
    im->weight_bytes = (double)ms_model_memory(m).params;
    im->flops = ms_bench_forward_flops(m, T);
}

/* max |a - b| over the n values of two device predictions (infinite where either is NaN). */
static double max_diff(ms_backend *be, const ms_act *a, const ms_act *b, size_t n) {
    float *ha = ms_malloc(n * sizeof(float)), *hb = ms_malloc(n * sizeof(float)); /* [n] each */
    be->download_act(be, ha, a, n);
    be->download_act(be, hb, b, n);
    double d = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)ha[i] - (double)hb[i]);
        d = isnan(e) ? INFINITY : e > d ? e : d;
    }
    free(ha), free(hb);
    return d;
}

int ms_bench_infer_run(ms_model *full, const ms_config *cfg, ms_backend *be, const ms_batch *batch,
                       int t, double threshold, int warmup, int reps, ms_bench_infer *r) {
    memset(r, 0, sizeof *r);
    const int T = cfg->data.tasks.n;
    r->task = cfg->data.tasks.name[t];
    r->threshold = threshold;
    r->B = batch->B, r->T = T, r->warmup = warmup, r->reps = reps;
    r->passes = ms_vit_passes(ms_model_backbone(full));

    /* Calibration: the full model's evaluation forward of the batch. */
    ms_model_forward(full, batch, 0, 0);
    ms_expert_sets *sets = ms_calloc(2, sizeof *sets); /* [2] the kept experts, all experts */
    int N = ms_vit_tokens_per_image(ms_model_backbone(full));
    double skipped = choose_experts(full, t, N, &sets[0], &sets[1], r);

    const ms_param_table *pt = ms_model_params(full);
    float *host = ms_malloc(pt->total * sizeof(float)); /* [params] the full model's weights */
    be->download(be, host, ms_model_param_data(full), pt->total * sizeof(float));
    ms_config *cfgs = ms_calloc(2, sizeof *cfgs); /* [2] one-pass, extracted */
    ms_model *one = single_task_model(cfg, t, &sets[1], "one-pass", be, r->B, pt, host, &cfgs[0]);
    ms_model *ext = one ? single_task_model(cfg, t, &sets[0], "extracted", be, r->B, pt, host,
                                            &cfgs[1])
                        : NULL;
    free(host);
    free(sets);
    int rc = -1;
    if (!ext) goto out;
    set_sizes(&r->full, full, T);
    set_sizes(&r->one_pass, one, 1);
    set_sizes(&r->extracted, ext, 1);
    r->flops_routed = r->extracted.flops - skipped;

    /* The single-task models read task t's targets as their task 0. */
    ms_batch single = *batch;
    single.T = 1;
    single.target[0] = batch->target[t];
    /* Interleaved, so that what other processes do to the machine falls on all three alike. */
    ms_model *models[3] = {full, one, ext};
    const ms_batch *inputs[3] = {batch, &single, &single};
    double *dt = ms_malloc(3 * (size_t)reps * sizeof *dt); /* [3, reps] */
    for (int i = 0; i < warmup + reps; i++)
        for (int k = 0; k < 3; k++) {
            double s = timed_forward(models[k], inputs[k], be);
            if (i >= warmup) dt[(size_t)k * reps + (i - warmup)] = s;
        }
    set_times(&r->full, dt, reps);
    set_times(&r->one_pass, dt + reps, reps);
    set_times(&r->extracted, dt + 2 * (size_t)reps, reps);
    free(dt);

    /* All three last ran the same images: the one-pass model computes the full model's task t
     * exactly; the extracted model too unless a dropped expert was selected. */
    const ms_task_def *def = ms_task_find(cfg->data.dataset, r->task);
    size_t n = (size_t)def->channels * r->B * (def->classification ? 1 : (size_t)batch->H * batch->W);
    const ms_act *ref = ms_model_prediction(full, t);
    r->one_pass.max_diff = max_diff(be, ms_model_prediction(one, 0), ref, n);
    r->extracted.max_diff = max_diff(be, ms_model_prediction(ext, 0), ref, n);
    rc = 0;
out:
    if (ext) ms_model_destroy(ext);
    if (one) ms_model_destroy(one);
    free(cfgs);
    return rc;
}

void ms_bench_infer_print_text(const ms_bench_infer *r) {
    printf("inference     task %s: evaluation forwards of the in-memory batch (%d images), median "
           "of %d after %d warmup, interleaved\n", r->task, r->B, r->reps, r->warmup);
    printf("                %-24s %9s %9s %9s %10s %10s %11s\n", "", "ms/image", "(best)",
           "images/s", "params (M)", "weights MB", "GFLOP/image");
    char full_name[48];
    snprintf(full_name, sizeof full_name, "full model, %d pass%s", r->passes, r->passes == 1 ? "" : "es");
    const char *names[3] = {full_name, "full model, task pass", "extracted model"};
    const ms_infer_model *ms[3] = {&r->full, &r->one_pass, &r->extracted};
    for (int k = 0; k < 3; k++)
        printf("                %-24s %9.3f %9.3f %9.2f %10.3f %10.2f %11.4f\n", names[k],
               ms[k]->median_s * 1e3 / r->B, ms[k]->best_s * 1e3 / r->B, r->B / ms[k]->median_s,
               ms[k]->params / 1e6, ms[k]->weight_bytes / 1e6, ms[k]->flops / 1e9);
    char pass[64], experts[64];
    if (r->passes > 1)
        snprintf(pass, sizeof pass, "one pass instead of %d", r->passes);
    else if (r->T > 1) /* hard_sharing: the tasks share the pass, the heads are what is skipped */
        snprintf(pass, sizeof pass, "one head instead of %d", r->T);
    else
        snprintf(pass, sizeof pass, "one task in both");
    if (r->experts_total)
        snprintf(experts, sizeof experts, "%d of %d experts kept", r->experts_kept, r->experts_total);
    else
        snprintf(experts, sizeof experts, "no MoE layers, no expert dropped");
    printf("              extracted vs full: %.2fx the speed (best forwards %.2fx); %s: %.2fx "
           "(%.2fx); %s: %.2fx (%.2fx)\n",
           r->full.median_s / r->extracted.median_s, r->full.best_s / r->extracted.best_s, pass,
           r->full.median_s / r->one_pass.median_s, r->full.best_s / r->one_pass.best_s, experts,
           r->one_pass.median_s / r->extracted.median_s, r->one_pass.best_s / r->extracted.best_s);
    printf("              (expert choice: threshold %g%% on this batch; %.2f%% of the task's "
           "selections went to dropped experts, whose GEMMs the extracted model skips: %.4f "
           "GFLOP/image with this routing)\n",
           r->threshold, 100 * r->dropped_share, r->flops_routed / 1e9);
    printf("              predictions against the full model's: task pass max |diff| %g, "
           "extracted %g%s\n",
           r->one_pass.max_diff, r->extracted.max_diff,
           r->dropped_share > 0 ? " (a dropped expert was selected)" : "");
}

/* A number as JSON, which has no infinity or NaN: null then. */
static void json_number(const char *key, double v, const char *end) {
    if (isfinite(v))
        printf("\"%s\": %.6g%s", key, v, end);
    else
        printf("\"%s\": null%s", key, end);
}

void ms_bench_infer_print_json(const ms_bench_infer *r) {
    printf(" \"infer_task\": \"%s\", \"infer_batch\": %d, \"infer_passes_full\": %d, "
           "\"infer_threshold\": %g, \"infer_experts_kept\": %d, \"infer_experts_total\": %d, "
           "\"infer_dropped_share\": %.6g, \"infer_flops_per_image_extracted_routed\": %.6g,\n",
           r->task, r->B, r->passes, r->threshold, r->experts_kept, r->experts_total,
           r->dropped_share, r->flops_routed);
    const char *names[3] = {"full", "one_pass", "extracted"};
    const ms_infer_model *ms[3] = {&r->full, &r->one_pass, &r->extracted};
    for (int k = 0; k < 3; k++)
        printf(" \"infer_ms_per_image_%s\": %.5f, \"infer_best_ms_per_image_%s\": %.5f, "
               "\"infer_images_per_s_%s\": %.5f, \"infer_params_%s\": %.0f, "
               "\"infer_weight_mb_%s\": %.4f, \"infer_flops_per_image_%s\": %.6g,\n",
               names[k], ms[k]->median_s * 1e3 / r->B, names[k], ms[k]->best_s * 1e3 / r->B,
               names[k], r->B / ms[k]->median_s, names[k], ms[k]->params, names[k],
               ms[k]->weight_bytes / 1e6, names[k], ms[k]->flops);
    printf(" ");
    json_number("infer_max_diff_one_pass", r->one_pass.max_diff, ", ");
    json_number("infer_max_diff_extracted", r->extracted.max_diff, ",\n");
    printf(" \"infer_speedup\": %.5f, \"infer_speedup_one_pass\": %.5f, "
           "\"infer_speedup_experts\": %.5f,\n",
           r->full.median_s / r->extracted.median_s, r->full.median_s / r->one_pass.median_s,
           r->one_pass.median_s / r->extracted.median_s);
}
