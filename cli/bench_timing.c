/* The timing shims of cli/bench_timing.h. Each shim calls the real op with the REAL backend
 * (so an op that calls other ops through its be argument is not counted twice) between two
 * synchronised clock reads. */
#include "bench_timing.h"

#include "../kernels/util.h"

const char *const ms_time_cat_names[MS_CAT_N] = {
    "gemm", "attention", "moe_routing", "norms_activations", "elementwise", "losses",
    "optimizer", "memory", "data"};

static ms_backend *real_of(ms_backend *be) { return ((ms_timed_backend *)be)->real; }

static double tic(ms_backend *r) {
    r->synchronize(r);
    return ms_now();
}

static void toc(ms_backend *be, ms_backend *r, ms_time_cat cat, double t0) {
    r->synchronize(r);
    ((ms_timed_backend *)be)->sec[cat] += ms_now() - t0;
}

#define UNPAREN(...) __VA_ARGS__
/* sh_OP(be, PARAMS...) times r->OP(r, ARGS...) into category CAT. */
#define SHIM(CAT, OP, PARAMS, ...)                                                              \
    static void sh_##OP(ms_backend *be, UNPAREN PARAMS) {                                       \
        ms_backend *r = real_of(be);                                                            \
        double t0 = tic(r);                                                                     \
        r->OP(r, __VA_ARGS__);                                                                  \
        toc(be, r, CAT, t0);                                                                    \
    }

/* Allocation is not step work: it is counted, not timed, so bench can show that the step loop
 * allocates nothing (DESIGN.md principle 4). */
static void *sh_alloc(ms_backend *be, size_t bytes) {
    ms_backend *r = real_of(be);
    ((ms_timed_backend *)be)->allocs++;
    return r->alloc(r, bytes);
}
static void sh_free(ms_backend *be, void *p) {
    ms_backend *r = real_of(be);
    ((ms_timed_backend *)be)->frees++;
    r->free(r, p);
}
static void sh_synchronize(ms_backend *be) {
    ms_backend *r = real_of(be);
    r->synchronize(r);
}

SHIM(MS_CAT_MEMORY, upload, (void *dst, const void *src, size_t bytes), dst, src, bytes)
SHIM(MS_CAT_MEMORY, download, (void *dst, const void *src, size_t bytes), dst, src, bytes)
SHIM(MS_CAT_MEMORY, zero, (void *dst, size_t bytes), dst, bytes)
SHIM(MS_CAT_MEMORY, copy, (void *dst, const void *src, size_t bytes), dst, src, bytes)
SHIM(MS_CAT_MEMORY, upload_act, (ms_act *dst, const float *src, size_t n), dst, src, n)
SHIM(MS_CAT_MEMORY, download_act, (float *dst, const ms_act *src, size_t n), dst, src, n)

SHIM(MS_CAT_PLUMBING, add, (ms_act *y, const ms_act *a, const ms_act *b, size_t n), y, a, b, n)
SHIM(MS_CAT_PLUMBING, add_row, (ms_act *y, const ms_act *x, const float *v, int M, int D), y, x, v, M, D)
SHIM(MS_CAT_PLUMBING, sum_rows, (float *dv, const ms_act *dy, int M, int D), dv, dy, M, D)
SHIM(MS_CAT_OPTIM, scale_f32, (float *x, float s, size_t n), x, s, n)
SHIM(MS_CAT_PLUMBING, drop_path, (ms_act *y, const ms_act *x, const float *s, int B, size_t n), y, x, s, B, n)
SHIM(MS_CAT_PLUMBING, patchify,
     (ms_act *pa, const ms_act *img, int B, int C, int Hi, int Wi, int p, ms_patch_order o),
     pa, img, B, C, Hi, Wi, p, o)
SHIM(MS_CAT_PLUMBING, unpatchify,
     (ms_act *img, const ms_act *pa, int B, int C, int Hi, int Wi, int p, ms_patch_order o),
     img, pa, B, C, Hi, Wi, p, o)
