/* critic_image.c: msd-critic --mode image, the fake-score UNet of one image student (stage 2;
 * docs/ALGORITHMS.md sections 2.4 and 2.10), trained online on that student's detached samples.
 *
 * The network starts as --init's EMA weights (the teacher, as in DMD2; a folder of stage-1
 * checkpoints: its student K's, DIR/student.K.safetensors) or, when --ckpt exists,
 * resumes from it (weights, AdamW moments, update count). Ops:
 *   FAKE_TRAIN {"x" (N, C, H, W), "label" (N)}: one AdamW update of the fake-score loss
 *       (distill_fake_loss): t ~ U{0..999}, sigma = table[t], mean(lambda(sigma) (D_fake(x +
 *       sigma eps) - x)^2); replies "loss" (1). Draws keyed by (--seed, the index K of its name
 *       critic.K, update count), so a critic resumed from its checkpoint draws what it would
 *       have drawn.
 *   DENOISE {"x" (N, C, H, W), "sigma" (N), "label" (N)}: "d" = D_fake with the current weights.
 *   SAVE: writes --ckpt (atomic), keeping the one before as --ckpt.prev. --ckpt's writer's lock
 *       (FILE.lock) is held for the process's life; the checkpoint records the run's settings
 *       (run.*: seed, lr, cap, gan-weight), compared on every load of --ckpt or its .prev
 *       (--allow-changed-settings 1: a warning instead of a refusal).
 *   RESUME {"updates", "span"}: rolls back to a state after updates .. updates + span updates
 *       (its current one, --ckpt, its .prev, or --init's weights for 0) and answers the count
 *       held. Nothing else is served until the student has sent one, and requests older than
 *       it are refused (busy): docs/PIPELINES.md "Restarts".
 * With --gan-weight W > 0 (stage 3, ADM; sections 2.7 and 2.10) the critic also owns a GAN head
 * on its bottleneck (GanHead: own parameters and AdamW, freshly initialised from --seed when
 * starting from --init, saved in --ckpt as "gan.*" tensors next to the UNet's and resumed
 * exactly):
 *   FAKE_TRAIN must then also carry "real" (M, C, H, W) real images of the student's classes and
 *       "real_label" (M); the update adds W L_D (distill_gan_critic, both batches noised at
 *       their own t ~ U{0..999}) to the fake-score loss, the head steps with the UNet; the
 *       reply adds "loss_gan" (L_D), "logit_fake" and "logit_real" (the batches' mean logits).
 *   GAN_GRAD {"x" (N, C, H, W), "label" (N), "step" (1)}: "dx" = dL_G/dx of the generator's GAN
 *       loss L_G = mean softplus(-f(x + sigma eps)) (distill_gan_gen_grad; t ~ U{0..999} and eps
 *       keyed by (--seed, K, step)), "loss" (L_G), "logit" (the mean logit); no update.
 * N <= --cap. Every computation runs under proc_keepalive (a UNet update can outlast a
 * heartbeat period). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "args.h"
#include "critic.h"
#include "distill.h"
#include "dmd.h"
#include "edmunet.h"
#include "fsutil.h"
#include "log.h"
#include "philox.h"
#include "serve.h"

#define STREAM_T 0x63720000000000a1ull
#define STREAM_EPS 0x63720000000000a2ull
#define STREAM_DROP 0x63720000000000a3ull
#define STREAM_GAN_T 0x63720000000000a4ull    /* the GAN term of an update: fake rows i, real rows cap + i */
#define STREAM_GAN_EPS 0x63720000000000a5ull
#define STREAM_GG_T 0x63720000000000a6ull     /* GAN_GRAD, keyed by the request's step */
#define STREAM_GG_EPS 0x63720000000000a7ull
#define STREAM_GG_DROP 0x63720000000000a8ull
#define GAN_HEAD_SEED 0x67616e68656164ull     /* added to --seed and K for the head's initialisation */

static struct {
    const char *init, *spec, *ckpt;
    float lr, weight_decay, grad_clip, gan_weight;
    int cap, threads, allow_changed;
    uint64_t seed;
} opt = {NULL, "init", NULL, 2e-6f, 0.01f, 10, 0, 64, 0, 0, 2};

