/* .mat codecs: LabelMap and the PASCAL-Part 'anno' struct round-trip through v5 and v7.3 files
 * (non-square, so a missed column-major transpose shows); the written layout is checked field
 * by field with libmatio; other numeric classes and empty-part spellings read; every bad file
 * fails naming its path. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <matio.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../data/matfile.h"
#include "../testutil.h"

static char g_dir[64];

static void make_dir(void) { tu_tmpdir_make(g_dir, sizeof g_dir, "test_matfile"); }

static void remove_dir(void) { tu_tmpdir_remove(g_dir); }

TestSuite(matfile, .init = make_dir, .fini = remove_dir);

static const char *path_of(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", g_dir, name);
    return buf;
}

#define H 7
#define W 11

/* Label of (r, c): distinct everywhere, up to 459 like PASCAL-Context. */
static int32_t label_at(int r, int c) { return (r * 61 + c * 7) % 460; }

static void expect_labels(const ms_labelmap *lm, int32_t offset) {
    cr_assert(lm->height == H && lm->width == W, "LabelMap is %dx%d, expected %dx%d", lm->height,
              lm->width, H, W);
    for (int r = 0; r < H; r++)
        for (int c = 0; c < W; c++)
            cr_assert_eq(lm->labels[r * W + c], label_at(r, c) + offset,
                         "(%d,%d) = %d, expected %d", r, c, lm->labels[r * W + c],
                         label_at(r, c) + offset);
}

/* Reads the variable back with libmatio itself: what MATLAB / scipy would see. */
static matvar_t *raw_var(const char *path, const char *name) {
    mat_t *mat = Mat_Open(path, MAT_ACC_RDONLY);
    cr_assert(mat, "libmatio cannot open %s", path);
    matvar_t *v = Mat_VarRead(mat, name);
    Mat_Close(mat);
    cr_assert(v, "libmatio cannot read '%s' from %s", name, path);
    return v;
}

static void labelmap_round_trip(ms_mat_version version, const char *name) {
    char p[256];
    path_of(p, sizeof p, name);
    int32_t labels[H * W];
    for (int r = 0; r < H; r++)
        for (int c = 0; c < W; c++) labels[r * W + c] = label_at(r, c);
    ms_io_err err = {0};
    cr_assert_eq(ms_mat_write_labelmap(p, labels, H, W, version, 0, &err), 0, "%s", err.msg);

    matvar_t *v = raw_var(p, "LabelMap");
    cr_assert(v->rank == 2 && v->dims[0] == H && v->dims[1] == W, "stored as %zux%zu", v->dims[0],
              v->dims[1]);
    cr_assert_eq(v->class_type, MAT_C_UINT16);
    /* MATLAB order: (r, c) at c*H + r. */
    cr_assert_eq(((uint16_t *)v->data)[3 * H + 5], label_at(5, 3));
    Mat_VarFree(v);

    ms_labelmap lm;
    ms_labelmap_init(&lm);
    cr_assert_eq(ms_mat_read_labelmap(p, NULL, H, W, &lm, &err), 0, "%s", err.msg);
    expect_labels(&lm, 0);

    /* Negative labels need a signed class. */
    for (int i = 0; i < H * W; i++) labels[i] -= 5;
    cr_assert_eq(ms_mat_write_labelmap(p, labels, H, W, version, MS_IO_NOSYNC, &err), 0, "%s",
                 err.msg);
    v = raw_var(p, "LabelMap");
    cr_assert_eq(v->class_type, MAT_C_INT32);
    Mat_VarFree(v);
    cr_assert_eq(ms_mat_read_labelmap(p, "LabelMap", 0, 0, &lm, &err), 0, "%s", err.msg);
    expect_labels(&lm, -5);
    ms_labelmap_free(&lm);
}

Test(matfile, labelmap_round_trip_v5) { labelmap_round_trip(MS_MAT_V5, "lm5.mat"); }
Test(matfile, labelmap_round_trip_v73) { labelmap_round_trip(MS_MAT_V73, "lm73.mat"); }

