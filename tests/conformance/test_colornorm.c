/* Conformance: colornorm (docs/conformance.md). Outputs are checked against
 * the input pixels: rescale01 tensors are x / 255, RGB video output of
 * rescale01 is the input itself, at the strides GstVideoInfo gives. */
#include "conformance.h"

#include <glib/gstdio.h>

static GstHarness *
cn_harness (const gchar * props, gint w, gint h, const gchar * sink_caps)
{
  gchar *desc = g_strdup_printf ("colornorm name=cn %s", props ? props : "");
  gchar *caps = conf_rgb_caps (w, h);
  GstHarness *hr = gst_harness_new_parse (desc);

  gst_harness_set_src_caps_str (hr, caps);
  if (sink_caps)
    gst_harness_set_sink_caps_str (hr, sink_caps);
  g_free (caps);
  g_free (desc);
  return hr;
}

static GstElement *
cn_element (GstHarness * h)
{
  return gst_bin_get_by_name (GST_BIN (h->element), "cn");
}

static GstBus *
attach_bus (GstHarness * h)
{
  GstBus *bus = gst_bus_new ();
  gst_element_set_bus (h->element, bus);
  return bus;
}

/* Tissue-like colours (H&E pink/purple) so that stain fits succeed. */
static GstBuffer *
he_patch (gint w, gint h, guint seed, gboolean meta, const gchar * slide)
{
  GstBuffer *b = conf_rgb_patch (w, h, seed, meta, 0, 0);
  GstVideoInfo info;
  GstVideoFrame f;

  gst_video_info_set_format (&info, GST_VIDEO_FORMAT_RGB, w, h);
  gst_video_frame_map (&f, &info, b, GST_MAP_WRITE);
  for (gint y = 0; y < h; y++) {
    guint8 *row = (guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&f, 0) +
        (gsize) y * GST_VIDEO_FRAME_PLANE_STRIDE (&f, 0);
    for (gint x = 0; x < w; x++) {
      guint t = (x * 7 + y * 3 + seed * 11) % 64;
      row[3 * x] = 150 + t / 2;
      row[3 * x + 1] = 60 + ((x + y + seed) % 2 ? t : 60 - t / 2);
      row[3 * x + 2] = 140 + t / 3;
    }
  }
  gst_video_frame_unmap (&f);
  if (meta && slide)
    gst_wsi_tile_meta_set_slide (gst_buffer_get_wsi_tile_meta (b), slide);
  return b;
}

/* NULL when @out is the rescale01 tensor (or RGB video copy) of @in. */
static gchar *
check_output (GstBuffer * in, GstBuffer * out, gint w, gint h,
    gboolean tensor)
{
  GstVideoInfo info;
  GstVideoFrame fi, fo;
  GstMapInfo mo;
  gchar *why = NULL;

  gst_video_info_set_format (&info, GST_VIDEO_FORMAT_RGB, w, h);
  if (!gst_video_frame_map (&fi, &info, in, GST_MAP_READ))
    return g_strdup ("input not mappable");
  if (tensor) {
    gst_buffer_map (out, &mo, GST_MAP_READ);
    if (mo.size != (gsize) w * h * 3 * sizeof (gfloat))
      why = g_strdup_printf ("tensor of %" G_GSIZE_FORMAT " bytes", mo.size);
    for (gint y = 0; !why && y < h; y++) {
      const guint8 *src = (const guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&fi,
          0) + (gsize) y * GST_VIDEO_FRAME_PLANE_STRIDE (&fi, 0);
      const gfloat *t = (const gfloat *) mo.data + (gsize) y * w * 3;
      for (gint x = 0; !why && x < w * 3; x++)
        if (fabsf (t[x] - src[x] / 255.0f) > 1e-6f)
          why = g_strdup_printf ("value %d of row %d is %g, expected %g", x,
              y, t[x], src[x] / 255.0);
    }
    gst_buffer_unmap (out, &mo);
  } else {
    if (!gst_video_frame_map (&fo, &info, out, GST_MAP_READ)) {
      why = g_strdup_printf ("output of %" G_GSIZE_FORMAT " bytes does not "
          "hold a %dx%d RGB frame", gst_buffer_get_size (out), w, h);
    } else {
      for (gint y = 0; !why && y < h; y++)
        if (memcmp ((guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&fi, 0) +
                (gsize) y * GST_VIDEO_FRAME_PLANE_STRIDE (&fi, 0),
                (guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&fo, 0) +
                (gsize) y * GST_VIDEO_FRAME_PLANE_STRIDE (&fo, 0), w * 3))
          why = g_strdup_printf ("row %d differs", y);
      gst_video_frame_unmap (&fo);
    }
  }
  gst_video_frame_unmap (&fi);
  return why;
}

