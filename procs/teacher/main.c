/* procs/teacher/main.c: msd-teacher, the process that serves teacher denoiser outputs
 * D(x_t; sigma, c) to every student and critic, samples from the teacher, and (stage 0)
 * trains it.
 *
 * Modes:
 *   --mode gauss (default)  d = x / (1 + sigma^2), the exact denoiser for x0 ~ N(0, I): the
 *                           walking skeleton's formula, any shape, no labels
 *   --mode mog --mix FILE   the exact class-conditional denoiser of a Gaussian mixture
 *                           (common/msd/mog.h): "x" (N, dim), "sigma" (N), "label" (N)
 *   --mode serve --ckpt F   a trained EDM UNet (teacher_unet.c), EMA weights: "x" (N, C, H, W), "sigma"
 *                           (N), "label" (N) for a class-conditional net
 *   --mode train            stage 0: trains the UNet teacher on batches from data (train.c)
 * The serving modes answer DENOISE through one batching loop: requests that arrive within
 * --window-ms of the first one (from any student or critic) are answered with one denoiser
 * call over their concatenation, up to --max-batch rows. They also answer SAMPLE (mog, serve):
 * N samples of the EDM Heun sampler (docs/ALGORITHMS.md section 1) for the request's labels, noise
 * keyed by its seed. The teacher logs its batch sizes and its busy time. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "edmunet.h"
#include "log.h"
#include "mog.h"
#include "proc.h"
#include "sampler.h"
#include "serve.h"
#include "teacher.h"

#define MAX_REQS 256
#define SAMPLE_MAX_STEPS 1000
#define SIGMA_MAX_OK 1e6f

static struct {
    const char *mix;
    int max_batch, window_ms;
} opt = {NULL, 4096, 1};

const ArgSpec teacher_loop_args[] = {
    ARG_INT("--max-batch", &opt.max_batch, 1, 1 << 24, "N", "rows per denoiser call (default 4096)"),
    ARG_INT("--window-ms", &opt.window_ms, 0, 10000, "MS", "how long to collect concurrent requests after the first\n"
            "(default 1)"),
    ARG_END_,
};
static const ArgSpec mog_args[] = {
    ARG_STR_REQ("--mix", &opt.mix, "FILE", "mixture specification (docs/MOG.md)"),
    ARG_INCLUDE(teacher_loop_args),
    ARG_END_,
};

typedef struct Teacher {
    Proc *p;
    TeacherNet net;
    int max_batch, window_ms;
    /* batch buffers, grown to the largest batch then kept */
    int64_t cap, per;
    float *x, *sigma, *d;
    int32_t *label;
    /* statistics */
    long requests, batches, rows, max_rows, samples;
    Busy busy;
    double next_log;
} Teacher;

/* ---- the exact denoisers ---- */

static void gauss_denoise(void *self, float *out, const float *x, const float *sigma, const int32_t *labels,
                          int64_t N, int64_t D) {
    for (int64_t i = 0; i < N; i++) {
        float f = 1.0f / (1.0f + sigma[i] * sigma[i]);
        for (int64_t j = 0; j < D; j++) out[i * D + j] = x[i * D + j] * f;
    }
}

static void mog_denoise_fn(void *self, float *out, const float *x, const float *sigma, const int32_t *labels,
                           int64_t N, int64_t D) {
    mog_denoise(self, out, x, sigma, labels, N);
}

static void mog_destroy(void *self) {
    mog_free(self);
    free(self);
}

/* ---- requests ---- */

static int64_t net_per(const TeacherNet *n) {
    int64_t per = 1;
    for (int i = 0; i < n->ndim; i++) per *= n->shape[i];
    return per;
}

static const char *net_shape_str(const TeacherNet *n, char *buf, size_t len) {
    size_t k = (size_t)snprintf(buf, len, "(N");
    for (int i = 0; i < n->ndim && k < len; i++) k += (size_t)snprintf(buf + k, len - k, ", %lld", (long long)n->shape[i]);
    if (k < len) snprintf(buf + k, len - k, ")");
    return buf;
}

