/* Conformance: segeval (docs/conformance.md), an aggregator with a
 * "prediction" and an "annotation" sink pad. Two harnesses feed the pads
 * with GRAY8/GRAY16_LE label patches (rows at the GstVideoInfo stride) whose
 * metrics are known: the prediction differs from the annotation on every
 * pixel with (x + y) % 7 == 0, so accuracy = 1 - that fraction. The final
 * "segeval" message is read from a private bus. */
#include "conformance.h"

#include <glib/gstdio.h>
#include <math.h>

static gchar *tmp_dir;

static guint
ann_value (gint64 x, gint64 y)
{
  return (guint) (((x / 4) + (y / 4)) % 3);
}

static guint
pred_value (gint64 x, gint64 y)
{
  guint a = ann_value (x, y);
  return ((x + y) % 7 == 0) ? (a + 1) % 3 : a;
}

/* The class of a label: GRAY8 values are classes, GRAY16 values instance
 * ids (class 1 when > 0), docs/segeval.md. */
static guint
class_of (GstVideoFormat fmt, guint v)
{
  return fmt == GST_VIDEO_FORMAT_GRAY8 ? v : v > 0;
}

/* Pixels of a @w x @h patch at (@x, @y) whose classes differ. */
static guint64
wrong_pixels (GstVideoFormat pfmt, GstVideoFormat afmt, gint w, gint h,
    gint64 x, gint64 y)
{
  guint64 n = 0;

  for (gint j = 0; j < h; j++)
    for (gint i = 0; i < w; i++)
      n += class_of (pfmt, pred_value (x + i, y + j)) != class_of (afmt,
          ann_value (x + i, y + j));
  return n;
}

/* A label patch: GRAY8 or GRAY16_LE, rows at the GstVideoInfo stride. */
static GstBuffer *
label_patch (GstVideoFormat fmt, gint w, gint h, gint64 x, gint64 y,
    gboolean pred, gboolean with_meta)
{
  GstVideoInfo info;
  GstVideoFrame f;
  GstBuffer *buf;

  gst_video_info_set_format (&info, fmt, w, h);
  buf = gst_buffer_new_allocate (NULL, GST_VIDEO_INFO_SIZE (&info), NULL);
  gst_buffer_memset (buf, 0, 0xee, GST_VIDEO_INFO_SIZE (&info));
  gst_video_frame_map (&f, &info, buf, GST_MAP_WRITE);
  for (gint j = 0; j < h; j++) {
    guint8 *row = (guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&f, 0)
        + (gsize) j * GST_VIDEO_FRAME_PLANE_STRIDE (&f, 0);
    for (gint i = 0; i < w; i++) {
      guint v = pred ? pred_value (x + i, y + j) : ann_value (x + i, y + j);
      if (fmt == GST_VIDEO_FORMAT_GRAY8)
        row[i] = v;
      else
        GST_WRITE_UINT16_LE (row + 2 * i, v);
    }
  }
  gst_video_frame_unmap (&f);
  if (with_meta) {
    GstWsiTileMeta *m = gst_wsi_tile_meta_add (buf);
    gst_wsi_tile_meta_set_slide (m, "conformance");
    m->x = x;
    m->y = y;
    m->width = m->valid_width = w;
    m->height = m->valid_height = h;
  }
  return buf;
}

static gchar *
label_caps (GstVideoFormat fmt, gint w, gint h)
{
  return g_strdup_printf ("video/x-raw,format=%s,width=%d,height=%d,"
      "framerate=0/1", gst_video_format_to_string (fmt), w, h);
}

typedef struct
{
  GstElement *el;
  GstHarness *pred, *ann;       /* pred also receives the src pad */
  GstBus *bus;
  gchar *report;
  gint periodic;                /* non-final reports seen by eval_finish */
} Eval;

/* segeval with @props, both pads fed by harnesses. segeval refuses to start
 * with an unlinked pad, so the annotation pad is linked to a stand-in
 * while the first harness starts the element. */
