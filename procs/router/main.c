/* procs/router/main.c: msd-router: routes each request to the student that owns it.
 *
 * Today (walking skeleton) it has one mode, `--mode echo` (the default): it connects to every
 * --connect peer whose name starts with "student" (K of them, ordered by the number after the
 * last '.'), takes the launcher's LINE messages, sends each line's text as ECHO (u8 tensor
 * "text") to student k = (leading integer of the line, else an FNV-1a hash of it) mod K, and
 * answers the LINE with "student.k: TEXT" once that student replies. Requests are matched by
 * id, so replies may come back in any order; the launcher puts its output in order.
 * Not yet here: prompt embedding, clustering into partitions, the partition file. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "proc.h"

#define ROUTER_MAX_PENDING 1024
#define ROUTER_MAX_TEXT 4096

static const char *usage =
    "  --mode echo         route each input line to a student and answer with its echo (default)\n"
    "  --timeout-ms MS     how long a student may take to answer (default 10000)\n"
    "connects: student.0 ... student.K-1 (every --connect name starting with \"student\")\n";

typedef struct Pending {
    int used;
    uint64_t id;          /* our request id to the student */
    uint64_t line_id;     /* the launcher's LINE id */
    int student;
    double deadline;
} Pending;

typedef struct Router {
    Proc *p;
    int k;
    void *socks[31];
    const char *names[31];
    Pending pending[ROUTER_MAX_PENDING];
    uint64_t next_id;
    int timeout_ms;
} Router;

static long name_number(const char *s) {
    const char *dot = strrchr(s, '.');
    if (!dot || !dot[1]) return -1;
    char *end;
    long v = strtol(dot + 1, &end, 10);
    return *end ? -1 : v;
}

static int router_pick(const Router *r, const char *text, size_t len) {
    size_t i = 0;
    while (i < len && (text[i] == ' ' || text[i] == '\t')) i++;
    if (i < len && isdigit((unsigned char)text[i])) {
        unsigned long long v = 0;
        for (; i < len && isdigit((unsigned char)text[i]); i++) v = (v * 10 + (unsigned)(text[i] - '0')) % 1000000007ull;
        return (int)(v % (unsigned long long)r->k);
    }
    uint32_t h = 2166136261u;
    for (size_t j = 0; j < len; j++) h = (h ^ (unsigned char)text[j]) * 16777619u;
    return (int)(h % (uint32_t)r->k);
}

static void router_answer(Router *r, uint64_t line_id, const char *text, int32_t status) {
    WireMsg req;
    wire_msg_init(&req, WIRE_OP_LINE, line_id);
    proc_reply_line(r->p, &req, text, status);
}

static void router_take_line(Router *r, WireMsg *line) {
    const WireTensor *t = wire_msg_find(line, "text");
    if (!t || t->dtype != WIRE_U8 || t->ndim != 1 || t->nbytes > ROUTER_MAX_TEXT) {
        router_answer(r, line->id, "a line needs a u8 tensor \"text\" of at most 4096 bytes", WIRE_STATUS_BAD_REQUEST);
        return;
    }
    int slot = -1;
    for (int i = 0; i < ROUTER_MAX_PENDING && slot < 0; i++) if (!r->pending[i].used) slot = i;
    if (slot < 0) { router_answer(r, line->id, "too many lines in flight", WIRE_STATUS_BUSY); return; }
    int k = router_pick(r, t->data, t->nbytes);
    WireMsg m;
    wire_msg_init(&m, WIRE_OP_ECHO, ++r->next_id);
    wire_msg_add(&m, "text", WIRE_U8, 1, t->shape, t->data);
    char err[256];
    if (wire_send(r->socks[k], &m, 0, 0, err, sizeof err) != WIRE_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s is not reachable: %s", r->names[k], err);
        router_answer(r, line->id, msg, WIRE_STATUS_BUSY);
        return;
    }
    r->pending[slot] = (Pending){1, r->next_id, line->id, k, msd_now() + r->timeout_ms / 1000.0};
}

