/* The CPU backend: memory is host memory, ops are C + OpenMP + OpenBLAS. */
#include "cpu.h"
#include "../util.h"

#include <stdlib.h>
#include <string.h>

static void *cpu_alloc(ms_backend *be, size_t bytes) {
    (void)be;
    void *p = NULL;
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, rounded ? rounded : 64) != 0) return NULL;
    return p;
}

static void cpu_free(ms_backend *be, void *p) {
    (void)be;
    free(p);
}

static void cpu_memcpy(ms_backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    if (bytes) memmove(dst, src, bytes);
}

static void cpu_zero(ms_backend *be, void *dst, size_t bytes) {
    (void)be;
    if (bytes) memset(dst, 0, bytes);
}

static void cpu_upload_act(ms_backend *be, ms_act *dst, const float *src, size_t n) {
    cpu_memcpy(be, dst, src, n * sizeof(float));
}

static void cpu_download_act(ms_backend *be, float *dst, const ms_act *src, size_t n) {
    cpu_memcpy(be, dst, src, n * sizeof(float));
}

static void cpu_synchronize(ms_backend *be) { (void)be; }

static void cpu_destroy(ms_backend *be) { free(be); }

ms_backend *ms_backend_cpu_create(int threads) {
    ms_backend *be = ms_calloc(1, sizeof *be);
    be->name = "cpu";
    be->act_dtype = MS_F32;
    be->act_size = sizeof(float);
    if (threads > 0) omp_set_num_threads(threads);
    be->threads = omp_get_max_threads();
    be->alloc = cpu_alloc;
    be->free = cpu_free;
    be->upload = cpu_memcpy;
    be->download = cpu_memcpy;
    be->zero = cpu_zero;
    be->copy = cpu_memcpy;
    be->upload_act = cpu_upload_act;
    be->download_act = cpu_download_act;
    be->synchronize = cpu_synchronize;
    be->destroy = cpu_destroy;
    cpu_register_elementwise(be);
    cpu_register_tokens(be);
    cpu_register_linear(be);
    cpu_register_attention(be);
    cpu_register_moe(be);
    cpu_register_losses(be);
    cpu_register_conv(be);
    cpu_register_optimizer(be);
    return be;
}
