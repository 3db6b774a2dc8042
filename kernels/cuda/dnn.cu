/* cuDNN, loaded at run time, and the convolutions of the conv head (conv.cu) through it.
 *
 * Loading. As cuBLAS (blas.cu), cuDNN is not linked: libcudnn and the engine libraries it loads
 * are large, and only the PASCAL-Context conv head needs them. The first convolution opens
 * libcudnn.so.<major of the cudnn.h we compiled against> with dlopen; a machine without it stops
 * there with a message saying what to install, and runs without a conv head never look for it.
 * Under the emulator (MS_SIMT) the entry points are the stand-ins of tests/simt/cudnn.cc. A
 * machine with nvcc but no cudnn.h (or a build with -DMS_NO_CUDNN) still builds the backend; its
 * convolutions then stop with a message saying so.
 *
 * Handles. One cuDNN handle per device for the life of the process (like the loaded library),
 * created on first use and pointed at the calling backend's stream before every call.
 *
 * Algorithms. Each shape (device, type, B, Ci, H, W, Co, k) gets a plan on first use: tensor,
 * filter and convolution descriptors, and per direction the first algorithm of cuDNN's
 * heuristic ranking (cudnnGet*Algorithm_v7) that is supported, DETERMINISTIC (this rules out
 * the atomics-based backward algorithms BWD_DATA_ALGO_0, BWD_FILTER_ALGO_0 and _3) and needs at
 * most DNN_WORKSPACE_CAP of workspace (if none does, the deterministic one with the smallest
 * workspace). The heuristic depends only on the shape, the GPU model and the cuDNN version, so
 * a run is bit-reproducible on the same device, as DESIGN.md principle 5 asks; cudnnFind (which
 * times the candidates) is avoided because its choice can change from run to run. Workspace
 * comes from the backend's SCRATCH_CUDNN buffer. Plans are kept in a small table and reused.
 *
 * Precision. fp32 activations run with CUDNN_FMA_MATH: cuDNN's default math type lets Ampere
 * and newer use TF32 for fp32 convolutions, which the backend's fp32 mode allows only with
 * train.tf32 (as for its GEMMs). With it, fp32 convolutions take the math type the heuristic
 * ranked for CUDNN_DEFAULT_MATH (TF32 tensor cores where they pay), never
 * CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION, which would round fp32 data to half precision; this is
 * what PyTorch does with torch.backends.cudnn.allow_tf32. bf16 activations use cuDNN's bf16
 * configuration: bf16 x, w and y, fp32 compute type, with the math type the heuristic chose
 * (tensor cores). */
#include "cuda_common.h"

#include <string.h>

#if defined(MS_SIMT)
#include "simt_cudnn.h"
#define MS_DNN 1
#elif !defined(MS_NO_CUDNN) && __has_include(<cudnn.h>)
#include <cudnn.h>

#include "../dynlib.h"
#define MS_DNN 1
#else
#define MS_DNN 0
#endif

#if MS_DNN

/* The cuDNN entry points the backend calls (member, cuDNN function). */
#define DNN_ENTRY_POINTS(X)                                                                        \
    X(error_string, cudnnGetErrorString)                                                           \
    X(create, cudnnCreate)                                                                         \
    X(set_stream, cudnnSetStream)                                                                  \
    X(create_tensor, cudnnCreateTensorDescriptor)                                                  \
    X(set_tensor, cudnnSetTensor4dDescriptor)                                                      \
    X(destroy_tensor, cudnnDestroyTensorDescriptor)                                                \
    X(create_filter, cudnnCreateFilterDescriptor)                                                  \
    X(set_filter, cudnnSetFilter4dDescriptor)                                                      \
    X(destroy_filter, cudnnDestroyFilterDescriptor)                                                \
    X(create_conv, cudnnCreateConvolutionDescriptor)                                               \
    X(set_conv, cudnnSetConvolution2dDescriptor)                                                   \
    X(set_math, cudnnSetConvolutionMathType)                                                       \
    X(destroy_conv, cudnnDestroyConvolutionDescriptor)                                             \
    X(fwd_count, cudnnGetConvolutionForwardAlgorithmMaxCount)                                      \
    X(fwd_rank, cudnnGetConvolutionForwardAlgorithm_v7)                                            \
    X(fwd_workspace, cudnnGetConvolutionForwardWorkspaceSize)                                      \
    X(fwd, cudnnConvolutionForward)                                                                \
    X(data_count, cudnnGetConvolutionBackwardDataAlgorithmMaxCount)                                \
    X(data_rank, cudnnGetConvolutionBackwardDataAlgorithm_v7)                                      \
    X(data_workspace, cudnnGetConvolutionBackwardDataWorkspaceSize)                                \
    X(bwd_data, cudnnConvolutionBackwardData)                                                      \
    X(filter_count, cudnnGetConvolutionBackwardFilterAlgorithmMaxCount)                            \
    X(filter_rank, cudnnGetConvolutionBackwardFilterAlgorithm_v7)                                  \
    X(filter_workspace, cudnnGetConvolutionBackwardFilterWorkspaceSize)                            \
    X(bwd_filter, cudnnConvolutionBackwardFilter)

