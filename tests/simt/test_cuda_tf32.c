/* train.tf32 on the CUDA backend (MS_BACKEND_TF32 of kernels/backend_select.h): without it every
 * fp32 GEMM is plain fp32 (CUBLAS_COMPUTE_32F) and every fp32 convolution FMA-only; with it
 * the fp32 GEMMs ask cuBLAS for TF32 (CUBLAS_COMPUTE_32F_FAST_TF32) and the convolutions take
 * a TF32-permitting math type. The stand-ins count how each product and convolution ran, and
 * the cuBLAS stand-in rounds TF32 operands as the tensor cores do, so the results move by
 * TF32's precision and no further. bf16 products and the CPU backend ignore the flag. */
#include "harness.h"

#include <stdio.h>

#include "../../kernels/backend_select.h"

/* Emulator controls (tests/simt/simt_cublas.h and simt_cudnn.h, C++ only). */
struct simt_cublas_stats {
    unsigned long fp32_products, tf32_products, bf16_products;
};
void simt_cublas_get_stats(struct simt_cublas_stats *stats);
struct simt_cudnn_stats {
    unsigned long runs, nondeterministic_runs, tf32_runs;
};
void simt_cudnn_get_stats(struct simt_cudnn_stats *stats);

#define M 9  /* rows */
#define I 64 /* inputs: long enough sums for TF32's rounding to show */
#define O 7  /* outputs */
#define CB 2 /* conv: images, channels in and out, size, kernel */
#define CI 3
#define CO 4
#define CH 5
#define CW 6
#define CK 3

/* The inputs of every test, the same in each. */
typedef struct {
    float *x, *w, *dy;          /* linear: x[M, I], w[O, I], dy[M, O] */
    float *cx, *cw, *cdy;       /* conv: x[CB, CI, CH, CW], w[CO, CI, CK, CK], dy[CB, CO, CH, CW] */
    float *y, *dx, *dw;         /* CPU linear: y[M, O], dx[M, I], dw[O, I] */
    float *cy;                  /* CPU conv: y[CB, CO, CH, CW] */
} problem;

static problem make_problem(void) {
    problem p;
    tu_rng r = tu_seed(900);
    size_t ncx = (size_t)CB * CI * CH * CW, ncw = (size_t)CO * CI * CK * CK;
    size_t ncy = (size_t)CB * CO * CH * CW;
    p.x = tu_floats(M * I), p.w = tu_floats(O * I), p.dy = tu_floats(M * O);
    p.cx = tu_floats(ncx), p.cw = tu_floats(ncw), p.cdy = tu_floats(ncy);
    tu_fill(&r, p.x, M * I, -1, 1);
    tu_fill(&r, p.w, O * I, -1, 1);
    tu_fill(&r, p.dy, M * O, -1, 1);
    tu_fill(&r, p.cx, ncx, -1, 1);
    tu_fill(&r, p.cw, ncw, -1, 1);
    tu_fill(&r, p.cdy, ncy, -1, 1);
    ms_backend *cpu = tu_cpu();
    p.y = tu_floats(M * O), p.dx = tu_floats(M * I), p.dw = tu_floats(O * I);
    p.cy = tu_floats(ncy);
    for (int i = 0; i < O * I; i++) p.dw[i] = 0.0f;
    cpu->linear(cpu, p.y, p.x, p.w, NULL, M, I, O, MS_W_OUT_IN);
    cpu->linear_bwd(cpu, p.dx, p.dw, NULL, p.dy, p.x, p.w, M, I, O, MS_W_OUT_IN, 0);
    float *col = tu_floats((size_t)CI * CK * CK * CH * CW);
    cpu->conv2d(cpu, p.cy, p.cx, p.cw, NULL, CB, CI, CH, CW, CO, CK, col);
    return p;
}

/* What one backend computed (host copies). */
typedef struct {
    float *y, *dx, *dw, *cy;
} outputs;

/* The linear layer forward and backward (three GEMMs) and a convolution forward and backward
 * (three cuDNN calls) on be. */
