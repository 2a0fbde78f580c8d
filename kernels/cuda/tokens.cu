/* tokens.cu: the GPU ops on token sequences for the sentence encoder (the CUDA twin of
 * kernels/cpu/tokens.c): GELU (erf form), row gather with HOST ids (staged like onehot's
 * labels), multi-head self-attention over tokens with a key padding mask, masked mean pooling.
 * Forward only (backend.h states the semantics).
 *
 * Attention: one block per (n, head, query i); the query's d values and its L scores live in
 * shared memory; max and sum over the real keys by block reductions in float (the CPU's
 * softmax is in float too); padded keys get probability 0. L is at most a few hundred tokens
 * (BERT's 512 positions), so L floats of shared memory always fit. */
#include <math.h>

#include "common.cuh"

/* ---- GELU ---- */
__global__ void gelu_fwd_kernel(float *out, const float *in, int64_t n) {
    GRID_STRIDE(i, n) {
        float x = in[i];
        out[i] = 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    }
}
void cuda_gelu_forward(BackendCtx *ctx, float *out, const float *in, int64_t n) {
    MSD_CHECK(out && in && n >= 0);
    if (!n) return;
    CudaCtx *cc = cuda_ctx(ctx);
    gelu_fwd_kernel<<<cuda_blocks(n), CUDA_THREADS, 0, cc->stream>>>(out, in, n);
    LAUNCH_OK(cc, "gelu_fwd_kernel");
}

/* ---- row gather ---- */
__global__ void embedding_fwd_kernel(float *out, const int32_t *ids, const float *table, int64_t N, int64_t D) {
    GRID_STRIDE(i, N * D) out[i] = table[(int64_t)ids[i / D] * D + i % D];
}
void cuda_embedding_forward(BackendCtx *ctx, float *out, const int32_t *ids, const float *table, int64_t N,
                            int64_t V, int64_t D) {
    MSD_CHECK(out && ids && table && N >= 0 && V > 0 && D > 0);
    if (!N) return;
    for (int64_t n = 0; n < N; n++) MSD_CHECK(ids[n] >= 0 && ids[n] < V);
    CudaCtx *cc = cuda_ctx(ctx);
    const int32_t *d = cuda_stage_labels(cc, ids, N);
    embedding_fwd_kernel<<<cuda_blocks(N * D), CUDA_THREADS, 0, cc->stream>>>(out, d, table, N, D);
    LAUNCH_OK(cc, "embedding_fwd_kernel");
}

/* ---- float block reductions (blockDim.x a multiple of 32; every thread calls) ---- */
__device__ __forceinline__ float tok_block_reduce(float v, int is_max) {
    __shared__ float sh[32];
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        float w = __shfl_down_sync(0xffffffffu, v, o);
        v = is_max ? fmaxf(v, w) : v + w;
    }
    __syncthreads();
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    if (wid == 0) {
        v = threadIdx.x < nw ? sh[threadIdx.x] : (is_max ? -INFINITY : 0.0f);
        for (int o = 16; o > 0; o >>= 1) {
            float w = __shfl_down_sync(0xffffffffu, v, o);
            v = is_max ? fmaxf(v, w) : v + w;
        }
        if (threadIdx.x == 0) sh[0] = v;
    }
    __syncthreads();
    return sh[0];
}

#define TATT_THREADS 128
__global__ void token_att_kernel(float *out, const float *qkv, const float *mask, int64_t L, int64_t C,
                                 int64_t heads) {
    extern __shared__ float sm[]; /* q (d) then scores (L) */
    const int64_t b = blockIdx.x, i = b % L, nh = b / L, h = nh % heads, n = nh / heads, d = C / heads;
    float *qs = sm, *sc = sm + d;
    const float *row = qkv + (n * L + i) * 3 * C + h * d;
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) qs[c] = row[c];
    __syncthreads();
    const float scale = 1.0f / sqrtf((float)d);
    float mx = -INFINITY;
    for (int64_t j = threadIdx.x; j < L; j += blockDim.x) {
        const float *k = qkv + (n * L + j) * 3 * C + C + h * d;
        float s = 0.0f;
        for (int64_t c = 0; c < d; c++) s += qs[c] * k[c];
        s *= scale;
        int real = !mask || mask[n * L + j] > 0.0f;
        sc[j] = real ? s : -INFINITY;
        if (real) mx = fmaxf(mx, s);
    }
    mx = tok_block_reduce(mx, 1);
    float sum = 0.0f;
    for (int64_t j = threadIdx.x; j < L; j += blockDim.x) {
        float e = sc[j] == -INFINITY ? 0.0f : dev_expf(sc[j] - mx);
        sc[j] = e;
        sum += e;
    }
    sum = tok_block_reduce(sum, 0);
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    float *o = out + (n * L + i) * C + h * d;
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
        float acc = 0.0f;
        for (int64_t j = 0; j < L; j++) acc += sc[j] * qkv[(n * L + j) * 3 * C + 2 * C + h * d + c];
        o[c] = acc * inv;
    }
}
void cuda_token_attention_forward(BackendCtx *ctx, float *out, const float *qkv, const float *mask, int64_t N,
                                  int64_t L, int64_t C, int64_t heads) {
    MSD_CHECK(out && qkv && N >= 0 && L > 0 && C > 0 && heads > 0 && C % heads == 0);
    MSD_CHECK(N * heads * L <= INT32_MAX && (C / heads + L) * (int64_t)sizeof(float) <= 48 * 1024);
    if (!N) return;
    CudaCtx *cc = cuda_ctx(ctx);
    size_t shm = (size_t)(C / heads + L) * sizeof(float);
    token_att_kernel<<<(unsigned)(N * heads * L), TATT_THREADS, shm, cc->stream>>>(out, qkv, mask, L, C, heads);
    LAUNCH_OK(cc, "token_att_kernel");
}

/* ---- masked mean over tokens: one thread per (n, c) ---- */
__global__ void masked_mean_kernel(float *out, const float *in, const float *mask, int64_t N, int64_t L,
                                   int64_t D) {
    GRID_STRIDE(i, N * D) {
        const int64_t n = i / D, c = i % D;
        float acc = 0.0f, cnt = 0.0f;
        for (int64_t l = 0; l < L; l++) {
            float w = mask[n * L + l];
            cnt += w;
            if (w != 0.0f) acc += w * in[(n * L + l) * D + c];
        }
        out[i] = acc * (1.0f / fmaxf(cnt, 1e-9f));
    }
}
void cuda_masked_mean_forward(BackendCtx *ctx, float *out, const float *in, const float *mask, int64_t N,
                              int64_t L, int64_t D) {
    MSD_CHECK(out && in && mask && N >= 0 && L > 0 && D > 0);
    if (!N) return;
    CudaCtx *cc = cuda_ctx(ctx);
    masked_mean_kernel<<<cuda_blocks(N * D), CUDA_THREADS, 0, cc->stream>>>(out, in, mask, N, L, D);
    LAUNCH_OK(cc, "masked_mean_kernel");
}
