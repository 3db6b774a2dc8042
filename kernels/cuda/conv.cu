/* The PASCAL-Context convolution head on the GPU (semantics of kernels/cpu/conv.c): conv2d
 * through cuDNN (dnn.cu), BatchNorm2d, ReLU and bilinear x2 upsampling as kernels of our own.
 *
 * conv2d. A bias is seeded into y by a kernel and cuDNN adds the convolution onto it (beta = 1),
 * as the CPU seeds y before its GEMM. Weights are fp32 in the interface; with bf16 activations
 * the convolution takes a bf16 copy (cuda_weights_as_act, as the GEMMs do), because cuDNN wants
 * x, w and y of one type. The bias gradient is a per-channel double sum (below). The filter
 * gradient accumulates straight into dw with fp32 activations (cuDNN beta = 1). With bf16
 * activations cuDNN writes it as bf16 (x, dy and dw share one type there) into SCRATCH_CONV and
 * a kernel adds it to the fp32 gradient: cuDNN sums in fp32 and only the result is rounded, the
 * same bf16 weight gradient PyTorch's autocast produces through its bf16 weight copy. col_ws is
 * not used: cuDNN needs no im2col buffer of ours and takes its workspace from SCRATCH_CUDNN.
 *
 * BatchNorm is written here rather than called through cudnnBatchNormalization* (deprecated in
 * cuDNN 9 in favour of its graph API). cuDNN's conventions do agree with ours: it saves the mean
 * and 1/sqrt(biased var + eps), updates the running statistics with exponentialAverageFactor =
 * momentum and the unbiased variance, and its parameter gradients could accumulate through
 * betaParamDiff = 1. But our contract differs where it matters: the backward may skip dx (dx
 * NULL; cuDNN always writes it), a channel with a single value keeps the biased variance (cuDNN
 * would divide by n - 1 = 0), and the CPU reduces in double where cuDNN's reduction order (and
 * the determinism of its backward) is not documented. It is also memory-bound work that a plain
 * kernel does at bandwidth (docs/kernels.md), and our kernels run for real under tests/simt,
 * where a cuDNN stand-in could only check itself.
 *
 * Per-channel sums (BatchNorm statistics, its backward, the conv bias gradient) over x[B, C, P]
 * are two-level and free of atomics: block (c, s) sums slice s of channel c's pixels over every
 * image in double (each thread in a fixed order, then block_sum), writing part[c, s]; then one
 * thread per channel adds its S partials in order. S depends on P only, so the result is the
 * same on every run and GPU. The forward statistics are the moments of d = x - x[0, c, 0] in one
 * pass: var = E[d^2] - E[d]^2 in double does not cancel badly once the shift has removed the
 * mean (the CPU's two passes give the same to well below fp32 resolution).
 *
 * Upsampling follows PyTorch's bilinear, align_corners=False: each output reads 2 x 2 inputs
 * (up_src); the backward is a gather, every input pixel summing its (at most 4 x 4) outputs in
 * the CPU's order (rows, then columns), so no atomics. */
#include "cuda_common.h"

#define CONV_THREADS 256       /* every kernel: one-dimensional blocks */
#define CHAN_SLICE_PIXELS 4096 /* pixels of one channel slice (per image) */
#define CHAN_MAX_SLICES 64
#define PLANE_CHUNK (CONV_THREADS * 4) /* pixels of one (image, channel) plane per block */
#define PLANE_MAX_CHUNKS 65535         /* gridDim.y */
#define UP_SPAN 6 /* outputs that may read input i along an axis: [2i - 2, 2i + 3] */

#define GRID_STRIDE(i, n)                                                                          \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                        \
         i += (size_t)gridDim.x * blockDim.x)

/* Two double sums of one channel (slice). */
struct chan_sums {
    double a, b;
};

/* Blocks of a grid-stride loop over n elements. */
static unsigned conv_grid(size_t n) {
    unsigned blocks = cdiv(n, CONV_THREADS);
    return blocks < 65536 ? blocks : 65536;
}

