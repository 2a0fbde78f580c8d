/* tokenizer.h: the WordPiece tokenizer of a BERT sentence encoder (all-MiniLM-L6-v2, the
 * router's prompt encoder: docs/ROUTER.md), read from the model's own files and matching the
 * Hugging Face `tokenizers` package on them token id for token id (tests/test_tokenizer.c):
 *
 *   added tokens   "[CLS]", "[SEP]", ... written in the text are matched first, on the raw text
 *                  (leftmost, then longest), and become their ids, as `tokenizers` does
 *   BertNormalizer clean_text (drop NUL, U+FFFD and characters of category Cc/Cf/Co other than
 *                  \t \n \r; White_Space characters become ' '), CJK ideographs set apart by
 *                  spaces, accent stripping (NFD, then marks of category Mn dropped), lower case
 *   BertPreTokenizer  split at white space (dropped) and at punctuation (ASCII punctuation and
 *                  the Unicode P* categories, each a word of its own)
 *   WordPiece      greedy longest match from the left, "##" on continuing pieces, a word longer
 *                  than max_input_chars_per_word or with no match at some point is [UNK]
 *   post-processor [CLS] ... [SEP]
 *   truncation     to max_seq_length of sentence_bert_config.json, [CLS] and [SEP] included:
 *                  what sentence-transformers feeds the model (tokenizer.json's own truncation
 *                  and padding are not used; see docs/ROUTER.md, "Tokenizer")
 *
 * Unicode properties (categories, NFD, lower case) come from utf8proc. The text must be
 * valid UTF-8: anything else is refused with the byte offset, never replaced. */
#ifndef MSD_TOKENIZER_H
#define MSD_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct Tokenizer Tokenizer;

/* Reads DIR/tokenizer.json and DIR/sentence_bert_config.json (the folder tools/fetch-minilm
 * unpacks). NULL and "PATH: what" in err when a file is missing, malformed, or asks for
 * something this tokenizer does not do. */
Tokenizer *tok_load(const char *dir, char *err, size_t errlen);
void tok_free(Tokenizer *t);

/* Token ids of text[0, len) (need not be NUL-terminated; NUL bytes are text) into ids[0, *n):
 * 0, or -1 and a message in err (invalid UTF-8 at byte N; max below what the text needs). At
 * most tok_max_len(t) ids are written, so max >= tok_max_len(t) always suffices. */
int tok_encode(const Tokenizer *t, const char *text, size_t len, int32_t *ids, int max, int *n, char *err,
               size_t errlen);
/* -1 when text[0, len) is valid UTF-8 (utf8proc: no overlong forms, surrogates or code points
 * above U+10FFFF), else the offset of the first bad byte. */
long utf8_bad_at(const char *text, size_t len);
int tok_max_len(const Tokenizer *t);    /* max_seq_length: the most ids tok_encode writes */
int tok_vocab_size(const Tokenizer *t); /* 1 + the largest id */
int32_t tok_cls_id(const Tokenizer *t);
int32_t tok_sep_id(const Tokenizer *t);

#endif
