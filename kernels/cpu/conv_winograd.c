/* conv_winograd.c: 3x3 stride-1 pad-1 convolution by Winograd's minimal filtering F(2x2, 3x3)
 * (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016), for the forward
 * and backward-data passes of the CPU backend (conv.c decides when; see cpu_wino_usable).
 *
 * Each 2x2 block of outputs of one channel o is Y = A^T [ sum_c U[o][c] (.) V[c] ] A, where
 * V[c] = B^T d B is the 4x4 input patch d around the block, transformed, and U[o][c] = G g G^T
 * the transformed 3x3 kernel: 16 multiplications per 4 outputs and input channel instead of
 * 36, at the price of the transforms (additions only, and halves in G). The sum over c is, for
 * each of the 16 positions xi of the 4x4 transform, a matrix product M[xi] (O x T) =
 * U[xi] (O x C) V[xi] (C x T) over the T tiles of a group of images, done by a register-blocked
 * kernel like the direct convolution's (4 outputs x 6 vectors of 16 tiles, broadcast weights,
 * contiguous vector loads).
 *
 * Work items of about cpu_wino_tiles() tiles (112, tuned with 2 MiB of L2 per core; MSD_CPU_L2
 * scales it: machine.c), so that their transformed data stay in a core's L2 cache:
 * a group of whole images, or a block of tile rows of one image when an image has more tiles.
 * Layout per item (in a chunk's scratch): its rows zero-padded to width Wp = 2*TW + 2 with
 * TH x TW tiles of 2x2 outputs per image (odd H or W: the last tile's extra row or column is
 * computed and dropped); V (16, C, Tpad) and M (16, O4, Tpad), tile t = (image * rows + ty) *
 * TW + tx, Tpad = (T rounded up to 16) + 16 (the transforms move 16 tiles at a time along a
 * tile row and may run past its end; the pad absorbs that and is zeroed).
 * The input transform reads 16 tiles of a tile row as even and odd columns of two vector
 * pairs (rows of at most 7 tiles: 2 or 4 tile rows a vector, gathered by permutations); the
 * output transform writes two output rows per tile row, interleaving the even and odd columns
 * back, with masked stores at the right edge.
 *
 * Accuracy: F(2x2, 3x3)'s transforms have entries 0, +-1 and +-1/2, so results differ from the
 * direct convolution by a few float roundings (tests/test_ops.c compares both with the double
 * reference). Results do not depend on the thread count: a group's tiles are computed the same
 * way whichever chunk holds it. */
#include <string.h>

#include "backend_internal.h"
#include "log.h"
#include "cpu_ops.h"
#include "parallel.h"

#define WV 16    /* lanes */
#define WOB 4    /* outputs per kernel block */
#define WPB 6    /* vectors of tiles per kernel block */

