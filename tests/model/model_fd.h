/* Shared by the model tests (test_backbone.c, test_mi.c, test_model.c): tiny configs and a
 * finite-difference gradient check of an fp32 model.
 *
 * The CPU backend computes in fp32, so the check is built for fp32 noise: the objective is
 * summed in double, the step is h = FD_H (absolute) with the 4-point stencil
 *     g = (8 (f(h) - f(-h)) - (f(2h) - f(-2h))) / 12h      (truncation error O(h^4)),
 * and an entry whose perturbation changes any top-k routing decision (the routing signature of
 * one of the four evaluations differs from the unperturbed one) is retried with h/4 and h/16 and
 * skipped (and counted) only when every step flips a decision: the objective is not
 * differentiable across a routing change.
 *
 * Tolerance. The rounding jitter of the fp32 objective is measured (fd_noise) and three standard
 * deviations of it are allowed on top of the relative tolerance: what a tensor's gradient may
 * miss by is  tol * max(|fd|, |analytic|) + 3 noise  (norms over its sampled entries). FD_VERBOSE=1
 * in the environment prints every tensor's figures. */
#ifndef MS_MODEL_FD_H
#define MS_MODEL_FD_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../model/config.h"
#include "../../model/params.h"
#include "../testutil.h"

#define FD_H 2e-2

/* A config from YAML text plus --set style overrides; fails the test with every message. */
static inline void fd_config(ms_config *cfg, const char *yaml, int n_sets, const char *const *sets) {
    ms_config_errors errs;
    ms_config_errors_init(&errs);
    int n = ms_config_load_text(cfg, "test.yaml", yaml, strlen(yaml), n_sets, sets, &errs);
    if (n) {
        ms_config_errors_print(&errs, stderr);
        cr_assert_fail("test config has %d errors (printed above)", n);
    }
    ms_config_errors_free(&errs);
}

/* The tiny model of the model tests: 2 tasks, 16x16 images in 4x4 patches (17 tokens), D 8,
 * 2 heads, 4 experts with top-2 in both MoE kinds. */
static const char FD_TINY_YAML[] =
    "run:\n  seed: 5\n"
    "data:\n  dataset: taskonomy\n  tasks: [depth_euclidean, normal]\n"
    "  image_size: 16\n  resize: 16\n"
    "model:\n  patch: 4\n  dim: 8\n  depth: 4\n  heads: 2\n"
    "  attn_experts: 4\n  attn_topk: 2\n  mlp_experts: 4\n  mlp_topk: 2\n"
    "  drop_path: 0.2\n";

typedef struct {
    ms_backend *be;
    const ms_param_table *pt;
    float *params;        /* device [pt->total] */
    /* the objective in double; when sig is not NULL, the routing decisions (int32) into it */
    double (*eval)(void *ctx, int32_t *sig);
    void *ctx;
    size_t sig_len;       /* int32 entries of the routing signature (0: no routing) */
    int samples;          /* entries per tensor */
    uint64_t seed;
    /* tensors whose name starts with one of these are skipped (NULL-terminated, may be NULL) */
    const char *const *skip_prefix;
    /* when not NULL: only the tensors whose name contains it */
    const char *only;
} fd_spec;

typedef struct {
    int checked, skipped, tensors;
    double noise;         /* measured fp32 noise of one finite-difference estimate */
    double total_rel;     /* ||analytic - fd|| / ||fd|| over every checked entry */
    double worst_rel;     /* the worst tensor's relative error */
    char worst[MS_TENSOR_NAME_MAX];
} fd_result;

static inline float fd_take(const fd_spec *s, size_t i) {
    float x;
    s->be->download(s->be, &x, s->params + i, sizeof x);
    return x;
}

static inline void fd_put(const fd_spec *s, size_t i, float x) {
    s->be->upload(s->be, s->params + i, &x, sizeof x);
}

