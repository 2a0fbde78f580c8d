/* prompts.h: class prototypes from a prompts file and routing a text prompt to a class
 * (docs/ROUTER.md "Routing"). A prompts file (pipelines/fmnist.prompts) gives several
 * phrasings per class; each is embedded by the sentence encoder (minilm.h, ids from
 * tokenizer.h) and a class's prototype is the mean of its phrasings' unit vectors, scaled back
 * to unit length. A prompt routes to a class
 *   - directly, when the whole prompt (ASCII white space at both ends dropped) is, in any ASCII
 *     case, the class's short name ("sneaker"), its official name from the file ("Ankle boot")
 *     or its id in decimal digits ("7", "07"; no sign, no other characters): score 1, and the
 *     encoder is not run;
 *   - else to the class whose prototype has the highest cosine similarity with the prompt's
 *     embedding, when that similarity is at least the threshold (the file's `threshold X`);
 *   - else to no class: the answer names the best match and its score.
 *
 * File format (each line; '#' starts a comment, blank lines are ignored, white space around
 * each part is dropped):
 *   CLASS: phrasing         CLASS is a short name (any case) or an id of the caller's table
 *   CLASS = Official name   the dataset's own name (at most one per class): a phrasing too
 *   threshold X             a number in [-1, 1] (at most once; default PROMPTS_DEFAULT_THRESHOLD)
 * Refused, as "FILE:LINE: what": an unknown class (the known ones listed), an empty phrasing,
 * a second official name or threshold, a phrasing given twice (any class, any case), a line of
 * none of these forms, a phrasing the tokenizer refuses (invalid UTF-8); and every class
 * without a phrasing (named, at the file's last line).
 *
 * Not thread-safe: classification runs the encoder, whose work buffers are shared. */
#ifndef MSD_PROMPTS_H
#define MSD_PROMPTS_H

#include <stddef.h>

#include "minilm.h"
#include "tokenizer.h"

#define PROMPTS_DEFAULT_THRESHOLD 0.38
enum { PROMPTS_BATCH = 32 }; /* phrasings per encoder call when building prototypes */

typedef struct PromptSet {
    int n;                    /* classes */
    const char *const *names; /* their short names (the caller's table, not copied) */
    char **official;          /* n official names, NULL where the file gives none */
    int np;                   /* phrasings (official names included) */
    char **text;              /* np phrasings, NUL-terminated */
    int *cls;                 /* np classes */
    int *line;                /* np line numbers in the file */
    int *count;               /* n: phrasings per class */
    double threshold;
    char path[1024];
} PromptSet;

/* Read path against the class table names[0, n) (names may be NULL: ids only). 0, or -1 and
 * "FILE:LINE: what" in err. */
int prompts_parse(PromptSet *ps, const char *path, int n, const char *const *names, char *err, size_t errlen);
void prompts_set_free(PromptSet *ps);

/* Embed B texts (texts[b] of lens[b] bytes) into out (B, MINILM_DIM), unit rows, in encoder
 * batches of PROMPTS_BATCH. -1 and "text B: what" in err for a text the tokenizer refuses. */
int prompts_embed(const Tokenizer *t, MiniLM *m, const char *const *texts, const size_t *lens, int B, float *out,
                  char *err, size_t errlen);

/* proto (n, MINILM_DIM): for each class the sum of its rows of emb (np, MINILM_DIM; row i of
 * class cls[i]) scaled to unit length, leaving row skip out (-1: none; leave-one-out). A class
 * with no row left gets a zero row. */
void prompts_prototypes(float *proto, const float *emb, const int *cls, int np, int n, int skip);

/* The nearest of n prototypes to the unit vector v: its index in *best, cosine in *score. */
void prompts_nearest(const float *proto, int n, const float *v, int *best, double *score);

typedef struct PromptRouter {
    PromptSet set;
    float *emb;       /* (set.np, MINILM_DIM): each phrasing's embedding */
    float *proto;     /* (set.n, MINILM_DIM): the prototypes, unit rows */
    double threshold; /* set.threshold; callers may change it */
    const Tokenizer *tok;
    MiniLM *m;        /* tok and m: the caller's, used by prompt_classify */
} PromptRouter;

/* Parse path and embed every phrasing into the prototypes. 0, or -1 with FILE:LINE in err. */
int prompt_router_init(PromptRouter *r, const char *path, int n, const char *const *names, const Tokenizer *tok,
                       MiniLM *m, char *err, size_t errlen);
void prompt_router_free(PromptRouter *r);

/* The class text[0, len) names directly (the rule above), or -1. */
int prompt_direct(const PromptRouter *r, const char *text, size_t len);

enum { PROMPT_ROUTED = 0, PROMPT_DIRECT = 1, PROMPT_NO_CLASS = 2 };
/* Route one prompt. Returns PROMPT_DIRECT (*cls named directly, *score = *best_score = 1),
 * PROMPT_ROUTED (*cls = *best, *score = *best_score >= threshold), PROMPT_NO_CLASS (*cls = -1,
 * *score = *best_score < threshold, err holds "no class: the best match is 'NAME' (ID) at
 * cosine S, below the threshold T"), or -1 with err (an empty prompt, invalid UTF-8). */
int prompt_classify(const PromptRouter *r, const char *text, size_t len, int *cls, double *score, int *best,
                    double *best_score, char *err, size_t errlen);

/* prompt_classify's answer for one prompt of a batch. */
typedef struct PromptClass {
    int rc, cls, best;
    double score, best_score;
    char err[400];
} PromptClass;
/* prompt_classify of n prompts at once: the free-text ones go through the encoder together
 * (PROMPTS_BATCH a call), which is what a server with many lines waiting wants; out[i] is what
 * prompt_classify(texts[i]) gives, up to the float rounding of a batched call. */
void prompt_classify_many(const PromptRouter *r, const char *const *texts, const size_t *lens, int n,
                          PromptClass *out);

#endif
