/* The generic trainer: the parameters of a model's nets, one optimiser
 * step per mini-batch (the model's step callback gives the gradients),
 * checkpoints with optimiser state, resume, init-from, the checkpoint lock.
 * The segmentation model (one net + wsi_loss) is wsitrain-segment.c.
 * docs/training.md. */
#include "wsitrain-private.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "safetensors.h"

#define OPTIM_PREFIX "__optim__."

struct _WsiTrainer
{
  WsiTrainConfig cfg;
  const WsiTrainModelClass *klass;
  void *model;
  char *task;                   /* train_task of checkpoints */
  char *what;                   /* the nets in messages ("arch unet") */
  wsinn_net **nets;             /* owned by the model */
  int n_nets;
  GHashTable *meta;             /* model metadata (no train_* keys) */
  WsiParamState *ps;            /* one per param of every net */
  int *ps_net;                  /* the net of each */
  size_t n_params;
  int64_t step;
  int epoch;
  GArray *history;              /* HistEntry, the last cfg.loss_history */
  float *stats_backup;          /* non-trainable params before a step */
  size_t stats_size;
};

typedef struct
{
  int64_t step;
  double loss;
} HistEntry;

/* ------------------------------------------------------------ metadata */

void
wsi_trainer_meta_set (WsiTrainer * t, const char *key, const char *value)
{
  g_hash_table_replace (t->meta, g_strdup (key), g_strdup (value));
}

void
wsi_trainer_set_what (WsiTrainer * t, const char *what)
{
  g_free (t->what);
  t->what = g_strdup (what);
}

static const char *
wsi_trainer_describe (const WsiTrainer * t)
{
  return t->what ? t->what : t->task;
}

gboolean
wsi_trainer_meta_has (WsiTrainer * t, const char *key)
{
  return g_hash_table_contains (t->meta, key);
}

/* key, value, ..., NULL in key order, then @extra; strings owned by @t or
 * the caller. */
static const char **
meta_list (WsiTrainer * t, GPtrArray * extra)
{
  GList *keys = g_list_sort (g_hash_table_get_keys (t->meta),
      (GCompareFunc) strcmp);
  GPtrArray *out = g_ptr_array_new ();

  for (GList * l = keys; l; l = l->next) {
    g_ptr_array_add (out, l->data);
    g_ptr_array_add (out, g_hash_table_lookup (t->meta, l->data));
  }
  for (guint i = 0; extra && i < extra->len; i++)
    g_ptr_array_add (out, extra->pdata[i]);
  g_ptr_array_add (out, NULL);
  g_list_free (keys);
  return (const char **) g_ptr_array_free (out, FALSE);
}

/* ------------------------------------------------------------- creation */

static void
params_changed (WsiTrainer * t)
{
  for (int i = 0; i < t->n_nets; i++)
    wsinn_net_params_changed (t->nets[i]);
}

static wsinn_param *
find_param (WsiTrainer * t, const char *name, int *net)
{
  for (int i = 0; i < t->n_nets; i++) {
    wsinn_param *p = wsinn_net_find_param (t->nets[i], name);
    if (p) {
      if (net)
        *net = i;
      return p;
    }
  }
  return NULL;
}

