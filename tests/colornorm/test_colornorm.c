/* colornorm: caps negotiation both ways, tensor size, meta, degenerate
 * patches, fit once per slide (held buffers, refit on a new slide, EOS),
 * thumbnail fit, bad target images, thread-safe properties, helpers. */
#include <gst/check/gstcheck.h>
#include <gst/check/gstharness.h>
#include <gst/video/video.h>
#include <glib/gstdio.h>
#include <png.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gstwsitensor.h"
#include "gstwsitilemeta.h"
#include "wsicolor.h"

static gchar *
rgb_caps (gint w, gint h)
{
  return g_strdup_printf ("video/x-raw,format=RGB,width=%d,height=%d,"
      "framerate=5/1", w, h);
}

static GstHarness *
harness_new (gint w, gint h, const gchar * sink_caps)
{
  GstHarness *hr = gst_harness_new ("colornorm");
  gchar *caps = rgb_caps (w, h);

  gst_harness_set_src_caps_str (hr, caps);
  if (sink_caps)
    gst_harness_set_sink_caps_str (hr, sink_caps);
  g_free (caps);
  return hr;
}

/* RGB buffer with rows @stride bytes apart, pixel (x, y) from @fill. */
typedef void (*FillFunc) (gint x, gint y, guint8 * px, gpointer data);

static GstBuffer *
make_buffer (gint w, gint h, gint stride, FillFunc fill, gpointer data)
{
  GstBuffer *buf = gst_buffer_new_allocate (NULL, (gsize) stride * h, NULL);
  GstMapInfo map;
  gint x, y;

  gst_buffer_map (buf, &map, GST_MAP_WRITE);
  memset (map.data, 0xEE, map.size);
  for (y = 0; y < h; y++)
    for (x = 0; x < w; x++)
      fill (x, y, map.data + (gsize) y * stride + x * 3, data);
  gst_buffer_unmap (buf, &map);
  return buf;
}

static void
fill_pattern (gint x, gint y, guint8 * px, gpointer data)
{
  px[0] = (x * 7 + y) & 255;
  px[1] = (x + y * 5) & 255;
  px[2] = (x * y) & 255;
}

static void
fill_const (gint x, gint y, guint8 * px, gpointer data)
{
  const guint8 *c = data;
  px[0] = c[0];
  px[1] = c[1];
  px[2] = c[2];
}

/* Synthetic H&E: OD = h * H + e * E with h, e from a hash of (x, y, seed). */
typedef struct
{
  gdouble hv[3], ev[3];
  guint seed;
} StainImage;

static void
fill_stain (gint x, gint y, guint8 * px, gpointer data)
{
  StainImage *s = data;
  guint32 k = (guint32) (x * 73856093u) ^ (guint32) (y * 19349663u) ^
      (s->seed * 83492791u);
  gdouble h, e;
  gint c;

  k ^= k >> 13;
  k *= 0x5bd1e995u;
  k ^= k >> 15;
  h = (k & 0xffff) / 65535.0 * 1.2;
  e = (k >> 16) / 65535.0 * 0.9;
  for (c = 0; c < 3; c++) {
    gdouble v = 256.0 * exp (-(h * s->hv[c] + e * s->ev[c])) - 1.0;
    px[c] = (guint8) CLAMP (lround (v), 0, 255);
  }
}

static gboolean
all_finite (const gfloat * v, gsize n)
{
  gsize i;
  for (i = 0; i < n; i++)
    if (!isfinite (v[i]))
      return FALSE;
  return TRUE;
}

static void
get_doubles (GstElement * el, const gchar * name, gdouble * out, guint n)
{
  GValue v = G_VALUE_INIT;
  guint i;

  g_value_init (&v, GST_TYPE_ARRAY);
  g_object_get_property (G_OBJECT (el), name, &v);
  fail_unless_equals_int (gst_value_array_get_size (&v), n);
  for (i = 0; i < n; i++)
    out[i] = g_value_get_double (gst_value_array_get_value (&v, i));
  g_value_unset (&v);
}

/* --- caps ---------------------------------------------------------------- */

GST_START_TEST (test_caps_tensor)
{
  GstHarness *hr = harness_new (64, 48, NULL);
  GstBuffer *out;
  GstCaps *caps;
  GstStructure *s;
  GstMapInfo map, imap;
  GstBuffer *in = make_buffer (64, 48, 192, fill_pattern, NULL);
  gint fn, fd, n, i;

  fail_unless_equals_int (gst_harness_push (hr, gst_buffer_ref (in)),
      GST_FLOW_OK);
  out = gst_harness_pull (hr);
  caps = gst_pad_get_current_caps (hr->sinkpad);
  s = gst_caps_get_structure (caps, 0);
  fail_unless (gst_structure_has_name (s, "other/tensors"));
  fail_unless_equals_string (gst_structure_get_string (s, "dimensions"),
      "3:64:48:1");
  fail_unless_equals_string (gst_structure_get_string (s, "types"),
      "float32");
  fail_unless_equals_string (gst_structure_get_string (s, "format"),
      "static");
  fail_unless (gst_structure_get_int (s, "num_tensors", &n) && n == 1);
  fail_unless (gst_structure_get_fraction (s, "framerate", &fn, &fd));
  fail_unless (fn == 5 && fd == 1);
  /* byte size = product of the dimensions * sizeof (float32) */
  fail_unless_equals_uint64 (gst_buffer_get_size (out), 3 * 64 * 48 * 1 * 4);
  gst_buffer_map (out, &map, GST_MAP_READ);
  gst_buffer_map (in, &imap, GST_MAP_READ);
  /* interleaved HWC: element (c, x, y) at index (y * W + x) * 3 + c */
  for (i = 0; i < 64 * 48 * 3; i++)
    fail_unless (fabsf (((gfloat *) map.data)[i] - imap.data[i] / 255.0f)
        < 1e-6f);
  gst_buffer_unmap (in, &imap);
  gst_buffer_unmap (out, &map);
  gst_caps_unref (caps);
  gst_buffer_unref (in);
  gst_buffer_unref (out);
  gst_harness_teardown (hr);
}

