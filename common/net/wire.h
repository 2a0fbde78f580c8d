/* wire.h: the msdpipe wire protocol over ZeroMQ (spec: docs/PROTOCOL.md).
 *
 * A message is a ZeroMQ multipart message:
 *   [routing-id frame]   only on ROUTER sockets (added by ZeroMQ; no empty delimiter is used)
 *   header frame     msgpack map: version, op, id, status, error text, tensor descriptors
 *   tensor frames    one raw frame per descriptor, little-endian, row-major
 * Tensors are never msgpack-encoded element by element; wire_send can hand large tensor
 * buffers to ZeroMQ without copying (zmq_msg_init_data) when the caller keeps them alive
 * until ZeroMQ releases them (WIRE_SEND_ZEROCOPY + a free callback), else it copies.
 *
 * The decoder trusts nothing: every length is checked against the frame that carries it, and
 * it never allocates more than what arrived. A malformed message gives WIRE_EMALFORMED with a
 * message; the caller logs it and answers the peer with status WIRE_STATUS_BAD_MESSAGE.
 *
 * Not here: the meaning of each op's tensors (see docs/PROTOCOL.md and the process that
 * serves the op), sockets' lifetime (see proc.h), encryption settings (see proc.h). */
#ifndef MSD_WIRE_H
#define MSD_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#define WIRE_VERSION 1
#define WIRE_MAX_TENSORS 16
#define WIRE_MAX_DIMS 8
#define WIRE_MAX_NAME 64          /* including the terminating NUL */
#define WIRE_MAX_ERROR 256        /* error text, including NUL */
#define WIRE_MAX_ROUTING 4        /* routing-id frames kept from a ROUTER socket */
#define WIRE_MAX_HEADER 16384     /* a header frame larger than this is malformed */
#define WIRE_MAX_TENSOR_BYTES ((int64_t)1 << 34) /* 16 GiB: larger claimed sizes are absurd */
/* The largest frame a socket accepts (ZMQ_MAXMSGSIZE, set by proc.c on every socket; a peer
 * that sends a larger frame is disconnected by libzmq) and sends (wire_send refuses a larger
 * tensor). 64 MiB holds a SAMPLE of 4096 RGB 32x32 images in f32 (48 MiB); the environment
 * variable MSD_MAX_FRAME_BYTES (bytes, or with a K, M or G suffix) raises or lowers it for every
 * process of a run. docs/PROTOCOL.md section 6. */
#define WIRE_MAX_FRAME_DEFAULT ((int64_t)64 << 20)
#define WIRE_MAX_FRAME_ENV "MSD_MAX_FRAME_BYTES"

typedef enum WireDType {
    WIRE_F32 = 0, WIRE_F16 = 1, WIRE_BF16 = 2, WIRE_I32 = 3, WIRE_I64 = 4, WIRE_U8 = 5,
    WIRE_DTYPE_COUNT
} WireDType;

/* Ops. Control ops (launcher <-> process) come first; pipeline ops after. docs/PROTOCOL.md
 * lists each with its tensors. An unknown op number is a malformed message. */
typedef enum WireOp {
    WIRE_OP_READY = 1,      /* process -> launcher: started, endpoints bound; tensors: none */
    WIRE_OP_HEARTBEAT = 2,  /* either way; the receiver notes the peer is alive */
    WIRE_OP_STOP = 3,       /* launcher -> process: finish and exit 0 */
    WIRE_OP_LINE = 4,       /* launcher -> process: one stdin line (tensor "text", u8); reply op LINE */
    WIRE_OP_ERROR = 5,      /* reply carrying only a status and error text */
    WIRE_OP_ECHO = 6,       /* request: tensors; reply: the same tensors (walking skeleton) */
    WIRE_OP_DONE = 7,       /* process -> launcher: finished its job, about to exit 0 */
    WIRE_OP_BATCH = 8,      /* -> data: request a batch; reply: "x" f32 (N, ...) and "label" i32 (N) */
    WIRE_OP_DENOISE = 9,    /* -> teacher/critic: "x" f32 (N, ...), "sigma" f32 (N), optional "label"
                               i32 (N); reply: "d" like x */
    WIRE_OP_FAKE_TRAIN = 10,/* student -> critic: "x" f32 (N, ...) detached generator samples, "label"
                               i32 (N); the critic takes one fake-score update; reply: "loss" f32 (1) */
    WIRE_OP_GENERATE = 11,  /* router -> serving student: "label" i32 (N), "seed" i64 (1); reply: "x"
                               f32 (N, ...) one-step samples */
    WIRE_OP_SAVE = 12,      /* student -> critic: "step" i64 (1); checkpoint now; reply: no tensors */
    WIRE_OP_SAMPLE = 13,    /* -> teacher: "label" i32 (N), "seed" i64 (1), "steps" i32 (1), optional "churn"
                               f32 (1); reply: "x" f32 (N, ...) multi-step EDM (Heun) samples */
    WIRE_OP_RESUME = 14,    /* student -> critic: "updates" i64 (1); roll back to the checkpoint taken after
                               that many updates (0: the initial weights); reply: no tensors */
    WIRE_OP_GAN_GRAD = 15,  /* student -> critic with a GAN head: "x" f32 (N, ...) generator samples, "label"
                               i32 (N), "step" i64 (1); reply: "dx" f32 like x (dL_G/dx), "loss" f32 (1) */
    WIRE_OP_COUNT
} WireOp;

