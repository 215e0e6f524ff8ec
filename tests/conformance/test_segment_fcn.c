/* Conformance: segment-fcn (docs/conformance.md), in inference and in
 * training (mode=train through gst-launch, mode=pretrain through
 * GstHarness: one sink pad). The model is a depth-2 U-Net written here
 * (sides must be multiples of 4). */
#include "conformance.h"

#include <glib/gstdio.h>

#include "safetensors.h"
#include "wsinn.h"

static gchar *tmp_dir, *model_path;

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
  g_assert (net);
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

/* A harness around segment-fcn (@bus: conf_harness_new). */
static GstHarness *
new_harness_bus (const gchar * props, gint size, GstBus ** bus)
{
  gchar *desc = g_strdup_printf ("segment-fcn name=seg model=%s threads=1 %s",
      model_path, props);
  GstHarness *h = conf_harness_new (desc, size, bus);

  g_free (desc);
  return h;
}

static GstHarness *
new_harness (const gchar * props, gint size)
{
  return new_harness_bus (props, size, NULL);
}

static GstElement *
harness_seg (GstHarness * h)
{
  return gst_bin_get_by_name (GST_BIN (h->element), "seg");
}

/* Bus messages of the harness' element, collected by a private bus. */
static GstBus *
attach_bus (GstHarness * h)
{
  GstBus *bus = gst_bus_new ();
  gst_element_set_bus (h->element, bus);
  return bus;
}

static gchar *
bus_error (GstBus * bus, GstClockTime wait, GQuark * domain, gint * code)
{
  return conf_bus_error_matching (bus, wait, NULL, domain, code);
}

/* Element messages named @name on @bus (drained), and the last one's
 * "batch" field in @last_batch. */
static gint
count_messages (GstBus * bus, const gchar * name, guint * last_batch)
{
  GstMessage *m;
  gint n = 0;

  while ((m = gst_bus_pop_filtered (bus, GST_MESSAGE_ELEMENT))) {
    const GstStructure *s = gst_message_get_structure (m);
    if (s && gst_structure_has_name (s, name)) {
      n++;
      if (last_batch)
        gst_structure_get_uint (s, "batch", last_batch);
    }
    gst_message_unref (m);
  }
  return n;
}

/* ------------------------------------------------------------ situations */

static void
check_flushing_seek (void)
{
  gchar *desc, *err, *err2, *err3, *ckpt;
  gchar *img = g_build_filename (tmp_dir, "img.png", NULL);
  gchar *mask = g_build_filename (tmp_dir, "mask.png", NULL);

  desc = g_strdup_printf ("videotestsrc num-buffers=150 ! "
      "video/x-raw,format=RGB,width=32,height=32,framerate=100/1 ! "
      "segment-fcn model=%s batch-size=4 threads=1 ! fakesink sync=true",
      model_path);
  err = conf_run_pipeline (desc, 0.3, 60);
  g_free (desc);
  /* training without output: the seek flushes a pending batch */
  desc = g_strdup_printf ("videotestsrc num-buffers=60 ! "
      "video/x-raw,format=RGB,width=32,height=32,framerate=100/1 ! "
      "segment-fcn mode=pretrain model=%s batch-size=4 threads=1 ! "
      "fakesink sync=true", model_path);
  err2 = conf_run_pipeline (desc, 0.3, 120);
  g_free (desc);
  /* mode=train with image + annotation branches */
  conf_write_png (img, "smpte", "RGB", 64);
  conf_write_png (mask, "circular", "GRAY8", 64);
  ckpt = g_build_filename (tmp_dir, "seek.safetensors", NULL);
  desc = g_strdup_printf ("slidesrc location=%s loop=20 ! patchify "
      "patch-size=32 ! tee name=t t. ! queue ! colornorm mode=rescale01 ! "
      "seg.sink t. ! queue ! labelpatch masks=%s binary=true ! "
      "seg.annotation segment-fcn name=seg mode=train model=%s threads=1 "
      "checkpoint=%s batch-size=2 ! fakesink", img, mask, model_path, ckpt);
  err3 = conf_run_pipeline (desc, 0.3, 120);
  g_free (desc);
  conf_result ("flushing-seek", !err && !err2 && !err3,
      "inference: %s; pretrain: %s; train: %s", err ? err : "EOS after seek",
      err2 ? err2 : "EOS after seek", err3 ? err3 :
      "EOS (slidesrc cannot seek: the seek is refused, streaming goes on)");
  g_free (err);
  g_free (err2);
  g_free (err3);
  g_free (ckpt);
  g_free (img);
  g_free (mask);
}

