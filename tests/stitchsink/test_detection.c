/* The detection meta convention (gst/gstwsidetection.h). */
#include <gst/check/gstcheck.h>

#include "gstwsidetection.h"

GST_START_TEST (test_add_and_table)
{
  GstBuffer *buf = gst_buffer_new_allocate (NULL, 16, NULL);
  GstVideoRegionOfInterestMeta *roi;
  GstWsiDetection table[4], det;
  guint n, out = 99;

  roi = gst_wsi_detection_meta_add (buf, 2, 1, "nucleus", 0.75,
      -3.5, 1.2, 10.2, 7.0);
  fail_unless (roi != NULL);
  fail_unless_equals_int (roi->id, 2);
  fail_unless_equals_string (g_quark_to_string (roi->roi_type), "nucleus");
  fail_unless_equals_int (roi->x, 0);
  fail_unless_equals_int (roi->y, 1);
  fail_unless_equals_int (roi->w, 11);
  fail_unless_equals_int (roi->h, 6);
  fail_unless (gst_wsi_detection_from_roi (roi, &det));
  fail_unless_equals_int (det.instance_id, 2);
  fail_unless_equals_int (det.class_id, 1);
  fail_unless_equals_float (det.score, 0.75);

  fail_unless (gst_wsi_detection_meta_add (buf, 1, 2, NULL, 0.9, 0, 0, 1,
          1) != NULL);
  fail_unless (gst_wsi_detection_meta_add (buf, 7, 2, NULL, 0.5, 0, 0, 1,
          1) != NULL);
  fail_unless (gst_wsi_detection_meta_add (buf, 0, 2, NULL, 0.5, 0, 0, 1,
          1) == NULL);
  fail_unless (gst_wsi_detection_meta_add (buf, 65536, 2, NULL, 0.5, 0, 0,
          1, 1) == NULL);
  /* another element's region of interest is not a detection */
  gst_buffer_add_video_region_of_interest_meta (buf, "face", 0, 0, 2, 2);

  n = gst_wsi_detection_fill_table (buf, table, 4, &out);
  fail_unless_equals_int (n, 3);
  fail_unless_equals_int (out, 1);
  fail_unless_equals_int (table[0].instance_id, 0);
  fail_unless_equals_int (table[1].instance_id, 1);
  fail_unless_equals_string (g_quark_to_string (table[1].class_quark),
      "object");
  fail_unless_equals_float (table[1].score, 0.9);
  fail_unless_equals_int (table[2].class_id, 1);
  fail_unless_equals_int (table[3].instance_id, 0);
  fail_unless_equals_int (table[3].class_id, -1);
  fail_unless_equals_float (table[3].score, -1);

  /* copies keep the params */
  {
    GstBuffer *copy = gst_buffer_copy (buf);
    fail_unless_equals_int (gst_wsi_detection_fill_table (copy, table, 4,
            NULL), 3);
    fail_unless_equals_float (table[2].score, 0.75);
    gst_buffer_unref (copy);
  }
  gst_buffer_unref (buf);
}

GST_END_TEST;

static Suite *
detection_suite (void)
{
  Suite *s = suite_create ("wsidetection");
  TCase *tc = tcase_create ("general");
  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_add_and_table);
  return s;
}

GST_CHECK_MAIN (detection);
