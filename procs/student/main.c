/* procs/student/main.c: msd-student, one per partition: trains its one-step generator, or
 * serves it.
 *
 * Modes (the mixture toy's are in mog.c):
 *   --mode mog-train        DMD2 distillation of a one-step generator on the 2-D mixture
 *   --mode mog-serve        answers GENERATE from a trained checkpoint
 * and the walking skeleton's two:
 *   --mode train (default)  for --steps N: BATCH from data, then DENOISE of the batch to the
 *                           teacher and the critic, both in flight at once, and checks each
 *                           reply against d = x / (1 + sigma^2); then DONE and exit 0. A peer
 *                           that answers wrongly or stays silent past --timeout-ms: exit 1.
 *   --serve (--mode serve)  binds serve and answers ECHO with the request's tensors.
 * Not yet here: the generator, its optimiser, TSM/DM/ADM losses, checkpoints. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "log.h"
#include "proc.h"
#include "student.h"

static const char *usage =
    "  --mode train|serve|mog-train|mog-serve\n"
    "                       train (default): run --steps steps against data, teacher, critic\n"
    "  mog-train / mog-serve (the 2-D mixture toy; procs/student/mog.c):\n"
    "    --mix FILE --ckpt-dir DIR [--index K] [--net SPEC] [--batch B] [--steps N] [--ttur T]\n"
    "    [--critic-warmup W] [--lr LR] [--ema D] [--seed S] [--ckpt-every N] [--log-every N]\n"
    "    [--metrics FILE.jsonl] [--timeout-ms MS]; serve: --ckpt FILE or --ckpt-dir DIR, [--cap N]\n"
    "  --serve              same as --mode serve: bind serve=ENDPOINT and answer ECHO\n"
    "  --steps N            training steps (default 10)\n"
    "  --timeout-ms MS      how long a peer may take to answer (default 10000)\n"
    "connects (train): data, teacher, critic\n";

typedef struct Student {
    Proc *p;
    void *data, *teacher, *critic;
    int timeout_ms;
    char err[WIRE_MAX_ERROR + 128];
} Student;

/* Handle one readable reply on sock: it must be the answer to id with op `op` (a stale or
 * unrelated reply is logged and dropped). Returns 1 when *m holds the reply, 0 when it was
 * dropped, -1 on a failure described in s->err. */
static int student_take_reply(Student *s, void *sock, const char *peer, uint64_t id, uint32_t op, WireMsg *m) {
    char err[256];
    int rc = wire_recv(sock, m, 0, err, sizeof err);
    if (rc == WIRE_EAGAIN) return 0;
    if (rc != WIRE_OK) { snprintf(s->err, sizeof s->err, "%s sent a bad message: %s", peer, err); return -1; }
    if (m->id != id) {
        log_warn("%s: dropped a reply to request %llu (waiting for %llu)", peer, (unsigned long long)m->id, (unsigned long long)id);
        wire_msg_close(m);
        return 0;
    }
    if (m->status != WIRE_STATUS_OK || m->op != op) {
        snprintf(s->err, sizeof s->err, "%s answered request %llu with %s, status %s: %s", peer, (unsigned long long)id,
                 wire_op_name(m->op), wire_status_name(m->status), m->error[0] ? m->error : "(no text)");
        wire_msg_close(m);
        return -1;
    }
    return 1;
}

/* Wait for the replies to requests sent on n sockets (all in flight); services the control
 * socket meanwhile. Returns 0 when all arrived, -1 (s->err) on a failure, timeout or stop. */
static int student_await(Student *s, int n, void **socks, const char **peers, const uint64_t *ids, uint32_t op, WireMsg *out) {
    int have[4] = {0};
    int got = 0;
    double deadline = msd_now() + s->timeout_ms / 1000.0;
    while (got < n) {
        double left = deadline - msd_now();
        if (left <= 0) {
            for (int i = 0; i < n; i++)
                if (!have[i]) { snprintf(s->err, sizeof s->err, "%s did not answer within %d ms", peers[i], s->timeout_ms); break; }
            goto fail;
        }
        void *wait[4];
        int map[4], nw = 0;
        for (int i = 0; i < n; i++) if (!have[i]) { map[nw] = i; wait[nw++] = socks[i]; }
        WireMsg line;
        int r = proc_poll(s->p, wait, nw, (int)(left * 1000.0) + 1, &line);
        if (r & PROC_POLL_LINE) {
            proc_reply_line(s->p, &line, "a training student takes no input lines", WIRE_STATUS_UNKNOWN_OP);
            wire_msg_close(&line);
        }
        if (proc_should_stop(s->p)) { snprintf(s->err, sizeof s->err, "stopped while waiting for replies"); goto fail; }
        for (int k = 0; k < nw; k++) {
            if (!(r & (1 << k))) continue;
            int i = map[k];
            int rc = student_take_reply(s, socks[i], peers[i], ids[i], op, &out[i]);
            if (rc < 0) goto fail;
            if (rc == 1) { have[i] = 1; got++; }
        }
    }
    return 0;
fail:
    for (int i = 0; i < n; i++) if (have[i]) wire_msg_close(&out[i]);
    return -1;
}

