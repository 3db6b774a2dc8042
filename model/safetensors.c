#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define CRC_KEY "modsquad.crc32"
/* A header beyond this is not a modsquad checkpoint (and not a sane safetensors file). */
#define MAX_HEADER (64u << 20)

static int fail(char *err, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (err && cap) vsnprintf(err, cap, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- growable text buffer for the JSON header -------------------------------------------- */
typedef struct {
    char *s;
    size_t n, cap;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            fprintf(stderr, "modsquad: error: out of memory building a safetensors header\n");
            exit(1);
        }
        b->s = p, b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void sb_json_string(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"') sb_put(b, "\\\"", 2);
        else if (c == '\\') sb_put(b, "\\\\", 2);
        else if (c == '\n') sb_put(b, "\\n", 2);
        else if (c == '\t') sb_put(b, "\\t", 2);
        else if (c == '\r') sb_put(b, "\\r", 2);
        else if (c < 0x20) sb_printf(b, "\\u%04x", c);
        else sb_put(b, (const char *)&c, 1);
    }
    sb_put(b, "\"", 1);
}

/* ---- writing ------------------------------------------------------------------------------ */
static int write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n > (1u << 30) ? (1u << 30) : n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        c += w, n -= (size_t)w;
    }
    return 0;
}

/* zlib's crc32 takes 32-bit lengths: feed big tensors in pieces. */
static uLong crc_update(uLong crc, const uint8_t *p, size_t left) {
    while (left) {
        uInt chunk = left > (1u << 30) ? (1u << 30) : (uInt)left;
        crc = crc32(crc, p, chunk);
        p += chunk, left -= chunk;
    }
    return crc;
}

static uint32_t crc_of_tensors(const ms_param_table *pt, const float *const *views) {
    uLong crc = crc32(0L, Z_NULL, 0);
    for (int i = 0; i < pt->n; i++)
        crc = crc_update(crc, (const uint8_t *)views[i], pt->t[i].numel * sizeof(float));
    return (uint32_t)crc;
}

int ms_safetensors_write(const char *path, const ms_param_table *pt, const float *data,
                         const ms_kv *meta, int n_meta, char *err, size_t cap) {
    const float **views = malloc((size_t)(pt->n ? pt->n : 1) * sizeof *views);
    if (!views) return fail(err, cap, "%s: out of memory", path);
    for (int i = 0; i < pt->n; i++) views[i] = data + pt->t[i].offset;
    int rc = ms_safetensors_write_views(path, pt, views, meta, n_meta, err, cap);
    free(views);
    return rc;
}

