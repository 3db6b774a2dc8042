/* PASCAL-Context multi-task samples (pascal_context.h has the layout and sources).
 *
 * Per sample, as the reference pipeline: the JPEG image; semseg labels 0..20 (255 ignore; other
 * values are ignored too); human parts from the 'anno' struct (person objects with parts, the
 * 6-part classes, 0 background; all 255 when the image has no person parts, AddIgnoreRegions);
 * saliency x/255 > 0.5; normals 2x/255-1, supervised only on the NYU-compatible context classes
 * of LabelMap; edges thin(|Laplacian(LabelMap)| > 0). Training applies flip (normals' x sign
 * changes), scale and rotation (normals' in-plane component rotates with the image), then every
 * map is resized to data.image_size: cubic for the image and normals (renormalised to unit
 * length, as FixedResize), nearest for labels. Deliberate differences from the reference,
 * which never matter for supervised pixels' values: pixels the rotation brings in from outside
 * the image are ignored (255 / invalid) rather than labelled background, the normals' valid
 * mask is carried by nearest resampling instead of "norm == 0 after cubic resampling", and the
 * image is clamped to [0, 255] before its uint8 truncation (the reference wraps around). */
#include <dirent.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/util.h"
#include "augment.h"
#include "dataset.h"
#include "matfile.h"
#include "pascal_context.h"

/* Which files of a sample exist. */
enum {
    F_JPEG = 1,
    F_SEMSEG_VOC = 2,
    F_SEMSEG_CTX = 4,
    F_PARTS = 8,
    F_NORMALS = 16,
    F_SAL = 32,
    F_LABELMAP = 64,
};

typedef enum { P_SEMSEG, P_PARTS, P_SAL, P_NORMALS, P_EDGE } pc_kind;

/* The folders listed by the index, their extension and flag. */
static const struct {
    const char *dir, *ext;
    int flag;
} folders[] = {
    {"JPEGImages", "jpg", F_JPEG},           {"semseg/VOC12", "png", F_SEMSEG_VOC},
    {"semseg/pascal-context", "png", F_SEMSEG_CTX}, {"human_parts", "mat", F_PARTS},
    {"normals_distill", "png", F_NORMALS},   {"sal_distill", "png", F_SAL},
    {"pascal-context/trainval", "mat", F_LABELMAP},
};
#define N_FOLDERS (int)(sizeof folders / sizeof folders[0])

typedef struct {
    ms_data base;
    char root[MS_PATH_MAX];
    char **id;     /* [n] image ids in split order */
    uint8_t *have; /* [n] F_* flags */
    pc_kind kind[MS_MAX_TASKS];
    int need_labelmap;
} pc_data;

typedef struct {
    ms_image im;
    ms_labelmap lm;
    ms_anno anno;
    ms_buf src, out, idx, lab, tmp;
} pc_scratch;

static const float MEAN[3] = {0.485f, 0.456f, 0.406f}, STD[3] = {0.229f, 0.224f, 0.225f};

static pc_kind kind_of(const char *name) {
    if (!strcmp(name, "semseg")) return P_SEMSEG;
    if (!strcmp(name, "human_parts")) return P_PARTS;
    if (!strcmp(name, "sal")) return P_SAL;
    if (!strcmp(name, "normals")) return P_NORMALS;
    return P_EDGE;
}

/* The flags a task needs (semseg: either of its two folders). */
static int task_has(pc_kind k, int have) {
    switch (k) {
    case P_SEMSEG: return (have & (F_SEMSEG_VOC | F_SEMSEG_CTX)) != 0;
    case P_PARTS: return (have & F_PARTS) != 0;
    case P_SAL: return (have & F_SAL) != 0;
    case P_NORMALS: return (have & (F_NORMALS | F_LABELMAP)) == (F_NORMALS | F_LABELMAP);
    default: return (have & F_LABELMAP) != 0;
    }
}

static void file_path(const pc_data *pc, int64_t i, int flag, char *buf, size_t cap) {
    for (int f = 0; f < N_FOLDERS; f++)
        if (folders[f].flag == flag) {
            ms_strf(buf, cap, "%s/%s/%s.%s", pc->root, folders[f].dir, pc->id[i], folders[f].ext);
            return;
        }
    MS_ASSERT(0);
}

/* The first missing file of task kind k for sample i (for messages). */
static int missing_flag(pc_kind k, int have) {
    switch (k) {
    case P_SEMSEG: return F_SEMSEG_CTX;
    case P_PARTS: return F_PARTS;
    case P_SAL: return F_SAL;
    case P_NORMALS: return (have & F_NORMALS) ? F_LABELMAP : F_NORMALS;
    default: return F_LABELMAP;
    }
}