static int student_send(Student *s, void *sock, const char *peer, const WireMsg *m) {
    char err[256];
    if (wire_send(sock, m, 0, s->timeout_ms, err, sizeof err) != WIRE_OK) {
        snprintf(s->err, sizeof s->err, "sending %s to %s: %s", wire_op_name(m->op), peer, err);
        return -1;
    }
    return 0;
}

/* The reply "d" must have x's shape and equal x / (1 + sigma^2) (float tolerance). */
static int student_check_denoise(Student *s, const char *peer, const WireMsg *rep, const WireTensor *x, const float *sigma) {
    const WireTensor *d = wire_msg_find(rep, "d");
    if (!d || d->dtype != WIRE_F32 || d->ndim != x->ndim || memcmp(d->shape, x->shape, (size_t)x->ndim * sizeof(int64_t))) {
        snprintf(s->err, sizeof s->err, "%s: reply tensor \"d\" missing or not f32 of x's shape", peer);
        return -1;
    }
    int64_t n = x->shape[0];
    size_t per = n ? x->nbytes / sizeof(float) / (size_t)n : 0;
    const float *xs = x->data, *ds = d->data;
    for (int64_t i = 0; i < n; i++)
        for (size_t j = 0; j < per; j++) {
            size_t k = (size_t)i * per + j;
            float want = xs[k] / (1.0f + sigma[i] * sigma[i]);
            if (!(fabsf(ds[k] - want) <= 1e-6f + 1e-5f * fabsf(want))) {
                snprintf(s->err, sizeof s->err, "%s: d[%zu] = %.9g, want x/(1+sigma^2) = %.9g", peer, k, ds[k], want);
                return -1;
            }
        }
    return 0;
}

static int student_train(Student *s, int steps) {
    double t0 = msd_now();
    int every = steps >= 5 ? steps / 5 : 1;
    float *sigma = NULL;
    for (int step = 0; step < steps; step++) {
        uint64_t id = (uint64_t)step + 1;
        WireMsg req, batch;
        wire_msg_init(&req, WIRE_OP_BATCH, id);
        if (student_send(s, s->data, "data", &req) < 0) break;
        void *dsock[1] = {s->data};
        const char *dpeer[1] = {"data"};
        if (student_await(s, 1, dsock, dpeer, &id, WIRE_OP_BATCH, &batch) < 0) break;
        const WireTensor *x = wire_msg_find(&batch, "x");
        if (!x || x->dtype != WIRE_F32 || x->ndim < 1) {
            snprintf(s->err, sizeof s->err, "data: batch without an f32 tensor \"x\" (N, ...)");
            wire_msg_close(&batch);
            break;
        }
        int64_t n = x->shape[0];
        sigma = realloc(sigma, (size_t)(n ? n : 1) * sizeof *sigma);
        if (!sigma) msd_die("out of memory");
        for (int64_t i = 0; i < n; i++) sigma[i] = 0.1f * (float)(1 + (step + i) % 20);
        WireMsg dn;
        wire_msg_init(&dn, WIRE_OP_DENOISE, id);
        wire_msg_add(&dn, "x", WIRE_F32, x->ndim, x->shape, x->data);
        wire_msg_add(&dn, "sigma", WIRE_F32, 1, &n, sigma);
        void *socks[2] = {s->teacher, s->critic};
        const char *peers[2] = {"teacher", "critic"};
        uint64_t ids[2] = {id, id};
        WireMsg reps[2];
        /* both requests go out before either reply is awaited */
        int ok = student_send(s, s->teacher, "teacher", &dn) == 0 && student_send(s, s->critic, "critic", &dn) == 0 &&
                 student_await(s, 2, socks, peers, ids, WIRE_OP_DENOISE, reps) == 0;
        if (ok) {
            ok = student_check_denoise(s, "teacher", &reps[0], x, sigma) == 0 &&
                 student_check_denoise(s, "critic", &reps[1], x, sigma) == 0;
            wire_msg_close(&reps[0]);
            wire_msg_close(&reps[1]);
        }
        wire_msg_close(&batch);
        if (!ok) break;
        if ((step + 1) % every == 0 || step + 1 == steps)
            log_info("step %d/%d: batch of %lld checked against teacher and critic (%.2f ms/step)", step + 1, steps,
                     (long long)n, 1000.0 * (msd_now() - t0) / (step + 1));
        if (step + 1 == steps) { free(sigma); return 0; }
    }
    free(sigma);
    if (steps == 0) return 0;
    return -1;
}

