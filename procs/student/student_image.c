/* student_image.c: msd-student --mode image-train, stage 2 (DM, distribution matching) of one
 * student on images (docs/ALGORITHMS.md sections 2.1-2.6 and 2.10; docs/DISTILL.md).
 *
 * The student owns the classes of its line of the partition file (--partition; msd-data hands it
 * conditions of those classes only). Its generator is an EDM UNet evaluated at sigma_max,
 * x = G(z, c) = D_G(80 z; 80, c) (distill_generate), initialised from --init (the teacher's EMA
 * weights for a student of the teacher's size). One step s, as the toy's (student_mog.c):
 *   - TTUR: --ttur batches of fresh generator samples (detached) go to its critic as FAKE_TRAIN,
 *     one fake-score update each, sent back to back, replies awaited in order;
 *   - generator: x = G(z, c); t ~ U{20..980}, sigma = table[t], x_t = x + sigma eps; DENOISE of
 *     (x_t, sigma, c) goes to the teacher and to the critic at once; distill_dm_backward
 *     backpropagates the DM gradient (D_fake - D_real) / mean|x - D_real| through G; AdamW
 *     (gradient clip, EMA of the weights).
 * The conditions of data step j are BATCH {"student", "count", "step" j} (msd-data); step s
 * uses data steps s (T+1) .. s (T+1) + T; the critic warm-up (--critic-warmup, before step 0)
 * uses data steps from 2^40. Every draw is keyed by (--seed, student, data step) — z from
 * STREAM_Z, t and eps from STREAM_T/STREAM_EPS — so a run resumed from its checkpoint computes
 * what an uninterrupted run computes.
 * Every --ckpt-every steps and at the end the critic checkpoints (SAVE), then the student
 * (weights, EMA, AdamW moments, step; atomic): a restart after kill -9 resumes there. Progress
 * lines and JSON-lines metrics (--metrics); every --grid-every steps and at the end a PNG grid
 * of EMA samples of its classes (one row per class, fixed noise). Long computations run under
 * proc_keepalive, so the launcher keeps hearing from a student busy for seconds.
 *
 * Not here: the GAN head (ADM stage), TSM, serving the image students. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "args.h"
#include "dataset.h"
#include "distill.h"
#include "dmd.h"
#include "edmunet.h"
#include "fsutil.h"
#include "image.h"
#include "log.h"
#include "partition.h"
#include "philox.h"
#include "rpc.h"
#include "serve.h"
#include "student_image.h"

/* streams of the draws; the student's index goes into bits 32.. */
#define STREAM_Z 0x737a000000000001ull
#define STREAM_T 0x737a000000000002ull
#define STREAM_EPS 0x737a000000000003ull
#define STREAM_GRID 0x737a000000000004ull
#define STREAM_DROP 0x737a000000000005ull
#define WARMUP_DATA_BASE ((int64_t)1 << 40)
#define GRID_MAX_ROWS 32
#define MAX_ROUND 64

typedef struct ImgOpts {
    const char *init, *spec, *part, *ckpt_dir, *metrics, *grid_dir;
    int index, batch, steps, ttur, warmup, ckpt_every, log_every, grid_every, grid_per_class, lr_warmup, threads,
        timeout_ms;
    float lr, weight_decay, grad_clip, ema;
    uint64_t seed;
} ImgOpts;

static ImgOpts opt = {.spec = "init", .index = -1, .batch = 16, .steps = 1000, .ttur = 5, .warmup = 0,
                      .ckpt_every = 100, .log_every = 10, .grid_every = 500, .grid_per_class = 8,
                      .timeout_ms = 120000, .lr = 2e-6f, .weight_decay = 0.01f, .grad_clip = 10, .ema = 0.999f,
                      .seed = 1};

