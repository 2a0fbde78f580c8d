/* procs/critic/main.c: msd-critic, one per student: the fake-score network, trained online on
 * that student's detached samples, serving D_fake.
 *
 * Modes:
 *   --mode gauss (default)  the walking skeleton: DENOISE answers d = x / (1 + sigma^2)
 *   --mode mog              an EDM-preconditioned MLP (common/models/edmmlp.h) on the 2-D mixture toy:
 *                           FAKE_TRAIN {"x" (N, dim), "label" (N)} takes one update of the DMD2
 *                           fake-score loss (docs/ALGORITHMS.md section 2): t ~ U{0..999}, sigma from
 *                           the Karras table, mean(lambda(sigma) (D_fake(x + sigma eps) - x)^2),
 *                           AdamW; DENOISE {"x", "sigma", "label"} answers D_fake with the
 *                           current weights; SAVE writes the checkpoint (--ckpt), keeping the one
 *                           before as FILE.prev; RESUME {"updates"} rolls back to whichever of the two
 *                           was taken after that many updates (0: the initial weights).
 * Every draw is keyed by (seed, update count), so a critic resumed from its checkpoint draws
 * what it would have drawn. Restarts (docs/PIPELINES.md "Restarts"): in mog mode nothing but
 * RESUME is served until the student has sent one (a restarted critic must not answer with the
 * wrong weights), and requests with a smaller id than the last RESUME's are refused as stale
 * (a restarted student's ids start above its dead predecessor's, rpc.h). The UNet critic is
 * --mode image (critic_image.c), with a GAN head under --gan-weight (stage 3). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "args.h"
#include "critic.h"
#include "dmd.h"
#include "fsutil.h"
#include "log.h"
#include "mog.h"
#include "proc.h"
#include "philox.h"
#include "serve.h"
#include "edmmlp.h"

#define STREAM_T 0x63720001u
#define STREAM_EPS 0x63720002u

static struct {
    const char *mix, *spec, *ckpt;
    float lr;
    int cap, allow_changed;
    uint64_t seed;
} opt = {NULL, "mlp,width=128,depth=4", NULL, 1e-3f, 4096, 0, 2};

static const ArgSpec mog_args[] = {
    ARG_STR_REQ("--mix", &opt.mix, "FILE", "mixture specification: dimension, classes, sigma_data"),
    ARG_STR("--net", &opt.spec, "SPEC", "MLP spec (default mlp,width=128,depth=4)"),
    ARG_FLOAT("--lr", &opt.lr, 0, 1, "LR", "AdamW learning rate (default 1e-3)"),
    ARG_INT("--cap", &opt.cap, 1, 1 << 20, "N", "largest batch (default 4096)"),
    ARG_U64("--seed", &opt.seed, "S", "seed of the initial weights and the draws (default 2)"),
    ARG_STR("--ckpt", &opt.ckpt, "FILE", "checkpoint written on SAVE and read at start when it exists (FILE.lock\n"
            "is held while the critic runs: a second run on the same FILE refuses)"),
    ARG_INT("--allow-changed-settings", &opt.allow_changed, 0, 1, "0|1", "1: resume even when --ckpt was written\n"
            "with other settings (seed, lr, cap, mix; default 0: refuse)"),
    ARG_END_,
};

typedef struct Critic {
    EdmMlp net;
    Mog mog;
    uint64_t seed;
    const char *ckpt;
    CkptSettings settings;
    float table[DMD_TABLE_N];
    float *noise, *sigma, *out;
    double loss_sum;
    long updates_logged;
    double next_log;
    OptimConfig oc;
    CriticGate gate;       /* serving starts with the student's RESUME */
    int64_t saved_updates; /* the update count of --ckpt as last written or read, -1 none */
} Critic;

int critic_gate_refuse(const CriticGate *g, void *sock, const WireMsg *req) {
    if (!g->resumed) {
        serve_error(sock, req, WIRE_STATUS_BUSY, "%s: not resumed (send RESUME first: this critic may have restarted)",
                    wire_op_name(req->op));
        return 1;
    }
    if (req->id < g->floor_id) {
        serve_error(sock, req, WIRE_STATUS_BUSY, "%s request %llu is stale (from before RESUME %llu)", wire_op_name(req->op),
                    (unsigned long long)req->id, (unsigned long long)g->floor_id);
        return 1;
    }
    return 0;
}

