/* Per-pixel and per-image metrics: L1, MSE, depth RMSE (Taskonomy dense tasks), top-1
 * agreement (Taskonomy classification) and the confusion-matrix mIoU (segmentation). The
 * official Taskonomy metrics are Mod-Squad's engine_mt.py get_metric and util/metric.py
 * compute_depth_errors; the mIoU follows SemsegMeter of Multi-Task-Learning-PyTorch. */
#include <math.h>
#include <string.h>

#include "../kernels/util.h"
#include "metrics_internal.h"

#define LN_2_16 11.090354888959125 /* ln(2^16): the depth encoding's scale */
#define DEPTH_MIN 1e-3             /* clamp of compute_depth_errors, in its output units */
#define DEPTH_MAX 128.0

/* Clamps to [lo, hi] and keeps NaN (a diverged model must not look perfect), as torch.clamp. */
static inline double clampd(double v, double lo, double hi) {
    return v < lo ? lo : (v > hi ? hi : v);
}

/* Encoded depth x = ln(1 + d) / ln(2^16), d in 1/512 m, to metres. */
static inline double depth_metres(double x) {
    return clampd(expm1(x * LN_2_16) / 512.0, DEPTH_MIN, DEPTH_MAX);
}

/* The official evaluation scale: ln(d) / 11.09 standardised with 0.64 / 0.18, mapped to [0, 1]
 * and times 128 (a log-depth scale, not metres). */
static inline double depth_official(double x) {
    const double d = expm1(x * LN_2_16);
    return clampd(((log(d) / 11.09 - 0.64) / 0.18 + 1.0) / 2.0 * 128.0, DEPTH_MIN, DEPTH_MAX);
}

/* ---- L1 and MSE ---------------------------------------------------------------------------- */

static void regression_image(const ms_metric_acc *a, const float *pred, const ms_target *t,
                             int b, int H, int W, double *sums, int64_t *counts) {
    const size_t P = (size_t)H * W, C = (size_t)a->def->channels;
    const int squared = a->def->metric == MS_METRIC_MSE;
    const float *x = pred + (size_t)b * C * P;    /* [C, P] */
    const float *y = t->dense + (size_t)b * C * P; /* [C, P] */
    const uint8_t *v = t->valid + (size_t)b * P;   /* [P] */
    double masked = 0, all = 0;
    for (size_t c = 0; c < C; c++)
        for (size_t p = 0; p < P; p++) {
            const double d = (double)x[c * P + p] - y[c * P + p];
            const double e = squared ? d * d : fabs(d);
            all += e;
            if (v[p]) masked += e;
        }
    int64_t n = 0;
    for (size_t p = 0; p < P; p++) n += v[p] != 0;
    sums[0] += masked, sums[1] += all;
    counts[0] += n, counts[1] += (int64_t)P;
}

static void regression_result(const ms_metric_acc *a, ms_metric_result *r) {
    const double C = a->def->channels;
    const int squared = a->def->metric == MS_METRIC_MSE;
    ms_metric_put(r, squared ? "mse" : "l1", a->counts[0] ? a->sums[0] / (a->counts[0] * C) : NAN);
    ms_metric_put(r, squared ? "mse_unmasked" : "l1_unmasked",
                  a->counts[1] ? a->sums[1] / (a->counts[1] * C) : NAN);
}

/* ---- depth_euclidean RMSE ------------------------------------------------------------------- */

static void rmse_image(const ms_metric_acc *a, const float *pred, const ms_target *t, int b,
                       int H, int W, double *sums, int64_t *counts) {
    (void)a;
    const size_t P = (size_t)H * W;
    const float *x = pred + (size_t)b * P;    /* [P], one channel */
    const float *y = t->dense + (size_t)b * P; /* [P] */
    const uint8_t *v = t->valid + (size_t)b * P;
    double sq_m = 0, sq_official = 0, l1 = 0;
    int64_t n = 0;
    for (size_t p = 0; p < P; p++) {
        const double xp = x[p] < 0 ? 0.0 : (double)x[p]; /* official: clamp(pred, min=0) */
        const double e = depth_official(xp) - depth_official(y[p]);
        sq_official += e * e;
        if (!v[p]) continue;
        const double m = depth_metres(xp) - depth_metres(y[p]);
        sq_m += m * m;
        l1 += fabs((double)x[p] - y[p]);
        n++;
    }
    sums[0] += sq_m, sums[1] += sq_official, sums[2] += l1;
    counts[0] += n, counts[1] += (int64_t)P;
}

static void rmse_result(const ms_metric_acc *a, ms_metric_result *r) {
    ms_metric_put(r, "rmse", a->counts[0] ? sqrt(a->sums[0] / a->counts[0]) : NAN);
    ms_metric_put(r, "rmse_official", a->counts[1] ? sqrt(a->sums[1] / a->counts[1]) : NAN);
    ms_metric_put(r, "l1", a->counts[0] ? a->sums[2] / a->counts[0] : NAN);
}

/* ---- classification: top-1 agreement --------------------------------------------------------- */

