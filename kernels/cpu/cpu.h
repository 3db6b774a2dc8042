/* Internal to the CPU backend: activations are fp32 host memory, so ops cast ms_act pointers
 * to float. Each op family registers its function pointers from its own file. */
#ifndef MS_CPU_H
#define MS_CPU_H

#include "../backend.h"

#include <cblas.h>
#include <omp.h>

/* OpenBLAS's cblas.h pulls in <complex.h>, whose imaginary unit `I` would shadow the
 * in-features letter of backend.h; nothing in the CPU backend uses complex numbers. */
#undef I

#define F(p) ((float *)(p))
#define CF(p) ((const float *)(p))

/* Below this much work (multiply-adds or elements) an op runs on one thread: OpenMP's fork
 * costs more than it saves. */
#define CPU_PAR_MIN 32768

void cpu_register_elementwise(ms_backend *be); /* add, add_row, sum_rows, scale, drop path, gelu, softmax */
void cpu_register_tokens(ms_backend *be);      /* patchify, unpatchify, tokens_*          */
void cpu_register_linear(ms_backend *be);      /* linear, layernorm                        */
void cpu_register_attention(ms_backend *be);   /* attention, mq_attention                  */
void cpu_register_moe(ms_backend *be);         /* route, dispatch, combine, experts, MI    */
void cpu_register_losses(ms_backend *be);      /* task losses, uncertainty weighting       */
void cpu_register_conv(ms_backend *be);        /* conv2d, batchnorm, relu, upsample        */
void cpu_register_optimizer(ms_backend *be);   /* adamw, sumsq                             */

#endif
