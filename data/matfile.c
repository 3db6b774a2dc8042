/* PASCAL .mat reading and writing through libmatio; layouts and conventions in matfile.h. */
#include "matfile.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <matio.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

/* ---- libmatio plumbing ----------------------------------------------------------------------- */

/* HDF5 (behind v7.3 files) is built without thread safety, so v7.3 work is serialised. v5
 * files touch only per-file state and run concurrently. */
static pthread_mutex_t g_hdf5_lock = PTHREAD_MUTEX_INITIALIZER;

/* libmatio reports problems through a process-wide log function; keep the last error of this
 * thread so messages can quote it instead of matio printing to stderr. */
static pthread_once_t g_log_once = PTHREAD_ONCE_INIT;
static _Thread_local char t_matio_msg[256];

static void on_matio_log(int level, char *message) {
    if (level & (MATIO_LOG_LEVEL_ERROR | MATIO_LOG_LEVEL_CRITICAL))
        snprintf(t_matio_msg, sizeof t_matio_msg, "%s", message);
}

static void init_matio_log(void) { Mat_LogInitFunc("modsquad", on_matio_log); }

/* " (libmatio: ...)" when matio said something, "" otherwise. */
static const char *matio_said(char *buf, size_t n) {
    if (!t_matio_msg[0]) return "";
    snprintf(buf, n, " (libmatio: %s)", t_matio_msg);
    return buf;
}

typedef struct {
    mat_t *mat;
    int locked; /* holds g_hdf5_lock */
} mat_handle;

/* Inflates `bytes` compressed bytes at the current position of fp, discarding the output: the
 * stream must end exactly there with a valid checksum. */
static int inflate_check(FILE *fp, uint64_t bytes, const char **why) {
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit(&z) != Z_OK) {
        *why = "zlib cannot start";
        return -1;
    }
    uint8_t in[16384], out[32768];
    int rc = Z_OK;
    while (rc == Z_OK && bytes > 0) {
        size_t n = bytes < sizeof in ? (size_t)bytes : sizeof in;
        if (fread(in, 1, n, fp) != n) {
            *why = "read error";
            inflateEnd(&z);
            return -1;
        }
        bytes -= n;
        z.next_in = in;
        z.avail_in = (uInt)n;
        do {
            z.next_out = out;
            z.avail_out = sizeof out;
            rc = inflate(&z, Z_NO_FLUSH);
        } while (rc == Z_OK && (z.avail_in > 0 || z.avail_out == 0)); /* input or output left */
        if (rc == Z_BUF_ERROR) rc = Z_OK;                             /* needs more input */
    }
    int ok = rc == Z_STREAM_END && bytes == 0 && z.avail_in == 0;
    *why = ok                   ? NULL
           : rc == Z_DATA_ERROR ? (z.msg ? z.msg : "bad data")
           : rc == Z_STREAM_END ? "data after the end of the compressed stream"
                                : "the compressed stream ends early";
    inflateEnd(&z);
    return ok ? 0 : -1;
}

/* libmatio inflates whatever part of a cut-off or damaged compressed variable it can and
 * reports success, so v5 files are checked here first: every top-level data element (8-byte
 * tag: type, byte count) must fit in the file, and every compressed one must inflate to the end
 * of its zlib stream, whose Adler-32 checksum catches damaged bytes. */
