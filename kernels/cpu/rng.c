/* rng.c (CPU): the rng_normal / rng_uniform slots of the CPU backend: n numbers of stream
 * (seed, stream) from offset into host memory, by the mapping of common/base/philox.h, whose
 * host fills they are (the CUDA twin kernels/cuda/rng.cu follows the same mapping). */
#include "cpu_ops.h"
#include "philox.h"

void cpu_rng_uniform(BackendCtx *ctx, float *out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset) {
    (void)ctx;
    rng_uniform_fill(out, n, seed, stream, offset);
}

void cpu_rng_normal(BackendCtx *ctx, float *out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset) {
    (void)ctx;
    rng_normal_fill(out, n, seed, stream, offset);
}
