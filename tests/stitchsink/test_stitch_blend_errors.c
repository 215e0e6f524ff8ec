/* stitchsink bad probability input and GeoJSON settings: each gives a
 * clear error message, no crash, and no output or temp file left behind. */
#include "stitchtest.h"

#define P 16
#define O 4

static void
no_pixels (const Grid * g, gint64 X, gint64 Y, gint c, gint r,
    gboolean valid, guint8 * px, gpointer data)
{
  px[0] = 1;
}

/* Probability patch (c, r) of @g with @classes classes and @bytes bytes
 * (0: the right size). */
static GstBuffer *
prob_patch (const Grid * g, gint c, gint r, gint classes, gsize bytes)
{
  GstBuffer *meta_src = make_patch (g, c, r, no_pixels, NULL);
  GstBuffer *buf;
  GstMapInfo map;
  gsize i;

  if (!bytes)
    bytes = (gsize) P * P * classes * 4;
  buf = gst_buffer_new_allocate (NULL, bytes, NULL);
  gst_buffer_map (buf, &map, GST_MAP_WRITE);
  for (i = 0; i + 4 <= bytes; i += 4)
    *(gfloat *) (map.data + i) = 0.5f;
  gst_buffer_unmap (buf, &map);
  gst_buffer_copy_into (buf, meta_src, GST_BUFFER_COPY_METADATA, 0, -1);
  gst_buffer_unref (meta_src);
  return buf;
}

static void
tensor_caps (GstHarness * h, const gchar * dims)
{
  gchar caps[256];
  g_snprintf (caps, sizeof caps, "other/tensors,format=static,num_tensors=1,"
      "types=float32,dimensions=(string)\"%s\",framerate=0/1", dims);
  gst_harness_set_src_caps_str (h, caps);
}

static const Grid grid = { GST_VIDEO_FORMAT_GRAY8, 40, 30, P, O, 0, 1.0, 0, 0,
  "errs", FALSE
};

/* Expects an error containing @text on @bus. */
static void
expect_error (GstBus * bus, const gchar * text)
{
  GError *err = pop_error (bus);
  fail_unless (err != NULL, "no error posted (expected '%s')", text);
  GST_INFO ("error: %s", err->message);
  fail_unless (strstr (err->message, text) != NULL,
      "error '%s' does not mention '%s'", err->message, text);
  g_error_free (err);
}

/* After the harness stopped: no final @path, no temp file in @dir. */
static void
expect_nothing_written (const gchar * dir, const gchar * path)
{
  fail_if (g_file_test (path, G_FILE_TEST_EXISTS), "%s exists", path);
  fail_unless_equals_int (count_partial_files (dir), 0);
}

static void
check_bad_dims (const gchar * dims)
{
  gchar *dir = g_dir_make_tmp ("stitchsink-berr-XXXXXX", NULL);
  gchar *path = g_build_filename (dir, "out.png", NULL);
  GstBus *bus;
  GstHarness *h = stitch_harness (&bus, "location", path, NULL);

  tensor_caps (h, dims);
  fail_if (gst_harness_push (h, prob_patch (&grid, 0, 0, 2, 0)) ==
      GST_FLOW_OK, "dims %s accepted", dims);
  expect_error (bus, "dimensions C:W:H:1");
  gst_harness_teardown (h);
  gst_object_unref (bus);
  expect_nothing_written (dir, path);
  remove_dir (dir);
  g_free (path);
  g_free (dir);
}

GST_START_TEST (test_bad_dims)
{
  check_bad_dims ("2:16:16:2");
  check_bad_dims ("0:16:16:1");
  check_bad_dims ("256:16:16:1");
  check_bad_dims ("2:16");
  check_bad_dims ("2:16:x:1");
  check_bad_dims ("2:16:16:1:1");
  check_bad_dims ("-2:16:16:1");
}

GST_END_TEST;

GST_START_TEST (test_classes_change_mid_image)
{
  gchar *dir = g_dir_make_tmp ("stitchsink-berr-XXXXXX", NULL);
  gchar *path = g_build_filename (dir, "out.png", NULL);
  GstBus *bus;
  GstHarness *h = stitch_harness (&bus, "location", path, "blend", 1, NULL);

  tensor_caps (h, "2:16:16:1");
  fail_unless_equals_int (gst_harness_push (h, prob_patch (&grid, 0, 0, 2, 0)),
      GST_FLOW_OK);
  tensor_caps (h, "3:16:16:1");
  fail_unless_equals_int (gst_harness_push (h, prob_patch (&grid, 1, 0, 3, 0)),
      GST_FLOW_ERROR);
  expect_error (bus, "Number of classes changed mid-image from 2 to 3");
  gst_harness_teardown (h);
  gst_object_unref (bus);
  expect_nothing_written (dir, path);
  remove_dir (dir);
  g_free (path);
  g_free (dir);
}

