/* ctypes module for the Mask R-CNN parity test: libwsinn linked whole plus
 * a loader that fills a net's parameters from a model file by name (the
 * file may hold other nets' tensors too: one torchvision state_dict). */
#include "wsinn.h"
#include "safetensors.h"

#include <stdio.h>

int mr_load (wsinn_net * net, const char *path, char *err, size_t errlen);

int
mr_load (wsinn_net * net, const char *path, char *err, size_t errlen)
{
  WsiSafetensors *st = wsi_safetensors_open (path, err, errlen);
  if (!st)
    return -1;
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < wsinn_net_n_params (net); i++) {
    wsinn_param *p = wsinn_net_param (net, i);
    const WsiTensor *t = wsi_safetensors_find (st, p->name);
    const float *d = t ? wsi_safetensors_f32 (st, t, err, errlen) : NULL;
    if (!t)
      snprintf (err, errlen, "%s: no tensor %s", path, p->name);
    rc = d ? wsinn_net_set_param (net, p->name, d, t->n_dims, t->shape, err,
        errlen) : -1;
  }
  wsi_safetensors_free (st);
  return rc;
}

/* ---- model files (models/maskrcnn/wsimrcnn-file.h), for test_modelfile.py */
#include "wsimrcnn-file.h"

#include <glib.h>
#include <stdlib.h>

typedef struct
{
  wsimrcnn *m;
  WsiMrcnnModelInfo mi;
} MrFile;

MrFile *mr_file_load (const char *path, char *err, size_t errlen);
wsimrcnn *mr_file_model (MrFile * f);
int mr_file_max_detections (MrFile * f);
int mr_file_mask_size (MrFile * f);
float mr_file_mask_threshold (MrFile * f);
int mr_file_save (MrFile * f, const char *path, char *err, size_t errlen);
void mr_file_free (MrFile * f);
int mr_info_load (const char *path, char *err, size_t errlen);

MrFile *
mr_file_load (const char *path, char *err, size_t errlen)
{
  MrFile *f = calloc (1, sizeof *f);
  if (f && !(f->m = wsimrcnn_load (path, &f->mi, err, errlen))) {
    free (f);
    f = NULL;
  }
  return f;
}

wsimrcnn *
mr_file_model (MrFile * f)
{
  return f->m;
}

int
mr_file_max_detections (MrFile * f)
{
  return f->mi.cfg.det.detections_per_img;
}

int
mr_file_mask_size (MrFile * f)
{
  return 2 * f->mi.cfg.mask_pool;
}

float
mr_file_mask_threshold (MrFile * f)
{
  return f->mi.mask_threshold;
}

/* Saved with the metadata it was loaded with, plus one extra key. */
int
mr_file_save (MrFile * f, const char *path, char *err, size_t errlen)
{
  const char *extra[] = { "description", "saved by wsimrcnn_save", NULL };
  char **kv = wsimrcnn_metadata_new (&f->mi, extra);
  int rc = wsimrcnn_save (f->m, path, (const char *const *) kv, NULL, 0, err,
      errlen);
  g_strfreev (kv);
  return rc;
}

void
mr_file_free (MrFile * f)
{
  if (!f)
    return;
  wsimrcnn_free (f->m);
  wsimrcnn_model_info_clear (&f->mi);
  free (f);
}

/* Metadata only: 0 or -1 + @err. */
int
mr_info_load (const char *path, char *err, size_t errlen)
{
  WsiMrcnnModelInfo mi;
  int rc = wsimrcnn_model_info_load (path, &mi, err, errlen);
  if (rc == 0)
    wsimrcnn_model_info_clear (&mi);
  return rc;
}

/* ---- the trainer adapter (models/maskrcnn/wsimrcnn-train.h), for
 * test_trainer.py: SGD @lr momentum 0.9; sampler batches @rpn_batch /
 * @box_batch (0: the file's). */
#include "wsimrcnn-train.h"

WsiTrainer *mr_trainer_new (const char *path, int resume, int rpn_batch,
    int box_batch, double lr, char *err, size_t errlen);
int mr_trainer_step (WsiTrainer * t, const float *images, int n, int h,
    int w, const uint16_t * inst, double *losses, char *err, size_t errlen);
int mr_trainer_save (WsiTrainer * t, const char *path, char *err,
    size_t errlen);
void mr_trainer_free (WsiTrainer * t);

WsiTrainer *
mr_trainer_new (const char *path, int resume, int rpn_batch, int box_batch,
    double lr, char *err, size_t errlen)
{
  WsiTrainConfig cfg;
  WsiMrcnnModelInfo mi;
  wsi_train_config_init (&cfg);
  cfg.lr = lr;
  if (wsimrcnn_model_info_load (path, &mi, err, errlen) != 0)
    return NULL;
  if (rpn_batch > 0)
    mi.cfg.rpn_batch = rpn_batch;
  if (box_batch > 0)
    mi.cfg.box_batch = box_batch;
  wsimrcnn *m = wsimrcnn_new (&mi.cfg, err, errlen);
  WsiTrainer *t = m ? wsimrcnn_trainer_new (m, &mi, &cfg, 11, err, errlen) :
      NULL;
  wsimrcnn_model_info_clear (&mi);
  if (t && wsi_trainer_load (t, path, resume, err, errlen) != 0) {
    wsi_trainer_free (t);
    t = NULL;
  }
  return t;
}

/* One step on n images with their instance label patches (n x h x w):
 * targets through wsimrcnn_targets_from_labels. @losses: the 5 parts and
 * the total. */
int
mr_trainer_step (WsiTrainer * t, const float *images, int n, int h, int w,
    const uint16_t * inst, double *losses, char *err, size_t errlen)
{
  WsiMrcnnTargets *tg = calloc ((size_t) n, sizeof *tg);
  WsiStepResult r;
  int rc = 0;
  for (int i = 0; rc == 0 && i < n; i++)
    rc = wsimrcnn_targets_from_labels (inst + (size_t) i * h * w,
        (size_t) w * 2, w, h, NULL, 0, 2, WSIMRCNN_INSTANCE_IGNORE, 256, 1,
        &tg[i], err, errlen);
  WsiMrcnnBatch b = { images, n, h, w, tg };
  if (rc == 0)
    rc = wsi_trainer_step_model (t, &b, &r, err, errlen);
  if (rc == 0) {
    for (int i = 0; i < WSIMRCNN_N_LOSSES; i++)
      losses[i] = wsi_loss_values_get (&r.losses, wsimrcnn_loss_names[i]);
    losses[WSIMRCNN_N_LOSSES] = r.loss;
  }
  for (int i = 0; i < n; i++)
    wsimrcnn_targets_clear (&tg[i]);
  free (tg);
  return rc;
}

int
mr_trainer_save (WsiTrainer * t, const char *path, char *err, size_t errlen)
{
  return wsi_trainer_save (t, path, err, errlen);
}

void
mr_trainer_free (WsiTrainer * t)
{
  wsi_trainer_free (t);
}