static int check_v5_elements(FILE *fp, const char *path, int little, ms_io_err *err) {
    struct stat st;
    if (fstat(fileno(fp), &st) != 0) return ms_io_fail(err, MS_IO_OPEN, "%s: cannot stat", path);
    uint64_t size = (uint64_t)st.st_size, pos = 128;
    while (pos < size) {
        uint8_t tag[8];
        if (size - pos < 8 || fseeko(fp, (off_t)pos, SEEK_SET) != 0 || fread(tag, 1, 8, fp) != 8)
            return ms_io_fail(err, MS_IO_CORRUPT,
                              "%s: truncated MAT file: %" PRIu64 " stray bytes at its end", path,
                              size - pos);
        uint32_t type = little ? tag[0] | tag[1] << 8 | tag[2] << 16 | (uint32_t)tag[3] << 24
                               : (uint32_t)tag[0] << 24 | tag[1] << 16 | tag[2] << 8 | tag[3];
        uint64_t bytes = little ? tag[4] | tag[5] << 8 | tag[6] << 16 | (uint64_t)tag[7] << 24
                                : (uint64_t)tag[4] << 24 | tag[5] << 16 | tag[6] << 8 | tag[7];
        if (type != MAT_T_COMPRESSED) bytes = (bytes + 7) / 8 * 8; /* matrices are padded */
        if (bytes > size - pos - 8)
            return ms_io_fail(err, MS_IO_CORRUPT,
                              "%s: truncated MAT file: the variable at byte %" PRIu64
                              " needs %" PRIu64 " bytes, %" PRIu64 " remain",
                              path, pos, bytes, size - pos - 8);
        const char *why;
        if (type == MAT_T_COMPRESSED && inflate_check(fp, bytes, &why) != 0)
            return ms_io_fail(err, MS_IO_CORRUPT,
                              "%s: corrupt MAT file: the compressed variable at byte %" PRIu64
                              " is damaged (%s)",
                              path, pos, why);
        pos += 8 + bytes;
    }
    return MS_IO_OK;
}

static int mat_open(const char *path, mat_handle *h, ms_io_err *err) {
    pthread_once(&g_log_once, init_matio_log);
    t_matio_msg[0] = '\0';
    h->mat = NULL;
    h->locked = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        int e = errno;
        char eb[128];
        if (strerror_r(e, eb, sizeof eb) != 0) snprintf(eb, sizeof eb, "errno %d", e);
        return ms_io_fail(err, MS_IO_OPEN, "%s: cannot open: %s", path, eb);
    }
    /* v5 and v7.3 share a 128-byte header whose version word (offset 124, in the byte order
     * the "IM"/"MI" mark at 126 gives) is 0x0100 for v5. */
    uint8_t hdr[128];
    size_t n = fread(hdr, 1, sizeof hdr, fp);
    int little = n == sizeof hdr && hdr[126] == 'I' && hdr[127] == 'M';
    int big = n == sizeof hdr && hdr[126] == 'M' && hdr[127] == 'I';
    unsigned version = little ? (unsigned)(hdr[124] | hdr[125] << 8)
                       : big  ? (unsigned)(hdr[124] << 8 | hdr[125])
                              : 0;
    int status = version == 0x0100 ? check_v5_elements(fp, path, little, err) : MS_IO_OK;
    fclose(fp);
    if (status) return status;
    /* Without this header libmatio falls back to v4, which has none and so takes any bytes for
     * matrices: fuzzing found 200 damaged bytes costing it 4 s and 2 GB. */
    if (version != 0x0100 && version != 0x0200)
        return ms_io_fail(err, MS_IO_CORRUPT,
                          "%s: not a MATLAB v5/v7.3 file (no MAT-file header; v4 is not read)",
                          path);
    if (version != 0x0100) {
        pthread_mutex_lock(&g_hdf5_lock);
        h->locked = 1;
    }
    h->mat = Mat_Open(path, MAT_ACC_RDONLY);
    if (!h->mat) {
        if (h->locked) pthread_mutex_unlock(&g_hdf5_lock);
        h->locked = 0;
        char mb[300];
        if (version == 0x0200)
            return ms_io_fail(err, MS_IO_UNSUPPORTED,
                              "%s: v7.3 (HDF5) MAT file that libmatio cannot open: damaged, or "
                              "libmatio built without HDF5 support%s",
                              path, matio_said(mb, sizeof mb));
        return ms_io_fail(err, MS_IO_CORRUPT, "%s: not a readable MATLAB v5/v7.3 file%s", path,
                          matio_said(mb, sizeof mb));
    }
    return MS_IO_OK;
}

