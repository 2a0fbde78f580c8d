/* test_wire.c: the wire protocol (wire.c) and the process skeleton's control protocol and
 * CurveZMQ (proc.c), in-process on ipc:// endpoints in a fresh temporary folder and on
 * tcp://127.0.0.1 with an ephemeral port. Every wait is bounded.
 *
 * Not here: the processes themselves (tests/test_procs.sh). */
#include <msgpack.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "log.h"
#include "proc.h"
#include "wire.h"

static char g_dir[256];

static void *sock_new(void *ctx, int type, const char *id) {
    void *s = zmq_socket(ctx, type);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    if (id) zmq_setsockopt(s, ZMQ_ROUTING_ID, id, strlen(id));
    return s;
}

/* ---- round trips ---------------------------------------------------------------------- */

static void test_roundtrip_every_op(void) {
    void *ctx = zmq_ctx_new();
    void *srv = sock_new(ctx, ZMQ_ROUTER, NULL), *cli = sock_new(ctx, ZMQ_DEALER, "c1");
    REQUIRE(zmq_bind(srv, "inproc://rt") == 0);
    REQUIRE(zmq_connect(cli, "inproc://rt") == 0);
    char err[256];
    float a[6] = {1, 2, 3, 4, 5, 6};
    int32_t b[2] = {-7, 9};
    for (uint32_t op = 1; op < WIRE_OP_COUNT; op++) {
        WireMsg m, r;
        wire_msg_init(&m, op, 1000 + op);
        m.status = (int32_t)(op % WIRE_STATUS_COUNT);
        if (op == WIRE_OP_ERROR) snprintf(m.error, sizeof m.error, "something went wrong");
        int64_t sa[2] = {2, 3}, sb[1] = {2};
        if (op % 2) {
            wire_msg_add(&m, "a", WIRE_F32, 2, sa, a);
            wire_msg_add(&m, "b", WIRE_I32, 1, sb, b);
        }
        CHECK(wire_send(cli, &m, 0, 1000, err, sizeof err) == WIRE_OK, "%s", err);
        REQUIRE(wire_recv(srv, &r, 1000, err, sizeof err) == WIRE_OK, "op %u: %s", op, err);
        CHECK(r.op == op && r.id == 1000 + op && r.status == m.status && r.version == WIRE_VERSION, "op %u", op);
        CHECK(strcmp(r.error, m.error) == 0, "op %u: error text '%s'", op, r.error);
        CHECK(r.nrouting == 1 && r.routing_len[0] == 2 && memcmp(r.routing[0], "c1", 2) == 0);
        CHECK(r.ntensors == m.ntensors, "op %u: %d tensors", op, r.ntensors);
        if (op % 2 && r.ntensors == 2) {
            const WireTensor *ta = wire_msg_find(&r, "a"), *tb = wire_msg_find(&r, "b");
            REQUIRE(ta && tb);
            CHECK(ta->dtype == WIRE_F32 && ta->ndim == 2 && ta->shape[0] == 2 && ta->shape[1] == 3 && ta->nbytes == 24);
            CHECK(memcmp(ta->data, a, 24) == 0 && memcmp(tb->data, b, 8) == 0);
            CHECK(((uintptr_t)ta->data & 7) == 0, "tensor data aligned");
        }
        /* reply through the ROUTER's envelope */
        WireMsg rep, back;
        wire_reply_init(&rep, &r, op, WIRE_STATUS_OK);
        CHECK(wire_send(srv, &rep, 0, 1000, err, sizeof err) == WIRE_OK, "%s", err);
        CHECK(wire_recv(cli, &back, 1000, err, sizeof err) == WIRE_OK, "%s", err);
        CHECK(back.id == 1000 + op && back.op == op && back.nrouting == 0);
        wire_msg_close(&back);
        wire_msg_close(&r);
        wire_msg_close(&r); /* idempotent */
    }
    zmq_close(srv); zmq_close(cli); zmq_ctx_term(ctx);
}