const ArgSpec critic_image_args[] = {
    ARG_STR_REQ("--init", &opt.init, "FILE", "the starting weights (EMA weights when the file has them): the teacher;\n"
                "a folder: its student.K.safetensors (stage 1's, K of the name critic.K); ignored when --ckpt exists"),
    ARG_STR_REQ("--ckpt", &opt.ckpt, "FILE", "checkpoint written on SAVE and resumed from at start when it exists\n"
                "(FILE.lock is held while this process runs: a second run on FILE refuses)"),
    ARG_STR("--net", &opt.spec, "SPEC", "UNet CONFIG-SPEC (default init: the --init file's)"),
    ARG_FLOAT("--lr", &opt.lr, 0, 1, "LR", "AdamW learning rate (default 2e-6, DMD2's)"),
    ARG_FLOAT("--weight-decay", &opt.weight_decay, 0, 1, "W", "AdamW decoupled weight decay (default 0.01)"),
    ARG_FLOAT("--grad-clip", &opt.grad_clip, 0, 1e9, "C", "global gradient-norm clip, 0: none (default 10)"),
    ARG_INT("--cap", &opt.cap, 1, 1 << 16, "N", "largest batch (default 64)"),
    ARG_INT("--threads", &opt.threads, 0, 1024, "T", "CPU threads (default: $MSD_THREADS, else all cores)"),
    ARG_U64("--seed", &opt.seed, "S", "seed of the draws (default 2)"),
    ARG_FLOAT("--gan-weight", &opt.gan_weight, 0, 1e6, "W", "weight of the GAN critic loss L_D (stage 3, ADM; DMD2: 1e-2);\n"
              "0 (default): no GAN head (stage 2)"),
    ARG_INT("--allow-changed-settings", &opt.allow_changed, 0, 1, "0|1", "1: resume even when --ckpt was written\n"
            "with other settings (seed, lr, cap, gan-weight; default 0: refuse)"),
    ARG_END_,
};

typedef struct ImgCritic {
    Proc *p;
    const Backend *be;
    BackendCtx *ctx;
    EdmUNet net;
    uint64_t seed, stream;   /* stream: the critic's index (name critic.K) in bits 32.. */
    const char *ckpt;
    float table[DMD_TABLE_N];
    float *hnoise, *hsig, *hout;   /* host (cap, dim), (cap) */
    float *dx, *dnoise, *dout;     /* device (cap, dim) */
    double loss_sum;
    long updates_logged;
    double next_log;
    /* the GAN term (--gan-weight > 0) */
    int gan;
    float gan_w;
    GanHead head;
    Optim *hopt;
    DistillBuf db;
    float *hnoise_r, *hsig_r;      /* host (cap, dim), (cap): the real batch's draws */
    float *dreal, *dnoise_r;       /* device (cap, dim) */
    double gan_loss_sum;
    /* restarts: what the network is rebuilt from (RESUME), and the serving gate */
    char spec[512], init[4096];
    OptimConfig oc;
    CriticGate gate;
    int64_t saved_updates;         /* the update count of --ckpt as last written or read, -1 none */
    CkptSettings set;              /* the run's settings: recorded in --ckpt, checked on every load of it */
} ImgCritic;

/* serve_loop keeps the compute/wait clock; these only keep the heartbeats going */
static void keep_begin(ImgCritic *c) { proc_keepalive_begin(c->p); }
static void keep_end(ImgCritic *c) { proc_keepalive_end(c->p); }

/* Images `xname` (N, C, H, W) f32 with 1 <= N <= cap, finite, and labels `lname` (N); NULL
 * after answering. */
