/* prompts.c: see prompts.h. */
#include "prompts.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'; }

/* s[0, *len) without white space at both ends: returns the start, *len updated */
static const char *trim(const char *s, size_t *len) {
    size_t a = 0, b = *len;
    while (a < b && is_ws(s[a])) a++;
    while (b > a && is_ws(s[b - 1])) b--;
    *len = b - a;
    return s + a;
}

/* a class id in decimal digits (leading zeros allowed) below n, else -1 */
static int id_of(const char *s, size_t len, int n) {
    if (len == 0 || len > 9) return -1;
    int v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v < n ? v : -1;
}

static int eq_nocase(const char *a, size_t alen, const char *b) {
    return b && strlen(b) == alen && strncasecmp(a, b, alen) == 0;
}

/* a class token of the file: a short name (any case) or an id */
static int class_of(const char *s, size_t len, int n, const char *const *names) {
    int id = id_of(s, len, n);
    if (id >= 0) return id;
    for (int c = 0; names && c < n; c++)
        if (eq_nocase(s, len, names[c])) return c;
    return -1;
}

/* "'tshirt' (0), 'trouser' (1), ..." into buf */
static void list_classes(char *buf, size_t len, int n, const char *const *names) {
    size_t o = 0;
    buf[0] = 0;
    for (int c = 0; c < n && o + 64 < len; c++) {
        int w = names ? snprintf(buf + o, len - o, "%s'%.40s' (%d)", c ? ", " : "", names[c], c)
                      : snprintf(buf + o, len - o, "%s%d", c ? ", " : "", c);
        if (w < 0) break;
        o += (size_t)w;
    }
}

void prompts_set_free(PromptSet *ps) {
    for (int i = 0; i < ps->np; i++) free(ps->text[i]);
    for (int c = 0; ps->official && c < ps->n; c++) free(ps->official[c]);
    free(ps->official);
    free(ps->text);
    free(ps->cls);
    free(ps->line);
    free(ps->count);
    memset(ps, 0, sizeof *ps);
}

static char *dup_n(const char *s, size_t len) {
    char *d = msd_malloc(len + 1);
    memcpy(d, s, len);
    d[len] = 0;
    return d;
}

