/* procs/router/main.c: msd-router: routes each request to the student that owns it.
 *
 * Modes:
 *   --mode partition   split the classes of a mixture into K groups (balanced k-means++, plain
 *                      k-means++, random, contiguous, or a manual file) on their embeddings
 *                      (for the toy: each class's mean location; for a labelled image set
 *                      (--embed-from CKPT): the columns of the teacher's class-embedding
 *                      matrix, or with --embed-prompts FILE the class prototypes of a prompts
 *                      file, common/text/prompts.h; partition_classes.c), write the partition
 *                      file, log each group's classes and how alike they are, and exit (a job
 *                      step: DONE, status 0)
 *   --mode mog         serve the toy: each input line "CLASS [N]" (name or id, N samples,
 *                      default 1) goes to the student that owns CLASS in --partition as
 *                      GENERATE; the answer is N CSV lines "class,x,y"; --png FILE draws every
 *                      sample served as a scatter plot when the pipeline stops
 *   --mode serve       serve the image students: each input line "PROMPT [N] [seed=S]" goes to
 *                      the student that owns the prompt's class as GENERATE; the images are
 *                      written as PNG files and the line is answered with their paths
 *                      (serve_images.c, docs/ROUTER.md "Serving")
 *   --mode echo (default), the walking skeleton: it connects to every
 * --connect peer whose name starts with "student" (K of them, ordered by the number after the
 * last '.'), takes the launcher's LINE messages, sends each line's text as ECHO (u8 tensor
 * "text") to student k = (leading integer of the line, else an FNV-1a hash of it) mod K, and
 * answers the LINE with "student.k: TEXT" once that student replies. Requests are matched by
 * id, so replies may come back in any order; the launcher puts its output in order.
 *
 * Backpressure (echo, mog and serve; router.h): each student has a FIFO of the lines waiting for it here and
 * at most --inflight N (default 1) requests forwarded to it; the next one goes when a reply
 * comes back. A request's --timeout-ms counts from when it is forwarded (with N = 1, when the
 * student starts it). A request past its timeout is cancelled: its line is answered with an
 * error, its late reply is dropped, and it still counts against N until that reply comes (the
 * student is busy with it). GENERATE carries "deadline_ms" (when the router gives up) so a
 * student skips a request that was cancelled before it started (docs/PROTOCOL.md section 3).
 * --mode serve (serve_images.c) routes text prompts through the sentence encoder. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "fsutil.h"
#include "log.h"
#include "mog.h"
#include "partition.h"
#include "partition_classes.h"
#include "proc.h"
#include "router.h"

static struct {
    const char *mix, *part, *out, *strategy, *from, *png;
    const char *embed_from, *embed_tensor, *dataset, *embed_prompts;
    int k, max_samples;
    uint64_t seed;
} opt = {.strategy = "balanced", .max_samples = MOG_SERVE_MAX_SAMPLES, .seed = 1};

RouterQueueOpts router_qopt = {.timeout_ms = 10000, .inflight = 1};
const ArgSpec router_timeout_args[] = {
    ARG_INT("--timeout-ms", &router_qopt.timeout_ms, 1, 86400000, "MS",
            "how long a student may take to answer a request, from when it is forwarded (default 10000)"),
    ARG_INT("--inflight", &router_qopt.inflight, 1, ROUTER_MAX_INFLIGHT, "N",
            "requests forwarded to one student at a time; the rest wait here (default 1)"),
    ARG_END_,
};
static const ArgSpec partition_args[] = {
    ARG_STR("--mix", &opt.mix, "FILE", "the toy: mixture specification (docs/MOG.md); or --embed-from"),
    ARG_STR("--embed-from", &opt.embed_from, "CKPT", "labelled images: the class embeddings from this checkpoint\n"
            "(a teacher's map_label.weight); or --mix"),
    ARG_STR("--embed-tensor", &opt.embed_tensor, "NAME", "with --embed-from: the tensor (default map_label.weight)"),
    ARG_STR("--dataset", &opt.dataset, "D", "with --embed-from: fmnist (default: the 10 class names) or ids;\n"
            "with --embed-prompts: fmnist"),
    ARG_STR("--embed-prompts", &opt.embed_prompts, "FILE", "labelled images: the class prototypes of a prompts file\n"
            "(pipelines/fmnist.prompts, embedded with all-MiniLM-L6-v2: docs/ROUTER.md)"),
    ARG_STR_REQ("--out", &opt.out, "FILE", "the partition file to write"),
    ARG_INT("--k", &opt.k, 1, 100000, "K", "number of groups (students); with manual: the K the file must have"),
    ARG_STR("--strategy", &opt.strategy, "S", "balanced (default), kmeans, random, contiguous or manual"),
    ARG_STR("--from", &opt.from, "FILE", "the hand-written partition (--strategy manual)"),
    ARG_U64("--seed", &opt.seed, "S", "seed of the clustering (default 1)"),
    ARG_END_,
};
static const ArgSpec mog_args[] = {
    ARG_STR_REQ("--mix", &opt.mix, "FILE", "mixture specification (docs/MOG.md)"),
    ARG_STR_REQ("--partition", &opt.part, "FILE", "which student owns which class"),
    ARG_STR("--png", &opt.png, "FILE", "scatter plot of every sample served, at the stop (none: off)"),
    ARG_INT("--max-samples", &opt.max_samples, 1, MOG_SERVE_MAX_SAMPLES, "N",
            "largest N of a line (default and most: MOG_SERVE_MAX_SAMPLES, the students' limit, 4096)"),
    ARG_INCLUDE(router_timeout_args),
    ARG_END_,
};

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

void router_answer(Router *r, uint64_t line_id, const char *text, int32_t status) {
    WireMsg req;
    wire_msg_init(&req, WIRE_OP_LINE, line_id);
    char *own = status != WIRE_STATUS_OK && r->hooks && r->hooks->error_line ? r->hooks->error_line(r, line_id, text) : NULL;
    proc_reply_line_as(r->p, &req, text, status, own);
    free(own);
}

/* mog: parse "CLASS [N]" (mog_parse_request) into pd (class, count, student); 0, or -1 after
 * answering the line. */
