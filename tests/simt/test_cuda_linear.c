/* Dense and grouped-expert linear layers of the CUDA backend (kernels/cuda/linear.cu, cuBLAS
 * through the emulator's stand-in) against the CPU ops: both weight layouts, bias or none, the
 * accumulate semantics (dw, db +=; dx = or += with accum_dx), empty experts (their gradients
 * untouched) and a single row. bf16: the GEMM's weight operand is rounded to bf16 on the CUDA
 * side only, hence the bf16 tolerance for y and dx; dw and db are fp32 sums of the same
 * (rounded) activations on both sides and keep the fp32 tolerance. */
#include "harness.h"

#include <stdio.h>

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

/* ---- dense ----------------------------------------------------------------------------------- */

static void check_linear(ms_dtype dt, int M, int I, int O, ms_wlayout layout, int bias,
                         uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(dt);
    tu_rng r = tu_seed(seed);
    size_t nx = (size_t)M * I, ny = (size_t)M * O, nw = (size_t)I * O;
    float *x = rnd(&r, nx, -1, 1), *w = rnd(&r, nw, -0.5, 0.5), *b = rnd(&r, (size_t)O, -1, 1);
    sim_round_like(be, x, nx);
    float *y = tu_floats(ny);
    cpu->linear(cpu, y, x, w, bias ? b : NULL, M, I, O, layout);
    void *gy = sim_garbage(be, ny * be->act_size);
    be->linear(be, gy, sim_act(be, x, nx), sim_f32(be, w, nw),
               bias ? sim_f32(be, b, (size_t)O) : NULL, M, I, O, layout);
    char what[96];
    snprintf(what, sizeof what, "linear %s M %d I %d O %d layout %d bias %d", DT(dt), M, I, O,
             layout, bias);
    sim_expect_close(what, sim_get_act(be, gy, ny), y, ny, sim_tol(be));

    /* backward: dx (accumulated or written), dw and db accumulated onto non-zero starts */
    float *dy = rnd(&r, ny, -1, 1);
    sim_round_like(be, dy, ny);
    for (int accum = 0; accum < 2; accum++) {
        float *dx = rnd(&r, nx, -1, 1), *dw = rnd(&r, nw, -1, 1), *db = rnd(&r, (size_t)O, -1, 1);
        sim_round_like(be, dx, nx);
        void *gdx = accum ? sim_act(be, dx, nx) : sim_garbage(be, nx * be->act_size);
        float *gdw = sim_f32(be, dw, nw), *gdb = sim_f32(be, db, (size_t)O);
        cpu->linear_bwd(cpu, dx, dw, db, dy, x, w, M, I, O, layout, accum);
        be->linear_bwd(be, gdx, gdw, gdb, sim_act(be, dy, ny), sim_act(be, x, nx),
                       sim_f32(be, w, nw), M, I, O, layout, accum);
        snprintf(what, sizeof what, "linear_bwd %s M %d I %d O %d layout %d accum %d: dx", DT(dt),
                 M, I, O, layout, accum);
        sim_expect_close(what, sim_get_act(be, gdx, nx), dx, nx, sim_tol(be));
        snprintf(what, sizeof what, "linear_bwd %s M %d I %d O %d layout %d: dw", DT(dt), M, I, O,
                 layout);
        sim_expect_close(what, sim_get_f32(be, gdw, nw), dw, nw, SIM_TOL_F32);
        snprintf(what, sizeof what, "linear_bwd %s M %d I %d O %d layout %d: db", DT(dt), M, I, O,
                 layout);
        sim_expect_close(what, sim_get_f32(be, gdb, (size_t)O), db, (size_t)O, SIM_TOL_F32);
    }
    /* only the weight gradient (a frozen input needs no dx), no bias */
    float *dw = rnd(&r, nw, -1, 1);
    float *gdw = sim_f32(be, dw, nw);
    cpu->linear_bwd(cpu, NULL, dw, NULL, dy, x, w, M, I, O, layout, 0);
    be->linear_bwd(be, NULL, gdw, NULL, sim_act(be, dy, ny), sim_act(be, x, nx), sim_f32(be, w, nw),
                   M, I, O, layout, 0);
    snprintf(what, sizeof what, "linear_bwd %s dw only layout %d", DT(dt), layout);
    sim_expect_close(what, sim_get_f32(be, gdw, nw), dw, nw, SIM_TOL_F32);
    sim_free_all();
}

Test(cuda_linear, linear_fp32) {
    for (int layout = 0; layout < 2; layout++) {
        check_linear(MS_F32, 1, 1, 1, layout, 1, 200);
        check_linear(MS_F32, 37, 64, 48, layout, 1, 201);
        check_linear(MS_F32, 197, 96, 130, layout, 0, 202);
    }
}

Test(cuda_linear, linear_bf16) {
    for (int layout = 0; layout < 2; layout++) {
        check_linear(MS_BF16, 1, 3, 2, layout, 1, 210);
        check_linear(MS_BF16, 53, 64, 80, layout, 1, 211);
        check_linear(MS_BF16, 120, 33, 70, layout, 0, 212);
    }
}