WsiTrainer *
wsi_trainer_new_for_model (const WsiTrainModelClass * klass, void *model,
    wsinn_net * const *nets, int n_nets, const char *task,
    const char *const *metadata, const WsiTrainConfig * cfg, char *err,
    size_t errlen)
{
  WsiTrainer *t;
  GHashTable *names;
  size_t stats = 0, k = 0;

  if (wsi_train_config_check (cfg, err, errlen) != 0 || n_nets < 1) {
    if (n_nets < 1)
      snprintf (err, errlen, "a trainable model needs at least one net");
    if (klass && klass->free)
      klass->free (model);
    return NULL;
  }
  t = g_new0 (WsiTrainer, 1);
  t->cfg = *cfg;
  t->klass = klass;
  t->model = model;
  t->task = g_strdup (task ? task : "segment");
  t->meta = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  t->history = g_array_new (FALSE, FALSE, sizeof (HistEntry));
  t->nets = g_memdup2 (nets, n_nets * sizeof (wsinn_net *));
  t->n_nets = n_nets;
  for (size_t i = 0; metadata && metadata[i]; i += 2) {
    if (!metadata[i + 1]) {
      snprintf (err, errlen, "metadata key '%s' has no value", metadata[i]);
      goto fail;
    }
    if (!g_str_has_prefix (metadata[i], "train_"))
      wsi_trainer_meta_set (t, metadata[i], metadata[i + 1]);
  }
  for (int i = 0; i < n_nets; i++)
    t->n_params += wsinn_net_n_params (nets[i]);
  t->ps = g_new0 (WsiParamState, MAX (t->n_params, 1));
  t->ps_net = g_new0 (int, MAX (t->n_params, 1));
  names = g_hash_table_new (g_str_hash, g_str_equal);
  for (int i = 0; i < n_nets; i++) {
    for (size_t j = 0; j < wsinn_net_n_params (nets[i]); j++, k++) {
      wsinn_param *p = wsinn_net_param (nets[i], j);
      t->ps[k].param = p;
      t->ps_net[k] = i;
      t->ps[k].freeze_match = wsi_train_config_freezes (&t->cfg, p->name);
      if (!p->trainable)
        stats += p->size;
      if (!g_hash_table_add (names, (gpointer) p->name)) {
        snprintf (err, errlen, "parameter name '%s' is in two nets",
            p->name);
        g_hash_table_unref (names);
        goto fail;
      }
    }
  }
  g_hash_table_unref (names);
  t->stats_size = stats;
  t->stats_backup = g_new (float, MAX (stats, 1));
  return t;
fail:
  wsi_trainer_free (t);
  return NULL;
}

static int
parse_history (WsiTrainer * t, const char *text)
{
  JsonParser *parser = json_parser_new ();
  JsonNode *root;
  int ok = 0;

  if (text && json_parser_load_from_data (parser, text, -1, NULL)
      && (root = json_parser_get_root (parser)) && JSON_NODE_HOLDS_ARRAY (root)) {
    JsonArray *a = json_node_get_array (root);
    ok = 1;
    for (guint i = 0; i < json_array_get_length (a); i++) {
      JsonNode *e = json_array_get_element (a, i);
      HistEntry h;
      if (!JSON_NODE_HOLDS_ARRAY (e)
          || json_array_get_length (json_node_get_array (e)) != 2) {
        ok = 0;
        break;
      }
      h.step = json_array_get_int_element (json_node_get_array (e), 0);
      h.loss = json_array_get_double_element (json_node_get_array (e), 1);
      g_array_append_val (t->history, h);
    }
  }
  g_object_unref (parser);
  return ok ? 0 : -1;
}

static gboolean
parse_int64 (const char *s, int64_t lo, int64_t hi, int64_t * out)
{
  char *end;
  gint64 v;

  if (!s || !*s)
    return FALSE;
  v = g_ascii_strtoll (s, &end, 10);
  if (*end || v < lo || v > hi)
    return FALSE;
  *out = v;
  return TRUE;
}

/* One optimiser tensor "__optim__.<param>.<what>" of the param's shape
 * (or [1] for "step"); NULL when absent, -1 via @bad on a wrong shape. */
static const float *
optim_tensor (WsiSafetensors * st, const wsinn_param * p, const char *what,
    gboolean * bad, char *err, size_t errlen)
{
  char *name = g_strdup_printf (OPTIM_PREFIX "%s.%s", p->name, what);
  const WsiTensor *tt = wsi_safetensors_find (st, name);
  const float *data = NULL;
  uint64_t want = strcmp (what, "step") ? p->size : 1;

  if (tt) {
    if (tt->n_elements != want) {
      snprintf (err, errlen, "checkpoint tensor '%s' has %" G_GUINT64_FORMAT
          " values, expected %" G_GUINT64_FORMAT, name, tt->n_elements, want);
      *bad = TRUE;
    } else {
      data = wsi_safetensors_f32 (st, tt, err, errlen);
      if (!data)
        *bad = TRUE;
    }
  }
  g_free (name);
  return data;
}

