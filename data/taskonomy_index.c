/* Taskonomy split CSV, directory index and index cache (see taskonomy.h). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../kernels/util.h"
#include "../model/tasks.h"
#include "dataset.h"
#include "taskonomy.h"

/* Every Taskonomy domain the loaders read; rgb first. */
static const ms_tx_domain domains[] = {
    {"rgb", "rgb", NULL, "png"},
    {"depth_euclidean", "depth_euclidean", NULL, "png"},
    {"depth_zbuffer", "depth_zbuffer", NULL, "png"},
    {"normal", "normal", NULL, "png"},
    {"principal_curvature", "principal_curvature", NULL, "png"},
    {"reshading", "reshading", NULL, "png"},
    {"edge_texture", "edge_texture", NULL, "png"},
    {"edge_occlusion", "edge_occlusion", NULL, "png"},
    {"keypoints2d", "keypoints2d", NULL, "png"},
    {"keypoints3d", "keypoints3d", NULL, "png"},
    {"segment_unsup2d", "segment_unsup2d", NULL, "png"},
    {"segment_unsup25d", "segment_unsup25d", NULL, "png"},
    {"segment_semantic", "segmentsemantic", "segment_semantic", "png"},
    {"class_object", "class_object", NULL, "npy"},
    {"class_scene", "class_places", "class_scene", "npy"},
};

const ms_tx_domain *ms_tx_domain_find(const char *name) {
    for (size_t i = 0; i < sizeof domains / sizeof domains[0]; i++)
        if (strcmp(domains[i].name, name) == 0) return &domains[i];
    return NULL;
}

/* ---- small helpers --------------------------------------------------------------------------- */

static int read_all(const char *path, char **text, size_t *len, ms_io_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return ms_io_fail(err, MS_IO_OPEN, "%s: cannot open (%s)", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = ms_malloc(cap + 1);
    for (;;) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap) break;
        cap *= 2;
        char *grown = realloc(buf, cap + 1);
        if (!grown) {
            free(buf);
            fclose(f);
            return ms_io_fail(err, MS_IO_NOMEM, "%s: out of memory reading it", path);
        }
        buf = grown;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return ms_io_fail(err, MS_IO_OPEN, "%s: read error", path);
    }
    buf[n] = 0;
    *text = buf, *len = n;
    return 0;
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = 0;
    if (n >= 2 && s[0] == '"' && s[n - 1] == '"') {
        s[n - 1] = 0;
        s++;
    }
    return s;
}

/* Splits a line at commas in place; returns the field count (at most cap). */
static int split_fields(char *line, char **field, int cap) {
    int n = 0;
    for (char *s = line;;) {
        char *c = strchr(s, ',');
        if (c) *c = 0;
        if (n < cap) field[n++] = trim(s);
        if (!c) return n;
        s = c + 1;
    }
}

static uint64_t fnv(const void *p, size_t n, uint64_t h) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001B3ull;
    return h;
}
#define FNV0 0xCBF29CE484222325ull

