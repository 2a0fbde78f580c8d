/* pipeline.h: pipeline files (docs/PIPELINES.md): parse, validate, plan endpoints.
 *
 * A pipeline file names the processes of one job, their roles, arguments, placement (gpu=,
 * host=) and who connects to whom by name. pipeline_parse turns the text plus `--set`
 * overrides into a Pipeline whose processes are expanded (one per replica) and whose
 * connections are resolved to processes; pipeline_plan then gives every bound endpoint an
 * address (ipc:// in the run directory for local links, tcp:// across hosts).
 *
 * The file is untrusted input: every problem is reported as "FILE:LINE: message" followed by
 * the offending line, nothing the file claims is allocated beyond the fixed limits below, and
 * parsing never aborts. Lives in common/ so that tests/test_pipeline.c can link it; only the
 * launcher (tools/msdpipe) uses it otherwise.
 *
 * Not here: starting processes, run directories, keys (tools/msdpipe). */
#ifndef MSD_PIPELINE_H
#define MSD_PIPELINE_H

#include <stddef.h>

#define PIPE_MAX_FILE (1 << 20)    /* bytes */
#define PIPE_MAX_LINE 4096         /* bytes per line, including the newline */
#define PIPE_MAX_NAME 48           /* process/host/variable/endpoint names, including NUL */
#define PIPE_MAX_VALUE 1024        /* a variable's value, an address, a folder */
#define PIPE_MAX_EP 128            /* an endpoint string (ipc paths are limited to 107 bytes) */
#define PIPE_MAX_PROCS 256         /* processes after replication */
#define PIPE_MAX_VARS 64
#define PIPE_MAX_HOSTS 16
#define PIPE_MAX_BINDS 8           /* endpoints one process binds */
#define PIPE_MAX_CONNECTS 32       /* peers one process connects to (after replication) */
#define PIPE_MAX_ARGS 64           /* own arguments of one process */
#define PIPE_MAX_ERRORS 10         /* errors reported before giving up */
#define PIPE_MAX_GPU 63
#define PIPE_MAX_RESTART 100      /* restart= per process */
#define PIPE_MAX_THREADS 64        /* threads= per process (the pool's limit, PARALLEL_MAX_THREADS) */
#define PIPE_MAX_CPU 1024          /* cpus= CPU numbers are 0..PIPE_MAX_CPU-1 (glibc's CPU_SETSIZE) */
#define PIPE_MAX_AFTER 8           /* after steps */

/* Built-in variables, present in every pipeline (seconds; a file may give other defaults). */
#define PIPE_DEFAULT_READY_TIMEOUT "10"
#define PIPE_DEFAULT_STOP_TIMEOUT "5"
#define PIPE_DEFAULT_REPLY_TIMEOUT "30"

typedef struct PipeVar {
    char name[PIPE_MAX_NAME];
    char value[PIPE_MAX_VALUE];
    int line;                      /* 0 for a built-in the file did not mention */
    int from_set;                  /* value came from --set */
} PipeVar;

typedef struct PipeHost {
    char name[PIPE_MAX_NAME];
    char address[PIPE_MAX_VALUE];  /* what peers connect to; a tcp bind on this host binds it */
    char bindir[PIPE_MAX_VALUE];   /* where msd-* live there; "" = the launcher's own folder */
    int port_lo, port_hi;          /* ports= range for tcp binds there; 0 = probe a free port */
    int line;
    int slurm;                     /* a node of the Slurm allocation (msdpipe up --slurm): start through srun */
} PipeHost;

typedef struct PipeBind {
    char name[PIPE_MAX_NAME];      /* endpoint name, e.g. "serve" */
    int tcp;                       /* some connector runs on another host */
    int port;                      /* tcp: assigned by pipeline_plan's port callback; 0 = not yet */
    char endpoint[PIPE_MAX_EP];    /* set by pipeline_plan */
} PipeBind;

typedef struct PipeConnect {
    char peer[PIPE_MAX_NAME];      /* the name the process knows the peer by (--connect PEER=) */
    int target;                    /* index of the serving process */
    int bind;                      /* index into the target's binds */
} PipeConnect;

typedef struct PipeProc {
    char name[PIPE_MAX_NAME];      /* "data", "student.0" */
    char group[PIPE_MAX_NAME];     /* "student"; equals name when not replicated */
    int index;                     /* replica index, -1 when not replicated */
    char role[PIPE_MAX_NAME];      /* binary is msd-ROLE */
    int gpu;                       /* -1: CPU */
    int host;                      /* index into Pipeline.hosts (0 is localhost) */
    char hostname[PIPE_MAX_NAME];  /* as written (host=), resolved into host at the end */
    int server;                    /* binds something (or server=yes): stopped when the job ends */
    int restart;                   /* restart=N: restarts after a crash or silence (0: a failure stops the job) */
    int threads;                   /* threads=N as written; 0: not given (the launcher's share) */
    int cpu_threads;               /* what it gets (MSD_THREADS), set by pipeline_share_threads; 0: none */
    int ncpus;                     /* cpus=LIST: the CPUs it is pinned to, how many; 0: not pinned */
    unsigned char cpuset[PIPE_MAX_CPU / 8]; /* cpus=: bit c (byte c/8, bit c%8) for CPU c */
    int nbinds, nconnects, argc;
    PipeBind binds[PIPE_MAX_BINDS];
    PipeConnect connects[PIPE_MAX_CONNECTS];
    char *argv[PIPE_MAX_ARGS];     /* owned */
    int line;                      /* where it was declared */
    /* unresolved connect items ("alias=target:endpoint"), kept until resolution */
    int nraw;
    char *raw_connect[PIPE_MAX_CONNECTS];
} PipeProc;

