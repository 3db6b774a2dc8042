/* libFuzzer harness: .npy reading (data/npy.c). The input is the file. It is read into a fresh
 * array, again into the same array (buffer reuse), with a required count taken from the first
 * read (which must then agree), and into a small borrowed buffer, which must be refused rather
 * than overrun. The values reported must all lie in the buffer. */
#include "fuzz_file.h" /* first: it defines _GNU_SOURCE */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../data/npy.h"
#include "fuzz_check.h"

static void check(const ms_npy *a) {
    if (a->ndim < 0 || a->ndim > MS_NPY_MAX_DIMS || a->count > a->capacity) abort();
    size_t n = 1;
    for (int d = 0; d < a->ndim; d++) n *= (size_t)a->shape[d];
    if (n != a->count) abort();
    fuzz_expect_addressable(a->data, a->count * sizeof(float), "npy values");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file(data, size);
    ms_npy a;
    ms_npy_init(&a);
    ms_io_err err;
    memset(&err, 0, sizeof err);
    int rc = ms_npy_read(path, 0, &a, &err);
    if (rc == MS_IO_OK) {
        check(&a);
        size_t count = a.count;
        if (count && ms_npy_read(path, count, &a, &err) != MS_IO_OK) abort();
        check(&a);
        if (ms_npy_read(path, count + 1, &a, &err) != MS_IO_MISMATCH) abort();
    } else if (rc != err.status || !err.msg[0]) {
        abort(); /* every failure must say what went wrong */
    }
    ms_npy_free(&a);

    float small[64]; /* a caller's buffer of 64 values */
    ms_npy_init(&a);
    ms_npy_borrow(&a, small, 64);
    if (ms_npy_read(path, 0, &a, &err) == MS_IO_OK) {
        if (a.data != small) abort();
        check(&a);
    }
    ms_npy_free(&a);
    return 0;
}
