/* elementwise.c: the pointwise and data-movement ops of the CPU backend: SiLU, softplus,
 * add/mul/scale/axpy, per-sample affine (scale_rows), scale-shift modulation, per-channel bias,
 * EDM's sinusoidal embedding, one-hot, nearest upsampling x2 and channel concat.
 *
 * Each op is a plain loop over a range that the compiler vectorises; ranges of at least
 * OPS_PAR_MIN elements are split over the thread pool (ew_run). Backward ops add. */
#include <math.h>
#include <string.h>

#include "backend_internal.h"
#include "log.h"
#include "cpu_ops.h"
#include "parallel.h"

/* Generic arguments of an elementwise range kernel; each op uses the fields it needs. */
typedef struct {
    float *o0, *o1;
    const float *i0, *i1, *i2, *i3;
    float s;
    int64_t N, C, HW, D;
} Ew;

typedef void (*EwFn)(void *arg, int64_t b, int64_t e, int tid);

/* Run fn over [0, n) (n work items of `cost` elements each) on the pool when it pays. */
static void ew_run(BackendCtx *ctx, int64_t n, int64_t cost, EwFn fn, Ew *a) {
    int t = n * cost >= OPS_PAR_MIN ? backend_ctx_threads(ctx) : 1;
    parallel_for(t, n, fn, a);
}

/* ---- SiLU: x * sigmoid(x) ----
 * With AVX-512 the loops are written with intrinsics: the plain loop over ops_expf vectorises,
 * but GCC splits it on the clamps into three masked divisions per vector, which made silu
 * slower than the convolutions around it. The vector code does the same float operations in
 * the same order as ops_expf (see cpu_ops.h), so results are bit-identical to the scalar
 * loop, which remains for the tail and elsewhere. */

static void silu_fwd_k(void *p, int64_t b, int64_t e, int tid) {
    const Ew *a = p;
    (void)tid;
    int64_t i = b;
#if defined(__AVX512F__)
    const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
    for (; i + 16 <= e; i += 16) {
        __m512 x = _mm512_loadu_ps(a->i0 + i);
        _mm512_storeu_ps(a->o0 + i, _mm512_div_ps(x, _mm512_add_ps(one, ops_expf16(_mm512_sub_ps(zero, x)))));
    }
#endif
    for (; i < e; i++) {
        float x = a->i0[i];
        a->o0[i] = x / (1.0f + ops_expf(-x));
    }
}
void cpu_silu_forward(BackendCtx *ctx, float *out, const float *in, int64_t n) {
    Ew a = {.o0 = out, .i0 = in};
    ew_run(ctx, n, 1, silu_fwd_k, &a);
}
/* d/dx x*s(x) = s(x) * (1 + x * (1 - s(x))) */
static void silu_bwd_k(void *p, int64_t b, int64_t e, int tid) {
    const Ew *a = p;
    (void)tid;
    int64_t i = b;
#if defined(__AVX512F__)
    const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
    for (; i + 16 <= e; i += 16) {
        __m512 x = _mm512_loadu_ps(a->i1 + i);
        __m512 sg = _mm512_div_ps(one, _mm512_add_ps(one, ops_expf16(_mm512_sub_ps(zero, x))));
        __m512 g = _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(a->i0 + i), sg),
                                 _mm512_add_ps(one, _mm512_mul_ps(x, _mm512_sub_ps(one, sg))));
        _mm512_storeu_ps(a->o0 + i, _mm512_add_ps(_mm512_loadu_ps(a->o0 + i), g));
    }
#endif
    for (; i < e; i++) {
        float x = a->i1[i], sg = 1.0f / (1.0f + ops_expf(-x));
        a->o0[i] += a->i0[i] * sg * (1.0f + x * (1.0f - sg));
    }
}
void cpu_silu_backward(BackendCtx *ctx, float *din, const float *dout, const float *in, int64_t n) {
    if (!din) return;
    Ew a = {.o0 = din, .i0 = dout, .i1 = in};
    ew_run(ctx, n, 1, silu_bwd_k, &a);
}

