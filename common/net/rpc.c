/* rpc.c: see rpc.h. */
#include "rpc.h"

#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "log.h"

void rpc_init(Rpc *r, Proc *p, int timeout_ms) {
    memset(r, 0, sizeof *r);
    r->p = p;
    r->timeout_ms = timeout_ms;
}

int rpc_send(Rpc *r, void *sock, const char *peer, const WireMsg *m) {
    char err[256];
    if (wire_send(sock, m, 0, r->timeout_ms, err, sizeof err) != WIRE_OK) {
        snprintf(r->err, sizeof r->err, "sending %s to %s: %s", wire_op_name(m->op), peer, err);
        return -1;
    }
    return 0;
}

/* Take one readable message from sock: 1 when it is the awaited reply (in *m), 0 when it was
 * something else (dropped), -1 on a failure (r->err). */
static int rpc_take(Rpc *r, void *sock, const char *peer, uint64_t id, uint32_t op, WireMsg *m) {
    char err[256];
    int rc = wire_recv(sock, m, 0, err, sizeof err);
    if (rc == WIRE_EAGAIN) return 0;
    if (rc != WIRE_OK) {
        snprintf(r->err, sizeof r->err, "%s sent a bad message: %s", peer, err);
        return -1;
    }
    if (m->id != id) {
        wire_log_limited(WIRE_LOG_STRAY, peer, "dropped a reply to request %llu (waiting for %llu)",
                         (unsigned long long)m->id, (unsigned long long)id);
        wire_msg_close(m);
        return 0;
    }
    if (m->status != WIRE_STATUS_OK || m->op != op) {
        r->peer_status = m->status != WIRE_STATUS_OK ? m->status : WIRE_STATUS_BAD_MESSAGE;
        snprintf(r->err, sizeof r->err, "%s answered %s request %llu with %s, status %s: %s", peer, wire_op_name(op),
                 (unsigned long long)id, wire_op_name(m->op), wire_status_name(m->status),
                 m->error[0] ? m->error : "(no text)");
        wire_msg_close(m);
        return -1;
    }
    return 1;
}

/* rpc_await's wait while finishing: the peers' sockets only; a mask of the readable ones. */
static int poll_peers(void **socks, int n, int timeout_ms) {
    zmq_pollitem_t items[16];
    for (int i = 0; i < n; i++) items[i] = (zmq_pollitem_t){socks[i], 0, ZMQ_POLLIN, 0};
    if (zmq_poll(items, n, timeout_ms) < 0) return 0;   /* EINTR or ETERM: the deadline decides */
    int mask = 0;
    for (int i = 0; i < n; i++)
        if (items[i].revents & ZMQ_POLLIN) mask |= 1 << i;
    return mask;
}

int rpc_await(Rpc *r, int n, void **socks, const char *const *peers, const uint64_t *ids, const uint32_t *ops,
              WireMsg *out) {
    enum { MAXN = 16 };
    MSD_CHECK(n >= 1 && n <= MAXN);
    int have[MAXN] = {0}, got = 0;
    r->timed_out = 0;
    r->peer_status = 0;
    double deadline = msd_now() + r->timeout_ms / 1000.0;
    while (got < n) {
        double left = deadline - msd_now();
        if (left <= 0) {
            for (int i = 0; i < n; i++)
                if (!have[i]) {
                    snprintf(r->err, sizeof r->err, "%s did not answer %s request %llu within %d ms", peers[i],
                             wire_op_name(ops[i]), (unsigned long long)ids[i], r->timeout_ms);
                    break;
                }
            r->timed_out = 1;
            goto fail;
        }
        void *wait[MAXN];
        int map[MAXN], nw = 0;
        for (int i = 0; i < n; i++)
            if (!have[i]) { map[nw] = i; wait[nw++] = socks[i]; }
        WireMsg line;
        int ready = r->finishing ? poll_peers(wait, nw, (int)(left * 1000.0) + 1)
                                 : proc_poll(r->p, wait, nw, (int)(left * 1000.0) + 1, &line);
        if (ready & PROC_POLL_LINE) {
            proc_reply_line(r->p, &line, r->busy_reply ? r->busy_reply : "this process takes no input lines",
                            WIRE_STATUS_UNKNOWN_OP);
            wire_msg_close(&line);
        }
        if (!r->finishing && proc_should_stop(r->p)) {
            snprintf(r->err, sizeof r->err, "stopped while waiting for replies");
            goto fail;
        }
        for (int k = 0; k < nw; k++) {
            if (!(ready & (1 << k))) continue;
            int i = map[k];
            int rc = rpc_take(r, socks[i], peers[i], ids[i], ops[i], &out[i]);
            if (rc < 0) goto fail;
            if (rc == 1) { have[i] = 1; got++; }
        }
    }
    return 0;
fail:
    for (int i = 0; i < n; i++)
        if (have[i]) wire_msg_close(&out[i]);
    return -1;
}

