/* Conformance: segment-maskrcnn (docs/conformance.md), in inference and in
 * training (mode=train through gst-launch, as segment-fcn's). The
 * model is the small random Mask R-CNN of the element's tests (sides must
 * be multiples of 32). */
#include "conformance.h"

#include "../segment-maskrcnn/mrcnn-test-model.h"

#define P 64

static gchar *tmp_dir, *model_path;

/* A harness around segment-maskrcnn (@bus: conf_harness_new). */
static GstHarness *
new_harness_bus (const gchar * props, gint size, GstBus ** bus)
{
  gchar *desc = g_strdup_printf ("segment-maskrcnn name=seg model=%s "
      "threads=1 score-threshold=0.0 %s", model_path, props);
  GstHarness *h = conf_harness_new (desc, size, bus);

  g_free (desc);
  return h;
}

static GstHarness *
new_harness (const gchar * props, gint size)
{
  return new_harness_bus (props, size, NULL);
}

/* A GRAY16 label patch of @size pulled from @h. */
static gboolean
pull_label (GstHarness * h, gint size)
{
  return conf_pull_sized (h, (gsize) size * size * 2);
}

/* ------------------------------------------------------------ situations */

static void
check_flushing_seek (void)
{
  gchar *desc = g_strdup_printf ("videotestsrc num-buffers=40 ! "
      "video/x-raw,format=RGB,width=64,height=64,framerate=100/1 ! "
      "segment-maskrcnn model=%s batch-size=4 threads=1 ! "
      "fakesink sync=true", model_path);
  gchar *err = conf_run_pipeline (desc, 0.3, 120), *err2, *ckpt;
  gchar *img = g_build_filename (tmp_dir, "img.png", NULL);
  gchar *mask = g_build_filename (tmp_dir, "inst.png", NULL);

  g_free (desc);
  /* mode=train with image + instance annotation branches (the bars of
   * smpte are the instances, white = 65535 = ignore) */
  conf_write_png (img, "smpte", "RGB", 128);
  conf_write_png (mask, "smpte", "GRAY16_BE", 128);
  ckpt = g_build_filename (tmp_dir, "seek.safetensors", NULL);
  desc = g_strdup_printf ("slidesrc location=%s loop=6 ! patchify "
      "patch-size=64 ! tee name=t t. ! queue ! colornorm mode=rescale01 ! "
      "seg.sink t. ! queue ! labelpatch masks=%s instance-mode=instances ! "
      "seg.annotation segment-maskrcnn name=seg mode=train model=%s "
      "threads=1 checkpoint=%s batch-size=2 optimizer=adam "
      "learning-rate=0.0001 ! fakesink", img, mask,
      model_path, ckpt);
  err2 = conf_run_pipeline (desc, 0.3, 300);
  conf_result ("flushing-seek", !err && !err2, "inference: %s; train: %s",
      err ? err : "EOS after seek", err2 ? err2 :
      "EOS (slidesrc cannot seek: the seek is refused, streaming goes on)");
  g_free (err);
  g_free (err2);
  g_free (desc);
  g_free (ckpt);
  g_free (img);
  g_free (mask);
}

static void
check_flush (void)
{
  GstHarness *h = new_harness ("batch-size=4", P);
  gboolean ok;
  guint n_out = 0;
  GstBuffer *b;

  /* a partial batch before the flush is dropped, not pushed after it */
  for (guint i = 0; i < 2; i++)
    gst_harness_push (h, conf_rgb_patch (P, P, i, TRUE, i * P, 0));
  ok = conf_push_flush (h);
  conf_drain (h);
  for (guint i = 0; i < 4; i++)
    ok &= gst_harness_push (h, conf_rgb_patch (P, P, 10 + i, TRUE, i * P,
            0)) == GST_FLOW_OK;
  gst_harness_push_event (h, gst_event_new_eos ());
  while (n_out < 4 && (b = gst_harness_pull (h))) {
    n_out++;
    gst_buffer_unref (b);
  }
  g_usleep (200000);
  while ((b = gst_harness_try_pull (h))) {
    n_out++;
    gst_buffer_unref (b);
  }
  conf_result ("flush", ok && n_out == 4, "inference: %u patches out after "
      "the flush (want 4)", n_out);
  gst_harness_teardown (h);
}

static void
check_eos_no_data (void)
{
  GstHarness *h = new_harness ("", P);
  gboolean eos;

  gst_harness_push_event (h, gst_event_new_eos ());
  conf_wait_eos (h, NULL, &eos);
  eos &= gst_harness_buffers_in_queue (h) == 0;
  conf_result ("eos-no-data", eos, "inference EOS %s", eos ? "forwarded" :
      "MISSING");
  gst_harness_teardown (h);
}

typedef struct
{
  GstHarness *h;
  guint seq;
  gboolean bad;
} PumpData;

static void
pump (gpointer user_data)
{
  PumpData *d = user_data;
  GstBuffer *out;

  gst_harness_push (d->h, conf_rgb_patch (P, P, d->seq++, TRUE, 0, 0));
  out = gst_harness_pull (d->h);
  if (!out || gst_buffer_get_size (out) != P * P * 2)
    d->bad = TRUE;
  gst_clear_buffer (&out);
}

static void
check_props_playing (void)
{
  GstHarness *h = new_harness ("", P);
  GstElement *seg = gst_bin_get_by_name (GST_BIN (h->element), "seg");
  PumpData d = { h, 0, FALSE };
  const gchar *strings[] = { "model=/nonexistent.safetensors", NULL };
  gint bad;

  pump (&d);
  bad = conf_props_while_playing (seg, NULL, strings, pump, &d);
  if (d.bad)
    conf_result ("props-playing", FALSE, "an output went missing or had the "
        "wrong size while properties changed");
  else if (!bad)
    g_print ("  (score-threshold and nms-iou applied between batches)\n");
  gst_object_unref (seg);
  gst_harness_teardown (h);
}

