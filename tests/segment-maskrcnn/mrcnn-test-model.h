/* A small random Mask R-CNN model file for the segment-maskrcnn tests
 * (harness and conformance): ResNet-18 backbone, narrow FPN and heads,
 * classes background / nucleus / other, rescale01, written by the model
 * saver of models/maskrcnn (no PyTorch needed). Header-only. */
#pragma once

#include <glib.h>

#include "wsimrcnn-file.h"

/* Writes the model to @path; @n_classes >= 2. FALSE + @err on failure. */
static inline gboolean
mrcnn_test_model_write (const gchar * path, gint n_classes, guint64 seed,
    gchar * err, gsize errlen)
{
  static gchar *names[] = { (gchar *) "background", (gchar *) "nucleus",
    (gchar *) "other", (gchar *) "extra"
  };
  static guint8 colors[][3] = { {0, 0, 0}, {0, 200, 0}, {200, 0, 0},
  {0, 0, 200}
  };
  WsiMrcnnModelInfo mi;
  wsimrcnn *m;
  gchar **meta;
  gint rc;

  g_return_val_if_fail (n_classes >= 2 && n_classes <= 4, FALSE);
  wsimrcnn_model_info_defaults (&mi);
  mi.cfg.spec.n_classes = n_classes;
  mi.cfg.spec.fpn_channels = 32;
  mi.cfg.spec.representation = 64;
  mi.cfg.spec.mask_layers = 2;
  mi.cfg.spec.mask_width = 16;
  mi.cfg.det.score_thresh = 0.0f;
  mi.cfg.det.detections_per_img = 50;
  mi.info.n_classes = n_classes;
  mi.info.class_names = names;
  mi.info.class_colors = colors;
  mi.info.preproc = WSI_PREPROC_RESCALE01;
  mi.info.mpp = 0.5;
  mi.info.patch_size = 64;
  m = wsimrcnn_new (&mi.cfg, err, errlen);
  if (!m)
    return FALSE;
  for (gint i = 0; i < 3; i++)
    wsinn_net_init_params (wsimrcnn_net (m, i), seed + (guint64) i);
  meta = wsimrcnn_metadata_new (&mi, NULL);
  rc = wsimrcnn_save (m, path, (const char *const *) meta, NULL, 0, err,
      errlen);
  g_strfreev (meta);
  wsimrcnn_free (m);
  return rc == 0;
}
