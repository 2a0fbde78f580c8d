/* norm.c: GroupNorm on the CPU. x (N, C, HW) is normalised over each (n, g) block of C/G
 * channels times HW positions, then scaled and shifted per channel:
 * out = (x - mean) * rstd * gamma[c] + beta[c], rstd = 1/sqrt(var + eps) (biased variance, as
 * PyTorch). Statistics are accumulated in double (vectorised float lanes, see cpu_ops.h).
 * Forward and backward are split over the (n, g) blocks. The backward pass computes, per
 * (n, c), sum(dout) and sum(dout * xhat) once: they give din and are stored in scratch, then
 * summed over n into dgamma/dbeta on the calling thread (no two chunks write one element). */
#include <math.h>

#include "backend_internal.h"
#include "log.h"
#include "cpu_ops.h"
#include "parallel.h"

typedef struct {
    float *out, *mean, *rstd, *din, *dgamma, *dbeta, *sums; /* sums (N, C, 2) in backward */
    const float *in, *gamma, *beta, *dout, *cmean, *crstd;
    int64_t N, C, HW, G;
    float eps;
} NormArgs;

static int norm_chunks(const BackendCtx *ctx, int64_t blocks, int64_t total) {
    if (total < OPS_PAR_MIN) return 1;
    int t = backend_ctx_threads(ctx);
    return blocks < t ? (int)blocks : t;
}

static void gn_fwd_blocks(void *p, int64_t b0, int64_t b1, int tid) {
    const NormArgs *a = p;
    (void)tid;
    const int64_t Cg = a->C / a->G, HW = a->HW, M = Cg * HW;
    for (int64_t blk = b0; blk < b1; blk++) {
        const float *x = a->in + blk * M;
        float m, r;
        gn_block_stats(x, M, a->eps, &m, &r);
        a->mean[blk] = m;
        a->rstd[blk] = r;
        int64_t c0 = (blk % a->G) * Cg;
        float *y = a->out + blk * M;
        for (int64_t c = 0; c < Cg; c++) {
            float sc = r * (a->gamma ? a->gamma[c0 + c] : 1.0f);
            float sh = (a->beta ? a->beta[c0 + c] : 0.0f) - m * sc;
            const float *xc = x + c * HW;
            float *yc = y + c * HW;
            for (int64_t i = 0; i < HW; i++) yc[i] = xc[i] * sc + sh;
        }
    }
}

void cpu_groupnorm_forward(BackendCtx *ctx, float *out, float *mean, float *rstd, const float *in,
                           const float *gamma, const float *beta, int64_t N, int64_t C, int64_t HW, int64_t G,
                           float eps) {
    MSD_CHECK(out && mean && rstd && in && N >= 0 && C > 0 && HW > 0 && G > 0 && C % G == 0);
    NormArgs a = {.out = out, .mean = mean, .rstd = rstd, .in = in, .gamma = gamma, .beta = beta,
                  .N = N, .C = C, .HW = HW, .G = G, .eps = eps};
    parallel_for(norm_chunks(ctx, N * G, N * C * HW), N * G, gn_fwd_blocks, &a);
}

/* per (n, group): s1 = sum(dout), s2 = sum(dout * xhat) per channel (kept in sums), then
 * din += rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dout * gamma */
static void gn_bwd_blocks(void *p, int64_t b0, int64_t b1, int tid) {
    const NormArgs *a = p;
    (void)tid;
    const int64_t Cg = a->C / a->G, HW = a->HW, M = Cg * HW;
    for (int64_t blk = b0; blk < b1; blk++) {
        const float *x = a->in + blk * M, *dy = a->dout + blk * M;
        const float m = a->cmean[blk], r = a->crstd[blk];
        int64_t c0 = (blk % a->G) * Cg;
        float *sums = a->sums + blk * Cg * 2; /* blk * Cg == n * C + c0 */
        double sg = 0.0, sgx = 0.0;
        for (int64_t c = 0; c < Cg; c++) {
            float gm = a->gamma ? a->gamma[c0 + c] : 1.0f;
            gn_channel_sums(dy + c * HW, x + c * HW, m, r, gm, HW, sums + 2 * c, &sg, &sgx);
        }
        if (!a->din) continue;
        gn_block_dx(a->din + blk * M, x, dy, a->gamma, c0, Cg, HW, m, r, (float)(sg / (double)M),
                    (float)(sgx / (double)M));
    }
}

void cpu_groupnorm_backward(BackendCtx *ctx, float *din, float *dgamma, float *dbeta, const float *dout,
                            const float *in, const float *mean, const float *rstd, const float *gamma, int64_t N,
                            int64_t C, int64_t HW, int64_t G) {
    MSD_CHECK(dout && in && mean && rstd && N >= 0 && C > 0 && HW > 0 && G > 0 && C % G == 0);
    NormArgs a = {.din = din, .dgamma = dgamma, .dbeta = dbeta, .dout = dout, .in = in, .cmean = mean,
                  .crstd = rstd, .gamma = gamma, .N = N, .C = C, .HW = HW, .G = G};
    if (!din && !dgamma && !dbeta) return;
    a.sums = backend_ctx_scratch(ctx, N * C * 2);
    parallel_for(norm_chunks(ctx, N * G, N * C * HW), N * G, gn_bwd_blocks, &a);
    gn_reduce_sums(a.sums, dgamma, dbeta, N, C);
}
