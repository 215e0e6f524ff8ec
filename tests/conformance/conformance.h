/* Conformance suite: situations every element of the plugin must handle
 * (docs/conformance.md). One test program per element, test_ELEMENT.c,
 * each printing one line per (element, situation):
 *
 *   CONFORMANCE <element> <situation> ok|FAIL <detail>
 *
 * tests/conformance/table.py turns those lines into the table in docs/.
 * Situations (use these names):
 *   flushing-seek    a flushing seek on a running pipeline
 *   flush            FLUSH_START/FLUSH_STOP mid-stream, then more data
 *   eos-no-data      EOS before any buffer
 *   props-playing    every writable property set while PLAYING (contract
 *                    below), plus element-specific invalid values
 *   renegotiation    new caps mid-stream
 *   odd-sizes        patch sizes 1, 3, 127, 250, 8191 where accepted
 *   no-tile-meta     buffers without GstWsiTileMeta
 *   zero-area        a zero-area region / empty input
 * A situation that does not apply is reported "ok" with "n/a: why".
 *
 * Header-only so each program stays one file. */
#pragma once

#include <gst/check/gstcheck.h>
#include <gst/check/gstharness.h>
#include <gst/video/video.h>
#include <gst/video/gstvideofilter.h>
#include <gst/video/gstvideosink.h>
#include <gst/base/base.h>
#include <glib/gstdio.h>
#include <stdarg.h>
#include <string.h>

#include "gstwsitilemeta.h"

static const gchar *conf_element_name;
static gint conf_passed, conf_failed;

static inline void
conf_init (int *argc, char ***argv, const gchar * element)
{
  gst_check_init (argc, argv);
  conf_element_name = element;
}

/* Records one situation's outcome. */
static inline void
conf_result (const gchar * situation, gboolean ok, const gchar * fmt, ...)
    G_GNUC_PRINTF (3, 4);

static inline void
conf_result (const gchar * situation, gboolean ok, const gchar * fmt, ...)
{
  va_list ap;
  gchar *detail;

  va_start (ap, fmt);
  detail = g_strdup_vprintf (fmt ? fmt : "", ap);
  va_end (ap);
  g_print ("CONFORMANCE %s %s %s %s\n", conf_element_name, situation,
      ok ? "ok" : "FAIL", detail);
  if (ok)
    conf_passed++;
  else
    conf_failed++;
  g_free (detail);
}

static inline int
conf_finish (void)
{
  g_print ("%d passed, %d failed\n", conf_passed, conf_failed);
  return conf_failed ? 1 : 0;
}

/* An RGB patch with the stride GstVideoInfo gives (rows 4-byte aligned),
 * deterministic content, and a tile meta unless @with_meta is FALSE. */
static inline GstBuffer *
conf_rgb_patch (gint width, gint height, guint seed, gboolean with_meta,
    gint64 x, gint64 y)
{
  GstVideoInfo info;
  GstBuffer *buf;
  GstVideoFrame frame;

  gst_video_info_set_format (&info, GST_VIDEO_FORMAT_RGB, width, height);
  buf = gst_buffer_new_allocate (NULL, GST_VIDEO_INFO_SIZE (&info), NULL);
  gst_video_frame_map (&frame, &info, buf, GST_MAP_WRITE);
  for (gint r = 0; r < height; r++) {
    guint8 *row = (guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&frame, 0)
        + r * GST_VIDEO_FRAME_PLANE_STRIDE (&frame, 0);
    for (gint c = 0; c < width * 3; c++)
      row[c] = (guint8) ((r * 13 + c * 7 + seed * 31) % 200 + 30);
  }
  gst_video_frame_unmap (&frame);
  if (with_meta) {
    GstWsiTileMeta *m = gst_wsi_tile_meta_add (buf);
    gst_wsi_tile_meta_set_slide (m, "conformance");
    m->x = x;
    m->y = y;
    m->width = m->valid_width = width;
    m->height = m->valid_height = height;
    m->frame = seed;
  }
  return buf;
}

