/* args.c: see args.h. */
#include "args.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "log.h"

int args_num_long(const char *opt, const char *v, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (!*v || *end || errno || x < lo || x > hi)
        return msd_fail(-1, "%s %s: expected an integer in %ld..%ld", opt, v, lo, hi);
    *out = x;
    return 0;
}

int args_num_int(const char *opt, const char *v, int lo, int hi, int *out) {
    long x = 0;
    if (args_num_long(opt, v, lo, hi, &x)) return -1;
    *out = (int)x;
    return 0;
}

int args_num_u64(const char *opt, const char *v, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (!*v || *end || errno || v[0] == '-') return msd_fail(-1, "%s %s: expected a non-negative integer", opt, v);
    *out = x;
    return 0;
}

int args_num_double(const char *opt, const char *v, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || errno || !isfinite(x) || x < lo || x > hi)
        return msd_fail(-1, "%s %s: expected a number in [%g, %g]", opt, v, lo, hi);
    *out = x;
    return 0;
}

/* The entry of table (or of a table it includes) named a (up to len characters), or NULL. */
static const ArgSpec *args_find(const ArgSpec *t, const char *a, size_t len) {
    for (; t && t->kind != ARG_END; t++) {
        if (t->kind == ARG_INCLUDE) {
            const ArgSpec *s = args_find(t->ptr, a, len);
            if (s) return s;
        } else if (t->name && strlen(t->name) == len && !strncmp(t->name, a, len)) {
            return t;
        }
    }
    return NULL;
}

static int args_set(const ArgSpec *s, char *v) {
    switch (s->kind) {
    case ARG_LIST: {
        ArgList *l = s->ptr;
        if (l->n >= l->cap) return msd_fail(-1, "%s: given more than %d times", s->name, l->cap);
        l->v[l->n++] = v;
        return 0;
    }
    case ARG_STR: *(const char **)s->ptr = v; return 0;
    case ARG_INT: return args_num_int(s->name, v, (int)s->lo, (int)s->hi, s->ptr);
    case ARG_LONG: return args_num_long(s->name, v, (long)s->lo, (long)s->hi, s->ptr);
    case ARG_U64: return args_num_u64(s->name, v, s->ptr);
    case ARG_FLOAT: {
        double x = 0;
        if (args_num_double(s->name, v, s->lo, s->hi, &x)) return -1;
        *(float *)s->ptr = (float)x;
        return 0;
    }
    case ARG_DOUBLE: return args_num_double(s->name, v, s->lo, s->hi, s->ptr);
    default: MSD_CHECK(!"an option kind that takes a value");
    }
    return -1;
}

/* The first positional entry of table (or of a table it includes) not in seen[], or NULL. */
static const ArgSpec *args_next_pos(const ArgSpec *t, const ArgSpec **seen, int nseen) {
    for (; t && t->kind != ARG_END; t++) {
        if (t->kind == ARG_INCLUDE) {
            const ArgSpec *s = args_next_pos(t->ptr, seen, nseen);
            if (s) return s;
        } else if (t->kind == ARG_POS) {
            int used = 0;
            for (int i = 0; i < nseen && !used; i++) used = seen[i] == t;
            if (!used) return t;
        }
    }
    return NULL;
}

/* Required options not seen: seen[] holds the entries that were given. */
static int args_check_required(const ArgSpec *t, const ArgSpec **seen, int nseen, const char *what) {
    for (; t && t->kind != ARG_END; t++) {
        if (t->kind == ARG_INCLUDE) {
            if (args_check_required(t->ptr, seen, nseen, what)) return 2;
            continue;
        }
        if (!t->required) continue;
        int found = 0;
        for (int i = 0; i < nseen && !found; i++) found = seen[i] == t;
        if (!found && t->kind == ARG_POS)
            return msd_fail(2, "%s%sneeds %s", what ? what : "", what ? " " : "", t->meta ? t->meta : "an argument");
        if (!found)
            return msd_fail(2, "%s%sneeds %s%s%s", what ? what : "", what ? " " : "", t->name, t->meta ? " " : "",
                            t->meta ? t->meta : "");
    }
    return 0;
}

int args_parse(int argc, char **argv, int first, const ArgSpec *table, const char *what) {
    const ArgSpec **seen = calloc((size_t)argc + 1, sizeof *seen);
    if (!seen) msd_die("out of memory");
    int nseen = 0, rc = 0;
    for (int i = first; i < argc && !rc; i++) {
        const char *a = argv[i], *eq = a[0] == '-' && a[1] == '-' ? strchr(a, '=') : NULL;
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        if (strncmp(a, "--", 2) != 0) {
            const ArgSpec *s = args_next_pos(table, seen, nseen);
            if (!s) { rc = msd_fail(2, "unexpected argument '%s' (try --help)", a); break; }
            seen[nseen++] = s;
            *(const char **)s->ptr = a;
            continue;
        }
        const ArgSpec *s = args_find(table, a, len);
        if (!s) { rc = msd_fail(2, "unknown option %s (try --help)", a); break; }
        seen[nseen++] = s;
        if (s->kind == ARG_FLAG) {
            if (eq) { rc = msd_fail(2, "%s takes no value (try --help)", s->name); break; }
            *(int *)s->ptr = 1;
            continue;
        }
        char *v = eq ? (char *)eq + 1 : NULL;
        if (!v) {
            if (i + 1 >= argc) { rc = msd_fail(2, "%s needs a value (try --help)", a); break; }
            v = argv[++i];
        }
        if (args_set(s, v)) rc = 2;
    }
    if (!rc) rc = args_check_required(table, seen, nseen, what);
    free(seen);
    return rc;
}

static void args_usage_at(FILE *f, const ArgSpec *t) {
    for (; t && t->kind != ARG_END; t++) {
        if (t->kind == ARG_INCLUDE) { args_usage_at(f, t->ptr); continue; }
        char left[96];
        if (t->kind == ARG_POS) snprintf(left, sizeof left, "%s", t->meta ? t->meta : "ARG");
        else snprintf(left, sizeof left, "%s%s%s", t->name, t->meta ? " " : "", t->meta ? t->meta : "");
        fprintf(f, "  %-22s ", left);
        if (strlen(left) > 22) fprintf(f, "\n  %-22s ", "");
        for (const char *h = t->help ? t->help : ""; *h; h++) {
            fputc(*h, f);
            if (*h == '\n') fprintf(f, "  %-22s ", "");
        }
        fprintf(f, "%s\n", t->required ? " (required)" : "");
    }
}

void args_usage(FILE *f, const ArgSpec *table) { args_usage_at(f, table); }

int args_tool(int argc, char **argv, int first, const char *synopsis, const char *about, const ArgSpec *table) {
    for (int i = first; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: %s\n", synopsis);
            if (about) printf("%s", about);
            args_usage(stdout, table);
            exit(0);
        }
    return args_parse(argc, argv, first, table, NULL);
}

const char *args_mode(int argc, char **argv, const char *def) {
    for (int i = 1; i < argc; i++) {
        if (!strncmp(argv[i], "--mode=", 7)) return argv[i] + 7;
        if (!strcmp(argv[i], "--mode") && i + 1 < argc) return argv[i + 1];
    }
    return def;
}
