/* Taskonomy samples: decoding, value maps and invalid masks of DATASETS.md's table, written
 * into batch slots (the index is in taskonomy_index.c).
 *
 * Value maps (DATASETS.md; official Mod-Squad util/dataset_taskonomy.py for what the table
 * leaves open):
 *   rgb                   x/255*2-1 after PIL's bilinear resize (rounded to 8 bits, as PIL)
 *   depth_*               log(1+d)/log(2^16); invalid d >= 64500 (65535 = no geometry)
 *   normal                x/255*2-1; invalid exactly (128,128,128); flip negates x
 *   principal_curvature   (x - [123.572, 120.1]) / [31.922, 21.658] on channels 0-1;
 *                         invalid (0, 0)
 *   reshading             x/255 (3 channels; a grey file is replicated)
 *   edge_texture          clip to [0, 0.08*2^16], -> [-1, 1]
 *   edge_occlusion        [0, 0.00625*2^16] -> [-1, 1] unclipped, then Gaussian blur sigma 4
 *                         on the cropped target (scipy gaussian_filter, as the official code)
 *   keypoints2d / 3d      clip to [0, 0.005*2^16] / [0, 2^16], -> [-1, 1]
 *   segment_unsup2d / 25d x/255*2-1
 *   segment_semantic      labels 0..17, 0 = uncertain (ignored); other values are ignored too
 *   class_object / scene  softmax of the stored logits
 * Every task with depth_masked (model/tasks.h) is also invalid where depth is invalid; the mask
 * comes from a configured depth task, else from depth_zbuffer or depth_euclidean (read only
 * for the mask). Targets are resized with PIL's NEAREST, so no value mixes valid and invalid
 * pixels. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/util.h"
#include "augment.h"
#include "dataset.h"
#include "npy.h"
#include "taskonomy.h"


typedef enum {
    K_DEPTH,
    K_NORMAL,
    K_CURVATURE,
    K_RESHADING,
    K_EDGE_TEXTURE,
    K_EDGE_OCCLUSION,
    K_KEYPOINTS2D,
    K_KEYPOINTS3D,
    K_SEGMENT_UNSUP,
    K_SEGMENT_SEMANTIC,
    K_CLASS,
} tx_kind;

/* How each kind is stored on disk: channels (0 = 1 or 3) and bits. */
static const struct {
    int channels, depth;
    const char *units;
} kinds[] = {
    [K_DEPTH] = {1, 16, "m"},
    [K_NORMAL] = {3, 8, "unit"},
    [K_CURVATURE] = {3, 8, "std"},
    [K_RESHADING] = {0, 8, "[0,1]"},
    [K_EDGE_TEXTURE] = {1, 16, "raw"},
    [K_EDGE_OCCLUSION] = {1, 16, "raw"},
    [K_KEYPOINTS2D] = {1, 16, "raw"},
    [K_KEYPOINTS3D] = {1, 16, "raw"},
    [K_SEGMENT_UNSUP] = {1, 8, "id"},
    [K_SEGMENT_SEMANTIC] = {1, 8, "class"},
    [K_CLASS] = {0, 0, "logit"},
};

static tx_kind kind_of(const char *name) {
    if (!strncmp(name, "depth_", 6)) return K_DEPTH;
    if (!strcmp(name, "normal")) return K_NORMAL;
    if (!strcmp(name, "principal_curvature")) return K_CURVATURE;
    if (!strcmp(name, "reshading")) return K_RESHADING;
    if (!strcmp(name, "edge_texture")) return K_EDGE_TEXTURE;
    if (!strcmp(name, "edge_occlusion")) return K_EDGE_OCCLUSION;
    if (!strcmp(name, "keypoints2d")) return K_KEYPOINTS2D;
    if (!strcmp(name, "keypoints3d")) return K_KEYPOINTS3D;
    if (!strncmp(name, "segment_unsup", 13)) return K_SEGMENT_UNSUP;
    if (!strcmp(name, "segment_semantic")) return K_SEGMENT_SEMANTIC;
    return K_CLASS;
}

