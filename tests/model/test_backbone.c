/* The backbone (model/vit.h) of every model.arch on a tiny config, without heads: gradients of
 * every parameter tensor against finite differences under a fixed random linear objective of the
 * final tokens (plus the routing losses), the MI and balance parts of the gradient alone, names
 * and initialisation, determinism, running one task alone, and experts without tokens. */
#include "../../model/arena.h"
#include "../../model/vit.h"
#include "model_fd.h"

#define STEP 7 /* keys drop path and noise: every evaluation of a check sees the same draws */

typedef struct {
    ms_config cfg;
    ms_backend *be;
    ms_param_table pt;
    ms_vit *v;
    void *arena;
    float *params, *grads; /* device [pt.total] */
    int B, T, M, D, N;
    float *tok_w;          /* [T, M, D] objective weights on the final tokens */
    float *tok;            /* [M, D] host scratch */
    size_t sig_len;        /* routing decisions of one forward */
} bb;

static void bb_setup(bb *b, int n_sets, const char *const *sets, int B, uint64_t seed) {
    memset(b, 0, sizeof *b);
    fd_config(&b->cfg, FD_TINY_YAML, n_sets, sets);
    b->be = tu_cpu();
    b->B = B, b->T = b->cfg.data.tasks.n, b->D = b->cfg.model.dim;
    b->v = ms_vit_create(&b->cfg, b->be, B, 0, &b->pt);
    b->N = ms_vit_tokens_per_image(b->v), b->M = B * b->N;
    ms_arena a;
    ms_arena_measure(&a);
    ms_vit_alloc(b->v, &a);
    size_t bytes = ms_arena_size(&a);
    b->arena = b->be->alloc(b->be, bytes);
    ms_arena_place(&a, b->arena, bytes);
    ms_vit_alloc(b->v, &a);
    b->params = b->be->alloc(b->be, b->pt.total * sizeof(float));
    b->grads = b->be->alloc(b->be, b->pt.total * sizeof(float));
    float *host = tu_floats(b->pt.total);
    ms_vit_init(b->v, host, seed);
    b->be->upload(b->be, b->params, host, b->pt.total * sizeof(float));
    ms_vit_bind(b->v, b->params, b->grads);

    tu_rng r = tu_seed(1000); /* the same data whatever the weights */
    size_t img = (size_t)B * 3 * 16 * 16;
    float *images = tu_floats(img);
    tu_fill_normal(&r, images, img, 1.0);
    ms_vit_set_images(b->v, images);
    size_t MD = (size_t)b->M * b->D;
    b->tok_w = tu_floats((size_t)b->T * MD);
    tu_fill(&r, b->tok_w, (size_t)b->T * MD, -1, 1);
    b->tok = tu_floats(MD);
    for (int l = 0; l < ms_vit_moe_layers(b->v); l++)
        b->sig_len += (size_t)ms_vit_passes(b->v) * b->M * ms_vit_moe_info(b->v, l).K;
}

static void bb_free(bb *b) {
    ms_vit_destroy(b->v);
    b->be->free(b->be, b->arena);
    b->be->free(b->be, b->params);
    b->be->free(b->be, b->grads);
    ms_params_free(&b->pt);
}

/* Multiplies every tensor whose name contains `part` by s: routers with logits of order 1
 * make top-k decisions that finite-difference steps rarely flip. */
static void bb_scale(bb *b, const char *part, float s) {
    for (int j = 0; j < b->pt.n; j++) {
        const ms_tensor_info *ti = &b->pt.t[j];
        if (!strstr(ti->name, part)) continue;
        float *x = tu_floats(ti->numel);
        b->be->download(b->be, x, b->params + ti->offset, ti->numel * sizeof(float));
        for (size_t i = 0; i < ti->numel; i++) x[i] *= s;
        b->be->upload(b->be, b->params + ti->offset, x, ti->numel * sizeof(float));
        free(x);
    }
}

/* Weights of the official init make a tiny model nearly linear (trunc_normal .02 Linears give
 * uniform attention, so q and k get ~0 gradient): scale them up so every tensor has a
 * gradient well above the fp32 noise of the finite differences, and make routing decisive. */
