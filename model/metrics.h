/* Evaluation metrics of DATASETS.md, accumulated on the host while evaluation streams batches.
 *
 * One accumulator per task, made from its ms_task_def. `ms_metric_update` takes the head's raw
 * output for a batch (downloaded as float: logits for segmentation, saliency and edges) and the
 * host targets of that batch. The accumulator's whole state is two flat arrays, doubles and
 * int64 counts, that only ever ADD up: evaluation sharded over ranks all-reduces them (sum) and
 * then every rank reads the same result; `ms_metric_merge` is the same sum on one host.
 *
 * Metrics (values in the task's units: "%" metrics are percentages):
 *   L1        l1: mean |pred - target| over valid pixels and channels (encoded units);
 *             l1_unmasked: over all pixels, as the official code reports it.
 *   MSE       mse / mse_unmasked: the same with squares (principal curvature).
 *   RMSE      depth_euclidean. rmse: metres over valid pixels. A value x of the encoding
 *             x = ln(1 + d) / ln(2^16), d in 1/512 m, is m(x) = (exp(x ln 2^16) - 1) / 512;
 *             the prediction is first clamped to x >= 0 and both are clamped to [1e-3, 128] m,
 *             as the official compute_depth_errors clamps (128 m = 65536/512, the largest depth
 *             the 16-bit files hold). rmse_official: the official number, over ALL pixels in its
 *             own units: u = ((ln(d) / 11.09 - 0.64) / 0.18 + 1) / 2 * 128, clamped [1e-3, 128].
 *             l1: |pred - target| in encoded units over valid pixels.
 *             All RMSEs are dataset-wide (root of the mean over every pixel evaluated), not
 *             the mean of per-batch RMSEs the official logger prints.
 *   ACCURACY  accuracy: % of images whose argmax(pred) equals argmax(soft target) (first
 *             maximum on ties, as torch.argmax).
 *   MIOU      A dataset-wide confusion matrix over pixels whose label is not ignore_index; the
 *             prediction is argmax over all C channels. miou: mean over the classes other than
 *             ignore_index of tp / (tp + fp + fn), a class never seen nor predicted counting 0
 *             (SemsegMeter of Multi-Task-Learning-PyTorch); miou_present: mean over classes
 *             seen or predicted; pixel_acc; iou_<c> per class. Labels outside [0, C) are
 *             skipped like ignore_index (the loaders validate them).
 *   MAXF      saliency, p = sigmoid(logit), pixels labelled 255 ignored, images without a
 *             valid pixel skipped. maxF: eval_sal.py of Multi-Task-Learning-PyTorch (the M3ViT
 *             evaluation): per image, at thresholds linspace(0.2, 0.9, 15) with p > t,
 *             P = tp / (tp + fp + 1e-12) and R = tp / (tp + fn + 1e-12); P and R are averaged
 *             over images and F = 2 P R / (P + R + 1e-12) (beta^2 = 1, as that code has it);
 *             the maximum over thresholds. maxF_b03: the same means with beta^2 = 0.3.
 *             maxF_pooled_b03: InvPT's SaliencyMeter: tp and counts pooled over the dataset at
 *             thresholds 0.05, 0.10, ..., 0.95 with p >= t, F = 1.3 P R / (0.3 P + R), 0 where
 *             undefined; the maximum. miou: max over the 15 thresholds of the per-image mean
 *             Jaccard (1 for an image with nothing labelled or predicted).
 *   ANGLE     PASCAL normals over valid pixels with a non-zero target: both vectors
 *             L2-normalised (norm + 1e-12), angle = acos(clamp(dot, -1, 1)) in degrees.
 *             angle_mean, angle_median, angle_rmse, under_11.25, under_22.5, under_30 (% of
 *             pixels strictly below). The median comes from a histogram of 0.01-degree bins
 *             holding each bin's count and sum of angles: the middle element is taken as the
 *             mean of its bin, exact when the bin holds one value and within 0.01 degrees
 *             otherwise (two middle elements are averaged for an even count, as numpy does).
 *   ODSF      edges, p = sigmoid(logit), pixels labelled 255 ignored. At each of the 99
 *             thresholds t = 0.01 .. 0.99 (p >= t) the predicted boundary pixels are matched
 *             ONE-TO-ONE to the ground-truth boundary pixels within maxDist = edge_max_dist *
 *             sqrt(H^2 + W^2) pixels (u^2 + v^2 <= maxDist^2), as correspondPixels of the BSDS
 *             benchmark does; the matching is a maximum bipartite matching (Hopcroft-Karp),
 *             which has the cardinality of BSDS's min-cost assignment with its high outlier
 *             cost. Counts are pooled over the dataset per threshold and odsF is the best
 *             F = 2 P R / (P + R) (seism's conventions where a count is zero). The thresholded
 *             map is matched as it is, without thinning: seism's eval_cont, which the
 *             Multi-Task-Learning-PyTorch edge evaluation calls, passes 'thin', 0.
 *             odsF, ods_threshold, ods_precision, ods_recall.
 */
#ifndef MS_METRICS_H
#define MS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "batch.h"
#include "tasks.h"