static gint
pull_all (GstHarness * h)
{
  GstBuffer *b;
  gint n = 0;

  while ((b = gst_harness_try_pull (h))) {
    gst_buffer_unref (b);
    n++;
  }
  return n;
}

/* ------------------------------------------------------------ situations */

static void
check_flushing_seek (void)
{
  const gchar *slide = g_getenv ("WSISEG_SAMPLE_SLIDE");
  gchar *desc, *err, *err2 = NULL;

  /* held buffers (fit=first-patches) when the seek flushes */
  err = conf_run_pipeline ("videotestsrc num-buffers=150 ! "
      "video/x-raw,format=RGB,width=63,height=33,framerate=100/1 ! "
      "colornorm mode=macenko fit=first-patches fit-patches=64 ! "
      "fakesink sync=true", 0.3, 60);
  if (slide && g_file_test (slide, G_FILE_TEST_EXISTS)) {
    desc = g_strdup_printf ("slidesrc location=%s region=0,0,1024,768 ! "
        "patchify patch-size=125 ! colornorm mode=reinhard "
        "fit=first-patches ! identity sleep-time=10000 ! fakesink", slide);
    err2 = conf_run_pipeline (desc, 0.3, 120);
    g_free (desc);
  } else {
    err2 = g_strdup ("sample slide missing (WSISEG_SAMPLE_SLIDE)");
  }
  conf_result ("flushing-seek", !err && !err2, "videotestsrc (width 63) ! "
      "colornorm macenko first-patches: %s; slidesrc ! patchify 125 ! "
      "colornorm reinhard: %s", err ? err : "EOS after seek",
      err2 ? err2 : "EOS after seek");
  g_free (err);
  g_free (err2);
}

static void
check_flush (void)
{
  GstHarness *h = cn_harness ("mode=macenko fit=first-patches fit-patches=4",
      32, 32, NULL);
  gint before, after, i;
  gboolean eos;

  /* 3 held (estimate pending), flush: dropped; then 6 new + EOS */
  for (i = 0; i < 3; i++)
    gst_harness_push (h, he_patch (32, 32, i, TRUE, "a"));
  before = pull_all (h);
  conf_push_flush (h);
  conf_drain (h);
  for (i = 0; i < 6; i++)
    gst_harness_push (h, he_patch (32, 32, 10 + i, TRUE, "a"));
  gst_harness_push_event (h, gst_event_new_eos ());
  after = pull_all (h);
  eos = conf_saw_eos (h);
  conf_result ("flush", before == 0 && after == 6 && eos,
      "3 buffers held for the estimate, FLUSH_START/STOP, 6 more, EOS: %d "
      "before the flush, %d after (6 expected), EOS %s", before, after,
      eos ? "forwarded" : "LOST");
  gst_harness_teardown (h);
}

static void
check_eos_no_data (void)
{
  GstHarness *h = cn_harness ("mode=macenko fit=first-patches", 16, 16,
      NULL);
  GstBus *bus = attach_bus (h);
  gchar *err;
  gboolean eos;
  gint n;

  gst_harness_push_event (h, gst_event_new_eos ());
  n = pull_all (h);
  eos = conf_saw_eos (h);
  err = conf_bus_error (bus, NULL, NULL);
  conf_result ("eos-no-data", eos && n == 0 && !err, "EOS %s, %d buffers, "
      "%s", eos ? "forwarded" : "LOST", n, err ? err : "no error");
  g_free (err);
  gst_element_set_bus (h->element, NULL);
  gst_object_unref (bus);
  gst_harness_teardown (h);
}

