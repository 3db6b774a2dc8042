/* Token plumbing on the CPU: patch (un)folding, CLS + position assembly, token slicing and the
 * token mean of the classification heads.
 *
 * patchify and unpatchify are permutations of the same elements, so each is exactly the other's
 * inverse and backward (no arithmetic, bit-identical round trips). Sums over the batch or over
 * tokens accumulate in double, split over column blocks so that every output element is summed
 * by one thread in a fixed order. */
#include "cpu.h"
#include "../util.h"

#include <string.h>

/* Columns summed per work item: the double accumulators stay in registers / L1. */
#define COL_BLOCK 64

/* One patch in order (ky, kx, c): the patch is walked contiguously and the C channel planes of
 * the image side by side. Inlined with C a constant for 3-channel images, where the compiler
 * then turns the channel loop into vector interleaves. */
static inline __attribute__((always_inline)) void move_patch_hwc(float *dst, const float *src,
                                                                 size_t img0, size_t patch,
                                                                 size_t plane, int Wi, int p,
                                                                 int C, int to_patches) {
    for (int ky = 0; ky < p; ky++) {
        size_t io = img0 + (size_t)ky * Wi, po = patch + (size_t)ky * p * C;
        /* Both directions write contiguously and read with a stride: the patch row in (kx, c)
         * order, the image row of each channel in runs of p pixels. With many channels
         * (segmentation logits) writing pixel by pixel across C planes was 10x slower. */
        if (to_patches) {
            for (int kx = 0; kx < p; kx++)
                for (int c = 0; c < C; c++) dst[po + (size_t)kx * C + c] = src[io + c * plane + kx];
        } else {
            for (int c = 0; c < C; c++)
                for (int kx = 0; kx < p; kx++)
                    dst[io + c * plane + kx] = src[po + (size_t)kx * C + c];
        }
    }
}

/* Visits every image row band (b, gy) on its own thread: a band is p image rows that become
 * Gw patches, so no two work items touch the same output. to_patches picks the direction:
 * src is img[B, C, Hi, Wi] and dst patches[B, Np, C*p*p], or the other way round. */
static void patch_move(float *dst, const float *src, int B, int C, int Hi, int Wi, int p,
                       ms_patch_order order, int to_patches) {
    MS_ASSERT(p > 0 && Hi % p == 0 && Wi % p == 0);
    int Gh = Hi / p, Gw = Wi / p;
    size_t L = (size_t)C * p * p; /* values per patch */
    size_t plane = (size_t)Hi * Wi;
    size_t total = (size_t)B * C * plane;
    /* With one channel both orders are the same layout. */
    if (C == 1) order = MS_PATCH_CHW;
#pragma omp parallel for if (total > CPU_PAR_MIN) schedule(static)
    for (int band = 0; band < B * Gh; band++) {
        int b = band / Gh, gy = band % Gh;
        for (int gx = 0; gx < Gw; gx++) {
            size_t patch = ((size_t)b * Gh * Gw + (size_t)gy * Gw + gx) * L;
            /* first pixel of this patch in channel 0 of the image */
            size_t img0 = ((size_t)b * C * Hi + (size_t)gy * p) * Wi + (size_t)gx * p;
            if (order == MS_PATCH_CHW) {
                /* p pixels are contiguous both in the image and in the patch (c, ky, 0..p-1) */
                for (int c = 0; c < C; c++)
                    for (int ky = 0; ky < p; ky++) {
                        size_t io = img0 + c * plane + (size_t)ky * Wi;
                        size_t po = patch + ((size_t)c * p + ky) * p;
                        memcpy(dst + (to_patches ? po : io), src + (to_patches ? io : po),
                               (size_t)p * sizeof(float));
                    }
            } else if (C == 3) {
                move_patch_hwc(dst, src, img0, patch, plane, Wi, p, 3, to_patches);
            } else {
                move_patch_hwc(dst, src, img0, patch, plane, Wi, p, C, to_patches);
            }
        }
    }
}