GST_END_TEST;

GST_START_TEST (test_short_buffer)
{
  gchar *dir = g_dir_make_tmp ("stitchsink-berr-XXXXXX", NULL);
  gchar *path = g_build_filename (dir, "out.png", NULL);
  GstBus *bus;
  GstHarness *h = stitch_harness (&bus, "location", path, "blend", 2, NULL);

  tensor_caps (h, "2:16:16:1");
  fail_unless_equals_int (gst_harness_push (h, prob_patch (&grid, 0, 0, 2,
              P * P * 4 + 3)), GST_FLOW_ERROR);
  expect_error (bus, "Probability tensor holds 1027 bytes");
  gst_harness_teardown (h);
  gst_object_unref (bus);
  expect_nothing_written (dir, path);
  remove_dir (dir);
  g_free (path);
  g_free (dir);
}

GST_END_TEST;

GST_START_TEST (test_probability_class_out_of_range)
{
  gchar *dir = g_dir_make_tmp ("stitchsink-berr-XXXXXX", NULL);
  gchar *path = g_build_filename (dir, "out.png", NULL);
  gchar *ppath = g_build_filename (dir, "p.png", NULL);
  GstBus *bus;
  GstHarness *h = stitch_harness (&bus, "location", path,
      "probability-location", ppath, "probability-class", 2, NULL);

  tensor_caps (h, "2:16:16:1");
  fail_if (gst_harness_push (h, prob_patch (&grid, 0, 0, 2, 0)) ==
      GST_FLOW_OK);
  expect_error (bus, "probability-class=2 but the tensors have 2 classes");
  gst_harness_teardown (h);
  gst_object_unref (bus);
  expect_nothing_written (dir, path);
  remove_dir (dir);
  g_free (path);
  g_free (ppath);
  g_free (dir);
}

GST_END_TEST;

/* Labels or RGB with settings that need probabilities / labels. */
static void
check_video_refused (GstVideoFormat format, const gchar * text,
    const gchar * prop, gint value, const gchar * sprop)
{
  gchar *dir = g_dir_make_tmp ("stitchsink-berr-XXXXXX", NULL);
  gchar *path = g_build_filename (dir, "out.png", NULL);
  gchar *extra = g_build_filename (dir, "extra", NULL);
  Grid g = grid;
  GstBus *bus;
  GstHarness *h;

  g.format = format;
  if (sprop)
    h = stitch_harness (&bus, "location", path, sprop, extra, NULL);
  else
    h = stitch_harness (&bus, "location", path, prop, value, NULL);
  harness_caps (h, &g);
  fail_if (gst_harness_push (h, make_patch (&g, 0, 0, no_pixels, NULL)) ==
      GST_FLOW_OK);
  expect_error (bus, text);
  gst_harness_teardown (h);
  gst_object_unref (bus);
  expect_nothing_written (dir, path);
  remove_dir (dir);
  g_free (path);
  g_free (extra);
  g_free (dir);
}

GST_START_TEST (test_video_refused)
{
  check_video_refused (GST_VIDEO_FORMAT_GRAY8,
      "blend=average needs probability tensors", "blend", 1, NULL);
  check_video_refused (GST_VIDEO_FORMAT_GRAY16_LE,
      "blend=gaussian needs probability tensors", "blend", 2, NULL);
  check_video_refused (GST_VIDEO_FORMAT_GRAY8,
      "probability-location needs probability tensors", NULL, 0,
      "probability-location");
  check_video_refused (GST_VIDEO_FORMAT_RGB,
      "geojson-location needs labels", NULL, 0, "geojson-location");
}

GST_END_TEST;