static void bb_condition(bb *b) {
    bb_scale(b, "f_gate", 30.0f);
    const char *linears[] = {"qkv.weight", "proj.weight", "fc1.weight", "fc2.weight",
                             "kv_proj.0.weight", "pos_embed", "cls_token"};
    for (int k = 0; k < 7; k++) bb_scale(b, linears[k], 3.0f);
}

static void bb_routing(bb *b, int32_t *sig) {
    size_t o = 0;
    for (int l = 0; l < ms_vit_moe_layers(b->v); l++)
        for (int p = 0; p < ms_vit_passes(b->v); p++) {
            size_t n = (size_t)b->M * ms_vit_moe_info(b->v, l).K;
            b->be->download(b->be, sig + o, ms_vit_route_idx(b->v, l, p), n * sizeof(int32_t));
            o += n;
        }
}

/* L = tok_scale * sum_t <tok_w[t], tokens_t> + the routing losses, summed in double. */
typedef struct {
    bb *b;
    double tok_scale;
} objective;

static double bb_eval(void *ctx, int32_t *sig) {
    objective *o = ctx;
    bb *b = o->b;
    size_t MD = (size_t)b->M * b->D;
    ms_vit_forward(b->v, 1, STEP);
    double L = 0;
    for (int t = 0; t < b->T && o->tok_scale != 0; t++) {
        b->be->download_act(b->be, b->tok, ms_vit_tokens(b->v, t), MD);
        for (size_t i = 0; i < MD; i++) L += (double)b->tok_w[t * MD + i] * b->tok[i];
    }
    L *= o->tok_scale;
    double mi, bal;
    ms_vit_aux_losses(b->v, &mi, &bal);
    if (sig) bb_routing(b, sig);
    return L + mi + bal;
}

/* The analytic gradient of the same objective (host copy). */
static float *bb_grad(objective *o) {
    bb *b = o->b;
    size_t MD = (size_t)b->M * b->D;
    b->be->zero(b->be, b->grads, b->pt.total * sizeof(float));
    ms_vit_forward(b->v, 1, STEP);
    float *dy = tu_floats(MD);
    for (int t = 0; t < b->T; t++) {
        for (size_t i = 0; i < MD; i++) dy[i] = (float)(o->tok_scale * b->tok_w[t * MD + i]);
        b->be->upload_act(b->be, ms_vit_grad_in(b->v, t), dy, MD);
    }
    ms_vit_backward(b->v);
    float *g = tu_floats(b->pt.total);
    b->be->download(b->be, g, b->grads, b->pt.total * sizeof(float));
    return g;
}

static fd_result grad_check(int n_sets, const char *const *sets, double tok_scale, uint64_t seed) {
    static bb b; /* each Criterion test runs in its own process */
    bb_setup(&b, n_sets, sets, 2, seed);
    bb_condition(&b);
    objective o = {&b, tok_scale};
    float *g = bb_grad(&o);
    fd_spec s = {b.be, &b.pt, b.params, bb_eval, &o, b.sig_len, 5, seed, NULL, NULL};
    /* Every tensor within 2%, all entries together within 1% (fp32 model, 4-point stencil);
     * at most 15% of the entries skipped for routing flips. */
    fd_result r = fd_check(&s, g, 2e-2, 1e-2, 0.15);
    cr_log_info("%s: %d tensors, %d entries, %d skipped, overall %.2e, worst %.2e (%s)",
                ms_arch_names[b.cfg.model.arch], r.tensors, r.checked, r.skipped, r.total_rel,
                r.worst_rel, r.worst);
    bb_free(&b);
    return r;
}

/* ---- gradients of every arch ------------------------------------------------------------------- */

Test(backbone, grad_modsquad) {
    const char *sets[] = {"model.arch=modsquad"};
    fd_result r = grad_check(1, sets, 1.0, 1);
    cr_assert(r.tensors >= 40, "every tensor checked (%d)", r.tensors);
}

Test(backbone, grad_modsquad_noisy_all_blocks_moe) {
    const char *sets[] = {"model.moe_attn_blocks=all", "model.moe_mlp_blocks=all",
                          "model.noisy_gating=true", "model.depth=2"};
    grad_check(4, sets, 1.0, 2);
}

Test(backbone, grad_task_moe_per_task) {
    const char *sets[] = {"model.arch=task_moe"};
    grad_check(1, sets, 1.0, 3);
}

