/* dmd.h: the pieces of DMD2 distillation (docs/ALGORITHMS.md section 2) that the student and the
 * critic share: the Karras noise table and the distribution-matching gradient.
 *
 * Not here: the networks (edm.h), the messages that carry D_real and D_fake (wire.h). Host
 * (CPU) arrays; the GPU path will move dmd_generator_grad into the backend table. */
#ifndef MSD_DMD_H
#define MSD_DMD_H

#include <stdint.h>

#define DMD_TABLE_N 1000
#define DMD_SIGMA_MIN 0.002
#define DMD_SIGMA_MAX 80.0
#define DMD_RHO 7.0
#define DMD_GEN_T_MIN 20   /* generator draws t ~ U{20..980} */
#define DMD_GEN_T_MAX 980
#define DMD_SIGMA_GEN 80.0f /* the one-step generator evaluates its denoiser at sigma_max */

/* table[i], i < n, ascending: the EDM sampler's sigmas for N = n, reversed. */
void dmd_sigma_table(float *table, int n);

/* DMD gradient for N samples of D floats: w[n] = mean_j |x - d_real|, g = (d_fake - d_real) / w
 * (non-finite entries replaced by 0). Writes dx = g / (N * D) (the gradient of
 * L_DM = 0.5 mean((x - stopgrad(x - g))^2) with respect to x) and returns L_DM = 0.5 mean(g^2). */
double dmd_generator_grad(float *dx, const float *x, const float *d_real, const float *d_fake, int64_t N,
                          int64_t D);

#endif
