/* Backend selection (kernels/backend_select.c) in the real build: run.device strings, the CPU
 * fallback of auto, and a request for CUDA on a machine without a GPU (or a build without CUDA)
 * answered with an explanation, not a crash. On a machine with a GPU the CUDA cases check that
 * the backend is created instead. tests/simt/test_cuda_backend.c covers the same function
 * against an emulated GPU. */
#include "../testutil.h"

#include <string.h>

#include "../../kernels/backend_select.h"

Test(backend_select, cpu) {
    char err[256] = "";
    ms_backend *be = ms_backend_create("cpu", 1, 0, err, sizeof err);
    cr_assert_not_null(be, "%s", err);
    cr_assert_str_eq(be->name, "cpu");
    cr_assert_eq(be->threads, 1);
    be->destroy(be);
}

/* auto picks the GPU when there is one; cuda then works, and otherwise fails with a reason. */
Test(backend_select, cuda_when_present_else_a_clear_error) {
    char err[256] = "";
    ms_backend *be = ms_backend_create(NULL, 1, 0, err, sizeof err);
    cr_assert_not_null(be, "auto: %s", err);
    int gpu = !strcmp(be->name, "cuda");
    cr_assert(gpu || !strcmp(be->name, "cpu"), "auto gave backend %s", be->name);
    be->destroy(be);
    be = ms_backend_create("cuda", 1, 0, err, sizeof err);
    if (gpu) {
        cr_assert_not_null(be, "cuda: %s", err);
        be->destroy(be);
        return;
    }
    cr_assert_null(be);
    const char *why =
        ms_backend_has_cuda() ? "no CUDA GPU is available" : "built without the CUDA backend";
    cr_assert(strstr(err, why) && strstr(err, "run.device: cpu"), "message: %s", err);
}

Test(backend_select, unknown_device_strings) {
    const char *bad[] = {"gpu", "", "cuda:", "cuda:x", "cuda:12345", "CPU", "cuda0"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char err[256] = "";
        ms_backend *be = ms_backend_create(bad[i], 1, 0, err, sizeof err);
        cr_assert_null(be, "'%s' accepted", bad[i]);
        cr_assert(strstr(err, "expected auto, cpu, cuda or cuda:N"), "'%s': %s", bad[i], err);
    }
}

Test(backend_select, bf16_needs_a_gpu) {
    char err[256] = "";
    ms_backend *be = ms_backend_create("cpu", 1, MS_BACKEND_BF16, err, sizeof err);
    cr_assert_null(be);
    cr_assert(strstr(err, "bf16") && strstr(err, "train.precision: fp32"), "message: %s", err);
}

Test(backend_select, gpu_index_out_of_range) {
    char err[256] = "";
    ms_backend *be = ms_backend_create("cuda:9999", 1, 0, err, sizeof err);
    cr_assert_null(be);
    cr_assert(strstr(err, "cuda:9999"), "message: %s", err);
}

/* Every op of the CPU backend is there (a new op in backend.h without its CPU version fails). */
Test(backend_select, cpu_backend_is_complete) {
    char err[256];
    ms_backend *be = ms_backend_create("cpu", 1, 0, err, sizeof err);
    cr_assert_not_null(be, "%s", err);
    cr_assert_eq(ms_backend_missing_ops(be), 0, "the CPU backend lacks %d ops", ms_backend_missing_ops(be));
    be->destroy(be);
}
