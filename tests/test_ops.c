/* test_ops.c: every op of the CPU backend (backend_cpu).
 *  - Forward against naive reference loops in double (direct convolution, explicit softmax...).
 *  - Backward against central finite differences of L = sum(out * R) (R random), L summed in
 *    double, on small odd/non-square shapes: stride 1/2/4, pad 0/1, 1x1/3x3/4x4, several heads.
 *  - Backward ADDS: every gradient buffer starts at a random value that is subtracted after the
 *    call, and for the main ops a second call must double the gradient.
 *  - Larger shapes (that go through the thread pool and its per-chunk partials) against the
 *    naive loops, forward and backward.
 *  - PyTorch 1.13's outputs and gradients for conv (3x3, 4x4 s2, 1x1, 3x3 s2), linear,
 *    groupnorm, attention, silu, softplus, upsample, EDM's sinusoidal embedding and the
 *    sentence encoder's forward-only ops (gelu, layernorm, embedding, token attention, masked mean), from
 *    tests/fixtures/ops_ref.safetensors (regenerate: /usr/bin/python3 tests/torch_ops_ref.py).
 * Tolerances are stated at each check; failures print the worst element (CHECK_CLOSE). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "check.h"
#include "op_count.h"
#define TEST_RAND_SEED 0x9E3779B97F4A7C15ull
#include "cpu_ops.h"
#include "rand.h"
#include "safetensors.h"

static const Backend *be;
static BackendCtx *ctx;

/* ---- helpers ---- */
static float *zeros(int64_t n) { return calloc((size_t)(n ? n : 1), sizeof(float)); }
static float *fdup(const float *x, int64_t n) {
    float *p = malloc((size_t)(n ? n : 1) * sizeof(float));
    memcpy(p, x, (size_t)n * sizeof(float));
    return p;
}
static void sub(float *a, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++) a[i] -= b[i];
}

/* A forward pass under test: fwd(st) writes out (nout floats); the probe loss is sum(out*R). */
typedef struct {
    void (*fwd)(void *st);
    void *st;
    float *out;
    const float *R;
    int64_t nout;
} Probe;

static double probe_loss(const Probe *p) {
    p->fwd(p->st);
    double s = 0.0;
    for (int64_t i = 0; i < p->nout; i++) s += (double)p->out[i] * (double)p->R[i];
    return s;
}

/* Central differences of the probe loss with respect to x (n floats), step h, for every
 * step-th element; the others are copied from `other` (the analytic gradient), so a big
 * tensor costs n/step forward pairs. */
static void numgrad_every(const Probe *p, float *x, int64_t n, float h, float *g, int64_t step, const float *other) {
    for (int64_t i = 0; i < n; i++) {
        if (i % step) {
            g[i] = other[i];
            continue;
        }
        float keep = x[i];
        x[i] = keep + h;
        double lp = probe_loss(p);
        x[i] = keep - h;
        double lm = probe_loss(p);
        x[i] = keep;
        g[i] = (float)((lp - lm) / (2.0 * (double)h));
    }
    p->fwd(p->st);
}
static void numgrad(const Probe *p, float *x, int64_t n, float h, float *g) { numgrad_every(p, x, n, h, g, 1, NULL); }

/* ================================ convolution ================================ */

static void conv_ref(double *out, const float *in, const float *w, const float *b, const ConvShape *s) {
    int64_t Ho = conv_out_h(s), Wo = conv_out_w(s);
    for (int64_t n = 0; n < s->N; n++)
        for (int64_t o = 0; o < s->O; o++)
            for (int64_t oh = 0; oh < Ho; oh++)
                for (int64_t ow = 0; ow < Wo; ow++) {
                    double acc = b ? b[o] : 0.0;
                    for (int64_t c = 0; c < s->C; c++)
                        for (int64_t kh = 0; kh < s->K; kh++)
                            for (int64_t kw = 0; kw < s->K; kw++) {
                                int64_t ih = oh * s->stride - s->pad + kh, iw = ow * s->stride - s->pad + kw;
                                if (ih < 0 || ih >= s->H || iw < 0 || iw >= s->W) continue;
                                acc += (double)in[((n * s->C + c) * s->H + ih) * s->W + iw] *
                                       w[((o * s->C + c) * s->K + kh) * s->K + kw];
                            }
                    out[((n * s->O + o) * Ho + oh) * Wo + ow] = acc;
                }
}

/* naive backward: din, dw, db (written, double) */
static void conv_ref_bwd(double *din, double *dw, double *db, const float *dout, const float *in, const float *w,
                         const ConvShape *s) {
    int64_t Ho = conv_out_h(s), Wo = conv_out_w(s);
    memset(din, 0, sizeof(double) * (size_t)(s->N * s->C * s->H * s->W));
    memset(dw, 0, sizeof(double) * (size_t)(s->O * s->C * s->K * s->K));
    memset(db, 0, sizeof(double) * (size_t)s->O);
    for (int64_t n = 0; n < s->N; n++)
        for (int64_t o = 0; o < s->O; o++)
            for (int64_t oh = 0; oh < Ho; oh++)
                for (int64_t ow = 0; ow < Wo; ow++) {
                    double g = dout[((n * s->O + o) * Ho + oh) * Wo + ow];
                    db[o] += g;
                    for (int64_t c = 0; c < s->C; c++)
                        for (int64_t kh = 0; kh < s->K; kh++)
                            for (int64_t kw = 0; kw < s->K; kw++) {
                                int64_t ih = oh * s->stride - s->pad + kh, iw = ow * s->stride - s->pad + kw;
                                if (ih < 0 || ih >= s->H || iw < 0 || iw >= s->W) continue;
                                int64_t ii = ((n * s->C + c) * s->H + ih) * s->W + iw;
                                int64_t wi = ((o * s->C + c) * s->K + kh) * s->K + kw;
                                din[ii] += g * w[wi];
                                dw[wi] += g * in[ii];
                            }
                }
}

typedef struct {
    float *out, *in, *w, *b;
    ConvShape s;
} ConvSt;
static void conv_fwd(void *p) {
    ConvSt *c = p;
    be->conv2d_forward(ctx, c->out, c->in, c->w, c->b, &c->s);
}

static void check_conv(ConvShape s, int with_bias) {
    char what[160];
    snprintf(what, sizeof what, "conv N%lld C%lld %lldx%lld O%lld K%lld s%lld p%lld%s", (long long)s.N,
             (long long)s.C, (long long)s.H, (long long)s.W, (long long)s.O, (long long)s.K, (long long)s.stride,
             (long long)s.pad, with_bias ? "" : " nobias");
    int64_t Ho = conv_out_h(&s), Wo = conv_out_w(&s);
    int64_t nin = s.N * s.C * s.H * s.W, nw = s.O * s.C * s.K * s.K, nout = s.N * s.O * Ho * Wo;
    ConvSt c = {.out = zeros(nout), .in = rnd(nin, -1, 1), .w = rnd(nw, -0.5f, 0.5f),
                .b = with_bias ? rnd(s.O, -1, 1) : NULL, .s = s};
    float *R = rnd(nout, -1, 1);
    double *ref = malloc(sizeof(double) * (size_t)nout);
    conv_ref(ref, c.in, c.w, c.b, &s);
    conv_fwd(&c);
    float *reff = zeros(nout);
    for (int64_t i = 0; i < nout; i++) reff[i] = (float)ref[i];
    char w2[200];
    snprintf(w2, sizeof w2, "%s forward", what);
    CHECK_CLOSE(c.out, reff, nout, 1e-5, 1e-4, w2); /* fp32 GEMM vs double loops */

    /* backward: prior values in the gradients must survive (backward adds) */
    float *pin = rnd(nin, -1, 1), *pw = rnd(nw, -1, 1), *pb = rnd(s.O, -1, 1);
    float *din = fdup(pin, nin), *dw = fdup(pw, nw), *db = fdup(pb, s.O);
    be->conv2d_backward(ctx, din, dw, with_bias ? db : NULL, R, c.in, c.w, &s);
    sub(din, pin, nin);
    sub(dw, pw, nw);
    sub(db, pb, s.O);
    Probe pr = {conv_fwd, &c, c.out, R, nout};
    float *g = zeros(nin > nw ? nin : nw);
    const float h = 1e-2f; /* the op is linear in in and in w: differences are exact up to rounding */
    numgrad(&pr, c.in, nin, h, g);
    snprintf(w2, sizeof w2, "%s din", what);
    CHECK_CLOSE(din, g, nin, 2e-3, 1e-3, w2);
    numgrad(&pr, c.w, nw, h, g);
    snprintf(w2, sizeof w2, "%s dw", what);
    CHECK_CLOSE(dw, g, nw, 2e-3, 1e-3, w2);
    if (with_bias) {
        numgrad(&pr, c.b, s.O, h, g);
        snprintf(w2, sizeof w2, "%s db", what);
        CHECK_CLOSE(db, g, s.O, 2e-3, 1e-3, w2);
    }
    free(c.out); free(c.in); free(c.w); free(c.b); free(R); free(ref); free(reff);
    free(pin); free(pw); free(pb); free(din); free(dw); free(db); free(g);
}

