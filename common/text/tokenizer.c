/* tokenizer.c: the BERT WordPiece tokenizer of tokenizer.h, read from tokenizer.json (with the
 * strict reader of common/nn/json.h) and sentence_bert_config.json, Unicode through utf8proc.
 * Each step follows the Hugging Face `tokenizers` implementation it replaces (named at each
 * function); tests/test_tokenizer.c holds the two to the same ids. */
#include "tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "json.h"
#include "log.h"

#define TOK_MAX_FILE (64u << 20) /* tokenizer.json is 466 KB; anything near this is not one */
#define TOK_JSON_DEPTH 16
#define TOK_MAX_ADDED 256
#define TOK_MAX_SEQ (1 << 16)
#define TOK_MAX_PREFIX 16

typedef struct {
    char *s;
    size_t len;
    int32_t id;
} AddedTok;

struct Tokenizer {
    char **keys; /* vocabulary: open addressing, cap a power of two, keys[i] NULL when empty */
    uint32_t *klen;
    int32_t *vals;
    size_t cap;
    int vocab_size;
    int32_t unk_id, cls_id, sep_id;
    char prefix[TOK_MAX_PREFIX];
    size_t prefix_len;
    int max_chars;
    int clean_text, chinese, strip_accents, lowercase;
    AddedTok added[TOK_MAX_ADDED];
    int nadded;
    int max_len;
};

/* ---- vocabulary ------------------------------------------------------------------------ */

