/* fuzz_lines.c: libFuzzer target for `msdpipe up`'s stdin line handling (tools/msdpipe/lines.c):
 * line splitting, CR/LF, NUL and control bytes, lines over LINES_MAX_BYTES, the reply window
 * and replies out of order, late, repeated or for ids never sent.
 *
 * The input is a script of operations, each a byte op (taken mod 6) and its arguments:
 *   0 LEN BYTES...   stdin bytes (up to LEN, clamped to what is left and to the free buffer)
 *   1 B C            C*512+512 copies of byte B, never '\n' (reaches the 64 KiB line limit
 *                    cheaply)
 *   2                end of input
 *   3                take the LINE requests the launcher sent
 *   4 I S T LEN TEXT answer the I-th line waiting for an answer: status S (odd: an ERROR
 *                    with TEXT as its message), T & 1: a text tensor TEXT, else none
 *   5 ID             answer line ID (maybe never sent, maybe answered already)
 * as the launcher's poll loop does: stdin bytes arrive only while lines_want_input, else the
 * buffered lines are pumped. The LINE requests go through a real ROUTER socket to a DEALER
 * named like the stdin process (inproc). Checked on every request: op LINE, ids 1, 2, 3...
 * without gaps except for lines answered locally (a NUL, too long), text without NUL or '\n'
 * and shorter than LINES_MAX_BYTES. At the end (end of input, every line answered): nothing
 * is outstanding, every line is printed in order (next_print == next_id) and input is closed.
 * Replies print to stdout, which is /dev/null here; lines.c's warnings go to stderr only with
 * FUZZ_LINES_VERBOSE=1 (to see which paths an input takes). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "log.h"
#include "msdpipe.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void *zctx, *ctl, *peer;
static uint64_t waiting[LINES_WINDOW + 1]; /* ids sent and not answered by the script yet */
static int nwaiting;