static const WireTensor *critic_images_named(ImgCritic *c, void *sock, const WireMsg *req, const char *xname,
                                             const char *lname, const WireTensor **lab) {
    const UNetConfig *u = &c->net.cfg;
    const WireTensor *x = serve_tensor(sock, req, xname, WIRE_F32, 4, -1);
    if (!x) return NULL;
    int64_t n = x->shape[0];
    if (n < 1 || n > c->net.cap || x->shape[1] != u->in_ch || x->shape[2] != u->res || x->shape[3] != u->res) {
        serve_error(sock, req, WIRE_STATUS_BAD_REQUEST, "\"%s\" must be (N, %d, %d, %d) with 1 <= N <= %lld", xname,
                    u->in_ch, u->res, u->res, (long long)c->net.cap);
        return NULL;
    }
    const float *xs = x->data;
    for (int64_t i = 0; i < n * c->net.dim; i++)
        if (!isfinite(xs[i])) {
            serve_error(sock, req, WIRE_STATUS_BAD_REQUEST, "%s[%lld] is not finite", xname, (long long)i);
            return NULL;
        }
    *lab = serve_labels(sock, req, lname, n, u->label_dim);
    return *lab ? x : NULL;
}

static const WireTensor *critic_images(ImgCritic *c, void *sock, const WireMsg *req, const WireTensor **lab) {
    return critic_images_named(c, sock, req, "x", "label", lab);
}

static void img_critic_train(void *ctx, void *sock, const WireMsg *req) {
    ImgCritic *c = ctx;
    if (critic_gate_refuse(&c->gate, sock, req)) return;
    const WireTensor *lab, *x = critic_images(c, sock, req, &lab);
    if (!x) return;
    const WireTensor *rlab = NULL, *real = NULL;
    if (c->gan) {
        if (!wire_msg_find(req, "real")) {
            serve_error(sock, req, WIRE_STATUS_BAD_REQUEST, "FAKE_TRAIN without \"real\": this critic has the GAN term "
                        "on (--gan-weight %g) and needs real images of the student's classes", c->gan_w);
            return;
        }
        if (!(real = critic_images_named(c, sock, req, "real", "real_label", &rlab))) return;
    } else if (wire_msg_find(req, "real")) {
        serve_error(sock, req, WIRE_STATUS_BAD_REQUEST, "FAKE_TRAIN with \"real\": this critic has no GAN head "
                    "(--gan-weight 0)");
        return;
    }
    int64_t n = x->shape[0], D = c->net.dim;
    uint64_t step = (uint64_t)c->net.opt->step, base = step * (uint64_t)c->net.cap;
    keep_begin(c);
    for (int64_t i = 0; i < n; i++)
        c->hsig[i] = c->table[rng_uniform_int(c->seed, STREAM_T + c->stream, base + (uint64_t)i, DMD_TABLE_N)];
    rng_normal_fill(c->hnoise, n * D, c->seed, STREAM_EPS + c->stream, base * (uint64_t)D);
    if (c->net.cfg.dropout > 0)
        unet_set_dropout_seed(c->net.unet, rng_u32(c->seed, STREAM_DROP + c->stream, step) |
                                               ((uint64_t)rng_u32(c->seed, STREAM_DROP + c->stream + 1, step) << 32));
    c->be->upload(c->ctx, c->dx, x->data, n * D);
    c->be->upload(c->ctx, c->dnoise, c->hnoise, n * D);
    params_zero_grad(unet_params(c->net.unet));
    float loss = distill_fake_loss(&c->net.edm, c->dx, c->dnoise, c->hsig, lab->data, NULL, n);
    float gan[3] = {0, 0, 0};   /* L_D, mean fake logit, mean real logit */
    if (c->gan) {
        /* W L_D on the same detached samples (fresh draws) and the real batch */
        int64_t m = real->shape[0], cap = c->net.cap;
        uint64_t gb = step * 2 * (uint64_t)cap;
        for (int64_t i = 0; i < n; i++)
            c->hsig[i] = c->table[rng_uniform_int(c->seed, STREAM_GAN_T + c->stream, gb + (uint64_t)i, DMD_TABLE_N)];
        for (int64_t i = 0; i < m; i++)
            c->hsig_r[i] =
                c->table[rng_uniform_int(c->seed, STREAM_GAN_T + c->stream, gb + (uint64_t)(cap + i), DMD_TABLE_N)];
        rng_normal_fill(c->hnoise, n * D, c->seed, STREAM_GAN_EPS + c->stream, gb * (uint64_t)D);
        rng_normal_fill(c->hnoise_r, m * D, c->seed, STREAM_GAN_EPS + c->stream, (gb + (uint64_t)cap) * (uint64_t)D);
        c->be->upload(c->ctx, c->dnoise, c->hnoise, n * D);
        c->be->upload(c->ctx, c->dreal, real->data, m * D);
        c->be->upload(c->ctx, c->dnoise_r, c->hnoise_r, m * D);
        params_zero_grad(&c->head.ps);
        gan[0] = distill_gan_critic(&c->db, &c->net.edm, &c->head, c->gan_w, c->dx, c->dnoise, c->hsig, lab->data,
                                    NULL, n, c->dreal, c->dnoise_r, c->hsig_r, rlab->data, NULL, m);
        gan[1] = (float)c->head.mean_fake;
        gan[2] = (float)c->head.mean_real;
    }
    optim_step(c->net.opt);
    if (c->gan) optim_step(c->hopt);
    keep_end(c);
    c->loss_sum += loss;
    c->gan_loss_sum += gan[0];
    c->updates_logged++;
    WireMsg rep;
    int64_t one = 1;
    wire_reply_init(&rep, req, WIRE_OP_FAKE_TRAIN, WIRE_STATUS_OK);
    wire_msg_add(&rep, "loss", WIRE_F32, 1, &one, &loss);
    if (c->gan) {
        wire_msg_add(&rep, "loss_gan", WIRE_F32, 1, &one, &gan[0]);
        wire_msg_add(&rep, "logit_fake", WIRE_F32, 1, &one, &gan[1]);
        wire_msg_add(&rep, "logit_real", WIRE_F32, 1, &one, &gan[2]);
    }
    serve_reply(sock, &rep);
}