SHIM(MS_CAT_PLUMBING, tokens_assemble,
     (ms_act *x, const ms_act *pe, const float *cls, const float *pos, int B, int N, int D),
     x, pe, cls, pos, B, N, D)
SHIM(MS_CAT_PLUMBING, tokens_assemble_bwd,
     (ms_act *dpe, float *dcls, float *dpos, const ms_act *dx, int B, int N, int D),
     dpe, dcls, dpos, dx, B, N, D)
SHIM(MS_CAT_PLUMBING, tokens_slice,
     (ms_act *out, const ms_act *x, int B, int N, int D, int n0, int n1), out, x, B, N, D, n0, n1)
SHIM(MS_CAT_PLUMBING, tokens_slice_bwd,
     (ms_act *dx, const ms_act *dout, int B, int N, int D, int n0, int n1), dx, dout, B, N, D, n0, n1)
SHIM(MS_CAT_PLUMBING, tokens_mean, (ms_act *out, const ms_act *x, int B, int N, int D, int n0),
     out, x, B, N, D, n0)
SHIM(MS_CAT_PLUMBING, tokens_mean_bwd,
     (ms_act *dx, const ms_act *dout, int B, int N, int D, int n0), dx, dout, B, N, D, n0)

SHIM(MS_CAT_GEMM, linear,
     (ms_act *y, const ms_act *x, const float *w, const float *b, int M, int I, int O, ms_wlayout l),
     y, x, w, b, M, I, O, l)
SHIM(MS_CAT_GEMM, linear_bwd,
     (ms_act *dx, float *dw, float *db, const ms_act *dy, const ms_act *x, const float *w, int M,
      int I, int O, ms_wlayout l, int accum_dx),
     dx, dw, db, dy, x, w, M, I, O, l, accum_dx)
SHIM(MS_CAT_NORM_ACT, layernorm,
     (ms_act *y, float *mean, float *rstd, const ms_act *x, const float *g, const float *b, int M,
      int D, float eps),
     y, mean, rstd, x, g, b, M, D, eps)
SHIM(MS_CAT_NORM_ACT, layernorm_bwd,
     (ms_act *dx, float *dg, float *db, const ms_act *dy, const ms_act *x, const float *mean,
      const float *rstd, const float *g, int M, int D, int accum_dx),
     dx, dg, db, dy, x, mean, rstd, g, M, D, accum_dx)
SHIM(MS_CAT_NORM_ACT, gelu, (ms_act *y, const ms_act *x, size_t n), y, x, n)
SHIM(MS_CAT_NORM_ACT, gelu_bwd, (ms_act *dx, const ms_act *dy, const ms_act *x, size_t n), dx, dy, x, n)
SHIM(MS_CAT_NORM_ACT, softmax, (ms_act *y, const ms_act *x, int M, int N), y, x, M, N)
SHIM(MS_CAT_NORM_ACT, softmax_bwd, (ms_act *dx, const ms_act *dy, const ms_act *y, int M, int N),
     dx, dy, y, M, N)

SHIM(MS_CAT_ATTENTION, attention,
     (ms_act *out, ms_act *att, const ms_act *qkv, int B, int N, int H, int hd, float scale),
     out, att, qkv, B, N, H, hd, scale)
SHIM(MS_CAT_ATTENTION, attention_bwd,
     (ms_act *dqkv, ms_act *ws, const ms_act *dout, const ms_act *qkv, const ms_act *att, int B,
      int N, int H, int hd, float scale),
     dqkv, ws, dout, qkv, att, B, N, H, hd, scale)
SHIM(MS_CAT_ATTENTION, mq_attention,
     (ms_act *out, ms_act *att, const ms_act *q, const ms_act *kv, int B, int N, int K, int hd,
      float scale),
     out, att, q, kv, B, N, K, hd, scale)
SHIM(MS_CAT_ATTENTION, mq_attention_bwd,
     (ms_act *dq, ms_act *dkv, ms_act *ws, const ms_act *dout, const ms_act *q, const ms_act *kv,
      const ms_act *att, int B, int N, int K, int hd, float scale),
     dq, dkv, ws, dout, q, kv, att, B, N, K, hd, scale)

