/* The CUDA optimizer ops (kernels/cuda/optim.cu) run by the emulator against the CPU ops: AdamW
 * over several steps (bias correction, with and without weight decay, sizes that do not fill a
 * block) and the sum of squares (empty, one value, a grid that loops, determinism).
 *
 * Tolerances: both sides evaluate AdamW's fp32 formula in the same order with the same
 * coefficients; they may differ in the last bit where a compiler contracts a multiply-add into
 * an fma, so p, m and v are compared at SIM_TOL_F32 (harness.h). sumsq sums in double on both
 * sides in different orders and rounds once to fp32: SIM_TOL_F32 too. */
#include "harness.h"

#include <stdio.h>

static void check_adamw(size_t n, float weight_decay, int steps, uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(MS_F32);
    tu_rng r = tu_seed(seed);
    float *p = tu_floats(n), *m = tu_floats(n), *v = tu_floats(n), *g = tu_floats(n);
    tu_fill(&r, p, n, -1, 1);
    float *dp = sim_f32(be, p, n), *dm = sim_f32(be, m, n), *dv = sim_f32(be, v, n);
    float *dg = sim_garbage(be, n * 4);
    const float lr = 1.5e-3f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-4f;
    for (int step = 1; step <= steps; step++) {
        tu_fill_normal(&r, g, n, 0.1); /* a fresh gradient each step, the same on both sides */
        be->upload(be, dg, g, n * 4);
        cpu->adamw(cpu, p, g, m, v, n, lr, beta1, beta2, eps, weight_decay, step);
        be->adamw(be, dp, dg, dm, dv, n, lr, beta1, beta2, eps, weight_decay, step);
    }
    char what[96];
    snprintf(what, sizeof what, "adamw n %zu wd %g after %d steps: p", n, (double)weight_decay,
             steps);
    sim_expect_close(what, sim_get_f32(be, dp, n), p, n, SIM_TOL_F32);
    snprintf(what, sizeof what, "adamw n %zu wd %g after %d steps: m", n, (double)weight_decay,
             steps);
    sim_expect_close(what, sim_get_f32(be, dm, n), m, n, SIM_TOL_F32);
    snprintf(what, sizeof what, "adamw n %zu wd %g after %d steps: v", n, (double)weight_decay,
             steps);
    sim_expect_close(what, sim_get_f32(be, dv, n), v, n, SIM_TOL_F32);
    sim_free_all();
}

Test(cuda_optim, adamw) {
    check_adamw(1, 0.05f, 1, 1);  /* one value, the first step's bias correction */
    check_adamw(257, 0.0f, 3, 2); /* no decay (1-D parameters), a partial block */
    check_adamw(5000, 0.05f, 4, 3);
}

/* A zero gradient with zero moments leaves p * (1 - lr wd) exactly: the update is 0 / (0 + eps). */
Test(cuda_optim, adamw_zero_gradient_only_decays) {
    ms_backend *be = sim_cuda(MS_F32);
    size_t n = 300;
    float *p = tu_floats(n), *zeros = tu_floats(n), *want = tu_floats(n);
    tu_rng r = tu_seed(10);
    tu_fill(&r, p, n, -2, 2);
    const float lr = 0.01f, wd = 0.05f, decay = (float)(1.0 - (double)lr * wd);
    for (size_t i = 0; i < n; i++) want[i] = p[i] * decay;
    float *dp = sim_f32(be, p, n), *dm = sim_f32(be, zeros, n), *dv = sim_f32(be, zeros, n);
    be->adamw(be, dp, sim_f32(be, zeros, n), dm, dv, n, lr, 0.9f, 0.999f, 1e-8f, wd, 1);
    tu_expect_equal("adamw, zero gradient: p", sim_get_f32(be, dp, n), want, n);
    tu_expect_equal("adamw, zero gradient: m", sim_get_f32(be, dm, n), zeros, n);
    sim_free_all();
}

static float check_sumsq(size_t n, uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(MS_F32);
    tu_rng r = tu_seed(seed);
    float *x = tu_floats(n ? n : 1), want;
    tu_fill_normal(&r, x, n, 3.0);
    cpu->sumsq(cpu, &want, x, n);
    float *out = sim_garbage(be, 4);
    be->sumsq(be, out, sim_f32(be, x, n ? n : 1), n);
    float got = *sim_get_f32(be, out, 1);
    char what[64];
    snprintf(what, sizeof what, "sumsq n %zu", n);
    sim_expect_close(what, &got, &want, 1, SIM_TOL_F32);
    sim_free_all();
    return got;
}

Test(cuda_optim, sumsq) {
    cr_assert(check_sumsq(0, 20) == 0.0f, "sumsq of nothing is 0");
    check_sumsq(1, 21);
    check_sumsq(255, 22);
    float a = check_sumsq(100003, 23), b = check_sumsq(100003, 23);
    tu_expect_equal("sumsq twice", &b, &a, 1); /* a fixed grid and summation order */
}

/* 300000 values need more than SUMSQ_MAX_BLOCKS x 256 threads: the grid-stride loop turns more
 * than once. */
Test(cuda_optim, sumsq_grid_that_loops) { check_sumsq(300000, 30); }