static void test_every_dtype_and_empty(void) {
    void *ctx = zmq_ctx_new();
    void *a = sock_new(ctx, ZMQ_PAIR, NULL), *b = sock_new(ctx, ZMQ_PAIR, NULL);
    REQUIRE(zmq_bind(a, "inproc://dt") == 0 && zmq_connect(b, "inproc://dt") == 0);
    unsigned char buf[WIRE_DTYPE_COUNT][48];
    WireMsg m, r;
    wire_msg_init(&m, WIRE_OP_ECHO, UINT64_MAX); /* the full id range */
    for (int d = 0; d < WIRE_DTYPE_COUNT; d++) {
        for (int i = 0; i < 48; i++) buf[d][i] = (unsigned char)(d * 31 + i);
        char name[16];
        snprintf(name, sizeof name, "t_%s", wire_dtype_name((WireDType)d));
        int64_t sh[2] = {2, (int64_t)(24 / wire_dtype_size((WireDType)d))};
        wire_msg_add(&m, name, (WireDType)d, 2, sh, buf[d]);
    }
    int64_t zero[2] = {0, 5};
    wire_msg_add(&m, "empty", WIRE_F32, 2, zero, NULL);
    float scalar = 3.5f;
    wire_msg_add(&m, "scalar", WIRE_F32, 0, NULL, &scalar);
    char err[256];
    CHECK(wire_send(a, &m, 0, 1000, err, sizeof err) == WIRE_OK, "%s", err);
    REQUIRE(wire_recv(b, &r, 1000, err, sizeof err) == WIRE_OK, "%s", err);
    CHECK(r.id == UINT64_MAX && r.ntensors == WIRE_DTYPE_COUNT + 2 && r.nrouting == 0);
    for (int d = 0; d < WIRE_DTYPE_COUNT && d < r.ntensors; d++) {
        const WireTensor *t = &r.tensors[d];
        CHECK(t->dtype == (WireDType)d && t->nbytes == 48 && memcmp(t->data, buf[d], 48) == 0, "dtype %s", wire_dtype_name((WireDType)d));
    }
    const WireTensor *e = wire_msg_find(&r, "empty"), *s = wire_msg_find(&r, "scalar");
    CHECK(e && e->nbytes == 0 && e->ndim == 2 && e->shape[0] == 0 && e->shape[1] == 5);
    CHECK(s && s->ndim == 0 && s->nbytes == 4 && *(const float *)s->data == 3.5f);
    wire_msg_close(&r);
    /* zero-copy of a large tensor (buffer outlives the send) */
    size_t n = 1 << 18;
    float *big = malloc(n * sizeof *big);
    for (size_t i = 0; i < n; i++) big[i] = (float)i;
    int64_t sh = (int64_t)n;
    wire_msg_init(&m, WIRE_OP_ECHO, 5);
    wire_msg_add(&m, "big", WIRE_F32, 1, &sh, big);
    CHECK(wire_send(a, &m, WIRE_SEND_ZEROCOPY, 1000, err, sizeof err) == WIRE_OK, "%s", err);
    REQUIRE(wire_recv(b, &r, 1000, err, sizeof err) == WIRE_OK, "%s", err);
    CHECK(r.tensors[0].nbytes == n * 4 && memcmp(r.tensors[0].data, big, n * 4) == 0);
    wire_msg_close(&r);
    zmq_close(a); zmq_close(b); zmq_ctx_term(ctx);
    free(big);
    /* the header is plain msgpack: msgpack-c's own unpacker reads what we encode */
    char hdr[WIRE_MAX_HEADER];
    int len = wire_encode_header(&m, hdr, sizeof hdr);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    CHECK(len > 0 && msgpack_unpack_next(&u, hdr, (size_t)len, &off) == MSGPACK_UNPACK_SUCCESS && off == (size_t)len);
    CHECK(u.data.type == MSGPACK_OBJECT_MAP && u.data.via.map.size == 5);
    msgpack_unpacked_destroy(&u);
    CHECK(wire_encode_header(&m, hdr, 8) == -1, "a too small buffer is refused");
}

static void test_router_dealer_many(void) {
    void *ctx = zmq_ctx_new();
    void *srv = sock_new(ctx, ZMQ_ROUTER, NULL);
    int one = 1;
    zmq_setsockopt(srv, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    char ep[512];
    snprintf(ep, sizeof ep, "ipc://%s/rd", g_dir);
    REQUIRE(zmq_bind(srv, ep) == 0, "%s", zmq_strerror(zmq_errno()));
    void *c[3];
    const char *ids[3] = {"student.0", "student.1", "student.2"};
    char err[256];
    for (int i = 0; i < 3; i++) { c[i] = sock_new(ctx, ZMQ_DEALER, ids[i]); REQUIRE(zmq_connect(c[i], ep) == 0); }
    /* every client sends two requests at once (no lockstep) */
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++) {
            WireMsg m;
            wire_msg_init(&m, WIRE_OP_ECHO, (uint64_t)(10 * i + j));
            CHECK(wire_send(c[i], &m, 0, 1000, err, sizeof err) == WIRE_OK, "%s", err);
        }
    for (int k = 0; k < 6; k++) {
        WireMsg r, rep;
        REQUIRE(wire_recv(srv, &r, 2000, err, sizeof err) == WIRE_OK, "%s", err);
        wire_reply_init(&rep, &r, WIRE_OP_ECHO, WIRE_STATUS_OK);
        rep.id = r.id + 100;
        CHECK(wire_send(srv, &rep, 0, 1000, err, sizeof err) == WIRE_OK, "%s", err);
        wire_msg_close(&r);
    }
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++) {
            WireMsg r;
            REQUIRE(wire_recv(c[i], &r, 2000, err, sizeof err) == WIRE_OK, "%s", err);
            CHECK(r.id == (uint64_t)(10 * i + j + 100), "client %d got id %llu", i, (unsigned long long)r.id);
            wire_msg_close(&r);
        }
    /* an unknown peer is reported, not silently dropped */
    WireMsg m;
    wire_msg_init(&m, WIRE_OP_ECHO, 1);
    m.nrouting = 1; m.routing_len[0] = 5; memcpy(m.routing[0], "ghost", 5);
    CHECK(wire_send(srv, &m, 0, 100, err, sizeof err) == WIRE_ESOCKET, "unroutable peer");
    /* nothing arrives: WIRE_EAGAIN within the timeout */
    WireMsg r;
    double t0 = msd_now();
    CHECK(wire_recv(srv, &r, 50, err, sizeof err) == WIRE_EAGAIN);
    CHECK(msd_now() - t0 < 1.0);
    for (int i = 0; i < 3; i++) zmq_close(c[i]);
    zmq_close(srv); zmq_ctx_term(ctx);
}

