/* test_distill.c: the image-distillation losses of common/msd/distill.c against an independent
 * PyTorch reference (tests/torch_distill_ref.py -> tests/fixtures/distill_ref.safetensors), on
 * tiny UNets (1x8x8 images, 3 classes) with fixed random weights and fixed noise:
 *   - one DM generator step: x = G(z, c) = D_gen(80 z; 80, c), x_t = x + table[t] eps, the
 *     teacher's and the critic's denoised x_t, then the generator's parameter gradient of L_DM
 *     (distill_generate, distill_add_noise, distill_dm_backward), and L_DM; the same step with
 *     the critic's GAN input gradient added at x (weight 3e-3);
 *   - the critic's fake-score loss on the detached samples and its parameter gradient
 *     (distill_fake_loss, table sigmas from 0.002 to 80);
 *   - TSM: x_t, the teacher's output, L_TSM and the small network's parameter gradient
 *     (distill_tsm_loss);
 *   - the GAN head on the critic's bottleneck: the logits of noised fake and real batches
 *     (forward), the critic-side loss L_D and the gradients of weight * L_D into the critic's
 *     and the head's parameters (distill_gan_critic), and the generator-side L_G with its
 *     input gradient dL_G/dx (distill_gan_gen_grad); a bottleneck whose channels do not divide
 *     into the head's GroupNorm groups is an error, not an abort.
 *
 * Tolerance: the reference is float64 on the same float32 weights and inputs; ours is float32.
 * Each tensor passes when |ours - ref| <= 1e-4 max|ref| + 1e-3 |ref| elementwise (test_unet's
 * tolerance; the chains here are a few UNet evaluations long), each loss when within 1e-4
 * relative. The table sigmas are also compared (1e-6 relative). The worst element of every
 * comparison, as a share of its tolerance, is printed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "check.h"
#include "distill.h"
#include "dmd.h"
#include "edm.h"
#include "safetensors.h"
#include "unet.h"

#define NET_SPEC "in=1,res=8,ch=4,mult=1-2,blocks=1,attn=4,classes=3,headch=4"
#define PHI_SPEC "in=1,res=8,ch=2,mult=1-2,blocks=1,attn=none,classes=3,headch=2"
#define ATOL_REL 1e-4 /* times max|ref| */
#define RTOL 1e-3
#define LOSS_RTOL 1e-4

static StFile fx;
static int have_fx;
static BackendCtx *ctx;
static const Backend *be = &backend_cpu;
static float table[DMD_TABLE_N];
static double worst_seen;

/* Fixture tensor as float32 (malloc'd); NULL (and a failure) if missing or of another size. */
static float *fx_get(const char *name, int64_t numel) {
    const StTensor *t = st_find(&fx, name);
    CHECK(t != NULL && (numel < 0 || t->numel == numel), "fixture tensor %s missing or of the wrong size", name);
    if (!t || (numel >= 0 && t->numel != numel)) return NULL;
    float *out = malloc((size_t)(t->numel ? t->numel : 1) * sizeof(float));
    st_tensor_to_f32(t, out);
    return out;
}

static int fx_labels(const char *name, int32_t *out, int64_t N) {
    float *f = fx_get(name, N);
    if (!f) return -1;
    for (int64_t n = 0; n < N; n++) out[n] = (int32_t)f[n];
    free(f);
    return 0;
}

/* sigma[n] = table[t[n]] from dmd_sigma_table, checked against the fixture's sigma */
static int fx_table_sigma(const char *tname, const char *sname, float *sigma, int64_t N) {
    float *t = fx_get(tname, N), *want = fx_get(sname, N);
    int ok = t && want;
    for (int64_t n = 0; ok && n < N; n++) {
        sigma[n] = table[(int)t[n]];
        CHECK(fabs(sigma[n] - want[n]) <= 1e-6 * want[n], "%s: table[%d] = %.9g, reference %.9g", sname, (int)t[n],
              (double)sigma[n], (double)want[n]);
    }
    free(t);
    free(want);
    return ok ? 0 : -1;
}

