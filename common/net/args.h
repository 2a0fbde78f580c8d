/* args.h: command-line options as a declarative table, for processes and tools alike.
 *
 * One table per mode (or per tool) both parses the options and prints --help, so the usage
 * text and the parser cannot drift:
 *
 *   static struct { const char *mix; int steps; } o = {NULL, 10};      (defaults)
 *   static const ArgSpec args[] = {
 *       ARG_STR_REQ("--mix", &o.mix, "FILE", "mixture specification"),
 *       ARG_INT("--steps", &o.steps, 0, 1000000000, "N", "training steps (default 10)"),
 *       ARG_END_,
 *   };
 *   if (args_parse(argc, argv, 1, args, "--mode mog")) return 2;
 *
 * Values are "--opt VALUE" or "--opt=VALUE". A bad value, a missing value, an unknown option
 * or a missing required option is reported in the one error format (msd_fail in log.h:
 * "[name] ERROR --opt VALUE: expected ...") and args_parse returns 2. ARG_INCLUDE pulls in a
 * shared table (options common to several modes). Numbers alone (a tool's own positional
 * values, a "--k=3"-style value taken apart by hand) go through args_num_*.
 * Not here: the process skeleton's own options and the per-process mode table (proc.h). */
#ifndef MSD_ARGS_H
#define MSD_ARGS_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef enum {
    ARG_END = 0,   /* ends a table */
    ARG_STR,       /* const char *: the value as given */
    ARG_INT,       /* int in [lo, hi] */
    ARG_LONG,      /* long in [lo, hi] */
    ARG_U64,       /* uint64_t, any non-negative integer */
    ARG_FLOAT,     /* float in [lo, hi], finite */
    ARG_DOUBLE,    /* double in [lo, hi], finite */
    ARG_FLAG,      /* int set to 1; takes no value */
    ARG_INCLUDE,   /* ptr is another ArgSpec table, parsed and listed as if written here */
    ARG_POS,       /* const char *: the next argument not starting with "--" (name NULL) */
    ARG_LIST,      /* ArgList: every value of a repeated option, in order */
} ArgKind;

/* A repeated option's values (ARG_LIST): the caller provides v with room for cap. */
typedef struct ArgList {
    char **v;
    int n, cap;
} ArgList;

typedef struct ArgSpec {
    const char *name;      /* "--steps" */
    ArgKind kind;
    void *ptr;             /* where the value goes (ARG_INCLUDE: the included table) */
    double lo, hi;         /* range of ARG_INT, ARG_LONG, ARG_FLOAT, ARG_DOUBLE */
    const char *meta;      /* the value's name in --help ("N", "FILE") */
    const char *help;      /* one line (may hold '\n' for more) */
    int required;          /* 1: args_parse fails when the option is absent */
} ArgSpec;

#define ARG_STR(n, p, meta, help) {n, ARG_STR, (void *)(p), 0, 0, meta, help, 0}
#define ARG_STR_REQ(n, p, meta, help) {n, ARG_STR, (void *)(p), 0, 0, meta, help, 1}
#define ARG_INT(n, p, lo, hi, meta, help) {n, ARG_INT, (void *)(p), lo, hi, meta, help, 0}
#define ARG_LONG(n, p, lo, hi, meta, help) {n, ARG_LONG, (void *)(p), lo, hi, meta, help, 0}
#define ARG_U64(n, p, meta, help) {n, ARG_U64, (void *)(p), 0, 0, meta, help, 0}
#define ARG_FLOAT(n, p, lo, hi, meta, help) {n, ARG_FLOAT, (void *)(p), lo, hi, meta, help, 0}
#define ARG_DOUBLE(n, p, lo, hi, meta, help) {n, ARG_DOUBLE, (void *)(p), lo, hi, meta, help, 0}
#define ARG_FLAG(n, p, help) {n, ARG_FLAG, (void *)(p), 0, 0, NULL, help, 0}
#define ARG_LIST(n, p, meta, help) {n, ARG_LIST, (void *)(p), 0, 0, meta, help, 0}
#define ARG_POS(p, meta, help) {NULL, ARG_POS, (void *)(p), 0, 0, meta, help, 0}
#define ARG_INCLUDE(table) {NULL, ARG_INCLUDE, (void *)(table), 0, 0, NULL, NULL, 0}
#define ARG_END_ {NULL, ARG_END, NULL, 0, 0, NULL, NULL, 0}

/* Parse argv[first..argc-1] against the table. what names the context in "needs" messages ("--mode mog needs --mix FILE";
 * NULL: "needs --mix FILE"). 0, or 2 after a message. */
int args_parse(int argc, char **argv, int first, const ArgSpec *table, const char *what);
/* A tool's command line (argv[first..]): with --help or -h anywhere, prints "usage: SYNOPSIS",
 * about (may be NULL) and the table's lines to stdout and exits 0; else args_parse (what
 * NULL). 0, or 2 after a message. Processes use proc_main (proc.h) instead. */
int args_tool(int argc, char **argv, int first, const char *synopsis, const char *about, const ArgSpec *table);
/* The table's lines for --help: "  --opt META   help", aligned, to f. */
void args_usage(FILE *f, const ArgSpec *table);
/* The value of the first "--mode VALUE" (or "--mode=VALUE") in argv, or def. */
const char *args_mode(int argc, char **argv, const char *def);
/* One value of option opt (for the message), parsed and range-checked; 0, or -1 after a
 * message in the one format. */
int args_num_long(const char *opt, const char *v, long lo, long hi, long *out);
int args_num_int(const char *opt, const char *v, int lo, int hi, int *out);
int args_num_u64(const char *opt, const char *v, uint64_t *out);
int args_num_double(const char *opt, const char *v, double lo, double hi, double *out);

#endif
