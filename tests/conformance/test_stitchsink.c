/* Conformance: stitchsink (docs/conformance.md). Patches are cut here on
 * patchify's grid (docs/tile-meta.md) with GstVideoInfo strides; every
 * written PNG is read back and compared with the pixels that went in. */
#include "conformance.h"

#include <glib/gstdio.h>

#include "wsipng.h"

static gchar *tmp_dir;

typedef struct
{
  GstVideoFormat fmt;
  gint P, overlap;              /* patch side, overlap */
  gint W, H;                    /* region, level pixels (downsample 1) */
  const gchar *slide;
  guint bias;                   /* added to every value */
  gboolean instances;           /* GRAY16 object ids: 5 x 5 blocks */
} Grid;

/* Instance grids: block (bx, by) of 5 x 5 pixels is one object; patches
 * carry id 1 + bx + 64 by, the output ids are in raster order of first
 * pixel: 1 + bx + by * blocks per row. */
static guint
instance_truth (const Grid * g, gint64 X, gint64 Y, gboolean output)
{
  return 1 + (guint) (X / 5) + (guint) (Y / 5) * (output ?
      (guint) ((g->W + 4) / 5) : 64);
}

/* Value of channel @ch at region pixel (X, Y). */
static guint
truth (const Grid * g, gint64 X, gint64 Y, gint ch)
{
  if (g->instances)
    return instance_truth (g, X, Y, FALSE);
  if (g->fmt == GST_VIDEO_FORMAT_GRAY16_LE)
    return (guint) ((X * 31 + Y * 17 + g->bias) & 0xffff);
  return (guint) ((X * 7 + Y * 13 + ch * 50 + g->bias) & 0xff);
}

static gint
stride_of (const Grid * g)
{
  return g->P - g->overlap;
}

static gint
cols_of (const Grid * g)
{
  return (g->W + stride_of (g) - 1) / stride_of (g);
}

static gint
rows_of (const Grid * g)
{
  return (g->H + stride_of (g) - 1) / stride_of (g);
}

static gchar *
caps_of (const Grid * g)
{
  return g_strdup_printf ("video/x-raw,format=%s,width=%d,height=%d,"
      "framerate=0/1", gst_video_format_to_string (g->fmt), g->P, g->P);
}

/* Patch (c, r), written through GstVideoFrame (caps strides). */
static GstBuffer *
grid_patch (const Grid * g, gint c, gint r, gboolean with_meta)
{
  GstVideoInfo info;
  GstVideoFrame frame;
  GstBuffer *buf;
  gint64 px = (gint64) c * stride_of (g) - g->overlap / 2;
  gint64 py = (gint64) r * stride_of (g) - g->overlap / 2;
  gint bpp = g->fmt == GST_VIDEO_FORMAT_RGB ? 3 :
      g->fmt == GST_VIDEO_FORMAT_GRAY16_LE ? 2 : 1;

  gst_video_info_set_format (&info, g->fmt, g->P, g->P);
  buf = gst_buffer_new_allocate (NULL, GST_VIDEO_INFO_SIZE (&info), NULL);
  gst_video_frame_map (&frame, &info, buf, GST_MAP_WRITE);
  for (gint j = 0; j < g->P; j++) {
    guint8 *row = (guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&frame, 0) +
        (gsize) j * GST_VIDEO_FRAME_PLANE_STRIDE (&frame, 0);
    for (gint i = 0; i < g->P; i++) {
      gint64 X = px + i, Y = py + j;
      gboolean valid = X >= 0 && X < g->W && Y >= 0 && Y < g->H;
      if (bpp == 2) {
        guint v = valid ? truth (g, X, Y, 0) : 0xdead;
        row[2 * i] = v & 0xff;
        row[2 * i + 1] = v >> 8;
      } else {
        for (gint ch = 0; ch < bpp; ch++)
          row[i * bpp + ch] = valid ? truth (g, X, Y, ch) : 0xee;
      }
    }
  }
  gst_video_frame_unmap (&frame);
  if (with_meta) {
    GstWsiTileMeta *m = gst_wsi_tile_meta_add (buf);
    gst_wsi_tile_meta_set_slide (m, g->slide ? g->slide : "conformance");
    m->level = 0;
    m->downsample = 1.0;
    m->x = px;
    m->y = py;
    m->width = m->height = g->P;
    m->pad_left = (gint) MAX (0, -px);
    m->pad_top = (gint) MAX (0, -py);
    m->valid_width = (gint) MAX (0, MIN (g->W, px + g->P) - MAX (0, px));
    m->valid_height = (gint) MAX (0, MIN (g->H, py + g->P) - MAX (0, py));
    m->col = c;
    m->row = r;
    m->grid_cols = cols_of (g);
    m->grid_rows = rows_of (g);
    m->overlap = g->overlap;
    m->region_width = g->W;
    m->region_height = g->H;
    m->slide_width = g->W;
    m->slide_height = g->H;
    m->frame = (guint64) r * cols_of (g) + c;
  }
  return buf;
}