#if defined(__AVX512F__)
typedef __m512 Wv;
static inline Wv wv_zero(void) { return _mm512_setzero_ps(); }
static inline Wv wv_load(const float *p) { return _mm512_loadu_ps(p); }
static inline void wv_store(float *p, Wv v) { _mm512_storeu_ps(p, v); }
static inline Wv wv_add(Wv a, Wv b) { return _mm512_add_ps(a, b); }
static inline Wv wv_sub(Wv a, Wv b) { return _mm512_sub_ps(a, b); }
static inline Wv wv_set1(float a) { return _mm512_set1_ps(a); }
static inline Wv wv_fma(float a, Wv x, Wv acc) { return _mm512_fmadd_ps(_mm512_set1_ps(a), x, acc); }
/* lanes 0, 2, .., 30 and 1, 3, .., 31 of the 32 floats lo:hi */
static inline Wv wv_even(Wv lo, Wv hi) {
    return _mm512_permutex2var_ps(lo, _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30), hi);
}
static inline Wv wv_odd(Wv lo, Wv hi) {
    return _mm512_permutex2var_ps(lo, _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31), hi);
}
/* a0 b0 a1 b1 .. a7 b7 and a8 b8 .. a15 b15 */
static inline void wv_zip(Wv a, Wv b, Wv *lo, Wv *hi) {
    *lo = _mm512_permutex2var_ps(a, _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23), b);
    *hi = _mm512_permutex2var_ps(a, _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31), b);
}
/* r[l] = (lo:hi)[idx[l]], idx[l] < 32 */
static inline Wv wv_perm2(Wv lo, const int32_t *idx, Wv hi) {
    return _mm512_permutex2var_ps(lo, _mm512_loadu_si512(idx), hi);
}
static inline Wv wv_load_n(const float *p, int n) { return _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), p); }
/* lanes set in m from b, the others from a */
static inline Wv wv_blend(uint32_t m, Wv a, Wv b) { return _mm512_mask_blend_ps((__mmask16)m, a, b); }
static inline void wv_store_n(float *p, Wv v, int n) { _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1), v); }
#else /* portable fallback (sanitizer builds, machines without AVX-512): same algorithm */
typedef struct { float v[WV]; } Wv;
static inline Wv wv_zero(void) { Wv r; memset(&r, 0, sizeof r); return r; }
static inline Wv wv_load(const float *p) { Wv r; memcpy(r.v, p, sizeof r.v); return r; }
static inline void wv_store(float *p, Wv v) { memcpy(p, v.v, sizeof v.v); }
static inline Wv wv_add(Wv a, Wv b) { for (int i = 0; i < WV; i++) a.v[i] += b.v[i]; return a; }
static inline Wv wv_sub(Wv a, Wv b) { for (int i = 0; i < WV; i++) a.v[i] -= b.v[i]; return a; }
static inline Wv wv_set1(float a) { Wv r; for (int i = 0; i < WV; i++) r.v[i] = a; return r; }
static inline Wv wv_fma(float a, Wv x, Wv acc) { for (int i = 0; i < WV; i++) acc.v[i] += a * x.v[i]; return acc; }
static inline Wv wv_even(Wv lo, Wv hi) {
    Wv r;
    for (int i = 0; i < WV; i++) r.v[i] = 2 * i < WV ? lo.v[2 * i] : hi.v[2 * i - WV];
    return r;
}
static inline Wv wv_odd(Wv lo, Wv hi) {
    Wv r;
    for (int i = 0; i < WV; i++) r.v[i] = 2 * i + 1 < WV ? lo.v[2 * i + 1] : hi.v[2 * i + 1 - WV];
    return r;
}
static inline void wv_zip(Wv a, Wv b, Wv *lo, Wv *hi) {
    for (int i = 0; i < WV / 2; i++) {
        lo->v[2 * i] = a.v[i];
        lo->v[2 * i + 1] = b.v[i];
        hi->v[2 * i] = a.v[WV / 2 + i];
        hi->v[2 * i + 1] = b.v[WV / 2 + i];
    }
}
static inline Wv wv_perm2(Wv lo, const int32_t *idx, Wv hi) {
    Wv r;
    for (int i = 0; i < WV; i++) r.v[i] = idx[i] < WV ? lo.v[idx[i]] : hi.v[idx[i] - WV];
    return r;
}
static inline Wv wv_load_n(const float *p, int n) { Wv r = wv_zero(); memcpy(r.v, p, (size_t)n * sizeof(float)); return r; }
static inline Wv wv_blend(uint32_t m, Wv a, Wv b) {
    for (int i = 0; i < WV; i++)
        if (m >> i & 1) a.v[i] = b.v[i];
    return a;
}
static inline void wv_store_n(float *p, Wv v, int n) { memcpy(p, v.v, (size_t)n * sizeof(float)); }
#endif

typedef struct {
    int64_t H, W, TH, TW, Wp;
    /* work items: G whole images, or (when an image has more than cpu_wino_tiles() tiles) one image's
     * tile rows [k*R, (k+1)*R) for k < SB */
    int64_t G, SB, R, Tpad; /* Tpad: row length of V and M (an item's tiles, rounded up, + 16) */
    int64_t vxs, mxs;   /* floats from one xi plane of V (of M) to the next */
    /* rows of at most 7 tiles (2*TW + 2 <= 16): a vector holds rpv = 2 tile rows (4 when a
     * row has at most 4 tiles), tile row ty + k in lanes [k*TW, (k+1)*TW); the permutations
     * that gather them from two padded rows (pin[j]: column 2*tx + j of rows 2(ty+k)+i, k even
     * from the first, k odd from the second; with rpv 4, lanes from hi on (k >= 2) come from
     * the second pair of rows) and that spread the results back onto output rows (pout[k]:
     * tile row k's interleaved even and odd columns) */
    int rpv;
    uint32_t hi;
    int32_t pin[4][WV], pout[4][WV];
} WinoGeom;

