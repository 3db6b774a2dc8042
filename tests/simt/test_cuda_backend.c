/* The CUDA backend's memory ops and creation under the emulator: copies, zeroing, fp32 <-> bf16
 * conversion (round to nearest even), device memory returned by destroy, a runtime error
 * reported with file:line, and backend selection (kernels/backend_select.c) with one emulated
 * GPU and with none. */
#include "harness.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../../kernels/backend_select.h"

/* Emulator controls (tests/simt/simt_runtime.h, C++ only). */
void simt_set_device_count(int n);
size_t simt_device_bytes_in_use(void);

Test(cuda_backend, memory_roundtrip) {
    ms_backend *be = sim_cuda(MS_F32);
    tu_rng r = tu_seed(300);
    size_t n = 1000;
    float *h = tu_floats(n), *back = tu_floats(n);
    tu_fill(&r, h, n, -10, 10);
    float *a = be->alloc(be, n * sizeof(float)), *b = be->alloc(be, n * sizeof(float));
    cr_assert(a && b);
    cr_assert_eq((uintptr_t)a % 64, 0, "allocations are 64-byte aligned");
    be->upload(be, a, h, n * sizeof(float));
    be->copy(be, b, a, n * sizeof(float));
    be->download(be, back, b, n * sizeof(float));
    tu_expect_equal("upload, copy, download", back, h, n);
    be->zero(be, b + 10, 20 * sizeof(float));
    be->download(be, back, b, n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(back[i], i >= 10 && i < 30 ? 0.0f : h[i], "zero: [%zu]", i);
    be->upload_act(be, a, h, n);
    be->download_act(be, back, a, n);
    tu_expect_equal("fp32 activations", back, h, n);
    be->synchronize(be);
    be->free(be, a);
    be->free(be, b);
}

Test(cuda_backend, bf16_activations_round_to_nearest_even) {
    ms_backend *be = sim_cuda(MS_BF16);
    cr_assert_eq(be->act_size, 2);
    /* halfway cases both ways, the largest finite values, infinities, NaN, signed zero, denormals
     */
    float special[] = {1.0f + 0x1p-8f,
                       1.0f + 0x1p-7f + 0x1p-8f,
                       -3.0f - 0x1p-7f,
                       3.3895313892515355e38f,
                       INFINITY,
                       -INFINITY,
                       NAN,
                       -0.0f,
                       1e-40f,
                       0x1p-126f};
    size_t ns = sizeof special / sizeof *special, n = ns + 5000;
    float *h = tu_floats(n), *back = tu_floats(n);
    memcpy(h, special, sizeof special);
    tu_rng r = tu_seed(301);
    tu_fill(&r, h + ns, n - ns, -1e3, 1e3);
    void *d = be->alloc(be, n * be->act_size);
    be->upload_act(be, d, h, n);
    be->download_act(be, back, d, n);
    for (size_t i = 0; i < n; i++) {
        float want = sim_bf16_round(h[i]);
        if (isnan(want))
            cr_assert(isnan(back[i]), "[%zu]: NaN became %g", i, (double)back[i]);
        else
            cr_assert(memcmp(&back[i], &want, sizeof want) == 0, "[%zu] %.9g: got %.9g, want %.9g",
                      i, (double)h[i], (double)back[i], (double)want);
    }
    cr_assert_eq(back[0], 1.0f, "1 + 2^-8 is halfway: rounds to even 1");
    cr_assert_eq(back[1], 1.0f + 0x1p-6f, "1 + 2^-7 + 2^-8 is halfway: rounds to even");
    be->free(be, d);
}

Test(cuda_backend, destroy_returns_device_memory) {
    size_t before = simt_device_bytes_in_use();
    char err[256];
    ms_backend *be = ms_backend_cuda_create(0, MS_BF16, 0, err, sizeof err);
    cr_assert_not_null(be, "%s", err);
    size_t n = 4096;
    float *h = tu_floats(n);
    void *d = be->alloc(be, n * be->act_size);
    be->upload_act(be, d, h, n); /* grows the staging scratch */
    be->download_act(be, h, d, n);
    be->free(be, d);
    be->destroy(be);
    cr_assert_eq(simt_device_bytes_in_use(), before, "device bytes in use: %zu, before: %zu",
                 simt_device_bytes_in_use(), before);
}

/* A runtime call that fails (here: a copy into host memory posing as device memory) stops the
 * program with the call, its file:line and the runtime's message. */
Test(cuda_backend, runtime_errors_are_fatal, .exit_code = 1, .init = sim_silence_stderr) {
    ms_backend *be = sim_cuda(MS_F32);
    float host[4] = {0}, src[4] = {1, 2, 3, 4};
    be->upload(be, host, src, sizeof src);
}

Test(cuda_backend, select_with_an_emulated_gpu) {
    char err[256] = "";
    ms_backend *be = ms_backend_create("auto", 1, 0, err, sizeof err);
    cr_assert_not_null(be, "%s", err);
    cr_assert_str_eq(be->name, "cuda");
    cr_assert_eq(be->act_dtype, MS_F32);
    be->destroy(be);
    be = ms_backend_create("cuda:0", 1, MS_BACKEND_BF16, err, sizeof err);
    cr_assert_not_null(be, "%s", err);
    cr_assert_eq(be->act_dtype, MS_BF16);
    be->destroy(be);
    be = ms_backend_create("cuda:1", 1, 0, err, sizeof err);
    cr_assert_null(be);
    cr_assert(strstr(err, "cuda:1") && strstr(err, "1 CUDA GPU"), "message: %s", err);
    be = ms_backend_create("cpu", 1, 0, err, sizeof err);
    cr_assert_not_null(be, "%s", err);
    cr_assert_str_eq(be->name, "cpu");
    be->destroy(be);
}

Test(cuda_backend, select_without_a_gpu) {
    simt_set_device_count(0);
    char err[256] = "";
    ms_backend *be = ms_backend_create("auto", 1, 0, err, sizeof err);
    cr_assert_not_null(be, "%s", err);
    cr_assert_str_eq(be->name, "cpu");
    be->destroy(be);
    be = ms_backend_create("cuda", 1, 0, err, sizeof err);
    cr_assert_null(be);
    cr_assert(strstr(err, "no CUDA GPU is available"), "message: %s", err);
    be = ms_backend_create("auto", 1, MS_BACKEND_BF16, err, sizeof err);
    cr_assert_null(be);
    cr_assert(strstr(err, "bf16") && strstr(err, "train.precision: fp32"), "message: %s", err);
    be = ms_backend_cuda_create(0, MS_F32, 0, err, sizeof err);
    cr_assert_null(be);
    cr_assert(strstr(err, "no CUDA device available"), "message: %s", err);
}
