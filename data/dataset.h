/* One split of a dataset (Taskonomy or PASCAL-Context), indexed and ready to read: the common
 * interface the loader (data/loader.h) and `modsquad data` use. A dataset reads sample i into
 * one slot of an ms_batch (model/batch.h): the normalised image and every task's target, with
 * the augmentation of (seed, epoch, i) in training or the evaluation geometry otherwise.
 *
 * Threads: after opening, read() and check() may run concurrently on one ms_data, each thread
 * with its own scratch (scratch_new). Errors follow the ms_io_err convention of data/image.h:
 * the message names the file and what was wrong. */
#ifndef MS_DATA_DATASET_H
#define MS_DATA_DATASET_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../model/batch.h"
#include "../model/config.h"
#include "../model/tasks.h"
#include "image.h" /* ms_io_err */

typedef struct ms_data ms_data;

/* snprintf for paths and messages that may be cut at cap (long paths are cut, never
 * overflowed); a function so that the compiler does not warn about each possible cut. */
static inline int ms_strf(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline int ms_strf(char *buf, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
    return n;
}

/* What `modsquad data check` accumulates per task while it decodes every file. Values are in
 * the task's physical units (metres for depth, unit vectors for normals, ...): `units`. */
typedef struct {
    int64_t found, missing, unreadable; /* files */
    int64_t pixels, masked;             /* dense tasks: pixels seen and pixels without target */
    double lo, hi;                      /* value range over supervised pixels / entries */
    const char *units;
} ms_task_stats;

/* Widens st's value range to include v (an empty range has lo > hi). */
static inline void ms_task_stats_widen(ms_task_stats *st, double v) {
    if (st->lo > st->hi) st->lo = st->hi = v;
    else if (v < st->lo) st->lo = v;
    else if (v > st->hi) st->hi = v;
}

/* Receives each unreadable file found by check(), with the codec's message. */
typedef void (*ms_bad_file_fn)(void *ctx, const char *message);

typedef struct {
    /* Reads sample i into slot `slot` of b (b allocated by ms_batch_alloc for this config and
       size). train: augmentation from (seed, epoch, i); else evaluation geometry. */
    int (*read)(ms_data *d, int64_t i, int train, uint64_t seed, int64_t epoch, void *scratch,
                ms_batch *b, int slot, ms_io_err *err);
    /* Decodes every file of sample i at its native size and adds to stats[T] (one per task);
       reports each unreadable file through bad(). Returns how many were unreadable. */
    int (*check)(ms_data *d, int64_t i, void *scratch, ms_task_stats *stats, ms_bad_file_fn bad,
                 void *ctx);
    void *(*scratch_new)(ms_data *d);
    void (*scratch_free)(void *scratch);
    /* 1 with the path of task t's file of sample i when it is missing (0 when it exists). */
    int (*missing)(const ms_data *d, int64_t i, int t, char *path, size_t cap);
    /* A person's name for sample i ("allensville/point_3_view_1", "2008_000123"). */
    void (*sample_name)(const ms_data *d, int64_t i, char *buf, size_t cap);
    void (*close)(ms_data *d);
} ms_data_ops;

/* The fields every dataset fills; its own state follows in its private struct. */
struct ms_data {
    const ms_data_ops *ops;
    ms_dataset kind;
    char split[MS_NAME_MAX];
    int64_t n;                          /* samples */
    int size;                           /* H = W of the images and targets written */
    int T;                              /* tasks, in data.tasks order */
    const ms_task_def *task[MS_MAX_TASKS];
    int augment;                        /* data.augment: training draws augmentation */
    /* What the index saw (for `data check` and the loader's log line). */
    int64_t n_listed;                   /* samples with an image before on_missing */
    int64_t n_skipped;                  /* samples dropped by on_missing: skip */
    int64_t found[MS_MAX_TASKS];        /* task files present among the n_listed samples */
    int64_t missing[MS_MAX_TASKS];
    int64_t no_mask;                    /* Taskonomy: samples whose depth mask has no depth file */
    char index_note[MS_PATH_MAX + 64];  /* where the index came from (cache file or walk) */
};

/* How to open a split. */
typedef struct {
    int report_only;  /* keep samples with missing task files (data check counts them) */
    int rebuild;      /* Taskonomy: ignore and rewrite the index cache */
} ms_data_open_opts;

int ms_taskonomy_open(ms_data **out, const ms_config *cfg, const char *split,
                      const ms_data_open_opts *opts, ms_io_err *err);
int ms_pascal_open(ms_data **out, const ms_config *cfg, const char *split,
                   const ms_data_open_opts *opts, ms_io_err *err);

/* Opens `split` of cfg's dataset (data.train_split, data.val_split or any other name). */
static inline int ms_data_open(ms_data **out, const ms_config *cfg, const char *split,
                               const ms_data_open_opts *opts, ms_io_err *err) {
    return cfg->data.dataset == MS_DATASET_TASKONOMY ? ms_taskonomy_open(out, cfg, split, opts, err)
                                                     : ms_pascal_open(out, cfg, split, opts, err);
}

static inline void ms_data_close(ms_data *d) {
    if (d) d->ops->close(d);
}

#endif
