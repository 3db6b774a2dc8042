/* What train, eval, extract and bench share: loading a config from the command line, opening
 * the backend, the ranks of a data-parallel run, evaluating a model over a split, and the
 * checkpoint metadata. */
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

/* Reads the checkpoint at path into *w and its stored config (metadata 'modsquad.config', plus
 * the --set overrides) into cfg; prints why on stderr and returns 1 when either fails (*w is
 * then freed). */
int ms_cli_load_checkpoint(ms_st_file *w, ms_config *cfg, const char *path, int n_sets,
                           const char *const *sets);

/* The backend run.device asks for (auto: the CPU in a build without CUDA); NULL with a
 * message on stderr when it cannot be had. */
ms_backend *ms_cli_open_backend(const ms_config *cfg);

/* ---- several ranks (docs/parallel.md) ---------------------------------------------------- */

/* The collective timeout in seconds: arg (--comm-timeout), else MODSQUAD_COMM_TIMEOUT, else
 * MS_COMM_TIMEOUT_DEFAULT; -1 when the value given is not a positive number. */
double ms_cli_comm_timeout(const char *arg);
/* The backend of env's rank: run.device and run.threads, except that with several ranks
 * 'auto' and 'cuda' take the rank's own GPU (cuda:LOCAL_RANK modulo the GPUs it sees) and
 * run.threads 0, without OMP_NUM_THREADS, the rank's share of the node's cores. NULL with a
 * message on stderr. */
ms_backend *ms_cli_open_backend_rank(const ms_config *cfg, const ms_comm_env *env);
/* The collectives of run.comm for env's rank on be (a world of one without a launcher).
 * NCCL started without MPI finds the other ranks through a file in rendezvous_dir, a directory
 * every rank sees. NULL with a message on stderr. */
ms_world *ms_cli_open_world(const ms_config *cfg, const ms_comm_env *env, ms_backend *be,
                            double timeout_s, const char *rendezvous_dir);
/* After a phase that can fail on some ranks only (rc 0 or not): 1 on every rank when any rank
 * failed, so that every rank leaves by the same path; rank 0 says so when only others failed.
 * A collective that fails stops every rank. */
int ms_cli_agree(ms_world *w, int rc);
/* 0 when every rank resolved the same config (the same file and --set on every rank), else
 * -1 on every rank, with a message from rank 0. */
int ms_cli_same_config(ms_world *w, const ms_config *cfg);
/* eval and extract split every evaluation batch (eval.batch_size) over the ranks: 0, or 1 with
 * a message (from rank 0) when the ranks do not divide it. */
int ms_cli_check_eval_world(const ms_config *cfg, const ms_comm_env *env, const char *cmd);

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
 * expert selections of every image (not of a short last batch's padding), mean_loss[T] (may be
 * NULL) the mean task losses, sink (may be NULL) the predictions. Returns 0, or 1 with a message on stderr naming the file that could not be read
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
