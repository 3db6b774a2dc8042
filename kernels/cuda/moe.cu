/* Mixture-of-experts kernels: fused router softmax + top-k, its backward, the dispatch plan
 * (histogram, scan, stable placement), row gather, gated combine and its backward, and the
 * mutual-information statistics and loss.
 *
 * Semantics are those of kernels/cpu/moe.c (read its header for the relation to the official
 * Mod-Squad code); the simt tests compare every op here with it. Decisions that matter:
 *  - route: a warp per token, the E logits spread over the lanes (expert e = slot * 32 + lane),
 *    softmax with the sum in double and probs = exp * (float)(1 / sum) as on the CPU; the top K
 *    by K rounds of a warp argmax under the order (probability descending, expert ascending):
 *    ties go to the lower expert index, exactly the CPU's rule. A NaN probability ranks last, so
 *    even diverged logits give K distinct valid experts (not necessarily the CPU's pick then).
 *  - dispatch_plan: the stable counting sort of the CPU in three kernels. Tiles of 1024 pairs:
 *    (1) per-tile expert counts (shared-memory integer atomics: counts, so the order of the
 *    increments cannot change them); (2) one block scans them, per expert over tiles and then
 *    over experts, into each (tile, expert) base row and the offsets; (3) each tile places its
 *    pairs: a pair's row is its (tile, expert) base + the count of its expert in earlier warps of
 *    the tile + its rank among equal experts in its warp (__match_any_sync). Rows within an
 *    expert therefore follow the pair index p = m*K + j, the CPU's order, bit for bit. The
 *    offsets go to offsets_host with one device-to-host copy and a stream synchronisation,
 *    because the per-expert GEMM sizes are host arguments of cuBLAS (linear.cu).
 *  - remap_experts: one thread per pair, a table lookup (extracted models).
 *  - combine / combine_bwd / expert_gate_bwd: a block per token reads or writes its K rows; no
 *    two tokens share an output, so there are no atomics and sums follow the CPU's j order.
 *  - mi_accumulate / mi_loss: block reductions in double in a fixed order; mi_loss is one block
 *    (T x E is tens by tens) that follows the CPU's formulas term for term. */
#include "cuda_common.h"

#include <limits.h>

#define ROUTE_WARPS 4 /* tokens per block */
#define ROUTE_SLOTS (MS_CUDA_MAX_EXPERTS / 32)
#define TILE 1024 /* dispatch pairs per block: one per thread of a 1024-thread block */
#define SCAN_THREADS 1024
#define ROW_THREADS 128 /* gather / combine: threads over the D columns of a row */
#define MI_THREADS 256
#define REMAP_THREADS 256

/* ---- route ----------------------------------------------------------------------------------- */

/* True when candidate (pa, ea) ranks before (pb, eb). Probabilities are >= 0, so a NaN maps to
 * -1 and ranks last; ea == INT_MAX marks "no candidate". A strict total order, so the butterfly
 * argmax leaves the same winner in every lane. */
__device__ __forceinline__ bool ranks_before(float pa, int ea, float pb, int eb) {
    if (ea == INT_MAX) return false;
    if (eb == INT_MAX) return true;
    float ka = pa == pa ? pa : -1.0f, kb = pb == pb ? pb : -1.0f;
    return ka > kb || (ka == kb && ea < eb);
}

/* logits[M, E] -> probs[M, E] (fp32), idx[M, K], gate[M, K]; warp w of block b routes token
 * 4 b + w, lane l holding experts l, l + 32, ... in registers. */