static void mat_close(mat_handle *h) {
    if (h->mat) Mat_Close(h->mat);
    if (h->locked) pthread_mutex_unlock(&g_hdf5_lock);
    h->mat = NULL;
    h->locked = 0;
}

static int mat_read_var(mat_handle *h, const char *path, const char *name, matvar_t **out,
                        ms_io_err *err) {
    char mb[300];
    t_matio_msg[0] = '\0';
    matvar_t *info = Mat_VarReadInfo(h->mat, name);
    if (!info)
        return ms_io_fail(err, MS_IO_CORRUPT,
                          "%s: no readable variable '%s' (missing, or the file is truncated or "
                          "corrupt)%s",
                          path, name, matio_said(mb, sizeof mb));
    Mat_VarFree(info);
    *out = Mat_VarRead(h->mat, name);
    if (!*out)
        return ms_io_fail(err, MS_IO_CORRUPT, "%s: variable '%s' is corrupt or truncated%s", path,
                          name, matio_said(mb, sizeof mb));
    return MS_IO_OK;
}

/* ---- reading values -------------------------------------------------------------------------- */

static size_t var_count(const matvar_t *v) {
    size_t n = 1;
    for (int i = 0; i < v->rank; i++) n *= v->dims[i];
    return n;
}

static int is_numeric(const matvar_t *v) {
    return v->class_type >= MAT_C_DOUBLE && v->class_type <= MAT_C_UINT64 && !v->isComplex;
}

/* Element i (column-major linear index) as a double; every numeric class fits the call sites:
 * labels and class ids are far below 2^53. */
static double numeric_at(const matvar_t *v, size_t i) {
    switch (v->data_type) {
    case MAT_T_DOUBLE: return ((const double *)v->data)[i];
    case MAT_T_SINGLE: return ((const float *)v->data)[i];
    case MAT_T_INT8: return ((const int8_t *)v->data)[i];
    case MAT_T_UINT8: return ((const uint8_t *)v->data)[i];
    case MAT_T_INT16: return ((const int16_t *)v->data)[i];
    case MAT_T_UINT16: return ((const uint16_t *)v->data)[i];
    case MAT_T_INT32: return ((const int32_t *)v->data)[i];
    case MAT_T_UINT32: return ((const uint32_t *)v->data)[i];
    case MAT_T_INT64: return (double)((const int64_t *)v->data)[i];
    case MAT_T_UINT64: return (double)((const uint64_t *)v->data)[i];
    default: return NAN;
    }
}

static size_t type_bytes(enum matio_types t) {
    switch (t) {
    case MAT_T_INT8:
    case MAT_T_UINT8:
    case MAT_T_UTF8: return 1;
    case MAT_T_INT16:
    case MAT_T_UINT16:
    case MAT_T_UTF16: return 2;
    case MAT_T_INT32:
    case MAT_T_UINT32:
    case MAT_T_SINGLE:
    case MAT_T_UTF32: return 4;
    case MAT_T_DOUBLE:
    case MAT_T_INT64:
    case MAT_T_UINT64: return 8;
    default: return 0;
    }
}

/* A real numeric 2-D array whose data buffer really holds all its elements. */
static int check_matrix(const matvar_t *v, const char *path, const char *what, size_t *h, size_t *w,
                        ms_io_err *err) {
    if (!v) return ms_io_fail(err, MS_IO_CORRUPT, "%s: %s is missing", path, what);
    if (!is_numeric(v) || v->rank != 2)
        return ms_io_fail(err, MS_IO_CORRUPT,
                          "%s: %s is not a real 2-D numeric array (class %d, rank %d)", path, what,
                          (int)v->class_type, v->rank);
    size_t n = var_count(v), bytes = type_bytes(v->data_type);
    if (bytes == 0 || (n && (!v->data || v->nbytes < n * bytes)))
        return ms_io_fail(err, MS_IO_CORRUPT, "%s: %s has no data for its %zux%zu elements", path,
                          what, v->dims[0], v->dims[1]);
    if (v->dims[0] > INT_MAX || v->dims[1] > INT_MAX || n > (size_t)INT_MAX)
        return ms_io_fail(err, MS_IO_UNSUPPORTED, "%s: %s of %zux%zu is too large", path, what,
                          v->dims[0], v->dims[1]);
    *h = v->dims[0];
    *w = v->dims[1];
    return MS_IO_OK;
}

