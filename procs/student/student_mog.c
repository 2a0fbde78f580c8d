/* student_mog.c: msd-student on the 2-D mixture toy (docs/ALGORITHMS.md sections 2 and 3).
 *
 * mog-train: the student owns the classes of its partition (msd-data draws its conditions).
 * Its generator is an EDM-preconditioned MLP evaluated at sigma_max: x = G(z, c) =
 * D_G(80 z; 80, c). One training step:
 *   - TTUR: --ttur batches of fresh generator samples (detached) go to its critic as
 *     FAKE_TRAIN, one fake-score update each;
 *   - generator: x = G(z, c); t ~ U{20..980}, sigma = table[t], x_t = x + sigma eps; DENOISE
 *     of (x_t, sigma, c) goes to the teacher and to the critic at the same time; the DMD
 *     gradient g = (D_fake - D_real) / mean|x - D_real| is backpropagated through G; AdamW.
 * Before the first step the critic is warmed up on the initial generator's samples
 * (--critic-warmup updates), since an analytic teacher has no weights to copy into it.
 * Every --ckpt-every steps (and at the end) the critic checkpoints (SAVE), then the student
 * (weights, EMA, AdamW state): a restart resumes from there. Progress lines and JSON-lines
 * metrics (--metrics) report step, losses, rate and time left.
 *
 * Restarts (docs/PIPELINES.md "Restarts"): the student starts every run, and every resume,
 * with RESUME to its critic (the critic's update count at the resumed step), so the pair
 * always continues from one common checkpointed state; when a peer stays silent past
 * --timeout-ms, or the critic refuses for want of a RESUME (it restarted), the student rolls
 * back to its own last checkpoint and resumes the critic there, for up to --peer-wait-ms
 * without a finished step. Every draw is keyed by the step, so the numbers equal an
 * uninterrupted run's.
 *
 * mog-serve: binds serve; GENERATE {"label" (N), "seed" (1)} -> "x" (N, dim) from the EMA
 * weights of --ckpt, noise keyed by the request's seed; a request taken after its optional
 * "deadline_ms" is answered BUSY, not computed (the router cancelled it). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "args.h"
#include "dmd.h"
#include "fsutil.h"
#include "log.h"
#include "mog.h"
#include "philox.h"
#include "rpc.h"
#include "serve.h"
#include "student.h"
#include "edmmlp.h"

#define STREAM_T 0x73740001u
#define STREAM_EPS 0x73740002u
#define STREAM_SERVE 0x73740003u
#define WARMUP_DATA_BASE ((int64_t)1 << 40)

typedef struct MogTrain {
    Proc *p;
    Rpc rpc;
    void *data, *teacher, *critic;
    Mog mog;
    EdmMlp g;
    int index, batch, steps, ttur, warmup, ckpt_every, log_every;
    uint64_t seed;
    char ckpt[4096];
    FILE *metrics;
    float table[DMD_TABLE_N];
    float *z80, *x, *xt, *sigma, *eps, *dx, *sig80;
    int32_t *label;
    OptimConfig oc;
    char spec[256];
    uint64_t init_seed;
    double last_progress;  /* when the last step finished (or the loop started) */
    double fake_loss_sum;
    long fake_loss_n;
    Busy busy;
} MogTrain;

/* BATCH from data for data step `step`: z scaled by sigma_max into s->z80, labels. */
static int mog_fetch(MogTrain *s, int64_t step) {
    int32_t who = s->index, count = s->batch;
    int64_t one = 1;
    WireMsg req, rep;
    wire_msg_init(&req, WIRE_OP_BATCH, rpc_id(&s->rpc));
    wire_msg_add(&req, "student", WIRE_I32, 1, &one, &who);
    wire_msg_add(&req, "count", WIRE_I32, 1, &one, &count);
    wire_msg_add(&req, "step", WIRE_I64, 1, &one, &step);
    if (rpc_call(&s->rpc, s->data, "data", &req, &rep)) return -1;
    int64_t zshape[2] = {count, s->mog.dim};
    const WireTensor *z = rpc_tensor_shape(&s->rpc, &rep, "data", "z", WIRE_F32, 2, zshape);
    const WireTensor *l = z ? rpc_labels(&s->rpc, &rep, "data", "label", count, s->mog.nclasses) : NULL;
    int ok = l != NULL;
    if (ok) {
        const float *zs = z->data;
        for (int64_t i = 0; i < (int64_t)count * s->mog.dim; i++) s->z80[i] = DMD_SIGMA_GEN * zs[i];
        memcpy(s->label, l->data, sizeof(int32_t) * (size_t)count);
    }
    wire_msg_close(&rep);
    return ok ? 0 : -1;
}

