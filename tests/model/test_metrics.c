/* Evaluation metrics on hand-made predictions with hand-computed values, plus merging, thread
 * independence, the matching of odsF against a brute-force matcher, Delta_m and JSON. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../model/metrics_internal.h"
#include "../testutil.h"

/* ---- helpers -------------------------------------------------------------------------------- */

static double logit(double p) { return log(p / (1 - p)); }

static void near(const char *what, double got, double want, double tol) {
    cr_assert(fabs(got - want) <= tol * fmax(1.0, fabs(want)), "%s: got %.15g, want %.15g", what,
              got, want);
}

static double val(const ms_metric_result *r, const char *name) {
    const double *v = ms_metric_find(r, name);
    cr_assert(v, "no value \"%s\" in the result", name);
    return *v;
}

static ms_metric_result result_of(ms_metric_acc *a) {
    ms_metric_result r;
    ms_metric_result_get(a, &r);
    return r;
}

static const ms_task_def *task(ms_dataset d, const char *name) {
    const ms_task_def *t = ms_task_find(d, name);
    cr_assert(t, "no task %s", name);
    return t;
}

/* A labels task with C classes and the given ignore index (the real tasks have 18 / 21 / 7). */
static ms_task_def labels_task(int C, int ignore) {
    return (ms_task_def){"test_labels", MS_DATASET_PASCAL_CONTEXT, MS_TARGET_LABELS, C,
                         MS_LOSS_CE, MS_METRIC_MIOU, ignore, 0, 0, 1, "%"};
}

/* Logits [C, P] of one image whose argmax is arg[p]. */
static void one_hot_logits(float *x, const int *arg, int C, int P) {
    for (int c = 0; c < C; c++)
        for (int p = 0; p < P; p++) x[c * P + p] = c == arg[p] ? 2.0f : -1.0f + 0.1f * c;
}

/* ---- mIoU ------------------------------------------------------------------------------------ */

Test(metrics, miou_two_by_three) {
    /* label  0 0 1     prediction  0 1 1     (255 = ignore)
     *        1 2 255               2 2 0
     * confusion: (0,0) (0,1) (1,1) (1,2) (2,2):
     * IoU0 = 1/2, IoU1 = 1/(1+1+1) = 1/3, IoU2 = 1/(1+1) = 1/2 */
    ms_task_def def = labels_task(3, 255);
    int32_t labels[6] = {0, 0, 1, 1, 2, 255};
    int arg[6] = {0, 1, 1, 2, 2, 0};
    float x[18];
    one_hot_logits(x, arg, 3, 6);
    ms_target t = {.labels = labels};
    ms_metric_acc *a = ms_metric_acc_new(&def, NULL);
    ms_metric_update(a, x, &t, 1, 2, 3);
    ms_metric_result r = result_of(a);
    cr_assert_str_eq(r.values[0].name, "miou");
    near("miou", r.primary, 100.0 * (0.5 + 1.0 / 3 + 0.5) / 3, 1e-12);
    near("pixel_acc", val(&r, "pixel_acc"), 60, 1e-12);
    near("iou_0", val(&r, "iou_0"), 50, 1e-12);
    near("iou_1", val(&r, "iou_1"), 100.0 / 3, 1e-12);
    near("iou_2", val(&r, "iou_2"), 50, 1e-12);
    near("miou_present", val(&r, "miou_present"), r.primary, 1e-12);
    ms_metric_acc_free(a);
}

Test(metrics, miou_ignore_zero_and_absent_class) {
    /* Taskonomy-style: 0 = uncertain is ignored and is not a class of the mean; class 4 never
     * appears. Pixels (label, prediction): (1,1) (1,0) (2,2) (0,3) (3,2) (2,2).
     * IoU1 = 1/2 (a prediction of 0 is a miss), IoU2 = 2/3, IoU3 = 0, IoU4 = 0 / 0 -> 0. */
    ms_task_def def = labels_task(5, 0);
    int32_t labels[6] = {1, 1, 2, 0, 3, 2};
    int arg[6] = {1, 0, 2, 3, 2, 2};
    float x[30];
    one_hot_logits(x, arg, 5, 6);
    ms_target t = {.labels = labels};
    ms_metric_acc *a = ms_metric_acc_new(&def, NULL);
    ms_metric_update(a, x, &t, 1, 2, 3);
    ms_metric_result r = result_of(a);
    near("miou", r.primary, 100.0 * (0.5 + 2.0 / 3) / 4, 1e-12);
    near("miou_present", val(&r, "miou_present"), 100.0 * (0.5 + 2.0 / 3) / 3, 1e-12);
    near("pixel_acc", val(&r, "pixel_acc"), 60, 1e-12);
    cr_assert_null(ms_metric_find(&r, "iou_0"));
    near("iou_4", val(&r, "iou_4"), 0, 0);
    ms_metric_acc_free(a);

    /* the real segment_semantic: 18 logits, classes 1..17 in the mean */
    a = ms_metric_acc_new(task(MS_DATASET_TASKONOMY, "segment_semantic"), NULL);
    r = result_of(a);
    cr_assert(isnan(r.primary), "no pixels seen: NaN");
    cr_assert_eq(r.n, 3 + 17);
    cr_assert_null(ms_metric_find(&r, "iou_0"));
    cr_assert(ms_metric_find(&r, "iou_17"));
    ms_metric_acc_free(a);
}

/* ---- classification ---------------------------------------------------------------------------- */

