/* The PASCAL-Context up-sampling head: M3ViT's VisionTransformerUpHead (VITA-Group/M3ViT
 * models/vit_up_head.py, num_conv 4, bilinear, align_corners False), one per dense task.
 *
 *   patch tokens -> head-owned LayerNorm `norm` (eps 1e-6) -> map [B, D, H/p, W/p]
 *   -> 4 x [conv3x3 (model.head_channels) + BatchNorm + ReLU], the first u-1 followed by x2
 *   -> conv1x1 (C) -> x2 (when u >= 1)                          with u = log2(p) upsamplings.
 *
 * M3ViT (p = 16, u = 4) upsamples after conv_0, conv_1, conv_2 and, last, after the classifier
 * conv_4, which therefore runs at half the output resolution. METHOD.md writes the fourth x2
 * before the classifier; we follow M3ViT. Other patch sizes keep the pattern: the first u-1
 * conv layers upsample and the classifier does the last one (p = 8: after conv_0, conv_1 and
 * conv_4); p must be a power of two up to 32.
 *
 * Names: task_heads.{t}.norm.*, task_heads.{t}.conv_{i}.weight (Co, Ci, k, k) / .bias and
 * task_heads.{t}.bn_{i}.weight / .bias / .running_mean / .running_var (M3ViT calls its
 * BatchNorms syncbn_fc_{i}; like them, ours are synchronised across the ranks, see below).
 * PyTorch's num_batches_tracked is not kept: with a fixed momentum nothing reads it.
 * Init: PyTorch defaults (M3ViT's init_weights only touches Linear and LayerNorm): conv weight
 * and bias U(+-1/sqrt(Ci k k)) (kaiming_uniform with a = sqrt 5), BatchNorm 1 / 0 with running
 * mean 0 and variance 1, LayerNorm 1 / 0.
 *
 * SyncBatchNorm (data parallelism, training): every rank holds B of the global batch's B x world
 * images. The forward normalises with the statistics of the global batch, combined from each
 * rank's mean and biased variance (equal counts: mean = mean of the means; variance = mean of
 * (variance + (rank mean - mean)^2), exact, without the cancellation of sums of squares), and
 * updates the running statistics with them. The backward of
 *     y = gamma xhat + beta,  xhat = (x - mean) rstd
 * for a loss whose gradient is averaged over the ranks is, on each rank,
 *     dx = gamma rstd (dy - S1 / M - xhat S2 / M),  S1 = sum dy,  S2 = sum dy xhat
 * with the sums over all ranks and M = B P world; dgamma and dbeta take this rank's sums (the
 * gradient average adds them up). The backend's BatchNorm ops take their statistics from the
 * batch they are given, so the step is assembled from them: batchnorm_train yields this rank's
 * statistics, batchnorm_eval normalises with given ones, batchnorm_bwd with dx omitted yields
 * this rank's S1 and S2 and with dx the backward of the local sums, which differs from the one
 * above by gamma rstd ((s1 / m - S1 / M) + xhat (s2 / m - S2 / M)) per channel (m = B P): an
 * affine function of xhat, added by one more batchnorm_eval. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../kernels/util.h"
#include "heads_internal.h"

/* log2(p), or -1 when p is not a power of two. */
static int log2_exact(int p) {
    int u = 0;
    while ((1 << u) < p) u++;
    return (1 << u) == p ? u : -1;
}

static int add_named(ms_heads *h, ms_param_table *pt, int t, const char *what, int ndim,
                     const int64_t *shape, int decay, head_init init, int fan_in) {
    char name[MS_TENSOR_NAME_MAX];
    snprintf(name, sizeof name, "task_heads.%d.%s", t, what);
    return head_add_tensor(h, pt, name, ndim, shape, decay, init, fan_in);
}

/* BatchNorm tensors of layer i; the running statistics are listed as buffers. */
static void add_batchnorm(ms_heads *h, ms_param_table *pt, int t, int i, conv_layer *L) {
    char what[32];
    int64_t co = L->co;
    snprintf(what, sizeof what, "bn_%d.weight", i);
    L->gamma = add_named(h, pt, t, what, 1, &co, 0, HEAD_INIT_ONE, 0);
    snprintf(what, sizeof what, "bn_%d.bias", i);
    L->beta = add_named(h, pt, t, what, 1, &co, 0, HEAD_INIT_ZERO, 0);
    snprintf(what, sizeof what, "bn_%d.running_mean", i);
    L->rmean = add_named(h, pt, t, what, 1, &co, 0, HEAD_INIT_ZERO, 0);
    snprintf(what, sizeof what, "bn_%d.running_var", i);
    L->rvar = add_named(h, pt, t, what, 1, &co, 0, HEAD_INIT_ONE, 0);
    h->buffers[h->nbuffers++] = h->tensor[L->rmean].index;
    h->buffers[h->nbuffers++] = h->tensor[L->rvar].index;
}

