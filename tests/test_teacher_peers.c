/* test_teacher_peers.c: talks to standalone msd-data --mode fmnist and msd-teacher --mode
 * serve ($BIN) with hand-made requests, as a trainer or a student would: BATCH replies have the
 * promised shapes, repeat exactly for the same (seed, student, count, step) and keep a
 * student's classes; SAMPLE and DENOISE of a small UNet checkpoint (written here) match the
 * same computation in this process; bad requests get BAD_REQUEST naming the tensor, and the
 * servers stay alive. Endpoints are ipc:// in a fresh temporary folder; every wait is bounded.
 *
 * Not here: training (test_teacher_train.sh), the wire format (test_wire.c). */
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "dataset.h"
#include "edmunet.h"
#include "log.h"
#include "peers.h"
#include "wire.h"

#define NET_SPEC "in=1,res=28,ch=8,mult=1-2,blocks=1,attn=14,classes=10,headch=8"

/* The request gets BAD_REQUEST whose text names `what`. */
static void expect_bad(void *s, const WireMsg *m, const char *what, const char *label) {
    WireMsg r;
    if (ask(s, m, &r, 20) != WIRE_OK) { CHECK(0, "%s: no reply", label); return; }
    CHECK(r.op == WIRE_OP_ERROR && r.status == WIRE_STATUS_BAD_REQUEST && strstr(r.error, what),
          "%s: status %d '%s' (expected bad-request naming %s)", label, r.status, r.error, what);
    wire_msg_close(&r);
}

static void batch_msg(WireMsg *m, uint64_t id, const int32_t *count, const int64_t *step, const int32_t *student) {
    static const int64_t one = 1;
    wire_msg_init(m, WIRE_OP_BATCH, id);
    if (count) wire_msg_add(m, "count", WIRE_I32, 1, &one, count);
    if (step) wire_msg_add(m, "step", WIRE_I64, 1, &one, step);
    if (student) wire_msg_add(m, "student", WIRE_I32, 1, &one, student);
}

