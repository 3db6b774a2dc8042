/* Task losses, learned uncertainty and fixed task weighting, and the channel L2 normalisation
 * of the PASCAL normals loss (METHOD.md section 4) on the CPU.
 *
 * Every loss is a mean over its valid elements; with none valid the loss and the gradient are
 * exactly 0. Per-element math and all sums are in double, except the exponentials of the
 * cross-entropy (float, vectorised: see ce_lse); its sums over pixels are in double too.
 *
 * Determinism: a reduction splits its work units into NCHUNK chunks whose bounds depend on the
 * shape only, never on the thread count. One thread sums a chunk in order, and the chunk
 * partials are added in chunk order, so a loss is bit-identical for ANY thread count (not just a
 * fixed one). Backward passes write each output element from exactly one thread.
 */
#include "cpu.h"
#include "fast_math.h"

#include <math.h>
#include <stdint.h>

#define NCHUNK 64      /* chunks of a reduction; their partials live on the stack */
#define SEG 4096       /* pixels per work unit of L1 and MSE */
#define PIX_BLOCK 64   /* pixels per work unit of the losses over channels (cosine, CE) */
#define BCE_IGNORE 255 /* label of an ignored pixel in loss_bce_balanced */

/* The cosine loss divides by |pred| and |target|; a zero vector (a dead prediction, a blank
 * label) would give 0/0 (the official Mod-Squad loss has no epsilon and returns NaN there).
 * Norms are taken as sqrt(|v|^2 + COS_EPS^2): smooth, never zero, and for unit-scale normals a
 * relative change of ~1e-16, far below fp32 resolution. At an exactly zero prediction the loss
 * is 1 and the gradient -t / (COS_EPS |t|) per unit of dloss / n: large but finite, the same
 * size as with PyTorch's cosine_similarity (which clamps each norm at 1e-8). A zero target
 * gives loss 1 and gradient 0. */
#define COS_EPS 1e-8

/* First unit of chunk k when n units are cut into NCHUNK chunks. */
static inline int64_t chunk_lo(int64_t n, int k) { return n * k / NCHUNK; }

static inline double softplus(double x) { return fmax(x, 0.0) + log1p(exp(-fabs(x))); }

static inline double sigmoid(double x) {
    if (x >= 0) return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}

static int64_t count_valid(const uint8_t *valid, int64_t n) {
    if (!valid) return n;
    int64_t count = 0; /* integer sum: exact in any order */
#pragma omp parallel for schedule(static) reduction(+ : count) if (n >= CPU_PAR_MIN)
    for (int64_t i = 0; i < n; i++) count += valid[i] != 0;
    return count;
}

/* ---- L1 and MSE ---------------------------------------------------------------------------- */
/* A work unit is SEG pixels of one (b, c) row of [B, C, P]. */

static void regression_loss(float *loss, const float *pred, const float *target,
                            const uint8_t *valid, int B, int C, int P, int squared) {
    int64_t nseg = ((int64_t)P + SEG - 1) / SEG;
    int64_t units = (int64_t)B * C * nseg;
    double part[NCHUNK]; /* per-chunk sums of |d| or d^2 */
#pragma omp parallel for schedule(static) if ((int64_t)B * C * P >= CPU_PAR_MIN)
    for (int k = 0; k < NCHUNK; k++) {
        double sum = 0;
        for (int64_t u = chunk_lo(units, k); u < chunk_lo(units, k + 1); u++) {
            int64_t row = u / nseg; /* b * C + c */
            int64_t p0 = (u % nseg) * SEG, p1 = p0 + SEG < P ? p0 + SEG : P;
            const float *x = pred + row * P, *y = target + row * P;
            const uint8_t *v = valid ? valid + (row / C) * P : NULL;
            for (int64_t p = p0; p < p1; p++) {
                if (v && !v[p]) continue;
                double d = (double)x[p] - y[p];
                sum += squared ? d * d : fabs(d);
            }
        }
        part[k] = sum;
    }
    double sum = 0;
    for (int k = 0; k < NCHUNK; k++) sum += part[k];
    int64_t n = count_valid(valid, (int64_t)B * P) * C;
    *loss = n ? (float)(sum / (double)n) : 0.0f;
}