/* ---- index ----------------------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted base names (extension removed) of the .ext files in dir; none when dir is absent. */
static int list_folder(const char *dir, const char *ext, char ***names, int64_t *n,
                       ms_io_err *err) {
    *names = NULL, *n = 0;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT || errno == ENOTDIR) return 0;
        return ms_io_fail(err, MS_IO_OPEN, "%s: cannot list (%s)", dir, strerror(errno));
    }
    int64_t cap = 0;
    struct dirent *e;
    size_t el = strlen(ext);
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len <= el + 1 || e->d_name[len - el - 1] != '.' || strcmp(e->d_name + len - el, ext))
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 1024;
            *names = realloc(*names, (size_t)cap * sizeof **names);
            MS_ASSERT(*names);
        }
        (*names)[(*n)++] = strndup(e->d_name, len - el - 1);
    }
    closedir(d);
    if (*n) qsort(*names, (size_t)*n, sizeof **names, cmp_str);
    return 0;
}

static int read_ids(const char *path, char ***ids, int64_t *n, ms_io_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return ms_io_fail(err, MS_IO_OPEN, "%s: cannot open the split list (%s)", path,
                          strerror(errno));
    int64_t cap = 1024;
    *ids = ms_malloc((size_t)cap * sizeof **ids);
    *n = 0;
    char line[1024];
    size_t len = 0;
    for (int c;;) {
        c = fgetc(f);
        /* a line ends at CR, LF or EOF; empty lines (CRLF's second half) are skipped */
        if (c == '\r' || c == '\n' || c == EOF) {
            while (len && (line[len - 1] == ' ' || line[len - 1] == '\t')) len--;
            line[len] = 0;
            char *s = line;
            while (*s == ' ' || *s == '\t') s++;
            if (*s) {
                if (*n == cap) *ids = realloc(*ids, (size_t)(cap *= 2) * sizeof **ids);
                MS_ASSERT(*ids);
                (*ids)[(*n)++] = strdup(s);
            }
            len = 0;
            if (c == EOF) break;
            continue;
        }
        if (len < sizeof line - 1) line[len++] = (char)c;
    }
    fclose(f);
    return 0;
}

static int build_index(pc_data *pc, const char *split, ms_io_err *err) {
    char path[MS_PATH_MAX];
    ms_strf(path, sizeof path, "%s/ImageSets/Context/%s.txt", pc->root, split);
    int64_t n = 0;
    int rc = read_ids(path, &pc->id, &n, err);
    if (rc) return rc;
    if (n == 0) return ms_io_fail(err, MS_IO_MISMATCH, "%s: lists no image", path);
    pc->base.n = n;
    pc->have = ms_calloc((size_t)n, 1);
    for (int f = 0; f < N_FOLDERS; f++) {
        char dir[MS_PATH_MAX], **names;
        int64_t count;
        ms_strf(dir, sizeof dir, "%s/%s", pc->root, folders[f].dir);
        if ((rc = list_folder(dir, folders[f].ext, &names, &count, err))) return rc;
        for (int64_t i = 0; i < n; i++)
            if (count && bsearch(&pc->id[i], names, (size_t)count, sizeof *names, cmp_str))
                pc->have[i] |= (uint8_t)folders[f].flag;
        for (int64_t j = 0; j < count; j++) free(names[j]);
        free(names);
    }
    return 0;
}

/* ---- reading a sample ------------------------------------------------------------------------ */

static void *scratch_new(ms_data *d) {
    (void)d;
    pc_scratch *s = ms_calloc(1, sizeof *s);
    ms_image_init(&s->im);
    ms_labelmap_init(&s->lm);
    return s;
}

static void scratch_free(void *p) {
    pc_scratch *s = p;
    if (!s) return;
    ms_image_free(&s->im);
    ms_labelmap_free(&s->lm);
    ms_anno_free(&s->anno);
    ms_buf *bufs[] = {&s->src, &s->out, &s->idx, &s->lab, &s->tmp};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) ms_buf_free(bufs[i]);
    free(s);
}

/* Human parts of the anno file at W0 x H0: lab [H0 * W0]. Returns 1 when a person with parts
 * was found, 0 when none (the image gets no supervision), negative on error. */