Test(metrics, accuracy_top1_agreement) {
    const ms_task_def *def = task(MS_DATASET_TASKONOMY, "class_object");
    const int C = def->channels, B = 3;
    float *x = tu_floats((size_t)B * C), *y = tu_floats((size_t)B * C);
    tu_rng rng = tu_seed(1);
    tu_fill(&rng, x, (size_t)B * C, -1, 1);
    tu_fill(&rng, y, (size_t)B * C, 0, 1e-3);
    x[0 * C + 17] = 5, y[0 * C + 17] = 0.5f;                   /* agree */
    x[1 * C + 3] = 5, y[1 * C + 4] = 0.5f;                     /* disagree */
    x[2 * C + 5] = 5, x[2 * C + 7] = 5, y[2 * C + 5] = 0.5f;   /* tie: the first maximum, agree */
    ms_target t = {.vector = y};
    ms_metric_acc *a = ms_metric_acc_new(def, NULL);
    ms_metric_update(a, x, &t, B, 224, 224);
    near("accuracy", result_of(a).primary, 200.0 / 3, 1e-12);
    ms_metric_acc_free(a);
}

/* ---- Taskonomy regression ---------------------------------------------------------------------- */

Test(metrics, l1_masked_and_unmasked) {
    /* normal: 3 channels, 2 x 2 pixels, pixel 1 invalid; target 0, so |pred| is the error.
     * valid: 1 + .5 + 0 | 2 + 0 + .5 | 0 + 1 + 1 = 6 over 9 values; all: + 30 over 12. */
    const ms_task_def *def = task(MS_DATASET_TASKONOMY, "normal");
    float x[12] = {1, 10, -2, 0, 0.5f, 10, 0, 1, 0, 10, 0.5f, -1};
    float y[12] = {0};
    uint8_t valid[4] = {1, 0, 1, 1};
    ms_target t = {.dense = y, .valid = valid};
    ms_metric_acc *a = ms_metric_acc_new(def, NULL);
    ms_metric_update(a, x, &t, 1, 2, 2);
    ms_metric_result r = result_of(a);
    cr_assert_str_eq(r.values[0].name, "l1");
    near("l1", r.primary, 6.0 / 9, 1e-12);
    near("l1_unmasked", val(&r, "l1_unmasked"), 36.0 / 12, 1e-12);
    ms_metric_acc_free(a);
}

Test(metrics, mse_curvature) {
    /* 2 channels, 1 x 3 pixels, pixel 2 invalid: errors (1, -2 | 3, 0) valid, (5 | 5) not.
     * mse = (1 + 4 + 9 + 0) / 4; unmasked (14 + 50) / 6. */
    const ms_task_def *def = task(MS_DATASET_TASKONOMY, "principal_curvature");
    float y[6] = {0.5f, -1, 2, 1, 1, 1};
    float x[6] = {1.5f, -3, 7, 4, 1, 6};
    uint8_t valid[3] = {1, 1, 0};
    ms_target t = {.dense = y, .valid = valid};
    ms_metric_acc *a = ms_metric_acc_new(def, NULL);
    ms_metric_update(a, x, &t, 1, 1, 3);
    ms_metric_result r = result_of(a);
    near("mse", r.primary, 14.0 / 4, 1e-12);
    near("mse_unmasked", val(&r, "mse_unmasked"), 64.0 / 6, 1e-12);
    ms_metric_acc_free(a);
}

/* The depth encoding of m metres: ln(1 + 512 m) / ln(2^16). */
static float depth_code(double m) { return (float)(log1p(512.0 * m) / log(65536.0)); }

/* compute_depth_errors' transform, transcribed from util/metric.py (torch semantics). */
static double official_units(double x) {
    if (x < 0) x = 0;
    double u = exp(x * log(65536.0)) - 1.0;
    u = log(u) / 11.09;
    u = (u - 0.64) / 0.18;
    u = (u + 1.0) / 2 * 128.0;
    return u < 1e-3 ? 1e-3 : (u > 128 ? 128 : u);
}

Test(metrics, depth_rmse_in_metres) {
    /* pixel: truth m, prediction          error (m, clamped to [1e-3, 128])
     *   0    2,   3 m                     1
     *   1    1,   1 m                     0
     *   2    0.5, code -0.3 (clamped: 0)  0.5 - 1e-3
     *   3    1,   100 m, INVALID          -
     *   4    100, code 1.5 (> 128 m)      28 */
    const ms_task_def *def = task(MS_DATASET_TASKONOMY, "depth_euclidean");
    float y[5] = {depth_code(2), depth_code(1), depth_code(0.5), depth_code(1), depth_code(100)};
    float x[5] = {depth_code(3), depth_code(1), -0.3f, depth_code(100), 1.5f};
    uint8_t valid[5] = {1, 1, 1, 0, 1};
    ms_target t = {.dense = y, .valid = valid};
    ms_metric_acc *a = ms_metric_acc_new(def, NULL);
    ms_metric_update(a, x, &t, 1, 1, 5);
    ms_metric_result r = result_of(a);
    cr_assert_str_eq(r.values[0].name, "rmse");
    near("rmse", r.primary, sqrt((1 + 0 + 0.499 * 0.499 + 28 * 28) / 4.0), 1e-5);
    double sq = 0, l1 = 0;
    for (int p = 0; p < 5; p++) {
        const double e = official_units(x[p]) - official_units(y[p]);
        sq += e * e;
        if (valid[p]) l1 += fabs((double)x[p] - y[p]);
    }
    near("rmse_official (all pixels)", val(&r, "rmse_official"), sqrt(sq / 5), 1e-12);
    near("l1 (encoded)", val(&r, "l1"), l1 / 4, 1e-12);
    ms_metric_acc_free(a);
}

