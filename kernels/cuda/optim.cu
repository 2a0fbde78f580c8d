/* optim.cu (CUDA): the adamw_update and ema_update slots on the GPU, twins of
 * kernels/cpu/optim.c. They take their scalars computed on the host exactly as the CPU does and
 * spell every float operation with a round-to-nearest intrinsic (no fused multiply-add), so an
 * update gives the CPU's bits for the same inputs. Not here: learning-rate schedules, clipping
 * policy (common/nn/optimizer.c decides; these are the slots it calls). */
#include <math.h>

#include "common.cuh"

/* AdamW step, operation for operation as cpu_adamw_update (kernels/cpu/optim.c) */
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