/* Pushes FLUSH_START/STOP, then a segment, into @h. */
static gboolean
push_flush (GstHarness * h)
{
  return conf_push_flush (h);
}

static void
check_flush (void)
{
  GstHarness *h = new_harness ("batch-size=4", 32);
  GstHarness *t;
  GstBus *bus;
  gboolean infer_ok, gap = FALSE, eos = FALSE;
  guint n_out = 0, batch = 0;
  gint steps;
  GstBuffer *b;

  /* inference: a partial batch before the flush is dropped, not pushed
   * after it; streaming goes on */
  for (guint i = 0; i < 2; i++)
    gst_harness_push (h, conf_rgb_patch (32, 32, i, TRUE, i * 32, 0));
  infer_ok = push_flush (h);
  conf_drain (h);
  for (guint i = 0; i < 4; i++)
    infer_ok &= gst_harness_push (h, conf_rgb_patch (32, 32, 10 + i, TRUE,
            i * 32, 0)) == GST_FLOW_OK;
  gst_harness_push_event (h, gst_event_new_eos ());
  while (n_out < 8 && (b = gst_harness_pull (h))) {
    n_out++;
    gst_buffer_unref (b);
    if (n_out == 4) {
      /* nothing more may follow: the flushed patches are gone */
      g_usleep (200000);
      while ((b = gst_harness_try_pull (h))) {
        n_out++;
        gst_buffer_unref (b);
      }
      break;
    }
  }
  infer_ok &= n_out == 4;
  gst_harness_teardown (h);

  /* training: the flush drops the pending batch (so the next step has
   * only post-flush patches) and a GAP prerolls downstream again */
  t = new_harness ("mode=pretrain batch-size=4 post-messages=true", 32);
  bus = attach_bus (t);
  for (guint i = 0; i < 2; i++)
    gst_harness_push (t, conf_rgb_patch (32, 32, i, TRUE, i * 32, 0));
  push_flush (t);
  conf_drain (t);
  for (guint i = 0; i < 5; i++)
    gst_harness_push (t, conf_rgb_patch (32, 32, 10 + i, TRUE, i * 32, 0));
  gst_harness_push_event (t, gst_event_new_eos ());
  conf_wait_eos (t, &gap, &eos);
  steps = count_messages (bus, "segment-fcn-train", &batch);
  conf_detach_bus (t, bus);
  gst_harness_teardown (t);
  /* 5 post-flush patches: a step of 4, then 1 at EOS */
  conf_result ("flush", infer_ok && steps == 2 && batch == 1 && gap && eos,
      "inference: %u patches out after the flush (want 4); pretrain: %d "
      "steps, last batch %u (want 2 steps, last 1), GAP %s, EOS %s", n_out,
      steps, batch, gap ? "yes" : "no", eos ? "yes" : "no");
}

static void
check_eos_no_data (void)
{
  GstHarness *h = new_harness ("", 32);
  GstHarness *t = new_harness ("mode=pretrain", 32);
  GstBus *bus = attach_bus (t);
  gboolean a, b;
  gchar *err;

  gst_harness_push_event (h, gst_event_new_eos ());
  conf_wait_eos (h, NULL, &a);
  a &= gst_harness_buffers_in_queue (h) == 0;
  gst_harness_push_event (t, gst_event_new_eos ());
  conf_wait_eos (t, NULL, &b);
  err = bus_error (bus, 0, NULL, NULL);
  conf_detach_bus (t, bus);
  conf_result ("eos-no-data", a && b && !err, "inference EOS %s; pretrain "
      "EOS %s%s%s", a ? "forwarded" : "MISSING", b ? "forwarded" : "MISSING",
      err ? ", error: " : "", err ? err : "");
  g_free (err);
  gst_harness_teardown (h);
  gst_harness_teardown (t);
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

  gst_harness_push (d->h, conf_rgb_patch (32, 32, d->seq++, TRUE, 0, 0));
  out = gst_harness_try_pull (d->h);
  /* batch-size may have been refused: one patch in, one out */
  if (!out)
    out = gst_harness_pull (d->h);
  if (!out || gst_buffer_get_size (out) != 32 * 32)
    d->bad = TRUE;
  gst_clear_buffer (&out);
}

