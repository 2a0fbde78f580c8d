/* fid.c: see fid.h. */
#include "fid.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "log.h"

/* LAPACK (OpenBLAS ships it; no LAPACKE here). The trailing size_t are gfortran's hidden
 * lengths of the two character arguments. */
void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w, double *work,
             const int *lwork, int *iwork, const int *liwork, int *info, size_t jobz_len, size_t uplo_len);

void fid_stats_compute(FidStats *s, const float *feat, int64_t n, int d) {
    MSD_CHECK(n >= 2 && d >= 1);
    s->d = d;
    s->n = n;
    s->mean = msd_calloc((size_t)d, sizeof(double));
    s->cov = msd_calloc((size_t)d * (size_t)d, sizeof(double));
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < d; j++) s->mean[j] += feat[i * d + j];
    for (int j = 0; j < d; j++) s->mean[j] /= (double)n;
    /* centred rows in blocks, accumulated with dsyrk (upper), then mirrored */
    const int64_t B = 1024;
    double *c = msd_malloc(sizeof(double) * (size_t)B * (size_t)d);
    for (int64_t b = 0; b < n; b += B) {
        int64_t m = n - b < B ? n - b : B;
        for (int64_t i = 0; i < m; i++)
            for (int j = 0; j < d; j++) c[i * d + j] = (double)feat[(b + i) * d + j] - s->mean[j];
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, d, (int)m, 1.0, c, d, 1.0, s->cov, d);
    }
    free(c);
    for (int i = 0; i < d; i++)
        for (int j = i; j < d; j++) {
            double v = s->cov[i * d + j] / (double)(n - 1);
            s->cov[i * d + j] = s->cov[j * d + i] = v;
        }
}

void fid_stats_free(FidStats *s) {
    if (!s) return;
    free(s->mean);
    free(s->cov);
    memset(s, 0, sizeof *s);
}

int fid_sym_eig(double *A, double *w, int d) {
    int n = d, lda = d, info = 0, lwork = -1, liwork = -1, iwq;
    double wq;
    dsyevd_("V", "U", &n, A, &lda, w, &wq, &lwork, &iwq, &liwork, &info, 1, 1);
    if (info) return info;
    lwork = (int)wq;
    liwork = iwq;
    double *work = msd_malloc(sizeof(double) * (size_t)(lwork > 1 ? lwork : 1));
    int *iwork = msd_malloc(sizeof(int) * (size_t)(liwork > 1 ? liwork : 1));
    dsyevd_("V", "U", &n, A, &lda, w, work, &lwork, iwork, &liwork, &info, 1, 1);
    free(work);
    free(iwork);
    return info;
}

double fid_trace_sqrt_product(const double *S1, const double *S2, int d) {
    size_t dd = (size_t)d * (size_t)d;
    double *E = msd_malloc(sizeof(double) * dd), *B = msd_malloc(sizeof(double) * dd);
    double *R = msd_malloc(sizeof(double) * dd), *w = msd_malloc(sizeof(double) * (size_t)d);
    memcpy(E, S1, sizeof(double) * dd);
    if (fid_sym_eig(E, w, d)) msd_die("fid: LAPACK dsyevd did not converge on S1 (%d x %d)", d, d);
    /* R = S1^(1/2) = E^T diag(sqrt(w)) E (eigenvectors are the rows of E) */
    for (int k = 0; k < d; k++) {
        double r = w[k] > 0 ? sqrt(w[k]) : 0.0;
        for (int i = 0; i < d; i++) B[(size_t)k * d + i] = r * E[(size_t)k * d + i];
    }
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, d, d, 1.0, E, d, B, d, 0.0, R, d);
    /* M = R S2 R, symmetrised against rounding */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d, d, d, 1.0, R, d, S2, d, 0.0, B, d);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d, d, d, 1.0, B, d, R, d, 0.0, E, d);
    for (int i = 0; i < d; i++)
        for (int j = i + 1; j < d; j++) {
            double v = 0.5 * (E[(size_t)i * d + j] + E[(size_t)j * d + i]);
            E[(size_t)i * d + j] = E[(size_t)j * d + i] = v;
        }
    if (fid_sym_eig(E, w, d)) msd_die("fid: LAPACK dsyevd did not converge on S1^(1/2) S2 S1^(1/2) (%d x %d)", d, d);
    double tr = 0;
    for (int k = 0; k < d; k++) tr += w[k] > 0 ? sqrt(w[k]) : 0.0;
    free(E);
    free(B);
    free(R);
    free(w);
    return tr;
}

double fid_frechet(const FidStats *a, const FidStats *b) {
    MSD_CHECK(a->d == b->d && a->mean && b->mean);
    int d = a->d;
    double m2 = 0, tr = 0;
    for (int j = 0; j < d; j++) {
        double t = a->mean[j] - b->mean[j];
        m2 += t * t;
        tr += a->cov[(size_t)j * d + j] + b->cov[(size_t)j * d + j];
    }
    return m2 + tr - 2.0 * fid_trace_sqrt_product(a->cov, b->cov, d);
}
