/* slidesrc throughput vs a bare openslide_read_region loop over the same
 * tiles, in one process. Prints MPix/s of both and their ratio.
 *
 * Usage: slidesrc_bench [--level N] [--tile N] [--repeat N] SLIDE...
 * (default SLIDE: $WSISEG_SAMPLE_SLIDE). Each measurement opens the slide
 * afresh (cold OpenSlide tile cache, warm page cache); best of N runs. */
#include <gst/gst.h>
#include <openslide.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct
{
  gint64 rx, ry, lw, lh;
  gdouble ds;
} Geometry;

static gboolean
prop_i64 (openslide_t * osr, const char *name, gint64 * v)
{
  const char *s = openslide_get_property_value (osr, name);
  if (!s)
    return FALSE;
  *v = g_ascii_strtoll (s, NULL, 10);
  return TRUE;
}

/* Same region and level geometry as slidesrc's defaults. */
static gboolean
geometry (openslide_t * osr, int level, Geometry * g)
{
  gint64 w, h, bx, by, bw, bh;

  openslide_get_level0_dimensions (osr, &w, &h);
  g->rx = 0;
  g->ry = 0;
  if (prop_i64 (osr, OPENSLIDE_PROPERTY_NAME_BOUNDS_X, &bx) &&
      prop_i64 (osr, OPENSLIDE_PROPERTY_NAME_BOUNDS_Y, &by) &&
      prop_i64 (osr, OPENSLIDE_PROPERTY_NAME_BOUNDS_WIDTH, &bw) &&
      prop_i64 (osr, OPENSLIDE_PROPERTY_NAME_BOUNDS_HEIGHT, &bh)) {
    g->rx = bx;
    g->ry = by;
    w = bw;
    h = bh;
  }
  g->ds = openslide_get_level_downsample (osr, level);
  if (g->ds <= 0)
    return FALSE;
  g->lw = (gint64) ceil (w / g->ds - 1e-9);
  g->lh = (gint64) ceil (h / g->ds - 1e-9);
  return TRUE;
}

/* Bare loop: open, read every tile's valid area, close. Returns seconds,
 * or -1 on error; *mpix gets the pixels read. */
static double
run_bare (const char *path, int level, int tile, double *mpix)
{
  gint64 t0 = g_get_monotonic_time ();
  openslide_t *osr = openslide_open (path);
  guint32 *buf = g_new (guint32, (gsize) tile * tile);
  Geometry g;
  double pixels = 0;

  if (!osr || openslide_get_error (osr) || !geometry (osr, level, &g)) {
    fprintf (stderr, "cannot open %s\n", path);
    return -1;
  }
  for (gint64 y = 0; y < g.lh; y += tile) {
    for (gint64 x = 0; x < g.lw; x += tile) {
      gint64 vw = MIN (tile, g.lw - x), vh = MIN (tile, g.lh - y);
      openslide_read_region (osr, buf, g.rx + (gint64) llround (x * g.ds),
          g.ry + (gint64) llround (y * g.ds), level, vw, vh);
      if (openslide_get_error (osr)) {
        fprintf (stderr, "read error: %s\n", openslide_get_error (osr));
        return -1;
      }
      pixels += (double) vw * vh;
    }
  }
  openslide_close (osr);
  g_free (buf);
  *mpix = pixels / 1e6;
  return (g_get_monotonic_time () - t0) / 1e6;
}

static double
run_pipeline (const char *path, int level, int tile)
{
  gchar *desc = g_strdup_printf ("slidesrc location=\"%s\" level=%d "
      "tile-width=%d tile-height=%d ! fakesink", path, level, tile, tile);
  GError *err = NULL;
  GstElement *pipe = gst_parse_launch (desc, &err);
  GstBus *bus;
  GstMessage *msg;
  gint64 t0;
  double secs = -1;

  g_free (desc);
  if (!pipe) {
    fprintf (stderr, "pipeline: %s\n", err ? err->message : "?");
    return -1;
  }
  bus = gst_element_get_bus (pipe);
  t0 = g_get_monotonic_time ();
  gst_element_set_state (pipe, GST_STATE_PLAYING);
  msg = gst_bus_timed_pop_filtered (bus, GST_CLOCK_TIME_NONE,
      GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
  if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_EOS)
    secs = (g_get_monotonic_time () - t0) / 1e6;
  else {
    gst_message_parse_error (msg, &err, NULL);
    fprintf (stderr, "pipeline error: %s\n", err->message);
    g_clear_error (&err);
  }
  gst_message_unref (msg);
  gst_element_set_state (pipe, GST_STATE_NULL);
  gst_object_unref (bus);
  gst_object_unref (pipe);
  return secs;
}

int
main (int argc, char **argv)
{
  int level = 0, tile = 1024, repeat = 3, status = 0;
  GPtrArray *slides = g_ptr_array_new ();

  gst_init (&argc, &argv);
  for (int i = 1; i < argc; i++) {
    if (!strcmp (argv[i], "--level") && i + 1 < argc)
      level = atoi (argv[++i]);
    else if (!strcmp (argv[i], "--tile") && i + 1 < argc)
      tile = atoi (argv[++i]);
    else if (!strcmp (argv[i], "--repeat") && i + 1 < argc)
      repeat = atoi (argv[++i]);
    else
      g_ptr_array_add (slides, argv[i]);
  }
  if (slides->len == 0 && g_getenv ("WSISEG_SAMPLE_SLIDE"))
    g_ptr_array_add (slides, (gpointer) g_getenv ("WSISEG_SAMPLE_SLIDE"));
  if (slides->len == 0 || tile < 1 || repeat < 1) {
    fprintf (stderr, "usage: %s [--level N] [--tile N] [--repeat N] SLIDE...\n",
        argv[0]);
    return 2;
  }

  printf ("%-40s %5s %5s %9s %12s %12s %7s\n", "slide", "level", "tile",
      "MPix", "bare MPix/s", "slidesrc", "ratio");
  for (guint s = 0; s < slides->len; s++) {
    const char *path = g_ptr_array_index (slides, s);
    double mpix = 0, best_bare = 1e30, best_pipe = 1e30, t;
    gchar *base = g_path_get_basename (path);

    if (run_bare (path, level, tile, &mpix) < 0) {      /* warm-up */
      status = 1;
      continue;
    }
    for (int r = 0; r < repeat; r++) {
      t = run_bare (path, level, tile, &mpix);
      if (t > 0)
        best_bare = MIN (best_bare, t);
      t = run_pipeline (path, level, tile);
      if (t > 0)
        best_pipe = MIN (best_pipe, t);
    }
    if (best_pipe >= 1e30 || best_bare >= 1e30) {
      status = 1;
      continue;
    }
    printf ("%-40s %5d %5d %9.1f %12.1f %12.1f %7.3f\n", base, level, tile,
        mpix, mpix / best_bare, mpix / best_pipe, best_bare / best_pipe);
    g_free (base);
  }
  g_ptr_array_unref (slides);
  return status;
}
