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
#include "safetensors.h"
#include "wsimodel.h"
#include "wsitrain.h"

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

typedef enum
{
  SEGMENT_MODE_INFER,
  SEGMENT_MODE_TRAIN,
  SEGMENT_MODE_PRETRAIN,
} SegmentMode;

#define GST_TYPE_SEGMENT_MODE (gst_segment_mode_get_type ())
static GType
gst_segment_mode_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {SEGMENT_MODE_INFER, "Segment patches with the model", "infer"},
    {SEGMENT_MODE_TRAIN, "Train on image + annotation pairs "
          "(request the 'annotation' pad)", "train"},
    {SEGMENT_MODE_PRETRAIN, "Autoencoder pretraining of the encoder on "
          "unlabelled patches", "pretrain"},
    {0, NULL, NULL}
  };

  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstSegmentFcnMode", values);
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
  SegmentMode mode;
  /* training properties */
  gchar *checkpoint;
  guint checkpoint_interval;
  gboolean resume;
  gchar *init_from, *init_from_prefix;
  gchar *freeze;
  gint64 freeze_steps;
  gchar *loss, *class_weights, *optimizer, *schedule;
  gdouble lr, momentum, weight_decay;
  guint64 warmup_steps, total_steps, seed;

  /* state */
  WsiModel *model;
  WsiModelInfo train_info;      /* facts of the model being trained */
  WsiTrainer *trainer;
  GstAggregatorPad *image_pad, *annot_pad;
  GstVideoInfo annot_vinfo;
  gboolean annot_caps_ok;
  GPtrArray *pending_labels;    /* annotation buffers paired with pending */
  guint8 *label_batch;
  GHashTable *epoch_slides;     /* slides seen in the current epoch */
  gchar *last_slide;
  gint epoch;
  gdouble epoch_loss, epoch_acc;
  guint64 epoch_steps;
  gint64 last_saved_step;
  gboolean input_is_tensor;
  gint width, height;
  GstVideoInfo in_vinfo;
  GstCaps *src_caps;            /* what the current input makes us output */
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
  PROP_MODE,
  PROP_CHECKPOINT,
  PROP_CHECKPOINT_INTERVAL,
  PROP_RESUME,
  PROP_INIT_FROM,
  PROP_INIT_FROM_PREFIX,
  PROP_FREEZE,
  PROP_FREEZE_STEPS,
  PROP_LOSS,
  PROP_CLASS_WEIGHTS,
  PROP_OPTIMIZER,
  PROP_LEARNING_RATE,
  PROP_MOMENTUM,
  PROP_WEIGHT_DECAY,
  PROP_LR_SCHEDULE,
  PROP_WARMUP_STEPS,
  PROP_TOTAL_STEPS,
  PROP_SEED,
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

static GstStaticPadTemplate annotation_template =
GST_STATIC_PAD_TEMPLATE ("annotation", GST_PAD_SINK, GST_PAD_REQUEST,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE ("GRAY8")));

static GstStaticPadTemplate src_template =
GST_STATIC_PAD_TEMPLATE ("src", GST_PAD_SRC, GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE ("GRAY8") "; " TENSOR_CAPS_OUT));

G_DEFINE_TYPE (GstSegmentFcn, gst_segment_fcn, GST_TYPE_AGGREGATOR);
GST_ELEMENT_REGISTER_DEFINE (segment_fcn, "segment-fcn", GST_RANK_NONE,
    GST_TYPE_SEGMENT_FCN);

static const WsiModelInfo *
model_info (GstSegmentFcn * self)
{
  return self->model ? wsi_model_info (self->model) : &self->train_info;
}

