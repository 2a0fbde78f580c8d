/* proc.c: the process skeleton (see proc.h): command line, signals, sockets, CurveZMQ with a
 * ZAP handler thread, and the control protocol with the launcher (READY, HEARTBEAT, STOP,
 * LINE, DONE, liveness).
 *
 * Not here: what a process does with its sockets (procs/ *), the launcher's side (the
 * launcher), message encoding (wire.c). */
#include "proc.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "log.h"
#include "parallel.h"

static volatile sig_atomic_t g_signal;
/* the process's own argv (p->argv) stays reachable from here until proc_finish, so a process
 * that returns from main with a usage error before proc_finish leaks nothing */
static char **g_own_argv;

static void proc_on_signal(int sig) { g_signal = sig; }

/* ---- CurveZMQ -------------------------------------------------------------------------- */

typedef struct ProcCurve {
    char server_public[41], server_secret[41], client_public[41], client_secret[41];
    uint8_t client_public_bin[32];
    void *zap;             /* REP on inproc://zeromq.zap.01, owned by the thread */
    pthread_t thread;
    int thread_started;
} ProcCurve;

static void proc_usage_fail(const char *fmt, const char *a, const char *b) {
    char msg[1024];
    snprintf(msg, sizeof msg, fmt, a, b);
    exit(msd_fail(2, "%s (try --help)", msg));
}

/* Read the launcher's key file: lines "server-public Z85" ... ; '#' comments and blank lines
 * are skipped. The file must not be readable by group or others. */
static void proc_curve_load(ProcCurve *c, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) proc_usage_fail("--curve-keys %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077))
        proc_usage_fail("--curve-keys %s: %s", path, "readable by group or others; it must be mode 0600");
    char line[256];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char key[64], val[64];
        char *s = line;
        while (*s == ' ' || *s == '\t') s++;
        if (*s == '#' || *s == '\n' || *s == 0) continue;
        if (sscanf(s, "%63s %63s", key, val) != 2 || strlen(val) != 40) {
            char where[300];
            snprintf(where, sizeof where, "%s:%d", path, lineno);
            proc_usage_fail("--curve-keys %s: %s", where, "expected \"NAME Z85KEY\" with a 40-character Z85 key");
        }
        uint8_t bin[32];
        if (!zmq_z85_decode(bin, val)) proc_usage_fail("--curve-keys %s: %s is not valid Z85", path, key);
        char *dst = !strcmp(key, "server-public") ? c->server_public : !strcmp(key, "server-secret") ? c->server_secret
                  : !strcmp(key, "client-public") ? c->client_public : !strcmp(key, "client-secret") ? c->client_secret
                  : NULL;
        if (!dst) proc_usage_fail("--curve-keys %s: unknown key name \"%s\"", path, key);
        memcpy(dst, val, 41);
        if (dst == c->client_public) memcpy(c->client_public_bin, bin, 32);
    }
    fclose(f);
    if (!c->server_public[0] || !c->server_secret[0] || !c->client_public[0] || !c->client_secret[0])
        proc_usage_fail("--curve-keys %s: %s", path, "needs server-public, server-secret, client-public and client-secret");
}

static int zap_frame_is(zmq_msg_t *m, const char *s) {
    return zmq_msg_size(m) == strlen(s) && memcmp(zmq_msg_data(m), s, strlen(s)) == 0;
}

