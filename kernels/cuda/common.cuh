/* common.cuh: what the CUDA backend (the .cu files in kernels/cuda) shares: the per-process device
 * state behind BackendCtx.dev (stream, cuBLAS and cuDNN handles, cuDNN workspace, reduction
 * buffers, the convolution plan cache), the error checks, launch helpers, block reductions,
 * and the declarations of every cuda_* op (the CUDA twin of kernels/cpu/cpu_ops.h).
 *
 * Every op runs on the context's one stream and returns without waiting for the device, except
 * the ops whose result is a host value (wmse_forward, sumsq, download), which synchronise that
 * stream. Failure: a CUDA/cuBLAS/cuDNN error is an environment failure (msd_die with the call,
 * the library's text and a hint); impossible shapes are bugs (MSD_CHECK). With MSD_CUDA_SYNC=1
 * in the environment every launch is followed by a stream synchronisation, so an asynchronous
 * fault is reported at the op that caused it (debugging only: it is slow).
 *
 * Not here: the op semantics (backend.h and the CPU reference in the files of kernels/cpu state them). */
#ifndef MSD_CUDA_COMMON_CUH
#define MSD_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <stdint.h>

extern "C" {
#include "backend_internal.h"
#include "log.h"
}

/* A cuDNN convolution shape with its descriptors and chosen algorithms (conv.cu). */
struct CudaConvPlan;

typedef struct CudaCtx {
    int device;
    cudaStream_t stream;
    cublasHandle_t cublas;
    cudnnHandle_t cudnn;
    int tf32;                   /* 1: TF32 tensor cores for cuBLAS/cuDNN (env MSD_TF32=1) */
    void *ws;                   /* cuDNN workspace, grown to the largest chosen algorithm's need */
    size_t ws_bytes;
    double *red;                /* device partial sums of the reductions (red_n doubles) */
    int64_t red_n;
    double *h_red;              /* pinned host: the reported scalar of wmse_forward / sumsq */
    int32_t *d_labels;          /* device copy of onehot's labels (labels_n entries) */
    int32_t *h_labels;          /* pinned staging of onehot's host labels (labels_n entries) */
    int64_t labels_n;
    cudaEvent_t labels_done;    /* the last labels upload finished reading h_labels */
    struct CudaConvPlan *plans; /* conv plan cache (conv.cu) */
    int nplans, cap_plans;
} CudaCtx;

extern int cuda_sync_each; /* MSD_CUDA_SYNC=1 (table.cu) */

/* ---- errors ---- */
void cuda_fail(cudaError_t e, const char *call, const char *file, int line) __attribute__((noreturn));
void cublas_fail(cublasStatus_t s, const char *call, const char *file, int line) __attribute__((noreturn));
void cudnn_fail(cudnnStatus_t s, const char *call, const char *file, int line) __attribute__((noreturn));
#define CUDA_OK(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) cuda_fail(e_, #call, __FILE__, __LINE__); } while (0)
#define CUBLAS_OK(call) do { cublasStatus_t s_ = (call); if (s_ != CUBLAS_STATUS_SUCCESS) cublas_fail(s_, #call, __FILE__, __LINE__); } while (0)
#define CUDNN_OK(call) do { cudnnStatus_t s_ = (call); if (s_ != CUDNN_STATUS_SUCCESS) cudnn_fail(s_, #call, __FILE__, __LINE__); } while (0)

/* After every kernel launch: the launch error now, the execution error too under MSD_CUDA_SYNC. */
void cuda_launch_check(const CudaCtx *cc, const char *what, const char *file, int line);
#define LAUNCH_OK(cc, what) cuda_launch_check((cc), (what), __FILE__, __LINE__)

/* The device state of a CUDA context (a NULL or CPU context is a bug for compute ops). */
static inline CudaCtx *cuda_ctx(BackendCtx *ctx) {
    MSD_CHECK(ctx != NULL && ctx->dev != NULL);
    return (CudaCtx *)ctx->dev;
}
/* The context's stream, or the legacy default stream for memory ops called without a context. */
static inline cudaStream_t cuda_stream_of(BackendCtx *ctx) {
    return ctx && ctx->dev ? ((CudaCtx *)ctx->dev)->stream : (cudaStream_t)0;
}

