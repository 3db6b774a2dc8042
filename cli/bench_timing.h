/* A timing view of a backend for `modsquad bench`: a copy of an ms_backend whose every op calls
 * the real op and adds its wall time to a per-category table. The model runs on the copy
 * unchanged, so the table splits a training step by kind of work without touching model code.
 * The clock is read after be->synchronize on both sides of the op, so asynchronous (GPU)
 * backends are timed right too, at the cost of serialising them. */
#ifndef MS_BENCH_TIMING_H
#define MS_BENCH_TIMING_H

#include "../kernels/backend.h"

typedef enum {
    MS_CAT_GEMM,      /* linear, expert_linear, conv2d (forward and backward) */
    MS_CAT_ATTENTION, /* the attention cores: softmax(q k^T) v, dense and multi-query */
    MS_CAT_MOE,       /* routing, noisy gating, dispatch plan, gather, combine, MI/balance stats */
    MS_CAT_NORM_ACT,  /* LayerNorm, BatchNorm, GELU, ReLU, softmax, L2 normalise, upsampling */
    MS_CAT_PLUMBING,  /* residual adds, task embeddings, drop path, patchify, token slicing */
    MS_CAT_LOSS,      /* task losses, task weighting, the MI and balance losses */
    MS_CAT_OPTIM,     /* AdamW, gradient norm and scaling */
    MS_CAT_MEMORY,    /* uploads, downloads, zeroing and copies (batch upload, zero_grads) */
    MS_CAT_DATA,      /* waiting in ms_loader_next (charged by the caller) */
    MS_CAT_N
} ms_time_cat;

extern const char *const ms_time_cat_names[MS_CAT_N]; /* JSON-friendly names */

typedef struct {
    ms_backend be;       /* the copy the model runs on: MUST stay the first member */
    ms_backend *real;    /* the backend that does the work */
    double sec[MS_CAT_N]; /* wall seconds per category since the last reset */
    long allocs, frees;  /* be->alloc / be->free calls since the last reset (a step makes none) */
} ms_timed_backend;

/* Fills tb with a timed copy of real (which must outlive it). */
void ms_timed_backend_init(ms_timed_backend *tb, ms_backend *real);
void ms_timed_backend_reset(ms_timed_backend *tb);

#endif
