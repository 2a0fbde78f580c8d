/* attention.c: the core of spatial multi-head self-attention on the CPU.
 * qkv (N, 3C, L) holds q, k, v as channel blocks; head h uses channels [h*d, (h+1)*d) of each,
 * d = C/heads, so per (n, h) q, k, v are (d, L) row-major matrices. With scale 1/sqrt(d):
 *   S = scale * q^T k (L, L);  P = softmax over keys (rows of S), saved in att;  out = v P^T.
 * Backward: dP = dout^T v; dv += dout P; dS = P * (dP - rowsum(dP * P));
 *           dq += scale * k dS^T; dk += scale * q dS.
 * Work is split over the N*heads (n, h) pairs; backward uses an L*L scratch per chunk.
 * Not here: the qkv and output projections (1x1 convs, conv.c), masks, dropout. */
#include "blas.h"
#include <math.h>

#include "backend_internal.h"
#include "log.h"
#include "cpu_ops.h"
#include "parallel.h"

typedef struct {
    float *out, *att, *dqkv, *scratch;
    const float *qkv, *dout, *catt;
    int64_t C, L, heads;
} AttArgs;

static void att_fwd_k(void *p, int64_t b0, int64_t b1, int tid) {
    const AttArgs *a = p;
    (void)tid;
    const int64_t C = a->C, L = a->L, d = C / a->heads;
    const float scale = 1.0f / sqrtf((float)d);
    for (int64_t b = b0; b < b1; b++) {
        int64_t n = b / a->heads, h = b % a->heads;
        const float *q = a->qkv + (n * 3 * C + h * d) * L, *k = q + C * L, *v = k + C * L;
        float *P = a->att + b * L * L, *out = a->out + (n * C + h * d) * L;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)L, (int)L, (int)d, scale, q, (int)L, k, (int)L,
                    0.0f, P, (int)L);
        for (int64_t i = 0; i < L; i++) {
            float *row = P + i * L, mx = row[0], s = 0.0f;
            for (int64_t j = 1; j < L; j++) mx = fmaxf(mx, row[j]);
            for (int64_t j = 0; j < L; j++) {
                row[j] = ops_expf(row[j] - mx);
                s += row[j];
            }
            float inv = 1.0f / s;
            for (int64_t j = 0; j < L; j++) row[j] *= inv;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)d, (int)L, (int)L, 1.0f, v, (int)L, P, (int)L,
                    0.0f, out, (int)L);
    }
}

static int att_chunks(const BackendCtx *ctx, int64_t pairs, int64_t C, int64_t L) {
    if (C * L * L < OPS_PAR_MIN / 4) return 1;
    int t = backend_ctx_threads(ctx);
    return pairs < t ? (int)pairs : t;
}

void cpu_attention_forward(BackendCtx *ctx, float *out, float *att, const float *qkv, int64_t N, int64_t C,
                           int64_t L, int64_t heads) {
    MSD_CHECK(out && att && qkv && N >= 0 && C > 0 && L > 0 && heads > 0 && C % heads == 0);
    AttArgs a = {.out = out, .att = att, .qkv = qkv, .C = C, .L = L, .heads = heads};
    parallel_for(att_chunks(ctx, N * heads, N * C, L), N * heads, att_fwd_k, &a);
}

static void att_bwd_k(void *p, int64_t b0, int64_t b1, int tid) {
    const AttArgs *a = p;
    const int64_t C = a->C, L = a->L, d = C / a->heads;
    const float scale = 1.0f / sqrtf((float)d);
    float *dS = a->scratch + tid * L * L;
    for (int64_t b = b0; b < b1; b++) {
        int64_t n = b / a->heads, h = b % a->heads;
        const int64_t off = (n * 3 * C + h * d) * L;
        const float *q = a->qkv + off, *k = q + C * L, *v = k + C * L;
        float *dq = a->dqkv + off, *dk = dq + C * L, *dv = dk + C * L;
        const float *P = a->catt + b * L * L, *dout = a->dout + (n * C + h * d) * L;
        /* dP (L, L) = dout^T (L, d) @ v (d, L) */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)L, (int)L, (int)d, 1.0f, dout, (int)L, v, (int)L,
                    0.0f, dS, (int)L);
        /* dv (d, L) += dout (d, L) @ P (L, L) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)d, (int)L, (int)L, 1.0f, dout, (int)L, P, (int)L,
                    1.0f, dv, (int)L);
        for (int64_t i = 0; i < L; i++) {
            float *r = dS + i * L;
            const float *pr = P + i * L;
            float s = 0.0f;
            for (int64_t j = 0; j < L; j++) s += r[j] * pr[j];
            for (int64_t j = 0; j < L; j++) r[j] = pr[j] * (r[j] - s);
        }
        /* dq (d, L) += scale * k (d, L) @ dS^T;  dk (d, L) += scale * q (d, L) @ dS */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)d, (int)L, (int)L, scale, k, (int)L, dS, (int)L,
                    1.0f, dq, (int)L);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)d, (int)L, (int)L, scale, q, (int)L, dS, (int)L,
                    1.0f, dk, (int)L);
    }
}

void cpu_attention_backward(BackendCtx *ctx, float *dqkv, const float *dout, const float *qkv, const float *att,
                            int64_t N, int64_t C, int64_t L, int64_t heads) {
    MSD_CHECK(dout && qkv && att && N >= 0 && C > 0 && L > 0 && heads > 0 && C % heads == 0);
    if (!dqkv || N == 0) return;
    int chunks = att_chunks(ctx, N * heads, N * C, L);
    AttArgs a = {.dqkv = dqkv, .dout = dout, .qkv = qkv, .catt = att, .C = C, .L = L, .heads = heads};
    a.scratch = backend_ctx_scratch(ctx, chunks * L * L);
    parallel_for(chunks, N * heads, att_bwd_k, &a);
}
