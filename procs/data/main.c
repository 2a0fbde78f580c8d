/* procs/data/main.c: msd-data, the process that serves batches of training data.
 *
 * Modes:
 *   --mode synthetic (default)  BATCH answers "x" f32 of --shape (default 4,1,8,8) filled by a
 *                               fixed formula of the request id and the element index, and
 *                               "label" i32 (N) = (id + n) mod 10, so a client can recompute both
 *   --mode mog                  the 2-D mixture toy: conditions from a student's partition,
 *                               generator noise and true samples (data_mog.c)
 *   --mode fmnist               labelled images (Fashion-MNIST IDX files, PNG folders), shuffled
 *                               batches keyed by step, per student from a partition (data_fmnist.c) */
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

static struct {
    const char *shape;
} opt = {"4,1,8,8"};

static const ArgSpec synthetic_args[] = {
    ARG_STR("--shape", &opt.shape, "N,C,H,W", "batch shape, 1 to 8 dims (default 4,1,8,8)"),
    ARG_END_,
};

static int synthetic_open(Proc *p, DataSource *src) {
    Synthetic *s = msd_calloc(1, sizeof *s);
    if (parse_shape(opt.shape, &s->ndim, s->shape) < 0) {
        free(s);
        return msd_fail(2, "--shape %s: expected 1 to %d positive integers like 4,1,28,28 (at most 2^28 elements)",
                        opt.shape, WIRE_MAX_DIMS);
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

/* Every mode: open its source, serve BATCH until stopped. */
static int data_serve(Proc *p, int (*open)(Proc *, DataSource *)) {
    DataSource src = {0};
    int rc = open(p, &src);
    if (rc) return rc;
    void *serve = serve_socket(p, "msd-data");
    if (!serve) {
        src.destroy(src.self);
        return 2;
    }
    ServeOp ops[] = {{WIRE_OP_BATCH, src.batch}};
    serve_loop(p, serve, ops, 1, src.self, NULL, "data");
    src.destroy(src.self);
    return proc_finish(p);
}

static int run_synthetic(Proc *p) { return data_serve(p, synthetic_open); }
static int run_mog(Proc *p) { return data_serve(p, data_mog_open); }
static int run_fmnist(Proc *p) { return data_serve(p, data_fmnist_open); }

#define CPU_ONLY "the data process"
static const ProcMode modes[] = {
    {"synthetic", "BATCH answers \"x\" f32 of --shape by a formula of the request id and \"label\" i32 (N) =\n"
                  "(id + n) mod 10, so a client can recompute both", synthetic_args, run_synthetic, CPU_ONLY, NULL},
    {"mog", "the 2-D mixture toy: BATCH {\"student\" i32, \"count\" i32, \"step\" i64[, \"truth\" u8]} ->\n"
            "\"z\" f32 (count, dim), \"label\" i32 (count)[, \"x\" f32 (count, dim)]", data_mog_args, run_mog, CPU_ONLY,
     NULL},
    {"fmnist", "labelled images: BATCH {\"count\" i32, \"step\" i64[, \"student\" i32]} ->\n"
               "\"x\" f32 (count, C, H, W) in [-1, 1], \"label\" i32 (count)", data_fmnist_args, run_fmnist, CPU_ONLY,
     NULL},
    {0},
};

static const ProcDesc desc = {"data", "msd-data: serves batches of training data.", modes,
                              "serves (--bind serve=ENDPOINT): BATCH -> \"x\" f32 (N, ...), \"label\" i32 (N)\n"};

int main(int argc, char **argv) { return proc_main(&desc, argc, argv); }