static int parts_map(const char *path, int W0, int H0, pc_scratch *s, uint8_t *lab,
                     ms_io_err *err) {
    ms_anno_free(&s->anno);
    int rc = ms_mat_read_anno(path, &s->anno, err);
    if (rc) return rc;
    const ms_anno *a = &s->anno;
    int any = 0;
    memset(lab, 0, (size_t)W0 * H0);
    for (int o = 0; o < a->n_objects; o++) {
        const ms_anno_object *ob = &a->objects[o];
        if (ob->class_id != MS_PASCAL_PERSON || ob->n_parts == 0) continue;
        if (a->width != W0 || a->height != H0)
            return ms_io_fail(err, MS_IO_MISMATCH, "%s: masks are %dx%d, the image %dx%d", path,
                              a->width, a->height, W0, H0);
        any = 1;
        for (int k = 0; k < ob->n_parts; k++) {
            int c = ms_pascal_part_class(ob->parts[k].name);
            if (!c)
                return ms_io_fail(err, MS_IO_CORRUPT,
                                  "%s: person part '%s' is not a PASCAL-Part person part name",
                                  path, ob->parts[k].name);
            const uint8_t *m = ob->parts[k].mask;
            for (size_t p = 0; p < (size_t)W0 * H0; p++)
                if (m[p]) lab[p] = (uint8_t)c;
        }
    }
    return any;
}

/* Normals of the file at W0 x H0 with the labelmap in s->lm: src [H0 * W0, 3], zero off the
 * valid classes; valid [H0 * W0]. */
static int normals_map(const char *path, int W0, int H0, pc_scratch *s, float *src,
                       uint8_t *valid, ms_io_err *err) {
    ms_img_want want = {.mode = MS_IMG_LABEL, .channels = 3, .depth = 8, .width = W0, .height = H0};
    int rc = ms_png_read(path, &want, &s->im, err);
    if (rc) return rc;
    const uint8_t *x = ms_image_u8(&s->im);
    for (size_t p = 0; p < (size_t)W0 * H0; p++) {
        valid[p] = (uint8_t)ms_pascal_normals_valid(s->lm.labels[p]);
        for (int c = 0; c < 3; c++)
            src[p * 3 + c] = valid[p] ? 2.0f * x[p * 3 + c] / 255.0f - 1.0f : 0.0f;
    }
    return 0;
}

static int read_labelmap(const pc_data *pc, int64_t i, int W0, int H0, pc_scratch *s,
                         ms_io_err *err) {
    char path[MS_PATH_MAX];
    file_path(pc, i, F_LABELMAP, path, sizeof path);
    return ms_mat_read_labelmap(path, NULL, H0, W0, &s->lm, err);
}