static void router_take_reply(Router *r, int k) {
    WireMsg m;
    char err[256];
    int rc = wire_recv(r->socks[k], &m, 0, err, sizeof err);
    if (rc == WIRE_EAGAIN) return;
    if (rc != WIRE_OK) { log_warn("%s sent a bad message: %s", r->names[k], err); return; }
    Pending *pd = NULL;
    for (int i = 0; i < ROUTER_MAX_PENDING && !pd; i++)
        if (r->pending[i].used && r->pending[i].id == m.id && r->pending[i].student == k) pd = &r->pending[i];
    if (!pd) {
        log_warn("%s: reply to unknown request %llu dropped", r->names[k], (unsigned long long)m.id);
        wire_msg_close(&m);
        return;
    }
    const WireTensor *t = wire_msg_find(&m, "text");
    char out[ROUTER_MAX_TEXT + 128];
    if (m.status != WIRE_STATUS_OK || !t || t->dtype != WIRE_U8 || t->nbytes > ROUTER_MAX_TEXT) {
        snprintf(out, sizeof out, "%s failed: %s %s", r->names[k], wire_status_name(m.status), m.error);
        router_answer(r, pd->line_id, out, WIRE_STATUS_INTERNAL);
    } else {
        int n = snprintf(out, sizeof out, "%s: ", r->names[k]);
        memcpy(out + n, t->data, t->nbytes);
        out[(size_t)n + t->nbytes] = 0;
        router_answer(r, pd->line_id, out, WIRE_STATUS_OK);
    }
    pd->used = 0;
    wire_msg_close(&m);
}

static void router_expire(Router *r) {
    double now = msd_now();
    for (int i = 0; i < ROUTER_MAX_PENDING; i++) {
        Pending *pd = &r->pending[i];
        if (!pd->used || now < pd->deadline) continue;
        char msg[256];
        snprintf(msg, sizeof msg, "%s did not answer within %d ms", r->names[pd->student], r->timeout_ms);
        log_warn("%s", msg);
        router_answer(r, pd->line_id, msg, WIRE_STATUS_INTERNAL);
        pd->used = 0;
    }
}

int main(int argc, char **argv) {
    Proc p;
    proc_start(&p, "router", usage, argc, argv);
    static Router r;
    r.p = &p;
    r.timeout_ms = 10000;
    for (int i = 1; i < p.argc; i++) {
        char *end;
        if (!strcmp(p.argv[i], "--mode") && i + 1 < p.argc) {
            if (strcmp(p.argv[++i], "echo") != 0) { fprintf(stderr, "[%s] ERROR --mode %s: only \"echo\" exists yet\n", p.name, p.argv[i]); return 2; }
        } else if (!strcmp(p.argv[i], "--timeout-ms") && i + 1 < p.argc) {
            long v = strtol(p.argv[++i], &end, 10);
            if (*end || end == p.argv[i] || v < 1 || v > 86400000) { fprintf(stderr, "[%s] ERROR --timeout-ms %s: expected milliseconds >= 1\n", p.name, p.argv[i]); return 2; }
            r.timeout_ms = (int)v;
        } else { fprintf(stderr, "[%s] ERROR unknown option %s (try --help)\n", p.name, p.argv[i]); return 2; }
    }
    for (int i = 0; i < p.nconnect; i++) {
        if (strncmp(p.connects[i].name, "student", 7) != 0) continue;
        if (r.k >= 31) { fprintf(stderr, "[%s] ERROR at most 31 students\n", p.name); return 2; }
        r.socks[r.k] = p.connects[i].sock;
        r.names[r.k] = p.connects[i].name;
        r.k++;
    }
    if (r.k == 0) { fprintf(stderr, "[%s] ERROR needs --connect student.0=ENDPOINT (one per student)\n", p.name); return 2; }
    for (int i = 1; i < r.k; i++) /* order by the number after the last '.' (student.2 < student.10) */
        for (int j = i; j > 0 && name_number(r.names[j]) < name_number(r.names[j - 1]); j--) {
            void *s = r.socks[j]; r.socks[j] = r.socks[j - 1]; r.socks[j - 1] = s;
            const char *n = r.names[j]; r.names[j] = r.names[j - 1]; r.names[j - 1] = n;
        }
    proc_ready(&p);
    while (!proc_should_stop(&p)) {
        WireMsg line;
        int got = proc_poll(&p, r.socks, r.k, 200, &line);
        if (got & PROC_POLL_LINE) {
            router_take_line(&r, &line);
            wire_msg_close(&line);
        }
        for (int k = 0; k < r.k; k++) if (got & (1 << k)) router_take_reply(&r, k);
        router_expire(&r);
    }
    return proc_finish(&p);
}
