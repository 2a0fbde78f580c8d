/* ops_conv.c: 2-D convolution on the CPU (NCHW, square kernel, stride, zero padding).
 *
 * Forward per image: out_n (O, L) = w (O, C*K*K) @ col_n (C*K*K, L) with L = Ho*Wo, where col is
 * im2col of the image; a 1x1 stride-1 unpadded conv uses the image itself as col (no copy).
 * Backward per image: dcol = w^T @ dout_n then col2im adds into din; dw += dout_n @ col_n^T;
 * db += row sums of dout_n.
 *
 * Threading: images are split over the thread pool, each chunk calls single-threaded OpenBLAS
 * (backend_cpu sets openblas_set_num_threads(1)); dw/db of chunk t > 0 go to a partial in
 * scratch, chunk 0 adds straight into dw/db, and the partials are summed at the end.
 * Scratch per chunk: col and dcol (C*K*K*L floats each), dw and db partials. Not here: groups,
 * dilation, non-square kernels. */
#include "blas.h"
#include <string.h>

#include "backend_internal.h"
#include "log.h"
#include "ops_cpu.h"
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

typedef struct {
    float *out, *din, *dw, *db;
    const float *in, *w, *b, *dout;
    const ConvShape *s;
    int64_t Ho, Wo, CKK;
    int direct;           /* 1x1, stride 1, pad 0: the image is its own col */
    float *scratch;
    int64_t per_thread;   /* scratch floats per chunk */
} ConvArgs;

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

static int conv_chunks(const BackendCtx *ctx, const ConvShape *s) {
    int t = backend_ctx_threads(ctx);
    return s->N < t ? (int)s->N : t;
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
    a.per_thread = a.direct ? 0 : a.CKK * a.Ho * a.Wo;
    a.scratch = a.per_thread ? backend_ctx_scratch(ctx, a.per_thread * chunks) : NULL;
    parallel_for(chunks, s->N, conv_fwd_images, &a);
}

static void conv_bwd_images(void *p, int64_t n0, int64_t n1, int tid) {
    const ConvArgs *a = p;
    const ConvShape *s = a->s;
    const int64_t L = a->Ho * a->Wo, O = s->O, CKK = a->CKK, CHW = s->C * s->H * s->W;
    float *base = a->scratch + tid * a->per_thread;
    float *col = base, *dcol = col + (a->direct ? 0 : CKK * L);
    float *dwp = dcol + (a->direct ? 0 : CKK * L), *dbp = dwp + (a->dw ? O * CKK : 0);
    if (tid == 0) { /* chunk 0 accumulates straight into the caller's gradients */
        dwp = a->dw;
        dbp = a->db;
    } else {
        if (a->dw) memset(dwp, 0, (size_t)(O * CKK) * sizeof(float));
        if (a->db) memset(dbp, 0, (size_t)O * sizeof(float));
    }
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
    a.per_thread = (a.direct ? 0 : 2 * a.CKK * L) + (dw ? O * a.CKK : 0) + (db ? O : 0);
    a.scratch = backend_ctx_scratch(ctx, a.per_thread * chunks);
    parallel_for(chunks, s->N, conv_bwd_images, &a);
    for (int t = 1; t < chunks; t++) {
        const float *base = a.scratch + t * a.per_thread + (a.direct ? 0 : 2 * a.CKK * L);
        if (dw) {
            for (int64_t i = 0; i < O * a.CKK; i++) dw[i] += base[i];
            base += O * a.CKK;
        }
        if (db)
            for (int64_t o = 0; o < O; o++) db[o] += base[o];
    }
}
