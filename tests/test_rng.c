/* test_rng.c: Philox-4x32-10 and the draws of common/base/philox.c: the Random123 known-answer
 * vectors, golden values from an independent Python implementation of the documented mapping
 * (tests/rng_ref.py), determinism, offset consistency, statistics, stream separation. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "philox.h"
#include "cpu_ops.h"

static void test_philox_known_answers(void) {
    /* Random123 kat_vectors, philox4x32 10: counter, key, output. */
    static const uint32_t kat[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d, 0x41c83b0e,
         0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09, 0x94fdcceb,
         0x5001e420, 0x24126ea1},
    };
    for (int k = 0; k < 3; k++) {
        uint32_t out[4];
        philox4x32_10(kat[k], kat[k] + 4, out);
        CHECK(memcmp(out, kat[k] + 6, sizeof out) == 0, "vector %d: got %08x %08x %08x %08x", k, out[0], out[1],
              out[2], out[3]);
    }
}

/* Word i = philox(counter (i/4 lo, i/4 hi, stream lo, stream hi), key (seed lo, seed hi))[i%4]. */
static void test_counter_mapping(void) {
    uint64_t seed = 0x0123456789abcdefull, stream = 0xa5a5a5a55a5a5a5aull;
    uint64_t idx[] = {0, 1, 3, 4, 7, (1ull << 34) + 2, UINT64_MAX - 1};
    for (size_t j = 0; j < sizeof idx / sizeof idx[0]; j++) {
        uint64_t b = idx[j] / 4;
        uint32_t ctr[4] = {(uint32_t)b, (uint32_t)(b >> 32), (uint32_t)stream, (uint32_t)(stream >> 32)};
        uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
        uint32_t x[4];
        philox4x32_10(ctr, key, x);
        CHECK(rng_u32(seed, stream, idx[j]) == x[idx[j] % 4], "index %llu", (unsigned long long)idx[j]);
        float u = (float)(x[idx[j] % 4] >> 8) * 0x1p-24f;
        CHECK(rng_uniform1(seed, stream, idx[j]) == u, "uniform index %llu", (unsigned long long)idx[j]);
    }
}

static int within_ulp(float a, float b) {
    return a == b || nextafterf(a, INFINITY) == b || nextafterf(a, -INFINITY) == b;
}

/* From tests/rng_ref.py (an independent implementation of rng.h's mapping). */
static void test_golden_values(void) {
    const uint64_t seed = 0x123456789abcdef0ull, stream = 0xfedcba9876543ull, off = (1ull << 34) + 1;
    static const uint32_t w[6] = {0x88aecc9cu, 0xc2ee5608u, 0xb048a87au, 0xbe7ce180u, 0xfc282372u, 0xed35fc94u};
    static const float u[6] = {0.533917189f, 0.761449218f, 0.688608646f, 0.744093001f, 0.984987438f, 0.926604986f};
    static const float z[6] = {-0.420262396f, -0.277770996f, -0.684037089f, 0.765463173f, -0.0724185333f,
                               -0.368631423f};
    static const uint32_t k961[6] = {513u, 731u, 661u, 715u, 946u, 890u};
    uint32_t gw[6];
    float gu[6], gz[6];
    rng_u32_fill(gw, 6, seed, stream, off);
    cpu_rng_uniform(NULL, gu, 6, seed, stream, off);
    cpu_rng_normal(NULL, gz, 6, seed, stream, off);
    for (int j = 0; j < 6; j++) {
        CHECK(gw[j] == w[j], "word %d: %08x want %08x", j, gw[j], w[j]);
        CHECK(gu[j] == u[j], "uniform %d: %.9g want %.9g", j, gu[j], u[j]);
        CHECK(within_ulp(gz[j], z[j]), "normal %d: %.9g want %.9g (1 ulp)", j, gz[j], z[j]);
        uint32_t k = rng_uniform_int(seed, stream, off + (uint64_t)j, 961);
        CHECK(k == k961[j], "int %d: %u want %u", j, k, k961[j]);
    }
}

/* Bulk fills against single draws, split at every offset parity, over more than two of the
 * fills' 256-word chunks. */
static void test_determinism_and_offsets(void) {
    enum { N = 601 };
    float a[N], b[N], c[N];
    for (int kind = 0; kind < 2; kind++) {
        void (*fn)(BackendCtx *, float *, int64_t, uint64_t, uint64_t, uint64_t) =
            kind ? cpu_rng_normal : cpu_rng_uniform;
        fn(NULL, a, N, 7, 3, 0);
        fn(NULL, b, N, 7, 3, 0);
        CHECK(memcmp(a, b, sizeof a) == 0, "kind %d: not deterministic", kind);
        for (int k = 0; k <= 9; k++) {
            memset(c, 0, sizeof c);
            fn(NULL, c, k, 7, 3, 0);
            fn(NULL, c + k, N - k, 7, 3, (uint64_t)k);
            CHECK(memcmp(a, c, sizeof a) == 0, "kind %d: split at %d differs", kind, k);
        }
        for (int i = 0; i < N; i++) {
            float one = kind ? rng_normal1(7, 3, (uint64_t)i) : rng_uniform1(7, 3, (uint64_t)i);
            CHECK(one == a[i], "kind %d: single draw %d differs from the bulk one", kind, i);
        }
    }
    uint32_t w[N], w2[N];
    rng_u32_fill(w, N, 9, 1, 5);
    for (int i = 0; i < N; i++) w2[i] = rng_u32(9, 1, 5 + (uint64_t)i);
    CHECK(memcmp(w, w2, sizeof w) == 0, "rng_u32_fill vs rng_u32");
}

