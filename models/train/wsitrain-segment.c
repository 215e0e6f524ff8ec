/* The segmentation model of the generic trainer (wsitrainer.c): one wsinn
 * net (U-Net, FCN-8s, DeepLabv3 from a model file's metadata, or the
 * autoencoder of pretraining) and wsi_loss on its logits. It also keeps the
 * segmentation API: wsi_trainer_new / new_from_file / step / evaluate /
 * output. docs/training.md. */
#include "wsitrain-private.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "safetensors.h"

typedef struct
{
  WsiTrainTask task;
  wsinn_spec spec;
  wsinn_net *net;
  int out_channels;
  float *out, *grad;            /* batch buffers */
  size_t buf_size;
  WsiLossResult last;           /* of the last step or evaluate */
} SegModel;

static const int default_colors[][3] = {
  {0, 0, 0}, {230, 25, 75}, {60, 180, 75}, {255, 225, 25}, {0, 130, 200},
  {245, 130, 48}, {145, 30, 180}, {70, 240, 240}, {240, 50, 230},
  {210, 245, 60}, {250, 190, 212}, {0, 128, 128}
};

static void
meta_default (WsiTrainer * t, const char *key, const char *value)
{
  if (!wsi_trainer_meta_has (t, key))
    wsi_trainer_meta_set (t, key, value);
}