static void test_conv_grad_small(void) {
    ConvShape shapes[] = {
        {2, 3, 5, 7, 4, 3, 1, 1}, /* 3x3 same, non-square */
        {3, 2, 7, 6, 3, 3, 2, 1}, /* 3x3 stride 2, odd sizes */
        {2, 3, 6, 5, 2, 3, 1, 0}, /* 3x3 valid */
        {3, 4, 5, 3, 5, 1, 1, 0}, /* 1x1: the direct GEMM path */
        {2, 3, 7, 7, 2, 1, 2, 0}, /* 1x1 stride 2: im2col path */
        {2, 2, 9, 8, 3, 4, 2, 1}, /* 4x4 stride 2 pad 1 (GAN head) */
        {1, 3, 8, 8, 2, 4, 4, 0}, /* 4x4 stride 4 */
        {3, 2, 4, 4, 2, 3, 1, 2}, /* pad larger than needed */
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) check_conv(shapes[i], 1);
    check_conv(shapes[0], 0);
    check_conv(shapes[3], 0);
}

/* fmnist-like shapes through the pool (partials of dw/db per chunk) against the naive loops */
static void check_conv_big(ConvShape s) {
    char what[160];
    snprintf(what, sizeof what, "conv-big N%lld C%lld %lldx%lld O%lld K%lld s%lld p%lld", (long long)s.N,
             (long long)s.C, (long long)s.H, (long long)s.W, (long long)s.O, (long long)s.K, (long long)s.stride,
             (long long)s.pad);
    int64_t Ho = conv_out_h(&s), Wo = conv_out_w(&s);
    int64_t nin = s.N * s.C * s.H * s.W, nw = s.O * s.C * s.K * s.K, nout = s.N * s.O * Ho * Wo;
    float *in = rnd(nin, -1, 1), *w = rnd(nw, -0.2f, 0.2f), *b = rnd(s.O, -1, 1), *out = zeros(nout);
    float *dout = rnd(nout, -1, 1);
    double *ref = malloc(sizeof(double) * (size_t)nout), *rdin = malloc(sizeof(double) * (size_t)nin);
    double *rdw = malloc(sizeof(double) * (size_t)nw), *rdb = malloc(sizeof(double) * (size_t)s.O);
    conv_ref(ref, in, w, b, &s);
    conv_ref_bwd(rdin, rdw, rdb, dout, in, w, &s);
    be->conv2d_forward(ctx, out, in, w, b, &s);
    float *t = zeros(nout > nin ? (nout > nw ? nout : nw) : (nin > nw ? nin : nw));
    char w2[200];
    for (int64_t i = 0; i < nout; i++) t[i] = (float)ref[i];
    snprintf(w2, sizeof w2, "%s forward", what);
    CHECK_CLOSE(out, t, nout, 1e-4, 1e-4, w2);
    float *din = zeros(nin), *dw = zeros(nw), *db = zeros(s.O);
    be->conv2d_backward(ctx, din, dw, db, dout, in, w, &s);
    /* twice: every gradient doubles */
    be->conv2d_backward(ctx, din, dw, db, dout, in, w, &s);
    for (int64_t i = 0; i < nin; i++) t[i] = (float)(2 * rdin[i]);
    snprintf(w2, sizeof w2, "%s din (called twice)", what);
    CHECK_CLOSE(din, t, nin, 1e-4, 1e-4, w2);
    for (int64_t i = 0; i < nw; i++) t[i] = (float)(2 * rdw[i]);
    snprintf(w2, sizeof w2, "%s dw (called twice)", what);
    CHECK_CLOSE(dw, t, nw, 1e-3, 1e-4, w2); /* sums over N*Ho*Wo terms */
    for (int64_t i = 0; i < s.O; i++) t[i] = (float)(2 * rdb[i]);
    snprintf(w2, sizeof w2, "%s db (called twice)", what);
    CHECK_CLOSE(db, t, s.O, 1e-3, 1e-4, w2);
    free(in); free(w); free(b); free(out); free(dout); free(ref); free(rdin); free(rdw); free(rdb);
    free(t); free(din); free(dw); free(db);
}

static void test_conv_big(void) {
    check_conv_big((ConvShape){5, 16, 14, 14, 24, 3, 1, 1}); /* 3x3 same, dw by (block, channel) pairs */
    check_conv_big((ConvShape){17, 8, 28, 28, 100, 3, 1, 1}); /* dw by image groups of 2, one partial */
    /* Winograd F(2x2, 3x3) (C, O >= 8): odd sizes (half tiles dropped), a row of tiles wider
     * than a vector (W 70: 35 tiles), a group count that leaves a partial group */
    check_conv_big((ConvShape){9, 8, 7, 7, 12, 3, 1, 1});
    check_conv_big((ConvShape){3, 9, 9, 70, 8, 3, 1, 1});
    check_conv_big((ConvShape){7, 12, 5, 6, 9, 3, 1, 1});
    check_conv_big((ConvShape){4, 16, 14, 14, 8, 1, 1, 0});
    check_conv_big((ConvShape){3, 8, 15, 13, 16, 3, 2, 1});
}

/* Winograd F(2x2, 3x3) itself (conv_winograd.c) on shapes the convolution op does not route to
 * it (narrow maps) as well as wide ones: every tile-row layout (two tile rows per vector for
 * rows of <= 7 tiles, one, several vectors per row), odd and even sizes, output counts that
 * are not a multiple of 4, partial groups of images, with bias, and adding into the output. */
static void check_wino(int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int threads) {
    ConvShape s = {N, C, H, W, O, 3, 1, 1};
    BackendCtx *c = backend_ctx_new(be, threads);
    int64_t nin = N * C * H * W, nout = N * O * H * W;
    float *in = rnd(nin, -1, 1), *w = rnd(O * C * 9, -0.3f, 0.3f), *b = rnd(O, -1, 1), *out = zeros(nout);
    float *base = rnd(nout, -1, 1), *acc = fdup(base, nout), *want = zeros(nout), *want2 = zeros(nout);
    double *ref = malloc(sizeof(double) * (size_t)nout);
    conv_ref(ref, in, w, b, &s);
    for (int64_t i = 0; i < nout; i++) want[i] = (float)ref[i];
    conv_ref(ref, in, w, NULL, &s);
    for (int64_t i = 0; i < nout; i++) want2[i] = (float)(ref[i] + base[i]);
    cpu_wino_conv(c, out, in, w, C * 9, 9, 0, b, 0, N, C, O, H, W);
    cpu_wino_conv(c, acc, in, w, C * 9, 9, 0, NULL, 1, N, C, O, H, W);
    char what[128];
    snprintf(what, sizeof what, "winograd N%lld C%lld %lldx%lld O%lld threads %d", (long long)N, (long long)C,
             (long long)H, (long long)W, (long long)O, threads);
    CHECK_CLOSE(out, want, nout, 1e-4, 1e-4, what);
    strncat(what, " (adding)", sizeof what - strlen(what) - 1);
    CHECK_CLOSE(acc, want2, nout, 1e-4, 1e-4, what);
    free(in); free(w); free(b); free(out); free(base); free(acc); free(want); free(want2); free(ref);
    backend_ctx_destroy(&c);
}

static void test_winograd(void) {
    check_wino(3, 5, 7, 7, 6, 2);    /* 4 tiles a row: four tile rows a vector, odd sizes */
    check_wino(2, 4, 6, 5, 9, 1);    /* 3 tiles a row, 3 tile rows: too few for four, one by one */
    check_wino(3, 6, 11, 8, 5, 2);   /* 4 tiles a row, 6 tile rows: four, then two single */
    check_wino(2, 5, 13, 11, 7, 2);  /* 6 tiles a row: pairs of tile rows, one left */
    check_wino(5, 8, 14, 14, 8, 2);  /* 7 tiles a row: pairs at their widest */
    check_wino(4, 3, 9, 13, 5, 2);   /* 7 tiles, odd width */
    check_wino(3, 6, 11, 17, 7, 2);  /* 9 tiles: one tile row per vector */
    check_wino(2, 4, 8, 33, 4, 1);   /* 17 tiles: two vectors per tile row */
    check_wino(2, 3, 5, 70, 5, 2);   /* 35 tiles: three vectors per tile row */
    check_wino(1, 8, 1, 1, 8, 1);    /* a single pixel */
    /* images of more than 112 tiles go in blocks of tile rows: pairs with a single row left
     * (37 x 14: blocks of 10 and 9 tile rows), and wide rows (9 x 70: blocks of 3 and 2) */
    check_wino(2, 4, 37, 14, 5, 2);
    check_wino(3, 5, 9, 70, 6, 2);
}

/* ================================== linear ================================== */

typedef struct {
    float *out, *in, *w, *b;
    int64_t N, I, O;
} LinSt;
static void lin_fwd(void *p) {
    LinSt *l = p;
    be->linear_forward(ctx, l->out, l->in, l->w, l->b, l->N, l->I, l->O);
}

