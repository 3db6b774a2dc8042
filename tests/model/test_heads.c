/* Task heads, losses and task weighting (model/heads.c and friends) on the CPU backend:
 * parameter names, shapes, decay flags and initialisation; every head's prediction against a
 * naive double-precision reference (plus one dense pixel worked out by hand); every task loss
 * and both weightings against references; the gradient of the weighted total w.r.t. each task's
 * input tokens, every head tensor and the uncertainty parameters against central finite
 * differences of the double reference; BatchNorm running statistics; FLOPs.
 *
 * Tolerances: the heads run in fp32 and the references in double. Forward values agree to
 * ~1e-6 relative (FWD_TOL 1e-5). The finite differences are central differences of the double
 * reference. The losses are piecewise smooth (L1 over hundreds of pixels, ReLU), so the step
 * must be small enough that a perturbation rarely carries a pixel across a kink: at h = 1e-4
 * the differences are off by ~1% systematically, at 1e-5 some entries still by a few %, at
 * 1e-6 they agree with the analytic gradient to ~1e-6 while double rounding costs ~1e-8 (FD_H).
 * The comparison then measures the fp32 rounding of the backward (~1e-6) plus rare kinks;
 * GRAD_TOL 1e-3 (relative error of the sampled vector, per tensor) leaves room for those. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../model/arena.h"
#include "../../model/heads.h"
#include "../../model/tasks.h"
#include "../testutil.h"

#define FWD_TOL 1e-5
#define GRAD_TOL 1e-3
#define FD_H 1e-6
#define PER_TENSOR 6 /* sampled entries per head tensor */
#define PER_X 24     /* sampled entries of each task's input tokens */

/* ---- a test rig: config, heads, arena, parameters, inputs, targets --------------------------- */

typedef struct {
    ms_dataset dataset;
    const char *tasks[MS_MAX_TASKS];
    int T;
    ms_head_kind head;
    ms_weighting weighting;
    int B, img, patch, D, hc;
} rig_spec;

typedef struct {
    ms_config cfg;
    ms_param_table pt;
    ms_heads *h;
    ms_backend *be;
    int B, H, W, N, D, T, p;
    float *params, *grads; /* [pt.total] (CPU backend: device memory is host memory) */
    float *x;              /* [T, B, N, D] the tokens of each task's pass */
    float *total;          /* [1] */
    ms_batch batch;
} rig;

static size_t bnd(const rig *r) { return (size_t)r->B * r->N * r->D; }

static const ms_task_def *task_def(const rig *r, int t) {
    return ms_task_find(r->cfg.data.dataset, r->cfg.data.tasks.name[t]);
}

/* Random targets of every kind: 25% invalid pixels, 20% ignored labels, 10% ignored binary
 * pixels, soft class vectors. */
static void fill_targets(rig *r, tu_rng *g) {
    size_t P = (size_t)r->H * r->W;
    for (int t = 0; t < r->T; t++) {
        const ms_task_def *d = task_def(r, t);
        ms_target *tg = &r->batch.target[t];
        switch (d->target) {
        case MS_TARGET_DENSE:
            tu_fill_normal(g, tg->dense, (size_t)r->B * d->channels * P, 1.0);
            for (size_t i = 0; i < r->B * P; i++) tg->valid[i] = tu_uniform(g) < 0.75;
            break;
        case MS_TARGET_LABELS:
            for (size_t i = 0; i < r->B * P; i++) {
                int lo = d->ignore_index == 0 ? 1 : 0;
                tg->labels[i] =
                    tu_uniform(g) < 0.2 ? d->ignore_index : tu_randint(g, lo, d->channels - 1);
            }
            break;
        case MS_TARGET_BINARY:
            for (size_t i = 0; i < r->B * P; i++)
                tg->binary[i] = tu_uniform(g) < 0.1 ? 255 : tu_uniform(g) < 0.3;
            break;
        case MS_TARGET_VECTOR:
            for (int b = 0; b < r->B; b++) {
                float *v = tg->vector + (size_t)b * d->channels;
                double z = 0;
                for (int c = 0; c < d->channels; c++) z += v[c] = (float)exp(2 * tu_normal(g));
                for (int c = 0; c < d->channels; c++) v[c] = (float)(v[c] / z);
            }
            break;
        }
    }
}