static int read_int(const matvar_t *v, const char *path, const char *what, int *out,
                    ms_io_err *err) {
    if (!v || !is_numeric(v) || var_count(v) < 1 || !v->data || type_bytes(v->data_type) == 0)
        return ms_io_fail(err, MS_IO_CORRUPT, "%s: %s is not a number", path, what);
    double d = numeric_at(v, 0);
    if (!(d >= INT_MIN && d <= INT_MAX) || d != floor(d))
        return ms_io_fail(err, MS_IO_CORRUPT, "%s: %s is %g, expected an integer", path, what, d);
    *out = (int)d;
    return MS_IO_OK;
}

static int read_string(const matvar_t *v, const char *path, const char *what, char *out, size_t cap,
                       ms_io_err *err) {
    if (!v || v->class_type != MAT_C_CHAR)
        return ms_io_fail(err, MS_IO_CORRUPT, "%s: %s is not a character array", path, what);
    size_t n = var_count(v), unit = type_bytes(v->data_type);
    if (n && (!v->data || unit == 0 || v->nbytes < n * unit))
        return ms_io_fail(err, MS_IO_CORRUPT, "%s: %s has no character data", path, what);
    if (n >= cap)
        return ms_io_fail(err, MS_IO_UNSUPPORTED, "%s: %s is %zu characters, at most %zu allowed",
                          path, what, n, cap - 1);
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = (const uint8_t *)v->data + i * unit;
        uint32_t c = unit == 1 ? p[0] : unit == 2 ? *(const uint16_t *)p : *(const uint32_t *)p;
        out[i] = c < 128 ? (char)c : '?'; /* PASCAL names are ASCII */
    }
    out[n] = '\0';
    return MS_IO_OK;
}

/* ---- LabelMap -------------------------------------------------------------------------------- */

void ms_labelmap_init(ms_labelmap *lm) { memset(lm, 0, sizeof *lm); }

void ms_labelmap_free(ms_labelmap *lm) {
    free(lm->labels);
    ms_labelmap_init(lm);
}

static int labels_from(const matvar_t *v, const char *path, const char *name, int want_h,
                       int want_w, ms_labelmap *lm, ms_io_err *err) {
    size_t h, w;
    int status = check_matrix(v, path, name, &h, &w, err);
    if (status) return status;
    if ((want_h && (size_t)want_h != h) || (want_w && (size_t)want_w != w))
        return ms_io_fail(err, MS_IO_MISMATCH, "%s: %s is %zux%zu (HxW), expected %dx%d", path,
                          name, h, w, want_h ? want_h : (int)h, want_w ? want_w : (int)w);
    if (h * w > lm->capacity) {
        int32_t *p = realloc(lm->labels, h * w * sizeof *p);
        if (!p) return ms_io_fail(err, MS_IO_NOMEM, "%s: out of memory for %s", path, name);
        lm->labels = p;
        lm->capacity = h * w;
    }
    lm->height = (int)h;
    lm->width = (int)w;
    /* Column-major in the file: element (r, c) sits at c*H + r. Reading in storage order keeps
     * the source sequential; the writes stride by W. */
    for (size_t c = 0; c < w; c++)
        for (size_t r = 0; r < h; r++) {
            double d = numeric_at(v, c * h + r);
            if (!(d >= INT32_MIN && d <= INT32_MAX) || d != floor(d))
                return ms_io_fail(err, MS_IO_CORRUPT,
                                  "%s: %s holds %g at row %zu, column %zu; expected integer labels",
                                  path, name, d, r, c);
            lm->labels[r * w + c] = (int32_t)d;
        }
    return MS_IO_OK;
}

