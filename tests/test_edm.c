/* test_edm.c: the EDM preconditioning and training loss of common/edm.c against an independent
 * reference, and the noise levels edm_loss_step draws.
 *
 *   - fixture (tests/torch_edm_ref.py -> tests/fixtures/edm_ref.safetensors, EDM's EDMPrecond and
 *     EDMLoss in PyTorch): on fixed x0, noise, sigma (0.002 to 80) and labels, with a stand-in
 *     network F = tanh(A x_in + c_noise B + onehot(c) L) that both sides implement, for
 *     sigma_data 0.5 and 2.0: what F receives (x_in = c_in (x0 + sigma noise), c_noise, the
 *     one-hot), the loss of edm_loss_given, the gradient F's backward receives from
 *     edm_loss_backward (d loss / d F: lambda, c_out and the 1/(N D) of the mean), the parameter
 *     gradient d loss / d A, the denoiser output D of edm_forward and the input gradient of
 *     edm_backward given d loss / d D (c_skip and c_in paths);
 *   - edm_loss_step's draws: ln sigma over 16 steps of 4096 samples has the mean and variance of
 *     N(-1.2, 1.2^2) and passes a Kolmogorov-Smirnov test against it, the noise those of N(0, 1);
 *     tolerances from the sample size (below); and sample n of step s is normal number s N + n
 *     of EDM_STREAM_SIGMA, its noise normals s N D .. of EDM_STREAM_NOISE (docs/UNET.md
 *     section 6).
 *
 * Fixture tolerance: the reference is float64 from the same float32 inputs; edm.c works in
 * float32. Elementwise |ours - ref| <= RTOL |ref| + 1e-7 max|ref|, with RTOL
 *   1e-6 for F's input, c_noise, D and the input gradient (a few float32 roundings: measured
 *        1.2e-7, and 5.8e-7 for one input-gradient element of 1.3e-4 whose two paths cancel),
 *   1e-3 for the loss, d loss / d F and d loss / d A: they carry the residual D - x0, which at
 *        sigma = 0.002 is ~ sigma |noise + F| (down to ~2e-4 here) out of a difference of numbers
 *        ~ 1, so float32 rounding of x_noisy and D (~1e-7) costs up to ~5e-4 of it; measured
 *        worst 2.9e-4 (d loss / d F), 1.9e-5 (d loss / d A). lambda = 1 instead of
 *        (sigma^2 + sd^2) / (sigma sd)^2 is off by factors 3 to 10^5.
 * The printed line gives the worst element as a share of its tolerance. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "check.h"
#include "edm.h"
#include "philox.h"
#include "safetensors.h"

#define RTOL_TIGHT 1e-6
#define RTOL_RESID 1e-3
#define ATOL 1e-7 /* times max|ref| */
/* The documented training distribution (docs/UNET.md section 6), spelled out here rather than
 * taken from edm.h, so that a wrong constant there cannot hide. */
#define DOC_P_MEAN (-1.2)
#define DOC_P_STD 1.2

static StFile fx;
static int have_fx;
static BackendCtx *ctx;

/* Fixture tensor "case.name" as float32 (malloc'd), NULL (and a failure) if missing or of
 * another size (numel < 0: any). */
static float *fx_get(const char *cs, const char *name, int64_t numel) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", cs, name);
    const StTensor *t = st_find(&fx, key);
    CHECK(t != NULL && (numel < 0 || t->numel == numel), "fixture tensor %s missing or of the wrong size", key);
    if (!t || (numel >= 0 && t->numel != numel)) return NULL;
    float *out = malloc((size_t)(t->numel ? t->numel : 1) * sizeof(float));
    st_tensor_to_f32(t, out);
    return out;
}

/* ---- the stand-in network: F = tanh(A x_in + c_noise B + onehot(c) L), recording its inputs ---- */

typedef struct Probe {
    int64_t D, K, cap;
    float *A, *B, *L, *dA;               /* (D), (D), (K, D), (D) */
    float *x_in, *c_noise, *cond, *out;  /* what the last forward received (and gave) */
    float *dout;                         /* what the last backward received */
    int backward_calls;
} Probe;

