/* procs/data/main.c: msd-data, the process that serves batches of training data.
 *
 * Today (walking skeleton) it has one mode, `--mode synthetic` (the default): BATCH answers
 * "x" f32 of --shape (default 4,1,8,8) filled by a fixed formula of the request id and the
 * element index, and "label" i32 (N) = (id + n) mod 10, so a client can recompute both. Not
 * yet here: datasets (Fashion-MNIST, PNG folders, the 2-D mixture), shuffling with the
 * counter-based RNG, partition-restricted batches. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "proc.h"

#define DATA_MAX_NUMEL ((int64_t)1 << 28)

static const char *usage =
    "  --mode synthetic     BATCH answers a batch made by a formula of the request id (default)\n"
    "  --shape N,C,H,W      batch shape, 1 to 8 dims (default 4,1,8,8)\n"
    "serves (--bind serve=ENDPOINT): BATCH -> \"x\" f32 (N, ...), \"label\" i32 (N)\n";

/* The synthetic element: a function of (request id, element index) only. */
static float data_synthetic_value(uint64_t id, int64_t i) {
    return sinf(0.37f * (float)(id % 4096) + 0.11f * (float)(i % 65536));
}

static int parse_shape(const char *s, int *ndim, int64_t *shape) {
    int n = 0;
    int64_t numel = 1;
    const char *q = s;
    while (*q) {
        char *end;
        long long v = strtoll(q, &end, 10);
        if (end == q || v <= 0 || n >= WIRE_MAX_DIMS || (*end && *end != ',')) return -1;
        if (v > DATA_MAX_NUMEL / numel) return -1;
        numel *= v;
        shape[n++] = v;
        q = *end ? end + 1 : end;
    }
    *ndim = n;
    return n > 0 ? 0 : -1;
}

static void serve_batch(void *sock, const WireMsg *req, int ndim, const int64_t *shape, float *x, int32_t *label) {
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) numel *= shape[i];
    for (int64_t i = 0; i < numel; i++) x[i] = data_synthetic_value(req->id, i);
    for (int64_t n = 0; n < shape[0]; n++) label[n] = (int32_t)((req->id + (uint64_t)n) % 10);
    WireMsg rep;
    wire_reply_init(&rep, req, WIRE_OP_BATCH, WIRE_STATUS_OK);
    wire_msg_add(&rep, "x", WIRE_F32, ndim, shape, x);
    wire_msg_add(&rep, "label", WIRE_I32, 1, shape, label);
    char err[256];
    if (wire_send(sock, &rep, 0, 1000, err, sizeof err) != WIRE_OK) log_warn("reply to request %llu: %s", (unsigned long long)req->id, err);
}

int main(int argc, char **argv) {
    Proc p;
    proc_start(&p, "data", usage, argc, argv);
    int ndim = 4;
    int64_t shape[WIRE_MAX_DIMS] = {4, 1, 8, 8};
    for (int i = 1; i < p.argc; i++) {
        if (!strcmp(p.argv[i], "--mode") && i + 1 < p.argc) {
            const char *mode = p.argv[++i];
            if (strcmp(mode, "synthetic") != 0) { fprintf(stderr, "[%s] ERROR --mode %s: only \"synthetic\" exists yet\n", p.name, mode); return 2; }
        } else if (!strcmp(p.argv[i], "--shape") && i + 1 < p.argc) {
            if (parse_shape(p.argv[++i], &ndim, shape) < 0) {
                fprintf(stderr, "[%s] ERROR --shape %s: expected 1 to %d positive integers like 4,1,28,28 (at most 2^28 elements)\n",
                        p.name, p.argv[i], WIRE_MAX_DIMS);
                return 2;
            }
        } else { fprintf(stderr, "[%s] ERROR unknown option %s (try --help)\n", p.name, p.argv[i]); return 2; }
    }
    void *serve = proc_bound(&p, "serve");
    if (!serve) { fprintf(stderr, "[%s] ERROR needs --bind serve=ENDPOINT\n", p.name); return 2; }
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) numel *= shape[i];
    float *x = msd_malloc((size_t)numel * sizeof *x);
    int32_t *label = msd_malloc((size_t)shape[0] * sizeof *label);
    proc_ready(&p);
    while (!proc_should_stop(&p)) {
        WireMsg line;
        int r = proc_poll(&p, &serve, 1, 500, &line);
        if (r & PROC_POLL_LINE) {
            proc_reply_line(&p, &line, "this process takes no input lines", WIRE_STATUS_UNKNOWN_OP);
            wire_msg_close(&line);
        }
        if (!(r & 1)) continue;
        WireMsg req;
        char err[256];
        int rc = wire_recv(serve, &req, 0, err, sizeof err);
        if (rc == WIRE_EAGAIN) continue;
        if (rc == WIRE_ESOCKET) { log_warn("serve socket: %s", err); continue; }
        if (rc == WIRE_EMALFORMED) {
            log_warn("malformed message (answered %s): %s", wire_status_name(req.reject_status), err);
            wire_send_error(serve, &req, req.reject_status, err);
            continue;
        }
        if (req.op == WIRE_OP_BATCH) serve_batch(serve, &req, ndim, shape, x, label);
        else if (req.op == WIRE_OP_HEARTBEAT) {
            WireMsg rep;
            wire_reply_init(&rep, &req, WIRE_OP_HEARTBEAT, WIRE_STATUS_OK);
            wire_send(serve, &rep, 0, 1000, err, sizeof err);
        } else {
            snprintf(err, sizeof err, "msd-data serves batch, not %s", wire_op_name(req.op));
            wire_send_error(serve, &req, WIRE_STATUS_UNKNOWN_OP, err);
        }
        wire_msg_close(&req);
    }
    free(x);
    free(label);
    return proc_finish(&p);
}
