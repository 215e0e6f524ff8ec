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
