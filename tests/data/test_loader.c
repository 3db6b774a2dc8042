/* The prefetching loader on synthetic Taskonomy scenes: identical batches for one seed whatever
 * the number of workers, per-epoch permutations, exact resume from a saved position, sharding
 * over two ranks that covers an epoch exactly once, the end of an evaluation epoch (empty
 * batches included), worker errors that reach the consumer as messages naming the file, and
 * seeks and closes at any moment that neither hang nor hand out a wrong batch. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../data/loader.h"
#include "../../data/synth.h"
#include "../../model/tasks.h"

static char g_root[64];
static ms_config g_cfg;
static ms_data *g_data;

#define N_SCENES 30
#define SIZE 16

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f) {
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static void setup(void) {
    strcpy(g_root, "/tmp/ms_ld_XXXXXX");
    cr_assert(mkdtemp(g_root));
    ms_synth_opts o;
    ms_synth_defaults(&o, MS_SYNTH_TASKONOMY);
    o.out = g_root, o.count = N_SCENES, o.size = 24, o.buildings = 3, o.seed = 2, o.threads = 1;
    o.split[0] = 1.0, o.split[1] = 0.0, o.split[2] = 0.0;
    char msg[1024];
    cr_assert_eq(ms_synth_write(&o, msg, sizeof msg), 0, "%s", msg);
    char text[1024];
    snprintf(text, sizeof text,
             "run:\n  seed: 17\n  dir: %s/runs\ndata:\n  dataset: taskonomy\n  root: %s\n"
             "  tasks: [depth_zbuffer, normal, segment_semantic, class_object]\n"
             "  image_size: %d\n  resize: 20\nmodel:\n  patch: 8\n",
             g_root, g_root, SIZE);
    ms_config_errors errs;
    ms_config_errors_init(&errs);
    int n = ms_config_load_text(&g_cfg, "test.yaml", text, strlen(text), 0, NULL, &errs);
    if (n) ms_config_errors_print(&errs, stderr);
    cr_assert_eq(n, 0);
    ms_config_errors_free(&errs);
    ms_io_err err;
    cr_assert_eq(ms_data_open(&g_data, &g_cfg, "train", NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(g_data->n, N_SCENES);
}

static void teardown(void) {
    ms_data_close(g_data);
    nftw(g_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(loader, .init = setup, .fini = teardown, .timeout = 60);

static ms_loader_opts opts(int train, int workers, int prefetch, int batch) {
    ms_loader_opts o;
    ms_loader_opts_from_config(&o, &g_cfg, train, 0, 1);
    o.workers = workers, o.prefetch = prefetch, o.batch_size = batch;
    return o;
}

static ms_loader *open_loader(const ms_loader_opts *o) {
    ms_loader *L;
    ms_io_err err;
    cr_assert_eq(ms_loader_open(&L, g_data, &g_cfg, o, &err), 0, "%s", err.msg);
    return L;
}

/* Every byte a batch holds for its B images, in one buffer (free it). */
typedef struct {
    unsigned char *p;
    size_t n;
} blob;

