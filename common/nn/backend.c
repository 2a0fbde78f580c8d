/* backend.c: picking a backend (backend_get), checking its op slots by name
 * (backend_require, backend_missing) and the per-process context with its scratch.
 * The ops themselves live in kernels/cpu (CPU) and kernels/cuda (CUDA). */
#include "backend.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_internal.h"
#include "log.h"
#include "parallel.h"

/* Every op slot of struct Backend, by name and offset, generated from the op list. */
#define SLOT(RET, NAME, PARAMS, ARGS) {#NAME, offsetof(Backend, NAME)},
static const struct { const char *name; size_t off; } slots[] = {
    MSD_BACKEND_OPS(SLOT) MSD_BACKEND_OPTIONAL_OPS(SLOT)
};
#undef SLOT
#define NAME_OF(RET, NAME, PARAMS, ARGS) #NAME,
const char *const backend_op_names[] = {MSD_BACKEND_OPS(NAME_OF) MSD_BACKEND_OPTIONAL_OPS(NAME_OF) NULL};
#undef NAME_OF
/* The struct holds the name, the device and the listed slots, nothing else. */
_Static_assert(sizeof(Backend) == offsetof(Backend, alloc) + BACKEND_NUM_OPS * sizeof(void (*)(void)),
               "struct Backend has a field that is not in MSD_BACKEND_OPS / MSD_BACKEND_OPTIONAL_OPS");
#define NSLOTS BACKEND_NUM_OPS
#define NREQUIRED BACKEND_NUM_REQUIRED

static void *slot_value(const Backend *b, size_t off) {
    void *p;
    memcpy(&p, (const char *)b + off, sizeof p);
    return p;
}

const Backend *backend_get(Device dev, char *err, size_t errlen) {
    if (dev.type == DEVICE_CPU) return &backend_cpu;
    if (dev.type == DEVICE_CUDA) {
#ifdef MSD_HAVE_CUDA
        return backend_cuda_get(dev.index, err, errlen);
#else
        msd_errf(err, errlen, "this build has no CUDA backend (rebuild with CUDA=1 on a machine with nvcc)");
        return NULL;
#endif
    }
    msd_errf(err, errlen, "unknown device type %d", (int)dev.type);
    return NULL;
}

int backend_require(const Backend *b, const char *const *names, char *err, size_t errlen) {
    MSD_CHECK(b != NULL && names != NULL);
    for (int i = 0; names[i]; i++) {
        int found = -1;
        for (int s = 0; s < NSLOTS; s++)
            if (strcmp(slots[s].name, names[i]) == 0) { found = s; break; }
        if (found < 0) return msd_errf(err, errlen, "backend %s: no op slot named '%s'", b->name, names[i]);
        if (!slot_value(b, slots[found].off))
            return msd_errf(err, errlen, "backend %s lacks op '%s'", b->name, names[i]);
    }
    return 0;
}

int backend_missing(const Backend *b, char *err, size_t errlen) {
    MSD_CHECK(b != NULL);
    int missing = 0;
    size_t used = 0;
    if (err && errlen) err[0] = 0;
    for (int s = 0; s < NREQUIRED; s++) {
        if (slot_value(b, slots[s].off)) continue;
        missing++;
        if (err && used + 1 < errlen) {
            int w = snprintf(err + used, errlen - used, "%s%s", used ? " " : "", slots[s].name);
            if (w > 0) used += (size_t)w;
            if (used >= errlen) used = errlen - 1;
        }
    }
    return missing;
}

BackendCtx *backend_ctx_new(const Backend *b, int threads) {
    MSD_CHECK(b != NULL);
    BackendCtx *ctx = msd_calloc(1, sizeof *ctx);
    ctx->be = b;
    if (threads <= 0) threads = parallel_default_threads(); /* MSD_THREADS, else every CPU */
    if (threads > PARALLEL_MAX_THREADS) threads = PARALLEL_MAX_THREADS;
    ctx->threads = threads;
    if (b->device == DEVICE_CPU) parallel_prestart(threads);
#ifdef MSD_HAVE_CUDA
    if (b->device == DEVICE_CUDA && backend_cuda_ctx_init) {
        char err[256];
        if (backend_cuda_ctx_init(ctx, err, sizeof err) != 0) msd_die("backend_ctx_new: %s", err);
    }
#endif
    return ctx;
}

void backend_ctx_destroy(BackendCtx **pctx) {
    if (!pctx || !*pctx) return;
    BackendCtx *ctx = *pctx;
    if (ctx->scratch) ctx->be->free(ctx, ctx->scratch);
#ifdef MSD_HAVE_CUDA
    if (ctx->be->device == DEVICE_CUDA && backend_cuda_ctx_release) backend_cuda_ctx_release(ctx);
#endif
    free(ctx);
    *pctx = NULL;
}

float *backend_ctx_scratch(BackendCtx *ctx, int64_t n) {
    MSD_CHECK(ctx != NULL && n >= 0);
    if (n > ctx->scratch_n) {
        if (ctx->scratch) ctx->be->free(ctx, ctx->scratch);
        /* grow with headroom so a slightly larger request later does not reallocate */
        int64_t want = n + n / 4;
        ctx->scratch = ctx->be->alloc(ctx, want);
        ctx->scratch_n = want;
    }
    return ctx->scratch;
}

int backend_ctx_threads(const BackendCtx *ctx) { return ctx ? ctx->threads : 1; }