static uint64_t fnv1a(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

/* slot of key, or of the empty slot where it would go */
static size_t vocab_slot(const Tokenizer *t, const char *s, size_t n) {
    size_t i = (size_t)fnv1a(s, n) & (t->cap - 1);
    while (t->keys[i] && !(t->klen[i] == n && memcmp(t->keys[i], s, n) == 0)) i = (i + 1) & (t->cap - 1);
    return i;
}

static int32_t vocab_find(const Tokenizer *t, const char *s, size_t n) {
    size_t i = vocab_slot(t, s, n);
    return t->keys[i] ? t->vals[i] : -1;
}

/* ---- loading --------------------------------------------------------------------------- */

static unsigned char *read_all(const char *path, size_t *len, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        msd_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    unsigned char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            if (cap >= TOK_MAX_FILE) {
                msd_errf(err, errlen, "%s: larger than %u bytes: not a tokenizer file", path, TOK_MAX_FILE);
                free(buf);
                fclose(f);
                return NULL;
            }
            cap = cap ? 2 * cap : 1 << 16;
            unsigned char *nb = realloc(buf, cap);
            if (!nb) msd_die("out of memory reading %s", path);
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        msd_errf(err, errlen, "%s: read error", path);
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

typedef struct {
    const char *path;
    const unsigned char *text; /* the file, for the value of a JSON_BOOL (json.h keeps only pos) */
    char *err;
    size_t errlen;
} Ctx;

static const JsonValue *jfield(const JsonValue *obj, const char *key) {
    if (!obj || obj->type != JSON_OBJ) return NULL;
    int i = json_get(obj, key);
    return i < 0 ? NULL : &obj->items[i];
}

static int want_obj(Ctx *c, const JsonValue *v, const char *what) {
    if (!v || v->type != JSON_OBJ) return msd_errf(c->err, c->errlen, "%s: %s is missing or not an object", c->path, what);
    return 0;
}

static int want_str(Ctx *c, const JsonValue *obj, const char *key, const char *what, const char **out) {
    const JsonValue *v = jfield(obj, key);
    if (!v || v->type != JSON_STR) return msd_errf(c->err, c->errlen, "%s: %s.%s is missing or not a string", c->path, what, key);
    *out = v->s;
    return 0;
}

/* "type" of obj must be type */
static int want_type(Ctx *c, const JsonValue *obj, const char *what, const char *type) {
    const char *s = "";
    if (want_obj(c, obj, what) || want_str(c, obj, "type", what, &s)) return -1;
    if (strcmp(s, type) != 0)
        return msd_errf(c->err, c->errlen, "%s: %s is \"%s\": only \"%s\" is supported", c->path, what, s, type);
    return 0;
}

/* a bool field: 1 or 0; null gives dflt when dflt >= 0; -1 with a message otherwise */
static int want_bool(Ctx *c, const JsonValue *obj, const char *key, const char *what, int dflt) {
    const JsonValue *v = jfield(obj, key);
    if (v && v->type == JSON_NULL && dflt >= 0) return dflt;
    if (!v || v->type != JSON_BOOL)
        return msd_errf(c->err, c->errlen, "%s: %s.%s is missing or not true/false", c->path, what, key);
    return c->text[v->pos] == 't';
}

static int want_uint(Ctx *c, const JsonValue *obj, const char *key, const char *what, uint64_t lo, uint64_t hi,
                     uint64_t *out) {
    const JsonValue *v = jfield(obj, key);
    if (!v || v->type != JSON_NUM || !v->is_uint || v->u < lo || v->u > hi)
        return msd_errf(c->err, c->errlen, "%s: %s.%s is missing or not an integer in [%llu, %llu]", c->path, what, key,
                        (unsigned long long)lo, (unsigned long long)hi);
    *out = v->u;
    return 0;
}

static int load_vocab(Tokenizer *t, Ctx *c, JsonValue *vocab) {
    if (want_obj(c, vocab, "model.vocab")) return -1;
    if (vocab->n < 1) return msd_errf(c->err, c->errlen, "%s: model.vocab is empty", c->path);
    t->cap = 1;
    while (t->cap < 2 * (size_t)vocab->n) t->cap *= 2;
    t->keys = calloc(t->cap, sizeof *t->keys);
    t->klen = calloc(t->cap, sizeof *t->klen);
    t->vals = calloc(t->cap, sizeof *t->vals);
    if (!t->keys || !t->klen || !t->vals) msd_die("out of memory loading %s", c->path);
    for (int i = 0; i < vocab->n; i++) {
        const JsonValue *v = &vocab->items[i];
        if (v->type != JSON_NUM || !v->is_uint || v->u >= INT32_MAX)
            return msd_errf(c->err, c->errlen, "%s: model.vocab[\"%s\"] is not an id in [0, %d)", c->path, vocab->keys[i],
                            INT32_MAX);
        size_t n = strlen(vocab->keys[i]);
        size_t s = vocab_slot(t, vocab->keys[i], n);
        if (t->keys[s]) return msd_errf(c->err, c->errlen, "%s: model.vocab has \"%s\" twice", c->path, vocab->keys[i]);
        t->keys[s] = vocab->keys[i]; /* taken over from the JSON tree */
        vocab->keys[i] = NULL;
        t->klen[s] = (uint32_t)n;
        t->vals[s] = (int32_t)v->u;
        if ((int)v->u + 1 > t->vocab_size) t->vocab_size = (int)v->u + 1;
    }
    return 0;
}

/* the id of a special token named in the post-processor's template */
static int special_id(Tokenizer *t, Ctx *c, const JsonValue *pp, const JsonValue *item, int32_t *id) {
    const JsonValue *st = jfield(item, "SpecialToken");
    const char *name = "";
    if (want_obj(c, st, "post_processor.single[]SpecialToken") ||
        want_str(c, st, "id", "post_processor.single[].SpecialToken", &name))
        return -1;
    const JsonValue *def = jfield(jfield(pp, "special_tokens"), name);
    const JsonValue *ids = jfield(def, "ids");
    if (!ids || ids->type != JSON_ARR || ids->n != 1 || ids->items[0].type != JSON_NUM || !ids->items[0].is_uint ||
        ids->items[0].u >= (uint64_t)t->vocab_size)
        return msd_errf(c->err, c->errlen, "%s: post_processor.special_tokens[\"%s\"].ids is not one id below %d", c->path,
                        name, t->vocab_size);
    *id = (int32_t)ids->items[0].u;
    return 0;
}

static int load_tokenizer_json(Tokenizer *t, Ctx *c, JsonValue *root) {
    if (want_obj(c, root, "the file")) return -1;
    /* model: WordPiece */
    JsonValue *model = (JsonValue *)jfield(root, "model");
    const char *unk = "", *prefix = "";
    uint64_t u = 0;
    if (want_type(c, model, "model", "WordPiece") || load_vocab(t, c, (JsonValue *)jfield(model, "vocab")) ||
        want_str(c, model, "unk_token", "model", &unk) ||
        want_str(c, model, "continuing_subword_prefix", "model", &prefix) ||
        want_uint(c, model, "max_input_chars_per_word", "model", 1, 1u << 20, &u))
        return -1;
    t->max_chars = (int)u;
    t->unk_id = vocab_find(t, unk, strlen(unk));
    if (t->unk_id < 0) return msd_errf(c->err, c->errlen, "%s: model.unk_token \"%s\" is not in the vocabulary", c->path, unk);
    t->prefix_len = strlen(prefix);
    if (t->prefix_len >= TOK_MAX_PREFIX)
        return msd_errf(c->err, c->errlen, "%s: model.continuing_subword_prefix is longer than %d bytes", c->path,
                        TOK_MAX_PREFIX - 1);
    memcpy(t->prefix, prefix, t->prefix_len);

    /* normalizer: BertNormalizer; strip_accents null means "as lowercase" (tokenizers' BertNormalizer) */
    const JsonValue *norm = jfield(root, "normalizer");
    if (want_type(c, norm, "normalizer", "BertNormalizer")) return -1;
    if ((t->clean_text = want_bool(c, norm, "clean_text", "normalizer", -1)) < 0 ||
        (t->chinese = want_bool(c, norm, "handle_chinese_chars", "normalizer", -1)) < 0 ||
        (t->lowercase = want_bool(c, norm, "lowercase", "normalizer", -1)) < 0 ||
        (t->strip_accents = want_bool(c, norm, "strip_accents", "normalizer", t->lowercase)) < 0)
        return -1;

    if (want_type(c, jfield(root, "pre_tokenizer"), "pre_tokenizer", "BertPreTokenizer")) return -1;

    /* post_processor: [CLS] $A [SEP] */
    const JsonValue *pp = jfield(root, "post_processor");
    if (want_type(c, pp, "post_processor", "TemplateProcessing")) return -1;
    const JsonValue *single = jfield(pp, "single");
    const JsonValue *seq = single && single->type == JSON_ARR && single->n == 3 ? jfield(&single->items[1], "Sequence") : NULL;
    const char *a = "";
    if (!seq || want_str(c, seq, "id", "post_processor.single[1].Sequence", &a) || strcmp(a, "A") != 0)
        return msd_errf(c->err, c->errlen,
                        "%s: post_processor.single is not [SpecialToken, Sequence A, SpecialToken]: not supported", c->path);
    if (special_id(t, c, pp, &single->items[0], &t->cls_id) || special_id(t, c, pp, &single->items[2], &t->sep_id))
        return -1;

    /* added tokens: matched on the raw text; only the plain kind (what this file has) */
    const JsonValue *added = jfield(root, "added_tokens");
    if (!added || added->type != JSON_ARR)
        return msd_errf(c->err, c->errlen, "%s: added_tokens is missing or not an array", c->path);
    if (added->n > TOK_MAX_ADDED)
        return msd_errf(c->err, c->errlen, "%s: more than %d added_tokens", c->path, TOK_MAX_ADDED);
    for (int i = 0; i < added->n; i++) {
        const JsonValue *at = &added->items[i];
        const char *content = "";
        if (want_obj(c, at, "added_tokens[]") || want_str(c, at, "content", "added_tokens[]", &content) ||
            want_uint(c, at, "id", "added_tokens[]", 0, (uint64_t)t->vocab_size - 1, &u))
            return -1;
        static const char *const flags[] = {"normalized", "lstrip", "rstrip", "single_word"};
        for (int f = 0; f < 4; f++) {
            int b = want_bool(c, at, flags[f], "added_tokens[]", -1);
            if (b < 0) return -1;
            if (b)
                return msd_errf(c->err, c->errlen, "%s: added token \"%s\" has %s true: not supported", c->path, content,
                                flags[f]);
        }
        if (!*content) return msd_errf(c->err, c->errlen, "%s: an added token is empty", c->path);
        AddedTok *d = &t->added[t->nadded++];
        d->len = strlen(content);
        d->s = msd_malloc(d->len + 1);
        memcpy(d->s, content, d->len + 1);
        d->id = (int32_t)u;
    }
    return 0;
}

static int load_json(const char *path, JsonValue *root, unsigned char **text, char *err, size_t errlen) {
    size_t len;
    *text = read_all(path, &len, err, errlen);
    if (!*text) return -1;
    if (json_parse(root, *text, len, TOK_JSON_DEPTH, path, err, errlen)) {
        json_free(root);
        free(*text);
        *text = NULL;
        return -1;
    }
    return 0;
}

Tokenizer *tok_load(const char *dir, char *err, size_t errlen) {
    Tokenizer *t = calloc(1, sizeof *t);
    if (!t) msd_die("out of memory");
    char path[4096];
    JsonValue root;
    unsigned char *text;
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (load_json(path, &root, &text, err, errlen)) goto fail;
    Ctx c = {.path = path, .text = text, .err = err, .errlen = errlen};
    int rc = load_tokenizer_json(t, &c, &root);
    json_free(&root);
    free(text);
    if (rc) goto fail;

    /* sentence-transformers' settings: max_seq_length is the truncation the model sees */
    snprintf(path, sizeof path, "%s/sentence_bert_config.json", dir);
    if (load_json(path, &root, &text, err, errlen)) goto fail;
    c.text = text;
    uint64_t u = 0;
    rc = want_uint(&c, &root, "max_seq_length", "the file", 2, TOK_MAX_SEQ, &u);
    const JsonValue *dlc = jfield(&root, "do_lower_case");
    if (!rc && dlc && !(dlc->type == JSON_BOOL && text[dlc->pos] == 'f'))
        rc = msd_errf(err, errlen, "%s: do_lower_case is not false: not supported", path);
    json_free(&root);
    free(text);
    if (rc) goto fail;
    t->max_len = (int)u;
    return t;
fail:
    tok_free(t);
    return NULL;
}

void tok_free(Tokenizer *t) {
    if (!t) return;
    for (size_t i = 0; t->keys && i < t->cap; i++) free(t->keys[i]);
    free(t->keys);
    free(t->klen);
    free(t->vals);
    for (int i = 0; i < t->nadded; i++) free(t->added[i].s);
    free(t);
}

int tok_max_len(const Tokenizer *t) { return t->max_len; }
int tok_vocab_size(const Tokenizer *t) { return t->vocab_size; }
int32_t tok_cls_id(const Tokenizer *t) { return t->cls_id; }
int32_t tok_sep_id(const Tokenizer *t) { return t->sep_id; }

/* ---- character classes (tokenizers/src/normalizers/bert.rs, pre_tokenizers/bert.rs) ------ */

/* Rust's char::is_whitespace: the Unicode White_Space property */
static int is_ws(int32_t c) {
    if ((c >= 9 && c <= 13) || c == 0x85) return 1;
    utf8proc_category_t k = utf8proc_category(c);
    return k == UTF8PROC_CATEGORY_ZS || k == UTF8PROC_CATEGORY_ZL || k == UTF8PROC_CATEGORY_ZP;
}

/* bert.rs is_control: general category C* except \t \n \r; unassigned (Cn) code points are
 * kept (what `tokenizers` does: tests/tok_ref.py has U+0378) */
static int is_control(int32_t c) {
    if (c == '\t' || c == '\n' || c == '\r') return 0;
    utf8proc_category_t k = utf8proc_category(c);
    return k == UTF8PROC_CATEGORY_CC || k == UTF8PROC_CATEGORY_CF || k == UTF8PROC_CATEGORY_CO ||
           k == UTF8PROC_CATEGORY_CS;
}

/* bert.rs is_chinese_char: the CJK ideograph blocks, as `tokenizers` lists them */
static int is_chinese(int32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/* is_bert_punc: ASCII punctuation or Unicode P* */
static int is_punct(int32_t c) {
    if (c < 128) return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
    utf8proc_category_t k = utf8proc_category(c);
    return k == UTF8PROC_CATEGORY_PC || k == UTF8PROC_CATEGORY_PD || k == UTF8PROC_CATEGORY_PS ||
           k == UTF8PROC_CATEGORY_PE || k == UTF8PROC_CATEGORY_PI || k == UTF8PROC_CATEGORY_PF ||
           k == UTF8PROC_CATEGORY_PO;
}

/* ---- encoding -------------------------------------------------------------------------- */

typedef struct {
    int32_t *ids; /* content ids (without [CLS]/[SEP]) */
    int n, limit;
    int32_t *pieces; /* one word's pieces */
    char *key;       /* prefix + one word's UTF-8 */
    size_t *off;     /* off[k]: byte offset of the word's character k in key */
} Out;

static int push(Out *o, int32_t id) {
    if (o->n < o->limit) o->ids[o->n++] = id;
    return o->n >= o->limit; /* full: the rest is truncated away */
}

/* WordPiece on one word (tokenizers/src/models/wordpiece/mod.rs tokenize): 1 when the output is full */
static int wordpiece(const Tokenizer *t, Out *o, const int32_t *w, int m) {
    if (m > t->max_chars) return push(o, t->unk_id);
    /* key = prefix, then the word's UTF-8; off[k] = byte offset of char k in key */
    size_t P = t->prefix_len, *off = o->off;
    memcpy(o->key, t->prefix, P);
    off[0] = P;
    for (int k = 0; k < m; k++) off[k + 1] = off[k] + (size_t)utf8proc_encode_char(w[k], (utf8proc_uint8_t *)o->key + off[k]);
    int np = 0;
    for (int s = 0; s < m;) {
        int32_t id = -1;
        int e = m;
        /* a continuing piece is looked up with the prefix written just before it: the bytes
         * there belong to characters already consumed */
        if (s > 0) memcpy(o->key + off[s] - P, t->prefix, P);
        size_t from = s > 0 ? off[s] - P : off[s];
        for (; e > s; e--)
            if ((id = vocab_find(t, o->key + from, off[e] - from)) >= 0) break;
        if (id < 0) return push(o, t->unk_id);
        o->pieces[np++] = id;
        s = e;
    }
    for (int k = 0; k < np; k++)
        if (push(o, o->pieces[k])) return 1;
    return 0;
}

static int32_t *alloc_cps(size_t n) {
    int32_t *b = malloc((n ? n : 1) * sizeof *b);
    if (!b) msd_die("out of memory tokenizing");
    return b;
}

/* normalise, pre-tokenise and WordPiece text[0, len) (valid UTF-8, no added token inside):
 * 1 when the output is full */
static int encode_segment(const Tokenizer *t, Out *o, const uint8_t *text, size_t len) {
    if (!len) return 0;
    /* clean_text and CJK spacing: at most 3 code points per byte */
    int32_t *a = alloc_cps(3 * len), *b = NULL;
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        utf8proc_int32_t c;
        i += (size_t)utf8proc_iterate(text + i, (utf8proc_ssize_t)(len - i), &c); /* validated by the caller */
        if (t->clean_text) {
            if (c == 0 || c == 0xFFFD || is_control(c)) continue;
            if (is_ws(c)) c = ' ';
        }
        if (t->chinese && is_chinese(c)) {
            a[n++] = ' ';
            a[n++] = c;
            a[n++] = ' ';
        } else
            a[n++] = c;
    }
    if (t->strip_accents && n) {
        /* NFD through utf8proc, then the nonspacing marks (Mn) dropped */
        uint8_t *u = malloc(4 * n);
        if (!u) msd_die("out of memory tokenizing");
        size_t ul = 0;
        for (size_t k = 0; k < n; k++) ul += (size_t)utf8proc_encode_char(a[k], u + ul);
        utf8proc_ssize_t need = utf8proc_decompose(u, (utf8proc_ssize_t)ul, NULL, 0, UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
        if (need < 0) msd_die("utf8proc_decompose: %s", utf8proc_errmsg(need)); /* valid input: cannot fail */
        b = alloc_cps((size_t)need);
        need = utf8proc_decompose(u, (utf8proc_ssize_t)ul, b, need, UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
        if (need < 0) msd_die("utf8proc_decompose: %s", utf8proc_errmsg(need));
        free(u);
        size_t m = 0;
        for (size_t k = 0; k < (size_t)need; k++)
            if (utf8proc_category(b[k]) != UTF8PROC_CATEGORY_MN) b[m++] = b[k];
        free(a);
        a = b;
        n = m;
    }
    if (t->lowercase) {
        /* Rust's char::to_lowercase: utf8proc's simple mapping, save U+0130 whose full lower
         * case is two code points (unreachable after NFD, which splits it first) */
        int32_t *l = alloc_cps(2 * n + 1);
        size_t m = 0;
        for (size_t k = 0; k < n; k++) {
            if (a[k] == 0x130) {
                l[m++] = 'i';
                l[m++] = 0x307;
            } else
                l[m++] = utf8proc_tolower(a[k]);
        }
        free(a);
        a = l;
        n = m;
    }
    /* BertPreTokenizer: white space ends a word, punctuation is a word of its own */
    int full = 0;
    size_t w = 0;
    for (size_t k = 0; k <= n && !full; k++) {
        int ws = k < n && is_ws(a[k]), pu = k < n && is_punct(a[k]);
        if (k == n || ws || pu) {
            if (k > w) full = wordpiece(t, o, a + w, (int)(k - w));
            if (!full && pu) full = wordpiece(t, o, a + k, 1);
            w = k + 1;
        }
    }
    free(a);
    return full;
}

/* an added token at text[i]: the longest that matches, or -1 */
static int added_at(const Tokenizer *t, const char *text, size_t len, size_t i) {
    int best = -1;
    for (int k = 0; k < t->nadded; k++)
        if (t->added[k].len <= len - i && memcmp(text + i, t->added[k].s, t->added[k].len) == 0 &&
            (best < 0 || t->added[k].len > t->added[best].len))
            best = k;
    return best;
}

long utf8_bad_at(const char *text, size_t len) {
    for (size_t i = 0; i < len;) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate((const uint8_t *)text + i, (utf8proc_ssize_t)(len - i), &c);
        if (k <= 0) return (long)i;
        i += (size_t)k;
    }
    return -1;
}

int tok_encode(const Tokenizer *t, const char *text, size_t len, int32_t *ids, int max, int *n, char *err,
               size_t errlen) {
    *n = 0;
    /* the whole text is checked, so whether it is refused does not depend on truncation */
    long bad = utf8_bad_at(text, len);
    if (bad >= 0) return msd_errf(err, errlen, "tokenizer: invalid UTF-8 at byte %ld of %zu", bad, len);
    int32_t *content = alloc_cps((size_t)t->max_len);
    Out o = {.ids = content, .limit = t->max_len - 2, .pieces = alloc_cps((size_t)t->max_chars)};
    o.key = malloc(t->prefix_len + 4 * (size_t)t->max_chars + 1);
    o.off = malloc(((size_t)t->max_chars + 1) * sizeof *o.off);
    if (!o.key || !o.off) msd_die("out of memory tokenizing");
    /* added tokens split the raw text (leftmost match, then longest); the rest is normalised */
    int full = 0;
    size_t seg = 0;
    for (size_t i = 0; i < len && !full;) {
        int a = added_at(t, text, len, i);
        if (a < 0) {
            i++;
            continue;
        }
        full = encode_segment(t, &o, (const uint8_t *)text + seg, i - seg);
        if (!full) full = push(&o, t->added[a].id);
        i += t->added[a].len;
        seg = i;
    }
    if (!full) encode_segment(t, &o, (const uint8_t *)text + seg, len - seg);
    int rc = 0;
    if (o.n + 2 > max)
        rc = msd_errf(err, errlen, "tokenizer: the text needs %d ids, room for %d", o.n + 2, max);
    else {
        ids[0] = t->cls_id;
        memcpy(ids + 1, content, (size_t)o.n * sizeof *ids);
        ids[o.n + 1] = t->sep_id;
        *n = o.n + 2;
    }
    free(content);
    free(o.pieces);
    free(o.key);
    free(o.off);
    return rc;
}