/* "label" (n) i32 in [0, nclasses) when the net is conditional; NULL after answering. */
static const WireTensor *check_labels(const TeacherNet *net, void *sock, const WireMsg *req, int64_t n, int *ok) {
    *ok = 1;
    if (net->nclasses <= 0) return NULL;
    const WireTensor *l = serve_labels(sock, req, "label", n, net->nclasses);
    if (!l) *ok = 0;
    return l;
}

/* Check one DENOISE request; on success returns its row count, else answers and returns -1. */
static int64_t teacher_check(Teacher *t, void *sock, const WireMsg *req, int64_t *per) {
    const TeacherNet *net = &t->net;
    const WireTensor *x = serve_tensor(sock, req, "x", WIRE_F32, -1, -1);
    if (!x) return -1;
    int64_t n = x->shape[0];
    if (net->ndim > 0) {
        int ok = x->ndim == 1 + net->ndim;
        for (int i = 0; ok && i < net->ndim; i++) ok = x->shape[1 + i] == net->shape[i];
        if (!ok) {
            char b[128];
            serve_error(sock, req, WIRE_STATUS_BAD_REQUEST, "denoise: \"x\" must be %s for this teacher",
                        net_shape_str(net, b, sizeof b));
            return -1;
        }
    }
    const WireTensor *s = serve_tensor(sock, req, "sigma", WIRE_F32, 1, n);
    if (!s) return -1;
    const float *sg = s->data;
    for (int64_t i = 0; i < n; i++) {
        int ok = net->sigma_zero_ok ? isfinite(sg[i]) && sg[i] >= 0 : sg[i] > 0 && sg[i] <= SIGMA_MAX_OK;
        if (!ok) {
            serve_error(sock, req, WIRE_STATUS_BAD_REQUEST, "denoise: sigma[%lld] = %g is not %s", (long long)i, sg[i],
                        net->sigma_zero_ok ? "a finite value >= 0" : "in (0, 1e6]");
            return -1;
        }
    }
    int ok;
    check_labels(net, sock, req, n, &ok);
    if (!ok) return -1;
    *per = net->ndim > 0 ? net_per(net) : n ? (int64_t)(x->nbytes / sizeof(float)) / n : 0;
    return n;
}

static void teacher_grow(Teacher *t, int64_t rows, int64_t per) {
    if (rows <= t->cap && per == t->per) return;
    int64_t cap = rows > t->cap ? rows : t->cap;
    t->x = realloc(t->x, sizeof(float) * (size_t)(cap * per + 1));
    t->d = realloc(t->d, sizeof(float) * (size_t)(cap * per + 1));
    t->sigma = realloc(t->sigma, sizeof(float) * (size_t)(cap + 1));
    t->label = realloc(t->label, sizeof(int32_t) * (size_t)(cap + 1));
    if (!t->x || !t->d || !t->sigma || !t->label) msd_die("out of memory for a batch of %lld rows", (long long)cap);
    t->cap = cap;
    t->per = per;
}

