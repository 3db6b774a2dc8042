/* The Taskonomy classification head (official models_mt.py): the mean of the UN-normalised
 * patch tokens (CLS excluded), the shared `fc_norm` LayerNorm (eps 1e-6), then the task's own
 * nn.Sequential(LayerNorm(D) (default eps 1e-5), Linear(D -> C)) = task_heads.{t}.0 / .1.
 * The prediction is the raw logits [B, C]; the loss compares them with the soft target. */
#include <stdio.h>

#include "heads_internal.h"

void head_class_create(ms_heads *h, int t, ms_param_table *pt) {
    task_head *th = &h->task[t];
    char name[MS_TENSOR_NAME_MAX];
    int64_t d = h->D, wshape[2] = {th->C, h->D}, c = th->C;
    snprintf(name, sizeof name, "task_heads.%d.0.weight", t);
    th->ln_w = head_add_tensor(h, pt, name, 1, &d, 0, HEAD_INIT_ONE, 0);
    snprintf(name, sizeof name, "task_heads.%d.0.bias", t);
    th->ln_b = head_add_tensor(h, pt, name, 1, &d, 0, HEAD_INIT_ZERO, 0);
    snprintf(name, sizeof name, "task_heads.%d.1.weight", t);
    th->lin_w = head_add_tensor(h, pt, name, 2, wshape, 1, HEAD_INIT_TRUNC_NORMAL, 0);
    snprintf(name, sizeof name, "task_heads.%d.1.bias", t);
    th->lin_b = head_add_tensor(h, pt, name, 1, &c, 0, HEAD_INIT_ZERO, 0);
    head_grow(&h->grad_n, (size_t)h->B * h->D);
}

void head_class_alloc(ms_heads *h, int t, ms_arena *a) {
    task_head *th = &h->task[t];
    size_t BD = (size_t)h->B * h->D;
    th->m = head_take_act(h, a, BD);
    th->f = head_take_act(h, a, BD);
    th->g = head_take_act(h, a, BD);
    th->mean = head_take_f32(a, (size_t)h->B);
    th->rstd = head_take_f32(a, (size_t)h->B);
    th->mean2 = head_take_f32(a, (size_t)h->B);
    th->rstd2 = head_take_f32(a, (size_t)h->B);
    th->pred = head_take_act(h, a, (size_t)h->B * th->C);
}

void head_class_forward(ms_heads *h, int t, const ms_act *x) {
    ms_backend *be = h->be;
    task_head *th = &h->task[t];
    int B = h->B, D = h->D;
    be->tokens_mean(be, th->m, x, B, h->N, D, 1);
    be->layernorm(be, th->f, th->mean, th->rstd, th->m, head_param(h, h->fc_w),
                  head_param(h, h->fc_b), B, D, HEAD_LN_EPS);
    be->layernorm(be, th->g, th->mean2, th->rstd2, th->f, head_param(h, th->ln_w),
                  head_param(h, th->ln_b), B, D, HEAD_CLASS_LN_EPS);
    be->linear(be, th->pred, th->g, head_param(h, th->lin_w), head_param(h, th->lin_b), B, D,
               th->C, MS_W_OUT_IN);
}

void head_class_backward(ms_heads *h, int t, const ms_act *x, ms_act *dx) {
    (void)x; /* the token mean is linear: its backward needs no input */
    ms_backend *be = h->be;
    task_head *th = &h->task[t];
    int B = h->B, D = h->D;
    /* h->g0 holds dlogits[B, C]; then [B, D] gradients alternate between g1 and g0. */
    be->linear_bwd(be, h->g1, head_grad(h, th->lin_w), head_grad(h, th->lin_b), h->g0, th->g,
                   head_param(h, th->lin_w), B, D, th->C, MS_W_OUT_IN, 0);
    be->layernorm_bwd(be, h->g0, head_grad(h, th->ln_w), head_grad(h, th->ln_b), h->g1, th->f,
                      th->mean2, th->rstd2, head_param(h, th->ln_w), B, D, 0);
    be->layernorm_bwd(be, h->g1, head_grad(h, h->fc_w), head_grad(h, h->fc_b), h->g0, th->m,
                      th->mean, th->rstd, head_param(h, h->fc_w), B, D, 0);
    be->tokens_mean_bwd(be, dx, h->g1, B, h->N, D, 1);
}

double head_class_flops(const ms_heads *h, int t) {
    return 2.0 * h->D * (double)h->task[t].C;
}
