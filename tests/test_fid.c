/* test_fid.c: the Frechet distance (fid.h) and the FID classifier's training pieces
 * (classifier.h): the trace of the matrix square root against closed forms (diagonal, 2x2) and
 * a Denman-Beavers iteration, FID of a set with itself, of Gaussians with known moments
 * (analytic), invariance under rotation, singular covariances; the cross-entropy and the
 * classifier's backward against finite differences; the trained weights (when present) reach
 * 90% on the first 2000 test images. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "check.h"
#include "classifier.h"
#include "dataset.h"
#include "fid.h"
#include "params.h"
#include "philox.h"

/* ---- brute force: Denman-Beavers iteration for sqrt(M) of a matrix with positive eigenvalues ---- */

static void inv(const double *A, double *out, int d) {
    double *a = malloc(sizeof(double) * (size_t)(d * 2 * d));
    for (int i = 0; i < d; i++)
        for (int j = 0; j < 2 * d; j++) a[i * 2 * d + j] = j < d ? A[i * d + j] : (j - d == i);
    for (int c = 0; c < d; c++) {
        int p = c;
        for (int r = c + 1; r < d; r++)
            if (fabs(a[r * 2 * d + c]) > fabs(a[p * 2 * d + c])) p = r;
        for (int j = 0; j < 2 * d; j++) {
            double t = a[c * 2 * d + j];
            a[c * 2 * d + j] = a[p * 2 * d + j];
            a[p * 2 * d + j] = t;
        }
        double piv = a[c * 2 * d + c];
        for (int j = 0; j < 2 * d; j++) a[c * 2 * d + j] /= piv;
        for (int r = 0; r < d; r++) {
            if (r == c) continue;
            double f = a[r * 2 * d + c];
            for (int j = 0; j < 2 * d; j++) a[r * 2 * d + j] -= f * a[c * 2 * d + j];
        }
    }
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) out[i * d + j] = a[i * 2 * d + d + j];
    free(a);
}

static double trace_sqrt_db(const double *S1, const double *S2, int d) {
    size_t dd = (size_t)d * d;
    double *Y = calloc(dd, sizeof(double)), *Z = calloc(dd, sizeof(double)), *Yi = malloc(sizeof(double) * dd),
           *Zi = malloc(sizeof(double) * dd);
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) {
            for (int k = 0; k < d; k++) Y[i * d + j] += S1[i * d + k] * S2[k * d + j];
            Z[i * d + j] = i == j;
        }
    for (int it = 0; it < 60; it++) {
        inv(Y, Yi, d);
        inv(Z, Zi, d);
        for (size_t k = 0; k < dd; k++) {
            Y[k] = 0.5 * (Y[k] + Zi[k]);
            Z[k] = 0.5 * (Z[k] + Yi[k]);
        }
    }
    double tr = 0;
    for (int i = 0; i < d; i++) tr += Y[i * d + i];
    free(Y);
    free(Z);
    free(Yi);
    free(Zi);
    return tr;
}

/* A random SPD matrix: A A^T + eps I with A from normals of (seed, stream). */
static void random_spd(double *S, int d, uint64_t seed, double eps) {
    double *A = malloc(sizeof(double) * (size_t)(d * d));
    for (int i = 0; i < d * d; i++) A[i] = rng_normal1(seed, 5, (uint64_t)i);
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) {
            double s = 0;
            for (int k = 0; k < d; k++) s += A[i * d + k] * A[j * d + k];
            S[i * d + j] = s / d + (i == j ? eps : 0);
        }
    free(A);
}

