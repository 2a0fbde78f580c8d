/* distill.c: see distill.h. Formulas: docs/ALGORITHMS.md sections 2.3, 2.4, 2.7, 2.10, 3.3. */
#include "distill.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dmd.h"
#include "log.h"

/* ---- buffers ---- */

void distill_buf_init(DistillBuf *b, const Backend *be, BackendCtx *ctx, int64_t cap, int64_t dim) {
    MSD_CHECK(b && be && cap > 0 && dim > 0);
    memset(b, 0, sizeof *b);
    b->be = be;
    b->ctx = ctx;
    b->cap = cap;
    b->dim = dim;
    b->a = be->alloc(ctx, cap * dim);
    b->b = be->alloc(ctx, cap * dim);
    b->c = be->alloc(ctx, cap * dim);
    b->sig = be->alloc(ctx, cap);
    b->w = be->alloc(ctx, cap);
    b->h = msd_calloc((size_t)(4 * cap * dim + 2 * cap), sizeof(float));
}

void distill_buf_free(DistillBuf *b) {
    if (!b || !b->be) return;
    float *bufs[] = {b->a, b->b, b->c, b->sig, b->w};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) b->be->free(b->ctx, bufs[i]);
    free(b->h);
    memset(b, 0, sizeof *b);
}

/* host scratch regions */
static float *h_rows(DistillBuf *b, int k) { return b->h + (int64_t)k * b->cap * b->dim; }   /* k < 4 */
static float *h_vec(DistillBuf *b, int k) { return b->h + 4 * b->cap * b->dim + (int64_t)k * b->cap; } /* k < 2 */

void distill_add_noise(DistillBuf *b, float *out, const float *x, const float *noise, const float *sigma, int64_t N) {
    MSD_CHECK(N > 0 && N <= b->cap && out != b->c);
    b->be->upload(b->ctx, b->sig, sigma, N);
    b->be->scale_rows(b->ctx, b->c, noise, b->sig, NULL, NULL, N, b->dim);
    b->be->add(b->ctx, out, x, b->c, N * b->dim);
}

/* ---- generator ---- */

void distill_generate(DistillBuf *b, Edm *g, float *x, const float *z, const int32_t *labels, const float *cond,
                      int64_t N, int train) {
    MSD_CHECK(N > 0 && N <= b->cap && g->net.dim == b->dim && x != b->a);
    float *s = h_vec(b, 0);
    for (int64_t n = 0; n < N; n++) s[n] = DMD_SIGMA_GEN;
    b->be->scale(b->ctx, b->a, z, DMD_SIGMA_GEN, N * b->dim);
    edm_forward(g, x, b->a, s, labels, cond, N, train);
}

double distill_dm_backward(DistillBuf *b, Edm *g, const float *x, const float *d_real, const float *d_fake,
                           const float *dx_gan, float gan_weight, int64_t N) {
    MSD_CHECK(N > 0 && N <= b->cap && g->net.dim == b->dim);
    int64_t D = b->dim;
    float *hx = h_rows(b, 0), *hr = h_rows(b, 1), *hf = h_rows(b, 2), *hdx = h_rows(b, 3);
    b->be->download(b->ctx, hx, x, N * D);
    b->be->download(b->ctx, hr, d_real, N * D);
    b->be->download(b->ctx, hf, d_fake, N * D);
    double loss = dmd_generator_grad(hdx, hx, hr, hf, N, D);
    b->be->upload(b->ctx, b->a, hdx, N * D);
    if (dx_gan) b->be->axpy(b->ctx, b->a, gan_weight, dx_gan, N * D);
    edm_backward(g, NULL, b->a, NULL, N);
    return loss;
}

/* ---- fake score ---- */

float distill_fake_loss(Edm *critic, const float *x, const float *noise, const float *sigma, const int32_t *labels,
                        const float *cond, int64_t N) {
    float loss = edm_loss_given(critic, x, noise, sigma, labels, cond, N, 1);
    edm_loss_backward(critic, N);
    return loss;
}

