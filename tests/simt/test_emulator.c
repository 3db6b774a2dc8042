/* The SIMT emulator itself: GPU semantics it must reproduce (shared memory, barriers, warp
 * intrinsics, atomics, thread and block indices, launch errors) and the faults it must report
 * (run in a subprocess through build/tests/simt_faults, whose exit status and stderr are
 * checked). */
#include "harness.h"
#include "selftest.h"

#include <math.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>

/* ---- semantics ------------------------------------------------------------------------------- */

Test(emulator, block_sums_through_shuffles_and_static_shared) {
    tu_rng r = tu_seed(1);
    int n = 1000; /* 4 blocks, the last one partial */
    float *in = tu_floats((size_t)n), out[4];
    tu_fill(&r, in, (size_t)n, -1, 1);
    selftest_block_sums(out, in, n);
    for (int b = 0; b < 4; b++) {
        double ref = 0;
        for (int i = b * 256; i < n && i < (b + 1) * 256; i++) ref += in[i];
        cr_assert(fabs(out[b] - ref) < 1e-4, "block %d: sum %f, want %f", b, (double)out[b], ref);
    }
}

Test(emulator, dynamic_shared_memory_with_barrier) {
    int blocks = 3, threads = 100; /* not a multiple of the warp size */
    size_t n = (size_t)blocks * threads;
    float *in = tu_floats(n), *out = tu_floats(n);
    for (size_t i = 0; i < n; i++) in[i] = (float)i;
    selftest_reverse(out, in, blocks, threads, 1);
    for (int b = 0; b < blocks; b++)
        for (int t = 0; t < threads; t++)
            cr_assert_eq(out[b * threads + t], in[b * threads + threads - 1 - t],
                         "block %d thread %d", b, t);
}

/* Without the barrier a thread reads a slot another thread has not written yet. The emulator
 * must make that visible: shared memory starts as garbage (NaN), and threads of odd blocks run
 * in reverse order, so no order of the threads hides the race in every block. */
Test(emulator, missing_barrier_is_visible) {
    int blocks = 2, threads = 64;
    size_t n = (size_t)blocks * threads;
    float *in = tu_floats(n), *out = tu_floats(n);
    for (size_t i = 0; i < n; i++) in[i] = (float)i;
    selftest_reverse(out, in, blocks, threads, 0);
    for (int b = 0; b < blocks; b++) {
        int wrong = 0;
        for (int t = 0; t < threads; t++)
            wrong += !(out[b * threads + t] == in[b * threads + threads - 1 - t]);
        cr_assert(wrong > 0, "block %d: the race went unnoticed", b);
    }
}

Test(emulator, warp_intrinsics) {
    int out[64 * SELFTEST_WARP_RESULTS];
    selftest_warp_ops(out);
    for (int tid = 0; tid < 64; tid++) {
        int lane = tid & 31, warp = tid >> 5;
        const int *o = out + tid * SELFTEST_WARP_RESULTS;
        unsigned ballot = 0;
        for (int l = 0; l < 32; l += 3) ballot |= 1u << l;
        int want[SELFTEST_WARP_RESULTS] = {
            ((lane + 3) & 31) * 10,
            (lane & ~7) + 2,
            lane >= 3 ? lane - 3 : lane,
            (lane % 16) + 5 < 16 ? lane + 5 : lane,
            lane ^ 1,
            (int)ballot,
            warp == 1,
            1, /* all lanes < 32, not all < 31 */
            (int)(0xfu << (lane / 4 * 4)),
            lane < 16 ? lane ^ 8 : 31,
            2 * (lane ^ 2) + 0, /* (lane ^ 2) + 0.25, doubled and truncated */
        };
        for (int k = 0; k < SELFTEST_WARP_RESULTS; k++)
            cr_assert_eq(o[k], want[k], "thread %d, intrinsic %d: %d, want %d", tid, k, o[k],
                         want[k]);
    }
}

Test(emulator, atomics) {
    float out[4];
    selftest_atomics(out);
    cr_assert_eq(out[0], 288.0f, "counter %f", (double)out[0]);
    cr_assert_eq(out[1], 144.0f, "sum %f", (double)out[1]);
    cr_assert_eq(out[2], 287.0f, "max %f", (double)out[2]);
    cr_assert(out[3] >= 0.0f && out[3] < 288.0f, "CAS winner %f", (double)out[3]);
}