GST_END_TEST;

GST_START_TEST (test_caps_video_stride)
{
  /* width 63: RGB rows padded to 192 bytes */
  GstHarness *hr = harness_new (63, 5, "video/x-raw");
  GstBuffer *in = make_buffer (63, 5, 192, fill_pattern, NULL), *out;
  GstCaps *caps;
  GstStructure *s;
  GstMapInfo map, imap;
  gint w, h, x, y;

  fail_unless_equals_int (gst_harness_push (hr, gst_buffer_ref (in)),
      GST_FLOW_OK);
  out = gst_harness_pull (hr);
  caps = gst_pad_get_current_caps (hr->sinkpad);
  s = gst_caps_get_structure (caps, 0);
  fail_unless (gst_structure_has_name (s, "video/x-raw"));
  fail_unless_equals_string (gst_structure_get_string (s, "format"), "RGB");
  fail_unless (gst_structure_get_int (s, "width", &w) && w == 63);
  fail_unless (gst_structure_get_int (s, "height", &h) && h == 5);
  fail_unless_equals_uint64 (gst_buffer_get_size (out), 192 * 5);
  gst_buffer_map (out, &map, GST_MAP_READ);
  gst_buffer_map (in, &imap, GST_MAP_READ);
  for (y = 0; y < 5; y++)
    for (x = 0; x < 63 * 3; x++)
      fail_unless_equals_int (map.data[y * 192 + x], imap.data[y * 192 + x]);
  fail_if (out == in);
  gst_buffer_unmap (in, &imap);
  gst_buffer_unmap (out, &map);
  gst_caps_unref (caps);
  gst_buffer_unref (in);
  gst_buffer_unref (out);
  gst_harness_teardown (hr);
}

GST_END_TEST;

/* Caps the element accepts upstream when downstream fixes @sink_caps. */
static GstCaps *
upstream_caps_for (const gchar * sink_caps)
{
  GstHarness *hr = gst_harness_new ("colornorm");
  GstCaps *res;

  gst_harness_set_sink_caps_str (hr, sink_caps);
  res = gst_pad_peer_query_caps (hr->srcpad, NULL);
  gst_harness_teardown (hr);
  return res;
}

GST_START_TEST (test_caps_reverse)
{
  GstCaps *c;
  GstStructure *s;
  gint w, h;

  c = upstream_caps_for ("other/tensors,format=static,num_tensors=1,"
      "types=float32,dimensions=3:32:16:1,framerate=0/1");
  fail_if (gst_caps_is_empty (c));
  s = gst_caps_get_structure (c, 0);
  fail_unless (gst_structure_has_name (s, "video/x-raw"));
  fail_unless_equals_string (gst_structure_get_string (s, "format"), "RGB");
  fail_unless (gst_structure_get_int (s, "width", &w) && w == 32);
  fail_unless (gst_structure_get_int (s, "height", &h) && h == 16);
  gst_caps_unref (c);

  /* trailing dimensions may be left out */
  c = upstream_caps_for ("other/tensors,format=static,num_tensors=1,"
      "types=float32,dimensions=3:20:10,framerate=0/1");
  s = gst_caps_get_structure (c, 0);
  fail_unless (gst_structure_get_int (s, "width", &w) && w == 20);
  gst_caps_unref (c);

  /* video downstream: same size video upstream */
  c = upstream_caps_for ("video/x-raw,format=RGB,width=7,height=9");
  s = gst_caps_get_structure (c, 0);
  fail_unless (gst_structure_get_int (s, "width", &w) && w == 7);
  gst_caps_unref (c);

  /* things colornorm cannot produce */
  c = upstream_caps_for ("other/tensors,format=static,num_tensors=1,"
      "types=uint8,dimensions=3:32:16:1");
  fail_unless (gst_caps_is_empty (c));
  gst_caps_unref (c);
  c = upstream_caps_for ("other/tensors,format=static,num_tensors=1,"
      "types=float32,dimensions=4:32:16:1");
  fail_unless (gst_caps_is_empty (c));
  gst_caps_unref (c);
  c = upstream_caps_for ("other/tensors,format=static,num_tensors=1,"
      "types=float32,dimensions=3:32:16:2");
  fail_unless (gst_caps_is_empty (c));
  gst_caps_unref (c);
  c = upstream_caps_for ("other/tensors,format=flexible,num_tensors=1");
  fail_unless (gst_caps_is_empty (c));
  gst_caps_unref (c);
  c = upstream_caps_for ("video/x-raw,format=GRAY8");
  fail_unless (gst_caps_is_empty (c));
  gst_caps_unref (c);
}

GST_END_TEST;

GST_START_TEST (test_caps_mismatch)
{
  /* downstream insists on 32x16 tensors, upstream sends 64x48 */
  GstHarness *hr = gst_harness_new ("colornorm");
  gchar *caps = rgb_caps (64, 48);

  gst_harness_set_sink_caps_str (hr, "other/tensors,format=static,"
      "num_tensors=1,types=float32,dimensions=3:32:16:1");
  gst_harness_set_src_caps_str (hr, caps);
  fail_if (gst_harness_push (hr, make_buffer (64, 48, 192, fill_pattern,
              NULL)) == GST_FLOW_OK);
  g_free (caps);
  gst_harness_teardown (hr);
}

