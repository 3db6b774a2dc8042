/* The op interface the model is written against (DESIGN.md principle 1).
 *
 * model/ calls every op through a struct of function pointers and touches only memory the
 * backend allocated, so the same model code runs on the CPU backend (kernels/cpu) and the CUDA
 * backend (kernels/cuda).
 *
 * Conventions, shared by every op below:
 * - Pointers are DEVICE pointers. Model code never dereferences them.
 * - Activations (`ms_act *`) have element type be->act_dtype: fp32 on the CPU, fp32 or bf16 on
 *   CUDA. Parameters, gradients, optimizer state, router probabilities, LayerNorm/BatchNorm
 *   statistics, losses and gates are always fp32 (`float *`). Indices are int32, masks uint8.
 * - Gradients of PARAMETERS are accumulated (+=): tasks and micro-batches add into one flat
 *   gradient buffer that the model zeroes once per optimizer step.
 * - Gradients of ACTIVATIONS are written (=), except where an op takes `accum_dx`: then
 *   dx += ... (used where a residual stream already holds a gradient).
 * - Shapes are given as [dims] in the comments with the fixed letters of DESIGN.md:
 *   B batch, N tokens, D width, T tasks, E experts, K top-k, H hidden/heads, C channels,
 *   M rows (= B*N tokens), R = M*K dispatched rows, P pixels per image (= H*W).
 * - No op allocates. Ops that need scratch take it from the caller (`*_ws` arguments).
 * - Every op is deterministic: the same inputs give bit-identical outputs on a given backend
 *   and thread count; no reduction depends on thread timing.
 */
#ifndef MS_BACKEND_H
#define MS_BACKEND_H

#include <stddef.h>
#include <stdint.h>

typedef enum { MS_F32 = 0, MS_BF16 = 1 } ms_dtype;

/* Device activations of element type be->act_dtype. */
typedef void ms_act;

/* Weight layouts found in the official PyTorch state_dict. */
typedef enum {
    MS_W_OUT_IN = 0, /* nn.Linear.weight (out, in): y = x W^T + b */
    MS_W_IN_OUT = 1, /* parallel experts `experts.w` (E, in, out): y = x W + b */
} ms_wlayout;

/* Element order inside one flattened patch. */
typedef enum {
    MS_PATCH_CHW = 0, /* (c, ky, kx): the flattened Conv2d patch-embedding weight (D, C, p, p) */
    MS_PATCH_HWC = 1, /* (ky, kx, c): MAE-style un-patchify of a per-token Linear(D -> p*p*C) */
} ms_patch_order;

/* conv2d's scratch (col_ws) is the im2col of one tile of whole output rows, reused tile after
 * tile: Ci*k*k * ms_conv_tile_rows(H, W) * W activations when k > 1. A tile covers at least
 * MS_CONV_TILE_COLS output pixels (at most the whole image), so the GEMMs stay as wide as a
 * whole image's while the scratch stays small: 19 MB instead of 600 MB at the PASCAL head's
 * 256x256 layers (kernels/cpu/conv.c). Callers size col_ws with this, backends tile with it. */
#define MS_CONV_TILE_COLS 2048
static inline int ms_conv_tile_rows(int H, int W) {
    int rows = (MS_CONV_TILE_COLS + W - 1) / W;
    return rows < H ? rows : H;
}

typedef struct ms_backend ms_backend;

struct ms_backend {
    const char *name;  /* "cpu", "cuda" */
    ms_dtype act_dtype;
    size_t act_size;   /* bytes per activation element */
    int threads;       /* CPU threads used by ops (OpenMP), or 0 on GPU backends */
    void *ctx;         /* backend private state */

    /* ---- memory ---------------------------------------------------------------------- */
    /* 64-byte aligned; NULL when the device is out of memory (the caller reports it). */
    void *(*alloc)(ms_backend *be, size_t bytes);
    void (*free)(ms_backend *be, void *p);
    void (*upload)(ms_backend *be, void *dst, const void *src_host, size_t bytes);
    void (*download)(ms_backend *be, void *dst_host, const void *src, size_t bytes);
    void (*zero)(ms_backend *be, void *dst, size_t bytes);
    void (*copy)(ms_backend *be, void *dst, const void *src, size_t bytes);
    /* fp32 host <-> activation dtype on the device, n elements. */
    void (*upload_act)(ms_backend *be, ms_act *dst, const float *src_host, size_t n);
    void (*download_act)(ms_backend *be, float *dst_host, const ms_act *src, size_t n);
    void (*synchronize)(ms_backend *be);
    void (*destroy)(ms_backend *be);

