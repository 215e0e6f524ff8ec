/* stitchsink bad input: errors a user can act on, never a crash, and
 * nothing half-written under the final name (atomic writes). */
#include "stitchtest.h"

static gchar *tmp_dir;

static void
setup (void)
{
  tmp_dir = g_dir_make_tmp ("stitchsink-err-XXXXXX", NULL);
  fail_unless (tmp_dir != NULL);
}

static void
teardown (void)
{
  remove_dir (tmp_dir);
  g_free (tmp_dir);
}

static void
flat_pixel (const Grid * g, gint64 X, gint64 Y, gint c, gint r,
    gboolean valid, guint8 * px, gpointer data)
{
  memset (px, valid ? 100 : 7, format_bpp (g->format));
}

static const Grid small = { GST_VIDEO_FORMAT_GRAY8, 100, 90, 32, 8, 0, 1.0,
  0, 0, "/slides/one.svs", FALSE
};

/* The old file at @path must be intact and no temp file left. */
static void
check_untouched (const gchar * path, const gchar * old)
{
  gchar *contents = NULL;

  fail_unless (g_file_get_contents (path, &contents, NULL, NULL));
  fail_unless_equals_string (contents, old);
  g_free (contents);
  fail_unless_equals_int (count_partial_files (tmp_dir), 0);
}

static void
expect_error (GstBus * bus, GQuark domain, gint code, const gchar * needle)
{
  GError *err = pop_error (bus);

  fail_unless (err != NULL, "expected an error");
  fail_unless (err->domain == domain && err->code == code,
      "unexpected error %s/%d: %s", g_quark_to_string (err->domain),
      err->code, err->message);
  if (needle)
    fail_unless (strstr (err->message, needle) != NULL,
        "'%s' not in error message '%s'", needle, err->message);
  g_error_free (err);
}

GST_START_TEST (test_no_meta)
{
  gchar *path = g_build_filename (tmp_dir, "out.png", NULL);
  GstBus *bus;
  GstHarness *h = stitch_harness (&bus, "location", path, NULL);

  g_file_set_contents (path, "old", -1, NULL);
  harness_caps (h, &small);
  /* Some good patches, then one without meta, mid-stream. */
  fail_unless_equals_int (gst_harness_push (h, make_patch (&small, 0, 0,
              flat_pixel, NULL)), GST_FLOW_OK);
  fail_unless_equals_int (gst_harness_push (h, make_patch (&small, 1, 0,
              flat_pixel, NULL)), GST_FLOW_OK);
  fail_unless_equals_int (count_partial_files (tmp_dir), 1);
  fail_unless_equals_int (gst_harness_push (h,
          gst_buffer_new_allocate (NULL, 32 * 32, NULL)), GST_FLOW_ERROR);
  expect_error (bus, GST_STREAM_ERROR, GST_STREAM_ERROR_FORMAT,
      "buffer has no tile metadata; put slidesrc or patchify upstream");
  gst_harness_teardown (h);
  gst_object_unref (bus);
  check_untouched (path, "old");
  g_free (path);
}

GST_END_TEST;

GST_START_TEST (test_unwritable_location)
{
  gchar *path = g_build_filename (tmp_dir, "no-such-dir", "out.png", NULL);
  GstBus *bus;
  GstHarness *h = stitch_harness (&bus, "location", path, NULL);

  harness_caps (h, &small);
  fail_unless_equals_int (gst_harness_push (h, make_patch (&small, 0, 0,
              flat_pixel, NULL)), GST_FLOW_ERROR);
  expect_error (bus, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_OPEN_WRITE, path);
  gst_harness_teardown (h);
  gst_object_unref (bus);
  g_free (path);
}

GST_END_TEST;

GST_START_TEST (test_stop_before_eos)
{
  /* Pipeline stopped mid-stream: temp removed, old file kept. */
  gchar *path = g_build_filename (tmp_dir, "out.png", NULL);
  gchar *overlay = g_build_filename (tmp_dir, "overlay.png", NULL);
  GstBus *bus;
  GstHarness *h = stitch_harness (&bus, "location", path, "overlay-location",
      overlay, NULL);

  g_file_set_contents (path, "previous run", -1, NULL);
  harness_caps (h, &small);
  fail_unless_equals_int (gst_harness_push (h, make_patch (&small, 0, 0,
              flat_pixel, NULL)), GST_FLOW_OK);
  fail_unless_equals_int (gst_harness_push (h, make_patch (&small, 0, 1,
              flat_pixel, NULL)), GST_FLOW_OK);
  gst_harness_teardown (h);
  gst_object_unref (bus);
  check_untouched (path, "previous run");
  fail_unless (!g_file_test (overlay, G_FILE_TEST_EXISTS));
  g_free (path);
  g_free (overlay);
}

GST_END_TEST;

