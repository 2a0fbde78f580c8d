/* optim.c (CPU): the adamw_update and ema_update slots of the CPU backend: one AdamW step with
 * PyTorch's scalar arithmetic, and the weight EMA. The CUDA twin (kernels/cuda/optim.cu) spells
 * the same float operations, so both give the same bits. Schedules and clipping live in
 * common/nn/optimizer.c. */
#include <math.h>

#include "cpu_ops.h"
#include "log.h"

void cpu_adamw_update(BackendCtx *ctx, float *p, const float *g, float *m, float *v, int64_t n, float lr,
                      float beta1, float beta2, float eps, float wd, int64_t t, float gscale) {
    (void)ctx;
    MSD_CHECK(t >= 1 && n >= 0);
    /* Scalars as torch computes them (in double, then used as float tensor scalars). */
    double bc1 = 1.0 - pow((double)beta1, (double)t);
    double bc2 = 1.0 - pow((double)beta2, (double)t);
    float decay = (float)(1.0 - (double)lr * (double)wd);
    float step_size = (float)((double)lr / bc1);
    float inv_bc2_sqrt = (float)(1.0 / sqrt(bc2));
    float b1 = beta1, c1 = (float)(1.0 - (double)beta1);
    float b2 = beta2, c2 = (float)(1.0 - (double)beta2);
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] * gscale;
        float pi = p[i] * decay;
        float mi = b1 * m[i] + c1 * gi;
        float vi = b2 * v[i] + c2 * (gi * gi);
        float denom = sqrtf(vi) * inv_bc2_sqrt + eps;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - step_size * (mi / denom);
    }
}

void cpu_ema_update(BackendCtx *ctx, float *ema, const float *p, int64_t n, float decay) {
    (void)ctx;
    float c = 1.0f - decay;
    for (int64_t i = 0; i < n; i++) ema[i] = decay * ema[i] + c * p[i];
}