    /* ---- elementwise and token plumbing -------------------------------------------- */
    /* y[n] = a[n] + b[n]; y may alias a or b. */
    void (*add)(ms_backend *be, ms_act *y, const ms_act *a, const ms_act *b, size_t n);
    /* y[M,D] = x[M,D] + v[D] (task embedding before every block); y may alias x. */
    void (*add_row)(ms_backend *be, ms_act *y, const ms_act *x, const float *v, int M, int D);
    /* dv[D] += sum over rows of dy[M,D]. Backward of add_row for v. */
    void (*sum_rows)(ms_backend *be, float *dv, const ms_act *dy, int M, int D);
    /* x[n] *= s, fp32 (gradient clipping and averaging). */
    void (*scale_f32)(ms_backend *be, float *x, float s, size_t n);
    /* y[b, :] = x[b, :] * sample_scale[b] over n elements per sample (drop path: the scale is
     * 0 or 1/keep_prob, drawn by the model's RNG). Its own backward: apply it to dy. */
    void (*drop_path)(ms_backend *be, ms_act *y, const ms_act *x, const float *sample_scale,
                      int B, size_t n);

    /* patches[B, Np, C*p*p] from img[B, C, Hi, Wi] (Np = (Hi/p)*(Wi/p), row-major patch grid).
     * unpatchify is the exact inverse; each is the other's backward. */
    void (*patchify)(ms_backend *be, ms_act *patches, const ms_act *img, int B, int C, int Hi,
                     int Wi, int p, ms_patch_order order);
    void (*unpatchify)(ms_backend *be, ms_act *img, const ms_act *patches, int B, int C, int Hi,
                       int Wi, int p, ms_patch_order order);
    /* x[B, N, D]: x[b,0] = cls[D] + pos[0]; x[b,n] = pe[b,n-1] + pos[n] for n >= 1. */
    void (*tokens_assemble)(ms_backend *be, ms_act *x, const ms_act *pe, const float *cls,
                            const float *pos, int B, int N, int D);
    /* dpe[B, N-1, D] written; dcls[D] and dpos[N, D] accumulated. dpe may be NULL. */
    void (*tokens_assemble_bwd)(ms_backend *be, ms_act *dpe, float *dcls, float *dpos,
                                const ms_act *dx, int B, int N, int D);
    /* out[B, n1-n0, D] = x[B, N, D][:, n0:n1]; bwd writes dx[B, N, D] (zero outside n0:n1). */
    void (*tokens_slice)(ms_backend *be, ms_act *out, const ms_act *x, int B, int N, int D,
                         int n0, int n1);
    void (*tokens_slice_bwd)(ms_backend *be, ms_act *dx, const ms_act *dout, int B, int N,
                             int D, int n0, int n1);
    /* out[B, D] = mean of x[B, N, D] over tokens n0..N-1; bwd writes dx (zero for n < n0). */
    void (*tokens_mean)(ms_backend *be, ms_act *out, const ms_act *x, int B, int N, int D, int n0);
    void (*tokens_mean_bwd)(ms_backend *be, ms_act *dx, const ms_act *dout, int B, int N, int D,
                            int n0);

    /* ---- dense layers ---------------------------------------------------------------- */
    /* y[M, O] = x[M, I] W + b, W laid out as `layout` ((O, I) or (I, O)); b[O] may be NULL. */
    void (*linear)(ms_backend *be, ms_act *y, const ms_act *x, const float *w, const float *b,
                   int M, int I, int O, ms_wlayout layout);
    /* dx[M, I] (= or += with accum_dx; NULL to skip), dw += x^T dy, db[O] += colsum(dy). */
    void (*linear_bwd)(ms_backend *be, ms_act *dx, float *dw, float *db, const ms_act *dy,
                       const ms_act *x, const float *w, int M, int I, int O, ms_wlayout layout,
                       int accum_dx);
    /* Row LayerNorm over D with affine gamma, beta [D]; saves mean[M], rstd[M] for backward. */
    void (*layernorm)(ms_backend *be, ms_act *y, float *mean, float *rstd, const ms_act *x,
                      const float *gamma, const float *beta, int M, int D, float eps);
    void (*layernorm_bwd)(ms_backend *be, ms_act *dx, float *dgamma, float *dbeta,
                          const ms_act *dy, const ms_act *x, const float *mean, const float *rstd,
                          const float *gamma, int M, int D, int accum_dx);
    /* GELU, erf form: y = x/2 (1 + erf(x/sqrt 2)). */
    void (*gelu)(ms_backend *be, ms_act *y, const ms_act *x, size_t n);
    void (*gelu_bwd)(ms_backend *be, ms_act *dx, const ms_act *dy, const ms_act *x, size_t n);
    /* Row softmax of x[M, N]; bwd from the output y. */
    void (*softmax)(ms_backend *be, ms_act *y, const ms_act *x, int M, int N);
    void (*softmax_bwd)(ms_backend *be, ms_act *dx, const ms_act *dy, const ms_act *y, int M,
                        int N);

