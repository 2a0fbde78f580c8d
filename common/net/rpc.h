/* rpc.h: the client side of request/reply over the DEALER sockets of a process (proc.h):
 * send a request, then wait for its reply by id while the control socket keeps being served
 * (heartbeats, STOP, LINE). Several requests to different peers may be in flight at once;
 * requests to one peer are answered in order, so a caller may send several and await them
 * one by one.
 *
 * Failures (a peer's error reply, a malformed reply, silence past the timeout, a stop) are
 * described in rpc->err; the caller decides whether that ends the process. Not here: the
 * server side (serve.h). */
#ifndef MSD_RPC_H
#define MSD_RPC_H

#include "proc.h"
#include "wire.h"

typedef struct Rpc {
    Proc *p;
    int timeout_ms;      /* per reply */
    uint64_t next_id;    /* ids handed out by rpc_id */
    const char *busy_reply; /* answer to LINE messages meanwhile (NULL: a default text) */
    int wait_ms;         /* rpc_call: resend a request that timed out until this much time has
                            passed in all (a peer restarting); 0: no resend */
    int timed_out;       /* the last failure was a peer's silence past timeout_ms */
    int32_t peer_status; /* the last failure was a peer's reply with this status (0: not one) */
    int finishing;       /* the process is stopping and finishes one last exchange (a checkpoint
                            on STOP): a stop does not end the wait, the timeout still does, and
                            the control socket is left alone */
    char err[2048];
} Rpc;

void rpc_init(Rpc *r, Proc *p, int timeout_ms);
static inline uint64_t rpc_id(Rpc *r) { return ++r->next_id; }
/* Send m (its id set by the caller, usually rpc_id) to peer. 0, or -1 with r->err. */
int rpc_send(Rpc *r, void *sock, const char *peer, const WireMsg *m);
/* Wait for replies to n requests in flight on n different sockets: out[i] answers ids[i] with
 * op ops[i] and status OK. Replies with other ids are dropped with a log line. On success the
 * caller closes every out[i]; on failure (-1, r->err) nothing is left open. */
int rpc_await(Rpc *r, int n, void **socks, const char *const *peers, const uint64_t *ids, const uint32_t *ops,
              WireMsg *out);
/* rpc_send then rpc_await of one request. When it times out and wait_ms allows, it is sent
 * again with the same id (so only for requests a server may see twice: BATCH, DENOISE to a
 * stateless peer, SAVE, RESUME), each try waiting timeout_ms, until wait_ms has passed. */
int rpc_call(Rpc *r, void *sock, const char *peer, const WireMsg *req, WireMsg *rep);

/* Look up a reply tensor with the expected dtype and number of dims (ndim < 0: any); fills
 * r->err and returns NULL when it is missing or different. */
const WireTensor *rpc_tensor(Rpc *r, const WireMsg *m, const char *peer, const char *name, WireDType dt, int ndim);
/* rpc_tensor with exactly the dims shape[0..ndim-1] (shape[i] < 0: any size); r->err names
 * the tensor, its shape and the one expected otherwise. */
const WireTensor *rpc_tensor_shape(Rpc *r, const WireMsg *m, const char *peer, const char *name, WireDType dt,
                                   int ndim, const int64_t *shape);
/* rpc_tensor of an i32 label tensor of n entries (n < 0: any), each a class in
 * 0..nclasses-1 (wire_check_labels); NULL with r->err otherwise. */
const WireTensor *rpc_labels(Rpc *r, const WireMsg *m, const char *peer, const char *name, int64_t n, int nclasses);

#endif