template <typename T>
__global__ void __launch_bounds__(ROUTE_WARPS * 32)
    route_kernel(float *probs, int32_t *idx, float *gate, const T *logits, int M, int E, int K,
                 float eps) {
    int lane = threadIdx.x & 31;
    int m = blockIdx.x * ROUTE_WARPS + (threadIdx.x >> 5);
    if (m >= M) return; /* the whole warp */
    const T *x = logits + (size_t)m * E;
    float p[ROUTE_SLOTS]; /* p[s]: expert s * 32 + lane */
    float mx = -INFINITY;
#pragma unroll
    for (int s = 0; s < ROUTE_SLOTS; s++) {
        int e = s * 32 + lane;
        p[s] = e < E ? ld(x[e]) : -INFINITY;
        mx = fmaxf(mx, p[s]);
    }
    mx = warp_max(mx);
    double sum = 0.0;
#pragma unroll
    for (int s = 0; s < ROUTE_SLOTS; s++) {
        p[s] = s * 32 + lane < E ? expf(p[s] - mx) : 0.0f;
        sum += p[s];
    }
    float inv = (float)(1.0 / warp_sum(sum));
    unsigned taken = 0; /* bit s: slot s already selected, or beyond E */
#pragma unroll
    for (int s = 0; s < ROUTE_SLOTS; s++) {
        int e = s * 32 + lane;
        p[s] *= inv;
        if (e < E)
            probs[(size_t)m * E + e] = p[s];
        else
            taken |= 1u << s;
    }
    for (int j = 0; j < K; j++) {
        float bp = 0.0f;
        int be = INT_MAX;
#pragma unroll
        for (int s = 0; s < ROUTE_SLOTS; s++)
            if (!(taken >> s & 1) && ranks_before(p[s], s * 32 + lane, bp, be))
                bp = p[s], be = s * 32 + lane;
        for (int o = 16; o > 0; o >>= 1) {
            float op = __shfl_xor_sync(FULL_MASK, bp, o);
            int oe = __shfl_xor_sync(FULL_MASK, be, o);
            if (ranks_before(op, oe, bp, be)) bp = op, be = oe;
        }
        /* Every lane now holds the winner and its probability (moved bit for bit). */
        if ((be & 31) == lane) taken |= 1u << (be >> 5);
        if (lane == 0) {
            idx[(size_t)m * K + j] = be;
            gate[(size_t)m * K + j] = bp + eps;
        }
    }
}

template <typename T>
static void route_t(ms_backend *be, float *probs, int32_t *idx, float *gate, const ms_act *logits,
                    int M, int E, int K, float eps) {
    MS_LAUNCH(route_kernel<T>, cdiv((size_t)M, ROUTE_WARPS), ROUTE_WARPS * 32, 0, cuda_stream(be),
              probs, idx, gate, (const T *)logits, M, E, K, eps);
}

static void cuda_route(ms_backend *be, float *probs, int32_t *idx, float *gate,
                       const ms_act *logits, int M, int E, int K, float eps) {
    MS_ASSERT(K >= 1 && K <= E);
    if (E > MS_CUDA_MAX_EXPERTS)
        ms_fatal("CUDA backend: route over %d experts; at most %d are supported", E,
                 MS_CUDA_MAX_EXPERTS);
    if (M > 0) ACT_DISPATCH(be, route_t, be, probs, idx, gate, logits, M, E, K, eps);
}

/* dprobs[e] = dA_row[e] + sum_j [idx_j == e] dgate_j; dlogits = p (dprobs - dprobs . p), with
 * the dense part in double and the scattered gate part added in float in j order, as the CPU. */
template <typename T>
__global__ void __launch_bounds__(ROUTE_WARPS * 32)
    route_bwd_kernel(T *dlogits, const float *dgate, const float *dA_row, const float *probs,
                     const int32_t *idx, int M, int E, int K) {
    int lane = threadIdx.x & 31;
    int m = blockIdx.x * ROUTE_WARPS + (threadIdx.x >> 5);
    if (m >= M) return;
    const float *p = probs + (size_t)m * E;
    const int32_t *id = idx + (size_t)m * K;
    const float *dg = dgate ? dgate + (size_t)m * K : NULL;
    double dot = 0.0;
    if (dA_row)
        for (int e = lane; e < E; e += 32) dot += (double)dA_row[e] * p[e];
    if (dg)
        for (int j = lane; j < K; j += 32) dot += (double)dg[j] * p[id[j]];
    dot = warp_sum(dot);
    for (int e = lane; e < E; e += 32) {
        float pe = p[e];
        float d = (float)(pe * ((dA_row ? dA_row[e] : 0.0) - dot));
        if (dg)
            for (int j = 0; j < K; j++)
                if (id[j] == e) d += pe * dg[j];
        st(&dlogits[(size_t)m * E + e], d);
    }
}

