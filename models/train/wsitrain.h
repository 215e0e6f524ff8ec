/* wsitrain: training on the wsinn engine -- losses, optimisers, learning-rate
 * schedules, a trainer (one call per mini-batch), checkpoints that resume
 * exactly, init-from (transfer learning) and autoencoder pretraining.
 * No GStreamer (GLib inside). Formulas and formats: docs/training.md. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "wsinn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- losses */

typedef enum
{
  WSI_LOSS_CE,                  /* softmax cross-entropy (class weights) */
  WSI_LOSS_DICE,                /* soft Dice on softmax (sigmoid) probs */
  WSI_LOSS_CE_DICE,             /* ce_weight * CE + dice_weight * Dice */
  WSI_LOSS_BCE,                 /* sigmoid binary cross-entropy, 1 class */
  WSI_LOSS_MSE,                 /* mean squared error to a float target */
} WsiLossKind;

#define WSI_LOSS_MAX_CLASSES 256

typedef struct
{
  WsiLossKind kind;
  int ignore_index;             /* label skipped by every loss; -1 = none */
  int n_class_weights;          /* 0 = unweighted CE */
  float class_weights[WSI_LOSS_MAX_CLASSES];
  float dice_smooth;            /* Dice eps, default 1 */
  float ce_weight, dice_weight; /* CE+Dice mix, default 1 and 1 */
  float pos_weight;             /* BCE weight of positives, default 1 */
} WsiLossConfig;

typedef struct
{
  double loss;                  /* the value minimised */
  double ce, dice;              /* parts (CE or BCE, Dice loss) when computed */
  uint64_t n_valid;             /* pixels not ignored */
  uint64_t n_correct;           /* of those, argmax (sigmoid > 0.5) == label */
} WsiLossResult;

/* Defaults: CE, ignore 255, smooth 1, weights 1/1, pos_weight 1. */
void wsi_loss_config_init (WsiLossConfig * cfg);
/* Comma-separated weights >= 0 ("1,2.5") into class_weights; -1 + @err on a
 * value that is not one. */
int wsi_loss_config_set_class_weights (WsiLossConfig * cfg, const char *list,
    char *err, size_t errlen);
/* "ce", "dice", "ce+dice", "bce", "mse" -> kind; -1 if unknown. */
int wsi_loss_kind_from_string (const char *s);
const char *wsi_loss_kind_name (WsiLossKind kind);

/* @logits: n_pixels x channels (NHWC as the net gives it). @labels: one
 * uint8 per pixel (CE/Dice/BCE); @target: n_pixels x channels floats (MSE).
 * Writes d loss / d logits into @grad (same shape; may be NULL). A label
 * >= channels (>= 2 for BCE) that is not the ignore index is an error.
 * When every pixel is ignored the loss and the gradient are 0. */
int wsi_loss_compute (const WsiLossConfig * cfg, const float *logits,
    size_t n_pixels, int channels, const uint8_t * labels,
    const float *target, float *grad, WsiLossResult * res, char *err,
    size_t errlen);

/* ------------------------------------------------- optimiser, schedules */

typedef enum
{
  WSI_OPTIM_SGD,                /* momentum, Nesterov, L2 weight decay */
  WSI_OPTIM_ADAM,               /* L2 weight decay added to the gradient */
  WSI_OPTIM_ADAMW,              /* decoupled weight decay */
} WsiOptimKind;

typedef enum
{
  WSI_SCHED_CONSTANT,
  WSI_SCHED_STEP,               /* lr * gamma^floor((t - warmup) / step_size) */
  WSI_SCHED_COSINE,             /* to min_lr at total_steps */
} WsiSchedKind;

#define WSI_TRAIN_MAX_FREEZE 16

