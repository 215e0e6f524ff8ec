/* Conformance: slidesrc (docs/conformance.md). The source runs in a harness
 * (gst_harness_new_parse + pull) or a pipeline on the sample slide; tiles
 * are checked through GstVideoInfo strides against one whole-region read. */
#include "conformance.h"

#include <glib/gstdio.h>

static const gchar *
sample (void)
{
  const gchar *s = g_getenv ("WSISEG_SAMPLE_SLIDE");
  return s ? s : "data/cmu-1-small-region.svs";
}

static GstHarness *
src_harness (const gchar * props)
{
  gchar *launch = g_strdup_printf ("slidesrc location=%s %s", sample (),
      props);
  GstHarness *h = gst_harness_new_parse (launch);

  g_free (launch);
  gst_harness_play (h);
  return h;
}

/* Pulls buffers until EOS (or @max); events are dropped. */
static GPtrArray *
pull_to_eos (GstHarness * h, guint max)
{
  GPtrArray *bufs = g_ptr_array_new_with_free_func ((GDestroyNotify)
      gst_buffer_unref);

  while (bufs->len < max) {
    GstBuffer *b = gst_harness_try_pull (h);
    GstEvent *e;
    if (b) {
      g_ptr_array_add (bufs, b);
      continue;
    }
    e = gst_harness_pull_event (h);
    if (!e)
      break;
    if (GST_EVENT_TYPE (e) == GST_EVENT_EOS) {
      gst_event_unref (e);
      while ((b = gst_harness_try_pull (h)))
        g_ptr_array_add (bufs, b);
      break;
    }
    gst_event_unref (e);
  }
  return bufs;
}

/* The region x, y, w x h read as one tile: RGB, stride w * 3. */
static guint8 *
read_region (gint x, gint y, gint w, gint h)
{
  gchar *props = g_strdup_printf ("region=%d,%d,%d,%d tile-width=%d "
      "tile-height=%d", x, y, w, h, w, h);
  GstHarness *hr = src_harness (props);
  GstBuffer *b = gst_harness_pull (hr);
  GstVideoInfo info;
  GstVideoFrame f;
  guint8 *rgb = g_malloc ((gsize) w * h * 3);

  gst_video_info_set_format (&info, GST_VIDEO_FORMAT_RGB, w, h);
  gst_video_frame_map (&f, &info, b, GST_MAP_READ);
  for (gint j = 0; j < h; j++)
    memcpy (rgb + (gsize) j * w * 3, (guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&f,
            0) + (gsize) j * GST_VIDEO_FRAME_PLANE_STRIDE (&f, 0),
        (gsize) w * 3);
  gst_video_frame_unmap (&f);
  gst_buffer_unref (b);
  gst_harness_teardown (hr);
  g_free (props);
  return rgb;
}

/* NULL when tile @b (tw x th) holds region pixels of @ref (rx, ry, rw x rh)
 * in its valid area and background (white) elsewhere, else why not. */
static gchar *
check_tile (GstBuffer * b, gint tw, gint th, const guint8 * ref, gint rx,
    gint ry, gint rw, gint rh)
{
  GstWsiTileMeta *m = gst_buffer_get_wsi_tile_meta (b);
  GstVideoInfo info;
  GstVideoFrame f;
  gchar *why = NULL;

  if (!m)
    return g_strdup ("tile without tile meta");
  if (m->level_width != rw || m->level_height != rh)
    return g_strdup_printf ("meta level size %" G_GINT64_FORMAT "x%"
        G_GINT64_FORMAT ", region is %dx%d", m->level_width, m->level_height,
        rw, rh);
  gst_video_info_set_format (&info, GST_VIDEO_FORMAT_RGB, tw, th);
  if (gst_buffer_get_size (b) != GST_VIDEO_INFO_SIZE (&info))
    return g_strdup_printf ("%dx%d tile of %" G_GSIZE_FORMAT " bytes, caps "
        "say %" G_GSIZE_FORMAT, tw, th, gst_buffer_get_size (b),
        GST_VIDEO_INFO_SIZE (&info));
  gst_video_frame_map (&f, &info, b, GST_MAP_READ);
  for (gint j = 0; j < th && !why; j++) {
    const guint8 *row = (const guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&f, 0) +
        (gsize) j * GST_VIDEO_FRAME_PLANE_STRIDE (&f, 0);
    for (gint i = 0; i < tw && !why; i++) {
      gint64 x = m->x - rx + i, y = m->y - ry + j;
      guint8 white[3] = { 255, 255, 255 };
      const guint8 *want = (i < m->valid_width && j < m->valid_height) ?
          ref + ((gsize) y * rw + x) * 3 : white;
      if (memcmp (want, row + i * 3, 3))
        why = g_strdup_printf ("%dx%d tile (%d,%d): pixel (%d,%d) differs",
            tw, th, m->col, m->row, i, j);
    }
  }
  gst_video_frame_unmap (&f);
  return why;
}