/* Grid of the per-plane kernels over x[B, C, P]: x = plane (b, c), y = chunk of P. */
static dim3 plane_grid(int B, int C, int P) {
    unsigned chunks = cdiv((size_t)P, PLANE_CHUNK);
    if (chunks > PLANE_MAX_CHUNKS)
        ms_fatal("CUDA backend: a feature map of %d pixels; the conv head supports up to %d", P,
                 PLANE_MAX_CHUNKS * PLANE_CHUNK);
    return dim3((unsigned)((size_t)B * C), chunks);
}

/* Loops p over this block's chunk of its plane's P pixels, one pixel per thread and step. */
#define PLANE_PIXELS(p, P)                                                                         \
    for (int p = (int)blockIdx.y * PLANE_CHUNK + (int)threadIdx.x,                                 \
             p##_end = min((P), ((int)blockIdx.y + 1) * PLANE_CHUNK);                              \
         p < p##_end; p += CONV_THREADS)

/* Slices per channel for P pixels, and their width. */
static int chan_slices(int P) {
    int s = (int)cdiv((size_t)P, CHAN_SLICE_PIXELS);
    return s < CHAN_MAX_SLICES ? s : CHAN_MAX_SLICES;
}

/* ---- per-channel reductions ------------------------------------------------------------------ */

/* part[c, s] = {sum d, sum d^2} with d = x - x[0, c, 0], over the pixels [s span, (s+1) span)
 * of channel c in every image. Grid (C, S). */
template <typename T>
__global__ void __launch_bounds__(CONV_THREADS)
    channel_moments_kernel(chan_sums *part, const T *x, int B, int C, int P, int span) {
    int c = blockIdx.x, s = blockIdx.y;
    int p0 = s * span, p1 = min(P, p0 + span);
    double shift = ld(x[(size_t)c * P]), s1 = 0.0, s2 = 0.0;
    for (int b = 0; b < B; b++) {
        const T *xc = x + ((size_t)b * C + c) * P; /* [P] */
        for (int p = p0 + (int)threadIdx.x; p < p1; p += CONV_THREADS) {
            double d = (double)ld(xc[p]) - shift;
            s1 += d;
            s2 += d * d;
        }
    }
    s1 = block_sum(s1);
    s2 = block_sum(s2);
    if (threadIdx.x == 0) part[(size_t)c * gridDim.y + s] = chan_sums{s1, s2};
}

/* part[c, s] = {sum dy, sum dy xhat} over slice s of channel c, xhat = (x - mean) rstd; with x
 * NULL only sum dy (mean and rstd unused). Grid (C, S). */
template <typename T>
__global__ void __launch_bounds__(CONV_THREADS)
    channel_grad_sums_kernel(chan_sums *part, const T *dy, const T *x, const float *mean,
                             const float *rstd, int B, int C, int P, int span) {
    int c = blockIdx.x, s = blockIdx.y;
    int p0 = s * span, p1 = min(P, p0 + span);
    double m = x ? (double)mean[c] : 0.0, rs = x ? (double)rstd[c] : 0.0, s1 = 0.0, s2 = 0.0;
    for (int b = 0; b < B; b++) {
        size_t at = ((size_t)b * C + c) * P;
        for (int p = p0 + (int)threadIdx.x; p < p1; p += CONV_THREADS) {
            double g = ld(dy[at + p]);
            s1 += g;
            if (x) s2 += g * (((double)ld(x[at + p]) - m) * rs);
        }
    }
    s1 = block_sum(s1);
    s2 = block_sum(s2);
    if (threadIdx.x == 0) part[(size_t)c * gridDim.y + s] = chan_sums{s1, s2};
}

/* Adds the S slices of channel c in order. */
__device__ __forceinline__ chan_sums channel_total(const chan_sums *part, int c, int S) {
    chan_sums t = {0.0, 0.0};
    for (int s = 0; s < S; s++) {
        t.a += part[(size_t)c * S + s].a;
        t.b += part[(size_t)c * S + s].b;
    }
    return t;
}

/* BatchNorm statistics of channel c from its moments over n = B*P values: mean, rstd =
 * 1/sqrt(biased var + eps), and the running statistics updated with momentum (unbiased
 * variance; the biased one when n = 1, as the CPU). One thread per channel. */
template <typename T>
__global__ void __launch_bounds__(CONV_THREADS)
    bn_stats_kernel(float *mean, float *rstd, float *running_mean, float *running_var,
                    const chan_sums *part, const T *x, int S, int C, int P, double n, float eps,
                    float momentum) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    chan_sums t = channel_total(part, c, S);
    double m1 = t.a / n, var = t.b / n - m1 * m1;
    if (var < 0.0) var = 0.0; /* rounding of an all-equal channel */
    double mu = (double)ld(x[(size_t)c * P]) + m1, rs = 1.0 / sqrt(var + (double)eps);
    double var_unbiased = n > 1.0 ? var * n / (n - 1.0) : var;
    mean[c] = (float)mu;
    rstd[c] = (float)rs;
    running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * mu);
    running_var[c] = (float)((1.0 - momentum) * running_var[c] + momentum * var_unbiased);
}

