/* Counter-based random numbers: a value depends only on (seed, stream, counter), never on what
 * was drawn before, so initialisation, drop path and noisy gating are reproducible on every
 * backend and after resuming from a checkpoint at any step (DESIGN.md principle 5). */
#ifndef MS_RNG_H
#define MS_RNG_H

#include <stdint.h>

/* 64 random bits for (seed, stream, i): a splitmix64-style mix of the three. */
uint64_t ms_rng_bits(uint64_t seed, uint64_t stream, uint64_t i);
/* Uniform in [0, 1) with 53 random bits. */
double ms_rng_uniform(uint64_t seed, uint64_t stream, uint64_t i);
/* Standard normal (Box-Muller over counters 2i and 2i+1). */
double ms_rng_normal(uint64_t seed, uint64_t stream, uint64_t i);
/* Normal(0, std) truncated to [lo, hi] by redrawing (timm's trunc_normal_ with absolute bounds). */
double ms_rng_trunc_normal(uint64_t seed, uint64_t stream, uint64_t i, double std, double lo,
                           double hi);
/* A stream id from a name (e.g. a parameter name), so streams do not depend on table order. */
uint64_t ms_rng_stream(const char *name);

#endif
