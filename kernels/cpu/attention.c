/* Scaled dot-product attention on the CPU: standard multi-head (timm's packed qkv) and the
 * multi-query attention of Mod-Squad's MoE attention layer.
 *
 * Both reduce to the same per-matrix kernel: one score GEMM, a row softmax and one value GEMM.
 * q, k and v are read in place through BLAS leading dimensions, never copied. The official MoE
 * attention (UMass-Foundation-Model/Mod-Squad, models_moe.py, MoETaskAttention) computes
 * einsum('bihd,bjd->bhij', q, k) * scale with q (B, N, heads, hd), one shared k, v (B, N, hd)
 * and a softmax over keys j; scale is head_dim^-0.5, passed in by the caller. Its per-head
 * (b, h) score matrices hold exactly the same rows as our [N*K, N] matrix per image; we order
 * the rows (n, j) so that q[b] (N*K rows of hd, contiguous) is the GEMM operand as it lies.
 *
 * Threading: the independent matrices ((b, h) pairs, or images for multi-query) are split
 * statically over OpenMP threads; each thread runs its own GEMMs, which OpenBLAS (OpenMP
 * build) executes single-threaded inside an active parallel region. When the loop does not
 * fork (little work, or a single matrix) OpenBLAS threads the GEMMs itself. Every output
 * element is written by one thread in a fixed order, so results are bit-identical run to run.
 */
#include "cpu.h"
#include "fast_math.h"

#include <cblas.h>

/* One attention matrix: Nq query rows over Nk keys.
 * q[Nq, hd] (row stride ldq), k, v[Nk, hd] (ldk, ldv), o[Nq, hd] (ldo), p[Nq, Nk] contiguous. */
typedef struct {
    const float *q, *k, *v;
    float *o, *p;
    int ldq, ldk, ldv, ldo;
} att_mat;

static void att_fwd_one(const att_mat *a, int Nq, int Nk, int hd, float scale) {
    /* p = softmax(scale * q k^T) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Nq, Nk, hd, scale, a->q, a->ldq, a->k,
                a->ldk, 0.0f, a->p, Nk);
    /* In place while the fresh score rows are still in cache; the vectorised exp matters: a
     * scalar expf per score cost more than both GEMMs of the matrix at ViT-small shapes. */
    for (int i = 0; i < Nq; i++) softmax_row(a->p + (size_t)i * Nk, a->p + (size_t)i * Nk, Nk);
    /* o = p v */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Nq, hd, Nk, 1.0f, a->p, Nk, a->v,
                a->ldv, 0.0f, a->o, a->ldo);
}

/* Gradients of one attention matrix. do_[Nq, hd] (lddo); dq (lddq), dk (lddk), dv (lddv) are
 * written; ds[Nq, Nk] is scratch that ends holding dL/dscores. */
typedef struct {
    const float *q, *k, *v, *p, *dout;
    float *dq, *dk, *dv, *ds;
    int ldq, ldk, ldv, lddo, lddq, lddk, lddv;
} att_grad;

