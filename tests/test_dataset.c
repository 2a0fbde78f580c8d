/* test_dataset.c: the IDX reader against good, truncated and corrupt files (raw and gzip,
 * written into a temporary folder), the real Fashion-MNIST files when the Debian package is
 * installed, PNG reading and PNG folders (round trip through png_write, bad folders), the
 * grid writer, class filters and the shuffled batches (a pure function of seed and step). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"
#include "dataset.h"
#include "idx.h"
#include "image.h"

static char tmpdir[256];

static void put32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* Write bytes to tmpdir/name, gzip-compressed when gz. Returns the path (static buffer ring). */
static const char *write_file(const char *name, const unsigned char *b, size_t n, int gz) {
    static char paths[4][512];
    static int k;
    char *p = paths[k++ % 4];
    snprintf(p, 512, "%s/%s%s", tmpdir, name, gz ? ".gz" : "");
    if (gz) {
        gzFile f = gzopen(p, "wb");
        if (n) gzwrite(f, b, (unsigned)n);
        gzclose(f);
    } else {
        FILE *f = fopen(p, "wb");
        fwrite(b, 1, n, f);
        fclose(f);
    }
    return p;
}

/* An image file: magic, count, rows, cols, then count*rows*cols pixel bytes (pixel i = i % 251). */
static size_t make_images(unsigned char *buf, uint32_t magic, uint32_t count, uint32_t rows, uint32_t cols,
                          size_t data_bytes) {
    put32(buf, magic);
    put32(buf + 4, count);
    put32(buf + 8, rows);
    put32(buf + 12, cols);
    for (size_t i = 0; i < data_bytes; i++) buf[16 + i] = (unsigned char)(i % 251);
    return 16 + data_bytes;
}

static size_t make_labels(unsigned char *buf, uint32_t magic, uint32_t count, size_t data_bytes) {
    put32(buf, magic);
    put32(buf + 4, count);
    for (size_t i = 0; i < data_bytes; i++) buf[8 + i] = (unsigned char)(i % 10);
    return 8 + data_bytes;
}

static void test_idx_good(void) {
    for (int gz = 0; gz < 2; gz++) {
        unsigned char b[4096];
        size_t n = make_images(b, IDX_MAGIC_IMAGES, 5, 3, 4, 60);
        const char *ip = write_file("img", b, n, gz);
        n = make_labels(b, IDX_MAGIC_LABELS, 5, 5);
        const char *lp = write_file("lab", b, n, gz);
        float *x;
        int32_t *y;
        int64_t cnt;
        int rows, cols;
        char err[512];
        int rc = idx_read_pair(ip, lp, &x, &y, &cnt, &rows, &cols, err, sizeof err);
        REQUIRE(rc == 0, "gz %d: %s", gz, err);
        CHECK(cnt == 5 && rows == 3 && cols == 4, "shape %lld %d %d", (long long)cnt, rows, cols);
        CHECK(x[0] == -1.0f && x[59] == 59 / 127.5f - 1.0f, "scaling: %g %g", x[0], x[59]);
        for (int i = 0; i < 5; i++) CHECK(y[i] == i, "label %d = %d", i, y[i]);
        free(x);
        free(y);
        /* a 255 pixel maps to exactly 1 */
        unsigned char w[17];
        make_images(w, IDX_MAGIC_IMAGES, 1, 1, 1, 0);
        w[16] = 255;
        ip = write_file("white", w, 17, gz);
        REQUIRE(idx_read_images(ip, &x, &cnt, &rows, &cols, err, sizeof err) == 0, "%s", err);
        CHECK(x[0] == 1.0f, "255 -> %g", x[0]);
        free(x);
    }
}

