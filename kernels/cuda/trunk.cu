/* The transformer trunk's plumbing on the GPU: drop path, patch (un)folding, CLS + position
 * assembly, token slicing, the token mean of the classification heads, and LayerNorm.
 *
 * Semantics are those of kernels/cpu/tokens.c, kernels/cpu/elementwise.c (drop_path) and
 * kernels/cpu/linear.c (layernorm); tests/simt/test_cuda_trunk.c compares every op with them.
 *
 *  - Per-sample kernels (drop_path, patch moves, assemble, slice, mean_bwd) run on a grid whose
 *    y index is the sample b and whose x blocks stride over that sample's elements, so index
 *    arithmetic is 32-bit divisions by D (or p, Wi) instead of 64-bit ones. Every output element
 *    is written by one thread; outputs may alias inputs where the CPU allows it (drop_path).
 *  - patchify / unpatchify are pure copies of the activation type (round trips bit-identical, as
 *    on the CPU): an element walk in image order, or, for the (ky, kx, c) order with 32 or more
 *    channels (the conv head's token grid <-> feature map), a tiled transpose through shared
 *    memory so that neither side is read or written with a stride of C.
 *  - Sums over the batch (dcls, dpos) or over tokens (tokens_mean) are double, each output
 *    summed by one thread (or one block, in a fixed order) and added once to the fp32 gradient:
 *    no atomics, so results do not depend on timing.
 *  - LayerNorm: a warp per row; mean and variance in double in two passes (the row, 3 KB at
 *    D = 768, is re-read from L1/L2), the output through the CPU's hi + lo split of the mean.
 *    The backward computes dgamma / dbeta first (per 64-row chunk partials in double into
 *    SCRATCH_PARTIALS, then one thread per column adds the chunks in order), then dx with a warp
 *    per row. Computing the parameter sums before dx keeps them right even when dx aliases dy.
 *    Fusing the two would save one read of x and dy (2 of 5 passes); docs/kernels.md has the
 *    numbers. */
#include "cuda_common.h"

#define EW_THREADS 256
#define EW_MAX_BLOCKS 4096 /* x blocks per sample: each grid-strides over the rest */
#define MEAN_COLS 32       /* tokens_mean: columns per block (a warp reads 32 in a row)   */
#define MEAN_GROUPS 8      /* token groups per block, combined in a fixed order           */
#define TR_TILE 32         /* patch transpose: channels x pixels per tile                 */
#define TR_ROWS 8          /* thread rows of a transpose block (4 tile rows each)         */
#define LN_WARPS 4         /* LayerNorm rows per block: one warp per row                  */
#define LN_COLS 32         /* dgamma/dbeta partials: columns per block                    */
#define LN_GROUPS 8        /* row groups per block                                        */
#define LN_CHUNK_ROWS 64   /* rows per partial; the partials are added in chunk order     */

/* Grid of a per-sample kernel: x blocks over n elements of each sample, y over B samples. */
static dim3 sample_grid(size_t n, int B) {
    unsigned x = cdiv(n, EW_THREADS);
    return dim3(x < EW_MAX_BLOCKS ? x : EW_MAX_BLOCKS, (unsigned)B);
}

/* Grid y is limited to 65535 samples; larger batches are a caller error worth a clear message. */
static void check_batch(int B, const char *op) {
    if (B > 65535)
        ms_fatal("CUDA backend: %s with batch %d; at most 65535 samples per call", op, B);
}

#define SAMPLE_STRIDE(i, n)                                                                        \
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += gridDim.x * blockDim.x)

/* Elements within one sample are indexed in 32 bits, the grid-stride step included. */
static void check_sample_size(size_t n, const char *op) {
    if (n > 0xffffffffu - (size_t)EW_THREADS * EW_MAX_BLOCKS)
        ms_fatal("CUDA backend: %s with %zu elements per sample; at most 4e9", op, n);
}

/* ---- drop path ------------------------------------------------------------------------------- */

/* y[b, i] = x[b, i] * scale[b]; y may alias x (the backward runs in place on dy). */
template <typename T>
__global__ void __launch_bounds__(EW_THREADS)
    drop_path_kernel(T *y, const T *x, const float *sample_scale, unsigned n) {
    size_t base = (size_t)blockIdx.y * n;
    float s = sample_scale[blockIdx.y];
    SAMPLE_STRIDE(i, n) st(&y[base + i], ld(x[base + i]) * s);
}

