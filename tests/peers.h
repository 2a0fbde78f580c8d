/* peers.h: what the tests that talk to standalone msd-* processes share: start one
 * ($BIN/PROG with arguments, its stderr into a file in g_dir), wait for it with a bound, stop
 * it (SIGTERM, then SIGKILL), judge how it ended (check_peer_exit: the exit status, and no
 * sanitizer report in its stderr, so an ASan/LSan/UBSan report at shutdown cannot go unseen),
 * and a DEALER to ipc://g_dir/NAME with a bounded request/reply. Header-only (static):
 * included by one test program each, after check.h. */
#ifndef MSD_TEST_PEERS_H
#define MSD_TEST_PEERS_H

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <zmq.h>

#include "check.h"
#include "log.h"
#include "wire.h"

extern char **environ;
static char g_dir[256], g_bin[512];
static void *g_ctx;

/* every process spawned: its pid and the file that holds its stderr */
#define PEERS_MAX 64
static struct { pid_t pid; int reaped; char log[700]; } g_peers[PEERS_MAX];
static int g_npeers;

static pid_t spawn(const char *prog, const char *const *args) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s", g_bin, prog);
    const char *argv[24];
    int n = 0;
    argv[n++] = path;
    for (; args[n - 1] && n < 23; n++) argv[n] = args[n - 1];
    argv[n] = NULL;
    if (g_npeers >= PEERS_MAX) return -1;
    char *log = g_peers[g_npeers].log;
    snprintf(log, sizeof g_peers[0].log, "%s/%s.%d.stderr", g_dir, prog, g_npeers);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid;
    int rc = posix_spawn(&pid, path, &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) return -1;
    g_peers[g_npeers++].pid = pid;
    return pid;
}

/* The file holding pid's stderr, or NULL for a pid spawn did not start. */
static const char *peer_log(pid_t pid) {
    for (int i = 0; i < g_npeers; i++)
        if (g_peers[i].pid == pid) return g_peers[i].log;
    return NULL;
}

/* The first sanitizer report line (ASan, LSan, UBSan, TSan) in pid's stderr into line; 1 if any. */
static int peer_sanitizer_report(pid_t pid, char *line, size_t len) {
    static const char *const pats[] = {"ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer",
                                       "ERROR: ThreadSanitizer"};
    const char *log = peer_log(pid);
    FILE *f = log ? fopen(log, "r") : NULL;
    if (!f) return 0;
    char buf[1024];
    int found = 0;
    while (!found && fgets(buf, sizeof buf, f))
        for (size_t k = 0; k < sizeof pats / sizeof *pats; k++)
            if (strstr(buf, pats[k])) {
                buf[strcspn(buf, "\n")] = '\0';
                snprintf(line, len, "%s", buf);
                found = 1;
                break;
            }
    fclose(f);
    return found;
}

/* Prints the last lines of pid's stderr (after a failure). */
static void peer_print_tail(pid_t pid) {
    const char *log = peer_log(pid);
    FILE *f = log ? fopen(log, "r") : NULL;
    if (!f) return;
    char lines[8][512];
    int n = 0;
    while (fgets(lines[n % 8], sizeof lines[0], f)) n++;
    fclose(f);
    printf("    last lines of %s:\n", log);
    for (int i = n > 8 ? n - 8 : 0; i < n; i++) printf("    | %s", lines[i % 8]);
}

/* A process this test started has ended with status st (what wait_exit or stop_process
 * returned; -1: it had to be killed): CHECK that st is want and that its stderr holds no
 * sanitizer report. */
static void check_peer_exit(pid_t pid, int st, int want, const char *what) {
    char rep[1024] = "";
    int san = peer_sanitizer_report(pid, rep, sizeof rep);
    CHECK(st == want, "%s: exit status %d, want %d%s", what, st, want, st < 0 ? " (did not stop: killed)" : "");
    CHECK(!san, "%s: sanitizer report in its stderr: %s", what, rep);
    if (st != want || san) peer_print_tail(pid);
}

static void peer_reaped(pid_t pid) {
    for (int i = 0; i < g_npeers; i++)
        if (g_peers[i].pid == pid) g_peers[i].reaped = 1;
}

static int wait_exit(pid_t pid, double secs) {
    double t0 = msd_now();
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            peer_reaped(pid);
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        if (r < 0 || msd_now() - t0 > secs) return -1;
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
}

/* SIGTERM, wait up to 10 s, then SIGKILL; returns the exit status, or -1 if it had to be killed. */
static int stop_process(pid_t pid) {
    kill(pid, SIGTERM);
    int st = wait_exit(pid, 10.0);
    if (st < 0) { kill(pid, SIGKILL); waitpid(pid, NULL, 0); peer_reaped(pid); }
    return st;
}

/* At the end of main: kill the processes a failed test (a REQUIRE) left running, and end the
 * context; after a failure only shut it down, since zmq_ctx_term would wait forever for a
 * socket such a test left open. */
static void peers_finish(void) {
    for (int i = 0; i < g_npeers; i++)
        if (!g_peers[i].reaped) {
            kill(g_peers[i].pid, SIGKILL);
            waitpid(g_peers[i].pid, NULL, 0);
            g_peers[i].reaped = 1;
        }
    if (check_failed_) zmq_ctx_shutdown(g_ctx);
    else zmq_ctx_term(g_ctx);
}

/* stop_process, then check_peer_exit: a clean SIGTERM stop is status 0 with a clean stderr. */
static void stop_and_check(pid_t pid, const char *what) { check_peer_exit(pid, stop_process(pid), 0, what); }

static void *dealer(const char *name) {
    void *s = zmq_socket(g_ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    char ep[512];
    snprintf(ep, sizeof ep, "ipc://%s/%s", g_dir, name);
    zmq_connect(s, ep);
    return s;
}

/* Send m and receive the reply within secs (the data process loads its images first). */
static int ask(void *s, const WireMsg *m, WireMsg *r, int secs) {
    char err[256];
    if (wire_send(s, m, 0, 2000, err, sizeof err) != WIRE_OK) return -1;
    return wire_recv(s, r, secs * 1000, err, sizeof err);
}

#endif
