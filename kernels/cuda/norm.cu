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

/* The statistics of block blk (M values at x), into mean[blk] and rstd[blk] and *m, *r (every
 * thread of the block calls it) */
__device__ __forceinline__ void gn_block_stats(const float *x, int64_t M, float eps, int64_t blk, float *mean,
                                               float *rstd, float *m_out, float *r_out) {
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
    *m_out = m;
    *r_out = r;
}

__global__ void gn_fwd_kernel(float *out, float *mean, float *rstd, const float *in, const float *gamma,
                              const float *beta, int64_t C, int64_t HW, int64_t G, float eps) {
    const int64_t blk = blockIdx.x, Cg = C / G, M = Cg * HW;
    const float *x = in + blk * M;
    float m, r;
    gn_block_stats(x, M, eps, blk, mean, rstd, &m, &r);
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

/* ---- fused GroupNorm + modulation (optional) + SiLU: the optional norm_act_* slots ----
 * The CUDA twin of kernels/cpu/normact.c. Forward: gn_fwd_kernel's statistics, then
 * a = silu(y [* (1 + ss[n, c]) + ss[n, C + c]]) written once (the separate ops write y, the
 * modulated y and a, and read each back). Backward: per (n, g) block, per channel, the
 * gradient at the activation's input dm = dout * silu'(m) and at the GroupNorm output
 * dy = dm [* (1 + scale)] are recomputed from x and dout wherever needed instead of being
 * stored; the block sums dss (one block owns each (n, c): no atomics), GroupNorm's s1/s2 into
 * the scratch as gn_bwd_kernel, then din; dgamma and dbeta through gn_affine_grad_kernel. The
 * float formulas are the separate ops' (groupnorm, modulate_*, silu_*), in double partial sums
 * as there, so fused and separate agree to rounding (tests/test_gpu_ops.c). */

__device__ __forceinline__ float na_mod(float y, const float *ss, int64_t n, int64_t C, int64_t c, int mod) {
    return mod ? y * (1.0f + ss[n * 2 * C + c]) + ss[n * 2 * C + C + c] : y;
}

__global__ void na_fwd_kernel(float *out, float *mean, float *rstd, const float *in, const float *gamma,
                              const float *beta, const float *ss, int64_t C, int64_t HW, int64_t G, float eps) {
    const int64_t blk = blockIdx.x, Cg = C / G, M = Cg * HW, n = blk / G;
    const float *x = in + blk * M;
    float m, r;
    gn_block_stats(x, M, eps, blk, mean, rstd, &m, &r);
    const int64_t c0 = (blk % G) * Cg;
    float *a = out + blk * M;
    for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
        const int64_t c = c0 + i / HW;
        const float sc = r * (gamma ? gamma[c] : 1.0f);
        const float sh = (beta ? beta[c] : 0.0f) - m * sc;
        const float t = na_mod(x[i] * sc + sh, ss, n, C, c, ss != NULL);
        a[i] = t / (1.0f + dev_expf(-t));
    }
}

void cuda_norm_act_forward(BackendCtx *ctx, float *out, float *mean, float *rstd, const float *in, const float *gamma,
                           const float *beta, const float *ss, int64_t N, int64_t C, int64_t HW, int64_t G, float eps) {
    MSD_CHECK(out && mean && rstd && in && N >= 0 && C > 0 && HW > 0 && G > 0 && C % G == 0);
    MSD_CHECK(N * G <= INT32_MAX);
    if (N == 0) return;
    CudaCtx *cc = cuda_ctx(ctx);
    na_fwd_kernel<<<(unsigned)(N * G), CUDA_THREADS, 0, cc->stream>>>(out, mean, rstd, in, gamma, beta, ss, C, HW, G,
                                                                      eps);
    LAUNCH_OK(cc, "na_fwd_kernel");
}

/* dm and dy at element i of channel c (sc, sh: the GroupNorm affine of c; y returned) */
__device__ __forceinline__ float na_dy(float x, float dout, float sc, float sh, const float *ss, int64_t n, int64_t C,
                                       int64_t c, int mod, float *dm, float *y) {
    const float yy = x * sc + sh, t = na_mod(yy, ss, n, C, c, mod);
    const float sg = 1.0f / (1.0f + dev_expf(-t));
    const float d = dout * sg * (1.0f + t * (1.0f - sg));
    *dm = d;
    *y = yy;
    return mod ? d * (1.0f + ss[n * 2 * C + c]) : d;
}