/* dsum[c] += sum dy (dbeta, or a conv bias gradient); dgamma[c] += sum dy xhat (NULL: skipped);
 * coef[c] = the two sums / n for the dx kernel (NULL: skipped). One thread per channel. */
__global__ void __launch_bounds__(CONV_THREADS)
    grad_finalize_kernel(float *dsum, float *dgamma, chan_sums *coef, const chan_sums *part, int S,
                         int C, double n) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    chan_sums t = channel_total(part, c, S);
    dsum[c] += (float)t.a;
    if (dgamma) dgamma[c] += (float)t.b;
    if (coef) coef[c] = chan_sums{t.a / n, t.b / n};
}

/* ---- per-plane kernels: grid (B*C planes, chunks of P) --------------------------------------- */

/* y[b, c, :] = bias[c]: the convolution then adds onto it. */
template <typename T>
__global__ void __launch_bounds__(CONV_THREADS)
    conv_bias_fill_kernel(T *y, const float *bias, int C, int P) {
    float v = bias[blockIdx.x % C];
    T *yp = y + (size_t)blockIdx.x * P;
    PLANE_PIXELS(p, P) st(&yp[p], v);
}

/* y = (x - m) scale + beta[c]: training with the batch statistics (rstd given, scale =
 * rstd gamma), or evaluation with the running ones (rstd NULL: m = running mean, scale =
 * gamma / sqrt(running var + eps)). */
template <typename T>
__global__ void __launch_bounds__(CONV_THREADS)
    bn_apply_kernel(T *y, const T *x, const float *mean, const float *rstd, const float *var,
                    const float *gamma, const float *beta, int C, int P, float eps) {
    int c = blockIdx.x % C;
    float m = mean[c], shift = beta[c];
    float scale = rstd ? (float)((double)rstd[c] * gamma[c])
                       : (float)(gamma[c] / sqrt((double)var[c] + (double)eps));
    size_t at = (size_t)blockIdx.x * P;
    PLANE_PIXELS(p, P) st(&y[at + p], (ld(x[at + p]) - m) * scale + shift);
}

/* dx = gamma rstd (dy - sum(dy)/n - xhat sum(dy xhat)/n), in double as the CPU. */
template <typename T>
__global__ void __launch_bounds__(CONV_THREADS)
    bn_dx_kernel(T *dx, const T *dy, const T *x, const float *mean, const float *rstd,
                 const float *gamma, const chan_sums *coef, int C, int P) {
    int c = blockIdx.x % C;
    double m = mean[c], rs = rstd[c], k = (double)gamma[c] * rs, a = coef[c].a, g = coef[c].b;
    size_t at = (size_t)blockIdx.x * P;
    PLANE_PIXELS(p, P) {
        double xhat = ((double)ld(x[at + p]) - m) * rs;
        st(&dx[at + p], (float)(k * ((double)ld(dy[at + p]) - a - xhat * g)));
    }
}

/* ---- elementwise ----------------------------------------------------------------------------- */

