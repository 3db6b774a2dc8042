/* What train, eval and bench share: loading a config from the command line, opening the
 * backend, evaluating a model over a split, and the checkpoint metadata. */
#ifndef MS_RUN_H
#define MS_RUN_H

#include <stdint.h>

#include "../data/dataset.h"
#include "../kernels/backend.h"
#include "../kernels/comm/comm.h"
#include "../model/config.h"
#include "../model/metrics.h"
#include "../model/model.h"
#include "../model/safetensors.h"

/* Loads cfg from a file or from YAML text (name stands for it in messages) plus --set
 * overrides; prints every error to stderr. Returns 0, or 1 when the config is invalid. */
int ms_cli_load_config(ms_config *cfg, const char *path, int n_sets, const char *const *sets);
int ms_cli_load_config_text(ms_config *cfg, const char *name, const char *text, int n_sets,
                            const char *const *sets);

/* The backend run.device asks for (auto: the CPU in a build without CUDA); NULL with a
 * message on stderr when it cannot be had. */
ms_backend *ms_cli_open_backend(const ms_config *cfg);
/* The same on `device` with `threads` CPU threads in place of run.device and run.threads: a
 * data-parallel rank's own GPU (cuda:LOCAL_RANK) or its share of the node's cores. */
ms_backend *ms_cli_open_backend_on(const ms_config *cfg, const char *device, int threads);

/* mkdir -p; 0 or -1 with errno set. */
int ms_cli_make_dirs(const char *path);

/* Per-task expert selections summed over an evaluation: counts[layer][t][e]. */
typedef struct {
    int layers, T;
    int E[64];          /* [layers] experts of each MoE layer */
    int K[64];          /* [layers] top-k of each MoE layer */
    int64_t *counts;    /* [layers][T][maxE] */
    int maxE;
} ms_usage;

void ms_usage_init(ms_usage *u, const ms_model *m, int T);
void ms_usage_free(ms_usage *u);
/* Share (percent) of task t's (token, slot) selections that went to expert e of layer l. */
double ms_usage_percent(const ms_usage *u, int l, int t, int e);

/* Receives the predictions of an evaluation, batch by batch: fn is called once per task t and
 * batch with the host copy of ms_model_prediction(m, t) ([B, C, H, W] for dense tasks, [B, C]
 * for classification tasks) and the batch it was computed from; only its first n samples are
 * real (a short last batch is padded). A non-zero return stops the evaluation with an error
 * (fn prints its own message). */
typedef struct {
    int (*fn)(void *ctx, int t, const float *pred, const ms_batch *b, int n);
    void *ctx;
} ms_pred_sink;

/* Runs the model (built for batches of B on be) in evaluation mode over every sample of d (at
 * most max_images when > 0); results[T] receives each task's metrics, usage (may be NULL) the
 * expert selections, mean_loss[T] (may be NULL) the mean task losses, sink (may be NULL) the
 * predictions. Returns 0, or 1 with a message on stderr naming the file that could not be read
 * or written. */
int ms_cli_evaluate(ms_model *m, ms_backend *be, int B, ms_data *d, const ms_config *cfg,
                    int64_t max_images, ms_metric_result *results, ms_usage *usage,
                    double *mean_loss, const ms_pred_sink *sink);

/* ms_cli_evaluate sharded over the ranks of `world` (NULL or a world of one: all of d here):
 * rank r evaluates its part of every global batch of B x world images (data/loader.h), and the
 * metric accumulators, expert selections and losses are summed over the ranks, so every rank
 * returns the metrics of the whole split, equal to one process's up to the rounding of the
 * metrics' double sums. B is the per-rank batch the model was built for. The sink sees this
 * rank's predictions only. Every rank must call it; a rank that fails keeps taking part in
 * the collectives and every rank returns 1. */
int ms_cli_evaluate_dist(ms_model *m, ms_backend *be, int B, ms_data *d, const ms_config *cfg,
                         int64_t max_images, ms_metric_result *results, ms_usage *usage,
                         double *mean_loss, const ms_pred_sink *sink, ms_world *world);

/* A table of the per-task primary metrics to stdout, one row per task. */
void ms_cli_print_metrics(const ms_config *cfg, const ms_metric_result *results);

/* Checkpoint metadata of a model trained with cfg, at `step`: keys and values stay valid until
 * ms_cli_meta_free. */
typedef struct {
    ms_kv kv[6];
    int n;
    char *yaml;
    char step[32];
    char fingerprint[MS_FINGERPRINT_LEN + 1];
} ms_cli_meta;
void ms_cli_meta_make(ms_cli_meta *m, const ms_config *cfg, long step);
void ms_cli_meta_free(ms_cli_meta *m);

#endif
