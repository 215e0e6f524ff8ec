/* segment-fcn harness tests: caps, batching, outputs, meta and timestamps,
 * live batch timeout, bad settings. The model file is written here with the
 * engine's own builder and random weights. */
#include <gst/check/gstcheck.h>
#include <gst/check/gstharness.h>
#include <gst/app/gstappsink.h>
#include <gst/video/video.h>

#include "gstwsitilemeta.h"
#include "safetensors.h"
#include "wsinn.h"

#define P 32

static gchar *model_path;

static void
write_model (const gchar * path)
{
  wsinn_spec spec;
  wsinn_net *net;
  char err[256];
  size_t n;
  WsiTensorSpec *t;
  const char *meta[] = {
    "format", "gst-wsiseg-model", "format_version", "1", "arch", "unet",
    "depth", "2", "base_width", "4", "n_classes", "3",
    "class_names", "[\"bg\", \"nucleus\", \"edge\"]",
    "class_colors", "[[0, 0, 0], [0, 200, 0], [200, 0, 0]]",
    "preprocess", "rescale01", "input_layout", "NCHW", NULL
  };

  wsinn_spec_init (&spec);
  g_strlcpy (spec.arch, "unet", sizeof spec.arch);
  spec.depth = 2;
  spec.base_width = 4;
  spec.n_classes = 3;
  net = wsinn_net_new_from_spec (&spec, err, sizeof err);
  if (!net)
    g_error ("building the test net: %s", err);
  wsinn_net_init_params (net, 5);
  n = wsinn_net_n_params (net);
  t = g_new0 (WsiTensorSpec, n);
  for (size_t i = 0; i < n; i++) {
    wsinn_param *p = wsinn_net_param (net, i);
    t[i].name = p->name;
    t[i].n_dims = p->ndims;
    t[i].shape = p->shape;
    t[i].data = p->data;
  }
  if (wsi_safetensors_save (path, t, n, meta, err, sizeof err) != 0)
    g_error ("writing the test model: %s", err);
  g_free (t);
  wsinn_net_free (net);
}

static GstBuffer *
make_patch_sized (guint i, gint size)
{
  GstBuffer *buf = gst_buffer_new_allocate (NULL, size * size * 3, NULL);
  GstMapInfo map;
  GstWsiTileMeta *m;

  gst_buffer_map (buf, &map, GST_MAP_WRITE);
  for (gsize k = 0; k < map.size; k++)
    map.data[k] = (guint8) ((k * 7 + i * 31) % 251);
  gst_buffer_unmap (buf, &map);
  GST_BUFFER_PTS (buf) = i * GST_SECOND / 10;
  GST_BUFFER_DURATION (buf) = GST_SECOND / 10;
  m = gst_wsi_tile_meta_add (buf);
  gst_wsi_tile_meta_set_slide (m, "synthetic");
  m->x = i * size;
  m->width = m->height = m->valid_width = m->valid_height = size;
  m->col = i;
  m->frame = i;
  return buf;
}

static GstBuffer *
make_patch (guint i)
{
  return make_patch_sized (i, P);
}

/* The error messages posted on the element's bus within 3 s, joined. */
static gchar *
wait_errors (GstBus * bus)
{
  GString *all = g_string_new (NULL);
  GstMessage *msg;

  while ((msg = gst_bus_timed_pop_filtered (bus, 3 * GST_SECOND,
              GST_MESSAGE_ERROR))) {
    GError *err = NULL;
    gst_message_parse_error (msg, &err, NULL);
    g_string_append_printf (all, "%s\n", err->message);
    g_error_free (err);
    gst_message_unref (msg);
  }
  return g_string_free (all, FALSE);
}

static GstHarness *
new_harness (const gchar * props, const gchar * in_caps)
{
  gchar *desc = g_strdup_printf ("segment-fcn name=seg model=%s %s",
      model_path, props);
  GstHarness *h = gst_harness_new_parse (desc);

  g_free (desc);
  gst_harness_set_src_caps_str (h, in_caps);
  return h;
}

