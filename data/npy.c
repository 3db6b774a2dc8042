/* .npy reader (any numeric dtype -> float32) and float32 writer; see npy.h. Format reference:
 * numpy/lib/format.py (magic, version, little-endian header length, Python-literal header). */
#include "npy.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define HOST_IS_BIG_ENDIAN 1
#else
#define HOST_IS_BIG_ENDIAN 0
#endif

/* Headers are normally ~120 bytes; this bound only rejects garbage lengths. */
#define NPY_MAX_HEADER (1u << 20)

void ms_npy_init(ms_npy *a) { memset(a, 0, sizeof *a); }

void ms_npy_borrow(ms_npy *a, float *buf, size_t floats) {
    if (!a->borrowed) free(a->data);
    a->data = buf;
    a->capacity = floats;
    a->borrowed = 1;
}

void ms_npy_free(ms_npy *a) {
    if (!a->borrowed) free(a->data);
    ms_npy_init(a);
}

typedef struct {
    char kind; /* 'f', 'i', 'u' or 'b' */
    int size;  /* bytes per item */
    int swap;  /* stored in the other byte order than the host's */
    char text[16];
} npy_dtype;

/* Points just past "'key':" (either quote style) in the NUL-terminated header, or NULL. */
static const char *header_value(const char *h, const char *key) {
    char pat[32];
    for (int q = 0; q < 2; q++) {
        snprintf(pat, sizeof pat, q ? "\"%s\"" : "'%s'", key);
        const char *p = strstr(h, pat);
        if (!p) continue;
        p += strlen(pat);
        while (*p == ' ') p++;
        if (*p != ':') return NULL;
        p++;
        while (*p == ' ') p++;
        return p;
    }
    return NULL;
}

static int parse_descr(const char *v, const char *path, npy_dtype *dt, ms_io_err *err) {
    if (*v != '\'' && *v != '"')
        return ms_io_fail(err, MS_IO_UNSUPPORTED,
                          "%s: structured dtype in the .npy header, expected a plain number type",
                          path);
    char q = *v++;
    size_t n = 0;
    while (v[n] && v[n] != q && n + 1 < sizeof dt->text) {
        dt->text[n] = v[n];
        n++;
    }
    dt->text[n] = '\0';
    if (v[n] != q)
        return ms_io_fail(err, MS_IO_CORRUPT, "%s: malformed 'descr' in the .npy header", path);
    const char *t = dt->text;
    char order = '=';
    if (*t == '<' || *t == '>' || *t == '|' || *t == '=') order = *t++;
    dt->kind = *t++;
    char *end;
    long size = strtol(t, &end, 10);
    int ok = *end == '\0' && end != t;
    if (ok && dt->kind == 'f')
        ok = size == 4 || size == 8;
    else if (ok && (dt->kind == 'i' || dt->kind == 'u'))
        ok = size == 1 || size == 2 || size == 4 || size == 8;
    else if (ok && dt->kind == 'b')
        ok = size == 1;
    else
        ok = 0;
    if (!ok)
        return ms_io_fail(err, MS_IO_UNSUPPORTED,
                          "%s: dtype '%s' is not supported, expected float32/64 or an integer type",
                          path, dt->text);
    dt->size = (int)size;
    int big = order == '>' || (order == '=' && HOST_IS_BIG_ENDIAN);
    dt->swap = size > 1 && big != HOST_IS_BIG_ENDIAN;
    return MS_IO_OK;
}

static int parse_shape(const char *v, const char *path, ms_npy *a, ms_io_err *err) {
    if (*v != '(')
        return ms_io_fail(err, MS_IO_CORRUPT, "%s: malformed 'shape' in the .npy header", path);
    v++;
    a->ndim = 0;
    a->count = 1;
    for (;;) {
        while (*v == ' ') v++;
        if (*v == ')') break;
        char *end;
        long long d = strtoll(v, &end, 10);
        if (end == v || d < 0)
            return ms_io_fail(err, MS_IO_CORRUPT, "%s: malformed 'shape' in the .npy header", path);
        if (a->ndim == MS_NPY_MAX_DIMS)
            return ms_io_fail(err, MS_IO_UNSUPPORTED, "%s: more than %d dimensions", path,
                              MS_NPY_MAX_DIMS);
        a->shape[a->ndim++] = d;
        if (__builtin_mul_overflow(a->count, (size_t)d, &a->count))
            return ms_io_fail(err, MS_IO_CORRUPT, "%s: shape too large", path);
        v = end;
        if (*v == 'L') v++; /* Python 2 longs: "(3L, 4L)" */
        while (*v == ' ') v++;
        if (*v == ',')
            v++;
        else if (*v != ')')
            return ms_io_fail(err, MS_IO_CORRUPT, "%s: malformed 'shape' in the .npy header", path);
    }
    return MS_IO_OK;
}

