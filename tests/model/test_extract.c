/* Extraction of a task's model (model/extract.h) in-process, on every architecture: the expert
 * choice (usage, threshold, the top-k minimum, ties), the extracted config, the parameters taken
 * by name, and the extracted model's forward against the full model's pass of that task:
 * bit-identical when no dropped expert is selected, and bit-identical to the full model with
 * the dropped experts' output weights zeroed when some are. Also the parameter and FLOP
 * accounting, usage counts in full-model indices, and the refusal to initialise or train. */
#include "../../model/extract.h"
#include "../../model/model.h"
#include "../../model/tasks.h"
#include "model_fd.h"

#define B 2

/* 3 tasks of three head kinds, 16x16 images in 8x8 patches (5 tokens), 12 attention experts
 * (top 2) and 16 MLP experts (top 3): 10 tokens select from more experts than they can fill. */
static const char YAML[] =
    "run:\n  seed: 3\n"
    "data:\n  dataset: taskonomy\n  tasks: [depth_euclidean, normal, class_object]\n"
    "  image_size: 16\n  resize: 16\n"
    "model:\n  patch: 8\n  dim: 16\n  depth: 2\n  heads: 2\n"
    "  attn_experts: 12\n  attn_topk: 2\n  mlp_experts: 16\n  mlp_topk: 3\n  expert_hidden: 8\n"
    "  drop_path: 0\n";

typedef struct {
    ms_config cfg;
    ms_model *m;
    ms_batch batch;
} net;

/* The CPU backend whose allocations start as 0xff bytes (NaN floats), so a forward that reads
 * activation memory nothing wrote in it (such as dispatch rows of dropped experts that were
 * never zeroed) shows in the predictions instead of reading the zero pages of a fresh
 * allocation. */
static void *poisoned_alloc(ms_backend *be, size_t bytes) {
    void *p = tu_cpu()->alloc(be, bytes);
    if (p) memset(p, 0xff, bytes);
    return p;
}

static ms_backend *backend(void) {
    static ms_backend be;
    if (!be.alloc) {
        be = *tu_cpu();
        be.alloc = poisoned_alloc;
    }
    return &be;
}

static net *full_net(const char *const *sets, int n_sets, uint64_t seed) {
    net *x = calloc(1, sizeof *x);
    fd_config(&x->cfg, YAML, n_sets, sets);
    x->m = ms_model_create(&x->cfg, backend(), &(ms_model_opts){.batch = B});
    ms_model_init(x->m, seed);
    int size = x->cfg.data.image_size;
    ms_batch_alloc(&x->batch, &x->cfg, B, size, size);
    tu_rng r = tu_seed(seed + 100);
    tu_fill_normal(&r, x->batch.images, (size_t)B * 3 * size * size, 1.0);
    return x;
}

static float *host_params(net *x) {
    const ms_param_table *pt = ms_model_params(x->m);
    float *h = tu_floats(pt->total);
    backend()->download(backend(), h, ms_model_param_data(x->m), pt->total * sizeof(float));
    return h;
}

/* Host copy of task t's prediction after a forward of x's batch in evaluation mode. */
static float *predict(net *x, int t, size_t *n) {
    ms_model_forward(x->m, &x->batch, 0, 0);
    const ms_task_def *d = ms_task_find(x->cfg.data.dataset, x->cfg.data.tasks.name[t]);
    int size = x->cfg.data.image_size;
    *n = (size_t)B * d->channels * (d->classification ? 1 : (size_t)size * size);
    float *p = tu_floats(*n);
    backend()->download_act(backend(), p, ms_model_prediction(x->m, t), *n);
    return p;
}

/* The kept experts of task t from the counts of the last forward of full. */
static void choose(net *full, int t, double threshold, ms_expert_sets *sets) {
    memset(sets, 0, sizeof *sets);
    int total = 0;
    for (int l = 0; l < ms_model_moe_layers(full->m); l++) {
        ms_moe_info mi = ms_model_moe_info(full->m, l);
        int64_t counts[64];
        double usage[64];
        ms_model_expert_counts(full->m, l, t, counts);
        ms_extract_usage(counts, mi.E, mi.K, usage);
        sets->count[l] = ms_extract_choose(usage, mi.E, mi.K, threshold, sets->expert + total);
        total += sets->count[l];
        sets->layers++;
    }
}

