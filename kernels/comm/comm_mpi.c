/* Collectives over MPI (kernels/comm/comm.h): the CPU backend's data-parallel transport, and
 * the bootstrap of NCCL under an MPI launcher.
 *
 * Every collective is non-blocking (MPI_Iallreduce, MPI_Ibcast) and polled with a deadline
 * (ms_comm_poll), so a peer that died or hangs ends in a message instead of a wait without end.
 * MPI_COMM_WORLD returns its errors instead of aborting, so each failed call is reported with
 * file:line and MPI's own words. Large arrays go in buckets of MS_COMM_BUCKET_FLOATS elements,
 * all started before the first wait: one request per bucket, a few per step. The gradient
 * buckets (ms_grad_sync) start one by one during the backward and have their own requests, so
 * that a blocking collective in between never waits for them. Only the main thread calls MPI
 * (MPI_THREAD_FUNNELED); the loader's and OpenMP's threads never do. */
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"

/* Requests in flight, polled together. */
typedef struct {
    MPI_Request *req; /* [cap] */
    int n, cap;
    ms_world *w;      /* for messages */
    const char *what;
} request_set;

/* A gradient bucket's host copy (backends other than cpu). */
typedef struct {
    float *host;      /* [cap] */
    size_t cap;
    float *dev;       /* [n] the bucket in device memory */
    size_t n;
} bucket_stage;

typedef struct {
    MPI_Comm comm;
    int finalize;          /* this process called MPI_Init, so it calls MPI_Finalize */
    request_set coll;      /* the blocking collective in flight */
    request_set buckets;   /* the gradient buckets started since the last bucket_wait */
    bucket_stage *bstage;  /* [buckets.cap] their host copies (host-staged worlds only) */
    float *stage;          /* [stage_cap] host copy of device data (backends other than cpu) */
    size_t stage_cap;
} mpi_state;

static mpi_state *state_of(ms_world *w) { return w->impl; }

/* Reports a failed MPI call; returns -1 for the caller to pass on. */
static int mpi_failed(const ms_world *w, int rc, const char *call, const char *file, int line,
                      const char *what) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "error %d", rc);
    fprintf(stderr, "modsquad: error: rank %d of %d: %s:%d: %s failed during %s: %s\n",
            w ? w->rank : -1, w ? w->size : -1, file, line, call, what, msg);
    return -1;
}

#define MPI_TRY(w, call, what)                                                                     \
    do {                                                                                           \
        int ms_rc_ = (call);                                                                       \
        if (ms_rc_ != MPI_SUCCESS)                                                                 \
            return mpi_failed((w), ms_rc_, #call, __FILE__, __LINE__, (what));                     \
    } while (0)

static MPI_Datatype mpi_type(ms_comm_dtype t, size_t *size) {
    switch (t) {
    case MS_COMM_F32: *size = sizeof(float); return MPI_FLOAT;
    case MS_COMM_F64: *size = sizeof(double); return MPI_DOUBLE;
    case MS_COMM_I64: *size = sizeof(int64_t); return MPI_INT64_T;
    }
    ms_fatal("%s:%d: unknown collective data type %d", __FILE__, __LINE__, (int)t);
}

/* Room for n requests, keeping those in flight (a request handle may be moved). */
static void reserve_requests(request_set *r, int n) {
    if (n <= r->cap) return;
    int cap = r->cap ? 2 * r->cap : 8;
    while (cap < n) cap *= 2;
    MPI_Request *req = realloc(r->req, (size_t)cap * sizeof *req);
    if (!req) ms_fatal("out of memory for %d MPI requests", cap);
    r->req = req;
    r->cap = cap;
}

/* ms_comm_poll's check: MPI_Testall also makes the requests progress. */
static int test_all(void *arg) {
    request_set *r = arg;
    int done = 0;
    int rc = MPI_Testall(r->n, r->req, &done, MPI_STATUSES_IGNORE);
    if (rc != MPI_SUCCESS) return mpi_failed(r->w, rc, "MPI_Testall", __FILE__, __LINE__, r->what);
    return done ? 1 : 0;
}

static int wait_all(ms_world *w, request_set *r, const char *what) {
    r->w = w, r->what = what;
    int rc = ms_comm_poll(w, test_all, r, what);
    r->n = 0;
    return rc;
}

static int mpi_allreduce(ms_world *w, void *x, size_t n, ms_comm_dtype t, ms_comm_op op,
                         const char *what) {
    mpi_state *s = state_of(w);
    size_t elem;
    MPI_Datatype type = mpi_type(t, &elem);
    MPI_Op mop = op == MS_COMM_MAX ? MPI_MAX : MPI_SUM;
    size_t buckets = (n + MS_COMM_BUCKET_FLOATS - 1) / MS_COMM_BUCKET_FLOATS;
    MS_ASSERT(buckets <= INT_MAX);
    reserve_requests(&s->coll, (int)buckets);
    s->coll.n = 0;
    for (size_t off = 0; off < n; off += MS_COMM_BUCKET_FLOATS) {
        size_t count = n - off < MS_COMM_BUCKET_FLOATS ? n - off : MS_COMM_BUCKET_FLOATS;
        MPI_TRY(w,
                MPI_Iallreduce(MPI_IN_PLACE, (char *)x + off * elem, (int)count, type, mop,
                               s->comm, &s->coll.req[s->coll.n]),
                what);
        s->coll.n++;
    }
    return wait_all(w, &s->coll, what);
}

static int mpi_allreduce_dev(ms_world *w, float *x, size_t n, const char *what) {
    if (!ms_comm_host_staged(w)) return mpi_allreduce(w, x, n, MS_COMM_F32, MS_COMM_SUM, what);
    mpi_state *s = state_of(w);
    if (n > s->stage_cap) {
        free(s->stage);
        s->stage = ms_malloc(n * sizeof(float));
        s->stage_cap = n;
    }
    w->be->download(w->be, s->stage, x, n * sizeof(float));
    if (mpi_allreduce(w, s->stage, n, MS_COMM_F32, MS_COMM_SUM, what)) return -1;
    w->be->upload(w->be, x, s->stage, n * sizeof(float));
    return 0;
}

/* ---- gradient buckets ------------------------------------------------------------------------ */

/* A host-memory bucket is reduced where it lies, so its sum starts at once. A device bucket is
 * downloaded first (which waits for the device: ms_grad_sync therefore starts such buckets
 * only after the backward) into a host copy of its own, uploaded by bucket_wait. */
static int mpi_bucket_start(ms_world *w, float *x, size_t n, const char *what) {
    mpi_state *s = state_of(w);
    request_set *r = &s->buckets;
    MS_ASSERT(n <= INT_MAX);
    int old_cap = r->cap;
    reserve_requests(r, r->n + 1);
    float *buf = x;
    if (ms_comm_host_staged(w)) {
        if (r->cap > old_cap) {
            bucket_stage *bs = realloc(s->bstage, (size_t)r->cap * sizeof *bs);
            if (!bs) ms_fatal("out of memory for %d gradient buckets", r->cap);
            memset(bs + old_cap, 0, (size_t)(r->cap - old_cap) * sizeof *bs);
            s->bstage = bs;
        }
        bucket_stage *st = &s->bstage[r->n];
        if (n > st->cap) {
            free(st->host);
            st->host = ms_malloc(n * sizeof(float));
            st->cap = n;
        }
        st->dev = x, st->n = n;
        w->be->download(w->be, st->host, x, n * sizeof(float));
        buf = st->host;
    }
    MPI_TRY(w,
            MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, s->comm, &r->req[r->n]),
            what);
    r->n++;
    return 0;
}

