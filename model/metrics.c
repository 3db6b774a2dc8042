/* Metric accumulators: lifecycle, the parallel per-image update, merging, results, Delta_m.
 * The metric kinds themselves live in metrics_pixel.c, metrics_sal.c, metrics_normals.c and
 * metrics_edges.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/util.h"
#include "metrics_internal.h"

ms_metric_options ms_metric_options_default(void) {
    return (ms_metric_options){.edge_max_dist = 0.0075};
}

ms_metric_acc *ms_metric_acc_new(const ms_task_def *def, const ms_metric_options *opt) {
    MS_ASSERT(def);
    ms_metric_acc *a = ms_calloc(1, sizeof *a);
    a->def = def;
    a->opt = opt ? *opt : ms_metric_options_default();
    switch (def->metric) {
    case MS_METRIC_L1: case MS_METRIC_MSE: case MS_METRIC_RMSE:
    case MS_METRIC_ACCURACY: case MS_METRIC_MIOU: ms_metric_setup_pixel(a); break;
    case MS_METRIC_MAXF: ms_metric_setup_sal(a); break;
    case MS_METRIC_ANGLE: ms_metric_setup_normals(a); break;
    case MS_METRIC_ODSF: ms_metric_setup_edges(a); break;
    }
    MS_ASSERT(a->image && a->result);
    /* calloc(0) may return NULL; one spare element keeps every pointer valid */
    a->sums = ms_calloc(a->n_sums + 1, sizeof(double));
    a->counts = ms_calloc(a->n_counts + 1, sizeof(int64_t));
    a->slot_sums = ms_calloc(MS_METRIC_SLOTS * a->n_sums + 1, sizeof(double));
    a->slot_counts = ms_calloc(MS_METRIC_SLOTS * a->n_counts + 1, sizeof(int64_t));
    return a;
}

void ms_metric_acc_free(ms_metric_acc *a) {
    if (!a) return;
    free(a->sums), free(a->counts), free(a->slot_sums), free(a->slot_counts);
    free(a);
}

void ms_metric_acc_reset(ms_metric_acc *a) {
    memset(a->sums, 0, a->n_sums * sizeof(double));
    memset(a->counts, 0, a->n_counts * sizeof(int64_t));
}

const ms_task_def *ms_metric_acc_task(const ms_metric_acc *a) { return a->def; }

void ms_metric_update(ms_metric_acc *a, const float *pred, const ms_target *target, int B,
                      int H, int W) {
    MS_ASSERT(pred && target && B >= 0 && H > 0 && W > 0);
    const size_t ns = a->n_sums, nc = a->n_counts;
    const int per_image = a->def->target == MS_TARGET_VECTOR; /* pred [B, C]: no pixels */
    const double work = (per_image ? 1.0 : (double)H * W) * a->def->channels;
    for (int b0 = 0; b0 < B; b0 += MS_METRIC_SLOTS) {
        const int nb = B - b0 < MS_METRIC_SLOTS ? B - b0 : MS_METRIC_SLOTS;
        memset(a->slot_sums, 0, (size_t)nb * ns * sizeof(double));
        memset(a->slot_counts, 0, (size_t)nb * nc * sizeof(int64_t));
        /* one image per iteration: every image writes only its own slot */
#pragma omp parallel for schedule(dynamic, 1) if (nb > 1 && work >= 4096)
        for (int i = 0; i < nb; i++)
            a->image(a, pred, target, b0 + i, H, W, a->slot_sums + (size_t)i * ns,
                     a->slot_counts + (size_t)i * nc);
        /* image order, whatever thread computed which image */
        for (int i = 0; i < nb; i++) {
            const double *s = a->slot_sums + (size_t)i * ns;
            const int64_t *c = a->slot_counts + (size_t)i * nc;
            for (size_t k = 0; k < ns; k++) a->sums[k] += s[k];
            for (size_t k = 0; k < nc; k++) a->counts[k] += c[k];
        }
    }
}

