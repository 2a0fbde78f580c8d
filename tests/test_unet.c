/* test_unet.c: the UNet (common/models/unet.c) and the EDM wrapper (common/models/edm.c) against the PyTorch
 * twin's fixtures (tests/torch_unet.py, tests/fixtures/unet_tiny_*.safetensors): forward output,
 * bottleneck, input gradient and every parameter gradient; a short EDM training run that must
 * repeat bit for bit and lower the loss; fmnist-s's parameter count; config-spec errors; dropout
 * against the twin's masks rebuilt from the documented Philox stream (unet_tiny_dropout_expect);
 * the student sizes fmnist-m and fmnist-xs (docs/UNET.md section 12: exact parameter and FLOP
 * counts, a forward and backward through every tensor); the committed teacher checkpoint
 * loaded into a fresh fmnist-s.
 *
 * Tolerance of the fixture comparison: the reference is float64 PyTorch on the same float32
 * weights and inputs; each tensor passes when |ours - ref| <= 1e-4 * max|ref| + 1e-3 |ref|
 * elementwise (float32 accumulation over a few hundred terms stays well inside). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "check.h"
#include "edm.h"
#include "edmunet.h"
#include "log.h"
#include "optimizer.h"
#include "safetensors.h"
#include "unet.h"

/* A tensor of f as float32 (malloc'd), NULL if missing or numel differs. */
static float *st_get(const StFile *f, const char *name, int64_t numel) {
    const StTensor *t = st_find(f, name);
    if (!t || (numel >= 0 && t->numel != numel)) return NULL;
    float *out = malloc((size_t)(t->numel ? t->numel : 1) * sizeof(float));
    st_tensor_to_f32(t, out);
    return out;
}

static double max_abs(const float *a, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fabs(a[i]) > m ? fabs(a[i]) : m;
    return m;
}

static BackendCtx *ctx;

