/* Conformance: patchify (docs/conformance.md). Frames are pushed through a
 * harness and every patch is compared, through GstVideoInfo strides, with
 * the pixels of the mosaic it was cut from. */
#include "conformance.h"

/* Mosaic pixel at region (x, y). */
static void
mosaic (gint64 x, gint64 y, guint8 * px)
{
  px[0] = (guint8) (x * 7 + y * 3);
  px[1] = (guint8) (y * 5 + 11);
  px[2] = (guint8) (x * 13 + y * 17 + 29);
}

/* A w x h frame showing the mosaic from (fx, fy), with a tile meta of
 * region rw x rh unless rw == 0. */
static GstBuffer *
frame_at (gint w, gint h, gint64 fx, gint64 fy, gint64 rw, gint64 rh,
    gint grid_cols)
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
      mosaic (fx + i, fy + j, row + i * 3);
  }
  gst_video_frame_unmap (&f);
  if (rw > 0) {
    GstWsiTileMeta *m = gst_wsi_tile_meta_add (buf);
    gst_wsi_tile_meta_set_slide (m, "conformance");
    m->x = fx;
    m->y = fy;
    m->width = w;
    m->height = h;
    m->valid_width = (gint) MIN (w, rw - fx);
    m->valid_height = (gint) MIN (h, rh - fy);
    m->region_width = rw;
    m->region_height = rh;
    m->slide_width = rw;
    m->slide_height = rh;
    m->grid_cols = grid_cols;
  }
  return buf;
}

/* NULL when patch @buf (side @p, top-left region pixel left, top) holds
 * the mosaic inside rw x rh and white padding outside, else why not. */
static gchar *
check_patch (GstBuffer * buf, gint p, gint64 left, gint64 top, gint64 rw,
    gint64 rh)
{
  GstVideoInfo info;
  GstVideoFrame f;
  gchar *why = NULL;

  gst_video_info_set_format (&info, GST_VIDEO_FORMAT_RGB, p, p);
  if (gst_buffer_get_size (buf) != GST_VIDEO_INFO_SIZE (&info))
    return g_strdup_printf ("buffer of %" G_GSIZE_FORMAT " bytes, caps say %"
        G_GSIZE_FORMAT, gst_buffer_get_size (buf), GST_VIDEO_INFO_SIZE (&info));
  if (!gst_video_frame_map (&f, &info, buf, GST_MAP_READ))
    return g_strdup ("cannot map as a video frame");
  for (gint j = 0; j < p && !why; j++) {
    const guint8 *row = (const guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&f, 0) +
        (gsize) j * GST_VIDEO_FRAME_PLANE_STRIDE (&f, 0);
    for (gint i = 0; i < p && !why; i++) {
      gint64 x = left + i, y = top + j;
      guint8 want[3] = { 255, 255, 255 };
      if (x >= 0 && y >= 0 && x < rw && y < rh)
        mosaic (x, y, want);
      if (memcmp (want, row + i * 3, 3))
        why = g_strdup_printf ("pixel (%d,%d) of patch at (%" G_GINT64_FORMAT
            ",%" G_GINT64_FORMAT ") differs", i, j, left, top);
    }
  }
  gst_video_frame_unmap (&f);
  return why;
}

static GstHarness *
patchify_harness (const gchar * props, gint fw, gint fh)
{
  gchar *launch = g_strdup_printf ("patchify %s", props);
  gchar *caps = conf_rgb_caps (fw, fh);
  GstHarness *h = gst_harness_new_parse (launch);

  gst_harness_set_src_caps_str (h, caps);
  g_free (caps);
  g_free (launch);
  return h;
}

/* Pulls every queued patch of a p/o grid over rw x rh and checks it;
 * NULL when all @want_n are right. */
static gchar *
check_queued (GstHarness * h, gint p, gint o, gint64 rw, gint64 rh,
    guint want_n)
{
  guint n = 0;
  GstBuffer *b;
  gchar *why = NULL;

  while ((b = gst_harness_try_pull (h))) {
    GstWsiTileMeta *m = gst_buffer_get_wsi_tile_meta (b);
    if (!why && !m)
      why = g_strdup ("patch without tile meta");
    if (!why) {
      gint64 s = p - o;
      why = check_patch (b, p, m->col * s - o / 2, m->row * s - o / 2, rw, rh);
    }
    gst_buffer_unref (b);
    n++;
  }
  if (!why && n != want_n)
    why = g_strdup_printf ("%u patches, expected %u", n, want_n);
  return why;
}