static net *extract(net *full, int t, const ms_expert_sets *sets) {
    net *x = calloc(1, sizeof *x);
    ms_config_errors errs;
    ms_config_errors_init(&errs);
    int n = ms_extract_config(&x->cfg, &full->cfg, t, sets, "extracted", &errs);
    if (n) {
        ms_config_errors_print(&errs, stderr);
        cr_assert_fail("the extracted config has %d errors", n);
    }
    ms_config_errors_free(&errs);
    x->m = ms_model_create(&x->cfg, backend(), &(ms_model_opts){.batch = B});
    const ms_param_table *pt = ms_model_params(x->m);
    float *h = tu_floats(pt->total);
    char err[512];
    cr_assert_eq(ms_extract_params(ms_model_params(full->m), host_params(full), t, x->m, h, err,
                                   sizeof err),
                 0, "%s", err);
    backend()->upload(backend(), ms_model_param_data(x->m), h, pt->total * sizeof(float));
    /* the same images; targets only of the one task */
    int size = x->cfg.data.image_size;
    ms_batch_alloc(&x->batch, &x->cfg, B, size, size);
    memcpy(x->batch.images, full->batch.images, (size_t)B * 3 * size * size * sizeof(float));
    return x;
}

static int dropped_selections(net *full, int t, const ms_expert_sets *sets) {
    int dropped = 0;
    for (int l = 0; l < sets->layers; l++) {
        int n;
        const int16_t *kept = ms_expert_sets_layer(sets, l, &n);
        int64_t counts[64];
        ms_model_expert_counts(full->m, l, t, counts);
        ms_moe_info mi = ms_model_moe_info(full->m, l);
        for (int e = 0, k = 0; e < mi.E; e++) {
            if (k < n && kept[k] == e) {
                k++;
                continue;
            }
            dropped += (int)counts[e];
        }
    }
    return dropped;
}

/* The full model with every dropped expert's output projection (and bias) zeroed: such an
 * expert's output is exactly 0, which is what an extracted model's dropped pairs add. */
static net *zeroed_full(const char *const *sets, int n_sets, uint64_t seed,
                        const ms_expert_sets *kept) {
    net *x = full_net(sets, n_sets, seed);
    const ms_param_table *pt = ms_model_params(x->m);
    float *h = host_params(x);
    for (int l = 0; l < ms_model_moe_layers(x->m); l++) {
        ms_moe_info mi = ms_model_moe_info(x->m, l);
        int n;
        const int16_t *k = ms_expert_sets_layer(kept, l, &n);
        const char *suffix[2] = {"output_experts.w", "output_experts.b"};
        for (int s = 0; s < 2; s++) {
            char name[96];
            snprintf(name, sizeof name, "blocks.%d.%s%s", mi.block, mi.attn ? "attn.q_proj." : "mlp.",
                     suffix[s]);
            int id = ms_params_find(pt, name);
            if (id < 0) continue; /* attention experts have no output bias */
            size_t row = pt->t[id].numel / (size_t)mi.E;
            for (int e = 0, c = 0; e < mi.E; e++) {
                if (c < n && k[c] == e) {
                    c++;
                    continue;
                }
                memset(h + pt->t[id].offset + (size_t)e * row, 0, row * sizeof(float));
            }
        }
    }
    backend()->upload(backend(), ms_model_param_data(x->m), h, pt->total * sizeof(float));
    return x;
}

/* ---- the choice ---------------------------------------------------------------------------- */

Test(extract_model, usage_is_the_share_of_tokens) {
    int64_t counts[4] = {3, 1, 0, 2}; /* 3 tokens, K = 2 */
    double u[4];
    ms_extract_usage(counts, 4, 2, u);
    cr_assert_float_eq(u[0], 100.0, 1e-12);
    cr_assert_float_eq(u[1], 100.0 / 3, 1e-12);
    cr_assert_float_eq(u[2], 0.0, 1e-12);
    cr_assert_float_eq(u[3], 200.0 / 3, 1e-12);
    int64_t none[3] = {0, 0, 0};
    ms_extract_usage(none, 3, 1, u);
    cr_assert(u[0] == 0 && u[1] == 0 && u[2] == 0);
}

static void expect_kept(const double *usage, int E, int K, double thr, const int *want, int n) {
    int16_t kept[16];
    int got = ms_extract_choose(usage, E, K, thr, kept);
    cr_assert_eq(got, n, "threshold %g K %d: %d kept, want %d", thr, K, got, n);
    for (int i = 0; i < n; i++)
        cr_assert_eq(kept[i], want[i], "threshold %g K %d: kept[%d] = %d, want %d", thr, K, i,
                     kept[i], want[i]);
}