static void check_linear(int64_t N, int64_t I, int64_t O, int with_bias, int fd) {
    char what[96];
    snprintf(what, sizeof what, "linear N%lld I%lld O%lld%s", (long long)N, (long long)I, (long long)O,
             with_bias ? "" : " nobias");
    LinSt l = {zeros(N * O), rnd(N * I, -1, 1), rnd(O * I, -0.5f, 0.5f), with_bias ? rnd(O, -1, 1) : NULL, N, I, O};
    int64_t nt = N * I > O * I ? N * I : O * I;
    if (N * O > nt) nt = N * O;
    float *R = rnd(N * O, -1, 1), *t = zeros(nt);
    lin_fwd(&l);
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < O; o++) {
            double acc = with_bias ? l.b[o] : 0.0;
            for (int64_t i = 0; i < I; i++) acc += (double)l.in[n * I + i] * l.w[o * I + i];
            t[n * O + o] = (float)acc;
        }
    char w2[160];
    snprintf(w2, sizeof w2, "%s forward", what);
    CHECK_CLOSE(l.out, t, N * O, 1e-5, 1e-4, w2);
    float *pin = rnd(N * I, -1, 1), *pw = rnd(O * I, -1, 1), *pb = rnd(O, -1, 1);
    float *din = fdup(pin, N * I), *dw = fdup(pw, O * I), *db = fdup(pb, O);
    be->linear_backward(ctx, din, dw, with_bias ? db : NULL, R, l.in, l.w, N, I, O);
    sub(din, pin, N * I);
    sub(dw, pw, O * I);
    sub(db, pb, O);
    if (fd) {
        Probe pr = {lin_fwd, &l, l.out, R, N * O};
        numgrad(&pr, l.in, N * I, 1e-2f, t);
        snprintf(w2, sizeof w2, "%s din", what);
        CHECK_CLOSE(din, t, N * I, 2e-3, 1e-3, w2);
        numgrad(&pr, l.w, O * I, 1e-2f, t);
        snprintf(w2, sizeof w2, "%s dw", what);
        CHECK_CLOSE(dw, t, O * I, 2e-3, 1e-3, w2);
        if (with_bias) {
            numgrad(&pr, l.b, O, 1e-2f, t);
            snprintf(w2, sizeof w2, "%s db", what);
            CHECK_CLOSE(db, t, O, 2e-3, 1e-3, w2);
        }
    } else { /* big: against the closed forms */
        for (int64_t n = 0; n < N; n++)
            for (int64_t i = 0; i < I; i++) {
                double a = 0;
                for (int64_t o = 0; o < O; o++) a += (double)R[n * O + o] * l.w[o * I + i];
                t[n * I + i] = (float)a;
            }
        snprintf(w2, sizeof w2, "%s din", what);
        CHECK_CLOSE(din, t, N * I, 1e-4, 1e-4, w2);
        for (int64_t o = 0; o < O; o++)
            for (int64_t i = 0; i < I; i++) {
                double a = 0;
                for (int64_t n = 0; n < N; n++) a += (double)R[n * O + o] * l.in[n * I + i];
                t[o * I + i] = (float)a;
            }
        snprintf(w2, sizeof w2, "%s dw", what);
        CHECK_CLOSE(dw, t, O * I, 1e-4, 1e-4, w2);
    }
    free(l.out); free(l.in); free(l.w); free(l.b); free(R); free(t);
    free(pin); free(pw); free(pb); free(din); free(dw); free(db);
}

static void test_linear(void) {
    check_linear(3, 5, 4, 1, 1);
    check_linear(1, 7, 3, 0, 1);
    check_linear(5, 2, 9, 1, 1);
    check_linear(64, 128, 96, 1, 0); /* split over the pool */
}

/* ================================= groupnorm ================================= */

typedef struct {
    float *out, *mean, *rstd, *in, *gamma, *beta;
    int64_t N, C, HW, G;
    float eps;
} GnSt;
static void gn_fwd(void *p) {
    GnSt *g = p;
    be->groupnorm_forward(ctx, g->out, g->mean, g->rstd, g->in, g->gamma, g->beta, g->N, g->C, g->HW, g->G, g->eps);
}

static void check_groupnorm(int64_t N, int64_t C, int64_t HW, int64_t G, int fd) {
    char what[96], w2[160];
    snprintf(what, sizeof what, "groupnorm N%lld C%lld HW%lld G%lld", (long long)N, (long long)C, (long long)HW,
             (long long)G);
    int64_t n = N * C * HW;
    GnSt g = {zeros(n), zeros(N * G), zeros(N * G), rnd(n, -2, 3), rnd(C, 0.5f, 1.5f), rnd(C, -1, 1),
              N, C, HW, G, 1e-5f};
    gn_fwd(&g);
    /* naive reference */
    float *t = zeros(n), *tm = zeros(N * G), *tr = zeros(N * G);
    int64_t Cg = C / G, M = Cg * HW;
    for (int64_t b = 0; b < N * G; b++) {
        const float *x = g.in + b * M;
        double s = 0, s2 = 0;
        for (int64_t i = 0; i < M; i++) s += x[i];
        double mu = s / M;
        for (int64_t i = 0; i < M; i++) s2 += (x[i] - mu) * (x[i] - mu);
        double r = 1.0 / sqrt(s2 / M + 1e-5);
        tm[b] = (float)mu;
        tr[b] = (float)r;
        for (int64_t i = 0; i < M; i++) {
            int64_t c = (b % G) * Cg + i / HW;
            t[b * M + i] = (float)((x[i] - mu) * r * g.gamma[c] + g.beta[c]);
        }
    }
    snprintf(w2, sizeof w2, "%s forward", what);
    CHECK_CLOSE(g.out, t, n, 1e-5, 1e-4, w2);
    snprintf(w2, sizeof w2, "%s mean", what);
    CHECK_CLOSE(g.mean, tm, N * G, 1e-6, 1e-5, w2);
    snprintf(w2, sizeof w2, "%s rstd", what);
    CHECK_CLOSE(g.rstd, tr, N * G, 1e-6, 1e-5, w2);
    if (fd) {
        float *R = rnd(n, -1, 1), *gr = zeros(n);
        float *pin = rnd(n, -1, 1), *pg = rnd(C, -1, 1), *pbt = rnd(C, -1, 1);
        float *din = fdup(pin, n), *dg = fdup(pg, C), *dbt = fdup(pbt, C);
        be->groupnorm_backward(ctx, din, dg, dbt, R, g.in, g.mean, g.rstd, g.gamma, N, C, HW, G);
        sub(din, pin, n);
        sub(dg, pg, C);
        sub(dbt, pbt, C);
        Probe pr = {gn_fwd, &g, g.out, R, n};
        numgrad(&pr, g.in, n, 2e-3f, gr); /* nonlinear in x: smaller step */
        snprintf(w2, sizeof w2, "%s din", what);
        CHECK_CLOSE(din, gr, n, 5e-3, 1e-2, w2);
        numgrad(&pr, g.gamma, C, 1e-2f, gr);
        snprintf(w2, sizeof w2, "%s dgamma", what);
        CHECK_CLOSE(dg, gr, C, 2e-3, 1e-3, w2);
        numgrad(&pr, g.beta, C, 1e-2f, gr);
        snprintf(w2, sizeof w2, "%s dbeta", what);
        CHECK_CLOSE(dbt, gr, C, 2e-3, 1e-3, w2);
        /* twice: doubles */
        float *d2 = zeros(n);
        be->groupnorm_backward(ctx, d2, NULL, NULL, R, g.in, g.mean, g.rstd, g.gamma, N, C, HW, G);
        be->groupnorm_backward(ctx, d2, NULL, NULL, R, g.in, g.mean, g.rstd, g.gamma, N, C, HW, G);
        for (int64_t i = 0; i < n; i++) d2[i] *= 0.5f;
        snprintf(w2, sizeof w2, "%s din twice / 2", what);
        CHECK_CLOSE(d2, din, n, 1e-6, 1e-5, w2);
        free(R); free(gr); free(pin); free(pg); free(pbt); free(din); free(dg); free(dbt); free(d2);
    }
    free(g.out); free(g.mean); free(g.rstd); free(g.in); free(g.gamma); free(g.beta); free(t); free(tm); free(tr);
}

static void test_groupnorm(void) {
    check_groupnorm(2, 6, 5, 3, 1);
    check_groupnorm(3, 4, 7, 1, 1);
    check_groupnorm(2, 4, 3, 4, 1);
    check_groupnorm(4, 32, 196, 8, 0); /* pool path, forward only */
}

/* ================================ attention ================================ */

static void attention_ref(float *out, float *att, const float *qkv, int64_t N, int64_t C, int64_t L,
                          int64_t heads) {
    int64_t d = C / heads;
    double scale = 1.0 / sqrt((double)d);
    double *row = malloc(sizeof(double) * (size_t)L);
    for (int64_t n = 0; n < N; n++)
        for (int64_t h = 0; h < heads; h++) {
            const float *q = qkv + (n * 3 * C + h * d) * L, *k = q + C * L, *v = k + C * L;
            for (int64_t i = 0; i < L; i++) {
                double mx = -INFINITY, s = 0;
                for (int64_t j = 0; j < L; j++) {
                    double a = 0;
                    for (int64_t c = 0; c < d; c++) a += (double)q[c * L + i] * k[c * L + j];
                    row[j] = a * scale;
                    if (row[j] > mx) mx = row[j];
                }
                for (int64_t j = 0; j < L; j++) s += (row[j] = exp(row[j] - mx));
                for (int64_t j = 0; j < L; j++) att[((n * heads + h) * L + i) * L + j] = (float)(row[j] / s);
                for (int64_t c = 0; c < d; c++) {
                    double a = 0;
                    for (int64_t j = 0; j < L; j++) a += row[j] / s * v[c * L + j];
                    out[(n * C + h * d + c) * L + i] = (float)a;
                }
            }
        }
    free(row);
}

