/* slurm.c: `msdpipe up --slurm` (docs/SCALE.md): inside a Slurm allocation, the pipeline's
 * hosts become the allocation's nodes and every process is placed on one; supervise.c then
 * starts each as a job step through plan_remote_argv (srun ... --nodelist=NODE sh -c '...',
 * the key file on the step's stdin, exactly as the ssh path), and cancels this launcher's
 * steps (slurm_cancel_steps) when it stops them.
 *
 * Placement rule: host=NODE where the file gives host=NAME (NAME must be a node of the
 * allocation; a `host NAME` line's bindir= and ports= still apply there); otherwise a student or
 * critic with replica index k goes on node k mod N (so student.k and its critic.k share a node
 * and talk over ipc), every other process (teacher, data, router) on the first node.
 *
 * Outside an allocation (slurm_self_allocate) it asks for one: salloc runs this msdpipe again
 * inside it, with the same arguments, and this one stays its parent (signals, exit status).
 *
 * Not here: command lines (plan.c), starting and stopping (supervise.c). */
#include "msdpipe.h"

#include "log.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Run argv, collect its stdout into out (NUL-terminated, at most cap-1 bytes), at most
 * `seconds`. Returns its exit status, or -1 with err (not started, killed for time). */
static int run_capture(char *const argv[], char *out, size_t cap, double seconds, char *err, size_t errlen) {
    int fd[2];
    if (pipe(fd) != 0) return msd_errf(err, errlen, "pipe: %s", strerror(errno));
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(fd[0]);
        close(fd[1]);
        return msd_errf(err, errlen, "fork: %s", strerror(e));
    }
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        execvp(argv[0], argv);
        fprintf(stderr, "[msdpipe] ERROR cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(fd[1]);
    size_t n = 0;
    double end = msd_now() + seconds;
    int timed_out = 0;
    for (;;) {
        int left = (int)((end - msd_now()) * 1000);
        if (left <= 0) { timed_out = 1; break; }
        struct pollfd p = {fd[0], POLLIN, 0};
        int r = poll(&p, 1, left);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) { timed_out = r == 0; break; }
        char buf[4096];
        ssize_t k = read(fd[0], buf, sizeof buf);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        size_t take = (size_t)k < cap - 1 - n ? (size_t)k : cap - 1 - n;
        memcpy(out + n, buf, take);
        n += take;
    }
    out[n] = 0;
    close(fd[0]);
    if (timed_out) kill(pid, SIGKILL);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    if (timed_out) return msd_errf(err, errlen, "%s did not finish within %g s", argv[0], seconds);
    if (!WIFEXITED(st)) return msd_errf(err, errlen, "%s was killed by signal %d", argv[0], WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    return WEXITSTATUS(st);
}

static int is_loopback(const char *a) {
    return strncmp(a, "127.", 4) == 0 || strcmp(a, "::1") == 0 || strcmp(a, "localhost") == 0;
}

/* This machine's address as the nodes see it: its host name resolved (IPv4 first). */
static int own_address(char *out, size_t cap, char *err, size_t errlen) {
    char name[256];
    if (gethostname(name, sizeof name) != 0) return msd_errf(err, errlen, "gethostname: %s", strerror(errno));
    name[sizeof name - 1] = 0;
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(name, NULL, &hints, &res);
    if (rc != 0 || !res)
        return msd_errf(err, errlen, "cannot resolve this machine's name %s (%s): give the launcher's address with 'host localhost address=A'",
                        name, gai_strerror(rc));
    rc = getnameinfo(res->ai_addr, res->ai_addrlen, out, (socklen_t)cap, NULL, 0, NI_NUMERICHOST);
    freeaddrinfo(res);
    if (rc != 0) return msd_errf(err, errlen, "getnameinfo: %s", gai_strerror(rc));
    return 0;
}

