/* Loading: YAML text -> libyaml document -> keys of the table, then the --set overrides, then
 * resolution and cross-key checks. Every problem is collected (not just the first) with the
 * FILE:LINE:COL of the node it is about. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "config_internal.h"

static ms_where node_where(const char *file, const yaml_node_t *n) {
    return (ms_where){
        .file = file, .line = (int)n->start_mark.line + 1, .col = (int)n->start_mark.column + 1};
}

/* What a node is, for "got ..." (buf holds a quoted scalar). */
static const char *node_kind(const yaml_node_t *n, char *buf, size_t cap) {
    if (n->type == YAML_MAPPING_NODE) return "a mapping";
    if (n->type == YAML_SEQUENCE_NODE) return "a list";
    snprintf(buf, cap, "'%.60s'", (const char *)n->data.scalar.value);
    return buf;
}

/* `key:`, `key: ~`, `key: null` (unquoted). */
static bool is_null_scalar(const yaml_node_t *n) {
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *v = (const char *)n->data.scalar.value;
    return !v[0] || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") ||
           !strcmp(v, "NULL");
}

/* libyaml's own description of a syntax error, at the position it reports. Encoding errors
 * come with a byte offset only; their line and column are counted in `text`. */
static void syntax_error(ms_config_errors *errs, const yaml_parser_t *p, const ms_where *base,
                         const char *what, const char *text, size_t len) {
    ms_where w = *base;
    if (!w.set && p->error == YAML_READER_ERROR) {
        w.line = w.col = 1;
        for (size_t i = 0; i < p->problem_offset && i < len; i++, w.col++)
            if (text[i] == '\n') w.line++, w.col = 0;
    } else if (!w.set && p->error != YAML_MEMORY_ERROR) {
        w.line = (int)p->problem_mark.line + 1;
        w.col = (int)p->problem_mark.column + 1;
    }
    const char *problem = p->problem ? p->problem : "out of memory";
    if (p->error == YAML_READER_ERROR)
        ms_config_error(errs, &w, "%s: %s at byte %zu", what, problem, p->problem_offset);
    else if (p->context && !w.set)
        ms_config_error(errs, &w, "%s: %s (%s at line %zu, column %zu)", what, problem, p->context,
                        p->context_mark.line + 1, p->context_mark.column + 1);
    else if (p->context)
        ms_config_error(errs, &w, "%s: %s (%s)", what, problem, p->context);
    else
        ms_config_error(errs, &w, "%s: %s", what, problem);
}

/* "unknown key 'model.dimm' (did you mean 'model.dim'?)": a key of the same name in another
 * section first (a key put under the wrong section), else the closest full name. */
static void unknown_key(ms_config_errors *errs, const ms_where *w, const char *full) {
    const char *leaf = strrchr(full, '.');
    leaf = leaf ? leaf + 1 : full;
    const char *near = NULL;
    for (int k = 0; k < ms_config_n_keys && !near; k++)
        if (!strcmp(strrchr(ms_config_keys[k].name, '.') + 1, leaf)) near = ms_config_keys[k].name;
    if (!near) {
        /* The allowance for typos follows the length of the part of the key the user typed. */
        int best = ms_typo_limit(strlen(leaf)) + 1;
        for (int k = 0; k < ms_config_n_keys; k++) {
            int d = ms_edit_distance(full, ms_config_keys[k].name);
            if (d < best) best = d, near = ms_config_keys[k].name;
        }
    }
    if (near)
        ms_config_error(errs, w, "unknown key '%s' (did you mean '%s'?)", full, near);
    else
        ms_config_error(errs, w, "unknown key '%s'", full);
}

static int section_index(const char *s) {
    for (int i = 0; ms_config_sections[i]; i++)
        if (!strcmp(ms_config_sections[i], s)) return i;
    return -1;
}

static void apply_file_key(ms_config *cfg, const char *file, const char *full, yaml_document_t *doc,
                           yaml_node_t *kn, yaml_node_t *vn, ms_config_errors *errs) {
    ms_where kw = node_where(file, kn), vw = node_where(file, vn);
    int k = ms_config_key_index(full);
    if (k < 0) {
        unknown_key(errs, &kw, full);
        return;
    }
    ms_key_origin *o = &cfg->origin[k];
    if (o->kind == MS_ORIGIN_FILE) {
        ms_config_error(errs, &kw, "duplicate key '%s' (first set at line %d)", full, o->line);
        return;
    }
    o->kind = MS_ORIGIN_FILE;
    o->line = vw.line;
    o->col = vw.col;
    o->bad = !ms_config_apply_node(cfg, k, doc, vn, &vw, errs);
}