/* patches[B, Np, C*p*p] from img[B, C, Hi, Wi]. */
static void cpu_patchify(ms_backend *be, ms_act *patches, const ms_act *img, int B, int C, int Hi,
                         int Wi, int p, ms_patch_order order) {
    (void)be;
    patch_move(F(patches), CF(img), B, C, Hi, Wi, p, order, 1);
}

/* img[B, C, Hi, Wi] from patches[B, Np, C*p*p]. */
static void cpu_unpatchify(ms_backend *be, ms_act *img, const ms_act *patches, int B, int C,
                           int Hi, int Wi, int p, ms_patch_order order) {
    (void)be;
    patch_move(F(img), CF(patches), B, C, Hi, Wi, p, order, 0);
}

static void cpu_tokens_assemble(ms_backend *be, ms_act *x_, const ms_act *pe_, const float *cls,
                                const float *pos, int B, int N, int D) {
    (void)be;
    float *x = F(x_);          /* [B, N, D] */
    const float *pe = CF(pe_); /* [B, N-1, D]; cls [D]; pos [N, D] */
#pragma omp parallel for if ((size_t)B * N * D > CPU_PAR_MIN) schedule(static)
    for (int row = 0; row < B * N; row++) {
        int b = row / N, n = row % N;
        const float *src = n == 0 ? cls : pe + ((size_t)b * (N - 1) + n - 1) * D;
        const float *pr = pos + (size_t)n * D;
        float *xr = x + (size_t)row * D;
#pragma omp simd
        for (int d = 0; d < D; d++) xr[d] = src[d] + pr[d];
    }
}

/* dpe[B, N-1, D] written (skipped when NULL); dcls[D], dpos[N, D] accumulated. dcls or dpos may
 * also be NULL (a frozen CLS token or position embedding); the rest is still computed. */