int critic_resume_begin(CriticGate *g, void *sock, const WireMsg *req, int64_t *want, int64_t *span) {
    const WireTensor *u = serve_tensor(sock, req, "updates", WIRE_I64, 1, 1);
    if (!u) return -1;
    *want = *(const int64_t *)u->data;
    *span = 0;
    if (wire_msg_find(req, "span")) {
        const WireTensor *sp = serve_tensor(sock, req, "span", WIRE_I64, 1, 1);
        if (!sp) return -1;
        *span = *(const int64_t *)sp->data;
    }
    g->resumed = 0;
    if (*want < 0 || *want > ((int64_t)1 << 50)) {
        serve_error(sock, req, WIRE_STATUS_BAD_REQUEST, "resume: updates %lld is not in 0..2^50", (long long)*want);
        return -1;
    }
    if (*span < 0 || *span > 1 << 20) {
        serve_error(sock, req, WIRE_STATUS_BAD_REQUEST, "resume: span %lld is not in 0..2^20", (long long)*span);
        return -1;
    }
    return 0;
}

void critic_resume_done(CriticGate *g, void *sock, const WireMsg *req, int64_t held, const char *from) {
    g->resumed = 1;
    g->floor_id = req->id;
    log_info("resumed at update %lld from %s (RESUME %llu)", (long long)held, from, (unsigned long long)req->id);
    WireMsg rep;
    int64_t one = 1;
    wire_reply_init(&rep, req, WIRE_OP_RESUME, WIRE_STATUS_OK);
    wire_msg_add(&rep, "updates", WIRE_I64, 1, &one, &held);
    serve_reply(sock, &rep);
}

