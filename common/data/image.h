/* image.h: PNG files (libpng): writing, atomically (temporary file, fsync, rename); reading,
 * with every file untrusted; float images in [-1, 1] to PNG files and sample grids; the simple
 * raster drawing that scatter plots need.
 *
 * Not here: PNG folders as a dataset (labels, batching: dataset.h). */
#ifndef MSD_IMAGE_H
#define MSD_IMAGE_H

#include <stddef.h>
#include <stdint.h>

/* channels 1 (grey) or 3 (RGB), 8 bits, rows top to bottom. 0, or -1 with a message. */
int png_write(const char *path, const uint8_t *pixels, int width, int height, int channels, char *err,
              size_t errlen);
/* png_write (atomic: a temporary file renamed) without the fsync: a server writing many small
 * files (msd-router --mode serve), which a crash may lose but never leaves half written. */
int png_write_nosync(const char *path, const uint8_t *pixels, int width, int height, int channels, char *err,
                     size_t errlen);

/* Read a PNG into *pixels (malloc'd, caller frees), 8 bits, rows top to bottom, converted to
 * `channels` (1 or 3) by this rule: palette, low-bit grey and tRNS are expanded, 16-bit
 * samples keep their high byte, alpha is dropped (not composited), RGB -> grey is the BT.601
 * luma round(0.299 R + 0.587 G + 0.114 B), grey -> RGB repeats the grey value.
 * channels 0: keep the file's own (1 for grey, 3 for colour); *channels_out (may be NULL)
 * gets the count delivered. Width and height must be 1..max_side (a larger header is an
 * error before any pixel memory is allocated). 0, or -1 with a message naming the path. */
int png_read(const char *path, uint8_t **pixels, int *width, int *height, int channels, int *channels_out,
             int max_side, char *err, size_t errlen);

/* A float image to 8 bits: v in [-1, 1] -> round((v + 1) * 127.5), clamped to [0, 255]
 * (NaN -> 0). */
static inline uint8_t image_to_u8(float v) {
    float t = (v + 1.0f) * 127.5f + 0.5f;
    return !(t > 0.0f) ? 0 : t >= 255.0f ? 255 : (uint8_t)t;
}

/* One image x (C, H, W), C 1 or 3, values in [-1, 1], to a PNG file. 0, or -1 with a message. */
int image_write_png(const char *path, const float *x, int C, int H, int W, char *err, size_t errlen);
/* N images x (N, C, H, W) as one PNG grid of ceil(N / cols) rows by cols columns, row-major
 * (image i at row i / cols, column i % cols), with a 1-pixel border of IMAGE_GRID_BORDER grey
 * around and between the cells; empty cells of the last row are border colour. cols <= 0: a
 * square-ish grid, cols = ceil(sqrt(N)). 0, or -1 with a message. */
#define IMAGE_GRID_BORDER 128
int image_write_grid(const char *path, const float *x, int64_t N, int C, int H, int W, int cols, char *err,
                     size_t errlen);
/* N images as single files DIR/<label>/<index>.png (index zero-padded to 6 digits, counting
 * from first), the folder layout that dataset_load_png reads back; labels NULL: DIR/<index>.png.
 * Creates the folders. 0, or -1 with a message. */
int image_write_folder(const char *dir, const float *x, const int32_t *labels, int64_t N, int C, int H, int W,
                       int64_t first, char *err, size_t errlen);

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