static gboolean
have_model (GstSegmentFcn * self)
{
  return self->model != NULL || self->trainer != NULL;
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

/* The model file's metadata as key, value, ..., NULL (for a new trainer). */
static gchar **
read_metadata_pairs (const gchar * path, gchar * err, gsize errlen)
{
  WsiSafetensors *st = wsi_safetensors_open (path, err, errlen);
  GPtrArray *kv;

  if (!st)
    return NULL;
  kv = g_ptr_array_new ();
  for (gsize i = 0; i < wsi_safetensors_n_metadata (st); i++) {
    const gchar *key = wsi_safetensors_metadata_key (st, i);
    g_ptr_array_add (kv, g_strdup (key));
    g_ptr_array_add (kv, g_strdup (wsi_safetensors_metadata (st, key)));
  }
  g_ptr_array_add (kv, NULL);
  wsi_safetensors_free (st);
  return (gchar **) g_ptr_array_free (kv, FALSE);
}

static gboolean
make_train_config (GstSegmentFcn * self, WsiTrainConfig * cfg, gchar * err,
    gsize errlen)
{
  gint kind;

  wsi_train_config_init (cfg);
  cfg->threads = (int) self->threads;
  cfg->lr = self->lr;
  cfg->momentum = self->momentum;
  cfg->weight_decay = self->weight_decay;
  cfg->warmup_steps = (int64_t) self->warmup_steps;
  cfg->total_steps = (int64_t) self->total_steps;
  cfg->freeze_steps = self->freeze_steps;
  if ((kind = wsi_optim_kind_from_string (self->optimizer)) < 0) {
    g_snprintf (err, errlen, "unknown optimizer '%s' (sgd, adam, adamw)",
        self->optimizer);
    return FALSE;
  }
  cfg->optim = kind;
  if ((kind = wsi_sched_kind_from_string (self->schedule)) < 0) {
    g_snprintf (err, errlen, "unknown lr-schedule '%s' (constant, step, "
        "cosine)", self->schedule);
    return FALSE;
  }
  cfg->schedule = kind;
  if (cfg->schedule == WSI_SCHED_COSINE && cfg->total_steps <= 0) {
    g_snprintf (err, errlen, "lr-schedule=cosine needs total-steps");
    return FALSE;
  }
  if (self->mode == SEGMENT_MODE_PRETRAIN)
    cfg->loss.kind = WSI_LOSS_MSE;
  else if ((kind = wsi_loss_kind_from_string (self->loss)) < 0
      || kind == WSI_LOSS_MSE) {
    g_snprintf (err, errlen, "unknown loss '%s' (ce, dice, ce+dice, bce)",
        self->loss);
    return FALSE;
  } else {
    cfg->loss.kind = kind;
  }
  if (self->class_weights && *self->class_weights) {
    gchar **w = g_strsplit (self->class_weights, ",", -1);
    guint n = g_strv_length (w);
    for (guint i = 0; i < n && i < WSI_LOSS_MAX_CLASSES; i++) {
      gchar *end = NULL;
      gdouble v = g_ascii_strtod (w[i], &end);
      if (!end || *end || !(v >= 0) || !isfinite (v)) {
        g_snprintf (err, errlen, "class-weights: '%s' is not a weight >= 0",
            w[i]);
        g_strfreev (w);
        return FALSE;
      }
      cfg->loss.class_weights[i] = (float) v;
    }
    cfg->loss.n_class_weights = (int) MIN (n, WSI_LOSS_MAX_CLASSES);
    g_strfreev (w);
  }
  if (self->freeze && *self->freeze
      && wsi_train_config_set_freeze (cfg, self->freeze, err, errlen) != 0)
    return FALSE;
  return wsi_train_config_check (cfg, err, errlen) == 0;
}

static void
post_element_message (GstSegmentFcn * self, GstStructure * s)
{
  gst_element_post_message (GST_ELEMENT (self),
      gst_message_new_element (GST_OBJECT (self), s));
}

static gboolean
create_trainer (GstSegmentFcn * self)
{
  WsiTrainConfig cfg;
  gchar err[512] = "";

  if (!make_train_config (self, &cfg, err, sizeof err)) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("Invalid training settings: %s", err), (NULL));
    return FALSE;
  }
  if (wsi_model_info_load (self->model_path, &self->train_info, err,
          sizeof err) != 0)
    goto load_failed;
  if (self->mode == SEGMENT_MODE_PRETRAIN && !self->resume) {
    gchar **meta = read_metadata_pairs (self->model_path, err, sizeof err);
    WsiInitFromReport rep;
    if (!meta)
      goto load_failed;
    self->trainer = wsi_trainer_new ((const char *const *) meta,
        WSI_TASK_PRETRAIN, &cfg, self->seed, err, sizeof err);
    g_strfreev (meta);
    /* start from the model file's encoder weights */
    if (self->trainer && wsi_trainer_init_from (self->trainer,
            self->model_path, NULL, &rep, err, sizeof err) != 0)
      g_clear_pointer (&self->trainer, wsi_trainer_free);
  } else {
    self->trainer = wsi_trainer_new_from_file (self->model_path, &cfg,
        self->resume, err, sizeof err);
  }
  if (!self->trainer)
    goto load_failed;
  if (self->init_from && *self->init_from) {
    WsiInitFromReport rep;
    if (wsi_trainer_init_from (self->trainer, self->init_from,
            self->init_from_prefix, &rep, err, sizeof err) != 0) {
      GST_ELEMENT_ERROR (self, RESOURCE, OPEN_READ,
          ("init-from \"%s\": %s", self->init_from, err), (NULL));
      return FALSE;
    }
    post_element_message (self, gst_structure_new ("segment-fcn-init-from",
            "location", G_TYPE_STRING, self->init_from,
            "copied", G_TYPE_INT, rep.n_copied,
            "shape-mismatch", G_TYPE_INT, rep.n_shape_mismatch,
            "unused", G_TYPE_INT, rep.n_unused,
            "net-params", G_TYPE_INT, rep.n_net_params, NULL));
  }
  self->last_saved_step = wsi_trainer_get_step (self->trainer);
  self->epoch = wsi_trainer_get_epoch (self->trainer);
  GST_INFO_OBJECT (self, "training %s from step %" G_GINT64_FORMAT,
      self->model_path, self->last_saved_step);
  return TRUE;

load_failed:
  GST_ELEMENT_ERROR (self, RESOURCE, OPEN_READ,
      ("Could not load model \"%s\" for training: %s", self->model_path,
          err), (NULL));
  return FALSE;
}

