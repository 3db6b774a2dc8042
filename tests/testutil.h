/* Shared helpers for the Criterion tests: random data, error measures against double
 * references, and central finite differences in double precision. */
#ifndef MS_TESTUTIL_H
#define MS_TESTUTIL_H

#include <criterion/criterion.h>
#include <stddef.h>
#include <stdint.h>

#include "../kernels/backend.h"

/* One CPU backend per test process (Criterion runs each test in its own process). */
ms_backend *tu_cpu(void);

/* Deterministic generator for test data (splitmix64). */
typedef struct { uint64_t s; } tu_rng;
tu_rng tu_seed(uint64_t seed);
double tu_uniform(tu_rng *r);                      /* [0, 1) */
double tu_normal(tu_rng *r);                       /* N(0, 1) */
int tu_randint(tu_rng *r, int lo, int hi);         /* [lo, hi] */
void tu_fill(tu_rng *r, float *x, size_t n, double lo, double hi);
void tu_fill_normal(tu_rng *r, float *x, size_t n, double std);

/* Host buffers, freed at process exit (each Criterion test is its own process). */
float *tu_floats(size_t n);
double *tu_doubles(size_t n);
int32_t *tu_ints(size_t n);
uint8_t *tu_bytes(size_t n);
void tu_to_double(double *dst, const float *src, size_t n);
/* A backend buffer holding a copy of host[n] (fp32 activations), and a host copy of one. */
float *tu_dev_from(const float *host, size_t n);
float *tu_to_host(const float *dev, size_t n);
/* A fresh directory /tmp/ms_TAG_XXXXXX written into dir[cap], and its removal with everything
 * in it (for a suite's .init / .fini). */
void tu_tmpdir_make(char *dir, size_t cap, const char *tag);
void tu_tmpdir_remove(const char *dir);
/* Fills x[n] with NaN: an op that reads an output it should only write then fails. */
void tu_fill_nan(float *x, size_t n);
void tu_to_float(float *dst, const double *src, size_t n);

/* ||got - ref|| / max(||ref||, tiny), Euclidean norms over n values. */
double tu_rel_err(const float *got, const double *ref, size_t n);

/* Fails the test, naming `what`, when tu_rel_err(got, ref) > tol; prints the worst entry. */
void tu_expect_close(const char *what, const float *got, const double *ref, size_t n, double tol);
/* Same for two float arrays compared exactly (bit-identical). */
void tu_expect_equal(const char *what, const float *got, const float *ref, size_t n);

/* Central finite differences of a scalar function f(x) in double precision:
 * grad[i] = (f(x + h e_i) - f(x - h e_i)) / 2h for the n_idx indices in idx (all of x when
 * idx is NULL, n_idx = n). x is restored afterwards. */
typedef double (*tu_scalar_fn)(void *ctx, const double *x);
void tu_fd_grad(tu_scalar_fn f, void *ctx, double *x, size_t n, const size_t *idx, size_t n_idx,
                double h, double *grad);

/* Compares an analytic gradient (float, from the op) with finite differences (double) on the
 * given indices: relative error of the two vectors restricted to idx must be <= tol. */
void tu_expect_grad(const char *what, const float *analytic, const double *fd, const size_t *idx,
                    size_t n_idx, double tol);

/* Up to max_n distinct indices sampled from [0, n) (all of them when n <= max_n), sorted.
 * Returns how many were written to out (which must hold max_n). */
size_t tu_sample_indices(tu_rng *r, size_t n, size_t max_n, size_t *out);

#endif
