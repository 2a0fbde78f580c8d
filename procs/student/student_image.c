/* student_image.c: msd-student's image training modes (docs/DISTILL.md): --mode image-train,
 * stage 2 (DM, distribution matching) of one student (docs/ALGORITHMS.md sections 2.1-2.6 and
 * 2.10), and --mode tsm-train, stage 1 (TSM, teacher score matching, section 3.3) of a student
 * smaller than the teacher. Both share the set-up (partition, network, resume), checkpoints,
 * progress lines and grids below.
 *
 * Stage 2 (image-train):
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
 * (weights, EMA, AdamW moments, step; atomic): a restart after kill -9 resumes there, and
 * first sends RESUME to the critic with its update count at that step (the critic keeps the
 * checkpoint before as .prev: a kill between the two saves leaves it one checkpoint ahead). Progress
 * lines and JSON-lines metrics (--metrics); every --grid-every steps and at the end a PNG grid
 * of EMA samples of its classes (one row per class, fixed noise). Long computations run under
 * proc_keepalive, so the launcher keeps hearing from a student busy for seconds.
 * One run per folder (both modes; docs/DISTILL.md "One run per folder"): the student holds the
 * writer's lock on its checkpoint (fs_lock_writer) for its life, and its checkpoints record the
 * run's settings (run.*: the partition's hash, seed, batch, lr, ema; stage 2/3 also ttur,
 * critic-warmup, adm, gan-weight), compared when it resumes (--allow-changed-settings 1: a
 * warning instead of a refusal).
 *
 * With --adm (stage 3, ADM: docs/ALGORITHMS.md sections 2.7 and 2.10, docs/DISTILL.md "Stage 3")
 * the critic has a GAN head (msd-critic --gan-weight): every FAKE_TRAIN also carries the real
 * images of the data batch whose labels condition the fake samples ("real", "real_label"), and
 * every generator step also sends GAN_GRAD (its clean samples x, keyed by the step) to the
 * critic, whose dL_G/dx enters distill_dm_backward with weight --gan-weight. --init-raw takes
 * --init's raw weights instead of its EMA (resuming a stage-2 generator where DM left it).
 *
 * Stage 1 (tsm-train): the small UNet (--net SPEC, initialised from --seed, or --init) is trained
 * as a multi-step denoiser on real images of its classes: step s takes data step s (BATCH with
 * "x"), ln sigma ~ N(P_mean, P_std^2) (EDM's training distribution, edm.h) and eps keyed by
 * (--seed, student, s) (STREAM_SIGMA, STREAM_EPS), x_t = x0 + sigma eps goes to the teacher
 * (DENOISE), and distill_tsm_loss regresses D_phi(x_t; sigma, c) onto its answer; AdamW (clip,
 * weight decay) and EMA. Checkpoints (role "tsm"), progress lines and metrics as in stage 2 (no
 * critic); grids are --grid-steps Heun steps of the EMA denoiser (sampler.h). Its checkpoint is
 * stage 2's --init for the generator and the critic of the same spec (--init DIR: a folder of
 * stage-1 checkpoints, DIR/student.K.safetensors for student K).
 *
 * Not here: serving the image students. */
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
#include "student.h"
#include "student_image.h"

/* streams of the draws; the student's index goes into bits 32.. */
#define STREAM_Z 0x737a000000000001ull
#define STREAM_T 0x737a000000000002ull
#define STREAM_EPS 0x737a000000000003ull
#define STREAM_GRID 0x737a000000000004ull
#define STREAM_DROP 0x737a000000000005ull
#define STREAM_SIGMA 0x737a000000000006ull   /* TSM: ln sigma */
#define WARMUP_DATA_BASE ((int64_t)1 << 40)
#define GRID_MAX_ROWS 32
#define MAX_ROUND 64
#define STOP_SAVE_MS 20000   /* the most a checkpoint on STOP waits for the critic's SAVE */

typedef struct ImgOpts {
    const char *init, *spec, *part, *ckpt_dir, *metrics, *grid_dir;
    int index, batch, steps, ttur, warmup, ckpt_every, log_every, grid_every, grid_per_class, grid_steps, lr_warmup,
        threads, timeout_ms, wait_ms, adm, init_raw, allow_changed;
    float lr, weight_decay, grad_clip, ema, gan_weight;
    uint64_t seed;
} ImgOpts;

static ImgOpts opt = {.spec = "init", .index = -1, .batch = 16, .steps = 1000, .ttur = 5, .warmup = 0,
                      .ckpt_every = 100, .log_every = 10, .grid_every = 500, .grid_per_class = 8,
                      .grid_steps = 8, .timeout_ms = 120000, .wait_ms = 600000, .lr = 2e-6f, .weight_decay = 0.01f, .grad_clip = 10,
                      .ema = 0.999f, .gan_weight = DISTILL_GAN_W_GEN, .seed = 1};