static void test_fixture_forward_backward(void) {
    const Backend *be = &backend_cpu;
    char err[512];
    UNetConfig cfg;
    REQUIRE(unet_config_parse(&cfg, "tiny", err, sizeof err) == 0, "%s", err);
    UNet *u = unet_new(&cfg, be, ctx);
    ParamSet *ps = unet_params(u);
    REQUIRE(st_load_params(check_fixture("unet_tiny_weights.safetensors"), ps, "", 0, err, sizeof err) == 0, "%s", err);
    StFile in, dfile, ex;
    REQUIRE(st_read(&in, check_fixture("unet_tiny_inputs.safetensors"), err, sizeof err) == 0, "%s", err);
    REQUIRE(st_read(&dfile, check_fixture("unet_tiny_dout.safetensors"), err, sizeof err) == 0, "%s", err);
    REQUIRE(st_read(&ex, check_fixture("unet_tiny_expect.safetensors"), err, sizeof err) == 0, "%s", err);
    const StTensor *tx = st_find(&in, "x");
    REQUIRE(tx && tx->ndim == 4, "x missing");
    int64_t N = tx->shape[0], D = tx->numel / N;
    float *x = st_get(&in, "x", -1), *sigma = st_get(&in, "sigma", N), *lab = st_get(&in, "labels", N);
    float *dout = st_get(&dfile, "dout", N * D);
    int64_t chw[3];
    unet_bottleneck_shape(u, chw);
    int64_t nb = N * chw[0] * chw[1] * chw[2];
    float *dbott = st_get(&dfile, "dbottleneck", nb);
    REQUIRE(x && sigma && lab && dout && dbott, "fixture inputs incomplete");
    int32_t labels[16];
    REQUIRE(N <= 16);
    for (int64_t n = 0; n < N; n++) labels[n] = (int32_t)lab[n];

    unet_alloc_batch(u, N);
    Edm e;
    edm_init(&e, unet_edm_net(u), N, be, ctx);
    float *out = calloc((size_t)(N * D), sizeof(float)), *dx = calloc((size_t)(N * D), sizeof(float));
    edm_forward(&e, out, x, sigma, labels, NULL, N, 0);
    params_zero_grad(ps);
    edm_backward(&e, dx, dout, dbott, N);

    struct { const char *name; const float *ours; int64_t n; } outs[] = {
        {"out", out, N * D}, {"bottleneck", unet_bottleneck(u), nb}, {"dx", dx, N * D}};
    double worst_rel = 0;
    for (int k = 0; k < 3; k++) {
        float *ref = st_get(&ex, outs[k].name, outs[k].n);
        CHECK(ref != NULL, "expect file lacks %s", outs[k].name);
        if (!ref) continue;
        double atol = 1e-4 * max_abs(ref, outs[k].n);
        CHECK_CLOSE(outs[k].ours, ref, outs[k].n, atol, 1e-3, outs[k].name);
        for (int64_t i = 0; i < outs[k].n; i++) {
            double r = fabs(outs[k].ours[i] - ref[i]) / (max_abs(ref, outs[k].n) + 1e-30);
            worst_rel = r > worst_rel ? r : worst_rel;
        }
        free(ref);
    }
    int checked = 0;
    for (int i = 0; i < ps->n; i++) {
        char name[PARAM_MAX_NAME + 8];
        snprintf(name, sizeof name, "grad.%s", ps->p[i].name);
        float *ref = st_get(&ex, name, ps->p[i].numel);
        CHECK(ref != NULL, "expect file lacks %s", name);
        if (!ref) continue;
        double m = max_abs(ref, ps->p[i].numel);
        CHECK_CLOSE(params_grad(ps, i), ref, ps->p[i].numel, 1e-4 * m + 1e-7, 1e-3, name);
        for (int64_t j = 0; j < ps->p[i].numel; j++) {
            double r = fabs(params_grad(ps, i)[j] - ref[j]) / (m + 1e-30);
            worst_rel = r > worst_rel ? r : worst_rel;
        }
        checked++;
        free(ref);
    }
    /* the forward-only allocation gives the same output and bottleneck, bit for bit */
    {
        float *out2 = calloc((size_t)(N * D), sizeof(float)), *b1 = malloc((size_t)nb * sizeof(float));
        memcpy(b1, unet_bottleneck(u), (size_t)nb * sizeof(float));
        unet_alloc_batch_inference(u, N);
        edm_forward(&e, out2, x, sigma, labels, NULL, N, 0);
        CHECK(memcmp(out, out2, (size_t)(N * D) * sizeof(float)) == 0, "inference allocation changed the output");
        CHECK(memcmp(b1, unet_bottleneck(u), (size_t)nb * sizeof(float)) == 0, "inference allocation changed the bottleneck");
        free(out2);
        free(b1);
    }
    printf("  fixture: %d parameter gradients + out, bottleneck, dx; worst |diff|/max|ref| = %.3g\n", checked,
           worst_rel);
    CHECK(checked == ps->n);
    edm_free(&e);
    free(out); free(dx); free(x); free(sigma); free(lab); free(dout); free(dbott);
    st_free(&in); st_free(&dfile); st_free(&ex);
    unet_destroy(&u);
}

/* A fixed batch of class-dependent 8x8 patterns in [-1, 1]. */
static void make_batch(float *x, int32_t *labels, int64_t N, int64_t C, int64_t R) {
    for (int64_t n = 0; n < N; n++) {
        labels[n] = (int32_t)(n % 3);
        for (int64_t c = 0; c < C; c++)
            for (int64_t i = 0; i < R; i++)
                for (int64_t j = 0; j < R; j++) {
                    double v = labels[n] == 0 ? (i < R / 2 ? 1 : -1) : labels[n] == 1 ? (j < R / 2 ? 1 : -1)
                                                                                    : ((i + j) % 2 ? 1 : -1);
                    x[((n * C + c) * R + i) * R + j] = (float)(0.8 * v);
                }
    }
}

/* Trains the tiny UNet `steps` EDM steps on a fixed batch; losses[s] per step; eval0/eval1:
 * the loss at fixed sigmas and noise before and after. */
