/* train.c: msd-teacher --mode train, stage 0: trains the class-conditional EDM UNet teacher
 * (docs/ALGORITHMS.md section 1) on batches from the data process (--connect data=...).
 *
 * One step s: BATCH {"count" B, "step" s} from data (the next batch is requested before this
 * step computes, so data and compute overlap); the EDM loss with ln sigma ~ N(-1.2, 1.2^2)
 * and the noise drawn by edm_loss_step keyed by (--seed, s); backward; AdamW with linear
 * warm-up, gradient clipping and an EMA of the weights in EDM's half-life form (--ema-halflife-
 * kimg, ramp-up 0.05). Every --ckpt-every steps, at the end and on STOP/SIGTERM the run is
 * checkpointed atomically (weights, EMA, AdamW moments, step, images seen); a restart with the
 * same --ckpt resumes at the checkpoint's step and, since the data and the noise are keyed by
 * step, computes exactly the losses an uninterrupted run computes. --init FILE starts a new run
 * (no checkpoint yet) from FILE's weights (its EMA weights when it has them) instead of random
 * ones: a committed teacher (msd-nn export) trains on with fresh optimiser state. Progress lines, JSON-lines
 * metrics (--metrics) and, every --grid-every steps, a PNG grid of EMA samples of every class
 * (Heun, --grid-steps). A step longer than a heartbeat period runs under proc_keepalive.
 *
 * Not here: learning-rate decay (EDM trains at a constant rate after the warm-up), data
 * augmentation, mixed precision. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "args.h"
#include "edmunet.h"
#include "fsutil.h"
#include "image.h"
#include "log.h"
#include "rpc.h"
#include "serve.h"
#include "teacher.h"

#define GRID_MAX_ROWS 32

typedef struct TrainOpts {
    const char *spec, *ckpt, *init, *metrics, *grid_dir;
    long steps;
    int batch, warmup, ckpt_every, log_every, grid_every, grid_steps, grid_per_class, threads, timeout_ms, allow_changed;
    float lr, weight_decay, grad_clip, ema_kimg, ema_rampup;
    uint64_t seed;
} TrainOpts;

typedef struct Trainer {
    Proc *p;
    TrainOpts o;
    Rpc rpc;
    void *data;
    const Backend *be;
    BackendCtx *ctx;
    EdmUNet net;           /* trained */
    EdmUNet ema;           /* the EMA weights, for the grids (inference buffers) */
    int ema_ready;
    char grid_dir[4096];
    float *hx, *dx0;       /* host and device (B, dim) */
    int32_t *hy;
    uint64_t pending_id;   /* the BATCH request in flight, 0: none */
    int64_t pending_step;
    FILE *metrics;
    CkptSettings settings; /* recorded in the checkpoint, compared on resume */
    Busy busy;
} Trainer;

static TrainOpts opt = {.spec = "fmnist-s", .steps = 100000, .batch = 128, .warmup = 1000, .ckpt_every = 1000,
                        .log_every = 50, .grid_every = 5000, .grid_steps = 18, .grid_per_class = 10,
                        .timeout_ms = 60000, .lr = 2e-4f, .grad_clip = 1.0f, .ema_kimg = 50.0f, .ema_rampup = 0.05f,
                        .seed = 1};

