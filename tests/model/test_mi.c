/* The mutual-information loss of Mod-Squad through the model machinery (router -> softmax ->
 * statistics over all T task passes -> mi_loss -> route_bwd), on one MoE MLP layer whose
 * routing is set by hand: uniform routing gives 0, one expert per task gives -log T (our
 * L_MI = -I(T;E)), a two-task split gives -(log 2 - H(p)); and the gradient of the loss, whose
 * descent raises I(T;E). Expected values come from the closed forms and from the official
 * formula (with its 1e-4 terms) evaluated in double on the statistics we know the model saw. */
#include "../../model/arena.h"
#include "../../model/vit.h"
#include "model_fd.h"

/* One MoE MLP layer (block 1 of 2), no drop path, MI weight 1. */
static const char *const ONE_LAYER[] = {"model.depth=2", "model.moe_attn_blocks=none",
                                        "model.moe_mlp_blocks=[1]", "model.drop_path=0",
                                        "model.w_mi=1"};
#define N_ONE_LAYER 5

typedef struct {
    ms_config cfg;
    ms_backend *be;
    ms_param_table pt;
    ms_vit *v;
    void *arena;
    float *params, *grads;
    int B, T, M, D, E, K;
} rig;

/* B images from `images` (NULL: random ones) as rank `rank` of a data-parallel run. */
static void rig_setup_rank(rig *r, int B, int rank, const float *images, int n_extra,
                           const char *const *extra, uint64_t seed) {
    memset(r, 0, sizeof *r);
    const char *sets[12];
    for (int i = 0; i < N_ONE_LAYER; i++) sets[i] = ONE_LAYER[i];
    for (int i = 0; i < n_extra; i++) sets[N_ONE_LAYER + i] = extra[i];
    fd_config(&r->cfg, FD_TINY_YAML, N_ONE_LAYER + n_extra, sets);
    r->be = tu_cpu();
    r->B = B, r->T = r->cfg.data.tasks.n, r->D = r->cfg.model.dim;
    r->v = ms_vit_create(&r->cfg, r->be, r->B, rank, &r->pt);
    r->M = r->B * ms_vit_tokens_per_image(r->v);
    cr_assert_eq(ms_vit_moe_layers(r->v), 1);
    r->E = ms_vit_moe_info(r->v, 0).E, r->K = ms_vit_moe_info(r->v, 0).K;
    ms_arena a;
    ms_arena_measure(&a);
    ms_vit_alloc(r->v, &a);
    size_t bytes = ms_arena_size(&a);
    r->arena = r->be->alloc(r->be, bytes);
    ms_arena_place(&a, r->arena, bytes);
    ms_vit_alloc(r->v, &a);
    r->params = r->be->alloc(r->be, r->pt.total * sizeof(float));
    r->grads = r->be->alloc(r->be, r->pt.total * sizeof(float));
    float *host = tu_floats(r->pt.total);
    ms_vit_init(r->v, host, seed);
    r->be->upload(r->be, r->params, host, r->pt.total * sizeof(float));
    ms_vit_bind(r->v, r->params, r->grads);
    tu_rng g = tu_seed(seed + 7);
    float *img = tu_floats((size_t)r->B * 3 * 256);
    tu_fill_normal(&g, img, (size_t)r->B * 3 * 256, 1.0);
    ms_vit_set_images(r->v, images ? images : img);
}

static void rig_free(rig *r) {
    ms_vit_destroy(r->v);
    r->be->free(r->be, r->arena);
    r->be->free(r->be, r->params);
    r->be->free(r->be, r->grads);
    ms_params_free(&r->pt);
}

static void rig_setup(rig *r, int n_extra, const char *const *extra, uint64_t seed) {
    rig_setup_rank(r, 2, 0, NULL, n_extra, extra, seed);
}

/* values[n]: the whole tensor. */
static void set_tensor(rig *r, const char *name, const float *values, size_t n) {
    int j = ms_params_find(&r->pt, name);
    cr_assert(j >= 0, "tensor %s missing", name);
    cr_assert_eq(n, r->pt.t[j].numel, "%s has %zu values, not %zu", name, r->pt.t[j].numel, n);
    r->be->upload(r->be, r->params + r->pt.t[j].offset, values,
                  r->pt.t[j].numel * sizeof(float));
}

/* The MoE layer's input becomes the all-ones vector for every token (norm2 weight 0, bias 1),
 * so router t's logits are the row sums of its weight: logit[e] = D * row_value[t][e]. */
