/* tensor.h: the engine's tensor conventions and the little that goes with them. A tensor is a
 * raw float32 pointer on a device plus its sizes, contiguous, in PyTorch (N, C, H, W) order;
 * there is no tensor object: models carve parameters, gradients and activations out of slabs
 * allocated once (params.h), and ops take pointers and sizes (backend.h). Here: the device
 * tag, the rank limit and shape helpers.
 *
 * Not here: dtypes other than float32 (the wire protocol carries others, see wire.h),
 * strides/views, broadcasting. */
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

int64_t shape_numel(int ndim, const int64_t *shape);
/* "(2, 3, 28, 28)" into buf; returns buf. */
const char *shape_str(int ndim, const int64_t *shape, char *buf, size_t len);

static inline Device device_cpu(void) { Device d = {DEVICE_CPU, 0}; return d; }

#endif
