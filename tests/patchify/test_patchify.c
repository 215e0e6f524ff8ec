/* patchify and tissuemask: caps, properties, patch grid, order, meta,
 * padding, frames on a grid, augmentation, tissue detection, bad input. */
#include <gst/check/gstcheck.h>
#include <gst/check/gstharness.h>
#include <gst/video/video.h>
#include <math.h>
#include <string.h>

#include "gstwsitilemeta.h"

/* Pixel of the synthetic mosaic at level coordinates (x, y): every pixel of
 * a region up to 1024 x 1024 differs. */
static void
mosaic_pixel (gint64 x, gint64 y, guint8 * px)
{
  px[0] = x & 255;
  px[1] = y & 255;
  px[2] = (((x >> 8) & 3) * 4 + ((y >> 8) & 3)) * 8 + 37;
}

static gint64
reflect (gint64 v, gint64 n)
{
  /* plain loop, independent of the element's modular version */
  while (v < 0 || v >= n) {
    if (v < 0)
      v = -v;
    if (v >= n)
      v = 2 * (n - 1) - v;
  }
  return v;
}

/* A frame whose pixel (i, j) is the mosaic pixel at (fx + i, fy + j);
 * pixels outside [0, valid) are garbage (0x55) that must never show. */
static GstBuffer *
make_frame (gint w, gint h, gint64 fx, gint64 fy, gint valid_w, gint valid_h)
{
  GstBuffer *buf = gst_buffer_new_allocate (NULL, (gsize) w * h * 3, NULL);
  GstMapInfo map;
  gint i, j;

  gst_buffer_map (buf, &map, GST_MAP_WRITE);
  memset (map.data, 0x55, map.size);
  for (j = 0; j < valid_h; j++)
    for (i = 0; i < valid_w; i++)
      mosaic_pixel (fx + i, fy + j, map.data + ((gsize) j * w + i) * 3);
  gst_buffer_unmap (buf, &map);
  return buf;
}

static gchar *
rgb_caps (gint w, gint h)
{
  return g_strdup_printf ("video/x-raw,format=RGB,width=%d,height=%d,"
      "framerate=10/1", w, h);
}

static void
set_src_caps (GstHarness * h, gint w, gint h_)
{
  gchar *c = rgb_caps (w, h_);
  gst_harness_set_src_caps_str (h, c);
  g_free (c);
}

/* Checks one patch against the mosaic: real pixels inside the region,
 * padding outside (constant colour, or the reflected mosaic pixel). */
static gboolean
patch_matches_gap (GstBuffer * buf, gint p, gint64 left, gint64 top,
    gint64 rw, gint64 rh, gboolean reflect_pad, guint pad_rgb,
    gint64 gap0, gint64 gap1)
{
  GstMapInfo map;
  gboolean ok = TRUE;
  gint i, j;

  gst_buffer_map (buf, &map, GST_MAP_READ);
  fail_unless_equals_int (map.size, p * p * 3);
  for (j = 0; j < p && ok; j++) {
    for (i = 0; i < p && ok; i++) {
      gint64 x = left + i, y = top + j;
      guint8 want[3];
      const guint8 *got = map.data + ((gsize) j * p + i) * 3;

      if (x >= 0 && y >= 0 && x < rw && y < rh && !(y >= gap0 && y < gap1)) {
        mosaic_pixel (x, y, want);
      } else if (reflect_pad) {
        mosaic_pixel (reflect (x, rw), reflect (y, rh), want);
      } else {
        want[0] = pad_rgb >> 16;
        want[1] = (pad_rgb >> 8) & 255;
        want[2] = pad_rgb & 255;
      }
      if (memcmp (want, got, 3) != 0) {
        GST_ERROR ("pixel (%d,%d) at (%" G_GINT64_FORMAT ",%" G_GINT64_FORMAT
            ") is %d,%d,%d want %d,%d,%d", i, j, x, y, got[0], got[1], got[2],
            want[0], want[1], want[2]);
        ok = FALSE;
      }
    }
  }
  gst_buffer_unmap (buf, &map);
  return ok;
}

static gboolean
patch_matches (GstBuffer * buf, gint p, gint64 left, gint64 top,
    gint64 rw, gint64 rh, gboolean reflect_pad, guint pad_rgb)
{
  return patch_matches_gap (buf, p, left, top, rw, rh, reflect_pad, pad_rgb,
      0, 0);
}

static GstBuffer *
meta_tile (const gchar * slide, gint tw, gint th, gint64 fx, gint64 fy,
    gint64 rw, gint64 rh, gint grid_cols)
{
  GstBuffer *buf = make_frame (tw, th, fx, fy, tw, th);
  GstWsiTileMeta *m = gst_wsi_tile_meta_add (buf);

  gst_wsi_tile_meta_set_slide (m, slide);
  m->x = fx;
  m->y = fy;
  m->width = m->valid_width = tw;
  m->height = m->valid_height = th;
  m->region_width = rw;
  m->region_height = rh;
  m->grid_cols = grid_cols;
  return buf;
}

