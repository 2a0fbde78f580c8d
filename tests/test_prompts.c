/* test_prompts.c: class prototypes and prompt routing (common/text/prompts.h) on
 * pipelines/fmnist.prompts. Checks:
 *  - malformed prompts files (unknown class, empty phrasing, a class without phrasings, a
 *    phrasing twice, a second official name, a bad or second threshold, a line of no known
 *    form, invalid UTF-8) are refused with FILE:LINE and what is wrong; a good one with ids,
 *    any case and comments is read as written (no model needed);
 *  - the prototypes are unit vectors (|norm - 1| <= 1e-5) and each is the renormalised mean of
 *    its class's phrasing embeddings, recomputed here in double (cosine >= 1 - 1e-6);
 *  - every phrasing of the file, held out of its class's prototype (leave-one-out), routes to
 *    its own class for at least 88% of them (measured: 92 of 100; the 8 misses are t-shirt vs
 *    shirt, hoodie vs coat, parka vs pullover, "open-toed summer shoes" vs sneaker, "Trouser"),
 *    and its nearest cosine is at or above the threshold for at least 95% (measured 98);
 *  - direct routing: every class's short name (any case), official name and id (with leading
 *    zeros, white space around) gives that class with score 1; "10", "-1", "7a" are no id;
 *  - the unseen paraphrases of tests/fixtures/prompts_unseen.txt route to their classes with
 *    the full prototypes, at or above the threshold;
 *  - the off-topic prompts of tests/fixtures/prompts_offtopic.txt (not those the threshold was
 *    chosen from) route to no class, with a message naming the best match and its score;
 *  - an empty prompt and invalid UTF-8 are errors, not a class.
 * The model comes from $MSD_MINILM_DIR or ~/.cache/msdpipe/all-minilm-l6-v2 (make deps):
 * absent, the tests that need it SKIP (fail under MSD_REQUIRE_DATA=1). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "check.h"
#include "dataset.h"
#include "minilm.h"
#include "prompts.h"
#include "tokenizer.h"

static char model_dir[4096], prompts_path[1300];
static int have_model;
static Tokenizer *tok;
static MiniLM *lm;
static BackendCtx *ctx;
static PromptRouter R;
static int router_ok;
static const char *const *NAMES = dataset_fmnist_names;
enum { N = DATASET_FMNIST_CLASSES };

/* write text into a temporary file; its path into path (64 bytes) */
static void tmpfile_with(char *path, const char *text) {
    snprintf(path, 64, "/tmp/test_prompts_XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) return;
    size_t len = strlen(text);
    if (write(fd, text, len) != (ssize_t)len) CHECK(0, "write %s", path);
    close(fd);
}

/* a file of 10 classes, each with one phrasing, then more */
static const char *all10 = "tshirt: a\ntrouser: b\npullover: c\ndress: d\ncoat: e\nsandal: f\nshirt: g\nsneaker: h\n"
                           "bag: i\nboot: j\n";

static void refused(const char *what, const char *text, int line, const char *want) {
    char path[64], err[2048] = "", full[4096], loc[128];
    PromptSet ps;
    snprintf(full, sizeof full, "%s%s", all10, text);
    tmpfile_with(path, full);
    int rc = prompts_parse(&ps, path, N, NAMES, err, sizeof err);
    snprintf(loc, sizeof loc, "%s:%d: ", path, line);
    CHECK(rc == -1 && strstr(err, loc) && strstr(err, want), "%s: want -1 and '%s%s', got %d '%s'", what, loc, want,
          rc, err);
    if (rc == 0) prompts_set_free(&ps);
    unlink(path);
}

static void test_parse(void) {
    refused("an unknown class", "purse: a purse\n", 11, "unknown class 'purse' (the classes: 'tshirt' (0), 'trouser' (1),");
    refused("an id out of range", "10: ten\n", 11, "unknown class '10'");
    refused("an empty phrasing", "\n# x\nbag:   # nothing\n", 13, "an empty phrasing for class 'bag' (8)");
    refused("an empty official name", "bag =\n", 11, "an empty official name for class 'bag' (8)");
    refused("a phrasing twice", "bag: a Handbag\nsneaker: A HANDBAG\n", 12,
            "the phrasing 'a Handbag' is already at line 11 (class 'bag')");
    refused("a second official name", "boot = Ankle boot\nboot = Boot\n", 12,
            "a second official name for class 'boot' (9): it is 'Ankle boot'");
    refused("a bad threshold", "threshold 1.5\n", 11, "threshold '1.5': expected a number in [-1, 1]");
    refused("a threshold that is no number", "threshold high\n", 11, "threshold 'high'");
    refused("a second threshold", "threshold 0.3\nthreshold 0.4\n", 12, "a second threshold");
    refused("a line of no known form", "just some words\n", 11, "expected 'CLASS: phrasing'");
    refused("a class name of two words", "ankle boot: x\n", 11, "unknown class 'ankle boot'");
    /* a class without phrasings: named, at the last line */
    {
        char path[64], err[2048] = "", loc[128];
        PromptSet ps;
        tmpfile_with(path, "tshirt: a\ntrouser: b\npullover: c\ndress: d\ncoat: e\nsandal: f\nshirt: g\nsneaker: h\n# end\n");
        int rc = prompts_parse(&ps, path, N, NAMES, err, sizeof err);
        snprintf(loc, sizeof loc, "%s:9: at the end: 2 classes without a phrasing", path);
        CHECK(rc == -1 && strstr(err, loc) && strstr(err, "'bag' (8), 'boot' (9)"), "classes without phrasings: got '%s'",
              err);
        if (rc == 0) prompts_set_free(&ps);
        unlink(path);
    }
    /* a good file: ids, any case, comments, official names, threshold */
    char path[64], err[1024] = "";
    PromptSet ps;
    tmpfile_with(path, "# head\nthreshold  0.25 # low\n  7 :  running shoe  \nSNEAKER: a sneaker\nboot = Ankle boot\n"
                       "0: a: tee # with a colon\ntrouser: b\npullover: c\ndress: d\ncoat: e\nsandal: f\nshirt: g\n"
                       "bag: i\n09: j\n");
    CHECK(prompts_parse(&ps, path, N, NAMES, err, sizeof err) == 0, "a good file: %s", err);
    if (!check_cur_failed_) {
        CHECK(ps.np == 12 && fabs(ps.threshold - 0.25) < 1e-12, "np %d (12), threshold %g (0.25)", ps.np, ps.threshold);
        CHECK(ps.cls[0] == 7 && !strcmp(ps.text[0], "running shoe") && ps.line[0] == 3, "'7 :  running shoe': class %d "
              "'%s' line %d", ps.cls[0], ps.text[0], ps.line[0]);
        CHECK(ps.cls[1] == 7 && ps.cls[2] == 9 && !strcmp(ps.text[2], "Ankle boot") && ps.official[9] &&
                  !strcmp(ps.official[9], "Ankle boot"), "SNEAKER and the official name of boot");
        CHECK(ps.cls[3] == 0 && !strcmp(ps.text[3], "a: tee"), "'0: a: tee': class %d '%s'", ps.cls[3], ps.text[3]);
        CHECK(ps.cls[11] == 9 && ps.count[7] == 2 && ps.count[9] == 2 && ps.count[0] == 1, "counts");
        prompts_set_free(&ps);
    }
    unlink(path);
    CHECK(prompts_parse(&ps, "/nonexistent/x.prompts", N, NAMES, err, sizeof err) == -1 &&
              strstr(err, "/nonexistent/x.prompts: No such file"), "a missing file: got '%s'", err);
}

/* ends the calling test: a skip without the model, a failure when the router did not load */
#define NEED_ROUTER()                                                                                  \
    do {                                                                                               \
        if (!have_model) SKIP_MISSING_DATA("no model at %s (make deps, or set MSD_MINILM_DIR)", model_dir); \
        REQUIRE(router_ok, "the router did not load");                                                 \
    } while (0)

static void test_prototypes(void) {
    NEED_ROUTER();
    const PromptSet *ps = &R.set;
    CHECK(ps->n == N && ps->np >= 8 * N, "%d classes, %d phrasings (at least 8 per class expected)", ps->n, ps->np);
    for (int c = 0; c < N; c++) CHECK(ps->count[c] >= 8 && ps->count[c] <= 15, "class %s: %d phrasings", NAMES[c], ps->count[c]);
    double worst_norm = 0, worst_cos = 1;
    int wn = 0, wc = 0;
    for (int c = 0; c < N; c++) {
        double s = 0, mean[MINILM_DIM] = {0}, mm = 0, dot = 0;
        for (int j = 0; j < MINILM_DIM; j++) s += (double)R.proto[c * MINILM_DIM + j] * R.proto[c * MINILM_DIM + j];
        if (fabs(sqrt(s) - 1) > worst_norm) worst_norm = fabs(sqrt(s) - 1), wn = c;
        for (int i = 0; i < ps->np; i++)
            if (ps->cls[i] == c)
                for (int j = 0; j < MINILM_DIM; j++) mean[j] += R.emb[(size_t)i * MINILM_DIM + j] / ps->count[c];
        for (int j = 0; j < MINILM_DIM; j++) mm += mean[j] * mean[j], dot += mean[j] * R.proto[c * MINILM_DIM + j];
        double cs = dot / sqrt(mm * s + 1e-300);
        if (cs < worst_cos) worst_cos = cs, wc = c;
    }
    /* leave-one-out (what test_leave_one_out relies on): leaving phrasing 0 out changes its
     * class's prototype to the renormalised mean of the others and no other class's */
    float *loo = malloc(sizeof(float) * N * MINILM_DIM);
    prompts_prototypes(loo, R.emb, ps->cls, ps->np, N, 0);
    double others[MINILM_DIM] = {0}, oo = 0, od = 0, ll = 0, moved = 0;
    for (int i = 1; i < ps->np; i++)
        if (ps->cls[i] == ps->cls[0])
            for (int j = 0; j < MINILM_DIM; j++) others[j] += R.emb[(size_t)i * MINILM_DIM + j];
    for (int j = 0; j < MINILM_DIM; j++) {
        double l = loo[ps->cls[0] * MINILM_DIM + j];
        oo += others[j] * others[j], od += others[j] * l, ll += l * l;
    }
    for (int c = 0; c < N; c++)
        for (int j = 0; j < MINILM_DIM && c != ps->cls[0]; j++)
            moved = fmax(moved, fabs((double)loo[c * MINILM_DIM + j] - R.proto[c * MINILM_DIM + j]));
    free(loo);
    CHECK(od / sqrt(oo * ll + 1e-300) >= 1 - 1e-6 && fabs(sqrt(ll) - 1) <= 1e-5,
          "leaving '%s' out: its class's prototype is not the mean of the others (cosine %.8f, norm %.6f)", ps->text[0],
          od / sqrt(oo * ll + 1e-300), sqrt(ll));
    CHECK(moved <= 1e-7, "leaving '%s' out changed another class's prototype by %.3e", ps->text[0], moved);
    printf("  prototypes: worst |norm - 1| %.2e (%s), worst cosine with the phrasings' mean 1 - %.2e (%s)\n",
           worst_norm, NAMES[wn], 1 - worst_cos, NAMES[wc]);
    CHECK(worst_norm <= 1e-5, "prototype %s has norm 1 %+.3e, not a unit vector (tolerance 1e-5)", NAMES[wn], worst_norm);
    CHECK(worst_cos >= 1 - 1e-6, "prototype %s is not the mean of its phrasings: cosine %.8f (>= 1 - 1e-6)", NAMES[wc],
          worst_cos);
}

static void test_leave_one_out(void) {
    NEED_ROUTER();
    const PromptSet *ps = &R.set;
    float *loo = malloc(sizeof(float) * N * MINILM_DIM);
    int right = 0, above = 0, worst = -1;
    double worst_s = 2;
    for (int i = 0; i < ps->np; i++) {
        int best;
        double s;
        prompts_prototypes(loo, R.emb, ps->cls, ps->np, N, i);
        prompts_nearest(loo, N, R.emb + (size_t)i * MINILM_DIM, &best, &s);
        right += best == ps->cls[i];
        above += s >= R.threshold;
        if (s < worst_s) worst_s = s, worst = i;
        if (best != ps->cls[i]) printf("  held out: '%s' (%s) -> %s at %.3f\n", ps->text[i], NAMES[ps->cls[i]], NAMES[best], s);
    }
    free(loo);
    printf("  leave-one-out: %d of %d phrasings to their own class, %d at or above the threshold %.2f (lowest %.3f: '%s')\n",
           right, ps->np, above, R.threshold, worst_s, ps->text[worst]);
    CHECK(right * 100 >= 88 * ps->np, "leave-one-out: %d of %d to their own class, below 88%%", right, ps->np);
    CHECK(above * 100 >= 95 * ps->np, "leave-one-out: %d of %d at or above the threshold, below 95%%", above, ps->np);
}

static void expect_direct(const char *text, int want) {
    int cls, best;
    double s, bs;
    char err[512] = "";
    int rc = prompt_classify(&R, text, strlen(text), &cls, &s, &best, &bs, err, sizeof err);
    CHECK(rc == PROMPT_DIRECT && cls == want && best == want && s == 1 && bs == 1,
          "'%s': want direct class %d, got rc %d class %d score %.3f (%s)", text, want, rc, cls, s, err);
}

static void test_direct(void) {
    NEED_ROUTER();
    for (int c = 0; c < N; c++) {
        char buf[64];
        expect_direct(NAMES[c], c);
        snprintf(buf, sizeof buf, "%d", c);
        expect_direct(buf, c);
        snprintf(buf, sizeof buf, " 00%d\t", c);
        expect_direct(buf, c);
        snprintf(buf, sizeof buf, "%s", NAMES[c]);
        for (char *p = buf; *p; p++) *p = (char)(*p - 32 * (*p >= 'a' && *p <= 'z'));
        expect_direct(buf, c);
        CHECK(R.set.official[c] != NULL, "class %s has no official name in the file", NAMES[c]);
        if (R.set.official[c]) expect_direct(R.set.official[c], c);
    }
    expect_direct("  ankle BOOT \n", 9);
    expect_direct("t-shirt/TOP", 0);
    const char *no[] = {"10", "-1", "7a", "sneakers", "a sneaker", "1 2", "+3"};
    for (int i = 0; i < (int)(sizeof no / sizeof *no); i++)
        CHECK(prompt_direct(&R, no[i], strlen(no[i])) == -1, "'%s' is not a direct name, got class %d", no[i],
              prompt_direct(&R, no[i], strlen(no[i])));
}

static void test_unseen(void) {
    NEED_ROUTER();
    PromptSet u;
    char err[1024];
    REQUIRE(prompts_parse(&u, check_fixture("prompts_unseen.txt"), N, NAMES, err, sizeof err) == 0, "%s", err);
    int right = 0;
    double lowest = 2;
    for (int i = 0; i < u.np; i++) {
        int cls, best;
        double s, bs;
        int rc = prompt_classify(&R, u.text[i], strlen(u.text[i]), &cls, &s, &best, &bs, err, sizeof err);
        CHECK(rc == PROMPT_ROUTED && cls == u.cls[i], "'%s': want %s, got rc %d class %s, best %s at %.3f (%s)", u.text[i],
              NAMES[u.cls[i]], rc, cls >= 0 ? NAMES[cls] : "none", best >= 0 ? NAMES[best] : "none", bs,
              rc == PROMPT_NO_CLASS ? err : "");
        right += rc == PROMPT_ROUTED && cls == u.cls[i];
        if (bs < lowest) lowest = bs;
    }
    printf("  unseen paraphrases: %d of %d routed right (lowest score %.3f)\n", right, u.np, lowest);
    CHECK(u.np >= 20, "only %d unseen paraphrases", u.np);
    prompts_set_free(&u);
}

static void test_offtopic(void) {
    NEED_ROUTER();
    FILE *f = fopen(check_fixture("prompts_offtopic.txt"), "r");
    REQUIRE(f, "cannot open %s", check_fixture("prompts_offtopic.txt"));
    char line[512], err[512], want[64];
    int n = 0;
    double highest = -2;
    snprintf(want, sizeof want, "below the threshold %.3f", R.threshold);
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        line[strcspn(line, "\n")] = 0;
        int cls, best;
        double s, bs;
        err[0] = 0;
        int rc = prompt_classify(&R, line, strlen(line), &cls, &s, &best, &bs, err, sizeof err);
        char name[128];
        snprintf(name, sizeof name, "the best match is '%s' (%d) at cosine %.3f", best >= 0 ? NAMES[best] : "?", best, bs);
        CHECK(rc == PROMPT_NO_CLASS && cls == -1 && best >= 0 && bs < R.threshold && strstr(err, name) && strstr(err, want),
              "off-topic '%s': want no class, got rc %d class %d, best %d at %.3f ('%s')", line, rc, cls, best, bs, err);
        if (bs > highest) highest = bs;
        n++;
    }
    fclose(f);
    printf("  off-topic: %d prompts, highest score %.3f (threshold %.3f)\n", n, highest, R.threshold);
    CHECK(n >= 20, "only %d off-topic prompts", n);
}

