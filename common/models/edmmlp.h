/* edmmlp.h: one EDM-preconditioned MLP with its optimiser and checkpoint, as the toy
 * processes use it: the student's one-step generator and the critic's fake-score network.
 * Both are built from the same command-line spec ("mlp,width=128,depth=4", mlp.h) plus the
 * class count of the mixture, for batches of up to `cap` samples, on the CPU backend.
 *
 * Not here: what the network is trained for (the student and critic processes). */
#ifndef MSD_EDMMLP_H
#define MSD_EDMMLP_H

#include <stddef.h>
#include <stdint.h>

#include "checkpoint.h"
#include "edm.h"
#include "mlp.h"
#include "optimizer.h"

typedef struct EdmMlp {
    const Backend *be;
    BackendCtx *ctx;
    Mlp *mlp;
    Edm edm;
    Optim *opt;         /* NULL for an inference-only net */
    int64_t cap;
    int dim;
    char spec[256];     /* the resolved MLP spec (mlp_config_str) */
    /* a trainer's run settings (NULL: none), written by edmmlp_save and compared by
     * edmmlp_load when it resumes training (t->opt), see checkpoint_check_settings */
    const CkptSettings *settings;
    int allow_changed;
} EdmMlp;

/* spec: an MLP spec without "classes=" (it is set from nclasses) and in= defaulting to dim.
 * opt: NULL for inference only. sigma_data: the EDM preconditioning's data scale.
 * 0, or -1 with a message for a bad spec. */
int edmmlp_new(EdmMlp *t, const char *spec, int dim, int nclasses, int64_t cap, float sigma_data,
               const OptimConfig *opt, uint64_t seed, char *err, size_t errlen);
void edmmlp_free(EdmMlp *t);
/* Checkpoint with the spec in the metadata ("toynet.spec") so a loader can check it, and
 * t->settings when set. */
int edmmlp_save(const EdmMlp *t, const char *path, const char *role, char *err, size_t errlen);
/* Load weights (and optimiser state when t->opt). Returns 0; -1 with a message (including a
 * spec mismatch, or run settings that differ from t->settings, unless t->allow_changed).
 * With ema_into_weights, the EMA weights (when present) become the weights. */
int edmmlp_load(EdmMlp *t, const char *path, int ema_into_weights, char *err, size_t errlen);

#endif