/* ---- grouped experts ------------------------------------------------------------------------- */

/* offsets[E+1] of random expert sizes in [0, max_rows], with the experts in `empty` forced to 0. */
static int32_t *expert_offsets(tu_rng *r, int E, int max_rows, const int *empty, int n_empty) {
    int32_t *off = tu_ints((size_t)E + 1);
    off[0] = 0;
    for (int e = 0; e < E; e++) {
        int n = tu_randint(r, 0, max_rows);
        for (int k = 0; k < n_empty; k++)
            if (empty[k] == e) n = 0;
        off[e + 1] = off[e] + n;
    }
    return off;
}

static void check_experts(ms_dtype dt, int E, int I, int O, int max_rows, const int *empty,
                          int n_empty, int bias, uint64_t seed) {
    ms_backend *cpu = tu_cpu(), *be = sim_cuda(dt);
    tu_rng r = tu_seed(seed);
    int32_t *off = expert_offsets(&r, E, max_rows, empty, n_empty);
    int R = off[E];
    size_t nx = (size_t)R * I, ny = (size_t)R * O, nw = (size_t)E * I * O, nb = (size_t)E * O;
    float *x = rnd(&r, nx, -1, 1), *w = rnd(&r, nw, -0.5, 0.5), *b = rnd(&r, nb, -1, 1);
    sim_round_like(be, x, nx);
    float *y = tu_floats(ny);
    cpu->expert_linear(cpu, y, x, w, bias ? b : NULL, off, E, I, O);
    void *gy = sim_garbage(be, ny * be->act_size);
    float *gw = sim_f32(be, w, nw);
    be->expert_linear(be, gy, sim_act(be, x, nx), gw, bias ? sim_f32(be, b, nb) : NULL, off, E, I,
                      O);
    char what[128];
    snprintf(what, sizeof what, "expert_linear %s E %d I %d O %d R %d bias %d", DT(dt), E, I, O, R,
             bias);
    sim_expect_close(what, sim_get_act(be, gy, ny), y, ny, sim_tol(be));

    float *dy = rnd(&r, ny, -1, 1), *dx = tu_floats(nx), *dw = rnd(&r, nw, -1, 1),
          *db = rnd(&r, nb, -1, 1);
    sim_round_like(be, dy, ny);
    float *dw0 = copy_of(dw, nw), *db0 = copy_of(db, nb);
    float *gdw = sim_f32(be, dw, nw), *gdb = sim_f32(be, db, nb);
    void *gdx = sim_garbage(be, nx * be->act_size);
    cpu->expert_linear_bwd(cpu, dx, dw, db, dy, x, w, off, E, I, O);
    be->expert_linear_bwd(be, gdx, gdw, gdb, sim_act(be, dy, ny), sim_act(be, x, nx), gw, off, E, I,
                          O);
    snprintf(what, sizeof what, "expert_linear_bwd %s E %d I %d O %d: dx", DT(dt), E, I, O);
    sim_expect_close(what, sim_get_act(be, gdx, nx), dx, nx, sim_tol(be));
    float *hdw = sim_get_f32(be, gdw, nw), *hdb = sim_get_f32(be, gdb, nb);
    snprintf(what, sizeof what, "expert_linear_bwd %s E %d I %d O %d: dw", DT(dt), E, I, O);
    sim_expect_close(what, hdw, dw, nw, SIM_TOL_F32);
    snprintf(what, sizeof what, "expert_linear_bwd %s E %d I %d O %d: db", DT(dt), E, I, O);
    sim_expect_close(what, hdb, db, nb, SIM_TOL_F32);
    for (int e = 0; e < E; e++) {
        if (off[e + 1] > off[e]) continue;
        snprintf(what, sizeof what, "expert_linear_bwd %s: dw of empty expert %d", DT(dt), e);
        tu_expect_equal(what, hdw + (size_t)e * I * O, dw0 + (size_t)e * I * O, (size_t)I * O);
        snprintf(what, sizeof what, "expert_linear_bwd %s: db of empty expert %d", DT(dt), e);
        tu_expect_equal(what, hdb + (size_t)e * O, db0 + (size_t)e * O, (size_t)O);
    }
    sim_free_all();
}

Test(cuda_linear, expert_linear) {
    int empty[] = {0, 3, 15};
    for (int dt = 0; dt < 2; dt++) {
        check_experts(dt, 1, 5, 3, 1, NULL, 0, 1, 220);      /* one expert, at most one row */
        check_experts(dt, 16, 24, 40, 30, empty, 3, 1, 221); /* empty first, middle and last */
        check_experts(dt, 24, 32, 16, 12, empty, 2, 0, 222); /* no bias */
        int all[] = {0, 1, 2, 3};
        check_experts(dt, 4, 8, 8, 5, all, 4, 1, 223); /* no rows at all */
    }
}
