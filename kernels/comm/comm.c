/* Choosing the collectives of a run and what every implementation shares: the bounded wait,
 * the gradient buckets (ms_grad_sync), the MI-statistics hook, the agreement checks
 * (kernels/comm/comm.h). */
#include "comm.h"

#ifdef MS_HAVE_CUDA
#include "../cuda/backend_cuda.h"
#endif

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int backend_is_host(const ms_backend *be) { return !be || strcmp(be->name, "cpu") == 0; }

int ms_comm_gpu_of(const ms_comm_env *e) {
#ifdef MS_HAVE_CUDA
    int n = ms_cuda_device_count(NULL, 0);
    return n > 0 ? e->local_rank % n : -1;
#else
    (void)e;
    return -1;
#endif
}

ms_world *ms_world_open(const ms_world_opts *o, const ms_comm_env *env, ms_backend *be,
                        char *err, size_t cap) {
    MS_ASSERT(o->timeout_s > 0);
    ms_world_kind kind = o->kind;
    if (kind == MS_WORLD_AUTO) {
        if (env->world == 1) kind = MS_WORLD_NONE;
#ifdef MS_HAVE_NCCL
        else if (!backend_is_host(be)) kind = MS_WORLD_NCCL;
#endif
        else kind = MS_WORLD_MPI;
    }
    ms_world *w = NULL;
    switch (kind) {
    case MS_WORLD_AUTO:
    case MS_WORLD_NONE:
        if (env->world > 1) {
            snprintf(err, cap,
                     "%s started this process as rank %d of %d, but run.comm is none; set "
                     "run.comm to auto, mpi or nccl, or start one process",
                     env->launcher, env->rank, env->world);
            return NULL;
        }
        w = ms_world_none();
        break;
    case MS_WORLD_MPI:
#ifdef MS_HAVE_MPI
        w = ms_world_mpi(env, be, o->timeout_s, err, cap);
        break;
#else
        snprintf(err, cap,
                 "%s started this process as rank %d of %d, but this build has no MPI: install "
                 "OpenMPI (libopenmpi-dev openmpi-bin, as scripts/setup.sh does) and rebuild",
                 env->launcher, env->rank, env->world);
        return NULL;
#endif
    case MS_WORLD_NCCL:
        if (backend_is_host(be)) {
            snprintf(err, cap, "run.comm nccl needs the CUDA backend, but this run is on the %s; "
                               "use run.comm mpi (or auto)", be ? be->name : "host");
            return NULL;
        }
#ifdef MS_HAVE_NCCL
        {
            ms_world *boot = NULL;
#ifdef MS_HAVE_MPI
            /* Under an MPI launcher the unique id travels through MPI; srun without an MPI
             * plugin uses the file rendezvous. */
            if (env->mpi && env->world > 1 &&
                !(boot = ms_world_mpi(env, NULL, o->timeout_s, err, cap)))
                return NULL;
#endif
            w = ms_world_nccl(env, be, boot, o->rendezvous_dir, o->timeout_s, err, cap);
            if (!w && boot) ms_world_close(boot);
        }
        break;
#else
        snprintf(err, cap, "run.comm nccl: this build has no NCCL (it needs nvcc and nccl.h at "
                           "build time; `make` lists what it found); use run.comm mpi");
        return NULL;
#endif
    }
    if (!w) return NULL;
    w->timeout_s = o->timeout_s;
    if (w->size != env->world || w->rank != env->rank) {
        snprintf(err, cap,
                 "%s says this process is rank %d of %d, but %s sees rank %d of %d; with srun "
                 "use --mpi=pmix (or start the ranks with mpirun)",
                 env->launcher, env->rank, env->world, w->name, w->rank, w->size);
        ms_world_close(w);
        return NULL;
    }
    return w;
}

void ms_world_close(ms_world *w) {
    if (w) w->ops->close(w);
}

MS_NORETURN void ms_world_abort(ms_world *w, int status) {
    fflush(NULL);
    if (w) w->ops->abort(w, status);
    _exit(status);
}

/* ---- the bounded wait ------------------------------------------------------------------------ */

/* A collective's data moves only while MPI is polled (OpenMPI has no progress thread), so the
 * first second is a spin that yields the core; past it the rank is waiting for a slower or
 * stopped peer rather than for bytes, and a short sleep between polls keeps it off the CPU. */
#define POLL_SPIN_S 1.0
#define POLL_SLEEP_NS 100000L