static int router_mog_parse(Router *r, const WireMsg *line, const WireTensor *t, Pending *pd) {
    char msg[MOG_REQUEST_MAX_TEXT + 512];
    int c;
    long cnt;
    if (mog_parse_request(&r->mog, t->data, t->nbytes, r->max_samples, &c, &cnt, msg, sizeof msg)) {
        router_answer(r, line->id, msg, WIRE_STATUS_BAD_REQUEST);
        return -1;
    }
    pd->cls = c;
    pd->count = cnt;
    pd->student = r->assign[c];
    return 0;
}

/* Send queued slot pd to its student (GENERATE or ECHO) and start its timeout; a send that
 * fails answers the line and frees the slot. 0 if sent. */
static int router_forward(Router *r, Pending *pd) {
    int k = pd->student;
    WireMsg m;
    wire_msg_init(&m, r->mog_mode || r->hooks ? WIRE_OP_GENERATE : WIRE_OP_ECHO, ++r->next_id);
    int32_t *labels = NULL;
    void *extra = NULL;
    /* the wall-clock time (Unix ms) after which the answer is no use: the student checks it
     * before it starts (a request cancelled while it waited behind another one) */
    int64_t one = 1, seed = (int64_t)pd->line_id, deadline_ms = msd_wall_ms() + r->timeout_ms;
    if (r->hooks) {
        extra = r->hooks->request(r, pd, &m, deadline_ms);
    } else if (r->mog_mode) {
        labels = msd_malloc(sizeof(int32_t) * (size_t)pd->count);
        for (int64_t i = 0; i < pd->count; i++) labels[i] = pd->cls;
        wire_msg_add(&m, "label", WIRE_I32, 1, &pd->count, labels);
        wire_msg_add(&m, "seed", WIRE_I64, 1, &one, &seed);
        wire_msg_add(&m, "deadline_ms", WIRE_I64, 1, &one, &deadline_ms);
    } else {
        int64_t len = (int64_t)pd->len;
        wire_msg_add(&m, "text", WIRE_U8, 1, &len, pd->text);
    }
    char err[256];
    int rc = wire_send(r->socks[k], &m, 0, 0, err, sizeof err);
    free(labels);
    free(extra);
    free(pd->text);
    pd->text = NULL;
    if (rc != WIRE_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s is not reachable: %s", r->names[k], err);
        router_answer(r, pd->line_id, msg, WIRE_STATUS_BUSY);
        pd->state = P_FREE;
        return -1;
    }
    pd->state = P_SENT;
    pd->id = r->next_id;
    pd->deadline = msd_now() + r->timeout_ms / 1000.0;
    r->q[k].inflight++;
    return 0;
}

