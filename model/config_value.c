/* Typed values of the key table: YAML node -> field (with type and range checks and messages
 * that name the key, the value and what is allowed) and field -> YAML text. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "config_internal.h"

/* ---- reading YAML scalars ------------------------------------------------------------------ */

static const char *scalar(const yaml_node_t *n) { return (const char *)n->data.scalar.value; }

static bool is_plain(const yaml_node_t *n) {
    return n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

/* `key:`, `key: ~` and `key: null` (unquoted) are YAML's null. */
static bool is_null(const yaml_node_t *n) {
    if (!is_plain(n)) return false;
    const char *v = scalar(n);
    return !v[0] || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") ||
           !strcmp(v, "NULL");
}

/* What a node is, for "got ..." in messages. */
static const char *describe(const yaml_node_t *n, char *buf, size_t cap) {
    if (n->type == YAML_SEQUENCE_NODE) return "a list";
    if (n->type == YAML_MAPPING_NODE) return "a mapping";
    if (is_null(n)) return "an empty value";
    const char *v = scalar(n);
    int len = (int)strlen(v);
    int shown = len > 60 ? 57 : len;
    snprintf(buf, cap, "%s'%.*s%s'", is_plain(n) ? "" : "the quoted string ", shown, v,
             len > shown ? "..." : "");
    return buf;
}

/* The position of a sub-node (list item, map entry) for messages; --set values keep the
 * argument as their location. */
static ms_where at_node(const ms_where *w, const yaml_node_t *n) {
    ms_where s = *w;
    if (!w->set) {
        s.line = (int)n->start_mark.line + 1;
        s.col = (int)n->start_mark.column + 1;
    }
    return s;
}

/* A message about the value of `label` (the key, or the key plus an item): "LABEL: ..." after
 * a file position; after "--set key=value" the label is left out when it is just the key. */
static void value_error(ms_config_errors *errs, const ms_where *w, const char *label,
                        bool whole_key, const char *fmt, ...) MS_PRINTF(5, 6);
static void value_error(ms_config_errors *errs, const ms_where *w, const char *label,
                        bool whole_key, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (w->set && whole_key)
        ms_config_error(errs, w, "%s", msg);
    else
        ms_config_error(errs, w, "%s: %s", label, msg);
}

static bool parse_int(const yaml_node_t *n, long long *out) {
    if (!is_plain(n) || is_null(n)) return false;
    const char *v = scalar(n), *p = v;
    if (*p == '+' || *p == '-') p++;
    if (!*p) return false;
    for (; *p; p++)
        if (*p < '0' || *p > '9') return false;
    errno = 0;
    *out = strtoll(v, NULL, 10);
    return errno == 0;
}

static bool parse_float(const yaml_node_t *n, double *out) {
    if (!is_plain(n) || is_null(n)) return false;
    const char *v = scalar(n);
    /* Decimal notation only: strtod would also take hex, "inf" and "nan". */
    for (const char *p = v; *p; p++)
        if (!strchr("0123456789+-.eE", *p)) return false;
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (end == v || *end || errno == ERANGE || !isfinite(d)) return false;
    *out = d;
    return true;
}

static bool parse_bool(const yaml_node_t *n, bool *out) {
    if (!is_plain(n)) return false;
    static const char *const yes[] = {"true", "True", "TRUE", "yes", "Yes",
                                      "YES",  "on",   "On",   "ON"};
    static const char *const no[] = {"false", "False", "FALSE", "no", "No",
                                     "NO",    "off",   "Off",   "OFF"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (!strcmp(scalar(n), yes[i])) return *out = true, true;
        if (!strcmp(scalar(n), no[i])) return *out = false, true;
    }
    return false;
}

/* "a, b or c" */
static void join_names(char *buf, size_t cap, const char *const *names) {
    buf[0] = 0;
    int n = 0;
    while (names[n])
        n++;
    for (int i = 0; i < n; i++) {
        size_t len = strlen(buf);
        snprintf(buf + len, cap - len, "%s%s", i == 0 ? "" : (i == n - 1 ? " or " : ", "),
                 names[i]);
    }
}

static void fmt_bound(char *buf, size_t cap, double v) { snprintf(buf, cap, "%.15g", v); }

/* What a numeric key allows, e.g. "1 to 64", "0 <= value < 1", "1 or more". */
static void range_text(char *buf, size_t cap, const ms_config_key *key) {
    char lo[32], hi[32];
    fmt_bound(lo, sizeof lo, key->min);
    fmt_bound(hi, sizeof hi, key->max);
    bool lo_open = key->range_flags & MS_KEY_MIN_OPEN, hi_open = key->range_flags & MS_KEY_MAX_OPEN;
    bool unbounded = key->type == MS_KT_INT && key->max >= 2147483647.0;
    if (unbounded)
        snprintf(buf, cap, lo_open ? "more than %s" : "%s or more", lo);
    else if (!lo_open && !hi_open)
        snprintf(buf, cap, "%s to %s", lo, hi);
    else
        snprintf(buf, cap, "%s %s value %s %s", lo, lo_open ? "<" : "<=", hi_open ? "<" : "<=", hi);
}

static bool in_range(const ms_config_key *key, double v) {
    if (key->range_flags & MS_KEY_MIN_OPEN ? v <= key->min : v < key->min) return false;
    if (key->range_flags & MS_KEY_MAX_OPEN ? v >= key->max : v > key->max) return false;
    return true;
}

/* Reads a number of key's range; writes a message and returns false otherwise. */
static bool read_number(const ms_config_key *key, const yaml_node_t *n, bool integer,
                        const ms_where *w, const char *label, bool whole, ms_config_errors *errs,
                        double *out) {
    char got[96], allowed[96];
    long long i = 0;
    double d = 0;
    if (integer ? !parse_int(n, &i) : !parse_float(n, &d)) {
        value_error(errs, w, label, whole, "expected %s, got %s",
                    integer ? "an integer" : "a number", describe(n, got, sizeof got));
        return false;
    }
    if (integer) d = (double)i;
    if (!in_range(key, d)) {
        range_text(allowed, sizeof allowed, key);
        value_error(errs, w, label, whole, "%s is out of range (allowed: %s)", scalar(n), allowed);
        return false;
    }
    *out = d;
    return true;
}

static int enum_index(const char *const *values, const char *s) {
    for (int i = 0; values[i]; i++)
        if (!strcmp(values[i], s)) return i;
    return -1;
}

static void enum_error(ms_config_errors *errs, const ms_where *w, const char *label, bool whole,
                       const yaml_node_t *n, const char *const *values, const char *extra) {
    char got[96], names[512], hint[96] = "";
    join_names(names, sizeof names, values);
    const char *near = n->type == YAML_SCALAR_NODE ? ms_closest_name(scalar(n), values, -1) : NULL;
    if (near) snprintf(hint, sizeof hint, " (did you mean '%s'?)", near);
    value_error(errs, w, label, whole, "expected %s%s, got %s%s", names, extra ? extra : "",
                describe(n, got, sizeof got), hint);
}

/* ---- per type ------------------------------------------------------------------------------ */

static bool apply_string(const ms_config_key *key, char *field, const yaml_node_t *n,
                         const ms_where *w, ms_config_errors *errs) {
    char got[96];
    if (n->type != YAML_SCALAR_NODE) {
        value_error(errs, w, key->name, true, "expected a string, got %s",
                    describe(n, got, sizeof got));
        return false;
    }
    const char *v = is_null(n) ? "" : scalar(n);
    if (!is_null(n) && strlen(v) != n->data.scalar.length) {
        value_error(errs, w, key->name, true, "the string contains a NUL character");
        return false;
    }
    if (strlen(v) >= key->size) {
        value_error(errs, w, key->name, true, "%s is too long (at most %zu characters)",
                    describe(n, got, sizeof got), key->size - 1);
        return false;
    }
    if (key->check && key->check(v)) {
        value_error(errs, w, key->name, true, "%s is not allowed; expected %s",
                    describe(n, got, sizeof got), key->check(v));
        return false;
    }
    strcpy(field, v);
    return true;
}

/* A task-like name: a non-empty scalar that fits MS_NAME_MAX. */
static bool read_name(const yaml_node_t *n, const ms_where *w, const char *label,
                      ms_config_errors *errs, char out[MS_NAME_MAX]) {
    char got[96];
    if (n->type != YAML_SCALAR_NODE || is_null(n)) {
        value_error(errs, w, label, false, "expected a name, got %s", describe(n, got, sizeof got));
        return false;
    }
    if (strlen(scalar(n)) >= MS_NAME_MAX || strlen(scalar(n)) != n->data.scalar.length) {
        value_error(errs, w, label, false, "%s is not a name of at most %d characters",
                    describe(n, got, sizeof got), MS_NAME_MAX - 1);
        return false;
    }
    strcpy(out, scalar(n));
    return true;
}

static bool apply_list(const ms_config_key *key, ms_name_list *field, yaml_document_t *doc,
                       const yaml_node_t *n, const ms_where *w, ms_config_errors *errs) {
    char got[96], label[96];
    ms_name_list list = {0};
    if (is_null(n)) {
        *field = list;
        return true;
    }
    if (n->type != YAML_SEQUENCE_NODE) {
        value_error(errs, w, key->name, true, "expected a list of names like [a, b], got %s",
                    describe(n, got, sizeof got));
        return false;
    }
    int count = (int)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (count > MS_MAX_TASKS) {
        value_error(errs, w, key->name, true, "at most %d names, got %d", MS_MAX_TASKS, count);
        return false;
    }
    bool ok = true;
    for (int i = 0; i < count; i++) {
        yaml_node_t *item = yaml_document_get_node(doc, n->data.sequence.items.start[i]);
        ms_where iw = at_node(w, item);
        snprintf(label, sizeof label, "%s[%d]", key->name, i);
        if (!read_name(item, &iw, label, errs, list.name[list.n])) {
            ok = false;
            continue;
        }
        bool dup = false;
        for (int j = 0; j < list.n; j++)
            dup |= !strcmp(list.name[j], list.name[list.n]);
        if (dup) {
            value_error(errs, &iw, key->name, false, "'%s' is listed twice", list.name[list.n]);
            ok = false;
            continue;
        }
        list.n++;
    }
    if (ok) *field = list;
    return ok;
}

static bool map_entry(const ms_config_key *key, ms_weight_map *map, const char *name,
                      const yaml_node_t *value, const ms_where *w, ms_config_errors *errs) {
    char label[128];
    snprintf(label, sizeof label, "%s.%s", key->name, name);
    double v;
    if (!read_number(key, value, false, w, label, false, errs, &v)) return false;
    for (int j = 0; j < map->n; j++)
        if (!strcmp(map->name[j], name)) {
            map->value[j] = v;
            return true;
        }
    if (map->n == MS_MAX_TASKS) {
        value_error(errs, w, key->name, false, "at most %d entries", MS_MAX_TASKS);
        return false;
    }
    strcpy(map->name[map->n], name);
    map->value[map->n++] = v;
    return true;
}

static bool apply_map(const ms_config_key *key, ms_weight_map *field, yaml_document_t *doc,
                      const yaml_node_t *n, const ms_where *w, ms_config_errors *errs) {
    char got[96], label[96];
    ms_weight_map map = {0};
    if (is_null(n)) {
        *field = map;
        return true;
    }
    if (n->type != YAML_MAPPING_NODE) {
        value_error(errs, w, key->name, true,
                    "expected a mapping of task: weight like {semseg: 1, edge: 50}, got %s",
                    describe(n, got, sizeof got));
        return false;
    }
    bool ok = true;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *kn = yaml_document_get_node(doc, p->key);
        yaml_node_t *vn = yaml_document_get_node(doc, p->value);
        ms_where kw = at_node(w, kn), vw = at_node(w, vn);
        char name[MS_NAME_MAX];
        snprintf(label, sizeof label, "%s key", key->name);
        if (!read_name(kn, &kw, label, errs, name)) {
            ok = false;
            continue;
        }
        bool dup = false;
        for (int j = 0; j < map.n; j++)
            dup |= !strcmp(map.name[j], name);
        if (dup) {
            value_error(errs, &kw, key->name, false, "duplicate entry '%s'", name);
            ok = false;
            continue;
        }
        ok &= map_entry(key, &map, name, vn, &vw, errs);
    }
    if (ok) *field = map;
    return ok;
}