static void regression_loss_bwd(float *dx, float dloss, const float *pred, const float *target,
                                const uint8_t *valid, int B, int C, int P, int squared) {
    int64_t n = count_valid(valid, (int64_t)B * P) * C;
    /* d|d|/dd = sign(d), 0 at d = 0 (as PyTorch); d(d^2)/dd = 2d. */
    double scale = n ? (double)dloss / (double)n * (squared ? 2.0 : 1.0) : 0.0;
    int64_t nseg = ((int64_t)P + SEG - 1) / SEG;
    int64_t units = (int64_t)B * C * nseg;
#pragma omp parallel for schedule(static) if ((int64_t)B * C * P >= CPU_PAR_MIN)
    for (int64_t u = 0; u < units; u++) {
        int64_t row = u / nseg;
        int64_t p0 = (u % nseg) * SEG, p1 = p0 + SEG < P ? p0 + SEG : P;
        const float *x = pred + row * P, *y = target + row * P;
        const uint8_t *v = valid ? valid + (row / C) * P : NULL;
        float *g = dx + row * P;
        for (int64_t p = p0; p < p1; p++) {
            if (v && !v[p]) {
                g[p] = 0.0f;
                continue;
            }
            double d = (double)x[p] - y[p];
            double dd = squared ? d : (double)((d > 0) - (d < 0));
            g[p] = (float)(scale * dd);
        }
    }
}

static void cpu_loss_l1(ms_backend *be, float *loss, const ms_act *pred, const float *target,
                        const uint8_t *valid, int B, int C, int P) {
    (void)be;
    regression_loss(loss, CF(pred), target, valid, B, C, P, 0);
}

static void cpu_loss_l1_bwd(ms_backend *be, ms_act *dpred, const float *dloss, const ms_act *pred,
                            const float *target, const uint8_t *valid, int B, int C, int P) {
    (void)be;
    regression_loss_bwd(F(dpred), *dloss, CF(pred), target, valid, B, C, P, 0);
}

static void cpu_loss_mse(ms_backend *be, float *loss, const ms_act *pred, const float *target,
                         const uint8_t *valid, int B, int C, int P) {
    (void)be;
    regression_loss(loss, CF(pred), target, valid, B, C, P, 1);
}

static void cpu_loss_mse_bwd(ms_backend *be, ms_act *dpred, const float *dloss, const ms_act *pred,
                             const float *target, const uint8_t *valid, int B, int C, int P) {
    (void)be;
    regression_loss_bwd(F(dpred), *dloss, CF(pred), target, valid, B, C, P, 1);
}

/* ---- cosine (surface normals) -------------------------------------------------------------- */
/* A work unit is PIX_BLOCK pixels of one image; channels are the outer loop so that the inner
 * loop reads contiguous memory of [B, C, P]. */

/* Per-pixel dot(pred, target), |pred|^2 and |target|^2 over C for pixels [p0, p0 + np). */
static void cosine_terms(const float *pred, const float *target, int64_t b, int64_t p0, int np,
                         int C, int P, double *dot, double *pp, double *tt) {
    for (int j = 0; j < np; j++) dot[j] = pp[j] = tt[j] = 0;
    for (int c = 0; c < C; c++) {
        const float *x = pred + (b * C + c) * P + p0, *y = target + (b * C + c) * P + p0;
        for (int j = 0; j < np; j++) {
            dot[j] += (double)x[j] * y[j];
            pp[j] += (double)x[j] * x[j];
            tt[j] += (double)y[j] * y[j];
        }
    }
}

