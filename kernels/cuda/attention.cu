/* attention.cu: the core of spatial multi-head self-attention on the GPU (the CUDA twin of
 * kernels/cpu/attention.c). qkv (N, 3C, L) holds q, k, v as channel blocks; head h uses channels
 * [h*d, (h+1)*d) of each, d = C/heads, so per (n, h) q, k, v are row-major (d, L) matrices.
 * With scale = 1/sqrt(d):
 *   S = scale * q^T k (L, L);  P = softmax over keys (rows of S), saved in att;  out = v P^T.
 * Backward: dP = dout^T v; dv += dout P; dS = P * (dP - rowsum(dP * P));
 *           dq += scale * k dS^T; dk += scale * q dS.
 *
 * The products are cublasSgemmStridedBatched calls, one per head, batched over the N samples
 * (sample stride 3C*L in qkv, C*L in out, heads*L*L in att); cuBLAS is column-major, and a
 * row-major (d, L) matrix is the column-major (L, d) one, which is how each call below reads.
 * The softmax and its backward are row kernels (one warp per row of L). The backward's dS
 * lives in the context's scratch (N*heads*L*L floats, the size of att). Not here: the qkv and
 * output projections (1x1 convolutions), masks, dropout. */
#include <math.h>

#include "common.cuh"

/* rows (R, L) in place: row := softmax(row), exponentials by dev_expf as on the CPU */
__global__ void softmax_rows_kernel(float *P, int64_t R, int64_t L) {
    const int lane = threadIdx.x & 31;
    const int64_t warps = (int64_t)gridDim.x * (blockDim.x >> 5);
    for (int64_t r = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); r < R; r += warps) {
        float *row = P + r * L;
        float mx = -INFINITY;
        for (int64_t j = lane; j < L; j += 32) mx = fmaxf(mx, row[j]);
        for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        double s = 0.0;
        for (int64_t j = lane; j < L; j += 32) {
            float e = dev_expf(row[j] - mx);
            row[j] = e;
            s += e;
        }
        s = warp_sum(s);
        const float inv = 1.0f / (float)__shfl_sync(0xffffffffu, s, 0);
        for (int64_t j = lane; j < L; j += 32) row[j] *= inv;
    }
}

/* rows (R, L): dS := P * (dS - sum_j dS * P) (dS holds dP on entry) */
__global__ void softmax_bwd_rows_kernel(float *dS, const float *P, int64_t R, int64_t L) {
    const int lane = threadIdx.x & 31;
    const int64_t warps = (int64_t)gridDim.x * (blockDim.x >> 5);
    for (int64_t r = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); r < R; r += warps) {
        float *g = dS + r * L;
        const float *p = P + r * L;
        double s = 0.0;
        for (int64_t j = lane; j < L; j += 32) s += (double)(g[j] * p[j]);
        s = warp_sum(s);
        const float sf = (float)__shfl_sync(0xffffffffu, s, 0);
        for (int64_t j = lane; j < L; j += 32) g[j] = p[j] * (g[j] - sf);
    }
}

static unsigned row_blocks(int64_t rows) { return cuda_blocks(rows, CUDA_THREADS / 32); }

static void att_check(int64_t N, int64_t C, int64_t L, int64_t heads) {
    MSD_CHECK(N >= 0 && C > 0 && L > 0 && heads > 0 && C % heads == 0);
    MSD_CHECK(N <= INT32_MAX && L <= INT32_MAX && C <= INT32_MAX);
}

