/* data_mog.c: msd-data --mode mog: conditions and noise for the students of the 2-D mixture toy.
 *
 * BATCH request: "student" i32 (1) (-1: every class), "count" i32 (1), "step" i64 (1), and
 * optionally "truth" u8 (1) = 1. Reply: "z" f32 (count, dim) standard normals (the generator's
 * input), "label" i32 (count) drawn uniformly from the student's classes (its partition), and
 * with truth also "x" f32 (count, dim) true samples of those classes (for evaluation and the
 * adversarial stage). The reply is a pure function of (seed, student, step, count): a student
 * that resumes from a checkpoint at step s gets exactly the batches it would have had. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "data.h"
#include "log.h"
#include "mog.h"
#include "partition.h"
#include "philox.h"
#include "serve.h"

#define MOG_MAX_COUNT (1 << 20)
#define STREAM_LABEL 0x6d6f6700u
#define STREAM_Z 0x6d6f6800u
#define STREAM_X 0x6d6f6900u

typedef struct MogData {
    Mog mog;
    int K;
    int *assign;        /* class -> student */
    int **classes;      /* student -> its classes */
    int *nclasses;
    uint64_t seed;
    float *z, *x;
    int32_t *label;
} MogData;

static int lookup(void *ctx, const char *tok) { return mog_class_lookup(ctx, tok); }

static void mog_batch(void *self, void *sock, const WireMsg *req) {
    MogData *d = self;
    const WireTensor *ts = serve_tensor(sock, req, "student", WIRE_I32, 1, 1);
    const WireTensor *tc = ts ? serve_tensor(sock, req, "count", WIRE_I32, 1, 1) : NULL;
    const WireTensor *tp = tc ? serve_tensor(sock, req, "step", WIRE_I64, 1, 1) : NULL;
    if (!tp) return;
    int32_t student = *(const int32_t *)ts->data, count = *(const int32_t *)tc->data;
    int64_t step = *(const int64_t *)tp->data;
    const WireTensor *tt = wire_msg_find(req, "truth");
    int truth = tt && tt->dtype == WIRE_U8 && tt->nbytes == 1 && *(const uint8_t *)tt->data;
    if (student < -1 || student >= d->K) {
        serve_error(sock, req, WIRE_STATUS_BAD_REQUEST, "batch: student %d is not in -1..%d (the partition has K = %d)",
                    student, d->K - 1, d->K);
        return;
    }
    if (count < 1 || count > MOG_MAX_COUNT || step < 0) {
        serve_error(sock, req, WIRE_STATUS_BAD_REQUEST, "batch: count %d must be in 1..%d and step %lld >= 0", count,
                    MOG_MAX_COUNT, (long long)step);
        return;
    }
    int dim = d->mog.dim;
    d->z = realloc(d->z, sizeof(float) * (size_t)count * dim);
    d->x = realloc(d->x, sizeof(float) * (size_t)count * dim);
    d->label = realloc(d->label, sizeof(int32_t) * (size_t)count);
    if (!d->z || !d->x || !d->label) msd_die("out of memory for a batch of %d", count);
    uint64_t s = (uint64_t)(student + 1), base = (uint64_t)step * (uint64_t)count;
    for (int i = 0; i < count; i++) {
        if (student < 0) {
            d->label[i] = (int32_t)rng_uniform_int(d->seed, STREAM_LABEL + s, base + (uint64_t)i, (uint32_t)d->mog.nclasses);
        } else {
            uint32_t j = rng_uniform_int(d->seed, STREAM_LABEL + s, base + (uint64_t)i, (uint32_t)d->nclasses[student]);
            d->label[i] = d->classes[student][j];
        }
    }
    rng_normal_fill(d->z, (int64_t)count * dim, d->seed, STREAM_Z + s, base * (uint64_t)dim);
    int64_t shape[2] = {count, dim};
    WireMsg rep;
    wire_reply_init(&rep, req, WIRE_OP_BATCH, WIRE_STATUS_OK);
    wire_msg_add(&rep, "z", WIRE_F32, 2, shape, d->z);
    wire_msg_add(&rep, "label", WIRE_I32, 1, shape, d->label);
    if (truth) {
        mog_sample(&d->mog, d->x, NULL, d->label, count, d->seed, STREAM_X + s, base);
        wire_msg_add(&rep, "x", WIRE_F32, 2, shape, d->x);
    }
    serve_reply(sock, &rep);
}

static void mog_destroy(void *self) {
    MogData *d = self;
    for (int k = 0; d->classes && k < d->K; k++) free(d->classes[k]);
    free(d->classes);
    free(d->nclasses);
    free(d->assign);
    free(d->z);
    free(d->x);
    free(d->label);
    mog_free(&d->mog);
    free(d);
}

static struct {
    const char *mix, *part;
    uint64_t seed;
} opt = {NULL, NULL, 1};

const ArgSpec data_mog_args[] = {
    ARG_STR_REQ("--mix", &opt.mix, "FILE", "mixture specification (docs/MOG.md)"),
    ARG_STR("--partition", &opt.part, "FILE", "which student owns which class (none: one student owns all)"),
    ARG_U64("--seed", &opt.seed, "S", "seed of the draws (default 1)"),
    ARG_END_,
};

int data_mog_open(Proc *p, DataSource *src) {
    const char *mix = opt.mix, *part = opt.part;
    uint64_t seed = opt.seed;
    MogData *d = msd_calloc(1, sizeof *d);
    char err[1024];
    if (mog_load(&d->mog, mix, err, sizeof err)) {
        msd_fail(2, "%s", err);
        free(d);
        return 2;
    }
    int n = d->mog.nclasses;
    d->assign = msd_calloc((size_t)n, sizeof(int));
    d->K = 1;
    if (part && partition_read(part, d->assign, n, &d->K, lookup, &d->mog, err, sizeof err)) {
        msd_fail(2, "%s", err);
        mog_destroy(d);
        return 2;
    }
    d->seed = seed;
    d->classes = msd_calloc((size_t)d->K, sizeof(int *));
    d->nclasses = msd_calloc((size_t)d->K, sizeof(int));
    for (int k = 0; k < d->K; k++) d->classes[k] = msd_calloc((size_t)n, sizeof(int));
    for (int c = 0; c < n; c++) d->classes[d->assign[c]][d->nclasses[d->assign[c]]++] = c;
    log_info("mixture %s: %d classes, %d components; %d students (%s)", mix, n, d->mog.ncomp, d->K,
             part ? part : "no partition: one student owns every class");
    src->self = d;
    src->batch = mog_batch;
    src->destroy = mog_destroy;
    return 0;
}