/* what both modes take */
static const ArgSpec student_image_common_args[] = {
    ARG_STR_REQ("--partition", &opt.part, "FILE", "partition file (partition.h): the classes this student owns"),
    ARG_STR_REQ("--ckpt-dir", &opt.ckpt_dir, "DIR", "where student.K.safetensors is written (and resumed from)"),
    ARG_STR("--net", &opt.spec, "SPEC", "generator UNet CONFIG-SPEC (default init: the --init file's)"),
    ARG_INT("--index", &opt.index, 0, 1 << 20, "K", "this student's line of the partition (default: K of the name student.K)"),
    ARG_INT("--batch", &opt.batch, 1, 1 << 16, "B", "images per step (and per critic update) (default 16)"),
    ARG_INT("--steps", &opt.steps, 0, 1 << 30, "N", "training steps in all (default 1000)"),
    ARG_INT("--lr-warmup", &opt.lr_warmup, 0, 1 << 30, "N", "linear learning-rate warm-up steps (default 0)"),
    ARG_FLOAT("--weight-decay", &opt.weight_decay, 0, 1, "W", "AdamW decoupled weight decay (default 0.01)"),
    ARG_FLOAT("--grad-clip", &opt.grad_clip, 0, 1e9, "C", "global gradient-norm clip, 0: none (default 10)"),
    ARG_FLOAT("--ema", &opt.ema, 0, 1, "D", "per-step EMA decay of the weights in grids and checkpoints (default 0.999)"),
    ARG_U64("--seed", &opt.seed, "S", "seed of the draws (default 1)"),
    ARG_INT("--ckpt-every", &opt.ckpt_every, 0, 1 << 30, "N", "steps between checkpoints (default 100; 0: only at the end)"),
    ARG_INT("--log-every", &opt.log_every, 1, 1 << 30, "N", "steps between progress lines and metrics (default 10)"),
    ARG_STR("--metrics", &opt.metrics, "FILE", "JSON lines: student, step, the losses, s_per_step, eta_s, ..."),
    ARG_INT("--grid-every", &opt.grid_every, 0, 1 << 30, "N", "steps between sample grids (default 500; 0: only at the end)"),
    ARG_STR("--grid-dir", &opt.grid_dir, "DIR", "grids go to DIR/student.K/grid-STEP.png (default: the checkpoint folder's\n"
            "../grids)"),
    ARG_INT("--grid-per-class", &opt.grid_per_class, 1, 64, "N", "images per class in a grid row (default 8)"),
    ARG_INT("--threads", &opt.threads, 0, 1024, "T", "CPU threads (default: $MSD_THREADS, else all cores)"),
    ARG_INT("--timeout-ms", &opt.timeout_ms, 1, 86400000, "MS", "how long a peer may take to answer (default 120000)"),
    ARG_INT("--peer-wait-ms", &opt.wait_ms, 0, 86400000, "MS",
            "how long to keep resending and rolling back while a peer restarts, without a finished step\n"
            "(default 600000; 0: fail at once)"),
    ARG_FLAG("--init-raw", &opt.init_raw, "take --init's raw weights, not its EMA weights (a stage-2 student checkpoint)"),
    ARG_INT("--allow-changed-settings", &opt.allow_changed, 0, 1, "0|1", "1: resume even when the checkpoint was\n"
            "written with other settings (seed, batch, lr, ...; default 0: refuse)"),
    ARG_END_,
};

const ArgSpec student_image_train_args[] = {
    ARG_STR_REQ("--init", &opt.init, "FILE", "the generator's starting weights (EMA weights when the file has them):\n"
                "the teacher for a student of its size; a folder: its student.K.safetensors (stage 1's\n"
                "checkpoints, K this student's index); ignored when the student's checkpoint exists"),
    ARG_INCLUDE(student_image_common_args),
    ARG_INT("--ttur", &opt.ttur, 0, MAX_ROUND, "T", "critic updates per generator step (default 5)"),
    ARG_INT("--critic-warmup", &opt.warmup, 0, 1 << 20, "W", "critic updates before the first step (default 0: the\n"
            "critic starts as the teacher)"),
    ARG_FLOAT("--lr", &opt.lr, 0, 1, "LR", "AdamW learning rate (default 2e-6, DMD2's)"),
    ARG_FLAG("--adm", &opt.adm, "stage 3 (ADM): real images to the critic's GAN head, its dL_G/dx into every generator step"),
    ARG_FLOAT("--gan-weight", &opt.gan_weight, 0, 1e6, "W", "weight of the generator's GAN loss L_G with --adm (default\n"
              "3e-3, DMD2's)"),
    ARG_END_,
};

