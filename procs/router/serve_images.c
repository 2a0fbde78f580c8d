/* serve_images.c: msd-router --mode serve: prompts in, PNG images out, through the K one-step
 * image students (msd-student --mode image-serve) on the queueing of router.h.
 *
 * A line is "PROMPT [N] [seed=S]" (docs/ROUTER.md "Serving"): the trailing "seed=S" (S an integer
 * in 0..ROUTER_SEED_MAX) and the trailing integer N (1..--max-images, default 1) are optional;
 * the rest is the prompt. A prompt that is one integer is a class id. router_classify turns the
 * prompt into a class (a class name or id, else with --prompts the nearest class prototype of
 * the sentence encoder, common/text/prompts.h); the
 * partition says which student owns the class; GENERATE {"label" (N), "seed" (N): S + i for
 * image i, "deadline_ms"} goes to it. Without seed=S the seed is 1000 x the line number, so
 * the same input gives the same images. The reply's images are written as
 * OUT/NNNNNN-CLASS-i.png (NNNNNN the line number), and with --grid 1 a line of N > 1 also as
 * OUT/NNNNNN-CLASS-grid.png; the line is answered
 *     CLASS STUDENT MS PATH... [grid PATH]
 * (--format json: {"line", "class", "class_id", "student", "ms", "seed", "paths", ["grid"]}). MS is the
 * latency from when the router took the line to when its images were written. A line that
 * cannot be served is answered with an error: the launcher prints `error: REASON` (--format
 * json: {"line", "error"}) in its place and a warning naming the line, and the stream goes on.
 *
 * Limits (stated once here; the launcher refuses lines of 64 KiB or more and lines with a NUL
 * byte before they get here): a line of at most ROUTER_MAX_TEXT (4096) bytes of valid UTF-8,
 * N in 1..ROUTER_IMAGES_MAX (64), at most ROUTER_MAX_PENDING (1024) lines held. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "dataset.h"
#include "fsutil.h"
#include "image.h"
#include "log.h"
#include "minilm.h"
#include "partition.h"
#include "prompts.h"
#include "router.h"
#include "tokenizer.h"

#define ROUTER_IMAGES_MAX 64
#define ROUTER_SEED_MAX ((int64_t)1 << 62)
#define ROUTER_SEED_PER_LINE 1000   /* the default seed: 1000 x the line number */

static struct {
    const char *part, *out, *format, *prompts, *model;
    int max_images, grid, threads;
} iopt = {.max_images = 1, .format = "text", .threads = 1};

const ArgSpec router_images_args[] = {
    ARG_STR_REQ("--partition", &iopt.part, "FILE", "which student owns which class (the 10 Fashion-MNIST classes)"),
    ARG_STR_REQ("--out", &iopt.out, "DIR", "where the PNG files go (created)"),
    ARG_INT("--max-images", &iopt.max_images, 1, ROUTER_IMAGES_MAX, "N",
            "largest N of a line (default 1; at most 64)"),
    ARG_INT("--grid", &iopt.grid, 0, 1, "0|1", "1: a line of N > 1 images also gets one grid PNG of them (default 0)"),
    ARG_STR("--format", &iopt.format, "F", "text (default) or json: each line answered with a JSON object"),
    ARG_STR("--prompts", &iopt.prompts, "FILE", "class phrasings (pipelines/fmnist.prompts): free-text prompts go to the\n"
            "nearest class prototype of the sentence encoder (docs/ROUTER.md \"Routing\"); without it a prompt\n"
            "must name its class (also with \"none\")"),
    ARG_STR("--model", &iopt.model, "DIR", "the encoder's folder (default $MSD_MINILM_DIR, else tools/fetch-minilm's cache)"),
    ARG_INT("--encoder-threads", &iopt.threads, 1, 64, "T", "CPU threads of the encoder (default 1)"),
    ARG_INCLUDE(router_timeout_args),
    ARG_END_,
};

/* The Fashion-MNIST classes as their official names say them (dataset_fmnist_names are the
 * one-word names the partition files and msd-data use). */
static const char *const official_names[DATASET_FMNIST_CLASSES] = {
    "t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"};

