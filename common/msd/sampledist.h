/* sampledist.h: distances between two sets of points in d dimensions, for judging generated
 * samples against samples of the true distribution.
 *
 *   energy distance   E = 2 E|X-Y| - E|X-X'| - E|Y-Y'|  (>= 0, 0 iff equal distributions);
 *                     computed exactly over all pairs (O(n m)), reported as sqrt(max(E, 0)).
 *   sliced W2         sqrt(mean over L random unit directions of W2^2 of the 1-D projections),
 *                     W2 of 1-D samples from sorted quantiles (n = m required).
 * Both are deterministic given the seed. Not here: FID (feature-based, see the image eval). */
#ifndef MSD_SAMPLEDIST_H
#define MSD_SAMPLEDIST_H

#include <stdint.h>

double energy_distance(const float *a, int64_t na, const float *b, int64_t nb, int d);
/* n points in each set; L directions drawn from (seed, stream 0). */
double sliced_w2(const float *a, const float *b, int64_t n, int d, int L, uint64_t seed);

#endif
