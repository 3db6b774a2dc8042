/* The NCCL collectives of kernels/comm/comm_nccl.cu, executed against the NCCL stand-in
 * (tests/simt/nccl.cc): two or three ranks are threads of this test process, each with its own
 * emulated GPU and CUDA backend, and they meet as under srun without MPI (the unique id goes
 * through a rendezvous file, the communicator is non-blocking and polled). Checked: the
 * gradient all-reduce in buckets, the MI-statistics hook, host all-reduces, the agreement check
 * and the broadcast against sums computed here in rank order (the stand-in's order, so equal to
 * the bit); and the bounded failures: a rank that never reaches a collective, never joins the
 * communicator or never writes the unique id makes the others stop after the world's timeout
 * with comm.h's message; a rank that aborts makes the others fail at once with NCCL's error;
 * two ranks on one GPU are refused. */
#include "harness.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../../kernels/comm/comm.h"

/* Emulator controls (tests/simt/simt_runtime.h and simt_nccl.h, C++ only). */
void simt_set_device_count(int n);
struct simt_nccl_stats {
    unsigned long collectives, groups;
    size_t largest;
};
void simt_nccl_get_stats(struct simt_nccl_stats *stats);

#define MAX_RANKS 3
#define SHORT_TIMEOUT_S 1.0 /* the failure tests wait it out */
#define LONG_TIMEOUT_S 30.0 /* never reached by a test that passes */
#define HOST_N 5            /* values of the host all-reduce */
#define BCAST_BYTES 13      /* an odd size: the broadcast moves bytes */

typedef struct rank_run rank_run;

/* One rank: its inputs, its world and what it saw. */
struct rank_run {
    int rank, world;
    ms_backend *be;
    const char *dir; /* the rendezvous directory (the run directory of a real run) */
    ms_world_kind kind;
    double timeout_s;
    void (*body)(rank_run *r); /* what the rank does once its world is open */
    pthread_barrier_t *meet;   /* all ranks, for the bodies that order them */
    ms_world *w;
    const char *world_name;
    char err[512];
    int opened;
    int rc;        /* the scenario's collective: 0 or -1 */
    double waited; /* seconds the scenario's collective (or the opening) took */
    /* inputs [n] and results */
    size_t n;
    const float *grads; /* [n] */
    float *got;         /* [n] gradients after the all-reduce */
    float stats_got[37];
    double host_f64[HOST_N];
    int64_t host_i64[3];
    int same_yes, same_no;
    unsigned char bcast[BCAST_BYTES];
};

/* A scenario: `world` ranks, each with its own emulated GPU and backend (all on GPU 0 with
 * shared_gpu), a fresh rendezvous directory, a barrier of all ranks, and one body. */
typedef struct {
    int world;
    rank_run r[MAX_RANKS];
    char dir[64], log[128]; /* log: the ranks' stderr while they run */
    pthread_barrier_t meet;
} scenario;

static void begin(scenario *s, int world, double timeout_s, int shared_gpu,
                  void (*body)(rank_run *r)) {
    memset(s, 0, sizeof *s);
    s->world = world;
    tu_tmpdir_make(s->dir, sizeof s->dir, "nccl");
    snprintf(s->log, sizeof s->log, "%s/stderr", s->dir);
    pthread_barrier_init(&s->meet, NULL, (unsigned)world);
    simt_set_device_count(world);
    for (int i = 0; i < world; i++) {
        rank_run *r = &s->r[i];
        char err[256];
        r->rank = i, r->world = world;
        r->be = ms_backend_cuda_create(shared_gpu ? 0 : i, MS_F32, 0, err, sizeof err);
        cr_assert_not_null(r->be, "emulated CUDA backend %d: %s", i, err);
        r->dir = s->dir;
        r->kind = MS_WORLD_NCCL;
        r->timeout_s = timeout_s;
        r->body = body;
        r->meet = &s->meet;
    }
}