Test(extract_model, threshold_then_the_top_k) {
    double u[6] = {40, 0, 25, 25, 3, 3.0000001};
    expect_kept(u, 6, 2, 3, (int[]){0, 2, 3, 5}, 4);  /* strictly above 3 */
    expect_kept(u, 6, 2, 0, (int[]){0, 2, 3, 4, 5}, 5); /* unused expert 1 dropped */
    expect_kept(u, 6, 2, 30, (int[]){0, 2}, 2);      /* one passes: the top 2, tie to index 2 */
    expect_kept(u, 6, 3, 30, (int[]){0, 2, 3}, 3);
    expect_kept(u, 6, 2, 100, (int[]){0, 2}, 2);
    double flat[4] = {0, 0, 0, 0};
    expect_kept(flat, 4, 2, 3, (int[]){0, 1}, 2);    /* no usage at all: the lowest indices */
    expect_kept(u, 6, 6, 0, (int[]){0, 1, 2, 3, 4, 5}, 6);
}

/* ---- the extracted model against the full one ------------------------------------------------ */

/* Task t of the full model of `sets`, extracted at threshold 0 (only experts nobody selected
 * are dropped) and at threshold 100 (only the top k stay). */
static void check_arch(const char *const *sets, int n_sets, int t, uint64_t seed) {
    net *full = full_net(sets, n_sets, seed);
    size_t n_full, n_ext;
    float *want = predict(full, t, &n_full);
    int moe = ms_model_moe_layers(full->m) > 0;

    static ms_expert_sets kept;
    choose(full, t, 0.0, &kept);
    net *ext = extract(full, t, &kept);
    cr_assert_eq(ext->cfg.data.tasks.n, 1);
    cr_assert_str_eq(ext->cfg.data.tasks.name[0], full->cfg.data.tasks.name[t]);
    float *got = predict(ext, 0, &n_ext);
    cr_assert_eq(n_ext, n_full);
    tu_expect_equal("extracted at threshold 0", got, want, n_full);

    /* accounting: fewer parameters when experts go, the same per token, the same FLOPs */
    ms_param_counts pf, pe;
    ms_model_param_counts(full->m, &pf);
    ms_model_param_counts(ext->m, &pe);
    cr_assert_lt(pe.total, pf.total);
    cr_assert_float_eq(pe.active[0], pf.active[t], 1e-9 * pf.active[t]);
    cr_assert_float_eq(ms_model_flops(ext->m, 0), ms_model_flops(full->m, t), 1.0);
    if (!moe) return;

    int dropped_any = 0;
    for (int l = 0; l < kept.layers; l++) {
        ms_moe_info mi = ms_model_moe_info(ext->m, l);
        dropped_any |= mi.E_keep < mi.E;
        cr_assert_eq(mi.E, ms_model_moe_info(full->m, l).E);
        /* usage counts of the extracted model are in full-model indices */
        int64_t a[64], b[64];
        ms_model_expert_counts(full->m, l, t, a);
        ms_model_expert_counts(ext->m, l, 0, b);
        for (int e = 0; e < mi.E; e++)
            cr_assert_eq(a[e], b[e], "layer %d expert %d: %lld selections, the full model %lld",
                         l, e, (long long)b[e], (long long)a[e]);
    }
    cr_assert(dropped_any, "threshold 0 dropped no expert: the case is not exercised");

    /* Only the top k: dropped experts are selected, and their pairs add exactly 0. */
    choose(full, t, 100.0, &kept);
    for (int l = 0; l < kept.layers; l++)
        cr_assert_eq(kept.count[l], ms_model_moe_info(full->m, l).K);
    cr_assert_gt(dropped_selections(full, t, &kept), 0);
    net *top = extract(full, t, &kept);
    got = predict(top, 0, &n_ext);
    net *zeroed = zeroed_full(sets, n_sets, seed, &kept);
    float *ref = predict(zeroed, t, &n_full);
    tu_expect_equal("extracted at threshold 100 vs the zeroed full model", got, ref, n_full);
    cr_assert(memcmp(got, want, n_full * sizeof(float)) != 0,
              "dropping selected experts changed nothing: the case is not exercised");
}

