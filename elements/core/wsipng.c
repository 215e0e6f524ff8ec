/* Shared PNG reader: see wsipng.h. */
#include "wsipng.h"

#include <png.h>
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

/* Largest ancillary chunk libpng may allocate (iCCP, text...). */
#define MAX_CHUNK_BYTES (16u << 20)

G_DEFINE_QUARK (wsi-png-error-quark, wsi_png_error);

typedef enum
{
  READ_RGB8,
  READ_LABELS,
} ReadKind;

/* Everything one read owns; freed by reader_close() on every path. Lives
 * in the caller of reader_decode(), so the longjmp there leaves it intact. */
typedef struct
{
  const gchar *path;
  FILE *fp;
  png_structp png;
  png_infop info;
  png_bytep *rows;
  guint8 *pixels;
  jmp_buf jmp;
  gchar message[256];
  /* results */
  guint32 width, height;
  guint bytes_per_pixel;
} PngReader;

static void
on_png_error (png_structp png, png_const_charp msg)
{
  PngReader *r = png_get_error_ptr (png);

  g_strlcpy (r->message, msg, sizeof (r->message));
  longjmp (r->jmp, 1);
}

static void
on_png_warning (png_structp png, png_const_charp msg)
{
}

gboolean
wsi_png_is_png (const gchar * path)
{
  guint8 sig[8];
  gboolean png = FALSE;
  FILE *fp = fopen (path, "rb");

  if (fp) {
    png = fread (sig, 1, 8, fp) == 8 && png_sig_cmp (sig, 0, 8) == 0;
    fclose (fp);
  }
  return png;
}

static void
reader_close (PngReader * r)
{
  if (r->png)
    png_destroy_read_struct (&r->png, r->info ? &r->info : NULL, NULL);
  r->png = NULL;
  r->info = NULL;
  if (r->fp)
    fclose (r->fp);
  r->fp = NULL;
  g_clear_pointer (&r->rows, g_free);
  g_clear_pointer (&r->pixels, g_free);
}

/* Opens @path, checks the signature and creates the libpng structs. */
static gboolean
reader_open (PngReader * r, const gchar * path, GError ** error)
{
  guint8 sig[8];

  memset (r, 0, sizeof (*r));
  r->path = path;
  r->fp = fopen (path, "rb");
  if (!r->fp) {
    gint e = errno;
    g_set_error (error, WSI_PNG_ERROR,
        e == ENOENT ? WSI_PNG_ERROR_NOT_FOUND : WSI_PNG_ERROR_OPEN,
        "cannot open '%s': %s", path, g_strerror (e));
    return FALSE;
  }
  if (fread (sig, 1, 8, r->fp) != 8 || png_sig_cmp (sig, 0, 8) != 0) {
    g_set_error (error, WSI_PNG_ERROR, WSI_PNG_ERROR_NOT_PNG,
        "'%s' is not a PNG file", path);
    return FALSE;
  }
  r->png = png_create_read_struct (PNG_LIBPNG_VER_STRING, r, on_png_error,
      on_png_warning);
  if (r->png)
    r->info = png_create_info_struct (r->png);
  if (!r->png || !r->info) {
    g_set_error (error, WSI_PNG_ERROR, WSI_PNG_ERROR_NO_MEMORY,
        "out of memory reading '%s'", path);
    return FALSE;
  }
  return TRUE;
}

/* Sets up the libpng transforms of @kind; returns the bytes per pixel
 * libpng will deliver. */
static guint
setup_transforms (PngReader * r, ReadKind kind, WsiPngRgbFlags flags,
    gint depth, gint ctype)
{
  png_structp png = r->png;

  if (kind == READ_LABELS) {
    if (depth < 8)
      png_set_packing (png);    /* one byte per value, not rescaled */
    if (ctype & PNG_COLOR_MASK_ALPHA)
      png_set_strip_alpha (png);
    if (depth == 16 && G_BYTE_ORDER == G_LITTLE_ENDIAN)
      png_set_swap (png);
    return depth == 16 ? 2 : 1;
  } else {
    gboolean alpha = !(flags & WSI_PNG_RGB_DROP_ALPHA) &&
        ((ctype & PNG_COLOR_MASK_ALPHA) ||
        png_get_valid (png, r->info, PNG_INFO_tRNS));

    png_set_expand (png);       /* palette, gray < 8 bit, tRNS -> alpha */
    if (flags & WSI_PNG_RGB_TRUNCATE_16)
      png_set_strip_16 (png);
    else
      png_set_scale_16 (png);   /* rounded */
    png_set_gray_to_rgb (png);
    if (!alpha)
      png_set_strip_alpha (png);
    return alpha ? 4 : 3;
  }
}

/* Decodes the whole image into r->pixels. Every libpng error longjmps back
 * here; the caller frees what @r holds. */