/* ---- malformed messages --------------------------------------------------------------- */

/* A header description from which each malformed case changes one thing. */
typedef struct Spec {
    int64_t v, op, st;
    int64_t id;
    int omit;             /* bit 0..4: leave out v, op, id, st, t */
    int dup_op;           /* "op" twice */
    int op_as_str;
    int nt;               /* tensors, all f32 unless dt set */
    int64_t dt;
    int ndim;
    int64_t dims[12];
    const char *name;     /* of tensor 0 */
    const char *err;
    int extra_key;        /* an unknown key (skipped) */
    int trailing;         /* a byte after the map */
    int dup_name;
} Spec;

static void spec_default(Spec *s) {
    memset(s, 0, sizeof *s);
    s->v = WIRE_VERSION; s->op = WIRE_OP_ECHO; s->id = 42; s->st = 0;
    s->nt = 1; s->dt = WIRE_F32; s->ndim = 2; s->dims[0] = 2; s->dims[1] = 3; s->name = "x";
}

static void pk_str(msgpack_packer *pk, const char *s) { msgpack_pack_str(pk, strlen(s)); msgpack_pack_str_body(pk, s, strlen(s)); }

static void spec_build(const Spec *s, msgpack_sbuffer *sb) {
    msgpack_sbuffer_init(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    int n = 0;
    for (int i = 0; i < 5; i++) n += !(s->omit & (1 << i));
    n += (s->err != NULL) + s->extra_key + s->dup_op;
    msgpack_pack_map(&pk, (size_t)n);
    if (s->extra_key) { pk_str(&pk, "future"); msgpack_pack_array(&pk, 2); msgpack_pack_double(&pk, 1.5); msgpack_pack_nil(&pk); }
    if (!(s->omit & 1)) { pk_str(&pk, "v"); msgpack_pack_int64(&pk, s->v); }
    if (!(s->omit & 2)) { pk_str(&pk, "op"); if (s->op_as_str) pk_str(&pk, "echo"); else msgpack_pack_int64(&pk, s->op); }
    if (s->dup_op) { pk_str(&pk, "op"); msgpack_pack_int64(&pk, s->op); }
    if (!(s->omit & 4)) { pk_str(&pk, "id"); msgpack_pack_int64(&pk, s->id); }
    if (!(s->omit & 8)) { pk_str(&pk, "st"); msgpack_pack_int64(&pk, s->st); }
    if (s->err) { pk_str(&pk, "err"); pk_str(&pk, s->err); }
    if (!(s->omit & 16)) {
        pk_str(&pk, "t");
        msgpack_pack_array(&pk, (size_t)s->nt);
        for (int i = 0; i < s->nt; i++) {
            msgpack_pack_map(&pk, 3);
            char nm[32];
            snprintf(nm, sizeof nm, "t%d", i);
            pk_str(&pk, "n"); pk_str(&pk, i == 0 ? s->name : (s->dup_name ? s->name : nm));
            pk_str(&pk, "dt"); msgpack_pack_int64(&pk, s->dt);
            pk_str(&pk, "sh"); msgpack_pack_array(&pk, (size_t)s->ndim);
            for (int d = 0; d < s->ndim; d++) msgpack_pack_int64(&pk, s->dims[d]);
        }
    }
    if (s->trailing) msgpack_pack_nil(&pk);
}

/* Decode the spec's header with nframes frames of frame_len bytes each. */
static int spec_decode(const Spec *s, int nframes, size_t frame_len, WireMsg *m, char *err, size_t errlen) {
    msgpack_sbuffer sb;
    spec_build(s, &sb);
    static unsigned char frame[256];
    void *frames[32];
    size_t lens[32];
    for (int i = 0; i < nframes && i < 32; i++) { frames[i] = frame; lens[i] = frame_len; }
    int rc = wire_decode(m, sb.data, sb.size, nframes, frames, lens, err, errlen);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

static void test_malformed_table(void) {
    static WireMsg m;
    char err[256];
    Spec s;
    spec_default(&s);
    CHECK(spec_decode(&s, 1, 24, &m, err, sizeof err) == WIRE_OK, "the base case is valid: %s", err);
    s.extra_key = 1; s.err = "fine";
    CHECK(spec_decode(&s, 1, 24, &m, err, sizeof err) == WIRE_OK, "unknown keys are skipped: %s", err);
    CHECK(strcmp(m.error, "fine") == 0);
    struct { const char *what; void (*edit)(Spec *); int nframes; size_t flen; const char *want; int32_t status; } cases[] = {
        {"wrong version", NULL, 1, 24, "version", WIRE_STATUS_BAD_VERSION},
        {"unknown op", NULL, 1, 24, "unknown op", WIRE_STATUS_BAD_MESSAGE},
        {"op zero", NULL, 1, 24, "unknown op", WIRE_STATUS_BAD_MESSAGE},
        {"op as str", NULL, 1, 24, "expected an int", WIRE_STATUS_BAD_MESSAGE},
        {"duplicate op", NULL, 1, 24, "duplicate key", WIRE_STATUS_BAD_MESSAGE},
        {"missing id", NULL, 1, 24, "misses key \"id\"", WIRE_STATUS_BAD_MESSAGE},
        {"missing t", NULL, 0, 24, "misses key \"t\"", WIRE_STATUS_BAD_MESSAGE},
        {"negative id", NULL, 1, 24, "negative", WIRE_STATUS_BAD_MESSAGE},
        {"unknown status", NULL, 1, 24, "unknown status", WIRE_STATUS_BAD_MESSAGE},
        {"unknown dtype", NULL, 1, 24, "unknown dtype", WIRE_STATUS_BAD_MESSAGE},
        {"negative dim", NULL, 1, 24, "negative", WIRE_STATUS_BAD_MESSAGE},
        {"numel overflow", NULL, 1, 24, "more than", WIRE_STATUS_BAD_MESSAGE},
        {"tensor > max bytes", NULL, 1, 24, "more than", WIRE_STATUS_BAD_MESSAGE},
        {"too many dims", NULL, 1, 24, "dims, more than", WIRE_STATUS_BAD_MESSAGE},
        {"frame too short", NULL, 1, 20, "its frame has 20", WIRE_STATUS_BAD_MESSAGE},
        {"frame too long", NULL, 1, 28, "its frame has 28", WIRE_STATUS_BAD_MESSAGE},
        {"fewer frames", NULL, 0, 24, "but 0 tensor frames", WIRE_STATUS_BAD_MESSAGE},
        {"more frames", NULL, 2, 24, "but 2 tensor frames", WIRE_STATUS_BAD_MESSAGE},
        {"too many tensors", NULL, 17, 0, "tensors, more than", WIRE_STATUS_BAD_MESSAGE},
        {"name too long", NULL, 1, 24, "longer than", WIRE_STATUS_BAD_MESSAGE},
        {"empty name", NULL, 1, 24, "empty name", WIRE_STATUS_BAD_MESSAGE},
        {"duplicate name", NULL, 2, 24, "duplicate tensor name", WIRE_STATUS_BAD_MESSAGE},
        {"error text too long", NULL, 1, 24, "error text of", WIRE_STATUS_BAD_MESSAGE},
        {"trailing bytes", NULL, 1, 24, "trailing", WIRE_STATUS_BAD_MESSAGE},
    };
    int ncases = (int)(sizeof cases / sizeof cases[0]);
    static char longname[100], longerr[400];
    memset(longname, 'n', 80); longname[80] = 0;
    memset(longerr, 'e', 300); longerr[300] = 0;
    for (int i = 0; i < ncases; i++) {
        spec_default(&s);
        switch (i) {
        case 0: s.v = 2; break;
        case 1: s.op = 99; break;
        case 2: s.op = 0; break;
        case 3: s.op_as_str = 1; break;
        case 4: s.dup_op = 1; break;
        case 5: s.omit = 4; break;
        case 6: s.omit = 16; break;
        case 7: s.id = -5; break;
        case 8: s.st = 77; break;
        case 9: s.dt = 9; break;
        case 10: s.dims[1] = -3; break;
        case 11: s.ndim = 4; s.dims[0] = s.dims[1] = s.dims[2] = s.dims[3] = (int64_t)1 << 40; break;
        case 12: s.dt = WIRE_U8; s.ndim = 1; s.dims[0] = ((int64_t)1 << 34) + 1; break;
        case 13: s.ndim = 9; for (int d = 0; d < 9; d++) s.dims[d] = 1; break;
        case 14: case 15: case 16: case 17: break;
        case 18: s.nt = 17; s.ndim = 1; s.dims[0] = 0; break;
        case 19: s.name = longname; break;
        case 20: s.name = ""; break;
        case 21: s.nt = 2; s.dup_name = 1; break;
        case 22: s.err = longerr; break;
        case 23: s.trailing = 1; break;
        }
        memset(&m, 0, sizeof m);
        int rc = spec_decode(&s, cases[i].nframes, cases[i].flen, &m, err, sizeof err);
        CHECK(rc == WIRE_EMALFORMED && strstr(err, cases[i].want) != NULL, "%s: rc %d, err '%s' (want '%s')",
              cases[i].what, rc, rc ? err : "", cases[i].want);
        CHECK(m.reject_status == cases[i].status, "%s: reject status %d", cases[i].what, m.reject_status);
    }
    /* every strict prefix of a valid header is malformed, and so is garbage */
    spec_default(&s);
    s.err = "x";
    msgpack_sbuffer sb;
    spec_build(&s, &sb);
    unsigned char frame[24] = {0};
    void *fr[1] = {frame};
    size_t fl[1] = {24};
    int bad = 0;
    for (size_t n = 0; n < sb.size; n++)
        if (wire_decode(&m, sb.data, n, 1, fr, fl, err, sizeof err) != WIRE_EMALFORMED) bad++;
    CHECK(bad == 0, "%d truncated headers were accepted", bad);
    msgpack_sbuffer_destroy(&sb);
    unsigned char junk[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 'v'}; /* map claiming 4G entries */
    CHECK(wire_decode(&m, junk, sizeof junk, 0, NULL, NULL, err, sizeof err) == WIRE_EMALFORMED && strstr(err, "claims"), "%s", err);
    unsigned char arr[] = {0x93, 1, 2, 3};
    CHECK(wire_decode(&m, arr, sizeof arr, 0, NULL, NULL, err, sizeof err) == WIRE_EMALFORMED && strstr(err, "expected a map"), "%s", err);
    static unsigned char huge[WIRE_MAX_HEADER + 1];
    CHECK(wire_decode(&m, huge, sizeof huge, 0, NULL, NULL, err, sizeof err) == WIRE_EMALFORMED && strstr(err, "more than"), "%s", err);
    CHECK(wire_decode(&m, huge, 0, 0, NULL, NULL, err, sizeof err) == WIRE_EMALFORMED && strstr(err, "empty header"), "%s", err);
}

/* Malformed messages over a socket: the ROUTER side gets EMALFORMED with the envelope and
 * can answer; the stream stays usable. */
static void test_malformed_over_socket(void) {
    void *ctx = zmq_ctx_new();
    void *srv = sock_new(ctx, ZMQ_ROUTER, NULL), *cli = sock_new(ctx, ZMQ_DEALER, "bad");
    REQUIRE(zmq_bind(srv, "inproc://mal") == 0 && zmq_connect(cli, "inproc://mal") == 0);
    char err[256];
    WireMsg r, back;
    zmq_send(cli, "\x93\x01\x02\x03", 4, 0); /* an array, not a map */
    CHECK(wire_recv(srv, &r, 1000, err, sizeof err) == WIRE_EMALFORMED && r.nrouting == 1, "%s", err);
    CHECK(wire_send_error(srv, &r, r.reject_status, err) == WIRE_OK);
    CHECK(wire_recv(cli, &back, 1000, err, sizeof err) == WIRE_OK && back.op == WIRE_OP_ERROR &&
          back.status == WIRE_STATUS_BAD_MESSAGE && strstr(back.error, "expected a map"), "%s / %s", err, back.error);
    wire_msg_close(&back);
    /* 17 tensor frames after a valid header: refused, and every frame consumed */
    WireMsg m;
    wire_msg_init(&m, WIRE_OP_ECHO, 3);
    char hdr[256];
    int hl = wire_encode_header(&m, hdr, sizeof hdr);
    zmq_send(cli, hdr, (size_t)hl, ZMQ_SNDMORE);
    for (int i = 0; i < 17; i++) zmq_send(cli, "abc", 3, i < 16 ? ZMQ_SNDMORE : 0);
    CHECK(wire_recv(srv, &r, 1000, err, sizeof err) == WIRE_EMALFORMED && strstr(err, "17 tensor frames"), "%s", err);
    CHECK(wire_send(cli, &m, 0, 1000, err, sizeof err) == WIRE_OK);
    CHECK(wire_recv(srv, &r, 1000, err, sizeof err) == WIRE_OK && r.id == 3, "the next message is intact: %s", err);
    wire_msg_close(&r);
    zmq_close(srv); zmq_close(cli); zmq_ctx_term(ctx);
}

/* The frame limit: MSD_MAX_FRAME_BYTES parsed and bounded; wire_send refuses a larger tensor
 * (WIRE_ETOOBIG, naming the variable) and wire_send_reply answers INTERNAL instead; a reply to
 * a peer that is not there is dropped at once and counted. */
static void test_frame_limit(void) {
    int64_t v = 0;
    CHECK(wire_parse_frame_limit("64M", &v) == 0 && v == (int64_t)64 << 20, "64M -> %lld", (long long)v);
    CHECK(wire_parse_frame_limit("1K", &v) == 0 && v == 1024);
    CHECK(wire_parse_frame_limit("16G", &v) == 0 && v == WIRE_MAX_TENSOR_BYTES);
    const char *bad[] = {"", "abc", "1023", "0", "17G", "12X", "-5", "1MB", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK(wire_parse_frame_limit(bad[i], &v) == -1, "\"%s\" accepted as a frame limit", bad[i]);
    CHECK(wire_max_frame() == WIRE_MAX_FRAME_DEFAULT);
    setenv(WIRE_MAX_FRAME_ENV, "4K", 1);
    CHECK(wire_max_frame() == 4096);
    void *ctx = zmq_ctx_new();
    void *srv = sock_new(ctx, ZMQ_ROUTER, NULL), *cli = sock_new(ctx, ZMQ_DEALER, "cli");
    int one = 1;
    zmq_setsockopt(srv, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    char ep[512], err[256] = "";
    snprintf(ep, sizeof ep, "ipc://%s/frames", g_dir);
    REQUIRE(zmq_bind(srv, ep) == 0 && zmq_connect(cli, ep) == 0);
    static float big[2048]; /* 8 KiB */
    int64_t shape[1] = {2048};
    WireMsg m, r, rep;
    wire_msg_init(&m, WIRE_OP_ECHO, 5);
    wire_msg_add(&m, "x", WIRE_F32, 1, shape, big);
    CHECK(wire_send(cli, &m, 0, 1000, err, sizeof err) == WIRE_ETOOBIG && strstr(err, WIRE_MAX_FRAME_ENV), "%s", err);
    wire_msg_init(&m, WIRE_OP_ECHO, 6);
    REQUIRE(wire_send(cli, &m, 0, 1000, err, sizeof err) == WIRE_OK, "%s", err);
    REQUIRE(wire_recv(srv, &r, 2000, err, sizeof err) == WIRE_OK, "%s", err);
    wire_reply_init(&rep, &r, WIRE_OP_ECHO, WIRE_STATUS_OK);
    wire_msg_add(&rep, "x", WIRE_F32, 1, shape, big);
    CHECK(wire_send_reply(srv, &rep) == WIRE_OK, "the INTERNAL answer in place of a too large reply was not sent");
    REQUIRE(wire_recv(cli, &r, 2000, err, sizeof err) == WIRE_OK, "%s", err);
    CHECK(r.id == 6 && r.op == WIRE_OP_ERROR && r.status == WIRE_STATUS_INTERNAL && strstr(r.error, WIRE_MAX_FRAME_ENV),
          "op %s status %d '%s'", wire_op_name(r.op), r.status, r.error);
    wire_msg_close(&r);
    /* a peer that is not there: dropped at once, counted */
    long dropped = wire_replies_dropped();
    rep.routing_len[0] = 6;
    memcpy(rep.routing[0], "nobody", 6);
    rep.ntensors = 0;
    double t0 = msd_now();
    CHECK(wire_send_reply(srv, &rep) != WIRE_OK);
    CHECK(msd_now() - t0 < 0.5 && wire_replies_dropped() == dropped + 1, "%.3f s, %ld dropped before, %ld after",
          msd_now() - t0, dropped, wire_replies_dropped());
    unsetenv(WIRE_MAX_FRAME_ENV);
    zmq_close(srv); zmq_close(cli); zmq_ctx_term(ctx);
}

/* ---- the control protocol (proc.c) ---------------------------------------------------- */

static void proc_start_args(Proc *p, const char *name, const char *control, const char *extra1, const char *extra2) {
    char *argv[12];
    int argc = 0;
    argv[argc++] = "test_wire";
    argv[argc++] = "--name"; argv[argc++] = (char *)name;
    if (control) { argv[argc++] = "--control"; argv[argc++] = (char *)control; }
    if (extra1) argv[argc++] = (char *)extra1;
    if (extra2) argv[argc++] = (char *)extra2;
    argv[argc++] = "--own-option";
    argv[argc] = NULL;
    proc_start(p, "test", NULL, argc, argv);
}

static void test_control_protocol(void) {
    void *ctx = zmq_ctx_new();
    void *launcher = sock_new(ctx, ZMQ_ROUTER, NULL);
    char ep[512], err[256];
    snprintf(ep, sizeof ep, "ipc://%s/control", g_dir);
    REQUIRE(zmq_bind(launcher, ep) == 0);
    /* heartbeat and LINE under a long liveness window (a loaded machine cannot make the process
     * give up between two messages); the silence itself below */
    Proc p;
    proc_start_args(&p, "hb", ep, "--liveness-ms", "60000");
    CHECK(p.argc == 2 && strcmp(p.argv[1], "--own-option") == 0, "own options are left for the process");
    CHECK(p.liveness_ms == 60000);
    proc_ready(&p);
    WireMsg r, m;
    REQUIRE(wire_recv(launcher, &r, 2000, err, sizeof err) == WIRE_OK, "READY: %s", err);
    CHECK(r.op == WIRE_OP_READY && r.routing_len[0] == 2 && memcmp(r.routing[0], "hb", 2) == 0);
    /* heartbeat: answered with the same id */
    wire_reply_init(&m, &r, WIRE_OP_HEARTBEAT, WIRE_STATUS_OK);
    m.id = 77;
    wire_msg_close(&r);
    CHECK(wire_send(launcher, &m, 0, 1000, err, sizeof err) == WIRE_OK);
    CHECK(proc_poll(&p, NULL, 0, 200, NULL) == 0);
    REQUIRE(wire_recv(launcher, &r, 1000, err, sizeof err) == WIRE_OK, "%s", err);
    CHECK(r.op == WIRE_OP_HEARTBEAT && r.id == 77);
    wire_msg_close(&r);
    /* LINE: handed to the caller, which answers */
    const char *text = "hello";
    int64_t n = 5;
    m.op = WIRE_OP_LINE; m.id = 78;
    wire_msg_add(&m, "text", WIRE_U8, 1, &n, text);
    double t_line = msd_now();
    CHECK(wire_send(launcher, &m, 0, 1000, err, sizeof err) == WIRE_OK);
    WireMsg line;
    int got = 0;
    for (double t0 = msd_now(); !(got & PROC_POLL_LINE) && msd_now() - t0 < 10.0;) got = proc_poll(&p, NULL, 0, 200, &line);
    REQUIRE(got & PROC_POLL_LINE);
    /* every message from the launcher restarts the liveness window */
    CHECK(p.last_heard >= t_line, "the LINE did not count as hearing from the launcher");
    CHECK(line.id == 78 && wire_msg_find(&line, "text") != NULL);
    proc_reply_line(&p, &line, "world", WIRE_STATUS_OK);
    wire_msg_close(&line);
    REQUIRE(wire_recv(launcher, &r, 1000, err, sizeof err) == WIRE_OK, "%s", err);
    const WireTensor *t = wire_msg_find(&r, "text");
    CHECK(r.op == WIRE_OP_LINE && r.id == 78 && t && t->nbytes == 5 && memcmp(t->data, "world", 5) == 0);
    wire_msg_close(&r);
    CHECK(proc_finish(&p) == 0);
    /* silence: a process that hears nothing stops once liveness_ms has passed since it last heard
     * the launcher (at its start, here), never sooner, with exit status 3. The lower bound is
     * measured from before its start, so it holds however the machine schedules this thread;
     * the upper bound only catches a process that never gives up (it is loose: 5 s) */
    double t_start = msd_now();
    proc_start_args(&p, "sl", ep, "--liveness-ms", "300");
    CHECK(p.liveness_ms == 300);
    proc_ready(&p);
    REQUIRE(wire_recv(launcher, &r, 2000, err, sizeof err) == WIRE_OK, "READY: %s", err);
    wire_msg_close(&r);
    while (!proc_should_stop(&p) && msd_now() - t_start < 10.0) proc_poll(&p, NULL, 0, 100, NULL);
    double dt = msd_now() - t_start;
    CHECK(p.launcher_silent && dt >= 0.3 && dt < 5.0, "stopped %.3f s after its start (liveness 0.3 s; limits 0.3 .. 5 s)", dt);
    CHECK(proc_finish(&p) == 3);
    /* STOP: a clean stop */
    proc_start_args(&p, "st", ep, "--liveness-ms", "60000");
    proc_ready(&p);
    REQUIRE(wire_recv(launcher, &r, 2000, err, sizeof err) == WIRE_OK, "%s", err);
    wire_reply_init(&m, &r, WIRE_OP_STOP, WIRE_STATUS_OK);
    wire_msg_close(&r);
    CHECK(wire_send(launcher, &m, 0, 1000, err, sizeof err) == WIRE_OK);
    for (double t0 = msd_now(); !proc_should_stop(&p) && msd_now() - t0 < 10.0;) proc_poll(&p, NULL, 0, 100, NULL);
    CHECK(p.stop_requested && !p.launcher_silent);
    CHECK(proc_finish(&p) == 0);
    zmq_close(launcher);
    zmq_ctx_term(ctx);
}

/* One proc_poll call handles every control message queued, so a STOP behind a pile of
 * heartbeats is seen at once even when the caller's socket is readable (proc_poll then returns
 * after one pass). inproc:// on the process's own context: a message is in the pipe when
 * zmq_send returns, so "queued" needs no waiting. */
static void test_control_drain(void) {
    enum { NHB = 50 };
    Proc p;
    proc_start_args(&p, "dr", "inproc://drain-control", "--liveness-ms", "60000");
    void *launcher = sock_new(p.zctx, ZMQ_ROUTER, NULL);
    REQUIRE(zmq_bind(launcher, "inproc://drain-control") == 0);
    void *busy_a = sock_new(p.zctx, ZMQ_PAIR, NULL), *busy_b = sock_new(p.zctx, ZMQ_PAIR, NULL);
    REQUIRE(zmq_bind(busy_a, "inproc://drain-busy") == 0 && zmq_connect(busy_b, "inproc://drain-busy") == 0);
    REQUIRE(zmq_send(busy_a, "x", 1, 0) == 1); /* busy_b stays readable: the caller's socket */
    proc_ready(&p);
    WireMsg r, m;
    char err[256];
    REQUIRE(wire_recv(launcher, &r, 2000, err, sizeof err) == WIRE_OK, "READY: %s", err);
    wire_reply_init(&m, &r, WIRE_OP_HEARTBEAT, WIRE_STATUS_OK);
    wire_msg_close(&r);
    for (int i = 0; i < NHB; i++) {
        m.id = (uint64_t)(1000 + i);
        REQUIRE(wire_send(launcher, &m, 0, 1000, err, sizeof err) == WIRE_OK, "%s", err);
    }
    m.op = WIRE_OP_STOP;
    REQUIRE(wire_send(launcher, &m, 0, 1000, err, sizeof err) == WIRE_OK, "%s", err);
    int got = proc_poll(&p, &busy_b, 1, 1000, NULL);
    int answered = 0;
    while (wire_recv(launcher, &r, 0, err, sizeof err) == WIRE_OK) {
        answered += r.op == WIRE_OP_HEARTBEAT;
        wire_msg_close(&r);
    }
    CHECK(p.stop_requested, "one proc_poll call (returned %d) did not reach the STOP queued behind %d heartbeats "
          "(it answered %d of them)", got, NHB, answered);
    CHECK(answered == NHB, "%d of %d heartbeats answered by one proc_poll call", answered, NHB);
    zmq_close(busy_a); zmq_close(busy_b); zmq_close(launcher);
    CHECK(proc_finish(&p) == 0);
}

/* ---- CurveZMQ ------------------------------------------------------------------------- */

static int wait_auth_failure(void *ctx, const char *mon_ep) {
    void *mon = zmq_socket(ctx, ZMQ_PAIR);
    zmq_connect(mon, mon_ep);
    int failed = 0;
    double t0 = msd_now();
    while (!failed && msd_now() - t0 < 3.0) {
        zmq_pollitem_t it = {mon, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 200) <= 0) continue;
        zmq_msg_t a, b;
        zmq_msg_init(&a); zmq_msg_init(&b);
        zmq_msg_recv(&a, mon, 0);
        zmq_msg_recv(&b, mon, 0);
        uint16_t ev;
        memcpy(&ev, zmq_msg_data(&a), 2);
        if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) failed = 1;
        zmq_msg_close(&a); zmq_msg_close(&b);
    }
    int linger = 0;
    zmq_setsockopt(mon, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(mon);
    return failed;
}

static void *curve_client(void *ctx, const char *server_pub, const char *pub, const char *sec, const char *ep) {
    void *c = sock_new(ctx, ZMQ_DEALER, "client");
    zmq_setsockopt(c, ZMQ_CURVE_SERVERKEY, server_pub, 40);
    zmq_setsockopt(c, ZMQ_CURVE_PUBLICKEY, pub, 40);
    zmq_setsockopt(c, ZMQ_CURVE_SECRETKEY, sec, 40);
    zmq_connect(c, ep);
    return c;
}

static void test_curve(void) {
    REQUIRE(zmq_has("curve"), "libzmq without CURVE");
    char spub[41], ssec[41], cpub[41], csec[41], xpub[41], xsec[41];
    REQUIRE(zmq_curve_keypair(spub, ssec) == 0 && zmq_curve_keypair(cpub, csec) == 0 && zmq_curve_keypair(xpub, xsec) == 0);
    char keys[512];
    snprintf(keys, sizeof keys, "%s/keys", g_dir);
    FILE *f = fopen(keys, "w");
    REQUIRE(f);
    fprintf(f, "# run keys\nserver-public %s\nserver-secret %s\nclient-public %s\nclient-secret %s\n", spub, ssec, cpub, csec);
    fclose(f);
    chmod(keys, 0600);
    Proc p;
    char opt[600];
    snprintf(opt, sizeof opt, "--curve-keys=%s", keys);
    proc_start_args(&p, "cz", NULL, "--bind=serve=tcp://127.0.0.1:*", opt);
    void *serve = proc_bound(&p, "serve");
    REQUIRE(serve && strncmp(p.binds[0].endpoint, "tcp://127.0.0.1:", 16) == 0, "%s", p.binds[0].endpoint);
    void *ctx = zmq_ctx_new();
    char err[256];
    /* the right client key: admitted, and a request gets its answer */
    void *good = curve_client(ctx, spub, cpub, csec, p.binds[0].endpoint);
    WireMsg m, r;
    wire_msg_init(&m, WIRE_OP_ECHO, 9);
    CHECK(wire_send(good, &m, 0, 2000, err, sizeof err) == WIRE_OK, "%s", err);
    int got = proc_poll(&p, &serve, 1, 3000, NULL);
    CHECK(got & 1, "the server got the request");
    if (got & 1) {
        REQUIRE(wire_recv(serve, &r, 1000, err, sizeof err) == WIRE_OK, "%s", err);
        WireMsg rep;
        wire_reply_init(&rep, &r, WIRE_OP_ECHO, WIRE_STATUS_OK);
        wire_msg_close(&r);
        CHECK(wire_send(serve, &rep, 0, 1000, err, sizeof err) == WIRE_OK, "%s", err);
        CHECK(wire_recv(good, &r, 2000, err, sizeof err) == WIRE_OK && r.id == 9, "%s", err);
        wire_msg_close(&r);
    }
    /* a wrong client key: the handshake fails with an authentication error, nothing arrives */
    void *bad = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(bad, ZMQ_LINGER, &linger, sizeof linger);
    zmq_socket_monitor(bad, "inproc://mon-bad", ZMQ_EVENT_HANDSHAKE_FAILED_AUTH);
    zmq_setsockopt(bad, ZMQ_CURVE_SERVERKEY, spub, 40);
    zmq_setsockopt(bad, ZMQ_CURVE_PUBLICKEY, xpub, 40);
    zmq_setsockopt(bad, ZMQ_CURVE_SECRETKEY, xsec, 40);
    zmq_connect(bad, p.binds[0].endpoint);
    CHECK(wait_auth_failure(ctx, "inproc://mon-bad"), "the wrong key was refused in the handshake");
    CHECK(proc_poll(&p, &serve, 1, 200, NULL) == 0, "nothing from the refused client");
    zmq_close(bad); zmq_close(good);
    zmq_ctx_term(ctx);
    CHECK(proc_finish(&p) == 0);
}

int main(void) {
    log_set_level(LOG_LVL_ERROR);
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/msdwire.XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) { perror("mkdtemp"); return 1; }
    TEST_RUN(test_roundtrip_every_op);
    TEST_RUN(test_every_dtype_and_empty);
    TEST_RUN(test_router_dealer_many);
    TEST_RUN(test_malformed_table);
    TEST_RUN(test_malformed_over_socket);
    TEST_RUN(test_frame_limit);
    TEST_RUN(test_control_protocol);
    TEST_RUN(test_control_drain);
    TEST_RUN(test_curve);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return TEST_END();
}
