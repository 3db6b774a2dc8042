/* The training recipe of METHOD.md section 6: AdamW over the parameter table (decay only on the
 * tensors the table marks), the learning-rate schedule (linear warmup, then half-cosine to
 * min_lr), and global-norm gradient clipping. Moments mirror the flat parameter buffer. */
#ifndef MS_OPTIM_H
#define MS_OPTIM_H

#include "../kernels/backend.h"
#include "config.h"
#include "params.h"

/* A run of consecutive tensors that share one AdamW setting: one backend call each. */
typedef struct {
    size_t offset, n; /* floats, from the first tensor's offset to the end of the last */
    int decay;
} ms_optim_run;

typedef struct {
    ms_backend *be;
    const ms_param_table *pt;
    float *m, *v;          /* device [pt->total] first and second moments */
    ms_optim_run *runs;    /* [n_runs] trained tensors only (buffers are skipped) */
    int n_runs;
    double lr_peak, min_lr, beta1, beta2, eps, weight_decay;
    long warmup_steps, total_steps;
    float *norm_dev;       /* device scalar for the gradient norm */
} ms_optim;

/* Allocates zeroed moments. lr_peak: cfg->train.lr (already scaled by batch / 256). */
int ms_optim_create(ms_optim *o, ms_backend *be, const ms_param_table *pt, const ms_train_config *tc,
                    long warmup_steps, long total_steps);
void ms_optim_destroy(ms_optim *o);

/* The learning rate of optimizer step `step` (0-based), as the official util/lr_sched.py per
 * iteration: lr_peak * step / warmup during the warmup (0 at the very first step), then
 * min_lr + (lr_peak - min_lr) * (1 + cos(pi * (step - warmup) / (total - warmup))) / 2. */
double ms_optim_lr(const ms_optim *o, long step);

/* Global L2 norm of the gradient buffer (device), downloaded to the host. */
double ms_optim_grad_norm(ms_optim *o, const float *grads);

/* One AdamW step (step is 0-based; bias correction uses step + 1) with learning rate lr. */
void ms_optim_step(ms_optim *o, float *params, const float *grads, double lr, long step);

#endif