/* dst[i] += src[i]: a bf16 filter gradient into the fp32 gradient buffer. */
__global__ void __launch_bounds__(CONV_THREADS)
    add_bf16_to_f32_kernel(float *dst, const bf16 *src, size_t n) {
    GRID_STRIDE(i, n) dst[i] += __bfloat162float(src[i]);
}

/* NaN propagates (x < 0 is false for NaN), as torch.relu. */
template <typename T>
__global__ void __launch_bounds__(CONV_THREADS) relu_kernel(T *y, const T *x, size_t n) {
    GRID_STRIDE(i, n) {
        float v = ld(x[i]);
        st(&y[i], v < 0.0f ? 0.0f : v);
    }
}

/* From the output, as PyTorch's threshold_backward: the gradient passes where y > 0. */
template <typename T>
__global__ void __launch_bounds__(CONV_THREADS)
    relu_bwd_kernel(T *dx, const T *dy, const T *y, size_t n) {
    GRID_STRIDE(i, n) st(&dx[i], ld(y[i]) > 0.0f ? ld(dy[i]) : 0.0f);
}

/* ---- bilinear x2 upsampling ------------------------------------------------------------------ */

/* Source taps of output o along an axis of n inputs (align_corners=False, scale 2):
 * src = (o + 0.5) / 2 - 0.5 clamped below at 0, i0 = floor(src), i1 = min(i0 + 1, n - 1),
 * weights l0 = 1 - (src - i0), l1 = src - i0 (exactly 0, 0.25, 0.75 or 1). */
struct up_tap {
    int i0, i1;
    float l0, l1;
};

__device__ __forceinline__ up_tap up_src(int o, int n) {
    float src = 0.5f * ((float)o + 0.5f) - 0.5f;
    if (src < 0.0f) src = 0.0f;
    up_tap t;
    t.i0 = (int)src;
    t.i1 = t.i0 < n - 1 ? t.i0 + 1 : t.i0;
    t.l1 = src - (float)t.i0;
    t.l0 = 1.0f - t.l1;
    return t;
}

/* Weight of input i in output o (at the clamped edge both taps may name i); 0 outside [0, 2n). */
__device__ __forceinline__ float up_weight(int o, int i, int n) {
    if (o < 0 || o >= 2 * n) return 0.0f;
    up_tap t = up_src(o, n);
    return (t.i0 == i ? t.l0 : 0.0f) + (t.i1 == i ? t.l1 : 0.0f);
}

/* y[pl, 2H, 2W] from x[pl, H, W], one thread per output. */
template <typename T>
__global__ void __launch_bounds__(CONV_THREADS)
    upsample2x_kernel(T *y, const T *x, int H, int W, size_t n) {
    const int Ho = 2 * H, Wo = 2 * W;
    GRID_STRIDE(i, n) {
        int ox = (int)(i % (size_t)Wo);
        size_t row = i / (size_t)Wo;
        int oy = (int)(row % (size_t)Ho);
        const T *xp = x + row / (size_t)Ho * H * W; /* [H, W] */
        up_tap ty = up_src(oy, H), tx = up_src(ox, W);
        const T *r0 = xp + (size_t)ty.i0 * W, *r1 = xp + (size_t)ty.i1 * W;
        st(&y[i], ty.l0 * (tx.l0 * ld(r0[tx.i0]) + tx.l1 * ld(r0[tx.i1])) +
                      ty.l1 * (tx.l0 * ld(r1[tx.i0]) + tx.l1 * ld(r1[tx.i1])));
    }
}

/* dx[pl, i, j] = sum_q wx(q, j) sum_o wy(o, i) dy[pl, o, q] over o in [2i-2, 2i+3] and q in
 * [2j-2, 2j+3], one thread per input pixel, rows combined first as on the CPU. */