GST_START_TEST (test_caps_and_properties)
{
  GstElement *e = gst_element_factory_make ("patchify", NULL);
  GstHarness *h;
  GstCaps *caps, *i420;
  GstStructure *s;
  gint v;
  gchar *str;
  GstPad *sink;

  fail_unless (e != NULL);
  g_object_get (e, "patch-size", &v, NULL);
  fail_unless_equals_int (v, 256);
  g_object_get (e, "overlap", &v, NULL);
  fail_unless_equals_int (v, 0);
  g_object_set (e, "patch-size", 128, "overlap", 32, NULL);
  g_object_get (e, "patch-size", &v, NULL);
  fail_unless_equals_int (v, 128);
  gst_util_set_object_arg (G_OBJECT (e), "pad-mode", "reflect");
  gst_util_set_object_arg (G_OBJECT (e), "tissue-action", "flag");
  g_object_get (e, "pad-mode", &v, NULL);
  fail_unless_equals_int (v, 1);

  /* non-RGB input is refused at negotiation */
  sink = gst_element_get_static_pad (e, "sink");
  i420 = gst_caps_from_string ("video/x-raw,format=I420,width=64,height=64,"
      "framerate=0/1");
  fail_if (gst_pad_query_accept_caps (sink, i420));
  gst_caps_unref (i420);
  gst_object_unref (sink);
  gst_object_unref (e);

  /* output caps: patch-size square RGB whatever the input size */
  h = gst_harness_new_parse ("patchify patch-size=64 overlap=16");
  set_src_caps (h, 100, 80);
  caps = gst_pad_get_current_caps (h->sinkpad);
  fail_unless (caps != NULL);
  s = gst_caps_get_structure (caps, 0);
  fail_unless_equals_string (gst_structure_get_string (s, "format"), "RGB");
  gst_structure_get_int (s, "width", &v);
  fail_unless_equals_int (v, 64);
  gst_structure_get_int (s, "height", &v);
  fail_unless_equals_int (v, 64);
  str = gst_caps_to_string (caps);
  GST_INFO ("output caps %s", str);
  g_free (str);
  gst_caps_unref (caps);
  gst_harness_teardown (h);
}

GST_END_TEST;

/* A level-1 region (downsample 2) of 300x200 level pixels read as 2x2
 * padded tiles of 160x110 with tile meta, patch 64, overlap 16. */
static void
run_meta_region (const gchar * extra, gboolean reflect_pad, guint pad_rgb)
{
  const gint tw = 160, th = 110, rw = 300, rh = 200, p = 64, o = 16, s = 48;
  const gint cols = (rw + s - 1) / s, rows = (rh + s - 1) / s;
  gchar *launch = g_strdup_printf ("patchify patch-size=%d overlap=%d %s",
      p, o, extra);
  GstHarness *h = gst_harness_new_parse (launch);
  gint n = 0, tr, tc, r, c;

  g_free (launch);
  set_src_caps (h, tw, th);
  for (tr = 0; tr < 2; tr++) {
    for (tc = 0; tc < 2; tc++) {
      gint vw = MIN (tw, rw - tc * tw), vh = MIN (th, rh - tr * th);
      GstBuffer *buf = make_frame (tw, th, tc * tw, tr * th, vw, vh);
      GstWsiTileMeta *m = gst_wsi_tile_meta_add (buf);

      gst_wsi_tile_meta_set_slide (m, "/slides/a.svs");
      m->level = 1;
      m->downsample = 2.0;
      m->region_x = 1000;
      m->region_y = 2000;
      m->region_width = rw * 2;
      m->region_height = rh * 2;
      m->slide_width = 5000;
      m->slide_height = 6000;
      m->mpp_x = m->mpp_y = 0.5;
      m->x = 1000 + tc * tw * 2;
      m->y = 2000 + tr * th * 2;
      m->width = tw;
      m->height = th;
      m->valid_width = vw;
      m->valid_height = vh;
      m->col = tc;
      m->row = tr;
      m->grid_cols = 2;
      m->grid_rows = 2;
      m->frame = tr * 2 + tc;
      GST_BUFFER_PTS (buf) = (tr * 2 + tc) * GST_SECOND;
      GST_BUFFER_DURATION (buf) = GST_SECOND;
      fail_unless_equals_int (gst_harness_push (h, buf), GST_FLOW_OK);
    }
    if (tr == 0) {
      /* streaming: rows 0..110 complete, patch rows 0 (bottom 56) and 1
       * (bottom 104) are out, row 2 (bottom 152) waits for the next tiles */
      fail_unless_equals_int (gst_harness_buffers_in_queue (h), 2 * cols);
    }
  }
  fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));
  fail_unless_equals_int (gst_harness_buffers_in_queue (h), cols * rows);

  for (r = 0; r < rows; r++) {
    for (c = 0; c < cols; c++, n++) {
      GstBuffer *buf = gst_harness_pull (h);
      GstWsiTileMeta *m = gst_buffer_get_wsi_tile_meta (buf);
      gint64 left = c * s - o / 2, top = r * s - o / 2;

      fail_unless (m != NULL);
      /* raster order of patch rows */
      fail_unless_equals_int (m->col, c);
      fail_unless_equals_int (m->row, r);
      fail_unless_equals_int (m->grid_cols, cols);
      fail_unless_equals_int (m->grid_rows, rows);
      fail_unless_equals_int64 (m->frame, n);
      fail_unless_equals_int64 (m->x, 1000 + left * 2);
      fail_unless_equals_int64 (m->y, 2000 + top * 2);
      fail_unless_equals_int (m->width, p);
      fail_unless_equals_int (m->height, p);
      fail_unless_equals_int (m->overlap, o);
      fail_unless_equals_int (m->pad_left, MAX (0, -left));
      fail_unless_equals_int (m->pad_top, MAX (0, -top));
      fail_unless_equals_int (m->valid_width,
          MIN (left + p, rw) - MAX (left, 0));
      fail_unless_equals_int (m->valid_height,
          MIN (top + p, rh) - MAX (top, 0));
      fail_unless_equals_string (m->slide, "/slides/a.svs");
      fail_unless_equals_int (m->level, 1);
      fail_unless_equals_float (m->downsample, 2.0);
      fail_unless_equals_int64 (m->region_x, 1000);
      fail_unless_equals_int64 (m->region_y, 2000);
      fail_unless_equals_int64 (m->region_width, 600);
      fail_unless_equals_int64 (m->region_height, 400);
      fail_unless_equals_int64 (m->slide_width, 5000);
      fail_unless_equals_float (m->mpp_x, 0.5);
      fail_unless (m->tissue_fraction >= 0.0 && m->tissue_fraction <= 1.0);
      fail_unless (GST_BUFFER_PTS_IS_VALID (buf));
      fail_unless (patch_matches (buf, p, left, top, rw, rh, reflect_pad,
              pad_rgb), "patch (%d,%d) pixels", c, r);
      gst_buffer_unref (buf);
    }
  }
  gst_harness_teardown (h);
}