Test(backbone, grad_task_moe_shared_router) {
    const char *sets[] = {"model.arch=task_moe", "model.router=shared_task_conditioned",
                          "model.noisy_gating=true"};
    grad_check(3, sets, 1.0, 4);
}

Test(backbone, grad_m3vit) {
    const char *sets[] = {"model.arch=m3vit", "model.noisy_gating=true"};
    grad_check(2, sets, 1.0, 5);
}

Test(backbone, grad_hard_sharing) {
    const char *sets[] = {"model.arch=hard_sharing"};
    grad_check(1, sets, 1.0, 6);
}

Test(backbone, grad_separate_bottom) {
    const char *sets[] = {"model.arch=separate_bottom", "model.separate_layers=2"};
    grad_check(2, sets, 1.0, 7);
}

Test(backbone, grad_single_task) {
    const char *sets[] = {"model.arch=single_task", "data.tasks=[normal]"};
    grad_check(2, sets, 1.0, 8);
}

/* Only the routing losses: every gradient comes through the router probabilities. */
Test(backbone, grad_mi_loss_alone) {
    const char *sets[] = {"model.w_mi=1"};
    fd_result r = grad_check(1, sets, 0.0, 9);
    cr_assert(r.tensors >= 20);
}

Test(backbone, grad_balance_loss_alone) {
    const char *sets[] = {"model.arch=m3vit", "model.noisy_gating=true", "model.w_balance=1"};
    grad_check(3, sets, 0.0, 10);
}

/* The MI part of the gradient matters at w_mi = 1: the gradient with it differs from the one
 * without it, by exactly the MI-alone gradient (the backward is linear in the upstream terms). */
Test(backbone, mi_gradient_adds_up) {
    static bb b;
    const char *sets[] = {"model.w_mi=1"};
    bb_setup(&b, 1, sets, 2, 11);
    bb_condition(&b);
    objective both = {&b, 1.0}, mi = {&b, 0.0};
    float *g_both = bb_grad(&both), *g_mi = bb_grad(&mi);
    double d_mi = 0, d_both = 0;
    for (size_t i = 0; i < b.pt.total; i++) d_mi += fabs(g_mi[i]), d_both += fabs(g_both[i]);
    cr_assert(d_mi > 1e-3 * d_both, "MI gradient too small to matter: %g vs %g", d_mi, d_both);
    /* tokens only = both - mi */
    b.cfg.model.w_mi = 0; /* read at each forward: the same model without the MI loss */
    objective tok = {&b, 1.0};
    float *g_tok = bb_grad(&tok);
    double *sum = tu_doubles(b.pt.total);
    for (size_t i = 0; i < b.pt.total; i++) sum[i] = (double)g_tok[i] + g_mi[i];
    tu_expect_close("tokens + MI gradient", g_both, sum, b.pt.total, 1e-5);
    bb_free(&b);
}

/* ---- names, shapes, decay and initialisation ------------------------------------------------- */

static const ms_tensor_info *find(const ms_param_table *pt, const char *name) {
    int j = ms_params_find(pt, name);
    cr_assert(j >= 0, "tensor %s missing", name);
    return &pt->t[j];
}

static void expect_shape(const ms_param_table *pt, const char *name, int ndim, const int64_t *s,
                         int decay) {
    const ms_tensor_info *t = find(pt, name);
    cr_assert_eq(t->ndim, ndim, "%s: %d dims, want %d", name, t->ndim, ndim);
    for (int i = 0; i < ndim; i++)
        cr_assert_eq(t->shape[i], s[i], "%s: dim %d is %lld, want %lld", name, i,
                     (long long)t->shape[i], (long long)s[i]);
    cr_assert_eq(t->decay, decay, "%s: decay %d, want %d", name, t->decay, decay);
}