typedef struct
{
  WsiOptimKind optim;
  double lr;                    /* base learning rate */
  double momentum;              /* SGD, default 0.9 */
  int nesterov;
  double weight_decay;
  double beta1, beta2, eps;     /* Adam: 0.9, 0.999, 1e-8 */
  double clip_grad_norm;        /* > 0: clip the global gradient norm */

  WsiSchedKind schedule;
  int64_t warmup_steps;         /* linear warmup from lr/warmup to lr */
  int64_t step_size;            /* step schedule */
  double gamma;                 /* step schedule, default 0.1 */
  int64_t total_steps;          /* cosine schedule */
  double min_lr;                /* cosine schedule */

  /* Params whose name starts with one of these prefixes are not updated
   * while step < freeze_steps (-1: never updated). */
  int n_freeze;
  char freeze_prefixes[WSI_TRAIN_MAX_FREEZE][64];
  int64_t freeze_steps;

  WsiLossConfig loss;
  int loss_history;             /* losses kept in a checkpoint, default 100 */
  int threads;                  /* oneDNN threads, 0 = default */
} WsiTrainConfig;

/* Defaults: SGD lr 0.01 momentum 0.9, no decay, constant schedule, CE. */
void wsi_train_config_init (WsiTrainConfig * cfg);
/* Comma separated prefixes ("encoder.,down.") into cfg->freeze_prefixes. */
int wsi_train_config_set_freeze (WsiTrainConfig * cfg, const char *list,
    char *err, size_t errlen);
/* Checks ranges (lr > 0, momentum in [0, 1), betas in [0, 1), ...). */
int wsi_train_config_check (const WsiTrainConfig * cfg, char *err,
    size_t errlen);
/* Learning rate of the optimiser step with 0-based index @step. */
double wsi_train_lr_at (const WsiTrainConfig * cfg, int64_t step);
int wsi_optim_kind_from_string (const char *s);       /* sgd, adam, adamw */
const char *wsi_optim_kind_name (WsiOptimKind kind);
int wsi_sched_kind_from_string (const char *s); /* constant, step, cosine */
const char *wsi_sched_kind_name (WsiSchedKind kind);

/* ---------------------------------------------------------------- trainer */

typedef enum
{
  WSI_TASK_SEGMENT,             /* segmentation net, labels per pixel */
  WSI_TASK_PRETRAIN,            /* encoder + light decoder, MSE to input */
} WsiTrainTask;

typedef struct _WsiTrainer WsiTrainer;

#define WSI_TRAIN_MAX_LOSSES 8

/* Named loss values of one batch, as a model's step or evaluate gives them. */
typedef struct
{
  double loss;                  /* the value minimised */
  int n;                        /* named parts (e.g. ce, dice; rpn_box...) */
  const char *names[WSI_TRAIN_MAX_LOSSES];      /* static strings */
  double values[WSI_TRAIN_MAX_LOSSES];
  double accuracy;              /* model's own accuracy figure, 0 if none */
} WsiLossValues;

typedef struct
{
  int64_t step;                 /* steps done, this one included */
  double loss, ce, dice;
  double accuracy;              /* pixel accuracy of the batch (segment) */
  double lr;                    /* learning rate used */
  double grad_norm;             /* global L2 norm before clipping */
  int n_frozen;                 /* params not updated by this step */
  WsiLossValues losses;         /* the model's named loss values */
} WsiStepResult;

/* ------------------------------------------------ generic trainer (model) */

/* A trainable model: nets whose parameters the trainer optimises, saves
 * and loads, plus two callbacks. @batch is the model's own batch type.
 * step: forward in training mode and backward -- every trainable
 *   param->grad of the nets written (the gradient of losses->loss) -- and
 *   the loss values; the trainer then checks them, clips, updates (optimiser,
 *   schedule, freeze), refuses non-finite steps (BatchNorm statistics
 *   restored) and calls wsinn_net_params_changed.
 * evaluate: forward in inference mode and the loss values, nothing
 *   updated (validation); the model keeps what else it needs (outputs). */
typedef struct
{
  int (*step) (void *model, const WsiTrainConfig * cfg, const void *batch,
      WsiLossValues * losses, char *err, size_t errlen);
  int (*evaluate) (void *model, const WsiTrainConfig * cfg,
      const void *batch, WsiLossValues * losses, char *err, size_t errlen);
  void (*free) (void *model);
} WsiTrainModelClass;

