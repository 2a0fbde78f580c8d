/* supervise.c: `msdpipe up`: start every process of a pipeline, wait for each READY, keep
 * them alive (heartbeats both ways), forward stdin (lines.c), and stop them all when the job
 * ends, stdin is answered to the end, a signal or `msdpipe down` arrives, or one fails.
 *
 * Processes run in their own session (setsid), so a terminal's Ctrl-C reaches only the
 * launcher, which then stops them in order: STOP on the control socket, stop_timeout seconds,
 * then SIGKILL to each process group. Each child also asks for SIGTERM when the launcher dies
 * (PR_SET_PDEATHSIG) and exits on its own when the launcher's heartbeats stop, so `kill -9`
 * of the launcher leaves no orphan. Remote processes start through ${MSDPIPE_SSH:-ssh} HOST
 * with tcp endpoints and the run's CURVE key file on ssh's stdin; with --slurm (slurm.c) every
 * process is a job step started the same way through srun, and stopping also cancels the
 * launcher's steps (scancel), so that none outlives a killed srun.
 *
 * restart=N (docs/PIPELINES.md "Restarts"): a process that crashes, or goes silent and is
 * killed, is started again after a backoff (RESTART_BACKOFF doubling per restart of that
 * process, at most RESTART_BACKOFF_MAX), at most N times; then its failure stops the job as
 * with restart=0. The new process has the same name, so the same control identity; it counts
 * as up again once it sends READY.
 *
 * Not here: the file format (tools/msdpipe/pipefile.c), command lines (plan.c). */
#include "msdpipe.h"

#include "log.h"
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { CH_STARTING, CH_READY, CH_EXITED, CH_WAITING /* crashed, restart pending */ };

#define RESTART_BACKOFF 0.5      /* seconds before the first restart of a process */
#define RESTART_BACKOFF_MAX 8.0  /* the doubling stops here */

typedef struct Child {
    pid_t pid;
    int state;
    int done;              /* sent DONE */
    int heard;             /* has talked on the control socket */
    int killed;            /* we sent SIGKILL */
    int status;            /* wait status, once exited */
    double last_heard;
    double started;        /* when the current incarnation was started */
    int restarts;          /* restarts used (restart= allows PipeProc.restart) */
    int silenced;          /* we SIGKILLed it for silence or a missed READY; restart pending */
    double restart_at;     /* CH_WAITING: when to start it again */
} Child;

typedef struct Launcher {
    Options *o;
    Pipeline pl;
    char rundir[PATH_MAX];
    char control_ipc[PATH_MAX + 16], control_tcp[256];
    char keyfile[PATH_MAX + 16];
    CurveKeys keys;
    int have_keys;
    void *zctx, *ctl, *zap;
    Child *ch;
    const char *phase;     /* "starting", "up", "stopping" */
    double t_start;
    time_t started_wall;
    int stdin_used;
    Lines lines;
    int nports;
    int ports[PIPE_MAX_PROCS * PIPE_MAX_BINDS];
    int port_next[PIPE_MAX_HOSTS];
} Launcher;

static volatile sig_atomic_t g_signal, g_signals;

static void on_signal(int sig) {
    g_signal = sig;
    g_signals++;
}

/* ", node NAME" for a process that runs as a Slurm step, "" otherwise: failures name the node. */
static const char *where(const Launcher *L, int i) {
    static char buf[PIPE_MAX_NAME + 16];
    const PipeHost *h = &L->pl.hosts[L->pl.procs[i].host];
    if (!h->slurm) return "";
    snprintf(buf, sizeof buf, ", node %s", h->name);
    return buf;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- ports for tcp binds ------------------------------------------------------------- */

/* The kernel's range for ports it hands out itself (connect(), bind to port 0):
 * /proc/sys/net/ipv4/ip_local_port_range, or Linux's default when that cannot be read. */
static void ephemeral_range(int *lo, int *hi) {
    *lo = 32768;
    *hi = 60999;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (!f) return;
    int a, b;
    if (fscanf(f, "%d %d", &a, &b) == 2 && a >= 1 && a <= b && b <= 65535) { *lo = a; *hi = b; }
    fclose(f);
}

/* A candidate port outside the ephemeral range [elo, ehi], from 10000 up where that leaves any
 * (below, the well-known services), else from 1024; 0 when the range leaves none. */
static int outside_port(int elo, int ehi, unsigned *seed) {
    static const int bases[2] = {10000, 1024};
    for (int i = 0; i < 2; i++) {
        int base = bases[i];
        int below = elo > base ? elo - base : 0;              /* [base, elo - 1] */
        int start = ehi + 1 > base ? ehi + 1 : base;          /* [start, 65535] */
        int above = start <= 65535 ? 65536 - start : 0;
        if (below + above == 0) continue;
        int r = (int)(rand_r(seed) % (unsigned)(below + above));
        return r < below ? base + r : start + (r - below);
    }
    return 0;
}

/* Find a free port on the host's address (works for this machine's addresses; another machine
 * needs ports= in its host line). The port is free now and is handed to the process that binds
 * it later, so it comes from outside the kernel's ephemeral range: there no connect() and no
 * other program's bind to port 0 (srun's I/O sockets, a peer's outgoing connection) can take it
 * in between, which a port the kernel picked could not promise (seen: srun listening on it, our
 * connectors' greeting then read by srun as garbage). Port 0 (the kernel picks) only when the
 * ephemeral range covers every port. */
static int probe_port(const char *address, char *err, size_t errlen) {
    char addr[PIPE_MAX_VALUE];
    snprintf(addr, sizeof addr, "%s", address);
    if (addr[0] == '[') { /* [v6] */
        memmove(addr, addr + 1, strlen(addr));
        char *rb = strchr(addr, ']');
        if (rb) *rb = 0;
    }
    static unsigned seed;
    if (!seed) seed = (unsigned)getpid() * 2654435761u ^ (unsigned)time(NULL);
    int elo, ehi;
    ephemeral_range(&elo, &ehi);
    int port = -1, e = 0;
    for (int tries = 0; tries < 64 && port < 0; tries++) {
        int want = outside_port(elo, ehi, &seed);
        char serv[16];
        snprintf(serv, sizeof serv, "%d", want);
        struct addrinfo hints = {0}, *res = NULL;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
        int rc = getaddrinfo(addr, serv, &hints, &res);
        if (rc != 0) return msd_errf(err, errlen, "cannot resolve %s: %s", address, gai_strerror(rc));
        for (struct addrinfo *a = res; a && port < 0; a = a->ai_next) {
            int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, 0);
            if (fd < 0) { e = errno; continue; }
            struct sockaddr_storage ss;
            socklen_t sl = sizeof ss;
            if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
                port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                                : ntohs(((struct sockaddr_in *)&ss)->sin_port);
            } else {
                e = errno;
            }
            close(fd);
        }
        freeaddrinfo(res);
        if (want == 0 || (e != EADDRINUSE && e != EACCES && port < 0)) break; /* not a taken port: trying others will not help */
    }
    if (port < 0) return msd_errf(err, errlen, "cannot find a free port on %s (%s)", address, strerror(e));
    return port;
}