Test(backbone, official_names_shapes_decay) {
    ms_config cfg;
    fd_config(&cfg, FD_TINY_YAML, 0, NULL);
    ms_param_table pt = {0};
    ms_vit *v = ms_vit_create(&cfg, tu_cpu(), 2, 0, &pt);
    /* D 8, 17 tokens, head_dim auto 2*8/2 = 8, expert hidden 4*8/2 = 16, E 4, T 2 */
    expect_shape(&pt, "cls_token", 3, (int64_t[]){1, 1, 8}, 0);
    expect_shape(&pt, "pos_embed", 3, (int64_t[]){1, 17, 8}, 0);
    expect_shape(&pt, "patch_embed.proj.weight", 4, (int64_t[]){8, 3, 4, 4}, 1);
    expect_shape(&pt, "patch_embed.proj.bias", 1, (int64_t[]){8}, 0);
    expect_shape(&pt, "task_embedding", 3, (int64_t[]){1, 2, 8}, 1);
    expect_shape(&pt, "blocks.0.norm1.weight", 1, (int64_t[]){8}, 0);
    expect_shape(&pt, "blocks.0.attn.q_proj.experts.w", 3, (int64_t[]){4, 8, 8}, 1);
    expect_shape(&pt, "blocks.0.attn.q_proj.output_experts.w", 3, (int64_t[]){4, 8, 8}, 1);
    expect_shape(&pt, "blocks.0.attn.q_proj.f_gate.1.0.weight", 2, (int64_t[]){4, 8}, 1);
    expect_shape(&pt, "blocks.0.attn.kv_proj.0.weight", 2, (int64_t[]){16, 8}, 1);
    expect_shape(&pt, "blocks.0.attn.kv_proj.0.bias", 1, (int64_t[]){16}, 0);
    expect_shape(&pt, "blocks.0.mlp.fc1.weight", 2, (int64_t[]){32, 8}, 1);
    expect_shape(&pt, "blocks.0.mlp.fc2.bias", 1, (int64_t[]){8}, 0);
    expect_shape(&pt, "blocks.1.attn.qkv.weight", 2, (int64_t[]){48, 8}, 1);
    expect_shape(&pt, "blocks.1.attn.qkv.bias", 1, (int64_t[]){48}, 0);
    expect_shape(&pt, "blocks.1.attn.proj.weight", 2, (int64_t[]){8, 16}, 1);
    expect_shape(&pt, "blocks.1.mlp.experts.w", 3, (int64_t[]){4, 8, 16}, 1);
    expect_shape(&pt, "blocks.1.mlp.experts.b", 2, (int64_t[]){4, 16}, 1);
    expect_shape(&pt, "blocks.1.mlp.output_experts.w", 3, (int64_t[]){4, 16, 8}, 1);
    expect_shape(&pt, "blocks.1.mlp.output_experts.b", 2, (int64_t[]){4, 8}, 1);
    expect_shape(&pt, "blocks.3.mlp.f_gate.0.0.weight", 2, (int64_t[]){4, 8}, 1);
    cr_assert_lt(ms_params_find(&pt, "blocks.0.attn.q_proj.experts.b"), 0, "MoA has no bias");
    cr_assert_lt(ms_params_find(&pt, "blocks.1.mlp.fc1.weight"), 0, "odd blocks: MoE MLP");
    cr_assert_lt(ms_params_find(&pt, "norm.weight"), 0, "the final norm belongs to the heads");
    ms_vit_destroy(v);
    ms_params_free(&pt);

    /* the other archs' own names */
    const char *shared[] = {"model.arch=task_moe", "model.router=shared_task_conditioned",
                            "model.noisy_gating=true"};
    fd_config(&cfg, FD_TINY_YAML, 3, shared);
    v = ms_vit_create(&cfg, tu_cpu(), 2, 0, &pt);
    expect_shape(&pt, "blocks.1.mlp.f_gate.token.weight", 2, (int64_t[]){8, 8}, 1);
    expect_shape(&pt, "blocks.1.mlp.f_gate.task.weight", 2, (int64_t[]){8, 8}, 1);
    cr_assert_lt(ms_params_find(&pt, "blocks.1.mlp.f_gate.0.0.weight"), 0);
    ms_vit_destroy(v);
    ms_params_free(&pt);

    const char *sep[] = {"model.arch=separate_bottom", "model.separate_layers=2"};
    fd_config(&cfg, FD_TINY_YAML, 2, sep);
    v = ms_vit_create(&cfg, tu_cpu(), 2, 0, &pt);
    expect_shape(&pt, "task_blocks.1.1.attn.qkv.weight", 2, (int64_t[]){24, 8}, 1);
    expect_shape(&pt, "task_blocks.0.0.mlp.fc2.weight", 2, (int64_t[]){8, 32}, 1);
    expect_shape(&pt, "blocks.2.norm1.bias", 1, (int64_t[]){8}, 0);
    cr_assert_lt(ms_params_find(&pt, "blocks.1.norm1.bias"), 0);
    cr_assert_lt(ms_params_find(&pt, "task_blocks.0.2.norm1.bias"), 0);
    cr_assert_lt(ms_params_find(&pt, "task_embedding"), 0);
    ms_vit_destroy(v);
    ms_params_free(&pt);

    const char *m3[] = {"model.arch=m3vit", "model.noisy_gating=true"};
    fd_config(&cfg, FD_TINY_YAML, 2, m3);
    v = ms_vit_create(&cfg, tu_cpu(), 2, 0, &pt);
    expect_shape(&pt, "blocks.1.mlp.f_gate.1.0.weight", 2, (int64_t[]){8, 8}, 1); /* 2E: noisy */
    expect_shape(&pt, "blocks.0.attn.qkv.weight", 2, (int64_t[]){24, 8}, 1); /* dense, dim/heads */
    cr_assert_eq(ms_vit_moe_layers(v), 2, "m3vit: MoE MLP on odd blocks only");
    ms_vit_destroy(v);
    ms_params_free(&pt);
}