/* One round of critic updates: n batches of detached generator samples as FAKE_TRAIN, sent
 * back to back, then their replies awaited in order. */
static int mog_critic_round(MogTrain *s, int n, int64_t data_step0) {
    int64_t shape[2] = {s->batch, s->mog.dim};
    uint64_t ids[64];
    MSD_CHECK(n <= 64);
    for (int j = 0; j < n; j++) {
        if (mog_fetch(s, data_step0 + j)) return -1;
        busy_begin(&s->busy);
        edm_forward(&s->g.edm, s->x, s->z80, s->sig80, s->label, NULL, s->batch, 0);
        busy_end(&s->busy);
        WireMsg req;
        ids[j] = rpc_id(&s->rpc);
        wire_msg_init(&req, WIRE_OP_FAKE_TRAIN, ids[j]);
        wire_msg_add(&req, "x", WIRE_F32, 2, shape, s->x);
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

/* One generator step; returns L_DM in *loss. */
static int mog_generator_step(MogTrain *s, int64_t step, int64_t data_step, double *loss) {
    if (mog_fetch(s, data_step)) return -1;
    int64_t B = s->batch, D = s->mog.dim, shape[2] = {B, D};
    busy_begin(&s->busy);
    edm_forward(&s->g.edm, s->x, s->z80, s->sig80, s->label, NULL, B, 1);
    uint64_t base = (uint64_t)step * (uint64_t)B;
    for (int64_t i = 0; i < B; i++)
        s->sigma[i] = s->table[DMD_GEN_T_MIN + rng_uniform_int(s->seed, STREAM_T, base + (uint64_t)i,
                                                                DMD_GEN_T_MAX - DMD_GEN_T_MIN + 1)];
    rng_normal_fill(s->eps, B * D, s->seed, STREAM_EPS, base * (uint64_t)D);
    for (int64_t i = 0; i < B; i++)
        for (int64_t j = 0; j < D; j++) s->xt[i * D + j] = s->x[i * D + j] + s->sigma[i] * s->eps[i * D + j];
    busy_end(&s->busy);
    WireMsg req;
    uint64_t id = rpc_id(&s->rpc);
    wire_msg_init(&req, WIRE_OP_DENOISE, id);
    wire_msg_add(&req, "x", WIRE_F32, 2, shape, s->xt);
    wire_msg_add(&req, "sigma", WIRE_F32, 1, shape, s->sigma);
    wire_msg_add(&req, "label", WIRE_I32, 1, shape, s->label);
    if (rpc_send(&s->rpc, s->teacher, "teacher", &req) || rpc_send(&s->rpc, s->critic, "critic", &req)) return -1;
    void *socks[2] = {s->teacher, s->critic};
    const char *peers[2] = {"teacher", "critic"};
    uint64_t ids[2] = {id, id};
    uint32_t ops[2] = {WIRE_OP_DENOISE, WIRE_OP_DENOISE};
    WireMsg reps[2];
    if (rpc_await(&s->rpc, 2, socks, peers, ids, ops, reps)) return -1;
    const WireTensor *dr = rpc_tensor_shape(&s->rpc, &reps[0], "teacher", "d", WIRE_F32, 2, shape);
    const WireTensor *df = dr ? rpc_tensor_shape(&s->rpc, &reps[1], "critic", "d", WIRE_F32, 2, shape) : NULL;
    int ok = df != NULL;
    if (ok) {
        busy_begin(&s->busy);
        *loss = dmd_generator_grad(s->dx, s->x, dr->data, df->data, B, D);
        params_zero_grad(mlp_params(s->g.mlp));
        edm_backward(&s->g.edm, NULL, s->dx, NULL, B);
        optim_step(s->g.opt);
        busy_end(&s->busy);
    }
    wire_msg_close(&reps[0]);
    wire_msg_close(&reps[1]);
    return ok ? 0 : -1;
}

static int mog_checkpoint(MogTrain *s) {
    WireMsg req, rep;
    int64_t one = 1, step = s->g.opt->step;
    wire_msg_init(&req, WIRE_OP_SAVE, rpc_id(&s->rpc));
    wire_msg_add(&req, "step", WIRE_I64, 1, &one, &step);
    if (rpc_call(&s->rpc, s->critic, "critic", &req, &rep)) return -1;
    wire_msg_close(&rep);
    char err[1024];
    if (edmmlp_save(&s->g, s->ckpt, "student", err, sizeof err)) {
        snprintf(s->rpc.err, sizeof s->rpc.err, "checkpoint: %s", err);
        return -1;
    }
    return 0;
}

int64_t student_critic_updates(int64_t step, int warmup, int ttur) {
    return step > 0 ? warmup + step * (int64_t)ttur : 0;
}

int student_resume_critic_span(Rpc *rpc, void *critic, int64_t updates, int64_t span, int64_t *held) {
    WireMsg req, rep;
    int64_t one = 1;
    wire_msg_init(&req, WIRE_OP_RESUME, rpc_id(rpc));
    wire_msg_add(&req, "updates", WIRE_I64, 1, &one, &updates);
    if (span > 0) wire_msg_add(&req, "span", WIRE_I64, 1, &one, &span);
    if (rpc_call(rpc, critic, "critic", &req, &rep)) return -1;
    *held = updates;
    if (wire_msg_find(&rep, "updates")) {
        const WireTensor *h = rpc_tensor_shape(rpc, &rep, "critic", "updates", WIRE_I64, 1, &one);
        if (h) *held = *(const int64_t *)h->data;
        if (!h || *held < updates || *held > updates + span) {
            if (h)
                snprintf(rpc->err, sizeof rpc->err, "critic: RESUME answered %lld updates, asked for %lld..%lld",
                         (long long)*held, (long long)updates, (long long)(updates + span));
            wire_msg_close(&rep);
            return -1;
        }
    }
    wire_msg_close(&rep);
    return 0;
}

int student_resume_critic(Rpc *rpc, void *critic, int64_t updates) {
    int64_t held;
    return student_resume_critic_span(rpc, critic, updates, 0, &held);
}

/* RESUME: roll the critic back to the state that belongs to this student's step. */
static int mog_resume_critic(MogTrain *s) {
    return student_resume_critic(&s->rpc, s->critic, student_critic_updates(s->g.opt->step, s->warmup, s->ttur));
}

/* Back to the last checkpoint (or the initial weights), the critic with it. */
static int mog_rollback(MogTrain *s) {
    char err[1024];
    struct stat st;
    const CkptSettings *settings = s->g.settings;   /* the run's settings stay checked */
    int allow_changed = s->g.allow_changed;
    edmmlp_free(&s->g);
    int rc = edmmlp_new(&s->g, s->spec, s->mog.dim, s->mog.nclasses, s->batch, (float)mog_data_std(&s->mog), &s->oc,
                        s->init_seed, err, sizeof err);
    if (rc == 0) {
        s->g.settings = settings;
        s->g.allow_changed = allow_changed;
        if (stat(s->ckpt, &st) == 0) rc = edmmlp_load(&s->g, s->ckpt, 0, err, sizeof err);
    }
    if (rc) {
        snprintf(s->rpc.err, sizeof s->rpc.err, "rolling back: %s", err);
        return -1;
    }
    return mog_resume_critic(s);
}

static int mog_train_loop(MogTrain *s) {
    int64_t start = s->g.opt->step;
    if (start == 0 && s->warmup > 0) {
        log_info("warming up the critic: %d updates on the initial generator's samples", s->warmup);
        for (int w = 0; w < s->warmup; w += 64) {
            int n = s->warmup - w < 64 ? s->warmup - w : 64;
            if (mog_critic_round(s, n, WARMUP_DATA_BASE + w)) return -1;
        }
        log_info("critic warm-up done: fake-score loss %.4f", s->fake_loss_sum / (s->fake_loss_n ? s->fake_loss_n : 1));
        s->fake_loss_sum = 0;
        s->fake_loss_n = 0;
    } else if (start > 0) {
        log_info("resuming at step %lld of %d", (long long)start, s->steps);
    }
    double t0 = msd_now(), loss_sum = 0;
    int loss_n = 0;
    for (int64_t step = start; step < s->steps; step++) {
        int64_t data0 = step * (s->ttur + 1);
        if (s->ttur > 0 && mog_critic_round(s, s->ttur, data0)) return -1;
        double loss;
        if (mog_generator_step(s, step, data0 + s->ttur, &loss)) return -1;
        loss_sum += loss;
        loss_n++;
        s->last_progress = msd_now();
        int64_t done = step + 1;
        if (done % s->log_every == 0 || done == s->steps) {
            double el = msd_now() - t0, rate = (double)(done - start) * s->batch / (el > 0 ? el : 1e-9);
            double eta = (double)(s->steps - done) * s->batch / (rate > 0 ? rate : 1e-9);
            double lf = s->fake_loss_n ? s->fake_loss_sum / s->fake_loss_n : 0;
            log_info("step %lld/%d  loss_dm %.5f  loss_fake %.4f  grad_norm %.3g  %.0f img/s  %.1f s left", (long long)done,
                     s->steps, loss_sum / loss_n, lf, s->g.opt->last_grad_norm, rate, eta);
            if (s->metrics) {
                fprintf(s->metrics,
                        "{\"student\": %d, \"step\": %lld, \"loss_dm\": %.6g, \"loss_fake\": %.6g, \"grad_norm\": %.6g, "
                        "\"lr\": %.6g, \"images_per_s\": %.1f, \"elapsed_s\": %.3f, \"eta_s\": %.3f}\n",
                        s->index, (long long)done, loss_sum / loss_n, lf, s->g.opt->last_grad_norm, s->g.opt->last_lr,
                        rate, el, eta);
                fflush(s->metrics);
            }
            loss_sum = 0;
            loss_n = 0;
            s->fake_loss_sum = 0;
            s->fake_loss_n = 0;
        }
        if ((s->ckpt_every > 0 && done % s->ckpt_every == 0) || done == s->steps)
            if (mog_checkpoint(s)) return -1;
    }
    /* nothing left to train (--steps 0, or resumed at the end): still leave a checkpoint, so
     * an untrained generator can be served and judged */
    if (start >= s->steps && mog_checkpoint(s)) return -1;
    return 0;
}

/* Options of both modes (each accepts every one; --mix is required, --ckpt-dir for training). */
typedef struct MogOpts {
    const char *mix, *spec, *ckpt_dir, *ckpt, *metrics, *partition;
    int index, batch, steps, ttur, warmup, ckpt_every, log_every, timeout_ms, wait_ms, cap, allow_changed;
    float lr, ema;
    uint64_t seed;
} MogOpts;

static MogOpts opt = {.spec = "mlp,width=128,depth=4", .index = -1, .batch = 256, .steps = 2000, .ttur = 5,
                      .warmup = 200, .ckpt_every = 500, .log_every = 100, .timeout_ms = 30000, .cap = MOG_SERVE_MAX_SAMPLES,
                      .lr = 1e-3f, .ema = 0.995f, .seed = 1};

static const ArgSpec mog_common_args[] = {
    ARG_STR_REQ("--mix", &opt.mix, "FILE", "mixture specification (docs/MOG.md)"),
    ARG_INT("--index", &opt.index, 0, 1 << 20, "K", "this student's group in the partition (default: K of the name student.K)"),
    ARG_STR("--net", &opt.spec, "SPEC", "generator MLP spec (default mlp,width=128,depth=4)"),
    ARG_INT("--batch", &opt.batch, 1, 1 << 16, "B", "samples per step (default 256)"),
    ARG_INT("--steps", &opt.steps, 0, 1 << 30, "N", "training steps (default 2000)"),
    ARG_INT("--ttur", &opt.ttur, 0, 64, "T", "critic updates per generator step (default 5)"),
    ARG_INT("--critic-warmup", &opt.warmup, 0, 1 << 20, "W", "critic updates before the first step (default 200)"),
    ARG_INT("--ckpt-every", &opt.ckpt_every, 0, 1 << 30, "N", "steps between checkpoints (default 500)"),
    ARG_INT("--log-every", &opt.log_every, 1, 1 << 30, "N", "steps between progress lines (default 100)"),
    ARG_STR("--metrics", &opt.metrics, "FILE", "JSON lines of the progress"),
    ARG_FLOAT("--lr", &opt.lr, 0, 1, "LR", "AdamW learning rate (default 1e-3)"),
    ARG_FLOAT("--ema", &opt.ema, 0, 1, "D", "EMA decay of the served weights (default 0.995)"),
    ARG_U64("--seed", &opt.seed, "S", "seed of the weights and the draws (default 1)"),
    ARG_INT("--timeout-ms", &opt.timeout_ms, 1, 86400000, "MS", "how long a peer may take to answer (default 30000)"),
    ARG_INT("--peer-wait-ms", &opt.wait_ms, 0, 86400000, "MS",
            "training: how long to keep resending and rolling back while a peer restarts, without a finished step (default 0: fail at once)"),
    ARG_INT("--cap", &opt.cap, 1, 1 << 20, "N", "largest GENERATE request (serve; default MOG_SERVE_MAX_SAMPLES, 4096)"),
    ARG_END_,
};
const ArgSpec student_mog_train_args[] = {
    ARG_STR_REQ("--ckpt-dir", &opt.ckpt_dir, "DIR", "where student.K.safetensors is written (and resumed from)"),
    ARG_STR("--ckpt", &opt.ckpt, "FILE", "(mog-serve's)"),
    ARG_STR("--partition", &opt.partition, "FILE", "the run's partition file (its contents are recorded in the\n"
            "checkpoint with the other run settings; none: not recorded)"),
    ARG_INT("--allow-changed-settings", &opt.allow_changed, 0, 1, "0|1", "1: resume even when the checkpoint was\n"
            "written with other settings (seed, batch, lr, ...; default 0: refuse)"),
    ARG_INCLUDE(mog_common_args),
    ARG_END_,
};
const ArgSpec student_mog_serve_args[] = {
    ARG_STR("--ckpt", &opt.ckpt, "FILE", "the checkpoint served"),
    ARG_STR("--ckpt-dir", &opt.ckpt_dir, "DIR", "else DIR/student.K.safetensors"),
    ARG_INCLUDE(mog_common_args),
    ARG_END_,
};

/* After parsing: --index from the process name student.K when not given. 0, or 2. */
static int mog_opts_finish(Proc *p, MogOpts *o) {
    *o = opt;
    if (o->index < 0) {
        long k = proc_name_index(p->name);
        if (k < 0 || k > (1 << 20)) return msd_fail(2, "no --index K and the name does not end in .K");
        o->index = (int)k;
    }
    return 0;
}

int student_mog_train(Proc *p) {
    MogOpts o;
    int rc = mog_opts_finish(p, &o);
    if (rc) return rc;
    MogTrain s;
    memset(&s, 0, sizeof s);
    s.p = p;
    s.index = o.index;
    s.batch = o.batch;
    s.steps = o.steps;
    s.ttur = o.ttur;
    s.warmup = o.warmup;
    s.ckpt_every = o.ckpt_every;
    s.log_every = o.log_every;
    s.seed = o.seed;
    rpc_init(&s.rpc, p, o.timeout_ms);
    s.rpc.busy_reply = "a training student takes no input lines";
    s.rpc.wait_ms = o.wait_ms;
    /* request ids start above any a dead predecessor used (the clock in ms, 2^20 ids per ms),
     * so the critic can tell its stale requests from ours */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    s.rpc.next_id = ((uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000) << 20;
    s.data = proc_connected(p, "data");
    s.teacher = proc_connected(p, "teacher");
    s.critic = proc_connected(p, "critic");
    if (!s.data || !s.teacher || !s.critic) return msd_fail(2, "mog-train needs --connect data=... teacher=... critic=...");
    char err[1024];
    if (mog_load(&s.mog, o.mix, err, sizeof err)) return msd_fail(2, "%s", err);
    if (fs_mkdir_p(o.ckpt_dir, err, sizeof err) || (o.metrics && fs_mkdir_parent(o.metrics, err, sizeof err))) return msd_fail(2, "%s", err);
    snprintf(s.ckpt, sizeof s.ckpt, "%s/student.%d.safetensors", o.ckpt_dir, s.index);
    /* held until the process ends: a second run on this folder refuses here, before it reads
     * or writes anything */
    if (fs_lock_writer(s.ckpt, err, sizeof err) < 0) return msd_fail(2, "%s", err);
    /* what this run's checkpoints must agree with to resume (not --steps, cadences, paths) */
    CkptSettings set = {0};
    char hash[17];
    if (fs_file_hash(o.mix, hash, err, sizeof err)) return msd_fail(2, "--mix: %s", err);
    ckpt_settings_add(&set, "mix", "%s", hash);
    if (o.partition && strcmp(o.partition, "none") != 0) {
        if (fs_file_hash(o.partition, hash, err, sizeof err)) return msd_fail(2, "--partition: %s", err);
        ckpt_settings_add(&set, "partition", "%s", hash);
    }
    ckpt_settings_add(&set, "seed", "%llu", (unsigned long long)o.seed);
    ckpt_settings_add(&set, "batch", "%d", o.batch);
    ckpt_settings_add(&set, "ttur", "%d", o.ttur);
    ckpt_settings_add(&set, "critic-warmup", "%d", o.warmup);
    ckpt_settings_add(&set, "lr", "%.7g", o.lr);
    ckpt_settings_add(&set, "ema", "%.7g", o.ema);
    OptimConfig oc;
    optim_config_default(&oc);
    oc.lr = o.lr;
    oc.weight_decay = 0;
    oc.grad_clip = 10;
    oc.ema = 1;
    oc.ema_decay = o.ema;
    s.oc = oc;
    snprintf(s.spec, sizeof s.spec, "%s", o.spec);
    s.init_seed = o.seed * 1000 + (uint64_t)s.index;
    if (edmmlp_new(&s.g, o.spec, s.mog.dim, s.mog.nclasses, s.batch, (float)mog_data_std(&s.mog), &oc,
                   s.init_seed, err, sizeof err)) return msd_fail(2, "--net: %s", err);
    s.g.settings = &set;
    s.g.allow_changed = o.allow_changed;
    struct stat st;
    if (stat(s.ckpt, &st) == 0 && edmmlp_load(&s.g, s.ckpt, 0, err, sizeof err)) return msd_fail(2, "resuming: %s", err);
    if (o.metrics && !(s.metrics = fopen(o.metrics, "a"))) return msd_fail(2, "--metrics %s: %s", o.metrics, strerror(errno));
    dmd_sigma_table(s.table, DMD_TABLE_N);
    size_t n = (size_t)s.batch * (size_t)s.mog.dim;
    s.z80 = msd_malloc(sizeof(float) * n);
    s.x = msd_malloc(sizeof(float) * n);
    s.xt = msd_malloc(sizeof(float) * n);
    s.eps = msd_malloc(sizeof(float) * n);
    s.dx = msd_malloc(sizeof(float) * n);
    s.sigma = msd_malloc(sizeof(float) * (size_t)s.batch);
    s.sig80 = msd_malloc(sizeof(float) * (size_t)s.batch);
    s.label = msd_malloc(sizeof(int32_t) * (size_t)s.batch);
    for (int i = 0; i < s.batch; i++) s.sig80[i] = DMD_SIGMA_GEN;
    log_info("student %d: generator %s, batch %d, %d steps, TTUR %d, lr %g, checkpoint %s", s.index, s.g.spec,
             s.batch, s.steps, s.ttur, o.lr, s.ckpt);
    busy_init(&s.busy);
    proc_ready(p);
    s.last_progress = msd_now();
    rc = mog_resume_critic(&s);
    while (rc == 0 && (rc = mog_train_loop(&s)) != 0) {
        /* a peer silent past --timeout-ms, or a critic that restarted: both roll back */
        int again = s.rpc.timed_out || s.rpc.peer_status == WIRE_STATUS_BUSY;
        if (!again || proc_should_stop(p)) break;
        if (msd_now() - s.last_progress > o.wait_ms / 1000.0) {
            log_error("no step finished for %d ms (--peer-wait-ms): giving up", o.wait_ms);
            break;
        }
        log_warn("%s: rolling back to the last checkpoint and resuming the critic there", s.rpc.err);
        rc = mog_rollback(&s);
        if (rc == 0) log_warn("rolled back to step %lld", (long long)s.g.opt->step);
    }
    busy_report(&s.busy, "student");
    if (s.metrics) fclose(s.metrics);
    edmmlp_free(&s.g);
    mog_free(&s.mog);
    free(s.z80); free(s.x); free(s.xt); free(s.eps); free(s.dx); free(s.sigma); free(s.sig80); free(s.label);
    if (rc == 0) log_info("finished %d steps", s.steps);
    return proc_end_job(p, rc, s.rpc.err);
}

/* mog-serve's state: the generator and its buffers. */
typedef struct MogServe {
    Mog mog;
    EdmMlp g;
    int cap;
    float *z, *x, *sig;
    int64_t skipped;      /* requests past their deadline_ms when taken: not computed */
} MogServe;

/* GENERATE {"label" (N), "seed" (1), optional "deadline_ms" (1)} -> "x" (N, dim). A request
 * taken after its deadline_ms (the router gave up on it while it waited here) is answered
 * BUSY without computing it. */
static void mog_generate(void *ctx, void *sock, const WireMsg *req) {
    MogServe *m = ctx;
    const WireTensor *l = serve_tensor(sock, req, "label", WIRE_I32, 1, -1);
    const WireTensor *sd = l ? serve_tensor(sock, req, "seed", WIRE_I64, 1, 1) : NULL;
    if (!sd) return;
    if (wire_msg_find(req, "deadline_ms")) {
        const WireTensor *dl = serve_tensor(sock, req, "deadline_ms", WIRE_I64, 1, 1);
        if (!dl) return;
        int64_t late = msd_wall_ms() - *(const int64_t *)dl->data;
        if (late >= 0) {
            m->skipped++;
            serve_error(sock, req, WIRE_STATUS_BUSY, "generate: taken %lld ms after its deadline_ms; not computed",
                        (long long)late);
            return;
        }
    }
    int64_t n = l->shape[0], D = m->mog.dim;
    if (n < 1 || n > m->cap) {
        serve_error(sock, req, WIRE_STATUS_BAD_REQUEST, "generate: \"label\" must hold 1..%d classes in 0..%d", m->cap,
                    m->mog.nclasses - 1);
        return;
    }
    if (!serve_labels(sock, req, "label", n, m->mog.nclasses)) return;
    uint64_t seed = (uint64_t)*(const int64_t *)sd->data;
    rng_normal_fill(m->z, n * D, seed, STREAM_SERVE, 0);
    for (int64_t i = 0; i < n * D; i++) m->z[i] *= DMD_SIGMA_GEN;
    edm_forward(&m->g.edm, m->x, m->z, m->sig, l->data, NULL, n, 0);
    int64_t shape[2] = {n, D};
    WireMsg rep;
    wire_reply_init(&rep, req, WIRE_OP_GENERATE, WIRE_STATUS_OK);
    wire_msg_add(&rep, "x", WIRE_F32, 2, shape, m->x);
    serve_reply(sock, &rep);
}

int student_mog_serve(Proc *p) {
    MogOpts o;
    int rc = mog_opts_finish(p, &o);
    if (rc) return rc;
    char path[4096], err[1024];
    if (o.ckpt) snprintf(path, sizeof path, "%s", o.ckpt);
    else if (o.ckpt_dir) snprintf(path, sizeof path, "%s/student.%d.safetensors", o.ckpt_dir, o.index);
    else return msd_fail(2, "mog-serve needs --ckpt FILE or --ckpt-dir DIR");
    void *serve = serve_socket(p, "mog-serve");
    if (!serve) return 2;
    static MogServe m;
    m.cap = o.cap;
    if (mog_load(&m.mog, o.mix, err, sizeof err)) return msd_fail(2, "%s", err);
    OptimConfig oc;
    optim_config_default(&oc);
    oc.ema = 1;
    if (edmmlp_new(&m.g, o.spec, m.mog.dim, m.mog.nclasses, o.cap, (float)mog_data_std(&m.mog), &oc, 0, err,
                   sizeof err) ||
        edmmlp_load(&m.g, path, 1, err, sizeof err)) {
        msd_fail(2, "%s", err);
        mog_free(&m.mog);
        return 2;
    }
    log_info("serving %s (%s)", path, m.g.spec);
    int64_t D = m.mog.dim;
    m.z = msd_malloc(sizeof(float) * (size_t)(o.cap * D));
    m.x = msd_malloc(sizeof(float) * (size_t)(o.cap * D));
    m.sig = msd_malloc(sizeof(float) * (size_t)o.cap);
    for (int i = 0; i < o.cap; i++) m.sig[i] = DMD_SIGMA_GEN;
    static const ServeOp ops[] = {{WIRE_OP_GENERATE, mog_generate}};
    serve_loop(p, serve, ops, 1, &m, NULL, "student");
    if (m.skipped) log_info("skipped %lld requests past their deadline_ms", (long long)m.skipped);
    free(m.z); free(m.x); free(m.sig);
    edmmlp_free(&m.g);
    mog_free(&m.mog);
    return proc_finish(p);
}
