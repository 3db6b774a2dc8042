/* The parameter table (DESIGN.md principle 3): every parameter lives in ONE contiguous fp32
 * buffer, described by a table of named tensors (official PyTorch state_dict names, shapes and
 * offsets). The table drives checkpoints, the optimizer (decay flags), the gradient all-reduce
 * (one flat buffer) and expert extraction. Gradients and optimizer moments mirror the layout. */
#ifndef MS_PARAMS_H
#define MS_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#define MS_MAX_DIMS 4
#define MS_TENSOR_NAME_MAX 96

typedef struct {
    char name[MS_TENSOR_NAME_MAX];   /* e.g. "blocks.3.mlp.experts.w" */
    int ndim;
    int64_t shape[MS_MAX_DIMS];
    size_t numel;
    size_t offset;            /* in floats from the start of the flat buffer, 16-float aligned */
    int decay;                /* AdamW weight decay applies */
    int buffer;               /* not trained (BatchNorm running statistics): the optimizer skips
                               * it, checkpoints keep it */
} ms_tensor_info;

typedef struct {
    ms_tensor_info *t;        /* [n] in registration order */
    int n, cap;
    size_t total;             /* floats in the flat buffer, alignment padding included */
} ms_param_table;

/* Appends a tensor; offsets are aligned to 16 floats (64 bytes) so every tensor starts on a
 * cache line. Returns its index. A duplicate name is an internal error. */
int ms_params_add(ms_param_table *pt, const char *name, int ndim, const int64_t *shape, int decay);
/* Marks tensor i as a buffer (saved, never trained). */
void ms_params_set_buffer(ms_param_table *pt, int i);
/* Index of the tensor called `name`, or -1. */
int ms_params_find(const ms_param_table *pt, const char *name);
/* Sum of numel over all tensors (without padding). */
size_t ms_params_count(const ms_param_table *pt);
void ms_params_free(ms_param_table *pt);
/* "(384, 3, 16, 16)" into buf. */
const char *ms_shape_str(const ms_tensor_info *t, char *buf, size_t cap);

#endif