typedef enum WireStatus {
    WIRE_STATUS_OK = 0,
    WIRE_STATUS_BAD_MESSAGE = 1,   /* malformed header or frames */
    WIRE_STATUS_BAD_VERSION = 2,   /* protocol version not supported */
    WIRE_STATUS_UNKNOWN_OP = 3,    /* op not served by this process */
    WIRE_STATUS_BAD_REQUEST = 4,   /* well-formed, but the tensors do not fit the op */
    WIRE_STATUS_BUSY = 5,          /* try again later */
    WIRE_STATUS_INTERNAL = 6,      /* the server failed while handling it */
    WIRE_STATUS_COUNT
} WireStatus;

typedef enum WireResult {
    WIRE_OK = 0,
    WIRE_EMALFORMED = -1,  /* message arrived but is invalid; err says why; it was consumed */
    WIRE_EAGAIN = -2,      /* nothing arrived within the timeout / would block */
    WIRE_ESOCKET = -3,     /* socket error (context terminated, peer unroutable...); err says why */
    WIRE_ETOOBIG = -4,     /* wire_send: a tensor passes wire_max_frame(); nothing was sent */
} WireResult;

typedef struct WireTensor {
    char name[WIRE_MAX_NAME];
    WireDType dtype;
    int ndim;
    int64_t shape[WIRE_MAX_DIMS];
    void *data;            /* points into a received frame, or the sender's buffer */
    size_t nbytes;         /* = numel * dtype size, checked on receive */
} WireTensor;

typedef struct WireMsg {
    uint32_t version;
    uint32_t op;           /* WireOp */
    uint64_t id;           /* request id; a reply carries the request's id */
    int32_t status;        /* WireStatus */
    char error[WIRE_MAX_ERROR];
    /* set by wire_recv/wire_decode on WIRE_EMALFORMED: the status to answer with
     * (WIRE_STATUS_BAD_VERSION for a wrong version, else WIRE_STATUS_BAD_MESSAGE) */
    int32_t reject_status;
    int ntensors;
    WireTensor tensors[WIRE_MAX_TENSORS];
    /* routing envelope (ROUTER sockets): received identity frames, resent by wire_reply */
    int nrouting;
    size_t routing_len[WIRE_MAX_ROUTING];
    unsigned char routing[WIRE_MAX_ROUTING][256];
    /* received frames kept alive while tensors point into them (private). A received WireMsg
     * must not be copied by value: small frames live inside frames_ and tensors point there. */
    int nframes_;
    zmq_msg_t frames_[WIRE_MAX_TENSORS];
} WireMsg;

/* A ZeroMQ context for wire sockets: zmq_ctx_new with libzmq's receive-side zero copy turned
 * off (the draft context option ZMQ_ZERO_COPY_RECV, 10, where the library has it). With it
 * on, a large frame is handed over in place inside the receive batch, right after its 9-byte
 * frame header, so tensor data arrives misaligned and wire_recv must copy it to realign; with
 * it off, the I/O thread gives each large frame its own aligned buffer. NULL on failure. */
void *wire_ctx_new(void);

const char *wire_op_name(uint32_t op);        /* "ready", ..., "?" for unknown */
const char *wire_status_name(int32_t status); /* "ok", "bad-message", ... */
const char *wire_dtype_name(WireDType d);     /* "f32", ... */
size_t wire_dtype_size(WireDType d);          /* 0 for an invalid dtype */

/* Start a message: zero everything, set version, op, id. */
void wire_msg_init(WireMsg *m, uint32_t op, uint64_t id);
/* Append a tensor descriptor pointing at caller memory (not copied until send). A full
 * message, a bad name, dtype or shape, or NULL data for a non-empty tensor is a bug: it
 * aborts (MSD_CHECK), so a tensor never goes silently missing. */
void wire_msg_add(WireMsg *m, const char *name, WireDType dtype, int ndim, const int64_t *shape, const void *data);
/* A label tensor from a peer: every entry of the i32 tensor t a class in 0..nclasses-1;
 * else -1 with "label[i] = v is not a class (0..K-1)" in err. */
int wire_check_labels(const WireTensor *t, int nclasses, char *err, size_t errlen);
/* Find a tensor by name; NULL if absent. */
const WireTensor *wire_msg_find(const WireMsg *m, const char *name);
/* Release received frames. Safe on an initialised or zeroed message; idempotent. */
void wire_msg_close(WireMsg *m);