static void set_routing(rig *r, const double row_value[][8]) {
    float *ones = tu_floats(r->D), *zeros = tu_floats(r->D), *w = tu_floats((size_t)r->E * r->D);
    for (int d = 0; d < r->D; d++) ones[d] = 1, zeros[d] = 0;
    set_tensor(r, "blocks.1.norm2.weight", zeros, r->D);
    set_tensor(r, "blocks.1.norm2.bias", ones, r->D);
    for (int t = 0; t < r->T; t++) {
        for (int e = 0; e < r->E; e++)
            for (int d = 0; d < r->D; d++) w[e * r->D + d] = (float)row_value[t][e];
        char name[64];
        snprintf(name, sizeof name, "blocks.1.mlp.f_gate.%d.0.weight", t);
        set_tensor(r, name, w, (size_t)r->E * r->D);
    }
}

/* Router weights N(0, std^2): logits of order 1 (all rows, the noise half included). */
static void set_random_routers(rig *r, uint64_t seed, double std) {
    tu_rng g = tu_seed(seed);
    for (int t = 0; t < r->T; t++) {
        char name[64];
        snprintf(name, sizeof name, "blocks.1.mlp.f_gate.%d.0.weight", t);
        size_t n = r->pt.t[ms_params_find(&r->pt, name)].numel;
        float *w = tu_floats(n);
        tu_fill_normal(&g, w, n, std);
        set_tensor(r, name, w, n);
        free(w);
    }
}

static double mi_of_forward(rig *r) {
    ms_vit_forward(r->v, 1, 1);
    double mi, bal;
    ms_vit_aux_losses(r->v, &mi, &bal);
    cr_assert_eq(bal, 0.0, "modsquad has no balance loss");
    return mi;
}

/* The official MI loss (moe.py get_aux_loss_and_clear, eps 1e-4) of every token of every task
 * routed with the same probabilities probs[t][E]: A = M (probs + eps), freq from the top-k. */
static double official_mi(const rig *r, const double probs[][8]) {
    const double eps = 1e-4;
    double A[16][8], freq[8] = {0}, PT[16], PE[8], tot = 0, L = 0;
    for (int t = 0; t < r->T; t++) {
        int taken[8] = {0};
        for (int j = 0; j < r->K; j++) { /* top-k, ties to the lower index */
            int best = -1;
            for (int e = 0; e < r->E; e++)
                if (!taken[e] && (best < 0 || probs[t][e] > probs[t][best])) best = e;
            taken[best] = 1;
            freq[best] += r->M;
        }
        for (int e = 0; e < r->E; e++) A[t][e] = r->M * (probs[t][e] + eps);
    }
    for (int e = 0; e < r->E; e++) tot += freq[e];
    tot /= r->K;
    for (int t = 0; t < r->T; t++) PT[t] = eps;
    for (int e = 0; e < r->E; e++) PE[e] = eps;
    for (int t = 0; t < r->T; t++)
        for (int e = 0; e < r->E; e++) PT[t] += A[t][e] / (tot + eps), PE[e] += A[t][e] / (tot + eps);
    for (int t = 0; t < r->T; t++)
        for (int e = 0; e < r->E; e++) {
            double P = A[t][e] / (tot + eps);
            L -= P * log(P / PT[t] / PE[e] + eps);
        }
    return L;
}

static void softmax_rows(double out[][8], const double logits[][8], int T, int E) {
    for (int t = 0; t < T; t++) {
        double mx = logits[t][0], s = 0;
        for (int e = 1; e < E; e++) mx = fmax(mx, logits[t][e]);
        for (int e = 0; e < E; e++) s += out[t][e] = exp(logits[t][e] - mx);
        for (int e = 0; e < E; e++) out[t][e] /= s;
    }
}

Test(mi, uniform_routing_gives_zero) {
    static rig r;
    rig_setup(&r, 0, NULL, 1);
    double rows[16][8] = {{0}}, probs[16][8], logits[16][8] = {{0}};
    set_routing(&r, rows); /* all logits 0: probabilities 1/E for every task */
    double mi = mi_of_forward(&r);
    softmax_rows(probs, logits, r.T, r.E);
    double want = official_mi(&r, probs);
    cr_assert(fabs(mi) < 1e-3, "uniform routing: L_MI = %.6g, want ~0", mi);
    cr_assert(fabs(mi - want) < 1e-5, "uniform routing: %.9g, official formula %.9g", mi, want);
    rig_free(&r);
}

