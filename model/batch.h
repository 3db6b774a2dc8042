/* One batch of images and targets, as the data loader fills it (host memory) and the model
 * uploads it. Target layout per task follows its ms_task_def (model/tasks.h):
 *   MS_TARGET_DENSE   dense[B, C, P] + valid[B, P] (1 = supervised pixel)
 *   MS_TARGET_LABELS  labels[B, P] (int32; the task's ignore_index = no label)
 *   MS_TARGET_BINARY  binary[B, P] (0 / 1; 255 = ignore)
 *   MS_TARGET_VECTOR  vector[B, C] (soft class target: softmax of the stored logits)
 * P = H * W of the (cropped) images. */
#ifndef MS_BATCH_H
#define MS_BATCH_H

#include <stdint.h>

#include "config.h" /* MS_MAX_TASKS */

typedef struct {
    float *dense;    /* [B, C, P] */
    uint8_t *valid;  /* [B, P] */
    int32_t *labels; /* [B, P] */
    uint8_t *binary; /* [B, P] */
    float *vector;   /* [B, C] */
} ms_target;

typedef struct {
    int B, H, W;                    /* images in this batch and their size */
    float *images;                  /* [B, 3, H, W], normalised as the dataset prescribes */
    int T;                          /* tasks, in data.tasks order */
    ms_target target[MS_MAX_TASKS]; /* [T] */
    int64_t *sample;                /* [B] dataset sample ids (logs, saved predictions) */
} ms_batch;

/* Allocates host buffers for B images of H x W and the targets of cfg's tasks (zeroed). */
void ms_batch_alloc(ms_batch *b, const ms_config *cfg, int B, int H, int W);
void ms_batch_free(ms_batch *b);

#endif