int ms_safetensors_write_views(const char *path, const ms_param_table *pt,
                               const float *const *views, const ms_kv *meta, int n_meta,
                               char *err, size_t cap) {
    /* Header: metadata first, then tensors in table order with contiguous data offsets. */
    sbuf h = {0};
    char crc[16];
    snprintf(crc, sizeof crc, "%08x", crc_of_tensors(pt, views));
    sb_put(&h, "{\"__metadata__\":{", 17);
    for (int i = 0; i < n_meta; i++) {
        sb_json_string(&h, meta[i].key);
        sb_put(&h, ":", 1);
        sb_json_string(&h, meta[i].value);
        sb_put(&h, ",", 1);
    }
    sb_json_string(&h, CRC_KEY);
    sb_put(&h, ":", 1);
    sb_json_string(&h, crc);
    sb_put(&h, "}", 1);
    size_t off = 0;
    for (int i = 0; i < pt->n; i++) {
        const ms_tensor_info *t = &pt->t[i];
        sb_put(&h, ",", 1);
        sb_json_string(&h, t->name);
        sb_put(&h, ":{\"dtype\":\"F32\",\"shape\":[", 25);
        for (int d = 0; d < t->ndim; d++) sb_printf(&h, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        size_t bytes = t->numel * sizeof(float);
        sb_printf(&h, "],\"data_offsets\":[%zu,%zu]}", off, off + bytes);
        off += bytes;
    }
    sb_put(&h, "}", 1);
    while (h.n % 8) sb_put(&h, " ", 1); /* data starts 8-byte aligned, as the reference writer does */

    size_t plen = strlen(path);
    char *tmp = malloc(plen + 32);
    char *dir = malloc(plen + 1);
    if (!tmp || !dir) {
        free(h.s), free(tmp), free(dir);
        return fail(err, cap, "%s: out of memory", path);
    }
    snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int rc = -1;
    if (fd < 0) {
        fail(err, cap, "cannot create %s: %s", tmp, strerror(errno));
        goto out;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)h.n >> (8 * i));
    int ok = write_all(fd, len8, 8) == 0 && write_all(fd, h.s, h.n) == 0;
    for (int i = 0; ok && i < pt->n; i++)
        ok = write_all(fd, views[i], pt->t[i].numel * sizeof(float)) == 0;
    if (!ok || fsync(fd) != 0) {
        fail(err, cap, "cannot write %s: %s (the previous %s is untouched)", tmp, strerror(errno),
             path);
        close(fd);
        unlink(tmp);
        goto out;
    }
    if (close(fd) != 0) {
        fail(err, cap, "cannot write %s: %s (the previous %s is untouched)", tmp, strerror(errno),
             path);
        unlink(tmp);
        goto out;
    }
    if (rename(tmp, path) != 0) {
        fail(err, cap, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        unlink(tmp);
        goto out;
    }
    /* The rename is durable only once the directory entry is on disk. */
    memcpy(dir, path, plen + 1);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    rc = 0;
out:
    free(h.s), free(tmp), free(dir);
    return rc;
}

/* ---- a small JSON reader, enough for any safetensors header -------------------------------- */
typedef struct {
    const char *p, *end, *start;
    const char *path;
    char *err;
    size_t cap;
} jin;

static void skip_ws(jin *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\n' || *j->p == '\r' || *j->p == '\t')) j->p++;
}

static int jfail(jin *j, const char *what) {
    return fail(j->err, j->cap, "%s: malformed safetensors header at byte %zu: %s", j->path,
                (size_t)(j->p - j->start), what);
}

static int expect(jin *j, char c) {
    skip_ws(j);
    if (j->p >= j->end || *j->p != c) {
        char what[32];
        snprintf(what, sizeof what, "expected '%c'", c);
        return jfail(j, what);
    }
    j->p++;
    return 0;
}

static void put_utf8(char *out, size_t *n, unsigned cp) {
    if (cp < 0x80) out[(*n)++] = (char)cp;
    else if (cp < 0x800) {
        out[(*n)++] = (char)(0xC0 | (cp >> 6));
        out[(*n)++] = (char)(0x80 | (cp & 0x3F));
    } else {
        out[(*n)++] = (char)(0xE0 | (cp >> 12));
        out[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*n)++] = (char)(0x80 | (cp & 0x3F));
    }
}

/* Parses a JSON string into a new malloc'd C string. */
static int parse_string(jin *j, char **out) {
    if (expect(j, '"')) return -1;
    const char *s = j->p;
    while (j->p < j->end && *j->p != '"') j->p += (*j->p == '\\') ? 2 : 1;
    if (j->p >= j->end) return jfail(j, "unterminated string");
    size_t max = (size_t)(j->p - s);
    char *r = malloc(max + 1);
    if (!r) return jfail(j, "out of memory");
    size_t n = 0;
    for (const char *c = s; c < j->p; c++) {
        if (*c != '\\') {
            r[n++] = *c;
            continue;
        }
        c++;
        switch (*c) {
        case '"': case '\\': case '/': r[n++] = *c; break;
        case 'b': r[n++] = '\b'; break;
        case 'f': r[n++] = '\f'; break;
        case 'n': r[n++] = '\n'; break;
        case 'r': r[n++] = '\r'; break;
        case 't': r[n++] = '\t'; break;
        case 'u': {
            unsigned cp = 0;
            if (j->p - c < 5) { free(r); return jfail(j, "bad \\u escape"); }
            for (int k = 1; k <= 4; k++) {
                char h = c[k];
                int v = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                      : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
                if (v < 0) { free(r); return jfail(j, "bad \\u escape"); }
                cp = cp * 16 + (unsigned)v;
            }
            /* \uXXXX expands to at most 3 bytes while it took 6 in the input: fits in max. */
            put_utf8(r, &n, cp);
            c += 4;
            break;
        }
        default: free(r); return jfail(j, "bad escape in string");
        }
    }
    r[n] = 0;
    j->p++; /* closing quote */
    *out = r;
    return 0;
}

static int parse_uint(jin *j, int64_t *v) {
    skip_ws(j);
    if (j->p >= j->end || *j->p < '0' || *j->p > '9') return jfail(j, "expected a non-negative integer");
    int64_t x = 0;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
        if (x > (INT64_MAX - 9) / 10) return jfail(j, "integer too large");
        x = x * 10 + (*j->p++ - '0');
    }
    *v = x;
    return 0;
}

