/* tensor.c: see tensor.h. */
#include "tensor.h"

#include <stdio.h>

int64_t shape_numel(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

const char *shape_str(int ndim, const int64_t *shape, char *buf, size_t len) {
    size_t off = 0;
    off += (size_t)snprintf(buf + off, off < len ? len - off : 0, "(");
    for (int i = 0; i < ndim; i++)
        off += (size_t)snprintf(buf + off, off < len ? len - off : 0, i ? ", %lld" : "%lld", (long long)shape[i]);
    snprintf(buf + off, off < len ? len - off : 0, ndim == 1 ? ",)" : ")");
    return buf;
}
