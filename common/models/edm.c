/* edm.c: the EDM preconditioning wrapper, the EDM loss, the shared embedding and the parameter
 * initialisers (see edm.h and docs/UNET.md). Every device operation goes through the backend
 * table; the per-sample coefficients are computed on the host (N numbers) and uploaded. */
#include "edm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "philox.h"

/* Offsets of the coefficient block (6 * cap floats, host and device). */
enum { COEF_SKIP, COEF_OUT, COEF_IN, COEF_NOISE, COEF_SIGMA, COEF_LAMBDA, COEF_N };

void edm_init(Edm *e, EdmNet net, int64_t cap, const Backend *be, BackendCtx *ctx) {
    MSD_CHECK(e && be && cap > 0 && net.dim > 0 && net.forward && net.backward);
    MSD_CHECK(!(net.label_dim > 0 && net.cond_dim > 0));
    memset(e, 0, sizeof *e);
    e->net = net;
    e->be = be;
    e->ctx = ctx;
    e->cap = cap;
    e->sigma_data = EDM_SIGMA_DATA;
    float *coef = be->alloc(ctx, COEF_N * cap);
    e->c_skip = coef + COEF_SKIP * cap;
    e->c_out = coef + COEF_OUT * cap;
    e->c_in = coef + COEF_IN * cap;
    e->c_noise = coef + COEF_NOISE * cap;
    e->sig = coef + COEF_SIGMA * cap;
    e->lambda = coef + COEF_LAMBDA * cap;
    if (net.label_dim > 0) e->cond = be->alloc(ctx, cap * net.label_dim);
    int64_t nd = cap * net.dim;
    e->xin = be->alloc(ctx, nd);
    e->fout = be->alloc(ctx, nd);
    e->work = be->alloc(ctx, nd);
    e->dfin = be->alloc(ctx, nd);
    e->x_noisy = be->alloc(ctx, nd);
    e->noise = be->alloc(ctx, nd);
    e->pred = be->alloc(ctx, nd);
    e->h_buf = msd_calloc((size_t)(COEF_N * cap + cap * (net.label_dim > 0 ? net.label_dim : 0)), sizeof(float));
}

void edm_free(Edm *e) {
    if (!e || !e->be) return;
    const Backend *be = e->be;
    float *bufs[] = {e->c_skip, e->cond, e->xin, e->fout, e->work, e->dfin, e->x_noisy, e->noise, e->pred};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) be->free(e->ctx, bufs[i]);
    free(e->h_buf);
    memset(e, 0, sizeof *e);
}

/* Host coefficients for sigma[0..N), uploaded in one call. */
static void edm_set_sigma(Edm *e, const float *sigma, int64_t N) {
    float *h = e->h_buf;
    int64_t cap = e->cap;
    double sd = e->sigma_data;
    for (int64_t n = 0; n < N; n++) {
        double s = sigma[n];
        MSD_CHECK(isfinite(s) && s > 0);
        double r = s * s + sd * sd;
        h[COEF_SKIP * cap + n] = (float)(sd * sd / r);
        h[COEF_OUT * cap + n] = (float)(s * sd / sqrt(r));
        h[COEF_IN * cap + n] = (float)(1.0 / sqrt(r));
        h[COEF_NOISE * cap + n] = (float)(log(s) / 4.0);
        h[COEF_SIGMA * cap + n] = (float)s;
        h[COEF_LAMBDA * cap + n] = (float)(r / (s * sd * s * sd));
    }
    e->be->upload(e->ctx, e->c_skip, h, COEF_N * cap);
}

void edm_forward(Edm *e, float *out, const float *x, const float *sigma, const int32_t *labels,
                 const float *cond, int64_t N, int train) {
    MSD_CHECK(N > 0 && N <= e->cap);
    const Backend *be = e->be;
    BackendCtx *ctx = e->ctx;
    int64_t D = e->net.dim;
    edm_set_sigma(e, sigma, N);
    e->cond_used = NULL;
    if (e->net.label_dim > 0) {
        MSD_CHECK(labels != NULL);
        int64_t V = e->net.label_dim;
        float *h = e->h_buf + COEF_N * e->cap;
        memset(h, 0, (size_t)(N * V) * sizeof(float));
        for (int64_t n = 0; n < N; n++) {
            MSD_CHECK(labels[n] >= 0 && labels[n] < V);
            h[n * V + labels[n]] = 1.0f;
        }
        be->upload(ctx, e->cond, h, N * V);
        e->cond_used = e->cond;
    } else if (e->net.cond_dim > 0) {
        MSD_CHECK(cond != NULL);
        e->cond_used = cond;
    }
    be->scale_rows(ctx, e->xin, x, e->c_in, NULL, NULL, N, D);
    e->net.forward(e->net.self, e->fout, e->xin, e->c_noise, e->cond_used, N, train);
    be->scale_rows(ctx, out, x, e->c_skip, e->fout, e->c_out, N, D);
}

