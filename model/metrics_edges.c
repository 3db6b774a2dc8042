/* Edge detection odsF (PASCAL-Context), the BSDS boundary benchmark as seism runs it for
 * Multi-Task-Learning-PyTorch: at 99 thresholds the predicted boundary pixels are matched
 * one-to-one with the ground-truth boundary pixels within maxDist (BSDS match.cc: offsets with
 * u^2 + v^2 <= maxDist^2, maxDist = edge_max_dist * image diagonal), and the matched / total
 * counts are pooled over the dataset (seism gather_measure.m, general_ods.m).
 *
 * BSDS solves a min-cost assignment in which leaving a pixel unmatched costs 100 * maxDist, so
 * its matching has the largest possible number of pairs; only that number enters the counts.
 * We compute it exactly as a maximum bipartite matching: ground-truth pixels on one side,
 * predicted pixels on the other, an edge for every pair within the radius.
 *
 * Thresholds are nested (a pixel with p >= t is also predicted at every lower t), so the graph
 * of a lower threshold only ADDS predicted pixels and their edges. We sweep the thresholds from
 * the highest down, keep the matching and augment it (Hopcroft-Karp phases) after each step:
 * a maximum matching of the smaller graph is a valid start for the larger one. Each ground-truth
 * pixel keeps its candidate edges sorted by the threshold at which they appear, so the edges
 * active at threshold k are a prefix of its list. Building the lists costs one scan of the
 * disc around every ground-truth pixel; the matching touches only those candidate edges. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/util.h"
#include "metrics_internal.h"

#define NK MS_EDGE_THRESHOLDS
#define INF_DIST 0x3fffffff

/* Threshold k (0-based) is (k + 1) / 100: linspace(1/(n+1), 1 - 1/(n+1), n) of BSDS for 99. */
static double edge_threshold(int k) { return (k + 1) / 100.0; }

/* How many thresholds p passes (p >= t), in [0, NK]: p is predicted at threshold k iff
 * level > k. */
static int edge_level(double p) {
    if (!(p >= edge_threshold(0))) return 0; /* also NaN */
    int g = (int)(p * 100.0);
    if (g > NK) g = NK;
    while (g > 0 && !(p >= edge_threshold(g - 1))) g--;
    while (g < NK && p >= edge_threshold(g)) g++;
    return g;
}

typedef struct {
    int dy, dx, d2;
} offset;

static int offset_cmp(const void *pa, const void *pb) {
    const offset *a = pa, *b = pb;
    if (a->d2 != b->d2) return a->d2 - b->d2;
    if (a->dy != b->dy) return a->dy - b->dy;
    return a->dx - b->dx;
}

/* The disc of the matching radius, nearest offsets first. Returns the count; *out is malloc'd. */
static int disc_offsets(double max_dist, offset **out) {
    const int R = (int)ceil(max_dist);
    const double r2 = max_dist * max_dist;
    offset *o = ms_malloc((size_t)(2 * R + 1) * (2 * R + 1) * sizeof *o);
    int n = 0;
    for (int v = -R; v <= R; v++)
        for (int u = -R; u <= R; u++)
            if (u * u + v * v <= r2) o[n++] = (offset){v, u, u * u + v * v};
    qsort(o, n, sizeof *o, offset_cmp);
    *out = o;
    return n;
}

/* The bipartite graph of one image and its matching. G = ground-truth pixels, E = candidate
 * edges. */
typedef struct {
    int G;
    int *start;       /* [G + 1] edges of truth pixel g: start[g] .. start[g + 1] - 1 */
    int *to;          /* [E] predicted pixel index (into the image) */
    uint8_t *lvl;     /* [E] level of that pixel: the edge exists at thresholds k < lvl */
    int *active;      /* [G] edges of g active at the current threshold (a prefix) */
    int *mate_g;      /* [G] predicted pixel matched to g, or -1 */
    int *mate_p;      /* [P] truth pixel matched to predicted pixel p, or -1 */
    int *dist;        /* [G] BFS layer of Hopcroft-Karp */
    int *iter;        /* [G] next edge to try in the DFS */
    int *queue;       /* [G] BFS queue, reused as the DFS stack */
} graph;

/* Layers from the free truth pixels along alternating paths; 1 when a free predicted pixel is
 * reachable, i.e. the matching can still grow. */
static int hk_bfs(graph *g) {
    int head = 0, tail = 0, found = 0;
    for (int i = 0; i < g->G; i++) {
        if (g->mate_g[i] < 0 && g->active[i] > 0) g->dist[i] = 0, g->queue[tail++] = i;
        else g->dist[i] = INF_DIST;
    }
    while (head < tail) {
        const int i = g->queue[head++];
        for (int e = g->start[i]; e < g->start[i] + g->active[i]; e++) {
            const int j = g->mate_p[g->to[e]];
            if (j < 0) found = 1;
            else if (g->dist[j] == INF_DIST) g->dist[j] = g->dist[i] + 1, g->queue[tail++] = j;
        }
    }
    return found;
}

