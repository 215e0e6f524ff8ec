/* Helpers for the stitchsink tests: synthetic patches cut on patchify's grid
 * (docs/tile-meta.md) with hand-made tile meta, and a libpng reader. */
#pragma once

#include <gst/check/gstcheck.h>
#include <gst/check/gstharness.h>
#include <gst/video/video.h>
#include <glib/gstdio.h>
#include <png.h>
#include <string.h>

#include "gstwsitilemeta.h"

typedef struct
{
  GstVideoFormat format;
  gint width, height;           /* region, level pixels */
  gint patch, overlap;
  gint level;
  gdouble downsample;
  gint64 region_x, region_y;    /* level-0 */
  const gchar *slide;
  gboolean unknown_height;      /* meta says grid_rows 0, region_height 0 */
} Grid;

/* Writes the pixel at region position (X, Y) of patch (c, r) into @px;
 * @valid: inside the region (else it is padding). */
typedef void (*PixelFn) (const Grid * g, gint64 X, gint64 Y, gint c, gint r,
    gboolean valid, guint8 * px, gpointer data);

static inline gint
grid_stride (const Grid * g)
{
  return g->patch - g->overlap;
}

static inline gint
grid_cols (const Grid * g)
{
  return (g->width + grid_stride (g) - 1) / grid_stride (g);
}

static inline gint
grid_rows (const Grid * g)
{
  return (g->height + grid_stride (g) - 1) / grid_stride (g);
}

static inline gint
format_bpp (GstVideoFormat f)
{
  return f == GST_VIDEO_FORMAT_RGB ? 3 : f == GST_VIDEO_FORMAT_GRAY16_LE ? 2 : 1;
}

static inline const gchar *
format_caps (GstVideoFormat f, gint size, gchar * buf, gsize len)
{
  g_snprintf (buf, len, "video/x-raw,format=%s,width=%d,height=%d,"
      "framerate=0/1", gst_video_format_to_string (f), size, size);
  return buf;
}

/* Patch (c, r) of the grid: covers [c*S - O/2, c*S - O/2 + P) per axis. */
static inline GstBuffer *
make_patch (const Grid * g, gint c, gint r, PixelFn fn, gpointer data)
{
  gint S = grid_stride (g), P = g->patch, bpp = format_bpp (g->format);
  gint64 px = (gint64) c * S - g->overlap / 2;
  gint64 py = (gint64) r * S - g->overlap / 2;
  GstVideoInfo info;
  GstBuffer *buf;
  GstMapInfo map;
  GstWsiTileMeta *m;
  gint i, j;

  gst_video_info_set_format (&info, g->format, P, P);
  buf = gst_buffer_new_allocate (NULL, info.size, NULL);
  gst_buffer_map (buf, &map, GST_MAP_WRITE);
  for (j = 0; j < P; j++)
    for (i = 0; i < P; i++) {
      gint64 X = px + i, Y = py + j;
      gboolean valid = X >= 0 && X < g->width && Y >= 0 && Y < g->height;
      fn (g, X, Y, c, r, valid, map.data + j * info.stride[0] + i * bpp, data);
    }
  gst_buffer_unmap (buf, &map);

  m = gst_wsi_tile_meta_add (buf);
  gst_wsi_tile_meta_set_slide (m, g->slide ? g->slide : "");
  m->level = g->level;
  m->downsample = g->downsample;
  m->x = g->region_x + (gint64) (px * g->downsample);
  m->y = g->region_y + (gint64) (py * g->downsample);
  m->width = m->height = P;
  m->pad_left = (gint) MAX (0, -px);
  m->pad_top = (gint) MAX (0, -py);
  m->valid_width = (gint) (MIN (g->width, px + P) - MAX (0, px));
  m->valid_height = (gint) (MIN (g->height, py + P) - MAX (0, py));
  m->col = c;
  m->row = r;
  m->grid_cols = grid_cols (g);
  m->grid_rows = g->unknown_height ? 0 : grid_rows (g);
  m->overlap = g->overlap;
  m->region_x = g->region_x;
  m->region_y = g->region_y;
  m->region_width = (gint64) (g->width * g->downsample);
  m->region_height = g->unknown_height ? 0 :
      (gint64) (g->height * g->downsample);
  m->slide_width = m->region_x + m->region_width;
  m->slide_height = m->region_y + (gint64) (g->height * g->downsample);
  m->frame = (guint64) r * grid_cols (g) + c;
  return buf;
}

