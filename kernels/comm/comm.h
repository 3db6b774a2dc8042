/* Collectives between the ranks of a data-parallel run (DESIGN.md: kernels/comm). One rank per
 * process; every rank runs the same program on its own shard of each global batch and the ranks
 * meet only in the collectives below:
 *
 *   none  one process: every collective is the identity (comm_none.c)
 *   mpi   MPI (OpenMPI from Debian); the CPU backend's buffers are host memory, any other
 *         backend's are staged through the host (comm_mpi.c, built when mpicc is found)
 *   nccl  NCCL on the CUDA backend's stream, its unique id shared through MPI or, under srun
 *         without MPI, through a file in the run directory (comm_nccl.cu, built when nvcc and
 *         nccl.h are found; libnccl is loaded at run time, like cuBLAS)
 *
 * Rank, world size and local rank come from the launcher's environment (ms_comm_env_detect),
 * so a run knows its place before it touches MPI or a GPU.
 *
 * Failure is bounded: every collective waits at most the world's timeout. A collective that
 * does not complete in time (a rank died or hangs), or that the library reports as failed,
 * prints a message naming this rank, the collective and the timeout, and returns -1; the caller
 * then stops every rank with ms_world_abort. Results are the same on every rank (the reductions
 * are commutative sums and maxima combined in one tree shape), so replicated state such as the
 * weights stays identical across ranks. */
#ifndef MS_COMM_H
#define MS_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "../backend.h"
#include "../util.h"

/* Where this process stands, from the launcher's environment. */
typedef struct {
    int rank, world;             /* this rank of `world` */
    int local_rank, local_world; /* on this node (picks the GPU) */
    char launcher[16];           /* "OpenMPI", "PMIx", "PMI", "SLURM" or "none" */
    int mpi;                     /* an MPI launcher started us: MPI_Init finds the peers */
    char job[160];               /* names this launch (SLURM job, step and restart) for a
                                  * file rendezvous; "" when the launcher gives none */
} ms_comm_env;

/* Reads, in this order: OpenMPI's OMPI_COMM_WORLD_*, PMIx's PMIX_RANK (with SLURM's
 * sizes), MPICH/Hydra's PMI_RANK / PMI_SIZE, and SLURM's SLURM_PROCID / SLURM_STEP_NUM_TASKS /
 * SLURM_LOCALID (set by srun inside a job step, not in the batch script itself). Without any of
 * them: rank 0 of 1. */
void ms_comm_env_detect(ms_comm_env *e);

/* The GPU of this rank: its local rank modulo the GPUs this process sees (0 when the launcher
 * gives every rank its own GPU through CUDA_VISIBLE_DEVICES); -1 in a build without CUDA or on
 * a machine without a GPU. */
int ms_comm_gpu_of(const ms_comm_env *e);

typedef enum { MS_COMM_F32, MS_COMM_F64, MS_COMM_I64 } ms_comm_dtype;
typedef enum { MS_COMM_SUM, MS_COMM_MAX } ms_comm_op;

typedef struct ms_world ms_world;

/* One implementation's collectives. Each returns 0, or -1 after printing what failed (never
 * exits). `what` names the collective in messages ("the gradient all-reduce"). */
typedef struct {
    /* x[n] of type t in HOST memory, reduced over all ranks in place. */
    int (*allreduce)(ms_world *w, void *x, size_t n, ms_comm_dtype t, ms_comm_op op,
                     const char *what);
    /* x[n] fp32 SUM in the memory of the world's backend (device pointers), in place, in
     * buckets of MS_COMM_BUCKET_FLOATS that are all in flight at once, so a large array takes
     * a few large messages. */
    int (*allreduce_dev)(ms_world *w, float *x, size_t n, const char *what);
    /* The gradient buckets of ms_grad_sync, in three parts so that they can run while the
     * backward goes on. bucket_start begins the in-place SUM of x[n] (device memory of the
     * world's backend), whose values are final once the work the backend has queued so far has
     * run, and returns without waiting for it; bucket_progress lets the started buckets advance
     * (MPI moves data only inside its calls; NCCL launches the buckets whose inputs are ready);
     * bucket_wait waits for every bucket started since the last wait. Every rank starts the
     * same buckets in the same order. */
    int (*bucket_start)(ms_world *w, float *x, size_t n, const char *what);
    int (*bucket_progress)(ms_world *w, const char *what);
    int (*bucket_wait)(ms_world *w, const char *what);
    /* bytes of root's host buffer to every rank. */
    int (*broadcast)(ms_world *w, void *buf, size_t bytes, int root, const char *what);
    /* Ends every rank of the world with `status` as fast as the library can; may return when
     * it cannot reach the others (ms_world_abort then exits this process). */
    void (*abort)(ms_world *w, int status);
    void (*close)(ms_world *w);
} ms_world_ops;

