/* linear.cu: the fully connected layer on the GPU through cuBLAS (the CUDA twin of
 * kernels/cpu/linear.c): out (N, O) = in (N, I) @ w (O, I)^T + b (O).
 *
 * cuBLAS is column-major: a row-major (R, C) matrix is the column-major (C, R) matrix (its
 * transpose), so each row-major product is computed as the column-major product of transposes:
 *   forward  out (N, O)  = in @ w^T    Sgemm(T, N, m=O, n=N, k=I, A=w (ld I), B=in (ld I))
 *   din      din (N, I) += dout @ w    Sgemm(N, N, m=I, n=N, k=O, A=w (ld I), B=dout (ld O)), beta 1
 *   dw       dw (O, I)  += dout^T @ in Sgemm(N, T, m=I, n=O, k=N, A=in (ld I), B=dout (ld O)), beta 1
 * The bias is written into out first and the product added (beta 1), as on the CPU; db gets
 * the column sums of dout from a small kernel (one thread per output feature, sum in double).
 * TF32 follows the handle's math mode (table.cu). Not here: attention's batched
 * products (attention.cu). */
#include "common.cuh"

/* out (N, O) := b broadcast over rows */
__global__ void bias_rows_kernel(float *out, const float *b, int64_t N, int64_t O) {
    GRID_STRIDE(i, N * O) out[i] = b[i % O];
}

/* db (O) += sum over n of dout (N, O) */
__global__ void bias_grad_kernel(float *db, const float *dout, int64_t N, int64_t O) {
    GRID_STRIDE(o, O) {
        double s = 0.0;
        for (int64_t n = 0; n < N; n++) s += dout[n * O + o];
        db[o] += (float)s;
    }
}

static void gemm_check_dims(int64_t N, int64_t I, int64_t O) {
    MSD_CHECK(N >= 0 && I > 0 && O > 0 && N <= INT32_MAX && I <= INT32_MAX && O <= INT32_MAX);
}

void cuda_linear_forward(BackendCtx *ctx, float *out, const float *in, const float *w, const float *b, int64_t N,
                         int64_t I, int64_t O) {
    MSD_CHECK(out && in && w);
    gemm_check_dims(N, I, O);
    if (N == 0) return;
    CudaCtx *cc = cuda_ctx(ctx);
    float beta = 0.0f;
    if (b) {
        bias_rows_kernel<<<cuda_blocks(N * O), CUDA_THREADS, 0, cc->stream>>>(out, b, N, O);
        LAUNCH_OK(cc, "bias_rows_kernel");
        beta = 1.0f;
    }
    const float one = 1.0f;
    CUBLAS_OK(cublasSgemm(cc->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)O, (int)N, (int)I, &one, w, (int)I, in, (int)I,
                          &beta, out, (int)O));
}

void cuda_linear_backward(BackendCtx *ctx, float *din, float *dw, float *db, const float *dout, const float *in,
                          const float *w, int64_t N, int64_t I, int64_t O) {
    MSD_CHECK(dout != NULL);
    gemm_check_dims(N, I, O);
    if (N == 0) return;
    CudaCtx *cc = cuda_ctx(ctx);
    const float one = 1.0f;
    if (din) {
        MSD_CHECK(w != NULL);
        CUBLAS_OK(cublasSgemm(cc->cublas, CUBLAS_OP_N, CUBLAS_OP_N, (int)I, (int)N, (int)O, &one, w, (int)I, dout,
                              (int)O, &one, din, (int)I));
    }
    if (dw) {
        MSD_CHECK(in != NULL);
        CUBLAS_OK(cublasSgemm(cc->cublas, CUBLAS_OP_N, CUBLAS_OP_T, (int)I, (int)O, (int)N, &one, in, (int)I, dout,
                              (int)O, &one, dw, (int)I));
    }
    if (db) {
        bias_grad_kernel<<<cuda_blocks(O), CUDA_THREADS, 0, cc->stream>>>(db, dout, N, O);
        LAUNCH_OK(cc, "bias_grad_kernel");
    }
}