/* ---- softplus: log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)); x > 20 gives x ---- */
static void softplus_fwd_k(void *p, int64_t b, int64_t e, int tid) {
    const Ew *a = p;
    (void)tid;
    for (int64_t i = b; i < e; i++) {
        float x = a->i0[i];
        a->o0[i] = x > 20.0f ? x : fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x)));
    }
}
void cpu_softplus_forward(BackendCtx *ctx, float *out, const float *in, int64_t n) {
    Ew a = {.o0 = out, .i0 = in};
    ew_run(ctx, n, 1, softplus_fwd_k, &a);
}
/* d/dx softplus = sigmoid(x), written to stay finite for large |x| */
static void softplus_bwd_k(void *p, int64_t b, int64_t e, int tid) {
    const Ew *a = p;
    (void)tid;
    for (int64_t i = b; i < e; i++) {
        float x = a->i1[i], z = expf(-fabsf(x));
        float sg = x >= 0.0f ? 1.0f / (1.0f + z) : z / (1.0f + z);
        a->o0[i] += a->i0[i] * sg;
    }
}
void cpu_softplus_backward(BackendCtx *ctx, float *din, const float *dout, const float *in, int64_t n) {
    if (!din) return;
    Ew a = {.o0 = din, .i0 = dout, .i1 = in};
    ew_run(ctx, n, 1, softplus_bwd_k, &a);
}

/* ---- arithmetic ---- */
static void add_k(void *p, int64_t b, int64_t e, int tid) {
    const Ew *a = p;
    (void)tid;
    for (int64_t i = b; i < e; i++) a->o0[i] = a->i0[i] + a->i1[i];
}
void cpu_add(BackendCtx *ctx, float *out, const float *x, const float *y, int64_t n) {
    Ew a = {.o0 = out, .i0 = x, .i1 = y};
    ew_run(ctx, n, 1, add_k, &a);
}
static void mul_k(void *p, int64_t b, int64_t e, int tid) {
    const Ew *a = p;
    (void)tid;
    for (int64_t i = b; i < e; i++) a->o0[i] = a->i0[i] * a->i1[i];
}
void cpu_mul(BackendCtx *ctx, float *out, const float *x, const float *y, int64_t n) {
    Ew a = {.o0 = out, .i0 = x, .i1 = y};
    ew_run(ctx, n, 1, mul_k, &a);
}
static void mul_bwd_k(void *p, int64_t b, int64_t e, int tid) {
    const Ew *a = p;
    (void)tid;
    if (a->o0)
        for (int64_t i = b; i < e; i++) a->o0[i] += a->i0[i] * a->i2[i];
    if (a->o1)
        for (int64_t i = b; i < e; i++) a->o1[i] += a->i0[i] * a->i1[i];
}
void cpu_mul_backward(BackendCtx *ctx, float *da, float *db, const float *dout, const float *x, const float *y,
                      int64_t n) {
    if (!da && !db) return;
    Ew a = {.o0 = da, .o1 = db, .i0 = dout, .i1 = x, .i2 = y};
    ew_run(ctx, n, 1, mul_bwd_k, &a);
}
static void scale_k(void *p, int64_t b, int64_t e, int tid) {
    const Ew *a = p;
    (void)tid;
    for (int64_t i = b; i < e; i++) a->o0[i] = a->s * a->i0[i];
}
void cpu_scale(BackendCtx *ctx, float *out, const float *x, float s, int64_t n) {
    Ew a = {.o0 = out, .i0 = x, .s = s};
    ew_run(ctx, n, 1, scale_k, &a);
}
static void axpy_k(void *p, int64_t b, int64_t e, int tid) {
    const Ew *a = p;
    (void)tid;
    for (int64_t i = b; i < e; i++) a->o0[i] += a->s * a->i0[i];
}
void cpu_axpy(BackendCtx *ctx, float *y, float alpha, const float *x, int64_t n) {
    Ew a = {.o0 = y, .i0 = x, .s = alpha};
    ew_run(ctx, n, 1, axpy_k, &a);
}

