/* tensor.h: the one tensor type of the engine: float32, contiguous, PyTorch (N, C, H, W)
 * order, tagged with the device its data lives on. A Tensor does not own a reference count;
 * who frees it is stated by whoever hands it out (models carve parameters, gradients and
 * activations out of slabs allocated once, see slab.h usage in the model files).
 *
 * Not here: dtypes other than float32 (the wire protocol carries others, see wire.h),
 * strides/views, broadcasting. Ops work on raw pointers plus sizes (ops.h). */
#ifndef MSD_TENSOR_H
#define MSD_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#define TENSOR_MAX_DIMS 8

typedef enum { DEVICE_CPU = 0, DEVICE_CUDA = 1 } DeviceType;

typedef struct Device {
    DeviceType type;
    int index; /* GPU ordinal for DEVICE_CUDA, 0 for the CPU */
} Device;

typedef struct Tensor {
    float *data;                     /* numel floats on dev; NULL for an empty tensor */
    int ndim;
    int64_t shape[TENSOR_MAX_DIMS];
    int64_t numel;
    Device dev;
    int owns;                        /* 1: tensor_free releases data */
} Tensor;

/* A fresh CPU tensor of the given shape, zero-filled (dies on out-of-memory). */
Tensor tensor_new(int ndim, const int64_t *shape);
Tensor tensor_new4(int64_t n, int64_t c, int64_t h, int64_t w);
/* A tensor over existing memory (not owned). */
Tensor tensor_wrap(float *data, int ndim, const int64_t *shape, Device dev);
void tensor_free(Tensor *t);            /* frees owned data, zeroes *t; NULL-safe */
int64_t shape_numel(int ndim, const int64_t *shape);
/* "(2, 3, 28, 28)" into buf; returns buf. */
const char *shape_str(int ndim, const int64_t *shape, char *buf, size_t len);

static inline Device device_cpu(void) { Device d = {DEVICE_CPU, 0}; return d; }

#endif