/* Expect idx_read_images (labels = 0) or idx_read_labels to fail with want in the message. */
static void expect_fail(const char *name, const unsigned char *b, size_t n, int gz, int labels, const char *want) {
    const char *p = write_file(name, b, n, gz);
    char err[512] = "";
    int rc;
    if (labels) {
        int32_t *y = (int32_t *)1;
        int64_t cnt;
        rc = idx_read_labels(p, &y, &cnt, err, sizeof err);
        CHECK(rc != 0 || (free(y), 0), "%s (gz %d) was accepted", name, gz);
        CHECK(rc == 0 || y == NULL, "%s: output not NULL on failure", name);
    } else {
        float *x = (float *)1;
        int64_t cnt;
        int r, c;
        rc = idx_read_images(p, &x, &cnt, &r, &c, err, sizeof err);
        CHECK(rc != 0 || (free(x), 0), "%s (gz %d) was accepted", name, gz);
        CHECK(rc == 0 || x == NULL, "%s: output not NULL on failure", name);
    }
    CHECK(strstr(err, want) != NULL, "%s (gz %d): message '%s' lacks '%s'", name, gz, err, want);
    CHECK(strstr(err, p) != NULL, "%s (gz %d): message '%s' does not name the file", name, gz, err);
}

static void test_idx_bad(void) {
    static unsigned char b[1 << 16];
    for (int gz = 0; gz < 2; gz++) {
        size_t n = make_images(b, 0x00000801, 2, 2, 2, 8);
        expect_fail("badmagic", b, n, gz, 0, "bad magic");
        n = make_labels(b, IDX_MAGIC_IMAGES, 2, 2);
        expect_fail("badmagic_l", b, n, gz, 1, "bad magic");
        expect_fail("empty", b, 0, gz, 0, "truncated header");
        expect_fail("shorthdr", b, 6, gz, 1, "truncated header");
        n = make_images(b, IDX_MAGIC_IMAGES, 4, 2, 2, 15);
        expect_fail("truncated", b, n, gz, 0, "truncated data");
        n = make_images(b, IDX_MAGIC_IMAGES, 2, 2, 2, 9);
        expect_fail("trailing", b, n, gz, 0, "trailing bytes");
        /* a header claiming the largest allowed file, with 100 bytes behind it: must fail
         * short without allocating what the header claims (ASan would notice a huge malloc) */
        n = make_images(b, IDX_MAGIC_IMAGES, 4000000, 32, 32, 100);
        expect_fail("huge", b, n, gz, 0, "truncated data");
        n = make_images(b, IDX_MAGIC_IMAGES, 0xffffffffu, 28, 28, 100);
        expect_fail("hugecount", b, n, gz, 0, "image count");
        n = make_images(b, IDX_MAGIC_IMAGES, 1000, 100000, 28, 100);
        expect_fail("hugerows", b, n, gz, 0, "image size");
        n = make_images(b, IDX_MAGIC_IMAGES, 10000000, 1024, 1024, 100);
        expect_fail("hugebytes", b, n, gz, 0, "limit");
        n = make_images(b, IDX_MAGIC_IMAGES, 0, 28, 28, 0);
        expect_fail("zerocount", b, n, gz, 0, "image count");
        n = make_labels(b, IDX_MAGIC_LABELS, 12, 12);
        b[8 + 7] = 10;
        expect_fail("badlabel", b, n, gz, 1, "label 10 at index 7");
        n = make_labels(b, IDX_MAGIC_LABELS, 3000000, 50);
        expect_fail("hugelabels", b, n, gz, 1, "truncated data");
    }
    /* a gzip stream cut in the middle */
    size_t n = make_images(b, IDX_MAGIC_IMAGES, 8, 28, 28, 8 * 784);
    const char *p = write_file("cut", b, n, 1);
    FILE *f = fopen(p, "rb");
    unsigned char z[1 << 16];
    size_t zn = fread(z, 1, sizeof z, f);
    fclose(f);
    char cut[600];
    snprintf(cut, sizeof cut, "%s", write_file("cut_half.gz", z, zn / 2, 0));
    float *x = NULL;
    int64_t cnt;
    int r, c;
    char err[512] = "";
    CHECK(idx_read_images(cut, &x, &cnt, &r, &c, err, sizeof err) != 0, "cut gzip accepted");
    CHECK(strstr(err, cut) != NULL && (strstr(err, "truncated") || strstr(err, "corrupt")), "cut gzip: '%s'", err);
    free(x);
    /* garbage after a valid gzip header: corrupt stream */
    memcpy(z + 20, "garbage garbage garbage", 23);
    snprintf(cut, sizeof cut, "%s", write_file("garbled.gz", z, zn, 0));
    x = NULL;
    CHECK(idx_read_images(cut, &x, &cnt, &r, &c, err, sizeof err) != 0, "garbled gzip accepted");
    free(x);
    /* count mismatch between the two files */
    n = make_images(b, IDX_MAGIC_IMAGES, 3, 2, 2, 12);
    const char *ip = write_file("pair_i", b, n, 1);
    n = make_labels(b, IDX_MAGIC_LABELS, 4, 4);
    const char *lp = write_file("pair_l", b, n, 1);
    int32_t *y = NULL;
    x = NULL;
    CHECK(idx_read_pair(ip, lp, &x, &y, &cnt, &r, &c, err, sizeof err) != 0, "count mismatch accepted");
    CHECK(strstr(err, "3 images") && strstr(err, "4 labels"), "mismatch message: '%s'", err);
    CHECK(x == NULL && y == NULL, "outputs not NULL after a mismatch");
    /* a missing file */
    CHECK(idx_read_labels("/nonexistent/labels.gz", &y, &cnt, err, sizeof err) != 0 && strstr(err, "/nonexistent"),
          "missing file: '%s'", err);
}

