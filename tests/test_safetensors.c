/* test_safetensors.c: the safetensors reader/writer (common/nn/safetensors.c) and training
 * checkpoints (common/nn/checkpoint.c): byte-exact round trips, a file laid out like the Python
 * library's (tests/fixtures/st_python.safetensors, from make_st_python.py beside it), a table
 * of corrupt files that must each fail with a message naming the problem, ParamSet loading
 * errors, atomic writes that leave the old file intact, exact training resume, and checkpoints of
 * several parts (a critic and its GAN head: checkpoint_{save,load}_parts). */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "checkpoint.h"
#include "optimizer.h"
#include "params.h"
#include "safetensors.h"

#ifndef FIXTURE_DIR
#define FIXTURE_DIR "tests/fixtures"
#endif

static char g_dir[256];
static BackendCtx *g_ctx;

static char *path_in(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

static unsigned char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    *len = fread(b, 1, (size_t)n, f);
    fclose(f);
    return b;
}

static void test_write_read_roundtrip_bytes(void) {
    float a[6] = {1, -2, 3.5f, 0, -0.0f, 1e-30f}, b[2] = {7, 8};
    int32_t c[3] = {-1, 2, 1 << 30};
    int64_t sa[2] = {2, 3}, sb[1] = {2}, sc[1] = {3}, se[2] = {0, 5};
    StWriteTensor w[4] = {
        {"zeta.bias", ST_F32, 1, sb, b},
        {"alpha.weight", ST_F32, 2, sa, a},
        {"count", ST_I32, 1, sc, c},
        {"empty", ST_F32, 2, se, NULL},
    };
    StMeta meta[2] = {{"step", "12"}, {"config", "{\"lr\": 1e-4,\n \"name\": \"t\\u00e9\"}"}};
    char err[512];
    const char *p1 = path_in("rt1.safetensors"), *p2 = path_in("rt2.safetensors");
    REQUIRE(st_write(p1, w, 4, meta, 2, err, sizeof err) == 0, "%s", err);
    StFile f;
    REQUIRE(st_read(&f, p1, err, sizeof err) == 0, "%s", err);
    CHECK(f.n == 4 && f.nmeta == 2, "n %d nmeta %d", f.n, f.nmeta);
    /* sorted by name, packed in that order */
    CHECK(strcmp(f.t[0].name, "alpha.weight") == 0 && f.t[0].begin == 0, "first tensor %s", f.t[0].name);
    const StTensor *t = st_find(&f, "alpha.weight");
    REQUIRE(t && t->dtype == ST_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3, "alpha.weight");
    float got[6];
    st_tensor_to_f32(t, got);
    CHECK(memcmp(got, a, sizeof a) == 0, "alpha.weight values");
    t = st_find(&f, "count");
    REQUIRE(t && t->dtype == ST_I32, "count");
    st_tensor_to_f32(t, got);
    CHECK(got[0] == -1 && got[1] == 2 && got[2] == (float)(1 << 30), "count values");
    CHECK(st_find(&f, "empty") && st_find(&f, "empty")->numel == 0, "empty tensor");
    CHECK(st_find(&f, "nope") == NULL, "st_find of a missing name");
    const char *cfg = st_meta_get(&f, "config");
    CHECK(cfg && strcmp(cfg, meta[1].value) == 0, "metadata escapes round trip: %s", cfg ? cfg : "(null)");

    /* write what was read: identical bytes */
    StWriteTensor w2[4];
    for (int i = 0; i < f.n; i++)
        w2[i] = (StWriteTensor){f.t[i].name, f.t[i].dtype, f.t[i].ndim, f.t[i].shape, f.t[i].data};
    REQUIRE(st_write(p2, w2, f.n, f.meta, f.nmeta, err, sizeof err) == 0, "%s", err);
    size_t l1, l2;
    unsigned char *b1 = slurp(p1, &l1), *b2 = slurp(p2, &l2);
    REQUIRE(b1 && b2, "read back");
    CHECK(l1 == l2 && memcmp(b1, b2, l1) == 0, "save -> load -> save differs (%zu vs %zu bytes)", l1, l2);
    uint64_t hlen = 0;
    for (int k = 7; k >= 0; k--) hlen = (hlen << 8) | b1[k];
    CHECK(hlen % 8 == 0 && b1[8] == '{', "header length %llu not 8-aligned", (unsigned long long)hlen);
    CHECK(memcmp(b1 + 8, "{\"__metadata__\":{\"config\":", 26) == 0, "header starts %.40s", (char *)b1 + 8);
    /* st_serialize gives the same bytes as st_write */
    unsigned char *mem;
    size_t mlen;
    REQUIRE(st_serialize(w, 4, meta, 2, &mem, &mlen, err, sizeof err) == 0, "%s", err);
    CHECK(mlen == l1 && memcmp(mem, b1, l1) == 0, "st_serialize differs from st_write");
    free(mem);
    free(b1);
    free(b2);
    st_free(&f);
    st_free(&f); /* harmless twice */

    /* writer refuses duplicates */
    StWriteTensor dup[2] = {{"x", ST_F32, 1, sb, b}, {"x", ST_F32, 1, sb, b}};
    CHECK(st_write(p1, dup, 2, NULL, 0, err, sizeof err) < 0 && strstr(err, "'x'"), "duplicate: %s", err);
    StMeta dm[2] = {{"k", "1"}, {"k", "2"}};
    CHECK(st_write(p1, w, 1, dm, 2, err, sizeof err) < 0 && strstr(err, "'k'"), "duplicate meta: %s", err);
}

