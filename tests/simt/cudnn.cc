/* cuDNN stand-in (scope and checks in simt_cudnn.h): 2-D convolutions, forward, backward data
 * and backward filter, as direct loops summed in double, so they serve as the reference the
 * emulated backend is compared with.
 *
 * Workspace. Every algorithm reports a size from cudnnGet*WorkspaceSize (some 0); a call must
 * pass at least that much emulated device memory, which the stand-in then overwrites (as a GPU
 * algorithm would use it), so a workspace that is too small, on the host or shared with live data
 * shows up. Descriptors are tracked while alive: a destroyed or never-set descriptor is refused
 * instead of being read. */
#include "simt.h"
#include "simt_cudnn.h"

#include <cstdio>
#include <set>
#include <vector>

struct cudnnContext {
    cudaStream_t stream;
};

struct cudnnTensorStruct {
    bool set;
    cudnnDataType_t type;
    int n, c, h, w;
};

struct cudnnFilterStruct {
    bool set;
    cudnnDataType_t type;
    int k, c, h, w;
};

struct cudnnConvolutionStruct {
    bool set;
    int pad_h, pad_w, u, v, dil_h, dil_w;
    cudnnConvolutionMode_t mode;
    cudnnDataType_t compute;
    cudnnMathType_t math;
};