static void test_fmnist_real(void) {
    Dataset d;
    char err[1024];
    const char *dir = getenv("MSD_FMNIST_DIR");
    char probe[512];
    snprintf(probe, sizeof probe, "%s/train-labels-idx1-ubyte", dir && *dir ? dir : DATASET_FMNIST_DIR);
    /* only a missing file skips: one that is there but unreadable fails in dataset_load */
    if (check_file_missing(probe))
        SKIP_MISSING_DATA("%s(.gz) not found (install the Debian package dataset-fashion-mnist)", probe);
    const char *splits[2] = {"fmnist:train", "fmnist:test"};
    const int64_t want[2] = {60000, 10000};
    for (int s = 0; s < 2; s++) {
        REQUIRE(dataset_load(&d, splits[s], err, sizeof err) == 0, "%s", err);
        CHECK(d.n == want[s] && d.c == 1 && d.h == 28 && d.w == 28 && d.nclasses == 10, "%s: %lld (%d, %d, %d) %d classes",
              splits[s], (long long)d.n, d.c, d.h, d.w, d.nclasses);
        int64_t hist[10];
        dataset_histogram(&d, hist, 10);
        for (int c = 0; c < 10; c++) CHECK(hist[c] == want[s] / 10, "%s: class %d has %lld", splits[s], c, (long long)hist[c]);
        float lo = 1, hi = -1;
        for (int64_t i = 0; i < d.n * 784; i++) {
            lo = d.x[i] < lo ? d.x[i] : lo;
            hi = d.x[i] > hi ? d.x[i] : hi;
        }
        CHECK(lo == -1.0f && hi == 1.0f, "%s: range [%g, %g]", splits[s], lo, hi);
        dataset_free(&d);
    }
}