const ArgSpec teacher_train_args[] = {
    ARG_STR_REQ("--ckpt", &opt.ckpt, "FILE", "checkpoint: written every --ckpt-every steps, at the end and on STOP;\n"
                "a run resumes from it when it exists"),
    ARG_INT("--allow-changed-settings", &opt.allow_changed, 0, 1, "0|1", "1: resume even when --ckpt was written with\n"
            "other settings (seed, batch, lr, warm-up, ...; default 0: refuse)"),
    ARG_STR("--init", &opt.init, "FILE", "a new run starts from FILE's (EMA) weights, not random ones; fresh\n"
            "AdamW moments and warm-up; ignored when --ckpt exists (none: off)"),
    ARG_STR("--net", &opt.spec, "SPEC", "UNet CONFIG-SPEC (default fmnist-s; docs/UNET.md)"),
    ARG_LONG("--steps", &opt.steps, 0, 1000000000L, "N", "training steps in all (default 100000)"),
    ARG_INT("--batch", &opt.batch, 1, 1 << 16, "B", "images per step (default 128)"),
    ARG_FLOAT("--lr", &opt.lr, 0, 1, "LR", "AdamW peak learning rate (default 2e-4)"),
    ARG_INT("--warmup", &opt.warmup, 0, 1 << 30, "N", "linear warm-up steps (default 1000)"),
    ARG_FLOAT("--weight-decay", &opt.weight_decay, 0, 1, "W", "AdamW decoupled weight decay (default 0)"),
    ARG_FLOAT("--grad-clip", &opt.grad_clip, 0, 1e9, "C", "global gradient-norm clip, 0: none (default 1)"),
    ARG_FLOAT("--ema-halflife-kimg", &opt.ema_kimg, 1e-6, 1e9, "H", "EMA half-life in thousands of images (default 50)"),
    ARG_FLOAT("--ema-rampup", &opt.ema_rampup, 0, 1, "R", "EMA ramp-up ratio: half-life <= R * images seen\n"
              "(default 0.05; 0: off)"),
    ARG_U64("--seed", &opt.seed, "S", "seed of the initial weights and the noise (default 1)"),
    ARG_INT("--ckpt-every", &opt.ckpt_every, 0, 1 << 30, "N", "steps between checkpoints (default 1000; 0: only at the end)"),
    ARG_INT("--log-every", &opt.log_every, 1, 1 << 30, "N", "steps between progress lines and metrics (default 50)"),
    ARG_STR("--metrics", &opt.metrics, "FILE", "JSON lines: step, loss, grad_norm, lr, nimg, images_per_s, ..."),
    ARG_INT("--grid-every", &opt.grid_every, 0, 1 << 30, "N", "steps between sample grids (default 5000; 0: only at the end)"),
    ARG_STR("--grid-dir", &opt.grid_dir, "DIR", "where grid-STEP.png go (default: the checkpoint's folder/grids)"),
    ARG_INT("--grid-steps", &opt.grid_steps, 1, 1000, "N", "Heun steps of the grid sampler (default 18, NFE 35)"),
    ARG_INT("--grid-per-class", &opt.grid_per_class, 1, 64, "N", "images per class (a grid row; default 10)"),
    ARG_INT("--threads", &opt.threads, 0, 1024, "T", "CPU threads (default: $MSD_THREADS, else all cores)"),
    ARG_INT("--timeout-ms", &opt.timeout_ms, 1, 86400000, "MS", "how long to wait for a batch (default 60000)"),
    ARG_END_,
};

/* ---- data ---- */

static int batch_send(Trainer *t, int64_t step) {
    int32_t count = t->o.batch;
    int64_t one = 1;
    WireMsg req;
    t->pending_id = rpc_id(&t->rpc);
    t->pending_step = step;
    wire_msg_init(&req, WIRE_OP_BATCH, t->pending_id);
    wire_msg_add(&req, "count", WIRE_I32, 1, &one, &count);
    wire_msg_add(&req, "step", WIRE_I64, 1, &one, &step);
    return rpc_send(&t->rpc, t->data, "data", &req);
}

/* The batch of the request in flight into hx, hy (checked against the network). */
static int batch_recv(Trainer *t) {
    WireMsg rep;
    const char *peer = "data";
    uint32_t op = WIRE_OP_BATCH;
    uint64_t id = t->pending_id;
    t->pending_id = 0;
    if (rpc_await(&t->rpc, 1, &t->data, &peer, &id, &op, &rep)) return -1;
    const UNetConfig *c = &t->net.cfg;
    int64_t xshape[4] = {t->o.batch, c->in_ch, c->res, c->res}; /* what the network needs */
    const WireTensor *x = rpc_tensor_shape(&t->rpc, &rep, "data", "x", WIRE_F32, 4, xshape);
    const WireTensor *l = !x ? NULL
                          : c->label_dim > 0 ? rpc_labels(&t->rpc, &rep, "data", "label", t->o.batch, c->label_dim)
                                             : rpc_tensor_shape(&t->rpc, &rep, "data", "label", WIRE_I32, 1, xshape);
    int ok = l != NULL;
    if (ok) {
        memcpy(t->hx, x->data, x->nbytes);
        memcpy(t->hy, l->data, sizeof(int32_t) * (size_t)t->o.batch);
    }
    wire_msg_close(&rep);
    return ok ? 0 : -1;
}