void cuda_attention_forward(BackendCtx *ctx, float *out, float *att, const float *qkv, int64_t N, int64_t C,
                            int64_t L, int64_t heads) {
    MSD_CHECK(out && att && qkv);
    att_check(N, C, L, heads);
    if (N == 0) return;
    CudaCtx *cc = cuda_ctx(ctx);
    const int64_t d = C / heads;
    const float scale = 1.0f / sqrtf((float)d), one = 1.0f, zero = 0.0f;
    const int l = (int)L, di = (int)d, n = (int)N;
    const long long sq = 3 * C * L, so = C * L, sa = heads * L * L;
    for (int64_t h = 0; h < heads; h++) {
        const float *q = qkv + h * d * L, *k = q + C * L;
        /* S (L, L) row-major = its column-major transpose = K_cm (L, d) * Q_cm^T */
        CUBLAS_OK(cublasSgemmStridedBatched(cc->cublas, CUBLAS_OP_N, CUBLAS_OP_T, l, l, di, &scale, k, l, sq, q, l, sq,
                                            &zero, att + h * L * L, l, sa, n));
    }
    softmax_rows_kernel<<<row_blocks(N * heads * L), CUDA_THREADS, 0, cc->stream>>>(att, N * heads * L, L);
    LAUNCH_OK(cc, "softmax_rows_kernel");
    for (int64_t h = 0; h < heads; h++) {
        const float *v = qkv + h * d * L + 2 * C * L;
        /* out_cm (L, d) = P_cm^T (P row-major) * V_cm */
        CUBLAS_OK(cublasSgemmStridedBatched(cc->cublas, CUBLAS_OP_T, CUBLAS_OP_N, l, di, l, &one, att + h * L * L, l, sa,
                                            v, l, sq, &zero, out + h * d * L, l, so, n));
    }
    LAUNCH_OK(cc, "attention_forward output products");
}

void cuda_attention_backward(BackendCtx *ctx, float *dqkv, const float *dout, const float *qkv, const float *att,
                             int64_t N, int64_t C, int64_t L, int64_t heads) {
    MSD_CHECK(dout && qkv && att);
    att_check(N, C, L, heads);
    if (!dqkv || N == 0) return;
    CudaCtx *cc = cuda_ctx(ctx);
    const int64_t d = C / heads;
    const float scale = 1.0f / sqrtf((float)d), one = 1.0f, zero = 0.0f;
    const int l = (int)L, di = (int)d, n = (int)N;
    const long long sq = 3 * C * L, so = C * L, sa = heads * L * L;
    float *dS = backend_ctx_scratch(ctx, N * heads * L * L); /* same layout as att */
    for (int64_t h = 0; h < heads; h++) {
        const float *v = qkv + h * d * L + 2 * C * L, *dy = dout + h * d * L, *P = att + h * L * L;
        float *dv = dqkv + h * d * L + 2 * C * L;
        /* dP (L, L) row-major: dP^T_cm = V_cm * Dout_cm^T */
        CUBLAS_OK(cublasSgemmStridedBatched(cc->cublas, CUBLAS_OP_N, CUBLAS_OP_T, l, l, di, &one, v, l, sq, dy, l, so,
                                            &zero, dS + h * L * L, l, sa, n));
        /* dv_cm (L, d) += P_cm * Dout_cm */
        CUBLAS_OK(cublasSgemmStridedBatched(cc->cublas, CUBLAS_OP_N, CUBLAS_OP_N, l, di, l, &one, P, l, sa, dy, l, so,
                                            &one, dv, l, sq, n));
    }
    softmax_bwd_rows_kernel<<<row_blocks(N * heads * L), CUDA_THREADS, 0, cc->stream>>>(dS, att, N * heads * L, L);
    LAUNCH_OK(cc, "softmax_bwd_rows_kernel");
    for (int64_t h = 0; h < heads; h++) {
        const float *q = qkv + h * d * L, *k = q + C * L;
        float *dq = dqkv + h * d * L, *dk = dq + C * L;
        /* dq_cm (L, d) += scale * dS_cm^T * K_cm;  dk_cm (L, d) += scale * dS_cm * Q_cm */
        CUBLAS_OK(cublasSgemmStridedBatched(cc->cublas, CUBLAS_OP_T, CUBLAS_OP_N, l, di, l, &scale, dS + h * L * L, l,
                                            sa, k, l, sq, &one, dq, l, sq, n));
        CUBLAS_OK(cublasSgemmStridedBatched(cc->cublas, CUBLAS_OP_N, CUBLAS_OP_N, l, di, l, &scale, dS + h * L * L, l,
                                            sa, q, l, sq, &one, dk, l, sq, n));
    }
    LAUNCH_OK(cc, "attention_backward dq/dk products");
}