static void
check_props_playing (void)
{
  GstHarness *h = new_harness ("", 32);
  GstElement *seg = harness_seg (h);
  GstBus *bus = attach_bus (h);
  PumpData d = { h, 0, FALSE };
  const gchar *strings[] = { "model=/nonexistent.safetensors",
    "checkpoint=/nonexistent/dir/c.safetensors", "class-weights=x,y",
    "init-from=/nonexistent", "init-from-prefix=zz.", "freeze=zz.", NULL
  };
  gint bad;
  gchar *model = NULL, *classes = NULL;
  guint cls = 0;
  GstMessage *warn;

  pump (&d);
  bad = conf_props_while_playing (seg, NULL, strings, pump, &d);
  /* element-specific invalid values while running: refused with a
   * warning on the bus, the stream goes on with the old settings */
  while ((warn = gst_bus_pop_filtered (bus, GST_MESSAGE_WARNING)))
    gst_message_unref (warn);
  g_object_set (seg, "class", 200, "model", "", NULL);
  warn = gst_bus_pop_filtered (bus, GST_MESSAGE_WARNING);
  g_object_get (seg, "class", &cls, "model", &model, "classes", &classes,
      NULL);
  pump (&d);
  if (d.bad || !warn || cls != 1 || g_strcmp0 (model, model_path) != 0
      || !classes || !g_str_has_prefix (classes, "bg:#000000"))
    conf_result ("props-playing", FALSE, "invalid class=200 and model='' "
        "while PLAYING: %s, class %u, output %s, classes '%s'",
        warn ? "warning posted" : "NO warning", cls,
        d.bad ? "BROKEN" : "unchanged", classes ? classes : "");
  else if (!bad)
    g_print ("  (also: invalid class=200 and model='' while PLAYING "
        "refused with a warning; classes '%s')\n", classes);
  gst_clear_message (&warn);
  g_free (model);
  g_free (classes);
  conf_detach_bus (h, bus);
  gst_object_unref (seg);
  gst_harness_teardown (h);
}

static void
check_renegotiation (void)
{
  GstHarness *h = new_harness ("batch-size=3", 32);
  GstHarness *t = new_harness ("mode=pretrain batch-size=2 "
      "post-messages=true", 32);
  GstBus *bus = attach_bus (t);
  gboolean ok = TRUE, eos = FALSE;
  gint steps;
  gchar *err;

  /* inference 32 -> 64 -> 32 with partial batches pending */
  gst_harness_push (h, conf_rgb_patch (32, 32, 0, TRUE, 0, 0));
  gst_harness_set_src_caps_str (h, "video/x-raw,format=RGB,width=64,"
      "height=64,framerate=0/1");
  gst_harness_push (h, conf_rgb_patch (64, 64, 1, TRUE, 0, 0));
  gst_harness_set_src_caps_str (h, "video/x-raw,format=RGB,width=32,"
      "height=32,framerate=0/1");
  gst_harness_push (h, conf_rgb_patch (32, 32, 2, TRUE, 0, 0));
  gst_harness_push_event (h, gst_event_new_eos ());
  ok &= conf_pull_sized (h, 32 * 32) && conf_pull_sized (h, 64 * 64)
      && conf_pull_sized (h, 32 * 32);
  /* training 32 -> 64: the old-size patch is trained on first */
  gst_harness_push (t, conf_rgb_patch (32, 32, 0, TRUE, 0, 0));
  gst_harness_set_src_caps_str (t, "video/x-raw,format=RGB,width=64,"
      "height=64,framerate=0/1");
  gst_harness_push (t, conf_rgb_patch (64, 64, 1, TRUE, 0, 0));
  gst_harness_push (t, conf_rgb_patch (64, 64, 2, TRUE, 0, 0));
  gst_harness_push_event (t, gst_event_new_eos ());
  conf_wait_eos (t, NULL, &eos);
  steps = count_messages (bus, "segment-fcn-train", NULL);
  err = bus_error (bus, 0, NULL, NULL);
  conf_detach_bus (t, bus);
  conf_result ("renegotiation", ok && eos && steps == 2 && !err, "inference "
      "32->64->32: %s; pretrain 32->64: %d steps (want 2)%s%s",
      ok ? "sizes follow the caps" : "WRONG sizes", steps,
      err ? ", error: " : "", err ? err : "");
  g_free (err);
  gst_harness_teardown (h);
  gst_harness_teardown (t);
}

/* One patch of @size: TRUE with an output of that size, else the errors
 * (@domain/@code: of the one containing @needle). */