typedef struct {
    ms_data base;
    ms_tx_index ix;
    tx_kind kind[MS_MAX_TASKS];
    int resize; /* data.resize */
} tx_data;

/* One worker's buffers, reused for every sample. */
typedef struct {
    ms_image im;
    ms_npy npy;
    ms_buf pil, blur, raw, mask_raw, mapped, mask, valid;
    int32_t *xi, *yi; /* [S] nearest source column / row */
} tx_scratch;

static void *scratch_new(ms_data *d) {
    tx_scratch *s = ms_calloc(1, sizeof *s);
    ms_image_init(&s->im);
    ms_npy_init(&s->npy);
    s->xi = ms_malloc((size_t)d->size * sizeof(int32_t));
    s->yi = ms_malloc((size_t)d->size * sizeof(int32_t));
    return s;
}

static void scratch_free(void *p) {
    tx_scratch *s = p;
    if (!s) return;
    ms_image_free(&s->im);
    ms_npy_free(&s->npy);
    ms_buf *bufs[] = {&s->pil, &s->blur, &s->raw, &s->mask_raw, &s->mapped, &s->mask, &s->valid};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) ms_buf_free(bufs[i]);
    free(s->xi);
    free(s->yi);
    free(s);
}

/* Decodes a dense label file of `kind`, W0 x H0 like the rgb, into s->im. */
static int decode(const char *path, tx_kind kind, int W0, int H0, tx_scratch *s, ms_io_err *err) {
    ms_img_want want = {.mode = MS_IMG_LABEL, .channels = kinds[kind].channels,
                        .depth = kinds[kind].depth, .width = W0, .height = H0};
    int rc = ms_png_read(path, &want, &s->im, err);
    if (!rc && kind == K_RESHADING && s->im.channels != 1 && s->im.channels != 3)
        rc = ms_io_fail(err, MS_IO_MISMATCH, "%s: %d channels, expected 1 (grey) or 3 (RGB)", path,
                        s->im.channels);
    return rc;
}

/* Maps n raw samples (HWC, as decoded) of `kind` to the target: dense [C, stride] and valid
 * [n] (1 = supervised). mask [n] (1 = depth invalid) may be NULL. flip: the pixels were
 * mirrored, so normals' x component changes sign. */
static void map_dense(tx_kind kind, const ms_image *im, const void *raw, size_t n,
                      const uint8_t *mask, int flip, float *dense, size_t stride, uint8_t *valid) {
    const uint8_t *u8 = raw;
    const uint16_t *u16 = raw;
    for (size_t p = 0; p < n; p++) {
        int ok = !mask || !mask[p];
        switch (kind) {
        case K_DEPTH:
            dense[p] = (float)(log1p((double)u16[p]) / log(65536.0));
            ok = ok && u16[p] < MS_TX_DEPTH_INVALID;
            break;
        case K_NORMAL: {
            const uint8_t *x = u8 + 3 * p;
            for (int c = 0; c < 3; c++) dense[c * stride + p] = x[c] / 255.0f * 2.0f - 1.0f;
            if (flip) dense[p] = -dense[p];
            ok = ok && !(x[0] == 128 && x[1] == 128 && x[2] == 128);
            break;
        }
        case K_CURVATURE: {
            const uint8_t *x = u8 + 3 * p;
            dense[p] = (float)((x[0] - ms_tx_curv_mean[0]) / ms_tx_curv_std[0]);
            dense[stride + p] = (float)((x[1] - ms_tx_curv_mean[1]) / ms_tx_curv_std[1]);
            ok = ok && !(x[0] == 0 && x[1] == 0);
            break;
        }
        case K_RESHADING:
            for (int c = 0; c < 3; c++)
                dense[c * stride + p] = u8[p * im->channels + (im->channels == 3 ? c : 0)] / 255.0f;
            break;
        case K_EDGE_TEXTURE: {
            double top = 0.08 * 65536.0, v = u16[p] < top ? u16[p] : top;
            dense[p] = (float)(v / top * 2.0 - 1.0);
            valid[p] = 1;
            continue;
        }
        case K_EDGE_OCCLUSION:
            dense[p] = (float)(u16[p] / (0.00625 * 65536.0) * 2.0 - 1.0);
            break;
        case K_KEYPOINTS2D: {
            double top = 0.005 * 65536.0, v = u16[p] < top ? u16[p] : top;
            dense[p] = (float)(v / top * 2.0 - 1.0);
            valid[p] = 1;
            continue;
        }
        case K_KEYPOINTS3D:
            dense[p] = (float)(u16[p] / 65536.0 * 2.0 - 1.0);
            break;
        case K_SEGMENT_UNSUP:
            dense[p] = u8[p] / 255.0f * 2.0f - 1.0f;
            valid[p] = 1;
            continue;
        default: MS_ASSERT(0);
        }
        valid[p] = (uint8_t)ok;
    }
}