GST_END_TEST;

/* --- meta ---------------------------------------------------------------- */

static void
check_meta_survives (const gchar * sink_caps, gint mode)
{
  GstHarness *hr = harness_new (32, 32, sink_caps);
  GstBuffer *in = make_buffer (32, 32, 96, fill_pattern, NULL), *out;
  GstWsiTileMeta *m = gst_wsi_tile_meta_add (in), *o;

  g_object_set (hr->element, "mode", mode, "fit", 0, NULL);
  gst_wsi_tile_meta_set_slide (m, "/slides/a.svs");
  m->level = 1;
  m->downsample = 4.0;
  m->x = 1000;
  m->y = -20;
  m->width = m->height = 32;
  m->valid_width = 30;
  m->valid_height = 29;
  m->pad_left = 2;
  m->pad_top = 3;
  m->col = 3;
  m->row = 5;
  m->frame = 17;
  m->tissue_fraction = 0.5;
  fail_unless_equals_int (gst_harness_push (hr, in), GST_FLOW_OK);
  out = gst_harness_pull (hr);
  o = gst_buffer_get_wsi_tile_meta (out);
  fail_unless (o != NULL);
  fail_unless_equals_string (o->slide, "/slides/a.svs");
  fail_unless (o->level == 1 && o->downsample == 4.0 && o->x == 1000
      && o->y == -20 && o->valid_width == 30 && o->valid_height == 29
      && o->pad_left == 2 && o->pad_top == 3 && o->col == 3 && o->row == 5
      && o->frame == 17 && o->tissue_fraction == 0.5);
  gst_buffer_unref (out);
  gst_harness_teardown (hr);
}

GST_START_TEST (test_meta)
{
  check_meta_survives (NULL, 0);
  check_meta_survives ("video/x-raw", 0);
  check_meta_survives (NULL, 4);
  check_meta_survives ("video/x-raw", 5);
}

GST_END_TEST;

/* --- degenerate patches ------------------------------------------------ */

/* Runs one constant-colour patch through every mode and fit; nothing may be
 * NaN/Inf, and the documented results must come out. */
static void
check_flat (const guint8 * colour)
{
  gint mode, fit;

  for (mode = 0; mode <= 5; mode++) {
    for (fit = 0; fit <= 1; fit++) {
      GstHarness *hr = harness_new (32, 32, NULL);
      GstBuffer *out;
      GstMapInfo map;
      gboolean fitted = TRUE;
      gsize i;

      g_object_set (hr->element, "mode", mode, "fit", fit, "fit-patches", 2,
          NULL);
      fail_unless_equals_int (gst_harness_push (hr, make_buffer (32, 32, 96,
                  fill_const, (gpointer) colour)), GST_FLOW_OK);
      /* first-patches: the buffer is held until EOS */
      gst_harness_push_event (hr, gst_event_new_eos ());
      out = gst_harness_pull (hr);
      gst_buffer_map (out, &map, GST_MAP_READ);
      fail_unless (all_finite ((gfloat *) map.data, 32 * 32 * 3));
      for (i = 0; i < 32 * 32 * 3; i++) {
        gfloat v = ((gfloat *) map.data)[i], want;
        guint8 x = colour[i % 3];
        switch (mode) {
          case 1:
            want = x / 127.5f - 1.0f;
            break;
          case 2:
            want = (gfloat) ((x / 255.0 - (gdouble[]) {
                    0.485, 0.456, 0.406}[i % 3]) / (gdouble[]) {
                  0.229, 0.224, 0.225}[i % 3]);
            break;
          case 3:
            want = 0.0f;        /* flat channel: centred, not scaled */
            break;
          default:
            want = x / 255.0f;  /* stain modes: unchanged */
            break;
        }
        fail_unless (fabsf (v - want) < 1e-5f, "mode %d fit %d colour "
            "%d,%d,%d: %f != %f", mode, fit, colour[0], colour[1], colour[2],
            v, want);
      }
      gst_buffer_unmap (out, &map);
      gst_buffer_unref (out);
      if (mode >= 4) {
        g_object_get (hr->element, "source-fitted", &fitted, NULL);
        fail_if (fitted, "a flat patch cannot be fitted");
      }
      gst_harness_teardown (hr);
    }
  }
}

GST_START_TEST (test_degenerate)
{
  static const guint8 white[3] = { 255, 255, 255 };
  static const guint8 black[3] = { 0, 0, 0 };
  static const guint8 pink[3] = { 200, 120, 170 };
  static const guint8 grey[3] = { 128, 128, 128 };

  check_flat (white);
  check_flat (black);
  check_flat (pink);
  check_flat (grey);
}

GST_END_TEST;

GST_START_TEST (test_single_stain)
{
  /* eosin only: one OD direction, Macenko cannot separate two stains */
  StainImage img = { {0.0, 0.0, 0.0}, {0.07, 0.99, 0.11}, 1 };
  GstHarness *hr = harness_new (64, 64, "video/x-raw");
  GstBuffer *in = make_buffer (64, 64, 192, fill_stain, &img), *out;
  GstMapInfo a, b;
  gboolean fitted = TRUE;

  g_object_set (hr->element, "mode", 5, "fit", 0, NULL);
  gst_harness_push (hr, gst_buffer_ref (in));
  out = gst_harness_pull (hr);
  g_object_get (hr->element, "source-fitted", &fitted, NULL);
  fail_if (fitted);
  gst_buffer_map (in, &a, GST_MAP_READ);
  gst_buffer_map (out, &b, GST_MAP_READ);
  fail_unless (memcmp (a.data, b.data, a.size) == 0);
  gst_buffer_unmap (in, &a);
  gst_buffer_unmap (out, &b);
  gst_buffer_unref (in);
  gst_buffer_unref (out);
  gst_harness_teardown (hr);
}