static void probe_forward(void *self, float *out, const float *x_in, const float *c_noise, const float *cond,
                          int64_t N, int train) {
    Probe *p = self;
    (void)train;
    int64_t D = p->D;
    memcpy(p->x_in, x_in, (size_t)(N * D) * sizeof(float));
    memcpy(p->c_noise, c_noise, (size_t)N * sizeof(float));
    if (p->K > 0) memcpy(p->cond, cond, (size_t)(N * p->K) * sizeof(float));
    for (int64_t n = 0; n < N; n++)
        for (int64_t j = 0; j < D; j++) {
            double a = (double)p->A[j] * x_in[n * D + j] + (double)c_noise[n] * p->B[j];
            for (int64_t k = 0; k < p->K; k++) a += (double)cond[n * p->K + k] * p->L[k * D + j];
            out[n * D + j] = p->out[n * D + j] = (float)tanh(a);
        }
}

static void probe_backward(void *self, float *dx_in, const float *dout, const float *dextra, int64_t N) {
    Probe *p = self;
    (void)dextra;
    int64_t D = p->D;
    memcpy(p->dout, dout, (size_t)(N * D) * sizeof(float));
    p->backward_calls++;
    for (int64_t n = 0; n < N; n++)
        for (int64_t j = 0; j < D; j++) {
            double f = p->out[n * D + j], dpre = (double)dout[n * D + j] * (1 - f * f);
            p->dA[j] += (float)(dpre * p->x_in[n * D + j]);
            if (dx_in) dx_in[n * D + j] += (float)(dpre * p->A[j]);
        }
}

static void probe_init(Probe *p, int64_t D, int64_t K, int64_t cap) {
    memset(p, 0, sizeof *p);
    p->D = D; p->K = K; p->cap = cap;
    p->A = calloc((size_t)D, sizeof(float));
    p->B = calloc((size_t)D, sizeof(float));
    p->dA = calloc((size_t)D, sizeof(float));
    p->L = calloc((size_t)((K ? K : 1) * D), sizeof(float));
    p->cond = calloc((size_t)(cap * (K ? K : 1)), sizeof(float));
    p->x_in = calloc((size_t)(cap * D), sizeof(float));
    p->out = calloc((size_t)(cap * D), sizeof(float));
    p->dout = calloc((size_t)(cap * D), sizeof(float));
    p->c_noise = calloc((size_t)cap, sizeof(float));
}

static void probe_free(Probe *p) {
    free(p->A); free(p->B); free(p->dA); free(p->L); free(p->cond); free(p->x_in); free(p->out); free(p->dout);
    free(p->c_noise);
}

static EdmNet probe_net(Probe *p) {
    EdmNet n;
    memset(&n, 0, sizeof n);
    n.self = p;
    n.dim = p->D;
    n.label_dim = (int)p->K;
    n.forward = probe_forward;
    n.backward = probe_backward;
    return n;
}

/* ---- the fixture cases ---- */

static double worst_seen; /* largest |ours - ref| / (ATOL max|ref| + RTOL |ref|) over every comparison */

static void compare(const float *ours, const float *ref, int64_t n, double rtol, const char *what) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(ref[i]));
    CHECK_CLOSE(ours, ref, n, ATOL * m, rtol, what);
    for (int64_t i = 0; i < n; i++) {
        double lim = ATOL * m + rtol * fabs(ref[i]);
        if (lim > 0) worst_seen = fmax(worst_seen, fabs((double)ours[i] - ref[i]) / lim);
    }
}