/* Concatenate the requests, run the denoiser once, answer each with its rows. */
static void teacher_run(Teacher *t, Proc *p, void *sock, WireMsg *reqs, const int64_t *rows, int n, int64_t total,
                        int64_t per) {
    busy_begin(&t->busy);
    teacher_grow(t, total, per);
    int64_t off = 0;
    for (int r = 0; r < n; r++) {
        const WireTensor *x = wire_msg_find(&reqs[r], "x"), *s = wire_msg_find(&reqs[r], "sigma");
        memcpy(t->x + off * per, x->data, x->nbytes);
        memcpy(t->sigma + off, s->data, s->nbytes);
        if (t->net.nclasses > 0)
            memcpy(t->label + off, wire_msg_find(&reqs[r], "label")->data, sizeof(int32_t) * (size_t)rows[r]);
        off += rows[r];
    }
    if (total > 0) {
        if (t->net.slow) proc_keepalive_begin(p);
        t->net.denoise(t->net.self, t->d, t->x, t->sigma, t->net.nclasses > 0 ? t->label : NULL, total, per);
        if (t->net.slow) proc_keepalive_end(p);
    }
    off = 0;
    for (int r = 0; r < n; r++) {
        const WireTensor *x = wire_msg_find(&reqs[r], "x");
        WireMsg rep;
        wire_reply_init(&rep, &reqs[r], WIRE_OP_DENOISE, WIRE_STATUS_OK);
        wire_msg_add(&rep, "d", WIRE_F32, x->ndim, x->shape, t->d + off * per);
        serve_reply(sock, &rep);
        off += rows[r];
    }
    busy_end(&t->busy);
    t->requests += n;
    t->batches++;
    t->rows += total;
    if (total > t->max_rows) t->max_rows = total;
}

/* The sampler's callback over the TeacherNet. */
typedef struct SampleCtx {
    const TeacherNet *net;
    int64_t D;
} SampleCtx;

static void sample_denoise(void *ctx, float *out, const float *x, const float *sigma, const int32_t *labels, int64_t N) {
    const SampleCtx *c = ctx;
    c->net->denoise(c->net->self, out, x, sigma, labels, N, c->D);
}

/* SAMPLE {"label" (N), "seed" (1), "steps" (1)[, "churn" (1)]} -> "x" (N, shape...). */
static void teacher_sample(Teacher *t, Proc *p, void *sock, const WireMsg *req) {
    const TeacherNet *net = &t->net;
    if (net->max_sample <= 0) {
        serve_unknown(sock, req, "denoise");
        return;
    }
    const WireTensor *l = serve_tensor(sock, req, "label", WIRE_I32, 1, -1);
    const WireTensor *sd = l ? serve_tensor(sock, req, "seed", WIRE_I64, 1, 1) : NULL;
    const WireTensor *st = sd ? serve_tensor(sock, req, "steps", WIRE_I32, 1, 1) : NULL;
    if (!st) return;
    int64_t n = l->shape[0];
    if (n < 1 || n > net->max_sample) {
        serve_error(sock, req, WIRE_STATUS_BAD_REQUEST, "sample: \"label\" must hold 1..%lld entries, not %lld",
                    (long long)net->max_sample, (long long)n);
        return;
    }
    int ok;
    check_labels(net, sock, req, n, &ok);
    if (!ok) return;
    SamplerConfig c;
    sampler_config_default(&c);
    c.steps = *(const int32_t *)st->data;
    if (c.steps < 1 || c.steps > SAMPLE_MAX_STEPS) {
        serve_error(sock, req, WIRE_STATUS_BAD_REQUEST, "sample: \"steps\" %d must be in 1..%d", c.steps,
                    SAMPLE_MAX_STEPS);
        return;
    }
    if (wire_msg_find(req, "churn")) {
        const WireTensor *ch = serve_tensor(sock, req, "churn", WIRE_F32, 1, 1);
        if (!ch) return;
        c.s_churn = *(const float *)ch->data;
        if (!(c.s_churn >= 0 && c.s_churn <= 1000)) {
            serve_error(sock, req, WIRE_STATUS_BAD_REQUEST, "sample: \"churn\" %g must be in [0, 1000]", c.s_churn);
            return;
        }
    }
    busy_begin(&t->busy);
    int64_t D = net_per(net);
    float *x = msd_malloc(sizeof(float) * (size_t)(n * D));
    SampleCtx sc = {net, D};
    if (net->slow) proc_keepalive_begin(p);
    sampler_run(&c, sample_denoise, &sc, x, net->nclasses > 0 ? l->data : NULL, n, D,
                (uint64_t)*(const int64_t *)sd->data, EDMUNET_STREAM_SAMPLE, 0);
    if (net->slow) proc_keepalive_end(p);
    int64_t shape[WIRE_MAX_DIMS] = {n};
    for (int i = 0; i < net->ndim; i++) shape[1 + i] = net->shape[i];
    WireMsg rep;
    wire_reply_init(&rep, req, WIRE_OP_SAMPLE, WIRE_STATUS_OK);
    wire_msg_add(&rep, "x", WIRE_F32, 1 + net->ndim, shape, x);
    serve_reply(sock, &rep);
    free(x);
    busy_end(&t->busy);
    t->samples += n;
}