/* The 16 xi planes are written (input transform) and read (output transform) together: their
 * starts are staggered by WSKEW floats so that they do not all fall in the same L1 cache set,
 * as they would whenever a plane's size is a multiple of 4 KiB. */
#define WSKEW 32

typedef struct {
    float *out;
    const float *in, *bias, *ur;
    int add;
    int64_t N, C, O, O4;
    WinoGeom g;
    float *scratch;
    int64_t per_chunk, pad_floats;
} WinoArgs;

/* Where it pays (measured against the direct convolution, alternating the two on the same
 * buffers, 2-core AVX-512 machine): 3x3 stride 1 pad 1 with at least 8 channels in and out,
 * and rows of at least 7 tiles (W >= 13). On 7x7 maps (4 tiles a row, 16 an image; four tile
 * rows a vector) it measured between 0.85x and 1.2x the direct convolution's time, no clear
 * gain, so those stay direct; cpu_wino_conv itself takes any size. */
int cpu_wino_usable(const ConvShape *s) {
    return s->K == 3 && s->stride == 1 && s->pad == 1 && s->C >= 8 && s->O >= 8 && s->W >= CPU_WINO_MIN_W;
}

/* Ur[xi][o/4][c][o%4] = (G g G^T)[xi] for the 3x3 kernel g = w + o*so + c*sc (taps reversed when
 * flip); rows o >= O (up to O4) are zero. Split over the pool by blocks of WOB outputs. */
typedef struct {
    float *ur;
    const float *w;
    int64_t O, O4, C, so, sc;
    int flip;
} WinoW;

static void wino_weights_k(void *p, int64_t b0, int64_t b1, int chunk) {
    const WinoW *a = p;
    (void)chunk;
    const int64_t nob = a->O4 / WOB, C = a->C;
    for (int64_t o = b0 * WOB; o < b1 * WOB; o++)
        for (int64_t c = 0; c < C; c++) {
            float u[16] = {0};
            if (o < a->O) {
                float g[9], gg[4][3];
                for (int k = 0; k < 9; k++) g[k] = a->w[o * a->so + c * a->sc + (a->flip ? 8 - k : k)];
                for (int s = 0; s < 3; s++) { /* G g: rows g0, (g0+g1+g2)/2, (g0-g1+g2)/2, g2 */
                    gg[0][s] = g[s];
                    gg[1][s] = 0.5f * (g[s] + g[3 + s] + g[6 + s]);
                    gg[2][s] = 0.5f * (g[s] - g[3 + s] + g[6 + s]);
                    gg[3][s] = g[6 + s];
                }
                for (int i = 0; i < 4; i++) { /* (G g) G^T, the same on each row */
                    u[4 * i + 0] = gg[i][0];
                    u[4 * i + 1] = 0.5f * (gg[i][0] + gg[i][1] + gg[i][2]);
                    u[4 * i + 2] = 0.5f * (gg[i][0] - gg[i][1] + gg[i][2]);
                    u[4 * i + 3] = gg[i][2];
                }
            }
            for (int xi = 0; xi < 16; xi++) a->ur[((xi * nob + o / WOB) * C + c) * WOB + o % WOB] = u[xi];
        }
}

/* pad: the padded rows [2*ty0, 2*(ty0+nty) + 2) of the planes of ng*C planes at in, each as a
 * plane of (2*nty + 2) x Wp, then 64 zeros */
static void wino_pad(float *pad, const float *in, const WinoGeom *g, int64_t planes, int64_t ty0, int64_t nty) {
    const int64_t Wp = g->Wp, rows = 2 * nty + 2, S = rows * Wp;
    for (int64_t p = 0; p < planes; p++) {
        float *d = pad + p * S;
        const float *src = in + p * g->H * g->W;
        for (int64_t r = 0; r < rows; r++) {
            float *dr = d + r * Wp;
            int64_t h = 2 * ty0 + r - 1; /* the input row at padded row 2*ty0 + r */
            if (h < 0 || h >= g->H) {
                memset(dr, 0, (size_t)Wp * sizeof(float));
                continue;
            }
            dr[0] = 0.0f;
            memcpy(dr + 1, src + h * g->W, (size_t)g->W * sizeof(float));
            memset(dr + 1 + g->W, 0, (size_t)(Wp - 1 - g->W) * sizeof(float));
        }
    }
    memset(pad + planes * S, 0, 64 * sizeof(float));
}

