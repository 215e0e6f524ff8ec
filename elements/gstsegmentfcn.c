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

#include <gst/base/gstaggregator.h>
#include <gst/video/video.h>

#include "gstwsiaggregator.h"
#include "gstwsibatch.h"
#include "gstwsipatch.h"
#include "gstwsiprops.h"
#include "gstwsiseg.h"
#include "gstwsitensor.h"
#include "gstwsitrain.h"
#include "wsiargmax.h"
#include "wsimodel.h"
#include "wsinn.h"

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

/* mode and loss: gst/gstwsitrain's registered enums */
typedef GstWsiTrainMode SegmentMode;
#define SEGMENT_MODE_INFER GST_WSI_TRAIN_MODE_INFER
#define SEGMENT_MODE_TRAIN GST_WSI_TRAIN_MODE_TRAIN
#define SEGMENT_MODE_PRETRAIN GST_WSI_TRAIN_MODE_PRETRAIN

#define GST_TYPE_SEGMENT_FCN (gst_segment_fcn_get_type ())
G_DECLARE_FINAL_TYPE (GstSegmentFcn, gst_segment_fcn, GST, SEGMENT_FCN,
    GstAggregator);

struct _GstSegmentFcn
{
  GstAggregator parent;

  /* properties */
  GstWsiSegmentSettings seg;    /* model, batch-size, ... (gstwsipatch) */
  SegmentOutput output;
  guint class_index;
  SegmentMode mode;
  WsiLossKind loss;
  gchar *class_weights;
  guint64 seed;
  gboolean post_messages;

  gint running;                 /* between start and stop (gstwsiprops) */
  GstWsiModelClasses classes;   /* the model's classes, text and event */

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
  gsize out_capacity;
  WsiConfusion val_cm;          /* centre crops, as segeval counts */
};

enum
{
  PROP_0,
  PROP_OUTPUT,
  PROP_CLASS,
  PROP_CLASSES,
  PROP_MODE,
  PROP_LOSS,
  PROP_CLASS_WEIGHTS,
  PROP_SEED,
  PROP_POST_MESSAGES,
  PROP_SEGMENT_FIRST,           /* gst/gstwsipatch's properties follow */
  PROP_TRAIN_FIRST = PROP_SEGMENT_FIRST + GST_WSI_SEGMENT_N_PROPS,
};

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

/* GstWsiTrainFuncs.configure: the loss and its class weights. */
static gboolean
train_configure (gpointer user, WsiTrainConfig * cfg, gchar * err,
    gsize errlen)
{
  GstSegmentFcn *self = user;

  cfg->threads = (int) self->seg.threads;
  cfg->loss.kind = self->mode == SEGMENT_MODE_PRETRAIN ? WSI_LOSS_MSE :
      self->loss;
  return !self->class_weights || !*self->class_weights
      || wsi_loss_config_set_class_weights (&cfg->loss, self->class_weights,
      err, errlen) == 0;
}

/* The classes property and the same in-band (a sticky wsi-classes event
 * on the source pad, sent before the next buffer or GAP after the caps). */
static void
update_classes (GstSegmentFcn * self)
{
  gst_wsi_model_classes_update (&self->classes, GST_ELEMENT (self),
      GST_AGGREGATOR_SRC_PAD (self), model_info (self));
}

static void
send_classes (GstSegmentFcn * self)
{
  gst_wsi_model_classes_send (&self->classes, GST_AGGREGATOR_SRC_PAD (self));
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
          self->seg.model))
    return NULL;
  if (wsi_model_info_load (self->seg.model, &self->train_info, err,
          sizeof err) != 0)
    goto load_failed;
  if (self->mode == SEGMENT_MODE_PRETRAIN && !resume)
    trainer = wsi_trainer_new_pretrain_from_file (self->seg.model, cfg,
        self->seed, err, sizeof err);
  else
    trainer = wsi_trainer_new_from_file (self->seg.model, cfg, resume, err,
        sizeof err);
  if (trainer)
    return trainer;

load_failed:
  GST_ELEMENT_ERROR (self, STREAM, DECODE,
      ("Could not load model \"%s\" for training: %s", self->seg.model,
          err), (NULL));
  return NULL;
}

