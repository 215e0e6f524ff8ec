/* segment-fcn harness tests: caps, batching, outputs, meta and timestamps,
 * live batch timeout, bad settings. The model file is written here with the
 * engine's own builder and random weights. */
#include <gst/check/gstcheck.h>
#include <gst/check/gstharness.h>
#include <gst/base/gstaggregator.h>
#include <gst/app/gstappsink.h>
#include <gst/app/gstappsrc.h>
#include <gst/video/video.h>
#include <glib/gstdio.h>
#include <string.h>
#include <unistd.h>

#include "gstwsitilemeta.h"
#include "safetensors.h"
#include "wsinn.h"
#include "segment-tests.h"

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

/* A live stream: a partial batch goes out once batch-timeout expires. */
GST_START_TEST (test_live_batch_timeout)
{
  gchar *element = g_strdup_printf ("segment-fcn model=%s", model_path);

  segment_check_live_batch_timeout (element, 32);
  g_free (element);
}

GST_END_TEST;

/* Pushes one patch under @caps and expects an error containing @needle. */
static void
expect_caps_error (const gchar * props, const gchar * caps,
    const gchar * needle)
{
  gchar *desc = g_strdup_printf ("segment-fcn name=seg model=%s %s",
      model_path, props);
  GstHarness *h = gst_harness_new_parse (desc);
  GstBus *bus = gst_bus_new ();
  gchar *msg;

  /* the bus first: setting the caps sends them at once */
  gst_element_set_bus (h->element, bus);
  gst_harness_set_src_caps_str (h, caps);
  g_free (desc);
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

/* The element's own latency is batch-timeout (gst_aggregator_set_latency);
 * the user's "latency" property is left as set (issue 9, point 8). */
GST_START_TEST (test_latency_property_kept)
{
  gchar *desc = g_strdup_printf ("videotestsrc is-live=true ! "
      "video/x-raw,format=RGB,width=32,height=32,framerate=10/1 ! "
      "segment-fcn name=seg model=%s latency=5000000 batch-size=8 "
      "batch-timeout=50000000 ! appsink name=out sync=false", model_path);
  GstElement *pipeline = gst_parse_launch (desc, NULL);
  GstElement *sink = gst_bin_get_by_name (GST_BIN (pipeline), "out");
  GstElement *seg = gst_bin_get_by_name (GST_BIN (pipeline), "seg");
  GstQuery *q = gst_query_new_latency ();
  GstClockTime lat = 0, min = 0;
  gboolean live = FALSE;
  GstSample *sample;

  gst_element_set_state (pipeline, GST_STATE_PLAYING);
  sample = gst_app_sink_try_pull_sample (GST_APP_SINK (sink), 4 * GST_SECOND);
  fail_unless (sample != NULL);
  gst_sample_unref (sample);
  {
    /* asked at segment-fcn's src pad (a sink with sync=false says not live) */
    GstPad *src = gst_element_get_static_pad (seg, "src");
    fail_unless (gst_pad_query (src, q));
    gst_object_unref (src);
  }
  gst_query_parse_latency (q, &live, &min, NULL);
  g_object_get (seg, "latency", &lat, NULL);
  fail_unless_equals_uint64 (lat, 5000000);
  fail_unless (live);
  /* upstream (one frame) + the user's latency + batch-timeout */
  fail_unless (min >= 55000000, "latency %" GST_TIME_FORMAT,
      GST_TIME_ARGS (min));
  gst_query_unref (q);
  gst_element_set_state (pipeline, GST_STATE_NULL);
  gst_object_unref (seg);
  gst_object_unref (sink);
  gst_object_unref (pipeline);
  g_free (desc);
}

GST_END_TEST;

/* loss / optimizer / lr-schedule are registered enums whose nicks are the
 * strings pipelines use (issue 9, point 10). */
GST_START_TEST (test_training_enums)
{
  GstElement *seg = gst_element_factory_make ("segment-fcn", NULL);
  const gchar *props[][2] = { {"loss", "ce+dice"}, {"optimizer", "adam"},
  {"lr-schedule", "cosine"}, {"mode", "pretrain"}, {"output", "class-map"}
  };

  for (guint i = 0; i < G_N_ELEMENTS (props); i++) {
    GParamSpec *p = g_object_class_find_property (G_OBJECT_GET_CLASS (seg),
        props[i][0]);
    GEnumValue *v;
    GValue val = G_VALUE_INIT;
    fail_unless (G_IS_PARAM_SPEC_ENUM (p), "%s is not an enum", props[i][0]);
    fail_unless (p->flags & GST_PARAM_MUTABLE_READY);
    gst_util_set_object_arg (G_OBJECT (seg), props[i][0], props[i][1]);
    g_value_init (&val, p->value_type);
    g_object_get_property (G_OBJECT (seg), props[i][0], &val);
    v = g_enum_get_value (G_PARAM_SPEC_ENUM (p)->enum_class,
        g_value_get_enum (&val));
    fail_unless_equals_string (v->value_nick, props[i][1]);
    g_value_unset (&val);
  }
  gst_object_unref (seg);
}

GST_END_TEST;

/* Element messages on @bus (drained): those named @name count 1, those
 * named @name2 (may be NULL) count 10. */
static gint
count_element_messages (GstBus * bus, const gchar * name, const gchar * name2)
{
  GstMessage *m;
  gint n = 0;

  while ((m = gst_bus_pop_filtered (bus, GST_MESSAGE_ELEMENT))) {
    const GstStructure *s = gst_message_get_structure (m);
    if (gst_structure_has_name (s, name))
      n++;
    else if (name2 && gst_structure_has_name (s, name2))
      n += 10;
    gst_message_unref (m);
  }
  return n;
}

/* Per-step and every-64-patches messages only with post-messages=true;
 * the final stats and per-epoch messages always (issue 9, point 11). */
GST_START_TEST (test_post_messages_gate)
{
  for (gint on = 0; on < 2; on++) {
    GstHarness *h = new_harness (on ? "post-messages=true" : "", RGB_CAPS);
    GstHarness *t = new_harness (on ? "mode=pretrain post-messages=true" :
        "mode=pretrain", RGB_CAPS);
    GstBus *bus = gst_bus_new (), *tbus = gst_bus_new ();
    GstEvent *e;
    gboolean eos = FALSE;

    gst_element_set_bus (h->element, bus);
    gst_element_set_bus (t->element, tbus);
    for (guint i = 0; i < 130; i++) {
      gst_harness_push (h, make_patch (i));
      gst_buffer_unref (gst_harness_pull (h));
    }
    gst_harness_push_event (h, gst_event_new_eos ());
    for (guint i = 0; i < 3; i++)
      gst_harness_push (t, make_patch (i));
    gst_harness_push_event (t, gst_event_new_eos ());
    while (!eos && (e = gst_harness_pull_event (t))) {
      eos = GST_EVENT_TYPE (e) == GST_EVENT_EOS;
      gst_event_unref (e);
    }
    eos = FALSE;
    while (!eos && (e = gst_harness_pull_event (h))) {
      eos = GST_EVENT_TYPE (e) == GST_EVENT_EOS;
      gst_event_unref (e);
    }
    g_usleep (100000);
    /* 2 periodic (64, 128) + the final one */
    fail_unless_equals_int (count_element_messages (bus,
            "segment-fcn-stats", NULL), on ? 3 : 1);
    /* 3 steps (1 each) and an epoch (10) */
    fail_unless_equals_int (count_element_messages (tbus,
            "segment-fcn-train", "segment-fcn-epoch"), on ? 13 : 10);
    gst_element_set_bus (h->element, NULL);
    gst_element_set_bus (t->element, NULL);
    gst_object_unref (bus);
    gst_object_unref (tbus);
    gst_harness_teardown (h);
    gst_harness_teardown (t);
  }
}

GST_END_TEST;

/* A training pipeline without output prerolls (GAP) and reaches PLAYING
 * while it trains, non-live and live (issue 9, point 4). */
GST_START_TEST (test_training_prerolls)
{
  for (gint live = 0; live < 2; live++) {
    gchar *desc = g_strdup_printf ("videotestsrc is-live=%d ! "
        "video/x-raw,format=RGB,width=32,height=32,framerate=30/1 ! "
        "segment-fcn mode=pretrain model=%s threads=1 ! fakesink sync=true",
        live, model_path);
    GstElement *pipeline = gst_parse_launch (desc, NULL);
    GstState state = GST_STATE_NULL;
    GstStateChangeReturn r;

    gst_element_set_state (pipeline, GST_STATE_PLAYING);
    r = gst_element_get_state (pipeline, &state, NULL, 10 * GST_SECOND);
    fail_unless (r == GST_STATE_CHANGE_SUCCESS && state == GST_STATE_PLAYING,
        "%s training pipeline: state %s (%s)", live ? "live" : "non-live",
        gst_element_state_get_name (state),
        gst_element_state_change_return_get_name (r));
    gst_element_set_state (pipeline, GST_STATE_NULL);
    gst_object_unref (pipeline);
    g_free (desc);
  }
}

GST_END_TEST;

/* A training element brought to PAUSED alone: its start() result and the
 * first error (and its code in @code). */
static gchar *
start_training (GstElement * seg, GstStateChangeReturn * ret, gint * code)
{
  GstBus *bus = gst_bus_new ();
  GstMessage *m;
  gchar *text = NULL;

  gst_element_set_bus (seg, bus);
  *ret = gst_element_set_state (seg, GST_STATE_PAUSED);
  if ((m = gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR))) {
    GError *e = NULL;
    gst_message_parse_error (m, &e, NULL);
    text = g_strdup (e->message);
    if (code)
      *code = e->domain == GST_RESOURCE_ERROR ? e->code : -1;
    g_error_free (e);
    gst_message_unref (m);
  }
  gst_element_set_bus (seg, NULL);
  gst_object_unref (bus);
  return text;
}

