/* Task losses on the GPU: masked L1 and MSE, 1 - cosine, cross-entropy with an ignore label,
 * balanced binary cross-entropy, learned uncertainty and fixed task weighting, and the channel
 * L2 normalisation of the PASCAL normals loss.
 *
 * Semantics are those of kernels/cpu/losses.c (its comments give the sources and the choices:
 * COS_EPS, which labels count, the balanced-BCE weight); the simt tests compare every op here
 * with it. Each loss is a mean over its valid elements, 0 with none valid, and so is its
 * gradient. Device scalars: *loss is written by a kernel, *dloss is read by a kernel, never by
 * the host, so no op here synchronises the stream.
 *
 * Reductions. A loss is two launches: a grid-stride kernel of at most RED_MAX_BLOCKS blocks sums
 * its terms and counts in double per thread, reduces them over the block (block_sum) and writes
 * one partial per block and statistic into scratch; one block then adds the partials in block
 * order and writes the scalar. The grid depends only on the shape, so results are bit-identical
 * run to run (never float atomics). A backward first reduces the count of valid elements the
 * same way into a device double, scale = dloss / count, and then writes the gradient
 * elementwise, each element by one thread.
 *
 * Precision: exp, softplus and sigmoid in fp32 (as the CPU's cross-entropy; its double
 * elsewhere adds nothing at fp32 output precision), differences, the per-pixel channel sums
 * (cosine, CE's sum of exponentials, L2 norms) and every sum over pixels in double. bf16
 * activations are loaded as fp32 and each gradient is rounded once.
 *
 * Layout: pred / logits [B, C, P], channel c of pixel (b, p) at (b C + c) P + p, so a thread per
 * pixel that loops over the channels reads coalesced rows. */
#include "cuda_common.h"

#define RED_THREADS 256
#define RED_MAX_BLOCKS 1024 /* about one wave of 256-thread blocks on an H100 (132 SMs x 8) */
#define RED_STATS 4         /* partial sums one reduction keeps per block, at most (BCE: 4) */
/* Blocks per SM every kernel here must fit: a budget of 64 registers a thread. Without it ptxas
 * aims some of these loops at 32 registers and spills around the slow-path calls of double
 * division and square root; the channel loops are kept rolled (`#pragma unroll 1`: C is 1 to 3
 * mostly, 21 at most) so they stay far below 64 and the occupancy high. */
#define RED_MIN_BLOCKS 4
#define EW_MAX_BLOCKS 65536 /* grid cap of the elementwise backward kernels */
#define BCE_IGNORE 255      /* label of an ignored pixel in the balanced BCE */
#define COS_EPS 1e-8        /* norms are sqrt(|v|^2 + COS_EPS^2), as kernels/cpu/losses.c */

/* ---- reduction plumbing ---------------------------------------------------------------------- */

/* Scratch of every reduction here: part[RED_STATS][blocks] then result[RED_STATS]. Always the
 * full size, so the slot is allocated once and never regrows. */
struct reduce_ws {
    double *part;   /* [RED_STATS, nb]: statistic s of block i at s * nb + i */
    double *result; /* [RED_STATS]: scales read by a backward kernel */
};

static reduce_ws reduce_scratch(ms_backend *be) {
    size_t n = (size_t)RED_STATS * RED_MAX_BLOCKS + RED_STATS;
    double *p = (double *)cuda_scratch(be, SCRATCH_REDUCE, n * sizeof(double));
    return {p, p + (size_t)RED_STATS * RED_MAX_BLOCKS};
}

/* Blocks of a reduction over `units` work items (> 0), one per thread until the cap. */
static int red_grid(size_t units) {
    unsigned b = cdiv(units, RED_THREADS);
    return (int)(b < RED_MAX_BLOCKS ? b : RED_MAX_BLOCKS);
}

static int blocks_of(dim3 g) { return (int)(g.x * g.y); }

static unsigned ew_grid(size_t units) {
    unsigned b = cdiv(units, RED_THREADS);
    return b < EW_MAX_BLOCKS ? b : EW_MAX_BLOCKS;
}

/* Block partial of statistic `stat`: the block's sum of v goes to part[stat * nb + block], the
 * blocks (nb of them) numbered row by row. */
static __device__ __forceinline__ void store_partial(double *part, int stat, double v) {
    v = block_sum(v);
    size_t nb = (size_t)gridDim.x * gridDim.y;
    if (threadIdx.x == 0) part[stat * nb + (size_t)blockIdx.y * gridDim.x + blockIdx.x] = v;
}

/* Sum of statistic `stat` over nb block partials, in block order within each thread and then
 * block_sum's fixed order; every thread of the (single) block gets it. */