static void put(blob *b, const void *src, size_t n) {
    b->p = realloc(b->p, b->n + n);
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static blob snapshot(const ms_batch *b) {
    blob s = {0};
    size_t P = (size_t)b->H * b->W, B = (size_t)b->B;
    put(&s, &b->B, sizeof b->B);
    put(&s, b->sample, B * sizeof(int64_t));
    put(&s, b->images, B * 3 * P * sizeof(float));
    for (int t = 0; t < b->T; t++) {
        const ms_task_def *d = ms_task_find(g_cfg.data.dataset, g_cfg.data.tasks.name[t]);
        const ms_target *g = &b->target[t];
        if (g->dense) put(&s, g->dense, B * d->channels * P * sizeof(float));
        if (g->valid) put(&s, g->valid, B * P);
        if (g->labels) put(&s, g->labels, B * P * sizeof(int32_t));
        if (g->binary) put(&s, g->binary, B * P);
        if (g->vector) put(&s, g->vector, B * d->channels * sizeof(float));
    }
    return s;
}

static blob next_blob(ms_loader *L) {
    ms_batch *b;
    ms_io_err err;
    int rc = ms_loader_next(L, &b, &err);
    cr_assert_eq(rc, 1, "next: %d %s", rc, rc < 0 ? err.msg : "");
    return snapshot(b);
}

static void expect_same(const blob *a, const blob *b, const char *what, int k) {
    cr_assert_eq(a->n, b->n, "%s: batch %d sizes differ", what, k);
    cr_assert_eq(memcmp(a->p, b->p, a->n), 0, "%s: batch %d differs", what, k);
}

Test(loader, one_seed_gives_identical_batches_for_any_worker_count) {
    const int K = 16; /* more than two epochs of 7 batches */
    ms_loader_opts o0 = opts(1, 0, 1, 4), o1 = opts(1, 1, 2, 4), o3 = opts(1, 3, 4, 4);
    ms_loader *L0 = open_loader(&o0), *L1 = open_loader(&o1), *L3 = open_loader(&o3);
    cr_assert_eq(ms_loader_steps_per_epoch(L0), N_SCENES / 4);
    for (int k = 0; k < K; k++) {
        blob a = next_blob(L0), b = next_blob(L1), c = next_blob(L3);
        expect_same(&a, &b, "0 vs 1 worker", k);
        expect_same(&a, &c, "0 vs 3 workers", k);
        free(a.p), free(b.p), free(c.p);
    }
    ms_loader_close(L0);
    ms_loader_close(L1);
    ms_loader_close(L3);
    /* another seed gives other batches */
    ms_loader_opts a = opts(1, 2, 2, 4), b = opts(1, 2, 2, 4);
    b.seed = a.seed + 1;
    ms_loader *La = open_loader(&a), *Lb = open_loader(&b);
    blob x = next_blob(La), y = next_blob(Lb);
    cr_assert(x.n != y.n || memcmp(x.p, y.p, x.n) != 0, "seeds 17 and 18 give the same batch");
    free(x.p), free(y.p);
    ms_loader_close(La);
    ms_loader_close(Lb);
}

Test(loader, epochs_are_fresh_permutations) {
    ms_loader_opts o = opts(1, 0, 1, 4);
    for (int n = 1; n <= N_SCENES; n += (n < 6 ? 1 : 11)) {
        o.max_samples = n;
        o.batch_size = 1;
        ms_loader *L = open_loader(&o);
        cr_assert_eq(ms_loader_samples(L), n);
        for (int e = 0; e < 3; e++) {
            int seen[N_SCENES] = {0};
            for (int q = 0; q < n; q++) {
                int64_t i = ms_loader_sample_at(L, e, q);
                cr_assert(i >= 0 && i < n, "n=%d: position %d -> %lld", n, q, (long long)i);
                cr_assert(!seen[i]++, "n=%d epoch %d: sample %lld twice", n, e, (long long)i);
            }
        }
        if (n == N_SCENES) {
            int same = 1;
            for (int q = 0; q < n; q++)
                same &= ms_loader_sample_at(L, 0, q) == ms_loader_sample_at(L, 1, q);
            cr_assert(!same, "epochs 0 and 1 visit the samples in the same order");
        }
        ms_loader_close(L);
    }
    /* evaluation keeps the dataset order */
    ms_loader_opts e = opts(0, 0, 1, 4);
    ms_loader *L = open_loader(&e);
    for (int q = 0; q < N_SCENES; q++) cr_assert_eq(ms_loader_sample_at(L, 0, q), q);
    ms_loader_close(L);
}

Test(loader, resume_from_a_saved_position) {
    ms_loader_opts o = opts(1, 2, 3, 4);
    ms_loader *A = open_loader(&o);
    blob ref[12];
    ms_loader_pos saved = {0, 0};
    for (int k = 0; k < 12; k++) {
        if (k == 5) saved = ms_loader_tell(A);
        ref[k] = next_blob(A);
    }
    cr_assert_eq(saved.epoch, 0);
    cr_assert_eq(saved.step, 5);
    ms_loader_pos end = ms_loader_tell(A);
    cr_assert(end.epoch == 1 && end.step == 12 - 7, "position after 12 batches: %lld/%lld",
              (long long)end.epoch, (long long)end.step);
    /* a new loader started at the saved position */
    o.start = saved;
    o.workers = 1;
    ms_loader *B = open_loader(&o);
    for (int k = 5; k < 12; k++) {
        blob b = next_blob(B);
        expect_same(&ref[k], &b, "resumed loader", k);
        free(b.p);
    }
    ms_loader_close(B);
    /* seeking the running loader back */
    ms_io_err err;
    cr_assert_eq(ms_loader_seek(A, saved, &err), 0);
    for (int k = 5; k < 9; k++) {
        blob b = next_blob(A);
        expect_same(&ref[k], &b, "seek", k);
        free(b.p);
    }
    ms_loader_close(A);
    for (int k = 0; k < 12; k++) free(ref[k].p);
}

/* Samples of one epoch on one rank, counted into seen[]. */
static int collect(int train, int rank, int *seen, int *last_count) {
    ms_loader_opts o;
    ms_loader_opts_from_config(&o, &g_cfg, train, rank, 2);
    o.batch_size = 4, o.workers = 2, o.prefetch = 2, o.epochs = 1;
    ms_loader *L = open_loader(&o);
    ms_batch *b;
    ms_io_err err;
    int steps = 0, rc;
    while ((rc = ms_loader_next(L, &b, &err)) == 1) {
        for (int k = 0; k < b->B; k++) seen[b->sample[k]]++;
        *last_count = b->B;
        steps++;
    }
    cr_assert_eq(rc, 0, "%s", err.msg);
    ms_loader_pos p = ms_loader_tell(L);
    cr_assert(p.epoch == 1 && p.step == 0, "an epoch ends at (1, 0)");
    ms_loader_close(L);
    return steps;
}

Test(loader, two_ranks_cover_an_epoch_exactly_once) {
    /* evaluation: 30 samples, global batch 8: 4 steps; the last holds 4 + 2 */
    int seen[N_SCENES] = {0}, last0, last1;
    int s0 = collect(0, 0, seen, &last0), s1 = collect(0, 1, seen, &last1);
    cr_assert_eq(s0, 4);
    cr_assert_eq(s1, 4);
    cr_assert_eq(last0, 4);
    cr_assert_eq(last1, 2);
    for (int i = 0; i < N_SCENES; i++)
        cr_assert_eq(seen[i], 1, "sample %d seen %d times", i, seen[i]);
    /* training drops the last partial global batch: 3 steps x 8 distinct samples */
    memset(seen, 0, sizeof seen);
    s0 = collect(1, 0, seen, &last0), s1 = collect(1, 1, seen, &last1);
    cr_assert_eq(s0, 3);
    cr_assert_eq(s1, 3);
    int covered = 0;
    for (int i = 0; i < N_SCENES; i++) {
        cr_assert(seen[i] <= 1, "sample %d seen %d times", i, seen[i]);
        covered += seen[i];
    }
    cr_assert_eq(covered, 24);
}

Test(loader, max_images_and_the_end_of_evaluation) {
    ms_loader_opts o = opts(0, 1, 2, 4);
    o.max_samples = 10;
    ms_loader *L = open_loader(&o);
    cr_assert_eq(ms_loader_steps_per_epoch(L), 3);
    ms_batch *b;
    ms_io_err err;
    int counts[3];
    for (int k = 0; k < 3; k++) {
        cr_assert_eq(ms_loader_next(L, &b, &err), 1);
        counts[k] = b->B;
        for (int j = 0; j < b->B; j++) cr_assert_eq(b->sample[j], 4 * k + j);
    }
    cr_assert(counts[0] == 4 && counts[1] == 4 && counts[2] == 2);
    cr_assert_eq(ms_loader_next(L, &b, &err), 0);
    cr_assert_eq(ms_loader_next(L, &b, &err), 0);
    ms_loader_close(L);
    /* a split smaller than one batch is an error that says so */
    o.max_samples = 3;
    o.train = 1;
    ms_loader *M;
    cr_assert_neq(ms_loader_open(&M, g_data, &g_cfg, &o, &err), 0);
    cr_assert(strstr(err.msg, "fewer than one global batch"), "%s", err.msg);
}

Test(loader, worker_errors_reach_the_consumer) {
    /* dataset sample 9's normal becomes a truncated file */
    char path[1024], name[128];
    g_data->ops->sample_name(g_data, 9, name, sizeof name);
    char building[64];
    int p, v;
    cr_assert_eq(sscanf(name, "%63[^/]/point_%d_view_%d", building, &p, &v), 3);
    snprintf(path, sizeof path, "%s/normal/taskonomy/%s/point_%d_view_%d_domain_normal.png", g_root,
             building, p, v);
    FILE *f = fopen(path, "r+b");
    cr_assert(f, "%s", path);
    cr_assert_eq(ftruncate(fileno(f), 40), 0);
    fclose(f);
    for (int workers = 0; workers <= 3; workers += 3) {
        ms_loader_opts o = opts(0, workers, 3, 4);
        ms_loader *L = open_loader(&o);
        ms_batch *b;
        ms_io_err err;
        /* batches 0 and 1 (samples 0..7) are fine; batch 2 holds sample 9 */
        cr_assert_eq(ms_loader_next(L, &b, &err), 1);
        cr_assert_eq(ms_loader_next(L, &b, &err), 1);
        for (int again = 0; again < 2; again++) {
            int rc = ms_loader_next(L, &b, &err);
            cr_assert_lt(rc, 0, "workers %d: the bad file must fail its batch", workers);
            cr_assert(strstr(err.msg, path) && strstr(err.msg, name), "message: %s", err.msg);
        }
        ms_loader_close(L);
    }
}

/* Evaluation keeps the last partial global batch: 20 samples over 4 ranks of 4 images leave
 * ranks 1..3 with an empty second batch, which the consumer must still receive (every rank
 * takes the same number of steps) before the end. With one worker and one buffer the consumer
 * is already asleep on that batch when the worker marks it made, so only the worker's wake-up
 * lets it go on: a lost wake-up hangs here until the timeout. */
Test(loader, empty_batches_at_the_end_of_evaluation, .timeout = 20) {
    for (int workers = 0; workers <= 3; workers++)
        for (int prefetch = 1; prefetch <= 2; prefetch++) {
            int seen[N_SCENES] = {0};
            for (int rank = 0; rank < 4; rank++) {
                ms_loader_opts o;
                ms_loader_opts_from_config(&o, &g_cfg, 0, rank, 4);
                o.batch_size = 4, o.max_samples = 20, o.workers = workers, o.prefetch = prefetch;
                ms_loader *L = open_loader(&o);
                cr_assert_eq(ms_loader_steps_per_epoch(L), 2);
                ms_batch *b;
                ms_io_err err;
                for (int s = 0; s < 2; s++) {
                    cr_assert_eq(ms_loader_next(L, &b, &err), 1);
                    int want = s == 0 || rank == 0 ? 4 : 0;
                    cr_assert_eq(b->B, want, "workers %d prefetch %d rank %d step %d: %d images",
                                 workers, prefetch, rank, s, b->B);
                    for (int k = 0; k < b->B; k++) seen[b->sample[k]]++;
                }
                cr_assert_eq(ms_loader_next(L, &b, &err), 0);
                ms_loader_close(L);
            }
            for (int i = 0; i < 20; i++)
                cr_assert_eq(seen[i], 1, "workers %d: sample %d seen %d times", workers, i, seen[i]);
        }
}

/* Many one-image batches with seeks, ends and closes at arbitrary points, for 1..4 workers and
 * 1..3 buffers: every batch is the one its position names, the batch the consumer holds is
 * never written under it, and close returns even while workers sleep on a full ring (the stop
 * broadcast wakes them). A lost wake-up or a close that waits for a worker hangs here. */
Test(loader, seeks_and_closes_between_many_tiny_batches, .timeout = 30) {
    uint64_t r = 12345;
#define NEXT_R() (r = r * 6364136223846793005ull + 1442695040888963407ull, (int)(r >> 33))
    for (int round = 0; round < 48; round++) {
        int train = round % 2;
        ms_loader_opts o = opts(train, 1 + round / 2 % 4, 1 + round / 8 % 3, 1);
        o.max_samples = 5 + NEXT_R() % 8;
        o.epochs = train ? NEXT_R() % 3 : 1; /* 0: endless */
        ms_loader *L = open_loader(&o);
        int64_t spe = ms_loader_steps_per_epoch(L);
        blob held = {0};
        ms_batch *b = NULL;
        for (int op = 0; op < 14; op++) {
            if (held.p) { /* workers must not touch the buffer the consumer holds */
                blob now = snapshot(b);
                expect_same(&held, &now, "held batch", op);
                free(now.p), free(held.p);
                held.p = NULL, held.n = 0;
            }
            if (NEXT_R() % 5 == 0) {
                ms_loader_pos to = {NEXT_R() % 3, NEXT_R() % spe};
                ms_io_err err;
                cr_assert_eq(ms_loader_seek(L, to, &err), 0, "%s", err.msg);
                continue;
            }
            ms_loader_pos p = ms_loader_tell(L);
            ms_io_err err;
            int rc = ms_loader_next(L, &b, &err);
            if (o.epochs && p.epoch >= o.epochs) {
                cr_assert_eq(rc, 0, "round %d: batch past the last epoch", round);
                continue;
            }
            cr_assert_eq(rc, 1, "round %d: %d %s", round, rc, rc < 0 ? err.msg : "");
            cr_assert_eq(b->B, 1);
            cr_assert_eq(b->sample[0], ms_loader_sample_at(L, p.epoch, p.step),
                         "round %d: the batch at %lld/%lld holds the wrong sample", round,
                         (long long)p.epoch, (long long)p.step);
            held = snapshot(b);
            if (NEXT_R() % 4 == 0) usleep(300); /* let the workers fill the ring */
        }
        free(held.p);
        if (round % 3 == 0) usleep(1000); /* close with every worker asleep on a full ring */
        ms_loader_close(L);
    }
#undef NEXT_R
}
