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
 *                           current weights; SAVE writes the checkpoint (--ckpt).
 * Every draw is keyed by (seed, update count), so a critic resumed from its checkpoint draws
 * what it would have drawn. Not yet here: the UNet critic and the GAN head (ADM stage). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "args.h"
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

static const char *usage =
    "  --mode gauss|mog     gauss (default): d = x / (1 + sigma^2); mog: the fake-score MLP\n"
    "  --mix FILE           mixture specification (mode mog): dimension, classes, sigma_data\n"
    "  --net SPEC           MLP spec (default mlp,width=128,depth=4)\n"
    "  --lr LR              AdamW learning rate (default 1e-3)\n"
    "  --cap N              largest batch (default 4096)\n"
    "  --seed S             seed of the initial weights and the draws (default 2)\n"
    "  --ckpt FILE          checkpoint written on SAVE and read at start when it exists\n"
    "serves (--bind serve=ENDPOINT): DENOISE, FAKE_TRAIN, SAVE (docs/PROTOCOL.md)\n";

typedef struct Critic {
    EdmMlp net;
    Mog mog;
    uint64_t seed;
    const char *ckpt;
    float table[DMD_TABLE_N];
    float *noise, *sigma, *out;
    double loss_sum;
    long updates_logged;
    Busy busy;
} Critic;

static int check_labels(void *sock, const WireMsg *req, const WireTensor *l, int nclasses) {
    const int32_t *lb = l->data;
    for (int64_t i = 0; i < l->shape[0]; i++)
        if (lb[i] < 0 || lb[i] >= nclasses) {
            serve_error(sock, req, WIRE_STATUS_BAD_REQUEST, "label[%lld] = %d is not a class (0..%d)", (long long)i,
                        lb[i], nclasses - 1);
            return -1;
        }
    return 0;
}

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
    *lab = serve_tensor(sock, req, "label", WIRE_I32, 1, n);
    if (!*lab || check_labels(sock, req, *lab, c->mog.nclasses)) return NULL;
    return x;
}