    /* ---- attention ------------------------------------------------------------------- */
    /* Standard multi-head attention. qkv[B, N, 3, H, hd] (timm's packed qkv Linear output),
     * out[B, N, H, hd], att[B, H, N, N] = softmax(q k^T * scale) kept for backward. */
    void (*attention)(ms_backend *be, ms_act *out, ms_act *att, const ms_act *qkv, int B, int N,
                      int H, int hd, float scale);
    /* dqkv written; datt_ws[B, H, N, N] is scratch. */
    void (*attention_bwd)(ms_backend *be, ms_act *dqkv, ms_act *datt_ws, const ms_act *dout,
                          const ms_act *qkv, const ms_act *att, int B, int N, int H, int hd,
                          float scale);
    /* Multi-query attention of the MoE attention layer: every token has K query heads (one
     * per selected expert) over ONE shared key/value head.
     * q[B, N, K, hd], kv[B, N, 2, hd] (k then v), out[B, N, K, hd],
     * att[B, N*K, N]: row (n, j) = softmax over keys of q[b,n,j] . k[b,m] * scale. */
    void (*mq_attention)(ms_backend *be, ms_act *out, ms_act *att, const ms_act *q,
                         const ms_act *kv, int B, int N, int K, int hd, float scale);
    /* dq, dkv written; datt_ws[B, N*K, N] is scratch. */
    void (*mq_attention_bwd)(ms_backend *be, ms_act *dq, ms_act *dkv, ms_act *datt_ws,
                             const ms_act *dout, const ms_act *q, const ms_act *kv,
                             const ms_act *att, int B, int N, int K, int hd, float scale);