static inline gchar *
conf_rgb_caps (gint width, gint height)
{
  return g_strdup_printf ("video/x-raw,format=RGB,width=%d,height=%d,"
      "framerate=0/1", width, height);
}

/* First error on @bus (popping every message), or NULL; its domain and
 * code when asked. */
static inline gchar *
conf_bus_error (GstBus * bus, GQuark * domain, gint * code)
{
  GstMessage *m;
  gchar *text = NULL;

  while ((m = gst_bus_pop (bus))) {
    if (GST_MESSAGE_TYPE (m) == GST_MESSAGE_ERROR && !text) {
      GError *e = NULL;
      gst_message_parse_error (m, &e, NULL);
      text = g_strdup (e->message);
      if (domain)
        *domain = e->domain;
      if (code)
        *code = e->code;
      g_error_free (e);
    }
    gst_message_unref (m);
  }
  return text;
}

/* A harness around the gst-launch description @desc fed RGB patches of
 * @size; with @bus, the element posts on a private bus made before the
 * caps (errors of the first caps event are caught too). */
static inline GstHarness *
conf_harness_new (const gchar * desc, gint size, GstBus ** bus)
{
  gchar *caps = conf_rgb_caps (size, size);
  GstHarness *h = gst_harness_new_parse (desc);

  if (bus) {
    *bus = gst_bus_new ();
    gst_element_set_bus (h->element, *bus);
  }
  gst_harness_set_src_caps_str (h, caps);
  g_free (caps);
  return h;
}

static inline void
conf_detach_bus (GstHarness * h, GstBus * bus)
{
  gst_element_set_bus (h->element, NULL);
  gst_object_unref (bus);
}

/* The errors posted on @bus within @wait (joined, or NULL); the domain
 * and code of the first one containing @needle (any if NULL) go to
 * @domain / @code. */
static inline gchar *
conf_bus_error_matching (GstBus * bus, GstClockTime wait,
    const gchar * needle, GQuark * domain, gint * code)
{
  GString *all = g_string_new (NULL);
  GstMessage *m;
  gboolean found = FALSE;

  while ((m = gst_bus_timed_pop_filtered (bus, wait, GST_MESSAGE_ERROR))) {
    GError *e = NULL;
    gst_message_parse_error (m, &e, NULL);
    g_string_append_printf (all, "%s%s", all->len ? " / " : "", e->message);
    if (!found && (!needle || strstr (e->message, needle))) {
      found = TRUE;
      if (domain)
        *domain = e->domain;
      if (code)
        *code = e->code;
    }
    g_error_free (e);
    gst_message_unref (m);
    wait = 200 * GST_MSECOND;
  }
  return g_string_free (all, all->len == 0);
}

/* Pulls events until EOS (or the harness' timeout); notes GAP (@gap may
 * be NULL) and EOS. */
static inline void
conf_wait_eos (GstHarness * h, gboolean * gap, gboolean * eos)
{
  GstEvent *e;

  *eos = FALSE;
  while (!*eos && (e = gst_harness_pull_event (h))) {
    if (gap)
      *gap |= GST_EVENT_TYPE (e) == GST_EVENT_GAP;
    *eos = GST_EVENT_TYPE (e) == GST_EVENT_EOS;
    gst_event_unref (e);
  }
}

/* TRUE when the next buffer pulled from @h has @bytes bytes. */
static inline gboolean
conf_pull_sized (GstHarness * h, gsize bytes)
{
  GstBuffer *b = gst_harness_pull (h);
  gboolean ok = b && gst_buffer_get_size (b) == bytes;

  gst_clear_buffer (&b);
  return ok;
}

/* One patch of @size through the element: TRUE with an output of that
 * size, else the errors (@domain/@code: of the one containing @needle). */
typedef gboolean (*ConfTrySize) (gint size, const gchar * needle,
    gchar ** error, GQuark * domain, gint * code);

/* odd-sizes of a segmentation element whose patch sides must be multiples
 * of @multiple: the odd sizes refused with a FORMAT error naming the
 * multiple, the @accepted sizes segmented, the largest multiple under 8191
 * refused by max-memory (gst/gstwsibatch's memory guard). */
