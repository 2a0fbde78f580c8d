/* params.h: a model's named parameters, carved out of one slab (and its gradients out of a
 * second slab of the same layout), so optimisers and checkpoints treat a model as one flat
 * vector plus a table of PyTorch-style names ("enc.0.conv0.weight").
 *
 * Life cycle: params_init, params_add for every tensor (shapes known, no memory yet),
 * params_alloc once (zeroed slabs on the backend's device), then use params_data/params_grad.
 * Not here: initialisation values (the model does that), optimiser state (optim.h). */
#ifndef MSD_PARAMS_H
#define MSD_PARAMS_H

#include <stdint.h>

#include "backend.h"

#define PARAM_MAX_NAME 128

typedef struct Param {
    char name[PARAM_MAX_NAME];
    int ndim;
    int64_t shape[TENSOR_MAX_DIMS];
    int64_t numel;
    int64_t offset;  /* in floats, into data and grad */
} Param;

typedef struct ParamSet {
    int n, cap;
    Param *p;
    int64_t total;       /* floats in each slab */
    float *data;         /* total floats on the device, or NULL before params_alloc */
    float *grad;         /* same layout */
    const Backend *be;
    BackendCtx *ctx;
} ParamSet;

void params_init(ParamSet *ps);
/* Register a tensor; returns its index. Names must be unique (a duplicate is a bug). */
int params_add(ParamSet *ps, const char *name, int ndim, const int64_t *shape);
/* Allocate both slabs on be (zeroed). */
void params_alloc(ParamSet *ps, const Backend *be, BackendCtx *ctx);
void params_free(ParamSet *ps);
static inline float *params_data(const ParamSet *ps, int i) { return ps->data + ps->p[i].offset; }
static inline float *params_grad(const ParamSet *ps, int i) { return ps->grad + ps->p[i].offset; }
/* Index of a name, or -1. */
int params_find(const ParamSet *ps, const char *name);
/* Number of parameters (sum of numel; ps->total also counts alignment padding). */
int64_t params_count(const ParamSet *ps);
/* grad := 0 */
void params_zero_grad(ParamSet *ps);

#endif
