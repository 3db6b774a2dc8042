/* The conv head of the CUDA backend (kernels/cuda/conv.cu, convolutions through dnn.cu and the
 * emulator's cuDNN stand-in) against the CPU ops: conv2d with k = 1, 3 and 5, odd sizes, a 1 x 1
 * image, B = 1, bias or none, the backward's accumulate semantics (dw, db +=; dx written or
 * skipped); BatchNorm training (batch statistics, saved mean / rstd, running statistics with
 * the unbiased variance, the biased one for a single value), evaluation and backward (dgamma,
 * dbeta +=; dx written or skipped), including channels split into several reduction slices and
 * a large mean; ReLU; bilinear x2 upsampling and its gather backward. Then the convolution
 * algorithms cuDNN was asked to run (deterministic only, no TF32 in fp32), the plan table
 * overflowing, and repeatability.
 *
 * Tolerances (harness.h): y, dx and BatchNorm outputs use sim_tol. With bf16 activations the
 * CUDA convolution also rounds its weights to bf16, and its filter gradient is bf16 before it is
 * added to the fp32 buffer (conv.cu), so dw has the bf16 tolerance; bias, gamma and beta
 * gradients and the BatchNorm statistics are double sums of the same (rounded) inputs on both
 * sides and keep the fp32 one. */
#include "harness.h"

#include <stdio.h>

/* Emulator control (tests/simt/simt_cudnn.h, C++ only). */
struct simt_cudnn_stats {
    unsigned long runs, nondeterministic_runs, tf32_runs;
};
void simt_cudnn_get_stats(struct simt_cudnn_stats *stats);

#define DT(dt) ((dt) == MS_BF16 ? "bf16" : "fp32")

static float *rnd(tu_rng *r, size_t n, double lo, double hi) {
    float *x = tu_floats(n);
    tu_fill(r, x, n, lo, hi);
    return x;
}

static float *copy_of(const float *x, size_t n) {
    float *c = tu_floats(n);
    for (size_t i = 0; i < n; i++) c[i] = x[i];
    return c;
}

/* ---- conv2d ---------------------------------------------------------------------------------- */

static void check_conv(ms_dtype dt, int B, int Ci, int H, int W, int Co, int k, int bias,
                       uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(dt);
    tu_rng r = tu_seed(seed);
    size_t P = (size_t)H * W, nx = (size_t)B * Ci * P, ny = (size_t)B * Co * P;
    size_t nw = (size_t)Co * Ci * k * k, ncol = (size_t)Ci * k * k * P;
    float *x = rnd(&r, nx, -1, 1), *w = rnd(&r, nw, -0.5, 0.5), *b = rnd(&r, (size_t)Co, -1, 1);
    sim_round_like(be, x, nx);
    float *col = tu_floats(ncol), *y = tu_floats(ny);
    cpu->conv2d(cpu, y, x, w, bias ? b : NULL, B, Ci, H, W, Co, k, col);
    void *gx = sim_act(be, x, nx), *gy = sim_garbage(be, ny * be->act_size);
    void *gcol = sim_garbage(be, ncol * be->act_size);
    float *gw = sim_f32(be, w, nw);
    be->conv2d(be, gy, gx, gw, bias ? sim_f32(be, b, (size_t)Co) : NULL, B, Ci, H, W, Co, k, gcol);
    char what[128];
    snprintf(what, sizeof what, "conv2d %s x[%d, %d, %d, %d] Co %d k %d bias %d", DT(dt), B, Ci, H,
             W, Co, k, bias);
    sim_expect_close(what, sim_get_act(be, gy, ny), y, ny, sim_tol(be));

    /* backward onto non-zero gradient starts; dx starts as garbage (it is written) */
    float *dy = rnd(&r, ny, -1, 1), *dx = tu_floats(nx);
    float *dw = rnd(&r, nw, -1, 1), *db = rnd(&r, (size_t)Co, -1, 1);
    sim_round_like(be, dy, ny);
    void *gdy = sim_act(be, dy, ny), *gdx = sim_garbage(be, nx * be->act_size);
    float *gdw = sim_f32(be, dw, nw), *gdb = sim_f32(be, db, (size_t)Co);
    cpu->conv2d_bwd(cpu, dx, dw, db, dy, x, w, B, Ci, H, W, Co, k, col);
    be->conv2d_bwd(be, gdx, gdw, gdb, gdy, gx, gw, B, Ci, H, W, Co, k, gcol);
    double tol_dw = dt == MS_BF16 ? SIM_TOL_BF16 : SIM_TOL_F32;
    snprintf(what, sizeof what, "conv2d_bwd %s x[%d, %d, %d, %d] Co %d k %d: dx", DT(dt), B, Ci, H,
             W, Co, k);
    sim_expect_close(what, sim_get_act(be, gdx, nx), dx, nx, sim_tol(be));
    snprintf(what, sizeof what, "conv2d_bwd %s x[%d, %d, %d, %d] Co %d k %d: dw", DT(dt), B, Ci, H,
             W, Co, k);
    sim_expect_close(what, sim_get_f32(be, gdw, nw), dw, nw, tol_dw);
    snprintf(what, sizeof what, "conv2d_bwd %s x[%d, %d, %d, %d] Co %d k %d: db", DT(dt), B, Ci, H,
             W, Co, k);
    sim_expect_close(what, sim_get_f32(be, gdb, (size_t)Co), db, (size_t)Co, SIM_TOL_F32);

    /* the first layer of a head: no dx, and a conv without bias: no db */
    float *dw2 = rnd(&r, nw, -1, 1);
    float *gdw2 = sim_f32(be, dw2, nw);
    cpu->conv2d_bwd(cpu, NULL, dw2, NULL, dy, x, w, B, Ci, H, W, Co, k, col);
    be->conv2d_bwd(be, NULL, gdw2, NULL, gdy, gx, gw, B, Ci, H, W, Co, k, gcol);
    snprintf(what, sizeof what, "conv2d_bwd %s x[%d, %d, %d, %d] Co %d k %d: dw only", DT(dt), B,
             Ci, H, W, Co, k);
    sim_expect_close(what, sim_get_f32(be, gdw2, nw), dw2, nw, tol_dw);
    sim_free_all();
}

