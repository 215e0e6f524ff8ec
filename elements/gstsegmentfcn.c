/* segment-fcn: semantic segmentation of patches with a fully convolutional
 * network (U-Net, FCN, DeepLab) run by the oneDNN engine in models/.
 *
 * A GstAggregator: patches are collected into batches; a live stream gets
 * the partial batch pushed when the aggregator's latency (batch-timeout)
 * expires, so a slow scanner is never held back by batching.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <math.h>
#include <string.h>

#include <gst/base/gstaggregator.h>
#include <gst/video/video.h>

#include "gstwsiseg.h"
#include "gstwsitilemeta.h"
#include "wsimodel.h"

GST_DEBUG_CATEGORY_STATIC (gst_segment_fcn_debug);
#define GST_CAT_DEFAULT gst_segment_fcn_debug

typedef enum
{
  SEGMENT_OUTPUT_LABELS,
  SEGMENT_OUTPUT_PROBABILITIES,
  SEGMENT_OUTPUT_CLASS_MAP,
} SegmentOutput;

#define GST_TYPE_SEGMENT_OUTPUT (gst_segment_output_get_type ())
static GType
gst_segment_output_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {SEGMENT_OUTPUT_LABELS, "GRAY8 class index per pixel (argmax)", "labels"},
    {SEGMENT_OUTPUT_PROBABILITIES,
        "float32 tensors C:W:H:1 of per-class probabilities", "probabilities"},
    {SEGMENT_OUTPUT_CLASS_MAP,
        "GRAY8 probability (0-255) of the class given by 'class'", "class-map"},
    {0, NULL, NULL}
  };

  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstSegmentFcnOutput", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

#define GST_TYPE_SEGMENT_FCN (gst_segment_fcn_get_type ())
G_DECLARE_FINAL_TYPE (GstSegmentFcn, gst_segment_fcn, GST, SEGMENT_FCN,
    GstAggregator);

struct _GstSegmentFcn
{
  GstAggregator parent;

  /* properties */
  gchar *model_path;
  guint batch_size;
  guint64 batch_timeout;
  guint threads;
  SegmentOutput output;
  guint class_index;

  /* state */
  WsiModel *model;
  gboolean input_is_tensor;
  gint width, height;
  GstVideoInfo in_vinfo;
  GPtrArray *pending;           /* input buffers of the batch being filled */
  gfloat *in_batch, *out_batch;
  gsize batch_capacity;
  /* stats */
  guint64 patches, batches;
  gdouble busy_seconds;
  gint64 first_patch_time;
};

enum
{
  PROP_0,
  PROP_MODEL,
  PROP_BATCH_SIZE,
  PROP_BATCH_TIMEOUT,
  PROP_THREADS,
  PROP_OUTPUT,
  PROP_CLASS,
  PROP_CLASSES,
};

#define DEFAULT_BATCH_SIZE 1
#define DEFAULT_BATCH_TIMEOUT (100 * GST_MSECOND)
#define DEFAULT_THREADS 0
#define STATS_EVERY 64

#define TENSOR_CAPS_IN "other/tensors, format=(string)static, " \
    "num_tensors=(int)1, types=(string)float32"
#define TENSOR_CAPS_OUT TENSOR_CAPS_IN

static GstStaticPadTemplate sink_template =
GST_STATIC_PAD_TEMPLATE ("sink", GST_PAD_SINK, GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE ("RGB") "; " TENSOR_CAPS_IN));

static GstStaticPadTemplate src_template =
GST_STATIC_PAD_TEMPLATE ("src", GST_PAD_SRC, GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE ("GRAY8") "; " TENSOR_CAPS_OUT));

G_DEFINE_TYPE (GstSegmentFcn, gst_segment_fcn, GST_TYPE_AGGREGATOR);
GST_ELEMENT_REGISTER_DEFINE (segment_fcn, "segment-fcn", GST_RANK_NONE,
    GST_TYPE_SEGMENT_FCN);

static GstAggregatorPad *
sink_pad (GstSegmentFcn * self)
{
  return GST_AGGREGATOR_PAD (GST_ELEMENT (self)->sinkpads->data);
}

