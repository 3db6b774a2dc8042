/* .npy reader and writer: format versions, dtypes and byte orders built byte by byte here, the
 * writer's round trip and numpy's header layout, and every bad file naming its path. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../data/npy.h"
#include "../testutil.h"

static char g_dir[64];

static void make_dir(void) { tu_tmpdir_make(g_dir, sizeof g_dir, "test_npy"); }

static void remove_dir(void) { tu_tmpdir_remove(g_dir); }

TestSuite(npy, .init = make_dir, .fini = remove_dir);

static const char *path_of(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", g_dir, name);
    return buf;
}

/* Writes an .npy file of the given format version around `dict`, padded the way numpy pads,
 * followed by n_data raw bytes. */
static void make_npy(const char *path, int version, const char *dict, const void *data,
                     size_t n_data) {
    size_t len_bytes = version == 1 ? 2 : 4;
    size_t pre = 6 + 2 + len_bytes;
    size_t total = (pre + strlen(dict) + 1 + 63) / 64 * 64;
    size_t hlen = total - pre;
    uint8_t *buf = calloc(1, total + n_data);
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (uint8_t)version;
    buf[7] = 0;
    for (size_t i = 0; i < len_bytes; i++) buf[8 + i] = (uint8_t)(hlen >> (8 * i));
    memset(buf + pre, ' ', hlen);
    memcpy(buf + pre, dict, strlen(dict));
    buf[total - 1] = '\n';
    if (n_data) memcpy(buf + total, data, n_data);
    FILE *f = fopen(path, "wb");
    cr_assert(f);
    cr_assert_eq(fwrite(buf, 1, total + n_data, f), total + n_data);
    fclose(f);
    free(buf);
}

/* Value i of every test array: fractional, signed, beyond float16 range. */
static double value(int i) { return (i % 2 ? -1.0 : 1.0) * (i * 1.25 + 1000.5 * (i % 3)); }

static void put(uint8_t *dst, const void *src, size_t size, int big_endian) {
    for (size_t b = 0; b < size; b++)
        dst[b] = ((const uint8_t *)src)[big_endian ? size - 1 - b : b]; /* host is little-endian */
}

/* n values of value(i) encoded as dtype (f4, f8, i4, i8) in either byte order. */
static size_t encode(uint8_t *out, int n, char kind, int size, int big_endian) {
    for (int i = 0; i < n; i++) {
        double v = value(i);
        uint8_t *dst = out + (size_t)i * (size_t)size;
        if (kind == 'f' && size == 4) {
            float f = (float)v;
            put(dst, &f, 4, big_endian);
        } else if (kind == 'f') {
            put(dst, &v, 8, big_endian);
        } else if (size == 4) {
            int32_t k = (int32_t)v;
            put(dst, &k, 4, big_endian);
        } else {
            int64_t k = (int64_t)v;
            put(dst, &k, 8, big_endian);
        }
    }
    return (size_t)n * (size_t)size;
}

Test(npy, versions_dtypes_and_byte_orders) {
    static const struct {
        const char *descr;
        char kind;
        int size, big;
    } types[] = {{"<f4", 'f', 4, 0}, {"<f8", 'f', 8, 0}, {">f4", 'f', 4, 1}, {">f8", 'f', 8, 1},
                 {"<i4", 'i', 4, 0}, {"<i8", 'i', 8, 0}, {">i4", 'i', 4, 1}, {">i8", 'i', 8, 1}};
    uint8_t data[30 * 8];
    ms_npy a;
    ms_npy_init(&a);
    for (int version = 1; version <= 3; version++)
        for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
            char p[256], dict[160];
            path_of(p, sizeof p, "a.npy");
            snprintf(dict, sizeof dict,
                     "{'descr': '%s', 'fortran_order': False, 'shape': (2, 3, 5), }",
                     types[t].descr);
            size_t n = encode(data, 30, types[t].kind, types[t].size, types[t].big);
            make_npy(p, version, dict, data, n);
            ms_io_err err = {0};
            cr_assert_eq(ms_npy_read(p, 30, &a, &err), 0, "v%d %s: %s", version, types[t].descr,
                         err.msg);
            cr_assert(a.ndim == 3 && a.shape[0] == 2 && a.shape[1] == 3 && a.shape[2] == 5 &&
                          a.count == 30,
                      "v%d %s: wrong shape", version, types[t].descr);
            for (int i = 0; i < 30; i++) {
                double v = value(i);
                float want = types[t].kind == 'f' ? (float)v : (float)(int64_t)v;
                cr_assert_eq(a.data[i], want, "v%d %s: [%d] = %g, expected %g", version,
                             types[t].descr, i, a.data[i], want);
            }
        }
    ms_npy_free(&a);
}