    /* ---- mixture of experts ---------------------------------------------------------- */
    /* probs[M, E] = softmax(logits[M, E]) in fp32. idx[M, K] = the K most probable experts in
     * descending probability, ties to the lower expert index. gate[M, K] = probs at idx + eps
     * (NOT renormalised; eps = 1e-4 in the official code). */
    void (*route)(ms_backend *be, float *probs, int32_t *idx, float *gate, const ms_act *logits,
                  int M, int E, int K, float eps);
    /* dlogits[M, E] written, through the softmax, from
     *   dprobs[m, e] = dA_row[e] + sum_j [idx[m,j] == e] dgate[m, j].
     * dgate[M, K] may be NULL (no gate gradient); dA_row[E] (dL/dA[t, :] of the MI loss, the
     * same for every token of task t) may be NULL. */
    void (*route_bwd)(ms_backend *be, ms_act *dlogits, const float *dgate, const float *dA_row,
                      const float *probs, const int32_t *idx, int M, int E, int K);
    /* Groups the M*K (token, slot) pairs p = m*K + j by expert:
     * offsets[E+1] exclusive scan of per-expert counts; perm[R]: row r of the expert-sorted
     * order -> pair p, stable (increasing p within an expert); inv[R]: pair p -> row r.
     * offsets_host[E+1] receives a host copy (per-expert GEMM sizes live on the host). */
    void (*dispatch_plan)(ms_backend *be, int32_t *offsets, int32_t *perm, int32_t *inv,
                          int32_t *offsets_host, const int32_t *idx, int M, int K, int E);
    /* out[i] = map[idx[i]] for i < n: expert indices through a table. A model extracted for one
     * task (`modsquad extract`) stores only the experts it keeps; it routes over all E experts
     * as the full model does, then maps each selected expert to its stored index, and every
     * dropped expert to one extra index (E_keep) whose dispatch rows compute nothing.
     * out may alias idx. */
    void (*remap_experts)(ms_backend *be, int32_t *out, const int32_t *idx, const int32_t *map,
                          int n);
    /* out[r, :] = in[idx[r] / div, :] for r < R, rows of D elements. With idx = perm and
     * div = K this gathers tokens into expert order; with div = 1 it permutes rows. */
    void (*gather_rows)(ms_backend *be, ms_act *out, const ms_act *in, const int32_t *idx,
                        int div, int R, int D);
    /* y[m, :] = sum_j gate[m, j] * yd[inv[m*K + j], :] (gate NULL: plain sum). No atomics:
     * every token reads its K rows. With gate NULL it is the backward of gather_rows(div=K). */
    void (*combine)(ms_backend *be, ms_act *y, const ms_act *yd, const float *gate,
                    const int32_t *inv, int M, int K, int D);
    /* dyd[inv[m*K+j], :] = gate[m, j] * dy[m, :] (gate NULL: 1); dgate[m, j] = dy[m] . yd[inv]
     * (dgate NULL: skipped). */
    void (*combine_bwd)(ms_backend *be, ms_act *dyd, float *dgate, const ms_act *dy,
                        const ms_act *yd, const float *gate, const int32_t *inv, int M, int K,
                        int D);
    /* The gate gradient of combine WITHOUT the expert outputs yd (the backward keeps no yd, and
     * recomputing it would cost an expert GEMM). When yd[r] = h[r] W_e + b_e is an expert
     * linear and u[r] = dy[m] W_e^T is the ungated row pushed back through W_e:
     *   dgate[m, j] = dy[m] . yd[r] = u[r] . h[r] + dy[m] . b_e,  r = inv[m*K+j], e = idx[m*K+j];
     * then the gates are applied in place: du[r, :] = gate[m, j] * u[r, :] (the gradient of h)
     * and dyd[r, :] = gate[m, j] * dy[m, :] (the rows the weight gradient needs).
     * du[R, H]: in u, out gated. dyd[R, D]: in dy in dispatch order (combine_bwd with gate
     * NULL), out gated. h[R, H]; b[E, D] (NULL: no bias term); idx[M, K] the experts the
     * dispatch plan grouped by; dgate[M, K] written. */
    void (*expert_gate_bwd)(ms_backend *be, float *dgate, ms_act *du, ms_act *dyd,
                            const ms_act *h, const float *b, const float *gate,
                            const int32_t *idx, const int32_t *inv, int M, int K, int H, int D);
    /* Grouped expert linear over expert-contiguous rows: for expert e, rows
     * offsets_host[e] .. offsets_host[e+1]-1 of x[R, I] times w[e] (I, O) (+ b[e] (O)) into y.
     * Experts with no rows are skipped. w[E, I, O] (MS_W_IN_OUT), b[E, O] may be NULL. */
    void (*expert_linear)(ms_backend *be, ms_act *y, const ms_act *x, const float *w,
                          const float *b, const int32_t *offsets_host, int E, int I, int O);
    /* dx[R, I] written (NULL to skip); dw[E, I, O] and db[E, O] accumulated, experts with no
     * rows receive nothing (their gradient stays zero for the step, never stale). */
    void (*expert_linear_bwd)(ms_backend *be, ms_act *dx, float *dw, float *db, const ms_act *dy,
                              const ms_act *x, const float *w, const int32_t *offsets_host,
                              int E, int I, int O);
    /* Mutual-information statistics of one task pass through one MoE layer:
     * A_row[e] += sum_m (probs[m, e] + eps); freq[e] += number of (m, j) with idx[m, j] == e. */
    void (*mi_accumulate)(ms_backend *be, float *A_row, float *freq, const float *probs,
                          const int32_t *idx, int M, int E, int K, float eps);
    /* *loss = weight * L_MI(A[T, E], freq[E]) (METHOD.md section 3) and dA[T, E] = dloss/dA
     * (written). freq is a constant of the loss (counts are not differentiable). */
    void (*mi_loss)(ms_backend *be, float *loss, float *dA, const float *A, const float *freq,
                    int T, int E, int K, float eps, float weight);
    /* Noisy gating (the official TaskMoE and M3ViT's NoisyGate): the router Linear has 2E
     * outputs, logits2[M, 2E] = [clean | raw], and
     *   y[M, E] = clean + noise * (softplus(raw) + 1e-2)
     * with noise[M, E] ~ N(0, 1) drawn by the model; noise NULL gives y = clean (evaluation).
     * softplus as torch.nn.Softplus (beta 1, linear above 20). */
    void (*noisy_logits)(ms_backend *be, ms_act *y, const ms_act *logits2, const float *noise,
                         int M, int E);
    /* dlogits2[M, 2E] written: clean half = dy, raw half = dy * noise * sigmoid(raw) (0 with
     * noise NULL). */
    void (*noisy_logits_bwd)(ms_backend *be, ms_act *dlogits2, const ms_act *dy,
                             const ms_act *logits2, const float *noise, int M, int E);
    /* cv^2 balance loss of one task pass through one MoE layer (M3ViT):
     *   importance[e] = sum of gate[m, j] over the pairs with idx[m, j] == e,
     *   load[e] = the number of those pairs (a constant),
     *   *loss = weight * (cv2(importance) + cv2(load)),
     *   cv2(x) = var(x) / (mean(x)^2 + 1e-10), var unbiased (torch.var); 0 when E == 1.
     * dimp[E] = dloss/dimportance (written). */
    void (*balance_loss)(ms_backend *be, float *loss, float *dimp, const float *gate,
                         const int32_t *idx, int M, int E, int K, float weight);
    /* dgate[m, j] += dimp[idx[m, j]]: the balance loss's share of the gate gradient. */
    void (*balance_loss_bwd)(ms_backend *be, float *dgate, const float *dimp, const int32_t *idx,
                             int M, int K);
    /* The task half of a router fed [token ; task embedding] (task_moe, shared router): it adds
     * the same logits to every token, bias[E] = w[E, D] v[D]. fp32 parameters only. */
    void (*router_task_bias)(ms_backend *be, float *bias, const float *w, const float *v, int E,
                             int D);
    /* dw[E, D] += dbias v^T; dv[D] += w^T dbias. */
    void (*router_task_bias_bwd)(ms_backend *be, float *dw, float *dv, const float *dbias,
                                 const float *w, const float *v, int E, int D);

