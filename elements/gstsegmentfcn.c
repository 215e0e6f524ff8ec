/* segment-fcn: semantic segmentation of patches with a fully convolutional
 * network (U-Net, FCN, DeepLab) run by the oneDNN engine in models/.
 *
 * The element surface: properties, pads, caps, and the network-specific
 * parts of the shared pieces it calls --
 *  - gst/gstwsibatch: inference batches (batch-size, live batch-timeout,
 *    outputs in order with their inputs' metadata, memory guard);
 *  - gst/gstwsitrain: mode=train / pretrain (training properties, the
 *    annotation and validation pads and their pairing, steps, epochs,
 *    checkpoints, validation runs, messages) driving models/train;
 *  - here: preprocessing, labels, the U-Net + wsi_loss step and pixel
 *    validation metrics (elements/core/wsimetrics, as segeval counts).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <math.h>
#include <string.h>

#include <gst/base/gstaggregator.h>
#include <gst/video/video.h>

#include "gstwsiaggregator.h"
#include "gstwsibatch.h"
#include "gstwsiclasses.h"
#include "gstwsipair.h"
#include "gstwsipatch.h"
#include "gstwsiprops.h"
#include "gstwsitensor.h"
#include "gstwsiseg.h"
#include "gstwsitilemeta.h"
#include "gstwsitrain.h"
#include "safetensors.h"
#include "wsimetrics.h"
#include "wsiargmax.h"
#include "wsimodel.h"
#include "wsinn.h"
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

/* The loss: a registered enum whose nicks are the strings the trainer
 * parses (wsi_loss_kind_from_string), so pipelines keep their text. The
 * other training settings are gst/gstwsitrain's. */
#define GST_TYPE_SEGMENT_LOSS (gst_segment_loss_get_type ())
static GType
gst_segment_loss_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {WSI_LOSS_CE, "Softmax cross-entropy (class-weights)", "ce"},
    {WSI_LOSS_DICE, "Soft Dice over all classes", "dice"},
    {WSI_LOSS_CE_DICE, "Cross-entropy + soft Dice", "ce+dice"},
    {WSI_LOSS_BCE, "Binary cross-entropy (one-class models)", "bce"},
    {0, NULL, NULL}
  };

  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstSegmentFcnLoss", values);
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
  WsiLossKind loss;
  gchar *class_weights;
  guint64 seed;
  guint64 max_memory;
  gboolean post_messages;

  gint running;                 /* between start and stop (gstwsiprops) */
  gchar *classes;               /* the loaded model's class list, object lock */
  GstEvent *classes_event;      /* the same in-band, until stored on src */

  /* the model */
  WsiModel *model;              /* inference */
  WsiModelInfo train_info;      /* facts of the model being trained */
  GstWsiTrain *train;           /* training driver (gst/gstwsitrain) */
  GstWsiBatch *batch;           /* inference batch (gst/gstwsibatch) */

  /* caps */
  GstAggregatorPad *image_pad;
  gboolean input_ok;            /* the image pad's caps were accepted */
  GstWsiPatchInput in;          /* patch size, kind, input batch */
  GstCaps *src_caps;            /* what the current input makes us output */

  /* outputs and validation counts */
  gfloat *out_batch;
  guint8 *val_pred_labels;
  gsize out_capacity, val_pred_capacity;
  WsiConfusion val_cm;          /* centre crops, as segeval counts */
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
  PROP_LOSS,
  PROP_CLASS_WEIGHTS,
  PROP_SEED,
  PROP_MAX_MEMORY,
  PROP_POST_MESSAGES,
  PROP_TRAIN_FIRST,             /* gst/gstwsitrain's properties follow */
};

#define DEFAULT_BATCH_SIZE 1
#define DEFAULT_BATCH_TIMEOUT (100 * GST_MSECOND)
#define DEFAULT_THREADS 0
#define DEFAULT_MAX_MEMORY (G_GUINT64_CONSTANT (4) << 30)


static GstStaticPadTemplate sink_template =
GST_STATIC_PAD_TEMPLATE ("sink", GST_PAD_SINK, GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE ("RGB") "; " GST_WSI_TENSOR_CAPS));