static void cpu_loss_cosine(ms_backend *be, float *loss, const ms_act *pred_, const float *target,
                            const uint8_t *valid, int B, int C, int P) {
    (void)be;
    const float *pred = CF(pred_);
    int64_t nblk = ((int64_t)P + PIX_BLOCK - 1) / PIX_BLOCK;
    int64_t units = (int64_t)B * nblk;
    double part[NCHUNK]; /* per-chunk sums of 1 - cos */
    int64_t cnt[NCHUNK]; /* per-chunk valid pixels */
#pragma omp parallel for schedule(static) if ((int64_t)B * C * P >= CPU_PAR_MIN)
    for (int k = 0; k < NCHUNK; k++) {
        double sum = 0, dot[PIX_BLOCK], pp[PIX_BLOCK], tt[PIX_BLOCK];
        int64_t n = 0;
        for (int64_t u = chunk_lo(units, k); u < chunk_lo(units, k + 1); u++) {
            int64_t b = u / nblk, p0 = (u % nblk) * PIX_BLOCK;
            int np = P - p0 < PIX_BLOCK ? (int)(P - p0) : PIX_BLOCK;
            cosine_terms(pred, target, b, p0, np, C, P, dot, pp, tt);
            for (int j = 0; j < np; j++) {
                if (valid && !valid[b * P + p0 + j]) continue;
                double eps2 = COS_EPS * COS_EPS;
                sum += 1.0 - dot[j] / (sqrt(pp[j] + eps2) * sqrt(tt[j] + eps2));
                n++;
            }
        }
        part[k] = sum;
        cnt[k] = n;
    }
    double sum = 0;
    int64_t n = 0;
    for (int k = 0; k < NCHUNK; k++) sum += part[k], n += cnt[k];
    *loss = n ? (float)(sum / (double)n) : 0.0f;
}

static void cpu_loss_cosine_bwd(ms_backend *be, ms_act *dpred, const float *dloss,
                                const ms_act *pred_, const float *target, const uint8_t *valid,
                                int B, int C, int P) {
    (void)be;
    const float *pred = CF(pred_);
    float *dx = F(dpred);
    int64_t n = count_valid(valid, (int64_t)B * P);
    double scale = n ? (double)*dloss / (double)n : 0.0;
    int64_t nblk = ((int64_t)P + PIX_BLOCK - 1) / PIX_BLOCK;
    int64_t units = (int64_t)B * nblk;
#pragma omp parallel for schedule(static) if ((int64_t)B * C * P >= CPU_PAR_MIN)
    for (int64_t u = 0; u < units; u++) {
        double dot[PIX_BLOCK], pp[PIX_BLOCK], tt[PIX_BLOCK];
        double a[PIX_BLOCK], m[PIX_BLOCK]; /* dL/dp = -(a * target - m * pred) */
        int64_t b = u / nblk, p0 = (u % nblk) * PIX_BLOCK;
        int np = P - p0 < PIX_BLOCK ? (int)(P - p0) : PIX_BLOCK;
        cosine_terms(pred, target, b, p0, np, C, P, dot, pp, tt);
        for (int j = 0; j < np; j++) {
            int ok = !valid || valid[b * P + p0 + j];
            double norm_p = sqrt(pp[j] + COS_EPS * COS_EPS);
            double norm_t = sqrt(tt[j] + COS_EPS * COS_EPS);
            /* cos = dot / (|p| |t|); dcos/dp = t / (|p| |t|) - dot p / (|p|^3 |t|) */
            a[j] = ok ? scale / (norm_p * norm_t) : 0.0;
            m[j] = ok ? scale * dot[j] / (norm_p * norm_p * norm_p * norm_t) : 0.0;
        }
        for (int c = 0; c < C; c++) {
            const float *x = pred + (b * C + c) * P + p0, *y = target + (b * C + c) * P + p0;
            float *g = dx + (b * C + c) * P + p0;
            for (int j = 0; j < np; j++) g[j] = (float)(m[j] * x[j] - a[j] * y[j]);
        }
    }
}

/* ---- cross-entropy over channels ----------------------------------------------------------- */
/* A label counts when it is not ignore_index and lies in [0, C); any other value is ignored too
 * (the data loaders are responsible for rejecting out-of-range labels with a message). */

static inline int ce_label_ok(int32_t lab, int ignore_index, int C) {
    return lab != ignore_index && lab >= 0 && lab < C;
}