GST_END_TEST;

/* --- fit once per slide -------------------------------------------------- */

static GstBuffer *
slide_buffer (StainImage * img, const gchar * slide)
{
  GstBuffer *b = make_buffer (64, 64, 192, fill_stain, img);
  GstWsiTileMeta *m = gst_wsi_tile_meta_add (b);

  gst_wsi_tile_meta_set_slide (m, slide);
  return b;
}

/* Output of @img normalised on its own (per patch), as reference. */
static GstBuffer *
per_patch_output (gint mode, StainImage * img)
{
  GstHarness *hr = harness_new (64, 64, "video/x-raw");
  GstBuffer *out;

  g_object_set (hr->element, "mode", mode, "fit", 0, NULL);
  gst_harness_push (hr, slide_buffer (img, "x"));
  out = gst_harness_pull (hr);
  gst_harness_teardown (hr);
  return out;
}

static gboolean
same_pixels (GstBuffer * a, GstBuffer * b)
{
  GstMapInfo ma, mb;
  gboolean same;

  gst_buffer_map (a, &ma, GST_MAP_READ);
  gst_buffer_map (b, &mb, GST_MAP_READ);
  same = ma.size == mb.size && memcmp (ma.data, mb.data, ma.size) == 0;
  gst_buffer_unmap (a, &ma);
  gst_buffer_unmap (b, &mb);
  return same;
}

static gint
max_abs_diff (GstBuffer * a, GstBuffer * b)
{
  GstMapInfo ma, mb;
  gint d = 256;
  gsize i;

  gst_buffer_map (a, &ma, GST_MAP_READ);
  gst_buffer_map (b, &mb, GST_MAP_READ);
  if (ma.size == mb.size)
    for (i = 0, d = 0; i < ma.size; i++)
      d = MAX (d, abs ((gint) ma.data[i] - (gint) mb.data[i]));
  gst_buffer_unmap (a, &ma);
  gst_buffer_unmap (b, &mb);
  return d;
}

static void
check_two_slides (gint mode)
{
  /* same image three times per slide: the slide estimate equals the
   * per-patch estimate of that image */
  StainImage a = { {0.65, 0.70, 0.29}, {0.07, 0.99, 0.11}, 1 };
  StainImage b = { {0.45, 0.80, 0.40}, {0.20, 0.90, 0.35}, 2 };
  GstHarness *hr = harness_new (64, 64, "video/x-raw");
  GstBuffer *ra = per_patch_output (mode, &a), *rb = per_patch_output (mode,
      &b), *out, *first = NULL;
  gdouble va[6], vb[6];
  const gchar *prop = mode == 4 ? "source-lab-mean" : "source-stain-matrix";
  guint n = mode == 4 ? 3 : 6, i;

  g_object_set (hr->element, "mode", mode, "fit", 1, "fit-patches", 2, NULL);
  gst_harness_push (hr, slide_buffer (&a, "A"));
  fail_unless_equals_int (gst_harness_buffers_received (hr), 0);
  gst_harness_push (hr, slide_buffer (&a, "A"));
  fail_unless_equals_int (gst_harness_buffers_received (hr), 2);
  get_doubles (hr->element, prop, va, n);
  gst_harness_push (hr, slide_buffer (&a, "A"));
  fail_unless_equals_int (gst_harness_buffers_received (hr), 3);
  gst_harness_push (hr, slide_buffer (&b, "B"));
  fail_unless_equals_int (gst_harness_buffers_received (hr), 3);
  gst_harness_push (hr, slide_buffer (&b, "B"));
  fail_unless_equals_int (gst_harness_buffers_received (hr), 5);
  gst_harness_push (hr, slide_buffer (&b, "B"));
  get_doubles (hr->element, prop, vb, n);
  /* one estimate for all buffers of a slide, held ones included; it equals
   * the single image's (up to float rounding and percentile positions) */
  for (i = 0; i < 6; i++) {
    out = gst_harness_pull (hr);
    fail_unless (max_abs_diff (out, i < 3 ? ra : rb) <= 2, "buffer %u", i);
    if (i % 3 == 0)
      gst_buffer_replace (&first, out);
    else
      fail_unless (same_pixels (out, first), "buffer %u", i);
    fail_unless_equals_string (gst_buffer_get_wsi_tile_meta (out)->slide,
        i < 3 ? "A" : "B");
    gst_buffer_unref (out);
  }
  gst_buffer_unref (first);
  fail_unless (max_abs_diff (ra, rb) > 10);
  fail_if (memcmp (va, vb, n * sizeof (gdouble)) == 0, "refit on slide B");
  gst_buffer_unref (ra);
  gst_buffer_unref (rb);
  gst_harness_teardown (hr);
}

GST_START_TEST (test_fit_once_slides)
{
  check_two_slides (4);
  check_two_slides (5);
}

GST_END_TEST;