static void conv_cases(ms_dtype dt) {
    check_conv(dt, 1, 1, 1, 1, 1, 1, 1, 400); /* every size 1 */
    check_conv(dt, 1, 2, 1, 1, 3, 3, 1, 401); /* a 1 x 1 image: only the centre tap is inside */
    check_conv(dt, 2, 5, 7, 9, 6, 3, 1, 402); /* odd H, W */
    check_conv(dt, 1, 8, 5, 3, 4, 1, 1, 403); /* the 1 x 1 classifier */
    check_conv(dt, 3, 3, 6, 4, 5, 3, 0, 404); /* no bias */
    check_conv(dt, 1, 2, 3, 2, 3, 5, 1, 405); /* kernel larger than the image */
    check_conv(dt, 2, 16, 8, 8, 12, 3, 1, 406);
}

Test(cuda_conv, conv2d_fp32) { conv_cases(MS_F32); }

Test(cuda_conv, conv2d_bf16) { conv_cases(MS_BF16); }

/* ---- BatchNorm ------------------------------------------------------------------------------- */

static void check_bn(ms_dtype dt, int B, int C, int P, double offset, uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(dt);
    tu_rng r = tu_seed(seed);
    size_t n = (size_t)B * C * P, c = (size_t)C;
    const float eps = 1e-5f, momentum = 0.1f;
    float *x = rnd(&r, n, offset - 2, offset + 2);
    sim_round_like(be, x, n);
    float *gamma = rnd(&r, c, 0.5, 1.5), *beta = rnd(&r, c, -1, 1);
    float *rmean = rnd(&r, c, -1, 1), *rvar = rnd(&r, c, 0.5, 2);
    float *y = tu_floats(n), *mean = tu_floats(c), *rstd = tu_floats(c);
    float *rmean_c = copy_of(rmean, c), *rvar_c = copy_of(rvar, c);
    cpu->batchnorm_train(cpu, y, mean, rstd, rmean_c, rvar_c, x, gamma, beta, B, C, P, eps,
                         momentum);

    void *gx = sim_act(be, x, n), *gy = sim_garbage(be, n * be->act_size);
    float *gmean = sim_garbage(be, c * sizeof(float)), *grstd = sim_garbage(be, c * sizeof(float));
    float *grmean = sim_f32(be, rmean, c), *grvar = sim_f32(be, rvar, c);
    float *ggamma = sim_f32(be, gamma, c), *gbeta = sim_f32(be, beta, c);
    be->batchnorm_train(be, gy, gmean, grstd, grmean, grvar, gx, ggamma, gbeta, B, C, P, eps,
                        momentum);
    char what[128];
#define BN_WHAT(part)                                                                              \
    snprintf(what, sizeof what, "batchnorm %s B %d C %d P %d offset %g: %s", DT(dt), B, C, P,      \
             offset, part)
    BN_WHAT("train y");
    sim_expect_close(what, sim_get_act(be, gy, n), y, n, sim_tol(be));
    BN_WHAT("mean");
    sim_expect_close(what, sim_get_f32(be, gmean, c), mean, c, SIM_TOL_F32);
    BN_WHAT("rstd");
    sim_expect_close(what, sim_get_f32(be, grstd, c), rstd, c, SIM_TOL_F32);
    BN_WHAT("running_mean");
    sim_expect_close(what, sim_get_f32(be, grmean, c), rmean_c, c, SIM_TOL_F32);
    BN_WHAT("running_var");
    sim_expect_close(what, sim_get_f32(be, grvar, c), rvar_c, c, SIM_TOL_F32);

    /* evaluation with the updated running statistics */
    cpu->batchnorm_eval(cpu, y, x, rmean_c, rvar_c, gamma, beta, B, C, P, eps);
    be->batchnorm_eval(be, gy, gx, sim_f32(be, rmean_c, c), sim_f32(be, rvar_c, c), ggamma, gbeta,
                       B, C, P, eps);
    BN_WHAT("eval y");
    sim_expect_close(what, sim_get_act(be, gy, n), y, n, sim_tol(be));

    /* backward from the CPU's saved statistics (so dx isolates the backward), onto non-zero
     * dgamma / dbeta; dx written over garbage, then skipped */
    float *dy = rnd(&r, n, -1, 1), *dx = tu_floats(n);
    sim_round_like(be, dy, n);
    float *dgamma = rnd(&r, c, -1, 1), *dbeta = rnd(&r, c, -1, 1);
    float *gdgamma = sim_f32(be, dgamma, c), *gdbeta = sim_f32(be, dbeta, c);
    void *gdy = sim_act(be, dy, n), *gdx = sim_garbage(be, n * be->act_size);
    float *smean = sim_f32(be, mean, c), *srstd = sim_f32(be, rstd, c);
    cpu->batchnorm_bwd(cpu, dx, dgamma, dbeta, dy, x, mean, rstd, gamma, B, C, P);
    be->batchnorm_bwd(be, gdx, gdgamma, gdbeta, gdy, gx, smean, srstd, ggamma, B, C, P);
    BN_WHAT("bwd dx");
    sim_expect_close(what, sim_get_act(be, gdx, n), dx, n, sim_tol(be));
    BN_WHAT("bwd dgamma");
    sim_expect_close(what, sim_get_f32(be, gdgamma, c), dgamma, c, SIM_TOL_F32);
    BN_WHAT("bwd dbeta");
    sim_expect_close(what, sim_get_f32(be, gdbeta, c), dbeta, c, SIM_TOL_F32);
    cpu->batchnorm_bwd(cpu, NULL, dgamma, dbeta, dy, x, mean, rstd, gamma, B, C, P);
    be->batchnorm_bwd(be, NULL, gdgamma, gdbeta, gdy, gx, smean, srstd, ggamma, B, C, P);
    BN_WHAT("bwd without dx: dgamma");
    sim_expect_close(what, sim_get_f32(be, gdgamma, c), dgamma, c, SIM_TOL_F32);
    BN_WHAT("bwd without dx: dbeta");
    sim_expect_close(what, sim_get_f32(be, gdbeta, c), dbeta, c, SIM_TOL_F32);
#undef BN_WHAT
    sim_free_all();
}

