/* stitchsink overlay-location: size, class colours at the right places,
 * legend, thumbnail from OpenSlide (compared with the test's own box average
 * of openslide_read_region), downsampled RGB for RGB streams. */
#include "stitchtest.h"

#include <math.h>
#include <openslide.h>

static gchar *tmp_dir;

static void
setup (void)
{
  tmp_dir = g_dir_make_tmp ("stitchsink-ov-XXXXXX", NULL);
  fail_unless (tmp_dir != NULL);
}

static void
teardown (void)
{
  remove_dir (tmp_dir);
  g_free (tmp_dir);
}

/* class 1: top right, class 2: bottom band, 0 elsewhere */
static guint
label_at (gint64 X, gint64 Y)
{
  if (Y >= 400)
    return 2;
  if (X >= 600 && Y < 300)
    return 1;
  return 0;
}

static void
label_pixel (const Grid * g, gint64 X, gint64 Y, gint c, gint r,
    gboolean valid, guint8 * px, gpointer data)
{
  px[0] = valid ? label_at (X, Y) : 0x55;
}

static void
label_pixel_small (const Grid * g, gint64 X, gint64 Y, gint c, gint r,
    gboolean valid, guint8 * px, gpointer data)
{
  px[0] = valid && Y >= 100 && Y < 150 ? 1 : 0;
}

/* class 1 on the left half of the sample slide */
static void
half_pixel (const Grid * g, gint64 X, gint64 Y, gint c, gint r,
    gboolean valid, guint8 * px, gpointer data)
{
  px[0] = valid && X < g->width / 2 ? 1 : 0;
}

static void
rgb_pixel (const Grid * g, gint64 X, gint64 Y, gint c, gint r,
    gboolean valid, guint8 * px, gpointer data)
{
  px[0] = valid ? (X * 5) & 0xff : 0;
  px[1] = valid ? (Y * 3) & 0xff : 0;
  px[2] = valid ? 200 : 0;
}

static void
stitch (const Grid * g, PixelFn fn, const gchar * out, const gchar * overlay,
    const gchar * first_prop, ...)
{
  GstElement *e = gst_element_factory_make ("stitchsink", NULL);
  GstBus *bus = gst_bus_new ();
  GstHarness *h;
  va_list args;
  GError *err;

  fail_unless (e != NULL);
  g_object_set (e, "location", out, "overlay-location", overlay, NULL);
  va_start (args, first_prop);
  if (first_prop)
    g_object_set_valist (G_OBJECT (e), first_prop, args);
  va_end (args);
  gst_element_set_bus (e, bus);
  h = gst_harness_new_with_element (e, "sink", NULL);
  gst_object_unref (e);
  harness_caps (h, g);
  fail_unless_equals_int (push_grid (h, g, fn, NULL, NULL), GST_FLOW_OK);
  fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));
  err = pop_error (bus);
  fail_unless (err == NULL, "error: %s", err ? err->message : "");
  gst_harness_teardown (h);
  gst_object_unref (bus);
  fail_unless_equals_int (count_partial_files (tmp_dir), 0);
}

static guint32
pixel_rgb (const TestImage * img, guint u, guint v)
{
  const guint8 *p = img->data + (gsize) v * img->row_bytes + u * 3;
  return ((guint32) p[0] << 16) | ((guint32) p[1] << 8) | p[2];
}

/* Counts pixels of colour @c (and dark "text" pixels) in a rectangle. */
static guint
count_colour (const TestImage * img, guint x0, guint y0, guint x1, guint y1,
    guint32 c, gboolean dark)
{
  guint u, v, n = 0;
  for (v = y0; v < MIN (y1, img->height); v++)
    for (u = x0; u < MIN (x1, img->width); u++) {
      guint32 p = pixel_rgb (img, u, v);
      if (dark ? (((p >> 16) & 0xff) < 60 && ((p >> 8) & 0xff) < 60
              && (p & 0xff) < 60) : p == c)
        n++;
    }
  return n;
}