/* A timm ViT-S/16 trunk: 21,665,664 parameters with its final norm (22.05M with the 1000-class
 * head), 21,664,896 without (our final norm belongs to the heads). */
Test(backbone, dense_vit_small_parameter_count) {
    ms_config cfg;
    const char *sets[] = {"model.arch=hard_sharing", "data.image_size=224", "data.resize=256",
                          "model.patch=16", "model.dim=384", "model.depth=12", "model.heads=6"};
    fd_config(&cfg, FD_TINY_YAML, 7, sets);
    ms_param_table pt = {0};
    ms_vit *v = ms_vit_create(&cfg, tu_cpu(), 1, 0, &pt);
    cr_assert_eq(ms_params_count(&pt), 21664896, "ViT-S/16 trunk: %zu", ms_params_count(&pt));
    /* 4.6 GMACs as timm / fvcore report it (fvcore counts one multiply-add as one flop) */
    double gmacs = ms_vit_flops(v, 0) / 2e9;
    cr_assert(gmacs > 4.55 && gmacs < 4.65, "ViT-S/16 forward: %.3f GMACs", gmacs);
    cr_assert_float_eq(ms_vit_active_params(v, 0), 21664896.0, 0.5);
    ms_vit_destroy(v);
    ms_params_free(&pt);
}

static double mean_of(const float *x, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += x[i];
    return s / n;
}

static double std_of(const float *x, size_t n) {
    double m = mean_of(x, n), s = 0;
    for (size_t i = 0; i < n; i++) s += (x[i] - m) * (x[i] - m);
    return sqrt(s / n);
}

static double maxabs(const float *x, size_t n) {
    double a = 0;
    for (size_t i = 0; i < n; i++) a = fmax(a, fabs(x[i]));
    return a;
}

