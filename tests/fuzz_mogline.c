/* fuzz_mogline.c: libFuzzer target for the toy's serving request line "CLASS [N]"
 * (mog_parse_request, common/msd/mog.c), which msd-router --mode mog applies to every stdin
 * line of mog_serve. Input: one byte choosing the sample limit (1..4096), then the line's
 * bytes (any bytes: NUL, control bytes, over-long). Checked: a refusal says why; an accepted
 * line holds no NUL (nothing after one would be read) and is at most MOG_REQUEST_MAX_TEXT
 * bytes, names a class of the mixture and a count in 1..limit, and "NAME COUNT" and "ID COUNT"
 * built from the answer parse back to the same class and count. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mog.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char mix[] = "mixture 2\n"
                          "class north\ncomp 1 0 6 iso 0.2\n"
                          "class east\ncomp 1 6 0 iso 0.2\ncomp 2 5 1 iso 0.1\n"
                          "class south-2\ncomp 1 0 -6 iso 0.2\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static Mog m;
    static int ready;
    char err[8192];
    if (!ready) {
        if (mog_parse(&m, mix, sizeof mix - 1, "fuzz.mix", err, sizeof err)) msd_die("fuzz: %s", err);
        ready = 1;
    }
    if (size < 1) return 0;
    int max = 1 + (int)(data[0] * 4095u / 255u);
    int cls = -7;
    long count = -7;
    err[0] = 0;
    if (mog_parse_request(&m, (const char *)data + 1, size - 1, max, &cls, &count, err, sizeof err) != 0) {
        MSD_CHECK(err[0] && cls == -7 && count == -7);
        return 0;
    }
    MSD_CHECK(cls >= 0 && cls < m.nclasses && count >= 1 && count <= max);
    MSD_CHECK(size - 1 <= MOG_REQUEST_MAX_TEXT && !memchr(data + 1, 0, size - 1)); /* the whole line was read */
    char again[128];
    for (int form = 0; form < 2; form++) {
        int n = form ? snprintf(again, sizeof again, "%s %ld", m.class_names[cls], count)
                     : snprintf(again, sizeof again, "%d\t%ld\r", cls, count);
        int c2 = -1;
        long n2 = -1;
        MSD_CHECK(mog_parse_request(&m, again, (size_t)n, max, &c2, &n2, err, sizeof err) == 0);
        MSD_CHECK(c2 == cls && n2 == count);
    }
    return 0;
}
