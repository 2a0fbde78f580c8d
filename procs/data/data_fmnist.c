/* data_fmnist.c: msd-data --mode fmnist: labelled image batches (Fashion-MNIST or a PNG folder,
 * dataset.h) for the teacher trainer and, restricted to their partition, for the students.
 *
 * BATCH request: "count" i32 (1), "step" i64 (1), optionally "student" i32 (1) (-1 or absent:
 * every class the process serves). Reply: "x" f32 (count, C, H, W) in [-1, 1] and "label" i32
 * (count). Batch `step` of a student is dataset.h's batch number `step` of size `count` over
 * that student's images, shuffled by --seed: a pure function of (seed, student, count, step),
 * so a trainer resumed at step s receives exactly the batches it would have had.
 *
 * Classes: --classes LIST keeps only those classes (ids, "0-4,9"); --partition FILE (the
 * partition.h format) gives each student its classes, named by id ("0".."9") or, for
 * Fashion-MNIST, by the short names tshirt trouser pullover dress coat sandal shirt sneaker
 * bag boot (case-insensitive); --k K refuses a partition of another K than the pipeline's
 * (fmnist_partition.pipe writes the file, docs/DISTILL.md). Not here: augmentation,
 * per-request class lists. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "data.h"
#include "dataset.h"
#include "log.h"
#include "partition.h"
#include "serve.h"

#define FMNIST_MAX_FLOATS ((int64_t)1 << 28)   /* floats per reply */

/* One student's images: indices into the dataset, and a batcher over a view of that size
 * (dataset_batch_index reads only the view's n). */
typedef struct FmnistPart {
    Dataset view;
    int64_t *index;     /* view position -> dataset index; NULL: the identity (every image) */
    DatasetBatcher b;
} FmnistPart;

typedef struct FmnistData {
    Dataset d;
    int K;              /* students of the partition; 0 without one */
    FmnistPart all;     /* every image served */
    FmnistPart *part;   /* K entries */
    uint64_t seed;
    float *x;
    int32_t *label;
    int64_t cap;        /* images the buffers hold */
} FmnistData;

static void fmnist_batch(void *self, void *sock, const WireMsg *req) {
    FmnistData *f = self;
    const WireTensor *tc = serve_tensor(sock, req, "count", WIRE_I32, 1, 1);
    const WireTensor *tp = tc ? serve_tensor(sock, req, "step", WIRE_I64, 1, 1) : NULL;
    if (!tp) return;
    int32_t student = -1, count = *(const int32_t *)tc->data;
    int64_t step = *(const int64_t *)tp->data;
    if (wire_msg_find(req, "student")) {
        const WireTensor *ts = serve_tensor(sock, req, "student", WIRE_I32, 1, 1);
        if (!ts) return;
        student = *(const int32_t *)ts->data;
    }
    if (student < -1 || student >= f->K) {
        serve_error(sock, req, WIRE_STATUS_BAD_REQUEST, "batch: \"student\" %d is not in -1..%d (%s)", student,
                    f->K - 1, f->K ? "the partition's students" : "no --partition: only -1, every class");
        return;
    }
    int64_t per = (int64_t)f->d.c * f->d.h * f->d.w;
    if (count < 1 || count > FMNIST_MAX_FLOATS / per) {
        serve_error(sock, req, WIRE_STATUS_BAD_REQUEST, "batch: \"count\" %d must be in 1..%lld", count,
                    (long long)(FMNIST_MAX_FLOATS / per));
        return;
    }
    if (step < 0 || step > INT64_MAX / count - 1) {
        serve_error(sock, req, WIRE_STATUS_BAD_REQUEST, "batch: \"step\" %lld must be in 0..%lld", (long long)step,
                    (long long)(INT64_MAX / count - 1));
        return;
    }
    if (count > f->cap) {
        free(f->x);
        free(f->label);
        f->x = msd_malloc(sizeof(float) * (size_t)(count * per));
        f->label = msd_malloc(sizeof(int32_t) * (size_t)count);
        f->cap = count;
    }
    FmnistPart *pt = student < 0 ? &f->all : &f->part[student];
    for (int64_t j = 0; j < count; j++) {
        int64_t k = dataset_batch_index(&pt->b, step * count + j);
        int64_t i = pt->index ? pt->index[k] : k;
        memcpy(f->x + j * per, f->d.x + i * per, sizeof(float) * (size_t)per);
        f->label[j] = f->d.y[i];
    }
    int64_t shape[4] = {count, f->d.c, f->d.h, f->d.w};
    WireMsg rep;
    wire_reply_init(&rep, req, WIRE_OP_BATCH, WIRE_STATUS_OK);
    wire_msg_add(&rep, "x", WIRE_F32, 4, shape, f->x);
    wire_msg_add(&rep, "label", WIRE_I32, 1, shape, f->label);
    serve_reply(sock, &rep);
}

