/* elementwise.cu: the pointwise and data-movement ops on the GPU (the CUDA twin of
 * kernels/cpu/elementwise.c): SiLU, softplus, add/mul/scale/axpy, per-sample affine
 * (scale_rows), scale-shift modulation, per-channel bias, EDM's sinusoidal embedding, one-hot,
 * nearest upsampling x2 and channel concat.
 *
 * One thread per output element in grid-stride loops; the reductions of the backward passes
 * (modulate's dss, add_channel's dbias) use one warp per (n, c) plane with double partial sums.
 * Every backward adds into its gradients. The formulas are the CPU's, written the same way
 * (SiLU uses dev_expf, the port of the CPU's ops_expf), so results agree to a few ulp.
 *
 * onehot takes HOST labels on every backend (as the CPU op and common/models/edm.c): they are checked
 * on the host, copied into a pinned staging buffer of the context and uploaded on the stream.
 * Not here: GroupNorm (norm.cu), attention (attention.cu), losses (loss.cu). */
#include <string.h>

#include "common.cuh"

/* ---- SiLU: x * sigmoid(x) ---- */
__global__ void silu_fwd_kernel(float *out, const float *in, int64_t n) {
    GRID_STRIDE(i, n) {
        float x = in[i];
        out[i] = x / (1.0f + dev_expf(-x));
    }
}
void cuda_silu_forward(BackendCtx *ctx, float *out, const float *in, int64_t n) {
    MSD_CHECK(n >= 0);
    if (!n) return;
    CudaCtx *cc = cuda_ctx(ctx);
    silu_fwd_kernel<<<cuda_blocks(n), CUDA_THREADS, 0, cc->stream>>>(out, in, n);
    LAUNCH_OK(cc, "silu_fwd_kernel");
}
/* d/dx x*s(x) = s(x) * (1 + x * (1 - s(x))) */
__global__ void silu_bwd_kernel(float *din, const float *dout, const float *in, int64_t n) {
    GRID_STRIDE(i, n) {
        float x = in[i], sg = 1.0f / (1.0f + dev_expf(-x));
        din[i] += dout[i] * sg * (1.0f + x * (1.0f - sg));
    }
}
void cuda_silu_backward(BackendCtx *ctx, float *din, const float *dout, const float *in, int64_t n) {
    MSD_CHECK(n >= 0);
    if (!din || !n) return;
    CudaCtx *cc = cuda_ctx(ctx);
    silu_bwd_kernel<<<cuda_blocks(n), CUDA_THREADS, 0, cc->stream>>>(din, dout, in, n);
    LAUNCH_OK(cc, "silu_bwd_kernel");
}

/* ---- softplus: max(x, 0) + log1p(exp(-|x|)); x > 20 gives x ---- */
__global__ void softplus_fwd_kernel(float *out, const float *in, int64_t n) {
    GRID_STRIDE(i, n) {
        float x = in[i];
        out[i] = x > 20.0f ? x : fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x)));
    }
}
void cuda_softplus_forward(BackendCtx *ctx, float *out, const float *in, int64_t n) {
    MSD_CHECK(n >= 0);
    if (!n) return;
    CudaCtx *cc = cuda_ctx(ctx);
    softplus_fwd_kernel<<<cuda_blocks(n), CUDA_THREADS, 0, cc->stream>>>(out, in, n);
    LAUNCH_OK(cc, "softplus_fwd_kernel");
}
/* d/dx softplus = sigmoid(x), finite for large |x| */
__global__ void softplus_bwd_kernel(float *din, const float *dout, const float *in, int64_t n) {
    GRID_STRIDE(i, n) {
        float x = in[i], z = expf(-fabsf(x));
        float sg = x >= 0.0f ? 1.0f / (1.0f + z) : z / (1.0f + z);
        din[i] += dout[i] * sg;
    }
}
void cuda_softplus_backward(BackendCtx *ctx, float *din, const float *dout, const float *in, int64_t n) {
    MSD_CHECK(n >= 0);
    if (!din || !n) return;
    CudaCtx *cc = cuda_ctx(ctx);
    softplus_bwd_kernel<<<cuda_blocks(n), CUDA_THREADS, 0, cc->stream>>>(din, dout, in, n);
    LAUNCH_OK(cc, "softplus_bwd_kernel");
}