static void test_trace_sqrt(void) {
    /* diagonal: sum sqrt(a_i b_i) */
    double A[9] = {4, 0, 0, 0, 9, 0, 0, 0, 0.25}, B[9] = {1, 0, 0, 0, 4, 0, 0, 0, 16};
    double t = fid_trace_sqrt_product(A, B, 3), want = 2 + 6 + 2;
    CHECK(fabs(t - want) < 1e-10, "diagonal: %.12g want %.12g", t, want);
    /* 2x2: Tr sqrt(M) = sqrt(Tr M + 2 sqrt(det M)) for M with positive eigenvalues */
    for (uint64_t s = 1; s <= 20; s++) {
        double P[4], Q[4];
        random_spd(P, 2, s, 0.1);
        random_spd(Q, 2, s + 1000, 0.1);
        double M[4] = {P[0] * Q[0] + P[1] * Q[2], P[0] * Q[1] + P[1] * Q[3], P[2] * Q[0] + P[3] * Q[2],
                       P[2] * Q[1] + P[3] * Q[3]};
        double w = sqrt(M[0] + M[3] + 2 * sqrt(M[0] * M[3] - M[1] * M[2]));
        t = fid_trace_sqrt_product(P, Q, 2);
        CHECK(fabs(t - w) < 1e-10 * (1 + w), "2x2 seed %llu: %.12g want %.12g", (unsigned long long)s, t, w);
    }
    /* 12x12 non-commuting pair against Denman-Beavers */
    enum { d = 12 };
    double P[d * d], Q[d * d];
    random_spd(P, d, 77, 0.05);
    random_spd(Q, d, 78, 0.05);
    t = fid_trace_sqrt_product(P, Q, d);
    double w = trace_sqrt_db(P, Q, d);
    CHECK(fabs(t - w) < 1e-8 * (1 + w), "12x12: %.12g, Denman-Beavers %.12g", t, w);
    /* symmetric in its arguments */
    double t2 = fid_trace_sqrt_product(Q, P, d);
    CHECK(fabs(t - t2) < 1e-9 * (1 + t), "Tr sqrt(PQ) %.12g vs Tr sqrt(QP) %.12g", t, t2);
    /* singular (rank 1) matrices: no NaN, exact value */
    double R1[4] = {1, 1, 1, 1}, R2[4] = {1, 0, 0, 0};  /* R1 R2 = [[1,0],[1,0]]: eigenvalues 1, 0 */
    t = fid_trace_sqrt_product(R1, R2, 2);
    CHECK(fabs(t - 1) < 1e-7, "rank 1: %.12g want 1", t);
    /* eigen-decomposition reconstructs */
    double E[d * d], ev[d];
    memcpy(E, P, sizeof E);
    REQUIRE(fid_sym_eig(E, ev, d) == 0, "dsyevd failed");
    double worst = 0;
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) {
            double s = 0;
            for (int k = 0; k < d; k++) s += E[k * d + i] * ev[k] * E[k * d + j];
            worst = fmax(worst, fabs(s - P[i * d + j]));
        }
    CHECK(worst < 1e-12, "V diag(w) V^T differs by %g", worst);
    for (int k = 1; k < d; k++) CHECK(ev[k] >= ev[k - 1], "eigenvalues not ascending");
}

/* n samples of N(m, L L^T) in d dims (L lower-triangular, row-major), float. */
static void gauss_samples(float *out, int64_t n, int d, const double *m, const double *L, uint64_t seed) {
    float *z = malloc(sizeof(float) * (size_t)d);
    for (int64_t i = 0; i < n; i++) {
        rng_normal_fill(z, d, seed, 9, (uint64_t)(i * d));
        for (int r = 0; r < d; r++) {
            double s = m[r];
            for (int c = 0; c <= r; c++) s += L[r * d + c] * z[c];
            out[i * d + r] = (float)s;
        }
    }
    free(z);
}