template <typename T>
static void drop_path_t(ms_backend *be, ms_act *y, const ms_act *x, const float *sample_scale,
                        int B, size_t n) {
    MS_LAUNCH(drop_path_kernel<T>, sample_grid(n, B), EW_THREADS, 0, cuda_stream(be), (T *)y,
              (const T *)x, sample_scale, (unsigned)n);
}

static void cuda_drop_path(ms_backend *be, ms_act *y, const ms_act *x, const float *sample_scale,
                           int B, size_t n) {
    if (B <= 0 || n == 0) return;
    check_batch(B, "drop_path");
    check_sample_size(n, "drop_path");
    ACT_DISPATCH(be, drop_path_t, be, y, x, sample_scale, B, n);
}

/* ---- patchify / unpatchify ------------------------------------------------------------------- */

/* Geometry of one image and its patch grid, passed by value. */
struct patch_geom {
    int C, Hi, Wi, p, Gw;
    unsigned plane;   /* Hi * Wi */
    unsigned per_img; /* C * Hi * Wi = Np * C * p * p */
    int hwc;          /* patch element order (ky, kx, c) instead of (c, ky, kx) */
};

/* Walks img[b] in order; element (c, y, x) lives in patch (y / p, x / p) at (c, ky, kx) or
 * (ky, kx, c). to_patches: patches[b] = permuted img[b] (reads coalesced); otherwise img[b] =
 * permuted patches[b] (writes coalesced). */
template <typename T>
__global__ void __launch_bounds__(EW_THREADS)
    patch_move_kernel(T *dst, const T *src, patch_geom g, int to_patches) {
    size_t base = (size_t)blockIdx.y * g.per_img; /* both layouts hold per_img values per image */
    SAMPLE_STRIDE(i, g.per_img) {
        unsigned c = i / g.plane, yx = i - c * g.plane;
        unsigned y = yx / (unsigned)g.Wi, x = yx - y * (unsigned)g.Wi;
        unsigned gy = y / (unsigned)g.p, ky = y - gy * (unsigned)g.p;
        unsigned gx = x / (unsigned)g.p, kx = x - gx * (unsigned)g.p;
        unsigned pp = (unsigned)(g.p * g.p);
        unsigned within = g.hwc ? (ky * (unsigned)g.p + kx) * (unsigned)g.C + c
                                : c * pp + ky * (unsigned)g.p + kx;
        unsigned at = (gy * (unsigned)g.Gw + gx) * pp * (unsigned)g.C + within;
        if (to_patches)
            dst[base + at] = src[base + i];
        else
            dst[base + i] = src[base + at];
    }
}

/* HWC order with many channels (the conv head's token grid <-> feature map, C = D, p = 1) is a
 * transpose: a pixel's C channels are contiguous in the patch but a plane apart in the image, so
 * the element walk above would touch one 32-byte sector per element on one side. Here a block
 * (TR_TILE, TR_ROWS) moves a tile of 32 channels x 32 pixels of one image row through shared
 * memory: it reads 32 consecutive pixels of a channel plane (or 32 consecutive channels of a
 * pixel) per warp instruction and writes the other way, both coalesced. Grid: (image row y and
 * its x tiles, channel tiles, b). tile[c][x], padded against bank conflicts. */
