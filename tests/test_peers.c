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

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ECHO request id on s: its round-trip time in seconds; *ok is 0 when no right answer came
 * within 20 s. */
static double echo_latency(void *s, uint64_t id, int *ok) {
    WireMsg m, r;
    wire_msg_init(&m, WIRE_OP_ECHO, id);
    double t0 = msd_now();
    int rc = ask(s, &m, &r, 20);
    double dt = msd_now() - t0;
    *ok = rc == WIRE_OK && r.id == id && r.op == WIRE_OP_ECHO && r.status == WIRE_STATUS_OK;
    if (rc == WIRE_OK) wire_msg_close(&r);
    return dt;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

static long count_lines(const char *path) {
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f) return -1;
    long n = 0;
    int c;
    while ((c = getc(f)) != EOF) n += c == '\n';
    fclose(f);
    return n;
}

/* A peer that floods a server and never reads its replies, then leaves with them queued, costs
 * an honest client nothing: the server drops what it cannot queue at once instead of waiting
 * (before: 1 s per reply once the flooder's reply queue was full, so every honest request took
 * 1 s or more). A STOP from the launcher behind heartbeats is honoured at once, and the 100,000
 * bad messages give O(1) log lines. Bounds: median honest round trip <= FLOOD_MEDIAN_S
 * (generous: it is normally well under a millisecond; the defect made it >= 1 s), measured on
 * the requests begun FLOOD_GRACE_S or more into the flood (the server needs a few thousand
 * flood replies to fill the flooder's queue: well under that time) and on those after the
 * flooder left; exit within 5 s of STOP; log lines within the rate limit's budget. */
