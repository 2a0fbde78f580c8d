/* serve.c: see serve.h. */
#include "serve.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

int serve_wait(Proc *p, void *sock, int timeout_ms) {
    return proc_poll(p, &sock, 1, timeout_ms, NULL) & 1; /* a LINE is answered by proc_poll */
}

int serve_recv(void *sock, WireMsg *req) {
    char err[256];
    int rc = wire_recv(sock, req, 0, err, sizeof err);
    if (rc == WIRE_EAGAIN) return 0;
    if (rc == WIRE_ESOCKET) {
        log_warn("serve socket: %s", err);
        return 0;
    }
    if (rc == WIRE_EMALFORMED) {
        char peer[80];
        wire_log_limited(WIRE_LOG_MALFORMED, wire_peer_name(req, peer, sizeof peer), "malformed message (answered %s): %s",
                         wire_status_name(req->reject_status), err);
        wire_send_error(sock, req, req->reject_status, err);
        return 0;
    }
    if (req->op == WIRE_OP_HEARTBEAT) {
        WireMsg rep;
        wire_reply_init(&rep, req, WIRE_OP_HEARTBEAT, WIRE_STATUS_OK);
        serve_reply(sock, &rep);
        wire_msg_close(req);
        return 0;
    }
    return 1;
}

void serve_error(void *sock, const WireMsg *req, int32_t status, const char *fmt, ...) {
    char msg[WIRE_MAX_ERROR];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char peer[80];
    wire_log_limited(WIRE_LOG_REFUSED, wire_peer_name(req, peer, sizeof peer), "request %llu (%s) refused: %s",
                     (unsigned long long)req->id, wire_op_name(req->op), msg);
    wire_send_error(sock, req, status, msg);
}

void serve_reply(void *sock, const WireMsg *rep) { wire_send_reply(sock, rep); }

const WireTensor *serve_tensor(void *sock, const WireMsg *req, const char *name, WireDType dt, int ndim,
                               int64_t dim0) {
    const WireTensor *t = wire_msg_find(req, name);
    if (!t) {
        serve_error(sock, req, WIRE_STATUS_BAD_REQUEST, "%s needs a tensor \"%s\" (%s)", wire_op_name(req->op), name,
                    wire_dtype_name(dt));
        return NULL;
    }
    if (t->dtype != dt || (ndim >= 0 ? t->ndim != ndim : t->ndim < 1) || (dim0 >= 0 && t->shape[0] != dim0)) {
        char want[64] = "";
        if (dim0 >= 0) snprintf(want, sizeof want, " with %lld rows", (long long)dim0);
        serve_error(sock, req, WIRE_STATUS_BAD_REQUEST, "%s: tensor \"%s\" is %s with %d dims (first %lld); expected %s with %d dims%s",
                    wire_op_name(req->op), name, wire_dtype_name(t->dtype), t->ndim,
                    (long long)(t->ndim ? t->shape[0] : 0), wire_dtype_name(dt), ndim, want);
        return NULL;
    }
    return t;
}

const WireTensor *serve_labels(void *sock, const WireMsg *req, const char *name, int64_t n, int nclasses) {
    const WireTensor *l = serve_tensor(sock, req, name, WIRE_I32, 1, n);
    char err[256];
    if (l && wire_check_labels(l, nclasses, err, sizeof err)) {
        serve_error(sock, req, WIRE_STATUS_BAD_REQUEST, "%s: %s", wire_op_name(req->op), err);
        return NULL;
    }
    return l;
}

void serve_run(Proc *p, void *sock, void (*on_readable)(void *ctx, void *sock), void (*idle)(void *ctx), void *ctx) {
    proc_ready(p);
    while (!proc_should_stop(p)) {
        if (serve_wait(p, sock, 500)) on_readable(ctx, sock);
        if (idle) idle(ctx);
    }
    if (wire_replies_dropped() > 0)
        log_info("%ld replies dropped (their peers were gone or not reading)", wire_replies_dropped());
}

/* serve_loop's state: the ops, the caller's context and the compute clock. */
typedef struct ServeDispatch {
    const ServeOp *ops;
    int nops;
    void *ctx;
    void (*idle)(void *ctx);
    char served[256];      /* "denoise, fake-train and save" */
    Busy busy;
} ServeDispatch;

/* One request per poll: the control socket is served between requests. */
static void serve_dispatch(void *arg, void *sock) {
    ServeDispatch *d = arg;
    WireMsg req;
    if (!serve_recv(sock, &req)) return;
    busy_begin(&d->busy);
    int i = 0;
    while (i < d->nops && d->ops[i].op != req.op) i++;
    if (i < d->nops) d->ops[i].handle(d->ctx, sock, &req);
    else serve_unknown(sock, &req, d->served);
    busy_end(&d->busy);
    wire_msg_close(&req);
}

static void serve_idle(void *arg) {
    ServeDispatch *d = arg;
    if (d->idle) d->idle(d->ctx);
}

void serve_loop(Proc *p, void *sock, const ServeOp *ops, int nops, void *ctx, void (*idle)(void *ctx),
                const char *what) {
    ServeDispatch d = {ops, nops, ctx, idle, "", {0, 0, 0}};
    size_t n = 0;
    for (int i = 0; i < nops && n < sizeof d.served; i++)
        n += (size_t)snprintf(d.served + n, sizeof d.served - n, "%s%s", i == 0 ? "" : i + 1 < nops ? ", " : " and ",
                              wire_op_name(ops[i].op));
    busy_init(&d.busy);
    serve_run(p, sock, serve_dispatch, serve_idle, &d);
    busy_report(&d.busy, what);
}

void *serve_socket(Proc *p, const char *what) {
    void *s = proc_bound(p, "serve");
    if (!s) msd_fail(2, "%s needs --bind serve=ENDPOINT", what);
    return s;
}

void serve_unknown(void *sock, const WireMsg *req, const char *what_it_serves) {
    serve_error(sock, req, WIRE_STATUS_UNKNOWN_OP, "msd-%s serves %s, not %s", log_get_name(), what_it_serves,
                wire_op_name(req->op));
}

void busy_init(Busy *b) {
    b->t0 = msd_now();
    b->since = 0;
    b->busy = 0;
}
void busy_begin(Busy *b) { b->since = msd_now(); }
void busy_end(Busy *b) {
    if (b->since > 0) b->busy += msd_now() - b->since;
    b->since = 0;
}
double busy_report(const Busy *b, const char *what) {
    double wall = msd_now() - b->t0, share = wall > 0 ? b->busy / wall : 0;
    log_info("%s: compute %.2f s of %.2f s wall (%.1f%%), waiting %.1f%%", what, b->busy, wall, 100 * share,
             100 * (1 - share));
    return share;
}