int prompts_parse(PromptSet *ps, const char *path, int n, const char *const *names, char *err, size_t errlen) {
    memset(ps, 0, sizeof *ps);
    if (n < 1) return msd_errf(err, errlen, "%s: no classes to read phrasings for", path);
    FILE *f = fopen(path, "r");
    if (!f) return msd_errf(err, errlen, "%s: %s", path, strerror(errno));
    ps->n = n;
    ps->names = names;
    ps->threshold = PROMPTS_DEFAULT_THRESHOLD;
    snprintf(ps->path, sizeof ps->path, "%s", path);
    ps->official = msd_calloc((size_t)n, sizeof(char *));
    ps->count = msd_calloc((size_t)n, sizeof(int));
    int cap = 0, lineno = 0, have_threshold = 0, rc = -1;
    char *buf = NULL, known[2048];
    size_t bufcap = 0;
    ssize_t got;
    while ((got = getline(&buf, &bufcap, f)) >= 0) {
        lineno++;
        size_t len = (size_t)got;
        if (memchr(buf, 0, len)) {
            msd_errf(err, errlen, "%s:%d: a NUL byte in the line", path, lineno);
            goto out;
        }
        char *hash = memchr(buf, '#', len);
        if (hash) len = (size_t)(hash - buf);
        const char *s = trim(buf, &len);
        if (len == 0) continue;
        const char *colon = memchr(s, ':', len), *eq = memchr(s, '=', len);
        const char *sep = colon && (!eq || colon < eq) ? colon : eq;
        if (!sep) {
            /* threshold X */
            if (len > 9 && !strncmp(s, "threshold", 9) && is_ws(s[9])) {
                char num[64];
                size_t nl = len - 9;
                const char *v = trim(s + 9, &nl);
                char *end;
                snprintf(num, sizeof num, "%.*s", (int)(nl < 63 ? nl : 63), v);
                double x = strtod(num, &end);
                if (nl >= 63 || end == num || *end || !isfinite(x) || x < -1 || x > 1) {
                    msd_errf(err, errlen, "%s:%d: threshold '%.*s': expected a number in [-1, 1] (a cosine similarity)",
                             path, lineno, (int)(nl < 60 ? nl : 60), v);
                    goto out;
                }
                if (have_threshold++) {
                    msd_errf(err, errlen, "%s:%d: a second threshold", path, lineno);
                    goto out;
                }
                ps->threshold = x;
                continue;
            }
            msd_errf(err, errlen, "%s:%d: expected 'CLASS: phrasing', 'CLASS = Official name' or 'threshold X', "
                     "got '%.60s'", path, lineno, s);
            goto out;
        }
        size_t klen = (size_t)(sep - s), vlen = len - klen - 1;
        const char *key = trim(s, &klen), *val = trim(sep + 1, &vlen);
        int c = class_of(key, klen, n, names);
        if (c < 0) {
            list_classes(known, sizeof known, n, names);
            msd_errf(err, errlen, "%s:%d: unknown class '%.*s' (the classes: %s)", path, lineno,
                     (int)(klen < 60 ? klen : 60), key, known);
            goto out;
        }
        const char *cn = names ? names[c] : "";
        if (vlen == 0) {
            msd_errf(err, errlen, "%s:%d: an empty %s for class '%s' (%d)", path, lineno,
                     *sep == '=' ? "official name" : "phrasing", cn, c);
            goto out;
        }
        for (int i = 0; i < ps->np; i++)
            if (eq_nocase(val, vlen, ps->text[i])) {
                msd_errf(err, errlen, "%s:%d: the phrasing '%.60s' is already at line %d (class '%s')", path, lineno,
                         ps->text[i], ps->line[i], names ? names[ps->cls[i]] : "");
                goto out;
            }
        if (*sep == '=') {
            if (ps->official[c]) {
                msd_errf(err, errlen, "%s:%d: a second official name for class '%s' (%d): it is '%s'", path, lineno,
                         cn, c, ps->official[c]);
                goto out;
            }
            ps->official[c] = dup_n(val, vlen);
        }
        if (ps->np == cap) {
            cap = cap ? 2 * cap : 64;
            ps->text = realloc(ps->text, sizeof(char *) * (size_t)cap);
            ps->cls = realloc(ps->cls, sizeof(int) * (size_t)cap);
            ps->line = realloc(ps->line, sizeof(int) * (size_t)cap);
            if (!ps->text || !ps->cls || !ps->line) msd_die("out of memory reading %s", path);
        }
        ps->text[ps->np] = dup_n(val, vlen);
        ps->cls[ps->np] = c;
        ps->line[ps->np] = lineno;
        ps->np++;
        ps->count[c]++;
    }
    if (ferror(f)) {
        msd_errf(err, errlen, "%s: read error: %s", path, strerror(errno));
        goto out;
    }
    char missing[2048];
    size_t o = 0;
    int nmiss = 0;
    missing[0] = 0;
    for (int c = 0; c < n; c++)
        if (!ps->count[c] && o + 64 < sizeof missing) {
            int w = snprintf(missing + o, sizeof missing - o, "%s'%.40s' (%d)", nmiss ? ", " : "", names ? names[c] : "", c);
            if (w > 0) o += (size_t)w;
            nmiss++;
        }
    if (nmiss) {
        msd_errf(err, errlen, "%s:%d: at the end: %d class%s without a phrasing (every class needs one): %s", path,
                 lineno, nmiss, nmiss > 1 ? "es" : "", missing);
        goto out;
    }
    rc = 0;
out:
    free(buf);
    fclose(f);
    if (rc) prompts_set_free(ps);
    return rc;
}

