/* test_optim.c: AdamW, warm-up, clipping and EMA (common/nn/optimizer.c) against PyTorch numbers in
 * tests/optim_ref.h (regenerate: /usr/bin/python3 tests/optim_ref.py > tests/optim_ref.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "optimizer.h"
#include "cpu_ops.h"
#include "optim_ref.h"
#include "params.h"

#define NTOT (REF_N0 + REF_N1)
#define ATOL 1e-7
#define RTOL 1e-6

static BackendCtx *g_ctx;

/* Two parameters (3,) and (5,), so the slab has padding between them. */
static void make_params(ParamSet *ps, const float *p0) {
    params_init(ps);
    int64_t s0[1] = {REF_N0}, s1[1] = {REF_N1};
    params_add(ps, "a.weight", 1, s0);
    params_add(ps, "b.bias", 1, s1);
    params_alloc(ps, &backend_cpu, g_ctx);
    memcpy(params_data(ps, 0), p0, REF_N0 * sizeof(float));
    memcpy(params_data(ps, 1), p0 + REF_N0, REF_N1 * sizeof(float));
}
static void set_grad(ParamSet *ps, const float *g) {
    memcpy(params_grad(ps, 0), g, REF_N0 * sizeof(float));
    memcpy(params_grad(ps, 1), g + REF_N0, REF_N1 * sizeof(float));
}
static void get_flat(const ParamSet *ps, const float *slab, float *out) {
    memcpy(out, slab + ps->p[0].offset, REF_N0 * sizeof(float));
    memcpy(out + REF_N0, slab + ps->p[1].offset, REF_N1 * sizeof(float));
}

static void test_adamw_slot_matches_torch(void) {
    float p[NTOT], m[NTOT] = {0}, v[NTOT] = {0};
    memcpy(p, refA_p0, sizeof p);
    for (int t = 1; t <= REF_T; t++) {
        cpu_adamw_update(NULL, p, refA_g + (t - 1) * NTOT, m, v, NTOT, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, t, 1.0f);
        char what[32];
        snprintf(what, sizeof what, "step %d", t);
        CHECK_CLOSE(p, refA_p + (t - 1) * NTOT, NTOT, ATOL, RTOL, what);
    }
}

static void test_optim_matches_torch_adamw(void) {
    ParamSet ps;
    make_params(&ps, refA_p0);
    OptimConfig c;
    optim_config_default(&c);
    c.lr = 1e-2f;
    c.weight_decay = 0.1f;
    Optim *o = optim_new(&ps, &c);
    for (int t = 1; t <= REF_T; t++) {
        set_grad(&ps, refA_g + (t - 1) * NTOT);
        float norm = optim_step(o);
        CHECK(fabsf(norm - refA_norm[t - 1]) <= 1e-6f * refA_norm[t - 1], "step %d: norm %.9g want %.9g", t,
              norm, refA_norm[t - 1]);
        float got[NTOT];
        get_flat(&ps, ps.data, got);
        char what[32];
        snprintf(what, sizeof what, "step %d", t);
        CHECK_CLOSE(got, refA_p + (t - 1) * NTOT, NTOT, ATOL, RTOL, what);
    }
    CHECK(o->step == REF_T, "step count %lld", (long long)o->step);
    /* padding stays zero in every slab */
    for (int64_t i = REF_N0; i < ps.p[1].offset; i++)
        CHECK(ps.data[i] == 0 && o->m[i] == 0 && o->v[i] == 0, "padding %lld touched", (long long)i);
    optim_destroy(&o);
    CHECK(o == NULL, "optim_destroy sets NULL");
    params_free(&ps);
}