/* Softmax of the stored logits (double, max subtracted), the soft class target. */
static void softmax(const float *x, int C, float *out) {
    double mx = x[0], sum = 0.0;
    for (int c = 1; c < C; c++) mx = x[c] > mx ? x[c] : mx;
    for (int c = 0; c < C; c++) sum += exp((double)x[c] - mx);
    for (int c = 0; c < C; c++) out[c] = (float)(exp((double)x[c] - mx) / sum);
}

static const ms_tx_sample *sample_of(const tx_data *tx, int64_t i) { return &tx->ix.sample[i]; }

/* The depth domain that gives sample i's mask, or -1. */
static int mask_source(const tx_data *tx, int64_t i) {
    for (int m = 0; m < 2; m++) {
        int k = tx->ix.mask_domain[m];
        if (k >= 0 && (sample_of(tx, i)->have >> k & 1)) return k;
    }
    return -1;
}

static int missing_error(const tx_data *tx, int64_t i, int k, ms_io_err *err) {
    char path[MS_PATH_MAX];
    ms_tx_path(&tx->ix, i, k, path, sizeof path);
    return ms_io_fail(err, MS_IO_OPEN, "%s: missing (no such file when the split was indexed)",
                      path);
}

static int tx_read(ms_data *d, int64_t i, int train, uint64_t seed, int64_t epoch, void *scratch,
                   ms_batch *b, int slot, ms_io_err *err) {
    tx_data *tx = (tx_data *)d;
    tx_scratch *s = scratch;
    const ms_tx_sample *smp = sample_of(tx, i);
    int S = d->size;
    size_t P = (size_t)S * S;
    char path[MS_PATH_MAX];
    ms_aug a;
    ms_aug_taskonomy(&a, seed, epoch, i, tx->resize, S, train && d->augment);

    ms_tx_path(&tx->ix, i, 0, path, sizeof path);
    ms_img_want want = {.mode = MS_IMG_COLOR, .channels = 3};
    int rc = ms_png_read(path, &want, &s->im, err);
    if (rc) return rc;
    int W0 = s->im.width, H0 = s->im.height;
    /* rgb8: [S, S, 3] */
    uint8_t *rgb8 = ms_buf_get(&s->raw, P * 3);
    ms_resize_bilinear_crop_u8(ms_image_u8(&s->im), W0, H0, 3, tx->resize, a.crop_x, a.crop_y, S,
                               a.flip, rgb8, &s->pil);
    float *img = b->images + (size_t)slot * 3 * P; /* [3, S, S] */
    for (size_t p = 0; p < P; p++)
        for (int c = 0; c < 3; c++) img[c * P + p] = rgb8[p * 3 + c] / 255.0f * 2.0f - 1.0f;
    ms_nearest_axis(W0, tx->resize, a.crop_x, S, a.flip, s->xi);
    ms_nearest_axis(H0, tx->resize, a.crop_y, S, 0, s->yi);

    /* mask: [S, S], 1 where depth is invalid; mask_raw keeps the gathered depth samples */
    uint8_t *mask = NULL;
    uint16_t *mask_raw = NULL;
    int mk = tx->ix.mask_domain[0] >= 0 ? mask_source(tx, i) : -1;
    if (mk >= 0) {
        ms_tx_path(&tx->ix, i, mk, path, sizeof path);
        if ((rc = decode(path, K_DEPTH, W0, H0, s, err))) return rc;
        mask_raw = ms_buf_get(&s->mask_raw, P * sizeof(uint16_t));
        ms_gather(s->im.data, W0, 1, 2, s->xi, s->yi, S, mask_raw);
        mask = ms_buf_get(&s->mask, P);
        for (size_t p = 0; p < P; p++) mask[p] = mask_raw[p] >= MS_TX_DEPTH_INVALID;
    }

    for (int t = 0; t < d->T; t++) {
        int k = t + 1; /* index domains: rgb, then the tasks in order */
        const ms_task_def *def = d->task[t];
        ms_target *g = &b->target[t];
        if (!(smp->have >> k & 1)) return missing_error(tx, i, k, err);
        ms_tx_path(&tx->ix, i, k, path, sizeof path);
        tx_kind kind = tx->kind[t];
        if (kind == K_CLASS) {
            if ((rc = ms_npy_read(path, (size_t)def->channels, &s->npy, err))) return rc;
            softmax(s->npy.data, def->channels, g->vector + (size_t)slot * def->channels);
            continue;
        }
        const void *raw;
        if (k == mk) {
            raw = mask_raw;
        } else {
            if ((rc = decode(path, kind, W0, H0, s, err))) return rc;
            int C = s->im.channels, bytes = s->im.depth / 8;
            void *gathered = ms_buf_get(&s->raw, P * C * bytes);
            ms_gather(s->im.data, W0, C, bytes, s->xi, s->yi, S, gathered);
            raw = gathered;
        }
        if (kind == K_SEGMENT_SEMANTIC) {
            const uint8_t *u8 = raw;
            int32_t *lab = g->labels + (size_t)slot * P;
            for (size_t p = 0; p < P; p++)
                lab[p] = u8[p] < def->channels ? u8[p] : def->ignore_index;
            continue;
        }
        float *dense = g->dense + (size_t)slot * def->channels * P;
        uint8_t *valid = g->valid + (size_t)slot * P;
        map_dense(kind, &s->im, raw, P, def->depth_masked ? mask : NULL, a.flip, dense, P, valid);
        if (kind == K_EDGE_OCCLUSION) ms_gaussian_blur(dense, S, S, 4.0, &s->blur);
    }
    b->sample[slot] = i;
    return 0;
}

