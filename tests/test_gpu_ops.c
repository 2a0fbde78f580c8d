/* test_gpu_ops.c: the CUDA backend against the CPU reference (backend_cpu), run by
 * `make test-gpu` (tests/run-gpu) only. Every op of the table runs on both backends on the same
 * random inputs, at several shapes including sizes that are not multiples of any block size;
 * gradients start at random values (backward must ADD). Tolerances, stated per check: an op
 * whose result is a sum of many products (conv, linear, attention, norm statistics) is compared
 * with atol = tol * max(1, max|want|) and rtol = tol, where tol is 1e-4 in float32 (TF32 off,
 * the default; 5e-3 when the environment sets MSD_TF32=1); pointwise ops with 1e-5; the RNG's
 * uniforms bit for bit and its normals within 1 float ulp (rng.h). Failures print the worst
 * element (CHECK_CLOSE); every op also prints its largest difference.
 *
 * Then the model: the fmnist-s UNet (common/models/unet.h) under EDM (common/models/edm.h) and AdamW
 * (common/nn/optimizer.h): one training step CUDA vs CPU from identical weights (loss, every
 * parameter gradient, the updated weights), a short training run on both (per-step losses), a
 * repeat of a GPU step (bit-identical), and checkpoints across backends (train on CUDA, save,
 * load on the CPU, continue on both; and CPU -> CUDA). The fused GroupNorm + modulation + SiLU
 * (norm_act_*) is in the CUDA table here (MSD_CUDA_NORM_ACT=1 unless the environment says 0),
 * so the model tests run it; tools/gpu-check runs this program again with it off.
 *
 * Without a CUDA build or without a GPU this prints why, "0 passed, 0 failed" and exits 77
 * (skipped), never a pass. MSD_TEST_GPU=N picks the GPU (default 0); MSD_TEST_GPU_QUICK=1 runs
 * the op tests only (for compute-sanitizer, which makes the model tests too slow). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "check.h"
#include "op_count.h"
#define TEST_RAND_SEED 0x2545F4914F6CDD1Dull
#include "rand.h"
#include "checkpoint.h"
#include "edm.h"
#include "log.h"
#include "optimizer.h"
#include "parallel.h"
#include "unet.h"

static const Backend *cpu = &backend_cpu, *gpu;
static BackendCtx *cctx, *gctx;
static double tol_mm = 1e-4; /* products and reductions; 5e-3 under MSD_TF32=1 */
#define TOL_PW 1e-5          /* pointwise */

/* ---- helpers ---- */
/* a device copy of host x (NULL stays NULL) */
static float *dup_dev(const float *x, int64_t n) {
    if (!x) return NULL;
    float *d = gpu->alloc(gctx, n);
    gpu->upload(gctx, d, x, n);
    return d;
}
/* a host copy of device x */
static float *dup_host(const float *d, int64_t n) {
    float *h = msd_malloc((size_t)(n ? n : 1) * sizeof(float));
    gpu->download(gctx, h, d, n);
    return h;
}
static void dfree(float *d) {
    if (d) gpu->free(gctx, d);
}
static double max_abs(const float *x, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs((double)x[i]));
    return m;
}
/* Compare the device result d against the host reference want: |got - want| <= atol + tol*|want|,
 * atol = tol * max(1, max|want|). Prints the largest difference; CHECK_CLOSE prints the worst. */
static void cmp(const char *what, const float *d, const float *want, int64_t n, double tol) {
    float *got = dup_host(d, n);
    double scale = fmax(1.0, max_abs(want, n)), atol = tol * scale, md = 0;
    for (int64_t i = 0; i < n; i++) md = fmax(md, fabs((double)got[i] - (double)want[i]));
    printf("  %-44s n=%-8lld max|diff| %.3g (atol %.3g, rtol %.3g)\n", what, (long long)n, md, atol, tol);
    CHECK_CLOSE(got, want, n, atol, tol, what);
    free(got);
}

/* ---- table, memory ---- */
static void test_table(void) {
    char err[2048];
    int missing = backend_missing(gpu, err, sizeof err);
    CHECK(missing == 0, "CUDA backend lacks %d ops: %s", missing, err);
    CHECK(gpu->device == DEVICE_CUDA && !strcmp(gpu->name, "cuda"));
    const char *need[] = {"conv2d_forward", "attention_backward", "rng_normal", NULL};
    CHECK(backend_require(gpu, need, err, sizeof err) == 0, "%s", err);
}

static void test_memory(void) {
    const int64_t sizes[] = {1, 3, 255, 257, 100003};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        int64_t n = sizes[k];
        float *d = gpu->alloc(gctx, n), *h = dup_host(d, n);
        int nz = 0;
        for (int64_t i = 0; i < n; i++) nz += h[i] != 0.0f;
        CHECK(nz == 0, "alloc(%lld) not zeroed: %d nonzero", (long long)n, nz);
        float *x = rnd(n, -3, 3);
        gpu->upload(gctx, d, x, n);
        float *d2 = gpu->alloc(gctx, n);
        gpu->copy(gctx, d2, d, n);
        free(h);
        h = dup_host(d2, n);
        CHECK(memcmp(h, x, (size_t)n * sizeof(float)) == 0, "upload/copy/download round trip, n=%lld", (long long)n);
        gpu->fill(gctx, d2, 3.5f, n);
        free(h);
        h = dup_host(d2, n);
        int bad = 0;
        for (int64_t i = 0; i < n; i++) bad += h[i] != 3.5f;
        gpu->fill(gctx, d2, 0.0f, n);
        free(h);
        h = dup_host(d2, n);
        for (int64_t i = 0; i < n; i++) bad += h[i] != 0.0f;
        CHECK(bad == 0, "fill n=%lld: %d wrong", (long long)n, bad);
        free(h); free(x);
        dfree(d); dfree(d2);
    }
}

/* ---- RNG: uniforms bit for bit, normals within 1 ulp ---- */
static int ulp_apart(float a, float b) {
    if (a == b) return 0;
    if (nextafterf(a, b) == b) return 1;
    return 2;
}
static void test_rng(void) {
    const int64_t ns[] = {1, 3, 4, 1001, 65537};
    const uint64_t offs[] = {0, 1, 2, 3, 5, (1ull << 33) + 3};
    const uint64_t seeds[] = {0, 42, 0xDEADBEEFCAFEF00Dull};
    const uint64_t streams[] = {0, 7, 0x123456789ull};
    int64_t uni_bad = 0, norm_1ulp = 0, norm_bad = 0, total = 0;
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
        for (size_t b = 0; b < sizeof offs / sizeof offs[0]; b++)
            for (size_t c = 0; c < 3; c++) {
                int64_t n = ns[a];
                uint64_t seed = seeds[c], stream = streams[(a + b) % 3], off = offs[b];
                float *want = msd_malloc((size_t)n * sizeof(float)), *d = gpu->alloc(gctx, n + 2);
                gpu->fill(gctx, d, -7.0f, n + 2);
                cpu->rng_uniform(cctx, want, n, seed, stream, off);
                gpu->rng_uniform(gctx, d + 1, n, seed, stream, off);
                float *got = dup_host(d, n + 2);
                for (int64_t i = 0; i < n; i++) uni_bad += memcmp(&got[i + 1], &want[i], sizeof(float)) != 0;
                CHECK(got[0] == -7.0f && got[n + 1] == -7.0f, "rng_uniform wrote outside [0, n), n=%lld off=%llu",
                      (long long)n, (unsigned long long)off);
                free(got);
                cpu->rng_normal(cctx, want, n, seed, stream, off);
                gpu->rng_normal(gctx, d + 1, n, seed, stream, off);
                got = dup_host(d, n + 2);
                for (int64_t i = 0; i < n; i++) {
                    int u = ulp_apart(got[i + 1], want[i]);
                    norm_1ulp += u == 1;
                    norm_bad += u > 1;
                }
                CHECK(got[0] == -7.0f && got[n + 1] == -7.0f, "rng_normal wrote outside [0, n)");
                total += n;
                free(got); free(want);
                dfree(d);
            }
    printf("  rng: %lld numbers per kind; uniforms differing %lld; normals 1 ulp apart %lld, more %lld\n",
           (long long)total, (long long)uni_bad, (long long)norm_1ulp, (long long)norm_bad);
    CHECK(uni_bad == 0, "%lld uniforms differ from the CPU's bits", (long long)uni_bad);
    CHECK(norm_bad == 0, "%lld normals differ by more than 1 ulp", (long long)norm_bad);
}

