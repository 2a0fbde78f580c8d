/* test_mog.c: the Gaussian-mixture toy: spec parsing (good and bad), the closed-form denoiser
 * against a Monte Carlo posterior mean, sampling, the sample distances, and partitioning. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "mog.h"
#include "partition.h"
#include "philox.h"
#include "sampledist.h"

static const char *mix_path(void) {
    static char path[4096];
    const char *top = getenv("MSD_TOP");
    snprintf(path, sizeof path, "%s/pipelines/mog8.mix", top ? top : ".");
    return path;
}

static void test_default_mixture_parses(void) {
    Mog m;
    char err[512];
    REQUIRE(mog_load(&m, mix_path(), err, sizeof err) == 0, "%s", err);
    CHECK(m.dim == 2, "dim %d", m.dim);
    CHECK(m.nclasses == 8, "classes %d", m.nclasses);
    for (int c = 0; c < m.nclasses; c++) {
        CHECK(m.class_count[c] >= 4 && m.class_count[c] <= 8, "class %d has %d components", c, m.class_count[c]);
        double s = 0;
        for (int k = 0; k < m.class_count[c]; k++) s += m.comp[m.class_first[c] + k].weight;
        CHECK(fabs(s - 1) < 1e-12, "weights of class %d sum to %g", c, s);
    }
    CHECK(mog_class_lookup(&m, "east") == 2, "lookup by name");
    CHECK(mog_class_lookup(&m, "7") == 7, "lookup by id");
    CHECK(mog_class_lookup(&m, "8") == -1, "id out of range");
    CHECK(mog_class_lookup(&m, "nowhere") == -1, "unknown name");
    CHECK(mog_class_lookup(&m, "") == -1, "empty");
    mog_free(&m);
}

static void test_bad_specs(void) {
    struct { const char *text, *want; } cases[] = {
        {"", "no 'mixture DIM'"},
        {"class a\n", "first statement must be 'mixture DIM'"},
        {"mixture 0\n", "dimension must be"},
        {"mixture 2.5\n", "dimension must be"},
        {"mixture 2\n", "no classes"},
        {"mixture 2\nclass a\n", "class 'a' has no components"},
        {"mixture 2\nclass a\nclass b\ncomp 1 0 0 iso 1\n", "x.mix:3: class 'a' has no components"},
        {"mixture 2\ncomp 1 0 0 iso 1\n", "'comp' before any 'class'"},
        {"mixture 2\nclass a\ncomp 1 0 0 iso 0\n", "iso std"},
        {"mixture 2\nclass a\ncomp -1 0 0 iso 1\n", "weight"},
        {"mixture 2\nclass a\ncomp 1 0 iso 1\n", "expected 'comp WEIGHT'"},
        {"mixture 2\nclass a\ncomp 1 0 0 1 2 2 1\n", "not positive definite"},
        {"mixture 2\nclass a\ncomp 1 0 0 1 0.5 0.2 1\n", "not symmetric"},
        {"mixture 2\nclass a\ncomp 1 0 nan iso 1\n", "mean value"},
        {"mixture 2\nclass a\ncomp 1 0 0 iso 1\nclass a\n", "defined twice"},
        {"mixture 2\nclass 9lives\n", "must not start with a digit"},
        {"mixture 2\nclass a b\n", "expected 'class NAME'"},
        {"mixture 2\nclass a\ncomp 1 0 0 iso 1\nfoo\n", "x.mix:4: unknown statement 'foo'"},
        {"mixture 2\nmixture 2\n", "only once"},
        {"mixture 2\nclass a\x01\n", "not text"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Mog m;
        char err[512] = "";
        int rc = mog_parse(&m, cases[i].text, strlen(cases[i].text), "x.mix", err, sizeof err);
        CHECK(rc == -1, "case %zu accepted", i);
        CHECK(strstr(err, cases[i].want) != NULL, "case %zu: message '%s' lacks '%s'", i, err, cases[i].want);
        CHECK(strncmp(err, "x.mix:", 6) == 0 || strncmp(err, "x.mix", 5) == 0, "case %zu: no file name: %s", i, err);
    }
    /* a long line and binary junk */
    char *big = malloc(5000);
    memset(big, 'a', 4999);
    big[4999] = 0;
    Mog m;
    char err[512];
    CHECK(mog_parse(&m, big, 4999, "x.mix", err, sizeof err) == -1 && strstr(err, "longer"), "long line: %s", err);
    free(big);
    unsigned char junk[256];
    for (int i = 0; i < 256; i++) junk[i] = (unsigned char)(i * 37 + 11);
    CHECK(mog_parse(&m, (const char *)junk, sizeof junk, "x.mix", err, sizeof err) == -1, "junk accepted");
    CHECK(mog_load(&m, "/nonexistent/x.mix", err, sizeof err) == -1 && strstr(err, "cannot open"), "%s", err);
}