GST_START_TEST (test_meta_grid_constant)
{
  run_meta_region ("", FALSE, 0xffffff);
  run_meta_region ("pad-value=0x102030", FALSE, 0x102030);
}

GST_END_TEST;

GST_START_TEST (test_meta_grid_reflect)
{
  run_meta_region ("pad-mode=reflect", TRUE, 0);
}

GST_END_TEST;

/* 4x3 frames of 100x80 without meta on a grid, patch 64 overlap 16: every
 * patch (across frame seams too) holds the mosaic pixels, and the centre
 * crops rebuild the mosaic pixel for pixel. */
static void
run_grid (gint grid_rows, const gchar * extra, GPtrArray * out)
{
  const gint fw = 100, fh = 80, cols = 4, rows = 3, p = 64, o = 16, s = 48;
  const gint rw = cols * fw, rh = rows * fh;
  const gint pc = (rw + s - 1) / s, pr = (rh + s - 1) / s;
  gchar *launch = g_strdup_printf ("patchify patch-size=%d overlap=%d "
      "grid-columns=%d grid-rows=%d %s", p, o, cols, grid_rows, extra);
  GstHarness *h = gst_harness_new_parse (launch);
  guint8 *mosaic = g_malloc0 ((gsize) rw * rh * 3);
  guint8 *seen = g_malloc0 ((gsize) rw * rh);
  gint i, n, x, y;

  g_free (launch);
  set_src_caps (h, fw, fh);
  for (i = 0; i < cols * rows; i++) {
    GstBuffer *buf = make_frame (fw, fh, (i % cols) * fw, (i / cols) * fh,
        fw, fh);
    GST_BUFFER_PTS (buf) = i * GST_SECOND / 10;
    GST_BUFFER_DURATION (buf) = GST_SECOND / 10;
    fail_unless_equals_int (gst_harness_push (h, buf), GST_FLOW_OK);
    if (i == cols - 1 && !out)
      /* first frame row (rows 0..80) done: patch row 0 (bottom 56) out */
      fail_unless_equals_int (gst_harness_buffers_in_queue (h), pc);
  }
  if (grid_rows == 0 && !out)
    /* unknown height: the last patch row (rows 184..248) waits for EOS */
    fail_unless_equals_int (gst_harness_buffers_in_queue (h), (pr - 1) * pc);
  fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));
  fail_unless_equals_int (gst_harness_buffers_in_queue (h), pc * pr);

  for (n = 0; n < pc * pr; n++) {
    GstBuffer *buf = gst_harness_pull (h);
    GstWsiTileMeta *m = gst_buffer_get_wsi_tile_meta (buf);
    gint c = n % pc, r = n / pc;
    GstMapInfo map;

    fail_unless (m != NULL);
    fail_unless_equals_int (m->col, c);
    fail_unless_equals_int (m->row, r);
    fail_unless_equals_int (m->grid_cols, pc);
    fail_unless_equals_int (m->grid_rows, grid_rows ? pr : 0);
    fail_unless_equals_int64 (m->x, c * s - o / 2);
    fail_unless_equals_int64 (m->y, r * s - o / 2);
    fail_unless_equals_int64 (m->region_width, rw);
    fail_unless_equals_int64 (m->region_height, grid_rows ? rh : 0);
    fail_unless_equals_int (m->valid_height, MIN (r * s - o / 2 + p, rh) -
        MAX (r * s - o / 2, 0));
    fail_unless_equals_float (m->downsample, 1.0);
    if (out) {
      g_ptr_array_add (out, buf);
      continue;
    }
    fail_unless (patch_matches (buf, p, c * s - o / 2, r * s - o / 2, rw, rh,
            FALSE, 0xffffff), "patch (%d,%d)", c, r);
    /* reassemble from centre crops */
    gst_buffer_map (buf, &map, GST_MAP_READ);
    for (y = r * s; y < MIN (r * s + s, rh); y++)
      for (x = c * s; x < MIN (c * s + s, rw); x++) {
        memcpy (mosaic + ((gsize) y * rw + x) * 3, map.data +
            ((gsize) (y - m->y) * p + (x - m->x)) * 3, 3);
        seen[(gsize) y * rw + x]++;
      }
    gst_buffer_unmap (buf, &map);
    gst_buffer_unref (buf);
  }
  if (!out) {
    fail_unless_equals_int (gst_harness_buffers_in_queue (h), 0);
    for (y = 0; y < rh; y++)
      for (x = 0; x < rw; x++) {
        guint8 want[3];
        mosaic_pixel (x, y, want);
        fail_unless_equals_int (seen[(gsize) y * rw + x], 1);
        fail_unless (memcmp (want, mosaic + ((gsize) y * rw + x) * 3, 3) == 0,
            "mosaic pixel (%d,%d)", x, y);
      }
  }
  g_free (mosaic);
  g_free (seen);
  gst_harness_teardown (h);
}

GST_START_TEST (test_grid_frames)
{
  run_grid (3, "", NULL);
  run_grid (0, "", NULL);
}

GST_END_TEST;

/* The augmented patch is fliplr/flipud/rot90 (numpy semantics, in that
 * order) of the plain one, as the WsiAugmentMeta says. */