/* ---- convolution ---- */
static void check_conv(ConvShape s, int bias) {
    const int64_t Ho = conv_out_h(&s), Wo = conv_out_w(&s);
    const int64_t nin = s.N * s.C * s.H * s.W, nw = s.O * s.C * s.K * s.K, nout = s.N * s.O * Ho * Wo;
    float *in = rnd(nin, -1, 1), *w = rnd(nw, -0.3f, 0.3f), *b = bias ? rnd(s.O, -1, 1) : NULL;
    float *out = rnd(nout, -1, 1), *dout = rnd(nout, -1, 1);
    float *din = rnd(nin, -1, 1), *dw = rnd(nw, -1, 1), *db = rnd(s.O, -1, 1);
    float *gin = dup_dev(in, nin), *gw = dup_dev(w, nw), *gb = dup_dev(b, s.O), *gout = dup_dev(out, nout),
          *gdout = dup_dev(dout, nout), *gdin = dup_dev(din, nin), *gdw = dup_dev(dw, nw), *gdb = dup_dev(db, s.O);
    char what[160];
    snprintf(what, sizeof what, "conv %lldx%lldx%lldx%lld o%lld k%lld s%lld p%lld%s", (long long)s.N, (long long)s.C,
             (long long)s.H, (long long)s.W, (long long)s.O, (long long)s.K, (long long)s.stride, (long long)s.pad,
             bias ? " +b" : "");
    cpu->conv2d_forward(cctx, out, in, w, b, &s);
    gpu->conv2d_forward(gctx, gout, gin, gw, gb, &s);
    char w2[200];
    snprintf(w2, sizeof w2, "%s fwd", what);
    cmp(w2, gout, out, nout, tol_mm);
    /* twice: the second call must add again (and reuses the cached plan) */
    for (int rep = 0; rep < 2; rep++) {
        cpu->conv2d_backward(cctx, din, dw, bias ? db : NULL, dout, in, w, &s);
        gpu->conv2d_backward(gctx, gdin, gdw, bias ? gdb : NULL, gdout, gin, gw, &s);
    }
    snprintf(w2, sizeof w2, "%s din", what);
    cmp(w2, gdin, din, nin, tol_mm);
    snprintf(w2, sizeof w2, "%s dw", what);
    cmp(w2, gdw, dw, nw, tol_mm);
    if (bias) {
        snprintf(w2, sizeof w2, "%s db", what);
        cmp(w2, gdb, db, s.O, tol_mm);
    }
    /* only dw wanted */
    cpu->conv2d_backward(cctx, NULL, dw, NULL, dout, in, NULL, &s);
    gpu->conv2d_backward(gctx, NULL, gdw, NULL, gdout, gin, NULL, &s);
    snprintf(w2, sizeof w2, "%s dw only", what);
    cmp(w2, gdw, dw, nw, tol_mm);
    free(in); free(w); free(b); free(out); free(dout); free(din); free(dw); free(db);
    dfree(gin); dfree(gw); dfree(gb); dfree(gout); dfree(gdout); dfree(gdin); dfree(gdw); dfree(gdb);
}
static void test_conv(void) {
    const ConvShape shapes[] = {
        {3, 5, 11, 13, 7, 3, 1, 1}, {2, 4, 9, 9, 6, 4, 2, 1}, {2, 3, 10, 7, 5, 1, 1, 0}, {1, 6, 15, 15, 4, 3, 2, 0},
        {5, 1, 28, 28, 32, 3, 1, 1}, {8, 64, 14, 14, 64, 3, 1, 1}, {4, 32, 28, 28, 64, 3, 2, 1},
        {6, 64, 7, 7, 192, 1, 1, 0},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) check_conv(shapes[i], (int)(i % 3 != 2));
}

/* ---- linear ---- */
static void check_linear(int64_t N, int64_t I, int64_t O, int bias) {
    float *in = rnd(N * I, -1, 1), *w = rnd(O * I, -0.5f, 0.5f), *b = bias ? rnd(O, -1, 1) : NULL;
    float *out = rnd(N * O, -1, 1), *dout = rnd(N * O, -1, 1), *din = rnd(N * I, -1, 1), *dw = rnd(O * I, -1, 1),
          *db = rnd(O, -1, 1);
    float *gin = dup_dev(in, N * I), *gw = dup_dev(w, O * I), *gb = dup_dev(b, O), *gout = dup_dev(out, N * O),
          *gdout = dup_dev(dout, N * O), *gdin = dup_dev(din, N * I), *gdw = dup_dev(dw, O * I), *gdb = dup_dev(db, O);
    char what[120], w2[160];
    snprintf(what, sizeof what, "linear N%lld I%lld O%lld%s", (long long)N, (long long)I, (long long)O,
             bias ? " +b" : "");
    cpu->linear_forward(cctx, out, in, w, b, N, I, O);
    gpu->linear_forward(gctx, gout, gin, gw, gb, N, I, O);
    snprintf(w2, sizeof w2, "%s fwd", what);
    cmp(w2, gout, out, N * O, tol_mm);
    for (int rep = 0; rep < 2; rep++) {
        cpu->linear_backward(cctx, din, dw, db, dout, in, w, N, I, O);
        gpu->linear_backward(gctx, gdin, gdw, gdb, gdout, gin, gw, N, I, O);
    }
    snprintf(w2, sizeof w2, "%s din", what);
    cmp(w2, gdin, din, N * I, tol_mm);
    snprintf(w2, sizeof w2, "%s dw", what);
    cmp(w2, gdw, dw, O * I, tol_mm);
    snprintf(w2, sizeof w2, "%s db", what);
    cmp(w2, gdb, db, O, tol_mm);
    free(in); free(w); free(b); free(out); free(dout); free(din); free(dw); free(db);
    dfree(gin); dfree(gw); dfree(gb); dfree(gout); dfree(gdout); dfree(gdin); dfree(gdw); dfree(gdb);
}
static void test_linear(void) {
    check_linear(1, 1, 1, 1);
    check_linear(5, 7, 3, 0);
    check_linear(37, 129, 65, 1);
    check_linear(256, 128, 512, 1);
}

