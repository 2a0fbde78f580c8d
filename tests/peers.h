/* peers.h: what the tests that talk to standalone msd-* processes share: start one
 * ($BIN/PROG with arguments), wait for it with a bound, stop it (SIGTERM, then SIGKILL), and
 * a DEALER to ipc://g_dir/NAME with a bounded request/reply. Header-only (static): included
 * by one test program each. */
#ifndef MSD_TEST_PEERS_H
#define MSD_TEST_PEERS_H

#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <zmq.h>

#include "log.h"
#include "wire.h"

extern char **environ;
static char g_dir[256], g_bin[512];
static void *g_ctx;

static pid_t spawn(const char *prog, const char *const *args) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s", g_bin, prog);
    const char *argv[24];
    int n = 0;
    argv[n++] = path;
    for (; args[n - 1] && n < 23; n++) argv[n] = args[n - 1];
    argv[n] = NULL;
    pid_t pid;
    if (posix_spawn(&pid, path, NULL, NULL, (char *const *)argv, environ) != 0) return -1;
    return pid;
}

static int wait_exit(pid_t pid, double secs) {
    double t0 = msd_now();
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (r < 0 || msd_now() - t0 > secs) return -1;
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
}

/* SIGTERM; the exit status (or -1 after a SIGKILL when it did not stop within 10 s). */
/* SIGTERM, wait up to 10 s, then SIGKILL; returns the exit status, or -1 if it had to be killed. */
static int stop_process(pid_t pid) {
    kill(pid, SIGTERM);
    int st = wait_exit(pid, 10.0);
    if (st < 0) { kill(pid, SIGKILL); waitpid(pid, NULL, 0); }
    return st;
}

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