/* out[n, j] = a[n] * x[n, j] (+ b[n] * y[n, j]), over rows */
static void scale_rows_k(void *p, int64_t r0, int64_t r1, int tid) {
    const Ew *a = p;
    (void)tid;
    const int64_t D = a->D;
    for (int64_t n = r0; n < r1; n++) {
        const float *x = a->i0 + n * D;
        float *o = a->o0 + n * D;
        float sa = a->i1[n];
        if (a->i2) {
            const float *y = a->i2 + n * D;
            float sb = a->i3[n];
            for (int64_t j = 0; j < D; j++) o[j] = sa * x[j] + sb * y[j];
        } else {
            for (int64_t j = 0; j < D; j++) o[j] = sa * x[j];
        }
    }
}
void cpu_scale_rows(BackendCtx *ctx, float *out, const float *x, const float *sa, const float *y, const float *sb,
                    int64_t N, int64_t D) {
    MSD_CHECK(out && x && sa && (!y || sb));
    Ew a = {.o0 = out, .i0 = x, .i1 = sa, .i2 = y, .i3 = sb, .D = D};
    ew_run(ctx, N, D, scale_rows_k, &a);
}

/* ---- conditioning ---- */
/* out (N, C, HW) = x * (1 + ss[n, c]) + ss[n, C + c], over (n, c) planes */
static void modulate_fwd_k(void *p, int64_t q0, int64_t q1, int tid) {
    const Ew *a = p;
    (void)tid;
    const int64_t C = a->C, HW = a->HW;
    for (int64_t q = q0; q < q1; q++) {
        int64_t n = q / C, c = q % C;
        float sc = 1.0f + a->i1[n * 2 * C + c], sh = a->i1[n * 2 * C + C + c];
        const float *x = a->i0 + q * HW;
        float *o = a->o0 + q * HW;
        for (int64_t i = 0; i < HW; i++) o[i] = x[i] * sc + sh;
    }
}
void cpu_modulate_forward(BackendCtx *ctx, float *out, const float *x, const float *ss, int64_t N, int64_t C,
                          int64_t HW) {
    MSD_CHECK(out && x && ss);
    Ew a = {.o0 = out, .i0 = x, .i1 = ss, .C = C, .HW = HW};
    ew_run(ctx, N * C, HW, modulate_fwd_k, &a);
}
static void modulate_bwd_k(void *p, int64_t q0, int64_t q1, int tid) {
    const Ew *a = p;
    (void)tid;
    const int64_t C = a->C, HW = a->HW;
    for (int64_t q = q0; q < q1; q++) {
        int64_t n = q / C, c = q % C;
        const float *dy = a->i0 + q * HW, *x = a->i1 + q * HW;
        if (a->o0) {
            float sc = 1.0f + a->i2[n * 2 * C + c];
            float *dx = a->o0 + q * HW;
            for (int64_t i = 0; i < HW; i++) dx[i] += dy[i] * sc;
        }
        if (a->o1) {
            double s1, s2; /* s1 = sum dy, s2 = sum dy * x */
            ops_sum_dot_centered(dy, x, 0.0f, HW, &s1, &s2);
            a->o1[n * 2 * C + c] += (float)s2;
            a->o1[n * 2 * C + C + c] += (float)s1;
        }
    }
}
void cpu_modulate_backward(BackendCtx *ctx, float *dx, float *dss, const float *dout, const float *x,
                           const float *ss, int64_t N, int64_t C, int64_t HW) {
    MSD_CHECK(dout && (!dss || x) && (!dx || ss));
    if (!dx && !dss) return;
    Ew a = {.o0 = dx, .o1 = dss, .i0 = dout, .i1 = x, .i2 = ss, .C = C, .HW = HW};
    ew_run(ctx, N * C, HW, modulate_bwd_k, &a);
}