/* ---- group norm ---- */
static void check_groupnorm(int64_t N, int64_t C, int64_t HW, int64_t G, int affine) {
    const int64_t n = N * C * HW;
    float *x = rnd(n, -2, 3), *gamma = affine ? rnd(C, 0.5f, 1.5f) : NULL, *beta = affine ? rnd(C, -1, 1) : NULL;
    float *out = rnd(n, -1, 1), *mean = rnd(N * G, -1, 1), *rstd = rnd(N * G, -1, 1);
    float *dout = rnd(n, -1, 1), *din = rnd(n, -1, 1), *dg = rnd(C, -1, 1), *dbt = rnd(C, -1, 1);
    float *gx = dup_dev(x, n), *gg = dup_dev(gamma, C), *gbt = dup_dev(beta, C), *gout = dup_dev(out, n),
          *gmean = dup_dev(mean, N * G), *grstd = dup_dev(rstd, N * G), *gdout = dup_dev(dout, n),
          *gdin = dup_dev(din, n), *gdg = dup_dev(dg, C), *gdbt = dup_dev(dbt, C);
    char what[120], w2[160];
    snprintf(what, sizeof what, "groupnorm N%lld C%lld HW%lld G%lld%s", (long long)N, (long long)C, (long long)HW,
             (long long)G, affine ? "" : " noaffine");
    cpu->groupnorm_forward(cctx, out, mean, rstd, x, gamma, beta, N, C, HW, G, 1e-5f);
    gpu->groupnorm_forward(gctx, gout, gmean, grstd, gx, gg, gbt, N, C, HW, G, 1e-5f);
    snprintf(w2, sizeof w2, "%s out", what);
    cmp(w2, gout, out, n, tol_mm);
    snprintf(w2, sizeof w2, "%s mean", what);
    cmp(w2, gmean, mean, N * G, tol_mm);
    snprintf(w2, sizeof w2, "%s rstd", what);
    cmp(w2, grstd, rstd, N * G, tol_mm);
    /* backward from the CPU's statistics on both, so only the backward is compared */
    gpu->upload(gctx, gmean, mean, N * G);
    gpu->upload(gctx, grstd, rstd, N * G);
    cpu->groupnorm_backward(cctx, din, affine ? dg : NULL, affine ? dbt : NULL, dout, x, mean, rstd, gamma, N, C, HW,
                            G);
    gpu->groupnorm_backward(gctx, gdin, affine ? gdg : NULL, affine ? gdbt : NULL, gdout, gx, gmean, grstd, gg, N, C,
                            HW, G);
    snprintf(w2, sizeof w2, "%s din", what);
    cmp(w2, gdin, din, n, tol_mm);
    if (affine) {
        snprintf(w2, sizeof w2, "%s dgamma", what);
        cmp(w2, gdg, dg, C, tol_mm);
        snprintf(w2, sizeof w2, "%s dbeta", what);
        cmp(w2, gdbt, dbt, C, tol_mm);
    }
    free(x); free(gamma); free(beta); free(out); free(mean); free(rstd); free(dout); free(din); free(dg); free(dbt);
    dfree(gx); dfree(gg); dfree(gbt); dfree(gout); dfree(gmean); dfree(grstd); dfree(gdout); dfree(gdin); dfree(gdg);
    dfree(gdbt);
}
static void test_groupnorm(void) {
    check_groupnorm(2, 6, 5, 3, 1);
    check_groupnorm(3, 64, 49, 32, 1);
    check_groupnorm(4, 32, 784, 8, 0);
    check_groupnorm(1, 12, 1000, 1, 1);
    check_groupnorm(9, 128, 196, 32, 1);
}

/* ---- fused GroupNorm + modulation + SiLU (norm_act_*, norm.cu; in the table under
 * MSD_CUDA_NORM_ACT=1, which main sets unless the environment says 0) ---- */
static void check_norm_act(int64_t N, int64_t C, int64_t HW, int64_t G, int affine, int mod) {
    const int64_t n = N * C * HW;
    float *x = rnd(n, -2, 3), *gamma = affine ? rnd(C, 0.5f, 1.5f) : NULL, *beta = affine ? rnd(C, -1, 1) : NULL;
    float *ss = mod ? rnd(N * 2 * C, -0.5f, 0.5f) : NULL;
    float *out = rnd(n, -1, 1), *mean = rnd(N * G, -1, 1), *rstd = rnd(N * G, -1, 1);
    float *dout = rnd(n, -1, 1), *din = rnd(n, -1, 1), *dg = rnd(C, -1, 1), *dbt = rnd(C, -1, 1);
    float *dss = mod ? rnd(N * 2 * C, -1, 1) : NULL;
    float *gx = dup_dev(x, n), *gg = dup_dev(gamma, C), *gbt = dup_dev(beta, C), *gss = dup_dev(ss, N * 2 * C),
          *gout = dup_dev(out, n), *gmean = dup_dev(mean, N * G), *grstd = dup_dev(rstd, N * G),
          *gdout = dup_dev(dout, n), *gdin = dup_dev(din, n), *gdg = dup_dev(dg, C), *gdbt = dup_dev(dbt, C),
          *gdss = dup_dev(dss, N * 2 * C);
    char what[120], w2[160];
    snprintf(what, sizeof what, "norm_act N%lld C%lld HW%lld G%lld%s%s", (long long)N, (long long)C, (long long)HW,
             (long long)G, affine ? "" : " noaffine", mod ? " mod" : "");
    cpu->norm_act_forward(cctx, out, mean, rstd, x, gamma, beta, ss, N, C, HW, G, 1e-5f);
    gpu->norm_act_forward(gctx, gout, gmean, grstd, gx, gg, gbt, gss, N, C, HW, G, 1e-5f);
    snprintf(w2, sizeof w2, "%s out", what);
    cmp(w2, gout, out, n, tol_mm);
    snprintf(w2, sizeof w2, "%s mean", what);
    cmp(w2, gmean, mean, N * G, tol_mm);
    snprintf(w2, sizeof w2, "%s rstd", what);
    cmp(w2, grstd, rstd, N * G, tol_mm);
    gpu->upload(gctx, gmean, mean, N * G);
    gpu->upload(gctx, grstd, rstd, N * G);
    cpu->norm_act_backward(cctx, din, affine ? dg : NULL, affine ? dbt : NULL, dss, dout, x, mean, rstd, gamma, beta,
                           ss, N, C, HW, G);
    gpu->norm_act_backward(gctx, gdin, affine ? gdg : NULL, affine ? gdbt : NULL, gdss, gdout, gx, gmean, grstd, gg,
                           gbt, gss, N, C, HW, G);
    snprintf(w2, sizeof w2, "%s din", what);
    cmp(w2, gdin, din, n, tol_mm);
    if (affine) {
        snprintf(w2, sizeof w2, "%s dgamma", what);
        cmp(w2, gdg, dg, C, tol_mm);
        snprintf(w2, sizeof w2, "%s dbeta", what);
        cmp(w2, gdbt, dbt, C, tol_mm);
    }
    if (mod) {
        snprintf(w2, sizeof w2, "%s dss", what);
        cmp(w2, gdss, dss, N * 2 * C, tol_mm);
    }
    free(x); free(gamma); free(beta); free(ss); free(out); free(mean); free(rstd); free(dout); free(din); free(dg);
    free(dbt); free(dss);
    dfree(gx); dfree(gg); dfree(gbt); dfree(gss); dfree(gout); dfree(gmean); dfree(grstd); dfree(gdout); dfree(gdin);
    dfree(gdg); dfree(gdbt); dfree(gdss);
}
static void test_norm_act(void) {
    if (!gpu->norm_act_forward || !gpu->norm_act_backward) {
        printf("  norm_act: not in the CUDA table (MSD_CUDA_NORM_ACT=0): the UNet composes the three ops\n");
        return;
    }
    check_norm_act(2, 6, 5, 3, 1, 1);
    check_norm_act(3, 64, 49, 32, 1, 1);
    check_norm_act(4, 32, 784, 8, 0, 0);
    check_norm_act(1, 12, 1000, 1, 1, 0);
    check_norm_act(9, 128, 196, 32, 1, 1);
    check_norm_act(5, 64, 7, 32, 0, 1);
}