/* ---- checkpoints and grids ---- */

static int train_checkpoint(Trainer *t) {
    char err[1024], b[32], s[32];
    snprintf(b, sizeof b, "%d", t->o.batch);
    snprintf(s, sizeof s, "%llu", (unsigned long long)t->o.seed);
    StMeta meta[3 + CKPT_SETTINGS_MAX] = {{"teacher.batch", b}, {"teacher.seed", s}, {"teacher.role", "teacher"}};
    int nmeta = 3 + ckpt_settings_meta(&t->settings, meta + 3, CKPT_SETTINGS_MAX);
    double t0 = msd_now();
    /* heartbeats go on while the file is written: a slow disk must not look like a dead teacher */
    proc_keepalive_begin(t->p);
    int rc = edmunet_save(&t->net, t->o.ckpt, meta, nmeta, err, sizeof err);
    proc_keepalive_end(t->p);
    if (rc) {
        snprintf(t->rpc.err, sizeof t->rpc.err, "checkpoint: %s", err);
        return -1;
    }
    log_info("checkpoint %s at step %lld (%.2f s)", t->o.ckpt, (long long)t->net.opt->step, msd_now() - t0);
    return 0;
}

/* A grid of EMA samples: one row of --grid-per-class images per class (at most 32 classes), or
 * a square of them for an unconditional net; the same noise every time. */
static int train_grid(Trainer *t) {
    const UNetConfig *c = &t->net.cfg;
    int per = t->o.grid_per_class, rows = c->label_dim > 0 ? c->label_dim : per;
    if (rows > GRID_MAX_ROWS) rows = GRID_MAX_ROWS;
    int64_t n = (int64_t)rows * per;
    char err[1024];
    double t0 = msd_now();
    proc_keepalive_begin(t->p);   /* building the EMA net's buffers can outlast a heartbeat too */
    if (!t->ema_ready) {
        if (edmunet_new(&t->ema, t->net.spec, t->be, t->ctx, n, NULL, 0, err, sizeof err))
            msd_die("the EMA network: %s", err);   /* the same spec built the trained one: a bug */
        t->ema_ready = 1;
    }
    ParamSet *ps = unet_params(t->net.unet);
    t->be->copy(t->ctx, unet_params(t->ema.unet)->data, t->net.opt->ema, ps->total);
    int32_t *labels = c->label_dim > 0 ? msd_malloc(sizeof(int32_t) * (size_t)n) : NULL;
    for (int64_t i = 0; labels && i < n; i++) labels[i] = (int32_t)(i / per);
    float *x = msd_malloc(sizeof(float) * (size_t)(n * t->net.dim));
    SamplerConfig sc;
    sampler_config_default(&sc);
    sc.steps = t->o.grid_steps;
    edmunet_sample(&t->ema, &sc, x, labels, n, t->o.seed, 0);
    char path[4200];
    snprintf(path, sizeof path, "%s/grid-%07lld.png", t->grid_dir, (long long)t->net.opt->step);
    int rc = image_write_grid(path, x, n, c->in_ch, c->res, c->res, per, err, sizeof err);
    proc_keepalive_end(t->p);
    if (rc) snprintf(t->rpc.err, sizeof t->rpc.err, "grid: %s", err);
    else log_info("grid %s: %lld EMA samples, %d Heun steps (%.1f s)", path, (long long)n, sc.steps, msd_now() - t0);
    free(labels);
    free(x);
    return rc;
}