/* Writes variable `name` of the given class holding label_at in column-major order (plus a
 * fraction when frac, to make it invalid). */
static void write_class(const char *path, const char *name, enum matio_classes cls,
                        enum matio_types type, size_t esize, int frac, int logical) {
    uint8_t *buf = calloc(H * W, esize);
    for (int r = 0; r < H; r++)
        for (int c = 0; c < W; c++) {
            double v = logical ? (label_at(r, c) % 2) : label_at(r, c) % 120 + (frac ? 0.5 : 0);
            size_t i = (size_t)c * H + (size_t)r;
            switch (type) {
            case MAT_T_DOUBLE: ((double *)buf)[i] = v; break;
            case MAT_T_SINGLE: ((float *)buf)[i] = (float)v; break;
            case MAT_T_UINT8: ((uint8_t *)buf)[i] = (uint8_t)v; break;
            case MAT_T_INT16: ((int16_t *)buf)[i] = (int16_t)v; break;
            case MAT_T_INT32: ((int32_t *)buf)[i] = (int32_t)v; break;
            case MAT_T_UINT32: ((uint32_t *)buf)[i] = (uint32_t)v; break;
            case MAT_T_INT64: ((int64_t *)buf)[i] = (int64_t)v; break;
            default: cr_assert_fail("unhandled type");
            }
        }
    size_t dims[2] = {H, W};
    matvar_t *v = Mat_VarCreate(name, cls, type, 2, dims, buf, logical ? MAT_F_LOGICAL : 0);
    mat_t *mat = Mat_CreateVer(path, NULL, MAT_FT_MAT5);
    cr_assert(v && mat);
    cr_assert_eq(Mat_VarWrite(mat, v, MAT_COMPRESSION_NONE), 0);
    Mat_Close(mat);
    Mat_VarFree(v);
    free(buf);
}

Test(matfile, labelmap_every_numeric_class) {
    static const struct {
        enum matio_classes cls;
        enum matio_types type;
        size_t size;
    } classes[] = {{MAT_C_DOUBLE, MAT_T_DOUBLE, 8}, {MAT_C_SINGLE, MAT_T_SINGLE, 4},
                   {MAT_C_UINT8, MAT_T_UINT8, 1},   {MAT_C_INT16, MAT_T_INT16, 2},
                   {MAT_C_INT32, MAT_T_INT32, 4},   {MAT_C_UINT32, MAT_T_UINT32, 4},
                   {MAT_C_INT64, MAT_T_INT64, 8}};
    char p[256];
    path_of(p, sizeof p, "cls.mat");
    ms_labelmap lm;
    ms_labelmap_init(&lm);
    for (size_t k = 0; k < sizeof classes / sizeof classes[0]; k++) {
        write_class(p, "LabelMap", classes[k].cls, classes[k].type, classes[k].size, 0, 0);
        ms_io_err err = {0};
        cr_assert_eq(ms_mat_read_labelmap(p, NULL, 0, 0, &lm, &err), 0, "class %d: %s",
                     (int)classes[k].cls, err.msg);
        for (int r = 0; r < H; r++)
            for (int c = 0; c < W; c++)
                cr_assert_eq(lm.labels[r * W + c], label_at(r, c) % 120, "class %d (%d,%d)",
                             (int)classes[k].cls, r, c);
    }
    ms_labelmap_free(&lm);
}

static void expect_fail(int rc, int status, const ms_io_err *err, const char *path,
                        const char *what) {
    cr_assert_eq(rc, status, "%s: status %d, expected %d (%s)", what, rc, status, err->msg);
    cr_assert(strstr(err->msg, path), "%s: message does not name the path: %s", what, err->msg);
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    cr_assert(f);
    cr_assert_eq(fwrite(data, 1, n, f), n);
    fclose(f);
}

/* Keeps the first `keep` bytes of src in dst. */
static void truncate_copy(const char *src, const char *dst, double keep) {
    FILE *f = fopen(src, "rb");
    cr_assert(f);
    uint8_t buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    cr_assert(n < sizeof buf);
    write_bytes(dst, buf, (size_t)((double)n * keep));
}