/* ---- attention ---- */
static void check_attention(int64_t N, int64_t C, int64_t L, int64_t heads) {
    const int64_t nq = N * 3 * C * L, no = N * C * L, na = N * heads * L * L;
    float *qkv = rnd(nq, -1, 1), *out = rnd(no, -1, 1), *att = rnd(na, -1, 1), *dout = rnd(no, -1, 1),
          *dqkv = rnd(nq, -1, 1);
    float *gq = dup_dev(qkv, nq), *gout = dup_dev(out, no), *gatt = dup_dev(att, na), *gdout = dup_dev(dout, no),
          *gdq = dup_dev(dqkv, nq);
    char what[120], w2[160];
    snprintf(what, sizeof what, "attention N%lld C%lld L%lld heads%lld", (long long)N, (long long)C, (long long)L,
             (long long)heads);
    cpu->attention_forward(cctx, out, att, qkv, N, C, L, heads);
    gpu->attention_forward(gctx, gout, gatt, gq, N, C, L, heads);
    snprintf(w2, sizeof w2, "%s out", what);
    cmp(w2, gout, out, no, tol_mm);
    snprintf(w2, sizeof w2, "%s att", what);
    cmp(w2, gatt, att, na, tol_mm);
    gpu->upload(gctx, gatt, att, na); /* compare the backward alone */
    for (int rep = 0; rep < 2; rep++) {
        cpu->attention_backward(cctx, dqkv, dout, qkv, att, N, C, L, heads);
        gpu->attention_backward(gctx, gdq, gdout, gq, gatt, N, C, L, heads);
    }
    snprintf(w2, sizeof w2, "%s dqkv", what);
    cmp(w2, gdq, dqkv, nq, tol_mm);
    free(qkv); free(out); free(att); free(dout); free(dqkv);
    dfree(gq); dfree(gout); dfree(gatt); dfree(gdout); dfree(gdq);
}
static void test_attention(void) {
    check_attention(2, 6, 5, 2);
    check_attention(3, 64, 49, 1);
    check_attention(2, 128, 49, 2);
    check_attention(5, 32, 196, 4);
    check_attention(1, 8, 33, 8);
}

/* ---- the sentence encoder's forward-only ops (token sequences) ----
 * Masked token attention (ragged padding, then mask NULL), masked mean, GELU, the gather with
 * host ids (twice: the staging is reused), LayerNorm as groupnorm (HW 1, G 1, eps 1e-12) at
 * BERT's width. Tolerances as above: tol_mm for reductions, TOL_PW pointwise, 0 for the gather. */
static void check_token_ops(int64_t N, int64_t L, int64_t C, int64_t heads) {
    const int64_t T = N * L, nq = T * 3 * C, no = T * C;
    float *qkv = rnd(nq, -2, 2), *out = rnd(no, -1, 1), *mask = rnd(T, 0, 1), *pool = rnd(N * C, -1, 1);
    for (int64_t n = 0; n < N; n++)
        for (int64_t l = 0; l < L; l++) mask[n * L + l] = l < 1 + (n * 7) % L ? 1.0f : 0.0f;
    float *gq = dup_dev(qkv, nq), *gout = dup_dev(out, no), *gmask = dup_dev(mask, T), *gpool = dup_dev(pool, N * C);
    char what[100], w[160];
    snprintf(what, sizeof what, "N%lld L%lld C%lld heads%lld", (long long)N, (long long)L, (long long)C,
             (long long)heads);
    for (int pass = 0; pass < 2; pass++) {
        cpu->token_attention_forward(cctx, out, qkv, pass ? NULL : mask, N, L, C, heads);
        gpu->token_attention_forward(gctx, gout, gq, pass ? NULL : gmask, N, L, C, heads);
        snprintf(w, sizeof w, "token attention %s%s", what, pass ? " no mask" : " ragged mask");
        cmp(w, gout, out, no, tol_mm);
    }
    cpu->masked_mean_forward(cctx, pool, out, mask, N, L, C);
    gpu->masked_mean_forward(gctx, gpool, gout, gmask, N, L, C);
    snprintf(w, sizeof w, "masked mean %s", what);
    cmp(w, gpool, pool, N * C, tol_mm);
    cpu->gelu_forward(cctx, out, qkv, no);
    gpu->gelu_forward(gctx, gout, gq, no);
    snprintf(w, sizeof w, "gelu n=%lld", (long long)no);
    cmp(w, gout, out, no, TOL_PW);
    float *mean = rnd(T, -1, 1), *rstd = rnd(T, -1, 1), *g = rnd(C, 0.5f, 1.5f), *b = rnd(C, -1, 1);
    float *gmean = dup_dev(mean, T), *grstd = dup_dev(rstd, T), *gg = dup_dev(g, C), *gb = dup_dev(b, C);
    cpu->groupnorm_forward(cctx, out, mean, rstd, qkv, g, b, T, C, 1, 1, 1e-12f);
    gpu->groupnorm_forward(gctx, gout, gmean, grstd, gq, gg, gb, T, C, 1, 1, 1e-12f);
    snprintf(w, sizeof w, "layernorm (groupnorm HW1 G1) T%lld D%lld", (long long)T, (long long)C);
    cmp(w, gout, out, no, tol_mm);
    int32_t *ids = msd_malloc((size_t)T * sizeof(int32_t));
    for (int rep = 0; rep < 2; rep++) {
        for (int64_t t = 0; t < T; t++) ids[t] = (int32_t)((t * 31 + rep * 5) % (3 * L));
        cpu->embedding_forward(cctx, out, ids, qkv, T, 3 * L, C);
        gpu->embedding_forward(gctx, gout, ids, gq, T, 3 * L, C);
        snprintf(w, sizeof w, "embedding T%lld D%lld (host ids, pass %d)", (long long)T, (long long)C, rep);
        cmp(w, gout, out, no, 0.0);
    }
    free(ids); free(mean); free(rstd); free(g); free(b);
    dfree(gmean); dfree(grstd); dfree(gg); dfree(gb);
    free(qkv); free(out); free(mask); free(pool);
    dfree(gq); dfree(gout); dfree(gmask); dfree(gpool);
}
static void test_token_ops(void) {
    check_token_ops(2, 7, 12, 3);
    check_token_ops(5, 33, 384, 12);
    check_token_ops(3, 256, 384, 12);
}