static GstElement *
new_trainer (const gchar * checkpoint)
{
  GstElement *seg = gst_element_factory_make ("segment-fcn", NULL);

  gst_util_set_object_arg (G_OBJECT (seg), "mode", "pretrain");
  g_object_set (seg, "model", model_path, "checkpoint", checkpoint,
      "threads", 1, NULL);
  return seg;
}

/* Checkpoint problems show at start, not at the first save; one run per
 * checkpoint (lock naming the holder); stale temporary files of killed
 * runs are removed (issue 9, point 14). */
GST_START_TEST (test_checkpoint_checks)
{
  gchar *dir = g_dir_make_tmp ("segfcn-ckpt-XXXXXX", NULL);
  gchar *ckpt = g_build_filename (dir, "c.safetensors", NULL);
  gchar *missing = g_build_filename (dir, "nodir", "c.safetensors", NULL);
  gchar *stale = g_build_filename (dir, ".c.safetensors.AbC123", NULL);
  gchar *other = g_build_filename (dir, ".d.safetensors.AbC123", NULL);
  GstElement *a, *b;
  GstStateChangeReturn ret;
  gchar *err;
  gint code = 0;

  a = new_trainer (missing);
  err = start_training (a, &ret, &code);
  fail_unless (ret == GST_STATE_CHANGE_FAILURE);
  fail_unless (err && strstr (err, "does not exist") && strstr (err, "nodir"),
      "%s", err);
  fail_unless_equals_int (code, GST_RESOURCE_ERROR_NOT_FOUND);
  g_free (err);
  gst_element_set_state (a, GST_STATE_NULL);
  gst_object_unref (a);

  if (geteuid () != 0) {
    gchar *ro = g_build_filename (dir, "ro", NULL), *in_ro;
    g_mkdir (ro, 0500);
    in_ro = g_build_filename (ro, "c.safetensors", NULL);
    a = new_trainer (in_ro);
    err = start_training (a, &ret, &code);
    fail_unless (ret == GST_STATE_CHANGE_FAILURE);
    fail_unless (err && strstr (err, "ermission denied"), "%s", err);
    fail_unless_equals_int (code, GST_RESOURCE_ERROR_OPEN_WRITE);
    g_free (err);
    gst_element_set_state (a, GST_STATE_NULL);
    gst_object_unref (a);
    g_free (in_ro);
    g_free (ro);
  }

  g_file_set_contents (stale, "partial", -1, NULL);
  g_file_set_contents (other, "partial", -1, NULL);
  a = new_trainer (ckpt);
  b = new_trainer (ckpt);
  err = start_training (a, &ret, NULL);
  fail_unless (ret != GST_STATE_CHANGE_FAILURE, "%s", err);
  fail_if (g_file_test (stale, G_FILE_TEST_EXISTS), "stale temp kept");
  fail_unless (g_file_test (other, G_FILE_TEST_EXISTS));
  err = start_training (b, &ret, &code);
  fail_unless (ret == GST_STATE_CHANGE_FAILURE);
  {
    gchar *pid = g_strdup_printf ("pid %d", (gint) getpid ());
    fail_unless (err && strstr (err, "another training run")
        && strstr (err, pid), "%s", err);
    g_free (pid);
  }
  fail_unless_equals_int (code, GST_RESOURCE_ERROR_BUSY);
  g_free (err);
  gst_element_set_state (b, GST_STATE_NULL);
  gst_element_set_state (a, GST_STATE_NULL);
  /* released: the second run may start now */
  err = start_training (b, &ret, NULL);
  fail_unless (ret != GST_STATE_CHANGE_FAILURE, "%s", err);
  gst_element_set_state (b, GST_STATE_NULL);
  gst_object_unref (a);
  gst_object_unref (b);
  g_unlink (other);
  g_free (stale);
  g_free (other);
  g_free (missing);
  g_free (ckpt);
  g_rmdir (dir);
  g_free (dir);
}