/* NULL when the PNG at @path is the region of @g, else why not. */
static gchar *
check_png (const Grid * g, const gchar * path)
{
  GError *err = NULL;
  gchar *why = NULL;

  if (g->fmt == GST_VIDEO_FORMAT_RGB) {
    gint w, h;
    guint8 *rgb = wsi_png_read_rgb8 (path, &w, &h, G_MAXINT32, 0, &err);
    if (!rgb) {
      why = g_strdup_printf ("unreadable: %s", err->message);
      g_error_free (err);
      return why;
    }
    if (w != g->W || h != g->H)
      why = g_strdup_printf ("%dx%d, expected %dx%d", w, h, g->W, g->H);
    for (gint64 Y = 0; !why && Y < h; Y++)
      for (gint64 X = 0; !why && X < w; X++)
        for (gint ch = 0; ch < 3 && !why; ch++)
          if (rgb[(Y * w + X) * 3 + ch] != truth (g, X, Y, ch))
            why = g_strdup_printf ("pixel (%" G_GINT64_FORMAT ", %"
                G_GINT64_FORMAT ") differs", X, Y);
    g_free (rgb);
  } else {
    WsiLabelImage img;
    if (!wsi_png_read_labels (path, &img, G_MAXINT32, &err)) {
      why = g_strdup_printf ("unreadable: %s", err->message);
      g_error_free (err);
      return why;
    }
    if (img.width != g->W || img.height != g->H)
      why = g_strdup_printf ("%dx%d, expected %dx%d", img.width, img.height,
          g->W, g->H);
    for (gint64 Y = 0; !why && Y < img.height; Y++)
      for (gint64 X = 0; !why && X < img.width; X++) {
        guint v = img.bytes_per_pixel == 2 ?
            ((guint16 *) img.data)[Y * img.width + X] :
            ((guint8 *) img.data)[Y * img.width + X];
        guint want = g->instances ? instance_truth (g, X, Y, TRUE) :
            truth (g, X, Y, 0);
        if (v != want)
          why = g_strdup_printf ("pixel (%" G_GINT64_FORMAT ", %"
              G_GINT64_FORMAT ") is %u, expected %u", X, Y, v, want);
      }
    wsi_label_image_clear (&img);
  }
  return why;
}

/* Temp files ("*.partial-*", "*.spool-*") left in tmp_dir. */
static gint
leftovers (void)
{
  GDir *d = g_dir_open (tmp_dir, 0, NULL);
  const gchar *name;
  gint n = 0;

  while (d && (name = g_dir_read_name (d)))
    n += strstr (name, ".partial-") || strstr (name, ".spool-");
  if (d)
    g_dir_close (d);
  return n;
}

/* A harness around a stitchsink configured before it starts (@first_prop:
 * more properties, NULL-ended), with a private bus. */
static GstHarness *
stitch_harness_full (GstBus ** bus, const gchar * location,
    const gchar * first_prop, ...)
{
  GstElement *e = gst_element_factory_make ("stitchsink", NULL);
  GstHarness *h;
  va_list ap;

  g_object_set (e, "location", location, "compression-level", 1, NULL);
  va_start (ap, first_prop);
  if (first_prop)
    g_object_set_valist (G_OBJECT (e), first_prop, ap);
  va_end (ap);
  *bus = gst_bus_new ();
  gst_element_set_bus (e, *bus);
  h = gst_harness_new_with_element (e, "sink", NULL);
  gst_object_unref (e);
  return h;
}

static GstHarness *
stitch_harness (GstBus ** bus, const gchar * location)
{
  return stitch_harness_full (bus, location, NULL);
}

static void
harness_done (GstHarness * h, GstBus * bus)
{
  gst_harness_teardown (h);
  gst_object_unref (bus);
}

/* Pushes the grid rows [r0, r1); FALSE on a flow error. */
static gboolean
push_rows (GstHarness * h, const Grid * g, gint r0, gint r1)
{
  for (gint r = r0; r < r1; r++)
    for (gint c = 0; c < cols_of (g); c++)
      if (gst_harness_push (h, grid_patch (g, c, r, TRUE)) != GST_FLOW_OK)
        return FALSE;
  return TRUE;
}