static void setup(void) {
    if (zctx) return;
    if (!freopen("/dev/null", "w", stdout)) msd_die("fuzz: cannot reopen stdout");
    if (!getenv("FUZZ_LINES_VERBOSE")) log_set_level(LOG_LVL_ERROR); /* 1: show lines.c's warnings */
    zctx = zmq_ctx_new();
    ctl = zmq_socket(zctx, ZMQ_ROUTER);
    peer = zmq_socket(zctx, ZMQ_DEALER);
    int one = 1, zero = 0, hwm = 0;
    zmq_setsockopt(ctl, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(ctl, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(ctl, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(peer, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(peer, ZMQ_ROUTING_ID, "router", 6);
    if (zmq_bind(ctl, "inproc://fuzz-lines") != 0 || zmq_connect(peer, "inproc://fuzz-lines") != 0)
        msd_die("fuzz: inproc sockets: %s", zmq_strerror(zmq_errno()));
}

/* Take every LINE request sent so far and check it; last: the id of the last one. */
static void drain(const Lines *q, uint64_t *last) {
    for (;;) {
        WireMsg m;
        char err[256];
        int rc = wire_recv(peer, &m, 0, err, sizeof err);
        if (rc == WIRE_EAGAIN) return;
        if (rc != WIRE_OK) msd_die("fuzz: the launcher sent a bad message: %s", err);
        const WireTensor *t = wire_msg_find(&m, "text");
        MSD_CHECK(m.op == WIRE_OP_LINE && m.ntensors == 1 && t && t->dtype == WIRE_U8 && t->ndim == 1);
        MSD_CHECK(m.id > *last && m.id < q->next_id);
        MSD_CHECK(t->nbytes < LINES_MAX_BYTES);
        MSD_CHECK(!t->nbytes || (!memchr(t->data, 0, t->nbytes) && !memchr(t->data, '\n', t->nbytes)));
        *last = m.id;
        /* answered already (op 5 guessed its id before it was taken): not waiting */
        int answered = m.id < q->next_print || q->slots[m.id % LINES_WINDOW].have;
        MSD_CHECK(answered || nwaiting < LINES_WINDOW);
        if (!answered) waiting[nwaiting++] = m.id;
        wire_msg_close(&m);
    }
}

static void answer(Lines *q, uint64_t id, int status, int with_text, const uint8_t *text, size_t len) {
    WireMsg m;
    wire_msg_init(&m, status ? WIRE_OP_ERROR : WIRE_OP_LINE, id);
    m.status = status ? status % (WIRE_STATUS_COUNT - 1) + 1 : WIRE_STATUS_OK;
    if (status) snprintf(m.error, sizeof m.error, "%.*s", (int)len, (const char *)text);
    int64_t shape[1] = {(int64_t)len};
    if (with_text && !status) wire_msg_add(&m, "text", WIRE_U8, 1, shape, len ? text : (const uint8_t *)"");
    if (lines_reply(q, &m) != 0) msd_die("fuzz: lines_reply failed (stdout is /dev/null)");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    setup();
    static Lines q;
    lines_init(&q, "router");
    /* requests the last input sent and answered (op 5) before taking them */
    WireMsg stale;
    char err[256];
    while (wire_recv(peer, &stale, 0, err, sizeof err) != WIRE_EAGAIN) wire_msg_close(&stale);
    nwaiting = 0;
    uint64_t last = 0;
    size_t i = 0;
#define ARG() (i < size ? data[i++] : 0)
    while (i < size) {
        int op = data[i++] % 6;
        if (op == 0 || op == 1 || op == 2) {
            size_t room = LINES_MAX_BYTES - q.inlen, n = 0;
            if (op == 0) {
                n = ARG();
                if (n > size - i) n = size - i;
                if (n > room) n = room;
                memcpy(q.inbuf + q.inlen, data + i, n);
                i += n;
            } else if (op == 1) {
                int b = ARG();
                if (b == '\n') b = 'x'; /* 65536 empty lines would only be slow */
                n = ((size_t)ARG() + 1) * 512;
                if (n > room) n = room;
                memset(q.inbuf + q.inlen, b, n);
            }
            if (q.eof || !lines_want_input(&q)) {
                if (lines_pump(&q, ctl) != 0) msd_die("fuzz: lines_pump failed");
            } else if ((op == 2 || n > 0) && lines_take(&q, op == 2 ? 0 : n, ctl) != 0) {
                msd_die("fuzz: lines_take failed");
            }
        } else if (op == 3) {
            drain(&q, &last);
        } else if (op == 4) {
            int k = ARG(), st = ARG() & 7, tx = ARG();
            size_t len = ARG();
            if (len > size - i) len = size - i;
            if (nwaiting) {
                k %= nwaiting;
                answer(&q, waiting[k], st & 1 ? st : 0, tx & 1, data + i, len);
                waiting[k] = waiting[--nwaiting];
            }
            i += len;
        } else {
            uint64_t id = ARG();
            answer(&q, id, 0, 1, (const uint8_t *)"x", 1);
            for (int k = 0; k < nwaiting; k++)
                if (waiting[k] == id) waiting[k--] = waiting[--nwaiting];
        }
        MSD_CHECK(q.next_print <= q.next_id && lines_outstanding(&q) <= LINES_WINDOW);
        MSD_CHECK(q.inlen <= LINES_MAX_BYTES);
    }
    /* the end of input, then answer everything until every line is printed */
    if (!q.eof) {
        if (!lines_want_input(&q) && lines_pump(&q, ctl) != 0) msd_die("fuzz: lines_pump failed");
        if (lines_want_input(&q) && lines_take(&q, 0, ctl) != 0) msd_die("fuzz: lines_take failed");
    }
    for (int round = 0; round < 1000 && (q.open || lines_outstanding(&q)); round++) {
        if (q.inlen && lines_pump(&q, ctl) != 0) msd_die("fuzz: lines_pump failed");
        drain(&q, &last);
        while (nwaiting) answer(&q, waiting[--nwaiting], 0, 1, (const uint8_t *)"ok", 2);
        if (!q.eof && lines_want_input(&q) && lines_take(&q, 0, ctl) != 0) msd_die("fuzz: lines_take failed");
    }
    MSD_CHECK(!q.open && lines_outstanding(&q) == 0 && q.next_print == q.next_id && q.inlen == 0);
    lines_free(&q);
    return 0;
}