static inline void
conf_check_odd_sizes (ConfTrySize try_size, gint multiple,
    const gint * accepted, guint n_accepted)
{
  const gint refused[] = { 1, 3, 127, 250, 8191 };
  const gint large = 8191 / multiple * multiple;
  gchar *needle = g_strdup_printf ("multiples of %d", multiple);
  GString *detail = g_string_new (NULL);
  gboolean ok = TRUE;

  for (guint i = 0; i < G_N_ELEMENTS (refused); i++) {
    gchar *err = NULL;
    GQuark dom = 0;
    gint code = 0;
    gboolean out = try_size (refused[i], needle, &err, &dom, &code);
    gboolean clear = !out && err && strstr (err, needle)
        && dom == GST_STREAM_ERROR && code == GST_STREAM_ERROR_FORMAT;
    ok &= clear;
    if (clear)
      g_string_append_printf (detail, "%d refused (%s); ", refused[i],
          needle);
    else
      g_string_append_printf (detail, "%d %s; ", refused[i],
          err ? err : "ACCEPTED");
    g_free (err);
  }
  for (guint i = 0; i < n_accepted; i++) {
    gchar *err = NULL;
    gboolean out = try_size (accepted[i], NULL, &err, NULL, NULL);
    ok &= out;
    g_string_append_printf (detail, "%d %s; ", accepted[i], out ?
        "accepted" : (err ? err : "no output"));
    g_free (err);
  }
  {
    gchar *err = NULL;
    GQuark dom = 0;
    gint code = 0;
    gboolean out = try_size (large, "Not enough memory", &err, &dom, &code);
    gboolean clear = !out && err && strstr (err, "Not enough memory")
        && dom == GST_RESOURCE_ERROR
        && code == GST_RESOURCE_ERROR_NO_SPACE_LEFT;
    ok &= clear;
    g_string_append_printf (detail, "%d %s", large, clear ?
        "refused (over max-memory)" : (err ? err : "ACCEPTED"));
    g_free (err);
  }
  conf_result ("odd-sizes", ok, "%s", detail->str);
  g_string_free (detail, TRUE);
  g_free (needle);
}

/* The checks of one element, one per situation (NULL: not run). */
typedef struct
{
  void (*flushing_seek) (void);
  void (*flush) (void);
  void (*eos_no_data) (void);
  void (*props_playing) (void);
  void (*renegotiation) (void);
  void (*odd_sizes) (void);
  void (*no_tile_meta) (void);
  void (*zero_area) (void);
} ConfChecks;

/* Runs the checks in the order of the table; CONF_ONLY=situation runs
 * one (debugging). */
static inline void
conf_run_checks (const ConfChecks * c)
{
  const gchar *only = g_getenv ("CONF_ONLY");
  const struct
  {
    const gchar *name;
    void (*fn) (void);
  } all[] = {
    {"flushing-seek", c->flushing_seek}, {"flush", c->flush},
    {"eos-no-data", c->eos_no_data}, {"props-playing", c->props_playing},
    {"renegotiation", c->renegotiation}, {"odd-sizes", c->odd_sizes},
    {"no-tile-meta", c->no_tile_meta}, {"zero-area", c->zero_area},
  };

  for (guint i = 0; i < G_N_ELEMENTS (all); i++)
    if (all[i].fn && (!only || g_strcmp0 (only, all[i].name) == 0))
      all[i].fn ();
}

/* Removes @dir and the files in it (a test's scratch folder). */
static inline void
conf_remove_dir (const gchar * dir)
{
  GDir *d = g_dir_open (dir, 0, NULL);
  const gchar *name;

  while (d && (name = g_dir_read_name (d))) {
    gchar *p = g_build_filename (dir, name, NULL);
    g_unlink (p);
    g_free (p);
  }
  if (d)
    g_dir_close (d);
  g_rmdir (dir);
}

