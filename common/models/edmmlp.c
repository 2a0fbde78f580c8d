/* edmmlp.c: see edmmlp.h. */
#include "edmmlp.h"

#include <stdio.h>
#include <string.h>

#include "log.h"
#include "safetensors.h"

int edmmlp_new(EdmMlp *t, const char *spec, int dim, int nclasses, int64_t cap, float sigma_data,
               const OptimConfig *opt, uint64_t seed, char *err, size_t errlen) {
    memset(t, 0, sizeof *t);
    char full[512];
    if (snprintf(full, sizeof full, "%s,in=%d,classes=%d", spec, dim, nclasses) >= (int)sizeof full)
        return msd_errf(err, errlen, "network spec '%s' too long", spec);
    MlpConfig cfg;
    if (mlp_config_parse(&cfg, full, err, errlen)) return -1;
    if (cfg.in_dim != dim || cfg.label_dim != nclasses)
        return msd_errf(err, errlen, "network spec '%s' must not set in= or classes= (they come from the data)", spec);
    char e2[256];
    t->be = backend_get(device_cpu(), e2, sizeof e2);
    if (!t->be) return msd_errf(err, errlen, "%s", e2);
    t->ctx = backend_ctx_new(t->be, 0);
    t->mlp = mlp_new(&cfg, t->be, t->ctx);
    mlp_init(t->mlp, seed);
    mlp_alloc_batch(t->mlp, cap);
    edm_init(&t->edm, mlp_edm_net(t->mlp), cap, t->be, t->ctx);
    t->edm.sigma_data = sigma_data;
    if (opt) t->opt = optim_new(mlp_params(t->mlp), opt);
    t->cap = cap;
    t->dim = dim;
    mlp_config_str(&cfg, t->spec, sizeof t->spec);
    return 0;
}

void edmmlp_free(EdmMlp *t) {
    if (!t->mlp) return;
    optim_destroy(&t->opt);
    edm_free(&t->edm);
    mlp_destroy(&t->mlp);
    backend_ctx_destroy(&t->ctx);
    memset(t, 0, sizeof *t);
}

int edmmlp_save(const EdmMlp *t, const char *path, const char *role, char *err, size_t errlen) {
    char sd[32];
    snprintf(sd, sizeof sd, "%.9g", t->edm.sigma_data);
    StMeta meta[3 + CKPT_SETTINGS_MAX] = {{"toynet.spec", (char *)t->spec}, {"toynet.role", (char *)role},
                                          {"toynet.sigma_data", sd}};
    int n = 3 + (t->settings ? ckpt_settings_meta(t->settings, meta + 3, CKPT_SETTINGS_MAX) : 0);
    return checkpoint_save(path, mlp_params(t->mlp), t->opt, meta, n, err, errlen);
}

int edmmlp_load(EdmMlp *t, const char *path, int ema_into_weights, char *err, size_t errlen) {
    CheckpointMeta meta = {0};
    ParamSet *ps = mlp_params(t->mlp);
    int rc = checkpoint_load(path, ps, t->opt, &meta, err, errlen);
    if (rc == 0) {
        const char *spec = checkpoint_meta_get(&meta, "toynet.spec");
        if (!spec || strcmp(spec, t->spec) != 0) {
            rc = msd_errf(err, errlen, "%s: network spec '%s' differs from this process's '%s'", path,
                          spec ? spec : "(none)", t->spec);
        }
    }
    if (rc == 0 && t->opt && t->settings)
        rc = checkpoint_check_settings(path, &meta, t->settings, t->allow_changed, err, errlen);
    checkpoint_meta_free(&meta);
    if (rc == 0 && ema_into_weights) {
        /* serving uses the EMA weights when the checkpoint has them */
        char e2[512];
        if (st_load_params(path, ps, "ema.", ST_ALLOW_EXTRA, e2, sizeof e2) != 0)
            log_info("%s: no EMA weights (%s); serving the raw weights", path, e2);
    }
    return rc;
}
