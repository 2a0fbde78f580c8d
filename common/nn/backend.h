/* backend.h: the backend table. Every op of the engine is a function pointer here; the CPU
 * table (kernels/cpu: table.c and the op files) is the reference and is complete; the CUDA
 * table (kernels/) fills the same slots. A process picks its backend once at start
 * (backend_get) and calls backend_require for the ops it will use, so a missing op fails at
 * start with its name, never silently falls back to another device.
 *
 * Conventions (llm.c style):
 *  - Raw float pointers on the backend's device, contiguous, PyTorch (N, C, H, W) order.
 *  - Argument order: context, outputs, saved activations, inputs, parameters, sizes.
 *  - Forward writes its outputs. Backward ADDS into every gradient it is given (so a shared
 *    input's gradient is the sum of its uses); a NULL gradient pointer means "not wanted".
 *  - Nothing allocates inside an op: scratch comes from ctx (sized once, see backend_ctx_*).
 *  - Sizes are int64_t; shapes in comments as (N, C, H, W).
 */
#ifndef MSD_BACKEND_H
#define MSD_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "tensor.h"

typedef struct BackendCtx BackendCtx; /* per-process state: scratch, thread pool, stream */

/* 2-D convolution geometry. Output size: Ho = (H + 2*pad - K) / stride + 1 (same for W).
 * Weight (O, C, K, K), bias (O) or NULL. */
typedef struct ConvShape {
    int64_t N, C, H, W; /* input */
    int64_t O, K, stride, pad;
} ConvShape;

static inline int64_t conv_out_h(const ConvShape *s) { return (s->H + 2 * s->pad - s->K) / s->stride + 1; }
static inline int64_t conv_out_w(const ConvShape *s) { return (s->W + 2 * s->pad - s->K) / s->stride + 1; }

/* The op list, written once. X(RET, NAME, (PARAMS), (ARGS)) for every op slot, ARGS being the
 * parameter names (for generated forwarding wrappers, as the tests' op counter): the struct Backend
 * below, the slot-name table (backend.c), the prototypes of each backend's functions (cpu_NAME
 * in kernels/cpu/cpu_ops.h, cuda_NAME in kernels/cuda/common.cuh), both backend tables and
 * the tests' op enumeration (backend_op_names) are generated from it, so adding an op here
 * makes every table that lacks it fail to compile (docs/ARCHITECTURE.md, "Adding an op"). */