GST_END_TEST;

/* The memory guard estimates the engine's activations, not only patch x
 * classes x batch: max-memory=1 MiB refuses 256x256 patches (their arrays
 * alone are 1.5 MiB, the activations several times that). */
GST_START_TEST (test_memory_guard)
{
  expect_caps_error ("max-memory=4194304",
      "video/x-raw,format=RGB,width=256,height=256,framerate=10/1",
      "Not enough memory");
}

GST_END_TEST;

static gpointer
read_classes (gpointer data)
{
  GstElement *seg = data;
  gint *stop = g_object_get_data (G_OBJECT (seg), "stop");

  while (!g_atomic_int_get (stop)) {
    gchar *c = NULL;
    g_object_get (seg, "classes", &c, NULL);
    fail_unless (c == NULL || *c == '\0' || g_str_has_prefix (c, "bg:"));
    g_free (c);
  }
  return NULL;
}

/* "classes" is read from another thread while start/stop load and free the
 * model (ASan: no use after free; issue 9, point 7). */
GST_START_TEST (test_classes_while_stopping)
{
  GstElement *seg = gst_element_factory_make ("segment-fcn", NULL);
  gint stop = 0;
  GThread *reader;

  g_object_set (seg, "model", model_path, "threads", 1, NULL);
  g_object_set_data (G_OBJECT (seg), "stop", &stop);
  reader = g_thread_new ("classes", read_classes, seg);
  for (gint i = 0; i < 20; i++) {
    fail_unless (gst_element_set_state (seg, GST_STATE_PAUSED)
        != GST_STATE_CHANGE_FAILURE);
    gst_element_set_state (seg, GST_STATE_NULL);
  }
  g_atomic_int_set (&stop, 1);
  g_thread_join (reader);
  gst_object_unref (seg);
}

