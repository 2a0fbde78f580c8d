/* sampledist.c: see sampledist.h. */
#include "sampledist.h"

#include <math.h>
#include <stdlib.h>

#include "log.h"
#include "philox.h"

static double mean_pair_dist(const float *a, int64_t na, const float *b, int64_t nb, int d, int same) {
    double s = 0;
    for (int64_t i = 0; i < na; i++)
        for (int64_t j = same ? i + 1 : 0; j < nb; j++) {
            double q = 0;
            for (int k = 0; k < d; k++) {
                double t = (double)a[i * d + k] - (double)b[j * d + k];
                q += t * t;
            }
            s += sqrt(q);
        }
    if (same) return na > 1 ? 2 * s / ((double)na * (double)(na - 1)) : 0; /* unbiased: i != j */
    return s / ((double)na * (double)nb);
}

double energy_distance(const float *a, int64_t na, const float *b, int64_t nb, int d) {
    double e = 2 * mean_pair_dist(a, na, b, nb, d, 0) - mean_pair_dist(a, na, a, na, d, 1) -
               mean_pair_dist(b, nb, b, nb, d, 1);
    return sqrt(e > 0 ? e : 0);
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

double sliced_w2(const float *a, const float *b, int64_t n, int d, int L, uint64_t seed) {
    MSD_CHECK(n > 0 && d > 0 && d <= 64 && L > 0);
    double *pa = msd_malloc(sizeof(double) * (size_t)n), *pb = msd_malloc(sizeof(double) * (size_t)n);
    double total = 0;
    for (int l = 0; l < L; l++) {
        double dir[64], norm = 0;
        for (int k = 0; k < d; k++) {
            dir[k] = rng_normal1(seed, 0, (uint64_t)l * 64 + (uint64_t)k);
            norm += dir[k] * dir[k];
        }
        norm = sqrt(norm);
        for (int k = 0; k < d; k++) dir[k] /= norm;
        for (int64_t i = 0; i < n; i++) {
            double sa = 0, sb = 0;
            for (int k = 0; k < d; k++) {
                sa += dir[k] * a[i * d + k];
                sb += dir[k] * b[i * d + k];
            }
            pa[i] = sa;
            pb[i] = sb;
        }
        qsort(pa, (size_t)n, sizeof(double), cmp_double);
        qsort(pb, (size_t)n, sizeof(double), cmp_double);
        double w = 0;
        for (int64_t i = 0; i < n; i++) w += (pa[i] - pb[i]) * (pa[i] - pb[i]);
        total += w / (double)n;
    }
    free(pa);
    free(pb);
    return sqrt(total / L);
}
