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