GST_START_TEST (test_overlay_labels_alone)
{
  /* Slide path OpenSlide cannot open: the labels alone, opaque colours. */
  Grid g = { GST_VIDEO_FORMAT_GRAY8, 1000, 600, 128, 16, 0, 1.0, 0, 0,
    "/nonexistent/slide.png", FALSE
  };
  gchar *out = g_build_filename (tmp_dir, "labels.png", NULL);
  gchar *ov = g_build_filename (tmp_dir, "overlay.png", NULL);
  TestImage img;
  const guint32 c1 = 0x3cb44b, c2 = 0x4363d8;     /* default classes 1, 2 */

  stitch (&g, label_pixel, out, ov, "overlay-max-size", 256, "class-names",
      "background,tumour,stroma", NULL);
  fail_unless (read_png (out, &img));
  fail_unless_equals_int (img.data[100 * img.row_bytes + 700], 1);
  fail_unless_equals_int (img.data[500 * img.row_bytes + 10], 2);
  g_free (img.data);

  fail_unless (read_png (ov, &img));
  /* factor ceil(1000 / 256) = 4 */
  fail_unless_equals_int (img.width, 250);
  fail_unless_equals_int (img.height, 150);
  fail_unless_equals_int (img.channels, 3);
  fail_unless_equals_int (pixel_rgb (&img, 200, 30), c1);     /* (800,120) */
  fail_unless_equals_int (pixel_rgb (&img, 240, 70), c1);     /* (960,280) */
  fail_unless_equals_int (pixel_rgb (&img, 100, 140), c2);  /* (400,560) */
  fail_unless_equals_int (pixel_rgb (&img, 5, 110), c2);    /* (20,440) */
  fail_unless_equals_int (pixel_rgb (&img, 120, 60), 0xffffff);  /* class 0 */
  fail_unless_equals_int (pixel_rgb (&img, 140, 90), 0xffffff);
  /* legend in the top-left corner (no label there): swatches + text */
  fail_unless (count_colour (&img, 0, 0, 110, 60, c1, FALSE) >= 16,
      "no class-1 swatch in the legend");
  fail_unless (count_colour (&img, 0, 0, 110, 60, c2, FALSE) >= 16,
      "no class-2 swatch in the legend");
  fail_unless (count_colour (&img, 20, 0, 110, 60, 0, TRUE) >= 20,
      "no legend text");
  g_free (img.data);
  g_free (out);
  g_free (ov);
}

GST_END_TEST;

GST_START_TEST (test_overlay_rgb_stream)
{
  /* RGB stream: the overlay is the stitched image box-averaged. */
  Grid g = { GST_VIDEO_FORMAT_RGB, 300, 200, 64, 8, 0, 1.0, 0, 0, "", FALSE };
  gchar *out = g_build_filename (tmp_dir, "rgb.png", NULL);
  gchar *ov = g_build_filename (tmp_dir, "rgb-overlay.png", NULL);
  TestImage img;
  guint u, v;

  stitch (&g, rgb_pixel, out, ov, "overlay-max-size", 100, NULL);
  fail_unless (read_png (ov, &img));
  fail_unless_equals_int (img.width, 100);
  fail_unless_equals_int (img.height, 67);
  for (v = 0; v < 66; v += 13)
    for (u = 0; u < 100; u += 11) {
      gdouble r = 0, gg = 0;
      gint i, j;
      for (j = 0; j < 3; j++)
        for (i = 0; i < 3; i++) {
          r += ((u * 3 + i) * 5) & 0xff;
          gg += ((v * 3 + j) * 3) & 0xff;
        }
      guint32 p = pixel_rgb (&img, u, v);
      fail_unless (fabs (((p >> 16) & 0xff) - r / 9) <= 1 &&
          fabs (((p >> 8) & 0xff) - gg / 9) <= 1 && (p & 0xff) == 200,
          "overlay (%u,%u) = %06x, expected about %.0f,%.0f,200", u, v, p,
          r / 9, gg / 9);
    }
  g_free (img.data);
  g_free (out);
  g_free (ov);
}

GST_END_TEST;

/* Block average of the slide at level 0, composited over white. */
static void
slide_block (openslide_t * osr, gint64 x, gint64 y, gint w, gint h,
    gdouble rgb[3])
{
  guint32 *buf = g_new (guint32, w * h);
  gint i;

  openslide_read_region (osr, buf, x, y, 0, w, h);
  rgb[0] = rgb[1] = rgb[2] = 0;
  for (i = 0; i < w * h; i++) {
    guint32 p = buf[i];
    guint t = 255 - (p >> 24);
    rgb[0] += ((p >> 16) & 0xff) + t;
    rgb[1] += ((p >> 8) & 0xff) + t;
    rgb[2] += (p & 0xff) + t;
  }
  for (i = 0; i < 3; i++)
    rgb[i] /= w * h;
  g_free (buf);
}