/* Forward student k's queued lines while it has fewer than r->inflight in flight. */
static void router_pump(Router *r, int k) {
    StudentQ *q = &r->q[k];
    while (q->inflight < r->inflight && q->head >= 0) {
        Pending *pd = &r->pending[q->head];
        q->head = pd->next;
        if (q->head < 0) q->tail = -1;
        router_forward(r, pd);
    }
}

static void router_take_line(Router *r, WireMsg *line) {
    const WireTensor *t = wire_msg_find(line, "text");
    if (!t || t->dtype != WIRE_U8 || t->ndim != 1 || t->nbytes > ROUTER_MAX_TEXT) {
        router_answer(r, line->id, "a line needs a u8 tensor \"text\" of at most 4096 bytes", WIRE_STATUS_BAD_REQUEST);
        return;
    }
    int slot = -1;
    for (int i = 0; i < ROUTER_MAX_PENDING && slot < 0; i++) if (r->pending[i].state == P_FREE) slot = i;
    if (slot < 0) { router_answer(r, line->id, "too many lines in flight", WIRE_STATUS_BUSY); return; }
    Pending *pd = &r->pending[slot];
    *pd = (Pending){.line_id = line->id, .cls = -1, .next = -1, .t_in = msd_now()};
    if (r->hooks) {
        if (r->hooks->parse(r, line, t, pd)) return;
    } else if (r->mog_mode) {
        if (router_mog_parse(r, line, t, pd)) return;
    } else {
        pd->student = router_pick(r, t->data, t->nbytes);
        pd->len = t->nbytes;
        pd->text = msd_malloc(t->nbytes + 1);
        if (t->nbytes) memcpy(pd->text, t->data, t->nbytes);
    }
    pd->state = P_QUEUED;
    StudentQ *q = &r->q[pd->student];
    if (q->tail >= 0) r->pending[q->tail].next = slot;
    else q->head = slot;
    q->tail = slot;
    router_pump(r, pd->student);
}

