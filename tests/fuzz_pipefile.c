/* fuzz_pipefile.c: libFuzzer target for the pipeline-file parser (tools/msdpipe/pipefile_*.c)
 * with a few --set overrides: refused with "FILE:LINE: message", or a pipeline whose
 * processes all resolve by name, whose connections point at existing processes, and which
 * plans endpoints. Built by `make fuzz`, run by tools/fuzz-run. */
#include <stdint.h>
#include <string.h>

#include "log.h"
#include "pipefile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char err[16384];
    static char *sets[] = {"K=3", "steps=2"};
    Pipeline pl;
    if (pipeline_parse(&pl, "fuzz.pipe", (const char *)data, size, 2, sets, err, sizeof err) != 0) {
        MSD_CHECK(err[0]);
        return 0;
    }
    for (int i = 0; i < pl.nprocs; i++) {
        MSD_CHECK(pipeline_find_proc(&pl, pl.procs[i].name) == i);
        for (int c = 0; c < pl.procs[i].nconnects; c++)
            MSD_CHECK(pl.procs[i].connects[c].target >= 0 && pl.procs[i].connects[c].target < pl.nprocs);
    }
    char perr[1024];
    pipeline_plan(&pl, "/run/fuzz", NULL, NULL, perr, sizeof perr);
    pipeline_free(&pl);
    return 0;
}