static void apply_section(ms_config *cfg, const char *file, const char *section,
                          yaml_document_t *doc, yaml_node_t *map, ms_config_errors *errs) {
    char got[80];
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *kn = yaml_document_get_node(doc, p->key);
        yaml_node_t *vn = yaml_document_get_node(doc, p->value);
        ms_where kw = node_where(file, kn);
        if (kn->type != YAML_SCALAR_NODE) {
            ms_config_error(errs, &kw, "keys of '%s' must be names, got %s", section,
                            node_kind(kn, got, sizeof got));
            continue;
        }
        char full[256];
        snprintf(full, sizeof full, "%s.%s", section, (const char *)kn->data.scalar.value);
        apply_file_key(cfg, file, full, doc, kn, vn, errs);
    }
}

static void apply_document(ms_config *cfg, const char *file, yaml_document_t *doc,
                           ms_config_errors *errs) {
    char got[80];
    yaml_node_t *root = yaml_document_get_root_node(doc);
    if (!root) return; /* an empty file: all defaults */
    ms_where rw = node_where(file, root);
    if (root->type != YAML_MAPPING_NODE) {
        if (is_null_scalar(root)) return;
        ms_config_error(errs, &rw,
                        "a config is a mapping of sections (run:, data:, model:, train:, eval:), "
                        "got %s",
                        node_kind(root, got, sizeof got));
        return;
    }
    int seen_line[8] = {0}, seen_col[8] = {0}; /* [section] first position, 0 = not yet */
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
         p++) {
        yaml_node_t *kn = yaml_document_get_node(doc, p->key);
        yaml_node_t *vn = yaml_document_get_node(doc, p->value);
        ms_where kw = node_where(file, kn);
        if (kn->type != YAML_SCALAR_NODE) {
            ms_config_error(errs, &kw, "section names must be plain names, got %s",
                            node_kind(kn, got, sizeof got));
            continue;
        }
        const char *name = (const char *)kn->data.scalar.value;
        int s = section_index(name);
        if (s < 0) {
            if (ms_config_key_index(name) >= 0)
                ms_config_error(errs, &kw,
                                "unknown key '%s' at the top level; write it as '%.*s:' with '%s:' "
                                "indented below",
                                name, (int)(strchr(name, '.') - name), name, strchr(name, '.') + 1);
            else {
                const char *near = ms_closest_name(name, ms_config_sections, -1);
                if (near)
                    ms_config_error(errs, &kw, "unknown section '%s' (did you mean '%s'?)", name,
                                    near);
                else
                    unknown_key(errs, &kw, name);
            }
            continue;
        }
        if (seen_line[s]) {
            ms_config_error(errs, &kw, "duplicate section '%s' (first at line %d, column %d)", name,
                            seen_line[s], seen_col[s]);
            continue;
        }
        seen_line[s] = kw.line;
        seen_col[s] = kw.col;
        if (is_null_scalar(vn)) continue; /* `model:` with nothing below */
        if (vn->type != YAML_MAPPING_NODE) {
            ms_where vw = node_where(file, vn);
            ms_config_error(errs, &vw,
                            "'%s' must be a mapping of its keys (indented 'key: value' lines), got "
                            "%s",
                            name, node_kind(vn, got, sizeof got));
            continue;
        }
        apply_section(cfg, file, name, doc, vn, errs);
    }
}

/* Parses YAML text as one document; false (with the error appended) on a syntax error. */
static bool parse_yaml(const char *text, size_t len, yaml_document_t *doc, const ms_where *w,
                       const char *what, bool single, ms_config_errors *errs) {
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) ms_fatal("out of memory starting the YAML parser");
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    bool ok = yaml_parser_load(&parser, doc);
    if (!ok) syntax_error(errs, &parser, w, what, text, len);
    if (ok && single) {
        yaml_document_t extra;
        if (!yaml_parser_load(&parser, &extra)) {
            syntax_error(errs, &parser, w, what, text, len);
            ok = false;
        } else {
            yaml_node_t *root = yaml_document_get_root_node(&extra);
            if (root) {
                ms_where ew = node_where(w->file, root);
                if (w->set) ew = *w;
                ms_config_error(errs, &ew, "a second YAML document; a config is one document");
                ok = false;
            }
            yaml_document_delete(&extra);
        }
        if (!ok) yaml_document_delete(doc);
    }
    yaml_parser_delete(&parser);
    return ok;
}

