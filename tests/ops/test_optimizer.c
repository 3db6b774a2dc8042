/* AdamW against a double-precision transcription of PyTorch's AdamW step, and the sum of
 * squares against a double sum and a bit-identical rerun. */
#include "../testutil.h"

#include <math.h>
#include <stdio.h>

/* PyTorch AdamW (torch/optim/adamw.py, single-tensor path) in double: decay the pre-update
 * parameter, update the moments, then step with the bias-corrected moments. */
static void ref_adamw(double *p, const double *g, double *m, double *v, size_t n, double lr,
                      double beta1, double beta2, double eps, double wd, int step) {
    double bc1 = 1 - pow(beta1, step), bc2 = 1 - pow(beta2, step);
    for (size_t i = 0; i < n; i++) {
        p[i] *= 1 - lr * wd;
        m[i] = beta1 * m[i] + (1 - beta1) * g[i];
        v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i];
        p[i] -= lr / bc1 * m[i] / (sqrt(v[i]) / sqrt(bc2) + eps);
    }
}

/* Runs 5 AdamW steps on n values with fresh gradients each step and compares p, m, v and the
 * step's change of p with the reference after steps 1 and 5 (bias correction is largest at
 * step 1 and has decayed by step 5). */
static void check_adamw(size_t n, float lr, float eps, float wd, uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    const float beta1 = 0.9f, beta2 = 0.999f;
    float *p = tu_floats(n), *g = tu_floats(n), *m = tu_floats(n), *v = tu_floats(n);
    float *p_prev = tu_floats(n), *dp = tu_floats(n); /* [n] p before the step, its change */
    double *rp = tu_doubles(n), *rg = tu_doubles(n), *rm = tu_doubles(n), *rv = tu_doubles(n);
    double *rdp = tu_doubles(n); /* [n] the reference step's change of p */
    tu_fill_normal(&r, p, n, 1.0);
    tu_to_double(rp, p, n);
    float *dev_p = be->alloc(be, n * 4), *dev_g = be->alloc(be, n * 4);
    float *dev_m = be->alloc(be, n * 4), *dev_v = be->alloc(be, n * 4);
    be->upload(be, dev_p, p, n * 4);
    be->zero(be, dev_m, n * 4);
    be->zero(be, dev_v, n * 4);
    for (int step = 1; step <= 5; step++) {
        /* Gradients over several decades, so both the eps and the sqrt(v) terms matter. */
        for (size_t i = 0; i < n; i++)
            g[i] = (float)(tu_normal(&r) * pow(10.0, -4 * tu_uniform(&r)));
        tu_to_double(rg, g, n);
        be->upload(be, dev_g, g, n * 4);
        be->download(be, p_prev, dev_p, n * 4);
        be->adamw(be, dev_p, dev_g, dev_m, dev_v, n, lr, beta1, beta2, eps, wd, step);
        for (size_t i = 0; i < n; i++) rdp[i] = rp[i];
        ref_adamw(rp, rg, rm, rv, n, lr, beta1, beta2, eps, wd, step);
        if (step != 1 && step != 5) continue;
        be->download(be, p, dev_p, n * 4);
        be->download(be, m, dev_m, n * 4);
        be->download(be, v, dev_v, n * 4);
        for (size_t i = 0; i < n; i++) {
            dp[i] = p[i] - p_prev[i];
            rdp[i] = rp[i] - rdp[i];
        }
        char what[128];
        snprintf(what, sizeof what, "adamw p (n %zu lr %g eps %g wd %g step %d)", n, lr, eps, wd,
                 step);
        tu_expect_close(what, p, rp, n, 1e-6);
        snprintf(what, sizeof what, "adamw m (n %zu step %d)", n, step);
        tu_expect_close(what, m, rm, n, 1e-6);
        snprintf(what, sizeof what, "adamw v (n %zu step %d)", n, step);
        tu_expect_close(what, v, rv, n, 1e-6);
        /* p changes by about lr per step; compared on its own the change is checked far more
         * tightly than through p, whose size hides it. */
        snprintf(what, sizeof what, "adamw p change (n %zu lr %g eps %g wd %g step %d)", n, lr, eps,
                 wd, step);
        tu_expect_close(what, dp, rdp, n, 1e-4);
    }
}

Test(optimizer, adamw_no_decay) {
    check_adamw(1, 1e-2f, 1e-8f, 0.0f, 1);
    check_adamw(1001, 1e-2f, 1e-8f, 0.0f, 2);
    check_adamw(1001, 1e-2f, 1e-4f, 0.0f, 3);
}

Test(optimizer, adamw_decay) {
    check_adamw(1, 1e-2f, 1e-8f, 0.05f, 4);
    check_adamw(1001, 1e-2f, 1e-4f, 0.05f, 5);
    /* lr 0.5: decaying the updated instead of the pre-update p would be off by lr^2 wd. */
    check_adamw(1001, 0.5f, 1e-4f, 0.05f, 6);
}

/* Large enough that the update runs on several threads. */
Test(optimizer, adamw_threaded) { check_adamw(100003, 1e-2f, 1e-8f, 0.05f, 7); }

/* ---- sumsq ------------------------------------------------------------------------------- */

static float run_sumsq(const float *dev_x, size_t n) {
    ms_backend *be = tu_cpu();
    float *dev_out = be->alloc(be, 4), out;
    be->sumsq(be, dev_out, dev_x, n);
    be->download(be, &out, dev_out, 4);
    be->free(be, dev_out);
    return out;
}

static void check_sumsq(size_t n, uint64_t seed) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(seed);
    float *x = tu_floats(n + 1); /* + 1: n may be 0 */
    tu_fill_normal(&r, x, n, 3.0);
    double ref = 0;
    for (size_t i = 0; i < n; i++) ref += (double)x[i] * x[i];
    float *dev_x = be->alloc(be, (n + 1) * 4);
    be->upload(be, dev_x, x, n * 4);
    float got = run_sumsq(dev_x, n);
    char what[64];
    snprintf(what, sizeof what, "sumsq n %zu", n);
    /* Double accumulation leaves only the final rounding to fp32 (relative 6e-8); an fp32
     * running sum over 1e6 values would be off by far more. */
    tu_expect_close(what, &got, &ref, 1, 1e-7);
    be->free(be, dev_x);
}

Test(optimizer, sumsq) {
    check_sumsq(0, 10);
    check_sumsq(1, 11);
    check_sumsq(7, 12);
    check_sumsq(16385, 13); /* just over one chunk */
    check_sumsq(1000003, 14);
}

Test(optimizer, sumsq_deterministic) {
    ms_backend *be = tu_cpu();
    tu_rng r = tu_seed(20);
    const size_t n = 1000003;
    float *x = tu_floats(n);
    tu_fill_normal(&r, x, n, 1.0);
    float *dev_x = be->alloc(be, n * 4);
    be->upload(be, dev_x, x, n * 4);
    float a = run_sumsq(dev_x, n), b = run_sumsq(dev_x, n);
    tu_expect_equal("sumsq rerun", &b, &a, 1);
}