GST_START_TEST (test_overlay_openslide_thumbnail)
{
  const gchar *slide = g_getenv ("WSISEG_SAMPLE_SLIDE");
  openslide_t *osr;
  int64_t sw, sh;
  Grid g = { GST_VIDEO_FORMAT_GRAY8, 0, 0, 256, 0, 0, 1.0, 0, 0, NULL, FALSE };
  gchar *out = g_build_filename (tmp_dir, "mask.png", NULL);
  gchar *ov = g_build_filename (tmp_dir, "thumb.png", NULL);
  TestImage img;
  guint u, v, checked = 0;
  const gdouble blue[3] = { 0, 0, 255 };

  if (!slide || !g_file_test (slide, G_FILE_TEST_EXISTS)) {
    g_print ("SKIP thumbnail check: sample slide missing\n");
    return;
  }
  osr = openslide_open (slide);
  fail_unless (osr != NULL && openslide_get_error (osr) == NULL);
  openslide_get_level0_dimensions (osr, &sw, &sh);
  g.width = (gint) sw;
  g.height = (gint) sh;
  g.slide = slide;

  stitch (&g, half_pixel, out, ov, "overlay-max-size", 512, "class-colors",
      "000000,0000ff", "overlay-opacity", 0.5, NULL);
  fail_unless (read_png (ov, &img));
  {
    guint f = (MAX (sw, sh) + 511) / 512;
    fail_unless_equals_int (img.width, (sw + f - 1) / f);
    fail_unless_equals_int (img.height, (sh + f - 1) / f);

    /* away from the legend (top-left) and the class edge */
    for (v = img.height / 4; v + 1 < img.height; v += 37)
      for (u = 3; u + 1 < img.width; u += 29) {
        gint64 x0 = (gint64) u * f, y0 = (gint64) v * f;
        gdouble ref[3];
        guint32 p = pixel_rgb (&img, u, v);
        gdouble got[3] = { (p >> 16) & 0xff, (p >> 8) & 0xff, p & 0xff };
        gboolean in_class = x0 + f <= sw / 2;
        gint c;
        if (!in_class && x0 < sw / 2)
          continue;
        slide_block (osr, x0, y0, f, f, ref);
        for (c = 0; c < 3; c++) {
          gdouble e = in_class ? 0.5 * ref[c] + 0.5 * blue[c] : ref[c];
          fail_unless (fabs (got[c] - e) <= 3.0,
              "overlay (%u,%u) channel %d = %.0f, expected %.1f (%s)", u, v,
              c, got[c], e, in_class ? "blended" : "thumbnail");
        }
        checked++;
      }
  }
  fail_unless (checked > 20);
  /* legend names the unnamed class 1 */
  fail_unless (count_colour (&img, 0, 0, 120, 60, 0x0000ff, FALSE) >= 16);
  g_free (img.data);
  openslide_close (osr);
  g_free (out);
  g_free (ov);
}

GST_END_TEST;

GST_START_TEST (test_overlay_unknown_height)
{
  /* Live stream (height unknown until EOS): the overlay is made from the
   * spooled rows at EOS. 140 x 173 at max 50 px: factor 4, 35 x 44. */
  Grid g = { GST_VIDEO_FORMAT_GRAY8, 140, 173, 32, 8, 0, 1.0, 0, 0, "", TRUE };
  gchar *out = g_build_filename (tmp_dir, "live.png", NULL);
  gchar *ov = g_build_filename (tmp_dir, "live-overlay.png", NULL);
  TestImage img;

  stitch (&g, label_pixel_small, out, ov, "overlay-max-size", 50, NULL);
  fail_unless (read_png (out, &img));
  fail_unless_equals_int (img.height, 173);
  g_free (img.data);
  fail_unless (read_png (ov, &img));
  fail_unless_equals_int (img.width, 35);
  fail_unless_equals_int (img.height, 44);
  /* class 1 on rows [100, 150): overlay rows 25..36 sample rows 102..146;
   * the legend box covers the top rows only */
  fail_unless_equals_int (pixel_rgb (&img, 30, 25), 0x3cb44b);
  fail_unless_equals_int (pixel_rgb (&img, 5, 36), 0x3cb44b);
  fail_unless_equals_int (pixel_rgb (&img, 30, 37), 0xffffff);
  fail_unless_equals_int (pixel_rgb (&img, 30, 43), 0xffffff);
  g_free (img.data);
  g_free (out);
  g_free (ov);
}

GST_END_TEST;

static Suite *
stitchsink_overlay_suite (void)
{
  Suite *s = suite_create ("stitchsink-overlay");
  TCase *tc = tcase_create ("overlay");

  tcase_add_checked_fixture (tc, setup, teardown);
  tcase_set_timeout (tc, 60);
  tcase_add_test (tc, test_overlay_labels_alone);
  tcase_add_test (tc, test_overlay_rgb_stream);
  tcase_add_test (tc, test_overlay_openslide_thumbnail);
  tcase_add_test (tc, test_overlay_unknown_height);
  suite_add_tcase (s, tc);
  return s;
}

GST_CHECK_MAIN (stitchsink_overlay);
