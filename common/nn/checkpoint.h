/* checkpoint.h: a training run's state in one safetensors file, so training resumes exactly:
 *   NAME            model weights (ps->data), PyTorch-style names
 *   ema.NAME        EMA of the weights (when the optimiser keeps one)
 *   opt.m.NAME      AdamW first moment
 *   opt.v.NAME      AdamW second moment
 *   __metadata__    "msd.format" = "msdpipe-checkpoint-1", "msd.step", "msd.nimg" (decimal,
 *                   nimg with %.17g so it round-trips), plus the caller's pairs (e.g. the
 *                   config); keys starting "msd." are reserved.
 * All float32, all written atomically (safetensors.h). A file with only NAME tensors (a
 * bare model export) loads with opt == NULL.
 *
 * Not here: choosing file names, keeping the last k checkpoints (the trainer's job). */
#ifndef MSD_CHECKPOINT_H
#define MSD_CHECKPOINT_H

#include <stddef.h>

#include "optimizer.h"
#include "params.h"
#include "safetensors.h"

/* Save ps (and opt's state when opt != NULL) with the caller's metadata (nmeta pairs, may be
 * 0). Returns 0, or -1 with a message (I/O error, reserved or duplicate key). */
int checkpoint_save(const char *path, const ParamSet *ps, const Optim *opt, const StMeta *meta, int nmeta,
                    char *err, size_t errlen);

/* Metadata of a loaded checkpoint: owned copies (checkpoint_meta_free). */
typedef struct CheckpointMeta {
    int n;
    StMeta *kv;
} CheckpointMeta;
void checkpoint_meta_free(CheckpointMeta *m);
const char *checkpoint_meta_get(const CheckpointMeta *m, const char *key);

/* Load path into ps (same parameter set: names and shapes must match) and, when opt != NULL,
 * restore m, v, ema (if opt keeps one; the file must then have ema.*), step and nimg. Every
 * tensor in the file must be consumed, except that ema.* is ignored when opt == NULL or opt
 * keeps no EMA, and opt.* when opt == NULL. Parameter names starting "ema." or "opt." are
 * refused by checkpoint_save (they would be ambiguous). meta_out (may be NULL) receives all
 * metadata pairs. On failure returns -1 with a message naming the file and tensor/key; ps and
 * opt may then be partly loaded. */
int checkpoint_load(const char *path, ParamSet *ps, Optim *opt, CheckpointMeta *meta_out, char *err,
                    size_t errlen);

#endif
