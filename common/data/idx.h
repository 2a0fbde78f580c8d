/* idx.h: reader of the IDX files that MNIST and Fashion-MNIST ship in (Debian package
 * dataset-fashion-mnist: /usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,
 * labels-idx1}-ubyte.gz), gzip-compressed or raw (zlib reads both).
 *
 * Format (big-endian u32 words): images  0x00000803, count, rows, cols, then count*rows*cols
 * bytes (row-major, 0 = background); labels 0x00000801, count, then count bytes.
 *
 * The file is untrusted: the magic, the count (at most IDX_MAX_COUNT), rows and cols (1 to
 * IDX_MAX_SIDE), the pixel total (at most IDX_MAX_BYTES) and every label (< IDX_NCLASSES)
 * are checked, the data must be exactly as long as the header says (short data and trailing
 * bytes are both errors), and memory grows only with the bytes actually read, never with what
 * the header claims. Every error names the file.
 *
 * Not here: shuffling, batching, class filters (dataset.h). */
#ifndef MSD_IDX_H
#define MSD_IDX_H

#include <stddef.h>
#include <stdint.h>

#define IDX_MAGIC_IMAGES 0x00000803u
#define IDX_MAGIC_LABELS 0x00000801u
#define IDX_MAX_COUNT 10000000   /* images or labels in one file */
#define IDX_MAX_SIDE 1024        /* rows, cols */
#define IDX_NCLASSES 10          /* label values are < 10 */
#define IDX_MAX_BYTES ((int64_t)1 << 32) /* count * rows * cols of one image file */

/* Read an image file. On success returns 0 and *x (malloc'd, caller frees) holds (*n, 1,
 * *rows, *cols) floats scaled to [-1, 1] (byte v -> v / 127.5 - 1). On failure returns -1
 * with a message naming path and the problem; *x is NULL. */
int idx_read_images(const char *path, float **x, int64_t *n, int *rows, int *cols, char *err, size_t errlen);
/* Read a label file: *labels (malloc'd, caller frees) holds *n int32 values in [0, 10). */
int idx_read_labels(const char *path, int32_t **labels, int64_t *n, char *err, size_t errlen);
/* Both files of a split; their counts must agree (error naming both files otherwise). */
int idx_read_pair(const char *images_path, const char *labels_path, float **x, int32_t **labels, int64_t *n,
                  int *rows, int *cols, char *err, size_t errlen);

#endif
