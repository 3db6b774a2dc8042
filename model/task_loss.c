/* The loss of each task (METHOD.md section 4, .notes/official_model.md section 5), from its
 * prediction pred[B, C, P] (P = H*W; classification: P = 1) and its device targets.
 *
 * - L1, MSE, cosine: Taskonomy regression (MSE also for the classification logits against the
 *   soft target vector, as the official engine_mt.py). The pixel mask is applied where the task
 *   defines invalid pixels: the depth-masked Taskonomy tasks (the official code masks nothing;
 *   METHOD.md asks us to, see DATASETS.md) and PASCAL normals; every other task's loss reads no
 *   mask, so a loader need not fill `valid` for it.
 * - CE: ignore_index of the task (255 PASCAL, 0 Taskonomy segment_semantic).
 * - Balanced BCE: PASCAL edge uses model.edge_pos_weight (M3ViT's 0.95); saliency the batch's
 *   share of negatives (MTL-PyTorch BalancedCrossEntropyLoss with pos_weight None).
 * - PASCAL normals: L1 of pred / (|pred| + 1e-12) (norm over C) against the label, mean over
 *   valid pixels x 3 (MTL-PyTorch NormalsLoss(normalize=True, size_average=True, norm=1)).
 * With several ranks (heads.c, ms_heads_share_counts) a training loss and its gradient are
 * scaled by loss_scale, and the automatic BCE weight is the global batch's. */
#include <string.h>

#include "../kernels/util.h"
#include "heads_internal.h"

static size_t task_pixels(const ms_heads *h, const task_head *th) {
    return th->kind == HEAD_CLASS ? 1 : (size_t)h->H * h->W;
}

void task_loss_create(ms_heads *h, int t) {
    task_head *th = &h->task[t];
    const ms_task_def *d = th->def;
    ms_target_kind want = MS_TARGET_DENSE;
    switch (d->loss) {
    case MS_LOSS_L1:
    case MS_LOSS_MSE:
    case MS_LOSS_COSINE: want = d->classification ? MS_TARGET_VECTOR : MS_TARGET_DENSE; break;
    case MS_LOSS_CE: want = MS_TARGET_LABELS; break;
    case MS_LOSS_BCE_BALANCED: want = MS_TARGET_BINARY; break;
    case MS_LOSS_NORMALS_L1: want = MS_TARGET_DENSE; break;
    }
    MS_ASSERT(d->target == want);
    MS_ASSERT(d->loss != MS_LOSS_BCE_BALANCED || th->C == 1);
    MS_ASSERT(!d->classification || d->target == MS_TARGET_VECTOR);
    th->use_valid = d->target == MS_TARGET_DENSE &&
                    (d->depth_masked || d->loss == MS_LOSS_NORMALS_L1);
    th->pos_weight = strcmp(d->name, "edge") == 0 ? (float)h->cfg->model.edge_pos_weight : -1.0f;
    if (d->loss == MS_LOSS_NORMALS_L1)
        head_grow(&h->tmp_n, (size_t)h->B * th->C * task_pixels(h, th));
    head_grow(&h->grad_n, (size_t)h->B * th->C * task_pixels(h, th));
}

/* The regression target: the soft class vector [B, C] or the dense map [B, C, P]. */
static const float *regression_target(const task_head *th) {
    return th->def->target == MS_TARGET_VECTOR ? th->vector : th->dense;
}

/* The fixed weight of the positives (edges), else the global batch's share of negatives under
 * data parallelism, else < 0: the op takes this batch's. */
static float bce_pos_weight(const task_head *th) {
    return th->pos_weight >= 0 ? th->pos_weight : th->batch_pos_weight;
}

void task_loss_forward(ms_heads *h, int t) {
    ms_backend *be = h->be;
    task_head *th = &h->task[t];
    float *loss = h->loss + t;
    int B = h->B, C = th->C, P = (int)task_pixels(h, th);
    switch (th->def->loss) {
    case MS_LOSS_L1:
        be->loss_l1(be, loss, th->pred, regression_target(th), th->valid, B, C, P);
        break;
    case MS_LOSS_MSE:
        be->loss_mse(be, loss, th->pred, regression_target(th), th->valid, B, C, P);
        break;
    case MS_LOSS_COSINE:
        be->loss_cosine(be, loss, th->pred, regression_target(th), th->valid, B, C, P);
        break;
    case MS_LOSS_CE:
        be->loss_ce(be, loss, th->pred, th->labels, th->def->ignore_index, B, C, P);
        break;
    case MS_LOSS_BCE_BALANCED:
        be->loss_bce_balanced(be, loss, th->pred, th->binary, bce_pos_weight(th), B, P);
        break;
    case MS_LOSS_NORMALS_L1:
        be->l2_normalize(be, h->tmp0, th->pred, B, C, P, HEAD_NORMALS_EPS); /* [B, C, P] */
        be->loss_l1(be, loss, h->tmp0, th->dense, th->valid, B, C, P);
        break;
    }
    if (th->loss_scale != 1.0f) be->scale_f32(be, loss, th->loss_scale, 1);
}

void task_loss_backward(ms_heads *h, int t) {
    ms_backend *be = h->be;
    task_head *th = &h->task[t];
    const float *dloss = h->dloss + t;
    if (th->loss_scale != 1.0f) {
        /* A scaled loss has a scaled gradient; dloss itself may be the fixed task weight. */
        be->copy(be, h->dloss_scaled + t, dloss, sizeof(float));
        be->scale_f32(be, h->dloss_scaled + t, th->loss_scale, 1);
        dloss = h->dloss_scaled + t;
    }
    int B = h->B, C = th->C, P = (int)task_pixels(h, th);
    switch (th->def->loss) {
    case MS_LOSS_L1:
        be->loss_l1_bwd(be, h->g0, dloss, th->pred, regression_target(th), th->valid, B, C, P);
        break;
    case MS_LOSS_MSE:
        be->loss_mse_bwd(be, h->g0, dloss, th->pred, regression_target(th), th->valid, B, C, P);
        break;
    case MS_LOSS_COSINE:
        be->loss_cosine_bwd(be, h->g0, dloss, th->pred, regression_target(th), th->valid, B, C,
                            P);
        break;
    case MS_LOSS_CE:
        be->loss_ce_bwd(be, h->g0, dloss, th->pred, th->labels, th->def->ignore_index, B, C, P);
        break;
    case MS_LOSS_BCE_BALANCED:
        be->loss_bce_balanced_bwd(be, h->g0, dloss, th->pred, th->binary, bce_pos_weight(th), B,
                                  P);
        break;
    case MS_LOSS_NORMALS_L1:
        /* The normalised prediction is recomputed rather than kept per task. */
        be->l2_normalize(be, h->tmp0, th->pred, B, C, P, HEAD_NORMALS_EPS);
        be->loss_l1_bwd(be, h->g1, dloss, h->tmp0, th->dense, th->valid, B, C, P);
        be->l2_normalize_bwd(be, h->g0, h->g1, th->pred, B, C, P, HEAD_NORMALS_EPS);
        break;
    }
}