/* ---- saliency ---------------------------------------------------------------------------------- */

/* Image 1: p = .97 .62 .33 .08, labels 1 1 0 1; image 2: p = .87 .08 .08 .08, no salient pixel.
 * Per image, thresholds 0.2 .. 0.9 (p > t):
 *   t <= 0.30   img1 predicts .97 .62 .33: P = R = 2/3, J = 2/4;  img2 predicts .87: P = R = J = 0
 *   0.35..0.60  img1 .97 .62: P = 1, R = 2/3, J = 2/3;            img2 the same as above
 *   0.65..0.85  img1 .97: P = 1, R = 1/3, J = 1/3;                img2 the same as above
 *   0.90        img1 .97: as above;                               img2 nothing: P = R = 0, J = 1 */
static const float sal_p[8] = {0.97f, 0.62f, 0.33f, 0.08f, 0.87f, 0.08f, 0.08f, 0.08f};
static uint8_t sal_y[8] = {1, 1, 0, 1, 0, 0, 0, 0};

static ms_metric_acc *sal_acc(int images) {
    float x[8];
    for (int i = 0; i < 8; i++) x[i] = (float)logit(sal_p[i]);
    ms_target t = {.binary = sal_y};
    ms_metric_acc *a = ms_metric_acc_new(task(MS_DATASET_PASCAL_CONTEXT, "sal"), NULL);
    ms_metric_update(a, x, &t, images, 1, 4);
    return a;
}

Test(metrics, saliency_one_image) {
    ms_metric_acc *a = sal_acc(1);
    ms_metric_result r = result_of(a);
    cr_assert_str_eq(r.values[0].name, "maxF");
    near("maxF (beta^2 = 1, as eval_sal.py)", r.primary, 100 * 0.8, 1e-9);       /* P 1, R 2/3 */
    near("maxF_b03", val(&r, "maxF_b03"), 100 * 1.3 * (2.0 / 3) / (0.3 + 2.0 / 3), 1e-9);
    near("miou", val(&r, "miou"), 100 * 2.0 / 3, 1e-9);
    ms_metric_acc_free(a);
}

Test(metrics, saliency_two_images_three_definitions) {
    ms_metric_acc *a = sal_acc(2);
    ms_metric_result r = result_of(a);
    /* means: t <= .3: P = R = 1/3; .35-.6: P = 1/2, R = 1/3 (F1 = 0.4); higher: P 1/2, R 1/6 */
    near("maxF", r.primary, 40, 1e-9);
    near("maxF_b03", val(&r, "maxF_b03"), 100 * 13.0 / 29, 1e-9);
    /* Jaccard means: .25, 1/3, 1/6 and at 0.9 (1/3 + 1) / 2 = 2/3 */
    near("miou", val(&r, "miou"), 100 * 2.0 / 3, 1e-9);
    /* pooled over both images, thresholds .05 .. .95 (p >= t), 3 salient pixels:
     *   .05: 8 predicted, tp 3 -> F = 1.3 (3/8) / (0.3 (3/8) + 1) = 0.438
     *   .10-.30: 4, tp 2 (P 1/2, R 2/3) -> 0.531;  .35-.60: 3, tp 2 -> 2/3
     *   .65-.85: 2, tp 1 -> 0.448;  .90-.95: 1, tp 1 (P 1, R 1/3) -> 0.684 */
    near("maxF_pooled_b03", val(&r, "maxF_pooled_b03"), 100 * 1.3 / 3 / (0.3 + 1.0 / 3), 1e-9);
    ms_metric_acc_free(a);
}

Test(metrics, saliency_ignores_void_pixels_and_empty_images) {
    /* image 1 of the test above plus a void pixel predicted salient; a third image all void */
    float x[12];
    uint8_t y[12] = {1, 1, 0, 1, 255, 255, 255, 255, 255, 255, 255, 255};
    for (int i = 0; i < 4; i++) x[i] = (float)logit(sal_p[i]);
    for (int i = 4; i < 12; i++) x[i] = 6;
    ms_target t = {.binary = y};
    ms_metric_acc *a = ms_metric_acc_new(task(MS_DATASET_PASCAL_CONTEXT, "sal"), NULL);
    ms_metric_update(a, x, &t, 3, 1, 4);
    near("maxF", result_of(a).primary, 80, 1e-9);
    cr_assert_eq(a->counts[0], 1, "images with a valid pixel");
    ms_metric_acc_free(a);
}

/* ---- normals ----------------------------------------------------------------------------------- */

Test(metrics, normals_angles) {
    /* truth (0, 0, 1) everywhere; predictions (unnormalised) at 0, 20, 60 and 90 degrees; one
     * invalid pixel and one with a zero target (both at 180 degrees, not counted). */
    const ms_task_def *def = task(MS_DATASET_PASCAL_CONTEXT, "normals");
    const int P = 6;
    const double deg[4] = {0, 20, 60, 90}, scale[4] = {2, 0.5, 5, 3};
    float x[18], y[18];
    uint8_t valid[6] = {1, 1, 1, 1, 0, 1};
    for (int p = 0; p < P; p++) {
        const double a = p < 4 ? deg[p] * M_PI / 180 : M_PI, s = p < 4 ? scale[p] : 1;
        x[0 * P + p] = (float)(s * sin(a)), x[1 * P + p] = 0, x[2 * P + p] = (float)(s * cos(a));
        y[0 * P + p] = 0, y[1 * P + p] = 0, y[2 * P + p] = p == 5 ? 0 : 1;
    }
    ms_target t = {.dense = y, .valid = valid};
    ms_metric_acc *a = ms_metric_acc_new(def, NULL);
    ms_metric_update(a, x, &t, 1, 2, 3);
    ms_metric_result r = result_of(a);
    cr_assert_str_eq(r.values[0].name, "angle_mean");
    near("mean", r.primary, 42.5, 1e-5);
    near("median (20 and 60 averaged)", val(&r, "angle_median"), 40, 1e-5);
    near("rmse", val(&r, "angle_rmse"), 55, 1e-5); /* sqrt((0 + 400 + 3600 + 8100) / 4) */
    near("under 11.25", val(&r, "under_11.25"), 25, 1e-12);
    near("under 22.5", val(&r, "under_22.5"), 50, 1e-12);
    near("under 30", val(&r, "under_30"), 50, 1e-12);
    ms_metric_acc_free(a);
}