static void bn_cases(ms_dtype dt) {
    check_bn(dt, 1, 1, 1, 0, 410);     /* one value: running_var takes the biased variance 0 */
    check_bn(dt, 3, 5, 1, 0, 411);     /* one pixel per image */
    check_bn(dt, 2, 3, 35, 0, 412);    /* odd sizes */
    check_bn(dt, 1, 4, 63, 0, 413);    /* B = 1 */
    check_bn(dt, 2, 2, 5000, 0, 414);  /* two reduction slices per channel */
    check_bn(dt, 2, 4, 50, 1000, 415); /* |mean| >> std: the one-pass moments must not cancel */
}

Test(cuda_conv, batchnorm_fp32) { bn_cases(MS_F32); }

Test(cuda_conv, batchnorm_bf16) { bn_cases(MS_BF16); }

/* ---- ReLU and upsampling --------------------------------------------------------------------- */

static void check_relu(ms_dtype dt, size_t n, uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(dt);
    tu_rng r = tu_seed(seed);
    float *x = rnd(&r, n, -1, 1), *dy = rnd(&r, n, -1, 1);
    for (size_t i = 0; i < n; i += 7) x[i] = i % 2 ? 0.0f : -0.0f; /* zeros of both signs */
    sim_round_like(be, x, n);
    sim_round_like(be, dy, n);
    float *y = tu_floats(n), *dx = tu_floats(n);
    cpu->relu(cpu, y, x, n);
    cpu->relu_bwd(cpu, dx, dy, y, n);
    void *gy = sim_garbage(be, n * be->act_size), *gdx = sim_garbage(be, n * be->act_size);
    be->relu(be, gy, sim_act(be, x, n), n);
    be->relu_bwd(be, gdx, sim_act(be, dy, n), gy, n);
    char what[64];
    snprintf(what, sizeof what, "relu %s n %zu", DT(dt), n);
    tu_expect_equal(what, sim_get_act(be, gy, n), y, n);
    snprintf(what, sizeof what, "relu_bwd %s n %zu", DT(dt), n);
    tu_expect_equal(what, sim_get_act(be, gdx, n), dx, n);
    sim_free_all();
}

