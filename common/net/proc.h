/* proc.h: the skeleton every msdpipe process (procs/ *) is built on.
 *
 * Command line every process accepts (plus its own options, passed to the caller):
 *   --name NAME           the process's name in the pipeline (log prefix, routing id)
 *   --control ENDPOINT    the launcher's control socket (ROUTER); when absent the process runs
 *                         standalone (no READY, no heartbeats), e.g. in a test or by hand
 *   --bind NAME=ENDPOINT  an endpoint this process serves (ROUTER), repeated
 *   --connect NAME=ENDPOINT  a peer this process talks to (DEALER), repeated
 *   --gpu N               run networks on GPU N (a build without CUDA or a missing GPU fails)
 *   --curve-keys FILE     CurveZMQ keys for tcp:// links: a text file (mode 0600) of lines
 *                         "server-public Z85", "server-secret Z85", "client-public Z85",
 *                         "client-secret Z85" made by the launcher per run. Every tcp:// bind
 *                         is a CURVE server that admits only the client-public key (ZAP);
 *                         every tcp:// connect is a CURVE client. ipc:// and inproc:// are
 *                         left plain (the run directory is private, mode 0700).
 *   --liveness-ms MS      how long the launcher may stay silent before the process exits
 *                         (default PROC_LIVENESS_MS; tests use short values)
 *   --help                usage of the skeleton options and of the process's own
 *
 * Control protocol with the launcher (DEALER socket whose routing id is NAME):
 *   process -> launcher  READY once all its endpoints are bound/connected
 *   launcher -> process  HEARTBEAT every PROC_HEARTBEAT_MS; process answers HEARTBEAT
 *   launcher -> process  STOP: the process finishes and exits 0
 *   launcher -> process  LINE (stdin forwarding), answered with LINE carrying the reply text
 *   process -> launcher  DONE when its job is finished (then exits 0)
 * A process that hears nothing from the launcher for PROC_LIVENESS_MS exits (status 3): this
 * is how `kill -9` of the launcher leaves no orphan, on any host. On Linux it also asks for
 * SIGTERM when its parent dies (prctl PR_SET_PDEATHSIG) for a faster exit locally.
 * SIGINT/SIGTERM set a flag; proc_should_stop() turns true and the main loop exits cleanly.
 */
#ifndef MSD_PROC_H
#define MSD_PROC_H

#include "args.h"
#include "wire.h"

#define PROC_HEARTBEAT_MS 500
#define PROC_LIVENESS_MS 3000
#define PROC_MAX_ENDPOINTS 32
#define PROC_HWM 1000          /* SNDHWM of every socket and RCVHWM of a DEALER, in messages */
#define PROC_SERVE_RCVHWM 8    /* RCVHWM of a served ROUTER: messages queued per connected peer
                                  (each frame <= wire_max_frame(); docs/PROTOCOL.md section 6) */
#define PROC_LINGER_MS 1000    /* at close: how long queued messages may still go out */
/* proc_poll's bit for "a LINE arrived" (bit 31), without shifting into the sign bit */
#define PROC_POLL_LINE (-2147483647 - 1)

struct ProcCurve;
struct ProcKeepalive;
struct Backend;

typedef struct ProcEndpoint {
    char name[64];
    char endpoint[512];
    void *sock;            /* ROUTER for --bind, DEALER for --connect; created by proc_start */
} ProcEndpoint;

typedef struct Proc {
    const char *role;      /* "data", "router", ... */
    char name[64];
    void *zctx;
    void *control;         /* DEALER to the launcher, or NULL standalone */
    int nbind, nconnect;
    ProcEndpoint binds[PROC_MAX_ENDPOINTS];
    ProcEndpoint connects[PROC_MAX_ENDPOINTS];
    int gpu;               /* -1 for CPU */
    double last_heard;     /* msd_now() of the last message from the launcher */
    double last_sent_hb;
    int heartbeat_ms;      /* PROC_HEARTBEAT_MS */
    int liveness_ms;       /* PROC_LIVENESS_MS or --liveness-ms */
    int stop_requested;    /* STOP received from the launcher */
    int launcher_silent;   /* the launcher went silent: exit status 3 */
    struct ProcCurve *curve; /* CurveZMQ keys and ZAP thread, or NULL (private) */
    struct ProcKeepalive *keepalive; /* proc_keepalive_* helper thread state, or NULL (private) */
    /* the process's own arguments, in order, after the skeleton ones were taken out */
    int argc;
    char **argv;
} Proc;

/* One mode of a process (--mode NAME): its options as a table (args.h), which both parses
 * them and prints --help, and the function that runs it. */