static GstStaticPadTemplate annotation_template =
GST_STATIC_PAD_TEMPLATE ("annotation", GST_PAD_SINK, GST_PAD_REQUEST,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE ("GRAY8")));

static GstStaticPadTemplate validation_template =
GST_STATIC_PAD_TEMPLATE ("validation", GST_PAD_SINK, GST_PAD_REQUEST,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE ("RGB") "; " GST_WSI_TENSOR_CAPS));

static GstStaticPadTemplate validation_annotation_template =
GST_STATIC_PAD_TEMPLATE ("validation_annotation", GST_PAD_SINK,
    GST_PAD_REQUEST, GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE ("GRAY8")));

static GstStaticPadTemplate src_template =
GST_STATIC_PAD_TEMPLATE ("src", GST_PAD_SRC, GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE ("GRAY8") "; " GST_WSI_TENSOR_CAPS));

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
  return self->model != NULL || gst_wsi_train_trainer (self->train) != NULL;
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

/* GstWsiTrainFuncs.configure: the loss and its class weights. */
static gboolean
train_configure (gpointer user, WsiTrainConfig * cfg, gchar * err,
    gsize errlen)
{
  GstSegmentFcn *self = user;

  cfg->threads = (int) self->threads;
  cfg->loss.kind = self->mode == SEGMENT_MODE_PRETRAIN ? WSI_LOSS_MSE :
      self->loss;
  return !self->class_weights || !*self->class_weights
      || wsi_loss_config_set_class_weights (&cfg->loss, self->class_weights,
      err, errlen) == 0;
}

/* Stores the pending classes event on the source pad (once it is active):
 * it goes downstream before the next buffer, GAP or EOS. */
static void
send_classes (GstSegmentFcn * self)
{
  if (self->classes_event && gst_pad_store_sticky_event
      (GST_AGGREGATOR_SRC_PAD (self), self->classes_event) == GST_FLOW_OK)
    gst_clear_event (&self->classes_event);
}

/* The class list of the classes property, kept under the object lock so
 * that readers never touch model state that stop() frees; and the same
 * in-band (a sticky wsi-classes event on the source pad, sent before the
 * next buffer or GAP after the caps). */
static void
update_classes (GstSegmentFcn * self)
{
  GString *s = g_string_new (NULL);
  const WsiModelInfo *info = model_info (self);
  gchar *old;

  for (gint c = 0; c < info->n_classes; c++)
    g_string_append_printf (s, "%s%s:#%02x%02x%02x", c ? "," : "",
        info->class_names[c], info->class_colors[c][0],
        info->class_colors[c][1], info->class_colors[c][2]);
  GST_OBJECT_LOCK (self);
  old = self->classes;
  self->classes = g_string_free (s, FALSE);
  GST_OBJECT_UNLOCK (self);
  g_free (old);
  gst_clear_event (&self->classes_event);
  if (info->n_classes > 0)
    self->classes_event = gst_wsi_classes_event_new_rgb ((guint)
        info->n_classes, (const gchar * const *) info->class_names,
        (const guint8 (*)[3]) info->class_colors);
  send_classes (self);
}

/* GstWsiTrainFuncs.create: the trainer of the model file (a new decoder
 * for pretraining, unless resumed). */
static WsiTrainer *
train_create (gpointer user, const WsiTrainConfig * cfg, gboolean resume)
{
  GstSegmentFcn *self = user;
  WsiTrainer *trainer = NULL;
  gchar err[512] = "";

  if (gst_wsi_report_unreadable (GST_ELEMENT (self), "Model",
          self->model_path))
    return NULL;
  if (wsi_model_info_load (self->model_path, &self->train_info, err,
          sizeof err) != 0)
    goto load_failed;
  if (self->mode == SEGMENT_MODE_PRETRAIN && !resume)
    trainer = wsi_trainer_new_pretrain_from_file (self->model_path, cfg,
        self->seed, err, sizeof err);
  else
    trainer = wsi_trainer_new_from_file (self->model_path, cfg, resume, err,
        sizeof err);
  if (trainer)
    return trainer;

load_failed:
  GST_ELEMENT_ERROR (self, STREAM, DECODE,
      ("Could not load model \"%s\" for training: %s", self->model_path,
          err), (NULL));
  return NULL;
}

