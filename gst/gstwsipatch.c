/* The image-patch input of segmentation elements: gstwsipatch.h. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "gstwsibatch.h"
#include "gstwsiclasses.h"
#include "gstwsipatch.h"
#include "gstwsitensor.h"
#include "gstwsitilemeta.h"
#include "safetensors.h"
#include "wsinn.h"

gboolean
gst_wsi_patch_caps_parse (GstElement * element, GstCaps * caps,
    gint * width, gint * height, gboolean * is_tensor, GstVideoInfo * vinfo)
{
  GstStructure *s = gst_caps_get_structure (caps, 0);
  gint channels = 0;

  *is_tensor = gst_structure_has_name (s, "other/tensors");
  if (*is_tensor) {
    if (gst_wsi_tensor_structure_parse (s, &channels, width, height)
        && channels == 3)
      return TRUE;
    if (element) {
      GstElementFactory *f = gst_element_get_factory (element);
      GST_ELEMENT_ERROR (element, STREAM, FORMAT,
          ("%s takes one float32 tensor with dimensions 3:W:H:1 "
              "(interleaved RGB, as colornorm emits), got %" GST_PTR_FORMAT,
              f ? GST_OBJECT_NAME (f) : GST_ELEMENT_NAME (element), caps),
          (NULL));
    }
    return FALSE;
  }
  if (!gst_video_info_from_caps (vinfo, caps))
    return FALSE;
  *width = GST_VIDEO_INFO_WIDTH (vinfo);
  *height = GST_VIDEO_INFO_HEIGHT (vinfo);
  return TRUE;
}

gboolean
gst_wsi_patch_input_differs (const GstWsiPatchInput * in, gint width,
    gint height, gboolean is_tensor)
{
  return width != in->width || height != in->height
      || is_tensor != in->is_tensor;
}

void
gst_wsi_patch_input_set (GstWsiPatchInput * in, gint width, gint height,
    gboolean is_tensor, const GstVideoInfo * vinfo)
{
  in->width = width;
  in->height = height;
  in->is_tensor = is_tensor;
  if (!is_tensor)
    in->vinfo = *vinfo;
}

static gboolean
fill_one (GstWsiPatchInput * in, GstElement * element,
    const WsiModelInfo * info, GstBuffer * buf, gfloat * dst)
{
  gsize n = (gsize) in->width * in->height * 3;
  GstVideoFrame frame;

  if (in->is_tensor) {
    if (gst_buffer_get_size (buf) != n * sizeof (gfloat)) {
      GST_ELEMENT_ERROR (element, STREAM, FORMAT,
          ("Tensor buffer of %" G_GSIZE_FORMAT " bytes, expected %"
              G_GSIZE_FORMAT " for 3:%d:%d:1 float32.",
              gst_buffer_get_size (buf), n * sizeof (gfloat), in->width,
              in->height), (NULL));
      return FALSE;
    }
    gst_buffer_extract (buf, 0, dst, n * sizeof (gfloat));
    return TRUE;
  }
  if (!gst_video_frame_map (&frame, &in->vinfo, buf, GST_MAP_READ)) {
    GST_ELEMENT_ERROR (element, STREAM, FORMAT,
        ("Could not map an RGB frame of %dx%d.", in->width, in->height),
        (NULL));
    return FALSE;
  }
  wsi_model_preprocess (info, GST_VIDEO_FRAME_PLANE_DATA (&frame, 0),
      GST_VIDEO_FRAME_PLANE_STRIDE (&frame, 0), in->width, in->height, dst);
  gst_video_frame_unmap (&frame);
  return TRUE;
}

gfloat *
gst_wsi_patch_input_fill (GstWsiPatchInput * in, GstElement * element,
    const WsiModelInfo * info, guint n, GstBuffer * const *images)
{
  const gsize elems = (gsize) in->width * in->height * 3;

  if (!gst_wsi_batch_grow ((gpointer *) & in->batch, &in->capacity,
          elems * n, sizeof (gfloat))) {
    GST_ELEMENT_ERROR (element, RESOURCE, NO_SPACE_LEFT,
        ("Not enough memory for a batch of %u patches of %dx%d.", n,
            in->width, in->height), ("Lower batch-size or the patch size."));
    return NULL;
  }
  for (guint i = 0; i < n; i++)
    if (!fill_one (in, element, info, images[i], in->batch + elems * i))
      return NULL;
  return in->batch;
}

void
gst_wsi_patch_input_check_resolution (GstWsiPatchInput * in,
    GstElement * element, GstBuffer * buf, gdouble model_mpp)
{
  const GstWsiTileMeta *m = gst_buffer_get_wsi_tile_meta (buf);
  gdouble mpp;

  if (!m || model_mpp <= 0 || m->mpp_x <= 0
      || g_strcmp0 (m->slide, in->resolution_checked) == 0)
    return;
  g_free (in->resolution_checked);
  in->resolution_checked = g_strdup (m->slide);
  mpp = m->mpp_x * m->downsample;
  if (mpp > 1.25 * model_mpp || mpp < 0.8 * model_mpp)
    GST_ELEMENT_WARNING (element, STREAM, FORMAT,
        ("Patches of '%s' have %.3f um/px but the model was trained at "
            "%.3f um/px.", m->slide, mpp, model_mpp),
        ("Read the slide at the model's resolution: slidesrc "
            "target-mpp=%g.", model_mpp));
}

void
gst_wsi_patch_input_clear (GstWsiPatchInput * in)
{
  g_clear_pointer (&in->batch, g_free);
  in->capacity = 0;
  g_clear_pointer (&in->resolution_checked, g_free);
}

gboolean
gst_wsi_report_unreadable (GstElement * element, const gchar * what,
    const gchar * path)
{
  if (!g_file_test (path, G_FILE_TEST_EXISTS)) {
    GST_ELEMENT_ERROR (element, RESOURCE, NOT_FOUND,
        ("%s \"%s\" does not exist.", what, path), (NULL));
    return TRUE;
  }
  if (g_file_test (path, G_FILE_TEST_IS_DIR)) {
    GST_ELEMENT_ERROR (element, RESOURCE, OPEN_READ,
        ("%s \"%s\" is a directory, not a model file.", what, path), (NULL));
    return TRUE;
  }
  if (g_access (path, R_OK) != 0) {
    gint e = errno;
    GST_ELEMENT_ERROR (element, RESOURCE, OPEN_READ,
        ("%s \"%s\" cannot be read: %s.", what, path, g_strerror (e)),
        (NULL));
    return TRUE;
  }
  return FALSE;
}

/* ------------------------------------------------------------ settings */

