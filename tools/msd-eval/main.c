/* msd-eval: the Fashion-MNIST evaluator (docs/EVAL.md): trains the feature classifier and
 * measures generated images by FID against the 10k test images and by conditional accuracy.
 *
 *   msd-eval train-classifier --out FILE [--epochs E] [--batch B] [--lr LR] [--seed S]
 *   msd-eval accuracy [--n N]                  classifier accuracy on the first N test images
 *   msd-eval fid --images GEN.safetensors|PNG-FOLDER [--labels FILE] [--n N]
 *   msd-eval floor --n N [--seed S]            FID of N training images vs the test set
 *   msd-eval export --n N --out FILE|FOLDER [--split train|test] [--seed S]
 *                                              real images in the formats fid reads
 *   msd-eval students ...                      one-step students through their partition
 *                                              (students.c)
 * common options: --classifier FILE, --data DIR (Fashion-MNIST folder), --threads T, --gpu I
 *
 * Results are JSON on stdout (one object per line); progress goes to stderr. Generated images:
 * a safetensors file with "images" (or "x") float (N, 1, 28, 28), (N, 28, 28) or (N, 784)
 * in [-1, 1] and optionally "labels" (or "label", any integer dtype), or a PNG folder as
 * dataset.h reads it (28x28, colour converted to grey). Values are clamped to [-1, 1] (what a
 * PNG would hold); a non-finite value is an error. Not here: generating the images (except the
 * one-step students' and the teacher's one-step images of `students`, students.c). */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "classifier.h"
#include "dataset.h"
#include "fid.h"
#include "image.h"
#include "args.h"
#include "log.h"
#include "parallel.h"
#include "optimizer.h"
#include "philox.h"
#include "safetensors.h"

#include "eval.h"

#define EVAL_DEFAULT_CLASSIFIER "models/fmnist_classifier.safetensors"
#define EVAL_STREAM_SUBSET 0x4556414cull

static const char *about =
    "  train-classifier --out FILE [--epochs E] [--batch B] [--lr LR] [--seed S]\n"
    "        train the feature classifier on Fashion-MNIST train; JSON line per epoch\n"
    "  accuracy [--n N]   test accuracy of the classifier on the first N test images\n"
    "  fid --images GEN.safetensors|PNG-FOLDER [--labels FILE] [--n N]\n"
    "        FID vs the 10k test images and the conditional accuracy, as JSON\n"
    "  floor --n N [--seed S]   FID of N training images vs the test set\n"
    "  export --n N --out FILE.safetensors|FOLDER [--split train|test] [--seed S]\n"
    "        N real images (seeded subset) in the generated-image formats\n"
    "  students --partition FILE --students DIR|F,F,... | --one-step CKPT  [--n N] [--seed S]\n"
    "        [--out FILE.safetensors] [--grid FILE.png] [--export DIR --stage TEXT] [--no-judge]\n"
    "        N one-step images, class i mod 10 from its owner; FID and accuracy per class,\n"
    "        per student and overall (docs/EVAL.md)\n"
    "options (every command):\n";

static Opts opt = {.gpu = -1, .seed = 1};