static void compare(const char *what, const float *ours, const float *ref, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(ref[i]));
    CHECK_CLOSE(ours, ref, n, ATOL_REL * m + 1e-30, RTOL, what);
    double w = 0;
    for (int64_t i = 0; i < n; i++) w = fmax(w, fabs((double)ours[i] - ref[i]) / (ATOL_REL * m + RTOL * fabs(ref[i]) + 1e-30));
    worst_seen = fmax(worst_seen, w);
}

static void compare_fx(const char *what, const float *ours, const char *name, int64_t n) {
    float *ref = fx_get(name, n);
    if (ref) compare(what, ours, ref, n);
    free(ref);
}

static void compare_loss(const char *what, double ours, const char *name) {
    float *ref = fx_get(name, 1);
    if (!ref) return;
    CHECK(fabs(ours - ref[0]) <= LOSS_RTOL * fabs(ref[0]), "%s: %.9g, reference %.9g (rtol %g)", what, ours,
          (double)ref[0], LOSS_RTOL);
    worst_seen = fmax(worst_seen, fabs(ours - ref[0]) / (LOSS_RTOL * fabs(ref[0])));
    printf("  %s %.7g (reference %.7g)\n", what, ours, (double)ref[0]);
    free(ref);
}

/* every parameter gradient of ps against "<prefix><name>" */
static void compare_grads(const ParamSet *ps, const char *prefix) {
    for (int i = 0; i < ps->n; i++) {
        char name[256];
        snprintf(name, sizeof name, "%s%s", prefix, ps->p[i].name);
        compare_fx(name, params_grad(ps, i), name, ps->p[i].numel);
    }
}

/* ---- a network with the fixture's weights ---- */

typedef struct Net {
    UNet *u;
    Edm e;
} Net;

static int net_open(Net *n, const char *spec, const char *prefix, int64_t cap) {
    char err[512];
    UNetConfig cfg;
    memset(n, 0, sizeof *n);
    if (unet_config_parse(&cfg, spec, err, sizeof err)) { CHECK(0, "%s", err); return -1; }
    n->u = unet_new(&cfg, be, ctx);
    if (st_load_params(check_fixture("distill_ref.safetensors"), unet_params(n->u), prefix, ST_ALLOW_EXTRA, err, sizeof err)) {
        CHECK(0, "%s weights: %s", prefix, err);
        unet_destroy(&n->u);
        return -1;
    }
    unet_alloc_batch(n->u, cap);
    edm_init(&n->e, unet_edm_net(n->u), cap, be, ctx);
    return 0;
}

static void net_close(Net *n) {
    edm_free(&n->e);
    unet_destroy(&n->u);
}

enum { N = 3, D = 64 }; /* the fixture's batch and 1x8x8 images */

/* ---- the DM generator step ---- */

static void test_dm_generator_grad(void) {
    REQUIRE(have_fx, "no fixture");
    Net g, tch, cr;
    REQUIRE(net_open(&g, NET_SPEC, "gen.", N) == 0);
    REQUIRE(net_open(&tch, NET_SPEC, "teacher.", N) == 0);
    REQUIRE(net_open(&cr, NET_SPEC, "critic.", N) == 0);
    REQUIRE(g.e.net.dim == D);
    DistillBuf b;
    distill_buf_init(&b, be, ctx, N, D);
    int32_t labels[N];
    float sigma[N], x[N * D], x_t[N * D], d_real[N * D], d_fake[N * D];
    float *z = fx_get("dm.z", N * D), *eps = fx_get("dm.eps", N * D);
    if (z && eps && fx_labels("dm.labels", labels, N) == 0 && fx_table_sigma("dm.t", "dm.sigma", sigma, N) == 0) {
        distill_generate(&b, &g.e, x, z, labels, NULL, N, 1);
        compare_fx("x = G(z, c)", x, "dm.x", N * D);
        distill_add_noise(&b, x_t, x, eps, sigma, N);
        compare_fx("x_t", x_t, "dm.x_t", N * D);
        edm_forward(&tch.e, d_real, x_t, sigma, labels, NULL, N, 0);
        compare_fx("D_real(x_t)", d_real, "dm.d_real", N * D);
        edm_forward(&cr.e, d_fake, x_t, sigma, labels, NULL, N, 0);
        compare_fx("D_fake(x_t)", d_fake, "dm.d_fake", N * D);
        params_zero_grad(unet_params(g.u));
        double loss = distill_dm_backward(&b, &g.e, x, d_real, d_fake, NULL, 0.0f, N);
        compare_loss("L_DM", loss, "dm.loss");
        compare_grads(unet_params(g.u), "dm.grad.gen.");
        /* with the critic's GAN input gradient added at x (G's activations are still those of x) */
        float *dx_gan = fx_get("gan.dx", N * D), *wg = fx_get("dm_gan.weight", 1);
        if (dx_gan && wg) {
            params_zero_grad(unet_params(g.u));
            double loss2 = distill_dm_backward(&b, &g.e, x, d_real, d_fake, dx_gan, wg[0], N);
            CHECK(loss2 == loss, "L_DM with the GAN term %.9g, without %.9g: the GAN term must not enter L_DM", loss2,
                  loss);
            compare_grads(unet_params(g.u), "dm_gan.grad.gen.");
        }
        free(dx_gan);
        free(wg);
    }
    free(z);
    free(eps);
    distill_buf_free(&b);
    net_close(&g);
    net_close(&tch);
    net_close(&cr);
}