static float tsm_lr = 1e-4f;
const ArgSpec student_tsm_train_args[] = {
    ARG_STR("--init", &opt.init, "FILE", "starting weights (EMA weights when the file has them; a folder: its\n"
            "student.K.safetensors); default none: fresh weights of --net from --seed"),
    ARG_INCLUDE(student_image_common_args),
    ARG_FLOAT("--lr", &tsm_lr, 0, 1, "LR", "AdamW learning rate (default 1e-4)"),
    ARG_INT("--grid-steps", &opt.grid_steps, 1, 1000, "N", "Heun steps of the grid sampler (default 8)"),
    ARG_END_,
};

typedef struct ImgTrain {
    Proc *p;
    ImgOpts o;
    int tsm;                   /* stage 1 (tsm-train): no critic; batches carry images */
    Rpc rpc;
    void *data, *teacher, *critic;   /* critic: NULL in stage 1 */
    const Backend *be;
    BackendCtx *ctx;
    EdmUNet g;                 /* the generator (training buffers, AdamW with EMA) */
    EdmUNet ema;               /* the EMA weights for grids (inference buffers) */
    int ema_ready;
    double last_progress;      /* when the last step finished (or the run started) */
    int64_t saved_step;        /* the step of --ckpt-dir's checkpoint as last written or read, -1 none */
    DistillBuf db;
    int nclasses, nowned;
    int32_t owned[GRID_MAX_ROWS];   /* the first classes it owns (grid rows) */
    unsigned char *mine;       /* mine[c]: class c is this student's */
    char ckpt[4096], grid_dir[4096], init[4096];   /* init: --init resolved (a folder's student.K) */
    CkptSettings set;          /* the run's settings: recorded in its checkpoints, checked on resume */
    FILE *metrics;
    float table[DMD_TABLE_N];
    int64_t D;
    float *hz, *hx, *hsig, *heps;   /* host (B, D), (B); stage 1: the images in hx */
    float *dz, *dx, *deps, *dxt, *dreal, *dfake;   /* device (B, D) */
    int32_t *label;
    double fake_loss_sum;
    long fake_loss_n;
    /* --adm */
    float *hreal, *hxc;        /* host (B, D): the data batch's real images, the clean samples */
    float *dgan;               /* device (B, D): the critic's dL_G/dx */
    double gan_d_sum, logit_fake_sum, logit_real_sum, gan_g_sum;   /* since the last metrics line */
    long gan_g_n;
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
 * step into s->hz; in stage 1 the step's images into s->hx instead of z. */
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
    if (ok && s->o.adm) {
        const UNetConfig *c = &s->g.cfg;
        int64_t shape[4] = {count, c->in_ch, c->res, c->res};
        const WireTensor *x = rpc_tensor_shape(&s->rpc, &rep, "data", "x", WIRE_F32, 4, shape);
        if (x) memcpy(s->hreal, x->data, sizeof(float) * (size_t)(count * s->D));
        else ok = 0;
    }
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
    if (ok && s->tsm) {
        int64_t shape[4] = {count, s->g.cfg.in_ch, s->g.cfg.res, s->g.cfg.res};
        const WireTensor *x = rpc_tensor_shape(&s->rpc, &rep, "data", "x", WIRE_F32, 4, shape);
        if (x) memcpy(s->hx, x->data, sizeof(float) * (size_t)(count * s->D));
        else ok = 0;
    }
    wire_msg_close(&rep);
    if (!ok) return -1;
    if (s->tsm) return 0;
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
        if (s->o.adm) {
            wire_msg_add(&req, "real", WIRE_F32, 4, shape, s->hreal);
            wire_msg_add(&req, "real_label", WIRE_I32, 1, shape, s->label);
        }
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
        if (l && s->o.adm) {
            const WireTensor *gd = rpc_tensor_shape(&s->rpc, &rep, "critic", "loss_gan", WIRE_F32, 1, &one);
            const WireTensor *lf = gd ? rpc_tensor_shape(&s->rpc, &rep, "critic", "logit_fake", WIRE_F32, 1, &one) : NULL;
            const WireTensor *lr = lf ? rpc_tensor_shape(&s->rpc, &rep, "critic", "logit_real", WIRE_F32, 1, &one) : NULL;
            if (lr) {
                s->gan_d_sum += *(const float *)gd->data;
                s->logit_fake_sum += *(const float *)lf->data;
                s->logit_real_sum += *(const float *)lr->data;
            } else {
                l = NULL;
            }
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
    if (s->o.adm) s->be->download(s->ctx, s->hxc, s->dx, B * D);
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
    uint64_t gid = 0;
    if (s->o.adm) {
        /* the critic's dL_G/dx of the clean samples (it answers after the DENOISE above) */
        WireMsg g;
        int64_t one = 1, st = step;
        gid = rpc_id(&s->rpc);
        wire_msg_init(&g, WIRE_OP_GAN_GRAD, gid);
        wire_msg_add(&g, "x", WIRE_F32, 4, shape, s->hxc);
        wire_msg_add(&g, "label", WIRE_I32, 1, shape, s->label);
        wire_msg_add(&g, "step", WIRE_I64, 1, &one, &st);
        if (rpc_send(&s->rpc, s->critic, "critic", &g)) return -1;
    }
    void *socks[2] = {s->teacher, s->critic};
    const char *peers[2] = {"teacher", "critic"};
    uint64_t ids[2] = {id, id};
    uint32_t ops[2] = {WIRE_OP_DENOISE, WIRE_OP_DENOISE};
    WireMsg reps[2];
    if (rpc_await(&s->rpc, 2, socks, peers, ids, ops, reps)) return -1;
    const WireTensor *dr = rpc_tensor_shape(&s->rpc, &reps[0], "teacher", "d", WIRE_F32, 4, shape);
    const WireTensor *df = dr ? rpc_tensor_shape(&s->rpc, &reps[1], "critic", "d", WIRE_F32, 4, shape) : NULL;
    int ok = df != NULL;
    WireMsg grep_;
    int have_g = 0;
    if (ok && s->o.adm) {
        const char *peer = "critic";
        uint32_t op = WIRE_OP_GAN_GRAD;
        int64_t one = 1;
        ok = have_g = rpc_await(&s->rpc, 1, &s->critic, &peer, &gid, &op, &grep_) == 0;
        const WireTensor *gx = ok ? rpc_tensor_shape(&s->rpc, &grep_, "critic", "dx", WIRE_F32, 4, shape) : NULL;
        const WireTensor *gl = gx ? rpc_tensor_shape(&s->rpc, &grep_, "critic", "loss", WIRE_F32, 1, &one) : NULL;
        ok = gl != NULL;
        if (ok) {
            s->be->upload(s->ctx, s->dgan, gx->data, B * D);
            s->gan_g_sum += *(const float *)gl->data;
            s->gan_g_n++;
        }
    }
    if (ok) {
        keep_begin(s);
        s->be->upload(s->ctx, s->dreal, dr->data, B * D);
        s->be->upload(s->ctx, s->dfake, df->data, B * D);
        params_zero_grad(unet_params(s->g.unet));
        *loss = distill_dm_backward(&s->db, &s->g.edm, s->dx, s->dreal, s->dfake, s->o.adm ? s->dgan : NULL,
                                    s->o.gan_weight, B);
        optim_step(s->g.opt);
        keep_end(s);
    }
    wire_msg_close(&reps[0]);
    wire_msg_close(&reps[1]);
    if (have_g) wire_msg_close(&grep_);
    return ok ? 0 : -1;
}

/* The checkpoint's "student.role": which stage wrote it (a run resumes only its own stage's). */
static const char *img_role(const ImgTrain *s) { return s->tsm ? "tsm" : "student"; }

/* One TSM step (stage 1) on data step `step`; L_TSM into *loss. */
static int tsm_step(ImgTrain *s, int64_t step, double *loss) {
    if (img_fetch(s, step)) return -1;
    const UNetConfig *c = &s->g.cfg;
    int64_t B = s->o.batch, D = s->D, shape[4] = {B, c->in_ch, c->res, c->res};
    uint64_t base = (uint64_t)step * (uint64_t)B;
    for (int64_t i = 0; i < B; i++)
        s->hsig[i] = expf(EDM_P_MEAN + EDM_P_STD * rng_normal1(s->o.seed, stream_of(s, STREAM_SIGMA), base + (uint64_t)i));
    keep_begin(s);
    s->be->upload(s->ctx, s->dx, s->hx, B * D);
    rng_normal_fill(s->heps, B * D, s->o.seed, stream_of(s, STREAM_EPS), base * (uint64_t)D);
    s->be->upload(s->ctx, s->deps, s->heps, B * D);
    distill_add_noise(&s->db, s->dxt, s->dx, s->deps, s->hsig, B);
    s->be->download(s->ctx, s->hx, s->dxt, B * D);
    keep_end(s);
    WireMsg req, rep;
    wire_msg_init(&req, WIRE_OP_DENOISE, rpc_id(&s->rpc));
    wire_msg_add(&req, "x", WIRE_F32, 4, shape, s->hx);
    wire_msg_add(&req, "sigma", WIRE_F32, 1, shape, s->hsig);
    wire_msg_add(&req, "label", WIRE_I32, 1, shape, s->label);
    if (rpc_call(&s->rpc, s->teacher, "teacher", &req, &rep)) return -1;
    const WireTensor *dt = rpc_tensor_shape(&s->rpc, &rep, "teacher", "d", WIRE_F32, 4, shape);
    if (dt) {
        keep_begin(s);
        s->be->upload(s->ctx, s->dreal, dt->data, B * D);
        params_zero_grad(unet_params(s->g.unet));
        img_dropout_seed(s, step);
        *loss = distill_tsm_loss(&s->db, &s->g.edm, s->dxt, s->dreal, s->hsig, s->label, NULL, B);
        optim_step(s->g.opt);
        keep_end(s);
    }
    wire_msg_close(&rep);
    return dt ? 0 : -1;
}

static int img_checkpoint(ImgTrain *s) {
    WireMsg req, rep;
    int64_t one = 1, step = s->g.opt->step;
    if (s->critic) {
        wire_msg_init(&req, WIRE_OP_SAVE, rpc_id(&s->rpc));
        wire_msg_add(&req, "step", WIRE_I64, 1, &one, &step);
        if (rpc_call(&s->rpc, s->critic, "critic", &req, &rep)) return -1;
        wire_msg_close(&rep);
    }
    char err[1024], idx[32], seed[32];
    snprintf(idx, sizeof idx, "%d", s->o.index);
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)s->o.seed);
    StMeta meta[3 + CKPT_SETTINGS_MAX] = {{"student.index", idx}, {"student.seed", seed},
                                          {"student.role", (char *)img_role(s)}};
    int nmeta = 3 + ckpt_settings_meta(&s->set, meta + 3, CKPT_SETTINGS_MAX);
    keep_begin(s);
    int rc = edmunet_save(&s->g, s->ckpt, meta, nmeta, err, sizeof err);
    keep_end(s);
    if (rc) {
        snprintf(s->rpc.err, sizeof s->rpc.err, "checkpoint: %s", err);
        return -1;
    }
    s->saved_step = step;
    log_info("checkpoint %s at step %lld", s->ckpt, (long long)step);
    return 0;
}