/* A trainer of @model (taken: freed with the trainer by klass->free) whose
 * nets are @nets (param names unique across them, nets owned by the model).
 * @task names it in checkpoints (metadata train_task, e.g. "maskrcnn");
 * @metadata: model-file pairs (key, value, ..., NULL) saved with the
 * parameters (train_* keys skipped). Parameters are used as the nets hold
 * them: initialise them, or load them with wsi_trainer_load(). */
WsiTrainer *wsi_trainer_new_for_model (const WsiTrainModelClass * klass,
    void *model, wsinn_net * const *nets, int n_nets, const char *task,
    const char *const *metadata, const WsiTrainConfig * cfg, char *err,
    size_t errlen);
/* Loads every parameter of the nets from a model file or checkpoint
 * (missing or unknown tensors are errors); with @resume also the step,
 * epoch, loss history and optimiser state. */
int wsi_trainer_load (WsiTrainer * t, const char *path, int resume,
    char *err, size_t errlen);
/* One optimiser step on @batch (klass->step + update). 0, or -1 + @err
 * with nothing changed. */
int wsi_trainer_step_model (WsiTrainer * t, const void *batch,
    WsiStepResult * res, char *err, size_t errlen);
/* klass->evaluate on @batch. */
int wsi_trainer_evaluate_model (WsiTrainer * t, const void *batch,
    WsiLossValues * losses, char *err, size_t errlen);
void *wsi_trainer_model (WsiTrainer * t);
int wsi_trainer_n_nets (const WsiTrainer * t);
wsinn_net *wsi_trainer_net_at (WsiTrainer * t, int i);
/* Value of the named loss part, NAN when absent. */
double wsi_loss_values_get (const WsiLossValues * v, const char *name);

/* ---------------------------------- segmentation model (U-Net, FCN, DeepLab)
 * The generic trainer's model for one wsinn net + wsi_loss on its logits
 * (models/train/wsitrain-segment.c); the calls below build and drive it. */

/* Its batch type (wsi_trainer_step_model / evaluate_model). */
typedef struct
{
  const float *input;           /* n x h x w x 3, NHWC, preprocessed */
  int n, h, w;
  const uint8_t *labels;        /* n x h x w (segment; NULL for pretrain) */
} WsiSegmentBatch;

/* A new net with fresh parameters (wsinn_net_init_params(@seed); FCN-8s
 * upsamplers as bilinear kernels). @metadata: model-file pairs (key, value,
 * ..., NULL) with at least "arch"; missing required model keys (format,
 * class_names, preprocess, ...) get defaults. */
WsiTrainer *wsi_trainer_new (const char *const *metadata, WsiTrainTask task,
    const WsiTrainConfig * cfg, uint64_t seed, char *err, size_t errlen);
/* Net from a model file or a checkpoint. With @resume, a checkpoint's
 * step, epoch, loss history and optimiser state are restored (the task
 * comes from its metadata); without, only the parameters are used. */
WsiTrainer *wsi_trainer_new_from_file (const char *path,
    const WsiTrainConfig * cfg, int resume, char *err, size_t errlen);
/* Autoencoder pretraining of a model file's encoder: the file's metadata,
 * a new pretraining net (@seed), the file's encoder weights copied. */
WsiTrainer *wsi_trainer_new_pretrain_from_file (const char *path,
    const WsiTrainConfig * cfg, uint64_t seed, char *err, size_t errlen);
void wsi_trainer_free (WsiTrainer * t);

/* One mini-batch: @input n x h x w x 3 (NHWC, preprocessed), @labels
 * n x h x w (segment; ignored for pretrain). Forward (training mode), loss,
 * backward, optimiser update, wsinn_net_params_changed. A NaN/Inf loss,
 * gradient or update refuses the step (-1): parameters, BatchNorm running
 * statistics and optimiser state stay as they were. */
int wsi_trainer_step (WsiTrainer * t, const float *input, int n, int h,
    int w, const uint8_t * labels, WsiStepResult * res, char *err,
    size_t errlen);