/* The closed form E[x0 | x_t] against a self-normalised Monte Carlo estimate
 * sum_j w_j x0_j / sum_j w_j, w_j = N(x_t; x0_j, sigma^2 I), x0_j ~ p(x0 | c). */
static void test_denoiser_matches_monte_carlo(void) {
    Mog m;
    char err[512];
    REQUIRE(mog_load(&m, mix_path(), err, sizeof err) == 0, "%s", err);
    const int M = 200000;
    float *x0 = malloc(sizeof(float) * 2 * M);
    int32_t *cls = malloc(sizeof(int32_t) * M);
    const float sigmas[] = {0.4f, 1.0f, 3.0f, 20.0f};
    for (int c = 0; c < m.nclasses; c += 3) {
        for (int i = 0; i < M; i++) cls[i] = c;
        mog_sample(&m, x0, NULL, cls, M, 11, (uint64_t)c, 0);
        for (size_t si = 0; si < sizeof sigmas / sizeof sigmas[0]; si++) {
            float s = sigmas[si];
            for (int q = 0; q < 3; q++) {
                /* a query point: a fresh sample of the class plus noise */
                float xt[2];
                int32_t cc = c;
                mog_sample(&m, xt, NULL, &cc, 1, 12, (uint64_t)c, (uint64_t)(si * 10 + q));
                for (int r = 0; r < 2; r++) xt[r] += s * rng_normal1(13, 0, si * 100 + q * 2 + r);
                float got[2];
                mog_denoise(&m, got, xt, &s, &cc, 1);
                double num[2] = {0, 0}, den = 0, den2 = 0, maxlog = -INFINITY;
                for (int j = 0; j < M; j++) {
                    double dx = xt[0] - x0[2 * j], dy = xt[1] - x0[2 * j + 1];
                    double l = -(dx * dx + dy * dy) / (2.0 * s * s);
                    if (l > maxlog) maxlog = l;
                }
                for (int j = 0; j < M; j++) {
                    double dx = xt[0] - x0[2 * j], dy = xt[1] - x0[2 * j + 1];
                    double w = exp(-(dx * dx + dy * dy) / (2.0 * s * s) - maxlog);
                    num[0] += w * x0[2 * j];
                    num[1] += w * x0[2 * j + 1];
                    den += w;
                    den2 += w * w;
                }
                double ess = den * den / den2;
                double want[2] = {num[0] / den, num[1] / den};
                /* the Monte Carlo error scales like (posterior spread) / sqrt(ESS) */
                double tol = 0.02 + 3.0 * 1.5 / sqrt(ess);
                CHECK(ess > 100, "class %d sigma %g: only %.0f effective samples", c, s, ess);
                CHECK(fabs(got[0] - want[0]) < tol && fabs(got[1] - want[1]) < tol,
                      "class %d sigma %g x_t (%g, %g): closed form (%g, %g) vs Monte Carlo (%g, %g), tol %g, ESS %.0f", c,
                      s, xt[0], xt[1], got[0], got[1], want[0], want[1], tol, ess);
            }
        }
    }
    /* limits: sigma -> 0 gives back x; sigma -> inf gives the class mean */
    float x[2] = {5.9f, 0.1f}, out[2], s0 = 1e-4f, sinf_ = 1e5f;
    int32_t c2 = 2;
    mog_denoise(&m, out, x, &s0, &c2, 1);
    CHECK(fabs(out[0] - x[0]) < 1e-3 && fabs(out[1] - x[1]) < 1e-3, "sigma 0: (%g, %g)", out[0], out[1]);
    double mean[2];
    mog_class_mean(&m, 2, mean);
    mog_denoise(&m, out, x, &sinf_, &c2, 1);
    CHECK(fabs(out[0] - mean[0]) < 1e-3 && fabs(out[1] - mean[1]) < 1e-3, "sigma inf: (%g, %g) vs mean (%g, %g)",
          out[0], out[1], mean[0], mean[1]);
    free(x0);
    free(cls);
    mog_free(&m);
}