/* mog: GENERATE's "x" (N, 2) -> N CSV lines "class,x,y" (and kept for --png). */
static void router_mog_reply(Router *r, int k, const WireMsg *m, const Pending *pd) {
    const WireTensor *x = wire_msg_find(m, "x");
    char msg[512];
    if (m->status != WIRE_STATUS_OK || !x || x->dtype != WIRE_F32 || x->ndim != 2 || x->shape[1] != r->mog.dim ||
        x->shape[0] < 1 || x->shape[0] > r->max_samples) {
        snprintf(msg, sizeof msg, "%s failed: %s %s", r->names[k], wire_status_name(m->status),
                 m->error[0] ? m->error : "(reply without a (N, dim) tensor \"x\")");
        router_answer(r, pd->line_id, msg, WIRE_STATUS_INTERNAL);
        return;
    }
    int64_t n = x->shape[0], D = r->mog.dim;
    const float *xs = x->data;
    for (int64_t i = 0; i < n * D; i++) {
        if (!isfinite(xs[i])) {
            snprintf(msg, sizeof msg, "%s produced a non-finite sample (%g at sample %lld); none served",
                     r->names[k], (double)xs[i], (long long)(i / D));
            router_answer(r, pd->line_id, msg, WIRE_STATUS_INTERNAL);
            return;
        }
    }
    /* Sized from the values themselves: every field is measured (snprintf with no room) before
     * it is written, so no class name or magnitude can run past the buffer. */
    size_t cap = 1, len = 0;
    const char *name = r->mog.class_names[pd->cls];
    for (int64_t i = 0; i < n; i++) {
        cap += strlen(name) + 1;
        for (int64_t j = 0; j < D; j++) cap += (size_t)snprintf(NULL, 0, ",%.6f", xs[i * D + j]);
    }
    char *out = msd_malloc(cap);
    for (int64_t i = 0; i < n; i++) {
        len += (size_t)snprintf(out + len, cap - len, "%s%s", i ? "\n" : "", name);
        for (int64_t j = 0; j < D; j++) len += (size_t)snprintf(out + len, cap - len, ",%.6f", xs[i * D + j]);
    }
    MSD_CHECK(len < cap);
    router_answer(r, pd->line_id, out, WIRE_STATUS_OK);
    free(out);
    if (r->png && D == 2 && r->nserved + n <= 1000000) {
        if (r->nserved + n > r->served_cap) {
            r->served_cap = 2 * (r->nserved + n);
            r->served = realloc(r->served, sizeof(float) * 2 * (size_t)r->served_cap);
            r->served_cls = realloc(r->served_cls, sizeof(int32_t) * (size_t)r->served_cap);
            if (!r->served || !r->served_cls) msd_die("out of memory keeping samples for --png");
        }
        memcpy(r->served + 2 * r->nserved, xs, sizeof(float) * 2 * (size_t)n);
        for (int64_t i = 0; i < n; i++) r->served_cls[r->nserved + i] = pd->cls;
        r->nserved += n;
    }
}

static int lookup_class(void *ctx, const char *tok) { return mog_class_lookup(ctx, tok); }

/* --mode partition: embed (the toy's class means, or an image dataset's class embeddings from
 * a checkpoint: partition_classes.c), cluster, write the file. Returns the exit status. */
