/* The config's public helpers: error lists, defaults, printing (show, keys), comparison and the
 * model fingerprint, all driven by the key table of config_schema.c. */
#include <stdlib.h>
#include <string.h>

#include "config_internal.h"

/* ---- errors -------------------------------------------------------------------------------- */

void ms_config_errors_init(ms_config_errors *errs) { memset(errs, 0, sizeof *errs); }

void ms_config_errors_free(ms_config_errors *errs) {
    for (int i = 0; i < errs->n; i++)
        free(errs->msg[i]);
    free(errs->msg);
    ms_config_errors_init(errs);
}

void ms_config_errors_print(const ms_config_errors *errs, FILE *f) {
    for (int i = 0; i < errs->n; i++)
        fprintf(f, "%s\n", errs->msg[i]);
}

void ms_config_verror(ms_config_errors *errs, const ms_where *w, const char *fmt, va_list ap) {
    char where[MS_PATH_MAX + 64], msg[1024];
    if (w->set)
        snprintf(where, sizeof where, "--set %s", w->set);
    else if (w->line > 0)
        snprintf(where, sizeof where, "%s:%d:%d", w->file, w->line, w->col);
    else
        snprintf(where, sizeof where, "%s", w->file ? w->file : "config");
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (errs->n == errs->cap) {
        errs->cap = errs->cap ? 2 * errs->cap : 8;
        char **grown = realloc(errs->msg, (size_t)errs->cap * sizeof *grown);
        if (!grown) ms_fatal("out of memory collecting config errors");
        errs->msg = grown;
    }
    size_t len = strlen(where) + strlen(msg) + 3;
    errs->msg[errs->n] = ms_malloc(len);
    snprintf(errs->msg[errs->n++], len, "%s: %s", where, msg);
}

void ms_config_error(ms_config_errors *errs, const ms_where *w, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    ms_config_verror(errs, w, fmt, ap);
    va_end(ap);
}

/* ---- the table ----------------------------------------------------------------------------- */

int ms_config_key_index(const char *name) {
    for (int k = 0; k < ms_config_n_keys; k++)
        if (!strcmp(ms_config_keys[k].name, name)) return k;
    return -1;
}

void *ms_config_field(ms_config *cfg, int k) { return (char *)cfg + ms_config_keys[k].offset; }

const void *ms_config_cfield(const ms_config *cfg, int k) {
    return (const char *)cfg + ms_config_keys[k].offset;
}

ms_where ms_config_key_where(const ms_config *cfg, int k, const char *const *sets) {
    const ms_key_origin *o = &cfg->origin[k];
    ms_where w = {.file = cfg->source};
    if (o->kind == MS_ORIGIN_FILE) {
        w.line = o->line;
        w.col = o->col;
    } else if (o->kind == MS_ORIGIN_SET) {
        w.file = NULL;
        w.set = sets ? sets[o->line] : ms_config_keys[k].name;
    }
    return w;
}

void ms_config_defaults(ms_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    ms_config_errors errs;
    ms_config_errors_init(&errs);
    for (int k = 0; k < ms_config_n_keys; k++) {
        /* Defaults go through the same parser as files, so the table's text is checked too. */
        const char *def = ms_config_keys[k].def;
        yaml_parser_t parser;
        yaml_document_t doc;
        MS_ASSERT(yaml_parser_initialize(&parser));
        yaml_parser_set_input_string(&parser, (const unsigned char *)def, strlen(def));
        MS_ASSERT(yaml_parser_load(&parser, &doc));
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        ms_where w = {.file = "default of", .set = NULL};
        bool ok = root && ms_config_apply_node(cfg, k, &doc, root, &w, &errs);
        if (!ok)
            ms_fatal("bad default for %s in the key table: %s", ms_config_keys[k].name,
                     errs.n ? errs.msg[0] : def);
        yaml_document_delete(&doc);
        yaml_parser_delete(&parser);
    }
    ms_config_errors_free(&errs);
}

