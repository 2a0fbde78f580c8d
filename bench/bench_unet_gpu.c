/* bench_unet_gpu.c: the reference network fmnist-s on the CUDA backend: an EDM training step
 * (forward, backward, gradient-norm clipping, AdamW) at batch 256 and forward-only throughput at
 * batch 1024, each in float32 and with TF32 tensor cores (MSD_TF32=1 for that context), plus a
 * large-SGEMM rate probe through the same backend's linear op (cuBLAS), so the network's
 * achieved TFLOP/s can be read against the matrix rate measured on the same card. JSON lines as
 * the other benchmarks:
 *   {"bench":"unet_gpu","metric":"train_step_b256","value":41.2,"unit":"ms"}
 * Per configuration: ms (median of the timed repetitions, each ended by a device sync), images/s,
 * TFLOP/s (analytic count, docs/UNET.md section 8: training = 3x forward) and the activation
 * memory of unet_alloc_batch (MB); then <metric>_frac_of_sgemm = achieved / probe rate.
 *
 * The forward at batch 1 (fwd_b1) is the latency of one image.
 *
 *   bench_unet_gpu [--gpu N (0)] [--reps R] [--only train_b256|fwd_b1024|fwd_b1|sgemm] [--no-tf32]
 *                  [--config SPEC] [--batch N]
 *
 * --config benches another 28x28x1 network with 10 classes (e.g. the student sizes fmnist-m,
 * fmnist-xs, docs/UNET.md section 12; lines then carry "config":"SPEC"); --batch N replaces the
 * batch of fwd_b1024 (metric names follow: fwd_bN), as bench_unet's options do.
 *
 * Without a CUDA build or a GPU it says so on stderr and exits 0 (a benchmark, not a test:
 * tools/bench-all runs it everywhere). bench/torch_unet_bench.py --device cuda is the PyTorch
 * twin ("bench":"torch_unet_gpu", same metric names). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "edm.h"
#include "log.h"
#include "optimizer.h"
#include "unet.h"
#include "bench.h"

static const char *net_spec = "fmnist-s"; /* --config */
static int spec_given;

static void emit(const char *metric, double value, const char *unit) {
    if (spec_given) printf("{\"bench\":\"unet_gpu\",\"config\":\"%s\",", net_spec);
    else printf("{\"bench\":\"unet_gpu\",");
    printf("\"metric\":\"%s\",\"value\":%.6g,\"unit\":\"%s\"}\n", metric, value, unit);
    fflush(stdout);
}

static Device g_dev = {DEVICE_CUDA, 0};

/* A CUDA context with TF32 on or off (the switch is read when the context is created). */
static BackendCtx *ctx_open(const Backend **be, int tf32) {
    char err[512];
    setenv("MSD_TF32", tf32 ? "1" : "0", 1);
    *be = backend_get(g_dev, err, sizeof err);
    if (!*be) msd_die("bench_unet_gpu: %s", err);
    return backend_ctx_new(*be, 1);
}

/* waits for the context's stream (a one-float download) */
static void sync_dev(const Backend *be, BackendCtx *ctx, const float *d) {
    float h;
    be->download(ctx, &h, d, 1);
}

static double median_ms(double *t, int n) {
    qsort(t, (size_t)n, sizeof(double), bench_cmp_double);
    return t[n / 2] * 1e3;
}

/* TFLOP/s of cuBLAS SGEMM at 8192^3 through linear_forward */
static double sgemm_probe(int tf32, int reps) {
    const Backend *be;
    BackendCtx *ctx = ctx_open(&be, tf32);
    const int64_t M = 8192;
    float *a = be->alloc(ctx, M * M), *w = be->alloc(ctx, M * M), *out = be->alloc(ctx, M * M);
    be->rng_uniform(ctx, a, M * M, 1, 1, 0);
    be->rng_uniform(ctx, w, M * M, 1, 2, 0);
    double *t = msd_malloc((size_t)reps * sizeof(double));
    for (int r = -2; r < reps; r++) {
        double t0 = msd_now();
        be->linear_forward(ctx, out, a, w, NULL, M, M, M);
        sync_dev(be, ctx, out);
        if (r >= 0) t[r] = msd_now() - t0;
    }
    double ms = median_ms(t, reps), tflops = 2.0 * (double)M * M * M / (ms * 1e-3) * 1e-12;
    emit(tf32 ? "sgemm_8192_ms_tf32" : "sgemm_8192_ms", ms, "ms");
    emit(tf32 ? "sgemm_8192_tflops_tf32" : "sgemm_8192_tflops", tflops, "TFLOP/s");
    free(t);
    be->free(ctx, a);
    be->free(ctx, w);
    be->free(ctx, out);
    backend_ctx_destroy(&ctx);
    return tflops;
}

