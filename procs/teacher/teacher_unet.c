/* teacher_unet.c: msd-teacher --mode serve: a trained EDM UNet (the stage-0 checkpoint, its EMA
 * weights) as the denoiser of the serving loop (main.c): DENOISE "x" (N, C, H, W), "sigma" (N)
 * in (0, 1e6], "label" (N) for a class-conditional net, answered in chunks of --cap rows; and
 * SAMPLE through the same denoiser. On the GPU with --gpu N (the launcher's gpu=).
 *
 * Not here: training (train.c), the batching loop (main.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "edmunet.h"
#include "log.h"
#include "sampler.h"
#include "teacher.h"

typedef struct UNetTeacher {
    BackendCtx *ctx;
    EdmUNet net;
    SamplerEdm s;
} UNetTeacher;

static void unet_teacher_denoise(void *self, float *out, const float *x, const float *sigma, const int32_t *labels, int64_t N,
                         int64_t D) {
    UNetTeacher *u = self;
    MSD_CHECK(D == u->net.dim);
    sampler_edm_denoise(&u->s, out, x, sigma, labels, N);
}

static void unet_teacher_destroy(void *self) {
    UNetTeacher *u = self;
    sampler_edm_free(&u->s);
    edmunet_free(&u->net);
    backend_ctx_destroy(&u->ctx);
    free(u);
}

static struct {
    const char *ckpt, *spec;
    int cap, threads;
} opt = {NULL, NULL, 256, 0};

const ArgSpec teacher_unet_args[] = {
    ARG_STR_REQ("--ckpt", &opt.ckpt, "FILE", "the UNet checkpoint (its EMA weights are served)"),
    ARG_STR("--net", &opt.spec, "SPEC", "the UNet CONFIG-SPEC (default: the checkpoint's)"),
    ARG_INT("--cap", &opt.cap, 1, 1 << 16, "N", "rows per network call (default 256)"),
    ARG_INT("--threads", &opt.threads, 0, 1024, "T", "CPU threads (default: $MSD_THREADS, else all cores)"),
    ARG_INCLUDE(teacher_loop_args),
    ARG_END_,
};

int teacher_unet_open(Proc *p, TeacherNet *net) {
    const char *ckpt = opt.ckpt, *spec = opt.spec;
    int cap = opt.cap, threads = opt.threads;
    char err[1024];
    const Backend *be = p->gpu >= 0 ? proc_gpu(p, err, sizeof err) : backend_get(device_cpu(), err, sizeof err);
    if (!be || backend_missing(be, err, sizeof err)) return msd_fail(1, "backend: %s", err);
    UNetTeacher *u = msd_calloc(1, sizeof *u);
    u->ctx = backend_ctx_new(be, threads);
    if (edmunet_open(&u->net, ckpt, spec, be, u->ctx, cap, err, sizeof err)) {
        msd_fail(2, "--ckpt: %s", err);
        backend_ctx_destroy(&u->ctx);
        free(u);
        return 2;
    }
    sampler_edm_init(&u->s, &u->net.edm);
    snprintf(net->what, sizeof net->what, "the UNet %s of %s on %s, %d rows per call", u->net.spec, ckpt,
             be->name, cap);
    net->self = u;
    net->denoise = unet_teacher_denoise;
    net->destroy = unet_teacher_destroy;
    net->ndim = 3;
    net->shape[0] = u->net.cfg.in_ch;
    net->shape[1] = net->shape[2] = u->net.cfg.res;
    net->nclasses = u->net.cfg.label_dim;
    net->sigma_zero_ok = 0;
    net->max_sample = 4096;
    net->slow = 1;
    return 0;
}