static void
eval_new (Eval * ev, const gchar * props, GstVideoFormat pfmt,
    GstVideoFormat afmt, gint w, gint h)
{
  GstPad *stand_in = gst_pad_new ("stand-in", GST_PAD_SRC);
  GstPad *ann;
  gchar *caps;
  static gint n;

  memset (ev, 0, sizeof (*ev));
  ev->el = gst_element_factory_make ("segeval", NULL);
  ev->report = g_strdup_printf ("%s/report-%d.json", tmp_dir, n++);
  g_object_set (ev->el, "location", ev->report, NULL);
  if (props) {
    gchar **kv = g_strsplit (props, "=", 2);
    gst_util_set_object_arg (G_OBJECT (ev->el), kv[0], kv[1]);
    g_strfreev (kv);
  }
  ev->bus = gst_bus_new ();
  gst_element_set_bus (ev->el, ev->bus);
  ann = gst_element_get_static_pad (ev->el, "annotation");
  gst_pad_link (stand_in, ann);
  ev->pred = gst_harness_new_with_element (ev->el, "prediction", "src");
  gst_pad_unlink (stand_in, ann);
  gst_object_unref (stand_in);
  gst_object_unref (ann);
  ev->ann = gst_harness_new_with_element (ev->el, "annotation", NULL);
  caps = label_caps (pfmt, w, h);
  gst_harness_set_src_caps_str (ev->pred, caps);
  g_free (caps);
  caps = label_caps (afmt, w, h);
  gst_harness_set_src_caps_str (ev->ann, caps);
  g_free (caps);
}

static void
eval_free (Eval * ev)
{
  gst_harness_teardown (ev->ann);
  gst_harness_teardown (ev->pred);
  gst_element_set_bus (ev->el, NULL);
  gst_object_unref (ev->bus);
  g_unlink (ev->report);
  g_free (ev->report);
}

/* Pushes one pair at (@x, @y) and pulls the prediction passed through;
 * NULL when that worked and the pass-through is the prediction. */
static gchar *
eval_pair (Eval * ev, GstVideoFormat pfmt, GstVideoFormat afmt, gint w,
    gint h, gint64 x, gint64 y)
{
  GstBuffer *p = label_patch (pfmt, w, h, x, y, TRUE, TRUE), *out;
  GstFlowReturn r1, r2;
  gchar *why = NULL;

  r1 = gst_harness_push (ev->pred, gst_buffer_ref (p));
  r2 = gst_harness_push (ev->ann, label_patch (afmt, w, h, x, y, FALSE,
          TRUE));
  if (r1 != GST_FLOW_OK || r2 != GST_FLOW_OK) {
    gst_buffer_unref (p);
    return g_strdup_printf ("push %dx%d: %s / %s", w, h,
        gst_flow_get_name (r1), gst_flow_get_name (r2));
  }
  out = gst_harness_pull (ev->pred);
  if (!out)
    why = g_strdup ("no prediction on the src pad");
  else {
    GstMapInfo a, b;
    gst_buffer_map (out, &a, GST_MAP_READ);
    gst_buffer_map (p, &b, GST_MAP_READ);
    if (a.size != b.size || memcmp (a.data, b.data, a.size))
      why = g_strdup ("the src pad changed the prediction");
    gst_buffer_unmap (out, &a);
    gst_buffer_unmap (p, &b);
  }
  gst_clear_buffer (&out);
  gst_buffer_unref (p);
  return why;
}

/* EOS on both pads; the final report's structure (NULL if none came), and
 * whether EOS reached the src pad. */
