/* bench_unet.c: the reference network fmnist-s (docs/ARCHITECTURE.md, docs/UNET.md) on the CPU backend:
 * an EDM training step (forward, backward, AdamW) at batch 32 and 128, forward-only
 * throughput at batch 256 and the latency of one image (forward at batch 1). Prints JSON lines,
 * one per metric:
 *   {"bench":"unet","metric":"train_step_b32","value":412.3,"unit":"ms"}
 * Metrics per configuration: the time (ms, median of the timed repetitions), the process's CPU
 * time for it (ms, median; every thread's, spinning workers included: with --threads 1 it is
 * the time on a core of its own, robust to the machine's load), images/s,
 * GFLOP/s (analytic count, docs/UNET.md section 8: training = 3x forward) and the peak
 * resident memory of the process that ran it (getrusage ru_maxrss, MB). Every configuration
 * runs in its own forked process, started before anything big is allocated, so each peak is
 * that configuration's alone. After each configuration a line on stderr, "choices (...):",
 * says what the CPU backend chose on this machine (backend_cpu_describe: L2-derived convolution
 * sizes, the pool's spin policy and how many jobs ran quiet or loaded).
 *
 *   bench_unet [--only train_b32|train_b128|fwd_b256|fwd_b1] [--config SPEC] [--batch N] [--threads T (2)]
 *              [--reps R] [--flops] [--profile]
 *
 * --config benches another network (a CONFIG-SPEC of docs/UNET.md section 1, e.g. the student
 * sizes fmnist-m, fmnist-xs; image size 28x28x1): its lines then carry "config":"SPEC".
 * --batch N replaces the batch of the configurations run (metric names follow: fwd_bN).
 * --flops prints the network's forward GFLOP per image and its parameter count, and exits.
 *
 * --profile times every backend op through a wrapping copy of the CPU table and prints, to
 * stderr, ms per step per op and per convolution shape (the conv-shape table covers the warm-up
 * step too, so it is averaged over reps + 1 steps).
 *
 * bench/torch_unet_bench.py does the same work in PyTorch; tools/bench-all prints the ratios. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend.h"
#include "edm.h"
#include "log.h"
#include "optimizer.h"
#include "unet.h"
#include "bench.h"

typedef struct BenchCfg {
    const char *name;
    int train;
    int64_t batch;
    int reps;
} BenchCfg;

static const BenchCfg cfgs[] = {
    {"train_b32", 1, 32, 5},
    {"train_b128", 1, 128, 3},
    {"fwd_b256", 0, 256, 3},
    {"fwd_b1", 0, 1, 30},
};

static const char *net_spec = "fmnist-s";   /* --config */
static int spec_given;

static void emit(const char *metric, double value, const char *unit) {
    int exact = value == (double)(int64_t)value && value < 1e15;   /* counts: every digit */
    if (spec_given) printf("{\"bench\":\"unet\",\"config\":\"%s\",", net_spec);
    else printf("{\"bench\":\"unet\",");
    printf(exact ? "\"metric\":\"%s\",\"value\":%.0f,\"unit\":\"%s\"}\n" : "\"metric\":\"%s\",\"value\":%.6g,\"unit\":\"%s\"}\n",
           metric, value, unit);
    fflush(stdout);
}

/* CPU time of the whole process (every thread), seconds: with --threads 1 it is the time the
 * work takes on a core of its own, whatever else the machine runs (wall time is not). */
static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;  /* Linux: kilobytes */
}

/* ---- --profile: a copy of the CPU table whose slots time the real ones ---- */

enum { P_CONV_F, P_CONV_B, P_LIN_F, P_LIN_B, P_GN_F, P_GN_B, P_SILU_F, P_SILU_B, P_MOD_F, P_MOD_B, P_ATT_F, P_ATT_B,
       P_CAT_F, P_CAT_B, P_UP_F, P_UP_B, P_FILL, P_ELEM, P_ADAMW, P_NA_F, P_NA_B, P_NOPS };
static const char *prof_names[P_NOPS] = {"conv2d_forward", "conv2d_backward", "linear_forward", "linear_backward",
    "groupnorm_forward", "groupnorm_backward", "silu_forward", "silu_backward", "modulate_forward",
    "modulate_backward", "attention_forward", "attention_backward", "concat_forward", "concat_backward",
    "upsample2x_forward", "upsample2x_backward", "fill", "add/mul/axpy/copy/scale_rows", "adamw+sumsq",
    "norm_act_forward (fused)", "norm_act_backward (fused)"};