/* ZAP handler (RFC 27): admits a CURVE client only with the run's client-public key. */
static void *proc_zap_main(void *arg) {
    ProcCurve *c = arg;
    for (;;) {
        zmq_msg_t fr[8];
        int n = 0, more = 1, failed = 0;
        while (more) {
            zmq_msg_t part;
            zmq_msg_init(&part);
            if (zmq_msg_recv(&part, c->zap, 0) < 0) {
                zmq_msg_close(&part);
                if (zmq_errno() == EINTR) continue;
                failed = 1;
                break;
            }
            more = zmq_msg_more(&part);
            if (n < 8) { zmq_msg_init(&fr[n]); zmq_msg_move(&fr[n], &part); n++; }
            zmq_msg_close(&part);
        }
        if (failed) { for (int i = 0; i < n; i++) zmq_msg_close(&fr[i]); break; } /* ETERM: shutting down */
        int ok = n >= 7 && zap_frame_is(&fr[0], "1.0") && zap_frame_is(&fr[5], "CURVE") &&
                 zmq_msg_size(&fr[6]) == 32 && memcmp(zmq_msg_data(&fr[6]), c->client_public_bin, 32) == 0;
        if (!ok) log_warn("CurveZMQ: refused a client (wrong or missing client key)");
        const char *code = ok ? "200" : "400", *text = ok ? "OK" : "client key not admitted";
        if (n >= 2) {
            zmq_send(c->zap, "1.0", 3, ZMQ_SNDMORE);
            zmq_send(c->zap, zmq_msg_data(&fr[1]), zmq_msg_size(&fr[1]), ZMQ_SNDMORE);
            zmq_send(c->zap, code, 3, ZMQ_SNDMORE);
            zmq_send(c->zap, text, strlen(text), ZMQ_SNDMORE);
            zmq_send(c->zap, "", 0, ZMQ_SNDMORE);
            zmq_send(c->zap, "", 0, 0);
        }
        for (int i = 0; i < n; i++) zmq_msg_close(&fr[i]);
    }
    int linger = 0;
    zmq_setsockopt(c->zap, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(c->zap);
    return NULL;
}

static int is_tcp(const char *ep) { return strncmp(ep, "tcp://", 6) == 0; }

/* ---- sockets --------------------------------------------------------------------------- */

static void proc_sockopt(void *s, int opt, int v, const char *what) {
    if (zmq_setsockopt(s, opt, &v, sizeof v) != 0) msd_die("zmq_setsockopt(%s): %s", what, zmq_strerror(zmq_errno()));
}

static void *proc_socket(Proc *p, int type, int curve_server, int curve_client) {
    void *s = zmq_socket(p->zctx, type);
    if (!s) msd_die("zmq_socket: %s", zmq_strerror(zmq_errno()));
    proc_sockopt(s, ZMQ_SNDHWM, PROC_HWM, "SNDHWM");
    proc_sockopt(s, ZMQ_RCVHWM, type == ZMQ_ROUTER ? PROC_SERVE_RCVHWM : PROC_HWM, "RCVHWM");
    proc_sockopt(s, ZMQ_LINGER, PROC_LINGER_MS, "LINGER");
    int64_t maxmsg = wire_max_frame(); /* per frame: a peer sending a larger one is disconnected */
    if (zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) != 0)
        msd_die("zmq_setsockopt(MAXMSGSIZE): %s", zmq_strerror(zmq_errno()));
    if (type == ZMQ_ROUTER) proc_sockopt(s, ZMQ_ROUTER_MANDATORY, 1, "ROUTER_MANDATORY");
    if (type == ZMQ_DEALER && zmq_setsockopt(s, ZMQ_ROUTING_ID, p->name, strlen(p->name)) != 0)
        msd_die("zmq_setsockopt(ROUTING_ID): %s", zmq_strerror(zmq_errno()));
    ProcCurve *c = p->curve;
    if (curve_server) {
        proc_sockopt(s, ZMQ_CURVE_SERVER, 1, "CURVE_SERVER");
        if (zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, c->server_secret, 40) != 0 ||
            zmq_setsockopt(s, ZMQ_ZAP_DOMAIN, "msdpipe", 7) != 0)
            msd_die("CurveZMQ server options: %s", zmq_strerror(zmq_errno()));
    }
    if (curve_client) {
        if (zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, c->server_public, 40) != 0 ||
            zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, c->client_public, 40) != 0 ||
            zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, c->client_secret, 40) != 0)
            msd_die("CurveZMQ client options: %s", zmq_strerror(zmq_errno()));
    }
    return s;
}

/* ---- command line ---------------------------------------------------------------------- */

static int valid_name(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n >= 64) return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
              ch == '_' || ch == '-'))
            return 0;
    }
    return 1;
}