/* Whole grid through a harness; NULL when the PNG is right. */
static gchar *
stitch_grid (const Grid * g, const gchar * name)
{
  gchar *path = g_build_filename (tmp_dir, name, NULL);
  gchar *caps = caps_of (g), *why, *err;
  GstBus *bus;
  GstHarness *h = stitch_harness (&bus, path);

  gst_harness_set_src_caps_str (h, caps);
  push_rows (h, g, 0, rows_of (g));
  gst_harness_push_event (h, gst_event_new_eos ());
  err = conf_bus_error (bus, NULL, NULL);
  harness_done (h, bus);
  why = err ? g_strdup_printf ("error: %s", err) : check_png (g, path);
  g_free (err);
  g_unlink (path);
  g_free (caps);
  g_free (path);
  return why;
}

/* ------------------------------------------------------------ situations */

static void
check_flushing_seek (void)
{
  const gchar *slide = g_getenv ("WSISEG_SAMPLE_SLIDE");
  gchar *ref = g_build_filename (tmp_dir, "seek-ref.png", NULL);
  gchar *out = g_build_filename (tmp_dir, "seek.png", NULL);
  gchar *desc, *err_ref, *err, *why = NULL;
  gint w1 = 0, h1 = 0, w2 = 0, h2 = 0;
  guint8 *a = NULL, *b = NULL;

  if (!slide || !g_file_test (slide, G_FILE_TEST_EXISTS)) {
    conf_result ("flushing-seek", FALSE, "sample slide missing "
        "(WSISEG_SAMPLE_SLIDE)");
    return;
  }
  /* reference without a seek, then the same pipeline slowed down by
   * identity and seeked mid-stream: the flush discards the image in
   * progress, the restart writes it whole */
  desc = g_strdup_printf ("slidesrc location=%s region=0,0,1024,768 ! "
      "patchify patch-size=128 overlap=16 ! stitchsink compression-level=1 "
      "location=%s", slide, ref);
  err_ref = conf_run_pipeline (desc, -1, 60);
  g_free (desc);
  desc = g_strdup_printf ("slidesrc location=%s region=0,0,1024,768 ! "
      "patchify patch-size=128 overlap=16 ! identity sleep-time=15000 ! "
      "stitchsink compression-level=1 location=%s", slide, out);
  err = conf_run_pipeline (desc, 0.3, 120);
  g_free (desc);
  if (!err_ref && !err) {
    a = wsi_png_read_rgb8 (ref, &w1, &h1, G_MAXINT32, 0, NULL);
    b = wsi_png_read_rgb8 (out, &w2, &h2, G_MAXINT32, 0, NULL);
    if (!a || !b || w1 != 1024 || h1 != 768 || w2 != w1 || h2 != h1)
      why = g_strdup_printf ("outputs %dx%d and %dx%d, expected 1024x768",
          w1, h1, w2, h2);
    else if (memcmp (a, b, (gsize) w1 * h1 * 3))
      why = g_strdup ("the image written after the seek differs from the "
          "reference");
    else if (leftovers ())
      why = g_strdup ("temp files left");
  }
  conf_result ("flushing-seek", !err_ref && !err && !why,
      "slidesrc ! patchify ! identity ! stitchsink, seek at 0.3 s: %s",
      err_ref ? err_ref : err ? err : why ? why :
      "EOS, PNG equal to the run without a seek, no temp file");
  g_free (a);
  g_free (b);
  g_free (err_ref);
  g_free (err);
  g_free (why);
  g_unlink (ref);
  g_unlink (out);
  g_free (ref);
  g_free (out);
}

static void
check_flush (void)
{
  Grid g = { GST_VIDEO_FORMAT_GRAY8, 32, 8, 100, 90, "slide", 100 };
  gchar *path = g_build_filename (tmp_dir, "flush.png", NULL);
  gchar *caps = caps_of (&g), *err, *why = NULL;
  GstBus *bus;
  GstHarness *h = stitch_harness (&bus, path);
  gint temps_mid;
  gboolean file_mid;

  gst_harness_set_src_caps_str (h, caps);
  /* half the grid with other values (same slide and region) */
  push_rows (h, &g, 0, 2);
  conf_push_flush (h);
  temps_mid = leftovers ();
  file_mid = g_file_test (path, G_FILE_TEST_EXISTS);
  g.bias = 0;
  push_rows (h, &g, 0, rows_of (&g));
  gst_harness_push_event (h, gst_event_new_eos ());
  err = conf_bus_error (bus, NULL, NULL);
  harness_done (h, bus);
  if (!err)
    why = check_png (&g, path);
  conf_result ("flush", !err && !why && temps_mid == 0 && !file_mid,
      "2 of 4 grid rows, FLUSH_START/STOP, whole grid, EOS: %s%s%s",
      err ? err : why ? why : "PNG equals the grid pushed after the flush",
      temps_mid ? "; temp file kept after the flush" : "",
      file_mid ? "; a file was written at the flush" : "");
  g_free (err);
  g_free (why);
  g_free (caps);
  g_unlink (path);
  g_free (path);
}

