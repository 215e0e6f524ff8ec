/* Conformance: labelpatch (docs/conformance.md). RGB patches with a tile
 * meta go in through GstHarness; the label patches are checked pixel by
 * pixel against the PNG mask (written here with appsrc ! pngenc) or the
 * GeoJSON rectangle written here, read with the GstVideoInfo stride of the
 * GRAY8 caps (rows 4-byte aligned, issue #9 point 3). */
#include "conformance.h"

#include <glib/gstdio.h>

#define MASK_W 300
#define MASK_H 200
/* the GeoJSON rectangle, class 1: level-0 pixels [10, 200) x [20, 150) */
#define RECT_X0 10
#define RECT_X1 200
#define RECT_Y0 20
#define RECT_Y1 150

static gchar *tmp_dir, *mask_path, *geojson_path, *empty_path;

static guint8
mask_value (gint64 x, gint64 y)
{
  if (x < 0 || y < 0 || x >= MASK_W || y >= MASK_H)
    return 255;                 /* ignore: outside the label image */
  return (guint8) ((x * 7 + y * 3) % 5);
}

static guint8
rect_value (gint64 x, gint64 y)
{
  return x >= RECT_X0 && x < RECT_X1 && y >= RECT_Y0 && y < RECT_Y1;
}

typedef guint8 (*LabelFunc) (gint64 x, gint64 y);