/* ---- data check ------------------------------------------------------------------------------ */

/* Physical value of pixel p of channel c (depth in metres, the rest as the units say). */
static double physical(tx_kind kind, const ms_image *im, size_t p, int c, const float *mapped,
                       size_t stride) {
    switch (kind) {
    case K_DEPTH: return ms_image_u16(im)[p] / 512.0;
    case K_EDGE_TEXTURE:
    case K_EDGE_OCCLUSION:
    case K_KEYPOINTS2D:
    case K_KEYPOINTS3D: return ms_image_u16(im)[p];
    case K_SEGMENT_UNSUP: return ms_image_u8(im)[p];
    default: return mapped[c * stride + p];
    }
}

static int tx_check(ms_data *d, int64_t i, void *scratch, ms_task_stats *stats, ms_bad_file_fn bad,
                    void *ctx) {
    tx_data *tx = (tx_data *)d;
    tx_scratch *s = scratch;
    const ms_tx_sample *smp = sample_of(tx, i);
    char path[MS_PATH_MAX];
    ms_io_err err;
    int n_bad = 0;
    ms_tx_path(&tx->ix, i, 0, path, sizeof path);
    ms_img_want want = {.mode = MS_IMG_COLOR, .channels = 3};
    if (ms_png_read(path, &want, &s->im, &err)) {
        bad(ctx, err.msg);
        return 1; /* without the rgb there is no size to check the labels against */
    }
    int W0 = s->im.width, H0 = s->im.height;
    size_t n = (size_t)W0 * H0;
    uint8_t *mask = NULL; /* [H0, W0] */
    int mk = tx->ix.mask_domain[0] >= 0 ? mask_source(tx, i) : -1, mask_bad = 0;
    if (mk >= 0) {
        ms_tx_path(&tx->ix, i, mk, path, sizeof path);
        if (decode(path, K_DEPTH, W0, H0, s, &err)) {
            bad(ctx, err.msg);
            n_bad++, mask_bad = 1;
        } else {
            mask = ms_buf_get(&s->mask, n);
            for (size_t p = 0; p < n; p++) mask[p] = ms_image_u16(&s->im)[p] >= MS_TX_DEPTH_INVALID;
        }
    }
    for (int t = 0; t < d->T; t++) {
        int k = t + 1;
        const ms_task_def *def = d->task[t];
        ms_task_stats *st = &stats[t];
        st->units = kinds[tx->kind[t]].units;
        if (!(smp->have >> k & 1)) continue;
        if (k == mk && mask_bad) { /* reported above */
            st->unreadable++;
            continue;
        }
        ms_tx_path(&tx->ix, i, k, path, sizeof path);
        if (tx->kind[t] == K_CLASS) {
            if (ms_npy_read(path, (size_t)def->channels, &s->npy, &err)) {
                bad(ctx, err.msg);
                st->unreadable++, n_bad++;
                continue;
            }
            for (int c = 0; c < def->channels; c++) ms_task_stats_widen(st, s->npy.data[c]);
            continue;
        }
        if (decode(path, tx->kind[t], W0, H0, s, &err)) {
            bad(ctx, err.msg);
            st->unreadable++, n_bad++;
            continue;
        }
        st->pixels += (int64_t)n;
        if (tx->kind[t] == K_SEGMENT_SEMANTIC) {
            for (size_t p = 0; p < n; p++) {
                int v = ms_image_u8(&s->im)[p];
                if (v == def->ignore_index || v >= def->channels) st->masked++;
                else ms_task_stats_widen(st, v);
            }
            continue;
        }
        float *mapped = ms_buf_get(&s->mapped, n * def->channels * sizeof(float));
        uint8_t *valid = ms_buf_get(&s->valid, n);
        map_dense(tx->kind[t], &s->im, s->im.data, n, def->depth_masked ? mask : NULL, 0, mapped, n,
                  valid);
        int C = tx->kind[t] == K_CURVATURE ? 2 : tx->kind[t] == K_DEPTH ? 1 : def->channels;
        for (size_t p = 0; p < n; p++) {
            if (!valid[p]) {
                st->masked++;
                continue;
            }
            for (int c = 0; c < C; c++) ms_task_stats_widen(st, physical(tx->kind[t], &s->im, p, c, mapped, n));
        }
    }
    return n_bad;
}

