/* stitchsink: stitched PNGs equal the expected images (GRAY8, RGB,
 * GRAY16_LE, unknown height, missing patches, overlap, odd overlap,
 * padding, downsampled levels), progress messages, multi-slide patterns. */
#include "stitchtest.h"

static gchar *tmp_dir;

static void
setup (void)
{
  tmp_dir = g_dir_make_tmp ("stitchsink-XXXXXX", NULL);
  fail_unless (tmp_dir != NULL);
}

static void
teardown (void)
{
  remove_dir (tmp_dir);
  g_free (tmp_dir);
}

/* ---- pixel functions ---- */

static guint
truth_value (gint64 X, gint64 Y)
{
  return (guint) ((X * 3 + Y * 7 + (X * Y) % 11) & 0xff);
}

/* Ground truth in the region, garbage in padding: any correct stitcher
 * rebuilds the truth. */
static void
truth_pixel (const Grid * g, gint64 X, gint64 Y, gint c, gint r,
    gboolean valid, guint8 * px, gpointer data)
{
  if (g->format == GST_VIDEO_FORMAT_RGB) {
    px[0] = valid ? truth_value (X, Y) : 1;
    px[1] = valid ? (guint8) (X & 0xff) : 2;
    px[2] = valid ? (guint8) (Y & 0xff) : 3;
  } else if (g->format == GST_VIDEO_FORMAT_GRAY16_LE) {
    guint v = valid ? (guint) ((X * 131 + Y * 17) & 0xffff) : 0xdead;
    px[0] = v & 0xff;
    px[1] = v >> 8;
  } else {
    px[0] = valid ? truth_value (X, Y) : 0xee;
  }
}

static guint
patch_id (gint c, gint r)
{
  return (guint) ((c * 7 + r * 31) % 250 + 3);
}

/* Each patch filled with its own id: the overlap areas disagree, so only
 * the centre-crop rule gives the expected picture. */
static void
id_pixel (const Grid * g, gint64 X, gint64 Y, gint c, gint r, gboolean valid,
    guint8 * px, gpointer data)
{
  px[0] = valid ? patch_id (c, r) : 0xff;
  if (g->format == GST_VIDEO_FORMAT_RGB)
    px[1] = px[2] = px[0];
}

static gboolean
drop_some (gint c, gint r)
{
  return (c == 1 && r == 1) || (c == 3 && r == 0) || (c == 0 && r == 4);
}

static gchar *
run_grid (const Grid * g, PixelFn fn, gboolean (*drop) (gint, gint),
    const gchar * name, GstBus ** bus_out)
{
  gchar *path = g_build_filename (tmp_dir, name, NULL);
  GstBus *bus;
  GstHarness *h = stitch_harness (&bus, "location", path, "compression-level",
      1, NULL);

  harness_caps (h, g);
  fail_unless_equals_int (push_grid (h, g, fn, NULL, drop), GST_FLOW_OK);
  fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));
  {
    GError *err = pop_error (bus);
    fail_unless (err == NULL, "error: %s", err ? err->message : "");
  }
  gst_harness_teardown (h);
  if (bus_out)
    *bus_out = bus;
  else
    gst_object_unref (bus);
  fail_unless_equals_int (count_partial_files (tmp_dir), 0);
  return path;
}

static void
check_ids (const Grid * g, const TestImage * img, gboolean (*drop) (gint,
        gint), guint bg)
{
  gint S = grid_stride (g), bpp = img->channels;
  guint32 X, Y;

  for (Y = 0; Y < img->height; Y++)
    for (X = 0; X < img->width; X++) {
      gint c = X / S, r = Y / S;
      guint expect = drop && drop (c, r) ? bg : patch_id (c, r);
      guint got = img->data[Y * img->row_bytes + X * bpp];
      if (got != expect)
        fail ("pixel (%u,%u) = %u, expected %u (patch %d,%d)", X, Y, got,
            expect, c, r);
    }
}

GST_START_TEST (test_gray8_centre_crop)
{
  Grid g = { GST_VIDEO_FORMAT_GRAY8, 300, 250, 64, 16, 0, 1.0, 1000, 2000,
    "/slides/a.svs", FALSE
  };
  gchar *path = run_grid (&g, id_pixel, drop_some, "crop.png", NULL);
  TestImage img;

  fail_unless (read_png (path, &img));
  fail_unless_equals_int (img.width, 300);
  fail_unless_equals_int (img.height, 250);
  fail_unless_equals_int (img.channels, 1);
  fail_unless_equals_int (img.depth, 8);
  check_ids (&g, &img, drop_some, 0);
  g_free (img.data);
  g_free (path);
}

