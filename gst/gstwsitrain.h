/* The training driver of segmentation elements (GStreamer side of
 * models/train): the train-mode properties (installed by one call, so every
 * element has the same ones), the annotation / validation /
 * validation_annotation request pads and their pairing (gst/gstwsipair),
 * steps in batches (gst/gstwsibatch), epochs (one per source pass),
 * checkpoints (atomic, locked), validation runs and the bus messages
 * "<prefix>-train", "-epoch", "-checkpoint", "-validation", "-init-from".
 * The element gives callbacks for what depends on its network: the trainer,
 * one step, one validation batch, the validation metrics.
 * docs/architecture.md, "writing a second segmentation element". */
#pragma once

#include <gst/gst.h>
#include <gst/base/gstaggregator.h>

#include "gstwsibatch.h"
#include "gstwsipatch.h"
#include "wsimetrics.h"
#include "wsitrain.h"

G_BEGIN_DECLS

typedef struct _GstWsiTrain GstWsiTrain;

/* The mode property's enum (nicks infer, train, pretrain) and the pixel
 * losses' (ce, dice, ce+dice, bce: wsi_loss_kind_from_string's strings);
 * type names as segment-fcn first registered them. */
typedef enum
{
  GST_WSI_TRAIN_MODE_INFER,
  GST_WSI_TRAIN_MODE_TRAIN,
  GST_WSI_TRAIN_MODE_PRETRAIN,
} GstWsiTrainMode;
#define GST_TYPE_WSI_TRAIN_MODE (gst_wsi_train_mode_get_type ())
GType gst_wsi_train_mode_get_type (void);
#define GST_TYPE_WSI_TRAIN_LOSS (gst_wsi_train_loss_get_type ())
GType gst_wsi_train_loss_get_type (void);

/* Properties, as set (under the element's object lock). */
typedef struct
{
  gchar *checkpoint;
  guint checkpoint_interval;
  gboolean resume;
  gchar *init_from, *init_from_prefix;
  gchar *freeze;
  gint64 freeze_steps;
  WsiOptimKind optimizer;
  WsiSchedKind schedule;
  gdouble lr, momentum, weight_decay;
  guint64 warmup_steps, total_steps;
  guint validation_interval;
} GstWsiTrainSettings;

/* Installs checkpoint, checkpoint-interval, resume, init-from,
 * init-from-prefix, freeze, freeze-steps, optimizer, learning-rate,
 * momentum, weight-decay, lr-schedule, warmup-steps, total-steps,
 * validation-interval with ids @first_id ... @first_id + 14 (all
 * GST_PARAM_MUTABLE_READY). */
#define GST_WSI_TRAIN_N_PROPS 15
void gst_wsi_train_install_properties (GObjectClass * klass, guint first_id);
/* set/get_property of those ids (@id - first_id in 0 .. N_PROPS - 1);
 * FALSE for other ids. Call under the object lock. */
gboolean gst_wsi_train_settings_set (GstWsiTrainSettings * s, guint id,
    const GValue * value);
gboolean gst_wsi_train_settings_get (const GstWsiTrainSettings * s, guint id,
    GValue * value);

typedef enum
{
  GST_WSI_TRAIN_OK,
  GST_WSI_TRAIN_FAILED,         /* @err says why; the driver posts it */
  GST_WSI_TRAIN_ERROR_POSTED,   /* the callback posted the error */
} GstWsiTrainStatus;

typedef struct
{
  /* Adds the element's settings to @cfg (e.g. the loss); FALSE + @err. */
  gboolean (*configure) (gpointer user, WsiTrainConfig * cfg, gchar * err,
      gsize errlen);
  /* A trainer for @cfg (resume from the model file when @resume); NULL with
   * the error posted. */
  WsiTrainer *(*create) (gpointer user, const WsiTrainConfig * cfg,
      gboolean resume);
  /* One training step on @n images (+ annotations, or NULL). */
  GstWsiTrainStatus (*step) (gpointer user, WsiTrainer * trainer, guint n,
      GstBuffer * const *images, GstBuffer * const *annotations,
      WsiStepResult * res, gchar * err, gsize errlen);
  /* One validation batch: the loss and the element's metrics counts. */
  GstWsiTrainStatus (*validate) (gpointer user, WsiTrainer * trainer,
      guint n, GstBuffer * const *images, GstBuffer * const *annotations,
      WsiLossValues * losses, gchar * err, gsize errlen);
  /* A validation run starts: reset the metrics counts. */
  void (*validation_start) (gpointer user);
  /* A validation run ended with patches: add the metrics to the
   * "<prefix>-validation" message and to the epoch message (NULL when none
   * waits for this run). */
  void (*validation_report) (gpointer user, GstStructure * validation,
      GstStructure * epoch);
  /* Before the GAP that prerolls downstream, after its caps (sticky
   * events of the element, e.g. class names). */
  void (*before_gap) (gpointer user);
} GstWsiTrainFuncs;

