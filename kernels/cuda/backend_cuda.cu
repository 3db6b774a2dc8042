/* The CUDA backend: context, memory, activation conversion and error reporting.
 *
 * Ops live by family: elementwise.cu (add, scale, GELU, softmax), linear.cu (dense and grouped
 * expert GEMMs), moe.cu (routing, dispatch, combine, MI), moe_aux.cu (noisy gating, balance
 * loss, shared-router task bias), trunk.cu (token plumbing, patches, LayerNorm), attention.cu,
 * losses.cu, optim.cu (AdamW, sum of squares), conv.cu + dnn.cu (the conv head; cuDNN loaded at
 * the first convolution). Every kernel is launched through MS_LAUNCH (launch.h) so tests/simt
 * runs the same source on the CPU. Semantics are those of kernels/backend.h and of the CPU
 * backend (kernels/cpu), which the simt tests compare against op by op and over a whole
 * training step (tests/simt/test_cuda_step.c).
 *
 * Streams and host synchronisation. Every op is queued on one non-blocking stream and returns
 * without waiting, except where the host needs a result: download and download_act (the host
 * reads the data), synchronize, dispatch_plan (the per-expert row offsets are copied to
 * offsets_host, because each expert's GEMM size is a host-side cuBLAS argument: one
 * device-to-host copy of E+1 ints and a stream synchronisation per MoE layer and pass), and
 * growing a scratch buffer (first step only). upload returns once the (pageable) host buffer
 * has been staged by the driver, so the caller may reuse it at once.
 *
 * Precision. fp32 activations: fp32 GEMMs (CUBLAS_COMPUTE_32F; TF32 is not enabled). bf16
 * activations: bf16 storage, every kernel computes in fp32 (reductions in double where the CPU
 * backend uses double), GEMMs take bf16 operands with fp32 accumulation, and parameter
 * gradients are written to the fp32 gradient buffers directly by the GEMM (C in fp32). Weights
 * are fp32 in the interface; a GEMM with bf16 activations converts the weight to bf16 per call
 * into scratch (cuda_weights_as_act). That costs 6 bytes of traffic per weight element per call
 * (docs/kernels.md has the numbers) and needs no invalidation when the optimizer updates the
 * weights; a cached bf16 shadow refreshed by adamw would remove it. */
#include "cuda_common.h"

#include "backend_cuda.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONVERT_THREADS 256

/* ---- error reporting ------------------------------------------------------------------------- */

void ms_cuda_fail(cudaError_t e, const char *call, const char *file, int line) {
    ms_fatal("%s:%d: %s failed: %s (%s)", file, line, call, cudaGetErrorString(e),
             cudaGetErrorName(e));
}

void ms_cublas_fail(cublasStatus_t s, const char *call, const char *file, int line) {
    ms_fatal("%s:%d: %s failed: %s", file, line, call, g_blas.status_string(s));
}

/* MODSQUAD_CUDA_SYNC=1 waits for every kernel, so a fault inside one is reported at its launch
 * rather than at the next synchronising call. */
static int sync_each_launch(void) {
    static int mode = -1;
    if (mode < 0) {
        const char *v = getenv("MODSQUAD_CUDA_SYNC");
        mode = v && v[0] == '1';
    }
    return mode;
}

void ms_cuda_check_launch(const char *kernel, const char *file, int line) {
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess && sync_each_launch()) e = cudaDeviceSynchronize();
    if (e != cudaSuccess)
        ms_fatal("%s:%d: kernel %s failed: %s (%s)", file, line, kernel, cudaGetErrorString(e),
                 cudaGetErrorName(e));
}

/* ---- scratch ------------------------------------------------------------------------ */

void *cuda_scratch(ms_backend *be, cuda_scratch_slot slot, size_t bytes) {
    cuda_ctx *c = cuda_of(be);
    if (bytes <= c->scratch_bytes[slot]) return c->scratch[slot];
    /* Grow by at least half so a slowly increasing size does not reallocate every call. */
    size_t want = c->scratch_bytes[slot] + c->scratch_bytes[slot] / 2;
    if (want < bytes) want = bytes;
    CUDA_CHECK(cudaStreamSynchronize(c->stream)); /* queued work may still use the old buffer */
    CUDA_CHECK(cudaFree(c->scratch[slot]));
    c->scratch[slot] = NULL;
    c->scratch_bytes[slot] = 0;
    cudaError_t e = cudaMalloc(&c->scratch[slot], want);
    if (e != cudaSuccess)
        ms_fatal("CUDA backend: cannot allocate %zu bytes of scratch on device %d: %s", want,
                 c->device, cudaGetErrorString(e));
    c->scratch_bytes[slot] = want;
    return c->scratch[slot];
}