static void test_data_fmnist(void) {
    const char *dir = getenv("MSD_FMNIST_DIR");
    char probe[600];
    snprintf(probe, sizeof probe, "%s/t10k-labels-idx1-ubyte", dir && dir[0] ? dir : DATASET_FMNIST_DIR);
    if (check_file_missing(probe)) SKIP_MISSING_DATA("%s(.gz) missing (Debian package dataset-fashion-mnist)", probe);
    char ep[512], part[512];
    snprintf(ep, sizeof ep, "serve=ipc://%s/data", g_dir);
    snprintf(part, sizeof part, "%s/partition.txt", g_dir);
    FILE *f = fopen(part, "w");
    REQUIRE(f);
    fprintf(f, "partition 2\n0: tshirt Trouser 2 3 4\n1: sandal shirt sneaker 8 boot  # names or ids\n");
    fclose(f);
    const char *args[] = {"--bind", ep, "--mode", "fmnist", "--data", "fmnist:test", "--partition", part, "--seed", "3",
                          NULL};
    pid_t pid = spawn("msd-data", args);
    REQUIRE(pid > 0, "could not start %s/msd-data", g_bin);
    void *s = dealer("data");
    WireMsg m, r, r2;
    int32_t four = 4, eight = 8, one_s = 1;
    int64_t step5 = 5, step1 = 1, step3 = 3, step6 = 6;
    batch_msg(&m, 1, &four, &step5, NULL);
    REQUIRE(ask(s, &m, &r, 30) == WIRE_OK, "no answer to BATCH");
    const WireTensor *x = wire_msg_find(&r, "x"), *l = wire_msg_find(&r, "label");
    REQUIRE(r.status == WIRE_STATUS_OK && x && l, "status %d '%s'", r.status, r.error);
    CHECK(x->dtype == WIRE_F32 && x->ndim == 4 && x->shape[0] == 4 && x->shape[1] == 1 && x->shape[2] == 28 &&
          x->shape[3] == 28);
    CHECK(l->dtype == WIRE_I32 && l->ndim == 1 && l->shape[0] == 4);
    const float *xv = x->data;
    float lo = 1e9f, hi = -1e9f;
    for (int i = 0; i < 4 * 784; i++) { lo = xv[i] < lo ? xv[i] : lo; hi = xv[i] > hi ? xv[i] : hi; }
    CHECK(lo >= -1.0f && hi <= 1.0f && hi > lo, "pixel range [%g, %g]", lo, hi);
    /* the same request again: the same batch */
    batch_msg(&m, 2, &four, &step5, NULL);
    REQUIRE(ask(s, &m, &r2, 10) == WIRE_OK);
    const WireTensor *x2 = wire_msg_find(&r2, "x");
    CHECK(x2 && x2->nbytes == x->nbytes && !memcmp(x2->data, x->data, x->nbytes), "step 5 twice: different batches");
    wire_msg_close(&r2);
    batch_msg(&m, 3, &four, &step6, NULL);
    REQUIRE(ask(s, &m, &r2, 10) == WIRE_OK);
    x2 = wire_msg_find(&r2, "x");
    CHECK(x2 && x2->nbytes == x->nbytes && memcmp(x2->data, x->data, x->nbytes), "steps 5 and 6: the same batch");
    wire_msg_close(&r2);
    wire_msg_close(&r);
    /* batch (step 1, count 8) holds samples 8..15 of the shuffled order; (step 3, count 4) holds 12..15 */
    batch_msg(&m, 4, &eight, &step1, &one_s);
    REQUIRE(ask(s, &m, &r, 10) == WIRE_OK);
    batch_msg(&m, 5, &four, &step3, &one_s);
    REQUIRE(ask(s, &m, &r2, 10) == WIRE_OK);
    x = wire_msg_find(&r, "x");
    l = wire_msg_find(&r, "label");
    x2 = wire_msg_find(&r2, "x");
    REQUIRE(x && l && x2 && r.status == 0 && r2.status == 0, "'%s' '%s'", r.error, r2.error);
    CHECK(!memcmp((const float *)x->data + 4 * 784, x2->data, 4 * 784 * sizeof(float)),
          "a batch is not a slice of the step-keyed order");
    const int32_t *lb = l->data;
    int inpart = 1;
    for (int i = 0; i < 8; i++) inpart &= lb[i] >= 5 && lb[i] <= 9;
    CHECK(inpart, "student 1's labels must be 5..9 (first %d)", lb[0]);
    wire_msg_close(&r);
    wire_msg_close(&r2);
    /* bad requests */
    int32_t zero = 0, two = 2;
    int64_t neg = -1, big = INT64_MAX / 2;
    float fcount = 4;
    int64_t one = 1;
    batch_msg(&m, 10, NULL, &step5, NULL);
    expect_bad(s, &m, "count", "no count");
    batch_msg(&m, 11, &zero, &step5, NULL);
    expect_bad(s, &m, "count", "count 0");
    wire_msg_init(&m, WIRE_OP_BATCH, 12);
    wire_msg_add(&m, "count", WIRE_F32, 1, &one, &fcount);
    wire_msg_add(&m, "step", WIRE_I64, 1, &one, &step5);
    expect_bad(s, &m, "count", "count as f32");
    batch_msg(&m, 13, &four, NULL, NULL);
    expect_bad(s, &m, "step", "no step");
    batch_msg(&m, 14, &four, &neg, NULL);
    expect_bad(s, &m, "step", "step -1");
    batch_msg(&m, 15, &four, &big, NULL);
    expect_bad(s, &m, "step", "step too large for the count");
    batch_msg(&m, 16, &four, &step5, &two);
    expect_bad(s, &m, "student", "student 2 of K = 2");
    wire_msg_init(&m, WIRE_OP_BATCH, 17);
    wire_msg_add(&m, "count", WIRE_I32, 1, &one, &four);
    wire_msg_add(&m, "step", WIRE_I64, 1, &one, &step5);
    wire_msg_add(&m, "student", WIRE_I64, 1, &one, &step5);
    expect_bad(s, &m, "student", "student as i64");
    wire_msg_init(&m, WIRE_OP_DENOISE, 18);
    REQUIRE(ask(s, &m, &r, 10) == WIRE_OK);
    CHECK(r.status == WIRE_STATUS_UNKNOWN_OP, "denoise to data: status %d", r.status);
    wire_msg_close(&r);
    /* still serving */
    batch_msg(&m, 19, &four, &step5, &zero);
    REQUIRE(ask(s, &m, &r, 10) == WIRE_OK);
    CHECK(r.status == WIRE_STATUS_OK && r.id == 19, "status %d '%s'", r.status, r.error);
    wire_msg_close(&r);
    zmq_close(s);
    stop_and_check(pid, "msd-data after SIGTERM");
}

static void sample_msg(WireMsg *m, uint64_t id, int64_t n, const int32_t *labels, const int64_t *seed,
                       const int32_t *steps) {
    static const int64_t one = 1;
    wire_msg_init(m, WIRE_OP_SAMPLE, id);
    if (labels) wire_msg_add(m, "label", WIRE_I32, 1, &n, labels);
    if (seed) wire_msg_add(m, "seed", WIRE_I64, 1, &one, seed);
    if (steps) wire_msg_add(m, "steps", WIRE_I32, 1, &one, steps);
}

