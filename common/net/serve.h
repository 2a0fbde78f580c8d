/* serve.h: the server side of request/reply on a process's bound ROUTER sockets: receive a
 * request (malformed messages are answered with an error status and logged; HEARTBEAT
 * requests are answered), check its tensors, reply. Every check of an untrusted request
 * answers the peer with BAD_REQUEST naming the tensor, so a handler can simply return.
 *
 * serve_loop is the loop of every serving mode (a handler per op), on serve_run (the
 * READY/wait/stop skeleton under it). Also the compute/wait clock every process reports at
 * exit. Not here: the client side (rpc.h). */
#ifndef MSD_SERVE_H
#define MSD_SERVE_H

#include <stdint.h>

#include "proc.h"
#include "wire.h"

/* Wait up to timeout_ms for sock to become readable while serving the control socket (a
 * LINE is answered "this process takes no input lines"). 1: readable; 0: not (timeout or a
 * stop: check proc_should_stop). */
int serve_wait(Proc *p, void *sock, int timeout_ms);
/* 1: *req holds a request for the caller (who closes it); 0: nothing to do. */
int serve_recv(void *sock, WireMsg *req);
void serve_error(void *sock, const WireMsg *req, int32_t status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Send rep without waiting (wire_send_reply: a peer that is gone or not reading loses it; the
 * drop is counted and logged rate-limited). */
void serve_reply(void *sock, const WireMsg *rep);
/* The request tensor `name` with dtype dt, ndim dims (ndim < 0: at least 1) and, when
 * dim0 >= 0, shape[0] == dim0; otherwise answers BAD_REQUEST and returns NULL. */
const WireTensor *serve_tensor(void *sock, const WireMsg *req, const char *name, WireDType dt, int ndim,
                               int64_t dim0);
/* The request tensor `name`: i32 (n) (n < 0: any length >= 1) with every entry a class in
 * 0..nclasses-1; otherwise answers BAD_REQUEST ("OP: label[i] = v is not a class (0..K-1)")
 * and returns NULL. */
const WireTensor *serve_labels(void *sock, const WireMsg *req, const char *name, int64_t n, int nclasses);
/* Answer an op this process does not serve. */
void serve_unknown(void *sock, const WireMsg *req, const char *what_it_serves);

/* One op a serving mode answers: handle replies to req (serve_reply) or refuses it
 * (serve_error, serve_tensor...); the loop closes req afterwards. */
typedef struct ServeOp {
    uint32_t op;           /* WIRE_OP_... */
    void (*handle)(void *ctx, void *sock, const WireMsg *req);
} ServeOp;

/* The serve loop of every serving mode: READY to the launcher, then until a stop one request
 * per poll (the control socket is served between requests) handed to the handler of its op
 * (an op not in ops[0..nops-1] is answered UNKNOWN_OP naming those served); idle (may be
 * NULL) runs after every poll (periodic logs). At the end logs the compute share as
 * busy_report(what). */
void serve_loop(Proc *p, void *sock, const ServeOp *ops, int nops, void *ctx, void (*idle)(void *ctx),
                const char *what);
/* The loop under serve_loop, for a mode that takes its requests itself (the teacher batches
 * requests across peers): READY, then until a stop: wait up to 500 ms for sock (serving the
 * control socket), on_readable(ctx, sock) when it is readable, idle(ctx) (may be NULL) after
 * every wait. */
void serve_run(Proc *p, void *sock, void (*on_readable)(void *ctx, void *sock), void (*idle)(void *ctx), void *ctx);
/* The socket of --bind serve=ENDPOINT, or NULL after a message naming what needs it. */
void *serve_socket(Proc *p, const char *what);

/* Compute-vs-wait accounting: busy_begin/busy_end around compute; busy_report logs
 * "compute X s of Y s wall (Z%)" and returns the share. */
typedef struct Busy {
    double t0, since, busy;
} Busy;
void busy_init(Busy *b);
void busy_begin(Busy *b);
void busy_end(Busy *b);
double busy_report(const Busy *b, const char *what);

#endif