/* out (N, C, HW) = x + bias[n, c] */
static void add_channel_fwd_k(void *p, int64_t q0, int64_t q1, int tid) {
    const Ew *a = p;
    (void)tid;
    const int64_t HW = a->HW;
    for (int64_t q = q0; q < q1; q++) {
        float v = a->i1[q];
        const float *x = a->i0 + q * HW;
        float *o = a->o0 + q * HW;
        for (int64_t i = 0; i < HW; i++) o[i] = x[i] + v;
    }
}
void cpu_add_channel_forward(BackendCtx *ctx, float *out, const float *x, const float *bias, int64_t N, int64_t C,
                             int64_t HW) {
    MSD_CHECK(out && x && bias);
    Ew a = {.o0 = out, .i0 = x, .i1 = bias, .HW = HW};
    ew_run(ctx, N * C, HW, add_channel_fwd_k, &a);
}
static void add_channel_bwd_k(void *p, int64_t q0, int64_t q1, int tid) {
    const Ew *a = p;
    (void)tid;
    const int64_t HW = a->HW;
    for (int64_t q = q0; q < q1; q++) {
        const float *dy = a->i0 + q * HW;
        if (a->o0) {
            float *dx = a->o0 + q * HW;
            for (int64_t i = 0; i < HW; i++) dx[i] += dy[i];
        }
        if (a->o1) {
            a->o1[q] += (float)ops_sum(dy, HW);
        }
    }
}
void cpu_add_channel_backward(BackendCtx *ctx, float *dx, float *dbias, const float *dout, int64_t N, int64_t C,
                              int64_t HW) {
    MSD_CHECK(dout);
    if (!dx && !dbias) return;
    Ew a = {.o0 = dx, .o1 = dbias, .i0 = dout, .HW = HW};
    ew_run(ctx, N * C, HW, add_channel_bwd_k, &a);
}

/* EDM PositionalEmbedding (endpoint=False, max_positions 10000): f_k = (1/10000)^(k/(D/2)),
 * out (N, D) = [cos(t f), sin(t f)]. Frequencies in float as PyTorch computes them; the
 * products and trig in double so that t up to ~1e3 keeps its precision. */
static float sinusoidal_freq(int64_t k, int64_t half) {
    return powf(1.0f / 10000.0f, (float)k / (float)half);
}
void cpu_sinusoidal_forward(BackendCtx *ctx, float *out, const float *t, int64_t N, int64_t D) {
    (void)ctx;
    MSD_CHECK(out && t && D > 0 && D % 2 == 0);
    const int64_t half = D / 2;
    for (int64_t n = 0; n < N; n++) {
        for (int64_t k = 0; k < half; k++) {
            double arg = (double)(t[n] * sinusoidal_freq(k, half));
            out[n * D + k] = (float)cos(arg);
            out[n * D + half + k] = (float)sin(arg);
        }
    }
}
void cpu_sinusoidal_backward(BackendCtx *ctx, float *dt, const float *dout, const float *t, int64_t N, int64_t D) {
    (void)ctx;
    MSD_CHECK(dout && t && D > 0 && D % 2 == 0);
    if (!dt) return;
    const int64_t half = D / 2;
    for (int64_t n = 0; n < N; n++) {
        double g = 0.0;
        for (int64_t k = 0; k < half; k++) {
            double f = sinusoidal_freq(k, half), arg = (double)(t[n] * (float)f);
            g += f * (-sin(arg) * dout[n * D + k] + cos(arg) * dout[n * D + half + k]);
        }
        dt[n] += (float)g;
    }
}

void cpu_onehot(BackendCtx *ctx, float *out, const int32_t *labels, int64_t N, int64_t V) {
    (void)ctx;
    MSD_CHECK(out && labels && V > 0);
    memset(out, 0, (size_t)(N * V) * sizeof(float));
    for (int64_t n = 0; n < N; n++) {
        MSD_CHECK(labels[n] >= 0 && labels[n] < V);
        out[n * V + labels[n]] = 1.0f;
    }
}

