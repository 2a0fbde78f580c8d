/* checkpoint.c: a training run's state as one safetensors file; see checkpoint.h. */
#include "checkpoint.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define CKPT_FORMAT "msdpipe-checkpoint-1"

static int has_prefix(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

int checkpoint_save(const char *path, const ParamSet *ps, const Optim *opt, const StMeta *meta, int nmeta,
                    char *err, size_t errlen) {
    CkptPart part = {"", (ParamSet *)ps, (Optim *)opt};
    return checkpoint_save_parts(path, &part, 1, meta, nmeta, err, errlen);
}

int checkpoint_save_parts(const char *path, const CkptPart *parts, int nparts, const StMeta *meta, int nmeta,
                          char *err, size_t errlen) {
    MSD_CHECK(nparts >= 1 && nparts <= CKPT_PARTS_MAX && nmeta >= 0);
    const Optim *opt = parts[0].opt;
    for (int i = 0; i < nmeta; i++)
        if (has_prefix(meta[i].key, "msd."))
            return msd_errf(err, errlen, "%s: metadata key '%s' is reserved (msd.*)", path, meta[i].key);
    int nt = 0;
    for (int q = 0; q < nparts; q++) {
        const ParamSet *ps = parts[q].ps;
        MSD_CHECK(ps->data && parts[q].prefix && (q == 0 || parts[q].prefix[0]));
        MSD_CHECK(!parts[q].opt || parts[q].opt->ps == ps);
        for (int i = 0; i < ps->n; i++) {
            if (has_prefix(ps->p[i].name, "ema.") || has_prefix(ps->p[i].name, "opt."))
                return msd_errf(err, errlen, "%s: parameter name '%s' clashes with the checkpoint's state prefixes",
                                path, ps->p[i].name);
            for (int r = 1; r < nparts; r++)
                if (r != q && has_prefix(ps->p[i].name, parts[r].prefix))
                    return msd_errf(err, errlen, "%s: parameter name '%s' clashes with the part prefix '%s'", path,
                                    ps->p[i].name, parts[r].prefix);
        }
        nt += 4 * ps->n;
    }
    const char *prefixes[4] = {"", "ema.", "opt.m.", "opt.v."};
    float *host[CKPT_PARTS_MAX][4] = {{0}};
    StWriteTensor *w = msd_calloc((size_t)(nt ? nt : 1), sizeof *w);
    char **names = msd_calloc((size_t)(nt ? nt : 1), sizeof *names);
    int k = 0;
    for (int q = 0; q < nparts; q++) {
        const ParamSet *ps = parts[q].ps;
        const Optim *po = parts[q].opt;
        const float *slabs[4] = {ps->data, po ? po->ema : NULL, po ? po->m : NULL, po ? po->v : NULL};
        for (int s = 0; s < 4; s++) {
            if (!slabs[s]) continue;
            host[q][s] = msd_malloc((size_t)(ps->total ? ps->total : 1) * sizeof(float));
            if (ps->total) ps->be->download(ps->ctx, host[q][s], slabs[s], ps->total);
            for (int i = 0; i < ps->n; i++, k++) {
                size_t l = strlen(parts[q].prefix) + strlen(prefixes[s]) + strlen(ps->p[i].name) + 1;
                names[k] = msd_malloc(l);
                snprintf(names[k], l, "%s%s%s", parts[q].prefix, prefixes[s], ps->p[i].name);
                w[k] = (StWriteTensor){names[k], ST_F32, ps->p[i].ndim, ps->p[i].shape, host[q][s] + ps->p[i].offset};
            }
        }
    }
    nt = k;
    StMeta *all = msd_calloc((size_t)nmeta + 3, sizeof *all);
    char step[32], nimg[40];
    snprintf(step, sizeof step, "%" PRId64, opt ? opt->step : 0);
    snprintf(nimg, sizeof nimg, "%.17g", opt ? opt->nimg : 0.0);
    int nm = 0;
    all[nm++] = (StMeta){"msd.format", CKPT_FORMAT};
    if (opt) {
        all[nm++] = (StMeta){"msd.step", step};
        all[nm++] = (StMeta){"msd.nimg", nimg};
    }
    for (int i = 0; i < nmeta; i++) all[nm++] = meta[i];
    int rc = st_write(path, w, nt, all, nm, err, errlen);
    for (int i = 0; i < nt; i++) free(names[i]);
    free(names);
    free(w);
    free(all);
    for (int q = 0; q < nparts; q++)
        for (int s = 0; s < 4; s++) free(host[q][s]);
    return rc;
}

void checkpoint_meta_free(CheckpointMeta *m) {
    if (!m) return;
    for (int i = 0; i < m->n; i++) { free(m->kv[i].key); free(m->kv[i].value); }
    free(m->kv);
    memset(m, 0, sizeof *m);
}

const char *checkpoint_meta_get(const CheckpointMeta *m, const char *key) {
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->kv[i].key, key) == 0) return m->kv[i].value;
    return NULL;
}

/* Strict decimal parse of a non-negative integer / finite double from metadata. */
static int parse_i64(const char *s, int64_t *out) {
    if (!s || !*s || *s == '-' || *s == '+' || *s == ' ') return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}
static int parse_f64(const char *s, double *out) {
    if (!s || !*s || *s == ' ') return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !(v >= 0) || v > 1e300) return -1;
    *out = v;
    return 0;
}

int checkpoint_load(const char *path, ParamSet *ps, Optim *opt, CheckpointMeta *meta_out, char *err,
                    size_t errlen) {
    CkptPart part = {"", ps, opt};
    return checkpoint_load_parts(path, &part, 1, meta_out, err, errlen);
}