static int
load_optim_state (WsiTrainer * t, WsiSafetensors * st, char *err,
    size_t errlen)
{
  const char *kind = wsi_safetensors_metadata (st, "train_optimizer");
  int k = wsi_optim_kind_from_string (kind);
  gboolean file_adam = k == WSI_OPTIM_ADAM || k == WSI_OPTIM_ADAMW;
  gboolean cfg_adam = t->cfg.optim != WSI_OPTIM_SGD;

  if (k < 0) {
    snprintf (err, errlen, "checkpoint has no valid train_optimizer ('%s')",
        kind ? kind : "(missing)");
    return -1;
  }
  if (file_adam != cfg_adam) {
    snprintf (err, errlen, "checkpoint holds %s state but the optimiser is "
        "%s: resume with the same optimiser, or start anew with init-from",
        kind, wsi_optim_kind_name (t->cfg.optim));
    return -1;
  }
  for (size_t i = 0; i < t->n_params; i++) {
    WsiParamState *ps = &t->ps[i];
    gboolean bad = FALSE;
    const float *steps, *b1, *b2 = NULL;
    if (!ps->param->trainable)
      continue;
    steps = optim_tensor (st, ps->param, "step", &bad, err, errlen);
    b1 = optim_tensor (st, ps->param, file_adam ? "exp_avg" :
        "momentum_buffer", &bad, err, errlen);
    if (file_adam)
      b2 = optim_tensor (st, ps->param, "exp_avg_sq", &bad, err, errlen);
    if (bad)
      return -1;
    wsi_param_state_reset (ps);
    if (steps)
      ps->steps = (int64_t) steps[0];
    if (file_adam && (!b1 != !b2 || (ps->steps > 0 && !b1))) {
      snprintf (err, errlen, "checkpoint: incomplete Adam state of '%s'",
          ps->param->name);
      return -1;
    }
    if (b1)
      ps->buf1 = g_memdup2 (b1, ps->param->size * sizeof (float));
    if (b2)
      ps->buf2 = g_memdup2 (b2, ps->param->size * sizeof (float));
  }
  return 0;
}

int
wsi_trainer_load (WsiTrainer * t, const char *path, int resume, char *err,
    size_t errlen)
{
  WsiSafetensors *st = wsi_safetensors_open (path, err, errlen);
  size_t n_optim = 0;
  int ret = -1;

  if (!st)
    return -1;
  for (size_t i = 0; i < t->n_params; i++) {
    wsinn_param *p = t->ps[i].param;
    const WsiTensor *tt = wsi_safetensors_find (st, p->name);
    const float *data;
    if (!tt) {
      snprintf (err, errlen, "%s: tensor '%s' missing for %s", path,
          p->name, wsi_trainer_describe (t));
      goto done;
    }
    if (tt->n_dims > WSINN_MAX_DIMS) {
      snprintf (err, errlen, "tensor '%s' has %d dims", p->name, tt->n_dims);
      goto done;
    }
    data = wsi_safetensors_f32 (st, tt, err, errlen);
    if (!data || wsinn_net_set_param (t->nets[t->ps_net[i]], p->name, data,
            tt->n_dims, tt->shape, err, errlen) != 0)
      goto done;
  }
  for (size_t i = 0; i < wsi_safetensors_n_tensors (st); i++) {
    const WsiTensor *tt = wsi_safetensors_tensor (st, i);
    if (g_str_has_prefix (tt->name, OPTIM_PREFIX))
      n_optim++;
    else if (!find_param (t, tt->name, NULL)) {
      snprintf (err, errlen, "%s: unexpected tensor '%s' for %s", path,
          tt->name, wsi_trainer_describe (t));
      goto done;
    }
  }
  if (resume) {
    int64_t v;
    if (parse_int64 (wsi_safetensors_metadata (st, "train_step"), 0,
            G_MAXINT64, &v))
      t->step = v;
    if (parse_int64 (wsi_safetensors_metadata (st, "train_epoch"), 0,
            G_MAXINT, &v))
      t->epoch = (int) v;
    if (wsi_safetensors_metadata (st, "train_loss_history")
        && parse_history (t, wsi_safetensors_metadata (st,
                "train_loss_history")) != 0) {
      snprintf (err, errlen, "%s: bad train_loss_history", path);
      goto done;
    }
    if (n_optim && load_optim_state (t, st, err, errlen) != 0)
      goto done;
  }
  params_changed (t);
  ret = 0;
done:
  wsi_safetensors_free (st);
  return ret;
}

void
wsi_trainer_free (WsiTrainer * t)
{
  if (!t)
    return;
  for (size_t i = 0; t->ps && i < t->n_params; i++)
    wsi_param_state_reset (&t->ps[i]);
  g_free (t->ps);
  g_free (t->ps_net);
  if (t->klass && t->klass->free)
    t->klass->free (t->model);
  g_free (t->nets);
  g_free (t->task);
  g_free (t->what);
  g_hash_table_unref (t->meta);
  g_array_unref (t->history);
  g_free (t->stats_backup);
  g_free (t);
}

