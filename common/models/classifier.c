/* classifier.c: see classifier.h. Every activation of a forward is saved (they are small at the
 * batch sizes used); backward zeroes each gradient buffer before the ops add into it. */
#include "classifier.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edm.h"
#include "log.h"
#include "safetensors.h"

#define CLS_NCONV 4
#define CLS_GROUPS 8

static const int conv_cin[CLS_NCONV] = {1, 32, 32, 64};
static const int conv_cout[CLS_NCONV] = {32, 32, 64, 64};
static const int conv_stride[CLS_NCONV] = {1, 2, 2, 2};

struct Classifier {
    const Backend *be;
    BackendCtx *ctx;
    ParamSet ps;
    int conv_w[CLS_NCONV], conv_b[CLS_NCONV], gn_w[CLS_NCONV], gn_b[CLS_NCONV], fc0_w, fc0_b, fc1_w, fc1_b;
    ConvShape shape[CLS_NCONV];      /* N filled per call */
    int64_t out_hw[CLS_NCONV];       /* Ho * Wo of each conv */
    int64_t cap, last_n;
    float *slab;
    /* activations (cap, ...) */
    float *z[CLS_NCONV], *g[CLS_NCONV], *a[CLS_NCONV], *mean[CLS_NCONV], *rstd[CLS_NCONV];
    float *f0, *feat;                /* fc0 pre- and post-SiLU (cap, 128) */
    /* gradient buffers: largest activation size, two for ping-pong */
    float *gbuf[2], *dfeat, *df0;
    float *xin, *logits;             /* classifier_run's input and output (cap, 784), (cap, 10) */
    const float *x_last;
};

Classifier *classifier_new(const Backend *be, BackendCtx *ctx) {
    Classifier *c = msd_calloc(1, sizeof *c);
    c->be = be;
    c->ctx = ctx;
    params_init(&c->ps);
    char n[64];
    int64_t H = CLS_IN_H, W = CLS_IN_W;
    for (int i = 0; i < CLS_NCONV; i++) {
        int64_t ws[4] = {conv_cout[i], conv_cin[i], 3, 3}, bs[1] = {conv_cout[i]};
        snprintf(n, sizeof n, "conv%d.weight", i);
        c->conv_w[i] = params_add(&c->ps, n, 4, ws);
        snprintf(n, sizeof n, "conv%d.bias", i);
        c->conv_b[i] = params_add(&c->ps, n, 1, bs);
        snprintf(n, sizeof n, "norm%d.weight", i);
        c->gn_w[i] = params_add(&c->ps, n, 1, bs);
        snprintf(n, sizeof n, "norm%d.bias", i);
        c->gn_b[i] = params_add(&c->ps, n, 1, bs);
        ConvShape s = {0, conv_cin[i], H, W, conv_cout[i], 3, conv_stride[i], 1};
        c->shape[i] = s;
        H = conv_out_h(&s);
        W = conv_out_w(&s);
        c->out_hw[i] = H * W;
    }
    int64_t flat = conv_cout[CLS_NCONV - 1] * c->out_hw[CLS_NCONV - 1];
    MSD_CHECK(flat == 1024);
    int64_t f0s[2] = {CLS_FEATURES, flat}, f0b[1] = {CLS_FEATURES};
    int64_t f1s[2] = {CLS_CLASSES, CLS_FEATURES}, f1b[1] = {CLS_CLASSES};
    c->fc0_w = params_add(&c->ps, "fc0.weight", 2, f0s);
    c->fc0_b = params_add(&c->ps, "fc0.bias", 1, f0b);
    c->fc1_w = params_add(&c->ps, "fc1.weight", 2, f1s);
    c->fc1_b = params_add(&c->ps, "fc1.bias", 1, f1b);
    params_alloc(&c->ps, be, ctx);
    return c;
}

void classifier_destroy(Classifier **pc) {
    if (!pc || !*pc) return;
    Classifier *c = *pc;
    if (c->slab) c->be->free(c->ctx, c->slab);
    params_free(&c->ps);
    free(c);
    *pc = NULL;
}

ParamSet *classifier_params(Classifier *c) { return &c->ps; }

