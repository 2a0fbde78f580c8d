/* fuzz_tokenizer.c: libFuzzer target for the prompt tokenizer (common/text/tokenizer.c) with the
 * real vocabulary: any bytes are either refused as invalid UTF-8 (and then really are not
 * UTF-8) or give [CLS] ... [SEP], at most max_seq_length ids, every id in the vocabulary. The
 * model folder is read once ($MSD_MINILM_DIR, else ${MSD_CACHE:-$HOME/.cache/msdpipe}/
 * all-minilm-l6-v2, as tests/test_tokenizer.c); without it every input is a no-op, so the
 * target still builds and runs cleanly. Built by `make fuzz`, run by tools/fuzz-run. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "log.h"
#include "minilm.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static Tokenizer *load_once(void) {
    static int tried;
    static Tokenizer *t;
    if (tried) return t;
    tried = 1;
    char dir[2048], err[1024];
    if (!minilm_default_dir(dir, sizeof dir)) snprintf(dir, sizeof dir, "./all-minilm-l6-v2");
    t = tok_load(dir, err, sizeof err);
    if (!t) fprintf(stderr, "fuzz_tokenizer: no tokenizer, every input is a no-op: %s\n", err);
    return t;
}

static int valid_utf8(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n;) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate(p + i, (utf8proc_ssize_t)(n - i), &c);
        if (k <= 0) return 0;
        i += (size_t)k;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Tokenizer *t = load_once();
    if (!t) return 0;
    static int32_t ids[1 << 16];
    static char err[512];
    int max = tok_max_len(t), n = -1;
    MSD_CHECK(max >= 2 && max <= (int)(sizeof ids / sizeof *ids));
    err[0] = 0;
    if (tok_encode(t, (const char *)data, size, ids, max, &n, err, sizeof err) != 0) {
        MSD_CHECK(strstr(err, "invalid UTF-8 at byte") && !valid_utf8(data, size));
        return 0;
    }
    MSD_CHECK(valid_utf8(data, size));
    MSD_CHECK(n >= 2 && n <= max && ids[0] == tok_cls_id(t) && ids[n - 1] == tok_sep_id(t));
    for (int i = 0; i < n; i++) MSD_CHECK(ids[i] >= 0 && ids[i] < tok_vocab_size(t));
    return 0;
}