const ArgSpec student_image_train_args[] = {
    ARG_STR_REQ("--init", &opt.init, "FILE", "the generator's starting weights (EMA weights when the file has them):\n"
                "the teacher for a student of its size; ignored when the student's checkpoint exists"),
    ARG_STR_REQ("--partition", &opt.part, "FILE", "partition file (partition.h): the classes this student owns"),
    ARG_STR_REQ("--ckpt-dir", &opt.ckpt_dir, "DIR", "where student.K.safetensors is written (and resumed from)"),
    ARG_STR("--net", &opt.spec, "SPEC", "generator UNet CONFIG-SPEC (default init: the --init file's)"),
    ARG_INT("--index", &opt.index, 0, 1 << 20, "K", "this student's line of the partition (default: K of the name student.K)"),
    ARG_INT("--batch", &opt.batch, 1, 1 << 16, "B", "images per generator step and per critic update (default 16)"),
    ARG_INT("--steps", &opt.steps, 0, 1 << 30, "N", "generator steps in all (default 1000)"),
    ARG_INT("--ttur", &opt.ttur, 0, MAX_ROUND, "T", "critic updates per generator step (default 5)"),
    ARG_INT("--critic-warmup", &opt.warmup, 0, 1 << 20, "W", "critic updates before the first step (default 0: the\n"
            "critic starts as the teacher)"),
    ARG_FLOAT("--lr", &opt.lr, 0, 1, "LR", "AdamW learning rate (default 2e-6, DMD2's)"),
    ARG_INT("--lr-warmup", &opt.lr_warmup, 0, 1 << 30, "N", "linear learning-rate warm-up steps (default 0)"),
    ARG_FLOAT("--weight-decay", &opt.weight_decay, 0, 1, "W", "AdamW decoupled weight decay (default 0.01)"),
    ARG_FLOAT("--grad-clip", &opt.grad_clip, 0, 1e9, "C", "global gradient-norm clip, 0: none (default 10)"),
    ARG_FLOAT("--ema", &opt.ema, 0, 1, "D", "per-step EMA decay of the weights in grids and checkpoints (default 0.999)"),
    ARG_U64("--seed", &opt.seed, "S", "seed of the draws (default 1)"),
    ARG_INT("--ckpt-every", &opt.ckpt_every, 0, 1 << 30, "N", "steps between checkpoints (default 100; 0: only at the end)"),
    ARG_INT("--log-every", &opt.log_every, 1, 1 << 30, "N", "steps between progress lines and metrics (default 10)"),
    ARG_STR("--metrics", &opt.metrics, "FILE", "JSON lines: student, step, loss_dm, loss_fake, s_per_step, eta_s, ..."),
    ARG_INT("--grid-every", &opt.grid_every, 0, 1 << 30, "N", "steps between sample grids (default 500; 0: only at the end)"),
    ARG_STR("--grid-dir", &opt.grid_dir, "DIR", "grids go to DIR/student.K/grid-STEP.png (default: the checkpoint folder's\n"
            "../grids)"),
    ARG_INT("--grid-per-class", &opt.grid_per_class, 1, 64, "N", "images per class in a grid row (default 8)"),
    ARG_INT("--threads", &opt.threads, 0, 1024, "T", "CPU threads (default: $MSD_THREADS, else all cores)"),
    ARG_INT("--timeout-ms", &opt.timeout_ms, 1, 86400000, "MS", "how long a peer may take to answer (default 120000)"),
    ARG_END_,
};

typedef struct ImgTrain {
    Proc *p;
    ImgOpts o;
    Rpc rpc;
    void *data, *teacher, *critic;
    const Backend *be;
    BackendCtx *ctx;
    EdmUNet g;                 /* the generator (training buffers, AdamW with EMA) */
    EdmUNet ema;               /* the EMA weights for grids (inference buffers) */
    int ema_ready;
    DistillBuf db;
    int nclasses, nowned;
    int32_t owned[GRID_MAX_ROWS];   /* the first classes it owns (grid rows) */
    unsigned char *mine;       /* mine[c]: class c is this student's */
    char ckpt[4096], grid_dir[4096];
    FILE *metrics;
    float table[DMD_TABLE_N];
    int64_t D;
    float *hz, *hx, *hsig, *heps;   /* host (B, D), (B) */
    float *dz, *dx, *deps, *dxt, *dreal, *dfake;   /* device (B, D) */
    int32_t *label;
    double fake_loss_sum;
    long fake_loss_n;
    Busy busy;
} ImgTrain;