static void wino_geom_rows(WinoGeom *g) {
    const int TW = (int)g->TW;
    g->rpv = 2 * g->TW + 2 > WV ? 1 : 4 * g->TW <= WV ? 4 : 2;
    g->hi = 0;
    if (g->rpv == 1) return;
    for (int l = 0; l < WV; l++) {
        int k = l < g->rpv * TW ? l / TW : 0, tx = l < g->rpv * TW ? l % TW : 0;
        if (k >= 2) g->hi |= 1u << l;
        for (int j = 0; j < 4; j++) g->pin[j][l] = (k % 2 ? WV : 0) + 2 * tx + j;
        for (int kk = 0; kk < 4; kk++) { /* output column l of tile row kk: even from y[.][0], odd from y[.][1] */
            int c = l < 2 * TW ? l : 0;
            g->pout[kk][l] = (c % 2 ? WV : 0) + (kk * TW + c / 2) % WV;
        }
    }
}

/* d B, then B^T (d B), of the 4 rows d[i][j] (j: patch column), stored to the 16 xi planes at
 * vc + t0 (16 lanes; past the end of the tile row(s) they are overwritten later or padding) */
static inline void wino_input_store(float *vc, int64_t xs, int64_t t0, Wv d[4][4]) {
    Wv r[4][4];
    for (int i = 0; i < 4; i++) {
        r[i][0] = wv_sub(d[i][0], d[i][2]);
        r[i][1] = wv_add(d[i][1], d[i][2]);
        r[i][2] = wv_sub(d[i][2], d[i][1]);
        r[i][3] = wv_sub(d[i][1], d[i][3]);
    }
    for (int j = 0; j < 4; j++) {
        wv_store(vc + (0 * 4 + j) * xs + t0, wv_sub(r[0][j], r[2][j]));
        wv_store(vc + (1 * 4 + j) * xs + t0, wv_add(r[1][j], r[2][j]));
        wv_store(vc + (2 * 4 + j) * xs + t0, wv_sub(r[2][j], r[1][j]));
        wv_store(vc + (3 * 4 + j) * xs + t0, wv_sub(r[1][j], r[3][j]));
    }
}

/* V[xi][c][t] = (B^T d B)[xi] for every tile of the nty tile rows of the ng images padded at pad
 * (wino_pad), t = (image * nty + ty) * TW + tx, then the row tails [T, Tpad) zeroed. Tiles are
 * visited in increasing t for each c, so a store that runs past the tiles it holds is
 * overwritten by a later one or lands in the tail. */
static void wino_input(float *V, const float *pad, const WinoGeom *g, int64_t ng, int64_t C, int64_t nty) {
    const int64_t Wp = g->Wp, S = (2 * nty + 2) * Wp, ld = g->Tpad, xs = g->vxs, T = ng * nty * g->TW;
    for (int64_t img = 0; img < ng; img++)
        for (int64_t c = 0; c < C; c++) {
            const float *plane = pad + (img * C + c) * S;
            float *vc = V + c * ld;
            int64_t ty = 0;
            if (g->rpv > 1)
                for (; ty + g->rpv <= nty; ty += g->rpv) {
                    Wv d[4][4];
                    for (int i = 0; i < 4; i++) {
                        const float *r = plane + (2 * ty + i) * Wp;
                        Wv lo = wv_load(r), hi = wv_load(r + 2 * Wp);
                        for (int j = 0; j < 4; j++) d[i][j] = wv_perm2(lo, g->pin[j], hi);
                        if (g->rpv == 4) {
                            Wv lo2 = wv_load(r + 4 * Wp), hi2 = wv_load(r + 6 * Wp);
                            for (int j = 0; j < 4; j++) d[i][j] = wv_blend(g->hi, d[i][j], wv_perm2(lo2, g->pin[j], hi2));
                        }
                    }
                    wino_input_store(vc, xs, (img * nty + ty) * g->TW, d);
                }
            for (; ty < nty; ty++)
                for (int64_t tx0 = 0; tx0 < g->TW; tx0 += WV) {
                    Wv d[4][4];
                    for (int i = 0; i < 4; i++) {
                        const float *row = plane + (2 * ty + i) * Wp + 2 * tx0;
                        Wv lo = wv_load(row), hi = wv_load(row + WV), lo2 = wv_load(row + 2), hi2 = wv_load(row + 2 + WV);
                        d[i][0] = wv_even(lo, hi);
                        d[i][1] = wv_odd(lo, hi);
                        d[i][2] = wv_even(lo2, hi2);
                        d[i][3] = wv_odd(lo2, hi2);
                    }
                    wino_input_store(vc, xs, (img * nty + ty) * g->TW + tx0, d);
                }
        }
    for (int64_t xi = 0; xi < 16; xi++)
        for (int64_t c = 0; c < C; c++) memset(V + xi * xs + c * ld + T, 0, (size_t)(ld - T) * sizeof(float));
}