typedef struct Images {
    int assign[DATASET_FMNIST_CLASSES];   /* class -> student */
    int max_images, grid, json;
    const char *out;
    int64_t served, images;
    /* the prompt encoder (--prompts), or pr.tok == NULL */
    PromptRouter pr;
    Tokenizer *tok;
    MiniLM *lm;
    BackendCtx *ctx;
    int64_t encoded, batches;   /* prompts through the encoder; its batched calls (images_prepare) */
    double encode_s;
    /* the encoder's answers for the lines of the batch being taken (images_prepare): the
     * prompt's text and what prompt_classify_many said; looked up by router_classify */
    int ncached;
    char *cached_text[ROUTER_LINE_BATCH];
    size_t cached_len[ROUTER_LINE_BATCH];
    PromptClass cached[ROUTER_LINE_BATCH];
} Images;

/* Does the prompt (len bytes) name class c, case-insensitively, by its one-word name or its
 * official name? */
static int names_class(const char *t, size_t len, int c) {
    const char *names[2] = {dataset_fmnist_names[c], official_names[c]};
    for (int i = 0; i < 2; i++)
        if (strlen(names[i]) == len && strncasecmp(t, names[i], len) == 0) return 1;
    return 0;
}

/* The prompt's class. First the names: a class id 0..9, or a Fashion-MNIST class name in any
 * case (the one-word names of dataset_fmnist_names or the official ones: "T-shirt/top", "ankle
 * boot"), after an optional article "a ", "an " or "the ". Else, with --prompts, the sentence
 * encoder (common/text/prompts.h): the nearest class prototype by cosine, at or above the
 * prompts file's threshold; below it, the reason names the best match and its score. 0 with
 * *cls, or -1 with the reason in why. */
/* The names part of router_classify: 0 with *cls, -1 with why (a bad class id), 1: no name. */
static int router_names(const char *t, size_t n, int *cls, char *why, size_t whylen) {
    int digits = n > 0;
    for (size_t i = 0; i < n; i++) digits &= isdigit((unsigned char)t[i]) != 0;
    if (digits) {
        if (n <= 3 && atoi(t) < DATASET_FMNIST_CLASSES) {   /* text is NUL-terminated by the caller */
            *cls = atoi(t);
            return 0;
        }
        snprintf(why, whylen, "class id %.*s is not a class (0..%d)", n > 20 ? 20 : (int)n, t, DATASET_FMNIST_CLASSES - 1);
        return -1;
    }
    static const char *const articles[] = {"a ", "an ", "the "};
    for (int a = 0; a < 3; a++) {
        size_t al = strlen(articles[a]);
        if (n > al && strncasecmp(t, articles[a], al) == 0) {
            for (int c = 0; c < DATASET_FMNIST_CLASSES; c++)
                if (names_class(t + al, n - al, c)) { *cls = c; return 0; }
        }
    }
    for (int c = 0; c < DATASET_FMNIST_CLASSES; c++)
        if (names_class(t, n, c)) { *cls = c; return 0; }
    return 1;
}

static int router_classify(Router *r, const char *text, size_t len, int *cls, char *why, size_t whylen) {
    Images *im = r->ext;
    const char *t = text;
    size_t n = len;
    int named = router_names(t, n, cls, why, whylen);
    if (named <= 0) return named;
    if (im && im->tok) {
        PromptClass one, *pc = NULL;
        for (int i = 0; i < im->ncached && !pc; i++)   /* embedded with its batch (images_prepare) */
            if (im->cached_len[i] == n && !memcmp(im->cached_text[i], t, n)) pc = &im->cached[i];
        if (!pc) {
            double t0 = msd_now();
            pc = &one;
            pc->rc = prompt_classify(&im->pr, t, n, &pc->cls, &pc->score, &pc->best, &pc->best_score, pc->err,
                                     sizeof pc->err);
            im->encode_s += msd_now() - t0;
            im->encoded++;
        }
        if (pc->rc == PROMPT_ROUTED || pc->rc == PROMPT_DIRECT) {
            *cls = pc->cls;
            return 0;
        }
        snprintf(why, whylen, "'%.*s'%s: %.300s", n > 200 ? 200 : (int)n, t, n > 200 ? "..." : "", pc->err);
        return -1;
    }
    snprintf(why, whylen, "no class matches '%.*s'%s (a class name or id; free text needs --prompts)",
             n > 200 ? 200 : (int)n, t, n > 200 ? "..." : "");
    return -1;
}