static void
check_renegotiation (void)
{
  GstHarness *h = new_harness ("batch-size=3", P);
  gboolean ok;

  /* 64 -> 128 -> 64 with partial batches pending */
  gst_harness_push (h, conf_rgb_patch (P, P, 0, TRUE, 0, 0));
  gst_harness_set_src_caps_str (h, "video/x-raw,format=RGB,width=128,"
      "height=128,framerate=0/1");
  gst_harness_push (h, conf_rgb_patch (128, 128, 1, TRUE, 0, 0));
  gst_harness_set_src_caps_str (h, "video/x-raw,format=RGB,width=64,"
      "height=64,framerate=0/1");
  gst_harness_push (h, conf_rgb_patch (P, P, 2, TRUE, 0, 0));
  gst_harness_push_event (h, gst_event_new_eos ());
  ok = pull_label (h, P) && pull_label (h, 128) && pull_label (h, P);
  conf_result ("renegotiation", ok, "inference 64->128->64: %s",
      ok ? "sizes follow the caps" : "WRONG sizes");
  gst_harness_teardown (h);
}

/* One patch of @size: TRUE with an output of that size, else the errors
 * (@domain/@code: of the one containing @needle). */
static gboolean
try_size (gint size, const gchar * needle, gchar ** error, GQuark * domain,
    gint * code)
{
  GstBus *bus;
  GstHarness *h = new_harness_bus ("", size, &bus);
  gboolean ok;

  *error = NULL;
  if (needle) {
    /* refused at the caps: the buffer's content does not matter */
    gst_harness_push (h, conf_rgb_patch (4, 4, 1, TRUE, 0, 0));
    *error = conf_bus_error_matching (bus, 2 * GST_SECOND, needle, domain, code);
    ok = FALSE;
  } else {
    gst_harness_push (h, conf_rgb_patch (size, size, 1, TRUE, 0, 0));
    ok = pull_label (h, size);
    if (!ok)
      *error = conf_bus_error_matching (bus, GST_SECOND, NULL, domain, code);
  }
  conf_detach_bus (h, bus);
  gst_harness_teardown (h);
  return ok;
}

static void
check_odd_sizes (void)
{
  const gint accepted[] = { 32, 96 };

  conf_check_odd_sizes (try_size, 32, accepted, G_N_ELEMENTS (accepted));
}

static void
check_no_tile_meta (void)
{
  GstHarness *h = new_harness ("", P);
  GstBuffer *out;
  gboolean ok;

  gst_harness_push (h, conf_rgb_patch (P, P, 0, FALSE, 0, 0));
  out = gst_harness_pull (h);
  ok = out && gst_buffer_get_size (out) == P * P * 2
      && !gst_buffer_get_wsi_tile_meta (out);
  gst_clear_buffer (&out);
  conf_result ("no-tile-meta", ok, "inference: %s", ok ?
      "label patch without meta" : "BROKEN");
  gst_harness_teardown (h);
}

static void
check_zero_area (void)
{
  GstBus *bus, *zbus;
  GstHarness *h = new_harness_bus ("", P, &bus);
  GstHarness *z;
  gchar *err, *zerr, *desc;
  GQuark dom = 0, zdom = 0;

  /* an empty buffer under 64x64 caps: an error, no crash */
  gst_harness_push (h, gst_buffer_new ());
  err = conf_bus_error_matching (bus, GST_SECOND, NULL, &dom, NULL);
  conf_detach_bus (h, bus);
  gst_harness_teardown (h);
  /* a 0x0 tensor: refused at negotiation */
  desc = g_strdup_printf ("segment-maskrcnn model=%s", model_path);
  z = gst_harness_new_parse (desc);
  g_free (desc);
  zbus = gst_bus_new ();
  gst_element_set_bus (z->element, zbus);
  gst_harness_set_src_caps_str (z, "other/tensors,format=static,"
      "num_tensors=1,types=float32,dimensions=3:0:0:1,framerate=0/1");
  gst_harness_push (z, gst_buffer_new ());
  zerr = conf_bus_error_matching (zbus, GST_SECOND, NULL, &zdom, NULL);
  conf_detach_bus (z, zbus);
  gst_harness_teardown (z);
  conf_result ("zero-area", err && dom == GST_STREAM_ERROR && zerr
      && zdom == GST_STREAM_ERROR, "empty buffer under 64x64 caps: %s; "
      "0x0 tensor caps: %s", err ? err : "NO error", zerr ? zerr : "NO error");
  g_free (err);
  g_free (zerr);
}

int
main (int argc, char **argv)
{
  gchar err[512] = "";

  conf_init (&argc, &argv, "segment-maskrcnn");
  tmp_dir = g_dir_make_tmp ("conf-segmrcnn-XXXXXX", NULL);
  model_path = g_build_filename (tmp_dir, "maskrcnn.safetensors", NULL);
  if (!mrcnn_test_model_write (model_path, 3, 5, err, sizeof err))
    g_error ("writing the test model: %s", err);

  {
    const ConfChecks checks = {
      check_flushing_seek, check_flush, check_eos_no_data,
      check_props_playing, check_renegotiation, check_odd_sizes,
      check_no_tile_meta, check_zero_area
    };
    conf_run_checks (&checks);
  }
  conf_remove_dir (tmp_dir);
  return conf_finish ();
}
