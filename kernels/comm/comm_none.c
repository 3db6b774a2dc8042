/* One process: a world of one rank, whose every collective leaves its data as it is. */
#include <stdlib.h>

#include "comm.h"

static int none_allreduce(ms_world *w, void *x, size_t n, ms_comm_dtype t, ms_comm_op op,
                          const char *what) {
    (void)w, (void)x, (void)n, (void)t, (void)op, (void)what;
    return 0;
}

static int none_allreduce_dev(ms_world *w, float *x, size_t n, const char *what) {
    (void)w, (void)x, (void)n, (void)what;
    return 0;
}

/* A world of one has no buckets to sum (ms_grad_sync only scales). */
static int none_bucket_start(ms_world *w, float *x, size_t n, const char *what) {
    (void)w, (void)x, (void)n, (void)what;
    return 0;
}

static int none_bucket_done(ms_world *w, const char *what) {
    (void)w, (void)what;
    return 0;
}

static int none_broadcast(ms_world *w, void *buf, size_t bytes, int root, const char *what) {
    (void)w, (void)buf, (void)bytes, (void)root, (void)what;
    return 0;
}

/* Nobody else to stop: ms_world_abort exits this process. */
static void none_abort(ms_world *w, int status) { (void)w, (void)status; }

static void none_close(ms_world *w) { free(w); }

static const ms_world_ops none_ops = {.allreduce = none_allreduce,
                                      .allreduce_dev = none_allreduce_dev,
                                      .bucket_start = none_bucket_start,
                                      .bucket_progress = none_bucket_done,
                                      .bucket_wait = none_bucket_done,
                                      .broadcast = none_broadcast,
                                      .abort = none_abort,
                                      .close = none_close};

ms_world *ms_world_none(void) {
    ms_world *w = ms_calloc(1, sizeof *w);
    w->name = "none";
    w->ops = &none_ops;
    w->rank = 0, w->size = 1, w->local_rank = 0;
    w->timeout_s = MS_COMM_TIMEOUT_DEFAULT;
    return w;
}