/* A grid of EMA samples: one row of --grid-per-class images per owned class (at most 32 rows),
 * the same noise every time: the one-step generator's (stage 2), or --grid-steps Heun steps of
 * the denoiser (stage 1, sampler.h). */
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
    int nfe = 1;   /* network evaluations per image */
    if (s->tsm) {
        SamplerConfig sc;
        sampler_config_default(&sc);
        sc.steps = s->o.grid_steps;
        nfe = edmunet_sample(&s->ema, &sc, hz, labels, n, s->o.seed, (uint64_t)s->o.index * (uint64_t)n);
    } else {
        rng_normal_fill(hz, n * D, s->o.seed, stream_of(s, STREAM_GRID), 0);
        for (int64_t i = 0; i < n * D; i++) hz[i] *= DMD_SIGMA_GEN;
        float *dz = s->be->alloc(s->ctx, n * D), *dout = s->be->alloc(s->ctx, n * D);
        s->be->upload(s->ctx, dz, hz, n * D);
        edm_forward(&s->ema.edm, dout, dz, sig, labels, NULL, n, 0);
        s->be->download(s->ctx, hz, dout, n * D);
        s->be->free(s->ctx, dz);
        s->be->free(s->ctx, dout);
    }
    snprintf(path, sizeof path, "%s/grid-%07lld.png", s->grid_dir, (long long)s->g.opt->step);
    int rc = image_write_grid(path, hz, n, c->in_ch, c->res, c->res, per, err, sizeof err);
    keep_end(s);
    if (rc) snprintf(s->rpc.err, sizeof s->rpc.err, "grid: %s", err);
    else if (s->tsm)
        log_info("grid %s: %lld EMA samples of %d classes, %d Heun steps, NFE %d (%.1f s)", path, (long long)n, rows,
                 s->o.grid_steps, nfe, msd_now() - t0);
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

