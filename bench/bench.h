/* bench.h: what the benchmarks share. */
#ifndef MSD_BENCH_H
#define MSD_BENCH_H

/* qsort comparator of doubles, ascending (for medians and ranges of timed rounds). */
static inline int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#endif
