#include "arena.h"

#include "../kernels/util.h"

void ms_arena_measure(ms_arena *a) { a->base = NULL, a->used = 0, a->cap = 0; }

size_t ms_arena_size(const ms_arena *a) { return a->used; }

void ms_arena_place(ms_arena *a, void *base, size_t cap) {
    a->base = base, a->used = 0, a->cap = cap;
}

void *ms_arena_alloc(ms_arena *a, size_t bytes) {
    size_t start = a->used;
    a->used += (bytes + 63) & ~(size_t)63;
    if (!a->base) return (void *)(uintptr_t)(start + 64); /* never dereferenced: measuring */
    MS_ASSERT(a->used <= a->cap);
    return a->base + start;
}