static void proc_add_endpoint(Proc *p, ProcEndpoint *eps, int *n, const char *opt, const char *arg) {
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg || !eq[1]) proc_usage_fail("%s %s: expected NAME=ENDPOINT", opt, arg);
    if (*n >= PROC_MAX_ENDPOINTS) proc_usage_fail("%s %s: too many endpoints", opt, arg);
    ProcEndpoint *e = &eps[*n];
    size_t nl = (size_t)(eq - arg);
    if (nl >= sizeof e->name || strlen(eq + 1) >= sizeof e->endpoint) proc_usage_fail("%s %s: name or endpoint too long", opt, arg);
    memcpy(e->name, arg, nl);
    e->name[nl] = 0;
    if (!valid_name(e->name)) proc_usage_fail("%s %s: the name may hold only letters, digits, '.', '_' and '-'", opt, arg);
    for (int i = 0; i < *n; i++)
        if (!strcmp(eps[i].name, e->name)) proc_usage_fail("%s %s: name given twice", opt, arg);
    snprintf(e->endpoint, sizeof e->endpoint, "%s", eq + 1);
    if (strncmp(e->endpoint, "tcp://", 6) && strncmp(e->endpoint, "ipc://", 6) && strncmp(e->endpoint, "inproc://", 9))
        proc_usage_fail("%s %s: the endpoint must start with tcp://, ipc:// or inproc://", opt, arg);
    (*n)++;
}

static void proc_print_help(const char *role, const ProcDesc *d) {
    printf("usage: msd-%s [--mode MODE] [MODE options] [skeleton options]\n", role);
    if (d && d->about) printf("%s\n", d->about);
    for (const ProcMode *m = d ? d->modes : NULL; m && m->name; m++) {
        printf("\n--mode %s%s%s%s:\n    ", m->name, m == d->modes ? " (default)" : "", m->alias ? ", or " : "",
               m->alias ? m->alias : "");
        for (const char *h = m->help; *h; h++) printf(*h == '\n' ? "\n    " : "%c", *h);
        printf("\n");
        args_usage(stdout, m->args);
    }
    if (d && d->notes) printf("\n%s", d->notes);
    printf("\nskeleton options (every msdpipe process):\n"
           "  --name NAME              name in the pipeline: log prefix and routing id (default %s)\n"
           "  --control ENDPOINT       the launcher's control socket; absent: run standalone\n"
           "  --bind NAME=ENDPOINT     serve on ENDPOINT (ROUTER); repeatable\n"
           "  --connect NAME=ENDPOINT  talk to the peer at ENDPOINT (DEALER); repeatable\n"
           "  --gpu N                  run networks on GPU N (needs a CUDA build)\n"
           "  --curve-keys FILE        CurveZMQ keys (mode 0600) for tcp:// endpoints\n"
           "  --liveness-ms MS         exit (status 3) when the launcher is silent this long (default %d)\n"
           "  --help                   this text\n"
           "environment: MSD_THREADS=N (1..64) CPU threads where a mode's --threads is absent or 0\n"
           "  (msdpipe sets it: threads= or a share of the cores, docs/PIPELINES.md \"Threads\")\n",
           role, PROC_LIVENESS_MS);
}

/* "--opt VALUE" or "--opt=VALUE": returns the value and advances *i, or NULL if argv[*i] is
 * not this option. */
static const char *opt_value(int argc, char **argv, int *i, const char *opt) {
    size_t n = strlen(opt);
    if (strncmp(argv[*i], opt, n) != 0) return NULL;
    if (argv[*i][n] == '=') return argv[*i] + n + 1;
    if (argv[*i][n] != 0) return NULL;
    if (*i + 1 >= argc) proc_usage_fail("%s: missing value%s", opt, "");
    (*i)++;
    return argv[*i];
}

static int parse_int(const char *opt, const char *s, int lo, int hi) {
    int v = 0;
    if (args_num_int(opt, s, lo, hi, &v)) exit(2);
    return v;
}

/* ---- start ---------------------------------------------------------------------------- */

