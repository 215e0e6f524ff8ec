/* Optimisers (SGD, Adam, AdamW with PyTorch 1.13 semantics), learning-rate
 * schedules and the training configuration (docs/training.md). */
#include "wsitrain-private.h"

#include <json-glib/json-glib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

void
wsi_train_config_init (WsiTrainConfig * cfg)
{
  memset (cfg, 0, sizeof *cfg);
  cfg->optim = WSI_OPTIM_SGD;
  cfg->lr = 0.01;
  cfg->momentum = 0.9;
  cfg->beta1 = 0.9;
  cfg->beta2 = 0.999;
  cfg->eps = 1e-8;
  cfg->schedule = WSI_SCHED_CONSTANT;
  cfg->step_size = 1000;
  cfg->gamma = 0.1;
  cfg->total_steps = 10000;
  wsi_loss_config_init (&cfg->loss);
  cfg->loss_history = 100;
}

int
wsi_train_config_set_freeze (WsiTrainConfig * cfg, const char *list,
    char *err, size_t errlen)
{
  gchar **parts = g_strsplit (list ? list : "", ",", -1);
  int n = 0, ret = 0;

  for (int i = 0; parts[i]; i++) {
    char *s = g_strstrip (parts[i]);
    if (!*s)
      continue;
    if (n >= WSI_TRAIN_MAX_FREEZE || strlen (s) >= sizeof
        cfg->freeze_prefixes[0]) {
      snprintf (err, errlen, "freeze list: at most %d prefixes of < %zu "
          "characters", WSI_TRAIN_MAX_FREEZE, sizeof cfg->freeze_prefixes[0]);
      ret = -1;
      break;
    }
    g_strlcpy (cfg->freeze_prefixes[n++], s, sizeof cfg->freeze_prefixes[0]);
  }
  g_strfreev (parts);
  if (ret == 0)
    cfg->n_freeze = n;
  return ret;
}

int
wsi_train_config_check (const WsiTrainConfig * cfg, char *err, size_t errlen)
{
  const char *bad = NULL;

  if ((guint) cfg->optim > WSI_OPTIM_ADAMW)
    bad = "unknown optimiser";
  else if (!(cfg->lr > 0) || !isfinite (cfg->lr))
    bad = "lr must be > 0";
  else if (!(cfg->momentum >= 0 && cfg->momentum < 1))
    bad = "momentum must be in [0, 1)";
  else if (cfg->nesterov && cfg->optim == WSI_OPTIM_SGD && cfg->momentum <= 0)
    bad = "nesterov needs momentum > 0";
  else if (!(cfg->weight_decay >= 0) || !isfinite (cfg->weight_decay))
    bad = "weight_decay must be >= 0";
  else if (!(cfg->beta1 >= 0 && cfg->beta1 < 1)
      || !(cfg->beta2 >= 0 && cfg->beta2 < 1))
    bad = "Adam betas must be in [0, 1)";
  else if (!(cfg->eps > 0))
    bad = "Adam eps must be > 0";
  else if (!(cfg->clip_grad_norm >= 0))
    bad = "clip_grad_norm must be >= 0";
  else if ((guint) cfg->schedule > WSI_SCHED_COSINE)
    bad = "unknown schedule";
  else if (cfg->warmup_steps < 0)
    bad = "warmup_steps must be >= 0";
  else if (cfg->schedule == WSI_SCHED_STEP && (cfg->step_size < 1
          || !(cfg->gamma > 0)))
    bad = "step schedule needs step_size >= 1 and gamma > 0";
  else if (cfg->schedule == WSI_SCHED_COSINE && (cfg->total_steps < 1
          || !(cfg->min_lr >= 0)))
    bad = "cosine schedule needs total_steps >= 1 and min_lr >= 0";
  else if (cfg->freeze_steps < -1)
    bad = "freeze_steps must be >= -1";
  else if ((guint) cfg->loss.kind > WSI_LOSS_MSE)
    bad = "unknown loss";
  else if (cfg->loss.ignore_index < -1 || cfg->loss.ignore_index > 255)
    bad = "ignore_index must be -1 or 0..255";
  else if (!(cfg->loss.dice_smooth >= 0) || !(cfg->loss.ce_weight >= 0)
      || !(cfg->loss.dice_weight >= 0) || !(cfg->loss.pos_weight > 0))
    bad = "dice_smooth, ce_weight, dice_weight must be >= 0, pos_weight > 0";
  else if (cfg->loss.n_class_weights < 0
      || cfg->loss.n_class_weights > WSI_LOSS_MAX_CLASSES)
    bad = "bad number of class weights";
  else if (cfg->loss_history < 0 || cfg->loss_history > 100000)
    bad = "loss_history must be in 0..100000";
  for (int i = 0; !bad && i < cfg->loss.n_class_weights; i++)
    if (!(cfg->loss.class_weights[i] >= 0)
        || !isfinite (cfg->loss.class_weights[i]))
      bad = "class weights must be finite and >= 0";
  if (bad) {
    snprintf (err, errlen, "training configuration: %s", bad);
    return -1;
  }
  return 0;
}