/* GAN_GRAD: dL_G/dx of the generator's samples (no update; the parameter gradients it leaves
 * are zeroed by the next FAKE_TRAIN). */
static void img_critic_gan_grad(void *ctx, void *sock, const WireMsg *req) {
    ImgCritic *c = ctx;
    if (critic_gate_refuse(&c->gate, sock, req)) return;
    if (!c->gan) {
        serve_error(sock, req, WIRE_STATUS_UNKNOWN_OP, "GAN_GRAD: this critic has no GAN head (--gan-weight 0)");
        return;
    }
    const WireTensor *lab, *x = critic_images(c, sock, req, &lab);
    if (!x) return;
    int64_t one = 1, n = x->shape[0], D = c->net.dim;
    const WireTensor *st = serve_tensor(sock, req, "step", WIRE_I64, 1, 1);
    if (!st) return;
    int64_t step = *(const int64_t *)st->data;
    if (step < 0 || step > ((int64_t)1 << 40)) {
        serve_error(sock, req, WIRE_STATUS_BAD_REQUEST, "step = %lld must be in 0..2^40", (long long)step);
        return;
    }
    uint64_t base = (uint64_t)step * (uint64_t)c->net.cap;
    keep_begin(c);
    for (int64_t i = 0; i < n; i++)
        c->hsig[i] = c->table[rng_uniform_int(c->seed, STREAM_GG_T + c->stream, base + (uint64_t)i, DMD_TABLE_N)];
    rng_normal_fill(c->hnoise, n * D, c->seed, STREAM_GG_EPS + c->stream, base * (uint64_t)D);
    if (c->net.cfg.dropout > 0)
        unet_set_dropout_seed(c->net.unet, rng_u32(c->seed, STREAM_GG_DROP + c->stream, (uint64_t)step) |
                                               ((uint64_t)rng_u32(c->seed, STREAM_GG_DROP + c->stream + 1, (uint64_t)step) << 32));
    c->be->upload(c->ctx, c->dx, x->data, n * D);
    c->be->upload(c->ctx, c->dnoise, c->hnoise, n * D);
    float loss = distill_gan_gen_grad(&c->db, &c->net.edm, &c->head, c->dout, c->dx, c->dnoise, c->hsig, lab->data,
                                      NULL, n);
    float lg = 0;
    float *hl = msd_malloc(sizeof(float) * (size_t)n);
    c->be->download(c->ctx, hl, c->head.logit, n);
    for (int64_t i = 0; i < n; i++) lg += hl[i] / (float)n;
    free(hl);
    c->be->download(c->ctx, c->hout, c->dout, n * D);
    keep_end(c);
    WireMsg rep;
    wire_reply_init(&rep, req, WIRE_OP_GAN_GRAD, WIRE_STATUS_OK);
    wire_msg_add(&rep, "dx", WIRE_F32, 4, x->shape, c->hout);
    wire_msg_add(&rep, "loss", WIRE_F32, 1, &one, &loss);
    wire_msg_add(&rep, "logit", WIRE_F32, 1, &one, &lg);
    serve_reply(sock, &rep);
}

