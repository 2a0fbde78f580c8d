/* test_peers.c: talks to the running walking-skeleton processes ($BIN/msd-*) as a peer or a
 * launcher would, with hand-made messages: malformed and bad requests get error replies and
 * the server stays alive; DENOISE and BATCH answers follow their formulas; the router routes
 * LINEs to students and answers by id; STOP and SIGTERM end a process with status 0.
 * Endpoints are ipc:// in a fresh temporary folder; every wait is bounded.
 *
 * Not here: the wire format itself (test_wire.c), a whole standalone pipeline (test_procs.sh). */
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "log.h"
#include "peers.h"
#include "wire.h"

static void test_teacher_bad_messages(void) {
    char ep[512];
    snprintf(ep, sizeof ep, "serve=ipc://%s/teacher", g_dir);
    const char *args[] = {"--bind", ep, NULL};
    pid_t pid = spawn("msd-teacher", args);
    REQUIRE(pid > 0, "could not start %s/msd-teacher", g_bin);
    void *s = dealer("teacher");
    char err[256];
    WireMsg m, r;
    /* garbage: a BAD_MESSAGE error reply naming the problem */
    zmq_send(s, "\xc1garbage", 8, 0);
    REQUIRE(wire_recv(s, &r, 5000, err, sizeof err) == WIRE_OK, "no answer to garbage: %s", err);
    CHECK(r.op == WIRE_OP_ERROR && r.status == WIRE_STATUS_BAD_MESSAGE && r.error[0], "status %d '%s'", r.status, r.error);
    wire_msg_close(&r);
    /* a header announcing a tensor whose frame is missing */
    float x[6] = {1, -2, 3, 4, 5, -6}, sigma[2] = {0.5f, 2.0f};
    int64_t sx[2] = {2, 3}, ss[1] = {2};
    wire_msg_init(&m, WIRE_OP_DENOISE, 11);
    wire_msg_add(&m, "x", WIRE_F32, 2, sx, x);
    char hdr[1024];
    int hl = wire_encode_header(&m, hdr, sizeof hdr);
    zmq_send(s, hdr, (size_t)hl, 0);
    REQUIRE(wire_recv(s, &r, 5000, err, sizeof err) == WIRE_OK, "%s", err);
    CHECK(r.id == 11 && r.status == WIRE_STATUS_BAD_MESSAGE && strstr(r.error, "frames"), "'%s'", r.error);
    wire_msg_close(&r);
    /* another protocol version */
    m.version = 2;
    hl = wire_encode_header(&m, hdr, sizeof hdr);
    zmq_send(s, hdr, (size_t)hl, ZMQ_SNDMORE);
    zmq_send(s, x, sizeof x, 0);
    REQUIRE(wire_recv(s, &r, 5000, err, sizeof err) == WIRE_OK, "%s", err);
    CHECK(r.status == WIRE_STATUS_BAD_VERSION, "status %d '%s'", r.status, r.error);
    wire_msg_close(&r);
    /* well-formed but wrong for the op: BAD_REQUEST */
    wire_msg_init(&m, WIRE_OP_DENOISE, 12);
    wire_msg_add(&m, "x", WIRE_F32, 2, sx, x);
    REQUIRE(ask(s, &m, &r, 5) == WIRE_OK);
    CHECK(r.id == 12 && r.status == WIRE_STATUS_BAD_REQUEST && strstr(r.error, "sigma"), "'%s'", r.error);
    wire_msg_close(&r);
    int64_t s3[1] = {3};
    float sig3[3] = {1, 1, 1};
    wire_msg_add(&m, "sigma", WIRE_F32, 1, s3, sig3);
    REQUIRE(ask(s, &m, &r, 5) == WIRE_OK);
    CHECK(r.status == WIRE_STATUS_BAD_REQUEST, "sigma (3) for x (2, 3): status %d", r.status);
    wire_msg_close(&r);
    wire_msg_init(&m, WIRE_OP_BATCH, 13);
    REQUIRE(ask(s, &m, &r, 5) == WIRE_OK);
    CHECK(r.status == WIRE_STATUS_UNKNOWN_OP, "batch to the teacher: status %d", r.status);
    wire_msg_close(&r);
    /* and still serving: d = x / (1 + sigma^2) */
    wire_msg_init(&m, WIRE_OP_DENOISE, 14);
    wire_msg_add(&m, "x", WIRE_F32, 2, sx, x);
    wire_msg_add(&m, "sigma", WIRE_F32, 1, ss, sigma);
    REQUIRE(ask(s, &m, &r, 5) == WIRE_OK);
    const WireTensor *d = wire_msg_find(&r, "d");
    CHECK(r.status == WIRE_STATUS_OK && r.id == 14 && d && d->ndim == 2 && d->shape[0] == 2 && d->shape[1] == 3);
    if (d && d->nbytes == sizeof x) {
        float want[6];
        for (int i = 0; i < 6; i++) want[i] = x[i] / (1.0f + sigma[i / 3] * sigma[i / 3]);
        CHECK_CLOSE((const float *)d->data, want, 6, 1e-7, 1e-6, "d");
    }
    wire_msg_close(&r);
    CHECK(waitpid(pid, NULL, WNOHANG) == 0, "the teacher is still alive");
    zmq_close(s);
    kill(pid, SIGTERM);
    int st = wait_exit(pid, 3.0);
    if (st < 0) stop_process(pid);
    check_peer_exit(pid, st, 0, "the teacher after SIGTERM (within 3 s)");
}