static GstStructure *
eval_finish (Eval * ev, gboolean * eos)
{
  GstStructure *res = NULL;
  gint64 end = g_get_monotonic_time () + 20 * G_USEC_PER_SEC;

  gst_harness_push_event (ev->pred, gst_event_new_eos ());
  gst_harness_push_event (ev->ann, gst_event_new_eos ());
  while (!res && g_get_monotonic_time () < end) {
    GstMessage *m = gst_bus_timed_pop_filtered (ev->bus, 100 * GST_MSECOND,
        GST_MESSAGE_ELEMENT | GST_MESSAGE_ERROR);
    const GstStructure *s;
    gboolean final = FALSE;

    if (!m)
      continue;
    s = gst_message_get_structure (m);
    if (GST_MESSAGE_TYPE (m) == GST_MESSAGE_ERROR) {
      gst_message_unref (m);
      break;
    }
    if (gst_structure_has_name (s, "segeval")
        && gst_structure_get_boolean (s, "final", &final)) {
      if (final)
        res = gst_structure_copy (s);
      else
        ev->periodic++;
    }
    gst_message_unref (m);
  }
  if (eos) {
    GstEvent *e;
    *eos = FALSE;
    end = g_get_monotonic_time () + 5 * G_USEC_PER_SEC;
    while (!*eos && g_get_monotonic_time () < end) {
      while ((e = gst_harness_try_pull_event (ev->pred))) {
        *eos |= GST_EVENT_TYPE (e) == GST_EVENT_EOS;
        gst_event_unref (e);
      }
      if (!*eos)
        g_usleep (10000);
    }
  }
  return res;
}

/* NULL when @s reports @patches pairs, @pixels pixels and the accuracy of
 * @wrong of them wrong. */
static gchar *
check_report (const GstStructure * s, guint64 patches, guint64 pixels,
    guint64 wrong)
{
  guint64 p = 0, px = 0;
  gdouble acc = -1, want = pixels ? 1.0 - (gdouble) wrong / pixels : 0;

  if (!s)
    return g_strdup ("no final segeval message");
  gst_structure_get_uint64 (s, "patches", &p);
  gst_structure_get_uint64 (s, "pixels", &px);
  gst_structure_get_double (s, "accuracy", &acc);
  if (p != patches || px != pixels || (pixels && fabs (acc - want) > 1e-12))
    return g_strdup_printf ("report: %" G_GUINT64_FORMAT " pairs, %"
        G_GUINT64_FORMAT " pixels, accuracy %.12g; want %" G_GUINT64_FORMAT
        ", %" G_GUINT64_FORMAT ", %.12g", p, px, acc, patches, pixels, want);
  return NULL;
}

static gchar *
first_error (GstBus * bus, GQuark * domain, gint * code)
{
  GstMessage *m = gst_bus_timed_pop_filtered (bus, 2 * GST_SECOND,
      GST_MESSAGE_ERROR);
  GError *e = NULL;
  gchar *text;

  if (!m)
    return NULL;
  gst_message_parse_error (m, &e, NULL);
  text = g_strdup (e->message);
  *domain = e->domain;
  *code = e->code;
  g_error_free (e);
  gst_message_unref (m);
  return text;
}

#define G8 GST_VIDEO_FORMAT_GRAY8
#define G16 GST_VIDEO_FORMAT_GRAY16_LE

/* ------------------------------------------------------------ situations */

static void
check_flushing_seek (void)
{
  gchar *img = g_build_filename (tmp_dir, "img.png", NULL);
  gchar *mask = g_build_filename (tmp_dir, "mask.png", NULL);
  gchar *report = g_build_filename (tmp_dir, "seek.json", NULL);
  gchar *desc, *err, *text = NULL, *pairs = NULL;
  gboolean written, ok;

  desc = g_strdup_printf ("videotestsrc num-buffers=1 ! video/x-raw,"
      "format=RGB,width=96,height=64 ! pngenc ! filesink location=%s", img);
  g_free (conf_run_pipeline (desc, -1, 30));
  g_free (desc);
  desc = g_strdup_printf ("videotestsrc num-buffers=1 pattern=circular ! "
      "video/x-raw,format=GRAY8,width=96,height=64 ! pngenc ! filesink "
      "location=%s", mask);
  g_free (conf_run_pipeline (desc, -1, 30));
  g_free (desc);
  /* 6 tiles x 150 passes, 1 ms each on the prediction branch: the seek
   * lands mid-stream and restarts the evaluation (never more than one
   * stream's 900 pairs counted) */
#define BRANCH "slidesrc location=%s loop=150 tile-width=32 tile-height=32 ! " \
    "labelpatch masks=%s ! "
  desc = g_strdup_printf ("segeval name=e location=%s ! fakesink sync=true "
      BRANCH "identity sleep-time=1000 ! queue ! e.prediction " BRANCH
      "queue ! e.annotation", report, img, mask, img, mask);
#undef BRANCH
  err = conf_run_pipeline (desc, 0.3, 120);
  g_free (desc);
  written = g_file_get_contents (report, &text, NULL, NULL);
  ok = !err && written && strstr (text, "\"accuracy\": 1")
      && (pairs = strstr (text, "\"patches\": "))
      && g_ascii_strtoull (pairs + 11, NULL, 10) <= 900;
  conf_result ("flushing-seek", ok, "slidesrc (not seekable) ! labelpatch "
      "branches, seek after 0.3 s: %s (refused, no hang); report: %.40s",
      err ? err : "EOS", written ? text : "none");
  g_free (text);
  g_unlink (report);
  g_free (report);
  g_free (img);
  g_free (mask);
  g_free (err);
}

