#include "params.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/util.h"

#define ALIGN_FLOATS 16

int ms_params_add(ms_param_table *pt, const char *name, int ndim, const int64_t *shape, int decay) {
    MS_ASSERT(ndim >= 1 && ndim <= MS_MAX_DIMS);
    MS_ASSERT(strlen(name) < MS_TENSOR_NAME_MAX);
    MS_ASSERT(ms_params_find(pt, name) < 0);
    if (pt->n == pt->cap) {
        pt->cap = pt->cap ? 2 * pt->cap : 64;
        ms_tensor_info *t = realloc(pt->t, (size_t)pt->cap * sizeof *t);
        if (!t) ms_fatal("out of memory growing the parameter table to %d tensors", pt->cap);
        pt->t = t;
    }
    ms_tensor_info *t = &pt->t[pt->n];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < ndim; i++) {
        MS_ASSERT(shape[i] >= 1);
        t->shape[i] = shape[i];
        t->numel *= (size_t)shape[i];
    }
    t->offset = (pt->total + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
    t->decay = decay;
    pt->total = t->offset + t->numel;
    return pt->n++;
}

void ms_params_set_buffer(ms_param_table *pt, int i) {
    MS_ASSERT(i >= 0 && i < pt->n);
    pt->t[i].buffer = 1;
    pt->t[i].decay = 0;
}

int ms_params_find(const ms_param_table *pt, const char *name) {
    for (int i = 0; i < pt->n; i++)
        if (strcmp(pt->t[i].name, name) == 0) return i;
    return -1;
}

size_t ms_params_count(const ms_param_table *pt) {
    size_t n = 0;
    for (int i = 0; i < pt->n; i++) n += pt->t[i].numel;
    return n;
}

void ms_params_free(ms_param_table *pt) {
    free(pt->t);
    memset(pt, 0, sizeof *pt);
}

const char *ms_shape_str(const ms_tensor_info *t, char *buf, size_t cap) {
    size_t used = (size_t)snprintf(buf, cap, "(");
    for (int i = 0; i < t->ndim && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%lld", i ? ", " : "",
                                 (long long)t->shape[i]);
    if (used < cap) snprintf(buf + used, cap - used, ")");
    return buf;
}
