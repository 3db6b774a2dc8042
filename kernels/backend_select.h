/* Choosing the backend from run.device (auto | cpu | cuda | cuda:N) and the precision. */
#ifndef MS_BACKEND_SELECT_H
#define MS_BACKEND_SELECT_H

#include <stddef.h>

#include "backend.h"

/* Precision requests of ms_backend_create, or-ed together (0: fp32 throughout). */
#define MS_BACKEND_BF16 1u /* bf16 activations and GEMMs (train.precision: bf16), CUDA only */
#define MS_BACKEND_TF32 2u /* fp32 GEMMs and convolutions may use TF32 tensor cores (train.tf32);
                            * the CPU backend, always exact fp32, ignores it */

/* The backend for `device` (NULL means "auto"):
 *   auto    the CUDA backend on GPU 0 when this build has CUDA and a GPU is present, else the CPU
 *   cpu     the CPU backend with `threads` OpenMP threads (<= 0: OpenMP's default)
 *   cuda    the CUDA backend on GPU 0; cuda:N on GPU N
 * with the MS_BACKEND_* requests of `precision`. Returns NULL with the reason in err[cap] (an
 * unknown device string, no CUDA in this build, no GPU, a GPU index out of range, bf16 without a
 * GPU); never exits. */
ms_backend *ms_backend_create(const char *device, int threads, unsigned precision, char *err,
                              size_t cap);

/* How many ops of be are missing (NULL). Every member of struct ms_backend from `add` to
 * `sumsq` is an op pointer. The CPU backend has all of them. */
int ms_backend_missing_ops(const ms_backend *be);

/* 1 when this build includes the CUDA backend. */
int ms_backend_has_cuda(void);

#endif