int ms_mat_read_labelmap(const char *path, const char *var, int want_h, int want_w, ms_labelmap *lm,
                         ms_io_err *err) {
    if (!var) var = "LabelMap";
    mat_handle h;
    int status = mat_open(path, &h, err);
    if (status) return status;
    matvar_t *v = NULL;
    status = mat_read_var(&h, path, var, &v, err);
    if (!status) status = labels_from(v, path, var, want_h, want_w, lm, err);
    Mat_VarFree(v);
    mat_close(&h);
    return status;
}

/* ---- anno ------------------------------------------------------------------------------------ */

void ms_anno_free(ms_anno *anno) {
    for (int j = 0; j < anno->n_objects; j++) {
        ms_anno_object *o = &anno->objects[j];
        for (int k = 0; k < o->n_parts; k++) free(o->parts[k].mask);
        free(o->parts);
        free(o->mask);
    }
    free(anno->objects);
    memset(anno, 0, sizeof *anno);
}

/* A mask as uint8 0/1 H x W row-major; every mask of a file must share one size. */
static int read_mask(const matvar_t *v, const char *path, const char *what, ms_anno *anno,
                     uint8_t **out, ms_io_err *err) {
    size_t h, w;
    int status = check_matrix(v, path, what, &h, &w, err);
    if (status) return status;
    if (anno->height == 0 && anno->width == 0) {
        anno->height = (int)h;
        anno->width = (int)w;
    } else if ((size_t)anno->height != h || (size_t)anno->width != w) {
        return ms_io_fail(err, MS_IO_CORRUPT, "%s: %s is %zux%zu, the first mask is %dx%d", path,
                          what, h, w, anno->height, anno->width);
    }
    uint8_t *m = malloc(h * w > 0 ? h * w : 1);
    if (!m) return ms_io_fail(err, MS_IO_NOMEM, "%s: out of memory for %s", path, what);
    if (v->data_type == MAT_T_UINT8) { /* the usual class: no per-element conversion */
        const uint8_t *s = v->data;
        for (size_t c = 0; c < w; c++)
            for (size_t r = 0; r < h; r++) m[r * w + c] = s[c * h + r] != 0;
    } else {
        for (size_t c = 0; c < w; c++)
            for (size_t r = 0; r < h; r++) m[r * w + c] = numeric_at(v, c * h + r) != 0;
    }
    *out = m;
    return MS_IO_OK;
}

static int read_parts(matvar_t *parts, const char *path, int j, ms_anno *anno, ms_anno_object *o,
                      ms_io_err *err) {
    size_t np = parts ? var_count(parts) : 0;
    if (np == 0) return MS_IO_OK; /* parts = [] */
    char what[96];
    if (parts->class_type != MAT_C_STRUCT || Mat_VarGetNumberOfFields(parts) < 2)
        return ms_io_fail(err, MS_IO_CORRUPT,
                          "%s: anno.objects(%d).parts is not a struct array with fields "
                          "part_name, mask",
                          path, j + 1);
    if (np > INT_MAX) return ms_io_fail(err, MS_IO_UNSUPPORTED, "%s: too many parts", path);
    o->parts = calloc(np, sizeof *o->parts);
    if (!o->parts) return ms_io_fail(err, MS_IO_NOMEM, "%s: out of memory", path);
    o->n_parts = (int)np;
    for (size_t k = 0; k < np; k++) {
        ms_anno_part *p = &o->parts[k];
        snprintf(what, sizeof what, "anno.objects(%d).parts(%zu).part_name", j + 1, k + 1);
        int status = read_string(Mat_VarGetStructFieldByIndex(parts, 0, k), path, what, p->name,
                                 sizeof p->name, err);
        if (status) return status;
        snprintf(what, sizeof what, "anno.objects(%d).parts(%zu).mask", j + 1, k + 1);
        status =
            read_mask(Mat_VarGetStructFieldByIndex(parts, 1, k), path, what, anno, &p->mask, err);
        if (status) return status;
    }
    return MS_IO_OK;
}

