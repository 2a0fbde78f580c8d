/* table.c (CPU): the CPU backend table, generated from the op list in backend.h: slot NAME is
 * cpu_NAME (the files of kernels/cpu, prototypes in cpu_ops.h), so a missing or mistyped op does not
 * compile. Memory is plain host memory (memory.c). This table is the reference every other
 * backend is tested against, and it is complete, the optional fused ops included.
 *
 * Threading: ops split work over the pool in parallel.c and call OpenBLAS from inside the
 * chunks, so OpenBLAS itself is made single-threaded the first time memory is allocated (two
 * levels of threads on a small machine only fight over cores). */
#include "backend_internal.h"
#include "cpu_ops.h"

#define CPU_SLOT_(RET, NAME, PARAMS, ARGS) .NAME = cpu_##NAME,
const Backend backend_cpu = {
    .name = "cpu",
    .device = DEVICE_CPU,
    MSD_BACKEND_OPS(CPU_SLOT_)
    MSD_BACKEND_OPTIONAL_OPS(CPU_SLOT_)
};
#undef CPU_SLOT_