static int router_partition(Proc *p) {
    const char *mix = opt.mix, *out = opt.out, *strategy = opt.strategy, *from = opt.from;
    int K = opt.k;
    uint64_t seed = opt.seed;
    Mog m = {0};
    RouterClasses img = {0};
    char err[1024];
    if (!!mix + !!opt.embed_from + !!opt.embed_prompts != 1)
        return msd_fail(2, "give one of --mix FILE (the toy), --embed-from CKPT or --embed-prompts FILE (a labelled "
                        "image dataset)");
    if (mix && (opt.embed_tensor || opt.dataset)) return msd_fail(2, "--embed-tensor and --dataset go with --embed-from");
    if (opt.embed_prompts && opt.embed_tensor) return msd_fail(2, "--embed-tensor goes with --embed-from");
    if (mix && mog_load(&m, mix, err, sizeof err)) return msd_fail(2, "%s", err);
    if (opt.embed_from && router_classes_load(&img, opt.embed_from, opt.embed_tensor, opt.dataset, err, sizeof err))
        return msd_fail(2, "%s", err);
    if (opt.embed_prompts && router_classes_from_prompts(&img, opt.embed_prompts, opt.dataset, err, sizeof err))
        return msd_fail(2, "%s", err);
    int n = mix ? m.nclasses : img.n, dim = mix ? m.dim : img.d, rc = 0;
    int *assign = msd_calloc((size_t)n, sizeof(int));
    double *emb = msd_calloc((size_t)n * (size_t)dim, sizeof(double));
    for (int c = 0; c < n && mix; c++) mog_class_mean(&m, c, emb + (size_t)c * (size_t)dim);
    if (!mix) memcpy(emb, img.emb, sizeof(double) * (size_t)n * (size_t)dim);
    const char **mnames = msd_calloc((size_t)n, sizeof(char *));
    for (int c = 0; c < n && mix; c++) mnames[c] = m.class_names[c];
    const char *const *cname = mix ? mnames : img.names;
    PartitionNames pn = {n, cname};
    if (!strcmp(strategy, "manual")) {
        if (!from) { msd_fail(2, "--strategy manual needs --from FILE"); rc = 2; }
        else if (partition_read_checked(from, assign, n, opt.k, cname, &K, mix ? lookup_class : partition_lookup_names,
                                        mix ? (void *)&m : (void *)&pn, err, sizeof err)) {
            msd_fail(2, "%s", err);
            rc = 2;
        }
    } else if (K < 1 || K > n) {
        msd_fail(2, "--k %d: must be in 1..%d (the number of classes)", K, n);
        rc = 2;
    } else if (!strcmp(strategy, "balanced") || !strcmp(strategy, "kmeans")) {
        partition_kmeans(assign, emb, n, dim, K, !strcmp(strategy, "balanced"), seed, 100);
    } else if (!strcmp(strategy, "random")) {
        partition_random(assign, n, K, seed);
    } else if (!strcmp(strategy, "contiguous")) {
        partition_contiguous(assign, n, K);
    } else {
        msd_fail(2, "--strategy %s: expected balanced, kmeans, random, contiguous or manual", strategy);
        rc = 2;
    }
    /* images: larger groups first, then by first class (the toy keeps k-means' order, which its
     * recorded results used) */
    if (rc == 0 && !mix && strcmp(strategy, "manual") != 0) partition_canonical(assign, n, K);
    if (rc == 0) {
        /* the writer's lock (held until the process ends): two partition runs on one file refuse */
        if (fs_mkdir_parent(out, err, sizeof err) || fs_lock_writer(out, err, sizeof err) < 0) {
            msd_fail(2, "%s", err);
            rc = 2;
        } else if (partition_write(out, assign, n, K, cname, err, sizeof err)) {
            msd_fail(2, "%s", err);
            rc = 1;
        }
    }
    if (rc == 0) {
        int *sizes = msd_calloc((size_t)K, sizeof(int));
        double *cw = msd_calloc((size_t)K, sizeof(double)), *dw = msd_calloc((size_t)K, sizeof(double)), cb;
        partition_sizes(sizes, assign, n, K);
        partition_group_stats(cw, dw, &cb, emb, n, dim, assign, K);
        for (int k = 0; k < K; k++) {
            char line[1024];
            int len = snprintf(line, sizeof line, "student %d owns %d class%s:", k, sizes[k], sizes[k] > 1 ? "es" : "");
            for (int c = 0; c < n && len < (int)sizeof line - 200; c++)
                if (assign[c] == k) len += snprintf(line + len, sizeof line - (size_t)len, " %.100s", cname[c]);
            if (sizes[k] > 1) snprintf(line + len, sizeof line - (size_t)len, " (within: cosine %.3f, distance %.3f)",
                                       cw[k], dw[k]);
            log_info("%s", line);
        }
        double sw = 0;
        int np = 0;
        for (int k = 0; k < K; k++) if (sizes[k] > 1) { sw += cw[k] * sizes[k] * (sizes[k] - 1) / 2; np += sizes[k] * (sizes[k] - 1) / 2; }
        if (np > 0 && K > 1) log_info("mean cosine similarity of the classes' embeddings: %.3f within groups (%d pairs), "
                                      "%.3f between groups", sw / np, np, cb);
        log_info("%s partition of %d classes into %d groups written to %s", strategy, n, K, out);
        free(sizes);
        free(cw);
        free(dw);
        proc_ready(p);
    }
    free(assign);
    free(emb);
    free(mnames);
    if (mix) mog_free(&m);
    router_classes_free(&img);
    if (rc == 0) return proc_end_job(p, 0, NULL);
    proc_finish(p);
    return rc;
}