/* ---- suggestions --------------------------------------------------------------------------- */

/* Optimal string alignment distance: a swap of two neighbours ("modle") counts as one edit. */
int ms_edit_distance(const char *a, const char *b) {
    int n = (int)strlen(a), m = (int)strlen(b);
    if (n > 64 || m > 64) return n > m ? n : m;
    int d[65][65]; /* [n+1][m+1] distances between prefixes */
    for (int i = 0; i <= n; i++)
        d[i][0] = i;
    for (int j = 0; j <= m; j++)
        d[0][j] = j;
    for (int i = 1; i <= n; i++)
        for (int j = 1; j <= m; j++) {
            int cost = a[i - 1] != b[j - 1];
            int best = d[i - 1][j - 1] + cost;
            if (d[i - 1][j] + 1 < best) best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    return d[n][m];
}

int ms_typo_limit(size_t len) {
    /* One edit per three characters, one to three edits: "dimm" -> "dim", not "xyz" -> "dim". */
    return len < 6 ? 1 : (len >= 9 ? 3 : (int)len / 3);
}

const char *ms_closest_name(const char *s, const char *const *names, int n) {
    const char *best = NULL;
    int best_d = ms_typo_limit(strlen(s)) + 1;
    for (int i = 0; n >= 0 ? i < n : names[i] != NULL; i++) {
        int d = ms_edit_distance(s, names[i]);
        if (d < best_d) best_d = d, best = names[i];
    }
    return best;
}

/* ---- printing ------------------------------------------------------------------------------ */

static size_t section_len(const char *name) { return (size_t)(strchr(name, '.') - name); }

void ms_config_print(const ms_config *cfg, FILE *f) {
    char fp[MS_FINGERPRINT_LEN + 1];
    ms_config_fingerprint(cfg, fp);
    fprintf(f, "# modsquad configuration, resolved from %s\n",
            cfg->source[0] ? cfg->source : "defaults");
    fprintf(f, "# model fingerprint %s; '# auto' marks values filled in automatically\n", fp);
    const char *section = "";
    size_t section_n = 0;
    for (int k = 0; k < ms_config_n_keys; k++) {
        const char *name = ms_config_keys[k].name;
        size_t n = section_len(name);
        if (n != section_n || strncmp(name, section, n) != 0) {
            fprintf(f, "%.*s:\n", (int)n, name);
            section = name;
            section_n = n;
        }
        fprintf(f, "  %s: ", name + n + 1);
        ms_config_print_value(f, cfg, k);
        if (cfg->origin[k].automatic) fputs("  # auto", f);
        fputc('\n', f);
    }
}

char *ms_config_to_yaml(const ms_config *cfg) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) ms_fatal("out of memory writing the config");
    ms_config_print(cfg, f);
    if (fclose(f) != 0) ms_fatal("out of memory writing the config");
    return buf;
}

static const char *type_name(const ms_config_key *key) {
    switch (key->type) {
    case MS_KT_INT: return "integer";
    case MS_KT_FLOAT: return "number";
    case MS_KT_BOOL: return "true/false";
    case MS_KT_STRING: return "string";
    case MS_KT_ENUM: return "one of";
    case MS_KT_LIST: return "list of names";
    case MS_KT_MAP: return "map name: number";
    case MS_KT_BLOCKS: return "block set";
    case MS_KT_EXPERTS: return "expert lists";
    }
    return "?";
}