static void test_warmup_clip_ema_match_torch(void) {
    ParamSet ps;
    make_params(&ps, refB_p0);
    OptimConfig c;
    optim_config_default(&c);
    c.lr = 5e-3f;
    c.beta1 = 0.8f;
    c.beta2 = 0.99f;
    c.eps = 1e-6f;
    c.weight_decay = 0.01f;
    c.warmup_steps = 3;
    c.grad_clip = 0.5f;
    c.ema = 1;
    c.ema_decay = 0.9f;
    Optim *o = optim_new(&ps, &c);
    for (int t = 1; t <= REF_T; t++) {
        set_grad(&ps, refB_g + (t - 1) * NTOT);
        float norm = optim_step(o);
        CHECK(fabsf(norm - refB_norm[t - 1]) <= 1e-6f * refB_norm[t - 1], "step %d: norm %.9g want %.9g", t,
              norm, refB_norm[t - 1]);
        float want_lr = 5e-3f * (t < 3 ? (float)t / 3.0f : 1.0f);
        CHECK(fabsf(o->last_lr - want_lr) <= 1e-9f, "step %d: lr %.9g want %.9g", t, o->last_lr, want_lr);
        float got[NTOT], ema[NTOT];
        get_flat(&ps, ps.data, got);
        get_flat(&ps, o->ema, ema);
        char what[32];
        snprintf(what, sizeof what, "step %d weights", t);
        CHECK_CLOSE(got, refB_p + (t - 1) * NTOT, NTOT, ATOL, RTOL, what);
        snprintf(what, sizeof what, "step %d ema", t);
        CHECK_CLOSE(ema, refB_ema + (t - 1) * NTOT, NTOT, ATOL, RTOL, what);
    }
    optim_destroy(&o);
    params_free(&ps);
}

static void test_warmup_schedule(void) {
    ParamSet ps;
    float p0[NTOT] = {0};
    make_params(&ps, p0);
    OptimConfig c;
    optim_config_default(&c);
    c.lr = 1.0f;
    c.warmup_steps = 4;
    Optim *o = optim_new(&ps, &c);
    CHECK(optim_lr_at(o, 1) == 0.25f && optim_lr_at(o, 2) == 0.5f && optim_lr_at(o, 4) == 1.0f &&
              optim_lr_at(o, 100) == 1.0f, "warm-up lr %g %g %g %g", optim_lr_at(o, 1), optim_lr_at(o, 2),
          optim_lr_at(o, 4), optim_lr_at(o, 100));
    o->cfg.warmup_steps = 0;
    CHECK(optim_lr_at(o, 1) == 1.0f, "no warm-up: lr %g", optim_lr_at(o, 1));
    optim_destroy(&o);
    params_free(&ps);
}

/* Below the threshold clipping changes nothing (bit for bit); above it the update equals the
 * one with the gradient scaled by clip / (norm + 1e-6). */
static void test_clipping(void) {
    float g[NTOT];
    for (int i = 0; i < NTOT; i++) g[i] = 0.01f * (float)(i - 3);
    double norm = 0;
    for (int i = 0; i < NTOT; i++) norm += (double)g[i] * g[i];
    norm = sqrt(norm);
    float res[3][NTOT];
    float clips[3] = {0.0f, 10.0f, (float)(norm / 4)};
    for (int k = 0; k < 3; k++) {
        ParamSet ps;
        make_params(&ps, refA_p0);
        OptimConfig c;
        optim_config_default(&c);
        c.grad_clip = clips[k];
        Optim *o = optim_new(&ps, &c);
        set_grad(&ps, g);
        optim_step(o);
        optim_step(o);
        get_flat(&ps, ps.data, res[k]);
        optim_destroy(&o);
        params_free(&ps);
    }
    CHECK(memcmp(res[0], res[1], sizeof res[0]) == 0, "clip above the norm changed the update");
    /* reference for the clipped run: the slot with gscale */
    float p[NTOT], m[NTOT] = {0}, v[NTOT] = {0};
    memcpy(p, refA_p0, sizeof p);
    float gs = (float)((norm / 4) / (norm + 1e-6));
    for (int t = 1; t <= 2; t++) cpu_adamw_update(NULL, p, g, m, v, NTOT, 1e-3f, 0.9f, 0.999f, 1e-8f, 1e-2f, t, gs);
    CHECK_CLOSE(res[2], p, NTOT, 0.0, 0.0, "clipped update");
    CHECK(memcmp(res[0], res[2], sizeof res[0]) != 0, "clipping had no effect");
}

