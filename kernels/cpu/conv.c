/* conv.c: 2-D convolution on the CPU (NCHW, square kernel, stride, zero padding).
 *
 * 3x3 stride-1 pad-1 (the UNet's conv), in AVX-512 builds: forward and backward-data by Winograd
 * F(2x2, 3x3) (conv_winograd.c) where cpu_wino_usable says it pays, else a direct AVX-512
 * convolution over zero-padded images (section "direct 3x3" below; backward-data with the
 * flipped transposed weight); dw directly (section "direct 3x3 weight gradient"). Builds without
 * AVX-512 send them to the path below instead (cpu_conv_gemm, machine.c says why).
 * Everything else: im2col + one OpenBLAS sgemm per image. Forward per image: out_n (O, L) =
 * w (O, C*K*K) @ col_n (C*K*K, L) with L = Ho*Wo; a 1x1 stride-1 unpadded conv uses the image
 * itself as col (no copy). Backward per image: dcol = w^T @ dout_n then col2im adds into din;
 * dw += dout_n @ col_n^T; db += row sums of dout_n. (Batching several images into one GEMM
 * was measured slower here: the per-image col stays in L2, a group's does not.)
 *
 * Threading: images are split over the thread pool in CONV_CHUNKS_PER_THREAD chunks per thread,
 * each chunk calls single-threaded OpenBLAS (backend_cpu sets openblas_set_num_threads(1));
 * dw/db of chunk t > 0 go to a partial in scratch, chunk 0 adds straight into dw/db, and the
 * partials are summed at the end in chunk order (deterministic whichever thread ran a chunk).
 * Scratch per chunk: col and dcol (C*K*K*L floats each) or the direct path's padded images
 * (and, for dw by image groups, a group's padded inputs and laid-out douts); dw and db
 * partials. Not here: groups, dilation, non-square kernels. */
#include "blas.h"
#include <string.h>

#include "backend_internal.h"
#include "log.h"
#include "cpu_ops.h"
#include "parallel.h"

/* First and one-past-last output index ow whose input index ow*stride - pad + k lies in [0, W). */
static inline void valid_range(int64_t W, int64_t Wo, int64_t k, int64_t stride, int64_t pad, int64_t *lo,
                               int64_t *hi) {
    int64_t a = pad - k, b = W + pad - k; /* need a <= ow*stride < b */
    int64_t l = a <= 0 ? 0 : (a + stride - 1) / stride;
    int64_t h = b <= 0 ? 0 : (b + stride - 1) / stride;
    if (l > Wo) l = Wo;
    if (h > Wo) h = Wo;
    if (h < l) h = l;
    *lo = l;
    *hi = h;
}

/* "Same" stride-1 convolutions (Wo == W) map a whole (c, kh, kw) plane of col to the image
 * plane shifted by off = (kh - pad) * W + (kw - pad): one long copy per plane, then the columns
 * that wrapped around a row edge are zeroed. This is the fmnist UNet's 3x3 pad-1 case. */
static void im2col_same(float *col, const float *im, const ConvShape *s, int64_t Ho) {
    const int64_t K = s->K, pad = s->pad, H = s->H, W = s->W, HW = H * W, L = Ho * W;
    for (int64_t c = 0; c < s->C; c++) {
        const float *src = im + c * HW;
        for (int64_t kh = 0; kh < K; kh++) {
            int64_t hlo, hhi;
            valid_range(H, Ho, kh, 1, pad, &hlo, &hhi);
            for (int64_t kw = 0; kw < K; kw++) {
                float *dst = col + ((c * K + kh) * K + kw) * L;
                int64_t wlo, whi, off = (kh - pad) * W + (kw - pad);
                valid_range(W, W, kw, 1, pad, &wlo, &whi);
                int64_t c0 = hlo * W, c1 = hhi * W;
                if (c0 < -off) c0 = -off;
                if (c1 > HW - off) c1 = HW - off;
                if (c1 < c0) c1 = c0;
                memset(dst, 0, (size_t)c0 * sizeof(float));
                memcpy(dst + c0, src + c0 + off, (size_t)(c1 - c0) * sizeof(float));
                memset(dst + c1, 0, (size_t)(L - c1) * sizeof(float));
                for (int64_t oh = hlo; oh < hhi; oh++) {
                    float *d = dst + oh * W;
                    for (int64_t ow = 0; ow < wlo; ow++) d[ow] = 0.0f;
                    for (int64_t ow = whi; ow < W; ow++) d[ow] = 0.0f;
                }
            }
        }
    }
}

/* im += col2im(col) for the same case; zeroes col's wrapped columns (col is scratch) */
static void col2im_same_add(float *im, float *col, const ConvShape *s, int64_t Ho) {
    const int64_t K = s->K, pad = s->pad, H = s->H, W = s->W, HW = H * W, L = Ho * W;
    for (int64_t c = 0; c < s->C; c++) {
        float *dst = im + c * HW;
        for (int64_t kh = 0; kh < K; kh++) {
            int64_t hlo, hhi;
            valid_range(H, Ho, kh, 1, pad, &hlo, &hhi);
            for (int64_t kw = 0; kw < K; kw++) {
                float *src = col + ((c * K + kh) * K + kw) * L;
                int64_t wlo, whi, off = (kh - pad) * W + (kw - pad);
                valid_range(W, W, kw, 1, pad, &wlo, &whi);
                for (int64_t oh = hlo; oh < hhi; oh++) {
                    float *d = src + oh * W;
                    for (int64_t ow = 0; ow < wlo; ow++) d[ow] = 0.0f;
                    for (int64_t ow = whi; ow < W; ow++) d[ow] = 0.0f;
                }
                int64_t c0 = hlo * W, c1 = hhi * W;
                if (c0 < -off) c0 = -off;
                if (c1 > HW - off) c1 = HW - off;
                for (int64_t i = c0; i < c1; i++) dst[i + off] += src[i];
            }
        }
    }
}

