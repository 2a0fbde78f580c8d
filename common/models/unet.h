/* unet.h: the EDM/ADM-style UNet of docs/UNET.md (the teacher, the one-step generator and the
 * fake-score network are all this network with different configurations). The raw network
 * F(x_in; c_noise, c): the EDM preconditioning around it lives in edm.h.
 *
 * Life cycle: unet_config_parse -> unet_new (registers and allocates the parameters) ->
 * unet_init (or load a checkpoint into unet_params) -> unet_alloc_batch (every activation and
 * work buffer for up to N samples, once) -> forward/backward as often as wanted; nothing is
 * allocated inside them. Parameter names and the block layout are those of docs/UNET.md.
 *
 * Not here: the preconditioning and the loss (edm.h), the optimiser (optim.h), checkpoints
 * (safetensors.h: st_load_params / st_save_params on unet_params). */
#ifndef MSD_UNET_H
#define MSD_UNET_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "edm.h"
#include "params.h"

#define UNET_MAX_LEVELS 8

typedef struct UNetConfig {
    int in_ch, res, model_ch;
    int levels;
    int ch_mult[UNET_MAX_LEVELS];
    int num_blocks;
    int n_attn;
    int attn_res[UNET_MAX_LEVELS];
    int label_dim;   /* classes (one-hot conditioning), 0: none */
    int cond_dim;    /* conditioning-vector width (exclusive with label_dim), 0: none */
    float dropout;
    int gn_groups, emb_mult, head_ch;
} UNetConfig;

/* Parse a CONFIG-SPEC (docs/UNET.md section 1): "fmnist-s", "key=value,...", or a name then
 * overrides. Untrusted: returns 0, or -1 with a message naming the offending text. The result
 * is validated (sizes positive and bounded, divisibility of resolutions and GroupNorm groups). */
int unet_config_parse(UNetConfig *cfg, const char *spec, char *err, size_t errlen);
/* The canonical CONFIG-SPEC of cfg (every key), e.g. for checkpoint metadata. */
const char *unet_config_str(const UNetConfig *cfg, char *buf, size_t len);
/* Width of the conditioning input c: label_dim or cond_dim (0: unconditional). */
static inline int unet_config_cdim(const UNetConfig *cfg) { return cfg->label_dim ? cfg->label_dim : cfg->cond_dim; }

typedef struct UNet UNet;

/* Registers every parameter (docs/UNET.md order) and allocates the slabs (zeroed) on be.
 * cfg must have passed unet_config_parse (an invalid one is a bug). */
UNet *unet_new(const UNetConfig *cfg, const Backend *be, BackendCtx *ctx);
void unet_destroy(UNet **u);   /* NULL-safe; sets *u to NULL */
ParamSet *unet_params(UNet *u);
const UNetConfig *unet_config(const UNet *u);
/* Deterministic initialisation from seed (docs/UNET.md section 7). */
void unet_init(UNet *u, uint64_t seed);
/* Seed of the dropout masks (only used when cfg.dropout > 0 and train = 1). */
void unet_set_dropout_seed(UNet *u, uint64_t seed);

/* Allocate activations and work buffers for up to N samples (frees any previous ones).
 * Returns the bytes allocated on the device. */
int64_t unet_alloc_batch(UNet *u, int64_t N);
/* The same for forward only (serving, sampling): nothing is kept for a backward, so the decoder
 * and the per-block intermediates share buffers (about half the memory); unet_backward after
 * this is a bug. The bottleneck stays available. */
int64_t unet_alloc_batch_inference(UNet *u, int64_t N);

/* F = UNet(x_in; c_noise, c). x_in, out (N, in_ch, res, res); c_noise (N); cond (N, cdim) (the
 * one-hot of the labels or the conditioning vector; NULL when cdim is 0). All device pointers;
 * N <= capacity. train = 1 applies dropout (drawing a new mask every call). The activations
 * saved for unet_backward are those of this call; x_in and cond must stay unchanged until
 * then (the backward reads them). */
void unet_forward(UNet *u, float *out, const float *x_in, const float *c_noise, const float *cond, int64_t N,
                  int train);
/* The bottleneck of the last forward: (N, C_last, R_last, R_last), valid until the next
 * forward. unet_bottleneck_shape writes (C, H, W). */
const float *unet_bottleneck(const UNet *u);
void unet_bottleneck_shape(const UNet *u, int64_t chw[3]);
/* Backward of the last forward with output gradient dout (N, in_ch, res, res) and an optional
 * extra gradient at the bottleneck (NULL: none). ADDS dF/dx_in into dx (NULL: not wanted) and
 * every parameter gradient into unet_params(u)->grad. dcond and dc_noise are not computed. */
void unet_backward(UNet *u, float *dx, const float *dout, const float *dbottleneck, int64_t N);

/* The network as the EDM wrapper sees it (edm.h); u must outlive the returned value. */
EdmNet unet_edm_net(UNet *u);

/* FLOPs of one forward of one sample (docs/UNET.md section 8). */
double unet_forward_flops(const UNetConfig *cfg);

#endif