static void
expect_augmented (GstBuffer * plain, GstBuffer * aug, gint p)
{
  GstCustomMeta *cm = gst_buffer_get_custom_meta (aug, "WsiAugmentMeta");
  GstStructure *s;
  gboolean fh, fv;
  gint rot, i, j, k;
  GstMapInfo a, b;
  guint8 *cur, *nxt;

  fail_unless (cm != NULL);
  s = gst_custom_meta_get_structure (cm);
  fail_unless (gst_structure_get_boolean (s, "flip-h", &fh));
  fail_unless (gst_structure_get_boolean (s, "flip-v", &fv));
  fail_unless (gst_structure_get_int (s, "rotate90", &rot));
  fail_unless (rot >= 0 && rot < 4);

  gst_buffer_map (plain, &a, GST_MAP_READ);
  gst_buffer_map (aug, &b, GST_MAP_READ);
  cur = g_memdup2 (a.data, a.size);
  nxt = g_malloc (a.size);
  if (fh) {
    for (j = 0; j < p; j++)
      for (i = 0; i < p; i++)
        memcpy (nxt + (j * p + i) * 3, cur + (j * p + p - 1 - i) * 3, 3);
    memcpy (cur, nxt, a.size);
  }
  if (fv) {
    for (j = 0; j < p; j++)
      memcpy (nxt + j * p * 3, cur + (p - 1 - j) * p * 3, p * 3);
    memcpy (cur, nxt, a.size);
  }
  for (k = 0; k < rot; k++) {
    /* np.rot90: transpose, then flip rows */
    for (j = 0; j < p; j++)
      for (i = 0; i < p; i++)
        memcpy (nxt + (j * p + i) * 3, cur + (i * p + (p - 1 - j)) * 3, 3);
    memcpy (cur, nxt, a.size);
  }
  fail_unless (memcmp (cur, b.data, a.size) == 0,
      "augmented patch differs (flip-h %d flip-v %d rot %d)", fh, fv, rot);
  g_free (cur);
  g_free (nxt);
  gst_buffer_unmap (plain, &a);
  gst_buffer_unmap (aug, &b);
}

GST_START_TEST (test_augmentation)
{
  GPtrArray *plain = g_ptr_array_new_with_free_func ((GDestroyNotify)
      gst_buffer_unref);
  GPtrArray *a1 = g_ptr_array_new_with_free_func ((GDestroyNotify)
      gst_buffer_unref);
  GPtrArray *a2 = g_ptr_array_new_with_free_func ((GDestroyNotify)
      gst_buffer_unref);
  GPtrArray *a3 = g_ptr_array_new_with_free_func ((GDestroyNotify)
      gst_buffer_unref);
  const gchar *aug = "augment-flip=true augment-rotate=true";
  gchar *seed7 = g_strdup_printf ("%s seed=7", aug);
  gchar *seed8 = g_strdup_printf ("%s seed=8", aug);
  guint i, differ = 0, transformed = 0;

  run_grid (3, "", plain);
  run_grid (3, seed7, a1);
  run_grid (3, seed7, a2);
  run_grid (3, seed8, a3);
  fail_unless_equals_int (a1->len, plain->len);
  for (i = 0; i < plain->len; i++) {
    GstBuffer *p = plain->pdata[i], *x = a1->pdata[i], *y = a2->pdata[i];
    GstBuffer *z = a3->pdata[i];
    GstStructure *sx, *sz;

    fail_if (gst_buffer_get_custom_meta (p, "WsiAugmentMeta") != NULL);
    expect_augmented (p, x, 64);
    expect_augmented (p, z, 64);
    /* same seed, same output */
    {
      GstMapInfo mx;
      gst_buffer_map (x, &mx, GST_MAP_READ);
      fail_unless (gst_buffer_memcmp (y, 0, mx.data, mx.size) == 0);
      if (gst_buffer_memcmp (p, 0, mx.data, mx.size) != 0)
        transformed++;
      gst_buffer_unmap (x, &mx);
    }
    sx = gst_custom_meta_get_structure (gst_buffer_get_custom_meta (x,
            "WsiAugmentMeta"));
    sz = gst_custom_meta_get_structure (gst_buffer_get_custom_meta (z,
            "WsiAugmentMeta"));
    if (!gst_structure_is_equal (sx, sz))
      differ++;
    /* the tile meta still describes the untransformed patch */
    fail_unless_equals_int64 (gst_buffer_get_wsi_tile_meta (x)->x,
        gst_buffer_get_wsi_tile_meta (p)->x);
  }
  fail_unless (differ > 0, "seeds 7 and 8 gave the same transforms");
  fail_unless (transformed > plain->len / 2, "only %u of %u transformed",
      transformed, plain->len);
  g_ptr_array_unref (plain);
  g_ptr_array_unref (a1);
  g_ptr_array_unref (a2);
  g_ptr_array_unref (a3);
  g_free (seed7);
  g_free (seed8);
}

GST_END_TEST;

/* Independent reference of the documented rule (double maths per pixel). */
static gboolean
ref_tissue (const guint8 * px)
{
  gdouble od_max = 0, od_min = 1e9;
  gint k;

  for (k = 0; k < 3; k++) {
    gdouble od = -log10 ((px[k] + 1.0) / 256.0);
    od_max = MAX (od_max, od);
    od_min = MIN (od_min, od);
  }
  return od_max > 0.15 && od_min <= 1.0;
}

static const guint8 swatches[][3] = {
  {245, 245, 245},              /* glass background */
  {255, 255, 255},
  {230, 150, 200},              /* eosin pink */
  {120, 80, 160},               /* haematoxylin purple */
  {200, 120, 180},
  {10, 10, 12},                 /* black border / pen */
  {220, 220, 225},              /* faint grey, below threshold */
  {30, 30, 30},
};

/* Frame of 64x64: quadrants white | pink, purple | black (+ a stripe of every
 * swatch) so the fraction is not a round number. */
