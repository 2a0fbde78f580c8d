/* distill.h: the losses of image distillation on EDM-preconditioned networks (docs/ALGORITHMS.md
 * sections 2.1, 2.3, 2.4, 2.7, 2.10 and 3.3): the one-step generator, the distribution-matching
 * (DM) generator step, the critic's fake-score loss, teacher score matching (TSM) and the GAN
 * head on the critic's bottleneck with its two non-saturating losses.
 *
 * Every function works on one process's own networks (an Edm, normally around a UNet) and takes
 * what other processes compute (the teacher's D_real, the critic's D_fake, the critic's GAN
 * input gradient) as tensors, because in the pipeline those arrive over the wire. Tensors are
 * device pointers of the networks' backend, (N, dim) row-major; sigma and labels are HOST arrays
 * of N (as edm_forward takes them). Draws (t, noise) are the caller's: these functions are pure
 * in their inputs. Every backward ADDS into parameter gradients (zero them before a step).
 *
 * Not here: the draws and the messages (procs/student, procs/critic), the optimisers
 * (optimizer.h), the host-array DM gradient itself (dmd.h, reused here). */
#ifndef MSD_DISTILL_H
#define MSD_DISTILL_H

#include <stdint.h>

#include "backend.h"
#include "edm.h"
#include "params.h"

/* DMD2's loss weights of the GAN terms (ImageNet-64 reference scripts): the critic's L_D is
 * added to the fake-score loss with DISTILL_GAN_W_CRITIC, the generator's L_G to L_DM with
 * DISTILL_GAN_W_GEN. The functions below take the weight as an argument; these are defaults. */
#define DISTILL_GAN_W_CRITIC 1e-2f
#define DISTILL_GAN_W_GEN 3e-3f

/* Work buffers shared by the functions of one network: sized once for (cap, dim). */
typedef struct DistillBuf {
    const Backend *be;
    BackendCtx *ctx;
    int64_t cap, dim;
    float *a, *b, *c;    /* device (cap, dim) */
    float *sig, *w;      /* device (cap): sigma, per-sample weights */
    float *h;            /* host (4 cap dim + 2 cap) */
} DistillBuf;
void distill_buf_init(DistillBuf *b, const Backend *be, BackendCtx *ctx, int64_t cap, int64_t dim);
void distill_buf_free(DistillBuf *b);   /* NULL-safe, idempotent */

/* out = x + sigma[n] * noise (per sample n), device (N, dim); sigma host. out may alias x. */
void distill_add_noise(DistillBuf *b, float *out, const float *x, const float *noise, const float *sigma, int64_t N);

/* ---- generator (student side) ---- */

/* x = G(z, c) = D_G(DMD_SIGMA_GEN z; DMD_SIGMA_GEN, c): the one-step generator (section 2.1).
 * z, x device (N, dim). train = 1 keeps what distill_dm_backward needs. */
void distill_generate(DistillBuf *b, Edm *g, float *x, const float *z, const int32_t *labels, const float *cond,
                      int64_t N, int train);

/* The DM generator step (section 2.3), after distill_generate(train = 1) gave x and the teacher
 * and the critic denoised x_t = x + sigma eps (distill_add_noise) into d_real and d_fake:
 * dx = dL_DM/dx = g / (N dim), g = (d_fake - d_real) / mean_j |x - d_real| (dmd_generator_grad),
 * plus gan_weight * dx_gan when dx_gan is not NULL (the critic's dL_G/dx, section 2.7); then
 * backpropagates dx through G, ADDING into G's parameter gradients. Returns L_DM = 0.5 mean(g^2)
 * (a log value). */
double distill_dm_backward(DistillBuf *b, Edm *g, const float *x, const float *d_real, const float *d_fake,
                           const float *dx_gan, float gan_weight, int64_t N);

/* ---- critic: the fake-score loss (section 2.4) ---- */

/* L_fake = mean of lambda(sigma) (D_fake(x + sigma noise; sigma, c) - x)^2, lambda = (sigma^2 +
 * sigma_data^2) / (sigma sigma_data)^2, on the generator's detached samples x; forward and
 * backward, ADDING dL_fake/d(params) into the critic's gradients. Returns L_fake. */
float distill_fake_loss(Edm *critic, const float *x, const float *noise, const float *sigma, const int32_t *labels,
                        const float *cond, int64_t N);

/* ---- TSM: teacher score matching (section 3.3) ---- */

/* Step 1: x_t = x0 + sigma noise into out (send it to the teacher). Step 2, with the teacher's
 * d_teacher = D_teacher(x_t; sigma, c): L_TSM = mean of lambda(sigma) (D_phi(x_t; sigma, c) -
 * d_teacher)^2 with the same lambda as the EDM loss; forward and backward of D_phi, ADDING into
 * its parameter gradients. x_t must be step 1's output (not b->a; d_teacher not b->a, b->b).
 * Returns L_TSM. */