/* Augments along vertex-disjoint layered paths from every free truth pixel (iterative DFS:
 * paths along a long contour would overflow a recursion). Returns the number of new pairs. */
static int hk_dfs(graph *g) {
    int *stack = g->queue, added = 0;
    for (int i = 0; i < g->G; i++) g->iter[i] = 0;
    for (int root = 0; root < g->G; root++) {
        if (g->mate_g[root] >= 0 || g->dist[root] != 0) continue;
        int sp = 0;
        stack[sp++] = root;
        while (sp > 0) {
            const int i = stack[sp - 1];
            if (g->iter[i] == g->active[i]) { /* dead end: never try i again in this phase */
                g->dist[i] = INF_DIST;
                if (--sp > 0) g->iter[stack[sp - 1]]++;
                continue;
            }
            const int e = g->start[i] + g->iter[i];
            const int j = g->mate_p[g->to[e]];
            if (j < 0) { /* free predicted pixel: flip the whole path on the stack */
                for (int s = sp - 1; s >= 0; s--) {
                    const int k = stack[s], q = g->to[g->start[k] + g->iter[k]];
                    g->mate_g[k] = q, g->mate_p[q] = k;
                }
                added++;
                break;
            }
            if (g->dist[j] == g->dist[i] + 1) stack[sp++] = j;
            else g->iter[i]++;
        }
    }
    return added;
}

/* Pairs each free truth pixel with a free active neighbour, nearest first: most pixels match
 * this way and Hopcroft-Karp only has to repair the rest. */
static int greedy(graph *g) {
    int added = 0;
    for (int i = 0; i < g->G; i++) {
        if (g->mate_g[i] >= 0) continue;
        for (int e = g->start[i]; e < g->start[i] + g->active[i]; e++)
            if (g->mate_p[g->to[e]] < 0) {
                g->mate_g[i] = g->to[e], g->mate_p[g->to[e]] = i, added++;
                break;
            }
    }
    return added;
}

/* The candidate edges of the G truth pixels (y == 1) to the predicted pixels (level > 0)
 * within max_dist pixels, each list sorted by level, highest first. */
static void build_graph(graph *g, const uint8_t *level, const uint8_t *y, int H, int W,
                        double max_dist) {
    offset *off;
    const int n_off = disc_offsets(max_dist, &off), P = H * W;
    int *truth = ms_malloc((size_t)g->G * sizeof(int)); /* [G] pixel of each truth pixel */
    g->start = ms_malloc((size_t)(g->G + 1) * sizeof(int));
    int G = 0;
    size_t E = 0;
    for (int p = 0; p < P; p++) {
        if (y[p] == 0 || y[p] == 255) continue;
        const int py = p / W, px = p % W;
        g->start[G] = (int)E;
        truth[G++] = p;
        for (int o = 0; o < n_off; o++) {
            const int qy = py + off[o].dy, qx = px + off[o].dx;
            if (qy >= 0 && qy < H && qx >= 0 && qx < W && level[qy * W + qx]) E++;
        }
    }
    MS_ASSERT(G == g->G);
    g->start[G] = (int)E;
    g->to = ms_malloc((E + 1) * sizeof(int));
    g->lvl = ms_malloc(E + 1);
    int *near = ms_malloc((size_t)n_off * sizeof(int)); /* [n_off] one truth pixel's candidates */
    for (int i = 0; i < G; i++) {
        const int py = truth[i] / W, px = truth[i] % W;
        int n = 0, lo = NK, hi = 1;
        int64_t bucket[NK + 2] = {0}; /* [level] candidates per level, then their first slot */
        for (int o = 0; o < n_off; o++) {
            const int qy = py + off[o].dy, qx = px + off[o].dx;
            if (qy < 0 || qy >= H || qx < 0 || qx >= W || !level[qy * W + qx]) continue;
            const int l = level[qy * W + qx];
            near[n++] = qy * W + qx, bucket[l]++;
            lo = l < lo ? l : lo, hi = l > hi ? l : hi;
        }
        /* stable counting sort, highest level first: equal levels stay nearest first */
        int64_t slot = g->start[i];
        for (int l = hi; l >= lo; l--) {
            const int64_t c = bucket[l];
            bucket[l] = slot, slot += c;
        }
        for (int k = 0; k < n; k++) {
            const int64_t e = bucket[level[near[k]]]++;
            g->to[e] = near[k], g->lvl[e] = level[near[k]];
        }
    }
    free(near), free(off), free(truth);
    g->active = ms_calloc((size_t)G, sizeof(int));
    g->mate_g = ms_malloc((size_t)G * sizeof(int));
    g->mate_p = ms_malloc((size_t)P * sizeof(int));
    g->dist = ms_malloc((size_t)G * sizeof(int));
    g->iter = ms_malloc((size_t)G * sizeof(int));
    g->queue = ms_malloc((size_t)G * sizeof(int));
    for (int i = 0; i < G; i++) g->mate_g[i] = -1;
    for (int p = 0; p < P; p++) g->mate_p[p] = -1;
}