Test(emulator, thread_and_block_indices) {
    int out[96];
    selftest_indices(out);
    for (int by = 0; by < 3; by++)
        for (int bx = 0; bx < 2; bx++)
            for (int tz = 0; tz < 2; tz++)
                for (int ty = 0; ty < 2; ty++)
                    for (int tx = 0; tx < 4; tx++) {
                        int at = (bx + 2 * by) * 16 + tx + 4 * (ty + 2 * tz);
                        int want = tx | ty << 4 | tz << 8 | bx << 12 | by << 16;
                        cr_assert_eq(out[at], want, "block (%d,%d) thread (%d,%d,%d)", bx, by, tx,
                                     ty, tz);
                    }
}

Test(emulator, bad_launch_configuration_sets_the_sticky_error) {
    int first, second;
    selftest_bad_config(&first, &second);
    cr_assert_eq(first, 9,
                 "cudaGetLastError after a 2048-thread block: %d (want 9, "
                 "cudaErrorInvalidConfiguration)",
                 first);
    cr_assert_eq(second, 0, "the error must be cleared by cudaGetLastError: %d", second);
}

/* ---- reported faults ------------------------------------------------------------------------- */

/* The fault helper must die with SIGABRT (sig > 0) or exit with `code`, printing every needle. */
static void expect_fault(const char *fault, int sig, int code, const char *const *needles, int n) {
    int status;
    char *out = sim_run_fault(fault, &status);
    if (sig)
        cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == sig,
                  "%s: expected signal %d, got status 0x%x; output:\n%s", fault, sig, status, out);
    else
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == code,
                  "%s: expected exit %d, got status 0x%x; output:\n%s", fault, code, status, out);
    for (int i = 0; i < n; i++)
        cr_assert(strstr(out, needles[i]), "%s: '%s' missing from the report:\n%s", fault,
                  needles[i], out);
}

Test(emulator_faults, clean_kernel_passes) { expect_fault("none", 0, 0, NULL, 0); }

Test(emulator_faults, partial_barrier) {
    const char *n[] = {"partial_barrier_kernel", "__syncthreads()",
                       "reached by 16 of the block's 32", "16 exited"};
    expect_fault("partial_barrier", SIGABRT, 0, n, 4);
}

Test(emulator_faults, divergent_barriers) {
    const char *n[] = {"divergent_barrier_kernel", "different __syncthreads() calls"};
    expect_fault("divergent_barrier", SIGABRT, 0, n, 2);
}

Test(emulator_faults, mismatched_masks) {
    const char *n[] = {"mismatched_masks_kernel", "mismatched warp masks", "0xffff0000",
                       "0xffffffff"};
    expect_fault("mismatched_masks", SIGABRT, 0, n, 4);
}

Test(emulator_faults, shuffle_naming_an_exited_lane) {
    const char *n[] = {"exited_lane_kernel", "lane 5", "exited"};
    expect_fault("exited_lane", SIGABRT, 0, n, 3);
}

Test(emulator_faults, shuffle_reading_outside_its_mask) {
    const char *n[] = {"lane_outside_mask_kernel", "reads lane 20", "not in the mask"};
    expect_fault("lane_outside_mask", SIGABRT, 0, n, 3);
}

Test(emulator_faults, out_of_bounds_static_shared) {
    const char *n[] = {"AddressSanitizer", "heap-buffer-overflow", "oob_static_shared_kernel"};
    expect_fault("oob_static_shared", 0, 1, n, 3);
}

Test(emulator_faults, out_of_bounds_dynamic_shared) {
    const char *n[] = {"AddressSanitizer", "heap-buffer-overflow", "oob_dynamic_shared_kernel"};
    expect_fault("oob_dynamic_shared", 0, 1, n, 3);
}

Test(emulator_faults, out_of_bounds_global) {
    const char *n[] = {"AddressSanitizer", "heap-buffer-overflow", "oob_global_kernel"};
    expect_fault("oob_global", 0, 1, n, 3);
}

Test(emulator_faults, trap) {
    const char *n[] = {"trap_kernel", "__trap()", "thread (3,0,0)"};
    expect_fault("trap", SIGABRT, 0, n, 3);
}

Test(emulator_faults, bad_configuration_names_the_kernel) {
    const char *n[] = {"kernel empty_kernel failed", "invalid configuration argument"};
    expect_fault("bad_config", 0, 1, n, 2);
}