static void test_sampling_and_distances(void) {
    Mog m;
    char err[512];
    REQUIRE(mog_load(&m, mix_path(), err, sizeof err) == 0, "%s", err);
    const int n = 2000;
    float *a = malloc(sizeof(float) * 2 * n), *b = malloc(sizeof(float) * 2 * n), *c = malloc(sizeof(float) * 2 * n);
    int32_t *cls = malloc(sizeof(int32_t) * n), *comp = malloc(sizeof(int32_t) * n);
    for (int i = 0; i < n; i++) cls[i] = i % m.nclasses;
    mog_sample(&m, a, comp, cls, n, 1, 0, 0);
    mog_sample(&m, b, NULL, cls, n, 2, 0, 0);
    /* same seed, offset slices agree */
    float part[20];
    mog_sample(&m, part, NULL, cls + 100, 10, 1, 0, 100);
    CHECK(memcmp(part, a + 200, sizeof part) == 0, "offset sampling differs");
    /* the drawn component is the one a clean point is assigned to, nearly always */
    int agree = 0;
    for (int i = 0; i < n; i++) agree += mog_assign(&m, a + 2 * i, cls[i]) == comp[i];
    CHECK(agree > n * 0.97, "assignment agrees with the drawn component for only %d of %d", agree, n);
    /* sample means close to the class means */
    double ed_same = energy_distance(a, n, b, n, 2);
    for (int i = 0; i < n; i++) { c[2 * i] = b[2 * i] + 0.5f; c[2 * i + 1] = b[2 * i + 1]; }
    double ed_shift = energy_distance(a, n, c, n, 2);
    CHECK(ed_same < 0.15 && ed_shift > 2 * ed_same, "energy distance: same %g shifted %g", ed_same, ed_shift);
    double sw_same = sliced_w2(a, b, n, 2, 64, 5), sw_shift = sliced_w2(a, c, n, 2, 64, 5);
    CHECK(sw_same < 0.2 && sw_shift > 0.3 && sw_shift > 2 * sw_same, "sliced W2: same %g shifted %g", sw_same, sw_shift);
    CHECK(sliced_w2(a, a, n, 2, 8, 5) == 0, "sliced W2 of a set with itself is not 0");
    free(a); free(b); free(c); free(cls); free(comp);
    mog_free(&m);
}

static int lookup_mog(void *ctx, const char *tok) { return mog_class_lookup(ctx, tok); }

