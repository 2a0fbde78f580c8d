/* bench_ops.c: microbenchmark of the CPU backend's main ops at the fmnist-s UNet shapes
 * (batch 32: 28x28 with 32 channels, 14x14 and 7x7 with 64, attention over L = 49).
 * Prints one JSON line per measurement: {"bench":"ops","metric":...,"value":ms,"unit":"ms"},
 * the median of several timed runs after warm-up.
 *
 * Usage: bench_ops [--threads T] [--blas-threads B] [--reps R] [--only PREFIX] [--stat median|min]
 *   --threads: chunks per parallel_for (default: all CPUs); --blas-threads: let OpenBLAS use B
 *   threads itself (default 1, what the backend uses; for comparing threading schemes). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "blas.h"
#include "log.h"
#include "bench.h"

static const Backend *be;
static BackendCtx *ctx;
static int reps = 9;

typedef void (*BenchFn)(void *arg);

static int use_min;       /* --stat min: the fastest run instead of the median (steadier on a busy VM) */
static const char *only; /* --only PREFIX: just the metrics whose name starts with it */

static void bench(const char *metric, BenchFn fn, void *arg) {
    double t[64];
    if (only && strncmp(metric, only, strlen(only))) return;
    if (reps > 64) reps = 64;
    fn(arg);
    fn(arg);
    for (int r = 0; r < reps; r++) {
        double t0 = msd_now();
        fn(arg);
        t[r] = (msd_now() - t0) * 1e3;
    }
    qsort(t, (size_t)reps, sizeof t[0], bench_cmp_double);
    printf("{\"bench\":\"ops\",\"metric\":\"%s\",\"value\":%.4f,\"unit\":\"ms\"}\n", metric,
           use_min ? t[0] : t[reps / 2]);
    fflush(stdout);
}