static int pick_port(const PipeHost *h, void *ctx, char *err, size_t errlen) {
    Launcher *L = ctx;
    int hi = (int)(h - L->pl.hosts), port = -1;
    if (h->port_lo) {
        if (L->port_next[hi] == 0) L->port_next[hi] = h->port_lo;
        if (L->port_next[hi] > h->port_hi)
            return msd_errf(err, errlen, "host %s: the ports=%d-%d range is used up", h->name, h->port_lo, h->port_hi);
        return L->port_next[hi]++;
    }
    for (int tries = 0; tries < 20; tries++) {
        port = probe_port(h->address, err, errlen);
        if (port < 0) {
            if (hi != 0)
                return msd_errf(err, errlen, "host %s: cannot probe a free port on %s from here; give the host a ports=FIRST-LAST range%s",
                                h->name, h->address, h->slurm ? " (a Slurm node: MSDPIPE_SLURM_PORTS=FIRST-LAST)" : "");
            return -1;
        }
        int dup = 0;
        for (int k = 0; k < L->nports; k++) dup |= L->ports[k] == port;
        if (!dup) break;
        port = -1;
    }
    if (port < 0) return msd_errf(err, errlen, "could not find distinct free ports on %s", h->address);
    if (L->nports < (int)(sizeof L->ports / sizeof L->ports[0])) L->ports[L->nports++] = port;
    return port;
}

/* ---- state file ---------------------------------------------------------------------- */

static const char *child_state_name(const Child *c) {
    if (c->state == CH_WAITING) return "restarting";
    if (c->state == CH_EXITED) return c->killed ? "killed" : (WIFEXITED(c->status) && WEXITSTATUS(c->status) == 0 ? "exited" : "failed");
    if (c->done) return "done";
    return c->state == CH_READY ? "ready" : "starting";
}

static void write_state(Launcher *L) {
    /* Sized from the strings it holds (a long pipeline path once truncated a fixed-size state). */
    size_t cap = 512 + strlen(L->pl.name) + strlen(L->o->path), o = 0;
    for (int i = 0; i < L->pl.nprocs; i++) cap += 64 + strlen(L->pl.procs[i].name) + strlen(L->pl.hosts[L->pl.procs[i].host].name);
    char *buf = msd_malloc(cap);
    o += (size_t)snprintf(buf + o, cap - o, "msdpipe-state 1\npipeline %s\nfile %s\nlauncher %d\nlauncher_start %llu\nstarted %ld\n"
                          "stop_timeout %g\nstate %s\n",
                          L->pl.name, L->o->path, (int)getpid(), rundir_start_ticks((int)getpid()), (long)L->started_wall, L->pl.stop_timeout, L->phase);
    for (int i = 0; i < L->pl.nprocs && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "proc %s %d %s %s\n", L->pl.procs[i].name, (int)L->ch[i].pid,
                              child_state_name(&L->ch[i]), L->pl.hosts[L->pl.procs[i].host].name);
    MSD_CHECK(o < cap);
    if (rundir_write_state(L->rundir, buf) != 0) log_warn("cannot write %s/state: %s", L->rundir, strerror(errno));
    free(buf);
}

/* ---- starting ------------------------------------------------------------------------ */