Test(cuda_conv, relu) {
    for (int dt = 0; dt < 2; dt++) {
        check_relu(dt, 1, 420);
        check_relu(dt, 1000, 421);
    }
}

static void check_upsample(ms_dtype dt, int BC, int H, int W, uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(dt);
    tu_rng r = tu_seed(seed);
    size_t n = (size_t)BC * H * W, n4 = 4 * n;
    float *x = rnd(&r, n, -1, 1), *dy = rnd(&r, n4, -1, 1);
    sim_round_like(be, x, n);
    sim_round_like(be, dy, n4);
    float *y = tu_floats(n4), *dx = tu_floats(n);
    cpu->upsample2x(cpu, y, x, BC, H, W);
    cpu->upsample2x_bwd(cpu, dx, dy, BC, H, W);
    void *gy = sim_garbage(be, n4 * be->act_size), *gdx = sim_garbage(be, n * be->act_size);
    be->upsample2x(be, gy, sim_act(be, x, n), BC, H, W);
    be->upsample2x_bwd(be, gdx, sim_act(be, dy, n4), BC, H, W);
    char what[64];
    snprintf(what, sizeof what, "upsample2x %s BC %d H %d W %d", DT(dt), BC, H, W);
    sim_expect_close(what, sim_get_act(be, gy, n4), y, n4, sim_tol(be));
    snprintf(what, sizeof what, "upsample2x_bwd %s BC %d H %d W %d", DT(dt), BC, H, W);
    sim_expect_close(what, sim_get_act(be, gdx, n), dx, n, sim_tol(be));
    sim_free_all();
}

Test(cuda_conv, upsample2x) {
    for (int dt = 0; dt < 2; dt++) {
        check_upsample(dt, 1, 1, 1, 430); /* both taps clamp onto the one pixel */
        check_upsample(dt, 2, 2, 1, 431);
        check_upsample(dt, 2, 1, 3, 432);
        check_upsample(dt, 3, 5, 7, 433);
        check_upsample(dt, 1, 17, 33, 434);
    }
}

/* ---- cuDNN use ------------------------------------------------------------------------------- */

/* The stand-in ranks non-deterministic backward algorithms first, an unsupported forward one
 * first, and hands fp32 entries the default (TF32-permitting) math type: the backend must have
 * skipped all of those. */
Test(cuda_conv, deterministic_algorithms_without_tf32) {
    check_conv(MS_F32, 2, 3, 5, 4, 2, 3, 1, 440);
    check_conv(MS_BF16, 2, 3, 5, 4, 2, 3, 1, 441);
    struct simt_cudnn_stats s;
    simt_cudnn_get_stats(&s);
    cr_assert_eq(s.runs, 8,
                 "cuDNN ran %lu convolutions, expected 8 (per type: fwd, bwd data, "
                 "2 x bwd filter)",
                 s.runs);
    cr_assert_eq(s.nondeterministic_runs, 0, "%lu runs of non-deterministic algorithms",
                 s.nondeterministic_runs);
    cr_assert_eq(s.tf32_runs, 0, "%lu fp32 runs with TF32 allowed", s.tf32_runs);
}