/* A metadata pair added to a loaded checkpoint's (an older file's key under today's name). */
static void meta_add(CheckpointMeta *m, const char *key, const char *value) {
    StMeta *kv = msd_calloc((size_t)m->n + 1, sizeof *kv);
    if (m->n) memcpy(kv, m->kv, sizeof *kv * (size_t)m->n);
    free(m->kv);
    m->kv = kv;
    m->kv[m->n].key = msd_strdup(key);
    m->kv[m->n].value = msd_strdup(value);
    m->n++;
}

/* ---- the loop ---- */

static void format_eta(double s, char *buf, size_t len) {
    if (!(s < 1e9)) { snprintf(buf, len, "?"); return; }
    long v = (long)(s + 0.5);
    snprintf(buf, len, "%ld:%02ld:%02ld", v / 3600, v / 60 % 60, v % 60);
}

/* batch_recv failed: when the process is stopping (STOP, a signal, a silent launcher arrived
 * while it waited for the batch), the steps done so far are checkpointed as after a step and
 * the run ends cleanly (1); anything else is a failure (-1). */
static int train_stopped_waiting(Trainer *t) {
    if (!proc_should_stop(t->p)) return -1;
    if (train_checkpoint(t)) return -1;
    log_info("stopping at step %lld of %ld (checkpointed)", (long long)t->net.opt->step, t->o.steps);
    return 1;
}

static int train_loop(Trainer *t) {
    Optim *opt = t->net.opt;
    const TrainOpts *o = &t->o;
    int64_t start = opt->step, B = o->batch, D = t->net.dim;
    if (start >= o->steps) {
        log_info("the checkpoint is at step %lld of %ld: nothing to train", (long long)start, o->steps);
        return start == 0 ? train_checkpoint(t) : 0;
    }
    if (start > 0) log_info("resuming at step %lld of %ld", (long long)start, o->steps);
    double loss_sum = 0, win_time = 0;
    int loss_n = 0, nonfinite = 0;
    int64_t win_steps = 0;
    double t_run = msd_now();
    if (batch_send(t, start)) return -1;
    for (int64_t step = start; step < o->steps; step++) {
        double t0 = msd_now();
        if (batch_recv(t)) return train_stopped_waiting(t);
        if (step + 1 < o->steps && batch_send(t, step + 1)) return -1;
        busy_begin(&t->busy);
        proc_keepalive_begin(t->p);
        t->be->upload(t->ctx, t->dx0, t->hx, B * D);
        params_zero_grad(unet_params(t->net.unet));
        float loss = edm_loss_step(&t->net.edm, t->dx0, t->net.cfg.label_dim > 0 ? t->hy : NULL, NULL, B, o->seed,
                                   step, 1);
        edm_loss_backward(&t->net.edm, B);
        float gn = optim_step(opt);
        proc_keepalive_end(t->p);
        busy_end(&t->busy);
        win_time += msd_now() - t0;
        win_steps++;
        if (!isfinite(loss) || !isfinite(gn)) {
            if (nonfinite++ < 10) log_warn("step %lld: loss %g, gradient norm %g: the update was skipped", (long long)step, loss, gn);
            if (opt->step == step) opt->step = step + 1; /* keep step = data step; nothing else changed */
        } else {
            loss_sum += loss;
            loss_n++;
        }
        int64_t done = step + 1;
        if (done % o->log_every == 0 || done == o->steps) {
            double rate = (double)(win_steps * B) / (win_time > 0 ? win_time : 1e-9);
            double eta = (double)(o->steps - done) * B / (rate > 0 ? rate : 1e-9);
            double mean = loss_n ? loss_sum / loss_n : NAN;
            char eta_s[32];
            format_eta(eta, eta_s, sizeof eta_s);
            log_info("step %lld/%ld  loss %.5f  grad_norm %.3g  lr %.3g  %.1f img/s  %s left", (long long)done, o->steps,
                     mean, opt->last_grad_norm, opt->last_lr, rate, eta_s);
            if (t->metrics) {
                fprintf(t->metrics,
                        "{\"step\": %lld, \"loss\": %.9g, \"grad_norm\": %.9g, \"lr\": %.6g, \"nimg\": %.0f, "
                        "\"images_per_s\": %.2f, \"elapsed_s\": %.3f, \"eta_s\": %.1f}\n",
                        (long long)done, mean, opt->last_grad_norm, opt->last_lr, opt->nimg, rate, msd_now() - t_run, eta);
                fflush(t->metrics);
            }
            loss_sum = 0;
            loss_n = 0;
            win_time = 0;
            win_steps = 0;
        }
        int stop = proc_should_stop(t->p);
        if ((o->ckpt_every > 0 && done % o->ckpt_every == 0) || done == o->steps || stop)
            if (train_checkpoint(t)) return -1;
        if ((o->grid_every > 0 && done % o->grid_every == 0) || done == o->steps)
            if (train_grid(t)) return -1;
        if (stop) {
            log_info("stopping at step %lld of %ld (checkpointed)", (long long)done, o->steps);
            return 1;
        }
    }
    return 0;
}