static gboolean
ensure_model (GstSegmentFcn * self)
{
  gchar err[512] = "";

  if (have_model (self))
    return TRUE;
  if (!self->model_path || !*self->model_path) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("No model file given."), ("Set the 'model' property to a "
            ".safetensors model file (see docs/model-format.md)."));
    return FALSE;
  }
  if (self->mode != SEGMENT_MODE_INFER) {
    if (!gst_wsi_train_create_trainer (self->train))
      return FALSE;
    update_classes (self);
    return TRUE;
  }
  if (gst_wsi_report_unreadable (GST_ELEMENT (self), "Model",
          self->model_path))
    return FALSE;
  self->model = wsi_model_load (self->model_path, (int) self->threads, err,
      sizeof err);
  if (!self->model) {
    GST_ELEMENT_ERROR (self, STREAM, DECODE,
        ("Could not load model \"%s\": %s", self->model_path, err), (NULL));
    return FALSE;
  }
  GST_INFO_OBJECT (self, "loaded %s (%s, %d classes)", self->model_path,
      model_info (self)->arch, model_info (self)->n_classes);
  update_classes (self);
  return TRUE;
}

/* A net of the model file's architecture (weights not loaded), for
 * memory estimates of an inference model. */
static wsinn_net *
net_of_model_file (const gchar * path)
{
  gchar err[256];
  gchar **meta = read_metadata_pairs (path, err, sizeof err);
  wsinn_spec spec;
  wsinn_net *net = NULL;
  gboolean ok = meta != NULL;

  wsinn_spec_init (&spec);
  for (guint i = 0; ok && meta[i] && meta[i + 1]; i += 2)
    ok = wsinn_spec_set (&spec, meta[i], meta[i + 1], err, sizeof err) == 0;
  if (ok)
    net = wsinn_net_new_from_spec (&spec, err, sizeof err);
  g_strfreev (meta);
  return net;
}

/* Estimated memory of a batch of @n patches: the engine's activations
 * (all of them, with gradients, when training) and the element's batch
 * arrays. */
static gdouble
estimate_batch_bytes (GstSegmentFcn * self, gint width, gint height,
    guint n)
{
  const gint nc = MAX (model_info (self)->n_classes, 1);
  gdouble arrays = (gdouble) width * height * n * ((3 + nc) * sizeof (gfloat)
      + 2);
  gdouble engine = 0;

  if (gst_wsi_train_trainer (self->train)) {
    engine = wsinn_net_memory_estimate (wsi_trainer_net (gst_wsi_train_trainer
            (self->train)), (int) n, height, width, 1);
  } else {
    wsinn_net *net = net_of_model_file (self->model_path);
    if (net) {
      engine = wsinn_net_memory_estimate (net, (int) n, height, width, 0);
      wsinn_net_free (net);
    }
  }
  return engine + arrays;
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
    caps = gst_caps_new_full (gst_wsi_tensor_structure_new (info->n_classes,
            self->in.width, self->in.height), NULL);
    gst_caps_set_simple (caps, "framerate", GST_TYPE_FRACTION, fn, fd, NULL);
  } else {
    caps = gst_caps_new_simple ("video/x-raw",
        "format", G_TYPE_STRING, "GRAY8",
        "width", G_TYPE_INT, self->in.width,
        "height", G_TYPE_INT, self->in.height,
        "framerate", GST_TYPE_FRACTION, fn, fd, NULL);
  }
  return caps;
}