/* Fills the required model keys a caller left out (docs/model-format.md). */
static void
meta_fill_defaults (WsiTrainer * t, const wsinn_spec * spec)
{
  const int n = spec->n_classes;
  GString *s;
  char buf[32];

  meta_default (t, "format", "gst-wsiseg-model");
  meta_default (t, "format_version", "1");
  snprintf (buf, sizeof buf, "%d", n);
  wsi_trainer_meta_set (t, "n_classes", buf);
  meta_default (t, "preprocess", "rescale01");
  meta_default (t, "input_layout", "NCHW");
  meta_default (t, "input_channels", "RGB");
  wsi_trainer_meta_set (t, "output", n == 1 ? "sigmoid" : "softmax");
  snprintf (buf, sizeof buf, "%d", wsinn_spec_size_multiple (spec));
  wsi_trainer_meta_set (t, "size_multiple", buf);
  meta_default (t, "bn_eps", "1e-05");
  if (!wsi_trainer_meta_has (t, "class_names")) {
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
    wsi_trainer_meta_set (t, "class_names", s->str);
    g_string_free (s, TRUE);
  }
  if (!wsi_trainer_meta_has (t, "class_colors")) {
    s = g_string_new ("[");
    for (int i = 0; i < n; i++) {
      const int *c = default_colors[(n == 1 ? 1 : i) % 12];
      g_string_append_printf (s, "%s[%d, %d, %d]", i ? ", " : "", c[0], c[1],
          c[2]);
    }
    g_string_append (s, "]");
    wsi_trainer_meta_set (t, "class_colors", s->str);
    g_string_free (s, TRUE);
  }
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

/* ------------------------------------------------------------ the model */

static void
seg_model_free (void *model)
{
  SegModel *m = model;

  if (!m)
    return;
  if (m->net)
    wsinn_net_free (m->net);
  g_free (m->out);
  g_free (m->grad);
  g_free (m);
}

/* Output buffers for a batch; checks the net maps n x h x w to itself. */
static int
prepare_batch (SegModel * m, const WsiSegmentBatch * b, char *err,
    size_t errlen)
{
  int oc, oh, ow;
  size_t size;

  if (!b->input || b->n < 1 || b->h < 1 || b->w < 1) {
    snprintf (err, errlen, "empty batch");
    return -1;
  }
  if (m->task == WSI_TASK_SEGMENT && !b->labels) {
    snprintf (err, errlen, "segmentation training needs labels");
    return -1;
  }
  if (wsinn_net_output_shape (m->net, b->n, b->h, b->w, &oc, &oh, &ow, err,
          errlen) != 0)
    return -1;
  if (oh != b->h || ow != b->w || oc != m->out_channels) {
    snprintf (err, errlen, "the net maps %dx%d to %dx%dx%d, not to the input "
        "size: use a side that is a multiple of %d", b->w, b->h, ow, oh, oc,
        wsinn_spec_size_multiple (&m->spec));
    return -1;
  }
  size = (size_t) b->n * b->h * b->w * oc;
  if (size > m->buf_size) {
    g_free (m->out);
    g_free (m->grad);
    m->out = g_new (float, size);
    m->grad = g_new (float, size);
    m->buf_size = size;
  }
  return 0;
}

/* Forward and loss (d loss / d logits into m->grad when @train). */
static int
seg_model_run (SegModel * m, const WsiTrainConfig * cfg,
    const WsiSegmentBatch * b, gboolean train, WsiLossValues * lv, char *err,
    size_t errlen)
{
  const gboolean pretrain = m->task == WSI_TASK_PRETRAIN;
  WsiLossConfig mse;
  const WsiLossConfig *lc = &cfg->loss;
  WsiLossResult *lr = &m->last;

  if (prepare_batch (m, b, err, errlen) != 0)
    return -1;
  if (pretrain) {
    wsi_loss_config_init (&mse);
    mse.kind = WSI_LOSS_MSE;
    lc = &mse;
  }
  wsinn_net_set_training (m->net, train);
  if (wsinn_net_forward (m->net, b->input, b->n, b->h, b->w, m->out, err,
          errlen) != 0)
    return -1;
  if (wsi_loss_compute (lc, m->out, (size_t) b->n * b->h * b->w,
          m->out_channels, pretrain ? NULL : b->labels,
          pretrain ? b->input : NULL, train ? m->grad : NULL, lr, err,
          errlen) != 0)
    return -1;
  lv->loss = lr->loss;
  lv->n = 2;
  lv->names[0] = "ce";
  lv->values[0] = lr->ce;
  lv->names[1] = "dice";
  lv->values[1] = lr->dice;
  lv->accuracy = lr->n_valid ? (double) lr->n_correct / lr->n_valid : 0;
  return 0;
}

static int
seg_model_step (void *model, const WsiTrainConfig * cfg, const void *batch,
    WsiLossValues * lv, char *err, size_t errlen)
{
  SegModel *m = model;

  if (seg_model_run (m, cfg, batch, TRUE, lv, err, errlen) != 0)
    return -1;
  /* a non-finite loss is refused by the trainer: no backward for it */
  if (!isfinite (lv->loss))
    return 0;
  return wsinn_net_backward (m->net, m->grad, NULL, err, errlen);
}

static int
seg_model_evaluate (void *model, const WsiTrainConfig * cfg,
    const void *batch, WsiLossValues * lv, char *err, size_t errlen)
{
  return seg_model_run (model, cfg, batch, FALSE, lv, err, errlen);
}

static const WsiTrainModelClass seg_model_class = {
  seg_model_step, seg_model_evaluate, seg_model_free
};

static SegModel *
seg_model_of (const WsiTrainer * t)
{
  return wsi_trainer_model_class (t) == &seg_model_class ?
      wsi_trainer_model ((WsiTrainer *) t) : NULL;
}

/* The model of @task from metadata pairs (spec keys; others ignored by
 * wsinn_spec_set's caller). */
static SegModel *
seg_model_new (const char *const *metadata, WsiTrainTask task, char *err,
    size_t errlen)
{
  SegModel *m = g_new0 (SegModel, 1);

  m->task = task;
  wsinn_spec_init (&m->spec);
  for (size_t i = 0; metadata && metadata[i]; i += 2) {
    if (!metadata[i + 1]) {
      snprintf (err, errlen, "metadata key '%s' has no value", metadata[i]);
      goto fail;
    }
    if (!g_str_has_prefix (metadata[i], "train_")
        && wsinn_spec_set (&m->spec, metadata[i], metadata[i + 1], err,
            errlen) != 0)
      goto fail;
  }
  if (!m->spec.arch[0]) {
    snprintf (err, errlen, "metadata has no arch (unet, fcn8s, deeplabv3)");
    goto fail;
  }
  m->spec.output = WSINN_OUTPUT_LOGITS;
  if (task == WSI_TASK_PRETRAIN) {
    m->net = wsi_pretrain_net_new (&m->spec, err, errlen);
    m->out_channels = 3;
  } else {
    m->net = wsinn_net_new_from_spec (&m->spec, err, errlen);
    m->out_channels = m->spec.n_classes;
  }
  if (!m->net)
    goto fail;
  return m;
fail:
  seg_model_free (m);
  return NULL;
}

/* The trainer of a segmentation model: metadata kept, required keys
 * filled in. */
static WsiTrainer *
seg_trainer_new (const char *const *metadata, WsiTrainTask task,
    const WsiTrainConfig * cfg, char *err, size_t errlen)
{
  SegModel *m;
  WsiTrainer *t;
  char *what;

  if (wsi_train_config_check (cfg, err, errlen) != 0)
    return NULL;
  if (!(m = seg_model_new (metadata, task, err, errlen)))
    return NULL;
  t = wsi_trainer_new_for_model (&seg_model_class, m, &m->net, 1,
      task == WSI_TASK_PRETRAIN ? "pretrain" : "segment", metadata, cfg, err,
      errlen);
  if (!t)
    return NULL;
  what = g_strdup_printf ("arch %s%s", m->spec.arch,
      task == WSI_TASK_PRETRAIN ? " (pretraining net)" : "");
  wsi_trainer_set_what (t, what);
  g_free (what);
  meta_fill_defaults (t, &m->spec);
  return t;
}

WsiTrainer *
wsi_trainer_new (const char *const *metadata, WsiTrainTask task,
    const WsiTrainConfig * cfg, uint64_t seed, char *err, size_t errlen)
{
  WsiTrainer *t = seg_trainer_new (metadata, task, cfg, err, errlen);
  SegModel *m;

  if (!t)
    return NULL;
  m = seg_model_of (t);
  wsinn_net_init_params (m->net, seed);
  if (task == WSI_TASK_SEGMENT && !strcmp (m->spec.arch, "fcn8s"))
    init_bilinear (m->net);
  return t;
}

/* The file's metadata as key, value, ..., NULL (strings owned by @st). */
static GPtrArray *
metadata_pairs (WsiSafetensors * st)
{
  GPtrArray *kv = g_ptr_array_new ();

  for (size_t i = 0; i < wsi_safetensors_n_metadata (st); i++) {
    const char *key = wsi_safetensors_metadata_key (st, i);
    g_ptr_array_add (kv, (gpointer) key);
    g_ptr_array_add (kv, (gpointer) wsi_safetensors_metadata (st, key));
  }
  g_ptr_array_add (kv, NULL);
  return kv;
}

WsiTrainer *
wsi_trainer_new_from_file (const char *path, const WsiTrainConfig * cfg,
    int resume, char *err, size_t errlen)
{
  WsiSafetensors *st = wsi_safetensors_open (path, err, errlen);
  GPtrArray *kv;
  WsiTrainer *t = NULL;
  WsiTrainTask task;

  if (!st)
    return NULL;
  if (wsi_train_config_check (cfg, err, errlen) != 0
      || wsi_safetensors_check_model_metadata (st, err, errlen) != 0) {
    wsi_safetensors_free (st);
    return NULL;
  }
  task = g_strcmp0 (wsi_safetensors_metadata (st, "train_task"),
      "pretrain") == 0 ? WSI_TASK_PRETRAIN : WSI_TASK_SEGMENT;
  kv = metadata_pairs (st);
  t = seg_trainer_new ((const char *const *) kv->pdata, task, cfg, err,
      errlen);
  g_ptr_array_unref (kv);
  wsi_safetensors_free (st);
  if (t && wsi_trainer_load (t, path, resume, err, errlen) != 0)
    g_clear_pointer (&t, wsi_trainer_free);
  return t;
}

WsiTrainer *
wsi_trainer_new_pretrain_from_file (const char *path,
    const WsiTrainConfig * cfg, uint64_t seed, char *err, size_t errlen)
{
  WsiSafetensors *st = wsi_safetensors_open (path, err, errlen);
  GPtrArray *kv;
  WsiTrainer *t;
  WsiInitFromReport rep;

  if (!st)
    return NULL;
  kv = metadata_pairs (st);
  t = wsi_trainer_new ((const char *const *) kv->pdata, WSI_TASK_PRETRAIN,
      cfg, seed, err, errlen);
  g_ptr_array_unref (kv);
  wsi_safetensors_free (st);
  /* start from the model file's encoder weights */
  if (t && wsi_trainer_init_from (t, path, NULL, &rep, err, errlen) != 0)
    g_clear_pointer (&t, wsi_trainer_free);
  return t;
}

/* ------------------------------------------------- segmentation calls */

int
wsi_trainer_step (WsiTrainer * t, const float *input, int n, int h, int w,
    const uint8_t * labels, WsiStepResult * res, char *err, size_t errlen)
{
  WsiSegmentBatch b = { input, n, h, w, labels };
  WsiStepResult r;

  if (wsi_trainer_step_model (t, &b, &r, err, errlen) != 0)
    return -1;
  r.ce = wsi_loss_values_get (&r.losses, "ce");
  r.dice = wsi_loss_values_get (&r.losses, "dice");
  if (res)
    *res = r;
  return 0;
}

int
wsi_trainer_evaluate (WsiTrainer * t, const float *input, int n, int h,
    int w, const uint8_t * labels, WsiLossResult * res, char *err,
    size_t errlen)
{
  WsiSegmentBatch b = { input, n, h, w, labels };
  SegModel *m = seg_model_of (t);

  if (!m) {
    snprintf (err, errlen, "not a segmentation trainer");
    return -1;
  }
  if (wsi_trainer_evaluate_model (t, &b, NULL, err, errlen) != 0)
    return -1;
  if (res)
    *res = m->last;
  return 0;
}

const float *
wsi_trainer_output (const WsiTrainer * t, int *channels)
{
  SegModel *m = seg_model_of (t);

  if (channels)
    *channels = m ? m->out_channels : 0;
  return m ? m->out : NULL;
}

WsiTrainTask
wsi_trainer_task (const WsiTrainer * t)
{
  SegModel *m = seg_model_of (t);

  return m ? m->task : WSI_TASK_SEGMENT;
}