static int parse_header(const char *h, const char *path, npy_dtype *dt, ms_npy *a, ms_io_err *err) {
    const char *descr = header_value(h, "descr");
    const char *fortran = header_value(h, "fortran_order");
    const char *shape = header_value(h, "shape");
    if (!descr || !fortran || !shape)
        return ms_io_fail(err, MS_IO_CORRUPT,
                          "%s: .npy header lacks 'descr', 'fortran_order' or 'shape'", path);
    int status = parse_descr(descr, path, dt, err);
    if (status) return status;
    if (strncmp(fortran, "True", 4) == 0)
        return ms_io_fail(err, MS_IO_UNSUPPORTED,
                          "%s: Fortran-order array (fortran_order: True), expected C order", path);
    if (strncmp(fortran, "False", 5) != 0)
        return ms_io_fail(err, MS_IO_CORRUPT, "%s: malformed 'fortran_order' in the .npy header",
                          path);
    return parse_shape(shape, path, a, err);
}

static void swap_bytes(uint8_t *p, int size) {
    for (int i = 0; i < size / 2; i++) {
        uint8_t t = p[i];
        p[i] = p[size - 1 - i];
        p[size - 1 - i] = t;
    }
}

/* n items of dt at src (byte order already fixed for the host) -> float. */
static void to_float(const uint8_t *src, size_t n, const npy_dtype *dt, float *dst) {
    for (size_t i = 0; i < n; i++, src += dt->size) {
        switch (dt->kind * 16 + dt->size) {
#define CASE(K, S, T)                                                                              \
    case (K)*16 + (S): {                                                                           \
        T v;                                                                                       \
        memcpy(&v, src, sizeof v);                                                                 \
        dst[i] = (float)v;                                                                         \
        break;                                                                                     \
    }
            CASE('f', 4, float)
            CASE('f', 8, double)
            CASE('i', 1, int8_t)
            CASE('i', 2, int16_t)
            CASE('i', 4, int32_t)
            CASE('i', 8, int64_t)
            CASE('u', 1, uint8_t)
            CASE('u', 2, uint16_t)
            CASE('u', 4, uint32_t)
            CASE('u', 8, uint64_t)
#undef CASE
        case 'b' * 16 + 1: dst[i] = *src ? 1.0f : 0.0f; break;
        }
    }
}

/* Reads the header and the data that follows; fp is positioned just after the magic. */
static int read_body(FILE *fp, const char *path, size_t file_size, size_t want_count, ms_npy *a,
                     ms_io_err *err) {
    uint8_t ver[2];
    if (fread(ver, 1, 2, fp) != 2)
        return ms_io_fail(err, MS_IO_CORRUPT, "%s: truncated .npy header", path);
    if (ver[0] < 1 || ver[0] > 3)
        return ms_io_fail(err, MS_IO_UNSUPPORTED, "%s: .npy format version %d.%d, expected 1.0-3.0",
                          path, ver[0], ver[1]);
    int len_bytes = ver[0] == 1 ? 2 : 4;
    uint8_t lb[4] = {0, 0, 0, 0};
    if (fread(lb, 1, (size_t)len_bytes, fp) != (size_t)len_bytes)
        return ms_io_fail(err, MS_IO_CORRUPT, "%s: truncated .npy header", path);
    size_t hlen = (size_t)lb[0] | (size_t)lb[1] << 8 | (size_t)lb[2] << 16 | (size_t)lb[3] << 24;
    size_t data_start = 6 + 2 + (size_t)len_bytes + hlen;
    if (hlen > NPY_MAX_HEADER || data_start > file_size)
        return ms_io_fail(err, MS_IO_CORRUPT,
                          "%s: .npy header claims %zu bytes, the file has %zu in all", path, hlen,
                          file_size);
    char small[512];
    char *h = hlen < sizeof small ? small : malloc(hlen + 1);
    if (!h) return ms_io_fail(err, MS_IO_NOMEM, "%s: out of memory", path);
    int status = MS_IO_OK;
    npy_dtype dt;
    if (fread(h, 1, hlen, fp) != hlen) {
        status = ms_io_fail(err, MS_IO_CORRUPT, "%s: truncated .npy header", path);
    } else {
        h[hlen] = '\0';
        status = parse_header(h, path, &dt, a, err);
    }
    if (h != small) free(h);
    if (status) return status;

    if (want_count && a->count != want_count)
        return ms_io_fail(err, MS_IO_MISMATCH, "%s: array has %zu values, expected %zu", path,
                          a->count, want_count);
    size_t need;
    if (__builtin_mul_overflow(a->count, (size_t)dt.size, &need) || need > file_size - data_start)
        return ms_io_fail(err, MS_IO_CORRUPT,
                          "%s: truncated .npy data: %zu values of '%s' need %zu bytes, the file "
                          "has %zu after its header",
                          path, a->count, dt.text, a->count * (size_t)dt.size,
                          file_size - data_start);
    if (a->count > a->capacity) {
        if (a->borrowed)
            return ms_io_fail(err, MS_IO_MISMATCH,
                              "%s: array has %zu values, the caller's buffer holds %zu", path,
                              a->count, a->capacity);
        float *p = realloc(a->data, (a->count ? a->count : 1) * sizeof(float));
        if (!p)
            return ms_io_fail(err, MS_IO_NOMEM, "%s: out of memory for %zu values", path, a->count);
        a->data = p;
        a->capacity = a->count;
    }

    if (dt.kind == 'f' && dt.size == 4) {
        if (fread(a->data, 4, a->count, fp) != a->count)
            return ms_io_fail(err, MS_IO_CORRUPT, "%s: truncated .npy data", path);
        if (dt.swap)
            for (size_t i = 0; i < a->count; i++) swap_bytes((uint8_t *)&a->data[i], 4);
        return MS_IO_OK;
    }
    uint8_t chunk[8192]; /* other dtypes convert through a fixed buffer: no allocation */
    size_t per = sizeof chunk / (size_t)dt.size;
    for (size_t done = 0; done < a->count;) {
        size_t n = a->count - done < per ? a->count - done : per;
        if (fread(chunk, (size_t)dt.size, n, fp) != n)
            return ms_io_fail(err, MS_IO_CORRUPT, "%s: truncated .npy data", path);
        if (dt.swap)
            for (size_t i = 0; i < n; i++) swap_bytes(chunk + i * (size_t)dt.size, dt.size);
        to_float(chunk, n, &dt, a->data + done);
        done += n;
    }
    return MS_IO_OK;
}