/* ---- TSM ---- */

float distill_tsm_loss(DistillBuf *b, Edm *phi, const float *x_t, const float *d_teacher, const float *sigma,
                       const int32_t *labels, const float *cond, int64_t N) {
    MSD_CHECK(N > 0 && N <= b->cap && phi->net.dim == b->dim);
    MSD_CHECK(x_t != b->a && d_teacher != b->a && d_teacher != b->b);
    const Backend *be = b->be;
    int64_t D = b->dim;
    edm_forward(phi, b->a, x_t, sigma, labels, cond, N, 1);
    /* phi->lambda: the EDM weight (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 of this forward */
    float loss = be->wmse_forward(b->ctx, b->a, d_teacher, phi->lambda, N, D);
    be->fill(b->ctx, b->b, 0.0f, N * D);
    be->wmse_backward(b->ctx, b->b, 1.0f, b->a, d_teacher, phi->lambda, N, D);
    edm_backward(phi, NULL, b->b, NULL, N);
    return loss;
}

/* ---- GAN head ---- */

int gan_head_init(GanHead *h, int64_t C, int64_t H, int64_t W, int64_t cap, const Backend *be, BackendCtx *ctx,
                  char *err, size_t errlen) {
    MSD_CHECK(h && be && C > 0 && H > 0 && W > 0 && cap > 0);
    memset(h, 0, sizeof *h);
    int64_t G = C / 4 < 32 ? C / 4 : 32;
    if (G < 1) G = 1;
    if (C % G)
        return msd_errf(err, errlen, "GAN head: the bottleneck's %lld channels do not divide into %lld GroupNorm groups",
                        (long long)C, (long long)G);
    h->be = be;
    h->ctx = ctx;
    h->C = C; h->H = H; h->W = W; h->cap = cap;
    h->G = G;
    ParamSet *ps = &h->ps;
    params_init(ps);
    int64_t sc[1] = {C}, sw[4] = {C, C, 3, 3}, so[2] = {1, C * H * W}, s1[1] = {1};
    h->n0w = params_add(ps, "norm0.weight", 1, sc);
    h->n0b = params_add(ps, "norm0.bias", 1, sc);
    h->cw = params_add(ps, "conv.weight", 4, sw);
    h->cb = params_add(ps, "conv.bias", 1, sc);
    h->n1w = params_add(ps, "norm1.weight", 1, sc);
    h->n1b = params_add(ps, "norm1.bias", 1, sc);
    h->ow = params_add(ps, "out.weight", 2, so);
    h->ob = params_add(ps, "out.bias", 1, s1);
    params_alloc(ps, be, ctx);
    int64_t m = cap * C * H * W, st = cap * G;
    h->slab = be->alloc(ctx, 8 * m + 4 * st + 2 * cap);
    float *p = h->slab;
    float **maps[] = {&h->y0, &h->a0, &h->y1, &h->z1, &h->a1, &h->g0, &h->g1, &h->dfeat};
    for (size_t i = 0; i < sizeof maps / sizeof maps[0]; i++, p += m) *maps[i] = p;
    float **stats[] = {&h->m0, &h->r0, &h->m1, &h->r1};
    for (size_t i = 0; i < sizeof stats / sizeof stats[0]; i++, p += st) *stats[i] = p;
    h->logit = p;
    h->dlogit = p + cap;
    return 0;
}

void gan_head_free(GanHead *h) {
    if (!h || !h->be) return;
    h->be->free(h->ctx, h->slab);
    params_free(&h->ps);
    memset(h, 0, sizeof *h);
}

void gan_head_init_weights(GanHead *h, uint64_t seed) {
    ParamSet *ps = &h->ps;
    edm_param_fill(ps, h->n0w, 1.0f);
    edm_param_fill(ps, h->n0b, 0.0f);
    edm_param_fill(ps, h->n1w, 1.0f);
    edm_param_fill(ps, h->n1b, 0.0f);
    edm_param_default(ps, h->cw, h->cb, h->C * 9, seed);
    edm_param_default(ps, h->ow, h->ob, h->C * h->H * h->W, seed);
}