/* @prefix names the messages ("segment-fcn" -> "segment-fcn-epoch", ...). */
GstWsiTrain *gst_wsi_train_new (GstAggregator * agg, const gchar * prefix,
    const GstWsiTrainFuncs * funcs, gpointer user);
void gst_wsi_train_free (GstWsiTrain * t);
GstWsiTrainSettings *gst_wsi_train_settings (GstWsiTrain * t);
/* "<prefix>-train" step messages follow *@flag (the element's
 * post-messages, read atomically). */
void gst_wsi_train_set_post_messages (GstWsiTrain * t, gint * flag);

/* start(): @annotated (supervised: the annotation pads are needed, e.g.
 * mode=train) or not (pretraining); checks the checkpoint path and takes
 * its lock; @batch_size for training and validation. */
gboolean gst_wsi_train_start (GstWsiTrain * t, gboolean annotated,
    guint batch_size);
/* The trainer from the settings, then init-from: FALSE with an error. */
gboolean gst_wsi_train_create_trainer (GstWsiTrain * t);
WsiTrainer *gst_wsi_train_trainer (GstWsiTrain * t);
void gst_wsi_train_stop (GstWsiTrain * t);
/* flush(): batches dropped, a validation run abandoned, epoch sums
 * restart; weights, step and epoch kept. */
void gst_wsi_train_flush (GstWsiTrain * t);

/* The image pad's caps: @ok once accepted (patch size, kind);
 * gst_wsi_train_caps_changing() runs what was collected before the patch
 * size changes. */
void gst_wsi_train_set_input (GstWsiTrain * t, GstAggregatorPad * image_pad,
    gboolean ok, gint width, gint height, gboolean is_tensor);
/* New patches on the image pad, once the element checked them: what was
 * collected at the old size goes first when the size or kind changes
 * (@batch drained when @infer, else the training batch run), then @in and
 * the driver take the new patches. FALSE with the error posted. */
gboolean gst_wsi_train_switch_input (GstWsiTrain * t, GstWsiBatch * batch,
    GstWsiPatchInput * in, gboolean infer, gint width, gint height,
    gboolean is_tensor, const GstVideoInfo * vinfo);
/* GstAggregator::sink_event of the request pads: records their caps
 * (annotation GRAY8; validation patches, compared with the training
 * patches when a run reads them). FALSE for other pads. The element then
 * chains up as usual. */
gboolean gst_wsi_train_sink_event (GstWsiTrain * t, GstAggregatorPad * pad,
    GstEvent * event);
/* The @n annotation patches (GRAY8 class labels of the patch size, 255 =
 * ignore) as one n x h x w array, labels checked against @n_classes (a
 * one-class model takes 0/1); NULL with the error posted. Valid until the
 * next call. */
guint8 *gst_wsi_train_read_labels (GstWsiTrain * t, gboolean validation,
    guint n, GstBuffer * const *annotations, GstBuffer * const *images,
    gint n_classes);

/* Pixel-label validation metrics (elements/core/wsimetrics, the counting
 * segeval does): a predicted label patch against its annotation over the
 * centre crop of the valid area (gst_wsi_pair_compared_area); the report
 * adds accuracy, mean-dice, dice[], mean-iou, pixels to a validation
 * message and validation-accuracy, validation-mean-dice to the epoch's. */
void gst_wsi_train_count_pixels (WsiConfusion * cm, GstBuffer * img,
    GstBuffer * ann, const guint8 * pred, const guint8 * truth, gint width,
    gint height);
/* The same for @n patches of logits (NHWC, @channels; one channel: a
 * logit > 0 is class 1) against @labels (gst_wsi_train_read_labels); FALSE
 * with the error posted. */
gboolean gst_wsi_train_count_logits (GstWsiTrain * t, WsiConfusion * cm,
    guint n, GstBuffer * const *images, GstBuffer * const *annotations,
    const gfloat * logits, gint channels, const guint8 * labels);
void gst_wsi_train_report_pixels (const WsiConfusion * cm, gint n_labels,
    GstStructure * validation, GstStructure * epoch);
gboolean gst_wsi_train_caps_changing (GstWsiTrain * t);

/* GstAggregator::aggregate in training. */
GstFlowReturn gst_wsi_train_aggregate (GstWsiTrain * t, GstCaps * src_caps);

/* Request pads by template name (annotation, validation,
 * validation_annotation); NULL when refused (one each, or @refuse). */
GstAggregatorPad *gst_wsi_train_request_pad (GstWsiTrain * t,
    GstPadTemplate * templ, gboolean refuse);
void gst_wsi_train_release_pad (GstWsiTrain * t, GstPad * pad);
/* The role of a request pad: 0 none, 1 annotation, 2 validation,
 * 3 validation_annotation. */
gint gst_wsi_train_pad_role (GstWsiTrain * t, GstAggregatorPad * pad);
gboolean gst_wsi_train_has_pads (GstWsiTrain * t);

G_END_DECLS