/* A harness around a stitchsink configured before it starts, with a bus. */
static inline GstHarness *
stitch_harness (GstBus ** bus, const gchar * first_prop, ...)
{
  GstElement *e = gst_element_factory_make ("stitchsink", NULL);
  GstHarness *h;
  va_list args;

  fail_unless (e != NULL, "stitchsink not found (GST_PLUGIN_PATH?)");
  va_start (args, first_prop);
  if (first_prop)
    g_object_set_valist (G_OBJECT (e), first_prop, args);
  va_end (args);
  *bus = gst_bus_new ();
  gst_element_set_bus (e, *bus);
  h = gst_harness_new_with_element (e, "sink", NULL);
  gst_object_unref (e);
  return h;
}

static inline void
harness_caps (GstHarness * h, const Grid * g)
{
  gchar caps[256];
  gst_harness_set_src_caps_str (h, format_caps (g->format, g->patch, caps,
          sizeof (caps)));
}

/* Pushes all patches in raster order, skipping those @drop says. */
static inline GstFlowReturn
push_grid (GstHarness * h, const Grid * g, PixelFn fn, gpointer data,
    gboolean (*drop) (gint c, gint r))
{
  gint c, r;
  for (r = 0; r < grid_rows (g); r++)
    for (c = 0; c < grid_cols (g); c++) {
      GstFlowReturn ret;
      if (drop && drop (c, r))
        continue;
      ret = gst_harness_push (h, make_patch (g, c, r, fn, data));
      if (ret != GST_FLOW_OK)
        return ret;
    }
  return GST_FLOW_OK;
}

/* Error message on @bus, or NULL. Caller frees the GError. */
static inline GError *
pop_error (GstBus * bus)
{
  GstMessage *msg = gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR);
  GError *err = NULL;
  if (!msg)
    return NULL;
  gst_message_parse_error (msg, &err, NULL);
  gst_message_unref (msg);
  return err;
}

typedef struct
{
  guint32 width, height;
  gint channels, depth;         /* depth 8 or 16; 16-bit samples native LE */
  guint8 *data;                 /* rows packed */
  gsize row_bytes;
} TestImage;

/* Reads a whole PNG with libpng; FALSE if it is not a readable PNG. */
static inline gboolean
read_png (const gchar * path, TestImage * img)
{
  FILE *fp = fopen (path, "rb");
  png_structp png;
  png_infop info;
  guint32 y;
  gint type;

  memset (img, 0, sizeof (*img));
  if (!fp)
    return FALSE;
  png = png_create_read_struct (PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  info = png_create_info_struct (png);
  if (setjmp (png_jmpbuf (png))) {
    png_destroy_read_struct (&png, &info, NULL);
    fclose (fp);
    g_free (img->data);
    img->data = NULL;
    return FALSE;
  }
  png_init_io (png, fp);
  png_set_user_limits (png, 0x7fffffff, 0x7fffffff);
  png_read_info (png, info);
  img->width = png_get_image_width (png, info);
  img->height = png_get_image_height (png, info);
  img->depth = png_get_bit_depth (png, info);
  type = png_get_color_type (png, info);
  img->channels = type == PNG_COLOR_TYPE_RGB ? 3 : type ==
      PNG_COLOR_TYPE_GRAY ? 1 : png_get_channels (png, info);
  if (img->depth == 16)
    png_set_swap (png);
  img->row_bytes = png_get_rowbytes (png, info);
  img->data = g_malloc ((gsize) img->row_bytes * img->height);
  for (y = 0; y < img->height; y++)
    png_read_row (png, img->data + (gsize) y * img->row_bytes, NULL);
  png_read_end (png, NULL);
  png_destroy_read_struct (&png, &info, NULL);
  fclose (fp);
  return TRUE;
}

static inline gint
count_partial_files (const gchar * dir)
{
  GDir *d = g_dir_open (dir, 0, NULL);
  const gchar *name;
  gint n = 0;
  if (!d)
    return -1;
  while ((name = g_dir_read_name (d)))
    if (strstr (name, ".partial-") || strstr (name, ".spool-"))
      n++;
  g_dir_close (d);
  return n;
}

static inline void
remove_dir (const gchar * dir)
{
  GDir *d = g_dir_open (dir, 0, NULL);
  const gchar *name;
  if (d) {
    while ((name = g_dir_read_name (d))) {
      gchar *p = g_build_filename (dir, name, NULL);
      g_unlink (p);
      g_free (p);
    }
    g_dir_close (d);
  }
  g_rmdir (dir);
}