static float *buf(int64_t n) {
    float *p = be->alloc(ctx, n);
    for (int64_t i = 0; i < n; i++) p[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    return p;
}

typedef struct {
    ConvShape s;
    float *in, *w, *b, *out, *din, *dw, *db;
} ConvB;
static void conv_f(void *p) {
    ConvB *c = p;
    be->conv2d_forward(ctx, c->out, c->in, c->w, c->b, &c->s);
}
static void conv_b(void *p) {
    ConvB *c = p;
    be->conv2d_backward(ctx, c->din, c->dw, c->db, c->out, c->in, c->w, &c->s);
}
static void conv_bdata(void *p) {
    ConvB *c = p;
    be->conv2d_backward(ctx, c->din, NULL, NULL, c->out, c->in, c->w, &c->s);
}
static void conv_bweight(void *p) {
    ConvB *c = p;
    be->conv2d_backward(ctx, NULL, c->dw, c->db, c->out, c->in, c->w, &c->s);
}
static void bench_conv(const char *name, ConvShape s) {
    ConvB c = {.s = s};
    int64_t Ho = conv_out_h(&s), Wo = conv_out_w(&s);
    c.in = buf(s.N * s.C * s.H * s.W);
    c.w = buf(s.O * s.C * s.K * s.K);
    c.b = buf(s.O);
    c.out = buf(s.N * s.O * Ho * Wo);
    c.din = buf(s.N * s.C * s.H * s.W);
    c.dw = buf(s.O * s.C * s.K * s.K);
    c.db = buf(s.O);
    char m[128];
    snprintf(m, sizeof m, "%s_fwd", name);
    bench(m, conv_f, &c);
    snprintf(m, sizeof m, "%s_bwd", name);
    bench(m, conv_b, &c);
    snprintf(m, sizeof m, "%s_bwd_data", name);
    bench(m, conv_bdata, &c);
    snprintf(m, sizeof m, "%s_bwd_weight", name);
    bench(m, conv_bweight, &c);
    be->free(ctx, c.in); be->free(ctx, c.w); be->free(ctx, c.b); be->free(ctx, c.out);
    be->free(ctx, c.din); be->free(ctx, c.dw); be->free(ctx, c.db);
}

typedef struct {
    float *qkv, *att, *out, *dqkv;
    int64_t N, C, L, heads;
} AttB;
static void att_f(void *p) {
    AttB *a = p;
    be->attention_forward(ctx, a->out, a->att, a->qkv, a->N, a->C, a->L, a->heads);
}
static void att_b(void *p) {
    AttB *a = p;
    be->attention_backward(ctx, a->dqkv, a->out, a->qkv, a->att, a->N, a->C, a->L, a->heads);
}

typedef struct {
    float *in, *out, *mean, *rstd, *g, *b, *din, *dg, *db;
    int64_t N, C, HW, G;
} GnB;
static void gn_f(void *p) {
    GnB *a = p;
    be->groupnorm_forward(ctx, a->out, a->mean, a->rstd, a->in, a->g, a->b, a->N, a->C, a->HW, a->G, 1e-5f);
}
static void gn_b(void *p) {
    GnB *a = p;
    be->groupnorm_backward(ctx, a->din, a->dg, a->db, a->out, a->in, a->mean, a->rstd, a->g, a->N, a->C, a->HW,
                           a->G);
}
typedef struct {
    float *in, *out, *din;
    int64_t n;
} SiB;
static void silu_f(void *p) {
    SiB *a = p;
    be->silu_forward(ctx, a->out, a->in, a->n);
}
static void silu_b(void *p) {
    SiB *a = p;
    be->silu_backward(ctx, a->din, a->out, a->in, a->n);
}

typedef struct {
    float *x, *a, *mean, *rstd, *g, *b, *ss, *da, *dx, *dg, *db, *dss;
    int64_t N, C, HW, G;
} NaB;
static void na_f(void *p) {
    NaB *a = p;
    be->norm_act_forward(ctx, a->a, a->mean, a->rstd, a->x, a->g, a->b, a->ss, a->N, a->C, a->HW, a->G, 1e-5f);
}
static void na_b(void *p) {
    NaB *a = p;
    be->norm_act_backward(ctx, a->dx, a->dg, a->db, a->dss, a->da, a->x, a->mean, a->rstd, a->g, a->b, a->ss, a->N,
                          a->C, a->HW, a->G);
}

int main(int argc, char **argv) {
    int threads = 0, blas_threads = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--blas-threads")) blas_threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--only")) only = argv[i + 1];
        else if (!strcmp(argv[i], "--stat") && !strcmp(argv[i + 1], "min")) use_min = 1;
        else if (!strcmp(argv[i], "--stat") && !strcmp(argv[i + 1], "median")) use_min = 0;
        else {
            fprintf(stderr, "usage: %s [--threads T] [--blas-threads B] [--reps R] [--only PREFIX] [--stat median|min]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    be = &backend_cpu;
    ctx = backend_ctx_new(be, threads);
    float *warm = be->alloc(ctx, 1); /* the first alloc makes OpenBLAS single-threaded ... */
    be->free(ctx, warm);
    if (blas_threads != 1) openblas_set_num_threads(blas_threads); /* ... unless asked otherwise */

    bench_conv("conv3x3_b32_c32_28", (ConvShape){32, 32, 28, 28, 32, 3, 1, 1});
    bench_conv("conv3x3_b32_c32to64_14", (ConvShape){32, 32, 14, 14, 64, 3, 1, 1});
    bench_conv("conv3x3_b32_c64_14", (ConvShape){32, 64, 14, 14, 64, 3, 1, 1});
    bench_conv("conv3x3_b32_c64_7", (ConvShape){32, 64, 7, 7, 64, 3, 1, 1});
    bench_conv("conv3x3_b32_c128to64_14", (ConvShape){32, 128, 14, 14, 64, 3, 1, 1});
    bench_conv("conv3x3_b32_c128to64_7", (ConvShape){32, 128, 7, 7, 64, 3, 1, 1});
    bench_conv("conv3x3s2_b32_c32_28", (ConvShape){32, 32, 28, 28, 32, 3, 2, 1});
    bench_conv("conv1x1_b32_c64to192_7", (ConvShape){32, 64, 7, 7, 192, 1, 1, 0});
    bench_conv("conv1x1_b32_c32to64_28", (ConvShape){32, 32, 28, 28, 64, 1, 1, 0});

    AttB a = {.N = 32, .C = 64, .L = 49, .heads = 1};
    a.qkv = buf(a.N * 3 * a.C * a.L);
    a.att = buf(a.N * a.heads * a.L * a.L);
    a.out = buf(a.N * a.C * a.L);
    a.dqkv = buf(a.N * 3 * a.C * a.L);
    bench("attention_b32_c64_l49_fwd", att_f, &a);
    bench("attention_b32_c64_l49_bwd", att_b, &a);

    GnB g = {.N = 32, .C = 32, .HW = 784, .G = 8};
    int64_t n = g.N * g.C * g.HW;
    g.in = buf(n); g.out = buf(n); g.din = buf(n);
    g.mean = buf(g.N * g.G); g.rstd = buf(g.N * g.G);
    g.g = buf(g.C); g.b = buf(g.C); g.dg = buf(g.C); g.db = buf(g.C);
    bench("groupnorm_b32_c32_28_fwd", gn_f, &g);
    bench("groupnorm_b32_c32_28_bwd", gn_b, &g);

    SiB s = {.in = g.in, .out = g.out, .din = g.din, .n = n};
    bench("silu_b32_c32_28_fwd", silu_f, &s);
    bench("silu_b32_c32_28_bwd", silu_b, &s);

    NaB na = {.N = 32, .C = 32, .HW = 784, .G = 8};
    na.x = g.in; na.a = g.out; na.da = g.din; na.dx = buf(n);
    na.mean = g.mean; na.rstd = g.rstd; na.g = g.g; na.b = g.b; na.dg = g.dg; na.db = g.db;
    na.ss = buf(na.N * 2 * na.C); na.dss = buf(na.N * 2 * na.C);
    bench("norm_act_b32_c32_28_fwd", na_f, &na);
    bench("norm_act_b32_c32_28_bwd", na_b, &na);
    char choices[1024];
    backend_cpu_describe(choices, sizeof choices);
    fprintf(stderr, "choices: %s\n", choices);
    backend_ctx_destroy(&ctx);
    return 0;
}