static void train_run(int steps, float *losses, float *eval0, float *eval1) {
    const Backend *be = &backend_cpu;
    char err[256];
    UNetConfig cfg;
    MSD_CHECK(unet_config_parse(&cfg, "in=1,res=8,ch=8,mult=1-2,blocks=1,attn=4,classes=3,headch=8", err,
                                sizeof err) == 0);
    UNet *u = unet_new(&cfg, be, ctx);
    unet_init(u, 7);
    const int64_t N = 12, D = 64;
    unet_alloc_batch(u, N);
    Edm e;
    edm_init(&e, unet_edm_net(u), N, be, ctx);
    OptimConfig oc;
    optim_config_default(&oc);
    oc.lr = 2e-3f;
    oc.weight_decay = 0;
    Optim *opt = optim_new(unet_params(u), &oc);
    float x[12 * 64], noise[12 * 64], sig[12];
    int32_t labels[12];
    make_batch(x, labels, N, 1, 8);
    be->rng_normal(ctx, noise, N * D, 99, 5, 0);
    for (int n = 0; n < N; n++) sig[n] = (float)(0.2 + 0.3 * n);  /* 0.2 .. 3.5 */
    *eval0 = edm_loss_given(&e, x, noise, sig, labels, NULL, N, 0);
    for (int s = 0; s < steps; s++) {
        params_zero_grad(unet_params(u));
        losses[s] = edm_loss_step(&e, x, labels, NULL, N, 1234, s, 1);
        edm_loss_backward(&e, N);
        optim_step(opt);
    }
    *eval1 = edm_loss_given(&e, x, noise, sig, labels, NULL, N, 0);
    optim_destroy(&opt);
    edm_free(&e);
    unet_destroy(&u);
}

static void test_training_repeats_and_learns(void) {
    int steps = UNDER_ASAN ? 100 : 200;
    float *a = calloc((size_t)steps, sizeof(float)), *b = calloc((size_t)steps, sizeof(float));
    float e0a, e1a, e0b, e1b;
    double t0 = msd_now();
    train_run(steps, a, &e0a, &e1a);
    double t1 = msd_now();
    printf("  %d EDM steps (%.2f s per run): loss first %.4f last %.4f; fixed-noise eval %.4f -> %.4f\n", steps,
           t1 - t0, (double)a[0], (double)a[steps - 1], (double)e0a, (double)e1a);
    if (!UNDER_ASAN) {   /* the repeat doubles a run that takes minutes under ASan; release checks it */
        train_run(steps, b, &e0b, &e1b);
        int same = memcmp(a, b, (size_t)steps * sizeof(float)) == 0 && e1a == e1b;
        CHECK(same, "two identical runs gave different losses");
    }
    for (int s = 0; s < steps; s++) CHECK(isfinite(a[s]), "loss %d not finite", s);
    CHECK(e1a < 0.6f * e0a, "eval loss did not fall enough: %g -> %g", (double)e0a, (double)e1a);
    free(a);
    free(b);
}

static void test_fmnist_s(void) {
    char err[256];
    UNetConfig cfg;
    REQUIRE(unet_config_parse(&cfg, "fmnist-s", err, sizeof err) == 0, "%s", err);
    UNet *u = unet_new(&cfg, &backend_cpu, ctx);
    ParamSet *ps = unet_params(u);
    int64_t count = 0;
    for (int i = 0; i < ps->n; i++) count += ps->p[i].numel;
    printf("  fmnist-s: %d tensors, %lld parameters, %.3f GFLOP per image forward\n", ps->n, (long long)count,
           unet_forward_flops(&cfg) * 1e-9);
    CHECK(count == 1744161, "docs/UNET.md says 1,744,161 parameters, got %lld", (long long)count);
    CHECK(params_find(ps, "enc.7x7_block1.qkv.weight") >= 0);
    CHECK(params_find(ps, "dec.28x28_block2.conv1.weight") >= 0);
    CHECK(params_find(ps, "map_label.weight") >= 0);
    int64_t chw[3];
    unet_bottleneck_shape(u, chw);
    CHECK(chw[0] == 64 && chw[1] == 7 && chw[2] == 7);
    char buf[512], err2[256];
    UNetConfig back;
    unet_config_str(&cfg, buf, sizeof buf);
    CHECK(unet_config_parse(&back, buf, err2, sizeof err2) == 0 && memcmp(&back, &cfg, sizeof cfg) == 0,
          "canonical spec '%s' does not round-trip", buf);
    unet_destroy(&u);
}