/* f at params[i] = x0 + d, with the routing signature compared against base_sig. */
static inline double fd_eval_at(const fd_spec *s, size_t i, float x0, double d,
                                const int32_t *base_sig, int32_t *sig, int *flipped) {
    fd_put(s, i, (float)(x0 + d));
    double f = s->eval(s->ctx, s->sig_len ? sig : NULL);
    if (s->sig_len && memcmp(sig, base_sig, s->sig_len * sizeof *sig) != 0) *flipped = 1;
    return f;
}

static inline int fd_skipped_tensor(const fd_spec *s, const char *name) {
    if (s->only && !strstr(name, s->only)) return 1;
    for (const char *const *p = s->skip_prefix; p && *p; p++)
        if (strncmp(name, *p, strlen(*p)) == 0) return 1;
    return 0;
}

/* Least-squares cubic through (d[k], f[k]), k < n (n <= 16): the residual sum of squares. */
static inline double fd_cubic_rss(const double *d, const double *f, int n) {
    double A[4][5] = {{0}};
    for (int k = 0; k < n; k++) {
        double p[4] = {1, d[k], d[k] * d[k], d[k] * d[k] * d[k]};
        for (int i = 0; i < 4; i++) {
            for (int j = 0; j < 4; j++) A[i][j] += p[i] * p[j];
            A[i][4] += p[i] * f[k];
        }
    }
    for (int c = 0; c < 4; c++) /* Gauss-Jordan; the normal equations are well posed here */
        for (int i = 0; i < 4; i++) {
            if (i == c) continue;
            double m = A[i][c] / A[c][c];
            for (int j = c; j < 5; j++) A[i][j] -= m * A[c][j];
        }
    double rss = 0;
    for (int k = 0; k < n; k++) {
        double y = 0, pk = 1;
        for (int i = 0; i < 4; i++, pk *= d[k]) y += A[i][4] / A[i][i] * pk;
        rss += (f[k] - y) * (f[k] - y);
    }
    return rss;
}

/* The fp32 noise of the objective, measured: for a few entries, f at 11 points spanning
 * [-2h, 2h] minus the best cubic through them leaves the rounding jitter sigma_f (the function
 * itself is smooth at that scale). Returned as the standard deviation of one 4-point estimate:
 * about 0.95 sigma_f / h. */
static inline double fd_noise(const fd_spec *s, const int32_t *base_sig, int32_t *sig,
                              tu_rng *r) {
    double rss = 0;
    int dof = 0;
    for (int k = 0; k < 8; k++) {
        const ms_tensor_info *ti = &s->pt->t[tu_randint(r, 0, s->pt->n - 1)];
        if (ti->buffer || fd_skipped_tensor(s, ti->name)) continue;
        size_t i = ti->offset + (size_t)tu_randint(r, 0, (int)ti->numel - 1);
        float x0 = fd_take(s, i);
        double d[11], f[11];
        int flipped = 0;
        for (int q = 0; q < 11; q++) {
            f[q] = fd_eval_at(s, i, x0, (q - 5) * 0.4 * FD_H, base_sig, sig, &flipped);
            d[q] = (double)(float)(x0 + (q - 5) * 0.4 * FD_H) - x0;
        }
        fd_put(s, i, x0);
        if (flipped) continue;
        rss += fd_cubic_rss(d, f, 11);
        dof += 11 - 4;
    }
    return dof ? 0.95 * sqrt(rss / dof) / FD_H : 0;
}

/* Compares analytic[pt->total] (host) with finite differences on sampled entries of every
 * tensor; fails the test when a tensor's relative error exceeds tol_tensor, the overall one
 * tol_total, or more than max_skip_share of the entries were skipped. */
