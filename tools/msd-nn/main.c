/* msd-nn: run the denoiser networks (docs/UNET.md) outside the pipeline, on safetensors files,
 * so a checkpoint can be checked against another framework (tests/torch_unet.py does that).
 *
 *   msd-nn init    --config SPEC --seed S --out W.safetensors
 *   msd-nn forward --config SPEC --weights W.safetensors --inputs IN.safetensors
 *                  --out OUT.safetensors [--grad-out DOUT.safetensors] [--prefix P] [--threads T]
 *   msd-nn info    --config SPEC                   parameter names, shapes and count
 *   msd-nn compare GOT.safetensors WANT.safetensors [--atol-frac A] [--rtol R]
 *   msd-nn export  --weights CKPT.safetensors --out W.safetensors
 *
 * SPEC: a UNet CONFIG-SPEC ("fmnist-s", "tiny", "in=1,res=28,...") or an MLP one ("mlp,...").
 * forward: IN holds exactly x (N, C, H, W) (or (N, in) for the MLP), sigma (N, all > 0) and,
 * as the config needs, labels (N, integers) or cond (N, cond_dim). OUT gets out = D(x; sigma, c)
 * (EDM-preconditioned) and bottleneck. With --grad-out, the file DOUT holds dout (shape of x)
 * and optionally dbottleneck; OUT then also gets dx and grad.<param> for every parameter (the
 * gradients of sum(out * dout) + sum(bottleneck * dbottleneck)). Weights load strictly: every
 * parameter with its shape, nothing else (--prefix ema. loads an EMA copy and ignores the rest).
 * compare: every tensor of WANT must be in GOT with its shape, within
 * |got - want| <= atol_frac * max|want| + rtol |want| (defaults 1e-4, 1e-3); prints the worst.
 * export: a training checkpoint of an EDM UNet (procs/teacher/train.c) reduced to what serving
 * needs: its EMA weights (the raw ones when it has no EMA) under the plain parameter names, with
 * the network spec and where they came from (export.step, export.nimg, export.weights) as
 * metadata; msd-sample, the serving teacher and `msd-teacher --mode train --init` read it.
 * Exit status 0 on success, 1 on a failed run or comparison, 2 on a usage error. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "edmunet.h"
#include "edm.h"
#include "args.h"
#include "log.h"
#include "mlp.h"
#include "safetensors.h"
#include "unet.h"

static const char *synopsis =
    "msd-nn init --config SPEC --seed S --out W.safetensors\n"
    "       msd-nn forward --config SPEC --weights W.safetensors --inputs IN.safetensors --out OUT.safetensors\n"
    "                      [--grad-out DOUT.safetensors] [--prefix P] [--threads T]\n"
    "       msd-nn info --config SPEC\n"
    "       msd-nn compare GOT.safetensors WANT.safetensors [--atol-frac A] [--rtol R]\n"
    "       msd-nn export --weights CKPT.safetensors --out W.safetensors   (EMA weights of a UNet checkpoint)";
static const char *about = "SPEC: fmnist-s | tiny | key=value,... (docs/UNET.md) | mlp,key=value,...\noptions:\n";

/* One of the two networks behind a common face. */
typedef struct Model {
    UNet *unet;
    Mlp *mlp;
    ParamSet *ps;
    char spec[512];
    int64_t xshape[4];  /* per-sample shape of x: (C, H, W) or (in) */
    int xdims;
    int64_t bshape[3];
    int bdims;
} Model;

static int model_new(Model *m, const char *spec, BackendCtx *ctx, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    if (strncmp(spec, "mlp", 3) == 0 && (spec[3] == 0 || spec[3] == ',')) {
        MlpConfig c;
        if (mlp_config_parse(&c, spec, err, errlen) != 0) return -1;
        m->mlp = mlp_new(&c, &backend_cpu, ctx);
        m->ps = mlp_params(m->mlp);
        mlp_config_str(&c, m->spec, sizeof m->spec);
        m->xdims = 1;
        m->xshape[0] = c.in_dim;
        m->bdims = 1;
        m->bshape[0] = c.width;
    } else {
        UNetConfig c;
        if (unet_config_parse(&c, spec, err, errlen) != 0) return -1;
        m->unet = unet_new(&c, &backend_cpu, ctx);
        m->ps = unet_params(m->unet);
        unet_config_str(&c, m->spec, sizeof m->spec);
        m->xdims = 3;
        m->xshape[0] = c.in_ch;
        m->xshape[1] = m->xshape[2] = c.res;
        m->bdims = 3;
        unet_bottleneck_shape(m->unet, m->bshape);
    }
    return 0;
}

