/* Extraction of a task's standalone model (model/extract.h): choosing the experts, the config
 * of the extracted model, and its parameters taken from the full model's by name. */
#include "extract.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/util.h"

/* ---- which experts ------------------------------------------------------------------------ */

void ms_extract_usage(const int64_t *counts, int E, int K, double *usage) {
    int64_t total = 0;
    for (int e = 0; e < E; e++) total += counts[e];
    double tokens = (double)total / K;
    for (int e = 0; e < E; e++) usage[e] = total ? 100.0 * (double)counts[e] / tokens : 0.0;
}

int ms_extract_choose(const double *usage, int E, int K, double threshold, int16_t *kept) {
    MS_ASSERT(K >= 1 && K <= E);
    int n = 0;
    for (int e = 0; e < E; e++)
        if (usage[e] > threshold) n++;
    uint8_t keep[E]; /* [E] a few dozen flags */
    for (int e = 0; e < E; e++) keep[e] = n >= K && usage[e] > threshold;
    if (n < K) {
        /* the K most used; a strict > keeps the lower index first among equal usages */
        for (int k = 0; k < K; k++) {
            int best = -1;
            for (int e = 0; e < E; e++)
                if (!keep[e] && (best < 0 || usage[e] > usage[best])) best = e;
            keep[best] = 1;
        }
    }
    n = 0;
    for (int e = 0; e < E; e++)
        if (keep[e]) kept[n++] = (int16_t)e;
    return n;
}

/* ---- the config ----------------------------------------------------------------------------- */

int ms_extract_config(ms_config *out, const ms_config *src, int task, const ms_expert_sets *kept,
                      const char *name, ms_config_errors *errs) {
    MS_ASSERT(task >= 0 && task < src->data.tasks.n);
    /* The stored config plus two overrides, loaded like any config: the same resolution and
     * checks (model.task_weights keeps the task's own weight, the expert lists are checked
     * against the model). */
    char tasks[MS_NAME_MAX + 16];
    snprintf(tasks, sizeof tasks, "data.tasks=[%s]", src->data.tasks.name[task]);
    char *experts = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&experts, &len);
    if (!f) ms_fatal("out of memory writing model.kept_experts");
    fputs("model.kept_experts=[", f);
    for (int l = 0; l < kept->layers; l++) {
        int n;
        const int16_t *e = ms_expert_sets_layer(kept, l, &n);
        fputs(l ? ", [" : "[", f);
        for (int i = 0; i < n; i++) fprintf(f, "%s%d", i ? ", " : "", e[i]);
        fputc(']', f);
    }
    fputc(']', f);
    if (fclose(f) != 0) ms_fatal("out of memory writing model.kept_experts");
    const char *sets[2] = {tasks, experts};
    char *yaml = ms_config_to_yaml(src);
    int n = ms_config_load_text(out, name, yaml, strlen(yaml), 2, sets, errs);
    free(yaml);
    free(experts);
    return n;
}

/* ---- the parameters ----------------------------------------------------------------------- */

/* Where an extracted tensor comes from: a tensor of the full model, whole, or with only the
 * entries `sel` along dimension `dim` (the kept experts, the task's embedding row, its
 * uncertainty weight). */
typedef struct {
    char name[MS_TENSOR_NAME_MAX];
    int dim;             /* -1: the whole tensor */
    const int16_t *sel;  /* [n] indices along dim */
    int n;
} source;

/* name = prefix + rest -> out = with + rest; 1 when name starts with prefix. */
static int swap_prefix(char *out, const char *name, const char *prefix, const char *with) {
    size_t n = strlen(prefix);
    if (strncmp(name, prefix, n) != 0) return 0;
    int w = snprintf(out, MS_TENSOR_NAME_MAX, "%s%s", with, name + n);
    MS_ASSERT(w > 0 && w < MS_TENSOR_NAME_MAX);
    return 1;
}

/* The source of extracted tensor `name`: task-indexed names from index 0 back to `task`, the
 * expert tensors of each MoE layer to the kept experts of the full tensor. */