static void rig_build(rig *r, const rig_spec *s, uint64_t seed) {
    memset(r, 0, sizeof *r);
    ms_config *cfg = &r->cfg;
    ms_config_defaults(cfg);
    cfg->data.dataset = s->dataset;
    cfg->data.tasks.n = s->T;
    cfg->data.image_size = s->img;
    cfg->model.patch = s->patch;
    cfg->model.dim = s->D;
    cfg->model.head = s->head;
    cfg->model.head_channels = s->hc;
    cfg->model.task_weighting = s->weighting;
    cfg->model.edge_pos_weight = 0.95;
    cfg->model.task_weights.n = s->T;
    for (int t = 0; t < s->T; t++) {
        snprintf(cfg->data.tasks.name[t], MS_NAME_MAX, "%s", s->tasks[t]);
        snprintf(cfg->model.task_weights.name[t], MS_NAME_MAX, "%s", s->tasks[t]);
        const ms_task_def *d = ms_task_find(s->dataset, s->tasks[t]);
        cr_assert_not_null(d, "unknown task %s", s->tasks[t]);
        cfg->model.task_weights.value[t] = d->fixed_weight + 0.5 * t; /* distinct weights */
    }
    r->be = tu_cpu();
    r->B = s->B, r->H = r->W = s->img, r->p = s->patch, r->D = s->D, r->T = s->T;
    r->N = 1 + (s->img / s->patch) * (s->img / s->patch);
    ms_head_shape shape = {cfg, r->be, r->B, r->H, r->W, r->N, r->D, r->T};
    r->h = ms_heads_create(&shape, &r->pt);

    ms_arena a;
    ms_arena_measure(&a);
    ms_heads_alloc(r->h, &a);
    size_t bytes = ms_arena_size(&a);
    void *mem = r->be->alloc(r->be, bytes);
    cr_assert_not_null(mem);
    ms_arena_place(&a, mem, bytes);
    ms_heads_alloc(r->h, &a);
    cr_assert_eq(a.used, bytes, "the placing pass took %zu bytes, the measuring pass %zu", a.used,
                 bytes);

    r->params = r->be->alloc(r->be, r->pt.total * sizeof(float));
    r->grads = r->be->alloc(r->be, r->pt.total * sizeof(float));
    r->be->zero(r->be, r->params, r->pt.total * sizeof(float));
    r->be->zero(r->be, r->grads, r->pt.total * sizeof(float));
    ms_heads_init(r->h, r->params, seed);
    ms_heads_bind(r->h, r->params, r->grads);
    r->total = tu_floats(1);

    tu_rng g = tu_seed(seed);
    r->x = tu_floats((size_t)r->T * bnd(r));
    for (size_t i = 0; i < (size_t)r->T * bnd(r); i++) r->x[i] = (float)(tu_normal(&g) + 0.3);
    ms_batch_alloc(&r->batch, cfg, r->B, r->H, r->W);
    fill_targets(r, &g);
    ms_heads_set_targets(r->h, &r->batch);
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Replaces the official init by random values of a useful scale, so that every gradient path
 * (norm gains, biases, BatchNorm statistics) is exercised. */
static void rig_randomize(rig *r, uint64_t seed) {
    tu_rng g = tu_seed(seed);
    for (int i = 0; i < r->pt.n; i++) {
        const ms_tensor_info *ti = &r->pt.t[i];
        float *p = r->params + ti->offset;
        if (ends_with(ti->name, "running_var") || ends_with(ti->name, "awl.params"))
            tu_fill(&g, p, ti->numel, 0.5, 1.5);
        else if (ends_with(ti->name, "running_mean"))
            tu_fill(&g, p, ti->numel, -0.3, 0.3);
        else if (ti->ndim == 1 && ends_with(ti->name, "weight"))
            tu_fill(&g, p, ti->numel, 0.5, 1.5);
        else if (ti->ndim == 1)
            tu_fill(&g, p, ti->numel, -0.2, 0.2);
        else {
            size_t fan_in = ti->numel / (size_t)ti->shape[0];
            tu_fill_normal(&g, p, ti->numel, 1.0 / sqrt((double)fan_in));
        }
    }
}

static const float *param(const rig *r, const char *fmt, ...) {
    char name[MS_TENSOR_NAME_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    int i = ms_params_find(&r->pt, name);
    cr_assert(i >= 0, "no tensor %s", name);
    return r->params + r->pt.t[i].offset;
}

static void rig_forward(rig *r, int training) {
    for (int t = 0; t < r->T; t++) ms_heads_forward(r->h, t, r->x + t * bnd(r), training);
    ms_heads_weigh(r->h, r->total);
}

/* dx[T, B, N, D]: every task's input gradient. */
static void rig_backward(rig *r, float *dx) {
    for (int t = 0; t < r->T; t++)
        ms_heads_backward(r->h, t, r->x + t * bnd(r), dx + t * bnd(r));
}

/* ---- double references ------------------------------------------------------------------- */

static const double *dparam(const rig *r, const double *prm, const char *fmt, ...) {
    char name[MS_TENSOR_NAME_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    int i = ms_params_find(&r->pt, name);
    cr_assert(i >= 0, "no tensor %s", name);
    return prm + r->pt.t[i].offset;
}

static void ref_layernorm(double *y, const double *x, const double *g, const double *b, int M,
                          int D, double eps) {
    for (int m = 0; m < M; m++) {
        const double *xr = x + (size_t)m * D;
        double mu = 0, var = 0;
        for (int d = 0; d < D; d++) mu += xr[d];
        mu /= D;
        for (int d = 0; d < D; d++) var += (xr[d] - mu) * (xr[d] - mu);
        var /= D;
        for (int d = 0; d < D; d++) y[(size_t)m * D + d] = (xr[d] - mu) / sqrt(var + eps) * g[d] + b[d];
    }
}

/* y[M, O] = x[M, I] w^T + b with w[O, I] (nn.Linear). */
static void ref_linear(double *y, const double *x, const double *w, const double *b, int M, int I,
                       int O) {
    for (int m = 0; m < M; m++)
        for (int o = 0; o < O; o++) {
            double s = b[o];
            for (int i = 0; i < I; i++) s += x[(size_t)m * I + i] * w[(size_t)o * I + i];
            y[(size_t)m * O + o] = s;
        }
}

/* Stride 1, zero padding k/2: y[B, Co, H, W] from x[B, Ci, H, W], w[Co, Ci, k, k]. */
static void ref_conv(double *y, const double *x, const double *w, const double *b, int B, int Ci,
                     int H, int W, int Co, int k) {
    int pad = k / 2;
    for (int n = 0; n < B; n++)
        for (int co = 0; co < Co; co++)
            for (int oy = 0; oy < H; oy++)
                for (int ox = 0; ox < W; ox++) {
                    double s = b[co];
                    for (int ci = 0; ci < Ci; ci++)
                        for (int ky = 0; ky < k; ky++)
                            for (int kx = 0; kx < k; kx++) {
                                int iy = oy + ky - pad, ix = ox + kx - pad;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                s += w[((size_t)(co * Ci + ci) * k + ky) * k + kx] *
                                     x[(((size_t)n * Ci + ci) * H + iy) * W + ix];
                            }
                    y[(((size_t)n * Co + co) * H + oy) * W + ox] = s;
                }
}

/* In place on x[B, C, P]: batch statistics (biased variance; written to mean/var when not NULL)
 * in training, running statistics otherwise; then ReLU. */
static void ref_bn_relu(double *x, const double *g, const double *bt, const double *rm,
                        const double *rv, int B, int C, int P, int training, double *mean,
                        double *var) {
    for (int c = 0; c < C; c++) {
        double mu = rm[c], v = rv[c];
        if (training) {
            double s = 0, ss = 0;
            for (int b = 0; b < B; b++)
                for (int p = 0; p < P; p++) s += x[((size_t)b * C + c) * P + p];
            mu = s / ((double)B * P);
            for (int b = 0; b < B; b++)
                for (int p = 0; p < P; p++) {
                    double d = x[((size_t)b * C + c) * P + p] - mu;
                    ss += d * d;
                }
            v = ss / ((double)B * P);
            if (mean) mean[c] = mu, var[c] = v;
        }
        for (int b = 0; b < B; b++)
            for (int p = 0; p < P; p++) {
                double *e = &x[((size_t)b * C + c) * P + p];
                double y = (*e - mu) / sqrt(v + 1e-5) * g[c] + bt[c];
                *e = y > 0 ? y : 0;
            }
    }
}

/* PyTorch bilinear, scale 2, align_corners=False: source (o + 0.5) / 2 - 0.5 clamped at 0. */
static void up_tap(int o, int n, int *i0, int *i1, double *l1) {
    double src = (o + 0.5) / 2.0 - 0.5;
    if (src < 0) src = 0;
    *i0 = (int)floor(src);
    *i1 = *i0 + 1 < n ? *i0 + 1 : n - 1;
    *l1 = src - *i0;
}

static void ref_up2(double *y, const double *x, int BC, int H, int W) {
    for (int pl = 0; pl < BC; pl++)
        for (int oy = 0; oy < 2 * H; oy++)
            for (int ox = 0; ox < 2 * W; ox++) {
                int y0, y1, x0, x1;
                double ly, lx;
                up_tap(oy, H, &y0, &y1, &ly);
                up_tap(ox, W, &x0, &x1, &lx);
                const double *s = x + (size_t)pl * H * W;
                y[((size_t)pl * 2 * H + oy) * 2 * W + ox] =
                    (1 - ly) * ((1 - lx) * s[y0 * W + x0] + lx * s[y0 * W + x1]) +
                    ly * ((1 - lx) * s[y1 * W + x0] + lx * s[y1 * W + x1]);
            }
}

/* Taskonomy dense head: pred[B, C, H, W]. */
static void ref_dense(const rig *r, int t, const double *prm, const double *x, double *pred) {
    int B = r->B, N = r->N, D = r->D, p = r->p, C = task_def(r, t)->channels, gw = r->W / p;
    double *xn = malloc(bnd(r) * sizeof *xn);
    ref_layernorm(xn, x, dparam(r, prm, "norm.weight"), dparam(r, prm, "norm.bias"), B * N, D,
                  1e-6);
    const double *w = dparam(r, prm, "task_heads.%d.1.weight", t);
    const double *bias = dparam(r, prm, "task_heads.%d.1.bias", t);
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++)
            for (int Y = 0; Y < r->H; Y++)
                for (int X = 0; X < r->W; X++) {
                    int n = 1 + (Y / p) * gw + X / p, o = ((Y % p) * p + X % p) * C + c;
                    double s = bias[o];
                    for (int d = 0; d < D; d++)
                        s += w[(size_t)o * D + d] * xn[((size_t)b * N + n) * D + d];
                    pred[(((size_t)b * C + c) * r->H + Y) * r->W + X] = s;
                }
    free(xn);
}

/* Classification head: logits[B, C]. */
static void ref_class(const rig *r, int t, const double *prm, const double *x, double *pred) {
    int B = r->B, N = r->N, D = r->D, C = task_def(r, t)->channels;
    double *m = calloc((size_t)B * D, sizeof *m), *f = malloc((size_t)B * D * sizeof *f);
    for (int b = 0; b < B; b++)
        for (int n = 1; n < N; n++)
            for (int d = 0; d < D; d++) m[b * D + d] += x[((size_t)b * N + n) * D + d] / (N - 1);
    ref_layernorm(f, m, dparam(r, prm, "fc_norm.weight"), dparam(r, prm, "fc_norm.bias"), B, D,
                  1e-6);
    ref_layernorm(m, f, dparam(r, prm, "task_heads.%d.0.weight", t),
                  dparam(r, prm, "task_heads.%d.0.bias", t), B, D, 1e-5);
    ref_linear(pred, m, dparam(r, prm, "task_heads.%d.1.weight", t),
               dparam(r, prm, "task_heads.%d.1.bias", t), B, D, C);
    free(m), free(f);
}

/* M3ViT conv head: pred[B, C, H, W]; bn_mean / bn_var [4, hc] receive the batch statistics of a
 * training forward when not NULL. */
static void ref_conv_head(const rig *r, int t, const double *prm, const double *x, int training,
                          double *pred, double *bn_mean, double *bn_var) {
    int B = r->B, N = r->N, D = r->D, C = task_def(r, t)->channels;
    int hc = r->cfg.model.head_channels, u = 0;
    while ((1 << u) < r->p) u++;
    int hh = r->H / r->p, ww = r->W / r->p;
    double *xn = malloc(bnd(r) * sizeof *xn), *cur = malloc((size_t)B * D * hh * ww * sizeof *cur);
    ref_layernorm(xn, x, dparam(r, prm, "task_heads.%d.norm.weight", t),
                  dparam(r, prm, "task_heads.%d.norm.bias", t), B * N, D, 1e-6);
    for (int b = 0; b < B; b++)
        for (int d = 0; d < D; d++)
            for (int i = 0; i < hh * ww; i++)
                cur[((size_t)b * D + d) * hh * ww + i] = xn[((size_t)b * N + 1 + i) * D + d];
    int ci = D;
    for (int i = 0; i < 5; i++) {
        int cls = i == 4, co = cls ? C : hc, k = cls ? 1 : 3;
        double *z = malloc((size_t)B * co * hh * ww * sizeof *z);
        ref_conv(z, cur, dparam(r, prm, "task_heads.%d.conv_%d.weight", t, i),
                 dparam(r, prm, "task_heads.%d.conv_%d.bias", t, i), B, ci, hh, ww, co, k);
        if (!cls)
            ref_bn_relu(z, dparam(r, prm, "task_heads.%d.bn_%d.weight", t, i),
                        dparam(r, prm, "task_heads.%d.bn_%d.bias", t, i),
                        dparam(r, prm, "task_heads.%d.bn_%d.running_mean", t, i),
                        dparam(r, prm, "task_heads.%d.bn_%d.running_var", t, i), B, co, hh * ww,
                        training, bn_mean ? bn_mean + i * hc : NULL,
                        bn_var ? bn_var + i * hc : NULL);
        /* M3ViT: x2 after the first u-1 conv layers and after the classifier. */
        if (cls ? u >= 1 : i < u - 1) {
            double *y = malloc((size_t)B * co * 4 * hh * ww * sizeof *y);
            ref_up2(y, z, B * co, hh, ww);
            free(z);
            z = y, hh *= 2, ww *= 2;
        }
        free(cur);
        cur = z, ci = co;
    }
    cr_assert(hh == r->H && ww == r->W);
    memcpy(pred, cur, (size_t)B * C * hh * ww * sizeof *pred);
    free(cur), free(xn);
}

static int task_uses_valid(const ms_task_def *d) {
    return d->target == MS_TARGET_DENSE && (d->depth_masked || d->loss == MS_LOSS_NORMALS_L1);
}

/* The loss of task t from its prediction (layout [B, C, P]). */
static double ref_loss(const rig *r, int t, const double *pred) {
    const ms_task_def *d = task_def(r, t);
    const ms_target *tg = &r->batch.target[t];
    int B = r->B, C = d->channels, P = d->classification ? 1 : r->H * r->W;
    const float *target = d->classification ? tg->vector : tg->dense;
    const uint8_t *valid = task_uses_valid(d) ? tg->valid : NULL;
    double sum = 0;
    long n = 0;
    if (d->loss == MS_LOSS_BCE_BALANCED) {
        double sp = 0, sn = 0;
        long np = 0, nn = 0;
        for (int i = 0; i < B * P; i++) {
            if (tg->binary[i] == 255) continue;
            double z = pred[i];
            if (tg->binary[i]) sp += log1p(exp(-z)), np++;
            else sn += log1p(exp(z)), nn++;
        }
        double w = !strcmp(d->name, "edge") ? (double)(float)0.95 : (double)nn / (np + nn);
        return (w * sp + (1 - w) * sn) / (np + nn);
    }
    for (int b = 0; b < B; b++)
        for (int p = 0; p < P; p++) {
            if (valid && !valid[b * P + p]) continue;
            double v[4], tt[4], vv = 0, t2 = 0, dot = 0; /* cosine and normals: C <= 3 */
            if (d->loss == MS_LOSS_CE) {
                int lab = tg->labels[b * P + p];
                if (lab == d->ignore_index) continue;
                double mx = -INFINITY, z = 0;
                for (int c = 0; c < C; c++) mx = fmax(mx, pred[((size_t)b * C + c) * P + p]);
                for (int c = 0; c < C; c++) z += exp(pred[((size_t)b * C + c) * P + p] - mx);
                sum += mx + log(z) - pred[((size_t)b * C + lab) * P + p];
                n++;
                continue;
            }
            if (d->loss == MS_LOSS_MSE || d->loss == MS_LOSS_L1) {
                for (int c = 0; c < C; c++) {
                    double e = pred[((size_t)b * C + c) * P + p] - target[((size_t)b * C + c) * P + p];
                    sum += d->loss == MS_LOSS_MSE ? e * e : fabs(e);
                }
                n += C;
                continue;
            }
            cr_assert(C <= 4, "%s: %d channels", d->name, C);
            for (int c = 0; c < C; c++) {
                v[c] = pred[((size_t)b * C + c) * P + p];
                tt[c] = target[((size_t)b * C + c) * P + p];
                vv += v[c] * v[c], t2 += tt[c] * tt[c], dot += v[c] * tt[c];
            }
            if (d->loss == MS_LOSS_COSINE) {
                sum += 1 - dot / (sqrt(vv) * sqrt(t2));
                n++;
            } else { /* MS_LOSS_NORMALS_L1 */
                for (int c = 0; c < C; c++) sum += fabs(v[c] / (sqrt(vv) + 1e-12) - tt[c]);
                n += C;
            }
        }
    return n ? sum / n : 0.0;
}

static size_t pred_numel(const rig *r, int t) {
    const ms_task_def *d = task_def(r, t);
    return (size_t)r->B * d->channels * (d->classification ? 1 : (size_t)r->H * r->W);
}

/* Prediction (pred, when not NULL) and loss of task t. */
static double ref_task(const rig *r, int t, const double *prm, const double *x, int training,
                       double *pred_out) {
    const ms_task_def *d = task_def(r, t);
    double *pred = malloc(pred_numel(r, t) * sizeof *pred);
    if (d->classification) ref_class(r, t, prm, x, pred);
    else if (r->cfg.model.head == MS_HEAD_CONV) ref_conv_head(r, t, prm, x, training, pred, NULL, NULL);
    else ref_dense(r, t, prm, x, pred);
    double L = ref_loss(r, t, pred);
    if (pred_out) memcpy(pred_out, pred, pred_numel(r, t) * sizeof *pred);
    free(pred);
    return L;
}

static double ref_weigh(const rig *r, const double *prm, const double *L) {
    double total = 0;
    if (r->cfg.model.task_weighting == MS_WEIGHTING_FIXED) {
        for (int t = 0; t < r->T; t++) total += r->cfg.model.task_weights.value[t] * L[t];
        return total;
    }
    const double *s = dparam(r, prm, "awl.params");
    for (int t = 0; t < r->T; t++) total += 0.5 / (s[t] * s[t]) * L[t] + log(1 + s[t] * s[t]);
    return total;
}

static double *to_doubles(const float *x, size_t n) {
    double *d = tu_doubles(n);
    tu_to_double(d, x, n);
    return d;
}

/* ---- gradient check ---------------------------------------------------------------------- */

typedef struct {
    const rig *r;
    double *prm, *x;          /* double copies of the parameters and of x[T, B, N, D] */
    double L[MS_MAX_TASKS];   /* reference losses at the unperturbed point */
    unsigned redo;            /* tasks whose loss depends on the perturbed values */
} fd_ctx;

/* The reference total; only the tasks in c->redo are recomputed (a task's loss depends on
 * its own head, its own tokens and the shared norms only). */
static double fd_total(void *ctx, const double *unused) {
    (void)unused; /* the perturbed array is c->prm or c->x itself */
    fd_ctx *c = ctx;
    double L[MS_MAX_TASKS];
    for (int t = 0; t < c->r->T; t++)
        L[t] = c->redo >> t & 1 ? ref_task(c->r, t, c->prm, c->x + t * bnd(c->r), 1, NULL) : c->L[t];
    return ref_weigh(c->r, c->prm, L);
}

/* The task whose head owns tensor `name` (task_heads.{t}.*), or -1 for a shared tensor. */
static int owner_task(const char *name) {
    int t;
    return sscanf(name, "task_heads.%d.", &t) == 1 ? t : -1;
}

/* A gradient that is identically zero (the bias of a convolution followed by training-mode
 * BatchNorm, which removes any per-channel shift) has no relative error to speak of: there the
 * fp32 backward must give rounding noise only. */
static void expect_grad_or_zero(const char *what, const float *analytic, const double *fd,
                                const size_t *idx, size_t k) {
    double fd_max = 0;
    for (size_t j = 0; j < k; j++) fd_max = fmax(fd_max, fabs(fd[j]));
    if (fd_max > 1e-8) {
        tu_expect_grad(what, analytic, fd, idx, k, GRAD_TOL);
        return;
    }
    for (size_t j = 0; j < k; j++)
        cr_assert(fabs(analytic[idx[j]]) < 1e-6, "%s[%zu]: gradient %g, want 0 (finite "
                  "differences %g)", what, idx[j], (double)analytic[idx[j]], fd[j]);
}

static void check_gradients(rig *r, uint64_t seed) {
    tu_rng g = tu_seed(seed);
    rig_randomize(r, seed + 1);
    r->be->zero(r->be, r->grads, r->pt.total * sizeof(float));
    size_t n = (size_t)r->T * bnd(r);
    float *dx = tu_floats(n);
    tu_fill_nan(dx, n);
    rig_forward(r, 1);
    rig_backward(r, dx);

    fd_ctx c = {r, to_doubles(r->params, r->pt.total), to_doubles(r->x, n), {0}, 0};
    const float *losses = ms_heads_losses(r->h);
    for (int t = 0; t < r->T; t++) {
        c.L[t] = ref_task(r, t, c.prm, c.x + t * bnd(r), 1, NULL);
        char what[96];
        snprintf(what, sizeof what, "loss of task %s", r->cfg.data.tasks.name[t]);
        tu_expect_close(what, &losses[t], &c.L[t], 1, FWD_TOL);
    }
    double want_total = ref_weigh(r, c.prm, c.L);
    tu_expect_close("weighted total", r->total, &want_total, 1, FWD_TOL);

    double fd[PER_X > PER_TENSOR ? PER_X : PER_TENSOR];
    size_t idx[PER_X > PER_TENSOR ? PER_X : PER_TENSOR];
    for (int t = 0; t < r->T; t++) {
        char what[96];
        snprintf(what, sizeof what, "dx of task %s", r->cfg.data.tasks.name[t]);
        size_t k = tu_sample_indices(&g, bnd(r), PER_X, idx);
        c.redo = 1u << t;
        tu_fd_grad(fd_total, &c, c.x + t * bnd(r), bnd(r), idx, k, FD_H, fd);
        tu_expect_grad(what, dx + t * bnd(r), fd, idx, k, GRAD_TOL);
    }
    for (int i = 0; i < r->pt.n; i++) {
        const ms_tensor_info *ti = &r->pt.t[i];
        if (ends_with(ti->name, "running_mean") || ends_with(ti->name, "running_var")) {
            for (size_t j = 0; j < ti->numel; j++)
                cr_assert(r->grads[ti->offset + j] == 0.0f, "%s has a gradient", ti->name);
            continue;
        }
        size_t k = tu_sample_indices(&g, ti->numel, PER_TENSOR, idx);
        for (size_t j = 0; j < k; j++) idx[j] += ti->offset;
        int owner = owner_task(ti->name);
        c.redo = owner >= 0 ? 1u << owner : (1u << r->T) - 1;
        tu_fd_grad(fd_total, &c, c.prm, r->pt.total, idx, k, FD_H, fd);
        expect_grad_or_zero(ti->name, r->grads, fd, idx, k);
    }
}

static const rig_spec TASKONOMY_LINEAR = {
    MS_DATASET_TASKONOMY,
    {"depth_euclidean", "normal", "principal_curvature", "segment_semantic", "edge_texture",
     "class_object", "class_scene"},
    7, MS_HEAD_LINEAR, MS_WEIGHTING_UNCERTAINTY, 2, 16, 4, 8, 4};

static const rig_spec PASCAL_CONV = {
    MS_DATASET_PASCAL_CONTEXT,
    {"semseg", "human_parts", "sal", "normals", "edge"},
    5, MS_HEAD_CONV, MS_WEIGHTING_FIXED, 2, 16, 4, 8, 4};

Test(heads_grad, taskonomy_linear_uncertainty) {
    rig r;
    rig_build(&r, &TASKONOMY_LINEAR, 11);
    check_gradients(&r, 12);
}

Test(heads_grad, pascal_conv_fixed) {
    rig r;
    rig_build(&r, &PASCAL_CONV, 21);
    check_gradients(&r, 22);
}

Test(heads_grad, pascal_linear_uncertainty) {
    rig_spec s = PASCAL_CONV;
    s.head = MS_HEAD_LINEAR, s.weighting = MS_WEIGHTING_UNCERTAINTY;
    rig r;
    rig_build(&r, &s, 31);
    check_gradients(&r, 32);
}

/* The conv head under Taskonomy losses (cosine, MSE, masked L1) next to a classification head,
 * with patch 8 (three upsamplings: after conv_0, conv_1 and the classifier). */
Test(heads_grad, taskonomy_conv_patch8_fixed) {
    rig_spec s = {MS_DATASET_TASKONOMY,
                  {"normal", "principal_curvature", "depth_zbuffer", "class_scene"},
                  4, MS_HEAD_CONV, MS_WEIGHTING_FIXED, 2, 16, 8, 8, 4};
    rig r;
    rig_build(&r, &s, 41);
    check_gradients(&r, 42);
}

Test(heads_grad, deterministic_backward) {
    rig r;
    rig_build(&r, &PASCAL_CONV, 51);
    rig_randomize(&r, 52);
    size_t n = (size_t)r.T * bnd(&r);
    float *dx1 = tu_floats(n), *dx2 = tu_floats(n), *g1 = tu_floats(r.pt.total);
    for (int run = 0; run < 2; run++) {
        r.be->zero(r.be, r.grads, r.pt.total * sizeof(float));
        /* An evaluation forward before the step does not disturb it. */
        if (run) rig_forward(&r, 0);
        rig_forward(&r, 1);
        rig_backward(&r, run ? dx2 : dx1);
        if (!run) memcpy(g1, r.grads, r.pt.total * sizeof(float));
    }
    tu_expect_equal("dx, two runs", dx1, dx2, n);
    tu_expect_equal("parameter gradients, two runs", g1, r.grads, r.pt.total);
}

/* ---- parameter table and initialisation --------------------------------------------------- */

static void expect_tensor(const rig *r, const char *name, int ndim, const int64_t *shape,
                          int decay) {
    int i = ms_params_find(&r->pt, name);
    cr_assert(i >= 0, "tensor %s is not registered", name);
    const ms_tensor_info *t = &r->pt.t[i];
    cr_assert_eq(t->ndim, ndim, "%s has %d dims, want %d", name, t->ndim, ndim);
    for (int k = 0; k < ndim; k++)
        cr_assert_eq(t->shape[k], shape[k], "%s dim %d is %lld, want %lld", name, k,
                     (long long)t->shape[k], (long long)shape[k]);
    cr_assert_eq(t->decay, decay, "%s decay flag %d, want %d", name, t->decay, decay);
}

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})