void proc_start(Proc *p, const char *role, const ProcDesc *d, int argc, char **argv) {
    memset(p, 0, sizeof *p);
    p->role = role;
    p->gpu = -1;
    p->heartbeat_ms = PROC_HEARTBEAT_MS;
    p->liveness_ms = PROC_LIVENESS_MS;
    snprintf(p->name, sizeof p->name, "%s", role);
    log_set_name(p->name);
    const char *control = NULL, *keys = NULL;
    p->argv = msd_calloc((size_t)argc + 1, sizeof *p->argv);
    g_own_argv = p->argv;
    p->argv[p->argc++] = argv[0];
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { proc_print_help(role, d); exit(0); }
        else if ((v = opt_value(argc, argv, &i, "--name"))) {
            if (!valid_name(v)) proc_usage_fail("--name %s: %s", v, "use 1-63 letters, digits, '.', '_' or '-'");
            snprintf(p->name, sizeof p->name, "%s", v);
            log_set_name(p->name);
        } else if ((v = opt_value(argc, argv, &i, "--control"))) control = v;
        else if ((v = opt_value(argc, argv, &i, "--bind"))) proc_add_endpoint(p, p->binds, &p->nbind, "--bind", v);
        else if ((v = opt_value(argc, argv, &i, "--connect"))) proc_add_endpoint(p, p->connects, &p->nconnect, "--connect", v);
        else if ((v = opt_value(argc, argv, &i, "--gpu"))) p->gpu = parse_int("--gpu", v, 0, 255);
        else if ((v = opt_value(argc, argv, &i, "--curve-keys"))) keys = v;
        else if ((v = opt_value(argc, argv, &i, "--liveness-ms"))) p->liveness_ms = parse_int("--liveness-ms", v, 10, 86400000);
        else p->argv[p->argc++] = argv[i];
    }
    p->argv[p->argc] = NULL;
#ifndef MSD_HAVE_CUDA
    if (p->gpu >= 0) {
        char g[16];
        snprintf(g, sizeof g, "%d", p->gpu);
        proc_usage_fail("--gpu %s: %s", g, "this build has no CUDA (rebuild with nvcc available, CUDA=1); leave out --gpu to run on the CPU");
    }
#else
    if (p->gpu >= 0) {
        char err[256];
        if (!proc_gpu(p, err, sizeof err)) exit(msd_fail(1, "--gpu %d: %s", p->gpu, err));
    }
