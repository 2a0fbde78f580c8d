/* parallel.c: see parallel.h. One global pool; a caller takes run_lock for the whole call
 * (trylock: a busy pool means "run serially", never wait for another user). Workers wait on a
 * generation counter; the caller runs chunk 0 itself and waits until the workers that got a
 * chunk have finished theirs. */
#include "parallel.h"

#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static struct {
    pthread_mutex_t run_lock;  /* held by the thread whose job the pool is running */
    pthread_mutex_t m;
    pthread_cond_t cv_start, cv_done;
    int nworkers;
    uint64_t gen;
    int pending;               /* workers with a chunk that have not finished it */
    ParallelFn fn;
    void *arg;
    int64_t n;
    int nchunks;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
          PTHREAD_COND_INITIALIZER, 0, 0, 0, NULL, NULL, 0, 0};

static __thread int in_parallel; /* this thread is running a chunk: nested calls go serial */

static void run_chunk(ParallelFn fn, void *arg, int64_t n, int nchunks, int i) {
    int64_t b = n * i / nchunks, e = n * (i + 1) / nchunks;
    if (e > b) fn(arg, b, e, i);
}

static void *worker_main(void *p) {
    int idx = (int)(intptr_t)p; /* this worker runs chunk idx (the caller runs chunk 0) */
    in_parallel = 1;
    uint64_t seen = 0;
    pthread_mutex_lock(&pool.m);
    for (;;) {
        while (pool.gen == seen) pthread_cond_wait(&pool.cv_start, &pool.m);
        seen = pool.gen;
        if (idx >= pool.nchunks) continue;
        ParallelFn fn = pool.fn;
        void *arg = pool.arg;
        int64_t n = pool.n;
        int nchunks = pool.nchunks;
        pthread_mutex_unlock(&pool.m);
        run_chunk(fn, arg, n, nchunks, idx);
        pthread_mutex_lock(&pool.m);
        if (--pool.pending == 0) pthread_cond_signal(&pool.cv_done);
    }
    return NULL;
}

int parallel_cpu_count(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int c = CPU_COUNT(&set);
        if (c > 0) return c;
    }
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    return c > 0 ? (int)c : 1;
}

void parallel_for(int threads, int64_t n, ParallelFn fn, void *arg) {
    if (n <= 0) return;
    if (threads > PARALLEL_MAX_THREADS) threads = PARALLEL_MAX_THREADS;
    int nchunks = threads < 1 ? 1 : threads;
    if ((int64_t)nchunks > n) nchunks = (int)n;
    if (nchunks == 1 || in_parallel || pthread_mutex_trylock(&pool.run_lock) != 0) {
        fn(arg, 0, n, 0);
        return;
    }
    /* create missing workers (idx 1 .. nchunks-1) */
    while (pool.nworkers < nchunks - 1) {
        pthread_t th;
        int rc = pthread_create(&th, NULL, worker_main, (void *)(intptr_t)(pool.nworkers + 1));
        if (rc != 0) msd_die("parallel: pthread_create failed: %s", strerror(rc));
        pthread_detach(th);
        pool.nworkers++;
    }
    pthread_mutex_lock(&pool.m);
    pool.fn = fn;
    pool.arg = arg;
    pool.n = n;
    pool.nchunks = nchunks;
    pool.pending = nchunks - 1;
    pool.gen++;
    pthread_cond_broadcast(&pool.cv_start);
    pthread_mutex_unlock(&pool.m);

    in_parallel = 1;
    run_chunk(fn, arg, n, nchunks, 0);
    in_parallel = 0;

    pthread_mutex_lock(&pool.m);
    while (pool.pending > 0) pthread_cond_wait(&pool.cv_done, &pool.m);
    pthread_mutex_unlock(&pool.m);
    pthread_mutex_unlock(&pool.run_lock);
}