static GstBuffer *
tissue_frame (gboolean all_white, gdouble * expect)
{
  GstBuffer *buf = gst_buffer_new_allocate (NULL, 64 * 64 * 3, NULL);
  GstMapInfo map;
  gint i, j, count = 0;

  gst_buffer_map (buf, &map, GST_MAP_WRITE);
  for (j = 0; j < 64; j++)
    for (i = 0; i < 64; i++) {
      const guint8 *sw;
      guint8 *px = map.data + (j * 64 + i) * 3;
      if (all_white)
        sw = swatches[0];
      else if (j < 8)
        sw = swatches[i % G_N_ELEMENTS (swatches)];
      else
        sw = swatches[(i < 32 ? 0 : 2) + (j < 36 ? 0 : 3)];
      memcpy (px, sw, 3);
      count += ref_tissue (px);
    }
  gst_buffer_unmap (buf, &map);
  *expect = count / 4096.0;
  return buf;
}

GST_START_TEST (test_tissue_fraction)
{
  GstHarness *h;
  gdouble fw, ft;
  GstBuffer *out;
  GstWsiTileMeta *m;

  /* the swatches: white/grey/black not tissue, H&E colours tissue */
  fail_if (ref_tissue (swatches[0]));
  fail_unless (ref_tissue (swatches[2]));
  fail_unless (ref_tissue (swatches[3]));
  fail_if (ref_tissue (swatches[5]));
  fail_if (ref_tissue (swatches[6]));

  /* min-tissue drops the white frame */
  h = gst_harness_new_parse ("patchify patch-size=64 grid-columns=2 "
      "grid-rows=1 min-tissue=0.3");
  set_src_caps (h, 64, 64);
  gst_harness_push (h, tissue_frame (TRUE, &fw));
  gst_harness_push (h, tissue_frame (FALSE, &ft));
  fail_unless (ft > 0.3 && ft < 0.6, "expected fraction %f", ft);
  fail_unless_equals_float (fw, 0.0);
  fail_unless_equals_int (gst_harness_buffers_in_queue (h), 1);
  out = gst_harness_pull (h);
  m = gst_buffer_get_wsi_tile_meta (out);
  fail_unless_equals_int (m->col, 1);
  fail_unless (fabs (m->tissue_fraction - ft) < 1e-9, "%f vs %f",
      m->tissue_fraction, ft);
  fail_unless_equals_int64 (m->frame, 0);
  gst_buffer_unref (out);
  gst_harness_teardown (h);

  /* flag keeps every patch and tells the fraction */
  h = gst_harness_new_parse ("patchify patch-size=64 grid-columns=2 "
      "grid-rows=1 min-tissue=0.3 tissue-action=flag");
  set_src_caps (h, 64, 64);
  gst_harness_push (h, tissue_frame (TRUE, &fw));
  gst_harness_push (h, tissue_frame (FALSE, &ft));
  fail_unless_equals_int (gst_harness_buffers_in_queue (h), 2);
  out = gst_harness_pull (h);
  fail_unless_equals_float (gst_buffer_get_wsi_tile_meta (out)->tissue_fraction,
      0.0);
  gst_buffer_unref (out);
  out = gst_harness_pull (h);
  fail_unless (fabs (gst_buffer_get_wsi_tile_meta (out)->tissue_fraction -
          ft) < 1e-9);
  gst_buffer_unref (out);
  gst_harness_teardown (h);

  /* the fraction counts real pixels only: a 40x40 frame in a 64 patch with
   * overlap 0 is 24 px of padding (white) each way */
  h = gst_harness_new_parse ("patchify patch-size=64 grid-columns=1 "
      "grid-rows=1 pad-value=0x800080");
  set_src_caps (h, 40, 40);
  {
    GstBuffer *b = gst_buffer_new_allocate (NULL, 40 * 40 * 3, NULL);
    gst_buffer_memset (b, 0, 250, 40 * 40 * 3);
    gst_buffer_memset (b, 0, 100, 40 * 10 * 3); /* 10 rows grey-dark */
    gst_harness_push (h, b);
  }
  out = gst_harness_pull (h);
  m = gst_buffer_get_wsi_tile_meta (out);
  fail_unless_equals_int (m->valid_width, 40);
  fail_unless_equals_float (m->tissue_fraction, 0.25);
  gst_buffer_unref (out);
  gst_harness_teardown (h);
}

GST_END_TEST;

GST_START_TEST (test_tissuemask)
{
  GstHarness *h = gst_harness_new ("tissuemask");
  GstBuffer *in, *out;
  GstWsiTileMeta *m;
  GstMapInfo map, inmap;
  GstCaps *caps;
  gdouble f;
  gint i, j;

  gst_harness_set_src_caps_str (h, "video/x-raw,format=RGB,width=64,"
      "height=64,framerate=0/1");
  in = tissue_frame (FALSE, &f);
  m = gst_wsi_tile_meta_add (in);
  m->width = m->height = 64;
  m->pad_left = 4;
  m->pad_top = 2;
  m->valid_width = 50;
  m->valid_height = 60;
  m->x = 123;
  m->tissue_fraction = 0.5;
  out = gst_harness_push_and_pull (h, gst_buffer_ref (in));
  fail_unless (out != NULL);
  caps = gst_pad_get_current_caps (h->sinkpad);
  fail_unless (gst_structure_has_field_typed (gst_caps_get_structure (caps, 0),
          "format", G_TYPE_STRING));
  fail_unless_equals_string (gst_structure_get_string (gst_caps_get_structure
          (caps, 0), "format"), "GRAY8");
  gst_caps_unref (caps);
  m = gst_buffer_get_wsi_tile_meta (out);
  fail_unless (m != NULL);
  fail_unless_equals_int64 (m->x, 123);
  fail_unless_equals_float (m->tissue_fraction, 0.5);

  gst_buffer_map (out, &map, GST_MAP_READ);
  gst_buffer_map (in, &inmap, GST_MAP_READ);
  fail_unless_equals_int (map.size, 64 * 64);
  for (j = 0; j < 64; j++)
    for (i = 0; i < 64; i++) {
      gboolean inside = i >= 4 && i < 54 && j >= 2 && j < 62;
      gint want = inside ? ref_tissue (inmap.data + (j * 64 + i) * 3) : 0;
      fail_unless_equals_int (map.data[j * 64 + i], want);
    }
  gst_buffer_unmap (in, &inmap);
  gst_buffer_unmap (out, &map);
  gst_buffer_unref (in);
  gst_buffer_unref (out);
  gst_harness_teardown (h);
}