double
wsi_train_lr_at (const WsiTrainConfig * cfg, int64_t step)
{
  double lr = cfg->lr;
  int64_t t;

  if (step < 0)
    step = 0;
  if (cfg->warmup_steps > 0 && step < cfg->warmup_steps)
    return cfg->lr * (double) (step + 1) / (double) cfg->warmup_steps;
  t = step - cfg->warmup_steps;
  switch (cfg->schedule) {
    case WSI_SCHED_STEP:
      lr = cfg->lr * pow (cfg->gamma, (double) (t / cfg->step_size));
      break;
    case WSI_SCHED_COSINE:{
      int64_t span = cfg->total_steps - cfg->warmup_steps;
      double f = span > 0 ? MIN (1.0, (double) t / (double) span) : 1.0;
      lr = cfg->min_lr + (cfg->lr - cfg->min_lr) * 0.5 * (1 + cos (G_PI * f));
      break;
    }
    default:
      break;
  }
  return lr;
}

static const char *const optim_names[] = { "sgd", "adam", "adamw" };
static const char *const sched_names[] = { "constant", "step", "cosine" };

int
wsi_optim_kind_from_string (const char *s)
{
  for (guint i = 0; i < G_N_ELEMENTS (optim_names); i++)
    if (s && g_ascii_strcasecmp (s, optim_names[i]) == 0)
      return (int) i;
  return -1;
}

const char *
wsi_optim_kind_name (WsiOptimKind kind)
{
  return (guint) kind < G_N_ELEMENTS (optim_names) ? optim_names[kind] : "?";
}

int
wsi_sched_kind_from_string (const char *s)
{
  for (guint i = 0; i < G_N_ELEMENTS (sched_names); i++)
    if (s && g_ascii_strcasecmp (s, sched_names[i]) == 0)
      return (int) i;
  return -1;
}

const char *
wsi_sched_kind_name (WsiSchedKind kind)
{
  return (guint) kind < G_N_ELEMENTS (sched_names) ? sched_names[kind] : "?";
}

gboolean
wsi_train_config_freezes (const WsiTrainConfig * cfg, const char *name)
{
  for (int i = 0; i < cfg->n_freeze; i++)
    if (cfg->freeze_prefixes[i][0]
        && g_str_has_prefix (name, cfg->freeze_prefixes[i]))
      return TRUE;
  return FALSE;
}

char *
wsi_train_config_to_json (const WsiTrainConfig * cfg)
{
  JsonBuilder *b = json_builder_new ();
  JsonGenerator *gen;
  JsonNode *root;
  char *text;

  json_builder_begin_object (b);
#define SET_D(k, v) json_builder_set_member_name (b, k); \
  json_builder_add_double_value (b, v)
#define SET_I(k, v) json_builder_set_member_name (b, k); \
  json_builder_add_int_value (b, v)
#define SET_S(k, v) json_builder_set_member_name (b, k); \
  json_builder_add_string_value (b, v)
  SET_S ("optimizer", wsi_optim_kind_name (cfg->optim));
  SET_D ("lr", cfg->lr);
  if (cfg->optim == WSI_OPTIM_SGD) {
    SET_D ("momentum", cfg->momentum);
    SET_I ("nesterov", cfg->nesterov);
  } else {
    SET_D ("beta1", cfg->beta1);
    SET_D ("beta2", cfg->beta2);
    SET_D ("eps", cfg->eps);
  }
  SET_D ("weight_decay", cfg->weight_decay);
  SET_D ("clip_grad_norm", cfg->clip_grad_norm);
  SET_S ("schedule", wsi_sched_kind_name (cfg->schedule));
  SET_I ("warmup_steps", cfg->warmup_steps);
  if (cfg->schedule == WSI_SCHED_STEP) {
    SET_I ("step_size", cfg->step_size);
    SET_D ("gamma", cfg->gamma);
  } else if (cfg->schedule == WSI_SCHED_COSINE) {
    SET_I ("total_steps", cfg->total_steps);
    SET_D ("min_lr", cfg->min_lr);
  }
  json_builder_set_member_name (b, "freeze");
  json_builder_begin_array (b);
  for (int i = 0; i < cfg->n_freeze; i++)
    json_builder_add_string_value (b, cfg->freeze_prefixes[i]);
  json_builder_end_array (b);
  SET_I ("freeze_steps", cfg->freeze_steps);
  SET_S ("loss", wsi_loss_kind_name (cfg->loss.kind));
  SET_I ("ignore_index", cfg->loss.ignore_index);
  if (cfg->loss.n_class_weights) {
    json_builder_set_member_name (b, "class_weights");
    json_builder_begin_array (b);
    for (int i = 0; i < cfg->loss.n_class_weights; i++)
      json_builder_add_double_value (b, cfg->loss.class_weights[i]);
    json_builder_end_array (b);
  }
  if (cfg->loss.kind == WSI_LOSS_DICE || cfg->loss.kind == WSI_LOSS_CE_DICE) {
    SET_D ("dice_smooth", cfg->loss.dice_smooth);
  }
  if (cfg->loss.kind == WSI_LOSS_CE_DICE) {
    SET_D ("ce_weight", cfg->loss.ce_weight);
    SET_D ("dice_weight", cfg->loss.dice_weight);
  }
  if (cfg->loss.kind == WSI_LOSS_BCE) {
    SET_D ("pos_weight", cfg->loss.pos_weight);
  }
#undef SET_D
#undef SET_I
#undef SET_S
  json_builder_end_object (b);
  root = json_builder_get_root (b);
  gen = json_generator_new ();
  json_generator_set_root (gen, root);
  text = json_generator_to_data (gen, NULL);
  json_node_unref (root);
  g_object_unref (gen);
  g_object_unref (b);
  return text;
}

