/* The one slide reader (elements/core/wsislide.h) and its users agree on a
 * generated slide with transparent and partially transparent pixels and a
 * non-white background colour (a Trestle TIFF: OpenSlide reads its
 * "Background Color"): slidesrc's pixels, the reader's thumbnail and
 * overview, stitchsink's overlay underlay and colornorm's thumbnail fit.
 * A thumbnail or overview of a big single-level TIFF reads a bounded
 * number of pixels (counted, not timed). */
#include <gst/check/gstcheck.h>
#include <gst/check/gstharness.h>
#include <gst/app/gstappsink.h>
#include <gst/video/video.h>
#include <glib/gstdio.h>
#include <tiffio.h>
#include <math.h>
#include <string.h>

#include "gstwsitilemeta.h"
#include "stitchoverlay.h"
#include "wsicolor.h"
#include "wsipng.h"
#include "wsislide.h"

#define W0 500
#define H0 376
#define TILE 64
static const guint8 BG[3] = { 0x40, 0x80, 0xC0 };

static gchar *tmp_dir;
static gchar *slide_path;

/* Unassociated RGBA of level-0 pixel (x, y): opaque colours, a fully
 * transparent block and a band of partial alpha. */
static void
source_pixel (gint x, gint y, guint8 p[4])
{
  p[0] = (x * 3 + y) & 255;
  p[1] = (x + y * 5) & 255;
  p[2] = (x * y / 7) & 255;
  p[3] = 255;
  if (x >= 300 && x < 420 && y >= 40 && y < 200)
    p[3] = 0;
  else if (y >= 250 && y < 330)
    p[3] = (guint8) (1 + (x * 5 + y) % 254);
}