static void att_bwd_one(const att_grad *g, int Nq, int Nk, int hd, float scale) {
    /* dP = dO v^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Nq, Nk, hd, 1.0f, g->dout, g->lddo, g->v,
                g->ldv, 0.0f, g->ds, Nk);
    /* Softmax backward per row, in place: dS = P * (dP - sum_j dP_j P_j). */
    for (int i = 0; i < Nq; i++) {
        float *d = g->ds + (size_t)i * Nk;
        softmax_row_bwd(d, d, g->p + (size_t)i * Nk, Nk);
    }
    /* dq = scale * dS k;  dk = scale * dS^T q;  dv = P^T dO. One GEMM each, so the sums over
     * query rows (all N*K rows of an image in the multi-query case) have a fixed order. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Nq, hd, Nk, scale, g->ds, Nk, g->k,
                g->ldk, 0.0f, g->dq, g->lddq);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Nk, hd, Nq, scale, g->ds, Nk, g->q,
                g->ldq, 0.0f, g->dk, g->lddk);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Nk, hd, Nq, 1.0f, g->p, Nk, g->dout,
                g->lddo, 0.0f, g->dv, g->lddv);
}

/* Fork only when there is more than one matrix and enough multiply-adds to pay for it. */
static int fork_pays(int nmat, int Nq, int Nk, int hd) {
    return nmat > 1 && (double)nmat * Nq * Nk * hd >= CPU_PAR_MIN;
}

/* ---- standard multi-head attention ------------------------------------------------------- */
/* qkv[B, N, 3, H, hd]: q, k, v of head h of token n start at ((b*N + n)*3 + s)*H*hd + h*hd, so
 * one head's q (or k, v) is an [N, hd] matrix with row stride 3*H*hd. out[B, N, H, hd]: row
 * stride H*hd. att[B, H, N, N]. */
static void cpu_attention(ms_backend *be, ms_act *out, ms_act *att, const ms_act *qkv, int B,
                          int N, int H, int hd, float scale) {
    (void)be;
    const float *x = CF(qkv);
    float *o = F(out), *p = F(att);
    const int nmat = B * H, ld3 = 3 * H * hd, ldo = H * hd;
#pragma omp parallel for schedule(static) if (fork_pays(nmat, N, N, hd))
    for (int bh = 0; bh < nmat; bh++) {
        int b = bh / H, h = bh % H;
        const float *q = x + (size_t)b * N * ld3 + (size_t)h * hd;
        att_mat a = {
            .q = q, .k = q + (size_t)H * hd, .v = q + (size_t)2 * H * hd,
            .o = o + (size_t)b * N * ldo + (size_t)h * hd, .p = p + (size_t)bh * N * N,
            .ldq = ld3, .ldk = ld3, .ldv = ld3, .ldo = ldo,
        };
        att_fwd_one(&a, N, N, hd, scale);
    }
}

/* dqkv[B, N, 3, H, hd] written (every element belongs to exactly one (b, h)); datt_ws[B, H, N, N]
 * scratch. */
static void cpu_attention_bwd(ms_backend *be, ms_act *dqkv, ms_act *datt_ws, const ms_act *dout,
                              const ms_act *qkv, const ms_act *att, int B, int N, int H, int hd,
                              float scale) {
    (void)be;
    const float *x = CF(qkv), *dy = CF(dout), *p = CF(att);
    float *dx = F(dqkv), *ws = F(datt_ws);
    const int nmat = B * H, ld3 = 3 * H * hd, ldo = H * hd;
#pragma omp parallel for schedule(static) if (fork_pays(nmat, N, N, hd))
    for (int bh = 0; bh < nmat; bh++) {
        int b = bh / H, h = bh % H;
        size_t off = (size_t)b * N * ld3 + (size_t)h * hd;
        size_t hs = (size_t)H * hd; /* distance from q to k (and k to v) within a token */
        att_grad g = {
            .q = x + off, .k = x + off + hs, .v = x + off + 2 * hs,
            .p = p + (size_t)bh * N * N, .dout = dy + (size_t)b * N * ldo + (size_t)h * hd,
            .dq = dx + off, .dk = dx + off + hs, .dv = dx + off + 2 * hs,
            .ds = ws + (size_t)bh * N * N,
            .ldq = ld3, .ldk = ld3, .ldv = ld3, .lddo = ldo, .lddq = ld3, .lddk = ld3, .lddv = ld3,
        };
        att_bwd_one(&g, N, N, hd, scale);
    }
}

/* ---- multi-query attention (MoE attention) ---------------------------------------------- */
/* q[B, N, K, hd]: the N*K query rows of image b form one contiguous [N*K, hd] matrix.
 * kv[B, N, 2, hd]: k and v of image b are [N, hd] matrices with row stride 2*hd.
 * out[B, N, K, hd] like q; att[B, N*K, N]. */
static void cpu_mq_attention(ms_backend *be, ms_act *out, ms_act *att, const ms_act *q,
                             const ms_act *kv, int B, int N, int K, int hd, float scale) {
    (void)be;
    const float *xq = CF(q), *xkv = CF(kv);
    float *o = F(out), *p = F(att);
    const int R = N * K; /* query rows per image */
#pragma omp parallel for schedule(static) if (fork_pays(B, R, N, hd))
    for (int b = 0; b < B; b++) {
        const float *k = xkv + (size_t)b * N * 2 * hd;
        att_mat a = {
            .q = xq + (size_t)b * R * hd, .k = k, .v = k + hd,
            .o = o + (size_t)b * R * hd, .p = p + (size_t)b * R * N,
            .ldq = hd, .ldk = 2 * hd, .ldv = 2 * hd, .ldo = hd,
        };
        att_fwd_one(&a, R, N, hd, scale);
    }
}

/* dq[B, N, K, hd] and dkv[B, N, 2, hd] written; datt_ws[B, N*K, N] scratch. dk and dv sum over
 * all N*K query rows of the image inside one GEMM each. */
static void cpu_mq_attention_bwd(ms_backend *be, ms_act *dq, ms_act *dkv, ms_act *datt_ws,
                                 const ms_act *dout, const ms_act *q, const ms_act *kv,
                                 const ms_act *att, int B, int N, int K, int hd, float scale) {
    (void)be;
    const float *xq = CF(q), *xkv = CF(kv), *dy = CF(dout), *p = CF(att);
    float *gq = F(dq), *gkv = F(dkv), *ws = F(datt_ws);
    const int R = N * K;
#pragma omp parallel for schedule(static) if (fork_pays(B, R, N, hd))
    for (int b = 0; b < B; b++) {
        size_t qo = (size_t)b * R * hd, ko = (size_t)b * N * 2 * hd, po = (size_t)b * R * N;
        att_grad g = {
            .q = xq + qo, .k = xkv + ko, .v = xkv + ko + hd, .p = p + po, .dout = dy + qo,
            .dq = gq + qo, .dk = gkv + ko, .dv = gkv + ko + hd, .ds = ws + po,
            .ldq = hd, .ldk = 2 * hd, .ldv = 2 * hd, .lddo = hd, .lddq = hd, .lddk = 2 * hd,
            .lddv = 2 * hd,
        };
        att_bwd_one(&g, R, N, hd, scale);
    }
}

void cpu_register_attention(ms_backend *be) {
    be->attention = cpu_attention;
    be->attention_bwd = cpu_attention_bwd;
    be->mq_attention = cpu_mq_attention;
    be->mq_attention_bwd = cpu_mq_attention_bwd;
}
