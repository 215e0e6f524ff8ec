/* stitchsink overlay picture: thumbnail + class colours + legend. */
#include "stitchoverlay.h"
#include "stitchio.h"
#include "wsislide.h"

#include <cairo.h>
#include <math.h>
#include <errno.h>
#include <string.h>

/* Distinct colours for classes 1, 2, ... (class 0 is transparent); the
 * first ones contrast with H&E pink and purple. */
static const guint32 default_palette[] = {
  0x3cb44b, 0x4363d8, 0xffe119, 0xe6194b, 0xf58231, 0x911eb4, 0x42d4f4,
  0xf032e6, 0xbfef45, 0xfabed4, 0x469990, 0xdcbeff, 0x9a6324, 0x800000,
  0xaaffc3, 0x808000, 0xffd8b1, 0x000075, 0xa9a9a9, 0xfffac8,
};

#define LEGEND_MAX_ENTRIES 24
/* Level pixels the underlay may read in all: the whole region at the level
 * that fits the overlay (the slide was streamed whole already); only a
 * single-level slide of over 2^32 pixels is sampled (wsislide.h). */
#define THUMB_MAX_READ_PIXELS (G_GUINT64_CONSTANT (1) << 32)

struct _StitchOverlay
{
  gint64 width, height;
  gint channels, bps;
  guint factor, ow, oh;
  guint16 *labels;              /* ow x oh, labels kind */
  guint *sample_col;            /* source column sampled for overlay column */
  guint8 *seen;                 /* bitmap of labels present */
  guint8 *rgb;                  /* ow x oh x 3, RGB kind */
  guint64 *acc;                 /* ow x 3 sums of the current block row */
  guint acc_rows;
};

guint
stitch_overlay_factor (gint64 width, gint64 height, guint max_size)
{
  gint64 longest = MAX (width, height);

  if (max_size == 0)
    max_size = 1;
  return (guint) MAX (1, (longest + max_size - 1) / max_size);
}

StitchOverlay *
stitch_overlay_new (gint64 width, gint64 height, gint channels,
    gint bytes_per_sample, guint max_size)
{
  StitchOverlay *o;
  guint u;

  g_return_val_if_fail (width > 0 && height > 0, NULL);
  o = g_new0 (StitchOverlay, 1);
  o->width = width;
  o->height = height;
  o->channels = channels;
  o->bps = bytes_per_sample;
  o->factor = stitch_overlay_factor (width, height, max_size);
  o->ow = (guint) ((width + o->factor - 1) / o->factor);
  o->oh = (guint) ((height + o->factor - 1) / o->factor);
  if (channels == 1) {
    o->labels = g_new0 (guint16, (gsize) o->ow * o->oh);
    o->seen = g_new0 (guint8, 65536 / 8);
    o->sample_col = g_new (guint, o->ow);
    /* Nearest sample: the block centre, or the last pixel of a cut block. */
    for (u = 0; u < o->ow; u++) {
      gint64 x0 = (gint64) u * o->factor;
      o->sample_col[u] = (guint) (x0 + MIN (o->factor / 2, width - 1 - x0));
    }
  } else {
    o->rgb = g_new0 (guint8, (gsize) o->ow * o->oh * 3);
    o->acc = g_new0 (guint64, (gsize) o->ow * 3);
  }
  return o;
}

guint
stitch_overlay_get_width (StitchOverlay * o)
{
  return o->ow;
}

guint
stitch_overlay_get_height (StitchOverlay * o)
{
  return o->oh;
}

static inline guint
row_label (const StitchOverlay * o, const guint8 * row, gint64 x)
{
  if (o->bps == 2)
    return row[2 * x] | (row[2 * x + 1] << 8);
  return row[x];
}