static double prof_t[P_NOPS];
static int prof_on;
#define MAXSHAPES 64
static struct { ConvShape s; double tf, tb; int nf, nb; } conv_prof[MAXSHAPES];
static int n_conv_prof;
static Backend prof_be;

static int conv_slot(const ConvShape *s) {
    for (int i = 0; i < n_conv_prof; i++)
        if (!memcmp(&conv_prof[i].s, s, sizeof *s)) return i;
    if (n_conv_prof == MAXSHAPES) return -1;
    conv_prof[n_conv_prof].s = *s;
    return n_conv_prof++;
}

#define TIMED(slot, call) do { double t0_ = msd_now(); call; prof_t[slot] += msd_now() - t0_; } while (0)
static void p_conv_f(BackendCtx *c, float *o, const float *i, const float *w, const float *b, const ConvShape *s) {
    double t0 = msd_now();
    backend_cpu.conv2d_forward(c, o, i, w, b, s);
    double dt = msd_now() - t0;
    prof_t[P_CONV_F] += dt;
    int k = conv_slot(s);
    if (k >= 0) { conv_prof[k].tf += dt; conv_prof[k].nf++; }
}
static void p_conv_b(BackendCtx *c, float *di, float *dw, float *db, const float *d, const float *i, const float *w,
                     const ConvShape *s) {
    double t0 = msd_now();
    backend_cpu.conv2d_backward(c, di, dw, db, d, i, w, s);
    double dt = msd_now() - t0;
    prof_t[P_CONV_B] += dt;
    int k = conv_slot(s);
    if (k >= 0) { conv_prof[k].tb += dt; conv_prof[k].nb++; }
}
static void p_lin_f(BackendCtx *c, float *o, const float *i, const float *w, const float *b, int64_t N, int64_t I, int64_t O) {
    TIMED(P_LIN_F, backend_cpu.linear_forward(c, o, i, w, b, N, I, O));
}
static void p_lin_b(BackendCtx *c, float *di, float *dw, float *db, const float *d, const float *i, const float *w,
                    int64_t N, int64_t I, int64_t O) {
    TIMED(P_LIN_B, backend_cpu.linear_backward(c, di, dw, db, d, i, w, N, I, O));
}
static void p_gn_f(BackendCtx *c, float *o, float *m, float *r, const float *i, const float *g, const float *b, int64_t N,
                   int64_t C, int64_t HW, int64_t G, float eps) {
    TIMED(P_GN_F, backend_cpu.groupnorm_forward(c, o, m, r, i, g, b, N, C, HW, G, eps));
}
static void p_gn_b(BackendCtx *c, float *di, float *dg, float *db, const float *d, const float *i, const float *m,
                   const float *r, const float *g, int64_t N, int64_t C, int64_t HW, int64_t G) {
    TIMED(P_GN_B, backend_cpu.groupnorm_backward(c, di, dg, db, d, i, m, r, g, N, C, HW, G));
}
static void p_silu_f(BackendCtx *c, float *o, const float *i, int64_t n) { TIMED(P_SILU_F, backend_cpu.silu_forward(c, o, i, n)); }
static void p_silu_b(BackendCtx *c, float *di, const float *d, const float *i, int64_t n) {
    TIMED(P_SILU_B, backend_cpu.silu_backward(c, di, d, i, n));
}
static void p_mod_f(BackendCtx *c, float *o, const float *x, const float *ss, int64_t N, int64_t C, int64_t HW) {
    TIMED(P_MOD_F, backend_cpu.modulate_forward(c, o, x, ss, N, C, HW));
}
static void p_mod_b(BackendCtx *c, float *dx, float *dss, const float *d, const float *x, const float *ss, int64_t N,
                    int64_t C, int64_t HW) {
    TIMED(P_MOD_B, backend_cpu.modulate_backward(c, dx, dss, d, x, ss, N, C, HW));
}
static void p_att_f(BackendCtx *c, float *o, float *a, const float *q, int64_t N, int64_t C, int64_t L, int64_t h) {
    TIMED(P_ATT_F, backend_cpu.attention_forward(c, o, a, q, N, C, L, h));
}
static void p_att_b(BackendCtx *c, float *dq, const float *d, const float *q, const float *a, int64_t N, int64_t C,
                    int64_t L, int64_t h) {
    TIMED(P_ATT_B, backend_cpu.attention_backward(c, dq, d, q, a, N, C, L, h));
}
static void p_cat_f(BackendCtx *c, float *o, const float *a, const float *b, int64_t N, int64_t Ca, int64_t Cb, int64_t HW) {
    TIMED(P_CAT_F, backend_cpu.concat_forward(c, o, a, b, N, Ca, Cb, HW));
}
static void p_cat_b(BackendCtx *c, float *da, float *db, const float *d, int64_t N, int64_t Ca, int64_t Cb, int64_t HW) {
    TIMED(P_CAT_B, backend_cpu.concat_backward(c, da, db, d, N, Ca, Cb, HW));
}
static void p_up_f(BackendCtx *c, float *o, const float *i, int64_t N, int64_t C, int64_t H, int64_t W) {
    TIMED(P_UP_F, backend_cpu.upsample2x_forward(c, o, i, N, C, H, W));
}
static void p_up_b(BackendCtx *c, float *di, const float *d, int64_t N, int64_t C, int64_t H, int64_t W) {
    TIMED(P_UP_B, backend_cpu.upsample2x_backward(c, di, d, N, C, H, W));
}
static double fill_floats; /* floats zeroed or filled, all steps */
static void p_fill(BackendCtx *c, float *d, float v, int64_t n) {
    fill_floats += (double)n;
    TIMED(P_FILL, backend_cpu.fill(c, d, v, n));
}
static void p_na_f(BackendCtx *c, float *o, float *m, float *r, const float *i, const float *g, const float *b,
                   const float *ss, int64_t N, int64_t C, int64_t HW, int64_t G, float eps) {
    TIMED(P_NA_F, backend_cpu.norm_act_forward(c, o, m, r, i, g, b, ss, N, C, HW, G, eps));
}
static void p_na_b(BackendCtx *c, float *di, float *dg, float *db, float *dss, const float *d, const float *i,
                   const float *m, const float *r, const float *g, const float *b, const float *ss, int64_t N, int64_t C,
                   int64_t HW, int64_t G) {
    TIMED(P_NA_B, backend_cpu.norm_act_backward(c, di, dg, db, dss, d, i, m, r, g, b, ss, N, C, HW, G));
}
static void p_add(BackendCtx *c, float *o, const float *a, const float *b, int64_t n) { TIMED(P_ELEM, backend_cpu.add(c, o, a, b, n)); }
static void p_mul(BackendCtx *c, float *o, const float *a, const float *b, int64_t n) { TIMED(P_ELEM, backend_cpu.mul(c, o, a, b, n)); }
static void p_axpy(BackendCtx *c, float *y, float al, const float *x, int64_t n) { TIMED(P_ELEM, backend_cpu.axpy(c, y, al, x, n)); }
static void p_copy(BackendCtx *c, float *d, const float *s, int64_t n) { TIMED(P_ELEM, backend_cpu.copy(c, d, s, n)); }
static void p_rows(BackendCtx *c, float *o, const float *x, const float *a, const float *y, const float *b, int64_t N, int64_t D) {
    TIMED(P_ELEM, backend_cpu.scale_rows(c, o, x, a, y, b, N, D));
}
static void p_adamw(BackendCtx *c, float *p, const float *g, float *m, float *v, int64_t n, float lr, float b1, float b2,
                    float eps, float wd, int64_t t, float gs) {
    TIMED(P_ADAMW, backend_cpu.adamw_update(c, p, g, m, v, n, lr, b1, b2, eps, wd, t, gs));
}
static double p_sumsq(BackendCtx *c, const float *x, int64_t n) {
    double t0 = msd_now(), r = backend_cpu.sumsq(c, x, n);
    prof_t[P_ADAMW] += msd_now() - t0;
    return r;
}