/* Typed by the header's own declarations, so a signature mismatch does not compile. */
struct dnn_api {
#define DNN_MEMBER(member, fn) decltype(&fn) member;
    DNN_ENTRY_POINTS(DNN_MEMBER)
#undef DNN_MEMBER
};
static dnn_api g_dnn;

#define DNN_CHECK(call)                                                                            \
    do {                                                                                           \
        cudnnStatus_t ms_s_ = (call);                                                              \
        if (ms_s_ != CUDNN_STATUS_SUCCESS)                                                         \
            ms_fatal("%s:%d: %s failed: %s", __FILE__, __LINE__, #call,                            \
                     g_dnn.error_string(ms_s_));                                                   \
    } while (0)

#ifdef MS_SIMT

static bool dnn_load(char *err, size_t cap) {
    (void)err, (void)cap;
#define DNN_BIND(member, fn) g_dnn.member = fn;
    DNN_ENTRY_POINTS(DNN_BIND)
#undef DNN_BIND
    return true;
}

#else

static bool dnn_load(char *err, size_t cap) {
    if (g_dnn.bwd_filter) return true;
#define CUDNN_MAJOR_STR MS_DYNLIB_STR(CUDNN_MAJOR)
    static const ms_dynlib lib = {
        "libcudnn.so." CUDNN_MAJOR_STR, "cuDNN",
        "install cuDNN " CUDNN_MAJOR_STR " for this CUDA version or add its library directory "
        "to LD_LIBRARY_PATH",
        "cuDNN " CUDNN_MAJOR_STR "." MS_DYNLIB_STR(CUDNN_MINOR) " or newer is needed"};
    dnn_api api;
    const ms_dynsym syms[] = {
#define DNN_SYMBOL(member, fn) {#fn, &api.member},
        DNN_ENTRY_POINTS(DNN_SYMBOL)
#undef DNN_SYMBOL
    };
    if (!ms_dynlib_load(&lib, syms, sizeof syms / sizeof *syms, err, cap)) return false;
    g_dnn = api; /* the library stays loaded for the life of the process */
    return true;
}

#endif

/* ---- handles ------------------------------------------------------------------------------- */

#define DNN_MAX_DEVICES 64

static cudnnHandle_t g_handle[DNN_MAX_DEVICES]; /* per device, created on first use */

static cudnnHandle_t dnn_handle(ms_backend *be) {
    cuda_ctx *c = cuda_of(be);
    char err[512];
    if (!dnn_load(err, sizeof err))
        ms_fatal("CUDA backend: the convolution head needs cuDNN: %s", err);
    if (c->device < 0 || c->device >= DNN_MAX_DEVICES)
        ms_fatal("CUDA backend: cuDNN handles are kept for devices 0 to %d, not %d",
                 DNN_MAX_DEVICES - 1, c->device);
    cudnnHandle_t *h = &g_handle[c->device];
    if (!*h) {
        CUDA_CHECK(cudaSetDevice(c->device)); /* a handle belongs to the current device */
        cudnnStatus_t s = g_dnn.create(h);
        if (s != CUDNN_STATUS_SUCCESS) {
            *h = NULL;
            ms_fatal("CUDA backend: cannot initialise cuDNN on CUDA device %d: %s", c->device,
                     g_dnn.error_string(s));
        }
    }
    DNN_CHECK(g_dnn.set_stream(*h, c->stream));
    return *h;
}

