/* Class names and colours in-band (issue 10): stitchsink takes them from a
 * wsi-classes sticky event (gst/gstwsiclasses.h) sent by the producer, its
 * own class-names / class-colors properties still win, and the event's
 * make/parse helpers round-trip. The same through a bin with ghost pads and
 * a queue, from a real segment-fcn: tests/segment/test_segment_fcn.c. */
#include "stitchtest.h"
#include "gstwsiclasses.h"

static gchar *tmp_dir;

/* Label 1 in a disc, label 2 in a square, 0 elsewhere. */
static void
two_objects (const Grid * g, gint64 X, gint64 Y, gint c, gint r,
    gboolean valid, guint8 * px, gpointer data)
{
  gint64 dx = X - 20, dy = Y - 20;
  px[0] = !valid ? 0 : dx * dx + dy * dy < 100 ? 1 : (X >= 40 && X < 56
      && Y >= 8 && Y < 24) ? 2 : 0;
}

/* The GeoJSON of a 64 x 32 GRAY8 region, with @event (or none) sent before
 * the first patch and the given stitchsink properties. */
static gchar *
stitch_geojson (GstEvent * event, const gchar * names, const gchar * colors)
{
  Grid g = { GST_VIDEO_FORMAT_GRAY8, 64, 32, 32, 0, 0, 1.0, 0, 0, "s" };
  gchar *png = g_build_filename (tmp_dir, "m.png", NULL);
  gchar *gj = g_build_filename (tmp_dir, "m.geojson", NULL);
  gchar *json = NULL;
  GstBus *bus;
  GstHarness *h = stitch_harness (&bus, "location", png, "geojson-location",
      gj, "class-names", names, "class-colors", colors, NULL);
  GError *err;

  harness_caps (h, &g);
  if (event)
    fail_unless (gst_harness_push_event (h, event));
  fail_unless_equals_int (push_grid (h, &g, two_objects, NULL, NULL),
      GST_FLOW_OK);
  fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));
  err = pop_error (bus);
  fail_unless (err == NULL, "error: %s", err ? err->message : "");
  fail_unless (g_file_get_contents (gj, &json, NULL, NULL));
  gst_harness_teardown (h);
  gst_object_unref (bus);
  g_unlink (png);
  g_unlink (gj);
  g_free (png);
  g_free (gj);
  return json;
}

static GstEvent *
nuclei_event (void)
{
  const gchar *names[] = { "background", "nucleus", "stroma" };
  const guint32 colors[] = { 0x000000, 0x00c800, 0x123456 };
  return gst_wsi_classes_event_new (3, names, colors);
}

GST_START_TEST (test_event_roundtrip)
{
  const gchar *names[] = { "bg", "a,b", "c" };
  const guint8 rgb[3][3] = { {0, 0, 0}, {1, 2, 3}, {255, 128, 0} };
  GstEvent *ev = gst_wsi_classes_event_new_rgb (3, names, rgb);
  GstEvent *bad;
  gchar **n = NULL;
  guint32 *c = NULL;
  guint k = 0;

  fail_unless (GST_EVENT_IS_STICKY (ev));
  fail_unless (gst_event_has_name (ev, GST_WSI_CLASSES_EVENT));
  fail_unless (gst_wsi_classes_event_parse (ev, &n, &c, &k));
  fail_unless_equals_int (k, 3);
  fail_unless_equals_string (n[1], "a,b");
  fail_unless_equals_int (c[1], 0x010203);
  fail_unless_equals_int (c[2], 0xff8000);
  g_strfreev (n);
  g_free (c);
  gst_event_unref (ev);

  /* no colours: names only */
  ev = gst_wsi_classes_event_new (2, names, NULL);
  fail_unless (gst_wsi_classes_event_parse (ev, &n, &c, &k));
  fail_unless (c == NULL && k == 2);
  g_strfreev (n);
  gst_event_unref (ev);

  /* malformed: not parsed */
  bad = gst_event_new_custom (GST_EVENT_CUSTOM_DOWNSTREAM_STICKY,
      gst_structure_new (GST_WSI_CLASSES_EVENT, "names", G_TYPE_STRING, "x",
          NULL));
  fail_if (gst_wsi_classes_event_parse (bad, &n, &c, &k));
  gst_event_unref (bad);
}

GST_END_TEST;

GST_START_TEST (test_names_from_event)
{
  gchar *json = stitch_geojson (nuclei_event (), NULL, NULL);

  fail_unless (strstr (json, "\"nucleus\"") && strstr (json, "\"stroma\""),
      "class names of the event not used: %.300s", json);
  fail_if (strstr (json, "class 1") != NULL);
  /* colours of the event: 0x00c800 and 0x123456 */
  fail_unless (strstr (json, "200") && strstr (json, "86"),
      "class colours of the event not used: %.300s", json);
  g_free (json);

  /* without an event: the default names */
  json = stitch_geojson (NULL, NULL, NULL);
  fail_unless (strstr (json, "class 1") && strstr (json, "class 2"), "%.300s",
      json);
  g_free (json);
}

GST_END_TEST;

GST_START_TEST (test_properties_win)
{
  gchar *json = stitch_geojson (nuclei_event (), "bg,mine,other", NULL);

  fail_unless (strstr (json, "\"mine\"") && strstr (json, "\"other\""),
      "%.300s", json);
  fail_if (strstr (json, "nucleus") != NULL);
  g_free (json);
}

GST_END_TEST;

static Suite *
stitch_classes_suite (void)
{
  Suite *s = suite_create ("stitch-classes");
  TCase *tc = tcase_create ("general");

  tmp_dir = g_dir_make_tmp ("stitchclasses-XXXXXX", NULL);
  tcase_set_timeout (tc, 60);
  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_event_roundtrip);
  tcase_add_test (tc, test_names_from_event);
  tcase_add_test (tc, test_properties_win);
  return s;
}

GST_CHECK_MAIN (stitch_classes);