static void
write_mask_png (const gchar * path)
{
  gchar *desc = g_strdup_printf ("appsrc name=a caps=video/x-raw,"
      "format=GRAY8,width=%d,height=%d,framerate=0/1 ! pngenc ! "
      "filesink location=%s", MASK_W, MASK_H, path);
  GstElement *pipe = gst_parse_launch (desc, NULL);
  GstElement *src = gst_bin_get_by_name (GST_BIN (pipe), "a");
  GstVideoInfo info;
  GstBuffer *buf;
  GstVideoFrame f;
  GstBus *bus = gst_element_get_bus (pipe);
  GstMessage *m;
  GstFlowReturn ret;

  gst_video_info_set_format (&info, GST_VIDEO_FORMAT_GRAY8, MASK_W, MASK_H);
  buf = gst_buffer_new_allocate (NULL, GST_VIDEO_INFO_SIZE (&info), NULL);
  gst_video_frame_map (&f, &info, buf, GST_MAP_WRITE);
  for (gint y = 0; y < MASK_H; y++)
    for (gint x = 0; x < MASK_W; x++)
      ((guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&f, 0))[y *
          GST_VIDEO_FRAME_PLANE_STRIDE (&f, 0) + x] = mask_value (x, y);
  gst_video_frame_unmap (&f);
  gst_element_set_state (pipe, GST_STATE_PLAYING);
  g_signal_emit_by_name (src, "push-buffer", buf, &ret);
  g_signal_emit_by_name (src, "end-of-stream", &ret);
  m = gst_bus_timed_pop_filtered (bus, 30 * GST_SECOND,
      GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
  g_assert (m && GST_MESSAGE_TYPE (m) == GST_MESSAGE_EOS);
  gst_message_unref (m);
  gst_element_set_state (pipe, GST_STATE_NULL);
  gst_buffer_unref (buf);
  gst_object_unref (src);
  gst_object_unref (bus);
  gst_object_unref (pipe);
  g_free (desc);
}

static void
write_geojson (void)
{
  gchar *text = g_strdup_printf ("{\"type\": \"FeatureCollection\", "
      "\"features\": [{\"type\": \"Feature\", \"properties\": "
      "{\"classification\": {\"name\": \"Tumor\"}}, \"geometry\": {\"type\": "
      "\"Polygon\", \"coordinates\": [[[%d, %d], [%d, %d], [%d, %d], "
      "[%d, %d], [%d, %d]]]}},"
      /* zero area: three collinear points paint nothing */
      "{\"type\": \"Feature\", \"properties\": {\"classification\": "
      "{\"name\": \"Tumor\"}}, \"geometry\": {\"type\": \"Polygon\", "
      "\"coordinates\": [[[0, 0], [250, 180], [125, 90]]]}}]}",
      RECT_X0, RECT_Y0, RECT_X1, RECT_Y0, RECT_X1, RECT_Y1, RECT_X0, RECT_Y1,
      RECT_X0, RECT_Y0);

  geojson_path = g_build_filename (tmp_dir, "rect.geojson", NULL);
  g_assert (g_file_set_contents (geojson_path, text, -1, NULL));
  g_free (text);
  empty_path = g_build_filename (tmp_dir, "empty.geojson", NULL);
  g_assert (g_file_set_contents (empty_path,
          "{\"type\": \"FeatureCollection\", \"features\": []}", -1, NULL));
}

/* A labelpatch set up with @props ("masks" or "geojson" ...), in a harness
 * with RGB caps of @w x @h and a private bus. */
static GstHarness *
new_harness (const gchar * props, gint w, gint h, GstBus ** bus)
{
  gchar *desc = g_strdup_printf ("labelpatch name=lp %s", props);
  GstHarness *hn = gst_harness_new_parse (desc);
  gchar *caps = conf_rgb_caps (w, h);

  if (bus) {
    *bus = gst_bus_new ();
    gst_element_set_bus (hn->element, *bus);
  }
  gst_harness_set_src_caps_str (hn, caps);
  g_free (caps);
  g_free (desc);
  return hn;
}

static gchar *
mask_props (void)
{
  return g_strdup_printf ("masks=%s", mask_path);
}

static gchar *
geojson_props (const gchar * path)
{
  return g_strdup_printf ("geojson=%s class-map=Tumor=1", path);
}

/* NULL when @out is the label patch of (@x, @y), @w x @h, per @label; else
 * what differs. The frame is read with the stride of the current caps, and
 * the buffer must be at least the size those caps say. */
static gchar *
check_labels (GstHarness * hn, GstBuffer * out, gint w, gint h, gint64 x,
    gint64 y, LabelFunc label)
{
  GstCaps *caps = gst_pad_get_current_caps (hn->sinkpad);
  GstVideoInfo info;
  GstVideoFrame f;
  gchar *why = NULL;

  if (!out)
    return g_strdup ("no output buffer");
  if (!caps || !gst_video_info_from_caps (&info, caps)) {
    gst_clear_caps (&caps);
    return g_strdup ("no output caps");
  }
  gst_caps_unref (caps);
  if (GST_VIDEO_INFO_FORMAT (&info) != GST_VIDEO_FORMAT_GRAY8
      || GST_VIDEO_INFO_WIDTH (&info) != w
      || GST_VIDEO_INFO_HEIGHT (&info) != h)
    return g_strdup_printf ("output caps %s %dx%d, want GRAY8 %dx%d",
        gst_video_format_to_string (GST_VIDEO_INFO_FORMAT (&info)),
        GST_VIDEO_INFO_WIDTH (&info), GST_VIDEO_INFO_HEIGHT (&info), w, h);
  if (gst_buffer_get_size (out) < GST_VIDEO_INFO_SIZE (&info))
    return g_strdup_printf ("buffer of %" G_GSIZE_FORMAT " bytes, caps say %"
        G_GSIZE_FORMAT " (stride %d)", gst_buffer_get_size (out),
        GST_VIDEO_INFO_SIZE (&info), GST_VIDEO_INFO_PLANE_STRIDE (&info, 0));
  if (!gst_video_frame_map (&f, &info, out, GST_MAP_READ))
    return g_strdup ("cannot map the output frame");
  for (gint j = 0; j < h && !why; j++) {
    const guint8 *row = (const guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&f, 0)
        + (gsize) j * GST_VIDEO_FRAME_PLANE_STRIDE (&f, 0);
    for (gint i = 0; i < w; i++)
      if (row[i] != label (x + i, y + j)) {
        why = g_strdup_printf ("pixel (%d, %d) of the %dx%d patch at (%"
            G_GINT64_FORMAT ", %" G_GINT64_FORMAT ") is %u, want %u", i, j,
            w, h, x, y, row[i], label (x + i, y + j));
        break;
      }
  }
  gst_video_frame_unmap (&f);
  return why;
}

/* Pushes the RGB patch of (@x, @y) and checks its label patch; NULL if
 * right. */
static gchar *
push_and_check (GstHarness * hn, gint w, gint h, gint64 x, gint64 y,
    LabelFunc label)
{
  GstFlowReturn ret = gst_harness_push (hn, conf_rgb_patch (w, h, 1, TRUE,
          x, y));
  GstBuffer *out;
  gchar *why;

  if (ret != GST_FLOW_OK)
    return g_strdup_printf ("push of a %dx%d patch: %s", w, h,
        gst_flow_get_name (ret));
  out = gst_harness_try_pull (hn);
  why = check_labels (hn, out, w, h, x, y, label);
  gst_clear_buffer (&out);
  return why;
}

static gint
count_warnings (GstBus * bus)
{
  GstMessage *m;
  gint n = 0;

  while ((m = gst_bus_pop_filtered (bus, GST_MESSAGE_WARNING))) {
    n++;
    gst_message_unref (m);
  }
  return n;
}

static void
teardown (GstHarness * hn, GstBus * bus)
{
  gst_harness_teardown (hn);
  if (bus)
    gst_object_unref (bus);
}

/* ------------------------------------------------------------ situations */

static void
check_flushing_seek (void)
{
  gchar *img = g_build_filename (tmp_dir, "img.png", NULL);
  gchar *desc, *err, *err2;

  desc = g_strdup_printf ("videotestsrc num-buffers=1 ! video/x-raw,"
      "format=RGB,width=%d,height=%d ! pngenc ! filesink location=%s",
      MASK_W, MASK_H, img);
  g_free (conf_run_pipeline (desc, -1, 30));
  g_free (desc);
  desc = g_strdup_printf ("slidesrc location=%s loop=30 tile-width=32 "
      "tile-height=32 ! labelpatch masks=%s ! fakesink sync=true", img,
      mask_path);
  err = conf_run_pipeline (desc, 0.2, 120);
  g_free (desc);
  desc = g_strdup_printf ("slidesrc location=%s loop=30 tile-width=32 "
      "tile-height=32 ! labelpatch geojson=%s class-map=Tumor=1 ! "
      "fakesink sync=true", img, geojson_path);
  err2 = conf_run_pipeline (desc, 0.2, 120);
  g_free (desc);
  conf_result ("flushing-seek", !err && !err2, "masks: %s; geojson: %s",
      err ? err : "EOS after the seek", err2 ? err2 : "EOS after the seek");
  g_free (err);
  g_free (err2);
  g_free (img);
}

static void
check_flush (void)
{
  gchar *props = mask_props ();
  GstBus *bus;
  GstHarness *hn = new_harness (props, 32, 24, &bus);
  gchar *a = push_and_check (hn, 32, 24, 10, 20, mask_value), *b = NULL;
  gchar *c = NULL;
  gboolean flushed;

  /* the annotation cache survives a flush; labels stay right */
  flushed = conf_push_flush (hn);
  conf_drain (hn);
  if (!a)
    b = push_and_check (hn, 32, 24, 250, 150, mask_value);
  flushed &= conf_push_flush (hn);
  conf_drain (hn);
  if (!a && !b)
    c = push_and_check (hn, 32, 24, -5, 7, mask_value);
  conf_result ("flush", flushed && !a && !b && !c,
      "FLUSH_START/STOP twice mid-stream: %s", a ? a : b ? b : c ? c :
      flushed ? "labels right before and after" : "flush events refused");
  g_free (a);
  g_free (b);
  g_free (c);
  teardown (hn, bus);
  g_free (props);
}

static void
check_eos_no_data (void)
{
  gchar *props = mask_props ();
  gchar *gprops = geojson_props (geojson_path);
  GstBus *bus, *bus2;
  GstHarness *hn = new_harness (props, 32, 32, &bus);
  GstHarness *h2 = new_harness (gprops, 32, 32, &bus2);
  gboolean eos, eos2;
  GQuark d;
  gint code;
  gchar *e1, *e2;

  gst_harness_push_event (hn, gst_event_new_eos ());
  gst_harness_push_event (h2, gst_event_new_eos ());
  eos = conf_saw_eos (hn);
  eos2 = conf_saw_eos (h2);
  e1 = conf_bus_error (bus, &d, &code);
  e2 = conf_bus_error (bus2, &d, &code);
  conf_result ("eos-no-data", eos && eos2 && !e1 && !e2 &&
      gst_harness_buffers_received (hn) == 0, "masks: %s; geojson: %s",
      e1 ? e1 : eos ? "EOS passed, no buffer, no error" : "no EOS",
      e2 ? e2 : eos2 ? "EOS passed" : "no EOS");
  g_free (e1);
  g_free (e2);
  teardown (hn, bus);
  teardown (h2, bus2);
  g_free (props);
  g_free (gprops);
}

typedef struct
{
  GstHarness *h;
  gint pushed, bad;
  gchar *first_bad;
} PumpData;

static void
pump (gpointer user_data)
{
  PumpData *d = user_data;
  gchar *why = push_and_check (d->h, 32, 24, 3 * d->pushed, 2 * d->pushed,
      mask_value);

  d->pushed++;
  if (why) {
    d->bad++;
    if (!d->first_bad)
      d->first_bad = why;
    else
      g_free (why);
  }
}

static void
check_props_playing (void)
{
  gchar *props = mask_props ();
  GstBus *bus, *bus2;
  GstHarness *hn = new_harness (props, 32, 24, &bus);
  GstElement *lp = gst_bin_get_by_name (GST_BIN (hn->element), "lp");
  const gchar *skip[] = { "qos", NULL };
  const gchar *strings[] = {
    "geojson=/nonexistent/a.geojson", "masks=/nonexistent/{name}.png",
    "class-map=Other=3", NULL
  };
  PumpData d = { hn, 0, 0, NULL };
  gint warnings;
  gchar *masks = NULL, *e;
  GQuark dom = 0;
  gint code = 0;
  GstStateChangeReturn sret, sret2;
  GstElement *lp2;
  gint fixed = 0;

  if (!lp)                      /* the harness holds the element itself */
    lp = gst_object_ref (hn->element);
  pump (&d);
  /* qos is GstBaseTransform's own, mutable at any time */
  conf_props_while_playing (lp, skip, strings, pump, &d);
  warnings = count_warnings (bus);
  g_object_get (lp, "masks", &masks, NULL);
  /* element-specific: the refused values did not take effect and the
   * labels stayed right; a refusal is a bus warning */
  conf_result ("props-playing", !d.bad && warnings > 0
      && !g_strcmp0 (masks, mask_path), "%d patches while changing "
      "properties, %d wrong (%s); %d refusal warnings; masks still %s",
      d.pushed, d.bad, d.first_bad ? d.first_bad : "-", warnings, masks);
  g_free (masks);
  g_free (d.first_bad);
  gst_object_unref (lp);
  teardown (hn, bus);

  /* invalid settings are refused at start with RESOURCE SETTINGS */
  lp2 = gst_element_factory_make ("labelpatch", NULL);
  bus2 = gst_bus_new ();
  gst_element_set_bus (lp2, bus2);
  g_object_set (lp2, "masks", mask_path, "ignore-index", 300, NULL);
  sret = gst_element_set_state (lp2, GST_STATE_PAUSED);
  e = conf_bus_error (bus2, &dom, &code);
  /* after the failed start the element is not running: the fix applies */
  g_object_set (lp2, "ignore-index", -1, NULL);
  g_object_get (lp2, "ignore-index", &fixed, NULL);
  sret2 = gst_element_set_state (lp2, GST_STATE_PAUSED);
  conf_result ("props-playing", sret == GST_STATE_CHANGE_FAILURE && e
      && dom == GST_RESOURCE_ERROR && code == GST_RESOURCE_ERROR_SETTINGS
      && fixed == -1 && sret2 != GST_STATE_CHANGE_FAILURE,
      "ignore-index=300 with GRAY8 output: %s; then ignore-index=%d in READY: "
      "%s", e ? e : "accepted", fixed, sret2 != GST_STATE_CHANGE_FAILURE ?
      "starts" : "still refused");
  g_free (e);
  gst_element_set_state (lp2, GST_STATE_NULL);
  gst_object_unref (lp2);
  gst_object_unref (bus2);
  g_free (props);
}

static void
check_renegotiation (void)
{
  gchar *props = mask_props ();
  gchar *gprops = geojson_props (geojson_path);
  GstBus *bus, *bus2;
  GstHarness *hn = new_harness (props, 32, 24, &bus);
  GstHarness *h2 = new_harness (gprops, 16, 16, &bus2);
  const gint sizes[][2] = { {32, 24}, {48, 40}, {7, 5}, {32, 24} };
  gchar *why = NULL;

  for (guint k = 0; k < G_N_ELEMENTS (sizes) && !why; k++) {
    gchar *caps = conf_rgb_caps (sizes[k][0], sizes[k][1]);
    gst_harness_set_src_caps_str (hn, caps);
    gst_harness_set_src_caps_str (h2, caps);
    g_free (caps);
    why = push_and_check (hn, sizes[k][0], sizes[k][1], 40 * k, 30 * k,
        mask_value);
    if (!why)
      why = push_and_check (h2, sizes[k][0], sizes[k][1], 5 + 40 * k,
          15 + 30 * k, rect_value);
  }
  conf_result ("renegotiation", !why, "32x24 -> 48x40 -> 7x5 -> 32x24 "
      "(masks and geojson): %s", why ? why : "labels and caps follow");
  g_free (why);
  teardown (hn, bus);
  teardown (h2, bus2);
  g_free (props);
  g_free (gprops);
}

static void
check_odd_sizes (void)
{
  const gint sizes[] = { 1, 3, 127, 250, 8191 };
  gchar *props = mask_props ();
  gchar *gprops = geojson_props (geojson_path);
  GString *done = g_string_new (NULL);
  gchar *why = NULL;

  for (guint k = 0; k < G_N_ELEMENTS (sizes) && !why; k++) {
    gint s = sizes[k];
    GstBus *bus;
    GstHarness *hn = new_harness (props, s, s, &bus);
    why = push_and_check (hn, s, s, 7, 5, mask_value);
    teardown (hn, bus);
    if (!why && s < 8191) {
      /* a non-square one, odd width */
      hn = new_harness (props, s, s + 2, &bus);
      why = push_and_check (hn, s, s + 2, -3, 11, mask_value);
      teardown (hn, bus);
    }
    if (!why && s < 8191) {
      hn = new_harness (gprops, s, s, &bus);
      why = push_and_check (hn, s, s, 9, 19, rect_value);
      teardown (hn, bus);
    }
    g_string_append_printf (done, " %d", s);
  }
  conf_result ("odd-sizes", !why, "GRAY8 rows at the GstVideoInfo stride, "
      "sizes%s: %s", done->str, why ? why : "labels right");
  g_free (why);
  g_string_free (done, TRUE);
  g_free (props);
  g_free (gprops);
}

static void
check_no_tile_meta (void)
{
  gchar *props = mask_props ();
  GstBus *bus;
  GstHarness *hn = new_harness (props, 32, 24, &bus);
  GstFlowReturn ret = gst_harness_push (hn, conf_rgb_patch (32, 24, 1, FALSE,
          0, 0));
  GQuark dom = 0;
  gint code = 0;
  gchar *e = conf_bus_error (bus, &dom, &code);

  conf_result ("no-tile-meta", ret == GST_FLOW_ERROR && e
      && dom == GST_STREAM_ERROR && code == GST_STREAM_ERROR_FORMAT
      && strstr (e, "GstWsiTileMeta"), "flow %s, error: %s",
      gst_flow_get_name (ret), e ? e : "none");
  g_free (e);
  teardown (hn, bus);
  g_free (props);
}

static guint8
background_value (gint64 x, gint64 y)
{
  return 0;
}

static void
check_zero_area (void)
{
  gchar *props = mask_props ();
  gchar *gprops = geojson_props (empty_path);
  GstBus *bus, *bus2;
  GstHarness *hn = new_harness (props, 32, 24, &bus);
  GstHarness *h2 = new_harness (gprops, 32, 24, &bus2);
  gchar *a, *b, *c;

  /* a patch wholly outside the mask: all ignore */
  a = push_and_check (hn, 32, 24, -1000, 5000, mask_value);
  /* no features at all, and (rect.geojson) a zero-area polygon */
  b = push_and_check (h2, 32, 24, 40, 40, background_value);
  teardown (h2, bus2);
  g_free (gprops);
  gprops = geojson_props (geojson_path);
  h2 = new_harness (gprops, 32, 24, &bus2);
  c = push_and_check (h2, 32, 24, 210, 160, rect_value);
  conf_result ("zero-area", !a && !b && !c, "patch outside the mask: %s; "
      "empty FeatureCollection: %s; collinear polygon: %s", a ? a :
      "all ignore", b ? b : "all background", c ? c : "paints nothing");
  g_free (a);
  g_free (b);
  g_free (c);
  teardown (hn, bus);
  teardown (h2, bus2);
  g_free (props);
  g_free (gprops);
}

int
main (int argc, char **argv)
{
  conf_init (&argc, &argv, "labelpatch");
  gst_wsi_tile_meta_get_info ();
  tmp_dir = g_dir_make_tmp ("conf-labelpatch-XXXXXX", NULL);
  mask_path = g_build_filename (tmp_dir, "mask.png", NULL);
  write_mask_png (mask_path);
  write_geojson ();

  check_flushing_seek ();
  check_flush ();
  check_eos_no_data ();
  check_props_playing ();
  check_renegotiation ();
  check_odd_sizes ();
  check_no_tile_meta ();
  check_zero_area ();

  conf_remove_dir (tmp_dir);
  g_free (mask_path);
  g_free (geojson_path);
  g_free (empty_path);
  g_free (tmp_dir);
  return conf_finish ();
}