static void
situation_flushing_seek (void)
{
  /* a seekable source (videotestsrc) paced by the clock, seeked mid-run */
  gchar *err = conf_run_pipeline ("videotestsrc num-buffers=60 ! "
      "video/x-raw,format=RGB,width=100,height=80,framerate=100/1 ! "
      "patchify grid-columns=4 patch-size=50 overlap=10 ! "
      "fakesink sync=true", 0.2, 60);

  conf_result ("flushing-seek", err == NULL, "%s",
      err ? err : "videotestsrc ! patchify ! fakesink: seek at 0.2 s, EOS");
  g_free (err);
}

static void
situation_flush (void)
{
  /* half a region, a flush, then a whole region: only the latter comes
   * out, exactly */
  GstHarness *h = patchify_harness ("patch-size=40 overlap=8", 60, 50);
  gchar *why;

  gst_harness_push (h, frame_at (60, 50, 0, 0, 120, 100, 2));
  gst_harness_push (h, frame_at (60, 50, 60, 0, 120, 100, 2));
  conf_drain (h);
  conf_push_flush (h);
  conf_drain (h);
  for (gint i = 0; i < 4; i++)
    gst_harness_push (h, frame_at (60, 50, (i % 2) * 60, (i / 2) * 50, 120,
            100, 2));
  why = check_queued (h, 40, 8, 120, 100, 4 * 4);
  conf_result ("flush", why == NULL, "%s", why ? why :
      "FLUSH_START/STOP mid-region: state reset, next region exact");
  g_free (why);
  gst_harness_teardown (h);
}

static void
situation_eos_no_data (void)
{
  GstHarness *h = patchify_harness ("patch-size=64", 64, 64);
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
  guint64 x;
  gchar *why;
} Pump;

/* One frame of an endless 1-row mosaic of 64x64 frames, patches checked. */
static void
pump_frames (gpointer data)
{
  Pump *pp = data;
  GstElement *e = gst_harness_find_element (pp->h, "patchify");
  gint ps, ov;
  GstBuffer *b;

  g_object_get (e, "patch-size", &ps, "overlap", &ov, NULL);
  gst_object_unref (e);
  gst_harness_push (pp->h, frame_at (64, 64, 0, 0, 0, 0, 0));
  while ((b = gst_harness_try_pull (pp->h))) {
    GstVideoInfo info;
    gst_video_info_set_format (&info, GST_VIDEO_FORMAT_RGB, 64, 64);
    if (!pp->why && gst_buffer_get_size (b) != GST_VIDEO_INFO_SIZE (&info))
      pp->why = g_strdup_printf ("patch of %" G_GSIZE_FORMAT " bytes while "
          "the caps say 64x64", gst_buffer_get_size (b));
    gst_buffer_unref (b);
  }
}

static void
situation_props_playing (void)
{
  /* grid of 1 column, unknown rows: each frame completes patch rows */
  GstHarness *h = patchify_harness ("patch-size=64 overlap=0 grid-columns=1",
      64, 64);
  GstElement *e = gst_harness_find_element (h, "patchify");
  Pump pp = { h, 0, NULL };
  gint bad, v;
  GstCaps *caps;
  gint w = 0;

  pump_frames (&pp);
  bad = conf_props_while_playing (e, NULL, NULL, pump_frames, &pp);
  /* element-specific: overlap >= patch-size used to divide by zero, a new
   * patch-size pushed buffers that no longer matched the caps */
  g_object_set (e, "overlap", 64, NULL);
  pump_frames (&pp);
  g_object_get (e, "overlap", &v, NULL);
  if (v != 0)
    bad++, conf_result ("props-playing", FALSE, "overlap=64 applied while "
        "PLAYING");
  g_object_set (e, "patch-size", 100, NULL);
  pump_frames (&pp);
  caps = gst_pad_get_current_caps (h->sinkpad);
  gst_structure_get_int (gst_caps_get_structure (caps, 0), "width", &w);
  gst_caps_unref (caps);
  if (w != 64 || pp.why)
    bad++, conf_result ("props-playing", FALSE, "caps width %d: %s", w,
        pp.why ? pp.why : "");
  if (!bad)
    conf_result ("props-playing", TRUE, "overlap=64 and patch-size=100 "
        "refused while PLAYING, buffers match the caps");
  g_free (pp.why);
  gst_object_unref (e);
  gst_harness_teardown (h);
}

