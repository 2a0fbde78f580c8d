/* fuzz_idx.c: libFuzzer target for the IDX reader (common/data/idx.c) on untrusted files, raw
 * or gzip: every input is refused with a message or read into counts and pixels that agree
 * with what was asked (values in [-1, 1], labels below IDX_NCLASSES). Built by `make fuzz`,
 * run by tools/fuzz-run. */
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_files.h"
#include "idx.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file(data, size, ".idx");
    char err[512];
    float *x = NULL;
    int64_t n = 0;
    int rows = 0, cols = 0;
    if (idx_read_images(path, &x, &n, &rows, &cols, err, sizeof err) == 0) {
        MSD_CHECK(n >= 0 && rows > 0 && cols > 0);
        for (int64_t i = 0; i < n * rows * cols; i++) MSD_CHECK(x[i] >= -1.0f && x[i] <= 1.0f);
        free(x);
    } else {
        MSD_CHECK(x == NULL && err[0]);
    }
    int32_t *lab = NULL;
    if (idx_read_labels(path, &lab, &n, err, sizeof err) == 0) {
        for (int64_t i = 0; i < n; i++) MSD_CHECK(lab[i] >= 0 && lab[i] < IDX_NCLASSES);
        free(lab);
    } else {
        MSD_CHECK(err[0]);
    }
    return 0;
}
