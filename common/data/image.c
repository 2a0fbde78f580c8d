/* image.c: see image.h. */
#include "image.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

static int write_rows(FILE *f, const uint8_t *pixels, int width, int height, int channels) {
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    if (!png) return -1;
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        return -1;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8,
                 channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < height; y++)
        png_write_row(png, (png_const_bytep)(pixels + (size_t)y * (size_t)width * (size_t)channels));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return 0;
}

static int png_write_file(const char *path, const uint8_t *pixels, int width, int height, int channels, int durable,
                          char *err, size_t errlen) {
    if (width <= 0 || height <= 0 || width > 1 << 15 || height > 1 << 15 || (channels != 1 && channels != 3))
        return msd_errf(err, errlen, "%s: bad image geometry %dx%dx%d", path, width, height, channels);
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof tmp)
        return msd_errf(err, errlen, "%s: path too long", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return msd_errf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
    int bad = write_rows(f, pixels, width, height, channels);
    bad |= fflush(f) != 0 || (durable && fsync(fileno(f)) != 0);
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return msd_errf(err, errlen, "%s: cannot write PNG: %s", path, bad ? "libpng or I/O error" : strerror(e));
    }
    return 0;
}

int png_write(const char *path, const uint8_t *pixels, int width, int height, int channels, char *err,
              size_t errlen) {
    return png_write_file(path, pixels, width, height, channels, 1, err, errlen);
}

int png_write_nosync(const char *path, const uint8_t *pixels, int width, int height, int channels, char *err,
                     size_t errlen) {
    return png_write_file(path, pixels, width, height, channels, 0, err, errlen);
}

/* ---- reading ---- */

typedef struct PngErr {
    char msg[256];
} PngErr;

