/* procs/critic/main.c: msd-critic, one per student: the fake-score network D_fake (trained
 * online on its student's samples) and later the discriminator head.
 *
 * Today (walking skeleton) it has one mode, `--mode gauss` (the default): DENOISE answers the
 * exact posterior mean for data x0 ~ N(0, I), d = x / (1 + sigma^2) per sample, so that the
 * pipeline's plumbing can be checked against a formula. Not yet here: the fake-score UNet and
 * its online training, the discriminator, input gradients. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "proc.h"

#define ROLE "critic"

static const char *usage =
    "  --mode gauss   DENOISE answers d = x / (1 + sigma^2), the exact denoiser for x0 ~ N(0, I)\n"
    "                 (default; the fake-score UNet arrives later)\n"
    "serves (--bind serve=ENDPOINT): DENOISE \"x\" f32 (N, ...), \"sigma\" f32 (N) -> \"d\" like x\n";

/* Answer one DENOISE request with the Gaussian posterior mean. Bad tensors: BAD_REQUEST. */
static void denoise_gauss(void *sock, const WireMsg *req) {
    const WireTensor *x = wire_msg_find(req, "x"), *s = wire_msg_find(req, "sigma");
    char msg[WIRE_MAX_ERROR];
    if (!x || !s) {
        wire_send_error(sock, req, WIRE_STATUS_BAD_REQUEST,
                        "denoise needs tensors \"x\" (f32, (N, ...)) and \"sigma\" (f32, (N))");
        return;
    }
    if (x->dtype != WIRE_F32 || s->dtype != WIRE_F32 || x->ndim < 1 || s->ndim != 1 || s->shape[0] != x->shape[0]) {
        snprintf(msg, sizeof msg, "denoise: \"x\" must be f32 (N, ...) and \"sigma\" f32 (N); got x %s with %d dims, sigma %s with %d dims",
                 wire_dtype_name(x->dtype), x->ndim, wire_dtype_name(s->dtype), s->ndim);
        wire_send_error(sock, req, WIRE_STATUS_BAD_REQUEST, msg);
        return;
    }
    int64_t n = x->shape[0];
    size_t numel = x->nbytes / sizeof(float), per = n ? numel / (size_t)n : 0;
    const float *xs = x->data, *sg = s->data;
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(sg[i])) {
            snprintf(msg, sizeof msg, "denoise: sigma[%lld] is not finite", (long long)i);
            wire_send_error(sock, req, WIRE_STATUS_BAD_REQUEST, msg);
            return;
        }
    float *d = msd_malloc(x->nbytes);
    for (int64_t i = 0; i < n; i++) {
        float f = 1.0f / (1.0f + sg[i] * sg[i]);
        for (size_t j = 0; j < per; j++) d[(size_t)i * per + j] = xs[(size_t)i * per + j] * f;
    }
    WireMsg rep;
    wire_reply_init(&rep, req, WIRE_OP_DENOISE, WIRE_STATUS_OK);
    wire_msg_add(&rep, "d", WIRE_F32, x->ndim, x->shape, d);
    char err[256];
    if (wire_send(sock, &rep, 0, 1000, err, sizeof err) != WIRE_OK) log_warn("reply to request %llu: %s", (unsigned long long)req->id, err);
    free(d);
}

static void serve_one(void *sock) {
    WireMsg req;
    char err[256];
    int rc = wire_recv(sock, &req, 0, err, sizeof err);
    if (rc == WIRE_EAGAIN) return;
    if (rc == WIRE_ESOCKET) { log_warn("serve socket: %s", err); return; }
    if (rc == WIRE_EMALFORMED) {
        log_warn("malformed message (answered %s): %s", wire_status_name(req.reject_status), err);
        wire_send_error(sock, &req, req.reject_status, err);
        return;
    }
    if (req.op == WIRE_OP_DENOISE) denoise_gauss(sock, &req);
    else if (req.op == WIRE_OP_HEARTBEAT) {
        WireMsg rep;
        wire_reply_init(&rep, &req, WIRE_OP_HEARTBEAT, WIRE_STATUS_OK);
        wire_send(sock, &rep, 0, 1000, err, sizeof err);
    } else {
        snprintf(err, sizeof err, "msd-%s serves denoise, not %s", log_get_name(), wire_op_name(req.op));
        wire_send_error(sock, &req, WIRE_STATUS_UNKNOWN_OP, err);
    }
    wire_msg_close(&req);
}

int main(int argc, char **argv) {
    Proc p;
    proc_start(&p, ROLE, usage, argc, argv);
    const char *mode = "gauss";
    for (int i = 1; i < p.argc; i++) {
        if (!strcmp(p.argv[i], "--mode") && i + 1 < p.argc) mode = p.argv[++i];
        else { fprintf(stderr, "[%s] ERROR unknown option %s (try --help)\n", p.name, p.argv[i]); return 2; }
    }
    if (strcmp(mode, "gauss") != 0) { fprintf(stderr, "[%s] ERROR --mode %s: only \"gauss\" exists yet\n", p.name, mode); return 2; }
    void *serve = proc_bound(&p, "serve");
    if (!serve) { fprintf(stderr, "[%s] ERROR needs --bind serve=ENDPOINT\n", p.name); return 2; }
    proc_ready(&p);
    while (!proc_should_stop(&p)) {
        WireMsg line;
        int r = proc_poll(&p, &serve, 1, 500, &line);
        if (r & PROC_POLL_LINE) {
            proc_reply_line(&p, &line, "this process takes no input lines", WIRE_STATUS_UNKNOWN_OP);
            wire_msg_close(&line);
        }
        if (r & 1) serve_one(serve);
    }
    return proc_finish(&p);
}