/* `--set key=value`: the value is YAML (a scalar, [a, b] or {a: 1}); `--set
 * model.task_weights.edge=50` sets one entry of a map. */
static void apply_set(ms_config *cfg, int index, const char *arg, ms_config_errors *errs) {
    ms_where w = {.set = arg};
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg) {
        ms_config_error(errs, &w, "expected key=value, e.g. --set model.dim=384");
        return;
    }
    char key[256];
    snprintf(key, sizeof key, "%.*s", (int)(eq - arg), arg);
    const char *entry = NULL;
    int k = ms_config_key_index(key);
    if (k < 0) {
        for (int j = 0; j < ms_config_n_keys && k < 0; j++) {
            size_t n = strlen(ms_config_keys[j].name);
            if (ms_config_keys[j].type == MS_KT_MAP && !strncmp(key, ms_config_keys[j].name, n) &&
                key[n] == '.')
                k = j, entry = key + n + 1;
        }
    }
    if (k < 0) {
        if (section_index(key) >= 0)
            ms_config_error(errs, &w, "'%s' is a section; set one of its keys (%s.KEY=VALUE)", key,
                            key);
        else
            unknown_key(errs, &w, key);
        return;
    }
    /* An empty value is YAML null (an empty string, list or map). */
    const char *value = eq[1] ? eq + 1 : "~";
    yaml_document_t doc;
    if (!parse_yaml(value, strlen(value), &doc, &w, "YAML syntax error in the value", true, errs)) {
        cfg->origin[k].bad = 1;
        return;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root) {
        /* Only blanks or a comment (`--set run.name=#`, found by fuzzing): no YAML node at all,
         * which is null just as an empty value is. */
        yaml_document_delete(&doc);
        MS_ASSERT(parse_yaml("~", 1, &doc, &w, "YAML syntax error in the value", true, errs));
        root = yaml_document_get_root_node(&doc);
    }
    MS_ASSERT(root);
    bool ok = entry ? ms_config_apply_map_entry(cfg, k, entry, root, &w, errs)
                    : ms_config_apply_node(cfg, k, &doc, root, &w, errs);
    cfg->origin[k] = (ms_key_origin){.kind = MS_ORIGIN_SET, .line = index, .bad = !ok};
    yaml_document_delete(&doc);
}

int ms_config_load_text(ms_config *cfg, const char *name, const char *text, size_t len, int n_sets,
                        const char *const *sets, ms_config_errors *errs) {
    int before = errs->n;
    ms_config_defaults(cfg);
    snprintf(cfg->source, sizeof cfg->source, "%s", name);
    if (memchr(text, 0, len)) {
        ms_where w = {.file = name};
        ms_config_error(errs, &w, "not a YAML text file (it contains NUL bytes)");
        return errs->n - before;
    }
    ms_where w = {.file = name};
    yaml_document_t doc;
    if (parse_yaml(text, len, &doc, &w, "YAML syntax error", true, errs)) {
        apply_document(cfg, name, &doc, errs);
        yaml_document_delete(&doc);
    }
    for (int i = 0; i < n_sets; i++)
        apply_set(cfg, i, sets[i], errs);
    ms_config_resolve_and_check(cfg, sets, errs);
    return errs->n - before;
}

int ms_config_load(ms_config *cfg, const char *path, int n_sets, const char *const *sets,
                   ms_config_errors *errs) {
    ms_where w = {.file = path};
    FILE *f = fopen(path, "rb");
    if (!f) {
        int open_error = errno;
        ms_config_defaults(cfg);
        ms_config_error(errs, &w, "cannot open the config: %s", strerror(open_error));
        return 1;
    }
    char *text = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? 2 * cap : 65536;
            text = realloc(text, cap);
            if (!text) ms_fatal("out of memory reading %s", path);
        }
        size_t got = fread(text + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    int read_error = ferror(f) ? errno : 0;
    fclose(f);
    if (read_error) {
        free(text);
        ms_config_defaults(cfg);
        ms_config_error(errs, &w, "cannot read the config: %s", strerror(read_error));
        return 1;
    }
    int n = ms_config_load_text(cfg, path, text, len, n_sets, sets, errs);
    free(text);
    return n;
}
