#include "optim.h"

#include <math.h>
#include <stdlib.h>

#include "../kernels/util.h"

int ms_optim_create(ms_optim *o, ms_backend *be, const ms_param_table *pt, const ms_train_config *tc,
                    long warmup_steps, long total_steps) {
    *o = (ms_optim){.be = be, .pt = pt};
    size_t bytes = pt->total * sizeof(float);
    o->m = be->alloc(be, bytes);
    o->v = be->alloc(be, bytes);
    o->norm_dev = be->alloc(be, sizeof(float));
    if (!o->m || !o->v || !o->norm_dev) {
        ms_optim_destroy(o);
        return -1;
    }
    be->zero(be, o->m, bytes);
    be->zero(be, o->v, bytes);
    /* Consecutive trained tensors with the same decay form one run; the alignment padding
     * between them rides along (its gradient is always zero, so it stays zero). */
    o->runs = ms_calloc((size_t)pt->n + 1, sizeof *o->runs);
    for (int i = 0; i < pt->n; i++) {
        const ms_tensor_info *t = &pt->t[i];
        if (t->buffer) continue;
        ms_optim_run *last = o->n_runs ? &o->runs[o->n_runs - 1] : NULL;
        int prev_trained = i > 0 && !pt->t[i - 1].buffer;
        if (last && prev_trained && last->decay == t->decay) {
            last->n = t->offset + t->numel - last->offset;
        } else {
            o->runs[o->n_runs++] = (ms_optim_run){t->offset, t->numel, t->decay};
        }
    }
    o->lr_peak = tc->lr, o->min_lr = tc->min_lr;
    o->beta1 = tc->beta1, o->beta2 = tc->beta2, o->eps = tc->eps;
    o->weight_decay = tc->weight_decay;
    o->warmup_steps = warmup_steps, o->total_steps = total_steps;
    return 0;
}

void ms_optim_destroy(ms_optim *o) {
    if (o->be) {
        if (o->m) o->be->free(o->be, o->m);
        if (o->v) o->be->free(o->be, o->v);
        if (o->norm_dev) o->be->free(o->be, o->norm_dev);
    }
    free(o->runs);
    *o = (ms_optim){0};
}

double ms_optim_lr(const ms_optim *o, long step) {
    if (step < o->warmup_steps) return o->lr_peak * (double)step / (double)o->warmup_steps;
    long span = o->total_steps - o->warmup_steps;
    double progress = span > 0 ? (double)(step - o->warmup_steps) / (double)span : 1.0;
    if (progress > 1) progress = 1;
    return o->min_lr + (o->lr_peak - o->min_lr) * 0.5 * (1.0 + cos(M_PI * progress));
}

double ms_optim_grad_norm(ms_optim *o, const float *grads) {
    float s;
    o->be->sumsq(o->be, o->norm_dev, grads, o->pt->total);
    o->be->download(o->be, &s, o->norm_dev, sizeof s);
    return sqrt((double)s);
}

void ms_optim_step(ms_optim *o, float *params, const float *grads, double lr, long step) {
    for (int r = 0; r < o->n_runs; r++) {
        const ms_optim_run *run = &o->runs[r];
        o->be->adamw(o->be, params + run->offset, grads + run->offset, o->m + run->offset,
                     o->v + run->offset, run->n, (float)lr, (float)o->beta1, (float)o->beta2,
                     (float)o->eps, run->decay ? (float)o->weight_decay : 0.0f, (int)(step + 1));
    }
}