namespace {

std::set<const void *> g_live; /* handles and descriptors not yet destroyed */
simt_cudnn_stats g_stats;

cudnnStatus_t fail(cudnnStatus_t s, const char *fn, const char *why) {
    std::fprintf(stderr, "simt cuDNN: %s: %s\n", fn, why);
    return s;
}

size_t type_bytes(cudnnDataType_t t) {
    return t == CUDNN_DATA_FLOAT ? 4 : t == CUDNN_DATA_BFLOAT16 ? 2 : 0;
}

float load(const void *p, cudnnDataType_t t, size_t i) {
    return t == CUDNN_DATA_FLOAT ? static_cast<const float *>(p)[i]
                                 : __bfloat162float(static_cast<const __nv_bfloat16 *>(p)[i]);
}

void store(void *p, cudnnDataType_t t, size_t i, float v) {
    if (t == CUDNN_DATA_FLOAT)
        static_cast<float *>(p)[i] = v;
    else
        static_cast<__nv_bfloat16 *>(p)[i] = __float2bfloat16(v);
}

template <typename D>
bool usable(const D *d) {
    return d && g_live.count(d) && d->set;
}

/* One convolution problem, checked as cuDNN checks it: x[n, c, h, w] * w[k, c, r, s] ->
 * y[n, k, oh, ow]. */
struct problem {
    int n, c, h, w, k, r, s, oh, ow;
    cudnnDataType_t type;
    const cudnnConvolutionStruct *conv;
    size_t x_elems() const { return (size_t)n * c * h * w; }
    size_t w_elems() const { return (size_t)k * c * r * s; }
    size_t y_elems() const { return (size_t)n * k * oh * ow; }
};

cudnnStatus_t check_problem(const char *fn, cudnnHandle_t handle, cudnnTensorDescriptor_t xd,
                            cudnnFilterDescriptor_t wd, cudnnConvolutionDescriptor_t cd,
                            cudnnTensorDescriptor_t yd, problem *p) {
    char why[256];
    if (!handle || !g_live.count(handle))
        return fail(CUDNN_STATUS_BAD_PARAM, fn, "the handle is not a live cudnnCreate handle");
    if (!usable(xd) || !usable(yd))
        return fail(CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED, fn,
                    "a tensor descriptor was destroyed or never set");
    if (!usable(wd))
        return fail(CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED, fn,
                    "the filter descriptor was destroyed or never set");
    if (!usable(cd))
        return fail(CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED, fn,
                    "the convolution descriptor was destroyed or never set");
    if (xd->type != wd->type || yd->type != wd->type)
        return fail(CUDNN_STATUS_BAD_PARAM, fn, "x, w and y must have one data type");
    if (cd->compute != CUDNN_DATA_FLOAT)
        return fail(CUDNN_STATUS_NOT_SUPPORTED, fn,
                    "fp32 and bf16 data need the fp32 compute type");
    if (xd->c != wd->c) {
        std::snprintf(why, sizeof why, "x has %d channels, the filter expects %d", xd->c, wd->c);
        return fail(CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH, fn, why);
    }
    int oh = (xd->h + 2 * cd->pad_h - cd->dil_h * (wd->h - 1) - 1) / cd->u + 1;
    int ow = (xd->w + 2 * cd->pad_w - cd->dil_w * (wd->w - 1) - 1) / cd->v + 1;
    if (oh < 1 || ow < 1)
        return fail(CUDNN_STATUS_BAD_PARAM, fn, "the filter is larger than the padded input");
    if (yd->n != xd->n || yd->c != wd->k || yd->h != oh || yd->w != ow) {
        std::snprintf(why, sizeof why,
                      "the output descriptor is %dx%dx%dx%d, the convolution gives %dx%dx%dx%d",
                      yd->n, yd->c, yd->h, yd->w, xd->n, wd->k, oh, ow);
        return fail(CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH, fn, why);
    }
    *p = problem{xd->n, xd->c, xd->h, xd->w, wd->k, wd->h, wd->w, oh, ow, xd->type, cd};
    return CUDNN_STATUS_SUCCESS;
}

/* Visits every (input element, filter element, output element) triple of the convolution with
 * their flat indices. */
template <typename F>
void for_each_tap(const problem &p, F f) {
    const cudnnConvolutionStruct &cv = *p.conv;
    for (int n = 0; n < p.n; n++)
        for (int k = 0; k < p.k; k++)
            for (int oy = 0; oy < p.oh; oy++)
                for (int ox = 0; ox < p.ow; ox++) {
                    size_t yi = (((size_t)n * p.k + k) * p.oh + oy) * p.ow + ox;
                    for (int c = 0; c < p.c; c++)
                        for (int r = 0; r < p.r; r++) {
                            int iy = oy * cv.u - cv.pad_h + r * cv.dil_h;
                            if (iy < 0 || iy >= p.h) continue;
                            for (int s = 0; s < p.s; s++) {
                                int ix = ox * cv.v - cv.pad_w + s * cv.dil_w;
                                if (ix < 0 || ix >= p.w) continue;
                                /* CUDNN_CONVOLUTION flips the filter; cross-correlation not */
                                int fr = cv.mode == CUDNN_CONVOLUTION ? p.r - 1 - r : r;
                                int fs = cv.mode == CUDNN_CONVOLUTION ? p.s - 1 - s : s;
                                size_t xi = (((size_t)n * p.c + c) * p.h + iy) * p.w + ix;
                                size_t wi = (((size_t)k * p.c + c) * p.r + fr) * p.s + fs;
                                f(xi, wi, yi);
                            }
                        }
                }
}

bool on_device(const char *fn, const char *name, const void *ptr, size_t bytes) {
    if (bytes == 0 || simt::is_device_range(ptr, bytes)) return true;
    std::fprintf(stderr, "simt cuDNN: %s: %s (%p, %zu bytes) is not inside one device allocation\n",
                 fn, name, ptr, bytes);
    return false;
}

/* Checks the pointers and workspace of a call and overwrites `needed` bytes of the workspace. */
cudnnStatus_t check_run(const char *fn, const problem &p, const void *x, const void *w,
                        const void *y, const void *alpha, const void *beta, void *ws,
                        size_t ws_bytes, size_t needed) {
    if (!alpha || !beta) return fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, fn, "alpha or beta");
    if (ws_bytes < needed) {
        char why[160];
        std::snprintf(why, sizeof why, "the workspace has %zu bytes, the algorithm needs %zu",
                      ws_bytes, needed);
        return fail(CUDNN_STATUS_BAD_PARAM, fn, why);
    }
    size_t e = type_bytes(p.type);
    if (!on_device(fn, "x", x, p.x_elems() * e) || !on_device(fn, "w", w, p.w_elems() * e) ||
        !on_device(fn, "y", y, p.y_elems() * e) || !on_device(fn, "workspace", ws, needed))
        return CUDNN_STATUS_EXECUTION_FAILED;
    if (needed) std::memset(ws, 0x5a, needed);
    g_stats.runs++;
    if (p.type == CUDNN_DATA_FLOAT && p.conv->math != CUDNN_FMA_MATH) g_stats.tf32_runs++;
    return CUDNN_STATUS_SUCCESS;
}

