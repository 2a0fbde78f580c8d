/* partition_classes.c: see partition_classes.h. The embeddings are scaled to unit length, so
 * k-means on them groups classes by cosine similarity whatever the rows' norms. */
#include "partition_classes.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "log.h"
#include "minilm.h"
#include "prompts.h"
#include "safetensors.h"
#include "tokenizer.h"

int router_classes_load(RouterClasses *rc, const char *ckpt, const char *tensor, const char *dataset, char *err,
                        size_t errlen) {
    memset(rc, 0, sizeof *rc);
    if (!tensor) tensor = "map_label.weight";
    if (!dataset) dataset = "fmnist";
    int want = 0;
    if (!strcmp(dataset, "fmnist")) want = DATASET_FMNIST_CLASSES;
    else if (strcmp(dataset, "ids") != 0)
        return msd_errf(err, errlen, "--dataset %s: expected fmnist (its 10 class names) or ids (classes named by id)",
                        dataset);
    StFile f;
    char e2[1024];
    if (st_read(&f, ckpt, e2, sizeof e2)) return msd_errf(err, errlen, "--embed-from %s: %s", ckpt, e2);
    const StTensor *t = st_find(&f, tensor);
    int rcode = -1;
    if (!t) {
        msd_errf(err, errlen, "--embed-from %s: no tensor '%s' (a class-conditional teacher has map_label.weight; "
                 "--embed-tensor NAME picks another)", ckpt, tensor);
        goto out;
    }
    if (t->ndim != 2 || t->shape[0] < 1 || t->shape[1] < 1) {
        msd_errf(err, errlen, "--embed-from %s: tensor '%s' has %d dimensions; a class embedding is a 2-D matrix",
                 ckpt, tensor, t->ndim);
        goto out;
    }
    int64_t r = t->shape[0], c = t->shape[1];
    /* columns are classes (map_label.weight, (E, classes)) unless only the rows can be */
    int cols = want ? c == want : c <= r;
    int64_t n = cols ? c : r, d = cols ? r : c;
    if ((want && n != want) || n > DATASET_MAX_CLASSES) {
        msd_errf(err, errlen, "--embed-from %s: tensor '%s' of shape (%lld, %lld) has no dimension of %d classes "
                 "(--dataset %s)", ckpt, tensor, (long long)r, (long long)c, want ? want : DATASET_MAX_CLASSES, dataset);
        goto out;
    }
    float *w = msd_malloc(sizeof(float) * (size_t)t->numel);
    st_tensor_to_f32(t, w);
    rc->n = (int)n;
    rc->d = (int)d;
    rc->emb = msd_malloc(sizeof(double) * (size_t)(n * d));
    for (int64_t i = 0; i < n; i++) {
        double s = 0;
        for (int64_t j = 0; j < d; j++) {
            double v = cols ? w[j * c + i] : w[i * c + j];
            if (!isfinite(v)) {
                free(w);
                msd_errf(err, errlen, "--embed-from %s: tensor '%s' holds a non-finite value (class %lld)", ckpt,
                         tensor, (long long)i);
                router_classes_free(rc);
                goto out;
            }
            rc->emb[i * d + j] = v;
            s += v * v;
        }
        if (s == 0) {
            free(w);
            msd_errf(err, errlen, "--embed-from %s: tensor '%s': class %lld's embedding is all zeros", ckpt, tensor,
                     (long long)i);
            router_classes_free(rc);
            goto out;
        }
        for (int64_t j = 0; j < d; j++) rc->emb[i * d + j] /= sqrt(s);
    }
    free(w);
    rc->names = msd_malloc(sizeof(char *) * (size_t)n);
    if (want) {
        for (int i = 0; i < n; i++) rc->names[i] = dataset_fmnist_names[i];
    } else {
        rc->owned = msd_malloc(sizeof(char *) * (size_t)n);
        for (int i = 0; i < n; i++) {
            rc->owned[i] = msd_malloc(12);
            snprintf(rc->owned[i], 12, "%d", i);
            rc->names[i] = rc->owned[i];
        }
    }
    rcode = 0;
out:
    st_free(&f);
    return rcode;
}

int router_classes_from_prompts(RouterClasses *rc, const char *prompts, const char *dataset, char *err,
                                size_t errlen) {
    memset(rc, 0, sizeof *rc);
    if (!dataset) dataset = "fmnist";
    if (strcmp(dataset, "fmnist") != 0)
        return msd_errf(err, errlen, "--dataset %s: --embed-prompts knows fmnist (its 10 class names) only", dataset);
    char dir[4096], e2[1024];
    if (!minilm_default_dir(dir, sizeof dir))
        return msd_errf(err, errlen, "--embed-prompts: no model folder (set MSD_MINILM_DIR or HOME; make deps)");
    Tokenizer *t = tok_load(dir, e2, sizeof e2);
    if (!t) return msd_errf(err, errlen, "--embed-prompts: the tokenizer: %s (make deps)", e2);
    BackendCtx *ctx = backend_ctx_new(&backend_cpu, 1);
    MiniLM *m = minilm_load(dir, &backend_cpu, ctx, e2, sizeof e2);
    int rcode = -1;
    PromptRouter r = {0};
    if (!m) msd_errf(err, errlen, "--embed-prompts: the encoder: %s (make deps)", e2);
    else if (prompt_router_init(&r, prompts, DATASET_FMNIST_CLASSES, dataset_fmnist_names, t, m, e2, sizeof e2))
        msd_errf(err, errlen, "--embed-prompts %s", e2);
    else {
        rc->n = r.set.n;
        rc->d = MINILM_DIM;
        rc->emb = msd_malloc(sizeof(double) * (size_t)rc->n * MINILM_DIM);
        for (int i = 0; i < rc->n * MINILM_DIM; i++) rc->emb[i] = r.proto[i];
        rc->names = msd_malloc(sizeof(char *) * (size_t)rc->n);
        for (int i = 0; i < rc->n; i++) rc->names[i] = dataset_fmnist_names[i];
        log_info("class prototypes of %d classes from %d phrasings in %s (all-MiniLM-L6-v2, %s)", r.set.n, r.set.np,
                 prompts, dir);
        rcode = 0;
    }
    prompt_router_free(&r);
    minilm_free(&m);
    backend_ctx_destroy(&ctx);
    tok_free(t);
    return rcode;
}

void router_classes_free(RouterClasses *rc) {
    if (rc->owned)
        for (int i = 0; i < rc->n; i++) free(rc->owned[i]);
    free(rc->owned);
    free(rc->names);
    free(rc->emb);
    memset(rc, 0, sizeof *rc);
}