template <typename T>
__global__ void __launch_bounds__(TR_TILE *TR_ROWS)
    patch_transpose_kernel(T *dst, const T *src, patch_geom g, int to_patches) {
    MS_SHARED(T, tile, [TR_TILE][TR_TILE + 1]);
    unsigned xtiles = ((unsigned)g.Wi + TR_TILE - 1) / TR_TILE;
    unsigned y = blockIdx.x / xtiles, x0 = (blockIdx.x - y * xtiles) * TR_TILE;
    unsigned c0 = blockIdx.y * TR_TILE;
    size_t base = (size_t)blockIdx.z * g.per_img;
    unsigned gy = y / (unsigned)g.p, ky = y - gy * (unsigned)g.p, pp = (unsigned)(g.p * g.p);
    unsigned tx = threadIdx.x;
    /* image element (c, y, x) and patch element (pixel (y, x), channel c) */
    auto img_at = [&](unsigned c, unsigned x) { return base + c * g.plane + y * g.Wi + x; };
    auto patch_at = [&](unsigned c, unsigned x) {
        unsigned gx = x / (unsigned)g.p, kx = x - gx * (unsigned)g.p;
        return base + ((gy * (unsigned)g.Gw + gx) * pp + ky * (unsigned)g.p + kx) * g.C + c;
    };
    for (unsigned k = threadIdx.y; k < TR_TILE; k += TR_ROWS) {
        if (to_patches) { /* warp reads 32 pixels of channel c0 + k */
            if (c0 + k < (unsigned)g.C && x0 + tx < (unsigned)g.Wi)
                tile[k][tx] = src[img_at(c0 + k, x0 + tx)];
        } else { /* warp reads 32 channels of pixel x0 + k */
            if (c0 + tx < (unsigned)g.C && x0 + k < (unsigned)g.Wi)
                tile[tx][k] = src[patch_at(c0 + tx, x0 + k)];
        }
    }
    __syncthreads();
    for (unsigned k = threadIdx.y; k < TR_TILE; k += TR_ROWS) {
        if (to_patches) { /* warp writes 32 channels of pixel x0 + k */
            if (c0 + tx < (unsigned)g.C && x0 + k < (unsigned)g.Wi)
                dst[patch_at(c0 + tx, x0 + k)] = tile[tx][k];
        } else { /* warp writes 32 pixels of channel c0 + k */
            if (c0 + k < (unsigned)g.C && x0 + tx < (unsigned)g.Wi)
                dst[img_at(c0 + k, x0 + tx)] = tile[k][tx];
        }
    }
}

template <typename T>
static void patch_move_t(ms_backend *be, ms_act *dst, const ms_act *src, int B,
                         const patch_geom &g, int to_patches) {
    if (g.hwc && g.C >= TR_TILE) {
        dim3 grid(cdiv((size_t)g.Wi, TR_TILE) * (unsigned)g.Hi, cdiv((size_t)g.C, TR_TILE),
                  (unsigned)B);
        MS_LAUNCH(patch_transpose_kernel<T>, grid, dim3(TR_TILE, TR_ROWS), 0, cuda_stream(be),
                  (T *)dst, (const T *)src, g, to_patches);
    } else {
        MS_LAUNCH(patch_move_kernel<T>, sample_grid(g.per_img, B), EW_THREADS, 0,
                  cuda_stream(be), (T *)dst, (const T *)src, g, to_patches);
    }
}

static void patch_move(ms_backend *be, ms_act *dst, const ms_act *src, int B, int C, int Hi,
                       int Wi, int p, ms_patch_order order, int to_patches, const char *op) {
    MS_ASSERT(p > 0 && Hi % p == 0 && Wi % p == 0);
    if (B <= 0 || C <= 0 || Hi <= 0 || Wi <= 0) return;
    check_batch(B, op);
    size_t per_img = (size_t)C * Hi * Wi;
    check_sample_size(per_img, op);
    if ((size_t)cdiv((size_t)Wi, TR_TILE) * Hi > 0x7fffffffu || C / TR_TILE > 65535)
        ms_fatal("CUDA backend: %s of a %d x %d x %d image is too large", op, C, Hi, Wi);
    patch_geom g = {C, Hi, Wi, p, Wi / p, (unsigned)((size_t)Hi * Wi), (unsigned)per_img,
                    order == MS_PATCH_HWC};
    ACT_DISPATCH(be, patch_move_t, be, dst, src, B, g, to_patches);
}

/* patches[B, Np, C*p*p] from img[B, C, Hi, Wi]. */
static void cuda_patchify(ms_backend *be, ms_act *patches, const ms_act *img, int B, int C,
                          int Hi, int Wi, int p, ms_patch_order order) {
    patch_move(be, patches, img, B, C, Hi, Wi, p, order, 1, "patchify");
}