/* ---- opening --------------------------------------------------------------------------------- */

static void tx_name(const ms_data *d, int64_t i, char *buf, size_t cap) {
    const tx_data *tx = (const tx_data *)d;
    const ms_tx_sample *s = sample_of(tx, i);
    ms_strf(buf, cap, "%s/point_%d_view_%d", tx->ix.building[s->building], s->point, s->view);
}

static int tx_missing(const ms_data *d, int64_t i, int t, char *path, size_t cap) {
    const tx_data *tx = (const tx_data *)d;
    if (sample_of(tx, i)->have >> (t + 1) & 1) return 0;
    ms_tx_path(&tx->ix, i, t + 1, path, cap);
    return 1;
}

static void tx_close(ms_data *d) {
    tx_data *tx = (tx_data *)d;
    ms_tx_index_free(&tx->ix);
    free(tx);
}

static const ms_data_ops tx_ops = {tx_read,      tx_check, scratch_new, scratch_free,
                                   tx_missing,   tx_name,  tx_close};

/* Applies data.on_missing: an error naming the first missing file, or dropping the samples. */
static int apply_on_missing(tx_data *tx, const ms_config *cfg, const char *split, ms_io_err *err) {
    ms_data *d = &tx->base;
    uint32_t need = 0;
    int64_t total = 0;
    for (int t = 0; t < d->T; t++) need |= 1u << (t + 1), total += d->missing[t];
    if (!total) return 0;
    if (cfg->data.on_missing == MS_ON_MISSING_ERROR) {
        for (int64_t i = 0; i < tx->ix.n; i++)
            for (int t = 0; t < d->T; t++)
                if (!(tx->ix.sample[i].have >> (t + 1) & 1)) {
                    char path[MS_PATH_MAX];
                    ms_tx_path(&tx->ix, i, t + 1, path, sizeof path);
                    return ms_io_fail(err, MS_IO_OPEN,
                                      "%s: missing; %lld task file%s of split '%s' are missing "
                                      "(`modsquad data check` lists them; data.on_missing: skip "
                                      "drops those samples)",
                                      path, (long long)total, total == 1 ? "" : "s", split);
                }
    }
    int64_t kept = 0;
    for (int64_t i = 0; i < tx->ix.n; i++)
        if ((tx->ix.sample[i].have & need) == need) tx->ix.sample[kept++] = tx->ix.sample[i];
    d->n_skipped = tx->ix.n - kept;
    tx->ix.n = kept;
    if (!kept)
        return ms_io_fail(err, MS_IO_OPEN,
                          "every sample of split '%s' misses a task file (root %s)", split,
                          tx->ix.root);
    return 0;
}

