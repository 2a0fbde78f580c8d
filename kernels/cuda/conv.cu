/* conv.cu: 2-D convolution on the GPU through cuDNN's convolution API (the CUDA twin of
 * kernels/cpu/conv.c): NCHW float32, square kernel, stride, zero padding, cross-correlation as
 * PyTorch.
 *
 * Forward: cudnnConvolutionForward (beta 0) then cudnnAddTensor for the bias.
 * Backward: cudnnConvolutionBackwardData / BackwardFilter / BackwardBias, each with beta = 1,
 * so they ADD into din, dw, db like the CPU op.
 *
 * Plans: the first call with a ConvShape (batch size included) builds its descriptors and asks
 * cudnnFind* (which times the candidates on the GPU) for the forward algorithm; the first
 * backward does the same for the two backward algorithms. The fastest algorithm that succeeded,
 * fits the workspace limit and is deterministic (so runs repeat exactly; a nondeterministic one
 * only when no deterministic one exists) is kept in the context's plan cache for the life of the
 * context. With TF32 off (the default, see table.cu) the descriptors use CUDNN_FMA_MATH and
 * algorithms that report tensor-op math are refused. The workspace is the context's (grown to
 * the largest chosen algorithm's need, at plan time only).
 *
 * Not here: groups, dilation, non-square kernels (the engine has none). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.cuh"

#define CONV_WS_LIMIT ((size_t)1 << 30) /* an algorithm needing more workspace than 1 GiB is skipped */

struct CudaConvPlan {
    ConvShape s;
    cudnnTensorDescriptor_t x, y, b;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
    cudnnConvolutionFwdAlgo_t fwd;
    int have_bwd;
    cudnnConvolutionBwdDataAlgo_t bwd_data;
    cudnnConvolutionBwdFilterAlgo_t bwd_filter;
    /* the math type cudnnFind timed each chosen algorithm with; set on the shared descriptor
     * before each call (under TF32 they may differ between the directions) */
    cudnnMathType_t fwd_math, bwd_data_math, bwd_filter_math;
};

void cuda_conv_plans_release(CudaCtx *cc) {
    for (int i = 0; i < cc->nplans; i++) {
        CudaConvPlan *p = &cc->plans[i];
        CUDNN_OK(cudnnDestroyTensorDescriptor(p->x));
        CUDNN_OK(cudnnDestroyTensorDescriptor(p->y));
        CUDNN_OK(cudnnDestroyTensorDescriptor(p->b));
        CUDNN_OK(cudnnDestroyFilterDescriptor(p->w));
        CUDNN_OK(cudnnDestroyConvolutionDescriptor(p->conv));
    }
    free(cc->plans);
    cc->plans = NULL;
    cc->nplans = cc->cap_plans = 0;
}

/* Make the context's workspace at least bytes (only while planning: it waits for the stream). */
static void conv_ws_reserve(CudaCtx *cc, size_t bytes) {
    if (bytes <= cc->ws_bytes) return;
    CUDA_OK(cudaStreamSynchronize(cc->stream));
    if (cc->ws) CUDA_OK(cudaFree(cc->ws));
    cc->ws = NULL;
    CUDA_OK(cudaMalloc(&cc->ws, bytes));
    cc->ws_bytes = bytes;
}

/* The math type to run an algorithm cudnnFind chose with: the one it was timed with under TF32;
 * with TF32 off always FMA (whatever Find reports, a DEFAULT_MATH descriptor would allow TF32). */
static cudnnMathType_t conv_math(const CudaCtx *cc, cudnnMathType_t found) {
    return cc->tf32 ? found : CUDNN_FMA_MATH;
}
static cudnnMathType_t conv_base_math(const CudaCtx *cc) { return cc->tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH; }

static int is_tensor_op(cudnnMathType_t m) {
    return m == CUDNN_TENSOR_OP_MATH || m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
}

/* Index of the algorithm to use among cudnnFind's results (sorted fastest first), or -1. */
template <typename Perf>
static int conv_pick(const Perf *perf, int n, int tf32) {
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < n; i++) {
            const Perf &p = perf[i];
            if (p.status != CUDNN_STATUS_SUCCESS || p.memory > CONV_WS_LIMIT) continue;
            if (!tf32 && is_tensor_op(p.mathType)) continue;
            if (pass == 0 && p.determinism != CUDNN_DETERMINISTIC) continue;
            return i;
        }
    }
    return -1;
}

static void conv_shape_str(const ConvShape *s, char *buf, size_t len) {
    snprintf(buf, len, "in (%lld, %lld, %lld, %lld), out channels %lld, kernel %lld, stride %lld, pad %lld",
             (long long)s->N, (long long)s->C, (long long)s->H, (long long)s->W, (long long)s->O, (long long)s->K,
             (long long)s->stride, (long long)s->pad);
}