typedef struct {
    float *out, *att, *qkv;
    int64_t N, C, L, heads;
} AttSt;
static void att_fwd(void *p) {
    AttSt *a = p;
    be->attention_forward(ctx, a->out, a->att, a->qkv, a->N, a->C, a->L, a->heads);
}

static void check_attention(int64_t N, int64_t C, int64_t L, int64_t heads, int fd) {
    char what[96], w2[160];
    snprintf(what, sizeof what, "attention N%lld C%lld L%lld heads%lld", (long long)N, (long long)C, (long long)L,
             (long long)heads);
    int64_t nq = N * 3 * C * L, no = N * C * L, na = N * heads * L * L;
    AttSt a = {zeros(no), zeros(na), rnd(nq, -1.5f, 1.5f), N, C, L, heads};
    float *ro = zeros(no), *ra = zeros(na);
    att_fwd(&a);
    attention_ref(ro, ra, a.qkv, N, C, L, heads);
    snprintf(w2, sizeof w2, "%s forward", what);
    CHECK_CLOSE(a.out, ro, no, 1e-5, 1e-4, w2);
    snprintf(w2, sizeof w2, "%s probabilities", what);
    CHECK_CLOSE(a.att, ra, na, 1e-6, 1e-4, w2);
    float *R = rnd(no, -1, 1), *pq = rnd(nq, -1, 1), *dq = fdup(pq, nq), *g = zeros(nq);
    be->attention_backward(ctx, dq, R, a.qkv, a.att, N, C, L, heads);
    sub(dq, pq, nq);
    if (fd) {
        Probe pr = {att_fwd, &a, a.out, R, no};
        numgrad(&pr, a.qkv, nq, 2e-3f, g);
        snprintf(w2, sizeof w2, "%s dqkv", what);
        CHECK_CLOSE(dq, g, nq, 3e-3, 1e-2, w2);
    }
    float *d2 = zeros(nq);
    be->attention_backward(ctx, d2, R, a.qkv, a.att, N, C, L, heads);
    be->attention_backward(ctx, d2, R, a.qkv, a.att, N, C, L, heads);
    for (int64_t i = 0; i < nq; i++) d2[i] *= 0.5f;
    snprintf(w2, sizeof w2, "%s dqkv twice / 2", what);
    CHECK_CLOSE(d2, dq, nq, 1e-6, 1e-5, w2);
    free(a.out); free(a.att); free(a.qkv); free(ro); free(ra); free(R); free(pq); free(dq); free(g); free(d2);
}

static void test_attention(void) {
    check_attention(2, 6, 5, 1, 1);
    check_attention(2, 6, 5, 2, 1);
    check_attention(1, 6, 7, 3, 1);
    check_attention(3, 8, 9, 4, 1);
    check_attention(8, 64, 49, 1, 0); /* fmnist-s 7x7 bottleneck, pool path */
}

/* ======================= pointwise ops with a gradient ======================= */

typedef struct {
    float *out, *a, *b;
    int64_t n;
    int which; /* 0 silu, 1 softplus, 2 mul */
} PwSt;
static void pw_fwd(void *p) {
    PwSt *s = p;
    if (s->which == 0) be->silu_forward(ctx, s->out, s->a, s->n);
    else if (s->which == 1) be->softplus_forward(ctx, s->out, s->a, s->n);
    else be->mul(ctx, s->out, s->a, s->b, s->n);
}

static void test_silu_softplus_mul(void) {
    int64_t n = 37;
    for (int which = 0; which < 3; which++) {
        const char *name = which == 0 ? "silu" : which == 1 ? "softplus" : "mul";
        PwSt s = {zeros(n), rnd(n, -4, 4), rnd(n, -2, 2), n, which};
        float *R = rnd(n, -1, 1), *t = zeros(n), *pa = rnd(n, -1, 1), *pb = rnd(n, -1, 1);
        float *da = fdup(pa, n), *db = fdup(pb, n);
        pw_fwd(&s);
        for (int64_t i = 0; i < n; i++) {
            double x = s.a[i];
            t[i] = (float)(which == 0 ? x / (1 + exp(-x)) : which == 1 ? log1p(exp(x)) : x * s.b[i]);
        }
        char w2[96];
        snprintf(w2, sizeof w2, "%s forward", name);
        CHECK_CLOSE(s.out, t, n, 1e-6, 1e-5, w2);
        if (which == 0) be->silu_backward(ctx, da, R, s.a, n);
        else if (which == 1) be->softplus_backward(ctx, da, R, s.a, n);
        else be->mul_backward(ctx, da, db, R, s.a, s.b, n);
        sub(da, pa, n);
        sub(db, pb, n);
        Probe pr = {pw_fwd, &s, s.out, R, n};
        numgrad(&pr, s.a, n, 1e-3f, t);
        snprintf(w2, sizeof w2, "%s din", name);
        CHECK_CLOSE(da, t, n, 1e-3, 1e-2, w2);
        if (which == 2) {
            numgrad(&pr, s.b, n, 1e-3f, t);
            CHECK_CLOSE(db, t, n, 1e-3, 1e-2, "mul db");
        }
        free(s.out); free(s.a); free(s.b); free(R); free(t); free(pa); free(pb); free(da); free(db);
    }
    /* softplus stability at the ends, and its gradient there */
    float x[6] = {-100.0f, -30.0f, 19.0f, 21.0f, 30.0f, 100.0f}, y[6], want[6], dx[6] = {0}, one[6], wd[6];
    for (int i = 0; i < 6; i++) {
        want[i] = x[i] > 20 ? x[i] : (float)log1p(exp((double)x[i]));
        one[i] = 1.0f;
        wd[i] = (float)(1.0 / (1.0 + exp(-(double)x[i])));
    }
    be->softplus_forward(ctx, y, x, 6);
    CHECK_CLOSE(y, want, 6, 1e-30, 1e-6, "softplus extremes");
    be->softplus_backward(ctx, dx, one, x, 6);
    CHECK_CLOSE(dx, wd, 6, 1e-30, 1e-6, "softplus gradient extremes");
    /* a long vector through the pool */
    int64_t m = 100003;
    float *a = rnd(m, -6, 6), *o = zeros(m), *r = zeros(m);
    be->silu_forward(ctx, o, a, m);
    for (int64_t i = 0; i < m; i++) r[i] = (float)(a[i] / (1 + exp(-(double)a[i])));
    CHECK_CLOSE(o, r, m, 1e-6, 1e-5, "silu long");
    free(a); free(o); free(r);
}

static void test_arith(void) {
    int64_t n = 50001;
    float *a = rnd(n, -1, 1), *b = rnd(n, -1, 1), *o = zeros(n), *t = zeros(n);
    be->add(ctx, o, a, b, n);
    for (int64_t i = 0; i < n; i++) t[i] = a[i] + b[i];
    CHECK_CLOSE(o, t, n, 0, 0, "add");
    be->mul(ctx, o, a, b, n);
    for (int64_t i = 0; i < n; i++) t[i] = a[i] * b[i];
    CHECK_CLOSE(o, t, n, 0, 0, "mul");
    be->scale(ctx, o, a, 0.37f, n);
    for (int64_t i = 0; i < n; i++) t[i] = 0.37f * a[i];
    CHECK_CLOSE(o, t, n, 0, 0, "scale");
    memcpy(o, b, (size_t)n * sizeof(float));
    be->axpy(ctx, o, -1.5f, a, n);
    for (int64_t i = 0; i < n; i++) t[i] = b[i] + -1.5f * a[i];
    CHECK_CLOSE(o, t, n, 1e-7, 1e-6, "axpy");
    be->fill(ctx, o, 2.5f, n);
    for (int64_t i = 0; i < n; i++) t[i] = 2.5f;
    CHECK_CLOSE(o, t, n, 0, 0, "fill");
    be->copy(ctx, o, a, n);
    CHECK_CLOSE(o, a, n, 0, 0, "copy");
    be->fill(ctx, o, 0.0f, n);
    be->upload(ctx, o, b, n);
    CHECK_CLOSE(o, b, n, 0, 0, "upload");
    be->fill(ctx, t, 0.0f, n);
    be->download(ctx, t, a, n);
    CHECK_CLOSE(t, a, n, 0, 0, "download");
    /* scale_rows with and without y */
    int64_t N = 3, D = 7;
    float sa[3] = {0.5f, -2.0f, 1.0f}, sb[3] = {1.5f, 0.0f, -1.0f};
    be->scale_rows(ctx, o, a, sa, b, sb, N, D);
    for (int64_t r = 0; r < N; r++)
        for (int64_t j = 0; j < D; j++) t[r * D + j] = sa[r] * a[r * D + j] + sb[r] * b[r * D + j];
    CHECK_CLOSE(o, t, N * D, 1e-7, 1e-6, "scale_rows");
    be->scale_rows(ctx, o, a, sa, NULL, NULL, N, D);
    for (int64_t r = 0; r < N; r++)
        for (int64_t j = 0; j < D; j++) t[r * D + j] = sa[r] * a[r * D + j];
    CHECK_CLOSE(o, t, N * D, 1e-7, 1e-6, "scale_rows y NULL");
    /* sumsq in double */
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * a[i];
    double got = be->sumsq(ctx, a, n);
    CHECK(fabs(got - s) <= 1e-5 * s, "sumsq %.9g want %.9g", got, s);
    /* onehot */
    int32_t lab[4] = {2, 0, 4, 2};
    float oh[20];
    be->onehot(ctx, oh, lab, 4, 5);
    int bad = 0;
    for (int i = 0; i < 4; i++)
        for (int v = 0; v < 5; v++) bad += oh[i * 5 + v] != (v == lab[i] ? 1.0f : 0.0f);
    CHECK(bad == 0, "onehot: %d wrong entries", bad);
    /* alloc is zeroed */
    float *z = be->alloc(ctx, 1000);
    int nz = 0;
    for (int i = 0; i < 1000; i++) nz += z[i] != 0.0f;
    CHECK(nz == 0, "alloc: %d nonzero", nz);
    be->free(ctx, z);
    free(a); free(b); free(o); free(t);
}

