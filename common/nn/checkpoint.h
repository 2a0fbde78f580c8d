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

/* Several parameter sets (each with its optimiser or NULL) in one file: part q's tensors are
 * named PREFIX + the names above (part 0's prefix is "", the others' non-empty and clashing with
 * no parameter name, e.g. "gan." for a critic's GAN head). The parts step together: the file
 * records part 0's step and nimg and loading sets every part's optimiser to them. Loading
 * checks as checkpoint_load, every tensor of the file consumed by some part. */
#define CKPT_PARTS_MAX 4
typedef struct CkptPart {
    const char *prefix;
    ParamSet *ps;
    Optim *opt;
} CkptPart;
int checkpoint_save_parts(const char *path, const CkptPart *parts, int nparts, const StMeta *meta, int nmeta,
                          char *err, size_t errlen);
int checkpoint_load_parts(const char *path, const CkptPart *parts, int nparts, CheckpointMeta *meta_out, char *err,
                          size_t errlen);

/* The settings that define a run (seed, batch, learning rate, ...: what a trainer's results
 * depend on), recorded in its checkpoints as metadata "run.KEY" = VALUE and compared when a
 * run resumes. Settings a resume may change (the target step count, log and checkpoint
 * cadence, paths, threads) are not recorded. KEY is the trainer's option without "--". */
#define CKPT_SETTINGS_MAX 24
typedef struct CkptSettings {
    int n;
    char key[CKPT_SETTINGS_MAX][40];      /* "run.KEY" */
    char value[CKPT_SETTINGS_MAX][128];
} CkptSettings;
/* Add KEY = printf(fmt, ...) (the value truncated to 127 bytes); aborts past CKPT_SETTINGS_MAX. */
void ckpt_settings_add(CkptSettings *s, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The settings as metadata pairs appended to out[0, cap) (pointing into s); returns how many. */
int ckpt_settings_meta(const CkptSettings *s, StMeta *out, int cap);
/* Compare the settings recorded in a checkpoint's metadata m (of file path) with now. Settings
 * the checkpoint does not record (older files) are not compared. Every difference is named
 * with both values; with allow_changed it is logged as a warning and the resume goes on (0),
 * else -1 with the message (naming --allow-changed-settings). */
int checkpoint_check_settings(const char *path, const CheckpointMeta *m, const CkptSettings *now, int allow_changed,
                              char *err, size_t errlen);

#endif
