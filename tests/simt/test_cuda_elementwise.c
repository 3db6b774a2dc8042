/* The elementwise CUDA ops (kernels/cuda/elementwise.cu) run by the emulator against the CPU
 * ops, fp32 and bf16 activations, sizes that do not fill the last block, and aliased outputs.
 * Tolerances: harness.h. */
#include "harness.h"

#include <stdio.h>

#define DT(dt) ((dt) == MS_BF16 ? "bf16" : "fp32")

/* Random activations of be's precision (bf16-rounded for bf16, so the CPU sees the same). */
static float *acts(ms_backend *be, tu_rng *r, size_t n, double lo, double hi) {
    float *x = tu_floats(n);
    tu_fill(r, x, n, lo, hi);
    sim_round_like(be, x, n);
    return x;
}

Test(cuda_elementwise, add) {
    ms_backend *cpu = tu_cpu();
    size_t sizes[] = {1, 255, 257, 4099};
    for (int dt = 0; dt < 2; dt++)
        for (int s = 0; s < 4; s++) {
            ms_backend *be = sim_cuda(dt);
            tu_rng r = tu_seed(100 + s);
            size_t n = sizes[s];
            float *a = acts(be, &r, n, -3, 3), *b = acts(be, &r, n, -3, 3), *ref = tu_floats(n);
            cpu->add(cpu, ref, a, b, n);
            void *da = sim_act(be, a, n), *db = sim_act(be, b, n),
                 *dy = sim_garbage(be, n * be->act_size);
            char what[64];
            be->add(be, dy, da, db, n);
            snprintf(what, sizeof what, "add %s n %zu", DT(dt), n);
            sim_expect_close(what, sim_get_act(be, dy, n), ref, n, sim_tol(be));
            be->add(be, da, da, db, n); /* y aliases a */
            snprintf(what, sizeof what, "add in place %s n %zu", DT(dt), n);
            sim_expect_close(what, sim_get_act(be, da, n), ref, n, sim_tol(be));
            sim_free_all();
        }
}

Test(cuda_elementwise, add_row_and_sum_rows) {
    ms_backend *cpu = tu_cpu();
    int shapes[][2] = {{1, 1}, {7, 33}, {197, 96}, {300, 700}};
    for (int dt = 0; dt < 2; dt++)
        for (int s = 0; s < 4; s++) {
            ms_backend *be = sim_cuda(dt);
            tu_rng r = tu_seed(110 + s);
            int M = shapes[s][0], D = shapes[s][1];
            size_t n = (size_t)M * D;
            float *x = acts(be, &r, n, -2, 2), *v = tu_floats((size_t)D), *ref = tu_floats(n);
            tu_fill(&r, v, (size_t)D, -1, 1);
            cpu->add_row(cpu, ref, x, v, M, D);
            void *dx = sim_act(be, x, n);
            be->add_row(be, dx, dx, sim_f32(be, v, (size_t)D), M,
                        D); /* in place, as the model does */
            char what[64];
            snprintf(what, sizeof what, "add_row %s M %d D %d", DT(dt), M, D);
            sim_expect_close(what, sim_get_act(be, dx, n), ref, n, sim_tol(be));

            /* dv accumulates onto a non-zero start; the sum itself is double on both sides */
            float *dv = tu_floats((size_t)D);
            tu_fill(&r, dv, (size_t)D, -1, 1);
            float *ddv = sim_f32(be, dv, (size_t)D);
            cpu->sum_rows(cpu, dv, x, M, D);
            be->sum_rows(be, ddv, sim_act(be, x, n), M, D);
            snprintf(what, sizeof what, "sum_rows %s M %d D %d", DT(dt), M, D);
            sim_expect_close(what, sim_get_f32(be, ddv, (size_t)D), dv, (size_t)D, SIM_TOL_F32);
            sim_free_all();
        }
}

Test(cuda_elementwise, scale_f32) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(MS_F32);
    tu_rng r = tu_seed(120);
    size_t n = 1001;
    float *x = tu_floats(n);
    tu_fill(&r, x, n, -5, 5);
    float *dx = sim_f32(be, x, n);
    cpu->scale_f32(cpu, x, 0.37f, n);
    be->scale_f32(be, dx, 0.37f, n);
    tu_expect_equal("scale_f32", sim_get_f32(be, dx, n), x, n);
    sim_free_all();
}

Test(cuda_elementwise, gelu_and_backward) {
    ms_backend *cpu = tu_cpu();
    size_t sizes[] = {1, 300, 5000};
    for (int dt = 0; dt < 2; dt++)
        for (int s = 0; s < 3; s++) {
            ms_backend *be = sim_cuda(dt);
            tu_rng r = tu_seed(130 + s);
            size_t n = sizes[s];
            float *x = acts(be, &r, n, -9, 9), *dy = acts(be, &r, n, -1, 1);
            float *y = tu_floats(n), *dx = tu_floats(n);
            cpu->gelu(cpu, y, x, n);
            cpu->gelu_bwd(cpu, dx, dy, x, n);
            void *gx = sim_act(be, x, n), *gy = sim_garbage(be, n * be->act_size);
            void *gdy = sim_act(be, dy, n);
            be->gelu(be, gy, gx, n);
            be->gelu_bwd(be, gdy, gdy, gx, n); /* dx aliases dy */
            char what[64];
            snprintf(what, sizeof what, "gelu %s n %zu", DT(dt), n);
            sim_expect_close(what, sim_get_act(be, gy, n), y, n, sim_tol(be));
            snprintf(what, sizeof what, "gelu_bwd %s n %zu", DT(dt), n);
            sim_expect_close(what, sim_get_act(be, gdy, n), dx, n, sim_tol(be));
            sim_free_all();
        }
}

Test(cuda_elementwise, softmax_and_backward) {
    ms_backend *cpu = tu_cpu();
    int shapes[][2] = {{1, 1}, {3, 31}, {197, 197}, {10, 1000}};
    for (int dt = 0; dt < 2; dt++)
        for (int s = 0; s < 4; s++) {
            ms_backend *be = sim_cuda(dt);
            tu_rng r = tu_seed(140 + s);
            int M = shapes[s][0], N = shapes[s][1];
            size_t n = (size_t)M * N;
            float *x = acts(be, &r, n, -8, 8), *dy = acts(be, &r, n, -1, 1);
            float *y = tu_floats(n), *dx = tu_floats(n);
            cpu->softmax(cpu, y, x, M, N);
            void *gx = sim_act(be, x, n);
            be->softmax(be, gx, gx, M, N); /* in place */
            char what[64];
            snprintf(what, sizeof what, "softmax %s M %d N %d", DT(dt), M, N);
            sim_expect_close(what, sim_get_act(be, gx, n), y, n, sim_tol(be));
            /* the backward from the same y on both sides */
            sim_round_like(be, y, n);
            cpu->softmax_bwd(cpu, dx, dy, y, M, N);
            void *gdx = sim_garbage(be, n * be->act_size);
            be->softmax_bwd(be, gdx, sim_act(be, dy, n), sim_act(be, y, n), M, N);
            snprintf(what, sizeof what, "softmax_bwd %s M %d N %d", DT(dt), M, N);
            sim_expect_close(what, sim_get_act(be, gdx, n), dx, n, sim_tol(be));
            sim_free_all();
        }
}