static gboolean
ensure_model (GstSegmentFcn * self)
{
  gchar err[512] = "";

  if (have_model (self))
    return TRUE;
  if (!self->model_path || !*self->model_path) {
    GST_ELEMENT_ERROR (self, RESOURCE, NOT_FOUND,
        ("No model file given."), ("Set the 'model' property to a "
            ".safetensors model file (see docs/model-format.md)."));
    return FALSE;
  }
  if (self->mode != SEGMENT_MODE_INFER)
    return create_trainer (self);
  self->model = wsi_model_load (self->model_path, (int) self->threads, err,
      sizeof err);
  if (!self->model) {
    GST_ELEMENT_ERROR (self, RESOURCE, OPEN_READ,
        ("Could not load model \"%s\": %s", self->model_path, err), (NULL));
    return FALSE;
  }
  GST_INFO_OBJECT (self, "loaded %s (%s, %d classes)", self->model_path,
      model_info (self)->arch, model_info (self)->n_classes);
  return TRUE;
}

static GstCaps *
make_src_caps (GstSegmentFcn * self, const GstCaps * in_caps)
{
  const WsiModelInfo *info = model_info (self);
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
  info = model_info (self);

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
  gst_caps_replace (&self->src_caps, src_caps);
  gst_aggregator_set_src_caps (GST_AGGREGATOR (self), src_caps);
  gst_caps_unref (src_caps);
  return TRUE;
}

/* The output follows from the input and the model: never fixate the
 * template (the base class would when it renegotiates). */
static GstFlowReturn
gst_segment_fcn_update_src_caps (GstAggregator * agg, GstCaps * caps,
    GstCaps ** ret)
{
  GstSegmentFcn *self = GST_SEGMENT_FCN (agg);

  if (!self->src_caps)
    return GST_AGGREGATOR_FLOW_NEED_DATA;
  *ret = gst_caps_intersect (caps, self->src_caps);
  if (gst_caps_is_empty (*ret)) {
    gst_caps_replace (ret, NULL);
    return GST_FLOW_NOT_NEGOTIATED;
  }
  return GST_FLOW_OK;
}

static gboolean
gst_segment_fcn_sink_event (GstAggregator * agg, GstAggregatorPad * pad,
    GstEvent * event)
{
  GstSegmentFcn *self = GST_SEGMENT_FCN (agg);

  if (GST_EVENT_TYPE (event) == GST_EVENT_CAPS && pad == self->annot_pad) {
    GstCaps *caps;
    gst_event_parse_caps (event, &caps);
    self->annot_caps_ok = gst_video_info_from_caps (&self->annot_vinfo, caps);
  } else if (GST_EVENT_TYPE (event) == GST_EVENT_CAPS) {
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
  const WsiModelInfo *info = model_info (self);
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
  const gint nc = model_info (self)->n_classes;
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
  const gint nc = model_info (self)->n_classes;
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

/* ------------------------------------------------------------- training */

static gchar *
describe_patch (GstBuffer * buf)
{
  GstWsiTileMeta *m = gst_buffer_get_wsi_tile_meta (buf);

  if (!m)
    return g_strdup ("(patch without tile metadata)");
  return g_strdup_printf ("slide '%s', patch at level-0 (%" G_GINT64_FORMAT
      ", %" G_GINT64_FORMAT ")", m->slide ? m->slide : "", m->x, m->y);
}

static gboolean
save_checkpoint (GstSegmentFcn * self)
{
  gchar err[512] = "";
  gint64 step = wsi_trainer_get_step (self->trainer);

  if (!self->checkpoint || !*self->checkpoint || step == self->last_saved_step)
    return TRUE;
  if (wsi_trainer_save (self->trainer, self->checkpoint, err, sizeof err)) {
    GST_ELEMENT_ERROR (self, RESOURCE, WRITE,
        ("Could not write checkpoint \"%s\": %s", self->checkpoint, err),
        (NULL));
    return FALSE;
  }
  self->last_saved_step = step;
  post_element_message (self, gst_structure_new ("segment-fcn-checkpoint",
          "location", G_TYPE_STRING, self->checkpoint,
          "step", G_TYPE_INT64, step,
          "epoch", G_TYPE_INT, self->epoch, NULL));
  return TRUE;
}

static void
end_epoch (GstSegmentFcn * self)
{
  if (self->epoch_steps == 0)
    return;
  post_element_message (self, gst_structure_new ("segment-fcn-epoch",
          "epoch", G_TYPE_INT, self->epoch,
          "steps", G_TYPE_UINT64, self->epoch_steps,
          "mean-loss", G_TYPE_DOUBLE, self->epoch_loss / self->epoch_steps,
          "mean-accuracy", G_TYPE_DOUBLE,
          self->epoch_acc / self->epoch_steps, NULL));
  self->epoch++;
  wsi_trainer_set_epoch (self->trainer, self->epoch);
  self->epoch_loss = self->epoch_acc = 0;
  self->epoch_steps = 0;
  g_hash_table_remove_all (self->epoch_slides);
}

/* A dataset pass ends when a slide seen in this pass comes back. */
static void
track_epoch (GstSegmentFcn * self, GstBuffer * buf)
{
  GstWsiTileMeta *m = gst_buffer_get_wsi_tile_meta (buf);

  if (!m || !m->slide || g_strcmp0 (m->slide, self->last_slide) == 0)
    return;
  if (g_hash_table_contains (self->epoch_slides, m->slide))
    end_epoch (self);
  g_hash_table_add (self->epoch_slides, g_strdup (m->slide));
  g_free (self->last_slide);
  self->last_slide = g_strdup (m->slide);
}

static gboolean
fill_labels (GstSegmentFcn * self, GstBuffer * ann, GstBuffer * img,
    guint8 * dst)
{
  const gint nc = model_info (self)->n_classes;
  const gint max_label = nc == 1 ? 1 : nc - 1;
  GstVideoFrame frame;

  if (!self->annot_caps_ok
      || GST_VIDEO_INFO_WIDTH (&self->annot_vinfo) != self->width
      || GST_VIDEO_INFO_HEIGHT (&self->annot_vinfo) != self->height) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT,
        ("Annotation patches must be GRAY8 of the image patch size %dx%d.",
            self->width, self->height), (NULL));
    return FALSE;
  }
  if (!gst_video_frame_map (&frame, &self->annot_vinfo, ann, GST_MAP_READ))
    return FALSE;
  for (gint y = 0; y < self->height; y++) {
    const guint8 *row = (const guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&frame, 0)
        + y * GST_VIDEO_FRAME_PLANE_STRIDE (&frame, 0);
    memcpy (dst + (gsize) y * self->width, row, self->width);
    for (gint x = 0; x < self->width; x++) {
      if (row[x] > max_label && row[x] != 255) {
        gchar *where = describe_patch (img);
        gst_video_frame_unmap (&frame);
        GST_ELEMENT_ERROR (self, STREAM, FORMAT,
            ("Label %u at (%d, %d) of %s is beyond the model's %d classes "
                "(255 = ignore).", row[x], x, y, where, nc), (NULL));
        g_free (where);
        return FALSE;
      }
    }
  }
  gst_video_frame_unmap (&frame);
  return TRUE;
}

