#include "rng.h"

#include <math.h>

static uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t ms_rng_bits(uint64_t seed, uint64_t stream, uint64_t i) {
    return mix(mix(mix(seed + 0x9E3779B97F4A7C15ull) ^ stream) + i * 0x9E3779B97F4A7C15ull);
}

double ms_rng_uniform(uint64_t seed, uint64_t stream, uint64_t i) {
    return (double)(ms_rng_bits(seed, stream, i) >> 11) * 0x1.0p-53;
}

double ms_rng_normal(uint64_t seed, uint64_t stream, uint64_t i) {
    double u1 = ms_rng_uniform(seed, stream, 2 * i), u2 = ms_rng_uniform(seed, stream, 2 * i + 1);
    if (u1 < 0x1.0p-60) u1 = 0x1.0p-60;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

double ms_rng_trunc_normal(uint64_t seed, uint64_t stream, uint64_t i, double std, double lo,
                           double hi) {
    /* Redraws use counters far from the first draws of other indices. */
    for (uint64_t k = 0;; k++) {
        double v = std * ms_rng_normal(seed, stream, i + k * 0x100000000ull);
        if (v >= lo && v <= hi) return v;
    }
}

uint64_t ms_rng_stream(const char *name) {
    uint64_t h = 0xCBF29CE484222325ull; /* FNV-1a */
    for (; *name; name++) h = (h ^ (unsigned char)*name) * 0x100000001B3ull;
    return mix(h);
}
