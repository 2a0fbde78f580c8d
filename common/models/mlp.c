/* mlp.c: the 2-D toy MLP denoiser (see mlp.h, docs/UNET.md section 5). Activations are small
 * ((N, width) per layer), so every intermediate is saved; nothing is recomputed. */
#include "mlp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

struct Mlp {
    MlpConfig cfg;
    const Backend *be;
    BackendCtx *ctx;
    ParamSet ps;
    EdmEmbed embed;
    int fc_w[MLP_MAX_DEPTH], fc_b[MLP_MAX_DEPTH], aff_w[MLP_MAX_DEPTH], aff_b[MLP_MAX_DEPTH], out_w, out_b;
    int64_t cap, last_n;
    float *slab;
    float *z[MLP_MAX_DEPTH], *ss[MLP_MAX_DEPTH], *mo[MLP_MAX_DEPTH], *h[MLP_MAX_DEPTH];
    float *dh[2], *dm, *dz, *dss;
    const float *x_in;
};

static int mlp_parse_int(const char *s, long lo, long hi, int *out) {
    char *end;
    if (!*s) return -1;
    long v = strtol(s, &end, 10);
    if (*end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

int mlp_config_parse(MlpConfig *cfg, const char *spec, char *err, size_t errlen) {
    MlpConfig c = {.in_dim = 2, .width = 128, .depth = 4, .emb = 128, .noise_ch = 32};
    char buf[256];
    if (!spec || strlen(spec) >= sizeof buf) return msd_errf(err, errlen, "MLP config spec missing or too long");
    snprintf(buf, sizeof buf, "%s", spec);
    char *save = NULL;
    char *t = strtok_r(buf, ",", &save);
    if (!t || strcmp(t, "mlp") != 0) return msd_errf(err, errlen, "MLP config spec must start with 'mlp', not '%s'", t ? t : "");
    for (t = strtok_r(NULL, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(t, '=');
        if (!eq) return msd_errf(err, errlen, "MLP config spec: '%s' is not key=value", t);
        *eq = 0;
        const char *k = t, *v = eq + 1;
        int ok;
        if (!strcmp(k, "in")) ok = mlp_parse_int(v, 1, 4096, &c.in_dim);
        else if (!strcmp(k, "width")) ok = mlp_parse_int(v, 1, 65536, &c.width);
        else if (!strcmp(k, "depth")) ok = mlp_parse_int(v, 1, MLP_MAX_DEPTH, &c.depth);
        else if (!strcmp(k, "emb")) ok = mlp_parse_int(v, 1, 65536, &c.emb);
        else if (!strcmp(k, "noise")) ok = mlp_parse_int(v, 2, 65536, &c.noise_ch);
        else if (!strcmp(k, "classes")) ok = mlp_parse_int(v, 0, 100000, &c.label_dim);
        else if (!strcmp(k, "cond")) ok = mlp_parse_int(v, 0, 100000, &c.cond_dim);
        else return msd_errf(err, errlen, "MLP config spec: unknown key '%s' (keys: in width depth emb noise classes cond)", k);
        if (ok != 0) return msd_errf(err, errlen, "MLP config spec: bad value '%s' for '%s'", v, k);
    }
    if (c.noise_ch % 2) return msd_errf(err, errlen, "MLP config spec: noise must be even, not %d", c.noise_ch);
    if (c.label_dim > 0 && c.cond_dim > 0) return msd_errf(err, errlen, "MLP config spec: classes and cond are exclusive");
    *cfg = c;
    return 0;
}

const char *mlp_config_str(const MlpConfig *c, char *buf, size_t len) {
    snprintf(buf, len, "mlp,in=%d,width=%d,depth=%d,emb=%d,noise=%d,classes=%d,cond=%d", c->in_dim, c->width,
             c->depth, c->emb, c->noise_ch, c->label_dim, c->cond_dim);
    return buf;
}

Mlp *mlp_new(const MlpConfig *cfg, const Backend *be, BackendCtx *ctx) {
    MSD_CHECK(cfg && be && cfg->depth >= 1 && cfg->depth <= MLP_MAX_DEPTH);
    Mlp *m = msd_calloc(1, sizeof *m);
    m->cfg = *cfg;
    m->be = be;
    m->ctx = ctx;
    params_init(&m->ps);
    int cdim = cfg->label_dim ? cfg->label_dim : cfg->cond_dim;
    edm_embed_register(&m->embed, &m->ps, cfg->noise_ch, cfg->emb, cdim);
    char n[64];
    int64_t W = cfg->width;
    for (int i = 0; i < cfg->depth; i++) {
        int64_t s[2] = {W, i == 0 ? cfg->in_dim : W};
        snprintf(n, sizeof n, "fc%d.weight", i);
        m->fc_w[i] = params_add(&m->ps, n, 2, s);
        snprintf(n, sizeof n, "fc%d.bias", i);
        m->fc_b[i] = params_add(&m->ps, n, 1, s);
        int64_t a[2] = {2 * W, cfg->emb};
        snprintf(n, sizeof n, "affine%d.weight", i);
        m->aff_w[i] = params_add(&m->ps, n, 2, a);
        snprintf(n, sizeof n, "affine%d.bias", i);
        m->aff_b[i] = params_add(&m->ps, n, 1, a);
    }
    int64_t o[2] = {cfg->in_dim, W};
    m->out_w = params_add(&m->ps, "out.weight", 2, o);
    m->out_b = params_add(&m->ps, "out.bias", 1, o);
    params_alloc(&m->ps, be, ctx);
    return m;
}

void mlp_destroy(Mlp **pm) {
    if (!pm || !*pm) return;
    Mlp *m = *pm;
    if (m->slab) m->be->free(m->ctx, m->slab);
    params_free(&m->ps);
    free(m);
    *pm = NULL;
}

ParamSet *mlp_params(Mlp *m) { return &m->ps; }

void mlp_init(Mlp *m, uint64_t seed) {
    edm_embed_init(&m->embed, &m->ps, seed);
    for (int i = 0; i < m->cfg.depth; i++) {
        edm_param_default(&m->ps, m->fc_w[i], m->fc_b[i], i == 0 ? m->cfg.in_dim : m->cfg.width, seed);
        edm_param_default(&m->ps, m->aff_w[i], m->aff_b[i], m->cfg.emb, seed);
    }
    edm_param_default(&m->ps, m->out_w, m->out_b, m->cfg.width, seed);
}

static void mlp_carve(Mlp *m, EdmArena *a, int64_t cap) {
    int64_t W = m->cfg.width;
    edm_embed_carve(&m->embed, a, cap);
    for (int i = 0; i < m->cfg.depth; i++) {
        m->z[i] = edm_arena_take(a, cap * W);
        m->ss[i] = edm_arena_take(a, cap * 2 * W);
        m->mo[i] = edm_arena_take(a, cap * W);
        m->h[i] = edm_arena_take(a, cap * W);
    }
    m->dh[0] = edm_arena_take(a, cap * W);
    m->dh[1] = edm_arena_take(a, cap * W);
    m->dm = edm_arena_take(a, cap * W);
    m->dz = edm_arena_take(a, cap * W);
    m->dss = edm_arena_take(a, cap * 2 * W);
}

int64_t mlp_alloc_batch(Mlp *m, int64_t N) {
    MSD_CHECK(N > 0);
    if (m->slab) m->be->free(m->ctx, m->slab);
    EdmArena a = {NULL, 0};
    mlp_carve(m, &a, N);
    int64_t total = a.used;
    m->slab = m->be->alloc(m->ctx, total);
    a.base = m->slab;
    a.used = 0;
    mlp_carve(m, &a, N);
    m->cap = N;
    return total * (int64_t)sizeof(float);
}

#define PD(i) params_data(&m->ps, (i))
#define PG(i) params_grad(&m->ps, (i))

void mlp_forward(Mlp *m, float *out, const float *x_in, const float *c_noise, const float *cond, int64_t N) {
    MSD_CHECK(m->slab && N > 0 && N <= m->cap);
    const Backend *be = m->be;
    BackendCtx *ctx = m->ctx;
    int64_t W = m->cfg.width;
    m->x_in = x_in;
    m->last_n = N;
    edm_embed_forward(&m->embed, &m->ps, c_noise, cond, N);
    const float *h = x_in;
    for (int i = 0; i < m->cfg.depth; i++) {
        be->linear_forward(ctx, m->z[i], h, PD(m->fc_w[i]), PD(m->fc_b[i]), N, i == 0 ? m->cfg.in_dim : W, W);
        be->linear_forward(ctx, m->ss[i], m->embed.emb, PD(m->aff_w[i]), PD(m->aff_b[i]), N, m->cfg.emb, 2 * W);
        be->modulate_forward(ctx, m->mo[i], m->z[i], m->ss[i], N, W, 1);
        be->silu_forward(ctx, m->h[i], m->mo[i], N * W);
        h = m->h[i];
    }
    be->linear_forward(ctx, out, h, PD(m->out_w), PD(m->out_b), N, W, m->cfg.in_dim);
}

void mlp_backward(Mlp *m, float *dx, const float *dout, const float *dhidden, int64_t N) {
    MSD_CHECK(m->slab && N == m->last_n);
    const Backend *be = m->be;
    BackendCtx *ctx = m->ctx;
    int64_t W = m->cfg.width;
    int D = m->cfg.depth;
    be->fill(ctx, m->embed.demb, 0.0f, N * m->embed.E);
    float *dh = m->dh[0];
    be->fill(ctx, dh, 0.0f, N * W);
    be->linear_backward(ctx, dh, PG(m->out_w), PG(m->out_b), dout, m->h[D - 1], PD(m->out_w), N, W, m->cfg.in_dim);
    if (dhidden) be->axpy(ctx, dh, 1.0f, dhidden, N * W);
    for (int i = D - 1; i >= 0; i--) {
        be->fill(ctx, m->dm, 0.0f, N * W);
        be->silu_backward(ctx, m->dm, dh, m->mo[i], N * W);
        be->fill(ctx, m->dz, 0.0f, N * W);
        be->fill(ctx, m->dss, 0.0f, N * 2 * W);
        be->modulate_backward(ctx, m->dz, m->dss, m->dm, m->z[i], m->ss[i], N, W, 1);
        be->linear_backward(ctx, m->embed.demb, PG(m->aff_w[i]), PG(m->aff_b[i]), m->dss, m->embed.emb,
                            PD(m->aff_w[i]), N, m->cfg.emb, 2 * W);
        float *dprev = i > 0 ? m->dh[(D - i) % 2] : dx;
        if (i > 0) be->fill(ctx, dprev, 0.0f, N * W);
        be->linear_backward(ctx, dprev, PG(m->fc_w[i]), PG(m->fc_b[i]), m->dz, i > 0 ? m->h[i - 1] : m->x_in,
                            PD(m->fc_w[i]), N, i == 0 ? m->cfg.in_dim : W, W);
        dh = dprev;
    }
    edm_embed_backward(&m->embed, &m->ps, N);
}

static void mlp_net_forward(void *self, float *out, const float *x_in, const float *c_noise, const float *cond,
                            int64_t N, int train) {
    (void)train;
    mlp_forward(self, out, x_in, c_noise, cond, N);
}
static void mlp_net_backward(void *self, float *dx_in, const float *dout, const float *dextra, int64_t N) {
    mlp_backward(self, dx_in, dout, dextra, N);
}
static const float *mlp_net_bottleneck(const void *self) {
    const Mlp *m = self;
    return m->slab ? m->h[m->cfg.depth - 1] : NULL;
}

EdmNet mlp_edm_net(Mlp *m) {
    EdmNet n;
    memset(&n, 0, sizeof n);
    n.self = m;
    n.params = &m->ps;
    n.dim = m->cfg.in_dim;
    n.label_dim = m->cfg.label_dim;
    n.cond_dim = m->cfg.cond_dim;
    n.forward = mlp_net_forward;
    n.backward = mlp_net_backward;
    n.bottleneck = mlp_net_bottleneck;
    n.bottleneck_dim = m->cfg.width;
    return n;
}