int critic_keep_prev(const char *ckpt, char *err, size_t errlen) {
    struct stat st;
    if (stat(ckpt, &st) != 0) return 0;
    char prev[4200], tmp[4300];
    snprintf(prev, sizeof prev, "%s.prev", ckpt);
    snprintf(tmp, sizeof tmp, "%s.prev.tmp", ckpt);
    unlink(tmp);
    if (link(ckpt, tmp) != 0 || rename(tmp, prev) != 0) {
        snprintf(err, errlen, "keeping %s as %s: %s", ckpt, prev, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

int critic_find_updates(const char *ckpt, int64_t want, int64_t span, CriticLoadFn load, void *ctx, int64_t *held,
                        char *from, size_t fromlen, char *err, size_t errlen) {
    char prev[4200], had[512] = "";
    snprintf(prev, sizeof prev, "%s.prev", ckpt);
    const char *files[2] = {ckpt, prev};
    for (int k = 0; k < 2; k++) {
        struct stat st;
        if (stat(files[k], &st) != 0) continue;
        int64_t got = -1;
        if (load(ctx, files[k], &got, err, errlen)) return -1;
        if (got >= want && got <= want + span) {
            *held = got;
            snprintf(from, fromlen, "%s", files[k]);
            return 0;
        }
        snprintf(had + strlen(had), sizeof had - strlen(had), "%s%s has %lld", had[0] ? ", " : "", files[k],
                 (long long)got);
    }
    if (span > 0)
        snprintf(err, errlen, "no checkpoint after %lld..%lld updates (%s)", (long long)want, (long long)(want + span),
                 had[0] ? had : "no checkpoint file");
    else
        snprintf(err, errlen, "no checkpoint after %lld updates (%s)", (long long)want, had[0] ? had : "no checkpoint file");
    return 1;
}

static int critic_refuse(Critic *c, void *sock, const WireMsg *req) { return critic_gate_refuse(&c->gate, sock, req); }

/* x (N, dim) f32 and label (N) i32, N <= cap, finite. */
static const WireTensor *critic_points(Critic *c, void *sock, const WireMsg *req, const WireTensor **lab) {
    const WireTensor *x = serve_tensor(sock, req, "x", WIRE_F32, 2, -1);
    if (!x) return NULL;
    int64_t n = x->shape[0];
    if (x->shape[1] != c->net.dim || n < 1 || n > c->net.cap) {
        serve_error(sock, req, WIRE_STATUS_BAD_REQUEST, "\"x\" must be (N, %d) with 1 <= N <= %lld", c->net.dim,
                    (long long)c->net.cap);
        return NULL;
    }
    const float *xs = x->data;
    for (int64_t i = 0; i < n * c->net.dim; i++)
        if (!isfinite(xs[i])) {
            serve_error(sock, req, WIRE_STATUS_BAD_REQUEST, "x[%lld] is not finite", (long long)i);
            return NULL;
        }
    *lab = serve_labels(sock, req, "label", n, c->mog.nclasses);
    if (!*lab) return NULL;
    return x;
}

static void critic_train(void *ctx, void *sock, const WireMsg *req) {
    Critic *c = ctx;
    if (critic_refuse(c, sock, req)) return;
    const WireTensor *lab, *x = critic_points(c, sock, req, &lab);
    if (!x) return;
    int64_t n = x->shape[0], D = c->net.dim;
    uint64_t step = (uint64_t)c->net.opt->step, base = step * (uint64_t)c->net.cap;
    for (int64_t i = 0; i < n; i++)
        c->sigma[i] = c->table[rng_uniform_int(c->seed, STREAM_T, base + (uint64_t)i, DMD_TABLE_N)];
    rng_normal_fill(c->noise, n * D, c->seed, STREAM_EPS, base * (uint64_t)D);
    params_zero_grad(mlp_params(c->net.mlp));
    float loss = edm_loss_given(&c->net.edm, x->data, c->noise, c->sigma, lab->data, NULL, n, 1);
    edm_loss_backward(&c->net.edm, n);
    optim_step(c->net.opt);
    c->loss_sum += loss;
    c->updates_logged++;
    WireMsg rep;
    int64_t one = 1;
    wire_reply_init(&rep, req, WIRE_OP_FAKE_TRAIN, WIRE_STATUS_OK);
    wire_msg_add(&rep, "loss", WIRE_F32, 1, &one, &loss);
    serve_reply(sock, &rep);
}

static void critic_denoise(void *ctx, void *sock, const WireMsg *req) {
    Critic *c = ctx;
    if (critic_refuse(c, sock, req)) return;
    const WireTensor *lab, *x = critic_points(c, sock, req, &lab);
    if (!x) return;
    int64_t n = x->shape[0];
    const WireTensor *s = serve_tensor(sock, req, "sigma", WIRE_F32, 1, n);
    if (!s) return;
    const float *sg = s->data;
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(sg[i]) || !(sg[i] > 0) || sg[i] > 1e6f) {
            serve_error(sock, req, WIRE_STATUS_BAD_REQUEST, "sigma[%lld] = %g must be in (0, 1e6]", (long long)i, sg[i]);
            return;
        }
    edm_forward(&c->net.edm, c->out, x->data, sg, lab->data, NULL, n, 0);
    WireMsg rep;
    wire_reply_init(&rep, req, WIRE_OP_DENOISE, WIRE_STATUS_OK);
    wire_msg_add(&rep, "d", WIRE_F32, 2, x->shape, c->out);
    serve_reply(sock, &rep);
}

static void critic_save(void *ctx, void *sock, const WireMsg *req) {
    Critic *c = ctx;
    char err[1024];
    if (critic_refuse(c, sock, req)) return;
    if (!c->ckpt) {
        serve_error(sock, req, WIRE_STATUS_BAD_REQUEST, "save: this critic has no --ckpt file");
        return;
    }
    if (fs_mkdir_parent(c->ckpt, err, sizeof err)) {
        serve_error(sock, req, WIRE_STATUS_INTERNAL, "save: %s", err);
        return;
    }
    /* the checkpoint before becomes FILE.prev (a hard link renamed over it: both names always
     * hold a whole file), unless this SAVE repeats the last one */
    int64_t updates = c->net.opt->step;
    if (updates != c->saved_updates && critic_keep_prev(c->ckpt, err, sizeof err)) {
        serve_error(sock, req, WIRE_STATUS_INTERNAL, "save: %s", err);
        return;
    }
    if (edmmlp_save(&c->net, c->ckpt, "critic", err, sizeof err)) {
        serve_error(sock, req, WIRE_STATUS_INTERNAL, "save: %s", err);
        return;
    }
    c->saved_updates = updates;
    WireMsg rep;
    wire_reply_init(&rep, req, WIRE_OP_SAVE, WIRE_STATUS_OK);
    serve_reply(sock, &rep);
}

static void gauss_denoise(void *ctx, void *sock, const WireMsg *req) {
    const WireTensor *x = serve_tensor(sock, req, "x", WIRE_F32, -1, -1);
    if (!x) return;
    int64_t n = x->shape[0];
    const WireTensor *s = serve_tensor(sock, req, "sigma", WIRE_F32, 1, n);
    if (!s) return;
    size_t per = n ? x->nbytes / sizeof(float) / (size_t)n : 0;
    const float *xs = x->data, *sg = s->data;
    float *d = msd_malloc(x->nbytes);
    for (int64_t i = 0; i < n; i++) {
        float f = 1.0f / (1.0f + sg[i] * sg[i]);
        for (size_t j = 0; j < per; j++) d[(size_t)i * per + j] = xs[(size_t)i * per + j] * f;
    }
    WireMsg rep;
    wire_reply_init(&rep, req, WIRE_OP_DENOISE, WIRE_STATUS_OK);
    wire_msg_add(&rep, "d", WIRE_F32, x->ndim, x->shape, d);
    serve_reply(sock, &rep);
    free(d);
}

/* The initial network: the weights every run starts from (seeded), no update taken. */
static int critic_net_new(Critic *c, char *err, size_t errlen) {
    if (edmmlp_new(&c->net, opt.spec, c->mog.dim, c->mog.nclasses, opt.cap, (float)mog_data_std(&c->mog), &c->oc,
                   c->seed, err, errlen))
        return -1;
    c->net.settings = &c->settings;       /* the run's settings, checked on every load (checkpoint.h) */
    c->net.allow_changed = opt.allow_changed;
    return 0;
}

static int mlp_load_counted(void *ctx, const char *file, int64_t *updates, char *err, size_t errlen) {
    Critic *c = ctx;
    if (edmmlp_load(&c->net, file, 0, err, errlen)) return -1;
    *updates = c->net.opt->step;
    return 0;
}

/* RESUME {"updates" i64 (1)}: the student (re)starts at the step after which this critic had
 * taken that many updates; roll back to the checkpoint (--ckpt or its .prev) holding exactly
 * that state, or to the initial weights for 0. Serving starts (again) with the reply. */
static void critic_resume(void *ctx, void *sock, const WireMsg *req) {
    Critic *c = ctx;
    int64_t want;
    char err[1024];
    int64_t span, held = 0;   /* this critic rolls back to exactly `want`, which any span allows */
    if (critic_resume_begin(&c->gate, sock, req, &want, &span)) return;
    edmmlp_free(&c->net);
    if (critic_net_new(c, err, sizeof err)) {
        serve_error(sock, req, WIRE_STATUS_INTERNAL, "resume: %s", err);
        return;
    }
    char from[4200] = "the initial weights";
    if (want > 0) {
        int r = c->ckpt ? critic_find_updates(c->ckpt, want, 0, mlp_load_counted, c, &held, from, sizeof from, err,
                                              sizeof err)
                        : 1;
        if (r) {
            if (!c->ckpt) snprintf(err, sizeof err, "no checkpoint after %lld updates (no --ckpt file)", (long long)want);
            serve_error(sock, req, r < 0 ? WIRE_STATUS_INTERNAL : WIRE_STATUS_BAD_REQUEST, "resume: %s", err);
            return;
        }
    }
    critic_resume_done(&c->gate, sock, req, want, from);
}

static int critic_open(Proc *p, Critic *c) {
    c->seed = opt.seed;
    c->ckpt = opt.ckpt;
    c->saved_updates = -1;
    char err[1024];
    if (mog_load(&c->mog, opt.mix, err, sizeof err)) return msd_fail(2, "%s", err);
    /* the writer's lock, held until the process ends: a second run on this file refuses here */
    if (c->ckpt && (fs_mkdir_parent(c->ckpt, err, sizeof err) || fs_lock_writer(c->ckpt, err, sizeof err) < 0))
        return msd_fail(2, "%s", err);
    char hash[17];
    if (fs_file_hash(opt.mix, hash, err, sizeof err)) return msd_fail(2, "--mix: %s", err);
    ckpt_settings_add(&c->settings, "mix", "%s", hash);
    ckpt_settings_add(&c->settings, "seed", "%llu", (unsigned long long)opt.seed);
    ckpt_settings_add(&c->settings, "lr", "%.7g", opt.lr);
    ckpt_settings_add(&c->settings, "cap", "%d", opt.cap);
    optim_config_default(&c->oc);
    c->oc.lr = opt.lr;
    c->oc.weight_decay = 0;
    c->oc.grad_clip = 10;
    if (critic_net_new(c, err, sizeof err)) return msd_fail(2, "--net: %s", err);
    struct stat st;
    if (c->ckpt && stat(c->ckpt, &st) == 0) {
        if (edmmlp_load(&c->net, c->ckpt, 0, err, sizeof err)) return msd_fail(2, "resuming: %s", err);
        c->saved_updates = c->net.opt->step;
        log_info("found %s at update %lld (serving starts with the student's RESUME)", c->ckpt, (long long)c->net.opt->step);
    }
    dmd_sigma_table(c->table, DMD_TABLE_N);
    c->noise = msd_malloc(sizeof(float) * (size_t)opt.cap * c->mog.dim);
    c->out = msd_malloc(sizeof(float) * (size_t)opt.cap * c->mog.dim);
    c->sigma = msd_malloc(sizeof(float) * (size_t)opt.cap);
    log_info("fake-score net %s, sigma_data %.3f, lr %g", c->net.spec, c->net.edm.sigma_data, opt.lr);
    return 0;
}

/* Every few seconds: the mean fake-score loss since the last line. */
static void critic_log(void *ctx) {
    Critic *c = ctx;
    if (msd_now() <= c->next_log || !c->updates_logged) return;
    log_info("update %lld: fake-score loss %.4f (mean of the last %ld)", (long long)c->net.opt->step,
             c->loss_sum / c->updates_logged, c->updates_logged);
    c->loss_sum = 0;
    c->updates_logged = 0;
    c->next_log = msd_now() + 5;
}

static int run_gauss(Proc *p) {
    void *serve = serve_socket(p, "--mode gauss");
    if (!serve) return 2;
    static const ServeOp ops[] = {{WIRE_OP_DENOISE, gauss_denoise}};
    serve_loop(p, serve, ops, 1, NULL, NULL, "critic");
    return proc_finish(p);
}

static int run_mog(Proc *p) {
    static Critic c;
    int rc = critic_open(p, &c);
    if (rc) return rc;
    void *serve = serve_socket(p, "--mode mog");
    if (!serve) return 2;
    static const ServeOp ops[] = {
        {WIRE_OP_DENOISE, critic_denoise}, {WIRE_OP_FAKE_TRAIN, critic_train}, {WIRE_OP_SAVE, critic_save},
        {WIRE_OP_RESUME, critic_resume}};
    c.next_log = msd_now() + 5;
    serve_loop(p, serve, ops, 4, &c, critic_log, "critic");
    edmmlp_free(&c.net);
    mog_free(&c.mog);
    free(c.noise); free(c.out); free(c.sigma);
    return proc_finish(p);
}

static const ProcMode modes[] = {
    {"gauss", "d = x / (1 + sigma^2), the exact denoiser of N(0, I) (the walking skeleton's)", NULL, run_gauss,
     "the critic's toy modes (gauss, mog)", NULL},
    {"mog", "the fake-score MLP of the 2-D mixture toy, trained online (FAKE_TRAIN)", mog_args, run_mog,
     "the critic's toy modes (gauss, mog)", NULL},
    {"image", "the fake-score UNet of an image student (stage 2; with --gan-weight a GAN head, stage 3) (critic_image.c)",
     critic_image_args, critic_image_run, NULL, NULL},
    {0},
};

static const ProcDesc desc = {
    "critic", "msd-critic: one per student, the fake-score network trained on that student's samples.", modes,
    "serves (--bind serve=ENDPOINT): DENOISE (gauss, mog, image); FAKE_TRAIN, SAVE (mog, image); GAN_GRAD (image\n"
    "--gan-weight) (docs/PROTOCOL.md)\n",
};

int main(int argc, char **argv) { return proc_main(&desc, argc, argv); }