struct ms_world {
    const char *name;    /* "none", "mpi", "nccl" */
    const ms_world_ops *ops;
    int rank, size;      /* this rank of `size` */
    int local_rank;
    double timeout_s;    /* the longest any collective waits */
    ms_backend *be;      /* whose memory allreduce_dev sees (NULL: host memory) */
    int async_buckets;   /* bucket_start returns without waiting for the device, so buckets
                          * can start during the backward (not when staged through the host) */
    void *impl;          /* the implementation's state */
};

/* run.comm, in the same order as model/config.h's ms_comm (the kernels do not read configs). */
typedef enum { MS_WORLD_AUTO, MS_WORLD_NONE, MS_WORLD_MPI, MS_WORLD_NCCL } ms_world_kind;

typedef struct {
    ms_world_kind kind;
    double timeout_s;           /* > 0 */
    const char *rendezvous_dir; /* NCCL without MPI: where rank 0 leaves the unique id (a
                                 * directory every rank sees: the run directory) */
} ms_world_opts;

/* The default collective timeout, seconds: long enough for rank 0 to write a checkpoint while
 * the others wait at the next collective. MODSQUAD_COMM_TIMEOUT overrides it. */
#define MS_COMM_TIMEOUT_DEFAULT 600.0

/* Opens the collectives for env's rank on backend be. auto: none for a world of 1, else NCCL
 * on a CUDA backend (when built with it) and MPI otherwise. Returns NULL with the reason in
 * err[cap]: an explicit kind this build lacks, NCCL on the CPU, a world of several ranks with
 * run.comm none, a failed MPI or NCCL start, a rendezvous that timed out. */
ms_world *ms_world_open(const ms_world_opts *o, const ms_comm_env *env, ms_backend *be,
                        char *err, size_t cap);
/* Ends the collectives (MPI_Finalize waits for every rank to get there). NULL is fine. */
void ms_world_close(ms_world *w);

static inline int ms_world_allreduce(ms_world *w, void *x, size_t n, ms_comm_dtype t,
                                     ms_comm_op op, const char *what) {
    return w->size == 1 || n == 0 ? 0 : w->ops->allreduce(w, x, n, t, op, what);
}
static inline int ms_world_broadcast(ms_world *w, void *buf, size_t bytes, int root,
                                     const char *what) {
    return w->size == 1 || bytes == 0 ? 0 : w->ops->broadcast(w, buf, bytes, root, what);
}

/* ---- the gradient all-reduce, overlapped with the backward ------------------------------ */

/* The flat gradient buffer g[n] (DESIGN.md principle 3) is summed over the ranks in a few
 * large buckets. During the backward the model reports each range of g as it becomes final
 * (ms_grad_sync_ready is its grads_ready hook, model/model.h); consecutive ranges that are
 * adjacent in g are coalesced into the bucket being filled, which closes when it reaches
 * ms_grad_bucket_floats(n) floats or when a range arrives that does not touch it. With overlap
 * a bucket's all-reduce starts as soon as it closes, while the backward computes the layers
 * below; without, the same buckets start after the backward. The buckets depend only on the
 * order of the ranges, which is the model's, so both ways sum the same bytes in the same
 * messages and give the same bits. */
#define MS_COMM_BUCKET_FLOATS ((size_t)8 << 20) /* the largest bucket: 32 MiB of fp32 */
#define MS_COMM_BUCKETS 4 /* a model smaller than 4 x 32 MiB still gets about 4 buckets */

/* The bucket size for a buffer of n floats: n / MS_COMM_BUCKETS (rounded up), at most
 * MS_COMM_BUCKET_FLOATS. */
size_t ms_grad_bucket_floats(size_t n);