static void *rank_main(void *arg) {
    rank_run *r = arg;
    ms_comm_env env = {.rank = r->rank, .world = r->world, .local_rank = r->rank,
                       .local_world = r->world};
    snprintf(env.launcher, sizeof env.launcher, "SLURM");
    snprintf(env.job, sizeof env.job, "simt-test");
    ms_world_opts o = {r->kind, r->timeout_s, r->dir};
    double t0 = ms_now();
    r->w = ms_world_open(&o, &env, r->be, r->err, sizeof r->err);
    r->waited = ms_now() - t0;
    r->opened = r->w != NULL;
    if (r->w) r->world_name = r->w->name;
    if (r->body) r->body(r);
    return NULL;
}

/* Runs ranks [first, first + n) as threads (the others never start), waits for them, and
 * returns what they wrote to stderr. */
static char *run(scenario *s, int first, int n) {
    fflush(stderr);
    int saved = dup(2), fd = open(s->log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert(saved >= 0 && fd >= 0, "cannot redirect stderr to %s", s->log);
    dup2(fd, 2);
    close(fd);
    pthread_t t[MAX_RANKS];
    for (int i = first; i < first + n; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, rank_main, &s->r[i]), 0, "pthread_create");
    for (int i = first; i < first + n; i++) pthread_join(t[i], NULL);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    FILE *f = fopen(s->log, "r");
    cr_assert_not_null(f, "cannot read %s", s->log);
    char *text = (char *)tu_bytes(1 << 16);
    size_t len = fread(text, 1, (1 << 16) - 1, f);
    text[len] = 0;
    fclose(f);
    return text;
}

static void end(scenario *s) {
    for (int i = 0; i < s->world; i++) s->r[i].be->destroy(s->r[i].be);
    pthread_barrier_destroy(&s->meet);
    tu_tmpdir_remove(s->dir);
}

/* A device copy of x[n] on r's backend. */
static float *upload(rank_run *r, const float *x, size_t n) {
    float *d = r->be->alloc(r->be, n * sizeof(float));
    r->be->upload(r->be, d, x, n * sizeof(float));
    return d;
}

/* ---- the collectives against direct sums ---------------------------------------------------- */

static void sum_grads_body(rank_run *r) {
    if (!r->w) return;
    float *d = upload(r, r->grads, r->n);
    r->rc = ms_world_sum_grads(r->w, d, r->n, 1.0f);
    r->be->download(r->be, r->got, d, r->n * sizeof(float));
    r->be->free(r->be, d);
    ms_world_close(r->w);
}

/* 8M + 5 floats per rank: two buckets in one group, the second of 5 floats. */
Test(nccl, gradient_all_reduce_in_buckets, .timeout = 60) {
    scenario s;
    begin(&s, 3, LONG_TIMEOUT_S, 0, sum_grads_body);
    rank_run *r = s.r;
    size_t n = MS_COMM_BUCKET_FLOATS + 5;
    for (int i = 0; i < 3; i++) {
        float *g = tu_floats(n);
        tu_rng rng = tu_seed(700 + (uint64_t)i);
        tu_fill(&rng, g, n, -1, 1);
        r[i].grads = g, r[i].n = n, r[i].got = tu_floats(n);
    }
    float *want = tu_floats(n);
    for (size_t k = 0; k < n; k++) want[k] = (r[0].grads[k] + r[1].grads[k]) + r[2].grads[k];
    run(&s, 0, 3);
    for (int i = 0; i < 3; i++) {
        cr_assert(r[i].opened, "rank %d: %s", i, r[i].err);
        cr_assert_str_eq(r[i].world_name, "nccl");
        cr_assert_eq(r[i].rc, 0, "rank %d: the gradient all-reduce failed", i);
        char what[64];
        snprintf(what, sizeof what, "rank %d: summed gradients", i);
        tu_expect_equal(what, r[i].got, want, n);
    }
    struct simt_nccl_stats st;
    simt_nccl_get_stats(&st);
    cr_assert_eq(st.collectives, 2, "%lu all-reduces, expected 2 buckets", st.collectives);
    cr_assert_eq(st.largest, MS_COMM_BUCKET_FLOATS, "largest collective: %zu floats", st.largest);
    cr_assert_eq(st.groups, 3, "%lu groups, expected one per rank", st.groups);
    end(&s);
}