int prompts_embed(const Tokenizer *t, MiniLM *m, const char *const *texts, const size_t *lens, int B, float *out,
                  char *err, size_t errlen) {
    int maxl = tok_max_len(t), rc = 0;
    int32_t *ids = msd_malloc(sizeof(int32_t) * (size_t)maxl * PROMPTS_BATCH);
    const int32_t *seqs[PROMPTS_BATCH];
    int nl[PROMPTS_BATCH];
    char e2[512];
    for (int b0 = 0; b0 < B && rc == 0; b0 += PROMPTS_BATCH) {
        int nb = B - b0 < PROMPTS_BATCH ? B - b0 : PROMPTS_BATCH;
        for (int j = 0; j < nb && rc == 0; j++) {
            seqs[j] = ids + (size_t)j * (size_t)maxl;
            if (tok_encode(t, texts[b0 + j], lens[b0 + j], ids + (size_t)j * (size_t)maxl, maxl, &nl[j], e2, sizeof e2))
                rc = msd_errf(err, errlen, "text %d: %s", b0 + j, e2);
        }
        if (rc == 0 && minilm_embed(m, seqs, nl, nb, out + (size_t)b0 * MINILM_DIM, e2, sizeof e2))
            rc = msd_errf(err, errlen, "texts %d..%d: %s", b0, b0 + nb - 1, e2);
    }
    free(ids);
    return rc;
}

void prompts_prototypes(float *proto, const float *emb, const int *cls, int np, int n, int skip) {
    double *acc = msd_calloc((size_t)n * MINILM_DIM, sizeof(double));
    for (int i = 0; i < np; i++) {
        if (i == skip) continue;
        for (int j = 0; j < MINILM_DIM; j++) acc[(size_t)cls[i] * MINILM_DIM + j] += emb[(size_t)i * MINILM_DIM + j];
    }
    for (int c = 0; c < n; c++) {
        double s = 0, *a = acc + (size_t)c * MINILM_DIM;
        for (int j = 0; j < MINILM_DIM; j++) s += a[j] * a[j];
        double k = s > 0 ? 1.0 / sqrt(s) : 0;
        for (int j = 0; j < MINILM_DIM; j++) proto[(size_t)c * MINILM_DIM + j] = (float)(a[j] * k);
    }
    free(acc);
}

void prompts_nearest(const float *proto, int n, const float *v, int *best, double *score) {
    *best = -1;
    *score = -2;
    for (int c = 0; c < n; c++) {
        double d = 0;
        for (int j = 0; j < MINILM_DIM; j++) d += (double)proto[(size_t)c * MINILM_DIM + j] * v[j];
        if (d > *score) *score = d, *best = c;
    }
}

int prompt_router_init(PromptRouter *r, const char *path, int n, const char *const *names, const Tokenizer *tok,
                       MiniLM *m, char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    if (prompts_parse(&r->set, path, n, names, err, errlen)) return -1;
    PromptSet *ps = &r->set;
    size_t *lens = msd_malloc(sizeof(size_t) * (size_t)ps->np);
    for (int i = 0; i < ps->np; i++) lens[i] = strlen(ps->text[i]);
    r->emb = msd_malloc(sizeof(float) * (size_t)ps->np * MINILM_DIM);
    r->proto = msd_malloc(sizeof(float) * (size_t)ps->n * MINILM_DIM);
    int rc = 0;
    /* a phrasing the tokenizer refuses is named by its line */
    char e2[512];
    if (prompts_embed(tok, m, (const char *const *)ps->text, lens, ps->np, r->emb, e2, sizeof e2)) {
        int bad = -1;
        if (sscanf(e2, "text %d:", &bad) == 1 && bad >= 0 && bad < ps->np)
            msd_errf(err, errlen, "%s:%d: %s", path, ps->line[bad], strchr(e2, ':') + 2);
        else msd_errf(err, errlen, "%s: %s", path, e2);
        rc = -1;
    }
    free(lens);
    if (rc) {
        prompt_router_free(r);
        return -1;
    }
    prompts_prototypes(r->proto, r->emb, ps->cls, ps->np, ps->n, -1);
    r->threshold = ps->threshold;
    r->tok = tok;
    r->m = m;
    return 0;
}

void prompt_router_free(PromptRouter *r) {
    prompts_set_free(&r->set);
    free(r->emb);
    free(r->proto);
    memset(r, 0, sizeof *r);
}

int prompt_direct(const PromptRouter *r, const char *text, size_t len) {
    const PromptSet *ps = &r->set;
    const char *s = trim(text, &len);
    int id = id_of(s, len, ps->n);
    if (id >= 0) return id;
    for (int c = 0; c < ps->n; c++)
        if ((ps->names && eq_nocase(s, len, ps->names[c])) || eq_nocase(s, len, ps->official[c])) return c;
    return -1;
}

