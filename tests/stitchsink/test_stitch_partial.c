/* stitchsink, issue 9: EOS before the whole grid (outputs written and marked
 * partial), grid positions skipped upstream, stale temp files of killed
 * runs, optional outputs failing without costing the mask, strided input
 * (GstVideoMeta, RGB rows 4-byte aligned at odd widths). */
#include "stitchtest.h"

#include <fcntl.h>
#include <sys/file.h>
#include <utime.h>
#include <unistd.h>

static gchar *tmp_dir;

static void
setup (void)
{
  tmp_dir = g_dir_make_tmp ("stitchpartial-XXXXXX", NULL);
  fail_unless (tmp_dir != NULL);
}

static void
teardown (void)
{
  remove_dir (tmp_dir);
  g_free (tmp_dir);
}

/* Label 1 inside the region, 0 in the padding. */
static void
one_pixel (const Grid * g, gint64 X, gint64 Y, gint c, gint r,
    gboolean valid, guint8 * px, gpointer data)
{
  memset (px, valid ? 1 : 0, format_bpp (g->format));
}

/* Four 5 x 5 squares of label 2 in the top-left 40 x 40 corner (else 0),
 * label 1 everywhere else: one big region. */
static void
squares_pixel (const Grid * g, gint64 X, gint64 Y, gint c, gint r,
    gboolean valid, guint8 * px, gpointer data)
{
  guint8 v = 0;
  if (valid && X < 40 && Y < 40)
    v = (X % 20 < 5 && Y % 20 < 5) ? 2 : 0;
  else if (valid)
    v = 1;
  *px = v;
}

/* tEXt value of @key (before or after the image data), or NULL. */
static gchar *
read_png_text (const gchar * path, const gchar * key)
{
  FILE *fp = fopen (path, "rb");
  png_structp png;
  png_infop info, end;
  png_textp text;
  gint n, i;
  guint32 y;
  guint8 *row;
  gchar *value = NULL;

  fail_unless (fp != NULL);
  png = png_create_read_struct (PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  info = png_create_info_struct (png);
  end = png_create_info_struct (png);
  if (setjmp (png_jmpbuf (png)))
    fail ("unreadable PNG %s", path);
  png_init_io (png, fp);
  png_read_info (png, info);
  row = g_malloc (png_get_rowbytes (png, info));
  for (y = 0; y < png_get_image_height (png, info); y++)
    png_read_row (png, row, NULL);
  g_free (row);
  png_read_end (png, end);
  if (png_get_text (png, info, &text, &n) > 0)
    for (i = 0; i < n && !value; i++)
      if (!strcmp (text[i].key, key))
        value = g_strdup (text[i].text);
  if (png_get_text (png, end, &text, &n) > 0)
    for (i = 0; i < n && !value; i++)
      if (!strcmp (text[i].key, key))
        value = g_strdup (text[i].text);
  png_destroy_read_struct (&png, &info, &end);
  fclose (fp);
  return value;
}

/* Everything posted on @bus: errors, warnings (texts joined) and the final
 * stitchsink-progress message. */
typedef struct
{
  gint errors;
  GString *warnings;
  gint n_warnings;
  gboolean has_final, partial;
  gdouble fraction;
} BusScan;

static void
scan_bus (GstBus * bus, BusScan * scan)
{
  GstMessage *msg;

  memset (scan, 0, sizeof (*scan));
  scan->warnings = g_string_new (NULL);
  while ((msg = gst_bus_pop (bus))) {
    const GstStructure *s = gst_message_get_structure (msg);
    GError *err = NULL;
    gboolean final = FALSE;

    if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ERROR) {
      gst_message_parse_error (msg, &err, NULL);
      GST_INFO ("error: %s", err->message);
      scan->errors++;
    } else if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_WARNING) {
      gst_message_parse_warning (msg, &err, NULL);
      g_string_append_printf (scan->warnings, "%s\n", err->message);
      scan->n_warnings++;
    } else if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ELEMENT && s
        && gst_structure_has_name (s, "stitchsink-progress")
        && gst_structure_get_boolean (s, "final", &final) && final) {
      fail_unless (gst_structure_get_boolean (s, "partial", &scan->partial));
      fail_unless (gst_structure_get_double (s, "fraction",
              &scan->fraction));
      scan->has_final = TRUE;
    }
    g_clear_error (&err);
    gst_message_unref (msg);
  }
}

