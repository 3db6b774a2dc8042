/* Saved predictions (predictions.h): each task's prediction, in the target space its loader
 * decodes to (data/taskonomy.c, data/pascal_context.c), encoded back into the file format of
 * DATASETS.md. Every encoder below is the inverse of the loader's decoding for that task,
 * rounded to the nearest file value and clamped to what the file can hold. Where the decoding
 * loses information on purpose (a threshold, an argmax, a blur), the file holds the richer
 * value and the table says what the loader makes of it. */
#include "predictions.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../data/image.h"
#include "../data/npy.h"
#include "../data/taskonomy.h"
#include "../kernels/util.h"
#include "../model/metrics_internal.h" /* ms_sigmoid: saved probabilities are the metrics' own */
#include "../model/tasks.h"

#define SOFT_TARGET_FLOOR 1e-30       /* probability of a class the projection zeroes */
#define SOFT_TARGET_RANGE 1e6         /* |x| beyond this (or NaN) is clamped first */

typedef enum {
    ENC_DEPTH,       /* 16-bit d = round(e^(x ln 2^16) - 1), clamped to [0, (MS_TX_DEPTH_INVALID - 1)] */
    ENC_SIGNED8,     /* 8-bit round((x + 1) / 2 * 255) per channel */
    ENC_NORMAL8,     /* ENC_SIGNED8 of 3 channels, never the invalid marker (128, 128, 128) */
    ENC_UNIT_VECTOR8,/* x / (|x| + 1e-12) over the channels, then ENC_SIGNED8 */
    ENC_CURVATURE,   /* 8-bit round(x * std + mean) on channels 0-1, 0 on 2, never (0, 0) */
    ENC_UNIT8,       /* 8-bit round(x * 255) per channel */
    ENC_RANGE16,     /* 16-bit round((x + 1) / 2 * top) */
    ENC_ARGMAX8,     /* 8-bit index of the largest channel (the first on ties, as the metric) */
    ENC_SIGMOID8,    /* 8-bit round(255 sigmoid(x)) */
    ENC_SOFT_TARGET, /* .npy float32 [C]: ln q, q = x projected onto the probability simplex */
} enc_kind;

typedef struct {
    const char *task;
    enc_kind kind;
    double top;         /* ENC_RANGE16: the file value that reads as +1 */
    const char *readme; /* the file and what the loader reads back, for README.txt */
} enc_def;


static const enc_def taskonomy_encodings[] = {
    {"depth_euclidean", ENC_DEPTH, 0,
     "16-bit grey PNG, 1/512 m: round(exp(x ln 2^16) - 1) clamped to [0, 64499] (always valid)"},
    {"depth_zbuffer", ENC_DEPTH, 0,
     "16-bit grey PNG, 1/512 m: round(exp(x ln 2^16) - 1) clamped to [0, 64499] (always valid)"},
    {"normal", ENC_NORMAL8, 0,
     "8-bit RGB PNG: round((x + 1) / 2 * 255) per channel, not normalised (the L1 metric reads "
     "x as it is); a pixel that would be the invalid (128,128,128) has its last channel moved "
     "one step"},
    {"principal_curvature", ENC_CURVATURE, 0,
     "8-bit RGB PNG: round(x * [31.922, 21.658] + [123.572, 120.1]) on channels 0-1, channel 2 "
     "= 0; a pixel that would be the invalid (0,0) gets channel 1 = 1"},
    {"reshading", ENC_UNIT8, 0, "8-bit RGB PNG: round(x * 255) per channel"},
    {"edge_texture", ENC_RANGE16, 0.08 * 65536.0,
     "16-bit grey PNG: round((x + 1) / 2 * 0.08 * 2^16) (the loader clips x to [-1, 1])"},
    {"edge_occlusion", ENC_RANGE16, 0.00625 * 65536.0,
     "16-bit grey PNG: round((x + 1) / 2 * 0.00625 * 2^16); the loader blurs what it reads "
     "(sigma 4), so it reads back the blurred prediction"},
    {"keypoints2d", ENC_RANGE16, 0.005 * 65536.0,
     "16-bit grey PNG: round((x + 1) / 2 * 0.005 * 2^16) (the loader clips x to [-1, 1])"},
    {"keypoints3d", ENC_RANGE16, 65536.0, "16-bit grey PNG: round((x + 1) / 2 * 2^16)"},
    {"segment_unsup2d", ENC_SIGNED8, 0, "8-bit grey PNG: round((x + 1) / 2 * 255)"},
    {"segment_unsup25d", ENC_SIGNED8, 0, "8-bit grey PNG: round((x + 1) / 2 * 255)"},
    {"segment_semantic", ENC_ARGMAX8, 0,
     "8-bit grey PNG of labels: argmax over the 18 channels (0 uncertain, 1 background, 2..17)"},
    {"class_object", ENC_SOFT_TARGET, 0,
     ".npy float32 [1000] logits (the dataset's format): ln q, q = x projected onto the "
     "probability simplex (ln 1e-30 where q = 0), so the loader's softmax gives back q"},
    {"class_scene", ENC_SOFT_TARGET, 0,
     ".npy float32 [365] logits (the dataset's format): ln q, q = x projected onto the "
     "probability simplex (ln 1e-30 where q = 0), so the loader's softmax gives back q"},
};