static int anno_from(matvar_t *v, const char *path, ms_anno *anno, ms_io_err *err) {
    if (v->class_type != MAT_C_STRUCT || var_count(v) < 1 || Mat_VarGetNumberOfFields(v) < 2)
        return ms_io_fail(err, MS_IO_CORRUPT,
                          "%s: 'anno' is not a struct with fields imname, objects", path);
    matvar_t *objs = Mat_VarGetStructFieldByIndex(v, 1, 0);
    size_t n = objs ? var_count(objs) : 0;
    if (n == 0) return MS_IO_OK;
    if (objs->class_type != MAT_C_STRUCT || Mat_VarGetNumberOfFields(objs) < 4)
        return ms_io_fail(err, MS_IO_CORRUPT,
                          "%s: anno.objects is not a struct array with fields class, class_ind, "
                          "mask, parts",
                          path);
    if (n > INT_MAX) return ms_io_fail(err, MS_IO_UNSUPPORTED, "%s: too many objects", path);
    anno->objects = calloc(n, sizeof *anno->objects);
    if (!anno->objects) return ms_io_fail(err, MS_IO_NOMEM, "%s: out of memory", path);
    anno->n_objects = (int)n;
    char what[64];
    for (size_t j = 0; j < n; j++) {
        ms_anno_object *o = &anno->objects[j];
        snprintf(what, sizeof what, "anno.objects(%zu).class_ind", j + 1);
        int status =
            read_int(Mat_VarGetStructFieldByIndex(objs, 1, j), path, what, &o->class_id, err);
        if (status) return status;
        snprintf(what, sizeof what, "anno.objects(%zu).mask", j + 1);
        status =
            read_mask(Mat_VarGetStructFieldByIndex(objs, 2, j), path, what, anno, &o->mask, err);
        if (status) return status;
        status = read_parts(Mat_VarGetStructFieldByIndex(objs, 3, j), path, (int)j, anno, o, err);
        if (status) return status;
    }
    return MS_IO_OK;
}

int ms_mat_read_anno(const char *path, ms_anno *anno, ms_io_err *err) {
    memset(anno, 0, sizeof *anno);
    mat_handle h;
    int status = mat_open(path, &h, err);
    if (status) return status;
    matvar_t *v = NULL;
    status = mat_read_var(&h, path, "anno", &v, err);
    if (!status) status = anno_from(v, path, anno, err);
    Mat_VarFree(v);
    mat_close(&h);
    if (status) ms_anno_free(anno);
    return status;
}

/* ---- writing --------------------------------------------------------------------------------- */

static const char *const k_voc_classes[21] = {
    "background", "aeroplane", "bicycle",     "bird",  "boat",        "bottle", "bus",
    "car",        "cat",       "chair",       "cow",   "diningtable", "dog",    "horse",
    "motorbike",  "person",    "pottedplant", "sheep", "sofa",        "train",  "tvmonitor"};

static matvar_t *new_string(const char *name, const char *s) {
    size_t dims[2] = {1, strlen(s)};
    return Mat_VarCreate(name, MAT_C_CHAR, MAT_T_UTF8, 2, dims, (void *)s, 0);
}

static matvar_t *new_double(const char *name, double v) {
    size_t dims[2] = {1, 1};
    return Mat_VarCreate(name, MAT_C_DOUBLE, MAT_T_DOUBLE, 2, dims, &v, 0);
}

static matvar_t *new_empty(const char *name) {
    size_t dims[2] = {0, 0};
    return Mat_VarCreate(name, MAT_C_DOUBLE, MAT_T_DOUBLE, 2, dims, NULL, 0);
}

/* H x W row-major uint8 -> a column-major uint8 matrix (libmatio copies the buffer). */
static matvar_t *new_mask(const char *name, const uint8_t *m, int h, int w) {
    size_t n = (size_t)h * (size_t)w;
    uint8_t *cm = malloc(n ? n : 1);
    if (!cm) return NULL;
    for (size_t r = 0; r < (size_t)h; r++)
        for (size_t c = 0; c < (size_t)w; c++) cm[c * (size_t)h + r] = m[r * (size_t)w + c];
    size_t dims[2] = {(size_t)h, (size_t)w};
    matvar_t *v = Mat_VarCreate(name, MAT_C_UINT8, MAT_T_UINT8, 2, dims, cm, 0);
    free(cm);
    return v;
}