void
stitch_overlay_push_row (StitchOverlay * o, gint64 y, const guint8 * row)
{
  guint v, u;
  gint64 x, y0;

  if (y < 0 || y >= o->height)
    return;
  v = (guint) (y / o->factor);
  y0 = (gint64) v * o->factor;

  if (o->channels == 1) {
    for (x = 0; x < o->width; x++) {
      guint k = row_label (o, row, x);
      o->seen[k >> 3] |= 1 << (k & 7);
    }
    if (y - y0 == MIN ((gint64) o->factor / 2, o->height - 1 - y0)) {
      guint16 *dst = o->labels + (gsize) v * o->ow;
      for (u = 0; u < o->ow; u++)
        dst[u] = row_label (o, row, o->sample_col[u]);
    }
    return;
  }

  for (x = 0; x < o->width; x++) {
    guint64 *a = o->acc + (x / o->factor) * 3;
    a[0] += row[3 * x];
    a[1] += row[3 * x + 1];
    a[2] += row[3 * x + 2];
  }
  o->acc_rows++;
  if (y - y0 == o->factor - 1 || y == o->height - 1) {
    guint8 *dst = o->rgb + (gsize) v * o->ow * 3;
    for (u = 0; u < o->ow; u++) {
      gint64 cols = MIN ((gint64) o->factor, o->width - (gint64) u * o->factor);
      guint64 n = (guint64) cols * o->acc_rows;
      gint c;
      for (c = 0; c < 3; c++)
        dst[3 * u + c] = (guint8) ((o->acc[3 * u + c] + n / 2) / n);
    }
    memset (o->acc, 0, (gsize) o->ow * 3 * sizeof (guint64));
    o->acc_rows = 0;
  }
}

void
stitch_overlay_free (StitchOverlay * o)
{
  if (!o)
    return;
  g_free (o->labels);
  g_free (o->sample_col);
  g_free (o->seen);
  g_free (o->rgb);
  g_free (o->acc);
  g_free (o);
}

guint32
stitch_overlay_class_color (const StitchOverlayStyle * style, guint k)
{
  gdouble h, s = 0.75, val = 0.9, f, p, q, t, r, g, b;
  gint i;

  if (style && k < style->n_colors)
    return style->colors[k];
  if (k == 0)
    return 0x000000;
  if (k - 1 < G_N_ELEMENTS (default_palette))
    return default_palette[k - 1];
  /* Beyond the palette: hues spread by the golden ratio. */
  h = fmod (k * 0.618033988749895, 1.0) * 6.0;
  i = (gint) h;
  f = h - i;
  p = val * (1 - s);
  q = val * (1 - s * f);
  t = val * (1 - s * (1 - f));
  switch (i) {
    case 0: r = val; g = t; b = p; break;
    case 1: r = q; g = val; b = p; break;
    case 2: r = p; g = val; b = t; break;
    case 3: r = p; g = q; b = val; break;
    case 4: r = t; g = p; b = val; break;
    default: r = val; g = p; b = q; break;
  }
  return ((guint32) (r * 255) << 16) | ((guint32) (g * 255) << 8) |
      (guint32) (b * 255);
}

gboolean
stitch_overlay_parse_colors (const gchar * str, guint32 ** colors,
    guint * n_colors, GError ** error)
{
  gchar **parts;
  guint i, n;

  *colors = NULL;
  *n_colors = 0;
  if (!str || !*str)
    return TRUE;
  parts = g_strsplit (str, ",", -1);
  n = g_strv_length (parts);
  *colors = g_new0 (guint32, n);
  for (i = 0; i < n; i++) {
    const gchar *s = g_strstrip (parts[i]);
    gchar *end = NULL;
    guint64 val;

    if (*s == '#')
      s++;
    val = g_ascii_strtoull (s, &end, 16);
    if (strlen (s) != 6 || !end || *end != '\0' || !g_ascii_isxdigit (*s)) {
      g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
          "class-colors entry %u ('%s') is not a hex colour like ff8800", i,
          parts[i]);
      g_strfreev (parts);
      g_clear_pointer (colors, g_free);
      return FALSE;
    }
    (*colors)[i] = (guint32) val;
  }
  *n_colors = n;
  g_strfreev (parts);
  return TRUE;
}

