/* bench_prompts.c: the data behind the routing threshold of a prompts file, and the time to
 * classify one prompt (docs/ROUTER.md "Routing"). For every phrasing of PROMPTS, held out of
 * its class's prototype (leave-one-out), its nearest class and that cosine; for every line of
 * OFFTOPIC (prompts about no class), its best cosine with the full prototypes. Prints both
 * distributions (quantiles and the closest cases), the gap between them, and the time of
 * prompt_classify (tokenize + encode at batch 1 + 10 dot products) on the CPU backend with
 * THREADS threads (default 1), for at least 2 s. Without the model (make deps) it says so and
 * exits 0.
 *   build/release/bench/bench_prompts [PROMPTS [OFFTOPIC [THREADS]]]
 *   (defaults pipelines/fmnist.prompts pipelines/offtopic.prompts 1) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "dataset.h"
#include "minilm.h"
#include "prompts.h"
#include "tokenizer.h"
#include "bench.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void quantiles(const char *what, double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    printf("%s (%d): min %.3f  p5 %.3f  p10 %.3f  p25 %.3f  median %.3f  p75 %.3f  max %.3f\n", what, n, v[0],
           v[n / 20], v[n / 10], v[n / 4], v[n / 2], v[3 * n / 4], v[n - 1]);
}

int main(int argc, char **argv) {
    const char *pf = argc > 1 ? argv[1] : "pipelines/fmnist.prompts", *of = argc > 2 ? argv[2] : "pipelines/offtopic.prompts";
    int threads = argc > 3 ? atoi(argv[3]) : 1;
    char dir[4096], err[1024];
    if (!minilm_default_dir(dir, sizeof dir)) return printf("bench_prompts: no model directory (HOME unset)\n"), 0;
    BackendCtx *ctx = backend_ctx_new(&backend_cpu, threads);
    MiniLM *m = minilm_load(dir, &backend_cpu, ctx, err, sizeof err);
    if (!m) return printf("bench_prompts: skipped: %s (make deps)\n", err), 0;
    Tokenizer *t = tok_load(dir, err, sizeof err);
    if (!t) return printf("bench_prompts: %s\n", err), 1;
    PromptRouter r;
    if (prompt_router_init(&r, pf, DATASET_FMNIST_CLASSES, dataset_fmnist_names, t, m, err, sizeof err))
        return printf("bench_prompts: %s\n", err), 1;
    int np = r.set.np, n = r.set.n, wrong = 0;
    double *in = malloc(sizeof(double) * (size_t)np), *own = malloc(sizeof(double) * (size_t)np);
    float *loo = malloc(sizeof(float) * (size_t)n * MINILM_DIM);
    for (int i = 0; i < np; i++) {
        int best;
        prompts_prototypes(loo, r.emb, r.set.cls, np, n, i);
        prompts_nearest(loo, n, r.emb + (size_t)i * MINILM_DIM, &best, &in[i]);
        double d = 0;
        for (int j = 0; j < MINILM_DIM; j++) d += (double)loo[(size_t)r.set.cls[i] * MINILM_DIM + j] * r.emb[(size_t)i * MINILM_DIM + j];
        own[i] = d;
        if (best != r.set.cls[i]) {
            wrong++;
            printf("  held out, misrouted: '%s' (%s) -> %s at %.3f (own class %.3f)\n", r.set.text[i],
                   r.set.names[r.set.cls[i]], r.set.names[best], in[i], d);
        }
    }
    { /* the five held-out phrasings farthest from every class (a selection, np is small) */
        int *done = calloc((size_t)np, sizeof(int));
        for (int k = 0; k < 5 && k < np; k++) {
            int lo = -1;
            for (int i = 0; i < np; i++)
                if (!done[i] && (lo < 0 || in[i] < in[lo])) lo = i;
            done[lo] = 1;
            printf("  farthest held out: %.3f '%s' (%s)\n", in[lo], r.set.text[lo], r.set.names[r.set.cls[lo]]);
        }
        free(done);
    }
    printf("held-out phrasings routed to their own class: %d of %d (%.1f%%)\n", np - wrong, np, 100.0 * (np - wrong) / np);
    /* the off-topic prompts */
    FILE *f = fopen(of, "r");
    if (!f) return printf("bench_prompts: %s: cannot open\n", of), 1;
    char line[1024];
    int no = 0;
    double off[1024];
    char *offt[1024];
    while (fgets(line, sizeof line, f) && no < 1024) {
        char *h = strchr(line, '#');
        if (h) *h = 0;
        size_t l = strlen(line);
        while (l && (line[l - 1] == '\n' || line[l - 1] == ' ')) line[--l] = 0;
        if (!l) continue;
        const char *tx[1] = {line};
        float v[MINILM_DIM];
        int best;
        if (prompts_embed(t, m, tx, &l, 1, v, err, sizeof err)) return printf("bench_prompts: %s\n", err), 1;
        prompts_nearest(r.proto, n, v, &best, &off[no]);
        offt[no] = malloc(l + 64);
        snprintf(offt[no], l + 64, "%.3f '%s' -> %s", off[no], line, r.set.names[best]);
        no++;
    }
    fclose(f);
    for (int i = 0; i < no; i++) /* the five closest off-topic prompts */
        for (int j = i + 1; j < no; j++)
            if (atof(offt[j]) > atof(offt[i])) { char *x = offt[i]; offt[i] = offt[j]; offt[j] = x; }
    for (int i = 0; i < no && i < 5; i++) printf("  closest off-topic: %s\n", offt[i]);
    quantiles("held-out phrasings, nearest prototype (leave-one-out)", in, np);
    quantiles("held-out phrasings, own class's prototype (leave-one-out)", own, np);
    quantiles("off-topic prompts, nearest prototype", off, no);
    printf("gap: lowest held-out nearest %.3f, highest off-topic %.3f, midpoint %.3f; file threshold %.3f\n", in[0],
           off[no - 1], (in[0] + off[no - 1]) / 2, r.threshold);
    for (int c = 25; c <= 50; c++) { /* errors of each threshold: held-out below + off-topic at or above */
        double th = c / 100.0;
        int b = 0, a = 0;
        for (int i = 0; i < np; i++) b += in[i] < th;
        for (int i = 0; i < no; i++) a += off[i] >= th;
        printf("  threshold %.2f: %3d held-out below (%.0f%%), %2d off-topic at or above (%.0f%%)\n", th, b,
               100.0 * b / np, a, 100.0 * a / no);
    }
    int below = 0, above = 0;
    for (int i = 0; i < np; i++) below += in[i] < r.threshold;
    for (int i = 0; i < no; i++) above += off[i] >= r.threshold;
    printf("at the threshold %.3f: %d of %d held-out phrasings below it, %d of %d off-topic prompts at or above it\n",
           r.threshold, below, np, above, no);
    /* latency */
    const char *qs[4] = {"a pair of running shoes", "a warm winter coat with a hood", "a red sports car", "a handbag"};
    int cls, best, k = 0;
    double sc, bs, t0 = now(), el;
    do {
        prompt_classify(&r, qs[k & 3], strlen(qs[k & 3]), &cls, &sc, &best, &bs, err, sizeof err);
        k++;
    } while ((el = now() - t0) < 2.0);
    printf("prompt_classify: %d thread%s, %.2f ms per prompt (%d prompts of 5-8 tokens)\n", threads,
           threads == 1 ? "" : "s", 1e3 * el / k, k);
    for (int i = 0; i < no; i++) free(offt[i]);
    free(in);
    free(own);
    free(loo);
    prompt_router_free(&r);
    tok_free(t);
    minilm_free(&m);
    backend_ctx_destroy(&ctx);
    return 0;
}