Test(backbone, official_initialisation) {
    ms_config cfg;
    const char *sets[] = {"model.dim=64", "model.attn_experts=8", "model.mlp_experts=8"};
    fd_config(&cfg, FD_TINY_YAML, 3, sets);
    ms_param_table pt = {0};
    ms_vit *v = ms_vit_create(&cfg, tu_cpu(), 1, 0, &pt);
    float *w = tu_floats(pt.total);
    ms_vit_init(v, w, 3);
#define T_(name) (w + find(&pt, name)->offset), find(&pt, name)->numel
    /* trunc_normal(.02): Linear weights, routers, pos_embed */
    cr_assert(fabs(std_of(T_("blocks.1.attn.qkv.weight")) - 0.02) < 0.002);
    cr_assert(fabs(std_of(T_("blocks.1.mlp.f_gate.0.0.weight")) - 0.02) < 0.003);
    cr_assert(fabs(std_of(T_("pos_embed")) - 0.02) < 0.003);
    cr_assert(fabs(std_of(T_("blocks.0.attn.kv_proj.0.weight")) - 0.02) < 0.003);
    /* experts: w ~ U(+-1/in) (std bound/sqrt 3), b ~ U(+-1/sqrt(out)) */
    double b_in = 1.0 / 64, b_out = 1.0 / 128; /* D 64, expert hidden 4*64/2 = 128, hd 64 */
    cr_assert(maxabs(T_("blocks.1.mlp.experts.w")) <= b_in);
    cr_assert(fabs(std_of(T_("blocks.1.mlp.experts.w")) - b_in / sqrt(3)) < 0.05 * b_in);
    cr_assert(maxabs(T_("blocks.1.mlp.output_experts.w")) <= b_out);
    cr_assert(maxabs(T_("blocks.1.mlp.experts.b")) <= 1 / sqrt(128.0));
    cr_assert(maxabs(T_("blocks.1.mlp.output_experts.b")) <= 1 / sqrt(64.0));
    cr_assert(maxabs(T_("blocks.0.attn.q_proj.output_experts.w")) <= 1.0 / 64);
    cr_assert(maxabs(T_("blocks.0.attn.q_proj.output_experts.w")) > 0.9 / 64);
    /* Conv2d default: U(+-1/sqrt(fan_in)), fan_in = 3*4*4 */
    cr_assert(maxabs(T_("patch_embed.proj.weight")) <= 1 / sqrt(48.0));
    cr_assert(maxabs(T_("patch_embed.proj.weight")) > 0.9 / sqrt(48.0));
    /* task_embedding: torch.randn */
    cr_assert(fabs(std_of(T_("task_embedding")) - 1.0) < 0.25);
    /* LayerNorm 1 / 0, biases 0 */
    cr_assert_eq(mean_of(T_("blocks.2.norm2.weight")), 1.0);
    cr_assert_eq(maxabs(T_("blocks.2.norm2.bias")), 0.0);
    cr_assert_eq(maxabs(T_("blocks.1.attn.qkv.bias")), 0.0);
    cr_assert_eq(maxabs(T_("blocks.0.attn.kv_proj.0.bias")), 0.0);

    /* Streams are keyed by name: a tensor gets the same values whatever the table around it
     * (here: a config with a different depth and tasks). */
    ms_config cfg2;
    const char *sets2[] = {"model.dim=64", "model.attn_experts=8", "model.mlp_experts=8",
                           "model.depth=2", "data.tasks=[normal, depth_zbuffer, reshading]"};
    fd_config(&cfg2, FD_TINY_YAML, 5, sets2);
    ms_param_table pt2 = {0};
    ms_vit *v2 = ms_vit_create(&cfg2, tu_cpu(), 1, 0, &pt2);
    float *w2 = tu_floats(pt2.total);
    ms_vit_init(v2, w2, 3);
    const char *same[] = {"blocks.1.mlp.experts.w", "blocks.0.attn.q_proj.experts.w",
                          "blocks.1.mlp.f_gate.1.0.weight", "patch_embed.proj.weight"};
    for (int k = 0; k < 4; k++) {
        const ms_tensor_info *a = find(&pt, same[k]), *b = find(&pt2, same[k]);
        tu_expect_equal(same[k], w2 + b->offset, w + a->offset, a->numel);
    }
    /* another seed, other values */
    ms_vit_init(v2, w2, 4);
    const ms_tensor_info *a = find(&pt, "blocks.1.mlp.experts.w");
    const ms_tensor_info *b2 = find(&pt2, "blocks.1.mlp.experts.w");
    cr_assert(memcmp(w + a->offset, w2 + b2->offset, a->numel * sizeof(float)) != 0);
#undef T_
    ms_vit_destroy(v);
    ms_vit_destroy(v2);
    ms_params_free(&pt);
    ms_params_free(&pt2);
}

/* ---- determinism, task alone, empty experts ------------------------------------------------- */

static float *bb_tokens(bb *b, int t) {
    float *x = tu_floats((size_t)b->M * b->D);
    b->be->download_act(b->be, x, ms_vit_tokens(b->v, t), (size_t)b->M * b->D);
    return x;
}

