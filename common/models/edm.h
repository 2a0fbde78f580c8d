/* edm.h: the EDM preconditioning (Karras et al. 2022) around any denoiser network, the EDM
 * training loss, and what the denoiser networks (unet.c, mlp.c) share: the noise/class
 * embedding, the activation arena and the parameter initialisers. docs/UNET.md sections 2, 6
 * and 7 are the specification.
 *
 *   D(x; sigma, c) = c_skip x + c_out F(c_in x; ln(sigma)/4, c)
 *
 * A network plugs in through EdmNet (a forward/backward pair on device pointers); the Edm
 * wrapper owns the per-sample coefficients, the conditioning input (one-hot of the labels, or
 * the caller's vectors) and its work buffers, all allocated once for a batch capacity.
 *
 * Not here: sampling (the teacher process), distillation losses (the student process). */
#ifndef MSD_EDM_H
#define MSD_EDM_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "params.h"

#define EDM_SIGMA_DATA 0.5f
#define EDM_P_MEAN (-1.2f)
#define EDM_P_STD 1.2f
/* Philox streams (rng.h) of edm_loss_step: ln sigma and the noise. */
#define EDM_STREAM_SIGMA 0x45444d01u
#define EDM_STREAM_NOISE 0x45444d02u

/* ---- a raw network F as the wrapper sees it ---- */
typedef struct EdmNet {
    void *self;
    ParamSet *params;
    int64_t dim;       /* floats per sample of x (C*H*W, or 2 for the toy) */
    int label_dim;     /* > 0: c is the one-hot of int labels in [0, label_dim) */
    int cond_dim;      /* > 0: c is a caller-given (N, cond_dim) vector */
    /* out (N, dim) = F(x_in; c_noise, cond); cond (N, cdim) or NULL. Device pointers. */
    void (*forward)(void *self, float *out, const float *x_in, const float *c_noise, const float *cond,
                    int64_t N, int train);
    /* Backward of the last forward: ADDS into dx_in (may be NULL) and the parameter grads;
     * dextra is an optional gradient at the network's bottleneck (NULL: none). */
    void (*backward)(void *self, float *dx_in, const float *dout, const float *dextra, int64_t N);
    /* The bottleneck of the last forward (device), and its floats per sample. */
    const float *(*bottleneck)(const void *self);
    int64_t bottleneck_dim;
} EdmNet;

/* ---- the preconditioned denoiser ---- */
typedef struct Edm {
    EdmNet net;
    const Backend *be;
    BackendCtx *ctx;
    int64_t cap;            /* batch capacity */
    float sigma_data;
    /* device (cap): per-sample coefficients of the last forward */
    float *c_skip, *c_out, *c_in, *c_noise;
    float *cond;            /* device (cap, label_dim): one-hot of the last labels */
    const float *cond_used; /* what the last forward passed as c */
    float *xin, *fout, *work, *dfin;     /* device (cap, dim) */
    /* loss state (edm_loss_*) */
    float *x_noisy, *noise, *pred, *lambda, *sig;   /* device: (cap, dim) x3, (cap), (cap) */
    const float *loss_x0;
    float *h_buf;           /* host: coefficients (6 * cap) and one-hot labels (cap * label_dim) */
} Edm;

/* Wrap net for batches of up to cap samples (allocates the buffers on be). */
void edm_init(Edm *e, EdmNet net, int64_t cap, const Backend *be, BackendCtx *ctx);
void edm_free(Edm *e);      /* NULL-safe, idempotent */

/* out (N, dim) = D(x; sigma, c). x, out device; sigma HOST (N floats, each > 0 — a
 * non-positive or non-finite sigma is a bug: callers validate untrusted values first);
 * labels HOST int32 (N) in [0, label_dim) when net.label_dim > 0, else NULL; cond device
 * (N, cond_dim) when net.cond_dim > 0, else NULL. */
void edm_forward(Edm *e, float *out, const float *x, const float *sigma, const int32_t *labels,
                 const float *cond, int64_t N, int train);
/* Backward of the last edm_forward: ADDS dD/dx . dout into dx (may be NULL) and the parameter
 * gradients; dbottleneck: optional extra gradient at the network's bottleneck. */
void edm_backward(Edm *e, float *dx, const float *dout, const float *dbottleneck, int64_t N);

/* EDM training loss on clean samples x0 (device (N, dim)) with the given noise (device) and
 * sigma (host): mean of lambda(sigma) (D(x0 + sigma noise) - x0)^2. Returns the loss. */
float edm_loss_given(Edm *e, const float *x0, const float *noise, const float *sigma, const int32_t *labels,
                     const float *cond, int64_t N, int train);
/* The same with ln sigma ~ N(P_mean, P_std^2) and the noise drawn from Philox (seed, the
 * EDM streams) at counter offsets step*N and step*N*dim: step s always draws the same. */
float edm_loss_step(Edm *e, const float *x0, const int32_t *labels, const float *cond, int64_t N, uint64_t seed,
                    int64_t step, int train);
/* Backward of the last edm_loss_*: adds d(loss)/d(params) into the parameter gradients. */
void edm_loss_backward(Edm *e, int64_t N);

/* ---- shared by the networks ---- */

/* Activation arena: a first pass with base NULL measures, a second carves (16-float aligned). */
typedef struct EdmArena {
    float *base;
    int64_t used;
} EdmArena;
static inline float *edm_arena_take(EdmArena *a, int64_t n) {
    float *p = a->base ? a->base + a->used : NULL;
    a->used += (n + 15) & ~(int64_t)15;
    return p;
}

/* Noise + class embedding of docs/UNET.md section 2: emb = silu(map_layer1(silu(map_layer0(
 * sinusoidal(c_noise)))) + map_label(c)). Blocks add their gradients into demb. */
typedef struct EdmEmbed {
    int64_t noise_ch, E, cdim;
    int map0_w, map0_b, map1_w, map1_b, label_w;  /* parameter indices; label_w -1 if cdim 0 */
    float *t, *e0, *e0a, *e1, *emb, *demb, *w1, *w2; /* (cap, noise_ch) / (cap, E) activations */
    const float *cond;                               /* c of the last forward (not owned) */
} EdmEmbed;
void edm_embed_register(EdmEmbed *m, ParamSet *ps, int64_t noise_ch, int64_t E, int64_t cdim);
void edm_embed_carve(EdmEmbed *m, EdmArena *a, int64_t cap);
void edm_embed_forward(EdmEmbed *m, const ParamSet *ps, const float *c_noise, const float *cond, int64_t N);
/* Backward from m->demb (which the caller zeroed before the network's backward). */
void edm_embed_backward(EdmEmbed *m, const ParamSet *ps, int64_t N);
void edm_embed_init(EdmEmbed *m, ParamSet *ps, uint64_t seed);

/* Parameter initialisers (docs/UNET.md section 7): parameter i draws from Philox stream i. */
void edm_param_uniform(ParamSet *ps, int i, float bound, uint64_t seed);  /* U(-bound, bound) */
void edm_param_normal(ParamSet *ps, int i, float std, uint64_t seed);
void edm_param_fill(ParamSet *ps, int i, float value);
/* Weight and bias (bias index may be -1) of a conv/linear with this fan-in: U(+-1/sqrt(fan_in)). */
void edm_param_default(ParamSet *ps, int w, int b, int64_t fan_in, uint64_t seed);

#endif