static bool apply_blocks(const ms_config_key *key, ms_block_set *field, yaml_document_t *doc,
                         const yaml_node_t *n, const ms_where *w, ms_config_errors *errs) {
    char label[96];
    ms_block_set set = {0};
    if (n->type == YAML_SCALAR_NODE) {
        int i = enum_index(ms_blocks_mode_names, scalar(n));
        if (i < 0) {
            enum_error(errs, w, key->name, true, n, ms_blocks_mode_names,
                       " or a list of block indices like [0, 2]");
            return false;
        }
        set.mode = (ms_blocks_mode)i;
        *field = set;
        return true;
    }
    if (n->type != YAML_SEQUENCE_NODE) {
        enum_error(errs, w, key->name, true, n, ms_blocks_mode_names,
                   " or a list of block indices like [0, 2]");
        return false;
    }
    set.mode = MS_BLOCKS_LIST;
    int count = (int)(n->data.sequence.items.top - n->data.sequence.items.start);
    /* Indices are checked against model.depth once the whole config is known. */
    const ms_config_key index_key = {.type = MS_KT_INT, .min = 0, .max = MS_MAX_DEPTH - 1};
    bool ok = true;
    for (int i = 0; i < count; i++) {
        yaml_node_t *item = yaml_document_get_node(doc, n->data.sequence.items.start[i]);
        ms_where iw = at_node(w, item);
        snprintf(label, sizeof label, "%s[%d]", key->name, i);
        double v;
        if (!read_number(&index_key, item, true, &iw, label, false, errs, &v)) {
            ok = false;
            continue;
        }
        bool dup = false;
        for (int j = 0; j < set.n; j++)
            dup |= set.index[j] == (int)v;
        if (dup) {
            value_error(errs, &iw, key->name, false, "block %d is listed twice", (int)v);
            ok = false;
            continue;
        }
        set.index[set.n++] = (int)v;
    }
    if (ok) *field = set;
    return ok;
}

