/* GstWsiTileMeta: add/copy semantics and survival through tee, queue,
 * videoconvert and videoscale. */
#include <gst/check/gstcheck.h>
#include <gst/check/gstharness.h>
#include <gst/video/video.h>

#include "gstwsitilemeta.h"

static GstBuffer *
make_tile (gint w, gint h)
{
  GstBuffer *buf = gst_buffer_new_allocate (NULL, w * h * 3, NULL);
  GstWsiTileMeta *m = gst_wsi_tile_meta_add (buf);

  gst_buffer_memset (buf, 0, 0x80, w * h * 3);
  gst_wsi_tile_meta_set_slide (m, "/data/slide.svs");
  m->level = 2;
  m->downsample = 16.0;
  m->x = 1600;
  m->y = -32;
  m->width = w;
  m->height = h;
  m->valid_width = w - 4;
  m->valid_height = h - 2;
  m->pad_left = 4;
  m->pad_top = 2;
  m->col = 3;
  m->row = 5;
  m->grid_cols = 10;
  m->grid_rows = 12;
  m->overlap = 8;
  m->region_x = 100;
  m->region_y = 200;
  m->region_width = 50000;
  m->region_height = 60000;
  m->slide_width = 51000;
  m->slide_height = 61000;
  m->mpp_x = 0.25;
  m->mpp_y = 0.26;
  m->frame = 42;
  m->tissue_fraction = 0.5;
  return buf;
}

static void
assert_same_origin (const GstWsiTileMeta * m)
{
  fail_unless (m != NULL);
  fail_unless_equals_string (m->slide, "/data/slide.svs");
  fail_unless_equals_int (m->level, 2);
  fail_unless_equals_int64 (m->x, 1600);
  fail_unless_equals_int64 (m->y, -32);
  fail_unless_equals_int (m->col, 3);
  fail_unless_equals_int (m->row, 5);
  fail_unless_equals_int (m->grid_cols, 10);
  fail_unless_equals_int (m->grid_rows, 12);
  fail_unless_equals_int64 (m->region_x, 100);
  fail_unless_equals_int64 (m->region_height, 60000);
  fail_unless_equals_int64 (m->slide_width, 51000);
  fail_unless_equals_float (m->mpp_x, 0.25);
  fail_unless_equals_float (m->mpp_y, 0.26);
  fail_unless_equals_int64 (m->frame, 42);
  fail_unless_equals_float (m->tissue_fraction, 0.5);
}

GST_START_TEST (test_defaults_and_copy)
{
  GstBuffer *buf = gst_buffer_new ();
  GstWsiTileMeta *m = gst_wsi_tile_meta_add (buf);
  GstBuffer *tile, *copy;

  fail_unless_equals_float (m->downsample, 1.0);
  fail_unless (m->tissue_fraction < 0);
  fail_unless (m->slide == NULL);
  gst_buffer_unref (buf);

  tile = make_tile (16, 8);
  copy = gst_buffer_copy (tile);
  gst_buffer_unref (tile);      /* the copy must own its own slide string */
  assert_same_origin (gst_buffer_get_wsi_tile_meta (copy));
  gst_buffer_unref (copy);
}

GST_END_TEST;

static void
run_through (const gchar * launch, const gchar * in_caps, gint w, gint h,
    GstBuffer ** out)
{
  GstHarness *hh = gst_harness_new_parse (launch);

  gst_harness_set_src_caps_str (hh, in_caps);
  fail_unless_equals_int (gst_harness_push (hh, make_tile (w, h)), GST_FLOW_OK);
  *out = gst_harness_pull (hh);
  fail_unless (*out != NULL);
  gst_harness_teardown (hh);
}

GST_START_TEST (test_tee_queue_convert)
{
  GstBuffer *out;

  run_through ("tee ! queue ! videoconvert ! capsfilter caps=video/x-raw,format=BGRx",
      "video/x-raw,format=RGB,width=16,height=8,framerate=0/1", 16, 8, &out);
  assert_same_origin (gst_buffer_get_wsi_tile_meta (out));
  fail_unless_equals_int (gst_buffer_get_wsi_tile_meta (out)->width, 16);
  fail_unless_equals_float (gst_buffer_get_wsi_tile_meta (out)->downsample,
      16.0);
  gst_buffer_unref (out);
}

GST_END_TEST;

GST_START_TEST (test_scale_rewrites_geometry)
{
  GstBuffer *out;
  GstWsiTileMeta *m;

  run_through ("videoscale ! capsfilter caps=video/x-raw,width=8,height=4",
      "video/x-raw,format=RGB,width=16,height=8,framerate=0/1", 16, 8, &out);
  m = gst_buffer_get_wsi_tile_meta (out);
  assert_same_origin (m);
  /* videoscale copies the meta as is; consumers fit it to the frame size */
  if (m->width != 8) {
    out = gst_buffer_make_writable (out);
    m = gst_buffer_get_wsi_tile_meta (out);
    fail_unless (gst_wsi_tile_meta_fit_to_size (m, 8, 4));
  }
  fail_if (gst_wsi_tile_meta_fit_to_size (m, 8, 4));
  fail_unless_equals_int (m->width, 8);
  fail_unless_equals_int (m->height, 4);
  fail_unless_equals_float (m->downsample, 32.0);
  fail_unless_equals_int (m->valid_width, 6);
  fail_unless_equals_int (m->valid_height, 3);
  fail_unless_equals_int (m->pad_left, 2);
  fail_unless_equals_int (m->pad_top, 1);
  fail_unless_equals_int (m->overlap, 4);
  gst_buffer_unref (out);
}

GST_END_TEST;

static Suite *
meta_suite (void)
{
  Suite *s = suite_create ("wsitilemeta");
  TCase *tc = tcase_create ("general");

  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_defaults_and_copy);
  tcase_add_test (tc, test_tee_queue_convert);
  tcase_add_test (tc, test_scale_rewrites_geometry);
  return s;
}

GST_CHECK_MAIN (meta);