/* m (WOB rows of pitch ld) = the pb vectors of tiles at v (rows of pitch ld, C of them)
 * multiplied by the WOB x C block u (c-major, WOB adjacent) */
static inline __attribute__((always_inline)) void wino_kernel(float *m, const float *v, int64_t ld, const float *u,
                                                              int64_t C, int pb) {
    Wv acc[WOB][WPB];
    for (int o = 0; o < WOB; o++)
        for (int j = 0; j < pb; j++) acc[o][j] = wv_zero();
    for (int64_t c = 0; c < C; c++) {
        Wv x[WPB];
        for (int j = 0; j < pb; j++) x[j] = wv_load(v + c * ld + j * WV);
        for (int o = 0; o < WOB; o++) {
            float a = u[c * WOB + o];
            for (int j = 0; j < pb; j++) acc[o][j] = wv_fma(a, x[j], acc[o][j]);
        }
    }
    for (int o = 0; o < WOB; o++)
        for (int j = 0; j < pb; j++) wv_store(m + o * ld + j * WV, acc[o][j]);
}
#define WINO_KERNEL_N(n)                                                                                   \
    static void wino_kernel_##n(float *m, const float *v, int64_t ld, const float *u, int64_t C) {       \
        wino_kernel(m, v, ld, u, C, n);                                                                  \
    }
WINO_KERNEL_N(1)
WINO_KERNEL_N(2)
WINO_KERNEL_N(3)
WINO_KERNEL_N(4)
WINO_KERNEL_N(5)
WINO_KERNEL_N(6)
typedef void (*WinoKernelFn)(float *, const float *, int64_t, const float *, int64_t);
static const WinoKernelFn wino_kernels[WPB + 1] = {NULL, wino_kernel_1, wino_kernel_2, wino_kernel_3,
                                                    wino_kernel_4, wino_kernel_5, wino_kernel_6};

/* y[r][0], y[r][1] (r = 0, 1: the two output rows of a tile row) from the 16 xi vectors at m */
static inline void wino_output_tiles(const float *m, int64_t xs, Wv y[2][2]) {
    Wv v[16], s0[4], s1[4];
    for (int xi = 0; xi < 16; xi++) v[xi] = wv_load(m + xi * xs);
    for (int j = 0; j < 4; j++) { /* A^T m */
        s0[j] = wv_add(wv_add(v[j], v[4 + j]), v[8 + j]);
        s1[j] = wv_sub(wv_sub(v[4 + j], v[8 + j]), v[12 + j]);
    }
    y[0][0] = wv_add(wv_add(s0[0], s0[1]), s0[2]); /* (A^T m) A */
    y[0][1] = wv_sub(wv_sub(s0[1], s0[2]), s0[3]);
    y[1][0] = wv_add(wv_add(s1[0], s1[1]), s1[2]);
    y[1][1] = wv_sub(wv_sub(s1[1], s1[2]), s1[3]);
}

/* n floats of v to dst: + bias, or added to what is there */
static inline void wino_put(float *dst, Wv v, int n, int add, Wv bv) {
    if (n <= 0) return;
    v = add ? wv_add(wv_load_n(dst, n), v) : wv_add(v, bv);
    wv_store_n(dst, v, n);
}