static void test_ema_halflife(void) {
    ParamSet ps;
    float p0[NTOT], p1[NTOT];
    for (int i = 0; i < NTOT; i++) { p0[i] = (float)i; p1[i] = 10.0f + (float)i; }
    make_params(&ps, p0);
    OptimConfig c;
    optim_config_default(&c);
    c.lr = 0.0f;         /* weights move only by hand */
    c.weight_decay = 0.0f;
    c.ema = 1;
    c.ema_halflife_images = 1000;
    c.images_per_step = 10;
    Optim *o = optim_new(&ps, &c);
    set_grad(&ps, refA_g);
    memcpy(params_data(&ps, 0), p1, REF_N0 * sizeof(float));
    memcpy(params_data(&ps, 1), p1 + REF_N0, REF_N1 * sizeof(float));
    optim_step(o);
    double d = pow(0.5, 10.0 / 1000.0);
    float want[NTOT], got[NTOT];
    for (int i = 0; i < NTOT; i++) want[i] = (float)(d * p0[i] + (1 - d) * p1[i]);
    get_flat(&ps, o->ema, got);
    CHECK_CLOSE(got, want, NTOT, 1e-6, 1e-6, "half-life ema");
    CHECK(o->nimg == 10.0, "nimg %g", o->nimg);
    optim_destroy(&o);

    /* ramp-up: the first step (nimg 0) copies the weights; the second uses h = 10 * 0.05 */
    c.ema_rampup_ratio = 0.05;
    memcpy(params_data(&ps, 0), p0, REF_N0 * sizeof(float));
    memcpy(params_data(&ps, 1), p0 + REF_N0, REF_N1 * sizeof(float));
    o = optim_new(&ps, &c);
    memcpy(params_data(&ps, 0), p1, REF_N0 * sizeof(float));
    memcpy(params_data(&ps, 1), p1 + REF_N0, REF_N1 * sizeof(float));
    optim_step(o);
    get_flat(&ps, o->ema, got);
    CHECK_CLOSE(got, p1, NTOT, 0.0, 0.0, "ramp-up step 1 ema");
    optim_destroy(&o);
    params_free(&ps);
}

static void test_nonfinite_grad_skips(void) {
    ParamSet ps;
    make_params(&ps, refA_p0);
    OptimConfig c;
    optim_config_default(&c);
    Optim *o = optim_new(&ps, &c);
    float g[NTOT];
    memcpy(g, refA_g, sizeof g);
    g[4] = NAN;
    set_grad(&ps, g);
    float before[NTOT], after[NTOT];
    get_flat(&ps, ps.data, before);
    float norm = optim_step(o);
    get_flat(&ps, ps.data, after);
    CHECK(isnan(norm), "norm %g", norm);
    CHECK(o->step == 0, "step counted: %lld", (long long)o->step);
    CHECK(memcmp(before, after, sizeof before) == 0, "weights changed on a NaN gradient");
    optim_destroy(&o);
    params_free(&ps);
}

static void test_ema_slot(void) {
    float e[4] = {1, 2, 3, 4}, p[4] = {5, 6, 7, 8}, want[4];
    for (int i = 0; i < 4; i++) want[i] = 0.75f * e[i] + 0.25f * p[i];
    cpu_ema_update(NULL, e, p, 4, 0.75f);
    CHECK_CLOSE(e, want, 4, 0.0, 0.0, "ema slot");
}

int main(void) {
    g_ctx = backend_ctx_new(&backend_cpu, 1);
    TEST_RUN(test_adamw_slot_matches_torch);
    TEST_RUN(test_optim_matches_torch_adamw);
    TEST_RUN(test_warmup_clip_ema_match_torch);
    TEST_RUN(test_warmup_schedule);
    TEST_RUN(test_clipping);
    TEST_RUN(test_ema_halflife);
    TEST_RUN(test_nonfinite_grad_skips);
    TEST_RUN(test_ema_slot);
    backend_ctx_destroy(&g_ctx);
    return TEST_END();
}