static void one_expert_per_task(int T) {
    static rig r;
    const char *tasks[2] = {"data.tasks=[depth_euclidean, normal]",
                            "data.tasks=[depth_euclidean, normal, reshading, edge_texture]"};
    const char *extra[2] = {T == 2 ? tasks[0] : tasks[1], "model.mlp_topk=1"};
    rig_setup(&r, 2, extra, 2);
    cr_assert_eq(r.T, T);
    double rows[16][8] = {{0}}, logits[16][8] = {{0}}, probs[16][8];
    for (int t = 0; t < T; t++) rows[t][t] = 5.0, logits[t][t] = 5.0 * r.D; /* e^-40: one-hot */
    set_routing(&r, rows);
    double mi = mi_of_forward(&r);
    softmax_rows(probs, logits, T, r.E);
    double want = official_mi(&r, probs);
    /* the official 1e-4 terms move it by O(T E 1e-4) */
    cr_assert(fabs(mi + log((double)T)) < 5e-3, "T=%d, one expert per task: L_MI = %.6g, want "
              "-log T = %.6g", T, mi, -log((double)T));
    cr_assert(fabs(mi - want) < 1e-5 * fabs(want), "T=%d: %.9g, official formula %.9g", T, mi,
              want);
    int64_t counts[8];
    for (int t = 0; t < T; t++) {
        ms_vit_expert_counts(r.v, 0, t, counts);
        cr_assert_eq(counts[t], r.M, "task %d uses expert %d only", t, t);
    }
    rig_free(&r);
}

Test(mi, one_expert_per_task_gives_minus_log_T) {
    one_expert_per_task(2);
    one_expert_per_task(4);
}

/* Two tasks, two experts: task 0 routes with (p, 1-p), task 1 with (1-p, p). P(t, e) =
 * (p or 1-p) / 2 and the marginals are uniform, so I(T;E) = log 2 - H(p). */
Test(mi, two_task_split_matches_closed_form) {
    static rig r;
    const char *extra[2] = {"model.mlp_experts=2", "model.mlp_topk=1"};
    rig_setup(&r, 2, extra, 3);
    double p = 0.8, gap = log(p / (1 - p));
    double rows[16][8] = {{gap / r.D, 0}, {0, gap / r.D}}, logits[16][8] = {{gap, 0}, {0, gap}};
    double probs[16][8];
    set_routing(&r, rows);
    double mi = mi_of_forward(&r);
    softmax_rows(probs, logits, 2, 2);
    double H = -p * log(p) - (1 - p) * log(1 - p), closed = -(log(2.0) - H);
    cr_assert(fabs(mi - closed) < 1e-3, "split p=%.2f: L_MI = %.6g, closed form %.6g", p, mi,
              closed);
    cr_assert(fabs(mi - official_mi(&r, probs)) < 1e-5, "split: %.9g vs official %.9g", mi,
              official_mi(&r, probs));
    rig_free(&r);
}

/* ---- gradient ------------------------------------------------------------------------------- */

static double mi_objective(void *ctx, int32_t *sig) {
    rig *r = ctx;
    double mi = mi_of_forward(r);
    if (sig)
        r->be->download(r->be, sig, ms_vit_route_idx(r->v, 0, 0), (size_t)r->M * r->K * 4),
            r->be->download(r->be, sig + r->M * r->K, ms_vit_route_idx(r->v, 0, 1),
                            (size_t)r->M * r->K * 4);
    return mi;
}

static float *mi_gradient(rig *r) {
    r->be->zero(r->be, r->grads, r->pt.total * sizeof(float));
    ms_vit_forward(r->v, 1, 1);
    size_t MD = (size_t)r->M * r->D;
    float *zero = tu_floats(MD);
    for (int t = 0; t < r->T; t++) r->be->upload_act(r->be, ms_vit_grad_in(r->v, t), zero, MD);
    ms_vit_backward(r->v);
    float *g = tu_floats(r->pt.total);
    r->be->download(r->be, g, r->grads, r->pt.total * sizeof(float));
    return g;
}

/* Random routers of logit scale ~1: the MI gradient reaches both routers and, through the
 * router input, everything below the layer; the layers above it get none. */
Test(mi, gradient_matches_finite_differences) {
    static rig r;
    rig_setup(&r, 0, NULL, 4);
    set_random_routers(&r, 44, 0.6);
    float *grad = mi_gradient(&r);
    fd_spec s = {r.be, &r.pt, r.params, mi_objective, &r, (size_t)2 * r.M * r.K, 6, 45, NULL,
                 NULL};
    fd_result res = fd_check(&s, grad, 2e-2, 1e-2, 0.15);
    cr_assert(res.tensors >= 10);
    /* nothing above the router: the experts and the final norm-free output get no MI gradient */
    const char *none[] = {"blocks.1.mlp.experts.w", "blocks.1.mlp.output_experts.b"};
    for (int k = 0; k < 2; k++) {
        const ms_tensor_info *ti = &r.pt.t[ms_params_find(&r.pt, none[k])];
        for (size_t i = 0; i < ti->numel; i++)
            cr_assert_eq(grad[ti->offset + i], 0.0f, "%s has an MI gradient", none[k]);
    }
    rig_free(&r);
}