/* img[B, C, Hi, Wi] from patches[B, Np, C*p*p]. */
static void cuda_unpatchify(ms_backend *be, ms_act *img, const ms_act *patches, int B, int C,
                            int Hi, int Wi, int p, ms_patch_order order) {
    patch_move(be, img, patches, B, C, Hi, Wi, p, order, 0, "unpatchify");
}

/* ---- CLS token and position embedding -------------------------------------------------------- */

/* x[b, n, d] = (n == 0 ? cls[d] : pe[b, n-1, d]) + pos[n, d]; i = n * D + d. */
template <typename T>
__global__ void __launch_bounds__(EW_THREADS)
    tokens_assemble_kernel(T *x, const T *pe, const float *cls, const float *pos, int N, int D) {
    unsigned ND = (unsigned)N * (unsigned)D;
    size_t b = blockIdx.y;
    SAMPLE_STRIDE(i, ND) {
        float src = i < (unsigned)D ? cls[i] : ld(pe[b * (ND - (unsigned)D) + i - (unsigned)D]);
        st(&x[b * ND + i], src + pos[i]);
    }
}

template <typename T>
static void tokens_assemble_t(ms_backend *be, ms_act *x, const ms_act *pe, const float *cls,
                              const float *pos, int B, int N, int D) {
    MS_LAUNCH(tokens_assemble_kernel<T>, sample_grid((size_t)N * D, B), EW_THREADS, 0,
              cuda_stream(be), (T *)x, (const T *)pe, cls, pos, N, D);
}

static void cuda_tokens_assemble(ms_backend *be, ms_act *x, const ms_act *pe, const float *cls,
                                 const float *pos, int B, int N, int D) {
    if (B <= 0 || N <= 0 || D <= 0) return;
    check_batch(B, "tokens_assemble");
    check_sample_size((size_t)N * D, "tokens_assemble");
    ACT_DISPATCH(be, tokens_assemble_t, be, x, pe, cls, pos, B, N, D);
}

/* Thread i = n * D + d of the N*D grid: dpe[b, n-1, d] = dx[b, n, d] for every b (a copy), and
 * the sum over b in order, in double, added once to dpos[n, d] and, for n = 0, to dcls[d]. */
template <typename T>
__global__ void __launch_bounds__(EW_THREADS)
    tokens_assemble_bwd_kernel(T *dpe, float *dcls, float *dpos, const T *dx, int B, int N,
                               int D) {
    unsigned ND = (unsigned)N * (unsigned)D;
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= ND) return;
    double acc = 0.0;
    for (int b = 0; b < B; b++) {
        T v = dx[(size_t)b * ND + i];
        acc += ld(v);
        if (dpe && i >= (unsigned)D) dpe[(size_t)b * (ND - (unsigned)D) + i - (unsigned)D] = v;
    }
    if (dpos) dpos[i] = (float)((double)dpos[i] + acc);
    if (dcls && i < (unsigned)D) dcls[i] = (float)((double)dcls[i] + acc);
}

template <typename T>
static void tokens_assemble_bwd_t(ms_backend *be, ms_act *dpe, float *dcls, float *dpos,
                                  const ms_act *dx, int B, int N, int D) {
    MS_LAUNCH(tokens_assemble_bwd_kernel<T>, cdiv((size_t)N * D, EW_THREADS), EW_THREADS, 0,
              cuda_stream(be), (T *)dpe, dcls, dpos, (const T *)dx, B, N, D);
}

/* dpe[B, N-1, D] written (skipped when NULL); dcls[D], dpos[N, D] accumulated (each may be NULL,
 * a frozen CLS token or position embedding). */
static void cuda_tokens_assemble_bwd(ms_backend *be, ms_act *dpe, float *dcls, float *dpos,
                                     const ms_act *dx, int B, int N, int D) {
    if (B <= 0 || N <= 0 || D <= 0 || (!dpe && !dcls && !dpos)) return;
    check_sample_size((size_t)N * D, "tokens_assemble_bwd");
    ACT_DISPATCH(be, tokens_assemble_bwd_t, be, dpe, dcls, dpos, dx, B, N, D);
}

/* ---- token slices ---------------------------------------------------------------------------- */

