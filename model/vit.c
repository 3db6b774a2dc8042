/* The backbone: parameters, official initialisation, arena plan and the T task passes of a step
 * (model/vit.h). Blocks are model/blocks.c, MoE sub-layers model/moe_layer.c.
 *
 * Forward of pass p (task p; hard_sharing has one pass for all tasks):
 *     x0 = tokens_assemble(patchify(img) W_pe^T + b_pe, cls, pos_embed)      shared by passes
 *     for block i: x = x + task_embedding[p]  (modsquad, task_moe); x = block_i(x, p)
 * as models_mt.py forward_features: the task embedding is added before EVERY block. */
#include "vit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/util.h"
#include "rng.h"
#include "vit_internal.h"

#define ACT(v, n) ((size_t)(n) * (v)->be->act_size)

int vit_add(ms_vit *v, ms_param_table *pt, const char *name, int ndim, const int64_t *shape,
            init_kind kind, double bound) {
    /* Official param groups (util/lr_decay.py param_groups_lrd): no weight decay for 1-D
     * tensors and for timm's no_weight_decay() = {pos_embed, cls_token}. */
    int decay = ndim > 1 && strcmp(name, "pos_embed") != 0 && strcmp(name, "cls_token") != 0;
    int id = ms_params_add(pt, name, ndim, shape, decay);
    if (v->n_init == v->cap_init) {
        v->cap_init = v->cap_init ? 2 * v->cap_init : 128;
        init_rule *r = realloc(v->init, (size_t)v->cap_init * sizeof *r);
        if (!r) ms_fatal("out of memory growing the initialisation table");
        v->init = r;
    }
    v->init[v->n_init++] = (init_rule){id, kind, bound};
    return id;
}

const char *vit_pass_name(const ms_vit *v, int p) {
    return v->P == 1 && v->T > 1 ? "shared" : v->cfg->data.tasks.name[p];
}

static int popcount64(uint64_t x) { return __builtin_popcountll(x); }

/* ---- create ------------------------------------------------------------------------------------ */

