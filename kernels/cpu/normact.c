/* normact.c: the fused "GroupNorm, then scale-shift modulation (optional), then SiLU" of the
 * CPU backend, forward and backward (the optional norm_act_* slots of backend.h).
 *
 * The UNet's residual blocks run this chain three times per block and step (forward, the
 * recomputation in backward, backward); as separate ops each link reads and writes a whole
 * activation tensor, and they are memory-bound. Fused, the forward reads x twice (statistics,
 * then output) and writes only the activation; the backward reads x and the incoming gradient
 * once per (n, group) block and keeps the block's intermediate gradient in per-chunk scratch
 * (C/G * HW floats) for GroupNorm's second pass.
 *
 * Every float operation is the one the separate ops do, in the same order, with the same
 * reductions (cpu_ops.h) over the same ranges, so fused and separate results are bit-identical
 * (tests/test_ops.c checks this): the GroupNorm statistics and y = x*sc + sh of norm.c, the
 * modulation y*(1+scale) + shift and its sums of elementwise.c, SiLU and its derivative
 * (vector and scalar forms give the same bits, see elementwise.c). */
#include "backend_internal.h"
#include "log.h"
#include "cpu_ops.h"
#include "parallel.h"

typedef struct {
    float *out, *mean, *rstd, *din, *dss, *sums, *scratch;
    const float *in, *gamma, *beta, *ss, *dout, *cmean, *crstd;
    int64_t N, C, HW, G, per_chunk;
    float eps;
} NaArgs;

/* chunks of (n, g) blocks: a few per thread, so that a descheduled thread leaves little behind */
static void na_split(const BackendCtx *ctx, int64_t blocks, int64_t total, int *threads, int *chunks) {
    int t = total < OPS_PAR_MIN ? 1 : backend_ctx_threads(ctx);
    int64_t c = t > 1 ? (int64_t)t * 4 : 1;
    *threads = t;
    *chunks = (int)(blocks < c ? blocks : c);
}

/* o[i] = silu(m) with m = (x[i]*sc + sh) [* msc + msh when mod] */
static void na_row_fwd(float *o, const float *x, int64_t n, float sc, float sh, int mod, float msc, float msh) {
    int64_t i = 0;
#if defined(__AVX512F__)
    const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps(), vsc = _mm512_set1_ps(sc),
                 vsh = _mm512_set1_ps(sh), vmsc = _mm512_set1_ps(msc), vmsh = _mm512_set1_ps(msh);
    for (; i + 16 <= n; i += 16) {
        __m512 m = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), vsc), vsh);
        if (mod) m = _mm512_add_ps(_mm512_mul_ps(m, vmsc), vmsh);
        _mm512_storeu_ps(o + i, _mm512_div_ps(m, _mm512_add_ps(one, ops_expf16(_mm512_sub_ps(zero, m)))));
    }
#endif
    /* the rest (all of it in builds without AVX-512): one loop per case, without a branch
     * inside, so that the compiler vectorises it (with the branch it did not: 8x slower on AVX2) */
    if (mod)
        for (; i < n; i++) {
            float m = (x[i] * sc + sh) * msc + msh;
            o[i] = m / (1.0f + ops_expf(-m));
        }
    else
        for (; i < n; i++) {
            float m = x[i] * sc + sh;
            o[i] = m / (1.0f + ops_expf(-m));
        }
}

static void na_fwd_blocks(void *p, int64_t b0, int64_t b1, int chunk) {
    const NaArgs *a = p;
    (void)chunk;
    const int64_t Cg = a->C / a->G, HW = a->HW, M = Cg * HW, C = a->C;
    for (int64_t blk = b0; blk < b1; blk++) {
        const float *x = a->in + blk * M;
        float m, r;
        gn_block_stats(x, M, a->eps, &m, &r);
        a->mean[blk] = m;
        a->rstd[blk] = r;
        const int64_t n = blk / a->G, c0 = (blk % a->G) * Cg;
        for (int64_t c = 0; c < Cg; c++) {
            float sc = r * (a->gamma ? a->gamma[c0 + c] : 1.0f);
            float sh = (a->beta ? a->beta[c0 + c] : 0.0f) - m * sc;
            float msc = a->ss ? 1.0f + a->ss[n * 2 * C + c0 + c] : 1.0f;
            float msh = a->ss ? a->ss[n * 2 * C + C + c0 + c] : 0.0f;
            na_row_fwd(a->out + blk * M + c * HW, x + c * HW, HW, sc, sh, a->ss != NULL, msc, msh);
        }
    }
}

void cpu_norm_act_forward(BackendCtx *ctx, float *out, float *mean, float *rstd, const float *in, const float *gamma,
                          const float *beta, const float *ss, int64_t N, int64_t C, int64_t HW, int64_t G,
                          float eps) {
    MSD_CHECK(out && mean && rstd && in && N >= 0 && C > 0 && HW > 0 && G > 0 && C % G == 0);
    NaArgs a = {.out = out, .mean = mean, .rstd = rstd, .in = in, .gamma = gamma, .beta = beta, .ss = ss,
                .N = N, .C = C, .HW = HW, .G = G, .eps = eps};
    int threads, chunks;
    na_split(ctx, N * G, N * C * HW, &threads, &chunks);
    parallel_for_chunks(threads, chunks, N * G, na_fwd_blocks, &a);
}