GST_START_TEST (test_level_change)
{
  gchar *path = g_build_filename (tmp_dir, "out.png", NULL);
  GstBus *bus;
  GstHarness *h = stitch_harness (&bus, "location", path, NULL);
  Grid other = small;
  GstBuffer *buf;
  GstWsiTileMeta *m;

  harness_caps (h, &small);
  fail_unless_equals_int (gst_harness_push (h, make_patch (&small, 0, 0,
              flat_pixel, NULL)), GST_FLOW_OK);
  other.level = 1;
  other.downsample = 2.0;
  other.width = 50;
  other.height = 45;
  buf = make_patch (&other, 1, 0, flat_pixel, NULL);
  /* same region in level-0 terms, other level */
  m = gst_buffer_get_wsi_tile_meta (buf);
  m->region_width = 100;
  m->region_height = 90;
  fail_unless_equals_int (gst_harness_push (h, buf), GST_FLOW_ERROR);
  expect_error (bus, GST_STREAM_ERROR, GST_STREAM_ERROR_FORMAT, "level");
  gst_harness_teardown (h);
  gst_object_unref (bus);
  fail_unless (!g_file_test (path, G_FILE_TEST_EXISTS));
  fail_unless_equals_int (count_partial_files (tmp_dir), 0);
  g_free (path);
}

GST_END_TEST;

GST_START_TEST (test_new_slide_without_pattern)
{
  gchar *path = g_build_filename (tmp_dir, "out.png", NULL);
  GstBus *bus;
  GstHarness *h = stitch_harness (&bus, "location", path, NULL);
  Grid other = small;

  harness_caps (h, &small);
  fail_unless_equals_int (gst_harness_push (h, make_patch (&small, 0, 0,
              flat_pixel, NULL)), GST_FLOW_OK);
  other.slide = "/slides/two.svs";
  fail_unless_equals_int (gst_harness_push (h, make_patch (&other, 0, 0,
              flat_pixel, NULL)), GST_FLOW_ERROR);
  expect_error (bus, GST_STREAM_ERROR, GST_STREAM_ERROR_FAILED, "pattern");
  gst_harness_teardown (h);
  gst_object_unref (bus);
  fail_unless (!g_file_test (path, G_FILE_TEST_EXISTS));
  fail_unless_equals_int (count_partial_files (tmp_dir), 0);
  g_free (path);
}

GST_END_TEST;

/* Meta fields a hostile producer could set: errors, no crash. */
GST_START_TEST (test_bad_meta_fields)
{
  gchar *path = g_build_filename (tmp_dir, "out.png", NULL);
  gint i;

  for (i = 0; i < 7; i++) {
    GstBus *bus;
    GstHarness *h = stitch_harness (&bus, "location", path, NULL);
    GstBuffer *buf = make_patch (&small, 0, 0, flat_pixel, NULL);
    GstWsiTileMeta *m = gst_buffer_get_wsi_tile_meta (buf);
    GError *err;

    switch (i) {
      case 0: m->downsample = 0; break;
      case 1: m->downsample = NAN; break;
      case 2: m->region_width = 0; break;
      case 3: m->overlap = 32; break;
      case 4: m->valid_width = -5; break;
      case 5: m->region_width = G_GINT64_CONSTANT (1) << 40; break;
      case 6: m->pad_left = -3; break;
    }
    harness_caps (h, &small);
    fail_unless_equals_int (gst_harness_push (h, buf), GST_FLOW_ERROR);
    err = pop_error (bus);
    fail_unless (err != NULL, "case %d: no error", i);
    fail_unless (err->domain == GST_STREAM_ERROR, "case %d: %s", i,
        err->message);
    g_error_free (err);
    gst_harness_teardown (h);
    gst_object_unref (bus);
    fail_unless (!g_file_test (path, G_FILE_TEST_EXISTS));
    fail_unless_equals_int (count_partial_files (tmp_dir), 0);
  }
  g_free (path);
}

GST_END_TEST;

/* Coordinates far outside the region and oversized valid areas are clipped:
 * the image is still the region, the stray patch adds nothing. */
