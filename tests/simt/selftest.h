/* Kernels that exercise the emulator's GPU semantics (tests/simt/selftest.cu), callable from the
 * C tests: each launcher copies its host arguments to emulated device memory, launches through
 * MS_LAUNCH and copies the results back. */
#ifndef MS_SIMT_SELFTEST_H
#define MS_SIMT_SELFTEST_H

#ifdef __cplusplus
extern "C" {
#endif

/* out[b] = in[b*256] + ... + in[b*256 + 255] (zero-padded past n): warp shuffles, then the warp
 * partials through static shared memory (MS_SHARED) and a barrier. blocks = ceil(n / 256). */
void selftest_block_sums(float *out, const float *in, int n);
/* Reverses each block's `threads` values through dynamic shared memory; with_barrier = 0 drops
 * the __syncthreads() between the writes and the reads. */
void selftest_reverse(float *out, const float *in, int blocks, int threads, int with_barrier);
/* One block of 64 threads; out[tid * SELFTEST_WARP_RESULTS + k]: warp intrinsic k's result. */
#define SELFTEST_WARP_RESULTS 11
void selftest_warp_ops(int *out);
/* 3 blocks x 96 threads: counter += 1, sum += 0.5f, max = max(max, global thread id),
 * cas_winner = the first thread to CAS it from -1. out[4] = counter, sum, max, winner. */
void selftest_atomics(float *out);
/* grid (2, 3, 1), block (4, 2, 2): out[global linear thread] = packed coordinates (see .cu). */
void selftest_indices(int *out);
/* Launches with a 2048-thread block; returns cudaGetLastError() then (second value) the next
 * cudaGetLastError(). */
void selftest_bad_config(int *first, int *second);

#ifdef __cplusplus
}
#endif

#endif