static void critic_train(Critic *c, void *sock, const WireMsg *req) {
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

static void critic_denoise(Critic *c, void *sock, const WireMsg *req) {
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

static void critic_save(Critic *c, void *sock, const WireMsg *req) {
    char err[1024];
    if (!c->ckpt) {
        serve_error(sock, req, WIRE_STATUS_BAD_REQUEST, "save: this critic has no --ckpt file");
        return;
    }
    if (fs_mkdir_parent(c->ckpt, err, sizeof err) || edmmlp_save(&c->net, c->ckpt, "critic", err, sizeof err)) {
        serve_error(sock, req, WIRE_STATUS_INTERNAL, "save: %s", err);
        return;
    }
    WireMsg rep;
    wire_reply_init(&rep, req, WIRE_OP_SAVE, WIRE_STATUS_OK);
    serve_reply(sock, &rep);
}

static void gauss_denoise(void *sock, const WireMsg *req) {
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

static int critic_open(Proc *p, Critic *c) {
    const char *mix = NULL, *spec = "mlp,width=128,depth=4";
    float lr = 1e-3f;
    int cap = 4096;
    c->seed = 2;
    for (int i = 1; i < p->argc; i++) {
        const char *a = p->argv[i];
        if (args_is(a, "--mode")) i++;
        else if (args_is(a, "--mix")) { if (args_str(p, &i, &mix)) return 2; }
        else if (args_is(a, "--net")) { if (args_str(p, &i, &spec)) return 2; }
        else if (args_is(a, "--lr")) { if (args_float(p, &i, &lr, 0, 1)) return 2; }
        else if (args_is(a, "--cap")) { if (args_int(p, &i, &cap, 1, 1 << 20)) return 2; }
        else if (args_is(a, "--seed")) { if (args_u64(p, &i, &c->seed)) return 2; }
        else if (args_is(a, "--ckpt")) { if (args_str(p, &i, &c->ckpt)) return 2; }
        else return args_unknown(p, a);
    }
    char err[1024];
    if (!mix) { fprintf(stderr, "[%s] ERROR --mode mog needs --mix FILE\n", p->name); return 2; }
    if (mog_load(&c->mog, mix, err, sizeof err)) { fprintf(stderr, "[%s] ERROR %s\n", p->name, err); return 2; }
    OptimConfig oc;
    optim_config_default(&oc);
    oc.lr = lr;
    oc.weight_decay = 0;
    oc.grad_clip = 10;
    if (edmmlp_new(&c->net, spec, c->mog.dim, c->mog.nclasses, cap, (float)mog_data_std(&c->mog), &oc, c->seed, err,
                   sizeof err)) {
        fprintf(stderr, "[%s] ERROR --net: %s\n", p->name, err);
        return 2;
    }
    struct stat st;
    if (c->ckpt && stat(c->ckpt, &st) == 0) {
        if (edmmlp_load(&c->net, c->ckpt, 0, err, sizeof err)) {
            fprintf(stderr, "[%s] ERROR resuming: %s\n", p->name, err);
            return 2;
        }
        log_info("resumed from %s at update %lld", c->ckpt, (long long)c->net.opt->step);
    }
    dmd_sigma_table(c->table, DMD_TABLE_N);
    c->noise = msd_malloc(sizeof(float) * (size_t)cap * c->mog.dim);
    c->out = msd_malloc(sizeof(float) * (size_t)cap * c->mog.dim);
    c->sigma = msd_malloc(sizeof(float) * (size_t)cap);
    log_info("fake-score net %s, sigma_data %.3f, lr %g", c->net.spec, c->net.edm.sigma_data, lr);
    return 0;
}

int main(int argc, char **argv) {
    Proc p;
    proc_start(&p, "critic", usage, argc, argv);
    const char *mode = args_mode(&p, "gauss");
    if (args_cpu_only(&p, "the critic's toy modes (gauss, mog)")) return 2;
    Critic c;
    memset(&c, 0, sizeof c);
    int mog = !strcmp(mode, "mog");
    if (mog) {
        int rc = critic_open(&p, &c);
        if (rc) return rc;
    } else if (strcmp(mode, "gauss") != 0) {
        fprintf(stderr, "[%s] ERROR --mode %s: expected gauss or mog\n", p.name, mode);
        return 2;
    } else {
        for (int i = 1; i < p.argc; i++)
            if (args_is(p.argv[i], "--mode")) i++;
            else return args_unknown(&p, p.argv[i]);
    }
    void *serve = proc_bound(&p, "serve");
    if (!serve) { fprintf(stderr, "[%s] ERROR needs --bind serve=ENDPOINT\n", p.name); return 2; }
    busy_init(&c.busy);
    proc_ready(&p);
    double next_log = msd_now() + 5;
    while (!proc_should_stop(&p)) {
        WireMsg req;
        /* one request per poll: the control socket is served between requests */
        if (serve_wait(&p, serve, 500) && serve_recv(serve, &req)) {
            busy_begin(&c.busy);
            if (!mog && req.op == WIRE_OP_DENOISE) gauss_denoise(serve, &req);
            else if (mog && req.op == WIRE_OP_DENOISE) critic_denoise(&c, serve, &req);
            else if (mog && req.op == WIRE_OP_FAKE_TRAIN) critic_train(&c, serve, &req);
            else if (mog && req.op == WIRE_OP_SAVE) critic_save(&c, serve, &req);
            else serve_unknown(serve, &req, mog ? "denoise, fake-train and save" : "denoise");
            busy_end(&c.busy);
            wire_msg_close(&req);
        }
        if (mog && msd_now() > next_log && c.updates_logged) {
            log_info("update %lld: fake-score loss %.4f (mean of the last %ld)", (long long)c.net.opt->step,
                     c.loss_sum / c.updates_logged, c.updates_logged);
            c.loss_sum = 0;
            c.updates_logged = 0;
            next_log = msd_now() + 5;
        }
    }
    busy_report(&c.busy, "critic");
    if (mog) {
        edmmlp_free(&c.net);
        mog_free(&c.mog);
        free(c.noise); free(c.out); free(c.sigma);
    }
    return proc_finish(&p);
}