static void
check_eos_no_data (void)
{
  gchar *path = g_build_filename (tmp_dir, "empty.png", NULL);
  gchar *err, *err2, *contents = NULL;
  GQuark domain = 0;
  gint code = 0;
  GstBus *bus;
  GstHarness *h;
  gboolean old_kept, ok;

  /* with caps, then without any caps; an older file must survive */
  g_file_set_contents (path, "older run", -1, NULL);
  h = stitch_harness (&bus, path);
  gst_harness_set_src_caps_str (h, "video/x-raw,format=GRAY8,width=16,"
      "height=16,framerate=0/1");
  gst_harness_push_event (h, gst_event_new_eos ());
  err = conf_bus_error (bus, &domain, &code);
  harness_done (h, bus);
  h = stitch_harness (&bus, path);
  gst_harness_push_event (h, gst_event_new_eos ());
  err2 = conf_bus_error (bus, NULL, NULL);
  harness_done (h, bus);
  old_kept = g_file_get_contents (path, &contents, NULL, NULL)
      && !g_strcmp0 (contents, "older run");
  ok = err && err2 && domain == GST_STREAM_ERROR
      && code == GST_STREAM_ERROR_FAILED && old_kept && leftovers () == 0;
  conf_result ("eos-no-data", ok, "EOS before any patch: %s (%s); no file "
      "written, the older file %s, %d temp files", err ? err : "no error",
      err2 ? "also without caps" : "nothing without caps",
      old_kept ? "untouched" : "CHANGED", leftovers ());
  g_free (contents);
  g_free (err);
  g_free (err2);
  g_unlink (path);
  g_free (path);
}

typedef struct
{
  GstHarness *h;
  const Grid *g;
  gint next;                    /* next patch, raster index */
} Pump;

static void
pump_patch (gpointer data)
{
  Pump *p = data;
  gint c = p->next % cols_of (p->g), r = p->next / cols_of (p->g);

  if (r < rows_of (p->g)) {
    gst_harness_push (p->h, grid_patch (p->g, c, r, TRUE));
    p->next++;
  }
}

