/* The trainer: one call per mini-batch (forward, loss, backward, update),
 * checkpoints with optimiser state, resume, init-from. docs/training.md. */
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
  WsiTrainTask task;
  wsinn_spec spec;
  wsinn_net *net;
  int out_channels;
  GHashTable *meta;             /* model metadata (no train_* keys) */
  WsiParamState *ps;            /* one per net param */
  size_t n_params;
  int64_t step;
  int epoch;
  GArray *history;              /* HistEntry, the last cfg.loss_history */
  float *out, *grad;            /* batch buffers */
  size_t buf_size;
  float *stats_backup;          /* non-trainable params before a step */
  size_t stats_size;
};

typedef struct
{
  int64_t step;
  double loss;
} HistEntry;

static const int default_colors[][3] = {
  {0, 0, 0}, {230, 25, 75}, {60, 180, 75}, {255, 225, 25}, {0, 130, 200},
  {245, 130, 48}, {145, 30, 180}, {70, 240, 240}, {240, 50, 230},
  {210, 245, 60}, {250, 190, 212}, {0, 128, 128}
};

/* ------------------------------------------------------------ metadata */

static void
meta_set (WsiTrainer * t, const char *key, const char *value)
{
  g_hash_table_replace (t->meta, g_strdup (key), g_strdup (value));
}

static void
meta_default (WsiTrainer * t, const char *key, const char *value)
{
  if (!g_hash_table_contains (t->meta, key))
    meta_set (t, key, value);
}