Test(heads, names_shapes_decay_linear) {
    rig r;
    rig_build(&r, &TASKONOMY_LINEAR, 1);
    expect_tensor(&r, "norm.weight", 1, SHAPE(8), 0);
    expect_tensor(&r, "norm.bias", 1, SHAPE(8), 0);
    expect_tensor(&r, "fc_norm.weight", 1, SHAPE(8), 0);
    expect_tensor(&r, "fc_norm.bias", 1, SHAPE(8), 0);
    expect_tensor(&r, "task_heads.0.1.weight", 2, SHAPE(16, 8), 1);   /* depth: p*p*1 */
    expect_tensor(&r, "task_heads.0.1.bias", 1, SHAPE(16), 0);
    expect_tensor(&r, "task_heads.1.1.weight", 2, SHAPE(48, 8), 1);   /* normal: p*p*3 */
    expect_tensor(&r, "task_heads.2.1.weight", 2, SHAPE(32, 8), 1);   /* curvature: 2 */
    expect_tensor(&r, "task_heads.3.1.weight", 2, SHAPE(288, 8), 1);  /* segment_semantic: 18 */
    expect_tensor(&r, "task_heads.5.0.weight", 1, SHAPE(8), 0);       /* class_object LN */
    expect_tensor(&r, "task_heads.5.0.bias", 1, SHAPE(8), 0);
    expect_tensor(&r, "task_heads.5.1.weight", 2, SHAPE(1000, 8), 1);
    expect_tensor(&r, "task_heads.5.1.bias", 1, SHAPE(1000), 0);
    expect_tensor(&r, "task_heads.6.1.weight", 2, SHAPE(365, 8), 1);
    expect_tensor(&r, "awl.params", 1, SHAPE(7), 1); /* decayed, as the official AWL group */
    /* 2 norms x 2 + 5 dense x 2 + 2 class x 4 + awl */
    cr_assert_eq(r.pt.n, 4 + 10 + 8 + 1, "%d tensors registered", r.pt.n);
    const int *buf;
    cr_assert_eq(ms_heads_buffers(r.h, &buf), 0, "the linear heads have no buffers");
}