SHIM(MS_CAT_MOE, route,
     (float *probs, int32_t *idx, float *gate, const ms_act *logits, int M, int E, int K, float eps),
     probs, idx, gate, logits, M, E, K, eps)
SHIM(MS_CAT_MOE, route_bwd,
     (ms_act *dl, const float *dgate, const float *dA, const float *probs, const int32_t *idx,
      int M, int E, int K),
     dl, dgate, dA, probs, idx, M, E, K)
SHIM(MS_CAT_MOE, dispatch_plan,
     (int32_t *off, int32_t *perm, int32_t *inv, int32_t *offh, const int32_t *idx, int M, int K,
      int E),
     off, perm, inv, offh, idx, M, K, E)
SHIM(MS_CAT_MOE, remap_experts, (int32_t *out, const int32_t *idx, const int32_t *map, int n),
     out, idx, map, n)
SHIM(MS_CAT_MOE, gather_rows,
     (ms_act *out, const ms_act *in, const int32_t *idx, int div, int R, int D), out, in, idx, div, R, D)
SHIM(MS_CAT_MOE, combine,
     (ms_act *y, const ms_act *yd, const float *gate, const int32_t *inv, int M, int K, int D),
     y, yd, gate, inv, M, K, D)
SHIM(MS_CAT_MOE, combine_bwd,
     (ms_act *dyd, float *dgate, const ms_act *dy, const ms_act *yd, const float *gate,
      const int32_t *inv, int M, int K, int D),
     dyd, dgate, dy, yd, gate, inv, M, K, D)
SHIM(MS_CAT_MOE, expert_gate_bwd,
     (float *dgate, ms_act *du, ms_act *dyd, const ms_act *h, const float *b, const float *gate,
      const int32_t *idx, const int32_t *inv, int M, int K, int H, int D),
     dgate, du, dyd, h, b, gate, idx, inv, M, K, H, D)
SHIM(MS_CAT_GEMM, expert_linear,
     (ms_act *y, const ms_act *x, const float *w, const float *b, const int32_t *offh, int E, int I,
      int O),
     y, x, w, b, offh, E, I, O)
SHIM(MS_CAT_GEMM, expert_linear_bwd,
     (ms_act *dx, float *dw, float *db, const ms_act *dy, const ms_act *x, const float *w,
      const int32_t *offh, int E, int I, int O),
     dx, dw, db, dy, x, w, offh, E, I, O)
SHIM(MS_CAT_MOE, mi_accumulate,
     (float *A, float *freq, const float *probs, const int32_t *idx, int M, int E, int K, float eps),
     A, freq, probs, idx, M, E, K, eps)
SHIM(MS_CAT_LOSS, mi_loss,
     (float *loss, float *dA, const float *A, const float *freq, int T, int E, int K, float eps,
      float w),
     loss, dA, A, freq, T, E, K, eps, w)
SHIM(MS_CAT_MOE, noisy_logits, (ms_act *y, const ms_act *l2, const float *noise, int M, int E),
     y, l2, noise, M, E)
SHIM(MS_CAT_MOE, noisy_logits_bwd,
     (ms_act *dl2, const ms_act *dy, const ms_act *l2, const float *noise, int M, int E),
     dl2, dy, l2, noise, M, E)
SHIM(MS_CAT_LOSS, balance_loss,
     (float *loss, float *dimp, const float *gate, const int32_t *idx, int M, int E, int K, float w),
     loss, dimp, gate, idx, M, E, K, w)
SHIM(MS_CAT_LOSS, balance_loss_bwd,
     (float *dgate, const float *dimp, const int32_t *idx, int M, int K), dgate, dimp, idx, M, K)
SHIM(MS_CAT_MOE, router_task_bias, (float *bias, const float *w, const float *v, int E, int D),
     bias, w, v, E, D)
SHIM(MS_CAT_MOE, router_task_bias_bwd,
     (float *dw, float *dv, const float *dbias, const float *w, const float *v, int E, int D),
     dw, dv, dbias, w, v, E, D)