/* Fills the required model keys a caller left out (docs/model-format.md). */
static void
meta_fill_defaults (WsiTrainer * t)
{
  const int n = t->spec.n_classes;
  GString *s;
  char buf[32];

  meta_default (t, "format", "gst-wsiseg-model");
  meta_default (t, "format_version", "1");
  snprintf (buf, sizeof buf, "%d", n);
  meta_set (t, "n_classes", buf);
  meta_default (t, "preprocess", "rescale01");
  meta_default (t, "input_layout", "NCHW");
  meta_default (t, "input_channels", "RGB");
  meta_set (t, "output", n == 1 ? "sigmoid" : "softmax");
  snprintf (buf, sizeof buf, "%d", wsinn_spec_size_multiple (&t->spec));
  meta_set (t, "size_multiple", buf);
  meta_default (t, "bn_eps", "1e-05");
  if (!g_hash_table_contains (t->meta, "class_names")) {
    s = g_string_new ("[");
    for (int i = 0; i < n; i++) {
      if (n == 1)
        g_string_append (s, "\"foreground\"");
      else if (i == 0)
        g_string_append (s, "\"background\"");
      else
        g_string_append_printf (s, ", \"class%d\"", i);
    }
    g_string_append (s, "]");
    meta_set (t, "class_names", s->str);
    g_string_free (s, TRUE);
  }
  if (!g_hash_table_contains (t->meta, "class_colors")) {
    s = g_string_new ("[");
    for (int i = 0; i < n; i++) {
      const int *c = default_colors[(n == 1 ? 1 : i) % 12];
      g_string_append_printf (s, "%s[%d, %d, %d]", i ? ", " : "", c[0], c[1],
          c[2]);
    }
    g_string_append (s, "]");
    meta_set (t, "class_colors", s->str);
    g_string_free (s, TRUE);
  }
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

static WsiTrainer *
trainer_alloc (const WsiTrainConfig * cfg, char *err, size_t errlen)
{
  WsiTrainer *t;

  if (wsi_train_config_check (cfg, err, errlen) != 0)
    return NULL;
  t = g_new0 (WsiTrainer, 1);
  t->cfg = *cfg;
  t->meta = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  t->history = g_array_new (FALSE, FALSE, sizeof (HistEntry));
  wsinn_spec_init (&t->spec);
  return t;
}

/* Spec from the metadata pairs; builds the net of the task. */
static int
trainer_build (WsiTrainer * t, char *err, size_t errlen)
{
  GHashTableIter it;
  gpointer k, v;
  size_t stats = 0;

  g_hash_table_iter_init (&it, t->meta);
  while (g_hash_table_iter_next (&it, &k, &v))
    if (wsinn_spec_set (&t->spec, k, v, err, errlen) != 0)
      return -1;
  if (!t->spec.arch[0]) {
    snprintf (err, errlen, "metadata has no arch (unet, fcn8s, deeplabv3)");
    return -1;
  }
  t->spec.output = WSINN_OUTPUT_LOGITS;
  if (t->task == WSI_TASK_PRETRAIN) {
    t->net = wsi_pretrain_net_new (&t->spec, err, errlen);
    t->out_channels = 3;
  } else {
    t->net = wsinn_net_new_from_spec (&t->spec, err, errlen);
    t->out_channels = t->spec.n_classes;
  }
  if (!t->net)
    return -1;
  t->n_params = wsinn_net_n_params (t->net);
  t->ps = g_new0 (WsiParamState, t->n_params);
  for (size_t i = 0; i < t->n_params; i++) {
    t->ps[i].param = wsinn_net_param (t->net, i);
    t->ps[i].freeze_match = wsi_train_config_freezes (&t->cfg,
        t->ps[i].param->name);
    if (!t->ps[i].param->trainable)
      stats += t->ps[i].param->size;
  }
  t->stats_size = stats;
  t->stats_backup = g_new (float, MAX (stats, 1));
  return 0;
}

/* FCN-8s upsamplers start as bilinear interpolation, as in the reference. */
static void
init_bilinear (wsinn_net * net)
{
  static const char *const names[] = { "up32.weight", "up16.weight",
    "up8.weight"
  };
  for (guint i = 0; i < G_N_ELEMENTS (names); i++) {
    wsinn_param *p = wsinn_net_find_param (net, names[i]);
    int64_t c, k;
    double factor, center;
    if (!p || p->ndims != 4 || p->shape[0] != p->shape[1]
        || p->shape[2] != p->shape[3])
      continue;
    c = p->shape[0];
    k = p->shape[2];
    factor = (double) ((k + 1) / 2);
    center = k % 2 == 1 ? factor - 1 : factor - 0.5;
    memset (p->data, 0, p->size * sizeof (float));
    for (int64_t ch = 0; ch < c; ch++)
      for (int64_t y = 0; y < k; y++)
        for (int64_t x = 0; x < k; x++)
          p->data[((ch * c + ch) * k + y) * k + x] = (float)
              ((1 - fabs (y - center) / factor) * (1 - fabs (x - center) /
                  factor));
  }
  wsinn_net_params_changed (net);
}

WsiTrainer *
wsi_trainer_new (const char *const *metadata, WsiTrainTask task,
    const WsiTrainConfig * cfg, uint64_t seed, char *err, size_t errlen)
{
  WsiTrainer *t = trainer_alloc (cfg, err, errlen);

  if (!t)
    return NULL;
  t->task = task;
  for (size_t i = 0; metadata && metadata[i]; i += 2) {
    if (!metadata[i + 1]) {
      snprintf (err, errlen, "metadata key '%s' has no value", metadata[i]);
      goto fail;
    }
    if (!g_str_has_prefix (metadata[i], "train_"))
      meta_set (t, metadata[i], metadata[i + 1]);
  }
  if (trainer_build (t, err, errlen) != 0)
    goto fail;
  meta_fill_defaults (t);
  wsinn_net_init_params (t->net, seed);
  if (task == WSI_TASK_SEGMENT && !strcmp (t->spec.arch, "fcn8s"))
    init_bilinear (t->net);
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

WsiTrainer *
wsi_trainer_new_from_file (const char *path, const WsiTrainConfig * cfg,
    int resume, char *err, size_t errlen)
{
  WsiSafetensors *st = wsi_safetensors_open (path, err, errlen);
  WsiTrainer *t;
  const char *task;
  size_t used = 0, n_optim = 0;

  if (!st)
    return NULL;
  t = trainer_alloc (cfg, err, errlen);
  if (!t) {
    wsi_safetensors_free (st);
    return NULL;
  }
  if (wsi_safetensors_check_model_metadata (st, err, errlen) != 0)
    goto fail;
  task = wsi_safetensors_metadata (st, "train_task");
  t->task = g_strcmp0 (task, "pretrain") == 0 ? WSI_TASK_PRETRAIN :
      WSI_TASK_SEGMENT;
  for (size_t i = 0; i < wsi_safetensors_n_metadata (st); i++) {
    const char *key = wsi_safetensors_metadata_key (st, i);
    if (!g_str_has_prefix (key, "train_"))
      meta_set (t, key, wsi_safetensors_metadata (st, key));
  }
  if (trainer_build (t, err, errlen) != 0)
    goto fail;
  meta_fill_defaults (t);
  for (size_t i = 0; i < t->n_params; i++) {
    wsinn_param *p = t->ps[i].param;
    const WsiTensor *tt = wsi_safetensors_find (st, p->name);
    const float *data;
    if (!tt) {
      snprintf (err, errlen, "%s: tensor '%s' missing for arch %s%s", path,
          p->name, t->spec.arch, t->task == WSI_TASK_PRETRAIN ?
          " (pretraining net)" : "");
      goto fail;
    }
    if (tt->n_dims > WSINN_MAX_DIMS) {
      snprintf (err, errlen, "tensor '%s' has %d dims", p->name, tt->n_dims);
      goto fail;
    }
    data = wsi_safetensors_f32 (st, tt, err, errlen);
    if (!data || wsinn_net_set_param (t->net, p->name, data, tt->n_dims,
            tt->shape, err, errlen) != 0)
      goto fail;
    used++;
  }
  for (size_t i = 0; i < wsi_safetensors_n_tensors (st); i++) {
    const WsiTensor *tt = wsi_safetensors_tensor (st, i);
    if (g_str_has_prefix (tt->name, OPTIM_PREFIX))
      n_optim++;
    else if (!wsinn_net_find_param (t->net, tt->name)) {
      snprintf (err, errlen, "%s: unexpected tensor '%s' for arch %s", path,
          tt->name, t->spec.arch);
      goto fail;
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
      goto fail;
    }
    if (n_optim && load_optim_state (t, st, err, errlen) != 0)
      goto fail;
  }
  wsinn_net_params_changed (t->net);
  wsi_safetensors_free (st);
  return t;
fail:
  wsi_safetensors_free (st);
  wsi_trainer_free (t);
  return NULL;
}

void
wsi_trainer_free (WsiTrainer * t)
{
  if (!t)
    return;
  for (size_t i = 0; t->ps && i < t->n_params; i++)
    wsi_param_state_reset (&t->ps[i]);
  g_free (t->ps);
  if (t->net)
    wsinn_net_free (t->net);
  g_hash_table_unref (t->meta);
  g_array_unref (t->history);
  g_free (t->out);
  g_free (t->grad);
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
  wsinn_net_params_changed (t->net);
}

/* Output buffers for a batch; checks the net maps n x h x w to itself. */
static int
prepare_batch (WsiTrainer * t, const float *input, int n, int h, int w,
    const uint8_t * labels, char *err, size_t errlen)
{
  int oc, oh, ow;
  size_t size;

  if (!input || n < 1 || h < 1 || w < 1) {
    snprintf (err, errlen, "empty batch");
    return -1;
  }
  if (t->task == WSI_TASK_SEGMENT && !labels) {
    snprintf (err, errlen, "segmentation training needs labels");
    return -1;
  }
  if (wsinn_net_output_shape (t->net, n, h, w, &oc, &oh, &ow, err,
          errlen) != 0)
    return -1;
  if (oh != h || ow != w || oc != t->out_channels) {
    snprintf (err, errlen, "the net maps %dx%d to %dx%dx%d, not to the input "
        "size: use a side that is a multiple of %d", w, h, ow, oh, oc,
        wsinn_spec_size_multiple (&t->spec));
    return -1;
  }
  size = (size_t) n * h * w * oc;
  if (size > t->buf_size) {
    g_free (t->out);
    g_free (t->grad);
    t->out = g_new (float, size);
    t->grad = g_new (float, size);
    t->buf_size = size;
  }
  if (t->cfg.threads > 0)
    wsinn_set_num_threads (t->cfg.threads);
  return 0;
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
wsi_trainer_step (WsiTrainer * t, const float *input, int n, int h, int w,
    const uint8_t * labels, WsiStepResult * res, char *err, size_t errlen)
{
  WsiLossConfig mse;
  const WsiLossConfig *lc = &t->cfg.loss;
  WsiLossResult lr;
  WsiStepResult r = { 0 };
  gboolean frozen = freeze_active (t);
  double norm2 = 0;
  float scale = 1.0f;
  const size_t n_pix = (size_t) n * h * w;

  if (prepare_batch (t, input, n, h, w, labels, err, errlen) != 0)
    return -1;
  if (t->task == WSI_TASK_PRETRAIN) {
    wsi_loss_config_init (&mse);
    mse.kind = WSI_LOSS_MSE;
    lc = &mse;
  }
  stats_save (t);
  wsinn_net_set_training (t->net, 1);
  if (wsinn_net_forward (t->net, input, n, h, w, t->out, err, errlen) != 0)
    goto refuse;
  if (wsi_loss_compute (lc, t->out, n_pix, t->out_channels,
          t->task == WSI_TASK_PRETRAIN ? NULL : labels,
          t->task == WSI_TASK_PRETRAIN ? input : NULL, t->grad, &lr, err,
          errlen) != 0)
    goto refuse;
  if (!isfinite (lr.loss)) {
    snprintf (err, errlen, "step %" G_GINT64_FORMAT " refused: the loss is "
        "%s (parameters kept; lower the learning rate or check the input)",
        t->step + 1, isnan (lr.loss) ? "NaN" : "Inf");
    goto refuse;
  }
  if (wsinn_net_backward (t->net, t->grad, NULL, err, errlen) != 0)
    goto refuse;
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
  wsinn_net_params_changed (t->net);
  t->step++;
  history_add (t, lr.loss);
  r.step = t->step;
  r.loss = lr.loss;
  r.ce = lr.ce;
  r.dice = lr.dice;
  r.accuracy = lr.n_valid ? (double) lr.n_correct / lr.n_valid : 0;
  if (res)
    *res = r;
  return 0;

refuse:
  stats_restore (t);
  return -1;
}

int
wsi_trainer_evaluate (WsiTrainer * t, const float *input, int n, int h,
    int w, const uint8_t * labels, WsiLossResult * res, char *err,
    size_t errlen)
{
  WsiLossConfig mse;
  const WsiLossConfig *lc = &t->cfg.loss;

  if (prepare_batch (t, input, n, h, w, labels, err, errlen) != 0)
    return -1;
  if (t->task == WSI_TASK_PRETRAIN) {
    wsi_loss_config_init (&mse);
    mse.kind = WSI_LOSS_MSE;
    lc = &mse;
  }
  wsinn_net_set_training (t->net, 0);
  if (wsinn_net_forward (t->net, input, n, h, w, t->out, err, errlen) != 0)
    return -1;
  return wsi_loss_compute (lc, t->out, (size_t) n * h * w, t->out_channels,
      t->task == WSI_TASK_PRETRAIN ? NULL : labels,
      t->task == WSI_TASK_PRETRAIN ? input : NULL, NULL, res, err, errlen);
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
    EXTRA ("train_task", g_strdup (t->task == WSI_TASK_PRETRAIN ? "pretrain"
            : "segment"));
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
  } else if (t->task == WSI_TASK_PRETRAIN) {
    g_ptr_array_add (extra, (gpointer) "train_task");
    g_ptr_array_add (extra, (gpointer) "pretrain");
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
    gboolean same = TRUE, in_prefix = TRUE;
    const float *data;
    if (g_str_has_prefix (tt->name, OPTIM_PREFIX))
      continue;
    p = wsinn_net_find_param (t->net, tt->name);
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
    if (!data || wsinn_net_set_param (t->net, p->name, data, tt->n_dims,
            tt->shape, err, errlen) != 0) {
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
  wsinn_net_params_changed (t->net);
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
  return t->net;
}

const float *
wsi_trainer_output (const WsiTrainer * t, int *channels)
{
  if (channels)
    *channels = t->out_channels;
  return t->out;
}

WsiTrainTask
wsi_trainer_task (const WsiTrainer * t)
{
  return t->task;
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