/* ====================== conditioning and spatial ops ====================== */

typedef struct {
    float *out, *x, *y;
    int64_t N, C, H, W;
    int which; /* 0 modulate, 1 add_channel, 2 upsample, 3 concat, 4 sinusoidal */
} SpSt;
static void sp_fwd(void *p) {
    SpSt *s = p;
    switch (s->which) {
    case 0: be->modulate_forward(ctx, s->out, s->x, s->y, s->N, s->C, s->H * s->W); break;
    case 1: be->add_channel_forward(ctx, s->out, s->x, s->y, s->N, s->C, s->H * s->W); break;
    case 2: be->upsample2x_forward(ctx, s->out, s->x, s->N, s->C, s->H, s->W); break;
    case 3: be->concat_forward(ctx, s->out, s->x, s->y, s->N, s->C, s->H, s->W); break; /* Ca=C, Cb=H, HW=W */
    default: be->sinusoidal_forward(ctx, s->out, s->x, s->N, s->C); break;
    }
}

static void check_sp(int which, int64_t N, int64_t C, int64_t H, int64_t W) {
    static const char *names[] = {"modulate", "add_channel", "upsample2x", "concat", "sinusoidal"};
    int64_t nx, ny, no;
    switch (which) {
    case 0: nx = N * C * H * W; ny = N * 2 * C; no = nx; break;
    case 1: nx = N * C * H * W; ny = N * C; no = nx; break;
    case 2: nx = N * C * H * W; ny = 0; no = 4 * nx; break;
    case 3: nx = N * C * W; ny = N * H * W; no = nx + ny; break;
    default: nx = N; ny = 0; no = N * C; break;
    }
    SpSt s = {zeros(no), rnd(nx, -2, 2), rnd(ny, -1, 1), N, C, H, W, which};
    float *t = zeros(no);
    sp_fwd(&s);
    /* forward reference */
    for (int64_t i = 0; i < no; i++) {
        double v = 0;
        if (which == 0 || which == 1) {
            int64_t HW = H * W, q = i / HW, n = q / C, c = q % C;
            v = which == 0 ? s.x[i] * (1.0 + s.y[n * 2 * C + c]) + s.y[n * 2 * C + C + c] : s.x[i] + (double)s.y[q];
        } else if (which == 2) {
            int64_t w2 = i % (2 * W), h2 = (i / (2 * W)) % (2 * H), q = i / (4 * H * W);
            v = s.x[(q * H + h2 / 2) * W + w2 / 2];
        } else if (which == 3) {
            int64_t per = (C + H) * W, n = i / per, r = i % per;
            v = r < C * W ? s.x[n * C * W + r] : s.y[n * H * W + r - C * W];
        } else {
            int64_t n = i / C, k = i % C, half = C / 2, kk = k % half;
            double f = pow(1.0 / 10000.0, (double)kk / (double)half), arg = s.x[n] * f;
            v = k < half ? cos(arg) : sin(arg);
        }
        t[i] = (float)v;
    }
    char w2[96];
    snprintf(w2, sizeof w2, "%s forward", names[which]);
    CHECK_CLOSE(s.out, t, no, 1e-6, 1e-5, w2);
    float *R = rnd(no, -1, 1), *px = rnd(nx, -1, 1), *py = rnd(ny, -1, 1);
    float *dx = fdup(px, nx), *dy = fdup(py, ny), *g = zeros(nx > ny ? nx : ny);
    switch (which) {
    case 0: be->modulate_backward(ctx, dx, dy, R, s.x, s.y, N, C, H * W); break;
    case 1: be->add_channel_backward(ctx, dx, dy, R, N, C, H * W); break;
    case 2: be->upsample2x_backward(ctx, dx, R, N, C, H, W); break;
    case 3: be->concat_backward(ctx, dx, dy, R, N, C, H, W); break;
    default: be->sinusoidal_backward(ctx, dx, R, s.x, N, C); break;
    }
    sub(dx, px, nx);
    sub(dy, py, ny);
    Probe pr = {sp_fwd, &s, s.out, R, no};
    float h = which == 4 ? 1e-3f : 1e-2f;
    int64_t step = no > 4096 ? 97 : 1; /* big shapes: a sample of the elements */
    numgrad_every(&pr, s.x, nx, h, g, step, dx);
    snprintf(w2, sizeof w2, "%s dx", names[which]);
    CHECK_CLOSE(dx, g, nx, 2e-3, 2e-3, w2);
    if (ny) {
        numgrad(&pr, s.y, ny, h, g);
        snprintf(w2, sizeof w2, "%s dy", names[which]);
        CHECK_CLOSE(dy, g, ny, 2e-3, 2e-3, w2);
    }
    free(s.out); free(s.x); free(s.y); free(t); free(R); free(px); free(py); free(dx); free(dy); free(g);
}

static void test_conditioning_spatial(void) {
    check_sp(0, 2, 3, 4, 5);
    check_sp(0, 4, 32, 16, 16); /* pool path; finite differences on every element are cheap here */
    check_sp(1, 2, 3, 5, 3);
    check_sp(2, 2, 3, 3, 5);
    check_sp(3, 2, 3, 2, 7); /* concat: Ca 3, Cb 2, HW 7 */
    check_sp(4, 5, 16, 0, 0); /* sinusoidal D 16 */
}

/* ================================== wmse ================================== */

typedef struct {
    float *pred, *target, *w;
    int64_t N, D;
    float loss;
} WSt;
static void wmse_fwd(void *p) {
    WSt *s = p;
    s->loss = be->wmse_forward(ctx, s->pred, s->target, s->w, s->N, s->D);
}

static void test_wmse(void) {
    for (int weighted = 0; weighted < 2; weighted++) {
        int64_t N = 3, D = 11;
        WSt s = {rnd(N * D, -1, 1), rnd(N * D, -1, 1), weighted ? rnd(N, 0.1f, 3) : NULL, N, D, 0};
        wmse_fwd(&s);
        double want = 0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t j = 0; j < D; j++) {
                double e = s.pred[n * D + j] - s.target[n * D + j];
                want += (weighted ? s.w[n] : 1.0) * e * e;
            }
        want /= (double)(N * D);
        CHECK(fabs(s.loss - want) <= 1e-6 * want, "wmse%s: %.9g want %.9g", weighted ? " weighted" : "",
              (double)s.loss, want);
        float one = 1.0f, R = 0.7f;
        Probe pr = {wmse_fwd, &s, &s.loss, &one, 1};
        float *g = zeros(N * D), *p0 = rnd(N * D, -1, 1), *dp = fdup(p0, N * D);
        be->wmse_backward(ctx, dp, R, s.pred, s.target, s.w, N, D);
        sub(dp, p0, N * D);
        numgrad(&pr, s.pred, N * D, 1e-2f, g);
        for (int64_t i = 0; i < N * D; i++) g[i] *= R;
        CHECK_CLOSE(dp, g, N * D, 1e-4, 1e-3, weighted ? "wmse dpred weighted" : "wmse dpred");
        free(s.pred); free(s.target); free(s.w); free(g); free(p0); free(dp);
    }
}

/* ========================= table and context plumbing ========================= */

static void test_table(void) {
    char err[512];
    CHECK(backend_missing(be, err, sizeof err) == 0, "cpu backend misses ops: %s", err);
    const char *ok[] = {"conv2d_forward", "attention_backward", "rng_normal", NULL};
    CHECK(backend_require(be, ok, err, sizeof err) == 0, "require: %s", err);
    const char *bad[] = {"conv2d_forward", "no_such_op", NULL};
    CHECK(backend_require(be, bad, err, sizeof err) == -1 && strstr(err, "no_such_op"), "require bad: %s", err);
    Backend partial = backend_cpu;
    partial.attention_forward = NULL;
    const char *att[] = {"attention_forward", NULL};
    CHECK(backend_require(&partial, att, err, sizeof err) == -1 && strstr(err, "attention_forward"),
          "require missing: %s", err);
    CHECK(backend_missing(&partial, err, sizeof err) == 1 && strstr(err, "attention_forward"), "missing: %s", err);
    Device cpu = {DEVICE_CPU, 0}, gpu = {DEVICE_CUDA, 0};
    CHECK(backend_get(cpu, err, sizeof err) == &backend_cpu, "backend_get cpu");
#ifndef MSD_HAVE_CUDA
    CHECK(backend_get(gpu, err, sizeof err) == NULL && strstr(err, "no CUDA"), "backend_get cuda: %s", err);
#else
    (void)gpu;
#endif
    float *s1 = backend_ctx_scratch(ctx, 100);
    float *s2 = backend_ctx_scratch(ctx, 50);
    CHECK(s1 && s1 == s2, "scratch must not shrink or move for a smaller request");
}