template <typename T>
__global__ void __launch_bounds__(CONV_THREADS)
    upsample2x_bwd_kernel(T *dx, const T *dy, int H, int W, size_t n) {
    const int Wo = 2 * W;
    GRID_STRIDE(idx, n) {
        int j = (int)(idx % (size_t)W);
        size_t row = idx / (size_t)W;
        int i = (int)(row % (size_t)H);
        const T *dyp = dy + row / (size_t)H * 4 * H * W; /* [2H, 2W] */
        float wy[UP_SPAN], wx[UP_SPAN];
#pragma unroll
        for (int s = 0; s < UP_SPAN; s++) {
            wy[s] = up_weight(2 * i - 2 + s, i, H);
            wx[s] = up_weight(2 * j - 2 + s, j, W);
        }
        float acc = 0.0f;
#pragma unroll
        for (int sq = 0; sq < UP_SPAN; sq++) {
            if (wx[sq] == 0.0f) continue;
            const T *col = dyp + (2 * j - 2 + sq);
            float rowsum = 0.0f;
#pragma unroll
            for (int so = 0; so < UP_SPAN; so++)
                if (wy[so] != 0.0f) rowsum += wy[so] * ld(col[(size_t)(2 * i - 2 + so) * Wo]);
            acc += wx[sq] * rowsum;
        }
        st(&dx[idx], acc);
    }
}

/* ---- conv2d ---------------------------------------------------------------------------------- */

template <typename T>
static void bias_fill_t(ms_backend *be, ms_act *y, const float *b, int B, int Co, int P) {
    MS_LAUNCH(conv_bias_fill_kernel<T>, plane_grid(B, Co, P), CONV_THREADS, 0, cuda_stream(be),
              (T *)y, b, Co, P);
}

static void cuda_conv2d(ms_backend *be, ms_act *y, const ms_act *x, const float *w, const float *b,
                        int B, int Ci, int H, int W, int Co, int k, ms_act *col_ws) {
    (void)col_ws;
    if (B <= 0 || H <= 0 || W <= 0 || Co <= 0) return;
    const void *wa = cuda_weights_as_act(be, w, (size_t)Co * Ci * k * k); /* [Co, Ci, k, k] */
    if (b) ACT_DISPATCH(be, bias_fill_t, be, y, b, B, Co, H * W);
    cuda_conv_fwd(be, y, b ? 1.0f : 0.0f, x, wa, B, Ci, H, W, Co, k);
}

/* part[C, S] of channel slices for x[B, C, P]: the scratch holds C * (S + extra) chan_sums. */
static chan_sums *channel_scratch(ms_backend *be, int C, int S, int extra) {
    return (chan_sums *)cuda_scratch(be, SCRATCH_CONV, (size_t)C * (S + extra) * sizeof(chan_sums));
}

template <typename T>
static void channel_grad_sums_t(ms_backend *be, chan_sums *part, const ms_act *dy, const ms_act *x,
                                const float *mean, const float *rstd, int B, int C, int P, int S) {
    int span = (int)cdiv((size_t)P, (unsigned)S);
    MS_LAUNCH(channel_grad_sums_kernel<T>, dim3((unsigned)C, (unsigned)S), CONV_THREADS, 0,
              cuda_stream(be), part, (const T *)dy, (const T *)x, mean, rstd, B, C, P, span);
}

static void cuda_conv2d_bwd(ms_backend *be, ms_act *dx, float *dw, float *db, const ms_act *dy,
                            const ms_act *x, const float *w, int B, int Ci, int H, int W, int Co,
                            int k, ms_act *col_ws) {
    (void)col_ws;
    if (B <= 0 || H <= 0 || W <= 0 || Co <= 0) return;
    const int P = H * W, S = chan_slices(P);
    const size_t nw = (size_t)Co * Ci * k * k;
    if (db) {
        chan_sums *part = channel_scratch(be, Co, S, 0); /* [Co, S] */
        ACT_DISPATCH(be, channel_grad_sums_t, be, part, dy, nullptr, nullptr, nullptr, B, Co, P, S);
        MS_LAUNCH(grad_finalize_kernel, cdiv((size_t)Co, CONV_THREADS), CONV_THREADS, 0,
                  cuda_stream(be), db, nullptr, nullptr, part, S, Co, (double)B * P);
    }
    if (be->act_dtype == MS_F32) {
        cuda_conv_bwd_filter(be, dw, 1.0f, dy, x, B, Ci, H, W, Co, k);
    } else {
        bf16 *dw_act = (bf16 *)cuda_scratch(be, SCRATCH_CONV, nw * sizeof(bf16)); /* [nw] */
        cuda_conv_bwd_filter(be, dw_act, 0.0f, dy, x, B, Ci, H, W, Co, k);
        MS_LAUNCH(add_bf16_to_f32_kernel, conv_grid(nw), CONV_THREADS, 0, cuda_stream(be), dw,
                  dw_act, nw);
    }
    if (dx) cuda_conv_bwd_data(be, dx, dy, cuda_weights_as_act(be, w, nw), B, Ci, H, W, Co, k);
}

