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
/* The CUDA backend's entry points, defined in kernels/cuda/table.cu, which is built into the
 * shared library libmsd-cuda.so: backend.c opens it (dlopen) on the first request for a GPU
 * and looks these up by name, so the binaries do not link CUDA (docs/CUDA.md). The library's
 * own references into the engine (msd_errf, msd_die, msd_calloc, msd_check_fail,
 * backend_ctx_scratch) resolve against the binary, which exports its symbols (-rdynamic).
 * ctx_init fills ctx->dev with the stream and handles (0, or -1 with a message in err). */
#define BACKEND_CUDA_LIB "libmsd-cuda.so"
const Backend *backend_cuda_get(int index, char *err, size_t errlen);
int backend_cuda_ctx_init(BackendCtx *ctx, char *err, size_t errlen);
void backend_cuda_ctx_release(BackendCtx *ctx);
#endif

#endif
