/* parallel.h: a small persistent pthread pool for the CPU ops. parallel_for_chunks splits a
 * range [0, n) into nchunks contiguous chunks and runs them on up to `threads` threads (the
 * pool's workers plus the calling thread), each thread claiming the next unclaimed chunk until
 * none is left; it returns when every chunk is done. More chunks than threads balance the load
 * when a thread is descheduled or slower (a shared or virtual machine); fewer mean less
 * per-chunk overhead. Workers are created once (lazily, the first time a call needs them) and
 * then spin briefly and sleep between calls: no per-call thread creation.
 *
 * Not here: nested parallelism (a call from inside a chunk, or while another thread is using
 * the pool, runs every chunk serially on the calling thread), BLAS threading (the CPU backend
 * runs OpenBLAS single-threaded inside pool chunks). */
#ifndef MSD_PARALLEL_H
#define MSD_PARALLEL_H

#include <stdint.h>

#define PARALLEL_MAX_THREADS 64
#define PARALLEL_MAX_CHUNKS 4096
/* How long an idle worker (or a caller waiting for the last chunks) spins before it sleeps.
 * By default the spin follows the machine's load: PARALLEL_SPIN_NS while every thread of the
 * pool has a core to itself, PARALLEL_SPIN_LOADED_NS while other runnable threads compete for
 * the cores (a spinning thread then burns the share of the CPU the scheduler gives it, and
 * yields it late to the processes it shares the core with). The load is the number of runnable
 * threads of the machine (/proc/loadavg) less the pool's own, sampled at most every
 * PARALLEL_LOAD_SAMPLE_NS by the caller of a job and smoothed. The spin changes only when a
 * thread waits, never what is computed. The environment variable MSD_SPIN_US (microseconds)
 * fixes it instead. */
#define PARALLEL_SPIN_NS 2000000
#define PARALLEL_SPIN_LOADED_NS 50000
#define PARALLEL_LOAD_SAMPLE_NS 100000000

/* A chunk: the half-open range [begin, end) and its index chunk < nchunks, which is the same
 * for the same (nchunks, n) whichever thread runs it: use it to pick per-chunk scratch. Chunk
 * i covers [n*i/nchunks, n*(i+1)/nchunks). */
typedef void (*ParallelFn)(void *arg, int64_t begin, int64_t end, int chunk);

/* Run fn over [0, n) in min(nchunks, n) chunks on min(threads, chunks) threads (threads is
 * clamped to [1, PARALLEL_MAX_THREADS], nchunks to [1, PARALLEL_MAX_CHUNKS]). */
void parallel_for_chunks(int threads, int nchunks, int64_t n, ParallelFn fn, void *arg);
/* parallel_for_chunks(threads, threads, n, fn, arg) */
void parallel_for(int threads, int64_t n, ParallelFn fn, void *arg);
/* Number of CPUs this process may run on (>= 1). */
int parallel_cpu_count(void);

/* The environment variable that sets a process's pool width when its code does not choose one
 * (msdpipe sets it for every process it starts: docs/PIPELINES.md "Threads"). */
#define PARALLEL_THREADS_ENV "MSD_THREADS"
/* Parse a MSD_THREADS value: 0 with a whole number 1..PARALLEL_MAX_THREADS in *out; else -1. */
int parallel_parse_threads(const char *s, int *out);
/* The width for a caller that leaves it to the default: MSD_THREADS when set (a bad value is
 * fatal, naming it), else parallel_cpu_count() clamped to PARALLEL_MAX_THREADS. */
int parallel_default_threads(void);
/* Create the pool's workers for jobs of `threads` threads now rather than at the first such
 * job (they sleep until work comes). Workers are named "msd-pool" (/proc/PID/task/ * /comm),
 * so a process's width can be seen from outside: threads - 1 of them. */
void parallel_prestart(int threads);
/* What the pool chose and how often, for benchmarks: e.g. "spin auto (2000 us quiet, 50 us
 * loaded): 812 jobs quiet, 1204 loaded, last load 1.0 other runnable on 2 CPUs" or "spin
 * fixed 2000 us (MSD_SPIN_US)". */
void parallel_describe(char *buf, int cap);
/* The spin now, in ns (tests and benchmarks). */
int64_t parallel_spin_ns(void);
/* Read the load from PATH instead of /proc/loadavg, from the next job on (tests). */
void parallel_set_load_file(const char *path);

#endif