static void test_bad_prompts(void) {
    NEED_ROUTER();
    int cls, best;
    double s, bs;
    char err[512] = "";
    CHECK(prompt_classify(&R, " \t ", 3, &cls, &s, &best, &bs, err, sizeof err) == -1 && cls == -1 &&
              strstr(err, "an empty prompt"), "an empty prompt: got '%s'", err);
    CHECK(prompt_classify(&R, "a \xff shoe", 8, &cls, &s, &best, &bs, err, sizeof err) == -1 && cls == -1 &&
              strstr(err, "invalid UTF-8 at byte 2"), "invalid UTF-8: got '%s'", err);
    /* a prompts file with a phrasing the tokenizer refuses: FILE:LINE */
    char path[64], text[1024];
    snprintf(text, sizeof text, "%s# x\nbag: a \xc3 bag\n", all10);
    tmpfile_with(path, text);
    PromptRouter r2;
    char loc[128];
    snprintf(loc, sizeof loc, "%s:12: tokenizer: invalid UTF-8", path);
    CHECK(prompt_router_init(&r2, path, N, NAMES, tok, lm, err, sizeof err) == -1 && strstr(err, loc),
          "a phrasing of invalid UTF-8: want '%s', got '%s'", loc, err);
    unlink(path);
}

/* prompt_classify_many (the router's batch of waiting lines) answers each prompt as
 * prompt_classify does alone: the unseen paraphrases, off-topic ones, a direct name, an empty
 * prompt and one the tokenizer refuses in one batch (which then falls back to one by one),
 * and the same batch without the refused one (embedded together). */