/* ---- BatchNorm2d ----------------------------------------------------------------------------- */

template <typename T>
static void bn_train_t(ms_backend *be, ms_act *y, float *mean, float *rstd, float *running_mean,
                       float *running_var, const ms_act *x, const float *gamma, const float *beta,
                       int B, int C, int P, float eps, float momentum) {
    const int S = chan_slices(P), span = (int)cdiv((size_t)P, (unsigned)S);
    chan_sums *part = channel_scratch(be, C, S, 0); /* [C, S] */
    cudaStream_t stream = cuda_stream(be);
    MS_LAUNCH(channel_moments_kernel<T>, dim3((unsigned)C, (unsigned)S), CONV_THREADS, 0, stream,
              part, (const T *)x, B, C, P, span);
    MS_LAUNCH(bn_stats_kernel<T>, cdiv((size_t)C, CONV_THREADS), CONV_THREADS, 0, stream, mean,
              rstd, running_mean, running_var, part, (const T *)x, S, C, P, (double)B * P, eps,
              momentum);
    MS_LAUNCH(bn_apply_kernel<T>, plane_grid(B, C, P), CONV_THREADS, 0, stream, (T *)y,
              (const T *)x, mean, rstd, nullptr, gamma, beta, C, P, eps);
}

static void cuda_batchnorm_train(ms_backend *be, ms_act *y, float *mean, float *rstd,
                                 float *running_mean, float *running_var, const ms_act *x,
                                 const float *gamma, const float *beta, int B, int C, int P,
                                 float eps, float momentum) {
    if (B > 0 && C > 0 && P > 0)
        ACT_DISPATCH(be, bn_train_t, be, y, mean, rstd, running_mean, running_var, x, gamma, beta,
                     B, C, P, eps, momentum);
}

template <typename T>
static void bn_eval_t(ms_backend *be, ms_act *y, const ms_act *x, const float *running_mean,
                      const float *running_var, const float *gamma, const float *beta, int B, int C,
                      int P, float eps) {
    MS_LAUNCH(bn_apply_kernel<T>, plane_grid(B, C, P), CONV_THREADS, 0, cuda_stream(be), (T *)y,
              (const T *)x, running_mean, nullptr, running_var, gamma, beta, C, P, eps);
}

static void cuda_batchnorm_eval(ms_backend *be, ms_act *y, const ms_act *x,
                                const float *running_mean, const float *running_var,
                                const float *gamma, const float *beta, int B, int C, int P,
                                float eps) {
    if (B > 0 && C > 0 && P > 0)
        ACT_DISPATCH(be, bn_eval_t, be, y, x, running_mean, running_var, gamma, beta, B, C, P, eps);
}

template <typename T>
static void bn_dx_t(ms_backend *be, ms_act *dx, const ms_act *dy, const ms_act *x,
                    const float *mean, const float *rstd, const float *gamma, const chan_sums *coef,
                    int B, int C, int P) {
    MS_LAUNCH(bn_dx_kernel<T>, plane_grid(B, C, P), CONV_THREADS, 0, cuda_stream(be), (T *)dx,
              (const T *)dy, (const T *)x, mean, rstd, gamma, coef, C, P);
}