/* model.kept_experts: a list of lists of expert indices, e.g. [[0, 2, 5], [1, 3]]. Whether the
 * lists fit the model (one per MoE layer, indices below E, at least K each) is checked once the
 * whole config is known (config_check.c). */
static bool apply_experts(const ms_config_key *key, ms_expert_sets *field, yaml_document_t *doc,
                          const yaml_node_t *n, const ms_where *w, ms_config_errors *errs) {
    char got[96], label[96];
    ms_expert_sets sets; /* 8.5 KiB: built aside, so a rejected value leaves the field alone */
    memset(&sets, 0, sizeof sets);
    if (is_null(n)) {
        *field = sets;
        return true;
    }
    if (n->type != YAML_SEQUENCE_NODE) {
        value_error(errs, w, key->name, true,
                    "expected one list of expert indices per MoE layer like [[0, 2], [1, 3]], "
                    "got %s",
                    describe(n, got, sizeof got));
        return false;
    }
    int layers = (int)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (layers > MS_MAX_MOE_LAYERS) {
        value_error(errs, w, key->name, true, "at most %d layers, got %d", MS_MAX_MOE_LAYERS,
                    layers);
        return false;
    }
    const ms_config_key index_key = {.type = MS_KT_INT, .min = 0, .max = 4095};
    int total = 0;
    for (int l = 0; l < layers; l++) {
        yaml_node_t *list = yaml_document_get_node(doc, n->data.sequence.items.start[l]);
        ms_where lw = at_node(w, list);
        snprintf(label, sizeof label, "%s[%d]", key->name, l);
        if (list->type != YAML_SEQUENCE_NODE) {
            value_error(errs, &lw, label, false, "expected a list of expert indices like [0, 2], "
                        "got %s", describe(list, got, sizeof got));
            return false;
        }
        int count = (int)(list->data.sequence.items.top - list->data.sequence.items.start);
        if (count == 0) {
            value_error(errs, &lw, label, false, "a layer keeps at least one expert");
            return false;
        }
        if (total + count > MS_MAX_KEPT) {
            value_error(errs, &lw, key->name, false, "at most %d expert indices in all",
                        MS_MAX_KEPT);
            return false;
        }
        for (int i = 0; i < count; i++) {
            yaml_node_t *item = yaml_document_get_node(doc, list->data.sequence.items.start[i]);
            ms_where iw = at_node(w, item);
            snprintf(label, sizeof label, "%s[%d][%d]", key->name, l, i);
            double v;
            if (!read_number(&index_key, item, true, &iw, label, false, errs, &v)) return false;
            if (i > 0 && (int)v <= sets.expert[total + i - 1]) {
                value_error(errs, &iw, label, false,
                            "expert %d after %d: list each layer's experts once, in increasing "
                            "order",
                            (int)v, sets.expert[total + i - 1]);
                return false;
            }
            sets.expert[total + i] = (int16_t)v;
        }
        sets.count[l] = count;
        total += count;
    }
    sets.layers = layers;
    *field = sets;
    return true;
}