/* out[b, i] = x[b, n0 * D + i] for i < len = (n1 - n0) D. */
template <typename T>
__global__ void __launch_bounds__(EW_THREADS)
    tokens_slice_kernel(T *out, const T *x, unsigned ND, unsigned first, unsigned len) {
    size_t b = blockIdx.y;
    SAMPLE_STRIDE(i, len) out[b * len + i] = x[b * ND + first + i];
}

/* dx[b, i] = dout[b, i - first] inside [first, first + len), else 0; i < ND. */
template <typename T>
__global__ void __launch_bounds__(EW_THREADS)
    tokens_slice_bwd_kernel(T *dx, const T *dout, unsigned ND, unsigned first, unsigned len) {
    size_t b = blockIdx.y;
    SAMPLE_STRIDE(i, ND) {
        if (i - first < len) /* unsigned: also false for i < first */
            dx[b * ND + i] = dout[b * len + i - first];
        else
            st(&dx[b * ND + i], 0.0f);
    }
}

template <typename T>
static void tokens_slice_t(ms_backend *be, ms_act *out, const ms_act *x, int B, unsigned ND,
                           unsigned first, unsigned len) {
    MS_LAUNCH(tokens_slice_kernel<T>, sample_grid(len, B), EW_THREADS, 0, cuda_stream(be),
              (T *)out, (const T *)x, ND, first, len);
}

template <typename T>
static void tokens_slice_bwd_t(ms_backend *be, ms_act *dx, const ms_act *dout, int B, unsigned ND,
                               unsigned first, unsigned len) {
    MS_LAUNCH(tokens_slice_bwd_kernel<T>, sample_grid(ND, B), EW_THREADS, 0, cuda_stream(be),
              (T *)dx, (const T *)dout, ND, first, len);
}

/* out[B, n1-n0, D] = x[B, N, D][:, n0:n1]. */
static void cuda_tokens_slice(ms_backend *be, ms_act *out, const ms_act *x, int B, int N, int D,
                              int n0, int n1) {
    MS_ASSERT(0 <= n0 && n0 <= n1 && n1 <= N);
    if (B <= 0 || D <= 0 || n1 == n0) return;
    check_batch(B, "tokens_slice");
    check_sample_size((size_t)N * D, "tokens_slice");
    ACT_DISPATCH(be, tokens_slice_t, be, out, x, B, (unsigned)N * (unsigned)D,
                 (unsigned)n0 * (unsigned)D, (unsigned)(n1 - n0) * (unsigned)D);
}

/* dx[B, N, D] written: the slice from dout, zero elsewhere. */
static void cuda_tokens_slice_bwd(ms_backend *be, ms_act *dx, const ms_act *dout, int B, int N,
                                  int D, int n0, int n1) {
    MS_ASSERT(0 <= n0 && n0 <= n1 && n1 <= N);
    if (B <= 0 || D <= 0 || N <= 0) return;
    check_batch(B, "tokens_slice_bwd");
    check_sample_size((size_t)N * D, "tokens_slice_bwd");
    ACT_DISPATCH(be, tokens_slice_bwd_t, be, dx, dout, B, (unsigned)N * (unsigned)D,
                 (unsigned)n0 * (unsigned)D, (unsigned)(n1 - n0) * (unsigned)D);
}

/* ---- token mean ------------------------------------------------------------------------------ */

/* Block (MEAN_COLS, MEAN_GROUPS) at (column block, sample b): thread (c, g) sums tokens
 * n0 + g, n0 + g + 8, ... of column c in double; group 0 adds the 8 partials in order and
 * writes the mean (the double sum times the double 1 / (N - n0), as the CPU). */
template <typename T>
__global__ void __launch_bounds__(MEAN_COLS *MEAN_GROUPS)
    tokens_mean_kernel(T *out, const T *x, int N, int D, int n0, double inv) {
    int b = blockIdx.y;
    int c = blockIdx.x * MEAN_COLS + threadIdx.x;
    double acc = 0.0;
    if (c < D)
        for (int n = n0 + (int)threadIdx.y; n < N; n += MEAN_GROUPS)
            acc += ld(x[((size_t)b * N + n) * D + c]);
    MS_SHARED(double, part, [MEAN_GROUPS][MEAN_COLS]);
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < D) {
        double sum = 0.0;
        for (int g = 0; g < MEAN_GROUPS; g++) sum += part[g][threadIdx.x];
        st(&out[(size_t)b * D + c], (float)(sum * inv));
    }
}