static void test_data_batch(void) {
    char ep[512];
    snprintf(ep, sizeof ep, "serve=ipc://%s/data", g_dir);
    const char *args[] = {"--bind", ep, "--shape", "3,2,5", NULL};
    pid_t pid = spawn("msd-data", args);
    REQUIRE(pid > 0);
    void *s = dealer("data");
    WireMsg m, r;
    wire_msg_init(&m, WIRE_OP_BATCH, 17);
    REQUIRE(ask(s, &m, &r, 5) == WIRE_OK);
    const WireTensor *x = wire_msg_find(&r, "x"), *l = wire_msg_find(&r, "label");
    CHECK(r.id == 17 && x && x->dtype == WIRE_F32 && x->ndim == 3 && x->shape[0] == 3 && x->shape[2] == 5);
    CHECK(l && l->dtype == WIRE_I32 && l->ndim == 1 && l->shape[0] == 3);
    if (l && l->nbytes == 12) CHECK(((const int32_t *)l->data)[2] == (17 + 2) % 10);
    wire_msg_close(&r);
    zmq_close(s);
    stop_and_check(pid, "msd-data after SIGTERM");
}

/* The router behind a fake launcher: LINEs go out all at once, answers come back by id. */
static void test_router_lines(void) {
    void *launcher = zmq_socket(g_ctx, ZMQ_ROUTER);
    int linger = 0;
    zmq_setsockopt(launcher, ZMQ_LINGER, &linger, sizeof linger);
    char control[512], b0[512], b1[512], c0[512], c1[512], err[256];
    snprintf(control, sizeof control, "ipc://%s/control", g_dir);
    REQUIRE(zmq_bind(launcher, control) == 0);
    snprintf(b0, sizeof b0, "serve=ipc://%s/s0", g_dir);
    snprintf(b1, sizeof b1, "serve=ipc://%s/s1", g_dir);
    snprintf(c0, sizeof c0, "student.0=ipc://%s/s0", g_dir);
    snprintf(c1, sizeof c1, "student.1=ipc://%s/s1", g_dir);
    const char *a0[] = {"--name", "student.0", "--serve", "--bind", b0, NULL};
    const char *a1[] = {"--name", "student.1", "--serve", "--bind", b1, NULL};
    const char *ar[] = {"--name", "router", "--control", control, "--connect", c1, "--connect", c0, NULL};
    pid_t s0 = spawn("msd-student", a0), s1 = spawn("msd-student", a1), rt = spawn("msd-router", ar);
    REQUIRE(s0 > 0 && s1 > 0 && rt > 0);
    WireMsg r, m;
    REQUIRE(wire_recv(launcher, &r, 5000, err, sizeof err) == WIRE_OK, "READY: %s", err);
    CHECK(r.op == WIRE_OP_READY);
    const char *lines[4] = {"0 apple", "1 banana", "7 cherry", "hello"};
    const char *want[4] = {"student.0: 0 apple", "student.1: 1 banana", "student.1: 7 cherry", NULL};
    for (int i = 0; i < 4; i++) {
        wire_reply_init(&m, &r, WIRE_OP_LINE, WIRE_STATUS_OK);
        m.id = (uint64_t)(100 + i);
        int64_t n = (int64_t)strlen(lines[i]);
        wire_msg_add(&m, "text", WIRE_U8, 1, &n, lines[i]);
        CHECK(wire_send(launcher, &m, 0, 1000, err, sizeof err) == WIRE_OK);
    }
    WireMsg ready; /* keeps the router's routing envelope for STOP */
    wire_reply_init(&ready, &r, WIRE_OP_STOP, WIRE_STATUS_OK);
    wire_msg_close(&r);
    int got[4] = {0};
    for (int k = 0; k < 4; k++) {
        WireMsg a;
        if (wire_recv(launcher, &a, 5000, err, sizeof err) != WIRE_OK) { CHECK(0, "reply %d: %s", k, err); break; }
        if (a.op == WIRE_OP_HEARTBEAT) { k--; wire_msg_close(&a); continue; }
        const WireTensor *t = wire_msg_find(&a, "text");
        int i = (int)a.id - 100;
        CHECK(a.op == WIRE_OP_LINE && a.status == WIRE_STATUS_OK && i >= 0 && i < 4 && t, "reply id %llu", (unsigned long long)a.id);
        if (i >= 0 && i < 4 && t) {
            char text[256];
            snprintf(text, sizeof text, "%.*s", (int)t->nbytes, (const char *)t->data);
            got[i] = 1;
            if (want[i]) CHECK(strcmp(text, want[i]) == 0, "'%s' want '%s'", text, want[i]);
            else CHECK(strstr(text, ": hello") && !strncmp(text, "student.", 8), "'%s'", text);
        }
        wire_msg_close(&a);
    }
    CHECK(got[0] && got[1] && got[2] && got[3]);
    CHECK(wire_send(launcher, &ready, 0, 1000, err, sizeof err) == WIRE_OK);
    int st = wait_exit(rt, 3.0);
    if (st < 0) stop_process(rt);
    check_peer_exit(rt, st, 0, "the router after STOP (within 3 s)");
    stop_and_check(s0, "student.0 after SIGTERM");
    stop_and_check(s1, "student.1 after SIGTERM");
    zmq_close(launcher);
}

int main(void) {
    log_set_level(LOG_LVL_ERROR);
    const char *bin = getenv("BIN"), *tmp = getenv("TMPDIR");
    snprintf(g_bin, sizeof g_bin, "%s", bin && bin[0] ? bin : "bin");
    snprintf(g_dir, sizeof g_dir, "%s/msdpeers.XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) { perror("mkdtemp"); return 1; }
    signal(SIGPIPE, SIG_IGN);
    g_ctx = zmq_ctx_new();
    TEST_RUN(test_teacher_bad_messages);
    TEST_RUN(test_data_batch);
    TEST_RUN(test_router_lines);
    peers_finish();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return TEST_END();
}