Test(heads, names_shapes_buffers_conv) {
    rig r;
    rig_build(&r, &PASCAL_CONV, 2);
    cr_assert_eq(ms_params_find(&r.pt, "norm.weight"), -1, "conv heads own their norms");
    cr_assert_eq(ms_params_find(&r.pt, "fc_norm.weight"), -1);
    cr_assert_eq(ms_params_find(&r.pt, "awl.params"), -1, "fixed weights are not parameters");
    int C[5] = {21, 7, 1, 3, 1};
    for (int t = 0; t < 5; t++) {
        char n[96];
        snprintf(n, sizeof n, "task_heads.%d.norm.weight", t);
        expect_tensor(&r, n, 1, SHAPE(8), 0);
        for (int i = 0; i < 4; i++) {
            snprintf(n, sizeof n, "task_heads.%d.conv_%d.weight", t, i);
            expect_tensor(&r, n, 4, SHAPE(4, i ? 4 : 8, 3, 3), 1);
            snprintf(n, sizeof n, "task_heads.%d.conv_%d.bias", t, i);
            expect_tensor(&r, n, 1, SHAPE(4), 0);
            const char *bn[4] = {"weight", "bias", "running_mean", "running_var"};
            for (int k = 0; k < 4; k++) {
                snprintf(n, sizeof n, "task_heads.%d.bn_%d.%s", t, i, bn[k]);
                expect_tensor(&r, n, 1, SHAPE(4), 0);
            }
        }
        snprintf(n, sizeof n, "task_heads.%d.conv_4.weight", t);
        expect_tensor(&r, n, 4, SHAPE(C[t], 4, 1, 1), 1);
    }
    const int *buf;
    int nb = ms_heads_buffers(r.h, &buf);
    cr_assert_eq(nb, 5 * 4 * 2, "%d buffers, want 40 running statistics", nb);
    for (int i = 0; i < nb; i++)
        cr_assert(ends_with(r.pt.t[buf[i]].name, "running_mean") ||
                      ends_with(r.pt.t[buf[i]].name, "running_var"),
                  "buffer %s", r.pt.t[buf[i]].name);
}