static void model_destroy(Model *m) {
    unet_destroy(&m->unet);
    mlp_destroy(&m->mlp);
}

static EdmNet model_net(Model *m, int64_t N, int backward) {
    if (m->unet) {
        if (backward) unet_alloc_batch(m->unet, N);
        else unet_alloc_batch_inference(m->unet, N);
        return unet_edm_net(m->unet);
    }
    mlp_alloc_batch(m->mlp, N);
    return mlp_edm_net(m->mlp);
}

/* ---- argument parsing ---- */

typedef struct Args {
    const char *config, *weights, *inputs, *out, *grad, *prefix, *got, *want;
    uint64_t seed;         /* UINT64_MAX: not given */
    int threads;
    double atol, rtol;
} Args;

static Args opt = {.seed = UINT64_MAX, .atol = 1e-4, .rtol = 1e-3};

static const ArgSpec args[] = {
    ARG_STR("--config", &opt.config, "SPEC", "the network (init, forward, info)"),
    ARG_STR("--weights", &opt.weights, "FILE", "weights (forward) or a UNet checkpoint (export)"),
    ARG_STR("--inputs", &opt.inputs, "FILE", "forward: the inputs"),
    ARG_STR("--out", &opt.out, "FILE", "what init, forward or export writes"),
    ARG_STR("--grad-out", &opt.grad, "FILE", "forward: gradients of the outputs, for a backward pass"),
    ARG_STR("--prefix", &opt.prefix, "P", "forward: prefix of the tensor names"),
    ARG_U64("--seed", &opt.seed, "S", "init: seed of the weights"),
    ARG_INT("--threads", &opt.threads, 0, 256, "T", "CPU threads (default: $MSD_THREADS, else all cores)"),
    ARG_DOUBLE("--atol-frac", &opt.atol, 0, 1e300, "A", "compare: |d| <= A max|want| + R |want| (default 1e-4)"),
    ARG_DOUBLE("--rtol", &opt.rtol, 0, 1e300, "R", "compare (default 1e-3)"),
    ARG_POS(&opt.got, "GOT", "compare: the file checked"),
    ARG_POS(&opt.want, "WANT", "compare: the reference"),
    ARG_END_,
};

static int need(const char *v, const char *opt) { return v ? 0 : msd_fail(-1, "missing %s", opt); }

/* ---- reading inputs (untrusted) ---- */

static int shape_is(const StTensor *t, int ndim, const int64_t *shape) {
    if (t->ndim != ndim) return 0;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i]) return 0;
    return 1;
}

static const char *tshape(const StTensor *t, char *buf, size_t len) { return shape_str(t->ndim, t->shape, buf, len); }

/* Every tensor of f must be one of names (NULL-terminated). */
static int only_these(const StFile *f, const char *path, const char *const *names, char *err, size_t errlen) {
    for (int i = 0; i < f->n; i++) {
        int ok = 0;
        for (int k = 0; names[k]; k++) ok |= !strcmp(f->t[i].name, names[k]);
        if (!ok) return msd_errf(err, errlen, "%s: unexpected tensor '%s'", path, f->t[i].name);
    }
    return 0;
}

static float *tensor_f32(const StTensor *t) {
    float *p = msd_malloc((size_t)(t->numel ? t->numel : 1) * sizeof(float));
    st_tensor_to_f32(t, p);
    return p;
}

typedef struct Inputs {
    int64_t N;
    float *x, *sigma, *cond;
    int32_t *labels;
} Inputs;

static void inputs_free(Inputs *in) {
    free(in->x);
    free(in->sigma);
    free(in->cond);
    free(in->labels);
    memset(in, 0, sizeof *in);
}