ms_vit *ms_vit_create(const ms_config *cfg, ms_backend *be, int B, int rank, ms_param_table *pt) {
    const ms_model_config *mc = &cfg->model;
    ms_arch arch = mc->arch;
    MS_ASSERT(B >= 1 && cfg->data.tasks.n >= 1 && cfg->data.tasks.n <= MS_MAX_TASKS);
    MS_ASSERT(cfg->data.image_size % mc->patch == 0 && mc->head_dim > 0);
    ms_vit *v = ms_calloc(1, sizeof *v);
    v->cfg = cfg, v->be = be, v->pt = pt, v->rank = rank, v->world = 1;
    v->rng_seed = (uint64_t)cfg->run.seed;
    v->B = B, v->D = mc->dim, v->T = cfg->data.tasks.n;
    v->Hi = v->Wi = cfg->data.image_size, v->patch = mc->patch;
    v->Np = (v->Hi / v->patch) * (v->Wi / v->patch);
    v->N = 1 + v->Np, v->M = B * v->N, v->depth = mc->depth;
    v->heads = mc->heads, v->head_dim = mc->head_dim;
    v->mlp_hidden = (int)nearbyint(mc->mlp_ratio * mc->dim);
    v->P = arch == MS_ARCH_HARD_SHARING ? 1 : v->T;
    int moe_arch = arch == MS_ARCH_MODSQUAD || arch == MS_ARCH_TASK_MOE || arch == MS_ARCH_M3VIT;
    v->task_embed = arch == MS_ARCH_MODSQUAD || arch == MS_ARCH_TASK_MOE;
    /* An extracted model (model.kept_experts) is evaluated, never trained: no routing losses. */
    v->extracted = moe_arch && mc->kept_experts.layers > 0;
    /* I(T;E) of a single task is 0 whatever the routing: no loss to add. */
    v->use_mi = arch == MS_ARCH_MODSQUAD && mc->w_mi > 0 && v->T >= 2 && !v->extracted;
    v->use_balance = arch == MS_ARCH_M3VIT && mc->w_balance > 0 && !v->extracted;
    v->noisy = moe_arch && mc->noisy_gating;
    v->shared_router = arch == MS_ARCH_TASK_MOE && mc->router == MS_ROUTER_SHARED_TASK_CONDITIONED;
    v->router_eps = (float)mc->router_eps;

    /* Which sub-layers are MoE: the config resolved the masks per arch (none for dense archs,
     * no attention MoE for m3vit). */
    uint64_t attn_mask = moe_arch ? mc->moe_attn_blocks.mask : 0;
    uint64_t mlp_mask = moe_arch ? mc->moe_mlp_blocks.mask : 0;
    if (arch == MS_ARCH_M3VIT) attn_mask = 0;
    v->n_moe = popcount64(attn_mask) + popcount64(mlp_mask);
    MS_ASSERT(!v->extracted || mc->kept_experts.layers == v->n_moe); /* config_check.c */
    v->moe = v->n_moe ? ms_calloc((size_t)v->n_moe, sizeof *v->moe) : NULL;
    for (int i = 0, l = 0; i < v->depth; i++) {
        if (attn_mask >> i & 1) v->blk[i].attn_moe = &v->moe[l], v->moe[l].index = l, l++;
        if (mlp_mask >> i & 1) v->blk[i].mlp_moe = &v->moe[l], v->moe[l].index = l, l++;
        /* timm: dpr = linspace(0, drop_path, depth) */
        v->blk[i].dpr = v->depth > 1 ? mc->drop_path * i / (v->depth - 1) : 0.0;
    }

    /* Parameters: cls_token, pos_embed, patch_embed, blocks, task_embedding; the heads follow
     * (model/heads.c). Checkpoints and initialisation are keyed by name, so the order only sets
     * the layout of the buffer. */
    int D = v->D, pp = 3 * v->patch * v->patch;
    int64_t s_cls[3] = {1, 1, D}, s_pos[3] = {1, v->N, D};
    int64_t s_pe[4] = {D, 3, v->patch, v->patch}, s_peb[1] = {D}, s_temb[3] = {1, v->T, D};
    v->cls = vit_add(v, pt, "cls_token", 3, s_cls, INIT_TRUNC02, 0);
    v->pos = vit_add(v, pt, "pos_embed", 3, s_pos, INIT_TRUNC02, 0);
    /* PyTorch's Conv2d default (kaiming_uniform a=sqrt 5): U(+-1/sqrt(fan_in)) for both. */
    v->pe_w = vit_add(v, pt, "patch_embed.proj.weight", 4, s_pe, INIT_UNIFORM, 1.0 / sqrt(pp));
    v->pe_b = vit_add(v, pt, "patch_embed.proj.bias", 1, s_peb, INIT_UNIFORM, 1.0 / sqrt(pp));
    MS_ASSERT(v->cls == 0 && v->pe_b == 3); /* the backbone opens the table (gradient ranges) */
    for (int i = 0; i < v->depth; i++) {
        v->blk[i].first_param = pt->n;
        block_register(v, pt, i);
    }
    v->temb = v->task_embed ? vit_add(v, pt, "task_embedding", 3, s_temb, INIT_NORMAL, 0) : -1;
    v->n_params = pt->n;

    /* Auxiliary loss slots and the host copies of the expert offsets. */
    for (int l = 0; l < v->n_moe; l++) {
        moe_layer *m = &v->moe[l];
        if (v->use_mi) m->aux_mi = v->n_aux++;
        for (int p = 0; p < v->P; p++) {
            if (v->use_balance) m->aux_balance[p] = v->n_aux++;
            m->pass[p].offsets_host = ms_calloc((size_t)m->E + 2, sizeof(int32_t));
            if (m->extracted)
                m->pass[p].route_offsets_host = ms_calloc((size_t)m->E + 1, sizeof(int32_t));
        }
    }
    int Emax = 1;
    for (int l = 0; l < v->n_moe; l++) Emax = v->moe[l].E > Emax ? v->moe[l].E : Emax;
    v->noise_host = v->noisy ? ms_malloc((size_t)v->M * Emax * sizeof(float)) : NULL;
    v->dp_host = ms_malloc((size_t)v->P * v->depth * 2 * B * sizeof(float));
    return v;
}

void ms_vit_destroy(ms_vit *v) {
    if (!v) return;
    for (int l = 0; l < v->n_moe; l++)
        for (int p = 0; p < v->P; p++) {
            free(v->moe[l].pass[p].offsets_host);
            free(v->moe[l].pass[p].route_offsets_host);
        }
    free(v->moe);
    free(v->init);
    free(v->noise_host);
    free(v->dp_host);
    free(v);
}