/* A progress line and a metrics line after step `done` (of a run resumed at `start`, started
 * at t_run): losses is the line's part with the losses, losses_json the JSON members. */
static void img_report(ImgTrain *s, int64_t done, int64_t start, double t_run, const char *losses,
                       const char *losses_json) {
    const ImgOpts *o = &s->o;
    double el = msd_now() - t_run, per_step = el / (double)(done - start);
    double rate = o->batch / (per_step > 0 ? per_step : 1e-9), eta = (double)(o->steps - done) * per_step;
    char eta_s[32];
    format_eta(eta, eta_s, sizeof eta_s);
    log_info("step %lld/%d  %s  grad_norm %.3g  %.2f s/step  %.1f img/s  %s left", (long long)done, o->steps, losses,
             s->g.opt->last_grad_norm, per_step, rate, eta_s);
    if (s->metrics) {
        fprintf(s->metrics,
                "{\"student\": %d, \"step\": %lld, %s, \"grad_norm\": %.9g, \"lr\": %.6g, \"s_per_step\": %.4f, "
                "\"images_per_s\": %.2f, \"elapsed_s\": %.3f, \"eta_s\": %.1f}\n",
                o->index, (long long)done, losses_json, s->g.opt->last_grad_norm, s->g.opt->last_lr, per_step, rate, el,
                eta);
        fflush(s->metrics);
    }
}

