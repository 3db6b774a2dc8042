#include "loader.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/util.h"
#include "../model/rng.h"

/* One buffer of the ring. */
typedef struct {
    ms_batch batch;
    int64_t g;      /* batch number (from the start position) it holds; -1 = none yet */
    int count;      /* images of batch g on this rank */
    int done;       /* slots written */
    int err_slot;   /* lowest failing slot, or -1 */
    ms_io_err err;
} ring_buf;

struct ms_loader {
    ms_data *d;
    ms_loader_opts o;
    int64_t n_use, spe; /* samples per epoch, steps per epoch */
    int64_t end_g;      /* batches before the end (INT64_MAX when endless) */
    uint64_t stream;    /* permutation stream */
    int perm_half;      /* Feistel half width in bits */

    ring_buf *ring; /* [prefetch] */
    int n_ring;
    void *sync_scratch; /* workers == 0: the consumer's scratch */

    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t *threads; /* [workers] */
    int n_threads, stop;
    int64_t next_g; /* next batch to hand out jobs for ... */
    int next_k;     /* ... and its next slot */
    int64_t consumed;  /* batches returned to the consumer */
    int holding;       /* the last returned batch is still in the consumer's hands */
    ms_loader_pos start;
};

/* ---- order ----------------------------------------------------------------------------------- */

/* A bijection of [0, n_use) for epoch e: a 4-round Feistel network keyed by (seed, e) over the
 * smallest even bit width covering n_use, cycle-walked back into range. */
int64_t ms_loader_sample_at(const ms_loader *L, int64_t epoch, int64_t q) {
    if (!L->o.train || L->n_use <= 1) return q;
    uint64_t half = (uint64_t)L->perm_half, mask = (1ull << half) - 1, x = (uint64_t)q;
    uint64_t stream = L->stream + (uint64_t)epoch * 0x9E3779B97F4A7C15ull;
    do {
        uint64_t l = x >> half, r = x & mask;
        for (int round = 0; round < 4; round++) {
            uint64_t f = ms_rng_bits(L->o.seed, stream, (r << 2) | (uint64_t)round) & mask;
            uint64_t t = r;
            r = l ^ f;
            l = t;
        }
        x = (l << half) | r;
    } while (x >= (uint64_t)L->n_use);
    return (int64_t)x;
}

static ms_loader_pos position_of(const ms_loader *L, int64_t g) {
    int64_t s = L->start.step + g;
    ms_loader_pos p = {L->start.epoch + s / L->spe, s % L->spe};
    return p;
}

/* Images of batch g on this rank. */
static int count_of(const ms_loader *L, int64_t g) {
    ms_loader_pos p = position_of(L, g);
    int64_t G = (int64_t)L->o.batch_size * L->o.world;
    int64_t first = p.step * G + (int64_t)L->o.rank * L->o.batch_size;
    int64_t left = L->n_use - first;
    return left <= 0 ? 0 : left < L->o.batch_size ? (int)left : L->o.batch_size;
}

/* Reads slot k of batch g into buffer rb (called without the lock). */
static void fill_slot(ms_loader *L, ring_buf *rb, int64_t g, int k, void *scratch) {
    ms_loader_pos p = position_of(L, g);
    int64_t G = (int64_t)L->o.batch_size * L->o.world;
    int64_t q = p.step * G + (int64_t)L->o.rank * L->o.batch_size + k;
    int64_t i = ms_loader_sample_at(L, p.epoch, q);
    ms_io_err err = {0};
    int rc = L->d->ops->read(L->d, i, L->o.train, L->o.seed, p.epoch, scratch, &rb->batch, k, &err);
    if (rc) {
        char name[256];
        L->d->ops->sample_name(L->d, i, name, sizeof name);
        pthread_mutex_lock(&L->mu);
        if (rb->err_slot < 0 || k < rb->err_slot) {
            rb->err_slot = k;
            rb->err.status = err.status;
            ms_strf(rb->err.msg, sizeof rb->err.msg, "%s (sample %lld, %s of split '%s')", err.msg,
                    (long long)i, name, L->d->split);
        }
        pthread_mutex_unlock(&L->mu);
    }
}

/* Claims the next job under the lock: 1 with (g, k) and the buffer prepared, 0 when no job can
 * start now, -1 when every batch has been handed out. */