static __device__ __forceinline__ double sum_partials(const double *part, int stat, int nb) {
    double s = 0.0;
    for (int i = threadIdx.x; i < nb; i += blockDim.x) s += part[(size_t)stat * nb + i];
    return block_sum(s);
}

#define GRID_STRIDE(i, n)                                                                          \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                        \
         i += (size_t)gridDim.x * blockDim.x)

/* Pixels (b, p) of [B, P]: grid rows over the images, a grid-stride loop over the pixels of
 * each, so no thread divides a flat index (an integer division is a subroutine call in SASS). */
#define FOR_PIXELS(b, p, B, P)                                                                     \
    for (size_t b = blockIdx.y; b < (size_t)(B); b += gridDim.y)                                   \
        for (size_t p = (size_t)blockIdx.x * blockDim.x + threadIdx.x; p < (size_t)(P);            \
             p += (size_t)gridDim.x * blockDim.x)

/* Grid of a FOR_PIXELS kernel: a row of blocks per image (up to the grid's y limit) and enough
 * columns to cover P, at most `cap` blocks in all. */
static dim3 pixel_grid(int B, int P, unsigned cap) {
    unsigned rows = (unsigned)B < cap ? (unsigned)B : cap;
    if (rows > 65535) rows = 65535;
    unsigned cols = cdiv((size_t)P, RED_THREADS), room = cap / rows;
    return dim3(cols < room ? cols : room, rows);
}

/* *loss = count ? sum / count : 0 from the partials of statistic 0 (sum) and 1 (count). */
static __global__ void __launch_bounds__(RED_THREADS, RED_MIN_BLOCKS)
    mean_finish_kernel(float *loss, const double *part, int nb) {
    double sum = sum_partials(part, 0, nb), count = sum_partials(part, 1, nb);
    if (threadIdx.x == 0) *loss = count > 0.0 ? (float)(sum / count) : 0.0f;
}

/* *scale = count ? dloss / count * mult : 0, the count being statistic 0 of the partials times
 * count_mult, or known_count when part is NULL (nothing masked). */
static __global__ void __launch_bounds__(RED_THREADS, RED_MIN_BLOCKS)
    scale_finish_kernel(double *scale, const double *part, int nb, double count_mult,
                        double known_count, const float *dloss, double mult) {
    double count = part ? sum_partials(part, 0, nb) * count_mult : known_count;
    if (threadIdx.x == 0) *scale = count > 0.0 ? (double)*dloss / count * mult : 0.0;
}

/* The valid pixels of valid[n] (statistic 0). */
static __global__ void __launch_bounds__(RED_THREADS, RED_MIN_BLOCKS)
    count_valid_kernel(double *part, const uint8_t *valid, size_t n) {
    double count = 0.0;
    GRID_STRIDE(i, n) count += valid[i] != 0;
    store_partial(part, 0, count);
}

/* Launches the reduction of a backward's scale into ws.result[0]: count = (valid pixels of
 * valid[npix], or npix with valid NULL) * count_mult. */
static void masked_scale(ms_backend *be, const reduce_ws &ws, const uint8_t *valid, size_t npix,
                         double count_mult, const float *dloss, double mult) {
    cudaStream_t st = cuda_stream(be);
    int nb = red_grid(npix);
    if (valid) MS_LAUNCH(count_valid_kernel, nb, RED_THREADS, 0, st, ws.part, valid, npix);
    MS_LAUNCH(scale_finish_kernel, 1, RED_THREADS, 0, st, ws.result, valid ? ws.part : NULL, nb,
              count_mult, (double)npix * count_mult, dloss, mult);
}

/* A loss over nothing is 0; the kernels need at least one element. */
static void zero_loss(ms_backend *be, float *loss) {
    CUDA_CHECK(cudaMemsetAsync(loss, 0, sizeof *loss, cuda_stream(be)));
}

/* ---- L1 and MSE ------------------------------------------------------------------------------ */

/* Partials of sum |d| or d^2 (statistic 0) and of the elements taken (1), d = pred - target over
 * [B, C, P]; with a mask, pixel by pixel over the C channels of each valid pixel. */
template <typename T>
static __global__ void __launch_bounds__(RED_THREADS, RED_MIN_BLOCKS)
    regression_part_kernel(double *part, const T *pred, const float *target, const uint8_t *valid,
                           int B, int C, int P, int squared) {
    double sum = 0.0, count = 0.0;
    if (!valid) {
        GRID_STRIDE(i, (size_t)B * C * P) {
            double d = (double)ld(pred[i]) - target[i];
            sum += squared ? d * d : fabs(d);
            count += 1.0;
        }
    } else {
        FOR_PIXELS(b, p, B, P) {
            if (!valid[b * P + p]) continue;
#pragma unroll 1
            for (int c = 0; c < C; c++) {
                size_t i = (b * C + c) * P + p;
                double d = (double)ld(pred[i]) - target[i];
                sum += squared ? d * d : fabs(d);
            }
            count += C;
        }
    }
    store_partial(part, 0, sum);
    store_partial(part, 1, count);
}

