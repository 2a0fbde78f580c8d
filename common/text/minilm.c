/* minilm.c: all-MiniLM-L6-v2 on the backend table (minilm.h). The forward pass of a batch of
 * B sequences holding T real tokens in all (row-major (T, 384) activations, the sequences' tokens
 * one after another, no padding):
 *   x = word[id] + position[l] + type[0];  h = LN(x)
 *   per layer: qkv = h Wqkv^T + bqkv (query, key and value weights stacked at load, (1152, 384));
 *              a = token_attention(qkv, mask);  h = LN(h + a Wo^T + bo);
 *              h = LN(h + gelu(h Wi^T + bi) Wf^T + bf)
 *   e = masked mean of h over the real tokens; out = e / max(|e|, 1e-12) (on the host).
 * Only the attention and the mean need the sequences side by side: there the rows are gathered
 * into B * Lmax padded rows (pads masked) and the attention's output gathered back (the backend's
 * row gather, embedding_forward). Every other op, nine tenths of the work, runs on the real tokens
 * alone: a batch of prompts of mixed lengths costs what its tokens cost, not B times the longest.
 * LayerNorm is groupnorm_forward with N = T, C = 384, HW = 1, G = 1 (backend.h). */
#include "minilm.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "safetensors.h"

enum { D = MINILM_DIM, HEADS = 12, FF = 1536, LAYERS = 6, TYPES = 2 };
#define LN_EPS 1e-12f

typedef struct {
    float *wqkv, *bqkv, *wo, *bo, *ln1_g, *ln1_b, *wi, *bi, *wf, *bf, *ln2_g, *ln2_b;
} Layer;

struct MiniLM {
    const Backend *be;
    BackendCtx *ctx;
    float *word, *pos, *type, *ln0_g, *ln0_b;
    Layer layer[LAYERS];
    /* work buffers, grown to cap_t tokens / cap_b sequences */
    int64_t cap_t, cap_b;
    float *x, *tmp, *qkv, *att, *ff, *mean, *rstd, *mask, *pool;
    float *qkv_pad, *att_pad;          /* (B * Lmax) rows: the attention's layout */
    int32_t *h_ids, *h_pos, *h_type;
    int32_t *h_to_pad, *h_to_packed;   /* packed row of each padded row (pads: 0); padded row of each packed one */
    float *h_mask;
};

const char *minilm_default_dir(char *buf, size_t len) {
    const char *e = getenv("MSD_MINILM_DIR"), *cache = getenv("MSD_CACHE"), *home = getenv("HOME");
    int n;
    if (e && *e) n = snprintf(buf, len, "%s", e);
    else if (cache && *cache) n = snprintf(buf, len, "%s/all-minilm-l6-v2", cache);
    else if (home && *home) n = snprintf(buf, len, "%s/.cache/msdpipe/all-minilm-l6-v2", home);
    else return NULL;
    return n >= 0 && (size_t)n < len ? buf : NULL;
}