Test(heads, init_is_official) {
    rig_spec s = PASCAL_CONV;
    s.D = 64, s.hc = 16;
    rig r, r2;
    rig_build(&r, &s, 3);
    rig_build(&r2, &TASKONOMY_LINEAR, 3);
    for (int i = 0; i < r.pt.n; i++) {
        const ms_tensor_info *t = &r.pt.t[i];
        const float *p = r.params + t->offset;
        int conv = strstr(t->name, ".conv_") != NULL;
        double want = ends_with(t->name, "running_var") || (!conv && ends_with(t->name, "weight"))
                          ? 1.0 : 0.0;
        if (conv) {
            /* U(+-1/sqrt(fan_in)) for weight and bias */
            int fan_in = (int)(t->numel / (size_t)t->shape[0]);
            if (t->ndim == 1) fan_in = (int)(r.pt.t[i - 1].numel / (size_t)r.pt.t[i - 1].shape[0]);
            double bound = 1 / sqrt(fan_in), ss = 0;
            for (size_t j = 0; j < t->numel; j++) {
                cr_assert(fabs(p[j]) <= bound, "%s[%zu] = %g beyond 1/sqrt(%d)", t->name, j,
                          (double)p[j], fan_in);
                ss += (double)p[j] * p[j];
            }
            if (t->numel >= 1000) {
                double sd = sqrt(ss / t->numel), want_sd = bound / sqrt(3.0);
                cr_assert(fabs(sd - want_sd) < 0.1 * want_sd, "%s std %g, want %g", t->name, sd,
                          want_sd);
            }
            continue;
        }
        for (size_t j = 0; j < t->numel; j++)
            cr_assert(p[j] == (float)want, "%s[%zu] = %g, want %g", t->name, j, (double)p[j], want);
    }
    /* Linear weights: trunc_normal(std 0.02); biases 0; LayerNorms 1 / 0; awl.params 1. */
    for (int i = 0; i < r2.pt.n; i++) {
        const ms_tensor_info *t = &r2.pt.t[i];
        const float *p = r2.params + t->offset;
        if (t->ndim == 2) {
            double s1 = 0, s2 = 0;
            for (size_t j = 0; j < t->numel; j++) s1 += p[j], s2 += (double)p[j] * p[j];
            double mean = s1 / t->numel, sd = sqrt(s2 / t->numel - mean * mean);
            double tol = 4 * 0.02 / sqrt((double)t->numel);
            cr_assert(fabs(mean) < tol, "%s mean %g", t->name, mean);
            cr_assert(fabs(sd - 0.02) < 0.02 * (4 / sqrt(t->numel / 2.0)), "%s std %g, want 0.02",
                      t->name, sd);
        } else {
            double want = ends_with(t->name, "bias") ? 0.0 : 1.0;
            for (size_t j = 0; j < t->numel; j++)
                cr_assert(p[j] == (float)want, "%s[%zu] = %g, want %g", t->name, j, (double)p[j],
                          want);
        }
    }
    /* The draws depend on the seed and on the tensor's name only. */
    rig r3;
    rig_build(&r3, &TASKONOMY_LINEAR, 3);
    tu_expect_equal("init with the same seed", r2.params, r3.params, r2.pt.total);
    ms_heads_init(r3.h, r3.params, 4);
    const float *a = param(&r2, "task_heads.5.1.weight"), *b = param(&r3, "task_heads.5.1.weight");
    cr_assert(memcmp(a, b, 8000 * sizeof(float)) != 0, "another seed gives other weights");
    cr_assert(memcmp(param(&r2, "task_heads.5.1.weight"), param(&r2, "task_heads.6.1.weight"),
                     365 * 8 * sizeof(float)) != 0,
              "tensors draw from their own streams");
}

