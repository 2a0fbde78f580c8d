/* mog.h: class-conditional Gaussian mixtures in d dimensions (d = 2 for the toy problem):
 * the specification file, sampling, and the exact (closed-form) denoiser E[x0 | x_t, c]
 * under the variance-exploding noising x_t = x0 + sigma * eps (docs/ALGORITHMS.md section 4).
 *
 * Specification file (docs/MOG.md has the full grammar), one statement per line, '#' starts
 * a comment:
 *     mixture 2                      # the first statement: dimension (1..8)
 *     class NAME                     # starts a class; names are [A-Za-z0-9_-]+, unique
 *     comp W  M1 .. Md  S11 S12 .. Sdd   # a component of the current class: weight > 0,
 *                                    # mean (d numbers), covariance (d*d numbers, row-major,
 *                                    # symmetric positive definite)
 *     comp W  M1 .. Md  iso S        # isotropic covariance S^2 I (S > 0 is a std deviation)
 * Weights are renormalised within each class. Errors are "FILE:LINE: message".
 *
 * Not here: learning anything; the evaluation metrics (sampledist.h). */
#ifndef MSD_MOG_H
#define MSD_MOG_H

#include <stddef.h>
#include <stdint.h>

#define MOG_MAX_DIM 8
#define MOG_MAX_CLASSES 1024
#define MOG_MAX_COMPONENTS 65536
#define MOG_MAX_NAME 64

typedef struct MogComponent {
    int cls;                                /* class index */
    double weight;                          /* within its class, sums to 1 per class */
    double mean[MOG_MAX_DIM];
    double cov[MOG_MAX_DIM * MOG_MAX_DIM];  /* row-major d x d */
    double chol[MOG_MAX_DIM * MOG_MAX_DIM]; /* lower Cholesky factor of cov (for sampling) */
} MogComponent;

typedef struct Mog {
    int dim;
    int nclasses;
    char (*class_names)[MOG_MAX_NAME];
    int *class_first, *class_count;  /* components of class c: [first, first + count) */
    int ncomp;
    MogComponent *comp;
} Mog;

/* The most samples one serving request of the toy asks for: the router's limit on a line's N
 * and the students' default batch capacity, stated once (docs/MOG.md). */
#define MOG_SERVE_MAX_SAMPLES 4096

/* Parse a specification from text (name is used in messages). 0 on success, -1 with
 * "name:line: message" in err. */
int mog_parse(Mog *m, const char *text, size_t len, const char *name, char *err, size_t errlen);
int mog_load(Mog *m, const char *path, char *err, size_t errlen);
void mog_free(Mog *m);
/* Class index of a name or of a decimal id in range; -1 if neither. */
int mog_class_lookup(const Mog *m, const char *s);
/* One serving request line of the toy (mog_serve's stdin, through the router): "CLASS [N]",
 * CLASS a class name or id, N a sample count in 1..max (default 1), separated by spaces or
 * tabs (a '\r' counts as a space). text need not end in NUL (len bytes; at most
 * MOG_REQUEST_MAX_TEXT, no NUL byte). 0 with *cls and *count, or -1 with a message for the
 * user (naming the classes when CLASS is unknown). */
#define MOG_REQUEST_MAX_TEXT 4096
int mog_parse_request(const Mog *m, const char *text, size_t len, int max, int *cls, long *count, char *err,
                      size_t errlen);
/* Standard deviation per coordinate of the whole data set (classes equally likely): the
 * sigma_data the EDM preconditioning of the toy networks uses. */
double mog_data_std(const Mog *m);
/* Mean location of a class (its embedding for clustering): sum_k w_k mu_k. out[dim]. */
void mog_class_mean(const Mog *m, int cls, double *out);

/* Exact denoiser for n points: out[i] = E[x0 | x_t = x[i], class cls[i]] at noise sigma[i]
 * (sigma >= 0). x, out: (n, dim) float. Uses log-sum-exp responsibilities with the
 * log-determinant term. */
void mog_denoise(const Mog *m, float *out, const float *x, const float *sigma, const int32_t *cls, int64_t n);
/* Draw n samples of the given classes: out (n, dim); comp_out (n) the component drawn (may be
 * NULL). Deterministic in (seed, stream, offset): sample i uses counter index offset + i. */
void mog_sample(const Mog *m, float *out, int32_t *comp_out, const int32_t *cls, int64_t n, uint64_t seed,
                uint64_t stream, uint64_t offset);
/* The component of class cls most responsible for a clean point x (sigma = 0). */
int mog_assign(const Mog *m, const float *x, int cls);
/* A 512x512 scatter plot (PNG) of 2-D samples gen (n, 2) coloured by class, over as many
 * true samples of the same classes in light grey. 0, or -1 with a message. */
int mog_scatter_png(const char *path, const Mog *m, const float *gen, const int32_t *cls, int64_t n, uint64_t seed, char *err,
                    size_t errlen);
/* Squared Mahalanobis distance of x from component k: (x - mu)^T Sigma^-1 (x - mu). */
double mog_mahal2(const Mog *m, const float *x, int k);

/* Mode coverage of generated points x (n, dim) with classes cls (n). A point counts for a
 * component when that component is its most responsible one within its class (mog_assign)
 * and within Mahalanobis distance 3 of it (it is then "on support"); a component is covered
 * when it receives at least half of its fair share (weight * points of its class). Only the
 * components of classes that have points are judged; only >= 0 restricts them to that class. */
typedef struct MogCoverage {
    int64_t n, on;           /* points; points on support */
    int ncomp, covered;      /* components judged; covered */
    double coverage;         /* covered / ncomp (0 when none) */
    double on_support;       /* on / n (0 when n == 0) */
} MogCoverage;
void mog_coverage(const Mog *m, const float *x, const int32_t *cls, int64_t n, int only, MogCoverage *out);

#endif