/* The segment-fcn inside the harness' bin (a new reference). */
static GstElement *
harness_seg (GstHarness * h)
{
  return gst_bin_get_by_name (GST_BIN (h->element), "seg");
}

#define RGB_CAPS "video/x-raw,format=RGB,width=32,height=32,framerate=10/1"

GST_START_TEST (test_labels_caps_meta_order)
{
  GstHarness *h = new_harness ("batch-size=4", RGB_CAPS);
  GstCaps *caps;
  GstStructure *s;
  gint w = 0, hh = 0;

  for (guint i = 0; i < 6; i++)
    fail_unless_equals_int (gst_harness_push (h, make_patch (i)), GST_FLOW_OK);
  /* a full batch of 4 comes out before EOS */
  for (guint i = 0; i < 4; i++) {
    GstBuffer *out = gst_harness_pull (h);
    GstWsiTileMeta *m = gst_buffer_get_wsi_tile_meta (out);
    GstMapInfo map;
    fail_unless_equals_int (gst_buffer_get_size (out), P * P);
    fail_unless (m != NULL);
    fail_unless_equals_int (m->col, i);
    fail_unless_equals_uint64 (GST_BUFFER_PTS (out), i * GST_SECOND / 10);
    gst_buffer_map (out, &map, GST_MAP_READ);
    for (gsize k = 0; k < map.size; k++)
      fail_unless (map.data[k] < 3);
    gst_buffer_unmap (out, &map);
    gst_buffer_unref (out);
  }
  fail_unless_equals_int (gst_harness_buffers_in_queue (h), 0);
  gst_harness_push_event (h, gst_event_new_eos ());
  for (guint i = 4; i < 6; i++) {
    GstBuffer *out = gst_harness_pull (h);
    fail_unless_equals_int (gst_buffer_get_wsi_tile_meta (out)->col, i);
    gst_buffer_unref (out);
  }
  caps = gst_pad_get_current_caps (h->sinkpad);
  s = gst_caps_get_structure (caps, 0);
  fail_unless (gst_structure_has_name (s, "video/x-raw"));
  fail_unless_equals_string (gst_structure_get_string (s, "format"), "GRAY8");
  gst_structure_get_int (s, "width", &w);
  gst_structure_get_int (s, "height", &hh);
  fail_unless_equals_int (w, P);
  fail_unless_equals_int (hh, P);
  gst_caps_unref (caps);
  gst_harness_teardown (h);
}

GST_END_TEST;

/* Probabilities sum to 1 per pixel, labels are their argmax, and the
 * class-map is the scaled probability of one class. */
GST_START_TEST (test_outputs_agree)
{
  GstHarness *hp = new_harness ("output=probabilities", RGB_CAPS);
  GstHarness *hl = new_harness ("output=labels", RGB_CAPS);
  GstHarness *hc = new_harness ("output=class-map class=2", RGB_CAPS);
  GstBuffer *bp, *bl, *bc;
  GstMapInfo mp, ml, mc;
  GstCaps *caps;
  const float *prob;

  gst_harness_push (hp, make_patch (3));
  gst_harness_push (hl, make_patch (3));
  gst_harness_push (hc, make_patch (3));
  bp = gst_harness_pull (hp);
  bl = gst_harness_pull (hl);
  bc = gst_harness_pull (hc);
  caps = gst_pad_get_current_caps (hp->sinkpad);
  fail_unless_equals_string (gst_structure_get_string (gst_caps_get_structure
          (caps, 0), "dimensions"), "3:32:32:1");
  gst_caps_unref (caps);
  fail_unless_equals_int (gst_buffer_get_size (bp), P * P * 3 * 4);
  gst_buffer_map (bp, &mp, GST_MAP_READ);
  gst_buffer_map (bl, &ml, GST_MAP_READ);
  gst_buffer_map (bc, &mc, GST_MAP_READ);
  prob = (const float *) mp.data;
  for (gsize i = 0; i < P * P; i++) {
    const float *q = prob + i * 3;
    gint best = q[1] > q[0] ? 1 : 0;
    best = q[2] > q[best] ? 2 : best;
    fail_unless (fabsf (q[0] + q[1] + q[2] - 1.0f) < 1e-5);
    fail_unless_equals_int (ml.data[i], best);
    fail_unless (abs ((gint) mc.data[i] - (gint) lrintf (q[2] * 255)) <= 1);
  }
  gst_buffer_unmap (bp, &mp);
  gst_buffer_unmap (bl, &ml);
  gst_buffer_unmap (bc, &mc);
  gst_buffer_unref (bp);
  gst_buffer_unref (bl);
  gst_buffer_unref (bc);
  gst_harness_teardown (hp);
  gst_harness_teardown (hl);
  gst_harness_teardown (hc);
}