GST_END_TEST;

/* A GRAY8 label patch (all @label) paired with make_patch (i). */
static GstBuffer *
make_label (guint i, guint8 label, guint epoch)
{
  GstBuffer *buf = gst_buffer_new_allocate (NULL, P * P, NULL);
  GstWsiTileMeta *m;

  gst_buffer_memset (buf, 0, label, P * P);
  m = gst_wsi_tile_meta_add (buf);
  gst_wsi_tile_meta_set_slide (m, "synthetic");
  m->x = i * P;
  m->width = m->height = m->valid_width = m->valid_height = P;
  m->col = i;
  m->frame = i;
  m->epoch = epoch;
  return buf;
}

static GstBuffer *
make_patch_epoch (guint i, guint epoch)
{
  GstBuffer *b = make_patch (i);
  gst_buffer_get_wsi_tile_meta (b)->epoch = epoch;
  return b;
}

/* FLUSH_START, FLUSH_STOP (one seqnum, as a flushing seek gives) and a
 * segment on every harness of @hs. */
static void
flush_all (GstHarness ** hs, guint n)
{
  guint32 seq = gst_util_seqnum_next ();
  GstSegment seg;

  gst_segment_init (&seg, GST_FORMAT_TIME);
  for (guint i = 0; i < n; i++) {
    GstEvent *e = gst_event_new_flush_start ();
    gst_event_set_seqnum (e, seq);
    gst_harness_push_event (hs[i], e);
  }
  for (guint i = 0; i < n; i++) {
    GstEvent *e = gst_event_new_flush_stop (TRUE);
    gst_event_set_seqnum (e, seq);
    gst_harness_push_event (hs[i], e);
  }
  for (guint i = 0; i < n; i++)
    gst_harness_push_event (hs[i], gst_event_new_segment (&seg));
}

