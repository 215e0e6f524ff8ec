/* The training driver of segmentation elements: gstwsitrain.h. */
#include <errno.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "gstwsibatch.h"
#include "gstwsipair.h"
#include "gstwsipatch.h"
#include "gstwsiprops.h"
#include "gstwsitilemeta.h"
#include "gstwsitrain.h"
#include "wsiargmax.h"

GST_DEBUG_CATEGORY_STATIC (gst_wsi_train_debug);
#define GST_CAT_DEFAULT gst_wsi_train_debug

struct _GstWsiTrain
{
  GstAggregator *agg;           /* the element (not owned) */
  gchar *prefix;
  GstWsiTrainFuncs funcs;
  gpointer user;
  GstWsiTrainSettings props;    /* as set, under the object lock */
  GstWsiTrainSettings cfg;      /* copy taken at start */

  WsiTrainer *trainer;
  gboolean annotated;           /* supervised: annotation pads needed */
  GstAggregatorPad *image_pad, *annot_pad, *val_pad, *val_annot_pad;
  GstAggregatorPad *vimg;       /* the validation pad during aggregate */
  gboolean input_ok;
  gint width, height;           /* the image pad's patches */
  gboolean is_tensor;
  GstVideoInfo annot_vinfo, val_annot_vinfo;
  gboolean annot_caps_ok, val_annot_caps_ok;
  gint val_width, val_height;   /* the validation pad's patches */
  gboolean val_is_tensor, val_caps_ok;
  guint8 *labels, *preds;       /* label arrays of a batch */
  gsize label_capacity, pred_capacity;
  GstWsiBatch *batch, *val_batch;
  gint lock_fd;                 /* flock on CHECKPOINT.lock, -1 none */
  gboolean need_gap;            /* a GAP event prerolls downstream */
  gint64 last_step_msg_us;
  gint *post_messages;

  gint64 source_pass;           /* tile meta epoch of the last patch */
  gint epoch;
  gdouble epoch_loss, epoch_acc;
  guint64 epoch_steps;
  gint64 last_saved_step;
  gboolean checkpoint_written;  /* by this run */

  gboolean validating, final_validation, val_eos;
  gint64 val_pass;              /* tile meta epoch of the run, -1 at start */
  gint val_epoch;               /* training epoch the run reports on */
  guint64 val_patches;
  gdouble val_loss_sum;
  GstStructure *deferred_epoch; /* epoch message waiting for validation */
};

/* ------------------------------------------------------------ properties */

/* The enum type @name of the static @values, registered once (@api: a
 * type of the plugin's API, documented). */
static GType
enum_type (gsize * type, const gchar * name, const GEnumValue * values,
    gboolean api)
{
  if (g_once_init_enter (type)) {
    GType t = g_enum_register_static (name, values);
    if (api)
      gst_type_mark_as_plugin_api (t, 0);
    g_once_init_leave (type, t);
  }
  return *type;
}

/* Registered enums whose nicks are the strings the trainer parses
 * (wsi_*_kind_from_string); the type names are segment-fcn's first ones,
 * kept so that its pipelines and gst-inspect output stay as they were. */
#define GST_TYPE_WSI_TRAIN_OPTIMIZER (gst_wsi_train_optimizer_get_type ())
static GType
gst_wsi_train_optimizer_get_type (void)
{
  static gsize type = 0;
  static const GEnumValue values[] = {
    {WSI_OPTIM_SGD, "SGD with momentum and L2 weight decay", "sgd"},
    {WSI_OPTIM_ADAM, "Adam (L2 weight decay)", "adam"},
    {WSI_OPTIM_ADAMW, "AdamW (decoupled weight decay)", "adamw"},
    {0, NULL, NULL}
  };

  return enum_type (&type, "GstSegmentFcnOptimizer", values, FALSE);
}

#define GST_TYPE_WSI_TRAIN_SCHEDULE (gst_wsi_train_schedule_get_type ())
static GType
gst_wsi_train_schedule_get_type (void)
{
  static gsize type = 0;
  static const GEnumValue values[] = {
    {WSI_SCHED_CONSTANT, "Constant learning rate", "constant"},
    {WSI_SCHED_STEP, "Step decay", "step"},
    {WSI_SCHED_COSINE, "Cosine decay to total-steps", "cosine"},
    {0, NULL, NULL}
  };

  return enum_type (&type, "GstSegmentFcnSchedule", values, FALSE);
}

GType
gst_wsi_train_mode_get_type (void)
{
  static gsize type = 0;
  static const GEnumValue values[] = {
    {GST_WSI_TRAIN_MODE_INFER, "Segment patches with the model", "infer"},
    {GST_WSI_TRAIN_MODE_TRAIN, "Train on image + annotation pairs "
          "(request the 'annotation' pad)", "train"},
    {GST_WSI_TRAIN_MODE_PRETRAIN, "Autoencoder pretraining of the encoder "
          "on unlabelled patches", "pretrain"},
    {0, NULL, NULL}
  };

  return enum_type (&type, "GstSegmentFcnMode", values, TRUE);
}

GType
gst_wsi_train_loss_get_type (void)
{
  static gsize type = 0;
  static const GEnumValue values[] = {
    {WSI_LOSS_CE, "Softmax cross-entropy (class-weights)", "ce"},
    {WSI_LOSS_DICE, "Soft Dice over all classes", "dice"},
    {WSI_LOSS_CE_DICE, "Cross-entropy + soft Dice", "ce+dice"},
    {WSI_LOSS_BCE, "Binary cross-entropy (one-class models)", "bce"},
    {0, NULL, NULL}
  };

  return enum_type (&type, "GstSegmentFcnLoss", values, TRUE);
}

enum
{
  P_CHECKPOINT,
  P_CHECKPOINT_INTERVAL,
  P_RESUME,
  P_INIT_FROM,
  P_INIT_FROM_PREFIX,
  P_FREEZE,
  P_FREEZE_STEPS,
  P_OPTIMIZER,
  P_LEARNING_RATE,
  P_MOMENTUM,
  P_WEIGHT_DECAY,
  P_LR_SCHEDULE,
  P_WARMUP_STEPS,
  P_TOTAL_STEPS,
  P_VALIDATION_INTERVAL,
};

