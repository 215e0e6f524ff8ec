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

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include <gst/base/gstaggregator.h>
#include <gst/video/video.h>

#include "gstwsiaggregator.h"
#include "gstwsibatch.h"
#include "gstwsiclasses.h"
#include "gstwsipair.h"
#include "gstwsiprops.h"
#include "gstwsitensor.h"
#include "gstwsiseg.h"
#include "gstwsitilemeta.h"
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

/* Training choices: registered enums whose nicks are the strings the
 * trainer parses (wsi_*_kind_from_string), so pipelines keep their text. */
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

#define GST_TYPE_SEGMENT_OPTIMIZER (gst_segment_optimizer_get_type ())
static GType
gst_segment_optimizer_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {WSI_OPTIM_SGD, "SGD with momentum and L2 weight decay", "sgd"},
    {WSI_OPTIM_ADAM, "Adam (L2 weight decay)", "adam"},
    {WSI_OPTIM_ADAMW, "AdamW (decoupled weight decay)", "adamw"},
    {0, NULL, NULL}
  };

  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstSegmentFcnOptimizer", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

#define GST_TYPE_SEGMENT_SCHEDULE (gst_segment_schedule_get_type ())
static GType
gst_segment_schedule_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {WSI_SCHED_CONSTANT, "Constant learning rate", "constant"},
    {WSI_SCHED_STEP, "Step decay", "step"},
    {WSI_SCHED_COSINE, "Cosine decay to total-steps", "cosine"},
    {0, NULL, NULL}
  };

  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstSegmentFcnSchedule", values);
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
  WsiLossKind loss;
  WsiOptimKind optimizer;
  WsiSchedKind schedule;
  gchar *class_weights;
  gdouble lr, momentum, weight_decay;
  guint64 warmup_steps, total_steps, seed;
  guint64 max_memory;
  gboolean post_messages;

  gint running;                 /* between start and stop (gstwsiprops) */
  gchar *classes;               /* the loaded model's class list, object lock */
  GstEvent *classes_event;      /* the same in-band, until stored on src */
  gint64 last_step_msg_us;
  gboolean need_gap;            /* training: a GAP event prerolls downstream */
  gint lock_fd;                 /* flock on CHECKPOINT.lock, -1 none */

  /* state */
  WsiModel *model;
  WsiModelInfo train_info;      /* facts of the model being trained */
  WsiTrainer *trainer;
  GstAggregatorPad *image_pad, *annot_pad;
  GstVideoInfo annot_vinfo;
  gboolean annot_caps_ok;
  GPtrArray *pending_labels;    /* annotation buffers paired with pending */
  guint8 *label_batch;
  gint64 source_pass;           /* tile meta epoch of the last patch */
  gint epoch;
  gdouble epoch_loss, epoch_acc;
  guint64 epoch_steps;
  gint64 last_saved_step;
  gboolean checkpoint_written;  /* by this run */
  /* validation */
  guint validation_interval;
  GstAggregatorPad *val_pad, *val_annot_pad;
  GstVideoInfo val_annot_vinfo;
  gboolean val_annot_caps_ok;
  gboolean validating, final_validation, val_eos;
  gint64 val_pass;              /* tile meta epoch of the run, -1 at start */
  gint val_epoch;               /* training epoch the run reports on */
  gint val_width, val_height;   /* the validation pad's caps */
  gboolean val_is_tensor, val_caps_ok;
  GPtrArray *val_pending, *val_pending_labels;
  guint64 val_patches;
  gdouble val_loss_sum;
  WsiConfusion val_cm;          /* centre crops, as segeval counts */
  guint8 *val_pred_labels;      /* argmax of a validation batch */
  gsize val_pred_capacity;
  GstStructure *deferred_epoch; /* epoch message waiting for validation */
  gboolean input_is_tensor;
  gboolean input_ok;            /* the image pad's caps were accepted */
  gchar *resolution_checked;    /* slide whose pixel size was compared */
  gint width, height;
  GstVideoInfo in_vinfo;
  GstCaps *src_caps;            /* what the current input makes us output */
  GstWsiBatch *batch;           /* inference batch (gst/gstwsibatch) */
  GPtrArray *pending;           /* input buffers of the batch being filled */
  gfloat *in_batch, *out_batch;
  gsize in_capacity, out_capacity, label_capacity;      /* elements */
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
  PROP_VALIDATION_INTERVAL,
  PROP_MAX_MEMORY,
  PROP_POST_MESSAGES,
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

static gboolean validate_batch (GstSegmentFcn * self);
static GstFlowReturn train_batch (GstSegmentFcn * self,
    GstAggregatorPad * vimg);

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

/* Patch size and kind of image-pad caps: one float32 tensor 3:W:H:1, or
 * RGB video (then @vinfo is filled). */