/* The checkpoint: the UNet (part ""), with the GAN head its part "gan.". */
static int critic_save(ImgCritic *c, const StMeta *meta, int nmeta, char *err, size_t errlen) {
    if (!c->gan) return edmunet_save(&c->net, c->ckpt, meta, nmeta, err, errlen);
    StMeta all[4 + CKPT_SETTINGS_MAX];
    MSD_CHECK(nmeta < 4 + CKPT_SETTINGS_MAX);
    all[0] = (StMeta){EDMUNET_META_SPEC, (char *)c->net.spec};
    for (int i = 0; i < nmeta; i++) all[1 + i] = meta[i];
    CkptPart parts[2] = {{"", unet_params(c->net.unet), c->net.opt}, {"gan.", &c->head.ps, c->hopt}};
    return checkpoint_save_parts(c->ckpt, parts, 2, all, 1 + nmeta, err, errlen);
}

static void img_critic_denoise(void *ctx, void *sock, const WireMsg *req) {
    ImgCritic *c = ctx;
    if (critic_gate_refuse(&c->gate, sock, req)) return;
    const WireTensor *lab, *x = critic_images(c, sock, req, &lab);
    if (!x) return;
    int64_t n = x->shape[0], D = c->net.dim;
    const WireTensor *s = serve_tensor(sock, req, "sigma", WIRE_F32, 1, n);
    if (!s) return;
    const float *sg = s->data;
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(sg[i]) || !(sg[i] > 0) || sg[i] > 1e6f) {
            serve_error(sock, req, WIRE_STATUS_BAD_REQUEST, "sigma[%lld] = %g must be in (0, 1e6]", (long long)i, sg[i]);
            return;
        }
    keep_begin(c);
    c->be->upload(c->ctx, c->dx, x->data, n * D);
    edm_forward(&c->net.edm, c->dout, c->dx, sg, lab->data, NULL, n, 0);
    c->be->download(c->ctx, c->hout, c->dout, n * D);
    keep_end(c);
    WireMsg rep;
    wire_reply_init(&rep, req, WIRE_OP_DENOISE, WIRE_STATUS_OK);
    wire_msg_add(&rep, "d", WIRE_F32, 4, x->shape, c->hout);
    serve_reply(sock, &rep);
}

static void img_critic_save(void *ctx, void *sock, const WireMsg *req) {
    ImgCritic *c = ctx;
    char err[1024], seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)c->seed);
    char gw[32];
    snprintf(gw, sizeof gw, "%.9g", c->gan_w);
    StMeta meta[3 + CKPT_SETTINGS_MAX] = {{"critic.seed", seed}, {"critic.role", "critic"}, {"critic.gan_weight", gw}};
    int nmeta = c->gan ? 3 : 2;
    nmeta += ckpt_settings_meta(&c->set, meta + nmeta, CKPT_SETTINGS_MAX);
    if (critic_gate_refuse(&c->gate, sock, req)) return;
    int64_t updates = c->net.opt->step;
    keep_begin(c);
    int rc = fs_mkdir_parent(c->ckpt, err, sizeof err) ||
             (updates != c->saved_updates && critic_keep_prev(c->ckpt, err, sizeof err)) ||
             critic_save(c, meta, nmeta, err, sizeof err);
    keep_end(c);
    if (!rc) c->saved_updates = updates;
    if (rc) {
        serve_error(sock, req, WIRE_STATUS_INTERNAL, "save: %s", err);
        return;
    }
    WireMsg rep;
    wire_reply_init(&rep, req, WIRE_OP_SAVE, WIRE_STATUS_OK);
    serve_reply(sock, &rep);
}

