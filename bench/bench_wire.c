/* bench_wire.c: speed of the wire protocol (wire_send/wire_recv over DEALER -> ROUTER) for
 * one-tensor messages of 4 KiB, 1 MiB and 64 MiB over inproc, ipc and tcp (loopback, plain;
 * plus CurveZMQ for 1 MiB, which is what tcp links between hosts use). One JSON line per result:
 *   {"bench": "wire", "metric": "ipc_1MiB_throughput", "value": 4.9, "unit": "GB/s"}
 *   {"bench": "wire", "metric": "ipc_1MiB_rtt", "value": 410, "unit": "us"}
 * throughput: one-way streaming. A receiver thread takes M messages with wire_recv (each
 *   arrives in its own ZeroMQ frame, as a process would get it) and then acks; the sender sends
 *   M messages from one buffer with WIRE_SEND_ZEROCOPY and waits for the ack. Value =
 *   M * bytes / elapsed, GB = 1e9 bytes. Over inproc, zero-copy hands the pointer itself to
 *   the receiver, so that number is ZeroMQ's per-message cost, not a copy speed.
 * rtt: the median round trip of an ECHO of the tensor (request and reply both carry it; the
 *   echo side copies it into its reply, as msd-student --serve does).
 * Across nodes (docs/SCALE.md, "Messaging across nodes"): 1 MiB throughput over ipc, tcp and
 *   tcp_curve with 1 and 2 ZeroMQ I/O threads per context (metric suffix _io2) and over 1 or 2
 *   connections (_c2: two DEALERs, each from its own thread, into one ROUTER); and the rtt of the
 *   messages of a stage-2 step: 3KiB (toy: 256 2-D points + labels) and 784KiB (256 x 28 x 28
 *   floats) over ipc and tcp_curve. `bench_wire --cross` runs only this part.
 * Not here: the processes' own costs (teacher compute, batching); the whole run takes < 60 s. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "wire.h"
#include "bench.h"

typedef struct Peer {
    void *ctx;
    char endpoint[256];
    int curve;
    int mode;        /* 0: stream (count then ack), 1: echo, 2: stream from several clients (ack each one's last) */
    int per_client;  /* mode 2: messages from each client */
    int count;
    pthread_barrier_t *bound;
} Peer;

static char g_spub[41], g_ssec[41], g_cpub[41], g_csec[41];

static void *peer_main(void *arg) {
    Peer *pr = arg;
    void *s = zmq_socket(pr->ctx, ZMQ_ROUTER);
    int hwm = 1000, linger = 1000, one = 1;
    zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    if (pr->curve) {
        zmq_setsockopt(s, ZMQ_CURVE_SERVER, &one, sizeof one);
        zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, g_ssec, 40);
    }
    if (zmq_bind(s, pr->endpoint) != 0) msd_die("bind %s: %s", pr->endpoint, zmq_strerror(zmq_errno()));
    size_t len = sizeof pr->endpoint;
    zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, pr->endpoint, &len);
    pthread_barrier_wait(pr->bound);
    char err[256];
    static _Thread_local WireMsg m, rep;
    for (int i = 0; i < pr->count; i++) {
        if (wire_recv(s, &m, 30000, err, sizeof err) != WIRE_OK) msd_die("bench receiver: %s", err);
        if (pr->mode == 1) {
            wire_reply_init(&rep, &m, WIRE_OP_ECHO, WIRE_STATUS_OK);
            for (int t = 0; t < m.ntensors; t++)
                wire_msg_add(&rep, m.tensors[t].name, m.tensors[t].dtype, m.tensors[t].ndim, m.tensors[t].shape, m.tensors[t].data);
            if (wire_send(s, &rep, 0, 30000, err, sizeof err) != WIRE_OK) msd_die("bench echo: %s", err);
        } else if (pr->mode == 2 ? m.id + 1 == (uint64_t)pr->per_client : i + 1 == pr->count) {
            wire_reply_init(&rep, &m, WIRE_OP_ECHO, WIRE_STATUS_OK);
            if (wire_send(s, &rep, 0, 30000, err, sizeof err) != WIRE_OK) msd_die("bench ack: %s", err);
        }
        wire_msg_close(&m);
    }
    zmq_close(s);
    return NULL;
}

