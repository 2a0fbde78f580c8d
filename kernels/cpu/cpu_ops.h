/* cpu_ops.h: the CPU implementations of the backend ops (the files of kernels/cpu), as named in the
 * `backend_cpu` table (table.c). Semantics, shapes and argument order are those of the
 * matching slot in backend.h: forward writes, backward adds into non-NULL gradients.
 * Callers outside the CPU backend go through the table, not these names. */
#ifndef MSD_CPU_OPS_H
#define MSD_CPU_OPS_H

#include <math.h>
#include <stdint.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "backend.h"

/* cpu_NAME for every op of the list in backend.h (memory.c, linear.c, conv.c, norm.c,
 * normact.c, elementwise.c, attention.c, loss.c, optim.c, rng.c), generated from it so that a
 * prototype cannot drift from its slot. */
#define CPU_OP_PROTO_(RET, NAME, PARAMS, ARGS) RET cpu_##NAME PARAMS;
MSD_BACKEND_OPS(CPU_OP_PROTO_)
MSD_BACKEND_OPTIONAL_OPS(CPU_OP_PROTO_)
#undef CPU_OP_PROTO_

/* machine.c: cache-sized work (tuned for 2 MiB of L2; MSD_CPU_L2 scales it, read once): the
 * Winograd work item's tiles, and the direct dw's "all images at once" bound and image-group
 * size in floats; and a line saying what the kernels chose (for the benchmarks) */
int64_t cpu_wino_tiles(void);
/* 1: 3x3 convolutions go to im2col + OpenBLAS (builds without AVX-512, or MSD_CPU_CONV=gemm) */
int cpu_conv_gemm(void);
/* tests only (not while convolutions run): switch the path, to check both in one process */
void cpu_conv_set_gemm(int gemm);
int64_t cpu_dw_pairs_max(void);
int64_t cpu_dw_group_floats(void);
void cpu_machine_describe(char *buf, int cap);

/* conv_winograd.c: Winograd F(2x2, 3x3) for 3x3 stride-1 pad-1 convolutions (conv.c uses it)
 * on maps at least CPU_WINO_MIN_W wide (see cpu_wino_usable) */
#define CPU_WINO_MIN_W 13
int cpu_wino_usable(const ConvShape *s);
/* out (N, O, H, W) = conv3x3(in (N, C, H, W)) + bias (NULL: none), or += when add, with the
 * (o, c) kernel at w + o*so + c*sc, its 9 taps reversed when flip */
void cpu_wino_conv(BackendCtx *ctx, float *out, const float *in, const float *w, int64_t so, int64_t sc, int flip,
                   const float *bias, int add, int64_t N, int64_t C, int64_t O, int64_t H, int64_t W);
/* exp(x) for float, branch-free so that loops calling it vectorise (libm's expf does not
 * without -ffast-math). Cody-Waite range reduction and a degree-6 polynomial, evaluated with
 * fused multiply-adds (fmaf; the build does not contract a*b+c on its own, so these are the
 * only fused operations; a third fewer instructions than separate ones): within 1 ulp on
 * [-87, 88] (tests/test_ops.c); inputs are clamped to that range (exp(-87) ~ 1.6e-38, no
 * denormals, no inf). NaN gives NaN. ops_expf16 below does the same operations in the same
 * order on 16 lanes, so both give the same bits. */
static inline float ops_expf(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float t = fmaf(x, 1.44269504088896341f, 12582912.0f); /* round(x / ln 2) via the 1.5*2^23 trick */
    float n = t - 12582912.0f;
    float r = fmaf(-n, 0.693359375f, x);                  /* ln 2 split in two for exactness */
    r = fmaf(-n, -2.12194440e-4f, r);
    float p = 1.9875691500e-4f;
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    p = fmaf(p * r, r, r) + 1.0f;
    /* 2^n from the bits of t (its low mantissa bits hold n): no float-to-int conversion, so a
     * NaN input stays NaN through p without undefined behaviour */
    union { float f; uint32_t u; } tb = {t}, sc;
    sc.u = (tb.u - 0x4B400000u + 127u) << 23;
    return p * sc.f;
}

