/* procs/student/main.c: msd-student, one per partition: trains its one-step generator, or
 * serves it.
 *
 * Modes (the mixture toy's are in student_mog.c):
 *   --mode mog-train        DMD2 distillation of a one-step generator on the 2-D mixture
 *   --mode mog-serve        answers GENERATE from a trained checkpoint
 * and the walking skeleton's two, named as such (they train nothing):
 *   --mode skeleton-train (default)  for --steps N: BATCH from data, then DENOISE of the
 *                           batch to the teacher and the critic, both in flight at once, and
 *                           checks each reply against d = x / (1 + sigma^2); then DONE and
 *                           exit 0. A peer that answers wrongly or stays silent past
 *                           --timeout-ms: exit 1.
 *   --mode skeleton-serve (or --serve)  binds serve and answers ECHO with the request's
 *                           tensors.
 * --mode image-train (student_image.c) is stage 2 on images, with --adm stage 3 (ADM); --mode
 * tsm-train stage 1 (TSM) of a student smaller than the teacher; --mode image-serve
 * (student_image_serve.c) serves a trained image student behind msd-router --mode serve. */
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
#include "student_image.h"

static struct {
    int steps, timeout_ms, serve_flag;
} opt = {10, 10000, 0};

static const ArgSpec skeleton_train_args[] = {
    ARG_INT("--steps", &opt.steps, 0, 1000000000, "N", "steps (default 10)"),
    ARG_INT("--timeout-ms", &opt.timeout_ms, 1, 86400000, "MS", "how long a peer may take to answer (default 10000)"),
    ARG_END_,
};
static const ArgSpec skeleton_serve_args[] = {
    ARG_FLAG("--serve", &opt.serve_flag, "same as --mode skeleton-serve"),
    ARG_INCLUDE(skeleton_train_args), /* accepted (and unused) as before */
    ARG_END_,
};

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

/* ECHO: the request's tensors back. */
static void student_echo(void *ctx, void *sock, const WireMsg *req) {
    WireMsg rep;
    wire_reply_init(&rep, req, req->op, WIRE_STATUS_OK);
    for (int i = 0; i < req->ntensors; i++) {
        const WireTensor *t = &req->tensors[i];
        wire_msg_add(&rep, t->name, t->dtype, t->ndim, t->shape, t->data);
    }
    serve_reply(sock, &rep);
}

static int run_skeleton_serve(Proc *p) {
    void *serve = serve_socket(p, "--serve");
    if (!serve) return 2;
    static const ServeOp ops[] = {{WIRE_OP_ECHO, student_echo}};
    serve_loop(p, serve, ops, 1, NULL, NULL, "student");
    return proc_finish(p);
}

static int run_skeleton_train(Proc *p) {
    Student s = {.p = p};
    rpc_init(&s.rpc, p, opt.timeout_ms);
    s.rpc.busy_reply = "a training student takes no input lines";
    s.data = proc_connected(p, "data");
    s.teacher = proc_connected(p, "teacher");
    s.critic = proc_connected(p, "critic");
    if (!s.data || !s.teacher || !s.critic)
        return msd_fail(2, "--mode skeleton-train needs --connect data=... teacher=... critic=...");
    proc_ready(p);
    int rc = student_train(&s, opt.steps);
    if (rc == 0) log_info("finished %d steps", opt.steps);
    return proc_end_job(p, rc, s.rpc.err);
}

#define CPU_ONLY "every student mode so far (the skeleton and the toy MLP)"
static const ProcMode modes[] = {
    {"skeleton-train", "the walking skeleton's check (it trains nothing): --steps times BATCH from data, DENOISE\n"
                       "to teacher and critic at once, each reply checked against x / (1 + sigma^2)",
     skeleton_train_args, run_skeleton_train, CPU_ONLY, NULL},
    {"skeleton-serve", "the walking skeleton's server: bind serve=ENDPOINT and answer ECHO with the request's tensors",
     skeleton_serve_args, run_skeleton_serve, CPU_ONLY, "--serve"},
    {"mog-train", "DMD2 distillation of a one-step generator on the 2-D mixture toy (student_mog.c)",
     student_mog_train_args, student_mog_train, CPU_ONLY, NULL},
    {"mog-serve", "GENERATE {\"label\" (N), \"seed\" (1)} -> \"x\" (N, dim) from a trained checkpoint",
     student_mog_serve_args, student_mog_serve, CPU_ONLY, NULL},
    {"image-train", "stage 2 (DM) of a one-step UNet generator against the UNet teacher; --adm: stage 3 (student_image.c)",
     student_image_train_args, student_image_train, NULL, NULL},
    {"tsm-train", "stage 1 (TSM) of a small UNet denoiser on its classes' images against the UNet teacher\n"
                  "(student_image.c); its checkpoint is image-train's --init",
     student_tsm_train_args, student_tsm_train, NULL, NULL},
    {"image-serve", "GENERATE {\"label\" (N), \"seed\" (N)} -> \"x\" (N, C, H, W) from a stage-2 checkpoint's EMA\n"
                    "weights, concurrent requests batched (student_image_serve.c)",
     student_image_serve_args, student_image_serve, NULL, NULL},
    {0},
};

static const ProcDesc desc = {
    "student", "msd-student: one per partition: trains its one-step generator, or serves it.", modes,
    "connects (skeleton-train, mog-train, image-train): data, teacher, critic; (tsm-train): data, teacher\n",
};

int main(int argc, char **argv) { return proc_main(&desc, argc, argv); }