static int64_t mtime_ns(const struct stat *st) {
    return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

/* ---- split CSV ------------------------------------------------------------------------------- */

#define MAX_COLUMNS 64

int ms_tx_read_split(const char *path, const char *split, char ***names, int *n_names,
                     ms_io_err *err) {
    char *text;
    size_t len;
    int rc = read_all(path, &text, &len, err);
    if (rc) return rc;
    int col = -1, n_cols = 0, n = 0, cap = 64, line_no = 0;
    char **out = ms_malloc(cap * sizeof *out);
    char *field[MAX_COLUMNS];
    rc = 0;
    for (char *s = text; s < text + len && !rc;) {
        /* a line ends at CR, LF or CRLF (the official split files use CR only) */
        char *e = s, *end = text + len;
        while (e < end && *e != '\r' && *e != '\n') e++;
        char *next = e;
        if (next < end) next += (*next == '\r' && next + 1 < end && next[1] == '\n') ? 2 : 1;
        *e = 0;
        line_no++;
        char *line = trim(s);
        s = next;
        if (!*line) continue;
        if (col < 0) {
            n_cols = split_fields(line, field, MAX_COLUMNS);
            for (int c = 1; c < n_cols; c++)
                if (strcmp(field[c], split) == 0) col = c;
            if (col < 0) {
                char have[512] = "";
                for (int c = 1; c < n_cols; c++)
                    ms_strf(have + strlen(have), sizeof have - strlen(have), "%s%s",
                             c > 1 ? ", " : "", field[c]);
                rc = ms_io_fail(err, MS_IO_MISMATCH,
                                "%s: no column '%s' in the header (columns after the building "
                                "id: %s)",
                                path, split, have);
            }
            continue;
        }
        int nf = split_fields(line, field, MAX_COLUMNS);
        if (nf <= col) {
            rc = ms_io_fail(err, MS_IO_CORRUPT, "%s:%d: %d fields, expected %d (as the header)",
                            path, line_no, nf, n_cols);
            break;
        }
        const char *v = field[col];
        if (strcmp(v, "1") != 0 && strcmp(v, "0") != 0 && *v) {
            rc = ms_io_fail(err, MS_IO_CORRUPT, "%s:%d: column '%s' is '%s', expected 0 or 1", path,
                            line_no, split, v);
            break;
        }
        if (strcmp(v, "1") != 0 || !*field[0]) continue;
        int dup = 0;
        for (int i = 0; i < n && !dup; i++) dup = strcmp(out[i], field[0]) == 0;
        if (dup) continue;
        if (n == cap) out = realloc(out, (cap *= 2) * sizeof *out);
        MS_ASSERT(out);
        out[n++] = strdup(field[0]);
    }
    if (!rc && col < 0) rc = ms_io_fail(err, MS_IO_CORRUPT, "%s: empty split file", path);
    free(text);
    if (rc) {
        for (int i = 0; i < n; i++) free(out[i]);
        free(out);
        return rc;
    }
    *names = out, *n_names = n;
    return 0;
}

/* ---- the directory walk ---------------------------------------------------------------------- */

static void dir_path(char *buf, size_t cap, const char *root, const char *domain,
                     const char *building, int layout) {
    if (layout == MS_TX_OMNIDATA)
        ms_strf(buf, cap, "%s/%s/taskonomy/%s", root, domain, building);
    else
        ms_strf(buf, cap, "%s/%s/%s", root, domain, building);
}

void ms_tx_path(const ms_tx_index *ix, int64_t i, int k, char *buf, size_t cap) {
    const ms_tx_sample *s = &ix->sample[i];
    const ms_tx_domain *dm = ix->domain[k];
    int layout = ix->layout[(size_t)s->building * ix->n_domains + k];
    char dir[MS_PATH_MAX];
    dir_path(dir, sizeof dir, ix->root, dm->name, ix->building[s->building],
             layout ? layout : MS_TX_OMNIDATA);
    ms_strf(buf, cap, "%s/point_%d_view_%d_domain_%s.%s", dir, s->point, s->view,
             (s->alt >> k & 1) ? dm->alt : dm->file, dm->ext);
}

/* Parses "point_{p}_view_{v}_domain_{name}.{ext}" for domain dm. */
static int parse_name(const char *s, const ms_tx_domain *dm, int32_t *p, int32_t *v, int *alt) {
    int32_t *num[2] = {p, v};
    const char *tag[2] = {"point_", "_view_"};
    for (int k = 0; k < 2; k++) {
        size_t tl = strlen(tag[k]);
        if (strncmp(s, tag[k], tl) != 0) return 0;
        s += tl;
        int digits = 0;
        int32_t x = 0;
        for (; *s >= '0' && *s <= '9'; s++, digits++) {
            if (digits == 9) return 0;
            x = x * 10 + (*s - '0');
        }
        if (!digits) return 0;
        *num[k] = x;
    }
    if (strncmp(s, "_domain_", 8) != 0) return 0;
    s += 8;
    const char *dot = strrchr(s, '.');
    if (!dot || strcmp(dot + 1, dm->ext) != 0) return 0;
    size_t len = (size_t)(dot - s);
    if (len == strlen(dm->file) && strncmp(s, dm->file, len) == 0) *alt = 0;
    else if (dm->alt && len == strlen(dm->alt) && strncmp(s, dm->alt, len) == 0) *alt = 1;
    else return 0;
    return 1;
}

/* Opens the directory of (domain, building) in either layout. *layout = MS_TX_ABSENT when
 * neither exists (not an error: the files count as missing). */
static int open_domain_dir(const ms_tx_index *ix, const char *domain, const char *building,
                           DIR **d, int *layout, int64_t *mtime, ms_io_err *err) {
    char path[MS_PATH_MAX];
    for (int l = MS_TX_OMNIDATA; l <= MS_TX_FLAT; l++) {
        dir_path(path, sizeof path, ix->root, domain, building, l);
        *d = opendir(path);
        if (*d) {
            struct stat st;
            if (fstat(dirfd(*d), &st) != 0) {
                closedir(*d);
                return ms_io_fail(err, MS_IO_OPEN, "%s: cannot stat (%s)", path, strerror(errno));
            }
            *layout = l, *mtime = mtime_ns(&st);
            return 0;
        }
        if (errno != ENOENT && errno != ENOTDIR)
            return ms_io_fail(err, MS_IO_OPEN, "%s: cannot list (%s)", path, strerror(errno));
    }
    *layout = MS_TX_ABSENT, *mtime = 0;
    return 0;
}

static int cmp_sample(const void *a, const void *b) {
    const ms_tx_sample *x = a, *y = b;
    if (x->point != y->point) return x->point < y->point ? -1 : 1;
    return x->view < y->view ? -1 : x->view > y->view;
}

static void push_sample(ms_tx_index *ix, int64_t *cap, ms_tx_sample s) {
    if (ix->n == *cap) {
        *cap = *cap ? *cap * 2 : 4096;
        ix->sample = realloc(ix->sample, (size_t)*cap * sizeof *ix->sample);
        MS_ASSERT(ix->sample);
    }
    ix->sample[ix->n++] = s;
}

/* Lists every (domain, building) directory once: rgb makes the samples, the other domains mark
 * which files exist. dir_mtime: [n_buildings, n_domains]. */
static int walk(ms_tx_index *ix, int64_t *dir_mtime, ms_io_err *err) {
    int64_t cap = 0;
    for (int b = 0; b < ix->n_buildings; b++) {
        int64_t first = ix->n;
        for (int k = 0; k < ix->n_domains; k++) {
            const ms_tx_domain *dm = ix->domain[k];
            DIR *d;
            int layout = MS_TX_ABSENT;
            size_t cell = (size_t)b * ix->n_domains + k;
            int rc = open_domain_dir(ix, dm->name, ix->building[b], &d, &layout, &dir_mtime[cell],
                                     err);
            if (rc) return rc;
            ix->layout[cell] = (uint8_t)layout;
            if (layout == MS_TX_ABSENT) {
                if (k == 0) break; /* no rgb: the building has no samples */
                continue;
            }
            struct dirent *e;
            while ((e = readdir(d))) {
                ms_tx_sample s = {b, 0, 0, 1u, 0};
                int alt;
                if (!parse_name(e->d_name, dm, &s.point, &s.view, &alt)) continue;
                if (k == 0) {
                    push_sample(ix, &cap, s);
                    continue;
                }
                ms_tx_sample *hit = bsearch(&s, ix->sample + first, (size_t)(ix->n - first),
                                            sizeof s, cmp_sample);
                if (!hit) continue; /* a label without an image is not a sample */
                /* both spellings present: the regular one wins */
                if (hit->have >> k & 1) {
                    if (!alt) hit->alt &= ~(1u << k);
                } else {
                    hit->have |= 1u << k;
                    if (alt) hit->alt |= 1u << k;
                }
            }
            closedir(d);
            if (k == 0)
                qsort(ix->sample + first, (size_t)(ix->n - first), sizeof *ix->sample, cmp_sample);
        }
    }
    return 0;
}

/* ---- the cache file -------------------------------------------------------------------------- */

static const char CACHE_MAGIC[8] = {'M', 'S', 'T', 'X', 'I', 'D', 'X', '1'};

typedef struct {
    char *p;
    size_t n, cap;
} wbuf;

static void put(wbuf *w, const void *src, size_t n) {
    if (!n) return;
    if (w->n + n > w->cap) {
        w->cap = (w->n + n) * 2;
        w->p = realloc(w->p, w->cap);
        MS_ASSERT(w->p);
    }
    memcpy(w->p + w->n, src, n);
    w->n += n;
}

typedef struct {
    const char *p;
    size_t n, at;
    int bad;
} rbuf;

static void get(rbuf *r, void *dst, size_t n) {
    if (r->bad || r->n - r->at < n) {
        r->bad = 1;
        memset(dst, 0, n);
        return;
    }
    memcpy(dst, r->p + r->at, n);
    r->at += n;
}

/* What the cache must match: the root, the split file and split, and the domains. */
static void cache_key(const ms_tx_index *ix, const char *split_path, const char *split, char *key,
                      size_t cap) {
    ms_strf(key, cap, "%s\n%s\n%s\n", ix->root, split_path, split);
    for (int k = 0; k < ix->n_domains; k++)
        ms_strf(key + strlen(key), cap - strlen(key), "%s,", ix->domain[k]->name);
}

static int write_cache(const ms_tx_index *ix, const char *path, const char *key,
                       const struct stat *split_st, const int64_t *dir_mtime, ms_io_err *err) {
    wbuf w = {0};
    uint32_t order = 0x01020304u, klen = (uint32_t)strlen(key);
    int64_t sm = mtime_ns(split_st), ss = (int64_t)split_st->st_size;
    int32_t nd = ix->n_domains, nb = ix->n_buildings;
    put(&w, CACHE_MAGIC, 8);
    put(&w, &order, 4);
    put(&w, &klen, 4);
    put(&w, key, klen);
    put(&w, &sm, 8);
    put(&w, &ss, 8);
    put(&w, &nd, 4);
    put(&w, &nb, 4);
    for (int b = 0; b < nb; b++) {
        uint32_t len = (uint32_t)strlen(ix->building[b]);
        put(&w, &len, 4);
        put(&w, ix->building[b], len);
        for (int k = 0; k < nd; k++) {
            put(&w, &ix->layout[(size_t)b * nd + k], 1);
            put(&w, &dir_mtime[(size_t)b * nd + k], 8);
        }
    }
    put(&w, &ix->n, 8);
    put(&w, ix->sample, (size_t)ix->n * sizeof *ix->sample);
    uint64_t sum = fnv(w.p, w.n, FNV0);
    put(&w, &sum, 8);

    /* the cache directory may not exist yet */
    char dir[MS_PATH_MAX];
    ms_strf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = 0;
        if (mkdir(dir, 0775) != 0 && errno != EEXIST) {
            free(w.p);
            return ms_io_fail(err, MS_IO_WRITE, "%s: cannot create (%s)", dir, strerror(errno));
        }
    }
    ms_atomic a;
    FILE *fp;
    int rc = ms_atomic_begin(&a, path, &fp, err);
    if (!rc) {
        if (fwrite(w.p, 1, w.n, fp) != w.n) {
            ms_atomic_abort(&a, fp);
            rc = ms_io_fail(err, MS_IO_WRITE, "%s: write failed", path);
        } else {
            rc = ms_atomic_commit(&a, fp, MS_IO_NOSYNC, err);
        }
    }
    free(w.p);
    return rc;
}