#define FLOOD_MEDIAN_S 0.5
#define FLOOD_GRACE_S 1.0
#define FLOOD_WINDOW_S 3.0
static void test_flood(void) {
    enum { FLOOD = 100000, MAXS = 64, AFTER = 5, HEARTBEATS = 10 };
    void *launcher = zmq_socket(g_ctx, ZMQ_ROUTER);
    int zero = 0;
    zmq_setsockopt(launcher, ZMQ_LINGER, &zero, sizeof zero);
    char control[512], bind[512], err[256];
    snprintf(control, sizeof control, "ipc://%s/flood-control", g_dir);
    REQUIRE(zmq_bind(launcher, control) == 0);
    snprintf(bind, sizeof bind, "serve=ipc://%s/flood", g_dir);
    const char *args[] = {"--name", "student.f", "--serve", "--control", control, "--liveness-ms", "600000",
                          "--bind", bind, NULL};
    double t_start = msd_now();
    pid_t pid = spawn("msd-student", args);
    REQUIRE(pid > 0);
    WireMsg ready, m;
    REQUIRE(wire_recv(launcher, &ready, 10000, err, sizeof err) == WIRE_OK && ready.op == WIRE_OP_READY, "READY: %s", err);
    void *honest = dealer("flood");
    int failed = 0, ok;
    uint64_t id = 1;
    echo_latency(honest, id++, &ok);
    REQUIRE(ok, "the server does not answer at all");
    /* the flood: garbage and valid ECHO requests, never read; SNDHWM 0 queues them all here */
    void *flood = zmq_socket(g_ctx, ZMQ_DEALER);
    zmq_setsockopt(flood, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(flood, ZMQ_SNDHWM, &zero, sizeof zero);
    zmq_setsockopt(flood, ZMQ_ROUTING_ID, "flooder", 7);
    char ep[512];
    snprintf(ep, sizeof ep, "ipc://%s/flood", g_dir);
    REQUIRE(zmq_connect(flood, ep) == 0);
    char hdr[256];
    double t_flood = msd_now();
    for (int i = 0; i < FLOOD; i++) {
        int hl = 1;
        if (i % 2) hdr[0] = (char)0xc1; /* never valid msgpack */
        else {
            wire_msg_init(&m, WIRE_OP_ECHO, (uint64_t)i);
            hl = wire_encode_header(&m, hdr, sizeof hdr);
        }
        REQUIRE(zmq_send(flood, hdr, (size_t)hl, 0) == hl, "flood message %d: %s", i, zmq_strerror(zmq_errno()));
    }
    double during[MAXS], after[AFTER];
    int n = 0;
    while (n < MAXS) {
        double begun = msd_now() - t_flood;
        if (begun >= FLOOD_WINDOW_S && n >= 3) break;
        double dt = echo_latency(honest, id++, &ok);
        failed += !ok;
        if (begun >= FLOOD_GRACE_S) during[n++] = dt;
    }
    zmq_close(flood); /* leaves, with requests (and so replies) still queued at the server */
    for (int i = 0; i < AFTER; i++) {
        after[i] = echo_latency(honest, id++, &ok);
        failed += !ok;
    }
    double med_during = median(during, n), med_after = median(after, AFTER);
    printf("# flood of %d messages: honest ECHO median %.4f s over %d requests begun %.0f s or more into it, %.4f s "
           "over %d after the flooder left (bound %.1f s)\n", FLOOD, med_during, n, FLOOD_GRACE_S, med_after, AFTER,
           FLOOD_MEDIAN_S);
    CHECK(failed == 0, "%d honest requests got no answer within 20 s", failed);
    CHECK(med_during <= FLOOD_MEDIAN_S, "honest median round trip %.3f s while another peer floods (bound %.1f s)",
          med_during, FLOOD_MEDIAN_S);
    CHECK(med_after <= FLOOD_MEDIAN_S, "honest median round trip %.3f s after the flooder left (bound %.1f s)",
          med_after, FLOOD_MEDIAN_S);
    /* heartbeats, then STOP */
    wire_reply_init(&m, &ready, WIRE_OP_HEARTBEAT, WIRE_STATUS_OK);
    wire_msg_close(&ready);
    for (int i = 0; i < HEARTBEATS; i++) {
        m.id = (uint64_t)(500 + i);
        CHECK(wire_send(launcher, &m, 0, 1000, err, sizeof err) == WIRE_OK, "%s", err);
    }
    m.op = WIRE_OP_STOP;
    CHECK(wire_send(launcher, &m, 0, 1000, err, sizeof err) == WIRE_OK, "%s", err);
    double t_stop = msd_now();
    int st = wait_exit(pid, 5.0);
    double stop_s = msd_now() - t_stop, elapsed = msd_now() - t_start;
    if (st < 0) stop_process(pid);
    check_peer_exit(pid, st, 0, "the flooded server after STOP behind heartbeats (within 5 s)");
    /* the log: per rate-limited kind at most WIRE_LOG_BURST lines + a note + a summary per
     * WIRE_LOG_INTERVAL window, plus a few lines of its own; without the limit, one per message */
    long lines = count_lines(peer_log(pid));
    long budget = 12 + WIRE_LOG_KINDS * (WIRE_LOG_BURST + 2) * (long)(elapsed / WIRE_LOG_INTERVAL + 2);
    printf("# flood: %ld log lines for %d bad or unanswerable messages in %.1f s (budget %ld); stopped %.2f s after STOP\n",
           lines, FLOOD, elapsed, budget, stop_s);
    CHECK(lines >= 0 && lines <= budget, "%ld log lines for %d flood messages (budget %ld)", lines, FLOOD, budget);
    if (lines > budget) peer_print_tail(pid);
    zmq_close(honest);
    zmq_close(launcher);
}

/* Peak resident memory (VmHWM) of pid in KiB, or -1. */
static long rss_peak_kib(pid_t pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld kB", &kib) == 1) break;
    fclose(f);
    return kib;
}

/* A peer sending frames over the frame limit (MSD_MAX_FRAME_BYTES=1M here) is disconnected by
 * libzmq at the first one: a message of 16 frames of 8 MiB (which the server would hold whole
 * before it could read any of it) leaves the server's peak memory (VmHWM) as it was (bound:
 * 32 MiB of growth, against the 128 MiB it would take), and the server goes on answering an
 * honest client. */
static unsigned char g_big[8 << 20];
static void test_oversized_frames(void) {
    enum { NFRAMES = 16 };
    char bind[512], ep[512];
    snprintf(bind, sizeof bind, "serve=ipc://%s/big", g_dir);
    snprintf(ep, sizeof ep, "ipc://%s/big", g_dir);
    const char *args[] = {"--name", "student.b", "--serve", "--bind", bind, NULL};
    setenv("MSD_MAX_FRAME_BYTES", "1M", 1);
    pid_t pid = spawn("msd-student", args);
    unsetenv("MSD_MAX_FRAME_BYTES");
    REQUIRE(pid > 0);
    void *honest = dealer("big");
    int ok;
    echo_latency(honest, 1, &ok);
    REQUIRE(ok, "the server does not answer at all");
    long rss0 = rss_peak_kib(pid);
    void *bad = zmq_socket(g_ctx, ZMQ_DEALER);
    int zero = 0, never = -1;
    zmq_setsockopt(bad, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(bad, ZMQ_RECONNECT_IVL, &never, sizeof never);
    REQUIRE(zmq_socket_monitor(bad, "inproc://mon-big", ZMQ_EVENT_DISCONNECTED) == 0);
    void *mon = zmq_socket(g_ctx, ZMQ_PAIR);
    zmq_setsockopt(mon, ZMQ_LINGER, &zero, sizeof zero);
    REQUIRE(zmq_connect(mon, "inproc://mon-big") == 0);
    REQUIRE(zmq_connect(bad, ep) == 0);
    for (int i = 0; i < NFRAMES; i++) { /* one message; zero copy: the same 8 MiB each time */
        zmq_msg_t f;
        zmq_msg_init_data(&f, g_big, sizeof g_big, NULL, NULL);
        if (zmq_msg_send(&f, bad, i + 1 < NFRAMES ? ZMQ_SNDMORE : 0) < 0) { zmq_msg_close(&f); break; }
    }
    int disconnected = 0;
    for (double t0 = msd_now(); !disconnected && msd_now() - t0 < 10.0;) {
        zmq_pollitem_t it = {mon, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 200) <= 0) continue;
        zmq_msg_t a, b;
        zmq_msg_init(&a); zmq_msg_init(&b);
        zmq_msg_recv(&a, mon, 0);
        zmq_msg_recv(&b, mon, 0);
        uint16_t ev = 0;
        if (zmq_msg_size(&a) >= 2) memcpy(&ev, zmq_msg_data(&a), 2);
        disconnected = ev == ZMQ_EVENT_DISCONNECTED;
        zmq_msg_close(&a); zmq_msg_close(&b);
    }
    long rss1 = rss_peak_kib(pid);
    CHECK(disconnected, "the server did not drop a peer sending %zu-byte frames over its 1 MiB limit (10 s)", sizeof g_big);
    CHECK(rss0 > 0 && rss1 > 0 && rss1 - rss0 < 32 * 1024,
          "the server's peak RSS went from %ld to %ld KiB with a message of %d x %zu-byte frames (bound: 32 MiB growth)", rss0,
          rss1, NFRAMES, sizeof g_big);
    printf("# oversized frames: server peak RSS %ld -> %ld KiB (a message of %d x 8 MiB sent)\n", rss0, rss1, NFRAMES);
    echo_latency(honest, 2, &ok);
    CHECK(ok, "the server no longer answers an honest client");
    zmq_socket_monitor(bad, NULL, 0);
    zmq_close(bad);
    zmq_close(mon);
    zmq_close(honest);
    stop_and_check(pid, "msd-student after oversized frames and SIGTERM");
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
    TEST_RUN(test_flood);
    TEST_RUN(test_oversized_frames);
    peers_finish();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return TEST_END();
}