/* Pushes FLUSH_START, FLUSH_STOP and a fresh segment into @h. */
static inline gboolean
conf_push_flush (GstHarness * h)
{
  GstSegment seg;

  gst_segment_init (&seg, GST_FORMAT_TIME);
  return gst_harness_push_event (h, gst_event_new_flush_start ())
      && gst_harness_push_event (h, gst_event_new_flush_stop (TRUE))
      && gst_harness_push_event (h, gst_event_new_segment (&seg));
}

/* Drops every buffer and event waiting at the harness's sink. */
static inline void
conf_drain (GstHarness * h)
{
  GstBuffer *b;
  GstEvent *e;

  while ((b = gst_harness_try_pull (h)))
    gst_buffer_unref (b);
  while ((e = gst_harness_try_pull_event (h)))
    gst_event_unref (e);
}

/* TRUE if an EOS event reached the harness's sink. */
static inline gboolean
conf_saw_eos (GstHarness * h)
{
  GstEvent *e;
  gboolean eos = FALSE;

  while ((e = gst_harness_try_pull_event (h))) {
    eos |= GST_EVENT_TYPE (e) == GST_EVENT_EOS;
    gst_event_unref (e);
  }
  return eos;
}

/* Runs a gst-launch description to EOS (or @timeout_s). Returns NULL on
 * EOS, else a newly allocated error text. @seek_after_s >= 0 sends a
 * flushing seek to 0 that long after PLAYING (once). */
