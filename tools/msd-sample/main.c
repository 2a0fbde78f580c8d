/* msd-sample: draw images from a trained UNet teacher checkpoint with the EDM Heun sampler
 * (docs/ALGORITHMS.md section 1), in the formats msd-eval reads (docs/EVAL.md):
 *
 *   msd-sample --ckpt FILE [--net SPEC] --n N [--classes LIST] [--steps 18] [--churn S]
 *              [--seed S] [--batch B] [--threads T] [--gpu I]
 *              --out FILE.safetensors|FOLDER [--grid FILE.png]
 *
 * The checkpoint's EMA weights are used (its raw weights when it has none); --net is needed
 * only for a file without the "unet.spec" metadata. Image i is of class classes[i mod K] (every
 * class of the network by default) and its noise is keyed by (seed, i), so the images do not
 * depend on --batch and equal what the teacher's SAMPLE op returns for the same labels, seed
 * and steps. NFE per image = 2 * steps - 1. FILE.safetensors gets "images" f32 (N, C, H, W),
 * nominally in [-1, 1] and not clipped (PNGs and msd-eval clip), and "labels" i32 (N); a
 * FOLDER gets FOLDER/<class>/<index>.png. --grid writes the first min(N, 100) images as one
 * PNG (one column per class when N allows).
 * A JSON line on stdout reports what was written; progress goes to stderr. Exit status 0, 1 on
 * a failure, 2 on a usage error.
 *
 * Not here: judging the images (msd-eval fid). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "dataset.h"
#include "edmunet.h"
#include "fsutil.h"
#include "image.h"
#include "args.h"
#include "log.h"
#include "safetensors.h"

typedef struct Opts {
    const char *ckpt, *spec, *classes, *out, *grid;
    long n, steps, batch, threads, gpu;
    double churn;
    uint64_t seed;
} Opts;

static Opts opt = {.steps = 18, .batch = 100, .gpu = -1, .seed = 1};

static const ArgSpec args[] = {
    ARG_STR_REQ("--ckpt", &opt.ckpt, "FILE", "the teacher checkpoint (its EMA weights)"),
    ARG_STR("--net", &opt.spec, "SPEC", "the UNet CONFIG-SPEC (only for a file without \"unet.spec\")"),
    {"--n", ARG_LONG, &opt.n, 1, 10000000, "N", "number of images", 1},
    ARG_STR_REQ("--out", &opt.out, "FILE|DIR", "FILE.safetensors, or a FOLDER of <class>/<index>.png"),
    ARG_STR("--classes", &opt.classes, "LIST", "image i is of class LIST[i mod K] (default: every class)"),
    ARG_LONG("--steps", &opt.steps, 1, 1000, "N", "Heun steps, NFE 2*steps-1 (default 18)"),
    ARG_DOUBLE("--churn", &opt.churn, 0, 1000, "S", "stochastic churn (default 0)"),
    ARG_U64("--seed", &opt.seed, "S", "noise of image i keyed by (seed, i) (default 1)"),
    ARG_STR("--grid", &opt.grid, "FILE.png", "the first min(N, 100) images as one PNG"),
    ARG_LONG("--batch", &opt.batch, 1, 65536, "B", "images per network call (default 100)"),
    ARG_LONG("--threads", &opt.threads, 0, 1024, "T", "CPU threads (default: $MSD_THREADS, else all cores)"),
    ARG_LONG("--gpu", &opt.gpu, 0, 64, "I", "run on GPU I (a CUDA build)"),
    ARG_END_,
};

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

int main(int argc, char **argv) {
    log_set_name("msd-sample");
    if (args_tool(argc, argv, 1, "msd-sample --ckpt FILE --n N --out FILE.safetensors|FOLDER [options]",
                  "EMA samples of a teacher checkpoint (EDM Heun sampler, NFE 2*steps-1); image i is of\n"
                  "class classes[i mod K]; --out as msd-eval fid --images reads it\n", args))
        return 2;
    Opts o = opt;
    char err[1024];
    Device dev = device_cpu();
    if (o.gpu >= 0) { dev.type = DEVICE_CUDA; dev.index = (int)o.gpu; }
    const Backend *be = backend_get(dev, err, sizeof err);
    if (!be || backend_missing(be, err, sizeof err)) return msd_fail(1, "%s", err);
    BackendCtx *ctx = backend_ctx_new(be, (int)o.threads);
    int64_t cap = o.batch < o.n ? o.batch : o.n;
    EdmUNet net;
    if (edmunet_open(&net, o.ckpt, o.spec, be, ctx, cap, err, sizeof err)) {
        log_error("%s", err);
        backend_ctx_destroy(&ctx);
        return 1;
    }
    int rc = 1;
    int32_t classes[DATASET_MAX_CLASSES];
    int ncls = net.cfg.label_dim;
    int32_t *labels = NULL;
    float *x = NULL;
    if (o.classes) {
        if (ncls == 0) { log_error("--classes: the network %s is unconditional", net.spec); rc = 2; goto out; }
        int k = dataset_parse_classes(o.classes, classes, DATASET_MAX_CLASSES, err, sizeof err);
        if (k < 0) { log_error("--classes %s: %s", o.classes, err); rc = 2; goto out; }
        for (int i = 0; i < k; i++)
            if (classes[i] >= ncls) {
                log_error("--classes %s: class %d is not one of the network's 0..%d", o.classes,
                        classes[i], ncls - 1);
                rc = 2;
                goto out;
            }
        ncls = k;
    } else {
        for (int i = 0; i < ncls; i++) classes[i] = i;
    }
    SamplerConfig sc;
    sampler_config_default(&sc);
    sc.steps = (int)o.steps;
    sc.s_churn = o.churn;
    int64_t D = net.dim, n = o.n;
    x = malloc(sizeof(float) * (size_t)(n * D));
    if (!x) { log_error("out of memory for %lld images", (long long)n); goto out; }
    if (ncls > 0) {
        labels = msd_malloc(sizeof(int32_t) * (size_t)n);
        for (int64_t i = 0; i < n; i++) labels[i] = classes[i % ncls];
    }
    log_info("%lld images of %s from %s on %s, %d Heun steps (NFE %d)%s\n", (long long)n, net.spec,
            o.ckpt, be->name, sc.steps, sampler_nfe(&sc), o.churn > 0 ? ", stochastic" : "");
    double t0 = msd_now(), next = t0 + 10;
    for (int64_t b = 0; b < n; b += cap) {
        int64_t m = n - b < cap ? n - b : cap;
        edmunet_sample(&net, &sc, x + b * D, labels ? labels + b : NULL, m, o.seed, (uint64_t)b);
        if (msd_now() > next || b + m == n) {
            double el = msd_now() - t0;
            log_info("%lld/%lld images, %.1f images/s\n", (long long)(b + m), (long long)n,
                    (double)(b + m) / el);
            next = msd_now() + 10;
        }
    }
    double secs = msd_now() - t0;
    const UNetConfig *c = &net.cfg;
    if (ends_with(o.out, ".safetensors")) {
        int64_t xs[4] = {n, c->in_ch, c->res, c->res}, ys[1] = {n};
        StWriteTensor t[2] = {{"images", ST_F32, 4, xs, x}, {"labels", ST_I32, 1, ys, labels}};
        char steps_s[16];
        snprintf(steps_s, sizeof steps_s, "%d", sc.steps);
        StMeta meta[3] = {{"format", "msdpipe-samples-1"}, {"unet.spec", net.spec}, {"sampler.steps", steps_s}};
        if (fs_mkdir_parent(o.out, err, sizeof err) || st_write(o.out, t, labels ? 2 : 1, meta, 3, err, sizeof err)) {
            log_error("%s", err);
            goto out;
        }
    } else if (fs_mkdir_p(o.out, err, sizeof err) ||
               image_write_folder(o.out, x, labels, n, c->in_ch, c->res, c->res, 0, err, sizeof err)) {
        log_error("%s", err);
        goto out;
    }
    if (o.grid) {
        /* image i is of class classes[i mod K]: with K columns, column j holds class classes[j] */
        int64_t g = n < 100 ? n : 100;
        int cols = ncls > 0 && ncls <= 16 && g >= ncls ? ncls : 0;
        if (cols) g -= g % cols;
        if (fs_mkdir_parent(o.grid, err, sizeof err) ||
            image_write_grid(o.grid, x, g, c->in_ch, c->res, c->res, cols, err, sizeof err)) {
            log_error("%s", err);
            goto out;
        }
    }
    printf("{\"out\": \"%s\", \"n\": %lld, \"ckpt\": \"%s\", \"net\": \"%s\", \"steps\": %d, \"nfe\": %d, \"churn\": %g, "
           "\"seed\": %llu, \"seconds\": %.2f, \"images_per_s\": %.2f}\n",
           o.out, (long long)n, o.ckpt, net.spec, sc.steps, sampler_nfe(&sc), o.churn, (unsigned long long)o.seed, secs,
           (double)n / (secs > 0 ? secs : 1e-9));
    rc = 0;
out:
    free(x);
    free(labels);
    edmunet_free(&net);
    backend_ctx_destroy(&ctx);
    return rc;
}