static void
scan_free (BusScan * scan)
{
  g_string_free (scan->warnings, TRUE);
}

static const Grid labels = { GST_VIDEO_FORMAT_GRAY8, 100, 90, 32, 8, 0, 1.0,
  0, 0, "/slides/p.svs", FALSE
};

enum
{
  SKIP_REST = 1,                /* wsi-tile-skipped for the rows not sent */
  MEASURED = 2,                 /* tissue_fraction set (patchify upstream) */
  INCOMPLETE = 4,               /* patchify's wsi-region-incomplete */
};

/* Grid rows [0, @rows) pushed, then EOS. */
static void
run_rows (const Grid * g, const gchar * path, const gchar * geojson,
    gint rows, gint flags, BusScan * scan)
{
  GstBus *bus;
  gchar *overlay = g_strconcat (path, ".overlay.png", NULL);
  GstHarness *h = stitch_harness (&bus, "location", path, "geojson-location",
      geojson, "overlay-location", overlay, NULL);
  gint c, r;

  g_free (overlay);
  harness_caps (h, g);
  for (r = 0; r < rows; r++)
    for (c = 0; c < grid_cols (g); c++) {
      GstBuffer *b = make_patch (g, c, r, one_pixel, NULL);
      if (flags & MEASURED)
        gst_buffer_get_wsi_tile_meta (b)->tissue_fraction = 0.5;
      fail_unless_equals_int (gst_harness_push (h, b), GST_FLOW_OK);
    }
  if (flags & INCOMPLETE)
    fail_unless (gst_harness_push_event (h,
            gst_event_new_custom (GST_EVENT_CUSTOM_DOWNSTREAM,
                gst_structure_new ("wsi-region-incomplete", "slide",
                    G_TYPE_STRING, g->slide, "region-x", G_TYPE_INT64,
                    g->region_x, "region-y", G_TYPE_INT64, g->region_y,
                    "region-width", G_TYPE_INT64, (gint64) g->width,
                    "region-height", G_TYPE_INT64, (gint64) g->height,
                    NULL))));
  /* what a producer that drops background patches announces instead */
  for (r = rows; (flags & SKIP_REST) && r < grid_rows (g); r++)
    for (c = 0; c < grid_cols (g); c++)
      fail_unless (gst_harness_push_event (h,
              gst_event_new_custom (GST_EVENT_CUSTOM_DOWNSTREAM,
                  gst_structure_new ("wsi-tile-skipped", "col", G_TYPE_INT, c,
                      "row", G_TYPE_INT, r, NULL))));
  fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));
  gst_harness_teardown (h);
  scan_bus (bus, scan);
  gst_object_unref (bus);
  fail_unless_equals_int (scan->errors, 0);
}

