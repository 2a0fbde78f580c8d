/* router.h: the serving machinery of msd-router shared by its modes (main.c: echo and mog;
 * serve_images.c: serve): the lines in flight, each student's queue with at most --inflight
 * forwarded, the timeouts counted from forwarding and the cancellation ("deadline_ms",
 * docs/PROTOCOL.md section 3). A mode that keeps its own state plugs into router_serve with
 * RouterHooks: it parses a line, builds the request, and answers the line from the reply. */
#ifndef MSD_PROCS_ROUTER_H
#define MSD_PROCS_ROUTER_H

#include <stdint.h>

#include "args.h"
#include "mog.h"
#include "proc.h"

#define ROUTER_MAX_PENDING 1024   /* lines held at once: queued, forwarded or cancelled */
#define ROUTER_MAX_TEXT 4096
#define ROUTER_LINE_BATCH 64    /* lines taken at once when the mode prepares them together (hooks->prepare) */
#define ROUTER_MAX_INFLIGHT 64
#define ROUTER_MAX_STUDENTS 31

enum { P_FREE, P_QUEUED, P_SENT, P_CANCELLED };

typedef struct Pending {
    int state;            /* P_... */
    uint64_t id;          /* our request id to the student (P_SENT, P_CANCELLED) */
    uint64_t line_id;     /* the launcher's LINE id */
    int student;
    double deadline;      /* P_SENT: when it times out (msd_now) */
    double t_in;          /* when the line came in (msd_now): the latency's start */
    int cls;              /* mog, serve: the class asked for */
    int64_t count;        /* mog, serve: samples (images) asked for */
    int64_t seed;         /* serve: the seed of image 0 (image i: seed + i) */
    char *text;           /* echo, P_QUEUED: the line's text (len bytes) */
    size_t len;
    int next;             /* P_QUEUED: the next slot in its student's queue, or -1 */
} Pending;

typedef struct StudentQ {
    int head, tail;       /* queued slots, oldest first (-1: none) */
    int inflight;         /* P_SENT + P_CANCELLED */
} StudentQ;

struct Router;
/* A serving mode's part (serve_images.c). Every function may be called only as documented. */
typedef struct RouterHooks {
    /* after the students are connected (r->k, r->names): load what the mode needs; 0, or the
     * exit status after a message */
    int (*setup)(struct Router *r);
    /* a line's text into pd (cls, count, seed, student): 0, or -1 after answering the line */
    int (*parse)(struct Router *r, const WireMsg *line, const WireTensor *text, Pending *pd);
    /* the request of pd: tensors added to m, a GENERATE (deadline_ms is the router's); returns a
     * buffer the tensors point into, freed after the send (may be NULL) */
    void *(*request)(struct Router *r, const Pending *pd, WireMsg *m, int64_t deadline_ms);
    /* answer pd's line from student k's reply m */
    void (*reply)(struct Router *r, int k, const WireMsg *m, const Pending *pd);
    void (*finish)(struct Router *r);   /* at the stop (may be NULL) */
    /* the output line of an error answer (malloc'ed; NULL, or the hook NULL: the launcher's
     * `error: MSG`) */
    char *(*error_line)(struct Router *r, uint64_t line_id, const char *msg);
    /* the lines about to be taken, in order (at most ROUTER_LINE_BATCH: the one that woke the
     * router and those already waiting behind it), before parse sees each: work better done
     * for all at once (the sentence encoder). May be NULL; then lines are taken one by one. */
    void (*prepare)(struct Router *r, WireMsg *lines, int n);
} RouterHooks;

typedef struct Router {
    Proc *p;
    int k;
    void *socks[ROUTER_MAX_STUDENTS];
    const char *names[ROUTER_MAX_STUDENTS];
    Pending pending[ROUTER_MAX_PENDING];
    StudentQ q[ROUTER_MAX_STUDENTS];
    uint64_t next_id;
    int timeout_ms, inflight;
    const RouterHooks *hooks;   /* serve: the mode's part; NULL: echo or mog */
    void *ext;                  /* the hooks' state */
    /* mog mode */
    int mog_mode;
    Mog mog;
    int *assign;          /* class -> student */
    int max_samples;
    const char *png;
    float *served;        /* every sample served (for --png), (nserved, 2) */
    int32_t *served_cls;
    int64_t nserved, served_cap;
} Router;

/* --timeout-ms and --inflight, the options every serving mode takes */
typedef struct RouterQueueOpts {
    int timeout_ms, inflight;
} RouterQueueOpts;
extern RouterQueueOpts router_qopt;
extern const ArgSpec router_timeout_args[];

/* Answer the launcher's line line_id with text (status OK) or an error (the launcher prints
 * the mode's error_line, else `error: TEXT`, and a warning with text). */
void router_answer(Router *r, uint64_t line_id, const char *text, int32_t status);
/* Route the launcher's lines to the students with hooks until stopped; the exit status. */
int router_serve_hooks(Proc *p, const RouterHooks *hooks);

/* serve_images.c: --mode serve */
extern const ArgSpec router_images_args[];
int router_run_images(Proc *p);

#endif