static int read_inputs(const char *path, const Model *m, const EdmNet *proto, Inputs *in, char *err, size_t errlen) {
    StFile f;
    char sbuf[96], wbuf[96];
    memset(in, 0, sizeof *in);
    if (st_read(&f, path, err, errlen) != 0) return -1;
    int rc = -1;
    const char *names[] = {"x", "sigma", proto->label_dim ? "labels" : proto->cond_dim ? "cond" : NULL, NULL};
    if (only_these(&f, path, names, err, errlen) != 0) goto out;
    const StTensor *tx = st_find(&f, "x"), *ts = st_find(&f, "sigma");
    if (!tx || !ts) { msd_errf(err, errlen, "%s: needs tensors x and sigma", path); goto out; }
    if (tx->ndim < 1 || tx->shape[0] < 1) { msd_errf(err, errlen, "%s: x must have a batch dimension >= 1", path); goto out; }
    int64_t N = tx->shape[0], want[5] = {N, m->xshape[0], m->xshape[1], m->xshape[2], 0};
    if (!shape_is(tx, 1 + m->xdims, want)) {
        msd_errf(err, errlen, "%s: x has shape %s, the config wants %s", path, tshape(tx, sbuf, sizeof sbuf),
                 shape_str(1 + m->xdims, want, wbuf, sizeof wbuf));
        goto out;
    }
    if (!shape_is(ts, 1, &N)) {
        msd_errf(err, errlen, "%s: sigma has shape %s, want (%lld)", path, tshape(ts, sbuf, sizeof sbuf), (long long)N);
        goto out;
    }
    in->N = N;
    in->x = tensor_f32(tx);
    in->sigma = tensor_f32(ts);
    for (int64_t n = 0; n < N; n++)
        if (!(isfinite(in->sigma[n]) && in->sigma[n] > 0)) {
            msd_errf(err, errlen, "%s: sigma[%lld] = %g, must be finite and > 0", path, (long long)n, (double)in->sigma[n]);
            goto out;
        }
    if (proto->label_dim) {
        const StTensor *tl = st_find(&f, "labels");
        if (!tl) { msd_errf(err, errlen, "%s: the config has %d classes: needs tensor labels (N)", path, proto->label_dim); goto out; }
        if (!shape_is(tl, 1, &N)) {
            msd_errf(err, errlen, "%s: labels has shape %s, want (%lld)", path, tshape(tl, sbuf, sizeof sbuf), (long long)N);
            goto out;
        }
        float *lf = tensor_f32(tl);
        in->labels = msd_malloc((size_t)N * sizeof(int32_t));
        for (int64_t n = 0; n < N; n++) {
            if (!(lf[n] >= 0 && lf[n] < proto->label_dim && lf[n] == floorf(lf[n]))) {
                msd_errf(err, errlen, "%s: labels[%lld] = %g is not a class in [0, %d)", path, (long long)n, (double)lf[n],
                         proto->label_dim);
                free(lf);
                goto out;
            }
            in->labels[n] = (int32_t)lf[n];
        }
        free(lf);
    } else if (proto->cond_dim) {
        const StTensor *tc = st_find(&f, "cond");
        int64_t cs[2] = {N, proto->cond_dim};
        if (!tc || !shape_is(tc, 2, cs)) {
            msd_errf(err, errlen, "%s: needs tensor cond of shape (%lld, %d)", path, (long long)N, proto->cond_dim);
            goto out;
        }
        in->cond = tensor_f32(tc);
        for (int64_t i = 0; i < tc->numel; i++)
            if (!isfinite(in->cond[i])) { msd_errf(err, errlen, "%s: cond has a non-finite value", path); goto out; }
    }
    for (int64_t i = 0; i < tx->numel; i++)
        if (!isfinite(in->x[i])) { msd_errf(err, errlen, "%s: x[%lld] is not finite", path, (long long)i); goto out; }
    rc = 0;
out:
    if (rc != 0) inputs_free(in);
    st_free(&f);
    return rc;
}

