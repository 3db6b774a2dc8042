/* The inference line of `modsquad bench` (issue 8): a task's extracted single-task model
 * (model/extract.h) against the full multi-task model on that task, built in-process from the
 * bench's model and timed on its in-memory batch. Three forwards in evaluation mode:
 *   full       the full model as `modsquad eval` runs it: every task's pass (T passes), which
 *              is what a user of the multi-task model runs today to get one task's predictions;
 *   one_pass   the full model restricted to the task's pass: the extracted config with EVERY
 *              expert kept, so the same weights as the full model and one pass instead of T;
 *   extracted  the extracted model: the experts the calibration pass chose, one pass.
 * full / one_pass is what skipping the other tasks' passes buys, one_pass / extracted what
 * dropping experts buys. Top-k routing makes a token's FLOPs independent of how many experts a
 * layer stores, so the second is weight memory (and cache), plus the expert GEMMs of the
 * (token, slot) pairs routed to a dropped expert, which an extracted model skips. */
#ifndef MS_BENCH_INFER_H
#define MS_BENCH_INFER_H

#include "../model/model.h"

typedef struct {
    double params;        /* trainable parameters */
    double weight_bytes;  /* the parameter buffer (ms_model_memory().params) */
    double flops;         /* forward FLOPs per image (top-k experts per token) */
    double median_s;      /* one forward of the batch: median over the repetitions */
    double best_s;        /* and the fastest one */
    double max_diff;      /* max |prediction - the full model's prediction of the task| */
} ms_infer_model;

typedef struct {
    const char *task;     /* the task's name (the full model's data.tasks) */
    double threshold;     /* usage threshold of the expert choice, percent of the task's tokens */
    int B, T, passes;     /* images per forward; the full model's tasks and passes */
    int warmup, reps;     /* unmeasured and measured forwards of each model */
    int experts_total;    /* experts over all MoE layers */
    int experts_kept;     /* of which the extracted model keeps */
    double dropped_share; /* of the task's (token, slot) selections, to dropped experts */
    double flops_routed;  /* extracted forward FLOPs per image with the calibration's routing */
    ms_infer_model full, one_pass, extracted;
} ms_bench_infer;

/* Forward FLOPs per image of one evaluation forward of m (T tasks): every backbone pass (T, or
 * the one shared pass of hard_sharing) and every head. */
double ms_bench_forward_flops(ms_model *m, int T);

/* Measures task t of `full` (built for cfg with batch size B on be, weights in place) on
 * `batch` (B images, the targets of all of cfg's tasks). The calibration pass is the full
 * model's first evaluation forward of `batch`. Returns 0, or -1 after printing why. */
int ms_bench_infer_run(ms_model *full, const ms_config *cfg, ms_backend *be, const ms_batch *batch,
                       int t, double threshold, int warmup, int reps, ms_bench_infer *out);

void ms_bench_infer_print_text(const ms_bench_infer *r);
/* The fields as JSON members (`"infer_...": value,` lines), for the caller's object. */
void ms_bench_infer_print_json(const ms_bench_infer *r);

#endif