static gboolean
parse_patch_caps (GstCaps * caps, gint * width, gint * height,
    gboolean * is_tensor, GstVideoInfo * vinfo)
{
  GstStructure *s = gst_caps_get_structure (caps, 0);
  gint channels = 0;

  *is_tensor = gst_structure_has_name (s, "other/tensors");
  if (*is_tensor)
    return gst_wsi_tensor_structure_parse (s, &channels, width, height)
        && channels == 3;
  if (!gst_video_info_from_caps (vinfo, caps))
    return FALSE;
  *width = GST_VIDEO_INFO_WIDTH (vinfo);
  *height = GST_VIDEO_INFO_HEIGHT (vinfo);
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
  wsi_train_config_init (cfg);
  cfg->threads = (int) self->threads;
  cfg->lr = self->lr;
  cfg->momentum = self->momentum;
  cfg->weight_decay = self->weight_decay;
  cfg->warmup_steps = (int64_t) self->warmup_steps;
  cfg->total_steps = (int64_t) self->total_steps;
  cfg->freeze_steps = self->freeze_steps;
  cfg->optim = self->optimizer;
  cfg->schedule = self->schedule;
  if (cfg->schedule == WSI_SCHED_COSINE && cfg->total_steps <= 0) {
    g_snprintf (err, errlen, "lr-schedule=cosine needs total-steps");
    return FALSE;
  }
  cfg->loss.kind = self->mode == SEGMENT_MODE_PRETRAIN ? WSI_LOSS_MSE :
      self->loss;
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

/* Posts the error for a file that cannot be read (missing: NOT_FOUND,
 * directory or no permission: OPEN_READ) and returns TRUE; FALSE when it
 * is readable, so a later failure means malformed content. */
static gboolean
report_unreadable (GstSegmentFcn * self, const gchar * what,
    const gchar * path)
{
  if (!g_file_test (path, G_FILE_TEST_EXISTS)) {
    GST_ELEMENT_ERROR (self, RESOURCE, NOT_FOUND,
        ("%s \"%s\" does not exist.", what, path), (NULL));
    return TRUE;
  }
  if (g_file_test (path, G_FILE_TEST_IS_DIR)) {
    GST_ELEMENT_ERROR (self, RESOURCE, OPEN_READ,
        ("%s \"%s\" is a directory, not a model file.", what, path), (NULL));
    return TRUE;
  }
  if (g_access (path, R_OK) != 0) {
    gint e = errno;
    GST_ELEMENT_ERROR (self, RESOURCE, OPEN_READ,
        ("%s \"%s\" cannot be read: %s.", what, path, g_strerror (e)),
        (NULL));
    return TRUE;
  }
  return FALSE;
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
  if (report_unreadable (self, "Model", self->model_path))
    return FALSE;
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
    if (report_unreadable (self, "init-from file", self->init_from))
      return FALSE;
    if (wsi_trainer_init_from (self->trainer, self->init_from,
            self->init_from_prefix, &rep, err, sizeof err) != 0) {
      GST_ELEMENT_ERROR (self, STREAM, DECODE,
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
  update_classes (self);
  return TRUE;

load_failed:
  GST_ELEMENT_ERROR (self, STREAM, DECODE,
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
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("No model file given."), ("Set the 'model' property to a "
            ".safetensors model file (see docs/model-format.md)."));
    return FALSE;
  }
  if (self->mode != SEGMENT_MODE_INFER)
    return create_trainer (self);
  if (report_unreadable (self, "Model", self->model_path))
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

  if (self->trainer) {
    engine = wsinn_net_memory_estimate (wsi_trainer_net (self->trainer),
        (int) n, height, width, 1);
  } else {
    wsinn_net *net = net_of_model_file (self->model_path);
    if (net) {
      engine = wsinn_net_memory_estimate (net, (int) n, height, width, 0);
      wsinn_net_free (net);
    }
  }
  return engine + arrays;
}

/* Batch arrays for n patches of the negotiated size, sized in elements. */
static gboolean
ensure_batch_buffers (GstSegmentFcn * self, guint n, gboolean out,
    gboolean labels)
{
  const gsize npix = (gsize) self->width * self->height * n;
  const gsize nc = model_info (self)->n_classes;

  if (gst_wsi_batch_grow ((gpointer *) & self->in_batch, &self->in_capacity,
          npix * 3, sizeof (gfloat))
      && (!out || gst_wsi_batch_grow ((gpointer *) & self->out_batch,
              &self->out_capacity, npix * nc, sizeof (gfloat)))
      && (!labels || gst_wsi_batch_grow ((gpointer *) & self->label_batch,
              &self->label_capacity, npix, 1)))
    return TRUE;
  GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
      ("Not enough memory for a batch of %u patches of %dx%d.", n,
          self->width, self->height), ("Lower batch-size or the patch size."));
  return FALSE;
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
            self->width, self->height), NULL);
    gst_caps_set_simple (caps, "framerate", GST_TYPE_FRACTION, fn, fd, NULL);
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
  const WsiModelInfo *info;
  GstCaps *src_caps;
  GstVideoInfo vinfo;
  gboolean is_tensor, resized;
  gint width = 0, height = 0;
  gdouble batch_bytes;

  self->input_ok = FALSE;
  if (!ensure_model (self))
    return FALSE;
  info = model_info (self);

  if (!parse_patch_caps (caps, &width, &height, &is_tensor, &vinfo)) {
    if (is_tensor)
      GST_ELEMENT_ERROR (self, STREAM, FORMAT,
          ("segment-fcn takes one float32 tensor with dimensions 3:W:H:1 "
              "(interleaved RGB, as colornorm emits), got %" GST_PTR_FORMAT,
              caps), (NULL));
    return FALSE;
  }
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
  resized = width != self->width || height != self->height
      || is_tensor != self->input_is_tensor;
  if (resized) {
    GstFlowReturn ret = self->mode == SEGMENT_MODE_INFER ?
        gst_wsi_batch_drain (self->batch) : train_batch (self, NULL);
    if (ret != GST_FLOW_OK)
      return FALSE;
  }
  if (resized && !validate_batch (self))
    return FALSE;
  self->width = width;
  self->height = height;
  self->input_is_tensor = is_tensor;
  if (!is_tensor)
    self->in_vinfo = vinfo;
  self->input_ok = TRUE;
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

/* Size and kind of the validation patches, compared with the training
 * patches' when a validation run reads them. */
static void
record_validation_caps (GstSegmentFcn * self, GstCaps * caps)
{
  GstVideoInfo vinfo;

  self->val_caps_ok = parse_patch_caps (caps, &self->val_width,
      &self->val_height, &self->val_is_tensor, &vinfo);
}