GST_START_TEST (test_partial_eos)
{
  gchar *path = g_build_filename (tmp_dir, "p.png", NULL);
  gchar *geojson = g_build_filename (tmp_dir, "p.geojson", NULL);
  gchar *text, *json, *overlay;
  BusScan scan;
  TestImage img;

  /* 5 x 4 grid; EOS after 2 rows (as gst-launch -e on SIGINT) */
  run_rows (&labels, path, geojson, 2, 0, &scan);
  fail_unless (scan.has_final && scan.partial);
  fail_unless_equals_float (scan.fraction, 10.0 / 20.0);
  fail_unless_equals_int (scan.n_warnings, 1);
  fail_unless (strstr (scan.warnings->str, "partial") != NULL);
  scan_free (&scan);
  /* what arrived is written (rows 0..43 label 1), the rest background */
  fail_unless (read_png (path, &img));
  fail_unless_equals_int (img.height, 90);
  fail_unless_equals_int (img.data[10 * img.row_bytes + 10], 1);
  fail_unless_equals_int (img.data[80 * img.row_bytes + 10], 0);
  g_free (img.data);
  text = read_png_text (path, "wsiseg-partial");
  fail_unless (text != NULL, "no wsiseg-partial tEXt chunk");
  fail_unless (strstr (text, "10 of 20") != NULL, "%s", text);
  g_free (text);
  /* the overlay too (a chunk inserted into cairo's PNG, CRC checked by
   * libpng) */
  overlay = g_strconcat (path, ".overlay.png", NULL);
  text = read_png_text (overlay, "wsiseg-partial");
  fail_unless (text != NULL && strstr (text, "10 of 20"), "overlay");
  g_free (text);
  fail_unless (g_file_get_contents (geojson, &json, NULL, NULL));
  fail_unless (g_str_has_suffix (g_strstrip (json), "],\"partial\":true}"),
      "%s", json);
  g_free (json);
  fail_unless_equals_int (count_partial_files (tmp_dir), 0);

  /* the whole grid: nothing marked */
  run_rows (&labels, path, geojson, 4, 0, &scan);
  fail_unless (scan.has_final && !scan.partial);
  fail_unless_equals_float (scan.fraction, 1.0);
  fail_unless_equals_int (scan.n_warnings, 0);
  scan_free (&scan);
  fail_unless (read_png_text (path, "wsiseg-partial") == NULL);
  fail_unless (read_png_text (overlay, "wsiseg-partial") == NULL);
  fail_unless (g_file_get_contents (geojson, &json, NULL, NULL));
  fail_unless (strstr (json, "partial") == NULL);
  g_free (json);

  /* positions announced as skipped count as covered */
  run_rows (&labels, path, geojson, 2, SKIP_REST, &scan);
  fail_unless (scan.has_final && !scan.partial);
  scan_free (&scan);
  fail_unless (read_png_text (path, "wsiseg-partial") == NULL);

  /* patches measured by patchify (it may drop background ones): partial
   * only when it says the region is incomplete */
  run_rows (&labels, path, geojson, 2, MEASURED, &scan);
  fail_unless (scan.has_final && !scan.partial);
  scan_free (&scan);
  fail_unless (read_png_text (path, "wsiseg-partial") == NULL);
  run_rows (&labels, path, geojson, 2, MEASURED | INCOMPLETE, &scan);
  fail_unless (scan.has_final && scan.partial);
  fail_unless_equals_float (scan.fraction, 0.5);
  scan_free (&scan);
  text = read_png_text (path, "wsiseg-partial");
  fail_unless (text != NULL);
  g_free (text);
  g_free (path);
  g_free (geojson);
  g_free (overlay);
}

GST_END_TEST;

/* A temp file name next to @path, modified @age_s seconds ago. */
static gchar *
make_temp (const gchar * path, const gchar * suffix, gint age_s)
{
  gchar *t = g_strdup_printf ("%s.partial-%s", path, suffix);
  struct utimbuf ut;

  fail_unless (g_file_set_contents (t, "killed run", -1, NULL));
  ut.actime = ut.modtime = time (NULL) - age_s;
  fail_unless (utime (t, &ut) == 0);
  return t;
}

GST_START_TEST (test_stale_temp_files)
{
  gchar *path = g_build_filename (tmp_dir, "s.png", NULL);
  gchar *other = g_build_filename (tmp_dir, "other.png", NULL);
  gchar *stale = make_temp (path, "aB3dE9", 3600);
  gchar *held = make_temp (path, "hELd42", 3600);
  gchar *fresh = make_temp (path, "fr3sh1", 0);
  gchar *foreign = make_temp (other, "aB3dE9", 3600);
  gchar *odd = make_temp (path, "toolongname", 3600);
  BusScan scan;
  gint fd = open (held, O_RDONLY);

  /* a writer that is still running holds its temp file locked */
  fail_unless (fd >= 0 && flock (fd, LOCK_EX) == 0);
  run_rows (&labels, path, NULL, 4, 0, &scan);
  scan_free (&scan);
  fail_unless (g_file_test (path, G_FILE_TEST_EXISTS));
  fail_if (g_file_test (stale, G_FILE_TEST_EXISTS), "stale temp kept");
  fail_unless (g_file_test (held, G_FILE_TEST_EXISTS), "live writer's file");
  fail_unless (g_file_test (fresh, G_FILE_TEST_EXISTS), "fresh temp removed");
  fail_unless (g_file_test (foreign, G_FILE_TEST_EXISTS));
  fail_unless (g_file_test (odd, G_FILE_TEST_EXISTS));
  close (fd);
  g_free (path);
  g_free (other);
  g_free (stale);
  g_free (held);
  g_free (fresh);
  g_free (foreign);
  g_free (odd);
}

GST_END_TEST;