/* dx = scale * (d or sign d) with scale = dloss / n (x 2 for MSE), 0 on masked pixels; the sign
 * is 0 at d = 0, as PyTorch. */
static __device__ __forceinline__ float regression_grad(double x, float y, double scale,
                                                        int squared) {
    double d = x - y;
    double dd = squared ? d : (double)((d > 0) - (d < 0));
    return (float)(scale * dd);
}

template <typename T>
static __global__ void __launch_bounds__(RED_THREADS, RED_MIN_BLOCKS)
    regression_bwd_kernel(T *dx, const double *scale_p, const T *pred, const float *target,
                          const uint8_t *valid, int B, int C, int P, int squared) {
    double scale = *scale_p;
    if (!valid) {
        GRID_STRIDE(i, (size_t)B * C * P) {
            st(&dx[i], regression_grad(ld(pred[i]), target[i], scale, squared));
        }
        return;
    }
    FOR_PIXELS(b, p, B, P) {
        bool ok = valid[b * P + p];
#pragma unroll 1
        for (int c = 0; c < C; c++) {
            size_t i = (b * C + c) * P + p;
            st(&dx[i], ok ? regression_grad(ld(pred[i]), target[i], scale, squared) : 0.0f);
        }
    }
}

template <typename T>
static void regression_t(ms_backend *be, float *loss, const ms_act *pred, const float *target,
                         const uint8_t *valid, int B, int C, int P, int squared) {
    reduce_ws ws = reduce_scratch(be);
    cudaStream_t st = cuda_stream(be);
    /* a thread per element, or per pixel when masked */
    dim3 grid = valid ? pixel_grid(B, P, RED_MAX_BLOCKS) : dim3(red_grid((size_t)B * C * P));
    MS_LAUNCH(regression_part_kernel<T>, grid, RED_THREADS, 0, st, ws.part, (const T *)pred, target,
              valid, B, C, P, squared);
    MS_LAUNCH(mean_finish_kernel, 1, RED_THREADS, 0, st, loss, ws.part, blocks_of(grid));
}

template <typename T>
static void regression_bwd_t(ms_backend *be, ms_act *dpred, const float *dloss, const ms_act *pred,
                             const float *target, const uint8_t *valid, int B, int C, int P,
                             int squared) {
    reduce_ws ws = reduce_scratch(be);
    masked_scale(be, ws, valid, (size_t)B * P, C, dloss, squared ? 2.0 : 1.0);
    dim3 grid = valid ? pixel_grid(B, P, EW_MAX_BLOCKS) : dim3(ew_grid((size_t)B * C * P));
    MS_LAUNCH(regression_bwd_kernel<T>, grid, RED_THREADS, 0, cuda_stream(be), (T *)dpred,
              ws.result, (const T *)pred, target, valid, B, C, P, squared);
}

static void cuda_loss_l1(ms_backend *be, float *loss, const ms_act *pred, const float *target,
                         const uint8_t *valid, int B, int C, int P) {
    if ((size_t)B * C * P == 0)
        zero_loss(be, loss);
    else
        ACT_DISPATCH(be, regression_t, be, loss, pred, target, valid, B, C, P, 0);
}

static void cuda_loss_l1_bwd(ms_backend *be, ms_act *dpred, const float *dloss, const ms_act *pred,
                             const float *target, const uint8_t *valid, int B, int C, int P) {
    if ((size_t)B * C * P == 0) return;
    ACT_DISPATCH(be, regression_bwd_t, be, dpred, dloss, pred, target, valid, B, C, P, 0);
}

static void cuda_loss_mse(ms_backend *be, float *loss, const ms_act *pred, const float *target,
                          const uint8_t *valid, int B, int C, int P) {
    if ((size_t)B * C * P == 0)
        zero_loss(be, loss);
    else
        ACT_DISPATCH(be, regression_t, be, loss, pred, target, valid, B, C, P, 1);
}

static void cuda_loss_mse_bwd(ms_backend *be, ms_act *dpred, const float *dloss, const ms_act *pred,
                              const float *target, const uint8_t *valid, int B, int C, int P) {
    if ((size_t)B * C * P == 0) return;
    ACT_DISPATCH(be, regression_bwd_t, be, dpred, dloss, pred, target, valid, B, C, P, 1);
}

