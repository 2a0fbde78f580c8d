/* philox.h: counter-based random numbers (Philox-4x32-10, Salmon et al., SC'11 "Random123"),
 * keyed by (seed, stream), so every number is a pure function of (seed, stream, index): runs
 * repeat exactly, any slice can be drawn without drawing what precedes it, and a CUDA kernel
 * reproduces the CPU numbers by following the mapping below.
 *
 * Mapping (the contract a CUDA port must follow bit for bit):
 *   key     k[0] = (uint32)seed,  k[1] = (uint32)(seed >> 32)
 *   counter c[0] = (uint32)block, c[1] = (uint32)(block >> 32),
 *           c[2] = (uint32)stream, c[3] = (uint32)(stream >> 32)
 *   philox4x32_10(c, k) gives four words x[0..3]. Word index i of a stream lives in
 *   block i / 4, lane i % 4.
 *   uniform i  = (x_i >> 8) * 2^-24                          in [0, 1), exact in float
 *   normal  i  : pair p = i / 2 uses words 2p (u1) and 2p + 1 (u2) of the stream:
 *                u1 = ((x_2p >> 8) + 1) * 2^-24              in (0, 1], so log(u1) is finite
 *                u2 = (x_2p+1 >> 8) * 2^-24                  in [0, 1)
 *                r = sqrt(-2 log u1), a = 2 pi u2 (2 pi as the double 6.283185307179586)
 *                normal 2p = (float)(r cos a), normal 2p + 1 = (float)(r sin a)
 *              computed in double and rounded to float once. Uniform i and normal i use
 *              the same words, so draw uniforms and normals from different streams.
 *   integer i in [0, n): (uint32)(((uint64)x_i * n) >> 32)   (multiply-shift; its bias,
 *              at most n / 2^32, is negligible for the small n it is used for).
 * "offset" below is always an index in the unit of what is drawn (numbers, not blocks), so
 * drawing [0, n) equals drawing [0, k) and then [k, n) at offset k.
 * CPU/GPU agreement: uniforms and integers are identical bit for bit. Normals are identical
 * provided the device's double log/sqrt/cos/sin land on the same float after the final
 * rounding; CUDA's and glibc's double functions differ by at most an ulp of a double, which
 * changes the float result with probability about 2^-28 per number (tests compare normals
 * with a 1-ulp float tolerance for that reason).
 *
 * Not here: stream allocation policy (which component uses which stream is the caller's
 * convention), non-normal distributions other than uniform/integer. */
#ifndef MSD_PHILOX_H
#define MSD_PHILOX_H

#include <stdint.h>

/* One Philox-4x32-10 block: out = philox(ctr, key). */
void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* Word index of (seed, stream). */
uint32_t rng_u32(uint64_t seed, uint64_t stream, uint64_t index);
/* out[j] = word offset + j of (seed, stream), j < n. */
void rng_u32_fill(uint32_t *out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset);
/* Uniform number index in [0, 1). */
float rng_uniform1(uint64_t seed, uint64_t stream, uint64_t index);
/* Standard normal number index. */
float rng_normal1(uint64_t seed, uint64_t stream, uint64_t index);
/* Integer draw index, uniform in [0, n); n >= 1 (n == 0 is a bug). E.g. a timestep
 * t ~ U{20..980} is 20 + rng_uniform_int(seed, stream, i, 961). */
uint32_t rng_uniform_int(uint64_t seed, uint64_t stream, uint64_t index, uint32_t n);
/* perm := a uniformly random permutation of 0..n-1 (Fisher-Yates from the last element
 * down: swap perm[i] with perm[j], j = rng_uniform_int(seed, stream, n - 1 - i, i + 1)). */
void rng_permutation(int32_t *perm, int64_t n, uint64_t seed, uint64_t stream);

/* Host fills: out[j] = uniform / normal number offset + j of stream (seed, stream), j < n, into
 * host memory. Host code (processes, models' host-side draws) uses these; the backends'
 * rng_uniform / rng_normal slots give the same numbers on their device. */
void rng_uniform_fill(float *out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset);
void rng_normal_fill(float *out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset);

/* The pieces the backends' rng slots build on (kernels/cpu/rng.c): block `block` of stream
 * (seed, stream); the uniform of one word; the two normals of one Box-Muller pair of words. */
void rng_block(uint64_t seed, uint64_t stream, uint64_t block, uint32_t out[4]);
static inline float rng_u32_to_uniform(uint32_t x) { return (float)(x >> 8) * 0x1p-24f; }
void rng_box_muller(uint32_t a, uint32_t b, float *z0, float *z1);

#endif