static void test_python_fixture(void) {
    StFile f;
    char err[512];
    REQUIRE(st_read(&f, FIXTURE_DIR "/st_python.safetensors", err, sizeof err) == 0, "%s", err);
    CHECK(f.n == 7, "n %d", f.n);
    CHECK(st_meta_get(&f, "format") && strcmp(st_meta_get(&f, "format"), "pt") == 0, "format metadata");
    float v[8];
    const StTensor *t;
    REQUIRE((t = st_find(&f, "a.weight")) && t->dtype == ST_F32 && t->ndim == 2 && t->shape[1] == 3, "a.weight");
    st_tensor_to_f32(t, v);
    float wa[6] = {-1, -0.5f, 0, 0.5f, 1, 1.5f};
    CHECK_CLOSE(v, wa, 6, 0, 0, "a.weight");
    REQUIRE((t = st_find(&f, "b.half")) && t->dtype == ST_F16, "b.half");
    st_tensor_to_f32(t, v);
    float wb[4] = {1.5f, -2, 65504, 0x1p-24f};
    CHECK_CLOSE(v, wb, 4, 0, 0, "b.half");
    REQUIRE((t = st_find(&f, "c.bf16")) && t->dtype == ST_BF16, "c.bf16");
    st_tensor_to_f32(t, v);
    float wc[2] = {3.140625f, -0.5f};
    CHECK_CLOSE(v, wc, 2, 0, 0, "c.bf16");
    REQUIRE((t = st_find(&f, "d.long")) && t->dtype == ST_I64, "d.long");
    st_tensor_to_f32(t, v);
    float wd[3] = {-3, 0, 0x1p40f};
    CHECK_CLOSE(v, wd, 3, 0, 0, "d.long");
    REQUIRE((t = st_find(&f, "e.double")) && t->dtype == ST_F64, "e.double");
    st_tensor_to_f32(t, v);
    CHECK(v[0] == 0.1f, "e.double %.9g", v[0]);
    REQUIRE((t = st_find(&f, "s")) && t->ndim == 0 && t->numel == 1, "0-d s");
    st_tensor_to_f32(t, v);
    CHECK(v[0] == 2.5f, "s %g", v[0]);
    REQUIRE((t = st_find(&f, "z.empty")) && t->numel == 0 && t->shape[1] == 4, "z.empty");
    st_free(&f);
}

/* A file image: 8-byte length, header text, then dlen data bytes (0x11). hlen_override
 * >= 0 replaces the length field. */