/* ---- cosine (surface normals) ---------------------------------------------------------------- */

/* dot(pred, target) and the norms sqrt(|pred|^2 + eps^2), sqrt(|target|^2 + eps^2) over the C
 * channels of one pixel, base = b C P + p its channel 0. */
struct cos_terms {
    double dot, norm_p, norm_t;
};

template <typename T>
static __device__ __forceinline__ cos_terms cosine_terms(const T *pred, const float *target,
                                                         size_t base, int C, int P) {
    double dot = 0.0, pp = 0.0, tt = 0.0;
#pragma unroll 1
    for (int c = 0; c < C; c++) {
        double x = ld(pred[base + (size_t)c * P]), y = target[base + (size_t)c * P];
        dot += x * y;
        pp += x * x;
        tt += y * y;
    }
    return {dot, sqrt(pp + COS_EPS * COS_EPS), sqrt(tt + COS_EPS * COS_EPS)};
}

/* Partials of sum (1 - cos) (statistic 0) and of the valid pixels (1). */
template <typename T>
static __global__ void __launch_bounds__(RED_THREADS, RED_MIN_BLOCKS)
    cosine_part_kernel(double *part, const T *pred, const float *target, const uint8_t *valid,
                       int B, int C, int P) {
    double sum = 0.0, count = 0.0;
    FOR_PIXELS(b, p, B, P) {
        if (valid && !valid[b * P + p]) continue;
        cos_terms s = cosine_terms(pred, target, b * C * P + p, C, P);
        sum += 1.0 - s.dot / (s.norm_p * s.norm_t);
        count += 1.0;
    }
    store_partial(part, 0, sum);
    store_partial(part, 1, count);
}

/* dL/dpred = scale (dot pred / (|p|^3 |t|) - target / (|p| |t|)), 0 on masked pixels. */
template <typename T>
static __global__ void __launch_bounds__(RED_THREADS, RED_MIN_BLOCKS)
    cosine_bwd_kernel(T *dx, const double *scale_p, const T *pred, const float *target,
                      const uint8_t *valid, int B, int C, int P) {
    double scale = *scale_p;
    FOR_PIXELS(b, p, B, P) {
        size_t base = b * C * P + p;
        double a = 0.0, m = 0.0; /* dx = m pred - a target */
        if (!valid || valid[b * P + p]) {
            cos_terms s = cosine_terms(pred, target, base, C, P);
            a = scale / (s.norm_p * s.norm_t);
            m = scale * s.dot / (s.norm_p * s.norm_p * s.norm_p * s.norm_t);
        }
#pragma unroll 1
        for (int c = 0; c < C; c++) {
            size_t i = base + (size_t)c * P;
            st(&dx[i], (float)(m * ld(pred[i]) - a * target[i]));
        }
    }
}

template <typename T>
static void cosine_t(ms_backend *be, float *loss, const ms_act *pred, const float *target,
                     const uint8_t *valid, int B, int C, int P) {
    reduce_ws ws = reduce_scratch(be);
    dim3 grid = pixel_grid(B, P, RED_MAX_BLOCKS);
    MS_LAUNCH(cosine_part_kernel<T>, grid, RED_THREADS, 0, cuda_stream(be), ws.part,
              (const T *)pred, target, valid, B, C, P);
    MS_LAUNCH(mean_finish_kernel, 1, RED_THREADS, 0, cuda_stream(be), loss, ws.part,
              blocks_of(grid));
}

template <typename T>
static void cosine_bwd_t(ms_backend *be, ms_act *dpred, const float *dloss, const ms_act *pred,
                         const float *target, const uint8_t *valid, int B, int C, int P) {
    reduce_ws ws = reduce_scratch(be);
    masked_scale(be, ws, valid, (size_t)B * P, 1.0, dloss, 1.0);
    MS_LAUNCH(cosine_bwd_kernel<T>, pixel_grid(B, P, EW_MAX_BLOCKS), RED_THREADS, 0,
              cuda_stream(be), (T *)dpred, ws.result, (const T *)pred, target, valid, B, C, P);
}

static void cuda_loss_cosine(ms_backend *be, float *loss, const ms_act *pred, const float *target,
                             const uint8_t *valid, int B, int C, int P) {
    if ((size_t)B * P == 0)
        zero_loss(be, loss);
    else
        ACT_DISPATCH(be, cosine_t, be, loss, pred, target, valid, B, C, P);
}