int ms_taskonomy_open(ms_data **out, const ms_config *cfg, const char *split,
                      const ms_data_open_opts *opts, ms_io_err *err) {
    static const ms_data_open_opts none = {0};
    if (!opts) opts = &none;
    *out = NULL;
    if (cfg->data.resize < cfg->data.image_size)
        return ms_io_fail(err, MS_IO_ARG,
                          "data.resize (%d) must be at least data.image_size (%d): images are "
                          "resized, then cropped",
                          cfg->data.resize, cfg->data.image_size);
    tx_data *tx = ms_calloc(1, sizeof *tx);
    ms_data *d = &tx->base;
    d->ops = &tx_ops;
    d->kind = MS_DATASET_TASKONOMY;
    ms_strf(d->split, sizeof d->split, "%s", split);
    d->size = cfg->data.image_size;
    d->augment = cfg->data.augment;
    tx->resize = cfg->data.resize;
    d->T = cfg->data.tasks.n;
    for (int t = 0; t < d->T; t++) {
        d->task[t] = ms_task_find(MS_DATASET_TASKONOMY, cfg->data.tasks.name[t]);
        if (!d->task[t]) {
            free(tx);
            return ms_io_fail(err, MS_IO_ARG, "data.tasks: '%s' is not a Taskonomy task",
                              cfg->data.tasks.name[t]);
        }
        tx->kind[t] = kind_of(d->task[t]->name);
    }
    int rc = ms_tx_index_build(&tx->ix, cfg, split, opts->rebuild, err);
    if (rc) {
        free(tx);
        return rc;
    }
    d->n_listed = tx->ix.n;
    for (int64_t i = 0; i < tx->ix.n; i++)
        for (int t = 0; t < d->T; t++) {
            if (tx->ix.sample[i].have >> (t + 1) & 1) d->found[t]++;
            else d->missing[t]++;
        }
    if (!opts->report_only && (rc = apply_on_missing(tx, cfg, split, err))) {
        tx_close(d);
        return rc;
    }
    d->n = tx->ix.n;
    if (tx->ix.mask_domain[0] >= 0)
        for (int64_t i = 0; i < d->n; i++) d->no_mask += mask_source(tx, i) < 0;
    if (tx->ix.from_cache)
        ms_strf(d->index_note, sizeof d->index_note, "index read from %s", tx->ix.cache_path);
    else if (tx->ix.cache_path[0])
        ms_strf(d->index_note, sizeof d->index_note, "index listed and cached in %s",
                tx->ix.cache_path);
    else
        ms_strf(d->index_note, sizeof d->index_note, "index listed (%s)",
                tx->ix.cache_note[0] ? tx->ix.cache_note : "data.index_cache is off");
    *out = d;
    return 0;
}
