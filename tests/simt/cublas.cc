/* cuBLAS stand-in (scope in simt_cublas.h): column-major GEMMs through OpenBLAS's cblas_sgemm.
 *
 * Validation follows cuBLAS: negative sizes, leading dimensions smaller than the rows of the
 * stored matrix, or unsupported type combinations are CUBLAS_STATUS_INVALID_VALUE /
 * NOT_SUPPORTED. An operand that is not emulated device memory (a host pointer, or a matrix
 * running past its allocation) is reported on stderr and fails with
 * CUBLAS_STATUS_EXECUTION_FAILED, where a GPU would fault. As in cuBLAS, C is not read when
 * beta is 0. A product allowed to use TF32 (CUBLAS_COMPUTE_32F_FAST_TF32, or CUBLAS_COMPUTE_32F
 * on a handle in CUBLAS_TF32_TENSOR_OP_MATH) rounds its fp32 operands to TF32 first, as the
 * tensor cores read them, so its results differ from plain fp32 as on a GPU. */
#include "simt.h"

#include <cblas.h>

#include <atomic>

#include <cstdio>
#include <vector>

struct simt_cublas {
    cudaStream_t stream;
    cublasMath_t math;
};

namespace {

/* Products computed, by operand precision (simt_cublas_get_stats). */
std::atomic<unsigned long> g_fp32_products, g_tf32_products, g_bf16_products;

size_t type_bytes(cudaDataType t) {
    switch (t) {
    case CUDA_R_32F:
        return 4;
    case CUDA_R_16BF:
        return 2;
    }
    return 0;
}

/* Elements spanned by a column-major rows x cols matrix with leading dimension ld. */
size_t span(int rows, int cols, int ld) {
    return rows && cols ? (size_t)(cols - 1) * (size_t)ld + (size_t)rows : 0;
}

bool on_device(const char *name, const void *p, cudaDataType t, int rows, int cols, int ld) {
    size_t n = span(rows, cols, ld);
    if (n == 0 || simt::is_device_range(p, n * type_bytes(t))) return true;
    std::fprintf(stderr,
                 "simt cuBLAS: operand %s (%p, %d x %d, ld %d) is not inside one device "
                 "allocation\n",
                 name, p, rows, cols, ld);
    return false;
}

/* fp32 copy of the n elements of a matrix stored as type t (same layout). */
std::vector<float> widen(const void *p, cudaDataType t, size_t n) {
    std::vector<float> out(n);
    if (t == CUDA_R_32F)
        std::memcpy(out.data(), p, n * sizeof(float));
    else
        for (size_t i = 0; i < n; i++)
            out[i] = __bfloat162float(static_cast<const __nv_bfloat16 *>(p)[i]);
    return out;
}

/* x rounded to TF32 (8 exponent bits, 10 mantissa bits) to nearest, ties away from zero, as
 * cvt.rna.tf32.f32 does; infinities and NaN pass unchanged. */
void round_to_tf32(std::vector<float> &v) {
    for (float &x : v) {
        uint32_t u;
        std::memcpy(&u, &x, sizeof u);
        if ((u & 0x7f800000u) == 0x7f800000u) continue;
        u = (u + 0x1000u) & 0xffffe000u;
        std::memcpy(&x, &u, sizeof x);
    }
}

CBLAS_TRANSPOSE cblas_op(cublasOperation_t op) {
    return op == CUBLAS_OP_N ? CblasNoTrans : CblasTrans;
}

cublasStatus_t gemm(cublasHandle_t handle, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                    int k, const float *alpha, const void *A, cudaDataType At, int lda,
                    const void *B, cudaDataType Bt, int ldb, const float *beta, void *C,
                    cudaDataType Ct, int ldc, cublasComputeType_t compute) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    auto valid_op = [](cublasOperation_t op) {
        return op == CUBLAS_OP_N || op == CUBLAS_OP_T || op == CUBLAS_OP_C;
    };
    if (m < 0 || n < 0 || k < 0 || !valid_op(ta) || !valid_op(tb) || !alpha || !beta)
        return CUBLAS_STATUS_INVALID_VALUE;
    int rows_a = ta == CUBLAS_OP_N ? m : k, cols_a = ta == CUBLAS_OP_N ? k : m;
    int rows_b = tb == CUBLAS_OP_N ? k : n, cols_b = tb == CUBLAS_OP_N ? n : k;
    if (lda < (rows_a > 1 ? rows_a : 1) || ldb < (rows_b > 1 ? rows_b : 1) || ldc < (m > 1 ? m : 1))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (At != Bt || !type_bytes(At) || (Ct != At && Ct != CUDA_R_32F))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (compute != CUBLAS_COMPUTE_32F && compute != CUBLAS_COMPUTE_32F_PEDANTIC &&
        !(compute == CUBLAS_COMPUTE_32F_FAST_TF32 && At == CUDA_R_32F))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    /* Work queued on the stream before this call (an NCCL collective) comes first. */
    simt::stream_wait(handle->stream);
    if (!on_device("C", C, Ct, m, n, ldc) ||
        (k > 0 && (!on_device("A", A, At, rows_a, cols_a, lda) ||
                   !on_device("B", B, Bt, rows_b, cols_b, ldb))))
        return CUBLAS_STATUS_EXECUTION_FAILED;
    bool tf32 = At == CUDA_R_32F &&
                (compute == CUBLAS_COMPUTE_32F_FAST_TF32 ||
                 (compute == CUBLAS_COMPUTE_32F && handle->math == CUBLAS_TF32_TENSOR_OP_MATH));
    (At != CUDA_R_32F ? g_bf16_products : tf32 ? g_tf32_products : g_fp32_products)++;