/* ---- plans ----------------------------------------------------------------------------------- */

/* Workspace an algorithm may ask for before a leaner deterministic one is preferred. */
#define DNN_WORKSPACE_CAP ((size_t)256 << 20)
#define DNN_PLANS 32      /* shapes kept; the conv head has 5 per task and type */
#define DNN_MAX_RANKED 64 /* heuristic entries read per direction */

struct conv_shape {
    int device, dtype, tf32, B, Ci, H, W, Co, k; /* tf32: fp32 data may use TF32 */
};

/* One direction's choice: algorithm, math type, workspace bytes. */
template <typename Algo>
struct conv_choice {
    Algo algo;
    cudnnMathType_t math;
    size_t workspace;
};

struct conv_plan {
    bool used;
    conv_shape shape;
    cudnnTensorDescriptor_t x, y; /* [B, Ci, H, W], [B, Co, H, W] */
    cudnnFilterDescriptor_t w;    /* [Co, Ci, k, k] */
    cudnnConvolutionDescriptor_t conv;
    conv_choice<cudnnConvolutionFwdAlgo_t> fwd;
    conv_choice<cudnnConvolutionBwdDataAlgo_t> data;
    conv_choice<cudnnConvolutionBwdFilterAlgo_t> filter;
};

static conv_plan g_plans[DNN_PLANS];
static int g_plan_evict; /* next entry to replace once the table is full (round robin) */

static const char *dtype_name(int dtype) { return dtype == MS_BF16 ? "bf16" : "fp32"; }

/* The first entry of cuDNN's ranking perf[n] that succeeded, is deterministic, keeps fp32 data
 * in fp32 (exact: FMA only; else TF32 allowed, never a conversion to half precision) and whose
 * workspace fits (pass 0: within the cap; pass 1: any size, smallest first). ws_of(algo,
 * &bytes) asks cuDNN for the workspace at the math type set on conv. */
template <typename Perf, typename Algo, typename WsFn>
static bool choose(const Perf *perf, int n, bool fp32, bool exact,
                   cudnnConvolutionDescriptor_t conv, WsFn ws_of, conv_choice<Algo> *out) {
    bool found = false;
    for (int pass = 0; pass < 2 && !found; pass++) {
        for (int i = 0; i < n; i++) {
            const Perf &p = perf[i];
            if (p.status != CUDNN_STATUS_SUCCESS || p.determinism != CUDNN_DETERMINISTIC) continue;
            if (fp32 && p.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) continue;
            if (exact && p.mathType == CUDNN_TENSOR_OP_MATH) continue;
            cudnnMathType_t math = exact ? CUDNN_FMA_MATH : p.mathType;
            size_t bytes = 0;
            if (g_dnn.set_math(conv, math) != CUDNN_STATUS_SUCCESS ||
                ws_of(p.algo, &bytes) != CUDNN_STATUS_SUCCESS)
                continue;
            if (pass == 0 && bytes > DNN_WORKSPACE_CAP) continue;
            if (pass == 1 && found && bytes >= out->workspace) continue;
            *out = conv_choice<Algo>{p.algo, math, bytes};
            found = true;
            if (pass == 0) break;
        }
    }
    return found;
}

[[noreturn]] static void no_algorithm(const conv_shape &s, const char *direction) {
    ms_fatal("CUDA backend: cuDNN offers no deterministic %s algorithm for the %s convolution "
             "x[%d, %d, %d, %d] * w[%d, %d, %d, %d] on CUDA device %d",
             direction, dtype_name(s.dtype), s.B, s.Ci, s.H, s.W, s.Co, s.Ci, s.k, s.k, s.device);
}

