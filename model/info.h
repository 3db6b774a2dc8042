/* The model summary printed by `modsquad info` and at the start of `train`. */
#ifndef MS_INFO_H
#define MS_INFO_H

#include <stdio.h>

#include "config.h"
#include "model.h"

/* Architecture, MoE layers, parameters (total, backbone, heads, active per token per task),
 * forward FLOPs per image per task and the memory plan of m (built for `batch` images; `act`
 * names the activation type, e.g. "fp32"). */
void ms_model_print_info(const ms_model *m, const ms_config *cfg, int batch, const char *act,
                         FILE *f);

#endif