/* col (C*K*K, Ho*Wo) from im (C, H, W) */
static void im2col(float *col, const float *im, const ConvShape *s, int64_t Ho, int64_t Wo) {
    if (s->stride == 1 && Wo == s->W) {
        im2col_same(col, im, s, Ho);
        return;
    }
    const int64_t K = s->K, st = s->stride, pad = s->pad, H = s->H, W = s->W, L = Ho * Wo;
    for (int64_t c = 0; c < s->C; c++) {
        const float *src = im + c * H * W;
        for (int64_t kh = 0; kh < K; kh++) {
            int64_t hlo, hhi;
            valid_range(H, Ho, kh, st, pad, &hlo, &hhi);
            for (int64_t kw = 0; kw < K; kw++) {
                float *dst = col + ((c * K + kh) * K + kw) * L;
                int64_t wlo, whi;
                valid_range(W, Wo, kw, st, pad, &wlo, &whi);
                memset(dst, 0, (size_t)(hlo * Wo) * sizeof(float));
                for (int64_t oh = hlo; oh < hhi; oh++) {
                    const float *row = src + (oh * st - pad + kh) * W;
                    float *d = dst + oh * Wo;
                    for (int64_t ow = 0; ow < wlo; ow++) d[ow] = 0.0f;
                    if (st == 1) {
                        memcpy(d + wlo, row + wlo - pad + kw, (size_t)(whi - wlo) * sizeof(float));
                    } else {
                        for (int64_t ow = wlo; ow < whi; ow++) d[ow] = row[ow * st - pad + kw];
                    }
                    for (int64_t ow = whi; ow < Wo; ow++) d[ow] = 0.0f;
                }
                memset(dst + hhi * Wo, 0, (size_t)((Ho - hhi) * Wo) * sizeof(float));
            }
        }
    }
}

/* im (C, H, W) += col2im(col (C*K*K, Ho*Wo)); col is scratch and may be overwritten */
static void col2im_add(float *im, float *col, const ConvShape *s, int64_t Ho, int64_t Wo) {
    if (s->stride == 1 && Wo == s->W) {
        col2im_same_add(im, col, s, Ho);
        return;
    }
    const int64_t K = s->K, st = s->stride, pad = s->pad, H = s->H, W = s->W, L = Ho * Wo;
    for (int64_t c = 0; c < s->C; c++) {
        float *dst = im + c * H * W;
        for (int64_t kh = 0; kh < K; kh++) {
            int64_t hlo, hhi;
            valid_range(H, Ho, kh, st, pad, &hlo, &hhi);
            for (int64_t kw = 0; kw < K; kw++) {
                const float *src = col + ((c * K + kh) * K + kw) * L;
                int64_t wlo, whi;
                valid_range(W, Wo, kw, st, pad, &wlo, &whi);
                for (int64_t oh = hlo; oh < hhi; oh++) {
                    float *row = dst + (oh * st - pad + kh) * W;
                    const float *sr = src + oh * Wo;
                    if (st == 1) {
                        float *r = row + (kw - pad + wlo);
                        const float *q = sr + wlo;
                        for (int64_t i = 0; i < whi - wlo; i++) r[i] += q[i];
                    } else {
                        for (int64_t ow = wlo; ow < whi; ow++) row[ow * st - pad + kw] += sr[ow];
                    }
                }
            }
        }
    }
}


/* ---- direct 3x3 stride-1 pad-1 convolution ----
 * The UNet's main conv, done without im2col: each image is copied once into a zero-padded
 * plane per channel, (C, (H+2)*(W+2)) flattened with pitch Wp = W+2. Output position (h, w)
 * sits at flat index p = (h+1)*Wp + w+1, and its (kh, kw) tap at p + (kh-1)*Wp + (kw-1), so a
 * run of 16 consecutive p is one unaligned vector load per tap. Positions p cover the flat
 * range [Wp+1, H*Wp+W], padding columns included, NP of them.
 * A micro-kernel holds DIR_OB output channels x DIR_PB vectors of positions in registers and
 * loops over input channels and the 9 taps; weights are re-laid out as (O/DIR_OB, C, 9, DIR_OB)
 * (O rounded up with zero rows) so the DIR_OB values of a tap are adjacent. Each result vector
 * goes straight to the output plane: its lanes at padding columns are dropped by a compress
 * (dir_store_plan, dir_put), so no padded output is stored and copied.
 * The same kernel gives backward-data: din = conv(dout, wt) with wt[c][o] = w[o][c] flipped. */