/* Loads path into ix when it is a valid, current cache for key. Returns 1 when used; 0 with a
 * reason in `why` otherwise. */
static int load_cache(ms_tx_index *ix, const char *path, const char *key,
                      const struct stat *split_st, char *why, size_t why_cap) {
    char *text;
    size_t len;
    ms_io_err e;
    if (read_all(path, &text, &len, &e)) {
        ms_strf(why, why_cap, "no cache");
        return 0;
    }
    rbuf r = {text, len, 0, 0};
    int ok = 0;
    char magic[8];
    uint32_t order, klen;
    get(&r, magic, 8);
    get(&r, &order, 4);
    get(&r, &klen, 4);
    if (r.bad || memcmp(magic, CACHE_MAGIC, 8) != 0 || order != 0x01020304u || klen > len ||
        len < 8) {
        ms_strf(why, why_cap, "%s is not an index cache of this version", path);
        goto done;
    }
    uint64_t sum;
    memcpy(&sum, text + len - 8, 8);
    if (fnv(text, len - 8, FNV0) != sum) {
        ms_strf(why, why_cap, "%s is damaged (checksum)", path);
        goto done;
    }
    r.n = len - 8;
    if (klen != strlen(key) || memcmp(text + r.at, key, klen) != 0) {
        ms_strf(why, why_cap, "%s was made for another split or task list", path);
        goto done;
    }
    r.at += klen;
    int64_t sm, ss;
    int32_t nd, nb;
    get(&r, &sm, 8);
    get(&r, &ss, 8);
    get(&r, &nd, 4);
    get(&r, &nb, 4);
    if (sm != mtime_ns(split_st) || ss != (int64_t)split_st->st_size) {
        ms_strf(why, why_cap, "the split file changed since %s was written", path);
        goto done;
    }
    if (r.bad || nd != ix->n_domains || nb < 0) {
        ms_strf(why, why_cap, "%s is inconsistent", path);
        goto done;
    }
    ix->n_buildings = nb;
    ix->building = ms_calloc((size_t)nb + 1, sizeof *ix->building);
    ix->layout = ms_calloc((size_t)nb * nd + 1, 1);
    for (int b = 0; b < nb && !r.bad; b++) {
        uint32_t l;
        get(&r, &l, 4);
        if (r.bad || l > r.n - r.at || l >= MS_PATH_MAX) {
            r.bad = 1;
            break;
        }
        ix->building[b] = strndup(r.p + r.at, l);
        r.at += l;
        for (int k = 0; k < nd && !r.bad; k++) {
            uint8_t layout;
            int64_t mt;
            get(&r, &layout, 1);
            get(&r, &mt, 8);
            ix->layout[(size_t)b * nd + k] = layout;
            /* the directory listing must be what it was: same mtime, or still absent */
            char dir[MS_PATH_MAX];
            struct stat st;
            if (layout == MS_TX_ABSENT) {
                for (int l2 = MS_TX_OMNIDATA; l2 <= MS_TX_FLAT; l2++) {
                    dir_path(dir, sizeof dir, ix->root, ix->domain[k]->name, ix->building[b], l2);
                    if (stat(dir, &st) == 0) {
                        ms_strf(why, why_cap, "%s appeared since the index was cached", dir);
                        goto done;
                    }
                }
            } else {
                dir_path(dir, sizeof dir, ix->root, ix->domain[k]->name, ix->building[b], layout);
                if (stat(dir, &st) != 0 || mtime_ns(&st) != mt) {
                    ms_strf(why, why_cap, "%s changed since the index was cached", dir);
                    goto done;
                }
            }
        }
    }
    int64_t n;
    get(&r, &n, 8);
    if (r.bad || n < 0 || (size_t)n * sizeof(ms_tx_sample) != r.n - r.at) {
        ms_strf(why, why_cap, "%s is inconsistent", path);
        goto done;
    }
    ix->n = n;
    ix->sample = ms_malloc((size_t)n * sizeof *ix->sample + 1);
    get(&r, ix->sample, (size_t)n * sizeof *ix->sample);
    for (int64_t i = 0; i < n; i++)
        if (ix->sample[i].building < 0 || ix->sample[i].building >= nb) {
            ms_strf(why, why_cap, "%s is inconsistent", path);
            goto done;
        }
    ok = 1;
done:
    free(text);
    return ok;
}

