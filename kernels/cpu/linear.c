/* linear.c: fully connected layer on the CPU, out (N, O) = in (N, I) @ w (O, I)^T + b (O),
 * via OpenBLAS sgemm (single-threaded BLAS; big products are split over the thread pool by
 * rows of the result). Not here: convolution (conv.c). */
#include "blas.h"
#include <string.h>

#include "backend_internal.h"
#include "log.h"
#include "cpu_ops.h"
#include "parallel.h"

typedef struct {
    float *out, *din, *dw;
    const float *in, *w, *b, *dout;
    int64_t N, I, O;
} LinearArgs;

static int linear_chunks(const BackendCtx *ctx, int64_t rows, int64_t work) {
    if (work < (1 << 18)) return 1;
    int t = backend_ctx_threads(ctx);
    return rows < t ? (int)rows : t;
}

static void linear_fwd_rows(void *p, int64_t n0, int64_t n1, int tid) {
    const LinearArgs *a = p;
    (void)tid;
    float *out = a->out + n0 * a->O;
    if (a->b) {
        for (int64_t n = n0; n < n1; n++) memcpy(a->out + n * a->O, a->b, (size_t)a->O * sizeof(float));
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(n1 - n0), (int)a->O, (int)a->I, 1.0f,
                a->in + n0 * a->I, (int)a->I, a->w, (int)a->I, a->b ? 1.0f : 0.0f, out, (int)a->O);
}

void cpu_linear_forward(BackendCtx *ctx, float *out, const float *in, const float *w, const float *b, int64_t N,
                        int64_t I, int64_t O) {
    MSD_CHECK(out && in && w && N >= 0 && I > 0 && O > 0);
    if (N == 0) return;
    LinearArgs a = {.out = out, .in = in, .w = w, .b = b, .N = N, .I = I, .O = O};
    parallel_for(linear_chunks(ctx, N, N * I * O), N, linear_fwd_rows, &a);
}

/* din (N, I) += dout (N, O) @ w (O, I), over rows of din */
static void linear_bwd_din(void *p, int64_t n0, int64_t n1, int tid) {
    const LinearArgs *a = p;
    (void)tid;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(n1 - n0), (int)a->I, (int)a->O, 1.0f,
                a->dout + n0 * a->O, (int)a->O, a->w, (int)a->I, 1.0f, a->din + n0 * a->I, (int)a->I);
}

/* dw (O, I) += dout (N, O)^T @ in (N, I), over rows of dw */
static void linear_bwd_dw(void *p, int64_t o0, int64_t o1, int tid) {
    const LinearArgs *a = p;
    (void)tid;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(o1 - o0), (int)a->I, (int)a->N, 1.0f,
                a->dout + o0, (int)a->O, a->in, (int)a->I, 1.0f, a->dw + o0 * a->I, (int)a->I);
}

void cpu_linear_backward(BackendCtx *ctx, float *din, float *dw, float *db, const float *dout, const float *in,
                         const float *w, int64_t N, int64_t I, int64_t O) {
    MSD_CHECK(dout && N >= 0 && I > 0 && O > 0);
    if (N == 0) return;
    LinearArgs a = {.din = din, .dw = dw, .in = in, .w = w, .dout = dout, .N = N, .I = I, .O = O};
    if (din) {
        MSD_CHECK(w != NULL);
        parallel_for(linear_chunks(ctx, N, N * I * O), N, linear_bwd_din, &a);
    }
    if (dw) {
        MSD_CHECK(in != NULL);
        parallel_for(linear_chunks(ctx, O, N * I * O), O, linear_bwd_dw, &a);
    }
    if (db) {
        for (int64_t n = 0; n < N; n++) {
            const float *d = dout + n * O;
            for (int64_t o = 0; o < O; o++) db[o] += d[o];
        }
    }
}