__global__ void na_bwd_kernel(float *din, float *dss, float *sums, const float *dout, const float *in,
                              const float *mean, const float *rstd, const float *gamma, const float *beta,
                              const float *ss, int64_t C, int64_t HW, int64_t G) {
    const int64_t blk = blockIdx.x, Cg = C / G, M = Cg * HW, c0 = (blk % G) * Cg, n = blk / G;
    const float *x = in + blk * M, *dz = dout + blk * M;
    const float m = mean[blk], r = rstd[blk];
    const int mod = ss != NULL;
    double sg = 0.0, sgx = 0.0;
    for (int64_t c = 0; c < Cg; c++) {
        const float *xc = x + c * HW, *dc = dz + c * HW;
        const float gm = gamma ? gamma[c0 + c] : 1.0f, sc = r * gm, sh = (beta ? beta[c0 + c] : 0.0f) - m * sc;
        double a1 = 0.0, a2 = 0.0, b1 = 0.0, b2 = 0.0;
        for (int64_t i = threadIdx.x; i < HW; i += blockDim.x) {
            float dm, y;
            const float dy = na_dy(xc[i], dc[i], sc, sh, ss, n, C, c0 + c, mod, &dm, &y);
            a1 += dy;
            a2 += (double)(dy * (xc[i] - m));
            b1 += dm;
            b2 += (double)(dm * y);
        }
        const double s1 = block_sum(a1), s2 = block_sum(a2);
        double t1 = 0.0, t2 = 0.0;
        if (mod && dss) {
            t1 = block_sum(b1);
            t2 = block_sum(b2);
        }
        if (threadIdx.x == 0) {
            sums[(blk * Cg + c) * 2] = (float)s1;
            sums[(blk * Cg + c) * 2 + 1] = (float)(s2 * r);
            if (mod && dss) {
                dss[n * 2 * C + c0 + c] += (float)t2;
                dss[n * 2 * C + C + c0 + c] += (float)t1;
            }
        }
        sg += (double)gm * s1;
        sgx += (double)gm * s2 * r;
    }
    if (!din) return;
    const float mg = (float)(sg / (double)M), mgx = (float)(sgx / (double)M);
    float *dx = din + blk * M;
    for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
        const int64_t c = c0 + i / HW;
        const float gm = gamma ? gamma[c] : 1.0f, sc = r * gm, sh = (beta ? beta[c] : 0.0f) - m * sc;
        float dm, y;
        const float dy = na_dy(x[i], dz[i], sc, sh, ss, n, C, c, mod, &dm, &y);
        const float xh = (x[i] - m) * r;
        dx[i] += r * (dy * gm - mg - xh * mgx);
    }
}

void cuda_norm_act_backward(BackendCtx *ctx, float *din, float *dgamma, float *dbeta, float *dss, const float *dout,
                            const float *in, const float *mean, const float *rstd, const float *gamma,
                            const float *beta, const float *ss, int64_t N, int64_t C, int64_t HW, int64_t G) {
    MSD_CHECK(dout && in && mean && rstd && N >= 0 && C > 0 && HW > 0 && G > 0 && C % G == 0);
    MSD_CHECK(!dss || ss);
    MSD_CHECK(N * G <= INT32_MAX);
    if (N == 0 || (!din && !dgamma && !dbeta && !dss)) return;
    CudaCtx *cc = cuda_ctx(ctx);
    float *sums = backend_ctx_scratch(ctx, N * C * 2);
    na_bwd_kernel<<<(unsigned)(N * G), CUDA_THREADS, 0, cc->stream>>>(din, dss, sums, dout, in, mean, rstd, gamma,
                                                                      beta, ss, C, HW, G);
    LAUNCH_OK(cc, "na_bwd_kernel");
    if (dgamma || dbeta) {
        gn_affine_grad_kernel<<<cuda_blocks(C), CUDA_THREADS, 0, cc->stream>>>(dgamma, dbeta, sums, N, C);
        LAUNCH_OK(cc, "gn_affine_grad_kernel");
    }
}
