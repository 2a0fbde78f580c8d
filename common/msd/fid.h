/* fid.h: the Frechet distance between Gaussians fitted to two sets of feature vectors (the FID
 * when the features come from an image classifier; docs/ALGORITHMS.md section 5):
 *
 *   FID = ||m1 - m2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2))
 *
 * Means and covariances in double (covariance with the unbiased 1/(n-1), as numpy.cov and
 * pytorch-fid). Tr((S1 S2)^(1/2)) = Tr((S1^(1/2) S2 S1^(1/2))^(1/2)): the square root of the
 * symmetric positive semi-definite S1 and the eigenvalues of the symmetric product come from
 * LAPACK's dsyevd (OpenBLAS); eigenvalues below 0 (rounding) count as 0. Stable for singular
 * covariances, unlike scipy.linalg.sqrtm (a blocked Schur method).
 *
 * Not here: the feature network (classifier.h). */
#ifndef MSD_FID_H
#define MSD_FID_H

#include <stdint.h>

typedef struct FidStats {
    int d;
    int64_t n;
    double *mean;   /* (d), owned */
    double *cov;    /* (d, d) row-major, owned */
} FidStats;

/* Fit mean and covariance of n >= 2 feature vectors feat (n, d) (a smaller n is a bug). */
void fid_stats_compute(FidStats *s, const float *feat, int64_t n, int d);
void fid_stats_free(FidStats *s);   /* NULL-safe; zeroes *s */
/* The Frechet distance of two fits of the same d (a mismatch is a bug). */
double fid_frechet(const FidStats *a, const FidStats *b);
/* Tr((S1 S2)^(1/2)) of two symmetric positive semi-definite d x d matrices (row-major). */
double fid_trace_sqrt_product(const double *S1, const double *S2, int d);
/* Eigen-decomposition of the symmetric d x d matrix A: A is overwritten by the eigenvectors
 * as rows (A[k * d + i] is component i of eigenvector k), w (d) gets the eigenvalues
 * ascending. Returns 0, or LAPACK's info code (no convergence). */
int fid_sym_eig(double *A, double *w, int d);

#endif