GST_START_TEST (test_fit_once_eos_and_cap)
{
  StainImage a = { {0.65, 0.70, 0.29}, {0.07, 0.99, 0.11}, 3 };
  static const guint8 white[3] = { 250, 250, 250 };
  GstHarness *hr = harness_new (64, 64, NULL);
  GstEvent *ev;
  guint i;

  /* fewer tissue patches than fit-patches: released at EOS, before it */
  g_object_set (hr->element, "mode", 4, "fit", 1, "fit-patches", 5, NULL);
  gst_harness_push (hr, slide_buffer (&a, "A"));
  gst_harness_push (hr, slide_buffer (&a, "A"));
  fail_unless_equals_int (gst_harness_buffers_received (hr), 0);
  gst_harness_push_event (hr, gst_event_new_eos ());
  fail_unless_equals_int (gst_harness_buffers_received (hr), 2);
  while ((ev = gst_harness_try_pull_event (hr))) {
    if (GST_EVENT_TYPE (ev) == GST_EVENT_EOS)
      fail_unless_equals_int (gst_harness_buffers_in_queue (hr), 2);
    gst_event_unref (ev);
  }
  gst_harness_teardown (hr);

  /* background only: held at most 4 * fit-patches + 32 buffers */
  hr = harness_new (16, 16, NULL);
  g_object_set (hr->element, "mode", 5, "fit", 1, "fit-patches", 1, NULL);
  for (i = 0; i < 40; i++)
    gst_harness_push (hr, make_buffer (16, 16, 48, fill_const,
            (gpointer) white));
  fail_unless_equals_int (gst_harness_buffers_received (hr), 36);
  gst_harness_teardown (hr);
}

GST_END_TEST;

/* --- thumbnail ----------------------------------------------------------- */

GST_START_TEST (test_thumbnail)
{
  const gchar *slide = g_getenv ("WSISEG_SAMPLE_SLIDE");
  StainImage a = { {0.65, 0.70, 0.29}, {0.07, 0.99, 0.11}, 4 };
  gdouble got[6], want[6], gotc[2], wantc[2];
  gboolean fitted;
  GstHarness *hr;
  gint mode, i;

  if (!slide || !g_file_test (slide, G_FILE_TEST_EXISTS)) {
    g_print ("SKIP part: no sample slide\n");
    return;
  }
  for (mode = 4; mode <= 5; mode++) {
    hr = harness_new (64, 64, NULL);
    g_object_set (hr->element, "mode", mode, "fit", 2, "fit-patches", 8,
        NULL);
    gst_harness_push (hr, slide_buffer (&a, slide));
    /* estimated from the slide at once: nothing held */
    fail_unless_equals_int (gst_harness_buffers_received (hr), 1);
    g_object_get (hr->element, "source-fitted", &fitted, NULL);
    fail_unless (fitted);
    /* the built-in target is the fit on the full sample slide; the
     * overview is that slide subsampled 2x, so they agree closely */
    if (mode == 4) {
      get_doubles (hr->element, "source-lab-mean", got, 3);
      get_doubles (hr->element, "target-lab-mean", want, 3);
      for (i = 0; i < 3; i++)
        fail_unless (fabs (got[i] - want[i]) < 0.3, "L*a*b* %d: %f vs %f", i,
            got[i], want[i]);
    } else {
      get_doubles (hr->element, "source-stain-matrix", got, 6);
      get_doubles (hr->element, "target-stain-matrix", want, 6);
      get_doubles (hr->element, "source-max-conc", gotc, 2);
      get_doubles (hr->element, "target-max-conc", wantc, 2);
      for (i = 0; i < 6; i++)
        fail_unless (fabs (got[i] - want[i]) < 0.01, "stain %d: %f vs %f", i,
            got[i], want[i]);
      for (i = 0; i < 2; i++)
        fail_unless (fabs (gotc[i] - wantc[i]) < 0.05);
    }
    gst_harness_teardown (hr);
  }

  /* not a slide: warning, then the first tissue patches are used */
  hr = harness_new (64, 64, NULL);
  g_object_set (hr->element, "mode", 4, "fit", 2, "fit-patches", 2, NULL);
  gst_harness_push (hr, slide_buffer (&a, "/nonexistent/slide.svs"));
  fail_unless_equals_int (gst_harness_buffers_received (hr), 0);
  gst_harness_push (hr, slide_buffer (&a, "/nonexistent/slide.svs"));
  fail_unless_equals_int (gst_harness_buffers_received (hr), 2);
  g_object_get (hr->element, "source-fitted", &fitted, NULL);
  fail_unless (fitted);
  gst_harness_teardown (hr);
}

GST_END_TEST;

/* --- bad target images --------------------------------------------------- */

static void
write_white_png (const gchar * path)
{
  FILE *fp = fopen (path, "wb");
  png_structp png = png_create_write_struct (PNG_LIBPNG_VER_STRING, NULL,
      NULL, NULL);
  png_infop info = png_create_info_struct (png);
  guint8 row[16 * 3];
  gint y;

  memset (row, 255, sizeof (row));
  png_init_io (png, fp);
  png_set_IHDR (png, info, 16, 16, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
      PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info (png, info);
  for (y = 0; y < 16; y++)
    png_write_row (png, row);
  png_write_end (png, NULL);
  png_destroy_write_struct (&png, &info);
  fclose (fp);
}

/* Starting with @path as target fails with an error naming it. */
static void
check_bad_target (const gchar * path)
{
  GstElement *el = gst_element_factory_make ("colornorm", NULL);
  GstBus *bus = gst_bus_new ();
  GstMessage *msg;
  GError *err = NULL;
  gchar *dbg = NULL;

  gst_element_set_bus (el, bus);
  g_object_set (el, "target-location", path, "mode", 4, NULL);
  fail_unless_equals_int (gst_element_set_state (el, GST_STATE_PAUSED),
      GST_STATE_CHANGE_FAILURE);
  msg = gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR);
  fail_unless (msg != NULL, "no error for %s", path);
  gst_message_parse_error (msg, &err, &dbg);
  GST_INFO ("%s: %s (%s)", path, err->message, dbg);
  fail_unless (strstr (err->message, path) != NULL);
  g_error_free (err);
  g_free (dbg);
  gst_message_unref (msg);
  gst_element_set_state (el, GST_STATE_NULL);
  gst_element_set_bus (el, NULL);
  gst_object_unref (bus);
  gst_object_unref (el);
}