/* Reads [a, b, ...] of non-negative integers, at most max of them. */
static int parse_uint_array(jin *j, int64_t *v, int max, int *n) {
    if (expect(j, '[')) return -1;
    *n = 0;
    skip_ws(j);
    if (j->p < j->end && *j->p == ']') { j->p++; return 0; }
    for (;;) {
        if (*n == max) return jfail(j, "array too long");
        if (parse_uint(j, &v[(*n)++])) return -1;
        skip_ws(j);
        if (j->p < j->end && *j->p == ',') { j->p++; continue; }
        return expect(j, ']');
    }
}

/* Skips any JSON value (unknown fields), with a depth limit against hostile input. */
static int skip_value(jin *j, int depth) {
    if (depth > 32) return jfail(j, "nesting too deep");
    skip_ws(j);
    if (j->p >= j->end) return jfail(j, "unexpected end");
    char c = *j->p;
    if (c == '"') {
        char *s;
        if (parse_string(j, &s)) return -1;
        free(s);
        return 0;
    }
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        j->p++;
        skip_ws(j);
        if (j->p < j->end && *j->p == close) { j->p++; return 0; }
        for (;;) {
            if (c == '{') {
                char *k;
                if (parse_string(j, &k)) return -1;
                free(k);
                if (expect(j, ':')) return -1;
            }
            if (skip_value(j, depth + 1)) return -1;
            skip_ws(j);
            if (j->p < j->end && *j->p == ',') { j->p++; continue; }
            return expect(j, close);
        }
    }
    const char *s = j->p;
    while (j->p < j->end && (strchr("+-.eE", *j->p) || (*j->p >= '0' && *j->p <= '9') ||
                             (*j->p >= 'a' && *j->p <= 'z')))
        j->p++;
    if (j->p == s) return jfail(j, "unexpected character");
    return 0;
}

static int parse_tensor(jin *j, ms_st_tensor *t) {
    if (expect(j, '{')) return -1;
    int have_dtype = 0, have_shape = 0, have_off = 0;
    for (;;) {
        char *k;
        if (parse_string(j, &k)) return -1;
        if (expect(j, ':')) { free(k); return -1; }
        int rc = 0;
        if (strcmp(k, "dtype") == 0) {
            char *d;
            rc = parse_string(j, &d);
            if (!rc) {
                snprintf(t->dtype, sizeof t->dtype, "%s", d);
                free(d);
                have_dtype = 1;
            }
        } else if (strcmp(k, "shape") == 0) {
            rc = parse_uint_array(j, t->shape, MS_MAX_DIMS, &t->ndim);
            have_shape = 1;
        } else if (strcmp(k, "data_offsets") == 0) {
            int64_t o[2];
            int n;
            rc = parse_uint_array(j, o, 2, &n);
            if (!rc && n != 2) rc = jfail(j, "data_offsets needs two integers");
            if (!rc) t->begin = (size_t)o[0], t->end = (size_t)o[1], have_off = 1;
        } else {
            rc = skip_value(j, 1);
        }
        free(k);
        if (rc) return -1;
        skip_ws(j);
        if (j->p < j->end && *j->p == ',') { j->p++; continue; }
        if (expect(j, '}')) return -1;
        break;
    }
    if (!have_dtype || !have_shape || !have_off)
        return fail(j->err, j->cap, "%s: tensor '%s' lacks dtype, shape or data_offsets", j->path, t->name);
    return 0;
}

static int parse_metadata(jin *j, ms_st_file *f) {
    if (expect(j, '{')) return -1;
    skip_ws(j);
    if (j->p < j->end && *j->p == '}') { j->p++; return 0; }
    for (;;) {
        char *k, *v;
        if (parse_string(j, &k)) return -1;
        if (expect(j, ':') || parse_string(j, &v)) { free(k); return -1; }
        ms_kv *m = realloc(f->meta, (size_t)(f->n_meta + 1) * sizeof *m);
        if (!m) { free(k), free(v); return jfail(j, "out of memory"); }
        f->meta = m;
        f->meta[f->n_meta++] = (ms_kv){k, v};
        skip_ws(j);
        if (j->p < j->end && *j->p == ',') { j->p++; continue; }
        return expect(j, '}');
    }
}

