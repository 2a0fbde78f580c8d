/* bench_minilm.c: sentences per second of the sentence encoder (common/text/minilm.h) on the
 * CPU backend, for short prompts of 8 tokens ([CLS] 6 words [SEP]) at batch 1 and batch 32,
 * and for a batch of 64 prompts of mixed lengths (3 to 14 tokens, mean 8.5: what the serving
 * router hands the encoder when free-text lines queue up), with the thread count of the CPU backend given as argv[1] (default 1). Each point runs for
 * at least 2 s after one warm-up call. Without the model (make deps) it says so and exits 0.
 *   build/release/bench/bench_minilm [THREADS] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "minilm.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    char dir[4096], err[512];
    if (!minilm_default_dir(dir, sizeof dir)) return printf("bench_minilm: no model directory (HOME unset)\n"), 0;
    BackendCtx *ctx = backend_ctx_new(&backend_cpu, threads);
    MiniLM *m = minilm_load(dir, &backend_cpu, ctx, err, sizeof err);
    if (!m) return printf("bench_minilm: skipped: %s (make deps)\n", err), 0;
    /* "[CLS] a red dress with long sleeves [SEP]"-like: 8 ids */
    static const int32_t prompt[8] = {101, 1037, 2417, 4377, 2007, 2146, 15114, 102};
    /* the mixed batch: prefixes of a 14-id prompt, 3..14 tokens in turn, each ending in [SEP] */
    static const int32_t long_prompt[14] = {101, 1037, 2417, 4377, 2007, 2146, 15114, 1998, 1037, 2312, 3797, 2006, 1996, 102};
    static int32_t mixed[64][14];
    const int32_t *ids[64];
    int lens[64], mixed_lens[64];
    for (int i = 0; i < 64; i++) {
        mixed_lens[i] = 3 + i % 12;
        memcpy(mixed[i], long_prompt, sizeof long_prompt);
        mixed[i][mixed_lens[i] - 1] = 102;
    }
    float *out = malloc(64 * MINILM_DIM * sizeof(float));
    const int batches[3] = {1, 32, 64};
    for (int k = 0; k < 3; k++) {
        int B = batches[k];
        for (int i = 0; i < B; i++) {
            ids[i] = k == 2 ? mixed[i] : prompt;
            lens[i] = k == 2 ? mixed_lens[i] : 8;
        }
        if (minilm_embed(m, ids, lens, B, out, err, sizeof err)) return printf("bench_minilm: %s\n", err), 1;
        long n = 0;
        double t0 = now(), t;
        do {
            minilm_embed(m, ids, lens, B, out, err, sizeof err);
            n += B;
        } while ((t = now() - t0) < 2.0);
        printf("bench_minilm: cpu, %d thread%s, batch %2d, %s: %.0f sentences/s (%.2f ms per call)\n", threads,
               threads == 1 ? "" : "s", B, k == 2 ? "3-14 tokens" : "8 tokens", (double)n / t, 1e3 * t * B / (double)n);
    }
    free(out);
    minilm_free(&m);
    backend_ctx_destroy(&ctx);
    return 0;
}