void classifier_init(Classifier *c, uint64_t seed) {
    for (int i = 0; i < CLS_NCONV; i++) {
        edm_param_default(&c->ps, c->conv_w[i], c->conv_b[i], conv_cin[i] * 9, seed);
        edm_param_fill(&c->ps, c->gn_w[i], 1.0f);
        edm_param_fill(&c->ps, c->gn_b[i], 0.0f);
    }
    edm_param_default(&c->ps, c->fc0_w, c->fc0_b, 1024, seed);
    edm_param_default(&c->ps, c->fc1_w, c->fc1_b, CLS_FEATURES, seed);
}

int classifier_load(Classifier *c, const char *path, char *err, size_t errlen) {
    return st_load_params(path, &c->ps, "", 0, err, errlen);
}

static void classifier_carve(Classifier *c, EdmArena *ar, int64_t cap) {
    int64_t biggest = CLS_FEATURES;
    for (int i = 0; i < CLS_NCONV; i++) {
        int64_t n = cap * conv_cout[i] * c->out_hw[i];
        c->z[i] = edm_arena_take(ar, n);
        c->g[i] = edm_arena_take(ar, n);
        c->a[i] = edm_arena_take(ar, n);
        c->mean[i] = edm_arena_take(ar, cap * CLS_GROUPS);
        c->rstd[i] = edm_arena_take(ar, cap * CLS_GROUPS);
        if (conv_cout[i] * c->out_hw[i] > biggest) biggest = conv_cout[i] * c->out_hw[i];
    }
    c->f0 = edm_arena_take(ar, cap * CLS_FEATURES);
    c->feat = edm_arena_take(ar, cap * CLS_FEATURES);
    c->gbuf[0] = edm_arena_take(ar, cap * biggest);
    c->gbuf[1] = edm_arena_take(ar, cap * biggest);
    c->dfeat = edm_arena_take(ar, cap * CLS_FEATURES);
    c->df0 = edm_arena_take(ar, cap * CLS_FEATURES);
    c->xin = edm_arena_take(ar, cap * CLS_IN_H * CLS_IN_W);
    c->logits = edm_arena_take(ar, cap * CLS_CLASSES);
}

int64_t classifier_alloc_batch(Classifier *c, int64_t N) {
    MSD_CHECK(N > 0);
    if (c->slab) c->be->free(c->ctx, c->slab);
    EdmArena ar = {NULL, 0};
    classifier_carve(c, &ar, N);
    int64_t total = ar.used;
    c->slab = c->be->alloc(c->ctx, total);
    ar.base = c->slab;
    ar.used = 0;
    classifier_carve(c, &ar, N);
    c->cap = N;
    return total * (int64_t)sizeof(float);
}

#define PD(i) params_data(&c->ps, (i))
#define PG(i) params_grad(&c->ps, (i))

void classifier_forward(Classifier *c, float *logits, const float *x, int64_t N) {
    MSD_CHECK(c->slab && N > 0 && N <= c->cap);
    const Backend *be = c->be;
    BackendCtx *ctx = c->ctx;
    c->x_last = x;
    c->last_n = N;
    const float *in = x;
    for (int i = 0; i < CLS_NCONV; i++) {
        ConvShape s = c->shape[i];
        s.N = N;
        be->conv2d_forward(ctx, c->z[i], in, PD(c->conv_w[i]), PD(c->conv_b[i]), &s);
        be->groupnorm_forward(ctx, c->g[i], c->mean[i], c->rstd[i], c->z[i], PD(c->gn_w[i]), PD(c->gn_b[i]), N,
                              conv_cout[i], c->out_hw[i], CLS_GROUPS, 1e-5f);
        be->silu_forward(ctx, c->a[i], c->g[i], N * conv_cout[i] * c->out_hw[i]);
        in = c->a[i];
    }
    be->linear_forward(ctx, c->f0, in, PD(c->fc0_w), PD(c->fc0_b), N, 1024, CLS_FEATURES);
    be->silu_forward(ctx, c->feat, c->f0, N * CLS_FEATURES);
    be->linear_forward(ctx, logits, c->feat, PD(c->fc1_w), PD(c->fc1_b), N, CLS_FEATURES, CLS_CLASSES);
}