int slurm_place(Pipeline *pl, char *err, size_t errlen) {
    const char *job = getenv("SLURM_JOB_ID");
    if (!job || !*job)
        return msd_errf(err, errlen, "--slurm: SLURM_JOB_ID is not set; run inside an allocation (e.g. salloc -N2 msdpipe up FILE --slurm, or in an sbatch script)");
    const char *nl = getenv("SLURM_JOB_NODELIST");
    if (!nl || !*nl) nl = getenv("SLURM_NODELIST");
    if (!nl || !*nl) return msd_errf(err, errlen, "--slurm: SLURM_JOB_NODELIST is not set (job %s)", job);
    static char out[65536], addrs[65536];
    char e2[512] = "";
    char *show[] = {"scontrol", "show", "hostnames", (char *)nl, NULL};
    int rc = run_capture(show, out, sizeof out, 30, e2, sizeof e2);
    if (rc != 0) return msd_errf(err, errlen, "--slurm: scontrol show hostnames %s: %s", nl, rc < 0 ? e2 : "failed");
    char *sinfo_argv[] = {"sinfo", "-h", "-N", "-n", (char *)nl, "-o", "%N %o", NULL};
    rc = run_capture(sinfo_argv, addrs, sizeof addrs, 30, e2, sizeof e2);
    if (rc != 0) return msd_errf(err, errlen, "--slurm: sinfo -N -n %s: %s", nl, rc < 0 ? e2 : "failed");

    PipeHost *old = msd_malloc(sizeof pl->hosts);
    memcpy(old, pl->hosts, sizeof pl->hosts);
    int nold = pl->nhosts, n = 0, loop = 1;
    PipeHost nodes[PIPE_MAX_HOSTS];
    char *save = NULL;
    for (char *w = strtok_r(out, " \t\n", &save); w; w = strtok_r(NULL, " \t\n", &save)) {
        if (n + 1 >= PIPE_MAX_HOSTS) {
            free(old);
            return msd_errf(err, errlen, "--slurm: the allocation has more than %d nodes (the most a pipeline uses)", PIPE_MAX_HOSTS - 1);
        }
        PipeHost *h = &nodes[n++];
        memset(h, 0, sizeof *h);
        if (strlen(w) >= sizeof h->name) { free(old); return msd_errf(err, errlen, "--slurm: node name '%s' too long", w); }
        snprintf(h->name, sizeof h->name, "%s", w);
        h->slurm = 1;
        /* its NodeAddr from sinfo's "NAME ADDR" lines */
        size_t len = strlen(w);
        for (char *l = addrs; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
            if (strncmp(l, w, len) == 0 && l[len] == ' ') {
                const char *a = l + len + 1;
                size_t al = strcspn(a, " \n");
                if (al && al < sizeof h->address) { memcpy(h->address, a, al); h->address[al] = 0; }
                break;
            }
        }
        if (!h->address[0]) snprintf(h->address, sizeof h->address, "%s", w);
        loop &= is_loopback(h->address);
        for (int o = 1; o < nold; o++) /* a `host NODE` line: its bindir= and ports= */
            if (strcmp(old[o].name, w) == 0) {
                snprintf(h->bindir, sizeof h->bindir, "%s", old[o].bindir);
                h->port_lo = old[o].port_lo;
                h->port_hi = old[o].port_hi;
            }
        const char *ports = getenv("MSDPIPE_SLURM_PORTS");
        if (!h->port_lo && ports && *ports) {
            int lo = 0, hi = 0, used = 0;
            if (sscanf(ports, "%d-%d%n", &lo, &hi, &used) != 2 || ports[used] || lo < 1 || hi > 65535 || lo > hi) {
                free(old);
                return msd_errf(err, errlen, "MSDPIPE_SLURM_PORTS='%s': expected FIRST-LAST, 1 <= FIRST <= LAST <= 65535", ports);
            }
            h->port_lo = lo;
            h->port_hi = hi;
        }
    }
    if (n == 0) { free(old); return msd_errf(err, errlen, "--slurm: allocation %s has no nodes (SLURM_JOB_NODELIST=%s)", job, nl); }

    /* each process: its node */
    int rr_student = 0, rr_critic = 0;
    for (int i = 0; i < pl->nprocs; i++) {
        PipeProc *p = &pl->procs[i];
        int node = -1;
        if (p->host != 0) {
            for (int k = 0; k < n; k++)
                if (strcmp(nodes[k].name, old[p->host].name) == 0) node = k;
            if (node < 0) {
                char list[512] = "";
                for (int k = 0, at = 0; k < n; k++) {
                    size_t nl = strnlen(nodes[k].name, PIPE_MAX_NAME);
                    if (at + nl + 2 >= sizeof list) break;
                    if (k) list[at++] = ' ';
                    memcpy(list + at, nodes[k].name, nl);
                    at += (int)nl;
                    list[at] = 0;
                }
                int r = pipeline_errf(pl, p->line, err, errlen, "%s: host=%s is not a node of Slurm allocation %s (its nodes: %s)",
                                      p->name, old[p->host].name, job, list);
                free(old);
                return r;
            }
        } else if (!strcmp(p->role, "student") || !strcmp(p->role, "critic")) {
            int *rr = !strcmp(p->role, "student") ? &rr_student : &rr_critic;
            int k = p->index >= 0 ? p->index : (*rr)++;
            node = k % n;
        } else {
            node = 0;
        }
        p->host = node + 1;
    }
    /* the launcher (host 0) keeps its declared address; else the nodes must reach this machine */
    if (old[0].line == 0 && !loop) {
        if (own_address(pl->hosts[0].address, sizeof pl->hosts[0].address, err, errlen) < 0) { free(old); return -1; }
    }
    free(old);
    for (int k = 0; k < n; k++) pl->hosts[k + 1] = nodes[k];
    pl->nhosts = n + 1;
    for (int i = 0; i < pl->nprocs; i++)
        log_debug("slurm: %s on node %s (%s)", pl->procs[i].name, pl->hosts[pl->procs[i].host].name, pl->hosts[pl->procs[i].host].address);
    return 0;
}

