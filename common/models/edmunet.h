/* edmunet.h: one EDM-preconditioned UNet (unet.h inside edm.h) with its optional optimiser and
 * its checkpoint conventions, as the teacher trainer, the serving teacher and msd-sample use
 * it: the network's CONFIG-SPEC travels in the checkpoint's metadata ("unet.spec"), so a
 * checkpoint is enough to rebuild the network; serving and sampling use the EMA weights.
 *
 * Life cycle: edmunet_new (a training net: activations for the backward and an AdamW; an
 * inference net: forward-only buffers) -> edmunet_load (optional) -> edm_forward / edm_loss_*
 * on t->edm, or edmunet_sample -> edmunet_free. The backend context is the caller's (several
 * nets of one process share it, so copies between them stay on one stream).
 *
 * Not here: what the network is trained for (procs/teacher), the sampler itself (sampler.h). */
#ifndef MSD_EDMUNET_H
#define MSD_EDMUNET_H

#include <stddef.h>
#include <stdint.h>

#include "checkpoint.h"
#include "edm.h"
#include "optimizer.h"
#include "sampler.h"
#include "unet.h"

#define EDMUNET_META_SPEC "unet.spec"
/* Sampler streams of the teacher's SAMPLE op and of msd-sample (sampler.h reserves
 * [stream, stream + steps]): the same labels, seed and steps give the same images. */
#define EDMUNET_STREAM_SAMPLE 0x53414d5000000000ull

typedef struct EdmUNet {
    const Backend *be;
    BackendCtx *ctx;        /* not owned */
    UNet *unet;
    Edm edm;
    Optim *opt;             /* NULL for an inference net */
    int64_t cap;            /* batch capacity */
    int64_t dim;            /* floats per sample, in_ch * res * res */
    UNetConfig cfg;
    char spec[512];         /* the canonical CONFIG-SPEC (unet_config_str) */
} EdmUNet;

/* Build the network of spec (untrusted: -1 with a message for a bad one) for batches of up to
 * cap samples, initialised from seed (docs/UNET.md section 7). train != NULL: training buffers
 * and an optimiser with that configuration (its EMA starts as the initial weights); NULL:
 * forward-only buffers. Dies on out-of-memory. */
int edmunet_new(EdmUNet *t, const char *spec, const Backend *be, BackendCtx *ctx, int64_t cap,
                const OptimConfig *train, uint64_t seed, char *err, size_t errlen);
void edmunet_free(EdmUNet *t);   /* NULL-safe, idempotent */

/* Checkpoint (checkpoint.h layout: weights, and the optimiser's state when t->opt) with the
 * spec and the caller's extra metadata pairs. Atomic. 0, or -1 with a message. */
int edmunet_save(const EdmUNet *t, const char *path, const StMeta *extra, int nextra, char *err, size_t errlen);
/* The CONFIG-SPEC stored in a checkpoint's metadata into spec. 0; 1 when the file has none (a
 * bare export); -1 with a message when the file cannot be read. */
int edmunet_read_spec(const char *path, char *spec, size_t len, char *err, size_t errlen);
/* Load weights (and the optimiser's state when t->opt) from path; a spec in the file must
 * equal t->spec. ema_into_weights: the EMA weights ("ema.*"), when present, become the weights
 * (serving, sampling). meta_out (may be NULL) receives the metadata. 0, or -1 with a message. */
int edmunet_load(EdmUNet *t, const char *path, int ema_into_weights, CheckpointMeta *meta_out, char *err,
                 size_t errlen);
/* An inference net from a checkpoint: the spec is spec when not NULL, else the file's; the
 * weights are the file's EMA weights when it has them. 0, or -1 with a message. */
int edmunet_open(EdmUNet *t, const char *path, const char *spec, const Backend *be, BackendCtx *ctx, int64_t cap,
                 char *err, size_t errlen);

/* n samples with the EDM sampler (c must pass sampler_config_check) into x (n, dim), host;
 * labels host (n) in [0, cfg.label_dim) when the net is class-conditional, else NULL. Noise
 * from (seed, EDMUNET_STREAM_SAMPLE...), sample j at global index first + j, so a run split
 * into chunks gives the images of one big run. Returns the network evaluations. */
int edmunet_sample(EdmUNet *t, const SamplerConfig *c, float *x, const int32_t *labels, int64_t n, uint64_t seed,
                   uint64_t first);

#endif