enum
{
  P_MODEL,
  P_BATCH_SIZE,
  P_BATCH_TIMEOUT,
  P_THREADS,
  P_MAX_MEMORY,
};

#define DEFAULT_BATCH_TIMEOUT (100 * GST_MSECOND)
#define DEFAULT_MAX_MEMORY (G_GUINT64_CONSTANT (4) << 30)

void
gst_wsi_segment_install_properties (GObjectClass * klass, guint first)
{
  gst_wsi_segment_install_properties_full (klass, first, NULL);
}

void
gst_wsi_segment_install_properties_full (GObjectClass * klass, guint first,
    const GstWsiSegmentBlurbs * blurbs)
{
  const GParamFlags flags = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
      GST_PARAM_MUTABLE_READY;
  const GstWsiSegmentBlurbs none = { NULL, NULL, NULL };

  if (!blurbs)
    blurbs = &none;
  g_object_class_install_property (klass, first + P_MODEL,
      g_param_spec_string ("model", "Model", blurbs->model ? blurbs->model :
          "Model file (.safetensors) holding the architecture, weights, "
          "classes and preprocessing", NULL, flags));
  g_object_class_install_property (klass, first + P_BATCH_SIZE,
      g_param_spec_uint ("batch-size", "Batch size", blurbs->batch_size ?
          blurbs->batch_size : "Patches per forward pass", 1, 256, 1, flags));
  g_object_class_install_property (klass, first + P_BATCH_TIMEOUT,
      g_param_spec_uint64 ("batch-timeout", "Batch timeout",
          "Live streams: longest time (ns) a partial batch waits for more "
          "patches (becomes the aggregator latency when upstream is live)",
          0, G_MAXUINT64, DEFAULT_BATCH_TIMEOUT, flags));
  g_object_class_install_property (klass, first + P_THREADS,
      g_param_spec_uint ("threads", "Threads",
          "Compute threads for the engine (0 = all cores)", 0, 1024, 0,
          flags));
  g_object_class_install_property (klass, first + P_MAX_MEMORY,
      g_param_spec_uint64 ("max-memory", "Maximum memory",
          blurbs->max_memory ? blurbs->max_memory :
          "Largest estimated memory (bytes) of one batch: the engine's "
          "activations (with gradients when training) and the batch arrays; "
          "a patch size or batch-size needing more is refused", 1 << 20,
          G_MAXUINT64, DEFAULT_MAX_MEMORY, flags));
}

