/* segment-maskrcnn: instance segmentation of patches with Mask R-CNN
 * (models/maskrcnn on the oneDNN engine).
 *
 * A GstAggregator batching patches like segment-fcn (gst/gstwsibatch, live
 * batch-timeout). Each input patch gives one GRAY16_LE instance label patch
 * (0 background, 1..N painted by descending score) carrying one
 * GstVideoRegionOfInterestMeta per instance (gst/gstwsidetection.h).
 *
 * mode=train runs through gst/gstwsitrain (training properties, the
 * annotation and validation pads and their pairing, steps, epochs,
 * checkpoints, messages) driving models/maskrcnn's trainer; here: the
 * targets of GRAY16 instance annotation patches (+ the optional class-map
 * pad), and the validation metrics of whole images (predicted patches
 * merged as stitchsink merges them, elements/core/stitchinstance; AJI, PQ,
 * object F1 and pixel Dice counted by elements/core/wsimetrics as segeval
 * counts them).
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
#include "gstwsidetection.h"
#include "gstwsipair.h"
#include "gstwsipatch.h"
#include "gstwsiprops.h"
#include "gstwsiseg.h"
#include "gstwsitensor.h"
#include "gstwsitilemeta.h"
#include "gstwsitrain.h"
#include "stitchinstance.h"
#include "wsimetrics.h"
#include "wsimrcnn-file.h"
#include "wsimrcnn-instances.h"
#include "wsimrcnn-train.h"
#include "wsinn.h"

GST_DEBUG_CATEGORY_STATIC (gst_segment_maskrcnn_debug);
#define GST_CAT_DEFAULT gst_segment_maskrcnn_debug

typedef enum
{
  MRCNN_MODE_INFER,
  MRCNN_MODE_TRAIN,
} MrcnnMode;

#define GST_TYPE_SEGMENT_MASKRCNN_MODE (gst_segment_maskrcnn_mode_get_type ())
static GType
gst_segment_maskrcnn_mode_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {MRCNN_MODE_INFER, "Detect and segment instances with the model",
        "infer"},
    {MRCNN_MODE_TRAIN, "Train on image + instance annotation pairs "
          "(request the 'annotation' pad)", "train"},
    {0, NULL, NULL}
  };

  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstSegmentMaskrcnnMode", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

/* One validation image being reassembled: predicted patches merged into
 * global objects (stitchinstance, as stitchsink), annotation ids and the
 * valid mask painted from the centre crops (as segeval). */
typedef struct
{
  gchar *slide;
  gint level;
  gint64 region_x, region_y;
  gint64 width, height;
  gboolean skip;                /* too large: pixel metrics only */
  StitchInstances *si;
  guint32 *pred;                /* global ids, rows written by si */
  guint16 *gt;
  guint8 *valid;
} ValImage;

#define GST_TYPE_SEGMENT_MASKRCNN (gst_segment_maskrcnn_get_type ())
G_DECLARE_FINAL_TYPE (GstSegmentMaskrcnn, gst_segment_maskrcnn, GST,
    SEGMENT_MASKRCNN, GstAggregator);

struct _GstSegmentMaskrcnn
{
  GstAggregator parent;

  /* properties (object lock) */
  GstWsiSegmentSettings seg;    /* model, batch-size, ... (gstwsipatch) */
  gdouble score_threshold;      /* < 0: the model's */
  gdouble nms_iou;              /* 0: the model's */
  guint max_detections;         /* 0: the model's */
  MrcnnMode mode;
  guint64 seed;
  guint max_instances;
  guint min_area;
  gint post_messages;

  gint running;                 /* between start and stop (gstwsiprops) */
  GstWsiModelClasses classes;   /* the model's classes, text and event */
  GstEvent *instances_event;    /* wsi-instances, until stored on src */

  /* model */
  wsimrcnn *net;                /* inference */
  GstWsiTrain *train;           /* training driver (gst/gstwsitrain) */
  WsiMrcnnModelInfo mi;         /* facts of the model file */
  gboolean have_info;
  gfloat applied_score;         /* detection settings the net has */
  gdouble applied_nms;
  gint applied_max;
  wsimrcnn *applied_net;

  /* stream */
  GstAggregatorPad *image_pad;
  GstAggregatorPad *class_pad;  /* request pad class_map (training) */
  GstWsiBatch *batch;
  gboolean input_ok;
  GstWsiPatchInput in;          /* patch size, kind, input batch */
  GstCaps *src_caps;
  GstVideoInfo ann_vinfo[2];    /* annotation, validation_annotation */
  gboolean ann_ok[2];
  GstVideoInfo class_vinfo;
  gboolean class_ok;
  GQueue class_queue;           /* class_map patches not used yet */

  /* batch arrays (elements) */
  gfloat *boxes, *scores, *masks;
  gint32 *labels;
  gint *counts;
  WsiMrcnnObject *objects;
  gsize boxes_capacity, scores_capacity, masks_capacity, labels_capacity,
      counts_capacity, objects_capacity;
  WsiMrcnnTargets *targets;
  gsize targets_capacity;

  /* validation */
  guint16 *val_paint;           /* a predicted patch */
  guint8 *val_pred8, *val_gt8;  /* foreground of a patch, for the pixels */
  gsize val_capacity;
  WsiConfusion val_cm;
  WsiInstanceCounts val_counts;
  guint val_images;
  ValImage vimg;
};

enum
{
  PROP_0,
  PROP_SCORE_THRESHOLD,
  PROP_NMS_IOU,
  PROP_MAX_DETECTIONS,
  PROP_CLASSES,
  PROP_MODE,
  PROP_SEED,
  PROP_MAX_INSTANCES,
  PROP_MIN_AREA,
  PROP_POST_MESSAGES,
  PROP_SEGMENT_FIRST,           /* gst/gstwsipatch's properties follow */
  PROP_TRAIN_FIRST = PROP_SEGMENT_FIRST + GST_WSI_SEGMENT_N_PROPS,
};

#define DEFAULT_MAX_INSTANCES 500
#define DEFAULT_MIN_AREA 4
/* the label patch holds ids 1..65534 (65535 is labelpatch's ignore) */
#define MAX_DETECTIONS_LIMIT 65534
/* largest validation image reassembled for instance metrics (segeval's
 * max-image-pixels default) */
#define MAX_VAL_IMAGE_PIXELS (G_GINT64_CONSTANT (1) << 24)
/* class_map patches held while their images wait in a batch */
#define MAX_CLASS_QUEUE 1024

#define GRAY16_CAPS GST_VIDEO_CAPS_MAKE ("GRAY16_LE")
#define PATCH_CAPS GST_VIDEO_CAPS_MAKE ("RGB") "; " GST_WSI_TENSOR_CAPS

static GstStaticPadTemplate sink_template =
GST_STATIC_PAD_TEMPLATE ("sink", GST_PAD_SINK, GST_PAD_ALWAYS,
    GST_STATIC_CAPS (PATCH_CAPS));

static GstStaticPadTemplate annotation_template =
GST_STATIC_PAD_TEMPLATE ("annotation", GST_PAD_SINK, GST_PAD_REQUEST,
    GST_STATIC_CAPS (GRAY16_CAPS));

static GstStaticPadTemplate class_map_template =
GST_STATIC_PAD_TEMPLATE ("class_map", GST_PAD_SINK, GST_PAD_REQUEST,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE ("GRAY8")));

static GstStaticPadTemplate validation_template =
GST_STATIC_PAD_TEMPLATE ("validation", GST_PAD_SINK, GST_PAD_REQUEST,
    GST_STATIC_CAPS (PATCH_CAPS));

static GstStaticPadTemplate validation_annotation_template =
GST_STATIC_PAD_TEMPLATE ("validation_annotation", GST_PAD_SINK,
    GST_PAD_REQUEST, GST_STATIC_CAPS (GRAY16_CAPS));

static GstStaticPadTemplate src_template =
GST_STATIC_PAD_TEMPLATE ("src", GST_PAD_SRC, GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GRAY16_CAPS));

G_DEFINE_TYPE (GstSegmentMaskrcnn, gst_segment_maskrcnn, GST_TYPE_AGGREGATOR);
GST_ELEMENT_REGISTER_DEFINE (segment_maskrcnn, "segment-maskrcnn",
    GST_RANK_NONE, GST_TYPE_SEGMENT_MASKRCNN);