static void cuda_loss_cosine_bwd(ms_backend *be, ms_act *dpred, const float *dloss,
                                 const ms_act *pred, const float *target, const uint8_t *valid,
                                 int B, int C, int P) {
    if ((size_t)B * C * P == 0) return;
    ACT_DISPATCH(be, cosine_bwd_t, be, dpred, dloss, pred, target, valid, B, C, P);
}

/* ---- cross-entropy over channels ------------------------------------------------------------- */

/* A label counts when it is not ignore_index and lies in [0, C), as on the CPU. */
static __device__ __forceinline__ bool ce_label_ok(int32_t lab, int ignore_index, int C) {
    return lab != ignore_index && lab >= 0 && lab < C;
}

/* Max mx and sum of exp(x - mx) over the C channels of one pixel (channel 0 at base). */
template <typename T>
static __device__ __forceinline__ double ce_sumexp(const T *logits, size_t base, int C, int P,
                                                   float *mx_out) {
    float mx = -INFINITY;
#pragma unroll 1
    for (int c = 0; c < C; c++) mx = fmaxf(mx, ld(logits[base + (size_t)c * P]));
    double se = 0.0;
#pragma unroll 1
    for (int c = 0; c < C; c++) se += expf(ld(logits[base + (size_t)c * P]) - mx);
    *mx_out = mx;
    return se;
}

/* Partials of sum -log softmax[label] (statistic 0) and of the counted labels (1); ignored
 * pixels are not read. */
template <typename T>
static __global__ void __launch_bounds__(RED_THREADS, RED_MIN_BLOCKS)
    ce_part_kernel(double *part, const T *logits, const int32_t *labels, int ignore_index, int B,
                   int C, int P) {
    double sum = 0.0, count = 0.0;
    FOR_PIXELS(b, p, B, P) {
        int32_t lab = labels[b * P + p];
        if (!ce_label_ok(lab, ignore_index, C)) continue;
        size_t base = b * C * P + p;
        float mx;
        double se = ce_sumexp(logits, base, C, P, &mx);
        sum += (double)mx + log(se) - (double)ld(logits[base + (size_t)lab * P]);
        count += 1.0;
    }
    store_partial(part, 0, sum);
    store_partial(part, 1, count);
}

/* The counted labels of labels[n] (statistic 0). */
static __global__ void __launch_bounds__(RED_THREADS, RED_MIN_BLOCKS)
    ce_count_kernel(double *part, const int32_t *labels, int ignore_index, int C, size_t n) {
    double count = 0.0;
    GRID_STRIDE(i, n) count += ce_label_ok(labels[i], ignore_index, C);
    store_partial(part, 0, count);
}

/* dlogits = scale (softmax - onehot(label)), 0 on ignored pixels. */
template <typename T>
static __global__ void __launch_bounds__(RED_THREADS, RED_MIN_BLOCKS)
    ce_bwd_kernel(T *dx, const double *scale_p, const T *logits, const int32_t *labels,
                  int ignore_index, int B, int C, int P) {
    double scale = *scale_p;
    FOR_PIXELS(b, p, B, P) {
        int32_t lab = labels[b * P + p];
        size_t base = b * C * P + p;
        if (!ce_label_ok(lab, ignore_index, C)) {
#pragma unroll 1
            for (int c = 0; c < C; c++) st(&dx[base + (size_t)c * P], 0.0f);
            continue;
        }
        float mx;
        double wsum = scale / ce_sumexp(logits, base, C, P, &mx); /* scale / sum exp */
#pragma unroll 1
        for (int c = 0; c < C; c++) {
            size_t i = base + (size_t)c * P;
            double soft = wsum * expf(ld(logits[i]) - mx); /* scale * softmax */
            st(&dx[i], (float)(c == lab ? soft - scale : soft));
        }
    }
}

template <typename T>
static void ce_t(ms_backend *be, float *loss, const ms_act *logits, const int32_t *labels,
                 int ignore_index, int B, int C, int P) {
    reduce_ws ws = reduce_scratch(be);
    dim3 grid = pixel_grid(B, P, RED_MAX_BLOCKS);
    MS_LAUNCH(ce_part_kernel<T>, grid, RED_THREADS, 0, cuda_stream(be), ws.part, (const T *)logits,
              labels, ignore_index, B, C, P);
    MS_LAUNCH(mean_finish_kernel, 1, RED_THREADS, 0, cuda_stream(be), loss, ws.part,
              blocks_of(grid));
}