/* Parses "3:W:H:1" (innermost first). */
static gboolean
parse_rgb_tensor_dims (const gchar * dims, gint * w, gint * h)
{
  gchar **parts = g_strsplit (dims, ":", -1);
  guint n = g_strv_length (parts);
  gint64 v[4] = { 1, 1, 1, 1 };
  gboolean ok = n >= 3 && n <= 4;

  for (guint i = 0; ok && i < n; i++) {
    gchar *end = NULL;
    v[i] = g_ascii_strtoll (parts[i], &end, 10);
    ok = end && *end == '\0' && v[i] > 0 && v[i] <= 65536;
  }
  g_strfreev (parts);
  if (!ok || v[0] != 3 || v[3] != 1)
    return FALSE;
  *w = (gint) v[1];
  *h = (gint) v[2];
  return TRUE;
}

static gboolean
ensure_model (GstSegmentFcn * self)
{
  gchar err[512] = "";

  if (self->model)
    return TRUE;
  if (!self->model_path || !*self->model_path) {
    GST_ELEMENT_ERROR (self, RESOURCE, NOT_FOUND,
        ("No model file given."), ("Set the 'model' property to a "
            ".safetensors model file (see docs/model-format.md)."));
    return FALSE;
  }
  self->model = wsi_model_load (self->model_path, (int) self->threads, err,
      sizeof err);
  if (!self->model) {
    GST_ELEMENT_ERROR (self, RESOURCE, OPEN_READ,
        ("Could not load model \"%s\": %s", self->model_path, err), (NULL));
    return FALSE;
  }
  GST_INFO_OBJECT (self, "loaded %s (%s, %d classes)", self->model_path,
      wsi_model_info (self->model)->arch,
      wsi_model_info (self->model)->n_classes);
  return TRUE;
}

static GstCaps *
make_src_caps (GstSegmentFcn * self, const GstCaps * in_caps)
{
  const WsiModelInfo *info = wsi_model_info (self->model);
  GstStructure *s = gst_caps_get_structure (in_caps, 0);
  gint fn = 0, fd = 1;
  GstCaps *caps;

  gst_structure_get_fraction (s, "framerate", &fn, &fd);
  if (self->output == SEGMENT_OUTPUT_PROBABILITIES) {
    gchar *dims = g_strdup_printf ("%d:%d:%d:1", info->n_classes,
        self->width, self->height);
    caps = gst_caps_new_simple ("other/tensors",
        "format", G_TYPE_STRING, "static",
        "num_tensors", G_TYPE_INT, 1,
        "types", G_TYPE_STRING, "float32",
        "dimensions", G_TYPE_STRING, dims,
        "framerate", GST_TYPE_FRACTION, fn, fd, NULL);
    g_free (dims);
  } else {
    caps = gst_caps_new_simple ("video/x-raw",
        "format", G_TYPE_STRING, "GRAY8",
        "width", G_TYPE_INT, self->width,
        "height", G_TYPE_INT, self->height,
        "framerate", GST_TYPE_FRACTION, fn, fd, NULL);
  }
  return caps;
}

static gboolean
set_input_caps (GstSegmentFcn * self, GstCaps * caps)
{
  GstStructure *s = gst_caps_get_structure (caps, 0);
  const WsiModelInfo *info;
  GstCaps *src_caps;

  if (!ensure_model (self))
    return FALSE;
  info = wsi_model_info (self->model);

  if (gst_structure_has_name (s, "other/tensors")) {
    const gchar *dims = gst_structure_get_string (s, "dimensions");
    gint n = 0;
    if (!gst_structure_get_int (s, "num_tensors", &n) || n != 1 || !dims
        || !parse_rgb_tensor_dims (dims, &self->width, &self->height)) {
      GST_ELEMENT_ERROR (self, CORE, NEGOTIATION,
          ("segment-fcn takes one float32 tensor with dimensions 3:W:H:1 "
              "(interleaved RGB, as colornorm emits), got %" GST_PTR_FORMAT,
              caps), (NULL));
      return FALSE;
    }
    self->input_is_tensor = TRUE;
  } else {
    if (!gst_video_info_from_caps (&self->in_vinfo, caps))
      return FALSE;
    self->width = GST_VIDEO_INFO_WIDTH (&self->in_vinfo);
    self->height = GST_VIDEO_INFO_HEIGHT (&self->in_vinfo);
    self->input_is_tensor = FALSE;
  }
  if (info->size_multiple > 1 && (self->width % info->size_multiple
          || self->height % info->size_multiple)) {
    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION,
        ("Patch size %dx%d does not suit model %s: sides must be multiples "
            "of %d.", self->width, self->height, info->arch,
            info->size_multiple),
        ("Set patchify patch-size to a multiple of %d.", info->size_multiple));
    return FALSE;
  }
  if (self->output == SEGMENT_OUTPUT_CLASS_MAP
      && (gint) self->class_index >= info->n_classes) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("class=%u but the model has %d classes.", self->class_index,
            info->n_classes), (NULL));
    return FALSE;
  }
  src_caps = make_src_caps (self, caps);
  GST_DEBUG_OBJECT (self, "output caps %" GST_PTR_FORMAT, src_caps);
  gst_aggregator_set_src_caps (GST_AGGREGATOR (self), src_caps);
  gst_caps_unref (src_caps);
  return TRUE;
}