GST_END_TEST;

/* Tensor input (as colornorm emits) gives the same labels as RGB input
 * preprocessed by the element (rescale01). */
GST_START_TEST (test_tensor_input)
{
  GstHarness *ht = new_harness ("", "other/tensors,format=static,"
      "num_tensors=1,types=float32,dimensions=3:32:32:1,framerate=10/1");
  GstHarness *hr = new_harness ("", RGB_CAPS);
  GstBuffer *rgb = make_patch (1), *tensor, *a, *b;
  GstMapInfo map;
  gfloat *f = g_new (gfloat, P * P * 3);

  gst_buffer_map (rgb, &map, GST_MAP_READ);
  for (gsize k = 0; k < map.size; k++)
    f[k] = map.data[k] / 255.0f;
  gst_buffer_unmap (rgb, &map);
  tensor = gst_buffer_new_wrapped (f, P * P * 3 * sizeof (gfloat));
  gst_harness_push (ht, tensor);
  gst_harness_push (hr, rgb);
  a = gst_harness_pull (ht);
  b = gst_harness_pull (hr);
  {
    GstMapInfo ma;
    gst_buffer_map (a, &ma, GST_MAP_READ);
    fail_unless (gst_buffer_memcmp (b, 0, ma.data, ma.size) == 0);
    gst_buffer_unmap (a, &ma);
  }
  gst_buffer_unref (a);
  gst_buffer_unref (b);
  gst_harness_teardown (ht);
  gst_harness_teardown (hr);
}

GST_END_TEST;

/* A live stream: a partial batch is pushed once the batch timeout (the
 * aggregator latency) expires, without waiting for more patches. Frames
 * come every second (the source's latency) and a batch needs 8, so without
 * the timeout nothing would come out before EOS (6 s). */