/* The mean gradient (scaled on the device), the MI statistics, host reductions of doubles and
 * int64 maxima, the agreement check, a broadcast from rank 1; run.comm auto picks NCCL. */
static void collectives_body(rank_run *r) {
    if (!r->w) return;
    float *d = upload(r, r->grads, r->n);
    r->rc = ms_world_sum_grads(r->w, d, r->n, 1.0f / 3.0f);
    r->be->download(r->be, r->got, d, r->n * sizeof(float));
    r->be->free(r->be, d);

    float stats[37];
    for (int k = 0; k < 37; k++) stats[k] = (float)(r->rank + 1) * 0.25f + (float)k;
    float *ds = upload(r, stats, 37);
    ms_world_sum_hook(r->w, ds, 37); /* stops every rank on failure */
    r->be->download(r->be, r->stats_got, ds, sizeof stats);
    r->be->free(r->be, ds);

    for (int k = 0; k < HOST_N; k++) r->host_f64[k] = 0.1 * (r->rank + 1) * (k + 1);
    r->host_i64[0] = 10 * r->rank - 5, r->host_i64[1] = -r->rank, r->host_i64[2] = 7;
    r->rc |= ms_world_allreduce(r->w, r->host_f64, HOST_N, MS_COMM_F64, MS_COMM_SUM, "f64 sum");
    r->rc |= ms_world_allreduce(r->w, r->host_i64, 3, MS_COMM_I64, MS_COMM_MAX, "i64 max");
    r->same_yes = ms_world_same(r->w, 0x5eed, "same value");
    r->same_no = ms_world_same(r->w, 0x5eed + ((uint64_t)(r->rank == 1) << 8), "rank 1 differs");

    for (int k = 0; k < BCAST_BYTES; k++) r->bcast[k] = (unsigned char)(16 * r->rank + k);
    r->rc |= ms_world_broadcast(r->w, r->bcast, BCAST_BYTES, 1, "broadcast");
    ms_world_close(r->w);
}

Test(nccl, collectives_match_direct_sums, .timeout = 60) {
    scenario s;
    begin(&s, 3, LONG_TIMEOUT_S, 0, collectives_body);
    rank_run *r = s.r;
    size_t n = 1001;
    for (int i = 0; i < 3; i++) {
        float *g = tu_floats(n);
        tu_rng rng = tu_seed(710 + (uint64_t)i);
        tu_fill(&rng, g, n, -10, 10);
        r[i].grads = g, r[i].n = n, r[i].got = tu_floats(n);
        r[i].kind = MS_WORLD_AUTO;
    }
    run(&s, 0, 3);
    float *want = tu_floats(n);
    for (size_t k = 0; k < n; k++)
        want[k] = ((r[0].grads[k] + r[1].grads[k]) + r[2].grads[k]) * (1.0f / 3.0f);
    for (int i = 0; i < 3; i++) {
        cr_assert(r[i].opened, "rank %d: %s", i, r[i].err);
        cr_assert_str_eq(r[i].world_name, "nccl", "run.comm auto on the CUDA backend");
        cr_assert_eq(r[i].rc, 0, "rank %d: a collective failed", i);
        tu_expect_equal("mean gradient", r[i].got, want, n);
        for (int k = 0; k < 37; k++) {
            float s = 0.0f;
            for (int q = 0; q < 3; q++) s += (float)(q + 1) * 0.25f + (float)k;
            cr_assert_eq(r[i].stats_got[k], s, "rank %d: MI statistic %d: %g, want %g", i, k,
                         (double)r[i].stats_got[k], (double)s);
        }
        for (int k = 0; k < HOST_N; k++) {
            double s = 0.0;
            for (int q = 0; q < 3; q++) s += 0.1 * (q + 1) * (k + 1);
            cr_assert_eq(r[i].host_f64[k], s, "rank %d: f64 sum %d: %.17g, want %.17g", i, k,
                         r[i].host_f64[k], s);
        }
        cr_assert(r[i].host_i64[0] == 15 && r[i].host_i64[1] == 0 && r[i].host_i64[2] == 7,
                  "rank %d: i64 max: %lld %lld %lld", i, (long long)r[i].host_i64[0],
                  (long long)r[i].host_i64[1], (long long)r[i].host_i64[2]);
        cr_assert_eq(r[i].same_yes, 1, "rank %d: equal values reported as different", i);
        cr_assert_eq(r[i].same_no, 0, "rank %d: rank 1's different value went unnoticed", i);
        for (int k = 0; k < BCAST_BYTES; k++)
            cr_assert_eq(r[i].bcast[k], 16 + k, "rank %d: broadcast byte %d: %d", i, k,
                         r[i].bcast[k]);
    }
    end(&s);
}

