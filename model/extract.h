/* A task's standalone model, taken out of a trained multi-task model (METHOD.md section 5;
 * `modsquad extract`, cli/extract.c, is the command that runs these steps).
 *
 * 1. Usage: a calibration pass of the full model counts, per MoE layer, how many of task t's
 *    (token, slot) selections each expert got (ms_model_expert_counts). The usage of expert e
 *    is the share of the task's TOKENS that select it, 100 x count[e] / tokens with
 *    tokens = sum(count) / K (a token selects K distinct experts, so usages sum to 100 K).
 *    The official main_pruning.py compares the share of SELECTIONS (summing to 100) with
 *    threshold / K, which is the same test.
 * 2. Keep the experts whose usage is above the threshold; when fewer than K pass, keep the K
 *    most used (ties to the lower expert index), as the official code does.
 * 3. The extracted model is the same architecture with data.tasks = [t] and
 *    model.kept_experts = the kept lists: shared weights as they are, the kept experts' weights
 *    (compact, [E_keep, ...]), task t's routers with ALL E rows (the dropped rows stay in the
 *    softmax, so routing is the full model's exactly), task-embedding row t, head t and task t's
 *    uncertainty weight, all under the official names with the task re-indexed to 0. A pair
 *    whose routing picks a dropped expert contributes nothing (model/moe_layer.c). Architectures
 *    without MoE layers extract the same way with nothing to drop (hard_sharing: the shared
 *    trunk and head t; separate_bottom: task t's bottom blocks, the shared top and head t). */
#ifndef MS_EXTRACT_H
#define MS_EXTRACT_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "model.h"
#include "params.h"

/* usage[E] (percent of the task's tokens) from the selection counts[E] of one MoE layer with
 * top-k K; all 0 when the layer saw no token. */
void ms_extract_usage(const int64_t *counts, int E, int K, double *usage);

/* The experts to keep from usage[E]: those above threshold (percent), or the K most used when
 * fewer pass. Writes their indices in increasing order to kept[E]; returns how many. */
int ms_extract_choose(const double *usage, int E, int K, double threshold, int16_t *kept);

/* The extracted model's config: src (a multi-task model's resolved config) with
 * data.tasks = [src's task `task`] and model.kept_experts = *kept (layers 0 for an architecture
 * without MoE layers); `name` stands for its source in messages and `config show`. Returns the
 * number of errors appended to errs (0: out is valid). */
int ms_extract_config(ms_config *out, const ms_config *src, int task, const ms_expert_sets *kept,
                      const char *name, ms_config_errors *errs);

/* Fills ext_data (the extracted model's parameter buffer on the host, ms_model_params(ext)->total
 * floats) from the full model's tensors (table src, host buffer src_data) for the full model's
 * task `task`. ext may be a plan_only model. Returns 0, or -1 with err naming the tensor that
 * is missing or has an unexpected shape. */
int ms_extract_params(const ms_param_table *src, const float *src_data, int task,
                      const ms_model *ext, float *ext_data, char *err, size_t cap);

#endif