/* ---- arithmetic ---- */
__global__ void add_kernel(float *out, const float *a, const float *b, int64_t n) {
    GRID_STRIDE(i, n) out[i] = a[i] + b[i];
}
void cuda_add(BackendCtx *ctx, float *out, const float *a, const float *b, int64_t n) {
    MSD_CHECK(n >= 0);
    if (!n) return;
    CudaCtx *cc = cuda_ctx(ctx);
    add_kernel<<<cuda_blocks(n), CUDA_THREADS, 0, cc->stream>>>(out, a, b, n);
    LAUNCH_OK(cc, "add_kernel");
}
__global__ void mul_kernel(float *out, const float *a, const float *b, int64_t n) {
    GRID_STRIDE(i, n) out[i] = a[i] * b[i];
}
void cuda_mul(BackendCtx *ctx, float *out, const float *a, const float *b, int64_t n) {
    MSD_CHECK(n >= 0);
    if (!n) return;
    CudaCtx *cc = cuda_ctx(ctx);
    mul_kernel<<<cuda_blocks(n), CUDA_THREADS, 0, cc->stream>>>(out, a, b, n);
    LAUNCH_OK(cc, "mul_kernel");
}
/* da += dout * b; db += dout * a */
__global__ void mul_bwd_kernel(float *da, float *db, const float *dout, const float *a, const float *b, int64_t n) {
    GRID_STRIDE(i, n) {
        float g = dout[i];
        if (da) da[i] += g * b[i];
        if (db) db[i] += g * a[i];
    }
}
void cuda_mul_backward(BackendCtx *ctx, float *da, float *db, const float *dout, const float *a, const float *b,
                       int64_t n) {
    MSD_CHECK(n >= 0);
    if ((!da && !db) || !n) return;
    CudaCtx *cc = cuda_ctx(ctx);
    mul_bwd_kernel<<<cuda_blocks(n), CUDA_THREADS, 0, cc->stream>>>(da, db, dout, a, b, n);
    LAUNCH_OK(cc, "mul_bwd_kernel");
}
__global__ void scale_kernel(float *out, const float *a, float s, int64_t n) {
    GRID_STRIDE(i, n) out[i] = s * a[i];
}
void cuda_scale(BackendCtx *ctx, float *out, const float *a, float s, int64_t n) {
    MSD_CHECK(n >= 0);
    if (!n) return;
    CudaCtx *cc = cuda_ctx(ctx);
    scale_kernel<<<cuda_blocks(n), CUDA_THREADS, 0, cc->stream>>>(out, a, s, n);
    LAUNCH_OK(cc, "scale_kernel");
}
__global__ void axpy_kernel(float *y, float alpha, const float *x, int64_t n) {
    GRID_STRIDE(i, n) y[i] += alpha * x[i];
}
void cuda_axpy(BackendCtx *ctx, float *y, float alpha, const float *x, int64_t n) {
    MSD_CHECK(n >= 0);
    if (!n) return;
    CudaCtx *cc = cuda_ctx(ctx);
    axpy_kernel<<<cuda_blocks(n), CUDA_THREADS, 0, cc->stream>>>(y, alpha, x, n);
    LAUNCH_OK(cc, "axpy_kernel");
}