static uint64_t stream_of(const ImgTrain *s, uint64_t base) { return base + ((uint64_t)s->o.index << 32); }

static void keep_begin(ImgTrain *s) {
    busy_begin(&s->busy);
    proc_keepalive_begin(s->p);
}
static void keep_end(ImgTrain *s) {
    proc_keepalive_end(s->p);
    busy_end(&s->busy);
}

/* Labels of data step `step` into s->label (checked: classes of this student), and z of that
 * step into s->hz. */
static int img_fetch(ImgTrain *s, int64_t step) {
    int32_t who = s->o.index, count = s->o.batch;
    int64_t one = 1;
    WireMsg req, rep;
    wire_msg_init(&req, WIRE_OP_BATCH, rpc_id(&s->rpc));
    wire_msg_add(&req, "student", WIRE_I32, 1, &one, &who);
    wire_msg_add(&req, "count", WIRE_I32, 1, &one, &count);
    wire_msg_add(&req, "step", WIRE_I64, 1, &one, &step);
    if (rpc_call(&s->rpc, s->data, "data", &req, &rep)) return -1;
    const WireTensor *l = rpc_labels(&s->rpc, &rep, "data", "label", count, s->nclasses);
    int ok = l != NULL;
    if (ok) {
        memcpy(s->label, l->data, sizeof(int32_t) * (size_t)count);
        for (int i = 0; i < count; i++)
            if (!s->mine[s->label[i]]) {
                snprintf(s->rpc.err, sizeof s->rpc.err,
                         "data: label[%d] = %d is not a class of student %d in %s (data and student read different "
                         "partitions?)", i, s->label[i], s->o.index, s->o.part);
                ok = 0;
                break;
            }
    }
    wire_msg_close(&rep);
    if (!ok) return -1;
    rng_normal_fill(s->hz, count * s->D, s->o.seed, stream_of(s, STREAM_Z), (uint64_t)step * (uint64_t)(count * s->D));
    return 0;
}

static void img_dropout_seed(ImgTrain *s, int64_t data_step) {
    if (s->g.cfg.dropout > 0)
        unet_set_dropout_seed(s->g.unet, rng_u32(s->o.seed, stream_of(s, STREAM_DROP), (uint64_t)data_step) |
                                             ((uint64_t)rng_u32(s->o.seed, stream_of(s, STREAM_DROP) + 1, (uint64_t)data_step) << 32));
}

/* One round of critic updates: n batches of detached generator samples as FAKE_TRAIN. */
static int img_critic_round(ImgTrain *s, int n, int64_t data_step0) {
    const UNetConfig *c = &s->g.cfg;
    int64_t B = s->o.batch, shape[4] = {B, c->in_ch, c->res, c->res};
    uint64_t ids[MAX_ROUND];
    MSD_CHECK(n <= MAX_ROUND);
    for (int j = 0; j < n; j++) {
        if (img_fetch(s, data_step0 + j)) return -1;
        keep_begin(s);
        s->be->upload(s->ctx, s->dz, s->hz, B * s->D);
        distill_generate(&s->db, &s->g.edm, s->dx, s->dz, s->label, NULL, B, 0);
        s->be->download(s->ctx, s->hx, s->dx, B * s->D);
        keep_end(s);
        WireMsg req;
        ids[j] = rpc_id(&s->rpc);
        wire_msg_init(&req, WIRE_OP_FAKE_TRAIN, ids[j]);
        wire_msg_add(&req, "x", WIRE_F32, 4, shape, s->hx);
        wire_msg_add(&req, "label", WIRE_I32, 1, shape, s->label);
        if (rpc_send(&s->rpc, s->critic, "critic", &req)) return -1;
    }
    for (int j = 0; j < n; j++) {
        WireMsg rep;
        const char *peer = "critic";
        uint32_t op = WIRE_OP_FAKE_TRAIN;
        if (rpc_await(&s->rpc, 1, &s->critic, &peer, &ids[j], &op, &rep)) return -1;
        int64_t one = 1;
        const WireTensor *l = rpc_tensor_shape(&s->rpc, &rep, "critic", "loss", WIRE_F32, 1, &one);
        if (l) {
            s->fake_loss_sum += *(const float *)l->data;
            s->fake_loss_n++;
        }
        wire_msg_close(&rep);
        if (!l) return -1;
    }
    return 0;
}