GST_START_TEST (test_live_batch_timeout)
{
  gchar *desc = g_strdup_printf ("videotestsrc is-live=true num-buffers=6 ! "
      "video/x-raw,format=RGB,width=32,height=32,framerate=1/1 ! "
      "segment-fcn model=%s batch-size=8 batch-timeout=50000000 ! "
      "appsink name=out sync=false", model_path);
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

GST_END_TEST;

/* Pushes one patch under @caps and expects an error containing @needle. */
static void
expect_caps_error (const gchar * props, const gchar * caps,
    const gchar * needle)
{
  GstHarness *h = new_harness (props, caps);
  GstBus *bus = gst_bus_new ();
  gchar *msg;

  gst_element_set_bus (h->element, bus);
  gst_harness_push (h, make_patch (0));
  msg = wait_errors (bus);
  fail_unless (msg && strstr (msg, needle) != NULL, "%s", msg);
  g_free (msg);
  gst_element_set_bus (h->element, NULL);
  gst_object_unref (bus);
  gst_harness_teardown (h);
}

GST_START_TEST (test_bad_patch_size)
{
  expect_caps_error ("",
      "video/x-raw,format=RGB,width=30,height=32,framerate=10/1",
      "multiples of 4");
}

GST_END_TEST;

/* A size change with a partial batch pending: the old-size patches go out
 * first, the batch arrays grow with the patch size (ASan checks bounds). */
GST_START_TEST (test_caps_change_mid_batch)
{
  GstHarness *h = new_harness ("batch-size=4", RGB_CAPS);

  for (guint i = 0; i < 2; i++)
    fail_unless_equals_int (gst_harness_push (h, make_patch (i)), GST_FLOW_OK);
  gst_harness_set_src_caps_str (h,
      "video/x-raw,format=RGB,width=64,height=64,framerate=10/1");
  for (guint i = 2; i < 6; i++)
    fail_unless_equals_int (gst_harness_push (h, make_patch_sized (i, 64)),
        GST_FLOW_OK);
  gst_harness_push_event (h, gst_event_new_eos ());
  for (guint i = 0; i < 6; i++) {
    GstBuffer *out = gst_harness_pull (h);
    fail_unless (out != NULL);
    fail_unless_equals_int (gst_buffer_get_size (out), i < 2 ? P * P : 64 * 64);
    fail_unless_equals_int (gst_buffer_get_wsi_tile_meta (out)->col, i);
    gst_buffer_unref (out);
  }
  gst_harness_teardown (h);
}

GST_END_TEST;

GST_START_TEST (test_huge_batch_refused)
{
  expect_caps_error ("batch-size=256",
      "video/x-raw,format=RGB,width=8192,height=8192,framerate=10/1", "GiB");
}

GST_END_TEST;

/* Model, mode and output cannot change under a running stream; video metas
 * of the RGB input do not describe the GRAY8 output and are not copied. */
GST_START_TEST (test_running_settings_and_metas)
{
  GstHarness *h = new_harness ("", RGB_CAPS);
  GstBuffer *in = make_patch (0), *out;
  GstElement *seg = harness_seg (h);
  gchar *model = NULL;
  gint output = -1;

  gst_buffer_add_video_meta (in, GST_VIDEO_FRAME_FLAG_NONE,
      GST_VIDEO_FORMAT_RGB, P, P);
  fail_unless_equals_int (gst_harness_push (h, in), GST_FLOW_OK);
  out = gst_harness_pull (h);
  fail_unless (gst_buffer_get_video_meta (out) == NULL);
  fail_unless (gst_buffer_get_wsi_tile_meta (out) != NULL);
  gst_buffer_unref (out);
  g_object_set (seg, "model", "/nonexistent.safetensors", "output", 1, NULL);
  g_object_get (seg, "model", &model, "output", &output, NULL);
  gst_object_unref (seg);
  fail_unless_equals_string (model, model_path);
  fail_unless_equals_int (output, 0);
  g_free (model);
  fail_unless_equals_int (gst_harness_push (h, make_patch (1)), GST_FLOW_OK);
  out = gst_harness_pull (h);
  fail_unless_equals_int (gst_buffer_get_size (out), P * P);
  gst_buffer_unref (out);
  gst_harness_teardown (h);
}

GST_END_TEST;

/* A running inference element refuses training pads. */
GST_START_TEST (test_annotation_pad_in_infer)
{
  GstHarness *h = new_harness ("", RGB_CAPS);
  GstElement *seg = harness_seg (h);

  fail_unless (gst_element_request_pad_simple (seg, "annotation") == NULL);
  fail_unless (gst_element_request_pad_simple (seg, "validation") == NULL);
  gst_object_unref (seg);
  gst_harness_teardown (h);
}

GST_END_TEST;

static Suite *
segment_fcn_suite (void)
{
  Suite *s = suite_create ("segment-fcn");
  TCase *tc = tcase_create ("general");
  gchar *dir = g_dir_make_tmp ("segfcn-XXXXXX", NULL);

  model_path = g_build_filename (dir, "unet.safetensors", NULL);
  write_model (model_path);
  g_free (dir);
  tcase_set_timeout (tc, 60);
  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_labels_caps_meta_order);
  tcase_add_test (tc, test_outputs_agree);
  tcase_add_test (tc, test_tensor_input);
  tcase_add_test (tc, test_live_batch_timeout);
  tcase_add_test (tc, test_bad_patch_size);
  tcase_add_test (tc, test_caps_change_mid_batch);
  tcase_add_test (tc, test_huge_batch_refused);
  tcase_add_test (tc, test_running_settings_and_metas);
  tcase_add_test (tc, test_annotation_pad_in_infer);
  return s;
}

GST_CHECK_MAIN (segment_fcn);