void
gst_wsi_segment_settings_init (GstWsiSegmentSettings * s)
{
  memset (s, 0, sizeof *s);
  s->batch_size = 1;
  s->batch_timeout = DEFAULT_BATCH_TIMEOUT;
  s->max_memory = DEFAULT_MAX_MEMORY;
}

void
gst_wsi_segment_settings_clear (GstWsiSegmentSettings * s)
{
  g_clear_pointer (&s->model, g_free);
}

gboolean
gst_wsi_segment_settings_set (GstWsiSegmentSettings * s, guint id,
    const GValue * value)
{
  switch (id) {
    case P_MODEL:
      g_free (s->model);
      s->model = g_value_dup_string (value);
      return TRUE;
    case P_BATCH_SIZE:
      s->batch_size = g_value_get_uint (value);
      return TRUE;
    case P_BATCH_TIMEOUT:
      s->batch_timeout = g_value_get_uint64 (value);
      return TRUE;
    case P_THREADS:
      s->threads = g_value_get_uint (value);
      return TRUE;
    case P_MAX_MEMORY:
      s->max_memory = g_value_get_uint64 (value);
      return TRUE;
  }
  return FALSE;
}

gboolean
gst_wsi_segment_settings_get (const GstWsiSegmentSettings * s, guint id,
    GValue * value)
{
  switch (id) {
    case P_MODEL:
      g_value_set_string (value, s->model);
      return TRUE;
    case P_BATCH_SIZE:
      g_value_set_uint (value, s->batch_size);
      return TRUE;
    case P_BATCH_TIMEOUT:
      g_value_set_uint64 (value, s->batch_timeout);
      return TRUE;
    case P_THREADS:
      g_value_set_uint (value, s->threads);
      return TRUE;
    case P_MAX_MEMORY:
      g_value_set_uint64 (value, s->max_memory);
      return TRUE;
  }
  return FALSE;
}

/* ---------------------------------------------------------- output caps */

void
gst_wsi_patch_set_src_caps (GstAggregator * agg, GstCaps ** current,
    GstCaps * caps)
{
  GST_DEBUG_OBJECT (agg, "output caps %" GST_PTR_FORMAT, caps);
  gst_caps_replace (current, caps);
  gst_aggregator_set_src_caps (agg, caps);
  gst_caps_unref (caps);
}

GstFlowReturn
gst_wsi_patch_update_src_caps (GstCaps * current, GstCaps * caps,
    GstCaps ** ret)
{
  if (!current)
    return GST_AGGREGATOR_FLOW_NEED_DATA;
  *ret = gst_caps_intersect (caps, current);
  if (gst_caps_is_empty (*ret)) {
    gst_caps_replace (ret, NULL);
    return GST_FLOW_NOT_NEGOTIATED;
  }
  return GST_FLOW_OK;
}