/* Sets field `index` of element `elem`; takes ownership of field (freed on failure). */
static int set_field(matvar_t *s, size_t index, size_t elem, matvar_t *field) {
    if (!s || !field) {
        Mat_VarFree(field);
        return -1;
    }
    if (Mat_VarSetStructFieldByIndex(s, index, elem, field) != NULL) return -1;
    return 0;
}

static matvar_t *new_parts(const ms_anno_object *o, int h, int w) {
    if (o->n_parts == 0) return new_empty("parts");
    static const char *const fields[] = {"part_name", "mask", NULL};
    size_t dims[2] = {1, (size_t)o->n_parts};
    matvar_t *s = Mat_VarCreateStruct2("parts", 2, dims, fields);
    for (int k = 0; s && k < o->n_parts; k++) {
        if (set_field(s, 0, (size_t)k, new_string("part_name", o->parts[k].name)) ||
            set_field(s, 1, (size_t)k, new_mask("mask", o->parts[k].mask, h, w))) {
            Mat_VarFree(s);
            return NULL;
        }
    }
    return s;
}

static matvar_t *new_anno(const ms_anno *anno, const char *imname) {
    static const char *const top_fields[] = {"imname", "objects", NULL};
    static const char *const obj_fields[] = {"class", "class_ind", "mask", "parts", NULL};
    size_t one[2] = {1, 1};
    matvar_t *top = Mat_VarCreateStruct2("anno", 2, one, top_fields);
    if (!top || set_field(top, 0, 0, new_string("imname", imname ? imname : ""))) {
        Mat_VarFree(top);
        return NULL;
    }
    matvar_t *objs;
    if (anno->n_objects == 0) {
        objs = new_empty("objects");
    } else {
        size_t dims[2] = {1, (size_t)anno->n_objects};
        objs = Mat_VarCreateStruct2("objects", 2, dims, obj_fields);
        for (int j = 0; objs && j < anno->n_objects; j++) {
            const ms_anno_object *o = &anno->objects[j];
            size_t e = (size_t)j;
            if (set_field(objs, 0, e, new_string("class", k_voc_classes[o->class_id])) ||
                set_field(objs, 1, e, new_double("class_ind", o->class_id)) ||
                set_field(objs, 2, e, new_mask("mask", o->mask, anno->height, anno->width)) ||
                set_field(objs, 3, e, new_parts(o, anno->height, anno->width))) {
                Mat_VarFree(objs);
                objs = NULL;
            }
        }
    }
    if (set_field(top, 1, 0, objs)) {
        Mat_VarFree(top);
        return NULL;
    }
    return top;
}

/* Fixed header text: libmatio's default embeds the creation time, which would make files
 * differ run to run. */
#define MAT_HEADER_TEXT "MATLAB 5.0 MAT-file, written by modsquad"

