/* pipefile_lex.c: the lexical layer of the pipeline-file parser (pipefile.h, docs/PIPELINES.md):
 * error collection with the offending line quoted, name checks, variable substitution ($x,
 * ${x}, replica variables), splitting a statement into words (quotes, escapes) and integer
 * expressions (+ - * / % and parentheses). Statements are pipefile_stmt.c's. */
#include "pipefile_internal.h"

#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- errors -------------------------------------------------------------------------- */

static void err_append(Parser *P, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void err_append(Parser *P, const char *fmt, ...) {
    if (!P->err || P->errlen == 0 || P->errpos + 1 >= P->errlen) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(P->err + P->errpos, P->errlen - P->errpos, fmt, ap);
    va_end(ap);
    if (n > 0) P->errpos += (size_t)n;
    if (P->errpos >= P->errlen) P->errpos = P->errlen - 1;
}

/* The stored copy of line `line` (already made printable), or "". */
static const char *line_text(const Pipeline *pl, int line) {
    if (line < 1 || line > pl->nlines || !pl->lines[line - 1]) return "";
    return pl->lines[line - 1];
}

static int format_error(const Pipeline *pl, int line, char *out, size_t cap, const char *msg) {
    if (line > 0)
        return snprintf(out, cap, "%s:%d: %s\n    %s\n", pl->path, line, msg, line_text(pl, line));
    return snprintf(out, cap, "%s: %s\n", pl->path, msg);
}

/* Report an error at `line` (0: the file as a whole, -1: the command line). */
int pf_perr_at(Parser *P, int line, const char *fmt, ...) {
    P->line_failed = 1;
    if (P->nerrors++ >= PIPE_MAX_ERRORS) return -1;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (line < 0) {
        err_append(P, "%s\n", msg);
    } else {
        char buf[PIPE_MAX_LINE + 1200];
        format_error(P->pl, line, buf, sizeof buf, msg);
        err_append(P, "%s", buf);
    }
    if (P->nerrors == PIPE_MAX_ERRORS) err_append(P, "%s: too many errors, giving up\n", P->pl->path);
    return -1;
}

int pipeline_errf(const Pipeline *pl, int line, char *err, size_t errlen, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (err && errlen) format_error(pl, line, err, errlen, msg);
    return -1;
}

/* ---- small helpers ------------------------------------------------------------------- */

int pf_is_ident_start(int c) { return isalpha(c) || c == '_'; }
int pf_is_ident(int c) { return isalnum(c) || c == '_'; }
int pf_is_name_char(int c) { return isalnum(c) || c == '_' || c == '-'; }

/* A process, endpoint or pipeline name: [A-Za-z0-9_-]+, shorter than max. */
int pf_valid_name(const char *s, size_t max) {
    size_t n = strlen(s);
    if (n == 0 || n >= max) return 0;
    for (size_t i = 0; i < n; i++)
        if (!pf_is_name_char((unsigned char)s[i])) return 0;
    return 1;
}

int pf_valid_ident(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n >= PIPE_MAX_NAME || !pf_is_ident_start((unsigned char)s[0])) return 0;
    for (size_t i = 1; i < n; i++)
        if (!pf_is_ident((unsigned char)s[i])) return 0;
    return 1;
}

/* Host names and addresses: letters, digits, . - _ : [ ] (IPv6 literals). */
int pf_valid_hostish(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n >= PIPE_MAX_NAME * 4) return 0;
    /* a leading '-' would read as an ssh option; '.' or '..' (or any leading dot) would put the
     * host's key folder (RUNDIR/HOST) outside the run folder or hide it */
    if (!(isalnum((unsigned char)s[0]) || s[0] == '[')) return 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (!(isalnum(c) || strchr(".-_:[]", c))) return 0;
    }
    return 1;
}

PipeVar *pf_find_var(Pipeline *pl, const char *name, size_t n) {
    for (int i = 0; i < pl->nvars; i++)
        if (strlen(pl->vars[i].name) == n && memcmp(pl->vars[i].name, name, n) == 0) return &pl->vars[i];
    return NULL;
}