static void test_fid_values(void) {
    enum { d = 4, n = 40000 };
    double m1[d] = {0, 0, 0, 0}, m2[d] = {1, -0.5, 0.25, 2};
    double L1[d * d] = {1, 0, 0, 0, 0.5, 1, 0, 0, 0, 0.3, 0.8, 0, 0.2, 0, 0.1, 1.5};
    double L2[d * d] = {2, 0, 0, 0, 0, 0.5, 0, 0, 0.4, 0, 1, 0, 0, 0, 0, 1};
    float *a = malloc(sizeof(float) * n * d), *b = malloc(sizeof(float) * n * d);
    gauss_samples(a, n, d, m1, L1, 1);
    gauss_samples(b, n, d, m2, L2, 2);
    FidStats sa, sb;
    fid_stats_compute(&sa, a, n, d);
    fid_stats_compute(&sb, b, n, d);
    /* covariance matches a direct computation */
    double worst = 0;
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) {
            double s = 0;
            for (int k = 0; k < n; k++) s += (a[k * d + i] - sa.mean[i]) * (a[k * d + j] - sa.mean[j]);
            worst = fmax(worst, fabs(s / (n - 1) - sa.cov[i * d + j]));
        }
    CHECK(worst < 1e-9, "covariance differs from the direct sum by %g", worst);
    double self = fid_frechet(&sa, &sa);
    CHECK(fabs(self) < 1e-9, "FID of a set with itself %g", self);
    /* analytic FID of the true Gaussians */
    double S1[d * d], S2[d * d], mm = 0, tr = 0;
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) {
            double s1 = 0, s2 = 0;
            for (int k = 0; k < d; k++) {
                s1 += L1[i * d + k] * L1[j * d + k];
                s2 += L2[i * d + k] * L2[j * d + k];
            }
            S1[i * d + j] = s1;
            S2[i * d + j] = s2;
        }
    for (int i = 0; i < d; i++) {
        mm += (m1[i] - m2[i]) * (m1[i] - m2[i]);
        tr += S1[i * d + i] + S2[i * d + i];
    }
    double want = mm + tr - 2 * trace_sqrt_db(S1, S2, d), got = fid_frechet(&sa, &sb);
    printf("  FID of two 4-d Gaussians from %d samples each: %.4f, analytic %.4f\n", n, got, want);
    CHECK(fabs(got - want) < 0.05 * want, "FID %.4f vs analytic %.4f (5%%)", got, want);
    CHECK(fabs(fid_frechet(&sb, &sa) - got) < 1e-9, "FID not symmetric");
    /* rotate both sets: FID unchanged */
    double c = cos(0.7), s = sin(0.7);
    for (int k = 0; k < n; k++)
        for (float *p = a + k * d; p; p = p == a + k * d ? b + k * d : NULL) {
            double x0 = p[0], x3 = p[3];
            p[0] = (float)(c * x0 - s * x3);
            p[3] = (float)(s * x0 + c * x3);
        }
    FidStats ra, rb;
    fid_stats_compute(&ra, a, n, d);
    fid_stats_compute(&rb, b, n, d);
    double rot = fid_frechet(&ra, &rb);
    CHECK(fabs(rot - got) < 1e-4 * got, "rotation changed the FID: %.6f vs %.6f", rot, got);
    /* a shift by v adds |v|^2 */
    for (int k = 0; k < n * d; k++) b[k] = a[k] + (k % d == 1 ? 3.0f : 0.0f);
    FidStats sh;
    fid_stats_compute(&sh, b, n, d);
    double shift = fid_frechet(&ra, &sh);
    CHECK(fabs(shift - 9) < 1e-3, "shift by 3: FID %.6f want 9", shift);
    /* rank-deficient features (one constant coordinate, two equal ones) stay finite */
    for (int k = 0; k < n; k++) {
        a[k * d + 2] = 1.0f;
        a[k * d + 3] = a[k * d + 1];
    }
    FidStats sing;
    fid_stats_compute(&sing, a, n, d);
    double fs = fid_frechet(&sing, &sing);
    CHECK(isfinite(fs) && fabs(fs) < 1e-6, "singular self-FID %g", fs);
    fid_stats_free(&sa);
    fid_stats_free(&sb);
    fid_stats_free(&ra);
    fid_stats_free(&rb);
    fid_stats_free(&sh);
    fid_stats_free(&sing);
    free(a);
    free(b);
}

static void test_xent(void) {
    float logits[6] = {0, 0, 0, 1, 2, 3};
    int32_t y[2] = {1, 2};
    float dl[6];
    int64_t ok;
    double l = classifier_xent(logits, y, 2, 3, dl, &ok);
    double want = 0.5 * (log(3.0) + (log(exp(1) + exp(2) + exp(3)) - 3));
    CHECK(fabs(l - want) < 1e-6, "loss %.8f want %.8f", l, want);
    CHECK(ok == 1, "correct %lld (argmax ties go to the first)", (long long)ok);
    CHECK(fabs(dl[0] - (1 / 3.0) / 2) < 1e-7 && fabs(dl[1] - (1 / 3.0 - 1) / 2) < 1e-7, "dlogits %g %g", dl[0], dl[1]);
    double s = 0;
    for (int i = 0; i < 6; i++) s += dl[i];
    CHECK(fabs(s) < 1e-6, "dlogits sum %g", s);
    float big[2] = {1000, -1000};
    int32_t y0 = 1;
    l = classifier_xent(big, &y0, 1, 2, NULL, NULL);
    CHECK(isfinite(l) && fabs(l - 2000) < 1e-3, "large logits: %g", l);
}