template <typename T>
static void route_bwd_t(ms_backend *be, ms_act *dlogits, const float *dgate, const float *dA_row,
                        const float *probs, const int32_t *idx, int M, int E, int K) {
    MS_LAUNCH(route_bwd_kernel<T>, cdiv((size_t)M, ROUTE_WARPS), ROUTE_WARPS * 32, 0,
              cuda_stream(be), (T *)dlogits, dgate, dA_row, probs, idx, M, E, K);
}

static void cuda_route_bwd(ms_backend *be, ms_act *dlogits, const float *dgate, const float *dA_row,
                           const float *probs, const int32_t *idx, int M, int E, int K) {
    if (M > 0 && E > 0)
        ACT_DISPATCH(be, route_bwd_t, be, dlogits, dgate, dA_row, probs, idx, M, E, K);
}

/* ---- dispatch plan --------------------------------------------------------------------------- */

/* counts[tile, e] = pairs of the tile routed to e; *bad = 1 on an index outside [0, E). */
__global__ void __launch_bounds__(TILE)
    dispatch_count_kernel(int32_t *counts, int32_t *bad, const int32_t *idx, int R, int E) {
    MS_DYNAMIC_SMEM(int32_t, cnt); /* [E] */
    for (int e = threadIdx.x; e < E; e += TILE) cnt[e] = 0;
    __syncthreads();
    int p = blockIdx.x * TILE + threadIdx.x;
    if (p < R) {
        int e = idx[p];
        if (e >= 0 && e < E)
            atomicAdd(&cnt[e], 1);
        else
            *bad = 1;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += TILE) counts[(size_t)blockIdx.x * E + e] = cnt[e];
}

/* One block. counts[tiles, E] becomes the first row of each (tile, expert) in expert order;
 * offsets[E+1] the exclusive scan of the expert totals. Warp w scans experts w, w + 32, ...
 * over the tiles, 32 tiles per step; warp 0 then scans the totals over experts. */
__global__ void __launch_bounds__(SCAN_THREADS)
    dispatch_scan_kernel(int32_t *offsets, int32_t *counts, int tiles, int E) {
    MS_SHARED(int32_t, start, [MS_CUDA_MAX_EXPERTS + 1]);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int e = warp; e < E; e += SCAN_THREADS / 32) {
        int carry = 0;
        for (int t0 = 0; t0 < tiles; t0 += 32) {
            int t = t0 + lane;
            int c = t < tiles ? counts[(size_t)t * E + e] : 0, incl = c;
            for (int d = 1; d < 32; d <<= 1) {
                int v = __shfl_up_sync(FULL_MASK, incl, d);
                if (lane >= d) incl += v;
            }
            if (t < tiles) counts[(size_t)t * E + e] = carry + incl - c;
            carry += __shfl_sync(FULL_MASK, incl, 31);
        }
        if (lane == 0) start[e + 1] = carry; /* expert total, scanned below */
    }
    __syncthreads();
    if (warp == 0) {
        int carry = 0;
        for (int e0 = 0; e0 < E; e0 += 32) {
            int e = e0 + lane;
            int c = e < E ? start[e + 1] : 0, incl = c;
            for (int d = 1; d < 32; d <<= 1) {
                int v = __shfl_up_sync(FULL_MASK, incl, d);
                if (lane >= d) incl += v;
            }
            if (e < E) start[e] = carry + incl - c;
            carry += __shfl_sync(FULL_MASK, incl, 31);
        }
        if (lane == 0) start[E] = carry;
    }
    __syncthreads();
    for (int e = threadIdx.x; e <= E; e += SCAN_THREADS) offsets[e] = start[e];
    for (int i = threadIdx.x; i < tiles * E; i += SCAN_THREADS) counts[i] += start[i % E];
}

/* Places the tile's pairs: perm[r] = p, inv[p] = r with r = base[tile, e] + (pairs of e in
 * earlier warps of the tile) + (rank of p among the lanes of its warp with expert e). */