int slurm_cancel_steps(void) {
    const char *job = getenv("SLURM_JOB_ID");
    if (!job || !*job) return -1;
    static char out[65536];
    char e2[512] = "";
    char *sq[] = {"squeue", "-h", "-s", "-j", (char *)job, "-o", "%i %j", NULL};
    if (run_capture(sq, out, sizeof out, 20, e2, sizeof e2) != 0) {
        log_warn("cannot list the steps of job %s (squeue -s): %s", job, e2);
        return -1;
    }
    const char *prefix = plan_step_prefix();
    size_t plen = strlen(prefix);
    char *argv[PIPE_MAX_PROCS + 4];
    int n = 0;
    argv[n++] = "scancel";
    argv[n++] = "--quiet";
    char *save = NULL;
    for (char *l = strtok_r(out, "\n", &save); l && n < PIPE_MAX_PROCS + 2; l = strtok_r(NULL, "\n", &save)) {
        char *sp = strchr(l, ' ');
        if (!sp) continue;
        *sp = 0;
        if (strncmp(sp + 1, prefix, plen) == 0) argv[n++] = l;
    }
    argv[n] = NULL;
    if (n == 2) return 0;
    for (int k = 2; k < n; k++) log_debug("cancelling step %s", argv[k]);
    char sink[256];
    if (run_capture(argv, sink, sizeof sink, 20, e2, sizeof e2) != 0) {
        log_warn("scancel of %d step%s of job %s failed%s%s", n - 2, n == 3 ? "" : "s", job, e2[0] ? ": " : "", e2);
        return -1;
    }
    return n - 2;
}

/* ---- self-allocation: `up --slurm` outside an allocation (docs/SCALE.md) ---------------- */

/* What the placement rule above needs from an allocation it does not have yet: *nodes (N:
 * --slurm-nodes when given, else the most of the distinct host= names and the student/critic
 * replicas placed round-robin, at least 1), the host= names (for salloc --nodelist) and *gpus,
 * the GPUs a node needs: exact without host= (replica k on node k mod N, the rest on the first
 * node), with host= an upper bound (the most on one named node plus the most on one slot). */
