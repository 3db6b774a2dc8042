/* Surface-normal angular error (PASCAL-Context), as eval_normals.py of
 * Multi-Task-Learning-PyTorch computes it over saved predictions: both vectors normalised
 * (norm + 1e-12), acos of the clipped dot product in degrees, over the valid pixels. Its mean,
 * RMSE and the shares under 11.25 / 22.5 / 30 degrees are exact sums; the median comes from a
 * fixed histogram so that the state stays a sum that merges across ranks (metrics.h). */
#include <math.h>

#include "../kernels/util.h"
#include "metrics_internal.h"

#define BINS MS_ANGLE_BINS
#define BINS_PER_DEGREE 100.0

static void normals_image(const ms_metric_acc *a, const float *pred, const ms_target *t, int b,
                          int H, int W, double *sums, int64_t *counts) {
    (void)a;
    const size_t P = (size_t)H * W;
    const float *x = pred + (size_t)b * 3 * P;     /* [3, P] */
    const float *y = t->dense + (size_t)b * 3 * P; /* [3, P] */
    const uint8_t *v = t->valid + (size_t)b * P;
    double *bin_sum = sums + 2;     /* [BINS] */
    int64_t *bin_count = counts + 4; /* [BINS] */
    double s = 0, s2 = 0;
    for (size_t p = 0; p < P; p++) {
        if (!v[p]) continue;
        const double y0 = y[p], y1 = y[P + p], y2 = y[2 * P + p];
        const double ny = sqrt(y0 * y0 + y1 * y1 + y2 * y2);
        if (ny == 0) continue; /* the reference's validity: a non-zero target */
        const double x0 = x[p], x1 = x[P + p], x2 = x[2 * P + p];
        const double nx = sqrt(x0 * x0 + x1 * x1 + x2 * x2) + 1e-12;
        double dot = (x0 * y0 + x1 * y1 + x2 * y2) / (nx * (ny + 1e-12));
        dot = dot < -1 ? -1 : (dot > 1 ? 1 : dot);
        const double deg = acos(dot) * (180.0 / M_PI);
        s += deg, s2 += deg * deg;
        counts[0]++;
        counts[1] += deg < 11.25, counts[2] += deg < 22.5, counts[3] += deg < 30;
        int k = deg * BINS_PER_DEGREE < BINS ? (int)(deg * BINS_PER_DEGREE) : BINS - 1;
        if (!(deg >= 0)) k = BINS - 1; /* NaN from a NaN prediction: counted, never the median */
        bin_sum[k] += deg, bin_count[k]++;
    }
    sums[0] += s, sums[1] += s2;
}

/* The value of the i-th smallest angle (0-based), as the mean of the bin that holds it. */
static double nth_angle(const ms_metric_acc *a, int64_t i) {
    const double *bin_sum = a->sums + 2;
    const int64_t *bin_count = a->counts + 4;
    int64_t seen = 0;
    for (int k = 0; k < BINS; k++) {
        seen += bin_count[k];
        if (seen > i) return bin_sum[k] / bin_count[k];
    }
    return NAN;
}

static void normals_result(const ms_metric_acc *a, ms_metric_result *r) {
    const int64_t n = a->counts[0];
    double median = NAN;
    if (n) median = n % 2 ? nth_angle(a, n / 2) : 0.5 * (nth_angle(a, n / 2 - 1) + nth_angle(a, n / 2));
    ms_metric_put(r, "angle_mean", n ? a->sums[0] / n : NAN);
    ms_metric_put(r, "angle_median", median);
    ms_metric_put(r, "angle_rmse", n ? sqrt(a->sums[1] / n) : NAN);
    ms_metric_put(r, "under_11.25", n ? 100.0 * a->counts[1] / n : NAN);
    ms_metric_put(r, "under_22.5", n ? 100.0 * a->counts[2] / n : NAN);
    ms_metric_put(r, "under_30", n ? 100.0 * a->counts[3] / n : NAN);
}

void ms_metric_setup_normals(ms_metric_acc *a) {
    MS_ASSERT(a->def->target == MS_TARGET_DENSE && a->def->channels == 3);
    a->n_sums = 2 + BINS;
    a->n_counts = 4 + BINS;
    a->image = normals_image, a->result = normals_result;
}