/* dout (shape of x) and optionally dbottleneck. */
static int read_grads(const char *path, const Model *m, int64_t N, float **dout, float **dbott, char *err,
                      size_t errlen) {
    StFile f;
    char sbuf[96], wbuf[96];
    *dout = *dbott = NULL;
    if (st_read(&f, path, err, errlen) != 0) return -1;
    int rc = -1;
    const char *names[] = {"dout", "dbottleneck", NULL};
    if (only_these(&f, path, names, err, errlen) != 0) goto out;
    const StTensor *td = st_find(&f, "dout"), *tb = st_find(&f, "dbottleneck");
    int64_t xs[4] = {N, m->xshape[0], m->xshape[1], m->xshape[2]};
    int64_t bs[4] = {N, m->bshape[0], m->bshape[1], m->bshape[2]};
    if (!td) { msd_errf(err, errlen, "%s: needs tensor dout", path); goto out; }
    if (!shape_is(td, 1 + m->xdims, xs)) {
        msd_errf(err, errlen, "%s: dout has shape %s, want %s", path, tshape(td, sbuf, sizeof sbuf),
                 shape_str(1 + m->xdims, xs, wbuf, sizeof wbuf));
        goto out;
    }
    if (tb && !shape_is(tb, 1 + m->bdims, bs)) {
        msd_errf(err, errlen, "%s: dbottleneck has shape %s, want %s", path, tshape(tb, sbuf, sizeof sbuf),
                 shape_str(1 + m->bdims, bs, wbuf, sizeof wbuf));
        goto out;
    }
    *dout = tensor_f32(td);
    if (tb) *dbott = tensor_f32(tb);
    rc = 0;
out:
    st_free(&f);
    return rc;
}

/* ---- commands ---- */

static int cmd_init(const Args *a, BackendCtx *ctx) {
    if (need(a->config, "--config") || need(a->out, "--out") ||
        need(a->seed == UINT64_MAX ? NULL : "", "--seed"))
        return 2;
    uint64_t seed = a->seed;
    char err[512];
    Model m;
    if (model_new(&m, a->config, ctx, err, sizeof err) != 0) return msd_fail(2, "%s", err);
    if (m.unet) unet_init(m.unet, seed);
    else mlp_init(m.mlp, seed);
    StMeta meta[1] = {{"config", m.spec}};
    int rc = st_save_params(a->out, m.ps, "", meta, 1, err, sizeof err);
    if (rc != 0) log_error("%s", err);
    else {
        int64_t count = 0;
        for (int i = 0; i < m.ps->n; i++) count += m.ps->p[i].numel;
        printf("%s: %d tensors, %lld parameters (%s)\n", a->out, m.ps->n, (long long)count, m.spec);
    }
    model_destroy(&m);
    return rc ? 1 : 0;
}

static int cmd_info(const Args *a, BackendCtx *ctx) {
    if (need(a->config, "--config")) return 2;
    char err[512], sbuf[96];
    Model m;
    if (model_new(&m, a->config, ctx, err, sizeof err) != 0) return msd_fail(2, "%s", err);
    int64_t count = 0;
    for (int i = 0; i < m.ps->n; i++) {
        printf("%s %s\n", m.ps->p[i].name, shape_str(m.ps->p[i].ndim, m.ps->p[i].shape, sbuf, sizeof sbuf));
        count += m.ps->p[i].numel;
    }
    printf("# %s: %d tensors, %lld parameters", m.spec, m.ps->n, (long long)count);
    if (m.unet) {
        double f = unet_forward_flops(unet_config(m.unet));
        printf(", %.4f GFLOP per image forward (%.0f FLOP)", f * 1e-9, f);
    }
    printf("\n");
    model_destroy(&m);
    return 0;
}

