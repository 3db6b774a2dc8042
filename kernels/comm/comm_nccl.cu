/* Collectives over NCCL for the CUDA backend (kernels/comm/comm.h).
 *
 * libnccl is loaded with dlopen when a run asks for NCCL (the soname of the major version this file
 * was compiled against), as kernels/cuda/blas.cu loads cuBLAS: nothing links it, so a CPU-only
 * machine runs the same program. The collectives are queued on the backend's one stream, so they
 * follow the kernels that produced their data without a host wait; the host then polls, with the
 * world's deadline, the communicator's error state and an event recorded after them. The gradient
 * buckets are the exception: they run on a side stream, overlapped with the rest of the backward
 * (see "gradient buckets" below). The communicator is non-blocking (ncclConfig_t.blocking = 0):
 * even its creation, which waits for every rank, is polled, so a rank that never arrives ends in a
 * message and ncclCommAbort instead of a hang.
 *
 * The unique id travels through MPI when an MPI launcher started the ranks, else through a file
 * that rank 0 writes atomically into the run directory (srun without an MPI plugin):
 * .nccl-id.<SLURM job.step.restart>, or the path in MODSQUAD_NCCL_ID_FILE.
 *
 * Under the emulator (MS_SIMT) the entry points are the stand-ins of tests/simt/nccl.cc, whose
 * ranks are host threads of one test process; in a run every rank is a process of its own. */
#include "../cuda/cuda_common.h"

#ifdef MS_SIMT
#include "simt_nccl.h"
#else
#include <nccl.h>

#include "../dynlib.h"
#endif

#include <errno.h>
#include <mutex>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* This file is compiled only into builds with NCCL: comm.h's NCCL declarations apply. */
#define MS_HAVE_NCCL 1
extern "C" {
#include "comm.h"
}

/* The NCCL entry points modsquad calls (member, NCCL function). */
#define NCCL_ENTRY_POINTS(X)                                                                       \
    X(get_unique_id, ncclGetUniqueId)                                                              \
    X(init_rank_config, ncclCommInitRankConfig)                                                    \
    X(all_reduce, ncclAllReduce)                                                                   \
    X(broadcast, ncclBroadcast)                                                                    \
    X(group_start, ncclGroupStart)                                                                 \
    X(group_end, ncclGroupEnd)                                                                     \
    X(get_async_error, ncclCommGetAsyncError)                                                      \
    X(finalize, ncclCommFinalize)                                                                  \
    X(destroy, ncclCommDestroy)                                                                    \
    X(abort, ncclCommAbort)                                                                        \
    X(error_string, ncclGetErrorString)

/* Typed by the header's own declarations, so a signature mismatch does not compile. */
struct nccl_api {
#define NCCL_MEMBER(member, fn) decltype(&fn) member;
    NCCL_ENTRY_POINTS(NCCL_MEMBER)
#undef NCCL_MEMBER
};
static nccl_api g_nccl;

/* Fills g_nccl once per process. The lock matters only to the emulator's tests, whose ranks are
 * threads: none may see a half-filled table. */
static bool nccl_load(char *err, size_t cap) {
    static std::mutex once;
    std::lock_guard<std::mutex> hold(once);
    if (g_nccl.all_reduce) return true;
#ifdef MS_SIMT
    (void)err, (void)cap;
#define NCCL_BIND(member, fn) g_nccl.member = fn;
    NCCL_ENTRY_POINTS(NCCL_BIND)
#undef NCCL_BIND
#else
#define NCCL_MAJOR_STR MS_DYNLIB_STR(NCCL_MAJOR)
    static const ms_dynlib lib = {"libnccl.so." NCCL_MAJOR_STR, "NCCL",
                                  "install NCCL " NCCL_MAJOR_STR " (libnccl2) or add its "
                                  "directory to LD_LIBRARY_PATH, or use run.comm mpi",
                                  "NCCL 2.14 or newer is needed"};
    nccl_api api;
    const ms_dynsym syms[] = {
#define NCCL_SYMBOL(member, fn) {#fn, &api.member},
        NCCL_ENTRY_POINTS(NCCL_SYMBOL)
#undef NCCL_SYMBOL
    };
    if (!ms_dynlib_load(&lib, syms, sizeof syms / sizeof *syms, err, cap)) return false;
    g_nccl = api; /* the library stays loaded for the life of the process */
#endif
    return true;
}