/* ---- forward values ----------------------------------------------------------------------- */

static void expect_predictions(rig *r, int training, const char *mode) {
    double *prm = to_doubles(r->params, r->pt.total);
    double *x = to_doubles(r->x, (size_t)r->T * bnd(r));
    for (int t = 0; t < r->T; t++) {
        size_t n = pred_numel(r, t);
        double *want = tu_doubles(n);
        double L = ref_task(r, t, prm, x + t * bnd(r), training, want);
        char what[128];
        snprintf(what, sizeof what, "%s prediction of %s", mode, r->cfg.data.tasks.name[t]);
        tu_expect_close(what, (const float *)ms_heads_prediction(r->h, t), want, n, FWD_TOL);
        snprintf(what, sizeof what, "%s loss of %s", mode, r->cfg.data.tasks.name[t]);
        tu_expect_close(what, &ms_heads_losses(r->h)[t], &L, 1, FWD_TOL);
    }
}

Test(heads, dense_linear_matches_reference_and_hand_pixel) {
    rig r;
    rig_build(&r, &TASKONOMY_LINEAR, 5);
    rig_randomize(&r, 6);
    rig_forward(&r, 1);
    expect_predictions(&r, 1, "training");
    /* One pixel of `normal` (task 1, C = 3, p = 4, grid 4x4) by hand: image 1, channel 2,
     * row 5, column 14 lies in patch (1, 3) = token 1 + 1*4 + 3 = 8, at (ky, kx) = (1, 2), so
     * the Linear output index is (ky*p + kx)*C + c = (4 + 2)*3 + 2 = 20 (channel fastest). */
    const float *x = r.x + 1 * bnd(&r) + ((size_t)1 * r.N + 8) * r.D;
    const float *g = param(&r, "norm.weight"), *b = param(&r, "norm.bias");
    const float *w = param(&r, "task_heads.1.1.weight") + 20 * r.D;
    double mu = 0, var = 0, want = param(&r, "task_heads.1.1.bias")[20];
    for (int d = 0; d < r.D; d++) mu += x[d] / r.D;
    for (int d = 0; d < r.D; d++) var += (x[d] - mu) * (x[d] - mu) / r.D;
    for (int d = 0; d < r.D; d++) want += w[d] * ((x[d] - mu) / sqrt(var + 1e-6) * g[d] + b[d]);
    const float *pred = ms_heads_prediction(r.h, 1);
    float got = pred[(((size_t)1 * 3 + 2) * 16 + 5) * 16 + 14];
    tu_expect_close("normal[1, 2, 5, 14] by hand", &got, &want, 1, FWD_TOL);
}

