/* Checks the harnesses make on what a successful read returns. */
#ifndef MS_FUZZ_CHECK_H
#define MS_FUZZ_CHECK_H

#include <sanitizer/asan_interface.h>
#include <stdio.h>
#include <stdlib.h>

/* Every byte of [p, p + bytes) must belong to a live allocation (or the stack): a size that a
 * reader reports larger than what it allocated aborts here. Asking ASan's shadow memory costs
 * nothing next to reading the bytes, which for a 50 MB image took most of a run's time. */
static inline void fuzz_expect_addressable(const void *p, size_t bytes, const char *what) {
    if (!bytes) return;
    void *bad = __asan_region_is_poisoned((void *)p, bytes);
    if (bad) {
        fprintf(stderr, "%s: %zu bytes reported at %p, but byte %zu is not addressable\n", what,
                bytes, p, (size_t)((char *)bad - (const char *)p));
        abort();
    }
}

#endif