static unsigned char *mkfile(const char *hdr, size_t dlen, long long hlen_override, size_t *len) {
    size_t h = strlen(hdr);
    *len = 8 + h + dlen;
    unsigned char *b = malloc(*len);
    uint64_t hl = hlen_override >= 0 ? (uint64_t)hlen_override : h;
    for (int k = 0; k < 8; k++) b[k] = (unsigned char)(hl >> (8 * k));
    memcpy(b + 8, hdr, h);
    memset(b + 8 + h, 0x11, dlen);
    return b;
}

#define T1 "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}"

static void test_corrupt_files(void) {
    static const struct {
        const char *what, *hdr;
        size_t dlen;
        long long hlen;  /* -1: the real length */
        const char *want; /* substring the message must contain */
    } cases[] = {
        {"valid control", T1 "}", 4, -1, NULL},
        {"header length > file", T1 "}", 4, 1000, "exceeds"},
        {"huge header length", T1 "}", 4, (long long)1 << 62, "exceeds"},
        {"zero header length", T1 "}", 4, 0, "start with '{'"},
        {"non-object header", "[1,2]", 0, -1, "start with '{'"},
        {"string header", "\"a\"", 0, -1, "start with '{'"},
        {"unterminated object", T1, 4, -1, "unterminated object"},
        {"missing colon", "{\"a\" {\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, -1, "expected ':'"},
        {"trailing comma", T1 ",}", 4, -1, "expected a string key"},
        {"single quotes", "{'a':1}", 0, -1, "expected a string key"},
        {"unterminated string", "{\"a", 0, -1, "unterminated string"},
        {"bad escape", "{\"a\\x\":1}", 0, -1, "bad escape"},
        {"lone surrogate", "{\"a\\udc00\":1}", 0, -1, "surrogate"},
        {"NUL escape", "{\"a\\u0000\":1}", 0, -1, "\\u0000"},
        {"control char", "{\"a\tb\":1}", 0, -1, "control character"},
        {"invalid UTF-8", "{\"a\xc3\x28\":1}", 0, -1, "UTF-8"},
        {"overlong UTF-8", "{\"a\xc0\xaf\":1}", 0, -1, "UTF-8"},
        {"leading zero", "{\"a\":{\"dtype\":\"F32\",\"shape\":[01],\"data_offsets\":[0,4]}}", 4, -1, "leading zero"},
        {"bad literal", "{\"a\":tru}", 0, -1, "unexpected character"},
        {"garbage after object", T1 "} x", 4, -1, "trailing characters"},
        {"NUL padding", T1 "}\0\0\0", 4, -1, NULL /* replaced below */},
        {"too deep", "{\"a\":[[[1]]]}", 0, -1, "nested deeper"},
        {"duplicate key", T1 ",\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, -1,
         "duplicate key 'a'"},
        {"duplicate field", "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, -1,
         "duplicate key 'dtype'"},
        {"unknown dtype", "{\"a\":{\"dtype\":\"F128\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, -1, "'F128'"},
        {"dtype not string", "{\"a\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, -1, "dtype is not"},
        {"missing field", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, -1, "missing field 'data_offsets'"},
        {"unknown field", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4, -1,
         "unknown field 'x'"},
        {"entry not object", "{\"a\":[1]}", 0, -1, "'a': entry is not an object"},
        {"shape/offset mismatch", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, -1,
         "needs 8 bytes"},
        {"negative dim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, -1,
         "shape[0] is not a non-negative integer"},
        {"float dim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4, -1, "shape[0]"},
        {"too many dims", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, -1,
         "9 dimensions"},
        {"huge shape (overflow)",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,4]}}", 4, -1,
         "overflows"},
        {"huge shape (in range of u64)", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1000000000000],"
         "\"data_offsets\":[0,4000000000000]}}", 4, -1, "out of range"},
        {"number too big", "{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,4]}}", 4,
         -1, "shape[0]"},
        {"offsets not pair", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, -1,
         "data_offsets is not"},
        {"end before begin", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,0]}}", 4, -1,
         "end before begin"},
        {"out-of-range offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, -1,
         "out of range"},
        {"truncated data", T1 "}", 2, -1, "out of range"},
        {"overlap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, -1, "overlap tensor 'a'"},
        {"gap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12, -1, "'b': gap of 4 bytes"},
        {"gap at start", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, -1, "'a': gap"},
        {"trailing data", T1 "}", 9, -1, "5 bytes after the last tensor"},
        {"metadata not object", "{\"__metadata__\":[]}", 0, -1, "__metadata__ is not an object"},
        {"metadata value not string", "{\"__metadata__\":{\"k\":1}}", 0, -1, "key 'k': value is not a string"},
    };
    char err[512];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len;
        unsigned char *b;
        if (strcmp(cases[i].what, "NUL padding") == 0) {
            /* NUL bytes (not spaces) after the object: strlen cannot carry them, build by hand */
            size_t h = strlen(T1 "}") + 3;
            len = 8 + h + 4;
            b = calloc(1, len);
            for (int k = 0; k < 8; k++) b[k] = (unsigned char)(h >> (8 * k));
            memcpy(b + 8, T1 "}", h - 3);
        } else {
            b = mkfile(cases[i].hdr, cases[i].dlen, cases[i].hlen, &len);
        }
        StFile f;
        err[0] = 0;
        int rc = st_parse(&f, b, len, "bad.safetensors", err, sizeof err);
        if (i == 0) {
            CHECK(rc == 0, "%s: %s", cases[i].what, err);
        } else {
            const char *want = cases[i].want ? cases[i].want : "trailing characters";
            CHECK(rc < 0, "%s: accepted", cases[i].what);
            CHECK(strstr(err, "bad.safetensors") && strstr(err, want), "%s: message '%s' lacks '%s'", cases[i].what,
                  err, want);
            CHECK(f.n == 0 && f.t == NULL && f.meta == NULL, "%s: StFile not left empty", cases[i].what);
        }
        st_free(&f);
        free(b);
    }
    /* every truncation of a valid file fails cleanly */
    int64_t s[1] = {3};
    float d[3] = {1, 2, 3};
    StWriteTensor w = {"w", ST_F32, 1, s, d};
    StMeta m = {"k", "v"};
    unsigned char *img;
    size_t n;
    REQUIRE(st_serialize(&w, 1, &m, 1, &img, &n, err, sizeof err) == 0, "%s", err);
    int accepted = 0;
    for (size_t k = 0; k < n; k++) {
        unsigned char *cut = malloc(k ? k : 1);
        memcpy(cut, img, k);
        StFile f;
        if (st_parse(&f, cut, k, "cut", err, sizeof err) == 0) accepted++;
        st_free(&f);
        free(cut);
    }
    CHECK(accepted == 0, "%d truncations accepted", accepted);
    CHECK(st_parse(&(StFile){0}, img, 5, "short", err, sizeof err) < 0 && strstr(err, "too short"), "%s", err);
    free(img);
    StFile f;
    CHECK(st_read(&f, path_in("does-not-exist"), err, sizeof err) < 0 && strstr(err, "does-not-exist") &&
              strstr(err, "No such file"), "missing file: %s", err);
}