static void test_png_roundtrip(void) {
    char dir[512], sub[600], path[700], err[1024];
    snprintf(dir, sizeof dir, "%s/pngs", tmpdir);
    /* 7 grey 5x4 images, labels 0, 2, 2, 11, 0, 2, 11 (folder layout via image_write_folder) */
    float x[7 * 20];
    int32_t y[7] = {0, 2, 2, 11, 0, 2, 11};
    for (int i = 0; i < 7 * 20; i++) x[i] = (float)((i * 37) % 256) / 127.5f - 1.0f;
    REQUIRE(image_write_folder(dir, x, y, 7, 1, 5, 4, 0, err, sizeof err) == 0, "%s", err);
    Dataset d;
    REQUIRE(dataset_load_png(&d, dir, 0, err, sizeof err) == 0, "%s", err);
    CHECK(d.n == 7 && d.c == 1 && d.h == 5 && d.w == 4 && d.nclasses == 12, "%lld (%d, %d, %d) %d classes",
          (long long)d.n, d.c, d.h, d.w, d.nclasses);
    /* order: classes ascending (0, 2, 11), names within */
    const int order[7] = {0, 4, 1, 2, 5, 3, 6};
    for (int k = 0; k < 7 && k < d.n; k++) {
        CHECK(d.y[k] == y[order[k]], "image %d label %d want %d", k, d.y[k], y[order[k]]);
        CHECK_CLOSE(d.x + k * 20, x + order[k] * 20, 20, 1e-6, 0, "pixels (exact 8-bit values)");
    }
    dataset_free(&d);
    /* dataset_load png: and forced RGB */
    snprintf(path, sizeof path, "png:%s", dir);
    REQUIRE(dataset_load(&d, path, err, sizeof err) == 0, "%s", err);
    dataset_free(&d);
    REQUIRE(dataset_load_png(&d, dir, 3, err, sizeof err) == 0, "%s", err);
    CHECK(d.c == 3 && d.x[0] == d.x[20] && d.x[20] == d.x[40], "grey -> RGB repeats (c %d)", d.c);
    dataset_free(&d);

    /* colour images: RGB kept, or converted to grey by the BT.601 rule */
    snprintf(dir, sizeof dir, "%s/rgb", tmpdir);
    mkdir(dir, 0777);
    uint8_t rgb[2 * 2 * 3] = {255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30};
    snprintf(path, sizeof path, "%s/a.png", dir);
    REQUIRE(png_write(path, rgb, 2, 2, 3, err, sizeof err) == 0, "%s", err);
    REQUIRE(dataset_load_png(&d, dir, 0, err, sizeof err) == 0, "%s", err);
    CHECK(d.c == 3 && d.n == 1 && d.y[0] == -1 && d.nclasses == 0, "rgb: c %d n %lld label %d", d.c, (long long)d.n, d.y[0]);
    CHECK(d.x[0] == 1.0f && d.x[5] == 1.0f && d.x[8 + 2] == 1.0f && d.x[1] == -1.0f, "planes (N, C, H, W)");
    dataset_free(&d);
    uint8_t *g;
    int w, h, ch;
    REQUIRE(png_read(path, &g, &w, &h, 1, &ch, 64, err, sizeof err) == 0, "%s", err);
    int want[4] = {76, 150, 29, (299 * 10 + 587 * 20 + 114 * 30 + 500) / 1000};
    for (int i = 0; i < 4; i++) CHECK(g[i] == want[i], "luma %d: %d want %d", i, g[i], want[i]);
    free(g);
    CHECK(png_read(path, &g, &w, &h, 0, &ch, 1, err, sizeof err) != 0, "max_side 1 accepted a 2x2 image");

    /* bad folders */
    struct { const char *what, *want; } bad[] = {
        {"empty", "no .png images"}, {"mixed", "both class folders"}, {"sizes", "but the images before it are"},
        {"notpng", "neither a class folder"}, {"corrupt", "not a PNG file"}, {"missing", "cannot open folder"},
        {"badsub", "not a .png file"}};
    for (size_t t = 0; t < sizeof bad / sizeof bad[0]; t++) {
        snprintf(dir, sizeof dir, "%s/bad_%s", tmpdir, bad[t].what);
        if (strcmp(bad[t].what, "missing")) mkdir(dir, 0777);
        uint8_t px[16] = {0};
        if (!strcmp(bad[t].what, "mixed")) {
            snprintf(sub, sizeof sub, "%s/3", dir);
            mkdir(sub, 0777);
            snprintf(path, sizeof path, "%s/3/a.png", dir);
            png_write(path, px, 2, 2, 1, err, sizeof err);
            snprintf(path, sizeof path, "%s/b.png", dir);
            png_write(path, px, 2, 2, 1, err, sizeof err);
        } else if (!strcmp(bad[t].what, "sizes")) {
            snprintf(path, sizeof path, "%s/a.png", dir);
            png_write(path, px, 2, 2, 1, err, sizeof err);
            snprintf(path, sizeof path, "%s/b.png", dir);
            png_write(path, px, 4, 2, 1, err, sizeof err);
        } else if (!strcmp(bad[t].what, "notpng")) {
            snprintf(path, sizeof path, "%s/readme.txt", dir);
            FILE *f = fopen(path, "w");
            fputs("hi\n", f);
            fclose(f);
        } else if (!strcmp(bad[t].what, "corrupt")) {
            snprintf(path, sizeof path, "%s/a.png", dir);
            FILE *f = fopen(path, "w");
            fputs("not a png at all", f);
            fclose(f);
        } else if (!strcmp(bad[t].what, "badsub")) {
            snprintf(sub, sizeof sub, "%s/1", dir);
            mkdir(sub, 0777);
            snprintf(path, sizeof path, "%s/1/x.jpg", dir);
            FILE *f = fopen(path, "w");
            fclose(f);
        }
        err[0] = 0;
        CHECK(dataset_load_png(&d, dir, 0, err, sizeof err) != 0, "bad folder '%s' accepted", bad[t].what);
        CHECK(strstr(err, bad[t].want) != NULL, "bad folder '%s': message '%s' lacks '%s'", bad[t].what, err, bad[t].want);
        CHECK(d.x == NULL && d.n == 0, "bad folder '%s': dataset not empty", bad[t].what);
    }
    /* a truncated PNG */
    snprintf(dir, sizeof dir, "%s/trunc", tmpdir);
    mkdir(dir, 0777);
    snprintf(path, sizeof path, "%s/a.png", dir);
    uint8_t big[64 * 64];
    for (int i = 0; i < 64 * 64; i++) big[i] = (uint8_t)(i * 7);
    REQUIRE(png_write(path, big, 64, 64, 1, err, sizeof err) == 0, "%s", err);
    struct stat st;
    stat(path, &st);
    REQUIRE(truncate(path, st.st_size / 2) == 0, "truncate");
    CHECK(dataset_load_png(&d, dir, 0, err, sizeof err) != 0 && strstr(err, "bad PNG"), "truncated PNG: '%s'", err);
}