void
gst_wsi_train_install_properties (GObjectClass * klass, guint first)
{
  const GParamFlags flags = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
      GST_PARAM_MUTABLE_READY;
  GParamSpec *specs[GST_WSI_TRAIN_N_PROPS];

  specs[P_CHECKPOINT] = g_param_spec_string ("checkpoint", "Checkpoint",
      "Training: checkpoint file written atomically every "
      "checkpoint-interval steps and at EOS (model + optimiser state)",
      NULL, flags);
  specs[P_CHECKPOINT_INTERVAL] = g_param_spec_uint ("checkpoint-interval",
      "Checkpoint interval",
      "Training: steps between checkpoints (0: only at EOS)", 0,
      G_MAXUINT, 100, flags);
  specs[P_RESUME] = g_param_spec_boolean ("resume", "Resume",
      "Training: 'model' is a checkpoint; continue its step count, "
      "epoch and optimiser state", FALSE, flags);
  specs[P_INIT_FROM] = g_param_spec_string ("init-from", "Initialise from",
      "Training: copy every parameter whose name and shape match from "
      "this model file (transfer learning)", NULL, flags);
  specs[P_INIT_FROM_PREFIX] = g_param_spec_string ("init-from-prefix",
      "Init-from prefix",
      "Training: copy only parameters whose names start with one of "
      "these comma-separated prefixes (e.g. encoder.)", NULL, flags);
  specs[P_FREEZE] = g_param_spec_string ("freeze", "Freeze",
      "Training: comma-separated parameter-name prefixes not updated "
      "during the first freeze-steps steps (e.g. encoder.,down.)", NULL,
      flags);
  specs[P_FREEZE_STEPS] = g_param_spec_int64 ("freeze-steps", "Freeze steps",
      "Training: steps the frozen prefixes stay fixed (-1: always)", -1,
      G_MAXINT64, 0, flags);
  specs[P_OPTIMIZER] = g_param_spec_enum ("optimizer", "Optimizer",
      "Training optimiser", GST_TYPE_WSI_TRAIN_OPTIMIZER, WSI_OPTIM_SGD,
      flags);
  specs[P_LEARNING_RATE] = g_param_spec_double ("learning-rate",
      "Learning rate", "Training: base learning rate", 1e-9, 10.0, 0.01,
      flags);
  specs[P_MOMENTUM] = g_param_spec_double ("momentum", "Momentum",
      "Training: SGD momentum", 0.0, 0.999, 0.9, flags);
  specs[P_WEIGHT_DECAY] = g_param_spec_double ("weight-decay",
      "Weight decay", "Training: L2 weight decay (decoupled for adamw)",
      0.0, 1.0, 0.0, flags);
  specs[P_LR_SCHEDULE] = g_param_spec_enum ("lr-schedule", "LR schedule",
      "Training: learning-rate schedule (cosine needs total-steps)",
      GST_TYPE_WSI_TRAIN_SCHEDULE, WSI_SCHED_CONSTANT, flags);
  specs[P_WARMUP_STEPS] = g_param_spec_uint64 ("warmup-steps",
      "Warmup steps", "Training: linear learning-rate warmup steps", 0,
      G_MAXINT64, 0, flags);
  specs[P_TOTAL_STEPS] = g_param_spec_uint64 ("total-steps", "Total steps",
      "Training: length of the cosine schedule", 0, G_MAXINT64, 0, flags);
  specs[P_VALIDATION_INTERVAL] = g_param_spec_uint ("validation-interval",
      "Validation interval",
      "Training: steps between validation runs over one pass of the "
      "'validation' pads' stream (0: at the end of every epoch); a "
      "final run follows the end of training", 0, G_MAXUINT, 0, flags);
  for (guint i = 0; i < GST_WSI_TRAIN_N_PROPS; i++)
    g_object_class_install_property (klass, first + i, specs[i]);
  gst_type_mark_as_plugin_api (GST_TYPE_WSI_TRAIN_OPTIMIZER, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_WSI_TRAIN_SCHEDULE, 0);
}

static void
settings_init (GstWsiTrainSettings * s)
{
  memset (s, 0, sizeof *s);
  s->checkpoint_interval = 100;
  s->optimizer = WSI_OPTIM_SGD;
  s->schedule = WSI_SCHED_CONSTANT;
  s->lr = 0.01;
  s->momentum = 0.9;
}

static void
settings_clear (GstWsiTrainSettings * s)
{
  g_clear_pointer (&s->checkpoint, g_free);
  g_clear_pointer (&s->init_from, g_free);
  g_clear_pointer (&s->init_from_prefix, g_free);
  g_clear_pointer (&s->freeze, g_free);
}

static void
settings_copy (GstWsiTrainSettings * dst, const GstWsiTrainSettings * src)
{
  settings_clear (dst);
  *dst = *src;
  dst->checkpoint = g_strdup (src->checkpoint);
  dst->init_from = g_strdup (src->init_from);
  dst->init_from_prefix = g_strdup (src->init_from_prefix);
  dst->freeze = g_strdup (src->freeze);
}

static void
set_string (gchar ** field, const GValue * value)
{
  g_free (*field);
  *field = g_value_dup_string (value);
}

gboolean
gst_wsi_train_settings_set (GstWsiTrainSettings * s, guint id,
    const GValue * value)
{
  switch (id) {
    case P_CHECKPOINT:
      set_string (&s->checkpoint, value);
      break;
    case P_CHECKPOINT_INTERVAL:
      s->checkpoint_interval = g_value_get_uint (value);
      break;
    case P_RESUME:
      s->resume = g_value_get_boolean (value);
      break;
    case P_INIT_FROM:
      set_string (&s->init_from, value);
      break;
    case P_INIT_FROM_PREFIX:
      set_string (&s->init_from_prefix, value);
      break;
    case P_FREEZE:
      set_string (&s->freeze, value);
      break;
    case P_FREEZE_STEPS:
      s->freeze_steps = g_value_get_int64 (value);
      break;
    case P_OPTIMIZER:
      s->optimizer = g_value_get_enum (value);
      break;
    case P_LEARNING_RATE:
      s->lr = g_value_get_double (value);
      break;
    case P_MOMENTUM:
      s->momentum = g_value_get_double (value);
      break;
    case P_WEIGHT_DECAY:
      s->weight_decay = g_value_get_double (value);
      break;
    case P_LR_SCHEDULE:
      s->schedule = g_value_get_enum (value);
      break;
    case P_WARMUP_STEPS:
      s->warmup_steps = g_value_get_uint64 (value);
      break;
    case P_TOTAL_STEPS:
      s->total_steps = g_value_get_uint64 (value);
      break;
    case P_VALIDATION_INTERVAL:
      s->validation_interval = g_value_get_uint (value);
      break;
    default:
      return FALSE;
  }
  return TRUE;
}