static void make_ps(ParamSet *ps, int variant) {
    params_init(ps);
    int64_t s0[2] = {2, 3}, s1[1] = {5}, s2[2] = {3, 2};
    params_add(ps, "enc.conv.weight", 2, variant == 2 ? s2 : s0);
    params_add(ps, "enc.conv.bias", 1, s1);
    if (variant == 1) params_add(ps, "extra.weight", 1, s1);
    params_alloc(ps, &backend_cpu, g_ctx);
    /* values in the parameters only: the slab's padding stays zero, as in a real model */
    for (int k = 0; k < ps->n; k++)
        for (int64_t i = 0; i < ps->p[k].numel; i++) params_data(ps, k)[i] = 0.25f * (float)(i + 8 * k) - 1.0f;
}

static void test_params_save_load(void) {
    ParamSet a, b;
    char err[512];
    make_ps(&a, 0);
    const char *p = path_in("params.safetensors");
    StMeta meta = {"arch", "test"};
    REQUIRE(st_save_params(p, &a, "", &meta, 1, err, sizeof err) == 0, "%s", err);
    make_ps(&b, 0);
    memset(b.data, 0, (size_t)b.total * sizeof(float));
    REQUIRE(st_load_params(p, &b, "", 0, err, sizeof err) == 0, "%s", err);
    CHECK(memcmp(a.data, b.data, (size_t)a.total * sizeof(float)) == 0, "params round trip");
    params_free(&b);

    /* missing: the model has a parameter the file lacks */
    make_ps(&b, 1);
    CHECK(st_load_params(p, &b, "", 0, err, sizeof err) < 0 && strstr(err, "missing tensor 'extra.weight'") &&
              strstr(err, p), "missing: %s", err);
    params_free(&b);
    /* wrong shape */
    make_ps(&b, 2);
    CHECK(st_load_params(p, &b, "", 0, err, sizeof err) < 0 && strstr(err, "'enc.conv.weight'") &&
              strstr(err, "(2, 3) in file, (3, 2) expected"), "shape: %s", err);
    params_free(&b);
    /* extra: the file has a tensor the model lacks */
    make_ps(&b, 1);
    const char *p2 = path_in("params_extra.safetensors");
    REQUIRE(st_save_params(p2, &b, "", NULL, 0, err, sizeof err) == 0, "%s", err);
    params_free(&b);
    make_ps(&b, 0);
    CHECK(st_load_params(p2, &b, "", 0, err, sizeof err) < 0 && strstr(err, "unexpected tensor 'extra.weight'"),
          "extra: %s", err);
    CHECK(st_load_params(p2, &b, "", ST_ALLOW_EXTRA, err, sizeof err) == 0, "allow extra: %s", err);
    /* non-finite values are refused with the tensor named (they used to load without a word) */
    params_free(&b);
    make_ps(&b, 0);
    params_data(&b, 1)[1] = NAN;
    params_data(&b, 1)[2] = -INFINITY;
    const char *p4 = path_in("params_nan.safetensors");
    REQUIRE(st_save_params(p4, &b, "", NULL, 0, err, sizeof err) == 0, "%s", err);
    params_free(&b);
    make_ps(&b, 0);
    char want[256];
    snprintf(want, sizeof want, "tensor '%s': 2 of %lld values are not finite", a.p[1].name, (long long)a.p[1].numel);
    CHECK(st_load_params(p4, &b, "", 0, err, sizeof err) < 0 && strstr(err, want) && strstr(err, p4), "nan: %s", err);
    /* prefix */
    const char *p3 = path_in("params_ema.safetensors");
    REQUIRE(st_save_params(p3, &a, "ema.", NULL, 0, err, sizeof err) == 0, "%s", err);
    memset(b.data, 0, (size_t)b.total * sizeof(float));
    CHECK(st_load_params(p3, &b, "ema.", 0, err, sizeof err) == 0, "prefix: %s", err);
    CHECK(memcmp(a.data, b.data, (size_t)a.total * sizeof(float)) == 0, "prefix round trip");
    CHECK(st_load_params(p3, &b, "", 0, err, sizeof err) < 0 && strstr(err, "missing tensor 'enc.conv.weight'"),
          "no prefix: %s", err);
    params_free(&a);
    params_free(&b);
}

