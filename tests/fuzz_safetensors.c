/* fuzz_safetensors.c: libFuzzer target for the safetensors reader (st_parse on an untrusted
 * buffer). Whatever parses must be internally consistent: every tensor findable by name, its
 * bytes inside the buffer and convertible, and re-serialising then re-parsing it succeeds
 * with the same tensors. Built by `make fuzz`, run by tools/fuzz-run. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    StFile f;
    char err[512];
    if (st_parse(&f, data, size, "fuzz", err, sizeof err) != 0) {
        MSD_CHECK(f.n == 0 && f.t == NULL);
        return 0;
    }
    StWriteTensor *w = calloc((size_t)f.n + 1, sizeof *w);
    for (int i = 0; i < f.n; i++) {
        const StTensor *t = &f.t[i];
        MSD_CHECK(st_find(&f, t->name) == t);
        MSD_CHECK(t->data >= data + 8 && t->data + (t->end - t->begin) <= data + size);
        MSD_CHECK((uint64_t)t->numel * st_dtype_size(t->dtype) == t->end - t->begin);
        float *out = malloc((size_t)t->numel * sizeof(float) + 1); /* bounded by size */
        st_tensor_to_f32(t, out);
        free(out);
        w[i] = (StWriteTensor){t->name, t->dtype, t->ndim, t->shape, t->data};
    }
    unsigned char *img;
    size_t len;
    MSD_CHECK(st_serialize(w, f.n, f.meta, f.nmeta, &img, &len, err, sizeof err) == 0);
    StFile g;
    MSD_CHECK(st_parse(&g, img, len, "fuzz-reparse", err, sizeof err) == 0);
    MSD_CHECK(g.n == f.n && g.nmeta == f.nmeta);
    for (int i = 0; i < f.n; i++) {
        const StTensor *a = &f.t[i], *b = st_find(&g, a->name);
        MSD_CHECK(b && b->dtype == a->dtype && b->ndim == a->ndim && b->numel == a->numel);
        MSD_CHECK(memcmp(a->data, b->data, (size_t)(a->end - a->begin)) == 0);
    }
    st_free(&g);
    free(img);
    free(w);
    st_free(&f);
    return 0;
}