template <typename T>
static void ce_bwd_t(ms_backend *be, ms_act *dlogits, const float *dloss, const ms_act *logits,
                     const int32_t *labels, int ignore_index, int B, int C, int P) {
    reduce_ws ws = reduce_scratch(be);
    cudaStream_t st = cuda_stream(be);
    size_t npix = (size_t)B * P;
    int nb = red_grid(npix);
    MS_LAUNCH(ce_count_kernel, nb, RED_THREADS, 0, st, ws.part, labels, ignore_index, C, npix);
    MS_LAUNCH(scale_finish_kernel, 1, RED_THREADS, 0, st, ws.result, ws.part, nb, 1.0, 0.0, dloss,
              1.0);
    MS_LAUNCH(ce_bwd_kernel<T>, pixel_grid(B, P, EW_MAX_BLOCKS), RED_THREADS, 0, st, (T *)dlogits,
              ws.result, (const T *)logits, labels, ignore_index, B, C, P);
}

static void cuda_loss_ce(ms_backend *be, float *loss, const ms_act *logits, const int32_t *labels,
                         int ignore_index, int B, int C, int P) {
    if ((size_t)B * C * P == 0)
        zero_loss(be, loss);
    else
        ACT_DISPATCH(be, ce_t, be, loss, logits, labels, ignore_index, B, C, P);
}

static void cuda_loss_ce_bwd(ms_backend *be, ms_act *dlogits, const float *dloss,
                             const ms_act *logits, const int32_t *labels, int ignore_index, int B,
                             int C, int P) {
    if ((size_t)B * C * P == 0) return;
    ACT_DISPATCH(be, ce_bwd_t, be, dlogits, dloss, logits, labels, ignore_index, B, C, P);
}

/* ---- balanced binary cross-entropy (saliency, edges) ----------------------------------------- */
/* Label 0 is negative, BCE_IGNORE ignored, anything else positive; BCE = softplus(-x) on a
 * positive and softplus(x) on a negative, as max(z, 0) + log1p(exp(-|z|)) (no overflow, small
 * tail kept). The weight of the positives is pos_weight, or with pos_weight < 0 the batch's share
 * of negatives among the valid pixels: a constant of the loss. */

static __device__ __forceinline__ float softplus_stable(float z) {
    return fmaxf(z, 0.0f) + log1pf(expf(-fabsf(z)));
}