#endif

    /* signals: a flag, and no SA_RESTART so blocking calls return EINTR and loops notice */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = proc_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    pid_t parent = getppid();
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) g_signal = SIGTERM; /* the parent died before prctl took effect */

    int need_curve = control && is_tcp(control);
    for (int i = 0; i < p->nbind; i++) need_curve |= is_tcp(p->binds[i].endpoint);
    for (int i = 0; i < p->nconnect; i++) need_curve |= is_tcp(p->connects[i].endpoint);
    if (need_curve && !keys) proc_usage_fail("a tcp:// endpoint needs --curve-keys FILE%s%s", "", "");
    if (need_curve && !zmq_has("curve")) exit(msd_fail(1, "this libzmq has no CURVE support; tcp:// endpoints are refused"));

    const char *frame_env = getenv(WIRE_MAX_FRAME_ENV);
    int64_t frame_limit;
    if (frame_env && wire_parse_frame_limit(frame_env, &frame_limit) != 0)
        exit(msd_fail(2, "%s=%s: expected a byte count from 1K to 16G, like 134217728 or 128M", WIRE_MAX_FRAME_ENV,
                      frame_env));

    const char *threads_env = getenv(PARALLEL_THREADS_ENV); /* the pool's width (msdpipe: threads=) */
    int threads;
    if (threads_env && parallel_parse_threads(threads_env, &threads) != 0)
        exit(msd_fail(2, "%s=%s: expected a thread count 1..%d", PARALLEL_THREADS_ENV, threads_env, PARALLEL_MAX_THREADS));

    p->zctx = wire_ctx_new();
    if (!p->zctx) msd_die("zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
    if (need_curve) {
        ProcCurve *c = msd_calloc(1, sizeof *c);
        proc_curve_load(c, keys);
        p->curve = c;
        c->zap = zmq_socket(p->zctx, ZMQ_REP);
        if (!c->zap || zmq_bind(c->zap, "inproc://zeromq.zap.01") != 0)
            msd_die("ZAP handler: bind inproc://zeromq.zap.01: %s", zmq_strerror(zmq_errno()));
        if (pthread_create(&c->thread, NULL, proc_zap_main, c) != 0) msd_die("pthread_create (ZAP handler) failed");
        c->thread_started = 1;
    }
    for (int i = 0; i < p->nbind; i++) {
        ProcEndpoint *e = &p->binds[i];
        int tcp = is_tcp(e->endpoint);
        e->sock = proc_socket(p, ZMQ_ROUTER, tcp, 0);
        if (zmq_bind(e->sock, e->endpoint) != 0)
            msd_die("--bind %s=%s: %s%s", e->name, e->endpoint, zmq_strerror(zmq_errno()),
                    zmq_errno() == EADDRINUSE ? " (another process serves there)" : "");
        size_t len = sizeof e->endpoint;
        zmq_getsockopt(e->sock, ZMQ_LAST_ENDPOINT, e->endpoint, &len); /* resolves tcp://...:* */
        log_debug("serving %s on %s", e->name, e->endpoint);
    }
    for (int i = 0; i < p->nconnect; i++) {
        ProcEndpoint *e = &p->connects[i];
        e->sock = proc_socket(p, ZMQ_DEALER, 0, is_tcp(e->endpoint));
        if (zmq_connect(e->sock, e->endpoint) != 0)
            msd_die("--connect %s=%s: %s", e->name, e->endpoint, zmq_strerror(zmq_errno()));
    }
    if (control) {
        p->control = proc_socket(p, ZMQ_DEALER, 0, is_tcp(control));
        if (zmq_connect(p->control, control) != 0) msd_die("--control %s: %s", control, zmq_strerror(zmq_errno()));
    }
    p->last_heard = msd_now();
    p->last_sent_hb = p->last_heard;
}

long proc_name_index(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot || dot[1] < '0' || dot[1] > '9') return -1;
    char *end;
    errno = 0;
    long v = strtol(dot + 1, &end, 10);
    return *end || errno ? -1 : v;
}

int proc_main(const ProcDesc *d, int argc, char **argv) {
    static Proc p;
    proc_start(&p, d->role, d, argc, argv);
    const char *name = args_mode(p.argc, p.argv, NULL);
    const ProcMode *m = NULL;
    for (const ProcMode *q = d->modes; q->name && !name && !m; q++)
        for (int i = 1; q->alias && i < p.argc && !m; i++)
            if (!strcmp(p.argv[i], q->alias)) m = q;
    if (!m && !name) m = d->modes;
    for (const ProcMode *q = d->modes; q->name && !m; q++)
        if (!strcmp(q->name, name)) m = q;
    if (!m) {
        char list[512];
        size_t n = 0;
        int count = 0;
        for (const ProcMode *q = d->modes; q->name; q++) count++;
        for (int i = 0; i < count && n < sizeof list; i++)
            n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", i == 0 ? "" : i + 1 < count ? ", " : " or ",
                                  d->modes[i].name);
        return msd_fail(2, "--mode %s: expected %s", name, list);
    }
    if (m->cpu_only && p.gpu >= 0)
        return msd_fail(2, "--gpu %d: %s runs on the CPU only; leave out --gpu (gpu= in the pipeline)", p.gpu,
                        m->cpu_only);
    char what[96];
    snprintf(what, sizeof what, "--mode %s", m->name);
    const char *picked = NULL; /* --mode itself was read above */
    const ArgSpec table[] = {ARG_STR("--mode", &picked, "MODE", NULL), ARG_INCLUDE(m->args), ARG_END_};
    if (args_parse(p.argc, p.argv, 1, table, what)) return 2;
    return m->run(&p);
}

#ifdef MSD_HAVE_CUDA
/* A weak reference: proc.o alone does not pull the backend (and CUDA) into every binary; a
 * process that runs networks links backend.o anyway, and then --gpu resolves here. */
#pragma weak backend_get
#endif