typedef struct
{
  GstHarness *h;
  guint seed;
  gint pushed, pulled;
} Pump;

static void
pump (gpointer data)
{
  Pump *p = data;

  gst_harness_push (p->h, he_patch (24, 24, p->seed++, TRUE, "slide"));
  p->pushed++;
  p->pulled += pull_all (p->h);
}

static void
check_props_playing (void)
{
  GstHarness *h = cn_harness ("mode=rescale01", 24, 24, NULL);
  GstElement *cn = cn_element (h);
  GstBus *bus = attach_bus (h);
  Pump p = { h, 0, 0, 0 };
  const gchar *skip[] = { "qos", "name", "parent", "target-location", NULL };
  GValue arr = G_VALUE_INIT, one = G_VALUE_INIT, before = G_VALUE_INIT,
      after = G_VALUE_INIT;
  gchar *missing, *err;
  GQuark domain = 0;
  gint code = 0, bad;
  gboolean unchanged, warned = FALSE;
  GstMessage *m;

  /* every property is applied at the next buffer */
  bad = conf_props_while_playing (cn, skip, NULL, pump, &p);
  gst_harness_push_event (h, gst_event_new_eos ());
  p.pulled += pull_all (h);
  conf_result ("props-playing", p.pulled == p.pushed, "%d buffers pushed "
      "while the properties changed, %d came out", p.pushed, p.pulled);
  (void) bad;

  /* invalid values: std with a 0 and a 2-number mean are refused with a
   * warning (no g_warning: fatal here), the value stays */
  g_value_init (&before, GST_TYPE_ARRAY);
  g_object_get_property (G_OBJECT (cn), "std", &before);
  g_value_init (&arr, GST_TYPE_ARRAY);
  g_value_init (&one, G_TYPE_DOUBLE);
  g_value_set_double (&one, 0.5);
  gst_value_array_append_value (&arr, &one);
  g_value_set_double (&one, 0.0);
  gst_value_array_append_value (&arr, &one);
  gst_value_array_append_value (&arr, &one);
  g_object_set_property (G_OBJECT (cn), "std", &arr);
  g_object_set_property (G_OBJECT (cn), "mean", &arr);  /* valid */
  g_value_init (&after, GST_TYPE_ARRAY);
  g_object_get_property (G_OBJECT (cn), "std", &after);
  unchanged = gst_value_compare (&before, &after) == GST_VALUE_EQUAL;
  while ((m = gst_bus_pop (bus))) {
    warned |= GST_MESSAGE_TYPE (m) == GST_MESSAGE_WARNING;
    gst_message_unref (m);
  }
  g_value_unset (&arr);
  g_value_unset (&one);
  g_value_unset (&before);
  g_value_unset (&after);
  gst_object_unref (cn);
  gst_element_set_bus (h->element, NULL);
  gst_object_unref (bus);
  gst_harness_teardown (h);

  /* a missing target-location set while PLAYING: NOT_FOUND at the next
   * buffer */
  h = cn_harness ("mode=reinhard fit=per-patch", 24, 24, NULL);
  bus = attach_bus (h);
  cn = cn_element (h);
  gst_harness_push (h, he_patch (24, 24, 1, TRUE, "s"));
  missing = g_build_filename (g_get_tmp_dir (), "conf-colornorm-no-such.png",
      NULL);
  g_object_set (cn, "target-location", missing, NULL);
  gst_harness_push (h, he_patch (24, 24, 2, TRUE, "s"));
  err = conf_bus_error (bus, &domain, &code);
  conf_result ("props-playing", unchanged && warned && err
      && domain == GST_RESOURCE_ERROR && code == GST_RESOURCE_ERROR_NOT_FOUND,
      "std <0.5,0,0>: %s, %s; target-location missing while PLAYING: %s",
      unchanged ? "refused" : "ACCEPTED", warned ? "with a warning" :
      "no warning", err ? err : "no error");
  g_free (err);
  g_free (missing);
  gst_object_unref (cn);
  gst_element_set_bus (h->element, NULL);
  gst_object_unref (bus);
  gst_harness_teardown (h);
}