gboolean
gst_wsi_train_settings_get (const GstWsiTrainSettings * s, guint id,
    GValue * value)
{
  switch (id) {
    case P_CHECKPOINT:
      g_value_set_string (value, s->checkpoint);
      break;
    case P_CHECKPOINT_INTERVAL:
      g_value_set_uint (value, s->checkpoint_interval);
      break;
    case P_RESUME:
      g_value_set_boolean (value, s->resume);
      break;
    case P_INIT_FROM:
      g_value_set_string (value, s->init_from);
      break;
    case P_INIT_FROM_PREFIX:
      g_value_set_string (value, s->init_from_prefix);
      break;
    case P_FREEZE:
      g_value_set_string (value, s->freeze);
      break;
    case P_FREEZE_STEPS:
      g_value_set_int64 (value, s->freeze_steps);
      break;
    case P_OPTIMIZER:
      g_value_set_enum (value, s->optimizer);
      break;
    case P_LEARNING_RATE:
      g_value_set_double (value, s->lr);
      break;
    case P_MOMENTUM:
      g_value_set_double (value, s->momentum);
      break;
    case P_WEIGHT_DECAY:
      g_value_set_double (value, s->weight_decay);
      break;
    case P_LR_SCHEDULE:
      g_value_set_enum (value, s->schedule);
      break;
    case P_WARMUP_STEPS:
      g_value_set_uint64 (value, s->warmup_steps);
      break;
    case P_TOTAL_STEPS:
      g_value_set_uint64 (value, s->total_steps);
      break;
    case P_VALIDATION_INTERVAL:
      g_value_set_uint (value, s->validation_interval);
      break;
    default:
      return FALSE;
  }
  return TRUE;
}

/* ------------------------------------------------------------- helpers */

static void
post (GstWsiTrain * t, GstStructure * s)
{
  gst_element_post_message (GST_ELEMENT (t->agg),
      gst_message_new_element (GST_OBJECT (t->agg), s));
}

static GstStructure *
message (GstWsiTrain * t, const gchar * what)
{
  gchar *name = g_strdup_printf ("%s-%s", t->prefix, what);
  GstStructure *s = gst_structure_new_empty (name);

  g_free (name);
  return s;
}

/* ------------------------------------------------------------ lifecycle */

static GstFlowReturn train_run (GstWsiBatch * batch, guint n,
    GstBuffer * const *images, GstBuffer * const *annotations,
    gpointer user_data);
static GstFlowReturn validation_run (GstWsiBatch * batch, guint n,
    GstBuffer * const *images, GstBuffer * const *annotations,
    gpointer user_data);

GstWsiTrain *
gst_wsi_train_new (GstAggregator * agg, const gchar * prefix,
    const GstWsiTrainFuncs * funcs, gpointer user)
{
  GstWsiTrain *t = g_new0 (GstWsiTrain, 1);

  if (g_once_init_enter (&gst_wsi_train_debug)) {
    GstDebugCategory *cat = NULL;
    GST_DEBUG_CATEGORY_INIT (cat, "wsitrain", 0,
        "training driver of segmentation elements");
    g_once_init_leave (&gst_wsi_train_debug, cat);
  }
  t->agg = agg;
  t->prefix = g_strdup (prefix);
  t->funcs = *funcs;
  t->user = user;
  settings_init (&t->props);
  settings_init (&t->cfg);
  t->lock_fd = -1;
  t->source_pass = -1;
  t->val_pass = -1;
  t->batch = gst_wsi_batch_new (agg, train_run, NULL, t);
  t->val_batch = gst_wsi_batch_new (agg, validation_run, NULL, t);
  return t;
}

void
gst_wsi_train_free (GstWsiTrain * t)
{
  if (!t)
    return;
  gst_wsi_batch_free (t->batch);
  gst_wsi_batch_free (t->val_batch);
  g_clear_pointer (&t->deferred_epoch, gst_structure_free);
  g_clear_pointer (&t->trainer, wsi_trainer_free);
  g_free (t->labels);
  g_free (t->preds);
  settings_clear (&t->props);
  settings_clear (&t->cfg);
  g_free (t->prefix);
  g_free (t);
}

void
gst_wsi_train_set_post_messages (GstWsiTrain * t, gint * flag)
{
  t->post_messages = flag;
}

GstWsiTrainSettings *
gst_wsi_train_settings (GstWsiTrain * t)
{
  return &t->props;
}

WsiTrainer *
gst_wsi_train_trainer (GstWsiTrain * t)
{
  return t->trainer;
}

/* Training writes the checkpoint: its directory must exist and be writable
 * before the first step, and one run at a time may write it (flock on
 * CHECKPOINT.lock, which holds the holder's pid). Temporary files of runs
 * that were killed while saving (.NAME.XXXXXX beside it) are removed once
 * the lock is held: their writer is gone. */
static gboolean
prepare_checkpoint (GstWsiTrain * t)
{
  const gchar *path = t->cfg.checkpoint;
  gchar *dir, *base;
  gchar err[512] = "";
  gboolean ok = FALSE;
  gint fd, n_stale = 0;

  if (!path || !*path)
    return TRUE;
  dir = g_path_get_dirname (path);
  base = g_path_get_basename (path);
  if (g_file_test (path, G_FILE_TEST_IS_DIR)) {
    GST_ELEMENT_ERROR (t->agg, RESOURCE, OPEN_WRITE,
        ("checkpoint \"%s\" is a directory; give a file name.", path),
        (NULL));
    goto done;
  }
  if (!g_file_test (dir, G_FILE_TEST_IS_DIR)) {
    GST_ELEMENT_ERROR (t->agg, RESOURCE, NOT_FOUND,
        ("The checkpoint directory \"%s\" does not exist.", dir),
        ("Create it before training: checkpoint=%s", path));
    goto done;
  }
  if (g_access (dir, W_OK | X_OK) != 0) {
    gint e = errno;
    GST_ELEMENT_ERROR (t->agg, RESOURCE, OPEN_WRITE,
        ("Cannot write the checkpoint \"%s\" into \"%s\": %s.", base, dir,
            g_strerror (e)), (NULL));
    goto done;
  }
  fd = wsi_checkpoint_lock (path, &n_stale, err, sizeof err);
  if (fd == WSI_CHECKPOINT_LOCK_OPEN) {
    GST_ELEMENT_ERROR (t->agg, RESOURCE, OPEN_WRITE, ("%s", err), (NULL));
    goto done;
  }
  if (fd < 0) {
    GST_ELEMENT_ERROR (t->agg, RESOURCE, BUSY, ("%s", err),
        ("Give each training run its own checkpoint file."));
    goto done;
  }
  t->lock_fd = fd;
  if (n_stale > 0)
    GST_INFO_OBJECT (t->agg, "removed %d temporary files of %s left by a "
        "killed run", n_stale, path);
  ok = TRUE;

done:
  g_free (dir);
  g_free (base);
  return ok;
}

static void
reset_epoch (GstWsiTrain * t)
{
  t->source_pass = -1;
  t->epoch_loss = t->epoch_acc = 0;
  t->epoch_steps = 0;
}

