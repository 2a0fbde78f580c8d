/* mlp.h: the MLP denoiser of the 2-D toy problems (docs/UNET.md section 5): the same noise and
 * class embedding as the UNet, `depth` layers of Linear -> scale-and-shift -> SiLU, a linear
 * output; same parameter, gradient and EDM conventions as unet.h (it plugs into edm.h through
 * mlp_edm_net), so it serves as teacher, one-step generator and fake-score network of the toy
 * pipelines.
 *
 * Not here: the toy data and its exact teacher (mog.h). */
#ifndef MSD_MLP_H
#define MSD_MLP_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "edm.h"
#include "params.h"

#define MLP_MAX_DEPTH 32

typedef struct MlpConfig {
    int in_dim;      /* data dimension (2) */
    int width, depth;
    int emb, noise_ch;
    int label_dim, cond_dim;
} MlpConfig;

/* "mlp[,key=value...]" with keys in width depth emb noise classes cond. Untrusted: 0, or -1
 * with a message. */
int mlp_config_parse(MlpConfig *cfg, const char *spec, char *err, size_t errlen);
const char *mlp_config_str(const MlpConfig *cfg, char *buf, size_t len);

typedef struct Mlp Mlp;

Mlp *mlp_new(const MlpConfig *cfg, const Backend *be, BackendCtx *ctx);  /* params allocated, zero */
void mlp_destroy(Mlp **m);
ParamSet *mlp_params(Mlp *m);
void mlp_init(Mlp *m, uint64_t seed);
int64_t mlp_alloc_batch(Mlp *m, int64_t N);
/* out (N, in_dim) = F(x_in; c_noise, cond); conventions as unet_forward (no dropout). */
void mlp_forward(Mlp *m, float *out, const float *x_in, const float *c_noise, const float *cond, int64_t N);
/* ADDS into dx (may be NULL) and the parameter gradients. The "bottleneck" of the MLP is its
 * last hidden layer (N, width); dhidden may be NULL. */
void mlp_backward(Mlp *m, float *dx, const float *dout, const float *dhidden, int64_t N);
EdmNet mlp_edm_net(Mlp *m);

#endif