static gboolean
reader_decode (PngReader * r, ReadKind kind, WsiPngRgbFlags flags,
    gsize max_pixels, GError ** error)
{
  png_uint_32 w, h, y;
  gint depth, ctype;
  gsize stride, size;
  guint bpp;

  if (setjmp (r->jmp)) {
    g_set_error (error, WSI_PNG_ERROR, WSI_PNG_ERROR_CORRUPT,
        "corrupt or truncated PNG '%s': %s", r->path, r->message);
    return FALSE;
  }
  png_set_user_limits (r->png, WSI_PNG_MAX_SIDE, WSI_PNG_MAX_SIDE);
  png_set_chunk_malloc_max (r->png, MAX_CHUNK_BYTES);
  png_init_io (r->png, r->fp);
  png_set_sig_bytes (r->png, 8);
  png_read_info (r->png, r->info);
  png_get_IHDR (r->png, r->info, &w, &h, &depth, &ctype, NULL, NULL, NULL);

  if (kind == READ_LABELS && (ctype & PNG_COLOR_MASK_COLOR)
      && ctype != PNG_COLOR_TYPE_PALETTE) {
    g_set_error (error, WSI_PNG_ERROR, WSI_PNG_ERROR_COLOUR,
        "'%s' is a colour PNG; label images must be grayscale or indexed "
        "(palette) PNGs holding class indices or instance ids", r->path);
    return FALSE;
  }
  /* libpng refuses sides > WSI_PNG_MAX_SIDE, so w * h fits 64 bit */
  if (w == 0 || h == 0)
    png_error (r->png, "image has no pixels");
  if ((guint64) w * h > max_pixels) {
    g_set_error (error, WSI_PNG_ERROR, WSI_PNG_ERROR_TOO_LARGE,
        "'%s' is %ux%u pixels, more than the limit of %" G_GSIZE_FORMAT
        " pixels", r->path, w, h, max_pixels);
    return FALSE;
  }

  bpp = setup_transforms (r, kind, flags, depth, ctype);
  if ((guint64) w * h * bpp > WSI_PNG_MAX_DECODED_BYTES) {
    g_set_error (error, WSI_PNG_ERROR, WSI_PNG_ERROR_TOO_LARGE,
        "'%s' is %ux%u pixels, %" G_GUINT64_FORMAT " MiB decoded, more than "
        "the limit of %" G_GSIZE_FORMAT " MiB of decoded pixels", r->path, w,
        h, ((guint64) w * h * bpp + (1 << 20) - 1) >> 20,
        WSI_PNG_MAX_DECODED_BYTES >> 20);
    return FALSE;
  }
  png_set_interlace_handling (r->png);
  png_read_update_info (r->png, r->info);
  if (png_get_rowbytes (r->png, r->info) != (gsize) w * bpp)
    png_error (r->png, "unexpected row size");

  stride = (gsize) w * bpp;
  if (!g_size_checked_mul (&size, stride, h)
      || !(r->pixels = g_try_malloc (size))
      || !(r->rows = g_try_new (png_bytep, h))) {
    g_set_error (error, WSI_PNG_ERROR, WSI_PNG_ERROR_NO_MEMORY,
        "out of memory decoding '%s' (%ux%u)", r->path, w, h);
    return FALSE;
  }
  for (y = 0; y < h; y++)
    r->rows[y] = r->pixels + (gsize) y * stride;
  png_read_image (r->png, r->rows);
  png_read_end (r->png, NULL);

  r->width = w;
  r->height = h;
  r->bytes_per_pixel = bpp;
  return TRUE;
}

/* RGBA -> RGB on white, in place (the RGB pixel i never overtakes the RGBA
 * pixel i it is computed from). */
static void
composite_on_white (guint8 * pixels, gsize n)
{
  gsize i;

  for (i = 0; i < n; i++) {
    const guint8 *s = pixels + i * 4;
    guint8 *d = pixels + i * 3;
    guint8 r = s[0], g = s[1], b = s[2], a = s[3];

    if (a == 255) {
      d[0] = r;
      d[1] = g;
      d[2] = b;
    } else {
      gdouble af = a / 255.0;
      d[0] = (guint8) rint (r * af + 255.0 * (1.0 - af));
      d[1] = (guint8) rint (g * af + 255.0 * (1.0 - af));
      d[2] = (guint8) rint (b * af + 255.0 * (1.0 - af));
    }
  }
}

guint8 *
wsi_png_read_rgb8 (const gchar * path, gint * width, gint * height,
    gsize max_pixels, WsiPngRgbFlags flags, GError ** error)
{
  PngReader r;
  guint8 *rgb;
  gsize n;

  if (!reader_open (&r, path, error)
      || !reader_decode (&r, READ_RGB8, flags, max_pixels, error)) {
    reader_close (&r);
    return NULL;
  }
  n = (gsize) r.width * r.height;
  if (r.bytes_per_pixel == 4) {
    guint8 *shrunk;
    composite_on_white (r.pixels, n);
    shrunk = g_try_realloc (r.pixels, n * 3);
    if (shrunk)
      r.pixels = shrunk;
  }
  rgb = g_steal_pointer (&r.pixels);
  *width = r.width;
  *height = r.height;
  reader_close (&r);
  return rgb;
}

gboolean
wsi_png_read_labels (const gchar * path, WsiLabelImage * img,
    gsize max_pixels, GError ** error)
{
  PngReader r;

  memset (img, 0, sizeof (*img));
  if (!reader_open (&r, path, error)
      || !reader_decode (&r, READ_LABELS, 0, max_pixels, error)) {
    reader_close (&r);
    return FALSE;
  }
  img->width = r.width;
  img->height = r.height;
  img->bytes_per_pixel = r.bytes_per_pixel;
  img->data = g_steal_pointer (&r.pixels);
  reader_close (&r);
  return TRUE;
}

void
wsi_label_image_clear (WsiLabelImage * img)
{
  g_clear_pointer (&img->data, g_free);
  img->width = img->height = 0;
  img->bytes_per_pixel = 0;
}
