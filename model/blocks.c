/* Transformer blocks (timm's pre-norm Block as in the official MoEnhanceTaskBlock):
 *     x = x + drop_path(attn(norm1(x)))      dense multi-head attention, or MoE attention
 *     x = x + drop_path(mlp(norm2(x)))       dense MLP (fc1, GELU, fc2), or MoE MLP
 * Official names per block i: norm1.*, norm2.*, attn.qkv.* / attn.proj.* (dense attention),
 * mlp.fc1.* / mlp.fc2.* (dense MLP); the MoE sub-layers are model/moe_layer.c. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../kernels/util.h"
#include "vit_internal.h"

#define ACT(v, n) ((size_t)(n) * (v)->be->act_size)

/* ---- parameters ----------------------------------------------------------------------------- */

static int add1(ms_vit *v, ms_param_table *pt, const char *prefix, const char *name, int64_t a,
                init_kind k) {
    char full[MS_TENSOR_NAME_MAX];
    int n = snprintf(full, sizeof full, "%s%s", prefix, name);
    MS_ASSERT(n > 0 && n < (int)sizeof full);
    return vit_add(v, pt, full, 1, &a, k, 0);
}

static int add2(ms_vit *v, ms_param_table *pt, const char *prefix, const char *name, int64_t a,
                int64_t b, init_kind k) {
    char full[MS_TENSOR_NAME_MAX];
    int64_t s[2] = {a, b};
    int n = snprintf(full, sizeof full, "%s%s", prefix, name);
    MS_ASSERT(n > 0 && n < (int)sizeof full);
    return vit_add(v, pt, full, 2, s, k, 0);
}

/* Registration order within a block follows the official module order (norm1, attn, norm2,
 * mlp) so a checkpoint lists tensors as PyTorch's state_dict does. */
void block_register(ms_vit *v, ms_param_table *pt, int i) {
    const ms_model_config *mc = &v->cfg->model;
    vit_block *b = &v->blk[i];
    int D = v->D, inner = v->heads * v->head_dim, Hd = v->mlp_hidden;
    /* separate_bottom: the first separate_layers blocks exist once per task */
    int separate = mc->arch == MS_ARCH_SEPARATE_BOTTOM && i < mc->separate_layers;
    b->n_copies = separate ? v->T : 1;
    for (int c = 0; c < b->n_copies; c++) {
        char prefix[64];
        if (separate)
            snprintf(prefix, sizeof prefix, "task_blocks.%d.%d.", c, i);
        else
            snprintf(prefix, sizeof prefix, "blocks.%d.", i);
        block_params *bp = &b->p[c];
        memset(bp, 0xff, sizeof *bp); /* every index -1 */
        bp->n1w = add1(v, pt, prefix, "norm1.weight", D, INIT_ONE);
        bp->n1b = add1(v, pt, prefix, "norm1.bias", D, INIT_ZERO);
        if (b->attn_moe) {
            moe_register(v, pt, b->attn_moe, MOE_ATTN, i, prefix);
        } else {
            bp->qkv_w = add2(v, pt, prefix, "attn.qkv.weight", 3 * inner, D, INIT_TRUNC02);
            if (mc->qkv_bias) bp->qkv_b = add1(v, pt, prefix, "attn.qkv.bias", 3 * inner, INIT_ZERO);
            bp->proj_w = add2(v, pt, prefix, "attn.proj.weight", D, inner, INIT_TRUNC02);
            bp->proj_b = add1(v, pt, prefix, "attn.proj.bias", D, INIT_ZERO);
        }
        bp->n2w = add1(v, pt, prefix, "norm2.weight", D, INIT_ONE);
        bp->n2b = add1(v, pt, prefix, "norm2.bias", D, INIT_ZERO);
        if (b->mlp_moe) {
            moe_register(v, pt, b->mlp_moe, MOE_MLP, i, prefix);
        } else {
            bp->fc1_w = add2(v, pt, prefix, "mlp.fc1.weight", Hd, D, INIT_TRUNC02);
            bp->fc1_b = add1(v, pt, prefix, "mlp.fc1.bias", Hd, INIT_ZERO);
            bp->fc2_w = add2(v, pt, prefix, "mlp.fc2.weight", D, Hd, INIT_TRUNC02);
            bp->fc2_b = add1(v, pt, prefix, "mlp.fc2.bias", D, INIT_ZERO);
        }
    }
}

/* ---- activations ----------------------------------------------------------------------------- */