/* --------------------------------------------------------------- model */

WsiModel *
gst_wsi_patch_load_model (GstElement * element, const gchar * path,
    guint threads)
{
  gchar err[512] = "";
  WsiModel *model;

  if (!path || !*path) {
    GST_ELEMENT_ERROR (element, RESOURCE, SETTINGS,
        ("No model file given."), ("Set the 'model' property to a "
            ".safetensors model file (see docs/model-format.md)."));
    return NULL;
  }
  if (gst_wsi_report_unreadable (element, "Model", path))
    return NULL;
  model = wsi_model_load (path, (int) threads, err, sizeof err);
  if (!model)
    GST_ELEMENT_ERROR (element, STREAM, DECODE,
        ("Could not load model \"%s\": %s", path, err), (NULL));
  return model;
}

gdouble
gst_wsi_patch_model_file_bytes (const gchar * path, guint n, gint width,
    gint height)
{
  gchar err[256];
  WsiSafetensors *st = wsi_safetensors_open (path, err, sizeof err);
  wsinn_spec spec;
  wsinn_net *net = NULL;
  gboolean ok = st != NULL;
  gdouble bytes = 0;

  wsinn_spec_init (&spec);
  for (gsize i = 0; ok && i < wsi_safetensors_n_metadata (st); i++) {
    const gchar *key = wsi_safetensors_metadata_key (st, i);
    ok = wsinn_spec_set (&spec, key, wsi_safetensors_metadata (st, key), err,
        sizeof err) == 0;
  }
  if (st)
    wsi_safetensors_free (st);
  if (ok && (net = wsinn_net_new_from_spec (&spec, err, sizeof err))) {
    bytes = wsinn_net_memory_estimate (net, (int) n, height, width, 0);
    wsinn_net_free (net);
  }
  return bytes;
}

gboolean
gst_wsi_patch_check_size (GstElement * element, const WsiModelInfo * info,
    gint width, gint height)
{
  if (info->size_multiple <= 1 || (width % info->size_multiple == 0
          && height % info->size_multiple == 0))
    return TRUE;
  GST_ELEMENT_ERROR (element, STREAM, FORMAT,
      ("Patch size %dx%d does not suit model %s: sides must be multiples "
          "of %d.", width, height, info->arch, info->size_multiple),
      ("Set patchify patch-size to a multiple of %d.", info->size_multiple));
  return FALSE;
}

/* ------------------------------------------------------------- classes */

void
gst_wsi_model_classes_send (GstWsiModelClasses * c, GstPad * src)
{
  if (c->event && gst_pad_store_sticky_event (src, c->event) == GST_FLOW_OK)
    gst_clear_event (&c->event);
}

void
gst_wsi_model_classes_update (GstWsiModelClasses * c, GstElement * element,
    GstPad * src, const WsiModelInfo * info)
{
  GString *s = g_string_new (NULL);
  gchar *old;

  for (gint i = 0; i < info->n_classes; i++)
    g_string_append_printf (s, "%s%s:#%02x%02x%02x", i ? "," : "",
        info->class_names[i], info->class_colors[i][0],
        info->class_colors[i][1], info->class_colors[i][2]);
  GST_OBJECT_LOCK (element);
  old = c->text;
  c->text = g_string_free (s, FALSE);
  GST_OBJECT_UNLOCK (element);
  g_free (old);
  gst_clear_event (&c->event);
  if (info->n_classes > 0)
    c->event = gst_wsi_classes_event_new_rgb ((guint) info->n_classes,
        (const gchar * const *) info->class_names,
        (const guint8 (*)[3]) info->class_colors);
  gst_wsi_model_classes_send (c, src);
}

void
gst_wsi_model_classes_clear (GstWsiModelClasses * c, GstElement * element)
{
  gchar *text;

  GST_OBJECT_LOCK (element);
  text = g_steal_pointer (&c->text);
  GST_OBJECT_UNLOCK (element);
  g_free (text);
  gst_clear_event (&c->event);
}