/* Every few seconds: the mean fake-score loss since the last line. */
static void img_critic_log(void *ctx) {
    ImgCritic *c = ctx;
    if (msd_now() <= c->next_log || !c->updates_logged) return;
    if (c->gan)
        log_info("update %lld: fake-score loss %.4f, GAN loss L_D %.4f (means of the last %ld)",
                 (long long)c->net.opt->step, c->loss_sum / c->updates_logged, c->gan_loss_sum / c->updates_logged,
                 c->updates_logged);
    else
        log_info("update %lld: fake-score loss %.4f (mean of the last %ld)", (long long)c->net.opt->step,
                 c->loss_sum / c->updates_logged, c->updates_logged);
    c->loss_sum = 0;
    c->gan_loss_sum = 0;
    c->updates_logged = 0;
    c->next_log = msd_now() + 5;
}

/* The network of checkpoint `path` must be ours (a clearer message than a tensor's shape). */
static int same_spec(const EdmUNet *n, const char *path, const char *what, char *err, size_t errlen) {
    char spec[512], e[1024];
    int r = edmunet_read_spec(path, spec, sizeof spec, e, sizeof e);
    if (r < 0) return msd_errf(err, errlen, "%s: %s", what, e);
    if (r == 0 && strcmp(spec, n->spec))
        return msd_errf(err, errlen, "%s: %s holds the network '%s', not '%s' (--net)", what, path, spec, n->spec);
    return 0;
}

/* The network (and GAN head) built afresh, then `file`'s state: with `resume` a checkpoint of
 * this critic (weights, AdamW moments, update count; with --gan-weight its GAN head and the
 * head's AdamW), whose run settings must be this run's (checkpoint_check_settings, as the toy
 * critic's every load of its --ckpt or .prev), else --init's EMA weights at update 0 with a
 * freshly initialised head (not compared: --init is another run's, e.g. stage 2's critic for
 * stage 3). The start of a run and RESUME both come here, so a rollback to update 0 or to a
 * checkpoint is the state a fresh start or a resumed run would have. 0, or -1 with a message. */
static int img_critic_build(ImgCritic *c, const char *file, int resume, char *err, size_t errlen) {
    char e[1024];
    const char *what = resume ? "resuming" : "--init";
    optim_destroy(&c->hopt);
    gan_head_free(&c->head);
    edmunet_free(&c->net);
    if (edmunet_new(&c->net, c->spec, c->be, c->ctx, opt.cap, &c->oc, c->seed, e, sizeof e))
        return msd_errf(err, errlen, "--net: %s", e);
    if (c->net.cfg.label_dim <= 0)
        return msd_errf(err, errlen, "the critic %s is unconditional: stage 2's critics need classes=N", c->net.spec);
    if (same_spec(&c->net, file, what, err, errlen)) return -1;
    if (c->gan) {
        int64_t chw[3];
        unet_bottleneck_shape(c->net.unet, chw);
        if (gan_head_init(&c->head, chw[0], chw[1], chw[2], opt.cap, c->be, c->ctx, e, sizeof e))
            return msd_errf(err, errlen, "--gan-weight: %s (the critic %s)", e, c->net.spec);
        gan_head_init_weights(&c->head, c->seed + GAN_HEAD_SEED + c->stream);
        c->hopt = optim_new(&c->head.ps, &c->oc);
    }
    if (resume) {
        CheckpointMeta m = {0};
        CkptPart parts[2] = {{"", unet_params(c->net.unet), c->net.opt}, {"gan.", &c->head.ps, c->hopt}};
        if (c->gan ? checkpoint_load_parts(file, parts, 2, &m, e, sizeof e) : edmunet_load(&c->net, file, 0, &m, e, sizeof e))
            return msd_errf(err, errlen, "resuming: %s%s", e,
                            c->gan ? " (a critic with --gan-weight resumes from a checkpoint with its GAN head)" : "");
        int changed = checkpoint_check_settings(file, &m, &c->set, opt.allow_changed, e, sizeof e);
        checkpoint_meta_free(&m);
        if (changed) return msd_errf(err, errlen, "resuming: %s", e);
        log_info("resumed from %s at update %lld%s", file, (long long)c->net.opt->step, c->gan ? " (with its GAN head)" : "");
    } else {
        Optim *keep = c->net.opt;
        c->net.opt = NULL;
        int rc = edmunet_load(&c->net, file, 1, NULL, e, sizeof e);
        c->net.opt = keep;
        if (rc)
            return msd_errf(err, errlen, "--init: %s", e);
        log_info("initialised from %s", file);
    }
    return 0;
}