void block_alloc(ms_vit *v, int i, ms_arena *a) {
    vit_block *b = &v->blk[i];
    int M = v->M, D = v->D, inner = v->heads * v->head_dim, N = v->N, B = v->B;
    for (int p = 0; p < v->P; p++) {
        block_pass *s = &b->pass[p];
        s->xn1 = ms_arena_alloc(a, ACT(v, (size_t)M * D));
        s->xn2 = ms_arena_alloc(a, ACT(v, (size_t)M * D));
        s->x_mid = ms_arena_alloc(a, ACT(v, (size_t)M * D));
        s->mean1 = ms_arena_alloc(a, (size_t)M * sizeof(float));
        s->rstd1 = ms_arena_alloc(a, (size_t)M * sizeof(float));
        s->mean2 = ms_arena_alloc(a, (size_t)M * sizeof(float));
        s->rstd2 = ms_arena_alloc(a, (size_t)M * sizeof(float));
        if (!b->attn_moe) {
            s->qkv = ms_arena_alloc(a, ACT(v, (size_t)M * 3 * inner));
            s->att = ms_arena_alloc(a, ACT(v, (size_t)B * v->heads * N * N));
            s->o = ms_arena_alloc(a, ACT(v, (size_t)M * inner));
        }
        if (!b->mlp_moe) s->h = ms_arena_alloc(a, ACT(v, (size_t)M * v->mlp_hidden));
    }
    if (b->attn_moe) moe_alloc(v, b->attn_moe, a);
    if (b->mlp_moe) moe_alloc(v, b->mlp_moe, a);
}

/* ---- dense sub-layers ------------------------------------------------------------------------ */

static void attn_forward(ms_vit *v, const block_params *bp, block_pass *s, ms_act *y) {
    ms_backend *be = v->be;
    int M = v->M, D = v->D, H = v->heads, hd = v->head_dim, inner = H * hd;
    float scale = 1.0f / sqrtf((float)hd);
    be->linear(be, s->qkv, s->xn1, vp(v, bp->qkv_w), bp->qkv_b >= 0 ? vp(v, bp->qkv_b) : NULL, M,
               D, 3 * inner, MS_W_OUT_IN);
    be->attention(be, s->o, s->att, s->qkv, v->B, v->N, H, hd, scale);
    be->linear(be, y, s->o, vp(v, bp->proj_w), vp(v, bp->proj_b), M, inner, D, MS_W_OUT_IN);
}

static void attn_backward(ms_vit *v, const block_params *bp, block_pass *s, const ms_act *dy,
                          ms_act *dxn) {
    ms_backend *be = v->be;
    int M = v->M, D = v->D, H = v->heads, hd = v->head_dim, inner = H * hd;
    float scale = 1.0f / sqrtf((float)hd);
    be->linear_bwd(be, v->s.dob, vg(v, bp->proj_w), vg(v, bp->proj_b), dy, s->o,
                   vp(v, bp->proj_w), M, inner, D, MS_W_OUT_IN, 0);
    be->attention_bwd(be, v->s.dqkv, v->s.datt, v->s.dob, s->qkv, s->att, v->B, v->N, H, hd,
                      scale);
    be->linear_bwd(be, dxn, vg(v, bp->qkv_w), bp->qkv_b >= 0 ? vg(v, bp->qkv_b) : NULL, v->s.dqkv,
                   s->xn1, vp(v, bp->qkv_w), M, D, 3 * inner, MS_W_OUT_IN, 0);
}

static void mlp_forward(ms_vit *v, const block_params *bp, block_pass *s, ms_act *y) {
    ms_backend *be = v->be;
    int M = v->M, D = v->D, Hd = v->mlp_hidden;
    ms_act *act = v->s.hid[0]; /* [M, Hd] */
    be->linear(be, s->h, s->xn2, vp(v, bp->fc1_w), vp(v, bp->fc1_b), M, D, Hd, MS_W_OUT_IN);
    be->gelu(be, act, s->h, (size_t)M * Hd);
    be->linear(be, y, act, vp(v, bp->fc2_w), vp(v, bp->fc2_b), M, Hd, D, MS_W_OUT_IN);
}

static void mlp_backward(ms_vit *v, const block_params *bp, block_pass *s, const ms_act *dy,
                         ms_act *dxn) {
    ms_backend *be = v->be;
    int M = v->M, D = v->D, Hd = v->mlp_hidden;
    ms_act *act = v->s.hid[0], *dact = v->s.hid[1]; /* [M, Hd] */
    be->gelu(be, act, s->h, (size_t)M * Hd); /* recomputed: cheaper than keeping it */
    be->linear_bwd(be, dact, vg(v, bp->fc2_w), vg(v, bp->fc2_b), dy, act, vp(v, bp->fc2_w), M,
                   Hd, D, MS_W_OUT_IN, 0);
    be->gelu_bwd(be, dact, dact, s->h, (size_t)M * Hd);
    be->linear_bwd(be, dxn, vg(v, bp->fc1_w), vg(v, bp->fc1_b), dact, s->xn2, vp(v, bp->fc1_w), M,
                   D, Hd, MS_W_OUT_IN, 0);
}

