/* edmunet.c: see edmunet.h. */
#include "edmunet.h"

#include <stdio.h>
#include <string.h>

#include "log.h"
#include "safetensors.h"

int edmunet_new(EdmUNet *t, const char *spec, const Backend *be, BackendCtx *ctx, int64_t cap,
                const OptimConfig *train, uint64_t seed, char *err, size_t errlen) {
    memset(t, 0, sizeof *t);
    MSD_CHECK(be && ctx && cap > 0);
    if (unet_config_parse(&t->cfg, spec, err, errlen)) return -1;
    if (t->cfg.cond_dim > 0)
        return msd_errf(err, errlen, "network spec '%s': conditioning vectors (cond=) are not served here; use classes=",
                        spec);
    t->be = be;
    t->ctx = ctx;
    t->unet = unet_new(&t->cfg, be, ctx);
    unet_init(t->unet, seed);
    if (train) unet_alloc_batch(t->unet, cap);
    else unet_alloc_batch_inference(t->unet, cap);
    edm_init(&t->edm, unet_edm_net(t->unet), cap, be, ctx);
    if (train) t->opt = optim_new(unet_params(t->unet), train);
    t->cap = cap;
    t->dim = (int64_t)t->cfg.in_ch * t->cfg.res * t->cfg.res;
    unet_config_str(&t->cfg, t->spec, sizeof t->spec);
    return 0;
}

void edmunet_free(EdmUNet *t) {
    if (!t || !t->unet) return;
    optim_destroy(&t->opt);
    edm_free(&t->edm);
    unet_destroy(&t->unet);
    memset(t, 0, sizeof *t);
}

int edmunet_save(const EdmUNet *t, const char *path, const StMeta *extra, int nextra, char *err, size_t errlen) {
    StMeta meta[16];
    MSD_CHECK(nextra >= 0 && nextra < 16);
    meta[0] = (StMeta){EDMUNET_META_SPEC, (char *)t->spec};
    for (int i = 0; i < nextra; i++) meta[1 + i] = extra[i];
    return checkpoint_save(path, unet_params(t->unet), t->opt, meta, 1 + nextra, err, errlen);
}

int edmunet_read_spec(const char *path, char *spec, size_t len, char *err, size_t errlen) {
    StFile f;
    if (st_read(&f, path, err, errlen)) return -1;
    const char *s = st_meta_get(&f, EDMUNET_META_SPEC);
    int rc = 1;
    if (s) {
        rc = snprintf(spec, len, "%s", s) < (int)len ? 0 : msd_errf(err, errlen, "%s: network spec too long", path);
    }
    st_free(&f);
    return rc;
}

int edmunet_load(EdmUNet *t, const char *path, int ema_into_weights, CheckpointMeta *meta_out, char *err,
                 size_t errlen) {
    CheckpointMeta meta = {0};
    ParamSet *ps = unet_params(t->unet);
    int rc = checkpoint_load(path, ps, t->opt, &meta, err, errlen);
    if (rc == 0) {
        const char *spec = checkpoint_meta_get(&meta, EDMUNET_META_SPEC);
        if (spec && strcmp(spec, t->spec) != 0)
            rc = msd_errf(err, errlen, "%s: the checkpoint's network '%s' differs from '%s'", path, spec, t->spec);
    }
    if (rc == 0 && ema_into_weights) {
        char e2[512];
        if (st_load_params(path, ps, "ema.", ST_ALLOW_EXTRA, e2, sizeof e2) != 0)
            log_info("%s: no EMA weights (%s); using the raw weights", path, e2);
    }
    if (rc == 0 && meta_out) *meta_out = meta;
    else checkpoint_meta_free(&meta);
    return rc;
}

int edmunet_open(EdmUNet *t, const char *path, const char *spec, const Backend *be, BackendCtx *ctx, int64_t cap,
                 char *err, size_t errlen) {
    char file_spec[512];
    memset(t, 0, sizeof *t);
    if (!spec) {
        int r = edmunet_read_spec(path, file_spec, sizeof file_spec, err, errlen);
        if (r < 0) return -1;
        if (r > 0)
            return msd_errf(err, errlen, "%s: the checkpoint names no network (no \"%s\" metadata); pass --net SPEC",
                            path, EDMUNET_META_SPEC);
        spec = file_spec;
    }
    if (edmunet_new(t, spec, be, ctx, cap, NULL, 0, err, errlen)) return -1;
    if (edmunet_load(t, path, 1, NULL, err, errlen)) {
        edmunet_free(t);
        return -1;
    }
    return 0;
}

int edmunet_sample(EdmUNet *t, const SamplerConfig *c, float *x, const int32_t *labels, int64_t n, uint64_t seed,
                   uint64_t first) {
    MSD_CHECK((labels != NULL) == (t->cfg.label_dim > 0));
    SamplerEdm s;
    sampler_edm_init(&s, &t->edm);
    int nfe = sampler_run(c, sampler_edm_denoise, &s, x, labels, n, t->dim, seed, EDMUNET_STREAM_SAMPLE, first);
    sampler_edm_free(&s);
    return nfe;
}
