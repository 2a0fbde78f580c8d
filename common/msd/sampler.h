/* sampler.h: the EDM sampler (Karras et al. 2022, Algorithm 2; docs/ALGORITHMS.md section 1): Heun
 * steps on the Karras sigma schedule, deterministic (S_churn = 0) or stochastic, over any
 * denoiser given as a callback on host memory (the teacher process wraps edm_forward, tests
 * wrap the exact mixture denoiser mog_denoise).
 *
 *   sigma_i = (smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho, i < N; sigma_N = 0
 *   x = sigma_0 z
 *   for i < N: gamma = min(S_churn/N, sqrt(2)-1) if S_min <= sigma_i <= S_max else 0
 *              s_hat = sigma_i (1 + gamma); x_hat = x + sqrt(s_hat^2 - sigma_i^2) S_noise eps_i
 *              d = (x_hat - D(x_hat; s_hat)) / s_hat;  x' = x_hat + (sigma_{i+1} - s_hat) d
 *              if sigma_{i+1} > 0: d' = (x' - D(x'; sigma_{i+1})) / sigma_{i+1}
 *                                  x' = x_hat + (sigma_{i+1} - s_hat) (d + d') / 2
 *   NFE = 2N - 1 (N = 18: 35). N = 1 is one Euler step from sigma_max to 0 (one evaluation).
 *
 * Noise: sample j of a call (global index first + j) uses the D normals at counter offset
 * (first + j) * D of Philox (seed, stream) for z, and of (seed, stream + 1 + i) for eps_i
 * (only drawn when gamma > 0), so a sample does not depend on how the run was batched.
 * Callers reserve streams [stream, stream + N] for one sampling run.
 *
 * sampler_edm_* adapts an edm.h network (on any backend) to the callback.
 *
 * Not here: the networks (edm.h), writing images (image.h). */
#ifndef MSD_SAMPLER_H
#define MSD_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

/* out (N, D) = D(x; sigma, labels): x, out host (N, D); sigma host (N) > 0; labels host
 * int32 (N) or NULL when unconditional. Must not keep the pointers. */
typedef void (*SamplerDenoiseFn)(void *ctx, float *out, const float *x, const float *sigma, const int32_t *labels,
                                 int64_t N);

typedef struct SamplerConfig {
    int steps;                   /* N >= 1 */
    double sigma_min, sigma_max, rho;
    double s_churn, s_min, s_max, s_noise;
} SamplerConfig;

/* steps 18, sigma 0.002..80, rho 7, deterministic (S_churn 0, S_min 0, S_max inf, S_noise 1). */
void sampler_config_default(SamplerConfig *c);
/* Check a config that came from a user: 0, or -1 with a message naming the bad field. */
int sampler_config_check(const SamplerConfig *c, char *err, size_t errlen);
/* sigmas[0..steps] (steps + 1 entries, the last 0), descending. */
void sampler_sigmas(const SamplerConfig *c, double *sigmas);
/* Network evaluations of one run: 2 * steps - 1. */
static inline int sampler_nfe(const SamplerConfig *c) { return 2 * c->steps - 1; }

/* Draw n samples: x (n, D) host receives them. labels (n) or NULL. c must pass
 * sampler_config_check (a bad one is a bug). Allocates its work buffers (4 n D floats) per
 * call. Returns the number of denoiser evaluations made (each on all n samples). */
int sampler_run(const SamplerConfig *c, SamplerDenoiseFn denoise, void *ctx, float *x, const int32_t *labels,
                int64_t n, int64_t D, uint64_t seed, uint64_t stream, uint64_t first);

/* ---- an EDM network as the denoiser ---- */

struct Edm;
/* The callback context for an edm.h denoiser (class labels; no conditioning vectors): the
 * callback uploads x, runs edm_forward (train = 0) in chunks of at most the Edm's batch
 * capacity, and downloads the result. x_dev and out_dev are device buffers of cap * dim floats
 * (sampler_edm_init allocates them on the Edm's backend, sampler_edm_free releases them). */
typedef struct SamplerEdm {
    struct Edm *edm;   /* not owned */
    float *x_dev, *out_dev;
} SamplerEdm;
void sampler_edm_init(SamplerEdm *s, struct Edm *edm);
void sampler_edm_free(SamplerEdm *s);
/* A SamplerDenoiseFn; ctx is a SamplerEdm. */
void sampler_edm_denoise(void *ctx, float *out, const float *x, const float *sigma, const int32_t *labels, int64_t N);

#endif
