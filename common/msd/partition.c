/* partition.c: see partition.h. */
#include "partition.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "log.h"
#include "philox.h"

static double sqdist(const double *a, const double *b, int d) {
    double s = 0;
    for (int k = 0; k < d; k++) s += (a[k] - b[k]) * (a[k] - b[k]);
    return s;
}

typedef struct Pair { double dist; int i, k; } Pair;
static int cmp_pair(const void *x, const void *y) {
    const Pair *a = x, *b = y;
    if (a->dist != b->dist) return a->dist < b->dist ? -1 : 1;
    if (a->i != b->i) return a->i - b->i;
    return a->k - b->k;
}

/* Balanced assignment: greedy over (point, centre) pairs by distance, each centre taking at
 * most its capacity (the first n % K centres in index order take one more). */
static void assign_balanced(int *assign, const double *emb, const double *cent, int n, int d, int K, Pair *pairs) {
    int *cap = msd_calloc((size_t)K, sizeof(int));
    for (int k = 0; k < K; k++) cap[k] = n / K + (k < n % K);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < K; k++) pairs[(size_t)i * K + k] = (Pair){sqdist(emb + (size_t)i * d, cent + (size_t)k * d, d), i, k};
    qsort(pairs, (size_t)n * K, sizeof(Pair), cmp_pair);
    for (int i = 0; i < n; i++) assign[i] = -1;
    for (size_t p = 0; p < (size_t)n * K; p++) {
        Pair *q = &pairs[p];
        if (assign[q->i] < 0 && cap[q->k] > 0) {
            assign[q->i] = q->k;
            cap[q->k]--;
        }
    }
    free(cap);
}

/* One k-means run from a k-means++ start drawn from streams (16 r + 1, 16 r + 2). */
static double kmeans_once(int *assign, const double *emb, int n, int d, int K, int balanced, uint64_t seed, int r,
                          int max_iters) {
    MSD_CHECK(K >= 1 && K <= n && d >= 1);
    double *cent = msd_calloc((size_t)K * d, sizeof(double));
    double *mind = msd_malloc(sizeof(double) * (size_t)n);
    uint64_t draw = 0;
    /* k-means++: first centre uniform, then proportional to squared distance */
    int first = (int)rng_uniform_int(seed, 16 * (uint64_t)r + 1, draw++, (uint32_t)n);
    memcpy(cent, emb + (size_t)first * d, sizeof(double) * (size_t)d);
    for (int i = 0; i < n; i++) mind[i] = sqdist(emb + (size_t)i * d, cent, d);
    for (int k = 1; k < K; k++) {
        double tot = 0;
        for (int i = 0; i < n; i++) tot += mind[i];
        int pick = n - 1;
        if (tot > 0) {
            double u = rng_uniform1(seed, 16 * (uint64_t)r + 2, draw++) * tot, cum = 0;
            for (int i = 0; i < n; i++) {
                cum += mind[i];
                if (u < cum) { pick = i; break; }
            }
        } else {
            pick = (int)rng_uniform_int(seed, 16 * (uint64_t)r + 1, draw++, (uint32_t)n);
        }
        memcpy(cent + (size_t)k * d, emb + (size_t)pick * d, sizeof(double) * (size_t)d);
        for (int i = 0; i < n; i++) {
            double q = sqdist(emb + (size_t)i * d, cent + (size_t)k * d, d);
            if (q < mind[i]) mind[i] = q;
        }
    }
    for (int i = 0; i < n; i++) assign[i] = -1;
    Pair *pairs = balanced ? msd_malloc(sizeof(Pair) * (size_t)n * K) : NULL;
    int *prev = msd_malloc(sizeof(int) * (size_t)n);
    int *count = msd_calloc((size_t)K, sizeof(int));
    for (int it = 0; it < max_iters; it++) {
        memcpy(prev, assign, sizeof(int) * (size_t)n);
        if (balanced) {
            assign_balanced(assign, emb, cent, n, d, K, pairs);
        } else {
            for (int i = 0; i < n; i++) {
                int best = 0;
                double bd = INFINITY;
                for (int k = 0; k < K; k++) {
                    double q = sqdist(emb + (size_t)i * d, cent + (size_t)k * d, d);
                    if (q < bd) { bd = q; best = k; }
                }
                assign[i] = best;
            }
        }
        memset(count, 0, sizeof(int) * (size_t)K);
        for (int i = 0; i < n; i++) count[assign[i]]++;
        for (int k = 0; k < K; k++) {
            if (count[k] > 0) continue;
            /* an empty cluster takes the point farthest from its (old) centre */
            int far = -1;
            double fd = -1;
            for (int i = 0; i < n; i++) {
                double q = sqdist(emb + (size_t)i * d, cent + (size_t)assign[i] * d, d);
                if (count[assign[i]] > 1 && q > fd) { fd = q; far = i; }
            }
            MSD_CHECK(far >= 0); /* K <= n guarantees a cluster with two points */
            count[assign[far]]--;
            assign[far] = k;
            count[k] = 1;
        }
        memset(cent, 0, sizeof(double) * (size_t)K * d);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < d; j++) cent[(size_t)assign[i] * d + j] += emb[(size_t)i * d + j];
        for (int k = 0; k < K; k++)
            for (int j = 0; j < d; j++) cent[(size_t)k * d + j] /= count[k];
        if (it > 0 && memcmp(prev, assign, sizeof(int) * (size_t)n) == 0) break;
    }
    double wss = 0;
    for (int i = 0; i < n; i++) wss += sqdist(emb + (size_t)i * d, cent + (size_t)assign[i] * d, d);
    free(cent);
    free(mind);
    free(pairs);
    free(prev);
    free(count);
    return wss;
}

