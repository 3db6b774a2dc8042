/* Error reporting and small helpers shared by every layer (DESIGN.md principle 6: errors name
 * the file, line or key and what to do; every library call is checked). */
#ifndef MS_UTIL_H
#define MS_UTIL_H

#include <stddef.h>
#include <stdio.h>

#if defined(__GNUC__)
#define MS_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define MS_NORETURN __attribute__((noreturn))
#else
#define MS_PRINTF(a, b)
#define MS_NORETURN
#endif

/* Prints "modsquad: error: <message>" to stderr and exits with status 1. */
MS_NORETURN void ms_fatal(const char *fmt, ...) MS_PRINTF(1, 2);
/* Prints "modsquad: warning: <message>" to stderr. */
void ms_warn(const char *fmt, ...) MS_PRINTF(1, 2);

/* An internal invariant; failing it is a bug in modsquad, reported with file:line. */
#define MS_ASSERT(cond)                                                                        \
    do {                                                                                       \
        if (!(cond)) ms_fatal("%s:%d: internal check failed: %s", __FILE__, __LINE__, #cond); \
    } while (0)

/* malloc/calloc that report the size and the caller's file:line when memory runs out. */
void *ms_malloc_at(size_t bytes, const char *file, int line);
void *ms_calloc_at(size_t n, size_t size, const char *file, int line);
#define ms_malloc(bytes) ms_malloc_at((bytes), __FILE__, __LINE__)
#define ms_calloc(n, size) ms_calloc_at((n), (size), __FILE__, __LINE__)

/* Monotonic wall-clock seconds. */
double ms_now(void);

#endif