static outputs run_ops(ms_backend *be, const problem *p) {
    size_t ncx = (size_t)CB * CI * CH * CW, ncw = (size_t)CO * CI * CK * CK;
    size_t ncy = (size_t)CB * CO * CH * CW;
    float *zeros = tu_floats(O * I);
    for (int i = 0; i < O * I; i++) zeros[i] = 0.0f;
    void *x = sim_act(be, p->x, M * I), *dy = sim_act(be, p->dy, M * O);
    float *w = sim_f32(be, p->w, O * I), *dw = sim_f32(be, zeros, O * I);
    void *y = sim_garbage(be, M * O * be->act_size), *dx = sim_garbage(be, M * I * be->act_size);
    be->linear(be, y, x, w, NULL, M, I, O, MS_W_OUT_IN);
    be->linear_bwd(be, dx, dw, NULL, dy, x, w, M, I, O, MS_W_OUT_IN, 0);
    void *cx = sim_act(be, p->cx, ncx), *cdy = sim_act(be, p->cdy, ncy);
    float *cw = sim_f32(be, p->cw, ncw), *cdw = sim_f32(be, zeros, ncw);
    void *cy = sim_garbage(be, ncy * be->act_size), *cdx = sim_garbage(be, ncx * be->act_size);
    be->conv2d(be, cy, cx, cw, NULL, CB, CI, CH, CW, CO, CK, NULL);
    be->conv2d_bwd(be, cdx, cdw, NULL, cdy, cx, cw, CB, CI, CH, CW, CO, CK, NULL);
    outputs o = {sim_get_act(be, y, M * O), sim_get_act(be, dx, M * I), sim_get_f32(be, dw, O * I),
                 sim_get_act(be, cy, ncy)};
    sim_free_all();
    return o;
}

static ms_backend *cuda_with(unsigned precision) {
    char err[256];
    ms_backend *be = ms_backend_create("cuda:0", 1, precision, err, sizeof err);
    cr_assert_not_null(be, "%s", err);
    cr_assert_str_eq(be->name, "cuda");
    return be;
}

/* How many products and convolutions ran since *b, and how (b is moved on). */
typedef struct {
    struct simt_cublas_stats blas;
    struct simt_cudnn_stats dnn;
} counts;

static counts since(counts *b) {
    counts now, d;
    simt_cublas_get_stats(&now.blas);
    simt_cudnn_get_stats(&now.dnn);
    d.blas.fp32_products = now.blas.fp32_products - b->blas.fp32_products;
    d.blas.tf32_products = now.blas.tf32_products - b->blas.tf32_products;
    d.blas.bf16_products = now.blas.bf16_products - b->blas.bf16_products;
    d.dnn.runs = now.dnn.runs - b->dnn.runs;
    d.dnn.tf32_runs = now.dnn.tf32_runs - b->dnn.tf32_runs;
    *b = now;
    return d;
}

/* The default backend first, then one with the flag in the same process: the flag must reach
 * cuBLAS and cuDNN through the backend, not through a plan cached for the first. */