static void
write_level (TIFF * tif, gint w, gint h, gint ds, gboolean first)
{
  guint8 *tile = g_malloc ((gsize) TILE * TILE * 4);
  guint16 extra[1] = { EXTRASAMPLE_UNASSALPHA };

  TIFFSetField (tif, TIFFTAG_IMAGEWIDTH, w);
  TIFFSetField (tif, TIFFTAG_IMAGELENGTH, h);
  TIFFSetField (tif, TIFFTAG_BITSPERSAMPLE, 8);
  TIFFSetField (tif, TIFFTAG_SAMPLESPERPIXEL, 4);
  TIFFSetField (tif, TIFFTAG_EXTRASAMPLES, 1, extra);
  TIFFSetField (tif, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_RGB);
  TIFFSetField (tif, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
  TIFFSetField (tif, TIFFTAG_COMPRESSION, COMPRESSION_NONE);
  TIFFSetField (tif, TIFFTAG_TILEWIDTH, TILE);
  TIFFSetField (tif, TIFFTAG_TILELENGTH, TILE);
  if (first) {
    TIFFSetField (tif, TIFFTAG_SOFTWARE, "MedScan");
    TIFFSetField (tif, TIFFTAG_IMAGEDESCRIPTION,
        "Objective Power=20;Background Color=4080C0");
  }
  for (gint ty = 0; ty < h; ty += TILE)
    for (gint tx = 0; tx < w; tx += TILE) {
      for (gint y = 0; y < TILE; y++)
        for (gint x = 0; x < TILE; x++) {
          guint8 *p = tile + ((gsize) y * TILE + x) * 4;
          /* a level pixel: the source pixel at its top-left */
          source_pixel ((tx + x) * ds, (ty + y) * ds, p);
        }
      TIFFWriteTile (tif, tile, tx, ty, 0, 0);
    }
  TIFFWriteDirectory (tif);
  g_free (tile);
}

static void
write_trestle (const gchar * path)
{
  TIFF *tif = TIFFOpen (path, "w");

  fail_unless (tif != NULL);
  write_level (tif, W0, H0, 1, TRUE);
  write_level (tif, W0 / 2, H0 / 2, 2, FALSE);
  TIFFClose (tif);
}

/* An uncompressed tiled single-level RGB TIFF of @side^2 pixels whose
 * tiles all share one stored tile: a few hundred KB on disk. */
static void
write_huge_tiff (const gchar * path, guint32 side, guint32 tile)
{
  guint32 n = (side / tile) * (side / tile), off_data = 8;
  gsize data_len = (gsize) tile * tile * 3;
  guint32 off_offsets = off_data + data_len, off_counts = off_offsets + 4 * n;
  guint32 off_bps = off_counts + 4 * n, off_ifd = off_bps + 6;
  FILE *f = fopen (path, "wb");
  guint8 *data = g_malloc (data_len);
  guint32 *u32 = g_new (guint32, n);
  guint16 bps[3] = { 8, 8, 8 }, count = 11;
  struct
  {
    guint16 tag, type;
    guint32 count, value;
  } e[11] = {
    {256, 4, 1, side}, {257, 4, 1, side}, {258, 3, 3, off_bps},
    {259, 3, 1, 1}, {262, 3, 1, 2}, {277, 3, 1, 3}, {284, 3, 1, 1},
    {322, 3, 1, tile}, {323, 3, 1, tile}, {324, 4, n, off_offsets},
    {325, 4, n, off_counts},
  };
  guint32 zero = 0;

  g_assert (G_BYTE_ORDER == G_LITTLE_ENDIAN);
  fail_unless (f != NULL);
  memset (data, 200, data_len);
  fwrite ("II*\0", 1, 4, f);
  fwrite (&off_ifd, 4, 1, f);
  fwrite (data, 1, data_len, f);
  for (guint32 i = 0; i < n; i++)
    u32[i] = off_data;
  fwrite (u32, 4, n, f);
  for (guint32 i = 0; i < n; i++)
    u32[i] = (guint32) data_len;
  fwrite (u32, 4, n, f);
  fwrite (bps, 2, 3, f);
  fwrite (&count, 2, 1, f);
  for (gint i = 0; i < 11; i++) {
    fwrite (&e[i].tag, 2, 1, f);
    fwrite (&e[i].type, 2, 1, f);
    fwrite (&e[i].count, 4, 1, f);
    fwrite (&e[i].value, 4, 1, f);
  }
  fwrite (&zero, 4, 1, f);
  fclose (f);
  g_free (data);
  g_free (u32);
}

/* The rule of wsislide.h, written out again. */
static void
expected_rgb (guint32 p, guint8 out[3])
{
  guint a = p >> 24;

  for (gint c = 0; c < 3; c++) {
    guint v = (p >> (16 - 8 * c)) & 0xff;
    if (a == 255)
      out[c] = v;
    else if (a == 0)
      out[c] = BG[c];
    else
      out[c] = (guint8) rint (MIN (255u, v * 255u / a) * (a / 255.0) +
          BG[c] * (1.0 - a / 255.0));
  }
}

/* The whole level @level as slidesrc streams it (RGB, w * 3 stride). */
static guint8 *
slidesrc_level (gint level, gint64 * width, gint64 * height)
{
  gchar *desc = g_strdup_printf ("slidesrc location=\"%s\" level=%d "
      "tile-width=96 tile-height=80 ! appsink name=sink sync=false",
      slide_path, level);
  GstElement *pipe = gst_parse_launch (desc, NULL);
  GstElement *sink = gst_bin_get_by_name (GST_BIN (pipe), "sink");
  guint8 *img = NULL;
  GstSample *sample;

  fail_unless (pipe != NULL);
  gst_element_set_state (pipe, GST_STATE_PLAYING);
  while ((sample = gst_app_sink_pull_sample (GST_APP_SINK (sink)))) {
    GstBuffer *buf = gst_sample_get_buffer (sample);
    GstWsiTileMeta *m = gst_buffer_get_wsi_tile_meta (buf);
    GstVideoInfo info;
    GstMapInfo map;
    gint64 x0, y0;

    fail_unless (m != NULL);
    gst_video_info_from_caps (&info, gst_sample_get_caps (sample));
    if (!img) {
      *width = m->level_width;
      *height = m->level_height;
      img = g_malloc0 ((gsize) * width * *height * 3);
    }
    x0 = (gint64) m->col * 96;
    y0 = (gint64) m->row * 80;
    gst_buffer_map (buf, &map, GST_MAP_READ);
    for (gint y = 0; y < m->valid_height; y++)
      memcpy (img + ((gsize) (y0 + y) * *width + x0) * 3,
          map.data + (gsize) y * GST_VIDEO_INFO_PLANE_STRIDE (&info, 0),
          (gsize) m->valid_width * 3);
    gst_buffer_unmap (buf, &map);
    gst_sample_unref (sample);
  }
  gst_element_set_state (pipe, GST_STATE_NULL);
  gst_object_unref (sink);
  gst_object_unref (pipe);
  g_free (desc);
  fail_unless (img != NULL);
  return img;
}

/* Box average of @f x @f blocks of @img (partial blocks at the edges
 * average what they hold), rounded as the reader rounds. */
static guint8 *
box_average (const guint8 * img, gint64 w, gint64 h, gint f, gint * ow,
    gint * oh)
{
  guint8 *out;

  *ow = (gint) ((w + f - 1) / f);
  *oh = (gint) ((h + f - 1) / f);
  out = g_malloc ((gsize) * ow * *oh * 3);
  for (gint v = 0; v < *oh; v++)
    for (gint u = 0; u < *ow; u++)
      for (gint c = 0; c < 3; c++) {
        guint64 sum = 0, n = 0;
        for (gint64 y = (gint64) v * f; y < MIN (h, (gint64) (v + 1) * f); y++)
          for (gint64 x = (gint64) u * f; x < MIN (w, (gint64) (u + 1) * f);
              x++, n++)
            sum += img[((gsize) y * w + x) * 3 + c];
        out[((gsize) v * *ow + u) * 3 + c] = (guint8) ((sum + n / 2) / n);
      }
  return out;
}

static void
setup (void)
{
  tmp_dir = g_dir_make_tmp ("slidereader-XXXXXX", NULL);
  slide_path = g_build_filename (tmp_dir, "trestle.tif", NULL);
  write_trestle (slide_path);
}

static void
teardown (void)
{
  gchar *cmd = g_strdup_printf ("rm -rf '%s'", tmp_dir);

  g_assert (system (cmd) == 0);
  g_free (cmd);
  g_free (slide_path);
  g_free (tmp_dir);
}

GST_START_TEST (test_reader_rule)
{
  GError *error = NULL;
  WsiSlide *s = wsi_slide_open (slide_path, &error);
  guint8 bg[3], *rgb = g_malloc ((gsize) W0 * H0 * 3);
  guint32 *argb = g_new (guint32, (gsize) W0 * H0);
  guint partial = 0, clear = 0;

  fail_unless (s != NULL, "%s", error ? error->message : "");
  fail_unless_equals_string (wsi_slide_get_vendor (s), "trestle");
  wsi_slide_get_background (s, bg);
  fail_unless (memcmp (bg, BG, 3) == 0, "background %02x%02x%02x", bg[0],
      bg[1], bg[2]);
  fail_unless_equals_int (wsi_slide_get_level_count (s), 2);
  fail_unless_equals_float (wsi_slide_get_level_downsample (s, 1), 2.0);

  fail_unless (wsi_slide_read_argb (s, 0, 0, 0, W0, H0, argb, NULL));
  fail_unless (wsi_slide_read_region (s, 0, 0, 0, W0, H0, rgb, W0 * 3, NULL));
  for (gsize i = 0; i < (gsize) W0 * H0; i++) {
    guint8 want[3];
    guint a = argb[i] >> 24;
    expected_rgb (argb[i], want);
    fail_unless (memcmp (rgb + 3 * i, want, 3) == 0, "pixel %" G_GSIZE_FORMAT,
        i);
    partial += a > 0 && a < 255;
    clear += a == 0;
  }
  /* the slide has what the rule is about */
  fail_unless (partial > 10000 && clear > 10000, "%u partial, %u clear",
      partial, clear);
  g_free (rgb);
  g_free (argb);
  wsi_slide_free (s);
}

GST_END_TEST;

/* slidesrc's pixels are the reader's; the thumbnail is their box average;
 * the overview is those pixels; the overlay's underlay is the thumbnail. */
GST_START_TEST (test_users_agree)
{
  WsiSlide *s = wsi_slide_open (slide_path, NULL);
  gint64 w1, h1, w0, h0;
  guint8 *l0 = slidesrc_level (0, &w0, &h0), *l1 = slidesrc_level (1, &w1, &h1);
  guint8 *rgb, *box, *thumb;
  gint ow, oh, tw, th;
  WsiSlideReadStats st;

  fail_unless (s != NULL);
  fail_unless_equals_int (w0, W0);
  fail_unless_equals_int (h1, H0 / 2);

  /* slidesrc = reader at both levels */
  rgb = g_malloc ((gsize) W0 * H0 * 3);
  fail_unless (wsi_slide_read_region (s, 0, 0, 0, W0, H0, rgb, W0 * 3, NULL));
  fail_unless (memcmp (rgb, l0, (gsize) W0 * H0 * 3) == 0);
  fail_unless (wsi_slide_read_region (s, 1, 0, 0, w1, h1, rgb, w1 * 3, NULL));
  fail_unless (memcmp (rgb, l1, (gsize) w1 * h1 * 3) == 0);
  g_free (rgb);

  /* thumbnail 1/6 of level 0: level 1 read, 3 x 3 box averages of it */
  box = box_average (l1, w1, h1, 3, &ow, &oh);
  thumb = g_malloc ((gsize) ow * oh * 3);
  fail_unless (wsi_slide_read_thumbnail (s, 0, 0, W0, H0, 6.0, ow, oh,
          G_MAXUINT64, NULL, thumb, &st, NULL));
  fail_unless_equals_int (st.level, 1);
  fail_if (st.sampled);
  fail_unless (memcmp (box, thumb, (gsize) ow * oh * 3) == 0);
  g_free (thumb);
  g_free (box);

  /* a thumbnail finer than level 0 (an upsampled stitch): the level-0
   * pixel under each thumbnail pixel's centre */
  thumb = g_malloc (40 * 30 * 3);
  fail_unless (wsi_slide_read_thumbnail (s, 100, 240, 20, 15, 0.5, 40, 30,
          G_MAXUINT64, NULL, thumb, &st, NULL));
  fail_unless_equals_int (st.level, 0);
  for (gint v = 0; v < 30; v++)
    for (gint u = 0; u < 40; u++)
      fail_unless (memcmp (thumb + ((gsize) v * 40 + u) * 3,
              l0 + ((gsize) (240 + v / 2) * W0 + 100 + u / 2) * 3, 3) == 0,
          "upsampled thumbnail pixel %d,%d", u, v);
  g_free (thumb);

  /* overview: the smallest level's pixels, unaveraged */
  rgb = wsi_slide_read_overview (s, 1 << 20, NULL, &tw, &th, &st, NULL);
  fail_unless (rgb != NULL);
  fail_unless (tw == w1 && th == h1 && !st.sampled);
  fail_unless (memcmp (rgb, l1, (gsize) w1 * h1 * 3) == 0);
  g_free (rgb);
  /* a smaller budget: 32 x 32 windows, each a block of those pixels */
  rgb = wsi_slide_read_overview (s, 4 * 32 * 32, NULL, &tw, &th, &st, NULL);
  fail_unless (rgb != NULL && st.sampled);
  fail_unless (st.pixels_read <= 4 * 32 * 32 && tw * th <= 4 * 32 * 32);
  for (gint wy = 0; wy < th; wy += 32)
    for (gint wx = 0; wx < tw; wx += 32) {
      gboolean found = FALSE;
      for (gint64 y = 0; !found && y + 32 <= h1; y++)
        for (gint64 x = 0; !found && x + 32 <= w1; x++) {
          found = TRUE;
          for (gint r = 0; found && r < 32; r++)
            found = memcmp (rgb + ((gsize) (wy + r) * tw + wx) * 3,
                l1 + ((gsize) (y + r) * w1 + x) * 3, 32 * 3) == 0;
        }
      fail_unless (found, "window at %d,%d is not a block of level 1", wx,
          wy);
    }
  g_free (rgb);

  /* overlay of a level-1 stitch, factor 4: the same underlay */
  {
    StitchOverlay *o = stitch_overlay_new (w1, h1, 1, 1, 64);
    StitchOverlaySource src = { slide_path, 0, 0, 2.0, NULL, NULL };
    StitchOverlayStyle style = { 0.5, NULL, 0, NULL, 0 };
    gchar *ov = g_build_filename (tmp_dir, "overlay.png", NULL);
    guint8 *zeros = g_malloc0 (w1), *png;
    guint f = stitch_overlay_factor (w1, h1, 64);
    gint pw, ph, checked = 0;

    fail_unless_equals_int (f, 4);
    for (gint64 y = 0; y < h1; y++)
      stitch_overlay_push_row (o, y, zeros);
    fail_unless (stitch_overlay_write (o, ov, &style, &src, NULL));
    png = wsi_png_read_rgb8 (ov, &pw, &ph, 1 << 20, 0, NULL);
    fail_unless (png != NULL);
    box = box_average (l1, w1, h1, f, &ow, &oh);
    thumb = g_malloc ((gsize) ow * oh * 3);
    fail_unless_equals_int (pw, ow);
    fail_unless_equals_int (ph, oh);
    fail_unless (wsi_slide_read_thumbnail (s, 0, 0, W0, H0, f * 2.0, ow, oh,
            G_MAXUINT64, NULL, thumb, NULL, NULL));
    fail_unless (memcmp (box, thumb, (gsize) ow * oh * 3) == 0);
    /* below the legend (top-left corner) */
    for (gint v = oh / 2; v < oh; v++)
      for (gint u = 0; u < ow; u++, checked++)
        fail_unless (memcmp (png + ((gsize) v * ow + u) * 3,
                thumb + ((gsize) v * ow + u) * 3, 3) == 0,
            "overlay pixel %d,%d", u, v);
    fail_unless (checked > 500);
    g_free (png);
    g_free (box);
    g_free (thumb);
    g_free (zeros);
    g_free (ov);
    stitch_overlay_free (o);
  }
  g_free (l0);
  g_free (l1);
  wsi_slide_free (s);
}

GST_END_TEST;

static void
get_doubles (GstElement * el, const gchar * name, gdouble * v, guint n)
{
  GValue arr = G_VALUE_INIT;

  g_value_init (&arr, GST_TYPE_ARRAY);
  g_object_get_property (G_OBJECT (el), name, &arr);
  fail_unless_equals_int (gst_value_array_get_size (&arr), n);
  for (guint i = 0; i < n; i++)
    v[i] = g_value_get_double (gst_value_array_get_value (&arr, i));
  g_value_unset (&arr);
}

/* colornorm's thumbnail fit is the fit of the reader's overview: the
 * transparent areas count as the slide's background colour. */
GST_START_TEST (test_colornorm_fit)
{
  WsiSlide *s = wsi_slide_open (slide_path, NULL);
  GstHarness *hr = gst_harness_new ("colornorm");
  GstBuffer *buf = gst_buffer_new_allocate (NULL, 64 * 64 * 3, NULL);
  GstWsiTileMeta *m = gst_wsi_tile_meta_add (buf);
  WsiStainAcc acc;
  WsiLabStats want;
  gdouble got[3];
  gboolean fitted;
  guint8 *rgb;
  gint w, h;

  gst_buffer_memset (buf, 0, 200, 64 * 64 * 3);
  gst_wsi_tile_meta_set_slide (m, slide_path);
  gst_harness_set_src_caps_str (hr, "video/x-raw,format=RGB,width=64,"
      "height=64,framerate=5/1");
  g_object_set (hr->element, "mode", 4, "fit", 2, NULL);
  gst_harness_push (hr, buf);
  fail_unless_equals_int (gst_harness_buffers_received (hr), 1);
  g_object_get (hr->element, "source-fitted", &fitted, NULL);
  fail_unless (fitted);
  get_doubles (hr->element, "source-lab-mean", got, 3);

  rgb = wsi_slide_read_overview (s, 16 * 1024 * 1024, NULL, &w, &h, NULL,
      NULL);
  fail_unless (rgb != NULL);
  wsi_stain_acc_init (&acc, 0, 1);
  wsi_stain_acc_add (&acc, rgb, w, h, (gsize) w * 3, WSI_ACC_LAB);
  fail_unless (wsi_lab_stats_fit (&acc, &want));
  wsi_stain_acc_clear (&acc);
  for (gint i = 0; i < 3; i++)
    fail_unless (fabs (got[i] - want.mean[i]) < 1e-9, "L*a*b* %d: %f vs %f",
        i, got[i], want.mean[i]);
  g_free (rgb);
  gst_harness_teardown (hr);
  wsi_slide_free (s);
}

GST_END_TEST;

/* A single-level 65536^2 TIFF: bounded reads, counted. */
GST_START_TEST (test_bounded)
{
  gchar *path = g_build_filename (tmp_dir, "huge.tif", NULL);
  WsiSlideReadStats st;
  WsiSlide *s;
  guint8 *rgb, thumb[64 * 64 * 3];
  gint w, h;

  write_huge_tiff (path, 65536, 256);
  s = wsi_slide_open (path, NULL);
  if (!s) {
    g_print ("SKIP bounded reads: OpenSlide does not open the TIFF\n");
    g_free (path);
    return;
  }
  fail_unless_equals_int (wsi_slide_get_level_count (s), 1);

  rgb = wsi_slide_read_overview (s, 1 << 20, NULL, &w, &h, &st, NULL);
  fail_unless (rgb != NULL);
  fail_unless (st.sampled && st.pixels_read <= 1 << 20 && st.reads <= 1024,
      "%" G_GUINT64_FORMAT " pixels in %" G_GUINT64_FORMAT " reads",
      st.pixels_read, st.reads);
  fail_unless (rgb[0] == 200 && rgb[(gsize) w * h * 3 - 1] == 200);
  g_free (rgb);

  fail_unless (wsi_slide_read_thumbnail (s, 0, 0, 65536, 65536, 1024.0, 64,
          64, 1 << 20, NULL, thumb, &st, NULL));
  fail_unless (st.sampled && st.pixels_read <= 1 << 20,
      "%" G_GUINT64_FORMAT " pixels", st.pixels_read);
  fail_unless (thumb[0] == 200 && thumb[sizeof (thumb) - 1] == 200);
  wsi_slide_free (s);
  g_free (path);
}

GST_END_TEST;

static Suite *
slide_reader_suite (void)
{
  Suite *s = suite_create ("slide_reader");
  TCase *tc = tcase_create ("general");

  tcase_set_timeout (tc, 120);
  tcase_add_checked_fixture (tc, setup, teardown);
  tcase_add_test (tc, test_reader_rule);
  tcase_add_test (tc, test_users_agree);
  tcase_add_test (tc, test_colornorm_fit);
  tcase_add_test (tc, test_bounded);
  suite_add_tcase (s, tc);
  return s;
}

GST_CHECK_MAIN (slide_reader);