GST_END_TEST;

/* Tiles missing from the middle of a region read as pad-value, and the band
 * does not span the gap: patch rows above a far-below tile are emitted when
 * it arrives. */
GST_START_TEST (test_missing_tiles)
{
  GstHarness *h = gst_harness_new_parse ("patchify patch-size=32 overlap=8");
  const gint rw = 100, rh = 1000, s = 24;
  const gint tile_rows[] = { 0, 1, 8, 9 };
  gint i, n = 0, expect_before_last = -1;

  set_src_caps (h, 100, 100);
  for (i = 0; i < 4; i++) {
    if (i == 3)
      expect_before_last = gst_harness_buffers_in_queue (h);
    gst_harness_push (h, meta_tile ("gap", 100, 100, 0, tile_rows[i] * 100,
            rw, rh, 1));
  }
  /* before the last tile, rows up to 900 are complete: patch rows whose
   * bottom (r*24 - 4 + 32) is at most 900 */
  fail_unless_equals_int (expect_before_last, ((900 - 28) / s + 1) * 5);
  gst_harness_push_event (h, gst_event_new_eos ());
  fail_unless_equals_int (gst_harness_buffers_in_queue (h), 5 * 42);
  for (n = 0; n < 5 * 42; n++) {
    GstBuffer *buf = gst_harness_pull (h);
    gint c = n % 5, r = n / 5;
    fail_unless (patch_matches_gap (buf, 32, c * s - 4, r * s - 4, rw, rh,
            FALSE, 0xffffff, 200, 800), "patch (%d,%d)", c, r);
    gst_buffer_unref (buf);
  }
  gst_harness_teardown (h);
}

GST_END_TEST;

/* A tile of another region ends the current one: all its patches come out
 * (with its own meta) before the first patch of the next region. */
GST_START_TEST (test_region_change)
{
  GstHarness *h = gst_harness_new_parse ("patchify patch-size=40 overlap=0");
  GstBuffer *buf;
  gint n;

  set_src_caps (h, 60, 50);
  /* region A: 120 x 50 in two tiles, but only the first arrives */
  gst_harness_push (h, meta_tile ("A", 60, 50, 0, 0, 120, 50, 2));
  fail_unless_equals_int (gst_harness_buffers_in_queue (h), 0);
  /* region B: one tile, 60 x 50 */
  gst_harness_push (h, meta_tile ("B", 60, 50, 0, 0, 60, 50, 1));
  /* A flushed (3x2 patches), B complete (2x2 patches) */
  fail_unless_equals_int (gst_harness_buffers_in_queue (h), 6 + 4);
  for (n = 0; n < 10; n++) {
    GstWsiTileMeta *m;
    buf = gst_harness_pull (h);
    m = gst_buffer_get_wsi_tile_meta (buf);
    fail_unless_equals_string (m->slide, n < 6 ? "A" : "B");
    fail_unless_equals_int (m->grid_cols, n < 6 ? 3 : 2);
    fail_unless_equals_int64 (m->frame, n);
    /* A's missing second tile (x >= 60) reads as pad-value like padding */
    fail_unless (patch_matches (buf, 40, m->col * 40, m->row * 40, 60, 50,
            FALSE, 0xffffff), "patch %d", n);
    gst_buffer_unref (buf);
  }
  gst_harness_teardown (h);
}

GST_END_TEST;

/* Untrusted meta: absurd coordinates or downsample give an error, no
 * crash and no huge allocation. */
GST_START_TEST (test_bad_meta)
{
  gint i;

  for (i = 0; i < 3; i++) {
    GstHarness *h = gst_harness_new_parse ("patchify patch-size=16");
    GstBuffer *buf = meta_tile ("bad", 16, 16, 0, 0, 64, 64, 1);
    GstWsiTileMeta *m = gst_buffer_get_wsi_tile_meta (buf);

    if (i == 0)
      m->downsample = 0.0;
    else if (i == 1)
      m->x = G_MAXINT64 - 5;
    else
      m->region_width = G_GINT64_CONSTANT (1) << 50;
    set_src_caps (h, 16, 16);
    fail_unless_equals_int (gst_harness_push (h, buf), GST_FLOW_ERROR);
    fail_unless_equals_int (gst_harness_buffers_in_queue (h), 0);
    gst_harness_teardown (h);
  }
}

GST_END_TEST;

static void
expect_start_error (gint patch, gint overlap)
{
  GstElement *e = gst_element_factory_make ("patchify", NULL);
  GstBus *bus = gst_bus_new ();
  GstMessage *msg;
  GError *err = NULL;

  gst_element_set_bus (e, bus);
  g_object_set (e, "patch-size", patch, "overlap", overlap, NULL);
  fail_unless_equals_int (gst_element_set_state (e, GST_STATE_PAUSED),
      GST_STATE_CHANGE_FAILURE);
  msg = gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR);
  fail_unless (msg != NULL);
  gst_message_parse_error (msg, &err, NULL);
  fail_unless (strstr (err->message, "patch-size") != NULL, "%s",
      err->message);
  g_error_free (err);
  gst_message_unref (msg);
  gst_element_set_state (e, GST_STATE_NULL);
  gst_element_set_bus (e, NULL);
  gst_object_unref (bus);
  gst_object_unref (e);
}

