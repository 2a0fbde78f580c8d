/* test_mlp.c: the 2-D MLP denoiser (common/models/mlp.c) inside the EDM wrapper: input and parameter
 * gradients against central finite differences (class labels, conditioning vectors, the extra
 * hidden-layer gradient), and a short EDM training run that lowers the loss.
 *
 * Tolerance: central differences with step 2e-3 on a float32 forward (loss accumulated in
 * double): |analytic - numeric| <= 2e-3 + 2e-2 |numeric|. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "check.h"
#include "edm.h"
#include "log.h"
#include "mlp.h"
#include "optimizer.h"
#include "philox.h"

static BackendCtx *ctx;

#define NS 5

typedef struct Probe {
    Edm *e;
    Mlp *m;
    const float *x, *sigma, *r, *cond, *rh;
    const int32_t *labels;
    float *out;
} Probe;

/* L = sum(D * r) + sum(hidden * rh) */
static double probe_loss(Probe *p) {
    int64_t dim = p->e->net.dim;
    edm_forward(p->e, p->out, p->x, p->sigma, p->labels, p->cond, NS, 0);
    double L = 0;
    for (int64_t i = 0; i < NS * dim; i++) L += (double)p->out[i] * p->r[i];
    if (p->rh) {
        const float *h = p->e->net.bottleneck(p->e->net.self);
        for (int64_t i = 0; i < NS * p->e->net.bottleneck_dim; i++) L += (double)h[i] * p->rh[i];
    }
    return L;
}

static void gradcheck(const char *spec, int use_hidden) {
    const Backend *be = &backend_cpu;
    char err[256];
    MlpConfig cfg;
    REQUIRE(mlp_config_parse(&cfg, spec, err, sizeof err) == 0, "%s", err);
    Mlp *m = mlp_new(&cfg, be, ctx);
    mlp_init(m, 11);
    mlp_alloc_batch(m, NS);
    Edm e;
    edm_init(&e, mlp_edm_net(m), NS, be, ctx);
    int64_t dim = cfg.in_dim, W = cfg.width;
    float x[NS * 8], r[NS * 8], out[NS * 8], dx[NS * 8], cond[NS * 8], rh[NS * 64];
    float sigma[NS] = {0.01f, 0.3f, 1.0f, 4.0f, 50.0f};
    int32_t labels[NS] = {0, 1, 2, 3, 1};
    REQUIRE(dim <= 8 && W <= 64 && cfg.cond_dim <= 8);
    rng_normal_fill(x, NS * dim, 1, 1, 0);
    rng_normal_fill(r, NS * dim, 1, 2, 0);
    rng_normal_fill(cond, NS * 8, 1, 3, 0);
    rng_normal_fill(rh, NS * W, 1, 4, 0);
    Probe p = {&e, m, x, sigma, r, cfg.cond_dim ? cond : NULL, use_hidden ? rh : NULL,
               cfg.label_dim ? labels : NULL, out};
    probe_loss(&p);
    ParamSet *ps = mlp_params(m);
    params_zero_grad(ps);
    memset(dx, 0, sizeof dx);
    edm_backward(&e, dx, r, use_hidden ? rh : NULL, NS);
    float *grad = malloc((size_t)ps->total * sizeof(float));
    memcpy(grad, ps->grad, (size_t)ps->total * sizeof(float));

    const double h = 2e-3;
    int bad = 0, n = 0;
    double worst = 0;
    char worst_what[320] = "";
    /* every input element, and a spread of elements of every parameter tensor */
    for (int64_t i = 0; i < NS * dim; i++) {
        float keep = x[i];
        x[i] = keep + (float)h; double lp = probe_loss(&p);
        x[i] = keep - (float)h; double lm = probe_loss(&p);
        x[i] = keep;
        double num = (lp - lm) / (2 * h), an = dx[i], ex = fabs(an - num) - (2e-3 + 2e-2 * fabs(num));
        n++;
        if (ex > 0) bad++;
        if (ex > worst || !worst_what[0]) {
            worst = ex;
            snprintf(worst_what, sizeof worst_what, "dx[%lld]: analytic %.6g numeric %.6g", (long long)i, an, num);
        }
    }
    for (int t = 0; t < ps->n; t++) {
        int64_t cnt = ps->p[t].numel;
        for (int64_t k = 0; k < 6 && k < cnt; k++) {
            int64_t j = (k * 7919 + t * 31) % cnt;
            float *w = params_data(ps, t) + j;
            float keep = *w;
            *w = keep + (float)h; double lp = probe_loss(&p);
            *w = keep - (float)h; double lm = probe_loss(&p);
            *w = keep;
            double num = (lp - lm) / (2 * h), an = grad[ps->p[t].offset + j];
            double ex = fabs(an - num) - (2e-3 + 2e-2 * fabs(num));
            n++;
            if (ex > 0) bad++;
            if (ex > worst) {
                worst = ex;
                snprintf(worst_what, sizeof worst_what, "%s[%lld]: analytic %.6g numeric %.6g", ps->p[t].name,
                         (long long)j, an, num);
            }
        }
    }
    printf("  %s%s: %d gradient entries checked, worst %s\n", spec, use_hidden ? " (+hidden grad)" : "", n,
           worst_what);
    CHECK(bad == 0, "%d of %d entries outside tolerance; worst %s", bad, n, worst_what);
    free(grad);
    edm_free(&e);
    mlp_destroy(&m);
}