static void
check_props_playing (void)
{
  Grid g = { GST_VIDEO_FORMAT_GRAY8, 8, 0, 48, 2048, NULL };
  gchar *path = g_build_filename (tmp_dir, "props.png", NULL);
  gchar *other = g_build_filename (tmp_dir, "props-other.png", NULL);
  gchar *loc = g_strdup_printf ("location=%s", other);
  gchar *ov = g_strdup_printf ("overlay-location=%s", other);
  gchar *pr = g_strdup_printf ("probability-location=%s", other);
  gchar *gj = g_strdup_printf ("geojson-location=%s", other);
  const gchar *strings[] = { loc, ov, pr, gj, "class-names=a,b",
    "class-colors=zz", NULL
  };
  gchar *caps = caps_of (&g), *err, *why = NULL, *err2, *err3;
  GstBus *bus;
  GstHarness *h = stitch_harness (&bus, path);
  Pump p = { h, &g, 0 };
  GQuark domain3 = 0;
  gint code3 = 0;
  gint bad, total = cols_of (&g) * rows_of (&g);
  GstElement *e;
  GQuark domain = 0;
  gint code = 0;

  gst_harness_set_src_caps_str (h, caps);
  pump_patch (&p);
  /* GstBaseSink's own properties are GStreamer's business */
  {
    guint n;
    GParamSpec **specs = g_object_class_list_properties (G_OBJECT_GET_CLASS
        (h->element), &n);
    GPtrArray *skip = g_ptr_array_new ();
    for (guint i = 0; i < n; i++)
      if (specs[i]->owner_type == GST_TYPE_BASE_SINK)
        g_ptr_array_add (skip, (gpointer) specs[i]->name);
    g_ptr_array_add (skip, NULL);
    bad = conf_props_while_playing (h->element,
        (const gchar * const *) skip->pdata, strings, pump_patch, &p);
    g_ptr_array_free (skip, TRUE);
    g_free (specs);
  }
  while (p.next < total)
    pump_patch (&p);
  gst_harness_push_event (h, gst_event_new_eos ());
  err = conf_bus_error (bus, NULL, NULL);
  harness_done (h, bus);
  if (!err)
    why = check_png (&g, path);
  conf_result ("props-playing", !err && !why
      && !g_file_test (other, G_FILE_TEST_EXISTS),
      "after %d patches pushed between the property changes: %s", p.next,
      err ? err : why ? why : "PNG whole and right at the original location");
  (void) bad;

  /* invalid values: refused with RESOURCE SETTINGS, at start or at caps */
  e = gst_element_factory_make ("stitchsink", NULL);
  bus = gst_bus_new ();
  gst_element_set_bus (e, bus);
  g_object_set (e, "location", path, "class-colors", "ff0000,zz", NULL);
  gst_element_set_state (e, GST_STATE_PAUSED);
  err = conf_bus_error (bus, &domain, &code);
  gst_element_set_state (e, GST_STATE_NULL);
  gst_element_set_bus (e, NULL);
  gst_object_unref (bus);
  gst_object_unref (e);
  h = stitch_harness_full (&bus, path, "geojson-location", other,
      "geojson-boundary-class", 300, NULL);
  gst_harness_set_src_caps_str (h, caps);
  gst_harness_push (h, grid_patch (&g, 0, 0, TRUE));
  err2 = conf_bus_error (bus, NULL, NULL);
  harness_done (h, bus);
  h = stitch_harness_full (&bus, path, "background", 300, NULL);
  gst_harness_set_src_caps_str (h, caps);
  gst_harness_push (h, grid_patch (&g, 0, 0, TRUE));
  err3 = conf_bus_error (bus, &domain3, &code3);
  harness_done (h, bus);
  conf_result ("props-playing", err && domain == GST_RESOURCE_ERROR
      && code == GST_RESOURCE_ERROR_SETTINGS && err2 && err3
      && domain3 == GST_RESOURCE_ERROR
      && code3 == GST_RESOURCE_ERROR_SETTINGS, "invalid values: "
      "class-colors=zz: %s; geojson-boundary-class=300 with GRAY8: %s; "
      "background=300 with GRAY8: %s", err ? err : "accepted",
      err2 ? err2 : "accepted", err3 ? err3 : "accepted");
  g_free (err3);
  g_free (err);
  g_free (err2);
  g_free (why);
  g_free (caps);
  g_free (loc);
  g_free (ov);
  g_free (pr);
  g_free (gj);
  g_unlink (path);
  g_unlink (other);
  g_free (path);
  g_free (other);
}

static void
check_renegotiation (void)
{
  /* patch size 32 -> 16 mid-image (same region, grid of the new size) */
  Grid a = { GST_VIDEO_FORMAT_GRAY8, 32, 0, 96, 96, NULL };
  Grid b = { GST_VIDEO_FORMAT_GRAY8, 16, 0, 96, 96, NULL };
  Grid rgb = { GST_VIDEO_FORMAT_RGB, 32, 0, 96, 96, "rgb-slide" };
  Grid gray = { GST_VIDEO_FORMAT_GRAY8, 32, 0, 96, 96, "gray-slide" };
  gchar *path = g_build_filename (tmp_dir, "reneg.png", NULL);
  gchar *pattern = g_build_filename (tmp_dir, "reneg-%d.png", NULL);
  gchar *p0 = g_build_filename (tmp_dir, "reneg-0.png", NULL);
  gchar *p1 = g_build_filename (tmp_dir, "reneg-1.png", NULL);
  gchar *caps, *err, *why = NULL, *why0 = NULL, *why1 = NULL, *err2, *err3;
  GQuark domain = 0;
  gint code = 0;
  GstBus *bus;
  GstHarness *h;

  h = stitch_harness (&bus, path);
  caps = caps_of (&a);
  gst_harness_set_src_caps_str (h, caps);
  g_free (caps);
  push_rows (h, &a, 0, 2);      /* rows 0..63 */
  caps = caps_of (&b);
  gst_harness_set_src_caps_str (h, caps);
  g_free (caps);
  push_rows (h, &b, 4, 6);      /* rows 64..95 */
  gst_harness_push_event (h, gst_event_new_eos ());
  err = conf_bus_error (bus, NULL, NULL);
  harness_done (h, bus);
  if (!err)
    why = check_png (&a, path);

  /* RGB -> GRAY8 at a new slide (location pattern): two right images */
  h = stitch_harness (&bus, pattern);
  caps = caps_of (&rgb);
  gst_harness_set_src_caps_str (h, caps);
  g_free (caps);
  push_rows (h, &rgb, 0, rows_of (&rgb));
  caps = caps_of (&gray);
  gst_harness_set_src_caps_str (h, caps);
  g_free (caps);
  push_rows (h, &gray, 0, rows_of (&gray));
  gst_harness_push_event (h, gst_event_new_eos ());
  err2 = conf_bus_error (bus, NULL, NULL);
  harness_done (h, bus);
  if (!err2) {
    why0 = check_png (&rgb, p0);
    why1 = check_png (&gray, p1);
  }

  /* RGB -> GRAY8 within one image: a clear STREAM FORMAT error, no file */
  g_unlink (path);
  h = stitch_harness (&bus, path);
  rgb.slide = gray.slide = "same";
  caps = caps_of (&rgb);
  gst_harness_set_src_caps_str (h, caps);
  g_free (caps);
  push_rows (h, &rgb, 0, 1);
  caps = caps_of (&gray);
  gst_harness_set_src_caps_str (h, caps);
  g_free (caps);
  push_rows (h, &gray, 1, 2);
  gst_harness_push_event (h, gst_event_new_eos ());
  err3 = conf_bus_error (bus, &domain, &code);
  harness_done (h, bus);

  conf_result ("renegotiation", !err && !why && !err2 && !why0 && !why1
      && err3 && domain == GST_STREAM_ERROR && code == GST_STREAM_ERROR_FORMAT
      && !g_file_test (path, G_FILE_TEST_EXISTS) && leftovers () == 0,
      "patch 32 -> 16 mid-image: %s; RGB -> GRAY8 at a new slide: %s; "
      "RGB -> GRAY8 mid-image: %s (%s %d)%s%s", err ? err : why ? why :
      "PNG right", err2 ? err2 : why0 ? why0 : why1 ? why1 :
      "both PNGs right", err3 ? err3 : "no error", g_quark_to_string (domain),
      code, g_file_test (path, G_FILE_TEST_EXISTS) ? "; a file written" : "",
      leftovers ()? "; temp files left" : "");
  g_free (err);
  g_free (err2);
  g_free (err3);
  g_free (why);
  g_free (why0);
  g_free (why1);
  g_unlink (path);
  g_unlink (p0);
  g_unlink (p1);
  g_free (path);
  g_free (pattern);
  g_free (p0);
  g_free (p1);
}