static void test_grid(void) {
    char path[600], err[512];
    snprintf(path, sizeof path, "%s/grid.png", tmpdir);
    float x[5 * 2 * 3];
    for (int i = 0; i < 30; i++) x[i] = i % 2 ? 1.0f : -1.0f;
    REQUIRE(image_write_grid(path, x, 5, 1, 2, 3, 2, err, sizeof err) == 0, "%s", err);
    uint8_t *g;
    int w, h, ch;
    REQUIRE(png_read(path, &g, &w, &h, 0, &ch, 4096, err, sizeof err) == 0, "%s", err);
    /* 3 rows x 2 cols of 2x3 cells: width 2*4+1 = 9, height 3*3+1 = 10 */
    CHECK(w == 9 && h == 10 && ch == 1, "grid %dx%d c%d", w, h, ch);
    CHECK(g[0] == IMAGE_GRID_BORDER && g[1 * 9 + 1] == 0 && g[1 * 9 + 2] == 255, "cell 0 at (1,1): %d %d", g[10], g[11]);
    /* image 3 is at row 1, col 1: top-left pixel (4, 5) holds x[3*6] */
    CHECK(g[4 * 9 + 5] == (x[18] > 0 ? 255 : 0), "image 3 top-left %d", g[4 * 9 + 5]);
    /* the last row's empty cell stays border colour */
    CHECK(g[7 * 9 + 5] == IMAGE_GRID_BORDER, "empty cell %d", g[7 * 9 + 5]);
    free(g);
    CHECK(image_write_grid(path, x, 0, 1, 2, 3, 2, err, sizeof err) != 0, "empty grid accepted");
    CHECK(image_to_u8(-2.0f) == 0 && image_to_u8(2.0f) == 255 && image_to_u8(0.0f) == 128 && image_to_u8(NAN) == 0,
          "image_to_u8 clamps");
}