void classifier_backward(Classifier *c, const float *dlogits, int64_t N) {
    MSD_CHECK(c->slab && N == c->last_n);
    const Backend *be = c->be;
    BackendCtx *ctx = c->ctx;
    const int L = CLS_NCONV - 1;
    be->fill(ctx, c->dfeat, 0.0f, N * CLS_FEATURES);
    be->linear_backward(ctx, c->dfeat, PG(c->fc1_w), PG(c->fc1_b), dlogits, c->feat, PD(c->fc1_w), N, CLS_FEATURES,
                        CLS_CLASSES);
    be->fill(ctx, c->df0, 0.0f, N * CLS_FEATURES);
    be->silu_backward(ctx, c->df0, c->dfeat, c->f0, N * CLS_FEATURES);
    float *da = c->gbuf[0], *dtmp = c->gbuf[1];
    int64_t na = N * conv_cout[L] * c->out_hw[L];
    be->fill(ctx, da, 0.0f, na);
    be->linear_backward(ctx, da, PG(c->fc0_w), PG(c->fc0_b), c->df0, c->a[L], PD(c->fc0_w), N, 1024, CLS_FEATURES);
    for (int i = L; i >= 0; i--) {
        int64_t n = N * conv_cout[i] * c->out_hw[i];
        /* da (gradient at a[i]) -> dg in dtmp -> dz back in da's buffer -> din in dtmp */
        be->fill(ctx, dtmp, 0.0f, n);
        be->silu_backward(ctx, dtmp, da, c->g[i], n);
        be->fill(ctx, da, 0.0f, n);
        be->groupnorm_backward(ctx, da, PG(c->gn_w[i]), PG(c->gn_b[i]), dtmp, c->z[i], c->mean[i], c->rstd[i],
                               PD(c->gn_w[i]), N, conv_cout[i], c->out_hw[i], CLS_GROUPS);
        ConvShape s = c->shape[i];
        s.N = N;
        float *din = NULL;
        if (i > 0) {
            din = dtmp;
            be->fill(ctx, din, 0.0f, N * conv_cin[i] * c->out_hw[i - 1]);
        }
        be->conv2d_backward(ctx, din, PG(c->conv_w[i]), PG(c->conv_b[i]), da, i > 0 ? c->a[i - 1] : c->x_last,
                            PD(c->conv_w[i]), &s);
        float *t = da;
        da = dtmp;
        dtmp = t;
    }
}

double classifier_xent(const float *logits, const int32_t *labels, int64_t N, int K, float *dlogits,
                       int64_t *correct) {
    double loss = 0;
    int64_t ok = 0;
    for (int64_t n = 0; n < N; n++) {
        const float *l = logits + n * K;
        MSD_CHECK(labels[n] >= 0 && labels[n] < K);
        int arg = 0;
        double mx = l[0];
        for (int k = 1; k < K; k++)
            if (l[k] > l[arg]) arg = k;
        mx = l[arg];
        double z = 0;
        for (int k = 0; k < K; k++) z += exp((double)l[k] - mx);
        double lse = mx + log(z);
        loss += lse - l[labels[n]];
        ok += arg == labels[n];
        if (dlogits)
            for (int k = 0; k < K; k++)
                dlogits[n * K + k] = (float)((exp((double)l[k] - lse) - (k == labels[n])) / (double)N);
    }
    if (correct) *correct = ok;
    return loss / (double)N;
}

void classifier_run(Classifier *c, const float *x, int64_t n, float *features, int32_t *pred) {
    MSD_CHECK(c->slab);
    const Backend *be = c->be;
    const int64_t D = CLS_IN_H * CLS_IN_W;
    float *hl = msd_malloc(sizeof(float) * (size_t)c->cap * CLS_CLASSES);
    for (int64_t b = 0; b < n; b += c->cap) {
        int64_t m = n - b < c->cap ? n - b : c->cap;
        be->upload(c->ctx, c->xin, x + b * D, m * D);
        classifier_forward(c, c->logits, c->xin, m);
        if (features) be->download(c->ctx, features + b * CLS_FEATURES, c->feat, m * CLS_FEATURES);
        if (pred) {
            be->download(c->ctx, hl, c->logits, m * CLS_CLASSES);
            for (int64_t i = 0; i < m; i++) {
                int arg = 0;
                for (int k = 1; k < CLS_CLASSES; k++)
                    if (hl[i * CLS_CLASSES + k] > hl[i * CLS_CLASSES + arg]) arg = k;
                pred[b + i] = arg;
            }
        }
    }
    free(hl);
}