static const enc_def pascal_encodings[] = {
    {"semseg", ENC_ARGMAX8, 0, "8-bit grey PNG of labels: argmax over the 21 classes"},
    {"human_parts", ENC_ARGMAX8, 0,
     "8-bit grey PNG of labels: argmax over background + 6 parts (the dataset holds .mat "
     "annotations; a label map is what they decode to)"},
    {"sal", ENC_SIGMOID8, 0,
     "8-bit grey PNG: round(255 sigmoid(x)); the loader reads > 127 as salient"},
    {"normals", ENC_UNIT_VECTOR8, 0,
     "8-bit RGB PNG: round((n + 1) / 2 * 255), n = x / |x| (normalised, as the loss and metric)"},
    {"edge", ENC_SIGMOID8, 0,
     "8-bit grey PNG: round(255 sigmoid(x)), the edge probability (the dataset derives edges "
     "from LabelMap .mat files; there is no edge file to imitate)"},
};

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const enc_def *encoding_of(ms_dataset dataset, const char *task) {
    const enc_def *table = dataset == MS_DATASET_TASKONOMY ? taskonomy_encodings : pascal_encodings;
    int n = dataset == MS_DATASET_TASKONOMY ? COUNT(taskonomy_encodings) : COUNT(pascal_encodings);
    for (int i = 0; i < n; i++)
        if (!strcmp(table[i].task, task)) return &table[i];
    return NULL;
}

struct ms_pred_writer {
    char dir[MS_PATH_MAX];
    const ms_data *d;
    ms_dataset dataset;
    int T;
    const ms_task_def *def[MS_MAX_TASKS];    /* [T] */
    const enc_def *enc[MS_MAX_TASKS];        /* [T] */
    const ms_tx_domain *domain[MS_MAX_TASKS]; /* [T] Taskonomy file names and extensions */
    char made[MS_MAX_TASKS][MS_PATH_MAX];    /* [T] the directory last created for the task */
    void *samples;                           /* [P, 3] file samples of one image (16-bit max) */
    size_t samples_cap;                      /* bytes */
    double *sorted;                          /* [2, C] classification: the values sorted
                                                descending, then in class order */
    float *logits;                           /* [C] */
    int max_classes;
    int64_t files;
};

/* ---- encoders -------------------------------------------------------------------------------- */

/* The nearest integer to v in [0, hi]; NaN gives 0. */
static unsigned quant(double v, unsigned hi) {
    if (!(v > 0.0)) return 0;
    if (v >= hi) return hi;
    return (unsigned)lround(v);
}

/* First index of the largest of x[c * P], c < C (torch.argmax, as the metrics take it). */
static int argmax_strided(const float *x, int C, size_t P) {
    int best = 0;
    for (int c = 1; c < C; c++)
        if (x[c * P] > x[best * P]) best = c;
    return best;
}