/* The "allowed" column: ranges as the error messages state them. */
static void allowed_text(FILE *f, const ms_config_key *key) {
    double lo = key->min, hi = key->max;
    bool lo_open = key->range_flags & MS_KEY_MIN_OPEN, hi_open = key->range_flags & MS_KEY_MAX_OPEN;
    switch (key->type) {
    case MS_KT_INT:
    case MS_KT_FLOAT:
    case MS_KT_MAP:
        if (key->type == MS_KT_INT && hi >= 2147483647.0)
            fprintf(f, lo_open ? "more than %.15g" : "%.15g or more", lo);
        else if (!lo_open && !hi_open)
            fprintf(f, "%.15g to %.15g", lo, hi);
        else
            fprintf(f, "%.15g %s value %s %.15g", lo,
                    lo_open ? "<" : "<=", hi_open ? "<" : "<=", hi);
        if (key->type == MS_KT_MAP) fputs(" per task", f);
        break;
    case MS_KT_BOOL: fputs("true, false", f); break;
    case MS_KT_STRING: fputs(key->check ? key->check(NULL) : "any text", f); break;
    case MS_KT_ENUM:
        for (int i = 0; key->values[i]; i++)
            fprintf(f, "%s`%s`", i ? ", " : "", key->values[i]);
        break;
    case MS_KT_LIST: fputs("task names of data.dataset", f); break;
    case MS_KT_BLOCKS: fputs("`even`, `odd`, `all`, `none`, [i, j, ...]", f); break;
    case MS_KT_EXPERTS: fputs("`[]`, or [[e, ...], ...]: one list per MoE layer", f); break;
    }
}

void ms_config_print_keys(FILE *f) {
    size_t section_n = 0;
    const char *section = "";
    for (int k = 0; k < ms_config_n_keys; k++) {
        const ms_config_key *key = &ms_config_keys[k];
        size_t n = section_len(key->name);
        if (n != section_n || strncmp(key->name, section, n) != 0) {
            fprintf(f, "%s### %.*s\n\n", k ? "\n" : "", (int)n, key->name);
            fputs("| key | type | default | allowed | description |\n|---|---|---|---|---|\n", f);
            section = key->name;
            section_n = n;
        }
        fprintf(f, "| `%s` | %s | `%s` | ", key->name, type_name(key), key->def);
        allowed_text(f, key);
        fprintf(f, " | %s |\n", key->doc);
    }
}

/* ---- comparison and fingerprint ------------------------------------------------------------ */

static bool key_equal(const ms_config *a, const ms_config *b, int k) {
    const void *x = ms_config_cfield(a, k), *y = ms_config_cfield(b, k);
    switch (ms_config_keys[k].type) {
    case MS_KT_INT:
    case MS_KT_ENUM: return *(const int *)x == *(const int *)y;
    case MS_KT_FLOAT: return *(const double *)x == *(const double *)y;
    case MS_KT_BOOL: return *(const bool *)x == *(const bool *)y;
    case MS_KT_STRING: return strcmp(x, y) == 0;
    case MS_KT_LIST: {
        const ms_name_list *p = x, *q = y;
        if (p->n != q->n) return false;
        for (int i = 0; i < p->n; i++)
            if (strcmp(p->name[i], q->name[i])) return false;
        return true;
    }
    case MS_KT_MAP: {
        const ms_weight_map *p = x, *q = y;
        if (p->n != q->n) return false;
        for (int i = 0; i < p->n; i++)
            if (strcmp(p->name[i], q->name[i]) || p->value[i] != q->value[i]) return false;
        return true;
    }
    case MS_KT_BLOCKS: {
        const ms_block_set *p = x, *q = y;
        if (p->mode != q->mode || p->n != q->n || p->mask != q->mask) return false;
        for (int i = 0; i < p->n; i++)
            if (p->index[i] != q->index[i]) return false;
        return true;
    }
    case MS_KT_EXPERTS: {
        const ms_expert_sets *p = x, *q = y;
        if (p->layers != q->layers) return false;
        int total = 0;
        for (int l = 0; l < p->layers; l++) {
            if (p->count[l] != q->count[l]) return false;
            total += p->count[l];
        }
        return memcmp(p->expert, q->expert, (size_t)total * sizeof p->expert[0]) == 0;
    }
    }
    return false;
}

bool ms_config_equal(const ms_config *a, const ms_config *b, const char **first_diff) {
    for (int k = 0; k < ms_config_n_keys; k++)
        if (!key_equal(a, b, k)) {
            if (first_diff) *first_diff = ms_config_keys[k].name;
            return false;
        }
    return true;
}