static __device__ __forceinline__ float sigmoid(float x) {
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

/* Partials: positives' BCE sum (statistic 0), negatives' (1), positives (2), negatives (3);
 * the sums only with with_sums. */
template <typename T>
static __global__ void __launch_bounds__(RED_THREADS, RED_MIN_BLOCKS)
    bce_part_kernel(double *part, const T *logits, const uint8_t *labels, size_t n, int with_sums) {
    double pos_sum = 0.0, neg_sum = 0.0, pos = 0.0, neg = 0.0;
    GRID_STRIDE(i, n) {
        uint8_t lab = labels[i];
        if (lab == BCE_IGNORE) continue;
        if (lab) {
            pos += 1.0;
            if (with_sums) pos_sum += softplus_stable(-ld(logits[i]));
        } else {
            neg += 1.0;
            if (with_sums) neg_sum += softplus_stable(ld(logits[i]));
        }
    }
    if (with_sums) {
        store_partial(part, 0, pos_sum);
        store_partial(part, 1, neg_sum);
    }
    store_partial(part, 2, pos);
    store_partial(part, 3, neg);
}

static __device__ __forceinline__ double bce_weight(double pos, double neg, float pos_weight) {
    if (pos_weight >= 0.0f) return pos_weight;
    return pos + neg > 0.0 ? neg / (pos + neg) : 0.0;
}

static __global__ void __launch_bounds__(RED_THREADS, RED_MIN_BLOCKS)
    bce_finish_kernel(float *loss, const double *part, int nb, float pos_weight) {
    double pos_sum = sum_partials(part, 0, nb), neg_sum = sum_partials(part, 1, nb);
    double pos = sum_partials(part, 2, nb), neg = sum_partials(part, 3, nb);
    if (threadIdx.x == 0) {
        double n = pos + neg, w = bce_weight(pos, neg, pos_weight);
        *loss = n > 0.0 ? (float)((w * pos_sum + (1.0 - w) * neg_sum) / n) : 0.0f;
    }
}

/* coef[0] = dloss / n * w (positives), coef[1] = dloss / n * (1 - w) (negatives). */
static __global__ void __launch_bounds__(RED_THREADS, RED_MIN_BLOCKS)
    bce_scale_kernel(double *coef, const double *part, int nb, float pos_weight,
                     const float *dloss) {
    double pos = sum_partials(part, 2, nb), neg = sum_partials(part, 3, nb);
    if (threadIdx.x == 0) {
        double n = pos + neg, w = bce_weight(pos, neg, pos_weight);
        double scale = n > 0.0 ? (double)*dloss / n : 0.0;
        coef[0] = scale * w;
        coef[1] = scale * (1.0 - w);
    }
}

/* d softplus(-x)/dx = -sigmoid(-x); d softplus(x)/dx = sigmoid(x). */
template <typename T>
static __global__ void __launch_bounds__(RED_THREADS, RED_MIN_BLOCKS)
    bce_bwd_kernel(T *dx, const double *coef, const T *logits, const uint8_t *labels, size_t n) {
    double wpos = coef[0], wneg = coef[1];
    GRID_STRIDE(i, n) {
        uint8_t lab = labels[i];
        float x = ld(logits[i]);
        double g = lab == BCE_IGNORE ? 0.0 : lab ? -wpos * sigmoid(-x) : wneg * sigmoid(x);
        st(&dx[i], (float)g);
    }
}

template <typename T>
static void bce_t(ms_backend *be, float *loss, const ms_act *logits, const uint8_t *labels,
                  float pos_weight, size_t n) {
    reduce_ws ws = reduce_scratch(be);
    int nb = red_grid(n);
    MS_LAUNCH(bce_part_kernel<T>, nb, RED_THREADS, 0, cuda_stream(be), ws.part, (const T *)logits,
              labels, n, 1);
    MS_LAUNCH(bce_finish_kernel, 1, RED_THREADS, 0, cuda_stream(be), loss, ws.part, nb, pos_weight);
}

template <typename T>
static void bce_bwd_t(ms_backend *be, ms_act *dlogits, const float *dloss, const ms_act *logits,
                      const uint8_t *labels, float pos_weight, size_t n) {
    reduce_ws ws = reduce_scratch(be);
    cudaStream_t st = cuda_stream(be);
    int nb = red_grid(n);
    MS_LAUNCH(bce_part_kernel<T>, nb, RED_THREADS, 0, st, ws.part, (const T *)logits, labels, n, 0);
    MS_LAUNCH(bce_scale_kernel, 1, RED_THREADS, 0, st, ws.result, ws.part, nb, pos_weight, dloss);
    MS_LAUNCH(bce_bwd_kernel<T>, ew_grid(n), RED_THREADS, 0, st, (T *)dlogits, ws.result,
              (const T *)logits, labels, n);
}

static void cuda_loss_bce_balanced(ms_backend *be, float *loss, const ms_act *logits,
                                   const uint8_t *labels, float pos_weight, int B, int P) {
    size_t n = (size_t)B * P;
    if (n == 0)
        zero_loss(be, loss);
    else
        ACT_DISPATCH(be, bce_t, be, loss, logits, labels, pos_weight, n);
}

static void cuda_loss_bce_balanced_bwd(ms_backend *be, ms_act *dlogits, const float *dloss,
                                       const ms_act *logits, const uint8_t *labels,
                                       float pos_weight, int B, int P) {
    size_t n = (size_t)B * P;
    if (n) ACT_DISPATCH(be, bce_bwd_t, be, dlogits, dloss, logits, labels, pos_weight, n);
}

/* ---- task weighting -------------------------------------------------------------------------- */
/* T is the number of tasks (at most tens): one thread, the CPU's loop and order exactly. */

/* *total = sum_t 0.5 / s_t^2 L_t + log(1 + s_t^2); dL[t] = 0.5 / s_t^2; ds[t] += dTotal/ds_t. */
static __global__ void __launch_bounds__(1)
    uncertainty_weighting_kernel(float *total, float *dL, float *ds, const float *L, const float *s,
                                 int T) {
    double sum = 0.0;
    for (int t = 0; t < T; t++) {
        double sd = s[t], s2 = sd * sd, lt = L[t];
        sum += 0.5 / s2 * lt + log1p(s2);
        dL[t] = (float)(0.5 / s2);
        ds[t] += (float)(-lt / (s2 * sd) + 2.0 * sd / (1.0 + s2));
    }
    *total = (float)sum;
}

static __global__ void __launch_bounds__(1)
    weighted_sum_kernel(float *total, const float *L, const float *w, int T) {
    double sum = 0.0;
    for (int t = 0; t < T; t++) sum += (double)w[t] * L[t];
    *total = (float)sum;
}

static void cuda_uncertainty_weighting(ms_backend *be, float *total, float *dL, float *ds,
                                       const float *L, const float *s, int T) {
    MS_LAUNCH(uncertainty_weighting_kernel, 1, 1, 0, cuda_stream(be), total, dL, ds, L, s, T);
}

static void cuda_loss_weighted_sum(ms_backend *be, float *total, const float *L, const float *w,
                                   int T) {
    MS_LAUNCH(weighted_sum_kernel, 1, 1, 0, cuda_stream(be), total, L, w, T);
}

/* ---- L2 normalisation over channels (PASCAL normals) ----------------------------------------- */
/* A thread per pixel; the channel sums in double. With n = |x| and y = x / (n + eps):
 * dx = dy / (n + eps) - x (x . dy) / (n (n + eps)^2), the second term 0 at n = 0. */

template <typename T>
static __device__ __forceinline__ double channel_norm(const T *x, size_t base, int C, int P) {
    double ss = 0.0;
#pragma unroll 1
    for (int c = 0; c < C; c++) {
        double v = ld(x[base + (size_t)c * P]);
        ss += v * v;
    }
    return sqrt(ss);
}

template <typename T>
static __global__ void __launch_bounds__(RED_THREADS, RED_MIN_BLOCKS)
    l2_normalize_kernel(T *y, const T *x, int B, int C, int P, float eps) {
    FOR_PIXELS(b, p, B, P) {
        size_t base = b * C * P + p;
        double inv = 1.0 / (channel_norm(x, base, C, P) + eps);
#pragma unroll 1
        for (int c = 0; c < C; c++) {
            size_t i = base + (size_t)c * P;
            st(&y[i], (float)(ld(x[i]) * inv));
        }
    }
}

template <typename T>
static __global__ void __launch_bounds__(RED_THREADS, RED_MIN_BLOCKS)
    l2_normalize_bwd_kernel(T *dx, const T *dy, const T *x, int B, int C, int P, float eps) {
    FOR_PIXELS(b, p, B, P) {
        size_t base = b * C * P + p;
        double norm = channel_norm(x, base, C, P), dot = 0.0;
#pragma unroll 1
        for (int c = 0; c < C; c++) {
            size_t i = base + (size_t)c * P;
            dot += (double)ld(x[i]) * ld(dy[i]);
        }
        double ne = norm + eps;
        double a = 1.0 / ne, m = norm > 0.0 ? dot / (norm * ne * ne) : 0.0;
#pragma unroll 1
        for (int c = 0; c < C; c++) {
            size_t i = base + (size_t)c * P;
            st(&dx[i], (float)(a * ld(dy[i]) - m * ld(x[i])));
        }
    }
}

template <typename T>
static void l2_normalize_t(ms_backend *be, ms_act *y, const ms_act *x, int B, int C, int P,
                           float eps) {
    MS_LAUNCH(l2_normalize_kernel<T>, pixel_grid(B, P, EW_MAX_BLOCKS), RED_THREADS, 0,
              cuda_stream(be), (T *)y, (const T *)x, B, C, P, eps);
}

template <typename T>
static void l2_normalize_bwd_t(ms_backend *be, ms_act *dx, const ms_act *dy, const ms_act *x, int B,
                               int C, int P, float eps) {
    MS_LAUNCH(l2_normalize_bwd_kernel<T>, pixel_grid(B, P, EW_MAX_BLOCKS), RED_THREADS, 0,
              cuda_stream(be), (T *)dx, (const T *)dy, (const T *)x, B, C, P, eps);
}

static void cuda_l2_normalize(ms_backend *be, ms_act *y, const ms_act *x, int B, int C, int P,
                              float eps) {
    if ((size_t)B * C * P != 0) ACT_DISPATCH(be, l2_normalize_t, be, y, x, B, C, P, eps);
}

static void cuda_l2_normalize_bwd(ms_backend *be, ms_act *dx, const ms_act *dy, const ms_act *x,
                                  int B, int C, int P, float eps) {
    if ((size_t)B * C * P != 0) ACT_DISPATCH(be, l2_normalize_bwd_t, be, dx, dy, x, B, C, P, eps);
}

void cuda_register_losses(ms_backend *be) {
    be->loss_l1 = cuda_loss_l1;
    be->loss_l1_bwd = cuda_loss_l1_bwd;
    be->loss_mse = cuda_loss_mse;
    be->loss_mse_bwd = cuda_loss_mse_bwd;
    be->loss_cosine = cuda_loss_cosine;
    be->loss_cosine_bwd = cuda_loss_cosine_bwd;
    be->loss_ce = cuda_loss_ce;
    be->loss_ce_bwd = cuda_loss_ce_bwd;
    be->loss_bce_balanced = cuda_loss_bce_balanced;
    be->loss_bce_balanced_bwd = cuda_loss_bce_balanced_bwd;
    be->uncertainty_weighting = cuda_uncertainty_weighting;
    be->loss_weighted_sum = cuda_loss_weighted_sum;
    be->l2_normalize = cuda_l2_normalize;
    be->l2_normalize_bwd = cuda_l2_normalize_bwd;
}
