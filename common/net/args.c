/* args.c: see args.h. */
#include "args.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *args_value(Proc *p, int *i) {
    if (*i + 1 >= p->argc) {
        fprintf(stderr, "[%s] ERROR %s needs a value (try --help)\n", p->name, p->argv[*i]);
        return NULL;
    }
    return p->argv[++*i];
}

int args_long(Proc *p, int *i, long *out, long lo, long hi) {
    const char *opt = p->argv[*i], *v = args_value(p, i);
    if (!v) return -1;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (!*v || *end || errno || x < lo || x > hi) {
        fprintf(stderr, "[%s] ERROR %s %s: expected an integer in %ld..%ld\n", p->name, opt, v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

int args_int(Proc *p, int *i, int *out, int lo, int hi) {
    long x;
    if (args_long(p, i, &x, lo, hi)) return -1;
    *out = (int)x;
    return 0;
}

int args_u64(Proc *p, int *i, uint64_t *out) {
    const char *opt = p->argv[*i], *v = args_value(p, i);
    if (!v) return -1;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (!*v || *end || errno || v[0] == '-') {
        fprintf(stderr, "[%s] ERROR %s %s: expected a non-negative integer\n", p->name, opt, v);
        return -1;
    }
    *out = x;
    return 0;
}

int args_float(Proc *p, int *i, float *out, double lo, double hi) {
    const char *opt = p->argv[*i], *v = args_value(p, i);
    if (!v) return -1;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || errno || !isfinite(x) || x < lo || x > hi) {
        fprintf(stderr, "[%s] ERROR %s %s: expected a number in [%g, %g]\n", p->name, opt, v, lo, hi);
        return -1;
    }
    *out = (float)x;
    return 0;
}

int args_str(Proc *p, int *i, const char **out) {
    const char *v = args_value(p, i);
    if (!v) return -1;
    *out = v;
    return 0;
}

int args_unknown(Proc *p, const char *a) {
    fprintf(stderr, "[%s] ERROR unknown option %s (try --help)\n", p->name, a);
    return 2;
}

const char *args_mode(const Proc *p, const char *def) {
    for (int i = 1; i + 1 < p->argc; i++)
        if (args_is(p->argv[i], "--mode")) return p->argv[i + 1];
    return def;
}

int args_cpu_only(const Proc *p, const char *why) {
    if (p->gpu < 0) return 0;
    fprintf(stderr, "[%s] ERROR --gpu %d: %s runs on the CPU only; leave out --gpu (gpu= in the pipeline)\n", p->name,
            p->gpu, why);
    return 2;
}