/* Ranks and chooses the algorithms of all three directions for plan p. */
static void choose_algorithms(cudnnHandle_t h, conv_plan *p) {
    const bool fp32 = p->shape.dtype == MS_F32, exact = fp32 && !p->shape.tf32;
    /* The heuristics rank for the math type set on the descriptor: FMA keeps fp32 off TF32,
     * the default lets it use TF32 on Ampere and newer. */
    const cudnnMathType_t query_math = exact  ? CUDNN_FMA_MATH
                                       : fp32 ? CUDNN_DEFAULT_MATH
                                              : CUDNN_TENSOR_OP_MATH;
    int n = 0, got = 0;
    {
        cudnnConvolutionFwdAlgoPerf_t perf[DNN_MAX_RANKED];
        DNN_CHECK(g_dnn.fwd_count(h, &n));
        DNN_CHECK(g_dnn.set_math(p->conv, query_math));
        DNN_CHECK(g_dnn.fwd_rank(h, p->x, p->w, p->conv, p->y,
                                 n < DNN_MAX_RANKED ? n : DNN_MAX_RANKED, &got, perf));
        auto ws = [&](cudnnConvolutionFwdAlgo_t a, size_t *bytes) {
            return g_dnn.fwd_workspace(h, p->x, p->w, p->conv, p->y, a, bytes);
        };
        if (!choose(perf, got, fp32, exact, p->conv, ws, &p->fwd))
            no_algorithm(p->shape, "forward");
    }
    {
        cudnnConvolutionBwdDataAlgoPerf_t perf[DNN_MAX_RANKED];
        DNN_CHECK(g_dnn.data_count(h, &n));
        DNN_CHECK(g_dnn.set_math(p->conv, query_math));
        DNN_CHECK(g_dnn.data_rank(h, p->w, p->y, p->conv, p->x,
                                  n < DNN_MAX_RANKED ? n : DNN_MAX_RANKED, &got, perf));
        auto ws = [&](cudnnConvolutionBwdDataAlgo_t a, size_t *bytes) {
            return g_dnn.data_workspace(h, p->w, p->y, p->conv, p->x, a, bytes);
        };
        if (!choose(perf, got, fp32, exact, p->conv, ws, &p->data))
            no_algorithm(p->shape, "backward-data");
    }
    {
        cudnnConvolutionBwdFilterAlgoPerf_t perf[DNN_MAX_RANKED];
        DNN_CHECK(g_dnn.filter_count(h, &n));
        DNN_CHECK(g_dnn.set_math(p->conv, query_math));
        DNN_CHECK(g_dnn.filter_rank(h, p->x, p->y, p->conv, p->w,
                                    n < DNN_MAX_RANKED ? n : DNN_MAX_RANKED, &got, perf));
        auto ws = [&](cudnnConvolutionBwdFilterAlgo_t a, size_t *bytes) {
            return g_dnn.filter_workspace(h, p->x, p->y, p->conv, p->w, a, bytes);
        };
        if (!choose(perf, got, fp32, exact, p->conv, ws, &p->filter))
            no_algorithm(p->shape, "backward-filter");
    }
}

static void destroy_plan(conv_plan *p) {
    DNN_CHECK(g_dnn.destroy_tensor(p->x));
    DNN_CHECK(g_dnn.destroy_tensor(p->y));
    DNN_CHECK(g_dnn.destroy_filter(p->w));
    DNN_CHECK(g_dnn.destroy_conv(p->conv));
    p->used = false;
}

/* The plan of a stride-1, zero-padded (k/2) cross-correlation (PyTorch's Conv2d) of this shape
 * on be's device and activation type, made on first use. */