const char *pipeline_var(const Pipeline *pl, const char *name) {
    for (int i = 0; i < pl->nvars; i++)
        if (strcmp(pl->vars[i].name, name) == 0) return pl->vars[i].value;
    return NULL;
}

int pipeline_find_proc(const Pipeline *pl, const char *name) {
    for (int i = 0; i < pl->nprocs; i++)
        if (strcmp(pl->procs[i].name, name) == 0) return i;
    return -1;
}

int pf_find_host(const Pipeline *pl, const char *name) {
    for (int i = 0; i < pl->nhosts; i++)
        if (strcmp(pl->hosts[i].name, name) == 0) return i;
    return -1;
}

/* ---- variable substitution ----------------------------------------------------------- */

/* Append the expansion of `$...` at in[*i] (in[*i] == '$') to out; advances *i. */
static int expand_dollar(Parser *P, const char *in, size_t len, size_t *i, char *out, size_t cap,
                         size_t *o) {
    size_t j = *i + 1;
    const char *name;
    size_t n;
    if (j < len && in[j] == '$') {
        if (*o + 1 >= cap) return perr(P, "line too long after variable substitution");
        out[(*o)++] = '$';
        *i = j + 1;
        return 0;
    }
    if (j < len && in[j] == '{') {
        size_t k = j + 1;
        while (k < len && in[k] != '}') k++;
        if (k >= len) return perr(P, "unterminated '${'");
        name = in + j + 1;
        n = k - j - 1;
        *i = k + 1;
        if (n == 0 || !pf_is_ident_start((unsigned char)name[0])) return perr(P, "bad variable name in '${...}'");
        for (size_t q = 0; q < n; q++)
            if (!pf_is_ident((unsigned char)name[q])) return perr(P, "bad variable name in '${...}'");
    } else if (j < len && pf_is_ident_start((unsigned char)in[j])) {
        size_t k = j;
        while (k < len && pf_is_ident((unsigned char)in[k])) k++;
        name = in + j;
        n = k - j;
        *i = k;
    } else {
        return perr(P, "stray '$' (write $$ for a dollar sign, $NAME or ${NAME} for a variable)");
    }
    char rbuf[32];
    const char *val = NULL;
    if (P->rvar && strlen(P->rvar) == n && memcmp(P->rvar, name, n) == 0) {
        snprintf(rbuf, sizeof rbuf, "%ld", P->rval);
        val = rbuf;
    } else {
        PipeVar *v = pf_find_var(P->pl, name, n);
        if (v) val = v->value;
    }
    if (!val) return perr(P, "undefined variable '%.*s'", (int)(n > 64 ? 64 : n), name);
    size_t vl = strlen(val);
    if (*o + vl + 1 >= cap) return perr(P, "line too long after variable substitution");
    memcpy(out + *o, val, vl);
    *o += vl;
    return 0;
}

/* Substitute variables in in[0..len) into out (no quoting rules). */
int pf_expand(Parser *P, const char *in, size_t len, char *out, size_t cap) {
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        if (in[i] == '$') {
            if (expand_dollar(P, in, len, &i, out, cap, &o) < 0) return -1;
        } else {
            if (o + 1 >= cap) return perr(P, "line too long after variable substitution");
            out[o++] = in[i++];
        }
    }
    out[o] = 0;
    return 0;
}

/* Split s into words: whitespace separates, '...' is literal, "..." and bare text substitute
 * variables, a backslash takes the next character literally. A substituted value is never
 * split. Words land in P->toks. */
