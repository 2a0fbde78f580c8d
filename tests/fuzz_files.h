/* fuzz_files.h: for fuzz targets of readers that take a path (IDX, PNG): the input bytes
 * written to one private temporary file per process, rewritten for every input. */
#ifndef MSD_FUZZ_FILES_H
#define MSD_FUZZ_FILES_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "log.h"

/* The path of a file holding exactly data[0, size). */
static const char *fuzz_file(const uint8_t *data, size_t size, const char *suffix) {
    static char path[256];
    if (!path[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(path, sizeof path, "%s/msd-fuzz-%d%s", tmp && tmp[0] ? tmp : "/tmp", (int)getpid(), suffix);
    }
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) msd_die("fuzz: cannot write %s", path);
    return path;
}

#endif