/* A gradient bucket started during the backward. */
struct nccl_bucket {
    float *x;             /* device [n] */
    size_t n;
    cudaEvent_t ready;    /* recorded on the backend's stream when the bucket closed */
};

struct nccl_state {
    ncclComm_t comm;
    cudaEvent_t done;     /* recorded after the collective in flight */
    int phase;            /* 0: NCCL may still be queueing it; 1: queued, event recorded */
    cudaStream_t wait_stream; /* the stream of the collective in flight, and its event */
    cudaEvent_t wait_event;
    void *scratch;        /* device [scratch_bytes]: host collectives pass through it */
    size_t scratch_bytes;
    /* The gradient buckets run on a stream of their own, next to the backward's kernels. */
    cudaStream_t side;
    cudaEvent_t side_done;
    nccl_bucket *bucket;  /* [bucket_cap] started since the last bucket_wait */
    int n_bucket, bucket_cap;
    int launched;         /* of them, queued on `side` */
    ms_world *boot;       /* the MPI world that carried the unique id, or NULL */
    ms_world *w;
    const char *what;     /* the collective in flight, for messages */
};

static nccl_state *state_of(ms_world *w) { return (nccl_state *)w->impl; }

static int nccl_failed(const ms_world *w, ncclResult_t r, const char *call, const char *file,
                       int line, const char *what) {
    fprintf(stderr, "modsquad: error: rank %d of %d: %s:%d: %s failed during %s: %s\n",
            w->rank, w->size, file, line, call, what, g_nccl.error_string(r));
    return -1;
}