#define DIR_OB 4
#define DIR_PB 6
#define DIR_VL 16

#if defined(__AVX512F__)
#include <immintrin.h>
typedef __m512 DirVec;
static inline DirVec dir_zero(void) { return _mm512_setzero_ps(); }
static inline DirVec dir_load(const float *p) { return _mm512_loadu_ps(p); }
static inline DirVec dir_fma(float a, DirVec x, DirVec acc) { return _mm512_fmadd_ps(_mm512_set1_ps(a), x, acc); }
static inline DirVec dir_fmav(DirVec a, DirVec x, DirVec acc) { return _mm512_fmadd_ps(a, x, acc); }
/* the lanes of v set in mask, in order, to dst[0 ..) (+ bias, or added to what is there) */
static inline void dir_put(float *dst, DirVec v, uint32_t mask, int add, float bias) {
    __m512 c = _mm512_maskz_compress_ps((__mmask16)mask, add ? v : _mm512_add_ps(v, _mm512_set1_ps(bias)));
    __mmask16 k = (__mmask16)((1u << __builtin_popcount(mask)) - 1);
    if (add) c = _mm512_add_ps(_mm512_maskz_loadu_ps(k, dst), c);
    _mm512_mask_storeu_ps(dst, k, c);
}
#else /* portable fallback (sanitizer builds, machines without AVX-512): same algorithm */
typedef struct { float v[DIR_VL]; } DirVec;
static inline DirVec dir_zero(void) { DirVec r; for (int i = 0; i < DIR_VL; i++) r.v[i] = 0.0f; return r; }
static inline DirVec dir_load(const float *p) { DirVec r; memcpy(r.v, p, sizeof r.v); return r; }
static inline DirVec dir_fma(float a, DirVec x, DirVec acc) {
    for (int i = 0; i < DIR_VL; i++) acc.v[i] += a * x.v[i];
    return acc;
}
static inline DirVec dir_fmav(DirVec a, DirVec x, DirVec acc) {
    for (int i = 0; i < DIR_VL; i++) acc.v[i] += a.v[i] * x.v[i];
    return acc;
}
static inline void dir_put(float *dst, DirVec v, uint32_t mask, int add, float bias) {
    int n = 0;
    for (int l = 0; l < DIR_VL; l++)
        if (mask >> l & 1) {
            dst[n] = add ? dst[n] + v.v[l] : v.v[l] + bias;
            n++;
        }
}
#endif

typedef struct {
    int64_t Wp, S, NP, NV; /* pitch, padded plane, positions, vectors of positions */
    int64_t off[9];        /* flat offset of tap (kh, kw) */
} DirGeom;

static void dir_geom(DirGeom *g, int64_t H, int64_t W) {
    g->Wp = W + 2;
    g->S = (H + 2) * g->Wp;
    g->NP = (H - 1) * g->Wp + W;
    g->NV = (g->NP + DIR_VL - 1) / DIR_VL;
    for (int k = 0; k < 9; k++) g->off[k] = (k / 3 - 1) * g->Wp + (k % 3 - 1);
}
/* floats of a padded image of C channels: the last vector run reads up to DIR_VL - 1 past S */
static int64_t dir_pad_floats(const DirGeom *g, int64_t C) { return C * g->S + DIR_VL; }
/* floats of the re-laid weights of an O <- C convolution */
static int64_t dir_weight_floats(int64_t O, int64_t C) { return (O + DIR_OB - 1) / DIR_OB * DIR_OB * C * 9; }

/* dst (C, S) zero-padded planes from im (C, H, W) */
static void dir_pad_planes(float *dst, const float *im, const DirGeom *g, int64_t C, int64_t H, int64_t W) {
    const int64_t Wp = g->Wp;
    for (int64_t c = 0; c < C; c++) {
        float *d = dst + c * g->S;
        const float *s = im + c * H * W;
        memset(d, 0, (size_t)Wp * sizeof(float));
        for (int64_t h = 0; h < H; h++) {
            float *r = d + (h + 1) * Wp;
            r[0] = 0.0f;
            memcpy(r + 1, s + h * W, (size_t)W * sizeof(float));
            r[W + 1] = 0.0f;
        }
        memset(d + (H + 1) * Wp, 0, (size_t)Wp * sizeof(float));
    }
}

/* the same, then DIR_VL zeros: the last vector run reads up to DIR_VL - 1 floats past C*S */
static void dir_pad(float *dst, const float *im, const DirGeom *g, int64_t C, int64_t H, int64_t W) {
    dir_pad_planes(dst, im, g, C, H, W);
    memset(dst + C * g->S, 0, DIR_VL * sizeof(float));
}

/* Where the 16 positions of vector v of the run land in an (H, W) plane: the lanes that are
 * real positions (not padding columns, not past the end) and the plane index of the first of
 * them; the real lanes of a vector are consecutive in the plane. */
typedef struct {
    uint32_t mask;
    int64_t dst;
} DirStore;