static void test_dropout_runs(void) {
    /* exercises the dropout path (forward with masks, backward through them) */
    const Backend *be = &backend_cpu;
    char err[256];
    UNetConfig cfg;
    REQUIRE(unet_config_parse(&cfg, "tiny,dropout=0.3", err, sizeof err) == 0, "%s", err);
    UNet *u = unet_new(&cfg, be, ctx);
    unet_init(u, 3);
    unet_set_dropout_seed(u, 5);
    unet_alloc_batch(u, 2);
    Edm e;
    edm_init(&e, unet_edm_net(u), 2, be, ctx);
    float x[2 * 192];
    int32_t labels[2] = {0, 2};
    be->rng_normal(ctx, x, 2 * 192, 1, 1, 0);
    float l1 = edm_loss_step(&e, x, labels, NULL, 2, 9, 0, 1);
    edm_loss_backward(&e, 2);
    double g = be->sumsq(ctx, unet_params(u)->grad, unet_params(u)->total);
    CHECK(isfinite(l1) && isfinite(g) && g > 0, "loss %g grad sumsq %g", (double)l1, g);
    edm_free(&e);
    unet_destroy(&u);
}

/* Dropout against the twin's explicit masks (tests/torch_unet.py, unet_tiny_dropout_expect): the
 * fixture's network and inputs with dropout p = 0.3 and seed 5, masks rebuilt in Python from the
 * documented Philox stream (docs/UNET.md section 9: element i kept, times 1/(1-p), when uniform
 * i of stream step * 4096 + layer is >= p). The first training forward's output, bottleneck and,
 * after the backward, dx and the gradients of every block's conv0.bias, norm1 and conv1 must
 * match (which mask, its scale and its stream; the backward through the same mask); the second
 * training forward must match the step-2 masks, and an evaluation forward (train = 0) the
 * network without dropout. Tolerance as the fixture test above. */