GST_END_TEST;

GST_START_TEST (test_gray8_odd_overlap)
{
  /* O/2 rounds down: patch c keeps region columns [c*S, c*S + S). */
  Grid g = { GST_VIDEO_FORMAT_GRAY8, 157, 121, 50, 15, 0, 1.0, 0, 0, "x",
    FALSE
  };
  gchar *path = run_grid (&g, id_pixel, NULL, "odd.png", NULL);
  TestImage img;

  fail_unless (read_png (path, &img));
  fail_unless_equals_int (img.width, 157);
  fail_unless_equals_int (img.height, 121);
  check_ids (&g, &img, NULL, 0);
  g_free (img.data);
  g_free (path);
}

GST_END_TEST;

GST_START_TEST (test_rgb_truth_level2)
{
  /* Level 2 (downsample 4), region not at the slide origin, odd sizes,
   * patches with padding on every edge, some missing (white). */
  Grid g = { GST_VIDEO_FORMAT_RGB, 203, 187, 48, 8, 2, 4.0, 4000, 800,
    "/slides/b.tif", FALSE
  };
  gchar *path = run_grid (&g, truth_pixel, drop_some, "rgb.png", NULL);
  TestImage img;
  gint S = grid_stride (&g);
  guint32 X, Y;

  fail_unless (read_png (path, &img));
  fail_unless_equals_int (img.width, 203);
  fail_unless_equals_int (img.height, 187);
  fail_unless_equals_int (img.channels, 3);
  for (Y = 0; Y < img.height; Y++)
    for (X = 0; X < img.width; X++) {
      const guint8 *p = img.data + Y * img.row_bytes + X * 3;
      guint8 e[3];
      if (drop_some (X / S, Y / S)) {
        e[0] = e[1] = e[2] = 255;
      } else {
        e[0] = truth_value (X, Y);
        e[1] = X & 0xff;
        e[2] = Y & 0xff;
      }
      if (memcmp (p, e, 3) != 0)
        fail ("pixel (%u,%u) = %u,%u,%u expected %u,%u,%u", X, Y, p[0], p[1],
            p[2], e[0], e[1], e[2]);
    }
  g_free (img.data);
  g_free (path);
}

GST_END_TEST;

GST_START_TEST (test_gray16_labels)
{
  Grid g = { GST_VIDEO_FORMAT_GRAY16_LE, 130, 90, 40, 10, 0, 1.0, 0, 0, "y",
    FALSE
  };
  gchar *path = run_grid (&g, truth_pixel, NULL, "g16.png", NULL);
  TestImage img;
  guint32 X, Y;

  fail_unless (read_png (path, &img));
  fail_unless_equals_int (img.depth, 16);
  fail_unless_equals_int (img.channels, 1);
  fail_unless_equals_int (img.width, 130);
  fail_unless_equals_int (img.height, 90);
  for (Y = 0; Y < img.height; Y++)
    for (X = 0; X < img.width; X++) {
      const guint8 *p = img.data + Y * img.row_bytes + X * 2;
      guint got = p[0] | (p[1] << 8), expect = (X * 131 + Y * 17) & 0xffff;
      if (got != expect)
        fail ("pixel (%u,%u) = %u expected %u", X, Y, got, expect);
    }
  g_free (img.data);
  g_free (path);
}

GST_END_TEST;

GST_START_TEST (test_unknown_height)
{
  /* Live: the meta does not know the height; the image ends at the lowest
   * valid row. */
  Grid g = { GST_VIDEO_FORMAT_GRAY8, 140, 173, 32, 8, 0, 1.0, 0, 0, "",
    TRUE
  };
  gchar *path = run_grid (&g, truth_pixel, NULL, "live.png", NULL);
  TestImage img;
  guint32 X, Y;

  fail_unless (read_png (path, &img));
  fail_unless_equals_int (img.width, 140);
  fail_unless_equals_int (img.height, 173);
  for (Y = 0; Y < img.height; Y++)
    for (X = 0; X < img.width; X++)
      if (img.data[Y * img.row_bytes + X] != truth_value (X, Y))
        fail ("pixel (%u,%u) = %u expected %u", X, Y,
            img.data[Y * img.row_bytes + X], truth_value (X, Y));
  g_free (img.data);
  g_free (path);
}

GST_END_TEST;

