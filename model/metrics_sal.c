/* Saliency maxF (PASCAL-Context): per-image mean precision / recall / Jaccard over the 15
 * thresholds of Multi-Task-Learning-PyTorch evaluation/eval_sal.py (with evaluation/jaccard.py),
 * and the dataset-pooled beta^2 = 0.3 F of InvPT evaluation/eval_sal.py. Definitions in
 * metrics.h. Each pixel is binned once by how many thresholds its probability passes, so an
 * image costs O(pixels + thresholds). */
#include <math.h>
#include <string.h>

#include "../kernels/util.h"
#include "metrics_internal.h"

#define NT MS_SAL_THRESHOLDS
#define NP MS_SAL_POOLED_THRESHOLDS

/* np.linspace(0.2, 0.9, 15) bit for bit: j * step + start, the last one exactly the stop. */
static double sal_threshold(int j) {
    const double step = (0.9 - 0.2) / (NT - 1);
    return j == NT - 1 ? 0.9 : j * step + 0.2;
}

/* torch.arange(0.05, 1, 0.05) as float32: computed in double, then rounded. */
static float pooled_threshold(int j) { return (float)(0.05 + 0.05 * j); }

typedef struct {
    double t[NT]; /* [NT] ascending */
    float tp[NP]; /* [NP] ascending */
} thresholds;

static thresholds make_thresholds(void) {
    thresholds th;
    for (int j = 0; j < NT; j++) th.t[j] = sal_threshold(j);
    for (int j = 0; j < NP; j++) th.tp[j] = pooled_threshold(j);
    return th;
}

/* How many thresholds p passes (p > t), in [0, NT]: a guess from the even spacing, corrected. */
static int level(const thresholds *th, double p) {
    if (!(p > th->t[0])) return 0; /* also NaN */
    int g = (int)((p - 0.2) / 0.05) + 1;
    if (g > NT) g = NT;
    while (g > 0 && !(p > th->t[g - 1])) g--;
    while (g < NT && p > th->t[g]) g++;
    return g;
}

/* How many pooled thresholds p passes (p >= t, in float32 as the reference), in [0, NP]. */
static int level_pooled(const thresholds *th, float p) {
    if (!(p >= th->tp[0])) return 0;
    int g = (int)(p / 0.05f);
    if (g < 1) g = 1;
    if (g > NP) g = NP;
    while (g > 0 && !(p >= th->tp[g - 1])) g--;
    while (g < NP && p >= th->tp[g]) g++;
    return g;
}

static void sal_image(const ms_metric_acc *a, const float *pred, const ms_target *t, int b,
                      int H, int W, double *sums, int64_t *counts) {
    (void)a;
    const size_t P = (size_t)H * W;
    const float *x = pred + (size_t)b * P;     /* [P] logits */
    const uint8_t *y = t->binary + (size_t)b * P; /* [P] 0 / 1, 255 ignored */
    const thresholds th = make_thresholds();
    /* pixels by level: pos = labelled salient, all = every valid pixel */
    int64_t pos[NT + 1] = {0}, all[NT + 1] = {0}, pos_p[NP + 1] = {0}, all_p[NP + 1] = {0};
    for (size_t p = 0; p < P; p++) {
        if (y[p] == 255) continue;
        const double s = ms_sigmoid(x[p]);
        const int l = level(&th, s), lp = level_pooled(&th, (float)s);
        all[l]++, all_p[lp]++;
        if (y[p]) pos[l]++, pos_p[lp]++;
    }
    int64_t n_valid = 0, n_pos = 0;
    for (int l = 0; l <= NT; l++) n_valid += all[l], n_pos += pos[l];
    if (n_valid == 0) return; /* nothing labelled in this image */

    /* threshold j predicts the pixels of level > j: walk j downwards adding level j + 1 */
    int64_t tp = 0, predicted = 0;
    for (int j = NT - 1; j >= 0; j--) {
        tp += pos[j + 1], predicted += all[j + 1];
        const int64_t fp = predicted - tp, fn = n_pos - tp;
        sums[j] += tp / (tp + fp + 1e-12);
        sums[NT + j] += tp / (tp + fn + 1e-12);
        sums[2 * NT + j] += (n_pos == 0 && predicted == 0) ? 1.0 : (double)tp / (tp + fp + fn);
    }
    counts[0] += 1;
    tp = 0, predicted = 0;
    for (int j = NP - 1; j >= 0; j--) {
        tp += pos_p[j + 1], predicted += all_p[j + 1];
        counts[1 + j] += tp;
        counts[1 + NP + j] += predicted;
    }
    counts[1 + 2 * NP] += n_pos;
}

static double f_beta(double beta2, double p, double r, double eps) {
    return (1 + beta2) * p * r / (beta2 * p + r + eps);
}

static void sal_result(const ms_metric_acc *a, ms_metric_result *r) {
    const int64_t n = a->counts[0];
    double max_f = -1, max_f03 = -1, max_iou = -1, max_pooled = -1;
    for (int j = 0; j < NT; j++) {
        const double p = a->sums[j] / n, rc = a->sums[NT + j] / n;
        const double f = 2 * p * rc / (p + rc + 1e-12), f03 = f_beta(0.3, p, rc, 1e-12);
        const double iou = a->sums[2 * NT + j] / n;
        if (f > max_f) max_f = f;
        if (f03 > max_f03) max_f03 = f03;
        if (iou > max_iou) max_iou = iou;
    }
    const int64_t positives = a->counts[1 + 2 * NP];
    for (int j = 0; j < NP; j++) {
        const double tp = (double)a->counts[1 + j], predicted = (double)a->counts[1 + NP + j];
        double f = f_beta(0.3, tp / predicted, tp / positives, 0);
        if (f != f) f = 0; /* 0/0 where nothing is predicted or labelled, as the reference */
        if (f > max_pooled) max_pooled = f;
    }
    ms_metric_put(r, "maxF", n ? 100 * max_f : NAN);
    ms_metric_put(r, "maxF_b03", n ? 100 * max_f03 : NAN);
    ms_metric_put(r, "maxF_pooled_b03", n ? 100 * max_pooled : NAN);
    ms_metric_put(r, "miou", n ? 100 * max_iou : NAN);
}

void ms_metric_setup_sal(ms_metric_acc *a) {
    MS_ASSERT(a->def->target == MS_TARGET_BINARY && a->def->channels == 1);
    a->n_sums = 3 * NT;
    a->n_counts = 2 + 2 * NP;
    a->image = sal_image, a->result = sal_result;
}
