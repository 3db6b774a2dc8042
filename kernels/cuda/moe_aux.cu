/* The routing extras of the baselines on the GPU: noisy gating (M3ViT's NoisyGate, the official
 * TaskMoE), the cv^2 balance loss (M3ViT) and the task half of a router fed [token ; task
 * embedding] (task_moe with a shared router).
 *
 * Semantics are those of kernels/cpu/moe.c (its comments give the sources and the choice of the
 * load term); the simt tests compare every op here with it.
 *  - noisy_logits(_bwd): a warp per token, lanes over the experts (no integer division per
 *    element); fp32 math in the CPU's order, torch's softplus (linear above 20).
 *  - balance_loss: importance and load per expert by a block per expert that scans the M K
 *    pairs and reduces in double (block_sum, fixed order), then one thread forms the two cv^2
 *    terms and the importance gradient with the CPU's loop, in double. Two launches, scratch
 *    for the 2E sums, no float atomics, no host synchronisation.
 *  - router_task_bias: a warp per expert, the dot product in double; its backward a thread per
 *    column d, which adds dw[:, d] and sums dv[d] over the experts in order, as the CPU. */
#include "cuda_common.h"

#define AUX_WARPS 4 /* tokens (noisy gating) or experts (task bias) per 128-thread block */
#define AUX_THREADS (AUX_WARPS * 32)
#define BAL_THREADS 256
#define NOISE_EPS 1e-2f /* the official noise_epsilon */
#define CV_EPS 1e-10
/* Every grid kernel here declares 1024 resident threads per SM (__launch_bounds__ minimum
 * blocks 8 x 128 or 4 x 256), a budget of 64 registers: without a minimum, ptxas aims
 * noisy_logits_bwd at 32 registers and spills around the fp32 division's slow path. */

/* ---- noisy gating ---------------------------------------------------------------------------- */

/* torch.nn.Softplus with beta 1 and threshold 20: linear above the threshold. */
static __device__ __forceinline__ float softplus(float x) {
    return x > 20.0f ? x : log1pf(expf(x));
}
/* Its derivative as torch computes it: sigmoid below the threshold, 1 above. */
static __device__ __forceinline__ float softplus_grad(float x) {
    return x > 20.0f ? 1.0f : 1.0f / (1.0f + expf(-x));
}

/* y[m, e] = clean + noise * (softplus(raw) + NOISE_EPS) with logits2[m] = [clean | raw]; noise
 * NULL: y = clean. Warp w of block b takes token 4 b + w. */
template <typename T>
static __global__ void __launch_bounds__(AUX_THREADS, 8)
    noisy_logits_kernel(T *y, const T *logits2, const float *noise, int M, int E) {
    int lane = threadIdx.x & 31;
    int m = blockIdx.x * AUX_WARPS + (threadIdx.x >> 5);
    if (m >= M) return;
    const T *clean = logits2 + (size_t)m * 2 * E, *raw = clean + E;
    T *yr = y + (size_t)m * E;
    const float *nz = noise ? noise + (size_t)m * E : NULL;
    for (int e = lane; e < E; e += 32) {
        float c = ld(clean[e]);
        st(&yr[e], nz ? c + nz[e] * (softplus(ld(raw[e])) + NOISE_EPS) : c);
    }
}

/* dlogits2[m] = [dy | dy * noise * softplus'(raw)] (raw half 0 with noise NULL). */
template <typename T>
static __global__ void __launch_bounds__(AUX_THREADS, 8)
    noisy_logits_bwd_kernel(T *dlogits2, const T *dy, const T *logits2, const float *noise, int M,
                            int E) {
    int lane = threadIdx.x & 31;
    int m = blockIdx.x * AUX_WARPS + (threadIdx.x >> 5);
    if (m >= M) return;
    const T *dyr = dy + (size_t)m * E, *raw = logits2 + (size_t)m * 2 * E + E;
    T *dclean = dlogits2 + (size_t)m * 2 * E, *draw = dclean + E;
    const float *nz = noise ? noise + (size_t)m * E : NULL;
    for (int e = lane; e < E; e += 32) {
        float d = ld(dyr[e]);
        st(&dclean[e], d);
        st(&draw[e], nz ? d * nz[e] * softplus_grad(ld(raw[e])) : 0.0f);
    }
}