__global__ void __launch_bounds__(TILE)
    dispatch_place_kernel(int32_t *perm, int32_t *inv, const int32_t *base, const int32_t *idx,
                          int R, int E) {
    /* [32 warps, E]: per-warp counts, then exclusive prefixes over the warps */
    MS_DYNAMIC_SMEM(int32_t, before);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int i = threadIdx.x; i < 32 * E; i += TILE) before[i] = 0;
    __syncthreads();
    int p = blockIdx.x * TILE + threadIdx.x;
    int e = p < R ? idx[p] : -1;
    bool valid = e >= 0 && e < E; /* invalid indices were flagged by the count kernel */
    unsigned peers = __match_any_sync(FULL_MASK, valid ? e : -1);
    int rank = __popc(peers & ((1u << lane) - 1u));
    if (valid && rank == 0) before[warp * E + e] = __popc(peers);
    __syncthreads();
    for (int x = threadIdx.x; x < E; x += TILE) {
        int run = 0;
        for (int w = 0; w < 32; w++) {
            int c = before[w * E + x];
            before[w * E + x] = run;
            run += c;
        }
    }
    __syncthreads();
    if (valid) {
        int r = base[(size_t)blockIdx.x * E + e] + before[warp * E + e] + rank;
        perm[r] = p;
        inv[p] = r;
    }
}

static void cuda_dispatch_plan(ms_backend *be, int32_t *offsets, int32_t *perm, int32_t *inv,
                               int32_t *offsets_host, const int32_t *idx, int M, int K, int E) {
    if (E < 1 || E > MS_CUDA_MAX_EXPERTS)
        ms_fatal("CUDA backend: dispatch over %d experts; the CUDA backend supports 1 to %d", E,
                 MS_CUDA_MAX_EXPERTS);
    cudaStream_t st = cuda_stream(be);
    int R = M * K;
    int tiles = R > 0 ? (int)cdiv((size_t)R, TILE) : 0;
    /* scratch: counts[tiles, E] then the bad-index flag */
    int32_t *counts =
        (int32_t *)cuda_scratch(be, SCRATCH_DISPATCH, ((size_t)tiles * E + 1) * sizeof(int32_t));
    int32_t *bad = counts + (size_t)tiles * E;
    CUDA_CHECK(cudaMemsetAsync(bad, 0, sizeof *bad, st));
    if (tiles) {
        MS_LAUNCH(dispatch_count_kernel, tiles, TILE, (size_t)E * sizeof(int32_t), st, counts, bad,
                  idx, R, E);
        MS_LAUNCH(dispatch_scan_kernel, 1, SCAN_THREADS, 0, st, offsets, counts, tiles, E);
        MS_LAUNCH(dispatch_place_kernel, tiles, TILE, (size_t)32 * E * sizeof(int32_t), st, perm,
                  inv, counts, idx, R, E);
    } else {
        CUDA_CHECK(cudaMemsetAsync(offsets, 0, (size_t)(E + 1) * sizeof(int32_t), st));
    }
    /* The host needs the expert sizes for the per-expert GEMMs: the one synchronisation. */
    int32_t bad_host = 0;
    CUDA_CHECK(cudaMemcpyAsync(offsets_host, offsets, (size_t)(E + 1) * sizeof(int32_t),
                               cudaMemcpyDeviceToHost, st));
    CUDA_CHECK(cudaMemcpyAsync(&bad_host, bad, sizeof bad_host, cudaMemcpyDeviceToHost, st));
    CUDA_CHECK(cudaStreamSynchronize(st));
    if (bad_host)
        ms_fatal("CUDA backend: dispatch_plan got an expert index outside [0, %d) (diverged "
                 "routing or a bug in the caller)",
                 E);
}

/* ---- remap ----------------------------------------------------------------------------------- */

/* Thread i: out[i] = map[idx[i]]; each thread reads its element before writing it, so out may
 * alias idx. */
__global__ void __launch_bounds__(REMAP_THREADS)
    remap_experts_kernel(int32_t *out, const int32_t *idx, const int32_t *map, int n) {
    size_t i = (size_t)blockIdx.x * REMAP_THREADS + threadIdx.x;
    if (i < (size_t)n) out[i] = map[idx[i]];
}

static void cuda_remap_experts(ms_backend *be, int32_t *out, const int32_t *idx,
                               const int32_t *map, int n) {
    if (n > 0)
        MS_LAUNCH(remap_experts_kernel, cdiv((size_t)n, REMAP_THREADS), REMAP_THREADS, 0,
                  cuda_stream(be), out, idx, map, n);
}

/* ---- gather, combine ------------------------------------------------------------------------- */

