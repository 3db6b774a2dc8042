/* Shared by the config*.c files only: the key table and the helpers that parse, print and report
 * its values. Nothing outside model/config*.c includes this. */
#ifndef MS_CONFIG_INTERNAL_H
#define MS_CONFIG_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <yaml.h>

#include "../kernels/util.h"
#include "config.h"

typedef enum {
    MS_KT_INT,    /* int */
    MS_KT_FLOAT,  /* double */
    MS_KT_BOOL,   /* bool */
    MS_KT_STRING, /* char[size] */
    MS_KT_ENUM,   /* int-sized enum, index into values */
    MS_KT_LIST,   /* ms_name_list */
    MS_KT_MAP,    /* ms_weight_map */
    MS_KT_BLOCKS, /* ms_block_set */
    MS_KT_EXPERTS /* ms_expert_sets */
} ms_key_type;

/* Range flags for MS_KT_INT / MS_KT_FLOAT (and the values of MS_KT_MAP). */
enum { MS_KEY_MIN_OPEN = 1, MS_KEY_MAX_OPEN = 2 };

typedef struct {
    const char *name; /* "section.key" */
    ms_key_type type;
    size_t offset;             /* of the field in ms_config */
    size_t size;               /* of the field (string capacity for MS_KT_STRING) */
    const char *def;           /* default, as YAML text parsed by the same code as a file */
    double min, max;           /* allowed range (MS_KT_INT, MS_KT_FLOAT, MS_KT_MAP values) */
    unsigned range_flags;      /* MS_KEY_MIN_OPEN / MS_KEY_MAX_OPEN: bound excluded */
    const char *const *values; /* MS_KT_ENUM: allowed names, NULL-terminated */
    /* MS_KT_STRING: NULL when the string is acceptable, else (and for NULL) what is allowed. */
    const char *(*check)(const char *value);
    bool fingerprint; /* part of ms_config_fingerprint */
    const char *doc;  /* one line for docs and `config keys` */
} ms_config_key;

extern const ms_config_key ms_config_keys[];
extern const int ms_config_n_keys;
extern const char *const ms_config_sections[]; /* "run", "data", ..., NULL */

/* Index of the key named `name` (full dotted name), or -1. */
int ms_config_key_index(const char *name);
/* Address of key k's field in cfg. */
void *ms_config_field(ms_config *cfg, int k);
const void *ms_config_cfield(const ms_config *cfg, int k);

/* Where a value came from, for messages: a file position, a --set argument, or just the file. */
typedef struct {
    const char *file; /* NULL for --set */
    int line, col;    /* 1-based; 0 = no position */
    const char *set;  /* the --set argument text ("key=value" or just "key"), or NULL */
} ms_where;

/* Appends "WHERE: MESSAGE" to errs: "FILE:LINE:COL: ", "FILE: " or "--set ARG: ". */
void ms_config_error(ms_config_errors *errs, const ms_where *w, const char *fmt, ...)
    MS_PRINTF(3, 4);
void ms_config_verror(ms_config_errors *errs, const ms_where *w, const char *fmt, va_list ap);

/* Sets key k from a YAML node (of doc), checking type and range; on error appends a message
 * naming the key and the value and leaves the field as it was. Returns true on success. */
bool ms_config_apply_node(ms_config *cfg, int k, yaml_document_t *doc, yaml_node_t *node,
                          const ms_where *w, ms_config_errors *errs);
/* Sets model.task_weights[name] (the `--set model.task_weights.NAME=W` form). */
bool ms_config_apply_map_entry(ms_config *cfg, int k, const char *name, yaml_node_t *node,
                               const ms_where *w, ms_config_errors *errs);

/* Writes key k's value as YAML text (a scalar or a flow list/map). */
void ms_config_print_value(FILE *f, const ms_config *cfg, int k);

/* Resolves automatic values and checks what involves several keys; appends errors. */
void ms_config_resolve_and_check(ms_config *cfg, const char *const *sets, ms_config_errors *errs);

/* The location of key k's value for a message about it (its file position, its --set, or the
 * file). `sets` may be NULL (the --set text is then the key name). */
ms_where ms_config_key_where(const ms_config *cfg, int k, const char *const *sets);

/* Edit distance (insertions, deletions, substitutions). */
int ms_edit_distance(const char *a, const char *b);
/* The most edits a string of len characters may be from a name to count as a typo of it. */
int ms_typo_limit(size_t len);
/* The closest of `names` (NULL-terminated, or n entries when n >= 0) to s when it is close
 * enough to be a plausible typo, else NULL. */
const char *ms_closest_name(const char *s, const char *const *names, int n);

/* Default weight of a task under fixed weighting (METHOD.md section 4; 1 for Taskonomy). */

#endif