static const WsiModelInfo *
model_info (GstSegmentMaskrcnn * self)
{
  return &self->mi.info;
}

/* The network: the inference model or the one being trained. */
static wsimrcnn *
detector (GstSegmentMaskrcnn * self)
{
  WsiTrainer *t = gst_wsi_train_trainer (self->train);

  return self->net ? self->net : t ? wsimrcnn_trainer_model (t) : NULL;
}

/* Stores the pending in-band events on the source pad (once it is
 * active): the class names and the wsi-instances mark (the GRAY16 patches
 * are instance maps, for stitchsink's instances=auto); they go downstream
 * before the next buffer, GAP or EOS. */
static void
send_classes (GstSegmentMaskrcnn * self)
{
  GstPad *src = GST_AGGREGATOR_SRC_PAD (self);

  gst_wsi_model_classes_send (&self->classes, src);
  if (self->instances_event && gst_pad_store_sticky_event (src,
          self->instances_event) == GST_FLOW_OK)
    gst_clear_event (&self->instances_event);
}

/* The classes property and the sticky wsi-classes event (label values of
 * the class-id in the detection metas; the GRAY16 patch holds instance
 * ids, not classes). */
static void
update_classes (GstSegmentMaskrcnn * self)
{
  gst_wsi_model_classes_update (&self->classes, GST_ELEMENT (self),
      GST_AGGREGATOR_SRC_PAD (self), model_info (self));
  gst_clear_event (&self->instances_event);
  self->instances_event = gst_wsi_instances_event_new ();
  send_classes (self);
}

static void
free_model (GstSegmentMaskrcnn * self)
{
  g_clear_pointer (&self->net, wsimrcnn_free);
  self->applied_net = NULL;
  if (self->have_info)
    wsimrcnn_model_info_clear (&self->mi);
  self->have_info = FALSE;
  memset (&self->mi, 0, sizeof self->mi);
}

/* GstWsiTrainFuncs.configure: engine threads (the losses are Mask
 * R-CNN's own). */
static gboolean
train_configure (gpointer user, WsiTrainConfig * cfg, gchar * err,
    gsize errlen)
{
  GstSegmentMaskrcnn *self = user;

  cfg->threads = (int) self->seg.threads;
  return TRUE;
}

/* GstWsiTrainFuncs.create: the trainer of the model file (a checkpoint
 * with resume); its samplers are seeded from the seed property. */
static WsiTrainer *
train_create (gpointer user, const WsiTrainConfig * cfg, gboolean resume)
{
  GstSegmentMaskrcnn *self = user;
  WsiTrainer *trainer;
  gchar err[512] = "";

  if (gst_wsi_report_unreadable (GST_ELEMENT (self), "Model",
          self->seg.model))
    return NULL;
  free_model (self);
  if (wsimrcnn_model_info_load (self->seg.model, &self->mi, err,
          sizeof err) != 0)
    goto failed;
  self->have_info = TRUE;
  trainer = wsimrcnn_trainer_new_from_file (self->seg.model, cfg, resume,
      self->seed, err, sizeof err);
  if (trainer)
    return trainer;

failed:
  GST_ELEMENT_ERROR (self, STREAM, DECODE,
      ("Could not load Mask R-CNN model \"%s\" for training: %s",
          self->seg.model, err), (NULL));
  return NULL;
}

static gboolean
ensure_model (GstSegmentMaskrcnn * self)
{
  gchar err[512] = "";

  if (detector (self))
    return TRUE;
  if (!self->seg.model || !*self->seg.model) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("No model file given."), ("Set the 'model' property to a Mask "
            "R-CNN .safetensors model file (see docs/model-format.md)."));
    return FALSE;
  }
  if (self->mode == MRCNN_MODE_TRAIN) {
    if (!gst_wsi_train_create_trainer (self->train))
      return FALSE;
  } else {
    if (gst_wsi_report_unreadable (GST_ELEMENT (self), "Model",
            self->seg.model))
      return FALSE;
    self->net = wsimrcnn_load (self->seg.model, &self->mi, err, sizeof err);
    if (!self->net) {
      GST_ELEMENT_ERROR (self, STREAM, DECODE,
          ("Could not load Mask R-CNN model \"%s\": %s", self->seg.model,
              err), (NULL));
      return FALSE;
    }
    self->have_info = TRUE;
  }
  self->applied_net = NULL;
  GST_INFO_OBJECT (self, "loaded %s (%s, %d classes) for %s",
      self->seg.model, model_info (self)->encoder,
      model_info (self)->n_classes, self->mode == MRCNN_MODE_TRAIN ?
      "training" : "inference");
  update_classes (self);
  return TRUE;
}

/* The detection settings of the properties (the model's where unset). */
static void
detection_settings (GstSegmentMaskrcnn * self, gfloat * score, gdouble * nms,
    gint * max_det)
{
  const wsimrcnn_config *cfg = &self->mi.cfg;

  GST_OBJECT_LOCK (self);
  *score = self->score_threshold >= 0 ? (gfloat) self->score_threshold :
      cfg->det.score_thresh;
  *nms = self->nms_iou > 0 ? self->nms_iou : cfg->det.nms_thresh;
  *max_det = self->max_detections > 0 ? (gint) self->max_detections :
      MIN (cfg->det.detections_per_img, MAX_DETECTIONS_LIMIT);
  GST_OBJECT_UNLOCK (self);
}

/* Applies changed thresholds at a safe point (before a batch). */
static gboolean
apply_detection_settings (GstSegmentMaskrcnn * self)
{
  wsimrcnn *net = detector (self);
  gfloat score;
  gdouble nms;
  gint max_det;
  gchar err[256] = "";

  detection_settings (self, &score, &nms, &max_det);
  if (net == self->applied_net && score == self->applied_score
      && nms == self->applied_nms && max_det == self->applied_max)
    return TRUE;
  if (wsimrcnn_set_detection (net, score, nms, max_det, err,
          sizeof err) != 0) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("Invalid detection settings: %s", err), (NULL));
    return FALSE;
  }
  self->applied_net = net;
  self->applied_score = score;
  self->applied_nms = nms;
  self->applied_max = max_det;
  return TRUE;
}

/* Estimated memory of a batch of @n patches: the engine's activations of
 * the features net and both heads (their RoIs; training: with gradients,
 * the sampled RoIs and positives) and the batch arrays. */
static gdouble
estimate_batch_bytes (GstSegmentMaskrcnn * self, gint width, gint height,
    guint n)
{
  const wsimrcnn_config *cfg = &self->mi.cfg;
  const gboolean train = self->mode == MRCNN_MODE_TRAIN;
  wsimrcnn *net = detector (self);
  gfloat score;
  gdouble nms;
  gint D, P = cfg->rpn.post_nms_top_n, bp = cfg->spec.box_pool,
      mp = cfg->mask_pool, ms = 2 * cfg->mask_pool;
  gdouble engine, arrays, rois;

  detection_settings (self, &score, &nms, &D);
  if (train) {
    /* one image at a time, gradients kept */
    P = cfg->box_batch;
    D = (gint) ceil (cfg->box_batch * cfg->box_pos_fraction);
    engine = wsinn_net_memory_estimate (wsimrcnn_net (net, 0), 1, height,
        width, 1);
    engine += wsinn_net_memory_estimate (wsimrcnn_net (net, 1), P, bp, bp,
        1);
    engine += wsinn_net_memory_estimate (wsimrcnn_net (net, 2), D, mp, mp,
        1);
  } else {
    engine = wsinn_net_memory_estimate (wsimrcnn_net (net, 0), (int) n,
        height, width, 0);
    engine += wsinn_net_memory_estimate (wsimrcnn_net (net, 1),
        (int) n * P, bp, bp, 0);
    engine += wsinn_net_memory_estimate (wsimrcnn_net (net, 2),
        (int) n * D, mp, mp, 0);
  }
  /* RoIAlign inputs/outputs of the heads */
  rois = (gdouble) (train ? 1 : n) * MAX (P, D) * cfg->spec.fpn_channels *
      MAX (bp * bp, mp * mp) * 2 * sizeof (gfloat);
  arrays = (gdouble) n * width * height * 3 * sizeof (gfloat)
      + (gdouble) n * D * (ms * ms + 6) * sizeof (gfloat)
      + (gdouble) width * height * sizeof (gfloat);
  return engine + rois + arrays;
}