GST_START_TEST (test_bad_geometry)
{
  GstElement *e = gst_element_factory_make ("patchify", NULL);
  GParamSpecInt *ps = G_PARAM_SPEC_INT (g_object_class_find_property
      (G_OBJECT_GET_CLASS (e), "patch-size"));

  /* the range says what is accepted: 0 and 9000 never reach the element */
  fail_unless_equals_int (ps->minimum, 1);
  fail_unless_equals_int (ps->maximum, 8192);
  gst_object_unref (e);
  expect_start_error (64, 64);
  expect_start_error (64, 100);
  expect_start_error (1, 1);
}

GST_END_TEST;


/* Reference transform of the augmentation (numpy fliplr, flipud, rot90). */
static void
ref_augment (const guint8 * in, guint8 * out, gint p, gboolean fh,
    gboolean fv, gint rot)
{
  guint8 *a = g_malloc ((gsize) p * p * 3), *b = g_malloc ((gsize) p * p * 3);
  gint i, j;

  for (j = 0; j < p; j++)
    for (i = 0; i < p; i++)
      memcpy (a + ((gsize) j * p + i) * 3, in + ((gsize) (fv ? p - 1 - j : j)
              * p + (fh ? p - 1 - i : i)) * 3, 3);
  for (; rot > 0; rot--) {
    for (j = 0; j < p; j++)
      for (i = 0; i < p; i++)
        memcpy (b + ((gsize) j * p + i) * 3, a + ((gsize) i * p + p - 1 - j)
            * 3, 3);
    memcpy (a, b, (gsize) p * p * 3);
  }
  memcpy (out, a, (gsize) p * p * 3);
  g_free (a);
  g_free (b);
}

/* Patch sizes whose RGB rows are not a multiple of 4 bytes: every buffer
 * has GstVideoInfo's size and 4-byte aligned stride and each row holds the
 * right pixels, augmented or not (issue 9, point 3). */
static void
check_odd_patches (gint p, gint o, gboolean augment)
{
  const gint rw = 120, rh = 90, s = p - o;
  gchar *launch = g_strdup_printf ("patchify patch-size=%d overlap=%d %s", p,
      o, augment ? "augment-flip=true augment-rotate=true seed=3" : "");
  GstHarness *h = gst_harness_new_parse (launch);
  gint pc = (rw + s - 1) / s, pr = (rh + s - 1) / s, n;
  GstVideoInfo info;
  guint8 *want = g_malloc ((gsize) p * p * 3), *aug =
      g_malloc ((gsize) p * p * 3);

  g_free (launch);
  gst_video_info_set_format (&info, GST_VIDEO_FORMAT_RGB, p, p);
  set_src_caps (h, rw, rh);
  fail_unless_equals_int (gst_harness_push (h, meta_tile ("odd", rw, rh, 0,
              0, rw, rh, 1)), GST_FLOW_OK);
  fail_unless_equals_int (gst_harness_buffers_in_queue (h), pc * pr);
  for (n = 0; n < pc * pr; n++) {
    GstBuffer *buf = gst_harness_pull (h);
    GstVideoFrame f;
    gint i, j;
    gint64 left = (n % pc) * s - o / 2, top = (n / pc) * s - o / 2;
    const guint8 *ref = want;

    fail_unless_equals_int (gst_buffer_get_size (buf),
        GST_VIDEO_INFO_SIZE (&info));
    fail_unless (gst_video_frame_map (&f, &info, buf, GST_MAP_READ));
    for (j = 0; j < p; j++)
      for (i = 0; i < p; i++) {
        gint64 x = left + i, y = top + j;
        guint8 *w = want + ((gsize) j * p + i) * 3;
        if (x >= 0 && y >= 0 && x < rw && y < rh)
          mosaic_pixel (x, y, w);
        else
          memset (w, 0xff, 3);
      }
    if (augment) {
      GstStructure *st = gst_custom_meta_get_structure
          (gst_buffer_get_custom_meta (buf, "WsiAugmentMeta"));
      gboolean fh, fv;
      gint rot;
      gst_structure_get (st, "flip-h", G_TYPE_BOOLEAN, &fh, "flip-v",
          G_TYPE_BOOLEAN, &fv, "rotate90", G_TYPE_INT, &rot, NULL);
      ref_augment (want, aug, p, fh, fv, rot);
      ref = aug;
    }
    for (j = 0; j < p; j++)
      fail_unless (memcmp ((guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&f, 0) +
              (gsize) j * GST_VIDEO_FRAME_PLANE_STRIDE (&f, 0),
              ref + (gsize) j * p * 3, (gsize) p * 3) == 0,
          "p=%d patch %d row %d", p, n, j);
    gst_video_frame_unmap (&f);
    gst_buffer_unref (buf);
  }
  g_free (want);
  g_free (aug);
  gst_harness_teardown (h);
}

GST_START_TEST (test_odd_patch_sizes)
{
  check_odd_patches (1, 0, FALSE);
  check_odd_patches (3, 1, FALSE);
  check_odd_patches (3, 0, TRUE);
  check_odd_patches (127, 10, FALSE);
  check_odd_patches (250, 0, FALSE);
  check_odd_patches (250, 7, TRUE);
}

GST_END_TEST;

/* READY-only properties set while PLAYING are refused and change nothing:
 * overlap >= patch-size used to divide by zero, a new patch-size pushed
 * buffers that no longer matched the caps (issue 9, point 2). */