GST_START_TEST (test_optional_outputs_fail)
{
  /* One region too large to trace: the GeoJSON skips it with a warning,
   * the mask PNG and the other features are kept. */
  Grid g = labels;
  gchar *path = g_build_filename (tmp_dir, "m.png", NULL);
  gchar *geojson = g_build_filename (tmp_dir, "m.geojson", NULL);
  gchar *overlay = g_build_filename (tmp_dir, "missing-dir", "o.png", NULL);
  gchar *json;
  GstBus *bus;
  GstHarness *h;
  TestImage img;
  BusScan scan;
  guint n = 0;
  const gchar *p;

  g_setenv ("STITCHSINK_MAX_TRACE_PIXELS", "400", TRUE);
  h = stitch_harness (&bus, "location", path, "geojson-location", geojson,
      "geojson-min-area", (guint64) 1, "overlay-location", overlay, NULL);
  harness_caps (h, &g);
  fail_unless_equals_int (push_grid (h, &g, squares_pixel, NULL, NULL),
      GST_FLOW_OK);
  fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));
  g_unsetenv ("STITCHSINK_MAX_TRACE_PIXELS");
  gst_harness_teardown (h);
  scan_bus (bus, &scan);
  gst_object_unref (bus);
  fail_unless_equals_int (scan.errors, 0);
  fail_unless (strstr (scan.warnings->str, "too large to trace") != NULL,
      "%s", scan.warnings->str);
  fail_unless (strstr (scan.warnings->str, "overlay") != NULL);
  scan_free (&scan);

  fail_unless (read_png (path, &img), "mask PNG lost");
  fail_unless_equals_int (img.data[2 * img.row_bytes + 2], 2);
  fail_unless_equals_int (img.data[50 * img.row_bytes + 50], 1);
  g_free (img.data);
  fail_unless (g_file_get_contents (geojson, &json, NULL, NULL),
      "GeoJSON lost");
  for (p = json; (p = strstr (p, "\"Feature\"")); p++)
    n++;
  /* the 5 x 5 squares (label 2, 25 px) are there; the big label-1 area
   * (bounding box > 400 px) is not */
  fail_unless_equals_int (n, 4);
  fail_unless (strstr (json, "\"class 1\"") == NULL);
  fail_unless (strstr (json, "\"class 2\"") != NULL);
  g_free (json);
  fail_unless_equals_int (count_partial_files (tmp_dir), 0);
  g_free (path);
  g_free (geojson);
  g_free (overlay);
}

GST_END_TEST;

GST_START_TEST (test_overlay_fails_warns)
{
  gchar *path = g_build_filename (tmp_dir, "k.png", NULL);
  gchar *overlay = g_build_filename (tmp_dir, "no-such-dir", "o.png", NULL);
  GstBus *bus;
  GstHarness *h = stitch_harness (&bus, "location", path, "overlay-location",
      overlay, NULL);
  TestImage img;
  BusScan scan;

  harness_caps (h, &labels);
  fail_unless_equals_int (push_grid (h, &labels, one_pixel, NULL, NULL),
      GST_FLOW_OK);
  fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));
  gst_harness_teardown (h);
  scan_bus (bus, &scan);
  gst_object_unref (bus);
  fail_unless_equals_int (scan.errors, 0);
  fail_unless_equals_int (scan.n_warnings, 1);
  fail_unless (strstr (scan.warnings->str, "overlay") != NULL);
  scan_free (&scan);
  fail_unless (read_png (path, &img));
  g_free (img.data);
  g_free (path);
  g_free (overlay);
}

GST_END_TEST;

static void
no_pixel (const Grid * g, gint64 X, gint64 Y, gint c, gint r,
    gboolean valid, guint8 * px, gpointer data)
{
}

/* RGB patch @P x @P of region pixel values, rows @stride bytes apart; with
 * a GstVideoMeta when @meta. */
static GstBuffer *
strided_patch (const Grid * g, gint c, gint r, gint stride, gboolean meta)
{
  GstBuffer *ref = make_patch (g, c, r, no_pixel, NULL), *buf;
  GstWsiTileMeta *m = gst_buffer_get_wsi_tile_meta (ref);
  gint P = g->patch;
  GstMapInfo map;
  gsize offset[4] = { 0 };
  gint strides[4] = { stride };

  buf = gst_buffer_new_allocate (NULL, (gsize) stride * P, NULL);
  gst_buffer_map (buf, &map, GST_MAP_WRITE);
  memset (map.data, 0xAB, map.size);
  for (gint j = 0; j < P; j++)
    for (gint i = 0; i < P; i++) {
      gint64 X = m->x + i, Y = m->y + j;
      guint8 *px = map.data + (gsize) j * stride + i * 3;
      px[0] = (guint8) (X * 3 + Y);
      px[1] = (guint8) (Y * 5);
      px[2] = (guint8) (X ^ Y);
    }
  gst_buffer_unmap (buf, &map);
  gst_buffer_copy_into (buf, ref, GST_BUFFER_COPY_META, 0, -1);
  if (meta)
    gst_buffer_add_video_meta_full (buf, GST_VIDEO_FRAME_FLAG_NONE,
        GST_VIDEO_FORMAT_RGB, P, P, 1, offset, strides);
  gst_buffer_unref (ref);
  return buf;
}