/* Encodes one image's prediction x [C, P] into w->samples and describes them in *im. */
static void encode_dense(ms_pred_writer *w, const enc_def *e, const float *x, int C, int H,
                         int W, ms_image *im) {
    const size_t P = (size_t)H * W;
    int channels = 1, depth = 8;
    switch (e->kind) {
    case ENC_DEPTH: case ENC_RANGE16: depth = 16; break;
    case ENC_NORMAL8: case ENC_UNIT_VECTOR8: case ENC_CURVATURE: case ENC_UNIT8: channels = 3; break;
    case ENC_SIGNED8: channels = C; break;
    default: break;
    }
    MS_ASSERT(channels == 1 || channels == 3);
    size_t bytes = P * channels * (depth / 8);
    if (bytes > w->samples_cap) {
        free(w->samples);
        w->samples = ms_malloc(bytes);
        w->samples_cap = bytes;
    }
    uint8_t *u8 = w->samples;   /* [P, channels] */
    uint16_t *u16 = w->samples; /* [P] */
    for (size_t p = 0; p < P; p++) {
        switch (e->kind) {
        case ENC_DEPTH:
            u16[p] = (uint16_t)quant(expm1((double)x[p] * MS_TX_LN_2_16), (MS_TX_DEPTH_INVALID - 1));
            break;
        case ENC_RANGE16:
            u16[p] = (uint16_t)quant(((double)x[p] + 1.0) * 0.5 * e->top, 65535);
            break;
        case ENC_SIGNED8:
        case ENC_NORMAL8:
        case ENC_UNIT_VECTOR8: {
            double v[3], len = 0.0;
            for (int c = 0; c < channels; c++) v[c] = x[c * P + p], len += v[c] * v[c];
            double scale = e->kind == ENC_UNIT_VECTOR8 ? 1.0 / (sqrt(len) + 1e-12) : 1.0;
            uint8_t *o = u8 + p * channels;
            for (int c = 0; c < channels; c++)
                o[c] = (uint8_t)quant((v[c] * scale + 1.0) * 127.5, 255);
            /* (128, 128, 128) reads as "no normal": step the last channel to the side it
               was nearer, one file step away from the prediction */
            if (e->kind == ENC_NORMAL8 && o[0] == 128 && o[1] == 128 && o[2] == 128)
                o[2] = (v[2] + 1.0) * 127.5 < 128.0 ? 127 : 129;
            break;
        }
        case ENC_CURVATURE: {
            uint8_t *o = u8 + p * 3;
            for (int c = 0; c < 2; c++)
                o[c] = (uint8_t)quant(x[c * P + p] * ms_tx_curv_std[c] + ms_tx_curv_mean[c], 255);
            o[2] = 0;
            if (o[0] == 0 && o[1] == 0) o[1] = 1; /* (0, 0) reads as "no curvature" */
            break;
        }
        case ENC_UNIT8:
            for (int c = 0; c < 3; c++)
                u8[p * 3 + c] = (uint8_t)quant((double)x[c * P + p] * 255.0, 255);
            break;
        case ENC_ARGMAX8: u8[p] = (uint8_t)argmax_strided(x + p, C, P); break;
        case ENC_SIGMOID8: u8[p] = (uint8_t)quant(255.0 * ms_sigmoid(x[p]), 255); break;
        case ENC_SOFT_TARGET: MS_ASSERT(0);
        }
    }
    *im = (ms_image){.width = W, .height = H, .channels = channels, .depth = depth,
                     .data = w->samples, .capacity = bytes, .borrowed = 1};
}

static int cmp_desc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

/* The file holds logits and the loader takes their softmax, which is always a probability
 * vector. So the prediction x [C] is first moved to the nearest probability vector q
 * (Euclidean projection onto the simplex: q = max(x - tau, 0) with tau making sum q = 1,
 * found from the sorted values, Held, Wolfe and Crowder 1974); ln q then reads back as q.
 * The projection keeps the order of the classes, so argmax q = argmax x and the accuracy of
 * the saved file equals the metric's. */
static void soft_target_logits(ms_pred_writer *w, const float *x, int C, float *logits) {
    double *u = w->sorted;
    for (int c = 0; c < C; c++) {
        double v = x[c];
        u[c] = !(v > -SOFT_TARGET_RANGE) ? -SOFT_TARGET_RANGE
               : v > SOFT_TARGET_RANGE  ? SOFT_TARGET_RANGE
                                        : v;
    }
    double *clamped = u + C; /* [C] in class order */
    memcpy(clamped, u, (size_t)C * sizeof(double));
    qsort(u, (size_t)C, sizeof(double), cmp_desc);
    double cum = 0.0, tau = u[0] - 1.0;
    for (int j = 0; j < C; j++) {
        cum += u[j];
        double t = (cum - 1.0) / (j + 1);
        if (u[j] - t > 0.0) tau = t;
    }
    for (int c = 0; c < C; c++) {
        double q = clamped[c] - tau;
        logits[c] = (float)log(q > SOFT_TARGET_FLOOR ? q : SOFT_TARGET_FLOOR);
    }
}