/* Loss of the classifier on a fixed batch. */
static double net_loss(Classifier *c, const float *x, const int32_t *y, int N, float *logits) {
    classifier_forward(c, logits, x, N);
    return classifier_xent(logits, y, N, CLS_CLASSES, NULL, NULL);
}

/* The classifier's backward against 4-point central differences of the loss,
 * fd = (8 (L(p+h) - L(p-h)) - (L(p+2h) - L(p-2h))) / (12 h), h = 1e-2 max(1, |p|) (truncation
 * O(h^4); the float32 forward's rounding, ~1e-7 of the loss over h, is the floor). Checked: every
 * coordinate of the 1-D tensors (biases, GroupNorm gains and biases) and of conv0.weight; of
 * every other weight tensor the largest gradient of each output row, more spread over rows,
 * inputs and taps up to 64, and its 3 largest gradients: 1446 coordinates. Tolerance
 * |fd - g| <= 3e-5 + 1e-3 |fd|: the measured errors are up to 1.2e-5 on small gradients
 * (conv0.weight, where the rounding floor is highest; h = 5e-3 and 2e-2 do worse) and up to
 * 5e-4 relative on gradients above 0.02; the worst coordinate uses 0.32 of its tolerance
 * (printed), a margin of 3. An error of 1% in any gradient above 3.3e-3 fails; every tensor has
 * larger ones (its largest: 0.016-0.28), and so does every row of every weight tensor (the
 * smallest row maximum is 6.6e-3). Under ASan (about 10x slower) every 8th of these coordinates
 * and the top 3 of each tensor: the sanitizer build looks for memory errors, the release build
 * for the numbers. */
static void test_classifier_gradients(void) {
    BackendCtx *ctx = backend_ctx_new(&backend_cpu, 1);
    Classifier *c = classifier_new(&backend_cpu, ctx);
    classifier_init(c, 3);
    classifier_alloc_batch(c, 3);
    ParamSet *ps = classifier_params(c);
    enum { N = 3 };
    const double atol = 3e-5, rtol = 1e-3;
    const int thin = UNDER_ASAN ? 8 : 1;
    float x[N * 784], logits[N * 10], dl[N * 10];
    int32_t y[N] = {4, 0, 7};
    rng_uniform_fill(x, N * 784, 5, 1, 0);
    for (int i = 0; i < N * 784; i++) x[i] = 2 * x[i] - 1;
    /* GroupNorm gains away from 1 and biases away from 0 so their gradients are generic */
    for (int i = 0; i < ps->n; i++)
        if (strstr(ps->p[i].name, "norm"))
            for (int64_t k = 0; k < ps->p[i].numel; k++)
                params_data(ps, i)[k] = (strstr(ps->p[i].name, "weight") ? 1.0f : 0.0f) + 0.3f * rng_normal1(9, (uint64_t)i, (uint64_t)k);
    net_loss(c, x, y, N, logits);
    classifier_xent(logits, y, N, CLS_CLASSES, dl, NULL);
    params_zero_grad(ps);
    classifier_backward(c, dl, N);
    int checked = 0;
    double worst_abs = 0, worst_share = 0;
    for (int i = 0; i < ps->n; i++) {
        const float *g = params_grad(ps, i);
        float *p = params_data(ps, i);
        const Param *P = &ps->p[i];
        int64_t numel = P->numel, rows = P->shape[0], inner = numel / rows;
        /* the coordinates: all (1-D tensors, up to 512 elements), else each row's largest gradient
         * and more spread over rows and inputs up to 64; then the tensor's top 3 */
        int all = P->ndim == 1 || numel <= 512;
        int64_t nk = all ? numel : (rows > 64 ? rows : 64), top[3] = {-1, -1, -1};
        for (int64_t k = 0; k < numel; k++)
            for (int s = 0; s < 3; s++)
                if (top[s] < 0 || fabsf(g[k]) > fabsf(g[top[s]])) {
                    for (int t = 2; t > s; t--) top[t] = top[t - 1];
                    top[s] = k;
                    break;
                }
        int bad = 0;
        for (int64_t j = 0; j < nk + 3; j++) {
            if (j < nk && j % thin) continue;
            int64_t k = j >= nk ? top[j - nk] : all ? j : j >= rows ? (j % rows) * inner + (j * 7919) % inner : -1;
            if (j < nk && !all && j < rows) /* row j: its largest gradient */
                for (int64_t q = j * inner; q < (j + 1) * inner; q++)
                    if (k < 0 || fabsf(g[q]) > fabsf(g[k])) k = q;
            if (k < 0) continue;
            float keep = p[k], h = 1e-2f * fmaxf(1.0f, fabsf(keep));
            double l[4];
            const float off[4] = {h, -h, 2 * h, -2 * h};
            for (int q = 0; q < 4; q++) {
                p[k] = keep + off[q];
                l[q] = net_loss(c, x, y, N, logits);
            }
            p[k] = keep;
            double fd = (8 * (l[0] - l[1]) - (l[2] - l[3])) / (12.0 * h), e = fabs(fd - g[k]);
            worst_abs = fmax(worst_abs, e);
            worst_share = fmax(worst_share, e / (atol + rtol * fabs(fd)));
            if (!(e <= atol + rtol * fabs(fd)) && bad++ < 3)
                CHECK(0, "%s[%lld]: backward %.7g, finite difference %.7g (|diff| %.3g > %g + %g |fd|)", P->name,
                      (long long)k, g[k], fd, e, atol, rtol);
            checked++;
        }
        CHECK(bad == 0, "%s: %d coordinates outside the tolerance", P->name, bad);
    }
    printf("  classifier gradients: %d coordinates, worst |backward - finite difference| %.3g, worst share of the "
           "tolerance %.2f\n", checked, worst_abs, worst_share);
    CHECK(checked > 1000 / thin, "only %d coordinates checked", checked);
    classifier_destroy(&c);
    backend_ctx_destroy(&ctx);
}

