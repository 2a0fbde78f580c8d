/* backend_internal.h: what backend implementations (kernels/cpu, kernels/cuda) share
 * and callers of backend.h must not depend on: the layout of BackendCtx.
 *
 * The CUDA backend keeps its stream and library handles behind `dev`; backend_ctx_new calls
 * backend_cuda_ctx_init / backend_cuda_ctx_release (kernels/, optional) for a CUDA table. */
#ifndef MSD_BACKEND_INTERNAL_H
#define MSD_BACKEND_INTERNAL_H

#include "backend.h"

struct BackendCtx {
    const Backend *be;
    int threads;        /* CPU: chunks per parallel_for (>= 1) */
    float *scratch;     /* scratch_n floats on be's device, from be->alloc */
    int64_t scratch_n;
    void *dev;          /* backend-private state (CUDA stream, handles); NULL on the CPU */
};

#ifdef MSD_HAVE_CUDA
const Backend *backend_cuda_get(int index, char *err, size_t errlen);
/* Optional (weak: backend.c calls them only when kernels/ defines them): fill ctx->dev with
 * the stream and handles; return 0, or -1 with a message in err. */
int backend_cuda_ctx_init(BackendCtx *ctx, char *err, size_t errlen) __attribute__((weak));
void backend_cuda_ctx_release(BackendCtx *ctx) __attribute__((weak));
#endif

#endif