static gboolean
gst_segment_fcn_sink_event (GstAggregator * agg, GstAggregatorPad * pad,
    GstEvent * event)
{
  GstSegmentFcn *self = GST_SEGMENT_FCN (agg);

  GstCaps *caps;

  if (GST_EVENT_TYPE (event) == GST_EVENT_CAPS) {
    gst_event_parse_caps (event, &caps);
    if (pad == self->annot_pad) {
      self->annot_caps_ok = gst_video_info_from_caps (&self->annot_vinfo,
          caps);
    } else if (pad == self->val_annot_pad) {
      self->val_annot_caps_ok =
          gst_video_info_from_caps (&self->val_annot_vinfo, caps);
    } else if (pad == self->val_pad) {
      record_validation_caps (self, caps);
    } else if (pad == self->image_pad && !set_input_caps (self, caps)) {
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
  const gint nc = model_info (self)->n_classes;
  const gsize in_elems = (gsize) self->width * self->height * 3;
  const gsize out_elems = (gsize) self->width * self->height * nc;
  GstFlowReturn ret = GST_FLOW_OK;
  gchar err[512] = "";

  if (!ensure_batch_buffers (self, n, TRUE, FALSE))
    return GST_FLOW_ERROR;
  for (guint i = 0; i < n; i++)
    if (!fill_input (self, images[i], self->in_batch + in_elems * i))
      return GST_FLOW_ERROR;
  if (wsi_model_forward (self->model, self->in_batch, (int) n, self->height,
          self->width, self->out_batch, err, sizeof err) != 0) {
    GST_ELEMENT_ERROR (self, LIBRARY, FAILED,
        ("Inference failed: %s", err), (NULL));
    return GST_FLOW_ERROR;
  }
  for (guint i = 0; i < n && ret == GST_FLOW_OK; i++)
    ret = gst_wsi_batch_finish_buffer (batch, make_output (self, images[i],
            self->out_batch + out_elems * i), images[i], self->width,
        self->height, !self->input_is_tensor);
  return ret;
}

/* ------------------------------------------------------------- training */

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
  self->checkpoint_written = TRUE;
  post_element_message (self, gst_structure_new ("segment-fcn-checkpoint",
          "location", G_TYPE_STRING, self->checkpoint,
          "step", G_TYPE_INT64, step,
          "epoch", G_TYPE_INT, self->epoch, NULL));
  return TRUE;
}

static gboolean
can_validate (GstSegmentFcn * self, GstAggregatorPad * vimg)
{
  return vimg != NULL && !self->val_eos;
}

static void
start_validation (GstSegmentFcn * self, gint epoch)
{
  self->validating = TRUE;
  self->val_epoch = epoch;
  self->val_pass = -1;
  self->val_patches = 0;
  self->val_loss_sum = 0;
  wsi_confusion_reset (&self->val_cm);
}

/* Closes the epoch; its message waits for the validation run that follows
 * when validation-interval is 0. */
static void
end_epoch (GstSegmentFcn * self, GstAggregatorPad * vimg)
{
  GstStructure *s;

  if (self->epoch_steps == 0)
    return;
  s = gst_structure_new ("segment-fcn-epoch",
      "epoch", G_TYPE_INT, self->epoch,
      "steps", G_TYPE_UINT64, self->epoch_steps,
      "mean-loss", G_TYPE_DOUBLE, self->epoch_loss / self->epoch_steps,
      "mean-accuracy", G_TYPE_DOUBLE,
      self->epoch_acc / self->epoch_steps, NULL);
  self->epoch++;
  wsi_trainer_set_epoch (self->trainer, self->epoch);
  self->epoch_loss = self->epoch_acc = 0;
  self->epoch_steps = 0;
  if (self->validation_interval == 0 && can_validate (self, vimg)) {
    if (self->deferred_epoch)
      post_element_message (self, self->deferred_epoch);
    self->deferred_epoch = s;
    start_validation (self, self->epoch - 1);
  } else {
    post_element_message (self, s);
  }
}

static gboolean
fill_labels (GstSegmentFcn * self, const GstVideoInfo * vinfo,
    gboolean caps_ok, GstBuffer * ann, GstBuffer * img, guint8 * dst)
{
  const gint nc = model_info (self)->n_classes;
  const gint max_label = nc == 1 ? 1 : nc - 1;
  GstVideoFrame frame;

  if (!caps_ok || GST_VIDEO_INFO_WIDTH (vinfo) != self->width
      || GST_VIDEO_INFO_HEIGHT (vinfo) != self->height) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT,
        ("Annotation patches must be GRAY8 of the image patch size %dx%d.",
            self->width, self->height), (NULL));
    return FALSE;
  }
  if (!gst_video_frame_map (&frame, vinfo, ann, GST_MAP_READ)) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT,
        ("Could not map an annotation patch of %dx%d.", self->width,
            self->height), (NULL));
    return FALSE;
  }
  for (gint y = 0; y < self->height; y++) {
    const guint8 *row = (const guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&frame, 0)
        + y * GST_VIDEO_FRAME_PLANE_STRIDE (&frame, 0);
    memcpy (dst + (gsize) y * self->width, row, self->width);
    for (gint x = 0; x < self->width; x++) {
      if (row[x] > max_label && row[x] != 255) {
        gchar *where = gst_wsi_place_describe (img);
        gst_video_frame_unmap (&frame);
        GST_ELEMENT_ERROR (self, STREAM, DECODE,
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

/* Input (and label) arrays of n patches of the current caps. */
static gboolean
fill_batch (GstSegmentFcn * self, GPtrArray * images, GPtrArray * labels,
    const GstVideoInfo * label_vinfo, gboolean label_caps_ok)
{
  const guint n = images->len;
  const gsize in_elems = (gsize) self->width * self->height * 3;
  const gsize npix = (gsize) self->width * self->height;

  if (!ensure_batch_buffers (self, n, FALSE, labels != NULL))
    return FALSE;
  for (guint i = 0; i < n; i++) {
    GstBuffer *img = g_ptr_array_index (images, i);
    if (!fill_input (self, img, self->in_batch + in_elems * i))
      return FALSE;
    if (labels && !fill_labels (self, label_vinfo, label_caps_ok,
            g_ptr_array_index (labels, i), img, self->label_batch + npix * i))
      return FALSE;
  }
  return TRUE;
}

static GstFlowReturn
train_batch (GstSegmentFcn * self, GstAggregatorPad * vimg)
{
  const guint n = self->pending->len;
  const gboolean pretrain = self->mode == SEGMENT_MODE_PRETRAIN;
  WsiStepResult res;
  gchar err[512] = "";

  if (n == 0)
    return GST_FLOW_OK;
  if (!fill_batch (self, self->pending, pretrain ? NULL : self->pending_labels,
          &self->annot_vinfo, self->annot_caps_ok))
    goto failed;
  if (wsi_trainer_step (self->trainer, self->in_batch, (int) n, self->height,
          self->width, pretrain ? NULL : self->label_batch, &res, err,
          sizeof err) != 0) {
    gchar *kept = self->checkpoint_written ?
        g_strdup_printf ("The last good checkpoint (step %" G_GINT64_FORMAT
        ") is kept at %s.", self->last_saved_step, self->checkpoint) :
        g_strdup ("No checkpoint was written by this run.");
    GST_ELEMENT_ERROR (self, LIBRARY, FAILED,
        ("Training step %" G_GINT64_FORMAT " failed: %s",
            wsi_trainer_get_step (self->trainer) + 1, err), ("%s", kept));
    g_free (kept);
    goto failed;
  }
  self->epoch_loss += res.loss;
  self->epoch_acc += res.accuracy;
  self->epoch_steps++;
  if (gst_wsi_periodic_message_due (g_atomic_int_get (&self->post_messages),
          &self->last_step_msg_us, 0))
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
  if (self->validation_interval > 0
      && res.step % self->validation_interval == 0 && can_validate (self, vimg))
    start_validation (self, self->epoch);
  return GST_FLOW_OK;

failed:
  g_ptr_array_set_size (self->pending, 0);
  g_ptr_array_set_size (self->pending_labels, 0);
  return GST_FLOW_ERROR;
}

/* ----------------------------------------------------------- validation */

/* Adds a validation patch's predicted labels to the confusion matrix over
 * the pixels segeval counts: the centre crop of the valid area given by the
 * annotation's tile metadata (the image's when the annotation has none;
 * the whole patch without either). */
static void
count_validation_patch (GstSegmentFcn * self, GstBuffer * img,
    GstBuffer * ann, const guint8 * pred, const guint8 * truth)
{
  GstWsiTileMeta *src = ann ? gst_buffer_get_wsi_tile_meta (ann) : NULL;
  GstWsiTileMeta m;
  WsiLabelView pv, tv;
  gint x0 = 0, x1 = self->width, y0 = 0, y1 = self->height;

  if (!src)
    src = gst_buffer_get_wsi_tile_meta (img);
  if (src) {
    gint64 rw, rh, px, py;
    m = *src;
    gst_wsi_tile_meta_fit_to_size (&m, self->width, self->height);
    if (m.downsample > 0 && isfinite (m.downsample) && m.overlap >= 0
        && m.overlap < MIN (self->width, self->height)) {
      gst_wsi_tile_meta_region_level_size (&m, &rw, &rh);
      px = llround ((m.x - m.region_x) / m.downsample);
      py = llround ((m.y - m.region_y) / m.downsample);
      wsi_metrics_crop_span (self->width, m.overlap, m.pad_left,
          m.valid_width, px, rw, m.col == 0, m.grid_cols > 0
          && m.col == m.grid_cols - 1, &x0, &x1);
      wsi_metrics_crop_span (self->height, m.overlap, m.pad_top,
          m.valid_height, py, rh, m.row == 0, m.grid_rows > 0
          && m.row == m.grid_rows - 1, &y0, &y1);
    }
  }
  pv.stride = tv.stride = self->width;
  pv.bpp = tv.bpp = 1;
  pv.data = pred + (gsize) y0 * self->width + x0;
  tv.data = truth + (gsize) y0 * self->width + x0;
  wsi_confusion_add (&self->val_cm, &pv, &tv, x1 - x0, y1 - y0, 255);
}

static gboolean
validate_batch (GstSegmentFcn * self)
{
  const guint n = self->val_pending->len;
  const gboolean pretrain = self->mode == SEGMENT_MODE_PRETRAIN;
  const gsize npix = (gsize) self->width * self->height;
  WsiLossResult res;
  const gfloat *out;
  gchar err[512] = "";
  gint nc;

  if (n == 0)
    return TRUE;
  if (!fill_batch (self, self->val_pending,
          pretrain ? NULL : self->val_pending_labels, &self->val_annot_vinfo,
          self->val_annot_caps_ok))
    goto failed;
  if (wsi_trainer_evaluate (self->trainer, self->in_batch, (int) n,
          self->height, self->width, pretrain ? NULL : self->label_batch, &res,
          err, sizeof err) != 0) {
    GST_ELEMENT_ERROR (self, LIBRARY, FAILED, ("Validation failed: %s", err),
        (NULL));
    goto failed;
  }
  self->val_loss_sum += res.loss * n;
  self->val_patches += n;
  if (!pretrain) {
    if (!gst_wsi_batch_grow ((gpointer *) & self->val_pred_labels,
            &self->val_pred_capacity, npix * n, 1)) {
      GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
          ("Not enough memory for the validation labels."), (NULL));
      goto failed;
    }
    out = wsi_trainer_output (self->trainer, &nc);
    for (gsize i = 0; i < npix * n; i++) {
      const gfloat *p = out + i * nc;
      guint pred = 0;
      if (nc == 1) {
        pred = p[0] > 0.0f;
      } else {
        for (gint c = 1; c < nc; c++)
          if (p[c] > p[pred])
            pred = c;
      }
      self->val_pred_labels[i] = (guint8) pred;
    }
    for (guint i = 0; i < n; i++)
      count_validation_patch (self, g_ptr_array_index (self->val_pending, i),
          g_ptr_array_index (self->val_pending_labels, i),
          self->val_pred_labels + npix * i, self->label_batch + npix * i);
  }
  g_ptr_array_set_size (self->val_pending, 0);
  g_ptr_array_set_size (self->val_pending_labels, 0);
  return TRUE;

failed:
  g_ptr_array_set_size (self->val_pending, 0);
  g_ptr_array_set_size (self->val_pending_labels, 0);
  return FALSE;
}

/* Posts the validation metrics (and the epoch message waiting for them):
 * gst/wsimetrics over the validation run's confusion matrix, as segeval
 * reports them (Dice NaN where a class is in neither map, means over the
 * defined classes, background included). */
static GstFlowReturn
finish_validation (GstSegmentFcn * self)
{
  const gint nc = model_info (self)->n_classes;
  const gint n_labels = nc == 1 ? 2 : nc;
  GValue arr = G_VALUE_INIT, v = G_VALUE_INIT;
  gdouble loss, acc, mean_dice, mean_iou;
  GstStructure *s;

  if (!validate_batch (self))
    return GST_FLOW_ERROR;
  self->validating = FALSE;
  if (self->val_patches == 0) {
    GST_ELEMENT_WARNING (self, STREAM, FAILED,
        ("The validation stream gave no patches for this validation run."),
        ("Give the validation slidesrc loop=0 so that it has a pass for "
            "every run."));
  } else {
    loss = self->val_loss_sum / self->val_patches;
    acc = wsi_confusion_accuracy (&self->val_cm);
    wsi_confusion_means (&self->val_cm, n_labels, &mean_dice, &mean_iou);
    gst_value_array_init (&arr, n_labels);
    g_value_init (&v, G_TYPE_DOUBLE);
    for (gint c = 0; c < n_labels; c++) {
      WsiClassScore sc;
      wsi_confusion_class_score (&self->val_cm, c, &sc);
      g_value_set_double (&v, sc.dice);
      gst_value_array_append_value (&arr, &v);
    }
    s = gst_structure_new ("segment-fcn-validation",
        "step", G_TYPE_INT64, wsi_trainer_get_step (self->trainer),
        "epoch", G_TYPE_INT, self->val_epoch,
        "patches", G_TYPE_UINT64, self->val_patches,
        "loss", G_TYPE_DOUBLE, loss, NULL);
    if (self->mode == SEGMENT_MODE_TRAIN) {
      gst_structure_set (s, "accuracy", G_TYPE_DOUBLE, acc,
          "mean-dice", G_TYPE_DOUBLE, mean_dice, NULL);
      gst_structure_set_value (s, "dice", &arr);
      gst_structure_set (s, "mean-iou", G_TYPE_DOUBLE, mean_iou,
          "pixels", G_TYPE_UINT64, wsi_confusion_total (&self->val_cm),
          NULL);
    }
    post_element_message (self, s);
    if (self->deferred_epoch) {
      gst_structure_set (self->deferred_epoch,
          "validation-loss", G_TYPE_DOUBLE, loss, NULL);
      if (self->mode == SEGMENT_MODE_TRAIN)
        gst_structure_set (self->deferred_epoch,
            "validation-accuracy", G_TYPE_DOUBLE, acc,
            "validation-mean-dice", G_TYPE_DOUBLE, mean_dice, NULL);
    }
    g_value_unset (&v);
    g_value_unset (&arr);
  }
  if (self->deferred_epoch) {
    post_element_message (self, self->deferred_epoch);
    self->deferred_epoch = NULL;
  }
  return self->final_validation ? GST_FLOW_EOS : GST_FLOW_OK;
}

/* One pass of the validation stream (tile meta epoch) per run; the first
 * patch of the next pass stays queued for the next run. */
static GstFlowReturn
validate_next (GstSegmentFcn * self, GstAggregatorPad * vimg,
    GstAggregatorPad * vann)
{
  GstBuffer *img, *ann;
  GstWsiTileMeta *m;
  gboolean same;

  if (!vimg) {                  /* pad released during a run */
    g_ptr_array_set_size (self->val_pending, 0);
    g_ptr_array_set_size (self->val_pending_labels, 0);
    self->val_eos = TRUE;
    return finish_validation (self);
  }
  switch (gst_wsi_pair_peek (GST_ELEMENT (self), vimg, vann, &img, &ann)) {
    case GST_WSI_PAIR_WAIT:
    case GST_WSI_PAIR_SKIPPED:
      return GST_FLOW_OK;
    case GST_WSI_PAIR_ERROR:
      return GST_FLOW_ERROR;
    case GST_WSI_PAIR_EOS:
      self->val_eos = TRUE;
      if (!self->final_validation)
        GST_ELEMENT_WARNING (self, STREAM, FAILED,
            ("The validation stream ended: no further validation runs."),
            ("Give the validation slidesrc loop=0."));
      return finish_validation (self);
    case GST_WSI_PAIR_READY:
      break;
  }
  m = gst_buffer_get_wsi_tile_meta (img);
  same = self->input_ok && self->val_caps_ok && self->val_width == self->width
      && self->val_height == self->height
      && self->val_is_tensor == self->input_is_tensor;
  if (!m || !same) {
    gst_buffer_unref (img);
    gst_clear_buffer (&ann);
    GST_ELEMENT_ERROR (self, STREAM, FORMAT,
        ("Validation patches must come from slidesrc ! patchify (tile "
            "metadata) with the caps of the training patches."),
        ("Build the validation branch like the training branch, with "
            "augmentation off and slidesrc loop=0."));
    return GST_FLOW_ERROR;
  }
  if (self->val_pass >= 0 && (gint64) m->epoch != self->val_pass) {
    gst_buffer_unref (img);
    gst_clear_buffer (&ann);
    return finish_validation (self);
  }
  self->val_pass = m->epoch;
  gst_wsi_pair_take (vimg, vann);
  g_ptr_array_add (self->val_pending, img);
  if (ann)
    g_ptr_array_add (self->val_pending_labels, ann);
  if (self->val_pending->len >= self->batch_size && !validate_batch (self))
    return GST_FLOW_ERROR;
  return GST_FLOW_OK;
}

/* Training ends: last partial batch, epoch, checkpoint, then one final
 * validation run when a validation stream is linked. */
static GstFlowReturn
finish_training (GstSegmentFcn * self, GstAggregatorPad * vimg)
{
  GstFlowReturn ret = train_batch (self, NULL);
  gint last = self->epoch;

  if (ret != GST_FLOW_OK)
    return ret;
  if (!save_checkpoint (self))
    return GST_FLOW_ERROR;

  self->final_validation = TRUE;
  end_epoch (self, vimg);
  if (can_validate (self, vimg)) {
    if (!self->validating)
      start_validation (self, last);
    return GST_FLOW_OK;
  }
  return GST_FLOW_EOS;
}

static GstFlowReturn
train_next (GstSegmentFcn * self, GstAggregatorPad * annot,
    GstAggregatorPad * vimg, GstAggregatorPad * vann)
{
  const gboolean train = self->mode == SEGMENT_MODE_TRAIN;
  GstBuffer *img, *ann;
  GstWsiTileMeta *m;
  GstFlowReturn ret;

  if (train && !annot) {
    GST_ELEMENT_ERROR (self, CORE, PAD,
        ("mode=train needs the annotation pad linked."),
        ("Link label patches to segment-fcn's 'annotation' pad, e.g. "
            "t. ! queue ! labelpatch masks=... ! seg.annotation"));
    return GST_FLOW_ERROR;
  }
  if (!train && (annot || vann)) {
    GST_ELEMENT_ERROR (self, CORE, PAD,
        ("mode=pretrain takes no annotations: unlink the %s pad.",
            annot ? "annotation" : "validation_annotation"), (NULL));
    return GST_FLOW_ERROR;
  }
  if ((vann && !vimg) || (train && vimg && !vann)) {
    GST_ELEMENT_ERROR (self, CORE, PAD,
        ("Validation in mode=train needs both the 'validation' and the "
            "'validation_annotation' pads linked."), (NULL));
    return GST_FLOW_ERROR;
  }
  if (self->validating)
    return validate_next (self, vimg, vann);
  if (self->final_validation)
    return GST_FLOW_EOS;
  /* a batch completed just before a validation run */
  if (self->pending->len >= self->batch_size)
    return train_batch (self, vimg);

  switch (gst_wsi_pair_peek (GST_ELEMENT (self), self->image_pad, train ? annot : NULL, &img, &ann)) {
    case GST_WSI_PAIR_WAIT:
    case GST_WSI_PAIR_SKIPPED:
      return GST_FLOW_OK;
    case GST_WSI_PAIR_ERROR:
      return GST_FLOW_ERROR;
    case GST_WSI_PAIR_EOS:
      return finish_training (self, vimg);
    case GST_WSI_PAIR_READY:
      break;
  }
  gst_wsi_pair_take (self->image_pad, train ? annot : NULL);
  /* a new pass of the source ends the epoch (partial batch included) */
  m = gst_buffer_get_wsi_tile_meta (img);
  GST_LOG_OBJECT (self, "patch %" G_GUINT64_FORMAT " of pass %d (current %"
      G_GINT64_FORMAT ")", m ? m->frame : 0, m ? (gint) m->epoch : -1,
      self->source_pass);
  if (m && self->source_pass >= 0 && (gint64) m->epoch != self->source_pass) {
    if ((ret = train_batch (self, vimg)) != GST_FLOW_OK) {
      gst_buffer_unref (img);
      gst_clear_buffer (&ann);
      return ret;
    }
    end_epoch (self, vimg);
  }
  if (m)
    self->source_pass = m->epoch;
  g_ptr_array_add (self->pending, img);
  if (ann)
    g_ptr_array_add (self->pending_labels, ann);
  if (self->pending->len >= self->batch_size && !self->validating)
    return train_batch (self, vimg);
  return GST_FLOW_OK;
}

/* A GAP event at the segment start, after the sticky events it needs
 * (GstAggregator 1.22 sends them only with a buffer or EOS). */
static void
push_gap (GstSegmentFcn * self)
{
  GstAggregator *agg = GST_AGGREGATOR (self);
  GstPad *src = agg->srcpad;
  GstEvent *ev;
  GstSegment seg;

  if (!(ev = gst_pad_get_sticky_event (src, GST_EVENT_STREAM_START, 0))) {
    gchar *id = gst_pad_create_stream_id (src, GST_ELEMENT (self), NULL);
    gst_pad_push_event (src, gst_event_new_stream_start (id));
    g_free (id);
  }
  gst_clear_event (&ev);
  if (!gst_pad_has_current_caps (src))
    gst_pad_push_event (src, gst_event_new_caps (self->src_caps));
  send_classes (self);
  GST_OBJECT_LOCK (self);
  seg = GST_AGGREGATOR_PAD (src)->segment;
  GST_OBJECT_UNLOCK (self);
  if (seg.format != GST_FORMAT_TIME)
    gst_segment_init (&seg, GST_FORMAT_TIME);
  if (!(ev = gst_pad_get_sticky_event (src, GST_EVENT_SEGMENT, 0)))
    gst_pad_push_event (src, gst_event_new_segment (&seg));
  gst_clear_event (&ev);
  gst_pad_push_event (src, gst_event_new_gap (seg.start, GST_CLOCK_TIME_NONE));
}

static GstFlowReturn
aggregate_train (GstSegmentFcn * self)
{
  GstAggregatorPad *annot, *vimg, *vann;
  GstFlowReturn ret;

  if (!have_model (self))
    return GST_FLOW_OK;
  if (!self->input_ok && gst_aggregator_pad_has_buffer (self->image_pad)) {
    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION,
        ("Patches arrived without accepted caps."), (NULL));
    return GST_FLOW_NOT_NEGOTIATED;
  }
  GST_OBJECT_LOCK (self);
  annot = self->annot_pad ? gst_object_ref (self->annot_pad) : NULL;
  vimg = self->val_pad ? gst_object_ref (self->val_pad) : NULL;
  vann = self->val_annot_pad ? gst_object_ref (self->val_annot_pad) : NULL;
  GST_OBJECT_UNLOCK (self);
  ret = train_next (self, annot, vimg, vann);
  gst_clear_object (&annot);
  gst_clear_object (&vimg);
  gst_clear_object (&vann);
  /* training outputs nothing: a GAP lets downstream preroll (once per
   * start or flush) so the pipeline reaches PLAYING */
  if (ret == GST_FLOW_OK && self->need_gap && self->src_caps) {
    self->need_gap = FALSE;
    push_gap (self);
  }
  return ret;
}

static GstAggregatorPad *
gst_segment_fcn_create_new_pad (GstAggregator * agg, GstPadTemplate * templ,
    const gchar * req_name, const GstCaps * caps)
{
  GstSegmentFcn *self = GST_SEGMENT_FCN (agg);
  const gchar *name = GST_PAD_TEMPLATE_NAME_TEMPLATE (templ);
  GstAggregatorPad **slot = NULL, *pad;

  GST_OBJECT_LOCK (self);
  if (g_strcmp0 (name, "annotation") == 0)
    slot = &self->annot_pad;
  else if (g_strcmp0 (name, "validation") == 0)
    slot = &self->val_pad;
  else if (g_strcmp0 (name, "validation_annotation") == 0)
    slot = &self->val_annot_pad;
  if (!slot || *slot || (self->mode == SEGMENT_MODE_INFER
          && g_atomic_int_get (&self->running))) {
    GST_OBJECT_UNLOCK (self);
    GST_WARNING_OBJECT (self, "pad %s refused (one of each; mode=train only)",
        name);
    return NULL;
  }
  pad = g_object_new (GST_TYPE_AGGREGATOR_PAD, "name", name,
      "direction", GST_PAD_SINK, "template", templ, NULL);
  *slot = pad;
  GST_OBJECT_UNLOCK (self);
  return pad;
}

static void
gst_segment_fcn_release_pad (GstElement * element, GstPad * pad)
{
  GstSegmentFcn *self = GST_SEGMENT_FCN (element);
  GstAggregatorPad *apad = GST_AGGREGATOR_PAD (pad);

  GST_OBJECT_LOCK (self);
  if (apad == self->annot_pad)
    self->annot_pad = NULL;
  else if (apad == self->val_pad)
    self->val_pad = NULL;
  else if (apad == self->val_annot_pad)
    self->val_annot_pad = NULL;
  GST_OBJECT_UNLOCK (self);
  GST_ELEMENT_CLASS (gst_segment_fcn_parent_class)->release_pad (element, pad);
}

/* Warns once per slide when the patches' pixel size is far from the one
 * the model was trained at (both known). */
static void
check_resolution (GstSegmentFcn * self, GstBuffer * buf)
{
  const GstWsiTileMeta *m = gst_buffer_get_wsi_tile_meta (buf);
  const gdouble model_mpp = model_info (self)->mpp;
  gdouble mpp;

  if (!m || model_mpp <= 0 || m->mpp_x <= 0
      || g_strcmp0 (m->slide, self->resolution_checked) == 0)
    return;
  g_free (self->resolution_checked);
  self->resolution_checked = g_strdup (m->slide);
  mpp = m->mpp_x * m->downsample;
  if (mpp > 1.25 * model_mpp || mpp < 0.8 * model_mpp)
    GST_ELEMENT_WARNING (self, STREAM, FORMAT,
        ("Patches of '%s' have %.3f um/px but the model was trained at "
            "%.3f um/px.", m->slide, mpp, model_mpp),
        ("Read the slide at the model's resolution: slidesrc "
            "target-mpp=%g.", model_mpp));
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
  check_resolution (self, buf);
  return TRUE;
}

static GstFlowReturn
gst_segment_fcn_aggregate (GstAggregator * agg, gboolean timeout)
{
  GstSegmentFcn *self = GST_SEGMENT_FCN (agg);

  if (self->mode != SEGMENT_MODE_INFER)
    return aggregate_train (self);
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

/* Training writes the checkpoint: its directory must exist and be writable
 * before the first step, and one run at a time may write it (flock on
 * CHECKPOINT.lock, which holds the holder's pid). Temporary files of runs
 * that were killed while saving (.NAME.XXXXXX beside it) are removed once
 * the lock is held: their writer is gone. */
static gboolean
prepare_checkpoint (GstSegmentFcn * self)
{
  const gchar *path = self->checkpoint;
  gchar *dir, *base;
  gchar err[512] = "";
  gboolean ok = FALSE;
  gint fd, n_stale = 0;

  if (self->mode == SEGMENT_MODE_INFER || !path || !*path)
    return TRUE;
  dir = g_path_get_dirname (path);
  base = g_path_get_basename (path);
  if (g_file_test (path, G_FILE_TEST_IS_DIR)) {
    GST_ELEMENT_ERROR (self, RESOURCE, OPEN_WRITE,
        ("checkpoint \"%s\" is a directory; give a file name.", path),
        (NULL));
    goto done;
  }
  if (!g_file_test (dir, G_FILE_TEST_IS_DIR)) {
    GST_ELEMENT_ERROR (self, RESOURCE, NOT_FOUND,
        ("The checkpoint directory \"%s\" does not exist.", dir),
        ("Create it before training: checkpoint=%s", path));
    goto done;
  }
  if (g_access (dir, W_OK | X_OK) != 0) {
    gint e = errno;
    GST_ELEMENT_ERROR (self, RESOURCE, OPEN_WRITE,
        ("Cannot write the checkpoint \"%s\" into \"%s\": %s.", base, dir,
            g_strerror (e)), (NULL));
    goto done;
  }
  fd = wsi_checkpoint_lock (path, &n_stale, err, sizeof err);
  if (fd == WSI_CHECKPOINT_LOCK_OPEN) {
    GST_ELEMENT_ERROR (self, RESOURCE, OPEN_WRITE, ("%s", err), (NULL));
    goto done;
  }
  if (fd < 0) {
    GST_ELEMENT_ERROR (self, RESOURCE, BUSY, ("%s", err),
        ("Give each training run its own checkpoint file."));
    goto done;
  }
  self->lock_fd = fd;
  if (n_stale > 0)
    GST_INFO_OBJECT (self, "removed %d temporary files of %s left by a "
        "killed run", n_stale, path);
  ok = TRUE;

done:
  g_free (dir);
  g_free (base);
  return ok;
}

static void
release_checkpoint (GstSegmentFcn * self)
{
  wsi_checkpoint_unlock (self->checkpoint, self->lock_fd);
  self->lock_fd = -1;
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

  gst_wsi_set_running (GST_ELEMENT (self), &self->running, TRUE);
  gst_wsi_batch_reset_stats (self->batch);
  gst_wsi_batch_set_size (self->batch, self->batch_size);
  self->last_step_msg_us = 0;
  GST_OBJECT_LOCK (self);
  if (self->mode == SEGMENT_MODE_INFER && (self->annot_pad || self->val_pad
          || self->val_annot_pad)) {
    GST_OBJECT_UNLOCK (self);
    GST_ELEMENT_ERROR (self, CORE, PAD,
        ("Annotation and validation pads are for mode=train only."),
        ("Set mode=train or unlink them."));
    return FALSE;
  }
  GST_OBJECT_UNLOCK (self);
  self->source_pass = -1;
  self->input_ok = FALSE;
  g_clear_pointer (&self->resolution_checked, g_free);
  self->checkpoint_written = FALSE;
  self->validating = self->final_validation = self->val_eos = FALSE;
  self->epoch_loss = self->epoch_acc = 0;
  self->epoch_steps = 0;
  self->need_gap = TRUE;
  /* a partial batch of a live inference stream waits at most batch-timeout */
  gst_wsi_batch_set_timeout (self->batch, self->mode == SEGMENT_MODE_INFER ?
      self->batch_timeout : 0);
  return prepare_checkpoint (self) && ensure_model (self);
}

static gboolean
gst_segment_fcn_stop (GstAggregator * agg)
{
  GstSegmentFcn *self = GST_SEGMENT_FCN (agg);
  gchar *classes;

  gst_wsi_batch_clear (self->batch);
  g_ptr_array_set_size (self->pending, 0);
  g_ptr_array_set_size (self->pending_labels, 0);
  g_ptr_array_set_size (self->val_pending, 0);
  g_ptr_array_set_size (self->val_pending_labels, 0);
  g_clear_pointer (&self->deferred_epoch, gst_structure_free);
  g_clear_pointer (&self->in_batch, g_free);
  g_clear_pointer (&self->out_batch, g_free);
  g_clear_pointer (&self->label_batch, g_free);
  g_clear_pointer (&self->val_pred_labels, g_free);
  self->in_capacity = self->out_capacity = self->label_capacity = 0;
  self->val_pred_capacity = 0;
  GST_OBJECT_LOCK (self);
  classes = g_steal_pointer (&self->classes);
  GST_OBJECT_UNLOCK (self);
  g_free (classes);
  gst_clear_event (&self->classes_event);
  g_clear_pointer (&self->model, wsi_model_free);
  g_clear_pointer (&self->trainer, wsi_trainer_free);
  wsi_model_info_clear (&self->train_info);
  self->epoch_loss = self->epoch_acc = 0;
  self->epoch_steps = 0;
  gst_caps_replace (&self->src_caps, NULL);
  release_checkpoint (self);
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
  g_ptr_array_set_size (self->pending, 0);
  g_ptr_array_set_size (self->pending_labels, 0);
  g_ptr_array_set_size (self->val_pending, 0);
  g_ptr_array_set_size (self->val_pending_labels, 0);
  if (self->deferred_epoch) {
    post_element_message (self, self->deferred_epoch);
    self->deferred_epoch = NULL;
  }
  self->validating = self->final_validation = self->val_eos = FALSE;
  self->val_pass = -1;
  self->val_patches = 0;
  self->val_loss_sum = 0;
  wsi_confusion_reset (&self->val_cm);
  self->source_pass = -1;
  self->epoch_loss = self->epoch_acc = 0;
  self->epoch_steps = 0;
  self->need_gap = TRUE;
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
      self->loss = g_value_get_enum (value);
      break;
    case PROP_CLASS_WEIGHTS:
      g_free (self->class_weights);
      self->class_weights = g_value_dup_string (value);
      break;
    case PROP_OPTIMIZER:
      self->optimizer = g_value_get_enum (value);
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
      self->schedule = g_value_get_enum (value);
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
    case PROP_VALIDATION_INTERVAL:
      self->validation_interval = g_value_get_uint (value);
      break;
    case PROP_MAX_MEMORY:
      self->max_memory = g_value_get_uint64 (value);
      break;
    case PROP_POST_MESSAGES:
      g_atomic_int_set (&self->post_messages, g_value_get_boolean (value));
      break;
    default:
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
      g_value_set_enum (value, self->loss);
      break;
    case PROP_CLASS_WEIGHTS:
      g_value_set_string (value, self->class_weights);
      break;
    case PROP_OPTIMIZER:
      g_value_set_enum (value, self->optimizer);
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
      g_value_set_enum (value, self->schedule);
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
    case PROP_VALIDATION_INTERVAL:
      g_value_set_uint (value, self->validation_interval);
      break;
    case PROP_MAX_MEMORY:
      g_value_set_uint64 (value, self->max_memory);
      break;
    case PROP_POST_MESSAGES:
      g_value_set_boolean (value, g_atomic_int_get (&self->post_messages));
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
  g_free (self->class_weights);
  g_free (self->classes);
  gst_clear_event (&self->classes_event);
  g_free (self->val_pred_labels);
  wsi_confusion_clear (&self->val_cm);
  g_free (self->label_batch);
  g_free (self->resolution_checked);
  g_ptr_array_unref (self->pending_labels);
  g_ptr_array_unref (self->val_pending);
  g_ptr_array_unref (self->val_pending_labels);
  g_clear_pointer (&self->deferred_epoch, gst_structure_free);
  g_clear_pointer (&self->trainer, wsi_trainer_free);
  wsi_model_info_clear (&self->train_info);
  g_ptr_array_unref (self->pending);
  gst_wsi_batch_free (self->batch);
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
      g_param_spec_enum ("loss", "Loss", "Training loss (bce: one-class "
          "models)", GST_TYPE_SEGMENT_LOSS, WSI_LOSS_CE, TRAIN_FLAGS));
  g_object_class_install_property (gobject_class, PROP_CLASS_WEIGHTS,
      g_param_spec_string ("class-weights", "Class weights",
          "Training: comma-separated cross-entropy weight per class", NULL,
          TRAIN_FLAGS));
  g_object_class_install_property (gobject_class, PROP_OPTIMIZER,
      g_param_spec_enum ("optimizer", "Optimizer", "Training optimiser",
          GST_TYPE_SEGMENT_OPTIMIZER, WSI_OPTIM_SGD, TRAIN_FLAGS));
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
      g_param_spec_enum ("lr-schedule", "LR schedule",
          "Training: learning-rate schedule (cosine needs total-steps)",
          GST_TYPE_SEGMENT_SCHEDULE, WSI_SCHED_CONSTANT, TRAIN_FLAGS));
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
  g_object_class_install_property (gobject_class, PROP_VALIDATION_INTERVAL,
      g_param_spec_uint ("validation-interval", "Validation interval",
          "Training: steps between validation runs over one pass of the "
          "'validation' pads' stream (0: at the end of every epoch); a "
          "final run follows the end of training", 0, G_MAXUINT, 0,
          TRAIN_FLAGS));

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
  gst_type_mark_as_plugin_api (GST_TYPE_SEGMENT_OPTIMIZER, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_SEGMENT_SCHEDULE, 0);
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
  self->loss = WSI_LOSS_CE;
  self->optimizer = WSI_OPTIM_SGD;
  self->schedule = WSI_SCHED_CONSTANT;
  self->max_memory = DEFAULT_MAX_MEMORY;
  self->lock_fd = -1;
  wsi_confusion_init (&self->val_cm);
  self->lr = 0.01;
  self->momentum = 0.9;
  self->seed = 1;
  self->pending_labels = g_ptr_array_new_with_free_func (
      (GDestroyNotify) gst_buffer_unref);
  self->val_pending = g_ptr_array_new_with_free_func (
      (GDestroyNotify) gst_buffer_unref);
  self->val_pending_labels = g_ptr_array_new_with_free_func (
      (GDestroyNotify) gst_buffer_unref);
  self->source_pass = -1;
  self->batch_size = DEFAULT_BATCH_SIZE;
  self->batch_timeout = DEFAULT_BATCH_TIMEOUT;
  self->threads = DEFAULT_THREADS;
  self->output = SEGMENT_OUTPUT_LABELS;
  self->class_index = 1;
  self->pending = g_ptr_array_new_with_free_func (
      (GDestroyNotify) gst_buffer_unref);
  self->batch = gst_wsi_batch_new (GST_AGGREGATOR (self), run_inference,
      accept_patch, self);
  gst_wsi_batch_set_stats (self->batch, "segment-fcn", &self->post_messages);
}
