/* dmd.c: see dmd.h. */
#include "dmd.h"

#include <math.h>

void dmd_sigma_table(float *table, int n) {
    double a = pow(DMD_SIGMA_MAX, 1.0 / DMD_RHO), b = pow(DMD_SIGMA_MIN, 1.0 / DMD_RHO);
    for (int i = 0; i < n; i++) {
        double s = pow(a + (double)i / (n - 1) * (b - a), DMD_RHO); /* descending in i */
        table[n - 1 - i] = (float)s;
    }
}

double dmd_generator_grad(float *dx, const float *x, const float *d_real, const float *d_fake, int64_t N,
                          int64_t D) {
    double loss = 0, inv = 1.0 / ((double)N * (double)D);
    for (int64_t n = 0; n < N; n++) {
        const float *xs = x + n * D, *dr = d_real + n * D, *df = d_fake + n * D;
        double w = 0;
        for (int64_t j = 0; j < D; j++) w += fabs((double)xs[j] - (double)dr[j]);
        w /= (double)D;
        for (int64_t j = 0; j < D; j++) {
            double g = ((double)df[j] - (double)dr[j]) / w;
            if (!isfinite(g)) g = 0;
            dx[n * D + j] = (float)(g * inv);
            loss += 0.5 * g * g * inv;
        }
    }
    return loss;
}