static void test_dropout_matches_fixture(void) {
    const Backend *be = &backend_cpu;
    char err[512], spec[64];
    StFile in, dfile, ex, dr;
    REQUIRE(st_read(&dr, check_fixture("unet_tiny_dropout_expect.safetensors"), err, sizeof err) == 0, "%s", err);
    REQUIRE(st_read(&in, check_fixture("unet_tiny_inputs.safetensors"), err, sizeof err) == 0, "%s", err);
    REQUIRE(st_read(&dfile, check_fixture("unet_tiny_dout.safetensors"), err, sizeof err) == 0, "%s", err);
    REQUIRE(st_read(&ex, check_fixture("unet_tiny_expect.safetensors"), err, sizeof err) == 0, "%s", err);
    float *pv = st_get(&dr, "dropout_p", 1), *sv = st_get(&dr, "dropout_seed", 1);
    REQUIRE(pv && sv, "fixture lacks dropout_p / dropout_seed");
    snprintf(spec, sizeof spec, "tiny,dropout=%.9g", (double)pv[0]);
    UNetConfig cfg;
    REQUIRE(unet_config_parse(&cfg, spec, err, sizeof err) == 0, "%s", err);
    UNet *u = unet_new(&cfg, be, ctx);
    ParamSet *ps = unet_params(u);
    REQUIRE(st_load_params(check_fixture("unet_tiny_weights.safetensors"), ps, "", 0, err, sizeof err) == 0, "%s", err);
    unet_set_dropout_seed(u, (uint64_t)sv[0]);
    const StTensor *tx = st_find(&in, "x");
    REQUIRE(tx && tx->ndim == 4, "x missing");
    int64_t N = tx->shape[0], D = tx->numel / N, chw[3];
    unet_bottleneck_shape(u, chw);
    int64_t nb = N * chw[0] * chw[1] * chw[2];
    float *x = st_get(&in, "x", -1), *sigma = st_get(&in, "sigma", N), *lab = st_get(&in, "labels", N);
    float *dout = st_get(&dfile, "dout", N * D), *dbott = st_get(&dfile, "dbottleneck", nb);
    REQUIRE(x && sigma && lab && dout && dbott && N <= 16, "fixture inputs incomplete");
    int32_t labels[16];
    for (int64_t n = 0; n < N; n++) labels[n] = (int32_t)lab[n];
    unet_alloc_batch(u, N);
    Edm e;
    edm_init(&e, unet_edm_net(u), N, be, ctx);
    float *out = calloc((size_t)(N * D), sizeof(float)), *dx = calloc((size_t)(N * D), sizeof(float));
    float *out_nodrop = st_get(&ex, "out", N * D);
    /* step 1: forward and backward */
    edm_forward(&e, out, x, sigma, labels, NULL, N, 1);
    float *bott = malloc((size_t)nb * sizeof(float));
    memcpy(bott, unet_bottleneck(u), (size_t)nb * sizeof(float));
    params_zero_grad(ps);
    edm_backward(&e, dx, dout, dbott, N);
    struct { const char *name; const float *ours; int64_t n; } outs[] = {
        {"out", out, N * D}, {"bottleneck", bott, nb}, {"dx", dx, N * D}};
    for (int k = 0; k < 3; k++) {
        float *ref = st_get(&dr, outs[k].name, outs[k].n);
        CHECK(ref != NULL, "dropout fixture lacks %s", outs[k].name);
        if (!ref) continue;
        char what[64];
        snprintf(what, sizeof what, "dropout step 1: %s", outs[k].name);
        CHECK_CLOSE(outs[k].ours, ref, outs[k].n, 1e-4 * max_abs(ref, outs[k].n), 1e-3, what);
        free(ref);
    }
    int checked = 0;
    for (int i = 0; i < ps->n; i++) {
        char name[PARAM_MAX_NAME + 8];
        snprintf(name, sizeof name, "grad.%s", ps->p[i].name);
        float *ref = st_get(&dr, name, ps->p[i].numel);
        if (!ref) continue;
        CHECK_CLOSE(params_grad(ps, i), ref, ps->p[i].numel, 1e-4 * max_abs(ref, ps->p[i].numel) + 1e-7, 1e-3, name);
        checked++;
        free(ref);
    }
    CHECK(checked == 5 * 8, "%d dropout gradients compared (want conv0.bias, norm1 x2, conv1 x2 of 8 blocks)",
          checked);
    /* the mask changed the output (every block's mask sits on the path to it) */
    double moved = 0;
    if (out_nodrop)
        for (int64_t i = 0; i < N * D; i++) moved = fmax(moved, fabs(out[i] - out_nodrop[i]));
    CHECK(moved > 1e-2 * max_abs(out_nodrop ? out_nodrop : out, N * D), "dropout moved the output by only %g", moved);
    /* step 2: new masks */
    edm_forward(&e, out, x, sigma, labels, NULL, N, 1);
    float *ref2 = st_get(&dr, "out_step2", N * D);
    CHECK(ref2 != NULL, "dropout fixture lacks out_step2");
    if (ref2) CHECK_CLOSE(out, ref2, N * D, 1e-4 * max_abs(ref2, N * D), 1e-3, "dropout step 2: out");
    /* evaluation: no dropout, whatever the step */
    edm_forward(&e, out, x, sigma, labels, NULL, N, 0);
    if (out_nodrop) CHECK_CLOSE(out, out_nodrop, N * D, 1e-4 * max_abs(out_nodrop, N * D), 1e-3, "train = 0: out");
    printf("  dropout: step-1 output, bottleneck, dx and %d gradients, step-2 output, evaluation output\n", checked);
    edm_free(&e);
    free(out); free(dx); free(bott); free(ref2); free(out_nodrop);
    free(x); free(sigma); free(lab); free(dout); free(dbott); free(pv); free(sv);
    st_free(&in); st_free(&dfile); st_free(&ex); st_free(&dr);
    unet_destroy(&u);
}

/* The UNet on a backend without the fused norm_act ops (as the CUDA backend is) composes them
 * from the separate ops; on the CPU both ways must give the same loss and gradients bit for
 * bit, with and without dropout (whose mask sits between the activation and the conv), and so
 * must a backend that has only one of the two fused ops (the backward then needs the separate
 * forward's intermediates). */
