/* Optimizer ops on the CPU: the AdamW update and the sum of squares behind the global gradient
 * norm. */
#include "cpu.h"

#include <math.h>

/* PyTorch's torch.lerp for a scalar weight w: a + w (b - a), evaluated from the nearer end so
 * w = 1 returns b exactly (aten's lerp kernel does the same). */
static inline float lerpf(float a, float b, float w) {
    return w < 0.5f ? a + w * (b - a) : b - (b - a) * (1.0f - w);
}

/* AdamW exactly as PyTorch's single-tensor AdamW step (torch/optim/adamw.py, fp32 tensors),
 * in its order:
 *   p *= 1 - lr*wd                         (decoupled decay, applied to the pre-update p)
 *   m  = lerp(m, g, 1 - beta1)
 *   v  = v*beta2 + (1 - beta2) g^2
 *   p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps),   bc_i = 1 - beta_i^step
 * backend.h writes this as p -= lr * (mhat/(sqrt(vhat) + eps) + wd*p); the two are the same
 * update because the decay term uses p before the step. The scalar coefficients are formed in
 * double (Python floats in PyTorch) and rounded to fp32 once, as PyTorch's fp32 kernels do.
 * Elementwise, so any thread split gives identical results. */
static void cpu_adamw(ms_backend *be, float *p, const float *g, float *m, float *v, size_t n,
                      float lr, float beta1, float beta2, float eps, float weight_decay,
                      int step) {
    (void)be;
    const double bc1 = 1.0 - pow((double)beta1, step);
    const double bc2 = 1.0 - pow((double)beta2, step);
    const float decay = (float)(1.0 - (double)lr * weight_decay);
    const float w1 = (float)(1.0 - (double)beta1);
    const float w2 = (float)(1.0 - (double)beta2);
    const float step_size = (float)((double)lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
#pragma omp parallel for schedule(static) if (n >= CPU_PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float gi = g[i];
        float pi = p[i] * decay;
        float mi = lerpf(m[i], gi, w1);
        float vi = v[i] * beta2 + w2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
    }
}

/* sumsq splits x into at most SUMSQ_MAX_CHUNKS chunks whose size depends only on n, sums each
 * chunk in double and adds the chunk sums in chunk order: the result is the same for any thread
 * count, and the partials live on the stack. */
#define SUMSQ_MIN_CHUNK 16384
#define SUMSQ_MAX_CHUNKS 1024

/* Sum of squares of x[n] in double. Four independent accumulators in a fixed interleaving keep
 * the add chain short without depending on the compiler reassociating anything. */
static double sumsq_chunk(const float *x, size_t n) {
    double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        a0 += (double)x[i] * x[i];
        a1 += (double)x[i + 1] * x[i + 1];
        a2 += (double)x[i + 2] * x[i + 2];
        a3 += (double)x[i + 3] * x[i + 3];
    }
    for (; i < n; i++) a0 += (double)x[i] * x[i];
    return (a0 + a1) + (a2 + a3);
}

/* *out = sum of x[n]^2 (a host scalar on the CPU backend). */
static void cpu_sumsq(ms_backend *be, float *out, const float *x, size_t n) {
    (void)be;
    double part[SUMSQ_MAX_CHUNKS]; /* [nchunk] chunk sums */
    size_t chunk = (n + SUMSQ_MAX_CHUNKS - 1) / SUMSQ_MAX_CHUNKS;
    if (chunk < SUMSQ_MIN_CHUNK) chunk = SUMSQ_MIN_CHUNK;
    int nchunk = n ? (int)((n + chunk - 1) / chunk) : 0;
#pragma omp parallel for schedule(static) if (nchunk > 1)
    for (int c = 0; c < nchunk; c++) {
        size_t i0 = (size_t)c * chunk;
        size_t len = n - i0 < chunk ? n - i0 : chunk;
        part[c] = sumsq_chunk(x + i0, len);
    }
    double total = 0.0;
    for (int c = 0; c < nchunk; c++) total += part[c];
    *out = (float)total;
}

void cpu_register_optimizer(ms_backend *be) {
    be->adamw = cpu_adamw;
    be->sumsq = cpu_sumsq;
}