/* ---- arena ------------------------------------------------------------------------------------ */

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

void ms_vit_alloc(ms_vit *v, ms_arena *a) {
    int M = v->M, D = v->D, B = v->B, N = v->N, P = v->P;
    size_t inner = (size_t)v->heads * v->head_dim;
    v->img = ms_arena_alloc(a, ACT(v, (size_t)B * 3 * v->Hi * v->Wi));
    v->patches = ms_arena_alloc(a, ACT(v, (size_t)B * v->Np * 3 * v->patch * v->patch));
    v->x0 = ms_arena_alloc(a, ACT(v, (size_t)M * D));
    v->dx0 = ms_arena_alloc(a, ACT(v, (size_t)M * D));
    for (int p = 0; p < P; p++) {
        /* res[p][0] is x0 itself when nothing is added before block 0 */
        v->res[p][0] = v->task_embed ? ms_arena_alloc(a, ACT(v, (size_t)M * D)) : v->x0;
        for (int i = 1; i <= v->depth; i++) v->res[p][i] = ms_arena_alloc(a, ACT(v, (size_t)M * D));
    }
    for (int t = 0; t < v->T; t++) v->grad_in[t] = ms_arena_alloc(a, ACT(v, (size_t)M * D));
    v->dp_all = ms_arena_alloc(a, (size_t)P * v->depth * 2 * B * sizeof(float));
    for (int i = 0; i < v->depth; i++) {
        for (int p = 0; p < P; p++)
            for (int r = 0; r < 2; r++)
                v->blk[i].pass[p].dp_scale[r] = v->dp_all + (((size_t)p * v->depth + i) * 2 + r) * B;
        block_alloc(v, i, a);
    }
    v->aux = ms_arena_alloc(a, (size_t)(v->n_aux ? v->n_aux : 1) * sizeof(float));
    if (v->use_mi) {
        v->n_stats = 0;
        for (int l = 0; l < v->n_moe; l++) v->n_stats += (size_t)(v->T + 1) * v->moe[l].E;
        v->mi_stats = ms_arena_alloc(a, v->n_stats * sizeof(float));
        for (int l = 0, o = 0; l < v->n_moe; l++) {
            v->moe[l].A = v->mi_stats + o;               /* [T, E] */
            v->moe[l].freq = v->moe[l].A + (size_t)v->T * v->moe[l].E; /* [E] */
            o += (v->T + 1) * v->moe[l].E;
        }
    }

    /* Scratch, sized for the largest user. */
    size_t Rmax = 0, Rmlp_h = 0, Rattn_hd = 0, att = (size_t)B * v->heads * N * N;
    size_t kv = 0, Emax = 1, Kmax = 1;
    for (int l = 0; l < v->n_moe; l++) {
        const moe_layer *m = &v->moe[l];
        size_t R = (size_t)M * m->K;
        Rmax = max_sz(Rmax, R);
        Emax = max_sz(Emax, (size_t)m->E);
        Kmax = max_sz(Kmax, (size_t)m->K);
        if (m->kind == MOE_MLP) Rmlp_h = max_sz(Rmlp_h, R * m->hidden);
        if (m->kind == MOE_ATTN) {
            Rattn_hd = max_sz(Rattn_hd, R * m->hidden);
            att = max_sz(att, (size_t)B * N * m->K * N);
            kv = max_sz(kv, (size_t)M * 2 * m->hidden);
        }
    }
    vit_scratch *s = &v->s;
    for (int k = 0; k < 4; k++) s->md[k] = ms_arena_alloc(a, ACT(v, (size_t)M * D));
    for (int k = 0; k < 3; k++) s->rd[k] = Rmax ? ms_arena_alloc(a, ACT(v, Rmax * D)) : NULL;
    size_t hid = max_sz((size_t)M * v->mlp_hidden, Rmlp_h);
    for (int k = 0; k < 2; k++) s->hid[k] = ms_arena_alloc(a, ACT(v, hid));
    for (int k = 0; k < 3; k++) s->rh[k] = Rattn_hd ? ms_arena_alloc(a, ACT(v, Rattn_hd)) : NULL;
    s->dqkv = ms_arena_alloc(a, ACT(v, (size_t)M * 3 * inner));
    s->dob = ms_arena_alloc(a, ACT(v, (size_t)M * inner));
    s->datt = ms_arena_alloc(a, ACT(v, att));
    s->dkv = kv ? ms_arena_alloc(a, ACT(v, kv)) : NULL;
    s->logits = ms_arena_alloc(a, ACT(v, (size_t)M * Emax));
    s->dlog = ms_arena_alloc(a, ACT(v, (size_t)M * Emax));
    s->dlog2 = ms_arena_alloc(a, ACT(v, (size_t)M * 2 * Emax));
    s->dgate = ms_arena_alloc(a, (size_t)M * Kmax * sizeof(float));
    s->dbias = ms_arena_alloc(a, 2 * Emax * sizeof(float));
}

