/* optimizer.h: AdamW (PyTorch semantics) with linear learning-rate warm-up, global gradient-norm
 * clipping and an EMA of the weights, over a ParamSet's flat slabs. Every device operation goes
 * through the ParamSet's backend table (ps->be, ps->ctx), so the same code runs on CUDA; the
 * state slabs m, v and ema have the ParamSet slab layout (ps->total floats, same offsets), so a
 * parameter's state is at ps->p[i].offset in each.
 *
 * One step (optim_step):
 *   t = step + 1;  lr_t = lr * min(1, t / warmup_steps)            (warmup_steps 0: lr)
 *   norm = sqrt(sum of grad^2 over the whole grad slab)             (backend sumsq, one pass)
 *   gscale = min(1, grad_clip / (norm + 1e-6)) if grad_clip > 0 else 1  (torch clip_grad_norm_)
 *   adamw_update(p, g, m, v, lr_t, beta1, beta2, eps, weight_decay, t, gscale)  (one pass)
 *   EMA: ema = d * ema + (1 - d) * p, with d = ema_decay, or in the EDM half-life form
 *        h = ema_halflife_images, h = min(h, nimg * ema_rampup_ratio) if the ratio > 0,
 *        d = 0.5 ^ (images_per_step / max(h, 1e-8)), nimg = images seen before this step.
 *   step = t; nimg += images_per_step.
 * A non-finite gradient norm skips the step (nothing changes, step not counted) and is
 * returned so the caller can log it.
 *
 * Weight decay applies to every parameter (one group). Not here: learning-rate schedules other
 * than warm-up, parameter groups, gradient accumulation (the caller sums into ps->grad). */
#ifndef MSD_OPTIM_H
#define MSD_OPTIM_H

#include <stdint.h>

#include "backend.h"
#include "params.h"

typedef struct OptimConfig {
    float lr;                  /* peak learning rate */
    float beta1, beta2, eps;
    float weight_decay;        /* decoupled: p *= 1 - lr_t * weight_decay */
    int64_t warmup_steps;      /* linear warm-up length; 0: none */
    float grad_clip;           /* max global L2 norm of the gradient; 0: no clipping */
    int ema;                   /* 1: keep an EMA of the weights */
    float ema_decay;           /* per-step decay, used when ema_halflife_images == 0 */
    double ema_halflife_images;/* EDM-style half-life in images; > 0 overrides ema_decay */
    double ema_rampup_ratio;   /* EDM ramp-up (e.g. 0.05); 0: none */
    int64_t images_per_step;   /* batch size, for the half-life form */
} OptimConfig;

/* torch.optim.AdamW defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 1e-2;
 * no warm-up, no clipping, no EMA, images_per_step 1. */
void optim_config_default(OptimConfig *c);

typedef struct Optim {
    ParamSet *ps;              /* not owned; must outlive the Optim */
    OptimConfig cfg;
    float *m, *v;              /* ps->total floats each on ps->be, zeroed at creation */
    float *ema;                /* ps->total floats, or NULL when cfg.ema == 0 */
    int64_t step;              /* completed steps */
    double nimg;               /* images seen (cfg.images_per_step per step) */
    float last_lr;             /* lr used by the last step */
    float last_grad_norm;      /* norm before clipping at the last step */
} Optim;

/* A fresh optimiser over an allocated ParamSet (ps->data != NULL, a bug otherwise). The EMA
 * starts as a copy of the current weights: create the optimiser after the model initialised
 * them (or call optim_ema_reset). Dies on out-of-memory; an invalid config (negative lr,
 * betas outside [0, 1), ...) is a bug. */
Optim *optim_new(ParamSet *ps, const OptimConfig *cfg);
/* Frees the state slabs and the Optim, sets *opt to NULL; NULL-safe. */
void optim_destroy(Optim **opt);
/* One update from ps->grad (which it does not zero). Returns the gradient norm before
 * clipping; see the top of this file. */
float optim_step(Optim *opt);
/* Learning rate of step number t (1-based; the next step is opt->step + 1). */
float optim_lr_at(const Optim *opt, int64_t t);
/* ema := current weights. No-op without EMA. */
void optim_ema_reset(Optim *opt);

#endif