#define LOSS_PIX(OP)                                                                            \
    SHIM(MS_CAT_LOSS, OP,                                                                       \
         (float *loss, const ms_act *pred, const float *tgt, const uint8_t *valid, int B, int C, \
          int P),                                                                               \
         loss, pred, tgt, valid, B, C, P)                                                       \
    SHIM(MS_CAT_LOSS, OP##_bwd,                                                                 \
         (ms_act *dpred, const float *dloss, const ms_act *pred, const float *tgt,              \
          const uint8_t *valid, int B, int C, int P),                                           \
         dpred, dloss, pred, tgt, valid, B, C, P)
LOSS_PIX(loss_l1)
LOSS_PIX(loss_mse)
LOSS_PIX(loss_cosine)
SHIM(MS_CAT_LOSS, loss_ce,
     (float *loss, const ms_act *logits, const int32_t *labels, int ign, int B, int C, int P),
     loss, logits, labels, ign, B, C, P)
SHIM(MS_CAT_LOSS, loss_ce_bwd,
     (ms_act *dl, const float *dloss, const ms_act *logits, const int32_t *labels, int ign, int B,
      int C, int P),
     dl, dloss, logits, labels, ign, B, C, P)
SHIM(MS_CAT_LOSS, loss_bce_balanced,
     (float *loss, const ms_act *logits, const uint8_t *labels, float pw, int B, int P),
     loss, logits, labels, pw, B, P)
SHIM(MS_CAT_LOSS, loss_bce_balanced_bwd,
     (ms_act *dl, const float *dloss, const ms_act *logits, const uint8_t *labels, float pw, int B,
      int P),
     dl, dloss, logits, labels, pw, B, P)
SHIM(MS_CAT_LOSS, uncertainty_weighting,
     (float *total, float *dL, float *ds, const float *L, const float *s, int T), total, dL, ds, L, s, T)
SHIM(MS_CAT_LOSS, loss_weighted_sum, (float *total, const float *L, const float *w, int T),
     total, L, w, T)
SHIM(MS_CAT_NORM_ACT, l2_normalize,
     (ms_act *y, const ms_act *x, int B, int C, int P, float eps), y, x, B, C, P, eps)
SHIM(MS_CAT_NORM_ACT, l2_normalize_bwd,
     (ms_act *dx, const ms_act *dy, const ms_act *x, int B, int C, int P, float eps),
     dx, dy, x, B, C, P, eps)

SHIM(MS_CAT_GEMM, conv2d,
     (ms_act *y, const ms_act *x, const float *w, const float *b, int B, int Ci, int H, int W,
      int Co, int k, ms_act *col),
     y, x, w, b, B, Ci, H, W, Co, k, col)
SHIM(MS_CAT_GEMM, conv2d_bwd,
     (ms_act *dx, float *dw, float *db, const ms_act *dy, const ms_act *x, const float *w, int B,
      int Ci, int H, int W, int Co, int k, ms_act *col),
     dx, dw, db, dy, x, w, B, Ci, H, W, Co, k, col)
SHIM(MS_CAT_NORM_ACT, batchnorm_train,
     (ms_act *y, float *mean, float *rstd, float *rm, float *rv, const ms_act *x, const float *g,
      const float *b, int B, int C, int P, float eps, float mom),
     y, mean, rstd, rm, rv, x, g, b, B, C, P, eps, mom)
SHIM(MS_CAT_NORM_ACT, batchnorm_eval,
     (ms_act *y, const ms_act *x, const float *rm, const float *rv, const float *g, const float *b,
      int B, int C, int P, float eps),
     y, x, rm, rv, g, b, B, C, P, eps)
SHIM(MS_CAT_NORM_ACT, batchnorm_bwd,
     (ms_act *dx, float *dg, float *db, const ms_act *dy, const ms_act *x, const float *mean,
      const float *rstd, const float *g, int B, int C, int P),
     dx, dg, db, dy, x, mean, rstd, g, B, C, P)
