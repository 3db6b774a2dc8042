/* NumPy .npy arrays as float32: the Taskonomy class_object / class_scene targets.
 *
 * Reads format versions 1.0, 2.0 and 3.0 (3.0 only widens the header's text encoding), C order,
 * any shape up to MS_NPY_MAX_DIMS dimensions, dtypes f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 and b1 in
 * either byte order; every value is converted to float32. A Fortran-order array is an error
 * naming the path (its data would need a transpose the targets never need). Writes float32
 * little-endian v1.0 files atomically. Errors follow the convention of image.h. */
#ifndef MS_DATA_NPY_H
#define MS_DATA_NPY_H

#include <stddef.h>
#include <stdint.h>

#include "image.h" /* ms_io_err, MS_IO_* */

#define MS_NPY_MAX_DIMS 8

typedef struct {
    int ndim;
    int64_t shape[MS_NPY_MAX_DIMS]; /* shape[0..ndim-1] */
    size_t count;                   /* product of the shape (1 for a 0-d array) */
    float *data;                    /* count values, C order */
    size_t capacity;                /* floats available at data */
    int borrowed;                   /* data is the caller's: never grown or freed here */
} ms_npy;

void ms_npy_init(ms_npy *a);
/* Read into buf (floats values long) from now on; a larger array is a mismatch error. */
void ms_npy_borrow(ms_npy *a, float *buf, size_t floats);
void ms_npy_free(ms_npy *a);

/* Reads path into a, reusing its buffer. want_count > 0 requires exactly that many values
 * (e.g. 1000 object logits) and names the path and shape otherwise. */
int ms_npy_read(const char *path, size_t want_count, ms_npy *a, ms_io_err *err);

/* Writes count = prod(shape) float32 values as a '<f4' C-order .npy (ndim 0..MS_NPY_MAX_DIMS).
 * flags: MS_IO_NOSYNC. */
int ms_npy_write(const char *path, const float *data, int ndim, const int64_t *shape, int flags,
                 ms_io_err *err);

#endif