static int mpi_bucket_progress(ms_world *w, const char *what) {
    mpi_state *s = state_of(w);
    s->buckets.w = w, s->buckets.what = what;
    return test_all(&s->buckets) < 0 ? -1 : 0;
}

static int mpi_bucket_wait(ms_world *w, const char *what) {
    mpi_state *s = state_of(w);
    int n = s->buckets.n;
    if (wait_all(w, &s->buckets, what)) return -1;
    if (ms_comm_host_staged(w))
        for (int i = 0; i < n; i++) {
            const bucket_stage *st = &s->bstage[i];
            w->be->upload(w->be, st->dev, st->host, st->n * sizeof(float));
        }
    return 0;
}

static int mpi_broadcast(ms_world *w, void *buf, size_t bytes, int root, const char *what) {
    mpi_state *s = state_of(w);
    MS_ASSERT(bytes <= INT_MAX && root >= 0 && root < w->size);
    reserve_requests(&s->coll, 1);
    MPI_TRY(w, MPI_Ibcast(buf, (int)bytes, MPI_BYTE, root, s->comm, &s->coll.req[0]), what);
    s->coll.n = 1;
    return wait_all(w, &s->coll, what);
}

static void mpi_abort(ms_world *w, int status) { MPI_Abort(state_of(w)->comm, status); }

static void mpi_close(ms_world *w) {
    mpi_state *s = state_of(w);
    if (s->finalize) MPI_Finalize();
    free(s->coll.req);
    free(s->buckets.req);
    if (s->bstage)
        for (int i = 0; i < s->buckets.cap; i++) free(s->bstage[i].host);
    free(s->bstage);
    free(s->stage);
    free(s);
    free(w);
}

static const ms_world_ops mpi_ops = {.allreduce = mpi_allreduce,
                                     .allreduce_dev = mpi_allreduce_dev,
                                     .bucket_start = mpi_bucket_start,
                                     .bucket_progress = mpi_bucket_progress,
                                     .bucket_wait = mpi_bucket_wait,
                                     .broadcast = mpi_broadcast,
                                     .abort = mpi_abort,
                                     .close = mpi_close};

ms_world *ms_world_mpi(const ms_comm_env *env, ms_backend *be, double timeout_s, char *err,
                       size_t cap) {
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if (finalized) {
        snprintf(err, cap, "MPI was already finalized in this process");
        return NULL;
    }
    if (!inited) {
        int provided = 0;
        int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
        if (rc != MPI_SUCCESS) {
            char msg[MPI_MAX_ERROR_STRING];
            int len = 0;
            MPI_Error_string(rc, msg, &len);
            snprintf(err, cap, "MPI_Init_thread failed: %s", msg);
            return NULL;
        }
    }
    int rank = 0, size = 1;
    if (MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN) != MPI_SUCCESS ||
        MPI_Comm_rank(MPI_COMM_WORLD, &rank) != MPI_SUCCESS ||
        MPI_Comm_size(MPI_COMM_WORLD, &size) != MPI_SUCCESS) {
        snprintf(err, cap, "MPI_COMM_WORLD cannot be queried after MPI_Init");
        if (!inited) MPI_Finalize();
        return NULL;
    }
    mpi_state *s = ms_calloc(1, sizeof *s);
    s->comm = MPI_COMM_WORLD;
    s->finalize = !inited;
    ms_world *w = ms_calloc(1, sizeof *w);
    w->name = "mpi";
    w->ops = &mpi_ops;
    w->rank = rank, w->size = size;
    w->local_rank = env->local_rank;
    w->timeout_s = timeout_s;
    w->be = be;
    w->async_buckets = !ms_comm_host_staged(w);
    w->impl = s;
    return w;
}