int teacher_train(Proc *p) {
    Trainer t;
    memset(&t, 0, sizeof t);
    t.p = p;
    t.o = opt;
    TrainOpts *o = &t.o;
    if (o->init && (!*o->init || !strcmp(o->init, "none"))) o->init = NULL;
    t.data = proc_connected(p, "data");
    if (!t.data) return msd_fail(2, "--mode train needs --connect data=ENDPOINT");
    char err[1024];
    t.be = p->gpu >= 0 ? proc_gpu(p, err, sizeof err) : backend_get(device_cpu(), err, sizeof err);
    if (!t.be || backend_missing(t.be, err, sizeof err)) return msd_fail(1, "backend: %s", err);
    if (o->grid_dir) snprintf(t.grid_dir, sizeof t.grid_dir, "%s", o->grid_dir);
    else {
        const char *slash = strrchr(o->ckpt, '/');
        snprintf(t.grid_dir, sizeof t.grid_dir, "%.*s%sgrids", slash ? (int)(slash - o->ckpt) : 0, o->ckpt,
                 slash ? "/" : "");
    }
    if (fs_mkdir_parent(o->ckpt, err, sizeof err) || fs_mkdir_p(t.grid_dir, err, sizeof err) ||
        (o->metrics && fs_mkdir_parent(o->metrics, err, sizeof err))) return msd_fail(2, "%s", err);
    /* the writer's lock, held until the process ends: a second run on this --ckpt refuses here */
    if (fs_lock_writer(o->ckpt, err, sizeof err) < 0) return msd_fail(2, "%s", err);
    /* what a resume must agree with (not --steps, cadences, grids, paths, threads, --init) */
    ckpt_settings_add(&t.settings, "seed", "%llu", (unsigned long long)o->seed);
    ckpt_settings_add(&t.settings, "batch", "%d", o->batch);
    ckpt_settings_add(&t.settings, "lr", "%.7g", o->lr);
    ckpt_settings_add(&t.settings, "warmup", "%d", o->warmup);
    ckpt_settings_add(&t.settings, "weight-decay", "%.7g", o->weight_decay);
    ckpt_settings_add(&t.settings, "grad-clip", "%.7g", o->grad_clip);
    ckpt_settings_add(&t.settings, "ema-halflife-kimg", "%.7g", o->ema_kimg);
    ckpt_settings_add(&t.settings, "ema-rampup", "%.7g", o->ema_rampup);
    OptimConfig oc;
    optim_config_default(&oc);
    oc.lr = o->lr;
    oc.weight_decay = o->weight_decay;
    oc.warmup_steps = o->warmup;
    oc.grad_clip = o->grad_clip;
    oc.ema = 1;
    oc.ema_halflife_images = (double)o->ema_kimg * 1000.0;
    oc.ema_rampup_ratio = o->ema_rampup;
    oc.images_per_step = o->batch;
    t.ctx = backend_ctx_new(t.be, o->threads);
    if (edmunet_new(&t.net, o->spec, t.be, t.ctx, o->batch, &oc, o->seed, err, sizeof err)) {
        msd_fail(2, "--net: %s", err);
        backend_ctx_destroy(&t.ctx);
        return 2;
    }
    struct stat st;
    if (stat(o->ckpt, &st) == 0) {
        CheckpointMeta meta = {0};
        if (edmunet_load(&t.net, o->ckpt, 0, &meta, err, sizeof err)) {
            msd_fail(2, "resuming from --ckpt: %s", err);
            edmunet_free(&t.net);
            backend_ctx_destroy(&t.ctx);
            return 2;
        }
        /* older checkpoints record only teacher.batch and teacher.seed: compare those too */
        const char *b = checkpoint_meta_get(&meta, "teacher.batch"), *sd = checkpoint_meta_get(&meta, "teacher.seed");
        if (b && !checkpoint_meta_get(&meta, "run.batch")) meta_add(&meta, "run.batch", b);
        if (sd && !checkpoint_meta_get(&meta, "run.seed")) meta_add(&meta, "run.seed", sd);
        int bad = checkpoint_check_settings(o->ckpt, &meta, &t.settings, o->allow_changed, err, sizeof err);
        checkpoint_meta_free(&meta);
        if (bad) {
            msd_fail(2, "resuming from --ckpt: %s", err);
            edmunet_free(&t.net);
            backend_ctx_destroy(&t.ctx);
            return 2;
        }
        if (o->init) log_info("--init %s is not used: the run resumes from its checkpoint %s", o->init, o->ckpt);
    } else if (o->init) {
        /* a new run that starts from trained weights: the file's EMA weights when it has them
         * (a training checkpoint or an msd-nn export), the EMA starts there too; the step
         * count, the warm-up and the AdamW moments start afresh */
        Optim *opt = t.net.opt;
        t.net.opt = NULL;
        int rc = edmunet_load(&t.net, o->init, 1, NULL, err, sizeof err);
        t.net.opt = opt;
        if (rc) {
            msd_fail(2, "--init: %s", err);
            edmunet_free(&t.net);
            backend_ctx_destroy(&t.ctx);
            return 2;
        }
        optim_ema_reset(opt);
        log_info("initialised from %s (a new run from step 0: fresh AdamW moments, warm-up again)", o->init);
    }
    if (o->metrics && !(t.metrics = fopen(o->metrics, "a"))) {
        msd_fail(2, "--metrics %s: %s", o->metrics, strerror(errno));
        edmunet_free(&t.net);
        backend_ctx_destroy(&t.ctx);
        return 2;
    }
    rpc_init(&t.rpc, p, o->timeout_ms);
    t.rpc.busy_reply = "a training teacher takes no input lines";
    t.hx = msd_malloc(sizeof(float) * (size_t)(o->batch * t.net.dim));
    t.hy = msd_malloc(sizeof(int32_t) * (size_t)o->batch);
    t.dx0 = t.be->alloc(t.ctx, o->batch * t.net.dim);
    log_info("training %s (%lld parameters) on %s: batch %d, %ld steps, lr %g (warm-up %d), clip %g, EMA half-life "
             "%g kimg, seed %llu; checkpoint %s, grids in %s", t.net.spec, (long long)params_count(unet_params(t.net.unet)),
             t.be->name, o->batch, o->steps, o->lr, o->warmup, o->grad_clip, o->ema_kimg, (unsigned long long)o->seed,
             o->ckpt, t.grid_dir);
    busy_init(&t.busy);
    proc_ready(p);
    int rc = train_loop(&t);
    busy_report(&t.busy, "teacher");
    if (t.metrics) fclose(t.metrics);
    t.be->free(t.ctx, t.dx0);
    free(t.hx);
    free(t.hy);
    if (t.ema_ready) edmunet_free(&t.ema);
    edmunet_free(&t.net);
    backend_ctx_destroy(&t.ctx);
    if (rc == 0) log_info("finished %ld steps", o->steps);
    return proc_end_job(p, rc, t.rpc.err); /* rc > 0: stopped (STOP, signal, silent launcher) after a checkpoint */
}
