/* params.c: see params.h. */
#include "params.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

void params_init(ParamSet *ps) { memset(ps, 0, sizeof *ps); }

int params_add(ParamSet *ps, const char *name, int ndim, const int64_t *shape) {
    MSD_CHECK(ps->data == NULL); /* no registration after allocation */
    MSD_CHECK(strlen(name) < PARAM_MAX_NAME);
    MSD_CHECK(ndim >= 0 && ndim <= TENSOR_MAX_DIMS);
    MSD_CHECK(params_find(ps, name) < 0);
    if (ps->n == ps->cap) {
        ps->cap = ps->cap ? 2 * ps->cap : 64;
        ps->p = realloc(ps->p, (size_t)ps->cap * sizeof *ps->p);
        if (!ps->p) msd_die("out of memory growing a parameter table");
    }
    Param *p = &ps->p[ps->n];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    for (int i = 0; i < ndim; i++) p->shape[i] = shape[i];
    p->numel = shape_numel(ndim, shape);
    p->offset = ps->total;
    /* keep every tensor 16-float aligned (64 bytes) for vector loads */
    ps->total += (p->numel + 15) & ~(int64_t)15;
    return ps->n++;
}

void params_alloc(ParamSet *ps, const Backend *be, BackendCtx *ctx) {
    MSD_CHECK(ps->data == NULL);
    ps->be = be;
    ps->ctx = ctx;
    ps->data = be->alloc(ctx, ps->total);
    ps->grad = be->alloc(ctx, ps->total);
}

void params_free(ParamSet *ps) {
    if (ps->data) ps->be->free(ps->ctx, ps->data);
    if (ps->grad) ps->be->free(ps->ctx, ps->grad);
    free(ps->p);
    memset(ps, 0, sizeof *ps);
}

int params_find(const ParamSet *ps, const char *name) {
    for (int i = 0; i < ps->n; i++)
        if (strcmp(ps->p[i].name, name) == 0) return i;
    return -1;
}

int64_t params_count(const ParamSet *ps) {
    int64_t n = 0;
    for (int i = 0; i < ps->n; i++) n += ps->p[i].numel;
    return n;
}

void params_zero_grad(ParamSet *ps) { ps->be->fill(ps->ctx, ps->grad, 0.0f, ps->total); }
