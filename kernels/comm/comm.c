/* Choosing the collectives of a run and what every implementation shares: the bounded wait,
 * the gradient all-reduce, the MI-statistics hook, the agreement checks (kernels/comm/comm.h). */
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

int ms_world_sum_grads(ms_world *w, float *g, size_t n, float scale) {
    if (w->size > 1 && n && w->ops->allreduce_dev(w, g, n, "the gradient all-reduce")) return -1;
    if (scale != 1.0f) {
        if (w->be) {
            w->be->scale_f32(w->be, g, scale, n);
        } else {
            for (size_t i = 0; i < n; i++) g[i] *= scale;
        }
    }
    return 0;
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