/* ---- bounded failures ------------------------------------------------------------------------ */

/* Ranks 0 and 1 enter the gradient all-reduce; rank 2 joined the communicator but hangs
 * elsewhere until they have given up. */
static void hung_rank_body(rank_run *r) {
    if (r->w && r->rank < 2) {
        float g[64] = {0};
        float *d = upload(r, g, 64);
        double t0 = ms_now();
        r->rc = ms_world_sum_grads(r->w, d, 64, 1.0f);
        r->waited = ms_now() - t0;
        r->be->free(r->be, d);
    }
    pthread_barrier_wait(r->meet);
    if (r->w) ms_world_close(r->w);
}

Test(nccl, rank_missing_at_a_collective_times_out, .timeout = 60) {
    scenario s;
    begin(&s, 3, SHORT_TIMEOUT_S, 0, hung_rank_body);
    rank_run *r = s.r;
    char *text = run(&s, 0, 3);
    for (int i = 0; i < 2; i++) {
        cr_assert(r[i].opened, "rank %d: %s", i, r[i].err);
        cr_assert_eq(r[i].rc, -1, "rank %d: the all-reduce without rank 2 succeeded", i);
        cr_assert(r[i].waited >= SHORT_TIMEOUT_S && r[i].waited < SHORT_TIMEOUT_S + 4,
                  "rank %d gave up after %.2f s, the timeout is %.0f s", i, r[i].waited,
                  SHORT_TIMEOUT_S);
        char want[128];
        snprintf(want, sizeof want,
                 "rank %d of 3: the gradient all-reduce (nccl) did not complete within 1 s", i);
        cr_assert(strstr(text, want), "stderr lacks \"%s\":\n%s", want, text);
    }
    cr_assert(strstr(text, "another rank has stopped or hangs"), "stderr:\n%s", text);
    end(&s);
}

/* Rank 2 of 3 never starts: the communicator's creation times out on the other two (or, on the
 * one that is a hair later, fails when the first aborts its half-made communicator, as NCCL's
 * bootstrap may report it), and rank 0 still removes the rendezvous file. */
Test(nccl, rank_missing_at_creation_times_out, .timeout = 60) {
    scenario s;
    begin(&s, 3, SHORT_TIMEOUT_S, 0, NULL);
    rank_run *r = s.r;
    char *text = run(&s, 0, 2);
    for (int i = 0; i < 2; i++) {
        cr_assert(!r[i].opened, "rank %d opened a world of 3 without rank 2", i);
        cr_assert(strstr(r[i].err, "the NCCL communicator was not created"), "rank %d: %s", i,
                  r[i].err);
        char timed_out[128], failed[128];
        snprintf(timed_out, sizeof timed_out,
                 "rank %d of 3: the NCCL communicator's creation (nccl) did not complete within "
                 "1 s",
                 i);
        snprintf(failed, sizeof failed, "rank %d of 3: ", i);
        const char *own = strstr(text, failed);
        cr_assert(strstr(text, timed_out) ||
                      (own && strstr(own, "the NCCL communicator failed during the NCCL "
                                          "communicator's creation: remote process exited")),
                  "stderr lacks rank %d's reason:\n%s", i, text);
    }
    /* The rank that timed out waited the whole timeout; the other may have stopped sooner. */
    double longest = r[0].waited > r[1].waited ? r[0].waited : r[1].waited;
    cr_assert(longest >= SHORT_TIMEOUT_S && longest < SHORT_TIMEOUT_S + 4,
              "the ranks gave up after %.2f s at most, the timeout is %.0f s", longest,
              SHORT_TIMEOUT_S);
    char id_file[128];
    snprintf(id_file, sizeof id_file, "%s/.nccl-id.simt-test", s.dir);
    cr_assert_neq(access(id_file, F_OK), 0, "rank 0 left the rendezvous file %s", id_file);
    end(&s);
}