Test(metrics, normals_median_resolution) {
    /* 10.001 and 10.004 degrees share a 0.01-degree bin: the median (the 2nd of 3) is read as
     * that bin's mean, 10.0025, within the documented 0.01 degrees; an odd count with distinct
     * bins is exact. */
    const ms_task_def *def = task(MS_DATASET_PASCAL_CONTEXT, "normals");
    const double deg[3] = {10.001, 10.004, 50};
    float x[9], y[9];
    uint8_t valid[3] = {1, 1, 1};
    for (int p = 0; p < 3; p++) {
        const double a = deg[p] * M_PI / 180;
        x[p] = (float)sin(a), x[3 + p] = 0, x[6 + p] = (float)cos(a);
        y[p] = 0, y[3 + p] = 0, y[6 + p] = 1;
    }
    ms_target t = {.dense = y, .valid = valid};
    ms_metric_acc *a = ms_metric_acc_new(def, NULL);
    ms_metric_update(a, x, &t, 1, 1, 3);
    ms_metric_result r = result_of(a);
    cr_assert(fabs(val(&r, "angle_median") - 10.004) <= 0.01);
    near("median = bin mean", val(&r, "angle_median"), 10.0025, 1e-4);
    ms_metric_acc_free(a);
}

/* ---- edges ------------------------------------------------------------------------------------- */

/* One H x W edge image: probabilities p (0 where not set) and labels. */
typedef struct {
    int H, W;
    float *x;   /* [H * W] logits */
    uint8_t *y; /* [H * W] */
} edge_img;

static edge_img edge_new(int H, int W) {
    edge_img e = {H, W, tu_floats((size_t)H * W), tu_bytes((size_t)H * W)};
    for (int i = 0; i < H * W; i++) e.x[i] = -20, e.y[i] = 0;
    return e;
}

static void set_pred(edge_img *e, int yy, int xx, double p) { e->x[yy * e->W + xx] = (float)logit(p); }

static ms_metric_result edge_eval(const edge_img *e, double max_dist) {
    ms_metric_options opt = {.edge_max_dist = max_dist};
    ms_metric_acc *a = ms_metric_acc_new(task(MS_DATASET_PASCAL_CONTEXT, "edge"), &opt);
    ms_target t = {.binary = e->y};
    ms_metric_update(a, e->x, &t, 1, e->H, e->W);
    ms_metric_result r = result_of(a);
    ms_metric_acc_free(a);
    return r;
}

/* 30 x 40: diagonal 50, so max_dist 0.03 is a radius of 1.5 pixels (d^2 = 1, 2 match; 4 not) */
#define R15 0.03

Test(metrics, edges_shift_within_and_beyond_radius) {
    for (int shift = 0; shift <= 2; shift++) {
        edge_img e = edge_new(30, 40);
        for (int yy = 5; yy < 25; yy++) e.y[yy * 40 + 10] = 1, set_pred(&e, yy, 10 + shift, 0.9);
        ms_metric_result r = edge_eval(&e, R15);
        cr_assert_str_eq(r.values[0].name, "odsF");
        near("odsF", r.primary, shift <= 1 ? 100 : 0, 1e-12);
        if (shift <= 1) {
            near("ods_precision", val(&r, "ods_precision"), 100, 1e-12);
            near("ods_recall", val(&r, "ods_recall"), 100, 1e-12);
            near("ods_threshold (first best)", val(&r, "ods_threshold"), 0.01, 1e-12);
        }
    }
    /* diagonal neighbours (d^2 = 2) are within 1.5 pixels: the line moved by (1, 1) matches
     * fully (prediction row r to truth row r - 1) */
    edge_img e = edge_new(30, 40);
    for (int yy = 5; yy < 25; yy++) e.y[yy * 40 + 10] = 1, set_pred(&e, yy + 1, 11, 0.9);
    near("odsF diagonal", edge_eval(&e, R15).primary, 100, 1e-12);
}

Test(metrics, edges_one_to_one) {
    /* one truth pixel, two predictions next to it: only one can match. P = 1/2, R = 1. */
    edge_img e = edge_new(30, 40);
    e.y[10 * 40 + 10] = 1;
    set_pred(&e, 10, 11, 0.9), set_pred(&e, 11, 10, 0.9);
    ms_metric_result r = edge_eval(&e, R15);
    near("odsF", r.primary, 100 * 2.0 / 3, 1e-12);
    near("precision", val(&r, "ods_precision"), 50, 1e-12);
    near("recall", val(&r, "ods_recall"), 100, 1e-12);
}

