/* philox.c: Philox-4x32-10 and the draws built on it; see philox.h for the mapping. */
#include "philox.h"

#include <math.h>

#include "log.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; r++) {
        if (r > 0) { k0 += PHILOX_W0; k1 += PHILOX_W1; }
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        uint32_t n3 = (uint32_t)p0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

void rng_block(uint64_t seed, uint64_t stream, uint64_t block, uint32_t out[4]) {
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), (uint32_t)stream, (uint32_t)(stream >> 32)};
    philox4x32_10(ctr, key, out);
}

uint32_t rng_u32(uint64_t seed, uint64_t stream, uint64_t index) {
    uint32_t x[4];
    rng_block(seed, stream, index / 4, x);
    return x[index % 4];
}

void rng_u32_fill(uint32_t *out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset) {
    MSD_CHECK(n >= 0);
    int64_t j = 0;
    while (j < n) {
        uint64_t idx = offset + (uint64_t)j;
        uint32_t x[4];
        rng_block(seed, stream, idx / 4, x);
        for (unsigned lane = (unsigned)(idx % 4); lane < 4 && j < n; lane++) out[j++] = x[lane];
    }
}

float rng_uniform1(uint64_t seed, uint64_t stream, uint64_t index) {
    return rng_u32_to_uniform(rng_u32(seed, stream, index));
}

void rng_box_muller(uint32_t a, uint32_t b, float *z0, float *z1) {
    double u1 = (double)((a >> 8) + 1) * 0x1p-24; /* (0, 1] */
    double u2 = (double)(b >> 8) * 0x1p-24;       /* [0, 1) */
    double r = sqrt(-2.0 * log(u1));
    double ang = 6.283185307179586 * u2;
    *z0 = (float)(r * cos(ang));
    *z1 = (float)(r * sin(ang));
}

float rng_normal1(uint64_t seed, uint64_t stream, uint64_t index) {
    uint64_t pair = index / 2;
    uint32_t x[4];
    rng_block(seed, stream, pair / 2, x);
    unsigned l = (unsigned)(pair % 2) * 2;
    float z0, z1;
    rng_box_muller(x[l], x[l + 1], &z0, &z1);
    return index % 2 ? z1 : z0;
}

uint32_t rng_uniform_int(uint64_t seed, uint64_t stream, uint64_t index, uint32_t n) {
    MSD_CHECK(n >= 1);
    return (uint32_t)(((uint64_t)rng_u32(seed, stream, index) * n) >> 32);
}

void rng_permutation(int32_t *perm, int64_t n, uint64_t seed, uint64_t stream) {
    MSD_CHECK(n >= 0 && n <= INT32_MAX);
    for (int64_t i = 0; i < n; i++) perm[i] = (int32_t)i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = rng_uniform_int(seed, stream, (uint64_t)(n - 1 - i), (uint32_t)(i + 1));
        int32_t tmp = perm[i]; perm[i] = perm[j]; perm[j] = tmp;
    }
}

/* The fills draw words through rng_u32_fill in chunks of RNG_CHUNK (even, so a chunk that
 * starts on a pair's first word ends on a pair's last). */
#define RNG_CHUNK 256

void rng_uniform_fill(float *out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset) {
    MSD_CHECK(n >= 0);
    uint32_t w[RNG_CHUNK];
    for (int64_t j = 0; j < n; j += RNG_CHUNK) {
        int64_t m = n - j < RNG_CHUNK ? n - j : RNG_CHUNK;
        rng_u32_fill(w, m, seed, stream, offset + (uint64_t)j);
        for (int64_t k = 0; k < m; k++) out[j + k] = rng_u32_to_uniform(w[k]);
    }
}

void rng_normal_fill(float *out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset) {
    MSD_CHECK(n >= 0);
    uint32_t w[RNG_CHUNK];
    int64_t j = 0;
    while (j < n) {
        uint64_t idx = offset + (uint64_t)j, first = idx & ~(uint64_t)1; /* the pair's first word */
        int64_t want = (int64_t)(idx - first) + (n - j);
        int64_t m = want < RNG_CHUNK ? (want + 1) & ~(int64_t)1 : RNG_CHUNK;
        rng_u32_fill(w, m, seed, stream, first);
        for (int64_t k = 0; k < m && j < n; k += 2) {
            float z[2];
            rng_box_muller(w[k], w[k + 1], &z[0], &z[1]);
            for (int l = k == 0 && idx != first; l < 2 && j < n; l++) out[j++] = z[l];
        }
    }
}