/* Block r: out[r, :] = in[idx[r] / div, :]; out[R, D], in[rows, D], idx[R]. */
template <typename T>
__global__ void __launch_bounds__(ROW_THREADS)
    gather_rows_kernel(T *out, const T *in, const int32_t *idx, int div, int D) {
    size_t r = blockIdx.x;
    const T *src = in + (size_t)(idx[r] / div) * D;
    for (int d = threadIdx.x; d < D; d += ROW_THREADS) out[r * D + d] = src[d];
}

template <typename T>
static void gather_rows_t(ms_backend *be, ms_act *out, const ms_act *in, const int32_t *idx,
                          int div, int R, int D) {
    MS_LAUNCH(gather_rows_kernel<T>, R, ROW_THREADS, 0, cuda_stream(be), (T *)out, (const T *)in,
              idx, div, D);
}

static void cuda_gather_rows(ms_backend *be, ms_act *out, const ms_act *in, const int32_t *idx,
                             int div, int R, int D) {
    MS_ASSERT(div >= 1);
    if (R > 0 && D > 0) ACT_DISPATCH(be, gather_rows_t, be, out, in, idx, div, R, D);
}

/* Block m: y[m, d] = sum_j gate[m, j] yd[inv[m*K + j], d], j in order; y[M, D], yd[R, D],
 * gate[M, K] (NULL: 1), inv[R]. */
template <typename T>
__global__ void __launch_bounds__(ROW_THREADS)
    combine_kernel(T *y, const T *yd, const float *gate, const int32_t *inv, int K, int D) {
    size_t m = blockIdx.x;
    const int32_t *rows = inv + m * K;
    for (int d = threadIdx.x; d < D; d += ROW_THREADS) {
        float acc = 0.0f;
        for (int j = 0; j < K; j++) {
            float g = gate ? gate[m * K + j] : 1.0f;
            float v = ld(yd[(size_t)rows[j] * D + d]);
            acc = j == 0 ? g * v : acc + g * v;
        }
        st(&y[m * D + d], acc);
    }
}

template <typename T>
static void combine_t(ms_backend *be, ms_act *y, const ms_act *yd, const float *gate,
                      const int32_t *inv, int M, int K, int D) {
    MS_LAUNCH(combine_kernel<T>, M, ROW_THREADS, 0, cuda_stream(be), (T *)y, (const T *)yd, gate,
              inv, K, D);
}

static void cuda_combine(ms_backend *be, ms_act *y, const ms_act *yd, const float *gate,
                         const int32_t *inv, int M, int K, int D) {
    if (M > 0 && D > 0 && K > 0) ACT_DISPATCH(be, combine_t, be, y, yd, gate, inv, M, K, D);
}

/* Block m, warp w takes slots j = w, w + 4, ...: writes dyd's row inv[m*K + j] (dyd NULL:
 * skipped) and reduces dgate[m*K + j] = dy[m] . yd[inv] over its lanes in double. */
template <typename T>
__global__ void __launch_bounds__(ROW_THREADS)
    combine_bwd_kernel(T *dyd, float *dgate, const T *dy, const T *yd, const float *gate,
                       const int32_t *inv, int K, int D) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    size_t m = blockIdx.x;
    const T *go = dy + m * D;
    for (int j = warp; j < K; j += ROW_THREADS / 32) {
        size_t p = m * K + j;
        size_t r = (size_t)inv[p];
        if (dyd) {
            float g = gate ? gate[p] : 1.0f;
            for (int d = lane; d < D; d += 32) st(&dyd[r * D + d], g * ld(go[d]));
        }
        if (dgate) {
            double acc = 0.0;
            for (int d = lane; d < D; d += 32) acc += (double)ld(go[d]) * ld(yd[r * D + d]);
            acc = warp_sum(acc);
            if (lane == 0) dgate[p] = (float)acc;
        }
    }
}

template <typename T>
static void combine_bwd_t(ms_backend *be, ms_act *dyd, float *dgate, const ms_act *dy,
                          const ms_act *yd, const float *gate, const int32_t *inv, int M, int K,
                          int D) {
    MS_LAUNCH(combine_bwd_kernel<T>, M, ROW_THREADS, 0, cuda_stream(be), (T *)dyd, dgate,
              (const T *)dy, (const T *)yd, gate, inv, K, D);
}

