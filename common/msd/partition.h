/* partition.h: splitting a condition set (classes, prompts) into K disjoint groups, one per
 * student (docs/ALGORITHMS.md section 3), and the partition file that records the split.
 *
 * Strategies: k-means++ under a fixed seed on condition embeddings (plain, which can give
 * very uneven groups, or balanced: group sizes differ by at most one), random (equal sizes),
 * and contiguous ids (the paper's manual ImageNet split). assign[i] in [0, K) for each of the
 * n conditions.
 *
 * Partition file (text): "partition K" then one line per student "S: C C C ..." where each C
 * is a class name or id; '#' starts a comment. Every class appears exactly once and every
 * student owns at least one class. Errors are "FILE:LINE: message". */
#ifndef MSD_PARTITION_H
#define MSD_PARTITION_H

#include <stddef.h>
#include <stdint.h>

/* k-means++ with Lloyd iterations on emb (n, d) doubles, best of 10 starts. balanced:
 * capacities ceil/floor(n/K). Returns the final within-cluster sum of squares. K <= n (else a bug). */
double partition_kmeans(int *assign, const double *emb, int n, int d, int K, int balanced, uint64_t seed,
                        int max_iters);
void partition_random(int *assign, int n, int K, uint64_t seed);
void partition_contiguous(int *assign, int n, int K);
/* Sizes of each group into sizes[K]. */
void partition_sizes(int *sizes, const int *assign, int n, int K);

/* names[i] is class i's name (used when writing); write atomically. */
int partition_write(const char *path, const int *assign, int n, int K, const char *const *names, char *err,
                    size_t errlen);
/* Read a partition of n classes; lookup maps a token (name or id) to a class index or -1. */
int partition_read(const char *path, int *assign, int n, int *K_out, int (*lookup)(void *ctx, const char *tok),
                   void *lookup_ctx, char *err, size_t errlen);

#endif