Test(heads, class_matches_reference) {
    rig_spec s = {MS_DATASET_TASKONOMY, {"class_scene", "class_object"}, 2, MS_HEAD_LINEAR,
                  MS_WEIGHTING_FIXED, 3, 16, 4, 8, 4};
    rig r;
    rig_build(&r, &s, 7);
    rig_randomize(&r, 8);
    rig_forward(&r, 0);
    expect_predictions(&r, 0, "eval");
    /* The CLS token does not enter the mean: changing it changes nothing. */
    float before = ((const float *)ms_heads_prediction(r.h, 0))[5];
    for (int d = 0; d < r.D; d++) r.x[d] += 3.0f;
    rig_forward(&r, 0);
    cr_assert(((const float *)ms_heads_prediction(r.h, 0))[5] == before,
              "the CLS token changed a class logit");
}

Test(heads, conv_matches_reference_train_and_eval) {
    rig r;
    rig_build(&r, &PASCAL_CONV, 9);
    rig_randomize(&r, 10);
    float *before = tu_floats(r.pt.total);
    memcpy(before, r.params, r.pt.total * sizeof(float));

    /* Evaluation: running statistics normalise and stay untouched. */
    rig_forward(&r, 0);
    expect_predictions(&r, 0, "eval");
    tu_expect_equal("parameters after an eval forward", r.params, before, r.pt.total);

    /* Training: batch statistics normalise; running ones move by momentum 0.1 towards the
     * batch mean and the unbiased batch variance. */
    double *prm = to_doubles(before, r.pt.total);
    rig_forward(&r, 1);
    expect_predictions(&r, 1, "training"); /* (the reference ignores running statistics here) */
    int hc = r.cfg.model.head_channels;
    for (int t = 0; t < r.T; t++) {
        double mean[4 * 4], var[4 * 4];
        double *pred = tu_doubles(pred_numel(&r, t));
        ref_conv_head(&r, t, prm, to_doubles(r.x + t * bnd(&r), bnd(&r)), 1, pred, mean, var);
        int hh = r.H / r.p, P[4] = {hh * hh, 4 * hh * hh, 4 * hh * hh, 4 * hh * hh};
        for (int i = 0; i < 4; i++) {
            double want_m[4], want_v[4];
            const double *rm = dparam(&r, prm, "task_heads.%d.bn_%d.running_mean", t, i);
            const double *rv = dparam(&r, prm, "task_heads.%d.bn_%d.running_var", t, i);
            double n = (double)r.B * P[i];
            for (int c = 0; c < hc; c++) {
                want_m[c] = 0.9 * rm[c] + 0.1 * mean[i * hc + c];
                want_v[c] = 0.9 * rv[c] + 0.1 * var[i * hc + c] * n / (n - 1);
            }
            char what[96];
            snprintf(what, sizeof what, "task %d bn_%d running_mean", t, i);
            tu_expect_close(what, param(&r, "task_heads.%d.bn_%d.running_mean", t, i), want_m, hc,
                            FWD_TOL);
            snprintf(what, sizeof what, "task %d bn_%d running_var", t, i);
            tu_expect_close(what, param(&r, "task_heads.%d.bn_%d.running_var", t, i), want_v, hc,
                            FWD_TOL);
        }
    }
}