static int img_critic_load_counted(void *ctx, const char *file, int64_t *updates, char *err, size_t errlen) {
    ImgCritic *c = ctx;
    if (img_critic_build(c, file, 1, err, errlen)) return -1;
    *updates = c->net.opt->step;
    return 0;
}

/* RESUME {"updates" i64 (1), "span" i64 (1) optional}: the student (re)starts at the step after
 * which this critic had taken `updates` updates, and takes up the critic updates of its next
 * step part-way, so any count in updates .. updates + span will do: keep the current state when
 * it holds one (the update count names the state: every draw is keyed by it and the student's
 * requests are a function of its step), else roll back to --ckpt or --ckpt.prev holding one,
 * or to --init's weights for 0. The reply says the count held; serving starts (again) with it. */
static void img_critic_resume(void *ctx, void *sock, const WireMsg *req) {
    ImgCritic *c = ctx;
    int64_t want, span, held = c->net.opt->step;
    char err[1024], from[4200] = "its current state";
    if (critic_resume_begin(&c->gate, sock, req, &want, &span)) return;
    int r = 0;
    if (held < want || held > want + span) {
        keep_begin(c);
        if (want == 0) {
            r = img_critic_build(c, c->init, 0, err, sizeof err);
            held = 0;
            snprintf(from, sizeof from, "%s", c->init);
        } else {
            r = critic_find_updates(c->ckpt, want, span, img_critic_load_counted, c, &held, from, sizeof from, err,
                                    sizeof err);
        }
        keep_end(c);
    }
    if (r) {
        serve_error(sock, req, r < 0 ? WIRE_STATUS_INTERNAL : WIRE_STATUS_BAD_REQUEST, "resume: %s", err);
        return;
    }
    critic_resume_done(&c->gate, sock, req, held, from);
}