/* Per-pixel max mx and sum se of exp(x - mx) over C for pixels [p0, p0 + np);
 * log-sum-exp = mx + log(se). In float with the vectorised exp_f: these loops are the whole
 * cost of the loss, and a scalar double exp per logit made the segmentation loss of a 224x224
 * batch take longer than an attention layer. Every term is in (0, 1] and the largest is exactly
 * 1, so se is accurate to a few float roundings for any C of a segmentation task; the sums over
 * pixels stay in double. The selects (not fmaxf) keep the loops vectorisable; a NaN logit makes
 * the loss NaN, so divergence stays visible. */
static void ce_lse(const float *logits, int64_t b, int64_t p0, int np, int C, int P, float *mx,
                   float *se) {
    const float *x0 = logits + b * C * P + p0; /* channel c of the block at x0 + c * P */
    for (int j = 0; j < np; j++) mx[j] = x0[j], se[j] = 0.0f;
    for (int c = 1; c < C; c++) {
        const float *x = x0 + (int64_t)c * P;
#pragma omp simd
        for (int j = 0; j < np; j++) mx[j] = x[j] > mx[j] ? x[j] : mx[j];
    }
    for (int c = 0; c < C; c++) {
        const float *x = x0 + (int64_t)c * P;
#pragma omp simd
        for (int j = 0; j < np; j++) se[j] += exp_f(x[j] - mx[j]);
    }
}

static void cpu_loss_ce(ms_backend *be, float *loss, const ms_act *logits_, const int32_t *labels,
                        int ignore_index, int B, int C, int P) {
    (void)be;
    const float *logits = CF(logits_);
    int64_t nblk = ((int64_t)P + PIX_BLOCK - 1) / PIX_BLOCK;
    int64_t units = (int64_t)B * nblk;
    double part[NCHUNK]; /* per-chunk sums of -log softmax[label] */
    int64_t cnt[NCHUNK]; /* per-chunk counted labels */
#pragma omp parallel for schedule(static) if ((int64_t)B * C * P >= CPU_PAR_MIN)
    for (int k = 0; k < NCHUNK; k++) {
        double sum = 0;
        float mx[PIX_BLOCK], se[PIX_BLOCK];
        int64_t n = 0;
        for (int64_t u = chunk_lo(units, k); u < chunk_lo(units, k + 1); u++) {
            int64_t b = u / nblk, p0 = (u % nblk) * PIX_BLOCK;
            int np = P - p0 < PIX_BLOCK ? (int)(P - p0) : PIX_BLOCK;
            ce_lse(logits, b, p0, np, C, P, mx, se);
            for (int j = 0; j < np; j++) {
                int32_t lab = labels[b * P + p0 + j];
                if (!ce_label_ok(lab, ignore_index, C)) continue;
                sum += (double)mx[j] + logf(se[j]) - (double)logits[(b * C + lab) * P + p0 + j];
                n++;
            }
        }
        part[k] = sum;
        cnt[k] = n;
    }
    double sum = 0;
    int64_t n = 0;
    for (int k = 0; k < NCHUNK; k++) sum += part[k], n += cnt[k];
    *loss = n ? (float)(sum / (double)n) : 0.0f;
}