typedef struct ms_grad_sync ms_grad_sync;

/* overlap 0 starts every bucket after the backward. A world without async_buckets (a GPU
 * backend over MPI, staged through host memory) never overlaps: staging a bucket would stop
 * the host until the device has caught up. */
ms_grad_sync *ms_grad_sync_create(ms_world *w, int overlap);
void ms_grad_sync_destroy(ms_grad_sync *s);
/* 1 when the buckets start during the backward. */
int ms_grad_sync_overlaps(const ms_grad_sync *s);
/* Arms s for one backward over the gradient buffer g[n] (the last micro-batch of a step): the
 * ranges reported from now until ms_grad_sync_finish are summed. Unarmed, reports are ignored,
 * so the earlier micro-batches of an accumulation only accumulate. */
void ms_grad_sync_arm(ms_grad_sync *s, float *g, size_t n);
/* The model's hook (ctx = s): g[offset, offset + count) holds its final value for this
 * backward once the work queued on the backend so far has run. Never fails: a collective that
 * cannot start is reported by ms_grad_sync_finish. */
void ms_grad_sync_ready(void *ctx, size_t offset, size_t count);
/* After the backward: starts the buckets not yet started, waits for all, and scales g by
 * `scale` (1 / (world x micro-steps): the mean gradient of the global batch). The ranges must
 * have covered g exactly once (else an internal error). 0, or -1 after printing what failed;
 * the caller then stops every rank (ms_world_abort). */
int ms_grad_sync_finish(ms_grad_sync *s, float scale);
/* The buckets of the last finish, and how many of them had started before it. */
int ms_grad_sync_buckets(const ms_grad_sync *s, int *started_early);

/* Sums device floats x[n] over the ranks for the model's MI-statistics hook (ms_sum_fn of
 * model/vit.h, ctx = the world). The hook cannot return an error, so a failure stops every
 * rank here (ms_world_abort). */
void ms_world_sum_hook(void *ctx, float *x, size_t n);

/* 1 when every rank passed the same 64-bit value (e.g. a hash of the weights), else 0; -1 when
 * the collective failed. */
int ms_world_same(ms_world *w, uint64_t value, const char *what);

/* Stops every rank with `status` (after the caller printed why) and exits this one. */
MS_NORETURN void ms_world_abort(ms_world *w, int status);

/* A 64-bit hash of bytes (FNV-1a's step over 8-byte words); chain calls through h, starting
 * from MS_COMM_HASH_SEED. Not cryptographic: it tells replicas that drifted apart. */
uint64_t ms_comm_hash(const void *p, size_t bytes, uint64_t h);
#define MS_COMM_HASH_SEED 0xcbf29ce484222325ull

/* ---- implementations (internal to kernels/comm) --------------------------------------------- */

ms_world *ms_world_none(void);
/* 1 when the world's backend keeps its buffers where the host cannot read them (CUDA): MPI then
 * stages device data through host memory. */
int ms_comm_host_staged(const ms_world *w);
#ifdef MS_HAVE_MPI
/* MPI_Init (thread level funneled: only the main thread calls MPI) and MPI_COMM_WORLD with
 * errors returned, not fatal. NULL with err when MPI cannot start. */
ms_world *ms_world_mpi(const ms_comm_env *env, ms_backend *be, double timeout_s, char *err,
                       size_t cap);
#endif
#ifdef MS_HAVE_NCCL
/* NCCL over the CUDA backend be, bootstrapped by `boot` (an MPI world that carries the unique
 * id and stays open for the host collectives' fallback) or, when boot is NULL, by the file
 * rendezvous_dir/.nccl-id.<job> that rank 0 writes and the others wait for. */
ms_world *ms_world_nccl(const ms_comm_env *env, ms_backend *be, ms_world *boot,
                        const char *rendezvous_dir, double timeout_s, char *err, size_t cap);
#endif

/* Waits for *done() to become true, polling with a growing sleep (a spin at first: a
 * collective on one node completes in microseconds), for at most w->timeout_s. 0 when done,
 * -1 (after printing the timeout message naming `what`) when not. check returns 1 done,
 * 0 pending, -1 failed (it printed why). */
int ms_comm_poll(const ms_world *w, int (*check)(void *arg), void *arg, const char *what);

#endif