/* One generator step; L_DM into *loss. */
static int img_generator_step(ImgTrain *s, int64_t step, int64_t data_step, double *loss) {
    if (img_fetch(s, data_step)) return -1;
    const UNetConfig *c = &s->g.cfg;
    int64_t B = s->o.batch, D = s->D, shape[4] = {B, c->in_ch, c->res, c->res};
    keep_begin(s);
    s->be->upload(s->ctx, s->dz, s->hz, B * D);
    img_dropout_seed(s, data_step);
    distill_generate(&s->db, &s->g.edm, s->dx, s->dz, s->label, NULL, B, 1);
    uint64_t base = (uint64_t)step * (uint64_t)B;
    for (int64_t i = 0; i < B; i++)
        s->hsig[i] = s->table[DMD_GEN_T_MIN + rng_uniform_int(s->o.seed, stream_of(s, STREAM_T), base + (uint64_t)i,
                                                                DMD_GEN_T_MAX - DMD_GEN_T_MIN + 1)];
    rng_normal_fill(s->heps, B * D, s->o.seed, stream_of(s, STREAM_EPS), base * (uint64_t)D);
    s->be->upload(s->ctx, s->deps, s->heps, B * D);
    distill_add_noise(&s->db, s->dxt, s->dx, s->deps, s->hsig, B);
    s->be->download(s->ctx, s->hx, s->dxt, B * D);
    keep_end(s);
    WireMsg req;
    uint64_t id = rpc_id(&s->rpc);
    wire_msg_init(&req, WIRE_OP_DENOISE, id);
    wire_msg_add(&req, "x", WIRE_F32, 4, shape, s->hx);
    wire_msg_add(&req, "sigma", WIRE_F32, 1, shape, s->hsig);
    wire_msg_add(&req, "label", WIRE_I32, 1, shape, s->label);
    if (rpc_send(&s->rpc, s->teacher, "teacher", &req) || rpc_send(&s->rpc, s->critic, "critic", &req)) return -1;
    void *socks[2] = {s->teacher, s->critic};
    const char *peers[2] = {"teacher", "critic"};
    uint64_t ids[2] = {id, id};
    uint32_t ops[2] = {WIRE_OP_DENOISE, WIRE_OP_DENOISE};
    WireMsg reps[2];
    if (rpc_await(&s->rpc, 2, socks, peers, ids, ops, reps)) return -1;
    const WireTensor *dr = rpc_tensor_shape(&s->rpc, &reps[0], "teacher", "d", WIRE_F32, 4, shape);
    const WireTensor *df = dr ? rpc_tensor_shape(&s->rpc, &reps[1], "critic", "d", WIRE_F32, 4, shape) : NULL;
    int ok = df != NULL;
    if (ok) {
        keep_begin(s);
        s->be->upload(s->ctx, s->dreal, dr->data, B * D);
        s->be->upload(s->ctx, s->dfake, df->data, B * D);
        params_zero_grad(unet_params(s->g.unet));
        *loss = distill_dm_backward(&s->db, &s->g.edm, s->dx, s->dreal, s->dfake, NULL, 0, B);
        optim_step(s->g.opt);
        keep_end(s);
    }
    wire_msg_close(&reps[0]);
    wire_msg_close(&reps[1]);
    return ok ? 0 : -1;
}