/* ----------------------------------------------------------------- step */

static void
stats_save (WsiTrainer * t)
{
  size_t off = 0;
  for (size_t i = 0; i < t->n_params; i++) {
    wsinn_param *p = t->ps[i].param;
    if (p->trainable)
      continue;
    memcpy (t->stats_backup + off, p->data, p->size * sizeof (float));
    off += p->size;
  }
}

static void
stats_restore (WsiTrainer * t)
{
  size_t off = 0;
  for (size_t i = 0; i < t->n_params; i++) {
    wsinn_param *p = t->ps[i].param;
    if (p->trainable)
      continue;
    memcpy (p->data, t->stats_backup + off, p->size * sizeof (float));
    off += p->size;
  }
  params_changed (t);
}

static gboolean
freeze_active (const WsiTrainer * t)
{
  return t->cfg.n_freeze > 0 && (t->cfg.freeze_steps < 0
      || t->step < t->cfg.freeze_steps);
}

static void
history_add (WsiTrainer * t, double loss)
{
  HistEntry h = { t->step, loss };
  if (t->cfg.loss_history <= 0)
    return;
  g_array_append_val (t->history, h);
  if (t->history->len > (guint) t->cfg.loss_history)
    g_array_remove_range (t->history, 0,
        t->history->len - t->cfg.loss_history);
}

int
wsi_trainer_step_model (WsiTrainer * t, const void *batch,
    WsiStepResult * res, char *err, size_t errlen)
{
  WsiLossValues lv = { 0 };
  WsiStepResult r = { 0 };
  gboolean frozen = freeze_active (t);
  double norm2 = 0;
  float scale = 1.0f;

  if (t->cfg.threads > 0)
    wsinn_set_num_threads (t->cfg.threads);
  stats_save (t);
  if (t->klass->step (t->model, &t->cfg, batch, &lv, err, errlen) != 0)
    goto refuse;
  if (!isfinite (lv.loss)) {
    snprintf (err, errlen, "step %" G_GINT64_FORMAT " refused: the loss is "
        "%s (parameters kept; lower the learning rate or check the input)",
        t->step + 1, isnan (lv.loss) ? "NaN" : "Inf");
    goto refuse;
  }
  for (size_t i = 0; i < t->n_params; i++) {
    const wsinn_param *p = t->ps[i].param;
    if (!p->trainable || (frozen && t->ps[i].freeze_match))
      continue;
    for (size_t j = 0; j < p->size; j++)
      norm2 += (double) p->grad[j] * p->grad[j];
  }
  r.grad_norm = sqrt (norm2);
  if (!isfinite (r.grad_norm)) {
    snprintf (err, errlen, "step %" G_GINT64_FORMAT " refused: NaN/Inf "
        "gradient (parameters kept)", t->step + 1);
    goto refuse;
  }
  if (t->cfg.clip_grad_norm > 0 && r.grad_norm > t->cfg.clip_grad_norm)
    scale = (float) (t->cfg.clip_grad_norm / (r.grad_norm + 1e-6));
  r.lr = wsi_train_lr_at (&t->cfg, t->step);
  /* Try every update first, so that a refused step changes nothing. */
  for (int commit = 0; commit < 2; commit++) {
    for (size_t i = 0; i < t->n_params; i++) {
      WsiParamState *ps = &t->ps[i];
      if (!ps->param->trainable)
        continue;
      if (frozen && ps->freeze_match) {
        r.n_frozen += !commit;
        continue;
      }
      if (!wsi_optim_update_param (&t->cfg, ps, r.lr, scale, commit)) {
        snprintf (err, errlen, "step %" G_GINT64_FORMAT " refused: the "
            "update of '%s' is not finite (parameters kept; lower the "
            "learning rate)", t->step + 1, ps->param->name);
        goto refuse;
      }
    }
  }
  params_changed (t);
  t->step++;
  history_add (t, lv.loss);
  r.step = t->step;
  r.loss = lv.loss;
  r.accuracy = lv.accuracy;
  r.losses = lv;
  if (res)
    *res = r;
  return 0;

refuse:
  stats_restore (t);
  return -1;
}