#if defined(__AVX512F__)
/* ops_expf on 16 lanes (immintrin.h comes with cpu_ops.h) */
static inline __m512 ops_expf16(__m512 x) {
    x = _mm512_max_ps(_mm512_set1_ps(-87.0f), x); /* NaN stays NaN: max returns its 2nd operand */
    x = _mm512_min_ps(_mm512_set1_ps(88.0f), x);
    const __m512 shift = _mm512_set1_ps(12582912.0f);
    __m512 t = _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), shift);
    __m512 n = _mm512_sub_ps(t, shift);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 q = _mm512_set1_ps(1.9875691500e-4f);
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.3981999507e-3f));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(8.3334519073e-3f));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(4.1665795894e-2f));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.6666665459e-1f));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(5.0000001201e-1f));
    q = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(q, r), r, r), _mm512_set1_ps(1.0f));
    __m512i e = _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(0x4B400000));
    e = _mm512_slli_epi32(_mm512_add_epi32(e, _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(q, _mm512_castsi512_ps(e));
}
#endif

/* Reductions written with OPS_LANES independent float accumulators so that they vectorise
 * without -ffast-math (a single running sum is a serial dependency chain); lanes are added in
 * double at the end. */
#define OPS_LANES 16
static inline double ops_lanes_total(const float *acc) {
    double t = 0.0;
    for (int k = 0; k < OPS_LANES; k++) t += acc[k];
    return t;
}
/* sum of x[0..n) */
static inline double ops_sum(const float *x, int64_t n) {
    float acc[OPS_LANES] = {0};
    int64_t i = 0;
    for (; i + OPS_LANES <= n; i += OPS_LANES)
        for (int k = 0; k < OPS_LANES; k++) acc[k] += x[i + k];
    for (; i < n; i++) acc[0] += x[i];
    return ops_lanes_total(acc);
}
/* sum of (x - m)^2 */
static inline double ops_sumsq_centered(const float *x, float m, int64_t n) {
    float acc[OPS_LANES] = {0};
    int64_t i = 0;
    for (; i + OPS_LANES <= n; i += OPS_LANES)
        for (int k = 0; k < OPS_LANES; k++) {
            float d = x[i + k] - m;
            acc[k] += d * d;
        }
    for (; i < n; i++) acc[0] += (x[i] - m) * (x[i] - m);
    return ops_lanes_total(acc);
}
/* *s1 = sum of g, *s2 = sum of g * (x - m) */
static inline void ops_sum_dot_centered(const float *g, const float *x, float m, int64_t n, double *s1,
                                        double *s2) {
    float a1[OPS_LANES] = {0}, a2[OPS_LANES] = {0};
    int64_t i = 0;
#if defined(__AVX512F__) && OPS_LANES == 16
    /* the same lane sums as the loop below, in registers: GCC's code for the two-array loop kept
     * spilling the lanes to the stack (groupnorm backward ran 3x its forward) */
    {
        __m512 v1 = _mm512_setzero_ps(), v2 = _mm512_setzero_ps();
        const __m512 vm = _mm512_set1_ps(m);
        for (; i + OPS_LANES <= n; i += OPS_LANES) {
            __m512 gv = _mm512_loadu_ps(g + i);
            v1 = _mm512_add_ps(v1, gv);
            v2 = _mm512_add_ps(v2, _mm512_mul_ps(gv, _mm512_sub_ps(_mm512_loadu_ps(x + i), vm)));
        }
        _mm512_storeu_ps(a1, v1);
        _mm512_storeu_ps(a2, v2);
    }
#endif
    for (; i + OPS_LANES <= n; i += OPS_LANES)
        for (int k = 0; k < OPS_LANES; k++) {
            a1[k] += g[i + k];
            a2[k] += g[i + k] * (x[i + k] - m);
        }
    for (; i < n; i++) {
        a1[0] += g[i];
        a2[0] += g[i] * (x[i] - m);
    }
    *s1 = ops_lanes_total(a1);
    *s2 = ops_lanes_total(a2);
}

/* Elementwise work below this many elements runs on the calling thread only: waking the pool
 * costs more than it saves. */
#define OPS_PAR_MIN 32768


/* ---- GroupNorm pieces shared by norm.c and the fused normact.c ---- */
/* mean and 1/sqrt(biased variance + eps) of one (n, g) block of M floats */
static inline void gn_block_stats(const float *x, int64_t M, float eps, float *mean, float *rstd) {
    double mu = ops_sum(x, M) / (double)M;
    double v = ops_sumsq_centered(x, (float)mu, M);
    *mean = (float)mu;
    *rstd = (float)(1.0 / sqrt(v / (double)M + (double)eps));
}
/* one channel of a GroupNorm backward block: s1 = sum(dy), s2 = sum(dy * (x - mean)) over HW;
 * sums[0] = s1, sums[1] = s2 * rstd (dbeta's and dgamma's terms), and the block's sums
 * sg += gamma * s1, sgx += gamma * s2 * rstd */
static inline void gn_channel_sums(const float *dy, const float *x, float m, float r, float gm, int64_t HW, float *sums,
                                   double *sg, double *sgx) {
    double s1, s2;
    ops_sum_dot_centered(dy, x, m, HW, &s1, &s2);
    sums[0] = (float)s1;
    sums[1] = (float)(s2 * r);
    *sg += (double)gm * s1;
    *sgx += (double)gm * s2 * r;
}
/* din (Cg rows of HW) += rstd * (dy*gamma - mg - xhat*mgx), the GroupNorm input gradient of one
 * block given mg = mean(dy*gamma) and mgx = mean(dy*gamma*xhat) over the block */
static inline void gn_block_dx(float *dx, const float *x, const float *dy, const float *gamma, int64_t c0, int64_t Cg,
                               int64_t HW, float m, float r, float mg, float mgx) {
    for (int64_t c = 0; c < Cg; c++) {
        float gm = gamma ? gamma[c0 + c] : 1.0f;
        const float *xc = x + c * HW, *dc = dy + c * HW;
        float *oc = dx + c * HW;
        for (int64_t i = 0; i < HW; i++) {
            float xh = (xc[i] - m) * r;
            oc[i] += r * (dc[i] * gm - mg - xh * mgx);
        }
    }
}
/* dgamma[c] += sum_n sums[n, c, 1], dbeta[c] += sum_n sums[n, c, 0] (in double, n ascending) */
static inline void gn_reduce_sums(const float *sums, float *dgamma, float *dbeta, int64_t N, int64_t C) {
    for (int64_t c = 0; c < C; c++) {
        double sb = 0.0, sg = 0.0;
        for (int64_t n = 0; n < N; n++) {
            sb += sums[(n * C + c) * 2];
            sg += sums[(n * C + c) * 2 + 1];
        }
        if (dgamma) dgamma[c] += (float)sg;
        if (dbeta) dbeta[c] += (float)sb;
    }
}

#endif
