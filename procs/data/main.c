/* procs/data/main.c: msd-data, the process that serves batches of training data.
 *
 * Modes:
 *   --mode synthetic (default)  BATCH answers "x" f32 of --shape (default 4,1,8,8) filled by a
 *                               fixed formula of the request id and the element index, and
 *                               "label" i32 (N) = (id + n) mod 10, so a client can recompute both
 *   --mode mog                  the 2-D mixture toy: conditions from a student's partition,
 *                               generator noise and true samples (mog.c)
 *   --mode fmnist               labelled images (Fashion-MNIST IDX files, PNG folders), shuffled
 *                               batches keyed by step, per student from a partition (fmnist.c) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "data.h"
#include "log.h"
#include "proc.h"
#include "serve.h"

#define DATA_MAX_NUMEL ((int64_t)1 << 28)

static const char *usage =
    "  --mode synthetic     BATCH answers a batch made by a formula of the request id (default)\n"
    "  --mode mog --mix FILE [--partition FILE] [--seed S]\n"
    "                       BATCH {\"student\" i32, \"count\" i32, \"step\" i64[, \"truth\" u8]} ->\n"
    "                       \"z\" f32 (count, dim), \"label\" i32 (count)[, \"x\" f32 (count, dim)]\n"
    "  --mode fmnist [--data SPEC] [--classes LIST] [--partition FILE] [--seed S]\n"
    "                       SPEC: fmnist:train (default), fmnist:test, fmnist:DIR:train, png:FOLDER, ...\n"
    "                       BATCH {\"count\" i32, \"step\" i64[, \"student\" i32]} ->\n"
    "                       \"x\" f32 (count, C, H, W) in [-1, 1], \"label\" i32 (count)\n"
    "                       partition classes: ids 0..9 or tshirt trouser pullover dress coat sandal\n"
    "                       shirt sneaker bag boot\n"
    "  --shape N,C,H,W      batch shape, 1 to 8 dims (default 4,1,8,8)\n"
    "serves (--bind serve=ENDPOINT): BATCH -> \"x\" f32 (N, ...), \"label\" i32 (N)\n";

/* The synthetic element: a function of (request id, element index) only. */
static float data_synthetic_value(uint64_t id, int64_t i) {
    return sinf(0.37f * (float)(id % 4096) + 0.11f * (float)(i % 65536));
}

static int parse_shape(const char *s, int *ndim, int64_t *shape) {
    int n = 0;
    int64_t numel = 1;
    const char *q = s;
    while (*q) {
        char *end;
        long long v = strtoll(q, &end, 10);
        if (end == q || v <= 0 || n >= WIRE_MAX_DIMS || (*end && *end != ',')) return -1;
        if (v > DATA_MAX_NUMEL / numel) return -1;
        numel *= v;
        shape[n++] = v;
        q = *end ? end + 1 : end;
    }
    *ndim = n;
    return n > 0 ? 0 : -1;
}

typedef struct Synthetic {
    int ndim;
    int64_t shape[WIRE_MAX_DIMS];
    float *x;
    int32_t *label;
} Synthetic;

static void synthetic_batch(void *self, void *sock, const WireMsg *req) {
    Synthetic *s = self;
    int64_t numel = 1;
    for (int i = 0; i < s->ndim; i++) numel *= s->shape[i];
    for (int64_t i = 0; i < numel; i++) s->x[i] = data_synthetic_value(req->id, i);
    for (int64_t n = 0; n < s->shape[0]; n++) s->label[n] = (int32_t)((req->id + (uint64_t)n) % 10);
    WireMsg rep;
    wire_reply_init(&rep, req, WIRE_OP_BATCH, WIRE_STATUS_OK);
    wire_msg_add(&rep, "x", WIRE_F32, s->ndim, s->shape, s->x);
    wire_msg_add(&rep, "label", WIRE_I32, 1, s->shape, s->label);
    serve_reply(sock, &rep);
}

static void synthetic_destroy(void *self) {
    Synthetic *s = self;
    free(s->x);
    free(s->label);
    free(s);
}

static int synthetic_open(Proc *p, DataSource *src) {
    Synthetic *s = msd_calloc(1, sizeof *s);
    s->ndim = 4;
    int64_t def[4] = {4, 1, 8, 8};
    memcpy(s->shape, def, sizeof def);
    for (int i = 1; i < p->argc; i++) {
        const char *a = p->argv[i];
        if (args_is(a, "--mode")) i++;
        else if (args_is(a, "--shape")) {
            const char *v;
            if (args_str(p, &i, &v)) { free(s); return 2; }
            if (parse_shape(v, &s->ndim, s->shape) < 0) {
                fprintf(stderr, "[%s] ERROR --shape %s: expected 1 to %d positive integers like 4,1,28,28 (at most 2^28 elements)\n",
                        p->name, v, WIRE_MAX_DIMS);
                free(s);
                return 2;
            }
        } else { free(s); return args_unknown(p, a); }
    }
    int64_t numel = 1;
    for (int i = 0; i < s->ndim; i++) numel *= s->shape[i];
    s->x = msd_malloc((size_t)numel * sizeof *s->x);
    s->label = msd_malloc((size_t)s->shape[0] * sizeof *s->label);
    src->self = s;
    src->batch = synthetic_batch;
    src->destroy = synthetic_destroy;
    return 0;
}

int main(int argc, char **argv) {
    Proc p;
    proc_start(&p, "data", usage, argc, argv);
    const char *mode = args_mode(&p, "synthetic");
    if (args_cpu_only(&p, "the data process")) return 2;
    DataSource src;
    int rc;
    if (!strcmp(mode, "synthetic")) rc = synthetic_open(&p, &src);
    else if (!strcmp(mode, "mog")) rc = data_mog_open(&p, &src);
    else if (!strcmp(mode, "fmnist")) rc = data_fmnist_open(&p, &src);
    else {
        fprintf(stderr, "[%s] ERROR --mode %s: expected synthetic, mog or fmnist\n", p.name, mode);
        rc = 2;
    }
    if (rc) return rc;
    void *serve = proc_bound(&p, "serve");
    if (!serve) {
        fprintf(stderr, "[%s] ERROR needs --bind serve=ENDPOINT\n", p.name);
        src.destroy(src.self);
        return 2;
    }
    Busy busy;
    busy_init(&busy);
    proc_ready(&p);
    while (!proc_should_stop(&p)) {
        if (!serve_wait(&p, serve, 500)) continue;
        WireMsg req;
        /* one request per poll: the control socket is served between requests */
        if (serve_recv(serve, &req)) {
            busy_begin(&busy);
            if (req.op == WIRE_OP_BATCH) src.batch(src.self, serve, &req);
            else serve_unknown(serve, &req, "batch");
            busy_end(&busy);
            wire_msg_close(&req);
        }
    }
    busy_report(&busy, "data");
    src.destroy(src.self);
    return proc_finish(&p);
}