/* ---- fp32 <-> bf16 --------------------------------------------------------------------------- */

__global__ void __launch_bounds__(CONVERT_THREADS)
    f32_to_bf16_kernel(bf16 *dst, const float *src, size_t n) {
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        dst[i] = __float2bfloat16(src[i]);
}

__global__ void __launch_bounds__(CONVERT_THREADS)
    bf16_to_f32_kernel(float *dst, const bf16 *src, size_t n) {
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        dst[i] = __bfloat162float(src[i]);
}

/* Grid of a grid-stride loop over n elements: enough blocks to fill any current GPU, capped so
 * huge n loops instead of launching millions of blocks. */
static unsigned stride_grid(size_t n) {
    unsigned blocks = cdiv(n, CONVERT_THREADS);
    return blocks < 65536 ? blocks : 65536;
}

const void *cuda_weights_as_act(ms_backend *be, const float *w, size_t n) {
    if (be->act_dtype == MS_F32) return w;
    bf16 *wb = (bf16 *)cuda_scratch(be, SCRATCH_WEIGHTS, n * sizeof(bf16));
    if (n)
        MS_LAUNCH(f32_to_bf16_kernel, stride_grid(n), CONVERT_THREADS, 0, cuda_stream(be), wb, w,
                  n);
    return wb;
}

/* ---- memory ops ------------------------------------------------------------------------------ */

static void *cuda_alloc(ms_backend *be, size_t bytes) {
    (void)be;
    void *p = NULL;
    /* cudaMalloc aligns to 256 bytes (the interface asks for 64). */
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        (void)cudaGetLastError(); /* out of memory is reported by the caller, not sticky here */
        return NULL;
    }
    return p;
}

static void cuda_free(ms_backend *be, void *p) {
    (void)be;
    CUDA_CHECK(cudaFree(p));
}

static void cuda_upload(ms_backend *be, void *dst, const void *src_host, size_t bytes) {
    if (bytes)
        CUDA_CHECK(cudaMemcpyAsync(dst, src_host, bytes, cudaMemcpyHostToDevice, cuda_stream(be)));
}

static void cuda_download(ms_backend *be, void *dst_host, const void *src, size_t bytes) {
    if (!bytes) return;
    CUDA_CHECK(cudaMemcpyAsync(dst_host, src, bytes, cudaMemcpyDeviceToHost, cuda_stream(be)));
    CUDA_CHECK(cudaStreamSynchronize(cuda_stream(be)));
}

static void cuda_zero(ms_backend *be, void *dst, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, cuda_stream(be)));
}

static void cuda_copy(ms_backend *be, void *dst, const void *src, size_t bytes) {
    if (bytes && dst != src)
        CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cuda_stream(be)));
}

static void cuda_upload_act(ms_backend *be, ms_act *dst, const float *src_host, size_t n) {
    if (be->act_dtype == MS_F32) {
        cuda_upload(be, dst, src_host, n * sizeof(float));
        return;
    }
    if (!n) return;
    float *staging = (float *)cuda_scratch(be, SCRATCH_STAGING, n * sizeof(float)); /* [n] */
    CUDA_CHECK(cudaMemcpyAsync(staging, src_host, n * sizeof(float), cudaMemcpyHostToDevice,
                               cuda_stream(be)));
    MS_LAUNCH(f32_to_bf16_kernel, stride_grid(n), CONVERT_THREADS, 0, cuda_stream(be), (bf16 *)dst,
              staging, n);
}

static void cuda_download_act(ms_backend *be, float *dst_host, const ms_act *src, size_t n) {
    if (be->act_dtype == MS_F32) {
        cuda_download(be, dst_host, src, n * sizeof(float));
        return;
    }
    if (!n) return;
    float *staging = (float *)cuda_scratch(be, SCRATCH_STAGING, n * sizeof(float)); /* [n] */
    MS_LAUNCH(bf16_to_f32_kernel, stride_grid(n), CONVERT_THREADS, 0, cuda_stream(be), staging,
              (const bf16 *)src, n);
    cuda_download(be, dst_host, staging, n * sizeof(float));
}

static void cuda_synchronize(ms_backend *be) { CUDA_CHECK(cudaStreamSynchronize(cuda_stream(be))); }

static void cuda_destroy(ms_backend *be) {
    cuda_ctx *c = cuda_of(be);
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    for (int s = 0; s < SCRATCH_SLOTS; s++) CUDA_CHECK(cudaFree(c->scratch[s]));
    CUBLAS_CHECK(g_blas.destroy(c->blas));
    CUDA_CHECK(cudaStreamDestroy(c->stream));
    free(c);
    free(be);
}