/* The answer for an embedded prompt v: its nearest prototype, routed at or above the threshold. */
static int classify_vec(const PromptRouter *r, const float *v, int *cls, double *score, int *best, double *best_score,
                        char *err, size_t errlen) {
    prompts_nearest(r->proto, r->set.n, v, best, best_score);
    *score = *best_score;
    if (*best_score < r->threshold) {
        msd_errf(err, errlen, "no class: the best match is '%s' (%d) at cosine %.3f, below the threshold %.3f",
                 r->set.names ? r->set.names[*best] : "", *best, *best_score, r->threshold);
        return PROMPT_NO_CLASS;
    }
    *cls = *best;
    return PROMPT_ROUTED;
}

/* What needs no encoder: an empty prompt (-1), a class named directly (PROMPT_DIRECT); else
 * PROMPT_ROUTED, meaning "ask the encoder". */
static int classify_plain(const PromptRouter *r, const char *text, size_t len, int *cls, double *score, int *best,
                          double *best_score, char *err, size_t errlen) {
    *cls = *best = -1;
    *score = *best_score = NAN;
    size_t tl = len;
    trim(text, &tl);
    if (tl == 0) return msd_errf(err, errlen, "an empty prompt: name a class or describe one");
    int d = prompt_direct(r, text, len);
    if (d >= 0) {
        *cls = *best = d;
        *score = *best_score = 1;
        return PROMPT_DIRECT;
    }
    return PROMPT_ROUTED;
}

int prompt_classify(const PromptRouter *r, const char *text, size_t len, int *cls, double *score, int *best,
                    double *best_score, char *err, size_t errlen) {
    int rc = classify_plain(r, text, len, cls, score, best, best_score, err, errlen);
    if (rc != PROMPT_ROUTED) return rc;
    float v[MINILM_DIM];
    char e2[512];
    const char *texts[1] = {text};
    if (prompts_embed(r->tok, r->m, texts, &len, 1, v, e2, sizeof e2))
        return msd_errf(err, errlen, "%s", strchr(e2, ':') ? strchr(e2, ':') + 2 : e2);
    return classify_vec(r, v, cls, score, best, best_score, err, errlen);
}

void prompt_classify_many(const PromptRouter *r, const char *const *texts, const size_t *lens, int n,
                          PromptClass *out) {
    const char **sel = msd_malloc(sizeof(char *) * (size_t)(n > 0 ? n : 1));
    size_t *sel_len = msd_malloc(sizeof(size_t) * (size_t)(n > 0 ? n : 1));
    int *which = msd_malloc(sizeof(int) * (size_t)(n > 0 ? n : 1)), m = 0;
    for (int i = 0; i < n; i++) {
        PromptClass *o = &out[i];
        o->err[0] = 0;
        o->rc = classify_plain(r, texts[i], lens[i], &o->cls, &o->score, &o->best, &o->best_score, o->err, sizeof o->err);
        if (o->rc == PROMPT_ROUTED) {
            sel[m] = texts[i];
            sel_len[m] = lens[i];
            which[m++] = i;
        }
    }
    if (m > 0) {
        float *v = msd_malloc(sizeof(float) * (size_t)m * MINILM_DIM);
        char e2[512];
        int batched = prompts_embed(r->tok, r->m, sel, sel_len, m, v, e2, sizeof e2) == 0;
        for (int j = 0; j < m; j++) {
            PromptClass *o = &out[which[j]];
            if (batched)   /* else one text failed (the tokenizer): each alone, for its own message */
                o->rc = classify_vec(r, v + (size_t)j * MINILM_DIM, &o->cls, &o->score, &o->best, &o->best_score, o->err,
                                     sizeof o->err);
            else
                o->rc = prompt_classify(r, sel[j], sel_len[j], &o->cls, &o->score, &o->best, &o->best_score, o->err,
                                        sizeof o->err);
        }
        free(v);
    }
    free(sel);
    free(sel_len);
    free(which);
}