void head_conv_create(ms_heads *h, int t, ms_param_table *pt) {
    task_head *th = &h->task[t];
    int u = log2_exact(h->p), hc = h->cfg->model.head_channels;
    if (u < 0 || u > HEAD_CONV3 + 1)
        ms_fatal("model.head conv: model.patch must be a power of two from 1 to %d (the head "
                 "upsamples x2 log2(patch) times, at most once per conv layer), got %d",
                 1 << (HEAD_CONV3 + 1), h->p);
    int64_t d = h->D;
    th->ln_w = add_named(h, pt, t, "norm.weight", 1, &d, 0, HEAD_INIT_ONE, 0);
    th->ln_b = add_named(h, pt, t, "norm.bias", 1, &d, 0, HEAD_INIT_ZERO, 0);
    size_t B = (size_t)h->B;
    int hh = h->gh, ww = h->gw, ci = h->D;
    for (int i = 0; i < HEAD_CONV_LAYERS; i++) {
        conv_layer *L = &th->conv[i];
        int classifier = i == HEAD_CONV3;
        L->ci = ci, L->co = classifier ? th->C : hc, L->k = classifier ? 1 : 3;
        L->hh = hh, L->ww = ww;
        L->bn = !classifier;
        L->up = classifier ? u >= 1 : i < u - 1;
        L->gamma = L->beta = L->rmean = L->rvar = -1;
        char what[32];
        int fan_in = L->ci * L->k * L->k;
        int64_t wshape[4] = {L->co, L->ci, L->k, L->k}, co = L->co;
        snprintf(what, sizeof what, "conv_%d.weight", i);
        L->w = add_named(h, pt, t, what, 4, wshape, 1, HEAD_INIT_FAN_IN, fan_in);
        snprintf(what, sizeof what, "conv_%d.bias", i);
        L->b = add_named(h, pt, t, what, 1, &co, 0, HEAD_INIT_FAN_IN, fan_in);
        if (L->bn) add_batchnorm(h, pt, t, i, L);

        size_t P = (size_t)hh * ww;
        head_grow(&h->grad_n, B * L->ci * P);       /* dx of the conv */
        head_grow(&h->grad_n, B * L->co * P);       /* dz, d(relu) */
        if (L->up) head_grow(&h->grad_n, B * L->co * 4 * P);
        if (L->bn) head_grow(&h->sync_n, 2 * (size_t)L->co); /* SyncBatchNorm's exchanges */
        if (L->bn) head_grow(&h->tmp_n, B * L->co * P); /* BatchNorm output before the ReLU */
        /* conv2d's im2col scratch: one tile of output rows (kernels/backend.h) */
        if (L->k > 1) head_grow(&h->col_n, (size_t)fan_in * ms_conv_tile_rows(hh, ww) * ww);
        if (L->up) hh *= 2, ww *= 2;
        ci = L->co;
    }
    MS_ASSERT(hh == h->H && ww == h->W);
    size_t BND = B * h->N * h->D;
    head_grow(&h->tmp_n, BND); /* norm(x) over all tokens */
    head_grow(&h->grad_n, BND);
}

void head_conv_alloc(ms_heads *h, int t, ms_arena *a) {
    task_head *th = &h->task[t];
    size_t B = (size_t)h->B;
    th->mean = head_take_f32(a, B * h->N);
    th->rstd = head_take_f32(a, B * h->N);
    th->fmap = head_take_act(h, a, B * h->D * h->gh * h->gw);
    ms_act *in = th->fmap;
    for (int i = 0; i < HEAD_CONV_LAYERS; i++) {
        conv_layer *L = &th->conv[i];
        size_t n = B * L->co * L->hh * L->ww;
        L->in = in;
        L->z = head_take_act(h, a, n);
        L->r = L->bn ? head_take_act(h, a, n) : NULL;
        L->mean = L->bn ? head_take_f32(a, (size_t)L->co) : NULL;
        L->rstd = L->bn ? head_take_f32(a, (size_t)L->co) : NULL;
        L->var = L->bn ? head_take_f32(a, (size_t)L->co) : NULL;
        L->out = L->up ? head_take_act(h, a, 4 * n) : L->bn ? L->r : L->z;
        in = L->out;
    }
    th->pred = in;
}

/* SyncBatchNorm forward of layer L: y[B, co, P] = BatchNorm of L->z with the global batch's
 * statistics, which also go to L->mean / rstd / var and into the running statistics. */
