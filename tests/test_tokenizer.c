/* test_tokenizer.c: common/text/tokenizer.c against the Hugging Face `tokenizers` package.
 *
 *   reference    every text of tests/fixtures/tok_ref.txt (tests/tok_ref.py: `tokenizers` reading
 *                the same tokenizer.json, truncated to sentence_bert_config.json's max_seq_length)
 *                gives exactly the reference's ids, and every byte string the reference's UTF-8
 *                decoder refuses is refused with the byte offset (tolerance: none; the first
 *                mismatch is printed with its line, text and position)
 *   buffer       an output buffer one id short is refused, not overrun
 *   bad files    missing, malformed or unsupported tokenizer files are refused with the path
 *
 * The model folder (tools/fetch-minilm, `make deps`) is $MSD_MINILM_DIR, else
 * ${MSD_CACHE:-$HOME/.cache/msdpipe}/all-minilm-l6-v2; when it is not there the tests that need
 * it skip (fail under MSD_REQUIRE_DATA=1). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "minilm.h"
#include "tokenizer.h"

/* tools/fetch-minilm's folder (minilm_default_dir: $MSD_MINILM_DIR, else the cache) */
static const char *model_dir(void) {
    static char dir[2048];
    return minilm_default_dir(dir, sizeof dir) ? dir : "(no model folder: HOME unset)";
}

/* the model's tokenizer, or NULL after a skip (missing) or a failure (present but refused) */
static Tokenizer *load_model(void) {
    char probe[2200], err[1024];
    snprintf(probe, sizeof probe, "%s/tokenizer.json", model_dir());
    if (access(probe, F_OK) != 0) return NULL;
    Tokenizer *t = tok_load(model_dir(), err, sizeof err);
    CHECK(t != NULL, "%s", err);
    return t;
}

static int unhex(const char *h, size_t n, char *out) {
    for (size_t i = 0; i + 1 < n + 1 && i < n; i += 2) {
        unsigned v;
        if (sscanf(h + i, "%2x", &v) != 1) return -1;
        out[i / 2] = (char)v;
    }
    return 0;
}

static void print_text(const char *s, size_t n) {
    fputs("    text: \"", stdout);
    for (size_t i = 0; i < n && i < 160; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 32 && c < 127 && c != '\\') putchar(c);
        else printf("\\x%02x", c);
    }
    printf("\"%s (%zu bytes)\n", n > 160 ? "..." : "", n);
}

static void test_reference(void) {
    Tokenizer *t = load_model();
    if (!t) {
        if (check_cur_failed_) return;
        SKIP_MISSING_DATA("%s/tokenizer.json not found (make deps: tools/fetch-minilm)", model_dir());
    }
    const char *path = check_fixture("tok_ref.txt");
    FILE *f = fopen(path, "r");
    REQUIRE(f, "%s: cannot open (python3 tests/tok_ref.py writes it)", path);
    static char line[1 << 17], text[1 << 16], err[512];
    static int32_t ids[1 << 12];
    int lineno = 0, texts = 0, invalid = 0, bad = 0;
    const int max = tok_max_len(t);
    CHECK(max == 256, "max_seq_length %d, the model's sentence_bert_config.json says 256", max);
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (line[0] == '#') continue;
        char *tab = strchr(line, '\t');
        REQUIRE(tab && strlen(line) < sizeof line - 1, "%s:%d: not HEX<TAB>IDS", path, lineno);
        size_t hl = (size_t)(tab - line), tl = hl / 2;
        REQUIRE(hl % 2 == 0 && tl < sizeof text && unhex(line, hl, text) == 0, "%s:%d: bad hex", path, lineno);
        int n = -1;
        int rc = tok_encode(t, text, tl, ids, max, &n, err, sizeof err);
        if (strncmp(tab + 1, "invalid", 7) == 0) {
            invalid++;
            if (rc == 0 || !strstr(err, "invalid UTF-8 at byte")) {
                if (!bad++) {
                    CHECK(0, "%s:%d: bytes the reference refuses: rc %d, err '%s'", path, lineno, rc, rc ? err : "");
                    print_text(text, tl);
                }
            }
            continue;
        }
        texts++;
        int32_t want[1 << 12];
        int nw = 0;
        for (char *p = tab + 1, *e; nw < (int)(sizeof want / sizeof *want); p = e) {
            long v = strtol(p, &e, 10);
            if (e == p) break;
            want[nw++] = (int32_t)v;
        }
        int first = -1;
        if (rc != 0) first = 0;
        else
            for (int i = 0; i < (n > nw ? n : nw); i++)
                if (i >= n || i >= nw || ids[i] != want[i]) { first = i; break; }
        if (first >= 0 && !bad++) {
            CHECK(0, "%s:%d: first mismatch at id %d: got %d want %d (%d ids, reference %d)%s%s", path, lineno, first,
                  rc == 0 && first < n ? ids[first] : -1, first < nw ? want[first] : -1, rc == 0 ? n : -1, nw,
                  rc ? ": " : "", rc ? err : "");
            print_text(text, tl);
        }
    }
    fclose(f);
    CHECK(bad == 0, "%d of %d texts differ from the reference (first printed above)", bad, texts + invalid);
    CHECK(texts >= 50 && invalid >= 5, "the fixture has %d texts and %d invalid strings: want >= 50 and >= 5", texts,
          invalid);
    printf("  %d texts and %d invalid byte strings compared, %d differ\n", texts, invalid, bad);
    tok_free(t);
}