/* out[n, j] = a[n] * x[n, j] (+ b[n] * y[n, j]) */
__global__ void scale_rows_kernel(float *out, const float *x, const float *a, const float *y, const float *b,
                                  int64_t N, int64_t D) {
    GRID_STRIDE(i, N * D) {
        int64_t n = i / D;
        out[i] = y ? a[n] * x[i] + b[n] * y[i] : a[n] * x[i];
    }
}
void cuda_scale_rows(BackendCtx *ctx, float *out, const float *x, const float *a, const float *y, const float *b,
                     int64_t N, int64_t D) {
    MSD_CHECK(out && x && a && (!y || b) && N >= 0 && D >= 0);
    if (!N || !D) return;
    CudaCtx *cc = cuda_ctx(ctx);
    scale_rows_kernel<<<cuda_blocks(N * D), CUDA_THREADS, 0, cc->stream>>>(out, x, a, y, b, N, D);
    LAUNCH_OK(cc, "scale_rows_kernel");
}

/* ---- conditioning ---- */
/* out (N, C, HW) = x * (1 + ss[n, c]) + ss[n, C + c] */
__global__ void modulate_fwd_kernel(float *out, const float *x, const float *ss, int64_t N, int64_t C, int64_t HW) {
    GRID_STRIDE(i, N * C * HW) {
        int64_t q = i / HW, n = q / C, c = q % C;
        float sc = 1.0f + ss[n * 2 * C + c], sh = ss[n * 2 * C + C + c];
        out[i] = x[i] * sc + sh;
    }
}
void cuda_modulate_forward(BackendCtx *ctx, float *out, const float *x, const float *ss, int64_t N, int64_t C,
                           int64_t HW) {
    MSD_CHECK(out && x && ss && N >= 0 && C > 0 && HW > 0);
    if (!N) return;
    CudaCtx *cc = cuda_ctx(ctx);
    modulate_fwd_kernel<<<cuda_blocks(N * C * HW), CUDA_THREADS, 0, cc->stream>>>(out, x, ss, N, C, HW);
    LAUNCH_OK(cc, "modulate_fwd_kernel");
}
/* dx += dout * (1 + scale) */
__global__ void modulate_bwd_dx_kernel(float *dx, const float *dout, const float *ss, int64_t N, int64_t C,
                                       int64_t HW) {
    GRID_STRIDE(i, N * C * HW) {
        int64_t q = i / HW, n = q / C, c = q % C;
        dx[i] += dout[i] * (1.0f + ss[n * 2 * C + c]);
    }
}
/* One warp per (n, c) plane: dss[n, c] += sum dout * x; dss[n, C + c] += sum dout.
 * (Also the plane sums of add_channel's backward, with x NULL and C2 = 0: dbias[q] += sum dout.) */
__global__ void plane_sums_kernel(float *dscale, float *dshift, const float *dout, const float *x, int64_t planes,
                                  int64_t C, int64_t HW, int64_t row) {
    const int lane = threadIdx.x & 31;
    const int64_t warps = (int64_t)gridDim.x * (blockDim.x >> 5);
    for (int64_t q = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); q < planes; q += warps) {
        const float *dy = dout + q * HW;
        double s1 = 0.0, s2 = 0.0;
        for (int64_t i = lane; i < HW; i += 32) {
            s1 += dy[i];
            if (x) s2 += (double)(dy[i] * x[q * HW + i]);
        }
        s1 = warp_sum(s1);
        s2 = warp_sum(s2);
        if (lane == 0) {
            int64_t n = q / C, c = q % C;
            if (dscale) dscale[n * row + c] += (float)s2;
            if (dshift) dshift[n * row + c] += (float)s1;
        }
    }
}
static unsigned plane_blocks(int64_t planes) { return cuda_blocks(planes, CUDA_THREADS / 32); }

void cuda_modulate_backward(BackendCtx *ctx, float *dx, float *dss, const float *dout, const float *x,
                            const float *ss, int64_t N, int64_t C, int64_t HW) {
    MSD_CHECK(dout && (!dss || x) && (!dx || ss) && N >= 0 && C > 0 && HW > 0);
    if ((!dx && !dss) || !N) return;
    CudaCtx *cc = cuda_ctx(ctx);
    if (dx) {
        modulate_bwd_dx_kernel<<<cuda_blocks(N * C * HW), CUDA_THREADS, 0, cc->stream>>>(dx, dout, ss, N, C, HW);
        LAUNCH_OK(cc, "modulate_bwd_dx_kernel");
    }
    if (dss) {
        plane_sums_kernel<<<plane_blocks(N * C), CUDA_THREADS, 0, cc->stream>>>(dss, dss + C, dout, x, N * C, C, HW,
                                                                                2 * C);
        LAUNCH_OK(cc, "plane_sums_kernel");
    }
}

