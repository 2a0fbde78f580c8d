/* plan.c: from a parsed Pipeline to what runs: each process's command line (local, or through
 * ${MSDPIPE_SSH:-ssh} for another host), and `msdpipe check`'s printout of the graph.
 *
 * Not here: assigning endpoints (pipeline_plan in tools/msdpipe/pipefile.c), starting anything
 * (supervise.c). */
#include "msdpipe.h"

#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *proc_bindir(const Pipeline *pl, const PipeProc *p, const char *bindir) {
    const PipeHost *h = &pl->hosts[p->host];
    return h->bindir[0] ? h->bindir : bindir;
}

int plan_check_binaries(const Pipeline *pl, const char *bindir, char *err, size_t errlen) {
    for (int i = 0; i < pl->nprocs; i++) {
        const PipeProc *p = &pl->procs[i];
        if (p->host != 0) continue; /* another machine's folder: checked when it starts */
        char path[PATH_MAX + 64];
        snprintf(path, sizeof path, "%s/msd-%s", proc_bindir(pl, p, bindir), p->role);
        if (access(path, X_OK) != 0)
            return pipeline_errf(pl, p->line, err, errlen, "no binary for role '%s' (%s is missing or not executable)", p->role, path);
    }
    for (int i = 0; i < pl->nafter; i++) {
        char path[PATH_MAX + 64];
        snprintf(path, sizeof path, "%s/msd-%s", bindir, pl->after[i].role);
        if (access(path, X_OK) != 0)
            return pipeline_errf(pl, pl->after[i].line, err, errlen, "no binary for the after step '%s' (%s is missing or not executable)",
                                 pl->after[i].name, path);
    }
    return 0;
}

char *plan_shell_quote(const char *s, char *out, size_t cap) {
    size_t o = 0;
    if (cap < 3) { if (cap) out[0] = 0; return out; }
    out[o++] = '\'';
    for (; *s && o + 6 < cap; s++) {
        if (*s == '\'') { memcpy(out + o, "'\\''", 4); o += 4; }
        else out[o++] = *s;
    }
    out[o++] = '\'';
    out[o] = 0;
    return out;
}

int plan_needs_keys(const Pipeline *pl, int i) {
    const PipeProc *p = &pl->procs[i];
    if (p->host != 0) return 1;
    for (int b = 0; b < p->nbinds; b++)
        if (p->binds[b].tcp) return 1;
    for (int c = 0; c < p->nconnects; c++)
        if (pl->procs[p->connects[c].target].binds[p->connects[c].bind].tcp) return 1;
    return 0;
}

typedef struct Argv {
    int n, cap;
    char **v;
} Argv;

static void av_add(Argv *a, const char *s) {
    if (a->n + 2 > a->cap) {
        a->cap = a->cap ? a->cap * 2 : 32;
        char **nv = realloc(a->v, (size_t)a->cap * sizeof *nv);
        if (!nv) msd_die("out of memory building a command line");
        a->v = nv;
    }
    a->v[a->n++] = msd_strdup(s);
    a->v[a->n] = NULL;
}

static void av_addf(Argv *a, const char *fmt, const char *x, const char *y) {
    char buf[PIPE_MAX_EP + PIPE_MAX_NAME + 8];
    snprintf(buf, sizeof buf, fmt, x, y);
    av_add(a, buf);
}

void plan_free_argv(char **argv) {
    if (!argv) return;
    for (char **p = argv; *p; p++) free(*p);
    free(argv);
}

static char **remote_argv(const Pipeline *pl, int host, const char *name, const char *shellcmd, int gpu);

/* The process's own command line, as run on its host. */
static Argv proc_command(const Pipeline *pl, int i, const char *bindir, const char *control, const char *keys) {
    const PipeProc *p = &pl->procs[i];
    Argv a = {0};
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/msd-%s", proc_bindir(pl, p, bindir), p->role);
    av_add(&a, path);
    av_add(&a, "--name");
    av_add(&a, p->name);
    if (control) {
        av_add(&a, "--control");
        av_add(&a, control);
    }
    if (p->gpu >= 0) { /* a Slurm step: the GPU Slurm gave it is the only one it sees (docs/SCALE.md) */
        char g[16];
        snprintf(g, sizeof g, "%d", pl->hosts[p->host].slurm ? 0 : p->gpu);
        av_add(&a, "--gpu");
        av_add(&a, g);
    }
    if (keys) {
        av_add(&a, "--curve-keys");
        av_add(&a, keys);
    }
    for (int b = 0; b < p->nbinds; b++) {
        av_add(&a, "--bind");
        av_addf(&a, "%s=%s", p->binds[b].name, p->binds[b].endpoint);
    }
    for (int c = 0; c < p->nconnects; c++) {
        av_add(&a, "--connect");
        av_addf(&a, "%s=%s", p->connects[c].peer, pipeline_connect_endpoint(pl, &p->connects[c]));
    }
    for (int k = 0; k < p->argc; k++) av_add(&a, p->argv[k]);
    return a;
}