GST_START_TEST (test_background_property)
{
  Grid g = { GST_VIDEO_FORMAT_GRAY8, 300, 250, 64, 16, 0, 1.0, 0, 0, "z",
    FALSE
  };
  gchar *path = g_build_filename (tmp_dir, "bg.png", NULL);
  GstBus *bus;
  GstHarness *h = stitch_harness (&bus, "location", path, "background", 9,
      NULL);
  TestImage img;

  harness_caps (h, &g);
  fail_unless_equals_int (push_grid (h, &g, id_pixel, NULL, drop_some),
      GST_FLOW_OK);
  fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));
  gst_harness_teardown (h);
  gst_object_unref (bus);
  fail_unless (read_png (path, &img));
  check_ids (&g, &img, drop_some, 9);
  g_free (img.data);
  g_free (path);
}

GST_END_TEST;

GST_START_TEST (test_progress_messages)
{
  Grid g = { GST_VIDEO_FORMAT_GRAY8, 128, 256, 64, 0, 0, 1.0, 0, 0, "p",
    FALSE
  };
  gchar *path = g_build_filename (tmp_dir, "progress.png", NULL);
  GstBus *bus;
  GstHarness *h;
  GstMessage *msg;
  guint64 last_rows = 0, rows, patches = 0, expected = 0;
  gdouble fraction = -1, last_fraction = 0;
  gboolean partial = TRUE, final = FALSE;
  guint n = 0;

  /* Default (post-messages off): only the final message of the image. */
  h = stitch_harness (&bus, "location", path, "progress-interval", 1, NULL);
  harness_caps (h, &g);
  fail_unless_equals_int (push_grid (h, &g, truth_pixel, NULL, NULL),
      GST_FLOW_OK);
  fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));
  while ((msg = gst_bus_pop_filtered (bus, GST_MESSAGE_ELEMENT))) {
    const GstStructure *s = gst_message_get_structure (msg);
    if (gst_structure_has_name (s, "stitchsink-progress")) {
      fail_unless (gst_structure_get_boolean (s, "final", &final));
      fail_unless (gst_structure_get_boolean (s, "partial", &partial));
      fail_unless (gst_structure_get_uint64 (s, "patches-expected",
              &expected));
      n++;
    }
    gst_message_unref (msg);
  }
  fail_unless_equals_int (n, 1);
  fail_unless (final && !partial);
  fail_unless_equals_int (expected, 8);
  gst_harness_teardown (h);
  gst_object_unref (bus);
  n = 0;

  h = stitch_harness (&bus, "location", path, "progress-interval", 0,
      "post-messages", TRUE, NULL);

  harness_caps (h, &g);
  fail_unless_equals_int (push_grid (h, &g, truth_pixel, NULL, NULL),
      GST_FLOW_OK);
  fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));
  while ((msg = gst_bus_pop_filtered (bus, GST_MESSAGE_ELEMENT))) {
    const GstStructure *s = gst_message_get_structure (msg);
    if (gst_structure_has_name (s, "stitchsink-progress")) {
      fail_unless (gst_structure_get_uint64 (s, "rows-written", &rows));
      fail_unless (gst_structure_get_uint64 (s, "patches", &patches));
      fail_unless (gst_structure_get_double (s, "fraction", &fraction));
      fail_unless (rows >= last_rows);
      fail_unless (fraction >= last_fraction);
      last_rows = rows;
      last_fraction = fraction;
      n++;
    }
    gst_message_unref (msg);
  }
  /* One per band (grid rows 1, 2, 3 start) and one at the end. */
  fail_unless_equals_int (n, 4);
  fail_unless_equals_int (last_rows, 256);
  fail_unless_equals_int (patches, 8);
  fail_unless_equals_float (fraction, 1.0);
  gst_harness_teardown (h);
  gst_object_unref (bus);

  /* Every patch when the interval is 1. */
  h = stitch_harness (&bus, "location", path, "progress-interval", 1,
      "post-messages", TRUE, NULL);
  harness_caps (h, &g);
  fail_unless_equals_int (push_grid (h, &g, truth_pixel, NULL, NULL),
      GST_FLOW_OK);
  fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));
  n = 0;
  while ((msg = gst_bus_pop_filtered (bus, GST_MESSAGE_ELEMENT))) {
    if (gst_structure_has_name (gst_message_get_structure (msg),
            "stitchsink-progress"))
      n++;
    gst_message_unref (msg);
  }
  fail_unless_equals_int (n, 9);
  gst_harness_teardown (h);
  gst_object_unref (bus);
  g_free (path);
}

GST_END_TEST;