const struct Backend *proc_gpu(Proc *p, char *err, size_t errlen) {
    if (p->gpu < 0) { msd_errf(err, errlen, "no --gpu given"); return NULL; }
#ifdef MSD_HAVE_CUDA
    if (!backend_get) { msd_errf(err, errlen, "msd-%s runs no networks and takes no GPU", p->role); return NULL; }
    Device d = {DEVICE_CUDA, p->gpu};
    return backend_get(d, err, errlen);
#else
    msd_errf(err, errlen, "this build has no CUDA");
    return NULL;
#endif
}

/* ---- control protocol ------------------------------------------------------------------ */

static int proc_send_control(Proc *p, WireMsg *m) {
    if (!p->control) return 0;
    char err[256];
    int rc = wire_send(p->control, m, 0, 200, err, sizeof err);
    if (rc != WIRE_OK) log_warn("to the launcher (%s): %s", wire_op_name(m->op), err);
    else p->last_sent_hb = msd_now();
    return rc;
}

void proc_ready(Proc *p) {
    if (!p->control) return;
    WireMsg m;
    wire_msg_init(&m, WIRE_OP_READY, 0);
    /* one u8 tensor "bind.NAME" per served endpoint, resolved (an ephemeral tcp port shows its number) */
    for (int i = 0; i < p->nbind && m.ntensors < WIRE_MAX_TENSORS; i++) {
        char tname[WIRE_MAX_NAME];
        snprintf(tname, sizeof tname, "bind.%s", p->binds[i].name);
        int64_t n = (int64_t)strlen(p->binds[i].endpoint);
        wire_msg_add(&m, tname, WIRE_U8, 1, &n, p->binds[i].endpoint);
    }
    proc_send_control(p, &m);
}

void proc_done(Proc *p) {
    if (!p->control) return;
    WireMsg m;
    wire_msg_init(&m, WIRE_OP_DONE, 0);
    proc_send_control(p, &m);
}

int proc_reply_line_as(Proc *p, const WireMsg *req, const char *text, int32_t status, const char *error_line) {
    if (!p->control) return 0;
    WireMsg m;
    wire_reply_init(&m, req, WIRE_OP_LINE, status);
    int64_t n = (int64_t)strlen(text);
    wire_msg_add(&m, "text", WIRE_U8, 1, &n, text);
    int64_t ne = error_line ? (int64_t)strlen(error_line) : 0;
    if (ne) wire_msg_add(&m, "error_line", WIRE_U8, 1, &ne, error_line);
    if (status != WIRE_STATUS_OK) snprintf(m.error, sizeof m.error, "%s", text);
    return proc_send_control(p, &m);
}

int proc_reply_line(Proc *p, const WireMsg *req, const char *text, int32_t status) {
    return proc_reply_line_as(p, req, text, status, NULL);
}

void *proc_bound(Proc *p, const char *name) {
    for (int i = 0; i < p->nbind; i++) if (!strcmp(p->binds[i].name, name)) return p->binds[i].sock;
    return NULL;
}

void *proc_connected(Proc *p, const char *name) {
    for (int i = 0; i < p->nconnect; i++) if (!strcmp(p->connects[i].name, name)) return p->connects[i].sock;
    return NULL;
}

int proc_should_stop(Proc *p) { return g_signal != 0 || p->stop_requested || p->launcher_silent; }

/* Handle one message from the launcher, received into *m. Returns 1 when it is a LINE that
 * the caller takes (m stays open), 0 when one was handled (m closed), -1 when none was there. */