template <typename T>
static void noisy_logits_t(ms_backend *be, ms_act *y, const ms_act *logits2, const float *noise,
                           int M, int E) {
    MS_LAUNCH(noisy_logits_kernel<T>, cdiv((size_t)M, AUX_WARPS), AUX_THREADS, 0, cuda_stream(be),
              (T *)y, (const T *)logits2, noise, M, E);
}

template <typename T>
static void noisy_logits_bwd_t(ms_backend *be, ms_act *dlogits2, const ms_act *dy,
                               const ms_act *logits2, const float *noise, int M, int E) {
    MS_LAUNCH(noisy_logits_bwd_kernel<T>, cdiv((size_t)M, AUX_WARPS), AUX_THREADS, 0,
              cuda_stream(be), (T *)dlogits2, (const T *)dy, (const T *)logits2, noise, M, E);
}

static void cuda_noisy_logits(ms_backend *be, ms_act *y, const ms_act *logits2, const float *noise,
                              int M, int E) {
    if (M > 0 && E > 0) ACT_DISPATCH(be, noisy_logits_t, be, y, logits2, noise, M, E);
}

static void cuda_noisy_logits_bwd(ms_backend *be, ms_act *dlogits2, const ms_act *dy,
                                  const ms_act *logits2, const float *noise, int M, int E) {
    if (M > 0 && E > 0)
        ACT_DISPATCH(be, noisy_logits_bwd_t, be, dlogits2, dy, logits2, noise, M, E);
}

/* ---- cv^2 balance loss ----------------------------------------------------------------------- */

/* Block e: imp[e] = sum of gate[p] over the pairs p with idx[p] == e, load[e] = their number;
 * imp, load [E] doubles in scratch. Pairs with an index outside [0, E) match no block. */
static __global__ void __launch_bounds__(BAL_THREADS, 4)
    balance_stats_kernel(double *imp, double *load, const float *gate, const int32_t *idx,
                         size_t R) {
    int e = blockIdx.x;
    double s = 0.0, c = 0.0;
    for (size_t p = threadIdx.x; p < R; p += BAL_THREADS)
        if (idx[p] == e) {
            s += gate[p];
            c += 1.0;
        }
    s = block_sum(s);
    c = block_sum(c); /* integer counts: exact in double */
    if (threadIdx.x == 0) {
        imp[e] = s;
        load[e] = c;
    }
}

/* cv2(x[E]) = var / (mean^2 + CV_EPS), var unbiased; with grad, its gradient times `scale`
 *   d cv2 / d x_e = 2 (x_e - mean) / ((E - 1) S) - var 2 mean / (E S^2),  S = mean^2 + CV_EPS.
 * E >= 2; the CPU's loops and order. */
static __device__ double cv_squared(const double *x, int E, double scale, float *grad) {
    double mean = 0.0, var = 0.0;
    for (int e = 0; e < E; e++) mean += x[e];
    mean /= E;
    for (int e = 0; e < E; e++) var += (x[e] - mean) * (x[e] - mean);
    var /= E - 1;
    double S = mean * mean + CV_EPS;
    if (grad)
        for (int e = 0; e < E; e++)
            grad[e] = (float)(scale * (2.0 * (x[e] - mean) / ((E - 1) * S) -
                                       var * 2.0 * mean / (E * S * S)));
    return var / S;
}

/* One thread: *loss = weight (cv2(imp) + cv2(load)), dimp[E] = weight d cv2(imp) / d imp;
 * 0 and 0 with one expert (torch.var of one value is NaN; M3ViT's cv_squared returns 0). */
static __global__ void __launch_bounds__(1)
    balance_loss_kernel(float *loss, float *dimp, const double *imp, const double *load, int E,
                        float weight) {
    if (E < 2) {
        dimp[0] = 0.0f;
        *loss = 0.0f;
        return;
    }
    double L = cv_squared(imp, E, weight, dimp) + cv_squared(load, E, 0.0, NULL);
    *loss = (float)(weight * L);
}