static void fixture_case(const char *cs) {
    REQUIRE(have_fx, "no fixture");
    char key[64];
    snprintf(key, sizeof key, "%s.sigma", cs);
    const StTensor *ts = st_find(&fx, key), *tx;
    snprintf(key, sizeof key, "%s.x0", cs);
    tx = st_find(&fx, key);
    snprintf(key, sizeof key, "%s.L", cs);
    const StTensor *tl = st_find(&fx, key);
    REQUIRE(ts && tx && tl && tx->ndim == 2 && tl->ndim == 2, "%s: fixture inputs missing", cs);
    int64_t N = tx->shape[0], D = tx->shape[1], K = tl->shape[0];
    float *x0 = fx_get(cs, "x0", N * D), *noise = fx_get(cs, "noise", N * D), *sigma = fx_get(cs, "sigma", N);
    float *lab = fx_get(cs, "labels", N), *sd = fx_get(cs, "sigma_data", 1);
    float *x_noisy = fx_get(cs, "x_noisy", N * D), *x_in = fx_get(cs, "x_in", N * D), *c_noise = fx_get(cs, "c_noise", N);
    float *want_D = fx_get(cs, "D", N * D), *loss = fx_get(cs, "loss", 1), *dF = fx_get(cs, "dF", N * D);
    float *dD = fx_get(cs, "dD", N * D), *dA = fx_get(cs, "dA", D), *dx = fx_get(cs, "dx", N * D);
    Probe p;
    probe_init(&p, D, K, N);
    float *A = fx_get(cs, "A", D), *B = fx_get(cs, "B", D), *L = fx_get(cs, "L", K * D);
    if (x0 && noise && sigma && lab && sd && x_noisy && x_in && c_noise && want_D && loss && dF && dD && dA && dx && A &&
        B && L) {
        memcpy(p.A, A, (size_t)D * sizeof(float));
        memcpy(p.B, B, (size_t)D * sizeof(float));
        memcpy(p.L, L, (size_t)(K * D) * sizeof(float));
        int32_t labels[64];
        REQUIRE(N <= 64);
        for (int64_t n = 0; n < N; n++) labels[n] = (int32_t)lab[n];
        Edm e;
        edm_init(&e, probe_net(&p), N, &backend_cpu, ctx);
        e.sigma_data = sd[0];
        char what[96];

        /* the loss and what the network saw */
        float l = edm_loss_given(&e, x0, noise, sigma, labels, NULL, N, 1);
        snprintf(what, sizeof what, "%s: loss", cs);
        compare(&l, loss, 1, RTOL_RESID, what);
        snprintf(what, sizeof what, "%s: F's input x_in", cs);
        compare(p.x_in, x_in, N * D, RTOL_TIGHT, what);
        snprintf(what, sizeof what, "%s: c_noise", cs);
        compare(p.c_noise, c_noise, N, RTOL_TIGHT, what);
        int onehot_ok = 1;
        for (int64_t n = 0; n < N; n++)
            for (int64_t k = 0; k < K; k++) onehot_ok &= p.cond[n * K + k] == (k == labels[n] ? 1.0f : 0.0f);
        CHECK(onehot_ok, "%s: F's conditioning input is not the one-hot of the labels", cs);

        /* its backward: the gradient F receives and the parameter gradient */
        memset(p.dA, 0, (size_t)D * sizeof(float));
        edm_loss_backward(&e, N);
        CHECK(p.backward_calls == 1, "%s: %d network backward calls", cs, p.backward_calls);
        snprintf(what, sizeof what, "%s: d loss / d F", cs);
        compare(p.dout, dF, N * D, RTOL_RESID, what);
        snprintf(what, sizeof what, "%s: d loss / d A", cs);
        compare(p.dA, dA, D, RTOL_RESID, what);

        /* the denoiser on x_noisy and its input gradient given d loss / d D */
        float *out = calloc((size_t)(N * D), sizeof(float)), *gx = calloc((size_t)(N * D), sizeof(float));
        edm_forward(&e, out, x_noisy, sigma, labels, NULL, N, 0);
        snprintf(what, sizeof what, "%s: D(x_noisy)", cs);
        compare(out, want_D, N * D, RTOL_TIGHT, what);
        edm_backward(&e, gx, dD, NULL, N);
        snprintf(what, sizeof what, "%s: d loss / d x_noisy", cs);
        compare(gx, dx, N * D, RTOL_TIGHT, what);
        snprintf(what, sizeof what, "%s: d loss / d F (edm_backward)", cs);
        compare(p.dout, dF, N * D, RTOL_TIGHT, what);
        free(out);
        free(gx);
        edm_free(&e);
    }
    probe_free(&p);
    float *all[] = {x0, noise, sigma, lab, sd, x_noisy, x_in, c_noise, want_D, loss, dF, dD, dA, dx, A, B, L};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
}

static void test_fixture_sigma_data_05(void) { fixture_case("s05"); }
static void test_fixture_sigma_data_2(void) { fixture_case("s2"); }

/* ---- edm_loss_step's draws ---- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Kolmogorov-Smirnov distance of v (sorted here) from N(mu, s^2). */
static double ks_normal(double *v, int64_t n, double mu, double s) {
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    double d = 0;
    for (int64_t i = 0; i < n; i++) {
        double c = 0.5 * erfc(-(v[i] - mu) / (s * sqrt(2.0)));
        d = fmax(d, fmax(fabs(c - (double)i / n), fabs((double)(i + 1) / n - c)));
    }
    return d;
}

/* Mean, variance and KS distance of n draws against N(mu, s^2). Bounds: the mean within 5
 * standard errors s/sqrt(n), the variance within 5 of its standard error s^2 sqrt(2/(n-1)), the
 * KS distance below 1.95/sqrt(n) (a true normal sample exceeds it with probability 0.001). */