    /* ---- task losses: *loss (device scalar) forward; backward writes dpred scaled by the
     * device scalar *dloss (dTotal/dLoss_t, e.g. the task weight). All are means over valid
     * elements; with no valid element the loss is 0 and the gradient 0. -------------------- */
    /* Masked L1 and MSE: pred, target [B, C, P]; valid[B, P] (NULL: all valid) applies to
     * every channel; the mean is over valid pixels x C. The Taskonomy classification heads use
     * loss_mse with P = 1: raw logits against the soft target (as the official engine_mt.py). */
    void (*loss_l1)(ms_backend *be, float *loss, const ms_act *pred, const float *target,
                    const uint8_t *valid, int B, int C, int P);
    void (*loss_l1_bwd)(ms_backend *be, ms_act *dpred, const float *dloss, const ms_act *pred,
                        const float *target, const uint8_t *valid, int B, int C, int P);
    void (*loss_mse)(ms_backend *be, float *loss, const ms_act *pred, const float *target,
                     const uint8_t *valid, int B, int C, int P);
    void (*loss_mse_bwd)(ms_backend *be, ms_act *dpred, const float *dloss, const ms_act *pred,
                         const float *target, const uint8_t *valid, int B, int C, int P);
    /* 1 - cos(pred, target) over C per pixel, mean over valid pixels. */
    void (*loss_cosine)(ms_backend *be, float *loss, const ms_act *pred, const float *target,
                        const uint8_t *valid, int B, int C, int P);
    void (*loss_cosine_bwd)(ms_backend *be, ms_act *dpred, const float *dloss,
                            const ms_act *pred, const float *target, const uint8_t *valid,
                            int B, int C, int P);
    /* Cross-entropy of logits[B, C, P] against labels[B, P], mean over labels != ignore. */
    void (*loss_ce)(ms_backend *be, float *loss, const ms_act *logits, const int32_t *labels,
                    int ignore_index, int B, int C, int P);
    void (*loss_ce_bwd)(ms_backend *be, ms_act *dlogits, const float *dloss, const ms_act *logits,
                        const int32_t *labels, int ignore_index, int B, int C, int P);
    /* Balanced binary cross-entropy on logits[B, P] against labels[B, P] in {0, 1, 255 =
     * ignore}: w * BCE over positives + (1 - w) * BCE over negatives, divided by the number of
     * valid pixels; w = pos_weight, or the batch's share of negatives when pos_weight < 0. */
    void (*loss_bce_balanced)(ms_backend *be, float *loss, const ms_act *logits,
                              const uint8_t *labels, float pos_weight, int B, int P);
    void (*loss_bce_balanced_bwd)(ms_backend *be, ms_act *dlogits, const float *dloss,
                                  const ms_act *logits, const uint8_t *labels, float pos_weight,
                                  int B, int P);
    /* Uncertainty weighting: *total = sum_t 0.5 / s_t^2 * L[t] + log(1 + s_t^2);
     * dL[T] = 0.5 / s_t^2 (written; the dloss of each task loss), ds[T] += dTotal/ds_t. */
    void (*uncertainty_weighting)(ms_backend *be, float *total, float *dL, float *ds,
                                  const float *L, const float *s, int T);
    /* Fixed task weights: *total = sum_t w[t] * L[t] (summed in double). The dloss of task t
     * is then w[t] itself, so no backward op is needed. */
    void (*loss_weighted_sum)(ms_backend *be, float *total, const float *L, const float *w,
                              int T);
    /* Per-pixel L2 normalisation over the channels of x[B, C, P]: y = x / (|x| + eps), |x| the
     * Euclidean norm over C (PASCAL normals loss: eps 1e-12, as MTL-PyTorch's NormalsLoss).
     * bwd writes dx[B, C, P] from dy, recomputing the norms from x; at |x| = 0 it is dy / eps. */
    void (*l2_normalize)(ms_backend *be, ms_act *y, const ms_act *x, int B, int C, int P,
                         float eps);
    void (*l2_normalize_bwd)(ms_backend *be, ms_act *dx, const ms_act *dy, const ms_act *x,
                             int B, int C, int P, float eps);