void ms_vit_bind(ms_vit *v, float *params, float *grads) {
    v->params = params, v->grads = grads;
    /* the maps of an extracted model live in the arena, placed by now; upload them once */
    for (int l = 0; l < v->n_moe; l++) moe_upload_map(v, &v->moe[l]);
}

void ms_vit_set_stats_sum(ms_vit *v, ms_sum_fn fn, void *ctx, int world) {
    MS_ASSERT(world >= 1 && (fn || world == 1));
    v->stats_sum = fn, v->stats_ctx = ctx, v->world = world;
}

void ms_vit_set_grads_ready(ms_vit *v, ms_range_fn fn, void *ctx) {
    v->grads_ready = fn, v->grads_ctx = ctx;
}

/* ---- initialisation ----------------------------------------------------------------------------- */

void ms_vit_init(const ms_vit *v, float *host, uint64_t seed) {
    for (int r = 0; r < v->n_init; r++) {
        const init_rule *rule = &v->init[r];
        const ms_tensor_info *ti = &v->pt->t[rule->id];
        float *x = host + ti->offset;
        uint64_t stream = ms_rng_stream(ti->name);
        for (size_t i = 0; i < ti->numel; i++) {
            switch (rule->kind) {
            case INIT_TRUNC02: x[i] = (float)ms_rng_trunc_normal(seed, stream, i, 0.02, -2, 2); break;
            case INIT_ZERO: x[i] = 0.0f; break;
            case INIT_ONE: x[i] = 1.0f; break;
            case INIT_UNIFORM:
                x[i] = (float)(rule->bound * (2.0 * ms_rng_uniform(seed, stream, i) - 1.0));
                break;
            case INIT_NORMAL: x[i] = (float)ms_rng_normal(seed, stream, i); break;
            }
        }
    }
}

/* ---- forward ----------------------------------------------------------------------------------- */

void ms_vit_set_images(ms_vit *v, const float *images) {
    v->be->upload_act(v->be, v->img, images, (size_t)v->B * 3 * v->Hi * v->Wi);
}

/* Drop-path scales of every (pass, block, residual, sample): 0 with probability rate, else
 * 1/(1 - rate), as timm's DropPath. Each residual has its own stream keyed by the pass's task
 * name, the block, the residual and the step; the counter is the sample's index over all ranks,
 * so a task's masks do not depend on which other tasks run. */
static void draw_drop_path(ms_vit *v) {
    int B = v->B;
    for (int p = 0; p < v->P; p++)
        for (int i = 0; i < v->depth; i++)
            for (int r = 0; r < 2; r++) {
                float *s = v->dp_host + (((size_t)p * v->depth + i) * 2 + r) * B;
                double rate = v->blk[i].dpr, keep = 1.0 - rate;
                char key[160];
                snprintf(key, sizeof key, "drop_path/%s/block%d/%d/step%lld", vit_pass_name(v, p),
                         i, r, (long long)v->step);
                uint64_t stream = ms_rng_stream(key);
                for (int b = 0; b < B; b++) {
                    double u = ms_rng_uniform(v->rng_seed, stream, (uint64_t)v->rank * B + b);
                    s[b] = u < keep ? (float)(1.0 / keep) : 0.0f;
                }
            }
    v->be->upload(v->be, v->dp_all, v->dp_host, (size_t)v->P * v->depth * 2 * B * sizeof(float));
}