#define MS_METRIC_NAME_MAX 32   /* metric names, with the NUL */
#define MS_METRIC_MAX_VALUES 48 /* values in one result: the primary and its secondaries */
#define MS_METRICS_FILE_MAX_TASKS 32

typedef struct {
    double edge_max_dist; /* odsF match distance as a fraction of the image diagonal */
} ms_metric_options;

/* BSDS defaults: edge_max_dist = 0.0075. */
ms_metric_options ms_metric_options_default(void);

typedef struct ms_metric_acc ms_metric_acc;

/* An empty accumulator for `def` (which must outlive it); opt NULL = defaults. */
ms_metric_acc *ms_metric_acc_new(const ms_task_def *def, const ms_metric_options *opt);
void ms_metric_acc_free(ms_metric_acc *acc);
void ms_metric_acc_reset(ms_metric_acc *acc);
const ms_task_def *ms_metric_acc_task(const ms_metric_acc *acc);

/* Adds a batch of B images of H x W. pred: [B, C, H, W] for dense tasks, [B, C] for
 * image-level ones (C = the task's channels; H and W are then unused); target: the batch's
 * host target of this task (model/batch.h). odsF's radius follows H and W, so images of
 * different sizes (PASCAL at its original sizes) are added one call per size. The images are independent: they are processed in parallel and their
 * contributions added in image order, so the state does not depend on the thread count. */
void ms_metric_update(ms_metric_acc *acc, const float *pred, const ms_target *target, int B,
                      int H, int W);

/* dst += src; both accumulators belong to the same task and options. */
void ms_metric_merge(ms_metric_acc *dst, const ms_metric_acc *src);

/* The state, for an all-reduce (sum) across ranks: n doubles and n int64 counts (layouts in
 * metrics_internal.h). Counts merge bit-exactly; sums to rounding. */
double *ms_metric_sums(ms_metric_acc *acc, size_t *n);
int64_t *ms_metric_counts(ms_metric_acc *acc, size_t *n);

typedef struct {
    char name[MS_METRIC_NAME_MAX];
    double value; /* NaN when nothing was evaluated */
} ms_metric_value;

typedef struct {
    double primary;                                /* = values[0].value */
    int n;
    ms_metric_value values[MS_METRIC_MAX_VALUES]; /* [n], the primary first */
} ms_metric_result;

void ms_metric_result_get(const ms_metric_acc *acc, ms_metric_result *out);
/* The value called `name`, or NULL. */
const double *ms_metric_find(const ms_metric_result *r, const char *name);
/* The name of a metric kind's primary value: "l1", "rmse", "mse", "accuracy", "miou", "maxF",
 * "angle_mean", "odsF". */
const char *ms_metric_primary_name(ms_metric_kind kind);

/* Multi-task gain in percent (DATASETS.md): (100 / T) sum_t s_t (mt[t] - st[t]) / st[t],
 * s_t = ms_metric_sign(defs[t]->metric). NaN when a baseline value is 0 or not finite. */
double ms_delta_m(int T, const ms_task_def *const *defs, const double *mt, const double *st);

/* ---- JSON: {"task": {"metric": value, ...}, ...} ------------------------------------------ */

/* Writes the results of T tasks into buf (cap bytes, NUL-terminated when cap > 0) and returns
 * the length the whole text needs, as snprintf does. NaN and infinities are written as null;
 * numbers with 17 significant digits, so they read back bit-exactly. */
size_t ms_metrics_json_format(char *buf, size_t cap, int T, const char *const *tasks,
                              const ms_metric_result *results);
/* The same into a file (written to a temporary file, then renamed). 0, or -1 with err. */
int ms_metrics_json_write(const char *path, int T, const char *const *tasks,
                          const ms_metric_result *results, char *err, size_t cap);

/* A metrics file as read back: every top-level member whose value is an object is a task;
 * other top-level members (a "delta_m" number, a "checkpoint" string, ...) are skipped. Task
 * members must be numbers or null (read as NaN; NaN, Infinity and -Infinity as Python's json
 * writes them are accepted too). */
typedef struct {
    int T;
    char task[MS_METRICS_FILE_MAX_TASKS][MS_NAME_MAX];
    ms_metric_result r[MS_METRICS_FILE_MAX_TASKS]; /* primary = the task's first value */
} ms_metrics_file;

/* Parses text[len]; `what` names the source in errors ("file:line:column: ..."). 0 or -1. */
int ms_metrics_json_parse(const char *text, size_t len, const char *what, ms_metrics_file *out,
                          char *err, size_t cap);
int ms_metrics_json_read(const char *path, ms_metrics_file *out, char *err, size_t cap);
/* The result of `task`, or NULL. */
const ms_metric_result *ms_metrics_file_task(const ms_metrics_file *f, const char *task);

/* Delta_m of the primary metrics mt[T] against a baseline file: each task's primary metric
 * (ms_metric_primary_name) must be present there. 0, or -1 with err naming what is missing. */
int ms_delta_m_baseline(int T, const ms_task_def *const *defs, const ms_metric_result *mt,
                        const ms_metrics_file *baseline, const char *baseline_path,
                        double *delta_m, char *err, size_t cap);

#endif