static void cuda_balance_loss(ms_backend *be, float *loss, float *dimp, const float *gate,
                              const int32_t *idx, int M, int E, int K, float weight) {
    MS_ASSERT(E >= 1 && M >= 0 && K >= 0);
    cudaStream_t st = cuda_stream(be);
    double *imp = (double *)cuda_scratch(be, SCRATCH_REDUCE, 2 * (size_t)E * sizeof(double));
    double *load = imp + E; /* imp[E], load[E] */
    MS_LAUNCH(balance_stats_kernel, E, BAL_THREADS, 0, st, imp, load, gate, idx, (size_t)M * K);
    MS_LAUNCH(balance_loss_kernel, 1, 1, 0, st, loss, dimp, imp, load, E, weight);
}

/* dgate[p] += dimp[idx[p]] over the R = M K pairs (idx from route: within [0, E)). */
static __global__ void __launch_bounds__(BAL_THREADS, 4)
    balance_loss_bwd_kernel(float *dgate, const float *dimp, const int32_t *idx, size_t R) {
    for (size_t p = (size_t)blockIdx.x * BAL_THREADS + threadIdx.x; p < R;
         p += (size_t)gridDim.x * BAL_THREADS)
        dgate[p] += dimp[idx[p]];
}

static void cuda_balance_loss_bwd(ms_backend *be, float *dgate, const float *dimp,
                                  const int32_t *idx, int M, int K) {
    size_t R = (size_t)M * K;
    unsigned blocks = cdiv(R, BAL_THREADS);
    if (R)
        MS_LAUNCH(balance_loss_bwd_kernel, blocks < 65536 ? blocks : 65536, BAL_THREADS, 0,
                  cuda_stream(be), dgate, dimp, idx, R);
}

/* ---- task-conditioned router ----------------------------------------------------------------- */

/* bias[e] = w[e, :] . v (double); warp w of block b takes expert 4 b + w. */
static __global__ void __launch_bounds__(AUX_THREADS, 8)
    router_task_bias_kernel(float *bias, const float *w, const float *v, int E, int D) {
    int lane = threadIdx.x & 31;
    int e = blockIdx.x * AUX_WARPS + (threadIdx.x >> 5);
    if (e >= E) return;
    const float *we = w + (size_t)e * D;
    double acc = 0.0;
    for (int d = lane; d < D; d += 32) acc += (double)we[d] * v[d];
    acc = warp_sum(acc);
    if (lane == 0) bias[e] = (float)acc;
}

/* Thread d: dw[e, d] += dbias[e] v[d] for every e, dv[d] += sum_e w[e, d] dbias[e] (double, e
 * in order). */
static __global__ void __launch_bounds__(BAL_THREADS, 4)
    router_task_bias_bwd_kernel(float *dw, float *dv, const float *dbias, const float *w,
                                const float *v, int E, int D) {
    int d = blockIdx.x * BAL_THREADS + threadIdx.x;
    if (d >= D) return;
    float vd = v[d];
    double acc = 0.0;
    for (int e = 0; e < E; e++) {
        size_t i = (size_t)e * D + d;
        dw[i] += dbias[e] * vd;
        acc += (double)w[i] * dbias[e];
    }
    dv[d] += (float)acc;
}

static void cuda_router_task_bias(ms_backend *be, float *bias, const float *w, const float *v,
                                  int E, int D) {
    if (E > 0)
        MS_LAUNCH(router_task_bias_kernel, cdiv((size_t)E, AUX_WARPS), AUX_THREADS, 0,
                  cuda_stream(be), bias, w, v, E, D);
}

static void cuda_router_task_bias_bwd(ms_backend *be, float *dw, float *dv, const float *dbias,
                                      const float *w, const float *v, int E, int D) {
    if (E > 0 && D > 0)
        MS_LAUNCH(router_task_bias_bwd_kernel, cdiv((size_t)D, BAL_THREADS), BAL_THREADS, 0,
                  cuda_stream(be), dw, dv, dbias, w, v, E, D);
}

void cuda_register_moe_aux(ms_backend *be) {
    be->noisy_logits = cuda_noisy_logits;
    be->noisy_logits_bwd = cuda_noisy_logits_bwd;
    be->balance_loss = cuda_balance_loss;
    be->balance_loss_bwd = cuda_balance_loss_bwd;
    be->router_task_bias = cuda_router_task_bias;
    be->router_task_bias_bwd = cuda_router_task_bias_bwd;
}