static GstFlowReturn
train_batch (GstSegmentFcn * self)
{
  const guint n = self->pending->len;
  const gsize in_elems = (gsize) self->width * self->height * 3;
  const gsize npix = (gsize) self->width * self->height;
  const gboolean pretrain = self->mode == SEGMENT_MODE_PRETRAIN;
  WsiStepResult res;
  gchar err[512] = "";
  gint64 t0;

  if (n == 0)
    return GST_FLOW_OK;
  if (self->batch_capacity < n) {
    g_free (self->in_batch);
    g_free (self->label_batch);
    self->in_batch = g_new (gfloat, in_elems * n);
    self->label_batch = g_new (guint8, npix * n);
    self->batch_capacity = n;
  }
  for (guint i = 0; i < n; i++) {
    GstBuffer *img = g_ptr_array_index (self->pending, i);
    if (!fill_input (self, img, self->in_batch + in_elems * i)
        || (!pretrain && !fill_labels (self,
                g_ptr_array_index (self->pending_labels, i), img,
                self->label_batch + npix * i)))
      goto failed;
  }
  t0 = g_get_monotonic_time ();
  if (wsi_trainer_step (self->trainer, self->in_batch, (int) n, self->height,
          self->width, pretrain ? NULL : self->label_batch, &res, err,
          sizeof err) != 0) {
    GST_ELEMENT_ERROR (self, LIBRARY, FAILED,
        ("Training step %" G_GINT64_FORMAT " failed: %s",
            wsi_trainer_get_step (self->trainer) + 1, err),
        ("The last good checkpoint (step %" G_GINT64_FORMAT ") is kept%s%s.",
            self->last_saved_step, self->checkpoint ? " at " : "",
            self->checkpoint ? self->checkpoint : ""));
    goto failed;
  }
  self->busy_seconds += (g_get_monotonic_time () - t0) / 1e6;
  self->patches += n;
  self->batches++;
  self->epoch_loss += res.loss;
  self->epoch_acc += res.accuracy;
  self->epoch_steps++;
  post_element_message (self, gst_structure_new ("segment-fcn-train",
          "step", G_TYPE_INT64, res.step,
          "epoch", G_TYPE_INT, self->epoch,
          "loss", G_TYPE_DOUBLE, res.loss,
          "ce", G_TYPE_DOUBLE, res.ce,
          "dice", G_TYPE_DOUBLE, res.dice,
          "accuracy", G_TYPE_DOUBLE, res.accuracy,
          "lr", G_TYPE_DOUBLE, res.lr,
          "grad-norm", G_TYPE_DOUBLE, res.grad_norm,
          "batch", G_TYPE_UINT, n, NULL));
  g_ptr_array_set_size (self->pending, 0);
  g_ptr_array_set_size (self->pending_labels, 0);
  if (self->checkpoint_interval > 0
      && res.step % self->checkpoint_interval == 0 && !save_checkpoint (self))
    return GST_FLOW_ERROR;
  return GST_FLOW_OK;

failed:
  g_ptr_array_set_size (self->pending, 0);
  g_ptr_array_set_size (self->pending_labels, 0);
  return GST_FLOW_ERROR;
}