/* Backward of the training forward: dbeta, dgamma accumulated; dx written (NULL: skipped). */
static void cuda_batchnorm_bwd(ms_backend *be, ms_act *dx, float *dgamma, float *dbeta,
                               const ms_act *dy, const ms_act *x, const float *mean,
                               const float *rstd, const float *gamma, int B, int C, int P) {
    if (B <= 0 || C <= 0 || P <= 0) return;
    const int S = chan_slices(P);
    chan_sums *part = channel_scratch(be, C, S, 1); /* [C, S], then coef[C] */
    chan_sums *coef = part + (size_t)C * S;
    ACT_DISPATCH(be, channel_grad_sums_t, be, part, dy, x, mean, rstd, B, C, P, S);
    MS_LAUNCH(grad_finalize_kernel, cdiv((size_t)C, CONV_THREADS), CONV_THREADS, 0, cuda_stream(be),
              dbeta, dgamma, dx ? coef : nullptr, part, S, C, (double)B * P);
    if (dx) ACT_DISPATCH(be, bn_dx_t, be, dx, dy, x, mean, rstd, gamma, coef, B, C, P);
}

/* ---- ReLU and upsampling --------------------------------------------------------------------- */

template <typename T>
static void relu_t(ms_backend *be, ms_act *y, const ms_act *x, size_t n) {
    MS_LAUNCH(relu_kernel<T>, conv_grid(n), CONV_THREADS, 0, cuda_stream(be), (T *)y, (const T *)x,
              n);
}

static void cuda_relu(ms_backend *be, ms_act *y, const ms_act *x, size_t n) {
    if (n) ACT_DISPATCH(be, relu_t, be, y, x, n);
}

template <typename T>
static void relu_bwd_t(ms_backend *be, ms_act *dx, const ms_act *dy, const ms_act *y, size_t n) {
    MS_LAUNCH(relu_bwd_kernel<T>, conv_grid(n), CONV_THREADS, 0, cuda_stream(be), (T *)dx,
              (const T *)dy, (const T *)y, n);
}

static void cuda_relu_bwd(ms_backend *be, ms_act *dx, const ms_act *dy, const ms_act *y, size_t n) {
    if (n) ACT_DISPATCH(be, relu_bwd_t, be, dx, dy, y, n);
}

template <typename T>
static void upsample_t(ms_backend *be, ms_act *y, const ms_act *x, int BC, int H, int W) {
    size_t n = (size_t)BC * 4 * H * W;
    MS_LAUNCH(upsample2x_kernel<T>, conv_grid(n), CONV_THREADS, 0, cuda_stream(be), (T *)y,
              (const T *)x, H, W, n);
}

static void cuda_upsample2x(ms_backend *be, ms_act *y, const ms_act *x, int BC, int H, int W) {
    if (BC > 0 && H > 0 && W > 0) ACT_DISPATCH(be, upsample_t, be, y, x, BC, H, W);
}

template <typename T>
static void upsample_bwd_t(ms_backend *be, ms_act *dx, const ms_act *dy, int BC, int H, int W) {
    size_t n = (size_t)BC * H * W;
    MS_LAUNCH(upsample2x_bwd_kernel<T>, conv_grid(n), CONV_THREADS, 0, cuda_stream(be), (T *)dx,
              (const T *)dy, H, W, n);
}

static void cuda_upsample2x_bwd(ms_backend *be, ms_act *dx, const ms_act *dy, int BC, int H,
                                int W) {
    if (BC > 0 && H > 0 && W > 0) ACT_DISPATCH(be, upsample_bwd_t, be, dx, dy, BC, H, W);
}

void cuda_register_conv(ms_backend *be) {
    be->conv2d = cuda_conv2d;
    be->conv2d_bwd = cuda_conv2d_bwd;
    be->batchnorm_train = cuda_batchnorm_train;
    be->batchnorm_eval = cuda_batchnorm_eval;
    be->batchnorm_bwd = cuda_batchnorm_bwd;
    be->relu = cuda_relu;
    be->relu_bwd = cuda_relu_bwd;
    be->upsample2x = cuda_upsample2x;
    be->upsample2x_bwd = cuda_upsample2x_bwd;
}