    std::vector<float> a, b, c;
    const float *af = static_cast<const float *>(A), *bf = static_cast<const float *>(B);
    if (At != CUDA_R_32F || tf32) {
        a = widen(A, At, span(rows_a, cols_a, lda));
        b = widen(B, Bt, span(rows_b, cols_b, ldb));
        if (tf32) round_to_tf32(a), round_to_tf32(b);
        af = a.data(), bf = b.data();
    }
    float *cf = static_cast<float *>(C);
    size_t cn = span(m, n, ldc);
    if (Ct != CUDA_R_32F) {
        c = *beta != 0.0f ? widen(C, Ct, cn) : std::vector<float>(cn, 0.0f);
        cf = c.data();
    }
    /* k == 0 leaves C = beta C, as cuBLAS does; OpenBLAS needs lda >= 1 even then. */
    cblas_sgemm(CblasColMajor, cblas_op(ta), cblas_op(tb), m, n, k, *alpha, af, lda, bf, ldb, *beta,
                cf, ldc);
    if (Ct != CUDA_R_32F) {
        __nv_bfloat16 *out = static_cast<__nv_bfloat16 *>(C);
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                size_t at = (size_t)j * (size_t)ldc + (size_t)i;
                out[at] = __float2bfloat16(cf[at]);
            }
    }
    return CUBLAS_STATUS_SUCCESS;
}

const void *offset(const void *p, cudaDataType t, long long elements) {
    return static_cast<const char *>(p) + elements * (long long)type_bytes(t);
}

} // namespace

