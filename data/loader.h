/* The prefetching data loader: worker threads decode and augment samples of an ms_data
 * (data/dataset.h) into a ring of ms_batch buffers ahead of the consumer.
 *
 * Order and sharding: epoch e visits the samples in a permutation drawn from (seed, e) in
 * training (identity order in evaluation). The permutation is a keyed Feistel network with
 * cycle walking, so position -> sample needs no per-epoch table and any batch can be made
 * independently. Global batch s of an epoch covers positions [s G, (s + 1) G) with
 * G = batch_size * world; rank r takes [s G + r B, s G + (r + 1) B). Training drops the last
 * partial global batch; evaluation keeps it (so some ranks' last batch may hold fewer images,
 * even none; every rank takes the same number of steps).
 *
 * Determinism: a batch's contents depend only on (seed, epoch, step, rank, world) and the
 * dataset, never on the number of workers or their timing. Its position (epoch, step of the
 * next batch) can be saved with ms_loader_tell and restored with ms_loader_seek or
 * ms_loader_opts.start for an exact resume.
 *
 * Errors: a worker never exits the process; a sample that fails to read makes the consumer's
 * ms_loader_next for that batch fail with the message naming the file (the lowest failing
 * slot's, so even the message is deterministic). */
#ifndef MS_DATA_LOADER_H
#define MS_DATA_LOADER_H

#include <stdint.h>

#include "../model/batch.h"
#include "../model/config.h"
#include "dataset.h"

typedef struct {
    int64_t epoch, step; /* the next batch ms_loader_next returns */
} ms_loader_pos;

typedef struct {
    int batch_size;      /* B: images per batch on this rank */
    int rank, world;     /* this rank of world ranks (0, 1 without data parallelism) */
    int train;           /* shuffle every epoch, augment, drop the last partial batch */
    int64_t max_samples; /* use only the first N samples of the dataset (0 = all) */
    int workers;         /* threads; 0 = read in the consumer's thread inside next() */
    int prefetch;        /* batch buffers (>= 1) */
    uint64_t seed;
    int64_t epochs;      /* end after this many epochs (0 = never end) */
    ms_loader_pos start; /* first batch */
} ms_loader_opts;

typedef struct ms_loader ms_loader;

/* Training (train != 0: train.batch_size, data.max_images, endless) or evaluation (eval.batch_size,
 * eval.max_images, one epoch) options from cfg for this rank; batch sizes are the global ones
 * divided by world. */
void ms_loader_opts_from_config(ms_loader_opts *o, const ms_config *cfg, int train, int rank,
                                int world);

/* Starts the workers. The loader reads d but does not own it (close the loader first). */
int ms_loader_open(ms_loader **out, ms_data *d, const ms_config *cfg, const ms_loader_opts *o,
                   ms_io_err *err);
/* The next batch: 1 with *batch valid until the next call (or close), 0 at the end of the last
 * epoch, negative with err set when a sample could not be read (the loader stays at that
 * batch: calling again gives the same error). */
int ms_loader_next(ms_loader *L, ms_batch **batch, ms_io_err *err);
/* The position of the batch the next ms_loader_next returns. */
ms_loader_pos ms_loader_tell(const ms_loader *L);
/* Continues from pos (restarts the workers; fails only when a thread cannot start). */
int ms_loader_seek(ms_loader *L, ms_loader_pos pos, ms_io_err *err);
/* Batches per epoch on every rank, and samples used per epoch. */
int64_t ms_loader_steps_per_epoch(const ms_loader *L);
int64_t ms_loader_samples(const ms_loader *L);
/* Dataset sample at position q of epoch e (the order the loader uses). */
int64_t ms_loader_sample_at(const ms_loader *L, int64_t epoch, int64_t q);
void ms_loader_close(ms_loader *L);

#endif