/* out (N, C, HW) = x + bias[n, c] */
__global__ void add_channel_fwd_kernel(float *out, const float *x, const float *bias, int64_t total, int64_t HW) {
    GRID_STRIDE(i, total) out[i] = x[i] + bias[i / HW];
}
void cuda_add_channel_forward(BackendCtx *ctx, float *out, const float *x, const float *bias, int64_t N, int64_t C,
                              int64_t HW) {
    MSD_CHECK(out && x && bias && N >= 0 && C > 0 && HW > 0);
    if (!N) return;
    CudaCtx *cc = cuda_ctx(ctx);
    add_channel_fwd_kernel<<<cuda_blocks(N * C * HW), CUDA_THREADS, 0, cc->stream>>>(out, x, bias, N * C * HW, HW);
    LAUNCH_OK(cc, "add_channel_fwd_kernel");
}
__global__ void add_inplace_kernel(float *dst, const float *src, int64_t n) {
    GRID_STRIDE(i, n) dst[i] += src[i];
}
void cuda_add_channel_backward(BackendCtx *ctx, float *dx, float *dbias, const float *dout, int64_t N, int64_t C,
                               int64_t HW) {
    MSD_CHECK(dout && N >= 0 && C > 0 && HW > 0);
    if ((!dx && !dbias) || !N) return;
    CudaCtx *cc = cuda_ctx(ctx);
    if (dx) {
        add_inplace_kernel<<<cuda_blocks(N * C * HW), CUDA_THREADS, 0, cc->stream>>>(dx, dout, N * C * HW);
        LAUNCH_OK(cc, "add_inplace_kernel");
    }
    if (dbias) {
        /* planes q = n*C + c, written at dbias[n * C + c] */
        plane_sums_kernel<<<plane_blocks(N * C), CUDA_THREADS, 0, cc->stream>>>(NULL, dbias, dout, NULL, N * C, C, HW,
                                                                                C);
        LAUNCH_OK(cc, "plane_sums_kernel");
    }
}

/* ---- EDM sinusoidal embedding: f_k = (1/10000)^(k/half) in float, products and trig in double ---- */
__device__ __forceinline__ float sinusoidal_freq(int64_t k, int64_t half) {
    return powf(1.0f / 10000.0f, (float)k / (float)half);
}
__global__ void sinusoidal_fwd_kernel(float *out, const float *t, int64_t N, int64_t D) {
    const int64_t half = D / 2;
    GRID_STRIDE(i, N * half) {
        int64_t n = i / half, k = i % half;
        double arg = (double)(t[n] * sinusoidal_freq(k, half));
        out[n * D + k] = (float)cos(arg);
        out[n * D + half + k] = (float)sin(arg);
    }
}
void cuda_sinusoidal_forward(BackendCtx *ctx, float *out, const float *t, int64_t N, int64_t D) {
    MSD_CHECK(out && t && N >= 0 && D > 0 && D % 2 == 0);
    if (!N) return;
    CudaCtx *cc = cuda_ctx(ctx);
    sinusoidal_fwd_kernel<<<cuda_blocks(N * D / 2), CUDA_THREADS, 0, cc->stream>>>(out, t, N, D);
    LAUNCH_OK(cc, "sinusoidal_fwd_kernel");
}
/* dt[n] += sum_k f_k (-sin(t f_k) dout[n, k] + cos(t f_k) dout[n, half + k]) */
__global__ void sinusoidal_bwd_kernel(float *dt, const float *dout, const float *t, int64_t N, int64_t D) {
    const int64_t half = D / 2;
    GRID_STRIDE(n, N) {
        double g = 0.0;
        for (int64_t k = 0; k < half; k++) {
            double f = sinusoidal_freq(k, half), arg = (double)(t[n] * (float)f);
            g += f * (-sin(arg) * dout[n * D + k] + cos(arg) * dout[n * D + half + k]);
        }
        dt[n] += (float)g;
    }
}
void cuda_sinusoidal_backward(BackendCtx *ctx, float *dt, const float *dout, const float *t, int64_t N, int64_t D) {
    MSD_CHECK(dout && t && N >= 0 && D > 0 && D % 2 == 0);
    if (!dt || !N) return;
    CudaCtx *cc = cuda_ctx(ctx);
    sinusoidal_bwd_kernel<<<cuda_blocks(N), CUDA_THREADS, 0, cc->stream>>>(dt, dout, t, N, D);
    LAUNCH_OK(cc, "sinusoidal_bwd_kernel");
}

