/* main.c: bin/msdpipe, the launcher: command line, finding the pipeline file and the folder of
 * the msd-* binaries. The commands themselves live in supervise.c (up), plan.c (check) and
 * rundir.c (ps, down). */
#include "msdpipe.h"

#include "args.h"
#include "log.h"
#include "parallel.h"

#include <errno.h>
#include <libgen.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *usage_text =
    "usage: msdpipe COMMAND ...\n"
    "\n"
    "  msdpipe up FILE.pipe [--set NAME=VALUE ...] [--run-dir DIR] [--slurm [--slurm-nodes N]]\n"
    "      start the pipeline, supervise it, forward stdin lines to its stdin process and\n"
    "      print the replies in input order; ends when the job ends, at the end of stdin,\n"
    "      on SIGINT/SIGTERM (or `msdpipe down`), or when a process fails\n"
    "  msdpipe check FILE.pipe [--set NAME=VALUE ...] [--slurm [--slurm-nodes N]]\n"
    "      parse and validate the file, print the resolved processes; exit 0 when valid\n"
    "  msdpipe ps [--run-dir DIR]\n"
    "      list running pipelines and their processes\n"
    "  msdpipe down [PIPELINE] [--run-dir DIR]\n"
    "      stop a running pipeline gracefully (PIPELINE: its name, NAME-PID or launcher pid;\n"
    "      may be left out when only one runs)\n"
    "  msdpipe --help\n"
    "\n"
    "A bare FILE (no '/') is looked up in the current folder, then in $MSDPIPE_PATH\n"
    "(colon-separated folders), then in the pipelines/ folder next to the binaries' folder;\n"
    "'.pipe' may be left out. Processes run as BINDIR/msd-ROLE where BINDIR is msdpipe's own\n"
    "folder; remote ones through ${MSDPIPE_SSH:-ssh} HOST COMMAND; with --slurm every process is\n"
    "a job step on a node of a Slurm allocation, requested with salloc when there is none\n"
    "(a gpu= process: a step with one GPU of its own, as --gpu 0) (docs/SCALE.md).\n"
    "Run directories live in --run-dir, else $XDG_RUNTIME_DIR/msdpipe, else /tmp/msdpipe-UID.\n"
    "Exit status of up: 0 job finished, 1 a process failed, 2 bad usage or pipeline file,\n"
    "128+N stopped by signal N. The file format: docs/PIPELINES.md.\n";

/* The options of each command, into these (main copies them into Options). */
static ArgList g_sets;
static const char *g_run_dir, *g_file, *g_target;
static int g_slurm, g_slurm_nodes;

static const ArgSpec set_args[] = {
    ARG_LIST("--set", &g_sets, "NAME=VALUE", "give a pipeline variable a value; repeatable"),
    ARG_END_,
};
static const ArgSpec run_dir_args[] = {
    ARG_STR("--run-dir", &g_run_dir, "DIR", "the folder holding run directories"),
    ARG_END_,
};
static const ArgSpec slurm_args[] = {
    ARG_FLAG("--slurm", &g_slurm, "run every process as a job step on the nodes of a Slurm allocation; outside one, request it with salloc (docs/SCALE.md)"),
    ARG_INT("--slurm-nodes", &g_slurm_nodes, 1, 15, "N", "--slurm outside an allocation: request N nodes (default: as many as the placement uses)"),
    ARG_END_,
};
static const ArgSpec up_args[] = {
    ARG_POS(&g_file, "FILE.pipe", "the pipeline file"), ARG_INCLUDE(set_args), ARG_INCLUDE(run_dir_args),
    ARG_INCLUDE(slurm_args), ARG_END_,
};
static const ArgSpec check_args[] = {
    ARG_POS(&g_file, "FILE.pipe", "the pipeline file"), ARG_INCLUDE(set_args), ARG_INCLUDE(slurm_args), ARG_END_,
};
static const ArgSpec down_args[] = {
    ARG_POS(&g_target, "PIPELINE", "its name, NAME-PID or launcher pid"), ARG_INCLUDE(run_dir_args), ARG_END_,
};

