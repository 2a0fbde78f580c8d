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
#include "rpc.h"
#include "serve.h"
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
    Rpc rpc;
    void *data, *teacher, *critic;
} Student;

/* The reply "d" must have x's shape and equal x / (1 + sigma^2) (float tolerance). */
static int student_check_denoise(Student *s, const char *peer, const WireMsg *rep, const WireTensor *x, const float *sigma) {
    const WireTensor *d = wire_msg_find(rep, "d");
    if (!d || d->dtype != WIRE_F32 || d->ndim != x->ndim || memcmp(d->shape, x->shape, (size_t)x->ndim * sizeof(int64_t))) {
        snprintf(s->rpc.err, sizeof s->rpc.err, "%s: reply tensor \"d\" missing or not f32 of x's shape", peer);
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
                snprintf(s->rpc.err, sizeof s->rpc.err, "%s: d[%zu] = %.9g, want x/(1+sigma^2) = %.9g", peer, k, ds[k], want);
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
        uint64_t id = rpc_id(&s->rpc);
        WireMsg req, batch;
        wire_msg_init(&req, WIRE_OP_BATCH, id);
        if (rpc_call(&s->rpc, s->data, "data", &req, &batch) < 0) break;
        const WireTensor *x = wire_msg_find(&batch, "x");
        if (!x || x->dtype != WIRE_F32 || x->ndim < 1) {
            snprintf(s->rpc.err, sizeof s->rpc.err, "data: batch without an f32 tensor \"x\" (N, ...)");
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
        uint32_t ops[2] = {WIRE_OP_DENOISE, WIRE_OP_DENOISE};
        WireMsg reps[2];
        /* both requests go out before either reply is awaited */
        int ok = rpc_send(&s->rpc, s->teacher, "teacher", &dn) == 0 && rpc_send(&s->rpc, s->critic, "critic", &dn) == 0 &&
                 rpc_await(&s->rpc, 2, socks, peers, ids, ops, reps) == 0;
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
        WireMsg req;
        if (!serve_wait(p, serve, 500) || !serve_recv(serve, &req)) continue;
        if (req.op == WIRE_OP_ECHO) {
            WireMsg rep;
            wire_reply_init(&rep, &req, req.op, WIRE_STATUS_OK);
            for (int i = 0; i < req.ntensors; i++) {
                const WireTensor *t = &req.tensors[i];
                wire_msg_add(&rep, t->name, t->dtype, t->ndim, t->shape, t->data);
            }
            serve_reply(serve, &rep);
        } else {
            serve_unknown(serve, &req, "echo");
        }
        wire_msg_close(&req);
    }
}

int main(int argc, char **argv) {
    Proc p;
    proc_start(&p, "student", usage, argc, argv);
    const char *mode = args_mode(&p, "train");
    if (args_cpu_only(&p, "every student mode so far (the skeleton and the toy MLP)")) return 2;
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
    Student s = {.p = &p};
    rpc_init(&s.rpc, &p, timeout_ms);
    s.rpc.busy_reply = "a training student takes no input lines";
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
    if (st == 0 && proc_should_stop(&p) == 0) { log_error("%s", s.rpc.err); return 1; }
    if (st == 0) log_info("%s", s.rpc.err); /* a signal or STOP: a clean stop */
    return st;
}