void ms_vit_forward(ms_vit *v, int training, int64_t step) {
    ms_backend *be = v->be;
    int M = v->M, D = v->D, B = v->B;
    v->training = training, v->step = step;
    if (training && v->cfg->model.drop_path > 0) draw_drop_path(v);
    if (v->use_mi) be->zero(be, v->mi_stats, v->n_stats * sizeof(float));

    /* embedding: patch grid [B, Np, 3 p p] (c, ky, kx) against the Conv2d weight (D, 3, p, p) */
    ms_act *pe = v->s.md[0]; /* [B Np, D] */
    be->patchify(be, v->patches, v->img, B, 3, v->Hi, v->Wi, v->patch, MS_PATCH_CHW);
    be->linear(be, pe, v->patches, vp(v, v->pe_w), vp(v, v->pe_b), B * v->Np,
               3 * v->patch * v->patch, D, MS_W_OUT_IN);
    be->tokens_assemble(be, v->x0, pe, vp(v, v->cls), vp(v, v->pos), B, v->N, D);

    for (int p = 0; p < v->P; p++) {
        for (int i = 0; i < v->depth; i++) {
            ms_act *x = v->res[p][i];
            if (v->task_embed)
                be->add_row(be, x, i == 0 ? v->x0 : x, vp(v, v->temb) + (size_t)p * D, M, D);
            block_forward(v, i, p, x, v->res[p][i + 1]);
        }
    }
    if (v->use_mi && v->stats_sum) v->stats_sum(v->stats_ctx, v->mi_stats, v->n_stats);
    for (int l = 0; l < v->n_moe; l++) moe_finish(v, &v->moe[l]);
    v->forwarded = 1;
}

const ms_act *ms_vit_tokens(const ms_vit *v, int t) {
    MS_ASSERT(t >= 0 && t < v->T);
    return v->res[v->P == 1 ? 0 : t][v->depth];
}

ms_act *ms_vit_grad_in(ms_vit *v, int t) {
    MS_ASSERT(t >= 0 && t < v->T);
    return v->grad_in[t];
}

/* ---- backward ---------------------------------------------------------------------------------- */

/* Where tensor `id` starts in the flat buffer; past the last tensor, where the table ends
 * (the heads' tensors follow the backbone's, so the backbone's last range ends at theirs). */
static size_t param_start(const ms_vit *v, int id) {
    return id < v->pt->n ? v->pt->t[id].offset : v->pt->total;
}

/* Reports the gradients of tensors [first, end) as final: the range runs to the start of the
 * next tensor, alignment padding included, so that the reports tile the buffer. */
static void report_params(const ms_vit *v, int first, int end) {
    if (!v->grads_ready) return;
    size_t a = param_start(v, first), b = param_start(v, end);
    v->grads_ready(v->grads_ctx, a, b - a);
}

void ms_vit_backward(ms_vit *v) {
    ms_backend *be = v->be;
    int M = v->M, D = v->D, B = v->B;
    size_t MD = (size_t)M * D;
    MS_ASSERT(v->forwarded && v->training);
    /* hard_sharing: every head read the one trunk output */
    if (v->P == 1)
        for (int t = 1; t < v->T; t++) be->add(be, v->grad_in[0], v->grad_in[0], v->grad_in[t], MD);
    /* grad_in[p] is pass p's running dL/d residual stream, in place. Block by block, so that a
     * block's gradients are final (and can be summed over the ranks) while the blocks below
     * still run; within a block the passes go in order, which gives every gradient the same
     * sum, in the same order, as running each pass through all blocks. */
    for (int i = v->depth - 1; i >= 0; i--) {
        for (int p = 0; p < v->P; p++) {
            block_backward(v, i, p, v->res[p][i], v->grad_in[p]);
            if (v->task_embed)
                be->sum_rows(be, vg(v, v->temb) + (size_t)p * D, v->grad_in[p], M, D);
        }
        /* the task embedding, when there is one, follows the last block */
        int end = i + 1 < v->depth ? v->blk[i + 1].first_param
                  : v->temb >= 0   ? v->temb
                                   : v->n_params;
        report_params(v, v->blk[i].first_param, end);
    }
    if (v->temb >= 0) report_params(v, v->temb, v->temb + 1);
    be->copy(be, v->dx0, v->grad_in[0], MD * be->act_size);
    for (int p = 1; p < v->P; p++) be->add(be, v->dx0, v->dx0, v->grad_in[p], MD);
    ms_act *dpe = v->s.md[0]; /* [B Np, D] */
    be->tokens_assemble_bwd(be, dpe, vg(v, v->cls), vg(v, v->pos), v->dx0, B, v->N, D);
    be->linear_bwd(be, NULL, vg(v, v->pe_w), vg(v, v->pe_b), dpe, v->patches, vp(v, v->pe_w),
                   B * v->Np, 3 * v->patch * v->patch, D, MS_W_OUT_IN, 0);
    report_params(v, v->cls, v->pe_b + 1); /* the first four tensors */
}

