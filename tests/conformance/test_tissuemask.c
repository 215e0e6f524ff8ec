/* Conformance: tissuemask (docs/conformance.md). RGB frames of a few
 * colours go in through a harness; every GRAY8 label is checked, through
 * GstVideoInfo strides, against an independent per-colour reference. */
#include "conformance.h"

#include <math.h>

static const guint8 colours[4][3] = {
  {245, 245, 245},              /* glass: background */
  {120, 80, 160},               /* haematoxylin: tissue */
  {230, 150, 200},              /* eosin: tissue */
  {10, 10, 12},                 /* pen / black: background */
};

/* The documented rule with default threshold 0.15 (docs/patchify.md). */
static guint8
ref_label (const guint8 * px, gdouble threshold)
{
  gdouble od_max = 0, od_min = 1e9;

  for (gint k = 0; k < 3; k++) {
    gdouble od = -log10 ((px[k] + 1.0) / 256.0);
    od_max = MAX (od_max, od);
    od_min = MIN (od_min, od);
  }
  return od_max > threshold && od_min <= 1.0;
}

static gint
colour_at (gint64 x, gint64 y)
{
  return (gint) ((x / 3 + y / 2) % 4);
}

static GstBuffer *
rgb_frame (gint w, gint h, gboolean meta, gint pad_left, gint valid_w)
{
  GstVideoInfo info;
  GstVideoFrame f;
  GstBuffer *buf;

  gst_video_info_set_format (&info, GST_VIDEO_FORMAT_RGB, w, h);
  buf = gst_buffer_new_allocate (NULL, GST_VIDEO_INFO_SIZE (&info), NULL);
  gst_video_frame_map (&f, &info, buf, GST_MAP_WRITE);
  for (gint j = 0; j < h; j++) {
    guint8 *row = (guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&f, 0) +
        (gsize) j * GST_VIDEO_FRAME_PLANE_STRIDE (&f, 0);
    for (gint i = 0; i < w; i++)
      memcpy (row + i * 3, colours[colour_at (i, j)], 3);
  }
  gst_video_frame_unmap (&f);
  if (meta) {
    GstWsiTileMeta *m = gst_wsi_tile_meta_add (buf);
    gst_wsi_tile_meta_set_slide (m, "conformance");
    m->width = w;
    m->height = h;
    m->pad_left = pad_left;
    m->valid_width = valid_w;
    m->valid_height = h;
  }
  return buf;
}

/* NULL when @out is the w x h mask of rgb_frame (padding outside
 * [pad_left, pad_left + valid_w) is 0), else why not. */
static gchar *
check_mask (GstBuffer * out, gint w, gint h, gint pad_left, gint valid_w,
    gdouble threshold, gboolean want_meta)
{
  GstVideoInfo info;
  GstVideoFrame f;
  guint8 lut[4];
  gchar *why = NULL;

  if (!out)
    return g_strdup ("no output buffer");
  for (gint k = 0; k < 4; k++)
    lut[k] = ref_label (colours[k], threshold);
  gst_video_info_set_format (&info, GST_VIDEO_FORMAT_GRAY8, w, h);
  if (gst_buffer_get_size (out) != GST_VIDEO_INFO_SIZE (&info))
    return g_strdup_printf ("%dx%d mask of %" G_GSIZE_FORMAT " bytes, caps "
        "say %" G_GSIZE_FORMAT, w, h, gst_buffer_get_size (out),
        GST_VIDEO_INFO_SIZE (&info));
  if (!gst_video_frame_map (&f, &info, out, GST_MAP_READ))
    return g_strdup ("cannot map the mask as a video frame");
  for (gint j = 0; j < h && !why; j++) {
    const guint8 *row = (const guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&f, 0) +
        (gsize) j * GST_VIDEO_FRAME_PLANE_STRIDE (&f, 0);
    for (gint i = 0; i < w && !why; i++) {
      guint8 want = (i >= pad_left && i < pad_left + valid_w) ?
          lut[colour_at (i, j)] : 0;
      if (row[i] != want)
        why = g_strdup_printf ("%dx%d: pixel (%d,%d) is %u, expected %u", w,
            h, i, j, row[i], want);
    }
  }
  gst_video_frame_unmap (&f);
  if (!why && want_meta && !gst_buffer_get_wsi_tile_meta (out))
    why = g_strdup ("tile meta not kept");
  return why;
}

static GstHarness *
mask_harness (gint w, gint h)
{
  GstHarness *h_ = gst_harness_new_parse ("tissuemask");
  gchar *caps = conf_rgb_caps (w, h);

  gst_harness_set_src_caps_str (h_, caps);
  g_free (caps);
  return h_;
}

/* Pushes one frame and checks its mask; NULL when right. */
static gchar *
roundtrip (GstHarness * h, gint w, gint hh, gboolean meta, gint pad_left,
    gint valid_w, gdouble threshold)
{
  GstFlowReturn fr = gst_harness_push (h, rgb_frame (w, hh, meta, pad_left,
          valid_w));
  GstBuffer *out;
  gchar *why;

  if (fr != GST_FLOW_OK)
    return g_strdup_printf ("push: %s", gst_flow_get_name (fr));
  out = gst_harness_try_pull (h);
  why = check_mask (out, w, hh, meta ? pad_left : 0, meta ? valid_w : w,
      threshold, meta);
  if (out)
    gst_buffer_unref (out);
  return why;
}