static const ArgSpec args[] = {
    ARG_STR("--out", &opt.out, "FILE", "train-classifier: the classifier; export: FILE.safetensors or FOLDER;\n"
            "students: the samples (FILE.safetensors)"),
    ARG_STR("--classifier", &opt.classifier, "FILE", "default " EVAL_DEFAULT_CLASSIFIER ", also looked up next to\n"
            "the binary's ../models"),
    ARG_STR("--data", &opt.data, "DIR", "the Fashion-MNIST IDX folder"),
    ARG_STR("--images", &opt.images, "FILE|DIR", "fid: GEN.safetensors or a PNG folder"),
    ARG_STR("--labels", &opt.labels, "FILE", "fid: the generated images' labels (safetensors or text)"),
    ARG_STR("--split", &opt.split, "S", "export: train or test"),
    ARG_STR("--partition", &opt.partition, "FILE", "students: the partition file (docs/DISTILL.md)"),
    ARG_STR("--students", &opt.students, "DIR|F,F,...", "students: DIR/student.K.safetensors or one file per student"),
    ARG_STR("--one-step", &opt.one_step, "CKPT", "students: any UNet checkpoint as the one generator of every class\n"
            "(the teacher at NFE 1)"),
    ARG_STR("--grid", &opt.grid, "FILE.png", "students: one row of images per class"),
    ARG_FLAG("--no-judge", &opt.no_judge, "students: only make the images for --grid/--out (no FID or accuracy, no\n"
             "classifier or test set needed; a stage pipeline's final grid)"),
    ARG_STR("--export", &opt.export_dir, "DIR", "students: write the set (weights only) and DIR/manifest.json"),
    ARG_STR("--stage", &opt.stage, "TEXT", "students --export: the training stage, recorded in the manifest"),
    ARG_LONG("--epochs", &opt.epochs, 1, 1000, "E", "train-classifier: epochs"),
    ARG_LONG("--batch", &opt.batch, 1, 4096, "B", "train-classifier: batch; students: images per network call (100)"),
    ARG_DOUBLE("--lr", &opt.lr, 1e-12, 0.999999, "LR", "train-classifier: peak learning rate (default 2e-3)"),
    ARG_LONG("--n", &opt.n, 2, 10000000, "N", "number of images"),
    ARG_LONG("--ref-n", &opt.ref_n, 2, 10000000, "N", "fid, floor: use only the first N test images as the reference\n"
             "(default all)"),
    ARG_U64("--seed", &opt.seed, "S", "seed (default 1)"),
    ARG_INT("--threads", &opt.threads, 0, 256, "T", "CPU threads (default: $MSD_THREADS, else all cores)"),
    ARG_INT("--gpu", &opt.gpu, 0, 64, "I", "run on GPU I (a CUDA build)"),
    ARG_END_,
};

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* --classifier, else the default relative to the working folder, else next to the binary. */
const char *classifier_path(const Opts *o, char *buf, size_t len) {
    if (o->classifier) return o->classifier;
    if (file_exists(EVAL_DEFAULT_CLASSIFIER)) return EVAL_DEFAULT_CLASSIFIER;
    char exe[PATH_MAX];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (k > 0) {
        exe[k] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            snprintf(buf, len, "%s/../%s", exe, EVAL_DEFAULT_CLASSIFIER);
            if (file_exists(buf)) return buf;
        }
    }
    return EVAL_DEFAULT_CLASSIFIER;
}

int load_split(const Opts *o, const char *split, Dataset *d) {
    char spec[4200], err[1024];
    if (o->data) snprintf(spec, sizeof spec, "fmnist:%s:%s", o->data, split);
    else snprintf(spec, sizeof spec, "fmnist:%s", split);
    if (dataset_load(d, spec, err, sizeof err)) {
        log_error("%s", err);
        return -1;
    }
    if (d->c != 1 || d->h != CLS_IN_H || d->w != CLS_IN_W) {
        log_error("%s: images are %dx%dx%d, the classifier needs 1x28x28", d->source, d->c, d->h, d->w);
        dataset_free(d);
        return -1;
    }
    return 0;
}

int engine_open(Engine *e, const Opts *o, int load, int64_t batch) {
    char err[1024];
    Device dev = device_cpu();
    if (o->gpu >= 0) { dev.type = DEVICE_CUDA; dev.index = o->gpu; }
    e->be = backend_get(dev, err, sizeof err);
    if (!e->be) { log_error("%s", err); return -1; }
    static const char *const ops[] = {"alloc", "free", "upload", "download", "fill", "linear_forward", "linear_backward",
                                      "conv2d_forward", "conv2d_backward", "groupnorm_forward", "groupnorm_backward",
                                      "silu_forward", "silu_backward", "sumsq", "adamw_update", NULL};
    if (backend_require(e->be, ops, err, sizeof err)) { log_error("%s", err); return -1; }
    e->ctx = backend_ctx_new(e->be, o->threads);
    e->net = classifier_new(e->be, e->ctx);
    if (load) {
        char buf[PATH_MAX + 64];
        const char *path = classifier_path(o, buf, sizeof buf);
        if (classifier_load(e->net, path, err, sizeof err)) {
            log_error("%s\n(train one with: msd-eval train-classifier --out %s)", err,
                    EVAL_DEFAULT_CLASSIFIER);
            classifier_destroy(&e->net);
            backend_ctx_destroy(&e->ctx);
            return -1;
        }
    }
    classifier_alloc_batch(e->net, batch);
    return 0;
}