/* Append a quoted copy of s to the growing string *buf. */
static void str_add(char **buf, size_t *len, size_t *cap, const char *s) {
    size_t n = strlen(s);
    if (*len + n + 2 > *cap) {
        *cap = (*len + n + 2) * 2;
        char *nb = realloc(*buf, *cap);
        if (!nb) msd_die("out of memory building a command line");
        *buf = nb;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = 0;
}

char **plan_argv(const Pipeline *pl, int i, const char *bindir, const char *control, const char *keys) {
    const PipeProc *p = &pl->procs[i];
    Argv cmd = proc_command(pl, i, bindir, control, keys);
    if (p->host == 0) return cmd.v;
    /* Another host: ${MSDPIPE_SSH:-ssh} -- HOST 'umask 077 && mkdir -p DIR && (DIR ours, no link) &&
     * chmod 700 DIR && cat > KEYS && exec CMD'
     * (a Slurm node: srun ... --nodelist=NODE sh -c '...', plan_remote_argv). The key file
     * arrives on ssh's (srun's) stdin, so it never shows in a command line. */
    char *s = NULL, q[PATH_MAX * 4 + 16];
    size_t len = 0, cap = 0;
    if (keys) {
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s", keys);
        char *slash = strrchr(dir, '/');
        if (slash) *slash = 0;
        /* the folder must be this user's own, not a link or one planted by someone else on
         * that host, before the keys go in (a folder we create is 0700 through the umask) */
        char qd[PATH_MAX * 4 + 16];
        plan_shell_quote(dir, qd, sizeof qd);
        const char *parts[] = {"umask 077 && mkdir -p ", qd, " && if [ -h ", qd, " ] || [ ! -O ", qd,
                               " ]; then echo \"msdpipe: \"", qd,
                               "\" on $(hostname) is a link or a folder of another user: the CurveZMQ keys are not "
                               "written there (remove it)\" >&2; exit 1; fi && chmod 700 ", qd};
        for (size_t k = 0; k < sizeof parts / sizeof *parts; k++) str_add(&s, &len, &cap, parts[k]);
        str_add(&s, &len, &cap, " && cat > ");
        str_add(&s, &len, &cap, plan_shell_quote(keys, q, sizeof q));
        str_add(&s, &len, &cap, " && ");
    }
    str_add(&s, &len, &cap, "exec");
    if (p->ncpus) { /* cpus= on another host: taskset there pins it (and says so if it cannot) */
        char list[PIPE_MAX_CPU * 5];
        pipeline_cpus_text(p->cpuset, list, sizeof list);
        str_add(&s, &len, &cap, " taskset -c ");
        str_add(&s, &len, &cap, list);
    }
    if (p->cpu_threads > 0) { /* threads= reaches the other host through env(1) */
        char t[64];
        snprintf(t, sizeof t, " env MSD_THREADS=%d OPENBLAS_NUM_THREADS=1", p->cpu_threads);
        str_add(&s, &len, &cap, t);
    }
    for (int k = 0; k < cmd.n; k++) {
        str_add(&s, &len, &cap, " ");
        str_add(&s, &len, &cap, plan_shell_quote(cmd.v[k], q, sizeof q));
    }
    plan_free_argv(cmd.v);
    char **v = remote_argv(pl, p->host, p->name, s, p->gpu >= 0);
    free(s);
    return v;
}

char **plan_remote_argv(const Pipeline *pl, int host, const char *name, const char *shellcmd) {
    return remote_argv(pl, host, name, shellcmd, 0);
}

static char **remote_argv(const Pipeline *pl, int host, const char *name, const char *shellcmd, int gpu) {
    Argv a = {0};
    const PipeHost *h = &pl->hosts[host];
    const char *env = getenv(h->slurm ? "MSDPIPE_SRUN" : "MSDPIPE_SSH");
    char *words = msd_strdup(env && *env ? env : h->slurm ? "srun" : "ssh"), *save = NULL;
    for (char *w = strtok_r(words, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) av_add(&a, w);
    free(words);
    if (h->slurm) {
        /* one task on that node, sharing the allocation's resources with the other steps; the
         * step's name carries the launcher's pid so that its steps can be found and cancelled.
         * A gpu= process instead asks for one GPU of its own and one CPU (--exact): Slurm 22.05
         * lets --overlap steps share GRES, so two of them on a node would get the same GPU */
        char opt[PIPE_MAX_NAME * 2 + 64];
        av_add(&a, "--nodes=1");
        av_add(&a, "--ntasks=1");
        if (gpu) {
            av_add(&a, "--exact");
            av_add(&a, "--gres=gpu:1");
        } else {
            av_add(&a, "--overlap");
        }
        av_add(&a, "--quiet");
        snprintf(opt, sizeof opt, "--nodelist=%s", h->name);
        av_add(&a, opt);
        snprintf(opt, sizeof opt, "--job-name=%s%s", plan_step_prefix(), name);
        av_add(&a, opt);
        av_add(&a, "--");
        av_add(&a, "sh");
        av_add(&a, "-c");
    } else {
        av_add(&a, "--"); /* the destination is never an option, whatever its name */
        av_add(&a, h->name);
    }
    av_add(&a, shellcmd);
    return a.v;
}

const char *plan_step_prefix(void) {
    static char prefix[64];
    snprintf(prefix, sizeof prefix, "msdpipe-%d.", (int)getpid());
    return prefix;
}

static char **proc_env(const PipeProc *p) {
    extern char **environ;
    Argv a = {0};
    for (char **e = environ; e && *e; e++)
        if (p->cpu_threads <= 0 || (strncmp(*e, "MSD_THREADS=", 12) && strncmp(*e, "OPENBLAS_NUM_THREADS=", 21))) av_add(&a, *e);
    if (p->cpu_threads > 0) {
        char t[32];
        snprintf(t, sizeof t, "MSD_THREADS=%d", p->cpu_threads);
        av_add(&a, t);
        av_add(&a, "OPENBLAS_NUM_THREADS=1"); /* the backend runs BLAS single-threaded: no idle BLAS threads */
    }
    if (!a.v) a.v = msd_calloc(1, sizeof *a.v); /* an empty environment: never NULL */
    return a.v;
}

char **plan_env(const Pipeline *pl, int i) {
    return proc_env(&pl->procs[i]);
}

char **plan_after_env(const Pipeline *pl, int k) {
    return proc_env(&pl->after[k]);
}

char **plan_after_argv(const Pipeline *pl, int k, const char *bindir) {
    const PipeProc *p = &pl->after[k];
    Argv a = {0};
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/msd-%s", bindir, p->role);
    av_add(&a, path);
    for (int j = 0; j < p->argc; j++) av_add(&a, p->argv[j]);
    if (p->gpu >= 0) {
        char g[16];
        snprintf(g, sizeof g, "%d", p->gpu);
        av_add(&a, "--gpu");
        av_add(&a, g);
    }
    return a.v;
}

static void print_list(FILE *out, const char *label, char *const *v, int n) {
    char q[PATH_MAX * 4 + 16];
    fprintf(out, "  %-8s", label);
    if (n == 0) fprintf(out, " (none)");
    for (int k = 0; k < n; k++) {
        /* quote only what a shell would split */
        if (v[k][0] && strcspn(v[k], " \t'\"\\$`*?;&|<>()#~") == strlen(v[k])) fprintf(out, " %s", v[k]);
        else fprintf(out, " %s", plan_shell_quote(v[k], q, sizeof q));
    }
    fputc('\n', out);
}

void plan_print(const Pipeline *pl, const char *bindir, FILE *out) {
    fprintf(out, "pipeline %s (%s): %d process%s\n", pl->name, pl->path, pl->nprocs, pl->nprocs == 1 ? "" : "es");
    fprintf(out, "variables:");
    for (int v = 0; v < pl->nvars; v++) {
        char q[PIPE_MAX_VALUE * 4 + 8];
        const char *val = pl->vars[v].value;
        if (!val[0] || strcspn(val, " \t'\"\\$") != strlen(val)) val = plan_shell_quote(val, q, sizeof q);
        fprintf(out, " %s=%s%s", pl->vars[v].name, val, pl->vars[v].from_set ? " (--set)" : "");
    }
    fputc('\n', out);
    for (int h = 1; h < pl->nhosts; h++)
        fprintf(out, "host %s: address %s, binaries in %s, ports %s\n", pl->hosts[h].name, pl->hosts[h].address,
                pl->hosts[h].bindir[0] ? pl->hosts[h].bindir : bindir, pl->hosts[h].port_lo ? "from the ports= range" : "probed");
    fprintf(out, "stdin: %s\n", pl->stdin_proc >= 0 ? pl->procs[pl->stdin_proc].name : "(not read)");
    for (int i = 0; i < pl->nprocs; i++) {
        const PipeProc *p = &pl->procs[i];
        char path[PATH_MAX + 64];
        snprintf(path, sizeof path, "%s/msd-%s", proc_bindir(pl, p, bindir), p->role);
        fprintf(out, "%s\n", p->name);
        fprintf(out, "  %-8s %s\n", "binary", path);
        print_list(out, "args", p->argv, p->argc);
        if (p->gpu >= 0) fprintf(out, "  %-8s %d\n", "gpu", p->gpu);
        else fprintf(out, "  %-8s none\n", "gpu");
        fprintf(out, "  %-8s %s\n", "host", pl->hosts[p->host].name);
        if (p->restart) fprintf(out, "  %-8s up to %d after a crash or silence\n", "restart", p->restart);
        int own = 0; /* a mode's own --threads option (not 0) wins over MSD_THREADS */
        for (int k = 0; k < p->argc; k++) own |= !strcmp(p->argv[k], "--threads") || !strncmp(p->argv[k], "--threads=", 10);
        const char *ownnote = own ? "; its own --threads, unless 0, wins" : "";
        if (p->threads) fprintf(out, "  %-8s %d (threads=%s)\n", "threads", p->threads, ownnote);
        else if (p->ncpus) fprintf(out, "  %-8s %d (as many as its cpus=%s)\n", "threads", p->cpu_threads, ownnote);
        else if (p->host != 0) fprintf(out, "  %-8s not set (its host's own cores%s)\n", "threads", ownnote);
        else if (p->gpu < 0 && pipeline_role_computes(p->role))
            fprintf(out, "  %-8s %d (a share of %d core%s among %d computing process%s%s)\n", "threads", p->cpu_threads, pl->cores,
                    pl->cores == 1 ? "" : "s", pl->sharers, pl->sharers == 1 ? "" : "es", ownnote);
        else fprintf(out, "  %-8s %d (%s%s)\n", "threads", p->cpu_threads, p->gpu >= 0 ? "on a GPU" : "a role that does not compute", ownnote);
        if (p->ncpus) {
            char list[PIPE_MAX_CPU * 5];
            pipeline_cpus_text(p->cpuset, list, sizeof list);
            fprintf(out, "  %-8s %s (pinned: cpus=%s)\n", "cpus", list, p->host != 0 ? ", by taskset on its host" : "");
        }
        fprintf(out, "  %-8s %s\n", "server", p->server ? "yes (stopped when the job ends)" : "no (the job ends when it is done)");
        for (int b = 0; b < p->nbinds; b++)
            fprintf(out, "  %-8s %s=%s\n", "bind", p->binds[b].name, p->binds[b].endpoint);
        for (int c = 0; c < p->nconnects; c++)
            fprintf(out, "  %-8s %s=%s (%s)\n", "connect", p->connects[c].peer,
                    pipeline_connect_endpoint(pl, &p->connects[c]), pl->procs[p->connects[c].target].name);
        if (plan_needs_keys(pl, i)) fprintf(out, "  %-8s CurveZMQ (--curve-keys)\n", "security");
    }
    for (int k = 0; k < pl->nafter; k++) {
        const PipeProc *p = &pl->after[k];
        char **argv = plan_after_argv(pl, k, bindir);
        int n = 0;
        while (argv[n]) n++;
        fprintf(out, "after %s (step %d of %d, once the job has finished with status 0)\n", p->name, k + 1, pl->nafter);
        fprintf(out, "  %-8s %s\n", "binary", argv[0]);
        print_list(out, "args", argv + 1, n - 1);
        fprintf(out, "  %-8s %d (%s)\n", "threads", p->cpu_threads, p->threads ? "threads=" : "every core of this machine");
        plan_free_argv(argv);
    }
}