static void
situation_flushing_seek (void)
{
  gchar *err = conf_run_pipeline ("videotestsrc num-buffers=60 ! "
      "video/x-raw,format=RGB,width=97,height=31,framerate=100/1 ! "
      "tissuemask ! fakesink sync=true", 0.2, 60);

  conf_result ("flushing-seek", err == NULL, "%s",
      err ? err : "videotestsrc ! tissuemask ! fakesink: seek at 0.2 s, EOS");
  g_free (err);
}

static void
situation_flush (void)
{
  GstHarness *h = mask_harness (50, 10);
  gchar *why = roundtrip (h, 50, 10, TRUE, 0, 50, 0.15);

  if (!why) {
    conf_push_flush (h);
    conf_drain (h);
    why = roundtrip (h, 50, 10, TRUE, 0, 50, 0.15);
  }
  conf_result ("flush", why == NULL, "%s", why ? why :
      "FLUSH_START/STOP between frames, next mask exact");
  g_free (why);
  gst_harness_teardown (h);
}

static void
situation_eos_no_data (void)
{
  GstHarness *h = mask_harness (16, 16);
  gboolean eos;
  guint n;

  gst_harness_push_event (h, gst_event_new_eos ());
  n = gst_harness_buffers_in_queue (h);
  eos = conf_saw_eos (h);
  conf_result ("eos-no-data", eos && n == 0, "EOS forwarded: %d, %u buffers",
      eos, n);
  gst_harness_teardown (h);
}

typedef struct
{
  GstHarness *h;
  gchar *why;
} Pump;

static void
pump (gpointer data)
{
  Pump *p = data;
  GstElement *e = gst_harness_find_element (p->h, "tissuemask");
  gdouble thr;
  gchar *why;

  g_object_get (e, "tissue-threshold", &thr, NULL);
  gst_object_unref (e);
  why = roundtrip (p->h, 21, 5, TRUE, 0, 21, thr);
  if (why && !p->why) {
    p->why = g_strdup_printf ("tissue-threshold=%g: %s", thr, why);
  }
  g_free (why);
}

static void
situation_props_playing (void)
{
  GstHarness *h = mask_harness (21, 5);
  GstElement *e = gst_harness_find_element (h, "tissuemask");
  Pump p = { h, NULL };
  /* qos is GstBaseTransform's own, mutable at any time */
  const gchar *skip[] = { "qos", NULL };
  gint bad;

  pump (&p);
  /* tissue-threshold is mutable while playing: each value set applies to
   * the next frame (the pump checks the mask with the new threshold) */
  bad = conf_props_while_playing (e, skip, NULL, pump, &p);
  if (p.why)
    conf_result ("props-playing", FALSE, "%s", p.why);
  else if (!bad)
    conf_result ("props-playing", TRUE, "new tissue-threshold applies from "
        "the next frame");
  g_free (p.why);
  gst_object_unref (e);
  gst_harness_teardown (h);
}

static void
situation_renegotiation (void)
{
  GstHarness *h = mask_harness (64, 64);
  gchar *why = roundtrip (h, 64, 64, FALSE, 0, 64, 0.15);

  if (!why) {
    gchar *caps = conf_rgb_caps (33, 17);
    gst_harness_set_src_caps_str (h, caps);
    g_free (caps);
    why = roundtrip (h, 33, 17, FALSE, 0, 33, 0.15);
  }
  conf_result ("renegotiation", why == NULL, "%s", why ? why :
      "64x64 then 33x17 caps: GRAY8 output follows, masks exact");
  g_free (why);
  gst_harness_teardown (h);
}

static void
situation_odd_sizes (void)
{
  const gint sizes[] = { 1, 3, 127, 250, 8191 };
  gchar *why = NULL;

  for (guint k = 0; k < G_N_ELEMENTS (sizes) && !why; k++) {
    gint s = sizes[k];
    GstHarness *h = mask_harness (s, s);
    /* padding on the left and right of the valid area */
    why = roundtrip (h, s, s, TRUE, s / 4, s - s / 4 - s / 5, 0.15);
    gst_harness_teardown (h);
  }
  conf_result ("odd-sizes", why == NULL, "%s", why ? why :
      "square frames 1 3 127 250 8191: GRAY8 rows 4-byte aligned, masks "
      "exact, padding 0");
  g_free (why);
}

static void
situation_no_tile_meta (void)
{
  GstHarness *h = mask_harness (30, 7);
  gchar *why = roundtrip (h, 30, 7, FALSE, -1, 30, 0.15);

  conf_result ("no-tile-meta", why == NULL, "%s", why ? why :
      "frames without meta: every pixel labelled");
  g_free (why);
  gst_harness_teardown (h);
}

static void
situation_zero_area (void)
{
  /* a tile meta whose valid area is empty (all padding): mask all 0 */
  GstHarness *h = mask_harness (12, 6);
  gchar *why = roundtrip (h, 12, 6, TRUE, 12, 0, 0.15);

  conf_result ("zero-area", why == NULL, "%s", why ? why :
      "valid area of zero width: mask all 0");
  g_free (why);
  gst_harness_teardown (h);
}

int
main (int argc, char **argv)
{
  conf_init (&argc, &argv, "tissuemask");
  situation_flushing_seek ();
  situation_flush ();
  situation_eos_no_data ();
  situation_props_playing ();
  situation_renegotiation ();
  situation_odd_sizes ();
  situation_no_tile_meta ();
  situation_zero_area ();
  return conf_finish ();
}