/* The stitched region's thumbnail through the slide reader (wsislide.h):
 * the pixels slidesrc streams, box-averaged at the level that fits the
 * overlay, read in blocks. NULL if the path is no slide or reading fails. */
static guint8 *
read_slide_thumbnail (StitchOverlay * o, const StitchOverlaySource * src)
{
  WsiSlide *slide;
  gint64 sw, sh, w0, h0;
  guint8 *rgb = NULL;

  if (!src || !src->slide || !*src->slide || !(src->downsample > 0))
    return NULL;
  slide = wsi_slide_open (src->slide, NULL);
  if (!slide)
    return NULL;
  wsi_slide_get_level_dimensions (slide, 0, &sw, &sh);
  /* the region in level-0 pixels, clipped to the slide */
  w0 = MIN ((gint64) ceil (o->width * src->downsample - 1e-9),
      sw - src->region_x);
  h0 = MIN ((gint64) ceil (o->height * src->downsample - 1e-9),
      sh - src->region_y);
  if (src->region_x >= 0 && src->region_y >= 0 && w0 > 0 && h0 > 0)
    rgb = g_try_malloc ((gsize) o->ow * o->oh * 3);
  /* overlay pixel u covers stitched pixels [u * factor, (u + 1) * factor) */
  if (rgb && !wsi_slide_read_thumbnail (slide, src->region_x, src->region_y,
          w0, h0, o->factor * src->downsample, o->ow, o->oh,
          THUMB_MAX_READ_PIXELS, NULL, rgb, NULL, NULL))
    g_clear_pointer (&rgb, g_free);
  wsi_slide_free (slide);
  return rgb;
}

static const gchar *
class_name (const StitchOverlayStyle * style, guint k, gchar * tmp, gsize len)
{
  if (style && k < style->n_names && style->names[k] && *style->names[k])
    return style->names[k];
  g_snprintf (tmp, len, "class %u", k);
  return tmp;
}

static void
set_source_rgb32 (cairo_t * cr, guint32 c)
{
  cairo_set_source_rgb (cr, ((c >> 16) & 0xff) / 255.0,
      ((c >> 8) & 0xff) / 255.0, (c & 0xff) / 255.0);
}

