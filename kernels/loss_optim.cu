/* loss_optim.cu: the reductions and the optimiser on the GPU (the CUDA twins of
 * common/ops_loss.c and the update loops of common/optim.c): the weighted MSE of EDM/DMD2,
 * the sum of squares for gradient-norm clipping, AdamW and the weight EMA.
 *
 * wmse_forward and sumsq are the engine's reported values: they reduce in double on the GPU
 * (fixed-shape two-stage reductions, so a result repeats exactly run to run), copy one double
 * to pinned host memory and wait for the stream; that is their only host round trip.
 * AdamW and the EMA take their scalars computed on the host exactly as the CPU does and spell
 * every float operation with a round-to-nearest intrinsic (no fused multiply-add), so an update
 * gives the CPU's bits for the same inputs. Not here: learning-rate schedules, clipping policy
 * (common/optim.c decides; these are the slots it calls). */
#include <math.h>

#include "cuda_common.cuh"

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

/* AdamW step, operation for operation as cpu_adamw_update (common/optim.c) */
__global__ void adamw_kernel(float *p, const float *g, float *m, float *v, int64_t n, float decay, float step_size,
                             float inv_bc2_sqrt, float b1, float c1, float b2, float c2, float eps, float gscale) {
    GRID_STRIDE(i, n) {
        float gi = __fmul_rn(g[i], gscale);
        float pi = __fmul_rn(p[i], decay);
        float mi = __fadd_rn(__fmul_rn(b1, m[i]), __fmul_rn(c1, gi));
        float vi = __fadd_rn(__fmul_rn(b2, v[i]), __fmul_rn(c2, __fmul_rn(gi, gi)));
        float denom = __fadd_rn(__fmul_rn(__fsqrt_rn(vi), inv_bc2_sqrt), eps);
        m[i] = mi;
        v[i] = vi;
        p[i] = __fsub_rn(pi, __fmul_rn(step_size, __fdiv_rn(mi, denom)));
    }
}

void cuda_adamw_update(BackendCtx *ctx, float *p, const float *g, float *m, float *v, int64_t n, float lr,
                       float beta1, float beta2, float eps, float wd, int64_t t, float gscale) {
    MSD_CHECK(t >= 1 && n >= 0);
    if (n == 0) return;
    CudaCtx *cc = cuda_ctx(ctx);
    /* the scalars exactly as cpu_adamw_update computes them */
    double bc1 = 1.0 - pow((double)beta1, (double)t);
    double bc2 = 1.0 - pow((double)beta2, (double)t);
    float decay = (float)(1.0 - (double)lr * (double)wd);
    float step_size = (float)((double)lr / bc1);
    float inv_bc2_sqrt = (float)(1.0 / sqrt(bc2));
    float c1 = (float)(1.0 - (double)beta1), c2 = (float)(1.0 - (double)beta2);
    adamw_kernel<<<cuda_blocks(n), CUDA_THREADS, 0, cc->stream>>>(p, g, m, v, n, decay, step_size, inv_bc2_sqrt, beta1,
                                                                   c1, beta2, c2, eps, gscale);
    LAUNCH_OK(cc, "adamw_kernel");
}

__global__ void ema_kernel(float *ema, const float *p, int64_t n, float decay, float c) {
    GRID_STRIDE(i, n) ema[i] = __fadd_rn(__fmul_rn(decay, ema[i]), __fmul_rn(c, p[i]));
}

void cuda_ema_update(BackendCtx *ctx, float *ema, const float *p, int64_t n, float decay) {
    MSD_CHECK(n >= 0);
    if (n == 0) return;
    CudaCtx *cc = cuda_ctx(ctx);
    ema_kernel<<<cuda_blocks(n), CUDA_THREADS, 0, cc->stream>>>(ema, p, n, decay, 1.0f - decay);
    LAUNCH_OK(cc, "ema_kernel");
}
