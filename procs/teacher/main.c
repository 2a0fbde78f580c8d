/* procs/teacher/main.c: msd-teacher, the process that serves teacher denoiser outputs
 * D(x_t; sigma, c) to every student and critic.
 *
 * Modes:
 *   --mode gauss (default)  d = x / (1 + sigma^2), the exact denoiser for x0 ~ N(0, I): the
 *                           walking skeleton's formula, any shape, no labels
 *   --mode mog --mix FILE   the exact class-conditional denoiser of a Gaussian mixture
 *                           (common/mog.h): "x" (N, dim), "sigma" (N), "label" (N)
 * Both serve DENOISE through one batching loop: requests that arrive within --window-ms of
 * the first one (from any student or critic) are answered with one denoiser call over their
 * concatenation, up to --max-batch rows. The teacher logs its batch sizes and its busy time.
 * Not yet here: the UNet teacher, stage-0 training, the multi-step sampler. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "log.h"
#include "mog.h"
#include "proc.h"
#include "serve.h"

#define MAX_REQS 256

static const char *usage =
    "  --mode gauss|mog    gauss (default): d = x / (1 + sigma^2); mog: exact mixture denoiser\n"
    "  --mix FILE          mixture specification (mode mog; docs/MOG.md)\n"
    "  --max-batch N       rows per denoiser call (default 4096)\n"
    "  --window-ms MS      how long to collect concurrent requests after the first (default 1)\n"
    "serves (--bind serve=ENDPOINT): DENOISE \"x\" f32 (N, ...), \"sigma\" f32 (N)[, \"label\" i32 (N)]\n"
    "  -> \"d\" like x\n";

typedef struct Teacher {
    int mog_mode;
    Mog mog;
    int max_batch, window_ms;
    /* batch buffers, grown to the largest batch then kept */
    int64_t cap, per;
    float *x, *sigma, *d;
    int32_t *label;
    /* statistics */
    long requests, batches, rows, max_rows;
    Busy busy;
} Teacher;

/* Check one DENOISE request; on success returns its row count, else answers and returns -1. */
static int64_t teacher_check(Teacher *t, void *sock, const WireMsg *req, int64_t *per) {
    if (req->op != WIRE_OP_DENOISE) {
        serve_unknown(sock, req, "denoise");
        return -1;
    }
    const WireTensor *x = serve_tensor(sock, req, "x", WIRE_F32, -1, -1);
    if (!x) return -1;
    int64_t n = x->shape[0];
    const WireTensor *s = serve_tensor(sock, req, "sigma", WIRE_F32, 1, n);
    if (!s) return -1;
    const float *sg = s->data;
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(sg[i]) || sg[i] < 0) {
            serve_error(sock, req, WIRE_STATUS_BAD_REQUEST, "denoise: sigma[%lld] = %g is not a finite value >= 0",
                        (long long)i, sg[i]);
            return -1;
        }
    *per = n ? (int64_t)(x->nbytes / sizeof(float)) / n : 0;
    if (t->mog_mode) {
        if (x->ndim != 2 || x->shape[1] != t->mog.dim) {
            serve_error(sock, req, WIRE_STATUS_BAD_REQUEST, "denoise: \"x\" must be (N, %d) for this mixture",
                        t->mog.dim);
            return -1;
        }
        const WireTensor *l = serve_tensor(sock, req, "label", WIRE_I32, 1, n);
        if (!l) return -1;
        const int32_t *lb = l->data;
        for (int64_t i = 0; i < n; i++)
            if (lb[i] < 0 || lb[i] >= t->mog.nclasses) {
                serve_error(sock, req, WIRE_STATUS_BAD_REQUEST, "denoise: label[%lld] = %d is not a class (0..%d)",
                            (long long)i, lb[i], t->mog.nclasses - 1);
                return -1;
            }
    }
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
static void teacher_run(Teacher *t, void *sock, WireMsg *reqs, const int64_t *rows, int n, int64_t total, int64_t per) {
    busy_begin(&t->busy);
    teacher_grow(t, total, per);
    int64_t off = 0;
    for (int r = 0; r < n; r++) {
        const WireTensor *x = wire_msg_find(&reqs[r], "x"), *s = wire_msg_find(&reqs[r], "sigma");
        memcpy(t->x + off * per, x->data, x->nbytes);
        memcpy(t->sigma + off, s->data, s->nbytes);
        if (t->mog_mode) memcpy(t->label + off, wire_msg_find(&reqs[r], "label")->data, sizeof(int32_t) * (size_t)rows[r]);
        off += rows[r];
    }
    if (t->mog_mode) {
        mog_denoise(&t->mog, t->d, t->x, t->sigma, t->label, total);
    } else {
        for (int64_t i = 0; i < total; i++) {
            float f = 1.0f / (1.0f + t->sigma[i] * t->sigma[i]);
            for (int64_t j = 0; j < per; j++) t->d[i * per + j] = t->x[i * per + j] * f;
        }
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

/* Collect the requests that arrive within the window (requests with another row size go into
 * the next batch), then run them. */
static void teacher_collect(Teacher *t, void *sock) {
    static WireMsg reqs[MAX_REQS];
    int64_t rows[MAX_REQS];
    int n = 0;
    int64_t total = 0, per = -1;
    double deadline = msd_now() + t->window_ms / 1000.0;
    for (;;) {
        WireMsg *req = &reqs[n];
        if (serve_recv(sock, req)) {
            int64_t p;
            int64_t k = teacher_check(t, sock, req, &p);
            if (k < 0) {
                wire_msg_close(req);
            } else if (n > 0 && (p != per || total + k > t->max_batch)) {
                /* it does not fit this batch: run the batch, then this request on its own */
                teacher_run(t, sock, reqs, rows, n, total, per);
                for (int i = 0; i < n; i++) wire_msg_close(&reqs[i]);
                teacher_run(t, sock, req, &k, 1, k, p);
                wire_msg_close(req);
                return;
            } else {
                rows[n++] = k;
                total += k;
                per = p;
                if (n == MAX_REQS || total >= t->max_batch) break;
                continue;
            }
        }
        double left = deadline - msd_now();
        if (left <= 0) break;
        zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, (long)(left * 1000.0) + 1) <= 0) break;
    }
    if (n > 0) teacher_run(t, sock, reqs, rows, n, total, per);
    for (int i = 0; i < n; i++) wire_msg_close(&reqs[i]);
}

