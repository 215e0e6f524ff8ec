/* slidesrc harness tests: caps, properties, tile grid and meta on the
 * sample slide, PNG datasets (glob, list file, shuffle, loop) and live
 * timestamps. */
#include <gst/check/gstcheck.h>
#include <gst/check/gstharness.h>
#include <gst/base/gstbasesrc.h>
#include <gst/video/video.h>
#include <glib/gstdio.h>
#include <png.h>
#include <string.h>

#include "gstwsitilemeta.h"

static const gchar *
sample_slide (void)
{
  const gchar *s = g_getenv ("WSISEG_SAMPLE_SLIDE");
  return s ? s : "data/cmu-1-small-region.svs";
}

/* Pulls buffers until EOS; returns them in order. */
static GPtrArray *
pull_all (GstHarness * h)
{
  GPtrArray *bufs = g_ptr_array_new_with_free_func (
      (GDestroyNotify) gst_buffer_unref);
  GstEvent *ev;

  for (;;) {
    GstBuffer *b;
    while ((b = gst_harness_try_pull (h)))
      g_ptr_array_add (bufs, b);
    ev = gst_harness_pull_event (h);
    fail_unless (ev != NULL, "timed out waiting for EOS");
    if (GST_EVENT_TYPE (ev) == GST_EVENT_EOS) {
      gst_event_unref (ev);
      break;
    }
    gst_event_unref (ev);
  }
  /* buffers pushed before EOS may still be queued */
  {
    GstBuffer *b;
    while ((b = gst_harness_try_pull (h)))
      g_ptr_array_add (bufs, b);
  }
  return bufs;
}

GST_START_TEST (test_properties_roundtrip)
{
  GstElement *e = gst_element_factory_make ("slidesrc", NULL);
  gchar *loc, *region;
  gint level, tw, th, order;
  gboolean live, shuffle;
  gdouble rate;
  guint seed, loop;

  fail_unless (e != NULL);
  g_object_set (e, "location", "/x/y.svs", "level", 2, "tile-width", 300,
      "tile-height", 200, "region", "1,2,3,4", "is-live", TRUE,
      "tiles-per-second", 12.5, "shuffle", TRUE, "seed", 77u, "loop", 3u,
      NULL);
  gst_util_set_object_arg (G_OBJECT (e), "order", "serpentine");
  g_object_get (e, "location", &loc, "level", &level, "tile-width", &tw,
      "tile-height", &th, "region", &region, "is-live", &live,
      "tiles-per-second", &rate, "order", &order, "shuffle", &shuffle,
      "seed", &seed, "loop", &loop, NULL);
  fail_unless_equals_string (loc, "/x/y.svs");
  fail_unless_equals_string (region, "1,2,3,4");
  fail_unless_equals_int (level, 2);
  fail_unless_equals_int (tw, 300);
  fail_unless_equals_int (th, 200);
  fail_unless (live);
  fail_unless (gst_base_src_is_live (GST_BASE_SRC (e)));
  fail_unless_equals_float (rate, 12.5);
  fail_unless_equals_int (order, 1);
  fail_unless (shuffle);
  fail_unless_equals_int (seed, 77);
  fail_unless_equals_int (loop, 3);
  g_free (loc);
  g_free (region);
  gst_object_unref (e);
}

GST_END_TEST;