static void *client(void *ctx, const char *ep, int curve) {
    void *c = zmq_socket(ctx, ZMQ_DEALER);
    int hwm = 1000, linger = 0;
    zmq_setsockopt(c, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(c, ZMQ_LINGER, &linger, sizeof linger);
    if (curve) {
        zmq_setsockopt(c, ZMQ_CURVE_SERVERKEY, g_spub, 40);
        zmq_setsockopt(c, ZMQ_CURVE_PUBLICKEY, g_cpub, 40);
        zmq_setsockopt(c, ZMQ_CURVE_SECRETKEY, g_csec, 40);
    }
    if (zmq_connect(c, ep) != 0) msd_die("connect %s: %s", ep, zmq_strerror(zmq_errno()));
    return c;
}

static int g_io_threads = 1; /* I/O threads of every context the benchmark makes */

static void *ctx_new(void) {
    void *c = wire_ctx_new();
    if (!c) msd_die("zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
    zmq_ctx_set(c, ZMQ_IO_THREADS, g_io_threads);
    return c;
}

typedef struct Sender {
    void *sock;
    int n;
    float *buf;
    size_t bytes;
} Sender;

static void *sender_main(void *arg) {
    Sender *sd = arg;
    char err[256];
    int64_t shape = (int64_t)(sd->bytes / 4);
    WireMsg m, r;
    wire_msg_init(&m, WIRE_OP_ECHO, 0);
    wire_msg_add(&m, "x", WIRE_F32, 1, &shape, sd->buf);
    for (int i = 0; i < sd->n; i++) {
        m.id = (uint64_t)i;
        if (wire_send(sd->sock, &m, WIRE_SEND_ZEROCOPY, 30000, err, sizeof err) != WIRE_OK) msd_die("send: %s", err);
    }
    if (wire_recv(sd->sock, &r, 60000, err, sizeof err) != WIRE_OK) msd_die("ack: %s", err);
    wire_msg_close(&r);
    return NULL;
}

/* Throughput of nconn connections (a DEALER each, each sent from its own thread) into one ROUTER
 * in another context: total bytes / elapsed until every sender has its ack. */
static void bench_conns(void *ctx, const char *transport, const char *ep, int curve, const char *sname, size_t bytes,
                        int n_stream, int nconn, float *buf) {
    pthread_barrier_t bound;
    pthread_barrier_init(&bound, NULL, 2);
    void *pctx = ctx_new();
    int per = n_stream / nconn;
    Peer pr = {pctx, "", curve, 2, per, per * nconn, &bound};
    snprintf(pr.endpoint, sizeof pr.endpoint, "%s", ep);
    pthread_t th, st[8];
    pthread_create(&th, NULL, peer_main, &pr);
    pthread_barrier_wait(&bound);
    Sender sd[8];
    for (int k = 0; k < nconn; k++) sd[k] = (Sender){client(ctx, pr.endpoint, curve), per, buf, bytes};
    double t0 = msd_now();
    for (int k = 0; k < nconn; k++) pthread_create(&st[k], NULL, sender_main, &sd[k]);
    for (int k = 0; k < nconn; k++) pthread_join(st[k], NULL);
    double dt = msd_now() - t0;
    pthread_join(th, NULL);
    for (int k = 0; k < nconn; k++) zmq_close(sd[k].sock);
    zmq_ctx_term(pctx);
    pthread_barrier_destroy(&bound);
    char t[64];
    snprintf(t, sizeof t, "%s%s%s", transport, g_io_threads > 1 ? "_io2" : "", nconn > 1 ? "_c2" : "");
    printf("{\"bench\": \"wire\", \"metric\": \"%s_%s_throughput\", \"value\": %.4g, \"unit\": \"GB/s\"}\n", t, sname,
           (double)per * nconn * (double)bytes / dt / 1e9);
    fflush(stdout);
}

static void emit(const char *transport, const char *size, const char *what, double value, const char *unit) {
    printf("{\"bench\": \"wire\", \"metric\": \"%s_%s_%s\", \"value\": %.4g, \"unit\": \"%s\"}\n", transport, size, what, value, unit);
    fflush(stdout);
}

/* One transport and size: throughput (stream of n_stream) and rtt (n_rtt echoes). */
static void bench_one(void *ctx, const char *transport, const char *ep, int curve, const char *sname, size_t bytes,
                      int n_stream, int n_rtt, float *buf) {
    char err[256];
    int64_t shape = (int64_t)(bytes / 4);
    WireMsg m, r;
    for (int mode = 0; mode < 2; mode++) {
        int n = mode == 0 ? n_stream : n_rtt;
        if (n <= 0) continue;
        pthread_barrier_t bound;
        pthread_barrier_init(&bound, NULL, 2);
        /* ipc and tcp: the receiver gets its own context (its own I/O thread), as a separate
         * process would; inproc needs the shared one */
        void *pctx = strncmp(ep, "inproc://", 9) == 0 ? ctx : ctx_new();
        Peer pr = {pctx, "", curve, mode, 0, n + (mode == 1 ? 1 : 0), &bound};
        snprintf(pr.endpoint, sizeof pr.endpoint, "%s%s", ep, pctx == ctx ? (mode ? "-echo" : "-stream") : "");
        pthread_t th;
        pthread_create(&th, NULL, peer_main, &pr);
        pthread_barrier_wait(&bound);
        void *c = client(ctx, pr.endpoint, curve);
        wire_msg_init(&m, WIRE_OP_ECHO, 0);
        wire_msg_add(&m, "x", WIRE_F32, 1, &shape, buf);
        if (mode == 0) {
            double t0 = msd_now();
            for (int i = 0; i < n; i++) {
                m.id = (uint64_t)i;
                if (wire_send(c, &m, WIRE_SEND_ZEROCOPY, 30000, err, sizeof err) != WIRE_OK) msd_die("send: %s", err);
            }
            if (wire_recv(c, &r, 60000, err, sizeof err) != WIRE_OK) msd_die("ack: %s", err);
            double dt = msd_now() - t0;
            wire_msg_close(&r);
            emit(transport, sname, "throughput", (double)n * (double)bytes / dt / 1e9, "GB/s");
        } else {
            double *rtt = malloc((size_t)(n + 1) * sizeof *rtt);
            for (int i = 0; i <= n; i++) { /* the first round trip (connection set-up) is not counted */
                double t0 = msd_now();
                m.id = (uint64_t)i;
                if (wire_send(c, &m, WIRE_SEND_ZEROCOPY, 30000, err, sizeof err) != WIRE_OK) msd_die("send: %s", err);
                if (wire_recv(c, &r, 30000, err, sizeof err) != WIRE_OK) msd_die("echo: %s", err);
                if (r.ntensors != 1 || r.tensors[0].nbytes != bytes) msd_die("echo came back wrong");
                wire_msg_close(&r);
                rtt[i] = msd_now() - t0;
            }
            qsort(rtt + 1, (size_t)n, sizeof *rtt, bench_cmp_double);
            emit(transport, sname, "rtt", rtt[1 + n / 2] * 1e6, "us");
            free(rtt);
        }
        pthread_join(th, NULL);
        zmq_close(c);
        if (pctx != ctx) zmq_ctx_term(pctx);
        pthread_barrier_destroy(&bound);
    }
}

int main(int argc, char **argv) {
    log_set_name("bench_wire");
    char dir[] = "/tmp/msdbench.XXXXXX";
    if (!mkdtemp(dir)) msd_die("mkdtemp failed");
    zmq_curve_keypair(g_spub, g_ssec);
    zmq_curve_keypair(g_cpub, g_csec);
    int cross_only = argc > 1 && strcmp(argv[1], "--cross") == 0;
    void *ctx = ctx_new();
    size_t maxb = (size_t)64 << 20;
    float *buf = malloc(maxb);
    char sock[300];
    if (!buf) msd_die("out of memory");
    for (size_t i = 0; i < maxb / 4; i++) buf[i] = (float)(i % 1000);
    struct { const char *name; size_t bytes; int n_stream, n_rtt; } sizes[] = {
        {"4KiB", 4096, 20000, 1000}, {"1MiB", (size_t)1 << 20, 2000, 100}, {"64MiB", (size_t)64 << 20, 16, 4}};
    const char *transports[] = {"inproc", "ipc", "tcp"};
    for (int t = 0; t < 3 && !cross_only; t++)
        for (int s = 0; s < 3; s++) {
            char ep[300];
            if (t == 0) snprintf(ep, sizeof ep, "inproc://bench-%d", s);
            else if (t == 1) snprintf(ep, sizeof ep, "ipc://%s/b%d", dir, s);
            else snprintf(ep, sizeof ep, "tcp://127.0.0.1:*");
            bench_one(ctx, transports[t], ep, 0, sizes[s].name, sizes[s].bytes, sizes[s].n_stream, sizes[s].n_rtt, buf);
        }
    if (zmq_has("curve") && !cross_only)
        bench_one(ctx, "tcp_curve", "tcp://127.0.0.1:*", 1, "1MiB", (size_t)1 << 20, 200, 20, buf);
    zmq_ctx_term(ctx);
    if (zmq_has("curve")) { /* across nodes: I/O threads, connections, a stage-2 step's messages */
        char ipc[300];
        snprintf(ipc, sizeof ipc, "ipc://%s/x", dir);
        const char *tn[3] = {"ipc", "tcp", "tcp_curve"}, *te[3] = {ipc, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*"};
        for (int io = 1; io <= 2; io++) {
            g_io_threads = io;
            ctx = ctx_new();
            for (int t = 0; t < 3; t++)
                for (int nc = 1; nc <= 2; nc++) bench_conns(ctx, tn[t], te[t], t == 2, "1MiB", (size_t)1 << 20, t == 2 ? 400 : 2000, nc, buf);
            zmq_ctx_term(ctx);
        }
        g_io_threads = 1;
        ctx = ctx_new();
        for (int t = 0; t < 3; t += 2) {
            bench_one(ctx, tn[t], te[t], t == 2, "3KiB", 3072, 0, 400, buf);
            bench_one(ctx, tn[t], te[t], t == 2, "784KiB", (size_t)256 * 28 * 28 * 4, 0, 100, buf);
        }
        zmq_ctx_term(ctx);
        snprintf(sock, sizeof sock, "%s/x", dir);
        unlink(sock);
    }
    free(buf);
    for (int s = 0; s < 3; s++) { snprintf(sock, sizeof sock, "%s/b%d", dir, s); unlink(sock); }
    rmdir(dir);
    return 0;
}