static gboolean
set_input_caps (GstSegmentFcn * self, GstCaps * caps)
{
  const WsiModelInfo *info;
  GstCaps *src_caps;
  GstVideoInfo vinfo;
  gboolean is_tensor, resized;
  gint width = 0, height = 0;
  gdouble batch_bytes;

  self->input_ok = FALSE;
  gst_wsi_train_set_input (self->train, self->image_pad, FALSE, 0, 0, FALSE);
  if (!ensure_model (self))
    return FALSE;
  info = model_info (self);

  if (!gst_wsi_patch_caps_parse (GST_ELEMENT (self), caps, &width, &height,
          &is_tensor, &vinfo))
    return FALSE;
  if (info->size_multiple > 1 && (width % info->size_multiple
          || height % info->size_multiple)) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT,
        ("Patch size %dx%d does not suit model %s: sides must be multiples "
            "of %d.", width, height, info->arch, info->size_multiple),
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
  if (self->output == SEGMENT_OUTPUT_LABELS && info->n_classes > 256) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("output=labels holds at most 256 classes; the model has %d.",
            info->n_classes), ("Use output=probabilities."));
    return FALSE;
  }
  batch_bytes = estimate_batch_bytes (self, width, height, self->batch_size);
  if (!gst_wsi_batch_check_memory (self->batch, self->batch_size, width,
          height, batch_bytes, self->max_memory))
    return FALSE;
  /* patches of the old size go out before the size changes */
  resized = gst_wsi_patch_input_differs (&self->in, width, height,
      is_tensor);
  if (resized && (self->mode == SEGMENT_MODE_INFER ?
          gst_wsi_batch_drain (self->batch) != GST_FLOW_OK :
          !gst_wsi_train_caps_changing (self->train)))
    return FALSE;
  gst_wsi_patch_input_set (&self->in, width, height, is_tensor, &vinfo);
  self->input_ok = TRUE;
  gst_wsi_train_set_input (self->train, self->image_pad, TRUE, width, height,
      is_tensor);
  src_caps = make_src_caps (self, caps);
  GST_DEBUG_OBJECT (self, "output caps %" GST_PTR_FORMAT, src_caps);
  gst_caps_replace (&self->src_caps, src_caps);
  gst_aggregator_set_src_caps (GST_AGGREGATOR (self), src_caps);
  gst_caps_unref (src_caps);
  send_classes (self);
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
  GstCaps *caps;

  if (gst_wsi_train_sink_event (self->train, pad, event)) {
    /* annotation / validation pads: caps recorded by the driver */
  } else if (GST_EVENT_TYPE (event) == GST_EVENT_CAPS) {
    gst_event_parse_caps (event, &caps);
    if (pad == self->image_pad && !set_input_caps (self, caps)) {
      gst_event_unref (event);
      return FALSE;
    }
  } else if (GST_EVENT_TYPE (event) == GST_EVENT_SEGMENT
      && pad == self->image_pad && self->mode == SEGMENT_MODE_INFER) {
    const GstSegment *segment;
    gst_event_parse_segment (event, &segment);
    if (segment->format == GST_FORMAT_TIME)
      gst_aggregator_update_segment (agg, segment);
  }
  return GST_AGGREGATOR_CLASS (gst_segment_fcn_parent_class)->sink_event (agg,
      pad, event);
}

static GstBuffer *
make_output (GstSegmentFcn * self, GstBuffer * in, const gfloat * probs)
{
  const gint nc = model_info (self)->n_classes;
  const gsize npix = (gsize) self->in.width * self->in.height;
  GstBuffer *out;
  GstMapInfo map;

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
        map.data[i] = (guint8) wsi_argmax (p, nc);
      }
    }
    gst_buffer_unmap (out, &map);
  }
  return out;
}

/* GstWsiBatchRunFunc of inference: one forward pass over the batch, one
 * output per input, in order. */
static GstFlowReturn
run_inference (GstWsiBatch * batch, guint n, GstBuffer * const *images,
    GstBuffer * const *partners, gpointer user_data)
{
  GstSegmentFcn *self = user_data;
  const gint w = self->in.width, h = self->in.height;
  const gsize out_elems = (gsize) w * h * model_info (self)->n_classes;
  GstFlowReturn ret = GST_FLOW_OK;
  gchar err[512] = "";
  gfloat *in;

  if (!(in = gst_wsi_patch_input_fill (&self->in, GST_ELEMENT (self),
              model_info (self), n, images)))
    return GST_FLOW_ERROR;
  if (!gst_wsi_batch_grow ((gpointer *) & self->out_batch,
          &self->out_capacity, out_elems * n, sizeof (gfloat))) {
    GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
        ("Not enough memory for a batch of %u patches of %dx%d.", n, w, h),
        ("Lower batch-size or the patch size."));
    return GST_FLOW_ERROR;
  }
  if (wsi_model_forward (self->model, in, (int) n, h, w, self->out_batch,
          err, sizeof err) != 0) {
    GST_ELEMENT_ERROR (self, LIBRARY, FAILED,
        ("Inference failed: %s", err), (NULL));
    return GST_FLOW_ERROR;
  }
  for (guint i = 0; i < n && ret == GST_FLOW_OK; i++)
    ret = gst_wsi_batch_finish_buffer (batch, make_output (self, images[i],
            self->out_batch + out_elems * i), images[i], w, h,
        !self->in.is_tensor);
  return ret;
}