static gboolean
ensure_model (GstSegmentFcn * self)
{
  if (have_model (self))
    return TRUE;
  if (!self->seg.model || !*self->seg.model) {
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
  if (!(self->model = gst_wsi_patch_load_model (GST_ELEMENT (self),
              self->seg.model, self->seg.threads)))
    return FALSE;
  GST_INFO_OBJECT (self, "loaded %s (%s, %d classes)", self->seg.model,
      model_info (self)->arch, model_info (self)->n_classes);
  update_classes (self);
  return TRUE;
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
    engine = gst_wsi_patch_model_file_bytes (self->seg.model, n, width,
        height);
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
  GstVideoInfo vinfo;
  gboolean is_tensor;
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
  if (!gst_wsi_patch_check_size (GST_ELEMENT (self), info, width, height))
    return FALSE;
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
  batch_bytes = estimate_batch_bytes (self, width, height, self->seg.batch_size);
  if (!gst_wsi_batch_check_memory (self->batch, self->seg.batch_size, width,
          height, batch_bytes, self->seg.max_memory))
    return FALSE;
  /* patches of the old size go out (or train) before the size changes */
  if (!gst_wsi_train_switch_input (self->train, self->batch, &self->in,
          self->mode == SEGMENT_MODE_INFER, width, height, is_tensor, &vinfo))
    return FALSE;
  self->input_ok = TRUE;
  gst_wsi_patch_set_src_caps (GST_AGGREGATOR (self), &self->src_caps,
      make_src_caps (self, caps));
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

  return gst_wsi_patch_update_src_caps (self->src_caps, caps, ret);
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
  gint64 t0;
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
  t0 = g_get_monotonic_time ();
  if (wsi_model_forward (self->model, in, (int) n, h, w, self->out_batch,
          err, sizeof err) != 0) {
    GST_ELEMENT_ERROR (self, LIBRARY, FAILED,
        ("Inference failed: %s", err), (NULL));
    return GST_FLOW_ERROR;
  }
  gst_wsi_batch_busy (batch, t0);
  for (guint i = 0; i < n && ret == GST_FLOW_OK; i++)
    ret = gst_wsi_batch_finish_buffer (batch, make_output (self, images[i],
            self->out_batch + out_elems * i), images[i], w, h,
        !self->in.is_tensor);
  return ret;
}

/* ------------------------------------------------- training (callbacks) */

/* The float input and (with annotations) the label arrays of a training
 * or validation batch; FALSE with the error posted. */
static gboolean
fill_pairs (GstSegmentFcn * self, guint n, GstBuffer * const *images,
    GstBuffer * const *annotations, gboolean validation, gfloat ** in,
    guint8 ** labels)
{
  *labels = NULL;
  if (!(*in = gst_wsi_patch_input_fill (&self->in, GST_ELEMENT (self),
              model_info (self), n, images)))
    return FALSE;
  return !annotations || (*labels = gst_wsi_train_read_labels (self->train,
          validation, n, annotations, images, model_info (self)->n_classes));
}

/* GstWsiTrainFuncs.step: one U-Net + wsi_loss step (models/train). */
static GstWsiTrainStatus
train_step (gpointer user, WsiTrainer * trainer, guint n,
    GstBuffer * const *images, GstBuffer * const *annotations,
    WsiStepResult * res, gchar * err, gsize errlen)
{
  GstSegmentFcn *self = user;
  guint8 *labels;
  gfloat *in;

  if (!fill_pairs (self, n, images, annotations, FALSE, &in, &labels))
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
  guint8 *labels;
  WsiLossResult res;
  const gfloat *out;
  gfloat *in;
  gint nc;

  if (!fill_pairs (self, n, images, annotations, TRUE, &in, &labels))
    return GST_WSI_TRAIN_ERROR_POSTED;
  if (wsi_trainer_evaluate (trainer, in, (int) n, h, w, labels, &res, err,
          errlen) != 0)
    return GST_WSI_TRAIN_FAILED;
  losses->loss = res.loss;
  out = wsi_trainer_output (trainer, &nc);
  if (labels && !gst_wsi_train_count_logits (self->train, &self->val_cm, n,
          images, annotations, out, nc, labels))
    return GST_WSI_TRAIN_ERROR_POSTED;
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
  gst_wsi_batch_set_size (self->batch, self->seg.batch_size);
  if (infer && gst_wsi_train_has_pads (self->train)) {
    GST_ELEMENT_ERROR (self, CORE, PAD,
        ("Annotation and validation pads are for mode=train only."),
        ("Set mode=train or unlink them."));
    return FALSE;
  }
  self->input_ok = FALSE;
  gst_wsi_patch_input_clear (&self->in);
  /* a partial batch of a live inference stream waits at most batch-timeout */
  gst_wsi_batch_set_timeout (self->batch, infer ? self->seg.batch_timeout : 0);
  if (!infer && !gst_wsi_train_start (self->train,
          self->mode == SEGMENT_MODE_TRAIN, self->seg.batch_size))
    return FALSE;
  return ensure_model (self);
}

static gboolean
gst_segment_fcn_stop (GstAggregator * agg)
{
  GstSegmentFcn *self = GST_SEGMENT_FCN (agg);

  gst_wsi_batch_clear (self->batch);
  gst_wsi_train_stop (self->train);
  gst_wsi_patch_input_clear (&self->in);
  g_clear_pointer (&self->out_batch, g_free);
  self->out_capacity = 0;
  gst_wsi_model_classes_clear (&self->classes, GST_ELEMENT (self));
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
    case PROP_POST_MESSAGES:
      g_atomic_int_set (&self->post_messages, g_value_get_boolean (value));
      break;
    default:
      if (!gst_wsi_segment_settings_set (&self->seg, prop_id -
              PROP_SEGMENT_FIRST, value)
          && !gst_wsi_train_settings_set (gst_wsi_train_settings
              (self->train), prop_id - PROP_TRAIN_FIRST, value))
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
    case PROP_OUTPUT:
      g_value_set_enum (value, self->output);
      break;
    case PROP_CLASS:
      g_value_set_uint (value, self->class_index);
      break;
    case PROP_CLASSES:
      g_value_set_string (value, self->classes.text ? self->classes.text :
          "");
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
    case PROP_POST_MESSAGES:
      g_value_set_boolean (value, g_atomic_int_get (&self->post_messages));
      break;
    default:
      if (!gst_wsi_segment_settings_get (&self->seg, prop_id -
              PROP_SEGMENT_FIRST, value)
          && !gst_wsi_train_settings_get (gst_wsi_train_settings
              (self->train), prop_id - PROP_TRAIN_FIRST, value))
        G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_segment_fcn_finalize (GObject * object)
{
  GstSegmentFcn *self = GST_SEGMENT_FCN (object);

  gst_wsi_segment_settings_clear (&self->seg);
  g_free (self->class_weights);
  gst_wsi_model_classes_clear (&self->classes, GST_ELEMENT (self));
  gst_wsi_patch_input_clear (&self->in);
  g_free (self->out_batch);
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

  gst_wsi_segment_install_properties (gobject_class, PROP_SEGMENT_FIRST);
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
          GST_TYPE_WSI_TRAIN_MODE, SEGMENT_MODE_INFER, TRAIN_FLAGS));
  g_object_class_install_property (gobject_class, PROP_LOSS,
      g_param_spec_enum ("loss", "Loss", "Training loss (bce: one-class "
          "models)", GST_TYPE_WSI_TRAIN_LOSS, WSI_LOSS_CE, TRAIN_FLAGS));
  g_object_class_install_property (gobject_class, PROP_CLASS_WEIGHTS,
      g_param_spec_string ("class-weights", "Class weights",
          "Training: comma-separated cross-entropy weight per class", NULL,
          TRAIN_FLAGS));
  g_object_class_install_property (gobject_class, PROP_SEED,
      g_param_spec_uint64 ("seed", "Seed",
          "Pretraining: seed of the new decoder's initial weights", 0,
          G_MAXUINT64, 1, TRAIN_FLAGS));

  gst_wsi_train_install_properties (gobject_class, PROP_TRAIN_FIRST);
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
  gst_wsi_segment_settings_init (&self->seg);
  self->output = SEGMENT_OUTPUT_LABELS;
  self->class_index = 1;
  self->loss = WSI_LOSS_CE;
  self->seed = 1;
  wsi_confusion_init (&self->val_cm);
  self->batch = gst_wsi_batch_new (GST_AGGREGATOR (self), run_inference,
      accept_patch, self);
  gst_wsi_batch_set_stats (self->batch, "segment-fcn", &self->post_messages);
  self->train = gst_wsi_train_new (GST_AGGREGATOR (self), "segment-fcn",
      &train_funcs, self);
  gst_wsi_train_set_post_messages (self->train, &self->post_messages);
}