GST_START_TEST (test_bad_target)
{
  gchar *dir = g_dir_make_tmp ("colornorm-XXXXXX", NULL);
  gchar *text = g_build_filename (dir, "text.png", NULL);
  gchar *trunc = g_build_filename (dir, "trunc.png", NULL);
  gchar *white = g_build_filename (dir, "white.png", NULL);
  gchar *missing = g_build_filename (dir, "missing.png", NULL);
  gchar *data;
  gsize len;

  g_file_set_contents (text, "not a png at all", -1, NULL);
  write_white_png (white);
  /* a valid header with the image data cut off */
  g_file_get_contents (white, &data, &len, NULL);
  g_file_set_contents (trunc, data, MIN (len, 45), NULL);
  g_free (data);
  check_bad_target (missing);
  check_bad_target (text);
  check_bad_target (trunc);
  check_bad_target (white);
  g_unlink (text);
  g_unlink (trunc);
  g_unlink (white);
  g_rmdir (dir);
  g_free (text);
  g_free (trunc);
  g_free (white);
  g_free (missing);
  g_free (dir);
}

GST_END_TEST;

/* --- properties read while streaming ------------------------------------ */

static gpointer
reader (gpointer data)
{
  GstElement *el = data;
  gint i;

  for (i = 0; i < 2000; i++) {
    gdouble v[6];
    gboolean fitted;
    get_doubles (el, "source-lab-mean", v, 3);
    get_doubles (el, "source-stain-matrix", v, 6);
    g_object_get (el, "source-fitted", &fitted, NULL);
    fail_unless (isfinite (v[0]));
  }
  return NULL;
}

GST_START_TEST (test_properties_threaded)
{
  StainImage a = { {0.65, 0.70, 0.29}, {0.07, 0.99, 0.11}, 5 };
  GstHarness *hr = harness_new (64, 64, NULL);
  GThread *t;
  gint i;

  g_object_set (hr->element, "mode", 5, "fit", 0, NULL);
  t = g_thread_new ("reader", reader, hr->element);
  for (i = 0; i < 30; i++) {
    a.seed = i;
    g_object_set (hr->element, "mode", 4 + (i & 1), NULL);
    gst_harness_push (hr, slide_buffer (&a, "A"));
    gst_buffer_unref (gst_harness_pull (hr));
  }
  g_thread_join (t);
  gst_harness_teardown (hr);
}

GST_END_TEST;

/* --- issue 9: latency, event order, notifications ------------------------ */

GST_START_TEST (test_latency_held)
{
  GstHarness *hr = harness_new (16, 16, NULL);
  GstClockTime frame = GST_SECOND / 5;  /* framerate 5/1 */

  gst_harness_set_live (hr, TRUE);
  gst_harness_set_upstream_latency (hr, 10 * GST_MSECOND);
  /* nothing held: upstream's latency */
  fail_unless_equals_uint64 (gst_harness_query_latency (hr),
      10 * GST_MSECOND);
  /* first-patches holds up to 4 * fit-patches + 32 buffers */
  g_object_set (hr->element, "mode", 5, "fit", 1, "fit-patches", 8, NULL);
  fail_unless_equals_uint64 (gst_harness_query_latency (hr),
      10 * GST_MSECOND + 64 * frame);
  g_object_set (hr->element, "fit", 0, NULL);   /* per-patch: none */
  fail_unless_equals_uint64 (gst_harness_query_latency (hr),
      10 * GST_MSECOND);
  gst_harness_teardown (hr);
}

GST_END_TEST;

static GstPadProbeReturn
record_probe (GstPad * pad, GstPadProbeInfo * info, gpointer data)
{
  GString *seq = data;

  if (info->type & GST_PAD_PROBE_TYPE_BUFFER)
    g_string_append_c (seq, 'B');
  else if (info->type & GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM) {
    switch (GST_EVENT_TYPE (GST_PAD_PROBE_INFO_EVENT (info))) {
      case GST_EVENT_GAP:
        g_string_append_c (seq, 'G');
        break;
      case GST_EVENT_CUSTOM_DOWNSTREAM:
        g_string_append_c (seq, 'C');
        break;
      case GST_EVENT_TAG:
        g_string_append_c (seq, 'T');
        break;
      case GST_EVENT_EOS:
        g_string_append_c (seq, 'E');
        break;
      default:
        break;
    }
  }
  return GST_PAD_PROBE_OK;
}