Test(metrics, edges_needs_an_augmenting_path) {
    /* truth g1 (10,10), g2 (10,12); predictions q1 (10,11) next to both, q2 (9,9) next to g1
     * only. Nearest-first greedy pairs g1-q1 and strands g2; the maximum matching is g1-q2,
     * g2-q1. */
    edge_img e = edge_new(30, 40);
    e.y[10 * 40 + 10] = 1, e.y[10 * 40 + 12] = 1;
    set_pred(&e, 10, 11, 0.9), set_pred(&e, 9, 9, 0.9);
    near("odsF", edge_eval(&e, R15).primary, 100, 1e-12);
}

Test(metrics, edges_threshold_sweep) {
    /* truth: 20 pixels of a line. Predictions on it: 10 at p .8, 10 at p .355; 10 false ones
     * far away at p .255. t <= .25: 30 predicted, 20 matched: P 2/3, R 1 -> F .8;
     * .26 .. .35: 20 / 20 -> F 1;  .36 .. .80: 10 / 10, R 1/2 -> F 2/3;  above: F 0. */
    edge_img e = edge_new(30, 40);
    for (int i = 0; i < 20; i++) {
        e.y[(5 + i) * 40 + 10] = 1;
        set_pred(&e, 5 + i, 10, i < 10 ? 0.8 : 0.355);
        if (i < 10) set_pred(&e, 5 + i, 30, 0.255);
    }
    ms_metric_result r = edge_eval(&e, R15);
    near("odsF", r.primary, 100, 1e-12);
    near("ods_threshold", val(&r, "ods_threshold"), 0.26, 1e-12);
    ms_metric_options opt = {.edge_max_dist = R15};
    ms_metric_acc *a = ms_metric_acc_new(task(MS_DATASET_PASCAL_CONTEXT, "edge"), &opt);
    ms_target t = {.binary = e.y};
    ms_metric_update(a, e.x, &t, 1, 30, 40);
    const int64_t *c = a->counts; /* [4, 99]: matched pred, pred, matched truth, truth */
    const int K = MS_EDGE_THRESHOLDS;
    const int k_low = 24 /* t .25 */, k_mid = 30 /* t .31 */, k_high = 70 /* t .71 */, k_top = 90;
    cr_assert(c[k_low] == 20 && c[K + k_low] == 30 && c[2 * K + k_low] == 20 && c[3 * K + k_low] == 20);
    cr_assert(c[k_mid] == 20 && c[K + k_mid] == 20);
    cr_assert(c[k_high] == 10 && c[K + k_high] == 10 && c[2 * K + k_high] == 10);
    cr_assert(c[k_top] == 0 && c[K + k_top] == 0 && c[3 * K + k_top] == 20);
    ms_metric_acc_free(a);
}

Test(metrics, edges_default_radius_512) {
    /* BSDS maxDist 0.0075 of the 512 x 512 diagonal = 5.43 pixels: a shift of 5 (or of (3, 4))
     * matches, a shift of 6 does not */
    const int shifts[3][2] = {{0, 5}, {3, 4}, {0, 6}};
    for (int s = 0; s < 3; s++) {
        edge_img e = edge_new(512, 512);
        for (int yy = 100; yy < 400; yy++) {
            e.y[yy * 512 + 200] = 1;
            set_pred(&e, yy + shifts[s][0], 200 + shifts[s][1], 0.7);
        }
        near("odsF", edge_eval(&e, 0.0075).primary, s < 2 ? 100 : 0, 1e-12);
    }
}

Test(metrics, edges_void_pixels) {
    /* a truth pixel marked 255 and a prediction on a void pixel are not counted */
    edge_img e = edge_new(30, 40);
    e.y[10 * 40 + 10] = 1, set_pred(&e, 10, 10, 0.9);
    e.y[20 * 40 + 20] = 255, set_pred(&e, 20, 20, 0.9);
    ms_metric_result r = edge_eval(&e, R15);
    near("odsF", r.primary, 100, 1e-12);
}

/* Brute force: Kuhn's augmenting paths on an explicit adjacency matrix. */
typedef struct {
    int ng, nq;
    const uint8_t *adj; /* [ng, nq] */
    int *mate_q, *seen;
} kuhn;

static int kuhn_try(kuhn *k, int g) {
    for (int q = 0; q < k->nq; q++) {
        if (!k->adj[g * k->nq + q] || k->seen[q]) continue;
        k->seen[q] = 1;
        if (k->mate_q[q] < 0 || kuhn_try(k, k->mate_q[q])) return k->mate_q[q] = g, 1;
    }
    return 0;
}

static void brute_counts(const float *x, const uint8_t *y, int H, int W, double max_dist,
                         int64_t *counts) {
    const int P = H * W, K = MS_EDGE_THRESHOLDS;
    const double r = max_dist * sqrt((double)H * H + (double)W * W);
    int *gp = malloc(P * sizeof(int)), *qp = malloc(P * sizeof(int));
    uint8_t *adj = malloc((size_t)P * P);
    int *mate = malloc(P * sizeof(int)), *seen = malloc(P * sizeof(int));
    for (int k = 0; k < K; k++) {
        const double th = (k + 1) / 100.0;
        int ng = 0, nq = 0;
        for (int p = 0; p < P; p++) {
            if (y[p] == 255) continue;
            if (y[p]) gp[ng++] = p;
            if (1.0 / (1.0 + exp(-(double)x[p])) >= th) qp[nq++] = p;
        }
        for (int i = 0; i < ng; i++)
            for (int j = 0; j < nq; j++) {
                const int dy = gp[i] / W - qp[j] / W, dx = gp[i] % W - qp[j] % W;
                adj[i * nq + j] = dy * dy + dx * dx <= r * r;
            }
        kuhn kk = {ng, nq, adj, mate, seen};
        for (int j = 0; j < nq; j++) mate[j] = -1;
        int m = 0;
        for (int i = 0; i < ng; i++) {
            for (int j = 0; j < nq; j++) seen[j] = 0;
            m += kuhn_try(&kk, i);
        }
        counts[k] += m, counts[K + k] += nq, counts[2 * K + k] += m, counts[3 * K + k] += ng;
    }
    free(gp), free(qp), free(adj), free(mate), free(seen);
}