/* Tiles of @props from @first on, as a harness streams them. */
static GPtrArray *
tiles_from (const gchar * props, guint first, guint n)
{
  GstHarness *h = src_harness (props);
  GPtrArray *all = pull_to_eos (h, first + n);

  g_ptr_array_remove_range (all, 0, MIN (first, all->len));
  gst_harness_teardown (h);
  return all;
}

static void
situation_flushing_seek (void)
{
  /* 10 tiles a second: a seek to 2.05 s goes to tile 21 (the first at or
   * after it), across the end of a file's first pass (loop=2) */
  const gchar *props = "region=0,0,320,240 tile-width=64 tile-height=64 "
      "tiles-per-second=10 loop=2";
  GstHarness *h = src_harness (props);
  GPtrArray *ref = tiles_from (props, 21, 4), *got;
  gchar *why = NULL, *desc, *err;
  GstEvent *seek;

  for (gint i = 0; i < 5; i++)
    gst_buffer_unref (gst_harness_pull (h));
  seek = gst_event_new_seek (1.0, GST_FORMAT_TIME, GST_SEEK_FLAG_FLUSH,
      GST_SEEK_TYPE_SET, 2050 * GST_MSECOND, GST_SEEK_TYPE_NONE, -1);
  if (!gst_harness_push_upstream_event (h, seek))
    why = g_strdup ("seek refused");
  got = g_ptr_array_new_with_free_func ((GDestroyNotify) gst_buffer_unref);
  while (!why && got->len < 4) {
    GstBuffer *b = gst_harness_pull (h);
    GstWsiTileMeta *m = b ? gst_buffer_get_wsi_tile_meta (b) : NULL;
    if (!b) {
      why = g_strdup ("no tile after the seek");
      break;
    }
    /* tiles pushed before the flush may still be queued: skip them */
    if (m && m->frame < 21 && got->len == 0) {
      gst_buffer_unref (b);
      continue;
    }
    g_ptr_array_add (got, b);
  }
  for (guint i = 0; !why && i < 4; i++) {
    GstBuffer *a = got->pdata[i], *r = ref->pdata[i];
    GstWsiTileMeta *ma = gst_buffer_get_wsi_tile_meta (a);
    GstMapInfo mr;
    if (ma->frame != 21 + i || GST_BUFFER_PTS (a) != GST_BUFFER_PTS (r)) {
      why = g_strdup_printf ("after the seek: frame %" G_GUINT64_FORMAT
          " pts %" GST_TIME_FORMAT ", expected frame %u pts %"
          GST_TIME_FORMAT, ma->frame, GST_TIME_ARGS (GST_BUFFER_PTS (a)),
          21 + i, GST_TIME_ARGS (GST_BUFFER_PTS (r)));
      break;
    }
    gst_buffer_map (r, &mr, GST_MAP_READ);
    if (gst_buffer_memcmp (a, 0, mr.data, mr.size) != 0 ||
        ma->epoch != gst_buffer_get_wsi_tile_meta (r)->epoch)
      why = g_strdup_printf ("tile %u after the seek differs", 21 + i);
    gst_buffer_unmap (r, &mr);
  }
  g_ptr_array_unref (got);
  g_ptr_array_unref (ref);
  gst_harness_teardown (h);

  /* and in a pipeline, mid-stream */
  desc = g_strdup_printf ("slidesrc location=%s tile-width=256 "
      "tile-height=256 tiles-per-second=300 ! patchify patch-size=128 ! "
      "fakesink sync=true", sample ());
  err = conf_run_pipeline (desc, 0.1, 60);
  if (!why && err)
    why = g_strdup_printf ("pipeline: %s", err);
  conf_result ("flushing-seek", why == NULL, "%s", why ? why :
      "seek to 2.05 s at 10 tiles/s: tiles 21.. exact (across an epoch); "
      "slidesrc ! patchify ! fakesink seeked at 0.1 s reaches EOS");
  g_free (why);
  g_free (err);
  g_free (desc);
}

