/* test_minilm.c: the sentence encoder (common/text/minilm.h) against PyTorch.
 * tests/fixtures/minilm_ref.safetensors (written by /usr/bin/python3 tests/minilm_ref.py: the
 * same BERT built by hand in torch 1.13 from the same model.safetensors, ids from the reference
 * `tokenizers` package) holds 56 sentences' token ids (2 to 256 tokens: empty, one word,
 * prompts, accents, emoji, CJK, Cyrillic, Greek, Arabic, punctuation, long) and their
 * embeddings. Checks:
 *  - parity: every sentence embedded in mixed-length batches of 8 (heavy padding) and one at a
 *    time has cosine >= 0.9999 with the reference and |e - ref| <= 1e-4 per element, and norm
 *    1 within 1e-5 (the worst sentence is printed);
 *  - batching: a sentence's batched row equals its single embedding (max |diff| <= 1e-5);
 *  - bad input (an id outside the vocabulary, 0 or 513 tokens) and bad weights (missing file,
 *    a tensor of the wrong shape) are errors naming what is wrong, never a crash;
 *  - on a machine with a CUDA build and a GPU, the same parity on the GPU.
 * The weights come from $MSD_MINILM_DIR or ~/.cache/msdpipe/all-minilm-l6-v2 (make deps):
 * absent, the parity tests SKIP (fail under MSD_REQUIRE_DATA=1). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "check.h"
#include "log.h"
#include "minilm.h"
#include "safetensors.h"

static StFile fx;
static int S;
static const int32_t **ids; /* S pointers into idsbuf */
static int32_t *idsbuf;
static int *lens;
static float *ref;
static char model_dir[4096];
static int have_model;

static void read_fixture(void) {
    char err[512];
    if (st_read(&fx, check_fixture("minilm_ref.safetensors"), err, sizeof err) != 0) {
        CHECK(0, "cannot read the fixture: %s", err);
        return;
    }
    const StTensor *tl = st_find(&fx, "lens"), *ti = st_find(&fx, "ids"), *te = st_find(&fx, "emb");
    CHECK(tl && ti && te && tl->dtype == ST_I32 && ti->dtype == ST_I32 && te->ndim == 2 &&
              te->shape[0] == tl->numel && te->shape[1] == MINILM_DIM,
          "fixture: lens (S) I32, ids I32, emb (S, %d) expected", MINILM_DIM);
    if (check_cur_failed_) return;
    S = (int)tl->numel;
    CHECK(S >= 50, "fixture has %d sentences, at least 50 expected", S);
    lens = malloc((size_t)S * sizeof(int));
    idsbuf = malloc((size_t)ti->numel * sizeof(int32_t));
    ids = malloc((size_t)S * sizeof(*ids));
    ref = malloc((size_t)S * MINILM_DIM * sizeof(float));
    memcpy(idsbuf, ti->data, (size_t)ti->numel * sizeof(int32_t));
    st_tensor_to_f32(te, ref);
    int64_t off = 0;
    for (int s = 0; s < S; s++) {
        int32_t l;
        memcpy(&l, tl->data + (size_t)s * 4, 4);
        lens[s] = l;
        ids[s] = idsbuf + off;
        off += l;
    }
    CHECK(off == ti->numel, "fixture: lens sum to %lld, ids has %lld", (long long)off, (long long)ti->numel);
}

/* cosine, max |diff| and norm of every row against the reference; prints the worst */
static void check_parity(const char *what, const float *e) {
    double worst_cos = 2, worst_abs = 0, worst_norm = 0;
    int wc = 0, wa = 0, wn = 0;
    for (int s = 0; s < S; s++) {
        const float *a = e + (size_t)s * MINILM_DIM, *b = ref + (size_t)s * MINILM_DIM;
        double ab = 0, aa = 0, bb = 0, mx = 0;
        for (int i = 0; i < MINILM_DIM; i++) {
            ab += (double)a[i] * b[i], aa += (double)a[i] * a[i], bb += (double)b[i] * b[i];
            mx = fmax(mx, fabs((double)a[i] - b[i]));
        }
        double cs = ab / sqrt(aa * bb + 1e-300), nd = fabs(sqrt(aa) - 1.0);
        if (cs < worst_cos) worst_cos = cs, wc = s;
        if (mx > worst_abs) worst_abs = mx, wa = s;
        if (nd > worst_norm) worst_norm = nd, wn = s;
    }
    printf("  %s: %d sentences, worst cosine 1 - %.1e (sentence %d, %d tokens), worst |diff| %.2e (sentence %d), "
           "worst | |e| - 1 | %.1e (sentence %d)\n",
           what, S, 1.0 - worst_cos, wc, lens[wc], worst_abs, wa, worst_norm, wn);
    CHECK(worst_cos >= 0.9999, "%s: sentence %d (%d tokens) has cosine %.7f with the reference, < 0.9999", what, wc,
          lens[wc], worst_cos);
    CHECK(worst_abs <= 1e-4, "%s: sentence %d differs by %.3e in one element, > 1e-4", what, wa, worst_abs);
    CHECK(worst_norm <= 1e-5, "%s: sentence %d has norm off 1 by %.2e, > 1e-5", what, wn, worst_norm);
}

