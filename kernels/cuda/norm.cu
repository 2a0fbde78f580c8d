/* norm.cu: GroupNorm on the GPU (the CUDA twin of kernels/cpu/norm.c). x (N, C, HW) is normalised
 * over each (n, g) block of C/G channels times HW positions, then scaled and shifted per
 * channel: out = (x - mean) * rstd * gamma[c] + beta[c], rstd = 1/sqrt(var + eps), biased
 * variance, two passes (mean, then the centred sum of squares) as the CPU does.
 *
 * One thread block per (n, g); per-thread partial sums in double, block reductions in double
 * (fixed order: results repeat exactly run to run). The backward computes, per (n, c),
 * s1 = sum(dout) and s2 = rstd * sum(dout * (x - mean)) into scratch (N, C, 2), then
 * din += rstd * (dout*gamma - mean(g) - xhat * mean(g * xhat)) in the same block, and a second
 * kernel sums the scratch over n into dgamma (s2) and dbeta (s1): no atomics, backward adds. */
#include "common.cuh"

__global__ void gn_fwd_kernel(float *out, float *mean, float *rstd, const float *in, const float *gamma,
                              const float *beta, int64_t C, int64_t HW, int64_t G, float eps) {
    const int64_t blk = blockIdx.x, Cg = C / G, M = Cg * HW;
    const float *x = in + blk * M;
    double acc = 0.0;
    for (int64_t i = threadIdx.x; i < M; i += blockDim.x) acc += x[i];
    const float m = (float)(block_sum(acc) / (double)M);
    acc = 0.0;
    for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
        float d = x[i] - m;
        acc += (double)(d * d);
    }
    const double v = block_sum(acc);
    const float r = (float)(1.0 / sqrt(v / (double)M + (double)eps));
    if (threadIdx.x == 0) {
        mean[blk] = m;
        rstd[blk] = r;
    }
    const int64_t c0 = (blk % G) * Cg;
    float *y = out + blk * M;
    for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
        const int64_t c = c0 + i / HW;
        const float sc = r * (gamma ? gamma[c] : 1.0f);
        const float sh = (beta ? beta[c] : 0.0f) - m * sc;
        y[i] = x[i] * sc + sh;
    }
}

void cuda_groupnorm_forward(BackendCtx *ctx, float *out, float *mean, float *rstd, const float *in,
                            const float *gamma, const float *beta, int64_t N, int64_t C, int64_t HW, int64_t G,
                            float eps) {
    MSD_CHECK(out && mean && rstd && in && N >= 0 && C > 0 && HW > 0 && G > 0 && C % G == 0);
    MSD_CHECK(N * G <= INT32_MAX);
    if (N == 0) return;
    CudaCtx *cc = cuda_ctx(ctx);
    gn_fwd_kernel<<<(unsigned)(N * G), CUDA_THREADS, 0, cc->stream>>>(out, mean, rstd, in, gamma, beta, C, HW, G,
                                                                      eps);
    LAUNCH_OK(cc, "gn_fwd_kernel");
}

/* sums (N*C, 2): per (n, c) the sum of dout and rstd * sum(dout * (x - mean)); din += ... */
__global__ void gn_bwd_kernel(float *din, float *sums, const float *dout, const float *in, const float *mean,
                              const float *rstd, const float *gamma, int64_t C, int64_t HW, int64_t G) {
    const int64_t blk = blockIdx.x, Cg = C / G, M = Cg * HW, c0 = (blk % G) * Cg;
    const float *x = in + blk * M, *dy = dout + blk * M;
    const float m = mean[blk], r = rstd[blk];
    double sg = 0.0, sgx = 0.0;
    for (int64_t c = 0; c < Cg; c++) {
        const float *xc = x + c * HW, *dc = dy + c * HW;
        double a1 = 0.0, a2 = 0.0;
        for (int64_t i = threadIdx.x; i < HW; i += blockDim.x) {
            a1 += dc[i];
            a2 += (double)(dc[i] * (xc[i] - m));
        }
        const double s1 = block_sum(a1), s2 = block_sum(a2);
        const float gm = gamma ? gamma[c0 + c] : 1.0f;
        if (threadIdx.x == 0) {
            sums[(blk * Cg + c) * 2] = (float)s1;       /* blk * Cg == n * C + c0 */
            sums[(blk * Cg + c) * 2 + 1] = (float)(s2 * r);
        }
        sg += (double)gm * s1;
        sgx += (double)gm * s2 * r;
    }
    if (!din) return;
    const float mg = (float)(sg / (double)M), mgx = (float)(sgx / (double)M);
    float *dx = din + blk * M;
    for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
        const float gm = gamma ? gamma[c0 + i / HW] : 1.0f;
        const float xh = (x[i] - m) * r;
        dx[i] += r * (dy[i] * gm - mg - xh * mgx);
    }
}

/* dgamma[c] += sum_n sums[n, c, 1]; dbeta[c] += sum_n sums[n, c, 0] */
__global__ void gn_affine_grad_kernel(float *dgamma, float *dbeta, const float *sums, int64_t N, int64_t C) {
    GRID_STRIDE(c, C) {
        double sb = 0.0, sg = 0.0;
        for (int64_t n = 0; n < N; n++) {
            sb += sums[(n * C + c) * 2];
            sg += sums[(n * C + c) * 2 + 1];
        }
        if (dgamma) dgamma[c] += (float)sg;
        if (dbeta) dbeta[c] += (float)sb;
    }
}

void cuda_groupnorm_backward(BackendCtx *ctx, float *din, float *dgamma, float *dbeta, const float *dout,
                             const float *in, const float *mean, const float *rstd, const float *gamma, int64_t N,
                             int64_t C, int64_t HW, int64_t G) {
    MSD_CHECK(dout && in && mean && rstd && N >= 0 && C > 0 && HW > 0 && G > 0 && C % G == 0);
    MSD_CHECK(N * G <= INT32_MAX);
    if (N == 0 || (!din && !dgamma && !dbeta)) return;
    CudaCtx *cc = cuda_ctx(ctx);
    float *sums = backend_ctx_scratch(ctx, N * C * 2);
    gn_bwd_kernel<<<(unsigned)(N * G), CUDA_THREADS, 0, cc->stream>>>(din, sums, dout, in, mean, rstd, gamma, C, HW,
                                                                      G);
    LAUNCH_OK(cc, "gn_bwd_kernel");
    if (dgamma || dbeta) {
        gn_affine_grad_kernel<<<cuda_blocks(C), CUDA_THREADS, 0, cc->stream>>>(dgamma, dbeta, sums, N, C);
        LAUNCH_OK(cc, "gn_affine_grad_kernel");
    }
}