static gboolean
gst_segment_fcn_sink_event (GstAggregator * agg, GstAggregatorPad * pad,
    GstEvent * event)
{
  GstSegmentFcn *self = GST_SEGMENT_FCN (agg);

  if (GST_EVENT_TYPE (event) == GST_EVENT_CAPS) {
    GstCaps *caps;
    gst_event_parse_caps (event, &caps);
    if (!set_input_caps (self, caps)) {
      gst_event_unref (event);
      return FALSE;
    }
  }
  return GST_AGGREGATOR_CLASS (gst_segment_fcn_parent_class)->sink_event (agg,
      pad, event);
}

static void
post_stats (GstSegmentFcn * self)
{
  gdouble wall = (g_get_monotonic_time () - self->first_patch_time) / 1e6;
  GstStructure *s = gst_structure_new ("segment-fcn-stats",
      "patches", G_TYPE_UINT64, self->patches,
      "batches", G_TYPE_UINT64, self->batches,
      "mean-batch-latency-ms", G_TYPE_DOUBLE,
      self->batches ? 1000.0 * self->busy_seconds / self->batches : 0.0,
      "patches-per-second", G_TYPE_DOUBLE,
      wall > 0 ? self->patches / wall : 0.0,
      "inference-share", G_TYPE_DOUBLE,
      wall > 0 ? self->busy_seconds / wall : 0.0, NULL);

  gst_element_post_message (GST_ELEMENT (self),
      gst_message_new_element (GST_OBJECT (self), s));
}

static gboolean
fill_input (GstSegmentFcn * self, GstBuffer * buf, gfloat * dst)
{
  const WsiModelInfo *info = wsi_model_info (self->model);
  gsize n = (gsize) self->width * self->height * 3;

  if (self->input_is_tensor) {
    if (gst_buffer_get_size (buf) != n * sizeof (gfloat)) {
      GST_ELEMENT_ERROR (self, STREAM, FORMAT,
          ("Tensor buffer of %" G_GSIZE_FORMAT " bytes, expected %"
              G_GSIZE_FORMAT " for 3:%d:%d:1 float32.",
              gst_buffer_get_size (buf), n * sizeof (gfloat), self->width,
              self->height), (NULL));
      return FALSE;
    }
    gst_buffer_extract (buf, 0, dst, n * sizeof (gfloat));
  } else {
    GstVideoFrame frame;
    if (!gst_video_frame_map (&frame, &self->in_vinfo, buf, GST_MAP_READ)) {
      GST_ELEMENT_ERROR (self, STREAM, FORMAT,
          ("Could not map an RGB frame of %dx%d.", self->width, self->height),
          (NULL));
      return FALSE;
    }
    wsi_model_preprocess (info, GST_VIDEO_FRAME_PLANE_DATA (&frame, 0),
        GST_VIDEO_FRAME_PLANE_STRIDE (&frame, 0), self->width, self->height,
        dst);
    gst_video_frame_unmap (&frame);
  }
  return TRUE;
}