/* ---- pointwise ---- */
typedef void (*Unary)(BackendCtx *, float *, const float *, int64_t);
typedef void (*UnaryBwd)(BackendCtx *, float *, const float *, const float *, int64_t);
static void check_unary(const char *name, Unary cf, Unary gf, UnaryBwd cb, UnaryBwd gb, int64_t n, float lo, float hi) {
    float *x = rnd(n, lo, hi), *out = rnd(n, -1, 1), *dout = rnd(n, -1, 1), *din = rnd(n, -1, 1);
    float *gx = dup_dev(x, n), *gout = dup_dev(out, n), *gdout = dup_dev(dout, n), *gdin = dup_dev(din, n);
    char w[96];
    cf(cctx, out, x, n);
    gf(gctx, gout, gx, n);
    snprintf(w, sizeof w, "%s fwd n=%lld", name, (long long)n);
    cmp(w, gout, out, n, TOL_PW);
    cb(cctx, din, dout, x, n);
    gb(gctx, gdin, gdout, gx, n);
    snprintf(w, sizeof w, "%s bwd n=%lld", name, (long long)n);
    cmp(w, gdin, din, n, TOL_PW);
    free(x); free(out); free(dout); free(din);
    dfree(gx); dfree(gout); dfree(gdout); dfree(gdin);
}
static void test_pointwise(void) {
    const int64_t ns[] = {1, 1000, 100003};
    for (int k = 0; k < 3; k++) {
        int64_t n = ns[k];
        check_unary("silu", cpu->silu_forward, gpu->silu_forward, cpu->silu_backward, gpu->silu_backward, n, -12, 12);
        check_unary("softplus", cpu->softplus_forward, gpu->softplus_forward, cpu->softplus_backward,
                    gpu->softplus_backward, n, -30, 30);
        float *a = rnd(n, -2, 2), *b = rnd(n, -2, 2), *o = rnd(n, -1, 1), *da = rnd(n, -1, 1), *db = rnd(n, -1, 1);
        float *ga = dup_dev(a, n), *gbb = dup_dev(b, n), *go = dup_dev(o, n), *gda = dup_dev(da, n),
              *gdb = dup_dev(db, n);
        cpu->add(cctx, o, a, b, n);
        gpu->add(gctx, go, ga, gbb, n);
        cmp("add", go, o, n, TOL_PW);
        cpu->mul(cctx, o, a, b, n);
        gpu->mul(gctx, go, ga, gbb, n);
        cmp("mul", go, o, n, TOL_PW);
        cpu->mul_backward(cctx, da, db, o, a, b, n);
        gpu->mul_backward(gctx, gda, gdb, go, ga, gbb, n);
        cpu->mul_backward(cctx, NULL, db, o, a, b, n);
        gpu->mul_backward(gctx, NULL, gdb, go, ga, gbb, n);
        cmp("mul_backward da", gda, da, n, TOL_PW);
        cmp("mul_backward db (twice, once da NULL)", gdb, db, n, TOL_PW);
        cpu->scale(cctx, o, a, -0.37f, n);
        gpu->scale(gctx, go, ga, -0.37f, n);
        cmp("scale", go, o, n, TOL_PW);
        cpu->axpy(cctx, o, 1.7f, b, n);
        gpu->axpy(gctx, go, 1.7f, gbb, n);
        cmp("axpy", go, o, n, TOL_PW);
        free(a); free(b); free(o); free(da); free(db);
        dfree(ga); dfree(gbb); dfree(go); dfree(gda); dfree(gdb);
    }
    /* scale_rows with and without the y term */
    const int64_t N = 7, D = 333;
    float *x = rnd(N * D, -2, 2), *y = rnd(N * D, -2, 2), *sa = rnd(N, -1, 1), *sb = rnd(N, -1, 1),
          *o = rnd(N * D, -1, 1);
    float *gx = dup_dev(x, N * D), *gy = dup_dev(y, N * D), *gsa = dup_dev(sa, N), *gsb = dup_dev(sb, N),
          *go = dup_dev(o, N * D);
    cpu->scale_rows(cctx, o, x, sa, y, sb, N, D);
    gpu->scale_rows(gctx, go, gx, gsa, gy, gsb, N, D);
    cmp("scale_rows a*x + b*y", go, o, N * D, TOL_PW);
    cpu->scale_rows(cctx, o, x, sa, NULL, NULL, N, D);
    gpu->scale_rows(gctx, go, gx, gsa, NULL, NULL, N, D);
    cmp("scale_rows a*x", go, o, N * D, TOL_PW);
    free(x); free(y); free(sa); free(sb); free(o);
    dfree(gx); dfree(gy); dfree(gsa); dfree(gsb); dfree(go);
}

/* ---- conditioning and spatial ---- */
static void check_cond_spatial(int64_t N, int64_t C, int64_t H, int64_t W) {
    const int64_t HW = H * W, n = N * C * HW;
    char w[120];
    /* modulate */
    float *x = rnd(n, -2, 2), *ss = rnd(N * 2 * C, -1, 1), *o = rnd(n, -1, 1), *dy = rnd(n, -1, 1),
          *dx = rnd(n, -1, 1), *dss = rnd(N * 2 * C, -1, 1);
    float *gx = dup_dev(x, n), *gss = dup_dev(ss, N * 2 * C), *go = dup_dev(o, n), *gdy = dup_dev(dy, n),
          *gdx = dup_dev(dx, n), *gdss = dup_dev(dss, N * 2 * C);
    cpu->modulate_forward(cctx, o, x, ss, N, C, HW);
    gpu->modulate_forward(gctx, go, gx, gss, N, C, HW);
    snprintf(w, sizeof w, "modulate fwd N%lld C%lld HW%lld", (long long)N, (long long)C, (long long)HW);
    cmp(w, go, o, n, TOL_PW);
    cpu->modulate_backward(cctx, dx, dss, dy, x, ss, N, C, HW);
    gpu->modulate_backward(gctx, gdx, gdss, gdy, gx, gss, N, C, HW);
    cmp("modulate bwd dx", gdx, dx, n, TOL_PW);
    cmp("modulate bwd dss", gdss, dss, N * 2 * C, tol_mm);
    /* add_channel (bias (N, C) = the first N*C of ss) */
    cpu->add_channel_forward(cctx, o, x, ss, N, C, HW);
    gpu->add_channel_forward(gctx, go, gx, gss, N, C, HW);
    cmp("add_channel fwd", go, o, n, TOL_PW);
    cpu->add_channel_backward(cctx, dx, dss, dy, N, C, HW);
    gpu->add_channel_backward(gctx, gdx, gdss, gdy, N, C, HW);
    cmp("add_channel bwd dx", gdx, dx, n, TOL_PW);
    cmp("add_channel bwd dbias", gdss, dss, N * 2 * C, tol_mm);
    /* upsample x2 */
    float *up = rnd(4 * n, -1, 1), *dup = rnd(4 * n, -1, 1);
    float *gup = dup_dev(up, 4 * n), *gdup = dup_dev(dup, 4 * n);
    cpu->upsample2x_forward(cctx, up, x, N, C, H, W);
    gpu->upsample2x_forward(gctx, gup, gx, N, C, H, W);
    snprintf(w, sizeof w, "upsample2x fwd N%lld C%lld %lldx%lld", (long long)N, (long long)C, (long long)H,
             (long long)W);
    cmp(w, gup, up, 4 * n, 0.0);
    cpu->upsample2x_backward(cctx, dx, dup, N, C, H, W);
    gpu->upsample2x_backward(gctx, gdx, gdup, N, C, H, W);
    cmp("upsample2x bwd", gdx, dx, n, TOL_PW);
    /* concat: a = x (C channels), b = the first C2 channels' worth of dy */
    const int64_t C2 = C > 1 ? C - 1 : 1, nb = N * C2 * HW, nc = n + nb;
    float *cat = rnd(nc, -1, 1), *dcat = rnd(nc, -1, 1);
    float *gcat = dup_dev(cat, nc), *gdcat = dup_dev(dcat, nc);
    cpu->concat_forward(cctx, cat, x, dy, N, C, C2, HW);
    gpu->concat_forward(gctx, gcat, gx, gdy, N, C, C2, HW);
    cmp("concat fwd", gcat, cat, nc, 0.0);
    cpu->concat_backward(cctx, dx, dy, dcat, N, C, C2, HW);
    gpu->concat_backward(gctx, gdx, gdy, gdcat, N, C, C2, HW);
    cpu->concat_backward(cctx, NULL, dy, dcat, N, C, C2, HW);
    gpu->concat_backward(gctx, NULL, gdy, gdcat, N, C, C2, HW);
    cmp("concat bwd da", gdx, dx, n, TOL_PW);
    cmp("concat bwd db (twice)", gdy, dy, nb, TOL_PW);
    free(x); free(ss); free(o); free(dy); free(dx); free(dss); free(up); free(dup); free(cat); free(dcat);
    dfree(gx); dfree(gss); dfree(go); dfree(gdy); dfree(gdx); dfree(gdss); dfree(gup); dfree(gdup); dfree(gcat);
    dfree(gdcat);
}
static void test_cond_spatial(void) {
    check_cond_spatial(2, 3, 5, 7);
    check_cond_spatial(4, 64, 14, 14);
    check_cond_spatial(3, 33, 28, 28);
    /* sinusoidal: t over the range EDM feeds it (ln(sigma)/4 and raw sigmas) */
    const int64_t N = 37, D = 128;
    float *t = rnd(N, -3, 3), *o = rnd(N * D, -1, 1), *dout = rnd(N * D, -1, 1), *dt = rnd(N, -1, 1);
    t[0] = 0;
    t[1] = 80;
    float *gt = dup_dev(t, N), *go = dup_dev(o, N * D), *gdout = dup_dev(dout, N * D), *gdt = dup_dev(dt, N);
    cpu->sinusoidal_forward(cctx, o, t, N, D);
    gpu->sinusoidal_forward(gctx, go, gt, N, D);
    cmp("sinusoidal fwd (powf may differ by an ulp)", go, o, N * D, tol_mm);
    cpu->sinusoidal_backward(cctx, dt, dout, t, N, D);
    gpu->sinusoidal_backward(gctx, gdt, gdout, gt, N, D);
    cmp("sinusoidal bwd", gdt, dt, N, tol_mm);
    /* onehot: HOST labels on every backend */
    int32_t lab[300];
    for (int i = 0; i < 300; i++) lab[i] = (int32_t)((i * 7) % 10);
    float *oh = rnd(300 * 10, -1, 1), *goh = dup_dev(oh, 300 * 10);
    cpu->onehot(cctx, oh, lab, 300, 10);
    gpu->onehot(gctx, goh, lab, 300, 10);
    for (int i = 0; i < 300; i++) lab[i] = 3; /* the GPU op must not read the host labels later */
    cmp("onehot (host labels)", goh, oh, 300 * 10, 0.0);
    gpu->onehot(gctx, goh, lab, 5, 10);
    cpu->onehot(cctx, oh, lab, 5, 10);
    cmp("onehot again (staging reused)", goh, oh, 5 * 10, 0.0);
    free(t); free(o); free(dout); free(dt); free(oh);
    dfree(gt); dfree(go); dfree(gdout); dfree(gdt); dfree(goh);
}