/* Same results with 1 thread and with the pool (partials reduce to the same sums up to rounding). */
static void test_threads_agree(void) {
    BackendCtx *one = backend_ctx_new(be, 1);
    ConvShape s = {6, 8, 9, 9, 12, 3, 1, 1};
    int64_t nin = 6 * 8 * 81, nw = 12 * 8 * 9, nout = 6 * 12 * 81;
    float *in = rnd(nin, -1, 1), *w = rnd(nw, -1, 1), *dout = rnd(nout, -1, 1);
    float *dw1 = zeros(nw), *dw2 = zeros(nw), *o1 = zeros(nout), *o2 = zeros(nout);
    be->conv2d_forward(one, o1, in, w, NULL, &s);
    be->conv2d_forward(ctx, o2, in, w, NULL, &s);
    CHECK_CLOSE(o2, o1, nout, 0, 0, "conv forward 1 thread vs pool (bitwise)");
    be->conv2d_backward(one, NULL, dw1, NULL, dout, in, w, &s);
    be->conv2d_backward(ctx, NULL, dw2, NULL, dout, in, w, &s);
    CHECK_CLOSE(dw2, dw1, nw, 1e-4, 1e-5, "conv dw 1 thread vs pool");
    backend_ctx_destroy(&one);
    CHECK(one == NULL, "ctx_destroy sets NULL");
    free(in); free(w); free(dout); free(dw1); free(dw2); free(o1); free(o2);
}


/* ============================ PyTorch fixtures ============================ */

static StFile fx;

/* fixture tensor "case.name" as float32 (malloc'd), which must have exactly the shape
 * dims[0..ndim) the test computes with; records a failure and returns NULL if it is missing or
 * has another shape (a regenerated fixture of another shape fails here, never skips silently) */
