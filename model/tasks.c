#include "tasks.h"

#include <string.h>

/* Channels and losses: METHOD.md section 4 and the official type_to_channel; segment_semantic
 * has 18 logits (0 = uncertain is ignored, 1 = background, 2..17 classes). */
static const ms_task_def taskonomy[] = {
    {"depth_euclidean", MS_DATASET_TASKONOMY, MS_TARGET_DENSE, 1, MS_LOSS_L1, MS_METRIC_RMSE, -1, 1, 0, 1, "m"},
    {"depth_zbuffer", MS_DATASET_TASKONOMY, MS_TARGET_DENSE, 1, MS_LOSS_L1, MS_METRIC_L1, -1, 1, 0, 1, ""},
    {"normal", MS_DATASET_TASKONOMY, MS_TARGET_DENSE, 3, MS_LOSS_COSINE, MS_METRIC_L1, -1, 1, 0, 1, ""},
    {"principal_curvature", MS_DATASET_TASKONOMY, MS_TARGET_DENSE, 2, MS_LOSS_MSE, MS_METRIC_MSE, -1, 1, 0, 1, ""},
    {"reshading", MS_DATASET_TASKONOMY, MS_TARGET_DENSE, 3, MS_LOSS_L1, MS_METRIC_L1, -1, 1, 0, 1, ""},
    {"edge_texture", MS_DATASET_TASKONOMY, MS_TARGET_DENSE, 1, MS_LOSS_L1, MS_METRIC_L1, -1, 0, 0, 1, ""},
    {"edge_occlusion", MS_DATASET_TASKONOMY, MS_TARGET_DENSE, 1, MS_LOSS_L1, MS_METRIC_L1, -1, 1, 0, 1, ""},
    {"keypoints2d", MS_DATASET_TASKONOMY, MS_TARGET_DENSE, 1, MS_LOSS_L1, MS_METRIC_L1, -1, 0, 0, 1, ""},
    {"keypoints3d", MS_DATASET_TASKONOMY, MS_TARGET_DENSE, 1, MS_LOSS_L1, MS_METRIC_L1, -1, 1, 0, 1, ""},
    {"segment_unsup2d", MS_DATASET_TASKONOMY, MS_TARGET_DENSE, 1, MS_LOSS_L1, MS_METRIC_L1, -1, 0, 0, 1, ""},
    {"segment_unsup25d", MS_DATASET_TASKONOMY, MS_TARGET_DENSE, 1, MS_LOSS_L1, MS_METRIC_L1, -1, 0, 0, 1, ""},
    {"segment_semantic", MS_DATASET_TASKONOMY, MS_TARGET_LABELS, 18, MS_LOSS_CE, MS_METRIC_MIOU, 0, 0, 0, 1, "%"},
    {"class_object", MS_DATASET_TASKONOMY, MS_TARGET_VECTOR, 1000, MS_LOSS_MSE, MS_METRIC_ACCURACY, -1, 0, 1, 1, "%"},
    {"class_scene", MS_DATASET_TASKONOMY, MS_TARGET_VECTOR, 365, MS_LOSS_MSE, MS_METRIC_ACCURACY, -1, 0, 1, 1, "%"},
};

/* PASCAL-Context multi-task (M3ViT heads and losses; fixed weights of METHOD.md section 4). */
static const ms_task_def pascal[] = {
    {"semseg", MS_DATASET_PASCAL_CONTEXT, MS_TARGET_LABELS, 21, MS_LOSS_CE, MS_METRIC_MIOU, 255, 0, 0, 1, "%"},
    {"human_parts", MS_DATASET_PASCAL_CONTEXT, MS_TARGET_LABELS, 7, MS_LOSS_CE, MS_METRIC_MIOU, 255, 0, 0, 2, "%"},
    {"sal", MS_DATASET_PASCAL_CONTEXT, MS_TARGET_BINARY, 1, MS_LOSS_BCE_BALANCED, MS_METRIC_MAXF, -1, 0, 0, 5, "%"},
    {"normals", MS_DATASET_PASCAL_CONTEXT, MS_TARGET_DENSE, 3, MS_LOSS_NORMALS_L1, MS_METRIC_ANGLE, -1, 0, 0, 10, "deg"},
    {"edge", MS_DATASET_PASCAL_CONTEXT, MS_TARGET_BINARY, 1, MS_LOSS_BCE_BALANCED, MS_METRIC_ODSF, -1, 0, 0, 50, "%"},
};

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

int ms_task_count(ms_dataset dataset) {
    return dataset == MS_DATASET_TASKONOMY ? COUNT(taskonomy) : COUNT(pascal);
}

const ms_task_def *ms_task_at(ms_dataset dataset, int i) {
    if (i < 0 || i >= ms_task_count(dataset)) return NULL;
    return dataset == MS_DATASET_TASKONOMY ? &taskonomy[i] : &pascal[i];
}

const ms_task_def *ms_task_find(ms_dataset dataset, const char *name) {
    for (int i = 0; i < ms_task_count(dataset); i++)
        if (strcmp(ms_task_at(dataset, i)->name, name) == 0) return ms_task_at(dataset, i);
    return NULL;
}

int ms_metric_sign(ms_metric_kind m) {
    switch (m) {
    case MS_METRIC_ACCURACY: case MS_METRIC_MIOU: case MS_METRIC_MAXF: case MS_METRIC_ODSF: return 1;
    default: return -1;
    }
}