void engine_close(Engine *e) {
    classifier_destroy(&e->net);
    backend_ctx_destroy(&e->ctx);
}

static double accuracy_of(Engine *e, const float *x, const int32_t *y, int64_t n) {
    int32_t *pred = msd_malloc(sizeof(int32_t) * (size_t)n);
    classifier_run(e->net, x, n, NULL, pred);
    int64_t ok = 0;
    for (int64_t i = 0; i < n; i++) ok += pred[i] == y[i];
    free(pred);
    return (double)ok / (double)n;
}

/* ---- train-classifier ---- */

static int cmd_train(const Opts *o) {
    if (!o->out) return msd_fail(2, "train-classifier needs --out FILE");
    Dataset train, test;
    if (load_split(o, "train", &train)) return 1;
    if (load_split(o, "test", &test)) { dataset_free(&train); return 1; }
    int64_t B = o->batch ? o->batch : 64;
    long epochs = o->epochs ? o->epochs : 3;
    Engine e;
    if (engine_open(&e, o, 0, B > 250 ? B : 250)) { dataset_free(&train); dataset_free(&test); return 1; }
    classifier_init(e.net, o->seed);
    ParamSet *ps = classifier_params(e.net);
    OptimConfig cfg;
    optim_config_default(&cfg);
    float peak = o->lr > 0 ? (float)o->lr : 2e-3f;
    cfg.lr = peak;
    cfg.weight_decay = 1e-4f;
    cfg.warmup_steps = 100;
    cfg.grad_clip = 5.0f;
    Optim *opt = optim_new(ps, &cfg);
    DatasetBatcher bt;
    dataset_batcher_init(&bt, &train, o->seed, B);
    int64_t steps_per_epoch = train.n / B, total = steps_per_epoch * epochs;
    const int64_t D = CLS_IN_H * CLS_IN_W;
    float *hx = msd_malloc(sizeof(float) * (size_t)(B * D)), *hl = msd_malloc(sizeof(float) * (size_t)B * CLS_CLASSES);
    float *hd = msd_malloc(sizeof(float) * (size_t)B * CLS_CLASSES);
    int32_t *hy = msd_malloc(sizeof(int32_t) * (size_t)B);
    float *dx = e.be->alloc(e.ctx, B * D), *dlog = e.be->alloc(e.ctx, B * CLS_CLASSES), *dd = e.be->alloc(e.ctx, B * CLS_CLASSES);
    double t0 = msd_now(), loss_acc = 0;
    int64_t ok_acc = 0, seen = 0;
    char err[1024];
    int rc = 0;
    log_info("training %lld steps (%ld epochs of %lld, batch %lld), %lld parameters",
            (long long)total, epochs, (long long)steps_per_epoch, (long long)B, (long long)ps->total);
    for (int64_t step = 0; step < total; step++) {
        /* cosine decay after the warm-up (optim applies the warm-up factor to cfg.lr) */
        opt->cfg.lr = (float)(peak * 0.5 * (1.0 + cos(M_PI * (double)step / (double)total)));
        dataset_batch(&bt, step, hx, hy);
        e.be->upload(e.ctx, dx, hx, B * D);
        classifier_forward(e.net, dlog, dx, B);
        e.be->download(e.ctx, hl, dlog, B * CLS_CLASSES);
        int64_t ok;
        loss_acc += classifier_xent(hl, hy, B, CLS_CLASSES, hd, &ok);
        ok_acc += ok;
        seen += B;
        e.be->upload(e.ctx, dd, hd, B * CLS_CLASSES);
        params_zero_grad(ps);
        classifier_backward(e.net, dd, B);
        optim_step(opt);
        if ((step + 1) % 100 == 0)
            log_info("step %lld/%lld loss %.4f acc %.4f lr %.2e (%.0f s)", (long long)step + 1,
                    (long long)total, loss_acc / (double)(seen / B), (double)ok_acc / (double)seen, opt->last_lr,
                    msd_now() - t0);
        if ((step + 1) % steps_per_epoch == 0) {
            double acc = accuracy_of(&e, test.x, test.y, test.n);
            printf("{\"epoch\": %lld, \"step\": %lld, \"train_loss\": %.5f, \"train_acc\": %.5f, \"test_acc\": %.5f, "
                   "\"seconds\": %.1f}\n",
                   (long long)((step + 1) / steps_per_epoch), (long long)step + 1, loss_acc / (double)(seen / B),
                   (double)ok_acc / (double)seen, acc, msd_now() - t0);
            fflush(stdout);
            loss_acc = 0;
            ok_acc = seen = 0;
            char acc_s[32], ep_s[32];
            snprintf(acc_s, sizeof acc_s, "%.5f", acc);
            snprintf(ep_s, sizeof ep_s, "%lld", (long long)((step + 1) / steps_per_epoch));
            StMeta meta[] = {{"format", "msdpipe-fmnist-classifier-1"}, {"test_acc", acc_s}, {"epochs", ep_s}};
            if (st_save_params(o->out, ps, "", meta, 3, err, sizeof err)) {
                log_error("%s", err);
                rc = 1;
                break;
            }
        }
    }
    e.be->free(e.ctx, dx);
    e.be->free(e.ctx, dlog);
    e.be->free(e.ctx, dd);
    free(hx);
    free(hl);
    free(hd);
    free(hy);
    dataset_batcher_free(&bt);
    optim_destroy(&opt);
    engine_close(&e);
    dataset_free(&train);
    dataset_free(&test);
    return rc;
}