typedef struct ProcMode {
    const char *name;      /* "--mode NAME" */
    const char *help;      /* what the mode does, for --help */
    const ArgSpec *args;   /* its options (NULL: none but the skeleton's) */
    int (*run)(Proc *p);   /* the mode: returns the process's exit status */
    const char *cpu_only;  /* non-NULL: runs on the CPU only; --gpu is refused naming this */
    const char *alias;     /* an option that also picks this mode ("--serve"), or NULL */
} ProcMode;

/* A process: its modes (the first is the default), ended by an entry with name NULL. */
typedef struct ProcDesc {
    const char *role;      /* "critic": the binary is msd-critic */
    const char *about;     /* what the process is, for --help */
    const ProcMode *modes;
    const char *notes;     /* trailing --help text (what it serves, connects to), or NULL */
} ProcDesc;

/* The whole of a process's main(): proc_start, pick the mode (--mode NAME, an alias option,
 * else the first), refuse --gpu for a CPU-only mode, parse the mode's options (a bad one:
 * exit status 2), then return the mode's run(). */
int proc_main(const ProcDesc *d, int argc, char **argv);
/* Parse the skeleton options out of argv, set the log name, install signal handlers, create
 * the ZeroMQ context and sockets, bind/connect. --help prints the usage generated from d's
 * tables (d may be NULL: the skeleton's options only) and exits 0. Exits 2 with a message on
 * a bad argument, 1 when an endpoint cannot be bound. */
void proc_start(Proc *p, const char *role, const ProcDesc *d, int argc, char **argv);
/* The K of a name "ROLE.K" (the number after the last '.'), or -1. */
long proc_name_index(const char *name);
/* Send READY to the launcher (no-op standalone). */
void proc_ready(Proc *p);
/* The socket of a --bind/--connect name, or NULL. */
void *proc_bound(Proc *p, const char *name);
void *proc_connected(Proc *p, const char *name);
/* True once SIGINT/SIGTERM arrived, STOP was received, or the launcher went silent. */
int proc_should_stop(Proc *p);
/* Poll the control socket and the given sockets (at most 31) for up to timeout_ms; handles
 * heartbeats and STOP itself. Returns a bitmask of which of socks[] are readable (bit i for
 * socks[i]); if a LINE arrived, *line is set to the received message (caller replies with
 * proc_reply_line and closes it) and bit 31 (PROC_POLL_LINE) is set. With line NULL, a LINE
 * is answered with status UNKNOWN_OP. Returns 0 early once proc_should_stop() is true.
 * Call it at least every second or so: the launcher's heartbeats are answered only here. */
int proc_poll(Proc *p, void **socks, int nsocks, int timeout_ms, WireMsg *line);
int proc_reply_line(Proc *p, const WireMsg *req, const char *text, int32_t status);
/* proc_reply_line for an error whose output line the process formats itself (error_line, one
 * line, e.g. a JSON object; NULL or "": the launcher's `error: TEXT`). */
int proc_reply_line_as(Proc *p, const WireMsg *req, const char *text, int32_t status, const char *error_line);
/* The backend for --gpu N (backend_get on DEVICE_CUDA). NULL with a message in err in a build
 * without CUDA (proc_start already refuses --gpu there) or when p->gpu < 0. */
const struct Backend *proc_gpu(Proc *p, char *err, size_t errlen);
/* Keep the control protocol alive through a computation longer than a heartbeat period (a
 * training step, a sampling run): between proc_keepalive_begin and proc_keepalive_end a helper
 * thread owns the control socket: it answers HEARTBEATs, notes STOP and a silent launcher
 * (proc_should_stop turns true after the end), and answers a LINE with status BUSY. In between
 * the caller must not touch the control socket (no proc_poll, rpc_*, proc_done, ...) nor the
 * Proc's fields; its other sockets are its own. No-op standalone. Not nestable (a bug). */
void proc_keepalive_begin(Proc *p);
void proc_keepalive_end(Proc *p);
/* Send DONE (no-op standalone). */
void proc_done(Proc *p);
/* Close sockets (linger bounded so queued messages go out) and the context. Returns the exit
 * status the process should use: 0 after a clean stop, 3 if the launcher went silent. */
int proc_finish(Proc *p);
/* The end of a job (a training run, a job step) and the process's exit status:
 *   rc == 0  done: DONE to the launcher, proc_finish's status;
 *   rc > 0   stopped cleanly part-way (STOP, a signal; state saved): proc_finish's status;
 *   rc < 0   failed as err says: requests still queued to peers are dropped, and 1 with err
 *            logged as an error, unless the process was told to stop meanwhile (then err is
 *            only an INFO line and the stop's status is returned). */
int proc_end_job(Proc *p, int rc, const char *err);

#endif