static void test_many(void) {
    NEED_ROUTER();
    PromptSet u;
    char err[1024];
    REQUIRE(prompts_parse(&u, check_fixture("prompts_unseen.txt"), N, NAMES, err, sizeof err) == 0, "%s", err);
    enum { M = 48 };
    const char *texts[M];
    size_t lens[M];
    int n = 0;
    static const char *const extra[] = {"something about tax law", "a quiet evening by the sea", "sneaker", "  ", "a \xff shoe"};
    for (int i = 0; i < u.np && n < M - 5; i++) texts[n++] = u.text[i];
    for (int i = 0; i < 5; i++) texts[n++] = extra[i];
    for (int i = 0; i < n; i++) lens[i] = strlen(texts[i]);
    PromptClass many[M];
    for (int pass = 0; pass < 2; pass++) {
        int m = pass == 0 ? n : n - 1;   /* pass 1: without the refused text, so the batch is embedded together */
        prompt_classify_many(&R, texts, lens, m, many);
        int same = 0;
        double worst = 0;
        for (int i = 0; i < m; i++) {
            int cls, best;
            double sc, bs;
            char e1[512] = "";
            int rc = prompt_classify(&R, texts[i], lens[i], &cls, &sc, &best, &bs, e1, sizeof e1);
            double d = isnan(bs) && isnan(many[i].best_score) ? 0 : fabs(bs - many[i].best_score);
            if (d > worst) worst = d;
            int ok = rc == many[i].rc && cls == many[i].cls && best == many[i].best && d < 1e-5 &&
                     (rc == PROMPT_ROUTED || rc == PROMPT_DIRECT || strcmp(e1, many[i].err) == 0);
            CHECK(ok, "pass %d '%s': alone rc %d class %d best %d %.6f '%s'; in the batch rc %d class %d best %d %.6f '%s'",
                  pass, texts[i], rc, cls, best, bs, e1, many[i].rc, many[i].cls, many[i].best, many[i].best_score,
                  many[i].err);
            same += ok;
        }
        printf("  a batch of %d prompts: %d answered as alone (largest score difference %.2g)\n", m, same, worst);
    }
    prompts_set_free(&u);
}