int ms_npy_read(const char *path, size_t want_count, ms_npy *a, ms_io_err *err) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        int e = errno;
        char eb[128];
        if (strerror_r(e, eb, sizeof eb) != 0) snprintf(eb, sizeof eb, "errno %d", e);
        return ms_io_fail(err, MS_IO_OPEN, "%s: cannot open: %s", path, eb);
    }
    struct stat st;
    uint8_t magic[6];
    int status;
    if (fstat(fileno(fp), &st) != 0)
        status = ms_io_fail(err, MS_IO_OPEN, "%s: cannot stat", path);
    else if (fread(magic, 1, 6, fp) != 6 || memcmp(magic, "\x93NUMPY", 6) != 0)
        status = ms_io_fail(err, MS_IO_CORRUPT, "%s: not a .npy file (bad magic)", path);
    else
        status = read_body(fp, path, (size_t)st.st_size, want_count, a, err);
    fclose(fp);
    return status;
}

int ms_npy_write(const char *path, const float *data, int ndim, const int64_t *shape, int flags,
                 ms_io_err *err) {
    if (ndim < 0 || ndim > MS_NPY_MAX_DIMS)
        return ms_io_fail(err, MS_IO_ARG, "%s: %d dimensions, expected 0..%d", path, ndim,
                          MS_NPY_MAX_DIMS);
    /* numpy's own layout: dict literal padded with spaces so the data starts on a 64-byte
     * boundary, ending in a newline. */
    char dict[512];
    int n = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    size_t count = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0) return ms_io_fail(err, MS_IO_ARG, "%s: negative dimension", path);
        count *= (size_t)shape[d];
        n += snprintf(dict + n, sizeof dict - (size_t)n, "%s%" PRId64, d ? ", " : "", shape[d]);
    }
    n += snprintf(dict + n, sizeof dict - (size_t)n, "%s), }", ndim == 1 ? "," : "");
    size_t total = 10 + (size_t)n + 1;
    size_t padded = (total + 63) / 64 * 64;
    uint8_t header[640];
    memcpy(header, "\x93NUMPY\x01\x00", 8);
    size_t hlen = padded - 10;
    header[8] = (uint8_t)(hlen & 0xFF);
    header[9] = (uint8_t)(hlen >> 8);
    memcpy(header + 10, dict, (size_t)n);
    memset(header + 10 + n, ' ', padded - total);
    header[padded - 1] = '\n';

    ms_atomic at;
    FILE *fp;
    int status = ms_atomic_begin(&at, path, &fp, err);
    if (status) return status;
    int ok = fwrite(header, 1, padded, fp) == padded;
    if (HOST_IS_BIG_ENDIAN) {
        for (size_t i = 0; ok && i < count; i++) {
            uint8_t b[4];
            memcpy(b, &data[i], 4);
            swap_bytes(b, 4);
            ok = fwrite(b, 1, 4, fp) == 4;
        }
    } else if (count) {
        ok = ok && fwrite(data, sizeof(float), count, fp) == count;
    }
    if (!ok) {
        ms_atomic_abort(&at, fp);
        return ms_io_fail(err, MS_IO_WRITE, "%s: write failed", path);
    }
    return ms_atomic_commit(&at, fp, flags, err);
}