static int write_v(const char *path, float value, char *err, size_t errlen) {
    static float big[1 << 16];
    for (int i = 0; i < (1 << 16); i++) big[i] = value;
    int64_t s[1] = {1 << 16};
    StWriteTensor w = {"w", ST_F32, 1, s, big};
    return st_write(path, &w, 1, NULL, 0, err, errlen);
}

static int leftover_temps(void) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | grep -q '\\.tmp\\.'", g_dir);
    return system(cmd) == 0;
}

/* st_read refuses what is not a regular file without blocking on it (a FIFO with no writer
 * used to hang every reader: an alarm turns a hang into a failure), and checks the header
 * before it reads the data: a 1 GiB sparse file with a bad header is refused without its
 * pages being read (the peak resident size does not grow by the file). */
static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "  st_read blocked on a FIFO for 20 s\n# tests/test_safetensors.c: 0 passed, 1 failed\n";
    if (write(1, msg, sizeof msg - 1) < 0) _exit(3);
    _exit(2);
}
static void test_read_fifo_and_header_first(void) {
    char err[512];
    const char *fifo = path_in("fifo.safetensors");
    unlink(fifo);
    REQUIRE(mkfifo(fifo, 0600) == 0, "mkfifo: %s", strerror(errno));
    signal(SIGALRM, on_alarm);
    alarm(20);
    StFile f;
    CHECK(st_read(&f, fifo, err, sizeof err) == -1 && strstr(err, "not a regular file"), "fifo: %s", err);
    alarm(0);
    unlink(fifo);

    const char *big = path_in("big.safetensors");
    FILE *fp = fopen(big, "wb");
    REQUIRE(fp, "create %s", big);
    static const char hdr[] = "{\"w\": {\"dtype\": \"F99\", \"shape\": [1], \"data_offsets\": [0, 4]}}";
    unsigned char len8[8] = {0};
    for (int k = 0; k < 8; k++) len8[k] = (unsigned char)((sizeof hdr - 1) >> (8 * k));
    REQUIRE(fwrite(len8, 1, 8, fp) == 8 && fwrite(hdr, 1, sizeof hdr - 1, fp) == sizeof hdr - 1, "write");
    REQUIRE(ftruncate(fileno(fp), (off_t)1 << 30) == 0, "ftruncate: %s", strerror(errno));
    fclose(fp);
    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    CHECK(st_read(&f, big, err, sizeof err) == -1 && strstr(err, "F99"), "bad dtype: %s", err);
    getrusage(RUSAGE_SELF, &r1);
    long grew_mb = (r1.ru_maxrss - r0.ru_maxrss) / 1024;
    printf("  1 GiB file with a bad header: peak resident size grew by %ld MB\n", grew_mb);
    CHECK(grew_mb < 512, "the data of a file with a bad header was read (%ld MB)", grew_mb);
    unlink(big);
}