static void
check_odd_sizes (void)
{
  static const gint sizes[] = { 1, 3, 127, 250, 8191 };
  GString *report = g_string_new (NULL);
  gboolean ok = TRUE;

  for (guint i = 0; i < G_N_ELEMENTS (sizes); i++) {
    gint P = sizes[i];
    /* 8191: one GRAY8 patch (a 67 MB frame); else RGB, GRAY8 and GRAY16
     * grids of 3 x 2 patches with an overlap where one fits */
    GstVideoFormat fmts[] = { GST_VIDEO_FORMAT_RGB, GST_VIDEO_FORMAT_GRAY8,
      GST_VIDEO_FORMAT_GRAY16_LE
    };
    guint nf = P == 8191 ? 1 : 3;
    for (guint f = 0; f < nf; f++) {
      GstVideoFormat fmt = P == 8191 ? GST_VIDEO_FORMAT_GRAY8 : fmts[f];
      gint ov = P >= 8 && P != 8191 ? P / 8 : 0;
      Grid g = { fmt, P, ov, P == 8191 ? P : 3 * (P - ov) - 1,
        P == 8191 ? P : 2 * (P - ov), NULL, 0
      };
      gchar *name = g_strdup_printf ("odd-%d-%s.png", P,
          gst_video_format_to_string (fmt));
      gchar *why = stitch_grid (&g, name);
      g_string_append_printf (report, "%s%d %s %s", report->len ? "; " : "",
          P, gst_video_format_to_string (fmt), why ? why : "ok");
      ok &= why == NULL;
      g_free (why);
      g_free (name);
    }
  }
  conf_result ("odd-sizes", ok && leftovers () == 0, "%s", report->str);
  g_string_free (report, TRUE);
}

