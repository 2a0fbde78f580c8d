/* pipeline.c: the pipeline-file parser and endpoint planner (see pipeline.h and
 * docs/PIPELINES.md for the format).
 *
 * One pass over the lines: each statement (pipeline, var, host, proc, stdin) is checked as it
 * is read, variables are substituted into each word as it is tokenised (a substituted value
 * is never split again), replicated processes are expanded on the spot. A second step
 * resolves what may refer forward: hosts, connections, the stdin process, the built-in
 * timeouts. Errors are collected (up to PIPE_MAX_ERRORS) with the line they belong to.
 *
 * Deliberately not here: anything about the binaries (whether msd-ROLE exists is the
 * launcher's question) or run directories. */
#include "pipeline.h"

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

#define TOK_MAX 128
#define TOK_BUF 16384

typedef struct Toks {
    int n;
    char *v[TOK_MAX];
    size_t used;
    char buf[TOK_BUF];
} Toks;

typedef struct Parser {
    Pipeline *pl;
    int nsets;
    char *const *sets;
    int set_used[PIPE_MAX_VARS * 2];
    char *err;
    size_t errlen, errpos;
    int nerrors;
    int line;               /* current line, 1-based */
    int line_failed;        /* an error was reported for the current statement */
    const char *rvar;       /* replica variable bound while reading a proc line, or NULL */
    long rval;
    int proc_cap;
    int stdin_line;
    char stdin_name[PIPE_MAX_NAME];
    Toks toks;
} Parser;

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
static int perr_at(Parser *P, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int perr_at(Parser *P, int line, const char *fmt, ...) {
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
#define perr(P, ...) perr_at((P), (P)->line, __VA_ARGS__)

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

static int is_ident_start(int c) { return isalpha(c) || c == '_'; }
static int is_ident(int c) { return isalnum(c) || c == '_'; }
static int is_name_char(int c) { return isalnum(c) || c == '_' || c == '-'; }

/* A process, endpoint or pipeline name: [A-Za-z0-9_-]+, shorter than max. */
static int valid_name(const char *s, size_t max) {
    size_t n = strlen(s);
    if (n == 0 || n >= max) return 0;
    for (size_t i = 0; i < n; i++)
        if (!is_name_char((unsigned char)s[i])) return 0;
    return 1;
}

static int valid_ident(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n >= PIPE_MAX_NAME || !is_ident_start((unsigned char)s[0])) return 0;
    for (size_t i = 1; i < n; i++)
        if (!is_ident((unsigned char)s[i])) return 0;
    return 1;
}

/* Host names and addresses: letters, digits, . - _ : [ ] (IPv6 literals). */
static int valid_hostish(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n >= PIPE_MAX_NAME * 4) return 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (!(isalnum(c) || strchr(".-_:[]", c))) return 0;
    }
    return 1;
}