void edm_backward(Edm *e, float *dx, const float *dout, const float *dbottleneck, int64_t N) {
    MSD_CHECK(N > 0 && N <= e->cap);
    const Backend *be = e->be;
    BackendCtx *ctx = e->ctx;
    int64_t D = e->net.dim;
    be->scale_rows(ctx, e->work, dout, e->c_out, NULL, NULL, N, D);   /* dF = c_out dD */
    if (dx) be->fill(ctx, e->dfin, 0.0f, N * D);
    e->net.backward(e->net.self, dx ? e->dfin : NULL, e->work, dbottleneck, N);
    if (dx) {
        be->scale_rows(ctx, e->work, dout, e->c_skip, e->dfin, e->c_in, N, D);
        be->axpy(ctx, dx, 1.0f, e->work, N * D);
    }
}

float edm_loss_given(Edm *e, const float *x0, const float *noise, const float *sigma, const int32_t *labels,
                     const float *cond, int64_t N, int train) {
    MSD_CHECK(N > 0 && N <= e->cap);
    const Backend *be = e->be;
    BackendCtx *ctx = e->ctx;
    int64_t D = e->net.dim;
    /* x_noisy = x0 + sigma * noise (the sigmas go up with the coefficients) */
    edm_set_sigma(e, sigma, N);
    be->copy(ctx, e->x_noisy, x0, N * D);
    be->scale_rows(ctx, e->work, noise, e->sig, NULL, NULL, N, D);
    be->axpy(ctx, e->x_noisy, 1.0f, e->work, N * D);
    edm_forward(e, e->pred, e->x_noisy, sigma, labels, cond, N, train);
    e->loss_x0 = x0;
    return be->wmse_forward(ctx, e->pred, x0, e->lambda, N, D);
}

float edm_loss_step(Edm *e, const float *x0, const int32_t *labels, const float *cond, int64_t N, uint64_t seed,
                    int64_t step, int train) {
    MSD_CHECK(N > 0 && N <= e->cap && step >= 0);
    int64_t D = e->net.dim;
    float tmp[256];
    float *s = N <= 256 ? tmp : msd_malloc((size_t)N * sizeof(float));
    for (int64_t n = 0; n < N; n++)
        s[n] = expf(EDM_P_MEAN + EDM_P_STD * rng_normal1(seed, EDM_STREAM_SIGMA, (uint64_t)(step * N + n)));
    e->be->rng_normal(e->ctx, e->noise, N * D, seed, EDM_STREAM_NOISE, (uint64_t)(step * N * D));
    float loss = edm_loss_given(e, x0, e->noise, s, labels, cond, N, train);
    if (s != tmp) free(s);
    return loss;
}

void edm_loss_backward(Edm *e, int64_t N) {
    MSD_CHECK(e->loss_x0 != NULL && N > 0 && N <= e->cap);
    const Backend *be = e->be;
    int64_t D = e->net.dim;
    /* x_noisy is not needed by the backward (only the coefficients are): reuse it for dD */
    float *dpred = e->x_noisy;
    be->fill(e->ctx, dpred, 0.0f, N * D);
    be->wmse_backward(e->ctx, dpred, 1.0f, e->pred, e->loss_x0, e->lambda, N, D);
    edm_backward(e, NULL, dpred, NULL, N);
}

/* ---- embedding ---- */

void edm_embed_register(EdmEmbed *m, ParamSet *ps, int64_t noise_ch, int64_t E, int64_t cdim) {
    MSD_CHECK(noise_ch > 0 && noise_ch % 2 == 0 && E > 0 && cdim >= 0);
    memset(m, 0, sizeof *m);
    m->noise_ch = noise_ch;
    m->E = E;
    m->cdim = cdim;
    int64_t s[2];
    s[0] = E; s[1] = noise_ch;
    m->map0_w = params_add(ps, "map_layer0.weight", 2, s);
    m->map0_b = params_add(ps, "map_layer0.bias", 1, s);
    s[1] = E;
    m->map1_w = params_add(ps, "map_layer1.weight", 2, s);
    m->map1_b = params_add(ps, "map_layer1.bias", 1, s);
    m->label_w = -1;
    if (cdim > 0) {
        s[1] = cdim;
        m->label_w = params_add(ps, "map_label.weight", 2, s);
    }
}

void edm_embed_carve(EdmEmbed *m, EdmArena *a, int64_t cap) {
    m->t = edm_arena_take(a, cap * m->noise_ch);
    float **bufs[] = {&m->e0, &m->e0a, &m->e1, &m->emb, &m->demb, &m->w1, &m->w2};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) *bufs[i] = edm_arena_take(a, cap * m->E);
}