gboolean
gst_wsi_train_start (GstWsiTrain * t, gboolean annotated, guint batch_size)
{
  GST_OBJECT_LOCK (t->agg);
  settings_copy (&t->cfg, &t->props);
  GST_OBJECT_UNLOCK (t->agg);
  t->annotated = annotated;
  t->input_ok = FALSE;
  t->checkpoint_written = FALSE;
  t->validating = t->final_validation = t->val_eos = FALSE;
  t->last_step_msg_us = 0;
  t->need_gap = TRUE;
  reset_epoch (t);
  gst_wsi_batch_set_size (t->batch, batch_size);
  gst_wsi_batch_set_size (t->val_batch, batch_size);
  return prepare_checkpoint (t);
}

void
gst_wsi_train_stop (GstWsiTrain * t)
{
  gst_wsi_batch_clear (t->batch);
  gst_wsi_batch_clear (t->val_batch);
  g_clear_pointer (&t->deferred_epoch, gst_structure_free);
  g_clear_pointer (&t->trainer, wsi_trainer_free);
  g_clear_pointer (&t->labels, g_free);
  g_clear_pointer (&t->preds, g_free);
  t->label_capacity = t->pred_capacity = 0;
  reset_epoch (t);
  wsi_checkpoint_unlock (t->cfg.checkpoint, t->lock_fd);
  t->lock_fd = -1;
}

void
gst_wsi_train_flush (GstWsiTrain * t)
{
  gst_wsi_batch_clear (t->batch);
  gst_wsi_batch_clear (t->val_batch);
  if (t->deferred_epoch) {
    post (t, t->deferred_epoch);
    t->deferred_epoch = NULL;
  }
  t->validating = t->final_validation = t->val_eos = FALSE;
  t->val_pass = -1;
  t->val_patches = 0;
  t->val_loss_sum = 0;
  if (t->funcs.validation_start)
    t->funcs.validation_start (t->user);
  reset_epoch (t);
  t->need_gap = TRUE;
}

static gboolean
make_config (GstWsiTrain * t, WsiTrainConfig * cfg, gchar * err,
    gsize errlen)
{
  const GstWsiTrainSettings *s = &t->cfg;

  wsi_train_config_init (cfg);
  cfg->lr = s->lr;
  cfg->momentum = s->momentum;
  cfg->weight_decay = s->weight_decay;
  cfg->warmup_steps = (int64_t) s->warmup_steps;
  cfg->total_steps = (int64_t) s->total_steps;
  cfg->freeze_steps = s->freeze_steps;
  cfg->optim = s->optimizer;
  cfg->schedule = s->schedule;
  if (cfg->schedule == WSI_SCHED_COSINE && cfg->total_steps <= 0) {
    g_snprintf (err, errlen, "lr-schedule=cosine needs total-steps");
    return FALSE;
  }
  if (t->funcs.configure && !t->funcs.configure (t->user, cfg, err, errlen))
    return FALSE;
  if (s->freeze && *s->freeze
      && wsi_train_config_set_freeze (cfg, s->freeze, err, errlen) != 0)
    return FALSE;
  return wsi_train_config_check (cfg, err, errlen) == 0;
}

gboolean
gst_wsi_train_create_trainer (GstWsiTrain * t)
{
  const GstWsiTrainSettings *s = &t->cfg;
  WsiTrainConfig cfg;
  WsiInitFromReport rep;
  gchar err[512] = "";

  if (t->trainer)
    return TRUE;
  if (!make_config (t, &cfg, err, sizeof err)) {
    GST_ELEMENT_ERROR (t->agg, RESOURCE, SETTINGS,
        ("Invalid training settings: %s", err), (NULL));
    return FALSE;
  }
  if (!(t->trainer = t->funcs.create (t->user, &cfg, s->resume)))
    return FALSE;
  if (s->init_from && *s->init_from) {
    GstStructure *m;
    if (gst_wsi_report_unreadable (GST_ELEMENT (t->agg), "init-from file",
            s->init_from))
      return FALSE;
    if (wsi_trainer_init_from (t->trainer, s->init_from,
            s->init_from_prefix, &rep, err, sizeof err) != 0) {
      GST_ELEMENT_ERROR (t->agg, STREAM, DECODE,
          ("init-from \"%s\": %s", s->init_from, err), (NULL));
      return FALSE;
    }
    m = message (t, "init-from");
    gst_structure_set (m, "location", G_TYPE_STRING, s->init_from,
        "copied", G_TYPE_INT, rep.n_copied,
        "shape-mismatch", G_TYPE_INT, rep.n_shape_mismatch,
        "unused", G_TYPE_INT, rep.n_unused,
        "net-params", G_TYPE_INT, rep.n_net_params, NULL);
    post (t, m);
  }
  t->last_saved_step = wsi_trainer_get_step (t->trainer);
  t->epoch = wsi_trainer_get_epoch (t->trainer);
  GST_INFO_OBJECT (t->agg, "training from step %" G_GINT64_FORMAT,
      t->last_saved_step);
  return TRUE;
}

void
gst_wsi_train_set_input (GstWsiTrain * t, GstAggregatorPad * image_pad,
    gboolean ok, gint width, gint height, gboolean is_tensor)
{
  t->image_pad = image_pad;
  t->input_ok = ok;
  t->width = width;
  t->height = height;
  t->is_tensor = is_tensor;
}

gboolean
gst_wsi_train_switch_input (GstWsiTrain * t, GstWsiBatch * batch,
    GstWsiPatchInput * in, gboolean infer, gint width, gint height,
    gboolean is_tensor, const GstVideoInfo * vinfo)
{
  if (gst_wsi_patch_input_differs (in, width, height, is_tensor)
      && (infer ? gst_wsi_batch_drain (batch) != GST_FLOW_OK :
          !gst_wsi_train_caps_changing (t)))
    return FALSE;
  gst_wsi_patch_input_set (in, width, height, is_tensor, vinfo);
  gst_wsi_train_set_input (t, t->image_pad, TRUE, width, height, is_tensor);
  return TRUE;
}

gboolean
gst_wsi_train_sink_event (GstWsiTrain * t, GstAggregatorPad * pad,
    GstEvent * event)
{
  gint role = gst_wsi_train_pad_role (t, pad);
  GstCaps *caps;

  if (role == 0)
    return FALSE;
  if (GST_EVENT_TYPE (event) != GST_EVENT_CAPS)
    return TRUE;
  gst_event_parse_caps (event, &caps);
  if (role == 1)
    t->annot_caps_ok = gst_video_info_from_caps (&t->annot_vinfo, caps);
  else if (role == 3)
    t->val_annot_caps_ok = gst_video_info_from_caps (&t->val_annot_vinfo,
        caps);
  else {
    GstVideoInfo vinfo;
    t->val_caps_ok = gst_wsi_patch_caps_parse (NULL, caps, &t->val_width,
        &t->val_height, &t->val_is_tensor, &vinfo);
  }
  return TRUE;
}