extern "C" {

cublasStatus_t cublasCreate(cublasHandle_t *handle) {
    if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    *handle = new simt_cublas{nullptr, CUBLAS_DEFAULT_MATH};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    handle->stream = stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (mode != CUBLAS_DEFAULT_MATH && mode != CUBLAS_PEDANTIC_MATH &&
        mode != CUBLAS_TF32_TENSOR_OP_MATH)
        return CUBLAS_STATUS_INVALID_VALUE;
    handle->math = mode;
    return CUBLAS_STATUS_SUCCESS;
}

const char *cublasGetStatusString(cublasStatus_t status) {
    switch (status) {
    case CUBLAS_STATUS_SUCCESS:
        return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
        return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED:
        return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE:
        return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED:
        return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_SUPPORTED:
        return "CUBLAS_STATUS_NOT_SUPPORTED";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa,
                           cublasOperation_t transb, int m, int n, int k, const float *alpha,
                           const float *A, int lda, const float *B, int ldb, const float *beta,
                           float *C, int ldc) {
    return gemm(handle, transa, transb, m, n, k, alpha, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb,
                beta, C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F);
}

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa,
                                         cublasOperation_t transb, int m, int n, int k,
                                         const float *alpha, const float *A, int lda,
                                         long long strideA, const float *B, int ldb,
                                         long long strideB, const float *beta, float *C, int ldc,
                                         long long strideC, int batch) {
    return cublasGemmStridedBatchedEx(handle, transa, transb, m, n, k, alpha, A, CUDA_R_32F, lda,
                                      strideA, B, CUDA_R_32F, ldb, strideB, beta, C, CUDA_R_32F,
                                      ldc, strideC, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
                            cublasOperation_t transb, int m, int n, int k, const void *alpha,
                            const void *A, cudaDataType Atype, int lda, const void *B,
                            cudaDataType Btype, int ldb, const void *beta, void *C,
                            cudaDataType Ctype, int ldc, cublasComputeType_t computeType,
                            cublasGemmAlgo_t algo) {
    (void)algo;
    return gemm(handle, transa, transb, m, n, k, static_cast<const float *>(alpha), A, Atype, lda,
                B, Btype, ldb, static_cast<const float *>(beta), C, Ctype, ldc, computeType);
}

cublasStatus_t cublasGemmBatchedEx(cublasHandle_t handle, cublasOperation_t transa,
                                   cublasOperation_t transb, int m, int n, int k,
                                   const void *alpha, const void *const Aarray[],
                                   cudaDataType Atype, int lda, const void *const Barray[],
                                   cudaDataType Btype, int ldb, const void *beta,
                                   void *const Carray[], cudaDataType Ctype, int ldc,
                                   int batchCount, cublasComputeType_t computeType,
                                   cublasGemmAlgo_t algo) {
    (void)algo;
    if (batchCount < 0) return CUBLAS_STATUS_INVALID_VALUE;
    if (batchCount == 0) return CUBLAS_STATUS_SUCCESS;
    /* cuBLAS reads the pointer arrays on the GPU: host arrays fault there. */
    size_t bytes = (size_t)batchCount * sizeof(void *);
    const void *arrays[3] = {Aarray, Barray, Carray};
    for (const void *a : arrays)
        if (!simt::is_device_range(a, bytes)) {
            std::fprintf(stderr,
                         "simt cuBLAS: cublasGemmBatchedEx pointer array %p (%d entries) is not "
                         "inside one device allocation\n",
                         a, batchCount);
            return CUBLAS_STATUS_EXECUTION_FAILED;
        }
    /* cuBLAS cannot see the addresses either, and documents an alignment requirement for them
     * with 16-bit operands; the stand-in enforces this conservative form of it: 16 bytes when
     * k * 2 is a multiple of 16, 4 bytes when it is a multiple of 4. */
    size_t align = Atype != CUDA_R_16BF ? 1 : (k * 2) % 16 == 0 ? 16 : (k * 2) % 4 == 0 ? 4 : 1;
    for (int i = 0; i < batchCount; i++) {
        const void *mats[3] = {Aarray[i], Barray[i], Carray[i]};
        for (int j = 0; j < 3; j++)
            if ((uintptr_t)mats[j] % align) {
                std::fprintf(stderr,
                             "simt cuBLAS: cublasGemmBatchedEx %c[%d] = %p is not %zu-byte "
                             "aligned (bf16 operands, k %d)\n",
                             "ABC"[j], i, mats[j], align, k);
                return CUBLAS_STATUS_EXECUTION_FAILED;
            }
    }
    for (int i = 0; i < batchCount; i++) {
        cublasStatus_t s = gemm(handle, transa, transb, m, n, k, static_cast<const float *>(alpha),
                                Aarray[i], Atype, lda, Barray[i], Btype, ldb,
                                static_cast<const float *>(beta), Carray[i], Ctype, ldc,
                                computeType);
        if (s != CUBLAS_STATUS_SUCCESS) return s;
    }
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmStridedBatchedEx(
    cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k,
    const void *alpha, const void *A, cudaDataType Atype, int lda, long long strideA, const void *B,
    cudaDataType Btype, int ldb, long long strideB, const void *beta, void *C, cudaDataType Ctype,
    int ldc, long long strideC, int batch, cublasComputeType_t computeType, cublasGemmAlgo_t algo) {
    (void)algo;
    if (batch < 0) return CUBLAS_STATUS_INVALID_VALUE;
    for (int i = 0; i < batch; i++) {
        cublasStatus_t s =
            gemm(handle, transa, transb, m, n, k, static_cast<const float *>(alpha),
                 offset(A, Atype, i * strideA), Atype, lda, offset(B, Btype, i * strideB), Btype,
                 ldb, static_cast<const float *>(beta),
                 const_cast<void *>(offset(C, Ctype, i * strideC)), Ctype, ldc, computeType);
        if (s != CUBLAS_STATUS_SUCCESS) return s;
    }
    return CUBLAS_STATUS_SUCCESS;
}

void simt_cublas_get_stats(struct simt_cublas_stats *stats) {
    stats->fp32_products = g_fp32_products;
    stats->tf32_products = g_tf32_products;
    stats->bf16_products = g_bf16_products;
}
}