SHIM(MS_CAT_NORM_ACT, relu, (ms_act *y, const ms_act *x, size_t n), y, x, n)
SHIM(MS_CAT_NORM_ACT, relu_bwd, (ms_act *dx, const ms_act *dy, const ms_act *y, size_t n), dx, dy, y, n)
SHIM(MS_CAT_NORM_ACT, upsample2x, (ms_act *y, const ms_act *x, int BC, int H, int W), y, x, BC, H, W)
SHIM(MS_CAT_NORM_ACT, upsample2x_bwd, (ms_act *dx, const ms_act *dy, int BC, int H, int W),
     dx, dy, BC, H, W)

SHIM(MS_CAT_OPTIM, adamw,
     (float *p, const float *g, float *m, float *v, size_t n, float lr, float b1, float b2,
      float eps, float wd, int step),
     p, g, m, v, n, lr, b1, b2, eps, wd, step)
SHIM(MS_CAT_OPTIM, sumsq, (float *out, const float *x, size_t n), out, x, n)

/* Only ops the real backend has are wrapped, so a missing op stays NULL (as the model expects). */
#define WRAP(OP) tb->be.OP = real->OP ? sh_##OP : NULL

void ms_timed_backend_init(ms_timed_backend *tb, ms_backend *real) {
    tb->be = *real;
    tb->real = real;
    ms_timed_backend_reset(tb);
    WRAP(alloc); WRAP(free); WRAP(synchronize);
    WRAP(upload); WRAP(download); WRAP(zero); WRAP(copy); WRAP(upload_act); WRAP(download_act);
    WRAP(add); WRAP(add_row); WRAP(sum_rows); WRAP(scale_f32); WRAP(drop_path);
    WRAP(patchify); WRAP(unpatchify); WRAP(tokens_assemble); WRAP(tokens_assemble_bwd);
    WRAP(tokens_slice); WRAP(tokens_slice_bwd); WRAP(tokens_mean); WRAP(tokens_mean_bwd);
    WRAP(linear); WRAP(linear_bwd); WRAP(layernorm); WRAP(layernorm_bwd); WRAP(gelu);
    WRAP(gelu_bwd); WRAP(softmax); WRAP(softmax_bwd);
    WRAP(attention); WRAP(attention_bwd); WRAP(mq_attention); WRAP(mq_attention_bwd);
    WRAP(route); WRAP(route_bwd); WRAP(dispatch_plan); WRAP(remap_experts); WRAP(gather_rows);
    WRAP(combine); WRAP(combine_bwd); WRAP(expert_gate_bwd); WRAP(expert_linear); WRAP(expert_linear_bwd);
    WRAP(mi_accumulate); WRAP(mi_loss); WRAP(noisy_logits); WRAP(noisy_logits_bwd); WRAP(balance_loss);
    WRAP(balance_loss_bwd); WRAP(router_task_bias); WRAP(router_task_bias_bwd);
    WRAP(loss_l1); WRAP(loss_l1_bwd); WRAP(loss_mse); WRAP(loss_mse_bwd); WRAP(loss_cosine);
    WRAP(loss_cosine_bwd); WRAP(loss_ce); WRAP(loss_ce_bwd); WRAP(loss_bce_balanced);
    WRAP(loss_bce_balanced_bwd); WRAP(uncertainty_weighting); WRAP(loss_weighted_sum);
    WRAP(l2_normalize); WRAP(l2_normalize_bwd);
    WRAP(conv2d); WRAP(conv2d_bwd); WRAP(batchnorm_train); WRAP(batchnorm_eval);
    WRAP(batchnorm_bwd); WRAP(relu); WRAP(relu_bwd); WRAP(upsample2x); WRAP(upsample2x_bwd);
    WRAP(adamw); WRAP(sumsq);
}

void ms_timed_backend_reset(ms_timed_backend *tb) {
    for (int c = 0; c < MS_CAT_N; c++) tb->sec[c] = 0;
    tb->allocs = tb->frees = 0;
}
