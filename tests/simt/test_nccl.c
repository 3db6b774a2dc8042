/* The NCCL collectives of kernels/comm/comm_nccl.cu, executed against the NCCL stand-in
 * (tests/simt/nccl.cc): two or three ranks are threads of this test process, each with its own
 * emulated GPU and CUDA backend, and they meet as under srun without MPI (the unique id goes
 * through a rendezvous file, the communicator is non-blocking and polled). Checked: the gradient
 * all-reduce in buckets, the MI-statistics hook, host all-reduces, the agreement check and the
 * broadcast against sums computed here in rank order (the stand-in's order, so equal to the bit); a
 * tiny model's training backward on 2 ranks whose gradient buckets start during the backward (on
 * the side stream) and sum to exactly what the ranks' own gradients add up to, overlapped or not;
 * and the bounded failures: a rank that never reaches a collective, never joins the communicator or
 * never writes the unique id makes the others stop after the world's timeout with comm.h's message;
 * a rank that aborts makes the others fail at once with NCCL's error; two ranks on one GPU are
 * refused. */
#include "harness.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../../kernels/comm/comm.h"
#include "../../model/model.h"
#include "../../model/tasks.h"
#include "../model/model_fd.h"

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
    /* the model scenario: gradients [n] of this rank's own batch, and summed over the ranks
     * with the buckets overlapped with the backward (got) and started after it (got_seq) */
    const ms_config *cfg;
    float *own, *got_seq;
    int buckets, early, buckets_seq, early_seq;
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

/* The gradient all-reduce of a backward that reported its whole buffer at once. */
static int sum_grads(ms_world *w, float *d, size_t n, float scale) {
    ms_grad_sync *gs = ms_grad_sync_create(w, 1);
    ms_grad_sync_arm(gs, d, n);
    ms_grad_sync_ready(gs, 0, n);
    int rc = ms_grad_sync_finish(gs, scale);
    ms_grad_sync_destroy(gs);
    return rc;
}

/* ---- the collectives against direct sums ---------------------------------------------------- */

static void sum_grads_body(rank_run *r) {
    if (!r->w) return;
    float *d = upload(r, r->grads, r->n);
    r->rc = sum_grads(r->w, d, r->n, 1.0f);
    r->be->download(r->be, r->got, d, r->n * sizeof(float));
    r->be->free(r->be, d);
    ms_world_close(r->w);
}

/* 100005 floats per rank in one range: ms_grad_bucket_floats is a quarter of that (rounded up),
 * so the range goes in 4 equal buckets, each its own all-reduce on the side stream. */
Test(nccl, gradient_all_reduce_in_buckets, .timeout = 60) {
    scenario s;
    begin(&s, 3, LONG_TIMEOUT_S, 0, sum_grads_body);
    rank_run *r = s.r;
    size_t n = 100005;
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
    cr_assert_eq(st.collectives, 4, "%lu all-reduces, expected 4 buckets", st.collectives);
    cr_assert_eq(st.largest, 25002, "largest collective: %zu floats", st.largest);
    cr_assert_eq(ms_grad_bucket_floats(n), 25002);
    end(&s);
}

/* The mean gradient (scaled on the device), the MI statistics, host reductions of doubles and
 * int64 maxima, the agreement check, a broadcast from rank 1; run.comm auto picks NCCL. */