double partition_kmeans(int *assign, const double *emb, int n, int d, int K, int balanced, uint64_t seed,
                        int max_iters) {
    /* Like scikit-learn's n_init: several k-means++ starts, keep the lowest within-cluster
     * sum of squares (ties: the earliest start). Lloyd and the greedy balanced assignment
     * both stop in local optima, and one start is often a poor one. */
    enum { RESTARTS = 10 };
    int *cand = msd_malloc(sizeof(int) * (size_t)n);
    double best = INFINITY;
    for (int r = 0; r < RESTARTS; r++) {
        double w = kmeans_once(cand, emb, n, d, K, balanced, seed, r, max_iters);
        if (r == 0 || w < best - 1e-12 * (1 + best)) {
            best = w;
            memcpy(assign, cand, sizeof(int) * (size_t)n);
        }
    }
    free(cand);
    return best;
}

void partition_random(int *assign, int n, int K, uint64_t seed) {
    MSD_CHECK(K >= 1 && K <= n);
    int32_t *perm = msd_malloc(sizeof(int32_t) * (size_t)n);
    rng_permutation(perm, n, seed, 3);
    for (int i = 0; i < n; i++) assign[perm[i]] = i % K;
    free(perm);
}

void partition_contiguous(int *assign, int n, int K) {
    MSD_CHECK(K >= 1 && K <= n);
    for (int i = 0; i < n; i++) assign[i] = (int)((int64_t)i * K / n);
}

void partition_canonical(int *assign, int n, int K) {
    int *size = msd_calloc((size_t)K, sizeof(int)), *first = msd_malloc(sizeof(int) * (size_t)K);
    int *order = msd_malloc(sizeof(int) * (size_t)K), *to = msd_malloc(sizeof(int) * (size_t)K);
    for (int k = 0; k < K; k++) { first[k] = n; order[k] = k; }
    for (int i = n - 1; i >= 0; i--) { size[assign[i]]++; first[assign[i]] = i; }
    for (int a = 1; a < K; a++) /* insertion sort: K is small */
        for (int b = a; b > 0; b--) {
            int x = order[b], y = order[b - 1];
            if (size[x] < size[y] || (size[x] == size[y] && first[x] > first[y])) break;
            order[b] = y;
            order[b - 1] = x;
        }
    for (int k = 0; k < K; k++) to[order[k]] = k;
    for (int i = 0; i < n; i++) assign[i] = to[assign[i]];
    free(size);
    free(first);
    free(order);
    free(to);
}