static void cuda_combine_bwd(ms_backend *be, ms_act *dyd, float *dgate, const ms_act *dy,
                             const ms_act *yd, const float *gate, const int32_t *inv, int M, int K,
                             int D) {
    if (M > 0 && K > 0 && (dyd || dgate))
        ACT_DISPATCH(be, combine_bwd_t, be, dyd, dgate, dy, yd, gate, inv, M, K, D);
}

/* Block m, warp w takes slots j = w, w + 4, ...: dgate[m*K + j] = du[r] . h[r] + dyd[r] . b[e]
 * reduced over the lanes in double, each lane scaling by the gate the elements it has just read
 * (the same lane reads and writes an element, so no synchronisation is needed). */
template <typename T>
__global__ void __launch_bounds__(ROW_THREADS)
    expert_gate_bwd_kernel(float *dgate, T *du, T *dyd, const T *h, const float *b,
                           const float *gate, const int32_t *idx, const int32_t *inv, int K, int H,
                           int D) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    size_t m = blockIdx.x;
    for (int j = warp; j < K; j += ROW_THREADS / 32) {
        size_t p = m * K + j;
        size_t r = (size_t)inv[p];
        float g = gate[p];
        double acc = 0.0;
        for (int i = lane; i < H; i += 32) {
            float v = ld(du[r * H + i]);
            acc += (double)v * ld(h[r * H + i]);
            st(&du[r * H + i], g * v);
        }
        const float *be_row = b ? b + (size_t)idx[p] * D : NULL;
        for (int d = lane; d < D; d += 32) {
            float v = ld(dyd[r * D + d]);
            if (be_row) acc += (double)v * be_row[d];
            st(&dyd[r * D + d], g * v);
        }
        acc = warp_sum(acc);
        if (lane == 0) dgate[p] = (float)acc;
    }
}

template <typename T>
static void expert_gate_bwd_t(ms_backend *be, float *dgate, ms_act *du, ms_act *dyd,
                              const ms_act *h, const float *b, const float *gate,
                              const int32_t *idx, const int32_t *inv, int M, int K, int H, int D) {
    MS_LAUNCH(expert_gate_bwd_kernel<T>, M, ROW_THREADS, 0, cuda_stream(be), dgate, (T *)du,
              (T *)dyd, (const T *)h, b, gate, idx, inv, K, H, D);
}

static void cuda_expert_gate_bwd(ms_backend *be, float *dgate, ms_act *du, ms_act *dyd,
                                 const ms_act *h, const float *b, const float *gate,
                                 const int32_t *idx, const int32_t *inv, int M, int K, int H,
                                 int D) {
    if (M > 0 && K > 0)
        ACT_DISPATCH(be, expert_gate_bwd_t, be, dgate, du, dyd, h, b, gate, idx, inv, M, K, H, D);
}

/* ---- mutual-information statistics and loss -------------------------------------------------- */

/* Block e: A_row[e] += sum_m (probs[m, e] + eps), freq[e] += #{p : idx[p] == e}. */
__global__ void __launch_bounds__(MI_THREADS)
    mi_accumulate_kernel(float *A_row, float *freq, const float *probs, const int32_t *idx, int M,
                         int E, int K, float eps) {
    int e = blockIdx.x;
    double s = 0.0, c = 0.0;
    for (int m = threadIdx.x; m < M; m += MI_THREADS) s += (double)probs[(size_t)m * E + e] + eps;
    for (size_t p = threadIdx.x; p < (size_t)M * K; p += MI_THREADS) c += idx[p] == e;
    s = block_sum(s);
    c = block_sum(c); /* integer counts: exact in double */
    if (threadIdx.x == 0) {
        A_row[e] += (float)s;
        freq[e] += (float)c;
    }
}

static void cuda_mi_accumulate(ms_backend *be, float *A_row, float *freq, const float *probs,
                               const int32_t *idx, int M, int E, int K, float eps) {
    if (E > 0 && M > 0)
        MS_LAUNCH(mi_accumulate_kernel, E, MI_THREADS, 0, cuda_stream(be), A_row, freq, probs, idx,
                  M, E, K, eps);
}