static gboolean
ensure_batch_arrays (GstSegmentMaskrcnn * self, guint n, gint D)
{
  const gsize ms = 2 * (gsize) self->mi.cfg.mask_pool;

  if (gst_wsi_batch_grow ((gpointer *) & self->boxes,
          &self->boxes_capacity, (gsize) n * D * 4, sizeof (gfloat))
      && gst_wsi_batch_grow ((gpointer *) & self->scores,
          &self->scores_capacity, (gsize) n * D, sizeof (gfloat))
      && gst_wsi_batch_grow ((gpointer *) & self->labels,
          &self->labels_capacity, (gsize) n * D, sizeof (gint32))
      && gst_wsi_batch_grow ((gpointer *) & self->masks,
          &self->masks_capacity, (gsize) n * D * ms * ms, sizeof (gfloat))
      && gst_wsi_batch_grow ((gpointer *) & self->counts,
          &self->counts_capacity, n, sizeof (gint))
      && gst_wsi_batch_grow ((gpointer *) & self->objects,
          &self->objects_capacity, (gsize) D, sizeof (WsiMrcnnObject)))
    return TRUE;
  GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
      ("Not enough memory for a batch of %u patches of %dx%d.", n,
          self->in.width, self->in.height),
      ("Lower batch-size or max-detections."));
  return FALSE;
}

static GstCaps *
make_src_caps (GstSegmentMaskrcnn * self, GstCaps * in_caps)
{
  GstStructure *s = gst_caps_get_structure (in_caps, 0);
  gint fn = 0, fd = 1;

  gst_structure_get_fraction (s, "framerate", &fn, &fd);
  return gst_caps_new_simple ("video/x-raw",
      "format", G_TYPE_STRING, "GRAY16_LE",
      "width", G_TYPE_INT, self->in.width,
      "height", G_TYPE_INT, self->in.height,
      "framerate", GST_TYPE_FRACTION, fn, fd, NULL);
}

static gboolean
set_input_caps (GstSegmentMaskrcnn * self, GstCaps * caps)
{
  const WsiModelInfo *info;
  GstVideoInfo vinfo;
  gboolean is_tensor;
  gint width = 0, height = 0;
  guint batch_size;
  guint64 max_memory;

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
  GST_OBJECT_LOCK (self);
  batch_size = self->seg.batch_size;
  max_memory = self->seg.max_memory;
  GST_OBJECT_UNLOCK (self);
  if (!gst_wsi_batch_check_memory (self->batch, batch_size, width, height,
          estimate_batch_bytes (self, width, height, batch_size), max_memory))
    return FALSE;
  /* patches of the old size go out (or train) before the size changes */
  if (!gst_wsi_train_switch_input (self->train, self->batch, &self->in,
          self->mode == MRCNN_MODE_INFER, width, height, is_tensor, &vinfo))
    return FALSE;
  self->input_ok = TRUE;
  gst_wsi_patch_set_src_caps (GST_AGGREGATOR (self), &self->src_caps,
      make_src_caps (self, caps));
  send_classes (self);
  return TRUE;
}

/* The output follows from the input: never fixate the template. */
static GstFlowReturn
gst_segment_maskrcnn_update_src_caps (GstAggregator * agg, GstCaps * caps,
    GstCaps ** ret)
{
  GstSegmentMaskrcnn *self = GST_SEGMENT_MASKRCNN (agg);

  return gst_wsi_patch_update_src_caps (self->src_caps, caps, ret);
}

static gboolean
gst_segment_maskrcnn_sink_event (GstAggregator * agg, GstAggregatorPad * pad,
    GstEvent * event)
{
  GstSegmentMaskrcnn *self = GST_SEGMENT_MASKRCNN (agg);
  gint role = gst_wsi_train_pad_role (self->train, pad);
  GstCaps *caps;

  if (GST_EVENT_TYPE (event) == GST_EVENT_CAPS && (role == 1 || role == 3)) {
    /* the GRAY16 annotation patches (the driver reads GRAY8 only) */
    gst_event_parse_caps (event, &caps);
    self->ann_ok[role == 3] = gst_video_info_from_caps (&self->ann_vinfo[role
            == 3], caps);
  }
  if (gst_wsi_train_sink_event (self->train, pad, event)) {
    /* annotation / validation pads: caps recorded by the driver */
  } else if (pad == self->class_pad) {
    if (GST_EVENT_TYPE (event) == GST_EVENT_CAPS) {
      gst_event_parse_caps (event, &caps);
      self->class_ok = gst_video_info_from_caps (&self->class_vinfo, caps);
    }
  } else if (GST_EVENT_TYPE (event) == GST_EVENT_CAPS
      && pad == self->image_pad) {
    gst_event_parse_caps (event, &caps);
    if (!set_input_caps (self, caps)) {
      gst_event_unref (event);
      return FALSE;
    }
  } else if (GST_EVENT_TYPE (event) == GST_EVENT_SEGMENT
      && pad == self->image_pad && self->mode == MRCNN_MODE_INFER) {
    const GstSegment *segment;
    gst_event_parse_segment (event, &segment);
    if (segment->format == GST_FORMAT_TIME)
      gst_aggregator_update_segment (agg, segment);
  }
  return GST_AGGREGATOR_CLASS (gst_segment_maskrcnn_parent_class)->sink_event
      (agg, pad, event);
}

/* The label patch of image @b's detections (arrays of @D per image) into
 * @out16 (row stride in bytes); the painted objects in self->objects.
 * Returns their number, -1 with the error posted. */
static gint
paint_detections (GstSegmentMaskrcnn * self, const gfloat * boxes,
    const gfloat * scores, const gint32 * labels, const gfloat * masks,
    gint count, guint16 * out16, gsize stride)
{
  const gint ms = 2 * self->mi.cfg.mask_pool;
  gchar err[256] = "";
  gint n_obj;

  if (!gst_wsi_batch_grow ((gpointer *) & self->objects,
          &self->objects_capacity, (gsize) MAX (count, 1),
          sizeof (WsiMrcnnObject))) {
    GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
        ("Not enough memory for %d detections.", count), (NULL));
    return -1;
  }
  n_obj = wsimrcnn_paint (boxes, scores, labels, masks, ms, NULL, count,
      self->in.width, self->in.height, self->mi.mask_threshold, out16,
      stride, self->objects, err, sizeof err);
  if (n_obj < 0)
    GST_ELEMENT_ERROR (self, LIBRARY, FAILED,
        ("Painting the instances failed: %s", err), (NULL));
  return n_obj;
}

/* The label patch of one image's detections, with a detection meta per
 * painted instance (box: the detector's, in patch pixels). */
static GstBuffer *
make_output (GstSegmentMaskrcnn * self, guint b, gint D, gint count)
{
  const WsiModelInfo *info = model_info (self);
  const gint ms = 2 * self->mi.cfg.mask_pool;
  const gint w = self->in.width, h = self->in.height;
  const gsize stride = (gsize) w * 2;
  GstBuffer *out = gst_buffer_new_allocate (NULL, stride * h, NULL);
  GstMapInfo map;
  gint n_obj;

  gst_buffer_map (out, &map, GST_MAP_WRITE);
  n_obj = paint_detections (self, self->boxes + (gsize) b * D * 4,
      self->scores + (gsize) b * D, self->labels + (gsize) b * D,
      self->masks + (gsize) b * D * ms * ms, count, (guint16 *) map.data,
      stride);
  gst_buffer_unmap (out, &map);
  if (n_obj < 0) {
    gst_buffer_unref (out);
    return NULL;
  }
  for (gint i = 0; i < n_obj; i++) {
    const WsiMrcnnObject *o = &self->objects[i];
    const gchar *name = o->class_id >= 0 && o->class_id < info->n_classes ?
        info->class_names[o->class_id] : NULL;
    gst_wsi_detection_meta_add (out, o->id, o->class_id, name, o->score,
        o->box[0], o->box[1], MIN (o->box[2], (gfloat) w),
        MIN (o->box[3], (gfloat) h));
  }
  return out;
}

/* GstWsiBatchRunFunc of inference: one detection pass over the batch, one
 * label patch per input, in order. */