/* ---- one-hot of HOST labels ---- */
__global__ void onehot_kernel(float *out, const int32_t *labels, int64_t N, int64_t V) {
    GRID_STRIDE(i, N * V) out[i] = labels[i / V] == (int32_t)(i % V) ? 1.0f : 0.0f;
}
/* The context's device copy of N host labels (or token ids), staged through its pinned buffer
 * and queued on its stream; valid for kernels queued after it. */
const int32_t *cuda_stage_labels(CudaCtx *cc, const int32_t *labels, int64_t N) {
    if (N > cc->labels_n) { /* grow both buffers (rare: waits for the stream) */
        CUDA_OK(cudaStreamSynchronize(cc->stream));
        if (cc->d_labels) CUDA_OK(cudaFree(cc->d_labels));
        if (cc->h_labels) CUDA_OK(cudaFreeHost(cc->h_labels));
        int64_t want = N < 1024 ? 1024 : N;
        CUDA_OK(cudaMalloc((void **)&cc->d_labels, (size_t)want * sizeof(int32_t)));
        CUDA_OK(cudaMallocHost((void **)&cc->h_labels, (size_t)want * sizeof(int32_t)));
        cc->labels_n = want;
    } else {
        CUDA_OK(cudaEventSynchronize(cc->labels_done)); /* the previous upload has read the staging */
    }
    memcpy(cc->h_labels, labels, (size_t)N * sizeof(int32_t));
    CUDA_OK(cudaMemcpyAsync(cc->d_labels, cc->h_labels, (size_t)N * sizeof(int32_t), cudaMemcpyHostToDevice,
                            cc->stream));
    CUDA_OK(cudaEventRecord(cc->labels_done, cc->stream));
    return cc->d_labels;
}

void cuda_onehot(BackendCtx *ctx, float *out, const int32_t *labels, int64_t N, int64_t V) {
    MSD_CHECK(out && labels && N >= 0 && V > 0);
    if (!N) return;
    for (int64_t n = 0; n < N; n++) MSD_CHECK(labels[n] >= 0 && labels[n] < V);
    CudaCtx *cc = cuda_ctx(ctx);
    const int32_t *d = cuda_stage_labels(cc, labels, N);
    onehot_kernel<<<cuda_blocks(N * V), CUDA_THREADS, 0, cc->stream>>>(out, d, N, V);
    LAUNCH_OK(cc, "onehot_kernel");
}