GST_START_TEST (test_props_while_playing)
{
  GstHarness *h = gst_harness_new_parse ("patchify patch-size=64 overlap=0 "
      "grid-columns=2 grid-rows=1");
  GstElement *e = gst_harness_find_element (h, "patchify");
  GstCaps *caps, *want;
  gint v, i;

  set_src_caps (h, 64, 64);
  g_object_set (e, "overlap", 64, NULL);
  g_object_get (e, "overlap", &v, NULL);
  fail_unless_equals_int (v, 0);
  g_object_set (e, "patch-size", 96, NULL);
  g_object_get (e, "patch-size", &v, NULL);
  fail_unless_equals_int (v, 64);
  /* a mutable-playing property still applies */
  g_object_set (e, "min-tissue", 0.5, NULL);
  g_object_set (e, "min-tissue", 0.0, NULL);
  for (i = 0; i < 2; i++)
    fail_unless_equals_int (gst_harness_push (h, make_frame (64, 64, i * 64,
                0, 64, 64)), GST_FLOW_OK);
  fail_unless_equals_int (gst_harness_buffers_in_queue (h), 2);
  caps = gst_pad_get_current_caps (h->sinkpad);
  for (i = 0; i < 2; i++) {
    GstBuffer *b = gst_harness_pull (h);
    fail_unless_equals_int (gst_buffer_get_size (b), 64 * 64 * 3);
    fail_unless (patch_matches (b, 64, i * 64, 0, 128, 64, FALSE, 0xffffff));
    gst_buffer_unref (b);
  }
  want = gst_caps_from_string ("video/x-raw,format=RGB,width=64,height=64,"
      "framerate=0/1,pixel-aspect-ratio=1/1");
  fail_unless (gst_caps_is_equal_fixed (caps, want));
  gst_caps_unref (want);
  gst_caps_unref (caps);
  gst_object_unref (e);
  gst_harness_teardown (h);
  /* back in NULL the value applies */
  e = gst_element_factory_make ("patchify", NULL);
  g_object_set (e, "patch-size", 96, NULL);
  g_object_get (e, "patch-size", &v, NULL);
  fail_unless_equals_int (v, 96);
  gst_object_unref (e);
}

GST_END_TEST;

/* EOS before the region is complete (gst-launch -e after SIGINT): only the
 * patches touching received pixels come out, then a wsi-region-incomplete
 * event before EOS says the rest of the grid is missing (issue 9,
 * point 14). A region change still flushes the whole grid. */
GST_START_TEST (test_eos_incomplete_region)
{
  GstHarness *h = gst_harness_new_parse ("patchify patch-size=50 overlap=0");
  GstEvent *ev;
  gboolean saw_incomplete = FALSE, saw_eos = FALSE;
  gint n = 0;

  set_src_caps (h, 100, 100);
  /* region 300 x 200 in 3 x 2 tiles: only the first two arrive */
  gst_harness_push (h, meta_tile ("cut", 100, 100, 0, 0, 300, 200, 3));
  gst_harness_push (h, meta_tile ("cut", 100, 100, 100, 0, 300, 200, 3));
  fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));
  /* received [0,200) x [0,100): patch columns 0..3, rows 0..1 */
  fail_unless_equals_int (gst_harness_buffers_in_queue (h), 8);
  for (n = 0; n < 8; n++) {
    GstBuffer *b = gst_harness_pull (h);
    GstWsiTileMeta *m = gst_buffer_get_wsi_tile_meta (b);
    fail_unless (m->col < 4 && m->row < 2, "patch (%d,%d)", m->col, m->row);
    fail_unless_equals_int (m->grid_cols, 6);
    fail_unless_equals_int (m->grid_rows, 4);
    gst_buffer_unref (b);
  }
  while ((ev = gst_harness_try_pull_event (h))) {
    if (GST_EVENT_TYPE (ev) == GST_EVENT_CUSTOM_DOWNSTREAM &&
        gst_event_has_name (ev, "wsi-region-incomplete")) {
      const GstStructure *st = gst_event_get_structure (ev);
      guint64 dropped = 0;
      gint64 rec = 0;
      fail_if (saw_eos, "event after EOS");
      gst_structure_get_uint64 (st, "patches-dropped", &dropped);
      gst_structure_get_int64 (st, "received-height", &rec);
      fail_unless_equals_uint64 (dropped, 16);
      fail_unless_equals_int64 (rec, 100);
      fail_unless_equals_string (gst_structure_get_string (st, "slide"),
          "cut");
      saw_incomplete = TRUE;
    }
    saw_eos |= GST_EVENT_TYPE (ev) == GST_EVENT_EOS;
    gst_event_unref (ev);
  }
  fail_unless (saw_incomplete && saw_eos);
  gst_harness_teardown (h);

  /* a complete region sends no such event */
  h = gst_harness_new_parse ("patchify patch-size=50 overlap=0");
  set_src_caps (h, 100, 100);
  gst_harness_push (h, meta_tile ("full", 100, 100, 0, 0, 100, 100, 1));
  fail_unless (gst_harness_push_event (h, gst_event_new_eos ()));
  fail_unless_equals_int (gst_harness_buffers_in_queue (h), 4);
  while ((ev = gst_harness_try_pull_event (h))) {
    fail_if (gst_event_has_name (ev, "wsi-region-incomplete"));
    gst_event_unref (ev);
  }
  gst_harness_teardown (h);
}

GST_END_TEST;

static Suite *
patchify_suite (void)
{
  Suite *s = suite_create ("patchify");
  TCase *tc = tcase_create ("general");

  tcase_set_timeout (tc, 60);
  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_caps_and_properties);
  tcase_add_test (tc, test_meta_grid_constant);
  tcase_add_test (tc, test_meta_grid_reflect);
  tcase_add_test (tc, test_grid_frames);
  tcase_add_test (tc, test_augmentation);
  tcase_add_test (tc, test_tissue_fraction);
  tcase_add_test (tc, test_tissuemask);
  tcase_add_test (tc, test_bad_geometry);
  tcase_add_test (tc, test_missing_tiles);
  tcase_add_test (tc, test_region_change);
  tcase_add_test (tc, test_bad_meta);
  tcase_add_test (tc, test_odd_patch_sizes);
  tcase_add_test (tc, test_props_while_playing);
  tcase_add_test (tc, test_eos_incomplete_region);
  return s;
}

GST_CHECK_MAIN (patchify);
