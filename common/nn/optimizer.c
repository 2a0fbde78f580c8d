/* optimizer.c: AdamW + warm-up + clipping + EMA through the backend table; see optimizer.h. */
#include "optimizer.h"

#include <math.h>
#include <stdlib.h>

#include "log.h"

void optim_config_default(OptimConfig *c) {
    c->lr = 1e-3f;
    c->beta1 = 0.9f;
    c->beta2 = 0.999f;
    c->eps = 1e-8f;
    c->weight_decay = 1e-2f;
    c->warmup_steps = 0;
    c->grad_clip = 0.0f;
    c->ema = 0;
    c->ema_decay = 0.999f;
    c->ema_halflife_images = 0.0;
    c->ema_rampup_ratio = 0.0;
    c->images_per_step = 1;
}

Optim *optim_new(ParamSet *ps, const OptimConfig *cfg) {
    MSD_CHECK(ps && ps->data && ps->grad && ps->be);
    MSD_CHECK(cfg->lr >= 0 && cfg->eps >= 0 && cfg->weight_decay >= 0 && cfg->grad_clip >= 0);
    MSD_CHECK(cfg->beta1 >= 0 && cfg->beta1 < 1 && cfg->beta2 >= 0 && cfg->beta2 < 1);
    MSD_CHECK(cfg->warmup_steps >= 0 && cfg->images_per_step >= 1);
    MSD_CHECK(cfg->ema_decay >= 0 && cfg->ema_decay <= 1);
    MSD_CHECK(cfg->ema_halflife_images >= 0 && cfg->ema_rampup_ratio >= 0);
    const Backend *be = ps->be;
    MSD_CHECK(be->alloc && be->free && be->copy && be->sumsq && be->adamw_update);
    MSD_CHECK(!cfg->ema || be->ema_update);
    Optim *o = msd_calloc(1, sizeof *o);
    o->ps = ps;
    o->cfg = *cfg;
    o->m = be->alloc(ps->ctx, ps->total);
    o->v = be->alloc(ps->ctx, ps->total);
    if (cfg->ema) {
        o->ema = be->alloc(ps->ctx, ps->total);
        be->copy(ps->ctx, o->ema, ps->data, ps->total);
    }
    return o;
}

void optim_destroy(Optim **opt) {
    if (!opt || !*opt) return;
    Optim *o = *opt;
    const Backend *be = o->ps->be;
    be->free(o->ps->ctx, o->m);
    be->free(o->ps->ctx, o->v);
    if (o->ema) be->free(o->ps->ctx, o->ema);
    free(o);
    *opt = NULL;
}

float optim_lr_at(const Optim *opt, int64_t t) {
    const OptimConfig *c = &opt->cfg;
    if (c->warmup_steps <= 0 || t >= c->warmup_steps) return c->lr;
    if (t <= 0) return 0.0f;
    return (float)((double)c->lr * (double)t / (double)c->warmup_steps);
}

void optim_ema_reset(Optim *opt) {
    if (opt->ema) opt->ps->be->copy(opt->ps->ctx, opt->ema, opt->ps->data, opt->ps->total);
}

/* EMA decay for the step that starts with nimg images seen. */
static float ema_decay_now(const OptimConfig *c, double nimg) {
    if (c->ema_halflife_images <= 0) return c->ema_decay;
    double h = c->ema_halflife_images;
    if (c->ema_rampup_ratio > 0) h = fmin(h, nimg * c->ema_rampup_ratio);
    return (float)pow(0.5, (double)c->images_per_step / fmax(h, 1e-8));
}

float optim_step(Optim *opt) {
    ParamSet *ps = opt->ps;
    const Backend *be = ps->be;
    const OptimConfig *c = &opt->cfg;
    double norm = sqrt(be->sumsq(ps->ctx, ps->grad, ps->total));
    opt->last_grad_norm = (float)norm;
    if (!isfinite(norm)) return (float)norm;
    int64_t t = opt->step + 1;
    float lr = optim_lr_at(opt, t);
    float gscale = 1.0f;
    if (c->grad_clip > 0) {
        double coef = (double)c->grad_clip / (norm + 1e-6);
        if (coef < 1.0) gscale = (float)coef;
    }
    be->adamw_update(ps->ctx, ps->data, ps->grad, opt->m, opt->v, ps->total, lr, c->beta1, c->beta2, c->eps,
                     c->weight_decay, t, gscale);
    if (opt->ema) be->ema_update(ps->ctx, opt->ema, ps->data, ps->total, ema_decay_now(c, opt->nimg));
    opt->step = t;
    opt->nimg += (double)c->images_per_step;
    opt->last_lr = lr;
    return (float)norm;
}