Test(metrics, edges_match_brute_force) {
    tu_rng rng = tu_seed(7);
    for (int trial = 0; trial < 12; trial++) {
        const int H = tu_randint(&rng, 1, 18), W = tu_randint(&rng, 1, 18), B = tu_randint(&rng, 1, 3);
        const double max_dist = 0.02 + 0.12 * tu_uniform(&rng);
        const double density = 0.05 + 0.4 * tu_uniform(&rng);
        const int P = H * W;
        float *x = tu_floats((size_t)B * P);
        uint8_t *y = tu_bytes((size_t)B * P);
        for (int i = 0; i < B * P; i++) {
            x[i] = (float)(3 * tu_normal(&rng));
            const double u = tu_uniform(&rng);
            y[i] = u < 0.04 ? 255 : u < density ? 1 : 0;
        }
        ms_metric_options opt = {.edge_max_dist = max_dist};
        ms_metric_acc *a = ms_metric_acc_new(task(MS_DATASET_PASCAL_CONTEXT, "edge"), &opt);
        ms_target t = {.binary = y};
        ms_metric_update(a, x, &t, B, H, W);
        int64_t want[4 * MS_EDGE_THRESHOLDS] = {0};
        for (int b = 0; b < B; b++) brute_counts(x + b * P, y + b * P, H, W, max_dist, want);
        for (int i = 0; i < 4 * MS_EDGE_THRESHOLDS; i++)
            cr_assert_eq(a->counts[i], want[i], "trial %d (%dx%d, B %d, r %.3f): count %d is %lld, "
                         "brute force %lld", trial, H, W, B, max_dist * sqrt(H * H + W * W), i,
                         (long long)a->counts[i], (long long)want[i]);
        ms_metric_acc_free(a);
    }
}

/* ---- merging and thread independence ---------------------------------------------------------- */

/* Random predictions and targets for a batch of B images of any task. */
typedef struct {
    float *x;
    ms_target t;
} batch_data;

static batch_data random_batch(const ms_task_def *d, int B, int H, int W, tu_rng *r) {
    const size_t P = (size_t)H * W, C = d->channels;
    batch_data bd = {0};
    if (d->target == MS_TARGET_VECTOR) {
        bd.x = tu_floats(B * C), bd.t.vector = tu_floats(B * C);
        tu_fill(r, bd.x, B * C, -1, 1), tu_fill(r, bd.t.vector, B * C, 0, 1);
        return bd;
    }
    bd.x = tu_floats(B * C * P);
    tu_fill_normal(r, bd.x, B * C * P, 2);
    switch (d->target) {
    case MS_TARGET_DENSE:
        bd.t.dense = tu_floats(B * C * P), bd.t.valid = tu_bytes(B * P);
        tu_fill(r, bd.t.dense, B * C * P, 0, 1); /* depth codes are in [0, 1] */
        for (size_t i = 0; i < B * P; i++) bd.t.valid[i] = tu_uniform(r) < 0.8;
        break;
    case MS_TARGET_LABELS:
        bd.t.labels = tu_ints(B * P);
        for (size_t i = 0; i < B * P; i++)
            bd.t.labels[i] = tu_uniform(r) < 0.1 ? d->ignore_index : tu_randint(r, 0, (int)C - 1);
        break;
    case MS_TARGET_BINARY:
        bd.t.binary = tu_bytes(B * P);
        for (size_t i = 0; i < B * P; i++) {
            const double u = tu_uniform(r);
            bd.t.binary[i] = u < 0.05 ? 255 : u < 0.3;
        }
        break;
    default: break;
    }
    return bd;
}

/* Offsets image b0 of a batch so that images b0 .. are updated on their own. */
static void update_part(ms_metric_acc *a, const ms_task_def *d, const batch_data *bd, int b0,
                        int nb, int H, int W) {
    const size_t P = d->target == MS_TARGET_VECTOR ? 1 : (size_t)H * W, C = d->channels;
    ms_target t = {0};
    if (bd->t.dense) t.dense = bd->t.dense + b0 * C * P, t.valid = bd->t.valid + b0 * P;
    if (bd->t.labels) t.labels = bd->t.labels + b0 * P;
    if (bd->t.binary) t.binary = bd->t.binary + b0 * P;
    if (bd->t.vector) t.vector = bd->t.vector + b0 * C;
    ms_metric_update(a, bd->x + b0 * C * P, &t, nb, H, W);
}

static const char *const every_task[][2] = {
    {"taskonomy", "depth_euclidean"}, {"taskonomy", "normal"}, {"taskonomy", "principal_curvature"},
    {"taskonomy", "class_scene"}, {"taskonomy", "segment_semantic"}, {"pascal", "semseg"},
    {"pascal", "sal"}, {"pascal", "normals"}, {"pascal", "edge"},
};

static const ms_task_def *every(int i) {
    return task(every_task[i][0][0] == 't' ? MS_DATASET_TASKONOMY : MS_DATASET_PASCAL_CONTEXT,
                every_task[i][1]);
}