static GstFlowReturn
finish_training (GstSegmentFcn * self)
{
  GstFlowReturn ret = train_batch (self);

  if (ret != GST_FLOW_OK)
    return ret;
  end_epoch (self);
  if (!save_checkpoint (self))
    return GST_FLOW_ERROR;
  return GST_FLOW_EOS;
}

/* Image and annotation patches are paired by their tile metadata: both
 * branches of a tee carry the same patch sequence numbers, so a patch whose
 * partner is missing (dropped on one branch) is skipped with a warning. */
static GstFlowReturn
aggregate_train (GstSegmentFcn * self)
{
  GstBuffer *img, *ann = NULL;
  GstWsiTileMeta *mi, *ma;

  if (!have_model (self))
    return GST_FLOW_OK;
  img = gst_aggregator_pad_peek_buffer (self->image_pad);
  if (self->mode == SEGMENT_MODE_TRAIN) {
    if (!self->annot_pad) {
      if (img)
        gst_buffer_unref (img);
      GST_ELEMENT_ERROR (self, CORE, PAD,
          ("mode=train needs the annotation pad linked."),
          ("Link label patches to segment-fcn's 'annotation' pad, e.g. "
              "t. ! queue ! labelpatch masks=... ! seg.annotation"));
      return GST_FLOW_ERROR;
    }
    ann = gst_aggregator_pad_peek_buffer (self->annot_pad);
  }
  if (!img || (self->mode == SEGMENT_MODE_TRAIN && !ann)) {
    gboolean img_done = !img && gst_aggregator_pad_is_eos (self->image_pad);
    gboolean ann_done = self->mode == SEGMENT_MODE_TRAIN && !ann
        && gst_aggregator_pad_is_eos (self->annot_pad);
    if (img)
      gst_buffer_unref (img);
    if (ann)
      gst_buffer_unref (ann);
    if (img_done || ann_done) {
      if (img_done != ann_done && self->mode == SEGMENT_MODE_TRAIN)
        GST_ELEMENT_WARNING (self, STREAM, FAILED,
            ("The %s stream ended before the %s stream; unpaired patches "
                "are not used.", img_done ? "image" : "annotation",
                img_done ? "annotation" : "image"), (NULL));
      return finish_training (self);
    }
    return GST_FLOW_OK;
  }
  if (ann) {
    mi = gst_buffer_get_wsi_tile_meta (img);
    ma = gst_buffer_get_wsi_tile_meta (ann);
    if (mi && ma && mi->frame != ma->frame) {
      gboolean drop_image = mi->frame < ma->frame;
      gchar *where = describe_patch (drop_image ? img : ann);
      GST_ELEMENT_WARNING (self, STREAM, FAILED,
          ("No %s for %s: patch skipped.",
              drop_image ? "annotation" : "image", where), (NULL));
      g_free (where);
      gst_buffer_unref (img);
      gst_buffer_unref (ann);
      gst_aggregator_pad_drop_buffer (drop_image ? self->image_pad :
          self->annot_pad);
      return GST_FLOW_OK;
    }
    if (mi && ma && (mi->x != ma->x || mi->y != ma->y
            || g_strcmp0 (mi->slide, ma->slide) != 0)) {
      gchar *a = describe_patch (img), *b = describe_patch (ann);
      GST_ELEMENT_ERROR (self, STREAM, FAILED,
          ("Image and annotation patches disagree: %s vs %s.", a, b),
          ("Feed both pads from the two branches of one tee after "
              "patchify."));
      g_free (a);
      g_free (b);
      gst_buffer_unref (img);
      gst_buffer_unref (ann);
      return GST_FLOW_ERROR;
    }
    gst_aggregator_pad_drop_buffer (self->annot_pad);
    g_ptr_array_add (self->pending_labels, ann);
  }
  gst_aggregator_pad_drop_buffer (self->image_pad);
  track_epoch (self, img);
  g_ptr_array_add (self->pending, img);
  if (self->pending->len >= self->batch_size)
    return train_batch (self);
  return GST_FLOW_OK;
}

static GstAggregatorPad *
gst_segment_fcn_create_new_pad (GstAggregator * agg, GstPadTemplate * templ,
    const gchar * req_name, const GstCaps * caps)
{
  GstSegmentFcn *self = GST_SEGMENT_FCN (agg);
  GstAggregatorPad *pad;

  if (g_strcmp0 (GST_PAD_TEMPLATE_NAME_TEMPLATE (templ), "annotation") != 0
      || self->annot_pad)
    return NULL;
  pad = g_object_new (GST_TYPE_AGGREGATOR_PAD, "name", "annotation",
      "direction", GST_PAD_SINK, "template", templ, NULL);
  self->annot_pad = pad;
  return pad;
}