static void
check_no_tile_meta (void)
{
  Grid g = { GST_VIDEO_FORMAT_RGB, 250, 0, 300, 300, NULL };
  gchar *path = g_build_filename (tmp_dir, "nometa.png", NULL);
  gchar *caps = caps_of (&g), *err, *err2;
  GQuark domain = 0;
  gint code = 0;
  GstFlowReturn ret, ret2;
  GstBus *bus;
  GstHarness *h;

  /* first buffer without meta, and one mid-image */
  h = stitch_harness (&bus, path);
  gst_harness_set_src_caps_str (h, caps);
  ret = gst_harness_push (h, grid_patch (&g, 0, 0, FALSE));
  err = conf_bus_error (bus, &domain, &code);
  harness_done (h, bus);
  h = stitch_harness (&bus, path);
  gst_harness_set_src_caps_str (h, caps);
  gst_harness_push (h, grid_patch (&g, 0, 0, TRUE));
  ret2 = gst_harness_push (h, grid_patch (&g, 1, 0, FALSE));
  err2 = conf_bus_error (bus, NULL, NULL);
  harness_done (h, bus);
  conf_result ("no-tile-meta", ret == GST_FLOW_ERROR && ret2 == GST_FLOW_ERROR
      && err && strstr (err, "tile metadata") && domain == GST_STREAM_ERROR
      && code == GST_STREAM_ERROR_FORMAT && err2
      && !g_file_test (path, G_FILE_TEST_EXISTS) && leftovers () == 0,
      "first buffer: %s (%s); mid-image: %s; no file, no temp",
      gst_flow_get_name (ret), err ? err : "no error",
      err2 ? err2 : "no error");
  g_free (err);
  g_free (err2);
  g_free (caps);
  g_free (path);
}

static void
check_zero_area (void)
{
  Grid g = { GST_VIDEO_FORMAT_GRAY8, 16, 0, 32, 32, NULL };
  gchar *path = g_build_filename (tmp_dir, "zero.png", NULL);
  gchar *caps = caps_of (&g), *err, *err2, *why = NULL;
  GQuark domain = 0;
  gint code = 0;
  GstBuffer *b;
  GstWsiTileMeta *m;
  GstBus *bus;
  GstHarness *h;

  /* a region of width 0: refused with STREAM FORMAT, nothing written */
  h = stitch_harness (&bus, path);
  gst_harness_set_src_caps_str (h, caps);
  b = grid_patch (&g, 0, 0, TRUE);
  m = gst_buffer_get_wsi_tile_meta (b);
  m->region_width = m->region_height = 0;
  m->valid_width = m->valid_height = 0;
  gst_harness_push (h, b);
  err = conf_bus_error (bus, &domain, &code);
  harness_done (h, bus);

  /* patches with no valid pixel (all padding) between real ones: nothing
   * drawn from them, the image is still right */
  h = stitch_harness (&bus, path);
  gst_harness_set_src_caps_str (h, caps);
  for (gint r = 0; r < rows_of (&g); r++)
    for (gint c = 0; c < cols_of (&g); c++) {
      GstBuffer *empty = grid_patch (&g, c, r, TRUE);
      GstWsiTileMeta *em = gst_buffer_get_wsi_tile_meta (empty);
      gst_harness_push (h, grid_patch (&g, c, r, TRUE));
      em->valid_width = 0;
      em->valid_height = 0;
      gst_harness_push (h, empty);
    }
  gst_harness_push_event (h, gst_event_new_eos ());
  err2 = conf_bus_error (bus, NULL, NULL);
  harness_done (h, bus);
  if (!err2)
    why = check_png (&g, path);
  conf_result ("zero-area", err && domain == GST_STREAM_ERROR
      && code == GST_STREAM_ERROR_FORMAT && !err2 && !why
      && leftovers () == 0, "region 0 x 0: %s; patches with no valid "
      "pixel: %s", err ? err : "accepted", err2 ? err2 : why ? why :
      "skipped, PNG right");
  g_free (err);
  g_free (err2);
  g_free (why);
  g_free (caps);
  g_unlink (path);
  g_free (path);
}

/* Instance maps (instances=on, issue 11): odd patch sizes, a flush
 * mid-image, GRAY16 instances -> GRAY8 mid-image, no tile meta, EOS without
 * data. */