/* dx[b, n, d] = n < n0 ? 0 : dout[b, d] * inv (fp32 inv, as the CPU). */
template <typename T>
__global__ void __launch_bounds__(EW_THREADS)
    tokens_mean_bwd_kernel(T *dx, const T *dout, int D, unsigned ND, unsigned first, float inv) {
    size_t b = blockIdx.y;
    SAMPLE_STRIDE(i, ND) {
        unsigned d = i % (unsigned)D;
        st(&dx[b * ND + i], i < first ? 0.0f : ld(dout[b * (unsigned)D + d]) * inv);
    }
}

template <typename T>
static void tokens_mean_t(ms_backend *be, ms_act *out, const ms_act *x, int B, int N, int D,
                          int n0) {
    dim3 grid(cdiv((size_t)D, MEAN_COLS), (unsigned)B);
    MS_LAUNCH(tokens_mean_kernel<T>, grid, dim3(MEAN_COLS, MEAN_GROUPS), 0, cuda_stream(be),
              (T *)out, (const T *)x, N, D, n0, 1.0 / (N - n0));
}

template <typename T>
static void tokens_mean_bwd_t(ms_backend *be, ms_act *dx, const ms_act *dout, int B, int N, int D,
                              int n0) {
    unsigned ND = (unsigned)N * (unsigned)D;
    MS_LAUNCH(tokens_mean_bwd_kernel<T>, sample_grid(ND, B), EW_THREADS, 0, cuda_stream(be),
              (T *)dx, (const T *)dout, D, ND, (unsigned)n0 * (unsigned)D,
              (float)(1.0 / (N - n0)));
}

/* out[B, D] = mean of x[B, N, D] over tokens n0..N-1 (N - n0 >= 1). */
static void cuda_tokens_mean(ms_backend *be, ms_act *out, const ms_act *x, int B, int N, int D,
                             int n0) {
    MS_ASSERT(0 <= n0 && n0 < N);
    if (B <= 0 || D <= 0) return;
    check_batch(B, "tokens_mean");
    ACT_DISPATCH(be, tokens_mean_t, be, out, x, B, N, D, n0);
}

static void cuda_tokens_mean_bwd(ms_backend *be, ms_act *dx, const ms_act *dout, int B, int N,
                                 int D, int n0) {
    MS_ASSERT(0 <= n0 && n0 < N);
    if (B <= 0 || D <= 0) return;
    check_batch(B, "tokens_mean_bwd");
    check_sample_size((size_t)N * D, "tokens_mean_bwd");
    ACT_DISPATCH(be, tokens_mean_bwd_t, be, dx, dout, B, N, D, n0);
}

/* ---- LayerNorm ------------------------------------------------------------------------------- */

/* Warp w of block bx normalises row 4 bx + w; lane l takes columns l, l + 32, ... in each of the
 * three passes (sum, centred sum of squares, output), so y may alias x. */
template <typename T>
__global__ void __launch_bounds__(LN_WARPS * 32)
    layernorm_kernel(T *y, float *mean, float *rstd, const T *x, const float *gamma,
                     const float *beta, int M, int D, float eps) {
    int lane = threadIdx.x & 31;
    int m = blockIdx.x * LN_WARPS + (threadIdx.x >> 5);
    if (m >= M) return; /* the whole warp */
    const T *xr = x + (size_t)m * D;
    T *yr = y + (size_t)m * D;
    double s = 0.0;
    for (int j = lane; j < D; j += 32) s += ld(xr[j]);
    double mu = warp_sum(s) / D;
    double ss = 0.0;
    for (int j = lane; j < D; j += 32) {
        double c = (double)ld(xr[j]) - mu;
        ss += c * c;
    }
    ss = warp_sum(ss);
    /* x - hi is exact for x near the mean, so y keeps fp32 accuracy when |mean| >> std. */
    float mu_hi = (float)mu, mu_lo = (float)(mu - (double)mu_hi);
    float rs = (float)(1.0 / sqrt(ss / D + (double)eps));
    if (lane == 0) {
        if (mean) mean[m] = mu_hi;
        if (rstd) rstd[m] = rs;
    }
    for (int j = lane; j < D; j += 32)
        st(&yr[j], ((ld(xr[j]) - mu_hi) - mu_lo) * rs * gamma[j] + beta[j]);
}

