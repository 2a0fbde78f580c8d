/* pipefile_internal.h: what the three parts of the pipeline-file parser share (pipefile_lex.c:
 * errors, names, variable substitution, words and integer expressions; pipefile_stmt.c: the
 * statements, their resolution and the entry points; pipefile_plan.c: endpoints). Nothing
 * outside tools/msdpipe/pipefile_*.c includes it. */
#ifndef MSD_PIPEFILE_INTERNAL_H
#define MSD_PIPEFILE_INTERNAL_H

#include <stddef.h>

#include "pipefile.h"

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

/* Report an error at `line` (-1: not tied to a line, 0: the whole file) of the file being
 * parsed; always returns -1. perr reports at the current line. */
int pf_perr_at(Parser *P, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#define perr(P, ...) pf_perr_at((P), (P)->line, __VA_ARGS__)
int pf_is_ident_start(int c);
int pf_is_ident(int c);
int pf_is_name_char(int c);
int pf_valid_name(const char *s, size_t max);
int pf_valid_ident(const char *s);
int pf_valid_hostish(const char *s);
PipeVar *pf_find_var(Pipeline *pl, const char *name, size_t n);
int pf_find_host(const Pipeline *pl, const char *name);
int pf_expand(Parser *P, const char *in, size_t len, char *out, size_t cap);
int pf_tokenize(Parser *P, const char *s);
int pf_eval_int(const char *s, long long *out, char *why, size_t whylen);

#endif