static void test_gradcheck_labels(void) { gradcheck("mlp,width=16,depth=3,classes=4,emb=16,noise=8", 0); }
static void test_gradcheck_cond_hidden(void) { gradcheck("mlp,width=12,depth=2,cond=3,emb=8,noise=6", 1); }
static void test_gradcheck_uncond(void) { gradcheck("mlp,width=8,depth=1,emb=8,noise=4", 0); }

static void test_training_learns(void) {
    const Backend *be = &backend_cpu;
    char err[256];
    MlpConfig cfg;
    REQUIRE(mlp_config_parse(&cfg, "mlp,width=64,depth=3,classes=2,emb=32", err, sizeof err) == 0, "%s", err);
    Mlp *m = mlp_new(&cfg, be, ctx);
    mlp_init(m, 1);
    const int N = 64;
    mlp_alloc_batch(m, N);
    Edm e;
    edm_init(&e, mlp_edm_net(m), N, be, ctx);
    OptimConfig oc;
    optim_config_default(&oc);
    oc.lr = 3e-3f;
    Optim *opt = optim_new(mlp_params(m), &oc);
    /* two classes, each a pair of points */
    float x[64 * 2], noise[64 * 2], sig[64];
    int32_t labels[64];
    for (int n = 0; n < N; n++) {
        labels[n] = n % 2;
        x[2 * n] = (n % 2 ? 1.0f : -1.0f) * 0.8f;
        x[2 * n + 1] = ((n / 2) % 2 ? 1.0f : -1.0f) * 0.4f;
        sig[n] = 0.05f + 0.05f * (float)n;
    }
    rng_normal_fill(noise, N * 2, 3, 3, 0);
    float e0 = edm_loss_given(&e, x, noise, sig, labels, NULL, N, 0);
    for (int s = 0; s < 300; s++) {
        params_zero_grad(mlp_params(m));
        edm_loss_step(&e, x, labels, NULL, N, 77, s, 1);
        edm_loss_backward(&e, N);
        optim_step(opt);
    }
    float e1 = edm_loss_given(&e, x, noise, sig, labels, NULL, N, 0);
    printf("  300 EDM steps: fixed-noise loss %.4f -> %.4f\n", (double)e0, (double)e1);
    CHECK(e1 < 0.5f * e0, "loss did not halve: %g -> %g", (double)e0, (double)e1);
    optim_destroy(&opt);
    edm_free(&e);
    mlp_destroy(&m);
}

static void test_config_errors(void) {
    const char *bad[] = {"", "unet", "mlp,width=0", "mlp,depth=99", "mlp,noise=3", "mlp,classes=2,cond=2",
                         "mlp,foo=1", "mlp,width"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        MlpConfig c;
        char err[256] = "";
        CHECK(mlp_config_parse(&c, bad[i], err, sizeof err) == -1 && err[0], "spec '%s' accepted", bad[i]);
    }
}

int main(void) {
    ctx = backend_ctx_new(&backend_cpu, 2);
    TEST_RUN(test_gradcheck_labels);
    TEST_RUN(test_gradcheck_cond_hidden);
    TEST_RUN(test_gradcheck_uncond);
    TEST_RUN(test_training_learns);
    TEST_RUN(test_config_errors);
    backend_ctx_destroy(&ctx);
    return TEST_END();
}
