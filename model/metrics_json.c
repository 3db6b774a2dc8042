/* Metrics as JSON, {"task": {"metric": value, ...}, ...}: a writer, and a small strict parser
 * (RFC 8259 syntax, plus the NaN / Infinity tokens Python's json module writes) for baseline
 * files that Delta_m is measured against. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/util.h"
#include "metrics.h"

#define MAX_FILE_BYTES (16u << 20) /* a metrics file is a few kilobytes */
#define MAX_DEPTH 64               /* nesting of skipped values */

/* ---- writer -------------------------------------------------------------------------------- */

typedef struct {
    char *buf;
    size_t cap, n; /* n counts every byte asked for, even past cap */
} out;

static void put(out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(out *o, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const size_t room = o->n < o->cap ? o->cap - o->n : 0;
    const int len = vsnprintf(room ? o->buf + o->n : NULL, room, fmt, ap);
    va_end(ap);
    MS_ASSERT(len >= 0);
    o->n += (size_t)len;
}

static void put_string(out *o, const char *s) {
    put(o, "\"");
    for (; *s; s++) {
        const unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') put(o, "\\%c", c);
        else if (c < 0x20) put(o, "\\u%04x", c);
        else put(o, "%c", c);
    }
    put(o, "\"");
}

/* The shortest of %.15g .. %.17g that reads back to the same double. */
static void put_number(out *o, double v) {
    if (!isfinite(v)) {
        put(o, "null");
        return;
    }
    char s[40];
    for (int digits = 15; digits <= 17; digits++) {
        snprintf(s, sizeof s, "%.*g", digits, v);
        if (strtod(s, NULL) == v) break;
    }
    put(o, "%s", s);
}

size_t ms_metrics_json_format(char *buf, size_t cap, int T, const char *const *tasks,
                              const ms_metric_result *results) {
    out o = {buf, cap, 0};
    if (cap) buf[0] = 0;
    put(&o, "{");
    for (int t = 0; t < T; t++) {
        put(&o, t ? ",\n  " : "\n  ");
        put_string(&o, tasks[t]);
        put(&o, ": {");
        for (int i = 0; i < results[t].n; i++) {
            if (i) put(&o, ", ");
            put_string(&o, results[t].values[i].name);
            put(&o, ": ");
            put_number(&o, results[t].values[i].value);
        }
        put(&o, "}");
    }
    put(&o, "\n}\n");
    return o.n;
}

int ms_metrics_json_write(const char *path, int T, const char *const *tasks,
                          const ms_metric_result *results, char *err, size_t cap) {
    if (strlen(path) >= MS_PATH_MAX) {
        snprintf(err, cap, "%.64s...: path longer than %d bytes", path, MS_PATH_MAX - 1);
        return -1;
    }
    const size_t n = ms_metrics_json_format(NULL, 0, T, tasks, results);
    char *text = ms_malloc(n + 1);
    ms_metrics_json_format(text, n + 1, T, tasks, results);
    char tmp[MS_PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    int ok = f && fwrite(text, 1, n, f) == n;
    ok = f && fclose(f) == 0 && ok;
    free(text);
    if (!ok || rename(tmp, path) != 0) {
        snprintf(err, cap, "%s: cannot write the metrics: %s", path, strerror(errno));
        remove(tmp);
        return -1;
    }
    return 0;
}

/* ---- parser --------------------------------------------------------------------------------- */

typedef struct {
    const char *s;
    size_t n, i;
    const char *what;
    char *err;
    size_t cap;
} parser;

static int fail(parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(parser *p, const char *fmt, ...) {
    int line = 1, col = 1;
    for (size_t k = 0; k < p->i && k < p->n; k++) {
        if (p->s[k] == '\n') line++, col = 1;
        else col++;
    }
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(p->err, p->cap, "%s:%d:%d: %s", p->what, line, col, msg);
    return -1;
}

static void skip_ws(parser *p) {
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' ||
                           p->s[p->i] == '\r'))
        p->i++;
}

static int peek(parser *p) {
    skip_ws(p);
    return p->i < p->n ? (unsigned char)p->s[p->i] : -1;
}

static int expect(parser *p, char c, const char *context) {
    if (peek(p) != c) return fail(p, "expected '%c' %s", c, context);
    p->i++;
    return 0;
}

static int word(parser *p, const char *w) {
    const size_t len = strlen(w);
    if (p->n - p->i >= len && memcmp(p->s + p->i, w, len) == 0) {
        p->i += len;
        return 1;
    }
    return 0;
}

static int hex4(parser *p, unsigned *v) {
    *v = 0;
    for (int k = 0; k < 4; k++, p->i++) {
        const int c = p->i < p->n ? p->s[p->i] : -1;
        const int d = c >= '0' && c <= '9' ? c - '0'
                      : c >= 'a' && c <= 'f' ? c - 'a' + 10
                      : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return fail(p, "bad \\u escape in a string");
        *v = *v * 16 + (unsigned)d;
    }
    return 0;
}

/* A string into out[cap] as UTF-8 (out may be NULL to skip it). */
static int parse_string(parser *p, char *out, size_t cap, const char *context) {
    if (peek(p) != '"') return fail(p, "expected a string %s", context);
    p->i++;
    size_t len = 0;
    for (;;) {
        if (p->i >= p->n) return fail(p, "unterminated string");
        unsigned c = (unsigned char)p->s[p->i++];
        if (c == '"') break;
        if (c < 0x20) return fail(p, "control character in a string");
        char enc[4];
        int k = 0;
        if (c != '\\') {
            enc[k++] = (char)c;
        } else {
            const int e = p->i < p->n ? p->s[p->i++] : -1;
            switch (e) {
            case '"': case '\\': case '/': enc[k++] = (char)e; break;
            case 'b': enc[k++] = '\b'; break;
            case 'f': enc[k++] = '\f'; break;
            case 'n': enc[k++] = '\n'; break;
            case 'r': enc[k++] = '\r'; break;
            case 't': enc[k++] = '\t'; break;
            case 'u': {
                unsigned v;
                if (hex4(p, &v)) return -1;
                if (v >= 0xd800 && v < 0xdc00) { /* a surrogate pair */
                    unsigned lo;
                    if (!word(p, "\\u") || hex4(p, &lo) || lo < 0xdc00 || lo >= 0xe000)
                        return fail(p, "unpaired surrogate in a \\u escape");
                    v = 0x10000 + ((v - 0xd800) << 10) + (lo - 0xdc00);
                }
                if (v < 0x80) enc[k++] = (char)v;
                else if (v < 0x800) enc[k++] = (char)(0xc0 | v >> 6), enc[k++] = (char)(0x80 | (v & 63));
                else if (v < 0x10000)
                    enc[k++] = (char)(0xe0 | v >> 12), enc[k++] = (char)(0x80 | (v >> 6 & 63)),
                    enc[k++] = (char)(0x80 | (v & 63));
                else
                    enc[k++] = (char)(0xf0 | v >> 18), enc[k++] = (char)(0x80 | (v >> 12 & 63)),
                    enc[k++] = (char)(0x80 | (v >> 6 & 63)), enc[k++] = (char)(0x80 | (v & 63));
                break;
            }
            default: return fail(p, "bad escape in a string");
            }
        }
        if (out) {
            if (len + k >= cap) return fail(p, "name longer than %zu bytes %s", cap - 1, context);
            memcpy(out + len, enc, k);
        }
        len += k;
    }
    if (out) out[len] = 0;
    return 0;
}

/* A number (JSON grammar), null -> NaN, or Python's NaN / Infinity / -Infinity. */
static int parse_number(parser *p, double *v, const char *context) {
    skip_ws(p);
    if (word(p, "null") || word(p, "NaN")) {
        *v = NAN;
        return 0;
    }
    if (word(p, "Infinity")) {
        *v = INFINITY;
        return 0;
    }
    if (word(p, "-Infinity")) {
        *v = -INFINITY;
        return 0;
    }
    const size_t begin = p->i;
    const char *s = p->s;
#define DIGIT(k) ((k) < p->n && s[k] >= '0' && s[k] <= '9')
    size_t k = begin;
    if (k < p->n && s[k] == '-') k++;
    if (!DIGIT(k)) return fail(p, "expected a number or null %s", context);
    if (s[k] == '0') k++;
    else while (DIGIT(k)) k++;
    if (k < p->n && s[k] == '.') {
        if (!DIGIT(k + 1)) return fail(p, "expected digits after '.' %s", context);
        for (k++; DIGIT(k); k++) {}
    }
    if (k < p->n && (s[k] == 'e' || s[k] == 'E')) {
        k++;
        if (k < p->n && (s[k] == '+' || s[k] == '-')) k++;
        if (!DIGIT(k)) return fail(p, "expected an exponent %s", context);
        while (DIGIT(k)) k++;
    }
#undef DIGIT
    char tmp[64];
    if (k - begin >= sizeof tmp) return fail(p, "number too long %s", context);
    memcpy(tmp, s + begin, k - begin);
    tmp[k - begin] = 0;
    *v = strtod(tmp, NULL);
    p->i = k;
    return 0;
}

static int skip_value(parser *p, int depth) {
    if (depth > MAX_DEPTH) return fail(p, "nesting deeper than %d levels", MAX_DEPTH);
    const int c = peek(p);
    if (c == '"') return parse_string(p, NULL, 0, "");
    if (c == '{' || c == '[') {
        const char close = c == '{' ? '}' : ']';
        p->i++;
        if (peek(p) == close) return p->i++, 0;
        for (;;) {
            if (c == '{' && (parse_string(p, NULL, 0, "as an object key") ||
                             expect(p, ':', "after an object key")))
                return -1;
            if (skip_value(p, depth + 1)) return -1;
            const int next = peek(p);
            if (next == ',') p->i++;
            else if (next == close) return p->i++, 0;
            else return fail(p, "expected ',' or '%c'", close);
        }
    }
    if (word(p, "true") || word(p, "false")) return 0;
    double v;
    return parse_number(p, &v, "as a value");
}

static int parse_task(parser *p, ms_metric_result *r, const char *task) {
    char context[MS_NAME_MAX + 32];
    snprintf(context, sizeof context, "in task \"%s\"", task);
    memset(r, 0, sizeof *r);
    p->i++; /* '{' */
    if (peek(p) == '}') return p->i++, 0;
    for (;;) {
        if (r->n == MS_METRIC_MAX_VALUES)
            return fail(p, "more than %d metrics %s", MS_METRIC_MAX_VALUES, context);
        ms_metric_value *v = &r->values[r->n];
        if (parse_string(p, v->name, sizeof v->name, context)) return -1;
        for (int i = 0; i < r->n; i++)
            if (strcmp(r->values[i].name, v->name) == 0)
                return fail(p, "metric \"%s\" appears twice %s", v->name, context);
        if (expect(p, ':', "after a metric name") || parse_number(p, &v->value, context)) return -1;
        if (++r->n == 1) r->primary = v->value;
        const int next = peek(p);
        if (next == ',') p->i++;
        else if (next == '}') return p->i++, 0;
        else return fail(p, "expected ',' or '}' %s", context);
    }
}

int ms_metrics_json_parse(const char *text, size_t len, const char *what, ms_metrics_file *f,
                          char *err, size_t cap) {
    parser p = {text, len, 0, what, err, cap};
    memset(f, 0, sizeof *f);
    if (expect(&p, '{', "at the start of a metrics file")) return -1;
    if (peek(&p) == '}') p.i++;
    else
        for (;;) {
            char name[MS_NAME_MAX];
            if (parse_string(&p, name, sizeof name, "as a task name") ||
                expect(&p, ':', "after a task name"))
                return -1;
            if (peek(&p) == '{') {
                if (ms_metrics_file_task(f, name)) return fail(&p, "task \"%s\" appears twice", name);
                if (f->T == MS_METRICS_FILE_MAX_TASKS)
                    return fail(&p, "more than %d tasks", MS_METRICS_FILE_MAX_TASKS);
                snprintf(f->task[f->T], sizeof f->task[0], "%s", name);
                if (parse_task(&p, &f->r[f->T], name)) return -1;
                f->T++;
            } else if (skip_value(&p, 0)) {
                return -1;
            }
            const int next = peek(&p);
            if (next == ',') p.i++;
            else if (next == '}') {
                p.i++;
                break;
            } else {
                return fail(&p, "expected ',' or '}' between tasks");
            }
        }
    if (peek(&p) != -1) return fail(&p, "unexpected text after the metrics object");
    return 0;
}

int ms_metrics_json_read(const char *path, ms_metrics_file *f, char *err, size_t cap) {
    FILE *in = fopen(path, "rb");
    if (!in) {
        snprintf(err, cap, "%s: cannot open the metrics file: %s", path, strerror(errno));
        return -1;
    }
    size_t n = 0, size = 4096;
    char *text = ms_malloc(size);
    for (;;) { /* grows until the end of the file or the size limit */
        n += fread(text + n, 1, size - n, in);
        if (n < size || size > MAX_FILE_BYTES) break;
        size *= 2;
        char *grown = realloc(text, size);
        if (!grown) ms_fatal("out of memory reading %s", path);
        text = grown;
    }
    const int bad = ferror(in);
    fclose(in);
    int rc;
    if (bad) rc = -1, snprintf(err, cap, "%s: read error", path);
    else if (n > MAX_FILE_BYTES)
        rc = -1, snprintf(err, cap, "%s: larger than %u bytes; not a metrics file", path, MAX_FILE_BYTES);
    else rc = ms_metrics_json_parse(text, n, path, f, err, cap);
    free(text);
    return rc;
}

const ms_metric_result *ms_metrics_file_task(const ms_metrics_file *f, const char *task) {
    for (int t = 0; t < f->T; t++)
        if (strcmp(f->task[t], task) == 0) return &f->r[t];
    return NULL;
}