static void teacher_log_stats(Teacher *t) {
    log_info("served %ld requests in %ld batches: %.1f rows per batch on average, at most %ld; %.2f requests per batch",
             t->requests, t->batches, t->batches ? (double)t->rows / t->batches : 0.0, t->max_rows,
             t->batches ? (double)t->requests / t->batches : 0.0);
    busy_report(&t->busy, "teacher");
}

int main(int argc, char **argv) {
    Proc p;
    proc_start(&p, "teacher", usage, argc, argv);
    const char *mode = "gauss", *mix = NULL;
    Teacher t = {.max_batch = 4096, .window_ms = 1};
    for (int i = 1; i < p.argc; i++) {
        const char *a = p.argv[i];
        if (args_is(a, "--mode")) { if (args_str(&p, &i, &mode)) return 2; }
        else if (args_is(a, "--mix")) { if (args_str(&p, &i, &mix)) return 2; }
        else if (args_is(a, "--max-batch")) { if (args_int(&p, &i, &t.max_batch, 1, 1 << 24)) return 2; }
        else if (args_is(a, "--window-ms")) { if (args_int(&p, &i, &t.window_ms, 0, 10000)) return 2; }
        else return args_unknown(&p, a);
    }
    if (!strcmp(mode, "mog")) {
        char err[1024];
        if (!mix) { fprintf(stderr, "[%s] ERROR --mode mog needs --mix FILE\n", p.name); return 2; }
        if (mog_load(&t.mog, mix, err, sizeof err)) { fprintf(stderr, "[%s] ERROR %s\n", p.name, err); return 2; }
        t.mog_mode = 1;
    } else if (strcmp(mode, "gauss") != 0) {
        fprintf(stderr, "[%s] ERROR --mode %s: expected gauss or mog\n", p.name, mode);
        return 2;
    }
    void *serve = proc_bound(&p, "serve");
    if (!serve) { fprintf(stderr, "[%s] ERROR needs --bind serve=ENDPOINT\n", p.name); return 2; }
    busy_init(&t.busy);
    proc_ready(&p);
    double next_log = msd_now() + 10;
    while (!proc_should_stop(&p)) {
        WireMsg line;
        int r = proc_poll(&p, &serve, 1, 500, &line);
        if (r & PROC_POLL_LINE) {
            proc_reply_line(&p, &line, "this process takes no input lines", WIRE_STATUS_UNKNOWN_OP);
            wire_msg_close(&line);
        }
        if (r & 1) teacher_collect(&t, serve);
        if (msd_now() > next_log && t.batches) {
            teacher_log_stats(&t);
            next_log = msd_now() + 10;
        }
    }
    teacher_log_stats(&t);
    if (t.mog_mode) mog_free(&t.mog);
    free(t.x); free(t.d); free(t.sigma); free(t.label);
    return proc_finish(&p);
}
