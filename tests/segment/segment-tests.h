/* Checks shared by the tests of the segmentation elements (segment-fcn,
 * segment-maskrcnn): the behaviour they get from gst/gstwsibatch. */
#pragma once

#include <gst/check/gstcheck.h>
#include <gst/app/gstappsink.h>

/* A live stream: a partial batch is pushed once the batch timeout (the
 * aggregator latency) expires, without waiting for more patches. Frames
 * come every second (the source's latency) and a batch needs 8, so without
 * the timeout nothing would come out before EOS (6 s). @element: the
 * element and its properties (model, threads) in gst-launch syntax. */
static inline void
segment_check_live_batch_timeout (const gchar * element, gint size)
{
  gchar *desc = g_strdup_printf ("videotestsrc is-live=true num-buffers=6 ! "
      "video/x-raw,format=RGB,width=%d,height=%d,framerate=1/1 ! "
      "%s batch-size=8 batch-timeout=50000000 ! "
      "appsink name=out sync=false", size, size, element);
  GstElement *pipeline = gst_parse_launch (desc, NULL);
  GstElement *sink = gst_bin_get_by_name (GST_BIN (pipeline), "out");
  GstSample *sample;

  fail_unless (pipeline != NULL);
  gst_element_set_state (pipeline, GST_STATE_PLAYING);
  sample = gst_app_sink_try_pull_sample (GST_APP_SINK (sink), 4 * GST_SECOND);
  fail_unless (sample != NULL, "no output within 4 s: the partial batch "
      "waited for more patches");
  gst_sample_unref (sample);
  gst_element_set_state (pipeline, GST_STATE_NULL);
  gst_object_unref (sink);
  gst_object_unref (pipeline);
  g_free (desc);
}