static void cpu_tokens_assemble_bwd(ms_backend *be, ms_act *dpe_, float *dcls, float *dpos,
                                    const ms_act *dx_, int B, int N, int D) {
    (void)be;
    float *dpe = F(dpe_);      /* [B, N-1, D] or NULL */
    const float *dx = CF(dx_); /* [B, N, D] */
    int parallel = (size_t)B * N * D > CPU_PAR_MIN;
    if (dpe) {
#pragma omp parallel for if (parallel) schedule(static)
        for (int b = 0; b < B; b++)
            memcpy(dpe + (size_t)b * (N - 1) * D, dx + ((size_t)b * N + 1) * D,
                   (size_t)(N - 1) * D * sizeof(float));
    }
    if (!dcls && !dpos) return;
    int blocks = (D + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for if (parallel) schedule(static)
    for (int item = 0; item < N * blocks; item++) {
        int n = item / blocks, d0 = (item % blocks) * COL_BLOCK;
        int w = D - d0 < COL_BLOCK ? D - d0 : COL_BLOCK;
        double acc[COL_BLOCK] = {0}; /* [w] sum over the batch of dx[:, n, d0:d0+w] */
        for (int b = 0; b < B; b++) {
            const float *r = dx + ((size_t)b * N + n) * D + d0;
#pragma omp simd
            for (int j = 0; j < w; j++) acc[j] += r[j];
        }
        if (dpos)
            for (int j = 0; j < w; j++)
                dpos[(size_t)n * D + d0 + j] = (float)(dpos[(size_t)n * D + d0 + j] + acc[j]);
        if (n == 0 && dcls)
            for (int j = 0; j < w; j++) dcls[d0 + j] = (float)(dcls[d0 + j] + acc[j]);
    }
}

static void cpu_tokens_slice(ms_backend *be, ms_act *out_, const ms_act *x_, int B, int N, int D,
                             int n0, int n1) {
    (void)be;
    MS_ASSERT(0 <= n0 && n0 <= n1 && n1 <= N);
    float *out = F(out_);    /* [B, n1-n0, D] */
    const float *x = CF(x_); /* [B, N, D] */
    size_t len = (size_t)(n1 - n0) * D;
#pragma omp parallel for if ((size_t)B * len > CPU_PAR_MIN) schedule(static)
    for (int b = 0; b < B; b++)
        memcpy(out + (size_t)b * len, x + ((size_t)b * N + n0) * D, len * sizeof(float));
}

static void cpu_tokens_slice_bwd(ms_backend *be, ms_act *dx_, const ms_act *dout_, int B, int N,
                                 int D, int n0, int n1) {
    (void)be;
    MS_ASSERT(0 <= n0 && n0 <= n1 && n1 <= N);
    float *dx = F(dx_);            /* [B, N, D] */
    const float *dout = CF(dout_); /* [B, n1-n0, D] */
    size_t len = (size_t)(n1 - n0) * D;
#pragma omp parallel for if ((size_t)B * N * D > CPU_PAR_MIN) schedule(static)
    for (int b = 0; b < B; b++) {
        float *r = dx + (size_t)b * N * D;
        memset(r, 0, (size_t)n0 * D * sizeof(float));
        memcpy(r + (size_t)n0 * D, dout + (size_t)b * len, len * sizeof(float));
        memset(r + (size_t)n1 * D, 0, (size_t)(N - n1) * D * sizeof(float));
    }
}

/* The mean is over N - n0 >= 1 tokens (n0 = 1 skips the CLS token). */
static void cpu_tokens_mean(ms_backend *be, ms_act *out_, const ms_act *x_, int B, int N, int D,
                            int n0) {
    (void)be;
    MS_ASSERT(0 <= n0 && n0 < N);
    float *out = F(out_);    /* [B, D] */
    const float *x = CF(x_); /* [B, N, D] */
    int blocks = (D + COL_BLOCK - 1) / COL_BLOCK;
    double inv = 1.0 / (N - n0);
#pragma omp parallel for if ((size_t)B * N * D > CPU_PAR_MIN) schedule(static)
    for (int item = 0; item < B * blocks; item++) {
        int b = item / blocks, d0 = (item % blocks) * COL_BLOCK;
        int w = D - d0 < COL_BLOCK ? D - d0 : COL_BLOCK;
        double acc[COL_BLOCK] = {0}; /* [w] sum over tokens n0..N-1 */
        for (int n = n0; n < N; n++) {
            const float *r = x + ((size_t)b * N + n) * D + d0;
#pragma omp simd
            for (int j = 0; j < w; j++) acc[j] += r[j];
        }
        for (int j = 0; j < w; j++) out[(size_t)b * D + d0 + j] = (float)(acc[j] * inv);
    }
}

static void cpu_tokens_mean_bwd(ms_backend *be, ms_act *dx_, const ms_act *dout_, int B, int N,
                                int D, int n0) {
    (void)be;
    MS_ASSERT(0 <= n0 && n0 < N);
    float *dx = F(dx_);            /* [B, N, D] */
    const float *dout = CF(dout_); /* [B, D] */
    float inv = (float)(1.0 / (N - n0));
#pragma omp parallel for if ((size_t)B * N * D > CPU_PAR_MIN) schedule(static)
    for (int row = 0; row < B * N; row++) {
        int b = row / N, n = row % N;
        float *r = dx + (size_t)row * D;
        const float *g = dout + (size_t)b * D;
        if (n < n0) {
            memset(r, 0, (size_t)D * sizeof(float));
            continue;
        }
#pragma omp simd
        for (int d = 0; d < D; d++) r[d] = g[d] * inv;
    }
}

void cpu_register_tokens(ms_backend *be) {
    be->patchify = cpu_patchify;
    be->unpatchify = cpu_unpatchify;
    be->tokens_assemble = cpu_tokens_assemble;
    be->tokens_assemble_bwd = cpu_tokens_assemble_bwd;
    be->tokens_slice = cpu_tokens_slice;
    be->tokens_slice_bwd = cpu_tokens_slice_bwd;
    be->tokens_mean = cpu_tokens_mean;
    be->tokens_mean_bwd = cpu_tokens_mean_bwd;
}