static int img_critic_open(Proc *p, ImgCritic *c) {
    char err[1024], spec[512];
    struct stat st;
    c->p = p;
    c->seed = opt.seed;
    long k = proc_name_index(p->name);
    c->stream = k > 0 ? (uint64_t)k << 32 : 0;
    c->ckpt = opt.ckpt;
    /* the writer's lock, held until the process ends (a restart by the launcher starts after
     * its predecessor was reaped, when the kernel has dropped it): a second run on this file
     * refuses here, before it reads or writes it */
    if (fs_mkdir_parent(c->ckpt, err, sizeof err) || fs_lock_writer(c->ckpt, err, sizeof err) < 0)
        return msd_fail(2, "%s", err);
    /* what this run's checkpoints must agree with to resume (not paths, threads) */
    ckpt_settings_add(&c->set, "seed", "%llu", (unsigned long long)opt.seed);
    ckpt_settings_add(&c->set, "lr", "%.7g", opt.lr);
    ckpt_settings_add(&c->set, "cap", "%d", opt.cap);
    ckpt_settings_add(&c->set, "gan-weight", "%.7g", opt.gan_weight);
    int resume = stat(c->ckpt, &st) == 0;
    /* --init DIR: stage 1's checkpoint of its student K in it (critic.K starts as student K's TSM net) */
    char init[4096];
    if (stat(opt.init, &st) == 0 && S_ISDIR(st.st_mode))
        snprintf(init, sizeof init, "%s/student.%ld.safetensors", opt.init, k > 0 ? k : 0);
    else snprintf(init, sizeof init, "%s", opt.init);
    if (!resume && stat(init, &st) != 0)
        return msd_fail(2, "--init %s: cannot open (the critic's starting weights; no checkpoint %s to resume either)",
                        init, c->ckpt);
    const char *from = resume ? c->ckpt : init;
    if (!strcmp(opt.spec, "init")) {
        int r = edmunet_read_spec(from, spec, sizeof spec, err, sizeof err);
        if (r < 0) return msd_fail(2, "%s: %s", resume ? "resuming" : "--init", err);
        if (r > 0) return msd_fail(2, "%s names no network (no \"%s\" metadata): pass --net SPEC", from, EDMUNET_META_SPEC);
    } else {
        snprintf(spec, sizeof spec, "%s", opt.spec);
    }
    c->be = p->gpu >= 0 ? proc_gpu(p, err, sizeof err) : backend_get(device_cpu(), err, sizeof err);
    if (!c->be || backend_missing(c->be, err, sizeof err)) return msd_fail(1, "backend: %s", err);
    c->ctx = backend_ctx_new(c->be, opt.threads);
    optim_config_default(&c->oc);
    c->oc.lr = opt.lr;
    c->oc.weight_decay = opt.weight_decay;
    c->oc.grad_clip = opt.grad_clip;
    c->gan_w = opt.gan_weight;
    c->gan = opt.gan_weight > 0;
    snprintf(c->spec, sizeof c->spec, "%s", spec);
    snprintf(c->init, sizeof c->init, "%s", init);
    if (img_critic_build(c, from, resume, err, sizeof err)) return msd_fail(2, "%s", err);
    c->saved_updates = resume ? c->net.opt->step : -1;
    if (c->gan) distill_buf_init(&c->db, c->be, c->ctx, opt.cap, c->net.dim);
    dmd_sigma_table(c->table, DMD_TABLE_N);
    int64_t cap = opt.cap, D = c->net.dim;
    c->hnoise = msd_malloc(sizeof(float) * (size_t)(cap * D));
    c->hout = msd_malloc(sizeof(float) * (size_t)(cap * D));
    c->hsig = msd_malloc(sizeof(float) * (size_t)cap);
    c->dx = c->be->alloc(c->ctx, cap * D);
    c->dnoise = c->be->alloc(c->ctx, cap * D);
    c->dout = c->be->alloc(c->ctx, cap * D);
    if (c->gan) {
        c->hnoise_r = msd_malloc(sizeof(float) * (size_t)(cap * D));
        c->hsig_r = msd_malloc(sizeof(float) * (size_t)cap);
        c->dreal = c->be->alloc(c->ctx, cap * D);
        c->dnoise_r = c->be->alloc(c->ctx, cap * D);
        log_info("GAN head on the %lldx%lldx%lld bottleneck (%lld parameters), L_D weight %g", (long long)c->head.C,
                 (long long)c->head.H, (long long)c->head.W, (long long)params_count(&c->head.ps), c->gan_w);
    }
    log_info("fake-score net %s (%lld parameters) on %s, lr %g, cap %d", c->net.spec,
             (long long)params_count(unet_params(c->net.unet)), c->be->name, opt.lr, opt.cap);
    return 0;
}

static void img_critic_free(ImgCritic *c) {
    if (c->be && c->dx) {
        c->be->free(c->ctx, c->dx);
        c->be->free(c->ctx, c->dnoise);
        c->be->free(c->ctx, c->dout);
    }
    if (c->be && c->dreal) {
        c->be->free(c->ctx, c->dreal);
        c->be->free(c->ctx, c->dnoise_r);
    }
    optim_destroy(&c->hopt);
    gan_head_free(&c->head);
    distill_buf_free(&c->db);
    edmunet_free(&c->net);
    if (c->ctx) backend_ctx_destroy(&c->ctx);
    free(c->hnoise); free(c->hout); free(c->hsig); free(c->hnoise_r); free(c->hsig_r);
}

int critic_image_run(Proc *p) {
    static ImgCritic c;
    memset(&c, 0, sizeof c);
    int rc = img_critic_open(p, &c);
    if (rc) {
        img_critic_free(&c);
        return rc;
    }
    void *serve = serve_socket(p, "--mode image");
    if (!serve) {
        img_critic_free(&c);
        return 2;
    }
    static const ServeOp ops[] = {
        {WIRE_OP_DENOISE, img_critic_denoise}, {WIRE_OP_FAKE_TRAIN, img_critic_train}, {WIRE_OP_SAVE, img_critic_save},
        {WIRE_OP_GAN_GRAD, img_critic_gan_grad}, {WIRE_OP_RESUME, img_critic_resume}};
    c.next_log = msd_now() + 5;
    serve_loop(p, serve, ops, 5, &c, img_critic_log, "critic");
    img_critic_free(&c);
    return proc_finish(p);
}
