/* Helpers of the simt tests (tests/simt/test_*.c, Criterion, linked into build/tests/run_simt):
 * the emulated CUDA backend next to the CPU backend, buffers on either, bf16 rounding of test
 * inputs, and running the fault helper (build/tests/simt_faults) in a subprocess.
 *
 * Tolerances used by the comparisons of the CUDA ops with the CPU ops (relative error of the
 * whole output, tu_expect_close):
 *   SIM_TOL_F32   fp32 activations. Both sides compute in fp32 (double where the CPU uses double)
 *                 and differ only in summation order and libm ulps: 1e-6 (integer outputs such as
 *                 top-k indices and dispatch permutations must be identical).
 *   SIM_TOL_BF16  bf16 activations. The CPU op runs on the same bf16-rounded inputs in fp32; the
 *                 CUDA op rounds its output (and GEMM operands) to bf16 (8 bits of mantissa,
 *                 relative step 2^-8): 1e-2. */
#ifndef MS_SIMT_HARNESS_H
#define MS_SIMT_HARNESS_H

#include "../testutil.h"

#include <stddef.h>
#include <stdint.h>

#include "../../kernels/cuda/backend_cuda.h"

#define SIM_TOL_F32 1e-6
#define SIM_TOL_BF16 1e-2

/* The emulated CUDA backend with the given activation type (one per type and test process). */
ms_backend *sim_cuda(ms_dtype act);
/* Tolerance for ops whose outputs are activations of be. */
double sim_tol(const ms_backend *be);

/* Device buffers of `be` holding a copy of host data; freed by sim_free_all(). */
void *sim_act(ms_backend *be, const float *host, size_t n);  /* activations (converted) */
float *sim_f32(ms_backend *be, const float *host, size_t n); /* fp32 */
int32_t *sim_i32(ms_backend *be, const int32_t *host, size_t n);
/* Device buffer of n bytes filled with 0xff bytes (NaN floats): an op that reads an output it
 * should only write then shows it. */
void *sim_garbage(ms_backend *be, size_t bytes);
/* Host copies (tu_ buffers) of device data. */
float *sim_get_act(ms_backend *be, const void *dev, size_t n);
float *sim_get_f32(ms_backend *be, const float *dev, size_t n);
int32_t *sim_get_i32(ms_backend *be, const int32_t *dev, size_t n);
/* Frees every buffer made above on every backend (call at the end of a test, so the device
 * memory accounting and leak checks see a clean state). */
void sim_free_all(void);

/* Rounds x[n] to bf16 (round to nearest even) when be has bf16 activations: what the CUDA
 * backend's upload_act does, applied to the CPU op's input so both ops see the same values. */
void sim_round_like(const ms_backend *be, float *x, size_t n);
float sim_bf16_round(float x);

/* Compares got with the fp32 reference ref (both host, n values) with tu_expect_close. */
void sim_expect_close(const char *what, const float *got, const float *ref, size_t n, double tol);
void sim_expect_ints(const char *what, const int32_t *got, const int32_t *ref, size_t n);

/* Criterion .init hook for tests that expect the program to stop with a message: keeps the
 * expected message out of the test log. */
void sim_silence_stderr(void);

/* Runs build/tests/simt_faults FAULT in a subprocess with ASan reporting to stderr and leak
 * detection off; returns its stderr (tu_ buffer) and stores the wait status in *status. */
char *sim_run_fault(const char *fault, int *status);

#endif