/* output rows [2*ty0, 2*(ty0+nty)) of the ng images' planes at out (+ bias, or added to when
 * add) from M (tiles numbered as in wino_input) */
static void wino_output(float *out, const float *M, const WinoGeom *g, int64_t ng, int64_t O, const float *bias,
                        int add, int64_t ty0, int64_t nty) {
    const int64_t ld = g->Tpad, xs = g->mxs, H = g->H, W = g->W;
    for (int64_t img = 0; img < ng; img++)
        for (int64_t o = 0; o < O; o++) {
            const float *mo = M + o * ld;
            const Wv bv = wv_set1(bias ? bias[o] : 0.0f);
            float *plane = out + (img * O + o) * H * W;
            int64_t ty = 0;
            Wv y[2][2];
            if (g->rpv > 1)
                for (; ty + g->rpv <= nty; ty += g->rpv) {
                    wino_output_tiles(mo + (img * nty + ty) * g->TW, xs, y);
                    for (int k = 0; k < g->rpv; k++)     /* tile row ty + k */
                        for (int r = 0; r < 2; r++) { /* its output row */
                            int64_t h = 2 * (ty0 + ty + k) + r;
                            if (h < H)
                                wino_put(plane + h * W, wv_perm2(y[r][0], g->pout[k], y[r][1]), (int)W, add, bv);
                        }
                }
            for (; ty < nty; ty++)
                for (int64_t tx0 = 0; tx0 < g->TW; tx0 += WV) {
                    wino_output_tiles(mo + (img * nty + ty) * g->TW + tx0, xs, y);
                    const int64_t cols = W - 2 * tx0 < 2 * WV ? W - 2 * tx0 : 2 * WV;
                    const int n0 = (int)(cols < WV ? cols : WV), n1 = (int)(cols - n0);
                    for (int r = 0; r < 2 && 2 * (ty0 + ty) + r < H; r++) {
                        Wv lo, hi;
                        wv_zip(y[r][0], y[r][1], &lo, &hi);
                        float *dst = plane + (2 * (ty0 + ty) + r) * W + 2 * tx0;
                        wino_put(dst, lo, n0, add, bv);
                        wino_put(dst + WV, hi, n1, add, bv);
                    }
                }
        }
}

/* item it of the plan: images [n0, n0+ng), tile rows [ty0, ty0+nty) */
static void wino_item(const WinoGeom *g, int64_t N, int64_t it, int64_t *n0, int64_t *ng, int64_t *ty0, int64_t *nty) {
    if (g->SB > 1) {
        *n0 = it / g->SB;
        *ng = 1;
        *ty0 = it % g->SB * g->R;
        *nty = g->TH - *ty0 < g->R ? g->TH - *ty0 : g->R;
    } else {
        *n0 = it * g->G;
        *ng = N - *n0 < g->G ? N - *n0 : g->G;
        *ty0 = 0;
        *nty = g->TH;
    }
}

static void wino_items(void *p, int64_t i0, int64_t i1, int chunk) {
    const WinoArgs *a = p;
    const WinoGeom *g = &a->g;
    const int64_t C = a->C, O4 = a->O4, ld = g->Tpad, nob = O4 / WOB, HW = g->H * g->W;
    float *pad = a->scratch + chunk * a->per_chunk;
    float *V = pad + a->pad_floats, *M = V + 16 * g->vxs;
    for (int64_t it = i0; it < i1; it++) {
        int64_t n0, ng, ty0, nty;
        wino_item(g, a->N, it, &n0, &ng, &ty0, &nty);
        const int64_t nv = (ng * nty * g->TW + WV - 1) / WV;
        wino_pad(pad, a->in + n0 * C * HW, g, ng * C, ty0, nty);
        wino_input(V, pad, g, ng, C, nty);
        const int64_t nblk = (nv + WPB - 1) / WPB; /* blocks of near-equal size: 13 = 5+4+4, not 6+6+1 */
        for (int64_t xi = 0; xi < 16; xi++)
            for (int64_t bk = 0; bk < nblk; bk++) {
                const int64_t v0 = nv * bk / nblk;
                const int pb = (int)(nv * (bk + 1) / nblk - v0);
                for (int64_t ob = 0; ob < nob; ob++)
                    wino_kernels[pb](M + xi * g->mxs + ob * WOB * ld + v0 * WV, V + xi * g->vxs + v0 * WV, ld,
                                     a->ur + (xi * nob + ob) * C * WOB, C);
            }
        /* the output transform reads up to 15 tiles past the last one, beyond the nv vectors
         * the products wrote: keep those lanes (dropped by its masked stores) defined */
        for (int64_t xi = 0; xi < 16; xi++)
            for (int64_t o = 0; o < a->O; o++)
                memset(M + xi * g->mxs + o * ld + nv * WV, 0, (size_t)(ld - nv * WV) * sizeof(float));
        wino_output(a->out + n0 * a->O * HW, M, g, ng, a->O, a->bias, a->add, ty0, nty);
    }
}

