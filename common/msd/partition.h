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
/* Renumber the groups: larger groups first, then by their smallest class id (so K = n gives
 * student i class i, and a balanced split of 10 into 4 has sizes 3 3 2 2 in that order). */
void partition_canonical(int *assign, int n, int K);
/* Sizes of each group into sizes[K]. */
void partition_sizes(int *sizes, const int *assign, int n, int K);

/* names[i] is class i's name (used when writing); write atomically. */
int partition_write(const char *path, const int *assign, int n, int K, const char *const *names, char *err,
                    size_t errlen);
/* Read a partition of n classes; lookup maps a token (name or id) to a class index or -1. */
int partition_read(const char *path, int *assign, int n, int *K_out, int (*lookup)(void *ctx, const char *tok),
                   void *lookup_ctx, char *err, size_t errlen);
/* partition_read with two more checks: want_K > 0 requires the file's K to be want_K (the
 * pipeline's number of students; the error names the 'partition K' line), and names (NULL:
 * ids only) name the classes in the errors: the known classes after an unknown one, the
 * class that belongs to no student. */
int partition_read_checked(const char *path, int *assign, int n, int want_K, const char *const *names, int *K_out,
                           int (*lookup)(void *ctx, const char *tok), void *lookup_ctx, char *err, size_t errlen);

/* A class table for partition_read's lookup: a token is a class id 0..n-1 or one of names
 * (case-insensitive; names may be NULL: ids only). */
typedef struct PartitionNames {
    int n;
    const char *const *names;
} PartitionNames;
int partition_lookup_names(void *ctx, const char *tok);

/* How alike the classes of each group are, on the embeddings emb (n, d) the clustering used:
 * cos_within[k], dist_within[k]: the mean cosine similarity and Euclidean distance over the
 * pairs of group k's classes (NaN for a group of one class); *cos_between: the mean cosine
 * over pairs of classes in different groups (NaN when K = 1). */
void partition_group_stats(double *cos_within, double *dist_within, double *cos_between, const double *emb, int n,
                           int d, const int *assign, int K);

#endif