int ms_comm_poll(const ms_world *w, int (*check)(void *arg), void *arg, const char *what) {
    double t0 = ms_now();
    for (;;) {
        int r = check(arg);
        if (r) return r > 0 ? 0 : -1;
        double waited = ms_now() - t0;
        if (waited > w->timeout_s) {
            fprintf(stderr,
                    "modsquad: error: rank %d of %d: %s (%s) did not complete "
                    "within %.0f s: another rank has stopped or hangs (its own output says why). "
                    "Stopping every rank. A slow but healthy run can raise the limit with "
                    "--comm-timeout SECONDS or MODSQUAD_COMM_TIMEOUT.\n",
                    w->rank, w->size, what, w->name, w->timeout_s);
            return -1;
        }
        if (waited < POLL_SPIN_S) {
            sched_yield();
        } else {
            struct timespec ts = {0, POLL_SLEEP_NS};
            nanosleep(&ts, NULL);
        }
    }
}

/* ---- shared collectives -------------------------------------------------------------------- */

size_t ms_grad_bucket_floats(size_t n) {
    size_t b = (n + MS_COMM_BUCKETS - 1) / MS_COMM_BUCKETS;
    return b < 1 ? 1 : b < MS_COMM_BUCKET_FLOATS ? b : MS_COMM_BUCKET_FLOATS;
}

typedef struct {
    size_t off, n; /* g[off, off + n) */
} grad_bucket;

struct ms_grad_sync {
    ms_world *w;
    int overlap;          /* buckets start as they close */
    int armed;            /* a backward is being reported */
    float *g;             /* [n] the gradient buffer of the armed backward (device) */
    size_t n;
    size_t cap;           /* floats per bucket (ms_grad_bucket_floats) */
    size_t lo, hi;        /* the bucket being filled: g[lo, hi), empty when lo == hi */
    size_t reported;      /* floats reported since arm */
    grad_bucket *bucket;  /* [n_bucket] closed buckets of this backward, in order */
    int n_bucket, bucket_cap;
    int started;          /* of them, started */
    int failed;           /* a start failed (printed): finish returns -1 */
    int last_buckets, last_early; /* ms_grad_sync_buckets */
};

static const char grad_what[] = "the gradient all-reduce";

ms_grad_sync *ms_grad_sync_create(ms_world *w, int overlap) {
    ms_grad_sync *s = ms_calloc(1, sizeof *s);
    s->w = w;
    s->overlap = overlap && w->size > 1 && w->async_buckets;
    return s;
}

void ms_grad_sync_destroy(ms_grad_sync *s) {
    if (!s) return;
    free(s->bucket);
    free(s);
}

int ms_grad_sync_overlaps(const ms_grad_sync *s) { return s->overlap; }

void ms_grad_sync_arm(ms_grad_sync *s, float *g, size_t n) {
    MS_ASSERT(!s->armed && g && n > 0);
    s->armed = 1;
    s->g = g, s->n = n;
    s->cap = ms_grad_bucket_floats(n);
    s->lo = s->hi = 0;
    s->reported = 0;
    s->n_bucket = s->started = s->failed = 0;
}

/* Starts the closed buckets not yet started (a world of one has nothing to sum). */
static void start_buckets(ms_grad_sync *s) {
    ms_world *w = s->w;
    for (; s->started < s->n_bucket && !s->failed; s->started++) {
        const grad_bucket *b = &s->bucket[s->started];
        if (w->size > 1 && w->ops->bucket_start(w, s->g + b->off, b->n, grad_what)) s->failed = 1;
    }
}

/* Closes the bucket being filled. One that grew past cap (a large range came in: one MoE layer
 * can hold tens of millions of floats) is split into equal pieces of at most cap floats. */
static void close_bucket(ms_grad_sync *s) {
    size_t len = s->hi - s->lo, pieces = (len + s->cap - 1) / s->cap;
    size_t piece = (len + pieces - 1) / pieces;
    for (size_t off = s->lo; off < s->hi; off += piece) {
        if (s->n_bucket == s->bucket_cap) {
            s->bucket_cap = s->bucket_cap ? 2 * s->bucket_cap : 16;
            grad_bucket *b = realloc(s->bucket, (size_t)s->bucket_cap * sizeof *b);
            if (!b) ms_fatal("out of memory growing the gradient buckets");
            s->bucket = b;
        }
        size_t n = s->hi - off < piece ? s->hi - off : piece;
        s->bucket[s->n_bucket++] = (grad_bucket){off, n};
    }
    s->lo = s->hi = 0;
}