static int claim(ms_loader *L, int64_t *g, int *k, ring_buf **rb) {
    for (;;) {
        if (L->next_g >= L->end_g) return -1;
        /* batch g may use buffer g % n_ring once batch g - n_ring is released */
        if (L->next_g >= L->consumed - L->holding + L->n_ring) return 0;
        ring_buf *b = &L->ring[L->next_g % L->n_ring];
        if (L->next_k == 0) {
            b->g = L->next_g;
            b->count = count_of(L, L->next_g);
            b->done = 0;
            b->err_slot = -1;
            b->batch.B = b->count;
        }
        if (L->next_k >= b->count) { /* an empty batch (evaluation tail): nothing to read */
            L->next_g++, L->next_k = 0;
            pthread_cond_broadcast(&L->cv);
            continue;
        }
        *g = L->next_g, *k = L->next_k, *rb = b;
        if (++L->next_k == b->count) L->next_g++, L->next_k = 0;
        return 1;
    }
}

static void *worker(void *arg) {
    ms_loader *L = arg;
    void *scratch = L->d->ops->scratch_new(L->d);
    pthread_mutex_lock(&L->mu);
    while (!L->stop) {
        int64_t g;
        int k;
        ring_buf *rb;
        int c = claim(L, &g, &k, &rb);
        if (c <= 0) {
            pthread_cond_wait(&L->cv, &L->mu);
            continue;
        }
        pthread_mutex_unlock(&L->mu);
        fill_slot(L, rb, g, k, scratch);
        pthread_mutex_lock(&L->mu);
        if (++rb->done == rb->count) pthread_cond_broadcast(&L->cv);
    }
    pthread_mutex_unlock(&L->mu);
    L->d->ops->scratch_free(scratch);
    return NULL;
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

static void stop_workers(ms_loader *L);

static int start_workers(ms_loader *L, ms_io_err *err) {
    L->stop = 0;
    L->next_g = 0, L->next_k = 0, L->consumed = 0, L->holding = 0;
    for (int r = 0; r < L->n_ring; r++) L->ring[r].g = -1;
    L->n_threads = 0;
    for (int w = 0; w < L->o.workers; w++) {
        if (pthread_create(&L->threads[w], NULL, worker, L) != 0) {
            stop_workers(L);
            return ms_io_fail(err, MS_IO_NOMEM, "data loader: cannot start worker thread %d of %d",
                              w + 1, L->o.workers);
        }
        L->n_threads++;
    }
    return 0;
}

static void stop_workers(ms_loader *L) {
    pthread_mutex_lock(&L->mu);
    L->stop = 1;
    pthread_cond_broadcast(&L->cv);
    pthread_mutex_unlock(&L->mu);
    for (int w = 0; w < L->n_threads; w++) pthread_join(L->threads[w], NULL);
    L->n_threads = 0;
}

static int64_t end_batches(const ms_loader *L) {
    if (L->o.epochs <= 0) return INT64_MAX;
    int64_t total = L->o.epochs * L->spe, at = L->start.epoch * L->spe + L->start.step;
    return total > at ? total - at : 0;
}

void ms_loader_opts_from_config(ms_loader_opts *o, const ms_config *cfg, int train, int rank,
                                int world) {
    memset(o, 0, sizeof *o);
    o->batch_size =
        (train ? cfg->train.batch_size : cfg->eval.batch_size) / (world > 0 ? world : 1);
    o->rank = rank;
    o->world = world > 0 ? world : 1;
    o->train = train;
    o->max_samples = train ? cfg->data.max_images : cfg->eval.max_images;
    o->workers = cfg->data.workers;
    o->prefetch = cfg->data.prefetch;
    o->seed = (uint64_t)cfg->run.seed;
    o->epochs = train ? 0 : 1;
}

int ms_loader_open(ms_loader **out, ms_data *d, const ms_config *cfg, const ms_loader_opts *o,
                   ms_io_err *err) {
    *out = NULL;
    if (o->batch_size < 1 || o->world < 1 || o->rank < 0 || o->rank >= o->world ||
        o->prefetch < 1 || o->workers < 0)
        return ms_io_fail(err, MS_IO_ARG,
                          "data loader: batch %d, rank %d of %d, prefetch %d, workers %d: "
                          "expected batch >= 1, 0 <= rank < world, prefetch >= 1, workers >= 0",
                          o->batch_size, o->rank, o->world, o->prefetch, o->workers);
    ms_loader *L = ms_calloc(1, sizeof *L);
    L->d = d;
    L->o = *o;
    L->n_use = o->max_samples > 0 && o->max_samples < d->n ? o->max_samples : d->n;
    int64_t G = (int64_t)o->batch_size * o->world;
    L->spe = o->train ? L->n_use / G : (L->n_use + G - 1) / G;
    if (L->spe == 0) {
        int64_t n_use = L->n_use;
        free(L);
        return ms_io_fail(err, MS_IO_MISMATCH,
                          "split '%s' has %lld sample%s, fewer than one global batch of %lld "
                          "(batch %d x %d ranks)",
                          d->split, (long long)n_use, n_use == 1 ? "" : "s", (long long)G,
                          o->batch_size, o->world);
    }
    L->stream = ms_rng_stream("data.order");
    int bits = 0;
    while (bits < 62 && (1ll << bits) < L->n_use) bits++;
    L->perm_half = (bits + 1) / 2 > 0 ? (bits + 1) / 2 : 1;
    L->n_ring = o->workers ? o->prefetch : 1;
    L->ring = ms_calloc((size_t)L->n_ring, sizeof *L->ring);
    for (int r = 0; r < L->n_ring; r++)
        ms_batch_alloc(&L->ring[r].batch, cfg, o->batch_size, d->size, d->size);
    L->threads = ms_calloc((size_t)(o->workers ? o->workers : 1), sizeof *L->threads);
    pthread_mutex_init(&L->mu, NULL);
    pthread_cond_init(&L->cv, NULL);
    L->start = o->start;
    L->end_g = end_batches(L);
    if (!o->workers) L->sync_scratch = d->ops->scratch_new(d);
    int rc = start_workers(L, err);
    if (rc) {
        ms_loader_close(L);
        return rc;
    }
    *out = L;
    return 0;
}

int ms_loader_next(ms_loader *L, ms_batch **batch, ms_io_err *err) {
    pthread_mutex_lock(&L->mu);
    if (L->holding) {
        L->holding = 0;
        pthread_cond_broadcast(&L->cv);
    }
    int64_t g = L->consumed;
    if (g >= L->end_g) {
        pthread_mutex_unlock(&L->mu);
        return 0;
    }
    ring_buf *rb = &L->ring[g % L->n_ring];
    if (!L->o.workers) {
        /* no threads: read batch g here, slot by slot */
        int64_t gg;
        int k;
        ring_buf *b;
        while (claim(L, &gg, &k, &b) == 1) {
            MS_ASSERT(gg == g); /* one buffer: batch g + 1 cannot start before g is released */
            pthread_mutex_unlock(&L->mu);
            fill_slot(L, b, gg, k, L->sync_scratch);
            pthread_mutex_lock(&L->mu);
            b->done++;
        }
    }
    while (!(rb->g == g && rb->done == rb->count)) pthread_cond_wait(&L->cv, &L->mu);
    if (rb->err_slot >= 0) {
        if (err) *err = rb->err;
        pthread_mutex_unlock(&L->mu);
        return rb->err.status ? rb->err.status : MS_IO_CORRUPT;
    }
    L->consumed++;
    L->holding = 1;
    *batch = &rb->batch;
    pthread_mutex_unlock(&L->mu);
    return 1;
}

ms_loader_pos ms_loader_tell(const ms_loader *L) { return position_of(L, L->consumed); }

int ms_loader_seek(ms_loader *L, ms_loader_pos pos, ms_io_err *err) {
    stop_workers(L);
    L->start = pos;
    L->end_g = end_batches(L);
    return start_workers(L, err);
}

int64_t ms_loader_steps_per_epoch(const ms_loader *L) { return L->spe; }
int64_t ms_loader_samples(const ms_loader *L) { return L->n_use; }

void ms_loader_close(ms_loader *L) {
    if (!L) return;
    if (L->n_threads) stop_workers(L);
    if (L->sync_scratch) L->d->ops->scratch_free(L->sync_scratch);
    for (int r = 0; r < L->n_ring; r++) ms_batch_free(&L->ring[r].batch);
    free(L->ring);
    free(L->threads);
    pthread_mutex_destroy(&L->mu);
    pthread_cond_destroy(&L->cv);
    free(L);
}
