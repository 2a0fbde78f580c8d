/* loss.cu (CUDA): the reductions on the GPU, twins of kernels/cpu/loss.c: the weighted MSE of
 * EDM/DMD2 and the sum of squares for gradient-norm clipping.
 *
 * wmse_forward and sumsq are the engine's reported values: they reduce in double on the GPU
 * (fixed-shape two-stage reductions, so a result repeats exactly run to run), copy one double
 * to pinned host memory and wait for the stream; that is their only host round trip.
 * Not here: the optimiser (kernels/cuda/optim.cu). */
#include <math.h>

#include "common.cuh"

#define RED_BLOCKS_MAX 1024

/* red[n] = w[n] * sum_j (pred[n, j] - target[n, j])^2, one block per sample, in double */
__global__ void wmse_rows_kernel(double *red, const float *pred, const float *target, const float *w, int64_t D) {
    const int64_t n = blockIdx.x;
    const float *p = pred + n * D, *t = target + n * D;
    double s = 0.0;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
        double e = (double)p[j] - (double)t[j];
        s += e * e;
    }
    s = block_sum(s);
    if (threadIdx.x == 0) red[n] = (w ? (double)w[n] : 1.0) * s;
}

/* out[0] = sum of red[0..n), one block, fixed order */
__global__ void sum_partials_kernel(double *out, const double *red, int64_t n) {
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += red[i];
    s = block_sum(s);
    if (threadIdx.x == 0) out[0] = s;
}

/* the double at dev, on the host (waits for the stream) */
static double fetch_double(CudaCtx *cc, const double *dev) {
    CUDA_OK(cudaMemcpyAsync(cc->h_red, dev, sizeof(double), cudaMemcpyDeviceToHost, cc->stream));
    CUDA_OK(cudaStreamSynchronize(cc->stream));
    return cc->h_red[0];
}

float cuda_wmse_forward(BackendCtx *ctx, const float *pred, const float *target, const float *w, int64_t N,
                        int64_t D) {
    MSD_CHECK(pred && target && N > 0 && D > 0 && N <= INT32_MAX);
    CudaCtx *cc = cuda_ctx(ctx);
    double *red = cuda_ctx_red(cc, N + 1);
    wmse_rows_kernel<<<(unsigned)N, CUDA_THREADS, 0, cc->stream>>>(red, pred, target, w, D);
    LAUNCH_OK(cc, "wmse_rows_kernel");
    sum_partials_kernel<<<1, 1024, 0, cc->stream>>>(red + N, red, N);
    LAUNCH_OK(cc, "sum_partials_kernel");
    return (float)(fetch_double(cc, red + N) / ((double)N * (double)D));
}

/* dpred += (float)(k * w[n]) * (pred - target), k = 2 dloss / (N*D) */
__global__ void wmse_bwd_kernel(float *dpred, double k, const float *pred, const float *target, const float *w,
                                int64_t N, int64_t D) {
    GRID_STRIDE(i, N * D) {
        const int64_t n = i / D;
        const float c = (float)(k * (w ? (double)w[n] : 1.0));
        dpred[i] = __fadd_rn(dpred[i], __fmul_rn(c, __fsub_rn(pred[i], target[i])));
    }
}

void cuda_wmse_backward(BackendCtx *ctx, float *dpred, float dloss, const float *pred, const float *target,
                        const float *w, int64_t N, int64_t D) {
    MSD_CHECK(pred && target && N > 0 && D > 0);
    if (!dpred) return;
    CudaCtx *cc = cuda_ctx(ctx);
    const double k = 2.0 * (double)dloss / ((double)N * (double)D);
    wmse_bwd_kernel<<<cuda_blocks(N * D), CUDA_THREADS, 0, cc->stream>>>(dpred, k, pred, target, w, N, D);
    LAUNCH_OK(cc, "wmse_bwd_kernel");
}

/* red[block] = sum over the block's grid-stride share of x^2, in double */
__global__ void sumsq_kernel(double *red, const float *x, int64_t n) {
    double s = 0.0;
    GRID_STRIDE(i, n) {
        double v = x[i];
        s += v * v;
    }
    s = block_sum(s);
    if (threadIdx.x == 0) red[blockIdx.x] = s;
}

double cuda_sumsq(BackendCtx *ctx, const float *x, int64_t n) {
    MSD_CHECK((x || n == 0) && n >= 0);
    if (n == 0) return 0.0;
    CudaCtx *cc = cuda_ctx(ctx);
    unsigned blocks = cuda_blocks(n);
    if (blocks > RED_BLOCKS_MAX) blocks = RED_BLOCKS_MAX;
    double *red = cuda_ctx_red(cc, (int64_t)blocks + 1);
    sumsq_kernel<<<blocks, CUDA_THREADS, 0, cc->stream>>>(red, x, n);
    LAUNCH_OK(cc, "sumsq_kernel");
    sum_partials_kernel<<<1, 1024, 0, cc->stream>>>(red + blocks, red, blocks);
    LAUNCH_OK(cc, "sum_partials_kernel");
    return fetch_double(cc, red + blocks);
}