float distill_tsm_loss(DistillBuf *b, Edm *phi, const float *x_t, const float *d_teacher, const float *sigma,
                       const int32_t *labels, const float *cond, int64_t N);

/* ---- the GAN head on the critic's bottleneck (section 2.7) ---- */

/* f = out(flatten(silu(gn1(conv(silu(gn0(h))))))): GroupNorm (G = max(1, min(32, C/4)) groups,
 * eps 1e-5), SiLU, 3x3 convolution C -> C (padding 1), GroupNorm, SiLU, a linear map of the
 * flattened (C, H, W) map to one logit. Parameters (own ParamSet, own optimiser):
 * norm0.{weight,bias} (C), conv.{weight (C, C, 3, 3), bias (C)}, norm1.{weight,bias} (C),
 * out.{weight (1, C H W), bias (1)}. */
typedef struct GanHead {
    ParamSet ps;
    const Backend *be;
    BackendCtx *ctx;
    int64_t C, H, W, G, cap;
    int n0w, n0b, cw, cb, n1w, n1b, ow, ob;   /* parameter indices */
    const float *in;                          /* the last forward's input (not owned) */
    float *slab;                              /* device: everything below */
    /* (cap, C H W): gn0 out, its silu, conv out, gn1 out, its silu, two work buffers, d feat */
    float *y0, *a0, *y1, *z1, *a1, *g0, *g1, *dfeat;
    float *m0, *r0, *m1, *r1;                 /* (cap, G) GroupNorm statistics */
    float *logit, *dlogit;                    /* (cap) */
    double mean_fake, mean_real;              /* the last distill_gan_critic's mean logits (log values) */
} GanHead;
/* Head for bottlenecks of (C, H, W) and batches up to cap; parameters zeroed (load or init).
 * 0, or -1 with a message when C does not divide into the GroupNorm groups (a UNet configured
 * with other groups=). */
int gan_head_init(GanHead *h, int64_t C, int64_t H, int64_t W, int64_t cap, const Backend *be, BackendCtx *ctx,
                  char *err, size_t errlen);
void gan_head_free(GanHead *h);   /* NULL-safe, idempotent */
/* docs/UNET.md section 7's rules: GroupNorm weight 1, bias 0; conv and linear U(+-1/sqrt(fan_in))
 * from Philox stream = parameter index. */
void gan_head_init_weights(GanHead *h, uint64_t seed);
/* logits (N) device = f(feat), feat (N, C, H, W) device; feat must stay unchanged until the
 * backward. */
void gan_head_forward(GanHead *h, float *logit, const float *feat, int64_t N);
/* Backward of the last forward: ADDS into dfeat (may be NULL) and the head's gradients. */
void gan_head_backward(GanHead *h, float *dfeat, const float *dlogit, int64_t N);

/* The critic's and head's logits for x_t = x + sigma noise (train forward of the critic; the
 * critic's output itself is discarded). logit_host (N) may be NULL. */
void distill_gan_logits(DistillBuf *b, Edm *critic, GanHead *h, float *logit_host, const float *x,
                        const float *noise, const float *sigma, const int32_t *labels, const float *cond, int64_t N);

/* Critic side: L_D = mean_n softplus(f(x_fake_t)) + mean_n softplus(-f(x_real_t)) with both
 * batches noised as x + sigma noise; ADDS weight * dL_D/d(params) into the critic's and the
 * head's gradients (two forward/backward passes of the critic, fake then real). Returns L_D. */
float distill_gan_critic(DistillBuf *b, Edm *critic, GanHead *h, float weight, const float *x_fake,
                         const float *noise_fake, const float *sigma_fake, const int32_t *labels_fake,
                         const float *cond_fake, int64_t n_fake, const float *x_real, const float *noise_real,
                         const float *sigma_real, const int32_t *labels_real, const float *cond_real,
                         int64_t n_real);

/* Generator side: L_G = mean_n softplus(-f(x + sigma noise)); writes dx = dL_G/dx (device (N,
 * dim); x_t = x + sigma noise, so dL_G/dx = dL_G/dx_t), what the critic sends back to its
 * student. Returns L_G. Side effect: runs the critic's and the head's backward, so their
 * parameter gradients hold junk afterwards (a critic step zeroes them first). */
float distill_gan_gen_grad(DistillBuf *b, Edm *critic, GanHead *h, float *dx, const float *x, const float *noise,
                           const float *sigma, const int32_t *labels, const float *cond, int64_t N);

#endif