/* ------------------------------------------------- training (callbacks) */

/* GstWsiTrainFuncs.step: one U-Net + wsi_loss step (models/train). */
static GstWsiTrainStatus
train_step (gpointer user, WsiTrainer * trainer, guint n,
    GstBuffer * const *images, GstBuffer * const *annotations,
    WsiStepResult * res, gchar * err, gsize errlen)
{
  GstSegmentFcn *self = user;
  guint8 *labels = NULL;
  gfloat *in;

  if (!(in = gst_wsi_patch_input_fill (&self->in, GST_ELEMENT (self),
              model_info (self), n, images))
      || (annotations && !(labels = gst_wsi_train_read_labels (self->train,
                  FALSE, n, annotations, images,
                  model_info (self)->n_classes))))
    return GST_WSI_TRAIN_ERROR_POSTED;
  if (wsi_trainer_step (trainer, in, (int) n, self->in.height,
          self->in.width, labels, res, err, errlen) != 0)
    return GST_WSI_TRAIN_FAILED;
  return GST_WSI_TRAIN_OK;
}

/* GstWsiTrainFuncs.validate: loss of a validation batch and its pixels
 * (argmax of the logits) counted in the confusion matrix as segeval does. */
static GstWsiTrainStatus
train_validate (gpointer user, WsiTrainer * trainer, guint n,
    GstBuffer * const *images, GstBuffer * const *annotations,
    WsiLossValues * losses, gchar * err, gsize errlen)
{
  GstSegmentFcn *self = user;
  const gint w = self->in.width, h = self->in.height;
  const gsize npix = (gsize) w * h;
  guint8 *labels = NULL;
  WsiLossResult res;
  const gfloat *out;
  gfloat *in;
  gint nc;

  if (!(in = gst_wsi_patch_input_fill (&self->in, GST_ELEMENT (self),
              model_info (self), n, images))
      || (annotations && !(labels = gst_wsi_train_read_labels (self->train,
                  TRUE, n, annotations, images,
                  model_info (self)->n_classes))))
    return GST_WSI_TRAIN_ERROR_POSTED;
  if (wsi_trainer_evaluate (trainer, in, (int) n, h, w, labels, &res, err,
          errlen) != 0)
    return GST_WSI_TRAIN_FAILED;
  losses->loss = res.loss;
  if (!labels)
    return GST_WSI_TRAIN_OK;
  if (!gst_wsi_batch_grow ((gpointer *) & self->val_pred_labels,
          &self->val_pred_capacity, npix * n, 1)) {
    GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
        ("Not enough memory for the validation labels."), (NULL));
    return GST_WSI_TRAIN_ERROR_POSTED;
  }
  out = wsi_trainer_output (trainer, &nc);
  for (gsize i = 0; i < npix * n; i++) {
    const gfloat *p = out + i * nc;
    self->val_pred_labels[i] = nc == 1 ? p[0] > 0.0f :
        (guint8) wsi_argmax (p, nc);
  }
  for (guint i = 0; i < n; i++)
    gst_wsi_train_count_pixels (&self->val_cm, images[i], annotations[i],
        self->val_pred_labels + npix * i, labels + npix * i, w, h);
  return GST_WSI_TRAIN_OK;
}

static void
train_validation_start (gpointer user)
{
  GstSegmentFcn *self = user;

  wsi_confusion_reset (&self->val_cm);
}

/* GstWsiTrainFuncs.validation_report: pixel Dice/IoU of mode=train. */
static void
train_validation_report (gpointer user, GstStructure * s,
    GstStructure * epoch)
{
  GstSegmentFcn *self = user;
  const gint nc = model_info (self)->n_classes;

  if (self->mode == SEGMENT_MODE_TRAIN)
    gst_wsi_train_report_pixels (&self->val_cm, nc == 1 ? 2 : nc, s, epoch);
}