GST_START_TEST (test_events_in_order)
{
  StainImage a = { {0.65, 0.70, 0.29}, {0.07, 0.99, 0.11}, 3 };
  GstHarness *hr = harness_new (64, 64, NULL);
  GstPad *src = gst_element_get_static_pad (hr->element, "src");
  GString *seq = g_string_new (NULL);

  /* two buffers held for the estimate, then GAP, TAG, custom: they stay
   * behind the held buffers; the third tissue patch ends the fit */
  g_object_set (hr->element, "mode", 5, "fit", 1, "fit-patches", 3, NULL);
  gst_pad_add_probe (src, GST_PAD_PROBE_TYPE_BUFFER |
      GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM, record_probe, seq, NULL);
  gst_harness_push (hr, slide_buffer (&a, "A"));
  gst_harness_push (hr, slide_buffer (&a, "A"));
  fail_unless (gst_harness_push_event (hr, gst_event_new_gap (0,
              GST_SECOND)));
  fail_unless (gst_harness_push_event (hr,
          gst_event_new_tag (gst_tag_list_new (GST_TAG_TITLE, "t", NULL))));
  fail_unless (gst_harness_push_event (hr,
          gst_event_new_custom (GST_EVENT_CUSTOM_DOWNSTREAM,
              gst_structure_new_empty ("wsi-test"))));
  fail_unless_equals_string (seq->str, "");
  gst_harness_push (hr, slide_buffer (&a, "A"));
  gst_harness_push (hr, slide_buffer (&a, "A"));
  fail_unless_equals_string (seq->str, "BBGTCBB");
  /* events after the last held buffer go out before EOS */
  g_object_set (hr->element, "fit-patches", 10, NULL);
  gst_harness_push (hr, slide_buffer (&a, "B"));
  fail_unless (gst_harness_push_event (hr, gst_event_new_gap (0,
              GST_SECOND)));
  gst_harness_push_event (hr, gst_event_new_eos ());
  fail_unless_equals_string (seq->str, "BBGTCBBBGE");
  gst_object_unref (src);
  g_string_free (seq, TRUE);
  gst_harness_teardown (hr);
}

GST_END_TEST;

static void
count_notify (GObject * obj, GParamSpec * pspec, gpointer data)
{
  if (g_str_has_prefix (pspec->name, "source-"))
    (*(gint *) data)++;
}

GST_START_TEST (test_notify_on_change)
{
  StainImage a = { {0.65, 0.70, 0.29}, {0.07, 0.99, 0.11}, 3 };
  GstHarness *hr = harness_new (64, 64, NULL);
  gint n = 0, i;

  g_signal_connect (hr->element, "notify", G_CALLBACK (count_notify), &n);
  /* per-patch estimates are periodic: silent unless post-messages */
  g_object_set (hr->element, "mode", 5, "fit", 0, NULL);
  for (i = 0; i < 4; i++) {
    a.seed = i;
    gst_buffer_unref (gst_harness_push_and_pull (hr, slide_buffer (&a,
                "A")));
  }
  fail_unless_equals_int (n, 0);
  g_object_set (hr->element, "post-messages", TRUE, NULL);
  for (i = 0; i < 4; i++) {
    a.seed = 10 + i;
    gst_buffer_unref (gst_harness_push_and_pull (hr, slide_buffer (&a,
                "A")));
  }
  /* the stain matrix and max concentrations change on each patch */
  fail_unless (n >= 4 && n <= 8, "%d notifications", n);
  /* the same patch again: nothing changed, nothing notified */
  n = 0;
  gst_buffer_unref (gst_harness_push_and_pull (hr, slide_buffer (&a, "A")));
  fail_unless_equals_int (n, 0);
  /* once per slide with fit=first-patches, without post-messages */
  g_object_set (hr->element, "post-messages", FALSE, "fit", 1,
      "fit-patches", 2, NULL);
  for (i = 0; i < 6; i++) {
    a.seed = 20 + i;
    gst_harness_push (hr, slide_buffer (&a, i < 3 ? "C" : "D"));
  }
  gst_harness_push_event (hr, gst_event_new_eos ());
  fail_unless (n >= 2 && n <= 6, "%d notifications for 2 slides", n);
  gst_harness_teardown (hr);
}

GST_END_TEST;

GST_START_TEST (test_bad_array_no_gwarning)
{
  /* a wrong array is a warning message, not g_warning (fatal here) */
  GstElement *el = gst_element_factory_make ("colornorm", NULL);
  GstBus *bus = gst_bus_new ();
  GValue arr = G_VALUE_INIT, v = G_VALUE_INIT;
  GstMessage *msg;
  gdouble std[3];

  gst_element_set_bus (el, bus);
  g_value_init (&arr, GST_TYPE_ARRAY);
  g_value_init (&v, G_TYPE_DOUBLE);
  g_value_set_double (&v, 0.0);
  gst_value_array_append_value (&arr, &v);
  gst_value_array_append_value (&arr, &v);
  gst_value_array_append_value (&arr, &v);
  g_object_set_property (G_OBJECT (el), "std", &arr);
  get_doubles (el, "std", std, 3);
  fail_unless (std[0] > 0.2 && std[0] < 0.3);
  msg = gst_bus_pop_filtered (bus, GST_MESSAGE_WARNING);
  fail_unless (msg != NULL);
  gst_message_unref (msg);
  g_value_unset (&v);
  g_value_unset (&arr);
  gst_element_set_bus (el, NULL);
  gst_object_unref (bus);
  gst_object_unref (el);
}

GST_END_TEST;

/* --- helpers ------------------------------------------------------------- */

static gint
cmp_float (const void *a, const void *b)
{
  gfloat x = *(const gfloat *) a, y = *(const gfloat *) b;
  return x < y ? -1 : x > y;
}

/* The one tensor-caps rule (gst/gstwsitensor.h) that colornorm,
 * segment-fcn and stitchsink share (issue 10). */