static int is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Try DIR/NAME and DIR/NAME.pipe. */
static int try_dir(const char *dir, const char *name, char *out, size_t cap) {
    int n = snprintf(out, cap, "%s%s%s", dir, dir[0] ? "/" : "", name);
    if (n > 0 && (size_t)n < cap && is_file(out)) return 1;
    n = snprintf(out, cap, "%s%s%s.pipe", dir, dir[0] ? "/" : "", name);
    return n > 0 && (size_t)n < cap && is_file(out);
}

int find_pipeline_file(Options *o, char *err, size_t errlen) {
    const char *f = o->file;
    if (strchr(f, '/')) {
        if (try_dir("", f, o->path, sizeof o->path)) return 0;
        return msd_errf(err, errlen, "%s: no such file", f);
    }
    if (try_dir("", f, o->path, sizeof o->path)) return 0;
    const char *env = getenv("MSDPIPE_PATH");
    if (env && *env) {
        char *copy = msd_strdup(env), *save = NULL;
        for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
            if (try_dir(d, f, o->path, sizeof o->path)) { free(copy); return 0; }
        }
        free(copy);
    }
    /* installed tree (BINDIR/../pipelines, BINDIR/../share/msdpipe/pipelines) and the build
     * tree of a variant (build/VARIANT/bin -> the source pipelines/) */
    static const char *rel[] = {"../pipelines", "../share/msdpipe/pipelines", "../../../pipelines"};
    char dir[PATH_MAX + 64];
    for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
        snprintf(dir, sizeof dir, "%s/%s", o->bindir, rel[i]);
        if (try_dir(dir, f, o->path, sizeof o->path)) {
            char real[PATH_MAX];
            if (realpath(o->path, real)) snprintf(o->path, sizeof o->path, "%s", real);
            return 0;
        }
    }
    return msd_errf(err, errlen, "%s: not found in the current folder, $MSDPIPE_PATH or %s/../pipelines", f, o->bindir);
}

/* cpus= (docs/PIPELINES.md "Threads"): a process on this machine may only be pinned to CPUs the
 * launcher itself may use (its sched_getaffinity set: taskset or a cgroup limit shrinks it),
 * and under --slurm Slurm places and binds the processes, so cpus= is refused there. */
static int check_cpus(const Options *o, const Pipeline *pl, char *err, size_t errlen) {
    cpu_set_t mine;
    CPU_ZERO(&mine);
    int known = sched_getaffinity(0, sizeof mine, &mine) == 0;
    for (int i = 0; i < pl->nprocs; i++) {
        const PipeProc *p = &pl->procs[i];
        if (!p->ncpus) continue;
        char want[PIPE_MAX_CPU * 5], have[PIPE_MAX_CPU * 5]; /* the longest list: every other CPU */
        pipeline_cpus_text(p->cpuset, want, sizeof want);
        if (o->slurm)
            return msd_errf(err, errlen, "%s:%d: process %s: cpus=%s is for runs without --slurm (under Slurm, srun places and binds the processes; leave cpus= out)",
                            pl->path, p->line, p->name, want);
        if (p->host != 0 || !known) continue; /* another host: taskset there says whether it can */
        unsigned char set[PIPE_MAX_CPU / 8] = {0};
        for (int c = 0; c < PIPE_MAX_CPU && c < CPU_SETSIZE; c++)
            if (CPU_ISSET(c, &mine)) set[c / 8] |= (unsigned char)(1u << (c % 8));
        for (int c = 0; c < PIPE_MAX_CPU; c++) {
            if ((p->cpuset[c / 8] >> (c % 8) & 1) && !(set[c / 8] >> (c % 8) & 1)) {
                pipeline_cpus_text(set, have, sizeof have);
                return msd_errf(err, errlen, "%s:%d: process %s: cpus=%s names CPU %d, which this launcher may not use (it may use %s)",
                                pl->path, p->line, p->name, want, c, have);
            }
        }
    }
    return 0;
}