/* A LabelMap large and noisy enough that compression leaves many bytes to cut. */
static void write_big_labelmap(const char *path, ms_mat_version version) {
    static int32_t big[120 * 90];
    for (int i = 0; i < 120 * 90; i++) big[i] = (int32_t)((i * 2654435761u) >> 7) % 459;
    ms_io_err err = {0};
    cr_assert_eq(ms_mat_write_labelmap(path, big, 120, 90, version, MS_IO_NOSYNC, &err), 0, "%s",
                 err.msg);
}

Test(matfile, labelmap_bad_files) {
    char p[256], good[256];
    ms_labelmap lm;
    ms_labelmap_init(&lm);
    ms_io_err err = {0};

    expect_fail(ms_mat_read_labelmap(path_of(p, sizeof p, "missing.mat"), NULL, 0, 0, &lm, &err),
                MS_IO_OPEN, &err, p, "missing file");

    path_of(p, sizeof p, "frac.mat");
    write_class(p, "LabelMap", MAT_C_DOUBLE, MAT_T_DOUBLE, 8, 1, 0);
    expect_fail(ms_mat_read_labelmap(p, NULL, 0, 0, &lm, &err), MS_IO_CORRUPT, &err, p,
                "non-integer labels");
    cr_assert(strstr(err.msg, "row 0, column 0"), "%s", err.msg);

    path_of(p, sizeof p, "other.mat");
    write_class(p, "Other", MAT_C_UINT8, MAT_T_UINT8, 1, 0, 0);
    expect_fail(ms_mat_read_labelmap(p, NULL, 0, 0, &lm, &err), MS_IO_CORRUPT, &err, p,
                "no LabelMap variable");
    cr_assert(strstr(err.msg, "LabelMap"), "%s", err.msg);

    path_of(p, sizeof p, "size.mat");
    write_class(p, "LabelMap", MAT_C_UINT8, MAT_T_UINT8, 1, 0, 0);
    expect_fail(ms_mat_read_labelmap(p, NULL, W, H, &lm, &err), MS_IO_MISMATCH, &err, p,
                "transposed size");

    path_of(p, sizeof p, "text.mat");
    write_bytes(p, "this is not a MAT file at all", 29);
    expect_fail(ms_mat_read_labelmap(p, NULL, 0, 0, &lm, &err), MS_IO_CORRUPT, &err, p,
                "not a MAT file");

    static const double keeps[] = {0.9, 0.5, 0.2, 0.05};
    for (int version = 0; version < 2; version++) {
        path_of(good, sizeof good, version ? "big73.mat" : "big5.mat");
        write_big_labelmap(good, version ? MS_MAT_V73 : MS_MAT_V5);
        cr_assert_eq(ms_mat_read_labelmap(good, NULL, 120, 90, &lm, &err), 0, "%s", err.msg);
        for (size_t k = 0; k < sizeof keeps / sizeof keeps[0]; k++) {
            path_of(p, sizeof p, "truncated.mat");
            truncate_copy(good, p, keeps[k]);
            int rc = ms_mat_read_labelmap(p, NULL, 0, 0, &lm, &err);
            cr_assert_neq(rc, 0, "v%s file cut to %.0f%% read without error", version ? "7.3" : "5",
                          keeps[k] * 100);
            cr_assert(strstr(err.msg, p), "message does not name the path: %s", err.msg);
        }
    }
    ms_labelmap_free(&lm);
}

/* Damaged bytes anywhere in a compressed v5 variable are caught by its zlib checksum (libmatio
 * alone would return garbage labels). */