static void test_buffer(void) {
    Tokenizer *t = load_model();
    if (!t) {
        if (check_cur_failed_) return;
        SKIP_MISSING_DATA("%s/tokenizer.json not found (make deps: tools/fetch-minilm)", model_dir());
    }
    int32_t ids[8] = {0};
    char err[256];
    int n = -1;
    /* "a pair of sneakers": [CLS] a pair of sneakers [SEP] = 6 ids (7 with "sneakers" split) */
    REQUIRE(tok_encode(t, "a pair of sneakers", 18, ids, 8, &n, err, sizeof err) == 0, "%s", err);
    int need = n;
    ids[need - 1] = -7;
    CHECK(tok_encode(t, "a pair of sneakers", 18, ids, need - 1, &n, err, sizeof err) != 0 && strstr(err, "room for") &&
              ids[need - 1] == -7,
          "buffer one short: err '%s', ids[%d] = %d", err, need - 1, ids[need - 1]);
    tok_free(t);
}

static void write_file(const char *path, const char *s) {
    FILE *f = fopen(path, "w");
    if (f) { fputs(s, f); fclose(f); }
}

static void test_bad_files(void) {
    char dir[] = "/tmp/msd_tok_XXXXXX", p[256], err[1024];
    REQUIRE(mkdtemp(dir), "mkdtemp");
    CHECK(!tok_load(dir, err, sizeof err) && strstr(err, "tokenizer.json") && strstr(err, "cannot open"), "missing: '%s'", err);
    const char *good_norm = "\"normalizer\":{\"type\":\"BertNormalizer\",\"clean_text\":true,\"handle_chinese_chars\":true,"
                            "\"strip_accents\":null,\"lowercase\":true},\"pre_tokenizer\":{\"type\":\"BertPreTokenizer\"},";
    const char *good_pp = "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"[CLS]\"}},"
                          "{\"Sequence\":{\"id\":\"A\"}},{\"SpecialToken\":{\"id\":\"[SEP]\"}}],\"special_tokens\":{"
                          "\"[CLS]\":{\"ids\":[1]},\"[SEP]\":{\"ids\":[2]}}},\"added_tokens\":[],";
    const char *good_model = "\"model\":{\"type\":\"WordPiece\",\"unk_token\":\"[UNK]\",\"continuing_subword_prefix\":\"##\","
                             "\"max_input_chars_per_word\":100,\"vocab\":{\"[UNK]\":0,\"[CLS]\":1,\"[SEP]\":2,\"un\":3,"
                             "\"##aff\":4,\"##able\":5}}";
    struct { const char *what, *json, *want; } cases[] = {
        {"truncated JSON", "{\"model\":", "bad JSON"},
        {"not WordPiece", "{\"model\":{\"type\":\"BPE\"}}", "only \"WordPiece\""},
        {"no normalizer", "{%s%s}", "normalizer"},
        {"no sentence_bert_config.json", "{%s%s%s}", "sentence_bert_config.json: cannot open"},
    };
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        char json[4096];
        if (k == 2) snprintf(json, sizeof json, cases[k].json, good_pp, good_model);
        else if (k == 3) snprintf(json, sizeof json, cases[k].json, good_norm, good_pp, good_model);
        else snprintf(json, sizeof json, "%s", cases[k].json);
        write_file(p, json);
        Tokenizer *t = tok_load(dir, err, sizeof err);
        CHECK(!t && strstr(err, cases[k].want) && strstr(err, dir), "%s: '%s' (want '%s')", cases[k].what, t ? "" : err,
              cases[k].want);
        tok_free(t);
    }
    /* the last tokenizer.json is whole: with a config it loads and splits "Unaffable" */
    char cfg[256];
    snprintf(cfg, sizeof cfg, "%s/sentence_bert_config.json", dir);
    write_file(cfg, "{\"max_seq_length\": 1}");
    CHECK(!tok_load(dir, err, sizeof err) && strstr(err, "max_seq_length"), "max_seq_length 1: '%s'", err);
    write_file(cfg, "{\"max_seq_length\": 4, \"do_lower_case\": false}");
    Tokenizer *t = tok_load(dir, err, sizeof err);
    CHECK(t, "%s", err);
    if (t) {
        int32_t ids[4];
        int n = 0;
        CHECK(tok_encode(t, "Unaffable", 9, ids, 4, &n, err, sizeof err) == 0 && n == 4 && ids[0] == 1 && ids[1] == 3 &&
                  ids[2] == 4 && ids[3] == 2,
              "Unaffable, truncated to 4: n %d ids %d %d %d %d", n, ids[0], ids[1], ids[2], ids[3]);
        tok_free(t);
    }
    unlink(cfg);
    unlink(p);
    rmdir(dir);
}

int main(int argc, char **argv) {
    (void)argc;
    check_find_fixtures(argv[0]);
    TEST_RUN(test_reference);
    TEST_RUN(test_buffer);
    TEST_RUN(test_bad_files);
    return TEST_END();
}
