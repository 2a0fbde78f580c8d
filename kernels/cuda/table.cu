/* table.cu (CUDA): the CUDA backend table (built whenever nvcc is found; see Makefile CUDA=):
 * device selection with a clear error when the GPU is missing, the per-process context (one
 * stream, the cuBLAS and cuDNN handles, the cuDNN workspace and the small buffers the reductions
 * and onehot use: backend_cuda_ctx_init / backend_cuda_ctx_release, called by backend_ctx_new /
 * backend_ctx_destroy), the memory slots, and the table that points every op slot at its CUDA
 * implementation in the other .cu files of kernels/.
 *
 * Memory: alloc/free are cudaMalloc/cudaFree (free first waits for the context's stream, so no
 * kernel still uses the memory); upload/copy/fill are queued on the stream and return at once
 * (upload reads the host buffer before it returns: the engine passes pageable host memory, which
 * the driver stages; pinned host buffers must not be passed); download waits for the stream.
 *
 * Switches (environment, read when a context is created): MSD_TF32=1 lets cuBLAS and cuDNN use
 * TF32 tensor cores (faster, about 1e-3 relative error; default off so the GPU agrees tightly
 * with the CPU reference); MSD_CUDA_SYNC=1 synchronises after every launch (debugging).
 *
 * Not here: the ops themselves (conv.cu, linear.cu, norm.cu, elementwise.cu, attention.cu,
 * loss.cu, optim.cu, rng.cu). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.cuh"

int cuda_sync_each;

void cuda_fail(cudaError_t e, const char *call, const char *file, int line) {
    msd_die("%s:%d: CUDA call %s failed: %s (%s)%s", file, line, call, cudaGetErrorString(e), cudaGetErrorName(e),
            e == cudaErrorMemoryAllocation ? " (hint: a smaller batch, or a GPU with more free memory)"
                                           : " (hint: rerun with MSD_CUDA_SYNC=1 to find the op that failed)");
}
void cublas_fail(cublasStatus_t s, const char *call, const char *file, int line) {
    msd_die("%s:%d: cuBLAS call %s failed: %s (%d)", file, line, call, cublasGetStatusString(s), (int)s);
}
void cudnn_fail(cudnnStatus_t s, const char *call, const char *file, int line) {
    msd_die("%s:%d: cuDNN call %s failed: %s (%d)%s", file, line, call, cudnnGetErrorString(s), (int)s,
            s == CUDNN_STATUS_NOT_INITIALIZED || s == CUDNN_STATUS_SUBLIBRARY_LOADING_FAILED ||
                    s == CUDNN_STATUS_SUBLIBRARY_VERSION_MISMATCH
                ? " (hint: are libcudnn.so.9 and its sub-libraries, of one version, on the library path?)"
                : "");
}

void cuda_launch_check(const CudaCtx *cc, const char *what, const char *file, int line) {
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess && cuda_sync_each) e = cudaStreamSynchronize(cc ? cc->stream : (cudaStream_t)0);
    if (e != cudaSuccess) cuda_fail(e, what, file, line);
}

double *cuda_ctx_red(CudaCtx *cc, int64_t n) {
    if (n > cc->red_n) {
        CUDA_OK(cudaStreamSynchronize(cc->stream));
        if (cc->red) CUDA_OK(cudaFree(cc->red));
        int64_t want = n < 1024 ? 1024 : n;
        CUDA_OK(cudaMalloc((void **)&cc->red, (size_t)want * sizeof(double)));
        cc->red_n = want;
    }
    return cc->red;
}

/* ---- memory ---- */

float *cuda_alloc(BackendCtx *ctx, int64_t n) {
    MSD_CHECK(n >= 0);
    void *p = NULL;
    size_t bytes = (size_t)(n > 0 ? n : 1) * sizeof(float);
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        msd_die("cudaMalloc of %zu bytes failed: %s (%zu of %zu MiB free; hint: a smaller batch, or another GPU)",
                bytes, cudaGetErrorString(e), fr >> 20, tot >> 20);
    }
    CUDA_OK(cudaMemsetAsync(p, 0, bytes, cuda_stream_of(ctx)));
    return (float *)p;
}