/* ---- building the index ---------------------------------------------------------------------- */

static void free_lists(ms_tx_index *ix) {
    for (int b = 0; b < ix->n_buildings; b++) free(ix->building[b]);
    free(ix->building);
    free(ix->layout);
    free(ix->sample);
    ix->building = NULL, ix->layout = NULL, ix->sample = NULL;
    ix->n_buildings = 0, ix->n = 0;
}

void ms_tx_index_free(ms_tx_index *ix) { free_lists(ix); }

static int add_domain(ms_tx_index *ix, const char *name) {
    for (int k = 0; k < ix->n_domains; k++)
        if (strcmp(ix->domain[k]->name, name) == 0) return k;
    ix->domain[ix->n_domains] = ms_tx_domain_find(name);
    MS_ASSERT(ix->domain[ix->n_domains]);
    return ix->n_domains++;
}

/* The cache files to try, in order: under the dataset root, then under the run directory. */
static void cache_paths(const ms_config *cfg, const ms_tx_index *ix, const char *split,
                        uint64_t h, char paths[2][MS_PATH_MAX]) {
    ms_strf(paths[0], MS_PATH_MAX, "%s/.modsquad_index/%s-%016llx.idx", ix->root, split,
             (unsigned long long)h);
    if (cfg->run.name[0])
        ms_strf(paths[1], MS_PATH_MAX, "%s/%s/taskonomy-index-%s-%016llx.idx", cfg->run.dir,
                 cfg->run.name, split, (unsigned long long)h);
    else
        ms_strf(paths[1], MS_PATH_MAX, "%s/taskonomy-index-%s-%016llx.idx", cfg->run.dir, split,
                 (unsigned long long)h);
}

