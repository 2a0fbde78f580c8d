/* test_sampler.c: the EDM Heun sampler over the exact Gaussian-mixture denoiser (mog_denoise):
 * the sigma schedule, the NFE count, reproducibility and batch independence, and that with an
 * exact denoiser both the deterministic (NFE 35 and 79) and the stochastic sampler reproduce the
 * mixture: energy distance and sliced W2 to true samples within a small factor of the sampling
 * floor (two independent true sets of the same size), and every mode covered. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "check.h"
#include "edm.h"
#include "mlp.h"
#include "mog.h"
#include "sampledist.h"
#include "sampler.h"

static Mog mix;
static int have_mix;
static int denoise_calls;

static void mog_cb(void *ctx, float *out, const float *x, const float *sigma, const int32_t *labels, int64_t N) {
    denoise_calls++;
    mog_denoise((const Mog *)ctx, out, x, sigma, labels, N);
}

static void test_schedule(void) {
    SamplerConfig c;
    sampler_config_default(&c);
    CHECK(c.steps == 18 && sampler_nfe(&c) == 35, "default steps %d nfe %d", c.steps, sampler_nfe(&c));
    double s[19];
    sampler_sigmas(&c, s);
    CHECK(fabs(s[0] - 80) < 1e-9 && fabs(s[17] - 0.002) < 1e-12 && s[18] == 0, "ends %g %g %g", s[0], s[17], s[18]);
    for (int i = 0; i < 18; i++) CHECK(s[i] > s[i + 1], "not descending at %d", i);
    /* rho = 7 schedule: sigma_i^(1/7) is linear in i */
    double a = pow(80, 1 / 7.0), b = pow(0.002, 1 / 7.0);
    CHECK(fabs(pow(s[9], 1 / 7.0) - (a + 9 / 17.0 * (b - a))) < 1e-12, "sigma_9 = %g", s[9]);
    c.steps = 1;
    sampler_sigmas(&c, s);
    CHECK(s[0] == 80 && s[1] == 0 && sampler_nfe(&c) == 1, "N = 1: %g %g", s[0], s[1]);
    char err[256];
    SamplerConfig bad = c;
    bad.steps = 0;
    CHECK(sampler_config_check(&bad, err, sizeof err) != 0 && strstr(err, "steps"), "steps 0: %s", err);
    bad = c;
    bad.sigma_min = 100;
    CHECK(sampler_config_check(&bad, err, sizeof err) != 0, "sigma_min > sigma_max accepted");
    bad = c;
    bad.s_churn = NAN;
    CHECK(sampler_config_check(&bad, err, sizeof err) != 0, "NaN churn accepted");
}

static void test_reproducible(void) {
    REQUIRE(have_mix, "no mixture");
    SamplerConfig c;
    sampler_config_default(&c);
    c.steps = 6;
    c.s_churn = 10;
    c.s_max = 20;
    enum { N = 40 };
    float a[2 * N], b[2 * N];
    int32_t cls[N];
    for (int i = 0; i < N; i++) cls[i] = i % mix.nclasses;
    denoise_calls = 0;
    int nfe = sampler_run(&c, mog_cb, &mix, a, cls, N, 2, 7, 100, 0);
    CHECK(nfe == 11 && denoise_calls == 11, "nfe %d calls %d", nfe, denoise_calls);
    /* the same samples in two calls (first = 0 and 25): sample i depends only on its index */
    sampler_run(&c, mog_cb, &mix, b, cls, 25, 2, 7, 100, 0);
    sampler_run(&c, mog_cb, &mix, b + 50, cls + 25, N - 25, 2, 7, 100, 25);
    CHECK(!memcmp(a, b, sizeof a), "batching changed the samples");
    sampler_run(&c, mog_cb, &mix, b, cls, N, 2, 8, 100, 0);
    CHECK(memcmp(a, b, sizeof a) != 0, "seed 8 gave the samples of seed 7");
    c.s_churn = 0;
    sampler_run(&c, mog_cb, &mix, b, cls, N, 2, 7, 100, 0);
    CHECK(memcmp(a, b, sizeof a) != 0, "churn made no difference");
    for (int i = 0; i < 2 * N; i++) CHECK(isfinite(a[i]), "sample %d not finite", i / 2);
}