/* ---- losses and optimiser ---- */
static void test_loss_optim(void) {
    const int64_t N = 13, D = 785, n = N * D;
    float *p = rnd(n, -2, 2), *t = rnd(n, -2, 2), *w = rnd(N, 0.1f, 5), *dp = rnd(n, -1, 1);
    float *gp = dup_dev(p, n), *gt = dup_dev(t, n), *gw = dup_dev(w, N), *gdp = dup_dev(dp, n);
    for (int weighted = 0; weighted < 2; weighted++) {
        float lc = cpu->wmse_forward(cctx, p, t, weighted ? w : NULL, N, D);
        float lg = gpu->wmse_forward(gctx, gp, gt, weighted ? gw : NULL, N, D);
        printf("  wmse%s: cpu %.9g gpu %.9g\n", weighted ? " weighted" : "", (double)lc, (double)lg);
        CHECK(fabs((double)lc - (double)lg) <= 1e-6 * fabs((double)lc), "wmse %g vs %g (rtol 1e-6)", (double)lg,
              (double)lc);
        cpu->wmse_backward(cctx, dp, 0.7f, p, t, weighted ? w : NULL, N, D);
        gpu->wmse_backward(gctx, gdp, 0.7f, gp, gt, weighted ? gw : NULL, N, D);
    }
    cmp("wmse_backward (w NULL, then w)", gdp, dp, n, TOL_PW);
    const int64_t sizes[] = {0, 1, 12345, 1744161};
    for (int k = 0; k < 4; k++) {
        int64_t m = sizes[k];
        float *x = rnd(m, -1, 1), *gx = m ? dup_dev(x, m) : gpu->alloc(gctx, 1);
        double sc = cpu->sumsq(cctx, x, m), sg = gpu->sumsq(gctx, gx, m);
        printf("  sumsq n=%lld: cpu %.12g gpu %.12g\n", (long long)m, sc, sg);
        /* the CPU adds float partial sums (16 lanes per 4096), the GPU doubles: rtol 1e-5 */
        CHECK(fabs(sc - sg) <= 1e-5 * fabs(sc), "sumsq n=%lld: %.12g vs %.12g (rtol 1e-5)", (long long)m, sg, sc);
        free(x);
        dfree(gx);
    }
    /* AdamW and EMA: the same float operations in the same order (no contraction into FMAs on
     * either side), so the bits must agree, as docs/CUDA.md says: p, m, v and the EMA are each
     * checked bit for bit (tolerance 0), the first differing element printed */
    const int64_t m = 100003;
    float *prm = rnd(m, -1, 1), *g = rnd(m, -0.01f, 0.01f), *mm = rnd(m, -0.001f, 0.001f),
          *vv = rnd(m, 0, 1e-5f), *ema = rnd(m, -1, 1);
    float *gprm = dup_dev(prm, m), *gg = dup_dev(g, m), *gm = dup_dev(mm, m), *gv = dup_dev(vv, m),
          *gema = dup_dev(ema, m);
    for (int64_t step = 1; step <= 7; step += 3) {
        cpu->adamw_update(cctx, prm, g, mm, vv, m, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, step, step == 4 ? 0.5f : 1.0f);
        gpu->adamw_update(gctx, gprm, gg, gm, gv, m, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, step, step == 4 ? 0.5f : 1.0f);
        cpu->ema_update(cctx, ema, prm, m, 0.999f);
        gpu->ema_update(gctx, gema, gprm, m, 0.999f);
    }
    const float *dev[4] = {gprm, gm, gv, gema}, *host[4] = {prm, mm, vv, ema};
    const char *names[4] = {"adamw p", "adamw m", "adamw v", "ema"};
    for (int a = 0; a < 4; a++) {
        float *h = dup_host(dev[a], m);
        int64_t ndiff = 0, first = -1;
        for (int64_t i = 0; i < m; i++)
            if (memcmp(&h[i], &host[a][i], sizeof(float)) != 0 && ndiff++ == 0) first = i;
        printf("  %-8s bit-exact: %lld of %lld floats differ from the CPU's\n", names[a], (long long)ndiff, (long long)m);
        CHECK(ndiff == 0, "%s: %lld of %lld floats differ in their bits from the CPU's (tolerance: none); first: "
              "element %lld, got %.9g want %.9g", names[a], (long long)ndiff, (long long)m, (long long)first,
              first < 0 ? 0.0 : (double)h[first], first < 0 ? 0.0 : (double)host[a][first]);
        free(h);
    }
    free(p); free(t); free(w); free(dp); free(prm); free(g); free(mm); free(vv); free(ema);
    dfree(gp); dfree(gt); dfree(gw); dfree(gdp); dfree(gprm); dfree(gg); dfree(gm); dfree(gv); dfree(gema);
}

/* ---- the model: fmnist-s ---- */
typedef struct Side {
    const Backend *be;
    BackendCtx *ctx;
    UNet *u;
    Edm e;
    Optim *opt;
    float *x; /* the batch on this side's device */
} Side;

static const int64_t MB = 16, MD = 28 * 28; /* model-test batch */