int main(int argc, char **argv) {
    (void)argc;
    check_find_fixtures(argv[0]);
    snprintf(prompts_path, sizeof prompts_path, "%s/../../pipelines/fmnist.prompts", check_fixture_dir_);
    char file[4200], err[1024] = "";
    if (minilm_default_dir(model_dir, sizeof model_dir)) {
        snprintf(file, sizeof file, "%s/model.safetensors", model_dir);
        have_model = access(file, R_OK) == 0;
    }
    if (have_model) {
        ctx = backend_ctx_new(&backend_cpu, 1);
        tok = tok_load(model_dir, err, sizeof err);
        lm = tok ? minilm_load(model_dir, &backend_cpu, ctx, err, sizeof err) : NULL;
        router_ok = lm && prompt_router_init(&R, prompts_path, N, NAMES, tok, lm, err, sizeof err) == 0;
        if (!router_ok) printf("  the router: %s\n", err);
    }
    TEST_RUN(test_parse);
    TEST_RUN(test_prototypes);
    TEST_RUN(test_leave_one_out);
    TEST_RUN(test_direct);
    TEST_RUN(test_unseen);
    TEST_RUN(test_offtopic);
    TEST_RUN(test_bad_prompts);
    TEST_RUN(test_many);
    if (router_ok) prompt_router_free(&R);
    minilm_free(&lm);
    tok_free(tok);
    if (ctx) backend_ctx_destroy(&ctx);
    return TEST_END();
}