static void cpu_loss_ce_bwd(ms_backend *be, ms_act *dlogits, const float *dloss,
                            const ms_act *logits_, const int32_t *labels, int ignore_index, int B,
                            int C, int P) {
    (void)be;
    const float *logits = CF(logits_);
    float *dx = F(dlogits);
    int64_t total = (int64_t)B * P, n = 0;
#pragma omp parallel for schedule(static) reduction(+ : n) if (total >= CPU_PAR_MIN)
    for (int64_t i = 0; i < total; i++) n += ce_label_ok(labels[i], ignore_index, C);
    const float scale = n ? (float)((double)*dloss / (double)n) : 0.0f;
    int64_t nblk = ((int64_t)P + PIX_BLOCK - 1) / PIX_BLOCK;
    int64_t units = (int64_t)B * nblk;
#pragma omp parallel for schedule(static) if ((int64_t)B * C * P >= CPU_PAR_MIN)
    for (int64_t u = 0; u < units; u++) {
        float mx[PIX_BLOCK], se[PIX_BLOCK], w[PIX_BLOCK]; /* w: scale / se, 0 when ignored */
        float onehot[PIX_BLOCK]; /* scale at a counted pixel: subtracted at its label */
        int32_t lab[PIX_BLOCK];
        int64_t b = u / nblk, p0 = (u % nblk) * PIX_BLOCK;
        int np = P - p0 < PIX_BLOCK ? (int)(P - p0) : PIX_BLOCK;
        ce_lse(logits, b, p0, np, C, P, mx, se);
        for (int j = 0; j < np; j++) {
            lab[j] = labels[b * P + p0 + j];
            int ok = ce_label_ok(lab[j], ignore_index, C);
            w[j] = ok ? scale / se[j] : 0.0f;
            onehot[j] = ok ? scale : 0.0f;
        }
        for (int c = 0; c < C; c++) {
            const float *x = logits + (b * C + c) * P + p0;
            float *g = dx + (b * C + c) * P + p0;
#pragma omp simd
            for (int j = 0; j < np; j++) {
                float soft = w[j] * exp_f(x[j] - mx[j]); /* scale * softmax */
                g[j] = lab[j] == c ? soft - onehot[j] : soft;
            }
        }
    }
}

/* ---- balanced binary cross-entropy (saliency, edges) ---------------------------------------- */
/* Follows the HED-style BalancedCrossEntropyLoss of SimonVandenhende/Multi-Task-Learning-PyTorch
 * (losses/loss_functions.py; M3ViT imports the same class), with two deliberate differences:
 * - Pixels labelled 255 are ignored: they are left out of the sums, of the counts behind the
 *   automatic weight and of the normaliser. (M3ViT's loss_schemes.py calls it as loss(pred, gt),
 *   without void_pixels, so there a 255 pixel counts as a positive; the reference also skips the
 *   void mask whenever pos_weight is given, as for edges.)
 * - The weighted sum is divided by the number of valid pixels; theirs (size_average=True)
 *   divides by every element of the batch, ignored ones included.
 * With pos_weight < 0 the weight of the positives is the batch's share of negatives among valid
 * pixels, a constant of the loss (no gradient flows through it). A label of 0 is negative, 255
 * is ignored and any other value is positive (theirs: label >= 0.5).
 * Per pixel: BCE = softplus(-x) on a positive, softplus(x) on a negative, both computed as
 * max(z, 0) + log1p(exp(-|z|)), which neither overflows nor loses the small tail. */

typedef struct {
    double pos_sum, neg_sum; /* sums of BCE over positives / negatives */
    int64_t pos, neg;        /* counts */
} bce_stats;

static bce_stats bce_reduce(const float *logits, const uint8_t *labels, int64_t total,
                            int with_sums) {
    bce_stats part[NCHUNK];
#pragma omp parallel for schedule(static) if (total >= CPU_PAR_MIN)
    for (int k = 0; k < NCHUNK; k++) {
        bce_stats s = {0, 0, 0, 0};
        for (int64_t i = chunk_lo(total, k); i < chunk_lo(total, k + 1); i++) {
            uint8_t lab = labels[i];
            if (lab == BCE_IGNORE) continue;
            if (lab) {
                s.pos++;
                if (with_sums) s.pos_sum += softplus(-(double)logits[i]);
            } else {
                s.neg++;
                if (with_sums) s.neg_sum += softplus((double)logits[i]);
            }
        }
        part[k] = s;
    }
    bce_stats all = {0, 0, 0, 0};
    for (int k = 0; k < NCHUNK; k++) {
        all.pos_sum += part[k].pos_sum, all.neg_sum += part[k].neg_sum;
        all.pos += part[k].pos, all.neg += part[k].neg;
    }
    return all;
}

static double bce_pos_weight(const bce_stats *s, float pos_weight) {
    if (pos_weight >= 0) return pos_weight;
    int64_t n = s->pos + s->neg;
    return n ? (double)s->neg / (double)n : 0.0;
}