GST_START_TEST (test_tensor_caps_rule)
{
  GstStructure *st;
  gint c = 0, w = 0, h = 0;

  fail_unless (gst_wsi_tensor_parse_dims ("3:32:16:1", &c, &w, &h));
  fail_unless (c == 3 && w == 32 && h == 16);
  fail_unless (gst_wsi_tensor_parse_dims ("7:20:10", &c, &w, &h));
  fail_unless (c == 7 && w == 20 && h == 10);
  fail_unless (gst_wsi_tensor_parse_dims (" 2 : 4 : 5 : 1 ", NULL, &w, NULL));
  fail_unless_equals_int (w, 4);
  fail_unless (gst_wsi_tensor_parse_dims ("1:65536:1:1", NULL, NULL, NULL));
  fail_if (gst_wsi_tensor_parse_dims ("1:65537:1:1", NULL, NULL, NULL));
  fail_if (gst_wsi_tensor_parse_dims ("3:32:16:2", NULL, NULL, NULL));
  fail_if (gst_wsi_tensor_parse_dims ("3:32:16:1:1", NULL, NULL, NULL));
  fail_if (gst_wsi_tensor_parse_dims ("0:32:16:1", NULL, NULL, NULL));
  fail_if (gst_wsi_tensor_parse_dims ("-3:32:16", NULL, NULL, NULL));
  fail_if (gst_wsi_tensor_parse_dims ("3:32", NULL, NULL, NULL));
  fail_if (gst_wsi_tensor_parse_dims ("3:x:16", NULL, NULL, NULL));
  fail_if (gst_wsi_tensor_parse_dims (NULL, NULL, NULL, NULL));

  st = gst_wsi_tensor_structure_new (5, 8, 9);
  fail_unless (gst_wsi_tensor_structure_parse (st, &c, &w, &h));
  fail_unless (c == 5 && w == 8 && h == 9);
  gst_structure_set (st, "types", G_TYPE_STRING, "uint8", NULL);
  fail_if (gst_wsi_tensor_structure_parse (st, &c, &w, &h));
  gst_structure_free (st);
  st = gst_wsi_tensor_structure_new (3, 0, 0);
  fail_if (gst_structure_has_field (st, "dimensions"));
  gst_structure_free (st);
}

GST_END_TEST;

GST_START_TEST (test_helpers)
{
  static const gdouble p[] = { 0, 1, 25, 50, 99, 100 };
  GRand *r = g_rand_new_with_seed (9);
  gdouble lab[3];
  gsize n;
  guint i, k;

  /* percentile: numpy's linear interpolation, vs a sorted copy */
  for (n = 1; n < 300; n += (n < 20 ? 1 : 37)) {
    gfloat *v = g_new (gfloat, n), *s = g_new (gfloat, n), *w =
        g_new (gfloat, n);
    for (i = 0; i < n; i++)
      v[i] = (gfloat) (g_rand_int_range (r, 0, 7) + (n > 50 ?
              g_rand_double (r) : 0));
    memcpy (s, v, n * sizeof (gfloat));
    qsort (s, n, sizeof (gfloat), cmp_float);
    for (k = 0; k < G_N_ELEMENTS (p); k++) {
      gdouble pos = p[k] / 100.0 * (n - 1), want;
      gsize lo = (gsize) floor (pos);
      want = s[lo] + (lo + 1 < n ? (s[lo + 1] - s[lo]) * (pos - lo) : 0);
      memcpy (w, v, n * sizeof (gfloat));
      fail_unless (fabs (wsi_percentile (w, n, p[k]) - want) < 1e-5,
          "n=%" G_GSIZE_FORMAT " p=%g", n, p[k]);
    }
    g_free (v);
    g_free (s);
    g_free (w);
  }
  g_rand_free (r);

  /* L*a*b* of white, black and sRGB red (published values) */
  wsi_rgb8_to_lab ((const guint8[]) { 255, 255, 255 }, lab);
  fail_unless (fabs (lab[0] - 100) < 1e-3 && fabs (lab[1]) < 1e-2
      && fabs (lab[2]) < 1e-2);
  wsi_rgb8_to_lab ((const guint8[]) { 0, 0, 0 }, lab);
  fail_unless (fabs (lab[0]) < 1e-9 && fabs (lab[1]) < 1e-9);
  wsi_rgb8_to_lab ((const guint8[]) { 255, 0, 0 }, lab);
  fail_unless (fabs (lab[0] - 53.2406) < 1e-3 && fabs (lab[1] - 80.0923)
      < 1e-3 && fabs (lab[2] - 67.2032) < 1e-3, "%f %f %f", lab[0], lab[1],
      lab[2]);
}

GST_END_TEST;

static Suite *
colornorm_suite (void)
{
  Suite *s = suite_create ("colornorm");
  TCase *tc = tcase_create ("general");

  tcase_set_timeout (tc, 60);
  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_caps_tensor);
  tcase_add_test (tc, test_caps_video_stride);
  tcase_add_test (tc, test_caps_reverse);
  tcase_add_test (tc, test_caps_mismatch);
  tcase_add_test (tc, test_meta);
  tcase_add_test (tc, test_degenerate);
  tcase_add_test (tc, test_single_stain);
  tcase_add_test (tc, test_fit_once_slides);
  tcase_add_test (tc, test_fit_once_eos_and_cap);
  tcase_add_test (tc, test_thumbnail);
  tcase_add_test (tc, test_bad_target);
  tcase_add_test (tc, test_properties_threaded);
  tcase_add_test (tc, test_helpers);
  tcase_add_test (tc, test_tensor_caps_rule);
  tcase_add_test (tc, test_latency_held);
  tcase_add_test (tc, test_events_in_order);
  tcase_add_test (tc, test_notify_on_change);
  tcase_add_test (tc, test_bad_array_no_gwarning);
  return s;
}

GST_CHECK_MAIN (colornorm);