/* dx = rstd (g - mean_D(g) - xhat mean_D(g xhat)) with g = dy gamma, xhat = (x - mean) rstd;
 * the two row means in double. A warp per row; each lane reads dy[j] before writing dx[j], so
 * dx may alias dy. */
template <typename T>
__global__ void __launch_bounds__(LN_WARPS * 32)
    layernorm_dx_kernel(T *dx, const T *dy, const T *x, const float *mean, const float *rstd,
                        const float *gamma, int M, int D, int accum_dx) {
    int lane = threadIdx.x & 31;
    int m = blockIdx.x * LN_WARPS + (threadIdx.x >> 5);
    if (m >= M) return; /* the whole warp */
    size_t row = (size_t)m * D;
    float mu = mean[m], rs = rstd[m];
    double sg = 0.0, sgx = 0.0;
    for (int j = lane; j < D; j += 32) {
        float g = ld(dy[row + j]) * gamma[j];
        sg += g;
        sgx += (double)g * ((ld(x[row + j]) - mu) * rs);
    }
    float mg = (float)(warp_sum(sg) / D), mgx = (float)(warp_sum(sgx) / D);
    for (int j = lane; j < D; j += 32) {
        float v = rs * (ld(dy[row + j]) * gamma[j] - mg - (ld(x[row + j]) - mu) * rs * mgx);
        st(&dx[row + j], accum_dx ? ld(dx[row + j]) + v : v);
    }
}

/* Block (LN_COLS, LN_GROUPS) at (column block, chunk k): thread (c, g) sums rows g, g + 8, ...
 * of the chunk's LN_CHUNK_ROWS rows; group 0 adds the 8 partials in order into
 * part[0][k][c] (dgamma: dy xhat) and part[1][k][c] (dbeta: dy). part[2, chunks, D] double. */
template <typename T>
__global__ void __launch_bounds__(LN_COLS *LN_GROUPS)
    layernorm_param_partials_kernel(double *part, const T *dy, const T *x, const float *mean,
                                    const float *rstd, int M, int D) {
    int c = blockIdx.x * LN_COLS + threadIdx.x;
    int r0 = blockIdx.y * LN_CHUNK_ROWS;
    int r1 = r0 + LN_CHUNK_ROWS < M ? r0 + LN_CHUNK_ROWS : M;
    double ag = 0.0, ab = 0.0;
    if (c < D)
        for (int r = r0 + (int)threadIdx.y; r < r1; r += LN_GROUPS) {
            float g = ld(dy[(size_t)r * D + c]);
            ag += g * ((ld(x[(size_t)r * D + c]) - mean[r]) * rstd[r]);
            ab += g;
        }
    MS_SHARED(double, sg, [LN_GROUPS][LN_COLS]);
    MS_SHARED(double, sb, [LN_GROUPS][LN_COLS]);
    sg[threadIdx.y][threadIdx.x] = ag;
    sb[threadIdx.y][threadIdx.x] = ab;
    __syncthreads();
    if (threadIdx.y == 0 && c < D) {
        double tg = 0.0, tb = 0.0;
        for (int k = 0; k < LN_GROUPS; k++) {
            tg += sg[k][threadIdx.x];
            tb += sb[k][threadIdx.x];
        }
        size_t chunks = gridDim.y;
        part[(size_t)blockIdx.y * D + c] = tg;
        part[(chunks + blockIdx.y) * D + c] = tb;
    }
}

/* dgamma[c] += sum over chunks of part[0][:, c] (in chunk order); dbeta likewise from part[1].
 * Either may be NULL. */
__global__ void __launch_bounds__(EW_THREADS)
    layernorm_param_sum_kernel(float *dgamma, float *dbeta, const double *part, int chunks,
                               int D) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= D) return;
    double tg = 0.0, tb = 0.0;
    for (int k = 0; k < chunks; k++) {
        tg += part[(size_t)k * D + c];
        tb += part[((size_t)chunks + k) * D + c];
    }
    if (dgamma) dgamma[c] = (float)((double)dgamma[c] + tg);
    if (dbeta) dbeta[c] = (float)((double)dbeta[c] + tb);
}