/* Collect the requests that arrive within the window (requests with another row size go into
 * the next batch), then run them. A SAMPLE runs after the batch collected before it, so one
 * peer's requests are answered in order. */
static void teacher_collect(Teacher *t, Proc *p, void *sock) {
    static WireMsg reqs[MAX_REQS];
    int64_t rows[MAX_REQS];
    int n = 0;
    int64_t total = 0, per = -1;
    double deadline = msd_now() + t->window_ms / 1000.0;
    for (;;) {
        WireMsg *req = &reqs[n];
        if (serve_recv(sock, req)) {
            int64_t pr;
            int64_t k = req->op == WIRE_OP_DENOISE ? teacher_check(t, sock, req, &pr) : -1;
            if (req->op == WIRE_OP_SAMPLE) {
                if (n > 0) teacher_run(t, p, sock, reqs, rows, n, total, per);
                for (int i = 0; i < n; i++) wire_msg_close(&reqs[i]);
                teacher_sample(t, p, sock, req);
                wire_msg_close(req);
                return;
            }
            if (req->op != WIRE_OP_DENOISE) {
                serve_unknown(sock, req, t->net.max_sample > 0 ? "denoise and sample" : "denoise");
                wire_msg_close(req);
            } else if (k < 0) {
                wire_msg_close(req);
            } else if (n > 0 && (pr != per || total + k > t->max_batch)) {
                /* it does not fit this batch: run the batch, then this request on its own */
                teacher_run(t, p, sock, reqs, rows, n, total, per);
                for (int i = 0; i < n; i++) wire_msg_close(&reqs[i]);
                teacher_run(t, p, sock, req, &k, 1, k, pr);
                wire_msg_close(req);
                return;
            } else {
                rows[n++] = k;
                total += k;
                per = pr;
                if (n == MAX_REQS || total >= t->max_batch) break;
                continue;
            }
        }
        double left = deadline - msd_now();
        if (left <= 0) break;
        zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, (long)(left * 1000.0) + 1) <= 0) break;
    }
    if (n > 0) teacher_run(t, p, sock, reqs, rows, n, total, per);
    for (int i = 0; i < n; i++) wire_msg_close(&reqs[i]);
}

static void teacher_log_stats(Teacher *t) {
    log_info("served %ld requests in %ld batches: %.1f rows per batch on average, at most %ld; %.2f requests per batch",
             t->requests, t->batches, t->batches ? (double)t->rows / t->batches : 0.0, t->max_rows,
             t->batches ? (double)t->requests / t->batches : 0.0);
    if (t->samples) log_info("sampled %ld images", t->samples);
    busy_report(&t->busy, "teacher");
}

/* The exact denoisers as a TeacherNet. */
static int exact_open(Proc *p, const char *mode, Teacher *t) {
    const char *mix = opt.mix;
    TeacherNet *net = &t->net;
    if (!strcmp(mode, "gauss")) {
        snprintf(net->what, sizeof net->what, "d = x / (1 + sigma^2)");
        net->denoise = gauss_denoise;
        net->sigma_zero_ok = 1;
        return 0;
    }
    char err[1024];
    Mog *mog = msd_calloc(1, sizeof *mog);
    if (mog_load(mog, mix, err, sizeof err)) {
        free(mog);
        return msd_fail(2, "%s", err);
    }
    snprintf(net->what, sizeof net->what, "the exact denoiser of the mixture %s", mix);
    net->self = mog;
    net->denoise = mog_denoise_fn;
    net->destroy = mog_destroy;
    net->ndim = 1;
    net->shape[0] = mog->dim;
    net->nclasses = mog->nclasses;
    net->sigma_zero_ok = 1;
    net->max_sample = 1 << 16;
    return 0;
}