void
wsi_param_state_reset (WsiParamState * ps)
{
  g_clear_pointer (&ps->buf1, g_free);
  g_clear_pointer (&ps->buf2, g_free);
  ps->steps = 0;
}

/* Float arithmetic in the order PyTorch's CPU kernels use, scalars in
 * double as Python computes them. */
gboolean
wsi_optim_update_param (const WsiTrainConfig * cfg, WsiParamState * ps,
    double lr, float grad_scale, gboolean commit)
{
  wsinn_param *p = ps->param;
  const size_t n = p->size;
  const float wd = (float) cfg->weight_decay;
  gboolean finite = TRUE;

  if (cfg->optim == WSI_OPTIM_SGD) {
    const float mom = (float) cfg->momentum;
    const gboolean first = ps->buf1 == NULL;
    if (commit && mom != 0 && first)
      ps->buf1 = g_new (float, n);
    for (size_t i = 0; i < n; i++) {
      float w = p->data[i];
      float d = p->grad[i] * grad_scale;
      float buf = 0;
      if (wd != 0)
        d = d + wd * w;
      if (mom != 0) {
        buf = first ? d : ps->buf1[i] * mom + d;
        d = cfg->nesterov ? d + mom * buf : buf;
      }
      w = w + (float) -lr * d;
      if (!commit) {
        if (!isfinite (w) || !isfinite (buf)) {
          finite = FALSE;
          break;
        }
        continue;
      }
      if (mom != 0)
        ps->buf1[i] = buf;
      p->data[i] = w;
    }
  } else {
    const float b1 = (float) cfg->beta1, b2 = (float) cfg->beta2;
    const float a1 = (float) (1 - cfg->beta1), a2 = (float) (1 - cfg->beta2);
    const double step = (double) (ps->steps + 1);
    const double bc1 = 1 - pow (cfg->beta1, step);
    const double bc2_sqrt = sqrt (1 - pow (cfg->beta2, step));
    const float step_size = (float) (lr / bc1);
    const float eps = (float) cfg->eps;
    const float decay = (float) (1 - lr * cfg->weight_decay);
    const gboolean adamw = cfg->optim == WSI_OPTIM_ADAMW;
    if (commit && !ps->buf1) {
      ps->buf1 = g_new0 (float, n);
      ps->buf2 = g_new0 (float, n);
    }
    for (size_t i = 0; i < n; i++) {
      float w = p->data[i];
      float g = p->grad[i] * grad_scale;
      float m = ps->buf1 ? ps->buf1[i] : 0, v = ps->buf2 ? ps->buf2[i] : 0;
      float denom;
      if (adamw)
        w = w * decay;
      else if (wd != 0)
        g = g + wd * w;
      m = m * b1 + a1 * g;
      v = v * b2 + a2 * g * g;
      denom = (float) (sqrtf (v) / bc2_sqrt) + eps;
      w = w + -step_size * (m / denom);
      if (!commit) {
        if (!isfinite (w) || !isfinite (m) || !isfinite (v)) {
          finite = FALSE;
          break;
        }
        continue;
      }
      ps->buf1[i] = m;
      ps->buf2[i] = v;
      p->data[i] = w;
    }
  }
  if (commit)
    ps->steps++;
  return finite;
}
