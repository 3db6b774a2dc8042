/* cuBLAS, loaded at run time, and the row-major GEMM helper of the CUDA backend.
 *
 * libcublas pulls in libcublasLt (over 500 MB), and loading them costs every process that links
 * them about 0.1 s at start-up, GPU or not: each test process and each CLI run on a laptop. So
 * modsquad does not link cuBLAS; ms_backend_cuda_create loads it with dlopen (the soname of the
 * major version it was compiled against) and a machine without it gets a clear error instead of
 * a program that does not start. Under the emulator (MS_SIMT) the pointers are the stand-ins. */
#include "cuda_common.h"

#ifndef MS_SIMT
#include "../dynlib.h"
#endif

cuda_blas_api g_blas;

#ifdef MS_SIMT

bool cuda_blas_load(char *err, size_t cap) {
    (void)err, (void)cap;
    g_blas.create = cublasCreate;
    g_blas.destroy = cublasDestroy;
    g_blas.set_stream = cublasSetStream;
    g_blas.set_math_mode = cublasSetMathMode;
    g_blas.status_string = cublasGetStatusString;
    g_blas.gemm_ex = cublasGemmEx;
    g_blas.gemm_batched_ex = cublasGemmBatchedEx;
    return true;
}

#else

bool cuda_blas_load(char *err, size_t cap) {
    if (g_blas.gemm_ex) return true;
#define CUBLAS_MAJOR_STR MS_DYNLIB_STR(CUBLAS_VER_MAJOR)
    static const ms_dynlib lib = {"libcublas.so." CUBLAS_MAJOR_STR, "cuBLAS",
                                  "install the CUDA " CUBLAS_MAJOR_STR " toolkit's libraries or "
                                  "add their directory to LD_LIBRARY_PATH",
                                  NULL};
    cuda_blas_api api;
    /* The exported names: cublas_v2.h maps cublasCreate and friends to their _v2 symbols. */
    const ms_dynsym syms[] = {
        {"cublasCreate_v2", &api.create},
        {"cublasDestroy_v2", &api.destroy},
        {"cublasSetStream_v2", &api.set_stream},
        {"cublasSetMathMode", &api.set_math_mode},
        {"cublasGetStatusString", &api.status_string},
        {"cublasGemmEx", &api.gemm_ex},
        {"cublasGemmBatchedEx", &api.gemm_batched_ex},
    };
    if (!ms_dynlib_load(&lib, syms, sizeof syms / sizeof *syms, err, cap)) return false;
    g_blas = api; /* the library stays loaded for the life of the process */
    return true;
}

#endif

/* fp32 sums; fp32 operands may be rounded to TF32 (10 mantissa bits) when the run allows it, which
 * leaves bf16 operands (already narrower) alone. */
static cublasComputeType_t compute_type(ms_backend *be, cudaDataType a_type) {
    return cuda_of(be)->tf32 && a_type == CUDA_R_32F ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                     : CUBLAS_COMPUTE_32F;
}

void cuda_gemm(ms_backend *be, bool trans_a, bool trans_b, int M, int N, int K, float alpha,
               const void *A, cudaDataType a_type, int lda, const void *B, cudaDataType b_type,
               int ldb, float beta, void *C, cudaDataType c_type, int ldc) {
    if (M <= 0 || N <= 0) return;
    /* A row-major matrix is the column-major view of its transpose with the same leading
     * dimension, so row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: one cuBLAS
     * call with the operands swapped and each keeping its own transpose flag. */
    cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    CUBLAS_CHECK(g_blas.gemm_ex(cuda_of(be)->blas, op_b, op_a, N, M, K, &alpha, B, b_type, ldb, A,
                                a_type, lda, &beta, C, c_type, ldc, compute_type(be, a_type),
                                CUBLAS_GEMM_DEFAULT));
}

void cuda_gemm_ptr_batched(ms_backend *be, bool trans_a, bool trans_b, int M, int N, int K,
                           float alpha, const void *const *A, cudaDataType a_type, int lda,
                           const void *const *B, cudaDataType b_type, int ldb, float beta,
                           void *const *C, cudaDataType c_type, int ldc, int batch) {
    if (M <= 0 || N <= 0 || batch <= 0) return;
    /* The operand swap of cuda_gemm, applied to every problem of the batch. */
    cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    CUBLAS_CHECK(g_blas.gemm_batched_ex(cuda_of(be)->blas, op_b, op_a, N, M, K, &alpha, B, b_type,
                                        ldb, A, a_type, lda, &beta, C, c_type, ldc, batch,
                                        compute_type(be, a_type), CUBLAS_GEMM_DEFAULT));
}