Test(matfile, labelmap_corrupt_bytes) {
    char good[256], p[256];
    path_of(good, sizeof good, "good.mat");
    path_of(p, sizeof p, "corrupt.mat");
    write_big_labelmap(good, MS_MAT_V5);
    FILE *f = fopen(good, "rb");
    static uint8_t bytes[1 << 16];
    size_t n = fread(bytes, 1, sizeof bytes, f);
    fclose(f);
    ms_labelmap lm;
    ms_labelmap_init(&lm);
    for (size_t off = 140; off < n; off += (n - 140) / 9) {
        bytes[off] ^= 0x5A;
        write_bytes(p, bytes, n);
        bytes[off] ^= 0x5A;
        ms_io_err err = {0};
        expect_fail(ms_mat_read_labelmap(p, NULL, 0, 0, &lm, &err), MS_IO_CORRUPT, &err, p,
                    "damaged byte");
    }
    ms_labelmap_free(&lm);
}

/* A compressible full-size map inflates to far more than the checker's buffers hold. */
Test(matfile, labelmap_large_compressible) {
    char p[256];
    path_of(p, sizeof p, "large.mat");
    static int32_t labels[500 * 375];
    for (int r = 0; r < 500; r++)
        for (int c = 0; c < 375; c++) labels[r * 375 + c] = r / 50 * 10 + c / 125;
    ms_io_err err = {0};
    cr_assert_eq(ms_mat_write_labelmap(p, labels, 500, 375, MS_MAT_V5, MS_IO_NOSYNC, &err), 0, "%s",
                 err.msg);
    ms_labelmap lm;
    ms_labelmap_init(&lm);
    cr_assert_eq(ms_mat_read_labelmap(p, NULL, 500, 375, &lm, &err), 0, "%s", err.msg);
    cr_assert(memcmp(lm.labels, labels, sizeof labels) == 0, "labels differ");
    ms_labelmap_free(&lm);
}

/* ---- anno ------------------------------------------------------------------------------------ */

#define AH 6
#define AW 9

/* Mask k: a distinct non-symmetric blob. */
static void make_mask(uint8_t *m, int k) {
    for (int r = 0; r < AH; r++)
        for (int c = 0; c < AW; c++) m[r * AW + c] = (uint8_t)((r * 3 + c * (k + 2) + k) % 5 < 2);
}

typedef struct {
    uint8_t masks[4][AH * AW];
    ms_anno_part parts[2];
    ms_anno_object objects[2];
    ms_anno anno;
} anno_fixture;

/* Object 1: a person with parts "head" and "llarm"; object 2: a car without parts. */
static void make_fixture(anno_fixture *f) {
    for (int k = 0; k < 4; k++) make_mask(f->masks[k], k);
    f->parts[0] = (ms_anno_part){"head", f->masks[1]};
    f->parts[1] = (ms_anno_part){"llarm", f->masks[2]};
    f->objects[0] = (ms_anno_object){15, f->masks[0], 2, f->parts};
    f->objects[1] = (ms_anno_object){7, f->masks[3], 0, NULL};
    f->anno = (ms_anno){AH, AW, 2, f->objects};
}

static void expect_anno(const ms_anno *got, const anno_fixture *f) {
    cr_assert(got->height == AH && got->width == AW, "masks %dx%d, expected %dx%d", got->height,
              got->width, AH, AW);
    cr_assert_eq(got->n_objects, 2);
    for (int j = 0; j < 2; j++) {
        const ms_anno_object *o = &got->objects[j], *e = &f->objects[j];
        cr_assert_eq(o->class_id, e->class_id);
        cr_assert(memcmp(o->mask, e->mask, AH * AW) == 0, "object %d mask differs", j + 1);
        cr_assert_eq(o->n_parts, e->n_parts);
        for (int k = 0; k < o->n_parts; k++) {
            cr_assert_str_eq(o->parts[k].name, e->parts[k].name);
            cr_assert(memcmp(o->parts[k].mask, e->parts[k].mask, AH * AW) == 0,
                      "object %d part %d mask differs", j + 1, k + 1);
        }
    }
}

static void expect_fields(matvar_t *s, const char *const *names, unsigned n) {
    cr_assert_eq(s->class_type, MAT_C_STRUCT);
    cr_assert_eq(Mat_VarGetNumberOfFields(s), n);
    char *const *got = Mat_VarGetStructFieldnames(s);
    for (unsigned i = 0; i < n; i++) cr_assert_str_eq(got[i], names[i]);
}