static void png_read_error(png_structp png, png_const_charp msg) {
    PngErr *e = png_get_error_ptr(png);
    snprintf(e->msg, sizeof e->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void png_read_warning(png_structp png, png_const_charp msg) { (void)png; (void)msg; }

int png_read(const char *path, uint8_t **pixels, int *width, int *height, int channels, int *channels_out,
             int max_side, char *err, size_t errlen) {
    MSD_CHECK(channels == 0 || channels == 1 || channels == 3);
    MSD_CHECK(max_side >= 1 && max_side <= 1 << 20);
    *pixels = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return msd_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    unsigned char sig[8];
    if (fread(sig, 1, 8, f) != 8 || png_sig_cmp(sig, 0, 8)) {
        fclose(f);
        return msd_errf(err, errlen, "%s: not a PNG file (bad signature)", path);
    }
    PngErr pe = {{0}};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &pe, png_read_error, png_read_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) msd_die("%s: libpng out of memory", path);
    uint8_t *volatile raw = NULL;
    png_bytep *volatile rows = NULL;
    if (setjmp(png_jmpbuf(png))) {
        free(raw);
        free(rows);
        png_destroy_read_struct(&png, &info, NULL);
        fclose(f);
        return msd_errf(err, errlen, "%s: bad PNG: %s", path, pe.msg[0] ? pe.msg : "libpng error");
    }
    png_init_io(png, f);
    png_set_sig_bytes(png, 8);
    png_set_user_limits(png, (png_uint_32)max_side, (png_uint_32)max_side);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    png_set_expand(png);
    png_set_strip_16(png);
    png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int have = png_get_channels(png, info);
    if ((have != 1 && have != 3) || png_get_bit_depth(png, info) != 8) png_error(png, "unsupported pixel format");
    size_t rowbytes = png_get_rowbytes(png, info);
    MSD_CHECK(rowbytes == (size_t)w * (size_t)have);
    raw = msd_malloc(rowbytes * h);
    rows = msd_malloc(sizeof(png_bytep) * h);
    for (png_uint_32 y = 0; y < h; y++) rows[y] = raw + (size_t)y * rowbytes;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    fclose(f);
    free(rows);
    int want = channels ? channels : have;
    uint8_t *out = raw;
    size_t npix = (size_t)w * h;
    if (want != have) {
        out = msd_malloc(npix * (size_t)want);
        for (size_t i = 0; i < npix; i++) {
            if (want == 1) {
                const uint8_t *p = raw + 3 * i;
                out[i] = (uint8_t)((299 * p[0] + 587 * p[1] + 114 * p[2] + 500) / 1000);
            } else {
                out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = raw[i];
            }
        }
        free(raw);
    }
    *pixels = out;
    *width = (int)w;
    *height = (int)h;
    if (channels_out) *channels_out = want;
    return 0;
}

/* ---- float images to files ---- */

int image_write_png(const char *path, const float *x, int C, int H, int W, char *err, size_t errlen) {
    if ((C != 1 && C != 3) || H <= 0 || W <= 0 || H > 1 << 15 || W > 1 << 15)
        return msd_errf(err, errlen, "%s: bad image geometry (%d, %d, %d)", path, C, H, W);
    size_t hw = (size_t)H * (size_t)W;
    uint8_t *pix = msd_malloc(hw * (size_t)C);
    for (size_t p = 0; p < hw; p++)
        for (int c = 0; c < C; c++) pix[p * (size_t)C + (size_t)c] = image_to_u8(x[(size_t)c * hw + p]);
    int rc = png_write(path, pix, W, H, C, err, errlen);
    free(pix);
    return rc;
}

int image_write_grid(const char *path, const float *x, int64_t N, int C, int H, int W, int cols, char *err,
                     size_t errlen) {
    if (N <= 0 || (C != 1 && C != 3) || H <= 0 || W <= 0)
        return msd_errf(err, errlen, "%s: bad grid of %lld images (%d, %d, %d)", path, (long long)N, C, H, W);
    if (cols <= 0) {
        cols = (int)ceil(sqrt((double)N));
        while ((int64_t)cols * cols < N) cols++;
    }
    if (cols > N) cols = (int)N;
    int64_t rows = (N + cols - 1) / cols;
    int64_t GW = (int64_t)cols * (W + 1) + 1, GH = rows * (H + 1) + 1;
    if (GW > 1 << 15 || GH > 1 << 15)
        return msd_errf(err, errlen, "%s: grid of %lld x %d images of %dx%d is larger than 32768 pixels", path,
                        (long long)rows, cols, H, W);
    size_t hw = (size_t)H * (size_t)W;
    uint8_t *pix = msd_malloc((size_t)GW * (size_t)GH * (size_t)C);
    memset(pix, IMAGE_GRID_BORDER, (size_t)GW * (size_t)GH * (size_t)C);
    for (int64_t i = 0; i < N; i++) {
        int64_t r0 = (i / cols) * (H + 1) + 1, c0 = (i % cols) * (W + 1) + 1;
        const float *img = x + (size_t)i * (size_t)C * hw;
        for (int y = 0; y < H; y++)
            for (int xx = 0; xx < W; xx++)
                for (int c = 0; c < C; c++)
                    pix[((size_t)(r0 + y) * (size_t)GW + (size_t)(c0 + xx)) * (size_t)C + (size_t)c] =
                        image_to_u8(img[(size_t)c * hw + (size_t)y * (size_t)W + (size_t)xx]);
    }
    int rc = png_write(path, pix, (int)GW, (int)GH, C, err, errlen);
    free(pix);
    return rc;
}

static int mkdir_ok(const char *dir, char *err, size_t errlen) {
    if (mkdir(dir, 0777) == 0 || errno == EEXIST) {
        struct stat st;
        if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
        return msd_errf(err, errlen, "%s: exists and is not a folder", dir);
    }
    return msd_errf(err, errlen, "%s: cannot create folder: %s", dir, strerror(errno));
}

int image_write_folder(const char *dir, const float *x, const int32_t *labels, int64_t N, int C, int H, int W,
                       int64_t first, char *err, size_t errlen) {
    if (mkdir_ok(dir, err, errlen)) return -1;
    size_t per = (size_t)C * (size_t)H * (size_t)W;
    char path[4096];
    for (int64_t i = 0; i < N; i++) {
        int n;
        if (labels) {
            if (labels[i] < 0) return msd_errf(err, errlen, "%s: image %lld has negative label %d", dir, (long long)i, labels[i]);
            n = snprintf(path, sizeof path, "%s/%d", dir, labels[i]);
            if (n >= (int)sizeof path) return msd_errf(err, errlen, "%s: path too long", dir);
            if (mkdir_ok(path, err, errlen)) return -1;
            n = snprintf(path, sizeof path, "%s/%d/%06lld.png", dir, labels[i], (long long)(first + i));
        } else {
            n = snprintf(path, sizeof path, "%s/%06lld.png", dir, (long long)(first + i));
        }
        if (n >= (int)sizeof path) return msd_errf(err, errlen, "%s: path too long", dir);
        if (image_write_png(path, x + (size_t)i * per, C, H, W, err, errlen)) return -1;
    }
    return 0;
}

Canvas canvas_new(int w, int h, uint8_t r, uint8_t g, uint8_t b) {
    Canvas c = {w, h, msd_malloc((size_t)w * (size_t)h * 3)};
    for (size_t i = 0; i < (size_t)w * (size_t)h; i++) {
        c.rgb[3 * i] = r;
        c.rgb[3 * i + 1] = g;
        c.rgb[3 * i + 2] = b;
    }
    return c;
}

void canvas_free(Canvas *c) {
    free(c->rgb);
    c->rgb = NULL;
}

void canvas_dot(Canvas *c, int x, int y, int rad, uint8_t r, uint8_t g, uint8_t b) {
    for (int yy = y - rad; yy <= y + rad; yy++)
        for (int xx = x - rad; xx <= x + rad; xx++) {
            if (xx < 0 || yy < 0 || xx >= c->w || yy >= c->h) continue;
            uint8_t *p = c->rgb + ((size_t)yy * (size_t)c->w + (size_t)xx) * 3;
            p[0] = r;
            p[1] = g;
            p[2] = b;
        }
}

void palette_color(int i, uint8_t rgb[3]) {
    static const uint8_t pal[10][3] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44},  {214, 39, 40},
                                       {148, 103, 189}, {140, 86, 75},  {227, 119, 194}, {127, 127, 127},
                                       {188, 189, 34},  {23, 190, 207}};
    const uint8_t *p = pal[((i % 10) + 10) % 10];
    rgb[0] = p[0];
    rgb[1] = p[1];
    rgb[2] = p[2];
}