static void check_normal(double *v, int64_t n, double mu, double s, const char *what) {
    double m = 0, q = 0;
    for (int64_t i = 0; i < n; i++) m += v[i];
    m /= n;
    for (int64_t i = 0; i < n; i++) q += (v[i] - m) * (v[i] - m);
    q /= (n - 1);
    double tm = 5 * s / sqrt((double)n), tv = 5 * s * s * sqrt(2.0 / (n - 1)), tk = 1.95 / sqrt((double)n);
    double ks = ks_normal(v, n, mu, s);
    printf("  %s: n %lld, mean %.4f (want %.4f +- %.4f), variance %.4f (want %.4f +- %.4f), KS %.4f (< %.4f)\n", what,
           (long long)n, m, mu, tm, q, s * s, tv, ks, tk);
    CHECK(fabs(m - mu) <= tm, "%s: mean %.5f, want %.5f +- %.5f", what, m, mu, tm);
    CHECK(fabs(q - s * s) <= tv, "%s: variance %.5f, want %.5f +- %.5f", what, q, s * s, tv);
    CHECK(ks <= tk, "%s: Kolmogorov-Smirnov distance %.5f from N(%g, %g^2) exceeds %.5f", what, ks, mu, s, tk);
}

static void test_loss_step_draws(void) {
    enum { N = 4096, STEPS = 16 };
    const uint64_t seed = 77;
    Probe p;
    probe_init(&p, 1, 0, N);
    p.A[0] = 1;
    Edm e;
    edm_init(&e, probe_net(&p), N, &backend_cpu, ctx);
    float *x0 = calloc(N, sizeof(float)), *z = malloc(N * sizeof(float));
    double *lns = malloc(sizeof(double) * N * STEPS), *eps = malloc(sizeof(double) * N * STEPS);
    double worst_z = 0, worst_eps = 0;
    for (int s = 0; s < STEPS; s++) {
        int64_t step = 3 * s + 1; /* steps need not be consecutive */
        edm_loss_step(&e, x0, NULL, NULL, N, seed, step, 1);
        rng_normal_fill(z, N, seed, EDM_STREAM_NOISE, (uint64_t)(step * N));
        for (int n = 0; n < N; n++) {
            double ls = 4.0 * p.c_noise[n], sg = exp(ls), c_in = 1 / sqrt(sg * sg + e.sigma_data * e.sigma_data);
            double ep = p.x_in[n] / (c_in * sg); /* x0 = 0: x_in = c_in sigma eps */
            lns[s * N + n] = ls;
            eps[s * N + n] = ep;
            /* the documented streams: z of ln sigma = P_mean + P_std z, and the noise */
            double zd = rng_normal1(seed, EDM_STREAM_SIGMA, (uint64_t)(step * N + n));
            worst_z = fmax(worst_z, fabs((ls - DOC_P_MEAN) / DOC_P_STD - zd));
            worst_eps = fmax(worst_eps, fabs(ep - z[n]) / (1 + fabs(z[n])));
        }
    }
    printf("  stream check: worst |z - normal(s N + n)| %.3g, worst noise error %.3g (limit 1e-4)\n", worst_z, worst_eps);
    CHECK(worst_z <= 1e-4, "ln sigma is not P_mean + P_std * normal(seed, EDM_STREAM_SIGMA, s N + n): worst %.3g",
          worst_z);
    CHECK(worst_eps <= 1e-4, "the noise is not normal(seed, EDM_STREAM_NOISE, s N D + i): worst %.3g", worst_eps);
    check_normal(lns, (int64_t)N * STEPS, DOC_P_MEAN, DOC_P_STD, "ln sigma");
    check_normal(eps, (int64_t)N * STEPS, 0.0, 1.0, "noise");
    free(x0); free(z); free(lns); free(eps);
    edm_free(&e);
    probe_free(&p);
}

int main(int argc, char **argv) {
    (void)argc;
    check_find_fixtures(argv[0]);
    char err[512];
    have_fx = st_read(&fx, check_fixture("edm_ref.safetensors"), err, sizeof err) == 0;
    if (!have_fx) printf("  cannot read the PyTorch fixture: %s\n", err);
    ctx = backend_ctx_new(&backend_cpu, 1);
    TEST_RUN(test_fixture_sigma_data_05);
    TEST_RUN(test_fixture_sigma_data_2);
    printf("  fixture: worst |ours - ref| is %.3g of the tolerance\n", worst_seen);
    TEST_RUN(test_loss_step_draws);
    backend_ctx_destroy(&ctx);
    st_free(&fx);
    return TEST_END();
}