/* Upload tensor name (rows x cols; cols 0 for a vector) into dst + off floats. */
static int load_t(MiniLM *m, const StFile *f, const char *path, const char *name, int64_t rows, int64_t cols,
                  float *dst, char *err, size_t errlen) {
    const StTensor *t = st_find(f, name);
    if (!t) {
        snprintf(err, errlen, "%s: missing tensor %s (not all-MiniLM-L6-v2's weights?)", path, name);
        return -1;
    }
    int ok = t->dtype == ST_F32 && (cols ? t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols
                                         : t->ndim == 1 && t->shape[0] == rows);
    if (!ok) {
        char got[96] = "";
        for (int i = 0; i < t->ndim; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        if (cols)
            snprintf(err, errlen, "%s: tensor %s is (%s) of dtype %d, expected (%lld, %lld) F32", path, name, got,
                     (int)t->dtype, (long long)rows, (long long)cols);
        else
            snprintf(err, errlen, "%s: tensor %s is (%s) of dtype %d, expected (%lld) F32", path, name, got,
                     (int)t->dtype, (long long)rows);
        return -1;
    }
    float *h = msd_malloc((size_t)t->numel * sizeof(float));
    st_tensor_to_f32(t, h);
    m->be->upload(m->ctx, dst, h, t->numel);
    free(h);
    return 0;
}

static float *dalloc(MiniLM *m, int64_t n) { return m->be->alloc(m->ctx, n); }

MiniLM *minilm_load(const char *path, const Backend *be, BackendCtx *ctx, char *err, size_t errlen) {
    char file[4096];
    size_t pl = strlen(path);
    int n = pl > 12 && strcmp(path + pl - 12, ".safetensors") == 0
                ? snprintf(file, sizeof file, "%s", path)
                : snprintf(file, sizeof file, "%s/model.safetensors", path);
    if (n < 0 || (size_t)n >= sizeof file) {
        snprintf(err, errlen, "model path too long: %.100s...", path);
        return NULL;
    }
    StFile f;
    char e2[512];
    if (st_read(&f, file, e2, sizeof e2) != 0) {
        snprintf(err, errlen, "%s", e2);
        return NULL;
    }
    MiniLM *m = calloc(1, sizeof *m);
    if (!m) msd_die("minilm: out of memory");
    m->be = be, m->ctx = ctx;
    m->word = dalloc(m, (int64_t)MINILM_VOCAB * D), m->pos = dalloc(m, (int64_t)MINILM_MAX_LEN * D);
    m->type = dalloc(m, TYPES * D), m->ln0_g = dalloc(m, D), m->ln0_b = dalloc(m, D);
    int rc = load_t(m, &f, file, "embeddings.word_embeddings.weight", MINILM_VOCAB, D, m->word, err, errlen);
    if (!rc) rc = load_t(m, &f, file, "embeddings.position_embeddings.weight", MINILM_MAX_LEN, D, m->pos, err, errlen);
    if (!rc) rc = load_t(m, &f, file, "embeddings.token_type_embeddings.weight", TYPES, D, m->type, err, errlen);
    if (!rc) rc = load_t(m, &f, file, "embeddings.LayerNorm.weight", D, 0, m->ln0_g, err, errlen);
    if (!rc) rc = load_t(m, &f, file, "embeddings.LayerNorm.bias", D, 0, m->ln0_b, err, errlen);
    for (int l = 0; l < LAYERS && !rc; l++) {
        Layer *y = &m->layer[l];
        y->wqkv = dalloc(m, 3 * D * D), y->bqkv = dalloc(m, 3 * D), y->wo = dalloc(m, D * D), y->bo = dalloc(m, D);
        y->ln1_g = dalloc(m, D), y->ln1_b = dalloc(m, D), y->wi = dalloc(m, FF * D), y->bi = dalloc(m, FF);
        y->wf = dalloc(m, D * FF), y->bf = dalloc(m, D), y->ln2_g = dalloc(m, D), y->ln2_b = dalloc(m, D);
        static const char *const qkv[3] = {"query", "key", "value"};
        char nm[128];
#define LOAD(suffix, rows, cols, dst)                                                       \
    do {                                                                                    \
        snprintf(nm, sizeof nm, "encoder.layer.%d.%s", l, suffix);                           \
        if (!rc) rc = load_t(m, &f, file, nm, rows, cols, dst, err, errlen);                 \
    } while (0)
        for (int k = 0; k < 3; k++) {
            char s[64];
            snprintf(s, sizeof s, "attention.self.%s.weight", qkv[k]);
            LOAD(s, D, D, y->wqkv + k * D * D);
            snprintf(s, sizeof s, "attention.self.%s.bias", qkv[k]);
            LOAD(s, D, 0, y->bqkv + k * D);
        }
        LOAD("attention.output.dense.weight", D, D, y->wo);
        LOAD("attention.output.dense.bias", D, 0, y->bo);
        LOAD("attention.output.LayerNorm.weight", D, 0, y->ln1_g);
        LOAD("attention.output.LayerNorm.bias", D, 0, y->ln1_b);
        LOAD("intermediate.dense.weight", FF, D, y->wi);
        LOAD("intermediate.dense.bias", FF, 0, y->bi);
        LOAD("output.dense.weight", D, FF, y->wf);
        LOAD("output.dense.bias", D, 0, y->bf);
        LOAD("output.LayerNorm.weight", D, 0, y->ln2_g);
        LOAD("output.LayerNorm.bias", D, 0, y->ln2_b);
#undef LOAD
    }
    if (!rc) {
        char nm[64];
        snprintf(nm, sizeof nm, "encoder.layer.%d.attention.self.query.weight", LAYERS);
        if (st_find(&f, nm)) {
            snprintf(err, errlen, "%s: has %s: more than the %d layers of all-MiniLM-L6-v2", file, nm, LAYERS);
            rc = -1;
        }
    }
    st_free(&f);
    if (rc) {
        minilm_free(&m);
        return NULL;
    }
    return m;
}

static void dfree(MiniLM *m, float **p) {
    if (*p) m->be->free(m->ctx, *p);
    *p = NULL;
}

static void free_work(MiniLM *m) {
    dfree(m, &m->x), dfree(m, &m->tmp), dfree(m, &m->qkv), dfree(m, &m->att), dfree(m, &m->ff);
    dfree(m, &m->mean), dfree(m, &m->rstd), dfree(m, &m->mask), dfree(m, &m->pool);
    dfree(m, &m->qkv_pad), dfree(m, &m->att_pad);
    free(m->h_ids), free(m->h_pos), free(m->h_type), free(m->h_mask), free(m->h_to_pad), free(m->h_to_packed);
    m->h_ids = m->h_pos = m->h_type = m->h_to_pad = m->h_to_packed = NULL, m->h_mask = NULL;
    m->cap_t = m->cap_b = 0;
}

void minilm_free(MiniLM **pm) {
    MiniLM *m = pm ? *pm : NULL;
    if (!m) return;
    free_work(m);
    dfree(m, &m->word), dfree(m, &m->pos), dfree(m, &m->type), dfree(m, &m->ln0_g), dfree(m, &m->ln0_b);
    for (int l = 0; l < LAYERS; l++) {
        Layer *y = &m->layer[l];
        float **ps[] = {&y->wqkv, &y->bqkv, &y->wo, &y->bo, &y->ln1_g, &y->ln1_b,
                        &y->wi, &y->bi, &y->wf, &y->bf, &y->ln2_g, &y->ln2_b};
        for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) dfree(m, ps[i]);
    }
    free(m);
    *pm = NULL;
}

