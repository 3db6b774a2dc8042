/* The parameter table of the safetensors seed: make_seeds.c writes its checkpoint with it and
 * fuzz_safetensors.c loads every parsed file into it, so mutations of a real checkpoint reach
 * the shape and name checks of ms_safetensors_load_params. */
#ifndef MS_FUZZ_SEED_TABLE_H
#define MS_FUZZ_SEED_TABLE_H

#include <string.h>

#include "../../model/params.h"

static inline void fuzz_seed_table(ms_param_table *pt) {
    memset(pt, 0, sizeof *pt);
    ms_params_add(pt, "patch_embed.proj.weight", 4, (const int64_t[]){4, 3, 2, 2}, 1);
    ms_params_add(pt, "patch_embed.proj.bias", 1, (const int64_t[]){4}, 0);
    ms_params_add(pt, "blocks.0.mlp.experts.w", 3, (const int64_t[]){2, 4, 3}, 1);
}

#endif
