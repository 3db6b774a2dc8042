#define _XOPEN_SOURCE 700
#include "testutil.h"

#include <ftw.h>
#include <sys/stat.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

ms_backend *tu_cpu(void) {
    static ms_backend *be;
    if (!be) be = ms_backend_cpu_create(0);
    return be;
}

tu_rng tu_seed(uint64_t seed) {
    tu_rng r = {seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull};
    return r;
}

static uint64_t next_u64(tu_rng *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double tu_uniform(tu_rng *r) { return (double)(next_u64(r) >> 11) * 0x1.0p-53; }

double tu_normal(tu_rng *r) {
    double u1 = tu_uniform(r), u2 = tu_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

int tu_randint(tu_rng *r, int lo, int hi) {
    return lo + (int)(next_u64(r) % (uint64_t)(hi - lo + 1));
}

void tu_fill(tu_rng *r, float *x, size_t n, double lo, double hi) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(lo + (hi - lo) * tu_uniform(r));
}

void tu_fill_normal(tu_rng *r, float *x, size_t n, double std) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(std * tu_normal(r));
}

static void *tu_alloc(size_t bytes) {
    void *p = calloc(bytes ? bytes : 1, 1);
    cr_assert_not_null(p, "test allocation of %zu bytes failed", bytes);
    return p;
}

float *tu_floats(size_t n) { return tu_alloc(n * sizeof(float)); }
double *tu_doubles(size_t n) { return tu_alloc(n * sizeof(double)); }
int32_t *tu_ints(size_t n) { return tu_alloc(n * sizeof(int32_t)); }
uint8_t *tu_bytes(size_t n) { return tu_alloc(n); }

float *tu_dev_from(const float *host, size_t n) {
    ms_backend *be = tu_cpu();
    float *d = be->alloc(be, (n ? n : 1) * sizeof(float));
    cr_assert_not_null(d, "backend alloc of %zu floats failed", n);
    be->upload_act(be, d, host, n);
    return d;
}

float *tu_to_host(const float *dev, size_t n) {
    float *h = tu_floats(n);
    tu_cpu()->download_act(tu_cpu(), h, dev, n);
    return h;
}

void tu_tmpdir_make(char *dir, size_t cap, const char *tag) {
    snprintf(dir, cap, "/tmp/ms_%s_XXXXXX", tag);
    cr_assert_not_null(mkdtemp(dir), "mkdtemp(%s) failed", dir);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

void tu_tmpdir_remove(const char *dir) {
    if (dir[0]) nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

void tu_fill_nan(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = NAN;
}

void tu_to_double(double *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = src[i];
}

void tu_to_float(float *dst, const double *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = (float)src[i];
}

double tu_rel_err(const float *got, const double *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
    }
    if (den < 1e-300) return sqrt(num);
    return sqrt(num / den);
}

void tu_expect_close(const char *what, const float *got, const double *ref, size_t n, double tol) {
    for (size_t i = 0; i < n; i++)
        cr_assert(isfinite(got[i]), "%s: entry %zu is %f (not finite)", what, i, (double)got[i]);
    double e = tu_rel_err(got, ref, n);
    if (e > tol) {
        size_t worst = 0;
        double wd = -1;
        for (size_t i = 0; i < n; i++) {
            double d = fabs((double)got[i] - ref[i]);
            if (d > wd) wd = d, worst = i;
        }
        cr_assert_fail("%s: relative error %.3g > %.3g over %zu values (worst [%zu]: got %.9g, want %.9g)",
                what, e, tol, n, worst, (double)got[worst], ref[worst]);
    }
}

void tu_expect_equal(const char *what, const float *got, const float *ref, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (memcmp(&got[i], &ref[i], sizeof(float)) != 0)
            cr_assert_fail("%s: differs at [%zu]: %.9g vs %.9g", what, i, (double)got[i], (double)ref[i]);
}

void tu_fd_grad(tu_scalar_fn f, void *ctx, double *x, size_t n, const size_t *idx, size_t n_idx,
                double h, double *grad) {
    for (size_t k = 0; k < (idx ? n_idx : n); k++) {
        size_t i = idx ? idx[k] : k;
        double x0 = x[i];
        x[i] = x0 + h;
        double fp = f(ctx, x);
        x[i] = x0 - h;
        double fm = f(ctx, x);
        x[i] = x0;
        grad[k] = (fp - fm) / (2 * h);
    }
}

void tu_expect_grad(const char *what, const float *analytic, const double *fd, const size_t *idx,
                    size_t n_idx, double tol) {
    double num = 0, den = 0, wd = -1;
    size_t worst = 0;
    for (size_t k = 0; k < n_idx; k++) {
        size_t i = idx ? idx[k] : k;
        cr_assert(isfinite(analytic[i]), "%s: gradient entry %zu is not finite", what, i);
        double d = (double)analytic[i] - fd[k];
        num += d * d;
        den += fd[k] * fd[k];
        if (fabs(d) > wd) wd = fabs(d), worst = k;
    }
    double e = den < 1e-300 ? sqrt(num) : sqrt(num / den);
    if (e > tol) {
        size_t i = idx ? idx[worst] : worst;
        cr_assert_fail("%s: gradient relative error %.3g > %.3g over %zu entries (worst [%zu]: op %.9g, "
                "finite differences %.9g)",
                what, e, tol, n_idx, i, (double)analytic[i], fd[worst]);
    }
}

static int cmp_size(const void *a, const void *b) {
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return (x > y) - (x < y);
}

size_t tu_sample_indices(tu_rng *r, size_t n, size_t max_n, size_t *out) {
    if (n <= max_n) {
        for (size_t i = 0; i < n; i++) out[i] = i;
        return n;
    }
    size_t k = 0;
    while (k < max_n) {
        size_t c = (size_t)(tu_uniform(r) * (double)n);
        if (c >= n) c = n - 1;
        int dup = 0;
        for (size_t j = 0; j < k; j++) dup |= out[j] == c;
        if (!dup) out[k++] = c;
    }
    qsort(out, k, sizeof *out, cmp_size);
    return k;
}