/* ---- creation -------------------------------------------------------------------------------- */

extern "C" int ms_cuda_device_count(char *err, size_t cap) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        if (!err || !cap) return 0;
        /* The runtime says "driver version is insufficient" also when there is no driver at
         * all, which is the common case on a machine without a GPU: say which it is. */
        int driver = 0, runtime = 0;
        if (e == cudaErrorInsufficientDriver && cudaDriverGetVersion(&driver) == cudaSuccess &&
            cudaRuntimeGetVersion(&runtime) == cudaSuccess) {
            if (driver == 0)
                snprintf(err, cap, "no NVIDIA driver is installed");
            else
                snprintf(err, cap, "the NVIDIA driver supports CUDA %d.%d, this build needs %d.%d",
                         driver / 1000, driver % 1000 / 10, runtime / 1000, runtime % 1000 / 10);
        } else {
            snprintf(err, cap, "%s", cudaGetErrorString(e));
        }
        return 0;
    }
    if (n == 0 && err && cap) snprintf(err, cap, "the CUDA runtime reports no device");
    return n;
}

extern "C" ms_backend *ms_backend_cuda_create(int device, ms_dtype act_dtype, int tf32,
                                              char *err, size_t cap) {
    char why[256];
    int count = ms_cuda_device_count(why, sizeof why);
    if (count == 0) {
        snprintf(err, cap, "no CUDA device available (%s)", why);
        return NULL;
    }
    if (device < 0 || device >= count) {
        snprintf(err, cap, "CUDA device %d requested, but this machine has %d (cuda:0 .. cuda:%d)",
                 device, count, count - 1);
        return NULL;
    }
    if (act_dtype != MS_F32 && act_dtype != MS_BF16) {
        snprintf(err, cap, "unknown activation type %d (fp32 or bf16)", (int)act_dtype);
        return NULL;
    }
    cudaError_t e = cudaSetDevice(device);
    cudaDeviceProp prop;
    if (e == cudaSuccess) e = cudaGetDeviceProperties(&prop, device);
    if (e != cudaSuccess) {
        snprintf(err, cap, "cannot use CUDA device %d: %s", device, cudaGetErrorString(e));
        return NULL;
    }
    /* The kernels are built for sm_80 and sm_90 (plus sm_90 PTX for newer GPUs). */
    if (prop.major < 8) {
        snprintf(err, cap,
                 "CUDA device %d (%s) has compute capability %d.%d; modsquad needs 8.0 or newer",
                 device, prop.name, prop.major, prop.minor);
        return NULL;
    }
    if (!cuda_blas_load(err, cap)) return NULL;
    cuda_ctx *c = (cuda_ctx *)ms_calloc(1, sizeof *c);
    c->device = device;
    c->tf32 = tf32 != 0;
    e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        snprintf(err, cap, "cannot create a stream on CUDA device %d: %s", device,
                 cudaGetErrorString(e));
        free(c);
        return NULL;
    }
    cublasStatus_t s = g_blas.create(&c->blas);
    if (s == CUBLAS_STATUS_SUCCESS) s = g_blas.set_stream(c->blas, c->stream);
    if (s == CUBLAS_STATUS_SUCCESS) s = g_blas.set_math_mode(c->blas, CUBLAS_DEFAULT_MATH);
    if (s != CUBLAS_STATUS_SUCCESS) {
        snprintf(err, cap, "cannot initialise cuBLAS on CUDA device %d: %s", device,
                 g_blas.status_string(s));
        if (c->blas) g_blas.destroy(c->blas);
        cudaStreamDestroy(c->stream);
        free(c);
        return NULL;
    }

    ms_backend *be = (ms_backend *)ms_calloc(1, sizeof *be);
    be->name = "cuda";
    be->act_dtype = act_dtype;
    be->act_size = act_dtype == MS_BF16 ? sizeof(bf16) : sizeof(float);
    be->threads = 0;
    be->ctx = c;
    be->alloc = cuda_alloc;
    be->free = cuda_free;
    be->upload = cuda_upload;
    be->download = cuda_download;
    be->zero = cuda_zero;
    be->copy = cuda_copy;
    be->upload_act = cuda_upload_act;
    be->download_act = cuda_download_act;
    be->synchronize = cuda_synchronize;
    be->destroy = cuda_destroy;
    cuda_register_elementwise(be);
    cuda_register_linear(be);
    cuda_register_moe(be);
    cuda_register_trunk(be);
    cuda_register_attention(be);
    cuda_register_moe_aux(be);
    cuda_register_losses(be);
    cuda_register_optim(be);
    cuda_register_conv(be);
    return be;
}