static int open_control(Launcher *L, char *err, size_t errlen) {
    L->zctx = wire_ctx_new();
    if (!L->zctx) return msd_errf(err, errlen, "zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
    L->ctl = zmq_socket(L->zctx, ZMQ_ROUTER);
    if (!L->ctl) return msd_errf(err, errlen, "zmq_socket: %s", zmq_strerror(zmq_errno()));
    int one = 1, zero = 0, hwm = PROC_HWM;
    zmq_setsockopt(L->ctl, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(L->ctl, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(L->ctl, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(L->ctl, ZMQ_RCVHWM, &hwm, sizeof hwm);
    int64_t maxmsg = wire_max_frame();   /* as every process's sockets: a larger frame disconnects its sender */
    zmq_setsockopt(L->ctl, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    snprintf(L->control_ipc, sizeof L->control_ipc, "ipc://%s/control", L->rundir);
    if (zmq_bind(L->ctl, L->control_ipc) != 0)
        return msd_errf(err, errlen, "cannot bind the control endpoint %s: %s", L->control_ipc, zmq_strerror(zmq_errno()));
    if (!pipeline_has_remote(&L->pl)) return 0;
    /* Remote processes reach the launcher over tcp: CURVE server admitting the run's client key.
     * Options set now apply to this bind only; the ipc endpoint above stays plain. */
    L->zap = curve_zap_start(L->zctx, err, errlen);
    if (!L->zap) return -1;
    zmq_setsockopt(L->ctl, ZMQ_CURVE_SERVER, &one, sizeof one);
    zmq_setsockopt(L->ctl, ZMQ_CURVE_SECRETKEY, L->keys.server_secret, 40);
    const PipeHost *lh = &L->pl.hosts[0];
    int v6 = strchr(lh->address, ':') && lh->address[0] != '[';
    char ep[PIPE_MAX_VALUE + 32];
    snprintf(ep, sizeof ep, "tcp://%s%s%s:*", v6 ? "[" : "", lh->address, v6 ? "]" : "");
    if (zmq_bind(L->ctl, ep) != 0) return msd_errf(err, errlen, "cannot bind the control endpoint %s: %s", ep, zmq_strerror(zmq_errno()));
    size_t len = sizeof L->control_tcp;
    if (zmq_getsockopt(L->ctl, ZMQ_LAST_ENDPOINT, L->control_tcp, &len) != 0)
        return msd_errf(err, errlen, "zmq_getsockopt ZMQ_LAST_ENDPOINT: %s", zmq_strerror(zmq_errno()));
    return 0;
}

/* In a child between fork and exec (async-signal-safe calls only): its own session, the
 * default signal dispositions and an empty mask, SIGTERM when the launcher dies; returns -1
 * when the launcher (pid parent) died before that took hold. */
static int child_setup(pid_t parent) {
    setsid();
    struct sigaction dfl = {0};
    dfl.sa_handler = SIG_DFL;
    sigaction(SIGPIPE, &dfl, NULL);
    sigaction(SIGINT, &dfl, NULL);
    sigaction(SIGTERM, &dfl, NULL);
    sigaction(SIGHUP, &dfl, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    return getppid() != parent ? -1 : 0;
}

/* In a forked child whose exec failed: say so with one write (async-signal-safe) and exit 127. */
static _Noreturn void exec_failed(const char *msg) {
    ssize_t w = write(2, msg, strlen(msg));
    (void)w;
    _exit(127);
}

/* fork() with every signal blocked until the child has reset the launcher's handlers
 * (child_setup): a SIGTERM sent to a child that has not reached exec yet stays pending and then
 * takes its default action, where it would otherwise run the launcher's own handler in the
 * child and be lost (the child would exec and never hear it). */
static pid_t fork_blocked(void) {
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);
    pid_t pid = fork();
    int e = errno;
    if (pid != 0) sigprocmask(SIG_SETMASK, &old, NULL);
    errno = e;
    return pid;
}

/* Signal a child's process group; a child that has not called setsid yet has none, so then
 * the child itself (its signals are blocked until then: the signal waits for it). */
static void signal_child(pid_t pid, int sig) {
    if (kill(-pid, sig) < 0 && errno == ESRCH) kill(pid, sig);
}

/* fork + exec one process; between the two only async-signal-safe calls. */
static int start_child(Launcher *L, int i, char *err, size_t errlen) {
    const PipeProc *p = &L->pl.procs[i];
    int remote = p->host != 0;
    char keys[PATH_MAX + 128];
    const char *keyarg = NULL;
    if (plan_needs_keys(&L->pl, i)) {
        if (remote) snprintf(keys, sizeof keys, "%s/%s/%s.keys", L->rundir, L->pl.hosts[p->host].name, p->name);
        else snprintf(keys, sizeof keys, "%s", L->keyfile);
        keyarg = keys;
    }
    char **argv = plan_argv(&L->pl, i, L->o->bindir, remote ? L->control_tcp : L->control_ipc, keyarg);
    char **envp = remote ? NULL : plan_env(&L->pl, i); /* MSD_THREADS (a remote one's is in argv) */
    if (getenv("MSDPIPE_VERBOSE")) {
        fprintf(stderr, "[msdpipe] DEBUG %s:", p->name);
        for (char **a = argv; *a; a++) fprintf(stderr, " %s", *a);
        fputc('\n', stderr);
    }
    int in = open(remote && keyarg ? L->keyfile : "/dev/null", O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        int e = errno;
        plan_free_argv(argv);
        plan_free_argv(envp);
        return msd_errf(err, errlen, "open %s: %s", remote && keyarg ? L->keyfile : "/dev/null", strerror(e));
    }
    /* cpus= on this machine: the child pins itself before exec (check_cpus let only the
     * launcher's own CPUs through); the message is made here, the child only writes it */
    cpu_set_t pin;
    CPU_ZERO(&pin);
    char pinmsg[256] = "";
    if (p->ncpus && !remote) {
        for (int c = 0; c < PIPE_MAX_CPU && c < CPU_SETSIZE; c++)
            if (p->cpuset[c / 8] >> (c % 8) & 1) CPU_SET(c, &pin);
        char list[128];
        pipeline_cpus_text(p->cpuset, list, sizeof list);
        snprintf(pinmsg, sizeof pinmsg, "[msdpipe] ERROR %s: cannot pin it to cpus=%s (sched_setaffinity failed)\n", p->name, list);
    }
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork_blocked();
    if (pid < 0) {
        int e = errno;
        close(in);
        plan_free_argv(argv);
        plan_free_argv(envp);
        return msd_errf(err, errlen, "fork: %s", strerror(e));
    }
    if (pid == 0) {
        if (child_setup(parent) < 0) _exit(3);   /* the launcher died before prctl */
        if (pinmsg[0] && sched_setaffinity(0, sizeof pin, &pin) < 0) {
            ssize_t w = write(2, pinmsg, strlen(pinmsg));
            (void)w;
            _exit(126);
        }
        dup2(in, 0);
        dup2(2, 1);                              /* stdout is for replies only */
        if (remote) execvp(argv[0], argv);
        else execve(argv[0], argv, envp);
        exec_failed("[msdpipe] ERROR exec failed for a pipeline process\n");
    }
    close(in);
    plan_free_argv(argv);
    plan_free_argv(envp);
    Child *c = &L->ch[i];
    c->pid = pid;
    c->state = CH_STARTING;
    c->done = c->heard = c->killed = c->silenced = 0;
    c->status = 0;
    c->started = c->last_heard = msd_now();
    log_debug("started %s: pid %d", p->name, (int)pid);
    return 0;
}

/* ---- messages ------------------------------------------------------------------------ */

static int child_by_routing(Launcher *L, const WireMsg *m) {
    if (m->nrouting < 1) return -1;
    for (int i = 0; i < L->pl.nprocs; i++) {
        size_t n = strlen(L->pl.procs[i].name);
        if (n == m->routing_len[0] && memcmp(L->pl.procs[i].name, m->routing[0], n) == 0) return i;
    }
    return -1;
}

static void send_op(Launcher *L, int i, uint32_t op) {
    WireMsg m;
    wire_msg_init(&m, op, 0);
    const char *name = L->pl.procs[i].name;
    m.nrouting = 1;
    m.routing_len[0] = strlen(name);
    memcpy(m.routing[0], name, m.routing_len[0]);
    char err[256];
    if (wire_send(L->ctl, &m, 0, 0, err, sizeof err) != WIRE_OK && op == WIRE_OP_STOP)
        log_debug("could not send stop to %s: %s", name, err);
}

/* Drain the control socket. Returns -1 if stdout failed (stdin replies). */
static int handle_control(Launcher *L) {
    for (;;) {
        WireMsg m;
        char err[256];
        int rc = wire_recv(L->ctl, &m, 0, err, sizeof err);
        if (rc == WIRE_EAGAIN) return 0;
        if (rc == WIRE_ESOCKET) {
            log_error("control socket: %s", err);
            return -1;
        }
        int i = child_by_routing(L, &m);
        if (rc == WIRE_EMALFORMED) {
            wire_log_limited(WIRE_LOG_MALFORMED, i >= 0 ? L->pl.procs[i].name : "an unknown peer", "malformed message on the control socket: %s", err);
            wire_msg_close(&m);
            continue;
        }
        if (i < 0) {
            wire_log_limited(WIRE_LOG_REFUSED, "an unknown peer", "control message %s ignored", wire_op_name(m.op));
            wire_msg_close(&m);
            continue;
        }
        Child *c = &L->ch[i];
        c->heard = 1;
        c->last_heard = msd_now();
        int out = 0;
        switch (m.op) {
        case WIRE_OP_READY:
            if (c->state == CH_STARTING) {
                c->state = CH_READY;
                log_debug("%s is ready", L->pl.procs[i].name);
                write_state(L);
            }
            break;
        case WIRE_OP_DONE:
            if (!c->done) {
                c->done = 1;
                if (c->state == CH_STARTING) c->state = CH_READY;
                log_debug("%s is done", L->pl.procs[i].name);
                write_state(L);
            }
            break;
        case WIRE_OP_HEARTBEAT:
            break;
        case WIRE_OP_LINE:
        case WIRE_OP_ERROR:
            if (L->stdin_used && i == L->pl.stdin_proc) out = lines_reply(&L->lines, &m);
            else if (m.op == WIRE_OP_ERROR) log_warn("%s reported: %s: %s", L->pl.procs[i].name, wire_status_name(m.status), m.error);
            break;
        default:
            log_warn("unexpected %s message from %s ignored", wire_op_name(m.op), L->pl.procs[i].name);
        }
        wire_msg_close(&m);
        if (out < 0) return -1;
    }
}

/* ---- exits --------------------------------------------------------------------------- */

static void describe_status(int status, char *buf, size_t cap) {
    if (WIFEXITED(status)) snprintf(buf, cap, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status)) snprintf(buf, cap, "was killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else snprintf(buf, cap, "ended with wait status 0x%x", status);
}

/* Reap exited children. Returns the number of processes that failed (while not stopping). */
static int reap(Launcher *L, int stopping) {
    int failed = 0, st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        int i;
        for (i = 0; i < L->pl.nprocs; i++)
            if (L->ch[i].pid == pid && L->ch[i].state != CH_EXITED) break;
        if (i == L->pl.nprocs) continue;  /* e.g. a remote clean-up ssh */
        Child *c = &L->ch[i];
        const PipeProc *p = &L->pl.procs[i];
        c->state = CH_EXITED;
        c->status = st;
        char how[128];
        describe_status(st, how, sizeof how);
        int clean = WIFEXITED(st) && WEXITSTATUS(st) == 0;
        if (stopping) {
            if (!clean && !c->killed) {
                log_warn("process %s (pid %d%s) %s while stopping", p->name, (int)pid, where(L, i), how);
                failed++;
            }
        } else if (clean && !p->server) {
            log_debug("%s (pid %d) finished", p->name, (int)pid);
        } else if (c->restarts < p->restart) {
            double delay = RESTART_BACKOFF;
            for (int k = 0; k < c->restarts && delay < RESTART_BACKOFF_MAX; k++) delay *= 2;
            if (delay > RESTART_BACKOFF_MAX) delay = RESTART_BACKOFF_MAX;
            c->restarts++;
            c->state = CH_WAITING;
            c->restart_at = msd_now() + delay;
            log_warn("process %s (pid %d%s) %s%s; restarting it in %.1f s (restart %d of %d)", p->name, (int)pid, where(L, i), how,
                     clean ? " (a server must run until the pipeline stops)" : "", delay, c->restarts, p->restart);
        } else {
            log_error("process %s (pid %d%s) %s%s", p->name, (int)pid, where(L, i), how,
                      clean ? " (a server must run until the pipeline stops)" : "");
            if (p->restart) log_error("process %s used all %d restarts (restart=%d)", p->name, c->restarts, p->restart);
            failed++;
        }
        write_state(L);
    }
    return failed;
}

static int all_exited(const Launcher *L) {
    for (int i = 0; i < L->pl.nprocs; i++)
        if (L->ch[i].pid > 0 && L->ch[i].state != CH_EXITED) return 0;
    return 1;
}

/* Remove the key files copied to other hosts (best effort, bounded). */
static void clean_remote(Launcher *L) {
    if (!L->have_keys) return;
    for (int h = 1; h < L->pl.nhosts; h++) {
        int used = 0;
        for (int i = 0; i < L->pl.nprocs; i++) used |= L->pl.procs[i].host == h;
        if (!used) continue;
        char dir[PATH_MAX + 64], q[PATH_MAX * 4 + 16], cmd[PATH_MAX * 4 + 32];
        snprintf(dir, sizeof dir, "%s/%s", L->rundir, L->pl.hosts[h].name);
        snprintf(cmd, sizeof cmd, "rm -rf %s", plan_shell_quote(dir, q, sizeof q));
        char **argv = plan_remote_argv(&L->pl, h, "cleanup", cmd);
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            int fd = open("/dev/null", O_RDWR);
            if (fd >= 0) { dup2(fd, 0); dup2(fd, 1); }
            execvp(argv[0], argv);
            _exit(127);
        }
        plan_free_argv(argv);
        if (pid < 0) continue;
        double end = msd_now() + 5;
        int st;
        while (waitpid(pid, &st, WNOHANG) == 0) {
            if (msd_now() > end) { kill(pid, SIGKILL); waitpid(pid, &st, 0); break; }
            sleep_ms(10);
        }
    }
}

/* 1 when every process of the kind (servers: 1, the others: 0) has exited. */
static int kind_exited(const Launcher *L, int servers) {
    for (int i = 0; i < L->pl.nprocs; i++)
        if (L->pl.procs[i].server == servers && L->ch[i].pid > 0 && L->ch[i].state != CH_EXITED) return 0;
    return 1;
}

/* STOP to the live processes of one kind, then up to stop_timeout for them to exit (reaping
 * every process meanwhile). Returns the failures reaped; *second is set on a second signal. */
static int stop_kind(Launcher *L, int servers, int seen_signals, int *second) {
    for (int i = 0; i < L->pl.nprocs; i++) {
        Child *c = &L->ch[i];
        if (L->pl.procs[i].server != servers || c->pid <= 0 || c->state == CH_EXITED) continue;
        if (c->heard) send_op(L, i, WIRE_OP_STOP);
        else signal_child(c->pid, SIGTERM);  /* not connected yet: its own signal handler stops it */
    }
    double deadline = msd_now() + L->pl.stop_timeout;
    int failed = 0;
    while (!kind_exited(L, servers)) {
        failed += reap(L, 1);
        if (kind_exited(L, servers)) break;
        if (g_signals != seen_signals) {
            log_warn("second signal: killing the processes now");
            *second = 1;
            break;
        }
        if (msd_now() > deadline) break;
        zmq_pollitem_t it = {L->ctl, 0, ZMQ_POLLIN, 0};
        zmq_poll(&it, 1, 20);
        WireMsg m;
        char err[64];
        for (;;) { /* drop what arrives; a socket error ends the drain (the deadline still holds) */
            int r = wire_recv(L->ctl, &m, 0, err, sizeof err);
            if (r == WIRE_EAGAIN || r == WIRE_ESOCKET) break;
            wire_msg_close(&m);
        }
    }
    return failed;
}

/* Stop every process: the clients first (the processes that are not servers: a training
 * student still reaches its critic to checkpoint on STOP), then the servers; each group gets
 * STOP and up to stop_timeout, then whatever is left gets SIGKILL. Returns code, or 1 when a
 * process failed while stopping and code was 0. */
static int stop_all(Launcher *L, int code) {
    L->phase = "stopping";
    for (int i = 0; i < L->pl.nprocs; i++)
        if (L->ch[i].state == CH_WAITING) L->ch[i].state = CH_EXITED;  /* its restart is off */
    write_state(L);
    int seen_signals = g_signals, second = 0;
    int failed = stop_kind(L, 0, seen_signals, &second);
    if (!second) failed += stop_kind(L, 1, seen_signals, &second);
    if (L->o->slurm && !all_exited(L)) slurm_cancel_steps(); /* srun killed alone would leave its step running */
    for (int i = 0; i < L->pl.nprocs; i++) {
        Child *c = &L->ch[i];
        if (c->pid <= 0 || c->state == CH_EXITED) continue;
        log_warn("%s (pid %d%s) did not stop within %g s; killing it", L->pl.procs[i].name, (int)c->pid, where(L, i), L->pl.stop_timeout);
        c->killed = 1;
        kill(-c->pid, SIGKILL);
        kill(c->pid, SIGKILL);
    }
    double end = msd_now() + 5;
    while (!all_exited(L) && msd_now() < end) {
        failed += reap(L, 1);
        sleep_ms(10);
    }
    if (L->o->slurm) {
        int n = slurm_cancel_steps(); /* a step whose srun is gone (killed, or lost its node) */
        if (n > 0) log_warn("cancelled %d Slurm step%s still running after its srun ended", n, n == 1 ? "" : "s");
    }
    clean_remote(L);
    if (failed && code == 0) code = MSDPIPE_EXIT_FAILED;
    return code;
}

/* ---- the loop ------------------------------------------------------------------------ */

static int count_ready(const Launcher *L) {
    int n = 0;
    for (int i = 0; i < L->pl.nprocs; i++) n += L->ch[i].state != CH_STARTING;
    return n;
}

/* 1 when every process that is not a server finished with status 0 (and there is one). */
static int job_finished(const Launcher *L) {
    int jobs = 0;
    for (int i = 0; i < L->pl.nprocs; i++) {
        if (L->pl.procs[i].server) continue;
        jobs++;
        const Child *c = &L->ch[i];
        if (c->state != CH_EXITED || !WIFEXITED(c->status) || WEXITSTATUS(c->status) != 0) return 0;
    }
    return jobs > 0;
}

static int supervise(Launcher *L) {
    double hb_every = PROC_HEARTBEAT_MS / 1000.0, liveness = PROC_LIVENESS_MS / 1000.0;
    double next_hb = msd_now();
    for (;;) {
        double now = msd_now();
        if (reap(L, 0) > 0) return stop_all(L, MSDPIPE_EXIT_FAILED);
        if (g_signal) {
            log_info("%s: stopping the pipeline", strsignal(g_signal));
            return stop_all(L, 128 + g_signal);
        }
        if (strcmp(L->phase, "starting") == 0) {
            if (count_ready(L) == L->pl.nprocs) {
                L->phase = "up";
                write_state(L);
                log_info("pipeline up: %d process%s (%s, run directory %s)", L->pl.nprocs, L->pl.nprocs == 1 ? "" : "es",
                         L->pl.name, L->rundir);
                if (L->pl.stdin_proc >= 0) {
                    lines_init(&L->lines, L->pl.procs[L->pl.stdin_proc].name);
                    L->stdin_used = 1;
                }
            } else if (now - L->t_start > L->pl.ready_timeout) {
                for (int i = 0; i < L->pl.nprocs; i++)
                    if (L->ch[i].state == CH_STARTING)
                        log_error("process %s (pid %d%s) not ready after %g s (ready_timeout)", L->pl.procs[i].name,
                                  (int)L->ch[i].pid, where(L, i), L->pl.ready_timeout);
                return stop_all(L, MSDPIPE_EXIT_FAILED);
            }
        }
        if (now >= next_hb) {
            for (int i = 0; i < L->pl.nprocs; i++)
                if (L->ch[i].state != CH_EXITED && L->ch[i].state != CH_WAITING) send_op(L, i, WIRE_OP_HEARTBEAT);
            next_hb = now + hb_every;
        }
        for (int i = 0; i < L->pl.nprocs; i++) {
            Child *c = &L->ch[i];
            const PipeProc *p = &L->pl.procs[i];
            int silent = c->state == CH_READY && now - c->last_heard > liveness;
            int late = c->state == CH_STARTING && strcmp(L->phase, "starting") != 0 && now - c->started > L->pl.ready_timeout;
            if ((silent || late) && !c->silenced) {
                if (silent) log_error("process %s (pid %d%s) went silent: nothing for %.1f s", p->name, (int)c->pid, where(L, i), now - c->last_heard);
                else log_error("process %s (pid %d%s) not ready after %g s (ready_timeout)", p->name, (int)c->pid, where(L, i), L->pl.ready_timeout);
                if (c->restarts >= p->restart) {
                    if (p->restart) log_error("process %s used all %d restarts (restart=%d)", p->name, c->restarts, p->restart);
                    return stop_all(L, MSDPIPE_EXIT_FAILED);
                }
                /* the restart policy takes over once it is reaped */
                c->silenced = 1;
                kill(-c->pid, SIGKILL);
                kill(c->pid, SIGKILL);
            }
            if (c->state == CH_WAITING && now >= c->restart_at) {
                char err[512];
                if (start_child(L, i, err, sizeof err) < 0) {
                    log_error("cannot restart %s: %s", p->name, err);
                    return stop_all(L, MSDPIPE_EXIT_FAILED);
                }
                log_warn("restarted %s: pid %d (restart %d of %d)", p->name, (int)c->pid, c->restarts, p->restart);
                write_state(L);
            }
        }
        if (job_finished(L)) {
            log_info("job finished: stopping the servers");
            return stop_all(L, 0);
        }
        if (L->stdin_used && !L->lines.open && lines_outstanding(&L->lines) == 0) {
            log_info("end of input, every line answered: stopping the pipeline");
            return stop_all(L, L->lines.errors ? MSDPIPE_EXIT_FAILED : 0);
        }
        if (L->stdin_used && L->lines.eof && now - L->lines.eof_at > L->pl.reply_timeout) {
            log_error("end of input: %d line%s still unanswered after %g s (reply_timeout)", lines_outstanding(&L->lines),
                      lines_outstanding(&L->lines) == 1 ? "" : "s", L->pl.reply_timeout);
            return stop_all(L, MSDPIPE_EXIT_FAILED);
        }
        zmq_pollitem_t items[3];
        int n = 0, zap_at = -1, in_at = -1;
        items[n++] = (zmq_pollitem_t){L->ctl, 0, ZMQ_POLLIN, 0};
        if (L->zap) { zap_at = n; items[n++] = (zmq_pollitem_t){L->zap, 0, ZMQ_POLLIN, 0}; }
        if (L->stdin_used && lines_want_input(&L->lines)) { in_at = n; items[n++] = (zmq_pollitem_t){NULL, 0, ZMQ_POLLIN, 0}; }
        int timeout = (int)((next_hb - msd_now()) * 1000) + 1;
        if (timeout > 50) timeout = 50;
        if (timeout < 0) timeout = 0;
        if (zmq_poll(items, n, timeout) < 0 && zmq_errno() != EINTR) {
            log_error("zmq_poll: %s", zmq_strerror(zmq_errno()));
            return stop_all(L, MSDPIPE_EXIT_FAILED);
        }
        if (zap_at >= 0 && (items[zap_at].revents & ZMQ_POLLIN)) curve_zap_handle(L->zap, &L->keys);
        if (handle_control(L) < 0) return stop_all(L, MSDPIPE_EXIT_FAILED);
        if (in_at >= 0 && (items[in_at].revents & (ZMQ_POLLIN | ZMQ_POLLERR))) {
            if (lines_read(&L->lines, L->ctl) < 0) return stop_all(L, MSDPIPE_EXIT_FAILED);
        } else if (L->stdin_used && L->lines.inlen && lines_pump(&L->lines, L->ctl) < 0) {
            return stop_all(L, MSDPIPE_EXIT_FAILED);
        }
    }
}

/* ---- after steps ----------------------------------------------------------------------- */

/* Run the after steps one by one (the job finished with status 0, every process is gone). The
 * first that fails ends the pipeline with 1; a signal stops the running step (SIGTERM, then
 * SIGKILL after stop_timeout or a second signal) and ends it with 128 + the signal. */
static int run_after(Launcher *L) {
    for (int k = 0; k < L->pl.nafter; k++) {
        const PipeProc *p = &L->pl.after[k];
        char **argv = plan_after_argv(&L->pl, k, L->o->bindir);
        char **envp = plan_after_env(&L->pl, k);
        log_info("after step %s (%d of %d): %s ...", p->name, k + 1, L->pl.nafter, argv[0]);
        L->phase = "after";
        write_state(L);
        pid_t parent = getpid();
        fflush(NULL);
        pid_t pid = fork_blocked();
        if (pid < 0) {
            log_error("after step %s: fork: %s", p->name, strerror(errno));
            plan_free_argv(argv);
            plan_free_argv(envp);
            return MSDPIPE_EXIT_FAILED;
        }
        if (pid == 0) {
            if (child_setup(parent) < 0) _exit(3);
            int in = open("/dev/null", O_RDONLY);
            if (in >= 0) dup2(in, 0);
            execve(argv[0], argv, envp);
            exec_failed("[msdpipe] ERROR exec failed for an after step\n");
        }
        plan_free_argv(argv);
        plan_free_argv(envp);
        double t0 = msd_now(), kill_at = 0;
        int seen = g_signals, sig = 0, st = 0;
        for (;;) {
            pid_t r = waitpid(pid, &st, WNOHANG);
            if (r == pid) break;
            if (r < 0 && errno != EINTR) { /* its status is lost: never count that as success */
                log_error("after step %s (pid %d): waitpid: %s (%s:%d)", p->name, (int)pid, strerror(errno),
                          L->pl.path, p->line);
                kill(-pid, SIGKILL);
                return MSDPIPE_EXIT_FAILED;
            }
            if (g_signals != seen) {
                if (!sig) {
                    sig = g_signal;
                    log_info("%s: stopping the after step %s", strsignal(sig), p->name);
                    signal_child(pid, SIGTERM);
                    kill_at = msd_now() + L->pl.stop_timeout;
                    seen = g_signals;
                } else {
                    kill_at = msd_now();
                }
            }
            if (kill_at > 0 && msd_now() >= kill_at) {
                log_warn("after step %s (pid %d) did not stop; killing it", p->name, (int)pid);
                kill(-pid, SIGKILL);
                kill_at = msd_now() + 3600;
            }
            sleep_ms(20);
        }
        if (sig) return 128 + sig;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            char how[96];
            describe_status(st, how, sizeof how);
            log_error("after step %s %s (%s:%d)", p->name, how, L->pl.path, p->line);
            return MSDPIPE_EXIT_FAILED;
        }
        log_info("after step %s done (%.1f s)", p->name, msd_now() - t0);
    }
    return 0;
}

int cmd_up(Options *o) {
    if (getenv("MSDPIPE_VERBOSE")) log_set_level(LOG_LVL_DEBUG);
    Launcher *L = msd_calloc(1, sizeof *L);
    L->o = o;
    L->phase = "starting";
    int rc = load_pipeline(o, &L->pl);
    if (rc) { free(L); return rc; }
    char err[2048], base[PATH_MAX];
    if (o->slurm && !getenv("SLURM_JOB_ID")) { /* no allocation: request one, run there (slurm.c) */
        rc = slurm_self_allocate(o, &L->pl);
        pipeline_free(&L->pl);
        free(L);
        return rc;
    }
    if (getenv("MSDPIPE_SALLOC_MARK")) { /* inside msdpipe's own allocation: tell its parent it got here */
        unlink(getenv("MSDPIPE_SALLOC_MARK"));
        unsetenv("MSDPIPE_SALLOC_MARK");
    }
    if (o->slurm) {
        if (slurm_place(&L->pl, err, sizeof err) < 0) {
            log_error("%s", err);
            pipeline_free(&L->pl);
            free(L);
            return MSDPIPE_EXIT_FAILED;
        }
        pipeline_share_threads(&L->pl, L->pl.cores); /* every process is on a node now */
    }
    rc = MSDPIPE_EXIT_FAILED;
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    L->ch = msd_calloc((size_t)L->pl.nprocs, sizeof *L->ch);
    if (rundir_base(o->run_base, base, sizeof base, err, sizeof err) < 0 ||
        rundir_create(base, L->pl.name, L->rundir, sizeof L->rundir, err, sizeof err) < 0) {
        log_error("%s", err);
        goto out_free;
    }
    if (pipeline_plan(&L->pl, L->rundir, pick_port, L, err, sizeof err) < 0) {
        log_error("%s", err);
        goto out_dir;
    }
    for (int i = 0; i < L->pl.nprocs; i++) L->have_keys |= plan_needs_keys(&L->pl, i);
    snprintf(L->keyfile, sizeof L->keyfile, "%s/curve.keys", L->rundir);
    if (L->have_keys && curve_make_keys(&L->keys, L->keyfile, err, sizeof err) < 0) {
        log_error("%s", err);
        goto out_dir;
    }
    if (open_control(L, err, sizeof err) < 0) {
        log_error("%s", err);
        goto out_zmq;
    }
    L->t_start = msd_now();
    L->started_wall = time(NULL);
    write_state(L);
    for (int i = 0; i < L->pl.nprocs; i++) {
        if (start_child(L, i, err, sizeof err) < 0) {
            log_error("cannot start %s: %s", L->pl.procs[i].name, err);
            rc = stop_all(L, MSDPIPE_EXIT_FAILED);
            goto out_zmq;
        }
        L->ch[i].last_heard = msd_now();
    }
    write_state(L);
    rc = supervise(L);
    if (rc == 0 && L->pl.nafter > 0) rc = run_after(L);
    if (rc == 0) log_info("pipeline %s finished", L->pl.name);
    else if (rc > 128) log_info("pipeline %s stopped", L->pl.name);
    else log_error("pipeline %s failed", L->pl.name);
out_zmq:
    wire_log_flush();
    if (L->stdin_used) lines_free(&L->lines);
    if (L->zap) zmq_close(L->zap);
    if (L->ctl) zmq_close(L->ctl);
    if (L->zctx) zmq_ctx_term(L->zctx);
out_dir:
    rundir_remove(L->rundir);
out_free:
    pipeline_free(&L->pl);
    free(L->ch);
    free(L);
    return rc;
}
