/* image.h: writing PNG files (libpng), atomically (temporary file, fsync, rename), and the
 * simple raster drawing that sample grids and scatter plots need.
 *
 * Not here: reading PNG folders as a dataset (the data process does that). */
#ifndef MSD_IMAGE_H
#define MSD_IMAGE_H

#include <stddef.h>
#include <stdint.h>

/* channels 1 (grey) or 3 (RGB), 8 bits, rows top to bottom. 0, or -1 with a message. */
int png_write(const char *path, const uint8_t *pixels, int width, int height, int channels, char *err,
              size_t errlen);

typedef struct Canvas {
    int w, h;
    uint8_t *rgb;   /* w * h * 3 */
} Canvas;

Canvas canvas_new(int w, int h, uint8_t r, uint8_t g, uint8_t b);
void canvas_free(Canvas *c);
/* A filled square dot of radius rad at pixel (x, y); clipped. */
void canvas_dot(Canvas *c, int x, int y, int rad, uint8_t r, uint8_t g, uint8_t b);
/* A qualitative colour for index i (cycles after 10). */
void palette_color(int i, uint8_t rgb[3]);

#endif
