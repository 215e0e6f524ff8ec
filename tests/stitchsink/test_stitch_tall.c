/* stitchsink memory: a tall 4000 x 40000 GRAY8 region (160 MB as a whole
 * image) stitched from 256 px patches with overlap 32 and missing patches.
 * The band must stay within one patch height (max-band-rows), the process
 * peak RSS well below the image size, and the PNG (read back row by row)
 * must equal the expected image. */
#include "stitchtest.h"

#define W 4000
#define H 40000
#define P 256
#define O 32

static guint8
value_at (gint64 X, gint64 Y)
{
  return (guint8) ((X + 3 * Y + (Y >> 8)) & 0xff);
}

static gboolean
dropped (gint c, gint r)
{
  return (c * 13 + r * 7) % 17 == 0;
}

static void
tall_pixel (const Grid * g, gint64 X, gint64 Y, gint c, gint r,
    gboolean valid, guint8 * px, gpointer data)
{
  px[0] = valid ? value_at (X, Y) : 0xaa;
}

static guint64
peak_rss_kb (void)
{
  gchar *status = NULL, *line;
  guint64 kb = 0;

  if (g_file_get_contents ("/proc/self/status", &status, NULL, NULL)
      && (line = strstr (status, "VmHWM:")))
    kb = g_ascii_strtoull (line + 6, NULL, 10);
  g_free (status);
  return kb;
}

GST_START_TEST (test_tall_region_bounded_band)
{
  Grid g = { GST_VIDEO_FORMAT_GRAY8, W, H, P, O, 0, 1.0, 0, 0, "tall", FALSE };
  gchar *dir = g_dir_make_tmp ("stitchsink-tall-XXXXXX", NULL);
  gchar *path = g_build_filename (dir, "tall.png", NULL);
  GstBus *bus;
  GstHarness *h = stitch_harness (&bus, "location", path, "compression-level",
      1, NULL);
  guint64 band_rows = 0, rss_kb;
  FILE *fp;
  png_structp png;
  png_infop info;
  guint8 *row;
  gint S = P - O;
  guint32 x, y;

  harness_caps (h, &g);
  fail_unless_equals_int (push_grid (h, &g, tall_pixel, NULL, dropped),
      GST_FLOW_OK);
  fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));
  fail_unless (pop_error (bus) == NULL);
  g_object_get (h->element, "max-band-rows", &band_rows, NULL);
  gst_harness_teardown (h);
  gst_object_unref (bus);
  rss_kb = peak_rss_kb ();
  g_print ("region %dx%d: peak band %" G_GUINT64_FORMAT " rows (%"
      G_GUINT64_FORMAT " KiB), process peak RSS %" G_GUINT64_FORMAT " KiB\n",
      W, H, band_rows, band_rows * W / 1024, rss_kb);
  fail_unless (band_rows > 0 && band_rows <= P,
      "band grew to %" G_GUINT64_FORMAT " rows (patch height %d)", band_rows,
      P);
  /* the whole image would be 156 MiB */
  fail_unless (rss_kb == 0 || rss_kb < 80 * 1024,
      "peak RSS %" G_GUINT64_FORMAT " KiB", rss_kb);

  /* streaming read-back */
  fp = fopen (path, "rb");
  fail_unless (fp != NULL);
  png = png_create_read_struct (PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  info = png_create_info_struct (png);
  fail_if (setjmp (png_jmpbuf (png)), "PNG decoding failed");
  png_init_io (png, fp);
  png_set_user_limits (png, 0x7fffffff, 0x7fffffff);
  png_read_info (png, info);
  fail_unless_equals_int (png_get_image_width (png, info), W);
  fail_unless_equals_int (png_get_image_height (png, info), H);
  fail_unless_equals_int (png_get_bit_depth (png, info), 8);
  row = g_malloc (W);
  for (y = 0; y < H; y++) {
    png_read_row (png, row, NULL);
    for (x = 0; x < W; x++) {
      guint8 e = dropped (x / S, y / S) ? 0 : value_at (x, y);
      if (row[x] != e)
        fail ("pixel (%u,%u) = %u expected %u", x, y, row[x], e);
    }
  }
  g_free (row);
  png_destroy_read_struct (&png, &info, NULL);
  fclose (fp);

  remove_dir (dir);
  g_free (dir);
  g_free (path);
}

GST_END_TEST;

static Suite *
stitchsink_tall_suite (void)
{
  Suite *s = suite_create ("stitchsink-tall");
  TCase *tc = tcase_create ("memory");

  tcase_set_timeout (tc, 120);
  tcase_add_test (tc, test_tall_region_bounded_band);
  suite_add_tcase (s, tc);
  return s;
}

GST_CHECK_MAIN (stitchsink_tall);