static void
situation_flush (void)
{
  conf_result ("flush", TRUE, "n/a: a source; flushes reach it only as a "
      "flushing seek (flushing-seek)");
}

static void
situation_eos_no_data (void)
{
  gchar *list = g_build_filename (g_get_tmp_dir (), "conf-slidesrc-empty.txt",
      NULL);
  gchar *props = g_strdup_printf ("location=@%s", list);
  GstHarness *h;
  GPtrArray *a, *b;

  g_file_set_contents (list, "# no files\n", -1, NULL);
  h = src_harness ("region=5,5,0,7");
  a = pull_to_eos (h, 10);
  gst_harness_teardown (h);
  {
    gchar *launch = g_strdup_printf ("slidesrc %s", props);
    h = gst_harness_new_parse (launch);
    g_free (launch);
  }
  gst_harness_play (h);
  b = pull_to_eos (h, 10);
  gst_harness_teardown (h);
  conf_result ("eos-no-data", a->len == 0 && b->len == 0, "zero-area region: "
      "%u buffers, empty list: %u buffers before EOS", a->len, b->len);
  g_ptr_array_unref (a);
  g_ptr_array_unref (b);
  g_unlink (list);
  g_free (list);
  g_free (props);
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
  GstBuffer *b = gst_harness_pull (p->h);
  GstVideoInfo info;

  gst_video_info_set_format (&info, GST_VIDEO_FORMAT_RGB, 64, 48);
  if (!b) {
    if (!p->why)
      p->why = g_strdup ("stream ended early");
    return;
  }
  if (!p->why && gst_buffer_get_size (b) != GST_VIDEO_INFO_SIZE (&info))
    p->why = g_strdup_printf ("buffer of %" G_GSIZE_FORMAT " bytes, caps say "
        "64x48", gst_buffer_get_size (b));
  gst_buffer_unref (b);
}

static void
situation_props_playing (void)
{
  /* 100 tiles of 64x48 */
  GstHarness *h = src_harness ("tile-width=64 tile-height=48 "
      "region=0,0,640,480");
  GstElement *e = gst_harness_find_element (h, "slidesrc");
  const gchar *strings[] = { "location=/nonexistent.svs",
    "region=0,0,1,1", NULL
  };
  /* GstBaseSrc's own properties, not slidesrc's to flag */
  const gchar *skip[] = { "blocksize", "num-buffers", "typefind",
    "do-timestamp", NULL
  };
  Pump p = { h, NULL };
  gint bad, v;

  pump (&p);
  bad = conf_props_while_playing (e, skip, strings, pump, &p);
  /* element-specific: a larger tile-width used to overflow the pool's
   * buffers (ASan), the value must not apply */
  g_object_set (e, "tile-width", 1024, "tile-height", 16384, NULL);
  pump (&p);
  pump (&p);
  g_object_get (e, "tile-width", &v, NULL);
  if (v != 64 || p.why)
    bad++, conf_result ("props-playing", FALSE, "tile-width %d: %s", v,
        p.why ? p.why : "applied while PLAYING");
  if (!bad)
    conf_result ("props-playing", TRUE, "tile-width=1024 refused while "
        "PLAYING, buffers keep the caps' size");
  g_free (p.why);
  gst_object_unref (e);
  gst_harness_teardown (h);
}