/* out = alpha * acc + beta * out (out not read when beta is 0), in fp32 as cuDNN blends. */
void blend(void *out, cudnnDataType_t t, const std::vector<double> &acc, const void *alpha,
           const void *beta) {
    float a = *static_cast<const float *>(alpha), b = *static_cast<const float *>(beta);
    for (size_t i = 0; i < acc.size(); i++) {
        float v = a * (float)acc[i];
        if (b != 0.0f) v += b * load(out, t, i);
        store(out, t, i, v);
    }
}

cudnnMathType_t heuristic_math(const problem &p) {
    /* On a GPU the fp32 entries come back with the default math type, which lets Ampere and
     * newer run them as TF32: callers that want fp32 must ask for CUDNN_FMA_MATH themselves. */
    return p.type == CUDNN_DATA_FLOAT ? CUDNN_DEFAULT_MATH : CUDNN_TENSOR_OP_MATH;
}

/* ---- per-algorithm workspace sizes (0: none; SIZE_MAX: not supported) ----------------------- */

size_t fwd_workspace(const problem &p, cudnnConvolutionFwdAlgo_t a) {
    switch (a) {
    case CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM:
        return 0;
    case CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM: /* a table of tap offsets */
        return sizeof(int) * (size_t)p.c * p.r * p.s;
    case CUDNN_CONVOLUTION_FWD_ALGO_GEMM: /* the im2col of one image */
        return type_bytes(p.type) * (size_t)p.c * p.r * p.s * p.oh * p.ow;
    default:
        return SIZE_MAX;
    }
}

size_t bwd_data_workspace(const problem &p, cudnnConvolutionBwdDataAlgo_t a) {
    switch (a) {
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_0:
        return 0;
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_1: /* fp32 partial sums of one image */
        return sizeof(float) * (size_t)p.c * p.h * p.w;
    default:
        return SIZE_MAX;
    }
}

size_t bwd_filter_workspace(const problem &p, cudnnConvolutionBwdFilterAlgo_t a) {
    switch (a) {
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0:
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3:
        return 0;
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1: /* fp32 partial sums of the filter */
        return sizeof(float) * p.w_elems();
    default:
        return SIZE_MAX;
    }
}

/* Fills perf[] from a fixed ranking, each entry with its status and workspace. */
template <typename Perf, typename Algo, typename Ws>
void rank(const problem &p, const Algo *order, const cudnnDeterminism_t *det, int n_order,
          Ws workspace, int requested, int *returned, Perf *perf) {
    int n = 0;
    for (int i = 0; i < n_order && n < requested; i++, n++) {
        size_t ws = workspace(p, order[i]);
        Perf e = {};
        e.algo = order[i];
        e.status = ws == SIZE_MAX ? CUDNN_STATUS_NOT_SUPPORTED : CUDNN_STATUS_SUCCESS;
        e.time = ws == SIZE_MAX ? -1.0f : 0.1f * (float)(i + 1);
        e.memory = ws == SIZE_MAX ? 0 : ws;
        e.determinism = det[i];
        e.mathType = heuristic_math(p);
        perf[n] = e;
    }
    *returned = n;
}