static void student_serve(Proc *p, void *serve) {
    while (!proc_should_stop(p)) {
        WireMsg line;
        int r = proc_poll(p, &serve, 1, 500, &line);
        if (r & PROC_POLL_LINE) {
            proc_reply_line(p, &line, "this process takes no input lines", WIRE_STATUS_UNKNOWN_OP);
            wire_msg_close(&line);
        }
        if (!(r & 1)) continue;
        WireMsg req;
        char err[256];
        int rc = wire_recv(serve, &req, 0, err, sizeof err);
        if (rc == WIRE_EAGAIN) continue;
        if (rc == WIRE_ESOCKET) { log_warn("serve socket: %s", err); continue; }
        if (rc == WIRE_EMALFORMED) {
            log_warn("malformed message (answered %s): %s", wire_status_name(req.reject_status), err);
            wire_send_error(serve, &req, req.reject_status, err);
            continue;
        }
        if (req.op == WIRE_OP_ECHO || req.op == WIRE_OP_HEARTBEAT) {
            WireMsg rep;
            wire_reply_init(&rep, &req, req.op, WIRE_STATUS_OK);
            for (int i = 0; i < req.ntensors; i++) {
                const WireTensor *t = &req.tensors[i];
                wire_msg_add(&rep, t->name, t->dtype, t->ndim, t->shape, t->data);
            }
            if (wire_send(serve, &rep, 0, 1000, err, sizeof err) != WIRE_OK) log_warn("reply to %llu: %s", (unsigned long long)req.id, err);
        } else {
            snprintf(err, sizeof err, "a serving student answers echo, not %s", wire_op_name(req.op));
            wire_send_error(serve, &req, WIRE_STATUS_UNKNOWN_OP, err);
        }
        wire_msg_close(&req);
    }
}

int main(int argc, char **argv) {
    Proc p;
    proc_start(&p, "student", usage, argc, argv);
    const char *mode = "train";
    for (int i = 1; i + 1 < p.argc; i++)
        if (args_is(p.argv[i], "--mode")) mode = p.argv[i + 1];
    if (!strcmp(mode, "mog-train")) return student_mog_train(&p);
    if (!strcmp(mode, "mog-serve")) return student_mog_serve(&p);
    int steps = 10, timeout_ms = 10000;
    for (int i = 1; i < p.argc; i++) {
        const char *a = p.argv[i];
        char *end;
        if (!strcmp(a, "--serve")) mode = "serve";
        else if (!strcmp(a, "--mode") && i + 1 < p.argc) mode = p.argv[++i];
        else if (!strcmp(a, "--steps") && i + 1 < p.argc) {
            long v = strtol(p.argv[++i], &end, 10);
            if (*end || end == p.argv[i] || v < 0 || v > 1000000000) { fprintf(stderr, "[%s] ERROR --steps %s: expected a count >= 0\n", p.name, p.argv[i]); return 2; }
            steps = (int)v;
        } else if (!strcmp(a, "--timeout-ms") && i + 1 < p.argc) {
            long v = strtol(p.argv[++i], &end, 10);
            if (*end || end == p.argv[i] || v < 1 || v > 86400000) { fprintf(stderr, "[%s] ERROR --timeout-ms %s: expected milliseconds >= 1\n", p.name, p.argv[i]); return 2; }
            timeout_ms = (int)v;
        } else { fprintf(stderr, "[%s] ERROR unknown option %s (try --help)\n", p.name, a); return 2; }
    }
    if (!strcmp(mode, "serve")) {
        void *serve = proc_bound(&p, "serve");
        if (!serve) { fprintf(stderr, "[%s] ERROR --serve needs --bind serve=ENDPOINT\n", p.name); return 2; }
        proc_ready(&p);
        student_serve(&p, serve);
        return proc_finish(&p);
    }
    if (strcmp(mode, "train") != 0) { fprintf(stderr, "[%s] ERROR --mode %s: expected train, serve, mog-train or mog-serve\n", p.name, mode); return 2; }
    Student s = {.p = &p, .timeout_ms = timeout_ms};
    s.data = proc_connected(&p, "data");
    s.teacher = proc_connected(&p, "teacher");
    s.critic = proc_connected(&p, "critic");
    if (!s.data || !s.teacher || !s.critic) {
        fprintf(stderr, "[%s] ERROR training needs --connect data=... teacher=... critic=...\n", p.name);
        return 2;
    }
    proc_ready(&p);
    int rc = student_train(&s, steps);
    if (rc == 0) {
        log_info("finished %d steps", steps);
        proc_done(&p);
        return proc_finish(&p);
    }
    int zero = 0; /* requests still queued to a failed peer need not go out */
    for (int i = 0; i < p.nconnect; i++) zmq_setsockopt(p.connects[i].sock, ZMQ_LINGER, &zero, sizeof zero);
    int st = proc_finish(&p);
    if (st == 0 && proc_should_stop(&p) == 0) { log_error("%s", s.err); return 1; }
    if (st == 0) log_info("%s", s.err); /* a signal or STOP: a clean stop */
    return st;
}
