/* The CUDA backend's entry points, callable from C (kernels/backend_select.c). */
#ifndef MS_BACKEND_CUDA_H
#define MS_BACKEND_CUDA_H

#include <stddef.h>

#include "../backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A backend on CUDA device `device` with activations of type act_dtype (MS_F32 or MS_BF16);
 * tf32 != 0 lets its fp32 GEMMs and convolutions round their operands to TF32 on the tensor
 * cores (train.tf32). NULL when it cannot be created (no device, bad ordinal, too old a GPU,
 * out of memory), with the reason in err[cap]. */
ms_backend *ms_backend_cuda_create(int device, ms_dtype act_dtype, int tf32, char *err,
                                   size_t cap);

/* Number of usable CUDA devices; 0 when there is none or no working driver, with the runtime's
 * reason in err[cap] (err may be NULL). */
int ms_cuda_device_count(char *err, size_t cap);

#ifdef __cplusplus
}
#endif

#endif