/* First index of the maximum (torch.argmax). */
static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static void accuracy_image(const ms_metric_acc *a, const float *pred, const ms_target *t, int b,
                           int H, int W, double *sums, int64_t *counts) {
    (void)H, (void)W, (void)sums;
    const int C = a->def->channels;
    counts[0] += argmax(pred + (size_t)b * C, C) == argmax(t->vector + (size_t)b * C, C);
    counts[1] += 1;
}

static void accuracy_result(const ms_metric_acc *a, ms_metric_result *r) {
    ms_metric_put(r, "accuracy", a->counts[1] ? 100.0 * a->counts[0] / a->counts[1] : NAN);
}

/* ---- segmentation: confusion matrix ----------------------------------------------------------- */

#define ARGMAX_BLOCK 256 /* pixels whose running maxima stay in L1 while the channels stream */

static void miou_image(const ms_metric_acc *a, const float *pred, const ms_target *t, int b,
                       int H, int W, double *sums, int64_t *counts) {
    (void)sums;
    const size_t P = (size_t)H * W;
    const int C = a->def->channels, ignore = a->def->ignore_index;
    const float *x = pred + (size_t)b * C * P; /* [C, P] */
    const int32_t *y = t->labels + (size_t)b * P;
    float best[ARGMAX_BLOCK];
    int arg[ARGMAX_BLOCK];
    for (size_t p0 = 0; p0 < P; p0 += ARGMAX_BLOCK) {
        const size_t n = P - p0 < ARGMAX_BLOCK ? P - p0 : ARGMAX_BLOCK;
        for (size_t i = 0; i < n; i++) best[i] = x[p0 + i], arg[i] = 0;
        for (int c = 1; c < C; c++) {
            const float *xc = x + (size_t)c * P + p0;
            for (size_t i = 0; i < n; i++)
                if (xc[i] > best[i]) best[i] = xc[i], arg[i] = c;
        }
        /* labels outside [0, C) other than ignore_index carry no class: skipped like it */
        for (size_t i = 0; i < n; i++) {
            const int32_t label = y[p0 + i];
            if (label == ignore || label < 0 || label >= C) continue;
            counts[(size_t)label * C + arg[i]]++;
        }
    }
}

static void miou_result(const ms_metric_acc *a, ms_metric_result *r) {
    const int C = a->def->channels, ignore = a->def->ignore_index;
    const int64_t *m = a->counts; /* [C, C] */
    double iou[MS_METRIC_MAX_VALUES];
    double sum = 0, sum_present = 0;
    int n = 0, n_present = 0;
    int64_t correct = 0, total = 0;
    for (int c = 0; c < C; c++) {
        int64_t row = 0, col = 0;
        for (int k = 0; k < C; k++) row += m[(size_t)c * C + k], col += m[(size_t)k * C + c];
        const int64_t tp = m[(size_t)c * C + c], uni = row + col - tp;
        correct += tp, total += row;
        if (c == ignore) continue;
        iou[c] = (double)tp / (uni > 0 ? (double)uni : 1e-8);
        sum += iou[c], n++;
        if (uni > 0) sum_present += iou[c], n_present++;
    }
    ms_metric_put(r, "miou", total ? 100.0 * sum / n : NAN);
    ms_metric_put(r, "miou_present", n_present ? 100.0 * sum_present / n_present : NAN);
    ms_metric_put(r, "pixel_acc", total ? 100.0 * correct / total : NAN);
    for (int c = 0; c < C; c++) {
        if (c == ignore) continue;
        char name[MS_METRIC_NAME_MAX];
        snprintf(name, sizeof name, "iou_%d", c);
        ms_metric_put(r, name, total ? 100.0 * iou[c] : NAN);
    }
}

void ms_metric_setup_pixel(ms_metric_acc *a) {
    const ms_task_def *d = a->def;
    switch (d->metric) {
    case MS_METRIC_L1: case MS_METRIC_MSE:
        MS_ASSERT(d->target == MS_TARGET_DENSE);
        a->n_sums = 2, a->n_counts = 2;
        a->image = regression_image, a->result = regression_result;
        break;
    case MS_METRIC_RMSE:
        MS_ASSERT(d->target == MS_TARGET_DENSE && d->channels == 1);
        a->n_sums = 3, a->n_counts = 2;
        a->image = rmse_image, a->result = rmse_result;
        break;
    case MS_METRIC_ACCURACY:
        MS_ASSERT(d->target == MS_TARGET_VECTOR);
        a->n_sums = 0, a->n_counts = 2;
        a->image = accuracy_image, a->result = accuracy_result;
        break;
    case MS_METRIC_MIOU:
        /* the per-class values must fit one result next to the three summaries */
        MS_ASSERT(d->target == MS_TARGET_LABELS && d->channels + 3 <= MS_METRIC_MAX_VALUES);
        a->n_sums = 0, a->n_counts = (size_t)d->channels * d->channels;
        a->image = miou_image, a->result = miou_result;
        break;
    default: MS_ASSERT(!"not a per-pixel metric");
    }
}