/* More shapes than the plan table holds (32): evicted plans are destroyed, and a shape seen
 * before the table overflowed is planned again and still right. */
Test(cuda_conv, plan_table_overflow) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(MS_F32);
    tu_rng r = tu_seed(450);
    const int Ci = 2, H = 3, W = 2;
    float *x = rnd(&r, (size_t)Ci * H * W, -1, 1), *col = tu_floats((size_t)Ci * 9 * H * W);
    void *gx = sim_act(be, x, (size_t)Ci * H * W);
    for (int co = 1; co <= 40; co++) {
        int k = co % 2 ? 3 : 1;
        size_t nw = (size_t)co * Ci * k * k, ny = (size_t)co * H * W;
        float *w = rnd(&r, nw, -1, 1), *y = tu_floats(ny);
        cpu->conv2d(cpu, y, x, w, NULL, 1, Ci, H, W, co, k, col);
        void *gy = sim_garbage(be, ny * sizeof(float));
        be->conv2d(be, gy, gx, sim_f32(be, w, nw), NULL, 1, Ci, H, W, co, k, NULL);
        char what[64];
        snprintf(what, sizeof what, "conv2d, shape %d of 40", co);
        sim_expect_close(what, sim_get_act(be, gy, ny), y, ny, SIM_TOL_F32);
    }
    sim_free_all();
    check_conv(MS_F32, 1, Ci, H, W, 1, 3, 1, 451);
}

/* Same inputs, same bits: conv2d_bwd and BatchNorm training + backward run twice. */
Test(cuda_conv, repeatable) {
    ms_backend *be = sim_cuda(MS_F32);
    tu_rng r = tu_seed(460);
    const int B = 2, Ci = 3, C = 4, H = 5, W = 6, k = 3;
    size_t P = (size_t)H * W, nx = B * Ci * P, ny = B * C * P, nw = (size_t)C * Ci * k * k;
    void *gx = sim_act(be, rnd(&r, nx, -1, 1), nx), *gdy = sim_act(be, rnd(&r, ny, -1, 1), ny);
    float *gw = sim_f32(be, rnd(&r, nw, -1, 1), nw), *ggamma = sim_f32(be, rnd(&r, C, 0, 1), C);
    float *gbeta = sim_f32(be, rnd(&r, C, 0, 1), C);
    float *zeros = tu_floats(nw); /* nw >= every other length here */
    for (size_t i = 0; i < nw; i++) zeros[i] = 0.0f;
    float *out[2][7];
    for (int run = 0; run < 2; run++) {
        void *gdx = sim_garbage(be, nx * sizeof(float)), *gdz = sim_garbage(be, ny * sizeof(float));
        void *gy = sim_garbage(be, ny * sizeof(float));
        float *gdw = sim_f32(be, zeros, nw), *gdb = sim_f32(be, zeros, C);
        float *gdgamma = sim_f32(be, zeros, C), *gdbeta = sim_f32(be, zeros, C);
        float *m = sim_garbage(be, C * sizeof(float)), *rs = sim_garbage(be, C * sizeof(float));
        float *rm = sim_f32(be, zeros, C), *rv = sim_f32(be, zeros, C);
        be->conv2d_bwd(be, gdx, gdw, gdb, gdy, gx, gw, B, Ci, H, W, C, k, NULL);
        be->batchnorm_train(be, gy, m, rs, rm, rv, gdy, ggamma, gbeta, B, C, (int)P, 1e-5f, 0.1f);
        be->batchnorm_bwd(be, gdz, gdgamma, gdbeta, gy, gdy, m, rs, ggamma, B, C, (int)P);
        out[run][0] = sim_get_act(be, gdx, nx);
        out[run][1] = sim_get_f32(be, gdw, nw);
        out[run][2] = sim_get_f32(be, gdb, C);
        out[run][3] = sim_get_act(be, gdz, ny);
        out[run][4] = sim_get_f32(be, gdgamma, C);
        out[run][5] = sim_get_f32(be, rm, C);
        out[run][6] = sim_get_f32(be, rv, C);
    }
    size_t len[7] = {nx, nw, C, ny, C, C, C};
    const char *names[7] = {"conv dx",          "conv dw",      "conv db",    "BatchNorm dx",
                            "BatchNorm dgamma", "running_mean", "running_var"};
    for (int i = 0; i < 7; i++) tu_expect_equal(names[i], out[1][i], out[0][i], len[i]);
    sim_free_all();
}
