/* msdpipe.h: what the files of the launcher (bin/msdpipe) share.
 *
 *   main.c       command line, finding pipeline files and the binaries' folder
 *   plan.c       `check`: the resolved process graph; every process's command line
 *   rundir.c     run directories and their state files; `ps` and `down`
 *   curve.c      per-run CurveZMQ key file and the launcher's ZAP handler
 *   supervise.c  `up`: start, wait for READY, heartbeats, failures, stop
 *   lines.c      `up`: stdin lines to the stdin process, replies to stdout in input order
 *   slurm.c      `up --slurm`: processes placed on the nodes of a Slurm allocation, its steps
 *
 * Exit statuses of `msdpipe up` (docs/PIPELINES.md): 0 the job finished (or stdin was
 * answered to the end), 1 a process failed or the environment did, 2 bad command line or
 * pipeline file, 128+N stopped by signal N (130 SIGINT, 143 SIGTERM, e.g. from `down`). */
#ifndef MSDPIPE_H
#define MSDPIPE_H

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "pipefile.h"
#include "wire.h"

#define MSDPIPE_EXIT_OK 0
#define MSDPIPE_EXIT_FAILED 1
#define MSDPIPE_EXIT_USAGE 2

typedef struct Options {
    const char *file;          /* as given on the command line */
    char path[PATH_MAX];       /* the file found */
    int nsets;
    char **sets;               /* "name=value" */
    const char *run_base;      /* --run-dir: the folder holding run directories, or NULL */
    const char *target;        /* down: which pipeline */
    char bindir[PATH_MAX];     /* folder of msdpipe itself, where msd-* live */
    int slurm;                 /* up --slurm: processes are job steps (slurm.c) */
    int slurm_nodes;           /* up --slurm-nodes: nodes to request outside an allocation, 0: the placement's */
    int argc;                  /* the command line, for msdpipe run again inside its own allocation */
    char **argv;
} Options;

/* main.c */
int find_pipeline_file(Options *o, char *err, size_t errlen);
int load_pipeline(Options *o, Pipeline *pl);   /* prints errors; 0 or MSDPIPE_EXIT_USAGE */

/* plan.c */
/* Check that every local process's binary exists; errors as FILE:LINE. */
int plan_check_binaries(const Pipeline *pl, const char *bindir, char *err, size_t errlen);
/* The command line of process i (NULL-terminated, strings owned by the caller: free with
 * plan_free_argv). control is the launcher's endpoint as that process must reach it; keys
 * the --curve-keys file or NULL. */
char **plan_argv(const Pipeline *pl, int i, const char *bindir, const char *control, const char *keys);
void plan_free_argv(char **argv);
/* The command line that runs shellcmd (a POSIX shell command) on host `host` (not 0): through
 * ${MSDPIPE_SSH:-ssh} -- HOST, or for a Slurm node (PipeHost.slurm) as a job step,
 * ${MSDPIPE_SRUN:-srun} --nodes=1 --ntasks=1 --overlap --quiet --nodelist=NODE
 * --job-name=PREFIX.NAME -- sh -c shellcmd; stdin reaches the command in both. */
char **plan_remote_argv(const Pipeline *pl, int host, const char *name, const char *shellcmd);
/* "msdpipe-PID.": the start of the step names of this launcher's Slurm steps. */
const char *plan_step_prefix(void);
/* The environment of local process i (free with plan_free_argv): the launcher's, with
 * MSD_THREADS=cpu_threads and OPENBLAS_NUM_THREADS=1 (docs/PIPELINES.md "Threads"). */
char **plan_env(const Pipeline *pl, int i);
/* After step k (Pipeline.after): its command line, BINDIR/msd-ROLE ARGS [--gpu N], and its
 * environment (MSD_THREADS=cpu_threads); both freed with plan_free_argv. */
char **plan_after_argv(const Pipeline *pl, int k, const char *bindir);
char **plan_after_env(const Pipeline *pl, int k);
/* Quote s for a POSIX shell into out; returns out. */
char *plan_shell_quote(const char *s, char *out, size_t cap);
/* Does process i need the CURVE key file (a tcp link or a remote control endpoint)? */
int plan_needs_keys(const Pipeline *pl, int i);
/* Print the resolved graph (msdpipe check). */
void plan_print(const Pipeline *pl, const char *bindir, FILE *out);

/* rundir.c */
/* The folder holding run directories (--run-dir, $XDG_RUNTIME_DIR/msdpipe or
 * /tmp/msdpipe-UID), created 0700 if missing; NULL with err on failure. */