guint8 *
gst_wsi_train_read_labels (GstWsiTrain * t, gboolean validation, guint n,
    GstBuffer * const *annotations, GstBuffer * const *images,
    gint n_classes)
{
  const GstVideoInfo *vinfo = validation ? &t->val_annot_vinfo :
      &t->annot_vinfo;
  const gboolean caps_ok = validation ? t->val_annot_caps_ok :
      t->annot_caps_ok;
  const gint max_label = n_classes == 1 ? 1 : n_classes - 1;
  const gsize npix = (gsize) t->width * t->height;
  GstVideoFrame frame;

  if (!caps_ok || GST_VIDEO_INFO_WIDTH (vinfo) != t->width
      || GST_VIDEO_INFO_HEIGHT (vinfo) != t->height) {
    GST_ELEMENT_ERROR (t->agg, STREAM, FORMAT,
        ("Annotation patches must be GRAY8 of the image patch size %dx%d.",
            t->width, t->height), (NULL));
    return NULL;
  }
  if (!gst_wsi_batch_grow ((gpointer *) & t->labels, &t->label_capacity,
          npix * n, 1)) {
    GST_ELEMENT_ERROR (t->agg, RESOURCE, NO_SPACE_LEFT,
        ("Not enough memory for a batch of %u patches of %dx%d.", n,
            t->width, t->height), ("Lower batch-size or the patch size."));
    return NULL;
  }
  for (guint i = 0; i < n; i++) {
    guint8 *dst = t->labels + npix * i;
    if (!gst_video_frame_map (&frame, vinfo, annotations[i], GST_MAP_READ)) {
      GST_ELEMENT_ERROR (t->agg, STREAM, FORMAT,
          ("Could not map an annotation patch of %dx%d.", t->width,
              t->height), (NULL));
      return NULL;
    }
    for (gint y = 0; y < t->height; y++) {
      const guint8 *row = (const guint8 *)
          GST_VIDEO_FRAME_PLANE_DATA (&frame, 0) +
          y * GST_VIDEO_FRAME_PLANE_STRIDE (&frame, 0);
      memcpy (dst + (gsize) y * t->width, row, t->width);
      for (gint x = 0; x < t->width; x++) {
        if (row[x] > max_label && row[x] != 255) {
          gchar *where = gst_wsi_place_describe (images[i]);
          gst_video_frame_unmap (&frame);
          GST_ELEMENT_ERROR (t->agg, STREAM, DECODE,
              ("Label %u at (%d, %d) of %s is beyond the model's %d classes "
                  "(255 = ignore).", row[x], x, y, where, n_classes), (NULL));
          g_free (where);
          return NULL;
        }
      }
    }
    gst_video_frame_unmap (&frame);
  }
  return t->labels;
}

/* ------------------------------------------------- pixel-label metrics */

void
gst_wsi_train_count_pixels (WsiConfusion * cm, GstBuffer * img,
    GstBuffer * ann, const guint8 * pred, const guint8 * truth, gint width,
    gint height)
{
  GstWsiTileMeta *src = ann ? gst_buffer_get_wsi_tile_meta (ann) : NULL;
  GstWsiTileMeta m;
  WsiLabelView pv, tv;
  gint x0 = 0, x1 = width, y0 = 0, y1 = height;

  if (!src)
    src = gst_buffer_get_wsi_tile_meta (img);
  if (src) {
    m = *src;
    gst_wsi_tile_meta_fit_to_size (&m, width, height);
    if (m.downsample > 0 && isfinite (m.downsample) && m.overlap >= 0
        && m.overlap < MIN (width, height))
      gst_wsi_pair_compared_area (&m, &x0, &x1, &y0, &y1);
  }
  pv.stride = tv.stride = width;
  pv.bpp = tv.bpp = 1;
  pv.data = pred + (gsize) y0 * width + x0;
  tv.data = truth + (gsize) y0 * width + x0;
  wsi_confusion_add (cm, &pv, &tv, x1 - x0, y1 - y0, 255);
}

gboolean
gst_wsi_train_count_logits (GstWsiTrain * t, WsiConfusion * cm, guint n,
    GstBuffer * const *images, GstBuffer * const *annotations,
    const gfloat * logits, gint channels, const guint8 * labels)
{
  const gsize npix = (gsize) t->width * t->height;

  if (!gst_wsi_batch_grow ((gpointer *) & t->preds, &t->pred_capacity,
          npix * n, 1)) {
    GST_ELEMENT_ERROR (t->agg, RESOURCE, NO_SPACE_LEFT,
        ("Not enough memory for the validation labels."), (NULL));
    return FALSE;
  }
  for (gsize i = 0; i < npix * n; i++) {
    const gfloat *p = logits + i * channels;
    t->preds[i] = channels == 1 ? p[0] > 0.0f :
        (guint8) wsi_argmax (p, channels);
  }
  for (guint i = 0; i < n; i++)
    gst_wsi_train_count_pixels (cm, images[i], annotations[i],
        t->preds + npix * i, labels + npix * i, t->width, t->height);
  return TRUE;
}

void
gst_wsi_train_report_pixels (const WsiConfusion * cm, gint n_labels,
    GstStructure * s, GstStructure * epoch)
{
  GValue arr = G_VALUE_INIT, v = G_VALUE_INIT;
  gdouble acc, mean_dice, mean_iou;

  acc = wsi_confusion_accuracy (cm);
  wsi_confusion_means (cm, n_labels, &mean_dice, &mean_iou);
  gst_value_array_init (&arr, n_labels);
  g_value_init (&v, G_TYPE_DOUBLE);
  for (gint c = 0; c < n_labels; c++) {
    WsiClassScore sc;
    wsi_confusion_class_score (cm, c, &sc);
    g_value_set_double (&v, sc.dice);
    gst_value_array_append_value (&arr, &v);
  }
  gst_structure_set (s, "accuracy", G_TYPE_DOUBLE, acc,
      "mean-dice", G_TYPE_DOUBLE, mean_dice, NULL);
  gst_structure_set_value (s, "dice", &arr);
  gst_structure_set (s, "mean-iou", G_TYPE_DOUBLE, mean_iou,
      "pixels", G_TYPE_UINT64, wsi_confusion_total (cm), NULL);
  if (epoch)
    gst_structure_set (epoch, "validation-accuracy", G_TYPE_DOUBLE, acc,
        "validation-mean-dice", G_TYPE_DOUBLE, mean_dice, NULL);
  g_value_unset (&v);
  g_value_unset (&arr);
}

