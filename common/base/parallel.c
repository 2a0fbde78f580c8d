/* parallel.c: see parallel.h. One global pool; a caller takes run_lock for the whole call
 * (trylock: a busy pool means "run serially", never wait for another user).
 *
 * A job is published as one 64-bit ticket (generation, number of chunks, next unclaimed chunk).
 * Every participating thread, the caller included, claims chunks by compare-and-swap on the
 * ticket until none are left, so a thread that the OS (or, on a virtual machine, the
 * hypervisor) does not schedule for a while holds up at most the one chunk it claimed: the
 * others take the rest. Because the generation is part of the ticket, a worker that wakes late
 * can never claim a chunk of a newer job by mistake, and it reads the job's parameters only
 * after a successful claim (the job cannot finish, and so cannot be replaced, while one of
 * its chunks is claimed and not done).
 *
 * Waiting: workers spin (with the CPU's pause hint) for a while after a job before they sleep
 * on a condition variable, as OpenMP runtimes do (PARALLEL_SPIN_NS, or PARALLEL_SPIN_LOADED_NS
 * while other threads compete for the cores: parallel.h), because a training step calls the
 * pool hundreds of times with short serial gaps, and a futex wake-up of a sleeping thread
 * costs tens of microseconds (much more on a virtual machine). The caller, once no chunk is
 * left to claim, spins for the stragglers the same way. Lost wake-ups are ruled out by the
 * usual pairing: a sleeper announces itself (sleepers / caller_sleeping) and re-checks the
 * condition, both sequentially consistent, and the other side checks the announcement after
 * its own sequentially consistent write, taking the mutex before it signals. */
#include "parallel.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* ticket: generation (bits 32..63) | nchunks (bits 16..31) | next chunk (bits 0..15) */
#define T_GEN(t) ((uint32_t)((t) >> 32))
#define T_NCH(t) ((int)(((t) >> 16) & 0xffff))
#define T_NEXT(t) ((int)((t) & 0xffff))
#define T_MAKE(g, nch, next) (((uint64_t)(g) << 32) | ((uint64_t)(nch) << 16) | (uint64_t)(next))

static struct {
    pthread_mutex_t run_lock; /* held by the thread whose job the pool is running */
    pthread_mutex_t m;        /* for the condition variables only */
    pthread_cond_t cv_start, cv_done;
    int nworkers;             /* created so far (only ever grows) */
    _Atomic uint64_t ticket;
    _Atomic int done;         /* chunks of the current job finished */
    _Atomic int sleepers;     /* workers in (or about to enter) cond_wait on cv_start */
    _Atomic int caller_sleeping;
    _Atomic int nthreads;     /* threads the current job may use (workers 1 .. nthreads-1) */
    ParallelFn fn;            /* the current job; written before the ticket is published */
    void *arg;
    int64_t n;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
          PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0, 0, NULL, NULL, 0};

static __thread int in_parallel; /* this thread is running a chunk: nested calls go serial */
static _Atomic int64_t spin_ns = -1; /* the current spin (read by the workers) */
static int spin_fixed;               /* MSD_SPIN_US set: spin_ns never changes */
/* the load that picks the spin (written by the caller that holds run_lock only) */
static struct {
    int cpus;           /* CPUs of the machine (the load is counted over all of them) */
    int64_t next_ns;    /* when to sample again */
    double others;      /* smoothed runnable threads that are not the pool's */
    int ok;             /* /proc/loadavg read at least once */
    uint64_t jobs_quiet, jobs_loaded;
    char path[256];     /* "" : /proc/loadavg */
} load;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    atomic_signal_fence(memory_order_seq_cst);
#endif
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void run_chunk(ParallelFn fn, void *arg, int64_t n, int nchunks, int i) {
    int64_t b = n * i / nchunks, e = n * (i + 1) / nchunks;
    if (e > b) fn(arg, b, e, i);
}

/* Claim and run chunks of generation gen until none are left; returns how many this thread ran. */
static int claim_and_run(uint32_t gen) {
    int ran = 0;
    uint64_t t = atomic_load(&pool.ticket);
    for (;;) {
        if (T_GEN(t) != gen || T_NEXT(t) >= T_NCH(t)) return ran;
        if (!atomic_compare_exchange_weak(&pool.ticket, &t, t + 1)) continue; /* t reloaded */
        /* chunk T_NEXT(t) of this job is ours: the job's parameters are stable until it is done */
        int nch = T_NCH(t);
        run_chunk(pool.fn, pool.arg, pool.n, nch, T_NEXT(t));
        ran++;
        if (atomic_fetch_add(&pool.done, 1) + 1 == nch && atomic_load(&pool.caller_sleeping)) {
            pthread_mutex_lock(&pool.m);
            pthread_cond_signal(&pool.cv_done);
            pthread_mutex_unlock(&pool.m);
        }
        t = atomic_load(&pool.ticket);
    }
}