/* ---- spatial ---- */
/* (N, C, H, W) -> (N, C, 2H, 2W) nearest, over (n, c) planes */
static void up_fwd_k(void *p, int64_t q0, int64_t q1, int tid) {
    const Ew *a = p;
    (void)tid;
    const int64_t H = a->N, W = a->D; /* N and D hold H and W here */
    for (int64_t q = q0; q < q1; q++) {
        const float *x = a->i0 + q * H * W;
        float *o = a->o0 + q * 4 * H * W;
        for (int64_t h = 0; h < H; h++) {
            float *r0 = o + (2 * h) * 2 * W, *r1 = r0 + 2 * W;
            const float *xr = x + h * W;
            for (int64_t w = 0; w < W; w++) {
                r0[2 * w] = xr[w];
                r0[2 * w + 1] = xr[w];
            }
            memcpy(r1, r0, (size_t)(2 * W) * sizeof(float));
        }
    }
}
void cpu_upsample2x_forward(BackendCtx *ctx, float *out, const float *in, int64_t N, int64_t C, int64_t H,
                            int64_t W) {
    MSD_CHECK(out && in);
    Ew a = {.o0 = out, .i0 = in, .N = H, .D = W};
    ew_run(ctx, N * C, 4 * H * W, up_fwd_k, &a);
}
static void up_bwd_k(void *p, int64_t q0, int64_t q1, int tid) {
    const Ew *a = p;
    (void)tid;
    const int64_t H = a->N, W = a->D;
    for (int64_t q = q0; q < q1; q++) {
        float *dx = a->o0 + q * H * W;
        const float *g = a->i0 + q * 4 * H * W;
        for (int64_t h = 0; h < H; h++) {
            const float *r0 = g + (2 * h) * 2 * W, *r1 = r0 + 2 * W;
            float *dr = dx + h * W;
            for (int64_t w = 0; w < W; w++) dr[w] += r0[2 * w] + r0[2 * w + 1] + r1[2 * w] + r1[2 * w + 1];
        }
    }
}
void cpu_upsample2x_backward(BackendCtx *ctx, float *din, const float *dout, int64_t N, int64_t C, int64_t H,
                             int64_t W) {
    MSD_CHECK(dout);
    if (!din) return;
    Ew a = {.o0 = din, .i0 = dout, .N = H, .D = W};
    ew_run(ctx, N * C, 4 * H * W, up_bwd_k, &a);
}

/* out (N, Ca+Cb, HW) = [a, b] along channels: whole planes per sample are contiguous */
static void cat_fwd_k(void *p, int64_t n0, int64_t n1, int tid) {
    const Ew *a = p;
    (void)tid;
    const int64_t na = a->C * a->HW, nb = a->D * a->HW;
    for (int64_t n = n0; n < n1; n++) {
        memcpy(a->o0 + n * (na + nb), a->i0 + n * na, (size_t)na * sizeof(float));
        memcpy(a->o0 + n * (na + nb) + na, a->i1 + n * nb, (size_t)nb * sizeof(float));
    }
}
void cpu_concat_forward(BackendCtx *ctx, float *out, const float *a, const float *b, int64_t N, int64_t Ca,
                        int64_t Cb, int64_t HW) {
    MSD_CHECK(out && a && b);
    Ew e = {.o0 = out, .i0 = a, .i1 = b, .C = Ca, .D = Cb, .HW = HW};
    ew_run(ctx, N, (Ca + Cb) * HW, cat_fwd_k, &e);
}
static void cat_bwd_k(void *p, int64_t n0, int64_t n1, int tid) {
    const Ew *a = p;
    (void)tid;
    const int64_t na = a->C * a->HW, nb = a->D * a->HW;
    for (int64_t n = n0; n < n1; n++) {
        const float *g = a->i0 + n * (na + nb);
        if (a->o0) {
            float *d = a->o0 + n * na;
            for (int64_t i = 0; i < na; i++) d[i] += g[i];
        }
        if (a->o1) {
            float *d = a->o1 + n * nb;
            for (int64_t i = 0; i < nb; i++) d[i] += g[na + i];
        }
    }
}
void cpu_concat_backward(BackendCtx *ctx, float *da, float *db, const float *dout, int64_t N, int64_t Ca,
                         int64_t Cb, int64_t HW) {
    MSD_CHECK(dout);
    Ew e = {.o0 = da, .o1 = db, .i0 = dout, .C = Ca, .D = Cb, .HW = HW};
    ew_run(ctx, N, (Ca + Cb) * HW, cat_bwd_k, &e);
}