static void parity_on(const Backend *be, const char *name) {
    char err[512], what[64];
    BackendCtx *ctx = backend_ctx_new(be, 2);
    MiniLM *m = minilm_load(model_dir, be, ctx, err, sizeof err);
    CHECK(m != NULL, "%s: load %s: %s", name, model_dir, err);
    if (!m) {
        backend_ctx_destroy(&ctx);
        return;
    }
    float *batched = calloc((size_t)S * MINILM_DIM, sizeof(float)), *single = calloc((size_t)S * MINILM_DIM, sizeof(float));
    for (int s = 0; s < S; s += 8) {
        int B = S - s < 8 ? S - s : 8;
        CHECK(minilm_embed(m, ids + s, lens + s, B, batched + (size_t)s * MINILM_DIM, err, sizeof err) == 0,
              "%s: batch at %d: %s", name, s, err);
    }
    for (int s = 0; s < S; s++)
        CHECK(minilm_embed(m, ids + s, lens + s, 1, single + (size_t)s * MINILM_DIM, err, sizeof err) == 0,
              "%s: sentence %d: %s", name, s, err);
    snprintf(what, sizeof what, "%s, batches of 8", name);
    check_parity(what, batched);
    snprintf(what, sizeof what, "%s, one at a time", name);
    check_parity(what, single);
    double mx = 0;
    int ws = 0;
    for (int64_t i = 0; i < (int64_t)S * MINILM_DIM; i++)
        if (fabs((double)batched[i] - single[i]) > mx) mx = fabs((double)batched[i] - single[i]), ws = (int)(i / MINILM_DIM);
    printf("  %s: batched vs single, max |diff| %.2e (sentence %d)\n", name, mx, ws);
    CHECK(mx <= 1e-5, "%s: sentence %d batched differs from alone by %.3e, > 1e-5", name, ws, mx);
    free(batched);
    free(single);
    minilm_free(&m);
    backend_ctx_destroy(&ctx);
}

static void test_parity_cpu(void) {
    if (!have_model) SKIP_MISSING_DATA("no model at %s (make deps, or set MSD_MINILM_DIR)", model_dir);
    if (!S) return;
    parity_on(&backend_cpu, "cpu");
}

static void test_parity_gpu(void) {
    char err[256];
    const Backend *g = backend_get((Device){DEVICE_CUDA, 0}, err, sizeof err);
    if (!g) {
        printf("  SKIP test_parity_gpu: no GPU here (%s): it runs where there is one\n", err);
        check_cur_skipped_ = 1;
        return;
    }
    if (!have_model) SKIP_MISSING_DATA("no model at %s (make deps, or set MSD_MINILM_DIR)", model_dir);
    if (!S) return;
    parity_on(g, "cuda");
}

static void test_bad_input(void) {
    if (!have_model) SKIP_MISSING_DATA("no model at %s (make deps, or set MSD_MINILM_DIR)", model_dir);
    char err[512] = "";
    BackendCtx *ctx = backend_ctx_new(&backend_cpu, 1);
    MiniLM *m = minilm_load(model_dir, &backend_cpu, ctx, err, sizeof err);
    CHECK(m != NULL, "load: %s", err);
    if (m) {
        int32_t good[3] = {101, 7592, 102}, bad[3] = {101, MINILM_VOCAB, 102};
        const int32_t *seqs[2] = {good, bad};
        int ls[2] = {3, 3};
        float out[2 * MINILM_DIM];
        CHECK(minilm_embed(m, seqs, ls, 2, out, err, sizeof err) == -1 && strstr(err, "sequence 1, token 1") &&
                  strstr(err, "30522"),
              "an id outside the vocabulary: want an error naming sequence 1, token 1, got '%s'", err);
        ls[1] = 0, seqs[1] = good;
        CHECK(minilm_embed(m, seqs, ls, 2, out, err, sizeof err) == -1 && strstr(err, "sequence 1: 0 tokens"),
              "an empty sequence: got '%s'", err);
        int32_t *longs = calloc(MINILM_MAX_LEN + 1, sizeof(int32_t));
        seqs[1] = longs, ls[1] = MINILM_MAX_LEN + 1;
        CHECK(minilm_embed(m, seqs, ls, 2, out, err, sizeof err) == -1 && strstr(err, "513 tokens"),
              "513 tokens: got '%s'", err);
        free(longs);
        minilm_free(&m);
    }
    /* weights: a missing file, then a file whose word embeddings have the wrong shape */
    CHECK(minilm_load("/nonexistent/minilm", &backend_cpu, ctx, err, sizeof err) == NULL &&
              strstr(err, "/nonexistent/minilm/model.safetensors"),
          "missing weights: got '%s'", err);
    char path[] = "/tmp/test_minilm_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    if (fd >= 0) {
        close(fd);
        char file[64];
        snprintf(file, sizeof file, "%s.safetensors", path);
        float w[4] = {0};
        int64_t shape[2] = {2, 2};
        StWriteTensor t = {"embeddings.word_embeddings.weight", ST_F32, 2, shape, w};
        CHECK(st_write(file, &t, 1, NULL, 0, err, sizeof err) == 0, "st_write: %s", err);
        CHECK(minilm_load(file, &backend_cpu, ctx, err, sizeof err) == NULL &&
                  strstr(err, "embeddings.word_embeddings.weight is (2, 2)"),
              "a wrong shape: got '%s'", err);
        unlink(file);
        unlink(path);
    }
    backend_ctx_destroy(&ctx);
}

int main(int argc, char **argv) {
    (void)argc;
    check_find_fixtures(argv[0]);
    char file[4200];
    if (minilm_default_dir(model_dir, sizeof model_dir)) {
        snprintf(file, sizeof file, "%s/model.safetensors", model_dir);
        have_model = access(file, R_OK) == 0;
    }
    TEST_RUN(read_fixture);
    TEST_RUN(test_parity_cpu);
    TEST_RUN(test_parity_gpu);
    TEST_RUN(test_bad_input);
    free(lens); free(idsbuf); free(ids); free(ref);
    st_free(&fx);
    return TEST_END();
}