static void sync_bn_forward(ms_heads *h, const conv_layer *L, ms_act *y) {
    ms_backend *be = h->be;
    const int C = L->co, B = h->B, P = L->hh * L->ww;
    const double ranks = h->world, M = (double)B * P * ranks, eps = HEAD_BN_EPS;
    const double mom = HEAD_BN_MOMENTUM;
    const size_t bytes = (size_t)C * sizeof(float);
    /* host [C] each: old running mean and variance, this rank's mean and rstd, the exchange,
     * then the global mean, variance and rstd */
    float *old_rm = h->host_sync, *old_rv = old_rm + C, *mu = old_rv + C, *rs = mu + C;
    float *x = rs + C, *gm = x + C, *gv = gm + C, *grs = gv + C;
    float *rmean = head_param(h, L->rmean), *rvar = head_param(h, L->rvar);
    const float *gamma = head_param(h, L->gamma), *beta = head_param(h, L->beta);
    be->download(be, old_rm, rmean, bytes);
    be->download(be, old_rv, rvar, bytes);
    /* This rank's statistics (its update of the running ones is replaced below). */
    be->batchnorm_train(be, y, L->mean, L->rstd, rmean, rvar, L->z, gamma, beta, B, C, P,
                        HEAD_BN_EPS, HEAD_BN_MOMENTUM);
    be->download(be, mu, L->mean, bytes);
    be->download(be, rs, L->rstd, bytes);
    memcpy(x, mu, bytes);
    head_all_sum(h, x, (size_t)C);
    for (int c = 0; c < C; c++) {
        gm[c] = (float)(x[c] / ranks);
        const double var = 1.0 / ((double)rs[c] * rs[c]) - eps, d = (double)mu[c] - gm[c];
        x[c] = (float)(var + d * d);
    }
    head_all_sum(h, x, (size_t)C);
    for (int c = 0; c < C; c++) {
        const double var = fmax(x[c] / ranks, 0.0); /* biased: what normalises */
        gv[c] = (float)var;
        grs[c] = (float)(1.0 / sqrt((double)gv[c] + eps)); /* as batchnorm_eval derives it */
        /* PyTorch tracks the unbiased variance of the M values (batchnorm_train alike) */
        const double unbiased = M > 1 ? var * M / (M - 1) : var;
        old_rm[c] = (float)((1.0 - mom) * old_rm[c] + mom * gm[c]);
        old_rv[c] = (float)((1.0 - mom) * old_rv[c] + mom * unbiased);
    }
    be->upload(be, L->mean, gm, bytes);
    be->upload(be, L->var, gv, bytes);
    be->upload(be, L->rstd, grs, bytes);
    be->upload(be, rmean, old_rm, bytes);
    be->upload(be, rvar, old_rv, bytes);
    be->batchnorm_eval(be, y, L->z, L->mean, L->var, gamma, beta, B, C, P, HEAD_BN_EPS);
}

/* SyncBatchNorm backward of layer L: dx[B, co, P] written from dy, the gradients of its gamma
 * and beta accumulated with this rank's share. */
static void sync_bn_backward(ms_heads *h, const conv_layer *L, ms_act *dx, const ms_act *dy) {
    ms_backend *be = h->be;
    const int C = L->co, B = h->B, P = L->hh * L->ww;
    const double m = (double)B * P, M = m * h->world;
    const size_t bytes = (size_t)C * sizeof(float);
    /* host: this rank's sums [2, C] (dy, then dy xhat), the global ones [2, C], gamma [C],
     * rstd [C], the correction's scale and shift [2, C] */
    float *loc = h->host_sync, *all = loc + 2 * C, *gamma = all + 2 * C, *rs = gamma + C;
    float *corr = rs + C;
    const float *gamma_dev = head_param(h, L->gamma);
    be->zero(be, h->sync, 2 * bytes);
    be->batchnorm_bwd(be, NULL, h->sync + C, h->sync, dy, L->z, L->mean, L->rstd, gamma_dev, B,
                      C, P);
    be->download(be, loc, h->sync, 2 * bytes);
    memcpy(all, loc, 2 * bytes);
    head_all_sum(h, all, 2 * (size_t)C);
    be->batchnorm_bwd(be, dx, head_grad(h, L->gamma), head_grad(h, L->beta), dy, L->z, L->mean,
                      L->rstd, gamma_dev, B, C, P);
    be->download(be, gamma, gamma_dev, bytes);
    be->download(be, rs, L->rstd, bytes);
    for (int c = 0; c < C; c++) {
        const double k = (double)gamma[c] * rs[c];
        corr[c] = (float)(k * (loc[C + c] / m - all[C + c] / M)); /* times xhat */
        corr[C + c] = (float)(k * (loc[c] / m - all[c] / M));     /* plus */
    }
    be->upload(be, h->sync, corr, 2 * bytes);
    be->batchnorm_eval(be, h->tmp0, L->z, L->mean, L->var, h->sync, h->sync + C, B, C, P,
                       HEAD_BN_EPS);
    be->add(be, dx, dx, h->tmp0, (size_t)B * C * P);
}