static int pc_read(ms_data *d, int64_t i, int train, uint64_t seed, int64_t epoch, void *scratch,
                   ms_batch *b, int slot, ms_io_err *err) {
    pc_data *pc = (pc_data *)d;
    pc_scratch *s = scratch;
    int S = d->size, have = pc->have[i];
    size_t P = (size_t)S * S;
    char path[MS_PATH_MAX];
    file_path(pc, i, F_JPEG, path, sizeof path);
    ms_img_want want = {.mode = MS_IMG_COLOR, .channels = 3};
    int rc = ms_jpeg_read(path, &want, &s->im, err);
    if (rc) return rc;
    int W0 = s->im.width, H0 = s->im.height;
    size_t n0 = (size_t)W0 * H0;
    ms_aug a;
    ms_aug_pascal(&a, seed, epoch, i, train && d->augment);
    ms_warp w;
    ms_warp_plan(&w, &a, W0, H0, S, S);

    /* src: [H0, W0, 3] float; out: [S, S, 3] float; idx: [S * S] source pixel of labels */
    float *src = ms_buf_get(&s->src, n0 * 3 * sizeof(float));
    float *out = ms_buf_get(&s->out, P * 3 * sizeof(float));
    int32_t *idx = ms_buf_get(&s->idx, P * sizeof(int32_t));
    for (size_t p = 0; p < n0 * 3; p++) src[p] = ms_image_u8(&s->im)[p];
    ms_warp_cubic(&w, src, 3, 0.0f, out);
    float *img = b->images + (size_t)slot * 3 * P; /* [3, S, S] */
    for (size_t p = 0; p < P; p++)
        for (int c = 0; c < 3; c++) {
            float v = out[p * 3 + c];
            v = floorf(v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v);
            img[c * P + p] = (v / 255.0f - MEAN[c]) / STD[c];
        }
    ms_warp_nearest(&w, idx);
    if (pc->need_labelmap && (rc = read_labelmap(pc, i, W0, H0, s, err))) return rc;

    /* lab: [H0 * W0] a label map at the source size */
    uint8_t *lab = ms_buf_get(&s->lab, n0);
    for (int t = 0; t < d->T; t++) {
        ms_target *g = &b->target[t];
        pc_kind k = pc->kind[t];
        if (!task_has(k, have)) {
            file_path(pc, i, missing_flag(k, have), path, sizeof path);
            return ms_io_fail(err, MS_IO_OPEN,
                              "%s: missing (no such file when the split was indexed)", path);
        }
        if (k == P_SEMSEG) {
            file_path(pc, i, (have & F_SEMSEG_VOC) ? F_SEMSEG_VOC : F_SEMSEG_CTX, path,
                      sizeof path);
            ms_img_want lw = {
                .mode = MS_IMG_LABEL, .channels = 1, .depth = 8, .width = W0, .height = H0};
            if ((rc = ms_png_read(path, &lw, &s->im, err))) return rc;
            const uint8_t *x = ms_image_u8(&s->im);
            int32_t *o = g->labels + (size_t)slot * P;
            for (size_t p = 0; p < P; p++) {
                int v = idx[p] < 0 ? MS_PASCAL_IGNORE : x[idx[p]];
                o[p] = v < d->task[t]->channels ? v : MS_PASCAL_IGNORE;
            }
        } else if (k == P_PARTS) {
            file_path(pc, i, F_PARTS, path, sizeof path);
            if ((rc = parts_map(path, W0, H0, s, lab, err)) < 0) return rc;
            int any = 0;
            int32_t *o = g->labels + (size_t)slot * P;
            for (size_t p = 0; p < P; p++) {
                o[p] = rc == 0 || idx[p] < 0 ? MS_PASCAL_IGNORE : lab[idx[p]];
                any |= o[p] >= 1 && o[p] <= MS_PASCAL_N_PARTS;
            }
            if (!any) /* AddIgnoreRegions: no part visible, no supervision */
                for (size_t p = 0; p < P; p++) o[p] = MS_PASCAL_IGNORE;
        } else if (k == P_SAL) {
            file_path(pc, i, F_SAL, path, sizeof path);
            ms_img_want lw = {
                .mode = MS_IMG_LABEL, .channels = 1, .depth = 8, .width = W0, .height = H0};
            if ((rc = ms_png_read(path, &lw, &s->im, err))) return rc;
            const uint8_t *x = ms_image_u8(&s->im);
            uint8_t *o = g->binary + (size_t)slot * P;
            for (size_t p = 0; p < P; p++) o[p] = idx[p] < 0 ? MS_PASCAL_IGNORE : x[idx[p]] > 127;
        } else if (k == P_NORMALS) {
            file_path(pc, i, F_NORMALS, path, sizeof path);
            if ((rc = normals_map(path, W0, H0, s, src, lab, err))) return rc;
            double th = a.angle * M_PI / 180.0, cs = cos(th), sn = sin(th);
            for (size_t p = 0; p < n0; p++) {
                float *v = src + p * 3;
                if (a.flip) v[0] = -v[0];
                float x0 = v[0], y0 = v[1];
                v[0] = (float)(x0 * cs + y0 * sn);
                v[1] = (float)(y0 * cs - x0 * sn);
            }
            ms_warp_cubic(&w, src, 3, 0.0f, out);
            float *o = g->dense + (size_t)slot * 3 * P;
            uint8_t *ok = g->valid + (size_t)slot * P;
            for (size_t p = 0; p < P; p++) {
                const float *v = out + p * 3;
                float len = sqrtf(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
                for (int c = 0; c < 3; c++) o[c * P + p] = v[c] / (len + FLT_EPSILON);
                /* AddIgnoreRegions also ignores a zero normal (a point the warp took outside) */
                ok[p] = idx[p] >= 0 && lab[idx[p]] && len > 1e-6f;
            }
        } else {
            uint8_t *tmp = ms_buf_get(&s->tmp, n0);
            ms_pascal_edges(s->lm.labels, H0, W0, lab, tmp);
            uint8_t *o = g->binary + (size_t)slot * P;
            for (size_t p = 0; p < P; p++) o[p] = idx[p] < 0 ? MS_PASCAL_IGNORE : lab[idx[p]];
        }
    }
    b->sample[slot] = i;
    return 0;
}

/* ---- data check ------------------------------------------------------------------------------ */

static int pc_check(ms_data *d, int64_t i, void *scratch, ms_task_stats *stats, ms_bad_file_fn bad,
                    void *ctx) {
    pc_data *pc = (pc_data *)d;
    pc_scratch *s = scratch;
    int have = pc->have[i], n_bad = 0;
    char path[MS_PATH_MAX];
    ms_io_err err;
    file_path(pc, i, F_JPEG, path, sizeof path);
    if (!(have & F_JPEG)) {
        ms_strf(err.msg, sizeof err.msg, "%s: missing", path);
        bad(ctx, err.msg);
        return 1;
    }
    ms_img_want want = {.mode = MS_IMG_COLOR, .channels = 3};
    if (ms_jpeg_read(path, &want, &s->im, &err)) {
        bad(ctx, err.msg);
        return 1;
    }
    int W0 = s->im.width, H0 = s->im.height;
    size_t n0 = (size_t)W0 * H0;
    int lm_ok = 0;
    if (pc->need_labelmap && (have & F_LABELMAP)) {
        if (read_labelmap(pc, i, W0, H0, s, &err)) bad(ctx, err.msg), n_bad++;
        else lm_ok = 1;
    }
    uint8_t *lab = ms_buf_get(&s->lab, n0);
    float *src = ms_buf_get(&s->src, n0 * 3 * sizeof(float));
    static const char *units[] = {"class", "part", "0/1", "unit", "0/1"};
    for (int t = 0; t < d->T; t++) {
        pc_kind k = pc->kind[t];
        ms_task_stats *st = &stats[t];
        st->units = units[k];
        if (!task_has(k, have)) continue;
        if ((k == P_NORMALS || k == P_EDGE) && !lm_ok) {
            st->unreadable++;
            continue;
        }
        int rc = 0;
        if (k == P_SEMSEG || k == P_SAL) {
            file_path(pc, i,
                      k == P_SAL              ? F_SAL
                      : (have & F_SEMSEG_VOC) ? F_SEMSEG_VOC
                                              : F_SEMSEG_CTX,
                      path, sizeof path);
            ms_img_want lw = {
                .mode = MS_IMG_LABEL, .channels = 1, .depth = 8, .width = W0, .height = H0};
            if (!(rc = ms_png_read(path, &lw, &s->im, &err)))
                for (size_t p = 0; p < n0; p++) {
                    int v = ms_image_u8(&s->im)[p];
                    if (k == P_SAL) ms_task_stats_widen(st, v > 127);
                    else if (v >= d->task[t]->channels) st->masked++;
                    else ms_task_stats_widen(st, v);
                }
        } else if (k == P_PARTS) {
            file_path(pc, i, F_PARTS, path, sizeof path);
            rc = parts_map(path, W0, H0, s, lab, &err);
            if (rc == 0) st->masked += (int64_t)n0;
            for (size_t p = 0; rc > 0 && p < n0; p++) ms_task_stats_widen(st, lab[p]);
            rc = rc < 0 ? rc : 0;
        } else if (k == P_NORMALS) {
            file_path(pc, i, F_NORMALS, path, sizeof path);
            if (!(rc = normals_map(path, W0, H0, s, src, lab, &err)))
                for (size_t p = 0; p < n0; p++) {
                    if (!lab[p]) st->masked++;
                    else for (int c = 0; c < 3; c++) ms_task_stats_widen(st, src[p * 3 + c]);
                }
        } else {
            uint8_t *tmp = ms_buf_get(&s->tmp, n0);
            ms_pascal_edges(s->lm.labels, H0, W0, lab, tmp);
            for (size_t p = 0; p < n0; p++) ms_task_stats_widen(st, lab[p]);
        }
        if (rc) {
            bad(ctx, err.msg);
            st->unreadable++, n_bad++;
            continue;
        }
        st->pixels += (int64_t)n0;
    }
    return n_bad;
}

/* ---- opening --------------------------------------------------------------------------------- */

static void pc_name(const ms_data *d, int64_t i, char *buf, size_t cap) {
    ms_strf(buf, cap, "%s", ((const pc_data *)d)->id[i]);
}

static int pc_missing(const ms_data *d, int64_t i, int t, char *path, size_t cap) {
    const pc_data *pc = (const pc_data *)d;
    int have = pc->have[i];
    if (task_has(pc->kind[t], have)) return 0;
    file_path(pc, i, missing_flag(pc->kind[t], have), path, cap);
    return 1;
}

static void pc_close(ms_data *d) {
    pc_data *pc = (pc_data *)d;
    for (int64_t i = 0; pc->id && i < d->n; i++) free(pc->id[i]);
    free(pc->id);
    free(pc->have);
    free(pc);
}

static const ms_data_ops pc_ops = {pc_read,    pc_check, scratch_new, scratch_free,
                                   pc_missing, pc_name,  pc_close};

/* data.on_missing: an error naming the first missing file, or dropping those samples. */
static int apply_on_missing(pc_data *pc, const ms_config *cfg, const char *split, ms_io_err *err) {
    ms_data *d = &pc->base;
    int64_t total = 0, no_image = 0;
    for (int64_t i = 0; i < d->n; i++) no_image += !(pc->have[i] & F_JPEG);
    for (int t = 0; t < d->T; t++) total += d->missing[t];
    if (!total && !no_image) return 0;
    char path[MS_PATH_MAX];
    if (cfg->data.on_missing == MS_ON_MISSING_ERROR) {
        for (int64_t i = 0; i < d->n; i++) {
            int flag = !(pc->have[i] & F_JPEG) ? F_JPEG : 0;
            for (int t = 0; t < d->T && !flag; t++)
                if (!task_has(pc->kind[t], pc->have[i]))
                    flag = missing_flag(pc->kind[t], pc->have[i]);
            if (!flag) continue;
            file_path(pc, i, flag, path, sizeof path);
            return ms_io_fail(err, MS_IO_OPEN,
                              "%s: missing; split '%s' misses %lld image%s and %lld task file%s "
                              "(`modsquad data check` lists them; data.on_missing: skip drops "
                              "those samples)",
                              path, split, (long long)no_image, no_image == 1 ? "" : "s",
                              (long long)total, total == 1 ? "" : "s");
        }
    }
    int64_t kept = 0;
    for (int64_t i = 0; i < d->n; i++) {
        int ok = (pc->have[i] & F_JPEG) != 0;
        for (int t = 0; t < d->T && ok; t++) ok = task_has(pc->kind[t], pc->have[i]);
        if (!ok) {
            free(pc->id[i]);
            continue;
        }
        pc->id[kept] = pc->id[i];
        pc->have[kept++] = pc->have[i];
    }
    d->n_skipped = d->n - kept;
    d->n = kept;
    if (!kept)
        return ms_io_fail(err, MS_IO_OPEN, "every image of split '%s' misses a file (root %s)",
                          split, pc->root);
    return 0;
}

int ms_pascal_open(ms_data **out, const ms_config *cfg, const char *split,
                   const ms_data_open_opts *opts, ms_io_err *err) {
    static const ms_data_open_opts none = {0};
    if (!opts) opts = &none;
    *out = NULL;
    pc_data *pc = ms_calloc(1, sizeof *pc);
    ms_data *d = &pc->base;
    d->ops = &pc_ops;
    d->kind = MS_DATASET_PASCAL_CONTEXT;
    ms_strf(d->split, sizeof d->split, "%s", split);
    d->size = cfg->data.image_size;
    d->augment = cfg->data.augment;
    ms_strf(pc->root, sizeof pc->root, "%s", cfg->data.root[0] ? cfg->data.root : ".");
    d->T = cfg->data.tasks.n;
    for (int t = 0; t < d->T; t++) {
        d->task[t] = ms_task_find(MS_DATASET_PASCAL_CONTEXT, cfg->data.tasks.name[t]);
        if (!d->task[t]) {
            pc_close(d);
            return ms_io_fail(err, MS_IO_ARG, "data.tasks: '%s' is not a PASCAL-Context task",
                              cfg->data.tasks.name[t]);
        }
        pc->kind[t] = kind_of(d->task[t]->name);
        pc->need_labelmap |= pc->kind[t] == P_NORMALS || pc->kind[t] == P_EDGE;
    }
    int rc = build_index(pc, split, err);
    if (rc) {
        pc_close(d);
        return rc;
    }
    d->n_listed = d->n;
    for (int64_t i = 0; i < d->n; i++)
        for (int t = 0; t < d->T; t++) {
            if (task_has(pc->kind[t], pc->have[i])) d->found[t]++;
            else d->missing[t]++;
        }
    if (!opts->report_only && (rc = apply_on_missing(pc, cfg, split, err))) {
        pc_close(d);
        return rc;
    }
    ms_strf(d->index_note, sizeof d->index_note, "index listed from %s", pc->root);
    *out = d;
    return 0;
}
