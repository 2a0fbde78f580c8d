/* image.c: see image.h. */
#include "image.h"

#include <errno.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

int png_write(const char *path, const uint8_t *pixels, int width, int height, int channels, char *err,
              size_t errlen) {
    if (width <= 0 || height <= 0 || width > 1 << 15 || height > 1 << 15 || (channels != 1 && channels != 3))
        return msd_errf(err, errlen, "%s: bad image geometry %dx%dx%d", path, width, height, channels);
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof tmp)
        return msd_errf(err, errlen, "%s: path too long", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return msd_errf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
    int bad = write_rows(f, pixels, width, height, channels);
    bad |= fflush(f) != 0 || fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return msd_errf(err, errlen, "%s: cannot write PNG: %s", path, bad ? "libpng or I/O error" : strerror(e));
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