/* Device doubles for partial sums, at least n (grows; synchronises the stream when it does). */
double *cuda_ctx_red(CudaCtx *cc, int64_t n);

/* ---- launch geometry ---- */
#define CUDA_THREADS 256
/* Blocks for a grid-stride loop over n items (at least 1, at most 65536). */
static inline unsigned cuda_blocks(int64_t n, int threads = CUDA_THREADS) {
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > 65536) b = 65536;
    return (unsigned)b;
}
#define GRID_STRIDE(i, n) \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

/* ---- reductions (blockDim.x a multiple of 32, at most 1024; every thread must call) ---- */
__device__ __forceinline__ double warp_sum(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}
/* Sum of v over the block, returned to every thread. */
__device__ __forceinline__ double block_sum(double v) {
    __shared__ double sh[32];
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads(); /* a previous call's readers of sh[0] are done */
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    v = threadIdx.x < nw ? sh[threadIdx.x] : 0.0;
    if (wid == 0) v = warp_sum(v);
    if (threadIdx.x == 0) sh[0] = v;
    __syncthreads();
    return sh[0];
}

/* The CPU's ops_expf (kernels/cpu/cpu_ops.h), ported so SiLU and softmax round like the reference:
 * Cody-Waite reduction and a degree-6 polynomial, input clamped to [-87, 88]. */
__device__ __forceinline__ float dev_expf(float x) {
    x = x < -87.0f ? -87.0f : x; /* comparisons, not fminf/fmaxf: a NaN stays NaN */
    x = x > 88.0f ? 88.0f : x;
    float t = __fadd_rn(__fmul_rn(x, 1.44269504088896341f), 12582912.0f);
    float n = __fsub_rn(t, 12582912.0f);
    float r = __fsub_rn(x, __fmul_rn(n, 0.693359375f));
    r = __fsub_rn(r, __fmul_rn(n, -2.12194440e-4f));
    float p = 1.9875691500e-4f;
    p = __fadd_rn(__fmul_rn(p, r), 1.3981999507e-3f);
    p = __fadd_rn(__fmul_rn(p, r), 8.3334519073e-3f);
    p = __fadd_rn(__fmul_rn(p, r), 4.1665795894e-2f);
    p = __fadd_rn(__fmul_rn(p, r), 1.6666665459e-1f);
    p = __fadd_rn(__fmul_rn(p, r), 5.0000001201e-1f);
    p = __fadd_rn(__fadd_rn(__fmul_rn(__fmul_rn(p, r), r), r), 1.0f);
    unsigned sc = (__float_as_uint(t) - 0x4B400000u + 127u) << 23;
    return __fmul_rn(p, __uint_as_float(sc));
}

/* ---- the ops (argument order and semantics: backend.h) ----
 * cuda_NAME for every required op of the list in backend.h, generated from it (memory ops in
 * table.cu, the rest in the .cu file named after the op family, as in kernels/cpu). */
#define CUDA_OP_PROTO_(RET, NAME, PARAMS, ARGS) RET cuda_##NAME PARAMS;
MSD_BACKEND_OPS(CUDA_OP_PROTO_)
MSD_BACKEND_OPTIONAL_OPS(CUDA_OP_PROTO_) /* norm.cu; in the table only under MSD_CUDA_NORM_ACT=1 (table.cu) */
#undef CUDA_OP_PROTO_
/* elementwise.cu: N host int32 values (onehot's labels, embedding's ids) copied to the device
 * through the context's pinned staging buffer, on its stream */
const int32_t *cuda_stage_labels(CudaCtx *cc, const int32_t *labels, int64_t N);
/* conv.cu: drop the context's cached convolution plans (at context release) */
void cuda_conv_plans_release(CudaCtx *cc);

#endif
