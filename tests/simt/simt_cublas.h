/* Stand-in for the subset of cuBLAS that kernels/cuda calls (names, signatures and enum values of
 * cublas_api.h and library_types.h), implemented in cublas.cc with OpenBLAS in fp32. Matrices are
 * column-major as in cuBLAS; arguments are validated as cuBLAS does (leading dimensions, types)
 * and every operand must be emulated device memory, so a row-/column-major mix-up or a host
 * pointer fails here rather than on a user's GPU. bf16 operands are widened to fp32 exactly and
 * the product is accumulated in fp32: what CUBLAS_COMPUTE_32F does on the GPU, up to the order
 * of the sums. */
#ifndef MS_SIMT_CUBLAS_H
#define MS_SIMT_CUBLAS_H

#include <stdint.h>

#include "simt_runtime.h"

extern "C" {

typedef enum {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_EXECUTION_FAILED = 13,
    CUBLAS_STATUS_NOT_SUPPORTED = 15,
} cublasStatus_t;

typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1, CUBLAS_OP_C = 2 } cublasOperation_t;

typedef enum cudaDataType_t { CUDA_R_32F = 0, CUDA_R_16BF = 14 } cudaDataType;

typedef enum {
    CUBLAS_COMPUTE_32F = 68,
    CUBLAS_COMPUTE_32F_PEDANTIC = 69,
    CUBLAS_COMPUTE_32F_FAST_TF32 = 77,
} cublasComputeType_t;

typedef enum { CUBLAS_GEMM_DEFAULT = -1 } cublasGemmAlgo_t;

typedef enum {
    CUBLAS_DEFAULT_MATH = 0,
    CUBLAS_PEDANTIC_MATH = 2,
    CUBLAS_TF32_TENSOR_OP_MATH = 3,
} cublasMath_t;

typedef struct simt_cublas *cublasHandle_t;

cublasStatus_t cublasCreate(cublasHandle_t *handle);
cublasStatus_t cublasDestroy(cublasHandle_t handle);
cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream);
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode);
const char *cublasGetStatusString(cublasStatus_t status);

/* C[m, n] = alpha op(A)[m, k] op(B)[k, n] + beta C, column-major, fp32. */
cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa,
                           cublasOperation_t transb, int m, int n, int k, const float *alpha,
                           const float *A, int lda, const float *B, int ldb, const float *beta,
                           float *C, int ldc);
cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa,
                                         cublasOperation_t transb, int m, int n, int k,
                                         const float *alpha, const float *A, int lda,
                                         long long strideA, const float *B, int ldb,
                                         long long strideB, const float *beta, float *C, int ldc,
                                         long long strideC, int batch);
/* A and B of one type (CUDA_R_32F or CUDA_R_16BF), C of that type or CUDA_R_32F; alpha and
 * beta are floats (compute type CUBLAS_COMPUTE_32F*). */
cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
                            cublasOperation_t transb, int m, int n, int k, const void *alpha,
                            const void *A, cudaDataType Atype, int lda, const void *B,
                            cudaDataType Btype, int ldb, const void *beta, void *C,
                            cudaDataType Ctype, int ldc, cublasComputeType_t computeType,
                            cublasGemmAlgo_t algo);
/* GemmEx over batch problems given by arrays of matrix pointers; the arrays themselves must be
 * device memory, as in cuBLAS, and with bf16 operands the matrices aligned as cublas.cc says. */
cublasStatus_t cublasGemmBatchedEx(cublasHandle_t handle, cublasOperation_t transa,
                                   cublasOperation_t transb, int m, int n, int k,
                                   const void *alpha, const void *const Aarray[],
                                   cudaDataType Atype, int lda, const void *const Barray[],
                                   cudaDataType Btype, int ldb, const void *beta,
                                   void *const Carray[], cudaDataType Ctype, int ldc,
                                   int batchCount, cublasComputeType_t computeType,
                                   cublasGemmAlgo_t algo);
cublasStatus_t cublasGemmStridedBatchedEx(
    cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k,
    const void *alpha, const void *A, cudaDataType Atype, int lda, long long strideA, const void *B,
    cudaDataType Btype, int ldb, long long strideB, const void *beta, void *C, cudaDataType Ctype,
    int ldc, long long strideC, int batch, cublasComputeType_t computeType, cublasGemmAlgo_t algo);

/* ---- emulator controls (not cuBLAS API) ------------------------------------------------------ */
/* Matrix products computed so far (one per problem of a batched call), by how the operands
 * entered them. */
struct simt_cublas_stats {
    unsigned long fp32_products; /* fp32 operands in plain fp32 */
    unsigned long tf32_products; /* fp32 operands rounded to TF32 */
    unsigned long bf16_products; /* bf16 operands */
};
void simt_cublas_get_stats(struct simt_cublas_stats *stats);
}

#endif