void cuda_free(BackendCtx *ctx, float *p) {
    if (!p) return;
    if (ctx && ctx->dev) CUDA_OK(cudaStreamSynchronize(cuda_stream_of(ctx)));
    else CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaFree(p));
}

void cuda_upload(BackendCtx *ctx, float *dst, const float *host, int64_t n) {
    MSD_CHECK(n >= 0);
    if (n) CUDA_OK(cudaMemcpyAsync(dst, host, (size_t)n * sizeof(float), cudaMemcpyHostToDevice, cuda_stream_of(ctx)));
}

void cuda_download(BackendCtx *ctx, float *host, const float *src, int64_t n) {
    MSD_CHECK(n >= 0);
    if (!n) return;
    cudaStream_t st = cuda_stream_of(ctx);
    CUDA_OK(cudaMemcpyAsync(host, src, (size_t)n * sizeof(float), cudaMemcpyDeviceToHost, st));
    CUDA_OK(cudaStreamSynchronize(st));
}

void cuda_copy(BackendCtx *ctx, float *dst, const float *src, int64_t n) {
    MSD_CHECK(n >= 0);
    if (n && dst != src)
        CUDA_OK(cudaMemcpyAsync(dst, src, (size_t)n * sizeof(float), cudaMemcpyDeviceToDevice, cuda_stream_of(ctx)));
}

__global__ void fill_kernel(float *dst, float value, int64_t n) {
    GRID_STRIDE(i, n) dst[i] = value;
}

void cuda_fill(BackendCtx *ctx, float *dst, float value, int64_t n) {
    MSD_CHECK(n >= 0);
    if (n <= 0) return;
    cudaStream_t st = cuda_stream_of(ctx);
    if (value == 0.0f && !signbit(value)) {
        CUDA_OK(cudaMemsetAsync(dst, 0, (size_t)n * sizeof(float), st));
        return;
    }
    fill_kernel<<<cuda_blocks(n), CUDA_THREADS, 0, st>>>(dst, value, n);
    LAUNCH_OK(ctx ? (CudaCtx *)ctx->dev : NULL, "fill_kernel");
}

/* ---- context ---- */

static int g_device = -1;

static int env_flag(const char *name) {
    const char *v = getenv(name);
    return v && v[0] && strcmp(v, "0") != 0;
}

