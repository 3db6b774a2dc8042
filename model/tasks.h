/* What modsquad knows about each task: the one table that the config, the data loaders, the
 * heads, the losses and the metrics read (spec: METHOD.md section 4, DATASETS.md). */
#ifndef MS_TASKS_H
#define MS_TASKS_H

#include "config.h" /* ms_dataset */

/* How a task's target is stored in a batch (host and device). */
typedef enum {
    MS_TARGET_DENSE,  /* float [B, C, P] plus valid [B, P] (uint8, 1 = valid) */
    MS_TARGET_LABELS, /* int32 [B, P] class per pixel, ignore_index = no label */
    MS_TARGET_BINARY, /* uint8 [B, P] 0 / 1, 255 = ignore */
    MS_TARGET_VECTOR, /* float [B, C] one vector per image (soft class target) */
} ms_target_kind;

typedef enum {
    MS_LOSS_L1,           /* masked L1 */
    MS_LOSS_MSE,          /* masked MSE (curvature; classification logits vs soft target) */
    MS_LOSS_COSINE,       /* 1 - cosine over channels (Taskonomy normals) */
    MS_LOSS_CE,           /* cross-entropy with ignore_index */
    MS_LOSS_BCE_BALANCED, /* balanced BCE (saliency: automatic weight; edges: fixed) */
    MS_LOSS_NORMALS_L1,   /* L1 of the L2-normalised prediction over valid pixels (PASCAL) */
} ms_loss_kind;

typedef enum {
    MS_METRIC_L1,       /* mean absolute error over valid pixels (lower is better) */
    MS_METRIC_RMSE,     /* depth_euclidean RMSE in metres */
    MS_METRIC_MSE,      /* principal curvature */
    MS_METRIC_ACCURACY, /* top-1 agreement of argmax(pred) with argmax(target) */
    MS_METRIC_MIOU,     /* mean IoU from a dataset-wide confusion matrix */
    MS_METRIC_MAXF,     /* saliency max F-measure */
    MS_METRIC_ANGLE,    /* normals mean angular error in degrees */
    MS_METRIC_ODSF,     /* edges optimal-dataset-scale F-measure */
} ms_metric_kind;

typedef struct {
    const char *name;          /* the domain / task name users write in data.tasks */
    ms_dataset dataset;
    ms_target_kind target;
    int channels;              /* head output channels */
    ms_loss_kind loss;
    ms_metric_kind metric;
    int ignore_index;          /* MS_TARGET_LABELS: label value without supervision */
    int depth_masked;          /* Taskonomy: invalid where depth is invalid */
    int classification;        /* image-level head (mean of patch tokens) */
    double fixed_weight;       /* loss weight under model.task_weighting: fixed (METHOD.md 4) */
    const char *units;         /* of the metric, for tables */
} ms_task_def;

/* The definition of `name` in `dataset`, or NULL. */
const ms_task_def *ms_task_find(ms_dataset dataset, const char *name);
/* The tasks of a dataset in DATASETS.md order. */
int ms_task_count(ms_dataset dataset);
const ms_task_def *ms_task_at(ms_dataset dataset, int i);
/* +1 when a larger metric is better, -1 when smaller is (for Delta_m). */
int ms_metric_sign(ms_metric_kind m);

#endif
