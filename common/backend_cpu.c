/* backend_cpu.c: the CPU backend table. Memory is plain host memory; the ops are in
 * ops_*.c (this engineer), optim.c (AdamW, EMA) and rng.c (Philox). This table is the
 * reference every other backend is tested against, and it is complete.
 *
 * Threading: ops split work over the pool in parallel.c and call OpenBLAS from inside the
 * chunks, so OpenBLAS itself is made single-threaded the first time a CPU op runs (two levels
 * of threads on a small machine only fight over cores). */
#include "blas.h"
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend_internal.h"
#include "log.h"
#include "ops_cpu.h"
#include "optim.h"
#include "parallel.h"
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
/* Large fills and copies are split over the pool in blocks of whole cache lines: one core
 * does not reach the machine's memory bandwidth on its own, and a training step zeroes a few
 * hundred megabytes of gradient buffers before the backward ops add into them. */
#define MEM_PAR_MIN (1 << 18) /* floats (1 MiB) */
#define MEM_BLOCK 4096        /* floats per work item */
typedef struct {
    float *dst;
    const float *src;
    float value;
    int64_t n;
} MemJob;
static void mem_fill_k(void *p, int64_t b0, int64_t b1, int tid) {
    const MemJob *j = p;
    (void)tid;
    int64_t i0 = b0 * MEM_BLOCK, i1 = b1 * MEM_BLOCK < j->n ? b1 * MEM_BLOCK : j->n;
    if (j->value == 0.0f) {
        memset(j->dst + i0, 0, (size_t)(i1 - i0) * sizeof(float));
        return;
    }
    for (int64_t i = i0; i < i1; i++) j->dst[i] = j->value;
}
static void mem_copy_k(void *p, int64_t b0, int64_t b1, int tid) {
    const MemJob *j = p;
    (void)tid;
    int64_t i0 = b0 * MEM_BLOCK, i1 = b1 * MEM_BLOCK < j->n ? b1 * MEM_BLOCK : j->n;
    memcpy(j->dst + i0, j->src + i0, (size_t)(i1 - i0) * sizeof(float));
}

static void cpu_memcpy(BackendCtx *ctx, float *dst, const float *src, int64_t n) {
    MSD_CHECK(n >= 0);
    if (!n) return;
    /* overlapping ranges (allowed, as memmove) are copied serially */
    uintptr_t d = (uintptr_t)dst, s = (uintptr_t)src, bytes = (uintptr_t)n * sizeof(float);
    int overlap = d < s + bytes && s < d + bytes;
    int t = backend_ctx_threads(ctx);
    if (n < MEM_PAR_MIN || t < 2 || overlap) {
        memmove(dst, src, (size_t)n * sizeof(float));
        return;
    }
    MemJob j = {.dst = dst, .src = src, .n = n};
    parallel_for(t, (n + MEM_BLOCK - 1) / MEM_BLOCK, mem_copy_k, &j);
}
static void cpu_fill(BackendCtx *ctx, float *dst, float value, int64_t n) {
    MSD_CHECK(n >= 0);
    if (!n) return;
    MemJob j = {.dst = dst, .value = value, .n = n};
    int t = backend_ctx_threads(ctx);
    parallel_for(n < MEM_PAR_MIN ? 1 : t, (n + MEM_BLOCK - 1) / MEM_BLOCK, mem_fill_k, &j);
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
    .norm_act_forward = cpu_norm_act_forward,
    .norm_act_backward = cpu_norm_act_backward,
    .rng_uniform = cpu_rng_uniform,
};