bool ms_config_apply_node(ms_config *cfg, int k, yaml_document_t *doc, yaml_node_t *node,
                          const ms_where *w, ms_config_errors *errs) {
    const ms_config_key *key = &ms_config_keys[k];
    void *field = ms_config_field(cfg, k);
    char got[96];
    double v;
    switch (key->type) {
    case MS_KT_INT:
        if (!read_number(key, node, true, w, key->name, true, errs, &v)) return false;
        *(int *)field = (int)v;
        return true;
    case MS_KT_FLOAT:
        if (!read_number(key, node, false, w, key->name, true, errs, &v)) return false;
        *(double *)field = v;
        return true;
    case MS_KT_BOOL: {
        bool b;
        if (!parse_bool(node, &b)) {
            value_error(errs, w, key->name, true, "expected true or false, got %s",
                        describe(node, got, sizeof got));
            return false;
        }
        *(bool *)field = b;
        return true;
    }
    case MS_KT_STRING: return apply_string(key, field, node, w, errs);
    case MS_KT_ENUM: {
        int i = node->type == YAML_SCALAR_NODE ? enum_index(key->values, scalar(node)) : -1;
        if (i < 0) {
            enum_error(errs, w, key->name, true, node, key->values, NULL);
            return false;
        }
        *(int *)field = i;
        return true;
    }
    case MS_KT_LIST: return apply_list(key, field, doc, node, w, errs);
    case MS_KT_MAP: return apply_map(key, field, doc, node, w, errs);
    case MS_KT_BLOCKS: return apply_blocks(key, field, doc, node, w, errs);
    case MS_KT_EXPERTS: return apply_experts(key, field, doc, node, w, errs);
    }
    return false;
}