static int cmd_forward(const Args *a, BackendCtx *ctx) {
    if (need(a->config, "--config") || need(a->weights, "--weights") || need(a->inputs, "--inputs") ||
        need(a->out, "--out"))
        return 2;
    char err[512];
    Model m;
    if (model_new(&m, a->config, ctx, err, sizeof err) != 0) return msd_fail(2, "%s", err);
    int rc = 1;
    Inputs in = {0};
    float *dout = NULL, *dbott = NULL, *out = NULL, *dx = NULL, *bott = NULL;
    Edm e = {0};
    const char *prefix = a->prefix ? a->prefix : "";
    if (st_load_params(a->weights, m.ps, prefix, a->prefix ? ST_ALLOW_EXTRA : 0, err, sizeof err) != 0) goto fail;
    EdmNet proto = m.unet ? unet_edm_net(m.unet) : mlp_edm_net(m.mlp);
    if (read_inputs(a->inputs, &m, &proto, &in, err, sizeof err) != 0) goto fail;
    if (a->grad && read_grads(a->grad, &m, in.N, &dout, &dbott, err, sizeof err) != 0) goto fail;
    int64_t N = in.N;
    EdmNet net = model_net(&m, N, dout != NULL);
    edm_init(&e, net, N, &backend_cpu, ctx);
    out = msd_calloc((size_t)(N * net.dim), sizeof(float));
    edm_forward(&e, out, in.x, in.sigma, in.labels, in.cond, N, 0);
    int64_t nb = N * net.bottleneck_dim;
    bott = msd_malloc((size_t)nb * sizeof(float));
    memcpy(bott, net.bottleneck(net.self), (size_t)nb * sizeof(float));
    if (dout) {
        dx = msd_calloc((size_t)(N * net.dim), sizeof(float));
        params_zero_grad(m.ps);
        edm_backward(&e, dx, dout, dbott, N);
    }
    /* output file: out, bottleneck, and with gradients dx and grad.<param> */
    int nt = 2 + (dout ? 1 + m.ps->n : 0);
    StWriteTensor *wt = msd_calloc((size_t)nt, sizeof *wt);
    char (*names)[PARAM_MAX_NAME + 8] = msd_calloc((size_t)(m.ps->n ? m.ps->n : 1), sizeof *names);
    int64_t xs[4] = {N, m.xshape[0], m.xshape[1], m.xshape[2]}, bs[4] = {N, m.bshape[0], m.bshape[1], m.bshape[2]};
    wt[0] = (StWriteTensor){"out", ST_F32, 1 + m.xdims, xs, out};
    wt[1] = (StWriteTensor){"bottleneck", ST_F32, 1 + m.bdims, bs, bott};
    if (dout) {
        wt[2] = (StWriteTensor){"dx", ST_F32, 1 + m.xdims, xs, dx};
        for (int i = 0; i < m.ps->n; i++) {
            snprintf(names[i], sizeof names[i], "grad.%s", m.ps->p[i].name);
            wt[3 + i] = (StWriteTensor){names[i], ST_F32, m.ps->p[i].ndim, m.ps->p[i].shape, params_grad(m.ps, i)};
        }
    }
    StMeta meta[1] = {{"config", m.spec}};
    int wrc = st_write(a->out, wt, nt, meta, 1, err, sizeof err);
    free(wt);
    free(names);
    if (wrc != 0) goto fail;
    printf("%s: out (%lld samples)%s\n", a->out, (long long)N, dout ? ", dx and parameter gradients" : "");
    rc = 0;
    goto done;
fail:
    log_error("%s", err);
done:
    edm_free(&e);
    inputs_free(&in);
    free(dout); free(dbott); free(out); free(dx); free(bott);
    model_destroy(&m);
    return rc;
}