Test(metrics, merge_equals_one_accumulator) {
    for (int i = 0; i < (int)(sizeof every_task / sizeof every_task[0]); i++) {
        const ms_task_def *d = every(i);
        const int B = 7, H = 24, W = 20;
        tu_rng rng = tu_seed(100 + i);
        batch_data bd = random_batch(d, B, H, W, &rng);
        ms_metric_acc *all = ms_metric_acc_new(d, NULL), *a = ms_metric_acc_new(d, NULL),
                      *b = ms_metric_acc_new(d, NULL);
        update_part(all, d, &bd, 0, 3, H, W), update_part(all, d, &bd, 3, 4, H, W);
        update_part(a, d, &bd, 0, 3, H, W), update_part(b, d, &bd, 3, 4, H, W);
        ms_metric_merge(a, b);
        size_t nc, ns, nc2, ns2;
        const int64_t *c1 = ms_metric_counts(all, &nc), *c2 = ms_metric_counts(a, &nc2);
        const double *s1 = ms_metric_sums(all, &ns), *s2 = ms_metric_sums(a, &ns2);
        cr_assert(nc == nc2 && ns == ns2);
        cr_assert(memcmp(c1, c2, nc * sizeof *c1) == 0, "%s: merged counts differ", d->name);
        for (size_t k = 0; k < ns; k++) near(d->name, s2[k], s1[k], 1e-12);
        ms_metric_result r1 = result_of(all), r2 = result_of(a);
        for (int v = 0; v < r1.n; v++) near(r1.values[v].name, r2.values[v].value, r1.values[v].value, 1e-9);
        cr_assert(isfinite(r1.primary), "%s: primary %g", d->name, r1.primary);
        ms_metric_acc_free(all), ms_metric_acc_free(a), ms_metric_acc_free(b);
    }
}

Test(metrics, state_independent_of_threads_and_batching) {
    /* 20 images: more than the per-update slots; one call with 1 or 2 threads, or one image per
     * call, must give the same bits */
    for (int i = 0; i < (int)(sizeof every_task / sizeof every_task[0]); i++) {
        const ms_task_def *d = every(i);
        const int B = 20, H = 16, W = 12;
        tu_rng rng = tu_seed(200 + i);
        batch_data bd = random_batch(d, B, H, W, &rng);
        ms_metric_acc *acc[3];
        for (int k = 0; k < 3; k++) acc[k] = ms_metric_acc_new(d, NULL);
        omp_set_num_threads(2);
        update_part(acc[0], d, &bd, 0, B, H, W);
        omp_set_num_threads(1);
        update_part(acc[1], d, &bd, 0, B, H, W);
        omp_set_num_threads(2);
        for (int b = 0; b < B; b++) update_part(acc[2], d, &bd, b, 1, H, W);
        for (int k = 1; k < 3; k++) {
            cr_assert(memcmp(acc[0]->counts, acc[k]->counts, acc[0]->n_counts * sizeof(int64_t)) == 0,
                      "%s: counts differ (%d)", d->name, k);
            cr_assert(memcmp(acc[0]->sums, acc[k]->sums, acc[0]->n_sums * sizeof(double)) == 0,
                      "%s: sums differ (%d)", d->name, k);
        }
        for (int k = 0; k < 3; k++) ms_metric_acc_free(acc[k]);
    }
}

Test(metrics, reset_empties) {
    const ms_task_def *d = task(MS_DATASET_PASCAL_CONTEXT, "semseg");
    tu_rng rng = tu_seed(5);
    batch_data bd = random_batch(d, 2, 8, 8, &rng);
    ms_metric_acc *a = ms_metric_acc_new(d, NULL);
    update_part(a, d, &bd, 0, 2, 8, 8);
    cr_assert(isfinite(result_of(a).primary));
    ms_metric_acc_reset(a);
    cr_assert(isnan(result_of(a).primary));
    ms_metric_acc_free(a);
}

/* ---- Delta_m ------------------------------------------------------------------------------------ */

Test(metrics, delta_m_mixed_signs) {
    /* mIoU up 50 vs 40: +0.25; RMSE 0.9 vs 1 (lower is better): +0.1; L1 0.2 vs 0.25: +0.2;
     * accuracy 45 vs 50: -0.1. Delta_m = 100 / 4 * 0.45 = 11.25 */
    const ms_task_def *defs[4] = {task(MS_DATASET_PASCAL_CONTEXT, "semseg"),
                                  task(MS_DATASET_TASKONOMY, "depth_euclidean"),
                                  task(MS_DATASET_TASKONOMY, "normal"),
                                  task(MS_DATASET_TASKONOMY, "class_object")};
    const double mt[4] = {50, 0.9, 0.2, 45}, st[4] = {40, 1.0, 0.25, 50};
    near("Delta_m", ms_delta_m(4, defs, mt, st), 11.25, 1e-12);
    near("Delta_m of a single worse error", ms_delta_m(1, defs + 1, (double[]){1.2}, st + 1), -20, 1e-12);
    const double zero[4] = {40, 0, 0.25, 50};
    cr_assert(isnan(ms_delta_m(4, defs, mt, zero)));
}

/* ---- JSON --------------------------------------------------------------------------------------- */