static void
check_renegotiation (void)
{
  GstHarness *h = cn_harness ("mode=macenko fit=first-patches fit-patches=8",
      64, 64, NULL);
  gsize sizes[6] = { 0 };
  gint n = 0, i;
  GstBuffer *b;
  gboolean order_ok = TRUE;
  gchar *caps = conf_rgb_caps (48, 30);

  /* 2 buffers held when the caps change: they go out first, with the old
   * size, before the new caps */
  for (i = 0; i < 2; i++)
    gst_harness_push (h, he_patch (64, 64, i, TRUE, "a"));
  gst_harness_set_src_caps_str (h, caps);
  for (i = 0; i < 2; i++)
    gst_harness_push (h, he_patch (48, 30, i, TRUE, "a"));
  gst_harness_push_event (h, gst_event_new_eos ());
  while ((b = gst_harness_try_pull (h))) {
    if (n < 6)
      sizes[n] = gst_buffer_get_size (b);
    n++;
    gst_buffer_unref (b);
  }
  order_ok = n == 4 && sizes[0] == 64 * 64 * 12 && sizes[1] == 64 * 64 * 12
      && sizes[2] == 48 * 30 * 12 && sizes[3] == 48 * 30 * 12;
  conf_result ("renegotiation", order_ok, "64x64 -> 48x30 with 2 buffers "
      "held: %d buffers of %" G_GSIZE_FORMAT ", %" G_GSIZE_FORMAT ", %"
      G_GSIZE_FORMAT ", %" G_GSIZE_FORMAT " bytes", n, sizes[0], sizes[1],
      sizes[2], sizes[3]);
  g_free (caps);
  gst_harness_teardown (h);
}

/* One buffer of side @s through colornorm; with @vmeta its rows are @pad
 * bytes longer than GstVideoInfo's and a GstVideoMeta says so. */
static gchar *
odd_one (gint s, gboolean tensor, gboolean vmeta)
{
  GstHarness *h = cn_harness ("mode=rescale01", s, s, tensor ? NULL :
      "video/x-raw");
  GstBuffer *in = conf_rgb_patch (s, s, 3, TRUE, 0, 0), *out, *ref = NULL;
  gchar *why;

  if (vmeta) {
    GstVideoInfo info;
    gint stride = s * 3 + 5;
    gsize offset[4] = { 0 };
    gint strides[4] = { stride };
    GstMapInfo mi, mo;
    GstBuffer *b = gst_buffer_new_allocate (NULL, (gsize) stride * s, NULL);

    gst_video_info_set_format (&info, GST_VIDEO_FORMAT_RGB, s, s);
    gst_buffer_map (in, &mi, GST_MAP_READ);
    gst_buffer_map (b, &mo, GST_MAP_WRITE);
    memset (mo.data, 0x5a, mo.size);
    for (gint y = 0; y < s; y++)
      memcpy (mo.data + (gsize) y * stride, mi.data + (gsize) y *
          GST_VIDEO_INFO_PLANE_STRIDE (&info, 0), s * 3);
    gst_buffer_unmap (b, &mo);
    gst_buffer_unmap (in, &mi);
    gst_buffer_add_video_meta_full (b, GST_VIDEO_FRAME_FLAG_NONE,
        GST_VIDEO_FORMAT_RGB, s, s, 1, offset, strides);
    ref = in;
    in = b;
  }
  out = gst_harness_push_and_pull (h, gst_buffer_ref (in));
  why = out ? check_output (ref ? ref : in, out, s, s, tensor) :
      g_strdup ("no output");
  gst_clear_buffer (&out);
  gst_buffer_unref (in);
  gst_clear_buffer (&ref);
  gst_harness_teardown (h);
  return why;
}