static void
check_instances (void)
{
  const gint sizes[][2] = { {3, 1}, {7, 2}, {127, 1} };
  gchar *path = g_build_filename (tmp_dir, "inst.png", NULL);
  GString *odd = g_string_new (NULL);
  gboolean odd_ok = TRUE;
  Grid g = { GST_VIDEO_FORMAT_GRAY16_LE, 16, 4, 101, 67, NULL, 0, TRUE };
  gchar *caps, *err, *why, *err_reneg, *err_meta, *err_eos;
  GQuark domain = 0;
  gint code = 0;
  GstBus *bus;
  GstHarness *h;

  for (guint k = 0; k < G_N_ELEMENTS (sizes); k++) {
    Grid o = g;
    o.P = sizes[k][0];
    o.overlap = sizes[k][1];
    caps = caps_of (&o);
    h = stitch_harness_full (&bus, path, "instances", 2, NULL);
    gst_harness_set_src_caps_str (h, caps);
    push_rows (h, &o, 0, rows_of (&o));
    gst_harness_push_event (h, gst_event_new_eos ());
    err = conf_bus_error (bus, NULL, NULL);
    harness_done (h, bus);
    why = err ? g_strdup (err) : check_png (&o, path);
    g_string_append_printf (odd, "%sP=%d O=%d: %s", k ? "; " : "", o.P,
        o.overlap, why ? why : "exact");
    odd_ok = odd_ok && !why;
    g_free (why);
    g_free (err);
    g_free (caps);
    g_unlink (path);
  }
  conf_result ("odd-sizes", odd_ok, "instance maps, 5 x 5 objects on a "
      "101 x 67 region: %s", odd->str);
  g_string_free (odd, TRUE);

  /* flush mid-image: the next full grid is stitched alone */
  caps = caps_of (&g);
  h = stitch_harness_full (&bus, path, "instances", 2, NULL);
  gst_harness_set_src_caps_str (h, caps);
  push_rows (h, &g, 0, 2);
  gst_harness_push_event (h, gst_event_new_flush_start ());
  gst_harness_push_event (h, gst_event_new_flush_stop (TRUE));
  gst_harness_push_event (h, gst_event_new_segment (&(GstSegment) {
        .format = GST_FORMAT_TIME, .rate = 1.0, .applied_rate = 1.0,
        .stop = GST_CLOCK_TIME_NONE}));
  push_rows (h, &g, 0, rows_of (&g));
  gst_harness_push_event (h, gst_event_new_eos ());
  err = conf_bus_error (bus, NULL, NULL);
  harness_done (h, bus);
  why = err ? g_strdup (err) : check_png (&g, path);
  conf_result ("flush", !why && leftovers () == 0, "instance map: flush "
      "after 2 grid rows, then the whole grid: %s", why ? why : "exact");
  g_free (why);
  g_free (err);
  g_unlink (path);

  /* GRAY16 instances -> GRAY8 mid-image: STREAM FORMAT, nothing left */
  h = stitch_harness_full (&bus, path, "instances", 2, NULL);
  gst_harness_set_src_caps_str (h, caps);
  push_rows (h, &g, 0, 1);
  {
    Grid g8 = g;
    gchar *c8;
    g8.fmt = GST_VIDEO_FORMAT_GRAY8;
    g8.instances = FALSE;
    c8 = caps_of (&g8);
    gst_harness_set_src_caps_str (h, c8);
    gst_harness_push (h, grid_patch (&g8, 0, 1, TRUE));
    g_free (c8);
  }
  err_reneg = conf_bus_error (bus, &domain, &code);
  harness_done (h, bus);
  conf_result ("renegotiation", err_reneg && domain == GST_STREAM_ERROR
      && code == GST_STREAM_ERROR_FORMAT && leftovers () == 0
      && !g_file_test (path, G_FILE_TEST_EXISTS), "GRAY16 instances to "
      "GRAY8 mid-image: %s", err_reneg ? err_reneg : "accepted");

  /* no tile meta; EOS without data */
  h = stitch_harness_full (&bus, path, "instances", 2, NULL);
  gst_harness_set_src_caps_str (h, caps);
  gst_harness_push (h, grid_patch (&g, 0, 0, FALSE));
  err_meta = conf_bus_error (bus, NULL, NULL);
  harness_done (h, bus);
  conf_result ("no-tile-meta", err_meta && strstr (err_meta, "tile metadata")
      && leftovers () == 0, "instance patch without meta: %s",
      err_meta ? err_meta : "accepted");
  h = stitch_harness_full (&bus, path, "instances", 2, NULL);
  gst_harness_set_src_caps_str (h, caps);
  gst_harness_push_event (h, gst_event_new_eos ());
  err_eos = conf_bus_error (bus, NULL, NULL);
  harness_done (h, bus);
  conf_result ("eos-no-data", err_eos != NULL
      && !g_file_test (path, G_FILE_TEST_EXISTS), "instances=on: %s",
      err_eos ? err_eos : "no error");
  g_free (err_reneg);
  g_free (err_meta);
  g_free (err_eos);
  g_free (caps);
  g_unlink (path);
  g_free (path);
}

int
main (int argc, char **argv)
{
  conf_init (&argc, &argv, "stitchsink");
  tmp_dir = g_dir_make_tmp ("conf-stitchsink-XXXXXX", NULL);
  check_flushing_seek ();
  check_flush ();
  check_eos_no_data ();
  check_props_playing ();
  check_renegotiation ();
  check_odd_sizes ();
  check_no_tile_meta ();
  check_zero_area ();
  check_instances ();
  conf_remove_dir (tmp_dir);
  g_free (tmp_dir);
  return conf_finish ();
}
