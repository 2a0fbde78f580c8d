/* tokens.c: the CPU ops on token sequences that the sentence encoder (common/text/minilm.c)
 * needs and the UNet does not: GELU (erf form), row gather (embedding lookup), multi-head
 * self-attention over tokens with a key padding mask, and masked mean pooling. Semantics are
 * stated in backend.h; all four are forward only (the encoder is never trained here).
 *
 * Attention works per (n, head) pair, split over the thread pool: S = scale * q k^T (L, L) in
 * a per-chunk scratch (BLAS, strided rows of qkv), softmax over the real keys only (padded
 * keys get probability 0, exactly), then out = P v. LayerNorm is groupnorm_forward (norm.c). */
#include "blas.h"
#include <math.h>
#include <string.h>

#include "backend_internal.h"
#include "log.h"
#include "cpu_ops.h"
#include "parallel.h"

typedef struct {
    float *out, *scratch;
    const float *in, *mask;
    int64_t n, L, C, heads;
} TokArgs;

static int tok_threads(const BackendCtx *ctx, int64_t items, int64_t work) {
    if (work < OPS_PAR_MIN) return 1;
    int t = backend_ctx_threads(ctx);
    return items < t ? (int)(items ? items : 1) : t;
}

/* ---- GELU ---- */
static void gelu_k(void *p, int64_t b, int64_t e, int tid) {
    const TokArgs *a = p;
    (void)tid;
    for (int64_t i = b; i < e; i++) {
        float x = a->in[i];
        a->out[i] = 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    }
}
void cpu_gelu_forward(BackendCtx *ctx, float *out, const float *in, int64_t n) {
    MSD_CHECK(out && in && n >= 0);
    TokArgs a = {.out = out, .in = in};
    parallel_for(tok_threads(ctx, n, n), n, gelu_k, &a);
}

/* ---- row gather ---- */
void cpu_embedding_forward(BackendCtx *ctx, float *out, const int32_t *ids, const float *table, int64_t N,
                           int64_t V, int64_t D) {
    (void)ctx;
    MSD_CHECK(out && ids && table && N >= 0 && V > 0 && D > 0);
    for (int64_t n = 0; n < N; n++) {
        MSD_CHECK(ids[n] >= 0 && ids[n] < V);
        memcpy(out + n * D, table + (int64_t)ids[n] * D, (size_t)D * sizeof(float));
    }
}

/* ---- masked self-attention over tokens ---- */
static void tatt_k(void *p, int64_t b0, int64_t b1, int tid) {
    const TokArgs *a = p;
    const int64_t L = a->L, C = a->C, d = C / a->heads;
    const float scale = 1.0f / sqrtf((float)d);
    float *S = a->scratch + tid * L * L;
    for (int64_t b = b0; b < b1; b++) {
        const int64_t n = b / a->heads, h = b % a->heads;
        const float *q = a->in + n * L * 3 * C + h * d, *k = q + C, *v = k + C;
        const float *m = a->mask ? a->mask + n * L : NULL;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)L, (int)L, (int)d, scale, q, (int)(3 * C), k,
                    (int)(3 * C), 0.0f, S, (int)L);
        for (int64_t i = 0; i < L; i++) {
            float *row = S + i * L, mx = -INFINITY, s = 0.0f;
            for (int64_t j = 0; j < L; j++)
                if (!m || m[j] > 0.0f) mx = fmaxf(mx, row[j]);
            for (int64_t j = 0; j < L; j++) {
                row[j] = (!m || m[j] > 0.0f) ? ops_expf(row[j] - mx) : 0.0f;
                s += row[j];
            }
            float inv = s > 0.0f ? 1.0f / s : 0.0f;
            for (int64_t j = 0; j < L; j++) row[j] *= inv;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)L, (int)d, (int)L, 1.0f, S, (int)L, v,
                    (int)(3 * C), 0.0f, a->out + n * L * C + h * d, (int)C);
    }
}
void cpu_token_attention_forward(BackendCtx *ctx, float *out, const float *qkv, const float *mask, int64_t N,
                                 int64_t L, int64_t C, int64_t heads) {
    MSD_CHECK(out && qkv && N >= 0 && L > 0 && C > 0 && heads > 0 && C % heads == 0);
    if (!N) return;
    int t = tok_threads(ctx, N * heads, N * C * L * L / 4);
    TokArgs a = {.out = out, .in = qkv, .mask = mask, .L = L, .C = C, .heads = heads};
    a.scratch = backend_ctx_scratch(ctx, (int64_t)t * L * L);
    parallel_for(t, N * heads, tatt_k, &a);
}

/* ---- masked mean over tokens ---- */
static void mmean_k(void *p, int64_t n0, int64_t n1, int tid) {
    const TokArgs *a = p;
    (void)tid;
    const int64_t L = a->L, D = a->C;
    for (int64_t n = n0; n < n1; n++) {
        float *o = a->out + n * D;
        float cnt = 0.0f;
        memset(o, 0, (size_t)D * sizeof(float));
        for (int64_t l = 0; l < L; l++) {
            float w = a->mask[n * L + l];
            cnt += w;
            if (w == 0.0f) continue;
            const float *x = a->in + (n * L + l) * D;
            for (int64_t c = 0; c < D; c++) o[c] += w * x[c];
        }
        float inv = 1.0f / fmaxf(cnt, 1e-9f);
        for (int64_t c = 0; c < D; c++) o[c] *= inv;
    }
}
void cpu_masked_mean_forward(BackendCtx *ctx, float *out, const float *in, const float *mask, int64_t N, int64_t L,
                             int64_t D) {
    MSD_CHECK(out && in && mask && N >= 0 && L > 0 && D > 0);
    TokArgs a = {.out = out, .in = in, .mask = mask, .L = L, .C = D};
    parallel_for(tok_threads(ctx, N, N * L * D), N, mmean_k, &a);
}