static void test_trained_weights(void) {
    const char *top = getenv("MSD_TOP");
    char path[1024], err[1024];
    snprintf(path, sizeof path, "%s/models/fmnist_classifier.safetensors", top ? top : ".");
    REQUIRE(access(path, F_OK) == 0, "%s missing (it is committed; msd-eval train-classifier --out it)", path);
    /* only a missing dataset skips; one that is there but cannot be read fails */
    const char *dir = getenv("MSD_FMNIST_DIR");
    char probe[1024];
    snprintf(probe, sizeof probe, "%s/t10k-labels-idx1-ubyte", dir && *dir ? dir : DATASET_FMNIST_DIR);
    if (check_file_missing(probe)) SKIP_MISSING_DATA("%s(.gz) missing (Debian package dataset-fashion-mnist)", probe);
    Dataset d;
    REQUIRE(dataset_load(&d, "fmnist:test", err, sizeof err) == 0, "%s", err);
    BackendCtx *ctx = backend_ctx_new(&backend_cpu, 2);
    Classifier *c = classifier_new(&backend_cpu, ctx);
    REQUIRE(classifier_load(c, path, err, sizeof err) == 0, "%s", err);
    classifier_alloc_batch(c, 200);
    enum { n = 2000 };
    int32_t *pred = malloc(sizeof(int32_t) * n);
    classifier_run(c, d.x, n, NULL, pred);
    int ok = 0;
    for (int i = 0; i < n; i++) ok += pred[i] == d.y[i];
    printf("  trained classifier: %.2f%% on the first %d test images\n", 100.0 * ok / n, n);
    CHECK(ok >= 0.9 * n, "accuracy %.4f < 0.90", (double)ok / n);
    /* batch-independent: one image alone gives the same class */
    classifier_alloc_batch(c, 1);
    int32_t p1;
    classifier_run(c, d.x + 17 * 784, 1, NULL, &p1);
    CHECK(p1 == pred[17], "image 17 alone: %d, in a batch: %d", p1, pred[17]);
    free(pred);
    classifier_destroy(&c);
    backend_ctx_destroy(&ctx);
    dataset_free(&d);
}

int main(void) {
    TEST_RUN(test_trace_sqrt);
    TEST_RUN(test_fid_values);
    TEST_RUN(test_xent);
    TEST_RUN(test_classifier_gradients);
    TEST_RUN(test_trained_weights);
    return TEST_END();
}