/* One row of the backward chain: y = x*sc + sh (kept in yb when mod), m = y*msc + msh (or y),
 * g = dout * silu'(m) (kept in gb when mod), dn = g * msc when mod, else g. */
static void na_row_bwd(float *dn, float *yb, float *gb, const float *x, const float *d, int64_t n, float sc, float sh,
                       int mod, float msc, float msh) {
    int64_t i = 0;
#if defined(__AVX512F__)
    const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps(), vsc = _mm512_set1_ps(sc),
                 vsh = _mm512_set1_ps(sh), vmsc = _mm512_set1_ps(msc), vmsh = _mm512_set1_ps(msh);
    for (; i + 16 <= n; i += 16) {
        __m512 y = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), vsc), vsh), m = y;
        if (mod) m = _mm512_add_ps(_mm512_mul_ps(y, vmsc), vmsh);
        __m512 sg = _mm512_div_ps(one, _mm512_add_ps(one, ops_expf16(_mm512_sub_ps(zero, m))));
        __m512 g = _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(d + i), sg),
                                 _mm512_add_ps(one, _mm512_mul_ps(m, _mm512_sub_ps(one, sg))));
        if (mod) {
            _mm512_storeu_ps(yb + i, y);
            _mm512_storeu_ps(gb + i, g);
            g = _mm512_mul_ps(g, vmsc);
        }
        _mm512_storeu_ps(dn + i, g);
    }
#endif
    /* the rest: one branch-free loop per case, as in na_row_fwd */
    if (mod)
        for (; i < n; i++) {
            float y = x[i] * sc + sh, m = y * msc + msh;
            float sg = 1.0f / (1.0f + ops_expf(-m));
            float g = d[i] * sg * (1.0f + m * (1.0f - sg));
            yb[i] = y;
            gb[i] = g;
            dn[i] = g * msc;
        }
    else
        for (; i < n; i++) {
            float m = x[i] * sc + sh;
            float sg = 1.0f / (1.0f + ops_expf(-m));
            dn[i] = d[i] * sg * (1.0f + m * (1.0f - sg));
        }
}

static void na_bwd_blocks(void *p, int64_t b0, int64_t b1, int chunk) {
    const NaArgs *a = p;
    const int64_t Cg = a->C / a->G, HW = a->HW, M = Cg * HW, C = a->C;
    float *dn = a->scratch + chunk * a->per_chunk, *yb = dn + M, *gb = yb + HW;
    const int mod = a->ss != NULL;
    for (int64_t blk = b0; blk < b1; blk++) {
        const float *x = a->in + blk * M, *d = a->dout + blk * M;
        const float m = a->cmean[blk], r = a->crstd[blk];
        const int64_t n = blk / a->G, c0 = (blk % a->G) * Cg;
        float *sums = a->sums + blk * Cg * 2; /* blk * Cg == n * C + c0 */
        double sg = 0.0, sgx = 0.0;
        for (int64_t c = 0; c < Cg; c++) {
            float gm = a->gamma ? a->gamma[c0 + c] : 1.0f;
            float sc = r * gm, sh = (a->beta ? a->beta[c0 + c] : 0.0f) - m * sc;
            float msc = mod ? 1.0f + a->ss[n * 2 * C + c0 + c] : 1.0f;
            float msh = mod ? a->ss[n * 2 * C + C + c0 + c] : 0.0f;
            float *dnc = dn + c * HW;
            na_row_bwd(dnc, yb, gb, x + c * HW, d + c * HW, HW, sc, sh, mod, msc, msh);
            if (mod && a->dss) {
                double s1, s2;
                ops_sum_dot_centered(gb, yb, 0.0f, HW, &s1, &s2);
                a->dss[n * 2 * C + c0 + c] += (float)s2;
                a->dss[n * 2 * C + C + c0 + c] += (float)s1;
            }
            gn_channel_sums(dnc, x + c * HW, m, r, gm, HW, sums + 2 * c, &sg, &sgx);
        }
        if (!a->din) continue;
        gn_block_dx(a->din + blk * M, x, dn, a->gamma, c0, Cg, HW, m, r, (float)(sg / (double)M),
                    (float)(sgx / (double)M));
    }
}

void cpu_norm_act_backward(BackendCtx *ctx, float *din, float *dgamma, float *dbeta, float *dss, const float *dout,
                           const float *in, const float *mean, const float *rstd, const float *gamma,
                           const float *beta, const float *ss, int64_t N, int64_t C, int64_t HW, int64_t G) {
    MSD_CHECK(dout && in && mean && rstd && N >= 0 && C > 0 && HW > 0 && G > 0 && C % G == 0);
    MSD_CHECK(!dss || ss);
    if (!din && !dgamma && !dbeta && !dss) return;
    NaArgs a = {.din = din, .dss = dss, .dout = dout, .in = in, .cmean = mean, .crstd = rstd, .gamma = gamma,
                .beta = beta, .ss = ss, .N = N, .C = C, .HW = HW, .G = G};
    int threads, chunks;
    na_split(ctx, N * G, N * C * HW, &threads, &chunks);
    a.per_chunk = C / G * HW + 2 * HW;
    a.sums = backend_ctx_scratch(ctx, N * C * 2 + (int64_t)chunks * a.per_chunk);
    a.scratch = a.sums + N * C * 2;
    parallel_for_chunks(threads, chunks, N * G, na_bwd_blocks, &a);
    gn_reduce_sums(a.sums, dgamma, dbeta, N, C);
}
