/* sampler.c: see sampler.h. The state x stays in float (what a network consumes); the step
 * coefficients are computed in double. */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>

#include "edm.h"
#include "log.h"
#include "philox.h"

void sampler_config_default(SamplerConfig *c) {
    c->steps = 18;
    c->sigma_min = 0.002;
    c->sigma_max = 80.0;
    c->rho = 7.0;
    c->s_churn = 0.0;
    c->s_min = 0.0;
    c->s_max = INFINITY;
    c->s_noise = 1.0;
}

int sampler_config_check(const SamplerConfig *c, char *err, size_t errlen) {
    if (c->steps < 1 || c->steps > 100000) return msd_errf(err, errlen, "sampler: steps %d outside 1..100000", c->steps);
    if (!(c->sigma_min > 0) || !isfinite(c->sigma_max) || !(c->sigma_max >= c->sigma_min))
        return msd_errf(err, errlen, "sampler: need 0 < sigma_min <= sigma_max < inf (got %g, %g)", c->sigma_min,
                        c->sigma_max);
    if (!(c->rho > 0) || !isfinite(c->rho)) return msd_errf(err, errlen, "sampler: rho %g must be positive", c->rho);
    if (!(c->s_churn >= 0) || !isfinite(c->s_churn))
        return msd_errf(err, errlen, "sampler: S_churn %g must be >= 0", c->s_churn);
    if (!(c->s_noise >= 0) || !isfinite(c->s_noise))
        return msd_errf(err, errlen, "sampler: S_noise %g must be >= 0", c->s_noise);
    if (!(c->s_min >= 0) || !(c->s_max >= c->s_min))
        return msd_errf(err, errlen, "sampler: need 0 <= S_min <= S_max (got %g, %g)", c->s_min, c->s_max);
    return 0;
}

void sampler_sigmas(const SamplerConfig *c, double *s) {
    int N = c->steps;
    double a = pow(c->sigma_max, 1.0 / c->rho), b = pow(c->sigma_min, 1.0 / c->rho);
    for (int i = 0; i < N; i++) s[i] = pow(a + (N > 1 ? (double)i / (N - 1) : 0.0) * (b - a), c->rho);
    s[N] = 0.0;
}

/* n*D normals of (seed, stream): sample j at counter (first + j) * D. */
static void draw_normals(float *out, int64_t n, int64_t D, uint64_t seed, uint64_t stream, uint64_t first) {
    for (int64_t j = 0; j < n; j++)
        rng_normal_fill(out + j * D, D, seed, stream, (first + (uint64_t)j) * (uint64_t)D);
}

int sampler_run(const SamplerConfig *c, SamplerDenoiseFn denoise, void *ctx, float *x, const int32_t *labels,
                int64_t n, int64_t D, uint64_t seed, uint64_t stream, uint64_t first) {
    MSD_CHECK(sampler_config_check(c, NULL, 0) == 0 && denoise && x && n > 0 && D > 0);
    int N = c->steps, nfe = 0;
    int64_t nd = n * D;
    double *sig = msd_malloc(sizeof(double) * (size_t)(N + 1));
    sampler_sigmas(c, sig);
    float *den = msd_malloc(sizeof(float) * (size_t)nd), *d = msd_malloc(sizeof(float) * (size_t)nd);
    float *xn = msd_malloc(sizeof(float) * (size_t)nd), *eps = msd_malloc(sizeof(float) * (size_t)nd);
    float *sv = msd_malloc(sizeof(float) * (size_t)n);
    draw_normals(x, n, D, seed, stream, first);
    for (int64_t k = 0; k < nd; k++) x[k] = (float)(sig[0] * x[k]);
    double gamma_max = fmin(c->s_churn / N, sqrt(2.0) - 1.0);
    for (int i = 0; i < N; i++) {
        double s = sig[i], s_next = sig[i + 1];
        double gamma = (c->s_churn > 0 && s >= c->s_min && s <= c->s_max) ? gamma_max : 0.0;
        double s_hat = s * (1.0 + gamma);
        if (gamma > 0) {
            draw_normals(eps, n, D, seed, stream + 1 + (uint64_t)i, first);
            double amp = sqrt(s_hat * s_hat - s * s) * c->s_noise;
            for (int64_t k = 0; k < nd; k++) x[k] = (float)(x[k] + amp * eps[k]);
        }
        for (int64_t j = 0; j < n; j++) sv[j] = (float)s_hat;
        denoise(ctx, den, x, sv, labels, n);
        nfe++;
        double h = s_next - s_hat;
        for (int64_t k = 0; k < nd; k++) {
            d[k] = (float)((x[k] - (double)den[k]) / s_hat);
            xn[k] = (float)(x[k] + h * d[k]);
        }
        if (s_next > 0) {
            for (int64_t j = 0; j < n; j++) sv[j] = (float)s_next;
            denoise(ctx, den, xn, sv, labels, n);
            nfe++;
            for (int64_t k = 0; k < nd; k++) {
                double d2 = (xn[k] - (double)den[k]) / s_next;
                xn[k] = (float)(x[k] + h * 0.5 * (d[k] + d2));
            }
        }
        for (int64_t k = 0; k < nd; k++) x[k] = xn[k];
    }
    free(sig);
    free(den);
    free(d);
    free(xn);
    free(eps);
    free(sv);
    return nfe;
}

void sampler_edm_init(SamplerEdm *s, Edm *edm) {
    s->edm = edm;
    s->x_dev = edm->be->alloc(edm->ctx, edm->cap * edm->net.dim);
    s->out_dev = edm->be->alloc(edm->ctx, edm->cap * edm->net.dim);
}

void sampler_edm_free(SamplerEdm *s) {
    if (!s || !s->edm) return;
    s->edm->be->free(s->edm->ctx, s->x_dev);
    s->edm->be->free(s->edm->ctx, s->out_dev);
    s->edm = NULL;
    s->x_dev = s->out_dev = NULL;
}

void sampler_edm_denoise(void *ctx, float *out, const float *x, const float *sigma, const int32_t *labels, int64_t N) {
    SamplerEdm *s = ctx;
    Edm *e = s->edm;
    int64_t D = e->net.dim;
    MSD_CHECK(e->net.cond_dim == 0 && (labels != NULL) == (e->net.label_dim > 0));
    for (int64_t b = 0; b < N; b += e->cap) {
        int64_t m = N - b < e->cap ? N - b : e->cap;
        e->be->upload(e->ctx, s->x_dev, x + b * D, m * D);
        edm_forward(e, s->out_dev, s->x_dev, sigma + b, labels ? labels + b : NULL, NULL, m, 0);
        e->be->download(e->ctx, out + b * D, s->out_dev, m * D);
    }
}
