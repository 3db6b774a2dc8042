#include "augment.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/util.h"
#include "../model/rng.h"

void *ms_buf_get(ms_buf *b, size_t bytes) {
    if (bytes > b->cap) {
        free(b->p);
        b->p = ms_malloc(bytes);
        b->cap = bytes;
    }
    return b->p;
}

void ms_buf_free(ms_buf *b) {
    free(b->p);
    b->p = NULL;
    b->cap = 0;
}

/* ---- random draws ---------------------------------------------------------------------------- */

/* Draw k (0..7) of a sample in an epoch: a pure function of (seed, epoch, sample, k), so the
 * augmentation of a sample does not depend on which worker decodes it or when. */
static double draw(uint64_t seed, int64_t epoch, int64_t sample, int k) {
    uint64_t stream = ms_rng_stream("data.augment");
    return ms_rng_uniform(seed, stream + (uint64_t)epoch * 0x9E3779B97F4A7C15ull,
                          (uint64_t)sample * 8u + (uint64_t)k);
}

void ms_aug_taskonomy(ms_aug *a, uint64_t seed, int64_t epoch, int64_t sample, int resize,
                      int size, int train) {
    memset(a, 0, sizeof *a);
    a->scale = 1.0;
    int room = resize - size; /* >= 0, checked when the dataset opens */
    if (!train) {
        a->crop_x = a->crop_y = (room + 1) / 2;
        return;
    }
    a->crop_x = (int)(draw(seed, epoch, sample, 0) * (room + 1));
    a->crop_y = (int)(draw(seed, epoch, sample, 1) * (room + 1));
    if (a->crop_x > room) a->crop_x = room;
    if (a->crop_y > room) a->crop_y = room;
    a->flip = draw(seed, epoch, sample, 2) < 0.5;
}

void ms_aug_pascal(ms_aug *a, uint64_t seed, int64_t epoch, int64_t sample, int train) {
    memset(a, 0, sizeof *a);
    a->scale = 1.0;
    if (!train) return;
    a->flip = draw(seed, epoch, sample, 0) < 0.5;
    /* ScaleNRotate(rots=(-20, 20), scales=(.75, 1.25)): uniform over each range. */
    a->angle = 40.0 * draw(seed, epoch, sample, 1) - 20.0;
    a->scale = 0.5 * draw(seed, epoch, sample, 2) + 0.75;
}

/* ---- Taskonomy: PIL resize, crop, flip ------------------------------------------------------- */

void ms_nearest_axis(int n_in, int R, int o0, int S, int flip, int32_t *idx) {
    /* Pillow (ImagingScaleAffine) steps the source position by repeated addition, and its
       rounding decides the positions that fall exactly on a pixel boundary: do the same. */
    double step = (double)n_in / R, pos = 0.5 * step;
    for (int o = 0; o < o0 + S; o++, pos += step) {
        if (o < o0) continue;
        int s = pos < 0.0 ? 0 : (int)pos;
        int i = o - o0;
        idx[flip ? S - 1 - i : i] = s >= n_in ? n_in - 1 : s;
    }
}

void ms_gather(const void *src, int W0, int C, int bytes, const int32_t *xi, const int32_t *yi,
               int S, void *dst) {
    if (bytes == 1) {
        const uint8_t *s = src;
        uint8_t *d = dst;
        for (int y = 0; y < S; y++) {
            const uint8_t *row = s + (size_t)yi[y] * W0 * C;
            for (int x = 0; x < S; x++, d += C) memcpy(d, row + (size_t)xi[x] * C, (size_t)C);
        }
    } else {
        const uint16_t *s = src;
        uint16_t *d = dst;
        for (int y = 0; y < S; y++) {
            const uint16_t *row = s + (size_t)yi[y] * W0 * C;
            for (int x = 0; x < S; x++, d += C)
                memcpy(d, row + (size_t)xi[x] * C, (size_t)C * sizeof(uint16_t));
        }
    }
}

#define PIL_PRECISION 22 /* Pillow's fixed-point bits for 8-bit resampling */

/* Pillow's precompute_coeffs for BILINEAR (support 1), restricted to the outputs o0..o0+S-1 of
 * a resize from n_in to R: tap start lo[i], tap count n[i], and fixed-point weights
 * w[i * K ..] (K = *taps per output). Weights are normalised in double, then rounded to
 * 2^-22 exactly as Pillow's normalize_coeffs_8bpc does. */