static const Backend *profiling_backend(void) {
    prof_be = backend_cpu;
    prof_be.conv2d_forward = p_conv_f; prof_be.conv2d_backward = p_conv_b;
    prof_be.linear_forward = p_lin_f; prof_be.linear_backward = p_lin_b;
    prof_be.groupnorm_forward = p_gn_f; prof_be.groupnorm_backward = p_gn_b;
    prof_be.silu_forward = p_silu_f; prof_be.silu_backward = p_silu_b;
    prof_be.modulate_forward = p_mod_f; prof_be.modulate_backward = p_mod_b;
    prof_be.attention_forward = p_att_f; prof_be.attention_backward = p_att_b;
    prof_be.concat_forward = p_cat_f; prof_be.concat_backward = p_cat_b;
    prof_be.upsample2x_forward = p_up_f; prof_be.upsample2x_backward = p_up_b;
    prof_be.fill = p_fill; prof_be.add = p_add; prof_be.mul = p_mul; prof_be.axpy = p_axpy; prof_be.copy = p_copy;
    prof_be.scale_rows = p_rows; prof_be.adamw_update = p_adamw; prof_be.sumsq = p_sumsq;
    prof_be.norm_act_forward = p_na_f; prof_be.norm_act_backward = p_na_b;
    return &prof_be;
}