static void cpu_loss_bce_balanced(ms_backend *be, float *loss, const ms_act *logits,
                                  const uint8_t *labels, float pos_weight, int B, int P) {
    (void)be;
    bce_stats s = bce_reduce(CF(logits), labels, (int64_t)B * P, 1);
    int64_t n = s.pos + s.neg;
    double w = bce_pos_weight(&s, pos_weight);
    *loss = n ? (float)((w * s.pos_sum + (1.0 - w) * s.neg_sum) / (double)n) : 0.0f;
}

static void cpu_loss_bce_balanced_bwd(ms_backend *be, ms_act *dlogits, const float *dloss,
                                      const ms_act *logits_, const uint8_t *labels,
                                      float pos_weight, int B, int P) {
    (void)be;
    const float *logits = CF(logits_);
    float *dx = F(dlogits);
    int64_t total = (int64_t)B * P;
    bce_stats s = bce_reduce(logits, labels, total, 0);
    int64_t n = s.pos + s.neg;
    double w = bce_pos_weight(&s, pos_weight);
    double scale = n ? (double)*dloss / (double)n : 0.0;
    /* d softplus(-x)/dx = -sigmoid(-x); d softplus(x)/dx = sigmoid(x) */
    double wpos = scale * w, wneg = scale * (1.0 - w);
#pragma omp parallel for schedule(static) if (total >= CPU_PAR_MIN)
    for (int64_t i = 0; i < total; i++) {
        uint8_t lab = labels[i];
        double x = logits[i];
        double g = lab == BCE_IGNORE ? 0.0 : lab ? -wpos * sigmoid(-x) : wneg * sigmoid(x);
        dx[i] = (float)g;
    }
}

/* ---- uncertainty weighting ----------------------------------------------------------------- */
/* The form of the official util/AutomaticWeightedLoss.py: 0.5 / s^2 * L + log(1 + s^2), where
 * the regulariser log(1 + s^2) (rather than log s^2) stays bounded below as s -> 0. */
static void cpu_uncertainty_weighting(ms_backend *be, float *total, float *dL, float *ds,
                                      const float *L, const float *s, int T) {
    (void)be;
    double sum = 0;
    for (int t = 0; t < T; t++) {
        double st = s[t], s2 = st * st, lt = L[t];
        sum += 0.5 / s2 * lt + log1p(s2);
        dL[t] = (float)(0.5 / s2);
        ds[t] += (float)(-lt / (s2 * st) + 2.0 * st / (1.0 + s2));
    }
    *total = (float)sum;
}

/* ---- fixed task weights --------------------------------------------------------------------- */

static void cpu_loss_weighted_sum(ms_backend *be, float *total, const float *L, const float *w,
                                  int T) {
    (void)be;
    double sum = 0;
    for (int t = 0; t < T; t++) sum += (double)w[t] * L[t];
    *total = (float)sum;
}

/* ---- L2 normalisation over channels (PASCAL normals) ---------------------------------------- */
/* A work unit is PIX_BLOCK pixels of one image, as for the cosine loss. With n = |x| over C and
 * y = x / (n + eps):  dx = dy / (n + eps) - x (x . dy) / (n (n + eps)^2); the second term
 * vanishes at n = 0 (x = 0 there), which is PyTorch's value for the norm's gradient at 0. */

/* Per-pixel |x| over C for pixels [p0, p0 + np) of image b. */
static void channel_norms(const float *x, int64_t b, int64_t p0, int np, int C, int P,
                          double *norm) {
    for (int j = 0; j < np; j++) norm[j] = 0;
    for (int c = 0; c < C; c++) {
        const float *xc = x + (b * C + c) * P + p0;
        for (int j = 0; j < np; j++) norm[j] += (double)xc[j] * xc[j];
    }
    for (int j = 0; j < np; j++) norm[j] = sqrt(norm[j]);
}