/* A token "N" (digits only; at most 18 so it fits): its value, or -1 when it is not one. */
static int64_t parse_uint(const char *t, size_t n) {
    if (n == 0 || n > 18) return -1;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)t[i])) return -1;
        v = v * 10 + (t[i] - '0');
    }
    return v;
}

static int is_space(char c) { return c == ' ' || c == '\t'; }

/* Line `raw` (len bytes) "PROMPT [N] [seed=S]": the prompt as text[*pb, *pe) (text: a copy of
 * the line, NUL-terminated at *pe; ROUTER_MAX_TEXT + 1 bytes), N in *count, S in *seed (-1:
 * none). 0, or -1 with the reason in why. */
static int split_line(const Images *im, const char *raw, size_t len, char *text, size_t *pb, size_t *pe,
                      int64_t *count, int64_t *seed, char *why, size_t whylen) {
    long bad = utf8_bad_at(raw, len);
    if (bad >= 0) {
        snprintf(why, whylen, "the line is not valid UTF-8 (byte %ld of %zu)", bad + 1, len);
        return -1;
    }
    if (len) memcpy(text, raw, len);   /* an empty line has no data pointer */
    text[len] = 0;
    size_t b = 0, e = len;
    while (b < e && is_space(text[b])) b++;
    while (e > b && is_space(text[e - 1])) e--;
    *count = 1;
    *seed = -1;
    /* the trailing "seed=S", then the trailing N (only after a prompt: a lone integer is a class id) */
    size_t s = e;
    while (s > b && !is_space(text[s - 1])) s--;
    if (e - s >= 5 && strncmp(text + s, "seed=", 5) == 0) {
        *seed = parse_uint(text + s + 5, e - s - 5);
        if (*seed < 0 || *seed > ROUTER_SEED_MAX) {
            snprintf(why, whylen, "'%.*s': the seed must be an integer in 0..%lld", e - s > 40 ? 40 : (int)(e - s),
                     text + s, (long long)ROUTER_SEED_MAX);
            return -1;
        }
        for (e = s; e > b && is_space(text[e - 1]);) e--;
        for (s = e; s > b && !is_space(text[s - 1]);) s--;
    }
    int digits = e > s;
    for (size_t i = s; i < e; i++) digits &= isdigit((unsigned char)text[i]) != 0;
    if (digits && s > b) {
        *count = parse_uint(text + s, e - s);
        if (*count < 1 || *count > im->max_images) {
            snprintf(why, whylen, "image count %.*s%s must be an integer in 1..%d (--max-images)",
                     e - s > 40 ? 40 : (int)(e - s), text + s, e - s > 40 ? "..." : "", im->max_images);
            return -1;
        }
        for (e = s; e > b && is_space(text[e - 1]);) e--;
    }
    if (e == b) {
        snprintf(why, whylen, "empty prompt: a line is \"PROMPT [N] [seed=S]\"");
        return -1;
    }
    text[e] = 0;
    *pb = b;
    *pe = e;
    return 0;
}

/* "PROMPT [N] [seed=S]" into pd; 0, or -1 after answering the line. */
static int images_parse(Router *r, const WireMsg *line, const WireTensor *tt, Pending *pd) {
    Images *im = r->ext;
    char why[1024], text[ROUTER_MAX_TEXT + 1];
    size_t b, e;
    int64_t count, seed;
    int cls;
    if (split_line(im, tt->data, tt->nbytes, text, &b, &e, &count, &seed, why, sizeof why) ||
        router_classify(r, text + b, e - b, &cls, why, sizeof why)) {
        router_answer(r, line->id, why, WIRE_STATUS_BAD_REQUEST);
        return -1;
    }
    pd->cls = cls;
    pd->count = count;
    pd->seed = seed >= 0 ? seed : (int64_t)(line->id % (uint64_t)(ROUTER_SEED_MAX / ROUTER_SEED_PER_LINE)) *
                                      ROUTER_SEED_PER_LINE;
    pd->student = im->assign[cls];
    return 0;
}

static void images_uncache(Images *im) {
    for (int i = 0; i < im->ncached; i++) free(im->cached_text[i]);
    im->ncached = 0;
}