static GstBuffer *
make_output (GstSegmentFcn * self, GstBuffer * in, const gfloat * probs)
{
  const gint nc = wsi_model_info (self->model)->n_classes;
  const gsize npix = (gsize) self->width * self->height;
  GstBuffer *out;
  GstMapInfo map;
  GstWsiTileMeta *meta;

  if (self->output == SEGMENT_OUTPUT_PROBABILITIES) {
    out = gst_buffer_new_allocate (NULL, npix * nc * sizeof (gfloat), NULL);
    gst_buffer_fill (out, 0, probs, npix * nc * sizeof (gfloat));
  } else {
    out = gst_buffer_new_allocate (NULL, npix, NULL);
    gst_buffer_map (out, &map, GST_MAP_WRITE);
    for (gsize i = 0; i < npix; i++) {
      const gfloat *p = probs + i * nc;
      if (self->output == SEGMENT_OUTPUT_CLASS_MAP) {
        gfloat v = p[self->class_index] * 255.0f + 0.5f;
        map.data[i] = (guint8) CLAMP (v, 0.0f, 255.0f);
      } else if (nc == 1) {
        map.data[i] = p[0] >= 0.5f;
      } else {
        gint best = 0;
        for (gint c = 1; c < nc; c++)
          if (p[c] > p[best])
            best = c;
        map.data[i] = (guint8) best;
      }
    }
    gst_buffer_unmap (out, &map);
  }
  gst_buffer_copy_into (out, in, GST_BUFFER_COPY_METADATA, 0, -1);
  meta = gst_buffer_get_wsi_tile_meta (out);
  if (meta && !self->input_is_tensor)
    gst_wsi_tile_meta_fit_to_size (meta, self->width, self->height);
  return out;
}

static GstFlowReturn
process_batch (GstSegmentFcn * self)
{
  const guint n = self->pending->len;
  const gint nc = wsi_model_info (self->model)->n_classes;
  const gsize in_elems = (gsize) self->width * self->height * 3;
  const gsize out_elems = (gsize) self->width * self->height * nc;
  GstFlowReturn ret = GST_FLOW_OK;
  gchar err[512] = "";
  gint64 t0;

  if (n == 0)
    return GST_FLOW_OK;
  if (self->batch_capacity < n) {
    g_free (self->in_batch);
    g_free (self->out_batch);
    self->in_batch = g_new (gfloat, in_elems * n);
    self->out_batch = g_new (gfloat, out_elems * n);
    self->batch_capacity = n;
  }
  for (guint i = 0; i < n; i++) {
    if (!fill_input (self, g_ptr_array_index (self->pending, i),
            self->in_batch + in_elems * i)) {
      g_ptr_array_set_size (self->pending, 0);
      return GST_FLOW_ERROR;
    }
  }
  t0 = g_get_monotonic_time ();
  if (self->first_patch_time == 0)
    self->first_patch_time = t0;
  if (wsi_model_forward (self->model, self->in_batch, (int) n, self->height,
          self->width, self->out_batch, err, sizeof err) != 0) {
    GST_ELEMENT_ERROR (self, LIBRARY, FAILED,
        ("Inference failed: %s", err), (NULL));
    g_ptr_array_set_size (self->pending, 0);
    return GST_FLOW_ERROR;
  }
  self->busy_seconds += (g_get_monotonic_time () - t0) / 1e6;
  self->batches++;

  for (guint i = 0; i < n && ret == GST_FLOW_OK; i++) {
    GstBuffer *in = g_ptr_array_index (self->pending, i);
    GstBuffer *out = make_output (self, in, self->out_batch + out_elems * i);
    ret = gst_aggregator_finish_buffer (GST_AGGREGATOR (self), out);
    self->patches++;
    if (self->patches % STATS_EVERY == 0)
      post_stats (self);
  }
  g_ptr_array_set_size (self->pending, 0);
  return ret;
}