static int slurm_request(const Pipeline *pl, int want, int *nodes, int *gpus, char *names, size_t cap, char *err, size_t errlen) {
    int named[PIPE_MAX_HOSTS] = {0}, nnamed = 0, rr = 0, rr_student = 0, rr_critic = 0;
    int slot[PIPE_MAX_PROCS] = {0}, kof[PIPE_MAX_PROCS];
    for (int i = 0; i < pl->nprocs; i++) {
        const PipeProc *p = &pl->procs[i];
        kof[i] = -1;
        if (p->host != 0) {
            if (!named[p->host]++) nnamed++;
        } else if (!strcmp(p->role, "student") || !strcmp(p->role, "critic")) {
            int *c = !strcmp(p->role, "student") ? &rr_student : &rr_critic;
            kof[i] = p->index >= 0 ? p->index : (*c)++;
            if (kof[i] + 1 > rr) rr = kof[i] + 1;
        }
    }
    int n = want > 0 ? want : nnamed > rr ? nnamed : rr;
    if (n < 1) n = 1;
    if (n < nnamed) return msd_errf(err, errlen, "--slurm-nodes %d: the file places processes on %d named nodes (host=)", n, nnamed);
    if (n >= PIPE_MAX_HOSTS) return msd_errf(err, errlen, "--slurm: %d nodes is more than a pipeline uses (at most %d)", n, PIPE_MAX_HOSTS - 1);
    int gnamed[PIPE_MAX_HOSTS] = {0}, gslot = 0, gname = 0;
    for (int i = 0; i < pl->nprocs; i++) {
        const PipeProc *p = &pl->procs[i];
        if (p->gpu < 0) continue;
        if (p->host != 0) gnamed[p->host]++;
        else slot[kof[i] >= 0 ? kof[i] % n : 0]++;
    }
    for (int j = 0; j < n; j++) gslot = slot[j] > gslot ? slot[j] : gslot;
    for (int h = 0; h < PIPE_MAX_HOSTS; h++) gname = gnamed[h] > gname ? gnamed[h] : gname;
    *nodes = n;
    *gpus = gslot + gname;
    names[0] = 0;
    for (int h = 1, at = 0; h < pl->nhosts; h++) {
        if (!named[h]) continue;
        int w = snprintf(names + at, cap - (size_t)at, "%s%s", at ? "," : "", pl->hosts[h].name);
        if (w < 0 || (size_t)w >= cap - (size_t)at) return msd_errf(err, errlen, "--slurm: the host= names are too long for one --nodelist");
        at += w;
    }
    return 0;
}

int slurm_print_request(const Pipeline *pl, int want, FILE *out, char *err, size_t errlen) {
    char names[1024];
    int nodes = 0, gpus = 0;
    if (slurm_request(pl, want, &nodes, &gpus, names, sizeof names, err, errlen) < 0) return -1;
    fprintf(out, "slurm: no allocation (SLURM_JOB_ID is not set): up --slurm would request %d node%s%s%s with %d GPU%s per node "
            "(salloc --nodes=%d%s%s",
            nodes, nodes == 1 ? "" : "s", names[0] ? " including " : "", names, gpus, gpus == 1 ? "" : "s", nodes,
            names[0] ? " --nodelist=" : "", names);
    if (gpus > 0) fprintf(out, " --gres=gpu:%d --mincpus=%d", gpus, gpus);
    fprintf(out, " $MSDPIPE_SALLOC)\n");
    /* where each process would go: the rule of slurm_place on nodes 1..N in the allocation's order */
    int rr_student = 0, rr_critic = 0;
    for (int i = 0; i < pl->nprocs; i++) {
        const PipeProc *p = &pl->procs[i];
        if (p->host != 0) {
            fprintf(out, "slurm: %s on node %s (host=)\n", p->name, pl->hosts[p->host].name);
        } else if (!strcmp(p->role, "student") || !strcmp(p->role, "critic")) {
            int *rr = !strcmp(p->role, "student") ? &rr_student : &rr_critic;
            int k = p->index >= 0 ? p->index : (*rr)++;
            fprintf(out, "slurm: %s on node %d of %d (replica %d: node k mod N)%s\n", p->name, k % nodes + 1, nodes, k,
                    p->gpu >= 0 ? ", a step with one GPU" : "");
        } else {
            fprintf(out, "slurm: %s on node 1 of %d%s\n", p->name, nodes, p->gpu >= 0 ? ", a step with one GPU" : "");
        }
    }
    return 0;
}

/* A child of pid (the command salloc started), or -1. */
static pid_t child_of(pid_t pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)pid, (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int c = -1;
    if (!fgets(buf, sizeof buf, f) || sscanf(buf, "%d", &c) != 1) c = -1;
    fclose(f);
    return c;
}