static void test_atomic_write_keeps_old_file(void) {
    char err[512];
    const char *p = path_in("atomic.safetensors");
    REQUIRE(write_v(p, 1.0f, err, sizeof err) == 0, "%s", err);
    size_t l0, l1;
    unsigned char *before = slurp(p, &l0);

    /* 1. a write that fails midway (file size limit: EFBIG, as on a full disk) */
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 4096;
    signal(SIGXFSZ, SIG_IGN);
    setrlimit(RLIMIT_FSIZE, &lim);
    int rc = write_v(p, 2.0f, err, sizeof err);
    setrlimit(RLIMIT_FSIZE, &old);
    CHECK(rc < 0 && strstr(err, p), "write over the size limit: rc %d, '%s'", rc, err);
    unsigned char *after = slurp(p, &l1);
    CHECK(after && l0 == l1 && memcmp(before, after, l0) == 0, "old file changed by a failed write");
    free(after);
    CHECK(!leftover_temps(), "temporary file left behind");

    /* 2. a folder that cannot be written (only meaningful when not root) */
    if (geteuid() != 0) {
        chmod(g_dir, 0500);
        rc = write_v(p, 3.0f, err, sizeof err);
        chmod(g_dir, 0700);
        CHECK(rc < 0 && strstr(err, "writable"), "read-only folder: rc %d, '%s'", rc, err);
        after = slurp(p, &l1);
        CHECK(after && l0 == l1 && memcmp(before, after, l0) == 0, "old file changed");
        free(after);
    }
    /* 3. a missing folder */
    CHECK(write_v(path_in("no/such/dir/x.safetensors"), 1.0f, err, sizeof err) < 0 && strstr(err, "no/such/dir"),
          "missing folder: %s", err);
    /* and a successful rewrite replaces it */
    CHECK(write_v(p, 4.0f, err, sizeof err) == 0, "%s", err);
    StFile f;
    REQUIRE(st_read(&f, p, err, sizeof err) == 0, "%s", err);
    float x;
    memcpy(&x, f.t[0].data, 4);
    CHECK(x == 4.0f, "rewritten value %g", x);
    st_free(&f);
    free(before);
}