static void
check_odd_sizes (void)
{
  static const gint sizes[] = { 1, 3, 127, 250, 8191 };
  GString *r = g_string_new (NULL);
  gboolean ok = TRUE;

  for (guint i = 0; i < G_N_ELEMENTS (sizes); i++) {
    gint s = sizes[i];
    /* 8191: video only (its float tensor would be 805 MB) */
    gchar *t = s < 8191 ? odd_one (s, TRUE, FALSE) : NULL;
    gchar *v = odd_one (s, FALSE, FALSE);
    gchar *m = s < 8191 ? odd_one (s, TRUE, TRUE) : NULL;
    ok &= !t && !v && !m;
    g_string_append_printf (r, "%s%d: tensor %s, video %s, GstVideoMeta "
        "stride %s", r->len ? "; " : "", s, s < 8191 ? (t ? t : "ok") :
        "skipped", v ? v : "ok", s < 8191 ? (m ? m : "ok") : "skipped");
    g_free (t);
    g_free (v);
    g_free (m);
  }
  conf_result ("odd-sizes", ok, "%s", r->str);
  g_string_free (r, TRUE);
}

static void
check_no_tile_meta (void)
{
  GstHarness *h = cn_harness ("mode=macenko fit=first-patches fit-patches=2",
      40, 40, NULL);
  GstBus *bus = attach_bus (h);
  gint i, n;
  gchar *err;

  /* the whole frame counts as valid; one source estimate for slide "" */
  for (i = 0; i < 5; i++)
    gst_harness_push (h, he_patch (40, 40, i, FALSE, NULL));
  gst_harness_push_event (h, gst_event_new_eos ());
  n = pull_all (h);
  err = conf_bus_error (bus, NULL, NULL);
  conf_result ("no-tile-meta", n == 5 && !err, "5 buffers without meta "
      "(macenko, fit-once): %d out, %s", n, err ? err : "no error");
  g_free (err);
  gst_element_set_bus (h->element, NULL);
  gst_object_unref (bus);
  gst_harness_teardown (h);
}

static void
check_zero_area (void)
{
  GstHarness *h = cn_harness ("mode=macenko fit=per-patch", 16, 16, NULL);
  GstBus *bus = attach_bus (h);
  GstBuffer *in = he_patch (16, 16, 1, TRUE, "s"), *out;
  GstWsiTileMeta *m = gst_buffer_get_wsi_tile_meta (in);
  GstElement *cn = cn_element (h);
  gboolean fitted = TRUE;
  gchar *err;
  GstFlowReturn ret;

  /* a patch that is all padding: no pixel counts, the stain step is the
   * identity; caps of width 0 are refused */
  m->valid_width = 0;
  m->valid_height = 0;
  out = gst_harness_push_and_pull (h, in);
  g_object_get (cn, "source-fitted", &fitted, NULL);
  err = conf_bus_error (bus, NULL, NULL);
  gst_clear_buffer (&out);
  gst_object_unref (cn);
  gst_element_set_bus (h->element, NULL);
  gst_object_unref (bus);
  gst_harness_teardown (h);

  h = gst_harness_new ("colornorm");
  gst_harness_set_src_caps_str (h, "video/x-raw,format=RGB,width=0,"
      "height=16,framerate=0/1");
  ret = gst_harness_push (h, gst_buffer_new ());
  gst_harness_teardown (h);
  conf_result ("zero-area", !err && !fitted
      && ret == GST_FLOW_NOT_NEGOTIATED, "all-padding patch: %s, source %s; "
      "width 0 caps: %s", err ? err : "processed", fitted ? "FITTED" :
      "not fitted", gst_flow_get_name (ret));
  g_free (err);
}

int
main (int argc, char **argv)
{
  conf_init (&argc, &argv, "colornorm");
  check_flushing_seek ();
  check_flush ();
  check_eos_no_data ();
  check_props_playing ();
  check_renegotiation ();
  check_odd_sizes ();
  check_no_tile_meta ();
  check_zero_area ();
  return conf_finish ();
}