/* Geometry and work items (about cpu_wino_tiles() tiles each: row blocks of an image, or groups of
 * images, their number a multiple of the thread count so that the threads get equal shares,
 * at least two per thread when N allows); returns the number of items */
static int64_t wino_plan(WinoGeom *g, int64_t N, int64_t H, int64_t W, int threads) {
    g->H = H;
    g->W = W;
    g->TH = (H + 1) / 2;
    g->TW = (W + 1) / 2;
    g->Wp = 2 * g->TW + 2;
    wino_geom_rows(g);
    const int64_t tpi = g->TH * g->TW;
    int64_t items, T; /* T: tiles of the largest item */
    const int64_t WTILES = cpu_wino_tiles();
    g->G = 1;
    g->SB = 1;
    g->R = g->TH;
    if (tpi > WTILES) {
        int64_t sb = (tpi + WTILES - 1) / WTILES;
        g->R = (g->TH + sb - 1) / sb;
        if (g->rpv > 1) g->R = (g->R + g->rpv - 1) / g->rpv * g->rpv;
        g->SB = (g->TH + g->R - 1) / g->R;
        items = N * g->SB;
        T = g->R * g->TW;
    } else {
        int64_t groups = (N * tpi + WTILES - 1) / WTILES;
        if (groups < 2 * threads) groups = 2 * threads;
        groups = (groups + threads - 1) / threads * threads;
        if (groups > N) groups = N;
        g->G = (N + groups - 1) / groups;
        items = (N + g->G - 1) / g->G;
        T = g->G * tpi;
    }
    g->Tpad = (T + WV - 1) / WV * WV + WV;
    return items;
}

void cpu_wino_conv(BackendCtx *ctx, float *out, const float *in, const float *w, int64_t so, int64_t sc, int flip,
                   const float *bias, int add, int64_t N, int64_t C, int64_t O, int64_t H, int64_t W) {
    MSD_CHECK(out && in && w && N > 0 && C > 0 && O > 0 && H > 0 && W > 0);
    WinoArgs a = {.out = out, .in = in, .bias = bias, .add = add, .N = N, .C = C, .O = O};
    a.O4 = (O + WOB - 1) / WOB * WOB;
    WinoGeom *g = &a.g;
    const int threads = backend_ctx_threads(ctx);
    const int64_t items = wino_plan(g, N, H, W, threads);
    int chunks = threads > 1 ? threads * 4 : 1;
    if (chunks > items) chunks = (int)items;
    g->vxs = C * g->Tpad + WSKEW;
    g->mxs = a.O4 * g->Tpad + WSKEW;
    a.pad_floats = g->G * C * (2 * g->R + 2) * g->Wp + 64;
    a.per_chunk = a.pad_floats + 16 * g->vxs + 16 * g->mxs;
    const int64_t nur = 16 * a.O4 * C;
    float *scratch = backend_ctx_scratch(ctx, nur + a.per_chunk * chunks);
    WinoW ww = {.ur = scratch, .w = w, .O = O, .O4 = a.O4, .C = C, .so = so, .sc = sc, .flip = flip};
    parallel_for(O * C * 9 >= 32768 ? threads : 1, a.O4 / WOB, wino_weights_k, &ww);
    a.ur = scratch;
    a.scratch = scratch + nur;
    parallel_for_chunks(threads, chunks, items, wino_items, &a);
}