/* ---- block ----------------------------------------------------------------------------------- */

static int drop_path_on(const ms_vit *v, int i) { return v->training && v->blk[i].dpr > 0; }

/* x_out = x_in + drop_path(y); y is scratch and may be scaled in place. */
static void residual(ms_vit *v, int i, const float *scale, ms_act *out, const ms_act *x,
                     ms_act *y) {
    size_t ND = (size_t)v->N * v->D;
    if (drop_path_on(v, i)) v->be->drop_path(v->be, y, y, scale, v->B, ND);
    v->be->add(v->be, out, x, y, (size_t)v->M * v->D);
}

void block_forward(ms_vit *v, int i, int p, const ms_act *x, ms_act *out) {
    ms_backend *be = v->be;
    vit_block *b = &v->blk[i];
    block_pass *s = &b->pass[p];
    const block_params *bp = &b->p[b->n_copies > 1 ? p : 0];
    int M = v->M, D = v->D;
    ms_act *y = v->s.md[0]; /* [M, D] branch output */
    be->layernorm(be, s->xn1, s->mean1, s->rstd1, x, vp(v, bp->n1w), vp(v, bp->n1b), M, D,
                  LN_EPS);
    if (b->attn_moe)
        moe_forward(v, b->attn_moe, p, s->xn1, y);
    else
        attn_forward(v, bp, s, y);
    residual(v, i, s->dp_scale[0], s->x_mid, x, y);
    be->layernorm(be, s->xn2, s->mean2, s->rstd2, s->x_mid, vp(v, bp->n2w), vp(v, bp->n2b), M, D,
                  LN_EPS);
    if (b->mlp_moe)
        moe_forward(v, b->mlp_moe, p, s->xn2, y);
    else
        mlp_forward(v, bp, s, y);
    residual(v, i, s->dp_scale[1], out, s->x_mid, y);
}

/* The residual add passes dres through unchanged; the branch receives drop_path(dres). */
void block_backward(ms_vit *v, int i, int p, const ms_act *x, ms_act *dres) {
    ms_backend *be = v->be;
    vit_block *b = &v->blk[i];
    block_pass *s = &b->pass[p];
    const block_params *bp = &b->p[b->n_copies > 1 ? p : 0];
    int M = v->M, D = v->D;
    size_t ND = (size_t)v->N * D;
    ms_act *dy = v->s.md[1], *dxn = v->s.md[2]; /* [M, D] */
    const ms_act *dbranch = dres;

    if (drop_path_on(v, i)) {
        be->drop_path(be, dy, dres, s->dp_scale[1], v->B, ND);
        dbranch = dy;
    }
    if (b->mlp_moe)
        moe_backward(v, b->mlp_moe, p, s->xn2, dbranch, dxn);
    else
        mlp_backward(v, bp, s, dbranch, dxn);
    be->layernorm_bwd(be, dres, vg(v, bp->n2w), vg(v, bp->n2b), dxn, s->x_mid, s->mean2,
                      s->rstd2, vp(v, bp->n2w), M, D, 1);

    dbranch = dres;
    if (drop_path_on(v, i)) {
        be->drop_path(be, dy, dres, s->dp_scale[0], v->B, ND);
        dbranch = dy;
    }
    if (b->attn_moe)
        moe_backward(v, b->attn_moe, p, s->xn1, dbranch, dxn);
    else
        attn_backward(v, bp, s, dbranch, dxn);
    be->layernorm_bwd(be, dres, vg(v, bp->n1w), vg(v, bp->n1b), dxn, x, s->mean1, s->rstd1,
                      vp(v, bp->n1w), M, D, 1);
}

/* ---- accounting ------------------------------------------------------------------------------ */

double block_macs_per_token(const ms_vit *v, int i) {
    const vit_block *b = &v->blk[i];
    double D = v->D, N = v->N, inner = (double)v->heads * v->head_dim, Hd = v->mlp_hidden;
    double macs = 0;
    if (b->attn_moe)
        macs += moe_macs_per_token(v, b->attn_moe);
    else /* qkv, q.k and att.v over N keys, proj */
        macs += D * 3 * inner + 2 * N * inner + inner * D;
    if (b->mlp_moe)
        macs += moe_macs_per_token(v, b->mlp_moe);
    else
        macs += 2 * D * Hd;
    return macs;
}
