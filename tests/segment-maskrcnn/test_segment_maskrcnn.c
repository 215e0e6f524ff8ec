/* segment-maskrcnn harness tests: instance label patches and detection
 * metas, batching, thresholds, tensor input, live batch timeout, bad model
 * files and caps. The model is a small random Mask R-CNN written with
 * models/maskrcnn's saver (mrcnn-test-model.h). Output equal to torchvision:
 * test_parity.py. */
#include <gst/check/gstcheck.h>
#include <gst/check/gstharness.h>
#include <gst/app/gstappsink.h>
#include <gst/video/video.h>
#include <glib/gstdio.h>
#include <string.h>

#include "gstwsiclasses.h"
#include "gstwsidetection.h"
#include "gstwsitilemeta.h"
#include "mrcnn-test-model.h"
#include "../segment/segment-tests.h"

#define P 64

static gchar *tmp_dir, *model_path;

static GstBuffer *
make_patch_sized (guint i, gint size)
{
  GstBuffer *buf = gst_buffer_new_allocate (NULL, (gsize) size * size * 3,
      NULL);
  GstMapInfo map;
  GstWsiTileMeta *m;

  gst_buffer_map (buf, &map, GST_MAP_WRITE);
  /* a few bright discs on a dark textured background */
  for (gint y = 0; y < size; y++)
    for (gint x = 0; x < size; x++) {
      guint8 *px = map.data + ((gsize) y * size + x) * 3;
      gint cx = (gint) ((i * 23 + 17) % size), cy = (gint) ((i * 41 + 29)
          % size);
      gboolean disc = (x - cx) * (x - cx) + (y - cy) * (y - cy) < 64;
      for (gint c = 0; c < 3; c++)
        px[c] = disc ? 220 - 30 * c : (guint8) ((x * 7 + y * 13 + i * 31
                + c * 5) % 90);
    }
  gst_buffer_unmap (buf, &map);
  GST_BUFFER_PTS (buf) = i * GST_SECOND / 10;
  GST_BUFFER_DURATION (buf) = GST_SECOND / 10;
  m = gst_wsi_tile_meta_add (buf);
  gst_wsi_tile_meta_set_slide (m, "synthetic");
  m->x = (gint64) i * size;
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

#define RGB_CAPS "video/x-raw,format=RGB,width=64,height=64,framerate=10/1"

static GstHarness *
new_harness (const gchar * props, const gchar * in_caps)
{
  gchar *desc = g_strdup_printf ("segment-maskrcnn name=seg model=%s "
      "threads=1 %s", model_path, props);
  GstHarness *h = gst_harness_new_parse (desc);

  g_free (desc);
  gst_harness_set_src_caps_str (h, in_caps);
  return h;
}

/* Checks one output: GRAY16 P x P, ids 1..N each painted and each with one
 * detection meta (scores non-increasing with the id, class 1..2, box in the
 * patch). Returns N. */
static guint
check_output (GstBuffer * out, gint size)
{
  GstWsiDetection table[1024];
  guint n_meta, n_out = 0, max_id = 0;
  gboolean seen[1024] = { FALSE };
  GstMapInfo map;

  fail_unless_equals_int (gst_buffer_get_size (out), size * size * 2);
  gst_buffer_map (out, &map, GST_MAP_READ);
  for (gint k = 0; k < size * size; k++) {
    guint v = GST_READ_UINT16_LE (map.data + 2 * k);
    fail_unless (v < 1024);
    seen[v] = TRUE;
    max_id = MAX (max_id, v);
  }
  gst_buffer_unmap (out, &map);
  n_meta = gst_wsi_detection_fill_table (out, table, 1024, &n_out);
  fail_unless_equals_int (n_out, 0);
  fail_unless_equals_int (n_meta, max_id);
  for (guint id = 1; id <= max_id; id++) {
    fail_unless (seen[id], "id %u has no pixel", id);
    fail_unless_equals_int (table[id].instance_id, id);
    fail_unless (table[id].class_id >= 1 && table[id].class_id <= 2);
    fail_unless (table[id].class_quark == g_quark_from_string
        (table[id].class_id == 1 ? "nucleus" : "other"));
    fail_unless (table[id].score >= 0 && table[id].score <= 1);
    if (id > 1)
      fail_unless (table[id].score <= table[id - 1].score);
    fail_unless (table[id].x + table[id].w <= (guint) size
        && table[id].y + table[id].h <= (guint) size);
  }
  return max_id;
}

static gboolean
buffers_equal (GstBuffer * a, GstBuffer * b)
{
  GstMapInfo ma, mb;
  gboolean eq;

  gst_buffer_map (a, &ma, GST_MAP_READ);
  gst_buffer_map (b, &mb, GST_MAP_READ);
  eq = ma.size == mb.size && memcmp (ma.data, mb.data, ma.size) == 0;
  gst_buffer_unmap (a, &ma);
  gst_buffer_unmap (b, &mb);
  return eq;
}

GST_START_TEST (test_labels_caps_metas)
{
  GstHarness *h = new_harness ("score-threshold=0.0", RGB_CAPS);
  GstCaps *caps;
  GstStructure *s;
  GstEvent *ev;
  gboolean classes_seen = FALSE, instances_seen = FALSE;
  guint total = 0;

  for (guint i = 0; i < 3; i++)
    fail_unless_equals_int (gst_harness_push (h, make_patch (i)),
        GST_FLOW_OK);
  for (guint i = 0; i < 3; i++) {
    GstBuffer *out = gst_harness_pull (h);
    GstWsiTileMeta *m = gst_buffer_get_wsi_tile_meta (out);
    fail_unless (m != NULL);
    fail_unless_equals_int (m->frame, i);
    fail_unless_equals_int (m->x, i * P);
    fail_unless_equals_uint64 (GST_BUFFER_PTS (out), i * GST_SECOND / 10);
    total += check_output (out, P);
    gst_buffer_unref (out);
  }
  fail_unless (total > 0, "the random model detected nothing at score 0");
  caps = gst_pad_get_current_caps (h->sinkpad);
  s = gst_caps_get_structure (caps, 0);
  fail_unless_equals_string (gst_structure_get_string (s, "format"),
      "GRAY16_LE");
  gst_caps_unref (caps);
  /* the class names in-band, before the first buffer */
  while ((ev = gst_harness_try_pull_event (h))) {
    gchar **names = NULL;
    guint32 *colors = NULL;
    guint n = 0;
    if (gst_wsi_classes_event_parse (ev, &names, &colors, &n)) {
      classes_seen = TRUE;
      fail_unless_equals_int (n, 3);
      fail_unless_equals_string (names[1], "nucleus");
      fail_unless_equals_int (colors[1], 0x00c800);
      g_strfreev (names);
      g_free (colors);
    }
    instances_seen |= gst_event_has_name (ev, GST_WSI_INSTANCES_EVENT);
    gst_event_unref (ev);
  }
  fail_unless (classes_seen);
  fail_unless (instances_seen, "no wsi-instances event for stitchsink");
  gst_harness_teardown (h);
}

GST_END_TEST;

/* A batch of 3 gives what three batches of 1 give. */
GST_START_TEST (test_batch_equals_single)
{
  GstHarness *one = new_harness ("score-threshold=0.0", RGB_CAPS);
  GstHarness *three = new_harness ("score-threshold=0.0 batch-size=3",
      RGB_CAPS);

  for (guint i = 0; i < 3; i++) {
    gst_harness_push (one, make_patch (i));
    gst_harness_push (three, make_patch (i));
  }
  for (guint i = 0; i < 3; i++) {
    GstBuffer *a = gst_harness_pull (one), *b = gst_harness_pull (three);
    fail_unless (buffers_equal (a, b), "patch %u differs in a batch", i);
    fail_unless_equals_int (check_output (a, P), check_output (b, P));
    gst_buffer_unref (a);
    gst_buffer_unref (b);
  }
  gst_harness_teardown (one);
  gst_harness_teardown (three);
}

GST_END_TEST;

/* score-threshold 1 keeps nothing; max-detections bounds the ids; the
 * threshold may change while playing. */
GST_START_TEST (test_thresholds)
{
  GstHarness *h = new_harness ("score-threshold=0.0 max-detections=3",
      RGB_CAPS);
  GstElement *seg = gst_bin_get_by_name (GST_BIN (h->element), "seg");
  GstBuffer *out;
  guint n;

  gst_harness_push (h, make_patch (0));
  out = gst_harness_pull (h);
  n = check_output (out, P);
  fail_unless (n >= 1 && n <= 3, "%u instances", n);
  gst_buffer_unref (out);
  g_object_set (seg, "score-threshold", 1.0, NULL);
  gst_harness_push (h, make_patch (0));
  out = gst_harness_pull (h);
  fail_unless_equals_int (check_output (out, P), 0);
  fail_unless (gst_buffer_get_meta (out,
          GST_VIDEO_REGION_OF_INTEREST_META_API_TYPE) == NULL);
  gst_buffer_unref (out);
  gst_object_unref (seg);
  gst_harness_teardown (h);
}

GST_END_TEST;

/* colornorm's tensors (rescale01: x / 255) give what RGB gives. */
GST_START_TEST (test_tensor_input)
{
  GstHarness *rgb = new_harness ("score-threshold=0.0", RGB_CAPS);
  GstHarness *ten = new_harness ("score-threshold=0.0",
      "other/tensors,format=static,num_tensors=1,types=float32,"
      "dimensions=3:64:64:1,framerate=10/1");
  GstBuffer *patch = make_patch (1), *tensor, *a, *b;
  GstMapInfo in, map;
  gfloat *f;

  tensor = gst_buffer_new_allocate (NULL, P * P * 3 * sizeof (gfloat), NULL);
  gst_buffer_map (patch, &in, GST_MAP_READ);
  gst_buffer_map (tensor, &map, GST_MAP_WRITE);
  f = (gfloat *) map.data;
  for (gsize k = 0; k < P * P * 3; k++)
    f[k] = in.data[k] / 255.0f;
  gst_buffer_unmap (tensor, &map);
  gst_buffer_unmap (patch, &in);
  gst_harness_push (rgb, patch);
  gst_harness_push (ten, tensor);
  a = gst_harness_pull (rgb);
  b = gst_harness_pull (ten);
  fail_unless (buffers_equal (a, b));
  fail_unless_equals_int (check_output (a, P), check_output (b, P));
  gst_buffer_unref (a);
  gst_buffer_unref (b);
  gst_harness_teardown (rgb);
  gst_harness_teardown (ten);
}

GST_END_TEST;

/* A live stream: a partial batch goes out once batch-timeout expires. */
GST_START_TEST (test_live_batch_timeout)
{
  gchar *element = g_strdup_printf ("segment-maskrcnn model=%s threads=1",
      model_path);

  segment_check_live_batch_timeout (element, P);
  g_free (element);
}

GST_END_TEST;

/* Pushes one patch with @model under @caps and expects an error of
 * @domain / @code containing @needle. */
static void
expect_error (const gchar * props, const gchar * caps, const gchar * needle,
    GQuark domain, gint code)
{
  gchar *desc = g_strdup_printf ("segment-maskrcnn name=seg model=%s "
      "threads=1 %s", model_path, props);
  GstHarness *h = gst_harness_new_parse (desc);
  GstBus *bus = gst_bus_new ();
  GstMessage *msg;
  gboolean found = FALSE;
  GString *all = g_string_new (NULL);

  /* the bus first: setting the caps sends them at once */
  gst_element_set_bus (h->element, bus);
  gst_harness_set_src_caps_str (h, caps);
  g_free (desc);
  gst_harness_push (h, make_patch (0));
  while ((msg = gst_bus_timed_pop_filtered (bus, 2 * GST_SECOND,
              GST_MESSAGE_ERROR))) {
    GError *err = NULL;
    gst_message_parse_error (msg, &err, NULL);
    g_string_append_printf (all, "%s\n", err->message);
    found |= strstr (err->message, needle) != NULL && err->domain == domain
        && err->code == code;
    g_error_free (err);
    gst_message_unref (msg);
  }
  fail_unless (found, "wanted '%s', got: %s", needle, all->str);
  g_string_free (all, TRUE);
  gst_element_set_bus (h->element, NULL);
  gst_object_unref (bus);
  gst_harness_teardown (h);
}

/* Starts an element with @model and expects the state change to fail with
 * an error of @domain / @code containing @needle. */
static void
expect_start_error_mode (const gchar * model, gint mode, const gchar * needle,
    GQuark domain, gint code)
{
  GstElement *el = gst_element_factory_make ("segment-maskrcnn", NULL);
  GstBus *bus = gst_bus_new ();
  GstMessage *msg;
  GError *err = NULL;

  fail_unless (el != NULL);
  gst_element_set_bus (el, bus);
  g_object_set (el, "model", model, "mode", mode, NULL);
  fail_unless (gst_element_set_state (el, GST_STATE_PAUSED) ==
      GST_STATE_CHANGE_FAILURE);
  msg = gst_bus_pop_filtered (bus, GST_MESSAGE_ERROR);
  fail_unless (msg != NULL, "no error for model %s", model);
  gst_message_parse_error (msg, &err, NULL);
  fail_unless (strstr (err->message, needle) && err->domain == domain
      && err->code == code, "wanted '%s', got: %s", needle, err->message);
  g_error_free (err);
  gst_message_unref (msg);
  gst_element_set_state (el, GST_STATE_NULL);
  gst_element_set_bus (el, NULL);
  gst_object_unref (bus);
  gst_object_unref (el);
}

static void
expect_start_error (const gchar * model, const gchar * needle, GQuark domain,
    gint code)
{
  expect_start_error_mode (model, 0, needle, domain, code);
}

GST_START_TEST (test_bad_model_files)
{
  gchar *garbage = g_build_filename (tmp_dir, "garbage.safetensors", NULL);
  gchar *mismatch = g_build_filename (tmp_dir, "mismatch.safetensors", NULL);
  gchar *missing = g_build_filename (tmp_dir, "missing.safetensors", NULL);
  gchar err[512] = "";
  WsiMrcnnModelInfo mi;
  wsimrcnn *m;
  gchar **meta;

  expect_start_error (NULL, "No model file", GST_RESOURCE_ERROR,
      GST_RESOURCE_ERROR_SETTINGS);
  expect_start_error (missing, "does not exist", GST_RESOURCE_ERROR,
      GST_RESOURCE_ERROR_NOT_FOUND);
  expect_start_error (tmp_dir, "is a directory", GST_RESOURCE_ERROR,
      GST_RESOURCE_ERROR_OPEN_READ);
  fail_unless (g_file_set_contents (garbage, "not a model", -1, NULL));
  expect_start_error (garbage, "not a model file", GST_STREAM_ERROR,
      GST_STREAM_ERROR_DECODE);
  /* a file whose metadata says 3 classes over the tensors of 2 */
  m = wsimrcnn_load (model_path, &mi, err, sizeof err);
  fail_unless (m != NULL, "%s", err);
  wsimrcnn_free (m);
  mi.cfg.spec.n_classes = 2;
  m = wsimrcnn_new (&mi.cfg, err, sizeof err);
  fail_unless (m != NULL, "%s", err);
  for (gint i = 0; i < 3; i++)
    wsinn_net_init_params (wsimrcnn_net (m, i), 9);
  mi.cfg.spec.n_classes = 3;
  meta = wsimrcnn_metadata_new (&mi, NULL);
  fail_unless (wsimrcnn_save (m, mismatch, (const char *const *) meta, NULL,
          0, err, sizeof err) == 0, "%s", err);
  g_strfreev (meta);
  wsimrcnn_free (m);
  wsimrcnn_model_info_clear (&mi);
  expect_start_error (mismatch, "cls_score.weight has shape",
      GST_STREAM_ERROR, GST_STREAM_ERROR_DECODE);
  g_unlink (garbage);
  g_unlink (mismatch);
  g_free (garbage);
  g_free (mismatch);
  g_free (missing);
}

GST_END_TEST;

GST_START_TEST (test_bad_caps)
{
  expect_error ("", "video/x-raw,format=RGB,width=48,height=64,"
      "framerate=0/1", "multiples of 32", GST_STREAM_ERROR,
      GST_STREAM_ERROR_FORMAT);
  expect_error ("", "other/tensors,format=static,num_tensors=1,"
      "types=float32,dimensions=1:64:64:1,framerate=0/1", "3:W:H:1",
      GST_STREAM_ERROR, GST_STREAM_ERROR_FORMAT);
  expect_error ("max-memory=1048576", RGB_CAPS,
      "max-memory", GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_NO_SPACE_LEFT);
}

GST_END_TEST;

static Suite *
segment_maskrcnn_suite (void)
{
  Suite *s = suite_create ("segment-maskrcnn");
  TCase *tc = tcase_create ("inference");
  gchar err[512] = "";

  tmp_dir = g_dir_make_tmp ("segmrcnn-XXXXXX", NULL);
  model_path = g_build_filename (tmp_dir, "maskrcnn.safetensors", NULL);
  if (!mrcnn_test_model_write (model_path, 3, 5, err, sizeof err))
    g_error ("writing the test model: %s", err);
  tcase_set_timeout (tc, 120);
  suite_add_tcase (s, tc);
  tcase_add_test (tc, test_labels_caps_metas);
  tcase_add_test (tc, test_batch_equals_single);
  tcase_add_test (tc, test_thresholds);
  tcase_add_test (tc, test_tensor_input);
  tcase_add_test (tc, test_live_batch_timeout);
  tcase_add_test (tc, test_bad_model_files);
  tcase_add_test (tc, test_bad_caps);
  return s;
}

GST_CHECK_MAIN (segment_maskrcnn);