static GstFlowReturn
run_inference (GstWsiBatch * batch, guint n, GstBuffer * const *images,
    GstBuffer * const *partners, gpointer user_data)
{
  GstSegmentMaskrcnn *self = user_data;
  GstFlowReturn ret = GST_FLOW_OK;
  gchar err[512] = "";
  gfloat *in;
  gint D;

  if (!apply_detection_settings (self))
    return GST_FLOW_ERROR;
  D = self->applied_max;
  if (!ensure_batch_arrays (self, n, D))
    return GST_FLOW_ERROR;
  if (!(in = gst_wsi_patch_input_fill (&self->in, GST_ELEMENT (self),
              model_info (self), n, images)))
    return GST_FLOW_ERROR;
  if (self->seg.threads > 0)
    wsinn_set_num_threads ((int) self->seg.threads);
  if (wsimrcnn_detect_batch (self->net, in, (int) n, self->in.height,
          self->in.width, self->boxes, self->scores, self->labels,
          self->masks, NULL, self->counts, err, sizeof err) != 0) {
    GST_ELEMENT_ERROR (self, LIBRARY, FAILED, ("Inference failed: %s", err),
        (NULL));
    return GST_FLOW_ERROR;
  }
  for (guint i = 0; i < n && ret == GST_FLOW_OK; i++) {
    GstBuffer *out = make_output (self, i, D, self->counts[i]);
    if (!out)
      return GST_FLOW_ERROR;
    ret = gst_wsi_batch_finish_buffer (batch, out, images[i], self->in.width,
        self->in.height, !self->in.is_tensor);
  }
  return ret;
}

static gboolean
accept_patch (GstWsiBatch * batch, GstBuffer * buf, gpointer user_data)
{
  GstSegmentMaskrcnn *self = user_data;

  if (!self->net || !self->input_ok) {
    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION,
        ("Patches arrived without accepted caps."), (NULL));
    return FALSE;
  }
  gst_wsi_patch_input_check_resolution (&self->in, GST_ELEMENT (self), buf,
      model_info (self)->mpp);
  return TRUE;
}

/* ------------------------------------------------- training (callbacks) */

/* class_map patches are taken as they arrive (a few ahead of the batch)
 * and matched to the batch's images by place when it trains. */
static void
take_class_patches (GstSegmentMaskrcnn * self)
{
  GstAggregatorPad *pad;
  GstBuffer *buf;

  GST_OBJECT_LOCK (self);
  pad = self->class_pad ? gst_object_ref (self->class_pad) : NULL;
  GST_OBJECT_UNLOCK (self);
  if (!pad)
    return;
  while (self->class_queue.length < MIN (self->seg.batch_size + 2,
          MAX_CLASS_QUEUE)
      && (buf = gst_aggregator_pad_pop_buffer (pad)))
    g_queue_push_tail (&self->class_queue, buf);
  gst_object_unref (pad);
}

static void
clear_class_queue (GstSegmentMaskrcnn * self)
{
  g_queue_clear_full (&self->class_queue, (GDestroyNotify) gst_buffer_unref);
}

/* The class_map patch of @img (earlier unmatched ones dropped); NULL with
 * the error posted. */
static GstBuffer *
class_patch_of (GstSegmentMaskrcnn * self, GstBuffer * img)
{
  GstWsiPlace pi, pc;
  GstBuffer *buf = NULL;
  gboolean found = FALSE;

  gst_wsi_place_from_buffer (&pi, img, GST_WSI_SLIDE_MATCH_PATH);
  while (!found && (buf = g_queue_pop_head (&self->class_queue))) {
    found = gst_wsi_place_from_buffer (&pc, buf, GST_WSI_SLIDE_MATCH_PATH)
        && gst_wsi_place_equal (&pi, &pc);
    gst_wsi_place_clear (&pc);
    if (!found)
      gst_clear_buffer (&buf);
  }
  gst_wsi_place_clear (&pi);
  if (!found) {
    gchar *where = gst_wsi_place_describe (img);
    GST_ELEMENT_ERROR (self, STREAM, FAILED,
        ("No class_map patch for the training patch of %s.", where),
        ("Feed the class_map pad from the same tee as the image and "
            "annotation pads (one class patch per image patch)."));
    g_free (where);
  }
  return buf;
}

static void
clear_targets (GstSegmentMaskrcnn * self, guint n)
{
  for (guint i = 0; i < n; i++)
    wsimrcnn_targets_clear (&self->targets[i]);
}

/* Targets of @n training patches from their GRAY16 annotation patches
 * (and class_map patches when that pad is linked); FALSE with the error
 * posted (nothing to clear then). */
static gboolean
make_targets (GstSegmentMaskrcnn * self, guint n, GstBuffer * const *images,
    GstBuffer * const *annotations)
{
  const gint w = self->in.width, h = self->in.height;
  const GstVideoInfo *vinfo = &self->ann_vinfo[0];
  gboolean with_classes = self->class_pad != NULL;
  guint max_instances, min_area;
  guint i;

  GST_OBJECT_LOCK (self);
  max_instances = self->max_instances;
  min_area = self->min_area;
  GST_OBJECT_UNLOCK (self);
  if (!self->ann_ok[0] || GST_VIDEO_INFO_WIDTH (vinfo) != w
      || GST_VIDEO_INFO_HEIGHT (vinfo) != h) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT,
        ("Annotation patches must be GRAY16_LE instance ids of the image "
            "patch size %dx%d.", w, h),
        ("Use labelpatch instance-mode=instances on the annotation branch."));
    return FALSE;
  }
  if (with_classes && (!self->class_ok
          || GST_VIDEO_INFO_WIDTH (&self->class_vinfo) != w
          || GST_VIDEO_INFO_HEIGHT (&self->class_vinfo) != h)) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT,
        ("class_map patches must be GRAY8 of the image patch size %dx%d.", w,
            h), (NULL));
    return FALSE;
  }
  if (!gst_wsi_batch_grow ((gpointer *) & self->targets,
          &self->targets_capacity, n, sizeof (WsiMrcnnTargets))) {
    GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
        ("Not enough memory for the targets of %u patches.", n), (NULL));
    return FALSE;
  }
  memset (self->targets, 0, n * sizeof (WsiMrcnnTargets));
  for (i = 0; i < n; i++) {
    GstVideoFrame af, cf;
    GstBuffer *cbuf = NULL;
    gchar err[512] = "";
    gint rc;

    if (with_classes && !(cbuf = class_patch_of (self, images[i])))
      goto failed;
    if (!gst_video_frame_map (&af, vinfo, annotations[i], GST_MAP_READ)) {
      gst_clear_buffer (&cbuf);
      GST_ELEMENT_ERROR (self, STREAM, FORMAT,
          ("Could not map a GRAY16_LE annotation patch of %dx%d.", w, h),
          (NULL));
      goto failed;
    }
    if (cbuf && !gst_video_frame_map (&cf, &self->class_vinfo, cbuf,
            GST_MAP_READ)) {
      gst_video_frame_unmap (&af);
      gst_buffer_unref (cbuf);
      GST_ELEMENT_ERROR (self, STREAM, FORMAT,
          ("Could not map a GRAY8 class_map patch of %dx%d.", w, h), (NULL));
      goto failed;
    }
    rc = wsimrcnn_targets_from_labels (GST_VIDEO_FRAME_PLANE_DATA (&af, 0),
        GST_VIDEO_FRAME_PLANE_STRIDE (&af, 0), w, h,
        cbuf ? GST_VIDEO_FRAME_PLANE_DATA (&cf, 0) : NULL,
        cbuf ? GST_VIDEO_FRAME_PLANE_STRIDE (&cf, 0) : 0,
        model_info (self)->n_classes, WSIMRCNN_INSTANCE_IGNORE,
        (int) max_instances, (int) min_area, &self->targets[i], err,
        sizeof err);
    gst_video_frame_unmap (&af);
    if (cbuf) {
      gst_video_frame_unmap (&cf);
      gst_buffer_unref (cbuf);
    }
    if (rc != 0) {
      gchar *where = gst_wsi_place_describe (images[i]);
      GST_ELEMENT_ERROR (self, STREAM, DECODE,
          ("Annotation of %s: %s.", where, err),
          ("max-instances=%u: raise it (targets take instances x %dx%d x 4 "
              "bytes) or use smaller patches.", max_instances, w, h));
      g_free (where);
      goto failed;
    }
  }
  return TRUE;