int
wsi_trainer_evaluate_model (WsiTrainer * t, const void *batch,
    WsiLossValues * losses, char *err, size_t errlen)
{
  WsiLossValues lv = { 0 };
  int ret;

  if (t->cfg.threads > 0)
    wsinn_set_num_threads (t->cfg.threads);
  ret = t->klass->evaluate (t->model, &t->cfg, batch, &lv, err, errlen);
  if (losses)
    *losses = lv;
  return ret;
}

double
wsi_loss_values_get (const WsiLossValues * v, const char *name)
{
  for (int i = 0; i < v->n; i++)
    if (v->names[i] && strcmp (v->names[i], name) == 0)
      return v->values[i];
  return NAN;
}

/* ----------------------------------------------------------- save, load */

static int
save_file (WsiTrainer * t, const char *path, gboolean with_state, char *err,
    size_t errlen)
{
  GArray *specs = g_array_new (FALSE, FALSE, sizeof (WsiTensorSpec));
  GPtrArray *owned = g_ptr_array_new_with_free_func (g_free);
  GPtrArray *extra = g_ptr_array_new ();
  static const int64_t one = 1;
  const char **meta;
  int ret;

  for (size_t i = 0; i < t->n_params; i++) {
    wsinn_param *p = t->ps[i].param;
    WsiTensorSpec s = { p->name, p->ndims, p->shape, p->data };
    g_array_append_val (specs, s);
  }
  if (with_state) {
    GString *hist = g_string_new ("[");
    for (size_t i = 0; i < t->n_params; i++) {
      WsiParamState *ps = &t->ps[i];
      wsinn_param *p = ps->param;
      float *steps;
      WsiTensorSpec s = { NULL, p->ndims, p->shape, NULL };
      if (!p->trainable || ps->steps == 0)
        continue;
      steps = g_new (float, 1);
      steps[0] = (float) ps->steps;
      g_ptr_array_add (owned, steps);
      s.name = g_strdup_printf (OPTIM_PREFIX "%s.step", p->name);
      g_ptr_array_add (owned, (gpointer) s.name);
      s.n_dims = 1;
      s.shape = &one;
      s.data = steps;
      g_array_append_val (specs, s);
      s.n_dims = p->ndims;
      s.shape = p->shape;
      if (ps->buf1) {
        s.name = g_strdup_printf (OPTIM_PREFIX "%s.%s", p->name,
            t->cfg.optim == WSI_OPTIM_SGD ? "momentum_buffer" : "exp_avg");
        g_ptr_array_add (owned, (gpointer) s.name);
        s.data = ps->buf1;
        g_array_append_val (specs, s);
      }
      if (ps->buf2) {
        s.name = g_strdup_printf (OPTIM_PREFIX "%s.exp_avg_sq", p->name);
        g_ptr_array_add (owned, (gpointer) s.name);
        s.data = ps->buf2;
        g_array_append_val (specs, s);
      }
    }
#define EXTRA(k, v) do { char *_v = (v); g_ptr_array_add (owned, _v); \
    g_ptr_array_add (extra, (gpointer) (k)); g_ptr_array_add (extra, _v); \
  } while (0)
    EXTRA ("train_task", g_strdup (t->task));
    EXTRA ("train_step", g_strdup_printf ("%" G_GINT64_FORMAT, t->step));
    EXTRA ("train_epoch", g_strdup_printf ("%d", t->epoch));
    EXTRA ("train_optimizer", g_strdup (wsi_optim_kind_name (t->cfg.optim)));
    EXTRA ("train_config", wsi_train_config_to_json (&t->cfg));
    for (guint i = 0; i < t->history->len; i++) {
      HistEntry *h = &g_array_index (t->history, HistEntry, i);
      char num[G_ASCII_DTOSTR_BUF_SIZE];
      g_string_append_printf (hist, "%s[%" G_GINT64_FORMAT ", %s]",
          i ? ", " : "", h->step, isfinite (h->loss) ?
          g_ascii_formatd (num, sizeof num, "%.9g", h->loss) : "null");
    }
    g_string_append (hist, "]");
    EXTRA ("train_loss_history", g_string_free (hist, FALSE));
#undef EXTRA
  } else if (strcmp (t->task, "segment") != 0) {
    /* a model file of another task says so (e.g. a pretraining net) */
    g_ptr_array_add (extra, (gpointer) "train_task");
    g_ptr_array_add (extra, (gpointer) t->task);
  }
  meta = meta_list (t, extra);
  ret = wsi_safetensors_save (path, (const WsiTensorSpec *) specs->data,
      specs->len, meta, err, errlen);
  g_free (meta);
  g_ptr_array_unref (extra);
  g_ptr_array_unref (owned);
  g_array_unref (specs);
  return ret;
}