/* The lines about to be taken: their free-text prompts through the encoder in one batch, the
 * answers kept for router_classify (lines that fail to split, or name their class, are left
 * to images_parse). */
static void images_prepare(Router *r, WireMsg *lines, int n) {
    Images *im = r->ext;
    images_uncache(im);
    if (!im->tok) return;
    const char *texts[ROUTER_LINE_BATCH];
    size_t lens[ROUTER_LINE_BATCH];
    char text[ROUTER_MAX_TEXT + 1], why[1024];
    for (int i = 0; i < n && im->ncached < ROUTER_LINE_BATCH; i++) {
        const WireTensor *t = wire_msg_find(&lines[i], "text");
        size_t b, e;
        int64_t count, seed;
        int cls;
        if (!t || t->dtype != WIRE_U8 || t->ndim != 1 || t->nbytes > ROUTER_MAX_TEXT ||
            split_line(im, t->data, t->nbytes, text, &b, &e, &count, &seed, why, sizeof why) ||
            router_names(text + b, e - b, &cls, why, sizeof why) <= 0)
            continue;
        int dup = 0;
        for (int j = 0; j < im->ncached && !dup; j++)
            dup = im->cached_len[j] == e - b && !memcmp(im->cached_text[j], text + b, e - b);
        if (dup) continue;
        im->cached_text[im->ncached] = msd_malloc(e - b + 1);
        memcpy(im->cached_text[im->ncached], text + b, e - b + 1);
        im->cached_len[im->ncached] = e - b;
        texts[im->ncached] = im->cached_text[im->ncached];
        lens[im->ncached] = e - b;
        im->ncached++;
    }
    if (!im->ncached) return;
    double t0 = msd_now();
    prompt_classify_many(&im->pr, texts, lens, im->ncached, im->cached);
    im->encode_s += msd_now() - t0;
    im->encoded += im->ncached;
    im->batches++;
}

static void *images_request(Router *r, const Pending *pd, WireMsg *m, int64_t deadline_ms) {
    int64_t n = pd->count, one = 1;
    char *buf = msd_malloc((size_t)n * (sizeof(int32_t) + sizeof(int64_t)));
    int64_t *seeds = (int64_t *)buf;
    int32_t *labels = (int32_t *)(buf + (size_t)n * sizeof(int64_t));
    for (int64_t i = 0; i < n; i++) {
        labels[i] = pd->cls;
        seeds[i] = pd->seed + i;
    }
    wire_msg_add(m, "label", WIRE_I32, 1, &n, labels);
    wire_msg_add(m, "seed", WIRE_I64, 1, &n, seeds);
    wire_msg_add(m, "deadline_ms", WIRE_I64, 1, &one, &deadline_ms);
    return buf;
}

/* A JSON string of s: s itself when it is UTF-8, else with each byte that is not as U+FFFD (an
 * --out folder or a message may hold any bytes; JSON text is UTF-8). Never NULL. */
