#include "util.h"

#include <stdarg.h>
#include <stdlib.h>
#include <time.h>

void ms_fatal(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("modsquad: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

void ms_warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("modsquad: warning: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void *ms_malloc_at(size_t bytes, const char *file, int line) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) ms_fatal("%s:%d: out of memory allocating %zu bytes", file, line, bytes);
    return p;
}

void *ms_calloc_at(size_t n, size_t size, const char *file, int line) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) ms_fatal("%s:%d: out of memory allocating %zu x %zu bytes", file, line, n, size);
    return p;
}

double ms_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