/* Rank 0 never starts: rank 1 waits for the unique id's file at most the timeout. */
Test(nccl, rank_zero_missing_at_the_rendezvous_file, .timeout = 60) {
    scenario s;
    begin(&s, 2, SHORT_TIMEOUT_S, 0, NULL);
    rank_run *r = s.r;
    run(&s, 1, 1);
    cr_assert(!r[1].opened);
    cr_assert(strstr(r[1].err, "rank 0 did not write the NCCL rendezvous file") &&
                  strstr(r[1].err, ".nccl-id.simt-test") && strstr(r[1].err, "within 1 s"),
              "message: %s", r[1].err);
    cr_assert(r[1].waited >= SHORT_TIMEOUT_S, "gave up after %.2f s", r[1].waited);
    end(&s);
}

/* Once both ranks are up, rank 1 aborts its communicator (as ms_world_abort does before its
 * process exits; its world is left as a dead process leaves it): rank 0's next collective
 * fails at once with NCCL's word, not after the timeout. */
static void aborting_rank_body(rank_run *r) {
    pthread_barrier_wait(r->meet);
    if (r->rank == 1 && r->w) r->w->ops->abort(r->w, 1);
    pthread_barrier_wait(r->meet);
    if (r->rank == 1 || !r->w) return;
    float g[16] = {0};
    float *d = upload(r, g, 16);
    double t0 = ms_now();
    r->rc = ms_world_sum_grads(r->w, d, 16, 1.0f);
    r->waited = ms_now() - t0;
    r->be->free(r->be, d);
    ms_world_close(r->w);
}

Test(nccl, aborted_peer_fails_the_others_at_once, .timeout = 60) {
    scenario s;
    begin(&s, 2, LONG_TIMEOUT_S, 0, aborting_rank_body);
    rank_run *r = s.r;
    char *text = run(&s, 0, 2);
    cr_assert(r[0].opened && r[1].opened, "%s / %s", r[0].err, r[1].err);
    cr_assert_eq(r[0].rc, -1, "the all-reduce with an aborted peer succeeded");
    cr_assert(r[0].waited < 5.0, "rank 0 took %.2f s to notice", r[0].waited);
    cr_assert(strstr(text, "rank 0 of 2: ") &&
                  strstr(text, "the NCCL communicator failed during the gradient all-reduce: "
                               "remote process exited or there was a network error"),
              "stderr:\n%s", text);
    end(&s);
}

/* Two ranks on one GPU (a launcher that gave every rank all GPUs and the same local rank):
 * NCCL refuses the communicator, and both ranks say so instead of running. */
Test(nccl, ranks_sharing_a_gpu_are_refused, .timeout = 60) {
    scenario s;
    begin(&s, 2, LONG_TIMEOUT_S, 1, NULL);
    rank_run *r = s.r;
    char *text = run(&s, 0, 2);
    for (int i = 0; i < 2; i++) {
        cr_assert(!r[i].opened, "rank %d opened a communicator on a shared GPU", i);
        cr_assert(strstr(r[i].err, "the NCCL communicator was not created"), "rank %d: %s", i,
                  r[i].err);
    }
    cr_assert(strstr(text, "Duplicate GPU detected: rank 0 and rank 1 both on CUDA device 0") &&
                  strstr(text, "the NCCL communicator's creation: invalid usage"),
              "stderr:\n%s", text);
    end(&s);
}