#define WIRE_SEND_ZEROCOPY 1  /* tensor buffers >= 64 KiB go without copy; caller keeps them
                                 alive until zmq is done (only safe with a free callback or
                                 a buffer that outlives the socket) */

/* Send m on sock (DEALER, ROUTER with m->routing set, PAIR...). Retries EINTR.
 * Blocks up to timeout_ms (-1 forever) when the HWM is reached (or, on a DEALER, while no
 * peer is connected); WIRE_EAGAIN then, and nothing was sent. Envelope convention: no empty
 * delimiter frame is ever sent or expected; m->routing frames (nrouting, at most one for a
 * direct ROUTER peer) go first. Returns WireResult; err says why on failure. */
int wire_send(void *sock, const WireMsg *m, int flags, int timeout_ms, char *err, size_t errlen);
/* Reply to a received request: copies the routing envelope and id of req into rep. */
void wire_reply_init(WireMsg *rep, const WireMsg *req, uint32_t op, int32_t status);
/* Receive one message within timeout_ms (-1 forever, 0 poll). m need not be initialised; a
 * received m must be released with wire_msg_close. On a ROUTER socket the first frame (the
 * peer's routing id, added by ZeroMQ) is kept in m->routing (nrouting = 1); on other sockets
 * nrouting = 0. Tensor data is 8-byte aligned (a misaligned frame is copied). Retries EINTR. Returns WireResult. On WIRE_EMALFORMED the
 * message is consumed, err explains, and m->routing/m->id are filled when they could be read
 * so the caller can answer with wire_send_error. */
int wire_recv(void *sock, WireMsg *m, int timeout_ms, char *err, size_t errlen);
/* Answer req with op ERROR, the status and a message (through wire_send_reply when req came
 * from a ROUTER). */
int wire_send_error(void *sock, const WireMsg *req, int32_t status, const char *text);
/* Send a reply on a ROUTER socket without ever waiting: a reply that cannot be queued at once
 * (the peer is gone, or is not reading and its queue is full: EHOSTUNREACH or EAGAIN) is
 * dropped, counted (wire_replies_dropped) and logged rate-limited; a tensor over the frame
 * limit is answered with an INTERNAL error instead. So one client can never stall a server. */
int wire_send_reply(void *sock, const WireMsg *rep);
/* Replies dropped by wire_send_reply in this process so far. */
long wire_replies_dropped(void);

/* The frame limit in bytes: MSD_MAX_FRAME_BYTES when set and valid, else WIRE_MAX_FRAME_DEFAULT. */
int64_t wire_max_frame(void);
/* Parse a frame limit ("1048576", "64M", "2G"; 1 KiB .. WIRE_MAX_TENSOR_BYTES) into *out; -1 when
 * it is not one. */
int wire_parse_frame_limit(const char *s, int64_t *out);

/* ---- rate-limited logging of per-message events ---------------------------------------
 * Anything a peer can cause once per message it sends (a malformed message, a refused
 * request, a dropped reply) is logged through one of these: in each WIRE_LOG_INTERVAL s window
 * the first WIRE_LOG_BURST events are logged in full, the rest are counted, and one summary
 * line ("N more malformed messages suppressed in the last 10 s; the latest from PEER: ...")
 * comes with the next event after the window, or at wire_log_flush (proc_finish calls it). */
#define WIRE_LOG_BURST 5
#define WIRE_LOG_INTERVAL 10.0
typedef enum WireLogKind {
    WIRE_LOG_MALFORMED,    /* "malformed messages" */
    WIRE_LOG_REFUSED,      /* "refused requests" (bad request, unknown op) */
    WIRE_LOG_DROPPED,      /* "dropped replies" */
    WIRE_LOG_STRAY,        /* "stray replies" (a client got a reply it did not wait for) */
    WIRE_LOG_KINDS
} WireLogKind;
/* Log one event of kind from peer (a name, or NULL) at warning level, rate-limited; thread-safe. */
void wire_log_limited(WireLogKind kind, const char *peer, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Log the pending summaries now (at exit). */
void wire_log_flush(void);
/* The sender of m as text: its routing id when printable, else hex; "?" when m has none. */
const char *wire_peer_name(const WireMsg *m, char *buf, size_t len);

/* Pure decoding of a header frame plus its tensor frames (what wire_recv does after reading
 * the frames); used by the fuzz target. data/len per frame. */
int wire_decode(WireMsg *m, const void *header, size_t header_len, int nframes, void *const *frames,
                const size_t *frame_lens, char *err, size_t errlen);
/* Encode only the header of m into buf (cap bytes); returns its length, or -1 if too big. */
int wire_encode_header(const WireMsg *m, void *buf, size_t cap);

#endif