static int img_checkpoint(ImgTrain *s) {
    WireMsg req, rep;
    int64_t one = 1, step = s->g.opt->step;
    wire_msg_init(&req, WIRE_OP_SAVE, rpc_id(&s->rpc));
    wire_msg_add(&req, "step", WIRE_I64, 1, &one, &step);
    if (rpc_call(&s->rpc, s->critic, "critic", &req, &rep)) return -1;
    wire_msg_close(&rep);
    char err[1024], idx[32], seed[32];
    snprintf(idx, sizeof idx, "%d", s->o.index);
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)s->o.seed);
    StMeta meta[3] = {{"student.index", idx}, {"student.seed", seed}, {"student.role", "student"}};
    keep_begin(s);
    int rc = edmunet_save(&s->g, s->ckpt, meta, 3, err, sizeof err);
    keep_end(s);
    if (rc) {
        snprintf(s->rpc.err, sizeof s->rpc.err, "checkpoint: %s", err);
        return -1;
    }
    log_info("checkpoint %s at step %lld", s->ckpt, (long long)step);
    return 0;
}

/* A grid of EMA samples: one row of --grid-per-class images per owned class (at most 32 rows),
 * the same noise every time. */
static int img_grid(ImgTrain *s) {
    const UNetConfig *c = &s->g.cfg;
    int per = s->o.grid_per_class, rows = s->nowned;
    int64_t n = (int64_t)rows * per, D = s->D;
    char err[1024], path[4200];
    double t0 = msd_now();
    keep_begin(s);
    if (!s->ema_ready) {
        if (edmunet_new(&s->ema, s->g.spec, s->be, s->ctx, n, NULL, 0, err, sizeof err))
            msd_die("the EMA network: %s", err);   /* the same spec built the generator: a bug */
        s->ema_ready = 1;
    }
    ParamSet *ps = unet_params(s->g.unet);
    s->be->copy(s->ctx, unet_params(s->ema.unet)->data, s->g.opt->ema, ps->total);
    int32_t *labels = msd_malloc(sizeof(int32_t) * (size_t)n);
    float *hz = msd_malloc(sizeof(float) * (size_t)(n * D)), *sig = msd_malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        labels[i] = s->owned[i / per];
        sig[i] = DMD_SIGMA_GEN;
    }
    rng_normal_fill(hz, n * D, s->o.seed, stream_of(s, STREAM_GRID), 0);
    for (int64_t i = 0; i < n * D; i++) hz[i] *= DMD_SIGMA_GEN;
    float *dz = s->be->alloc(s->ctx, n * D), *dout = s->be->alloc(s->ctx, n * D);
    s->be->upload(s->ctx, dz, hz, n * D);
    edm_forward(&s->ema.edm, dout, dz, sig, labels, NULL, n, 0);
    s->be->download(s->ctx, hz, dout, n * D);
    snprintf(path, sizeof path, "%s/grid-%07lld.png", s->grid_dir, (long long)s->g.opt->step);
    int rc = image_write_grid(path, hz, n, c->in_ch, c->res, c->res, per, err, sizeof err);
    s->be->free(s->ctx, dz);
    s->be->free(s->ctx, dout);
    keep_end(s);
    if (rc) snprintf(s->rpc.err, sizeof s->rpc.err, "grid: %s", err);
    else log_info("grid %s: %lld EMA samples of %d classes (%.1f s)", path, (long long)n, rows, msd_now() - t0);
    free(labels);
    free(hz);
    free(sig);
    return rc;
}

static void format_eta(double s, char *buf, size_t len) {
    if (!(s < 1e9)) { snprintf(buf, len, "?"); return; }
    long v = (long)(s + 0.5);
    snprintf(buf, len, "%ld:%02ld:%02ld", v / 3600, v / 60 % 60, v % 60);
}