static void expect_string(matvar_t *v, const char *s) {
    cr_assert(v && v->class_type == MAT_C_CHAR);
    size_t n = v->dims[0] * v->dims[1];
    cr_assert_eq(n, strlen(s));
    for (size_t i = 0; i < n; i++) {
        unsigned ch = v->data_size == 2 ? ((uint16_t *)v->data)[i] : ((uint8_t *)v->data)[i];
        cr_assert_eq(ch, (unsigned)s[i]);
    }
}

static void anno_round_trip(ms_mat_version version, const char *name) {
    char p[256];
    path_of(p, sizeof p, name);
    anno_fixture f;
    make_fixture(&f);
    ms_io_err err = {0};
    cr_assert_eq(ms_mat_write_anno(p, &f.anno, "2008_000123", version, 0, &err), 0, "%s", err.msg);

    /* The PASCAL-Part layout that the scipy indexing anno[0][0][1][0][j][1|2|3] relies on. */
    static const char *const top[] = {"imname", "objects"};
    static const char *const obj[] = {"class", "class_ind", "mask", "parts"};
    static const char *const part[] = {"part_name", "mask"};
    matvar_t *v = raw_var(p, "anno");
    expect_fields(v, top, 2);
    expect_string(Mat_VarGetStructFieldByIndex(v, 0, 0), "2008_000123");
    matvar_t *objs = Mat_VarGetStructFieldByIndex(v, 1, 0);
    expect_fields(objs, obj, 4);
    cr_assert(objs->dims[0] == 1 && objs->dims[1] == 2, "objects must be 1 x 2");
    expect_string(Mat_VarGetStructFieldByIndex(objs, 0, 0), "person");
    expect_string(Mat_VarGetStructFieldByIndex(objs, 0, 1), "car");
    matvar_t *ci = Mat_VarGetStructFieldByIndex(objs, 1, 0);
    cr_assert(ci->class_type == MAT_C_DOUBLE && *(double *)ci->data == 15.0);
    matvar_t *m = Mat_VarGetStructFieldByIndex(objs, 2, 0);
    cr_assert(m->class_type == MAT_C_UINT8 && m->dims[0] == AH && m->dims[1] == AW);
    cr_assert_eq(((uint8_t *)m->data)[4 * AH + 1], f.masks[0][1 * AW + 4], "column-major mask");
    matvar_t *parts = Mat_VarGetStructFieldByIndex(objs, 3, 0);
    expect_fields(parts, part, 2);
    cr_assert(parts->dims[0] == 1 && parts->dims[1] == 2);
    expect_string(Mat_VarGetStructFieldByIndex(parts, 0, 1), "llarm");
    matvar_t *none = Mat_VarGetStructFieldByIndex(objs, 3, 1);
    cr_assert(none->class_type == MAT_C_DOUBLE && none->dims[0] == 0 && none->dims[1] == 0,
              "an object without parts has parts = []");
    Mat_VarFree(v);

    ms_anno got;
    cr_assert_eq(ms_mat_read_anno(p, &got, &err), 0, "%s", err.msg);
    expect_anno(&got, &f);
    ms_anno_free(&got);
}

Test(matfile, anno_round_trip_v5) { anno_round_trip(MS_MAT_V5, "an5.mat"); }
Test(matfile, anno_round_trip_v73) { anno_round_trip(MS_MAT_V73, "an73.mat"); }

/* An anno built with libmatio directly, with spellings our writer does not produce: logical
 * and double masks, parts as an empty 1 x 0 struct array. second_w (AW or AW + 1) is the
 * width of the second object's mask. */