static void pil_coeffs(int n_in, int R, int o0, int S, int *lo, int *n, int32_t *w, int K) {
    double scale = (double)n_in / R, fscale = scale < 1.0 ? 1.0 : scale;
    double support = fscale, inv = 1.0 / fscale;
    double k[K];
    for (int i = 0; i < S; i++) {
        double center = (o0 + i + 0.5) * scale;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > n_in) xmax = n_in;
        int cnt = xmax - xmin;
        if (cnt > K) cnt = K;
        double sum = 0.0;
        for (int j = 0; j < cnt; j++) {
            double t = fabs((j + xmin - center + 0.5) * inv);
            k[j] = t < 1.0 ? 1.0 - t : 0.0;
            sum += k[j];
        }
        for (int j = 0; j < cnt; j++) {
            double v = sum != 0.0 ? k[j] / sum : 0.0;
            w[i * K + j] = (int32_t)(v < 0 ? v * (1 << PIL_PRECISION) - 0.5
                                           : v * (1 << PIL_PRECISION) + 0.5);
        }
        lo[i] = xmin;
        n[i] = cnt;
    }
}

static uint8_t clip8(int64_t ss) {
    ss >>= PIL_PRECISION;
    return (uint8_t)(ss < 0 ? 0 : ss > 255 ? 255 : ss);
}

void ms_resize_bilinear_crop_u8(const uint8_t *src, int W0, int H0, int C, int R, int x0, int y0,
                                int S, int flip, uint8_t *dst, ms_buf *ws) {
    int Kx = 2 * (int)ceil(W0 > R ? (double)W0 / R : 1.0) + 1;
    int Ky = 2 * (int)ceil(H0 > R ? (double)H0 / R : 1.0) + 1;
    /* scratch: x taps (lo, n [S], w [S, Kx]), y taps (same with Ky), horizontal pass
       [rows used, S, C] */
    size_t xt = (size_t)S * (2 * sizeof(int) + Kx * sizeof(int32_t));
    size_t yt = (size_t)S * (2 * sizeof(int) + Ky * sizeof(int32_t));
    /* scratch: x taps (lo, n [S], w [S, Kx]), y taps (the same with Ky), and the horizontal
       pass over the source rows the window reads ([<= H0, S, C], 8-bit like Pillow's
       intermediate image) */
    uint8_t *base = ms_buf_get(ws, xt + yt + (size_t)H0 * S * C);
    int *xlo = (int *)base, *xn = xlo + S;
    int32_t *xw = (int32_t *)(xn + S);
    int *ylo = (int *)(base + xt), *yn = ylo + S;
    int32_t *yw = (int32_t *)(yn + S);
    pil_coeffs(W0, R, x0, S, xlo, xn, xw, Kx);
    pil_coeffs(H0, R, y0, S, ylo, yn, yw, Ky);
    int r_first = H0, r_last = 0; /* source rows [r_first, r_last) the window reads */
    for (int i = 0; i < S; i++) {
        if (ylo[i] < r_first) r_first = ylo[i];
        if (ylo[i] + yn[i] > r_last) r_last = ylo[i] + yn[i];
    }
    int rows = r_last - r_first;
    uint8_t *tmp = base + xt + yt;
    const int64_t half = (int64_t)1 << (PIL_PRECISION - 1);
    for (int r = 0; r < rows; r++) {
        const uint8_t *srow = src + (size_t)(r_first + r) * W0 * C;
        uint8_t *trow = tmp + (size_t)r * S * C;
        for (int i = 0; i < S; i++)
            for (int c = 0; c < C; c++) {
                int64_t ss = half;
                for (int j = 0; j < xn[i]; j++)
                    ss += (int64_t)srow[(size_t)(xlo[i] + j) * C + c] * xw[i * Kx + j];
                trow[(size_t)i * C + c] = clip8(ss);
            }
    }
    for (int y = 0; y < S; y++) {
        uint8_t *drow = dst + (size_t)y * S * C;
        for (int i = 0; i < S; i++) {
            int dx = flip ? S - 1 - i : i;
            for (int c = 0; c < C; c++) {
                int64_t ss = half;
                for (int j = 0; j < yn[y]; j++)
                    ss += (int64_t)tmp[((size_t)(ylo[y] - r_first + j) * S + i) * C + c] *
                          yw[y * Ky + j];
                drow[(size_t)dx * C + c] = clip8(ss);
            }
        }
    }
}