static void *worker_main(void *p) {
    int idx = (int)(intptr_t)p; /* worker idx takes part in jobs that allow more than idx threads */
    in_parallel = 1;
    uint32_t seen = 0;
    for (;;) {
        /* wait for a new generation: spin, then sleep */
        uint64_t t = atomic_load(&pool.ticket);
        if (T_GEN(t) == seen) {
            int64_t until = now_ns() + atomic_load_explicit(&spin_ns, memory_order_relaxed);
            for (int i = 1; T_GEN(t = atomic_load(&pool.ticket)) == seen; i++) {
                cpu_relax();
                if ((i & 255) == 0 && now_ns() > until) break;
            }
        }
        if (T_GEN(t) == seen) {
            pthread_mutex_lock(&pool.m);
            atomic_fetch_add(&pool.sleepers, 1);
            while (T_GEN(t = atomic_load(&pool.ticket)) == seen) pthread_cond_wait(&pool.cv_start, &pool.m);
            atomic_fetch_sub(&pool.sleepers, 1);
            pthread_mutex_unlock(&pool.m);
        }
        seen = T_GEN(t);
        if (idx < atomic_load(&pool.nthreads)) claim_and_run(seen);
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

int parallel_parse_threads(const char *s, int *out) {
    if (!s || *s < '0' || *s > '9') return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*end || errno || v < 1 || v > PARALLEL_MAX_THREADS) return -1;
    *out = (int)v;
    return 0;
}

int parallel_default_threads(void) {
    const char *e = getenv(PARALLEL_THREADS_ENV);
    int t;
    if (e) {
        if (parallel_parse_threads(e, &t) < 0)
            msd_die("%s=%s: expected a thread count 1..%d", PARALLEL_THREADS_ENV, e, PARALLEL_MAX_THREADS);
        return t;
    }
    t = parallel_cpu_count();
    return t > PARALLEL_MAX_THREADS ? PARALLEL_MAX_THREADS : t;
}

static void init_spin(void);

/* Create workers 1 .. threads-1 that do not exist yet; the caller holds run_lock. */
static void create_workers(int threads) {
    while (pool.nworkers < threads - 1) {
        pthread_t th;
        int rc = pthread_create(&th, NULL, worker_main, (void *)(intptr_t)(pool.nworkers + 1));
        if (rc != 0) msd_die("parallel: pthread_create failed: %s", strerror(rc));
        pthread_setname_np(th, "msd-pool");
        pthread_detach(th);
        pool.nworkers++;
    }
}

void parallel_prestart(int threads) {
    if (threads > PARALLEL_MAX_THREADS) threads = PARALLEL_MAX_THREADS;
    if (threads <= 1) return;
    init_spin();
    pthread_mutex_lock(&pool.run_lock);
    create_workers(threads);
    pthread_mutex_unlock(&pool.run_lock);
}

static void init_spin(void) {
    if (atomic_load_explicit(&spin_ns, memory_order_relaxed) >= 0) return;
    const char *e = getenv("MSD_SPIN_US");
    char *end;
    long v = e && *e ? strtol(e, &end, 10) : -1;
    if (e && *e && *end == '\0' && v >= 0 && v <= 10000000) {
        spin_fixed = 1;
        atomic_store(&spin_ns, (int64_t)v * 1000);
    } else {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        load.cpus = c > 0 ? (int)c : 1;
        atomic_store(&spin_ns, PARALLEL_SPIN_NS);
    }
}

/* Runnable threads of the machine now (the 4th field of /proc/loadavg, "R/TOTAL"), or -1. */
static int runnable_now(void) {
    int fd = open(load.path[0] ? load.path : "/proc/loadavg", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    char b[128];
    ssize_t n = read(fd, b, sizeof b - 1);
    close(fd);
    if (n <= 0) return -1;
    b[n] = '\0';
    const char *p = b;
    for (int f = 0; f < 3; f++) { /* skip the three averages */
        while (*p && *p != ' ') p++;
        while (*p == ' ') p++;
    }
    if (*p < '0' || *p > '9') return -1;
    return atoi(p);
}

/* The caller of a job of `threads` threads, holding run_lock: resample the load when due and
 * set the spin. The pool's own runnable threads are the caller and the workers that are not
 * asleep; the others compete for the CPUs when more of them are runnable than the CPUs the
 * pool leaves free. */
static void follow_load(int threads) {
    if (spin_fixed) return;
    int64_t t = now_ns();
    if (t >= load.next_ns) {
        load.next_ns = t + PARALLEL_LOAD_SAMPLE_NS;
        int r = runnable_now();
        if (r >= 0) {
            int ours = 1 + pool.nworkers - atomic_load(&pool.sleepers);
            double others = r > ours ? r - ours : 0;
            load.others = load.ok ? 0.5 * load.others + 0.5 * others : others;
            load.ok = 1;
            int loaded = load.others > load.cpus - threads + 0.5;
            atomic_store_explicit(&spin_ns, loaded ? PARALLEL_SPIN_LOADED_NS : PARALLEL_SPIN_NS, memory_order_relaxed);
        }
    }
    if (atomic_load_explicit(&spin_ns, memory_order_relaxed) == PARALLEL_SPIN_NS) load.jobs_quiet++;
    else load.jobs_loaded++;
}

int64_t parallel_spin_ns(void) {
    init_spin();
    return atomic_load(&spin_ns);
}

void parallel_set_load_file(const char *path) {
    pthread_mutex_lock(&pool.run_lock);
    snprintf(load.path, sizeof load.path, "%s", path ? path : "");
    load.next_ns = 0;
    load.ok = 0;
    pthread_mutex_unlock(&pool.run_lock);
}

void parallel_describe(char *buf, int cap) {
    init_spin();
    if (spin_fixed) {
        snprintf(buf, (size_t)cap, "spin fixed %lld us (MSD_SPIN_US)", (long long)(atomic_load(&spin_ns) / 1000));
        return;
    }
    pthread_mutex_lock(&pool.run_lock); /* load is the run_lock holder's */
    snprintf(buf, (size_t)cap, "spin auto (%d us quiet, %d us loaded): %llu jobs quiet, %llu loaded; last load %.1f other runnable on %d CPUs",
             PARALLEL_SPIN_NS / 1000, PARALLEL_SPIN_LOADED_NS / 1000, (unsigned long long)load.jobs_quiet,
             (unsigned long long)load.jobs_loaded, load.others, load.cpus);
    pthread_mutex_unlock(&pool.run_lock);
}

void parallel_for_chunks(int threads, int nchunks, int64_t n, ParallelFn fn, void *arg) {
    if (n <= 0) return;
    if (threads > PARALLEL_MAX_THREADS) threads = PARALLEL_MAX_THREADS;
    if (threads < 1) threads = 1;
    if (nchunks > PARALLEL_MAX_CHUNKS) nchunks = PARALLEL_MAX_CHUNKS;
    if (nchunks < 1) nchunks = 1;
    if ((int64_t)nchunks > n) nchunks = (int)n;
    if (threads > nchunks) threads = nchunks;
    if (threads == 1 || in_parallel || pthread_mutex_trylock(&pool.run_lock) != 0) {
        for (int i = 0; i < nchunks; i++) run_chunk(fn, arg, n, nchunks, i);
        return;
    }
    init_spin();
    follow_load(threads);
    create_workers(threads); /* the missing workers (idx 1 .. threads-1) */
    pool.fn = fn;
    pool.arg = arg;
    pool.n = n;
    atomic_store(&pool.done, 0);
    atomic_store(&pool.nthreads, threads);
    uint32_t gen = T_GEN(atomic_load(&pool.ticket)) + 1;
    atomic_store(&pool.ticket, T_MAKE(gen, nchunks, 0)); /* publishes the job */
    if (atomic_load(&pool.sleepers) > 0) {
        pthread_mutex_lock(&pool.m);
        pthread_cond_broadcast(&pool.cv_start);
        pthread_mutex_unlock(&pool.m);
    }

    in_parallel = 1;
    claim_and_run(gen);
    in_parallel = 0;

    if (atomic_load(&pool.done) < nchunks) {
        int64_t until = now_ns() + atomic_load_explicit(&spin_ns, memory_order_relaxed);
        for (int i = 1; atomic_load(&pool.done) < nchunks; i++) {
            cpu_relax();
            if ((i & 255) == 0 && now_ns() > until) break;
        }
    }
    if (atomic_load(&pool.done) < nchunks) {
        pthread_mutex_lock(&pool.m);
        atomic_store(&pool.caller_sleeping, 1);
        while (atomic_load(&pool.done) < nchunks) pthread_cond_wait(&pool.cv_done, &pool.m);
        atomic_store(&pool.caller_sleeping, 0);
        pthread_mutex_unlock(&pool.m);
    }
    pthread_mutex_unlock(&pool.run_lock);
}

void parallel_for(int threads, int64_t n, ParallelFn fn, void *arg) {
    parallel_for_chunks(threads, threads, n, fn, arg);
}