void ms_metric_merge(ms_metric_acc *dst, const ms_metric_acc *src) {
    MS_ASSERT(dst->def == src->def && dst->n_sums == src->n_sums &&
              dst->n_counts == src->n_counts);
    for (size_t k = 0; k < dst->n_sums; k++) dst->sums[k] += src->sums[k];
    for (size_t k = 0; k < dst->n_counts; k++) dst->counts[k] += src->counts[k];
}

double *ms_metric_sums(ms_metric_acc *a, size_t *n) {
    *n = a->n_sums;
    return a->sums;
}

int64_t *ms_metric_counts(ms_metric_acc *a, size_t *n) {
    *n = a->n_counts;
    return a->counts;
}

void ms_metric_put(ms_metric_result *r, const char *name, double value) {
    MS_ASSERT(r->n < MS_METRIC_MAX_VALUES && strlen(name) < MS_METRIC_NAME_MAX);
    ms_metric_value *v = &r->values[r->n++];
    snprintf(v->name, sizeof v->name, "%s", name);
    v->value = value;
    if (r->n == 1) r->primary = value;
}

void ms_metric_result_get(const ms_metric_acc *a, ms_metric_result *out) {
    memset(out, 0, sizeof *out);
    a->result(a, out);
    MS_ASSERT(out->n > 0 && strcmp(out->values[0].name, ms_metric_primary_name(a->def->metric)) == 0);
}

const double *ms_metric_find(const ms_metric_result *r, const char *name) {
    for (int i = 0; i < r->n; i++)
        if (strcmp(r->values[i].name, name) == 0) return &r->values[i].value;
    return NULL;
}

const char *ms_metric_primary_name(ms_metric_kind kind) {
    switch (kind) {
    case MS_METRIC_L1: return "l1";
    case MS_METRIC_RMSE: return "rmse";
    case MS_METRIC_MSE: return "mse";
    case MS_METRIC_ACCURACY: return "accuracy";
    case MS_METRIC_MIOU: return "miou";
    case MS_METRIC_MAXF: return "maxF";
    case MS_METRIC_ANGLE: return "angle_mean";
    case MS_METRIC_ODSF: return "odsF";
    }
    return "?";
}

double ms_delta_m(int T, const ms_task_def *const *defs, const double *mt, const double *st) {
    MS_ASSERT(T > 0);
    double sum = 0;
    for (int t = 0; t < T; t++) {
        if (!isfinite(st[t]) || st[t] == 0) return NAN;
        sum += ms_metric_sign(defs[t]->metric) * (mt[t] - st[t]) / st[t];
    }
    return 100.0 / T * sum;
}

int ms_delta_m_baseline(int T, const ms_task_def *const *defs, const ms_metric_result *mt,
                        const ms_metrics_file *base, const char *path, double *delta_m,
                        char *err, size_t cap) {
    double m[MS_MAX_TASKS], s[MS_MAX_TASKS];
    MS_ASSERT(T > 0 && T <= MS_MAX_TASKS);
    for (int t = 0; t < T; t++) {
        const char *name = ms_metric_primary_name(defs[t]->metric);
        const ms_metric_result *b = ms_metrics_file_task(base, defs[t]->name);
        const double *v = b ? ms_metric_find(b, name) : NULL;
        if (!v) {
            snprintf(err, cap, "%s: no \"%s\" metric \"%s\" in the baseline (Delta_m needs the "
                     "primary metric of every evaluated task)", path, defs[t]->name, name);
            return -1;
        }
        if (!isfinite(*v) || *v == 0) {
            snprintf(err, cap, "%s: baseline \"%s\".\"%s\" is %g; Delta_m divides by it", path,
                     defs[t]->name, name, *v);
            return -1;
        }
        m[t] = mt[t].primary, s[t] = *v;
    }
    *delta_m = ms_delta_m(T, defs, m, s);
    return 0;
}