/* Legend box in the top-left corner: one line per class (swatch + name). */
static void
draw_legend (StitchOverlay * o, cairo_t * cr, const StitchOverlayStyle * style)
{
  guint entries[LEGEND_MAX_ENTRIES];
  guint n = 0, more = 0, k, i, max_k = 0;
  gdouble fs, pad, line_h, swatch, margin, text_w = 0, box_w, box_h;
  gchar tmp[32], more_text[48];
  cairo_text_extents_t ext;

  for (k = 1; k < 65536; k++) {
    gboolean seen = (o->seen[k >> 3] >> (k & 7)) & 1;
    gboolean named = style && k < style->n_names && style->names[k]
        && *style->names[k];
    if (!seen && !named)
      continue;
    if (n < LEGEND_MAX_ENTRIES)
      entries[n++] = k;
    else
      more++;
    max_k = k;
  }
  (void) max_k;
  if (n == 0)
    return;
  if (more > 0) {
    more++;
    n--;
    g_snprintf (more_text, sizeof (more_text), "... %u more", more);
  }

  fs = CLAMP (floor (MIN (o->ow, o->oh) / 30.0), 9, 28);
  pad = floor (fs * 0.5);
  line_h = floor (fs * 1.4);
  swatch = fs;
  margin = MAX (2, floor (fs * 0.5));

  cairo_select_font_face (cr, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL,
      CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size (cr, fs);
  for (i = 0; i < n; i++) {
    cairo_text_extents (cr, class_name (style, entries[i], tmp, sizeof (tmp)),
        &ext);
    text_w = MAX (text_w, ext.x_advance);
  }
  if (more > 0) {
    cairo_text_extents (cr, more_text, &ext);
    text_w = MAX (text_w, ext.x_advance);
  }
  box_w = ceil (pad + swatch + pad + text_w + pad);
  box_h = pad * 2 + line_h * (n + (more > 0 ? 1 : 0));

  cairo_rectangle (cr, margin, margin, box_w, box_h);
  cairo_set_source_rgb (cr, 1, 1, 1);
  cairo_fill_preserve (cr);
  cairo_set_source_rgb (cr, 0.2, 0.2, 0.2);
  cairo_set_line_width (cr, 1);
  cairo_stroke (cr);

  for (i = 0; i < n; i++) {
    gdouble top = margin + pad + i * line_h;
    gdouble sy = top + floor ((line_h - swatch) / 2);
    cairo_rectangle (cr, margin + pad, sy, swatch, swatch);
    set_source_rgb32 (cr, stitch_overlay_class_color (style, entries[i]));
    cairo_fill_preserve (cr);
    cairo_set_source_rgb (cr, 0.2, 0.2, 0.2);
    cairo_stroke (cr);
    cairo_set_source_rgb (cr, 0, 0, 0);
    cairo_move_to (cr, margin + pad + swatch + pad, sy + swatch * 0.85);
    cairo_show_text (cr, class_name (style, entries[i], tmp, sizeof (tmp)));
  }
  if (more > 0) {
    cairo_move_to (cr, margin + pad,
        margin + pad + n * line_h + floor ((line_h - swatch) / 2) +
        swatch * 0.85);
    cairo_show_text (cr, more_text);
  }
}

static cairo_status_t
write_to_array (void *closure, const unsigned char *data, unsigned int length)
{
  g_byte_array_append (closure, data, length);
  return CAIRO_STATUS_SUCCESS;
}

/* CRC-32 of PNG chunks (ISO 3309, as zlib's crc32). */
static guint32
png_chunk_crc (const guint8 * data, gsize len)
{
  guint32 c = 0xffffffffu;

  for (gsize i = 0; i < len; i++) {
    c ^= data[i];
    for (gint k = 0; k < 8; k++)
      c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
  }
  return c ^ 0xffffffffu;
}

/* Inserts a tEXt chunk before IEND (the last 12 bytes cairo writes). */
static void
png_insert_text (GByteArray * png, const gchar * key, const gchar * value)
{
  gsize klen = strlen (key), vlen = strlen (value), n = klen + 1 + vlen;
  guint8 *chunk = g_malloc (12 + n);
  guint32 crc;

  if (png->len < 8 + 12)
    return;
  chunk[0] = n >> 24;
  chunk[1] = n >> 16;
  chunk[2] = n >> 8;
  chunk[3] = n;
  memcpy (chunk + 4, "tEXt", 4);
  memcpy (chunk + 8, key, klen + 1);
  memcpy (chunk + 8 + klen + 1, value, vlen);
  crc = png_chunk_crc (chunk + 4, 4 + n);
  chunk[8 + n] = crc >> 24;
  chunk[9 + n] = crc >> 16;
  chunk[10 + n] = crc >> 8;
  chunk[11 + n] = crc;
  {
    guint8 iend[12];
    memcpy (iend, png->data + png->len - 12, 12);
    g_byte_array_set_size (png, png->len - 12);
    g_byte_array_append (png, chunk, 12 + n);
    g_byte_array_append (png, iend, 12);
  }
  g_free (chunk);
}

static inline guint8
mix (guint8 base, guint8 colour, gdouble alpha)
{
  return (guint8) lround (base * (1.0 - alpha) + colour * alpha);
}

gboolean
stitch_overlay_write (StitchOverlay * o, const gchar * location,
    const StitchOverlayStyle * style, const StitchOverlaySource * source,
    GError ** error)
{
  cairo_surface_t *surface;
  cairo_t *cr;
  cairo_status_t status;
  StitchAtomicFile file;
  GByteArray *png;
  guint8 *base = NULL, *data;
  gint stride;
  guint u, v;
  gdouble alpha;

  surface = cairo_image_surface_create (CAIRO_FORMAT_RGB24, o->ow, o->oh);
  if (cairo_surface_status (surface) != CAIRO_STATUS_SUCCESS) {
    g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_NOMEM,
        "Could not create a %ux%u overlay picture: %s", o->ow, o->oh,
        cairo_status_to_string (cairo_surface_status (surface)));
    cairo_surface_destroy (surface);
    return FALSE;
  }

  if (o->channels == 1) {
    base = read_slide_thumbnail (o, source);
    /* Over a thumbnail the mask is blended; alone it is drawn opaque. */
    alpha = base ? CLAMP (style ? style->opacity : 0.5, 0.0, 1.0) : 1.0;
  } else {
    alpha = 0;
  }

  cairo_surface_flush (surface);
  data = cairo_image_surface_get_data (surface);
  stride = cairo_image_surface_get_stride (surface);
  for (v = 0; v < o->oh; v++) {
    guint32 *dst = (guint32 *) (data + (gsize) v * stride);
    for (u = 0; u < o->ow; u++) {
      gsize i = (gsize) v * o->ow + u;
      guint8 r = 255, g = 255, b = 255;
      if (o->rgb) {
        r = o->rgb[3 * i];
        g = o->rgb[3 * i + 1];
        b = o->rgb[3 * i + 2];
      } else {
        guint k = o->labels[i];
        if (base) {
          r = base[3 * i];
          g = base[3 * i + 1];
          b = base[3 * i + 2];
        }
        if (k != 0) {
          guint32 c = stitch_overlay_class_color (style, k);
          r = mix (r, (c >> 16) & 0xff, alpha);
          g = mix (g, (c >> 8) & 0xff, alpha);
          b = mix (b, c & 0xff, alpha);
        }
      }
      dst[u] = ((guint32) r << 16) | ((guint32) g << 8) | b;
    }
  }
  cairo_surface_mark_dirty (surface);
  g_free (base);

  cr = cairo_create (surface);
  if (o->channels == 1)
    draw_legend (o, cr, style);
  status = cairo_status (cr);
  cairo_destroy (cr);
  if (status != CAIRO_STATUS_SUCCESS) {
    g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_FAILED,
        "Could not draw the overlay legend: %s",
        cairo_status_to_string (status));
    cairo_surface_destroy (surface);
    return FALSE;
  }

  png = g_byte_array_new ();
  status = cairo_surface_write_to_png_stream (surface, write_to_array, png);
  cairo_surface_destroy (surface);
  if (status != CAIRO_STATUS_SUCCESS) {
    g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_IO,
        "Could not encode overlay '%s': %s", location,
        cairo_status_to_string (status));
    g_byte_array_unref (png);
    return FALSE;
  }
  if (source && source->text_key && source->text_value)
    png_insert_text (png, source->text_key, source->text_value);
  if (!stitch_atomic_open (&file, location, error)) {
    g_byte_array_unref (png);
    return FALSE;
  }
  if (fwrite (png->data, 1, png->len, file.fp) != png->len) {
    g_set_error (error, G_FILE_ERROR, g_file_error_from_errno (errno),
        "Could not write overlay '%s': %s", location, g_strerror (errno));
    g_byte_array_unref (png);
    stitch_atomic_abort (&file);
    return FALSE;
  }
  g_byte_array_unref (png);
  return stitch_atomic_commit (&file, error);
}

void
stitch_overlay_push_outline_row (StitchOverlay * o, gint64 y,
    const guint16 * classes)
{
  guint16 *dst;
  gint64 x;

  if (o->channels != 1 || y < 0 || y >= o->height)
    return;
  dst = o->labels + (gsize) (y / o->factor) * o->ow;
  for (x = 0; x < o->width; x++)
    if (classes[x]) {
      dst[x / o->factor] = classes[x];
      o->seen[classes[x] >> 3] |= 1 << (classes[x] & 7);
    }
}