bool ms_config_apply_map_entry(ms_config *cfg, int k, const char *name, yaml_node_t *node,
                               const ms_where *w, ms_config_errors *errs) {
    const ms_config_key *key = &ms_config_keys[k];
    MS_ASSERT(key->type == MS_KT_MAP);
    if (!name[0] || strlen(name) >= MS_NAME_MAX) {
        ms_config_error(errs, w, "'%s' is not a task name of 1 to %d characters", name,
                        MS_NAME_MAX - 1);
        return false;
    }
    ms_weight_map map = *(ms_weight_map *)ms_config_field(cfg, k);
    if (!map_entry(key, &map, name, node, w, errs)) return false;
    *(ms_weight_map *)ms_config_field(cfg, k) = map;
    return true;
}

/* ---- printing ------------------------------------------------------------------------------ */

/* The shortest decimal that reads back to exactly v, with a ".0" on whole numbers so the
 * value still reads as a number to a person. */
static void print_double(FILE *f, double v) {
    char buf[64];
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, v);
        if (strtod(buf, NULL) == v) break;
    }
    /* %g writes 10 as "1e+01"; plain decimals read better in the usual range. */
    if (strchr(buf, 'e') && fabs(v) >= 1e-4 && fabs(v) < 1e15)
        for (int d = 0; d <= 17; d++) {
            snprintf(buf, sizeof buf, "%.*f", d, v);
            if (strtod(buf, NULL) == v) break;
        }
    fputs(buf, f);
    if (!strpbrk(buf, ".e")) fputs(".0", f);
}