static void fmnist_destroy(void *self) {
    FmnistData *f = self;
    for (int k = 0; k < f->K; k++) {
        dataset_batcher_free(&f->part[k].b);
        free(f->part[k].index);
    }
    free(f->part);
    dataset_batcher_free(&f->all.b);
    dataset_free(&f->d);
    free(f->x);
    free(f->label);
    free(f);
}

static struct {
    const char *spec, *classes, *part;
    uint64_t seed;
    int k;
} opt = {"fmnist:train", NULL, NULL, 1, 0};

const ArgSpec data_fmnist_args[] = {
    ARG_STR("--data", &opt.spec, "SPEC", "fmnist:train (default), fmnist:test, fmnist:DIR:train, png:FOLDER, ..."),
    ARG_STR("--classes", &opt.classes, "LIST", "keep these classes: ids 0..9 or tshirt trouser pullover dress coat\n"
            "sandal shirt sneaker bag boot"),
    ARG_STR("--partition", &opt.part, "FILE", "per-student batches: which student owns which class"),
    ARG_U64("--seed", &opt.seed, "S", "seed of the shuffles (default 1)"),
    ARG_INT("--k", &opt.k, 1, 100000, "K", "with --partition: the pipeline's number of students, which the partition must have"),
    ARG_END_,
};

int data_fmnist_open(Proc *p, DataSource *src) {
    const char *spec = opt.spec, *classes = opt.classes, *part = opt.part;
    uint64_t seed = opt.seed;
    char err[1024];
    FmnistData *f = msd_calloc(1, sizeof *f);
    f->seed = seed;
    if (dataset_load(&f->d, spec, err, sizeof err)) {
        msd_fail(2, "--data %s: %s", spec, err);
        free(f);
        return 2;
    }
    if (f->d.nclasses == 0) {
        msd_fail(2, "--data %s: the images are unlabelled; a class-conditional trainer needs labels "
                        "(PNG folders as FOLDER/<class>/*.png)", spec);
        fmnist_destroy(f);
        return 2;
    }
    if (classes) {
        int32_t list[DATASET_MAX_CLASSES];
        int n = dataset_parse_classes(classes, list, DATASET_MAX_CLASSES, err, sizeof err);
        if (n < 0 || dataset_filter(&f->d, list, n, err, sizeof err) < 0) {
            msd_fail(2, "--classes %s: %s", classes, err);
            fmnist_destroy(f);
            return 2;
        }
    }
    f->all.view = f->d;
    dataset_batcher_init(&f->all.b, &f->all.view, seed, 1);
    if (part) {
        int n = f->d.nclasses, *assign = msd_calloc((size_t)n, sizeof(int));
        PartitionNames lk = {n, !strncmp(spec, "fmnist:", 7) && n == DATASET_FMNIST_CLASSES ? dataset_fmnist_names : NULL};
        if (partition_read_checked(part, assign, n, opt.k, lk.names, &f->K, partition_lookup_names, &lk, err,
                                   sizeof err)) {
            msd_fail(2, "--partition: %s", err);
            free(assign);
            f->K = 0;
            fmnist_destroy(f);
            return 2;
        }
        f->part = msd_calloc((size_t)f->K, sizeof *f->part);
        for (int k = 0; k < f->K; k++) {
            FmnistPart *pt = &f->part[k];
            int64_t m = 0;
            for (int64_t i = 0; i < f->d.n; i++) m += f->d.y[i] >= 0 && assign[f->d.y[i]] == k;
            if (m == 0) {
                msd_fail(2, "--partition %s: student %d owns no image of %s%s", part, k,
                        f->d.source, classes ? " (after --classes)" : "");
                free(assign);
                fmnist_destroy(f);
                return 2;
            }
            pt->index = msd_malloc(sizeof(int64_t) * (size_t)m);
            m = 0;
            for (int64_t i = 0; i < f->d.n; i++)
                if (f->d.y[i] >= 0 && assign[f->d.y[i]] == k) pt->index[m++] = i;
            pt->view = (Dataset){.n = m};
            dataset_batcher_init(&pt->b, &pt->view, seed, 1);
        }
        free(assign);
    }
    int64_t hist[DATASET_MAX_CLASSES];
    dataset_histogram(&f->d, hist, f->d.nclasses);
    int present = 0;
    for (int c = 0; c < f->d.nclasses; c++) present += hist[c] > 0;
    log_info("%s: %lld images %dx%dx%d of %d classes; %s (K = %d); seed %llu", f->d.source, (long long)f->d.n, f->d.c,
             f->d.h, f->d.w, present, f->K ? "per-student batches from the partition" : "no partition", f->K,
             (unsigned long long)seed);
    src->self = f;
    src->batch = fmnist_batch;
    src->destroy = fmnist_destroy;
    return 0;
}