static void fused_vs_separate(const char *spec) {
    char err[256];
    UNetConfig cfg;
    REQUIRE(unet_config_parse(&cfg, spec, err, sizeof err) == 0, "%s", err);
    Backend sep = backend_cpu, fwd_only = backend_cpu, bwd_only = backend_cpu;
    sep.norm_act_forward = NULL;
    sep.norm_act_backward = NULL;
    fwd_only.norm_act_backward = NULL;
    bwd_only.norm_act_forward = NULL;
    const Backend *bes[4] = {&backend_cpu, &sep, &fwd_only, &bwd_only};
    const char *names[4] = {"fused", "separate", "fused forward only", "fused backward only"};
    float loss[4];
    float *grad[4];
    int64_t total = 0;
    const int64_t N = 3, D = (int64_t)cfg.in_ch * cfg.res * cfg.res;
    float *x = malloc((size_t)(N * D) * sizeof(float));
    backend_cpu.rng_normal(ctx, x, N * D, 4, 4, 0);
    int32_t labels[3] = {0, 1, 2};
    for (int k = 0; k < 4; k++) {
        UNet *u = unet_new(&cfg, bes[k], ctx);
        unet_init(u, 11);
        /* every weight non-zero (the init zeroes the last conv of each block and of the net) */
        ParamSet *ps = unet_params(u);
        float *w = malloc((size_t)ps->total * sizeof(float));
        backend_cpu.rng_normal(ctx, w, ps->total, 8, 8, 0);
        for (int64_t i = 0; i < ps->total; i++) ps->data[i] += 0.05f * w[i];
        free(w);
        unet_set_dropout_seed(u, 6);
        unet_alloc_batch(u, N);
        Edm e;
        edm_init(&e, unet_edm_net(u), N, bes[k], ctx);
        params_zero_grad(unet_params(u));
        loss[k] = edm_loss_step(&e, x, labels, NULL, N, 21, 0, 1);
        edm_loss_backward(&e, N);
        total = unet_params(u)->total;
        grad[k] = malloc((size_t)total * sizeof(float));
        memcpy(grad[k], unet_params(u)->grad, (size_t)total * sizeof(float));
        edm_free(&e);
        unet_destroy(&u);
    }
    int64_t nz = 0;
    for (int64_t i = 0; i < total; i++) nz += grad[0][i] != 0.0f;
    CHECK(nz > total / 2, "%s: only %lld of %lld gradients non-zero", spec, (long long)nz, (long long)total);
    for (int k = 1; k < 4; k++) {
        int64_t diff = 0;
        for (int64_t i = 0; i < total; i++) diff += memcmp(&grad[0][i], &grad[k][i], sizeof(float)) != 0;
        CHECK(loss[0] == loss[k], "%s: loss fused %.9g, %s %.9g", spec, (double)loss[0], names[k], (double)loss[k]);
        CHECK(diff == 0, "%s: %s: %lld of %lld gradients differ from the fused ones", spec, names[k], (long long)diff,
              (long long)total);
    }
    for (int k = 0; k < 4; k++) free(grad[k]);
    free(x);
}

static void test_fused_matches_separate(void) {
    fused_vs_separate("tiny");
    fused_vs_separate("tiny,dropout=0.3");
}

static void test_config_errors(void) {
    const char *bad[] = {"", "nope", "fmnist-s,foo=1", "fmnist-s,ch=0", "fmnist-s,res=30", "fmnist-s,attn=5",
                         "fmnist-s,classes=3,cond=4", "fmnist-s,dropout=1", "fmnist-s,mult=", "fmnist-s,ch=33",
                         "fmnist-s,ch=18", "fmnist-s,blocks=x", "res=28,fmnist-s"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        UNetConfig cfg;
        char err[256] = "";
        int rc = unet_config_parse(&cfg, bad[i], err, sizeof err);
        CHECK(rc == -1 && err[0], "spec '%s' accepted", bad[i]);
    }
    UNetConfig cfg;
    char err[256];
    CHECK(unet_config_parse(&cfg, "fmnist-s,dropout=0.1,attn=none", err, sizeof err) == 0, "%s", err);
    CHECK(cfg.n_attn == 0 && cfg.dropout > 0.09f);
}

/* The student sizes of docs/UNET.md section 12: each name parses to the teacher's interface
 * (28x28x1, 10 classes, EDM), has exactly the documented parameter and FLOP counts and a
 * smaller FLOP count than fmnist-s, and runs a forward and a backward at batch 3 in which
 * every output, dx and parameter gradient is finite and every parameter tensor gets a nonzero
 * gradient (the zero-initialised tensors are filled with small random values first, so the
 * gradient reaches every layer). */
