/* dataset.h: a labelled image dataset in host memory (Fashion-MNIST IDX files or a folder of
 * PNG files), restricted to a set of classes on request, and its shuffled batches.
 *
 * Sources (dataset_load's SPEC):
 *   fmnist:train, fmnist:test   the Debian package's files under DATASET_FMNIST_DIR (or the
 *                               folder in the environment variable MSD_FMNIST_DIR)
 *   fmnist:DIR:train|test       the same four file names under DIR (.gz or raw: the .gz name
 *                               is tried first, then the name without .gz)
 *   idx:IMAGES,LABELS           two IDX files (idx.h)
 *   png:FOLDER                  a PNG folder (below)
 * A PNG folder is either labelled, FOLDER/<class>/<name>.png with <class> a decimal number
 * 0..DATASET_MAX_CLASSES-1, or unlabelled, FOLDER/<name>.png (labels -1); mixing the two, an
 * empty folder, a file that is not a .png, or images of different sizes are errors naming the
 * file. Hidden entries (starting '.') are skipped. Order: classes ascending, then file names
 * (strcmp). Channels: those of the first image (grey 1, colour 3) unless the caller forces
 * 1 or 3; others are converted by png_read's rule. Pixels scale to [-1, 1] as v/127.5 - 1.
 *
 * Batches: for seed s and batch size B, the sample at global position k = step * B + j
 * (j < B) is x[perm_e[k mod n]], with epoch e = k / n and perm_e = rng_permutation(n, s,
 * DATASET_STREAM_PERM + e). So batch(step) is a pure function of (dataset, seed, B, step):
 * a resumed run continues exactly, and a batch may straddle two epochs.
 *
 * Not here: serving batches over the wire (procs/data), augmentation. */
#ifndef MSD_DATASET_H
#define MSD_DATASET_H

#include <stddef.h>
#include <stdint.h>

#define DATASET_FMNIST_DIR "/usr/share/datasets/fashion-mnist"
#define DATASET_MAX_CLASSES 1000
#define DATASET_MAX_IMAGES 10000000
#define DATASET_MAX_SIDE 1024
#define DATASET_STREAM_PERM 0x44415441000000ull   /* + epoch */
#define DATASET_FMNIST_CLASSES 10

/* The short names of the Fashion-MNIST classes 0..9, as partition files and --classes lists
 * write them: tshirt trouser pullover dress coat sandal shirt sneaker bag boot. */
extern const char *const dataset_fmnist_names[DATASET_FMNIST_CLASSES];

typedef struct Dataset {
    int64_t n;            /* images */
    int c, h, w;          /* per image: x holds (n, c, h, w) */
    int nclasses;         /* 1 + the largest label (0 when unlabelled) */
    float *x;             /* host, [-1, 1], owned */
    int32_t *y;           /* host (n), owned; -1 when unlabelled */
    char source[256];     /* what was loaded, for messages */
} Dataset;

/* Load SPEC (see the top). 0, or -1 with a message; d is then empty. */
int dataset_load(Dataset *d, const char *spec, char *err, size_t errlen);
/* The two IDX files of a split. */
int dataset_load_idx(Dataset *d, const char *images_path, const char *labels_path, char *err, size_t errlen);
/* A PNG folder; channels 0 (first image decides), 1 or 3. */
int dataset_load_png(Dataset *d, const char *folder, int channels, char *err, size_t errlen);
void dataset_free(Dataset *d);   /* NULL-safe; zeroes *d */

/* Keep only the images whose label is one of classes[0..ncls) (order kept; labels unchanged).
 * Returns the number kept; keeping none is an error (-1, message naming the classes). */
int64_t dataset_filter(Dataset *d, const int32_t *classes, int ncls, char *err, size_t errlen);
/* Parse "0,3,7" or "0-4,9" into classes (at most max entries, each in [0, DATASET_MAX_CLASSES),
 * no duplicates). Returns the count, or -1 with a message. */
int dataset_parse_classes(const char *s, int32_t *classes, int max, char *err, size_t errlen);
/* Number of images of each class: hist[c] for c < nclasses. */
void dataset_histogram(const Dataset *d, int64_t *hist, int nclasses);

/* Shuffled batches (see the top). The batcher caches the permutations of two epochs. */
typedef struct DatasetBatcher {
    const Dataset *d;     /* not owned; must outlive the batcher */
    uint64_t seed;
    int64_t batch;
    int32_t *perm[2];     /* n entries each */
    int64_t epoch[2];     /* which epoch each slot holds, -1: none */
} DatasetBatcher;

void dataset_batcher_init(DatasetBatcher *b, const Dataset *d, uint64_t seed, int64_t batch);
void dataset_batcher_free(DatasetBatcher *b);
/* x (batch, c, h, w) and y (batch) of batch number step >= 0 (host; y may be NULL). */
void dataset_batch(DatasetBatcher *b, int64_t step, float *x, int32_t *y);
/* Index into the dataset of the sample at global position k (= step * batch + j). */
int64_t dataset_batch_index(DatasetBatcher *b, int64_t k);

#endif