#define MSD_BACKEND_OPS(X) \
    /* ---- memory (device memory for CUDA; plain malloc for CPU) ---- \
     * On CUDA every op is queued on the context's stream and returns at once; download, and \
     * the host-valued wmse_forward and sumsq, wait for the stream. upload has read the host \
     * buffer when it returns (pageable host memory, staged by the driver). */ \
    X(float *, alloc, (BackendCtx *ctx, int64_t n), (ctx, n)) /* n floats, zeroed; dies on OOM */ \
    X(void, free, (BackendCtx *ctx, float *p), (ctx, p)) \
    X(void, upload, (BackendCtx *ctx, float *dst, const float *host, int64_t n), (ctx, dst, host, n)) \
    X(void, download, (BackendCtx *ctx, float *host, const float *src, int64_t n), (ctx, host, src, n)) \
    X(void, copy, (BackendCtx *ctx, float *dst, const float *src, int64_t n), (ctx, dst, src, n)) \
    X(void, fill, (BackendCtx *ctx, float *dst, float value, int64_t n), (ctx, dst, value, n)) \
    /* ---- dense ---- */ \
    /* out (N, O) = in (N, I) @ w(O, I)^T + b(O); b may be NULL. */ \
    X(void, linear_forward, (BackendCtx *ctx, float *out, const float *in, const float *w, const float *b, \
      int64_t N, int64_t I, int64_t O), (ctx, out, in, w, b, N, I, O)) \
    X(void, linear_backward, (BackendCtx *ctx, float *din, float *dw, float *db, const float *dout, \
      const float *in, const float *w, int64_t N, int64_t I, int64_t O), (ctx, din, dw, db, dout, in, w, N, I, O)) \
    /* out (N, O, Ho, Wo) = conv(in (N, C, H, W), w (O, C, K, K)) + b (O). */ \
    X(void, conv2d_forward, (BackendCtx *ctx, float *out, const float *in, const float *w, const float *b, \
      const ConvShape *s), (ctx, out, in, w, b, s)) \
    X(void, conv2d_backward, (BackendCtx *ctx, float *din, float *dw, float *db, const float *dout, \
      const float *in, const float *w, const ConvShape *s), (ctx, din, dw, db, dout, in, w, s)) \
    /* ---- normalisation and activations ---- */ \
    /* GroupNorm over (C/G, HW) per (n, g); saves mean and rstd (N*G each) for backward. \
     * gamma, beta (C). */ \
    X(void, groupnorm_forward, (BackendCtx *ctx, float *out, float *mean, float *rstd, const float *in, \
      const float *gamma, const float *beta, int64_t N, int64_t C, int64_t HW, int64_t G, float eps), \
      (ctx, out, mean, rstd, in, gamma, beta, N, C, HW, G, eps)) \
    X(void, groupnorm_backward, (BackendCtx *ctx, float *din, float *dgamma, float *dbeta, \
      const float *dout, const float *in, const float *mean, const float *rstd, const float *gamma, \
      int64_t N, int64_t C, int64_t HW, int64_t G), \
      (ctx, din, dgamma, dbeta, dout, in, mean, rstd, gamma, N, C, HW, G)) \
    X(void, silu_forward, (BackendCtx *ctx, float *out, const float *in, int64_t n), (ctx, out, in, n)) \
    X(void, silu_backward, (BackendCtx *ctx, float *din, const float *dout, const float *in, int64_t n), \
      (ctx, din, dout, in, n)) \
    /* softplus(x) = log(1 + exp(x)), computed stably. */ \
    X(void, softplus_forward, (BackendCtx *ctx, float *out, const float *in, int64_t n), (ctx, out, in, n)) \
    X(void, softplus_backward, (BackendCtx *ctx, float *din, const float *dout, const float *in, int64_t n), \
      (ctx, din, dout, in, n)) \
    /* ---- elementwise (n elements) ---- */ \
    X(void, add, (BackendCtx *ctx, float *out, const float *a, const float *b, int64_t n), \
      (ctx, out, a, b, n)) /* out = a + b */ \
    X(void, mul, (BackendCtx *ctx, float *out, const float *a, const float *b, int64_t n), \
      (ctx, out, a, b, n)) /* out = a * b */ \
    /* da += dout * b, db += dout * a */ \
    X(void, mul_backward, (BackendCtx *ctx, float *da, float *db, const float *dout, const float *a, \
      const float *b, int64_t n), (ctx, da, db, dout, a, b, n)) \
    X(void, scale, (BackendCtx *ctx, float *out, const float *a, float s, int64_t n), \
      (ctx, out, a, s, n)) /* out = s * a */ \
    X(void, axpy, (BackendCtx *ctx, float *y, float alpha, const float *x, int64_t n), \
      (ctx, y, alpha, x, n)) /* y += alpha * x */ \
    /* Per-sample affine: out[n, j] = a[n] * x[n, j] + b[n] * y[n, j] for j < D; y may be NULL \
     * (then the b term is dropped). Used for the EDM preconditioning c_skip, c_in, c_out. */ \
    X(void, scale_rows, (BackendCtx *ctx, float *out, const float *x, const float *a, const float *y, \
      const float *b, int64_t N, int64_t D), (ctx, out, x, a, y, b, N, D)) \
    /* ---- conditioning ---- */ \
    /* Scale-and-shift injection of an embedding into a feature map: \
     * out (N, C, HW) = x * (1 + scale[n, c]) + shift[n, c], where ss (N, 2C) holds scale then shift. */ \
    X(void, modulate_forward, (BackendCtx *ctx, float *out, const float *x, const float *ss, int64_t N, \
      int64_t C, int64_t HW), (ctx, out, x, ss, N, C, HW)) \
    X(void, modulate_backward, (BackendCtx *ctx, float *dx, float *dss, const float *dout, const float *x, \
      const float *ss, int64_t N, int64_t C, int64_t HW), (ctx, dx, dss, dout, x, ss, N, C, HW)) \
    /* Per-channel bias add: out (N, C, HW) = x + bias[n, c] (bias is (N, C)). */ \
    X(void, add_channel_forward, (BackendCtx *ctx, float *out, const float *x, const float *bias, \
      int64_t N, int64_t C, int64_t HW), (ctx, out, x, bias, N, C, HW)) \
    X(void, add_channel_backward, (BackendCtx *ctx, float *dx, float *dbias, const float *dout, int64_t N, \
      int64_t C, int64_t HW), (ctx, dx, dbias, dout, N, C, HW)) \
    /* Sinusoidal (positional) embedding as in EDM: out (N, D) = [cos(t f_k), sin(t f_k)], \
     * f_k = (1/max_period)^(k/(D/2)) with max_period 10000, k < D/2. Backward gives dt (N). */ \
    X(void, sinusoidal_forward, (BackendCtx *ctx, float *out, const float *t, int64_t N, int64_t D), \
      (ctx, out, t, N, D)) \
    X(void, sinusoidal_backward, (BackendCtx *ctx, float *dt, const float *dout, const float *t, int64_t N, \
      int64_t D), (ctx, dt, dout, t, N, D)) \
    /* out (N, V) = one-hot of labels (N) (int32, values in [0, V); a label outside is a bug). \
     * labels is a HOST pointer on every backend (out is on the device): the CUDA op checks \
     * the labels on the host and uploads them through a pinned staging buffer of the context; \
     * the caller may reuse the labels buffer as soon as the call returns. */ \
    X(void, onehot, (BackendCtx *ctx, float *out, const int32_t *labels, int64_t N, int64_t V), \
      (ctx, out, labels, N, V)) \
    /* ---- spatial ---- */ \
    /* nearest upsample x2: (N, C, H, W) -> (N, C, 2H, 2W). */ \
    X(void, upsample2x_forward, (BackendCtx *ctx, float *out, const float *in, int64_t N, int64_t C, \
      int64_t H, int64_t W), (ctx, out, in, N, C, H, W)) \
    X(void, upsample2x_backward, (BackendCtx *ctx, float *din, const float *dout, int64_t N, int64_t C, \
      int64_t H, int64_t W), (ctx, din, dout, N, C, H, W)) \
    /* channel concat: out (N, Ca+Cb, HW) = [a (N, Ca, HW), b (N, Cb, HW)]. */ \
    X(void, concat_forward, (BackendCtx *ctx, float *out, const float *a, const float *b, int64_t N, \
      int64_t Ca, int64_t Cb, int64_t HW), (ctx, out, a, b, N, Ca, Cb, HW)) \
    X(void, concat_backward, (BackendCtx *ctx, float *da, float *db, const float *dout, int64_t N, \
      int64_t Ca, int64_t Cb, int64_t HW), (ctx, da, db, dout, N, Ca, Cb, HW)) \
    /* Spatial multi-head self-attention core. qkv (N, 3C, L) holds q, k, v as channel blocks \
     * (head h uses channels [h*C/heads, (h+1)*C/heads) of each block); out (N, C, L); \
     * att (N, heads, L, L) saves the softmax probabilities for backward. \
     * out[:, c, i] = sum_j softmax_j(q_i . k_j / sqrt(C/heads)) v[:, c, j]. */ \
    X(void, attention_forward, (BackendCtx *ctx, float *out, float *att, const float *qkv, int64_t N, \
      int64_t C, int64_t L, int64_t heads), (ctx, out, att, qkv, N, C, L, heads)) \
    X(void, attention_backward, (BackendCtx *ctx, float *dqkv, const float *dout, const float *qkv, \
      const float *att, int64_t N, int64_t C, int64_t L, int64_t heads), \
      (ctx, dqkv, dout, qkv, att, N, C, L, heads)) \
    /* ---- token sequences (the sentence encoder, common/text/minilm.c); forward only ---- \
     * LayerNorm over the last dimension D of (T, D) is groupnorm_forward with N = T, C = D, \
     * HW = 1, G = 1. Masks are (N, L) floats on the device: token l of sample n is real iff \
     * mask[n, l] > 0. */ \
    /* GELU, erf form (BERT, torch's default): out = 0.5 x (1 + erf(x / sqrt 2)). Forward only. */ \
    X(void, gelu_forward, (BackendCtx *ctx, float *out, const float *in, int64_t n), (ctx, out, in, n)) \
    /* Row gather: out (N, D) = table (V, D) row ids[n]. ids is a HOST pointer (as onehot's \
     * labels), values in [0, V) (outside is a bug: callers check untrusted ids). Forward only. */ \
    X(void, embedding_forward, (BackendCtx *ctx, float *out, const int32_t *ids, const float *table, \
      int64_t N, int64_t V, int64_t D), (ctx, out, ids, table, N, V, D)) \
    /* Multi-head self-attention over tokens with a key padding mask. qkv (N, L, 3C): each \
     * token's row holds q, k, v as blocks of C, head h on columns [h*d, (h+1)*d) of each, \
     * d = C/heads; out (N, L, C): out[n, i, h*d + c] = sum_j p_ij v[n, j, h*d + c] with \
     * p_ij = softmax over the real keys j (mask[n, j] > 0; mask NULL = all real) of \
     * q_i . k_j / sqrt(d), and p_ij = 0 for padded keys (a query with no real key gets 0). \
     * Padded queries are computed like the others. Forward only. */ \
    X(void, token_attention_forward, (BackendCtx *ctx, float *out, const float *qkv, const float *mask, \
      int64_t N, int64_t L, int64_t C, int64_t heads), (ctx, out, qkv, mask, N, L, C, heads)) \
    /* Masked mean over tokens (sentence-transformers' mean pooling): out (N, D) = \
     * sum_l mask[n, l] in[n, l, :] / max(sum_l mask[n, l], 1e-9), in (N, L, D). Forward only. */ \
    X(void, masked_mean_forward, (BackendCtx *ctx, float *out, const float *in, const float *mask, \
      int64_t N, int64_t L, int64_t D), (ctx, out, in, mask, N, L, D)) \
    /* ---- losses (results reduced to a scalar on the host) ---- */ \
    /* Weighted MSE of EDM and DMD2: loss = (1/(N*D)) * sum_n w[n] * sum_j (pred - target)^2; \
     * backward: dpred += dloss * 2 w[n] (pred - target) / (N*D). w may be NULL (all ones). */ \
    X(float, wmse_forward, (BackendCtx *ctx, const float *pred, const float *target, const float *w, \
      int64_t N, int64_t D), (ctx, pred, target, w, N, D)) \
    X(void, wmse_backward, (BackendCtx *ctx, float *dpred, float dloss, const float *pred, \
      const float *target, const float *w, int64_t N, int64_t D), (ctx, dpred, dloss, pred, target, w, N, D)) \
    /* sum of squares of x (n), in double internally; for gradient-norm clipping. */ \
    X(double, sumsq, (BackendCtx *ctx, const float *x, int64_t n), (ctx, x, n)) \
    /* ---- optimiser ---- */ \
    /* AdamW with PyTorch semantics (decoupled weight decay, bias correction), step t >= 1: \
     * p -= lr*wd*p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; \
     * p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps). g is multiplied by gscale first. */ \
    X(void, adamw_update, (BackendCtx *ctx, float *p, const float *g, float *m, float *v, int64_t n, \
      float lr, float beta1, float beta2, float eps, float wd, int64_t t, float gscale), \
      (ctx, p, g, m, v, n, lr, beta1, beta2, eps, wd, t, gscale)) \
    /* ema = decay * ema + (1 - decay) * p */ \
    X(void, ema_update, (BackendCtx *ctx, float *ema, const float *p, int64_t n, float decay), \
      (ctx, ema, p, n, decay)) \
    /* ---- random numbers: counter-based (Philox-4x32-10), see philox.h ---- */ \
    /* out[i] = i-th standard normal of stream (seed, stream) starting at counter offset. \
     * Identical numbers on every backend. */ \
    X(void, rng_normal, (BackendCtx *ctx, float *out, int64_t n, uint64_t seed, uint64_t stream, \
      uint64_t offset), (ctx, out, n, seed, stream, offset)) \
    X(void, rng_uniform, (BackendCtx *ctx, float *out, int64_t n, uint64_t seed, uint64_t stream, \
      uint64_t offset), (ctx, out, n, seed, stream, offset))

