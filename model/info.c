/* The model summary that `modsquad info` prints (and `train` prints before it starts):
 * parameters (total and active per token per task), forward FLOPs per image per task, the MoE
 * layers and the memory plan. Everything comes from the model's own accounting, so the figures
 * are those of the network that would run. */
#include "info.h"

#include <stdio.h>
#include <string.h>


/* 21664896 -> "21,664,896" */
static const char *grouped(double x, char *buf, size_t cap) {
    char digits[32];
    snprintf(digits, sizeof digits, "%.0f", x);
    size_t n = strlen(digits), o = 0;
    for (size_t i = 0; i < n && o + 2 < cap; i++) {
        if (i && (n - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = digits[i];
    }
    buf[o] = 0;
    return buf;
}

static double mib(size_t bytes) { return bytes / 1048576.0; }

void ms_model_print_info(const ms_model *m, const ms_config *cfg, int batch, const char *act,
                         FILE *f) {
    const ms_model_config *mc = &cfg->model;
    int T = cfg->data.tasks.n, size = cfg->data.image_size;
    int N = 1 + (size / mc->patch) * (size / mc->patch);
    char a[32], b[32];
    fprintf(f, "model.arch %s: %d task%s, %dx%d images in %dx%d patches (%d tokens), D %d, "
               "depth %d\n",
            ms_arch_names[mc->arch], T, T == 1 ? "" : "s", size, size, mc->patch, mc->patch, N,
            mc->dim, mc->depth);

    int L = ms_model_moe_layers(m);
    if (L) {
        int n_attn = 0, n_mlp = 0;
        for (int l = 0; l < L; l++) ms_model_moe_info(m, l).attn ? n_attn++ : n_mlp++;
        fprintf(f, "MoE layers:");
        if (n_attn)
            fprintf(f, " %d attention (%d experts, top %d, head %d)", n_attn, mc->attn_experts,
                    mc->attn_topk, mc->attn_expert_dim);
        if (n_mlp)
            fprintf(f, "%s %d MLP (%d experts, top %d, hidden %d)", n_attn ? "," : "", n_mlp,
                    mc->mlp_experts, mc->mlp_topk, mc->expert_hidden);
        fprintf(f, "; router %s%s\n",
                mc->router == MS_ROUTER_SHARED_TASK_CONDITIONED ? "shared, task-conditioned"
                                                                : "per task",
                mc->noisy_gating ? ", noisy gating" : "");
    }

    ms_param_counts pc;
    ms_model_param_counts(m, &pc);
    fprintf(f, "\nparameters (trainable)       %10.2f M  %s\n", pc.total / 1e6,
            grouped(pc.total, a, sizeof a));
    fprintf(f, "  backbone                   %10.2f M  %s\n", pc.backbone / 1e6,
            grouped(pc.backbone, a, sizeof a));
    fprintf(f, "  heads                      %10.2f M  %s\n", pc.heads / 1e6,
            grouped(pc.heads, a, sizeof a));
    if (pc.weighting > 0)
        fprintf(f, "  uncertainty weighting      %10.0f    (awl.params)\n", pc.weighting);

    fprintf(f, "\nper task                     active params / token   forward GFLOPs / image\n");
    for (int t = 0; t < T; t++) {
        double flops = ms_model_flops(m, t);
        fprintf(f, "  %-26s %10.2f M %-12s %10.2f\n", cfg->data.tasks.name[t],
                pc.active[t] / 1e6, "", flops / 1e9);
    }
    fprintf(f, "  (FLOPs: GEMM multiply-adds x 2 with attention; backbone pass plus the task's "
               "head)\n");

    ms_memory_plan mp = ms_model_memory(m);
    fprintf(f, "\nmemory plan for %d image%s per step (%s activations)\n", batch,
            batch == 1 ? "" : "s", act);
    fprintf(f, "  parameters                 %10.1f MiB\n", mib(mp.params));
    fprintf(f, "  gradients                  %10.1f MiB\n", mib(mp.grads));
    fprintf(f, "  optimizer (AdamW m, v)     %10.1f MiB\n", mib(mp.optimizer));
    fprintf(f, "  activations                %10.1f MiB  %s bytes\n", mib(mp.activations),
            grouped((double)mp.activations, b, sizeof b));
    fprintf(f, "  total                      %10.1f MiB\n", mib(mp.total));
}