static int img_train_loop(ImgTrain *s) {
    const ImgOpts *o = &s->o;
    int64_t start = s->g.opt->step;
    if (start == 0 && o->warmup > 0) {
        log_info("warming up the critic: %d updates on the initial generator's samples", o->warmup);
        for (int w = 0; w < o->warmup; w += MAX_ROUND) {
            int n = o->warmup - w < MAX_ROUND ? o->warmup - w : MAX_ROUND;
            if (img_critic_round(s, n, WARMUP_DATA_BASE + w)) return -1;
        }
        log_info("critic warm-up done: fake-score loss %.4f", s->fake_loss_sum / (s->fake_loss_n ? s->fake_loss_n : 1));
        s->fake_loss_sum = 0;
        s->fake_loss_n = 0;
    } else if (start > 0) {
        log_info("resuming at step %lld of %d", (long long)start, o->steps);
    }
    if (start >= o->steps) {
        /* nothing left to train (--steps 0, or resumed at the end): still leave a checkpoint
         * and a grid of the untrained generator */
        log_info("the checkpoint is at step %lld of %d: nothing to train", (long long)start, o->steps);
        return img_checkpoint(s) || img_grid(s) ? -1 : 0;
    }
    double t_run = msd_now(), loss_sum = 0;
    int loss_n = 0;
    for (int64_t step = start; step < o->steps; step++) {
        int64_t data0 = step * (o->ttur + 1);
        if (o->ttur > 0 && img_critic_round(s, o->ttur, data0)) return -1;
        double loss;
        if (img_generator_step(s, step, data0 + o->ttur, &loss)) return -1;
        loss_sum += loss;
        loss_n++;
        int64_t done = step + 1;
        if (done % o->log_every == 0 || done == o->steps) {
            double el = msd_now() - t_run, per_step = el / (double)(done - start);
            double rate = o->batch / (per_step > 0 ? per_step : 1e-9), eta = (double)(o->steps - done) * per_step;
            double lf = s->fake_loss_n ? s->fake_loss_sum / s->fake_loss_n : 0;
            char eta_s[32];
            format_eta(eta, eta_s, sizeof eta_s);
            log_info("step %lld/%d  loss_dm %.5g  loss_fake %.4f  grad_norm %.3g  %.2f s/step  %.1f img/s  %s left",
                     (long long)done, o->steps, loss_sum / loss_n, lf, s->g.opt->last_grad_norm, per_step, rate, eta_s);
            if (s->metrics) {
                fprintf(s->metrics,
                        "{\"student\": %d, \"step\": %lld, \"loss_dm\": %.9g, \"loss_fake\": %.9g, \"grad_norm\": %.9g, "
                        "\"lr\": %.6g, \"s_per_step\": %.4f, \"images_per_s\": %.2f, \"elapsed_s\": %.3f, \"eta_s\": "
                        "%.1f}\n",
                        o->index, (long long)done, loss_sum / loss_n, lf, s->g.opt->last_grad_norm, s->g.opt->last_lr,
                        per_step, rate, el, eta);
                fflush(s->metrics);
            }
            loss_sum = 0;
            loss_n = 0;
            s->fake_loss_sum = 0;
            s->fake_loss_n = 0;
        }
        if ((o->ckpt_every > 0 && done % o->ckpt_every == 0) || done == o->steps)
            if (img_checkpoint(s)) return -1;
        if ((o->grid_every > 0 && done % o->grid_every == 0) || done == o->steps)
            if (img_grid(s)) return -1;
    }
    return 0;
}

/* The network of checkpoint `path` must be ours (a clearer message than a tensor's shape). */
static int same_spec(const EdmUNet *n, const char *path, const char *what) {
    char spec[512], err[1024];
    int r = edmunet_read_spec(path, spec, sizeof spec, err, sizeof err);
    if (r < 0) return msd_fail(2, "%s: %s", what, err);
    if (r == 0 && strcmp(spec, n->spec))
        return msd_fail(2, "%s: %s holds the network '%s', not '%s' (--net)", what, path, spec, n->spec);
    return 0;
}