static GstFlowReturn
gst_segment_fcn_aggregate (GstAggregator * agg, gboolean timeout)
{
  GstSegmentFcn *self = GST_SEGMENT_FCN (agg);
  GstAggregatorPad *pad = sink_pad (self);
  GstBuffer *buf;
  GstFlowReturn ret;

  buf = gst_aggregator_pad_pop_buffer (pad);
  if (buf) {
    if (!self->model) {
      gst_buffer_unref (buf);
      GST_ELEMENT_ERROR (self, CORE, NEGOTIATION,
          ("Data before caps: no model configured."), (NULL));
      return GST_FLOW_NOT_NEGOTIATED;
    }
    g_ptr_array_add (self->pending, buf);
    if (self->pending->len >= self->batch_size)
      return process_batch (self);
    return GST_FLOW_OK;
  }
  if (gst_aggregator_pad_is_eos (pad)) {
    ret = process_batch (self);
    if (self->patches)
      post_stats (self);
    return ret == GST_FLOW_OK ? GST_FLOW_EOS : ret;
  }
  if (timeout)
    return process_batch (self);
  return GST_FLOW_OK;
}

static gboolean
gst_segment_fcn_start (GstAggregator * agg)
{
  GstSegmentFcn *self = GST_SEGMENT_FCN (agg);

  self->patches = self->batches = 0;
  self->busy_seconds = 0;
  self->first_patch_time = 0;
  return ensure_model (self);
}

static gboolean
gst_segment_fcn_stop (GstAggregator * agg)
{
  GstSegmentFcn *self = GST_SEGMENT_FCN (agg);

  g_ptr_array_set_size (self->pending, 0);
  g_clear_pointer (&self->in_batch, g_free);
  g_clear_pointer (&self->out_batch, g_free);
  self->batch_capacity = 0;
  g_clear_pointer (&self->model, wsi_model_free);
  return TRUE;
}

static gboolean
gst_segment_fcn_flush (GstAggregator * agg)
{
  GstSegmentFcn *self = GST_SEGMENT_FCN (agg);

  g_ptr_array_set_size (self->pending, 0);
  return GST_AGGREGATOR_CLASS (gst_segment_fcn_parent_class)->flush (agg);
}