/* Loss and accuracy of a batch in inference mode (BatchNorm running
 * statistics), nothing updated: for validation batches. */
int wsi_trainer_evaluate (WsiTrainer * t, const float *input, int n, int h,
    int w, const uint8_t * labels, WsiLossResult * res, char *err,
    size_t errlen);

/* Checkpoint: every parameter (BatchNorm statistics included), optimiser
 * state as "__optim__.<param>.<state>" tensors, the model metadata plus
 * train_* keys; written atomically. Loadable by wsi_model_load. */
int wsi_trainer_save (WsiTrainer * t, const char *path, char *err,
    size_t errlen);
/* One training run at a time per checkpoint path: an flock on PATH.lock,
 * which holds the holder's pid (segment-fcn and wsitrain-tool both take
 * it). Once held, temporary files of killed saves beside the checkpoint
 * (.NAME.XXXXXX) are removed, counted in *@n_stale. Returns the lock's fd
 * (>= 0), or WSI_CHECKPOINT_LOCK_OPEN (the lock file cannot be created) or
 * WSI_CHECKPOINT_LOCK_BUSY (another run holds it) with @err set. */
#define WSI_CHECKPOINT_LOCK_OPEN (-1)
#define WSI_CHECKPOINT_LOCK_BUSY (-2)
int wsi_checkpoint_lock (const char *path, int *n_stale, char *err,
    size_t errlen);
/* Releases a lock from wsi_checkpoint_lock (fd < 0: nothing). */
void wsi_checkpoint_unlock (const char *path, int fd);

/* Model file without optimiser state or train_* keys (for deployment). */
int wsi_trainer_export (WsiTrainer * t, const char *path, char *err,
    size_t errlen);

typedef struct
{
  int n_copied;                 /* params whose name and shape matched */
  int n_shape_mismatch;         /* same name, other shape (not copied) */
  int n_skipped_prefix;         /* matched but outside the required prefix */
  int n_unused;                 /* file tensors the net does not have */
  int n_net_params;             /* params of the net */
} WsiInitFromReport;

/* Copies every tensor of @path whose name and shape match a param of the
 * net (optimiser tensors excluded); with @prefix (comma separated list, or
 * NULL/"") only names starting with one of them. Fails when nothing is
 * copied. Optimiser state of copied params is reset. */
int wsi_trainer_init_from (WsiTrainer * t, const char *path,
    const char *prefix, WsiInitFromReport * report, char *err,
    size_t errlen);

/* The first (segmentation: the only) net. */
wsinn_net *wsi_trainer_net (WsiTrainer * t);
/* Net output (logits, NHWC) of the last step or evaluate call and its
 * channel count; valid until the next call. */
const float *wsi_trainer_output (const WsiTrainer * t, int *channels);
WsiTrainTask wsi_trainer_task (const WsiTrainer * t);
int64_t wsi_trainer_get_step (const WsiTrainer * t);
int wsi_trainer_get_epoch (const WsiTrainer * t);
void wsi_trainer_set_epoch (WsiTrainer * t, int epoch);
/* Learning rate the next step will use. */
double wsi_trainer_next_lr (const WsiTrainer * t);
/* The model metadata value (as it will be saved), or NULL. */
const char *wsi_trainer_metadata (const WsiTrainer * t, const char *key);
/* Replaces the training configuration (e.g. a new lr after resume); the
 * optimiser kind may change only if no step was done yet. */
int wsi_trainer_set_config (WsiTrainer * t, const WsiTrainConfig * cfg,
    char *err, size_t errlen);

/* The autoencoder of a segmentation spec: its encoder (param names and
 * shapes identical to the segmentation net's) + "pretrain.reduce" 1x1 conv,
 * BN, ReLU, bilinear resize to the input size, "pretrain.out" 3x3 conv to 3
 * channels. */
wsinn_net *wsi_pretrain_net_new (const wsinn_spec * spec, char *err,
    size_t errlen);

#ifdef __cplusplus
}
#endif
