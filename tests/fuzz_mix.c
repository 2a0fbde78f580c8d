/* fuzz_mix.c: libFuzzer target for the Gaussian-mixture specification parser (mog_parse,
 * common/msd/mog.c): refused with "name:line: message", or a mixture whose classes all resolve
 * by name and id and whose weights are finite and positive. Built by `make fuzz`, run by
 * tools/fuzz-run. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "log.h"
#include "mog.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Mog m;
    char err[1024];
    if (mog_parse(&m, (const char *)data, size, "fuzz.mix", err, sizeof err) != 0) {
        MSD_CHECK(err[0]);
        return 0;
    }
    MSD_CHECK(m.nclasses > 0 && m.ncomp > 0);
    for (int c = 0; c < m.nclasses; c++) {
        char id[16];
        snprintf(id, sizeof id, "%d", c);
        MSD_CHECK(mog_class_lookup(&m, id) == c);
    }
    for (int k = 0; k < m.ncomp; k++) MSD_CHECK(isfinite(m.comp[k].weight) && m.comp[k].weight > 0);
    mog_free(&m);
    return 0;
}