int ms_tx_index_build(ms_tx_index *ix, const ms_config *cfg, const char *split, int rebuild,
                      ms_io_err *err) {
    memset(ix, 0, sizeof *ix);
    ms_strf(ix->root, sizeof ix->root, "%s", cfg->data.root[0] ? cfg->data.root : ".");
    for (size_t l = strlen(ix->root); l > 1 && ix->root[l - 1] == '/'; l--) ix->root[l - 1] = 0;
    add_domain(ix, "rgb");
    int needs_mask = 0;
    for (int t = 0; t < cfg->data.tasks.n; t++) {
        const ms_task_def *def = ms_task_find(MS_DATASET_TASKONOMY, cfg->data.tasks.name[t]);
        if (!def || !ms_tx_domain_find(def->name))
            return ms_io_fail(err, MS_IO_ARG, "data.tasks: '%s' is not a Taskonomy domain",
                              cfg->data.tasks.name[t]);
        add_domain(ix, def->name);
        needs_mask |= def->depth_masked;
    }
    ix->mask_domain[0] = ix->mask_domain[1] = -1;
    if (needs_mask) {
        /* a configured depth task gives the mask; the other depth domain stands in for it
           where its file is missing */
        int m = 0;
        for (int t = 0; t < cfg->data.tasks.n && m < 2; t++)
            if (strncmp(cfg->data.tasks.name[t], "depth_", 6) == 0)
                ix->mask_domain[m++] = add_domain(ix, cfg->data.tasks.name[t]);
        const char *extra[2] = {"depth_zbuffer", "depth_euclidean"};
        for (int j = 0; j < 2 && m < 2; j++)
            if (m == 0 || strcmp(ix->domain[ix->mask_domain[0]]->name, extra[j]) != 0)
                ix->mask_domain[m++] = add_domain(ix, extra[j]);
    }

    char split_path[MS_PATH_MAX];
    if (cfg->data.split_file[0]) ms_strf(split_path, sizeof split_path, "%s", cfg->data.split_file);
    else ms_strf(split_path, sizeof split_path, "%s/splits.csv", ix->root);
    struct stat split_st;
    if (stat(split_path, &split_st) != 0)
        return ms_io_fail(err, MS_IO_OPEN,
                          "%s: cannot open the split file (%s); set data.split_file or put "
                          "splits.csv in data.root",
                          split_path, strerror(errno));
    char **names;
    int n_names;
    int rc = ms_tx_read_split(split_path, split, &names, &n_names, err);
    if (rc) return rc;
    if (n_names == 0) {
        free(names);
        return ms_io_fail(err, MS_IO_MISMATCH, "%s: split '%s' lists no building", split_path,
                          split);
    }

    char key[MS_PATH_MAX * 3];
    cache_key(ix, split_path, split, key, sizeof key);
    char paths[2][MS_PATH_MAX];
    cache_paths(cfg, ix, split, fnv(key, strlen(key), FNV0), paths);
    if (cfg->data.index_cache && !rebuild) {
        char why[2][MS_PATH_MAX + 128];
        for (int c = 0; c < 2 && !ix->from_cache; c++) {
            if (load_cache(ix, paths[c], key, &split_st, why[c], sizeof why[c])) {
                ix->from_cache = 1;
                ms_strf(ix->cache_path, sizeof ix->cache_path, "%s", paths[c]);
            } else {
                free_lists(ix);
            }
        }
        if (!ix->from_cache)
            ms_strf(ix->cache_note, sizeof ix->cache_note, "%s",
                     strcmp(why[0], "no cache") ? why[0] : why[1]);
    }
    if (ix->from_cache) {
        for (int i = 0; i < n_names; i++) free(names[i]);
        free(names);
    } else {
        ix->n_buildings = n_names;
        ix->building = names;
        ix->layout = ms_calloc((size_t)n_names * ix->n_domains, 1);
        /* dir_mtime: [n_buildings, n_domains] */
        int64_t *dir_mtime = ms_calloc((size_t)n_names * ix->n_domains, sizeof(int64_t));
        rc = walk(ix, dir_mtime, err);
        if (!rc && cfg->data.index_cache) {
            ms_io_err werr[2];
            for (int c = 0; c < 2; c++)
                if (!write_cache(ix, paths[c], key, &split_st, dir_mtime, &werr[c])) {
                    ms_strf(ix->cache_path, sizeof ix->cache_path, "%s", paths[c]);
                    break;
                } else if (c == 1) {
                    ms_strf(ix->cache_note, sizeof ix->cache_note, "index not cached: %s",
                             werr[0].msg);
                }
        }
        free(dir_mtime);
        if (rc) {
            free_lists(ix);
            return rc;
        }
    }
    if (ix->n == 0) {
        char dir[MS_PATH_MAX];
        dir_path(dir, sizeof dir, ix->root, "rgb", ix->building[0], MS_TX_OMNIDATA);
        int nb = ix->n_buildings;
        free_lists(ix);
        return ms_io_fail(err, MS_IO_OPEN,
                          "no rgb image found for the %d building%s of split '%s' (looked in "
                          "%s and %s/rgb/{building}; files are named "
                          "point_P_view_V_domain_rgb.png)",
                          nb, nb == 1 ? "" : "s", split, dir, ix->root);
    }
    return 0;
}