/* The generator: a new run from --init's (EMA) weights, or the student's checkpoint. */
static int img_open_net(ImgTrain *s) {
    const ImgOpts *o = &s->o;
    char err[1024], spec[512];
    struct stat st;
    int resume = stat(s->ckpt, &st) == 0;
    if (!strcmp(o->spec, "init")) {
        const char *from = resume ? s->ckpt : o->init;
        int r = edmunet_read_spec(from, spec, sizeof spec, err, sizeof err);
        if (r < 0) return msd_fail(2, "%s: %s", resume ? "resuming" : "--init", err);
        if (r > 0) return msd_fail(2, "%s names no network (no \"%s\" metadata): pass --net SPEC", from, EDMUNET_META_SPEC);
    } else {
        snprintf(spec, sizeof spec, "%s", o->spec);
    }
    OptimConfig oc;
    optim_config_default(&oc);
    oc.lr = o->lr;
    oc.weight_decay = o->weight_decay;
    oc.warmup_steps = o->lr_warmup;
    oc.grad_clip = o->grad_clip;
    oc.ema = 1;
    oc.ema_decay = o->ema;
    if (edmunet_new(&s->g, spec, s->be, s->ctx, o->batch, &oc, o->seed, err, sizeof err))
        return msd_fail(2, "--net: %s", err);
    if (same_spec(&s->g, resume ? s->ckpt : o->init, resume ? "resuming" : "--init")) return 2;
    if (resume) {
        if (edmunet_load(&s->g, s->ckpt, 0, NULL, err, sizeof err)) return msd_fail(2, "resuming: %s", err);
        log_info("resumed from %s at step %lld", s->ckpt, (long long)s->g.opt->step);
    } else {
        Optim *keep = s->g.opt;
        s->g.opt = NULL;
        int rc = edmunet_load(&s->g, o->init, 1, NULL, err, sizeof err);
        s->g.opt = keep;
        if (rc) return msd_fail(2, "--init: %s", err);
        optim_ema_reset(s->g.opt);
        log_info("generator initialised from %s", o->init);
    }
    if (s->g.cfg.label_dim <= 0)
        return msd_fail(2, "the generator %s is unconditional: a student owns classes, its network needs classes=N",
                        s->g.spec);
    return 0;
}

/* The classes of this student from the partition file. */
static int img_read_partition(ImgTrain *s) {
    int n = s->g.cfg.label_dim, K = 0;
    int *assign = msd_calloc((size_t)n, sizeof(int));
    char err[1024];
    /* ids, or the Fashion-MNIST names msd-data --mode fmnist accepts (common/data/dataset.h) */
    PartitionNames lk = {n, n == DATASET_FMNIST_CLASSES ? dataset_fmnist_names : NULL};
    if (partition_read_checked(s->o.part, assign, n, 0, lk.names, &K, partition_lookup_names, &lk, err, sizeof err)) {
        free(assign);
        return msd_fail(2, "--partition: %s (the generator %s has %d classes)", err, s->g.spec, n);
    }
    if (s->o.index >= K) {
        free(assign);
        return msd_fail(2, "--partition %s has %d students; this is student %d", s->o.part, K, s->o.index);
    }
    s->nclasses = n;
    s->mine = msd_calloc((size_t)n, 1);
    for (int c = 0; c < n; c++)
        if (assign[c] == s->o.index) {
            s->mine[c] = 1;
            if (s->nowned < GRID_MAX_ROWS) s->owned[s->nowned] = c;
            s->nowned++;
        }
    free(assign);
    if (s->nowned > GRID_MAX_ROWS) s->nowned = GRID_MAX_ROWS;
    return 0;
}

static void img_free(ImgTrain *s) {
    if (s->metrics) fclose(s->metrics);
    if (s->be) {
        float *bufs[] = {s->dz, s->dx, s->deps, s->dxt, s->dreal, s->dfake};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            if (bufs[i]) s->be->free(s->ctx, bufs[i]);
    }
    distill_buf_free(&s->db);
    if (s->ema_ready) edmunet_free(&s->ema);
    edmunet_free(&s->g);
    if (s->ctx) backend_ctx_destroy(&s->ctx);
    free(s->hz); free(s->hx); free(s->hsig); free(s->heps); free(s->label); free(s->mine);
}