static inline gchar *
conf_run_pipeline (const gchar * desc, gdouble seek_after_s,
    gdouble timeout_s)
{
  GError *err = NULL;
  GstElement *pipe = gst_parse_launch (desc, &err);
  GstBus *bus;
  gchar *result = NULL;
  gint64 start, deadline;
  gboolean seeked = seek_after_s < 0;

  if (!pipe) {
    result = g_strdup_printf ("parse: %s", err ? err->message : "?");
    g_clear_error (&err);
    return result;
  }
  bus = gst_element_get_bus (pipe);
  gst_element_set_state (pipe, GST_STATE_PLAYING);
  start = g_get_monotonic_time ();
  deadline = start + (gint64) (timeout_s * G_USEC_PER_SEC);
  while (!result) {
    GstMessage *m = gst_bus_timed_pop_filtered (bus, 20 * GST_MSECOND,
        GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
    if (m) {
      if (GST_MESSAGE_TYPE (m) == GST_MESSAGE_ERROR) {
        GError *e = NULL;
        gst_message_parse_error (m, &e, NULL);
        result = g_strdup_printf ("error from %s: %s",
            GST_OBJECT_NAME (GST_MESSAGE_SRC (m)), e->message);
        g_clear_error (&e);
      }
      gst_message_unref (m);
      break;
    }
    if (!seeked && g_get_monotonic_time () - start >
        (gint64) (seek_after_s * G_USEC_PER_SEC)) {
      seeked = TRUE;
      /* a refused seek is fine; a crash or a hang is not */
      gst_element_seek_simple (pipe, GST_FORMAT_TIME,
          GST_SEEK_FLAG_FLUSH | GST_SEEK_FLAG_KEY_UNIT, 0);
    }
    if (g_get_monotonic_time () > deadline)
      result = g_strdup_printf ("timed out after %.0f s", timeout_s);
  }
  gst_element_set_state (pipe, GST_STATE_NULL);
  gst_object_unref (bus);
  gst_object_unref (pipe);
  return result;
}

/* Writes a @size x @size PNG of videotestsrc @pattern in @format (RGB,
 * GRAY8, GRAY16_BE) to @path: a slide image or an annotation mask. */
static inline void
conf_write_png (const gchar * path, const gchar * pattern,
    const gchar * format, gint size)
{
  gchar *desc = g_strdup_printf ("videotestsrc num-buffers=1 pattern=%s ! "
      "video/x-raw,format=%s,width=%d,height=%d ! pngenc ! filesink "
      "location=%s", pattern, format, size, size, path);

  g_free (conf_run_pipeline (desc, -1, 30));
  g_free (desc);
}

/* Property contract while PLAYING. Every writable, not construct-only
 * property carries GST_PARAM_MUTABLE_PLAYING (applied at a safe point) or
 * GST_PARAM_MUTABLE_READY / _PAUSED (refused while PLAYING: the value does
 * not change). For each property this sets a new valid value (range ends,
 * enum values, the flipped boolean; strings from @strings, a NULL-ended
 * list of "name=value" pairs, else left alone), calls @pump to stream
 * data with it, and checks the contract. Properties in @skip (NULL-ended)
 * are not touched. Returns the number of violations; details via
 * conf_result under "props-playing". */
typedef void (*ConfPump) (gpointer user_data);

static inline gboolean
conf_values_equal (const GValue * a, const GValue * b)
{
  return gst_value_compare (a, b) == GST_VALUE_EQUAL;
}

/* Properties of GStreamer's own base classes (qos, latency, ...) follow
 * their documented behaviour; only the plugin's properties are checked. */
static inline gboolean
conf_is_base_class_type (GType t)
{
  return t == G_TYPE_OBJECT || t == GST_TYPE_OBJECT || t == GST_TYPE_ELEMENT
      || t == GST_TYPE_BASE_SRC || t == GST_TYPE_PUSH_SRC
      || t == GST_TYPE_BASE_SINK || t == GST_TYPE_BASE_TRANSFORM
      || t == GST_TYPE_AGGREGATOR || t == GST_TYPE_VIDEO_FILTER
      || t == GST_TYPE_VIDEO_SINK || t == GST_TYPE_BIN;
}

static inline gint
conf_props_while_playing (GstElement * el, const gchar * const *skip,
    const gchar * const *strings, ConfPump pump, gpointer user_data)
{
  guint n;
  GParamSpec **specs = g_object_class_list_properties (G_OBJECT_GET_CLASS
      (el), &n);
  gint bad = 0, tried = 0;
  GString *unflagged = g_string_new (NULL);

  for (guint i = 0; i < n; i++) {
    GParamSpec *p = specs[i];
    GValue before = G_VALUE_INIT, after = G_VALUE_INIT, want = G_VALUE_INIT;
    GValue cands[4] = { G_VALUE_INIT, G_VALUE_INIT, G_VALUE_INIT,
      G_VALUE_INIT
    };
    gint nc = 0;
    gboolean mutable_playing;

    if (!(p->flags & G_PARAM_WRITABLE) || (p->flags & G_PARAM_CONSTRUCT_ONLY)
        || conf_is_base_class_type (p->owner_type)
        || (skip && g_strv_contains (skip, p->name)))
      continue;
    if (!(p->flags & (GST_PARAM_MUTABLE_PLAYING | GST_PARAM_MUTABLE_PAUSED |
                GST_PARAM_MUTABLE_READY))) {
      g_string_append_printf (unflagged, " %s", p->name);
      bad++;
      continue;
    }
    mutable_playing = (p->flags & GST_PARAM_MUTABLE_PLAYING) != 0;
    g_value_init (&before, p->value_type);
    g_object_get_property (G_OBJECT (el), p->name, &before);

#define CONF_CAND(T, setter, v) do { g_value_init (&cands[nc], T); \
      setter (&cands[nc], v); nc++; } while (0)
    if (G_IS_PARAM_SPEC_INT (p)) {
      CONF_CAND (G_TYPE_INT, g_value_set_int, G_PARAM_SPEC_INT (p)->minimum);
      CONF_CAND (G_TYPE_INT, g_value_set_int, G_PARAM_SPEC_INT (p)->maximum);
    } else if (G_IS_PARAM_SPEC_UINT (p)) {
      CONF_CAND (G_TYPE_UINT, g_value_set_uint,
          G_PARAM_SPEC_UINT (p)->minimum);
      CONF_CAND (G_TYPE_UINT, g_value_set_uint,
          G_PARAM_SPEC_UINT (p)->maximum);
    } else if (G_IS_PARAM_SPEC_INT64 (p)) {
      CONF_CAND (G_TYPE_INT64, g_value_set_int64,
          G_PARAM_SPEC_INT64 (p)->minimum);
      CONF_CAND (G_TYPE_INT64, g_value_set_int64,
          G_PARAM_SPEC_INT64 (p)->maximum);
    } else if (G_IS_PARAM_SPEC_UINT64 (p)) {
      CONF_CAND (G_TYPE_UINT64, g_value_set_uint64,
          G_PARAM_SPEC_UINT64 (p)->minimum);
      CONF_CAND (G_TYPE_UINT64, g_value_set_uint64,
          G_PARAM_SPEC_UINT64 (p)->maximum);
    } else if (G_IS_PARAM_SPEC_DOUBLE (p)) {
      CONF_CAND (G_TYPE_DOUBLE, g_value_set_double,
          G_PARAM_SPEC_DOUBLE (p)->minimum);
      CONF_CAND (G_TYPE_DOUBLE, g_value_set_double,
          G_PARAM_SPEC_DOUBLE (p)->maximum);
    } else if (G_IS_PARAM_SPEC_FLOAT (p)) {
      CONF_CAND (G_TYPE_FLOAT, g_value_set_float,
          G_PARAM_SPEC_FLOAT (p)->minimum);
      CONF_CAND (G_TYPE_FLOAT, g_value_set_float,
          G_PARAM_SPEC_FLOAT (p)->maximum);
    } else if (G_IS_PARAM_SPEC_BOOLEAN (p)) {
      CONF_CAND (G_TYPE_BOOLEAN, g_value_set_boolean,
          !g_value_get_boolean (&before));
    } else if (G_IS_PARAM_SPEC_ENUM (p)) {
      GEnumClass *ec = G_PARAM_SPEC_ENUM (p)->enum_class;
      for (guint k = 0; k < ec->n_values && nc < 4; k++) {
        g_value_init (&cands[nc], p->value_type);
        g_value_set_enum (&cands[nc++], ec->values[k].value);
      }
    } else if (G_IS_PARAM_SPEC_STRING (p) && strings) {
      for (const gchar * const *s = strings; *s && nc < 4; s++) {
        gsize l = strlen (p->name);
        if (!strncmp (*s, p->name, l) && (*s)[l] == '=')
          CONF_CAND (G_TYPE_STRING, g_value_set_string, *s + l + 1);
      }
    }
#undef CONF_CAND

    for (gint k = 0; k < nc; k++) {
      GValue cur = G_VALUE_INIT;
      g_value_init (&cur, p->value_type);
      g_object_get_property (G_OBJECT (el), p->name, &cur);
      g_object_set_property (G_OBJECT (el), p->name, &cands[k]);
      tried++;
      g_value_init (&after, p->value_type);
      g_object_get_property (G_OBJECT (el), p->name, &after);
      if (!mutable_playing && !conf_values_equal (&after, &cur)) {
        gchar *s = g_strdup_value_contents (&cands[k]);
        conf_result ("props-playing", FALSE, "%s=%s took effect while "
            "PLAYING but is not flagged mutable-playing", p->name, s);
        g_free (s);
        bad++;
      }
      g_value_unset (&after);
      g_value_unset (&cur);
      if (pump)
        pump (user_data);
    }
    /* back to where it was */
    g_value_init (&want, p->value_type);
    g_value_copy (&before, &want);
    g_object_set_property (G_OBJECT (el), p->name, &want);
    if (pump)
      pump (user_data);
    g_value_unset (&want);
    g_value_unset (&before);
    for (gint k = 0; k < nc; k++)
      g_value_unset (&cands[k]);
  }
  if (unflagged->len)
    conf_result ("props-playing", FALSE, "writable properties without a "
        "GST_PARAM_MUTABLE_* flag:%s", unflagged->str);
  g_string_free (unflagged, TRUE);
  g_free (specs);
  if (!bad)
    conf_result ("props-playing", TRUE, "%d values set on %s while PLAYING, "
        "contract held", tried, GST_ELEMENT_NAME (el));
  return bad;
}
