/* op_count.h: a backend table that forwards every op to a real one and counts the calls,
 * generated from the op list in backend.h (MSD_BACKEND_OPS, MSD_BACKEND_OPTIONAL_OPS). A test
 * program runs its tests through opc_wrap(real) and ends with opc_check: an op of the list
 * that no test called is a failure, so adding an op to the list without a test fails the op
 * tests. Ops tested by another program are named in `elsewhere` (each name must be an op of
 * the list, so that list cannot go stale either). For one test program per backend. */
#ifndef MSD_OP_COUNT_H
#define MSD_OP_COUNT_H

#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "check.h"

enum {
#define OPC_ENUM_(RET, NAME, PARAMS, ARGS) OPC_##NAME,
    MSD_BACKEND_OPS(OPC_ENUM_) MSD_BACKEND_OPTIONAL_OPS(OPC_ENUM_)
#undef OPC_ENUM_
    OPC_N
};
_Static_assert((int)OPC_N == (int)BACKEND_NUM_OPS, "the op counter covers the op list");

static const Backend *opc_real;
static long opc_calls[OPC_N];

#define OPC_FWD_(RET, NAME, PARAMS, ARGS) \
    static RET opc_##NAME PARAMS {        \
        opc_calls[OPC_##NAME]++;          \
        return opc_real->NAME ARGS;       \
    }
MSD_BACKEND_OPS(OPC_FWD_)
MSD_BACKEND_OPTIONAL_OPS(OPC_FWD_)
#undef OPC_FWD_

/* A copy of real whose every present slot counts, then calls real's. */
static inline Backend opc_wrap(const Backend *real) {
    Backend b = *real;
    opc_real = real;
#define OPC_SET_(RET, NAME, PARAMS, ARGS) if (real->NAME) b.NAME = opc_##NAME;
    MSD_BACKEND_OPS(OPC_SET_)
    MSD_BACKEND_OPTIONAL_OPS(OPC_SET_)
#undef OPC_SET_
    return b;
}

/* Every op of the list that the real table has must have been called, unless it is named in
 * elsewhere (NULL-terminated pairs {op, where}); prints the counts. */
static inline void opc_check(const char *const (*elsewhere)[2]) {
    int idle = 0, here = 0, away = 0;
    for (int k = 0; elsewhere && elsewhere[k][0]; k++) {
        int found = 0;
        for (int i = 0; i < OPC_N; i++) found |= strcmp(backend_op_names[i], elsewhere[k][0]) == 0;
        CHECK(found, "'%s' is listed as tested elsewhere but is not an op of backend.h", elsewhere[k][0]);
    }
    for (int i = 0; i < OPC_N; i++) {
        const char *name = backend_op_names[i];
        void *slot;
        memcpy(&slot, (const char *)opc_real + offsetof(Backend, alloc) + (size_t)i * sizeof slot, sizeof slot);
        if (!slot) continue; /* an optional op this backend lacks */
        const char *where = NULL;
        for (int k = 0; elsewhere && elsewhere[k][0]; k++)
            if (strcmp(elsewhere[k][0], name) == 0) where = elsewhere[k][1];
        here += opc_calls[i] > 0;
        away += opc_calls[i] == 0 && where;
        if (opc_calls[i] == 0 && !where) {
            printf("  op %s: never called by this program's tests\n", name);
            idle++;
        }
    }
    printf("  op coverage: %d of %d ops called here, %d tested elsewhere, %d by nothing\n", here, OPC_N, away, idle);
    CHECK(idle == 0, "%d op(s) of backend.h have no test (add one, or name the program that tests it)", idle);
}

#endif