const char *const k_not_supported = "this algorithm is not supported for this problem";

} // namespace

extern "C" {

size_t cudnnGetVersion(void) { return CUDNN_VERSION; }

const char *cudnnGetErrorString(cudnnStatus_t status) {
    switch (status) {
    case CUDNN_STATUS_SUCCESS:
        return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_NOT_INITIALIZED:
        return "CUDNN_STATUS_NOT_INITIALIZED";
    case CUDNN_STATUS_BAD_PARAM:
        return "CUDNN_STATUS_BAD_PARAM";
    case CUDNN_STATUS_BAD_PARAM_NULL_POINTER:
        return "CUDNN_STATUS_BAD_PARAM_NULL_POINTER";
    case CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED:
        return "CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED";
    case CUDNN_STATUS_BAD_PARAM_SIZE_INSUFFICIENT:
        return "CUDNN_STATUS_BAD_PARAM_SIZE_INSUFFICIENT";
    case CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH:
        return "CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH";
    case CUDNN_STATUS_NOT_SUPPORTED:
        return "CUDNN_STATUS_NOT_SUPPORTED";
    case CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE:
        return "CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE";
    case CUDNN_STATUS_NOT_SUPPORTED_LAYOUT:
        return "CUDNN_STATUS_NOT_SUPPORTED_LAYOUT";
    case CUDNN_STATUS_EXECUTION_FAILED:
        return "CUDNN_STATUS_EXECUTION_FAILED";
    }
    return "CUDNN_STATUS_UNKNOWN";
}

cudnnStatus_t cudnnCreate(cudnnHandle_t *handle) {
    if (!handle) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0)
        return CUDNN_STATUS_NOT_INITIALIZED;
    *handle = new cudnnContext{nullptr};
    g_live.insert(*handle);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnDestroy(cudnnHandle_t handle) {
    if (!handle || !g_live.erase(handle)) return CUDNN_STATUS_BAD_PARAM;
    delete handle;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetStream(cudnnHandle_t handle, cudaStream_t streamId) {
    if (!handle || !g_live.count(handle)) return CUDNN_STATUS_BAD_PARAM;
    handle->stream = streamId;
    return CUDNN_STATUS_SUCCESS;
}

/* ---- descriptors ----------------------------------------------------------------------------- */

cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t *tensorDesc) {
    if (!tensorDesc) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    *tensorDesc = new cudnnTensorStruct{};
    g_live.insert(*tensorDesc);
    return CUDNN_STATUS_SUCCESS;
}

/* Shared checks of the 4-D tensor and filter setters. */
static cudnnStatus_t check_4d(const char *fn, cudnnTensorFormat_t format, cudnnDataType_t type,
                              int a, int b, int c, int d) {
    if (a < 1 || b < 1 || c < 1 || d < 1)
        return fail(CUDNN_STATUS_BAD_PARAM, fn, "every dimension must be at least 1");
    if ((double)a * b * c * d > (double)INT32_MAX)
        return fail(CUDNN_STATUS_NOT_SUPPORTED, fn, "more than 2^31 - 1 elements");
    if (format != CUDNN_TENSOR_NCHW)
        return fail(CUDNN_STATUS_NOT_SUPPORTED_LAYOUT, fn, "the stand-in supports NCHW only");
    if (!type_bytes(type))
        return fail(CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE, fn,
                    "the stand-in supports CUDNN_DATA_FLOAT and CUDNN_DATA_BFLOAT16");
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t tensorDesc,
                                         cudnnTensorFormat_t format, cudnnDataType_t dataType,
                                         int n, int c, int h, int w) {
    const char *fn = "cudnnSetTensor4dDescriptor";
    if (!tensorDesc || !g_live.count(tensorDesc))
        return fail(CUDNN_STATUS_BAD_PARAM, fn, "not a live tensor descriptor");
    cudnnStatus_t s = check_4d(fn, format, dataType, n, c, h, w);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    *tensorDesc = cudnnTensorStruct{true, dataType, n, c, h, w};
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t tensorDesc) {
    if (!tensorDesc) return CUDNN_STATUS_SUCCESS;
    if (!g_live.erase(tensorDesc)) return CUDNN_STATUS_BAD_PARAM;
    delete tensorDesc;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t *filterDesc) {
    if (!filterDesc) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    *filterDesc = new cudnnFilterStruct{};
    g_live.insert(*filterDesc);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t filterDesc,
                                         cudnnDataType_t dataType, cudnnTensorFormat_t format,
                                         int k, int c, int h, int w) {
    const char *fn = "cudnnSetFilter4dDescriptor";
    if (!filterDesc || !g_live.count(filterDesc))
        return fail(CUDNN_STATUS_BAD_PARAM, fn, "not a live filter descriptor");
    cudnnStatus_t s = check_4d(fn, format, dataType, k, c, h, w);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    *filterDesc = cudnnFilterStruct{true, dataType, k, c, h, w};
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t filterDesc) {
    if (!filterDesc) return CUDNN_STATUS_SUCCESS;
    if (!g_live.erase(filterDesc)) return CUDNN_STATUS_BAD_PARAM;
    delete filterDesc;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t *convDesc) {
    if (!convDesc) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    *convDesc = new cudnnConvolutionStruct{};
    (*convDesc)->math = CUDNN_DEFAULT_MATH;
    g_live.insert(*convDesc);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t convDesc, int pad_h,
                                              int pad_w, int u, int v, int dilation_h,
                                              int dilation_w, cudnnConvolutionMode_t mode,
                                              cudnnDataType_t computeType) {
    const char *fn = "cudnnSetConvolution2dDescriptor";
    if (!convDesc || !g_live.count(convDesc))
        return fail(CUDNN_STATUS_BAD_PARAM, fn, "not a live convolution descriptor");
    if (pad_h < 0 || pad_w < 0 || u < 1 || v < 1 || dilation_h < 1 || dilation_w < 1)
        return fail(CUDNN_STATUS_BAD_PARAM, fn, "padding must be >= 0, strides and dilations >= 1");
    if (mode != CUDNN_CONVOLUTION && mode != CUDNN_CROSS_CORRELATION)
        return fail(CUDNN_STATUS_BAD_PARAM, fn, "unknown convolution mode");
    if (computeType != CUDNN_DATA_FLOAT)
        return fail(CUDNN_STATUS_NOT_SUPPORTED, fn, "the stand-in computes in fp32 only");
    /* the math type is kept: it has its own setter, as in cuDNN */
    convDesc->set = true;
    convDesc->pad_h = pad_h, convDesc->pad_w = pad_w;
    convDesc->u = u, convDesc->v = v;
    convDesc->dil_h = dilation_h, convDesc->dil_w = dilation_w;
    convDesc->mode = mode;
    convDesc->compute = computeType;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t convDesc,
                                          cudnnMathType_t mathType) {
    const char *fn = "cudnnSetConvolutionMathType";
    if (!convDesc || !g_live.count(convDesc))
        return fail(CUDNN_STATUS_BAD_PARAM, fn, "not a live convolution descriptor");
    if (mathType != CUDNN_DEFAULT_MATH && mathType != CUDNN_TENSOR_OP_MATH &&
        mathType != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION && mathType != CUDNN_FMA_MATH)
        return fail(CUDNN_STATUS_BAD_PARAM, fn, "unknown math type");
    convDesc->math = mathType;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t convDesc) {
    if (!convDesc) return CUDNN_STATUS_SUCCESS;
    if (!g_live.erase(convDesc)) return CUDNN_STATUS_BAD_PARAM;
    delete convDesc;
    return CUDNN_STATUS_SUCCESS;
}

/* ---- forward ------------------------------------------------------------------------------- */

static const cudnnConvolutionFwdAlgo_t k_fwd_order[] = {
    CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED, /* not supported here: must be skipped */
    CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
    CUDNN_CONVOLUTION_FWD_ALGO_GEMM, CUDNN_CONVOLUTION_FWD_ALGO_FFT};
static const cudnnDeterminism_t k_fwd_det[] = {CUDNN_DETERMINISTIC, CUDNN_DETERMINISTIC,
                                               CUDNN_DETERMINISTIC, CUDNN_DETERMINISTIC,
                                               CUDNN_DETERMINISTIC};
static const int k_fwd_n = sizeof k_fwd_order / sizeof *k_fwd_order;

cudnnStatus_t cudnnGetConvolutionForwardAlgorithmMaxCount(cudnnHandle_t handle, int *count) {
    if (!handle || !g_live.count(handle) || !count) return CUDNN_STATUS_BAD_PARAM;
    *count = k_fwd_n;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t srcDesc,
    const cudnnFilterDescriptor_t filterDesc, const cudnnConvolutionDescriptor_t convDesc,
    const cudnnTensorDescriptor_t destDesc, const int requestedAlgoCount, int *returnedAlgoCount,
    cudnnConvolutionFwdAlgoPerf_t *perfResults) {
    const char *fn = "cudnnGetConvolutionForwardAlgorithm_v7";
    problem p;
    cudnnStatus_t s = check_problem(fn, handle, srcDesc, filterDesc, convDesc, destDesc, &p);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    if (requestedAlgoCount < 1 || !returnedAlgoCount || !perfResults)
        return fail(CUDNN_STATUS_BAD_PARAM, fn, "requestedAlgoCount < 1 or a NULL output");
    rank(p, k_fwd_order, k_fwd_det, k_fwd_n, fwd_workspace, requestedAlgoCount, returnedAlgoCount,
         perfResults);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const cudnnFilterDescriptor_t wDesc,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t yDesc,
    cudnnConvolutionFwdAlgo_t algo, size_t *sizeInBytes) {
    const char *fn = "cudnnGetConvolutionForwardWorkspaceSize";
    problem p;
    cudnnStatus_t s = check_problem(fn, handle, xDesc, wDesc, convDesc, yDesc, &p);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    if (!sizeInBytes) return fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, fn, "sizeInBytes");
    size_t ws = fwd_workspace(p, algo);
    if (ws == SIZE_MAX) return fail(CUDNN_STATUS_NOT_SUPPORTED, fn, k_not_supported);
    *sizeInBytes = ws;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t handle, const void *alpha,
                                      const cudnnTensorDescriptor_t xDesc, const void *x,
                                      const cudnnFilterDescriptor_t wDesc, const void *w,
                                      const cudnnConvolutionDescriptor_t convDesc,
                                      cudnnConvolutionFwdAlgo_t algo, void *workSpace,
                                      size_t workSpaceSizeInBytes, const void *beta,
                                      const cudnnTensorDescriptor_t yDesc, void *y) {
    const char *fn = "cudnnConvolutionForward";
    problem p;
    cudnnStatus_t s = check_problem(fn, handle, xDesc, wDesc, convDesc, yDesc, &p);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    size_t ws = fwd_workspace(p, algo);
    if (ws == SIZE_MAX) return fail(CUDNN_STATUS_NOT_SUPPORTED, fn, k_not_supported);
    s = check_run(fn, p, x, w, y, alpha, beta, workSpace, workSpaceSizeInBytes, ws);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    std::vector<double> acc(p.y_elems(), 0.0);
    for_each_tap(p, [&](size_t xi, size_t wi, size_t yi) {
        acc[yi] += (double)load(x, p.type, xi) * load(w, p.type, wi);
    });
    blend(y, p.type, acc, alpha, beta);
    return CUDNN_STATUS_SUCCESS;
}