static void test_teacher_unet(void) {
    char err[1024], ckpt[512], ep[512];
    snprintf(ckpt, sizeof ckpt, "%s/teacher.safetensors", g_dir);
    BackendCtx *ctx = backend_ctx_new(&backend_cpu, 1);
    EdmUNet net;
    REQUIRE(edmunet_new(&net, NET_SPEC, &backend_cpu, ctx, 4, NULL, 5, err, sizeof err) == 0, "%s", err);
    /* the zero-initialised output layers would make F = 0: give them values so the test sees the network */
    ParamSet *ps = unet_params(net.unet);
    for (int i = 0; i < ps->n; i++)
        if (strstr(ps->p[i].name, "conv1.weight") || strstr(ps->p[i].name, "out.conv.weight"))
            edm_param_uniform(ps, i, 0.05f, 100 + (uint64_t)i);
    REQUIRE(edmunet_save(&net, ckpt, NULL, 0, err, sizeof err) == 0, "%s", err);
    snprintf(ep, sizeof ep, "serve=ipc://%s/teacher", g_dir);
    const char *args[] = {"--bind", ep, "--mode", "serve", "--ckpt", ckpt, "--threads", "1", "--cap", "3", NULL};
    pid_t pid = spawn("msd-teacher", args);
    REQUIRE(pid > 0, "could not start %s/msd-teacher", g_bin);
    void *s = dealer("teacher");
    WireMsg m, r, r2;
    /* SAMPLE: what this process computes, and the same twice */
    int32_t labels[5] = {3, 7, 0, 9, 3}, three = 3;
    int64_t seed = 11;
    sample_msg(&m, 1, 5, labels, &seed, &three);
    REQUIRE(ask(s, &m, &r, 30) == WIRE_OK, "no answer to SAMPLE");
    const WireTensor *x = wire_msg_find(&r, "x");
    REQUIRE(r.status == WIRE_STATUS_OK && r.op == WIRE_OP_SAMPLE && x, "status %d '%s'", r.status, r.error);
    CHECK(x->ndim == 4 && x->shape[0] == 5 && x->shape[1] == 1 && x->shape[2] == 28 && x->shape[3] == 28);
    float want[5 * 784];
    SamplerConfig sc;
    sampler_config_default(&sc);
    sc.steps = 3;
    edmunet_sample(&net, &sc, want, labels, 5, 11, 0);
    if (x->nbytes == sizeof want) CHECK_CLOSE((const float *)x->data, want, 5 * 784, 1e-4, 1e-4, "SAMPLE vs in-process");
    sample_msg(&m, 2, 5, labels, &seed, &three);
    REQUIRE(ask(s, &m, &r2, 30) == WIRE_OK);
    const WireTensor *x2 = wire_msg_find(&r2, "x");
    CHECK(x2 && x2->nbytes == x->nbytes && !memcmp(x2->data, x->data, x->nbytes), "SAMPLE twice: different images");
    wire_msg_close(&r2);
    wire_msg_close(&r);
    /* DENOISE */
    float xin[2 * 784], sig[2] = {0.5f, 3.0f}, d[2 * 784];
    for (int i = 0; i < 2 * 784; i++) xin[i] = 0.8f * sinf(0.01f * (float)i);
    int32_t dl[2] = {4, 1};
    int64_t xs[4] = {2, 1, 28, 28}, two = 2;
    wire_msg_init(&m, WIRE_OP_DENOISE, 3);
    wire_msg_add(&m, "x", WIRE_F32, 4, xs, xin);
    wire_msg_add(&m, "sigma", WIRE_F32, 1, &two, sig);
    wire_msg_add(&m, "label", WIRE_I32, 1, &two, dl);
    REQUIRE(ask(s, &m, &r, 30) == WIRE_OK);
    const WireTensor *dt = wire_msg_find(&r, "d");
    REQUIRE(r.status == WIRE_STATUS_OK && dt && dt->nbytes == sizeof d, "status %d '%s'", r.status, r.error);
    edm_forward(&net.edm, d, xin, sig, dl, NULL, 2, 0);
    CHECK_CLOSE((const float *)dt->data, d, 2 * 784, 1e-5, 1e-4, "DENOISE vs in-process");
    wire_msg_close(&r);
    /* bad SAMPLE requests */
    int32_t zero = 0, bad_label[2] = {3, 10}, big_steps = 5000;
    int64_t one = 1, seed64 = 3;
    float churn = 1;
    sample_msg(&m, 10, 2, labels, NULL, &three);
    expect_bad(s, &m, "seed", "no seed");
    sample_msg(&m, 11, 2, labels, &seed, NULL);
    expect_bad(s, &m, "steps", "no steps");
    sample_msg(&m, 12, 2, labels, &seed, &zero);
    expect_bad(s, &m, "steps", "steps 0");
    sample_msg(&m, 13, 2, labels, &seed, &big_steps);
    expect_bad(s, &m, "steps", "steps 5000");
    sample_msg(&m, 14, 2, NULL, &seed, &three);
    expect_bad(s, &m, "label", "no label");
    sample_msg(&m, 15, 2, bad_label, &seed, &three);
    expect_bad(s, &m, "label", "label 10");
    sample_msg(&m, 16, 0, labels, &seed, &three);
    expect_bad(s, &m, "label", "no images");
    sample_msg(&m, 17, 2, labels, &seed, &three);
    wire_msg_add(&m, "churn", WIRE_I64, 1, &one, &seed64);
    expect_bad(s, &m, "churn", "churn as i64");
    churn = -1;
    sample_msg(&m, 18, 2, labels, &seed, &three);
    wire_msg_add(&m, "churn", WIRE_F32, 1, &one, &churn);
    expect_bad(s, &m, "churn", "churn -1");
    wire_msg_init(&m, WIRE_OP_SAMPLE, 19);
    wire_msg_add(&m, "label", WIRE_I32, 1, &one, labels);
    wire_msg_add(&m, "seed", WIRE_I32, 1, &one, &three);
    wire_msg_add(&m, "steps", WIRE_I32, 1, &one, &three);
    expect_bad(s, &m, "seed", "seed as i32");
    /* bad DENOISE requests */
    int64_t flat[2] = {2, 784};
    float sig0[2] = {0.5f, 0.0f};
    wire_msg_init(&m, WIRE_OP_DENOISE, 20);
    wire_msg_add(&m, "x", WIRE_F32, 2, flat, xin);
    wire_msg_add(&m, "sigma", WIRE_F32, 1, &two, sig);
    wire_msg_add(&m, "label", WIRE_I32, 1, &two, dl);
    expect_bad(s, &m, "\"x\"", "x (2, 784)");
    wire_msg_init(&m, WIRE_OP_DENOISE, 21);
    wire_msg_add(&m, "x", WIRE_F32, 4, xs, xin);
    wire_msg_add(&m, "sigma", WIRE_F32, 1, &two, sig0);
    wire_msg_add(&m, "label", WIRE_I32, 1, &two, dl);
    expect_bad(s, &m, "sigma", "sigma 0");
    wire_msg_init(&m, WIRE_OP_DENOISE, 22);
    wire_msg_add(&m, "x", WIRE_F32, 4, xs, xin);
    wire_msg_add(&m, "sigma", WIRE_F32, 1, &two, sig);
    expect_bad(s, &m, "label", "no label");
    wire_msg_init(&m, WIRE_OP_BATCH, 23);
    REQUIRE(ask(s, &m, &r, 10) == WIRE_OK);
    CHECK(r.status == WIRE_STATUS_UNKNOWN_OP, "batch to the teacher: status %d", r.status);
    wire_msg_close(&r);
    /* still serving */
    sample_msg(&m, 24, 1, labels, &seed, &three);
    REQUIRE(ask(s, &m, &r, 30) == WIRE_OK);
    x = wire_msg_find(&r, "x");
    CHECK(r.status == WIRE_STATUS_OK && x && x->nbytes == 784 * sizeof(float), "status %d '%s'", r.status, r.error);
    if (x && x->nbytes == 784 * sizeof(float))
        CHECK_CLOSE((const float *)x->data, want, 784, 1e-4, 1e-4, "image 0 alone vs image 0 of five");
    wire_msg_close(&r);
    zmq_close(s);
    stop_and_check(pid, "msd-teacher after SIGTERM");
    edmunet_free(&net);
    backend_ctx_destroy(&ctx);
}

int main(void) {
    log_set_level(LOG_LVL_ERROR);
    const char *bin = getenv("BIN"), *tmp = getenv("TMPDIR");
    snprintf(g_bin, sizeof g_bin, "%s", bin && bin[0] ? bin : "bin");
    snprintf(g_dir, sizeof g_dir, "%s/msdteach.XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) { perror("mkdtemp"); return 1; }
    signal(SIGPIPE, SIG_IGN);
    g_ctx = zmq_ctx_new();
    TEST_RUN(test_data_fmnist);
    TEST_RUN(test_teacher_unet);
    peers_finish();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return TEST_END();
}