/* A flush during a validation run (issue 9, point 1): the run is abandoned
 * (its epoch message goes out without validation fields), the pending
 * patches are dropped, and the next run counts only post-flush patches. */
GST_START_TEST (test_flush_resets_training)
{
  GstElement *seg = gst_element_factory_make ("segment-fcn", NULL);
  GstHarness *h[4];
  GstBus *bus = gst_bus_new ();
  GstMessage *m;
  GstEvent *e;
  gboolean eos = FALSE;
  gint epochs = 0, epochs_with_val = 0, runs = 0;
  guint64 val_patches = 0;

  gst_util_set_object_arg (G_OBJECT (seg), "mode", "train");
  g_object_set (seg, "model", model_path, "batch-size", 2, "threads", 1,
      NULL);
  gst_element_set_bus (seg, bus);
  h[0] = gst_harness_new_with_element (seg, "sink", "src");
  h[1] = gst_harness_new_with_element (seg, "annotation", NULL);
  h[2] = gst_harness_new_with_element (seg, "validation", NULL);
  h[3] = gst_harness_new_with_element (seg, "validation_annotation", NULL);
  /* the harness answers latency queries as live: with its test clock the
   * aggregator would wait for a timeout that never comes */
  gst_harness_use_systemclock (h[0]);
  gst_harness_set_src_caps_str (h[0], RGB_CAPS);
  gst_harness_set_src_caps_str (h[2], RGB_CAPS);
  for (guint i = 1; i < 4; i += 2)
    gst_harness_set_src_caps_str (h[i], "video/x-raw,format=GRAY8,"
        "width=32,height=32,framerate=10/1");
  /* the validation pair waits queued while training runs */
  gst_harness_push (h[2], make_patch_epoch (0, 0));
  gst_harness_push (h[3], make_label (0, 1, 0));
  /* epoch 0: one step; the first patch of epoch 1 starts a validation
   * run (GstAggregator calls aggregate when every pad has data: the next
   * training pair lets the run take the queued validation pair) */
  for (guint i = 0; i < 4; i++) {
    gst_harness_push (h[0], make_patch_epoch (i, i / 2));
    gst_harness_push (h[1], make_label (i, i % 2, i / 2));
  }
  {
    /* the run takes the queued pair once it started (after the step and
     * the first patch of epoch 1) */
    GstPad *vpad = gst_element_get_static_pad (seg, "validation");
    gint64 end = g_get_monotonic_time () + 60 * G_USEC_PER_SEC;
    while (gst_aggregator_pad_has_buffer (GST_AGGREGATOR_PAD (vpad))
        && g_get_monotonic_time () < end)
      g_usleep (10000);
    fail_if (gst_aggregator_pad_has_buffer (GST_AGGREGATOR_PAD (vpad)),
        "no validation run started");
    gst_object_unref (vpad);
  }
  flush_all (h, 4);
  /* the sources start over */
  gst_harness_push (h[2], make_patch_epoch (0, 0));
  gst_harness_push (h[3], make_label (0, 1, 0));
  for (guint i = 0; i < 2; i++) {
    gst_harness_push (h[0], make_patch_epoch (i, 0));
    gst_harness_push (h[1], make_label (i, i % 2, 0));
  }
  gst_harness_push_event (h[0], gst_event_new_eos ());
  gst_harness_push_event (h[1], gst_event_new_eos ());
  gst_harness_push (h[2], make_patch_epoch (1, 0));
  gst_harness_push (h[3], make_label (1, 1, 0));
  gst_harness_push_event (h[2], gst_event_new_eos ());
  gst_harness_push_event (h[3], gst_event_new_eos ());
  while (!eos && (e = gst_harness_pull_event (h[0]))) {
    eos = GST_EVENT_TYPE (e) == GST_EVENT_EOS;
    gst_event_unref (e);
  }
  fail_unless (eos);
  while ((m = gst_bus_pop (bus))) {
    const GstStructure *st = gst_message_get_structure (m);
    fail_if (GST_MESSAGE_TYPE (m) == GST_MESSAGE_ERROR);
    if (g_getenv ("SEGFCN_DEBUG_MSGS") && st) {
      gchar *t = gst_structure_to_string (st);
      g_printerr ("%s: %s\n", GST_MESSAGE_TYPE_NAME (m), t);
      g_free (t);
    }
    if (st && gst_structure_has_name (st, "segment-fcn-epoch")) {
      epochs++;
      epochs_with_val += gst_structure_has_field (st, "validation-loss");
    } else if (st && gst_structure_has_name (st, "segment-fcn-validation")) {
      runs++;
      gst_structure_get_uint64 (st, "patches", &val_patches);
    }
    gst_message_unref (m);
  }
  /* the abandoned run's epoch without validation; the final one with it */
  fail_unless_equals_int (epochs, 2);
  fail_unless_equals_int (epochs_with_val, 1);
  fail_unless_equals_int (runs, 1);
  fail_unless_equals_uint64 (val_patches, 2);
  for (guint i = 0; i < 4; i++)
    gst_harness_teardown (h[i]);
  gst_element_set_bus (seg, NULL);
  gst_object_unref (bus);
  gst_object_unref (seg);
}