/* Optional fused ops: NULL where a backend has none; callers then compose them from the
 * required ops (backend_missing and backend_require do not ask for them). */
#define MSD_BACKEND_OPTIONAL_OPS(X) \
    /* out = silu(modulate(groupnorm(in))) with the groupnorm_forward, modulate_forward (only \
     * when ss is not NULL) and silu_forward above; saves mean and rstd like groupnorm_forward. */ \
    X(void, norm_act_forward, (BackendCtx *ctx, float *out, float *mean, float *rstd, const float *in, \
      const float *gamma, const float *beta, const float *ss, int64_t N, int64_t C, int64_t HW, int64_t G, \
      float eps), (ctx, out, mean, rstd, in, gamma, beta, ss, N, C, HW, G, eps)) \
    /* Backward of norm_act_forward given its saved mean and rstd: din, dgamma, dbeta and (ss \
     * given) dss, each added into as by the separate backward ops. */ \
    X(void, norm_act_backward, (BackendCtx *ctx, float *din, float *dgamma, float *dbeta, float *dss, \
      const float *dout, const float *in, const float *mean, const float *rstd, const float *gamma, \
      const float *beta, const float *ss, int64_t N, int64_t C, int64_t HW, int64_t G), \
      (ctx, din, dgamma, dbeta, dss, dout, in, mean, rstd, gamma, beta, ss, N, C, HW, G))

