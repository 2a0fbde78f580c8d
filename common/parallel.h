/* parallel.h: a small persistent pthread pool for the CPU ops. parallel_for splits a range
 * [0, n) into at most `threads` contiguous chunks and runs them on the pool's workers plus the
 * calling thread; it returns when every chunk is done. Workers are created once (lazily, the
 * first time a call needs them) and then sleep between calls: no per-call thread creation.
 *
 * Not here: work stealing, nested parallelism (a parallel_for called from inside a chunk, or
 * while another thread is using the pool, runs serially on the calling thread with tid 0),
 * BLAS threading (the CPU backend runs OpenBLAS single-threaded inside pool chunks). */
#ifndef MSD_PARALLEL_H
#define MSD_PARALLEL_H

#include <stdint.h>

#define PARALLEL_MAX_THREADS 64

/* A chunk: the half-open range [begin, end) and the index tid < threads of the chunk (use it
 * to pick per-thread scratch). */
typedef void (*ParallelFn)(void *arg, int64_t begin, int64_t end, int tid);

/* Run fn over [0, n) in min(threads, n) chunks (threads is clamped to [1, PARALLEL_MAX_THREADS]). */
void parallel_for(int threads, int64_t n, ParallelFn fn, void *arg);
/* Number of CPUs this process may run on (>= 1). */
int parallel_cpu_count(void);

#endif
