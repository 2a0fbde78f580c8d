/* backend_cpu.c: the CPU backend table. Memory is plain host memory; the ops are in
 * ops_*.c (this engineer), optim.c (AdamW, EMA) and rng.c (Philox). This table is the
 * reference every other backend is tested against, and it is complete.
 *
 * Threading: ops split work over the pool in parallel.c and call OpenBLAS from inside the
 * chunks, so OpenBLAS itself is made single-threaded the first time a CPU op runs (two levels
 * of threads on a small machine only fight over cores). */
#include "blas.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "backend_internal.h"
#include "log.h"
#include "ops_cpu.h"
#include "optim.h"
#include "rng.h"

static pthread_once_t blas_once = PTHREAD_ONCE_INIT;
static void blas_single_thread(void) { openblas_set_num_threads(1); }

static float *cpu_alloc(BackendCtx *ctx, int64_t n) {
    (void)ctx;
    MSD_CHECK(n >= 0);
    pthread_once(&blas_once, blas_single_thread);
    /* 64-byte aligned for AVX-512 loads; zeroed as the contract says */
    size_t bytes = ((size_t)(n ? n : 1) * sizeof(float) + 63) & ~(size_t)63;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes) != 0) msd_die("out of memory allocating %lld floats", (long long)n);
    memset(p, 0, bytes);
    return p;
}
static void cpu_free(BackendCtx *ctx, float *p) {
    (void)ctx;
    free(p);
}
static void cpu_memcpy(BackendCtx *ctx, float *dst, const float *src, int64_t n) {
    (void)ctx;
    MSD_CHECK(n >= 0);
    if (n) memmove(dst, src, (size_t)n * sizeof(float));
}
static void cpu_fill(BackendCtx *ctx, float *dst, float value, int64_t n) {
    (void)ctx;
    MSD_CHECK(n >= 0);
    if (value == 0.0f) {
        memset(dst, 0, (size_t)n * sizeof(float));
        return;
    }
    for (int64_t i = 0; i < n; i++) dst[i] = value;
}

const Backend backend_cpu = {
    .name = "cpu",
    .device = DEVICE_CPU,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_memcpy,
    .download = cpu_memcpy,
    .copy = cpu_memcpy,
    .fill = cpu_fill,
    .linear_forward = cpu_linear_forward,
    .linear_backward = cpu_linear_backward,
    .conv2d_forward = cpu_conv2d_forward,
    .conv2d_backward = cpu_conv2d_backward,
    .groupnorm_forward = cpu_groupnorm_forward,
    .groupnorm_backward = cpu_groupnorm_backward,
    .silu_forward = cpu_silu_forward,
    .silu_backward = cpu_silu_backward,
    .softplus_forward = cpu_softplus_forward,
    .softplus_backward = cpu_softplus_backward,
    .add = cpu_add,
    .mul = cpu_mul,
    .mul_backward = cpu_mul_backward,
    .scale = cpu_scale,
    .axpy = cpu_axpy,
    .scale_rows = cpu_scale_rows,
    .modulate_forward = cpu_modulate_forward,
    .modulate_backward = cpu_modulate_backward,
    .add_channel_forward = cpu_add_channel_forward,
    .add_channel_backward = cpu_add_channel_backward,
    .sinusoidal_forward = cpu_sinusoidal_forward,
    .sinusoidal_backward = cpu_sinusoidal_backward,
    .onehot = cpu_onehot,
    .upsample2x_forward = cpu_upsample2x_forward,
    .upsample2x_backward = cpu_upsample2x_backward,
    .concat_forward = cpu_concat_forward,
    .concat_backward = cpu_concat_backward,
    .attention_forward = cpu_attention_forward,
    .attention_backward = cpu_attention_backward,
    .wmse_forward = cpu_wmse_forward,
    .wmse_backward = cpu_wmse_backward,
    .sumsq = cpu_sumsq,
    .adamw_update = cpu_adamw_update,
    .ema_update = cpu_ema_update,
    .rng_normal = cpu_rng_normal,
    .rng_uniform = cpu_rng_uniform,
};
