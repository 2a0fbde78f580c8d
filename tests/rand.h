/* rand.h: the random test inputs of the op tests (test_ops.c, test_gpu_ops.c): a xorshift64
 * generator, its state per test program (set it with TEST_RAND_SEED before including to get
 * that program's sequence), uniform floats and malloc'd arrays of them. Not the engine's RNG
 * (common/base/philox.h): these only make inputs, and a program's inputs stay the same run to run. */
#ifndef MSD_TEST_RAND_H
#define MSD_TEST_RAND_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef TEST_RAND_SEED
#define TEST_RAND_SEED 0x9E3779B97F4A7C15ull
#endif
static uint64_t rand_state_ = TEST_RAND_SEED;

/* uniform in [lo, hi) */
static inline float frand(float lo, float hi) {
    rand_state_ ^= rand_state_ << 13;
    rand_state_ ^= rand_state_ >> 7;
    rand_state_ ^= rand_state_ << 17;
    return lo + (hi - lo) * (float)((rand_state_ >> 40) * (1.0 / 16777216.0));
}
/* n uniform floats in [lo, hi), malloc'd (at least one element) */
static inline float *rnd(int64_t n, float lo, float hi) {
    float *p = malloc((size_t)(n ? n : 1) * sizeof(float));
    if (!p) { fprintf(stderr, "rand.h: out of memory (%lld floats)\n", (long long)n); abort(); }
    for (int64_t i = 0; i < n; i++) p[i] = frand(lo, hi);
    return p;
}

#endif