/* ---- weighting ---------------------------------------------------------------------------- */

Test(heads, fixed_and_uncertainty_totals) {
    for (int k = 0; k < 2; k++) {
        rig_spec s = PASCAL_CONV;
        s.weighting = k ? MS_WEIGHTING_UNCERTAINTY : MS_WEIGHTING_FIXED;
        rig r;
        rig_build(&r, &s, 60 + k);
        rig_randomize(&r, 70 + k);
        rig_forward(&r, 1);
        const float *L = ms_heads_losses(r.h);
        double want = 0;
        for (int t = 0; t < r.T; t++) {
            cr_assert(L[t] > 0, "loss of task %d is %g", t, (double)L[t]);
            if (!k) {
                want += r.cfg.model.task_weights.value[t] * L[t];
            } else {
                double sv = param(&r, "awl.params")[t];
                want += 0.5 / (sv * sv) * L[t] + log1p(sv * sv);
            }
        }
        tu_expect_close(k ? "uncertainty total" : "fixed total", r.total, &want, 1, FWD_TOL);
        if (!k) {
            /* PASCAL fixed weights of METHOD.md (+0.5 t from the rig): semseg 1, parts 2,
             * sal 5, normals 10, edge 50. */
            double w[5] = {1, 2.5, 6, 11.5, 52};
            for (int t = 0; t < 5; t++)
                cr_assert_float_eq(r.cfg.model.task_weights.value[t], w[t], 1e-12);
        }
    }
}

/* ---- FLOPs and shape errors --------------------------------------------------------------- */

static ms_heads *bare_heads(ms_config *cfg, ms_param_table *pt, ms_dataset ds, const char *task,
                            ms_head_kind head, int img, int patch, int D, int hc) {
    ms_config_defaults(cfg);
    cfg->data.dataset = ds;
    cfg->data.tasks.n = 1;
    snprintf(cfg->data.tasks.name[0], MS_NAME_MAX, "%s", task);
    cfg->model.patch = patch, cfg->model.dim = D, cfg->model.head = head;
    cfg->model.head_channels = hc, cfg->model.task_weighting = MS_WEIGHTING_UNCERTAINTY;
    memset(pt, 0, sizeof *pt);
    int g = img / patch;
    ms_head_shape s = {cfg, tu_cpu(), 8, img, img, 1 + g * g, D, 1};
    return ms_heads_create(&s, pt);
}

Test(heads, flops) {
    ms_config cfg;
    ms_param_table pt;
    /* Taskonomy normal, ViT-B/16 at 224: 196 tokens x Linear(768 -> 16*16*3). */
    ms_heads *h = bare_heads(&cfg, &pt, MS_DATASET_TASKONOMY, "normal", MS_HEAD_LINEAR, 224, 16,
                             768, 256);
    cr_assert_float_eq(ms_heads_flops(h, 0), 2.0 * 196 * 768 * 768, 1);
    ms_heads_destroy(h), ms_params_free(&pt);
    h = bare_heads(&cfg, &pt, MS_DATASET_TASKONOMY, "class_object", MS_HEAD_LINEAR, 224, 16, 768,
                   256);
    cr_assert_float_eq(ms_heads_flops(h, 0), 2.0 * 768 * 1000, 1);
    ms_heads_destroy(h), ms_params_free(&pt);
    /* M3ViT at 512, patch 16, D 384, semseg: conv_0 at 32^2, conv_1 at 64^2, conv_2 at 128^2,
     * conv_3 and the classifier at 256^2 (the last x2 follows the classifier). */
    h = bare_heads(&cfg, &pt, MS_DATASET_PASCAL_CONTEXT, "semseg", MS_HEAD_CONV, 512, 16, 384, 256);
    double want = 2.0 * 256 * 384 * 9 * 32 * 32 + 2.0 * 256 * 256 * 9 * 64 * 64 +
                  2.0 * 256 * 256 * 9 * 128 * 128 + 2.0 * 256 * 256 * 9 * 256 * 256 +
                  2.0 * 21 * 256 * 256 * 256;
    cr_assert_float_eq(ms_heads_flops(h, 0), want, 1);
    ms_heads_destroy(h), ms_params_free(&pt);
    /* Patch 8 at 64: conv_0 at 8^2, conv_1 at 16^2, conv_2, conv_3, classifier at 32^2. */
    h = bare_heads(&cfg, &pt, MS_DATASET_PASCAL_CONTEXT, "sal", MS_HEAD_CONV, 64, 8, 32, 16);
    want = 2.0 * 16 * 32 * 9 * 64 + 2.0 * 16 * 16 * 9 * 256 + 2 * 2.0 * 16 * 16 * 9 * 1024 +
           2.0 * 1 * 16 * 1024;
    cr_assert_float_eq(ms_heads_flops(h, 0), want, 1);
    ms_heads_destroy(h), ms_params_free(&pt);
}

Test(heads, conv_rejects_patch_not_power_of_two, .exit_code = 1) {
    ms_config cfg;
    ms_param_table pt;
    bare_heads(&cfg, &pt, MS_DATASET_PASCAL_CONTEXT, "semseg", MS_HEAD_CONV, 48, 12, 8, 4);
}

Test(heads, rejects_mismatched_batch, .exit_code = 1) {
    rig r;
    rig_build(&r, &PASCAL_CONV, 80);
    ms_batch b;
    ms_batch_alloc(&b, &r.cfg, r.B + 1, r.H, r.W);
    ms_heads_set_targets(r.h, &b);
}