/* A queueing call of a non-blocking communicator: ncclInProgress means "being queued". */
#define NCCL_TRY(w, call, what)                                                                    \
    do {                                                                                           \
        ncclResult_t ms_r_ = (call);                                                               \
        if (ms_r_ != ncclSuccess && ms_r_ != ncclInProgress)                                       \
            return nccl_failed((w), ms_r_, #call, __FILE__, __LINE__, (what));                     \
    } while (0)

/* The communicator's state: 1 when it takes the next call, 0 while NCCL is still queueing
 * the last one in the background (ncclInProgress: no other NCCL call may be made until it
 * has), -1 when NCCL reports an error. */
static int comm_state(nccl_state *s) {
    ncclResult_t async = ncclSuccess;
    ncclResult_t r = g_nccl.get_async_error(s->comm, &async);
    if (r != ncclSuccess)
        return nccl_failed(s->w, r, "ncclCommGetAsyncError", __FILE__, __LINE__, s->what);
    if (async == ncclInProgress) return 0;
    if (async != ncclSuccess)
        return nccl_failed(s->w, async, "the NCCL communicator", __FILE__, __LINE__, s->what);
    return 1;
}

static int check_queued(void *arg) { return comm_state((nccl_state *)arg); }

/* ms_comm_poll's check: 1 when the collective (or the communicator's creation, with the event
 * phase skipped) has completed on s->wait_stream, 0 while it runs, -1 when NCCL or CUDA
 * reports an error. */
static int check(void *arg) {
    nccl_state *s = (nccl_state *)arg;
    int state = comm_state(s);
    if (state <= 0) return state;
    if (s->phase == 0) {
        CUDA_CHECK(cudaEventRecord(s->wait_event, s->wait_stream));
        s->phase = 1;
    }
    cudaError_t e = cudaEventQuery(s->wait_event);
    if (e == cudaErrorNotReady) return 0;
    CUDA_CHECK(e);
    return 1;
}

/* Waits for everything queued on the backend's stream since the last wait. After a failure
 * the caller stops every rank (ms_world_abort, which aborts the communicator). */
static int wait_done(ms_world *w, const char *what) {
    nccl_state *s = state_of(w);
    s->phase = 0;
    s->what = what;
    s->wait_stream = cuda_stream(w->be), s->wait_event = s->done;
    return ms_comm_poll(w, check, s, what);
}

static ncclDataType_t nccl_type(ms_comm_dtype t, size_t *size) {
    switch (t) {
    case MS_COMM_F32: *size = sizeof(float); return ncclFloat32;
    case MS_COMM_F64: *size = sizeof(double); return ncclFloat64;
    case MS_COMM_I64: *size = sizeof(int64_t); return ncclInt64;
    }
    ms_fatal("%s:%d: unknown collective data type %d", __FILE__, __LINE__, (int)t);
}

static int nccl_allreduce_dev(ms_world *w, float *x, size_t n, const char *what) {
    nccl_state *s = state_of(w);
    cudaStream_t stream = cuda_stream(w->be);
    NCCL_TRY(w, g_nccl.group_start(), what);
    for (size_t off = 0; off < n; off += MS_COMM_BUCKET_FLOATS) {
        size_t count = n - off < MS_COMM_BUCKET_FLOATS ? n - off : MS_COMM_BUCKET_FLOATS;
        NCCL_TRY(w,
                 g_nccl.all_reduce(x + off, x + off, count, ncclFloat32, ncclSum, s->comm, stream),
                 what);
    }
    NCCL_TRY(w, g_nccl.group_end(), what);
    return wait_done(w, what);
}

/* ---- gradient buckets ------------------------------------------------------------------------
 * A bucket closes while the kernels that produce its gradients may still be queued on the
 * backend's stream. Queued there, its all-reduce would wait for them and then hold up the
 * kernels behind it: nothing would overlap. It goes on the side stream instead, but only once
 * the host has seen the event recorded behind those kernels complete, so it never reads a
 * gradient before its last kernel has written it; the buckets are launched in the order they
 * started, which is every rank's order. The host looks at each report of the backward and,
 * once the backward is queued, keeps looking in bucket_wait while the device computes the
 * remaining layers. What runs on the backend's stream after bucket_wait returns was queued
 * after the host saw the side stream finish, so it sees the sums. */

/* Launches, in order, the started buckets whose gradients are complete. */
static int launch_ready(ms_world *w, const char *what) {
    nccl_state *s = state_of(w);
    s->what = what;
    while (s->launched < s->n_bucket) {
        nccl_bucket *b = &s->bucket[s->launched];
        cudaError_t e = cudaEventQuery(b->ready);
        if (e == cudaErrorNotReady) return 0;
        CUDA_CHECK(e);
        NCCL_TRY(w, g_nccl.all_reduce(b->x, b->x, b->n, ncclFloat32, ncclSum, s->comm, s->side),
                 what);
        s->launched++;
        /* The next NCCL call waits until NCCL has queued this one. */
        if (ms_comm_poll(w, check_queued, s, what)) return -1;
    }
    return 0;
}

static int nccl_bucket_start(ms_world *w, float *x, size_t n, const char *what) {
    nccl_state *s = state_of(w);
    if (s->n_bucket == s->bucket_cap) {
        int cap = s->bucket_cap ? 2 * s->bucket_cap : 16;
        nccl_bucket *b = (nccl_bucket *)realloc(s->bucket, (size_t)cap * sizeof *b);
        if (!b) ms_fatal("out of memory for %d gradient buckets", cap);
        for (int i = s->bucket_cap; i < cap; i++)
            CUDA_CHECK(cudaEventCreateWithFlags(&b[i].ready, cudaEventDisableTiming));
        s->bucket = b;
        s->bucket_cap = cap;
    }
    nccl_bucket *b = &s->bucket[s->n_bucket++];
    b->x = x, b->n = n;
    CUDA_CHECK(cudaEventRecord(b->ready, cuda_stream(w->be)));
    return launch_ready(w, what);
}

static int nccl_bucket_progress(ms_world *w, const char *what) { return launch_ready(w, what); }

/* ms_comm_poll's check for bucket_wait: launches the buckets as the backward completes them,
 * then waits for the side stream. */
static int check_buckets(void *arg) {
    nccl_state *s = (nccl_state *)arg;
    if (launch_ready(s->w, s->what)) return -1;
    if (s->launched < s->n_bucket) return 0;
    return check(s);
}

static int nccl_bucket_wait(ms_world *w, const char *what) {
    nccl_state *s = state_of(w);
    s->phase = 0;
    s->what = what;
    s->wait_stream = s->side, s->wait_event = s->side_done;
    int rc = ms_comm_poll(w, check_buckets, s, what);
    s->n_bucket = s->launched = 0;
    return rc;
}

/* Device scratch of at least `bytes` for a host collective (grows to the largest one). */
static void *scratch(ms_world *w, size_t bytes) {
    nccl_state *s = state_of(w);
    if (bytes > s->scratch_bytes) {
        if (s->scratch) w->be->free(w->be, s->scratch);
        s->scratch = w->be->alloc(w->be, bytes);
        if (!s->scratch) ms_fatal("out of CUDA memory for %zu bytes of collective scratch", bytes);
        s->scratch_bytes = bytes;
    }
    return s->scratch;
}

static int nccl_allreduce(ms_world *w, void *x, size_t n, ms_comm_dtype t, ms_comm_op op,
                          const char *what) {
    nccl_state *s = state_of(w);
    size_t elem;
    ncclDataType_t type = nccl_type(t, &elem);
    void *d = scratch(w, n * elem);
    cudaStream_t stream = cuda_stream(w->be);
    CUDA_CHECK(cudaMemcpyAsync(d, x, n * elem, cudaMemcpyHostToDevice, stream));
    ncclRedOp_t rop = op == MS_COMM_MAX ? ncclMax : ncclSum;
    NCCL_TRY(w, g_nccl.all_reduce(d, d, n, type, rop, s->comm, stream), what);
    if (wait_done(w, what)) return -1;
    /* The stream is idle now: this copy cannot wait on a peer. */
    CUDA_CHECK(cudaMemcpyAsync(x, d, n * elem, cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    return 0;
}

static int nccl_broadcast(ms_world *w, void *buf, size_t bytes, int root, const char *what) {
    nccl_state *s = state_of(w);
    void *d = scratch(w, bytes);
    cudaStream_t stream = cuda_stream(w->be);
    CUDA_CHECK(cudaMemcpyAsync(d, buf, bytes, cudaMemcpyHostToDevice, stream));
    NCCL_TRY(w, g_nccl.broadcast(d, d, bytes, ncclUint8, root, s->comm, stream), what);
    if (wait_done(w, what)) return -1;
    CUDA_CHECK(cudaMemcpyAsync(buf, d, bytes, cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    return 0;
}

static void nccl_abort(ms_world *w, int status) {
    nccl_state *s = state_of(w);
    g_nccl.abort(s->comm);
    if (s->boot) s->boot->ops->abort(s->boot, status);
}

static void release_streams(nccl_state *s) {
    for (int i = 0; i < s->bucket_cap; i++) CUDA_CHECK(cudaEventDestroy(s->bucket[i].ready));
    free(s->bucket);
    CUDA_CHECK(cudaEventDestroy(s->side_done));
    CUDA_CHECK(cudaStreamDestroy(s->side));
    CUDA_CHECK(cudaEventDestroy(s->done));
}

static void nccl_close(ms_world *w) {
    nccl_state *s = state_of(w);
    /* A non-blocking communicator finalizes in the background: wait (bounded), then free. */
    ncclResult_t r = g_nccl.finalize(s->comm);
    double t0 = ms_now();
    ncclResult_t async = r;
    while (async == ncclInProgress && ms_now() - t0 < w->timeout_s &&
           g_nccl.get_async_error(s->comm, &async) == ncclSuccess)
        sched_yield();
    if (async == ncclSuccess) g_nccl.destroy(s->comm);
    else g_nccl.abort(s->comm);
    release_streams(s);
    if (s->scratch) w->be->free(w->be, s->scratch);
    if (s->boot) ms_world_close(s->boot);
    free(s);
    free(w);
}

static const ms_world_ops nccl_ops = {nccl_allreduce,       nccl_allreduce_dev, nccl_bucket_start,
                                      nccl_bucket_progress, nccl_bucket_wait,   nccl_broadcast,
                                      nccl_abort,           nccl_close};

/* ---- the unique id ------------------------------------------------------------------------- */

/* Rank 0 writes the id under a temporary name and renames it, so a reader never sees half. */
static int write_id(const char *path, const ncclUniqueId *id, char *err, size_t cap) {
    char tmp[4200];
    int len = snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    if (len < 0 || (size_t)len >= sizeof tmp) {
        snprintf(err, cap, "the NCCL rendezvous path %s is too long", path);
        return -1;
    }
    FILE *f = fopen(tmp, "wb");
    bool ok = f && fwrite(id, sizeof *id, 1, f) == 1;
    if (f) ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        snprintf(err, cap, "cannot write the NCCL rendezvous file %s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* The other ranks wait for the file, at most timeout_s. */
static int read_id(const char *path, ncclUniqueId *id, double timeout_s, char *err, size_t cap) {
    double t0 = ms_now();
    for (;;) {
        struct stat st;
        if (stat(path, &st) == 0 && (size_t)st.st_size == sizeof *id) {
            FILE *f = fopen(path, "rb");
            bool ok = f && fread(id, sizeof *id, 1, f) == 1;
            if (f) fclose(f);
            if (ok) return 0;
        }
        if (ms_now() - t0 > timeout_s) {
            snprintf(err, cap,
                     "rank 0 did not write the NCCL rendezvous file %s within %.0f s (did it "
                     "start? do all ranks see the same run directory?)",
                     path, timeout_s);
            return -1;
        }
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static int share_id(const ms_comm_env *env, ms_world *boot, const char *dir, double timeout_s,
                    ncclUniqueId *id, char *path, size_t path_cap, char *err, size_t cap) {
    path[0] = 0;
    ncclResult_t r = ncclSuccess;
    if (env->rank == 0) r = g_nccl.get_unique_id(id);
    if (r != ncclSuccess) {
        snprintf(err, cap, "ncclGetUniqueId failed: %s", g_nccl.error_string(r));
        return -1;
    }
    if (env->world == 1) return 0;
    if (boot) {
        if (ms_world_broadcast(boot, id, sizeof *id, 0, "the broadcast of the NCCL unique id")) {
            snprintf(err, cap, "the NCCL unique id could not be shared through MPI");
            return -1;
        }
        return 0;
    }
    const char *file = getenv("MODSQUAD_NCCL_ID_FILE");
    if (file && *file) {
        snprintf(path, path_cap, "%s", file);
    } else if (env->job[0] && dir) {
        snprintf(path, path_cap, "%s/.nccl-id.%s", dir, env->job);
    } else {
        snprintf(err, cap,
                 "%s started %d ranks without MPI and without a SLURM job id to name the NCCL "
                 "rendezvous file; start them with srun or mpirun, or set MODSQUAD_NCCL_ID_FILE "
                 "to a path that every rank sees",
                 env->launcher, env->world);
        return -1;
    }
    return env->rank == 0 ? write_id(path, id, err, cap) : read_id(path, id, timeout_s, err, cap);
}

ms_world *ms_world_nccl(const ms_comm_env *env, ms_backend *be, ms_world *boot,
                        const char *rendezvous_dir, double timeout_s, char *err, size_t cap) {
    if (!nccl_load(err, cap)) return NULL;
    CUDA_CHECK(cudaSetDevice(cuda_of(be)->device));
    ncclUniqueId id;
    char path[4200];
    if (share_id(env, boot, rendezvous_dir, timeout_s, &id, path, sizeof path, err, cap))
        return NULL;

    nccl_state *s = (nccl_state *)ms_calloc(1, sizeof *s);
    ms_world *w = (ms_world *)ms_calloc(1, sizeof *w);
    w->name = "nccl";
    w->ops = &nccl_ops;
    w->rank = env->rank, w->size = env->world, w->local_rank = env->local_rank;
    w->timeout_s = timeout_s;
    w->be = be;
    w->async_buckets = 1;
    w->impl = s;
    s->w = w;
    s->boot = boot;
    CUDA_CHECK(cudaEventCreateWithFlags(&s->done, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&s->side_done, cudaEventDisableTiming));
    CUDA_CHECK(cudaStreamCreateWithFlags(&s->side, cudaStreamNonBlocking));
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclResult_t r = g_nccl.init_rank_config(&s->comm, env->world, id, env->rank, &config);
    int rc = r == ncclSuccess || r == ncclInProgress ? 0 : -1;
    if (rc) {
        snprintf(err, cap, "ncclCommInitRankConfig failed: %s", g_nccl.error_string(r));
    } else {
        /* Creation completes once every rank has joined: poll it like a collective (the event
         * phase then finds an empty stream). */
        rc = wait_done(w, "the NCCL communicator's creation");
        if (rc) {
            g_nccl.abort(s->comm);
            snprintf(err, cap, "the NCCL communicator was not created (see above)");
        }
    }
    /* Creation completes only after every rank has read the file; after a failure the file
     * is of no use to a late rank either. */
    if (env->rank == 0 && path[0]) unlink(path);
    if (rc) {
        release_streams(s);
        s->boot = NULL; /* the caller closes it */
        free(s);
        free(w);
        return NULL;
    }
    return w;
}
