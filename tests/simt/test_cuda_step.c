/* A whole training step of a tiny model on the emulated CUDA backend against the CPU backend:
 * the same initial weights (ms_model_init draws on the host and uploads), the same batch, one
 * training forward (drop path, noisy gating where the arch has it: both drawn on the host), the
 * backward, the optimizer step, then an evaluation forward with the updated weights.
 *
 * Tolerances (relative error of a whole tensor, tu_expect_close):
 *   fp32: losses 1e-5, predictions 1e-5, every parameter gradient 1e-4 (or an absolute error
 *         under 1e-7: the gradient of a conv bias followed by BatchNorm is zero in exact
 *         arithmetic, so both sides hold rounding noise of about 1e-9), the updated weights
 *         1e-6. Both backends compute in fp32 with double reductions; they differ only in
 *         summation order, which through a 4-block network and its backward stays well under
 *         these bounds. The routing decisions of the forward must be identical (the tiny model's
 *         router probabilities are far from ties: checked, not assumed).
 *   bf16: activations and GEMM operands rounded to 8 mantissa bits: losses 5e-2 and the weights
 *         after one AdamW step 1e-3 (AdamW's first step moves each weight by about lr whatever
 *         the gradient's size, so the update is robust to gradient noise while the routing may
 *         differ in a few tokens). */
#include "harness.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../../kernels/backend_select.h"
#include "../../model/model.h"
#include "../../model/optim.h"
#include "../../model/tasks.h"
#include "../model/model_fd.h"

#define STEP 3

typedef struct {
    ms_backend *be;
    ms_model *m;
    ms_optim opt;
} side;

static void fill_batch(ms_batch *b, const ms_config *cfg, uint64_t seed) {
    tu_rng r = tu_seed(seed);
    size_t P = (size_t)b->H * b->W, BP = (size_t)b->B * P;
    tu_fill_normal(&r, b->images, (size_t)b->B * 3 * P, 1.0);
    for (int t = 0; t < b->T; t++) {
        const ms_task_def *d = ms_task_find(cfg->data.dataset, cfg->data.tasks.name[t]);
        ms_target *g = &b->target[t];
        switch (d->target) {
        case MS_TARGET_DENSE:
            tu_fill(&r, g->dense, BP * d->channels, -1, 1);
            for (size_t i = 0; i < BP; i++) g->valid[i] = tu_uniform(&r) < 0.9;
            break;
        case MS_TARGET_LABELS:
            for (size_t i = 0; i < BP; i++)
                g->labels[i] = tu_uniform(&r) < 0.1 ? d->ignore_index
                                                    : tu_randint(&r, 0, d->channels - 1);
            break;
        case MS_TARGET_BINARY:
            for (size_t i = 0; i < BP; i++)
                g->binary[i] = tu_uniform(&r) < 0.05 ? 255 : tu_uniform(&r) < 0.3;
            break;
        case MS_TARGET_VECTOR:
            for (int i = 0; i < b->B; i++) {
                double s = 0, e[1024];
                cr_assert(d->channels <= 1024);
                for (int c = 0; c < d->channels; c++) s += e[c] = exp(tu_normal(&r));
                for (int c = 0; c < d->channels; c++)
                    g->vector[(size_t)i * d->channels + c] = (float)(e[c] / s);
            }
            break;
        }
    }
    for (int i = 0; i < b->B; i++) b->sample[i] = i;
}

static void side_make(side *s, ms_backend *be, const ms_config *cfg, int B) {
    s->be = be;
    cr_assert_eq(ms_backend_missing_ops(be), 0, "the %s backend lacks %d ops", be->name,
                 ms_backend_missing_ops(be));
    s->m = ms_model_create(cfg, be, &(ms_model_opts){.batch = B});
    ms_model_init(s->m, 11);
    cr_assert_eq(ms_optim_create(&s->opt, be, ms_model_params(s->m), &cfg->train, 1, 10), 0);
}

static void side_free(side *s) {
    ms_optim_destroy(&s->opt);
    ms_model_destroy(s->m);
}

static float *host_copy(ms_backend *be, const float *dev, size_t n) {
    float *h = tu_floats(n);
    be->download(be, h, dev, n * sizeof(float));
    return h;
}

static void expect_losses(const ms_losses *a, const ms_losses *c, double tol) {
    cr_assert_eq(a->T, c->T);
    for (int t = 0; t < a->T; t++) {
        double d = fabs(a->task[t] - c->task[t]);
        cr_assert(d <= tol * fmax(fabs(c->task[t]), 1e-3), "task %d loss: cuda %.9g cpu %.9g", t,
                  a->task[t], c->task[t]);
    }
    double d = fabs(a->total - c->total);
    cr_assert(d <= tol * fmax(fabs(c->total), 1e-3), "total loss: cuda %.9g cpu %.9g", a->total,
              c->total);
}