static PipeVar *find_var(Pipeline *pl, const char *name, size_t n) {
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

static int find_host(const Pipeline *pl, const char *name) {
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
        if (n == 0 || !is_ident_start((unsigned char)name[0])) return perr(P, "bad variable name in '${...}'");
        for (size_t q = 0; q < n; q++)
            if (!is_ident((unsigned char)name[q])) return perr(P, "bad variable name in '${...}'");
    } else if (j < len && is_ident_start((unsigned char)in[j])) {
        size_t k = j;
        while (k < len && is_ident((unsigned char)in[k])) k++;
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
        PipeVar *v = find_var(P->pl, name, n);
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
static int expand(Parser *P, const char *in, size_t len, char *out, size_t cap) {
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
static int tokenize(Parser *P, const char *s) {
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
static int eval_int(const char *s, long long *out, char *why, size_t whylen) {
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

/* ---- statements ---------------------------------------------------------------------- */

static int set_value(Parser *P, const char *name, const char **value) {
    size_t n = strlen(name);
    for (int i = 0; i < P->nsets; i++) {
        const char *eq = strchr(P->sets[i], '=');
        if (eq && (size_t)(eq - P->sets[i]) == n && memcmp(P->sets[i], name, n) == 0) {
            P->set_used[i] = 1;
            *value = eq + 1;  /* the last --set of a name wins */
        }
    }
    return 0;
}

static PipeVar *add_var(Parser *P, const char *name, const char *value, int line) {
    Pipeline *pl = P->pl;
    if (pl->nvars >= PIPE_MAX_VARS) {
        perr(P, "too many variables (max %d)", PIPE_MAX_VARS);
        return NULL;
    }
    PipeVar *v = &pl->vars[pl->nvars++];
    snprintf(v->name, sizeof v->name, "%s", name);
    snprintf(v->value, sizeof v->value, "%s", value);
    v->line = line;
    return v;
}

/* var NAME = VALUE */
static void st_var(Parser *P, const char *rest) {
    const char *s = rest;
    while (*s == ' ' || *s == '\t') s++;
    const char *name = s;
    while (is_ident((unsigned char)*s)) s++;
    size_t n = (size_t)(s - name);
    if (n == 0 || !is_ident_start((unsigned char)name[0])) {
        perr(P, "expected a variable name after 'var' (letters, digits, _)");
        return;
    }
    if (n >= PIPE_MAX_NAME) { perr(P, "variable name too long (max %d)", PIPE_MAX_NAME - 1); return; }
    char vname[PIPE_MAX_NAME];
    memcpy(vname, name, n);
    vname[n] = 0;
    while (*s == ' ' || *s == '\t') s++;
    if (*s != '=') { perr(P, "expected 'var %s = VALUE'", vname); return; }
    s++;
    if (tokenize(P, s) < 0) return;
    if (P->toks.n == 0) { perr(P, "missing value for variable '%s' (write \"\" for an empty one)", vname); return; }
    if (P->toks.n > 1) { perr(P, "the value of '%s' is several words; quote it", vname); return; }
    const char *value = P->toks.v[0];
    if (strlen(value) >= PIPE_MAX_VALUE) { perr(P, "value of '%s' too long (max %d)", vname, PIPE_MAX_VALUE - 1); return; }
    const char *over = NULL;
    set_value(P, vname, &over);
    PipeVar *v = find_var(P->pl, vname, n);
    if (v && v->line > 0) { perr(P, "variable '%s' defined twice (first at line %d)", vname, v->line); return; }
    if (v) { /* a built-in: the file sets its default */
        v->line = P->line;
        if (!v->from_set) snprintf(v->value, sizeof v->value, "%s", value);
        return;
    }
    v = add_var(P, vname, over ? over : value, P->line);
    if (v && over) v->from_set = 1;
}

/* pipeline NAME / stdin NAME (an '=' before the name is allowed) */
static const char *one_name(Parser *P, const char *rest, const char *what) {
    if (tokenize(P, rest) < 0) return NULL;
    int k = 0;
    if (P->toks.n > 0 && strcmp(P->toks.v[0], "=") == 0) k = 1;
    if (P->toks.n - k != 1) { perr(P, "expected '%s NAME'", what); return NULL; }
    return P->toks.v[k];
}

static void st_pipeline(Parser *P, const char *rest) {
    const char *name = one_name(P, rest, "pipeline");
    if (!name) return;
    if (!valid_name(name, PIPE_MAX_NAME)) {
        perr(P, "bad pipeline name '%s' (letters, digits, _ and -)", name);
        return;
    }
    snprintf(P->pl->name, sizeof P->pl->name, "%s", name);
}

static void st_stdin(Parser *P, const char *rest) {
    const char *name = one_name(P, rest, "stdin");
    if (!name) return;
    if (P->stdin_line) { perr(P, "stdin given twice (first at line %d)", P->stdin_line); return; }
    if (strlen(name) >= PIPE_MAX_NAME) { perr(P, "process name too long"); return; }
    snprintf(P->stdin_name, sizeof P->stdin_name, "%s", name);
    P->stdin_line = P->line;
}

static int parse_port(const char *s, long long *v) {
    char why[96];
    if (!*s) return -1;
    for (const char *q = s; *q; q++)
        if (!isdigit((unsigned char)*q)) return -1;
    if (eval_int(s, v, why, sizeof why) < 0 || *v < 1 || *v > 65535) return -1;
    return 0;
}

/* host NAME address=ADDR bindir=DIR ports=LO-HI */
static void st_host(Parser *P, const char *rest) {
    Pipeline *pl = P->pl;
    if (tokenize(P, rest) < 0) return;
    Toks *t = &P->toks;
    if (t->n < 1) { perr(P, "expected 'host NAME address=ADDRESS ...'"); return; }
    const char *name = t->v[0];
    if (!valid_hostish(name) || strlen(name) >= PIPE_MAX_NAME) {
        perr(P, "bad host name '%s' (letters, digits, '.', '-', '_')", name);
        return;
    }
    int h = find_host(pl, name);
    if (h >= 0 && pl->hosts[h].line > 0) {
        perr(P, "host '%s' declared twice (first at line %d)", name, pl->hosts[h].line);
        return;
    }
    PipeHost tmp = {0};
    snprintf(tmp.name, sizeof tmp.name, "%s", name);
    int seen_addr = 0, seen_bindir = 0, seen_ports = 0;
    for (int i = 1; i < t->n; i++) {
        char *eq = strchr(t->v[i], '=');
        if (!eq) { perr(P, "expected key=value, got '%s' (host keys: address, bindir, ports)", t->v[i]); return; }
        *eq = 0;
        const char *key = t->v[i], *val = eq + 1;
        if (strcmp(key, "address") == 0) {
            if (seen_addr++) { perr(P, "address given twice"); return; }
            if (!valid_hostish(val)) { perr(P, "bad address '%s'", val); return; }
            snprintf(tmp.address, sizeof tmp.address, "%s", val);
        } else if (strcmp(key, "bindir") == 0) {
            if (seen_bindir++) { perr(P, "bindir given twice"); return; }
            if (val[0] != '/') { perr(P, "bindir must be an absolute folder, not '%s'", val); return; }
            if (strlen(val) >= sizeof tmp.bindir) { perr(P, "bindir too long"); return; }
            for (const char *q = val; *q; q++)
                if (*q == '\'' || *q == '\n') { perr(P, "bindir may not contain quotes"); return; }
            snprintf(tmp.bindir, sizeof tmp.bindir, "%s", val);
        } else if (strcmp(key, "ports") == 0) {
            if (seen_ports++) { perr(P, "ports given twice"); return; }
            char buf[64];
            snprintf(buf, sizeof buf, "%s", val);
            char *dash = strchr(buf, '-');
            long long lo, hi;
            if (dash) *dash = 0;
            if (!dash || parse_port(buf, &lo) < 0 || parse_port(dash + 1, &hi) < 0 || lo > hi) {
                perr(P, "bad ports '%s' (expected FIRST-LAST, 1..65535)", val);
                return;
            }
            tmp.port_lo = (int)lo;
            tmp.port_hi = (int)hi;
        } else {
            perr(P, "unknown host key '%s' (host keys: address, bindir, ports)", key);
            return;
        }
    }
    if (!tmp.address[0]) snprintf(tmp.address, sizeof tmp.address, "%s", strcmp(name, "localhost") == 0 ? "127.0.0.1" : name);
    tmp.line = P->line;
    if (h < 0) {
        if (pl->nhosts >= PIPE_MAX_HOSTS) { perr(P, "too many hosts (max %d)", PIPE_MAX_HOSTS); return; }
        h = pl->nhosts++;
    }
    pl->hosts[h] = tmp;
}

static PipeProc *new_proc(Parser *P) {
    Pipeline *pl = P->pl;
    if (pl->nprocs >= PIPE_MAX_PROCS) {
        perr(P, "too many processes (max %d)", PIPE_MAX_PROCS);
        return NULL;
    }
    if (pl->nprocs == P->proc_cap) {
        int cap = P->proc_cap ? P->proc_cap * 2 : 8;
        PipeProc *np = realloc(pl->procs, (size_t)cap * sizeof *np);
        if (!np) msd_die("out of memory for %d processes", cap);
        pl->procs = np;
        P->proc_cap = cap;
    }
    PipeProc *p = &pl->procs[pl->nprocs++];
    memset(p, 0, sizeof *p);
    p->gpu = -1;
    p->index = -1;
    p->server = -1;
    return p;
}

/* Split a comma list into items appended to out[] (strdup'd when dup). */
static int split_list(Parser *P, const char *key, char *val, char **out, int *n, int max) {
    if (!*val) return perr(P, "empty %s= list", key);
    for (char *s = val;;) {
        char *comma = strchr(s, ',');
        if (comma) *comma = 0;
        if (!*s) return perr(P, "empty item in %s= list", key);
        if (*n >= max) return perr(P, "too many items in %s= (max %d)", key, max);
        out[(*n)++] = s;
        if (!comma) break;
        s = comma + 1;
    }
    return 0;
}

/* The key=value words and '--' arguments of one (replica of a) proc line. */
static int proc_keys(Parser *P, PipeProc *p) {
    Toks *t = &P->toks;
    int seen_role = 0, seen_bind = 0, seen_connect = 0, seen_gpu = 0, seen_host = 0, seen_server = 0;
    int i = 0;
    for (; i < t->n; i++) {
        if (strcmp(t->v[i], "--") == 0) { i++; break; }
        char *eq = strchr(t->v[i], '=');
        if (!eq)
            return perr(P, "expected key=value or '--', got '%s' (proc keys: role, bind, connect, gpu, host, server)", t->v[i]);
        *eq = 0;
        const char *key = t->v[i];
        char *val = eq + 1;
        if (strcmp(key, "role") == 0) {
            if (seen_role++) return perr(P, "role given twice");
            if (!valid_name(val, PIPE_MAX_NAME)) return perr(P, "bad role '%s' (letters, digits, _ and -)", val);
            snprintf(p->role, sizeof p->role, "%s", val);
        } else if (strcmp(key, "bind") == 0) {
            if (seen_bind++) return perr(P, "bind given twice (list endpoints with commas)");
            char *items[PIPE_MAX_BINDS];
            int n = 0;
            if (split_list(P, "bind", val, items, &n, PIPE_MAX_BINDS) < 0) return -1;
            for (int k = 0; k < n; k++) {
                if (!valid_name(items[k], 24)) return perr(P, "bad endpoint name '%s' (letters, digits, _ and -, max 23)", items[k]);
                for (int q = 0; q < p->nbinds; q++)
                    if (strcmp(p->binds[q].name, items[k]) == 0) return perr(P, "endpoint '%s' bound twice", items[k]);
                snprintf(p->binds[p->nbinds++].name, PIPE_MAX_NAME, "%s", items[k]);
            }
        } else if (strcmp(key, "connect") == 0) {
            if (seen_connect++) return perr(P, "connect given twice (list peers with commas)");
            char *items[PIPE_MAX_CONNECTS];
            int n = 0;
            if (split_list(P, "connect", val, items, &n, PIPE_MAX_CONNECTS) < 0) return -1;
            for (int k = 0; k < n; k++) {
                if (strlen(items[k]) >= 3 * PIPE_MAX_NAME) return perr(P, "connect item too long: '%.60s...'", items[k]);
                p->raw_connect[p->nraw++] = msd_strdup(items[k]);
            }
        } else if (strcmp(key, "gpu") == 0) {
            if (seen_gpu++) return perr(P, "gpu given twice");
            if (strcmp(val, "none") == 0 || strcmp(val, "cpu") == 0) {
                p->gpu = -1;
            } else {
                long long g;
                char why[96];
                if (eval_int(val, &g, why, sizeof why) < 0)
                    return perr(P, "bad gpu '%s': %s (expected a GPU number, or none)", val, why);
                if (g < 0 || g > PIPE_MAX_GPU) return perr(P, "bad gpu %lld (expected 0..%d, or none)", g, PIPE_MAX_GPU);
                p->gpu = (int)g;
            }
        } else if (strcmp(key, "host") == 0) {
            if (seen_host++) return perr(P, "host given twice");
            if (!valid_hostish(val) || strlen(val) >= PIPE_MAX_NAME) return perr(P, "bad host name '%s'", val);
            snprintf(p->hostname, sizeof p->hostname, "%s", val);
        } else if (strcmp(key, "server") == 0) {
            if (seen_server++) return perr(P, "server given twice");
            if (strcmp(val, "yes") == 0) p->server = 1;
            else if (strcmp(val, "no") == 0) p->server = 0;
            else return perr(P, "bad server '%s' (expected yes or no)", val);
        } else {
            return perr(P, "unknown proc key '%s' (proc keys: role, bind, connect, gpu, host, server)", key);
        }
    }
    for (; i < t->n; i++) {
        if (p->argc >= PIPE_MAX_ARGS) return perr(P, "too many arguments (max %d)", PIPE_MAX_ARGS);
        p->argv[p->argc++] = msd_strdup(t->v[i]);
    }
    return 0;
}

/* proc NAME[VAR in FIRST..LAST] key=value ... -- args ... */
static void st_proc(Parser *P, const char *rest) {
    Pipeline *pl = P->pl;
    const char *s = rest;
    while (*s == ' ' || *s == '\t') s++;
    const char *name = s;
    while (is_name_char((unsigned char)*s)) s++;
    size_t n = (size_t)(s - name);
    if (n == 0) { perr(P, "expected a process name after 'proc' (letters, digits, _ and -)"); return; }
    if (n > 40) { perr(P, "process name too long (max 40)"); return; }
    char group[PIPE_MAX_NAME];
    memcpy(group, name, n);
    group[n] = 0;
    long lo = 0, hi = 0;
    int replicated = 0;
    char rvar[PIPE_MAX_NAME] = "";
    if (*s == '[') {
        const char *close = strchr(s, ']');
        if (!close) { perr(P, "unterminated '[' (expected %s[VAR in FIRST..LAST])", group); return; }
        char inside[PIPE_MAX_LINE];
        size_t il = (size_t)(close - s - 1);
        memcpy(inside, s + 1, il);
        inside[il] = 0;
        s = close + 1;
        /* VAR in RANGE */
        char *q = inside;
        while (*q == ' ' || *q == '\t') q++;
        char *vn = q;
        while (is_ident((unsigned char)*q)) q++;
        size_t vl = (size_t)(q - vn);
        if (vl == 0 || vl >= PIPE_MAX_NAME || !is_ident_start((unsigned char)vn[0])) {
            perr(P, "bad replica range '[%s]' (expected [VAR in FIRST..LAST], e.g. [k in 0..$K-1])", inside);
            return;
        }
        memcpy(rvar, vn, vl);
        rvar[vl] = 0;
        while (*q == ' ' || *q == '\t') q++;
        if (strncmp(q, "in", 2) != 0 || (q[2] != ' ' && q[2] != '\t')) {
            perr(P, "bad replica range '[%s]' (expected [VAR in FIRST..LAST], e.g. [k in 0..$K-1])", inside);
            return;
        }
        q += 2;
        if (find_var(pl, rvar, vl)) { perr(P, "replica variable '%s' hides the variable of the same name", rvar); return; }
        char range[PIPE_MAX_LINE + 64];
        if (expand(P, q, strlen(q), range, sizeof range) < 0) return;
        char *dots = strstr(range, "..");
        if (!dots) { perr(P, "bad replica range '%s' (expected FIRST..LAST)", range); return; }
        *dots = 0;
        long long a, b;
        char why[96];
        if (eval_int(range, &a, why, sizeof why) < 0) { perr(P, "bad range start '%s': %s", range, why); return; }
        if (eval_int(dots + 2, &b, why, sizeof why) < 0) { perr(P, "bad range end '%s': %s", dots + 2, why); return; }
        if (a < 0) { perr(P, "range %lld..%lld starts below 0", a, b); return; }
        if (b < a) { perr(P, "empty range %lld..%lld (no %s would run)", a, b, group); return; }
        if (b - a + 1 > PIPE_MAX_PROCS || b > 9999) { perr(P, "range %lld..%lld too large (max %d replicas)", a, b, PIPE_MAX_PROCS); return; }
        lo = (long)a;
        hi = (long)b;
        replicated = 1;
    }
    if (*s && *s != ' ' && *s != '\t') { perr(P, "unexpected '%c' after the process name", *s); return; }
    for (int i = 0; i < pl->nprocs; i++) {
        if (strcmp(pl->procs[i].group, group) == 0) {
            perr(P, "duplicate process name '%s' (first declared at line %d)", group, pl->procs[i].line);
            return;
        }
    }
    for (long r = lo; r <= hi; r++) {
        P->rvar = replicated ? rvar : NULL;
        P->rval = r;
        int rc = tokenize(P, s);
        P->rvar = NULL;
        if (rc < 0) return;
        PipeProc *p = new_proc(P);
        if (!p) return;
        snprintf(p->group, sizeof p->group, "%s", group);
        if (replicated) {
            char full[PIPE_MAX_NAME + 32]; /* group <= 40 bytes and r <= 9999: it fits */
            snprintf(full, sizeof full, "%s.%ld", group, r);
            snprintf(p->name, sizeof p->name, "%.*s", (int)sizeof p->name - 1, full);
            p->index = (int)r;
        } else {
            snprintf(p->name, sizeof p->name, "%s", group);
        }
        p->line = P->line;
        snprintf(p->hostname, sizeof p->hostname, "localhost");
        if (proc_keys(P, p) < 0) return;
        if (!p->role[0]) snprintf(p->role, sizeof p->role, "%s", group);
        if (p->server < 0) p->server = p->nbinds > 0;
    }
}

/* One line: strip the comment, dispatch on the first word. */
static void parse_line(Parser *P, char *s) {
    /* a '#' at the start or after a blank, outside quotes, starts a comment */
    char quote = 0;
    for (char *q = s; *q; q++) {
        if (quote) {
            if (*q == '\\' && quote == '"' && q[1]) q++;
            else if (*q == quote) quote = 0;
        } else if (*q == '\\' && q[1]) {
            q++;
        } else if (*q == '\'' || *q == '"') {
            quote = *q;
        } else if (*q == '#' && (q == s || q[-1] == ' ' || q[-1] == '\t')) {
            *q = 0;
            break;
        }
    }
    while (*s == ' ' || *s == '\t') s++;
    size_t len = strlen(s);
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t')) s[--len] = 0;
    if (!*s) return;
    char *kw = s;
    while (*s && *s != ' ' && *s != '\t') s++;
    if (*s) *s++ = 0;
    if (strcmp(kw, "var") == 0) st_var(P, s);
    else if (strcmp(kw, "proc") == 0) st_proc(P, s);
    else if (strcmp(kw, "host") == 0) st_host(P, s);
    else if (strcmp(kw, "stdin") == 0) st_stdin(P, s);
    else if (strcmp(kw, "pipeline") == 0) st_pipeline(P, s);
    else perr(P, "unknown statement '%.40s' (expected pipeline, var, host, proc or stdin)", kw);
}

/* ---- resolution ---------------------------------------------------------------------- */

static int choose_bind(Parser *P, const PipeProc *t, const char *ep, int line) {
    if (ep) {
        for (int b = 0; b < t->nbinds; b++)
            if (strcmp(t->binds[b].name, ep) == 0) return b;
        return perr_at(P, line, "'%s' does not bind an endpoint '%s'", t->name, ep);
    }
    if (t->nbinds == 0) return perr_at(P, line, "'%s' binds no endpoint to connect to (give it bind=serve)", t->name);
    for (int b = 0; b < t->nbinds; b++)
        if (strcmp(t->binds[b].name, "serve") == 0) return b;
    if (t->nbinds == 1) return 0;
    return perr_at(P, line, "'%s' binds several endpoints; name one as %s:ENDPOINT", t->name, t->name);
}

static int add_connect(Parser *P, PipeProc *p, const char *peer, int target, int bind) {
    if (target == p - P->pl->procs) return perr_at(P, p->line, "process '%s' connects to itself", p->name);
    if (strlen(peer) >= PIPE_MAX_NAME) return perr_at(P, p->line, "peer name '%s' too long", peer);
    for (int c = 0; c < p->nconnects; c++)
        if (strcmp(p->connects[c].peer, peer) == 0)
            return perr_at(P, p->line, "'%s' connects twice to a peer named '%s'", p->name, peer);
    if (p->nconnects >= PIPE_MAX_CONNECTS)
        return perr_at(P, p->line, "'%s' connects to too many peers (max %d)", p->name, PIPE_MAX_CONNECTS);
    PipeConnect *c = &p->connects[p->nconnects++];
    snprintf(c->peer, sizeof c->peer, "%s", peer);
    c->target = target;
    c->bind = bind;
    return 0;
}

/* "[ALIAS=]TARGET[:ENDPOINT]": TARGET is a process, or a replicated group (all replicas). */
static int resolve_connect(Parser *P, PipeProc *p, const char *item) {
    Pipeline *pl = P->pl;
    char buf[3 * PIPE_MAX_NAME + 8];
    snprintf(buf, sizeof buf, "%s", item);
    char *alias = NULL, *target = buf, *ep = NULL;
    char *eq = strchr(buf, '=');
    if (eq) { *eq = 0; alias = buf; target = eq + 1; }
    char *colon = strchr(target, ':');
    if (colon) { *colon = 0; ep = colon + 1; }
    if (alias && !valid_name(alias, PIPE_MAX_NAME - 6))
        return perr_at(P, p->line, "bad peer alias '%s' in connect=%s", alias, item);
    if (ep && !valid_name(ep, PIPE_MAX_NAME)) return perr_at(P, p->line, "bad endpoint name in connect=%s", item);
    if (!*target) return perr_at(P, p->line, "missing process name in connect=%s", item);
    int t = pipeline_find_proc(pl, target);
    if (t >= 0 && strcmp(pl->procs[t].group, target) == 0 && pl->procs[t].index < 0) {
        int b = choose_bind(P, &pl->procs[t], ep, p->line);
        return b < 0 ? -1 : add_connect(P, p, alias ? alias : target, t, b);
    }
    if (t >= 0) { /* one replica by its full name, e.g. critic.3 */
        int b = choose_bind(P, &pl->procs[t], ep, p->line);
        return b < 0 ? -1 : add_connect(P, p, alias ? alias : target, t, b);
    }
    int found = 0;
    for (int i = 0; i < pl->nprocs; i++) {
        PipeProc *q = &pl->procs[i];
        if (strcmp(q->group, target) != 0) continue;
        found = 1;
        int b = choose_bind(P, q, ep, p->line);
        if (b < 0) return -1;
        char peer[sizeof buf + 16];
        snprintf(peer, sizeof peer, "%s.%d", alias ? alias : target, q->index);
        if (add_connect(P, p, peer, i, b) < 0) return -1;
    }
    if (!found) return perr_at(P, p->line, "connect: no process named '%s'", target);
    return 0;
}

static int parse_seconds(Parser *P, const char *name) {
    PipeVar *v = find_var(P->pl, name, strlen(name));
    char *end;
    errno = 0;
    double d = strtod(v->value, &end);
    if (errno || end == v->value || *end || !(d > 0) || d > 86400) {
        if (v->from_set) return perr_at(P, -1, "--set %s=%s: expected a number of seconds (0 < s <= 86400)", name, v->value);
        return perr_at(P, v->line, "%s must be a number of seconds (0 < s <= 86400), not '%s'", name, v->value);
    }
    if (strcmp(name, "ready_timeout") == 0) P->pl->ready_timeout = d;
    else if (strcmp(name, "stop_timeout") == 0) P->pl->stop_timeout = d;
    else P->pl->reply_timeout = d;
    return 0;
}

static void resolve(Parser *P) {
    Pipeline *pl = P->pl;
    if (pl->nprocs == 0) { perr_at(P, 0, "no processes (add a 'proc NAME ...' line)"); return; }
    for (int i = 0; i < pl->nprocs; i++) {
        PipeProc *p = &pl->procs[i];
        int h = find_host(pl, p->hostname);
        if (h < 0) {
            perr_at(P, p->line, "unknown host '%s' (declare it first: host %s address=ADDRESS)", p->hostname, p->hostname);
            continue;
        }
        p->host = h;
    }
    for (int i = 0; i < pl->nprocs && P->nerrors < PIPE_MAX_ERRORS; i++) {
        PipeProc *p = &pl->procs[i];
        for (int k = 0; k < p->nraw; k++)
            if (resolve_connect(P, p, p->raw_connect[k]) < 0) break;
    }
    if (P->stdin_line) {
        int t = pipeline_find_proc(pl, P->stdin_name);
        if (t < 0) perr_at(P, P->stdin_line, "stdin: no process named '%s' (name one process, e.g. router or student.0)", P->stdin_name);
        pl->stdin_proc = t;
    }
    parse_seconds(P, "ready_timeout");
    parse_seconds(P, "stop_timeout");
    parse_seconds(P, "reply_timeout");
}

/* ---- entry points -------------------------------------------------------------------- */

static void free_raw(Pipeline *pl) {
    for (int i = 0; i < pl->nprocs; i++) {
        for (int k = 0; k < pl->procs[i].nraw; k++) free(pl->procs[i].raw_connect[k]);
        pl->procs[i].nraw = 0;
    }
}

void pipeline_free(Pipeline *pl) {
    if (!pl) return;
    free_raw(pl);
    for (int i = 0; i < pl->nprocs; i++)
        for (int k = 0; k < pl->procs[i].argc; k++) free(pl->procs[i].argv[k]);
    free(pl->procs);
    for (int i = 0; i < pl->nlines; i++) free(pl->lines[i]);
    free(pl->lines);
    memset(pl, 0, sizeof *pl);
    pl->stdin_proc = -1;
}

/* A printable copy of a raw line for error messages: controls become '?', long lines cut. */
static char *printable_line(const char *s, size_t n) {
    size_t show = n > 200 ? 200 : n;
    char *out = msd_malloc(show + 4);
    for (size_t i = 0; i < show;) {
        unsigned char c = (unsigned char)s[i];
        /* valid UTF-8 sequences are kept; anything else that is not printable becomes '?' */
        size_t seq = c >= 0xf0 && c < 0xf5 ? 4 : c >= 0xe0 && c < 0xf0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 1;
        if (c >= 0x80 && seq > 1 && i + seq <= show) {
            size_t k = 1;
            while (k < seq && ((unsigned char)s[i + k] & 0xc0) == 0x80) k++;
            if (k == seq) {
                memcpy(out + i, s + i, seq);
                i += seq;
                continue;
            }
        }
        out[i++] = (c < 0x20 && c != '\t') || c >= 0x7f ? '?' : (char)c;
    }
    if (show < n) memcpy(out + show, "...", 4);
    else out[show] = 0;
    return out;
}

static void default_name(Pipeline *pl, const char *path) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strcspn(base, ".");
    char buf[PIPE_MAX_NAME];
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < sizeof buf; i++)
        buf[o++] = is_name_char((unsigned char)base[i]) ? base[i] : '_';
    buf[o] = 0;
    snprintf(pl->name, sizeof pl->name, "%s", o ? buf : "pipeline");
}

int pipeline_parse(Pipeline *pl, const char *path, const char *text, size_t len, int nsets,
                   char *const *sets, char *err, size_t errlen) {
    memset(pl, 0, sizeof *pl);
    pl->stdin_proc = -1;
    if (err && errlen) err[0] = 0;
    snprintf(pl->path, sizeof pl->path, "%s", path);
    default_name(pl, path);
    Parser *P = msd_calloc(1, sizeof *P);
    P->pl = pl;
    P->err = err;
    P->errlen = errlen;
    P->nsets = nsets < (int)(sizeof P->set_used / sizeof P->set_used[0]) ? nsets : (int)(sizeof P->set_used / sizeof P->set_used[0]);
    P->sets = sets;
    if (nsets > P->nsets) perr_at(P, -1, "too many --set options (max %d)", P->nsets);
    for (int i = 0; i < P->nsets; i++) {
        const char *eq = strchr(sets[i], '=');
        char name[PIPE_MAX_NAME + 1];
        size_t n = eq ? (size_t)(eq - sets[i]) : 0;
        if (n > PIPE_MAX_NAME) n = PIPE_MAX_NAME;
        if (eq) memcpy(name, sets[i], n);
        name[n] = 0;
        if (!eq || !valid_ident(name)) {
            perr_at(P, -1, "--set %.80s: expected NAME=VALUE", sets[i]);
            P->set_used[i] = 1;
        } else if (strlen(eq + 1) >= PIPE_MAX_VALUE) {
            perr_at(P, -1, "--set %s: value too long (max %d)", name, PIPE_MAX_VALUE - 1);
            P->set_used[i] = 1;
        }
    }
    /* built-in variables */
    static const char *builtin[][2] = {{"ready_timeout", PIPE_DEFAULT_READY_TIMEOUT},
                                       {"stop_timeout", PIPE_DEFAULT_STOP_TIMEOUT},
                                       {"reply_timeout", PIPE_DEFAULT_REPLY_TIMEOUT}};
    for (int i = 0; i < 3; i++) {
        const char *over = NULL;
        set_value(P, builtin[i][0], &over);
        PipeVar *v = add_var(P, builtin[i][0], over ? over : builtin[i][1], 0);
        v->from_set = over != NULL;
    }
    {
        /* pipeline_dir: the absolute folder of the file, so a pipeline can name files that
         * live beside it (e.g. $pipeline_dir/mog8.mix) from whatever folder it is started in */
        char dir[PATH_MAX], real[PATH_MAX];
        snprintf(dir, sizeof dir, "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash) *slash = 0;
        else snprintf(dir, sizeof dir, ".");
        if (!realpath(dir[0] ? dir : "/", real)) snprintf(real, sizeof real, "%s", dir);
        char value[PIPE_MAX_VALUE];
        if (strlen(real) >= sizeof value) {
            perr_at(P, -1, "the pipeline file's folder path is longer than %d bytes", PIPE_MAX_VALUE - 1);
            real[sizeof value - 1] = 0;
        }
        memcpy(value, real, strlen(real) + 1);
        const char *over = NULL;
        set_value(P, "pipeline_dir", &over);
        PipeVar *v = add_var(P, "pipeline_dir", over ? over : value, 0);
        v->from_set = over != NULL;
    }
    /* localhost is always host 0 */
    snprintf(pl->hosts[0].name, sizeof pl->hosts[0].name, "localhost");
    snprintf(pl->hosts[0].address, sizeof pl->hosts[0].address, "127.0.0.1");
    pl->nhosts = 1;

    if (len > PIPE_MAX_FILE) {
        perr_at(P, 0, "file too large (%zu bytes, max %d)", len, PIPE_MAX_FILE);
    } else {
        /* store printable copies of every line first, so errors can quote any of them */
        int cap = 64;
        pl->lines = msd_calloc((size_t)cap, sizeof *pl->lines);
        for (size_t i = 0; i < len;) {
            size_t j = i;
            while (j < len && text[j] != '\n') j++;
            if (pl->nlines == cap) {
                cap *= 2;
                char **nl = realloc(pl->lines, (size_t)cap * sizeof *nl);
                if (!nl) msd_die("out of memory reading %s", path);
                pl->lines = nl;
            }
            pl->lines[pl->nlines++] = printable_line(text + i, j - i);
            i = j + 1;
        }
        char *buf = msd_malloc(PIPE_MAX_LINE + 1);
        size_t i = 0;
        for (int ln = 1; ln <= pl->nlines && P->nerrors < PIPE_MAX_ERRORS; ln++) {
            size_t j = i;
            while (j < len && text[j] != '\n') j++;
            size_t n = j - i;
            P->line = ln;
            P->line_failed = 0;
            if (n > 0 && text[i + n - 1] == '\r') n--;
            int bad = 0;
            for (size_t k = 0; k < n; k++) {
                unsigned char c = (unsigned char)text[i + k];
                if ((c < 0x20 && c != '\t') || c == 0x7f) {
                    perr(P, "binary data (byte 0x%02x at column %zu); a pipeline file is text", c, k + 1);
                    bad = 1;
                    break;
                }
            }
            if (!bad && n + 1 > PIPE_MAX_LINE) {
                perr(P, "line too long (%zu bytes, max %d)", n, PIPE_MAX_LINE - 1);
                bad = 1;
            }
            if (!bad) {
                memcpy(buf, text + i, n);
                buf[n] = 0;
                parse_line(P, buf);
            }
            i = j + 1;
        }
        free(buf);
    }
    for (int i = 0; i < P->nsets; i++) {
        if (P->set_used[i]) continue;
        char names[512] = "";
        size_t o = 0;
        for (int v = 0; v < pl->nvars && o + 2 < sizeof names; v++) {
            int w = snprintf(names + o, sizeof names - o, "%s%s", v ? ", " : "", pl->vars[v].name);
            if (w > 0) o += (size_t)w;
            if (o >= sizeof names) o = sizeof names - 1;
        }
        const char *eq = strchr(sets[i], '=');
        perr_at(P, -1, "--set %.*s: %s has no variable of that name (it has: %s)",
                (int)(eq ? eq - sets[i] : 0), sets[i], path, names);
    }
    if (P->nerrors == 0) resolve(P);
    free_raw(pl);
    int rc = P->nerrors ? -1 : 0;
    free(P);
    if (rc < 0) pipeline_free(pl);
    return rc;
}

int pipeline_load(Pipeline *pl, const char *path, int nsets, char *const *sets, char *err, size_t errlen) {
    memset(pl, 0, sizeof *pl);
    pl->stdin_proc = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return msd_errf(err, errlen, "%s: cannot open: %s\n", path, strerror(errno));
    char *buf = msd_malloc(PIPE_MAX_FILE + 1);
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fd, buf + len, PIPE_MAX_FILE + 1 - len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            free(buf);
            return msd_errf(err, errlen, "%s: cannot read: %s\n", path, strerror(e));
        }
        if (r == 0) break;
        len += (size_t)r;
        if (len > PIPE_MAX_FILE) break;
    }
    close(fd);
    int rc = pipeline_parse(pl, path, buf, len, nsets, sets, err, errlen);
    free(buf);
    return rc;
}

/* ---- endpoints ----------------------------------------------------------------------- */

int pipeline_has_remote(const Pipeline *pl) {
    for (int i = 0; i < pl->nprocs; i++)
        if (pl->procs[i].host != 0) return 1;
    return 0;
}

const char *pipeline_connect_endpoint(const Pipeline *pl, const PipeConnect *c) {
    return pl->procs[c->target].binds[c->bind].endpoint;
}

int pipeline_plan(Pipeline *pl, const char *rundir, PipePortFn pick, void *ctx, char *err, size_t errlen) {
    for (int i = 0; i < pl->nprocs; i++) {
        PipeProc *p = &pl->procs[i];
        for (int b = 0; b < p->nbinds; b++) p->binds[b].tcp = 0;
    }
    for (int i = 0; i < pl->nprocs; i++) {
        PipeProc *p = &pl->procs[i];
        for (int c = 0; c < p->nconnects; c++) {
            PipeProc *t = &pl->procs[p->connects[c].target];
            if (t->host != p->host) t->binds[p->connects[c].bind].tcp = 1;
        }
    }
    for (int i = 0; i < pl->nprocs; i++) {
        PipeProc *p = &pl->procs[i];
        for (int b = 0; b < p->nbinds; b++) {
            PipeBind *bd = &p->binds[b];
            int n;
            if (!bd->tcp) {
                n = snprintf(bd->endpoint, sizeof bd->endpoint, "ipc://%s/%s.%s", rundir ? rundir : "$RUNDIR", p->name, bd->name);
                if (n < 0 || (size_t)n >= sizeof bd->endpoint || (size_t)n - 6 > 107)
                    return msd_errf(err, errlen, "run directory %s is too long for ipc endpoints (a socket path is at most 107 bytes); use --run-dir with a shorter folder", rundir ? rundir : "$RUNDIR");
                continue;
            }
            const PipeHost *h = &pl->hosts[p->host];
            int v6 = strchr(h->address, ':') && h->address[0] != '[';
            char port[16] = "*";
            if (pick) {
                int pt = pick(h, ctx, err, errlen);
                if (pt < 0) return -1;
                bd->port = pt;
                snprintf(port, sizeof port, "%d", pt);
            }
            n = snprintf(bd->endpoint, sizeof bd->endpoint, "tcp://%s%s%s:%s", v6 ? "[" : "", h->address, v6 ? "]" : "", port);
            if (n < 0 || (size_t)n >= sizeof bd->endpoint) return msd_errf(err, errlen, "address of host %s too long", h->name);
        }
    }
    return 0;
}