GST_START_TEST (test_multi_slide_pattern)
{
  /* Two slides in one stream: location pattern gives one file each. */
  Grid a = { GST_VIDEO_FORMAT_GRAY8, 100, 80, 32, 8, 0, 1.0, 0, 0,
    "/data/first.svs", FALSE
  };
  Grid b = { GST_VIDEO_FORMAT_GRAY8, 70, 50, 32, 8, 0, 1.0, 0, 0,
    "/data/second.ndpi", FALSE
  };
  gchar *pattern = g_build_filename (tmp_dir, "out-%02d-%s.png", NULL);
  gchar *p0 = g_build_filename (tmp_dir, "out-00-first.png", NULL);
  gchar *p1 = g_build_filename (tmp_dir, "out-01-second.png", NULL);
  GstBus *bus;
  GstHarness *h = stitch_harness (&bus, "location", pattern, NULL);
  TestImage img;
  guint images = 0;

  harness_caps (h, &a);
  fail_unless_equals_int (push_grid (h, &a, truth_pixel, NULL, NULL),
      GST_FLOW_OK);
  fail_unless_equals_int (push_grid (h, &b, truth_pixel, NULL, NULL),
      GST_FLOW_OK);
  fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));
  fail_unless (pop_error (bus) == NULL);
  g_object_get (h->element, "images-written", &images, NULL);
  fail_unless_equals_int (images, 2);
  gst_harness_teardown (h);
  gst_object_unref (bus);

  fail_unless (read_png (p0, &img));
  fail_unless_equals_int (img.width, 100);
  fail_unless_equals_int (img.height, 80);
  fail_unless_equals_int (img.data[5 * img.row_bytes + 7], truth_value (7, 5));
  g_free (img.data);
  fail_unless (read_png (p1, &img));
  fail_unless_equals_int (img.width, 70);
  fail_unless_equals_int (img.height, 50);
  fail_unless_equals_int (img.data[49 * img.row_bytes + 69],
      truth_value (69, 49));
  g_free (img.data);
  g_free (pattern);
  g_free (p0);
  g_free (p1);
}

GST_END_TEST;

GST_START_TEST (test_flush_restarts)
{
  /* A flush (seek) discards the image in progress; the next one is whole. */
  Grid g = { GST_VIDEO_FORMAT_GRAY8, 100, 80, 32, 8, 0, 1.0, 0, 0, "f",
    FALSE
  };
  gchar *path = g_build_filename (tmp_dir, "flush.png", NULL);
  GstBus *bus;
  GstHarness *h = stitch_harness (&bus, "location", path, NULL);
  TestImage img;
  guint32 X, Y;

  harness_caps (h, &g);
  fail_unless_equals_int (gst_harness_push (h, make_patch (&g, 0, 0,
              id_pixel, NULL)), GST_FLOW_OK);
  fail_unless_equals_int (gst_harness_push (h, make_patch (&g, 1, 0,
              id_pixel, NULL)), GST_FLOW_OK);
  fail_unless_equals_int (count_partial_files (tmp_dir), 1);
  fail_unless (gst_harness_push_event (h, gst_event_new_flush_start ()));
  fail_unless (gst_harness_push_event (h, gst_event_new_flush_stop (TRUE)));
  fail_unless_equals_int (count_partial_files (tmp_dir), 0);
  fail_unless (!g_file_test (path, G_FILE_TEST_EXISTS));
  {
    GstSegment seg;
    gst_segment_init (&seg, GST_FORMAT_TIME);
    fail_unless (gst_harness_push_event (h, gst_event_new_segment (&seg)));
  }
  fail_unless_equals_int (push_grid (h, &g, truth_pixel, NULL, NULL),
      GST_FLOW_OK);
  fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));
  gst_harness_teardown (h);
  gst_object_unref (bus);
  fail_unless (read_png (path, &img));
  for (Y = 0; Y < img.height; Y++)
    for (X = 0; X < img.width; X++)
      fail_unless_equals_int (img.data[Y * img.row_bytes + X],
          truth_value (X, Y));
  g_free (img.data);
  g_free (path);
}

GST_END_TEST;

static Suite *
stitchsink_suite (void)
{
  Suite *s = suite_create ("stitchsink");
  TCase *tc = tcase_create ("general");

  tcase_add_checked_fixture (tc, setup, teardown);
  tcase_set_timeout (tc, 60);
  tcase_add_test (tc, test_gray8_centre_crop);
  tcase_add_test (tc, test_gray8_odd_overlap);
  tcase_add_test (tc, test_rgb_truth_level2);
  tcase_add_test (tc, test_gray16_labels);
  tcase_add_test (tc, test_unknown_height);
  tcase_add_test (tc, test_background_property);
  tcase_add_test (tc, test_progress_messages);
  tcase_add_test (tc, test_multi_slide_pattern);
  tcase_add_test (tc, test_flush_restarts);
  suite_add_tcase (s, tc);
  return s;
}

GST_CHECK_MAIN (stitchsink);