/* ---- spatial ---- */
/* (N, C, H, W) -> (N, C, 2H, 2W) nearest: one thread per output element */
__global__ void upsample_fwd_kernel(float *out, const float *in, int64_t planes, int64_t H, int64_t W) {
    const int64_t W2 = 2 * W, HW4 = 4 * H * W;
    GRID_STRIDE(o, planes * HW4) {
        int64_t q = o / HW4, r = o % HW4, h2 = r / W2, w2 = r % W2;
        out[o] = in[q * H * W + (h2 >> 1) * W + (w2 >> 1)];
    }
}
void cuda_upsample2x_forward(BackendCtx *ctx, float *out, const float *in, int64_t N, int64_t C, int64_t H,
                             int64_t W) {
    MSD_CHECK(out && in && N >= 0 && C > 0 && H > 0 && W > 0);
    if (!N) return;
    CudaCtx *cc = cuda_ctx(ctx);
    upsample_fwd_kernel<<<cuda_blocks(N * C * 4 * H * W), CUDA_THREADS, 0, cc->stream>>>(out, in, N * C, H, W);
    LAUNCH_OK(cc, "upsample_fwd_kernel");
}
/* din += the sum of each 2x2 block of dout: one thread per input element */
__global__ void upsample_bwd_kernel(float *din, const float *dout, int64_t planes, int64_t H, int64_t W) {
    const int64_t HW = H * W;
    GRID_STRIDE(i, planes * HW) {
        int64_t q = i / HW, r = i % HW, h = r / W, w = r % W;
        const float *r0 = dout + q * 4 * HW + (2 * h) * 2 * W, *r1 = r0 + 2 * W;
        din[i] += r0[2 * w] + r0[2 * w + 1] + r1[2 * w] + r1[2 * w + 1];
    }
}
void cuda_upsample2x_backward(BackendCtx *ctx, float *din, const float *dout, int64_t N, int64_t C, int64_t H,
                              int64_t W) {
    MSD_CHECK(dout && N >= 0 && C > 0 && H > 0 && W > 0);
    if (!din || !N) return;
    CudaCtx *cc = cuda_ctx(ctx);
    upsample_bwd_kernel<<<cuda_blocks(N * C * H * W), CUDA_THREADS, 0, cc->stream>>>(din, dout, N * C, H, W);
    LAUNCH_OK(cc, "upsample_bwd_kernel");
}

/* out (N, Ca+Cb, HW) = [a, b]: two strided copies (each sample's planes are contiguous) */
void cuda_concat_forward(BackendCtx *ctx, float *out, const float *a, const float *b, int64_t N, int64_t Ca,
                         int64_t Cb, int64_t HW) {
    MSD_CHECK(out && a && b && N >= 0 && Ca >= 0 && Cb >= 0 && HW >= 0);
    if (!N) return;
    CudaCtx *cc = cuda_ctx(ctx);
    const size_t na = (size_t)(Ca * HW) * sizeof(float), nb = (size_t)(Cb * HW) * sizeof(float);
    if (na) CUDA_OK(cudaMemcpy2DAsync(out, na + nb, a, na, na, (size_t)N, cudaMemcpyDeviceToDevice, cc->stream));
    if (nb)
        CUDA_OK(cudaMemcpy2DAsync((char *)out + na, na + nb, b, nb, nb, (size_t)N, cudaMemcpyDeviceToDevice,
                                  cc->stream));
    LAUNCH_OK(cc, "concat_forward");
}
__global__ void concat_bwd_kernel(float *da, float *db, const float *dout, int64_t N, int64_t na, int64_t nb) {
    const int64_t row = na + nb;
    GRID_STRIDE(i, N * row) {
        int64_t n = i / row, j = i % row;
        if (j < na) {
            if (da) da[n * na + j] += dout[i];
        } else if (db) {
            db[n * nb + j - na] += dout[i];
        }
    }
}
void cuda_concat_backward(BackendCtx *ctx, float *da, float *db, const float *dout, int64_t N, int64_t Ca,
                          int64_t Cb, int64_t HW) {
    MSD_CHECK(dout && N >= 0 && Ca >= 0 && Cb >= 0 && HW >= 0);
    if ((!da && !db) || N == 0 || Ca + Cb == 0 || HW == 0) return;
    CudaCtx *cc = cuda_ctx(ctx);
    concat_bwd_kernel<<<cuda_blocks(N * (Ca + Cb) * HW), CUDA_THREADS, 0, cc->stream>>>(da, db, dout, N, Ca * HW,
                                                                                        Cb * HW);
    LAUNCH_OK(cc, "concat_bwd_kernel");
}