int student_image_train(Proc *p) {
    static ImgTrain s;
    memset(&s, 0, sizeof s);
    s.p = p;
    s.o = opt;
    ImgOpts *o = &s.o;
    if (o->index < 0) {
        long k = proc_name_index(p->name);
        if (k < 0 || k > (1 << 20)) return msd_fail(2, "no --index K and the name does not end in .K");
        o->index = (int)k;
    }
    rpc_init(&s.rpc, p, o->timeout_ms);
    s.rpc.busy_reply = "a training student takes no input lines";
    s.data = proc_connected(p, "data");
    s.teacher = proc_connected(p, "teacher");
    s.critic = proc_connected(p, "critic");
    if (!s.data || !s.teacher || !s.critic) return msd_fail(2, "image-train needs --connect data=... teacher=... critic=...");
    char err[1024];
    snprintf(s.ckpt, sizeof s.ckpt, "%s/student.%d.safetensors", o->ckpt_dir, o->index);
    if (o->grid_dir) snprintf(s.grid_dir, sizeof s.grid_dir, "%s/student.%d", o->grid_dir, o->index);
    else snprintf(s.grid_dir, sizeof s.grid_dir, "%s/../grids/student.%d", o->ckpt_dir, o->index);
    struct stat st;
    if (stat(s.ckpt, &st) != 0 && stat(o->init, &st) != 0)
        return msd_fail(2, "--init %s: %s (the generator's starting weights; no checkpoint %s to resume either)", o->init,
                        strerror(errno), s.ckpt);
    if (stat(o->part, &st) != 0) return msd_fail(2, "--partition %s: %s", o->part, strerror(errno));
    s.be = p->gpu >= 0 ? proc_gpu(p, err, sizeof err) : backend_get(device_cpu(), err, sizeof err);
    if (!s.be || backend_missing(s.be, err, sizeof err)) return msd_fail(1, "backend: %s", err);
    s.ctx = backend_ctx_new(s.be, o->threads);
    int rc = img_open_net(&s);
    if (!rc) rc = img_read_partition(&s);
    if (!rc && (fs_mkdir_p(o->ckpt_dir, err, sizeof err) || fs_mkdir_p(s.grid_dir, err, sizeof err) ||
                (o->metrics && fs_mkdir_parent(o->metrics, err, sizeof err))))
        rc = msd_fail(2, "%s", err);
    if (!rc && o->metrics && !(s.metrics = fopen(o->metrics, "a")))
        rc = msd_fail(2, "--metrics %s: %s", o->metrics, strerror(errno));
    if (rc) {
        img_free(&s);
        return rc;
    }
    dmd_sigma_table(s.table, DMD_TABLE_N);
    int64_t B = o->batch, D = s.g.dim;
    s.D = D;
    distill_buf_init(&s.db, s.be, s.ctx, B, D);
    s.hz = msd_malloc(sizeof(float) * (size_t)(B * D));
    s.hx = msd_malloc(sizeof(float) * (size_t)(B * D));
    s.heps = msd_malloc(sizeof(float) * (size_t)(B * D));
    s.hsig = msd_malloc(sizeof(float) * (size_t)B);
    s.label = msd_malloc(sizeof(int32_t) * (size_t)B);
    s.dz = s.be->alloc(s.ctx, B * D);
    s.dx = s.be->alloc(s.ctx, B * D);
    s.deps = s.be->alloc(s.ctx, B * D);
    s.dxt = s.be->alloc(s.ctx, B * D);
    s.dreal = s.be->alloc(s.ctx, B * D);
    s.dfake = s.be->alloc(s.ctx, B * D);
    char cls[256];
    size_t k = 0;
    cls[0] = 0;
    for (int c = 0; c < s.nclasses && k + 8 < sizeof cls; c++)
        if (s.mine[c]) k += (size_t)snprintf(cls + k, sizeof cls - k, "%s%d", k ? "," : "", c);
    log_info("student %d (classes %s): generator %s (%lld parameters) on %s, batch %d, %d steps, TTUR %d, lr %g, "
             "checkpoint %s, grids in %s", o->index, cls, s.g.spec, (long long)params_count(unet_params(s.g.unet)),
             s.be->name, o->batch, o->steps, o->ttur, o->lr, s.ckpt, s.grid_dir);
    busy_init(&s.busy);
    proc_ready(p);
    rc = img_train_loop(&s);
    busy_report(&s.busy, "student");
    img_free(&s);
    if (rc == 0) log_info("finished %d steps", o->steps);
    return proc_end_job(p, rc, s.rpc.err);
}