int pf_tokenize(Parser *P, const char *s) {
    Toks *t = &P->toks;
    t->n = 0;
    t->used = 0;
    size_t len = strlen(s), i = 0;
    while (i < len) {
        while (i < len && (s[i] == ' ' || s[i] == '\t')) i++;
        if (i >= len) break;
        if (t->n >= TOK_MAX) return perr(P, "too many words on one line (max %d)", TOK_MAX);
        char *out = t->buf + t->used;
        size_t cap = TOK_BUF - t->used, o = 0;
        char quote = 0;
        while (i < len) {
            char c = s[i];
            if (!quote && (c == ' ' || c == '\t')) break;
            if (!quote && (c == '\'' || c == '"')) { quote = c; i++; continue; }
            if (quote && c == quote) { quote = 0; i++; continue; }
            if (quote != '\'' && c == '$') {
                if (expand_dollar(P, s, len, &i, out, cap, &o) < 0) return -1;
                continue;
            }
            if (quote != '\'' && c == '\\') {
                if (i + 1 >= len) return perr(P, "backslash at the end of the line");
                c = s[++i];
            }
            if (o + 1 >= cap) return perr(P, "line too long after variable substitution");
            out[o++] = c;
            i++;
        }
        if (quote) return perr(P, "unterminated %s quote", quote == '\'' ? "single" : "double");
        out[o] = 0;
        t->v[t->n++] = out;
        t->used += o + 1;
    }
    return 0;
}

/* ---- integer expressions: + - * / % ( ) over integers ------------------------------ */

typedef struct Expr {
    const char *s;
    int depth;
    int bad;
    char why[96];
} Expr;

static void ex_ws(Expr *e) { while (*e->s == ' ' || *e->s == '\t') e->s++; }
static long long ex_sum(Expr *e);

static long long ex_fail(Expr *e, const char *why) {
    if (!e->bad) snprintf(e->why, sizeof e->why, "%s", why);
    e->bad = 1;
    return 0;
}

static long long ex_check(Expr *e, long long v) {
    if (v > 1000000000LL || v < -1000000000LL) return ex_fail(e, "number too large");
    return v;
}

static long long ex_atom(Expr *e) {
    ex_ws(e);
    if (e->bad) return 0;
    if (++e->depth > 32) return ex_fail(e, "nested too deeply");
    long long v = 0;
    if (*e->s == '-') { e->s++; v = ex_check(e, -ex_atom(e)); }
    else if (*e->s == '+') { e->s++; v = ex_atom(e); }
    else if (*e->s == '(') {
        e->s++;
        v = ex_sum(e);
        ex_ws(e);
        if (*e->s != ')') v = ex_fail(e, "missing ')'");
        else e->s++;
    } else if (isdigit((unsigned char)*e->s)) {
        while (isdigit((unsigned char)*e->s)) {
            v = v * 10 + (*e->s++ - '0');
            if (v > 1000000000LL) { v = ex_fail(e, "number too large"); break; }
        }
    } else {
        v = ex_fail(e, *e->s ? "expected a number" : "missing number");
    }
    e->depth--;
    return v;
}

static long long ex_prod(Expr *e) {
    long long v = ex_atom(e);
    for (;;) {
        ex_ws(e);
        char op = *e->s;
        if (e->bad || (op != '*' && op != '/' && op != '%')) return v;
        e->s++;
        long long r = ex_atom(e);
        if (e->bad) return 0;
        if (op == '*') v = ex_check(e, v * r);
        else if (r == 0) return ex_fail(e, "division by zero");
        else v = op == '/' ? v / r : v % r;
    }
}

static long long ex_sum(Expr *e) {
    long long v = ex_prod(e);
    for (;;) {
        ex_ws(e);
        char op = *e->s;
        if (e->bad || (op != '+' && op != '-')) return v;
        e->s++;
        long long r = ex_prod(e);
        v = ex_check(e, op == '+' ? v + r : v - r);
    }
}

/* Evaluate an already-substituted integer expression; -1 with why on failure. */
int pf_eval_int(const char *s, long long *out, char *why, size_t whylen) {
    Expr e = {.s = s};
    long long v = ex_sum(&e);
    ex_ws(&e);
    if (!e.bad && *e.s) ex_fail(&e, "unexpected text");
    if (e.bad) {
        snprintf(why, whylen, "%s", e.why);
        return -1;
    }
    *out = v;
    return 0;
}
