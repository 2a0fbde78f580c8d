/* backend_cuda.cu: the CUDA backend table (built whenever nvcc is found; see Makefile CUDA=).
 *
 * What is here today: device selection with a clear error when the GPU is missing, and the
 * memory slots (alloc, free, upload, download, copy, fill) on the device. Every compute slot
 * is still NULL: the CUDA ops (cuDNN convolutions, cuBLAS GEMMs, own kernels) are issue 6.
 * A process that asks for a GPU therefore fails at start in backend_require, naming the first
 * missing op; nothing falls back to the CPU silently. */
#include <cuda_runtime.h>

#include <stdio.h>
#include <string.h>

extern "C" {
#include "backend.h"
#include "log.h"
}

static void cuda_fail(cudaError_t e, const char *call) {
    msd_die("CUDA call %s failed: %s (%s)", call, cudaGetErrorString(e), cudaGetErrorName(e));
}
#define CUDA_OK(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) cuda_fail(e_, #call); } while (0)

static float *cuda_alloc(BackendCtx *, int64_t n) {
    void *p = NULL;
    size_t bytes = (size_t)(n > 0 ? n : 1) * sizeof(float);
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess)
        msd_die("cudaMalloc of %zu bytes failed: %s (hint: a smaller batch, or another GPU)", bytes,
                cudaGetErrorString(e));
    CUDA_OK(cudaMemset(p, 0, bytes));
    return (float *)p;
}

static void cuda_free(BackendCtx *, float *p) {
    if (p) CUDA_OK(cudaFree(p));
}

static void cuda_upload(BackendCtx *, float *dst, const float *host, int64_t n) {
    CUDA_OK(cudaMemcpy(dst, host, (size_t)n * sizeof(float), cudaMemcpyHostToDevice));
}

static void cuda_download(BackendCtx *, float *host, const float *src, int64_t n) {
    CUDA_OK(cudaMemcpy(host, src, (size_t)n * sizeof(float), cudaMemcpyDeviceToHost));
}

static void cuda_copy(BackendCtx *, float *dst, const float *src, int64_t n) {
    CUDA_OK(cudaMemcpy(dst, src, (size_t)n * sizeof(float), cudaMemcpyDeviceToDevice));
}

__global__ void fill_kernel(float *dst, float value, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (; i < n; i += stride) dst[i] = value;
}

static void cuda_fill(BackendCtx *, float *dst, float value, int64_t n) {
    if (n <= 0) return;
    int64_t blocks = (n + 255) / 256;
    if (blocks > 65535) blocks = 65535;
    fill_kernel<<<(unsigned)blocks, 256>>>(dst, value, n);
    CUDA_OK(cudaGetLastError());
}

static Backend g_cuda;

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
    e = cudaSetDevice(index);
    if (e != cudaSuccess) {
        msd_errf(err, errlen, "cudaSetDevice(%d): %s", index, cudaGetErrorString(e));
        return NULL;
    }
    memset(&g_cuda, 0, sizeof g_cuda);
    g_cuda.name = "cuda";
    g_cuda.device = DEVICE_CUDA;
    g_cuda.alloc = cuda_alloc;
    g_cuda.free = cuda_free;
    g_cuda.upload = cuda_upload;
    g_cuda.download = cuda_download;
    g_cuda.copy = cuda_copy;
    g_cuda.fill = cuda_fill;
    return &g_cuda;
}