/* One block; the CPU's formulas (kernels/cpu/moe.c, "Gradient of L_MI") in double. Marginals
 * and the U / V sums go one thread per task or expert, in the CPU's order; L is summed per task
 * row and then over rows. The marginals are kept as reciprocals: the divisions by them become
 * products (a rounding difference of ~1e-16, invisible in the fp32 results), which also keeps
 * ptxas from spilling around the double-division slow path on sm_80. */
__global__ void __launch_bounds__(MI_THREADS)
    mi_loss_kernel(float *loss, float *dA, const float *A, const float *freq, int T, int E, int K,
                   float eps, float weight) {
    MS_DYNAMIC_SMEM(double, sh); /* 1/PT[T], 1/PE[E], U[T], V[E], Lrow[T] */
    double *rPT = sh, *rPE = rPT + T, *U = rPE + E, *V = U + T, *Lrow = V + E;
    double f = 0.0;
    for (int e = threadIdx.x; e < E; e += MI_THREADS) f += freq[e];
    double S = block_sum(f) / K + eps; /* normaliser of A, a constant of the gradient */
    for (int t = threadIdx.x; t < T; t += MI_THREADS) {
        double acc = eps;
        for (int e = 0; e < E; e++) acc += A[(size_t)t * E + e] / S;
        rPT[t] = 1.0 / acc;
    }
    for (int e = threadIdx.x; e < E; e += MI_THREADS) {
        double acc = eps;
        for (int t = 0; t < T; t++) acc += A[(size_t)t * E + e] / S;
        rPE[e] = 1.0 / acc;
    }
    __syncthreads();
    for (int t = threadIdx.x; t < T; t += MI_THREADS) {
        double u = 0.0, l = 0.0;
        for (int e = 0; e < E; e++) {
            double P = A[(size_t)t * E + e] / S;
            if (P == 0.0) continue;
            double q = P * rPT[t] * rPE[e], r = q + eps;
            u += P / r * q;
            l -= P * log(r);
        }
        U[t] = u;
        Lrow[t] = l;
    }
    for (int e = threadIdx.x; e < E; e += MI_THREADS) {
        double v = 0.0;
        for (int t = 0; t < T; t++) {
            double P = A[(size_t)t * E + e] / S;
            if (P == 0.0) continue;
            double q = P * rPT[t] * rPE[e], r = q + eps;
            v += P / r * q;
        }
        V[e] = v;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < T * E; i += MI_THREADS) {
        int t = i / E, e = i % E;
        double P = A[i] / S;
        double q = P * rPT[t] * rPE[e], r = q + eps;
        double w = P == 0.0 ? 0.0 : P / r;
        double G = -log(r) - w * rPT[t] * rPE[e] + U[t] * rPT[t] + V[e] * rPE[e];
        dA[i] = (float)(weight * G / S);
    }
    if (threadIdx.x == 0) {
        double L = 0.0;
        for (int t = 0; t < T; t++) L += Lrow[t];
        *loss = (float)(weight * L);
    }
}

static void cuda_mi_loss(ms_backend *be, float *loss, float *dA, const float *A, const float *freq,
                         int T, int E, int K, float eps, float weight) {
    MS_ASSERT(T >= 1 && E >= 1 && K >= 1);
    size_t smem = (size_t)(3 * T + 2 * E) * sizeof(double);
    if (smem > 48 * 1024)
        ms_fatal("CUDA backend: mi_loss over %d tasks x %d experts needs %zu bytes of shared "
                 "memory (48 KiB available)",
                 T, E, smem);
    MS_LAUNCH(mi_loss_kernel, 1, MI_THREADS, smem, cuda_stream(be), loss, dA, A, freq, T, E, K, eps,
              weight);
}

void cuda_register_moe(ms_backend *be) {
    be->route = cuda_route;
    be->route_bwd = cuda_route_bwd;
    be->dispatch_plan = cuda_dispatch_plan;
    be->remap_experts = cuda_remap_experts;
    be->gather_rows = cuda_gather_rows;
    be->combine = cuda_combine;
    be->combine_bwd = cuda_combine_bwd;
    be->expert_gate_bwd = cuda_expert_gate_bwd;
    be->mi_accumulate = cuda_mi_accumulate;
    be->mi_loss = cuda_mi_loss;
}