void ms_grad_sync_ready(void *ctx, size_t offset, size_t count) {
    ms_grad_sync *s = ctx;
    if (!s->armed || count == 0) return;
    MS_ASSERT(offset <= s->n && count <= s->n - offset);
    s->reported += count;
    const size_t end = offset + count;
    if (s->lo == s->hi) {
        s->lo = offset, s->hi = end;
    } else if (end == s->lo) {
        s->lo = offset; /* the backward runs from the last layers to the first */
    } else if (offset == s->hi) {
        s->hi = end;
    } else {
        close_bucket(s);
        s->lo = offset, s->hi = end;
    }
    if (s->hi - s->lo >= s->cap) close_bucket(s);
    if (!s->overlap) return;
    start_buckets(s);
    /* MPI moves a non-blocking collective's data only inside MPI calls: every report is one. */
    if (s->started && !s->failed && s->w->ops->bucket_progress(s->w, grad_what)) s->failed = 1;
}

static int by_offset(const void *a, const void *b) {
    size_t x = ((const grad_bucket *)a)->off, y = ((const grad_bucket *)b)->off;
    return x < y ? -1 : x > y;
}

/* The reported ranges tile g exactly once: a model whose hook missed or repeated a range would
 * sum some gradients twice or never. */
static void check_tiling(const ms_grad_sync *s) {
    MS_ASSERT(s->reported == s->n);
    grad_bucket *sorted = ms_malloc((size_t)s->n_bucket * sizeof *sorted);
    memcpy(sorted, s->bucket, (size_t)s->n_bucket * sizeof *sorted);
    qsort(sorted, (size_t)s->n_bucket, sizeof *sorted, by_offset);
    size_t next = 0;
    for (int i = 0; i < s->n_bucket; i++) {
        MS_ASSERT(sorted[i].off == next);
        next += sorted[i].n;
    }
    MS_ASSERT(next == s->n);
    free(sorted);
}

int ms_grad_sync_finish(ms_grad_sync *s, float scale) {
    MS_ASSERT(s->armed);
    ms_world *w = s->w;
    s->armed = 0;
    if (s->lo != s->hi) close_bucket(s);
    check_tiling(s);
    s->last_buckets = s->n_bucket, s->last_early = s->started;
    start_buckets(s);
    if (s->failed) return -1;
    if (w->size > 1 && w->ops->bucket_wait(w, grad_what)) return -1;
    if (scale != 1.0f) {
        if (w->be) {
            w->be->scale_f32(w->be, s->g, scale, s->n);
        } else {
            for (size_t i = 0; i < s->n; i++) s->g[i] *= scale;
        }
    }
    return 0;
}

int ms_grad_sync_buckets(const ms_grad_sync *s, int *started_early) {
    if (started_early) *started_early = s->last_early;
    return s->last_buckets;
}

void ms_world_sum_hook(void *ctx, float *x, size_t n) {
    ms_world *w = ctx;
    if (w->size > 1 && n && w->ops->allreduce_dev(w, x, n, "the MI-statistics all-reduce"))
        ms_world_abort(w, 1);
}

/* FNV-1a's step over 8-byte words (with a shift that mixes high bits down): fast enough to
 * hash the weights at every checkpoint. */
uint64_t ms_comm_hash(const void *p, size_t bytes, uint64_t h) {
    const unsigned char *b = p;
    size_t i = 0;
    for (; i + 8 <= bytes; i += 8) {
        uint64_t word;
        memcpy(&word, b + i, 8);
        h = (h ^ word) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    for (; i < bytes; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

int ms_world_same(ms_world *w, uint64_t value, const char *what) {
    if (w->size == 1) return 1;
    int64_t v = (int64_t)(value >> 2); /* 62 bits: -v cannot overflow */
    int64_t x[2] = {v, -v};            /* MAX of v and of -v: the largest and the smallest */
    if (ms_world_allreduce(w, x, 2, MS_COMM_I64, MS_COMM_MAX, what)) return -1;
    return x[0] == v && -x[1] == v;
}

/* ---- staging for backends whose memory the host cannot read ----------------------------- */

int ms_comm_host_staged(const ms_world *w) { return !backend_is_host(w->be); }