static int parse_header(jin *j, ms_st_file *f) {
    if (expect(j, '{')) return -1;
    skip_ws(j);
    if (j->p < j->end && *j->p == '}') { j->p++; return 0; }
    for (;;) {
        char *k;
        if (parse_string(j, &k)) return -1;
        if (expect(j, ':')) { free(k); return -1; }
        int rc;
        if (strcmp(k, "__metadata__") == 0) {
            rc = parse_metadata(j, f);
        } else {
            ms_st_tensor *t = realloc(f->t, (size_t)(f->n + 1) * sizeof *t);
            if (!t) { free(k); return jfail(j, "out of memory"); }
            f->t = t;
            t = &f->t[f->n++];
            memset(t, 0, sizeof *t);
            if (strlen(k) >= MS_TENSOR_NAME_MAX) {
                free(k);
                return jfail(j, "tensor name too long");
            }
            snprintf(t->name, sizeof t->name, "%s", k);
            rc = parse_tensor(j, t);
        }
        free(k);
        if (rc) return -1;
        skip_ws(j);
        if (j->p < j->end && *j->p == ',') { j->p++; continue; }
        return expect(j, '}');
    }
}

static size_t dtype_size(const char *d) {
    if (!strcmp(d, "F32") || !strcmp(d, "I32") || !strcmp(d, "U32")) return 4;
    if (!strcmp(d, "F16") || !strcmp(d, "BF16") || !strcmp(d, "I16") || !strcmp(d, "U16")) return 2;
    if (!strcmp(d, "F64") || !strcmp(d, "I64") || !strcmp(d, "U64")) return 8;
    if (!strcmp(d, "U8") || !strcmp(d, "I8") || !strcmp(d, "BOOL")) return 1;
    return 0;
}

static int by_begin(const void *a, const void *b) {
    const ms_st_tensor *x = *(const ms_st_tensor *const *)a, *y = *(const ms_st_tensor *const *)b;
    return (x->begin > y->begin) - (x->begin < y->begin);
}

static int by_name(const void *a, const void *b) {
    return strcmp((*(const ms_st_tensor *const *)a)->name, (*(const ms_st_tensor *const *)b)->name);
}

/* No two tensors share a name or overlapping bytes (sorting keeps hostile headers O(n log n)). */
static int check_layout(const ms_st_file *f, const char *path, char *err, size_t cap) {
    if (f->n < 2) return 0;
    const ms_st_tensor **v = malloc((size_t)f->n * sizeof *v);
    if (!v) return fail(err, cap, "%s: out of memory", path);
    for (int i = 0; i < f->n; i++) v[i] = &f->t[i];
    int rc = 0;
    qsort(v, (size_t)f->n, sizeof *v, by_name);
    for (int i = 1; i < f->n && !rc; i++)
        if (strcmp(v[i - 1]->name, v[i]->name) == 0)
            rc = fail(err, cap, "%s: tensor '%s' appears twice in the header", path, v[i]->name);
    qsort(v, (size_t)f->n, sizeof *v, by_begin);
    for (int i = 1; i < f->n && !rc; i++)
        if (v[i]->begin < v[i - 1]->end && v[i]->end > v[i]->begin)
            rc = fail(err, cap, "%s: tensors '%s' and '%s' overlap in the data", path, v[i - 1]->name,
                      v[i]->name);
    free(v);
    return rc;
}