static void
train_before_gap (gpointer user)
{
  send_classes (user);
}

static GstAggregatorPad *
gst_segment_fcn_create_new_pad (GstAggregator * agg, GstPadTemplate * templ,
    const gchar * req_name, const GstCaps * caps)
{
  GstSegmentFcn *self = GST_SEGMENT_FCN (agg);

  return gst_wsi_train_request_pad (self->train, templ,
      self->mode == SEGMENT_MODE_INFER && g_atomic_int_get (&self->running));
}

static void
gst_segment_fcn_release_pad (GstElement * element, GstPad * pad)
{
  GstSegmentFcn *self = GST_SEGMENT_FCN (element);

  gst_wsi_train_release_pad (self->train, pad);
  GST_ELEMENT_CLASS (gst_segment_fcn_parent_class)->release_pad (element, pad);
}

/* GstWsiBatchAcceptFunc: a patch may join an inference batch once the
 * caps were accepted. */
static gboolean
accept_patch (GstWsiBatch * batch, GstBuffer * buf, gpointer user_data)
{
  GstSegmentFcn *self = user_data;

  if (!have_model (self) || !self->input_ok) {
    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION,
        ("Patches arrived without accepted caps."), (NULL));
    return FALSE;
  }
  gst_wsi_patch_input_check_resolution (&self->in, GST_ELEMENT (self), buf,
      model_info (self)->mpp);
  return TRUE;
}

static GstFlowReturn
gst_segment_fcn_aggregate (GstAggregator * agg, gboolean timeout)
{
  GstSegmentFcn *self = GST_SEGMENT_FCN (agg);

  if (self->mode != SEGMENT_MODE_INFER)
    return gst_wsi_train_aggregate (self->train, self->src_caps);
  return gst_wsi_batch_aggregate (self->batch, self->image_pad, timeout);
}

/* Live streams: a partial batch times out at the running time of its
 * oldest patch plus the latency (batch-timeout). */
static GstClockTime
gst_segment_fcn_get_next_time (GstAggregator * agg)
{
  GstSegmentFcn *self = GST_SEGMENT_FCN (agg);

  if (self->mode != SEGMENT_MODE_INFER)
    return GST_CLOCK_TIME_NONE;
  return gst_wsi_batch_next_time (self->batch, self->image_pad);
}

static gboolean
gst_segment_fcn_src_event (GstAggregator * agg, GstEvent * event)
{
  if (gst_wsi_aggregator_refuse_seek (agg, event))
    return FALSE;
  return GST_AGGREGATOR_CLASS (gst_segment_fcn_parent_class)->src_event (agg,
      event);
}

static gboolean
gst_segment_fcn_start (GstAggregator * agg)
{
  GstSegmentFcn *self = GST_SEGMENT_FCN (agg);
  const gboolean infer = self->mode == SEGMENT_MODE_INFER;

  gst_wsi_set_running (GST_ELEMENT (self), &self->running, TRUE);
  gst_wsi_batch_reset_stats (self->batch);
  gst_wsi_batch_set_size (self->batch, self->batch_size);
  if (infer && gst_wsi_train_has_pads (self->train)) {
    GST_ELEMENT_ERROR (self, CORE, PAD,
        ("Annotation and validation pads are for mode=train only."),
        ("Set mode=train or unlink them."));
    return FALSE;
  }
  self->input_ok = FALSE;
  gst_wsi_patch_input_clear (&self->in);
  /* a partial batch of a live inference stream waits at most batch-timeout */
  gst_wsi_batch_set_timeout (self->batch, infer ? self->batch_timeout : 0);
  if (!infer && !gst_wsi_train_start (self->train,
          self->mode == SEGMENT_MODE_TRAIN, self->batch_size))
    return FALSE;
  return ensure_model (self);
}