int slurm_self_allocate(Options *o, const Pipeline *pl) {
    if (getenv("MSDPIPE_SALLOC_MARK"))
        return msd_fail(MSDPIPE_EXIT_FAILED, "--slurm: msdpipe's own salloc ran it without SLURM_JOB_ID (is MSDPIPE_SALLOC running something else?)");
    char err[512], names[1024];
    int nodes = 0, gpus = 0;
    if (slurm_request(pl, o->slurm_nodes, &nodes, &gpus, names, sizeof names, err, sizeof err) < 0) return msd_fail(MSDPIPE_EXIT_USAGE, "%s", err);
    /* the mark: msdpipe inside the allocation removes it, so a mark left means salloc never got that far */
    char mark[PATH_MAX];
    const char *tmp = getenv("TMPDIR");
    snprintf(mark, sizeof mark, "%s/msdpipe-salloc.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int mfd = mkstemp(mark);
    if (mfd < 0) return msd_fail(MSDPIPE_EXIT_FAILED, "--slurm: cannot make %s: %s", mark, strerror(errno));
    close(mfd);

    char *argv[64 + 2 * 256];
    char o_nodes[32], o_job[PIPE_MAX_NAME + 32], o_list[1100], o_gres[48], o_cpus[48]; /* argv's own strings */
    int n = 0;
    argv[n++] = "salloc";
    snprintf(o_nodes, sizeof o_nodes, "--nodes=%d", nodes);
    argv[n++] = o_nodes;
    snprintf(o_job, sizeof o_job, "--job-name=msdpipe-%s", pl->name);
    argv[n++] = o_job;
    argv[n++] = "--immediate=60"; /* a request not granted within 60 s fails (MSDPIPE_SALLOC can say otherwise) */
    if (names[0]) {
        snprintf(o_list, sizeof o_list, "--nodelist=%s", names);
        argv[n++] = o_list;
    }
    if (gpus > 0) { /* every gpu= step: one GPU and one CPU of its own (plan.c) */
        snprintf(o_gres, sizeof o_gres, "--gres=gpu:%d", gpus);
        argv[n++] = o_gres;
        snprintf(o_cpus, sizeof o_cpus, "--mincpus=%d", gpus);
        argv[n++] = o_cpus;
    }
    const char *extra = getenv("MSDPIPE_SALLOC");
    char *words = msd_strdup(extra ? extra : ""), *save = NULL;
    for (char *w = strtok_r(words, " \t", &save); w && n < 64; w = strtok_r(NULL, " \t", &save)) argv[n++] = w;
    argv[n++] = "--";
    char self[PATH_MAX + 16];
    snprintf(self, sizeof self, "%s/msdpipe", o->bindir);
    argv[n++] = self;
    for (int i = 1; i < o->argc && n < (int)(sizeof argv / sizeof argv[0]) - 1; i++) argv[n++] = o->argv[i];
    argv[n] = NULL;
    char line[4096] = "";
    for (int i = 0, at = 0; i < n && at < (int)sizeof line - 2; i++) {
        int w = snprintf(line + at, sizeof line - (size_t)at, "%s%s", i ? " " : "", argv[i]);
        if (w < 0) break;
        at += w;
    }
    log_info("no Slurm allocation (SLURM_JOB_ID is not set): requesting %d node%s%s%s, %d GPU%s per node: %s", nodes, nodes == 1 ? "" : "s",
             names[0] ? " including " : "", names, gpus, gpus == 1 ? "" : "s", line);

    /* salloc, with this process as a parent that passes SIGINT/SIGTERM/SIGHUP sent to it on to
     * msdpipe inside the allocation (salloc itself ignores SIGINT once it runs its command, and
     * one from the terminal reaches that msdpipe directly: not passed twice) */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, &old);
    setenv("MSDPIPE_SALLOC_MARK", mark, 1);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        unlink(mark);
        free(words);
        sigprocmask(SIG_SETMASK, &old, NULL);
        return msd_fail(MSDPIPE_EXIT_FAILED, "fork: %s", strerror(e));
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* this parent gone: salloc passes SIGTERM on */
        sigprocmask(SIG_SETMASK, &old, NULL);
        execvp(argv[0], argv);
        fprintf(stderr, "[msdpipe] ERROR cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    unsetenv("MSDPIPE_SALLOC_MARK");
    int st = 0;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) break;
        siginfo_t info;
        struct timespec ts = {1, 0};
        int sig = sigtimedwait(&set, &info, &ts);
        if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP) {
            if (info.si_code == SI_KERNEL) continue; /* from the terminal: its process group has it too */
            pid_t c = child_of(pid);
            log_debug("passing signal %d on to %s %d", sig, c > 0 ? "msdpipe" : "salloc", (int)(c > 0 ? c : pid));
            kill(c > 0 ? c : pid, sig);
        }
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    free(words);
    int granted = access(mark, F_OK) != 0;
    unlink(mark);
    int rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    if (!granted)
        return msd_fail(MSDPIPE_EXIT_FAILED, "--slurm: no allocation: salloc ended with status %d before starting the pipeline (%d node%s, %d GPU%s per node; salloc's reason above)",
                        rc, nodes, nodes == 1 ? "" : "s", gpus, gpus == 1 ? "" : "s");
    return rc;
}