/* fmnist-s on be with the CPU side's weights (or unet_init(1) when from is NULL) */
static void side_open(Side *s, const Backend *be, BackendCtx *ctx, const Side *from, const float *xh) {
    char err[256];
    UNetConfig cfg;
    MSD_CHECK(unet_config_parse(&cfg, "fmnist-s", err, sizeof err) == 0);
    memset(s, 0, sizeof *s);
    s->be = be;
    s->ctx = ctx;
    s->u = unet_new(&cfg, be, ctx);
    unet_init(s->u, 1);
    ParamSet *ps = unet_params(s->u);
    if (from) be->upload(ctx, ps->data, unet_params(from->u)->data, ps->total); /* from is the CPU side */
    unet_alloc_batch(s->u, MB);
    edm_init(&s->e, unet_edm_net(s->u), MB, be, ctx);
    OptimConfig oc;
    optim_config_default(&oc);
    oc.lr = 1e-3f;
    oc.grad_clip = 1.0f;
    oc.ema = 1;
    oc.ema_decay = 0.99f;
    oc.images_per_step = MB;
    s->opt = optim_new(ps, &oc);
    s->x = be->alloc(ctx, MB * MD);
    be->upload(ctx, s->x, xh, MB * MD);
}
static void side_close(Side *s) {
    s->be->free(s->ctx, s->x);
    optim_destroy(&s->opt);
    edm_free(&s->e);
    unet_destroy(&s->u);
}
/* one EDM training step at step index `step` (forward, backward; the optimiser when upd) */
static float side_step(Side *s, const int32_t *labels, int64_t step, int upd) {
    params_zero_grad(unet_params(s->u));
    float loss = edm_loss_step(&s->e, s->x, labels, NULL, MB, 1234, step, 1);
    edm_loss_backward(&s->e, MB);
    if (upd) optim_step(s->opt);
    return loss;
}
/* a smooth class-dependent batch in [-1, 1] */
static void model_batch(float *x, int32_t *labels) {
    for (int64_t n = 0; n < MB; n++) {
        labels[n] = (int32_t)(n % 10);
        for (int64_t i = 0; i < 28; i++)
            for (int64_t j = 0; j < 28; j++)
                x[n * MD + i * 28 + j] = (float)(0.9 * sin(0.2 * (double)(labels[n] + 1) * (double)i + 0.1 * (double)j) *
                                                 cos(0.15 * (double)j * (double)(n % 3 + 1)));
    }
}
/* relative L2 difference of the device slab d against the host slab h, per parameter; returns
 * the worst and its index */
static double worst_param_rel(const ParamSet *ps, const float *dev_slab, const float *host_slab, int *worst_i) {
    float *g = dup_host(dev_slab, ps->total);
    double worst = 0;
    *worst_i = -1;
    for (int i = 0; i < ps->n; i++) {
        const Param *p = &ps->p[i];
        double num = 0, den = 0;
        for (int64_t k = 0; k < p->numel; k++) {
            double a = g[p->offset + k], b = host_slab[p->offset + k];
            num += (a - b) * (a - b);
            den += b * b;
        }
        double rel = den > 0 ? sqrt(num / den) : sqrt(num);
        if (rel > worst || *worst_i < 0) { worst = rel; *worst_i = i; }
    }
    free(g);
    return worst;
}

static void test_fmnist_init(void) {
    /* unet_init draws on the host and uploads: both backends hold the same bits */
    float *xh = msd_calloc((size_t)(MB * MD), sizeof(float));
    Side c, g;
    side_open(&c, cpu, cctx, NULL, xh);
    side_open(&g, gpu, gctx, NULL, xh);
    ParamSet *cp = unet_params(c.u), *gp = unet_params(g.u);
    float *h = dup_host(gp->data, gp->total);
    CHECK(cp->total == gp->total && memcmp(h, cp->data, (size_t)cp->total * sizeof(float)) == 0,
          "unet_init(1) gives different weights on CUDA");
    free(h);
    side_close(&g);
    side_close(&c);
    free(xh);
}

static void test_fmnist_step(void) {
    float *xh = msd_malloc((size_t)(MB * MD) * sizeof(float));
    int32_t labels[16];
    model_batch(xh, labels);
    Side c, g;
    side_open(&c, cpu, cctx, NULL, xh);
    side_open(&g, gpu, gctx, &c, xh);
    ParamSet *cp = unet_params(c.u), *gp = unet_params(g.u);
    float lc = side_step(&c, labels, 0, 0), lg = side_step(&g, labels, 0, 0);
    printf("  fmnist-s step (batch %lld): loss cpu %.7g gpu %.7g\n", (long long)MB, (double)lc, (double)lg);
    CHECK(fabs((double)lc - (double)lg) <= 10 * tol_mm * fabs((double)lc), "loss %g vs %g (rtol %g)", (double)lg,
          (double)lc, 10 * tol_mm);
    /* gradients: the whole slab within 10 tol (relative L2), each tensor within 100 tol (a
     * tensor whose gradient nearly cancels has a larger relative error), every element within
     * 20 tol of the largest */
    int wi;
    double wr = worst_param_rel(cp, gp->grad, cp->grad, &wi);
    float *gg = dup_host(gp->grad, gp->total);
    double num = 0, den = 0;
    for (int64_t i = 0; i < gp->total; i++) {
        num += ((double)gg[i] - cp->grad[i]) * ((double)gg[i] - cp->grad[i]);
        den += (double)cp->grad[i] * cp->grad[i];
    }
    free(gg);
    double slab_rel = sqrt(num / den);
    printf("  gradients: relative L2 difference %.3g over the slab (limit %.3g), worst tensor %.3g (%s, limit %.3g)\n",
           slab_rel, 10 * tol_mm, wr, cp->p[wi].name, 100 * tol_mm);
    CHECK(slab_rel <= 10 * tol_mm, "gradient slab differs by %.3g (relative L2)", slab_rel);
    CHECK(wr <= 100 * tol_mm, "gradient of %s differs by %.3g (relative L2)", cp->p[wi].name, wr);
    cmp("fmnist-s gradient slab", gp->grad, cp->grad, cp->total, 20 * tol_mm);
    /* the same step again on the GPU: bit-identical (deterministic algorithms, fixed reductions) */
    float *g1 = dup_host(gp->grad, gp->total);
    float lg2 = side_step(&g, labels, 0, 0);
    float *g2 = dup_host(gp->grad, gp->total);
    CHECK(lg2 == lg && memcmp(g1, g2, (size_t)gp->total * sizeof(float)) == 0,
          "a repeated GPU step differs (loss %.9g vs %.9g)", (double)lg2, (double)lg);
    free(g1); free(g2);
    /* the update: AdamW's first step moves each weight by about lr * sign(g), so an element may
     * differ by 2 lr where the two gradients straddle zero; allow that for 0.1% of the weights */
    float nc = optim_step(c.opt), ng = optim_step(g.opt);
    printf("  grad norm cpu %.7g gpu %.7g\n", (double)nc, (double)ng);
    CHECK(fabs((double)nc - (double)ng) <= 10 * tol_mm * fabs((double)nc), "grad norm %g vs %g", (double)ng,
          (double)nc);
    float *w = dup_host(gp->data, gp->total);
    int64_t far = 0;
    for (int64_t i = 0; i < gp->total; i++) far += fabs((double)w[i] - (double)cp->data[i]) > 0.05 * 1e-3 + 1e-6;
    printf("  weights after the update: %lld of %lld differ by more than 5%% of lr\n", (long long)far,
           (long long)gp->total);
    /* under TF32 the gradients differ more, so more of them straddle zero: allow 1% */
    int64_t far_max = tol_mm > 1e-4 ? gp->total / 100 : gp->total / 1000;
    CHECK(far <= far_max, "%lld weights differ by more than 5%% of lr (limit %lld)", (long long)far, (long long)far_max);
    free(w);
    side_close(&g);
    side_close(&c);
    free(xh);
}