static gboolean
gst_segment_fcn_stop (GstAggregator * agg)
{
  GstSegmentFcn *self = GST_SEGMENT_FCN (agg);
  gchar *classes;

  gst_wsi_batch_clear (self->batch);
  gst_wsi_train_stop (self->train);
  gst_wsi_patch_input_clear (&self->in);
  g_clear_pointer (&self->out_batch, g_free);
  g_clear_pointer (&self->val_pred_labels, g_free);
  self->out_capacity = 0;
  self->val_pred_capacity = 0;
  GST_OBJECT_LOCK (self);
  classes = g_steal_pointer (&self->classes);
  GST_OBJECT_UNLOCK (self);
  g_free (classes);
  gst_clear_event (&self->classes_event);
  g_clear_pointer (&self->model, wsi_model_free);
  wsi_model_info_clear (&self->train_info);
  gst_caps_replace (&self->src_caps, NULL);
  gst_wsi_set_running (GST_ELEMENT (self), &self->running, FALSE);
  return TRUE;
}

/* A flushing seek (all sink pads flushed; the streaming task is stopped):
 * patches waiting for a batch are dropped, a validation run in progress is
 * abandoned (its epoch message goes out without validation results), the
 * current epoch's sums restart and the next patch starts a new source pass.
 * Weights, step and epoch numbers are kept. */
static GstFlowReturn
gst_segment_fcn_flush (GstAggregator * agg)
{
  GstSegmentFcn *self = GST_SEGMENT_FCN (agg);
  GstAggregatorClass *parent =
      GST_AGGREGATOR_CLASS (gst_segment_fcn_parent_class);

  gst_wsi_batch_clear (self->batch);
  gst_wsi_train_flush (self->train);
  /* GstAggregator 1.22 has no default flush */
  return parent->flush ? parent->flush (agg) : GST_FLOW_OK;
}

static void
gst_segment_fcn_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec)
{
  GstSegmentFcn *self = GST_SEGMENT_FCN (object);

  if (gst_wsi_property_refused (GST_ELEMENT (self), &self->running, pspec))
    return;
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
      break;
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
    case PROP_LOSS:
      self->loss = g_value_get_enum (value);
      break;
    case PROP_CLASS_WEIGHTS:
      g_free (self->class_weights);
      self->class_weights = g_value_dup_string (value);
      break;
    case PROP_SEED:
      self->seed = g_value_get_uint64 (value);
      break;
    case PROP_MAX_MEMORY:
      self->max_memory = g_value_get_uint64 (value);
      break;
    case PROP_POST_MESSAGES:
      g_atomic_int_set (&self->post_messages, g_value_get_boolean (value));
      break;
    default:
      if (!gst_wsi_train_settings_set (gst_wsi_train_settings (self->train),
              prop_id - PROP_TRAIN_FIRST, value))
        G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
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
      g_value_set_string (value, self->classes ? self->classes : "");
      break;
    case PROP_MODE:
      g_value_set_enum (value, self->mode);
      break;
    case PROP_LOSS:
      g_value_set_enum (value, self->loss);
      break;
    case PROP_CLASS_WEIGHTS:
      g_value_set_string (value, self->class_weights);
      break;
    case PROP_SEED:
      g_value_set_uint64 (value, self->seed);
      break;
    case PROP_MAX_MEMORY:
      g_value_set_uint64 (value, self->max_memory);
      break;
    case PROP_POST_MESSAGES:
      g_value_set_boolean (value, g_atomic_int_get (&self->post_messages));
      break;
    default:
      if (!gst_wsi_train_settings_get (gst_wsi_train_settings (self->train),
              prop_id - PROP_TRAIN_FIRST, value))
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
  g_free (self->class_weights);
  g_free (self->classes);
  gst_clear_event (&self->classes_event);
  gst_wsi_patch_input_clear (&self->in);
  g_free (self->out_batch);
  g_free (self->val_pred_labels);
  wsi_confusion_clear (&self->val_cm);
  gst_wsi_train_free (self->train);
  gst_wsi_batch_free (self->batch);
  wsi_model_info_clear (&self->train_info);
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
          "patches (becomes the aggregator latency when upstream is live)", 0, G_MAXUINT64,
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
  g_object_class_install_property (gobject_class, PROP_LOSS,
      g_param_spec_enum ("loss", "Loss", "Training loss (bce: one-class "
          "models)", GST_TYPE_SEGMENT_LOSS, WSI_LOSS_CE, TRAIN_FLAGS));
  g_object_class_install_property (gobject_class, PROP_CLASS_WEIGHTS,
      g_param_spec_string ("class-weights", "Class weights",
          "Training: comma-separated cross-entropy weight per class", NULL,
          TRAIN_FLAGS));
  g_object_class_install_property (gobject_class, PROP_SEED,
      g_param_spec_uint64 ("seed", "Seed",
          "Pretraining: seed of the new decoder's initial weights", 0,
          G_MAXUINT64, 1, TRAIN_FLAGS));

  gst_wsi_train_install_properties (gobject_class, PROP_TRAIN_FIRST);
  g_object_class_install_property (gobject_class, PROP_MAX_MEMORY,
      g_param_spec_uint64 ("max-memory", "Maximum memory",
          "Largest estimated memory (bytes) of one batch: the engine's "
          "activations (with gradients when training) and the batch arrays; "
          "a patch size or batch-size needing more is refused", 1 << 20,
          G_MAXUINT64, DEFAULT_MAX_MEMORY,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_READY));
  g_object_class_install_property (gobject_class, PROP_POST_MESSAGES,
      gst_wsi_param_spec_post_messages ());

  gst_element_class_add_static_pad_template_with_gtype (element_class,
      &sink_template, GST_TYPE_AGGREGATOR_PAD);
  gst_element_class_add_static_pad_template_with_gtype (element_class,
      &annotation_template, GST_TYPE_AGGREGATOR_PAD);
  gst_element_class_add_static_pad_template_with_gtype (element_class,
      &validation_template, GST_TYPE_AGGREGATOR_PAD);
  gst_element_class_add_static_pad_template_with_gtype (element_class,
      &validation_annotation_template, GST_TYPE_AGGREGATOR_PAD);
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
  agg_class->src_event = GST_DEBUG_FUNCPTR (gst_segment_fcn_src_event);
  agg_class->flush = GST_DEBUG_FUNCPTR (gst_segment_fcn_flush);
  agg_class->get_next_time = GST_DEBUG_FUNCPTR (gst_segment_fcn_get_next_time);
  agg_class->create_new_pad =
      GST_DEBUG_FUNCPTR (gst_segment_fcn_create_new_pad);
  element_class->release_pad = GST_DEBUG_FUNCPTR (gst_segment_fcn_release_pad);
  agg_class->update_src_caps =
      GST_DEBUG_FUNCPTR (gst_segment_fcn_update_src_caps);

  gst_type_mark_as_plugin_api (GST_TYPE_SEGMENT_OUTPUT, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_SEGMENT_MODE, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_SEGMENT_LOSS, 0);
}