void edm_embed_forward(EdmEmbed *m, const ParamSet *ps, const float *c_noise, const float *cond, int64_t N) {
    const Backend *be = ps->be;
    BackendCtx *ctx = ps->ctx;
    int64_t E = m->E;
    m->cond = cond;
    be->sinusoidal_forward(ctx, m->t, c_noise, N, m->noise_ch);
    be->linear_forward(ctx, m->e0, m->t, params_data(ps, m->map0_w), params_data(ps, m->map0_b), N, m->noise_ch, E);
    be->silu_forward(ctx, m->e0a, m->e0, N * E);
    if (m->label_w >= 0) {
        MSD_CHECK(cond != NULL);
        be->linear_forward(ctx, m->w2, m->e0a, params_data(ps, m->map1_w), params_data(ps, m->map1_b), N, E, E);
        be->linear_forward(ctx, m->w1, cond, params_data(ps, m->label_w), NULL, N, m->cdim, E);
        be->add(ctx, m->e1, m->w2, m->w1, N * E);
    } else {
        be->linear_forward(ctx, m->e1, m->e0a, params_data(ps, m->map1_w), params_data(ps, m->map1_b), N, E, E);
    }
    be->silu_forward(ctx, m->emb, m->e1, N * E);
}

void edm_embed_backward(EdmEmbed *m, const ParamSet *ps, int64_t N) {
    const Backend *be = ps->be;
    BackendCtx *ctx = ps->ctx;
    int64_t E = m->E;
    be->fill(ctx, m->w1, 0.0f, N * E);
    be->silu_backward(ctx, m->w1, m->demb, m->e1, N * E);                /* w1 = de1 */
    if (m->label_w >= 0)
        be->linear_backward(ctx, NULL, params_grad(ps, m->label_w), NULL, m->w1, m->cond,
                            params_data(ps, m->label_w), N, m->cdim, E);
    be->fill(ctx, m->w2, 0.0f, N * E);
    be->linear_backward(ctx, m->w2, params_grad(ps, m->map1_w), params_grad(ps, m->map1_b), m->w1, m->e0a,
                        params_data(ps, m->map1_w), N, E, E);            /* w2 = de0a */
    be->fill(ctx, m->w1, 0.0f, N * E);
    be->silu_backward(ctx, m->w1, m->w2, m->e0, N * E);                  /* w1 = de0 */
    be->linear_backward(ctx, NULL, params_grad(ps, m->map0_w), params_grad(ps, m->map0_b), m->w1, m->t,
                        params_data(ps, m->map0_w), N, m->noise_ch, E);
}

void edm_embed_init(EdmEmbed *m, ParamSet *ps, uint64_t seed) {
    edm_param_default(ps, m->map0_w, m->map0_b, m->noise_ch, seed);
    edm_param_default(ps, m->map1_w, m->map1_b, m->E, seed);
    if (m->label_w >= 0) edm_param_normal(ps, m->label_w, 1.0f, seed);
}

/* ---- initialisers ---- */

static void edm_param_upload(ParamSet *ps, int i, const float *h) {
    ps->be->upload(ps->ctx, params_data(ps, i), h, ps->p[i].numel);
}

void edm_param_uniform(ParamSet *ps, int i, float bound, uint64_t seed) {
    MSD_CHECK(i >= 0 && i < ps->n && ps->data);
    int64_t n = ps->p[i].numel;
    float *h = msd_malloc((size_t)(n ? n : 1) * sizeof(float));
    rng_uniform_fill(h, n, seed, (uint64_t)i, 0);
    for (int64_t j = 0; j < n; j++) h[j] = (2.0f * h[j] - 1.0f) * bound;
    edm_param_upload(ps, i, h);
    free(h);
}

void edm_param_normal(ParamSet *ps, int i, float std, uint64_t seed) {
    MSD_CHECK(i >= 0 && i < ps->n && ps->data);
    int64_t n = ps->p[i].numel;
    float *h = msd_malloc((size_t)(n ? n : 1) * sizeof(float));
    rng_normal_fill(h, n, seed, (uint64_t)i, 0);
    for (int64_t j = 0; j < n; j++) h[j] *= std;
    edm_param_upload(ps, i, h);
    free(h);
}

void edm_param_fill(ParamSet *ps, int i, float value) {
    MSD_CHECK(i >= 0 && i < ps->n && ps->data);
    ps->be->fill(ps->ctx, params_data(ps, i), value, ps->p[i].numel);
}

void edm_param_default(ParamSet *ps, int w, int b, int64_t fan_in, uint64_t seed) {
    float bound = 1.0f / sqrtf((float)fan_in);
    edm_param_uniform(ps, w, bound, seed);
    if (b >= 0) edm_param_uniform(ps, b, bound, seed);
}