failed:
  clear_targets (self, i);
  return FALSE;
}

/* GstWsiTrainFuncs.step: one Mask R-CNN step (models/maskrcnn's trainer);
 * patches without objects train the background. */
static GstWsiTrainStatus
train_step (gpointer user, WsiTrainer * trainer, guint n,
    GstBuffer * const *images, GstBuffer * const *annotations,
    WsiStepResult * res, gchar * err, gsize errlen)
{
  GstSegmentMaskrcnn *self = user;
  WsiMrcnnBatch b;
  gfloat *in;
  gint rc;

  for (guint i = 0; i < n; i++)
    gst_wsi_patch_input_check_resolution (&self->in, GST_ELEMENT (self),
        images[i], model_info (self)->mpp);
  if (!(in = gst_wsi_patch_input_fill (&self->in, GST_ELEMENT (self),
              model_info (self), n, images))
      || !make_targets (self, n, images, annotations))
    return GST_WSI_TRAIN_ERROR_POSTED;
  b.images = in;
  b.n = (int) n;
  b.h = self->in.height;
  b.w = self->in.width;
  b.targets = self->targets;
  rc = wsi_trainer_step_model (trainer, &b, res, err, errlen);
  clear_targets (self, n);
  return rc == 0 ? GST_WSI_TRAIN_OK : GST_WSI_TRAIN_FAILED;
}

/* ---- validation: whole images ---- */

static void
val_image_clear (ValImage * v)
{
  g_clear_pointer (&v->slide, g_free);
  g_clear_pointer (&v->si, stitch_instances_free);
  g_clear_pointer (&v->pred, g_free);
  g_clear_pointer (&v->gt, g_free);
  g_clear_pointer (&v->valid, g_free);
  v->width = v->height = 0;
  v->skip = FALSE;
}

static gboolean
val_row (gint64 y, const guint32 * gids, gpointer data, GError ** error)
{
  ValImage *v = data;

  if (y >= 0 && y < v->height)
    memcpy (v->pred + (gsize) y * v->width, gids, v->width * sizeof *gids);
  return TRUE;
}

/* The finished image's instance counts (segeval's: pixels outside the
 * annotated valid area are background in both maps) join the run's. */
static gboolean
val_image_finish (GstSegmentMaskrcnn * self)
{
  ValImage *v = &self->vimg;
  const gsize npix = (gsize) v->width * v->height;
  WsiInstanceCounts c = { 0 };
  WsiLabelView gv;
  GError *err = NULL;
  guint32 *gi;

  if (!v->slide || v->skip) {
    val_image_clear (v);
    return TRUE;
  }
  if (!stitch_instances_finish (v->si, v->height, &err)) {
    GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
        ("Validation image '%s': %s.", v->slide, err->message), (NULL));
    g_error_free (err);
    val_image_clear (v);
    return FALSE;
  }
  gi = g_try_new (guint32, MAX (npix, 1));
  if (!gi) {
    GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
        ("Not enough memory for the metrics of validation image '%s'.",
            v->slide), (NULL));
    val_image_clear (v);
    return FALSE;
  }
  for (gsize k = 0; k < npix; k++)
    if (!v->valid[k])
      v->pred[k] = 0;
  gv.data = v->gt;
  gv.stride = (gsize) v->width * 2;
  gv.bpp = 2;
  wsi_instances_from_labels (&gv, v->valid, v->width, v->height, 1, 8, gi);
  wsi_instance_count (gi, v->pred, npix, G_MAXUINT32 - 1, &c);
  g_free (gi);
  GST_DEBUG_OBJECT (self, "validation image %s: %" G_GUINT64_FORMAT
      " annotated, %" G_GUINT64_FORMAT " predicted, %" G_GUINT64_FORMAT
      " matched", v->slide, c.n_gt, c.n_pred, c.tp);
  wsi_instance_counts_add (&self->val_counts, &c);
  self->val_images++;
  val_image_clear (v);
  return TRUE;
}

static gboolean
val_image_start (GstSegmentMaskrcnn * self, const GstWsiTileMeta * m)
{
  ValImage *v = &self->vimg;
  gint64 w, h;

  gst_wsi_tile_meta_region_level_size (m, &w, &h);
  v->slide = g_strdup (m->slide ? m->slide : "");
  v->level = m->level;
  v->region_x = m->region_x;
  v->region_y = m->region_y;
  if (w <= 0 || h <= 0 || w * h > MAX_VAL_IMAGE_PIXELS) {
    GST_ELEMENT_WARNING (self, STREAM, FAILED,
        ("Validation image '%s' (%" G_GINT64_FORMAT "x%" G_GINT64_FORMAT
            ") is not reassembled for instance metrics (at most %"
            G_GINT64_FORMAT " pixels): its patches count in the pixel "
            "metrics only.", v->slide, w, h, MAX_VAL_IMAGE_PIXELS),
        ("Validate on tiles or regions (slidesrc region=)."));
    v->skip = TRUE;
    return TRUE;
  }
  v->width = w;
  v->height = h;
  v->pred = g_try_new0 (guint32, w * h);
  v->gt = g_try_new0 (guint16, w * h);
  v->valid = g_try_malloc0 (w * h);
  v->si = stitch_instances_new (w, val_row, v);
  if (!v->pred || !v->gt || !v->valid) {
    GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
        ("Not enough memory reassembling validation image '%s' (%"
            G_GINT64_FORMAT "x%" G_GINT64_FORMAT ").", v->slide, w, h),
        (NULL));
    val_image_clear (v);
    return FALSE;
  }
  return TRUE;
}

/* One validation pair: the predicted patch @pred (GRAY16, tight rows)
 * merged into its image, the annotation's centre crop painted, both
 * foregrounds counted in the pixel metrics. */
static gboolean
val_add_patch (GstSegmentMaskrcnn * self, GstBuffer * img, GstBuffer * ann,
    const guint16 * pred)
{
  const gint w = self->in.width, h = self->in.height;
  const gsize npix = (gsize) w * h;
  ValImage *v = &self->vimg;
  GstWsiTileMeta *src = gst_buffer_get_wsi_tile_meta (ann);
  GstWsiTileMeta m;
  StitchInstancePatch p = { 0 };
  GstVideoFrame af;
  GError *err = NULL;
  gint x0, x1, y0, y1, k0, k1;
  gint64 px, py;

  if (!src)
    src = gst_buffer_get_wsi_tile_meta (img);
  if (!gst_video_frame_map (&af, &self->ann_vinfo[1], ann, GST_MAP_READ)) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT,
        ("Could not map a GRAY16_LE validation annotation patch of %dx%d.",
            w, h), (NULL));
    return FALSE;
  }
  /* foregrounds for the pixel metrics (ignore -> 255) */
  for (gint y = 0; y < h; y++) {
    const guint16 *row = (const guint16 *) ((const guint8 *)
        GST_VIDEO_FRAME_PLANE_DATA (&af, 0) +
        (gsize) y * GST_VIDEO_FRAME_PLANE_STRIDE (&af, 0));
    for (gint x = 0; x < w; x++) {
      gsize k = (gsize) y * w + x;
      self->val_pred8[k] = pred[k] > 0;
      self->val_gt8[k] = row[x] == WSIMRCNN_INSTANCE_IGNORE ? 255 :
          row[x] > 0;
    }
  }
  gst_wsi_train_count_pixels (&self->val_cm, img, ann, self->val_pred8,
      self->val_gt8, w, h);
  (void) npix;

  m = *src;
  gst_wsi_tile_meta_fit_to_size (&m, w, h);
  if (!(m.downsample > 0 && isfinite (m.downsample) && m.overlap >= 0
          && m.overlap < MIN (w, h)))
    goto done;                  /* no geometry: pixel metrics only */
  if (v->slide && (g_strcmp0 (v->slide, m.slide ? m.slide : "") != 0
          || v->level != m.level || v->region_x != m.region_x
          || v->region_y != m.region_y) && !val_image_finish (self))
    goto failed;
  if (!v->slide && !val_image_start (self, &m))
    goto failed;
  if (v->skip)
    goto done;
  px = llround ((m.x - m.region_x) / m.downsample);
  py = llround ((m.y - m.region_y) / m.downsample);

  /* the prediction, merged as stitchsink merges instance patches */
  p.labels = (const guint8 *) pred;
  p.stride = (gsize) w * 2;
  p.width = m.width;
  p.height = m.height;
  p.px = px;
  p.py = py;
  wsi_metrics_crop_span (m.width, 0, m.pad_left, m.valid_width, px,
      v->width, TRUE, TRUE, &p.vx0, &p.vx1);
  wsi_metrics_crop_span (m.height, 0, m.pad_top, m.valid_height, py,
      v->height, TRUE, TRUE, &p.vy0, &p.vy1);
  wsi_metrics_crop_span (m.width, m.overlap, m.pad_left, m.valid_width, px,
      v->width, m.col == 0, m.grid_cols > 0 && m.col == m.grid_cols - 1,
      &k0, &k1);
  p.cx0 = k0;
  p.cx1 = k1;
  wsi_metrics_crop_span (m.height, m.overlap, m.pad_top, m.valid_height, py,
      v->height, m.row == 0, m.grid_rows > 0 && m.row == m.grid_rows - 1,
      &k0, &k1);
  p.cy0 = k0;
  p.cy1 = k1;
  if (!stitch_instances_advance (v->si, py, &err)
      || !stitch_instances_add_patch (v->si, &p, NULL, &err)) {
    GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
        ("Validation image '%s': %s.", v->slide, err->message), (NULL));
    g_error_free (err);
    goto failed;
  }

  /* the annotation's centre crop, as segeval paints it */
  gst_wsi_pair_compared_area (&m, &x0, &x1, &y0, &y1);
  for (gint j = y0; j < y1; j++) {
    const guint16 *row = (const guint16 *) ((const guint8 *)
        GST_VIDEO_FRAME_PLANE_DATA (&af, 0) +
        (gsize) j * GST_VIDEO_FRAME_PLANE_STRIDE (&af, 0));
    gint64 cy = py + j;
    if (cy < 0 || cy >= v->height)
      continue;
    for (gint i = x0; i < x1; i++) {
      gint64 cx = px + i;
      gsize at;
      if (cx < 0 || cx >= v->width)
        continue;
      at = (gsize) cy * v->width + cx;
      v->gt[at] = row[i];
      v->valid[at] = row[i] != WSIMRCNN_INSTANCE_IGNORE;
    }
  }