static void router_take_reply(Router *r, int k) {
    WireMsg m;
    char err[256];
    int rc = wire_recv(r->socks[k], &m, 0, err, sizeof err);
    if (rc == WIRE_EAGAIN) return;
    if (rc != WIRE_OK) { wire_log_limited(WIRE_LOG_MALFORMED, r->names[k], "bad message: %s", err); return; }
    Pending *slot = NULL;
    for (int i = 0; i < ROUTER_MAX_PENDING && !slot; i++) {
        Pending *q = &r->pending[i];
        if ((q->state == P_SENT || q->state == P_CANCELLED) && q->id == m.id && q->student == k) slot = q;
    }
    if (!slot) {
        wire_log_limited(WIRE_LOG_STRAY, r->names[k], "reply to unknown request %llu dropped", (unsigned long long)m.id);
        wire_msg_close(&m);
        return;
    }
    /* the student is free again: give it its next request before formatting this answer */
    Pending pd = *slot;
    slot->state = P_FREE;
    r->q[k].inflight--;
    router_pump(r, k);
    if (pd.state == P_CANCELLED) { /* answered at its timeout: the late reply is dropped */
        wire_msg_close(&m);
        return;
    }
    if (r->hooks) {
        r->hooks->reply(r, k, &m, &pd);
        wire_msg_close(&m);
        return;
    }
    if (r->mog_mode) {
        router_mog_reply(r, k, &m, &pd);
        wire_msg_close(&m);
        return;
    }
    const WireTensor *t = wire_msg_find(&m, "text");
    char out[ROUTER_MAX_TEXT + 128];
    if (m.status != WIRE_STATUS_OK || !t || t->dtype != WIRE_U8 || t->nbytes > ROUTER_MAX_TEXT) {
        snprintf(out, sizeof out, "%s failed: %s %s", r->names[k], wire_status_name(m.status), m.error);
        router_answer(r, pd.line_id, out, WIRE_STATUS_INTERNAL);
    } else {
        int n = snprintf(out, sizeof out, "%s: ", r->names[k]);
        if (t->nbytes) memcpy(out + n, t->data, t->nbytes);
        out[(size_t)n + t->nbytes] = 0;
        router_answer(r, pd.line_id, out, WIRE_STATUS_OK);
    }
    wire_msg_close(&m);
}

/* Cancel every forwarded request past its timeout: answer its line now; it keeps its place
 * in the student's in-flight count until the late reply arrives (the student is still busy
 * with it, or skips it at its deadline_ms). Returns the ms until the next timeout (at most
 * 200), the router's poll timeout. */
static int router_expire(Router *r) {
    double now = msd_now(), next = now + 0.2;
    for (int i = 0; i < ROUTER_MAX_PENDING; i++) {
        Pending *pd = &r->pending[i];
        if (pd->state != P_SENT) continue;
        if (now < pd->deadline) {
            if (pd->deadline < next) next = pd->deadline;
            continue;
        }
        char msg[256];
        snprintf(msg, sizeof msg, "%s did not answer within %d ms (--timeout-ms); request cancelled",
                 r->names[pd->student], r->timeout_ms);
        log_warn("line %llu: %s", (unsigned long long)pd->line_id, msg);
        router_answer(r, pd->line_id, msg, WIRE_STATUS_INTERNAL);
        pd->state = P_CANCELLED;
    }
    return (int)((next - now) * 1000) + 1;
}