GST_START_TEST (test_stray_patches_clipped)
{
  gchar *path = g_build_filename (tmp_dir, "out.png", NULL);
  GstBus *bus;
  GstHarness *h = stitch_harness (&bus, "location", path, NULL);
  GstBuffer *buf;
  GstWsiTileMeta *m;
  TestImage img;
  gint c, r;

  harness_caps (h, &small);
  buf = make_patch (&small, 0, 0, flat_pixel, NULL);
  m = gst_buffer_get_wsi_tile_meta (buf);
  m->x = -100000;               /* far left of the region */
  m->valid_width = 100000;      /* claims more than the buffer */
  m->valid_height = 100000;
  fail_unless_equals_int (gst_harness_push (h, buf), GST_FLOW_OK);
  for (r = 0; r < grid_rows (&small); r++)
    for (c = 0; c < grid_cols (&small); c++)
      fail_unless_equals_int (gst_harness_push (h, make_patch (&small, c, r,
                  flat_pixel, NULL)), GST_FLOW_OK);
  buf = make_patch (&small, 0, 0, flat_pixel, NULL);
  m = gst_buffer_get_wsi_tile_meta (buf);
  m->y = 1000000;               /* far below the region */
  fail_unless_equals_int (gst_harness_push (h, buf), GST_FLOW_OK);
  fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));
  fail_unless (pop_error (bus) == NULL);
  gst_harness_teardown (h);
  gst_object_unref (bus);
  fail_unless (read_png (path, &img));
  fail_unless_equals_int (img.width, 100);
  fail_unless_equals_int (img.height, 90);
  for (r = 0; r < 90; r++)
    for (c = 0; c < 100; c++)
      fail_unless_equals_int (img.data[r * img.row_bytes + c], 100);
  g_free (img.data);
  g_free (path);
}

GST_END_TEST;

GST_START_TEST (test_no_tiles)
{
  gchar *path = g_build_filename (tmp_dir, "out.png", NULL);
  GstBus *bus;
  GstHarness *h = stitch_harness (&bus, "location", path, NULL);

  harness_caps (h, &small);
  gst_harness_push_event (h, gst_event_new_eos ());
  expect_error (bus, GST_STREAM_ERROR, GST_STREAM_ERROR_FAILED, "no tiles");
  gst_harness_teardown (h);
  gst_object_unref (bus);
  fail_unless (!g_file_test (path, G_FILE_TEST_EXISTS));
  g_free (path);
}

GST_END_TEST;

static void
drain (GstBus * bus)
{
  GstMessage *msg;
  while ((msg = gst_bus_pop (bus)))
    gst_message_unref (msg);
}

/* Starting @e fails with a settings/not-found error containing @needle. */
static void
expect_start_failure (GstElement * e, GstBus * bus, gint code,
    const gchar * needle)
{
  fail_unless_equals_int (gst_element_set_state (e, GST_STATE_PAUSED),
      GST_STATE_CHANGE_FAILURE);
  expect_error (bus, GST_RESOURCE_ERROR, code, needle);
  gst_element_set_state (e, GST_STATE_NULL);
  drain (bus);                  /* basesink's own "Failed to start" */
}

GST_START_TEST (test_bad_properties)
{
  GstElement *e = gst_element_factory_make ("stitchsink", NULL);
  GstBus *bus = gst_bus_new ();

  gst_element_set_bus (e, bus);
  /* no location */
  expect_start_failure (e, bus, GST_RESOURCE_ERROR_NOT_FOUND, "location");
  /* bad colour */
  g_object_set (e, "location", "/tmp/x.png", "class-colors", "ff0000,zz", NULL);
  expect_start_failure (e, bus, GST_RESOURCE_ERROR_SETTINGS, "zz");
  /* printf-like conversions are refused, not interpreted */
  g_object_set (e, "class-colors", NULL, "location", "/tmp/%n%x.png", NULL);
  expect_start_failure (e, bus, GST_RESOURCE_ERROR_SETTINGS, "pattern");
  /* a failed start leaves the settings writable */
  g_object_set (e, "location", "/tmp/y.png", NULL);
  {
    gchar *loc;
    g_object_get (e, "location", &loc, NULL);
    fail_unless_equals_string (loc, "/tmp/y.png");
    g_free (loc);
  }
  /* the range gst-inspect shows (-1..65535) is what is accepted: 0, the
   * background label, means none like -1 */
  g_object_set (e, "location", "/tmp/x.png", "geojson-boundary-class", 0,
      NULL);
  fail_unless (gst_element_set_state (e, GST_STATE_PAUSED) !=
      GST_STATE_CHANGE_FAILURE);
  fail_unless (pop_error (bus) == NULL);
  gst_element_set_state (e, GST_STATE_NULL);
  gst_object_unref (e);
  gst_object_unref (bus);
}

GST_END_TEST;

static Suite *
stitchsink_errors_suite (void)
{
  Suite *s = suite_create ("stitchsink-errors");
  TCase *tc = tcase_create ("errors");

  tcase_add_checked_fixture (tc, setup, teardown);
  tcase_set_timeout (tc, 60);
  tcase_add_test (tc, test_no_meta);
  tcase_add_test (tc, test_unwritable_location);
  tcase_add_test (tc, test_stop_before_eos);
  tcase_add_test (tc, test_level_change);
  tcase_add_test (tc, test_new_slide_without_pattern);
  tcase_add_test (tc, test_bad_meta_fields);
  tcase_add_test (tc, test_stray_patches_clipped);
  tcase_add_test (tc, test_no_tiles);
  tcase_add_test (tc, test_bad_properties);
  suite_add_tcase (s, tc);
  return s;
}

GST_CHECK_MAIN (stitchsink_errors);