static void
check_sample_grid (gint tw, gint th, const gchar * order)
{
  GstHarness *h = gst_harness_new ("slidesrc");
  GPtrArray *bufs;
  GstCaps *caps;
  GstStructure *s;
  gint w, hh, cols, rows;
  GHashTable *seen = g_hash_table_new (g_direct_hash, g_direct_equal);

  g_object_set (h->element, "location", sample_slide (), "tile-width", tw,
      "tile-height", th, NULL);
  gst_util_set_object_arg (G_OBJECT (h->element), "order", order);
  gst_harness_play (h);
  bufs = pull_all (h);

  caps = gst_pad_get_current_caps (h->sinkpad);
  fail_unless (caps != NULL);
  s = gst_caps_get_structure (caps, 0);
  fail_unless_equals_string (gst_structure_get_name (s), "video/x-raw");
  fail_unless_equals_string (gst_structure_get_string (s, "format"), "RGB");
  fail_unless (gst_structure_get_int (s, "width", &w));
  fail_unless (gst_structure_get_int (s, "height", &hh));
  fail_unless_equals_int (w, tw);
  fail_unless_equals_int (hh, th);
  gst_caps_unref (caps);

  /* sample: 2220 x 2967, one level, mpp 0.499, no bounds */
  cols = (2220 + tw - 1) / tw;
  rows = (2967 + th - 1) / th;
  fail_unless_equals_int (bufs->len, cols * rows);
  for (guint i = 0; i < bufs->len; i++) {
    GstBuffer *b = g_ptr_array_index (bufs, i);
    GstWsiTileMeta *m = gst_buffer_get_wsi_tile_meta (b);
    gint row = i / cols, col = i % cols;

    if (!strcmp (order, "serpentine") && (row & 1))
      col = cols - 1 - col;
    fail_unless (m != NULL);
    fail_unless_equals_string (m->slide, sample_slide ());
    fail_unless_equals_int (m->level, 0);
    fail_unless_equals_float (m->downsample, 1.0);
    fail_unless_equals_int (m->row, row);
    fail_unless_equals_int (m->col, col);
    fail_unless_equals_int64 (m->x, (gint64) col * tw);
    fail_unless_equals_int64 (m->y, (gint64) row * th);
    fail_unless_equals_int (m->width, tw);
    fail_unless_equals_int (m->height, th);
    fail_unless_equals_int (m->valid_width, MIN (tw, 2220 - col * tw));
    fail_unless_equals_int (m->valid_height, MIN (th, 2967 - row * th));
    fail_unless_equals_int (m->pad_left, 0);
    fail_unless_equals_int (m->pad_top, 0);
    fail_unless_equals_int (m->grid_cols, cols);
    fail_unless_equals_int (m->grid_rows, rows);
    fail_unless_equals_int (m->overlap, 0);
    fail_unless_equals_int64 (m->region_x, 0);
    fail_unless_equals_int64 (m->region_y, 0);
    fail_unless_equals_int64 (m->region_width, 2220);
    fail_unless_equals_int64 (m->region_height, 2967);
    fail_unless_equals_int64 (m->slide_width, 2220);
    fail_unless_equals_int64 (m->slide_height, 2967);
    fail_unless (fabs (m->mpp_x - 0.499) < 1e-9);
    fail_unless (fabs (m->mpp_y - 0.499) < 1e-9);
    fail_unless_equals_int64 (m->frame, i);
    fail_unless (m->tissue_fraction < 0);
    fail_unless_equals_int (gst_buffer_get_size (b),
        GST_ROUND_UP_4 (tw * 3) * th);
    /* no timestamps without a rate */
    fail_unless (!GST_BUFFER_PTS_IS_VALID (b));
    g_hash_table_add (seen, GINT_TO_POINTER (row * cols + col + 1));
  }
  fail_unless_equals_int (g_hash_table_size (seen), cols * rows);
  g_hash_table_unref (seen);
  g_ptr_array_unref (bufs);
  gst_harness_teardown (h);
}

GST_START_TEST (test_sample_grid)
{
  check_sample_grid (1024, 1024, "raster");
  check_sample_grid (700, 500, "raster");
  check_sample_grid (333, 1000, "serpentine");     /* stride padded to 4 */
}

GST_END_TEST;

GST_START_TEST (test_sample_region_and_padding)
{
  GstHarness *h = gst_harness_new ("slidesrc");
  GPtrArray *bufs;
  GstMapInfo map;
  GstBuffer *last;
  GstWsiTileMeta *m;

  /* 1000 x 777 region: 2 x 2 tiles of 512, edge tiles 488 / 265 valid */
  g_object_set (h->element, "location", sample_slide (), "tile-width", 512,
      "tile-height", 512, "region", "100,200,1000,777", NULL);
  gst_harness_play (h);
  bufs = pull_all (h);
  fail_unless_equals_int (bufs->len, 4);
  last = g_ptr_array_index (bufs, 3);
  m = gst_buffer_get_wsi_tile_meta (last);
  fail_unless_equals_int64 (m->x, 612);
  fail_unless_equals_int64 (m->y, 712);
  fail_unless_equals_int (m->valid_width, 488);
  fail_unless_equals_int (m->valid_height, 265);
  fail_unless_equals_int64 (m->region_x, 100);
  fail_unless_equals_int64 (m->region_height, 777);
  /* padding is the background colour (white for this slide) */
  fail_unless (gst_buffer_map (last, &map, GST_MAP_READ));
  for (gint y = 0; y < 512; y++)
    for (gint x = 0; x < 512; x++) {
      if (x < 488 && y < 265)
        continue;
      for (gint c = 0; c < 3; c++)
        fail_unless_equals_int (map.data[y * 512 * 3 + x * 3 + c], 255);
    }
  gst_buffer_unmap (last, &map);
  g_ptr_array_unref (bufs);
  gst_harness_teardown (h);
}