static void free_graph(graph *g) {
    free(g->start), free(g->to), free(g->lvl), free(g->active), free(g->mate_g);
    free(g->mate_p), free(g->dist), free(g->iter), free(g->queue);
}

/* Maximum matching sizes at every threshold, from the highest down: matched[k] += size. */
static void sweep(graph *g, int64_t *matched_at) {
    int64_t matched = 0;
    for (int k = NK - 1; k >= 0; k--) {
        int grown = 0;
        for (int i = 0; i < g->G; i++) {
            const int deg = g->start[i + 1] - g->start[i];
            while (g->active[i] < deg && g->lvl[g->start[i] + g->active[i]] > k) g->active[i]++, grown = 1;
        }
        if (grown) { /* without new edges the matching is still maximum */
            matched += greedy(g);
            while (hk_bfs(g)) matched += hk_dfs(g);
        }
        matched_at[k] += matched;
    }
}

static void edges_image(const ms_metric_acc *a, const float *pred, const ms_target *t, int b,
                        int H, int W, double *sums, int64_t *counts) {
    (void)sums;
    const int P = H * W;
    const float *x = pred + (size_t)b * P;        /* [P] logits */
    const uint8_t *y = t->binary + (size_t)b * P; /* [P] 1 = boundary, 255 ignored */
    int64_t *cnt_p = counts, *sum_p = counts + NK, *cnt_r = counts + 2 * NK, *sum_r = counts + 3 * NK;

    uint8_t *level = ms_malloc((size_t)P); /* [P] 0 for ignored pixels */
    int64_t per_level[NK + 1] = {0};
    int G = 0;
    for (int p = 0; p < P; p++) {
        level[p] = y[p] == 255 ? 0 : (uint8_t)edge_level(ms_sigmoid(x[p]));
        per_level[level[p]]++;
        G += y[p] != 0 && y[p] != 255;
    }
    int64_t predicted = 0;
    for (int k = NK - 1; k >= 0; k--) {
        predicted += per_level[k + 1];
        sum_p[k] += predicted;
        sum_r[k] += G;
    }
    if (G > 0 && predicted > 0) { /* otherwise nothing matches at any threshold */
        graph g = {.G = G};
        build_graph(&g, level, y, H, W, a->opt.edge_max_dist * sqrt((double)H * H + (double)W * W));
        int64_t matched[NK] = {0};
        sweep(&g, matched);
        for (int k = 0; k < NK; k++) cnt_p[k] += matched[k], cnt_r[k] += matched[k];
        free_graph(&g);
    }
    free(level);
}

/* Precision and recall of one threshold's pooled counts, with seism's conventions when a
 * total is zero (gather_measure.m). */
static void pr(const int64_t *c, int k, double *prec, double *rec) {
    const int64_t cnt_p = c[k], sum_p = c[NK + k], cnt_r = c[2 * NK + k], sum_r = c[3 * NK + k];
    if (sum_r == 0) *rec = 1, *prec = 0;
    else if (sum_p == 0) *rec = 0, *prec = 1;
    else *rec = (double)cnt_r / sum_r, *prec = (double)cnt_p / sum_p;
}

static void edges_result(const ms_metric_acc *a, ms_metric_result *r) {
    int best = 0;
    double best_f = -1, best_p = NAN, best_r = NAN;
    for (int k = 0; k < NK; k++) {
        double p, rc;
        pr(a->counts, k, &p, &rc);
        const double f = p + rc == 0 ? 0 : 2 * p * rc / (p + rc);
        if (f > best_f) best_f = f, best = k, best_p = p, best_r = rc; /* first (lowest) on ties */
    }
    /* NaN until some boundary pixel, true or predicted, has been seen */
    const int any = a->counts[3 * NK] + a->counts[NK] > 0;
    ms_metric_put(r, "odsF", any ? 100 * best_f : NAN);
    ms_metric_put(r, "ods_threshold", any ? edge_threshold(best) : NAN);
    ms_metric_put(r, "ods_precision", any ? 100 * best_p : NAN);
    ms_metric_put(r, "ods_recall", any ? 100 * best_r : NAN);
}

void ms_metric_setup_edges(ms_metric_acc *a) {
    MS_ASSERT(a->def->target == MS_TARGET_BINARY && a->def->channels == 1);
    MS_ASSERT(a->opt.edge_max_dist >= 0);
    a->n_sums = 0;
    a->n_counts = 4 * NK;
    a->image = edges_image, a->result = edges_result;
}