static void prof_report(double total, int reps) {
    fprintf(stderr, "profile (ms per step, %d steps; step total %.1f ms):\n", reps, total * 1e3 / reps);
    double sum = 0;
    for (int i = 0; i < P_NOPS; i++) {
        sum += prof_t[i];
        if (prof_t[i] > 0) fprintf(stderr, "  %-32s %8.1f  %5.1f%%\n", prof_names[i], prof_t[i] * 1e3 / reps, 100 * prof_t[i] / total);
    }
    fprintf(stderr, "  %-32s %8.1f  %5.1f%%\n", "(other: host, rng, model glue)", (total - sum) * 1e3 / reps,
            100 * (total - sum) / total);
    fprintf(stderr, "conv shapes (N C H W -> O K stride): calls fwd/bwd, ms per step fwd/bwd\n");
    for (int i = 0; i < n_conv_prof; i++) {
        const ConvShape *s = &conv_prof[i].s;
        fprintf(stderr, "  %3lld %3lld %2lld %2lld -> %3lld k%lld s%lld   %2d/%2d  %7.1f %7.1f\n", (long long)s->N,
                (long long)s->C, (long long)s->H, (long long)s->W, (long long)s->O, (long long)s->K,
                (long long)s->stride, conv_prof[i].nf / (reps + 1), conv_prof[i].nb / (reps + 1),
                conv_prof[i].tf * 1e3 / (reps + 1), conv_prof[i].tb * 1e3 / (reps + 1));
    }
}

static void run_one(const BenchCfg *b, int threads, int reps) {
    const Backend *be = prof_on ? profiling_backend() : &backend_cpu;
    BackendCtx *ctx = backend_ctx_new(be, threads);
    char err[256];
    UNetConfig cfg;
    if (unet_config_parse(&cfg, net_spec, err, sizeof err) != 0) msd_die("bench_unet: %s", err);
    if (cfg.in_ch != 1 || cfg.res != 28 || cfg.label_dim != 10)
        msd_die("bench_unet: --config %s is not a 28x28x1 network with 10 classes", net_spec);
    UNet *u = unet_new(&cfg, be, ctx);
    unet_init(u, 1);
    int64_t N = b->batch, D = 28 * 28;
    int64_t bytes = b->train ? unet_alloc_batch(u, N) : unet_alloc_batch_inference(u, N);
    Edm e;
    edm_init(&e, unet_edm_net(u), N, be, ctx);
    float *x = msd_malloc((size_t)(N * D) * sizeof(float)), *out = msd_malloc((size_t)(N * D) * sizeof(float));
    float *sigma = msd_malloc((size_t)N * sizeof(float));
    int32_t *labels = msd_malloc((size_t)N * sizeof(int32_t));
    be->rng_uniform(ctx, x, N * D, 5, 1, 0);
    for (int64_t i = 0; i < N * D; i++) x[i] = 2 * x[i] - 1;
    for (int64_t n = 0; n < N; n++) {
        labels[n] = (int32_t)(n % 10);
        sigma[n] = 0.5f + (float)n * 0.1f;
    }
    Optim *opt = NULL;
    if (b->train) {
        OptimConfig oc;
        optim_config_default(&oc);
        oc.lr = 1e-4f;
        opt = optim_new(unet_params(u), &oc);
    }
    double *t = msd_malloc((size_t)(reps + 1) * sizeof(double)), *cpu = msd_malloc((size_t)(reps + 1) * sizeof(double));
    for (int r = 0; r <= reps; r++) {   /* r = 0 warms up (first-touch of every buffer) */
        if (r == 1) {
            memset(prof_t, 0, sizeof prof_t);
        }
        double t0 = msd_now(), c0 = cpu_seconds();
        if (b->train) {
            params_zero_grad(unet_params(u));
            edm_loss_step(&e, x, labels, NULL, N, 7, r, 1);
            edm_loss_backward(&e, N);
            optim_step(opt);
        } else {
            edm_forward(&e, out, x, sigma, labels, NULL, N, 0);
        }
        t[r] = msd_now() - t0;
        cpu[r] = cpu_seconds() - c0;
    }
    if (prof_on) {
        double tot = 0;
        for (int r = 1; r <= reps; r++) tot += t[r];
        prof_report(tot, reps);
        fprintf(stderr, "fill: %.1f MB per step\n", fill_floats * 4 / 1e6 / (reps + 1)); /* warm-up step included */
    }
    qsort(t + 1, (size_t)reps, sizeof(double), bench_cmp_double);
    qsort(cpu + 1, (size_t)reps, sizeof(double), bench_cmp_double);
    double sec = t[1 + reps / 2];
    double flops = unet_forward_flops(&cfg) * (double)N * (b->train ? 3.0 : 1.0);
    char m[64];
    const char *kind = b->train ? "train" : "fwd";
    snprintf(m, sizeof m, "%s_step_b%lld", kind, (long long)N);
    if (!b->train) snprintf(m, sizeof m, "fwd_b%lld", (long long)N);
    emit(m, sec * 1e3, "ms");
    snprintf(m, sizeof m, "%s_cpu_ms_b%lld", kind, (long long)N);
    emit(m, cpu[1 + reps / 2] * 1e3, "ms");
    snprintf(m, sizeof m, "%s_images_per_s_b%lld", kind, (long long)N);
    emit(m, (double)N / sec, "images/s");
    snprintf(m, sizeof m, "%s_gflops_b%lld", kind, (long long)N);
    emit(m, flops / sec * 1e-9, "GFLOP/s");
    snprintf(m, sizeof m, "%s_peak_rss_b%lld", kind, (long long)N);
    emit(m, peak_rss_mb(), "MB");
    snprintf(m, sizeof m, "%s_model_buffers_b%lld", kind, (long long)N);
    emit(m, (double)bytes / (1024.0 * 1024.0), "MB");
    char choices[1024];
    backend_cpu_describe(choices, sizeof choices);
    fprintf(stderr, "choices (%s b%lld, %d threads): %s\n", b->train ? "train" : "fwd", (long long)N, threads, choices);
    free(t); free(cpu); free(x); free(out); free(sigma); free(labels);
    optim_destroy(&opt);
    edm_free(&e);
    unet_destroy(&u);
    backend_ctx_destroy(&ctx);
}