/* ---- files ----------------------------------------------------------------------------------- */

/* DIR/{task}/{the dataset's file name of sample i}; 0, or 1 with a message on stderr. */
static int file_path(const ms_pred_writer *w, int t, int64_t i, char *buf, size_t cap) {
    char name[MS_PATH_MAX];
    w->d->ops->sample_name(w->d, i, name, sizeof name);
    const char *task = w->def[t]->name;
    int n = w->dataset == MS_DATASET_TASKONOMY
                ? ms_strf(buf, cap, "%s/%s/%s_domain_%s.%s", w->dir, task, name,
                          w->domain[t]->file, w->domain[t]->ext)
                : ms_strf(buf, cap, "%s/%s/%s.png", w->dir, task, name);
    if (n < 0 || (size_t)n >= cap) {
        fprintf(stderr, "modsquad: error: %s/%s/%s...: path longer than %zu bytes\n", w->dir, task,
                name, cap - 1);
        return 1;
    }
    return 0;
}

/* Creates the directory of path (Taskonomy: one per building) unless it was the last one. */
static int make_parent(ms_pred_writer *w, int t, const char *path) {
    char parent[MS_PATH_MAX];
    ms_strf(parent, sizeof parent, "%s", path);
    char *slash = strrchr(parent, '/');
    MS_ASSERT(slash);
    *slash = 0;
    if (!strcmp(parent, w->made[t])) return 0;
    if (ms_cli_make_dirs(parent)) {
        fprintf(stderr, "modsquad: error: cannot create the predictions directory %s (%s)\n",
                parent, strerror(errno));
        return 1;
    }
    ms_strf(w->made[t], sizeof w->made[t], "%s", parent);
    return 0;
}

static int write_one(ms_pred_writer *w, int t, const float *x, int H, int W, const char *path,
                     ms_io_err *err) {
    const ms_task_def *def = w->def[t];
    if (w->enc[t]->kind == ENC_SOFT_TARGET) {
        soft_target_logits(w, x, def->channels, w->logits);
        int64_t shape[1] = {def->channels};
        return ms_npy_write(path, w->logits, 1, shape, MS_IO_NOSYNC, err);
    }
    ms_image im;
    encode_dense(w, w->enc[t], x, def->channels, H, W, &im);
    return ms_png_write(path, &im, NULL, 0, MS_IO_NOSYNC, err);
}

static int sink_fn(void *ctx, int t, const float *pred, const ms_batch *b, int n) {
    ms_pred_writer *w = ctx;
    const ms_task_def *def = w->def[t];
    size_t per = def->classification ? (size_t)def->channels
                                     : (size_t)def->channels * b->H * b->W; /* one image */
    for (int i = 0; i < n; i++) {
        char path[MS_PATH_MAX];
        if (file_path(w, t, b->sample[i], path, sizeof path) || make_parent(w, t, path)) return 1;
        ms_io_err err = {0};
        if (write_one(w, t, pred + i * per, b->H, b->W, path, &err)) {
            fprintf(stderr, "modsquad: error: saving a prediction: %s\n", err.msg);
            return 1;
        }
        w->files++;
    }
    return 0;
}

/* ---- README.txt ------------------------------------------------------------------------------ */