/* ---------------------------------------------------------------- steps */

static gboolean
save_checkpoint (GstWsiTrain * t)
{
  gchar err[512] = "";
  gint64 step = wsi_trainer_get_step (t->trainer);
  GstStructure *m;

  if (!t->cfg.checkpoint || !*t->cfg.checkpoint
      || step == t->last_saved_step)
    return TRUE;
  if (wsi_trainer_save (t->trainer, t->cfg.checkpoint, err, sizeof err)) {
    GST_ELEMENT_ERROR (t->agg, RESOURCE, WRITE,
        ("Could not write checkpoint \"%s\": %s", t->cfg.checkpoint, err),
        (NULL));
    return FALSE;
  }
  t->last_saved_step = step;
  t->checkpoint_written = TRUE;
  m = message (t, "checkpoint");
  gst_structure_set (m, "location", G_TYPE_STRING, t->cfg.checkpoint,
      "step", G_TYPE_INT64, step, "epoch", G_TYPE_INT, t->epoch, NULL);
  post (t, m);
  return TRUE;
}

static gboolean
can_validate (GstWsiTrain * t)
{
  return t->vimg != NULL && !t->val_eos;
}

static void
start_validation (GstWsiTrain * t, gint epoch)
{
  t->validating = TRUE;
  t->val_epoch = epoch;
  t->val_pass = -1;
  t->val_patches = 0;
  t->val_loss_sum = 0;
  if (t->funcs.validation_start)
    t->funcs.validation_start (t->user);
}

/* Closes the epoch; its message waits for the validation run that follows
 * when validation-interval is 0. */
static void
end_epoch (GstWsiTrain * t)
{
  GstStructure *s;

  if (t->epoch_steps == 0)
    return;
  s = message (t, "epoch");
  gst_structure_set (s, "epoch", G_TYPE_INT, t->epoch,
      "steps", G_TYPE_UINT64, t->epoch_steps,
      "mean-loss", G_TYPE_DOUBLE, t->epoch_loss / t->epoch_steps,
      "mean-accuracy", G_TYPE_DOUBLE, t->epoch_acc / t->epoch_steps, NULL);
  t->epoch++;
  wsi_trainer_set_epoch (t->trainer, t->epoch);
  t->epoch_loss = t->epoch_acc = 0;
  t->epoch_steps = 0;
  if (t->cfg.validation_interval == 0 && can_validate (t)) {
    if (t->deferred_epoch)
      post (t, t->deferred_epoch);
    t->deferred_epoch = s;
    start_validation (t, t->epoch - 1);
  } else {
    post (t, s);
  }
}

/* GstWsiBatchRunFunc of training: one optimiser step. */
static GstFlowReturn
train_run (GstWsiBatch * batch, guint n, GstBuffer * const *images,
    GstBuffer * const *annotations, gpointer user_data)
{
  GstWsiTrain *t = user_data;
  WsiStepResult res;
  gchar err[512] = "";
  GstWsiTrainStatus st;

  st = t->funcs.step (t->user, t->trainer, n, images,
      t->annotated ? annotations : NULL, &res, err, sizeof err);
  if (st == GST_WSI_TRAIN_FAILED) {
    gchar *kept = t->checkpoint_written ?
        g_strdup_printf ("The last good checkpoint (step %" G_GINT64_FORMAT
        ") is kept at %s.", t->last_saved_step, t->cfg.checkpoint) :
        g_strdup ("No checkpoint was written by this run.");
    GST_ELEMENT_ERROR (t->agg, LIBRARY, FAILED,
        ("Training step %" G_GINT64_FORMAT " failed: %s",
            wsi_trainer_get_step (t->trainer) + 1, err), ("%s", kept));
    g_free (kept);
  }
  if (st != GST_WSI_TRAIN_OK)
    return GST_FLOW_ERROR;
  gst_wsi_batch_count (batch, n);
  t->epoch_loss += res.loss;
  t->epoch_acc += res.accuracy;
  t->epoch_steps++;
  if (t->post_messages && gst_wsi_periodic_message_due (g_atomic_int_get
          (t->post_messages), &t->last_step_msg_us, 0)) {
    GstStructure *m = message (t, "train");
    gst_structure_set (m, "step", G_TYPE_INT64, res.step,
        "epoch", G_TYPE_INT, t->epoch, "loss", G_TYPE_DOUBLE, res.loss, NULL);
    for (gint i = 0; i < res.losses.n; i++)
      gst_structure_set (m, res.losses.names[i], G_TYPE_DOUBLE,
          res.losses.values[i], NULL);
    gst_structure_set (m, "accuracy", G_TYPE_DOUBLE, res.accuracy,
        "lr", G_TYPE_DOUBLE, res.lr,
        "grad-norm", G_TYPE_DOUBLE, res.grad_norm,
        "batch", G_TYPE_UINT, n, NULL);
    post (t, m);
  }
  if (t->cfg.checkpoint_interval > 0
      && res.step % t->cfg.checkpoint_interval == 0 && !save_checkpoint (t))
    return GST_FLOW_ERROR;
  if (t->cfg.validation_interval > 0
      && res.step % t->cfg.validation_interval == 0 && can_validate (t))
    start_validation (t, t->epoch);
  return GST_FLOW_OK;
}

/* GstWsiBatchRunFunc of validation: loss and metrics of one batch. */
static GstFlowReturn
validation_run (GstWsiBatch * batch, guint n, GstBuffer * const *images,
    GstBuffer * const *annotations, gpointer user_data)
{
  GstWsiTrain *t = user_data;
  WsiLossValues lv;
  gchar err[512] = "";
  GstWsiTrainStatus st;

  st = t->funcs.validate (t->user, t->trainer, n, images,
      t->annotated ? annotations : NULL, &lv, err, sizeof err);
  if (st == GST_WSI_TRAIN_FAILED)
    GST_ELEMENT_ERROR (t->agg, LIBRARY, FAILED, ("Validation failed: %s",
            err), (NULL));
  if (st != GST_WSI_TRAIN_OK)
    return GST_FLOW_ERROR;
  t->val_loss_sum += lv.loss * n;
  t->val_patches += n;
  return GST_FLOW_OK;
}

gboolean
gst_wsi_train_caps_changing (GstWsiTrain * t)
{
  GstAggregatorPad *vimg = t->vimg;
  GstFlowReturn ret;

  t->vimg = NULL;               /* no validation run starts here */
  ret = gst_wsi_batch_drain (t->batch);
  t->vimg = vimg;
  return ret == GST_FLOW_OK
      && gst_wsi_batch_drain (t->val_batch) == GST_FLOW_OK;
}

/* ----------------------------------------------------------- validation */