/* --mode echo, mog and serve (hooks): route the launcher's lines to the students until stopped. */
static int router_serve(Proc *p, int mog_mode, const RouterHooks *hooks) {
    static Router r;
    r.p = p;
    r.hooks = hooks;
    r.timeout_ms = router_qopt.timeout_ms;
    r.inflight = router_qopt.inflight;
    for (int k = 0; k < ROUTER_MAX_STUDENTS; k++) r.q[k] = (StudentQ){-1, -1, 0};
    r.mog_mode = mog_mode;
    r.max_samples = opt.max_samples;
    r.png = opt.png && strcmp(opt.png, "none") ? opt.png : NULL;
    const char *mix = opt.mix, *part = opt.part;
    int parts = 0;
    if (r.mog_mode) {
        char err[1024];
        if (mog_load(&r.mog, mix, err, sizeof err)) return msd_fail(2, "%s", err);
        r.assign = msd_calloc((size_t)r.mog.nclasses, sizeof(int));
        if (partition_read(part, r.assign, r.mog.nclasses, &parts, lookup_class, &r.mog, err, sizeof err)) return msd_fail(2, "%s", err);
    }
    for (int i = 0; i < p->nconnect; i++) {
        if (strncmp(p->connects[i].name, "student", 7) != 0) continue;
        if (r.k >= ROUTER_MAX_STUDENTS) return msd_fail(2, "at most %d students", ROUTER_MAX_STUDENTS);
        r.socks[r.k] = p->connects[i].sock;
        r.names[r.k] = p->connects[i].name;
        r.k++;
    }
    if (r.k == 0) return msd_fail(2, "needs --connect student.0=ENDPOINT (one per student)");
    if (r.mog_mode && parts != r.k) return msd_fail(2, "the partition has %d students but %d are connected", parts, r.k);
    for (int i = 1; i < r.k; i++) /* order by the number after the last '.' (student.2 < student.10) */
        for (int j = i; j > 0 && proc_name_index(r.names[j]) < proc_name_index(r.names[j - 1]); j--) {
            void *s = r.socks[j]; r.socks[j] = r.socks[j - 1]; r.socks[j - 1] = s;
            const char *n = r.names[j]; r.names[j] = r.names[j - 1]; r.names[j - 1] = n;
        }
    if (hooks) {
        int rc = hooks->setup(&r);
        if (rc) return rc;
    }
    proc_ready(p);
    int wait_ms = 200;
    static WireMsg lines[ROUTER_LINE_BATCH];
    while (!proc_should_stop(p)) {
        int got = proc_poll(p, r.socks, r.k, wait_ms, &lines[0]);
        if (got & PROC_POLL_LINE) {
            int nl = 1;   /* with a prepare hook: the lines already waiting too, prepared together */
            while (hooks && hooks->prepare && nl < ROUTER_LINE_BATCH && (proc_poll(p, NULL, 0, 0, &lines[nl]) & PROC_POLL_LINE))
                nl++;
            if (hooks && hooks->prepare) hooks->prepare(&r, lines, nl);
            for (int i = 0; i < nl; i++) {
                router_take_line(&r, &lines[i]);
                wire_msg_close(&lines[i]);
            }
        }
        for (int k = 0; k < r.k; k++) if (got & (1 << k)) router_take_reply(&r, k);
        wait_ms = router_expire(&r);
    }
    for (int i = 0; i < ROUTER_MAX_PENDING; i++) free(r.pending[i].text);
    if (hooks && hooks->finish) hooks->finish(&r);
    if (r.mog_mode) {
        char err[1024];
        if (r.png && r.nserved > 0) {
            if (mog_scatter_png(r.png, &r.mog, r.served, r.served_cls, r.nserved, 1, err, sizeof err))
                log_error("%s", err);
            else
                log_info("wrote %s: %lld samples", r.png, (long long)r.nserved);
        }
        free(r.served);
        free(r.served_cls);
        free(r.assign);
        mog_free(&r.mog);
    }
    return proc_finish(p);
}

static int run_echo(Proc *p) { return router_serve(p, 0, NULL); }
static int run_mog(Proc *p) { return router_serve(p, 1, NULL); }
int router_serve_hooks(Proc *p, const RouterHooks *hooks) { return router_serve(p, 0, hooks); }

static const ProcMode modes[] = {
    {"echo", "the walking skeleton: each input line goes to a student (its leading integer, else an FNV-1a\n"
             "hash of it, mod K) as ECHO; the answer is \"student.k: TEXT\"", router_timeout_args, run_echo, "the router", NULL},
    {"partition", "split the classes of a mixture (--mix) or of a labelled image set (--embed-from) into K\n"
                  "groups on their embeddings, write the partition file and exit (a job step)", partition_args, router_partition, "the router", NULL},
    {"mog", "lines \"CLASS [N]\" -> N CSV lines \"class,x,y\" from the student that owns CLASS", mog_args, run_mog,
     "the router", NULL},
    {"serve", "lines \"PROMPT [N] [seed=S]\" -> N images of the prompt's class from the student that owns it,\n"
              "written as PNG files; the answer names them, the class, the student and the latency\n"
              "(serve_images.c)", router_images_args, router_run_images, "the router", NULL},
    {0},
};

static const ProcDesc desc = {
    "router", "msd-router: routes each request to the student that owns it.", modes,
    "connects (echo, mog, serve): student.0 ... student.K-1 (every --connect name starting with \"student\")\n",
};

int main(int argc, char **argv) { return proc_main(&desc, argc, argv); }