static DirStore dir_store_plan(const DirGeom *g, int64_t H, int64_t W, int64_t v) {
    int64_t p = v * DIR_VL, h = p / g->Wp, w = p % g->Wp;
    DirStore st = {0, w < W ? h * W + w : (h + 1) * W};
    for (int64_t l = 0; l < DIR_VL;) {
        int64_t seg = g->Wp - w < DIR_VL - l ? g->Wp - w : DIR_VL - l;
        if (h < H && w < W) {
            int64_t cnt = W - w < seg ? W - w : seg;
            st.mask |= ((1u << cnt) - 1) << l;
        }
        l += seg;
        w = 0;
        h++;
    }
    return st;
}

/* The pb vectors of positions starting at in (+ taps) for DIR_OB outputs, written straight into
 * the first no output planes (pitch HW) at the places st gives: + bias[o] (bias may be NULL),
 * or added to what is there when add */
static inline __attribute__((always_inline)) void dir_kernel(float *out, int64_t HW, const DirStore *st, int no,
                                                             const float *bias, int add, const float *in,
                                                             const DirGeom *g, const float *wr, int64_t C, int pb) {
    DirVec acc[DIR_OB][DIR_PB];
    for (int o = 0; o < DIR_OB; o++)
        for (int j = 0; j < pb; j++) acc[o][j] = dir_zero();
    for (int64_t c = 0; c < C; c++) {
        const float *x = in + c * g->S, *wc = wr + c * 9 * DIR_OB;
        for (int k = 0; k < 9; k++) {
            const float *xk = x + g->off[k];
            DirVec v[DIR_PB];
            for (int j = 0; j < pb; j++) v[j] = dir_load(xk + j * DIR_VL);
            for (int o = 0; o < DIR_OB; o++) {
                float a = wc[k * DIR_OB + o];
                for (int j = 0; j < pb; j++) acc[o][j] = dir_fma(a, v[j], acc[o][j]);
            }
        }
    }
    for (int o = 0; o < no; o++) {
        float bv = bias ? bias[o] : 0.0f;
        for (int j = 0; j < pb; j++)
            if (st[j].mask) dir_put(out + o * HW + st[j].dst, acc[o][j], st[j].mask, add, bv);
    }
}

/* Instances with a constant vector count, so that the accumulators live in registers. */
#define DIR_KERNEL_N(n)                                                                                        \
    static void dir_kernel_##n(float *out, int64_t HW, const DirStore *st, int no, const float *bias, int add, \
                               const float *in, const DirGeom *g, const float *wr, int64_t C) {                \
        dir_kernel(out, HW, st, no, bias, add, in, g, wr, C, n);                                               \
    }
DIR_KERNEL_N(1)
DIR_KERNEL_N(2)
DIR_KERNEL_N(3)
DIR_KERNEL_N(4)
DIR_KERNEL_N(5)
DIR_KERNEL_N(6)
typedef void (*DirKernelFn)(float *, int64_t, const DirStore *, int, const float *, int, const float *,
                            const DirGeom *, const float *, int64_t);
static const DirKernelFn dir_kernels[DIR_PB + 1] = {NULL, dir_kernel_1, dir_kernel_2, dir_kernel_3,
                                                     dir_kernel_4, dir_kernel_5, dir_kernel_6};

/* wr (ceil(O/DIR_OB), C, 9, DIR_OB) from a weight whose (o, c) 3x3 kernel is w + o*so + c*sc,
 * taps reversed when flip (so that wt = w^T flipped needs no copy of its own) */
static void dir_weights(float *wr, const float *w, int64_t O, int64_t C, int64_t so, int64_t sc, int flip) {
    int64_t nb = (O + DIR_OB - 1) / DIR_OB;
    for (int64_t b = 0; b < nb; b++)
        for (int64_t c = 0; c < C; c++)
            for (int k = 0; k < 9; k++)
                for (int i = 0; i < DIR_OB; i++) {
                    int64_t o = b * DIR_OB + i;
                    wr[((b * C + c) * 9 + k) * DIR_OB + i] = o < O ? w[o * so + c * sc + (flip ? 8 - k : k)] : 0.0f;
                }
}

/* out (O, H, W) = (or += when add) conv3x3(in (C, H, W)) + bias (NULL: none); pad is
 * dir_pad_floats(C) of scratch */
static void dir_conv_image(float *out, const float *in, const float *wr, const float *bias, int add, int64_t C,
                           int64_t O, int64_t H, int64_t W, const DirGeom *g, float *pad) {
    dir_pad(pad, in, g, C, H, W);
    const int64_t nb = (O + DIR_OB - 1) / DIR_OB, HW = H * W;
    const float *x = pad + g->Wp + 1;
    for (int64_t v0 = 0; v0 < g->NV; v0 += DIR_PB) {
        int pb = (int)(g->NV - v0 < DIR_PB ? g->NV - v0 : DIR_PB);
        DirStore st[DIR_PB];
        for (int j = 0; j < pb; j++) st[j] = dir_store_plan(g, H, W, v0 + j);
        for (int64_t b = 0; b < nb; b++) {
            int no = (int)(O - b * DIR_OB < DIR_OB ? O - b * DIR_OB : DIR_OB);
            dir_kernels[pb](out + b * DIR_OB * HW, HW, st, no, bias ? bias + b * DIR_OB : NULL, add, x + v0 * DIR_VL, g,
                            wr + b * C * 9 * DIR_OB, C);
        }
    }
}