/* ---- accuracy ---- */

static int cmd_accuracy(const Opts *o) {
    Dataset test;
    if (load_split(o, "test", &test)) return 1;
    Engine e;
    if (engine_open(&e, o, 1, 250)) { dataset_free(&test); return 1; }
    int64_t n = o->n && o->n < test.n ? o->n : test.n;
    double acc = accuracy_of(&e, test.x, test.y, n);
    printf("{\"accuracy\": %.5f, \"n\": %lld}\n", acc, (long long)n);
    engine_close(&e);
    dataset_free(&test);
    return 0;
}

/* ---- fid / floor ---- */

/* Features of the test set and of (x, y) (n images); prints the JSON result. */
static int fid_report(Engine *e, const Dataset *test, const float *x, const int32_t *y, int64_t n, const char *what,
                      const char *source) {
    float *fr = msd_malloc(sizeof(float) * (size_t)test->n * CLS_FEATURES);
    float *fg = msd_malloc(sizeof(float) * (size_t)n * CLS_FEATURES);
    int32_t *pred = msd_malloc(sizeof(int32_t) * (size_t)n);
    classifier_run(e->net, test->x, test->n, fr, NULL);
    classifier_run(e->net, x, n, fg, pred);
    FidStats sr, sg;
    fid_stats_compute(&sr, fr, test->n, CLS_FEATURES);
    fid_stats_compute(&sg, fg, n, CLS_FEATURES);
    double fid = fid_frechet(&sg, &sr);
    printf("{\"%s\": \"%s\", \"fid\": %.4f, \"n\": %lld, \"n_ref\": %lld, \"features\": \"fc0 (128)\"", what, source,
           fid, (long long)n, (long long)test->n);
    if (y) {
        int64_t ok = 0, labelled = 0;
        for (int64_t i = 0; i < n; i++)
            if (y[i] >= 0) { labelled++; ok += pred[i] == y[i]; }
        if (labelled) printf(", \"cond_acc\": %.5f, \"n_labelled\": %lld", (double)ok / (double)labelled, (long long)labelled);
    }
    int64_t hist[CLS_CLASSES] = {0};
    for (int64_t i = 0; i < n; i++) hist[pred[i]]++;
    printf(", \"predicted_histogram\": [");
    for (int k = 0; k < CLS_CLASSES; k++) printf("%s%lld", k ? ", " : "", (long long)hist[k]);
    printf("]}\n");
    fid_stats_free(&sr);
    fid_stats_free(&sg);
    free(fr);
    free(fg);
    free(pred);
    return 0;
}

