/* Mask R-CNN inference: features net -> RPN proposals -> multi-scale
 * RoIAlign -> box head -> detections -> RoIAlign -> mask head -> masks. */
#include "wsimaskrcnn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct _wsimrcnn
{
  wsimrcnn_config cfg;
  wsinn_net *nets[3];
};

void
wsimrcnn_config_init (wsimrcnn_config * cfg)
{
  memset (cfg, 0, sizeof *cfg);
  wsinn_maskrcnn_spec_init (&cfg->spec);
  for (int l = 0; l < WSINN_FPN_LEVELS; l++)
    cfg->anchor_sizes[l] = 32.0f * (float) (1 << l);
  cfg->ratios[0] = 0.5f;
  cfg->ratios[1] = 1.0f;
  cfg->ratios[2] = 2.0f;
  cfg->rpn.pre_nms_top_n = 1000;
  cfg->rpn.post_nms_top_n = 1000;
  cfg->rpn.nms_thresh = 0.7;
  cfg->rpn.score_thresh = 0.0f;
  cfg->rpn.min_size = 1e-3f;
  cfg->det.score_thresh = 0.05f;
  cfg->det.nms_thresh = 0.5;
  cfg->det.detections_per_img = 100;
  cfg->det.min_size = 1e-2f;
  cfg->box_sampling = cfg->mask_sampling = 2;
  cfg->mask_pool = 14;
}

void
wsimrcnn_free (wsimrcnn * m)
{
  if (!m)
    return;
  for (int i = 0; i < 3; i++)
    wsinn_net_free (m->nets[i]);
  free (m);
}

wsimrcnn *
wsimrcnn_new (const wsimrcnn_config * cfg, char *err, size_t errlen)
{
  if (cfg->spec.n_anchors < 1 || cfg->spec.n_anchors > 3) {
    snprintf (err, errlen, "Mask R-CNN: 1..3 anchor ratios per level");
    return NULL;
  }
  wsimrcnn *m = calloc (1, sizeof *m);
  if (!m) {
    snprintf (err, errlen, "out of memory");
    return NULL;
  }
  m->cfg = *cfg;
  if (!(m->nets[0] = wsinn_maskrcnn_features (&cfg->spec, err, errlen))
      || !(m->nets[1] = wsinn_maskrcnn_box_head (&cfg->spec, err, errlen))
      || !(m->nets[2] = wsinn_maskrcnn_mask_head (&cfg->spec, err, errlen))) {
    wsimrcnn_free (m);
    return NULL;
  }
  return m;
}

wsinn_net *
wsimrcnn_net (wsimrcnn * m, int which)
{
  return which >= 0 && which < 3 ? m->nets[which] : NULL;
}

/* [k, c, p, p] -> [k, p, p, c] */
static void
to_nhwc (const float *src, int k, int c, int p, float *dst)
{
  for (int r = 0; r < k; r++)
    for (int ch = 0; ch < c; ch++)
      for (int i = 0; i < p * p; i++)
        dst[((size_t) r * p * p + i) * c + ch] =
            src[((size_t) r * c + ch) * p * p + i];
}

#define NOUT (3 * WSINN_FPN_LEVELS)