Test(backbone, same_seed_same_outputs_and_eval_is_deterministic) {
    static bb a, b;
    const char *sets[] = {"model.noisy_gating=true"};
    bb_setup(&a, 1, sets, 3, 21);
    bb_setup(&b, 1, sets, 3, 21);
    size_t MD = (size_t)a.M * a.D;
    for (int training = 1; training >= 0; training--) {
        ms_vit_forward(a.v, training, 5);
        ms_vit_forward(b.v, training, 5);
        for (int t = 0; t < a.T; t++)
            tu_expect_equal("same seed: tokens", bb_tokens(&b, t), bb_tokens(&a, t), MD);
    }
    /* eval twice: bit-identical; and training draws differ per step */
    ms_vit_forward(a.v, 0, 1);
    float *e1 = bb_tokens(&a, 1);
    ms_vit_forward(a.v, 0, 2);
    tu_expect_equal("eval forward twice", bb_tokens(&a, 1), e1, MD);
    ms_vit_forward(a.v, 1, 1);
    float *t1 = bb_tokens(&a, 1);
    ms_vit_forward(a.v, 1, 2);
    cr_assert(memcmp(bb_tokens(&a, 1), t1, MD * sizeof(float)) != 0,
              "drop path / noise must change with the step");
    /* another init seed, other outputs */
    static bb c;
    bb_setup(&c, 1, sets, 3, 22);
    ms_vit_forward(c.v, 0, 1);
    cr_assert(memcmp(bb_tokens(&c, 1), e1, MD * sizeof(float)) != 0);
    bb_free(&a), bb_free(&b), bb_free(&c);
}

/* Name in the one-task model -> name in the multi-task model, for task t. */
static void multi_name(char *out, size_t cap, const char *name, int t) {
    const char *keys[] = {"f_gate.0.", "task_blocks.0."};
    for (int k = 0; k < 2; k++) {
        const char *at = strstr(name, keys[k]);
        if (!at) continue;
        size_t pre = (size_t)(at - name), klen = strlen(keys[k]);
        snprintf(out, cap, "%.*s%.*s%d.%s", (int)pre, name, (int)(klen - 2), keys[k], t,
                 at + klen);
        return;
    }
    snprintf(out, cap, "%s", name);
}

/* Copies every tensor of `one` (task t alone) from `multi` by name; task_embedding row t. */
static void copy_task_weights(bb *one, bb *multi, int t) {
    float *src = tu_floats(multi->pt.total), *dst = tu_floats(one->pt.total);
    one->be->download(one->be, src, multi->params, multi->pt.total * sizeof(float));
    for (int j = 0; j < one->pt.n; j++) {
        const ms_tensor_info *ti = &one->pt.t[j];
        char name[MS_TENSOR_NAME_MAX];
        multi_name(name, sizeof name, ti->name, t);
        const ms_tensor_info *si = find(&multi->pt, name);
        size_t off = strcmp(ti->name, "task_embedding") == 0 ? (size_t)t * multi->D : 0;
        cr_assert(off + ti->numel <= si->numel, "%s does not fit %s", ti->name, name);
        memcpy(dst + ti->offset, src + si->offset + off, ti->numel * sizeof(float));
    }
    one->be->upload(one->be, one->params, dst, one->pt.total * sizeof(float));
}

static void check_task_alone(int n_sets, const char **sets) {
    static bb multi, one;
    bb_setup(&multi, n_sets, sets, 2, 31);
    const char *one_sets[8];
    for (int i = 0; i < n_sets; i++) one_sets[i] = sets[i];
    one_sets[n_sets] = "data.tasks=[normal]"; /* task 1 of the tiny config */
    bb_setup(&one, n_sets + 1, one_sets, 2, 32);
    copy_task_weights(&one, &multi, 1);
    size_t MD = (size_t)multi.M * multi.D;
    for (int training = 1; training >= 0; training--) {
        ms_vit_forward(multi.v, training, 9);
        ms_vit_forward(one.v, training, 9);
        tu_expect_equal(training ? "task alone (training)" : "task alone (eval)",
                        bb_tokens(&one, 0), bb_tokens(&multi, 1), MD);
    }
    bb_free(&multi), bb_free(&one);
}

Test(backbone, task_alone_matches_multi_task_pass) {
    const char *mod[] = {"model.noisy_gating=true"};
    check_task_alone(1, mod);
    const char *tm[] = {"model.arch=task_moe", "model.router=shared_task_conditioned"};
    check_task_alone(2, tm);
    const char *m3[] = {"model.arch=m3vit", "model.noisy_gating=true"};
    check_task_alone(2, m3);
    const char *sep[] = {"model.arch=separate_bottom", "model.separate_layers=3"};
    check_task_alone(2, sep);
}