/* ---- direct 3x3 weight gradient ----
 * dw[o][c][k] = sum over images and positions of dout[o] * (tap k of in[c]): with dout laid
 * out like the kernel's output (doutp (O, NV*16) per image, zero at the padding columns and
 * past NP) and the input padded as in the forward, this is a dot product of two vector runs
 * per (o, c, k). A kernel keeps DIR_DWOB output channels x 9 taps of vector partial sums in
 * registers for one input channel, runs over a set of images, sums the 16 lanes and adds the
 * results to dw. Two ways to share it out (see DIR_DW_PAIRS_MAX): small maps pad and lay out
 * every image first (in parallel over images, beside backward-data), then split the (output
 * block, input channel) pairs over the pool, each dw element written by one chunk; larger
 * maps keep the image chunks, each padding cache-sized groups of its images and adding into
 * its own partial of dw. */
#define DIR_DWOB 3

/* dw by (output block, input channel) pairs over all images when the images' padded copies
 * total at most DIR_DW_PAIRS_MAX floats (a core's L2: 512 Ki floats with 2 MiB); else by groups
 * of images of about DIR_DW_GROUP_FLOATS (192 Ki floats with 2 MiB) within each chunk, into
 * per-chunk partials. Both tuned with 2 MiB of L2 (machine.c; MSD_CPU_L2 scales them). */
#define DIR_DW_PAIRS_MAX cpu_dw_pairs_max()
#define DIR_DW_GROUP_FLOATS cpu_dw_group_floats()

static int64_t dir_dw_rows(int64_t O) { return (O + DIR_DWOB - 1) / DIR_DWOB * DIR_DWOB; }

/* doutp (dir_dw_rows(O), NV*16) from dout (O, H, W), zero outside the H x W positions */
static void dir_lay_dout(float *doutp, const float *dout, const DirGeom *g, int64_t O, int64_t H, int64_t W) {
    const int64_t ldo = g->NV * DIR_VL;
    for (int64_t o = 0; o < dir_dw_rows(O); o++) {
        float *d = doutp + o * ldo;
        if (o >= O) {
            memset(d, 0, (size_t)ldo * sizeof(float));
            continue;
        }
        for (int64_t h = 0; h < H; h++) {
            memcpy(d + h * g->Wp, dout + (o * H + h) * W, (size_t)W * sizeof(float));
            if (h + 1 < H) d[h * g->Wp + W] = d[h * g->Wp + W + 1] = 0.0f;
        }
        memset(d + g->NP, 0, (size_t)(ldo - g->NP) * sizeof(float));
    }
}

static inline float dir_hsum(DirVec v) {
#if defined(__AVX512F__)
    return _mm512_reduce_add_ps(v);
#else
    float t = 0.0f;
    for (int i = 0; i < DIR_VL; i++) t += v.v[i];
    return t;
#endif
}

/* dw rows o0 .. o0+no-1 (no <= DIR_DWOB), input channel c, 9 taps += the dot products of d's
 * DIR_DWOB rows with x's 9 taps, summed over ng images (d and x advance by dstride and xstride) */
static void dir_dw_kernel(float *dw, int64_t C, int64_t c, int64_t o0, int no, const float *d, int64_t ldo,
                          int64_t dstride, const float *x, int64_t xstride, int64_t ng, const DirGeom *g) {
    DirVec acc[DIR_DWOB][9];
    for (int o = 0; o < DIR_DWOB; o++)
        for (int k = 0; k < 9; k++) acc[o][k] = dir_zero();
    const int64_t o0f = g->off[0], o1 = g->off[1], o2 = g->off[2], o3 = g->off[3], o5 = g->off[5], o6 = g->off[6],
                  o7 = g->off[7], o8 = g->off[8];
    for (int64_t i = 0; i < ng; i++, d += dstride, x += xstride) {
        for (int64_t v = 0; v < g->NV * DIR_VL; v += DIR_VL) {
            DirVec dv[DIR_DWOB];
            for (int o = 0; o < DIR_DWOB; o++) dv[o] = dir_load(d + o * ldo + v);
            const float *xv = x + v;
            const int64_t offs[9] = {o0f, o1, o2, o3, 0, o5, o6, o7, o8};
            for (int k = 0; k < 9; k++) {
                DirVec t = dir_load(xv + offs[k]);
                for (int o = 0; o < DIR_DWOB; o++) acc[o][k] = dir_fmav(dv[o], t, acc[o][k]);
            }
        }
    }
    for (int o = 0; o < no; o++)
        for (int k = 0; k < 9; k++) dw[((o0 + o) * C + c) * 9 + k] += dir_hsum(acc[o][k]);
}

static int conv_is_3x3_same(const ConvShape *s) { return s->K == 3 && s->stride == 1 && s->pad == 1; }

typedef struct {
    float *out, *din, *dw, *db;
    const float *in, *w, *b, *dout;
    const ConvShape *s;
    int64_t Ho, Wo, CKK;
    int direct;           /* 1x1, stride 1, pad 0: the image is its own col */
    float *scratch;
    int64_t per_thread;   /* scratch floats per chunk */
    const float *wr;      /* direct 3x3 path (forward, or backward-data): re-laid weights */
    DirGeom g;
    int64_t part_off;     /* offset of the dw and db partials in a chunk's scratch */
    int dw_parts;         /* dw is summed in per-chunk partials (else written by one chunk each) */
    float *pad_all;       /* 3x3 same, dw by pairs: every image's padded input (N, C, S) ... */
    float *dout_all;      /* ... and laid-out dout (N, dir_dw_rows(O), NV*16) */
    int64_t dw_group;     /* 3x3 same, dw by images: images per group in a chunk's scratch (0: by pairs) */
} ConvArgs;

