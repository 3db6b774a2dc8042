/* The Taskonomy dense head (official models_mt.py): the shared final LayerNorm `norm` over all
 * tokens, CLS dropped, a per-token Linear(D -> p*p*C) `task_heads.{t}.1`, un-patchified with
 * the channel fastest inside a patch (einops '(j k c)', MS_PATCH_HWC) to pred[B, C, H, W].
 * (task_heads.{t}.0 is the parameter-free einops Rearrange in the official module list.)
 *
 * The Linear runs over all B*N rows and the CLS rows are sliced off after it: the CLS token is
 * not contiguous with the patch tokens of the previous image, and one extra row in N costs
 * 1/N. Backward feeds zero gradient into the CLS rows, so norm's backward writes dx for every
 * token directly. */
#include <stdio.h>

#include "heads_internal.h"

static size_t ppc(const ms_heads *h, const task_head *th) {
    return (size_t)h->p * h->p * th->C;
}

void head_dense_create(ms_heads *h, int t, ms_param_table *pt) {
    task_head *th = &h->task[t];
    char name[MS_TENSOR_NAME_MAX];
    int64_t wshape[2] = {(int64_t)ppc(h, th), h->D}, bshape = (int64_t)ppc(h, th);
    snprintf(name, sizeof name, "task_heads.%d.1.weight", t);
    th->lin_w = head_add_tensor(h, pt, name, 2, wshape, 1, HEAD_INIT_TRUNC_NORMAL, 0);
    snprintf(name, sizeof name, "task_heads.%d.1.bias", t);
    th->lin_b = head_add_tensor(h, pt, name, 1, &bshape, 0, HEAD_INIT_ZERO, 0);
    size_t BN = (size_t)h->B * h->N, rows = BN * ppc(h, th);
    head_grow(&h->tmp_n, rows);           /* Linear output over all tokens */
    head_grow(&h->grad_n, rows);          /* its gradient */
    head_grow(&h->grad_n, BN * h->D);     /* gradient of norm's output */
}

void head_dense_alloc(ms_heads *h, int t, ms_arena *a) {
    task_head *th = &h->task[t];
    size_t BN = (size_t)h->B * h->N;
    th->xn = head_take_act(h, a, BN * h->D);
    th->mean = head_take_f32(a, BN);
    th->rstd = head_take_f32(a, BN);
    th->pred = head_take_act(h, a, (size_t)h->B * th->C * h->H * h->W);
}

void head_dense_forward(ms_heads *h, int t, const ms_act *x) {
    ms_backend *be = h->be;
    task_head *th = &h->task[t];
    int BN = h->B * h->N, O = (int)ppc(h, th);
    be->layernorm(be, th->xn, th->mean, th->rstd, x, head_param(h, h->norm_w),
                  head_param(h, h->norm_b), BN, h->D, HEAD_LN_EPS);
    be->linear(be, h->tmp0, th->xn, head_param(h, th->lin_w), head_param(h, th->lin_b), BN, h->D,
               O, MS_W_OUT_IN);                                   /* [B, N, O] */
    be->tokens_slice(be, h->tmp1, h->tmp0, h->B, h->N, O, 1, h->N); /* [B, Np, O] */
    be->unpatchify(be, th->pred, h->tmp1, h->B, th->C, h->H, h->W, h->p, MS_PATCH_HWC);
}

void head_dense_backward(ms_heads *h, int t, const ms_act *x, ms_act *dx) {
    ms_backend *be = h->be;
    task_head *th = &h->task[t];
    int BN = h->B * h->N, O = (int)ppc(h, th);
    /* h->g0 holds dpred[B, C, H, W]. */
    be->patchify(be, h->g1, h->g0, h->B, th->C, h->H, h->W, h->p, MS_PATCH_HWC); /* [B, Np, O] */
    be->tokens_slice_bwd(be, h->g0, h->g1, h->B, h->N, O, 1, h->N);             /* [B, N, O] */
    be->linear_bwd(be, h->g1, head_grad(h, th->lin_w), head_grad(h, th->lin_b), h->g0, th->xn,
                   head_param(h, th->lin_w), BN, h->D, O, MS_W_OUT_IN, 0);     /* [B, N, D] */
    be->layernorm_bwd(be, dx, head_grad(h, h->norm_w), head_grad(h, h->norm_b), h->g1, x,
                      th->mean, th->rstd, head_param(h, h->norm_w), BN, h->D, 0);
}

/* Counted over the Np patch tokens, as the official head computes it: our extra CLS row (see
 * above) is an implementation detail, not part of the model. */
double head_dense_flops(const ms_heads *h, int t) {
    return 2.0 * h->Np * h->D * (double)ppc(h, &h->task[t]);
}
