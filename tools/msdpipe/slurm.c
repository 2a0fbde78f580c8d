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