extern "C" int backend_cuda_ctx_init(BackendCtx *ctx, char *err, size_t errlen) {
    MSD_CHECK(ctx != NULL && ctx->dev == NULL);
    if (g_device < 0) return msd_errf(err, errlen, "CUDA context before backend_get selected a GPU");
    cudaError_t e = cudaSetDevice(g_device);
    if (e != cudaSuccess) return msd_errf(err, errlen, "cudaSetDevice(%d): %s", g_device, cudaGetErrorString(e));
    CudaCtx *cc = (CudaCtx *)msd_calloc(1, sizeof *cc);
    cc->device = g_device;
    cc->tf32 = env_flag("MSD_TF32");
    cuda_sync_each = env_flag("MSD_CUDA_SYNC");
    e = cudaStreamCreate(&cc->stream);
    if (e != cudaSuccess) {
        free(cc);
        return msd_errf(err, errlen, "cudaStreamCreate: %s", cudaGetErrorString(e));
    }
    cublasStatus_t bs = cublasCreate(&cc->cublas);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        cudaStreamDestroy(cc->stream);
        free(cc);
        return msd_errf(err, errlen, "cublasCreate: %s (is libcublas.so.13 on the library path?)",
                        cublasGetStatusString(bs));
    }
    CUBLAS_OK(cublasSetStream(cc->cublas, cc->stream));
    CUBLAS_OK(cublasSetMathMode(cc->cublas, cc->tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    cudnnStatus_t ds = cudnnCreate(&cc->cudnn);
    if (ds != CUDNN_STATUS_SUCCESS) {
        cublasDestroy(cc->cublas);
        cudaStreamDestroy(cc->stream);
        free(cc);
        return msd_errf(err, errlen, "cudnnCreate: %s (is libcudnn.so.9 with its sub-libraries on the library path?)",
                        cudnnGetErrorString(ds));
    }
    CUDNN_OK(cudnnSetStream(cc->cudnn, cc->stream));
    CUDA_OK(cudaMallocHost((void **)&cc->h_red, 4 * sizeof(double)));
    CUDA_OK(cudaEventCreateWithFlags(&cc->labels_done, cudaEventDisableTiming));
    ctx->dev = cc;
    return 0;
}

extern "C" void backend_cuda_ctx_release(BackendCtx *ctx) {
    if (!ctx || !ctx->dev) return;
    CudaCtx *cc = (CudaCtx *)ctx->dev;
    CUDA_OK(cudaStreamSynchronize(cc->stream));
    cuda_conv_plans_release(cc);
    if (cc->ws) CUDA_OK(cudaFree(cc->ws));
    if (cc->red) CUDA_OK(cudaFree(cc->red));
    if (cc->d_labels) CUDA_OK(cudaFree(cc->d_labels));
    if (cc->h_labels) CUDA_OK(cudaFreeHost(cc->h_labels));
    if (cc->h_red) CUDA_OK(cudaFreeHost(cc->h_red));
    CUDA_OK(cudaEventDestroy(cc->labels_done));
    CUDNN_OK(cudnnDestroy(cc->cudnn));
    CUBLAS_OK(cublasDestroy(cc->cublas));
    CUDA_OK(cudaStreamDestroy(cc->stream));
    free(cc);
    ctx->dev = NULL;
}

/* ---- the table ----
 * Filled by field name from the op list (backend.h): slot NAME is cuda_NAME, so a missing or
 * mistyped op does not compile. The optional fused GroupNorm + modulation + SiLU (norm.cu) is
 * in the table only when MSD_CUDA_NORM_ACT=1: it was written and compiled without a GPU and
 * has not run yet (docs/CUDA.md "Fused GroupNorm + SiLU"); otherwise the slots stay NULL and
 * the UNet composes the three ops. A function-local static: C++ initialises it once,
 * thread-safely, on first use (the variable is read then). */
static Backend cuda_table(void) {
    Backend b;
    memset(&b, 0, sizeof b);
    b.name = "cuda";
    b.device = DEVICE_CUDA;
#define CUDA_SLOT_(RET, NAME, PARAMS, ARGS) b.NAME = cuda_##NAME;
    MSD_BACKEND_OPS(CUDA_SLOT_)
    const char *na = getenv("MSD_CUDA_NORM_ACT");
    if (na && strcmp(na, "1") == 0) {
        MSD_BACKEND_OPTIONAL_OPS(CUDA_SLOT_)
    }
#undef CUDA_SLOT_
    return b;
}

extern "C" const Backend *backend_cuda_get(int index, char *err, size_t errlen) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        msd_errf(err, errlen, "no usable CUDA device: %s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
        return NULL;
    }
    if (index < 0 || index >= count) {
        msd_errf(err, errlen, "GPU %d requested but this machine has %d CUDA device(s)", index, count);
        return NULL;
    }
    if (g_device >= 0 && g_device != index) {
        msd_errf(err, errlen, "GPU %d requested but this process already uses GPU %d (one GPU per process)", index,
                 g_device);
        return NULL;
    }
    e = cudaSetDevice(index);
    if (e != cudaSuccess) {
        msd_errf(err, errlen, "cudaSetDevice(%d): %s", index, cudaGetErrorString(e));
        return NULL;
    }
    g_device = index;
    static const Backend g_cuda = cuda_table();
    return &g_cuda;
}