static void write_readme_text(const ms_pred_writer *w, const ms_config *cfg, FILE *f) {
    const int taskonomy = w->dataset == MS_DATASET_TASKONOMY;
    fprintf(f,
            "Predictions of `modsquad eval --save-predictions`, each written as the file the\n"
            "dataset holds for that sample, so that the dataset's own loader reads it back as\n"
            "the prediction up to the file's quantisation (docs/datasets.md, \"Saved\n"
            "predictions\").\n\n");
    fprintf(f, "dataset: %s, split %s\n", taskonomy ? "taskonomy" : "pascal_context", w->d->split);
    fprintf(f, "layout:  %s\n",
            taskonomy ? "{task}/{building}/point_{p}_view_{v}_domain_{domain}.{png|npy} (the "
                        "older flat Taskonomy layout, which the loader reads)"
                      : "{task}/{image id}.png");
    if (taskonomy)
        fprintf(f,
                "size:    %d x %d, the evaluated crop: the image resized to %d x %d, then its "
                "centre %d x %d\n",
                cfg->data.image_size, cfg->data.image_size, cfg->data.resize, cfg->data.resize,
                cfg->data.image_size, cfg->data.image_size);
    else
        fprintf(f,
                "size:    %d x %d, the evaluated image (resized from its original size, not "
                "mapped back)\n",
                cfg->data.image_size, cfg->data.image_size);
    fprintf(f,
            "\nx is the model's output in the target space the loader decodes the file to;\n"
            "round is to the nearest file value, clamped to what the file holds.\n\n");
    for (int t = 0; t < w->T; t++) fprintf(f, "%-20s %s\n", w->def[t]->name, w->enc[t]->readme);
}

static int write_readme(const ms_pred_writer *w, const ms_config *cfg) {
    char path[MS_PATH_MAX];
    ms_strf(path, sizeof path, "%s/README.txt", w->dir);
    ms_atomic a;
    FILE *f;
    ms_io_err err = {0};
    int rc = ms_atomic_begin(&a, path, &f, &err);
    if (!rc) {
        write_readme_text(w, cfg, f);
        rc = ms_atomic_commit(&a, f, MS_IO_NOSYNC, &err);
    }
    if (rc) fprintf(stderr, "modsquad: error: cannot write the saved predictions: %s\n", err.msg);
    return rc;
}

/* ---- the writer ------------------------------------------------------------------------------ */

ms_pred_writer *ms_pred_writer_open(const char *dir, const ms_config *cfg, const ms_data *d,
                                    int readme) {
    if (strlen(dir) >= MS_PATH_MAX - 64) {
        fprintf(stderr, "modsquad: error: --save-predictions %s: path too long\n", dir);
        return NULL;
    }
    ms_pred_writer *w = ms_calloc(1, sizeof *w);
    ms_strf(w->dir, sizeof w->dir, "%s", dir);
    w->d = d;
    w->dataset = cfg->data.dataset;
    w->T = cfg->data.tasks.n;
    for (int t = 0; t < w->T; t++) {
        const char *name = cfg->data.tasks.name[t];
        w->def[t] = ms_task_find(w->dataset, name);
        w->enc[t] = encoding_of(w->dataset, name);
        MS_ASSERT(w->def[t] && w->enc[t]);
        if (w->dataset == MS_DATASET_TASKONOMY) MS_ASSERT((w->domain[t] = ms_tx_domain_find(name)));
        if (w->def[t]->classification && w->def[t]->channels > w->max_classes)
            w->max_classes = w->def[t]->channels;
    }
    if (w->max_classes) {
        w->sorted = ms_malloc((size_t)w->max_classes * 2 * sizeof(double));
        w->logits = ms_malloc((size_t)w->max_classes * sizeof(float));
    }
    struct stat st;
    int bad = ms_cli_make_dirs(w->dir)      ? errno
              : stat(w->dir, &st)           ? errno
              : !S_ISDIR(st.st_mode)        ? ENOTDIR
                                            : 0;
    if (bad) {
        fprintf(stderr, "modsquad: error: --save-predictions: cannot create the directory %s (%s)\n",
                w->dir, strerror(bad));
        ms_pred_writer_close(w);
        return NULL;
    }
    if (readme && write_readme(w, cfg)) {
        ms_pred_writer_close(w);
        return NULL;
    }
    return w;
}

ms_pred_sink ms_pred_writer_sink(ms_pred_writer *w) { return (ms_pred_sink){sink_fn, w}; }

int64_t ms_pred_writer_files(const ms_pred_writer *w) { return w->files; }

void ms_pred_writer_close(ms_pred_writer *w) {
    if (!w) return;
    free(w->samples);
    free(w->sorted);
    free(w->logits);
    free(w);
}