/* Posts the validation message (and the epoch message waiting for it):
 * loss and patches here, the metrics from the element's callback. */
static GstFlowReturn
finish_validation (GstWsiTrain * t)
{
  GstStructure *s;
  gdouble loss;

  if (gst_wsi_batch_drain (t->val_batch) != GST_FLOW_OK)
    return GST_FLOW_ERROR;
  t->validating = FALSE;
  if (t->val_patches == 0) {
    GST_ELEMENT_WARNING (t->agg, STREAM, FAILED,
        ("The validation stream gave no patches for this validation run."),
        ("Give the validation slidesrc loop=0 so that it has a pass for "
            "every run."));
  } else {
    loss = t->val_loss_sum / t->val_patches;
    s = message (t, "validation");
    gst_structure_set (s, "step", G_TYPE_INT64,
        wsi_trainer_get_step (t->trainer), "epoch", G_TYPE_INT, t->val_epoch,
        "patches", G_TYPE_UINT64, t->val_patches,
        "loss", G_TYPE_DOUBLE, loss, NULL);
    if (t->deferred_epoch)
      gst_structure_set (t->deferred_epoch, "validation-loss", G_TYPE_DOUBLE,
          loss, NULL);
    if (t->funcs.validation_report)
      t->funcs.validation_report (t->user, s, t->deferred_epoch);
    post (t, s);
  }
  if (t->deferred_epoch) {
    post (t, t->deferred_epoch);
    t->deferred_epoch = NULL;
  }
  return t->final_validation ? GST_FLOW_EOS : GST_FLOW_OK;
}

/* One pass of the validation stream (tile meta epoch) per run; the first
 * patch of the next pass stays queued for the next run. */
static GstFlowReturn
validate_next (GstWsiTrain * t, GstAggregatorPad * vimg,
    GstAggregatorPad * vann)
{
  GstBuffer *img, *ann;
  GstWsiTileMeta *m;

  if (!vimg) {                  /* pad released during a run */
    gst_wsi_batch_clear (t->val_batch);
    t->val_eos = TRUE;
    return finish_validation (t);
  }
  switch (gst_wsi_pair_peek (GST_ELEMENT (t->agg), vimg, vann, &img, &ann)) {
    case GST_WSI_PAIR_WAIT:
    case GST_WSI_PAIR_SKIPPED:
      return GST_FLOW_OK;
    case GST_WSI_PAIR_ERROR:
      return GST_FLOW_ERROR;
    case GST_WSI_PAIR_EOS:
      t->val_eos = TRUE;
      if (!t->final_validation)
        GST_ELEMENT_WARNING (t->agg, STREAM, FAILED,
            ("The validation stream ended: no further validation runs."),
            ("Give the validation slidesrc loop=0."));
      return finish_validation (t);
    case GST_WSI_PAIR_READY:
      break;
  }
  m = gst_buffer_get_wsi_tile_meta (img);
  if (!m || !t->input_ok || !t->val_caps_ok || t->val_width != t->width
      || t->val_height != t->height || t->val_is_tensor != t->is_tensor) {
    gst_buffer_unref (img);
    gst_clear_buffer (&ann);
    GST_ELEMENT_ERROR (t->agg, STREAM, FORMAT,
        ("Validation patches must come from slidesrc ! patchify (tile "
            "metadata) with the caps of the training patches."),
        ("Build the validation branch like the training branch, with "
            "augmentation off and slidesrc loop=0."));
    return GST_FLOW_ERROR;
  }
  if (t->val_pass >= 0 && (gint64) m->epoch != t->val_pass) {
    gst_buffer_unref (img);
    gst_clear_buffer (&ann);
    return finish_validation (t);
  }
  t->val_pass = m->epoch;
  gst_wsi_pair_take (vimg, vann);
  gst_wsi_batch_add (t->val_batch, img, ann);
  if (gst_wsi_batch_is_full (t->val_batch)
      && gst_wsi_batch_drain (t->val_batch) != GST_FLOW_OK)
    return GST_FLOW_ERROR;
  return GST_FLOW_OK;
}

/* ------------------------------------------------------------- training */

/* Training ends: last partial batch, epoch, checkpoint, then one final
 * validation run when a validation stream is linked. */
static GstFlowReturn
finish_training (GstWsiTrain * t)
{
  GstAggregatorPad *vimg = t->vimg;
  GstFlowReturn ret;
  gint last = t->epoch;

  t->vimg = NULL;
  ret = gst_wsi_batch_drain (t->batch);
  t->vimg = vimg;
  if (ret != GST_FLOW_OK)
    return ret;
  if (!save_checkpoint (t))
    return GST_FLOW_ERROR;
  t->final_validation = TRUE;
  end_epoch (t);
  if (can_validate (t)) {
    if (!t->validating)
      start_validation (t, last);
    return GST_FLOW_OK;
  }
  return GST_FLOW_EOS;
}

static GstFlowReturn
train_next (GstWsiTrain * t, GstAggregatorPad * annot,
    GstAggregatorPad * vann)
{
  const gboolean sup = t->annotated;
  GstAggregatorPad *vimg = t->vimg;
  GstBuffer *img, *ann;
  GstWsiTileMeta *m;
  GstFlowReturn ret;

  if (sup && !annot) {
    GST_ELEMENT_ERROR (t->agg, CORE, PAD,
        ("mode=train needs the annotation pad linked."),
        ("Link label patches to %s's 'annotation' pad, e.g. "
            "t. ! queue ! labelpatch masks=... ! seg.annotation", t->prefix));
    return GST_FLOW_ERROR;
  }
  if (!sup && (annot || vann)) {
    GST_ELEMENT_ERROR (t->agg, CORE, PAD,
        ("mode=pretrain takes no annotations: unlink the %s pad.",
            annot ? "annotation" : "validation_annotation"), (NULL));
    return GST_FLOW_ERROR;
  }
  if ((vann && !vimg) || (sup && vimg && !vann)) {
    GST_ELEMENT_ERROR (t->agg, CORE, PAD,
        ("Validation in mode=train needs both the 'validation' and the "
            "'validation_annotation' pads linked."), (NULL));
    return GST_FLOW_ERROR;
  }
  if (t->validating)
    return validate_next (t, vimg, vann);
  if (t->final_validation)
    return GST_FLOW_EOS;
  /* a batch completed just before a validation run */
  if (gst_wsi_batch_is_full (t->batch))
    return gst_wsi_batch_drain (t->batch);

  switch (gst_wsi_pair_peek (GST_ELEMENT (t->agg), t->image_pad,
          sup ? annot : NULL, &img, &ann)) {
    case GST_WSI_PAIR_WAIT:
    case GST_WSI_PAIR_SKIPPED:
      return GST_FLOW_OK;
    case GST_WSI_PAIR_ERROR:
      return GST_FLOW_ERROR;
    case GST_WSI_PAIR_EOS:
      return finish_training (t);
    case GST_WSI_PAIR_READY:
      break;
  }
  gst_wsi_pair_take (t->image_pad, sup ? annot : NULL);
  /* a new pass of the source ends the epoch (partial batch included) */
  m = gst_buffer_get_wsi_tile_meta (img);
  GST_LOG_OBJECT (t->agg, "patch %" G_GUINT64_FORMAT " of pass %d (current %"
      G_GINT64_FORMAT ")", m ? m->frame : 0, m ? (gint) m->epoch : -1,
      t->source_pass);
  if (m && t->source_pass >= 0 && (gint64) m->epoch != t->source_pass) {
    if ((ret = gst_wsi_batch_drain (t->batch)) != GST_FLOW_OK) {
      gst_buffer_unref (img);
      gst_clear_buffer (&ann);
      return ret;
    }
    end_epoch (t);
  }
  if (m)
    t->source_pass = m->epoch;
  gst_wsi_batch_add (t->batch, img, ann);
  if (gst_wsi_batch_is_full (t->batch) && !t->validating)
    return gst_wsi_batch_drain (t->batch);
  return GST_FLOW_OK;
}