int rundir_base(const char *given, char *out, size_t cap, char *err, size_t errlen);
int rundir_create(const char *base, const char *name, char *out, size_t cap, char *err, size_t errlen);
void rundir_remove(const char *dir);
/* Replace DIR/state with text (written to state.tmp, then renamed). */
int rundir_write_state(const char *dir, const char *text);
/* The start time of process pid in clock ticks since boot (/proc/PID/stat field 22), 0 if it
 * cannot be read: with the pid it identifies a process, since pids are reused. */
unsigned long long rundir_start_ticks(int pid);
int cmd_ps(Options *o);
int cmd_down(Options *o);

/* curve.c */
typedef struct CurveKeys {
    char server_public[41], server_secret[41], client_public[41], client_secret[41];
} CurveKeys;
int curve_make_keys(CurveKeys *k, const char *path, char *err, size_t errlen);
/* ZAP handler for the launcher's own tcp control endpoint: bind a REP socket on
 * inproc://zeromq.zap.01 in ctx; curve_zap_handle answers one pending request. */
void *curve_zap_start(void *ctx, char *err, size_t errlen);
void curve_zap_handle(void *zap, const CurveKeys *k);

/* lines.c: stdin forwarding. Lines go out as LINE requests with ids 1, 2, ...; replies are
 * printed in input order (out-of-order ones wait in a window of LINES_WINDOW). */
#define LINES_WINDOW 256
#define LINES_MAX_BYTES 65536
typedef struct LineSlot {
    int have, failed;
    size_t len;
    char *text;                /* the reply, owned */
} LineSlot;
typedef struct Lines {
    int eof;                   /* read() returned 0 */
    int open;                  /* input left: not at EOF, or lines still in inbuf */
    int target_len;
    char target[PIPE_MAX_NAME];/* routing id of the process that answers */
    uint64_t next_id;          /* id of the next line read */
    uint64_t next_print;       /* id of the next line to print */
    int discarding;            /* inside an over-long line */
    int errors;                /* lines answered with an error */
    double eof_at;             /* when read() returned 0, then when the latest reply came */
    size_t inlen;
    char *inbuf;               /* LINES_MAX_BYTES */
    LineSlot slots[LINES_WINDOW];
} Lines;
void lines_init(Lines *q, const char *target);
void lines_free(Lines *q);
/* True while stdin should be polled (not at EOF, window not full, no whole line waiting). */
int lines_want_input(const Lines *q);
/* Read what stdin has (one read), then lines_take. */
int lines_read(Lines *q, void *ctl);
/* n bytes were appended at inbuf + inlen (0: the end of input): split them into lines and
 * lines_pump (the parser behind lines_read, apart for the fuzz target tests/fuzz_lines.c). */
int lines_take(Lines *q, size_t n, void *ctl);
/* Send the complete lines waiting in inbuf while the window has room. -1 when stdout cannot
 * be written (the caller stops). */
int lines_pump(Lines *q, void *ctl);
/* A LINE or ERROR message from the target: store, print what is now in order. -1 as above. */
int lines_reply(Lines *q, const WireMsg *m);
/* Lines sent and not answered yet. */
int lines_outstanding(const Lines *q);

/* slurm.c (docs/SCALE.md) */
/* Inside an allocation (SLURM_JOB_ID): replace the pipeline's hosts by the allocation's nodes
 * (PipeHost.slurm, address = the node's NodeAddr) and place every process on one: host=NODE
 * where given, else students and critics with replica index k on node k mod N, the rest on
 * the first node. Prints the placement at debug level. 0, or -1 with err. */
int slurm_place(Pipeline *pl, char *err, size_t errlen);
/* Cancel (scancel) every step of the allocation whose name starts with plan_step_prefix();
 * bounded. Returns how many it cancelled, -1 when squeue/scancel could not run. */
int slurm_cancel_steps(void);
/* up --slurm without SLURM_JOB_ID: salloc (nodes and GPUs the placement needs) running this
 * msdpipe again inside the allocation; returns its exit status, or 1 when none was granted. */
int slurm_self_allocate(Options *o, const Pipeline *pl);
/* check --slurm without SLURM_JOB_ID: what up --slurm would request (nodes, GPUs per node)
 * and where each process would go (node k of N). 0, or -1 with a message. */
int slurm_print_request(const Pipeline *pl, int want, FILE *out, char *err, size_t errlen);

/* supervise.c */
int cmd_up(Options *o);

#endif