/* one configuration: training (batch N) or forward (batch N); returns achieved TFLOP/s */
static double run_unet(int train, int64_t N, int tf32, int reps) {
    const Backend *be;
    BackendCtx *ctx = ctx_open(&be, tf32);
    char err[256];
    UNetConfig cfg;
    if (unet_config_parse(&cfg, net_spec, err, sizeof err) != 0) msd_die("bench_unet_gpu: %s", err);
    if (cfg.in_ch != 1 || cfg.res != 28 || cfg.label_dim != 10)
        msd_die("bench_unet_gpu: --config %s is not a 28x28x1 network with 10 classes", net_spec);
    UNet *u = unet_new(&cfg, be, ctx);
    unet_init(u, 1);
    const int64_t D = 28 * 28;
    int64_t act = unet_alloc_batch(u, N);
    Edm e;
    edm_init(&e, unet_edm_net(u), N, be, ctx);
    float *xh = msd_malloc((size_t)(N * D) * sizeof(float)), *sigma = msd_malloc((size_t)N * sizeof(float));
    int32_t *labels = msd_malloc((size_t)N * sizeof(int32_t));
    backend_cpu.rng_uniform(NULL, xh, N * D, 5, 1, 0);
    for (int64_t i = 0; i < N * D; i++) xh[i] = 2 * xh[i] - 1;
    for (int64_t n = 0; n < N; n++) {
        labels[n] = (int32_t)(n % 10);
        sigma[n] = 0.5f + (float)(n % 50) * 0.1f;
    }
    float *x = be->alloc(ctx, N * D), *out = be->alloc(ctx, N * D);
    be->upload(ctx, x, xh, N * D);
    Optim *opt = NULL;
    if (train) {
        OptimConfig oc;
        optim_config_default(&oc);
        oc.lr = 1e-4f;
        oc.grad_clip = 1.0f;
        opt = optim_new(unet_params(u), &oc);
    }
    double *t = msd_malloc((size_t)reps * sizeof(double));
    for (int r = -2; r < reps; r++) { /* two warm-ups: cuDNN plans, first touch */
        double t0 = msd_now();
        if (train) {
            params_zero_grad(unet_params(u));
            edm_loss_step(&e, x, labels, NULL, N, 7, r + 2, 1);
            edm_loss_backward(&e, N);
            optim_step(opt); /* its gradient norm waits for the device */
        } else {
            edm_forward(&e, out, x, sigma, labels, NULL, N, 0);
        }
        sync_dev(be, ctx, out);
        if (r >= 0) t[r] = msd_now() - t0;
    }
    double ms = median_ms(t, reps);
    double tflops = unet_forward_flops(&cfg) * (double)N * (train ? 3.0 : 1.0) / (ms * 1e-3) * 1e-12;
    const char *sfx = tf32 ? "_tf32" : "";
    const char *kind = train ? "train" : "fwd";
    char m[96];
    snprintf(m, sizeof m, "%s_b%lld%s", train ? "train_step" : "fwd", (long long)N, sfx);
    emit(m, ms, "ms");
    snprintf(m, sizeof m, "%s_images_per_s_b%lld%s", kind, (long long)N, sfx);
    emit(m, (double)N / (ms * 1e-3), "images/s");
    snprintf(m, sizeof m, "%s_tflops_b%lld%s", kind, (long long)N, sfx);
    emit(m, tflops, "TFLOP/s");
    snprintf(m, sizeof m, "%s_activations_b%lld%s", kind, (long long)N, sfx);
    emit(m, (double)act / (1024.0 * 1024.0), "MB");
    free(t); free(xh); free(sigma); free(labels);
    be->free(ctx, x);
    be->free(ctx, out);
    optim_destroy(&opt);
    edm_free(&e);
    unet_destroy(&u);
    backend_ctx_destroy(&ctx);
    return tflops;
}

int main(int argc, char **argv) {
    const char *only = NULL;
    int reps = 0, with_tf32 = 1;
    int64_t batch = 1024;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--gpu") && i + 1 < argc) g_dev.index = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
        else if (!strcmp(argv[i], "--no-tf32")) with_tf32 = 0;
        else if (!strcmp(argv[i], "--config") && i + 1 < argc) net_spec = argv[++i], spec_given = 1;
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) {
            batch = atoll(argv[++i]);
            if (batch < 1 || batch > 65536) msd_die("bench_unet_gpu: --batch %s: not a batch size in [1, 65536]", argv[i]);
        } else {
            fprintf(stderr, "usage: bench_unet_gpu [--gpu N] [--reps R] [--only train_b256|fwd_b1024|fwd_b1|sgemm] "
                            "[--no-tf32] [--config SPEC] [--batch N]\n");
            return 2;
        }
    }
    if (only && strcmp(only, "train_b256") && strcmp(only, "fwd_b1024") && strcmp(only, "fwd_b1") && strcmp(only, "sgemm")) {
        fprintf(stderr, "bench_unet_gpu: no configuration named '%s'\n", only);
        return 2;
    }
    char err[512];
    if (!backend_get(g_dev, err, sizeof err)) {
        fprintf(stderr, "bench_unet_gpu: skipped: %s\n", err);
        return 0;
    }
    for (int tf32 = 0; tf32 <= with_tf32; tf32++) {
        const char *sfx = tf32 ? "_tf32" : "";
        char m[96];
        double peak = 0, a;
        if (!only || !strcmp(only, "sgemm")) peak = sgemm_probe(tf32, reps > 0 ? reps : 10);
        if (!only || !strcmp(only, "train_b256")) {
            a = run_unet(1, 256, tf32, reps > 0 ? reps : 10);
            snprintf(m, sizeof m, "train_tflops_b256%s_frac_of_sgemm", sfx);
            if (peak > 0) emit(m, a / peak, "ratio");
        }
        if (!only || !strcmp(only, "fwd_b1024")) {
            a = run_unet(0, batch, tf32, reps > 0 ? reps : 10);
            snprintf(m, sizeof m, "fwd_tflops_b%lld%s_frac_of_sgemm", (long long)batch, sfx);
            if (peak > 0) emit(m, a / peak, "ratio");
        }
        if (!only || !strcmp(only, "fwd_b1")) run_unet(0, 1, tf32, reps > 0 ? reps : 30);
    }
    return 0;
}