GST_END_TEST;

/* ---- PNG datasets ---- */

static void
write_png (const gchar * path, gint w, gint h, gint color_type, gint depth,
    guint seed)
{
  FILE *f = fopen (path, "wb");
  png_structp png = png_create_write_struct (PNG_LIBPNG_VER_STRING, NULL,
      NULL, NULL);
  png_infop info = png_create_info_struct (png);
  gint channels = color_type == PNG_COLOR_TYPE_RGB ? 3 :
      color_type == PNG_COLOR_TYPE_RGB_ALPHA ? 4 :
      color_type == PNG_COLOR_TYPE_GRAY_ALPHA ? 2 : 1;
  gint bps = depth / 8;
  guint8 *row = g_malloc ((gsize) w * channels * bps);

  fail_unless (f && png && info);
  png_init_io (png, f);
  png_set_IHDR (png, info, w, h, depth, color_type, PNG_INTERLACE_NONE,
      PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (color_type == PNG_COLOR_TYPE_PALETTE) {
    png_color pal[256];
    for (gint i = 0; i < 256; i++) {
      pal[i].red = i;
      pal[i].green = 255 - i;
      pal[i].blue = (i * 7) & 0xff;
    }
    png_set_PLTE (png, info, pal, 256);
  }
  png_write_info (png, info);
  for (gint y = 0; y < h; y++) {
    for (gint i = 0; i < w * channels; i++) {
      guint v = (guint) (i * 31 + y * 17 + seed * 101);
      if (bps == 2) {
        v = (v * 2654435761u) >> 16;
        row[i * 2] = (v >> 8) & 0xff;
        row[i * 2 + 1] = v & 0xff;
      } else {
        row[i] = v & 0xff;
      }
    }
    png_write_row (png, row);
  }
  png_write_end (png, NULL);
  png_destroy_write_struct (&png, &info);
  fclose (f);
  g_free (row);
}

/* Expected RGB8 of pixel (x, y) of an image written by write_png. */
static void
expected_pixel (gint x, gint y, gint color_type, gint depth, guint seed,
    guint8 out[3])
{
  gint channels = color_type == PNG_COLOR_TYPE_RGB ? 3 :
      color_type == PNG_COLOR_TYPE_RGB_ALPHA ? 4 :
      color_type == PNG_COLOR_TYPE_GRAY_ALPHA ? 2 : 1;
  guint s[4];

  for (gint c = 0; c < channels; c++) {
    gint i = x * channels + c;
    guint v = (guint) (i * 31 + y * 17 + seed * 101);
    if (depth == 16)
      s[c] = ((((v * 2654435761u) >> 16) & 0xffff) * 255 + 32895) >> 16;
    else
      s[c] = v & 0xff;
  }
  if (color_type == PNG_COLOR_TYPE_PALETTE) {
    out[0] = s[0];
    out[1] = 255 - s[0];
    out[2] = (s[0] * 7) & 0xff;
  } else if (color_type == PNG_COLOR_TYPE_GRAY) {
    out[0] = out[1] = out[2] = s[0];
  } else if (color_type == PNG_COLOR_TYPE_GRAY_ALPHA) {
    gdouble a = s[1] / 255.0;
    out[0] = out[1] = out[2] = (guint8) rint (s[0] * a + 255.0 * (1 - a));
  } else if (color_type == PNG_COLOR_TYPE_RGB_ALPHA) {
    gdouble a = s[3] / 255.0;
    for (gint c = 0; c < 3; c++)
      out[c] = (guint8) rint (s[c] * a + 255.0 * (1 - a));
  } else {
    out[0] = s[0];
    out[1] = s[1];
    out[2] = s[2];
  }
}

typedef struct
{
  const gchar *name;
  gint w, h, color_type, depth;
} PngCase;

static const PngCase png_cases[] = {
  {"a_rgb8.png", 70, 50, PNG_COLOR_TYPE_RGB, 8},
  {"b_gray8.png", 64, 64, PNG_COLOR_TYPE_GRAY, 8},
  {"c_rgb16.png", 130, 40, PNG_COLOR_TYPE_RGB, 16},
  {"d_rgba8.png", 31, 90, PNG_COLOR_TYPE_RGB_ALPHA, 8},
  {"e_pal8.png", 65, 65, PNG_COLOR_TYPE_PALETTE, 8},
  {"f_gray16.png", 20, 20, PNG_COLOR_TYPE_GRAY, 16},
  {"g_graya8.png", 64, 33, PNG_COLOR_TYPE_GRAY_ALPHA, 8},
};

#define N_PNG G_N_ELEMENTS (png_cases)
#define PNG_TILE 64

static gchar *
make_png_dir (void)
{
  gchar *dir = g_dir_make_tmp ("slidesrc-png-XXXXXX", NULL);

  fail_unless (dir != NULL);
  for (guint i = 0; i < N_PNG; i++) {
    gchar *p = g_build_filename (dir, png_cases[i].name, NULL);
    write_png (p, png_cases[i].w, png_cases[i].h, png_cases[i].color_type,
        png_cases[i].depth, i);
    g_free (p);
  }
  return dir;
}

static void
remove_png_dir (gchar * dir)
{
  GDir *d = g_dir_open (dir, 0, NULL);
  const gchar *n;

  while ((n = g_dir_read_name (d))) {
    gchar *p = g_build_filename (dir, n, NULL);
    g_unlink (p);
    g_free (p);
  }
  g_dir_close (d);
  g_rmdir (dir);
  g_free (dir);
}

static guint
tiles_of (const PngCase * c)
{
  return ((c->w + PNG_TILE - 1) / PNG_TILE) * ((c->h + PNG_TILE - 1) /
      PNG_TILE);
}

/* Checks the buffers of one pass over the images in @visit order, starting
 * at @first; returns the index after the pass. */
static guint
check_png_pass (GPtrArray * bufs, guint first, const gchar * dir,
    const guint * visit)
{
  guint k = first;

  for (guint n = 0; n < N_PNG; n++) {
    guint ci = visit[n];
    const PngCase *c = &png_cases[ci];
    gchar *path = g_build_filename (dir, c->name, NULL);
    gint cols = (c->w + PNG_TILE - 1) / PNG_TILE;

    for (guint t = 0; t < tiles_of (c); t++, k++) {
      GstBuffer *b;
      GstWsiTileMeta *m;
      GstMapInfo map;
      gint stride = GST_ROUND_UP_4 (PNG_TILE * 3);

      fail_unless (k < bufs->len);
      b = g_ptr_array_index (bufs, k);
      m = gst_buffer_get_wsi_tile_meta (b);
      fail_unless (m != NULL);
      fail_unless_equals_string (m->slide, path);
      fail_unless_equals_int (m->level, 0);
      fail_unless_equals_float (m->mpp_x, 0.0);
      fail_unless_equals_int64 (m->slide_width, c->w);
      fail_unless_equals_int64 (m->slide_height, c->h);
      fail_unless_equals_int (m->col, t % cols);
      fail_unless_equals_int (m->row, t / cols);
      fail_unless_equals_int64 (m->frame, k);
      fail_unless (gst_buffer_map (b, &map, GST_MAP_READ));
      for (gint y = 0; y < PNG_TILE; y++)
        for (gint x = 0; x < PNG_TILE; x++) {
          const guint8 *px = map.data + y * stride + x * 3;
          guint8 want[3] = { 255, 255, 255 };
          gint ix = m->x + x, iy = m->y + y;
          if (x < m->valid_width && y < m->valid_height)
            expected_pixel (ix, iy, c->color_type, c->depth, ci, want);
          else
            fail_unless (ix >= c->w || iy >= c->h);
          if (memcmp (px, want, 3) != 0)
            fail ("%s pixel %d,%d: got %d,%d,%d want %d,%d,%d", c->name, ix,
                iy, px[0], px[1], px[2], want[0], want[1], want[2]);
        }
      gst_buffer_unmap (b, &map);
    }
    g_free (path);
  }
  return k;
}

GST_START_TEST (test_png_glob)
{
  gchar *dir = make_png_dir ();
  gchar *pattern = g_build_filename (dir, "*.png", NULL);
  GstHarness *h = gst_harness_new ("slidesrc");
  GPtrArray *bufs;
  guint visit[N_PNG], total = 0;

  for (guint i = 0; i < N_PNG; i++) {
    visit[i] = i;               /* names sort in case order */
    total += tiles_of (&png_cases[i]);
  }
  g_object_set (h->element, "location", pattern, "tile-width", PNG_TILE,
      "tile-height", PNG_TILE, NULL);
  gst_harness_play (h);
  bufs = pull_all (h);
  fail_unless_equals_int (bufs->len, total);
  check_png_pass (bufs, 0, dir, visit);
  g_ptr_array_unref (bufs);
  gst_harness_teardown (h);
  g_free (pattern);
  remove_png_dir (dir);
}

GST_END_TEST;

/* Order of images in a run, read from the meta of each image's first tile. */
static GArray *
visit_order (GPtrArray * bufs)
{
  GArray *order = g_array_new (FALSE, FALSE, sizeof (guint));

  for (guint k = 0; k < bufs->len; k++) {
    GstWsiTileMeta *m = gst_buffer_get_wsi_tile_meta (g_ptr_array_index (bufs,
            k));
    if (m->col == 0 && m->row == 0) {
      gchar *base = g_path_get_basename (m->slide);
      for (guint i = 0; i < N_PNG; i++)
        if (!strcmp (base, png_cases[i].name))
          g_array_append_val (order, i);
      g_free (base);
    }
  }
  return order;
}

static GPtrArray *
run_dataset (const gchar * location, gboolean shuffle, guint seed, guint loop)
{
  GstHarness *h = gst_harness_new ("slidesrc");
  GPtrArray *bufs;

  g_object_set (h->element, "location", location, "tile-width", PNG_TILE,
      "tile-height", PNG_TILE, "shuffle", shuffle, "seed", seed, "loop", loop,
      NULL);
  gst_harness_play (h);
  bufs = pull_all (h);
  gst_harness_teardown (h);
  return bufs;
}

GST_START_TEST (test_png_list_shuffle_loop)
{
  gchar *dir = make_png_dir ();
  gchar *list = g_build_filename (dir, "list.txt", NULL);
  gchar *at = g_strconcat ("@", list, NULL);
  GString *content = g_string_new ("# dataset\n\n");
  GPtrArray *a, *b, *c;
  GArray *oa, *ob, *oc;
  guint k;

  /* relative names, listed in reverse: the source sorts them */
  for (gint i = N_PNG - 1; i >= 0; i--)
    g_string_append_printf (content, "%s\n", png_cases[i].name);
  fail_unless (g_file_set_contents (list, content->str, -1, NULL));

  /* shuffled, two epochs, same seed twice -> same order */
  a = run_dataset (at, TRUE, 1234, 2);
  b = run_dataset (at, TRUE, 1234, 2);
  oa = visit_order (a);
  ob = visit_order (b);
  fail_unless_equals_int (oa->len, 2 * N_PNG);
  fail_unless (memcmp (oa->data, ob->data, oa->len * sizeof (guint)) == 0);
  /* each epoch is a permutation, and pixels follow the images */
  for (guint e = 0; e < 2; e++) {
    guint seen = 0;
    for (guint i = 0; i < N_PNG; i++)
      seen |= 1u << g_array_index (oa, guint, e * N_PNG + i);
    fail_unless_equals_int (seen, (1u << N_PNG) - 1);
  }
  k = check_png_pass (a, 0, dir, (guint *) oa->data);
  k = check_png_pass (a, k, dir, (guint *) oa->data + N_PNG);
  fail_unless_equals_int (k, a->len);

  /* not shuffled: sorted order; another seed gives another order */
  c = run_dataset (at, FALSE, 0, 1);
  oc = visit_order (c);
  for (guint i = 0; i < N_PNG; i++)
    fail_unless_equals_int (g_array_index (oc, guint, i), i);
  g_ptr_array_unref (c);
  g_array_unref (oc);
  c = run_dataset (at, TRUE, 99, 1);
  oc = visit_order (c);
  fail_unless (memcmp (oa->data, oc->data, N_PNG * sizeof (guint)) != 0);

  g_array_unref (oa);
  g_array_unref (ob);
  g_array_unref (oc);
  g_ptr_array_unref (a);
  g_ptr_array_unref (b);
  g_ptr_array_unref (c);
  g_string_free (content, TRUE);
  g_free (at);
  g_free (list);
  remove_png_dir (dir);
}

GST_END_TEST;

/* ---- timestamps ---- */

GST_START_TEST (test_live_timestamps)
{
  GstHarness *h = gst_harness_new ("slidesrc");
  const gint rate = 40, n = 12;
  gint64 t0, elapsed;
  GstClockTime pts0 = GST_CLOCK_TIME_NONE;
  GstClock *clock;
  GstCaps *caps;
  gint fn, fd;

  gst_harness_use_systemclock (h);
  g_object_set (h->element, "location", sample_slide (), "tile-width", 256,
      "tile-height", 256, "is-live", TRUE, "tiles-per-second", (gdouble) rate,
      NULL);
  /* a bin would set the base time when going to PLAYING */
  clock = gst_element_get_clock (h->element);
  fail_unless (clock != NULL);
  gst_element_set_start_time (h->element, GST_CLOCK_TIME_NONE);
  gst_element_set_base_time (h->element, gst_clock_get_time (clock));
  gst_object_unref (clock);
  gst_harness_play (h);
  t0 = g_get_monotonic_time ();
  for (gint i = 0; i < n; i++) {
    GstBuffer *b = gst_harness_pull (h);
    GstWsiTileMeta *m = gst_buffer_get_wsi_tile_meta (b);
    fail_unless (b != NULL);
    /* running time: the first tile's pts is when streaming started, then
     * one tile every 1/rate */
    if (i == 0) {
      pts0 = GST_BUFFER_PTS (b);
      fail_unless (GST_CLOCK_TIME_IS_VALID (pts0));
      fail_unless (pts0 < GST_SECOND, "first pts %" GST_TIME_FORMAT
          " is not a running time", GST_TIME_ARGS (pts0));
    }
    fail_unless_equals_uint64 (GST_BUFFER_PTS (b) - pts0,
        gst_util_uint64_scale (i, GST_SECOND, rate));
    fail_unless_equals_uint64 (GST_BUFFER_DURATION (b), GST_SECOND / rate);
    fail_unless_equals_int64 (m->frame, i);
    gst_buffer_unref (b);
  }
  /* paced like a scanner: buffer n is not out before running time n/rate */
  elapsed = g_get_monotonic_time () - t0;
  fail_unless (elapsed >= (n - 2) * G_USEC_PER_SEC / rate,
      "%d tiles in %" G_GINT64_FORMAT " us: not paced", n, elapsed);
  caps = gst_pad_get_current_caps (h->sinkpad);
  fail_unless (gst_structure_get_fraction (gst_caps_get_structure (caps, 0),
          "framerate", &fn, &fd));
  fail_unless_equals_int (fn, rate);
  fail_unless_equals_int (fd, 1);
  gst_caps_unref (caps);
  gst_harness_teardown (h);
}

GST_END_TEST;

GST_START_TEST (test_nonlive_rate)
{
  GstHarness *h = gst_harness_new ("slidesrc");
  GPtrArray *bufs;
  gint64 t0 = g_get_monotonic_time ();

  g_object_set (h->element, "location", sample_slide (), "tile-width", 512,
      "tile-height", 512, "tiles-per-second", 2.0, NULL);
  gst_harness_play (h);
  bufs = pull_all (h);
  /* 30 tiles at 2/s would take 15 s if it were paced */
  fail_unless (g_get_monotonic_time () - t0 < 10 * G_USEC_PER_SEC);
  fail_unless_equals_int (bufs->len, 5 * 6);
  for (guint i = 0; i < bufs->len; i++) {
    GstBuffer *b = g_ptr_array_index (bufs, i);
    fail_unless_equals_uint64 (GST_BUFFER_PTS (b), i * GST_SECOND / 2);
    fail_unless_equals_uint64 (GST_BUFFER_DURATION (b), GST_SECOND / 2);
  }
  g_ptr_array_unref (bufs);
  gst_harness_teardown (h);
}

GST_END_TEST;

/* ---- target-mpp: meta of resampled tiles ---- */

static void
check_target_mpp_meta (gdouble target, gdouble mpp, gint tw, gint th)
{
  GstHarness *h = gst_harness_new ("slidesrc");
  GPtrArray *bufs;
  gdouble mpp0 = mpp > 0 ? mpp : 0.499, ds = target / mpp0;
  gint64 lw = (gint64) ceil (2220 / ds - 1e-9);
  gint64 lh = (gint64) ceil (2967 / ds - 1e-9);
  gint cols = (gint) ((lw + tw - 1) / tw), rows = (gint) ((lh + th - 1) / th);

  g_object_set (h->element, "location", sample_slide (), "tile-width", tw,
      "tile-height", th, "target-mpp", target, "mpp", mpp, NULL);
  gst_harness_play (h);
  bufs = pull_all (h);
  fail_unless_equals_int (bufs->len, cols * rows);
  for (guint i = 0; i < bufs->len; i++) {
    GstWsiTileMeta *m =
        gst_buffer_get_wsi_tile_meta (g_ptr_array_index (bufs, i));
    gint row = i / cols, col = i % cols;
    gint64 rw, rh;

    fail_unless (m != NULL);
    fail_unless_equals_int (m->level, 0);
    fail_unless (fabs (m->downsample - ds) < 1e-12);
    fail_unless_equals_int64 (m->x, llround ((gdouble) col * tw * ds));
    fail_unless_equals_int64 (m->y, llround ((gdouble) row * th * ds));
    /* downstream recovers the output position from x / downsample */
    fail_unless_equals_int64 (llround (m->x / m->downsample),
        (gint64) col * tw);
    fail_unless_equals_int (m->width, tw);
    fail_unless_equals_int (m->height, th);
    fail_unless_equals_int (m->valid_width, MIN (tw, lw - col * tw));
    fail_unless_equals_int (m->valid_height, MIN (th, lh - row * th));
    fail_unless_equals_int64 (m->region_width, 2220);
    fail_unless_equals_int64 (m->region_height, 2967);
    gst_wsi_tile_meta_region_level_size (m, &rw, &rh);
    fail_unless_equals_int64 (rw, lw);
    fail_unless_equals_int64 (rh, lh);
    fail_unless (fabs (m->mpp_x - mpp0) < 1e-12);
    fail_unless (fabs (m->mpp_y - mpp0) < 1e-12);
    fail_unless_equals_int (gst_buffer_get_size (
            g_ptr_array_index (bufs, i)), GST_ROUND_UP_4 (tw * 3) * th);
  }
  g_ptr_array_unref (bufs);
  gst_harness_teardown (h);
}

GST_START_TEST (test_target_mpp_meta)
{
  GstElement *e = gst_element_factory_make ("slidesrc", NULL);
  gdouble t, m, tol;

  g_object_get (e, "target-mpp", &t, "mpp", &m, "mpp-tolerance", &tol, NULL);
  fail_unless_equals_float (t, 0.0);
  fail_unless_equals_float (m, 0.0);
  fail_unless_equals_float (tol, 0.01);
  g_object_set (e, "target-mpp", 0.5, "mpp", 0.25, "mpp-tolerance", 0.0,
      NULL);
  g_object_get (e, "target-mpp", &t, "mpp", &m, "mpp-tolerance", &tol, NULL);
  fail_unless_equals_float (t, 0.5);
  fail_unless_equals_float (m, 0.25);
  fail_unless_equals_float (tol, 0.0);
  gst_object_unref (e);

  check_target_mpp_meta (0.75, 0.0, 256, 200);  /* 0.499 -> 0.75 */
  check_target_mpp_meta (1.0, 0.25, 300, 128);  /* mpp override: x4 */
}

GST_END_TEST;

/* ---- bad settings fail the state change ---- */

GST_START_TEST (test_bad_settings_fail_start)
{
  const gchar *regions[] = { "0,0,3000,10", "1,2,3", "a,b,c,d", "0,0,-1,5" };

  for (guint i = 0; i < G_N_ELEMENTS (regions); i++) {
    GstElement *e = gst_element_factory_make ("slidesrc", NULL);
    g_object_set (e, "location", sample_slide (), "region", regions[i], NULL);
    fail_unless_equals_int (gst_element_set_state (e, GST_STATE_PAUSED),
        GST_STATE_CHANGE_FAILURE);
    gst_element_set_state (e, GST_STATE_NULL);
    gst_object_unref (e);
  }
  {
    GstElement *e = gst_element_factory_make ("slidesrc", NULL);
    g_object_set (e, "location", sample_slide (), "level", 1, NULL);
    fail_unless_equals_int (gst_element_set_state (e, GST_STATE_PAUSED),
        GST_STATE_CHANGE_FAILURE);
    gst_element_set_state (e, GST_STATE_NULL);
    gst_object_unref (e);
  }
  {
    GstElement *e = gst_element_factory_make ("slidesrc", NULL);
    g_object_set (e, "location", sample_slide (), "level", -1,
        "target-mpp", 0.5, NULL);
    fail_unless_equals_int (gst_element_set_state (e, GST_STATE_PAUSED),
        GST_STATE_CHANGE_FAILURE);
    gst_element_set_state (e, GST_STATE_NULL);
    gst_object_unref (e);
  }
}

GST_END_TEST;


/* READY-only properties are refused while running: tile-width raised
 * while PLAYING used to overflow the pool's buffers (issue 9, point 2). */
GST_START_TEST (test_props_while_playing)
{
  gchar *launch = g_strdup_printf ("slidesrc location=%s tile-width=64 "
      "tile-height=48 region=0,0,640,480", sample_slide ());
  GstHarness *h = gst_harness_new_parse (launch);
  GstElement *e = gst_harness_find_element (h, "slidesrc");
  GstVideoInfo info;
  gint v, i;

  gst_harness_play (h);
  gst_buffer_unref (gst_harness_pull (h));
  g_object_set (e, "tile-width", 1024, "tile-height", 1024, "level", 5,
      "location", "/nonexistent.svs", NULL);
  g_object_get (e, "tile-width", &v, NULL);
  fail_unless_equals_int (v, 64);
  g_object_get (e, "tile-height", &v, NULL);
  fail_unless_equals_int (v, 48);
  g_object_get (e, "level", &v, NULL);
  fail_unless_equals_int (v, 0);
  gst_video_info_set_format (&info, GST_VIDEO_FORMAT_RGB, 64, 48);
  for (i = 1; i < 100; i++) {
    GstBuffer *b = gst_harness_pull (h);
    GstWsiTileMeta *m = gst_buffer_get_wsi_tile_meta (b);
    fail_unless_equals_int (gst_buffer_get_size (b), GST_VIDEO_INFO_SIZE
        (&info));
    fail_unless_equals_int (m->width, 64);
    fail_unless_equals_int (m->frame, i);
    gst_buffer_unref (b);
  }
  gst_object_unref (e);
  gst_harness_teardown (h);
  g_free (launch);
}

GST_END_TEST;

/* A zero-area region or an empty list streams nothing: EOS, no buffer. */
GST_START_TEST (test_eos_without_data)
{
  gchar *list = g_build_filename (g_get_tmp_dir (), "slidesrc-empty.txt",
      NULL);
  gchar *launches[2];

  g_file_set_contents (list, "# nothing\n\n", -1, NULL);
  launches[0] = g_strdup_printf ("slidesrc location=%s region=10,10,0,5",
      sample_slide ());
  launches[1] = g_strdup_printf ("slidesrc location=@%s", list);
  for (gint i = 0; i < 2; i++) {
    GstHarness *h = gst_harness_new_parse (launches[i]);
    GPtrArray *bufs;
    gst_harness_play (h);
    bufs = pull_all (h);
    fail_unless_equals_int (bufs->len, 0);
    g_ptr_array_unref (bufs);
    gst_harness_teardown (h);
    g_free (launches[i]);
  }
  g_unlink (list);
  g_free (list);
}

GST_END_TEST;

static Suite *
slidesrc_suite (void)
{
  Suite *s = suite_create ("slidesrc");
  TCase *tc = tcase_create ("general");

  tcase_set_timeout (tc, 50);
  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_properties_roundtrip);
  tcase_add_test (tc, test_sample_grid);
  tcase_add_test (tc, test_sample_region_and_padding);
  tcase_add_test (tc, test_png_glob);
  tcase_add_test (tc, test_png_list_shuffle_loop);
  tcase_add_test (tc, test_live_timestamps);
  tcase_add_test (tc, test_nonlive_rate);
  tcase_add_test (tc, test_bad_settings_fail_start);
  tcase_add_test (tc, test_target_mpp_meta);
  tcase_add_test (tc, test_props_while_playing);
  tcase_add_test (tc, test_eos_without_data);
  return s;
}

GST_CHECK_MAIN (slidesrc);