static void collectives_body(rank_run *r) {
    if (!r->w) return;
    float *d = upload(r, r->grads, r->n);
    r->rc = sum_grads(r->w, d, r->n, 1.0f / 3.0f);
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

/* ---- the gradient all-reduce overlapped with a model's backward ------------------------------ */

#define MODEL_B 2 /* images per rank */

/* Rank r's batch: its own images and dense targets (the tiny model's tasks are dense). */
static void fill_batch(ms_batch *b, const ms_config *cfg, int rank) {
    tu_rng g = tu_seed(900 + (uint64_t)rank);
    size_t P = (size_t)b->H * b->W;
    tu_fill_normal(&g, b->images, (size_t)b->B * 3 * P, 1.0);
    for (int t = 0; t < b->T; t++) {
        const ms_task_def *d = ms_task_find(cfg->data.dataset, cfg->data.tasks.name[t]);
        cr_assert_eq(d->target, MS_TARGET_DENSE, "the scenario fills dense targets only");
        tu_fill(&g, b->target[t].dense, (size_t)b->B * d->channels * P, -1, 1);
        for (size_t i = 0; i < (size_t)b->B * P; i++) b->target[t].valid[i] = tu_uniform(&g) < 0.9;
    }
    for (int i = 0; i < b->B; i++) b->sample[i] = (int64_t)rank * b->B + i;
}

/* The model's hook goes to whichever sync the step armed. */
typedef struct {
    ms_grad_sync *current;
} hook_target;

static void forward_hook(void *ctx, size_t offset, size_t count) {
    hook_target *h = ctx;
    if (h->current) ms_grad_sync_ready(h->current, offset, count);
}

/* One training forward and backward of b; with gs, gs armed for it and the gradients summed
 * over the ranks. The gradients end in out[n]. */
static void model_step(rank_run *r, ms_model *m, const ms_batch *b, hook_target *hook,
                       ms_grad_sync *gs, float *out) {
    hook->current = gs;
    ms_model_zero_grads(m);
    ms_model_forward(m, b, 1, 7);
    if (gs) ms_grad_sync_arm(gs, ms_model_grad_data(m), ms_model_params(m)->total);
    ms_model_backward(m);
    if (gs) r->rc |= ms_grad_sync_finish(gs, 1.0f);
    r->be->download(r->be, out, ms_model_grad_data(m), r->n * sizeof(float));
}

static void model_body(rank_run *r) {
    if (!r->w) return;
    hook_target hook = {NULL};
    ms_model_opts o = {.batch = MODEL_B, .rank = r->rank, .stats_sum = ms_world_sum_hook,
                       .stats_ctx = r->w, .world = r->world, .grads_ready = forward_hook,
                       .grads_ctx = &hook};
    ms_model *m = ms_model_create(r->cfg, r->be, &o);
    ms_model_init(m, 11);
    r->n = ms_model_params(m)->total;
    r->own = malloc(r->n * sizeof(float));
    r->got = malloc(r->n * sizeof(float));
    r->got_seq = malloc(r->n * sizeof(float));
    int H = r->cfg->data.image_size;
    ms_batch b;
    ms_batch_alloc(&b, r->cfg, MODEL_B, H, H);
    fill_batch(&b, r->cfg, r->rank);
    ms_grad_sync *overlapped = ms_grad_sync_create(r->w, 1), *after = ms_grad_sync_create(r->w, 0);
    model_step(r, m, &b, &hook, NULL, r->own);
    model_step(r, m, &b, &hook, overlapped, r->got);
    r->buckets = ms_grad_sync_buckets(overlapped, &r->early);
    model_step(r, m, &b, &hook, after, r->got_seq);
    r->buckets_seq = ms_grad_sync_buckets(after, &r->early_seq);
    ms_grad_sync_destroy(overlapped);
    ms_grad_sync_destroy(after);
    ms_batch_free(&b);
    ms_model_destroy(m);
    ms_world_close(r->w);
}

/* Two ranks train the tiny model of the model tests (modsquad: task embedding, MoE attention
 * and MLP, MI statistics summed in the forward) on batches of their own. With overlap the
 * backward starts most buckets itself (they run on the side stream while it goes on); the sums
 * equal the ranks' own gradients added in rank order, to the bit, and so do the sums of the
 * same buckets started after the backward. */
Test(nccl, overlapped_buckets_sum_a_models_gradients, .timeout = 120) {
    ms_config cfg;
    const char *sets[] = {"model.depth=2"};
    fd_config(&cfg, FD_TINY_YAML, 1, sets);
    scenario s;
    begin(&s, 2, LONG_TIMEOUT_S, 0, model_body);
    rank_run *r = s.r;
    for (int i = 0; i < 2; i++) r[i].cfg = &cfg;
    run(&s, 0, 2);
    size_t n = r[0].n;
    cr_assert(n > 0 && r[1].n == n);
    float *want = tu_floats(n);
    for (size_t k = 0; k < n; k++) want[k] = r[0].own[k] + r[1].own[k];
    for (int i = 0; i < 2; i++) {
        cr_assert(r[i].opened, "rank %d: %s", i, r[i].err);
        cr_assert_eq(r[i].rc, 0, "rank %d: the gradient all-reduce failed", i);
        cr_assert(r[i].buckets >= 3, "rank %d: %d buckets of %zu floats", i, r[i].buckets, n);
        cr_assert(r[i].early >= 1 && r[i].early >= r[i].buckets - 1,
                  "rank %d: %d of %d buckets started during the backward (all but the last "
                  "should)", i, r[i].early, r[i].buckets);
        cr_assert(r[i].buckets_seq == r[i].buckets && r[i].early_seq == 0,
                  "rank %d without overlap: %d buckets, %d started early", i, r[i].buckets_seq,
                  r[i].early_seq);
        char what[64];
        snprintf(what, sizeof what, "rank %d: overlapped sum", i);
        tu_expect_equal(what, r[i].got, want, n);
        snprintf(what, sizeof what, "rank %d: sum after the backward", i);
        tu_expect_equal(what, r[i].got_seq, want, n);
        free(r[i].own), free(r[i].got), free(r[i].got_seq);
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
        r->rc = sum_grads(r->w, d, 64, 1.0f);
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
    r->rc = sum_grads(r->w, d, 16, 1.0f);
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