int rpc_call(Rpc *r, void *sock, const char *peer, const WireMsg *req, WireMsg *rep) {
    double end = msd_now() + r->wait_ms / 1000.0;
    uint32_t op = req->op;
    for (;;) {
        if (rpc_send(r, sock, peer, req)) return -1;
        if (rpc_await(r, 1, &sock, &peer, &req->id, &op, rep) == 0) return 0;
        if (!r->timed_out || msd_now() >= end) return -1;
        log_warn("%s; sending it again (is %s restarting? waiting up to %d ms in all)", r->err, peer, r->wait_ms);
    }
}

const WireTensor *rpc_tensor(Rpc *r, const WireMsg *m, const char *peer, const char *name, WireDType dt, int ndim) {
    const WireTensor *t = wire_msg_find(m, name);
    if (!t) {
        snprintf(r->err, sizeof r->err, "%s: %s reply has no tensor \"%s\"", peer, wire_op_name(m->op), name);
        return NULL;
    }
    if (t->dtype != dt || (ndim >= 0 && t->ndim != ndim)) {
        snprintf(r->err, sizeof r->err, "%s: tensor \"%s\" is %s with %d dims, expected %s with %d", peer, name,
                 wire_dtype_name(t->dtype), t->ndim, wire_dtype_name(dt), ndim);
        return NULL;
    }
    return t;
}

/* "(2, 3)", with "*" for a size < 0. */
static const char *shape_text(int ndim, const int64_t *shape, char *buf, size_t len) {
    size_t k = (size_t)snprintf(buf, len, "(");
    for (int i = 0; i < ndim && k < len; i++) {
        if (shape[i] < 0) k += (size_t)snprintf(buf + k, len - k, "%s*", i ? ", " : "");
        else k += (size_t)snprintf(buf + k, len - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    }
    if (k < len) snprintf(buf + k, len - k, ")");
    return buf;
}

const WireTensor *rpc_tensor_shape(Rpc *r, const WireMsg *m, const char *peer, const char *name, WireDType dt,
                                   int ndim, const int64_t *shape) {
    const WireTensor *t = rpc_tensor(r, m, peer, name, dt, ndim);
    if (!t) return NULL;
    for (int i = 0; i < ndim; i++)
        if (shape[i] >= 0 && t->shape[i] != shape[i]) {
            char got[160], want[160];
            snprintf(r->err, sizeof r->err, "%s: tensor \"%s\" is %s, expected %s", peer, name,
                     shape_text(t->ndim, t->shape, got, sizeof got), shape_text(ndim, shape, want, sizeof want));
            return NULL;
        }
    return t;
}

const WireTensor *rpc_labels(Rpc *r, const WireMsg *m, const char *peer, const char *name, int64_t n, int nclasses) {
    const WireTensor *t = rpc_tensor_shape(r, m, peer, name, WIRE_I32, 1, &n);
    if (!t) return NULL;
    char err[256];
    if (wire_check_labels(t, nclasses, err, sizeof err)) {
        snprintf(r->err, sizeof r->err, "%s: %s", peer, err);
        return NULL;
    }
    return t;
}
