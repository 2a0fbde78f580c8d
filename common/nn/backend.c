/* backend.c: picking a backend (backend_get), checking its op slots by name
 * (backend_require, backend_missing) and the per-process context with its scratch.
 * The ops themselves live in kernels/cpu (CPU) and kernels/cuda (CUDA, a shared library opened
 * on the first request for a GPU: backend_internal.h). */
#include "backend.h"

#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef MSD_HAVE_CUDA
#include <dlfcn.h>
#include <pthread.h>
#endif

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

#ifdef MSD_HAVE_CUDA
/* ---- the CUDA backend, opened on first use (backend_internal.h) ----
 * Looked for at $MSD_CUDA_LIB, else beside the binary, else in the binary's ../lib (the test
 * and benchmark programs in build/VARIANT/{tests,bench} find build/VARIANT/lib). */
typedef struct CudaLib {
    const Backend *(*get)(int, char *, size_t);
    int (*init)(BackendCtx *, char *, size_t);
    void (*release)(BackendCtx *);
    char err[1536];
} CudaLib;
static CudaLib g_cuda;
static pthread_once_t g_cuda_once = PTHREAD_ONCE_INIT;

static void cuda_lib_open(void) {
    char cand[3][PATH_MAX + 64], exe[PATH_MAX];
    int n = 0;
    const char *env = getenv("MSD_CUDA_LIB");
    if (env && *env) snprintf(cand[n++], sizeof cand[0], "%s", env);
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (k > 0 && !(env && *env)) {
        exe[k] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        snprintf(cand[n++], sizeof cand[0], "%s/%s", exe, BACKEND_CUDA_LIB);
        snprintf(cand[n++], sizeof cand[0], "%s/../lib/%s", exe, BACKEND_CUDA_LIB);
    }
    for (int i = 0; i < n; i++) {
        if (access(cand[i], F_OK) != 0) continue;
        void *h = dlopen(cand[i], RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            const char *why = dlerror();
            msd_errf(g_cuda.err, sizeof g_cuda.err, "the CUDA backend %s cannot be loaded: %s", cand[i],
                     why ? why : "dlopen failed");
            return;
        }
        *(void **)&g_cuda.get = dlsym(h, "backend_cuda_get");
        *(void **)&g_cuda.init = dlsym(h, "backend_cuda_ctx_init");
        *(void **)&g_cuda.release = dlsym(h, "backend_cuda_ctx_release");
        if (!g_cuda.get || !g_cuda.init || !g_cuda.release) {
            msd_errf(g_cuda.err, sizeof g_cuda.err, "%s is not this build's CUDA backend (no backend_cuda_get, "
                     "backend_cuda_ctx_init or backend_cuda_ctx_release)", cand[i]);
            g_cuda.get = NULL;
            return; /* the handle stays open: closing a library that ran constructors is not worth it */
        }
        return;
    }
    if (env && *env) msd_errf(g_cuda.err, sizeof g_cuda.err, "MSD_CUDA_LIB=%s: no such file", cand[0]);
    else if (n == 2)
        msd_errf(g_cuda.err, sizeof g_cuda.err, "this build's CUDA backend %s is in neither %s nor %s (it is built "
                 "with the binaries; copy it beside them, or set MSD_CUDA_LIB to its path)", BACKEND_CUDA_LIB, cand[0], cand[1]);
    else msd_errf(g_cuda.err, sizeof g_cuda.err, "cannot find %s: /proc/self/exe is unreadable (set MSD_CUDA_LIB)",
                  BACKEND_CUDA_LIB);
}
#endif

const Backend *backend_get(Device dev, char *err, size_t errlen) {
    if (dev.type == DEVICE_CPU) return &backend_cpu;
    if (dev.type == DEVICE_CUDA) {
#ifdef MSD_HAVE_CUDA
        pthread_once(&g_cuda_once, cuda_lib_open);
        if (!g_cuda.get) {
            msd_errf(err, errlen, "%s", g_cuda.err);
            return NULL;
        }
        return g_cuda.get(dev.index, err, errlen);
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
    if (b->device == DEVICE_CUDA && g_cuda.init) { /* a CUDA table came from backend_get: the library is open */
        char err[256];
        if (g_cuda.init(ctx, err, sizeof err) != 0) msd_die("backend_ctx_new: %s", err);
    }
#endif
    return ctx;
}

void backend_ctx_destroy(BackendCtx **pctx) {
    if (!pctx || !*pctx) return;
    BackendCtx *ctx = *pctx;
    if (ctx->scratch) ctx->be->free(ctx, ctx->scratch);
#ifdef MSD_HAVE_CUDA
    if (ctx->be->device == DEVICE_CUDA && g_cuda.release) g_cuda.release(ctx);
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