Test(metrics, json_round_trip) {
    ms_metric_result r[2] = {0};
    const double vals[5] = {0.1, 1.0 / 3, 1e-300, -5, NAN};
    const char *names[5] = {"miou", "pixel_acc", "tiny", "negative", "nothing"};
    for (int i = 0; i < 5; i++) ms_metric_put(&r[0], names[i], vals[i]);
    ms_metric_put(&r[1], "odsF", 71.25);
    const char *tasks[2] = {"semseg", "edge \"quoted\"\\"};
    char path[64];
    snprintf(path, sizeof path, "/tmp/ms_metrics_%d.json", (int)getpid());
    char err[512];
    cr_assert_eq(ms_metrics_json_write(path, 2, tasks, r, err, sizeof err), 0, "%s", err);
    ms_metrics_file *f = malloc(sizeof *f);
    cr_assert_eq(ms_metrics_json_read(path, f, err, sizeof err), 0, "%s", err);
    remove(path);
    cr_assert_eq(f->T, 2);
    const ms_metric_result *a = ms_metrics_file_task(f, "semseg");
    cr_assert(a && a->n == 5);
    for (int i = 0; i < 4; i++) {
        cr_assert_str_eq(a->values[i].name, names[i]);
        cr_assert(a->values[i].value == vals[i], "%s: %.17g", names[i], a->values[i].value);
    }
    cr_assert(isnan(a->values[4].value), "NaN is written as null and read back as NaN");
    const ms_metric_result *b = ms_metrics_file_task(f, tasks[1]);
    cr_assert(b && b->n == 1 && b->primary == 71.25);
    /* the formatter's length is exact, and it truncates like snprintf */
    const size_t n = ms_metrics_json_format(NULL, 0, 2, tasks, r);
    char *text = malloc(n + 1);
    cr_assert_eq(ms_metrics_json_format(text, n + 1, 2, tasks, r), n);
    cr_assert_eq(strlen(text), n);
    char small[8];
    ms_metrics_json_format(small, sizeof small, 2, tasks, r);
    cr_assert_eq(strlen(small), 7);
    free(text), free(f);
}

Test(metrics, json_parse_lenient_and_strict) {
    ms_metrics_file *f = malloc(sizeof *f);
    char err[512];
    const char *ok = "\r\n{ \"checkpoint\": \"run/ckpt.safetensors\", \"delta_m\": -1.5e0,\n"
                     "  \"extra\": [1, {\"a\": [true, false, null]}],\n"
                     "  \"sal\": {\"maxF\": 7.5E+1, \"nan\": NaN, \"inf\": -Infinity},\n"
                     "  \"n\\u00e9\": {}, \"semseg\": {\"miou\": 0}\n}  ";
    cr_assert_eq(ms_metrics_json_parse(ok, strlen(ok), "ok.json", f, err, sizeof err), 0, "%s", err);
    cr_assert_eq(f->T, 3, "objects are tasks, other members are skipped");
    const ms_metric_result *s = ms_metrics_file_task(f, "sal");
    cr_assert(s && s->primary == 75 && isnan(s->values[1].value) && isinf(s->values[2].value));
    cr_assert(ms_metrics_file_task(f, "n\xc3\xa9"), "\\u escapes decode to UTF-8");
    const struct {
        const char *text, *expect;
    } bad[] = {
        {"{\"sal\": {\"maxF\": 1}", "bad.json:1:20: expected ',' or '}' between tasks"},
        {"{\"sal\": {\"maxF\": \"high\"}}", "bad.json:1:18: expected a number or null in task \"sal\""},
        {"{\"sal\": {\"maxF\": 1}, \"sal\": {}}", "task \"sal\" appears twice"},
        {"{\"sal\": {\"maxF\": 01}}", "expected ',' or '}' in task \"sal\""},
        {"{\"sal\": {\"maxF\": 1.}}", "expected digits after '.'"},
        {"[1]", "bad.json:1:1: expected '{' at the start of a metrics file"},
        {"{} x", "unexpected text after the metrics object"},
        {"{\"sal\":\n {\"a\": 1, \"a\": 2}}", "bad.json:2:14: metric \"a\" appears twice"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        cr_assert_eq(ms_metrics_json_parse(bad[i].text, strlen(bad[i].text), "bad.json", f, err,
                                           sizeof err), -1, "accepted %s", bad[i].text);
        cr_assert(strstr(err, bad[i].expect), "for %s: got \"%s\", want \"%s\"", bad[i].text, err,
                  bad[i].expect);
    }
    free(f);
}

Test(metrics, delta_m_against_a_baseline_file) {
    const ms_task_def *defs[2] = {task(MS_DATASET_PASCAL_CONTEXT, "semseg"),
                                  task(MS_DATASET_PASCAL_CONTEXT, "normals")};
    ms_metric_result mt[2] = {0};
    ms_metric_put(&mt[0], "miou", 66), ms_metric_put(&mt[1], "angle_mean", 13);
    const char *base = "{\"semseg\": {\"pixel_acc\": 90, \"miou\": 60},"
                       " \"normals\": {\"angle_mean\": 14.3}}";
    ms_metrics_file *f = malloc(sizeof *f);
    char err[512];
    cr_assert_eq(ms_metrics_json_parse(base, strlen(base), "st.json", f, err, sizeof err), 0);
    double dm;
    cr_assert_eq(ms_delta_m_baseline(2, defs, mt, f, "st.json", &dm, err, sizeof err), 0, "%s", err);
    near("Delta_m", dm, 50 * (6.0 / 60 + 1.3 / 14.3), 1e-12);
    const char *missing = "{\"semseg\": {\"miou\": 60}}";
    cr_assert_eq(ms_metrics_json_parse(missing, strlen(missing), "st.json", f, err, sizeof err), 0);
    cr_assert_eq(ms_delta_m_baseline(2, defs, mt, f, "st.json", &dm, err, sizeof err), -1);
    cr_assert(strstr(err, "st.json: no \"normals\" metric \"angle_mean\""), "%s", err);
    free(f);
}