int
wsi_trainer_save (WsiTrainer * t, const char *path, char *err, size_t errlen)
{
  return save_file (t, path, TRUE, err, errlen);
}

int
wsi_trainer_export (WsiTrainer * t, const char *path, char *err,
    size_t errlen)
{
  return save_file (t, path, FALSE, err, errlen);
}

int
wsi_trainer_init_from (WsiTrainer * t, const char *path, const char *prefix,
    WsiInitFromReport * report, char *err, size_t errlen)
{
  WsiSafetensors *st = wsi_safetensors_open (path, err, errlen);
  WsiInitFromReport r = { 0 };
  gchar **prefixes;
  int ret = 0;

  if (!st)
    return -1;
  prefixes = g_strsplit (prefix ? prefix : "", ",", -1);
  r.n_net_params = (int) t->n_params;
  for (size_t i = 0; i < wsi_safetensors_n_tensors (st) && ret == 0; i++) {
    const WsiTensor *tt = wsi_safetensors_tensor (st, i);
    wsinn_param *p;
    int net = 0;
    gboolean same = TRUE, in_prefix = TRUE;
    const float *data;
    if (g_str_has_prefix (tt->name, OPTIM_PREFIX))
      continue;
    p = find_param (t, tt->name, &net);
    if (!p) {
      r.n_unused++;
      continue;
    }
    if (tt->n_dims != p->ndims)
      same = FALSE;
    for (int d = 0; same && d < p->ndims; d++)
      same = tt->shape[d] == p->shape[d];
    if (!same) {
      r.n_shape_mismatch++;
      continue;
    }
    if (prefixes[0] && prefixes[0][0]) {
      in_prefix = FALSE;
      for (int k = 0; prefixes[k]; k++)
        if (prefixes[k][0] && g_str_has_prefix (tt->name,
                g_strstrip (prefixes[k])))
          in_prefix = TRUE;
    }
    if (!in_prefix) {
      r.n_skipped_prefix++;
      continue;
    }
    data = wsi_safetensors_f32 (st, tt, err, errlen);
    if (!data || wsinn_net_set_param (t->nets[net], p->name, data,
            tt->n_dims, tt->shape, err, errlen) != 0) {
      ret = -1;
      break;
    }
    for (size_t k = 0; k < t->n_params; k++)
      if (t->ps[k].param == p)
        wsi_param_state_reset (&t->ps[k]);
    r.n_copied++;
  }
  g_strfreev (prefixes);
  wsi_safetensors_free (st);
  params_changed (t);
  if (ret == 0 && r.n_copied == 0) {
    snprintf (err, errlen, "init-from %s: no tensor matches a parameter of "
        "this net by name and shape (%d shape mismatches, %d outside the "
        "prefix, %d unknown names)", path, r.n_shape_mismatch,
        r.n_skipped_prefix, r.n_unused);
    ret = -1;
  }
  if (report)
    *report = r;
  return ret;
}

/* ------------------------------------------------------------- accessors */

wsinn_net *
wsi_trainer_net (WsiTrainer * t)
{
  return t->nets[0];
}

void *
wsi_trainer_model (WsiTrainer * t)
{
  return t->model;
}

const WsiTrainModelClass *
wsi_trainer_model_class (const WsiTrainer * t)
{
  return t->klass;
}

int
wsi_trainer_n_nets (const WsiTrainer * t)
{
  return t->n_nets;
}

wsinn_net *
wsi_trainer_net_at (WsiTrainer * t, int i)
{
  return i >= 0 && i < t->n_nets ? t->nets[i] : NULL;
}

int64_t
wsi_trainer_get_step (const WsiTrainer * t)
{
  return t->step;
}

int
wsi_trainer_get_epoch (const WsiTrainer * t)
{
  return t->epoch;
}

void
wsi_trainer_set_epoch (WsiTrainer * t, int epoch)
{
  t->epoch = epoch;
}

double
wsi_trainer_next_lr (const WsiTrainer * t)
{
  return wsi_train_lr_at (&t->cfg, t->step);
}