/* ---- accessors --------------------------------------------------------------------------------- */

void ms_vit_aux_losses(const ms_vit *v, double *mi, double *balance) {
    *mi = *balance = 0;
    if (!v->n_aux) return;
    float host[v->n_aux]; /* a few floats per MoE layer */
    v->be->download(v->be, host, v->aux, (size_t)v->n_aux * sizeof(float));
    for (int l = 0; l < v->n_moe; l++) {
        const moe_layer *m = &v->moe[l];
        if (m->aux_mi >= 0) *mi += host[m->aux_mi] / v->world; /* see moe_finish */
        for (int p = 0; p < v->P; p++)
            if (m->aux_balance[p] >= 0) *balance += host[m->aux_balance[p]];
    }
}

int ms_vit_moe_layers(const ms_vit *v) { return v->n_moe; }

ms_moe_info ms_vit_moe_info(const ms_vit *v, int layer) {
    MS_ASSERT(layer >= 0 && layer < v->n_moe);
    const moe_layer *m = &v->moe[layer];
    return (ms_moe_info){.block = m->block,
                         .attn = m->kind == MOE_ATTN,
                         .E = m->E,
                         .K = m->K,
                         .E_keep = m->E_keep,
                         .kept = m->kept,
                         .pair_flops = 2 * moe_macs_per_pair(v, m)};
}

void ms_vit_expert_counts(const ms_vit *v, int layer, int t, int64_t *counts) {
    MS_ASSERT(layer >= 0 && layer < v->n_moe && t >= 0 && t < v->T && v->forwarded);
    const moe_layer *m = &v->moe[layer];
    /* by full-model expert, dropped experts of an extracted model included */
    const int32_t *off = m->extracted ? m->pass[t].route_offsets_host : m->pass[t].offsets_host;
    for (int e = 0; e < m->E; e++) counts[e] = off[e + 1] - off[e];
}

const int32_t *ms_vit_route_idx(const ms_vit *v, int layer, int t) {
    MS_ASSERT(layer >= 0 && layer < v->n_moe && t >= 0 && t < v->T);
    return v->moe[layer].pass[t].idx;
}

const float *ms_vit_route_probs(const ms_vit *v, int layer, int t) {
    MS_ASSERT(layer >= 0 && layer < v->n_moe && t >= 0 && t < v->T);
    return v->moe[layer].pass[t].probs;
}

int ms_vit_passes(const ms_vit *v) { return v->P; }
int ms_vit_tokens_per_image(const ms_vit *v) { return v->N; }

double ms_vit_flops(const ms_vit *v, int t) {
    MS_ASSERT(t >= 0 && t < v->T);
    double macs = (double)v->Np * 3 * v->patch * v->patch * v->D; /* patch embedding */
    for (int i = 0; i < v->depth; i++) macs += v->N * block_macs_per_token(v, i);
    return 2 * macs;
}

static double numel(const ms_vit *v, int id) { return id >= 0 ? (double)v->pt->t[id].numel : 0; }

double ms_vit_active_params(const ms_vit *v, int t) {
    MS_ASSERT(t >= 0 && t < v->T);
    double n = numel(v, v->cls) + numel(v, v->pos) + numel(v, v->pe_w) + numel(v, v->pe_b);
    if (v->task_embed) n += v->D; /* row t of task_embedding */
    for (int i = 0; i < v->depth; i++) {
        const vit_block *b = &v->blk[i];
        const block_params *bp = &b->p[b->n_copies > 1 ? t : 0];
        int ids[] = {bp->n1w, bp->n1b, bp->n2w, bp->n2b, bp->qkv_w, bp->qkv_b,
                     bp->proj_w, bp->proj_b, bp->fc1_w, bp->fc1_b, bp->fc2_w, bp->fc2_b};
        for (size_t k = 0; k < sizeof ids / sizeof ids[0]; k++) n += numel(v, ids[k]);
        if (b->attn_moe) n += moe_active_params(v, b->attn_moe);
        if (b->mlp_moe) n += moe_active_params(v, b->mlp_moe);
    }
    return n;
}