static int64_t conv_part_floats(const ConvArgs *a) {
    return (a->dw && a->dw_parts ? a->s->O * a->CKK : 0) + (a->db ? a->s->O : 0);
}

static void conv_fwd_direct(void *p, int64_t n0, int64_t n1, int tid) {
    const ConvArgs *a = p;
    const ConvShape *s = a->s;
    const int64_t HW = s->H * s->W;
    float *pad = a->scratch + tid * a->per_thread;
    for (int64_t n = n0; n < n1; n++)
        dir_conv_image(a->out + n * s->O * HW, a->in + n * s->C * HW, a->wr, a->b, 0, s->C, s->O, s->H, s->W, &a->g,
                       pad);
}

static void conv_fwd_images(void *p, int64_t n0, int64_t n1, int tid) {
    const ConvArgs *a = p;
    const ConvShape *s = a->s;
    const int64_t L = a->Ho * a->Wo, O = s->O;
    float *col = a->scratch ? a->scratch + tid * a->per_thread : NULL;
    for (int64_t n = n0; n < n1; n++) {
        const float *img = a->in + n * s->C * s->H * s->W;
        float *out = a->out + n * O * L;
        const float *B = img;
        if (!a->direct) {
            im2col(col, img, s, a->Ho, a->Wo);
            B = col;
        }
        float beta = 0.0f;
        if (a->b) {
            for (int64_t o = 0; o < O; o++) {
                float v = a->b[o], *d = out + o * L;
                for (int64_t l = 0; l < L; l++) d[l] = v;
            }
            beta = 1.0f;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)O, (int)L, (int)a->CKK, 1.0f, a->w,
                    (int)a->CKK, B, (int)L, beta, out, (int)L);
    }
}

/* Chunks of images: CONV_CHUNKS_PER_THREAD per thread, so that a thread that is descheduled
 * (a busy or virtual machine) leaves little work that the others cannot take over; each chunk
 * has its own scratch and dw/db partial. */
#define CONV_CHUNKS_PER_THREAD 4
static int conv_chunks(const BackendCtx *ctx, const ConvShape *s) {
    int t = backend_ctx_threads(ctx);
    int64_t c = t > 1 ? (int64_t)t * CONV_CHUNKS_PER_THREAD : 1;
    return s->N < c ? (int)s->N : (int)c;
}

void cpu_conv2d_forward(BackendCtx *ctx, float *out, const float *in, const float *w, const float *b,
                        const ConvShape *s) {
    MSD_CHECK(out && in && w && s);
    MSD_CHECK(s->N >= 0 && s->C > 0 && s->O > 0 && s->K > 0 && s->stride > 0 && s->pad >= 0);
    ConvArgs a = {.out = out, .in = in, .w = w, .b = b, .s = s, .Ho = conv_out_h(s), .Wo = conv_out_w(s)};
    MSD_CHECK(a.Ho > 0 && a.Wo > 0);
    if (s->N == 0) return;
    a.CKK = s->C * s->K * s->K;
    a.direct = s->K == 1 && s->stride == 1 && s->pad == 0;
    int chunks = conv_chunks(ctx, s);
    const int own = !cpu_conv_gemm();
    if (own && cpu_wino_usable(s)) {
        cpu_wino_conv(ctx, out, in, w, s->C * 9, 9, 0, b, 0, s->N, s->C, s->O, s->H, s->W);
        return;
    }
    if (own && conv_is_3x3_same(s)) {
        dir_geom(&a.g, s->H, s->W);
        int64_t nw = dir_weight_floats(s->O, s->C);
        a.per_thread = dir_pad_floats(&a.g, s->C);
        float *scratch = backend_ctx_scratch(ctx, nw + a.per_thread * chunks);
        dir_weights(scratch, w, s->O, s->C, s->C * 9, 9, 0);
        a.wr = scratch;
        a.scratch = scratch + nw;
        parallel_for_chunks(backend_ctx_threads(ctx), chunks, s->N, conv_fwd_direct, &a);
        return;
    }
    a.per_thread = a.direct ? 0 : a.CKK * a.Ho * a.Wo;
    a.scratch = a.per_thread ? backend_ctx_scratch(ctx, a.per_thread * chunks) : NULL;
    parallel_for_chunks(backend_ctx_threads(ctx), chunks, s->N, conv_fwd_images, &a);
}


/* The dw and db a chunk adds into: the caller's for chunk 0, zeroed partials in scratch else */
static void conv_partials(const ConvArgs *a, int tid, float **dwp, float **dbp) {
    const int64_t n = a->s->O * a->CKK;
    float *base = a->scratch + tid * a->per_thread + a->part_off;
    if (tid == 0) {
        *dwp = a->dw;
        *dbp = a->db;
        return;
    }
    *dwp = a->dw && a->dw_parts ? base : a->dw;
    *dbp = base + (a->dw && a->dw_parts ? n : 0);
    if (a->dw && a->dw_parts) memset(*dwp, 0, (size_t)n * sizeof(float));
    if (a->db) memset(*dbp, 0, (size_t)a->s->O * sizeof(float));
}