static void source_of(const char *name, int task, const ms_model *ext, const int16_t *task16,
                      source *s) {
    snprintf(s->name, sizeof s->name, "%s", name);
    s->dim = -1, s->sel = NULL, s->n = 0;
    char with[48];
    snprintf(with, sizeof with, "task_heads.%d.", task);
    if (swap_prefix(s->name, name, "task_heads.0.", with)) return;
    snprintf(with, sizeof with, "task_blocks.%d.", task);
    if (swap_prefix(s->name, name, "task_blocks.0.", with)) return;
    const char *gate = strstr(name, ".f_gate.0.");
    if (gate) { /* a per-task router: blocks.{i}.mlp.f_gate.{t}.0.weight */
        int w = snprintf(s->name, sizeof s->name, "%.*s.f_gate.%d.%s", (int)(gate - name), name,
                         task, gate + strlen(".f_gate.0."));
        MS_ASSERT(w > 0 && w < (int)sizeof s->name);
        return;
    }
    if (!strcmp(name, "task_embedding")) { /* (1, T, D) -> (1, 1, D) */
        s->dim = 1, s->sel = task16, s->n = 1;
        return;
    }
    if (!strcmp(name, "awl.params")) { /* (T) -> (1) */
        s->dim = 0, s->sel = task16, s->n = 1;
        return;
    }
    static const char *const expert_tensors[] = {"experts.w", "experts.b", "output_experts.w",
                                                 "output_experts.b"};
    for (int l = 0; l < ms_model_moe_layers(ext); l++) {
        ms_moe_info mi = ms_model_moe_info(ext, l);
        if (!mi.kept) continue;
        char prefix[64];
        snprintf(prefix, sizeof prefix, "blocks.%d.%s", mi.block, mi.attn ? "attn.q_proj." : "mlp.");
        size_t n = strlen(prefix);
        if (strncmp(name, prefix, n) != 0) continue;
        for (int i = 0; i < 4; i++)
            if (!strcmp(name + n, expert_tensors[i])) {
                s->dim = 0, s->sel = mi.kept, s->n = mi.E_keep;
                return;
            }
    }
}

int ms_extract_params(const ms_param_table *src, const float *src_data, int task,
                      const ms_model *ext, float *ext_data, char *err, size_t cap) {
    const ms_param_table *pt = ms_model_params(ext);
    int16_t task16 = (int16_t)task;
    memset(ext_data, 0, pt->total * sizeof(float)); /* alignment padding */
    for (int i = 0; i < pt->n; i++) {
        const ms_tensor_info *dst = &pt->t[i];
        source s;
        source_of(dst->name, task, ext, &task16, &s);
        int j = ms_params_find(src, s.name);
        char a[64], b[64];
        if (j < 0) {
            snprintf(err, cap, "the full model has no tensor %s (the extracted model's %s comes "
                     "from it)", s.name, dst->name);
            return -1;
        }
        const ms_tensor_info *from = &src->t[j];
        int fits = from->ndim == dst->ndim;
        for (int d = 0; fits && d < dst->ndim; d++)
            fits = d == s.dim ? dst->shape[d] == s.n : dst->shape[d] == from->shape[d];
        for (int k = 0; fits && k < s.n; k++) fits = s.sel[k] < from->shape[s.dim];
        if (!fits) {
            snprintf(err, cap, "the full model's %s %s does not give the extracted model's %s %s",
                     s.name, ms_shape_str(from, a, sizeof a), dst->name,
                     ms_shape_str(dst, b, sizeof b));
            return -1;
        }
        const float *x = src_data + from->offset;
        float *y = ext_data + dst->offset;
        if (s.dim < 0) {
            memcpy(y, x, dst->numel * sizeof(float));
            continue;
        }
        /* view both as [outer, extent, inner] around the selected dimension */
        size_t outer = 1, inner = 1;
        for (int d = 0; d < s.dim; d++) outer *= (size_t)dst->shape[d];
        for (int d = s.dim + 1; d < dst->ndim; d++) inner *= (size_t)dst->shape[d];
        size_t extent = (size_t)from->shape[s.dim];
        for (size_t o = 0; o < outer; o++)
            for (int k = 0; k < s.n; k++)
                memcpy(y + (o * s.n + k) * inner, x + (o * extent + s.sel[k]) * inner,
                       inner * sizeof(float));
    }
    return 0;
}