static void test_streams_and_seeds_differ(void) {
    enum { N = 64 };
    float a[N], b[N], c[N];
    cpu_rng_normal(NULL, a, N, 1, 0, 0);
    cpu_rng_normal(NULL, b, N, 1, 1, 0);
    cpu_rng_normal(NULL, c, N, 2, 0, 0);
    int same_ab = 0, same_ac = 0;
    for (int i = 0; i < N; i++) { same_ab += a[i] == b[i]; same_ac += a[i] == c[i]; }
    CHECK(same_ab == 0 && same_ac == 0, "equal numbers: streams %d, seeds %d", same_ab, same_ac);
    /* high halves of seed and stream matter too */
    CHECK(rng_u32(1, 0, 0) != rng_u32(1 | (1ull << 32), 0, 0), "seed high half ignored");
    CHECK(rng_u32(1, 0, 0) != rng_u32(1, 1ull << 32, 0), "stream high half ignored");
}

static void test_statistics(void) {
    enum { N = 200000 };
    float *z = malloc(N * sizeof *z), *u = malloc(N * sizeof *u);
    cpu_rng_normal(NULL, z, N, 12345, 2, 0);
    cpu_rng_uniform(NULL, u, N, 12345, 3, 0);
    double s = 0, s2 = 0, us = 0, us2 = 0, zmax = 0;
    long tail = 0, bad = 0;
    for (int i = 0; i < N; i++) {
        if (!isfinite(z[i]) || !(u[i] >= 0.0f && u[i] < 1.0f)) bad++;
        s += z[i]; s2 += (double)z[i] * z[i];
        us += u[i]; us2 += (double)u[i] * u[i];
        tail += fabsf(z[i]) > 1.959964f;
        if (fabs(z[i]) > zmax) zmax = fabs(z[i]);
    }
    double mean = s / N, var = s2 / N - mean * mean, umean = us / N, uvar = us2 / N - umean * umean;
    double frac = (double)tail / N;
    /* 5-sigma bounds: se(mean) = 1/sqrt(N), se(var) = sqrt(2/N), se(tail) = sqrt(.05*.95/N) */
    CHECK(bad == 0, "%ld non-finite normals or uniforms outside [0, 1)", bad);
    CHECK(fabs(mean) < 5 / sqrt(N), "normal mean %g", mean);
    CHECK(fabs(var - 1) < 5 * sqrt(2.0 / N), "normal variance %g", var);
    CHECK(fabs(frac - 0.05) < 5 * sqrt(0.05 * 0.95 / N), "P(|z| > 1.96) = %g", frac);
    CHECK(zmax < 5.8, "max |z| %g beyond the Box-Muller bound sqrt(-2 ln 2^-24)", zmax);
    CHECK(fabs(umean - 0.5) < 5 * sqrt(1.0 / 12 / N), "uniform mean %g", umean);
    CHECK(fabs(uvar - 1.0 / 12) < 5 * sqrt(1.0 / 180 / N), "uniform variance %g", uvar);
    free(z);
    free(u);
}

static void test_uniform_int_and_permutation(void) {
    enum { N = 961, DRAWS = 100000 };
    static int count[N];
    memset(count, 0, sizeof count);
    int out = 0;
    for (int i = 0; i < DRAWS; i++) {
        uint32_t k = rng_uniform_int(5, 9, (uint64_t)i, N);
        if (k >= N) out++;
        else count[k]++;
    }
    CHECK(out == 0, "%d draws outside [0, %d)", out, N);
    CHECK(count[0] > 0 && count[N - 1] > 0, "ends not reached: %d %d", count[0], count[N - 1]);
    double chi2 = 0, e = (double)DRAWS / N;
    for (int k = 0; k < N; k++) chi2 += (count[k] - e) * (count[k] - e) / e;
    /* chi-square with 960 dof: mean 960, sd ~43.8; allow 6 sd */
    CHECK(fabs(chi2 - 960) < 6 * 43.8, "chi2 %g", chi2);
    CHECK(rng_uniform_int(5, 9, 0, 1) == 0, "n = 1 must give 0");

    enum { P = 1000 };
    int32_t perm[P], perm2[P];
    static unsigned char seen[P];
    memset(seen, 0, sizeof seen);
    rng_permutation(perm, P, 77, 4);
    rng_permutation(perm2, P, 77, 4);
    int ok = 1, fixed = 0;
    for (int i = 0; i < P; i++) {
        if (perm[i] < 0 || perm[i] >= P || seen[perm[i]]) ok = 0;
        else seen[perm[i]] = 1;
        fixed += perm[i] == i;
    }
    CHECK(ok, "not a permutation");
    CHECK(memcmp(perm, perm2, sizeof perm) == 0, "permutation not deterministic");
    CHECK(fixed < 10, "%d fixed points (expected about 1)", fixed);
}

int main(void) {
    TEST_RUN(test_philox_known_answers);
    TEST_RUN(test_counter_mapping);
    TEST_RUN(test_golden_values);
    TEST_RUN(test_determinism_and_offsets);
    TEST_RUN(test_streams_and_seeds_differ);
    TEST_RUN(test_statistics);
    TEST_RUN(test_uniform_int_and_permutation);
    return TEST_END();
}
