/* PNG reading shared by slidesrc, colornorm, labelpatch and wsiseg-eval
 * (no GStreamer): RGB8 images and label images. Files are untrusted: sides
 * are capped at WSI_PNG_MAX_SIDE, pixel counts at the caller's max_pixels,
 * every libpng error becomes a GError naming the file. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Largest width or height accepted (libpng user limit). */
#define WSI_PNG_MAX_SIDE (1u << 20)

/* Largest RGB image read whole, in pixels: the one limit for PNG slides
 * (slidesrc, colornorm's thumbnail and the overlay, through wsislide.h) and
 * colornorm's reference image. For RGB, WSI_PNG_MAX_DECODED_BYTES binds
 * first (about 358 M pixels, 268 M with alpha). */
#define WSI_PNG_MAX_RGB_PIXELS ((gsize) 1 << 30)

/* Largest decoded image, in bytes of what libpng delivers (RGBA before
 * compositing, 16-bit labels at 2 bytes a pixel). PNG compresses a uniform
 * image about 1000:1, so this, not the file size, bounds the memory a small
 * file can claim. Checked with the caller's max_pixels before anything is
 * allocated. */
#define WSI_PNG_MAX_DECODED_BYTES ((gsize) 1 << 30)

#define WSI_PNG_ERROR (wsi_png_error_quark ())
GQuark wsi_png_error_quark (void);

typedef enum
{
  WSI_PNG_ERROR_NOT_FOUND,      /* the file does not exist */
  WSI_PNG_ERROR_OPEN,           /* other reasons it cannot be opened */
  WSI_PNG_ERROR_NOT_PNG,        /* no PNG signature (empty file included) */
  WSI_PNG_ERROR_CORRUPT,        /* libpng refused it: truncated, bad CRC... */
  WSI_PNG_ERROR_COLOUR,         /* a colour PNG where labels are expected */
  WSI_PNG_ERROR_TOO_LARGE,      /* more than max_pixels pixels, or more
                                 * than WSI_PNG_MAX_DECODED_BYTES decoded */
  WSI_PNG_ERROR_NO_MEMORY,
} WsiPngError;

/* TRUE when @path starts with the PNG signature. */
gboolean wsi_png_is_png (const gchar * path);

typedef enum
{
  WSI_PNG_RGB_DEFAULT = 0,
  /* Ignore alpha (and tRNS) instead of compositing on white. */
  WSI_PNG_RGB_DROP_ALPHA = 1 << 0,
  /* 16 -> 8 bit by keeping the high byte instead of rounding. */
  WSI_PNG_RGB_TRUNCATE_16 = 1 << 1,
} WsiPngRgbFlags;

/* Any PNG (gray, gray+alpha, RGB, RGBA, palette; 1..16 bit; interlaced) as
 * RGB8, stride width * 3. By default 16-bit samples are rounded to 8 bit
 * and alpha is composited on white: v * a + 255 * (1 - a), rounded.
 * Returns NULL and sets @error when the file is unusable, has more than
 * @max_pixels pixels or decodes to more than WSI_PNG_MAX_DECODED_BYTES
 * (WSI_PNG_ERROR_TOO_LARGE, naming the limit and the image size). Free with
 * g_free(). */
guint8 *wsi_png_read_rgb8 (const gchar * path, gint * width, gint * height,
    gsize max_pixels, WsiPngRgbFlags flags, GError ** error);

/* A decoded label image: row-major, stride width * bytes_per_pixel, native
 * byte order for 16-bit. */
typedef struct
{
  gint width, height;
  guint bytes_per_pixel;        /* 1 or 2 */
  gpointer data;
} WsiLabelImage;

/* A grayscale (1..16 bit, alpha dropped) or indexed PNG as labels: values
 * of up to 8 bit and palette indices (not colours) become 8-bit labels,
 * unscaled; 16-bit values stay 16-bit. Colour PNGs are refused
 * (WSI_PNG_ERROR_COLOUR). Size limits as for wsi_png_read_rgb8. On failure
 * @img is left cleared. */
gboolean wsi_png_read_labels (const gchar * path, WsiLabelImage * img,
    gsize max_pixels, GError ** error);

void wsi_label_image_clear (WsiLabelImage * img);

G_END_DECLS