static void
gst_segment_fcn_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec)
{
  GstSegmentFcn *self = GST_SEGMENT_FCN (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODEL:
      g_free (self->model_path);
      self->model_path = g_value_dup_string (value);
      break;
    case PROP_BATCH_SIZE:
      self->batch_size = g_value_get_uint (value);
      break;
    case PROP_BATCH_TIMEOUT:
      self->batch_timeout = g_value_get_uint64 (value);
      GST_OBJECT_UNLOCK (self);
      g_object_set (object, "latency", self->batch_timeout, NULL);
      return;
    case PROP_THREADS:
      self->threads = g_value_get_uint (value);
      break;
    case PROP_OUTPUT:
      self->output = g_value_get_enum (value);
      break;
    case PROP_CLASS:
      self->class_index = g_value_get_uint (value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static gchar *
class_list (GstSegmentFcn * self)
{
  GString *s = g_string_new (NULL);
  const WsiModelInfo *info;

  if (!self->model)
    return g_string_free (s, FALSE);
  info = wsi_model_info (self->model);
  for (gint c = 0; c < info->n_classes; c++)
    g_string_append_printf (s, "%s%s:#%02x%02x%02x", c ? "," : "",
        info->class_names[c], info->class_colors[c][0],
        info->class_colors[c][1], info->class_colors[c][2]);
  return g_string_free (s, FALSE);
}

static void
gst_segment_fcn_get_property (GObject * object, guint prop_id, GValue * value,
    GParamSpec * pspec)
{
  GstSegmentFcn *self = GST_SEGMENT_FCN (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODEL:
      g_value_set_string (value, self->model_path);
      break;
    case PROP_BATCH_SIZE:
      g_value_set_uint (value, self->batch_size);
      break;
    case PROP_BATCH_TIMEOUT:
      g_value_set_uint64 (value, self->batch_timeout);
      break;
    case PROP_THREADS:
      g_value_set_uint (value, self->threads);
      break;
    case PROP_OUTPUT:
      g_value_set_enum (value, self->output);
      break;
    case PROP_CLASS:
      g_value_set_uint (value, self->class_index);
      break;
    case PROP_CLASSES:
      g_value_take_string (value, class_list (self));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_segment_fcn_finalize (GObject * object)
{
  GstSegmentFcn *self = GST_SEGMENT_FCN (object);

  g_free (self->model_path);
  g_ptr_array_unref (self->pending);
  g_free (self->in_batch);
  g_free (self->out_batch);
  g_clear_pointer (&self->model, wsi_model_free);
  G_OBJECT_CLASS (gst_segment_fcn_parent_class)->finalize (object);
}

static void
gst_segment_fcn_class_init (GstSegmentFcnClass * klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstAggregatorClass *agg_class = GST_AGGREGATOR_CLASS (klass);

  GST_DEBUG_CATEGORY_INIT (gst_segment_fcn_debug, "segment-fcn", 0,
      "FCN/U-Net/DeepLab semantic segmentation");

  gobject_class->set_property = gst_segment_fcn_set_property;
  gobject_class->get_property = gst_segment_fcn_get_property;
  gobject_class->finalize = gst_segment_fcn_finalize;

  g_object_class_install_property (gobject_class, PROP_MODEL,
      g_param_spec_string ("model", "Model",
          "Model file (.safetensors) holding the architecture, weights, "
          "classes and preprocessing", NULL,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_BATCH_SIZE,
      g_param_spec_uint ("batch-size", "Batch size",
          "Patches per forward pass", 1, 256, DEFAULT_BATCH_SIZE,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_BATCH_TIMEOUT,
      g_param_spec_uint64 ("batch-timeout", "Batch timeout",
          "Live streams: longest time (ns) a partial batch waits for more "
          "patches (sets the aggregator latency)", 0, G_MAXUINT64,
          DEFAULT_BATCH_TIMEOUT,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_THREADS,
      g_param_spec_uint ("threads", "Threads",
          "Compute threads for the engine (0 = all cores)", 0, 1024,
          DEFAULT_THREADS,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_OUTPUT,
      g_param_spec_enum ("output", "Output",
          "What the element emits per patch", GST_TYPE_SEGMENT_OUTPUT,
          SEGMENT_OUTPUT_LABELS,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_CLASS,
      g_param_spec_uint ("class", "Class",
          "Class index whose probability output=class-map emits", 0, 255, 1,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_CLASSES,
      g_param_spec_string ("classes", "Classes",
          "Class names and colours of the loaded model (name:#rrggbb,...)",
          NULL, G_PARAM_READABLE | G_PARAM_STATIC_STRINGS));

  gst_element_class_add_static_pad_template_with_gtype (element_class,
      &sink_template, GST_TYPE_AGGREGATOR_PAD);
  gst_element_class_add_static_pad_template_with_gtype (element_class,
      &src_template, GST_TYPE_AGGREGATOR_PAD);
  gst_element_class_set_static_metadata (element_class,
      "Segmentation (FCN, U-Net, DeepLab)", "Filter/Analyzer/Video",
      "Semantic segmentation of slide patches by a fully convolutional "
      "network; emits class labels or probabilities",
      "gst-wsiseg developers");

  agg_class->aggregate = GST_DEBUG_FUNCPTR (gst_segment_fcn_aggregate);
  agg_class->sink_event = GST_DEBUG_FUNCPTR (gst_segment_fcn_sink_event);
  agg_class->start = GST_DEBUG_FUNCPTR (gst_segment_fcn_start);
  agg_class->stop = GST_DEBUG_FUNCPTR (gst_segment_fcn_stop);
  agg_class->flush = GST_DEBUG_FUNCPTR (gst_segment_fcn_flush);

  gst_type_mark_as_plugin_api (GST_TYPE_SEGMENT_OUTPUT, 0);
}

static void
gst_segment_fcn_init (GstSegmentFcn * self)
{
  GstPadTemplate *templ =
      gst_element_class_get_pad_template (GST_ELEMENT_GET_CLASS (self), "sink");
  GstPad *pad = g_object_new (GST_TYPE_AGGREGATOR_PAD, "name", "sink",
      "direction", GST_PAD_SINK, "template", templ, NULL);

  gst_element_add_pad (GST_ELEMENT (self), pad);
  self->batch_size = DEFAULT_BATCH_SIZE;
  self->batch_timeout = DEFAULT_BATCH_TIMEOUT;
  self->threads = DEFAULT_THREADS;
  self->output = SEGMENT_OUTPUT_LABELS;
  self->class_index = 1;
  self->pending = g_ptr_array_new_with_free_func (
      (GDestroyNotify) gst_buffer_unref);
  g_object_set (self, "latency", DEFAULT_BATCH_TIMEOUT, NULL);
}