/* Sample n points with config c, compare with true samples; returns 0 when all bounds hold. */
static void judge(const SamplerConfig *c, const char *what) {
    enum { n = 2000 };
    float *gen = malloc(sizeof(float) * 2 * n), *t1 = malloc(sizeof(float) * 2 * n), *t2 = malloc(sizeof(float) * 2 * n);
    int32_t *cls = malloc(sizeof(int32_t) * n);
    for (int i = 0; i < n; i++) cls[i] = i % mix.nclasses;
    denoise_calls = 0;
    sampler_run(c, mog_cb, &mix, gen, cls, n, 2, 11, 300, 0);
    CHECK(denoise_calls == sampler_nfe(c), "%s: %d calls", what, denoise_calls);
    mog_sample(&mix, t1, NULL, cls, n, 21, 1, 0);
    mog_sample(&mix, t2, NULL, cls, n, 22, 1, 0);
    double e_gen = energy_distance(gen, n, t1, n, 2), e_floor = energy_distance(t2, n, t1, n, 2);
    double w_gen = sliced_w2(gen, t1, n, 2, 64, 5), w_floor = sliced_w2(t2, t1, n, 2, 64, 5);
    MogCoverage cov;
    mog_coverage(&mix, gen, cls, n, -1, &cov);
    printf("  %s (NFE %d): energy %.2e (floor %.2e), sliced W2 %.4f (floor %.4f), coverage %.3f (%d/%d), on "
           "support %.3f\n",
           what, sampler_nfe(c), e_gen, e_floor, w_gen, w_floor, cov.coverage, cov.covered, cov.ncomp, cov.on_support);
    /* tolerance: 2x the floor plus a little (the floor itself fluctuates by ~30% between seeds) */
    CHECK(e_gen <= 2.0 * e_floor + 0.01, "%s: energy %.4f vs floor %.4f", what, e_gen, e_floor);
    CHECK(w_gen <= 2.0 * w_floor + 0.02, "%s: sliced W2 %.4f vs floor %.4f", what, w_gen, w_floor);
    CHECK(cov.coverage == 1.0, "%s: coverage %.3f", what, cov.coverage);
    CHECK(cov.on_support >= 0.97, "%s: on support %.3f", what, cov.on_support);
    free(gen);
    free(t1);
    free(t2);
    free(cls);
}

static void test_reproduces_mixture(void) {
    REQUIRE(have_mix, "no mixture");
    SamplerConfig c;
    sampler_config_default(&c);
    judge(&c, "Heun 18 steps");
    c.steps = 40;
    judge(&c, "Heun 40 steps");
    c.steps = 32;
    c.s_churn = 20;
    c.s_min = 0.01;
    c.s_max = 10;
    c.s_noise = 1.003;
    judge(&c, "stochastic 32 steps");
}

static void test_too_few_steps_is_worse(void) {
    /* the metrics are not blind: 2 Heun steps (NFE 3) leave the modes blurred */
    REQUIRE(have_mix, "no mixture");
    SamplerConfig c;
    sampler_config_default(&c);
    c.steps = 2;
    enum { n = 1000 };
    float *gen = malloc(sizeof(float) * 2 * n);
    int32_t *cls = malloc(sizeof(int32_t) * n);
    for (int i = 0; i < n; i++) cls[i] = i % mix.nclasses;
    sampler_run(&c, mog_cb, &mix, gen, cls, n, 2, 11, 300, 0);
    MogCoverage cov;
    mog_coverage(&mix, gen, cls, n, -1, &cov);
    printf("  Heun 2 steps (NFE 3): on support %.3f, coverage %.3f\n", cov.on_support, cov.coverage);
    CHECK(cov.on_support < 0.9, "NFE 3 on support %.3f: the check cannot tell bad samples", cov.on_support);
    free(gen);
    free(cls);
}

/* The EDM adapter: an MLP denoiser in chunks of 7 gives what one chunk of 64 gives. */
static void test_edm_adapter(void) {
    BackendCtx *ctx = backend_ctx_new(&backend_cpu, 1);
    MlpConfig mc;
    char err[256];
    REQUIRE(mlp_config_parse(&mc, "mlp,width=16,depth=2,classes=8", err, sizeof err) == 0, "%s", err);
    Mlp *m = mlp_new(&mc, &backend_cpu, ctx);
    mlp_init(m, 5);
    enum { N = 20 };
    float a[2 * N], b[2 * N];
    int32_t cls[N];
    for (int i = 0; i < N; i++) cls[i] = i % 8;
    SamplerConfig c;
    sampler_config_default(&c);
    c.steps = 3;
    for (int pass = 0; pass < 2; pass++) {
        int64_t cap = pass ? 64 : 7;
        mlp_alloc_batch(m, cap);
        Edm e;
        edm_init(&e, mlp_edm_net(m), cap, &backend_cpu, ctx);
        SamplerEdm se;
        sampler_edm_init(&se, &e);
        int nfe = sampler_run(&c, sampler_edm_denoise, &se, pass ? b : a, cls, N, 2, 3, 50, 0);
        CHECK(nfe == 5, "nfe %d", nfe);
        sampler_edm_free(&se);
        edm_free(&e);
    }
    CHECK_CLOSE(a, b, 2 * N, 1e-4, 1e-5, "chunked vs whole");
    for (int i = 0; i < 2 * N; i++) CHECK(isfinite(a[i]), "sample %d not finite", i / 2);
    mlp_destroy(&m);
    backend_ctx_destroy(&ctx);
}

int main(void) {
    char path[1024], err[1024];
    const char *top = getenv("MSD_TOP");
    snprintf(path, sizeof path, "%s/pipelines/mog8.mix", top ? top : ".");
    have_mix = mog_load(&mix, path, err, sizeof err) == 0;
    if (!have_mix) printf("  cannot load the mixture: %s\n", err);
    TEST_RUN(test_schedule);
    TEST_RUN(test_reproducible);
    TEST_RUN(test_reproduces_mixture);
    TEST_RUN(test_too_few_steps_is_worse);
    TEST_RUN(test_edm_adapter);
    if (have_mix) mog_free(&mix);
    return TEST_END();
}