static conv_plan *conv_plan_for(ms_backend *be, cudnnHandle_t h, int B, int Ci, int H, int W,
                                int Co, int k) {
    if (B < 1 || Ci < 1 || H < 1 || W < 1 || Co < 1 || k < 1 || k % 2 == 0)
        ms_fatal("CUDA backend: conv2d of x[%d, %d, %d, %d] with %d outputs and kernel %d: sizes "
                 "must be positive and the kernel odd",
                 B, Ci, H, W, Co, k);
    conv_shape s = {cuda_of(be)->device, (int)be->act_dtype, cuda_of(be)->tf32 ? 1 : 0,
                    B, Ci, H, W, Co, k};
    for (int i = 0; i < DNN_PLANS; i++)
        if (g_plans[i].used && memcmp(&g_plans[i].shape, &s, sizeof s) == 0) return &g_plans[i];
    conv_plan *p = NULL;
    for (int i = 0; i < DNN_PLANS && !p; i++)
        if (!g_plans[i].used) p = &g_plans[i];
    if (!p) {
        p = &g_plans[g_plan_evict];
        g_plan_evict = (g_plan_evict + 1) % DNN_PLANS;
        destroy_plan(p);
    }
    memset(p, 0, sizeof *p);
    p->shape = s;
    cudnnDataType_t t = be->act_dtype == MS_BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
    DNN_CHECK(g_dnn.create_tensor(&p->x));
    DNN_CHECK(g_dnn.create_tensor(&p->y));
    DNN_CHECK(g_dnn.create_filter(&p->w));
    DNN_CHECK(g_dnn.create_conv(&p->conv));
    p->used = true;
    DNN_CHECK(g_dnn.set_tensor(p->x, CUDNN_TENSOR_NCHW, t, B, Ci, H, W));
    DNN_CHECK(g_dnn.set_tensor(p->y, CUDNN_TENSOR_NCHW, t, B, Co, H, W));
    DNN_CHECK(g_dnn.set_filter(p->w, t, CUDNN_TENSOR_NCHW, Co, Ci, k, k));
    DNN_CHECK(g_dnn.set_conv(p->conv, k / 2, k / 2, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION,
                             CUDNN_DATA_FLOAT));
    choose_algorithms(h, p);
    return p;
}

static void *workspace(ms_backend *be, size_t bytes) {
    return bytes ? cuda_scratch(be, SCRATCH_CUDNN, bytes) : NULL;
}

void cuda_conv_fwd(ms_backend *be, void *y, float beta, const void *x, const void *w, int B, int Ci,
                   int H, int W, int Co, int k) {
    cudnnHandle_t h = dnn_handle(be);
    conv_plan *p = conv_plan_for(be, h, B, Ci, H, W, Co, k);
    const float one = 1.0f;
    void *ws = workspace(be, p->fwd.workspace);
    DNN_CHECK(g_dnn.set_math(p->conv, p->fwd.math));
    DNN_CHECK(g_dnn.fwd(h, &one, p->x, x, p->w, w, p->conv, p->fwd.algo, ws, p->fwd.workspace,
                        &beta, p->y, y));
}

void cuda_conv_bwd_data(ms_backend *be, void *dx, const void *dy, const void *w, int B, int Ci,
                        int H, int W, int Co, int k) {
    cudnnHandle_t h = dnn_handle(be);
    conv_plan *p = conv_plan_for(be, h, B, Ci, H, W, Co, k);
    const float one = 1.0f, zero = 0.0f;
    void *ws = workspace(be, p->data.workspace);
    DNN_CHECK(g_dnn.set_math(p->conv, p->data.math));
    DNN_CHECK(g_dnn.bwd_data(h, &one, p->w, w, p->y, dy, p->conv, p->data.algo, ws,
                             p->data.workspace, &zero, p->x, dx));
}

void cuda_conv_bwd_filter(ms_backend *be, void *dw, float beta, const void *dy, const void *x,
                          int B, int Ci, int H, int W, int Co, int k) {
    cudnnHandle_t h = dnn_handle(be);
    conv_plan *p = conv_plan_for(be, h, B, Ci, H, W, Co, k);
    const float one = 1.0f;
    void *ws = workspace(be, p->filter.workspace);
    DNN_CHECK(g_dnn.set_math(p->conv, p->filter.math));
    DNN_CHECK(g_dnn.bwd_filter(h, &one, p->x, x, p->y, dy, p->conv, p->filter.algo, ws,
                               p->filter.workspace, &beta, p->w, dw));
}

#else /* built without cuDNN */

[[noreturn]] static void no_cudnn(void) {
    ms_fatal("CUDA backend: this modsquad was compiled without cuDNN (cudnn.h was not found, or "
             "MS_NO_CUDNN was set), which the convolution head (model.head: conv) needs on the "
             "GPU; install cuDNN 9 and rebuild, or run this config with run.device: cpu");
}

void cuda_conv_fwd(ms_backend *, void *, float, const void *, const void *, int, int, int, int, int,
                   int) {
    no_cudnn();
}

void cuda_conv_bwd_data(ms_backend *, void *, const void *, const void *, int, int, int, int, int,
                        int) {
    no_cudnn();
}

void cuda_conv_bwd_filter(ms_backend *, void *, float, const void *, const void *, int, int, int,
                          int, int, int) {
    no_cudnn();
}

#endif