GST_START_TEST (test_unwritable_geojson)
{
  gchar *dir = g_dir_make_tmp ("stitchsink-berr-XXXXXX", NULL);
  gchar *path = g_build_filename (dir, "out.png", NULL);
  gchar *gpath = g_build_filename (dir, "no-such-dir", "g.json", NULL);
  GstBus *bus;
  GstHarness *h = stitch_harness (&bus, "location", path, "geojson-location",
      gpath, NULL);

  tensor_caps (h, "2:16:16:1");
  fail_unless_equals_int (gst_harness_push (h, prob_patch (&grid, 0, 0, 2, 0)),
      GST_FLOW_ERROR);
  expect_error (bus, "no-such-dir/g.json");
  gst_harness_teardown (h);
  gst_object_unref (bus);
  expect_nothing_written (dir, path);
  remove_dir (dir);
  g_free (path);
  g_free (gpath);
  g_free (dir);
}

GST_END_TEST;

GST_START_TEST (test_pattern_mismatch)
{
  gchar *dir = g_dir_make_tmp ("stitchsink-berr-XXXXXX", NULL);
  gchar *path = g_build_filename (dir, "out-%d.png", NULL);
  gchar *gpath = g_build_filename (dir, "g.json", NULL);
  GstElement *e = gst_element_factory_make ("stitchsink", NULL);
  GstBus *bus = gst_bus_new ();
  GError *err;

  g_object_set (e, "location", path, "geojson-location", gpath, NULL);
  gst_element_set_bus (e, bus);
  fail_unless_equals_int (gst_element_set_state (e, GST_STATE_PAUSED),
      GST_STATE_CHANGE_FAILURE);
  err = pop_error (bus);
  fail_unless (err && strstr (err->message, "geojson-location"));
  g_error_free (err);
  gst_element_set_state (e, GST_STATE_NULL);
  gst_object_unref (e);
  gst_object_unref (bus);
  remove_dir (dir);
  g_free (path);
  g_free (gpath);
  g_free (dir);
}

GST_END_TEST;

/* Hostile values (NaN, infinities, negatives) still give an image. */
GST_START_TEST (test_nonfinite_values)
{
  gchar *dir = g_dir_make_tmp ("stitchsink-berr-XXXXXX", NULL);
  gchar *path = g_build_filename (dir, "out.png", NULL);
  gchar *ppath = g_build_filename (dir, "p.png", NULL);
  gchar *gpath = g_build_filename (dir, "g.json", NULL);
  GstBus *bus;
  GstHarness *h = stitch_harness (&bus, "location", path,
      "probability-location", ppath, "geojson-location", gpath, "blend", 2,
      NULL);
  const gfloat vals[] = { NAN, INFINITY, -INFINITY, -1.0f, 2.0f, 0.3f };
  gint c, r;

  tensor_caps (h, "2:16:16:1");
  for (r = 0; r < grid_rows (&grid); r++)
    for (c = 0; c < grid_cols (&grid); c++) {
      GstBuffer *b = prob_patch (&grid, c, r, 2, 0);
      GstMapInfo map;
      gsize i;
      gst_buffer_map (b, &map, GST_MAP_WRITE);
      for (i = 0; i < map.size / 4; i++)
        ((gfloat *) map.data)[i] = vals[(i * 7 + c + r) % G_N_ELEMENTS (vals)];
      gst_buffer_unmap (b, &map);
      fail_unless_equals_int (gst_harness_push (h, b), GST_FLOW_OK);
    }
  fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));
  fail_unless (pop_error (bus) == NULL);
  gst_harness_teardown (h);
  gst_object_unref (bus);
  fail_unless (g_file_test (path, G_FILE_TEST_EXISTS));
  fail_unless (g_file_test (ppath, G_FILE_TEST_EXISTS));
  fail_unless (g_file_test (gpath, G_FILE_TEST_EXISTS));
  remove_dir (dir);
  g_free (path);
  g_free (ppath);
  g_free (gpath);
  g_free (dir);
}

GST_END_TEST;

static Suite *
stitch_blend_errors_suite (void)
{
  Suite *s = suite_create ("stitchsink-blend-errors");
  TCase *tc = tcase_create ("errors");
  tcase_set_timeout (tc, 50);
  tcase_add_test (tc, test_bad_dims);
  tcase_add_test (tc, test_classes_change_mid_image);
  tcase_add_test (tc, test_short_buffer);
  tcase_add_test (tc, test_probability_class_out_of_range);
  tcase_add_test (tc, test_video_refused);
  tcase_add_test (tc, test_unwritable_geojson);
  tcase_add_test (tc, test_pattern_mismatch);
  tcase_add_test (tc, test_nonfinite_values);
  suite_add_tcase (s, tc);
  return s;
}

GST_CHECK_MAIN (stitch_blend_errors);