static void fill_grad(ParamSet *ps, int step) {
    for (int k = 0; k < ps->n; k++)
        for (int64_t i = 0; i < ps->p[k].numel; i++)
            params_grad(ps, k)[i] = 0.1f * (float)(((i + 8 * k) * 7 + step * 3) % 11) - 0.5f;
}

static void test_checkpoint_exact_resume(void) {
    char err[512];
    OptimConfig c;
    optim_config_default(&c);
    c.lr = 1e-2f;
    c.warmup_steps = 2;
    c.grad_clip = 1.0f;
    c.ema = 1;
    c.ema_halflife_images = 50;
    c.ema_rampup_ratio = 0.05;
    c.images_per_step = 8;
    ParamSet a, b;
    make_ps(&a, 0);
    make_ps(&b, 0);
    Optim *oa = optim_new(&a, &c), *ob = optim_new(&b, &c);
    for (int t = 0; t < 3; t++) { fill_grad(&a, t); optim_step(oa); }
    const char *p = path_in("ckpt.safetensors");
    StMeta meta[1] = {{"config", "lr=1e-2 warmup=2"}};
    REQUIRE(checkpoint_save(p, &a, oa, meta, 1, err, sizeof err) == 0, "%s", err);
    CheckpointMeta cm;
    REQUIRE(checkpoint_load(p, &b, ob, &cm, err, sizeof err) == 0, "%s", err);
    CHECK(ob->step == 3 && ob->nimg == 24, "step %lld nimg %g", (long long)ob->step, ob->nimg);
    CHECK(checkpoint_meta_get(&cm, "config") && strcmp(checkpoint_meta_get(&cm, "config"), meta[0].value) == 0,
          "config metadata");
    checkpoint_meta_free(&cm);
    size_t bytes = (size_t)a.total * sizeof(float);
    CHECK(!memcmp(a.data, b.data, bytes) && !memcmp(oa->m, ob->m, bytes) && !memcmp(oa->v, ob->v, bytes) &&
              !memcmp(oa->ema, ob->ema, bytes), "state differs after load");
    for (int t = 3; t < 6; t++) {
        fill_grad(&a, t); optim_step(oa);
        fill_grad(&b, t); optim_step(ob);
    }
    CHECK(!memcmp(a.data, b.data, bytes) && !memcmp(oa->ema, ob->ema, bytes), "resumed training diverged");

    /* the checkpoint's model part loads without an optimiser; a bare export does not resume */
    ParamSet m;
    make_ps(&m, 0);
    REQUIRE(checkpoint_load(p, &m, NULL, NULL, err, sizeof err) == 0, "model only: %s", err);
    const char *bare = path_in("bare.safetensors");
    REQUIRE(st_save_params(bare, &m, "", NULL, 0, err, sizeof err) == 0, "%s", err);
    CHECK(checkpoint_load(bare, &m, NULL, NULL, err, sizeof err) == 0, "bare export as model: %s", err);
    CHECK(checkpoint_load(bare, &b, ob, NULL, err, sizeof err) < 0 && strstr(err, "msd.format"),
          "bare export resumed: %s", err);
    StMeta reserved = {"msd.step", "1"};
    CHECK(checkpoint_save(p, &a, oa, &reserved, 1, err, sizeof err) < 0 && strstr(err, "reserved"), "%s", err);
    /* a checkpoint of a different model */
    ParamSet other;
    make_ps(&other, 1);
    CHECK(checkpoint_load(p, &other, NULL, NULL, err, sizeof err) < 0 && strstr(err, "'extra.weight'"), "%s", err);
    params_free(&other);
    params_free(&m);
    optim_destroy(&oa);
    optim_destroy(&ob);
    params_free(&a);
    params_free(&b);
}

/* Two parameter sets with their optimisers in one file ("" and "gan."): exact round trip of
 * weights, moments and step; a one-part load refuses the other part's tensors, naming one; a
 * two-part load of a one-part file names the missing tensor; a clashing name is refused. */