static int cmd_compare(const Args *a) {
    if (!a->want) return msd_fail(2, "compare needs GOT and WANT files");
    double atol_frac = a->atol, rtol = a->rtol;
    char err[512], s1[96], s2[96];
    StFile got, want;
    if (st_read(&got, a->got, err, sizeof err) != 0) return msd_fail(1, "%s", err);
    if (st_read(&want, a->want, err, sizeof err) != 0) {
        log_error("%s", err);
        st_free(&got);
        return 1;
    }
    int bad = 0;
    double worst = 0;
    char worst_what[400] = "none";
    for (int i = 0; i < want.n; i++) {
        const StTensor *w = &want.t[i], *g = st_find(&got, w->name);
        if (!g || !shape_is(g, w->ndim, w->shape)) {
            printf("FAIL %s: %s in %s, %s wanted\n", w->name, g ? tshape(g, s1, sizeof s1) : "missing", a->got,
                   tshape(w, s2, sizeof s2));
            bad++;
            continue;
        }
        float *gv = tensor_f32(g), *wv = tensor_f32(w);
        double m = 0;
        for (int64_t k = 0; k < w->numel; k++) m = fabs(wv[k]) > m ? fabs(wv[k]) : m;
        int64_t nbad = 0;
        for (int64_t k = 0; k < w->numel; k++) {
            double d = fabs((double)gv[k] - wv[k]), lim = atol_frac * m + rtol * fabs(wv[k]);
            double rel = d / (m > 0 ? m : 1);
            if (!(d <= lim)) nbad++;
            if (rel > worst || isnan(d)) {
                worst = isnan(d) ? INFINITY : rel;
                snprintf(worst_what, sizeof worst_what, "%s[%lld]: got %.9g want %.9g", w->name, (long long)k,
                         (double)gv[k], (double)wv[k]);
            }
        }
        if (nbad) {
            printf("FAIL %s: %lld of %lld elements outside |d| <= %g max|want| + %g |want|\n", w->name, (long long)nbad,
                   (long long)w->numel, atol_frac, rtol);
            bad++;
        }
        free(gv);
        free(wv);
    }
    printf("compare: %d tensors, %d failed; worst |diff|/max|want| = %.3g at %s\n", want.n, bad, worst, worst_what);
    st_free(&got);
    st_free(&want);
    return bad ? 1 : 0;
}

static int cmd_export(const Args *a, BackendCtx *ctx) {
    if (need(a->weights, "--weights") || need(a->out, "--out")) return 2;
    char err[512];
    StFile f;
    if (st_read(&f, a->weights, err, sizeof err)) return msd_fail(1, "%s", err);
    char step[32], nimg[48];
    const char *v = st_meta_get(&f, "msd.step");
    snprintf(step, sizeof step, "%s", v ? v : "unknown");
    v = st_meta_get(&f, "msd.nimg");
    snprintf(nimg, sizeof nimg, "%s", v ? v : "unknown");
    int has_ema = 0;
    for (int i = 0; i < f.n && !has_ema; i++) has_ema = !strncmp(f.t[i].name, "ema.", 4);
    st_free(&f);
    EdmUNet t;
    if (edmunet_open(&t, a->weights, NULL, &backend_cpu, ctx, 1, err, sizeof err)) return msd_fail(1, "%s", err);
    StMeta meta[3] = {{"export.step", step}, {"export.nimg", nimg}, {"export.weights", has_ema ? "ema" : "raw"}};
    int rc = edmunet_save(&t, a->out, meta, 3, err, sizeof err);
    if (rc) log_error("%s", err);
    else
        printf("%s: the %s weights of %s (%s, step %s, %s images), %lld parameters\n", a->out, has_ema ? "EMA" : "raw",
               a->weights, t.spec, step, nimg, (long long)params_count(unet_params(t.unet)));
    edmunet_free(&t);
    return rc ? 1 : 0;
}

int main(int argc, char **argv) {
    log_set_name("msd-nn");
    if (argc < 2) return msd_fail(2, "needs a command: init, forward, info, compare or export; usage: %s", synopsis);
    int first = argv[1][0] == '-' ? 1 : 2; /* "msd-nn --help" */
    if (args_tool(argc, argv, first, synopsis, about, args)) return 2;
    if (first == 1) return msd_fail(2, "needs a command before its options (try --help)");
    const Args a = opt;
    const char *cmd = argv[1];
    if (!strcmp(cmd, "compare")) return cmd_compare(&a);
    if (strcmp(cmd, "init") && strcmp(cmd, "forward") && strcmp(cmd, "info") && strcmp(cmd, "export"))
        return msd_fail(2, "unknown command '%s' (try --help)", cmd);
    if (a.got) return msd_fail(2, "unexpected argument '%s'", a.got);
    BackendCtx *ctx = backend_ctx_new(&backend_cpu, a.threads);
    int rc = !strcmp(cmd, "init")     ? cmd_init(&a, ctx)
             : !strcmp(cmd, "info")   ? cmd_info(&a, ctx)
             : !strcmp(cmd, "export") ? cmd_export(&a, ctx)
                                      : cmd_forward(&a, ctx);
    backend_ctx_destroy(&ctx);
    return rc;
}