static json_t *json_text(const char *s) {
    json_t *j = json_string(s);
    if (j) return j;
    size_t n = strlen(s), o = 0;
    char *fixed = msd_malloc(3 * n + 1);
    for (size_t i = 0; i < n;) {
        long bad = utf8_bad_at(s + i, n - i);   /* the offset of the first invalid byte, or -1 */
        size_t good = bad < 0 ? n - i : (size_t)bad;
        memcpy(fixed + o, s + i, good);
        o += good;
        i += good;
        if (i < n) {
            memcpy(fixed + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    fixed[o] = 0;
    j = json_string(fixed);
    free(fixed);
    MSD_CHECK(j != NULL);
    return j;
}

/* One JSON object as one line (keys in insertion order, ", " and ": " separators); frees o. */
static char *json_dump_line(json_t *o) {
    MSD_CHECK(o != NULL);
    char *js = json_dumps(o, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12));
    json_decref(o);
    MSD_CHECK(js != NULL);
    return js;
}

/* --format json: an error answer as {"line": N, "error": MSG}. */
static char *images_error_line(Router *r, uint64_t line_id, const char *msg) {
    Images *im = r->ext;
    if (!im || !im->json) return NULL;
    return json_dump_line(json_pack("{s:I, s:o}", "line", (json_int_t)line_id, "error", json_text(msg)));
}

/* Append to out (cap bytes, *len used) or die: the answer is sized before it is written. */
static void put(char *out, size_t cap, size_t *len, const char *fmt, const char *a) {
    int w = snprintf(out + *len, cap - *len, fmt, a);
    MSD_CHECK(w >= 0 && (size_t)w < cap - *len);
    *len += (size_t)w;
}

static void images_reply(Router *r, int k, const WireMsg *m, const Pending *pd) {
    Images *im = r->ext;
    const WireTensor *x = wire_msg_find(m, "x");
    char msg[1024];
    if (m->status != WIRE_STATUS_OK || !x || x->dtype != WIRE_F32 || x->ndim != 4 || x->shape[0] != pd->count ||
        (x->shape[1] != 1 && x->shape[1] != 3) || x->shape[2] < 1 || x->shape[2] > 1024 || x->shape[3] < 1 ||
        x->shape[3] > 1024) {
        snprintf(msg, sizeof msg, "%s failed: %s %s", r->names[k], wire_status_name(m->status),
                 m->error[0] ? m->error : "(reply without an (N, C, H, W) tensor \"x\" of the N images asked for)");
        router_answer(r, pd->line_id, msg, WIRE_STATUS_INTERNAL);
        return;
    }
    int C = (int)x->shape[1], H = (int)x->shape[2], W = (int)x->shape[3];
    int64_t n = pd->count, D = (int64_t)C * H * W;
    const float *xs = x->data;
    for (int64_t i = 0; i < n * D; i++)
        if (!isfinite(xs[i])) {
            snprintf(msg, sizeof msg, "%s produced a non-finite pixel (image %lld); none written", r->names[k],
                     (long long)(i / D));
            router_answer(r, pd->line_id, msg, WIRE_STATUS_INTERNAL);
            return;
        }
    const char *cname = dataset_fmnist_names[pd->cls];
    size_t plen = strlen(im->out) + 64;
    char *paths = msd_malloc((size_t)(n + 1) * plen), err[1024];
    uint8_t *pix = msd_malloc((size_t)D);
    for (int64_t i = 0; i <= n; i++) {
        char *pth = paths + (size_t)i * plen;
        if (i < n) snprintf(pth, plen, "%s/%06llu-%s-%lld.png", im->out, (unsigned long long)pd->line_id, cname, (long long)i);
        else snprintf(pth, plen, "%s/%06llu-%s-grid.png", im->out, (unsigned long long)pd->line_id, cname);
        if (i < n) /* (C, H, W) to interleaved 8-bit rows */
            for (int64_t j = 0; j < D; j++) pix[j] = image_to_u8(xs[i * D + (j % C) * H * W + j / C]);
        int rc = i < n ? png_write_nosync(pth, pix, W, H, C, err, sizeof err)
                       : im->grid && n > 1 ? image_write_grid(pth, xs, n, C, H, W, 0, err, sizeof err) : 0;
        if (rc) {
            snprintf(msg, sizeof msg, "writing the images: %.900s", err);
            router_answer(r, pd->line_id, msg, WIRE_STATUS_INTERNAL);
            free(paths);
            free(pix);
            return;
        }
    }
    free(pix);
    int grid = im->grid && n > 1;
    double ms = 1000.0 * (msd_now() - pd->t_in);
    /* sized: every path needs at most plen + 4 (quotes, comma, space), plus the fixed fields */
    size_t cap = (size_t)(n + 1) * (plen * 6 + 4) + 512, len = 0;   /* x6: JSON's \u00XX escapes */
    char *out = msd_malloc(cap), num[64];
    if (im->json) {
        json_t *o = json_pack("{s:I, s:o, s:i, s:o, s:f, s:I}", "line", (json_int_t)pd->line_id, "class",
                              json_text(cname), "class_id", pd->cls, "student", json_text(r->names[k]), "ms",
                              round(ms * 1000) / 1000, "seed", (json_int_t)pd->seed);
        json_t *arr = json_array();
        for (int64_t i = 0; i < n; i++) json_array_append_new(arr, json_text(paths + (size_t)i * plen));
        json_object_set_new(o, "paths", arr);
        if (grid) json_object_set_new(o, "grid", json_text(paths + (size_t)n * plen));
        char *js = json_dump_line(o);
        put(out, cap, &len, "%s", js);
        free(js);
    } else {
        put(out, cap, &len, "%s", cname);
        put(out, cap, &len, " %s", r->names[k]);
        put(out, cap, &len, " %sms", (snprintf(num, sizeof num, "%.1f", ms), num));
        for (int64_t i = 0; i < n; i++) put(out, cap, &len, " %s", paths + (size_t)i * plen);
        if (grid) put(out, cap, &len, " grid %s", paths + (size_t)n * plen);
    }
    router_answer(r, pd->line_id, out, WIRE_STATUS_OK);
    im->served++;
    im->images += n;
    free(out);
    free(paths);
}

static int images_setup(Router *r) {
    static Images im;
    char err[1024];
    int K = 0;
    PartitionNames pn = {DATASET_FMNIST_CLASSES, dataset_fmnist_names};
    if (partition_read_checked(iopt.part, im.assign, DATASET_FMNIST_CLASSES, 0, dataset_fmnist_names, &K,
                               partition_lookup_names, &pn, err, sizeof err))
        return msd_fail(2, "--partition: %s", err);
    if (K != r->k) return msd_fail(2, "--partition %s has %d students but %d are connected", iopt.part, K, r->k);
    if (fs_mkdir_p(iopt.out, err, sizeof err)) return msd_fail(2, "--out: %s", err);
    im.out = iopt.out;
    im.max_images = iopt.max_images;
    im.grid = iopt.grid;
    if (strcmp(iopt.format, "text") && strcmp(iopt.format, "json"))
        return msd_fail(2, "--format %s: expected text or json", iopt.format);
    im.json = !strcmp(iopt.format, "json");
    if (iopt.prompts && strcmp(iopt.prompts, "none")) {
        char dir[2048];
        const char *mdir = iopt.model ? iopt.model : minilm_default_dir(dir, sizeof dir);
        if (!mdir) return msd_fail(2, "--prompts: no encoder folder (give --model DIR or set MSD_MINILM_DIR)");
        const Backend *be = &backend_cpu;
        if (r->p->gpu >= 0 && !(be = proc_gpu(r->p, err, sizeof err))) return msd_fail(2, "%s", err);
        double t0 = msd_now();
        im.ctx = backend_ctx_new(be, iopt.threads);
        if (!(im.tok = tok_load(mdir, err, sizeof err))) return msd_fail(2, "--prompts: the tokenizer: %s", err);
        if (!(im.lm = minilm_load(mdir, be, im.ctx, err, sizeof err))) return msd_fail(2, "--prompts: the encoder: %s", err);
        if (prompt_router_init(&im.pr, iopt.prompts, DATASET_FMNIST_CLASSES, dataset_fmnist_names, im.tok, im.lm, err,
                               sizeof err))
            return msd_fail(2, "--prompts: %s", err);
        log_info("prompt encoder: %d phrasings of %s into %d class prototypes on %s in %.2f s (threshold %.3f)",
                 im.pr.set.np, iopt.prompts, DATASET_FMNIST_CLASSES, be->name, msd_now() - t0, im.pr.threshold);
    }
    r->ext = &im;
    log_info("serving %d students; images to %s, at most %d per line", r->k, im.out, im.max_images);
    return 0;
}

static void images_finish(Router *r) {
    Images *im = r->ext;
    if (!im) return;
    log_info("served %lld lines, %lld images", (long long)im->served, (long long)im->images);
    if (im->encoded)
        log_info("the prompt encoder ran for %lld prompts: %.2f ms each on average (%lld batches)",
                 (long long)im->encoded, 1000.0 * im->encode_s / (double)im->encoded, (long long)im->batches);
    images_uncache(im);
    if (im->tok) {
        prompt_router_free(&im->pr);
        minilm_free(&im->lm);
        tok_free(im->tok);
        backend_ctx_destroy(&im->ctx);
        im->tok = NULL;
    }
}

static const RouterHooks images_hooks = {images_setup,  images_parse,      images_request, images_reply,
                                         images_finish, images_error_line, images_prepare};

int router_run_images(Proc *p) { return router_serve_hooks(p, &images_hooks); }