static void test_partition(void) {
    Mog m;
    char err[512];
    REQUIRE(mog_load(&m, mix_path(), err, sizeof err) == 0, "%s", err);
    double emb[8 * 2];
    for (int c = 0; c < 8; c++) mog_class_mean(&m, c, emb + 2 * c);
    int a[8], b[8], sizes[8];
    for (int K = 1; K <= 8; K *= 2) {
        partition_kmeans(a, emb, 8, 2, K, 1, 7, 100);
        partition_sizes(sizes, a, 8, K);
        for (int k = 0; k < K; k++) CHECK(sizes[k] == 8 / K, "balanced K=%d: group %d has %d", K, k, sizes[k]);
        partition_kmeans(b, emb, 8, 2, K, 1, 7, 100);
        CHECK(memcmp(a, b, sizeof a) == 0, "balanced k-means not deterministic for K=%d", K);
    }
    /* K = 4 on classes around a circle: each group is two neighbours */
    partition_kmeans(a, emb, 8, 2, 4, 1, 7, 100);
    int neighbours = 0;
    for (int c = 0; c < 8; c++) neighbours += a[c] == a[(c + 1) % 8];
    CHECK(neighbours == 4, "K=4 groups are not pairs of neighbours (%d neighbour pairs)", neighbours);
    /* plain k-means on an uneven set: 9 points near 0, 1 far away, K=2 -> sizes 9 and 1 */
    double uneven[10];
    for (int i = 0; i < 9; i++) uneven[i] = 0.01 * i;
    uneven[9] = 100;
    int u[10], us[2];
    partition_kmeans(u, uneven, 10, 1, 2, 0, 3, 100);
    partition_sizes(us, u, 10, 2);
    CHECK((us[0] == 9 && us[1] == 1) || (us[0] == 1 && us[1] == 9), "plain k-means sizes %d %d", us[0], us[1]);
    partition_kmeans(u, uneven, 10, 1, 2, 1, 3, 100);
    partition_sizes(us, u, 10, 2);
    CHECK(us[0] == 5 && us[1] == 5, "balanced k-means sizes %d %d", us[0], us[1]);
    partition_random(a, 8, 4, 9);
    partition_sizes(sizes, a, 8, 4);
    for (int k = 0; k < 4; k++) CHECK(sizes[k] == 2, "random: group %d has %d", k, sizes[k]);
    /* canonical numbering: larger groups first, then by the smallest class */
    int cz[10] = {3, 1, 0, 0, 1, 3, 2, 0, 2, 1}, cz_want[10] = {2, 0, 1, 1, 0, 2, 3, 1, 3, 0};
    partition_canonical(cz, 10, 4);
    CHECK(!memcmp(cz, cz_want, sizeof cz), "canonical: %d %d %d %d %d %d %d %d %d %d", cz[0], cz[1], cz[2], cz[3],
          cz[4], cz[5], cz[6], cz[7], cz[8], cz[9]);
    int perm8[8] = {5, 2, 7, 0, 1, 6, 3, 4};
    partition_canonical(perm8, 8, 8);
    for (int c = 0; c < 8; c++) CHECK(perm8[c] == c, "canonical K = n: class %d in group %d", c, perm8[c]);
    partition_contiguous(a, 8, 4);
    CHECK(a[0] == 0 && a[1] == 0 && a[2] == 1 && a[7] == 3, "contiguous");

    /* file round trip */
    char dir[] = "/tmp/msdpartXXXXXX";
    REQUIRE(mkdtemp(dir) != NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/p.txt", dir);
    partition_kmeans(a, emb, 8, 2, 4, 1, 7, 100);
    const char *names[8];
    for (int c = 0; c < 8; c++) names[c] = m.class_names[c];
    REQUIRE(partition_write(path, a, 8, 4, names, err, sizeof err) == 0, "%s", err);
    int K = 0;
    REQUIRE(partition_read(path, b, 8, &K, lookup_mog, &m, err, sizeof err) == 0, "%s", err);
    CHECK(K == 4 && memcmp(a, b, sizeof a) == 0, "round trip differs");
    struct { const char *text, *want; } bad[] = {
        {"", "no 'partition K'"},
        {"partition 0\n", "K must be"},
        {"partition 2\n0: north east\n", "1 students listed"},
        {"partition 2\n0: north\n1: east\n", "3: at the end: 6 classes belong to no student"},
        {"partition 2\n0: north north\n", "already belongs"},
        {"partition 2\n0: nowhere\n", "unknown class 'nowhere'"},
        {"partition 2\n1: north\n", "out of order"},
        {"partition 2\n0:\n", "owns no class"},
        {"partition 1\n0 north\n", "expected 'STUDENT: CLASS"},
        {"partition 1\n0: 0 1 2 3 4 5 6 7\n1: north\n", "K = 1"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        FILE *f = fopen(path, "w");
        fputs(bad[i].text, f);
        fclose(f);
        err[0] = 0;
        CHECK(partition_read(path, b, 8, &K, lookup_mog, &m, err, sizeof err) == -1, "bad partition %zu accepted", i);
        CHECK(strstr(err, bad[i].want) != NULL, "bad partition %zu: '%s' lacks '%s'", i, err, bad[i].want);
    }
    /* partition_read_checked: the pipeline's K, class names in the messages, the line */
    static const char *const fm[10] = {"tshirt", "trouser", "pullover", "dress", "coat",
                                       "sandal", "shirt",   "sneaker",  "bag",   "boot"};
    PartitionNames pn = {10, fm};
    int c10[10];
    struct { const char *text; int want_K; const char *want; } bad2[] = {
        {"# two\npartition 2\n0: 0 1 2 3 4\n1: 5 6 7 8 9\n", 3, "p.txt:2: the partition has K = 2 students but the pipeline runs 3"},
        {"partition 2\n0: tshirt trouser pullover dress coat\n1: sandal sneaker bag boot\n", 2,
         "p.txt:3: at the end: 1 class belongs to no student (every class must be listed exactly once): 'shirt' (6)"},
        {"partition 2\n0: tshirt trouser pullover dress coat\n1: sandal shrt sneaker bag boot\n", 2,
         "p.txt:3: unknown class 'shrt' (the classes: 'tshirt' (0), 'trouser' (1)"},
        {"partition 2\n0: tshirt trouser pullover dress coat\n\n1: sandal Shirt sneaker bag 4\n", 0,
         "p.txt:4: class '4' already belongs to student 0"},
        {"partition 2\n0: 0 1 2 3 4\n1: 5 6 7 8 10\n", 2, "p.txt:3: unknown class '10'"},
    };
    for (size_t i = 0; i < sizeof bad2 / sizeof bad2[0]; i++) {
        FILE *f = fopen(path, "w");
        fputs(bad2[i].text, f);
        fclose(f);
        err[0] = 0;
        CHECK(partition_read_checked(path, c10, 10, bad2[i].want_K, fm, &K, partition_lookup_names, &pn, err,
                                     sizeof err) == -1, "bad 10-class partition %zu accepted", i);
        CHECK(strstr(err, bad2[i].want) != NULL, "bad 10-class partition %zu: '%s' lacks '%s'", i, err, bad2[i].want);
    }
    FILE *f = fopen(path, "w");
    fputs("partition 2  # names (any case) or ids\n0: TShirt 1 pullover dress coat\n1: 5 shirt SNEAKER bag boot\n", f);
    fclose(f);
    CHECK(partition_read_checked(path, c10, 10, 2, fm, &K, partition_lookup_names, &pn, err, sizeof err) == 0, "%s", err);
    int want10[10] = {0, 0, 0, 0, 0, 1, 1, 1, 1, 1};
    CHECK(K == 2 && !memcmp(c10, want10, sizeof want10), "names and ids read back wrong (K %d)", K);

    /* group statistics: two groups of two, cosines known (tolerance 1e-12) */
    double e4[4 * 2] = {1, 0, 2, 0, 0, 1, 0, 3};
    int g4[4] = {0, 0, 1, 1};
    double cw[2], dw[2], cb;
    partition_group_stats(cw, dw, &cb, e4, 4, 2, g4, 2);
    CHECK(fabs(cw[0] - 1) < 1e-12 && fabs(cw[1] - 1) < 1e-12 && fabs(cb) < 1e-12, "cosines %g %g between %g", cw[0],
          cw[1], cb);
    CHECK(fabs(dw[0] - 1) < 1e-12 && fabs(dw[1] - 2) < 1e-12, "distances %g %g", dw[0], dw[1]);
    int g4b[4] = {0, 1, 0, 1};
    partition_group_stats(cw, dw, &cb, e4, 4, 2, g4b, 2);
    CHECK(fabs(cw[0]) < 1e-12 && fabs(cw[1]) < 1e-12 && fabs(cb - 0.5) < 1e-12, "crossed: cosines %g %g between %g",
          cw[0], cw[1], cb);
    unlink(path);
    rmdir(dir);
    mog_free(&m);
}

int main(void) {
    TEST_RUN(test_default_mixture_parses);
    TEST_RUN(test_bad_specs);
    TEST_RUN(test_denoiser_matches_monte_carlo);
    TEST_RUN(test_sampling_and_distances);
    TEST_RUN(test_partition);
    return TEST_END();
}