void partition_sizes(int *sizes, const int *assign, int n, int K) {
    memset(sizes, 0, sizeof(int) * (size_t)K);
    for (int i = 0; i < n; i++) sizes[assign[i]]++;
}

int partition_write(const char *path, const int *assign, int n, int K, const char *const *names, char *err,
                    size_t errlen) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof tmp)
        return msd_errf(err, errlen, "%s: path too long", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return msd_errf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
    fprintf(f, "# msdpipe partition: %d classes into %d students\npartition %d\n", n, K, K);
    for (int k = 0; k < K; k++) {
        fprintf(f, "%d:", k);
        for (int i = 0; i < n; i++)
            if (assign[i] == k) fprintf(f, " %s", names[i]);
        fprintf(f, "\n");
    }
    int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return msd_errf(err, errlen, "%s: cannot write: %s", path, strerror(e));
    }
    return 0;
}

int partition_lookup_names(void *ctx, const char *tok) {
    const PartitionNames *t = ctx;
    if (t->names)
        for (int c = 0; c < t->n; c++)
            if (!strcasecmp(tok, t->names[c])) return c;
    if (!*tok || strlen(tok) > 9) return -1;
    for (const char *q = tok; *q; q++)
        if (!isdigit((unsigned char)*q)) return -1;
    int id = atoi(tok);
    return id < t->n ? id : -1;
}

/* "tshirt (0) trouser (1) ..." or "ids 0..n-1" into buf, cut short with "..." when it fills. */
static void class_list(char *buf, size_t len, const char *const *names, int n, const int *only_unassigned) {
    size_t at = 0;
    buf[0] = 0;
    for (int c = 0; c < n; c++) {
        if (only_unassigned && only_unassigned[c] >= 0) continue;
        char one[160];
        if (names) snprintf(one, sizeof one, "%s'%.100s' (%d)", at ? ", " : "", names[c], c);
        else snprintf(one, sizeof one, "%s%d", at ? ", " : "", c);
        if (at + strlen(one) + 5 >= len) { snprintf(buf + at, len - at, ", ..."); return; }
        at += (size_t)snprintf(buf + at, len - at, "%s", one);
    }
}

int partition_read(const char *path, int *assign, int n, int *K_out, int (*lookup)(void *ctx, const char *tok),
                   void *lookup_ctx, char *err, size_t errlen) {
    return partition_read_checked(path, assign, n, 0, NULL, K_out, lookup, lookup_ctx, err, errlen);
}