static inline fd_result fd_check(const fd_spec *s, const float *analytic, double tol_tensor,
                                 double tol_total, double max_skip_share) {
    fd_result res = {0};
    tu_rng r = tu_seed(s->seed);
    int32_t *base_sig = s->sig_len ? (int32_t *)tu_ints(s->sig_len) : NULL;
    int32_t *sig = s->sig_len ? (int32_t *)tu_ints(s->sig_len) : NULL;
    s->eval(s->ctx, base_sig);
    res.noise = fd_noise(s, base_sig, sig, &r);
    double sum_d2 = 0, sum_f2 = 0;
    size_t *idx = calloc((size_t)s->samples, sizeof *idx);
    for (int j = 0; j < s->pt->n; j++) {
        const ms_tensor_info *ti = &s->pt->t[j];
        if (ti->buffer || fd_skipped_tensor(s, ti->name)) continue;
        size_t k = tu_sample_indices(&r, ti->numel, (size_t)s->samples, idx);
        double d2 = 0, f2 = 0, a2 = 0, noise2 = 0;
        int used = 0;
        for (size_t q = 0; q < k; q++) {
            size_t i = ti->offset + idx[q];
            float x0 = fd_take(s, i);
            double g = 0, h = FD_H;
            int ok = 0;
            for (int attempt = 0; attempt < 3 && !ok; attempt++) {
                h = FD_H / pow(4.0, attempt);
                int flipped = 0;
                double f1 = fd_eval_at(s, i, x0, h, base_sig, sig, &flipped);
                double fm1 = fd_eval_at(s, i, x0, -h, base_sig, sig, &flipped);
                double f2p = fd_eval_at(s, i, x0, 2 * h, base_sig, sig, &flipped);
                double f2m = fd_eval_at(s, i, x0, -2 * h, base_sig, sig, &flipped);
                /* the step actually taken in fp32 */
                double hf = (double)(float)(x0 + h) - (double)(float)(x0 - h);
                double hf2 = (double)(float)(x0 + 2 * h) - (double)(float)(x0 - 2 * h);
                g = (4.0 / 3.0) * (f1 - fm1) / hf - (1.0 / 3.0) * (f2p - f2m) / hf2;
                ok = !flipped;
            }
            fd_put(s, i, x0);
            if (!ok) {
                res.skipped++;
                continue;
            }
            double a = analytic[i];
            d2 += (a - g) * (a - g), f2 += g * g, a2 += a * a;
            noise2 += pow(res.noise * FD_H / h, 2); /* the noise grows as the step shrinks */
            used++;
        }
        if (!used) continue;
        res.checked += used;
        res.tensors++;
        sum_d2 += d2, sum_f2 += f2;
        /* Relative to the larger of the two norms, less three standard deviations of the
         * measured fp32 noise of the estimates (so tensors whose gradient is near the noise
         * compare absolutely). */
        double excess = fmax(0.0, sqrt(d2) - 3 * sqrt(noise2));
        double rel = excess / fmax(fmax(sqrt(f2), sqrt(a2)), 1e-30);
        if (rel > res.worst_rel) {
            res.worst_rel = rel;
            snprintf(res.worst, sizeof res.worst, "%s", ti->name);
        }
        if (rel > tol_tensor || getenv("FD_VERBOSE"))
            fprintf(stderr,
                    "fd: %s: relative error %.3g beyond noise over %d entries (|fd - an| %.3g, "
                    "|fd| %.3g, |an| %.3g, noise %.2g)\n",
                    ti->name, rel, used, sqrt(d2), sqrt(f2), sqrt(a2), res.noise);
    }
    free(idx);
    s->eval(s->ctx, NULL); /* leave the model as it was evaluated at the unperturbed point */
    res.total_rel = sqrt(sum_d2) / fmax(sqrt(sum_f2), 1e-30);
    int total = res.checked + res.skipped;
    cr_assert(res.checked > 0, "no entry was checked");
    cr_assert(res.skipped <= max_skip_share * total,
              "%d of %d sampled entries skipped (routing flips), more than %.0f%%", res.skipped,
              total, 100 * max_skip_share);
    cr_assert(res.worst_rel <= tol_tensor,
              "gradient of %s: relative error %.3g > %.3g (%d tensors, %d entries, %d skipped)",
              res.worst, res.worst_rel, tol_tensor, res.tensors, res.checked, res.skipped);
    cr_assert(res.total_rel <= tol_total, "overall relative gradient error %.3g > %.3g",
              res.total_rel, tol_total);
    return res;
}

#endif