typedef struct Pipeline {
    char name[PIPE_MAX_NAME];
    char path[PIPE_MAX_VALUE];     /* the file as given */
    int nvars, nhosts, nprocs;
    PipeVar vars[PIPE_MAX_VARS];
    PipeHost hosts[PIPE_MAX_HOSTS];
    PipeProc *procs;               /* nprocs, owned */
    /* after steps (`after NAME role=R -- ARGS`): commands run one by one on the launcher's
     * machine once the job has finished with status 0, e.g. a stage's final all-class grid.
     * Only name, role, gpu, threads, argv and line are used; cpu_threads is set with the
     * processes' (threads=, else every core the launcher has). */
    int nafter;
    PipeProc *after;               /* PIPE_MAX_AFTER, owned (NULL when none) */
    int stdin_proc;                /* index of the process that gets stdin lines, -1 none */
    double ready_timeout, stop_timeout, reply_timeout;  /* from the built-in variables */
    int cores, sharers;            /* pipeline_share_threads: the cores shared, and by how many */
    /* the file's lines, for error messages (owned) */
    int nlines;
    char **lines;
} Pipeline;

/* Parse text (len bytes; need not be NUL-terminated) read from `path`. sets[] are "name=value"
 * overrides (--set). On success returns 0 and fills *pl (release with pipeline_free). On error
 * returns -1 and writes into err (errlen bytes, several lines allowed) the messages, each
 * "PATH:LINE: message\n    offending line\n" (or "--set ...: message\n" for a bad override);
 * *pl is then released already. */
int pipeline_parse(Pipeline *pl, const char *path, const char *text, size_t len, int nsets,
                   char *const *sets, char *err, size_t errlen);
/* Read path (at most PIPE_MAX_FILE bytes) and parse it. */
int pipeline_load(Pipeline *pl, const char *path, int nsets, char *const *sets, char *err,
                  size_t errlen);
void pipeline_free(Pipeline *pl);

/* Choose a tcp port for a bind on host h; returns the port (1..65535) or -1 with err set. */
typedef int (*PipePortFn)(const PipeHost *h, void *ctx, char *err, size_t errlen);

/* Give every bind its endpoint: "ipc://RUNDIR/NAME.EP" when every connector is on the same
 * host, else "tcp://ADDRESS:PORT" with the port from pick (NULL: "*", for printing a plan).
 * rundir NULL prints "$RUNDIR". Returns 0, or -1 with err (e.g. an ipc path too long). */
int pipeline_plan(Pipeline *pl, const char *rundir, PipePortFn pick, void *ctx, char *err,
                  size_t errlen);
/* Give every process its CPU thread count (PipeProc.cpu_threads, docs/PIPELINES.md "Threads"):
 * threads=N wherever it runs (else as many as its cpus= names); else, on localhost, a process
 * whose role computes (student, critic, teacher: pipeline_role_computes) on the CPU gets an even
 * share of the `cores` left
 * after the explicit counts there (at least 1; the remainder goes to the first ones), and
 * every other local process 1; a process on another host without threads= gets none (0: it
 * uses its own machine's cores). An after step gets its threads=, else all `cores`. */
void pipeline_share_threads(Pipeline *pl, int cores);
/* A CPU set (PipeProc.cpuset) as taskset -c writes it ("0-3,8") into out; out is "" when empty. */
void pipeline_cpus_text(const unsigned char *set, char *out, size_t cap);
/* True for the roles that share the cores: student, critic, teacher. */
int pipeline_role_computes(const char *role);
/* True when some process runs on another host than localhost (tcp + CURVE needed). */
int pipeline_has_remote(const Pipeline *pl);
/* The endpoint a process's --connect PEER= uses for connection c. */
const char *pipeline_connect_endpoint(const Pipeline *pl, const PipeConnect *c);
/* Write "PATH:LINE: message\n    offending line\n" into err for a problem found after parsing
 * (e.g. the launcher finds no binary for a role); returns -1. */
int pipeline_errf(const Pipeline *pl, int line, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Index of a process by name, -1 if none. */
int pipeline_find_proc(const Pipeline *pl, const char *name);
/* Value of a variable, NULL if none. */
const char *pipeline_var(const Pipeline *pl, const char *name);

#endif