Test(backbone, hard_sharing_runs_one_pass) {
    static bb b;
    const char *sets[] = {"model.arch=hard_sharing"};
    bb_setup(&b, 1, sets, 2, 41);
    cr_assert_eq(ms_vit_passes(b.v), 1);
    cr_assert_eq(ms_vit_tokens(b.v, 0), ms_vit_tokens(b.v, 1), "every head reads the one trunk");
    cr_assert_eq(ms_vit_moe_layers(b.v), 0);
    bb_free(&b);
}

/* Routing every token away from some experts: counts 0, gradients of those experts exactly 0,
 * nothing NaN, and the other experts still learn. */
Test(backbone, expert_without_tokens_still_trains) {
    static bb b;
    bb_setup(&b, 0, NULL, 2, 51);
    /* Block 1's MoE MLP sees norm2(x) = bias = 1 for every token (weight 0), so every token
     * has the same logits W 1: experts 2 and 3 get the lowest. */
    const char *names[] = {"blocks.1.norm2.weight", "blocks.1.norm2.bias",
                           "blocks.1.mlp.f_gate.0.0.weight", "blocks.1.mlp.f_gate.1.0.weight"};
    for (int k = 0; k < 4; k++) {
        const ms_tensor_info *ti = find(&b.pt, names[k]);
        float *x = tu_floats(ti->numel);
        for (size_t i = 0; i < ti->numel; i++)
            x[i] = k == 0 ? 0.0f : k == 1 ? 1.0f : (float)(0.5 - (double)(i / b.D)); /* row e */
        b.be->upload(b.be, b.params + ti->offset, x, ti->numel * sizeof(float));
    }
    objective o = {&b, 1.0};
    float *g = bb_grad(&o);
    int layer = -1;
    for (int l = 0; l < ms_vit_moe_layers(b.v); l++)
        if (ms_vit_moe_info(b.v, l).block == 1) layer = l;
    cr_assert(layer >= 0);
    int64_t counts[4];
    for (int t = 0; t < 2; t++) {
        ms_vit_expert_counts(b.v, layer, t, counts);
        cr_assert(counts[0] == b.M && counts[1] == b.M && counts[2] == 0 && counts[3] == 0,
                  "task %d counts %lld %lld %lld %lld", t, (long long)counts[0],
                  (long long)counts[1], (long long)counts[2], (long long)counts[3]);
    }
    for (size_t i = 0; i < b.pt.total; i++) cr_assert(isfinite(g[i]), "gradient %zu not finite", i);
    const char *experts[] = {"blocks.1.mlp.experts.w", "blocks.1.mlp.experts.b",
                             "blocks.1.mlp.output_experts.w", "blocks.1.mlp.output_experts.b"};
    for (int k = 0; k < 4; k++) {
        const ms_tensor_info *ti = find(&b.pt, experts[k]);
        size_t per = ti->numel / 4;
        double used = 0;
        for (size_t i = 0; i < 2 * per; i++) used += fabs(g[ti->offset + i]);
        for (size_t i = 2 * per; i < 4 * per; i++)
            cr_assert_eq(g[ti->offset + i], 0.0f, "%s: expert without tokens has gradient",
                         experts[k]);
        cr_assert(used > 0, "%s: experts with tokens must have a gradient", experts[k]);
    }
    bb_free(&b);
}

Test(backbone, expert_counts_match_routing) {
    static bb b;
    bb_setup(&b, 0, NULL, 3, 61);
    ms_vit_forward(b.v, 1, 3);
    for (int l = 0; l < ms_vit_moe_layers(b.v); l++) {
        ms_moe_info info = ms_vit_moe_info(b.v, l);
        cr_assert_eq(info.attn, info.block % 2 == 0, "MoE attention on even blocks");
        for (int t = 0; t < b.T; t++) {
            int64_t counts[16] = {0}, want[16] = {0}, sum = 0;
            int32_t *idx = tu_ints((size_t)b.M * info.K);
            b.be->download(b.be, idx, ms_vit_route_idx(b.v, l, t), (size_t)b.M * info.K * 4);
            for (int i = 0; i < b.M * info.K; i++) want[idx[i]]++;
            ms_vit_expert_counts(b.v, l, t, counts);
            for (int e = 0; e < info.E; e++) {
                cr_assert_eq(counts[e], want[e]);
                sum += counts[e];
            }
            cr_assert_eq(sum, (int64_t)b.M * info.K, "every token goes to exactly K experts");
        }
    }
    bb_free(&b);
}
