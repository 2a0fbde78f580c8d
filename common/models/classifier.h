/* classifier.h: the small Fashion-MNIST classifier whose penultimate features give the FID and
 * whose predictions give the conditional accuracy (docs/EVAL.md). Built on the backend ops,
 * trained with the project's AdamW (tools/msd-eval), stored as a bare safetensors export.
 *
 *   x (N, 1, 28, 28)
 *   conv0 3x3 1->32 stride 1 -> norm0 GroupNorm(8) -> SiLU    (N, 32, 28, 28)
 *   conv1 3x3 32->32 stride 2 -> norm1 GroupNorm(8) -> SiLU   (N, 32, 14, 14)
 *   conv2 3x3 32->64 stride 2 -> norm2 GroupNorm(8) -> SiLU   (N, 64, 7, 7)
 *   conv3 3x3 64->64 stride 2 -> norm3 GroupNorm(8) -> SiLU   (N, 64, 4, 4)
 *   fc0 1024->128 -> SiLU                                       (N, 128)  = the features
 *   fc1 128->10                                                 (N, 10)   logits
 * (all convolutions padding 1). Parameter names: conv{0..3}.{weight,bias},
 * norm{0..3}.{weight,bias}, fc{0,1}.{weight,bias}.
 *
 * Not here: FID arithmetic (fid.h), the training loop (tools/msd-eval). */
#ifndef MSD_CLASSIFIER_H
#define MSD_CLASSIFIER_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "params.h"

#define CLS_IN_H 28
#define CLS_IN_W 28
#define CLS_CLASSES 10
#define CLS_FEATURES 128

typedef struct Classifier Classifier;

/* Registers and allocates the parameters (zeroed) on be. */
Classifier *classifier_new(const Backend *be, BackendCtx *ctx);
void classifier_destroy(Classifier **c);  /* NULL-safe; sets *c to NULL */
ParamSet *classifier_params(Classifier *c);
/* Deterministic initialisation (PyTorch-default uniform bounds, GroupNorm 1/0) from seed. */
void classifier_init(Classifier *c, uint64_t seed);
/* Load weights from a bare export (no extra tensors allowed). 0, or -1 with a message. */
int classifier_load(Classifier *c, const char *path, char *err, size_t errlen);
/* Activations for up to N samples (frees previous ones). Returns the bytes allocated. */
int64_t classifier_alloc_batch(Classifier *c, int64_t N);

/* logits (N, 10) = f(x (N, 1, 28, 28)); device pointers; N <= the allocated batch. */
void classifier_forward(Classifier *c, float *logits, const float *x, int64_t N);
/* Backward of the last forward: ADDS into the parameter gradients (no input gradient). */
void classifier_backward(Classifier *c, const float *dlogits, int64_t N);

/* Mean cross-entropy of logits (N, K) host against labels (N) in [0, K) (a label outside is a
 * bug); dlogits (may be NULL) := d(loss)/d(logits) = (softmax - onehot) / N. Returns the loss;
 * *correct (may be NULL) gets the count of argmax == label. */
double classifier_xent(const float *logits, const int32_t *labels, int64_t N, int K, float *dlogits,
                       int64_t *correct);

/* Evaluate n host images x (n, 1, 28, 28) in batches of the allocated size: features (n, 128)
 * host (may be NULL), predicted classes pred (n) (may be NULL). */
void classifier_run(Classifier *c, const float *x, int64_t n, float *features, int32_t *pred);

#endif