static void write_variant_anno(const char *path, int second_w) {
    static const char *const top_f[] = {"imname", "objects", NULL};
    static const char *const obj_f[] = {"class", "class_ind", "mask", "parts", NULL};
    static const char *const part_f[] = {"part_name", "mask", NULL};
    size_t one[2] = {1, 1}, two[2] = {1, 2}, none[2] = {1, 0}, md[2] = {AH, AW},
           md2[2] = {AH, (size_t)second_w};
    uint8_t logical[AH * AW];
    double dbl[AH * (AW + 1)];
    for (int i = 0; i < AH * (AW + 1); i++) {
        if (i < AH * AW) logical[i] = (uint8_t)(i % 3 == 0);
        dbl[i] = i % 4 == 1 ? 2.0 : 0.0; /* any non-zero value marks the mask */
    }
    matvar_t *anno = Mat_VarCreateStruct2("anno", 2, one, top_f);
    matvar_t *objs = Mat_VarCreateStruct2("objects", 2, two, obj_f);
    double cls[2] = {15, 12};
    for (int j = 0; j < 2; j++) {
        size_t sd[2] = {1, 3};
        Mat_VarSetStructFieldByIndex(
            objs, 0, (size_t)j,
            Mat_VarCreate("class", MAT_C_CHAR, MAT_T_UTF8, 2, sd, j ? "dog" : "per", 0));
        Mat_VarSetStructFieldByIndex(
            objs, 1, (size_t)j,
            Mat_VarCreate("class_ind", MAT_C_DOUBLE, MAT_T_DOUBLE, 2, one, &cls[j], 0));
        Mat_VarSetStructFieldByIndex(
            objs, 2, (size_t)j,
            j ? Mat_VarCreate("mask", MAT_C_DOUBLE, MAT_T_DOUBLE, 2, md2, dbl, 0)
              : Mat_VarCreate("mask", MAT_C_UINT8, MAT_T_UINT8, 2, md, logical, MAT_F_LOGICAL));
        Mat_VarSetStructFieldByIndex(objs, 3, (size_t)j,
                                     Mat_VarCreateStruct2("parts", 2, none, part_f));
    }
    size_t nd[2] = {1, 4};
    Mat_VarSetStructFieldByIndex(anno, 0, 0,
                                 Mat_VarCreate("imname", MAT_C_CHAR, MAT_T_UTF8, 2, nd, "x_01", 0));
    Mat_VarSetStructFieldByIndex(anno, 1, 0, objs);
    mat_t *mat = Mat_CreateVer(path, NULL, MAT_FT_MAT5);
    cr_assert(mat);
    cr_assert_eq(Mat_VarWrite(mat, anno, MAT_COMPRESSION_ZLIB), 0);
    Mat_Close(mat);
    Mat_VarFree(anno);
}

Test(matfile, anno_other_spellings) {
    char p[256];
    path_of(p, sizeof p, "variant.mat");
    write_variant_anno(p, AW);
    ms_anno a;
    ms_io_err err = {0};
    cr_assert_eq(ms_mat_read_anno(p, &a, &err), 0, "%s", err.msg);
    cr_assert(a.n_objects == 2 && a.objects[0].class_id == 15 && a.objects[1].class_id == 12);
    cr_assert(a.objects[0].n_parts == 0 && a.objects[1].n_parts == 0);
    for (int r = 0; r < AH; r++)
        for (int c = 0; c < AW; c++) {
            int i = c * AH + r; /* where (r, c) sat in MATLAB order */
            cr_assert_eq(a.objects[0].mask[r * AW + c], i % 3 == 0);
            cr_assert_eq(a.objects[1].mask[r * AW + c], i % 4 == 1);
        }
    ms_anno_free(&a);

    write_variant_anno(p, AW + 1);
    expect_fail(ms_mat_read_anno(p, &a, &err), MS_IO_CORRUPT, &err, p, "mask sizes differ");
    cr_assert(strstr(err.msg, "anno.objects(2).mask"), "%s", err.msg);
    cr_assert(a.n_objects == 0 && a.objects == NULL, "a failed read leaves anno empty");
}