void ms_config_fingerprint(const ms_config *cfg, char out[MS_FINGERPRINT_LEN + 1]) {
    /* FNV-1a (64 bit) over "key=value\n" of the fingerprinted keys, values as `config show`
     * prints them: stable across runs, machines and key order changes elsewhere in the table. */
    uint64_t h = 0xcbf29ce484222325ull;
    for (int k = 0; k < ms_config_n_keys; k++) {
        if (!ms_config_keys[k].fingerprint) continue;
        /* an empty model.kept_experts leaves the fingerprint of an ordinary model as it was */
        if (ms_config_keys[k].type == MS_KT_EXPERTS &&
            ((const ms_expert_sets *)ms_config_cfield(cfg, k))->layers == 0)
            continue;
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        if (!f) ms_fatal("out of memory computing the config fingerprint");
        fprintf(f, "%s=", ms_config_keys[k].name);
        ms_config_print_value(f, cfg, k);
        if (ms_config_keys[k].type == MS_KT_BLOCKS)
            fprintf(f, " mask=%llx",
                    (unsigned long long)((const ms_block_set *)ms_config_cfield(cfg, k))->mask);
        fputc('\n', f);
        if (fclose(f) != 0) ms_fatal("out of memory computing the config fingerprint");
        for (size_t i = 0; i < len; i++)
            h = (h ^ (unsigned char)text[i]) * 0x100000001b3ull;
        free(text);
    }
    snprintf(out, MS_FINGERPRINT_LEN + 1, "%016llx", (unsigned long long)h);
}

/* ---- small lookups ------------------------------------------------------------------------- */

int ms_config_task_index(const ms_config *cfg, const char *name) {
    for (int t = 0; t < cfg->data.tasks.n; t++)
        if (!strcmp(cfg->data.tasks.name[t], name)) return t;
    return -1;
}

void ms_config_task_hint(const ms_config *cfg, const char *name, char *buf, size_t cap) {
    const ms_name_list *tasks = &cfg->data.tasks;
    const char *names[MS_MAX_TASKS];
    for (int t = 0; t < tasks->n; t++) names[t] = tasks->name[t];
    buf[0] = 0;
    const char *near = ms_closest_name(name, names, tasks->n);
    if (near) {
        snprintf(buf, cap, " (did you mean '%s'?)", near);
        return;
    }
    /* "depth" -> depth_euclidean, "semantic" -> segment_semantic */
    int found = 0;
    for (int t = 0; t < tasks->n && name[0]; t++) {
        if (!strstr(names[t], name)) continue;
        size_t len = strlen(buf);
        snprintf(buf + len, cap - len, "%s'%s'", found++ ? " or " : " (did you mean ", names[t]);
    }
    if (found && strlen(buf) + 3 <= cap) strcat(buf, "?)");
}

const int16_t *ms_expert_sets_layer(const ms_expert_sets *s, int l, int *n) {
    MS_ASSERT(l >= 0 && l < s->layers);
    int o = 0;
    for (int i = 0; i < l; i++) o += s->count[i];
    *n = s->count[l];
    return s->expert + o;
}

int ms_config_parse_device(const char *s, int *index) {
    if (index) *index = 0;
    if (!strcmp(s, "auto")) return MS_DEVICE_AUTO;
    if (!strcmp(s, "cpu")) return MS_DEVICE_CPU;
    if (strncmp(s, "cuda", 4) != 0) return -1;
    if (!s[4]) return MS_DEVICE_CUDA;
    if (s[4] != ':' || !s[5] || strlen(s + 5) > 4) return -1;
    int n = 0;
    for (const char *p = s + 5; *p; p++) {
        if (*p < '0' || *p > '9') return -1;
        n = 10 * n + (*p - '0');
    }
    if (index) *index = n;
    return MS_DEVICE_CUDA;
}
