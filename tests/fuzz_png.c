/* fuzz_png.c: libFuzzer target for the PNG reader (png_read, common/data/image.c) on
 * untrusted files: refused with a message, or pixels of the size and channel count it
 * reports, never larger than the side limit asked for. Built by `make fuzz`, run by
 * tools/fuzz-run. */
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_files.h"
#include "image.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file(data, size, ".png");
    char err[512];
    for (int want = 0; want <= 3; want += 3) {
        uint8_t *px = NULL;
        int w = 0, h = 0, ch = 0;
        if (png_read(path, &px, &w, &h, want, &ch, 256, err, sizeof err) == 0) {
            MSD_CHECK(w >= 1 && w <= 256 && h >= 1 && h <= 256 && (ch == 1 || ch == 3));
            MSD_CHECK(want == 0 || ch == want);
            volatile uint8_t sum = 0;
            for (int64_t i = 0; i < (int64_t)w * h * ch; i++) sum += px[i]; /* every byte readable */
            free(px);
        } else {
            MSD_CHECK(err[0]);
        }
    }
    return 0;
}