/* ---- backward data --------------------------------------------------------------------------- */

static const cudnnConvolutionBwdDataAlgo_t k_data_order[] = {CUDNN_CONVOLUTION_BWD_DATA_ALGO_0,
                                                             CUDNN_CONVOLUTION_BWD_DATA_ALGO_1,
                                                             CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT};
static const cudnnDeterminism_t k_data_det[] = {CUDNN_NON_DETERMINISTIC, CUDNN_DETERMINISTIC,
                                                CUDNN_DETERMINISTIC};
static const int k_data_n = sizeof k_data_order / sizeof *k_data_order;

cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithmMaxCount(cudnnHandle_t handle, int *count) {
    if (!handle || !g_live.count(handle) || !count) return CUDNN_STATUS_BAD_PARAM;
    *count = k_data_n;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(
    cudnnHandle_t handle, const cudnnFilterDescriptor_t filterDesc,
    const cudnnTensorDescriptor_t diffDesc, const cudnnConvolutionDescriptor_t convDesc,
    const cudnnTensorDescriptor_t gradDesc, const int requestedAlgoCount, int *returnedAlgoCount,
    cudnnConvolutionBwdDataAlgoPerf_t *perfResults) {
    const char *fn = "cudnnGetConvolutionBackwardDataAlgorithm_v7";
    problem p;
    cudnnStatus_t s = check_problem(fn, handle, gradDesc, filterDesc, convDesc, diffDesc, &p);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    if (requestedAlgoCount < 1 || !returnedAlgoCount || !perfResults)
        return fail(CUDNN_STATUS_BAD_PARAM, fn, "requestedAlgoCount < 1 or a NULL output");
    rank(p, k_data_order, k_data_det, k_data_n, bwd_data_workspace, requestedAlgoCount,
         returnedAlgoCount, perfResults);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(
    cudnnHandle_t handle, const cudnnFilterDescriptor_t wDesc, const cudnnTensorDescriptor_t dyDesc,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t dxDesc,
    cudnnConvolutionBwdDataAlgo_t algo, size_t *sizeInBytes) {
    const char *fn = "cudnnGetConvolutionBackwardDataWorkspaceSize";
    problem p;
    cudnnStatus_t s = check_problem(fn, handle, dxDesc, wDesc, convDesc, dyDesc, &p);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    if (!sizeInBytes) return fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, fn, "sizeInBytes");
    size_t ws = bwd_data_workspace(p, algo);
    if (ws == SIZE_MAX) return fail(CUDNN_STATUS_NOT_SUPPORTED, fn, k_not_supported);
    *sizeInBytes = ws;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t handle, const void *alpha,
                                           const cudnnFilterDescriptor_t wDesc, const void *w,
                                           const cudnnTensorDescriptor_t dyDesc, const void *dy,
                                           const cudnnConvolutionDescriptor_t convDesc,
                                           cudnnConvolutionBwdDataAlgo_t algo, void *workSpace,
                                           size_t workSpaceSizeInBytes, const void *beta,
                                           const cudnnTensorDescriptor_t dxDesc, void *dx) {
    const char *fn = "cudnnConvolutionBackwardData";
    problem p;
    cudnnStatus_t s = check_problem(fn, handle, dxDesc, wDesc, convDesc, dyDesc, &p);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    size_t ws = bwd_data_workspace(p, algo);
    if (ws == SIZE_MAX) return fail(CUDNN_STATUS_NOT_SUPPORTED, fn, k_not_supported);
    s = check_run(fn, p, dx, w, dy, alpha, beta, workSpace, workSpaceSizeInBytes, ws);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    if (algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_0) g_stats.nondeterministic_runs++;
    std::vector<double> acc(p.x_elems(), 0.0);
    for_each_tap(p, [&](size_t xi, size_t wi, size_t yi) {
        acc[xi] += (double)load(dy, p.type, yi) * load(w, p.type, wi);
    });
    blend(dx, p.type, acc, alpha, beta);
    return CUDNN_STATUS_SUCCESS;
}

/* ---- backward filter ------------------------------------------------------------------------- */

static const cudnnConvolutionBwdFilterAlgo_t k_filter_order[] = {
    CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3,
    CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT};
static const cudnnDeterminism_t k_filter_det[] = {CUDNN_NON_DETERMINISTIC, CUDNN_NON_DETERMINISTIC,
                                                  CUDNN_DETERMINISTIC, CUDNN_DETERMINISTIC};
static const int k_filter_n = sizeof k_filter_order / sizeof *k_filter_order;

cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(cudnnHandle_t handle, int *count) {
    if (!handle || !g_live.count(handle) || !count) return CUDNN_STATUS_BAD_PARAM;
    *count = k_filter_n;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t srcDesc,
    const cudnnTensorDescriptor_t diffDesc, const cudnnConvolutionDescriptor_t convDesc,
    const cudnnFilterDescriptor_t gradDesc, const int requestedAlgoCount, int *returnedAlgoCount,
    cudnnConvolutionBwdFilterAlgoPerf_t *perfResults) {
    const char *fn = "cudnnGetConvolutionBackwardFilterAlgorithm_v7";
    problem p;
    cudnnStatus_t s = check_problem(fn, handle, srcDesc, gradDesc, convDesc, diffDesc, &p);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    if (requestedAlgoCount < 1 || !returnedAlgoCount || !perfResults)
        return fail(CUDNN_STATUS_BAD_PARAM, fn, "requestedAlgoCount < 1 or a NULL output");
    rank(p, k_filter_order, k_filter_det, k_filter_n, bwd_filter_workspace, requestedAlgoCount,
         returnedAlgoCount, perfResults);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const cudnnTensorDescriptor_t dyDesc,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnFilterDescriptor_t gradDesc,
    cudnnConvolutionBwdFilterAlgo_t algo, size_t *sizeInBytes) {
    const char *fn = "cudnnGetConvolutionBackwardFilterWorkspaceSize";
    problem p;
    cudnnStatus_t s = check_problem(fn, handle, xDesc, gradDesc, convDesc, dyDesc, &p);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    if (!sizeInBytes) return fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, fn, "sizeInBytes");
    size_t ws = bwd_filter_workspace(p, algo);
    if (ws == SIZE_MAX) return fail(CUDNN_STATUS_NOT_SUPPORTED, fn, k_not_supported);
    *sizeInBytes = ws;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t handle, const void *alpha,
                                             const cudnnTensorDescriptor_t xDesc, const void *x,
                                             const cudnnTensorDescriptor_t dyDesc, const void *dy,
                                             const cudnnConvolutionDescriptor_t convDesc,
                                             cudnnConvolutionBwdFilterAlgo_t algo, void *workSpace,
                                             size_t workSpaceSizeInBytes, const void *beta,
                                             const cudnnFilterDescriptor_t dwDesc, void *dw) {
    const char *fn = "cudnnConvolutionBackwardFilter";
    problem p;
    cudnnStatus_t s = check_problem(fn, handle, xDesc, dwDesc, convDesc, dyDesc, &p);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    size_t ws = bwd_filter_workspace(p, algo);
    if (ws == SIZE_MAX) return fail(CUDNN_STATUS_NOT_SUPPORTED, fn, k_not_supported);
    s = check_run(fn, p, x, dw, dy, alpha, beta, workSpace, workSpaceSizeInBytes, ws);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    if (algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 || algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3)
        g_stats.nondeterministic_runs++;
    std::vector<double> acc(p.w_elems(), 0.0);
    for_each_tap(p, [&](size_t xi, size_t wi, size_t yi) {
        acc[wi] += (double)load(x, p.type, xi) * load(dy, p.type, yi);
    });
    blend(dw, p.type, acc, alpha, beta);
    return CUDNN_STATUS_SUCCESS;
}

void simt_cudnn_get_stats(struct simt_cudnn_stats *stats) { *stats = g_stats; }
}