static gboolean
on_seek_data (GstElement * appsrc, guint64 offset, gpointer user_data)
{
  return TRUE;                  /* the test pushes the data after the seek */
}

/* A flushing seek that upstream performs (seekable appsrc on both pads):
 * the evaluation restarts, only the pairs after the seek count. */
static void
check_seekable_seek (void)
{
  gchar *report = g_build_filename (tmp_dir, "seek2.json", NULL);
  gchar *caps = label_caps (G8, 32, 24);
  gchar *desc = g_strdup_printf ("appsrc name=p format=time "
      "stream-type=seekable caps=%s ! e.prediction appsrc name=a format=time "
      "stream-type=seekable caps=%s ! e.annotation segeval name=e "
      "location=%s ! fakesink", caps, caps, report);
  GstElement *pipe = gst_parse_launch (desc, NULL);
  GstElement *src[2], *e;
  GstBus *bus = gst_element_get_bus (pipe);
  GstMessage *m = NULL;
  gboolean seeked = FALSE;
  gchar *text = NULL, *pairs, *why = NULL;
  GstFlowReturn ret;
  guint64 n = 0;

  src[0] = gst_bin_get_by_name (GST_BIN (pipe), "p");
  src[1] = gst_bin_get_by_name (GST_BIN (pipe), "a");
  e = gst_bin_get_by_name (GST_BIN (pipe), "e");
  for (gint side = 0; side < 2; side++)
    g_signal_connect (src[side], "seek-data", G_CALLBACK (on_seek_data),
        NULL);
  gst_element_set_state (pipe, GST_STATE_PLAYING);
  for (gint round = 0; round < 2; round++) {
    gint count = round == 0 ? 10 : 4;
    for (gint k = 0; k < count; k++)
      for (gint side = 0; side < 2; side++) {
        GstBuffer *b = label_patch (G8, 32, 24, 32 * k, 24 * round,
            side == 0, TRUE);
        GST_BUFFER_PTS (b) = k * 10 * GST_MSECOND;
        GST_BUFFER_DURATION (b) = 10 * GST_MSECOND;
        g_signal_emit_by_name (src[side], "push-buffer", b, &ret);
        gst_buffer_unref (b);
      }
    if (round == 0) {
      g_usleep (300000);
      seeked = gst_element_seek_simple (pipe, GST_FORMAT_TIME,
          GST_SEEK_FLAG_FLUSH, 0);
    }
  }
  for (gint side = 0; side < 2; side++)
    g_signal_emit_by_name (src[side], "end-of-stream", &ret);
  m = gst_bus_timed_pop_filtered (bus, 30 * GST_SECOND,
      GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
  if (!m || GST_MESSAGE_TYPE (m) != GST_MESSAGE_EOS)
    why = g_strdup (m ? "error" : "no EOS after 30 s");
  else if (!g_file_get_contents (report, &text, NULL, NULL)
      || !(pairs = strstr (text, "\"patches\": ")))
    why = g_strdup ("no report");
  else if ((n = g_ascii_strtoull (pairs + 11, NULL, 10)) != 4)
    why = g_strdup_printf ("report of %" G_GUINT64_FORMAT " pairs, want the "
        "4 after the seek", n);
  conf_result ("flushing-seek", seeked && !why, "seekable appsrc branches, "
      "10 pairs, flushing seek, 4 pairs: %s", !seeked ? "seek refused" :
      why ? why : "report of the 4 after the seek, EOS");
  if (m)
    gst_message_unref (m);
  gst_element_set_state (pipe, GST_STATE_NULL);
  gst_object_unref (src[0]);
  gst_object_unref (src[1]);
  gst_object_unref (e);
  gst_object_unref (bus);
  gst_object_unref (pipe);
  g_unlink (report);
  g_free (report);
  g_free (text);
  g_free (why);
  g_free (caps);
  g_free (desc);
}

static void
check_flush (void)
{
  Eval ev;
  gchar *why = NULL;
  GstStructure *s;
  gboolean eos;
  guint64 wrong = 0;

  eval_new (&ev, NULL, G8, G8, 32, 24);
  for (gint k = 0; k < 2 && !why; k++)
    why = eval_pair (&ev, G8, G8, 32, 24, 32 * k, 0);
  /* a prediction waiting for its partner is dropped by the flush */
  if (!why)
    gst_harness_push (ev.pred, label_patch (G8, 32, 24, 500, 500, TRUE,
            TRUE));
  conf_push_flush (ev.pred);
  conf_push_flush (ev.ann);
  conf_drain (ev.pred);
  /* the evaluation restarts: only what follows the flush counts */
  for (gint k = 0; k < 3 && !why; k++) {
    why = eval_pair (&ev, G8, G8, 32, 24, 32 * k, 24);
    wrong += wrong_pixels (G8, G8, 32, 24, 32 * k, 24);
  }
  s = eval_finish (&ev, &eos);
  if (!why)
    why = check_report (s, 3, 3 * 32 * 24, wrong);
  conf_result ("flush", !why && eos, "2 pairs, FLUSH_START/STOP on both "
      "pads, 3 pairs: %s", why ? why : eos ? "report of the 3 after the "
      "flush, EOS" : "no EOS");
  g_clear_pointer (&s, gst_structure_free);
  g_free (why);
  eval_free (&ev);
}

static void
check_eos_no_data (void)
{
  Eval ev;
  GstStructure *s;
  gboolean eos, written;
  gchar *why;

  eval_new (&ev, NULL, G8, G8, 32, 24);
  s = eval_finish (&ev, &eos);
  why = check_report (s, 0, 0, 0);
  written = g_file_test (ev.report, G_FILE_TEST_IS_REGULAR);
  conf_result ("eos-no-data", !why && eos && written, "%s", why ? why :
      !eos ? "no EOS on the src pad" : !written ? "no JSON report" :
      "final report of 0 pairs, JSON written, EOS");
  g_clear_pointer (&s, gst_structure_free);
  g_free (why);
  eval_free (&ev);
}

typedef struct
{
  Eval *ev;
  gint pairs;
  gchar *bad;
} PumpData;

static void
pump (gpointer user_data)
{
  PumpData *d = user_data;
  gchar *why = eval_pair (d->ev, G8, G8, 32, 24, 32 * d->pairs, 0);

  d->pairs++;
  if (why && !d->bad)
    d->bad = why;
  else
    g_free (why);
}

static gint
count_periodic (GstBus * bus)
{
  GstMessage *m;
  gint n = 0;

  while ((m = gst_bus_pop_filtered (bus, GST_MESSAGE_ELEMENT))) {
    const GstStructure *s = gst_message_get_structure (m);
    gboolean final = TRUE;
    if (gst_structure_has_name (s, "segeval")
        && gst_structure_get_boolean (s, "final", &final) && !final)
      n++;
    gst_message_unref (m);
  }
  return n;
}

static void
check_props_playing (void)
{
  Eval ev;
  PumpData d = { &ev, 0, NULL };
  const gchar *strings[] = { "location=/nonexistent/r.json", NULL };
  /* GstAggregator's own properties */
  const gchar *skip[] = { "latency", "min-upstream-latency",
    "start-time-selection", "start-time", "emit-signals", NULL
  };
  gchar *loc = NULL, *why = NULL;
  gint quiet, periodic;
  GstStructure *s;
  gboolean eos;

  eval_new (&ev, "interval=1", G8, G8, 32, 24);
  pump (&d);
  conf_props_while_playing (ev.el, skip, strings, pump, &d);
  g_object_get (ev.el, "location", &loc, NULL);
  /* issue #9 point 11: per-pair reports only with post-messages=true,
   * which applies while PLAYING. A pair is evaluated after its prediction
   * passed through, so the pull of the next pair's shows it done. */
  g_object_set (ev.el, "post-messages", FALSE, "interval", 1, NULL);
  pump (&d);
  count_periodic (ev.bus);
  pump (&d);
  pump (&d);
  pump (&d);
  quiet = count_periodic (ev.bus);
  g_object_set (ev.el, "post-messages", TRUE, NULL);
  pump (&d);
  pump (&d);
  s = eval_finish (&ev, &eos);
  periodic = count_periodic (ev.bus) + ev.periodic;
  if (!s)
    why = g_strdup ("no final report");
  conf_result ("props-playing", !d.bad && !why && quiet == 0 && periodic >= 2
      && periodic <= 3 && !g_strcmp0 (loc, ev.report), "%d pairs while "
      "setting properties (%s); post-messages=false: %d periodic reports, "
      "true: %d (want 0, 2 or 3); "
      "location %s", d.pairs, d.bad ? d.bad : "all passed through",
      quiet, periodic, !g_strcmp0 (loc, ev.report) ? "unchanged" : loc);
  g_clear_pointer (&s, gst_structure_free);
  g_free (why);
  g_free (d.bad);
  g_free (loc);
  eval_free (&ev);
}

static void
check_renegotiation (void)
{
  Eval ev;
  const struct
  {
    GstVideoFormat p, a;
    gint w, h;
  } steps[] = {
    {G8, G8, 32, 24}, {G8, G8, 48, 40}, {G8, G16, 48, 40}, {G16, G16, 7, 5},
    {G8, G8, 32, 24},
  };
  gchar *why = NULL;
  guint64 pixels = 0, wrong = 0;
  GstStructure *s;
  gboolean eos;

  eval_new (&ev, NULL, G8, G8, 32, 24);
  for (guint k = 0; k < G_N_ELEMENTS (steps) && !why; k++) {
    gchar *pc = label_caps (steps[k].p, steps[k].w, steps[k].h);
    gchar *ac = label_caps (steps[k].a, steps[k].w, steps[k].h);
    gst_harness_set_src_caps_str (ev.pred, pc);
    gst_harness_set_src_caps_str (ev.ann, ac);
    g_free (pc);
    g_free (ac);
    for (gint r = 0; r < 2 && !why; r++) {
      gint64 x = 100 * k + steps[k].w * r;
      why = eval_pair (&ev, steps[k].p, steps[k].a, steps[k].w, steps[k].h,
          x, 0);
      pixels += (guint64) steps[k].w * steps[k].h;
      wrong += wrong_pixels (steps[k].p, steps[k].a, steps[k].w, steps[k].h,
          x, 0);
    }
  }
  s = eval_finish (&ev, &eos);
  if (!why)
    why = check_report (s, 2 * G_N_ELEMENTS (steps), pixels, wrong);
  conf_result ("renegotiation", !why, "size and depth changes on both pads "
      "(GRAY8 32x24 -> 48x40 -> GRAY16 annotation -> GRAY16 7x5 -> GRAY8): "
      "%s", why ? why : "pass-through and metrics right");
  g_clear_pointer (&s, gst_structure_free);
  g_free (why);
  eval_free (&ev);
}

static void
check_odd_sizes (void)
{
  const gint sizes[] = { 1, 3, 127, 250, 8191 };
  GString *done = g_string_new (NULL);
  gchar *why = NULL;

  for (guint k = 0; k < G_N_ELEMENTS (sizes) && !why; k++) {
    gint sz = sizes[k];
    GstVideoFormat a = (k & 1) ? G16 : G8;
    Eval ev;
    GstStructure *s;
    gboolean eos;

    eval_new (&ev, NULL, G8, a, sz, sz);
    why = eval_pair (&ev, G8, a, sz, sz, 5, 9);
    s = eval_finish (&ev, &eos);
    if (!why)
      why = check_report (s, 1, (guint64) sz * sz, wrong_pixels (G8, a, sz,
              sz, 5, 9));
    g_clear_pointer (&s, gst_structure_free);
    eval_free (&ev);
    g_string_append_printf (done, " %d%s", sz, a == G16 ? "(GRAY16)" : "");
  }
  conf_result ("odd-sizes", !why, "sizes%s, rows at the GstVideoInfo "
      "stride: %s", done->str, why ? why : "metrics right");
  g_string_free (done, TRUE);
  g_free (why);
}

static void
check_no_tile_meta (void)
{
  Eval ev;
  GstFlowReturn r1, r2;
  GQuark dom = 0;
  gint code = 0;
  gchar *e;

  eval_new (&ev, NULL, G8, G8, 32, 24);
  r1 = gst_harness_push (ev.pred, label_patch (G8, 32, 24, 0, 0, TRUE,
          FALSE));
  r2 = gst_harness_push (ev.ann, label_patch (G8, 32, 24, 0, 0, FALSE,
          TRUE));
  e = first_error (ev.bus, &dom, &code);
  conf_result ("no-tile-meta", e && dom == GST_STREAM_ERROR
      && code == GST_STREAM_ERROR_FORMAT && strstr (e, "tile metadata"),
      "push %s/%s, error: %s", gst_flow_get_name (r1),
      gst_flow_get_name (r2), e ? e : "none");
  g_free (e);
  eval_free (&ev);
}

static void
check_zero_area (void)
{
  Eval ev;
  GstBuffer *p, *a;
  GstStructure *s;
  gboolean eos;
  gchar *why = NULL;

  /* patches lying beyond their region: nothing of them counts */
  eval_new (&ev, NULL, G8, G8, 32, 24);
  p = label_patch (G8, 32, 24, 100, 100, TRUE, TRUE);
  a = label_patch (G8, 32, 24, 100, 100, FALSE, TRUE);
  gst_buffer_get_wsi_tile_meta (p)->region_width = 10;
  gst_buffer_get_wsi_tile_meta (p)->region_height = 10;
  gst_buffer_get_wsi_tile_meta (a)->region_width = 10;
  gst_buffer_get_wsi_tile_meta (a)->region_height = 10;
  if (gst_harness_push (ev.pred, p) != GST_FLOW_OK
      || gst_harness_push (ev.ann, a) != GST_FLOW_OK)
    why = g_strdup ("push refused");
  s = eval_finish (&ev, &eos);
  if (!why)
    why = check_report (s, 1, 0, 0);
  conf_result ("zero-area", !why && eos, "a pair outside its 10x10 region: "
      "%s", why ? why : "1 pair, 0 pixels, final report and EOS");
  g_clear_pointer (&s, gst_structure_free);
  g_free (why);
  eval_free (&ev);
}

int
main (int argc, char **argv)
{
  conf_init (&argc, &argv, "segeval");
  gst_wsi_tile_meta_get_info ();
  tmp_dir = g_dir_make_tmp ("conf-segeval-XXXXXX", NULL);

  check_flushing_seek ();
  check_seekable_seek ();
  check_flush ();
  check_eos_no_data ();
  check_props_playing ();
  check_renegotiation ();
  check_odd_sizes ();
  check_no_tile_meta ();
  check_zero_area ();

  conf_remove_dir (tmp_dir);
  g_free (tmp_dir);
  return conf_finish ();
}