static void
situation_renegotiation (void)
{
  /* frames of 60x50 on a 2x2 grid, then caps 33x17 on a 3x1 grid */
  GstHarness *h = patchify_harness ("patch-size=30 overlap=4 grid-columns=2 "
      "grid-rows=2", 60, 50);
  GstElement *e;
  gchar *caps, *why;

  for (gint i = 0; i < 4; i++)
    gst_harness_push (h, frame_at (60, 50, (i % 2) * 60, (i / 2) * 50, 0, 0,
            0));
  why = check_queued (h, 30, 4, 120, 100, 5 * 4);
  if (!why) {
    caps = conf_rgb_caps (33, 17);
    gst_harness_set_src_caps_str (h, caps);
    g_free (caps);
    e = gst_harness_find_element (h, "patchify");
    gst_object_unref (e);
    for (gint i = 0; i < 2; i++)
      gst_harness_push (h, frame_at (33, 17, i * 33, 0, 0, 0, 0));
    gst_harness_push_event (h, gst_event_new_eos ());
    /* grid-columns=2 x grid-rows=2 of 33x17: 66 x 34, only its first
     * row came before EOS: the patches touching it, rows below white */
    why = check_queued (h, 30, 4, 66, 17, 3 * 1);
  }
  conf_result ("renegotiation", why == NULL, "%s", why ? why :
      "new frame size mid-stream starts a new mosaic; patches exact");
  g_free (why);
  gst_harness_teardown (h);
}

static void
situation_odd_sizes (void)
{
  const gint sizes[] = { 1, 3, 127, 250, 8191 };
  GString *done = g_string_new (NULL);
  gchar *why = NULL;

  for (guint k = 0; k < G_N_ELEMENTS (sizes) && !why; k++) {
    gint p = sizes[k], o = p > 2 ? p / 3 : 0, s = p - o;
    gint64 rw = 37, rh = 23;
    gchar *props = g_strdup_printf ("patch-size=%d overlap=%d", p, o);
    GstHarness *h = patchify_harness (props, (gint) rw, (gint) rh);
    guint want = (guint) (((rw + s - 1) / s) * ((rh + s - 1) / s));

    g_free (props);
    gst_harness_push (h, frame_at ((gint) rw, (gint) rh, 0, 0, rw, rh, 1));
    why = check_queued (h, p, o, rw, rh, want);
    if (why) {
      gchar *t = g_strdup_printf ("patch-size=%d: %s", p, why);
      g_free (why);
      why = t;
    }
    g_string_append_printf (done, " %d", p);
    gst_harness_teardown (h);
  }
  conf_result ("odd-sizes", why == NULL, "%s%s", why ? why :
      "exact patches with 4-byte aligned rows for patch-size", why ? "" :
      done->str);
  g_free (why);
  g_string_free (done, TRUE);
}

static void
situation_no_tile_meta (void)
{
  /* live mosaic: frames without meta on a 3-column grid, rows unknown */
  GstHarness *h = patchify_harness ("patch-size=32 overlap=8 grid-columns=3",
      40, 30);
  gchar *why;

  for (gint i = 0; i < 6; i++)
    gst_harness_push (h, frame_at (40, 30, (i % 3) * 40, (i / 3) * 30, 0, 0,
            0));
  gst_harness_push_event (h, gst_event_new_eos ());
  why = check_queued (h, 32, 8, 120, 60, 5 * 3);
  conf_result ("no-tile-meta", why == NULL, "%s", why ? why :
      "frames without meta laid on grid-columns, patches exact with meta");
  g_free (why);
  gst_harness_teardown (h);
}

static void
situation_zero_area (void)
{
  /* a tile meta whose region has no area does not place the frame: it is
   * laid on the grid like a frame without meta; a 1x1 region gives one
   * padded patch */
  GstHarness *h = patchify_harness ("patch-size=16 grid-columns=1", 8, 8);
  GstBuffer *b = frame_at (8, 8, 0, 0, 0, 0, 0);
  GstWsiTileMeta *m = gst_wsi_tile_meta_add (b);
  GstFlowReturn fr;
  gchar *why = NULL;

  gst_wsi_tile_meta_set_slide (m, "empty");
  m->width = m->height = 8;
  fr = gst_harness_push (h, b);
  gst_harness_push_event (h, gst_event_new_eos ());
  if (fr != GST_FLOW_OK)
    why = g_strdup_printf ("zero-area region: flow %s", gst_flow_get_name
        (fr));
  else
    why = check_queued (h, 16, 0, 8, 8, 1);
  gst_harness_teardown (h);
  if (!why) {
    h = patchify_harness ("patch-size=16", 1, 1);
    gst_harness_push (h, frame_at (1, 1, 0, 0, 1, 1, 1));
    why = check_queued (h, 16, 0, 1, 1, 1);
    gst_harness_teardown (h);
  }
  conf_result ("zero-area", why == NULL, "%s", why ? why :
      "meta with a 0x0 region: frame laid on the grid; 1x1 region: one "
      "padded patch");
  g_free (why);
}

int
main (int argc, char **argv)
{
  conf_init (&argc, &argv, "patchify");
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
