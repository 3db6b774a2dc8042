/* Inside the metric accumulators (model/metrics*.c): each metric kind defines the layout of the
 * flat state, how one image adds to it and how the state becomes a result. Tests read the
 * documented layouts. */
#ifndef MS_METRICS_INTERNAL_H
#define MS_METRICS_INTERNAL_H

#include <math.h>

#include "metrics.h"

/* Adds image b of a batch to sums[n_sums] and counts[n_counts] (zeroed by the caller). pred
 * and target are the whole batch's. Called concurrently for different images. */
typedef void (*ms_metric_image_fn)(const ms_metric_acc *acc, const float *pred,
                                   const ms_target *target, int b, int H, int W, double *sums,
                                   int64_t *counts);
typedef void (*ms_metric_result_fn)(const ms_metric_acc *acc, ms_metric_result *out);

/* Images whose partial states are held at once during an update. */
#define MS_METRIC_SLOTS 16

struct ms_metric_acc {
    const ms_task_def *def;
    ms_metric_options opt;
    size_t n_sums, n_counts;
    double *sums;          /* [n_sums] */
    int64_t *counts;       /* [n_counts] */
    ms_metric_image_fn image;
    ms_metric_result_fn result;
    double *slot_sums;     /* [MS_METRIC_SLOTS, n_sums] per-image partials of one update */
    int64_t *slot_counts;  /* [MS_METRIC_SLOTS, n_counts] */
};

/* Each kind fills n_sums, n_counts, image and result.
 * L1 / MSE      sums {masked, unmasked}, counts {valid pixels, pixels}
 * RMSE          sums {sq metres masked, sq official unmasked, |x| encoded masked},
 *               counts {valid pixels, pixels}
 * ACCURACY      counts {correct, images}
 * MIOU          counts [C, C]: row = label, column = prediction
 * MAXF          sums [3, 15]: per-image precision, recall, Jaccard summed over images;
 *               counts {images, tp[19], predicted[19], positives}
 * ANGLE         sums {angle, angle^2, bin sums[18000]};
 *               counts {pixels, under 11.25, 22.5, 30, bin counts[18000]}
 * ODSF          counts [4, 99]: matched predicted, predicted, matched truth, truth */
void ms_metric_setup_pixel(ms_metric_acc *acc);   /* L1, MSE, RMSE, ACCURACY, MIOU */
void ms_metric_setup_sal(ms_metric_acc *acc);     /* MAXF */
void ms_metric_setup_normals(ms_metric_acc *acc); /* ANGLE */
void ms_metric_setup_edges(ms_metric_acc *acc);   /* ODSF */

#define MS_SAL_THRESHOLDS 15
#define MS_SAL_POOLED_THRESHOLDS 19
#define MS_ANGLE_BINS 18000 /* 0.01 degree each over [0, 180] */
#define MS_EDGE_THRESHOLDS 99

/* Appends (name, value) to a result. */
void ms_metric_put(ms_metric_result *r, const char *name, double value);

/* 1 / (1 + exp(-x)) */
static inline double ms_sigmoid(float x) { return 1.0 / (1.0 + exp(-(double)x)); }

#endif
