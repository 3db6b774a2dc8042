/* The activation arena (DESIGN.md principle 4): every activation buffer of a step is carved out
 * of one backend allocation sized from the config at start-up, so the step loop never
 * allocates and the memory plan is known (and printed) before training starts.
 *
 * Use: run the model's allocation sequence once with a measuring arena (base NULL: pointers are
 * fake, only sizes count), allocate `ms_arena_size` bytes, then run the SAME sequence again with
 * ms_arena_place to get the real pointers. */
#ifndef MS_ARENA_H
#define MS_ARENA_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t *base;  /* NULL while measuring */
    size_t used;    /* bytes handed out so far, 64-byte aligned pieces */
    size_t cap;     /* bytes available (0 while measuring) */
} ms_arena;

/* A measuring arena. */
void ms_arena_measure(ms_arena *a);
/* Bytes the measured sequence needs. */
size_t ms_arena_size(const ms_arena *a);
/* Starts placing into base[cap] (a backend allocation). */
void ms_arena_place(ms_arena *a, void *base, size_t cap);
/* bytes rounded up to 64; NULL-based fake pointer while measuring. Running past cap is an
 * internal error (the two sequences differed). */
void *ms_arena_alloc(ms_arena *a, size_t bytes);

#endif