static void cpu_l2_normalize(ms_backend *be, ms_act *y_, const ms_act *x_, int B, int C, int P,
                             float eps) {
    (void)be;
    const float *x = CF(x_);
    float *y = F(y_);
    int64_t nblk = ((int64_t)P + PIX_BLOCK - 1) / PIX_BLOCK;
#pragma omp parallel for schedule(static) if ((int64_t)B * C * P >= CPU_PAR_MIN)
    for (int64_t u = 0; u < (int64_t)B * nblk; u++) {
        double inv[PIX_BLOCK]; /* 1 / (|x| + eps) */
        int64_t b = u / nblk, p0 = (u % nblk) * PIX_BLOCK;
        int np = P - p0 < PIX_BLOCK ? (int)(P - p0) : PIX_BLOCK;
        channel_norms(x, b, p0, np, C, P, inv);
        for (int j = 0; j < np; j++) inv[j] = 1.0 / (inv[j] + eps);
        for (int c = 0; c < C; c++) {
            const float *xc = x + (b * C + c) * P + p0;
            float *yc = y + (b * C + c) * P + p0;
            for (int j = 0; j < np; j++) yc[j] = (float)(xc[j] * inv[j]);
        }
    }
}

static void cpu_l2_normalize_bwd(ms_backend *be, ms_act *dx_, const ms_act *dy_, const ms_act *x_,
                                 int B, int C, int P, float eps) {
    (void)be;
    const float *x = CF(x_), *dy = CF(dy_);
    float *dx = F(dx_);
    int64_t nblk = ((int64_t)P + PIX_BLOCK - 1) / PIX_BLOCK;
#pragma omp parallel for schedule(static) if ((int64_t)B * C * P >= CPU_PAR_MIN)
    for (int64_t u = 0; u < (int64_t)B * nblk; u++) {
        double norm[PIX_BLOCK], dot[PIX_BLOCK], a[PIX_BLOCK], m[PIX_BLOCK]; /* dx = a dy - m x */
        int64_t b = u / nblk, p0 = (u % nblk) * PIX_BLOCK;
        int np = P - p0 < PIX_BLOCK ? (int)(P - p0) : PIX_BLOCK;
        channel_norms(x, b, p0, np, C, P, norm);
        for (int j = 0; j < np; j++) dot[j] = 0;
        for (int c = 0; c < C; c++) {
            const float *xc = x + (b * C + c) * P + p0, *gc = dy + (b * C + c) * P + p0;
            for (int j = 0; j < np; j++) dot[j] += (double)xc[j] * gc[j];
        }
        for (int j = 0; j < np; j++) {
            double ne = norm[j] + eps;
            a[j] = 1.0 / ne;
            m[j] = norm[j] > 0 ? dot[j] / (norm[j] * ne * ne) : 0.0;
        }
        for (int c = 0; c < C; c++) {
            const float *xc = x + (b * C + c) * P + p0, *gc = dy + (b * C + c) * P + p0;
            float *dc = dx + (b * C + c) * P + p0;
            for (int j = 0; j < np; j++) dc[j] = (float)(a[j] * gc[j] - m[j] * xc[j]);
        }
    }
}

void cpu_register_losses(ms_backend *be) {
    be->loss_l1 = cpu_loss_l1;
    be->loss_l1_bwd = cpu_loss_l1_bwd;
    be->loss_mse = cpu_loss_mse;
    be->loss_mse_bwd = cpu_loss_mse_bwd;
    be->loss_cosine = cpu_loss_cosine;
    be->loss_cosine_bwd = cpu_loss_cosine_bwd;
    be->loss_ce = cpu_loss_ce;
    be->loss_ce_bwd = cpu_loss_ce_bwd;
    be->loss_bce_balanced = cpu_loss_bce_balanced;
    be->loss_bce_balanced_bwd = cpu_loss_bce_balanced_bwd;
    be->uncertainty_weighting = cpu_uncertainty_weighting;
    be->loss_weighted_sum = cpu_loss_weighted_sum;
    be->l2_normalize = cpu_l2_normalize;
    be->l2_normalize_bwd = cpu_l2_normalize_bwd;
}
