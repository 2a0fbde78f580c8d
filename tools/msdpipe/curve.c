/* curve.c: the per-run CurveZMQ keys of a pipeline that spans hosts, and the ZAP handler that
 * lets only holders of the run's client key talk to the launcher's tcp control endpoint.
 *
 * One server key pair (every tcp bind) and one client key pair (every tcp connect) per run,
 * written to RUNDIR/curve.keys (mode 0600) in the format of proc.h. The processes run their
 * own ZAP handler (proc.c); this one serves only the launcher's control socket. */
#include "msdpipe.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

int curve_make_keys(CurveKeys *k, const char *path, char *err, size_t errlen) {
    if (zmq_curve_keypair(k->server_public, k->server_secret) != 0 ||
        zmq_curve_keypair(k->client_public, k->client_secret) != 0)
        return msd_errf(err, errlen, "zmq_curve_keypair: %s (libzmq built without CURVE?)", zmq_strerror(zmq_errno()));
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return msd_errf(err, errlen, "cannot create %s: %s", path, strerror(errno));
    char buf[512];
    int n = snprintf(buf, sizeof buf, "server-public %s\nserver-secret %s\nclient-public %s\nclient-secret %s\n",
                     k->server_public, k->server_secret, k->client_public, k->client_secret);
    ssize_t w = write(fd, buf, (size_t)n);
    int e = errno;
    if (close(fd) != 0 || w != n) return msd_errf(err, errlen, "cannot write %s: %s", path, strerror(e));
    return 0;
}

void *curve_zap_start(void *ctx, char *err, size_t errlen) {
    void *zap = zmq_socket(ctx, ZMQ_REP);
    if (!zap) { msd_errf(err, errlen, "zmq_socket: %s", zmq_strerror(zmq_errno())); return NULL; }
    int linger = 0;
    zmq_setsockopt(zap, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_bind(zap, "inproc://zeromq.zap.01") != 0) {
        msd_errf(err, errlen, "zmq_bind inproc://zeromq.zap.01: %s", zmq_strerror(zmq_errno()));
        zmq_close(zap);
        return NULL;
    }
    return zap;
}

static void zap_send(void *zap, const char *s, size_t n, int more) {
    zmq_send(zap, s, n, more ? ZMQ_SNDMORE : 0);
}

void curve_zap_handle(void *zap, const CurveKeys *k) {
    /* request: version, request id, domain, address, routing id, mechanism, credentials... */
    zmq_msg_t part[8];
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, zap, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            if (n == 0) return; /* nothing pending */
            break;
        }
        more = zmq_msg_more(&m);
        if (n < 8) {
            zmq_msg_init(&part[n]);
            zmq_msg_move(&part[n++], &m);
        }
        zmq_msg_close(&m);
    }
    uint8_t want[32];
    const char *status = "400", *text = "unknown client key";
    if (n >= 7 && zmq_msg_size(&part[5]) == 5 && memcmp(zmq_msg_data(&part[5]), "CURVE", 5) == 0 &&
        zmq_msg_size(&part[6]) == 32 && zmq_z85_decode(want, k->client_public) &&
        memcmp(zmq_msg_data(&part[6]), want, 32) == 0) {
        status = "200";
        text = "OK";
    }
    if (strcmp(status, "200") != 0) log_warn("refused a CURVE client on the control endpoint: %s", text);
    zap_send(zap, "1.0", 3, 1);
    if (n >= 2) zap_send(zap, zmq_msg_data(&part[1]), zmq_msg_size(&part[1]), 1);
    else zap_send(zap, "", 0, 1);
    zap_send(zap, status, 3, 1);
    zap_send(zap, text, strlen(text), 1);
    zap_send(zap, "", 0, 1);   /* user id */
    zap_send(zap, "", 0, 0);   /* metadata */
    for (int i = 0; i < n; i++) zmq_msg_close(&part[i]);
}
