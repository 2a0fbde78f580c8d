/* test_parallel.c: the thread pool (common/base/parallel.c). Every index of the range is run exactly
 * once, by the chunk the header promises, for many (threads, chunks, n) combinations; a chunk
 * that stalls (as a descheduled thread does) is covered while the other threads take the rest;
 * work stealing: a chunk that blocks until every other chunk is done is released because the
 * other thread runs all of them (a static split of the chunks among the threads would leave
 * some queued behind the blocked one: the bounded wait then times out and the test fails);
 * thousands of back-to-back calls, with and without the spinning phase, lose no chunk and no
 * wake-up; a call from inside a chunk, and calls from two threads at once, run serially and
 * still cover everything. The spin follows the load: a machine whose runnable threads (the
 * /proc/loadavg field, here from a file the test writes) leave no core free to the pool gets
 * the short spin, a quiet one the long one, and an unreadable or malformed file changes
 * nothing. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "check.h"
#include "parallel.h"

#define NMAX 5000

typedef struct {
    int64_t n;
    int nchunks;
    _Atomic int hits[NMAX];
    _Atomic int bad_chunk;   /* a chunk whose range is not the promised one */
    _Atomic int chunk_seen[PARALLEL_MAX_CHUNKS];
    int stall_chunk;         /* this chunk sleeps stall_ms before it runs (-1: none) */
    int stall_ms;
    _Atomic int nested_ok;   /* nested calls that covered their range */
    int nest;
} Job;

static void mark(void *p, int64_t b, int64_t e, int chunk) {
    Job *j = p;
    int64_t nch = j->nchunks < j->n ? j->nchunks : j->n;
    if (b != j->n * chunk / nch || e != j->n * (chunk + 1) / nch) atomic_fetch_add(&j->bad_chunk, 1);
    atomic_fetch_add(&j->chunk_seen[chunk], 1);
    if (chunk == j->stall_chunk) {
        struct timespec ts = {0, (long)j->stall_ms * 1000000L};
        nanosleep(&ts, NULL);
    }
    for (int64_t i = b; i < e; i++) atomic_fetch_add(&j->hits[i], 1);
}

static Job *job_new(int64_t n, int nchunks) {
    Job *j = calloc(1, sizeof *j);
    j->n = n;
    j->nchunks = nchunks;
    j->stall_chunk = -1;
    return j;
}

/* every index once, every chunk once, ranges as promised */
static int job_ok(Job *j) {
    int64_t nch = j->nchunks < j->n ? j->nchunks : j->n;
    if (atomic_load(&j->bad_chunk)) return 0;
    for (int64_t i = 0; i < j->n; i++)
        if (atomic_load(&j->hits[i]) != 1) return 0;
    for (int64_t c = 0; c < nch; c++)
        if (atomic_load(&j->chunk_seen[c]) != 1) return 0;
    return 1;
}

static void test_cover(void) {
    const int threads[] = {1, 2, 3, 8};
    const int chunks[] = {1, 2, 3, 7, 64, 4096};
    const int64_t ns[] = {1, 2, 5, 63, 1000, NMAX};
    for (size_t a = 0; a < sizeof threads / sizeof *threads; a++)
        for (size_t b = 0; b < sizeof chunks / sizeof *chunks; b++)
            for (size_t c = 0; c < sizeof ns / sizeof *ns; c++) {
                Job *j = job_new(ns[c], chunks[b]);
                parallel_for_chunks(threads[a], chunks[b], ns[c], mark, j);
                CHECK(job_ok(j), "threads %d chunks %d n %lld", threads[a], chunks[b], (long long)ns[c]);
                free(j);
            }
    Job *j = job_new(10, 2);
    parallel_for(2, 0, mark, j); /* empty range: nothing runs */
    for (int i = 0; i < 10; i++) CHECK(atomic_load(&j->hits[i]) == 0, "n = 0 ran index %d", i);
    free(j);
}

