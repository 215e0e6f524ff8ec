/* stitchsink memory with probability tensors: a tall 600 x 12000 region,
 * 3 classes, 128 px patches with overlap 32, blend=gaussian, a probability
 * PNG and a GeoJSON export. The float band must stay within one patch
 * height (max-band-rows) and the process peak RSS far below the float image
 * (600 x 12000 x 4 floats = 110 MiB); the labels are checked row by row. */
#include "stitchtest.h"

#define W 600
#define H 12000
#define P 128
#define O 32
#define C 3

/* Class of a level pixel: horizontal stripes 40 rows high, cycling. */
static gint
class_at (gint64 X, gint64 Y)
{
  return (gint) ((Y / 40 + X / 300) % C);
}

static void
no_pixels (const Grid * g, gint64 X, gint64 Y, gint c, gint r,
    gboolean valid, guint8 * px, gpointer data)
{
}

static GstBuffer *
prob_patch (const Grid * g, gint c, gint r)
{
  GstBuffer *meta_src = make_patch (g, c, r, no_pixels, NULL);
  GstBuffer *buf = gst_buffer_new_allocate (NULL, (gsize) P * P * C * 4, NULL);
  GstMapInfo map;
  gint S = P - O, i, j;
  gint64 px = (gint64) c * S - O / 2, py = (gint64) r * S - O / 2;

  gst_buffer_map (buf, &map, GST_MAP_WRITE);
  for (j = 0; j < P; j++)
    for (i = 0; i < P; i++) {
      gfloat *p = (gfloat *) map.data + ((gsize) j * P + i) * C;
      gint k = class_at (px + i, py + j), q;
      for (q = 0; q < C; q++)
        p[q] = q == k ? 0.6f : 0.2f;
    }
  gst_buffer_unmap (buf, &map);
  gst_buffer_copy_into (buf, meta_src, GST_BUFFER_COPY_METADATA, 0, -1);
  gst_buffer_unref (meta_src);
  return buf;
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

GST_START_TEST (test_tall_probabilities_bounded_band)
{
  Grid g = { GST_VIDEO_FORMAT_GRAY8, W, H, P, O, 0, 1.0, 0, 0, "tall", FALSE };
  gchar *dir = g_dir_make_tmp ("stitchsink-btall-XXXXXX", NULL);
  gchar *path = g_build_filename (dir, "tall.png", NULL);
  gchar *ppath = g_build_filename (dir, "tall-p.png", NULL);
  gchar *gpath = g_build_filename (dir, "tall.json", NULL);
  gchar caps[256];
  GstBus *bus;
  GstHarness *h = stitch_harness (&bus, "location", path, "compression-level",
      1, "blend", 2, "probability-location", ppath, "geojson-location", gpath,
      NULL);
  guint64 band_rows = 0, rss_kb;
  TestImage img;
  gint c, r, bad = 0;
  guint32 x, y;
  gchar *json = NULL;
  gsize json_len = 0;

  g_snprintf (caps, sizeof caps, "other/tensors,format=static,num_tensors=1,"
      "types=float32,dimensions=%d:%d:%d:1,framerate=0/1", C, P, P);
  gst_harness_set_src_caps_str (h, caps);
  for (r = 0; r < grid_rows (&g); r++)
    for (c = 0; c < grid_cols (&g); c++)
      fail_unless_equals_int (gst_harness_push (h, prob_patch (&g, c, r)),
          GST_FLOW_OK);
  fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));
  fail_unless (pop_error (bus) == NULL);
  g_object_get (h->element, "max-band-rows", &band_rows, NULL);
  gst_harness_teardown (h);
  gst_object_unref (bus);
  rss_kb = peak_rss_kb ();
  g_print ("probabilities %dx%d, %d classes: peak band %" G_GUINT64_FORMAT
      " rows (%" G_GUINT64_FORMAT " KiB of floats), process peak RSS %"
      G_GUINT64_FORMAT " KiB\n", W, H, C, band_rows,
      band_rows * W * (C + 1) * 4 / 1024, rss_kb);
  fail_unless (band_rows > 0 && band_rows <= P,
      "band grew to %" G_GUINT64_FORMAT " rows (patch height %d)", band_rows,
      P);
  fail_unless (rss_kb == 0 || rss_kb < 60 * 1024,
      "peak RSS %" G_GUINT64_FORMAT " KiB", rss_kb);

  /* labels: every pixel is its stripe's class (all patches agree) */
  fail_unless (read_png (path, &img));
  fail_unless (img.width == W && img.height == H);
  for (y = 0; y < H; y++)
    for (x = 0; x < W; x++)
      bad += img.data[(gsize) y * img.row_bytes + x] != class_at (x, y);
  fail_unless_equals_int (bad, 0);
  g_free (img.data);
  /* probability of class 1: 0.6 on its stripes, 0.2 elsewhere */
  fail_unless (read_png (ppath, &img));
  for (y = 0; y < H; y += 7)
    for (x = 0; x < W; x += 5)
      bad += img.data[(gsize) y * img.row_bytes + x] !=
          (class_at (x, y) == 1 ? 153 : 51);
  fail_unless_equals_int (bad, 0);
  g_free (img.data);
  /* one feature per stripe segment of classes 1 and 2 */
  fail_unless (g_file_get_contents (gpath, &json, &json_len, NULL));
  {
    gint n = 0;
    const gchar *p = json;
    while ((p = strstr (p, "\"Feature\""))) {
      n++;
      p++;
    }
    /* 300 stripes of 40 rows; in stripe b the left half has class b % 3,
     * the right half (b + 1) % 3. The right half of stripe b touches the
     * left half of stripe b + 1 diagonally (same class): 299 such pairs
     * plus the two lone ends (class 0). Classes 1 and 2 are exported: the
     * pairs with (b + 1) % 3 != 0, 200 of them. */
    g_print ("GeoJSON: %d features, %" G_GSIZE_FORMAT " bytes\n", n, json_len);
    fail_unless_equals_int (n, 200);
  }
  g_free (json);

  remove_dir (dir);
  g_free (path);
  g_free (ppath);
  g_free (gpath);
  g_free (dir);
}

GST_END_TEST;

static Suite *
stitch_blend_tall_suite (void)
{
  Suite *s = suite_create ("stitchsink-blend-tall");
  TCase *tc = tcase_create ("tall");
  tcase_set_timeout (tc, 110);
  tcase_add_test (tc, test_tall_probabilities_bounded_band);
  suite_add_tcase (s, tc);
  return s;
}

GST_CHECK_MAIN (stitch_blend_tall);
