/* wire.c: the msdpipe wire protocol (see wire.h and docs/PROTOCOL.md).
 *
 * Encoding uses msgpack-c's packer into a fixed, bounded buffer. Decoding is a small
 * hand-written msgpack reader over the header frame: it never allocates, checks every claimed
 * length against the bytes that are left, and accepts only the types the spec names, so a
 * hostile header cannot make it allocate what it merely claims (msgpack_unpack would allocate
 * an array's claimed element count up front).
 *
 * Not here: sockets' creation and options (proc.c), what each op's tensors mean (the
 * processes), encryption (proc.c). */
#include "wire.h"

#include <errno.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

#define WIRE_ZEROCOPY_MIN (64 * 1024)
#define WIRE_SKIP_DEPTH 8

/* ---- names ---------------------------------------------------------------------------- */

void *wire_ctx_new(void) {
    void *ctx = zmq_ctx_new();
    if (ctx) (void)zmq_ctx_set(ctx, 10 /* ZMQ_ZERO_COPY_RECV (draft API) */, 0); /* ignored where absent */
    return ctx;
}

const char *wire_op_name(uint32_t op) {
    static const char *names[WIRE_OP_COUNT] = {
        [WIRE_OP_READY] = "ready", [WIRE_OP_HEARTBEAT] = "heartbeat", [WIRE_OP_STOP] = "stop",
        [WIRE_OP_LINE] = "line",   [WIRE_OP_ERROR] = "error",         [WIRE_OP_ECHO] = "echo",
        [WIRE_OP_DONE] = "done",   [WIRE_OP_BATCH] = "batch",         [WIRE_OP_DENOISE] = "denoise",
        [WIRE_OP_FAKE_TRAIN] = "fake-train", [WIRE_OP_GENERATE] = "generate", [WIRE_OP_SAVE] = "save",
        [WIRE_OP_SAMPLE] = "sample", [WIRE_OP_RESUME] = "resume", [WIRE_OP_GAN_GRAD] = "gan-grad",
    };
    return op > 0 && op < WIRE_OP_COUNT && names[op] ? names[op] : "?";
}

const char *wire_status_name(int32_t status) {
    static const char *names[WIRE_STATUS_COUNT] = {"ok", "bad-message", "bad-version", "unknown-op",
                                                   "bad-request", "busy", "internal"};
    return status >= 0 && status < WIRE_STATUS_COUNT ? names[status] : "?";
}

const char *wire_dtype_name(WireDType d) {
    static const char *names[WIRE_DTYPE_COUNT] = {"f32", "f16", "bf16", "i32", "i64", "u8"};
    return (int)d >= 0 && d < WIRE_DTYPE_COUNT ? names[d] : "?";
}

size_t wire_dtype_size(WireDType d) {
    static const size_t sizes[WIRE_DTYPE_COUNT] = {4, 2, 2, 4, 8, 1};
    return (int)d >= 0 && d < WIRE_DTYPE_COUNT ? sizes[d] : 0;
}

/* numel * dtype size, or -1 when a dim is negative or the size passes WIRE_MAX_TENSOR_BYTES
 * (checked before each multiplication, so nothing overflows). */
static int64_t wire_shape_bytes(WireDType dt, int ndim, const int64_t *shape) {
    int64_t bytes = (int64_t)wire_dtype_size(dt);
    if (bytes == 0) return -1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return -1;
        if (shape[i] == 0) { bytes = 0; continue; }
        if (bytes > WIRE_MAX_TENSOR_BYTES / shape[i]) {
            /* keep scanning: a later zero dim makes the tensor empty, a later negative invalid */
            for (int j = i + 1; j < ndim; j++) if (shape[j] < 0) return -1;
            for (int j = i + 1; j < ndim; j++) if (shape[j] == 0) return 0;
            return -1;
        }
        bytes *= shape[i];
    }
    return bytes;
}

/* ---- building messages ---------------------------------------------------------------- */

void wire_msg_init(WireMsg *m, uint32_t op, uint64_t id) {
    memset(m, 0, sizeof *m);
    m->version = WIRE_VERSION;
    m->op = op;
    m->id = id;
}