/* ---- the critic's fake-score loss ---- */

static void test_fake_score_loss(void) {
    REQUIRE(have_fx, "no fixture");
    Net cr;
    REQUIRE(net_open(&cr, NET_SPEC, "critic.", N) == 0);
    int32_t labels[N];
    float sigma[N];
    float *x = fx_get("dm.x", N * D), *noise = fx_get("fake.noise", N * D);
    if (x && noise && fx_labels("dm.labels", labels, N) == 0 &&
        fx_table_sigma("fake.t", "fake.sigma", sigma, N) == 0) {
        params_zero_grad(unet_params(cr.u));
        float loss = distill_fake_loss(&cr.e, x, noise, sigma, labels, NULL, N);
        compare_loss("L_fake", loss, "fake.loss");
        compare_grads(unet_params(cr.u), "fake.grad.critic.");
    }
    free(x);
    free(noise);
    net_close(&cr);
}

/* ---- TSM ---- */

static void test_tsm_loss(void) {
    REQUIRE(have_fx, "no fixture");
    Net tch, phi;
    REQUIRE(net_open(&tch, NET_SPEC, "teacher.", N) == 0);
    REQUIRE(net_open(&phi, PHI_SPEC, "phi.", N) == 0);
    DistillBuf b;
    distill_buf_init(&b, be, ctx, N, D);
    int32_t labels[N];
    float x_t[N * D], d_teacher[N * D];
    float *x0 = fx_get("tsm.x0", N * D), *noise = fx_get("tsm.noise", N * D), *sigma = fx_get("tsm.sigma", N);
    if (x0 && noise && sigma && fx_labels("tsm.labels", labels, N) == 0) {
        distill_add_noise(&b, x_t, x0, noise, sigma, N);
        compare_fx("TSM x_t", x_t, "tsm.x_t", N * D);
        edm_forward(&tch.e, d_teacher, x_t, sigma, labels, NULL, N, 0);
        compare_fx("D_teacher(x_t)", d_teacher, "tsm.d_teacher", N * D);
        params_zero_grad(unet_params(phi.u));
        float loss = distill_tsm_loss(&b, &phi.e, x_t, d_teacher, sigma, labels, NULL, N);
        compare_loss("L_TSM", loss, "tsm.loss");
        compare_grads(unet_params(phi.u), "tsm.grad.phi.");
    }
    free(x0);
    free(noise);
    free(sigma);
    distill_buf_free(&b);
    net_close(&tch);
    net_close(&phi);
}

/* ---- the GAN head ---- */

