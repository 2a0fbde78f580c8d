/* loss.c: the reductions of the CPU backend: the weighted MSE of EDM/DMD2 and the sum of
 * squares for gradient clipping. Sums are accumulated in double; results go to the host. */
#include "backend_internal.h"
#include "log.h"
#include "cpu_ops.h"

/* loss = (1/(N*D)) * sum_n w[n] * sum_j (pred - target)^2; w NULL means all ones */
float cpu_wmse_forward(BackendCtx *ctx, const float *pred, const float *target, const float *w, int64_t N,
                       int64_t D) {
    (void)ctx;
    MSD_CHECK(pred && target && N > 0 && D > 0);
    double total = 0.0;
    for (int64_t n = 0; n < N; n++) {
        const float *p = pred + n * D, *t = target + n * D;
        double s = 0.0;
        for (int64_t j = 0; j < D; j++) {
            double e = (double)p[j] - (double)t[j];
            s += e * e;
        }
        total += (w ? (double)w[n] : 1.0) * s;
    }
    return (float)(total / ((double)N * (double)D));
}

/* dpred += dloss * 2 w[n] (pred - target) / (N*D) */
void cpu_wmse_backward(BackendCtx *ctx, float *dpred, float dloss, const float *pred, const float *target,
                       const float *w, int64_t N, int64_t D) {
    (void)ctx;
    MSD_CHECK(pred && target && N > 0 && D > 0);
    if (!dpred) return;
    const double k = 2.0 * (double)dloss / ((double)N * (double)D);
    for (int64_t n = 0; n < N; n++) {
        const float c = (float)(k * (w ? (double)w[n] : 1.0));
        const float *p = pred + n * D, *t = target + n * D;
        float *g = dpred + n * D;
        for (int64_t j = 0; j < D; j++) g[j] += c * (p[j] - t[j]);
    }
}

double cpu_sumsq(BackendCtx *ctx, const float *x, int64_t n) {
    (void)ctx;
    MSD_CHECK(x || n == 0);
    /* vectorised float partial sums over blocks of 4096, the blocks added in double */
    double total = 0.0;
    for (int64_t b = 0; b < n; b += 4096) total += ops_sumsq_centered(x + b, 0.0f, n - b < 4096 ? n - b : 4096);
    return total;
}