static void grow(MiniLM *m, int64_t T, int64_t B) {
    if (T <= m->cap_t && B <= m->cap_b) return;
    if (T < m->cap_t) T = m->cap_t;
    if (B < m->cap_b) B = m->cap_b;
    free_work(m);
    m->x = dalloc(m, T * D), m->tmp = dalloc(m, T * D), m->qkv = dalloc(m, T * 3 * D), m->att = dalloc(m, T * D);
    m->ff = dalloc(m, T * FF), m->mean = dalloc(m, T), m->rstd = dalloc(m, T), m->mask = dalloc(m, T);
    m->pool = dalloc(m, B * D), m->qkv_pad = dalloc(m, T * 3 * D), m->att_pad = dalloc(m, T * D);
    m->h_to_pad = msd_malloc((size_t)T * sizeof(int32_t)), m->h_to_packed = msd_malloc((size_t)T * sizeof(int32_t));
    m->h_ids = msd_malloc((size_t)T * sizeof(int32_t)), m->h_pos = msd_malloc((size_t)T * sizeof(int32_t));
    m->h_type = msd_malloc((size_t)T * sizeof(int32_t)), m->h_mask = msd_malloc((size_t)T * sizeof(float));
    m->cap_t = T, m->cap_b = B;
}

int minilm_embed(MiniLM *m, const int32_t *const *ids, const int *lens, int B, float *out, char *err,
                 size_t errlen) {
    MSD_CHECK(m && ids && lens && out && B >= 0);
    int64_t L = 0;
    for (int b = 0; b < B; b++) {
        if (lens[b] < 1 || lens[b] > MINILM_MAX_LEN) {
            snprintf(err, errlen, "sequence %d: %d tokens, the encoder takes 1 to %d", b, lens[b], MINILM_MAX_LEN);
            return -1;
        }
        for (int i = 0; i < lens[b]; i++)
            if (ids[b][i] < 0 || ids[b][i] >= MINILM_VOCAB) {
                snprintf(err, errlen, "sequence %d, token %d: id %d outside the vocabulary [0, %d)", b, i,
                         (int)ids[b][i], MINILM_VOCAB);
                return -1;
            }
        if (lens[b] > L) L = lens[b];
    }
    if (!B) return 0;
    const int64_t P = (int64_t)B * L; /* padded rows */
    grow(m, P, B);
    const Backend *be = m->be;
    BackendCtx *c = m->ctx;
    int64_t T = 0; /* real tokens: the packed rows */
    for (int b = 0; b < B; b++)
        for (int64_t l = 0; l < L; l++) {
            int64_t t = b * L + l;
            int real = l < lens[b];
            m->h_mask[t] = real ? 1.0f : 0.0f;
            m->h_to_pad[t] = real ? (int32_t)T : 0; /* a pad reads a real row: finite, and masked */
            if (real) {
                m->h_ids[T] = ids[b][l];
                m->h_pos[T] = (int32_t)l;
                m->h_type[T] = 0;
                m->h_to_packed[T++] = (int32_t)t;
            }
        }
    be->upload(c, m->mask, m->h_mask, P);
    /* no padding (one sequence, or all of one length): the packed rows are the padded ones */
    const int packed = T < P;
    float *qkv_pad = packed ? m->qkv_pad : m->qkv, *att_pad = packed ? m->att_pad : m->att;
    /* embeddings */
    be->embedding_forward(c, m->x, m->h_ids, m->word, T, MINILM_VOCAB, D);
    be->embedding_forward(c, m->tmp, m->h_pos, m->pos, T, MINILM_MAX_LEN, D);
    be->add(c, m->x, m->x, m->tmp, T * D);
    be->embedding_forward(c, m->tmp, m->h_type, m->type, T, TYPES, D);
    be->add(c, m->x, m->x, m->tmp, T * D);
    be->groupnorm_forward(c, m->tmp, m->mean, m->rstd, m->x, m->ln0_g, m->ln0_b, T, D, 1, 1, LN_EPS);
    float *h = m->tmp, *s = m->x; /* h: the hidden state; s: the sum before each LayerNorm */
    for (int l = 0; l < LAYERS; l++) {
        const Layer *y = &m->layer[l];
        be->linear_forward(c, m->qkv, h, y->wqkv, y->bqkv, T, D, 3 * D);
        if (packed) be->embedding_forward(c, qkv_pad, m->h_to_pad, m->qkv, P, T, 3 * D);
        be->token_attention_forward(c, att_pad, qkv_pad, m->mask, B, L, D, HEADS);
        if (packed) be->embedding_forward(c, m->att, m->h_to_packed, att_pad, T, P, D);
        be->linear_forward(c, s, m->att, y->wo, y->bo, T, D, D);
        be->add(c, s, s, h, T * D);
        be->groupnorm_forward(c, h, m->mean, m->rstd, s, y->ln1_g, y->ln1_b, T, D, 1, 1, LN_EPS);
        be->linear_forward(c, m->ff, h, y->wi, y->bi, T, D, FF);
        be->gelu_forward(c, m->ff, m->ff, T * FF);
        be->linear_forward(c, s, m->ff, y->wf, y->bf, T, FF, D);
        be->add(c, s, s, h, T * D);
        be->groupnorm_forward(c, h, m->mean, m->rstd, s, y->ln2_g, y->ln2_b, T, D, 1, 1, LN_EPS);
    }
    if (packed) be->embedding_forward(c, att_pad, m->h_to_pad, h, P, T, D);
    be->masked_mean_forward(c, m->pool, packed ? att_pad : h, m->mask, B, L, D);
    be->download(c, out, m->pool, (int64_t)B * D);
    for (int b = 0; b < B; b++) { /* F.normalize(p=2, eps=1e-12) */
        float *o = out + (int64_t)b * D;
        double ss = 0.0;
        for (int i = 0; i < D; i++) ss += (double)o[i] * o[i];
        float inv = (float)(1.0 / fmax(sqrt(ss), 1e-12));
        for (int i = 0; i < D; i++) o[i] *= inv;
    }
    return 0;
}