/* One step on both backends; act is the CUDA side's activation type. */
static void step_matches(const char *const *sets, int n_sets, ms_dtype act) {
    ms_config cfg;
    fd_config(&cfg, FD_TINY_YAML, n_sets, sets);
    const int B = 2;
    side cpu, gpu;
    side_make(&cpu, tu_cpu(), &cfg, B);
    side_make(&gpu, sim_cuda(act), &cfg, B);
    int H = cfg.data.image_size;
    ms_batch b;
    ms_batch_alloc(&b, &cfg, B, H, H);
    fill_batch(&b, &cfg, 21);
    if (act == MS_BF16) sim_round_like(gpu.be, b.images, (size_t)B * 3 * H * H);
    const ms_param_table *pt = ms_model_params(cpu.m);
    size_t n = pt->total;
    bool f32 = act == MS_F32;

    ms_losses lc, lg;
    side *both[2] = {&cpu, &gpu};
    for (int i = 0; i < 2; i++) {
        ms_model_zero_grads(both[i]->m);
        ms_model_forward(both[i]->m, &b, 1, STEP);
    }
    ms_model_losses(cpu.m, &lc);
    ms_model_losses(gpu.m, &lg);
    expect_losses(&lg, &lc, f32 ? 1e-5 : 5e-2);

    if (f32) {
        /* identical routing: every MoE layer's per-task expert counts */
        for (int l = 0; l < ms_model_moe_layers(cpu.m); l++) {
            ms_moe_info info = ms_model_moe_info(cpu.m, l);
            for (int t = 0; t < cfg.data.tasks.n; t++) {
                int64_t cc[256], cg[256];
                cr_assert(info.E <= 256);
                ms_model_expert_counts(cpu.m, l, t, cc);
                ms_model_expert_counts(gpu.m, l, t, cg);
                for (int e = 0; e < info.E; e++)
                    cr_assert_eq(cg[e], cc[e], "MoE layer %d task %d expert %d: %lld vs %lld", l,
                                 t, e, (long long)cg[e], (long long)cc[e]);
            }
        }
        for (int t = 0; t < cfg.data.tasks.n; t++) {
            const ms_task_def *d = ms_task_find(cfg.data.dataset, cfg.data.tasks.name[t]);
            size_t np = (size_t)B * d->channels * (d->classification ? 1 : (size_t)H * H);
            float *pc = tu_floats(np), *pg = tu_floats(np);
            cpu.be->download_act(cpu.be, pc, ms_model_prediction(cpu.m, t), np);
            gpu.be->download_act(gpu.be, pg, ms_model_prediction(gpu.m, t), np);
            char what[96];
            snprintf(what, sizeof what, "prediction of %s", d->name);
            sim_expect_close(what, pg, pc, np, 1e-5);
        }
    }

    for (int i = 0; i < 2; i++) ms_model_backward(both[i]->m);
    if (f32) {
        float *gc = host_copy(cpu.be, ms_model_grad_data(cpu.m), n);
        float *gg = host_copy(gpu.be, ms_model_grad_data(gpu.m), n);
        for (int k = 0; k < pt->n; k++) {
            const ms_tensor_info *te = &pt->t[k];
            if (te->buffer) continue;
            double num = 0, den = 0;
            for (size_t i = te->offset; i < te->offset + te->numel; i++) {
                double d = (double)gg[i] - gc[i];
                num += d * d;
                den += (double)gc[i] * gc[i];
            }
            double rel = sqrt(num) / fmax(sqrt(den), 1e-12);
            cr_assert(rel <= 1e-4 || sqrt(num) <= 1e-7, "gradient of %s: relative error %.3g (norm %.3g)",
                      te->name, rel, sqrt(den));
        }
    }

    for (int i = 0; i < 2; i++) {
        double lr = ms_optim_lr(&both[i]->opt, STEP);
        ms_optim_step(&both[i]->opt, ms_model_param_data(both[i]->m),
                      ms_model_grad_data(both[i]->m), lr, STEP);
    }
    float *wc = host_copy(cpu.be, ms_model_param_data(cpu.m), n);
    float *wg = host_copy(gpu.be, ms_model_param_data(gpu.m), n);
    sim_expect_close("weights after one optimizer step", wg, wc, n, f32 ? 1e-6 : 1e-3);

    /* evaluation forward with the updated weights (BatchNorm running statistics, no noise) */
    for (int i = 0; i < 2; i++) ms_model_forward(both[i]->m, &b, 0, STEP);
    ms_model_losses(cpu.m, &lc);
    ms_model_losses(gpu.m, &lg);
    expect_losses(&lg, &lc, f32 ? 1e-5 : 5e-2);

    ms_batch_free(&b);
    side_free(&gpu);
    side_free(&cpu);
    sim_free_all();
}

static const char *const MODSQUAD[] = {"data.tasks=[depth_euclidean, normal, class_scene]"};
static const char *const M3VIT_PASCAL[] = {
    "data.dataset=pascal_context", "data.tasks=[semseg, sal, normals, edge, human_parts]",
    "model.arch=m3vit", "model.head=conv", "model.head_channels=8", "data.resize=16"};
static const char *const TASK_MOE_SHARED[] = {"model.arch=task_moe",
                                              "model.router=shared_task_conditioned"};
static const char *const HARD_SHARING[] = {"model.arch=hard_sharing"};

Test(cuda_step, modsquad_fp32) { step_matches(MODSQUAD, 1, MS_F32); }
Test(cuda_step, m3vit_conv_head_pascal_fp32) { step_matches(M3VIT_PASCAL, 6, MS_F32); }
Test(cuda_step, task_moe_shared_router_fp32) { step_matches(TASK_MOE_SHARED, 2, MS_F32); }
Test(cuda_step, hard_sharing_fp32) { step_matches(HARD_SHARING, 1, MS_F32); }
Test(cuda_step, modsquad_bf16) { step_matches(MODSQUAD, 1, MS_BF16); }