    /* ---- convolution head ---------------------------------------------------------------- */
    /* Stride 1, zero padding k/2, k odd. x[B, Ci, H, W], w[Co, Ci, k, k], b[Co] (NULL: none),
     * y[B, Co, H, W]. col_ws: scratch of Ci*k*k * ms_conv_tile_rows(H, W) * W activations
     * (the im2col of one tile of output rows, reused tile after tile and, in the backward, for
     * the tile's dcol); NULL allowed when k == 1. */
    void (*conv2d)(ms_backend *be, ms_act *y, const ms_act *x, const float *w, const float *b,
                   int B, int Ci, int H, int W, int Co, int k, ms_act *col_ws);
    void (*conv2d_bwd)(ms_backend *be, ms_act *dx, float *dw, float *db, const ms_act *dy,
                       const ms_act *x, const float *w, int B, int Ci, int H, int W, int Co,
                       int k, ms_act *col_ws);
    /* BatchNorm2d over x[B, C, P]: train uses the batch statistics (biased variance), saves
     * mean[C], rstd[C] and updates running_mean/var[C] with momentum (unbiased variance, as
     * PyTorch); eval uses the running statistics. */
    void (*batchnorm_train)(ms_backend *be, ms_act *y, float *mean, float *rstd,
                            float *running_mean, float *running_var, const ms_act *x,
                            const float *gamma, const float *beta, int B, int C, int P, float eps,
                            float momentum);
    void (*batchnorm_eval)(ms_backend *be, ms_act *y, const ms_act *x, const float *running_mean,
                           const float *running_var, const float *gamma, const float *beta,
                           int B, int C, int P, float eps);
    void (*batchnorm_bwd)(ms_backend *be, ms_act *dx, float *dgamma, float *dbeta,
                          const ms_act *dy, const ms_act *x, const float *mean, const float *rstd,
                          const float *gamma, int B, int C, int P);
    void (*relu)(ms_backend *be, ms_act *y, const ms_act *x, size_t n);
    void (*relu_bwd)(ms_backend *be, ms_act *dx, const ms_act *dy, const ms_act *y, size_t n);
    /* Bilinear x2 upsampling, PyTorch align_corners=False: x[BC, H, W] -> y[BC, 2H, 2W]. */
    void (*upsample2x)(ms_backend *be, ms_act *y, const ms_act *x, int BC, int H, int W);
    void (*upsample2x_bwd)(ms_backend *be, ms_act *dx, const ms_act *dy, int BC, int H, int W);

    /* ---- optimizer -------------------------------------------------------------------- */
    /* AdamW over n fp32 values, step >= 1 (bias correction), decoupled decay:
     * p -= lr * (mhat / (sqrt(vhat) + eps) + weight_decay * p). The model calls it per run of
     * tensors sharing a decay setting. */
    void (*adamw)(ms_backend *be, float *p, const float *g, float *m, float *v, size_t n,
                  float lr, float beta1, float beta2, float eps, float weight_decay, int step);
    /* *out = sum of x[i]^2 (accumulated in double), for the global gradient norm. */
    void (*sumsq)(ms_backend *be, float *out, const float *x, size_t n);
};

/* kernels/cpu: always available. threads <= 0: use OpenMP's default. */
ms_backend *ms_backend_cpu_create(int threads);

#endif