static void
gst_segment_fcn_release_pad (GstElement * element, GstPad * pad)
{
  GstSegmentFcn *self = GST_SEGMENT_FCN (element);

  if (GST_AGGREGATOR_PAD (pad) == self->annot_pad)
    self->annot_pad = NULL;
  GST_ELEMENT_CLASS (gst_segment_fcn_parent_class)->release_pad (element, pad);
}

static GstFlowReturn
gst_segment_fcn_aggregate (GstAggregator * agg, gboolean timeout)
{
  GstSegmentFcn *self = GST_SEGMENT_FCN (agg);
  GstAggregatorPad *pad = self->image_pad;
  GstBuffer *buf;
  GstFlowReturn ret;

  if (self->mode != SEGMENT_MODE_INFER)
    return aggregate_train (self);

  buf = gst_aggregator_pad_pop_buffer (pad);
  if (buf) {
    if (!have_model (self)) {
      gst_buffer_unref (buf);
      GST_ELEMENT_ERROR (self, CORE, NEGOTIATION,
          ("Data before caps: no model configured."), (NULL));
      return GST_FLOW_NOT_NEGOTIATED;
    }
    g_ptr_array_add (self->pending, buf);
    if (self->pending->len >= self->batch_size || timeout)
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

/* Live streams: a partial batch times out at the running time of its
 * oldest patch plus the latency (batch-timeout). */
static GstClockTime
gst_segment_fcn_get_next_time (GstAggregator * agg)
{
  GstSegmentFcn *self = GST_SEGMENT_FCN (agg);
  GstBuffer *oldest;
  GstClockTime ts;

  if (self->mode != SEGMENT_MODE_INFER || self->pending->len == 0)
    return GST_CLOCK_TIME_NONE;
  oldest = g_ptr_array_index (self->pending, 0);
  ts = GST_BUFFER_PTS_IS_VALID (oldest) ? GST_BUFFER_PTS (oldest) :
      GST_BUFFER_DTS (oldest);
  if (!GST_CLOCK_TIME_IS_VALID (ts))
    return 0;
  return gst_segment_to_running_time (&self->image_pad->segment,
      GST_FORMAT_TIME, ts);
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
  g_ptr_array_set_size (self->pending_labels, 0);
  g_clear_pointer (&self->in_batch, g_free);
  g_clear_pointer (&self->out_batch, g_free);
  g_clear_pointer (&self->label_batch, g_free);
  self->batch_capacity = 0;
  g_clear_pointer (&self->model, wsi_model_free);
  g_clear_pointer (&self->trainer, wsi_trainer_free);
  wsi_model_info_clear (&self->train_info);
  g_hash_table_remove_all (self->epoch_slides);
  g_clear_pointer (&self->last_slide, g_free);
  self->epoch_loss = self->epoch_acc = 0;
  self->epoch_steps = 0;
  gst_caps_replace (&self->src_caps, NULL);
  return TRUE;
}

static gboolean
gst_segment_fcn_flush (GstAggregator * agg)
{
  GstSegmentFcn *self = GST_SEGMENT_FCN (agg);

  g_ptr_array_set_size (self->pending, 0);
  g_ptr_array_set_size (self->pending_labels, 0);
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
    case PROP_MODE:
      self->mode = g_value_get_enum (value);
      break;
    case PROP_CHECKPOINT:
      g_free (self->checkpoint);
      self->checkpoint = g_value_dup_string (value);
      break;
    case PROP_CHECKPOINT_INTERVAL:
      self->checkpoint_interval = g_value_get_uint (value);
      break;
    case PROP_RESUME:
      self->resume = g_value_get_boolean (value);
      break;
    case PROP_INIT_FROM:
      g_free (self->init_from);
      self->init_from = g_value_dup_string (value);
      break;
    case PROP_INIT_FROM_PREFIX:
      g_free (self->init_from_prefix);
      self->init_from_prefix = g_value_dup_string (value);
      break;
    case PROP_FREEZE:
      g_free (self->freeze);
      self->freeze = g_value_dup_string (value);
      break;
    case PROP_FREEZE_STEPS:
      self->freeze_steps = g_value_get_int64 (value);
      break;
    case PROP_LOSS:
      g_free (self->loss);
      self->loss = g_value_dup_string (value);
      break;
    case PROP_CLASS_WEIGHTS:
      g_free (self->class_weights);
      self->class_weights = g_value_dup_string (value);
      break;
    case PROP_OPTIMIZER:
      g_free (self->optimizer);
      self->optimizer = g_value_dup_string (value);
      break;
    case PROP_LEARNING_RATE:
      self->lr = g_value_get_double (value);
      break;
    case PROP_MOMENTUM:
      self->momentum = g_value_get_double (value);
      break;
    case PROP_WEIGHT_DECAY:
      self->weight_decay = g_value_get_double (value);
      break;
    case PROP_LR_SCHEDULE:
      g_free (self->schedule);
      self->schedule = g_value_dup_string (value);
      break;
    case PROP_WARMUP_STEPS:
      self->warmup_steps = g_value_get_uint64 (value);
      break;
    case PROP_TOTAL_STEPS:
      self->total_steps = g_value_get_uint64 (value);
      break;
    case PROP_SEED:
      self->seed = g_value_get_uint64 (value);
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

  if (!have_model (self))
    return g_string_free (s, FALSE);
  info = model_info (self);
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
    case PROP_MODE:
      g_value_set_enum (value, self->mode);
      break;
    case PROP_CHECKPOINT:
      g_value_set_string (value, self->checkpoint);
      break;
    case PROP_CHECKPOINT_INTERVAL:
      g_value_set_uint (value, self->checkpoint_interval);
      break;
    case PROP_RESUME:
      g_value_set_boolean (value, self->resume);
      break;
    case PROP_INIT_FROM:
      g_value_set_string (value, self->init_from);
      break;
    case PROP_INIT_FROM_PREFIX:
      g_value_set_string (value, self->init_from_prefix);
      break;
    case PROP_FREEZE:
      g_value_set_string (value, self->freeze);
      break;
    case PROP_FREEZE_STEPS:
      g_value_set_int64 (value, self->freeze_steps);
      break;
    case PROP_LOSS:
      g_value_set_string (value, self->loss);
      break;
    case PROP_CLASS_WEIGHTS:
      g_value_set_string (value, self->class_weights);
      break;
    case PROP_OPTIMIZER:
      g_value_set_string (value, self->optimizer);
      break;
    case PROP_LEARNING_RATE:
      g_value_set_double (value, self->lr);
      break;
    case PROP_MOMENTUM:
      g_value_set_double (value, self->momentum);
      break;
    case PROP_WEIGHT_DECAY:
      g_value_set_double (value, self->weight_decay);
      break;
    case PROP_LR_SCHEDULE:
      g_value_set_string (value, self->schedule);
      break;
    case PROP_WARMUP_STEPS:
      g_value_set_uint64 (value, self->warmup_steps);
      break;
    case PROP_TOTAL_STEPS:
      g_value_set_uint64 (value, self->total_steps);
      break;
    case PROP_SEED:
      g_value_set_uint64 (value, self->seed);
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
  g_free (self->checkpoint);
  g_free (self->init_from);
  g_free (self->init_from_prefix);
  g_free (self->freeze);
  g_free (self->loss);
  g_free (self->class_weights);
  g_free (self->optimizer);
  g_free (self->schedule);
  g_free (self->last_slide);
  g_free (self->label_batch);
  g_hash_table_unref (self->epoch_slides);
  g_ptr_array_unref (self->pending_labels);
  g_clear_pointer (&self->trainer, wsi_trainer_free);
  wsi_model_info_clear (&self->train_info);
  g_ptr_array_unref (self->pending);
  g_free (self->in_batch);
  g_free (self->out_batch);
  g_clear_pointer (&self->model, wsi_model_free);
  gst_caps_replace (&self->src_caps, NULL);
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


#define TRAIN_FLAGS (G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | \
    GST_PARAM_MUTABLE_READY)
  g_object_class_install_property (gobject_class, PROP_MODE,
      g_param_spec_enum ("mode", "Mode", "Inference, training (with the "
          "annotation pad) or autoencoder pretraining",
          GST_TYPE_SEGMENT_MODE, SEGMENT_MODE_INFER, TRAIN_FLAGS));
  g_object_class_install_property (gobject_class, PROP_CHECKPOINT,
      g_param_spec_string ("checkpoint", "Checkpoint",
          "Training: checkpoint file written atomically every "
          "checkpoint-interval steps and at EOS (model + optimiser state)",
          NULL, TRAIN_FLAGS));
  g_object_class_install_property (gobject_class, PROP_CHECKPOINT_INTERVAL,
      g_param_spec_uint ("checkpoint-interval", "Checkpoint interval",
          "Training: steps between checkpoints (0: only at EOS)", 0,
          G_MAXUINT, 100, TRAIN_FLAGS));
  g_object_class_install_property (gobject_class, PROP_RESUME,
      g_param_spec_boolean ("resume", "Resume",
          "Training: 'model' is a checkpoint; continue its step count, "
          "epoch and optimiser state", FALSE, TRAIN_FLAGS));
  g_object_class_install_property (gobject_class, PROP_INIT_FROM,
      g_param_spec_string ("init-from", "Initialise from",
          "Training: copy every parameter whose name and shape match from "
          "this model file (transfer learning)", NULL, TRAIN_FLAGS));
  g_object_class_install_property (gobject_class, PROP_INIT_FROM_PREFIX,
      g_param_spec_string ("init-from-prefix", "Init-from prefix",
          "Training: copy only parameters whose names start with one of "
          "these comma-separated prefixes (e.g. encoder.)", NULL,
          TRAIN_FLAGS));
  g_object_class_install_property (gobject_class, PROP_FREEZE,
      g_param_spec_string ("freeze", "Freeze",
          "Training: comma-separated parameter-name prefixes not updated "
          "during the first freeze-steps steps (e.g. encoder.,down.)", NULL,
          TRAIN_FLAGS));
  g_object_class_install_property (gobject_class, PROP_FREEZE_STEPS,
      g_param_spec_int64 ("freeze-steps", "Freeze steps",
          "Training: steps the frozen prefixes stay fixed (-1: always)", -1,
          G_MAXINT64, 0, TRAIN_FLAGS));
  g_object_class_install_property (gobject_class, PROP_LOSS,
      g_param_spec_string ("loss", "Loss",
          "Training loss: ce, dice, ce+dice, bce (one-class models)", "ce",
          TRAIN_FLAGS));
  g_object_class_install_property (gobject_class, PROP_CLASS_WEIGHTS,
      g_param_spec_string ("class-weights", "Class weights",
          "Training: comma-separated cross-entropy weight per class", NULL,
          TRAIN_FLAGS));
  g_object_class_install_property (gobject_class, PROP_OPTIMIZER,
      g_param_spec_string ("optimizer", "Optimizer",
          "Training optimiser: sgd (momentum), adam, adamw", "sgd",
          TRAIN_FLAGS));
  g_object_class_install_property (gobject_class, PROP_LEARNING_RATE,
      g_param_spec_double ("learning-rate", "Learning rate",
          "Training: base learning rate", 1e-9, 10.0, 0.01, TRAIN_FLAGS));
  g_object_class_install_property (gobject_class, PROP_MOMENTUM,
      g_param_spec_double ("momentum", "Momentum", "Training: SGD momentum",
          0.0, 0.999, 0.9, TRAIN_FLAGS));
  g_object_class_install_property (gobject_class, PROP_WEIGHT_DECAY,
      g_param_spec_double ("weight-decay", "Weight decay",
          "Training: L2 weight decay (decoupled for adamw)", 0.0, 1.0, 0.0,
          TRAIN_FLAGS));
  g_object_class_install_property (gobject_class, PROP_LR_SCHEDULE,
      g_param_spec_string ("lr-schedule", "LR schedule",
          "Training: constant, step or cosine (cosine needs total-steps)",
          "constant", TRAIN_FLAGS));
  g_object_class_install_property (gobject_class, PROP_WARMUP_STEPS,
      g_param_spec_uint64 ("warmup-steps", "Warmup steps",
          "Training: linear learning-rate warmup steps", 0, G_MAXINT64, 0,
          TRAIN_FLAGS));
  g_object_class_install_property (gobject_class, PROP_TOTAL_STEPS,
      g_param_spec_uint64 ("total-steps", "Total steps",
          "Training: length of the cosine schedule", 0, G_MAXINT64, 0,
          TRAIN_FLAGS));
  g_object_class_install_property (gobject_class, PROP_SEED,
      g_param_spec_uint64 ("seed", "Seed",
          "Pretraining: seed of the new decoder's initial weights", 0,
          G_MAXUINT64, 1, TRAIN_FLAGS));

  gst_element_class_add_static_pad_template_with_gtype (element_class,
      &sink_template, GST_TYPE_AGGREGATOR_PAD);
  gst_element_class_add_static_pad_template_with_gtype (element_class,
      &annotation_template, GST_TYPE_AGGREGATOR_PAD);
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
  agg_class->get_next_time = GST_DEBUG_FUNCPTR (gst_segment_fcn_get_next_time);
  agg_class->create_new_pad =
      GST_DEBUG_FUNCPTR (gst_segment_fcn_create_new_pad);
  element_class->release_pad = GST_DEBUG_FUNCPTR (gst_segment_fcn_release_pad);
  agg_class->update_src_caps =
      GST_DEBUG_FUNCPTR (gst_segment_fcn_update_src_caps);

  gst_type_mark_as_plugin_api (GST_TYPE_SEGMENT_OUTPUT, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_SEGMENT_MODE, 0);
}

static void
gst_segment_fcn_init (GstSegmentFcn * self)
{
  GstPadTemplate *templ =
      gst_element_class_get_pad_template (GST_ELEMENT_GET_CLASS (self), "sink");
  GstPad *pad = g_object_new (GST_TYPE_AGGREGATOR_PAD, "name", "sink",
      "direction", GST_PAD_SINK, "template", templ, NULL);

  gst_element_add_pad (GST_ELEMENT (self), pad);
  self->image_pad = GST_AGGREGATOR_PAD (pad);
  self->checkpoint_interval = 100;
  self->loss = g_strdup ("ce");
  self->optimizer = g_strdup ("sgd");
  self->schedule = g_strdup ("constant");
  self->lr = 0.01;
  self->momentum = 0.9;
  self->seed = 1;
  self->pending_labels = g_ptr_array_new_with_free_func (
      (GDestroyNotify) gst_buffer_unref);
  self->epoch_slides = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
      NULL);
  self->batch_size = DEFAULT_BATCH_SIZE;
  self->batch_timeout = DEFAULT_BATCH_TIMEOUT;
  self->threads = DEFAULT_THREADS;
  self->output = SEGMENT_OUTPUT_LABELS;
  self->class_index = 1;
  self->pending = g_ptr_array_new_with_free_func (
      (GDestroyNotify) gst_buffer_unref);
  g_object_set (self, "latency", DEFAULT_BATCH_TIMEOUT, NULL);
}
