/* tensor.c: see tensor.h. */
#include "tensor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

int64_t shape_numel(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

Tensor tensor_new(int ndim, const int64_t *shape) {
    MSD_CHECK(ndim >= 0 && ndim <= TENSOR_MAX_DIMS);
    Tensor t;
    memset(&t, 0, sizeof t);
    t.ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        MSD_CHECK(shape[i] >= 0);
        t.shape[i] = shape[i];
    }
    t.numel = shape_numel(ndim, shape);
    t.data = msd_calloc((size_t)(t.numel ? t.numel : 1), sizeof(float));
    t.dev = device_cpu();
    t.owns = 1;
    return t;
}

Tensor tensor_new4(int64_t n, int64_t c, int64_t h, int64_t w) {
    int64_t s[4] = {n, c, h, w};
    return tensor_new(4, s);
}

Tensor tensor_wrap(float *data, int ndim, const int64_t *shape, Device dev) {
    MSD_CHECK(ndim >= 0 && ndim <= TENSOR_MAX_DIMS);
    Tensor t;
    memset(&t, 0, sizeof t);
    t.ndim = ndim;
    for (int i = 0; i < ndim; i++) t.shape[i] = shape[i];
    t.numel = shape_numel(ndim, shape);
    t.data = data;
    t.dev = dev;
    return t;
}

void tensor_free(Tensor *t) {
    if (!t) return;
    if (t->owns) free(t->data);
    memset(t, 0, sizeof *t);
}

const char *shape_str(int ndim, const int64_t *shape, char *buf, size_t len) {
    size_t off = 0;
    off += (size_t)snprintf(buf + off, off < len ? len - off : 0, "(");
    for (int i = 0; i < ndim; i++)
        off += (size_t)snprintf(buf + off, off < len ? len - off : 0, i ? ", %lld" : "%lld", (long long)shape[i]);
    snprintf(buf + off, off < len ? len - off : 0, ndim == 1 ? ",)" : ")");
    return buf;
}