template <typename T>
static void layernorm_t(ms_backend *be, ms_act *y, float *mean, float *rstd, const ms_act *x,
                        const float *gamma, const float *beta, int M, int D, float eps) {
    MS_LAUNCH(layernorm_kernel<T>, cdiv((size_t)M, LN_WARPS), LN_WARPS * 32, 0, cuda_stream(be),
              (T *)y, mean, rstd, (const T *)x, gamma, beta, M, D, eps);
}

/* Row LayerNorm of x[M, D] into y[M, D] (may alias x); mean, rstd [M] may be NULL. */
static void cuda_layernorm(ms_backend *be, ms_act *y, float *mean, float *rstd, const ms_act *x,
                           const float *gamma, const float *beta, int M, int D, float eps) {
    if (M <= 0 || D <= 0) return;
    ACT_DISPATCH(be, layernorm_t, be, y, mean, rstd, x, gamma, beta, M, D, eps);
}

template <typename T>
static void layernorm_bwd_t(ms_backend *be, ms_act *dx, float *dgamma, float *dbeta,
                            const ms_act *dy, const ms_act *x, const float *mean,
                            const float *rstd, const float *gamma, int M, int D, int accum_dx) {
    if (dgamma || dbeta) {
        int chunks = (int)cdiv((size_t)M, LN_CHUNK_ROWS);
        double *part = (double *)cuda_scratch(be, SCRATCH_PARTIALS,
                                              2 * (size_t)chunks * D * sizeof(double));
        dim3 grid(cdiv((size_t)D, LN_COLS), (unsigned)chunks);
        MS_LAUNCH(layernorm_param_partials_kernel<T>, grid, dim3(LN_COLS, LN_GROUPS), 0,
                  cuda_stream(be), part, (const T *)dy, (const T *)x, mean, rstd, M, D);
        MS_LAUNCH(layernorm_param_sum_kernel, cdiv((size_t)D, EW_THREADS), EW_THREADS, 0,
                  cuda_stream(be), dgamma, dbeta, (const double *)part, chunks, D);
    }
    if (dx)
        MS_LAUNCH(layernorm_dx_kernel<T>, cdiv((size_t)M, LN_WARPS), LN_WARPS * 32, 0,
                  cuda_stream(be), (T *)dx, (const T *)dy, (const T *)x, mean, rstd, gamma, M, D,
                  accum_dx);
}

/* dx[M, D] (= or += with accum_dx; NULL to skip), dgamma[D] and dbeta[D] accumulated (each may
 * be NULL). */
static void cuda_layernorm_bwd(ms_backend *be, ms_act *dx, float *dgamma, float *dbeta,
                               const ms_act *dy, const ms_act *x, const float *mean,
                               const float *rstd, const float *gamma, int M, int D, int accum_dx) {
    if (M <= 0 || D <= 0) return;
    if ((size_t)M > (size_t)LN_CHUNK_ROWS * 65535)
        ms_fatal("CUDA backend: layernorm_bwd over %d rows; at most %d", M, LN_CHUNK_ROWS * 65535);
    ACT_DISPATCH(be, layernorm_bwd_t, be, dx, dgamma, dbeta, dy, x, mean, rstd, gamma, M, D,
                 accum_dx);
}

void cuda_register_trunk(ms_backend *be) {
    be->drop_path = cuda_drop_path;
    be->patchify = cuda_patchify;
    be->unpatchify = cuda_unpatchify;
    be->tokens_assemble = cuda_tokens_assemble;
    be->tokens_assemble_bwd = cuda_tokens_assemble_bwd;
    be->tokens_slice = cuda_tokens_slice;
    be->tokens_slice_bwd = cuda_tokens_slice_bwd;
    be->tokens_mean = cuda_tokens_mean;
    be->tokens_mean_bwd = cuda_tokens_mean_bwd;
    be->layernorm = cuda_layernorm;
    be->layernorm_bwd = cuda_layernorm_bwd;
}