static void teacher_readable(void *ctx, void *sock) {
    Teacher *t = ctx;
    teacher_collect(t, t->p, sock);
}

/* Every 10 s: the batching statistics. */
static void teacher_idle(void *ctx) {
    Teacher *t = ctx;
    if (msd_now() <= t->next_log || !t->batches) return;
    teacher_log_stats(t);
    t->next_log = msd_now() + 10;
}

/* Every serving mode: open the denoiser, then DENOISE batching and SAMPLE until stopped. */
static int teacher_serve(Proc *p, const char *mode) {
    static Teacher t;
    t.max_batch = opt.max_batch;
    t.window_ms = opt.window_ms;
    int rc = !strcmp(mode, "serve") ? teacher_unet_open(p, &t.net) : exact_open(p, mode, &t);
    if (rc) return rc;
    void *serve = serve_socket(p, "msd-teacher");
    if (!serve) {
        if (t.net.destroy) t.net.destroy(t.net.self);
        return 2;
    }
    log_info("serving %s", t.net.what);
    t.p = p;
    busy_init(&t.busy);
    t.next_log = msd_now() + 10;
    /* serve_run, not serve_loop: requests are batched across peers (teacher_collect) */
    serve_run(p, serve, teacher_readable, teacher_idle, &t);
    teacher_log_stats(&t);
    if (t.net.destroy) t.net.destroy(t.net.self);
    free(t.x); free(t.d); free(t.sigma); free(t.label);
    return proc_finish(p);
}

static int run_gauss(Proc *p) { return teacher_serve(p, "gauss"); }
static int run_mog(Proc *p) { return teacher_serve(p, "mog"); }
static int run_serve(Proc *p) { return teacher_serve(p, "serve"); }

#define EXACT "the exact teachers (gauss, mog)"
static const ProcMode modes[] = {
    {"gauss", "d = x / (1 + sigma^2), the exact denoiser of N(0, I) (the walking skeleton's), any shape, no labels",
     teacher_loop_args, run_gauss, EXACT, NULL},
    {"mog", "the exact class-conditional denoiser of a Gaussian mixture: \"x\" (N, dim), \"sigma\" (N),\n"
            "\"label\" (N); and SAMPLE", mog_args, run_mog, EXACT, NULL},
    {"serve", "a trained EDM UNet checkpoint (its EMA weights): \"x\" (N, C, H, W), \"sigma\" (N), \"label\" (N)\n"
              "for a class-conditional net; and SAMPLE", teacher_unet_args, run_serve, NULL, NULL},
    {"train", "stage 0: train the UNet teacher on batches from data (--connect data=EP)", teacher_train_args,
     teacher_train, NULL, NULL},
    {0},
};

static const ProcDesc desc = {
    "teacher", "msd-teacher: serves teacher denoiser outputs D(x_t; sigma, c) to every student and critic,\n"
    "samples from the teacher, and (stage 0) trains it.", modes,
    "serves (--bind serve=ENDPOINT; gauss, mog, serve): DENOISE \"x\" f32 (N, ...), \"sigma\" f32 (N)\n"
    "  [, \"label\" i32 (N)] -> \"d\" like x; SAMPLE (mog, serve) \"label\" i32 (N), \"seed\" i64 (1),\n"
    "  \"steps\" i32 (1)[, \"churn\" f32 (1)] -> \"x\" f32 (N, ...)\n",
};

int main(int argc, char **argv) { return proc_main(&desc, argc, argv); }
