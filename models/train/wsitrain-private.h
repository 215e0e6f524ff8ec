/* Internals shared by the wsitrain sources. */
#pragma once

#include <glib.h>

#include "wsitrain.h"

/* Optimiser state of one parameter (PyTorch's per-param state). */
typedef struct
{
  wsinn_param *param;
  float *buf1;                  /* SGD momentum_buffer / Adam exp_avg */
  float *buf2;                  /* Adam exp_avg_sq */
  int64_t steps;                /* updates applied to this param */
  gboolean freeze_match;        /* name starts with a freeze prefix */
} WsiParamState;

/* Applies (commit) or only tries (!commit) one optimiser update of @ps with
 * gradient param->grad * @grad_scale. Returns FALSE when a new value (param
 * or state) would not be finite; with !commit nothing is written. */
gboolean wsi_optim_update_param (const WsiTrainConfig * cfg, WsiParamState *
    ps, double lr, float grad_scale, gboolean commit);
/* Frees and clears the state buffers. */
void wsi_param_state_reset (WsiParamState * ps);
/* TRUE when cfg freezes names like @name. */
gboolean wsi_train_config_freezes (const WsiTrainConfig * cfg,
    const char *name);
/* JSON text of the hyperparameters (metadata "train_config"). */
char *wsi_train_config_to_json (const WsiTrainConfig * cfg);

/* Generic trainer internals used by the models' sources
 * (wsitrain-segment.c): metadata saved with the parameters. */
void wsi_trainer_meta_set (WsiTrainer * t, const char *key,
    const char *value);
gboolean wsi_trainer_meta_has (WsiTrainer * t, const char *key);
/* How load errors name the nets (default: the task). */
void wsi_trainer_set_what (WsiTrainer * t, const char *what);
const WsiTrainModelClass *wsi_trainer_model_class (const WsiTrainer * t);