Test(matfile, anno_bad_files) {
    char p[256], good[256];
    ms_anno a;
    ms_io_err err = {0};
    expect_fail(ms_mat_read_anno(path_of(p, sizeof p, "missing.mat"), &a, &err), MS_IO_OPEN, &err,
                p, "missing file");

    path_of(p, sizeof p, "labels.mat");
    write_class(p, "LabelMap", MAT_C_UINT8, MAT_T_UINT8, 1, 0, 0);
    expect_fail(ms_mat_read_anno(p, &a, &err), MS_IO_CORRUPT, &err, p, "no anno variable");
    cr_assert(strstr(err.msg, "'anno'"), "%s", err.msg);

    path_of(p, sizeof p, "notstruct.mat");
    write_class(p, "anno", MAT_C_UINT8, MAT_T_UINT8, 1, 0, 0);
    expect_fail(ms_mat_read_anno(p, &a, &err), MS_IO_CORRUPT, &err, p, "anno not a struct");

    /* Big masks so truncation lands inside the data. */
    static uint8_t masks[3][120 * 90];
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 120 * 90; i++)
            masks[k][i] = (uint8_t)(((i * 2654435761u) >> (k + 9)) & 1);
    ms_anno_part parts[1] = {{"torso", masks[1]}};
    ms_anno_object objs[2] = {{15, masks[0], 1, parts}, {3, masks[2], 0, NULL}};
    ms_anno big = {120, 90, 2, objs};
    static const double keeps[] = {0.9, 0.6, 0.3, 0.05};
    for (int version = 0; version < 2; version++) {
        path_of(good, sizeof good, version ? "big73.mat" : "big5.mat");
        cr_assert_eq(ms_mat_write_anno(good, &big, "big", version ? MS_MAT_V73 : MS_MAT_V5,
                                       MS_IO_NOSYNC, &err),
                     0, "%s", err.msg);
        cr_assert_eq(ms_mat_read_anno(good, &a, &err), 0, "%s", err.msg);
        ms_anno_free(&a);
        for (size_t k = 0; k < sizeof keeps / sizeof keeps[0]; k++) {
            path_of(p, sizeof p, "truncated.mat");
            truncate_copy(good, p, keeps[k]);
            int rc = ms_mat_read_anno(p, &a, &err);
            cr_assert_neq(rc, 0, "v%s anno cut to %.0f%% read without error", version ? "7.3" : "5",
                          keeps[k] * 100);
            cr_assert(strstr(err.msg, p), "message does not name the path: %s", err.msg);
        }
    }

    objs[1].class_id = 0;
    expect_fail(ms_mat_write_anno(good, &big, "big", MS_MAT_V5, 0, &err), MS_IO_ARG, &err, good,
                "class 0");
}

/* Loader workers read .mat files concurrently; v7.3 reads are serialised inside. */
static void *reader_thread(void *arg) {
    const char **paths = arg;
    ms_labelmap lm;
    ms_labelmap_init(&lm);
    long bad = 0;
    for (int i = 0; i < 40; i++) {
        if (ms_mat_read_labelmap(paths[i % 2], NULL, H, W, &lm, NULL) != 0)
            bad++;
        else
            for (int k = 0; k < H * W; k++) bad += lm.labels[k] != label_at(k / W, k % W);
    }
    ms_labelmap_free(&lm);
    return (void *)bad;
}

Test(matfile, concurrent_reads) {
    char p5[256], p73[256];
    int32_t labels[H * W];
    for (int k = 0; k < H * W; k++) labels[k] = label_at(k / W, k % W);
    path_of(p5, sizeof p5, "c5.mat");
    path_of(p73, sizeof p73, "c73.mat");
    cr_assert_eq(ms_mat_write_labelmap(p5, labels, H, W, MS_MAT_V5, MS_IO_NOSYNC, NULL), 0);
    cr_assert_eq(ms_mat_write_labelmap(p73, labels, H, W, MS_MAT_V73, MS_IO_NOSYNC, NULL), 0);
    const char *paths[2] = {p5, p73};
    pthread_t t[4];
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, reader_thread, paths);
    for (int i = 0; i < 4; i++) {
        void *bad;
        pthread_join(t[i], &bad);
        cr_assert_eq((long)bad, 0, "thread %d saw %ld bad reads or labels", i, (long)bad);
    }
}