static Dataset toy(int64_t n) {
    Dataset d = {0};
    d.n = n;
    d.c = 1;
    d.h = 1;
    d.w = 2;
    d.nclasses = 5;
    d.x = malloc(sizeof(float) * (size_t)n * 2);
    d.y = malloc(sizeof(int32_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        d.x[2 * i] = (float)i;
        d.x[2 * i + 1] = (float)-i;
        d.y[i] = (int32_t)(i % 5);
    }
    return d;
}

static void test_filter_and_batches(void) {
    Dataset d = toy(103);
    char err[256];
    int32_t cls[8];
    CHECK(dataset_parse_classes("0-2,4", cls, 8, err, sizeof err) == 4 && cls[3] == 4, "parse 0-2,4");
    CHECK(dataset_parse_classes("1,1", cls, 8, err, sizeof err) < 0, "duplicate accepted");
    CHECK(dataset_parse_classes("3-1", cls, 8, err, sizeof err) < 0, "reversed range accepted");
    CHECK(dataset_parse_classes("x", cls, 8, err, sizeof err) < 0, "garbage accepted");
    CHECK(dataset_parse_classes("1,", cls, 8, err, sizeof err) == 1, "trailing comma");
    CHECK(dataset_parse_classes("0-999", cls, 8, err, sizeof err) < 0, "too many accepted");
    int32_t keep[2] = {1, 3};
    CHECK(dataset_filter(&d, keep, 2, err, sizeof err) == 41, "filter kept %lld", (long long)d.n);
    for (int64_t i = 0; i < d.n; i++) CHECK(d.y[i] == 1 || d.y[i] == 3, "label %d kept", d.y[i]);
    CHECK(d.x[0] == 1.0f && d.x[2] == 3.0f && d.x[3] == -3.0f, "filtered rows keep their data");
    int32_t none[1] = {7};
    CHECK(dataset_filter(&d, none, 1, err, sizeof err) < 0 && strstr(err, "{7}"), "empty filter: '%s'", err);
    dataset_free(&d);

    /* every epoch is a permutation; batch(step) is the same from a fresh batcher (resume) */
    d = toy(10);
    DatasetBatcher a, b;
    dataset_batcher_init(&a, &d, 42, 4);
    dataset_batcher_init(&b, &d, 42, 4);
    float xa[8], xb[8];
    int32_t ya[4], yb[4];
    int seen[3][10] = {{0}};
    for (int64_t step = 0; step < 7; step++) {  /* 28 samples: epochs 0, 1 and part of 2 */
        dataset_batch(&a, step, xa, ya);
        for (int j = 0; j < 4; j++) {
            int64_t k = step * 4 + j;
            int idx = (int)xa[2 * j];
            CHECK(ya[j] == idx % 5 && xa[2 * j + 1] == -idx, "sample %lld is row %d", (long long)k, idx);
            seen[k / 10][idx]++;
        }
    }
    for (int e = 0; e < 2; e++)
        for (int i = 0; i < 10; i++) CHECK(seen[e][i] == 1, "epoch %d row %d seen %d times", e, i, seen[e][i]);
    for (int64_t step = 6; step >= 0; step--) {  /* out of order, from the other batcher */
        dataset_batch(&a, step, xa, ya);
        dataset_batch(&b, step, xb, yb);
        CHECK(!memcmp(xa, xb, sizeof xa) && !memcmp(ya, yb, sizeof ya), "step %lld differs on resume", (long long)step);
    }
    DatasetBatcher c;
    dataset_batcher_init(&c, &d, 43, 4);
    int differ = 0;
    for (int64_t step = 0; step < 3; step++) {
        dataset_batch(&a, step, xa, ya);
        dataset_batch(&c, step, xb, yb);
        differ |= memcmp(xa, xb, sizeof xa) != 0;
    }
    CHECK(differ, "seeds 42 and 43 gave the same order");
    dataset_batcher_free(&a);
    dataset_batcher_free(&b);
    dataset_batcher_free(&c);
    dataset_free(&d);
    Dataset e;
    CHECK(dataset_load(&e, "nonsense", err, sizeof err) != 0 && strstr(err, "unknown source"), "bad spec: '%s'", err);
    CHECK(dataset_load(&e, "fmnist:/nonexistent:train", err, sizeof err) != 0 && strstr(err, "not found"),
          "missing dir: '%s'", err);
    CHECK(dataset_load(&e, "fmnist:valid", err, sizeof err) != 0 && strstr(err, "split"), "bad split: '%s'", err);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "%s/msd_dataset_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    TEST_RUN(test_idx_good);
    TEST_RUN(test_idx_bad);
    TEST_RUN(test_fmnist_real);
    TEST_RUN(test_png_roundtrip);
    TEST_RUN(test_grid);
    TEST_RUN(test_filter_and_batches);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return TEST_END();
}
