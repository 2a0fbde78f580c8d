/* rng.cu: the counter-based random numbers on the GPU (the CUDA twin of common/base/philox.c), following
 * the mapping in common/base/philox.h bit for bit: Philox-4x32-10 with key (seed low, seed high) and
 * counter (block low, block high, stream low, stream high); word i of a stream is lane i % 4 of
 * block i / 4.
 *   uniform i = (x_i >> 8) * 2^-24: identical to the CPU's bits.
 *   normal  i = Box-Muller on the word pair (2p, 2p+1), p = i / 2, in double, rounded to float
 *               once: identical unless CUDA's double log/sqrt/cos/sin land an ulp of a double
 *               away from glibc's across a float rounding boundary (about 2^-28 per number;
 *               tests allow 1 float ulp, see rng.h).
 * One thread per Philox block (four numbers); the first and last block of a range write only
 * the lanes inside [offset, offset + n). Not here: integers and permutations (host-only). */
#include "common.cuh"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

__device__ __forceinline__ void philox_block(uint64_t seed, uint64_t stream, uint64_t block, uint32_t x[4]) {
    uint32_t c0 = (uint32_t)block, c1 = (uint32_t)(block >> 32), c2 = (uint32_t)stream, c3 = (uint32_t)(stream >> 32);
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
#pragma unroll
    for (int r = 0; r < 10; r++) {
        if (r > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        uint32_t hi0 = __umulhi(PHILOX_M0, c0), lo0 = PHILOX_M0 * c0;
        uint32_t hi1 = __umulhi(PHILOX_M1, c2), lo1 = PHILOX_M1 * c2;
        uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
        c0 = n0;
        c1 = n1;
        c2 = n2;
        c3 = n3;
    }
    x[0] = c0;
    x[1] = c1;
    x[2] = c2;
    x[3] = c3;
}

__device__ __forceinline__ float u32_to_uniform(uint32_t x) { return (float)(x >> 8) * 0x1p-24f; }

__device__ __forceinline__ void box_muller(uint32_t a, uint32_t b, float *z0, float *z1) {
    double u1 = (double)((a >> 8) + 1) * 0x1p-24; /* (0, 1] */
    double u2 = (double)(b >> 8) * 0x1p-24;       /* [0, 1) */
    double r = sqrt(-2.0 * log(u1));
    double ang = 6.283185307179586 * u2;
    *z0 = (float)(r * cos(ang));
    *z1 = (float)(r * sin(ang));
}

/* thread t handles Philox block first + t; out[idx - offset] for idx in [offset, offset + n) */
__global__ void rng_kernel(float *out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset, uint64_t first,
                           uint64_t nblocks, int normal) {
    GRID_STRIDE(t, (int64_t)nblocks) {
        const uint64_t b = first + (uint64_t)t;
        uint32_t x[4];
        philox_block(seed, stream, b, x);
        float z[4];
        if (normal) {
            box_muller(x[0], x[1], &z[0], &z[1]);
            box_muller(x[2], x[3], &z[2], &z[3]);
        } else {
            for (int l = 0; l < 4; l++) z[l] = u32_to_uniform(x[l]);
        }
        for (int l = 0; l < 4; l++) {
            const uint64_t idx = b * 4 + (uint64_t)l;
            if (idx >= offset && idx - offset < (uint64_t)n) out[idx - offset] = z[l];
        }
    }
}

static void rng_launch(BackendCtx *ctx, float *out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset,
                       int normal) {
    MSD_CHECK(n >= 0);
    if (n == 0) return;
    MSD_CHECK(out != NULL);
    CudaCtx *cc = cuda_ctx(ctx);
    const uint64_t first = offset / 4, last = (offset + (uint64_t)n - 1) / 4, nblocks = last - first + 1;
    rng_kernel<<<cuda_blocks((int64_t)nblocks), CUDA_THREADS, 0, cc->stream>>>(out, n, seed, stream, offset, first,
                                                                               nblocks, normal);
    LAUNCH_OK(cc, normal ? "rng_kernel (normal)" : "rng_kernel (uniform)");
}

void cuda_rng_normal(BackendCtx *ctx, float *out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset) {
    rng_launch(ctx, out, n, seed, stream, offset, 1);
}

void cuda_rng_uniform(BackendCtx *ctx, float *out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset) {
    rng_launch(ctx, out, n, seed, stream, offset, 0);
}