/* ---- Gaussian blur (scipy.ndimage.gaussian_filter) ------------------------------------------- */

/* scipy's 'reflect' mode: d c b a | a b c d | d c b a (the edge sample repeats). */
static int reflect(int i, int n) {
    int period = 2 * n;
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - 1 - i;
}

void ms_gaussian_blur(float *x, int W, int H, double sigma, ms_buf *ws) {
    int radius = (int)(4.0 * sigma + 0.5);
    /* scratch: weights [2 radius + 1] (double), one line [max(W, H)] (double) */
    int L = W > H ? W : H;
    double *wt = ms_buf_get(ws, (size_t)(2 * radius + 1 + L) * sizeof(double));
    double *line = wt + 2 * radius + 1, sum = 0.0;
    for (int k = -radius; k <= radius; k++)
        sum += wt[k + radius] = exp(-0.5 * k * k / (sigma * sigma));
    for (int k = 0; k <= 2 * radius; k++) wt[k] /= sum;
    /* axis 0 (down the columns) first, then axis 1, each rounded to float as scipy stores it */
    for (int c = 0; c < W; c++) {
        for (int r = 0; r < H; r++) line[r] = x[(size_t)r * W + c];
        for (int r = 0; r < H; r++) {
            double acc = 0.0;
            for (int k = -radius; k <= radius; k++) acc += wt[k + radius] * line[reflect(r + k, H)];
            x[(size_t)r * W + c] = (float)acc;
        }
    }
    for (int r = 0; r < H; r++) {
        float *row = x + (size_t)r * W;
        for (int c = 0; c < W; c++) line[c] = row[c];
        for (int c = 0; c < W; c++) {
            double acc = 0.0;
            for (int k = -radius; k <= radius; k++) acc += wt[k + radius] * line[reflect(c + k, W)];
            row[c] = (float)acc;
        }
    }
}

/* ---- PASCAL: flip, warp, resize -------------------------------------------------------------- */

/* out = a o b for 2x3 affine maps (apply b first). */
static void compose(const double a[6], const double b[6], double out[6]) {
    double r[6] = {a[0] * b[0] + a[1] * b[3],        a[0] * b[1] + a[1] * b[4],
                   a[0] * b[2] + a[1] * b[5] + a[2], a[3] * b[0] + a[4] * b[3],
                   a[3] * b[1] + a[4] * b[4],        a[3] * b[2] + a[4] * b[5] + a[5]};
    memcpy(out, r, sizeof r);
}

void ms_warp_plan(ms_warp *w, const ms_aug *a, int W0, int H0, int OW, int OH) {
    memset(w, 0, sizeof *w);
    w->W0 = W0, w->H0 = H0, w->OW = OW, w->OH = OH, w->flip = a->flip;
    w->identity_warp = !a->flip && a->scale == 1.0 && a->angle == 0.0;
    /* cv2.resize's source coordinate of output pixel u: (u + 0.5) * W0 / OW - 0.5 */
    double su = (double)W0 / OW, sv = (double)H0 / OH;
    double resize[6] = {su, 0, 0.5 * su - 0.5, 0, sv, 0.5 * sv - 0.5};
    /* cv2.getRotationMatrix2D(centre, angle, scale) maps the flipped source to the warped
       image; warpAffine samples the source at its inverse. */
    double th = a->angle * M_PI / 180.0, al = a->scale * cos(th), be = a->scale * sin(th);
    double cx = W0 / 2.0, cy = H0 / 2.0;
    double m[6] = {al, be, (1 - al) * cx - be * cy, -be, al, be * cx + (1 - al) * cy};
    double det = m[0] * m[4] - m[1] * m[3];
    double *mi = w->m_inv;
    mi[0] = m[4] / det, mi[1] = -m[1] / det, mi[3] = -m[3] / det, mi[4] = m[0] / det;
    mi[2] = -(mi[0] * m[2] + mi[1] * m[5]);
    mi[5] = -(mi[3] * m[2] + mi[4] * m[5]);
    double flip[6] = {a->flip ? -1 : 1, 0, a->flip ? W0 - 1 : 0, 0, 1, 0};
    double t[6];
    compose(mi, resize, t);
    compose(flip, t, w->a);
}