static int proc_handle_control(Proc *p, WireMsg *m, int take_line) {
    char err[256];
    int rc = wire_recv(p->control, m, 0, err, sizeof err);
    if (rc == WIRE_EAGAIN) return -1;
    if (rc == WIRE_ESOCKET) { log_warn("control socket: %s", err); return -1; }
    p->last_heard = msd_now();
    if (rc == WIRE_EMALFORMED) {
        wire_log_limited(WIRE_LOG_MALFORMED, "the launcher", "%s", err);
        wire_send_error(p->control, m, m->reject_status, err);
        return 0;
    }
    WireMsg rep;
    switch (m->op) {
    case WIRE_OP_HEARTBEAT:
        wire_reply_init(&rep, m, WIRE_OP_HEARTBEAT, WIRE_STATUS_OK);
        proc_send_control(p, &rep);
        break;
    case WIRE_OP_STOP:
        log_info("stop requested by the launcher");
        p->stop_requested = 1;
        break;
    case WIRE_OP_LINE:
        if (take_line) return 1;
        wire_send_error(p->control, m, WIRE_STATUS_UNKNOWN_OP, "this process takes no input lines");
        break;
    default:
        log_warn("unexpected %s message from the launcher (ignored)", wire_op_name(m->op));
        break;
    }
    wire_msg_close(m);
    return 0;
}

/* Handle every message the launcher has queued (up to 2 x PROC_HWM, the most it can have
 * queued plus what arrives meanwhile), so a STOP never waits behind heartbeats; stops early at
 * a STOP, or at a LINE the caller takes (1, in *m; the rest stay queued for the next call). */
static int proc_drain_control(Proc *p, WireMsg *m, int take_line) {
    for (int k = 0; k < 2 * PROC_HWM && !proc_should_stop(p); k++) {
        int rc = proc_handle_control(p, m, take_line);
        if (rc != 0) return rc == 1;
    }
    return 0;
}

int proc_poll(Proc *p, void **socks, int nsocks, int timeout_ms, WireMsg *line) {
    MSD_CHECK(nsocks >= 0 && nsocks <= 31);
    zmq_pollitem_t items[32];
    double deadline = timeout_ms < 0 ? -1.0 : msd_now() + timeout_ms / 1000.0;
    for (;;) {
        if (proc_should_stop(p)) return 0;
        int n = 0;
        for (int i = 0; i < nsocks; i++) items[n++] = (zmq_pollitem_t){socks[i], 0, ZMQ_POLLIN, 0};
        if (p->control) items[n++] = (zmq_pollitem_t){p->control, 0, ZMQ_POLLIN, 0};
        double now = msd_now();
        double wait = deadline < 0 ? 1e9 : deadline - now;
        if (p->control) {
            double live = p->last_heard + p->liveness_ms / 1000.0 - now;
            if (live < wait) wait = live;
        }
        int wait_ms = wait <= 0 ? 0 : (int)(wait * 1000.0) + 1;
        int rc = zmq_poll(items, n, wait_ms);
        if (rc < 0) {
            if (zmq_errno() == EINTR) continue;
            if (zmq_errno() == ETERM) { p->stop_requested = 1; return 0; }
            msd_die("zmq_poll: %s", zmq_strerror(zmq_errno()));
        }
        int mask = 0;
        for (int i = 0; i < nsocks; i++) if (items[i].revents & ZMQ_POLLIN) mask |= 1 << i;
        if (p->control && (items[nsocks].revents & ZMQ_POLLIN)) {
            WireMsg local;
            WireMsg *m = line ? line : &local;
            if (proc_drain_control(p, m, line != NULL)) mask |= PROC_POLL_LINE;
        }
        if (p->control && msd_now() - p->last_heard > p->liveness_ms / 1000.0) {
            log_error("the launcher has been silent for %d ms; exiting", p->liveness_ms);
            p->launcher_silent = 1;
            if (mask & PROC_POLL_LINE) wire_msg_close(line);
            return 0;
        }
        if (mask) return mask;
        if (deadline >= 0 && msd_now() >= deadline) return 0;
    }
}

/* ---- keepalive: a helper thread serves the control socket during long computations ---- */

typedef struct ProcKeepalive {
    Proc *p;
    pthread_t thread;
    int wake[2];           /* pipe: proc_keepalive_end writes a byte to stop the thread */
    int active;
} ProcKeepalive;