/* 3x3 same, dw of the images of one group, padded (pad) and laid out (doutp) in a chunk's
 * scratch, added into that chunk's partial dwp */
static void dir_dw_group_images(float *dwp, const float *pad, const float *doutp, int64_t ng, const DirGeom *g,
                                int64_t O, int64_t C) {
    const int64_t ldo = g->NV * DIR_VL, rows = dir_dw_rows(O);
    for (int64_t o0 = 0; o0 < O; o0 += DIR_DWOB) {
        int no = (int)(O - o0 < DIR_DWOB ? O - o0 : DIR_DWOB);
        for (int64_t c = 0; c < C; c++)
            dir_dw_kernel(dwp, C, c, o0, no, doutp + o0 * ldo, ldo, rows * ldo, pad + g->Wp + 1 + c * g->S, C * g->S,
                          ng, g);
    }
}

/* 3x3 same, chunks of images: backward-data and db; for dw either (by pairs) the images'
 * padded inputs and laid-out douts for conv_dw_pairs, or (by images) dw itself, group by group
 * of images whose padded copies stay in this core's cache, into the chunk's partial */
static void conv_bwd_direct(void *p, int64_t n0, int64_t n1, int tid) {
    const ConvArgs *a = p;
    const ConvShape *s = a->s;
    const int64_t O = s->O, C = s->C, HW = s->H * s->W, ldo = a->g.NV * DIR_VL, rows = dir_dw_rows(O);
    float *dwp, *dbp;
    conv_partials(a, tid, &dwp, &dbp);
    float *pad = a->scratch + tid * a->per_thread + a->part_off + conv_part_floats(a);
    float *padg = pad + (a->din ? dir_pad_floats(&a->g, O) : 0);
    float *doutg = padg + dir_pad_floats(&a->g, a->dw_group * C);
    const int64_t G = a->dw_group ? a->dw_group : 1;
    for (int64_t n = n0; n < n1; n += G) {
        int64_t ng = n1 - n < G ? n1 - n : G;
        for (int64_t j = n; j < n + ng; j++) {
            const float *dout = a->dout + j * O * HW;
            if (a->din)
                dir_conv_image(a->din + j * C * HW, dout, a->wr, NULL, 1, O, C, s->H, s->W, &a->g, pad);
            if (a->db)
                for (int64_t o = 0; o < O; o++) dbp[o] += (float)ops_sum(dout + o * HW, HW);
            if (a->dw && !a->dw_group) {
                dir_pad_planes(a->pad_all + j * C * a->g.S, a->in + j * C * HW, &a->g, C, s->H, s->W);
                dir_lay_dout(a->dout_all + j * rows * ldo, dout, &a->g, O, s->H, s->W);
            }
        }
        if (a->dw && a->dw_group) {
            dir_pad(padg, a->in + n * C * HW, &a->g, ng * C, s->H, s->W);
            for (int64_t j = 0; j < ng; j++)
                dir_lay_dout(doutg + j * rows * ldo, a->dout + (n + j) * O * HW, &a->g, O, s->H, s->W);
            dir_dw_group_images(dwp, padg, doutg, ng, &a->g, O, C);
        }
    }
}

/* 3x3 same, phase 2 (chunks of (output block, input channel) pairs): dw over all the images */
static void conv_dw_pairs(void *p, int64_t q0, int64_t q1, int tid) {
    const ConvArgs *a = p;
    const ConvShape *s = a->s;
    const int64_t O = s->O, C = s->C, ldo = a->g.NV * DIR_VL, rows = dir_dw_rows(O);
    (void)tid;
    for (int64_t q = q0; q < q1; q++) {
        int64_t b = q / C, c = q % C, o0 = b * DIR_DWOB;
        int no = (int)(O - o0 < DIR_DWOB ? O - o0 : DIR_DWOB);
        dir_dw_kernel(a->dw, C, c, o0, no, a->dout_all + o0 * ldo, ldo, rows * ldo,
                      a->pad_all + a->g.Wp + 1 + c * a->g.S, C * a->g.S, s->N, &a->g);
    }
}

static void conv_bwd_images(void *p, int64_t n0, int64_t n1, int tid) {
    const ConvArgs *a = p;
    const ConvShape *s = a->s;
    const int64_t L = a->Ho * a->Wo, O = s->O, CKK = a->CKK, CHW = s->C * s->H * s->W;
    float *base = a->scratch + tid * a->per_thread;
    float *col = base, *dcol = col + (a->direct ? 0 : CKK * L), *dwp, *dbp;
    conv_partials(a, tid, &dwp, &dbp);
    for (int64_t n = n0; n < n1; n++) {
        const float *dout = a->dout + n * O * L;
        if (a->din) {
            float *din = a->din + n * CHW;
            if (a->direct) {
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)CKK, (int)L, (int)O, 1.0f, a->w,
                            (int)CKK, dout, (int)L, 1.0f, din, (int)L);
            } else {
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)CKK, (int)L, (int)O, 1.0f, a->w,
                            (int)CKK, dout, (int)L, 0.0f, dcol, (int)L);
                col2im_add(din, dcol, s, a->Ho, a->Wo);
            }
        }
        if (a->dw) {
            const float *B = a->in + n * CHW;
            if (!a->direct) {
                im2col(col, B, s, a->Ho, a->Wo);
                B = col;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)O, (int)CKK, (int)L, 1.0f, dout, (int)L, B,
                        (int)L, 1.0f, dwp, (int)CKK);
        }
        if (a->db) {
            for (int64_t o = 0; o < O; o++) {
                dbp[o] += (float)ops_sum(dout + o * L, L);
            }
        }
    }
}

