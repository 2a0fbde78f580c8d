/* safetensors.h: reader and writer of the safetensors format (huggingface/safetensors), so
 * checkpoints can be inspected and loaded by PyTorch tools and back.
 *
 * Format: 8 bytes little-endian u64 N, then N bytes of JSON header, then the data buffer:
 *   {"__metadata__": {"key": "value", ...},
 *    "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
 * offsets are bytes relative to the data start; data is little-endian, row-major.
 *
 * Writer: like the Python library, tensors sorted by name (byte order), laid out in that order
 * with no gaps, "__metadata__" first (its keys sorted too), compact JSON, the header padded
 * with spaces to a multiple of 8 bytes. Writing is atomic: a temporary file in the same
 * folder, fsync, rename over the target, fsync the folder; on any failure the old file is
 * untouched and the temporary is removed.
 *
 * Reader: the file is untrusted. Its own strict JSON parser checks: the header length against
 * the file size (and a 100 MB cap), JSON syntax (RFC 8259; nesting only as deep as the format
 * needs), duplicate keys, known dtype, shape entries >= 0 with a product that does not
 * overflow, numel * dtype size == end - begin, offsets in bounds, tensors neither overlapping
 * nor leaving gaps and covering the data exactly (no trailing bytes), metadata values strings.
 * Nothing is allocated from a size the header claims before it was checked against the actual
 * byte count. Every error names the file (or the label given) and the offending tensor or key.
 *
 * Dtypes: F32 is the engine's; F16, BF16, F64, I32, I64, U8, I8, I16, BOOL are read as raw
 * bytes and converted to float32 on request (st_tensor_to_f32). Host must be little-endian.
 *
 * Not here: the checkpoint layout of a training run (checkpoint.h), memory mapping. */
#ifndef MSD_SAFETENSORS_H
#define MSD_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "params.h"
#include "tensor.h"

typedef enum {
    ST_F32 = 0, ST_F16, ST_BF16, ST_F64, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_BOOL, ST_NDTYPES
} StDtype;

size_t st_dtype_size(StDtype d);       /* bytes per element */

typedef struct StTensor {
    char *name;                        /* owned by the StFile */
    StDtype dtype;
    int ndim;
    int64_t shape[TENSOR_MAX_DIMS];
    int64_t numel;
    uint64_t begin, end;               /* byte offsets into the data buffer */
    const unsigned char *data;         /* end - begin raw bytes; possibly unaligned: read with
                                        * memcpy or st_tensor_to_f32 */
} StTensor;

typedef struct StMeta {
    char *key, *value;                 /* owned by whoever owns the array */
} StMeta;

typedef struct StFile {
    int n;
    StTensor *t;                       /* in data-offset order */
    int nmeta;
    StMeta *meta;                      /* in header order */
    unsigned char *buf;                /* the whole file for st_read; NULL for st_parse */
    int *by_name;                      /* private: tensor indices sorted by name (st_find) */
} StFile;

/* Parse a safetensors image of len bytes. label names it in errors (a path, "<peer>").
 * Tensor data points INTO buf (no copy): buf must outlive f. On success returns 0 and f owns
 * names and tables (st_free); on failure returns -1, writes a message into err and leaves f
 * empty (st_free on it is harmless). */
int st_parse(StFile *f, const void *buf, size_t len, const char *label, char *err, size_t errlen);
/* Read and parse a file; f owns the file image. Errors as st_parse (plus I/O errors with
 * strerror). */
int st_read(StFile *f, const char *path, char *err, size_t errlen);
void st_free(StFile *f);               /* releases everything, zeroes *f; NULL-safe */

/* Tensor by name, or NULL. */
const StTensor *st_find(const StFile *f, const char *name);
/* Metadata value by key, or NULL. */
const char *st_meta_get(const StFile *f, const char *key);
/* Convert t's numel elements to float32 into out (host). Integer and bool values convert
 * exactly where float can hold them. Returns 0. */
int st_tensor_to_f32(const StTensor *t, float *out);

/* One tensor to write. data: host memory, numel(shape) * st_dtype_size(dtype) bytes. */
typedef struct StWriteTensor {
    const char *name;
    StDtype dtype;
    int ndim;
    const int64_t *shape;
    const void *data;
} StWriteTensor;

/* Write n tensors and nmeta metadata pairs to path atomically (see the top). Names must be
 * unique and not "__metadata__", metadata keys unique (returns -1 with a message otherwise,
 * as for I/O errors: the message names the path, the call and strerror). */
int st_write(const char *path, const StWriteTensor *t, int n, const StMeta *meta, int nmeta, char *err,
             size_t errlen);
/* The same, into a malloc'd buffer (*out, *outlen; caller frees). For tests and fuzzing. */
int st_serialize(const StWriteTensor *t, int n, const StMeta *meta, int nmeta, unsigned char **out,
                 size_t *outlen, char *err, size_t errlen);

/* ---- ParamSets ---- */

/* Load slab (ps->total floats on ps->be, e.g. ps->data or an optimiser slab) from the tensors
 * named prefix + param name. Every parameter must be present with its exact shape (errors
 * name the tensor: "missing tensor", "shape (3, 4) in file, (4, 3) expected"); any dtype is
 * converted to float32. used, when not NULL, has f->n entries and gets 1 for every tensor
 * consumed (so a caller can check for leftovers across several prefixes). Padding between
 * parameters in the slab is left as it is. Returns 0 or -1 with a message. */
int st_load_slab(const StFile *f, const ParamSet *ps, float *slab, const char *prefix, unsigned char *used,
                 char *err, size_t errlen);
/* -1 with a message naming the first tensor whose used[] is 0, else 0. */
int st_check_unused(const StFile *f, const unsigned char *used, char *err, size_t errlen);

enum { ST_ALLOW_EXTRA = 1 };  /* st_load_params flag: ignore tensors that match no parameter */
/* Read path and load ps->data from prefix + names ("" or e.g. "ema."). Without
 * ST_ALLOW_EXTRA, a tensor in the file that is not loaded is an error naming it. */
int st_load_params(const char *path, ParamSet *ps, const char *prefix, int flags, char *err, size_t errlen);
/* Save ps->data as prefix + name, float32, with metadata; atomic as st_write. */
int st_save_params(const char *path, const ParamSet *ps, const char *prefix, const StMeta *meta, int nmeta,
                   char *err, size_t errlen);

#endif