const char *
wsi_trainer_metadata (const WsiTrainer * t, const char *key)
{
  return g_hash_table_lookup (t->meta, key);
}

int
wsi_trainer_set_config (WsiTrainer * t, const WsiTrainConfig * cfg,
    char *err, size_t errlen)
{
  gboolean had_state = FALSE;

  if (wsi_train_config_check (cfg, err, errlen) != 0)
    return -1;
  for (size_t i = 0; i < t->n_params; i++)
    had_state |= t->ps[i].steps > 0;
  if (had_state && (cfg->optim == WSI_OPTIM_SGD) != (t->cfg.optim ==
          WSI_OPTIM_SGD)) {
    snprintf (err, errlen, "cannot switch from %s to %s after training "
        "started", wsi_optim_kind_name (t->cfg.optim),
        wsi_optim_kind_name (cfg->optim));
    return -1;
  }
  t->cfg = *cfg;
  for (size_t i = 0; i < t->n_params; i++)
    t->ps[i].freeze_match = wsi_train_config_freezes (cfg,
        t->ps[i].param->name);
  return 0;
}

/* ---- checkpoint lock ---- */

int
wsi_checkpoint_lock (const char *path, int *n_stale, char *err,
    size_t errlen)
{
  gchar *lock_path = g_strdup_printf ("%s.lock", path);
  gchar *dir, *base, *prefix;
  GDir *d;
  const gchar *name;
  int fd = -1, ret = WSI_CHECKPOINT_LOCK_BUSY;

  if (n_stale)
    *n_stale = 0;
  for (int attempt = 0; attempt < 8 && fd < 0; attempt++) {
    struct stat a, b;
    fd = g_open (lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
      g_snprintf (err, errlen, "Cannot create the checkpoint lock \"%s\": "
          "%s.", lock_path, g_strerror (errno));
      g_free (lock_path);
      return WSI_CHECKPOINT_LOCK_OPEN;
    }
    if (flock (fd, LOCK_EX | LOCK_NB) != 0) {
      gchar holder[64] = "";
      gssize n = pread (fd, holder, sizeof holder - 1, 0);
      holder[MAX (n, 0)] = '\0';
      g_strstrip (holder);
      close (fd);
      g_snprintf (err, errlen, "The checkpoint \"%s\" is being written by "
          "another training run (pid %s, lock %s).", path,
          *holder ? holder : "unknown", lock_path);
      g_free (lock_path);
      return WSI_CHECKPOINT_LOCK_BUSY;
    }
    /* the previous holder may have removed the file meanwhile */
    if (fstat (fd, &a) != 0 || g_stat (lock_path, &b) != 0
        || a.st_ino != b.st_ino || a.st_dev != b.st_dev) {
      close (fd);
      fd = -1;
    }
  }
  if (fd < 0) {
    g_snprintf (err, errlen, "Could not lock the checkpoint \"%s\".", path);
    g_free (lock_path);
    return ret;
  }
  {
    gchar pid[32];
    gint len = g_snprintf (pid, sizeof pid, "%d\n", (gint) getpid ());
    if (ftruncate (fd, 0) != 0 || pwrite (fd, pid, len, 0) != len) {
      /* the pid is informative only */
    }
  }
  /* temporary files of runs killed while saving (.NAME.XXXXXX) */
  dir = g_path_get_dirname (path);
  base = g_path_get_basename (path);
  prefix = g_strdup_printf (".%s.", base);
  if ((d = g_dir_open (dir, 0, NULL))) {
    while ((name = g_dir_read_name (d))) {
      if (g_str_has_prefix (name, prefix)
          && strlen (name) == strlen (prefix) + 6) {
        gchar *stale = g_build_filename (dir, name, NULL);
        if (g_unlink (stale) == 0 && n_stale)
          (*n_stale)++;
        g_free (stale);
      }
    }
    g_dir_close (d);
  }
  g_free (prefix);
  g_free (base);
  g_free (dir);
  g_free (lock_path);
  return fd;
}

void
wsi_checkpoint_unlock (const char *path, int fd)
{
  gchar *lock_path;

  if (fd < 0)
    return;
  /* removed while still held: a waiting run then locks a new file */
  lock_path = g_strdup_printf ("%s.lock", path);
  g_unlink (lock_path);
  g_free (lock_path);
  close (fd);
}