/* L_MI = -I(T;E): a small step against its gradient on the routers raises I(T;E). */
Test(mi, descent_raises_mutual_information) {
    static rig r;
    rig_setup(&r, 0, NULL, 5);
    set_random_routers(&r, 55, 0.3);
    double before = mi_of_forward(&r);
    float *grad = mi_gradient(&r);
    float *p = tu_floats(r.pt.total);
    r.be->download(r.be, p, r.params, r.pt.total * sizeof(float));
    for (int t = 0; t < r.T; t++) {
        char name[64];
        snprintf(name, sizeof name, "blocks.1.mlp.f_gate.%d.0.weight", t);
        const ms_tensor_info *ti = &r.pt.t[ms_params_find(&r.pt, name)];
        for (size_t i = 0; i < ti->numel; i++) p[ti->offset + i] -= 0.5f * grad[ti->offset + i];
    }
    r.be->upload(r.be, r.params, p, r.pt.total * sizeof(float));
    double after = mi_of_forward(&r);
    cr_assert(before < 0 && after < before, "L_MI %.6g -> %.6g: I(T;E) must grow", before, after);
    rig_free(&r);
}

/* ---- data parallelism ---------------------------------------------------------------------- */

/* Two ranks of two images each, their MI statistics summed by the hook, against one process
 * with all four images: the same MI loss on both ranks, equal to the whole batch's, and
 * gradients whose average over the ranks is the whole batch's gradient. Drop path and noise are
 * keyed by the global sample index, so the ranks see what the single process sees. */
typedef struct {
    float *add;    /* [n] host: the other rank's statistics, or NULL */
    float *record; /* [n] host: this rank's own statistics, or NULL */
} sum_hook;

static void fake_allreduce(void *ctx, float *x, size_t n) {
    sum_hook *h = ctx;
    ms_backend *be = tu_cpu();
    float *local = tu_floats(n);
    be->download(be, local, x, n * sizeof(float));
    if (h->record) memcpy(h->record, local, n * sizeof(float));
    if (h->add)
        for (size_t i = 0; i < n; i++) local[i] += h->add[i];
    be->upload(be, x, local, n * sizeof(float));
    free(local);
}



Test(mi, data_parallel_statistics_give_the_whole_batch_loss) {
    static rig full, r0, r1;
    const char *extra[] = {"model.noisy_gating=true", "model.drop_path=0.5"};
    tu_rng g = tu_seed(77);
    float *img = tu_floats(4 * 3 * 256);
    tu_fill_normal(&g, img, 4 * 3 * 256, 1.0);
    rig_setup_rank(&full, 4, 0, img, 2, extra, 6);
    rig_setup_rank(&r0, 2, 0, img, 2, extra, 6);
    rig_setup_rank(&r1, 2, 1, img + 2 * 3 * 256, 2, extra, 6);
    set_random_routers(&full, 78, 0.6), set_random_routers(&r0, 78, 0.6);
    set_random_routers(&r1, 78, 0.6);
    size_t n = (size_t)(full.T + 1) * full.E;
    float *s0 = tu_floats(n), *s1 = tu_floats(n);
    sum_hook h1a = {NULL, s1}, h0 = {s1, s0}, h1 = {s0, NULL};
    ms_vit_set_stats_sum(r1.v, fake_allreduce, &h1a, 2);
    ms_vit_forward(r1.v, 1, 1); /* records rank 1's statistics (same step as below) */
    ms_vit_set_stats_sum(r0.v, fake_allreduce, &h0, 2);
    ms_vit_set_stats_sum(r1.v, fake_allreduce, &h1, 2);

    double mi_full = mi_of_forward(&full);
    float *g_full = mi_gradient(&full), *g0 = mi_gradient(&r0), *g1 = mi_gradient(&r1);
    double mi0, mi1, bal;
    ms_vit_aux_losses(r0.v, &mi0, &bal);
    ms_vit_aux_losses(r1.v, &mi1, &bal);
    cr_assert(fabs(mi0 - mi_full) < 1e-6 * fabs(mi_full) + 1e-9, "rank 0: %.9g, whole batch %.9g",
              mi0, mi_full);
    cr_assert(fabs(mi1 - mi_full) < 1e-6 * fabs(mi_full) + 1e-9, "rank 1: %.9g, whole batch %.9g",
              mi1, mi_full);
    double *avg = tu_doubles(full.pt.total);
    for (size_t i = 0; i < full.pt.total; i++) avg[i] = 0.5 * ((double)g0[i] + g1[i]);
    tu_expect_close("rank-averaged MI gradient", g_full, avg, full.pt.total, 1e-4);
    rig_free(&full), rig_free(&r0), rig_free(&r1);
}