static void test_gan_head(void) {
    REQUIRE(have_fx, "no fixture");
    Net cr;
    REQUIRE(net_open(&cr, NET_SPEC, "critic.", N) == 0);
    int64_t chw[3];
    unet_bottleneck_shape(cr.u, chw);
    GanHead h;
    char err[512];
    int made = gan_head_init(&h, chw[0], chw[1], chw[2], N, be, ctx, err, sizeof err) == 0;
    CHECK(made, "%s", err);
    if (!made) { net_close(&cr); return; }
    int loaded = st_load_params(check_fixture("distill_ref.safetensors"), &h.ps, "head.", ST_ALLOW_EXTRA, err, sizeof err) == 0;
    CHECK(loaded, "head weights: %s", err);
    DistillBuf b;
    distill_buf_init(&b, be, ctx, N, D);
    int32_t lab_fake[N], lab_real[N];
    float s_fake[N], s_real[N], logit[N], dx[N * D];
    float *xf = fx_get("gan.x_fake", N * D), *nf = fx_get("gan.noise_fake", N * D);
    float *xr = fx_get("gan.x_real", N * D), *nr = fx_get("gan.noise_real", N * D), *w = fx_get("gan.weight", 1);
    if (loaded && xf && nf && xr && nr && w && fx_labels("dm.labels", lab_fake, N) == 0 &&
        fx_labels("gan.labels_real", lab_real, N) == 0 &&
        fx_table_sigma("gan.t_fake", "gan.sigma_fake", s_fake, N) == 0 &&
        fx_table_sigma("gan.t_real", "gan.sigma_real", s_real, N) == 0) {
        /* forward: the head's logits on the critic's bottleneck */
        distill_gan_logits(&b, &cr.e, &h, logit, xf, nf, s_fake, lab_fake, NULL, N);
        compare_fx("logits (fake)", logit, "gan.logit_fake", N);
        distill_gan_logits(&b, &cr.e, &h, logit, xr, nr, s_real, lab_real, NULL, N);
        compare_fx("logits (real)", logit, "gan.logit_real", N);
        /* critic side: weight * L_D into the critic's and the head's parameters */
        params_zero_grad(unet_params(cr.u));
        params_zero_grad(&h.ps);
        float ld = distill_gan_critic(&b, &cr.e, &h, w[0], xf, nf, s_fake, lab_fake, NULL, N, xr, nr, s_real,
                                      lab_real, NULL, N);
        compare_loss("L_D", ld, "gan.loss_d");
        compare_grads(unet_params(cr.u), "gan.grad.critic.");
        compare_grads(&h.ps, "gan.grad.head.");
        /* generator side: dL_G/dx, what goes back to the student */
        for (int64_t i = 0; i < N * D; i++) dx[i] = NAN; /* every element must be written */
        float lg = distill_gan_gen_grad(&b, &cr.e, &h, dx, xf, nf, s_fake, lab_fake, NULL, N);
        compare_loss("L_G", lg, "gan.loss_g");
        compare_fx("dL_G/dx", dx, "gan.dx", N * D);
    }
    free(xf); free(nf); free(xr); free(nr); free(w);
    distill_buf_free(&b);
    gan_head_free(&h);
    net_close(&cr);
}

/* A bottleneck whose channels do not divide into the head's GroupNorm groups (18 channels, 4
 * groups: a UNet with another groups= setting) is an error naming the numbers, not an abort. */
static void test_gan_head_bad_channels(void) {
    GanHead h;
    char err[512] = "";
    CHECK(gan_head_init(&h, 18, 4, 4, 2, be, ctx, err, sizeof err) == -1, "18 channels accepted");
    CHECK(strstr(err, "18 channels") && strstr(err, "4 GroupNorm groups"), "message: %s", err);
    gan_head_free(&h); /* safe after a failed init */
    CHECK(gan_head_init(&h, 16, 4, 4, 2, be, ctx, err, sizeof err) == 0, "16 channels: %s", err);
    gan_head_free(&h);
}

int main(int argc, char **argv) {
    (void)argc;
    check_find_fixtures(argv[0]);
    char err[512];
    have_fx = st_read(&fx, check_fixture("distill_ref.safetensors"), err, sizeof err) == 0;
    if (!have_fx) printf("  cannot read the PyTorch fixture: %s\n", err);
    ctx = backend_ctx_new(be, 1);
    dmd_sigma_table(table, DMD_TABLE_N);
    TEST_RUN(test_dm_generator_grad);
    TEST_RUN(test_fake_score_loss);
    TEST_RUN(test_tsm_loss);
    TEST_RUN(test_gan_head);
    TEST_RUN(test_gan_head_bad_channels);
    printf("  worst |ours - ref| is %.3g of the tolerance\n", worst_seen);
    backend_ctx_destroy(&ctx);
    st_free(&fx);
    return TEST_END();
}