void cpu_conv2d_backward(BackendCtx *ctx, float *din, float *dw, float *db, const float *dout, const float *in,
                         const float *w, const ConvShape *s) {
    MSD_CHECK(dout && s);
    MSD_CHECK(s->N >= 0 && s->C > 0 && s->O > 0 && s->K > 0 && s->stride > 0 && s->pad >= 0);
    MSD_CHECK(!din || w);
    MSD_CHECK(!dw || in);
    ConvArgs a = {.din = din, .dw = dw, .db = db, .dout = dout, .in = in, .w = w, .s = s,
                  .Ho = conv_out_h(s), .Wo = conv_out_w(s)};
    MSD_CHECK(a.Ho > 0 && a.Wo > 0);
    if (s->N == 0 || (!din && !dw && !db)) return;
    a.CKK = s->C * s->K * s->K;
    a.direct = s->K == 1 && s->stride == 1 && s->pad == 0;
    int chunks = conv_chunks(ctx, s);
    const int64_t O = s->O, L = a.Ho * a.Wo;
    if (conv_is_3x3_same(s) && !cpu_conv_gemm()) {
        /* din = conv3x3(dout, wt), wt (C, O, 3, 3) = w transposed and flipped; dw directly */
        const int64_t C = s->C;
        dir_geom(&a.g, s->H, s->W);
        if (din && cpu_wino_usable(s)) {
            /* din = conv3x3(dout, wt) by Winograd, before the rest (which then has no din) */
            cpu_wino_conv(ctx, din, dout, w, 9, C * 9, 1, NULL, 1, s->N, O, C, s->H, s->W);
            din = a.din = NULL;
            if (!dw && !db) return;
        }
        int64_t nw = din ? dir_weight_floats(C, O) : 0;
        /* dw by pairs when every image's padded copy fits in a core's L2 cache (small maps:
         * all the work splits over the threads without partials), else by image groups */
        const int64_t per_image = C * a.g.S + dir_dw_rows(O) * a.g.NV * DIR_VL;
        a.dw_group = 0;
        if (dw && s->N * per_image > DIR_DW_PAIRS_MAX) {
            a.dw_group = DIR_DW_GROUP_FLOATS / per_image;
            if (a.dw_group < 1) a.dw_group = 1;
            a.dw_parts = 1;
        }
        int64_t nall = dw && !a.dw_group ? dir_pad_floats(&a.g, s->N * C) + s->N * dir_dw_rows(O) * a.g.NV * DIR_VL : 0;
        a.part_off = 0;
        a.per_thread = conv_part_floats(&a) + (din ? dir_pad_floats(&a.g, O) : 0) +
                       (a.dw_group ? dir_pad_floats(&a.g, a.dw_group * C) + a.dw_group * dir_dw_rows(O) * a.g.NV * DIR_VL
                                   : 0);
        float *scratch = backend_ctx_scratch(ctx, nw + nall + a.per_thread * chunks);
        if (din) dir_weights(scratch, w, C, O, 9, C * 9, 1);
        a.wr = scratch;
        if (nall) {
            a.pad_all = scratch + nw;
            a.dout_all = a.pad_all + dir_pad_floats(&a.g, s->N * C);
            memset(a.pad_all + s->N * C * a.g.S, 0, DIR_VL * sizeof(float)); /* the last run's overread */
        }
        a.scratch = scratch + nw + nall;
        parallel_for_chunks(backend_ctx_threads(ctx), chunks, s->N, conv_bwd_direct, &a);
        if (dw && !a.dw_group) {
            int64_t pairs = dir_dw_rows(O) / DIR_DWOB * C;
            int t = backend_ctx_threads(ctx);
            parallel_for_chunks(t, t > 1 ? t * CONV_CHUNKS_PER_THREAD : 1, pairs, conv_dw_pairs, &a);
        }
    } else {
        a.dw_parts = 1;
        a.part_off = a.direct ? 0 : 2 * a.CKK * L;
        a.per_thread = a.part_off + conv_part_floats(&a);
        a.scratch = backend_ctx_scratch(ctx, a.per_thread * chunks);
        parallel_for_chunks(backend_ctx_threads(ctx), chunks, s->N, conv_bwd_images, &a);
    }
    for (int t = 1; t < chunks; t++) {
        const float *base = a.scratch + t * a.per_thread + a.part_off;
        if (dw && a.dw_parts) {
            for (int64_t i = 0; i < O * a.CKK; i++) dw[i] += base[i];
            base += O * a.CKK;
        }
        if (db)
            for (int64_t o = 0; o < O; o++) db[o] += base[o];
    }
}