static void test_student_sizes(void) {
    static const struct { const char *name; int64_t params; double flops; int64_t bottleneck_c; } sizes[] = {
        {"fmnist-m", 597633, 170933760, 48},
        {"fmnist-xs", 300577, 95900416, 32},
    };
    const Backend *be = &backend_cpu;
    char err[256];
    UNetConfig teacher;
    REQUIRE(unet_config_parse(&teacher, "fmnist-s", err, sizeof err) == 0, "%s", err);
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        UNetConfig cfg;
        CHECK(unet_config_parse(&cfg, sizes[k].name, err, sizeof err) == 0, "%s: %s", sizes[k].name, err);
        if (check_cur_failed_) continue;
        CHECK(cfg.in_ch == 1 && cfg.res == 28 && cfg.label_dim == 10 && cfg.cond_dim == 0 && cfg.dropout == 0,
              "%s: not the teacher's interface (in %d res %d classes %d cond %d)", sizes[k].name, cfg.in_ch, cfg.res,
              cfg.label_dim, cfg.cond_dim);
        UNet *u = unet_new(&cfg, be, ctx);
        ParamSet *ps = unet_params(u);
        int64_t count = params_count(ps);
        double flops = unet_forward_flops(&cfg);
        printf("  %s: %d tensors, %lld parameters (%.1f%% of fmnist-s), %.0f FLOP per image forward (%.1f%%)\n",
               sizes[k].name, ps->n, (long long)count, 100.0 * (double)count / 1744161.0, flops,
               100.0 * flops / unet_forward_flops(&teacher));
        CHECK(count == sizes[k].params, "%s: docs/UNET.md says %lld parameters, got %lld", sizes[k].name,
              (long long)sizes[k].params, (long long)count);
        CHECK(flops == sizes[k].flops, "%s: docs/UNET.md says %.0f FLOP per image, got %.0f", sizes[k].name,
              sizes[k].flops, flops);
        int64_t chw[3];
        unet_bottleneck_shape(u, chw);
        CHECK(chw[0] == sizes[k].bottleneck_c && chw[1] == 7 && chw[2] == 7, "%s: bottleneck %lldx%lldx%lld",
              sizes[k].name, (long long)chw[0], (long long)chw[1], (long long)chw[2]);

        unet_init(u, 11);
        for (int i = 0; i < ps->n; i++) {   /* the zero-initialised tensors (conv1, proj, out.conv) */
            float *w = params_data(ps, i);
            double ss = be->sumsq(ctx, w, ps->p[i].numel);
            if (ss == 0) {
                be->rng_uniform(ctx, w, ps->p[i].numel, 12, (uint64_t)i, 0);
                be->scale(ctx, w, w, 0.1f, ps->p[i].numel);
            }
        }
        const int64_t N = 3, D = 28 * 28;
        unet_alloc_batch(u, N);
        Edm e;
        edm_init(&e, unet_edm_net(u), N, be, ctx);
        float *x = calloc((size_t)(N * D), sizeof(float)), *out = calloc((size_t)(N * D), sizeof(float));
        float *dout = calloc((size_t)(N * D), sizeof(float)), *dx = calloc((size_t)(N * D), sizeof(float));
        float sigma[3] = {0.05f, 1.0f, 40.0f};
        int32_t labels[3] = {0, 4, 9};
        be->rng_normal(ctx, x, N * D, 13, 0, 0);
        be->rng_normal(ctx, dout, N * D, 14, 0, 0);
        edm_forward(&e, out, x, sigma, labels, NULL, N, 1);
        params_zero_grad(ps);
        edm_backward(&e, dx, dout, NULL, N);
        int64_t bad_out = 0, bad_dx = 0;
        for (int64_t i = 0; i < N * D; i++) {
            bad_out += !isfinite(out[i]);
            bad_dx += !isfinite(dx[i]);
        }
        CHECK(bad_out == 0 && bad_dx == 0, "%s: %lld non-finite outputs, %lld non-finite dx", sizes[k].name,
              (long long)bad_out, (long long)bad_dx);
        CHECK(be->sumsq(ctx, dx, N * D) > 0, "%s: dx is all zero", sizes[k].name);
        int dead = 0;
        const char *first_dead = "";
        for (int i = 0; i < ps->n; i++) {
            double g = be->sumsq(ctx, params_grad(ps, i), ps->p[i].numel);
            if (!(isfinite(g) && g > 0)) {
                if (!dead++) first_dead = ps->p[i].name;
            }
        }
        CHECK(dead == 0, "%s: %d of %d parameter tensors have a zero or non-finite gradient (first: %s)",
              sizes[k].name, dead, ps->n, first_dead);
        free(x); free(out); free(dout); free(dx);
        edm_free(&e);
        unet_destroy(&u);
    }
}