void head_conv_forward(ms_heads *h, int t, const ms_act *x, int training) {
    ms_backend *be = h->be;
    task_head *th = &h->task[t];
    int B = h->B;
    be->layernorm(be, h->tmp0, th->mean, th->rstd, x, head_param(h, th->ln_w),
                  head_param(h, th->ln_b), B * h->N, h->D, HEAD_LN_EPS); /* [B, N, D] */
    be->tokens_slice(be, h->tmp1, h->tmp0, B, h->N, h->D, 1, h->N);      /* [B, Np, D] */
    /* A 1x1 "un-patchify" of [B, Np, D] with the channel fastest is the transpose to the
     * feature map [B, D, h, w] (M3ViT's x.transpose(1, 2).reshape). */
    be->unpatchify(be, th->fmap, h->tmp1, B, h->D, h->gh, h->gw, 1, MS_PATCH_HWC);
    for (int i = 0; i < HEAD_CONV_LAYERS; i++) {
        conv_layer *L = &th->conv[i];
        int P = L->hh * L->ww;
        be->conv2d(be, L->z, L->in, head_param(h, L->w), head_param(h, L->b), B, L->ci, L->hh,
                   L->ww, L->co, L->k, h->col);
        if (L->bn) {
            if (training && h->world > 1)
                sync_bn_forward(h, L, h->tmp0);
            else if (training)
                be->batchnorm_train(be, h->tmp0, L->mean, L->rstd, head_param(h, L->rmean),
                                    head_param(h, L->rvar), L->z, head_param(h, L->gamma),
                                    head_param(h, L->beta), B, L->co, P, HEAD_BN_EPS,
                                    HEAD_BN_MOMENTUM);
            else
                be->batchnorm_eval(be, h->tmp0, L->z, head_param(h, L->rmean),
                                   head_param(h, L->rvar), head_param(h, L->gamma),
                                   head_param(h, L->beta), B, L->co, P, HEAD_BN_EPS);
            be->relu(be, L->r, h->tmp0, (size_t)B * L->co * P);
        }
        if (L->up) be->upsample2x(be, L->out, L->bn ? L->r : L->z, B * L->co, L->hh, L->ww);
    }
}

/* The other buffer of the backward ping-pong. */
static ms_act *other(const ms_heads *h, const ms_act *cur) { return cur == h->g0 ? h->g1 : h->g0; }

void head_conv_backward(ms_heads *h, int t, const ms_act *x, ms_act *dx) {
    ms_backend *be = h->be;
    task_head *th = &h->task[t];
    int B = h->B;
    ms_act *cur = h->g0, *next; /* h->g0 holds dpred[B, C, H, W] */
    for (int i = HEAD_CONV_LAYERS - 1; i >= 0; i--) {
        conv_layer *L = &th->conv[i];
        int P = L->hh * L->ww;
        if (L->up) {
            next = other(h, cur);
            be->upsample2x_bwd(be, next, cur, B * L->co, L->hh, L->ww);
            cur = next;
        }
        if (L->bn) {
            next = other(h, cur);
            be->relu_bwd(be, next, cur, L->r, (size_t)B * L->co * P);
            cur = next, next = other(h, cur);
            if (h->world > 1)
                sync_bn_backward(h, L, next, cur);
            else
                be->batchnorm_bwd(be, next, head_grad(h, L->gamma), head_grad(h, L->beta), cur,
                                  L->z, L->mean, L->rstd, head_param(h, L->gamma), B, L->co, P);
            cur = next;
        }
        next = other(h, cur);
        be->conv2d_bwd(be, next, head_grad(h, L->w), head_grad(h, L->b), cur, L->in,
                       head_param(h, L->w), B, L->ci, L->hh, L->ww, L->co, L->k, h->col);
        cur = next;
    }
    next = other(h, cur); /* [B, D, h, w] -> [B, Np, D] -> [B, N, D] */
    be->patchify(be, next, cur, B, h->D, h->gh, h->gw, 1, MS_PATCH_HWC);
    cur = next, next = other(h, cur);
    be->tokens_slice_bwd(be, next, cur, B, h->N, h->D, 1, h->N);
    be->layernorm_bwd(be, dx, head_grad(h, th->ln_w), head_grad(h, th->ln_b), next, x, th->mean,
                      th->rstd, head_param(h, th->ln_w), B * h->N, h->D, 0);
}

double head_conv_flops(const ms_heads *h, int t) {
    double f = 0;
    for (int i = 0; i < HEAD_CONV_LAYERS; i++) {
        const conv_layer *L = &h->task[t].conv[i];
        f += 2.0 * L->co * L->ci * L->k * L->k * (double)L->hh * L->ww;
    }
    return f;
}
