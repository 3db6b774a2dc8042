/* The training recipe: learning-rate schedule, AdamW over the parameter table (decay flags,
 * buffers untouched), global gradient norm. */
#include <math.h>
#include <string.h>

#include "../../model/optim.h"
#include "../testutil.h"

static ms_train_config recipe(void) {
    ms_train_config tc = {0};
    tc.lr = 1e-3, tc.min_lr = 1e-6, tc.beta1 = 0.9, tc.beta2 = 0.999, tc.eps = 1e-4;
    tc.weight_decay = 0.05;
    return tc;
}

Test(optim, schedule_warmup_then_half_cosine) {
    ms_param_table pt = {0};
    ms_params_add(&pt, "w", 1, (int64_t[]){3}, 0);
    ms_train_config tc = recipe();
    ms_optim o;
    cr_assert_eq(ms_optim_create(&o, tu_cpu(), &pt, &tc, 10, 110), 0);
    cr_assert_eq(ms_optim_lr(&o, 0), 0.0, "the official schedule starts at 0");
    cr_assert_float_eq(ms_optim_lr(&o, 5), 5e-4, 1e-15);
    cr_assert_float_eq(ms_optim_lr(&o, 10), 1e-3, 1e-15);
    cr_assert_float_eq(ms_optim_lr(&o, 60), 1e-6 + (1e-3 - 1e-6) * 0.5, 1e-15);
    cr_assert_float_eq(ms_optim_lr(&o, 85), 1e-6 + (1e-3 - 1e-6) * 0.5 * (1 + cos(M_PI * 0.75)), 1e-15);
    cr_assert_float_eq(ms_optim_lr(&o, 110), 1e-6, 1e-15);
    cr_assert_float_eq(ms_optim_lr(&o, 500), 1e-6, 1e-15, "past the end the schedule stays at min_lr");
    for (long s = 11; s < 110; s++)
        cr_assert(ms_optim_lr(&o, s) < ms_optim_lr(&o, s - 1), "not decreasing at step %ld", s);
    ms_optim_destroy(&o);
}

/* A table mixing decayed, undecayed and buffer tensors. */
static void mixed_table(ms_param_table *pt) {
    memset(pt, 0, sizeof *pt);
    ms_params_add(pt, "a.weight", 2, (int64_t[]){5, 3}, 1);
    ms_params_add(pt, "b.weight", 2, (int64_t[]){2, 7}, 1);
    ms_params_add(pt, "b.bias", 1, (int64_t[]){7}, 0);
    int bn = ms_params_add(pt, "bn.running_mean", 1, (int64_t[]){4}, 0);
    ms_params_set_buffer(pt, bn);
    ms_params_add(pt, "c.weight", 2, (int64_t[]){3, 3}, 1);
}

Test(optim, runs_group_consecutive_tensors_and_skip_buffers) {
    ms_param_table pt;
    mixed_table(&pt);
    ms_train_config tc = recipe();
    ms_optim o;
    cr_assert_eq(ms_optim_create(&o, tu_cpu(), &pt, &tc, 1, 10), 0);
    cr_assert_eq(o.n_runs, 3);
    cr_assert_eq(o.runs[0].offset, pt.t[0].offset);
    cr_assert_eq(o.runs[0].n, pt.t[1].offset + pt.t[1].numel - pt.t[0].offset);
    cr_assert_eq(o.runs[0].decay, 1);
    cr_assert_eq(o.runs[1].offset, pt.t[2].offset);
    cr_assert_eq(o.runs[1].decay, 0);
    cr_assert_eq(o.runs[2].offset, pt.t[4].offset);
    ms_optim_destroy(&o);
}

/* PyTorch AdamW on one value, in double. */
static double adamw_ref(double p, double g, double *m, double *v, int step, double lr, double wd) {
    p *= 1 - lr * wd;
    *m = 0.9 * *m + 0.1 * g;
    *v = 0.999 * *v + 0.001 * g * g;
    double mh = *m / (1 - pow(0.9, step)), vh = *v / (1 - pow(0.999, step));
    return p - lr * mh / (sqrt(vh) + 1e-4);
}

Test(optim, step_matches_pytorch_adamw_per_tensor) {
    ms_param_table pt;
    mixed_table(&pt);
    ms_backend *be = tu_cpu();
    ms_train_config tc = recipe();
    ms_optim o;
    cr_assert_eq(ms_optim_create(&o, be, &pt, &tc, 2, 20), 0);
    tu_rng r = tu_seed(7);
    float *p = tu_floats(pt.total), *g = tu_floats(pt.total);
    double *pr = tu_doubles(pt.total), *m = tu_doubles(pt.total), *v = tu_doubles(pt.total);
    for (int i = 0; i < pt.n; i++) tu_fill(&r, p + pt.t[i].offset, pt.t[i].numel, -1, 1);
    tu_to_double(pr, p, pt.total);
    float *bn_before = tu_floats(4);
    memcpy(bn_before, p + pt.t[3].offset, 4 * sizeof(float));
    for (long step = 0; step < 3; step++) {
        for (int i = 0; i < pt.n; i++) tu_fill(&r, g + pt.t[i].offset, pt.t[i].numel, -0.5, 0.5);
        double lr = 1e-2;
        ms_optim_step(&o, p, g, lr, step);
        for (int i = 0; i < pt.n; i++) {
            const ms_tensor_info *t = &pt.t[i];
            if (t->buffer) continue;
            for (size_t k = t->offset; k < t->offset + t->numel; k++)
                pr[k] = adamw_ref(pr[k], g[k], &m[k], &v[k], (int)step + 1, lr, t->decay ? 0.05 : 0);
        }
    }
    for (int i = 0; i < pt.n; i++) {
        const ms_tensor_info *t = &pt.t[i];
        if (!t->buffer) tu_expect_close(t->name, p + t->offset, pr + t->offset, t->numel, 1e-6);
    }
    tu_expect_equal("BatchNorm running statistics are never trained", p + pt.t[3].offset, bn_before, 4);
    ms_optim_destroy(&o);
}

Test(optim, grad_norm) {
    ms_param_table pt;
    mixed_table(&pt);
    ms_train_config tc = recipe();
    ms_optim o;
    cr_assert_eq(ms_optim_create(&o, tu_cpu(), &pt, &tc, 1, 10), 0);
    float *g = tu_floats(pt.total);
    tu_rng r = tu_seed(3);
    tu_fill(&r, g, pt.total, -2, 2);
    double want = 0;
    for (size_t i = 0; i < pt.total; i++) want += (double)g[i] * g[i];
    cr_assert_float_eq(ms_optim_grad_norm(&o, g), sqrt(want), 1e-6 * sqrt(want));
    ms_optim_destroy(&o);
}