/* OpenCV's cubic weights (A = -0.75) for fractional offset f. */
static void cubic_weights(double f, double k[4]) {
    const double A = -0.75;
    k[0] = ((A * (f + 1) - 5 * A) * (f + 1) + 8 * A) * (f + 1) - 4 * A;
    k[1] = ((A + 2) * f - (A + 3)) * f * f + 1;
    k[2] = ((A + 2) * (1 - f) - (A + 3)) * (1 - f) * (1 - f) + 1;
    k[3] = 1.0 - k[0] - k[1] - k[2];
}

void ms_warp_cubic(const ms_warp *w, const float *src, int C, float fill, float *dst) {
    const double *a = w->a;
    int W0 = w->W0, H0 = w->H0;
    size_t row_stride = (size_t)W0 * C;
    for (int v = 0; v < w->OH; v++)
        for (int u = 0; u < w->OW; u++) {
            float *o = dst + ((size_t)v * w->OW + u) * C;
            double x = a[0] * u + a[1] * v + a[2], y = a[3] * u + a[4] * v + a[5];
            if (x < -0.5 || y < -0.5 || x > W0 - 0.5 || y > H0 - 0.5) {
                for (int c = 0; c < C; c++) o[c] = fill;
                continue;
            }
            int ix = (int)floor(x), iy = (int)floor(y);
            double kx[4], ky[4];
            float acc[4] = {0, 0, 0, 0};
            cubic_weights(x - ix, kx);
            cubic_weights(y - iy, ky);
            if (ix >= 1 && iy >= 1 && ix + 2 < W0 && iy + 2 < H0) {
                /* all 16 taps inside: no clamping */
                const float *base = src + (size_t)(iy - 1) * row_stride + (size_t)(ix - 1) * C;
                for (int j = 0; j < 4; j++, base += row_stride) {
                    float kyj = (float)ky[j];
                    for (int i = 0; i < 4; i++) {
                        float k = kyj * (float)kx[i];
                        for (int c = 0; c < C; c++) acc[c] += k * base[i * C + c];
                    }
                }
            } else {
                for (int j = 0; j < 4; j++) {
                    int sy = iy - 1 + j;
                    sy = sy < 0 ? 0 : sy >= H0 ? H0 - 1 : sy;
                    const float *row = src + (size_t)sy * row_stride;
                    for (int i = 0; i < 4; i++) {
                        int sx = ix - 1 + i;
                        sx = sx < 0 ? 0 : sx >= W0 ? W0 - 1 : sx;
                        float k = (float)(ky[j] * kx[i]);
                        for (int c = 0; c < C; c++) acc[c] += k * row[(size_t)sx * C + c];
                    }
                }
            }
            for (int c = 0; c < C; c++) o[c] = acc[c];
        }
}

void ms_warp_nearest(const ms_warp *w, int32_t *idx) {
    int W0 = w->W0, H0 = w->H0;
    double su = (double)W0 / w->OW, sv = (double)H0 / w->OH;
    const double *mi = w->m_inv;
    for (int v = 0; v < w->OH; v++) {
        /* cv2.resize INTER_NEAREST: floor(v * H0 / OH), no half-pixel shift */
        int yr = (int)floor(v * sv);
        if (yr > H0 - 1) yr = H0 - 1;
        for (int u = 0; u < w->OW; u++) {
            int xr = (int)floor(u * su);
            if (xr > W0 - 1) xr = W0 - 1;
            int32_t *o = idx + (size_t)v * w->OW + u;
            if (w->identity_warp) {
                *o = yr * W0 + xr;
                continue;
            }
            /* warpAffine INTER_NEAREST rounds the inverse-mapped point */
            int qx = (int)floor(mi[0] * xr + mi[1] * yr + mi[2] + 0.5);
            int qy = (int)floor(mi[3] * xr + mi[4] * yr + mi[5] + 0.5);
            if (qx < 0 || qy < 0 || qx >= W0 || qy >= H0) {
                *o = -1;
                continue;
            }
            if (w->flip) qx = W0 - 1 - qx;
            *o = qy * W0 + qx;
        }
    }
}