done:
  gst_video_frame_unmap (&af);
  return TRUE;

failed:
  gst_video_frame_unmap (&af);
  return FALSE;
}

/* GstWsiTrainFuncs.validate: detections of a validation batch painted as
 * in inference, merged into their images for the instance metrics. Mask
 * R-CNN's eval mode has no loss: the run's loss is NaN. */
static GstWsiTrainStatus
train_validate (gpointer user, WsiTrainer * trainer, guint n,
    GstBuffer * const *images, GstBuffer * const *annotations,
    WsiLossValues * losses, gchar * err, gsize errlen)
{
  GstSegmentMaskrcnn *self = user;
  const gint w = self->in.width, h = self->in.height;
  const gsize npix = (gsize) w * h;
  const WsiMrcnnDetections *d;
  const GstVideoInfo *vinfo = &self->ann_vinfo[1];
  WsiMrcnnBatch b = { 0 };
  WsiLossValues lv;
  gfloat *in;

  losses->loss = NAN;
  if (!self->ann_ok[1] || GST_VIDEO_INFO_WIDTH (vinfo) != w
      || GST_VIDEO_INFO_HEIGHT (vinfo) != h) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT,
        ("Validation annotation patches must be GRAY16_LE instance ids of "
            "the image patch size %dx%d.", w, h),
        ("Use labelpatch instance-mode=instances on the validation "
            "annotation branch."));
    return GST_WSI_TRAIN_ERROR_POSTED;
  }
  if (!apply_detection_settings (self)
      || !(in = gst_wsi_patch_input_fill (&self->in, GST_ELEMENT (self),
              model_info (self), n, images)))
    return GST_WSI_TRAIN_ERROR_POSTED;
  if (!gst_wsi_batch_grow ((gpointer *) & self->val_paint,
          &self->val_capacity, npix, sizeof (guint16))
      || !(self->val_pred8 = g_try_realloc (self->val_pred8, npix))
      || !(self->val_gt8 = g_try_realloc (self->val_gt8, npix))) {
    GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
        ("Not enough memory for the validation patches."), (NULL));
    return GST_WSI_TRAIN_ERROR_POSTED;
  }
  b.images = in;
  b.n = (int) n;
  b.h = h;
  b.w = w;
  if (wsi_trainer_evaluate_model (trainer, &b, &lv, err, errlen) != 0
      || !(d = wsimrcnn_trainer_detections (trainer)))
    return GST_WSI_TRAIN_FAILED;
  for (guint i = 0; i < n; i++) {
    const gsize D = (gsize) d->max_detections, ms = (gsize) d->mask_size;
    if (paint_detections (self, d->boxes + i * D * 4, d->scores + i * D,
            d->labels + i * D, d->masks + i * D * ms * ms, d->counts[i],
            self->val_paint, (gsize) w * 2) < 0
        || !val_add_patch (self, images[i], annotations[i], self->val_paint))
      return GST_WSI_TRAIN_ERROR_POSTED;
  }
  return GST_WSI_TRAIN_OK;
}

static void
train_validation_start (gpointer user)
{
  GstSegmentMaskrcnn *self = user;

  wsi_confusion_reset (&self->val_cm);
  memset (&self->val_counts, 0, sizeof self->val_counts);
  self->val_images = 0;
  val_image_clear (&self->vimg);
}

/* GstWsiTrainFuncs.validation_report: instance metrics of the reassembled
 * images (segeval's aggregate: summed matches, AJI from the summed
 * intersections and unions) and the foreground's pixel metrics. */
static void
train_validation_report (gpointer user, GstStructure * s,
    GstStructure * epoch)
{
  GstSegmentMaskrcnn *self = user;
  WsiInstanceMetrics m;
  WsiClassScore fg;

  val_image_finish (self);
  wsi_instance_metrics (&self->val_counts, &m);
  gst_wsi_train_report_pixels (&self->val_cm, 2, s, epoch);
  wsi_confusion_class_score (&self->val_cm, 1, &fg);
  gst_structure_set (s, "pixel-dice", G_TYPE_DOUBLE, fg.dice,
      "images", G_TYPE_UINT, self->val_images,
      "aji", G_TYPE_DOUBLE, m.aji, "pq", G_TYPE_DOUBLE, m.pq,
      "sq", G_TYPE_DOUBLE, m.sq, "dq", G_TYPE_DOUBLE, m.dq,
      "f1", G_TYPE_DOUBLE, m.f1, "precision", G_TYPE_DOUBLE, m.precision,
      "recall", G_TYPE_DOUBLE, m.recall,
      "gt-objects", G_TYPE_UINT64, self->val_counts.n_gt,
      "pred-objects", G_TYPE_UINT64, self->val_counts.n_pred, NULL);
  if (epoch)
    gst_structure_set (epoch, "validation-aji", G_TYPE_DOUBLE, m.aji,
        "validation-pq", G_TYPE_DOUBLE, m.pq,
        "validation-f1", G_TYPE_DOUBLE, m.f1,
        "validation-pixel-dice", G_TYPE_DOUBLE, fg.dice, NULL);
}

static void
train_before_gap (gpointer user)
{
  send_classes (user);
}

static GstAggregatorPad *
gst_segment_maskrcnn_create_new_pad (GstAggregator * agg,
    GstPadTemplate * templ, const gchar * req_name, const GstCaps * caps)
{
  GstSegmentMaskrcnn *self = GST_SEGMENT_MASKRCNN (agg);
  const gboolean refuse = self->mode == MRCNN_MODE_INFER
      && g_atomic_int_get (&self->running);
  GstAggregatorPad *pad;

  if (g_strcmp0 (GST_PAD_TEMPLATE_NAME_TEMPLATE (templ), "class_map") != 0)
    return gst_wsi_train_request_pad (self->train, templ, refuse);
  GST_OBJECT_LOCK (self);
  if (self->class_pad || refuse) {
    GST_OBJECT_UNLOCK (self);
    GST_WARNING_OBJECT (self, "pad class_map refused (one; mode=train "
        "only)");
    return NULL;
  }
  pad = g_object_new (GST_TYPE_AGGREGATOR_PAD, "name", "class_map",
      "direction", GST_PAD_SINK, "template", templ, NULL);
  self->class_pad = pad;
  GST_OBJECT_UNLOCK (self);
  return pad;
}