static int img_train_loop(ImgTrain *s) {
    const ImgOpts *o = &s->o;
    int64_t start = s->g.opt->step;
    /* the critic to the state of this step (it may be a checkpoint ahead: it saves first), or
     * part-way through the updates of the next step (a checkpoint on STOP, docs/DISTILL.md):
     * those it already took are not sent again. A warm-up is redone from 0. */
    int64_t lo = student_critic_updates(start, o->warmup, o->ttur), held = lo;
    int64_t span = start > 0 || o->warmup == 0 ? o->ttur : 0;
    if (s->critic && student_resume_critic_span(&s->rpc, s->critic, lo, span, &held)) return -1;
    int done_first = (int)(held - lo);   /* critic updates of step start + 1 already taken */
    if (done_first > 0)
        log_info("the critic is at update %lld: %d of step %lld's %d updates are done", (long long)held, done_first,
                 (long long)start + 1, o->ttur);
    if (start == 0 && o->warmup > 0 && !s->tsm) {
        log_info("warming up the critic: %d updates on the initial generator's samples", o->warmup);
        for (int w = 0; w < o->warmup; w += MAX_ROUND) {
            int n = o->warmup - w < MAX_ROUND ? o->warmup - w : MAX_ROUND;
            if (img_critic_round(s, n, WARMUP_DATA_BASE + w)) return -1;
        }
        log_info("critic warm-up done: fake-score loss %.4f", s->fake_loss_sum / (s->fake_loss_n ? s->fake_loss_n : 1));
        s->fake_loss_sum = 0;
        s->fake_loss_n = 0;
        s->gan_d_sum = s->logit_real_sum = s->logit_fake_sum = 0;
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
        double loss;
        if (s->tsm) {
            if (tsm_step(s, step, &loss)) return -1;
        } else {
            int64_t data0 = step * (o->ttur + 1);
            int skip = step == start ? done_first : 0;
            if (o->ttur > skip && img_critic_round(s, o->ttur - skip, data0 + skip)) return -1;
            if (img_generator_step(s, step, data0 + o->ttur, &loss)) return -1;
        }
        loss_sum += loss;
        loss_n++;
        s->last_progress = msd_now();
        int64_t done = step + 1;
        if (done % o->log_every == 0 || done == o->steps) {
            double lf = s->fake_loss_n ? s->fake_loss_sum / s->fake_loss_n : 0;
            char lg[512], js[512];
            if (s->tsm) {
                snprintf(lg, sizeof lg, "loss_tsm %.5g", loss_sum / loss_n);
                snprintf(js, sizeof js, "\"loss_tsm\": %.9g", loss_sum / loss_n);
            } else {
                char gan[256] = "", gan_j[256] = "";
                if (o->adm) {
                    double nf = s->fake_loss_n ? (double)s->fake_loss_n : 1, ng = s->gan_g_n ? (double)s->gan_g_n : 1;
                    double gg = s->gan_g_sum / ng, gd = s->gan_d_sum / nf, fr = s->logit_real_sum / nf,
                           ff = s->logit_fake_sum / nf;
                    snprintf(gan, sizeof gan, "  loss_gan_g %.4f  loss_gan_d %.4f  logit real %.3g fake %.3g", gg, gd, fr,
                             ff);
                    snprintf(gan_j, sizeof gan_j,
                             ", \"loss_gan_g\": %.9g, \"loss_gan_d\": %.9g, \"logit_real\": %.9g, \"logit_fake\": %.9g",
                             gg, gd, fr, ff);
                    s->gan_g_sum = s->gan_d_sum = s->logit_real_sum = s->logit_fake_sum = 0;
                    s->gan_g_n = 0;
                }
                snprintf(lg, sizeof lg, "loss_dm %.5g  loss_fake %.4f%s", loss_sum / loss_n, lf, gan);
                snprintf(js, sizeof js, "\"loss_dm\": %.9g, \"loss_fake\": %.9g%s", loss_sum / loss_n, lf, gan_j);
            }
            img_report(s, done, start, t_run, lg, js);
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
    const char *init = s->init[0] ? s->init : NULL;   /* NULL: fresh weights (stage 1) */
    s->saved_step = -1;
    if (!strcmp(o->spec, "init")) {
        if (!resume && !init) return msd_fail(2, "without --init the network needs --net SPEC");
        const char *from = resume ? s->ckpt : init;
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
    if ((resume || init) && same_spec(&s->g, resume ? s->ckpt : init, resume ? "resuming" : "--init")) return 2;
    if (resume) {
        CheckpointMeta meta = {0};
        if (edmunet_load(&s->g, s->ckpt, 0, &meta, err, sizeof err)) return msd_fail(2, "resuming: %s", err);
        const char *role = checkpoint_meta_get(&meta, "student.role");
        int other = role && strcmp(role, img_role(s));
        if (other)   /* e.g. stage 2 pointed at stage 1's run folder: its checkpoint is an --init */
            msd_fail(2, "resuming: %s is a checkpoint of another stage (student.role %s, not %s): give this run its own "
                     "folder (stage 1's checkpoints are stage 2's --init)", s->ckpt, role, img_role(s));
        /* the run's settings (also on a rollback: the file is this run's own by then) */
        int changed = !other && checkpoint_check_settings(s->ckpt, &meta, &s->set, o->allow_changed, err, sizeof err);
        checkpoint_meta_free(&meta);
        if (other) return 2;
        if (changed) return msd_fail(2, "resuming: %s", err);
        log_info("resumed from %s at step %lld", s->ckpt, (long long)s->g.opt->step);
        s->saved_step = s->g.opt->step;
    } else if (init) {
        Optim *keep = s->g.opt;
        s->g.opt = NULL;
        int rc = edmunet_load(&s->g, init, !o->init_raw, NULL, err, sizeof err);
        s->g.opt = keep;
        if (rc) return msd_fail(2, "--init: %s", err);
        optim_ema_reset(s->g.opt);
        log_info("generator initialised from %s (%s weights)", init, o->init_raw ? "raw" : "EMA");
    } else {
        log_info("generator initialised fresh from seed %llu", (unsigned long long)o->seed);
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
        float *bufs[] = {s->dz, s->dx, s->deps, s->dxt, s->dreal, s->dfake, s->dgan};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            if (bufs[i]) s->be->free(s->ctx, bufs[i]);
    }
    distill_buf_free(&s->db);
    if (s->ema_ready) edmunet_free(&s->ema);
    edmunet_free(&s->g);
    if (s->ctx) backend_ctx_destroy(&s->ctx);
    free(s->hz); free(s->hx); free(s->hsig); free(s->heps); free(s->label); free(s->mine);
    free(s->hreal); free(s->hxc);
}

/* Both modes: tsm = 1 for stage 1. */
static int img_run(Proc *p, int tsm) {
    static ImgTrain s;
    memset(&s, 0, sizeof s);
    s.p = p;
    s.o = opt;
    s.tsm = tsm;
    ImgOpts *o = &s.o;
    if (tsm) o->lr = tsm_lr;
    if (o->index < 0) {
        long k = proc_name_index(p->name);
        if (k < 0 || k > (1 << 20)) return msd_fail(2, "no --index K and the name does not end in .K");
        o->index = (int)k;
    }
    rpc_init(&s.rpc, p, o->timeout_ms);
    s.rpc.wait_ms = o->wait_ms;
    s.rpc.busy_reply = "a training student takes no input lines";
    s.data = proc_connected(p, "data");
    s.teacher = proc_connected(p, "teacher");
    s.critic = tsm ? NULL : proc_connected(p, "critic");
    if (tsm && (!s.data || !s.teacher)) return msd_fail(2, "tsm-train needs --connect data=... teacher=...");
    if (!tsm && (!s.data || !s.teacher || !s.critic))
        return msd_fail(2, "image-train needs --connect data=... teacher=... critic=...");
    char err[1024];
    snprintf(s.ckpt, sizeof s.ckpt, "%s/student.%d.safetensors", o->ckpt_dir, o->index);
    if (o->grid_dir) snprintf(s.grid_dir, sizeof s.grid_dir, "%s/student.%d", o->grid_dir, o->index);
    else snprintf(s.grid_dir, sizeof s.grid_dir, "%s/../grids/student.%d", o->ckpt_dir, o->index);
    struct stat st;
    /* --init DIR: stage 1's checkpoint of this student in it; none (stage 1): fresh weights */
    if (o->init && strcmp(o->init, "none")) {
        if (stat(o->init, &st) == 0 && S_ISDIR(st.st_mode))
            snprintf(s.init, sizeof s.init, "%s/student.%d.safetensors", o->init, o->index);
        else snprintf(s.init, sizeof s.init, "%s", o->init);
    }
    if (s.init[0] && stat(s.ckpt, &st) != 0 && stat(s.init, &st) != 0)
        return msd_fail(2, "--init %s: %s (the generator's starting weights; no checkpoint %s to resume either)", s.init,
                        strerror(errno), s.ckpt);
    if (stat(o->part, &st) != 0) return msd_fail(2, "--partition %s: %s", o->part, strerror(errno));
    /* the writer's lock, held until the process ends (a restart by the launcher starts after
     * its predecessor was reaped, when the kernel has dropped it): a second run on this
     * folder refuses here, before it reads or writes a checkpoint */
    if (fs_mkdir_parent(s.ckpt, err, sizeof err) || fs_lock_writer(s.ckpt, err, sizeof err) < 0)
        return msd_fail(2, "%s", err);
    /* what this run's checkpoints must agree with to resume (not --steps, cadences, paths) */
    char hash[17];
    if (fs_file_hash(o->part, hash, err, sizeof err)) return msd_fail(2, "--partition: %s", err);
    ckpt_settings_add(&s.set, "partition", "%s", hash);
    ckpt_settings_add(&s.set, "seed", "%llu", (unsigned long long)o->seed);
    ckpt_settings_add(&s.set, "batch", "%d", o->batch);
    ckpt_settings_add(&s.set, "lr", "%.7g", o->lr);
    ckpt_settings_add(&s.set, "ema", "%.7g", o->ema);
    if (!tsm) {
        ckpt_settings_add(&s.set, "ttur", "%d", o->ttur);
        ckpt_settings_add(&s.set, "critic-warmup", "%d", o->warmup);
        ckpt_settings_add(&s.set, "adm", "%d", o->adm);
        if (o->adm) ckpt_settings_add(&s.set, "gan-weight", "%.7g", o->gan_weight);
    }
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
    if (o->adm) {
        s.hreal = msd_malloc(sizeof(float) * (size_t)(B * D));
        s.hxc = msd_malloc(sizeof(float) * (size_t)(B * D));
        s.dgan = s.be->alloc(s.ctx, B * D);
    }
    char cls[256];
    size_t k = 0;
    cls[0] = 0;
    for (int c = 0; c < s.nclasses && k + 8 < sizeof cls; c++)
        if (s.mine[c]) k += (size_t)snprintf(cls + k, sizeof cls - k, "%s%d", k ? "," : "", c);
    if (tsm)
        log_info("student %d (classes %s): TSM of %s (%lld parameters) on %s, batch %d, %d steps, lr %g, checkpoint %s, "
                 "grids in %s", o->index, cls, s.g.spec, (long long)params_count(unet_params(s.g.unet)), s.be->name,
                 o->batch, o->steps, o->lr, s.ckpt, s.grid_dir);
    else
        log_info("student %d (classes %s): generator %s (%lld parameters) on %s, batch %d, %d steps, TTUR %d, lr %g, "
                 "checkpoint %s, grids in %s", o->index, cls, s.g.spec, (long long)params_count(unet_params(s.g.unet)),
                 s.be->name, o->batch, o->steps, o->ttur, o->lr, s.ckpt, s.grid_dir);
    if (o->adm) log_info("ADM: the critic's GAN term on, generator GAN weight %g", o->gan_weight);
    busy_init(&s.busy);
    proc_ready(p);
    s.last_progress = msd_now();
    rc = img_train_loop(&s);
    /* a critic that restarted (busy: not resumed) or a peer silent past --timeout-ms: back to
     * the last checkpoint (or --init) and the critic with it (RESUME), as the toy's student
     * does (docs/PIPELINES.md "Restarts"), until --peer-wait-ms passes without a finished step */
    while (rc != 0 && s.critic && (s.rpc.timed_out || s.rpc.peer_status == WIRE_STATUS_BUSY) && !proc_should_stop(p)) {
        if (msd_now() - s.last_progress > o->wait_ms / 1000.0) {
            log_error("no step finished for %d ms (--peer-wait-ms): giving up", o->wait_ms);
            break;
        }
        log_warn("%s: rolling back to the last checkpoint and resuming the critic there", s.rpc.err);
        edmunet_free(&s.g);
        if ((rc = img_open_net(&s)) != 0) break;
        log_warn("rolled back to step %lld", (long long)s.g.opt->step);
        rc = img_train_loop(&s);
    }
    if (rc != 0 && proc_should_stop(p) && s.g.opt->step > 0 && s.g.opt->step != s.saved_step) {
        /* stopped (STOP, a signal): the generator is whole at its last finished step, and the
         * critic, which the launcher stops after its student, somewhere in the updates of the
         * next one; both are saved (the critic first), so a restart resumes from here. Bounded
         * by its own timeout, and the launcher's stop_timeout bounds it again. */
        char why[sizeof s.rpc.err];
        snprintf(why, sizeof why, "%s", s.rpc.err);
        s.rpc.finishing = 1;
        s.rpc.wait_ms = 0;
        if (s.rpc.timeout_ms > STOP_SAVE_MS) s.rpc.timeout_ms = STOP_SAVE_MS;
        if (img_checkpoint(&s) == 0) log_info("checkpointed on stop at step %lld", (long long)s.g.opt->step);
        else log_warn("no checkpoint on stop (%s): a restart resumes from step %lld", s.rpc.err, (long long)s.saved_step);
        snprintf(s.rpc.err, sizeof s.rpc.err, "%s", why);
    }
    busy_report(&s.busy, "student");
    img_free(&s);
    if (rc == 0) log_info("finished %d steps", o->steps);
    return proc_end_job(p, rc, s.rpc.err);
}

int student_image_train(Proc *p) { return img_run(p, 0); }
int student_tsm_train(Proc *p) { return img_run(p, 1); }