void wire_msg_add(WireMsg *m, const char *name, WireDType dtype, int ndim, const int64_t *shape, const void *data) {
    /* every caller builds its message from its own names and shapes: a failure here is a bug */
    MSD_CHECK(m->ntensors < WIRE_MAX_TENSORS);
    MSD_CHECK(name && strlen(name) > 0 && strlen(name) < WIRE_MAX_NAME);
    MSD_CHECK(ndim >= 0 && ndim <= WIRE_MAX_DIMS && wire_dtype_size(dtype) != 0);
    int64_t bytes = wire_shape_bytes(dtype, ndim, shape);
    MSD_CHECK(bytes >= 0 && (bytes == 0 || data));
    WireTensor *t = &m->tensors[m->ntensors++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->data = (void *)data;
    t->nbytes = (size_t)bytes;
}

int wire_check_labels(const WireTensor *t, int nclasses, char *err, size_t errlen) {
    MSD_CHECK(t->dtype == WIRE_I32);
    const int32_t *lb = t->data;
    int64_t n = (int64_t)(t->nbytes / sizeof(int32_t));
    for (int64_t i = 0; i < n; i++)
        if (lb[i] < 0 || lb[i] >= nclasses)
            return msd_errf(err, errlen, "label[%lld] = %d is not a class (0..%d)", (long long)i, lb[i], nclasses - 1);
    return 0;
}

const WireTensor *wire_msg_find(const WireMsg *m, const char *name) {
    for (int i = 0; i < m->ntensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    return NULL;
}

void wire_msg_close(WireMsg *m) {
    for (int i = 0; i < m->nframes_; i++) zmq_msg_close(&m->frames_[i]);
    m->nframes_ = 0;
}

void wire_reply_init(WireMsg *rep, const WireMsg *req, uint32_t op, int32_t status) {
    wire_msg_init(rep, op, req->id);
    rep->status = status;
    rep->nrouting = req->nrouting;
    for (int i = 0; i < req->nrouting && i < WIRE_MAX_ROUTING; i++) {
        rep->routing_len[i] = req->routing_len[i];
        memcpy(rep->routing[i], req->routing[i], req->routing_len[i]);
    }
}

/* ---- header encoding (msgpack-c packer into a bounded buffer) ------------------------- */

typedef struct WireBuf {
    char *buf;
    size_t len, cap;
    int overflow;
} WireBuf;

static int wire_buf_write(void *data, const char *p, size_t n) {
    WireBuf *b = data;
    if (b->overflow || n > b->cap - b->len) { b->overflow = 1; return -1; }
    memcpy(b->buf + b->len, p, n);
    b->len += n;
    return 0;
}

static void wire_pack_cstr(msgpack_packer *pk, const char *s) {
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

int wire_encode_header(const WireMsg *m, void *buf, size_t cap) {
    if (m->ntensors < 0 || m->ntensors > WIRE_MAX_TENSORS) return -1;
    WireBuf b = {buf, 0, cap < WIRE_MAX_HEADER ? cap : WIRE_MAX_HEADER, 0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, wire_buf_write);
    int has_err = m->error[0] != 0;
    msgpack_pack_map(&pk, 5 + (has_err ? 1 : 0));
    wire_pack_cstr(&pk, "v");
    msgpack_pack_uint32(&pk, m->version);
    wire_pack_cstr(&pk, "op");
    msgpack_pack_uint32(&pk, m->op);
    wire_pack_cstr(&pk, "id");
    msgpack_pack_uint64(&pk, m->id);
    wire_pack_cstr(&pk, "st");
    msgpack_pack_int32(&pk, m->status);
    if (has_err) {
        wire_pack_cstr(&pk, "err");
        size_t n = strnlen(m->error, WIRE_MAX_ERROR - 1);
        msgpack_pack_str(&pk, n);
        msgpack_pack_str_body(&pk, m->error, n);
    }
    wire_pack_cstr(&pk, "t");
    msgpack_pack_array(&pk, (size_t)m->ntensors);
    for (int i = 0; i < m->ntensors; i++) {
        const WireTensor *t = &m->tensors[i];
        if (t->ndim < 0 || t->ndim > WIRE_MAX_DIMS) return -1;
        msgpack_pack_map(&pk, 3);
        wire_pack_cstr(&pk, "n");
        size_t n = strnlen(t->name, WIRE_MAX_NAME - 1);
        msgpack_pack_str(&pk, n);
        msgpack_pack_str_body(&pk, t->name, n);
        wire_pack_cstr(&pk, "dt");
        msgpack_pack_int(&pk, (int)t->dtype);
        wire_pack_cstr(&pk, "sh");
        msgpack_pack_array(&pk, (size_t)t->ndim);
        for (int d = 0; d < t->ndim; d++) msgpack_pack_int64(&pk, t->shape[d]);
    }
    return b.overflow ? -1 : (int)b.len;
}

/* ---- header decoding: a bounded msgpack reader ---------------------------------------- */

typedef struct Rd {
    const uint8_t *p, *end;
} Rd;

static size_t rd_left(const Rd *r) { return (size_t)(r->end - r->p); }

static const char *rd_type_name(uint8_t b) {
    if (b <= 0x7f || (b >= 0xcc && b <= 0xd3) || b >= 0xe0) return "int";
    if ((b & 0xf0) == 0x80 || b == 0xde || b == 0xdf) return "map";
    if ((b & 0xf0) == 0x90 || b == 0xdc || b == 0xdd) return "array";
    if ((b & 0xe0) == 0xa0 || (b >= 0xd9 && b <= 0xdb)) return "str";
    if (b == 0xc0) return "nil";
    if (b == 0xc2 || b == 0xc3) return "bool";
    if (b == 0xca || b == 0xcb) return "float";
    if (b >= 0xc4 && b <= 0xc6) return "bin";
    if (b == 0xc1) return "reserved byte 0xc1";
    return "ext";
}

/* Big-endian unsigned of n bytes; 0 when fewer bytes are left. */
static int rd_be(Rd *r, int n, uint64_t *v) {
    if (rd_left(r) < (size_t)n) return -1;
    uint64_t x = 0;
    for (int i = 0; i < n; i++) x = (x << 8) | r->p[i];
    r->p += n;
    *v = x;
    return 0;
}

/* Decode errors: what and where, written into err. */
#define RD_FAIL(...) return msd_errf(err, errlen, __VA_ARGS__)

static int rd_int(Rd *r, int64_t *v, int *is_unsigned_big, const char *what, char *err, size_t errlen) {
    if (rd_left(r) < 1) RD_FAIL("header truncated reading %s", what);
    uint8_t b = *r->p++;
    uint64_t u;
    *is_unsigned_big = 0;
    if (b <= 0x7f) { *v = b; return 0; }
    if (b >= 0xe0) { *v = (int8_t)b; return 0; }
    int n;
    switch (b) {
    case 0xcc: case 0xd0: n = 1; break;
    case 0xcd: case 0xd1: n = 2; break;
    case 0xce: case 0xd2: n = 4; break;
    case 0xcf: case 0xd3: n = 8; break;
    default: r->p--; RD_FAIL("%s: expected an int, got %s", what, rd_type_name(b));
    }
    if (rd_be(r, n, &u) < 0) RD_FAIL("header truncated reading %s", what);
    if (b <= 0xcf) { /* unsigned */
        if (u > (uint64_t)INT64_MAX) { *is_unsigned_big = 1; *v = INT64_MAX; return 0; }
        *v = (int64_t)u;
        return 0;
    }
    int bits = 8 * n; /* sign-extend */
    if (bits < 64 && (u >> (bits - 1)) & 1) u |= ~(uint64_t)0 << bits;
    *v = (int64_t)u;
    return 0;
}

static int rd_uint64(Rd *r, uint64_t *v, const char *what, char *err, size_t errlen) {
    if (rd_left(r) >= 1 && r->p[0] == 0xcf) { /* the full uint64 range, for request ids */
        r->p++;
        if (rd_be(r, 8, v) < 0) RD_FAIL("header truncated reading %s", what);
        return 0;
    }
    int64_t x = 0; int big = 0;
    if (rd_int(r, &x, &big, what, err, errlen) < 0) return -1;
    if (x < 0) RD_FAIL("%s: negative (%lld)", what, (long long)x);
    *v = (uint64_t)x;
    return 0;
}

static int rd_str(Rd *r, const char **s, uint32_t *len, const char *what, char *err, size_t errlen) {
    if (rd_left(r) < 1) RD_FAIL("header truncated reading %s", what);
    uint8_t b = *r->p;
    uint64_t n;
    if ((b & 0xe0) == 0xa0) { r->p++; n = b & 0x1f; }
    else if (b >= 0xd9 && b <= 0xdb) {
        r->p++;
        if (rd_be(r, b == 0xd9 ? 1 : b == 0xda ? 2 : 4, &n) < 0) RD_FAIL("header truncated reading %s", what);
    } else RD_FAIL("%s: expected a str, got %s", what, rd_type_name(b));
    if (n > rd_left(r)) RD_FAIL("%s: str of %llu bytes but only %zu left in the header", what, (unsigned long long)n, rd_left(r));
    *s = (const char *)r->p;
    *len = (uint32_t)n;
    r->p += n;
    return 0;
}

/* Array or map header; the claimed count must fit in the bytes left (each item >= 1 byte). */
static int rd_container(Rd *r, int is_map, uint32_t *count, const char *what, char *err, size_t errlen) {
    if (rd_left(r) < 1) RD_FAIL("header truncated reading %s", what);
    uint8_t b = *r->p;
    uint64_t n;
    uint8_t fix = is_map ? 0x80 : 0x90, b16 = is_map ? 0xde : 0xdc, b32 = is_map ? 0xdf : 0xdd;
    if ((b & 0xf0) == fix) { r->p++; n = b & 0x0f; }
    else if (b == b16 || b == b32) {
        r->p++;
        if (rd_be(r, b == b16 ? 2 : 4, &n) < 0) RD_FAIL("header truncated reading %s", what);
    } else RD_FAIL("%s: expected %s, got %s", what, is_map ? "a map" : "an array", rd_type_name(b));
    if (n * (is_map ? 2 : 1) > rd_left(r))
        RD_FAIL("%s: claims %llu items but only %zu bytes are left", what, (unsigned long long)n, rd_left(r));
    *count = (uint32_t)n;
    return 0;
}

/* Skip one value of any type (unknown map keys' values), nesting bounded. */
static int rd_skip(Rd *r, int depth, char *err, size_t errlen) {
    if (depth > WIRE_SKIP_DEPTH) RD_FAIL("header nests deeper than %d levels", WIRE_SKIP_DEPTH);
    if (rd_left(r) < 1) RD_FAIL("header truncated");
    uint8_t b = *r->p;
    uint64_t n;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) { r->p++; return 0; }
    if ((b & 0xe0) == 0xa0 || (b >= 0xd9 && b <= 0xdb)) { const char *s = NULL; uint32_t l = 0; return rd_str(r, &s, &l, "value", err, errlen); }
    if ((b & 0xf0) == 0x80 || b == 0xde || b == 0xdf || (b & 0xf0) == 0x90 || b == 0xdc || b == 0xdd) {
        int is_map = (b & 0xf0) == 0x80 || b == 0xde || b == 0xdf;
        uint32_t c = 0;
        if (rd_container(r, is_map, &c, "value", err, errlen) < 0) return -1;
        for (uint64_t i = 0; i < (uint64_t)c * (is_map ? 2 : 1); i++)
            if (rd_skip(r, depth + 1, err, errlen) < 0) return -1;
        return 0;
    }
    int fixed = 0, lenbytes = 0;
    switch (b) {
    case 0xcc: case 0xd0: fixed = 1; break;
    case 0xcd: case 0xd1: fixed = 2; break;
    case 0xce: case 0xd2: case 0xca: fixed = 4; break;
    case 0xcf: case 0xd3: case 0xcb: fixed = 8; break;
    case 0xd4: fixed = 2; break;  /* fixext 1: type + 1 */
    case 0xd5: fixed = 3; break;
    case 0xd6: fixed = 5; break;
    case 0xd7: fixed = 9; break;
    case 0xd8: fixed = 17; break;
    case 0xc4: lenbytes = 1; break;
    case 0xc5: lenbytes = 2; break;
    case 0xc6: lenbytes = 4; break;
    case 0xc7: lenbytes = 1; fixed = 1; break; /* ext: len, type, data */
    case 0xc8: lenbytes = 2; fixed = 1; break;
    case 0xc9: lenbytes = 4; fixed = 1; break;
    default: RD_FAIL("header: invalid msgpack byte 0x%02x", b);
    }
    r->p++;
    n = 0;
    if (lenbytes && rd_be(r, lenbytes, &n) < 0) RD_FAIL("header truncated");
    if (n + (uint64_t)fixed > rd_left(r)) RD_FAIL("header truncated inside a value");
    r->p += n + (uint64_t)fixed;
    return 0;
}

static int key_is(const char *k, uint32_t len, const char *want) {
    return strlen(want) == len && memcmp(k, want, len) == 0;
}

static int rd_tensor(Rd *r, WireTensor *t, int idx, char *err, size_t errlen) {
    char what[64];
    snprintf(what, sizeof what, "tensor %d", idx);
    uint32_t nkeys = 0;
    if (rd_container(r, 1, &nkeys, what, err, errlen) < 0) return -1;
    int have_n = 0, have_dt = 0, have_sh = 0;
    for (uint32_t k = 0; k < nkeys; k++) {
        const char *key = NULL; uint32_t klen = 0;
        if (rd_str(r, &key, &klen, "tensor descriptor key", err, errlen) < 0) return -1;
        if (key_is(key, klen, "n")) {
            const char *s = NULL; uint32_t l = 0;
            if (have_n++) RD_FAIL("%s: duplicate key \"n\"", what);
            if (rd_str(r, &s, &l, "tensor name", err, errlen) < 0) return -1;
            if (l == 0) RD_FAIL("%s: empty name", what);
            if (l >= WIRE_MAX_NAME) RD_FAIL("%s: name of %u bytes, longer than %d", what, l, WIRE_MAX_NAME - 1);
            if (memchr(s, 0, l)) RD_FAIL("%s: name contains a NUL byte", what);
            memcpy(t->name, s, l);
            t->name[l] = 0;
        } else if (key_is(key, klen, "dt")) {
            int64_t v = 0; int big = 0;
            if (have_dt++) RD_FAIL("%s: duplicate key \"dt\"", what);
            if (rd_int(r, &v, &big, "tensor dtype", err, errlen) < 0) return -1;
            if (big || v < 0 || v >= WIRE_DTYPE_COUNT) RD_FAIL("%s: unknown dtype %lld", what, (long long)v);
            t->dtype = (WireDType)v;
        } else if (key_is(key, klen, "sh")) {
            uint32_t nd = 0;
            if (have_sh++) RD_FAIL("%s: duplicate key \"sh\"", what);
            if (rd_container(r, 0, &nd, "tensor shape", err, errlen) < 0) return -1;
            if (nd > WIRE_MAX_DIMS) RD_FAIL("%s: %u dims, more than %d", what, nd, WIRE_MAX_DIMS);
            t->ndim = (int)nd;
            for (uint32_t d = 0; d < nd; d++) {
                int64_t v = 0; int big = 0;
                if (rd_int(r, &v, &big, "tensor dim", err, errlen) < 0) return -1;
                if (big || v < 0) RD_FAIL("%s: dim %u is %s", what, d, big ? "absurdly large" : "negative");
                t->shape[d] = v;
            }
        } else {
            if (rd_skip(r, 1, err, errlen) < 0) return -1;
        }
    }
    if (!have_n || !have_dt || !have_sh)
        RD_FAIL("%s: missing key \"%s\"", what, !have_n ? "n" : !have_dt ? "dt" : "sh");
    int64_t bytes = wire_shape_bytes(t->dtype, t->ndim, t->shape);
    if (bytes < 0) RD_FAIL("tensor \"%s\": shape claims more than %lld bytes", t->name, (long long)WIRE_MAX_TENSOR_BYTES);
    t->nbytes = (size_t)bytes;
    return 0;
}

int wire_decode(WireMsg *m, const void *header, size_t header_len, int nframes, void *const *frames,
                const size_t *frame_lens, char *err, size_t errlen) {
    m->version = 0; m->op = 0; m->id = 0; m->status = 0; m->error[0] = 0;
    m->reject_status = WIRE_STATUS_BAD_MESSAGE;
    m->ntensors = 0;
    if (!header || header_len == 0) RD_FAIL("empty header frame");
    if (header_len > WIRE_MAX_HEADER) RD_FAIL("header frame of %zu bytes, more than %d", header_len, WIRE_MAX_HEADER);
    Rd rd = {header, (const uint8_t *)header + header_len}, *r = &rd;
    uint32_t nkeys = 0;
    if (rd_container(r, 1, &nkeys, "header", err, errlen) < 0) return -1;
    int have_v = 0, have_op = 0, have_id = 0, have_st = 0, have_err = 0, have_t = 0;
    for (uint32_t k = 0; k < nkeys; k++) {
        const char *key = NULL; uint32_t klen = 0;
        if (rd_str(r, &key, &klen, "header key", err, errlen) < 0) return -1;
        int64_t v = 0; int big = 0;
        if (key_is(key, klen, "v")) {
            if (have_v++) RD_FAIL("duplicate key \"v\"");
            if (rd_int(r, &v, &big, "version", err, errlen) < 0) return -1;
            if (big || v != WIRE_VERSION) {
                m->reject_status = WIRE_STATUS_BAD_VERSION;
                RD_FAIL("protocol version %lld not supported (this side speaks %d)", (long long)v, WIRE_VERSION);
            }
            m->version = (uint32_t)v;
        } else if (key_is(key, klen, "op")) {
            if (have_op++) RD_FAIL("duplicate key \"op\"");
            if (rd_int(r, &v, &big, "op", err, errlen) < 0) return -1;
            if (big || v <= 0 || v >= WIRE_OP_COUNT) RD_FAIL("unknown op %lld", (long long)v);
            m->op = (uint32_t)v;
        } else if (key_is(key, klen, "id")) {
            if (have_id++) RD_FAIL("duplicate key \"id\"");
            if (rd_uint64(r, &m->id, "request id", err, errlen) < 0) return -1;
        } else if (key_is(key, klen, "st")) {
            if (have_st++) RD_FAIL("duplicate key \"st\"");
            if (rd_int(r, &v, &big, "status", err, errlen) < 0) return -1;
            if (big || v < 0 || v >= WIRE_STATUS_COUNT) RD_FAIL("unknown status %lld", (long long)v);
            m->status = (int32_t)v;
        } else if (key_is(key, klen, "err")) {
            const char *s = NULL; uint32_t l = 0;
            if (have_err++) RD_FAIL("duplicate key \"err\"");
            if (rd_str(r, &s, &l, "error text", err, errlen) < 0) return -1;
            if (l >= WIRE_MAX_ERROR) RD_FAIL("error text of %u bytes, longer than %d", l, WIRE_MAX_ERROR - 1);
            if (memchr(s, 0, l)) RD_FAIL("error text contains a NUL byte");
            memcpy(m->error, s, l);
            m->error[l] = 0;
        } else if (key_is(key, klen, "t")) {
            uint32_t nt = 0;
            if (have_t++) RD_FAIL("duplicate key \"t\"");
            if (rd_container(r, 0, &nt, "tensor list", err, errlen) < 0) return -1;
            if (nt > WIRE_MAX_TENSORS) RD_FAIL("%u tensors, more than %d", nt, WIRE_MAX_TENSORS);
            for (uint32_t i = 0; i < nt; i++) {
                WireTensor *t = &m->tensors[i];
                memset(t, 0, sizeof *t);
                if (rd_tensor(r, t, (int)i, err, errlen) < 0) return -1;
                for (uint32_t j = 0; j < i; j++)
                    if (strcmp(m->tensors[j].name, t->name) == 0) RD_FAIL("duplicate tensor name \"%s\"", t->name);
                m->ntensors = (int)i + 1;
            }
        } else {
            if (rd_skip(r, 1, err, errlen) < 0) return -1; /* unknown keys: reserved for additions */
        }
    }
    if (rd_left(r) != 0) RD_FAIL("%zu trailing bytes after the header map", rd_left(r));
    if (!have_v || !have_op || !have_id || !have_st || !have_t)
        RD_FAIL("header misses key \"%s\"", !have_v ? "v" : !have_op ? "op" : !have_id ? "id" : !have_st ? "st" : "t");
    if (nframes != m->ntensors)
        RD_FAIL("header describes %d tensors but %d tensor frames arrived", m->ntensors, nframes);
    for (int i = 0; i < m->ntensors; i++) {
        WireTensor *t = &m->tensors[i];
        if (frame_lens[i] != t->nbytes)
            RD_FAIL("tensor \"%s\" (%s, %d dims): shape says %zu bytes, its frame has %zu", t->name,
                    wire_dtype_name(t->dtype), t->ndim, t->nbytes, frame_lens[i]);
        t->data = t->nbytes ? frames[i] : NULL;
    }
    return WIRE_OK;
}

/* ---- sending -------------------------------------------------------------------------- */

static int wire_ms_left(double deadline) {
    if (deadline < 0) return -1;
    double left = deadline - msd_now();
    return left <= 0 ? 0 : (int)(left * 1000.0) + 1;
}

/* Send the first frame of a message within the deadline; EAGAIN -> wait for POLLOUT. A ROUTER
 * reports POLLOUT even when one peer's queue is full, hence the short pause in that case. */
static int wire_send_first(void *sock, zmq_msg_t *msg, int more, double deadline, char *err, size_t errlen) {
    for (;;) {
        if (zmq_msg_send(msg, sock, ZMQ_DONTWAIT | (more ? ZMQ_SNDMORE : 0)) >= 0) return WIRE_OK;
        int e = zmq_errno();
        if (e == EINTR) continue;
        if (e != EAGAIN) {
            msd_errf(err, errlen, "zmq_msg_send: %s%s", zmq_strerror(e),
                     e == EHOSTUNREACH ? " (the peer is gone or its routing id is unknown)" : "");
            return WIRE_ESOCKET;
        }
        int left = wire_ms_left(deadline);
        if (left == 0) {
            msd_errf(err, errlen, "send timed out (peer queue full or no peer connected)");
            return WIRE_EAGAIN;
        }
        zmq_pollitem_t it = {sock, 0, ZMQ_POLLOUT, 0};
        int rc = zmq_poll(&it, 1, left < 0 ? 100 : (left < 100 ? left : 100));
        if (rc < 0 && zmq_errno() != EINTR) {
            msd_errf(err, errlen, "zmq_poll: %s", zmq_strerror(zmq_errno()));
            return WIRE_ESOCKET;
        }
        if (rc > 0) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
}

/* Later frames of a message that has started never hit the HWM (ZeroMQ counts whole messages). */
static int wire_send_more(void *sock, zmq_msg_t *msg, int more, char *err, size_t errlen) {
    for (;;) {
        if (zmq_msg_send(msg, sock, more ? ZMQ_SNDMORE : 0) >= 0) return WIRE_OK;
        if (zmq_errno() == EINTR) continue;
        msd_errf(err, errlen, "zmq_msg_send: %s", zmq_strerror(zmq_errno()));
        return WIRE_ESOCKET;
    }
}

static int wire_send_frame(void *sock, zmq_msg_t *msg, int first, int more, double deadline, char *err, size_t errlen) {
    int rc = first ? wire_send_first(sock, msg, more, deadline, err, errlen) : wire_send_more(sock, msg, more, err, errlen);
    if (rc != WIRE_OK) zmq_msg_close(msg);
    return rc;
}

static int wire_msg_copy_in(zmq_msg_t *msg, const void *data, size_t n) {
    if (zmq_msg_init_size(msg, n) != 0) return -1;
    if (n) memcpy(zmq_msg_data(msg), data, n);
    return 0;
}

int wire_send(void *sock, const WireMsg *m, int flags, int timeout_ms, char *err, size_t errlen) {
    MSD_CHECK(m->ntensors >= 0 && m->ntensors <= WIRE_MAX_TENSORS);
    MSD_CHECK(m->nrouting >= 0 && m->nrouting <= WIRE_MAX_ROUTING);
    for (int i = 0; i < m->ntensors; i++) {
        const WireTensor *t = &m->tensors[i];
        int64_t bytes = wire_shape_bytes(t->dtype, t->ndim, t->shape);
        MSD_CHECK(t->ndim >= 0 && t->ndim <= WIRE_MAX_DIMS && bytes >= 0 && (size_t)bytes == t->nbytes);
        MSD_CHECK(t->nbytes == 0 || t->data);
    }
    char hdr[WIRE_MAX_HEADER];
    int hlen = wire_encode_header(m, hdr, sizeof hdr);
    MSD_CHECK(hlen > 0);
    int64_t limit = wire_max_frame();
    for (int i = 0; i < m->ntensors; i++)
        if ((int64_t)m->tensors[i].nbytes > limit) {
            msd_errf(err, errlen, "tensor \"%s\" is %zu bytes, more than the frame limit of %lld bytes (set %s to raise it)",
                     m->tensors[i].name, m->tensors[i].nbytes, (long long)limit, WIRE_MAX_FRAME_ENV);
            return WIRE_ETOOBIG;
        }
    double deadline = timeout_ms < 0 ? -1.0 : msd_now() + timeout_ms / 1000.0;
    int first = 1, rc;
    zmq_msg_t msg;
    for (int i = 0; i < m->nrouting; i++) {
        if (wire_msg_copy_in(&msg, m->routing[i], m->routing_len[i]) < 0) msd_die("zmq_msg_init_size: out of memory");
        if ((rc = wire_send_frame(sock, &msg, first, 1, deadline, err, errlen)) != WIRE_OK) return rc;
        first = 0;
    }
    if (wire_msg_copy_in(&msg, hdr, (size_t)hlen) < 0) msd_die("zmq_msg_init_size: out of memory");
    if ((rc = wire_send_frame(sock, &msg, first, m->ntensors > 0, deadline, err, errlen)) != WIRE_OK) return rc;
    for (int i = 0; i < m->ntensors; i++) {
        const WireTensor *t = &m->tensors[i];
        if ((flags & WIRE_SEND_ZEROCOPY) && t->nbytes >= WIRE_ZEROCOPY_MIN) {
            if (zmq_msg_init_data(&msg, t->data, t->nbytes, NULL, NULL) != 0) msd_die("zmq_msg_init_data failed");
        } else if (wire_msg_copy_in(&msg, t->data, t->nbytes) < 0) {
            msd_die("out of memory copying a %zu-byte tensor for sending", t->nbytes);
        }
        if ((rc = wire_send_frame(sock, &msg, 0, i + 1 < m->ntensors, deadline, err, errlen)) != WIRE_OK) return rc;
    }
    return WIRE_OK;
}

int wire_send_error(void *sock, const WireMsg *req, int32_t status, const char *text) {
    WireMsg rep;
    wire_reply_init(&rep, req, WIRE_OP_ERROR, status);
    snprintf(rep.error, sizeof rep.error, "%s", text ? text : "");
    if (rep.nrouting > 0) return wire_send_reply(sock, &rep);
    char err[256];
    int rc = wire_send(sock, &rep, 0, 1000, err, sizeof err);
    if (rc != WIRE_OK) log_warn("could not send an error reply to request %llu: %s", (unsigned long long)req->id, err);
    return rc;
}

static long g_replies_dropped;

long wire_replies_dropped(void) { return __atomic_load_n(&g_replies_dropped, __ATOMIC_RELAXED); }

int wire_send_reply(void *sock, const WireMsg *rep) {
    char err[512], peer[80];
    int rc = wire_send(sock, rep, 0, 0, err, sizeof err); /* 0 ms: never wait for one peer */
    if (rc == WIRE_ETOOBIG && rep->op != WIRE_OP_ERROR) {
        wire_log_limited(WIRE_LOG_DROPPED, wire_peer_name(rep, peer, sizeof peer), "%s reply to request %llu: %s",
                         wire_op_name(rep->op), (unsigned long long)rep->id, err);
        WireMsg e;
        wire_reply_init(&e, rep, WIRE_OP_ERROR, WIRE_STATUS_INTERNAL);
        snprintf(e.error, sizeof e.error, "the reply could not be sent: %.200s", err);
        rc = wire_send(sock, &e, 0, 0, err, sizeof err);
    }
    if (rc != WIRE_OK) {
        __atomic_add_fetch(&g_replies_dropped, 1, __ATOMIC_RELAXED);
        wire_log_limited(WIRE_LOG_DROPPED, wire_peer_name(rep, peer, sizeof peer), "%s reply to request %llu dropped: %s",
                         wire_op_name(rep->op), (unsigned long long)rep->id,
                         rc == WIRE_EAGAIN ? "the peer is not reading (its queue is full) or is gone" : err);
    }
    return rc;
}

/* ---- frame limit ---------------------------------------------------------------------- */

int wire_parse_frame_limit(const char *s, int64_t *out) {
    if (!s || *s < '0' || *s > '9') return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    int shift = 0;
    if (*end == 'K' || *end == 'k') shift = 10;
    else if (*end == 'M' || *end == 'm') shift = 20;
    else if (*end == 'G' || *end == 'g') shift = 30;
    if (shift) end++;
    if (errno || *end || v > ((unsigned long long)WIRE_MAX_TENSOR_BYTES >> shift)) return -1;
    int64_t b = (int64_t)(v << shift);
    if (b < 1024 || b > WIRE_MAX_TENSOR_BYTES) return -1;
    *out = b;
    return 0;
}

int64_t wire_max_frame(void) {
    int64_t v;
    if (wire_parse_frame_limit(getenv(WIRE_MAX_FRAME_ENV), &v) == 0) return v;
    return WIRE_MAX_FRAME_DEFAULT;
}

/* ---- rate-limited logging ------------------------------------------------------------- */

static struct {
    const char *what;
    double window;         /* msd_now() when the current window began; 0: none yet */
    int logged;            /* lines logged in full in this window */
    long suppressed;       /* events counted, not logged, in this window */
    char last[320];        /* the latest suppressed event: "from PEER: text" */
} g_limit[WIRE_LOG_KINDS] = {
    [WIRE_LOG_MALFORMED] = {"malformed messages", 0, 0, 0, ""},
    [WIRE_LOG_REFUSED] = {"refused requests", 0, 0, 0, ""},
    [WIRE_LOG_DROPPED] = {"dropped replies", 0, 0, 0, ""},
    [WIRE_LOG_STRAY] = {"stray replies", 0, 0, 0, ""},
};
static pthread_mutex_t g_limit_lock = PTHREAD_MUTEX_INITIALIZER;

/* The summary of kind's window, then a fresh window at now. Called with the lock held. */
static void wire_log_close_window(int k, double now) {
    if (g_limit[k].suppressed > 0)
        log_warn("%ld more %s suppressed in the last %.0f s; the latest %s", g_limit[k].suppressed, g_limit[k].what,
                 now - g_limit[k].window, g_limit[k].last);
    g_limit[k].window = now;
    g_limit[k].logged = 0;
    g_limit[k].suppressed = 0;
}

void wire_log_limited(WireLogKind kind, const char *peer, const char *fmt, ...) {
    MSD_CHECK((int)kind >= 0 && kind < WIRE_LOG_KINDS);
    char text[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&g_limit_lock);
    double now = msd_now();
    if (g_limit[kind].window == 0 || now - g_limit[kind].window >= WIRE_LOG_INTERVAL) wire_log_close_window(kind, now);
    if (g_limit[kind].logged < WIRE_LOG_BURST) {
        g_limit[kind].logged++;
        log_warn("%s%s%s%s", peer ? "from " : "", peer ? peer : "", peer ? ": " : "", text);
        if (g_limit[kind].logged == WIRE_LOG_BURST)
            log_warn("(more %s in the next %.0f s are counted, and summed up in one line)", g_limit[kind].what,
                     WIRE_LOG_INTERVAL - (now - g_limit[kind].window));
    } else {
        g_limit[kind].suppressed++;
        snprintf(g_limit[kind].last, sizeof g_limit[kind].last, "%s%s%s%s", peer ? "from " : "", peer ? peer : "",
                 peer ? ": " : "", text);
    }
    pthread_mutex_unlock(&g_limit_lock);
}

void wire_log_flush(void) {
    pthread_mutex_lock(&g_limit_lock);
    for (int k = 0; k < WIRE_LOG_KINDS; k++)
        if (g_limit[k].suppressed > 0) wire_log_close_window(k, msd_now());
    pthread_mutex_unlock(&g_limit_lock);
}

const char *wire_peer_name(const WireMsg *m, char *buf, size_t len) {
    if (len == 0) return "";
    if (m->nrouting < 1 || m->routing_len[0] == 0) { snprintf(buf, len, "?"); return buf; }
    const unsigned char *id = m->routing[0];
    size_t n = m->routing_len[0], printable = 1;
    for (size_t i = 0; i < n; i++) printable &= id[i] >= 0x21 && id[i] < 0x7f;
    size_t k = 0;
    buf[0] = 0;
    for (size_t i = 0; i < n && k + 3 < len; i++)
        k += (size_t)snprintf(buf + k, len - k, printable ? "%c" : "%02x", id[i]);
    return buf;
}

/* ---- receiving ------------------------------------------------------------------------ */

static int wire_recv_part(void *sock, zmq_msg_t *msg, int flags) {
    for (;;) {
        if (zmq_msg_recv(msg, sock, flags) >= 0) return 0;
        if (zmq_errno() != EINTR) return -1;
    }
}

int wire_recv(void *sock, WireMsg *m, int timeout_ms, char *err, size_t errlen) {
    memset(m, 0, offsetof(WireMsg, frames_));
    m->nframes_ = 0;
    int type = 0;
    size_t tl = sizeof type;
    if (zmq_getsockopt(sock, ZMQ_TYPE, &type, &tl) != 0) {
        msd_errf(err, errlen, "zmq_getsockopt: %s", zmq_strerror(zmq_errno()));
        return WIRE_ESOCKET;
    }
    double deadline = timeout_ms < 0 ? -1.0 : msd_now() + timeout_ms / 1000.0;
    zmq_msg_t part;
    zmq_msg_init(&part);
    /* first frame: wait within the deadline */
    for (;;) {
        if (zmq_msg_recv(&part, sock, ZMQ_DONTWAIT) >= 0) break;
        int e = zmq_errno();
        if (e != EAGAIN && e != EINTR) {
            zmq_msg_close(&part);
            msd_errf(err, errlen, "zmq_msg_recv: %s", zmq_strerror(e));
            return WIRE_ESOCKET;
        }
        int left = wire_ms_left(deadline);
        if (left == 0) { zmq_msg_close(&part); msd_errf(err, errlen, "nothing arrived"); return WIRE_EAGAIN; }
        zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, left) < 0 && zmq_errno() != EINTR) {
            zmq_msg_close(&part);
            msd_errf(err, errlen, "zmq_poll: %s", zmq_strerror(zmq_errno()));
            return WIRE_ESOCKET;
        }
    }
    /* the rest of the message is already here (ZeroMQ delivers multipart messages whole) */
    zmq_msg_t hdr;
    zmq_msg_init(&hdr);
    int have_hdr = 0, extra = 0, more, idx = 0;
    do {
        if (idx > 0 && wire_recv_part(sock, &part, 0) < 0) {
            msd_errf(err, errlen, "zmq_msg_recv: %s", zmq_strerror(zmq_errno()));
            zmq_msg_close(&part); zmq_msg_close(&hdr); wire_msg_close(m);
            return WIRE_ESOCKET;
        }
        more = zmq_msg_more(&part);
        size_t len = zmq_msg_size(&part);
        if (type == ZMQ_ROUTER && idx == 0) {
            m->nrouting = 1;
            m->routing_len[0] = len < sizeof m->routing[0] ? len : sizeof m->routing[0];
            memcpy(m->routing[0], zmq_msg_data(&part), m->routing_len[0]);
        } else if (!have_hdr) {
            zmq_msg_move(&hdr, &part);
            have_hdr = 1;
        } else if (m->nframes_ < WIRE_MAX_TENSORS) {
            zmq_msg_t *f = &m->frames_[m->nframes_++];
            zmq_msg_init(f);
            zmq_msg_move(f, &part);
        } else {
            extra++;
        }
        idx++;
    } while (more);
    zmq_msg_close(&part);
    int rc;
    if (!have_hdr) {
        m->reject_status = WIRE_STATUS_BAD_MESSAGE;
        rc = msd_errf(err, errlen, "message without a header frame");
    } else if (extra) {
        m->reject_status = WIRE_STATUS_BAD_MESSAGE;
        rc = msd_errf(err, errlen, "%d tensor frames, more than %d", m->nframes_ + extra, WIRE_MAX_TENSORS);
    } else {
        void *ptrs[WIRE_MAX_TENSORS];
        size_t lens[WIRE_MAX_TENSORS];
        for (int i = 0; i < m->nframes_; i++) {
            lens[i] = zmq_msg_size(&m->frames_[i]);
            ptrs[i] = zmq_msg_data(&m->frames_[i]);
            if (((uintptr_t)ptrs[i] & 7) != 0) { /* frames received in place can be misaligned */
                zmq_msg_t copy;
                if (wire_msg_copy_in(&copy, ptrs[i], lens[i]) < 0) msd_die("out of memory realigning a frame");
                zmq_msg_close(&m->frames_[i]);
                zmq_msg_init(&m->frames_[i]);
                zmq_msg_move(&m->frames_[i], &copy);
                ptrs[i] = zmq_msg_data(&m->frames_[i]);
            }
        }
        rc = wire_decode(m, zmq_msg_data(&hdr), zmq_msg_size(&hdr), m->nframes_, ptrs, lens, err, errlen);
    }
    zmq_msg_close(&hdr);
    if (rc != WIRE_OK) {
        wire_msg_close(m);
        m->ntensors = 0;
        return WIRE_EMALFORMED;
    }
    return WIRE_OK;
}
