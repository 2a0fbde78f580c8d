/* pipefile_stmt.c: the statements of a pipeline file (pipefile.h, docs/PIPELINES.md) and the
 * entry points pipeline_parse / pipeline_load / pipeline_free.
 *
 * One pass over the statements (physical lines joined where one ends in a backslash): each
 * statement (pipeline, var, host, proc, after, stdin) is checked as it is read, variables are
 * substituted into each word as it is tokenised (a substituted value is never split again),
 * replicated processes are expanded on the spot. A second step resolves what may refer
 * forward: hosts, connections, the stdin process, the built-in timeouts. Errors are collected
 * (up to PIPE_MAX_ERRORS) with the line they belong to.
 *
 * Deliberately not here: anything about the binaries (whether msd-ROLE exists is the
 * launcher's question) or run directories. */
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
static void stmt_var(Parser *P, const char *rest) {
    const char *s = rest;
    while (*s == ' ' || *s == '\t') s++;
    const char *name = s;
    while (pf_is_ident((unsigned char)*s)) s++;
    size_t n = (size_t)(s - name);
    if (n == 0 || !pf_is_ident_start((unsigned char)name[0])) {
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
    if (pf_tokenize(P, s) < 0) return;
    if (P->toks.n == 0) { perr(P, "missing value for variable '%s' (write \"\" for an empty one)", vname); return; }
    if (P->toks.n > 1) { perr(P, "the value of '%s' is several words; quote it", vname); return; }
    const char *value = P->toks.v[0];
    if (strlen(value) >= PIPE_MAX_VALUE) { perr(P, "value of '%s' too long (max %d)", vname, PIPE_MAX_VALUE - 1); return; }
    const char *over = NULL;
    set_value(P, vname, &over);
    PipeVar *v = pf_find_var(P->pl, vname, n);
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
    if (pf_tokenize(P, rest) < 0) return NULL;
    int k = 0;
    if (P->toks.n > 0 && strcmp(P->toks.v[0], "=") == 0) k = 1;
    if (P->toks.n - k != 1) { perr(P, "expected '%s NAME'", what); return NULL; }
    return P->toks.v[k];
}

static void stmt_pipeline(Parser *P, const char *rest) {
    const char *name = one_name(P, rest, "pipeline");
    if (!name) return;
    if (!pf_valid_name(name, PIPE_MAX_NAME)) {
        perr(P, "bad pipeline name '%s' (letters, digits, _ and -)", name);
        return;
    }
    snprintf(P->pl->name, sizeof P->pl->name, "%s", name);
}

static void stmt_stdin(Parser *P, const char *rest) {
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
    if (pf_eval_int(s, v, why, sizeof why) < 0 || *v < 1 || *v > 65535) return -1;
    return 0;
}

/* host NAME address=ADDR bindir=DIR ports=LO-HI */
static void stmt_host(Parser *P, const char *rest) {
    Pipeline *pl = P->pl;
    if (pf_tokenize(P, rest) < 0) return;
    Toks *t = &P->toks;
    if (t->n < 1) { perr(P, "expected 'host NAME address=ADDRESS ...'"); return; }
    const char *name = t->v[0];
    if (!pf_valid_hostish(name) || strlen(name) >= PIPE_MAX_NAME) {
        perr(P, "bad host name '%s' (letters, digits, '.', '-', '_')", name);
        return;
    }
    int h = pf_find_host(pl, name);
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
            if (!pf_valid_hostish(val)) { perr(P, "bad address '%s'", val); return; }
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

/* An integer proc key KEY=VAL (an expression) in 0..max into *out; expect is what it means, with
 * a %d for max ("bad KEY 'VAL': why (expected ...)" or "bad KEY N (expected ...)"). 0, or -1. */
static int int_key(Parser *P, const char *key, const char *val, int max, const char *expect, int *out) {
    long long v;
    char why[96], what[160];
    snprintf(what, sizeof what, expect, max);
    if (pf_eval_int(val, &v, why, sizeof why) < 0) return perr(P, "bad %s '%s': %s (expected %s)", key, val, why, what);
    if (v < 0 || v > max) return perr(P, "bad %s %lld (expected %s)", key, v, what);
    *out = (int)v;
    return 0;
}

/* cpus=LIST: CPU numbers and ranges as taskset -c takes them ("0-3,8"), into p->cpuset;
 * cpus=none: not pinned. */
static int cpus_key(Parser *P, const char *val, PipeProc *p) {
    if (strcmp(val, "none") == 0) return 0; /* not pinned (a variable's default) */
    const char *s = val;
    for (;;) {
        char *end;
        if (*s < '0' || *s > '9') break;
        long a = strtol(s, &end, 10), b = a;
        if (*end == '-') {
            if (end[1] < '0' || end[1] > '9') break;
            b = strtol(end + 1, &end, 10);
        }
        if (a >= PIPE_MAX_CPU || b >= PIPE_MAX_CPU)
            return perr(P, "bad cpus '%s': CPU %ld is beyond the largest CPU number, %d", val, a > b ? a : b, PIPE_MAX_CPU - 1);
        if (b < a) return perr(P, "bad cpus '%s': the range %ld-%ld runs backwards", val, a, b);
        for (long c = a; c <= b; c++) {
            if (!(p->cpuset[c / 8] >> (c % 8) & 1)) p->ncpus++;
            p->cpuset[c / 8] |= (unsigned char)(1u << (c % 8));
        }
        if (!*end) return 0;
        if (*end != ',') break;
        s = end + 1;
    }
    return perr(P, "bad cpus '%s' (expected CPU numbers and ranges, as taskset -c takes them: cpus=0-3,8 or cpus=$k, or none)", val);
}

/* The key=value words and '--' arguments of one (replica of a) proc line. */
static int proc_keys(Parser *P, PipeProc *p) {
    Toks *t = &P->toks;
    int seen_role = 0, seen_bind = 0, seen_connect = 0, seen_gpu = 0, seen_host = 0, seen_server = 0, seen_restart = 0, seen_threads = 0, seen_cpus = 0;
    int i = 0;
    for (; i < t->n; i++) {
        if (strcmp(t->v[i], "--") == 0) { i++; break; }
        char *eq = strchr(t->v[i], '=');
        if (!eq)
            return perr(P, "expected key=value or '--', got '%s' (proc keys: role, bind, connect, gpu, host, server, restart, threads, cpus)", t->v[i]);
        *eq = 0;
        const char *key = t->v[i];
        char *val = eq + 1;
        if (strcmp(key, "role") == 0) {
            if (seen_role++) return perr(P, "role given twice");
            if (!pf_valid_name(val, PIPE_MAX_NAME)) return perr(P, "bad role '%s' (letters, digits, _ and -)", val);
            snprintf(p->role, sizeof p->role, "%s", val);
        } else if (strcmp(key, "bind") == 0) {
            if (seen_bind++) return perr(P, "bind given twice (list endpoints with commas)");
            char *items[PIPE_MAX_BINDS];
            int n = 0;
            if (split_list(P, "bind", val, items, &n, PIPE_MAX_BINDS) < 0) return -1;
            for (int k = 0; k < n; k++) {
                if (!pf_valid_name(items[k], 24)) return perr(P, "bad endpoint name '%s' (letters, digits, _ and -, max 23)", items[k]);
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
                if (pf_eval_int(val, &g, why, sizeof why) < 0)
                    return perr(P, "bad gpu '%s': %s (expected a GPU number, or none)", val, why);
                if (g < 0 || g > PIPE_MAX_GPU) return perr(P, "bad gpu %lld (expected 0..%d, or none)", g, PIPE_MAX_GPU);
                p->gpu = (int)g;
            }
        } else if (strcmp(key, "host") == 0) {
            if (seen_host++) return perr(P, "host given twice");
            if (!pf_valid_hostish(val) || strlen(val) >= PIPE_MAX_NAME) return perr(P, "bad host name '%s'", val);
            snprintf(p->hostname, sizeof p->hostname, "%s", val);
        } else if (strcmp(key, "server") == 0) {
            if (seen_server++) return perr(P, "server given twice");
            if (strcmp(val, "yes") == 0) p->server = 1;
            else if (strcmp(val, "no") == 0) p->server = 0;
            else return perr(P, "bad server '%s' (expected yes or no)", val);
        } else if (strcmp(key, "restart") == 0) {
            if (seen_restart++) return perr(P, "restart given twice");
            if (int_key(P, key, val, PIPE_MAX_RESTART, "the most restarts after a crash, 0..%d", &p->restart)) return -1;
        } else if (strcmp(key, "threads") == 0) {
            if (seen_threads++) return perr(P, "threads given twice");
            if (int_key(P, key, val, PIPE_MAX_THREADS,
                        "the process's CPU threads, 1..%d, or 0 for the launcher's share", &p->threads))
                return -1;
        } else if (strcmp(key, "cpus") == 0) {
            if (seen_cpus++) return perr(P, "cpus given twice (list CPUs with commas)");
            if (cpus_key(P, val, p) < 0) return -1;
        } else {
            return perr(P, "unknown proc key '%s' (proc keys: role, bind, connect, gpu, host, server, restart, threads, cpus)", key);
        }
    }
    for (; i < t->n; i++) {
        if (p->argc >= PIPE_MAX_ARGS) return perr(P, "too many arguments (max %d)", PIPE_MAX_ARGS);
        p->argv[p->argc++] = msd_strdup(t->v[i]);
    }
    return 0;
}

/* The name that starts a proc or after statement (blanks first), into out (at most 40 bytes);
 * what: "process" or "step", kw: the statement's keyword. The rest of the line, or NULL after
 * an error. */
static const char *stmt_name(Parser *P, const char *rest, const char *what, const char *kw, char out[PIPE_MAX_NAME]) {
    const char *s = rest;
    while (*s == ' ' || *s == '\t') s++;
    const char *name = s;
    while (pf_is_name_char((unsigned char)*s)) s++;
    size_t n = (size_t)(s - name);
    if (n == 0) { perr(P, "expected a %s name after '%s' (letters, digits, _ and -)", what, kw); return NULL; }
    if (n > 40) { perr(P, "%s name too long (max 40)", what); return NULL; }
    memcpy(out, name, n);
    out[n] = 0;
    return s;
}

/* proc NAME[VAR in FIRST..LAST] key=value ... -- args ... */
static void stmt_proc(Parser *P, const char *rest) {
    Pipeline *pl = P->pl;
    char group[PIPE_MAX_NAME];
    const char *s = stmt_name(P, rest, "process", "proc", group);
    if (!s) return;
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
        while (pf_is_ident((unsigned char)*q)) q++;
        size_t vl = (size_t)(q - vn);
        if (vl == 0 || vl >= PIPE_MAX_NAME || !pf_is_ident_start((unsigned char)vn[0])) {
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
        if (pf_find_var(pl, rvar, vl)) { perr(P, "replica variable '%s' hides the variable of the same name", rvar); return; }
        char range[PIPE_MAX_LINE + 64];
        if (pf_expand(P, q, strlen(q), range, sizeof range) < 0) return;
        char *dots = strstr(range, "..");
        if (!dots) { perr(P, "bad replica range '%s' (expected FIRST..LAST)", range); return; }
        *dots = 0;
        long long a, b;
        char why[96];
        if (pf_eval_int(range, &a, why, sizeof why) < 0) { perr(P, "bad range start '%s': %s", range, why); return; }
        if (pf_eval_int(dots + 2, &b, why, sizeof why) < 0) { perr(P, "bad range end '%s': %s", dots + 2, why); return; }
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
        int rc = pf_tokenize(P, s);
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

/* after NAME [role=ROLE] [gpu=N] [threads=N] -- args ...: a command for when the job has
 * finished (pipefile.h); the keys a running process's links and placement need are refused. */
static void stmt_after(Parser *P, const char *rest) {
    Pipeline *pl = P->pl;
    char sname[PIPE_MAX_NAME];
    const char *s = stmt_name(P, rest, "step", "after", sname);
    if (!s) return;
    if (*s && *s != ' ' && *s != '\t') { perr(P, "unexpected '%c' after the step name (after steps are not replicated)", *s); return; }
    for (int i = 0; i < pl->nafter; i++)
        if (strcmp(pl->after[i].name, sname) == 0) { perr(P, "duplicate after step '%s' (first at line %d)", sname, pl->after[i].line); return; }
    for (int i = 0; i < pl->nprocs; i++)
        if (strcmp(pl->procs[i].group, sname) == 0) { perr(P, "after step '%s' has the name of a process (line %d)", sname, pl->procs[i].line); return; }
    if (pl->nafter >= PIPE_MAX_AFTER) { perr(P, "too many after steps (max %d)", PIPE_MAX_AFTER); return; }
    if (pf_tokenize(P, s) < 0) return;
    for (int i = 0; i < P->toks.n && strcmp(P->toks.v[i], "--") != 0; i++) {
        const char *w = P->toks.v[i];
        size_t kl = strcspn(w, "=");
        if (w[kl] == '=' && !((kl == 4 && !strncmp(w, "role", 4)) || (kl == 3 && !strncmp(w, "gpu", 3)) ||
                              (kl == 7 && !strncmp(w, "threads", 7)))) {
            perr(P, "after step '%s': key '%.*s' is for processes (after keys: role, gpu, threads); an after step runs "
                 "alone on this machine once the job has finished", sname, (int)kl, w);
            return;
        }
    }
    if (!pl->after) pl->after = msd_calloc(PIPE_MAX_AFTER, sizeof *pl->after);
    PipeProc *p = &pl->after[pl->nafter++];
    memset(p, 0, sizeof *p);
    p->gpu = -1;
    p->index = -1;
    p->server = 0;
    p->line = P->line;
    snprintf(p->name, sizeof p->name, "%s", sname);
    snprintf(p->group, sizeof p->group, "%s", sname);
    snprintf(p->hostname, sizeof p->hostname, "localhost");
    if (proc_keys(P, p) < 0) return;
    if (!p->role[0]) snprintf(p->role, sizeof p->role, "%s", sname);
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
    if (strcmp(kw, "var") == 0) stmt_var(P, s);
    else if (strcmp(kw, "proc") == 0) stmt_proc(P, s);
    else if (strcmp(kw, "host") == 0) stmt_host(P, s);
    else if (strcmp(kw, "after") == 0) stmt_after(P, s);
    else if (strcmp(kw, "stdin") == 0) stmt_stdin(P, s);
    else if (strcmp(kw, "pipeline") == 0) stmt_pipeline(P, s);
    else perr(P, "unknown statement '%.40s' (expected pipeline, var, host, proc, after or stdin)", kw);
}

/* ---- resolution ---------------------------------------------------------------------- */

static int choose_bind(Parser *P, const PipeProc *t, const char *ep, int line) {
    if (ep) {
        for (int b = 0; b < t->nbinds; b++)
            if (strcmp(t->binds[b].name, ep) == 0) return b;
        return pf_perr_at(P, line, "'%s' does not bind an endpoint '%s'", t->name, ep);
    }
    if (t->nbinds == 0) return pf_perr_at(P, line, "'%s' binds no endpoint to connect to (give it bind=serve)", t->name);
    for (int b = 0; b < t->nbinds; b++)
        if (strcmp(t->binds[b].name, "serve") == 0) return b;
    if (t->nbinds == 1) return 0;
    return pf_perr_at(P, line, "'%s' binds several endpoints; name one as %s:ENDPOINT", t->name, t->name);
}

static int add_connect(Parser *P, PipeProc *p, const char *peer, int target, int bind) {
    if (target == p - P->pl->procs) return pf_perr_at(P, p->line, "process '%s' connects to itself", p->name);
    if (strlen(peer) >= PIPE_MAX_NAME) return pf_perr_at(P, p->line, "peer name '%s' too long", peer);
    for (int c = 0; c < p->nconnects; c++)
        if (strcmp(p->connects[c].peer, peer) == 0)
            return pf_perr_at(P, p->line, "'%s' connects twice to a peer named '%s'", p->name, peer);
    if (p->nconnects >= PIPE_MAX_CONNECTS)
        return pf_perr_at(P, p->line, "'%s' connects to too many peers (max %d)", p->name, PIPE_MAX_CONNECTS);
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
    if (alias && !pf_valid_name(alias, PIPE_MAX_NAME - 6))
        return pf_perr_at(P, p->line, "bad peer alias '%s' in connect=%s", alias, item);
    if (ep && !pf_valid_name(ep, PIPE_MAX_NAME)) return pf_perr_at(P, p->line, "bad endpoint name in connect=%s", item);
    if (!*target) return pf_perr_at(P, p->line, "missing process name in connect=%s", item);
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
    if (!found) return pf_perr_at(P, p->line, "connect: no process named '%s'", target);
    return 0;
}

static int parse_seconds(Parser *P, const char *name) {
    PipeVar *v = pf_find_var(P->pl, name, strlen(name));
    char *end;
    errno = 0;
    double d = strtod(v->value, &end);
    if (errno || end == v->value || *end || !(d > 0) || d > 86400) {
        if (v->from_set) return pf_perr_at(P, -1, "--set %s=%s: expected a number of seconds (0 < s <= 86400)", name, v->value);
        return pf_perr_at(P, v->line, "%s must be a number of seconds (0 < s <= 86400), not '%s'", name, v->value);
    }
    if (strcmp(name, "ready_timeout") == 0) P->pl->ready_timeout = d;
    else if (strcmp(name, "stop_timeout") == 0) P->pl->stop_timeout = d;
    else P->pl->reply_timeout = d;
    return 0;
}

static void resolve(Parser *P) {
    Pipeline *pl = P->pl;
    if (pl->nprocs == 0) { pf_perr_at(P, 0, "no processes (add a 'proc NAME ...' line)"); return; }
    for (int i = 0; i < pl->nprocs; i++) {
        PipeProc *p = &pl->procs[i];
        int h = pf_find_host(pl, p->hostname);
        if (h < 0) {
            pf_perr_at(P, p->line, "unknown host '%s' (declare it first: host %s address=ADDRESS)", p->hostname, p->hostname);
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
        if (t < 0) pf_perr_at(P, P->stdin_line, "stdin: no process named '%s' (name one process, e.g. router or student.0)", P->stdin_name);
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
    for (int i = 0; i < pl->nafter; i++)
        for (int k = 0; k < pl->after[i].argc; k++) free(pl->after[i].argv[k]);
    free(pl->after);
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
        buf[o++] = pf_is_name_char((unsigned char)base[i]) ? base[i] : '_';
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
    if (nsets > P->nsets) pf_perr_at(P, -1, "too many --set options (max %d)", P->nsets);
    for (int i = 0; i < P->nsets; i++) {
        const char *eq = strchr(sets[i], '=');
        char name[PIPE_MAX_NAME + 1];
        size_t n = eq ? (size_t)(eq - sets[i]) : 0;
        if (n > PIPE_MAX_NAME) n = PIPE_MAX_NAME;
        if (eq) memcpy(name, sets[i], n);
        name[n] = 0;
        if (!eq || !pf_valid_ident(name)) {
            pf_perr_at(P, -1, "--set %.80s: expected NAME=VALUE", sets[i]);
            P->set_used[i] = 1;
        } else if (strlen(eq + 1) >= PIPE_MAX_VALUE) {
            pf_perr_at(P, -1, "--set %s: value too long (max %d)", name, PIPE_MAX_VALUE - 1);
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
            pf_perr_at(P, -1, "the pipeline file's folder path is longer than %d bytes", PIPE_MAX_VALUE - 1);
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
        pf_perr_at(P, 0, "file too large (%zu bytes, max %d)", len, PIPE_MAX_FILE);
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
        /* A statement is one line, or several joined where a line ends in a backslash (the
         * backslash and the line break become one space, before comments are removed, as C
         * joins lines); its errors name its first line. */
        char *buf = msd_malloc(PIPE_MAX_LINE + 1);
        size_t i = 0, used = 0;
        int first = 1, bad = 0;
        for (int ln = 1; ln <= pl->nlines && P->nerrors < PIPE_MAX_ERRORS; ln++) {
            size_t j = i;
            while (j < len && text[j] != '\n') j++;
            size_t n = j - i;
            if (used == 0 && !bad) {
                first = ln;
                P->line = ln;
                P->line_failed = 0;
            }
            if (n > 0 && text[i + n - 1] == '\r') n--;
            int cont = n > 0 && text[i + n - 1] == '\\';
            if (cont) n--;
            for (size_t k = 0; k < n && !bad; k++) {
                unsigned char c = (unsigned char)text[i + k];
                if ((c < 0x20 && c != '\t') || c == 0x7f) {
                    pf_perr_at(P, ln, "binary data (byte 0x%02x at column %zu); a pipeline file is text", c, k + 1);
                    bad = 1;
                }
            }
            if (!bad && used + n + 1 > PIPE_MAX_LINE) {
                if (ln == first) perr(P, "line too long (%zu bytes, max %d)", n, PIPE_MAX_LINE - 1);
                else perr(P, "statement too long (lines %d-%d joined by backslashes, max %d bytes)", first, ln,
                          PIPE_MAX_LINE - 1);
                bad = 1;
            }
            if (!bad) {
                memcpy(buf + used, text + i, n);
                used += n;
                if (cont) buf[used++] = ' ';
                buf[used] = 0;
            }
            i = j + 1;
            if (cont && ln < pl->nlines) continue;
            if (cont) {
                perr(P, "the last line ends in a backslash: nothing follows to continue the statement");
                bad = 1;
            }
            if (!bad) parse_line(P, buf);
            used = 0;
            bad = 0;
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
        pf_perr_at(P, -1, "--set %.*s: %s has no variable of that name (it has: %s)",
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