/* Plain when the text cannot be mistaken for other YAML (null, a flow indicator, a comment,
 * a ':' that could start a mapping), double-quoted with escapes otherwise. */
static void print_string(FILE *f, const char *s) {
    bool plain = s[0] && strchr("-.~", s[0]) == NULL;
    for (const char *p = s; *p && plain; p++)
        plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                strchr("_./-+", *p);
    if (plain && (!strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL"))) plain = false;
    if (plain) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(f, "\\x%02x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

void ms_config_print_value(FILE *f, const ms_config *cfg, int k) {
    const ms_config_key *key = &ms_config_keys[k];
    const void *field = ms_config_cfield(cfg, k);
    switch (key->type) {
    case MS_KT_INT: fprintf(f, "%d", *(const int *)field); break;
    case MS_KT_FLOAT: print_double(f, *(const double *)field); break;
    case MS_KT_BOOL: fputs(*(const bool *)field ? "true" : "false", f); break;
    case MS_KT_STRING: print_string(f, field); break;
    case MS_KT_ENUM: fputs(key->values[*(const int *)field], f); break;
    case MS_KT_LIST: {
        const ms_name_list *l = field;
        fputc('[', f);
        for (int i = 0; i < l->n; i++) {
            if (i) fputs(", ", f);
            print_string(f, l->name[i]);
        }
        fputc(']', f);
        break;
    }
    case MS_KT_MAP: {
        const ms_weight_map *m = field;
        fputc('{', f);
        for (int i = 0; i < m->n; i++) {
            fputs(i ? ", " : "", f);
            print_string(f, m->name[i]);
            fputs(": ", f);
            print_double(f, m->value[i]);
        }
        fputc('}', f);
        break;
    }
    case MS_KT_BLOCKS: {
        const ms_block_set *b = field;
        if (b->mode != MS_BLOCKS_LIST) {
            fputs(ms_blocks_mode_names[b->mode], f);
            break;
        }
        fputc('[', f);
        for (int i = 0; i < b->n; i++)
            fprintf(f, "%s%d", i ? ", " : "", b->index[i]);
        fputc(']', f);
        break;
    }
    case MS_KT_EXPERTS: {
        const ms_expert_sets *x = field;
        fputc('[', f);
        for (int l = 0, o = 0; l < x->layers; o += x->count[l++]) {
            fputs(l ? ", [" : "[", f);
            for (int i = 0; i < x->count[l]; i++)
                fprintf(f, "%s%d", i ? ", " : "", x->expert[o + i]);
            fputc(']', f);
        }
        fputc(']', f);
        break;
    }
    }
}
