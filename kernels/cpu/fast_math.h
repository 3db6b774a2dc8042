/* Vectorisable float exp and row softmax shared by the CPU ops that exponentiate many values
 * (GELU, softmax, the attention scores, cross-entropy).
 *
 * glibc only provides SIMD expf under -ffast-math, which the build does not use, and a scalar
 * expf costs several ns per element: in the attention forward of ViT-small it took longer than
 * the two score GEMMs around it. exp_f is written with selects instead of branches so that GCC
 * vectorises every loop that calls it. */
#ifndef MS_CPU_FAST_MATH_H
#define MS_CPU_FAST_MATH_H

#include <stdint.h>

/* e^x in float, relative error < 2e-7 for x in [-87, 88]; 0 below -87 (e^-87 is at the edge
 * of the normal floats), saturates above 88. Range reduction x = n ln2 + r, |r| <= ln2/2, then
 * a degree-7 Taylor polynomial (truncation error r^8/8! < 6e-9) scaled by 2^n built from its
 * bits. */
static inline float exp_f(float x) {
    float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    /* Adding and subtracting 1.5 * 2^23 rounds to the nearest integer (vectorisable). */
    float nf = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    /* ln2 split in two so that n * ln2_hi is exact for |n| <= 128. */
    float r = (xc - nf * 0.693145751953125f) - nf * 1.42860682030941723e-06f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)nf + 127) << 23;
    float scale;
    __builtin_memcpy(&scale, &bits, sizeof scale);
    return x < -87.0f ? 0.0f : p * scale;
}

/* Elements per float partial sum in the row reductions below: each of the (up to 16) vector
 * lanes adds at most 16 values in float, and the block sums are added in double. A double
 * accumulator inside the vector loop made the softmax 4x slower (the float -> double widening
 * halves the lanes and lengthens the add chain), and a whole row in float would lose accuracy
 * on long rows; blocks keep the error of a sum near one float rounding for any length. */
#define ROW_SUM_BLOCK 256

/* y[n] = softmax(x[n]) (y may alias x). Subtracting the row max keeps every exponent <= 0: no
 * overflow, and the largest term is exactly 1 so the sum cannot underflow to 0. The simd
 * reductions are vector-lane sums in a fixed order, not thread reductions, so the result is
 * the same on every run. */
static inline void softmax_row(float *y, const float *x, int n) {
    float mx = x[0];
#pragma omp simd reduction(max : mx)
    for (int j = 1; j < n; j++) mx = x[j] > mx ? x[j] : mx;
    double sum = 0;
    for (int j0 = 0; j0 < n; j0 += ROW_SUM_BLOCK) {
        const int j1 = n - j0 < ROW_SUM_BLOCK ? n : j0 + ROW_SUM_BLOCK;
        float part = 0;
#pragma omp simd reduction(+ : part)
        for (int j = j0; j < j1; j++) {
            float e = exp_f(x[j] - mx);
            y[j] = e;
            part += e;
        }
        sum += part;
    }
    float inv = (float)(1.0 / sum);
#pragma omp simd
    for (int j = 0; j < n; j++) y[j] *= inv;
}

/* a[n] . b[n]: float partial sums over blocks of ROW_SUM_BLOCK values (vector lanes, a fixed
 * order) added in double, as the softmax rows below: near one float rounding for any
 * n, at vector speed (a double accumulator would not vectorise). */
static inline double dot_blocks(const float *a, const float *b, int n) {
    double sum = 0.0;
    for (int i0 = 0; i0 < n; i0 += ROW_SUM_BLOCK) {
        const int i1 = n - i0 < ROW_SUM_BLOCK ? n : i0 + ROW_SUM_BLOCK;
        float part = 0.0f;
#pragma omp simd reduction(+ : part)
        for (int i = i0; i < i1; i++) part += a[i] * b[i];
        sum += part;
    }
    return sum;
}

/* dx[n] = y (dy - sum_j dy_j y_j): the softmax Jacobian applied to dy (dx may alias dy). */
static inline void softmax_row_bwd(float *dx, const float *dy, const float *y, int n) {
    float d = (float)dot_blocks(dy, y, n);
#pragma omp simd
    for (int j = 0; j < n; j++) dx[j] = y[j] * (dy[j] - d);
}

#endif