static void test_fmnist_run_and_checkpoint(void) {
    enum { STEPS = 8, MORE = 3 };
    float *xh = msd_malloc((size_t)(MB * MD) * sizeof(float));
    int32_t labels[16];
    model_batch(xh, labels);
    Side c, g;
    side_open(&c, cpu, cctx, NULL, xh);
    side_open(&g, gpu, gctx, &c, xh);
    float lc[STEPS], lg[STEPS];
    double t0 = msd_now(), tc = 0, tg = 0;
    for (int s = 0; s < STEPS; s++) {
        t0 = msd_now();
        lc[s] = side_step(&c, labels, s, 1);
        tc += msd_now() - t0;
        t0 = msd_now();
        lg[s] = side_step(&g, labels, s, 1);
        tg += msd_now() - t0;
    }
    printf("  %d training steps (batch %lld): cpu %.1f ms/step, gpu %.1f ms/step\n", STEPS, (long long)MB,
           tc * 1e3 / STEPS, tg * 1e3 / STEPS);
    double worst = 0;
    for (int s = 0; s < STEPS; s++) {
        double rel = fabs((double)lc[s] - (double)lg[s]) / fabs((double)lc[s]);
        if (!(rel <= worst)) worst = rel; /* a NaN sticks */
        printf("    step %d: loss cpu %.6f gpu %.6f\n", s, (double)lc[s], (double)lg[s]);
    }
    CHECK(worst <= 1e-2, "training losses drift apart: worst relative difference %.3g (limit 1e-2)", worst);
    CHECK(isfinite(lg[STEPS - 1]) && lg[STEPS - 1] < lg[0], "GPU loss did not fall: %g -> %g", (double)lg[0],
          (double)lg[STEPS - 1]);

    /* checkpoint on CUDA, load on the CPU: the same bits, then both continue */
    char dir[] = "/tmp/msd_gpu_ckpt_XXXXXX", path[128], path2[128], err[512];
    REQUIRE(mkdtemp(dir) != NULL, "mkdtemp failed");
    snprintf(path, sizeof path, "%s/gpu.safetensors", dir);
    snprintf(path2, sizeof path2, "%s/cpu.safetensors", dir);
    REQUIRE(checkpoint_save(path, unet_params(g.u), g.opt, NULL, 0, err, sizeof err) == 0, "%s", err);
    Side c2;
    side_open(&c2, cpu, cctx, NULL, xh);
    REQUIRE(checkpoint_load(path, unet_params(c2.u), c2.opt, NULL, err, sizeof err) == 0, "%s", err);
    ParamSet *gp = unet_params(g.u), *c2p = unet_params(c2.u);
    float *gw = dup_host(gp->data, gp->total), *gm = dup_host(g.opt->m, gp->total),
          *gema = dup_host(g.opt->ema, gp->total);
    CHECK(memcmp(gw, c2p->data, (size_t)gp->total * sizeof(float)) == 0, "weights changed through the checkpoint");
    CHECK(memcmp(gm, c2.opt->m, (size_t)gp->total * sizeof(float)) == 0, "AdamW m changed through the checkpoint");
    CHECK(memcmp(gema, c2.opt->ema, (size_t)gp->total * sizeof(float)) == 0, "EMA changed through the checkpoint");
    CHECK(c2.opt->step == g.opt->step && c2.opt->nimg == g.opt->nimg, "step %lld/%lld nimg %g/%g",
          (long long)c2.opt->step, (long long)g.opt->step, c2.opt->nimg, g.opt->nimg);
    free(gw); free(gm); free(gema);
    double worst2 = 0;
    for (int s = STEPS; s < STEPS + MORE; s++) {
        float a = side_step(&c2, labels, s, 1), b = side_step(&g, labels, s, 1);
        printf("    resumed step %d: loss cpu (from the CUDA checkpoint) %.6f gpu %.6f\n", s, (double)a, (double)b);
        double rel = fabs((double)a - (double)b) / fabs((double)a);
        if (!(rel <= worst2)) worst2 = rel;
    }
    CHECK(worst2 <= 1e-2, "after the checkpoint the losses differ by %.3g (limit 1e-2)", worst2);

    /* and back: the CPU's checkpoint loads on CUDA with the same bits */
    REQUIRE(checkpoint_save(path2, unet_params(c2.u), c2.opt, NULL, 0, err, sizeof err) == 0, "%s", err);
    REQUIRE(checkpoint_load(path2, unet_params(g.u), g.opt, NULL, err, sizeof err) == 0, "%s", err);
    float *gv = dup_host(g.opt->v, gp->total);
    gw = dup_host(gp->data, gp->total);
    CHECK(memcmp(gw, c2p->data, (size_t)gp->total * sizeof(float)) == 0 &&
              memcmp(gv, c2.opt->v, (size_t)gp->total * sizeof(float)) == 0,
          "CPU checkpoint loaded on CUDA differs");
    free(gw); free(gv);
    unlink(path);
    unlink(path2);
    rmdir(dir);
    side_close(&c2);
    side_close(&g);
    side_close(&c);
    free(xh);
}

/* Every op of the CUDA table was called by the op tests above (op_count.h). */
static void test_every_op_covered(void) { opc_check(NULL); }

int main(void) {
    /* the fused norm_act ops join the CUDA table under MSD_CUDA_NORM_ACT=1 (kernels/cuda/table.cu):
     * tested here unless the environment turns them off (then the model tests below run the
     * default, composed path) */
    setenv("MSD_CUDA_NORM_ACT", "1", 0);
    const char *sel = getenv("MSD_TEST_GPU");
    Device dev = {DEVICE_CUDA, sel ? atoi(sel) : 0};
    char err[512];
    gpu = backend_get(dev, err, sizeof err);
    if (!gpu) {
        printf("skip: no CUDA backend here: %s\n", err);
        printf("# %s: 0 passed, 0 failed\n", __FILE__);
        return 77;
    }
    static Backend counted; /* every op of the list must be compared with the CPU (op_count.h) */
    counted = opc_wrap(gpu);
    gpu = &counted;
    const char *tf = getenv("MSD_TF32");
    if (tf && tf[0] && strcmp(tf, "0") != 0) tol_mm = 5e-3;
    cctx = backend_ctx_new(cpu, parallel_cpu_count());
    gctx = backend_ctx_new(gpu, 1);
    printf("  GPU %d; TF32 %s (products compared at tol %g)\n", dev.index, tol_mm > 1e-4 ? "on" : "off", tol_mm);
    TEST_RUN(test_table);
    TEST_RUN(test_memory);
    TEST_RUN(test_rng);
    TEST_RUN(test_conv);
    TEST_RUN(test_linear);
    TEST_RUN(test_groupnorm);
    TEST_RUN(test_norm_act);
    TEST_RUN(test_attention);
    TEST_RUN(test_token_ops);
    TEST_RUN(test_pointwise);
    TEST_RUN(test_cond_spatial);
    TEST_RUN(test_loss_optim);
    const char *quick = getenv("MSD_TEST_GPU_QUICK"); /* ops only (e.g. under compute-sanitizer) */
    if (!quick || !quick[0] || !strcmp(quick, "0")) {
        TEST_RUN(test_fmnist_init);
        TEST_RUN(test_fmnist_step);
        TEST_RUN(test_fmnist_run_and_checkpoint);
    }
    TEST_RUN(test_every_op_covered);
    backend_ctx_destroy(&gctx);
    backend_ctx_destroy(&cctx);
    return TEST_END();
}