Test(cuda_tf32, fp32_is_exact_by_default_and_tf32_with_the_flag) {
    problem p = make_problem();
    counts c;
    since(&c);

    ms_backend *plain = cuda_with(0);
    outputs a = run_ops(plain, &p);
    counts d = since(&c);
    cr_assert(d.blas.fp32_products >= 3, "%lu plain fp32 products", d.blas.fp32_products);
    cr_assert_eq(d.blas.tf32_products, 0, "%lu TF32 products without train.tf32",
                 d.blas.tf32_products);
    cr_assert(d.dnn.runs >= 3, "%lu convolutions", d.dnn.runs);
    cr_assert_eq(d.dnn.tf32_runs, 0, "%lu TF32-permitting convolutions without train.tf32",
                 d.dnn.tf32_runs);
    sim_expect_close("linear y, fp32", a.y, p.y, M * O, SIM_TOL_F32);
    sim_expect_close("linear dx, fp32", a.dx, p.dx, M * I, SIM_TOL_F32);
    sim_expect_close("linear dw, fp32", a.dw, p.dw, O * I, SIM_TOL_F32);
    plain->destroy(plain);

    ms_backend *tf32 = cuda_with(MS_BACKEND_TF32);
    cr_assert_eq(tf32->act_dtype, MS_F32, "the flag leaves the activations fp32");
    outputs b = run_ops(tf32, &p);
    d = since(&c);
    cr_assert_eq(d.blas.fp32_products, 0, "%lu plain fp32 products with train.tf32",
                 d.blas.fp32_products);
    cr_assert(d.blas.tf32_products >= 3, "%lu TF32 products", d.blas.tf32_products);
    cr_assert(d.dnn.runs >= 3 && d.dnn.tf32_runs == d.dnn.runs,
              "%lu of %lu convolutions may use TF32", d.dnn.tf32_runs, d.dnn.runs);
    /* TF32 keeps 10 of fp32's 23 mantissa bits (relative rounding 2^-11 per operand): the GEMMs
     * move off the fp32 result by about that, and not by more. */
    const float *got[3] = {b.y, b.dx, b.dw}, *ref[3] = {p.y, p.dx, p.dw};
    size_t len[3] = {M * O, M * I, O * I};
    const char *names[3] = {"linear y", "linear dx", "linear dw"};
    for (int k = 0; k < 3; k++) {
        double *r = tu_doubles(len[k]);
        tu_to_double(r, ref[k], len[k]);
        double e = tu_rel_err(got[k], r, len[k]);
        cr_assert(e > 1e-5 && e < 2e-3, "%s with TF32: relative error %.3g, expected TF32's",
                  names[k], e);
    }
    /* The stand-in's convolutions are exact whatever the math type: only the choice differs. */
    tu_expect_equal("conv y", b.cy, a.cy, (size_t)CB * CO * CH * CW);
    tf32->destroy(tf32);
}

/* bf16 operands are already narrower than TF32: the flag changes nothing for them. */
Test(cuda_tf32, bf16_products_ignore_the_flag) {
    problem p = make_problem();
    counts c;
    since(&c);
    ms_backend *plain = cuda_with(MS_BACKEND_BF16);
    outputs a = run_ops(plain, &p);
    plain->destroy(plain);
    ms_backend *both = cuda_with(MS_BACKEND_BF16 | MS_BACKEND_TF32);
    cr_assert_eq(both->act_dtype, MS_BF16);
    outputs b = run_ops(both, &p);
    both->destroy(both);
    counts d = since(&c);
    cr_assert_eq(d.blas.tf32_products, 0, "%lu bf16-backend products used TF32",
                 d.blas.tf32_products);
    cr_assert(d.blas.bf16_products >= 6, "%lu bf16 products", d.blas.bf16_products);
    tu_expect_equal("linear y", b.y, a.y, M * O);
    tu_expect_equal("linear dx", b.dx, a.dx, M * I);
    tu_expect_equal("linear dw", b.dw, a.dw, O * I);
    tu_expect_equal("conv y", b.cy, a.cy, (size_t)CB * CO * CH * CW);
}

/* The CPU backend is always exact fp32: asked for TF32 it is created as usual and computes the
 * same bits. */
Test(cuda_tf32, cpu_backend_ignores_the_flag) {
    char err[256];
    ms_backend *plain = ms_backend_create("cpu", 1, 0, err, sizeof err);
    ms_backend *flagged = ms_backend_create("cpu", 1, MS_BACKEND_TF32, err, sizeof err);
    cr_assert(plain && flagged, "%s", err);
    cr_assert_str_eq(flagged->name, "cpu");
    problem p = make_problem();
    float *y0 = tu_floats(M * O), *y1 = tu_floats(M * O);
    plain->linear(plain, y0, p.x, p.w, NULL, M, I, O, MS_W_OUT_IN);
    flagged->linear(flagged, y1, p.x, p.w, NULL, M, I, O, MS_W_OUT_IN);
    tu_expect_equal("cpu linear y", y1, y0, M * O);
    plain->destroy(plain);
    flagged->destroy(flagged);
}