static CudaConvPlan *conv_plan(CudaCtx *cc, const ConvShape *s) {
    for (int i = 0; i < cc->nplans; i++)
        if (!memcmp(&cc->plans[i].s, s, sizeof *s)) return &cc->plans[i];
    MSD_CHECK(s->N <= INT32_MAX && s->C <= INT32_MAX && s->H <= INT32_MAX && s->W <= INT32_MAX &&
              s->O <= INT32_MAX && s->K <= INT32_MAX && s->stride <= INT32_MAX && s->pad <= INT32_MAX);
    if (cc->nplans == cc->cap_plans) {
        int cap = cc->cap_plans ? 2 * cc->cap_plans : 32;
        CudaConvPlan *np = (CudaConvPlan *)realloc(cc->plans, (size_t)cap * sizeof *np);
        if (!np) msd_die("out of memory growing the convolution plan cache");
        cc->plans = np;
        cc->cap_plans = cap;
    }
    CudaConvPlan *p = &cc->plans[cc->nplans];
    memset(p, 0, sizeof *p);
    p->s = *s;
    const int Ho = (int)conv_out_h(s), Wo = (int)conv_out_w(s);
    CUDNN_OK(cudnnCreateTensorDescriptor(&p->x));
    CUDNN_OK(cudnnCreateTensorDescriptor(&p->y));
    CUDNN_OK(cudnnCreateTensorDescriptor(&p->b));
    CUDNN_OK(cudnnCreateFilterDescriptor(&p->w));
    CUDNN_OK(cudnnCreateConvolutionDescriptor(&p->conv));
    CUDNN_OK(cudnnSetTensor4dDescriptor(p->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, (int)s->N, (int)s->C, (int)s->H,
                                        (int)s->W));
    CUDNN_OK(cudnnSetTensor4dDescriptor(p->y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, (int)s->N, (int)s->O, Ho, Wo));
    CUDNN_OK(cudnnSetTensor4dDescriptor(p->b, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, (int)s->O, 1, 1));
    CUDNN_OK(cudnnSetFilter4dDescriptor(p->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, (int)s->O, (int)s->C, (int)s->K,
                                        (int)s->K));
    CUDNN_OK(cudnnSetConvolution2dDescriptor(p->conv, (int)s->pad, (int)s->pad, (int)s->stride, (int)s->stride, 1, 1,
                                             CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    CUDNN_OK(cudnnSetConvolutionMathType(p->conv, conv_base_math(cc)));
    int n = 0, c = 0, h = 0, w = 0;
    CUDNN_OK(cudnnGetConvolution2dForwardOutputDim(p->conv, p->x, p->w, &n, &c, &h, &w));
    MSD_CHECK(n == s->N && c == s->O && h == Ho && w == Wo);

    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int got = 0;
    CUDNN_OK(cudnnFindConvolutionForwardAlgorithm(cc->cudnn, p->x, p->w, p->conv, p->y,
                                                  CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, perf));
    int k = conv_pick(perf, got, cc->tf32);
    if (k < 0) {
        char buf[256];
        conv_shape_str(s, buf, sizeof buf);
        msd_die("cuDNN offers no usable forward convolution algorithm for %s (hint: MSD_TF32=1 allows tensor-op ones)",
                buf);
    }
    p->fwd = perf[k].algo;
    p->fwd_math = conv_math(cc, perf[k].mathType);
    /* the workspace as the call will run (descriptor set to the algorithm's math type) */
    size_t need = 0;
    CUDNN_OK(cudnnSetConvolutionMathType(p->conv, p->fwd_math));
    CUDNN_OK(cudnnGetConvolutionForwardWorkspaceSize(cc->cudnn, p->x, p->w, p->conv, p->y, p->fwd, &need));
    conv_ws_reserve(cc, need > perf[k].memory ? need : perf[k].memory);
    cc->nplans++;
    return p;
}

static void conv_plan_backward(CudaCtx *cc, CudaConvPlan *p) {
    if (p->have_bwd) return;
    char buf[256];
    cudnnConvolutionBwdDataAlgoPerf_t pd[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    int got = 0;
    CUDNN_OK(cudnnSetConvolutionMathType(p->conv, conv_base_math(cc)));
    CUDNN_OK(cudnnFindConvolutionBackwardDataAlgorithm(cc->cudnn, p->w, p->y, p->conv, p->x,
                                                       CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got, pd));
    int k = conv_pick(pd, got, cc->tf32);
    if (k < 0) {
        conv_shape_str(&p->s, buf, sizeof buf);
        msd_die("cuDNN offers no usable backward-data convolution algorithm for %s", buf);
    }
    p->bwd_data = pd[k].algo;
    p->bwd_data_math = conv_math(cc, pd[k].mathType);
    size_t need = 0;
    CUDNN_OK(cudnnSetConvolutionMathType(p->conv, p->bwd_data_math));
    CUDNN_OK(cudnnGetConvolutionBackwardDataWorkspaceSize(cc->cudnn, p->w, p->y, p->conv, p->x, p->bwd_data, &need));
    conv_ws_reserve(cc, need > pd[k].memory ? need : pd[k].memory);
    CUDNN_OK(cudnnSetConvolutionMathType(p->conv, conv_base_math(cc)));
    cudnnConvolutionBwdFilterAlgoPerf_t pf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    CUDNN_OK(cudnnFindConvolutionBackwardFilterAlgorithm(cc->cudnn, p->x, p->y, p->conv, p->w,
                                                         CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &got, pf));
    k = conv_pick(pf, got, cc->tf32);
    if (k < 0) {
        conv_shape_str(&p->s, buf, sizeof buf);
        msd_die("cuDNN offers no usable backward-filter convolution algorithm for %s", buf);
    }
    p->bwd_filter = pf[k].algo;
    p->bwd_filter_math = conv_math(cc, pf[k].mathType);
    CUDNN_OK(cudnnSetConvolutionMathType(p->conv, p->bwd_filter_math));
    CUDNN_OK(cudnnGetConvolutionBackwardFilterWorkspaceSize(cc->cudnn, p->x, p->y, p->conv, p->w, p->bwd_filter,
                                                            &need));
    conv_ws_reserve(cc, need > pf[k].memory ? need : pf[k].memory);
    p->have_bwd = 1;
}

static void conv_check_shape(const ConvShape *s) {
    MSD_CHECK(s != NULL);
    MSD_CHECK(s->N >= 0 && s->C > 0 && s->O > 0 && s->K > 0 && s->stride > 0 && s->pad >= 0);
    MSD_CHECK(conv_out_h(s) > 0 && conv_out_w(s) > 0);
}

void cuda_conv2d_forward(BackendCtx *ctx, float *out, const float *in, const float *w, const float *b,
                         const ConvShape *s) {
    MSD_CHECK(out && in && w);
    conv_check_shape(s);
    if (s->N == 0) return;
    CudaCtx *cc = cuda_ctx(ctx);
    CudaConvPlan *p = conv_plan(cc, s);
    const float one = 1.0f, zero = 0.0f;
    CUDNN_OK(cudnnSetConvolutionMathType(p->conv, p->fwd_math));
    CUDNN_OK(cudnnConvolutionForward(cc->cudnn, &one, p->x, in, p->w, w, p->conv, p->fwd, cc->ws, cc->ws_bytes, &zero,
                                     p->y, out));
    if (b) CUDNN_OK(cudnnAddTensor(cc->cudnn, &one, p->b, b, &one, p->y, out));
    LAUNCH_OK(cc, "conv2d_forward");
}

void cuda_conv2d_backward(BackendCtx *ctx, float *din, float *dw, float *db, const float *dout, const float *in,
                          const float *w, const ConvShape *s) {
    MSD_CHECK(dout != NULL);
    conv_check_shape(s);
    MSD_CHECK(!din || w);
    MSD_CHECK(!dw || in);
    if (s->N == 0 || (!din && !dw && !db)) return;
    CudaCtx *cc = cuda_ctx(ctx);
    CudaConvPlan *p = conv_plan(cc, s);
    conv_plan_backward(cc, p);
    const float one = 1.0f;
    if (din) {
        CUDNN_OK(cudnnSetConvolutionMathType(p->conv, p->bwd_data_math));
        CUDNN_OK(cudnnConvolutionBackwardData(cc->cudnn, &one, p->w, w, p->y, dout, p->conv, p->bwd_data, cc->ws,
                                              cc->ws_bytes, &one, p->x, din));
    }
    if (dw) {
        CUDNN_OK(cudnnSetConvolutionMathType(p->conv, p->bwd_filter_math));
        CUDNN_OK(cudnnConvolutionBackwardFilter(cc->cudnn, &one, p->x, in, p->y, dout, p->conv, p->bwd_filter, cc->ws,
                                                cc->ws_bytes, &one, p->w, dw));
    }
    if (db) CUDNN_OK(cudnnConvolutionBackwardBias(cc->cudnn, &one, p->y, dout, &one, p->b, db));
    LAUNCH_OK(cc, "conv2d_backward");
}