int main(int argc, char **argv) {
    const char *only = NULL;
    int threads = 2, reps = 0;
    int64_t batch = 0;
    int flops_only = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--config") && i + 1 < argc) net_spec = argv[++i], spec_given = 1;
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) {
            batch = atoll(argv[++i]);
            if (batch < 1 || batch > 65536) msd_die("bench_unet: --batch %s: not a batch size in [1, 65536]", argv[i]);
        }
        else if (!strcmp(argv[i], "--profile")) prof_on = 1;
        else if (!strcmp(argv[i], "--flops")) flops_only = 1;
        else {
            fprintf(stderr, "usage: bench_unet [--only train_b32|train_b128|fwd_b256|fwd_b1] [--config SPEC] [--batch N] "
                            "[--threads T] [--reps R] [--flops] [--profile]\n");
            return 2;
        }
    }
    if (flops_only) {
        UNetConfig cfg;
        char err[256];
        if (unet_config_parse(&cfg, net_spec, err, sizeof err) != 0) msd_die("bench_unet: %s", err);
        emit("fwd_gflop_per_image", unet_forward_flops(&cfg) * 1e-9, "GFLOP");
        BackendCtx *ctx = backend_ctx_new(&backend_cpu, 1);
        UNet *u = unet_new(&cfg, &backend_cpu, ctx);
        emit("params", (double)params_count(unet_params(u)), "parameters");
        unet_destroy(&u);
        backend_ctx_destroy(&ctx);
        return 0;
    }
    if (threads < 1) threads = 1;
    int found = 0, failed = 0;
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
        if (only && strcmp(only, cfgs[i].name)) continue;
        found = 1;
        int r = reps > 0 ? reps : cfgs[i].reps;
        BenchCfg bc = cfgs[i];
        if (batch > 0) bc.batch = batch;
        if (only) {          /* one configuration: run it here */
            run_one(&bc, threads, r);
            continue;
        }
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0) msd_die("bench_unet: fork failed");
        if (pid == 0) {
            run_one(&bc, threads, r);
            _exit(0);
        }
        int st;
        waitpid(pid, &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "bench_unet: configuration %s failed\n", cfgs[i].name);
            failed = 1;
        }
    }
    if (!found) {
        fprintf(stderr, "bench_unet: no configuration named '%s'\n", only);
        return 2;
    }
    return failed;
}