static gboolean
try_size (gint size, const gchar * needle, gchar ** error, GQuark * domain,
    gint * code)
{
  GstBus *bus;
  GstHarness *h = new_harness_bus ("", size, &bus);
  GstBuffer *out = NULL;
  gboolean ok;

  *error = NULL;
  if (needle) {
    /* refused at the caps: the buffer's content does not matter */
    gst_harness_push (h, conf_rgb_patch (4, 4, 1, TRUE, 0, 0));
    *error = conf_bus_error_matching (bus, 2 * GST_SECOND, needle, domain, code);
    ok = FALSE;
  } else {
    gst_harness_push (h, conf_rgb_patch (size, size, 1, TRUE, 0, 0));
    out = gst_harness_pull (h);
    ok = out && gst_buffer_get_size (out) == (gsize) size * size;
    gst_clear_buffer (&out);
    if (!ok)
      *error = bus_error (bus, GST_SECOND, domain, code);
  }
  conf_detach_bus (h, bus);
  gst_harness_teardown (h);
  return ok;
}

static void
check_odd_sizes (void)
{
  const gint accepted[] = { 4, 128, 252 };

  conf_check_odd_sizes (try_size, 4, accepted, G_N_ELEMENTS (accepted));
}

static void
check_no_tile_meta (void)
{
  GstHarness *h = new_harness ("", 32);
  GstHarness *t = new_harness ("mode=pretrain post-messages=true", 32);
  GstBus *bus = attach_bus (t);
  GstBuffer *out;
  gboolean infer_ok, eos = FALSE;
  gint steps;
  gchar *err;

  gst_harness_push (h, conf_rgb_patch (32, 32, 0, FALSE, 0, 0));
  out = gst_harness_pull (h);
  infer_ok = out && gst_buffer_get_size (out) == 32 * 32
      && !gst_buffer_get_wsi_tile_meta (out);
  gst_clear_buffer (&out);
  for (guint i = 0; i < 2; i++)
    gst_harness_push (t, conf_rgb_patch (32, 32, i, FALSE, 0, 0));
  gst_harness_push_event (t, gst_event_new_eos ());
  conf_wait_eos (t, NULL, &eos);
  steps = count_messages (bus, "segment-fcn-train", NULL);
  err = bus_error (bus, 0, NULL, NULL);
  conf_detach_bus (t, bus);
  conf_result ("no-tile-meta", infer_ok && eos && steps == 2 && !err,
      "inference: %s; pretrain: %d steps (want 2)%s%s",
      infer_ok ? "labels without meta" : "BROKEN", steps,
      err ? ", error: " : "", err ? err : "");
  g_free (err);
  gst_harness_teardown (h);
  gst_harness_teardown (t);
}

static void
check_zero_area (void)
{
  GstHarness *h = new_harness ("", 32);
  GstHarness *z;
  GstBus *bus = attach_bus (h), *zbus;
  gchar *err, *zerr, *desc;
  GQuark dom = 0, zdom = 0;

  /* an empty buffer under 32x32 caps: an error, no crash */
  gst_harness_push (h, gst_buffer_new ());
  err = bus_error (bus, GST_SECOND, &dom, NULL);
  conf_detach_bus (h, bus);
  gst_harness_teardown (h);
  /* a 0x0 tensor: refused at negotiation */
  desc = g_strdup_printf ("segment-fcn model=%s", model_path);
  z = gst_harness_new_parse (desc);
  g_free (desc);
  zbus = attach_bus (z);    /* before the caps event */
  gst_harness_set_src_caps_str (z, "other/tensors,format=static,"
      "num_tensors=1,types=float32,dimensions=3:0:0:1,framerate=0/1");
  gst_harness_push (z, gst_buffer_new ());
  zerr = bus_error (zbus, GST_SECOND, &zdom, NULL);
  conf_detach_bus (z, zbus);
  gst_harness_teardown (z);
  conf_result ("zero-area", err && dom == GST_STREAM_ERROR && zerr
      && zdom == GST_STREAM_ERROR, "empty buffer under 32x32 caps: %s; "
      "0x0 tensor caps: %s", err ? err : "NO error", zerr ? zerr : "NO error");
  g_free (err);
  g_free (zerr);
}

int
main (int argc, char **argv)
{
  conf_init (&argc, &argv, "segment-fcn");
  tmp_dir = g_dir_make_tmp ("conf-segfcn-XXXXXX", NULL);
  model_path = g_build_filename (tmp_dir, "unet.safetensors", NULL);
  write_model (model_path);

  {
    const ConfChecks checks = {
      check_flushing_seek, check_flush, check_eos_no_data,
      check_props_playing, check_renegotiation, check_odd_sizes,
      check_no_tile_meta, check_zero_area
    };
    conf_run_checks (&checks);
  }
  return conf_finish ();
}