/* The committed teacher (models/fmnist_teacher.safetensors) into a fresh fmnist-s: the way a
 * student of the teacher's size starts from the teacher's weights (edmunet_open with the spec
 * "fmnist-s": the file's "unet.spec" must equal it, every tensor must match by name and shape,
 * the EMA weights become the weights). Checked: it loads, the weights are not the fresh
 * initialisation (out.conv starts at zero), and they equal the file's EMA tensors (ema.NAME,
 * or NAME in an export that holds only the EMA weights, as the committed file does); a training
 * fmnist-s (edmunet_new with an optimiser) gets the same weights through st_load_params. */
static void test_teacher_into_fmnist_s(void) {
    char path[1200], err[512];
    snprintf(path, sizeof path, "%s", check_fixture("../../models/fmnist_teacher.safetensors"));
    EdmUNet t;
    REQUIRE(edmunet_open(&t, path, "fmnist-s", &backend_cpu, ctx, 2, err, sizeof err) == 0, "%s", err);
    ParamSet *ps = unet_params(t.unet);
    StFile f;
    REQUIRE(st_read(&f, path, err, sizeof err) == 0, "%s", err);
    int differ = 0;
    for (int i = 0; i < ps->n; i++) {
        char name[PARAM_MAX_NAME + 8];
        snprintf(name, sizeof name, "ema.%s", ps->p[i].name);
        float *ref = st_get(&f, name, ps->p[i].numel);
        if (!ref) ref = st_get(&f, ps->p[i].name, ps->p[i].numel);   /* an export: the EMA weights, bare */
        CHECK(ref != NULL, "%s lacks %s", path, ps->p[i].name);
        if (!ref) continue;
        differ += memcmp(ref, params_data(ps, i), (size_t)ps->p[i].numel * sizeof(float)) != 0;
        free(ref);
    }
    CHECK(differ == 0, "%d tensors differ from the file's EMA weights", differ);
    int oc = params_find(ps, "out.conv.weight");
    REQUIRE(oc >= 0);
    CHECK(backend_cpu.sumsq(ctx, params_data(ps, oc), ps->p[oc].numel) > 0, "out.conv.weight is zero: not loaded");
    /* a training net (with an optimiser) takes the same weights through st_load_params */
    EdmUNet tr;
    OptimConfig oc_cfg;
    optim_config_default(&oc_cfg);
    REQUIRE(edmunet_new(&tr, "fmnist-s", &backend_cpu, ctx, 2, &oc_cfg, 1, err, sizeof err) == 0, "%s", err);
    ParamSet *ps2 = unet_params(tr.unet);
    CHECK(st_load_params(path, ps2, "", ST_ALLOW_EXTRA, err, sizeof err) == 0, "%s", err);
    CHECK(ps2->total == ps->total && memcmp(ps2->data, ps->data, (size_t)ps->total * sizeof(float)) == 0,
          "the training net's weights differ from edmunet_open's");
    printf("  %s: %d tensors, %lld parameters loaded into fmnist-s (inference and training net)\n", path, ps->n,
           (long long)params_count(ps));
    edmunet_free(&tr);
    st_free(&f);
    edmunet_free(&t);
}

int main(int argc, char **argv) {
    (void)argc;
    check_find_fixtures(argv[0]);
    ctx = backend_ctx_new(&backend_cpu, 2);
    TEST_RUN(test_fixture_forward_backward);
    TEST_RUN(test_fmnist_s);
    TEST_RUN(test_config_errors);
    TEST_RUN(test_student_sizes);
    TEST_RUN(test_teacher_into_fmnist_s);
    TEST_RUN(test_dropout_runs);
    TEST_RUN(test_dropout_matches_fixture);
    TEST_RUN(test_fused_matches_separate);
    TEST_RUN(test_training_repeats_and_learns);
    backend_ctx_destroy(&ctx);
    return TEST_END();
}