static float *fxt_dims(const char *cas, const char *name, int ndim, const int64_t *dims) {
    char key[128], got[96] = "", want[96] = "";
    snprintf(key, sizeof key, "%s.%s", cas, name);
    const StTensor *t = st_find(&fx, key);
    CHECK(t != NULL, "fixture tensor %s missing", key);
    if (!t) return NULL;
    int same = t->ndim == ndim;
    for (int i = 0; i < ndim && same; i++) same = t->shape[i] == dims[i];
    if (!same) {
        for (int i = 0; i < t->ndim; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        for (int i = 0; i < ndim; i++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", i ? ", " : "", (long long)dims[i]);
    }
    CHECK(same, "fixture tensor %s has shape (%s), the test needs (%s)", key, got, want);
    if (!same) return NULL;
    float *out = malloc((size_t)(t->numel ? t->numel : 1) * sizeof(float));
    st_tensor_to_f32(t, out);
    return out;
}
#define fxt(cas, name, ...) \
    fxt_dims(cas, name, (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__})

static void test_torch_conv(void) {
    const char *cases[] = {"conv3x3", "conv4x4s2", "conv1x1", "conv3x3s2"};
    for (int c = 0; c < 4; c++) {
        float *sh = fxt(cases[c], "shape", 8);
        if (!sh) continue;
        ConvShape s = {(int64_t)sh[0], (int64_t)sh[1], (int64_t)sh[2], (int64_t)sh[3],
                       (int64_t)sh[4], (int64_t)sh[5], (int64_t)sh[6], (int64_t)sh[7]};
        int64_t Ho = (s.H + 2 * s.pad - s.K) / s.stride + 1, Wo = (s.W + 2 * s.pad - s.K) / s.stride + 1;
        int64_t nx = s.N * s.C * s.H * s.W, nw = s.O * s.C * s.K * s.K, nb = s.O, no = s.N * s.O * Ho * Wo;
        /* every tensor has the shape the geometry implies */
        float *x = fxt(cases[c], "x", s.N, s.C, s.H, s.W), *w = fxt(cases[c], "w", s.O, s.C, s.K, s.K);
        float *b = fxt(cases[c], "b", s.O), *want = fxt(cases[c], "out", s.N, s.O, Ho, Wo);
        float *dout = fxt(cases[c], "dout", s.N, s.O, Ho, Wo), *wdx = fxt(cases[c], "dx", s.N, s.C, s.H, s.W);
        float *wdw = fxt(cases[c], "dw", s.O, s.C, s.K, s.K), *wdb = fxt(cases[c], "db", s.O);
        if (x && w && b && want && dout && wdx && wdw && wdb) {
            float *out = zeros(no), *dx = zeros(nx), *dw = zeros(nw), *db = zeros(nb);
            be->conv2d_forward(ctx, out, x, w, b, &s);
            be->conv2d_backward(ctx, dx, dw, db, dout, x, w, &s);
            char what[64];
            snprintf(what, sizeof what, "torch %s out", cases[c]);
            CHECK_CLOSE(out, want, no, 1e-5, 1e-4, what);
            snprintf(what, sizeof what, "torch %s dx", cases[c]);
            CHECK_CLOSE(dx, wdx, nx, 1e-5, 1e-4, what);
            snprintf(what, sizeof what, "torch %s dw", cases[c]);
            CHECK_CLOSE(dw, wdw, nw, 1e-5, 1e-4, what);
            snprintf(what, sizeof what, "torch %s db", cases[c]);
            CHECK_CLOSE(db, wdb, nb, 1e-5, 1e-4, what);
            free(out); free(dx); free(dw); free(db);
        }
        free(sh); free(x); free(w); free(b); free(want); free(dout); free(wdx); free(wdw); free(wdb);
    }
}

static void test_torch_linear_groupnorm_attention(void) {
    int64_t nx, nw, no;
    /* linear: x (3, 5), w (4, 5) */
    nx = 15, nw = 20, no = 12;
    float *x = fxt("linear", "x", 3, 5), *w = fxt("linear", "w", 4, 5), *b = fxt("linear", "b", 4);
    float *want = fxt("linear", "out", 3, 4), *dout = fxt("linear", "dout", 3, 4), *wdx = fxt("linear", "dx", 3, 5);
    float *wdw = fxt("linear", "dw", 4, 5), *wdb = fxt("linear", "db", 4);
    if (x && w && b && want && dout && wdx && wdw && wdb) {
        float *out = zeros(no), *dx = zeros(nx), *dw = zeros(nw), *db = zeros(4);
        be->linear_forward(ctx, out, x, w, b, 3, 5, 4);
        be->linear_backward(ctx, dx, dw, db, dout, x, w, 3, 5, 4);
        CHECK_CLOSE(out, want, no, 1e-5, 1e-4, "torch linear out");
        CHECK_CLOSE(dx, wdx, nx, 1e-5, 1e-4, "torch linear dx");
        CHECK_CLOSE(dw, wdw, nw, 1e-5, 1e-4, "torch linear dw");
        CHECK_CLOSE(db, wdb, 4, 1e-5, 1e-4, "torch linear db");
        free(out); free(dx); free(dw); free(db);
    }
    free(x); free(w); free(b); free(want); free(dout); free(wdx); free(wdw); free(wdb);

    /* groupnorm: x (2, 6, 4, 5), 3 groups, eps 1e-5 */
    nx = 240;
    x = fxt("groupnorm", "x", 2, 6, 4, 5);
    float *g = fxt("groupnorm", "g", 6), *bt = fxt("groupnorm", "b", 6);
    want = fxt("groupnorm", "out", 2, 6, 4, 5);
    dout = fxt("groupnorm", "dout", 2, 6, 4, 5);
    wdx = fxt("groupnorm", "dx", 2, 6, 4, 5);
    float *wdg = fxt("groupnorm", "dg", 6);
    wdb = fxt("groupnorm", "db", 6);
    if (x && g && bt && want && dout && wdx && wdg && wdb) {
        float *out = zeros(nx), *mean = zeros(6), *rstd = zeros(6), *dx = zeros(nx), *dg = zeros(6), *db = zeros(6);
        be->groupnorm_forward(ctx, out, mean, rstd, x, g, bt, 2, 6, 20, 3, 1e-5f);
        be->groupnorm_backward(ctx, dx, dg, db, dout, x, mean, rstd, g, 2, 6, 20, 3);
        CHECK_CLOSE(out, want, nx, 1e-5, 1e-4, "torch groupnorm out");
        CHECK_CLOSE(dx, wdx, nx, 1e-5, 1e-4, "torch groupnorm dx");
        CHECK_CLOSE(dg, wdg, 6, 1e-4, 1e-4, "torch groupnorm dgamma");
        CHECK_CLOSE(db, wdb, 6, 1e-4, 1e-4, "torch groupnorm dbeta");
        free(out); free(mean); free(rstd); free(dx); free(dg); free(db);
    }
    free(x); free(g); free(bt); free(want); free(dout); free(wdx); free(wdg); free(wdb);

    /* attention: qkv (2, 24, 5), C 8, heads 2 */
    nx = 240, no = 80;
    float *qkv = fxt("attention", "qkv", 2, 24, 5);
    want = fxt("attention", "out", 2, 8, 5);
    dout = fxt("attention", "dout", 2, 8, 5);
    float *wdq = fxt("attention", "dqkv", 2, 24, 5);
    if (qkv && want && dout && wdq) {
        float *out = zeros(no), *att = zeros(2 * 2 * 25), *dq = zeros(nx);
        be->attention_forward(ctx, out, att, qkv, 2, 8, 5, 2);
        be->attention_backward(ctx, dq, dout, qkv, att, 2, 8, 5, 2);
        CHECK_CLOSE(out, want, no, 1e-5, 1e-4, "torch attention out");
        CHECK_CLOSE(dq, wdq, nx, 1e-5, 1e-4, "torch attention dqkv");
        free(out); free(att); free(dq);
    }
    free(qkv); free(want); free(dout); free(wdq);
}

static void test_torch_pointwise(void) {
    const char *cases[] = {"silu", "softplus", "upsample", "sinusoidal"};
    /* the shapes the calls below assume: silu (37), softplus (36), upsample x (2, 3, 3, 5) ->
     * (2, 3, 6, 10), sinusoidal t (5) -> (5, 16) */
    const int64_t in_dims[4][4] = {{37}, {36}, {2, 3, 3, 5}, {5}}, out_dims[4][4] = {{37}, {36}, {2, 3, 6, 10}, {5, 16}};
    const int in_nd[4] = {1, 1, 4, 1}, out_nd[4] = {1, 1, 4, 2};
    for (int c = 0; c < 4; c++) {
        const char *in_name = c == 3 ? "t" : "x", *d_name = c == 3 ? "dt" : "dx";
        int64_t nx = 1, no = 1;
        for (int i = 0; i < in_nd[c]; i++) nx *= in_dims[c][i];
        for (int i = 0; i < out_nd[c]; i++) no *= out_dims[c][i];
        float *x = fxt_dims(cases[c], in_name, in_nd[c], in_dims[c]), *want = fxt_dims(cases[c], "out", out_nd[c], out_dims[c]);
        float *dout = fxt_dims(cases[c], "dout", out_nd[c], out_dims[c]), *wdx = fxt_dims(cases[c], d_name, in_nd[c], in_dims[c]);
        if (x && want && dout && wdx) {
            float *out = zeros(no), *dx = zeros(nx);
            switch (c) {
            case 0: be->silu_forward(ctx, out, x, nx); be->silu_backward(ctx, dx, dout, x, nx); break;
            case 1: be->softplus_forward(ctx, out, x, nx); be->softplus_backward(ctx, dx, dout, x, nx); break;
            case 2: /* (2, 3, 3, 5) */
                be->upsample2x_forward(ctx, out, x, 2, 3, 3, 5);
                be->upsample2x_backward(ctx, dx, dout, 2, 3, 3, 5);
                break;
            default: /* t (5), D 16 */
                be->sinusoidal_forward(ctx, out, x, nx, 16);
                be->sinusoidal_backward(ctx, dx, dout, x, nx, 16);
                break;
            }
            char what[64];
            snprintf(what, sizeof what, "torch %s out", cases[c]);
            CHECK_CLOSE(out, want, no, 1e-6, 1e-5, what);
            snprintf(what, sizeof what, "torch %s %s", cases[c], d_name);
            CHECK_CLOSE(dx, wdx, nx, 1e-5, 1e-4, what);
            free(out); free(dx);
        }
        free(x); free(want); free(dout); free(wdx);
    }
}

/* The sentence encoder's forward-only ops (backend.h, "token sequences") against PyTorch:
 * GELU (erf form), LayerNorm as groupnorm_forward (N = tokens, C = D, HW = 1, G = 1, eps
 * 1e-12 as BERT, one row of offset 20 and spread 0.3), row gather, masked token attention
 * (3 samples, 7 tokens, 0/3/5 padded keys), masked mean. Tolerance: atol 1e-5, rtol 1e-4
 * (1e-6 / 1e-5 for GELU and the gather, which is exact). */
static void test_torch_encoder_ops(void) {
    float *x = fxt("gelu", "x", 45), *want = fxt("gelu", "out", 45);
    if (x && want) {
        float out[45];
        be->gelu_forward(ctx, out, x, 45);
        CHECK_CLOSE(out, want, 45, 1e-6, 1e-5, "torch gelu out");
    }
    free(x); free(want);

    x = fxt("layernorm", "x", 5, 24), want = fxt("layernorm", "out", 5, 24);
    float *g = fxt("layernorm", "g", 24), *b = fxt("layernorm", "b", 24);
    if (x && want && g && b) {
        float out[120], mean[5], rstd[5];
        be->groupnorm_forward(ctx, out, mean, rstd, x, g, b, 5, 24, 1, 1, 1e-12f);
        CHECK_CLOSE(out, want, 120, 1e-5, 1e-4, "torch layernorm (groupnorm G=1 HW=1) out");
    }
    free(x); free(want); free(g); free(b);

    float *table = fxt("embedding", "table", 11, 6), *fid = fxt("embedding", "ids", 5);
    want = fxt("embedding", "out", 5, 6);
    if (table && fid && want) {
        int32_t ids[5];
        float out[30];
        for (int i = 0; i < 5; i++) ids[i] = (int32_t)fid[i];
        be->embedding_forward(ctx, out, ids, table, 5, 11, 6);
        CHECK_CLOSE(out, want, 30, 0.0, 0.0, "torch embedding out");
    }
    free(table); free(fid); free(want);

    float *qkv = fxt("tokattn", "qkv", 3, 7, 36), *mask = fxt("tokattn", "mask", 3, 7);
    want = fxt("tokattn", "out", 3, 7, 12);
    if (qkv && mask && want) {
        float out[252];
        be->token_attention_forward(ctx, out, qkv, mask, 3, 7, 12, 3);
        CHECK_CLOSE(out, want, 252, 1e-5, 1e-4, "torch token attention out");
    }
    free(qkv); free(want);

    x = fxt("maskmean", "x", 3, 7, 10), want = fxt("maskmean", "out", 3, 10);
    if (x && mask && want) {
        float out[30];
        be->masked_mean_forward(ctx, out, x, mask, 3, 7, 10);
        CHECK_CLOSE(out, want, 30, 1e-6, 1e-5, "torch masked mean out");
    }
    free(x); free(want); free(mask);
}

/* Token attention at a size that goes through the thread pool (4 samples, 40 tokens, C 48, 4
 * heads, ragged padding, mask NULL for the last call) against a double loop, and each sample
 * alone must give the batched rows: atol 1e-5, rtol 1e-4. */
static void test_token_attention_big(void) {
    const int64_t N = 4, L = 40, C = 48, H = 4, d = C / H, lens[4] = {40, 17, 1, 29};
    float *qkv = zeros(N * L * 3 * C), *mask = zeros(N * L), *out = zeros(N * L * C), *one = zeros(L * C);
    float *ref = zeros(N * L * C);
    for (int64_t i = 0; i < N * L * 3 * C; i++) qkv[i] = frand(-3.0f, 3.0f);
    for (int64_t n = 0; n < N; n++)
        for (int64_t l = 0; l < lens[n]; l++) mask[n * L + l] = 1.0f;
    for (int pass = 0; pass < 2; pass++) {
        const float *m = pass ? NULL : mask;
        for (int64_t n = 0; n < N; n++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t i = 0; i < L; i++) {
                    double s[40], mx = -1e300, sum = 0;
                    for (int64_t j = 0; j < L; j++) {
                        double acc = 0;
                        for (int64_t c = 0; c < d; c++)
                            acc += (double)qkv[(n * L + i) * 3 * C + h * d + c] * qkv[(n * L + j) * 3 * C + C + h * d + c];
                        s[j] = acc / sqrt((double)d);
                        if (!m || m[n * L + j] > 0) mx = fmax(mx, s[j]);
                    }
                    for (int64_t j = 0; j < L; j++) sum += s[j] = (!m || m[n * L + j] > 0) ? exp(s[j] - mx) : 0.0;
                    for (int64_t c = 0; c < d; c++) {
                        double acc = 0;
                        for (int64_t j = 0; j < L; j++) acc += s[j] / sum * qkv[(n * L + j) * 3 * C + 2 * C + h * d + c];
                        ref[(n * L + i) * C + h * d + c] = (float)acc;
                    }
                }
        be->token_attention_forward(ctx, out, qkv, m, N, L, C, H);
        CHECK_CLOSE(out, ref, N * L * C, 1e-5, 1e-4, pass ? "token attention, no mask, vs double loop"
                                                          : "token attention, ragged mask, vs double loop");
    }
    be->token_attention_forward(ctx, out, qkv, mask, N, L, C, H);
    for (int64_t n = 0; n < N; n++) {
        be->token_attention_forward(ctx, one, qkv + n * L * 3 * C, mask + n * L, 1, L, C, H);
        CHECK_CLOSE(one, out + n * L * C, L * C, 1e-6, 1e-6, "token attention: one sample alone = its batched rows");
    }
    free(qkv); free(mask); free(out); free(one); free(ref);
}

/* ops_expf (cpu_ops.h): within 3 ulp of exp in double over [-87, 88], clamped outside, NaN
 * through; its 16-lane form gives the same bits (the SiLU loops mix the two at their tails). */
static void test_expf(void) {
    double worst = 0;
    float wx = 0;
    int n = 0, diff16 = 0;
#if defined(__AVX512F__)
    float xs[16];
#endif
    for (float x = -87.0f; x <= 88.0f; x += 0.0137f) {
        float e = ops_expf(x);
        double ref = exp((double)x), ulp = ldexp(1.0, ilogb(ref) - 23);
        double err = fabs((double)e - ref) / ulp;
        if (err > worst) {
            worst = err;
            wx = x;
        }
        n++;
#if defined(__AVX512F__)
        xs[(n - 1) % 16] = x;
        if (n % 16 == 0) {
            float v[16];
            _mm512_storeu_ps(v, ops_expf16(_mm512_loadu_ps(xs)));
            for (int i = 0; i < 16; i++) diff16 += memcmp(&v[i], &(float){ops_expf(xs[i])}, sizeof(float)) != 0;
        }
#endif
    }
    printf("  ops_expf: %d inputs, worst %.2f ulp at %g; 16-lane form differs in %d\n", n, worst, (double)wx, diff16);
    CHECK(worst <= 3.0, "ops_expf error %.2f ulp at %g", worst, (double)wx);
    CHECK(diff16 == 0, "ops_expf16 and ops_expf differ in %d of %d", diff16, n);
    CHECK(ops_expf(-200.0f) == ops_expf(-87.0f) && ops_expf(200.0f) == ops_expf(88.0f) && isnan(ops_expf(NAN)),
          "clamps and NaN");
}

/* ================================ fused norm_act ================================ */

/* The fused GroupNorm -> [modulate] -> SiLU ops against the separate ops they replace: every
 * output and gradient bit-identical (same float operations in the same order), with and
 * without the modulation, with gamma/beta absent, with HW not a multiple of 16 (the vector
 * loops' scalar tails), on one and several threads (the pool path). Inputs include values
 * that push SiLU's exponential into its clamps. */
static void check_norm_act(int64_t N, int64_t C, int64_t HW, int64_t G, int mod, int affine, int threads) {
    BackendCtx *c = backend_ctx_new(be, threads);
    int64_t n = N * C * HW;
    float *x = rnd(n, -3, 3), *gm = rnd(C, 0.5f, 1.5f), *bt = rnd(C, -0.5f, 0.5f), *ss = rnd(N * 2 * C, -1, 1);
    float *da = rnd(n, -1, 1);
    x[0] = 200.0f; /* silu's exp clamp */
    const float *g = affine ? gm : NULL, *b = affine ? bt : NULL, *s = mod ? ss : NULL;
    /* separate ops */
    float *tn = calloc((size_t)n, 4), *tm = calloc((size_t)n, 4), *a1 = calloc((size_t)n, 4);
    float *m1 = calloc((size_t)(N * G), 4), *r1 = calloc((size_t)(N * G), 4);
    be->groupnorm_forward(c, tn, m1, r1, x, g, b, N, C, HW, G, 1e-5f);
    if (mod) be->modulate_forward(c, tm, tn, s, N, C, HW);
    be->silu_forward(c, a1, mod ? tm : tn, n);
    float *ddm = calloc((size_t)n, 4), *ddn = calloc((size_t)n, 4), *dx1 = rnd(n, -1, 1);
    float *dg1 = rnd(C, -1, 1), *db1 = rnd(C, -1, 1), *dss1 = rnd(N * 2 * C, -1, 1);
    float *dx2 = malloc((size_t)n * 4), *dg2 = malloc((size_t)C * 4), *db2 = malloc((size_t)C * 4);
    float *dss2 = malloc((size_t)(N * 2 * C) * 4);
    memcpy(dx2, dx1, (size_t)n * 4); /* both add into the same starting values */
    memcpy(dg2, dg1, (size_t)C * 4);
    memcpy(db2, db1, (size_t)C * 4);
    memcpy(dss2, dss1, (size_t)(N * 2 * C) * 4);
    be->silu_backward(c, ddm, da, mod ? tm : tn, n);
    if (mod) be->modulate_backward(c, ddn, dss1, ddm, tn, s, N, C, HW);
    be->groupnorm_backward(c, dx1, affine ? dg1 : NULL, affine ? db1 : NULL, mod ? ddn : ddm, x, m1, r1, g, N, C, HW,
                           G);
    /* fused */
    float *a2 = calloc((size_t)n, 4), *m2 = calloc((size_t)(N * G), 4), *r2 = calloc((size_t)(N * G), 4);
    be->norm_act_forward(c, a2, m2, r2, x, g, b, s, N, C, HW, G, 1e-5f);
    be->norm_act_backward(c, dx2, affine ? dg2 : NULL, affine ? db2 : NULL, mod ? dss2 : NULL, da, x, m2, r2, g, b, s,
                          N, C, HW, G);
    char what[160];
    snprintf(what, sizeof what, "N%lld C%lld HW%lld G%lld mod%d affine%d threads%d", (long long)N, (long long)C,
             (long long)HW, (long long)G, mod, affine, threads);
    CHECK(!memcmp(a1, a2, (size_t)n * 4), "%s: activation differs", what);
    CHECK(!memcmp(m1, m2, (size_t)(N * G) * 4) && !memcmp(r1, r2, (size_t)(N * G) * 4), "%s: mean/rstd differ", what);
    CHECK(!memcmp(dx1, dx2, (size_t)n * 4), "%s: din differs", what);
    CHECK(!memcmp(dg1, dg2, (size_t)C * 4) && !memcmp(db1, db2, (size_t)C * 4), "%s: dgamma/dbeta differ", what);
    CHECK(!memcmp(dss1, dss2, (size_t)(N * 2 * C) * 4), "%s: dss differs", what);
    /* and the result is not trivial: the activation has both signs, the gradient is non-zero */
    int pos = 0, neg = 0, nz = 0;
    for (int64_t i = 0; i < n; i++) {
        pos += a2[i] > 0;
        neg += a2[i] < 0;
        nz += dx2[i] != dx1[i] || dx2[i] != 0.0f;
    }
    CHECK(pos > 0 && neg > 0 && nz > 0, "%s: degenerate test data", what);
    free(x); free(gm); free(bt); free(ss); free(da); free(tn); free(tm); free(a1); free(m1); free(r1);
    free(ddm); free(ddn); free(dx1); free(dg1); free(db1); free(dss1); free(dx2); free(dg2); free(db2); free(dss2);
    free(a2); free(m2); free(r2);
    backend_ctx_destroy(&c);
}

static void test_norm_act(void) {
    REQUIRE(be->norm_act_forward && be->norm_act_backward, "the CPU table has the fused ops");
    check_norm_act(2, 6, 5, 3, 1, 1, 1);
    check_norm_act(3, 4, 7, 1, 0, 1, 2);
    check_norm_act(2, 4, 19, 4, 1, 0, 2);
    check_norm_act(4, 32, 196, 8, 1, 1, 2);  /* pool path, 196 = 12 vectors + 4 */
    check_norm_act(8, 64, 49, 32, 0, 1, 2);  /* pool path, 2 channels per group */
}

/* Every op of the list called by the tests above (op_count.h); those tested by another
 * program are named here. */
static void test_every_op_covered(void) {
    static const char *const elsewhere[][2] = {{"adamw_update", "test_optim.c"},
                                               {"ema_update", "test_optim.c"},
                                               {"rng_normal", "test_rng.c"},
                                               {"rng_uniform", "test_rng.c"},
                                               {NULL, NULL}};
    opc_check(elsewhere);
}

/* 3x3 convolutions by this build's default path (0) or the other one (1): machine.c */
static int conv_gemm_default;
static void conv_path(int other) {
    cpu_conv_set_gemm(other ? !conv_gemm_default : conv_gemm_default);
    printf("  3x3 convolutions by %s%s\n", cpu_conv_gemm() ? "im2col + OpenBLAS" : "the own kernels",
           other ? " (the other path)" : " (this build's default)");
}

int main(int argc, char **argv) {
    static Backend counted;
    counted = opc_wrap(&backend_cpu);
    be = &counted;
    ctx = backend_ctx_new(be, 2);
    conv_gemm_default = cpu_conv_gemm();
    conv_path(0);
    TEST_RUN(test_table);
    TEST_RUN(test_conv_grad_small);
    TEST_RUN(test_conv_big);
    TEST_RUN(test_linear);
    TEST_RUN(test_groupnorm);
    TEST_RUN(test_attention);
    TEST_RUN(test_silu_softplus_mul);
    TEST_RUN(test_arith);
    TEST_RUN(test_conditioning_spatial);
    TEST_RUN(test_wmse);
    TEST_RUN(test_threads_agree);
    (void)argc;
    check_find_fixtures(argv[0]);
    char err[512];
    if (st_read(&fx, check_fixture("ops_ref.safetensors"), err, sizeof err) != 0) {
        printf("  cannot read the PyTorch fixture: %s\n", err);
        check_failed_++;
    } else {
        TEST_RUN(test_torch_conv);
        /* the other 3x3 path (own kernels or im2col + OpenBLAS: machine.c) on the same fixture */
        conv_path(1);
        TEST_RUN(test_torch_conv);
        conv_path(0);
        TEST_RUN(test_torch_linear_groupnorm_attention);
        TEST_RUN(test_torch_pointwise);
        TEST_RUN(test_torch_encoder_ops);
        st_free(&fx);
    }
    TEST_RUN(test_norm_act); /* last: their random inputs do not shift the other tests' */
    TEST_RUN(test_winograd);
    TEST_RUN(test_expf);
    TEST_RUN(test_token_attention_big);
    /* the convolution tests again on the other 3x3 path (the default follows the build) */
    conv_path(1);
    TEST_RUN(test_conv_grad_small);
    TEST_RUN(test_conv_big);
    TEST_RUN(test_threads_agree);
    conv_path(0);
    TEST_RUN(test_every_op_covered);
    backend_ctx_destroy(&ctx);
    return TEST_END();
}