static void test_checkpoint_parts(void) {
    char err[512];
    OptimConfig c;
    optim_config_default(&c);
    c.lr = 1e-2f;
    ParamSet a, h, a2, h2;
    make_ps(&a, 0);
    make_ps(&h, 1);
    make_ps(&a2, 0);
    make_ps(&h2, 1);
    Optim *oa = optim_new(&a, &c), *oh = optim_new(&h, &c), *oa2 = optim_new(&a2, &c), *oh2 = optim_new(&h2, &c);
    for (int t = 0; t < 3; t++) {
        fill_grad(&a, t); optim_step(oa);
        fill_grad(&h, t + 5); optim_step(oh);
    }
    const char *p = path_in("parts.safetensors");
    CkptPart w[2] = {{"", &a, oa}, {"gan.", &h, oh}}, r[2] = {{"", &a2, oa2}, {"gan.", &h2, oh2}};
    StMeta meta[1] = {{"spec", "x"}};
    REQUIRE(checkpoint_save_parts(p, w, 2, meta, 1, err, sizeof err) == 0, "%s", err);
    CheckpointMeta cm;
    REQUIRE(checkpoint_load_parts(p, r, 2, &cm, err, sizeof err) == 0, "%s", err);
    CHECK(checkpoint_meta_get(&cm, "spec") != NULL, "metadata lost");
    checkpoint_meta_free(&cm);
    CHECK(oa2->step == 3 && oh2->step == 3, "steps %lld %lld", (long long)oa2->step, (long long)oh2->step);
    size_t ba = (size_t)a.total * sizeof(float), bh = (size_t)h.total * sizeof(float);
    CHECK(!memcmp(a.data, a2.data, ba) && !memcmp(oa->m, oa2->m, ba) && !memcmp(oa->v, oa2->v, ba),
          "part \"\" differs after load");
    CHECK(!memcmp(h.data, h2.data, bh) && !memcmp(oh->m, oh2->m, bh) && !memcmp(oh->v, oh2->v, bh),
          "part \"gan.\" differs after load");
    CHECK(memcmp(a.data, h.data, ba < bh ? ba : bh) != 0, "the two parts hold the same values: a weak test");
    /* the head's tensors are not the model's: a plain load refuses them */
    ParamSet m;
    make_ps(&m, 0);
    CHECK(checkpoint_load(p, &m, NULL, NULL, err, sizeof err) < 0 && strstr(err, "'gan."), "one-part load: %s", err);
    /* a one-part file lacks the head */
    const char *one = path_in("one.safetensors");
    REQUIRE(checkpoint_save(one, &a, oa, NULL, 0, err, sizeof err) == 0, "%s", err);
    CHECK(checkpoint_load_parts(one, r, 2, NULL, err, sizeof err) < 0 && strstr(err, "gan.enc.conv.weight"),
          "two-part load of a one-part file: %s", err);
    /* part 0's names must not start with another part's prefix */
    CkptPart bad[2] = {{"", &a, oa}, {"enc.", &h, oh}};
    CHECK(checkpoint_save_parts(p, bad, 2, NULL, 0, err, sizeof err) < 0 && strstr(err, "clashes"), "%s", err);
    params_free(&m);
    optim_destroy(&oa); optim_destroy(&oh); optim_destroy(&oa2); optim_destroy(&oh2);
    params_free(&a); params_free(&h); params_free(&a2); params_free(&h2);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "%s/msd_st_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(g_dir)) { perror("mkdtemp"); return 1; }
    g_ctx = backend_ctx_new(&backend_cpu, 1);
    TEST_RUN(test_write_read_roundtrip_bytes);
    TEST_RUN(test_python_fixture);
    TEST_RUN(test_corrupt_files);
    TEST_RUN(test_params_save_load);
    TEST_RUN(test_read_fifo_and_header_first);
    TEST_RUN(test_atomic_write_keeps_old_file);
    TEST_RUN(test_checkpoint_exact_resume);
    TEST_RUN(test_checkpoint_parts);
    backend_ctx_destroy(&g_ctx);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return TEST_END();
}