int checkpoint_load_parts(const char *path, const CkptPart *parts, int nparts, CheckpointMeta *meta_out, char *err,
                          size_t errlen) {
    MSD_CHECK(nparts >= 1 && nparts <= CKPT_PARTS_MAX);
    for (int q = 0; q < nparts; q++) {
        MSD_CHECK(parts[q].ps->data && parts[q].prefix && (q == 0 || parts[q].prefix[0]));
        MSD_CHECK(!parts[q].opt || parts[q].opt->ps == parts[q].ps);
    }
    Optim *opt = parts[0].opt;
    if (meta_out) memset(meta_out, 0, sizeof *meta_out);
    StFile f;
    if (st_read(&f, path, err, errlen)) return -1;
    unsigned char *used = msd_calloc((size_t)(f.n ? f.n : 1), 1);
    char e[512];
    int rc = 0;
    int64_t step = 0;
    double nimg = 0;
    if (opt) {
        const char *fmt = st_meta_get(&f, "msd.format");
        if (!fmt || strcmp(fmt, CKPT_FORMAT) != 0)
            rc = msd_errf(e, sizeof e, "not a training checkpoint (metadata msd.format is %s%s%s, want \"%s\")",
                          fmt ? "\"" : "", fmt ? fmt : "missing", fmt ? "\"" : "", CKPT_FORMAT);
        else if (parse_i64(st_meta_get(&f, "msd.step"), &step))
            rc = msd_errf(e, sizeof e, "metadata msd.step is missing or not a non-negative integer");
        else if (parse_f64(st_meta_get(&f, "msd.nimg"), &nimg))
            rc = msd_errf(e, sizeof e, "metadata msd.nimg is missing or not a non-negative number");
    }
    for (int q = 0; q < nparts && !rc; q++) {
        ParamSet *ps = parts[q].ps;
        Optim *po = parts[q].opt;
        const char *state[4] = {"", "opt.m.", "opt.v.", "ema."};
        float *slabs[4] = {ps->data, po ? po->m : NULL, po ? po->v : NULL, po ? po->ema : NULL};
        for (int s = 0; s < 4 && !rc; s++) {
            if (!slabs[s]) continue;
            char pre[160];
            snprintf(pre, sizeof pre, "%s%s", parts[q].prefix, state[s]);
            rc = st_load_slab(&f, ps, slabs[s], pre, used, e, sizeof e);
        }
        for (int i = 0; i < f.n && !rc; i++) {
            const char *name = f.t[i].name;
            if (!has_prefix(name, parts[q].prefix)) continue;
            name += strlen(parts[q].prefix);
            if (has_prefix(name, "ema.") && (!po || !po->ema)) used[i] = 1;
            if (has_prefix(name, "opt.") && !po) used[i] = 1;
        }
    }
    if (!rc) rc = st_check_unused(&f, used, e, sizeof e);
    if (!rc)
        for (int q = 0; q < nparts; q++)
            if (parts[q].opt) {
                parts[q].opt->step = step;
                parts[q].opt->nimg = nimg;
            }
    if (!rc && meta_out && f.nmeta) {
        meta_out->kv = msd_calloc((size_t)f.nmeta, sizeof *meta_out->kv);
        for (int i = 0; i < f.nmeta; i++) {
            meta_out->kv[i].key = msd_strdup(f.meta[i].key);
            meta_out->kv[i].value = msd_strdup(f.meta[i].value);
        }
        meta_out->n = f.nmeta;
    }
    if (rc) msd_errf(err, errlen, "%s: %s", path, e);
    free(used);
    st_free(&f);
    return rc;
}

void ckpt_settings_add(CkptSettings *s, const char *key, const char *fmt, ...) {
    MSD_CHECK(s->n < CKPT_SETTINGS_MAX);
    snprintf(s->key[s->n], sizeof s->key[s->n], "run.%s", key);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->value[s->n], sizeof s->value[s->n], fmt, ap);
    va_end(ap);
    s->n++;
}

int ckpt_settings_meta(const CkptSettings *s, StMeta *out, int cap) {
    MSD_CHECK(s->n <= cap);
    for (int i = 0; i < s->n; i++) out[i] = (StMeta){(char *)s->key[i], (char *)s->value[i]};
    return s->n;
}

int checkpoint_check_settings(const char *path, const CheckpointMeta *m, const CkptSettings *now, int allow_changed,
                              char *err, size_t errlen) {
    char diff[2048];
    size_t o = 0;
    int ndiff = 0, nrec = 0;
    diff[0] = 0;
    for (int i = 0; i < now->n; i++) {
        const char *was = checkpoint_meta_get(m, now->key[i]);
        if (!was) continue;
        nrec++;
        if (strcmp(was, now->value[i]) == 0) continue;
        ndiff++;
        if (o < sizeof diff)
            o += (size_t)snprintf(diff + o, sizeof diff - o, "%s%s %s in the checkpoint, %s now", ndiff > 1 ? "; " : "",
                                  now->key[i] + 4, was, now->value[i]);
    }
    if (!nrec && now->n) log_info("%s records no run settings (an older checkpoint): the settings are not compared", path);
    if (!ndiff) return 0;
    if (allow_changed) {
        log_warn("%s: resuming with changed settings (--allow-changed-settings): %s", path, diff);
        return 0;
    }
    return msd_errf(err, errlen,
                    "%s was written with other settings: %s. Resuming would mix two runs; use the checkpoint's "
                    "settings or another run folder, or resume anyway with --allow-changed-settings 1 (pipelines: "
                    "--set allow_changed_settings=1)", path, diff);
}