/* A GAP event at the segment start, after the sticky events it needs
 * (GstAggregator 1.22 sends them only with a buffer or EOS). */
static void
push_gap (GstWsiTrain * t, GstCaps * src_caps)
{
  GstPad *src = GST_AGGREGATOR_SRC_PAD (t->agg);
  GstEvent *ev;
  GstSegment seg;

  if (!(ev = gst_pad_get_sticky_event (src, GST_EVENT_STREAM_START, 0))) {
    gchar *id = gst_pad_create_stream_id (src, GST_ELEMENT (t->agg), NULL);
    gst_pad_push_event (src, gst_event_new_stream_start (id));
    g_free (id);
  }
  gst_clear_event (&ev);
  if (!gst_pad_has_current_caps (src))
    gst_pad_push_event (src, gst_event_new_caps (src_caps));
  if (t->funcs.before_gap)
    t->funcs.before_gap (t->user);
  GST_OBJECT_LOCK (t->agg);
  seg = GST_AGGREGATOR_PAD (src)->segment;
  GST_OBJECT_UNLOCK (t->agg);
  if (seg.format != GST_FORMAT_TIME)
    gst_segment_init (&seg, GST_FORMAT_TIME);
  if (!(ev = gst_pad_get_sticky_event (src, GST_EVENT_SEGMENT, 0)))
    gst_pad_push_event (src, gst_event_new_segment (&seg));
  gst_clear_event (&ev);
  gst_pad_push_event (src, gst_event_new_gap (seg.start, GST_CLOCK_TIME_NONE));
}

GstFlowReturn
gst_wsi_train_aggregate (GstWsiTrain * t, GstCaps * src_caps)
{
  GstAggregatorPad *annot, *vann;
  GstFlowReturn ret;

  if (!t->trainer)
    return GST_FLOW_OK;
  if (!t->input_ok && gst_aggregator_pad_has_buffer (t->image_pad)) {
    GST_ELEMENT_ERROR (t->agg, CORE, NEGOTIATION,
        ("Patches arrived without accepted caps."), (NULL));
    return GST_FLOW_NOT_NEGOTIATED;
  }
  GST_OBJECT_LOCK (t->agg);
  annot = t->annot_pad ? gst_object_ref (t->annot_pad) : NULL;
  t->vimg = t->val_pad ? gst_object_ref (t->val_pad) : NULL;
  vann = t->val_annot_pad ? gst_object_ref (t->val_annot_pad) : NULL;
  GST_OBJECT_UNLOCK (t->agg);
  ret = train_next (t, annot, vann);
  gst_clear_object (&annot);
  gst_clear_object (&t->vimg);
  gst_clear_object (&vann);
  /* training outputs nothing: a GAP lets downstream preroll (once per
   * start or flush) so the pipeline reaches PLAYING */
  if (ret == GST_FLOW_OK && t->need_gap && src_caps) {
    t->need_gap = FALSE;
    push_gap (t, src_caps);
  }
  return ret;
}

/* ----------------------------------------------------------------- pads */

static GstAggregatorPad **
pad_slot (GstWsiTrain * t, const gchar * name)
{
  if (g_strcmp0 (name, "annotation") == 0)
    return &t->annot_pad;
  if (g_strcmp0 (name, "validation") == 0)
    return &t->val_pad;
  if (g_strcmp0 (name, "validation_annotation") == 0)
    return &t->val_annot_pad;
  return NULL;
}

GstAggregatorPad *
gst_wsi_train_request_pad (GstWsiTrain * t, GstPadTemplate * templ,
    gboolean refuse)
{
  const gchar *name = GST_PAD_TEMPLATE_NAME_TEMPLATE (templ);
  GstAggregatorPad **slot, *pad;

  GST_OBJECT_LOCK (t->agg);
  slot = pad_slot (t, name);
  if (!slot || *slot || refuse) {
    GST_OBJECT_UNLOCK (t->agg);
    GST_WARNING_OBJECT (t->agg, "pad %s refused (one of each; mode=train "
        "only)", name);
    return NULL;
  }
  pad = g_object_new (GST_TYPE_AGGREGATOR_PAD, "name", name,
      "direction", GST_PAD_SINK, "template", templ, NULL);
  *slot = pad;
  GST_OBJECT_UNLOCK (t->agg);
  return pad;
}

void
gst_wsi_train_release_pad (GstWsiTrain * t, GstPad * pad)
{
  GST_OBJECT_LOCK (t->agg);
  if (pad == GST_PAD (t->annot_pad))
    t->annot_pad = NULL;
  else if (pad == GST_PAD (t->val_pad))
    t->val_pad = NULL;
  else if (pad == GST_PAD (t->val_annot_pad))
    t->val_annot_pad = NULL;
  GST_OBJECT_UNLOCK (t->agg);
}

gint
gst_wsi_train_pad_role (GstWsiTrain * t, GstAggregatorPad * pad)
{
  if (!pad)
    return 0;
  if (pad == t->annot_pad)
    return 1;
  if (pad == t->val_pad)
    return 2;
  if (pad == t->val_annot_pad)
    return 3;
  return 0;
}

gboolean
gst_wsi_train_has_pads (GstWsiTrain * t)
{
  gboolean any;

  GST_OBJECT_LOCK (t->agg);
  any = t->annot_pad || t->val_pad || t->val_annot_pad;
  GST_OBJECT_UNLOCK (t->agg);
  return any;
}