int ms_safetensors_read(const char *path, ms_st_file *f, char *err, size_t cap) {
    memset(f, 0, sizeof *f);
    FILE *fp = fopen(path, "rb");
    if (!fp) return fail(err, cap, "cannot open %s: %s", path, strerror(errno));
    char *hdr = NULL;
    int rc = -1;
    uint8_t len8[8];
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || fread(len8, 1, 8, fp) != 8) {
        fail(err, cap, "%s: too short for a safetensors file (truncated?)", path);
        goto out;
    }
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)len8[i] << (8 * i);
    if (hlen > MAX_HEADER || hlen + 8 > (uint64_t)st.st_size) {
        fail(err, cap, "%s: header length %llu does not fit the file of %lld bytes (truncated or not a safetensors file)",
             path, (unsigned long long)hlen, (long long)st.st_size);
        goto out;
    }
    hdr = malloc(hlen + 1);
    if (!hdr || fread(hdr, 1, hlen, fp) != hlen) {
        fail(err, cap, "%s: cannot read the %llu-byte header", path, (unsigned long long)hlen);
        goto out;
    }
    jin j = {hdr, hdr + hlen, hdr, path, err, cap};
    if (parse_header(&j, f)) goto out;
    f->data_bytes = (size_t)((uint64_t)st.st_size - 8 - hlen);
    for (int i = 0; i < f->n; i++) {
        ms_st_tensor *t = &f->t[i];
        size_t es = dtype_size(t->dtype), numel = 1;
        if (!es) {
            fail(err, cap, "%s: tensor '%s' has unknown dtype '%s'", path, t->name, t->dtype);
            goto out;
        }
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] > 0 && numel > SIZE_MAX / (size_t)t->shape[d] / 8) {
                fail(err, cap, "%s: tensor '%s' is impossibly large", path, t->name);
                goto out;
            }
            numel *= (size_t)t->shape[d];
        }
        if (t->end < t->begin || t->end - t->begin != numel * es || t->end > f->data_bytes) {
            fail(err, cap, "%s: tensor '%s' has data_offsets [%zu, %zu] that do not match its shape or lie beyond the %zu data bytes (truncated file?)",
                 path, t->name, t->begin, t->end, f->data_bytes);
            goto out;
        }
    }
    if (check_layout(f, path, err, cap)) goto out;
    f->data = malloc(f->data_bytes ? f->data_bytes : 1);
    if (!f->data || fread(f->data, 1, f->data_bytes, fp) != f->data_bytes) {
        fail(err, cap, "%s: cannot read %zu data bytes", path, f->data_bytes);
        goto out;
    }
    const char *want = ms_st_meta(f, CRC_KEY);
    if (want) {
        /* The CRC covers the tensors in header order, as the writer laid them out. */
        uLong crc = crc32(0L, Z_NULL, 0);
        for (int i = 0; i < f->n; i++)
            crc = crc_update(crc, f->data + f->t[i].begin, f->t[i].end - f->t[i].begin);
        char got[16];
        snprintf(got, sizeof got, "%08x", (uint32_t)crc);
        if (strcmp(got, want) != 0) {
            fail(err, cap, "%s: checksum mismatch (stored %s, data gives %s): the file is corrupt", path, want, got);
            goto out;
        }
    }
    rc = 0;
out:
    free(hdr);
    fclose(fp);
    if (rc) ms_safetensors_free(f);
    return rc;
}

void ms_safetensors_free(ms_st_file *f) {
    for (int i = 0; i < f->n_meta; i++) {
        free((char *)f->meta[i].key);
        free((char *)f->meta[i].value);
    }
    free(f->meta);
    free(f->t);
    free(f->data);
    memset(f, 0, sizeof *f);
}

const char *ms_st_meta(const ms_st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[i].key, key) == 0) return f->meta[i].value;
    return NULL;
}

static void shape_of_file(const ms_st_tensor *t, char *buf, size_t cap) {
    size_t used = (size_t)snprintf(buf, cap, "(");
    for (int i = 0; i < t->ndim && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (used < cap) snprintf(buf + used, cap - used, ")");
}

int ms_safetensors_load_params(const ms_st_file *f, const char *path, const ms_param_table *pt,
                               float *data, char *err, size_t cap) {
    for (int i = 0; i < f->n; i++)
        if (ms_params_find(pt, f->t[i].name) < 0)
            return fail(err, cap, "%s: tensor '%s' is not a parameter of this model (checkpoint from another config?)",
                        path, f->t[i].name);
    for (int i = 0; i < pt->n; i++) {
        const ms_tensor_info *p = &pt->t[i];
        const ms_st_tensor *t = NULL;
        for (int k = 0; k < f->n && !t; k++)
            if (strcmp(f->t[k].name, p->name) == 0) t = &f->t[k];
        char want[64], got[64];
        ms_shape_str(p, want, sizeof want);
        if (!t) return fail(err, cap, "%s: missing tensor '%s' %s (checkpoint from another config?)", path, p->name, want);
        shape_of_file(t, got, sizeof got);
        int same = t->ndim == p->ndim;
        for (int d = 0; same && d < p->ndim; d++) same = t->shape[d] == p->shape[d];
        if (!same)
            return fail(err, cap, "%s: tensor '%s' has shape %s in the file but %s in this model's config", path, p->name, got, want);
        if (strcmp(t->dtype, "F32") != 0)
            return fail(err, cap, "%s: tensor '%s' is %s; modsquad checkpoints hold F32", path, p->name, t->dtype);
        memcpy(data + p->offset, f->data + t->begin, t->end - t->begin);
    }
    return 0;
}