static ConvShape head_conv(const GanHead *h, int64_t N) {
    ConvShape s = {.N = N, .C = h->C, .H = h->H, .W = h->W, .O = h->C, .K = 3, .stride = 1, .pad = 1};
    return s;
}

void gan_head_forward(GanHead *h, float *logit, const float *feat, int64_t N) {
    MSD_CHECK(N > 0 && N <= h->cap);
    const Backend *be = h->be;
    BackendCtx *ctx = h->ctx;
    const ParamSet *ps = &h->ps;
    int64_t C = h->C, HW = h->H * h->W, n = N * C * HW;
    h->in = feat;
    be->groupnorm_forward(ctx, h->y0, h->m0, h->r0, feat, params_data(ps, h->n0w), params_data(ps, h->n0b), N, C, HW,
                          h->G, 1e-5f);
    be->silu_forward(ctx, h->a0, h->y0, n);
    ConvShape s = head_conv(h, N);
    be->conv2d_forward(ctx, h->y1, h->a0, params_data(ps, h->cw), params_data(ps, h->cb), &s);
    be->groupnorm_forward(ctx, h->z1, h->m1, h->r1, h->y1, params_data(ps, h->n1w), params_data(ps, h->n1b), N, C,
                          HW, h->G, 1e-5f);
    be->silu_forward(ctx, h->a1, h->z1, n);
    be->linear_forward(ctx, logit, h->a1, params_data(ps, h->ow), params_data(ps, h->ob), N, C * HW, 1);
}

void gan_head_backward(GanHead *h, float *dfeat, const float *dlogit, int64_t N) {
    MSD_CHECK(N > 0 && N <= h->cap && h->in != NULL);
    const Backend *be = h->be;
    BackendCtx *ctx = h->ctx;
    const ParamSet *ps = &h->ps;
    int64_t C = h->C, HW = h->H * h->W, n = N * C * HW;
    be->fill(ctx, h->g0, 0.0f, n);   /* g0 = d a1 */
    be->linear_backward(ctx, h->g0, params_grad(ps, h->ow), params_grad(ps, h->ob), dlogit, h->a1,
                        params_data(ps, h->ow), N, C * HW, 1);
    be->fill(ctx, h->g1, 0.0f, n);   /* g1 = d z1 */
    be->silu_backward(ctx, h->g1, h->g0, h->z1, n);
    be->fill(ctx, h->g0, 0.0f, n);   /* g0 = d y1 */
    be->groupnorm_backward(ctx, h->g0, params_grad(ps, h->n1w), params_grad(ps, h->n1b), h->g1, h->y1, h->m1, h->r1,
                           params_data(ps, h->n1w), N, C, HW, h->G);
    be->fill(ctx, h->g1, 0.0f, n);   /* g1 = d a0 */
    ConvShape s = head_conv(h, N);
    be->conv2d_backward(ctx, h->g1, params_grad(ps, h->cw), params_grad(ps, h->cb), h->g0, h->a0,
                        params_data(ps, h->cw), &s);
    be->fill(ctx, h->g0, 0.0f, n);   /* g0 = d y0 */
    be->silu_backward(ctx, h->g0, h->g1, h->y0, n);
    be->groupnorm_backward(ctx, dfeat, params_grad(ps, h->n0w), params_grad(ps, h->n0b), h->g0, h->in, h->m0, h->r0,
                           params_data(ps, h->n0w), N, C, HW, h->G);
}

/* ---- the GAN losses ---- */

static double softplus_d(double u) { return u > 0 ? u + log1p(exp(-u)) : log1p(exp(u)); }
static double sigmoid_d(double u) { return u >= 0 ? 1.0 / (1.0 + exp(-u)) : exp(u) / (1.0 + exp(u)); }