Test(npy, shapes_and_header_spellings) {
    char p[256];
    path_of(p, sizeof p, "s.npy");
    float data[6] = {1, 2, 3, 4, 5, 6};
    ms_npy a;
    ms_npy_init(&a);
    /* 1-D with numpy's trailing comma, Python-2 longs, double quotes, key order shuffled. */
    make_npy(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", data, 24);
    cr_assert_eq(ms_npy_read(p, 0, &a, NULL), 0);
    cr_assert(a.ndim == 1 && a.shape[0] == 6 && a.data[5] == 6.0f);
    make_npy(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }", data, 24);
    cr_assert_eq(ms_npy_read(p, 6, &a, NULL), 0);
    cr_assert(a.ndim == 2 && a.shape[0] == 2 && a.shape[1] == 3);
    make_npy(p, 1, "{\"shape\": (3, 2), \"fortran_order\": False, \"descr\": \"<f4\"}", data, 24);
    cr_assert_eq(ms_npy_read(p, 0, &a, NULL), 0);
    cr_assert(a.ndim == 2 && a.shape[0] == 3 && a.data[2] == 3.0f);
    make_npy(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", data, 4);
    cr_assert_eq(ms_npy_read(p, 0, &a, NULL), 0);
    cr_assert(a.ndim == 0 && a.count == 1 && a.data[0] == 1.0f);
    ms_npy_free(&a);
}

static void read_file(const char *path, uint8_t *buf, size_t *n) {
    FILE *f = fopen(path, "rb");
    cr_assert(f);
    *n = fread(buf, 1, 4096, f);
    fclose(f);
}

Test(npy, writer_round_trip_and_layout) {
    char p[256];
    path_of(p, sizeof p, "w.npy");
    float data[2 * 3 * 5];
    for (int i = 0; i < 30; i++) data[i] = (float)value(i);
    int64_t shape[3] = {2, 3, 5};
    ms_io_err err = {0};
    cr_assert_eq(ms_npy_write(p, data, 3, shape, 0, &err), 0, "%s", err.msg);
    uint8_t raw[4096];
    size_t n;
    read_file(p, raw, &n);
    cr_assert(memcmp(raw, "\x93NUMPY\x01\x00", 8) == 0, "bad magic or version");
    size_t hlen = raw[8] | (size_t)raw[9] << 8;
    cr_assert_eq((10 + hlen) % 64, 0, "data must start on a 64-byte boundary");
    cr_assert_eq(raw[10 + hlen - 1], '\n');
    cr_assert(strstr((char *)raw + 10, "'shape': (2, 3, 5)"), "header: %.*s", (int)hlen, raw + 10);
    cr_assert_eq(n, 10 + hlen + sizeof data);
    cr_assert(memcmp(raw + 10 + hlen, data, sizeof data) == 0, "data must be raw <f4");

    ms_npy a;
    ms_npy_init(&a);
    cr_assert_eq(ms_npy_read(p, 30, &a, &err), 0, "%s", err.msg);
    cr_assert(memcmp(a.data, data, sizeof data) == 0);

    int64_t one[1] = {7};
    cr_assert_eq(ms_npy_write(p, data, 1, one, MS_IO_NOSYNC, &err), 0, "%s", err.msg);
    read_file(p, raw, &n);
    cr_assert(strstr((char *)raw + 10, "'shape': (7,)"), "1-D shapes need numpy's comma");
    cr_assert_eq(ms_npy_read(p, 0, &a, &err), 0, "%s", err.msg);
    cr_assert(a.ndim == 1 && a.shape[0] == 7 && a.data[6] == data[6]);
    ms_npy_free(&a);
}

Test(npy, borrowed_buffer) {
    char p[256];
    path_of(p, sizeof p, "b.npy");
    float data[12] = {0};
    data[11] = 42;
    int64_t shape[1] = {12};
    cr_assert_eq(ms_npy_write(p, data, 1, shape, MS_IO_NOSYNC, NULL), 0);
    float buf[12];
    ms_npy a;
    ms_npy_init(&a);
    ms_npy_borrow(&a, buf, 12);
    cr_assert_eq(ms_npy_read(p, 0, &a, NULL), 0);
    cr_assert(a.data == buf && buf[11] == 42.0f);
    ms_npy_borrow(&a, buf, 11);
    ms_io_err err = {0};
    cr_assert_eq(ms_npy_read(p, 0, &a, &err), MS_IO_MISMATCH);
    cr_assert(strstr(err.msg, p), "%s", err.msg);
    ms_npy_free(&a); /* must not free buf */
}

static void expect_fail(const char *path, size_t want_count, int status, const char *what) {
    ms_npy a;
    ms_npy_init(&a);
    ms_io_err err = {0};
    int rc = ms_npy_read(path, want_count, &a, &err);
    cr_assert_eq(rc, status, "%s: status %d, expected %d (%s)", what, rc, status, err.msg);
    cr_assert(strstr(err.msg, path), "%s: message does not name the path: %s", what, err.msg);
    ms_npy_free(&a);
}

Test(npy, bad_files) {
    char p[256];
    float data[6] = {1, 2, 3, 4, 5, 6};
    const char *ok = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";

    expect_fail(path_of(p, sizeof p, "missing.npy"), 0, MS_IO_OPEN, "missing");

    path_of(p, sizeof p, "fortran.npy");
    make_npy(p, 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", data, 24);
    expect_fail(p, 0, MS_IO_UNSUPPORTED, "fortran order");

    path_of(p, sizeof p, "truncated.npy");
    make_npy(p, 1, ok, data, 20);
    expect_fail(p, 0, MS_IO_CORRUPT, "truncated data");
    make_npy(p, 2, ok, data, 0);
    expect_fail(p, 0, MS_IO_CORRUPT, "no data");
    FILE *f = fopen(p, "wb");
    fwrite("\x93NUMPY\x01\x00\x76\x00{'descr'", 1, 17, f); /* header cut short */
    fclose(f);
    expect_fail(p, 0, MS_IO_CORRUPT, "truncated header");

    path_of(p, sizeof p, "magic.npy");
    make_npy(p, 1, ok, data, 24);
    f = fopen(p, "r+b");
    fputc('X', f);
    fclose(f);
    expect_fail(p, 0, MS_IO_CORRUPT, "bad magic");

    path_of(p, sizeof p, "version.npy");
    make_npy(p, 4, ok, data, 24);
    expect_fail(p, 0, MS_IO_UNSUPPORTED, "version 4");

    path_of(p, sizeof p, "dtype.npy");
    make_npy(p, 1, "{'descr': '<c8', 'fortran_order': False, 'shape': (2, 3), }", data, 24);
    expect_fail(p, 0, MS_IO_UNSUPPORTED, "complex dtype");
    make_npy(p, 1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (6,), }", data, 24);
    expect_fail(p, 0, MS_IO_UNSUPPORTED, "structured dtype");

    path_of(p, sizeof p, "shape.npy");
    make_npy(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }", data, 24);
    expect_fail(p, 0, MS_IO_CORRUPT, "malformed shape");
    make_npy(p, 1, "{'descr': '<f4', 'fortran_order': False}", data, 24);
    expect_fail(p, 0, MS_IO_CORRUPT, "no shape");

    path_of(p, sizeof p, "count.npy");
    make_npy(p, 1, ok, data, 24);
    expect_fail(p, 1000, MS_IO_MISMATCH, "wrong value count");
}