int partition_read_checked(const char *path, int *assign, int n, int want_K, const char *const *names, int *K_out,
                           int (*lookup)(void *ctx, const char *tok), void *lookup_ctx, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) return msd_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    for (int i = 0; i < n; i++) assign[i] = -1;
    char line[8192];
    int lineno = 0, K = 0, rc = -1;
    int *owned = NULL, next_student = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            msd_errf(err, errlen, "%s:%d: line longer than %zu characters", path, lineno, sizeof line - 2);
            goto out;
        }
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        char *save = NULL, *tok = strtok_r(line, " \t\r\n", &save);
        if (!tok) continue;
        if (K == 0) {
            char *tk = strtok_r(NULL, " \t\r\n", &save);
            if (strcmp(tok, "partition") != 0 || !tk || strtok_r(NULL, " \t\r\n", &save)) {
                msd_errf(err, errlen, "%s:%d: the first statement must be 'partition K'", path, lineno);
                goto out;
            }
            char *end;
            long k = strtol(tk, &end, 10);
            if (*end || k < 1 || k > n) {
                msd_errf(err, errlen, "%s:%d: K must be an integer in 1..%d (the number of classes), not '%s'", path,
                         lineno, n, tk);
                goto out;
            }
            if (want_K > 0 && k != want_K) {
                msd_errf(err, errlen, "%s:%d: the partition has K = %ld students but the pipeline runs %d (its K)",
                         path, lineno, k, want_K);
                goto out;
            }
            K = (int)k;
            owned = msd_calloc((size_t)K, sizeof(int));
            continue;
        }
        size_t tl = strlen(tok);
        char *end;
        long s = strtol(tok, &end, 10);
        if (tl < 2 || end != tok + tl - 1 || *end != ':') {
            msd_errf(err, errlen, "%s:%d: expected 'STUDENT: CLASS ...', got '%s'", path, lineno, tok);
            goto out;
        }
        if (s != next_student) {
            msd_errf(err, errlen, "%s:%d: student %ld out of order (expected %d)", path, lineno, s, next_student);
            goto out;
        }
        if (s >= K) {
            msd_errf(err, errlen, "%s:%d: student %ld but the partition has K = %d", path, lineno, s, K);
            goto out;
        }
        next_student++;
        while ((tok = strtok_r(NULL, " \t\r\n", &save))) {
            int c = lookup(lookup_ctx, tok);
            if (c < 0 || c >= n) {
                char known[1024];
                class_list(known, sizeof known, names, n, NULL);
                msd_errf(err, errlen, "%s:%d: unknown class '%s' (the classes: %s%s)", path, lineno, tok, known,
                         names ? ", or their ids" : "");
                goto out;
            }
            if (assign[c] >= 0) {
                msd_errf(err, errlen, "%s:%d: class '%s' already belongs to student %d", path, lineno, tok, assign[c]);
                goto out;
            }
            assign[c] = (int)s;
            owned[s]++;
        }
        if (owned[s] == 0) {
            msd_errf(err, errlen, "%s:%d: student %ld owns no class", path, lineno, s);
            goto out;
        }
    }
    if (ferror(f)) { msd_errf(err, errlen, "%s: read error", path); goto out; }
    if (K == 0) { msd_errf(err, errlen, "%s: no 'partition K' statement", path); goto out; }
    if (next_student != K) {
        msd_errf(err, errlen, "%s:%d: at the end: %d students listed, K = %d", path, lineno, next_student, K);
        goto out;
    }
    int missing = 0;
    for (int i = 0; i < n; i++) missing += assign[i] < 0;
    if (missing) {
        char list[1024];
        class_list(list, sizeof list, names, n, assign);
        msd_errf(err, errlen, "%s:%d: at the end: %d class%s to no student (every class must be listed exactly "
                 "once): %s", path, lineno, missing, missing > 1 ? "es belong" : " belongs", list);
        goto out;
    }
    *K_out = K;
    rc = 0;
out:
    free(owned);
    fclose(f);
    return rc;
}

void partition_group_stats(double *cos_within, double *dist_within, double *cos_between, const double *emb, int n,
                           int d, const int *assign, int K) {
    double *cs = msd_calloc((size_t)K, sizeof(double)), *ds = msd_calloc((size_t)K, sizeof(double));
    int64_t *np = msd_calloc((size_t)K, sizeof(int64_t)), nb = 0;
    double bs = 0;
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            const double *a = emb + (size_t)i * d, *b = emb + (size_t)j * d;
            double ab = 0, aa = 0, bb = 0;
            for (int k = 0; k < d; k++) { ab += a[k] * b[k]; aa += a[k] * a[k]; bb += b[k] * b[k]; }
            double cosv = aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : 0;
            if (assign[i] == assign[j]) {
                cs[assign[i]] += cosv;
                ds[assign[i]] += sqrt(sqdist(a, b, d));
                np[assign[i]]++;
            } else {
                bs += cosv;
                nb++;
            }
        }
    for (int k = 0; k < K; k++) {
        cos_within[k] = np[k] ? cs[k] / (double)np[k] : NAN;
        dist_within[k] = np[k] ? ds[k] / (double)np[k] : NAN;
    }
    *cos_between = nb ? bs / (double)nb : NAN;
    free(cs);
    free(ds);
    free(np);
}