GST_START_TEST (test_strided_rgb)
{
  /* patch 250 (not a multiple of 4): caps stride 752; and a GstVideoMeta
   * with stride 800 */
  Grid g = { GST_VIDEO_FORMAT_RGB, 600, 300, 250, 10, 0, 1.0, 0, 0, "s",
    FALSE
  };
  gint pass;

  for (pass = 0; pass < 2; pass++) {
    gchar *path = g_build_filename (tmp_dir, pass ? "meta.png" : "caps.png",
        NULL);
    GstBus *bus;
    GstHarness *h = stitch_harness (&bus, "location", path, NULL);
    TestImage img;
    gint c, r;

    harness_caps (h, &g);
    for (r = 0; r < grid_rows (&g); r++)
      for (c = 0; c < grid_cols (&g); c++) {
        GstBuffer *b = pass == 0 ?
            strided_patch (&g, c, r, GST_ROUND_UP_4 (250 * 3), FALSE) :
            strided_patch (&g, c, r, 800, TRUE);
        fail_unless_equals_int (gst_harness_push (h, b), GST_FLOW_OK);
      }
    fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));
    fail_unless (pop_error (bus) == NULL);
    gst_harness_teardown (h);
    gst_object_unref (bus);
    fail_unless (read_png (path, &img));
    fail_unless_equals_int (img.width, 600);
    for (guint32 Y = 0; Y < img.height; Y++)
      for (guint32 X = 0; X < img.width; X++) {
        const guint8 *px = img.data + Y * img.row_bytes + X * 3;
        fail_unless (px[0] == (guint8) (X * 3 + Y) && px[1] == (guint8) (Y * 5)
            && px[2] == (guint8) (X ^ Y), "pass %d pixel %u,%u", pass, X, Y);
      }
    g_free (img.data);
    g_free (path);
  }
}

GST_END_TEST;

GST_START_TEST (test_short_buffer_error)
{
  /* tightly packed rows (3 * 250) under RGB caps: a clear STREAM FORMAT
   * error naming the sizes, no file */
  Grid g = { GST_VIDEO_FORMAT_RGB, 300, 300, 250, 10, 0, 1.0, 0, 0, "s",
    FALSE
  };
  gchar *path = g_build_filename (tmp_dir, "short.png", NULL);
  GstBus *bus;
  GstHarness *h = stitch_harness (&bus, "location", path, NULL);
  GError *err;

  harness_caps (h, &g);
  fail_unless_equals_int (gst_harness_push (h, strided_patch (&g, 0, 0, 750,
              FALSE)), GST_FLOW_ERROR);
  err = pop_error (bus);
  fail_unless (err != NULL);
  fail_unless (err->domain == GST_STREAM_ERROR
      && err->code == GST_STREAM_ERROR_FORMAT, "%s", err->message);
  fail_unless (strstr (err->message, "stride 752") != NULL, "%s",
      err->message);
  g_error_free (err);
  gst_harness_teardown (h);
  gst_object_unref (bus);
  fail_if (g_file_test (path, G_FILE_TEST_EXISTS));
  fail_unless_equals_int (count_partial_files (tmp_dir), 0);
  g_free (path);
}

GST_END_TEST;

static Suite *
stitchsink_partial_suite (void)
{
  Suite *s = suite_create ("stitchsink-partial");
  TCase *tc = tcase_create ("partial");

  tcase_add_checked_fixture (tc, setup, teardown);
  tcase_set_timeout (tc, 60);
  tcase_add_test (tc, test_partial_eos);
  tcase_add_test (tc, test_stale_temp_files);
  tcase_add_test (tc, test_optional_outputs_fail);
  tcase_add_test (tc, test_overlay_fails_warns);
  tcase_add_test (tc, test_strided_rgb);
  tcase_add_test (tc, test_short_buffer_error);
  suite_add_tcase (s, tc);
  return s;
}

GST_CHECK_MAIN (stitchsink_partial);