#define MSD_BACKEND_SLOT_(RET, NAME, PARAMS, ARGS) RET(*NAME) PARAMS;
typedef struct Backend {
    const char *name; /* "cpu", "cuda" */
    DeviceType device;
    MSD_BACKEND_OPS(MSD_BACKEND_SLOT_)
    MSD_BACKEND_OPTIONAL_OPS(MSD_BACKEND_SLOT_)
} Backend;
#undef MSD_BACKEND_SLOT_

/* Every op slot's name, required ones first, in list order; NULL-terminated. The first
 * BACKEND_NUM_REQUIRED are the required ones. */
extern const char *const backend_op_names[];
#define MSD_BACKEND_COUNT_(RET, NAME, PARAMS, ARGS) +1
enum {
    BACKEND_NUM_REQUIRED = 0 MSD_BACKEND_OPS(MSD_BACKEND_COUNT_),
    BACKEND_NUM_OPS = BACKEND_NUM_REQUIRED MSD_BACKEND_OPTIONAL_OPS(MSD_BACKEND_COUNT_)
};
#undef MSD_BACKEND_COUNT_

/* The backend for a device: CPU always; CUDA only in a build with CUDA and a GPU present.
 * On failure returns NULL and writes why into err. */
const Backend *backend_get(Device dev, char *err, size_t errlen);
/* Fails (returns -1, message naming the first missing op) if any named op slot is NULL.
 * names: NULL-terminated list of field names as written in struct Backend. */
int backend_require(const Backend *b, const char *const *names, char *err, size_t errlen);
/* Check every slot; returns the number of missing ops and lists them in err. */
int backend_missing(const Backend *b, char *err, size_t errlen);

/* Per-process context: scratch memory that grows to the largest request and then stays
 * (so a training step allocates nothing after its first run), the thread count, and for
 * CUDA the stream and library handles. */
BackendCtx *backend_ctx_new(const Backend *b, int threads);
void backend_ctx_destroy(BackendCtx **ctx);
/* Scratch of at least n floats, valid until the next call to backend_ctx_scratch. */
float *backend_ctx_scratch(BackendCtx *ctx, int64_t n);
int backend_ctx_threads(const BackendCtx *ctx);

extern const Backend backend_cpu;
/* What the CPU backend chose on this machine, in one line (for the benchmarks): the vector
 * width, the L2 size and the convolution choices derived from it, the thread pool's spin
 * policy and how many jobs ran under each setting so far (kernels/cpu/machine.c, parallel.h). */
void backend_cpu_describe(char *buf, int cap);

#endif
