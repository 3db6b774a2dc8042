/* Checkpoints of a run directory (issue 5 / issue 9): a pair of files per saved step,
 *   ckpt-STEP.state.safetensors  optimizer moments and other training state (written first)
 *   ckpt-STEP.safetensors        the weights, official names, config and step in the metadata
 * each written atomically (temp file, fsync, rename) with a CRC-32 verified at load; the pair
 * is complete once the weights file exists. last.safetensors is a hard link to the newest
 * weights. Older pairs beyond `keep` are removed only after a newer pair is complete. */
#ifndef MS_CHECKPOINT_H
#define MS_CHECKPOINT_H

#include <stddef.h>

#include "params.h"
#include "safetensors.h"

/* An array saved in the state file as a 1-D F32 tensor. */
typedef struct {
    const char *name;
    const float *data; /* host */
    size_t n;
} ms_ckpt_array;

/* Writes the pair for `step` into dir, points last.safetensors at it and keeps the newest
 * `keep` pairs (keep <= 0: all). On failure nothing older is removed, err names the file. */
int ms_ckpt_save(const char *dir, long step, const ms_param_table *pt, const float *params,
                 const ms_kv *meta, int n_meta, const ms_ckpt_array *state, int n_state,
                 const ms_kv *state_meta, int n_state_meta, int keep, char *err, size_t cap);

/* The newest complete, verified pair in dir: returns its step and writes the weights path, or
 * -1 when there is none. Every newer pair that is partial or corrupt is skipped with a warning
 * naming the file and the reason. */
long ms_ckpt_latest(const char *dir, char *weights_path, size_t cap);

/* ckpt-STEP.state.safetensors for ckpt-STEP.safetensors. */
void ms_ckpt_state_path(const char *weights_path, char *out, size_t cap);

/* Copies the 1-D tensor `name` of n floats from a read file; errors name path and tensor. */
int ms_st_get_array(const ms_st_file *f, const char *path, const char *name, float *out, size_t n,
                    char *err, size_t cap);

#endif