static void test_stall(void) {
    /* chunk 0 stalls 200 ms: with 2 threads and 16 chunks the other thread runs chunks 1..15 */
    Job *j = job_new(1600, 16);
    j->stall_chunk = 0;
    j->stall_ms = 200;
    parallel_for_chunks(2, 16, 1600, mark, j);
    CHECK(job_ok(j), "stalled chunk: coverage");
    free(j);
}

/* Work stealing. One chunk (`blocker`) waits on a condition variable until all the other
 * chunks are done, for at most STEAL_WAIT_S; the others only count themselves. With the pool
 * the blocked thread holds just its own chunk and the other thread claims every remaining one,
 * so the wait ends as soon as they are done. With a static split (thread k runs a fixed share
 * of the chunks, contiguous or interleaved) some chunks are queued on the blocked thread
 * itself: they cannot run until its wait times out, and the test sees them missing. */
#define STEAL_WAIT_S 10
typedef struct {
    int nchunks, blocker;
    pthread_mutex_t m;
    pthread_cond_t cv;
    int others_done;          /* chunks other than blocker finished (under m) */
    int done_while_blocked;   /* others_done when the blocker's wait ended */
    int timed_out;
    _Atomic int runs[64];
} Steal;

static void steal_chunk(void *p, int64_t b, int64_t e, int chunk) {
    Steal *s = p;
    (void)b; (void)e;
    atomic_fetch_add(&s->runs[chunk], 1);
    pthread_mutex_lock(&s->m);
    if (chunk == s->blocker) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += STEAL_WAIT_S;
        while (s->others_done < s->nchunks - 1 && !s->timed_out)
            if (pthread_cond_timedwait(&s->cv, &s->m, &until) == ETIMEDOUT) s->timed_out = 1;
        s->done_while_blocked = s->others_done;
    } else if (++s->others_done == s->nchunks - 1) {
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->m);
}

static void test_work_stealing(void) {
    const int nchunks = 16, blockers[] = {0, 1, 7, 15};
    for (size_t k = 0; k < sizeof blockers / sizeof *blockers; k++) {
        Steal *s = calloc(1, sizeof *s);
        s->nchunks = nchunks;
        s->blocker = blockers[k];
        pthread_mutex_init(&s->m, NULL);
        pthread_cond_init(&s->cv, NULL);
        parallel_for_chunks(2, nchunks, nchunks, steal_chunk, s);
        int once = 1;
        for (int c = 0; c < nchunks; c++) once &= atomic_load(&s->runs[c]) == 1;
        CHECK(!s->timed_out && s->done_while_blocked == nchunks - 1,
              "chunk %d blocked: %d of the other %d chunks ran while it waited (%s)", s->blocker,
              s->done_while_blocked, nchunks - 1, s->timed_out ? "its wait timed out: chunks were queued behind it" : "woken");
        CHECK(once, "chunk %d blocked: a chunk did not run exactly once", s->blocker);
        pthread_mutex_destroy(&s->m);
        pthread_cond_destroy(&s->cv);
        free(s);
    }
}

static void test_back_to_back(void) {
    /* many short calls: spinning workers, then (MSD_SPIN_US is read once, so a long gap) sleeping ones */
    for (int round = 0; round < 2; round++) {
        for (int it = 0; it < 3000; it++) {
            int64_t n = 1 + it % 97;
            Job *j = job_new(n, 1 + it % 9);
            parallel_for_chunks(1 + it % 3, 1 + it % 9, n, mark, j);
            if (!job_ok(j)) {
                CHECK(0, "round %d call %d (n %lld) lost or repeated an index", round, it, (long long)n);
                free(j);
                return;
            }
            free(j);
        }
        struct timespec ts = {0, 10 * 1000000L}; /* let the workers fall asleep */
        nanosleep(&ts, NULL);
    }
}