int load_pipeline(Options *o, Pipeline *pl) {
    char err[8192];
    if (find_pipeline_file(o, err, sizeof err) < 0) return msd_fail(MSDPIPE_EXIT_USAGE, "%s", err);
    if (pipeline_load(pl, o->path, o->nsets, o->sets, err, sizeof err) < 0) {
        fputs(err, stderr);
        return MSDPIPE_EXIT_USAGE;
    }
    if (plan_check_binaries(pl, o->bindir, err, sizeof err) < 0) {
        fputs(err, stderr);
        pipeline_free(pl);
        return MSDPIPE_EXIT_USAGE;
    }
    pipeline_share_threads(pl, parallel_cpu_count()); /* the cores this launcher may use */
    if (check_cpus(o, pl, err, sizeof err) < 0) {
        pipeline_free(pl);
        return msd_fail(MSDPIPE_EXIT_USAGE, "%s", err);
    }
    return 0;
}

static void find_bindir(Options *o, const char *argv0) {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
    } else if (!realpath(argv0, exe)) {
        snprintf(exe, sizeof exe, "%s", argv0);
    }
    snprintf(o->bindir, sizeof o->bindir, "%s", dirname(exe));
}

static int cmd_check(Options *o) {
    Pipeline pl;
    int rc = load_pipeline(o, &pl);
    if (rc) return rc;
    char err[1024];
    /* --slurm: inside an allocation the placement on its nodes (as up does), else what up
     * would request */
    const char *job = o->slurm ? getenv("SLURM_JOB_ID") : NULL;
    int inside = job && *job;
    if (o->slurm && (inside ? slurm_place(&pl, err, sizeof err) : slurm_print_request(&pl, o->slurm_nodes, stdout, err, sizeof err)) < 0) {
        pipeline_free(&pl);
        return msd_fail(inside ? MSDPIPE_EXIT_FAILED : MSDPIPE_EXIT_USAGE, "%s", err);
    }
    if (inside) pipeline_share_threads(&pl, pl.cores);
    if (pipeline_plan(&pl, NULL, NULL, NULL, err, sizeof err) < 0) {
        pipeline_free(&pl);
        return msd_fail(MSDPIPE_EXIT_USAGE, "%s", err);
    }
    plan_print(&pl, o->bindir, stdout);
    pipeline_free(&pl);
    return 0;
}

/* The prose above, then each command's arguments from the tables that parse them. */
static int print_help(void) {
    fputs(usage_text, stdout);
    static const struct { const char *cmd; const ArgSpec *args; } cmds[] = {
        {"up", up_args}, {"check", check_args}, {"ps", run_dir_args}, {"down", down_args}};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        printf("\n%s:\n", cmds[i].cmd);
        args_usage(stdout, cmds[i].args);
    }
    return 0;
}

int main(int argc, char **argv) {
    log_set_name("msdpipe");
    Options o = {0};
    find_bindir(&o, argv[0]);
    if (argc < 2) return msd_fail(MSDPIPE_EXIT_USAGE, "missing command (try --help)");
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) return print_help();
    int is_up = strcmp(cmd, "up") == 0, is_check = strcmp(cmd, "check") == 0;
    int is_ps = strcmp(cmd, "ps") == 0, is_down = strcmp(cmd, "down") == 0;
    if (!is_up && !is_check && !is_ps && !is_down)
        return msd_fail(MSDPIPE_EXIT_USAGE, "unknown command '%s' (try --help)", cmd);
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return print_help();
    g_sets = (ArgList){msd_calloc((size_t)argc, sizeof *g_sets.v), 0, argc};
    const ArgSpec *table = is_up ? up_args : is_check ? check_args : is_ps ? run_dir_args : down_args;
    int rc = MSDPIPE_EXIT_USAGE;
    if (args_parse(argc, argv, 2, table, NULL)) goto out;
    if (g_run_dir && !*g_run_dir) { msd_fail(rc, "--run-dir needs a folder"); goto out; }
    if ((is_up || is_check) && !g_file) { msd_fail(rc, "%s needs a pipeline file", cmd); goto out; }
    o.sets = g_sets.v;
    o.nsets = g_sets.n;
    o.run_base = g_run_dir;
    o.file = g_file;
    o.target = g_target;
    o.slurm = g_slurm;
    o.slurm_nodes = g_slurm_nodes;
    o.argc = argc;
    o.argv = argv;
    if (is_check) rc = cmd_check(&o);
    else if (is_up) rc = cmd_up(&o);
    else if (is_ps) rc = cmd_ps(&o);
    else rc = cmd_down(&o);
out:
    free(g_sets.v);
    return rc;
}
