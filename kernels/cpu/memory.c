/* memory.c (CPU): the memory slots of the CPU backend: 64-byte aligned zeroed allocation, and
 * copies and fills split over the thread pool when large. Host and "device" memory are the
 * same here, so upload, download and copy are one memmove-like copy. The first allocation
 * makes OpenBLAS single-threaded (see table.c). */
#include "blas.h"
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend_internal.h"
#include "cpu_ops.h"
#include "log.h"
#include "parallel.h"

static pthread_once_t blas_once = PTHREAD_ONCE_INIT;
static void blas_single_thread(void) { openblas_set_num_threads(1); }

float *cpu_alloc(BackendCtx *ctx, int64_t n) {
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
void cpu_free(BackendCtx *ctx, float *p) {
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
void cpu_fill(BackendCtx *ctx, float *dst, float value, int64_t n) {
    MSD_CHECK(n >= 0);
    if (!n) return;
    MemJob j = {.dst = dst, .value = value, .n = n};
    int t = backend_ctx_threads(ctx);
    parallel_for(n < MEM_PAR_MIN ? 1 : t, (n + MEM_BLOCK - 1) / MEM_BLOCK, mem_fill_k, &j);
}
void cpu_upload(BackendCtx *ctx, float *dst, const float *host, int64_t n) { cpu_memcpy(ctx, dst, host, n); }
void cpu_download(BackendCtx *ctx, float *host, const float *src, int64_t n) { cpu_memcpy(ctx, host, src, n); }
void cpu_copy(BackendCtx *ctx, float *dst, const float *src, int64_t n) { cpu_memcpy(ctx, dst, src, n); }