static void nested_chunk(void *p, int64_t b, int64_t e, int chunk) {
    Job *outer = p;
    (void)chunk;
    for (int64_t i = b; i < e; i++) {
        Job *inner = job_new(50, 4);
        parallel_for_chunks(2, 4, 50, mark, inner); /* runs serially on this thread */
        if (job_ok(inner)) atomic_fetch_add(&outer->nested_ok, 1);
        free(inner);
        atomic_fetch_add(&outer->hits[i], 1);
    }
}

static void test_nested(void) {
    Job *j = job_new(40, 8);
    parallel_for_chunks(2, 8, 40, nested_chunk, j);
    CHECK(atomic_load(&j->nested_ok) == 40, "nested calls covered: %d of 40", atomic_load(&j->nested_ok));
    for (int i = 0; i < 40; i++) CHECK(atomic_load(&j->hits[i]) == 1, "outer index %d", i);
    free(j);
}

static void *other_user(void *p) {
    int *ok = p;
    for (int it = 0; it < 500; it++) {
        Job *j = job_new(300, 6);
        parallel_for_chunks(2, 6, 300, mark, j);
        if (!job_ok(j)) *ok = 0;
        free(j);
    }
    return NULL;
}

static void test_two_callers(void) {
    int ok1 = 1, ok2 = 1;
    pthread_t a, b;
    pthread_create(&a, NULL, other_user, &ok1);
    pthread_create(&b, NULL, other_user, &ok2);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    CHECK(ok1 && ok2, "two threads calling the pool at once: %d %d", ok1, ok2);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    CHECK(f != NULL, "cannot write %s", path);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

/* one job of 2 threads after pointing the load at PATH holding TEXT; returns the spin after it */
static int64_t spin_after(const char *path, const char *text) {
    if (text) write_file(path, text);
    parallel_set_load_file(path);
    Job *j = job_new(100, 4);
    parallel_for_chunks(2, 4, 100, mark, j);
    CHECK(job_ok(j), "a job while the load is read from %s", path);
    free(j);
    return parallel_spin_ns();
}

static void test_spin_follows_load(void) {
    if (getenv("MSD_SPIN_US")) return; /* fixed by the environment: nothing follows */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    char path[] = "/tmp/msd-loadavg-XXXXXX", busy[128];
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    if (fd < 0) return;
    close(fd);
    snprintf(busy, sizeof busy, "7.00 6.00 5.00 %ld/300 4242\n", 3 * cpus + 70); /* far more runnable than CPUs */
    CHECK(spin_after(path, busy) == PARALLEL_SPIN_LOADED_NS, "loaded machine: spin %lld ns", (long long)parallel_spin_ns());
    if (cpus >= 2) /* one runnable thread (the caller itself): the pool's 2 threads have their cores */
        CHECK(spin_after(path, "0.10 0.10 0.10 1/300 4242\n") == PARALLEL_SPIN_NS, "quiet machine: spin %lld ns",
              (long long)parallel_spin_ns());
    int64_t before = spin_after(path, busy);
    CHECK(spin_after(path, "garbage\n") == before, "a malformed load file changed the spin");
    CHECK(spin_after(path, "1.0 2.0\n") == before, "a short load file changed the spin");
    unlink(path);
    CHECK(spin_after(path, NULL) == before, "a missing load file changed the spin");
    char d[512];
    parallel_describe(d, sizeof d);
    CHECK(strstr(d, "spin auto") && strstr(d, "jobs quiet") && strstr(d, "loaded"), "describe: %s", d);
    parallel_set_load_file(NULL);
}

int main(void) {
    TEST_RUN(test_cover);
    TEST_RUN(test_stall);
    TEST_RUN(test_work_stealing);
    TEST_RUN(test_back_to_back);
    TEST_RUN(test_nested);
    TEST_RUN(test_two_callers);
    TEST_RUN(test_spin_follows_load);
    return TEST_END();
}
