/* idx.c: see idx.h. One path for raw and gzip files: zlib's gzread passes raw files through. */
#include "idx.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "log.h"

#define IDX_CHUNK ((size_t)1 << 20)

/* Read up to want bytes; returns the count read (short only at end of data) or -1 on a zlib
 * error (message in err). */
static int64_t gz_read_full(gzFile f, unsigned char *buf, size_t want, const char *path, char *err, size_t errlen) {
    size_t got = 0;
    while (got < want) {
        size_t ask = want - got < IDX_CHUNK ? want - got : IDX_CHUNK;
        int r = gzread(f, buf + got, (unsigned)ask);
        if (r < 0) {
            int code;
            const char *msg = gzerror(f, &code);
            return msd_errf(err, errlen, "%s: corrupt or truncated compressed data (%s)", path,
                            code == Z_ERRNO ? strerror(errno) : msg);
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    return (int64_t)got;
}

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Open path, read the header of hlen bytes, check the magic; then read exactly nbytes of data
 * into a buffer that grows with what actually arrives, and check that nothing follows. */
static int idx_read_raw(const char *path, uint32_t magic, unsigned char *hdr, size_t hlen,
                        int64_t (*data_len)(const unsigned char *hdr, const char *path, char *err, size_t errlen),
                        unsigned char **data, int64_t *nbytes, char *err, size_t errlen) {
    *data = NULL;
    gzFile f = gzopen(path, "rb");
    if (!f) return msd_errf(err, errlen, "%s: cannot open: %s", path, errno ? strerror(errno) : "zlib out of memory");
    gzbuffer(f, 1 << 17);
    int rc = -1;
    unsigned char *buf = NULL;
    int64_t got = gz_read_full(f, hdr, hlen, path, err, errlen);
    if (got < 0) goto done;
    if (got < (int64_t)hlen) {
        msd_errf(err, errlen, "%s: truncated header (%lld of %zu bytes)", path, (long long)got, hlen);
        goto done;
    }
    if (be32(hdr) != magic) {
        msd_errf(err, errlen, "%s: bad magic 0x%08x, expected 0x%08x (%s file)", path, be32(hdr), magic,
                 magic == IDX_MAGIC_IMAGES ? "an IDX image" : "an IDX label");
        goto done;
    }
    int64_t want = data_len(hdr, path, err, errlen);
    if (want < 0) goto done;
    size_t cap = 0, have = 0;
    while ((int64_t)have < want) {
        size_t step = (size_t)want - have < IDX_CHUNK ? (size_t)want - have : IDX_CHUNK;
        if (have + step > cap) {
            cap = cap ? cap * 2 : IDX_CHUNK;
            if (cap > (size_t)want) cap = (size_t)want;
            unsigned char *nb = realloc(buf, cap);
            if (!nb) msd_die("%s: out of memory reading %zu bytes", path, cap);
            buf = nb;
        }
        int64_t r = gz_read_full(f, buf + have, step, path, err, errlen);
        if (r < 0) goto done;
        have += (size_t)r;
        if ((size_t)r < step) {
            msd_errf(err, errlen, "%s: truncated data: %zu of %lld bytes the header promises", path, have,
                     (long long)want);
            goto done;
        }
    }
    unsigned char extra;
    int64_t r = gz_read_full(f, &extra, 1, path, err, errlen);
    if (r < 0) goto done;
    if (r > 0) {
        msd_errf(err, errlen, "%s: trailing bytes after the %lld the header promises", path, (long long)want);
        goto done;
    }
    *data = buf;
    *nbytes = want;
    buf = NULL;
    rc = 0;
done:
    free(buf);
    gzclose(f);
    return rc;
}

static int64_t images_len(const unsigned char *h, const char *path, char *err, size_t errlen) {
    uint32_t n = be32(h + 4), rows = be32(h + 8), cols = be32(h + 12);
    if (n == 0 || n > IDX_MAX_COUNT)
        return msd_errf(err, errlen, "%s: image count %u outside 1..%d", path, n, IDX_MAX_COUNT);
    if (rows == 0 || rows > IDX_MAX_SIDE || cols == 0 || cols > IDX_MAX_SIDE)
        return msd_errf(err, errlen, "%s: image size %ux%u outside 1..%d", path, rows, cols, IDX_MAX_SIDE);
    int64_t total = (int64_t)n * rows * cols;
    if (total > IDX_MAX_BYTES)
        return msd_errf(err, errlen, "%s: %u images of %ux%u exceed the %lld-byte limit", path, n, rows, cols,
                        (long long)IDX_MAX_BYTES);
    return total;
}

static int64_t labels_len(const unsigned char *h, const char *path, char *err, size_t errlen) {
    uint32_t n = be32(h + 4);
    if (n == 0 || n > IDX_MAX_COUNT)
        return msd_errf(err, errlen, "%s: label count %u outside 1..%d", path, n, IDX_MAX_COUNT);
    return n;
}

int idx_read_images(const char *path, float **x, int64_t *n, int *rows, int *cols, char *err, size_t errlen) {
    *x = NULL;
    unsigned char hdr[16], *data;
    int64_t nbytes;
    if (idx_read_raw(path, IDX_MAGIC_IMAGES, hdr, sizeof hdr, images_len, &data, &nbytes, err, errlen)) return -1;
    float *out = malloc(sizeof(float) * (size_t)nbytes);
    if (!out) msd_die("%s: out of memory for %lld floats", path, (long long)nbytes);
    for (int64_t i = 0; i < nbytes; i++) out[i] = (float)data[i] / 127.5f - 1.0f;
    free(data);
    *x = out;
    *n = be32(hdr + 4);
    *rows = (int)be32(hdr + 8);
    *cols = (int)be32(hdr + 12);
    return 0;
}

int idx_read_labels(const char *path, int32_t **labels, int64_t *n, char *err, size_t errlen) {
    *labels = NULL;
    unsigned char hdr[8], *data;
    int64_t nbytes;
    if (idx_read_raw(path, IDX_MAGIC_LABELS, hdr, sizeof hdr, labels_len, &data, &nbytes, err, errlen)) return -1;
    for (int64_t i = 0; i < nbytes; i++)
        if (data[i] >= IDX_NCLASSES) {
            msd_errf(err, errlen, "%s: label %u at index %lld is not below %d", path, data[i], (long long)i,
                     IDX_NCLASSES);
            free(data);
            return -1;
        }
    int32_t *out = malloc(sizeof(int32_t) * (size_t)nbytes);
    if (!out) msd_die("%s: out of memory for %lld labels", path, (long long)nbytes);
    for (int64_t i = 0; i < nbytes; i++) out[i] = data[i];
    free(data);
    *labels = out;
    *n = nbytes;
    return 0;
}

int idx_read_pair(const char *images_path, const char *labels_path, float **x, int32_t **labels, int64_t *n,
                  int *rows, int *cols, char *err, size_t errlen) {
    int64_t ni, nl;
    *x = NULL;
    *labels = NULL;
    if (idx_read_labels(labels_path, labels, &nl, err, errlen)) return -1;
    if (idx_read_images(images_path, x, &ni, rows, cols, err, errlen)) {
        free(*labels);
        *labels = NULL;
        return -1;
    }
    if (ni != nl) {
        free(*x);
        free(*labels);
        *x = NULL;
        *labels = NULL;
        return msd_errf(err, errlen, "%s has %lld images but %s has %lld labels", images_path, (long long)ni,
                        labels_path, (long long)nl);
    }
    *n = ni;
    return 0;
}