int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* Integer labels from a tensor "labels" or "label" of any integer dtype. */
static int st_labels(const StFile *f, const char *path, int64_t n, int32_t **out) {
    const StTensor *t = st_find(f, "labels");
    if (!t) t = st_find(f, "label");
    if (!t) return 1;
    if (t->ndim != 1 || t->numel != n) {
        log_error("%s: labels tensor must be (%lld), not %d-dimensional with %lld entries", path,
                (long long)n, t->ndim, (long long)t->numel);
        return -1;
    }
    float *v = msd_malloc(sizeof(float) * (size_t)n);
    st_tensor_to_f32(t, v);
    *out = msd_malloc(sizeof(int32_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        if (!(v[i] >= 0 && v[i] < CLS_CLASSES) || v[i] != floorf(v[i])) {
            log_error("%s: label %g at index %lld is not a class 0..%d", path, v[i], (long long)i,
                    CLS_CLASSES - 1);
            free(v);
            free(*out);
            *out = NULL;
            return -1;
        }
        (*out)[i] = (int32_t)v[i];
    }
    free(v);
    return 0;
}

static int text_labels(const char *path, int64_t n, int32_t **out) {
    FILE *f = fopen(path, "r");
    if (!f) { log_error("%s: %s", path, strerror(errno)); return -1; }
    *out = msd_malloc(sizeof(int32_t) * (size_t)n);
    int64_t k = 0;
    long v;
    int r;
    while ((r = fscanf(f, "%ld", &v)) == 1) {
        if (k == n || v < 0 || v >= CLS_CLASSES) {
            log_error("%s: %s", path, k == n ? "more labels than images" : "label outside 0..9");
            fclose(f);
            free(*out);
            *out = NULL;
            return -1;
        }
        (*out)[k++] = (int32_t)v;
    }
    int bad = r != EOF || k != n;
    fclose(f);
    if (bad) {
        log_error("%s: expected %lld integer labels, read %lld%s", path, (long long)n, (long long)k,
                r != EOF ? " before a non-number" : "");
        free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

/* Generated images into *x (n, 784) clamped to [-1, 1], and labels (or NULL). */
static int load_generated(const Opts *o, float **x, int32_t **y, int64_t *n) {
    char err[1024];
    *x = NULL;
    *y = NULL;
    struct stat st;
    if (stat(o->images, &st) != 0) { log_error("%s: %s", o->images, strerror(errno)); return -1; }
    if (S_ISDIR(st.st_mode)) {
        Dataset d;
        if (dataset_load_png(&d, o->images, 1, err, sizeof err)) { log_error("%s", err); return -1; }
        if (d.h != CLS_IN_H || d.w != CLS_IN_W) {
            log_error("%s: images are %dx%d, the classifier needs 28x28", o->images, d.w, d.h);
            dataset_free(&d);
            return -1;
        }
        *n = d.n;
        *x = d.x;
        int labelled = d.n > 0 && d.y[0] >= 0;
        if (labelled) *y = d.y;
        else free(d.y);
    } else {
        StFile f;
        if (st_read(&f, o->images, err, sizeof err)) { log_error("%s", err); return -1; }
        const StTensor *t = st_find(&f, "images");
        if (!t) t = st_find(&f, "x");
        int64_t per = t && t->ndim > 0 ? t->numel / (t->shape[0] ? t->shape[0] : 1) : 0;
        if (!t || t->ndim < 2 || per != CLS_IN_H * CLS_IN_W || t->shape[0] < 2 ||
            (t->ndim == 4 && (t->shape[1] != 1 || t->shape[2] != CLS_IN_H)) || (t->ndim == 3 && t->shape[1] != CLS_IN_H) ||
            t->ndim > 4) {
            log_error("%s: need a tensor \"images\" (or \"x\") of shape (N, 1, 28, 28), (N, 28, 28) "
                            "or (N, 784) with N >= 2", o->images);
            st_free(&f);
            return -1;
        }
        *n = t->shape[0];
        *x = msd_malloc(sizeof(float) * (size_t)t->numel);
        st_tensor_to_f32(t, *x);
        int r = st_labels(&f, o->images, *n, y);
        st_free(&f);
        if (r < 0) { free(*x); *x = NULL; return -1; }
    }
    for (int64_t i = 0; i < *n * CLS_IN_H * CLS_IN_W; i++) {
        float v = (*x)[i];
        if (!isfinite(v)) {
            log_error("%s: image %lld holds a non-finite value", o->images, (long long)(i / (CLS_IN_H * CLS_IN_W)));
            free(*x);
            free(*y);
            *x = NULL;
            *y = NULL;
            return -1;
        }
        (*x)[i] = v < -1.0f ? -1.0f : v > 1.0f ? 1.0f : v;
    }
    if (o->labels) {
        free(*y);
        *y = NULL;
        int r;
        if (ends_with(o->labels, ".safetensors")) {
            StFile f;
            if (st_read(&f, o->labels, err, sizeof err)) { log_error("%s", err); r = -1; }
            else {
                r = st_labels(&f, o->labels, *n, y);
                if (r > 0) log_error("%s: no tensor \"labels\" or \"label\"", o->labels);
                st_free(&f);
            }
        } else {
            r = text_labels(o->labels, *n, y);
        }
        if (r) { free(*x); free(*y); *x = NULL; *y = NULL; return -1; }
    }
    return 0;
}

/* fid_report of n images (x, y) against the test set (its first --ref-n images when given). */
static int fid_vs_test(const Opts *o, const float *x, const int32_t *y, int64_t n, const char *source) {
    Dataset test;
    Engine e;
    int rc = 1;
    if (load_split(o, "test", &test)) return 1;
    if (o->ref_n && o->ref_n < test.n) test.n = o->ref_n; /* the first ref_n test images */
    if (!engine_open(&e, o, 1, 250)) {
        rc = fid_report(&e, &test, x, y, n, "images", source);
        engine_close(&e);
    }
    dataset_free(&test);
    return rc;
}

static int cmd_fid(const Opts *o) {
    if (!o->images) return msd_fail(2, "fid needs --images GEN.safetensors|PNG-FOLDER");
    float *x;
    int32_t *y;
    int64_t n;
    if (load_generated(o, &x, &y, &n)) return 1;
    if (o->n && o->n < n) n = o->n;
    int rc = fid_vs_test(o, x, y, n, o->images);
    free(x);
    free(y);
    return rc;
}

/* The first n images of split in the order of a seeded permutation (the same subset for the
 * same seed): *x (n, 784), *y (n), malloc'd. */
static int subset(const Opts *o, const char *split, int64_t *n, float **x, int32_t **y) {
    Dataset d;
    if (load_split(o, split, &d)) return -1;
    if (*n > d.n) *n = d.n;
    const int64_t D = CLS_IN_H * CLS_IN_W;
    int32_t *perm = msd_malloc(sizeof(int32_t) * (size_t)d.n);
    *y = msd_malloc(sizeof(int32_t) * (size_t)*n);
    *x = msd_malloc(sizeof(float) * (size_t)(*n * D));
    rng_permutation(perm, d.n, o->seed, EVAL_STREAM_SUBSET);
    for (int64_t i = 0; i < *n; i++) {
        memcpy(*x + i * D, d.x + (int64_t)perm[i] * D, sizeof(float) * (size_t)D);
        (*y)[i] = d.y[perm[i]];
    }
    free(perm);
    dataset_free(&d);
    return 0;
}

static int cmd_floor(const Opts *o) {
    if (!o->n) return msd_fail(2, "floor needs --n N");
    int64_t n = o->n;
    float *x;
    int32_t *y;
    if (subset(o, "train", &n, &x, &y)) return 1;
    char src[64];
    snprintf(src, sizeof src, "fmnist:train (seed %llu)", (unsigned long long)o->seed);
    int rc = fid_vs_test(o, x, y, n, src);
    free(x);
    free(y);
    return rc;
}

/* Real images in the generated-image formats: the perfect generator, for checking pipelines. */
static int cmd_export(const Opts *o) {
    if (!o->n || !o->out) return msd_fail(2, "export needs --n N and --out FILE.safetensors|FOLDER");
    const char *split = o->split ? o->split : "train";
    int64_t n = o->n;
    float *x;
    int32_t *y;
    if (subset(o, split, &n, &x, &y)) return 1;
    char err[1024];
    int rc = 0;
    if (ends_with(o->out, ".safetensors")) {
        int64_t xs[4] = {n, 1, CLS_IN_H, CLS_IN_W}, ys[1] = {n};
        StWriteTensor t[2] = {{"images", ST_F32, 4, xs, x}, {"labels", ST_I32, 1, ys, y}};
        rc = st_write(o->out, t, 2, NULL, 0, err, sizeof err);
    } else {
        rc = image_write_folder(o->out, x, y, n, 1, CLS_IN_H, CLS_IN_W, 0, err, sizeof err);
    }
    if (rc) log_error("%s", err);
    else printf("{\"out\": \"%s\", \"split\": \"%s\", \"n\": %lld, \"seed\": %llu}\n", o->out, split, (long long)n,
                (unsigned long long)o->seed);
    free(x);
    free(y);
    return rc ? 1 : 0;
}

int main(int argc, char **argv) {
    log_set_name("msd-eval");
    const char *synopsis = "msd-eval COMMAND [options]";
    if (argc < 2) return msd_fail(2, "needs a COMMAND: train-classifier, accuracy, fid, floor, export or students (try --help)");
    int t;   /* a bad MSD_THREADS is an error here, not a silent default */
    const char *te = getenv(PARALLEL_THREADS_ENV);
    if (te && parallel_parse_threads(te, &t) < 0)
        return msd_fail(2, "%s=%s: expected a thread count 1..%d", PARALLEL_THREADS_ENV, te, PARALLEL_MAX_THREADS);
    opt.threads = 0;   /* backend_ctx_new: $MSD_THREADS, else every core */
    int first = argv[1][0] == '-' ? 1 : 2; /* "msd-eval --help" */
    if (args_tool(argc, argv, first, synopsis, about, args)) return 2;
    if (first == 1) return msd_fail(2, "needs a COMMAND before its options (try --help)");
    if (opt.split && strcmp(opt.split, "train") && strcmp(opt.split, "test"))
        return msd_fail(2, "--split %s: expected train or test", opt.split);
    Opts o = opt;
    o.cmd = argv[1];
    o.argc = argc;
    o.argv = argv;
    if (!strcmp(o.cmd, "train-classifier")) return cmd_train(&o);
    if (!strcmp(o.cmd, "accuracy")) return cmd_accuracy(&o);
    if (!strcmp(o.cmd, "fid")) return cmd_fid(&o);
    if (!strcmp(o.cmd, "floor")) return cmd_floor(&o);
    if (!strcmp(o.cmd, "export")) return cmd_export(&o);
    if (!strcmp(o.cmd, "students")) return cmd_students(&o);
    return msd_fail(2, "unknown command '%s' (try --help)", o.cmd);
}