static void *proc_keepalive_main(void *arg) {
    ProcKeepalive *k = arg;
    Proc *p = k->p;
    while (!p->launcher_silent) {
        zmq_pollitem_t it[2] = {{p->control, 0, ZMQ_POLLIN, 0}, {NULL, k->wake[0], ZMQ_POLLIN, 0}};
        int rc = zmq_poll(it, 2, 100);
        if (rc < 0) {
            if (zmq_errno() == EINTR) continue;
            break; /* ETERM: the context is going away */
        }
        if (it[1].revents & ZMQ_POLLIN) break;
        if (it[0].revents & ZMQ_POLLIN) {
            WireMsg m;
            if (proc_drain_control(p, &m, 1)) {
                proc_reply_line(p, &m, "busy computing; this process takes no input lines now", WIRE_STATUS_BUSY);
                wire_msg_close(&m);
            }
        }
        if (msd_now() - p->last_heard > p->liveness_ms / 1000.0) {
            log_error("the launcher has been silent for %d ms; exiting", p->liveness_ms);
            p->launcher_silent = 1;
        }
    }
    return NULL;
}

void proc_keepalive_begin(Proc *p) {
    if (!p->control) return;
    if (!p->keepalive) {
        p->keepalive = msd_calloc(1, sizeof *p->keepalive);
        if (pipe(p->keepalive->wake) != 0) msd_die("pipe (keepalive): %s", strerror(errno));
    }
    ProcKeepalive *k = p->keepalive;
    MSD_CHECK(!k->active);
    k->p = p;
    if (pthread_create(&k->thread, NULL, proc_keepalive_main, k) != 0) msd_die("pthread_create (keepalive) failed");
    k->active = 1;
}

void proc_keepalive_end(Proc *p) {
    ProcKeepalive *k = p->keepalive;
    if (!p->control || !k || !k->active) return;
    char c = 1;
    while (write(k->wake[1], &c, 1) < 0 && errno == EINTR) {}
    pthread_join(k->thread, NULL);
    while (read(k->wake[0], &c, 1) < 0 && errno == EINTR) {}
    k->active = 0;
}

int proc_end_job(Proc *p, int rc, const char *err) {
    if (rc == 0) {
        proc_done(p);
        return proc_finish(p);
    }
    int zero = 0; /* requests still queued to a failed peer need not go out */
    for (int i = 0; i < p->nconnect; i++)
        if (p->connects[i].sock) zmq_setsockopt(p->connects[i].sock, ZMQ_LINGER, &zero, sizeof zero);
    int st = proc_finish(p);
    if (rc > 0) return st;
    if (st == 0 && !proc_should_stop(p)) return msd_fail(1, "%s", err);
    if (st == 0) log_info("%s", err); /* a signal or STOP: a clean stop */
    return st;
}

int proc_finish(Proc *p) {
    proc_keepalive_end(p);
    wire_log_flush();
    if (p->keepalive) {
        close(p->keepalive->wake[0]);
        close(p->keepalive->wake[1]);
        free(p->keepalive);
        p->keepalive = NULL;
    }
    for (int i = 0; i < p->nbind; i++) if (p->binds[i].sock) zmq_close(p->binds[i].sock);
    for (int i = 0; i < p->nconnect; i++) if (p->connects[i].sock) zmq_close(p->connects[i].sock);
    if (p->control) {
        int linger = p->launcher_silent ? 0 : PROC_LINGER_MS;
        zmq_setsockopt(p->control, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(p->control);
    }
    p->control = NULL;
    for (int i = 0; i < p->nbind; i++) p->binds[i].sock = NULL;
    for (int i = 0; i < p->nconnect; i++) p->connects[i].sock = NULL;
    if (p->zctx) {
        if (p->curve && p->curve->thread_started) {
            zmq_ctx_shutdown(p->zctx); /* the ZAP thread's blocking recv returns ETERM */
            pthread_join(p->curve->thread, NULL);
        }
        while (zmq_ctx_term(p->zctx) != 0 && zmq_errno() == EINTR) {}
        p->zctx = NULL;
    }
    free(p->curve);
    p->curve = NULL;
    if (g_own_argv == p->argv) g_own_argv = NULL;
    free(p->argv);
    p->argv = NULL;
    if (p->launcher_silent) return 3;
    if (g_signal) log_info("stopping on signal %d", (int)g_signal);
    return 0;
}