static void
gst_segment_maskrcnn_release_pad (GstElement * element, GstPad * pad)
{
  GstSegmentMaskrcnn *self = GST_SEGMENT_MASKRCNN (element);

  GST_OBJECT_LOCK (self);
  if (pad == GST_PAD (self->class_pad))
    self->class_pad = NULL;
  GST_OBJECT_UNLOCK (self);
  gst_wsi_train_release_pad (self->train, pad);
  GST_ELEMENT_CLASS (gst_segment_maskrcnn_parent_class)->release_pad
      (element, pad);
}

static GstFlowReturn
gst_segment_maskrcnn_aggregate (GstAggregator * agg, gboolean timeout)
{
  GstSegmentMaskrcnn *self = GST_SEGMENT_MASKRCNN (agg);

  if (self->mode == MRCNN_MODE_TRAIN) {
    take_class_patches (self);
    return gst_wsi_train_aggregate (self->train, self->src_caps);
  }
  return gst_wsi_batch_aggregate (self->batch, self->image_pad, timeout);
}

static GstClockTime
gst_segment_maskrcnn_get_next_time (GstAggregator * agg)
{
  GstSegmentMaskrcnn *self = GST_SEGMENT_MASKRCNN (agg);

  if (self->mode != MRCNN_MODE_INFER)
    return GST_CLOCK_TIME_NONE;
  return gst_wsi_batch_next_time (self->batch, self->image_pad);
}

static gboolean
gst_segment_maskrcnn_src_event (GstAggregator * agg, GstEvent * event)
{
  if (gst_wsi_aggregator_refuse_seek (agg, event))
    return FALSE;
  return GST_AGGREGATOR_CLASS (gst_segment_maskrcnn_parent_class)->src_event
      (agg, event);
}

static void
free_batch_arrays (GstSegmentMaskrcnn * self)
{
  g_clear_pointer (&self->boxes, g_free);
  g_clear_pointer (&self->scores, g_free);
  g_clear_pointer (&self->labels, g_free);
  g_clear_pointer (&self->masks, g_free);
  g_clear_pointer (&self->counts, g_free);
  g_clear_pointer (&self->objects, g_free);
  g_clear_pointer (&self->targets, g_free);
  g_clear_pointer (&self->val_paint, g_free);
  g_clear_pointer (&self->val_pred8, g_free);
  g_clear_pointer (&self->val_gt8, g_free);
  self->boxes_capacity = self->scores_capacity = 0;
  self->labels_capacity = self->masks_capacity = self->counts_capacity = 0;
  self->objects_capacity = self->targets_capacity = self->val_capacity = 0;
  gst_wsi_patch_input_clear (&self->in);
  val_image_clear (&self->vimg);
  clear_class_queue (self);
}

static gboolean
gst_segment_maskrcnn_stop (GstAggregator * agg)
{
  GstSegmentMaskrcnn *self = GST_SEGMENT_MASKRCNN (agg);

  gst_wsi_batch_clear (self->batch);
  gst_wsi_train_stop (self->train);
  free_batch_arrays (self);
  gst_wsi_model_classes_clear (&self->classes, GST_ELEMENT (self));
  gst_clear_event (&self->instances_event);
  free_model (self);
  gst_caps_replace (&self->src_caps, NULL);
  self->ann_ok[0] = self->ann_ok[1] = self->class_ok = FALSE;
  gst_wsi_set_running (GST_ELEMENT (self), &self->running, FALSE);
  return TRUE;
}

static gboolean
gst_segment_maskrcnn_start (GstAggregator * agg)
{
  GstSegmentMaskrcnn *self = GST_SEGMENT_MASKRCNN (agg);
  const gboolean infer = self->mode == MRCNN_MODE_INFER;

  gst_wsi_set_running (GST_ELEMENT (self), &self->running, TRUE);
  gst_wsi_batch_reset_stats (self->batch);
  gst_wsi_batch_set_size (self->batch, self->seg.batch_size);
  gst_wsi_batch_set_timeout (self->batch, infer ? self->seg.batch_timeout :
      0);
  self->input_ok = FALSE;
  gst_wsi_patch_input_clear (&self->in);
  if (infer && (gst_wsi_train_has_pads (self->train) || self->class_pad)) {
    GST_ELEMENT_ERROR (self, CORE, PAD,
        ("Annotation, class_map and validation pads are for mode=train "
            "only."), ("Set mode=train or unlink them."));
    goto failed;
  }
  if (!infer && !gst_wsi_train_start (self->train, TRUE, self->seg.batch_size))
    goto failed;
  if (!ensure_model (self))
    goto failed;
  return TRUE;

failed:
  /* stop() does not follow a failed start(): release the checkpoint lock
   * and the model here */
  gst_segment_maskrcnn_stop (agg);
  return FALSE;
}

/* A flushing seek: patches waiting for a batch are dropped; in training a
 * validation run in progress is abandoned and the epoch's sums restart
 * (weights, step and epoch kept, gst/gstwsitrain). */
static GstFlowReturn
gst_segment_maskrcnn_flush (GstAggregator * agg)
{
  GstSegmentMaskrcnn *self = GST_SEGMENT_MASKRCNN (agg);
  GstAggregatorClass *parent =
      GST_AGGREGATOR_CLASS (gst_segment_maskrcnn_parent_class);

  gst_wsi_batch_clear (self->batch);
  gst_wsi_train_flush (self->train);
  clear_class_queue (self);
  return parent->flush ? parent->flush (agg) : GST_FLOW_OK;
}