static int write_var(const char *path, matvar_t *var, ms_mat_version version, int flags,
                     ms_io_err *err) {
    if (version != MS_MAT_V5 && version != MS_MAT_V73)
        return ms_io_fail(err, MS_IO_ARG, "%s: MAT version %d, expected 5 or 73", path,
                          (int)version);
    pthread_once(&g_log_once, init_matio_log);
    t_matio_msg[0] = '\0';
    ms_atomic a;
    int status = ms_atomic_begin(&a, path, NULL, err);
    if (status) return status;
    char mb[300];
    if (version == MS_MAT_V73) pthread_mutex_lock(&g_hdf5_lock);
    mat_t *mat =
        Mat_CreateVer(a.tmp, MAT_HEADER_TEXT, version == MS_MAT_V73 ? MAT_FT_MAT73 : MAT_FT_MAT5);
    int rc = -1, close_rc = 0;
    if (mat) {
        rc = Mat_VarWrite(mat, var, MAT_COMPRESSION_ZLIB);
        close_rc = Mat_Close(mat);
    }
    if (version == MS_MAT_V73) pthread_mutex_unlock(&g_hdf5_lock);
    if (!mat) {
        ms_atomic_abort(&a, NULL);
        return ms_io_fail(err, version == MS_MAT_V73 ? MS_IO_UNSUPPORTED : MS_IO_WRITE,
                          "%s: libmatio cannot create a v%s MAT file%s%s", path,
                          version == MS_MAT_V73 ? "7.3" : "5", matio_said(mb, sizeof mb),
                          version == MS_MAT_V73 ? " (v7.3 needs libmatio built with HDF5)" : "");
    }
    if (rc != 0 || close_rc != 0) {
        ms_atomic_abort(&a, NULL);
        return ms_io_fail(err, MS_IO_WRITE, "%s: libmatio failed to write '%s'%s", path, var->name,
                          matio_said(mb, sizeof mb));
    }
    return ms_atomic_commit(&a, NULL, flags, err);
}

int ms_mat_write_labelmap(const char *path, const int32_t *labels, int height, int width,
                          ms_mat_version version, int flags, ms_io_err *err) {
    if (!labels || height <= 0 || width <= 0)
        return ms_io_fail(err, MS_IO_ARG, "%s: empty LabelMap", path);
    size_t n = (size_t)height * (size_t)width;
    int fits16 = 1;
    for (size_t i = 0; i < n && fits16; i++) fits16 = labels[i] >= 0 && labels[i] <= 65535;
    size_t esize = fits16 ? 2 : 4;
    uint8_t *cm = malloc(n * esize);
    if (!cm) return ms_io_fail(err, MS_IO_NOMEM, "%s: out of memory", path);
    for (size_t r = 0; r < (size_t)height; r++)
        for (size_t c = 0; c < (size_t)width; c++) {
            size_t src = r * (size_t)width + c, dst = c * (size_t)height + r;
            if (fits16)
                ((uint16_t *)cm)[dst] = (uint16_t)labels[src];
            else
                ((int32_t *)cm)[dst] = labels[src];
        }
    size_t dims[2] = {(size_t)height, (size_t)width};
    matvar_t *v = Mat_VarCreate("LabelMap", fits16 ? MAT_C_UINT16 : MAT_C_INT32,
                                fits16 ? MAT_T_UINT16 : MAT_T_INT32, 2, dims, cm, 0);
    free(cm);
    if (!v) return ms_io_fail(err, MS_IO_NOMEM, "%s: libmatio cannot build LabelMap", path);
    int status = write_var(path, v, version, flags, err);
    Mat_VarFree(v);
    return status;
}

int ms_mat_write_anno(const char *path, const ms_anno *anno, const char *imname,
                      ms_mat_version version, int flags, ms_io_err *err) {
    for (int j = 0; j < anno->n_objects; j++) {
        const ms_anno_object *o = &anno->objects[j];
        if (o->class_id < 1 || o->class_id > 20)
            return ms_io_fail(err, MS_IO_ARG, "%s: object %d has class %d, expected 1..20", path,
                              j + 1, o->class_id);
        if (!o->mask || (o->n_parts && !o->parts) || anno->height <= 0 || anno->width <= 0)
            return ms_io_fail(err, MS_IO_ARG, "%s: object %d lacks its masks or size", path, j + 1);
        for (int k = 0; k < o->n_parts; k++)
            if (!o->parts[k].mask)
                return ms_io_fail(err, MS_IO_ARG, "%s: object %d part %d has no mask", path, j + 1,
                                  k + 1);
    }
    matvar_t *v = new_anno(anno, imname);
    if (!v) return ms_io_fail(err, MS_IO_NOMEM, "%s: libmatio cannot build 'anno'", path);
    int status = write_var(path, v, version, flags, err);
    Mat_VarFree(v);
    return status;
}
