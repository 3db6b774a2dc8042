#include "batch.h"

#include <stdlib.h>
#include <string.h>

#include "../kernels/util.h"
#include "tasks.h"

void ms_batch_alloc(ms_batch *b, const ms_config *cfg, int B, int H, int W) {
    memset(b, 0, sizeof *b);
    size_t P = (size_t)H * W;
    b->B = B, b->H = H, b->W = W, b->T = cfg->data.tasks.n;
    b->images = ms_calloc((size_t)B * 3 * P, sizeof(float));
    b->sample = ms_calloc((size_t)B, sizeof(int64_t));
    for (int t = 0; t < b->T; t++) {
        const ms_task_def *d = ms_task_find(cfg->data.dataset, cfg->data.tasks.name[t]);
        MS_ASSERT(d);
        ms_target *g = &b->target[t];
        switch (d->target) {
        case MS_TARGET_DENSE:
            g->dense = ms_calloc((size_t)B * d->channels * P, sizeof(float));
            g->valid = ms_calloc((size_t)B * P, 1);
            break;
        case MS_TARGET_LABELS: g->labels = ms_calloc((size_t)B * P, sizeof(int32_t)); break;
        case MS_TARGET_BINARY: g->binary = ms_calloc((size_t)B * P, 1); break;
        case MS_TARGET_VECTOR: g->vector = ms_calloc((size_t)B * d->channels, sizeof(float)); break;
        }
    }
}

void ms_batch_free(ms_batch *b) {
    free(b->images);
    free(b->sample);
    for (int t = 0; t < b->T; t++) {
        free(b->target[t].dense), free(b->target[t].valid), free(b->target[t].labels);
        free(b->target[t].binary), free(b->target[t].vector);
    }
    memset(b, 0, sizeof *b);
}