static void
gst_segment_maskrcnn_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec)
{
  GstSegmentMaskrcnn *self = GST_SEGMENT_MASKRCNN (object);

  if (gst_wsi_property_refused (GST_ELEMENT (self), &self->running, pspec))
    return;
  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_SCORE_THRESHOLD:
      self->score_threshold = g_value_get_double (value);
      break;
    case PROP_NMS_IOU:
      self->nms_iou = g_value_get_double (value);
      break;
    case PROP_MAX_DETECTIONS:
      self->max_detections = g_value_get_uint (value);
      break;
    case PROP_MODE:
      self->mode = g_value_get_enum (value);
      break;
    case PROP_SEED:
      self->seed = g_value_get_uint64 (value);
      break;
    case PROP_MAX_INSTANCES:
      self->max_instances = g_value_get_uint (value);
      break;
    case PROP_MIN_AREA:
      self->min_area = g_value_get_uint (value);
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
gst_segment_maskrcnn_get_property (GObject * object, guint prop_id,
    GValue * value, GParamSpec * pspec)
{
  GstSegmentMaskrcnn *self = GST_SEGMENT_MASKRCNN (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_SCORE_THRESHOLD:
      g_value_set_double (value, self->score_threshold);
      break;
    case PROP_NMS_IOU:
      g_value_set_double (value, self->nms_iou);
      break;
    case PROP_MAX_DETECTIONS:
      g_value_set_uint (value, self->max_detections);
      break;
    case PROP_CLASSES:
      g_value_set_string (value, self->classes.text ? self->classes.text :
          "");
      break;
    case PROP_MODE:
      g_value_set_enum (value, self->mode);
      break;
    case PROP_SEED:
      g_value_set_uint64 (value, self->seed);
      break;
    case PROP_MAX_INSTANCES:
      g_value_set_uint (value, self->max_instances);
      break;
    case PROP_MIN_AREA:
      g_value_set_uint (value, self->min_area);
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
gst_segment_maskrcnn_finalize (GObject * object)
{
  GstSegmentMaskrcnn *self = GST_SEGMENT_MASKRCNN (object);

  gst_wsi_segment_settings_clear (&self->seg);
  gst_wsi_model_classes_clear (&self->classes, GST_ELEMENT (self));
  gst_clear_event (&self->instances_event);
  free_batch_arrays (self);
  free_model (self);
  wsi_confusion_clear (&self->val_cm);
  gst_wsi_train_free (self->train);
  gst_wsi_batch_free (self->batch);
  gst_caps_replace (&self->src_caps, NULL);
  G_OBJECT_CLASS (gst_segment_maskrcnn_parent_class)->finalize (object);
}

static const GstWsiSegmentBlurbs segment_blurbs = {
  "Mask R-CNN model file (.safetensors, arch maskrcnn): backbone, "
      "anchors, thresholds, classes and preprocessing (mode=train: the "
      "initial model, or the checkpoint with resume=true)",
  "Patches per forward pass (mode=train: per optimiser step)",
  "Largest estimated memory (bytes) of one batch: the engine's "
      "activations and the batch arrays; a patch size, batch-size or "
      "max-detections needing more is refused",
};

#define READY_FLAGS (G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | \
    GST_PARAM_MUTABLE_READY)
#define PLAYING_FLAGS (G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | \
    GST_PARAM_MUTABLE_PLAYING)

static void
gst_segment_maskrcnn_class_init (GstSegmentMaskrcnnClass * klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstAggregatorClass *agg_class = GST_AGGREGATOR_CLASS (klass);

  GST_DEBUG_CATEGORY_INIT (gst_segment_maskrcnn_debug, "segment-maskrcnn", 0,
      "Mask R-CNN instance segmentation");

  gobject_class->set_property = gst_segment_maskrcnn_set_property;
  gobject_class->get_property = gst_segment_maskrcnn_get_property;
  gobject_class->finalize = gst_segment_maskrcnn_finalize;

  gst_wsi_segment_install_properties_full (gobject_class, PROP_SEGMENT_FIRST,
      &segment_blurbs);
  g_object_class_install_property (gobject_class, PROP_SCORE_THRESHOLD,
      g_param_spec_double ("score-threshold", "Score threshold",
          "Smallest class score a detection keeps (-1: the model file's "
          "score_threshold)", -1.0, 1.0, -1.0, PLAYING_FLAGS));
  g_object_class_install_property (gobject_class, PROP_NMS_IOU,
      g_param_spec_double ("nms-iou", "NMS IoU",
          "Per-class non-maximum suppression: a detection overlapping a "
          "higher-scoring one by more than this IoU is dropped (0: the model "
          "file's nms_iou)", 0.0, 1.0, 0.0, PLAYING_FLAGS));
  g_object_class_install_property (gobject_class, PROP_MAX_DETECTIONS,
      g_param_spec_uint ("max-detections", "Maximum detections",
          "Most detections per patch (0: the model file's max_detections, at "
          "most 65534)", 0, MAX_DETECTIONS_LIMIT, 0, READY_FLAGS));
  g_object_class_install_property (gobject_class, PROP_CLASSES,
      g_param_spec_string ("classes", "Classes",
          "Class names and colours of the loaded model (name:#rrggbb,...)",
          NULL, G_PARAM_READABLE | G_PARAM_STATIC_STRINGS));
  g_object_class_install_property (gobject_class, PROP_MODE,
      g_param_spec_enum ("mode", "Mode", "Inference, or training with the "
          "annotation pad", GST_TYPE_SEGMENT_MASKRCNN_MODE, MRCNN_MODE_INFER,
          READY_FLAGS));
  g_object_class_install_property (gobject_class, PROP_SEED,
      g_param_spec_uint64 ("seed", "Seed",
          "Training: seed of the anchor and RoI samplers (step s samples "
          "from seed and s: keep it across resumes)", 0, G_MAXUINT64, 1,
          READY_FLAGS));
  g_object_class_install_property (gobject_class, PROP_MAX_INSTANCES,
      g_param_spec_uint ("max-instances", "Maximum instances",
          "Training: most objects in one annotation patch (each target "
          "mask takes patch pixels x 4 bytes); more is an error", 1,
          MAX_DETECTIONS_LIMIT, DEFAULT_MAX_INSTANCES, READY_FLAGS));
  g_object_class_install_property (gobject_class, PROP_MIN_AREA,
      g_param_spec_uint ("min-area", "Minimum area",
          "Training: annotated objects with fewer pixels in a patch are "
          "left out of its targets (slivers cut by the patch border)", 0,
          G_MAXINT, DEFAULT_MIN_AREA, READY_FLAGS));
  gst_wsi_train_install_properties (gobject_class, PROP_TRAIN_FIRST);
  g_object_class_install_property (gobject_class, PROP_POST_MESSAGES,
      gst_wsi_param_spec_post_messages ());

  gst_element_class_add_static_pad_template_with_gtype (element_class,
      &sink_template, GST_TYPE_AGGREGATOR_PAD);
  gst_element_class_add_static_pad_template_with_gtype (element_class,
      &annotation_template, GST_TYPE_AGGREGATOR_PAD);
  gst_element_class_add_static_pad_template_with_gtype (element_class,
      &class_map_template, GST_TYPE_AGGREGATOR_PAD);
  gst_element_class_add_static_pad_template_with_gtype (element_class,
      &validation_template, GST_TYPE_AGGREGATOR_PAD);
  gst_element_class_add_static_pad_template_with_gtype (element_class,
      &validation_annotation_template, GST_TYPE_AGGREGATOR_PAD);
  gst_element_class_add_static_pad_template_with_gtype (element_class,
      &src_template, GST_TYPE_AGGREGATOR_PAD);
  gst_element_class_set_static_metadata (element_class,
      "Instance segmentation (Mask R-CNN)", "Filter/Analyzer/Video",
      "Detects and segments objects in slide patches with Mask R-CNN; emits "
      "16-bit instance label patches with one region-of-interest meta per "
      "object; trains on instance annotations", "gst-wsiseg developers");

  agg_class->aggregate = GST_DEBUG_FUNCPTR (gst_segment_maskrcnn_aggregate);
  agg_class->sink_event = GST_DEBUG_FUNCPTR (gst_segment_maskrcnn_sink_event);
  agg_class->start = GST_DEBUG_FUNCPTR (gst_segment_maskrcnn_start);
  agg_class->stop = GST_DEBUG_FUNCPTR (gst_segment_maskrcnn_stop);
  agg_class->src_event = GST_DEBUG_FUNCPTR (gst_segment_maskrcnn_src_event);
  agg_class->flush = GST_DEBUG_FUNCPTR (gst_segment_maskrcnn_flush);
  agg_class->get_next_time =
      GST_DEBUG_FUNCPTR (gst_segment_maskrcnn_get_next_time);
  agg_class->create_new_pad =
      GST_DEBUG_FUNCPTR (gst_segment_maskrcnn_create_new_pad);
  element_class->release_pad =
      GST_DEBUG_FUNCPTR (gst_segment_maskrcnn_release_pad);
  agg_class->update_src_caps =
      GST_DEBUG_FUNCPTR (gst_segment_maskrcnn_update_src_caps);

  gst_type_mark_as_plugin_api (GST_TYPE_SEGMENT_MASKRCNN_MODE, 0);
}

static const GstWsiTrainFuncs train_funcs = {
  train_configure, train_create, train_step, train_validate,
  train_validation_start, train_validation_report, train_before_gap
};

static void
gst_segment_maskrcnn_init (GstSegmentMaskrcnn * self)
{
  GstPadTemplate *templ =
      gst_element_class_get_pad_template (GST_ELEMENT_GET_CLASS (self), "sink");
  GstPad *pad = g_object_new (GST_TYPE_AGGREGATOR_PAD, "name", "sink",
      "direction", GST_PAD_SINK, "template", templ, NULL);

  gst_element_add_pad (GST_ELEMENT (self), pad);
  self->image_pad = GST_AGGREGATOR_PAD (pad);
  self->score_threshold = -1.0;
  self->nms_iou = 0.0;
  self->max_detections = 0;
  gst_wsi_segment_settings_init (&self->seg);
  self->seed = 1;
  self->max_instances = DEFAULT_MAX_INSTANCES;
  self->min_area = DEFAULT_MIN_AREA;
  g_queue_init (&self->class_queue);
  wsi_confusion_init (&self->val_cm);
  self->batch = gst_wsi_batch_new (GST_AGGREGATOR (self), run_inference,
      accept_patch, self);
  gst_wsi_batch_set_stats (self->batch, "segment-maskrcnn",
      &self->post_messages);
  self->train = gst_wsi_train_new (GST_AGGREGATOR (self), "segment-maskrcnn",
      &train_funcs, self);
  gst_wsi_train_set_post_messages (self->train, &self->post_messages);
}