static void
situation_renegotiation (void)
{
  /* a RECONFIGURE from downstream mid-stream: caps are renegotiated (the
   * same: tile size is READY-only), the pool remade, tiles stay exact */
  const gint rx = 100, ry = 200, rw = 300, rh = 150, tw = 70, th = 50;
  gchar *props = g_strdup_printf ("region=%d,%d,%d,%d tile-width=%d "
      "tile-height=%d", rx, ry, rw, rh, tw, th);
  GstHarness *h = src_harness (props);
  guint8 *ref = read_region (rx, ry, rw, rh);
  GPtrArray *bufs = g_ptr_array_new_with_free_func ((GDestroyNotify)
      gst_buffer_unref);
  gchar *why = NULL;

  for (gint i = 0; i < 4; i++)
    g_ptr_array_add (bufs, gst_harness_pull (h));
  gst_harness_push_upstream_event (h, gst_event_new_reconfigure ());
  {
    GPtrArray *rest = pull_to_eos (h, 100);
    for (guint i = 0; i < rest->len; i++)
      g_ptr_array_add (bufs, gst_buffer_ref (rest->pdata[i]));
    g_ptr_array_unref (rest);
  }
  if (bufs->len != 5 * 3)
    why = g_strdup_printf ("%u tiles, expected 15", bufs->len);
  for (guint i = 0; i < bufs->len && !why; i++)
    why = check_tile (bufs->pdata[i], tw, th, ref, rx, ry, rw, rh);
  conf_result ("renegotiation", why == NULL, "%s", why ? why :
      "RECONFIGURE after 4 tiles: all 15 tiles exact");
  g_free (why);
  g_free (ref);
  g_ptr_array_unref (bufs);
  gst_harness_teardown (h);
  g_free (props);
}

static void
situation_odd_sizes (void)
{
  const gint sizes[] = { 1, 3, 127, 250, 8191 };
  const gint rx = 900, ry = 1300;
  gchar *why = NULL;

  for (guint k = 0; k < G_N_ELEMENTS (sizes) && !why; k++) {
    gint s = sizes[k];
    gint rw = s == 1 ? 4 : s == 3 ? 10 : 300;
    gint rh = s == 1 ? 3 : s == 3 ? 7 : 200;
    gint want = ((rw + s - 1) / s) * ((rh + s - 1) / s);
    gchar *props = g_strdup_printf ("region=%d,%d,%d,%d tile-width=%d "
        "tile-height=%d", rx, ry, rw, rh, s, s);
    guint8 *ref = read_region (rx, ry, rw, rh);
    GstHarness *h = src_harness (props);
    GPtrArray *bufs = pull_to_eos (h, 1000);

    if ((gint) bufs->len != want)
      why = g_strdup_printf ("tile %d: %u tiles, expected %d", s, bufs->len,
          want);
    for (guint i = 0; i < bufs->len && !why; i++)
      why = check_tile (bufs->pdata[i], s, s, ref, rx, ry, rw, rh);
    g_ptr_array_unref (bufs);
    gst_harness_teardown (h);
    g_free (ref);
    g_free (props);
  }
  conf_result ("odd-sizes", why == NULL, "%s", why ? why :
      "tile sizes 1 3 127 250 8191: exact pixels, 4-byte aligned rows, "
      "white padding");
  g_free (why);
}

static void
situation_no_tile_meta (void)
{
  conf_result ("no-tile-meta", TRUE, "n/a: a source; it attaches the meta "
      "to every buffer (checked by odd-sizes and renegotiation)");
}

static void
situation_zero_area (void)
{
  GstHarness *h = src_harness ("region=0,0,0,0");
  GPtrArray *a = pull_to_eos (h, 10), *b;
  guint8 *ref;
  gchar *why = NULL;

  gst_harness_teardown (h);
  h = src_harness ("region=2219,2966,1,1 tile-width=5 tile-height=5");
  b = pull_to_eos (h, 10);
  gst_harness_teardown (h);
  ref = read_region (2219, 2966, 1, 1);
  if (a->len != 0 || b->len != 1)
    why = g_strdup_printf ("0x0 region: %u tiles, 1x1 region: %u tiles",
        a->len, b->len);
  else
    why = check_tile (b->pdata[0], 5, 5, ref, 2219, 2966, 1, 1);
  conf_result ("zero-area", why == NULL, "%s", why ? why :
      "0x0 region: EOS without data; 1x1 region at the corner: one padded "
      "tile");
  g_free (why);
  g_free (ref);
  g_ptr_array_unref (a);
  g_ptr_array_unref (b);
}

int
main (int argc, char **argv)
{
  conf_init (&argc, &argv, "slidesrc");
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