static const GstWsiTrainFuncs train_funcs = {
  train_configure, train_create, train_step, train_validate,
  train_validation_start, train_validation_report, train_before_gap
};

static void
gst_segment_fcn_init (GstSegmentFcn * self)
{
  GstPadTemplate *templ =
      gst_element_class_get_pad_template (GST_ELEMENT_GET_CLASS (self), "sink");
  GstPad *pad = g_object_new (GST_TYPE_AGGREGATOR_PAD, "name", "sink",
      "direction", GST_PAD_SINK, "template", templ, NULL);

  gst_element_add_pad (GST_ELEMENT (self), pad);
  self->image_pad = GST_AGGREGATOR_PAD (pad);
  self->batch_size = DEFAULT_BATCH_SIZE;
  self->batch_timeout = DEFAULT_BATCH_TIMEOUT;
  self->threads = DEFAULT_THREADS;
  self->output = SEGMENT_OUTPUT_LABELS;
  self->class_index = 1;
  self->loss = WSI_LOSS_CE;
  self->seed = 1;
  self->max_memory = DEFAULT_MAX_MEMORY;
  wsi_confusion_init (&self->val_cm);
  self->batch = gst_wsi_batch_new (GST_AGGREGATOR (self), run_inference,
      accept_patch, self);
  gst_wsi_batch_set_stats (self->batch, "segment-fcn", &self->post_messages);
  self->train = gst_wsi_train_new (GST_AGGREGATOR (self), "segment-fcn",
      &train_funcs, self);
  gst_wsi_train_set_post_messages (self->train, &self->post_messages);
}