GST_END_TEST;

/* Issue 10: class names travel in-band (a wsi-classes sticky event), so
 * stitchsink names its GeoJSON objects after the model's classes even when
 * segment-fcn sits in a bin behind ghost pads and a queue (the old upstream
 * property walk stopped at the bin). */
GST_START_TEST (test_classes_in_band_through_bin)
{
  GstElement *pipe = gst_pipeline_new (NULL);
  GstElement *src = gst_element_factory_make ("appsrc", NULL);
  GstElement *bin = gst_bin_new ("segbin");
  GstElement *seg = gst_element_factory_make ("segment-fcn", NULL);
  GstElement *q = gst_element_factory_make ("queue", NULL);
  GstElement *sink = gst_element_factory_make ("stitchsink", NULL);
  gchar *dir = g_dir_make_tmp ("segfcn-bin-XXXXXX", NULL);
  gchar *png = g_build_filename (dir, "m.png", NULL);
  gchar *gj = g_build_filename (dir, "m.geojson", NULL);
  gchar *json = NULL;
  GstCaps *caps = gst_caps_from_string (RGB_CAPS);
  GstPad *pad;
  GstBus *bus;
  GstMessage *msg;

  fail_unless (sink != NULL);
  g_object_set (seg, "model", model_path, NULL);
  g_object_set (src, "caps", caps, "format", GST_FORMAT_TIME, NULL);
  g_object_set (sink, "location", png, "geojson-location", gj,
      "geojson-min-area", (guint64) 1, NULL);
  gst_caps_unref (caps);
  gst_bin_add (GST_BIN (bin), seg);
  pad = gst_element_get_static_pad (seg, "sink");
  gst_element_add_pad (bin, gst_ghost_pad_new ("sink", pad));
  gst_object_unref (pad);
  pad = gst_element_get_static_pad (seg, "src");
  gst_element_add_pad (bin, gst_ghost_pad_new ("src", pad));
  gst_object_unref (pad);
  gst_bin_add_many (GST_BIN (pipe), src, bin, q, sink, NULL);
  fail_unless (gst_element_link_many (src, bin, q, sink, NULL));
  bus = gst_element_get_bus (pipe);
  fail_unless (gst_element_set_state (pipe, GST_STATE_PLAYING) !=
      GST_STATE_CHANGE_FAILURE);
  /* a 4 x 2 grid of 32 px patches: a 128 x 64 region */
  for (guint i = 0; i < 8; i++) {
    GstBuffer *buf = make_patch_sized (i, P);
    GstWsiTileMeta *m = gst_buffer_get_wsi_tile_meta (buf);
    m->downsample = 1.0;
    m->col = i % 4;
    m->row = i / 4;
    m->x = m->col * P;
    m->y = m->row * P;
    m->grid_cols = 4;
    m->grid_rows = 2;
    m->region_width = m->slide_width = 4 * P;
    m->region_height = m->slide_height = 2 * P;
    fail_unless_equals_int (gst_app_src_push_buffer (GST_APP_SRC (src), buf),
        GST_FLOW_OK);
  }
  gst_app_src_end_of_stream (GST_APP_SRC (src));
  msg = gst_bus_timed_pop_filtered (bus, 60 * GST_SECOND,
      GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
  fail_unless (msg && GST_MESSAGE_TYPE (msg) == GST_MESSAGE_EOS,
      "no EOS");
  gst_message_unref (msg);
  gst_element_set_state (pipe, GST_STATE_NULL);
  fail_unless (g_file_get_contents (gj, &json, NULL, NULL));
  fail_unless (strstr (json, "\"classification\""), "no objects: %.300s",
      json);
  fail_unless (strstr (json, "\"nucleus\"") || strstr (json, "\"edge\""),
      "model's class names not used: %.300s", json);
  fail_if (strstr (json, "\"class 1\"") || strstr (json, "\"class 2\""),
      "default class names used: %.300s", json);
  g_free (json);
  g_unlink (png);
  g_unlink (gj);
  g_rmdir (dir);
  g_free (png);
  g_free (gj);
  g_free (dir);
  gst_object_unref (bus);
  gst_object_unref (pipe);
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
  tcase_add_test (tc, test_latency_property_kept);
  tcase_add_test (tc, test_training_enums);
  tcase_add_test (tc, test_post_messages_gate);
  tcase_add_test (tc, test_training_prerolls);
  tcase_add_test (tc, test_checkpoint_checks);
  tcase_add_test (tc, test_memory_guard);
  tcase_add_test (tc, test_classes_while_stopping);
  tcase_add_test (tc, test_flush_resets_training);
  tcase_add_test (tc, test_classes_in_band_through_bin);
  return s;
}

GST_CHECK_MAIN (segment_fcn);