Test(extract_model, modsquad) { check_arch(NULL, 0, 1, 11); }

Test(extract_model, modsquad_classification_task) { check_arch(NULL, 0, 2, 12); }

Test(extract_model, task_moe_shared_router) {
    const char *s[] = {"model.arch=task_moe", "model.router=shared_task_conditioned"};
    check_arch(s, 2, 1, 13);
}

Test(extract_model, m3vit_noisy_gating) {
    const char *s[] = {"model.arch=m3vit", "model.noisy_gating=true"};
    check_arch(s, 2, 0, 14);
}

Test(extract_model, pascal_conv_head) {
    /* the conv head's BatchNorm running statistics live under task_heads.{t} */
    const char *s[] = {"data.dataset=pascal_context", "data.tasks=[semseg, normals, sal]",
                       "model.patch=4", "model.head=conv", "model.head_channels=4"};
    check_arch(s, 5, 2, 15);
}

Test(extract_model, dense_archs_keep_the_task_weights) {
    const char *hs[] = {"model.arch=hard_sharing"};
    check_arch(hs, 1, 2, 16);
    const char *sb[] = {"model.arch=separate_bottom", "model.separate_layers=1"};
    check_arch(sb, 2, 1, 17);
}

/* ---- config and refusals --------------------------------------------------------------------- */

Test(extract_model, config_round_trips_and_changes_the_fingerprint) {
    net *full = full_net(NULL, 0, 21);
    size_t n;
    predict(full, 0, &n);
    static ms_expert_sets kept;
    choose(full, 0, 30.0, &kept);
    ms_config *ext = calloc(1, sizeof *ext), *back = calloc(1, sizeof *back),
              *plain = calloc(1, sizeof *plain);
    ms_config_errors errs;
    ms_config_errors_init(&errs);
    cr_assert_eq(ms_extract_config(ext, &full->cfg, 0, &kept, "x", &errs), 0);
    char *yaml = ms_config_to_yaml(ext);
    cr_assert(strstr(yaml, "\n  kept_experts: [["), "%s", yaml);
    cr_assert_eq(ms_config_load_text(back, "x", yaml, strlen(yaml), 0, NULL, &errs), 0);
    const char *diff = NULL;
    cr_assert(ms_config_equal(ext, back, &diff), "differs in %s", diff);
    static ms_expert_sets none;
    cr_assert_eq(ms_extract_config(plain, &full->cfg, 0, &none, "x", &errs), 0);
    char a[MS_FINGERPRINT_LEN + 1], b[MS_FINGERPRINT_LEN + 1];
    ms_config_fingerprint(ext, a);
    ms_config_fingerprint(plain, b);
    cr_assert_str_neq(a, b);
    free(yaml);
    ms_config_errors_free(&errs);
}

Test(extract_model, a_missing_tensor_is_named) {
    net *full = full_net((const char *[]){"model.arch=hard_sharing"}, 1, 22);
    net *moe = full_net(NULL, 0, 22);
    size_t n;
    predict(moe, 0, &n);
    static ms_expert_sets kept;
    choose(moe, 0, 0.0, &kept);
    ms_config *cfg = calloc(1, sizeof *cfg);
    ms_config_errors errs;
    ms_config_errors_init(&errs);
    cr_assert_eq(ms_extract_config(cfg, &moe->cfg, 0, &kept, "x", &errs), 0);
    ms_model *ext = ms_model_create(cfg, backend(), &(ms_model_opts){.batch = 1, .plan_only = 1});
    float *h = tu_floats(ms_model_params(ext)->total);
    char err[512];
    cr_assert_eq(ms_extract_params(ms_model_params(full->m), host_params(full), 0, ext, h, err,
                                   sizeof err),
                 -1);
    cr_assert(strstr(err, "the full model has no tensor blocks.0.attn."), "%s", err);
}

static net *an_extracted_model(void) {
    net *full = full_net(NULL, 0, 23);
    size_t n;
    predict(full, 0, &n);
    static ms_expert_sets kept;
    choose(full, 0, 0.0, &kept);
    return extract(full, 0, &kept);
}

Test(extract_model, refuses_initialisation, .exit_code = 1) {
    net *x = an_extracted_model();
    ms_model_init(x->m, 1);
}

Test(extract_model, refuses_a_training_forward, .exit_code = 1) {
    net *x = an_extracted_model();
    ms_model_forward(x->m, &x->batch, 1, 0);
}