int
wsimrcnn_detect (wsimrcnn * m, const float *image, int h, int w,
    float *boxes, float *scores, int32_t * labels, float *masks,
    float *image_masks, char *err, size_t errlen)
{
  const wsimrcnn_config *cfg = &m->cfg;
  const int L = WSINN_FPN_LEVELS, A = cfg->spec.n_anchors;
  const int C = cfg->spec.fpn_channels, nc = cfg->spec.n_classes;
  float *outs[NOUT] = { 0 };
  int oh[NOUT], ow[NOUT], oc[NOUT], level_sizes[WSINN_FPN_LEVELS];
  float *obj = NULL, *del = NULL, *anchors = NULL, *prop = NULL,
      *pscore = NULL, *rois = NULL, *pooled = NULL, *pin = NULL,
      *cls = NULL, *reg = NULL, *mlog = NULL;
  int rc = -1, n_anchor = 0, nd = 0;

  for (int k = 0; k < NOUT; k++) {
    if (wsinn_net_output_shape_at (m->nets[0], k, 1, h, w, &oc[k], &oh[k],
            &ow[k], err, errlen) < 0)
      goto out;
    outs[k] = malloc ((size_t) oc[k] * oh[k] * ow[k] * sizeof (float));
    if (!outs[k])
      goto oom;
  }
  if (wsinn_net_forward_outputs (m->nets[0], image, 1, h, w, outs, err,
          errlen) < 0)
    goto out;
  /* anchors and head outputs of all levels, (y, x, anchor) order */
  for (int l = 0; l < L; l++)
    n_anchor += level_sizes[l] = oh[l] * ow[l] * A;
  obj = malloc ((size_t) n_anchor * sizeof (float));
  del = malloc ((size_t) n_anchor * 4 * sizeof (float));
  anchors = malloc ((size_t) n_anchor * 4 * sizeof (float));
  if (!obj || !del || !anchors)
    goto oom;
  for (int l = 0, off = 0; l < L; l++) {
    float cell[3 * 4];
    wsidet_cell_anchors (&cfg->anchor_sizes[l], 1, cfg->ratios, A, cell);
    wsidet_grid_anchors (cell, A, oh[l], ow[l],
        wsidet_anchor_stride (h, oh[l]), wsidet_anchor_stride (w, ow[l]),
        anchors + (size_t) off * 4);
    memcpy (obj + off, outs[L + l], (size_t) level_sizes[l] * sizeof (float));
    memcpy (del + (size_t) off * 4, outs[2 * L + l],
        (size_t) level_sizes[l] * 4 * sizeof (float));
    off += level_sizes[l];
  }
  int np_max = cfg->rpn.post_nms_top_n;
  prop = malloc ((size_t) np_max * 4 * sizeof (float));
  pscore = malloc ((size_t) np_max * sizeof (float));
  if (!prop || !pscore)
    goto oom;
  int np = wsidet_rpn_proposals (&cfg->rpn, obj, del, anchors, level_sizes,
      L, h, w, prop, pscore);
  if (np < 0) {
    snprintf (err, errlen, "Mask R-CNN: RPN proposals failed");
    goto out;
  }
  if (np == 0) {
    rc = 0;
    goto out;
  }
  /* box head on the proposals (levels '0'..'3') */
  WsidetFeatureLevel lv[4];
  for (int l = 0; l < 4; l++) {
    memset (&lv[l], 0, sizeof lv[l]);
    lv[l].data = outs[l];
    lv[l].h = oh[l];
    lv[l].w = ow[l];
    lv[l].scale = wsidet_infer_scale (oh[l], h);
    lv[l].nhwc = 1;
  }
  WsidetLevelMapper mapper;
  wsidet_level_mapper_init (&mapper, lv[0].scale, lv[3].scale);
  int bp = cfg->spec.box_pool, mp = cfg->mask_pool;
  int kmax = np > cfg->det.detections_per_img ? np :
      cfg->det.detections_per_img;
  size_t per = (size_t) C * (bp > mp ? bp * bp : mp * mp);
  rois = malloc ((size_t) kmax * 5 * sizeof (float));
  pooled = malloc ((size_t) kmax * per * sizeof (float));
  pin = malloc ((size_t) kmax * per * sizeof (float));
  cls = malloc ((size_t) np * nc * sizeof (float));
  reg = malloc ((size_t) np * nc * 4 * sizeof (float));
  if (!rois || !pooled || !pin || !cls || !reg)
    goto oom;
  for (int i = 0; i < np; i++) {
    rois[i * 5] = 0;
    memcpy (rois + i * 5 + 1, prop + i * 4, 4 * sizeof (float));
  }
  if (wsidet_multiscale_roi_align_forward (lv, 4, 1, C, &mapper, bp, bp,
          cfg->box_sampling, rois, np, pooled, NULL) < 0) {
    snprintf (err, errlen, "Mask R-CNN: RoIAlign failed");
    goto out;
  }
  to_nhwc (pooled, np, C, bp, pin);
  float *hout[2] = { cls, reg };
  if (wsinn_net_forward_outputs (m->nets[1], pin, np, bp, bp, hout, err,
          errlen) < 0)
    goto out;
  WsidetBoxCoder bc;
  wsidet_box_coder_init (&bc, 10, 10, 5, 5);
  nd = wsidet_postprocess_detections (&cfg->det, &bc, cls, reg, prop, np, nc,
      h, w, boxes, scores, labels);
  if (nd < 0) {
    snprintf (err, errlen, "Mask R-CNN: post-processing failed");
    goto out;
  }
  if (nd == 0) {
    rc = 0;
    goto out;
  }
  /* mask head on the detections */
  for (int i = 0; i < nd; i++) {
    rois[i * 5] = 0;
    memcpy (rois + i * 5 + 1, boxes + i * 4, 4 * sizeof (float));
  }
  if (wsidet_multiscale_roi_align_forward (lv, 4, 1, C, &mapper, mp, mp,
          cfg->mask_sampling, rois, nd, pooled, NULL) < 0) {
    snprintf (err, errlen, "Mask R-CNN: RoIAlign failed");
    goto out;
  }
  to_nhwc (pooled, nd, C, mp, pin);
  int ms = 2 * mp;
  mlog = malloc ((size_t) nd * ms * ms * nc * sizeof (float));
  if (!mlog)
    goto oom;
  if (wsinn_net_forward (m->nets[2], pin, nd, mp, mp, mlog, err, errlen) < 0)
    goto out;
  for (int i = 0; i < nd; i++)
    for (int j = 0; j < ms * ms; j++) {
      float x = mlog[((size_t) i * ms * ms + j) * nc + labels[i]];
      masks[(size_t) i * ms * ms + j] = 1.0f / (1.0f + expf (-x));
    }
  if (image_masks && wsidet_paste_masks (masks, boxes, nd, ms, 1, h, w,
          image_masks) < 0) {
    snprintf (err, errlen, "Mask R-CNN: mask pasting failed");
    goto out;
  }
  rc = nd;
  goto out;
oom:
  snprintf (err, errlen, "out of memory");
out:
  for (int k = 0; k < NOUT; k++)
    free (outs[k]);
  free (obj);
  free (del);
  free (anchors);
  free (prop);
  free (pscore);
  free (rois);
  free (pooled);
  free (pin);
  free (cls);
  free (reg);
  free (mlog);
  return rc;
}
