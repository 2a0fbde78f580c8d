/* pipefile_plan.c: endpoints of a parsed pipeline (pipefile.h): which processes are remote,
 * and pipeline_plan, which gives every bound endpoint an address (ipc:// in the run directory
 * for links on one host, tcp:// with a chosen port across hosts). */
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

/* ---- CPU threads ---------------------------------------------------------------------- */

int pipeline_role_computes(const char *role) {
    return !strcmp(role, "student") || !strcmp(role, "critic") || !strcmp(role, "teacher");
}

void pipeline_share_threads(Pipeline *pl, int cores) {
    if (cores < 1) cores = 1;
    int left = cores, sharers = 0;
    for (int i = 0; i < pl->nprocs; i++) {
        PipeProc *p = &pl->procs[i];
        /* threads=, else as many as its cpus= has */
        int own = p->threads ? p->threads : p->ncpus < PIPE_MAX_THREADS ? p->ncpus : PIPE_MAX_THREADS;
        p->cpu_threads = own;
        if (p->host != 0 || own) {
            if (p->host == 0) left -= own;
            continue;
        }
        if (p->gpu < 0 && pipeline_role_computes(p->role)) sharers++;
        else p->cpu_threads = 1;
    }
    pl->cores = cores;
    pl->sharers = sharers;
    for (int i = 0, k = 0; i < pl->nprocs; i++) {
        PipeProc *p = &pl->procs[i];
        if (p->cpu_threads || p->host != 0) continue;
        int t = left > 0 ? left / sharers + (k < left % sharers) : 0;
        if (t > PIPE_MAX_THREADS) t = PIPE_MAX_THREADS;
        p->cpu_threads = t < 1 ? 1 : t;
        k++;
    }
    for (int i = 0; i < pl->nafter; i++) /* after steps run alone, once the job is done: every core */
        pl->after[i].cpu_threads = pl->after[i].threads ? pl->after[i].threads : cores < PIPE_MAX_THREADS ? cores : PIPE_MAX_THREADS;
}

void pipeline_cpus_text(const unsigned char *set, char *out, size_t cap) {
    size_t n = 0;
    if (cap) out[0] = 0;
    for (int c = 0; c < PIPE_MAX_CPU; c++) {
        if (!(set[c / 8] >> (c % 8) & 1)) continue;
        int e = c;
        while (e + 1 < PIPE_MAX_CPU && set[(e + 1) / 8] >> ((e + 1) % 8) & 1) e++;
        int w = e > c ? snprintf(out + n, cap - n, "%s%d-%d", n ? "," : "", c, e) : snprintf(out + n, cap - n, "%s%d", n ? "," : "", c);
        if (w < 0 || (size_t)w >= cap - n) return; /* cut short: cap too small */
        n += (size_t)w;
        c = e;
    }
}