void distill_gan_logits(DistillBuf *b, Edm *critic, GanHead *h, float *logit_host, const float *x,
                        const float *noise, const float *sigma, const int32_t *labels, const float *cond, int64_t N) {
    MSD_CHECK(N > 0 && N <= b->cap && N <= h->cap && critic->net.dim == b->dim && critic->net.bottleneck);
    MSD_CHECK(critic->net.bottleneck_dim == h->C * h->H * h->W);
    distill_add_noise(b, b->b, x, noise, sigma, N);
    edm_forward(critic, b->a, b->b, sigma, labels, cond, N, 1);
    gan_head_forward(h, h->logit, critic->net.bottleneck(critic->net.self), N);
    if (logit_host) b->be->download(b->ctx, logit_host, h->logit, N);
}

/* Backward of the last distill_gan_logits with dL/dlogit (host, N): through the head into the
 * critic's bottleneck and on through the critic (its output gradient is zero); dx (may be NULL)
 * receives dL/dx_t. */
static void gan_backward(DistillBuf *b, Edm *critic, GanHead *h, float *dx, const float *dlogit_host, int64_t N) {
    const Backend *be = b->be;
    be->upload(b->ctx, h->dlogit, dlogit_host, N);
    be->fill(b->ctx, h->dfeat, 0.0f, N * h->C * h->H * h->W);
    gan_head_backward(h, h->dfeat, h->dlogit, N);
    be->fill(b->ctx, b->a, 0.0f, N * b->dim);
    edm_backward(critic, dx, b->a, h->dfeat, N);
}

float distill_gan_critic(DistillBuf *b, Edm *critic, GanHead *h, float weight, const float *x_fake,
                         const float *noise_fake, const float *sigma_fake, const int32_t *labels_fake,
                         const float *cond_fake, int64_t n_fake, const float *x_real, const float *noise_real,
                         const float *sigma_real, const int32_t *labels_real, const float *cond_real,
                         int64_t n_real) {
    float *f = h_vec(b, 0), *df = h_vec(b, 1);
    double loss = 0;
    /* fake: softplus(f), d/df = sigmoid(f) */
    distill_gan_logits(b, critic, h, f, x_fake, noise_fake, sigma_fake, labels_fake, cond_fake, n_fake);
    h->mean_fake = 0;
    for (int64_t n = 0; n < n_fake; n++) {
        h->mean_fake += f[n] / (double)n_fake;
        loss += softplus_d(f[n]) / (double)n_fake;
        df[n] = (float)(weight * sigmoid_d(f[n]) / (double)n_fake);
    }
    gan_backward(b, critic, h, NULL, df, n_fake);
    /* real: softplus(-f), d/df = -sigmoid(-f) */
    distill_gan_logits(b, critic, h, f, x_real, noise_real, sigma_real, labels_real, cond_real, n_real);
    h->mean_real = 0;
    for (int64_t n = 0; n < n_real; n++) {
        h->mean_real += f[n] / (double)n_real;
        loss += softplus_d(-(double)f[n]) / (double)n_real;
        df[n] = (float)(-weight * sigmoid_d(-(double)f[n]) / (double)n_real);
    }
    gan_backward(b, critic, h, NULL, df, n_real);
    return (float)loss;
}

float distill_gan_gen_grad(DistillBuf *b, Edm *critic, GanHead *h, float *dx, const float *x, const float *noise,
                           const float *sigma, const int32_t *labels, const float *cond, int64_t N) {
    float *f = h_vec(b, 0), *df = h_vec(b, 1);
    double loss = 0;
    distill_gan_logits(b, critic, h, f, x, noise, sigma, labels, cond, N);
    for (int64_t n = 0; n < N; n++) {
        loss += softplus_d(-(double)f[n]) / (double)N;
        df[n] = (float)(-sigmoid_d(-(double)f[n]) / (double)N);
    }
    b->be->fill(b->ctx, dx, 0.0f, N * b->dim);
    gan_backward(b, critic, h, dx, df, N);
    return (float)loss;
}
