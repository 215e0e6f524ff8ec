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
  WsidetRng rng;
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
  cfg->rpn_train = cfg->rpn;
  cfg->rpn_train.pre_nms_top_n = cfg->rpn_train.post_nms_top_n = 2000;
  cfg->rpn_fg_iou = 0.7f;
  cfg->rpn_bg_iou = 0.3f;
  cfg->rpn_batch = 256;
  cfg->rpn_pos_fraction = 0.5;
  cfg->box_fg_iou = cfg->box_bg_iou = 0.5f;
  cfg->box_batch = 512;
  cfg->box_pos_fraction = 0.25;
  cfg->box_loss = WSIDET_BOX_LOSS_SMOOTH_L1;
  cfg->beta = 1.0f / 9.0f;
  cfg->seed = 0;
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
  wsidet_rng_seed (&m->rng, cfg->seed);
  if (!(m->nets[0] = wsinn_maskrcnn_features (&cfg->spec, err, errlen))
      || !(m->nets[1] = wsinn_maskrcnn_box_head (&cfg->spec, err, errlen))
      || !(m->nets[2] = wsinn_maskrcnn_mask_head (&cfg->spec, err, errlen))) {
    wsimrcnn_free (m);
    return NULL;
  }
  return m;
}

const wsimrcnn_config *
wsimrcnn_get_config (const wsimrcnn * m)
{
  return &m->cfg;
}

int
wsimrcnn_set_detection (wsimrcnn * m, float score_thresh, double nms_iou,
    int max_detections, char *err, size_t errlen)
{
  if (!(score_thresh >= 0 && score_thresh <= 1) || !(nms_iou > 0
          && nms_iou <= 1) || max_detections < 1 || max_detections > 100000) {
    snprintf (err, errlen, "Mask R-CNN: score threshold %g not in [0, 1], "
        "NMS IoU %g not in (0, 1] or %d detections not in 1..100000",
        score_thresh, nms_iou, max_detections);
    return -1;
  }
  m->cfg.det.score_thresh = score_thresh;
  m->cfg.det.nms_thresh = nms_iou;
  m->cfg.det.detections_per_img = max_detections;
  return 0;
}

void
wsimrcnn_set_seed (wsimrcnn * m, uint64_t seed)
{
  m->cfg.seed = seed;
  wsidet_rng_seed (&m->rng, seed);
}

wsinn_net *
wsimrcnn_net (wsimrcnn * m, int which)
{
  return which >= 0 && which < 3 ? m->nets[which] : NULL;
}

/* [k, p, p, c] -> [k, c, p, p] */
/* The four FPN levels '0'..'3' the RoI heads pool from (NHWC engine
 * outputs), with their gradients when @douts is given, and their mapper. */
static void
roi_levels (WsidetFeatureLevel * lv, WsidetLevelMapper * mapper,
    float *const *outs, float *const *douts, const int *oh, const int *ow,
    int h)
{
  for (int l = 0; l < 4; l++) {
    memset (&lv[l], 0, sizeof lv[l]);
    lv[l].data = outs[l];
    lv[l].grad = douts ? douts[l] : NULL;
    lv[l].h = oh[l];
    lv[l].w = ow[l];
    lv[l].scale = wsidet_infer_scale (oh[l], h);
    lv[l].nhwc = 1;
  }
  wsidet_level_mapper_init (mapper, lv[0].scale, lv[3].scale);
}

static void
to_nchw (const float *src, int k, int c, int p, float *dst)
{
  for (int r = 0; r < k; r++)
    for (int ch = 0; ch < c; ch++)
      for (int i = 0; i < p * p; i++)
        dst[((size_t) r * c + ch) * p * p + i] =
            src[((size_t) r * p * p + i) * c + ch];
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
wsimrcnn_detect_batch (wsimrcnn * m, const float *images, int n, int h,
    int w, float *boxes, float *scores, int32_t * labels, float *masks,
    float *image_masks, int *counts, char *err, size_t errlen)
{
  const wsimrcnn_config *cfg = &m->cfg;
  const int L = WSINN_FPN_LEVELS, A = cfg->spec.n_anchors;
  const int C = cfg->spec.fpn_channels, nc = cfg->spec.n_classes;
  const int D = cfg->det.detections_per_img, bp = cfg->spec.box_pool;
  const int mp = cfg->mask_pool, ms = 2 * mp;
  float *outs[NOUT] = { 0 };
  int oh[NOUT], ow[NOUT], oc[NOUT], level_sizes[WSINN_FPN_LEVELS];
  float *obj = NULL, *del = NULL, *anchors = NULL, *prop = NULL,
      *pscore = NULL, *rois = NULL, *pooled = NULL, *pin = NULL,
      *cls = NULL, *reg = NULL, *mlog = NULL;
  int *nprop = NULL;
  int rc = -1, n_anchor = 0;

  if (n < 1 || !images || !boxes || !scores || !labels || !masks || !counts) {
    snprintf (err, errlen, "Mask R-CNN: bad arguments");
    return -1;
  }
  memset (counts, 0, (size_t) n * sizeof *counts);
  for (int i = 0; i < 3; i++)
    wsinn_net_set_training (m->nets[i], 0);
  for (int k = 0; k < NOUT; k++) {
    if (wsinn_net_output_shape_at (m->nets[0], k, n, h, w, &oc[k], &oh[k],
            &ow[k], err, errlen) < 0)
      goto out;
    outs[k] = malloc ((size_t) n * oc[k] * oh[k] * ow[k] * sizeof (float));
    if (!outs[k])
      goto oom;
  }
  if (wsinn_net_forward_outputs (m->nets[0], images, n, h, w, outs, err,
          errlen) < 0)
    goto out;
  /* anchors (the same for every image) and head outputs, (y, x, anchor) */
  for (int l = 0; l < L; l++)
    n_anchor += level_sizes[l] = oh[l] * ow[l] * A;
  int P = cfg->rpn.post_nms_top_n;
  obj = malloc ((size_t) n_anchor * sizeof (float));
  del = malloc ((size_t) n_anchor * 4 * sizeof (float));
  anchors = malloc ((size_t) n_anchor * 4 * sizeof (float));
  prop = malloc ((size_t) n * P * 4 * sizeof (float));
  pscore = malloc ((size_t) P * sizeof (float));
  nprop = calloc ((size_t) n, sizeof *nprop);
  if (!obj || !del || !anchors || !prop || !pscore || !nprop)
    goto oom;
  for (int l = 0, off = 0; l < L; l++) {
    float cell[3 * 4];
    wsidet_cell_anchors (&cfg->anchor_sizes[l], 1, cfg->ratios, A, cell);
    wsidet_grid_anchors (cell, A, oh[l], ow[l],
        wsidet_anchor_stride (h, oh[l]), wsidet_anchor_stride (w, ow[l]),
        anchors + (size_t) off * 4);
    off += level_sizes[l];
  }
  int total = 0;
  for (int b = 0; b < n; b++) {
    for (int l = 0, off = 0; l < L; l++) {
      size_t ls = (size_t) level_sizes[l];
      memcpy (obj + off, outs[L + l] + b * ls, ls * sizeof (float));
      memcpy (del + (size_t) off * 4, outs[2 * L + l] + b * ls * 4,
          ls * 4 * sizeof (float));
      off += level_sizes[l];
    }
    nprop[b] = wsidet_rpn_proposals (&cfg->rpn, obj, del, anchors,
        level_sizes, L, h, w, prop + (size_t) b * P * 4, pscore);
    if (nprop[b] < 0) {
      snprintf (err, errlen, "Mask R-CNN: RPN proposals failed");
      goto out;
    }
    total += nprop[b];
  }
  if (total == 0) {
    rc = 0;
    goto out;
  }
  /* box head on the proposals of all images (levels '0'..'3') */
  WsidetFeatureLevel lv[4];
  WsidetLevelMapper mapper;
  roi_levels (lv, &mapper, outs, NULL, oh, ow, h);
  int kmax = total > n * D ? total : n * D;
  size_t per = (size_t) C * (bp > mp ? bp * bp : mp * mp);
  rois = malloc ((size_t) kmax * 5 * sizeof (float));
  pooled = malloc ((size_t) kmax * per * sizeof (float));
  pin = malloc ((size_t) kmax * per * sizeof (float));
  cls = malloc ((size_t) total * nc * sizeof (float));
  reg = malloc ((size_t) total * nc * 4 * sizeof (float));
  if (!rois || !pooled || !pin || !cls || !reg)
    goto oom;
  for (int b = 0, r = 0; b < n; b++)
    for (int i = 0; i < nprop[b]; i++, r++) {
      rois[r * 5] = (float) b;
      memcpy (rois + r * 5 + 1, prop + ((size_t) b * P + i) * 4,
          4 * sizeof (float));
    }
  if (wsidet_multiscale_roi_align_forward (lv, 4, n, C, &mapper, bp, bp,
          cfg->box_sampling, rois, total, pooled, NULL) < 0) {
    snprintf (err, errlen, "Mask R-CNN: RoIAlign failed");
    goto out;
  }
  to_nhwc (pooled, total, C, bp, pin);
  float *hout[2] = { cls, reg };
  if (wsinn_net_forward_outputs (m->nets[1], pin, total, bp, bp, hout, err,
          errlen) < 0)
    goto out;
  WsidetBoxCoder bc;
  wsidet_box_coder_init (&bc, 10, 10, 5, 5);
  int nd = 0;
  for (int b = 0, r = 0; b < n; b++) {
    counts[b] = nprop[b] ? wsidet_postprocess_detections (&cfg->det, &bc,
        cls + (size_t) r * nc, reg + (size_t) r * nc * 4,
        prop + (size_t) b * P * 4, nprop[b], nc, h, w,
        boxes + (size_t) b * D * 4, scores + (size_t) b * D,
        labels + (size_t) b * D) : 0;
    if (counts[b] < 0) {
      snprintf (err, errlen, "Mask R-CNN: post-processing failed");
      goto out;
    }
    for (int i = 0; i < counts[b]; i++, nd++) {
      rois[nd * 5] = (float) b;
      memcpy (rois + nd * 5 + 1, boxes + ((size_t) b * D + i) * 4,
          4 * sizeof (float));
    }
    r += nprop[b];
  }
  if (nd == 0) {
    rc = 0;
    goto out;
  }
  /* mask head on the detections of all images */
  if (wsidet_multiscale_roi_align_forward (lv, 4, n, C, &mapper, mp, mp,
          cfg->mask_sampling, rois, nd, pooled, NULL) < 0) {
    snprintf (err, errlen, "Mask R-CNN: RoIAlign failed");
    goto out;
  }
  to_nhwc (pooled, nd, C, mp, pin);
  mlog = malloc ((size_t) nd * ms * ms * nc * sizeof (float));
  if (!mlog)
    goto oom;
  if (wsinn_net_forward (m->nets[2], pin, nd, mp, mp, mlog, err, errlen) < 0)
    goto out;
  for (int b = 0, r = 0; b < n; b++)
    for (int i = 0; i < counts[b]; i++, r++) {
      int lab = labels[(size_t) b * D + i];
      float *dst = masks + ((size_t) b * D + i) * ms * ms;
      for (int j = 0; j < ms * ms; j++) {
        float x = mlog[((size_t) r * ms * ms + j) * nc + lab];
        dst[j] = 1.0f / (1.0f + expf (-x));
      }
    }
  for (int b = 0; image_masks && b < n; b++)
    if (counts[b] && wsidet_paste_masks (masks + (size_t) b * D * ms * ms,
            boxes + (size_t) b * D * 4, counts[b], ms, 1, h, w,
            image_masks + (size_t) b * D * h * w) < 0) {
      snprintf (err, errlen, "Mask R-CNN: mask pasting failed");
      goto out;
    }
  rc = 0;
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
  free (nprop);
  free (rois);
  free (pooled);
  free (pin);
  free (cls);
  free (reg);
  free (mlog);
  return rc;
}

int
wsimrcnn_detect (wsimrcnn * m, const float *image, int h, int w,
    float *boxes, float *scores, int32_t * labels, float *masks,
    float *image_masks, char *err, size_t errlen)
{
  int count = 0;
  if (wsimrcnn_detect_batch (m, image, 1, h, w, boxes, scores, labels, masks,
          image_masks, &count, err, errlen) < 0)
    return -1;
  return count;
}

/* ------------------------------------------------------------- training */

#define FREE_ALL(...) do { void *v_[] = { __VA_ARGS__ }; \
    for (size_t i_ = 0; i_ < sizeof v_ / sizeof v_[0]; i_++) free (v_[i_]); \
  } while (0)

int
wsimrcnn_train_step (wsimrcnn * m, const float *image, int h, int w,
    const float *gt_boxes, const int32_t * gt_labels, const float *gt_masks,
    int n_gt, wsimrcnn_losses * losses, char *err, size_t errlen)
{
  const wsimrcnn_config *cfg = &m->cfg;
  const int L = WSINN_FPN_LEVELS, A = cfg->spec.n_anchors;
  const int C = cfg->spec.fpn_channels, nc = cfg->spec.n_classes;
  const int bp = cfg->spec.box_pool, mp = cfg->mask_pool, ms = 2 * mp;
  float *outs[NOUT] = { 0 }, *douts[NOUT] = { 0 };
  int oh[NOUT], ow[NOUT], oc[NOUT], level_sizes[WSINN_FPN_LEVELS];
  float *obj = NULL, *del = NULL, *anchors = NULL, *lab = NULL, *tgt = NULL,
      *gobj = NULL, *gdel = NULL, *prop = NULL, *pscore = NULL,
      *srois = NULL, *stgt = NULL, *rois = NULL, *pooled = NULL, *pin = NULL,
      *cls = NULL, *reg = NULL, *gcls = NULL, *greg = NULL, *gin = NULL,
      *mlog = NULL, *mtgt = NULL, *glog = NULL, *mboxes = NULL;
  int32_t *pos_idx = NULL, *neg_idx = NULL, *slab = NULL, *smatch = NULL,
      *mlab = NULL, *mmatch = NULL;
  int rc = -1, n_anchor = 0;
  memset (losses, 0, sizeof *losses);
  if (n_gt < 0 || (n_gt && (!gt_boxes || !gt_labels || !gt_masks))) {
    snprintf (err, errlen, "Mask R-CNN: bad ground truth");
    return -1;
  }
  for (int i = 0; i < 3; i++)
    wsinn_net_set_training (m->nets[i], 1);

  /* features, training forward */
  for (int k = 0; k < NOUT; k++) {
    if (wsinn_net_output_shape_at (m->nets[0], k, 1, h, w, &oc[k], &oh[k],
            &ow[k], err, errlen) < 0)
      goto out;
    size_t sz = (size_t) oc[k] * oh[k] * ow[k];
    outs[k] = malloc (sz * sizeof (float));
    douts[k] = calloc (sz, sizeof (float));
    if (!outs[k] || !douts[k])
      goto oom;
  }
  if (wsinn_net_forward_outputs (m->nets[0], image, 1, h, w, outs, err,
          errlen) < 0)
    goto out;

  /* RPN: anchors, targets, sampling, loss */
  for (int l = 0; l < L; l++)
    n_anchor += level_sizes[l] = oh[l] * ow[l] * A;
  obj = malloc ((size_t) n_anchor * sizeof (float));
  del = malloc ((size_t) n_anchor * 4 * sizeof (float));
  anchors = malloc ((size_t) n_anchor * 4 * sizeof (float));
  lab = malloc ((size_t) n_anchor * sizeof (float));
  tgt = malloc ((size_t) n_anchor * 4 * sizeof (float));
  gobj = calloc ((size_t) n_anchor, sizeof (float));
  gdel = calloc ((size_t) n_anchor * 4, sizeof (float));
  pos_idx = malloc ((size_t) n_anchor * sizeof (int32_t));
  neg_idx = malloc ((size_t) n_anchor * sizeof (int32_t));
  int32_t *ilab = malloc ((size_t) n_anchor * sizeof (int32_t));
  if (!obj || !del || !anchors || !lab || !tgt || !gobj || !gdel || !pos_idx
      || !neg_idx || !ilab) {
    free (ilab);
    goto oom;
  }
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
  int npos = 0, nneg = 0;
  if (wsidet_rpn_targets (anchors, n_anchor, gt_boxes, n_gt, cfg->rpn_fg_iou,
          cfg->rpn_bg_iou, lab, tgt) < 0) {
    free (ilab);
    snprintf (err, errlen, "Mask R-CNN: RPN targets failed");
    goto out;
  }
  for (int i = 0; i < n_anchor; i++)
    ilab[i] = (int32_t) lab[i];
  wsidet_sample_pos_neg (ilab, n_anchor, cfg->rpn_batch,
      cfg->rpn_pos_fraction, &m->rng, NULL, NULL, pos_idx, &npos, neg_idx,
      &nneg);
  free (ilab);
  wsidet_rpn_loss (obj, del, lab, tgt, pos_idx, npos, neg_idx, nneg,
      cfg->box_loss, cfg->beta, &losses->rpn_objectness, &losses->rpn_box,
      gobj, gdel);
  for (int l = 0, off = 0; l < L; l++) {
    memcpy (douts[L + l], gobj + off, (size_t) level_sizes[l]
        * sizeof (float));
    memcpy (douts[2 * L + l], gdel + (size_t) off * 4,
        (size_t) level_sizes[l] * 4 * sizeof (float));
    off += level_sizes[l];
  }

  /* proposals (constants) and the box head's samples */
  int np_max = cfg->rpn_train.post_nms_top_n;
  prop = malloc ((size_t) np_max * 4 * sizeof (float));
  pscore = malloc ((size_t) np_max * sizeof (float));
  if (!prop || !pscore)
    goto oom;
  int np = wsidet_rpn_proposals (&cfg->rpn_train, obj, del, anchors,
      level_sizes, L, h, w, prop, pscore);
  if (np < 0) {
    snprintf (err, errlen, "Mask R-CNN: RPN proposals failed");
    goto out;
  }
  int smax = np + n_gt < cfg->box_batch ? np + n_gt : cfg->box_batch;
  WsidetBoxCoder bc;
  wsidet_box_coder_init (&bc, 10, 10, 5, 5);
  srois = malloc (((size_t) smax + 1) * 4 * sizeof (float));
  stgt = malloc (((size_t) smax + 1) * 4 * sizeof (float));
  slab = malloc (((size_t) smax + 1) * sizeof (int32_t));
  smatch = malloc (((size_t) smax + 1) * sizeof (int32_t));
  if (!srois || !stgt || !slab || !smatch)
    goto oom;
  int ns = wsidet_roi_targets (prop, np, gt_boxes, gt_labels, n_gt,
      cfg->box_fg_iou, cfg->box_bg_iou, cfg->box_batch, cfg->box_pos_fraction,
      &bc, &m->rng, srois, slab, smatch, stgt);
  if (ns < 0) {
    snprintf (err, errlen, "Mask R-CNN: RoI targets failed");
    goto out;
  }

  WsidetFeatureLevel lv[4];
  WsidetLevelMapper mapper;
  roi_levels (lv, &mapper, outs, douts, oh, ow, h);
  size_t per = (size_t) C * (bp > mp ? bp * bp : mp * mp);
  int kmax = ns > 0 ? ns : 1;
  rois = malloc ((size_t) kmax * 5 * sizeof (float));
  pooled = malloc ((size_t) kmax * per * sizeof (float));
  pin = malloc ((size_t) kmax * per * sizeof (float));
  gin = malloc ((size_t) kmax * per * sizeof (float));
  if (!rois || !pooled || !pin || !gin)
    goto oom;

  /* box head */
  if (ns > 0) {
    cls = malloc ((size_t) ns * nc * sizeof (float));
    reg = malloc ((size_t) ns * nc * 4 * sizeof (float));
    gcls = calloc ((size_t) ns * nc, sizeof (float));
    greg = calloc ((size_t) ns * nc * 4, sizeof (float));
    if (!cls || !reg || !gcls || !greg)
      goto oom;
    for (int i = 0; i < ns; i++) {
      rois[i * 5] = 0;
      memcpy (rois + i * 5 + 1, srois + i * 4, 4 * sizeof (float));
    }
    if (wsidet_multiscale_roi_align_forward (lv, 4, 1, C, &mapper, bp, bp,
            cfg->box_sampling, rois, ns, pooled, NULL) < 0)
      goto roi_fail;
    to_nhwc (pooled, ns, C, bp, pin);
    float *hout[2] = { cls, reg };
    if (wsinn_net_forward_outputs (m->nets[1], pin, ns, bp, bp, hout, err,
            errlen) < 0)
      goto out;
    wsidet_fastrcnn_loss (cls, reg, slab, stgt, ns, nc, cfg->box_loss,
        cfg->beta, &losses->classifier, &losses->box_reg, gcls, greg);
    const float *hd[2] = { gcls, greg };
    if (wsinn_net_backward_outputs (m->nets[1], hd, gin, err, errlen) < 0)
      goto out;
    to_nchw (gin, ns, C, bp, pooled);
    if (wsidet_multiscale_roi_align_backward (lv, 4, 1, C, &mapper, bp, bp,
            cfg->box_sampling, rois, ns, pooled) < 0)
      goto roi_fail;
  } else {
    for (size_t i = 0; i < wsinn_net_n_params (m->nets[1]); i++) {
      wsinn_param *p = wsinn_net_param (m->nets[1], i);
      memset (p->grad, 0, p->size * sizeof (float));
    }
  }

  /* mask head on the positive samples */
  int nm = 0;
  for (int i = 0; i < ns; i++)
    nm += slab[i] > 0;
  if (nm > 0) {
    mboxes = malloc ((size_t) nm * 4 * sizeof (float));
    mlab = malloc ((size_t) nm * sizeof (int32_t));
    mmatch = malloc ((size_t) nm * sizeof (int32_t));
    mlog = malloc ((size_t) nm * ms * ms * nc * sizeof (float));
    glog = calloc ((size_t) nm * ms * ms * nc, sizeof (float));
    mtgt = malloc ((size_t) nm * ms * ms * sizeof (float));
    float *lg = malloc ((size_t) nm * nc * ms * ms * sizeof (float));
    float *gl = calloc ((size_t) nm * nc * ms * ms, sizeof (float));
    if (!mboxes || !mlab || !mmatch || !mlog || !glog || !mtgt || !lg || !gl) {
      FREE_ALL (lg, gl);
      goto oom;
    }
    for (int i = 0, j = 0; i < ns; i++)
      if (slab[i] > 0) {
        memcpy (mboxes + j * 4, srois + i * 4, 4 * sizeof (float));
        mlab[j] = slab[i];
        mmatch[j] = smatch[i];
        rois[j * 5] = 0;
        memcpy (rois + j * 5 + 1, srois + i * 4, 4 * sizeof (float));
        j++;
      }
    if (wsidet_multiscale_roi_align_forward (lv, 4, 1, C, &mapper, mp, mp,
            cfg->mask_sampling, rois, nm, pooled, NULL) < 0) {
      FREE_ALL (lg, gl);
      goto roi_fail;
    }
    to_nhwc (pooled, nm, C, mp, pin);
    if (wsinn_net_forward (m->nets[2], pin, nm, mp, mp, mlog, err,
            errlen) < 0) {
      FREE_ALL (lg, gl);
      goto out;
    }
    wsidet_project_masks (gt_masks, n_gt, h, w, mboxes, mmatch, nm, ms, mtgt);
    to_nchw (mlog, nm, nc, ms, lg);     /* [k, ms, ms, nc] -> [k, nc, ms, ms] */
    losses->mask = wsidet_maskrcnn_loss (lg, mlab, mtgt, nm, nc, ms, gl);
    to_nhwc (gl, nm, nc, ms, glog);
    FREE_ALL (lg, gl);
    if (wsinn_net_backward (m->nets[2], glog, gin, err, errlen) < 0)
      goto out;
    to_nchw (gin, nm, C, mp, pooled);
    if (wsidet_multiscale_roi_align_backward (lv, 4, 1, C, &mapper, mp, mp,
            cfg->mask_sampling, rois, nm, pooled) < 0)
      goto roi_fail;
  } else {
    for (size_t i = 0; i < wsinn_net_n_params (m->nets[2]); i++) {
      wsinn_param *p = wsinn_net_param (m->nets[2], i);
      memset (p->grad, 0, p->size * sizeof (float));
    }
  }

  /* features backward: RPN gradients and the RoIAlign gradients of the
   * FPN levels ('pool' has only its RPN head's) */
  free (douts[L - 1]);
  douts[L - 1] = NULL;
  if (wsinn_net_backward_outputs (m->nets[0], (const float *const *) douts,
          NULL, err, errlen) < 0)
    goto out;
  rc = 0;
  goto out;
roi_fail:
  snprintf (err, errlen, "Mask R-CNN: RoIAlign failed");
  goto out;
oom:
  snprintf (err, errlen, "out of memory");
out:
  for (int k = 0; k < NOUT; k++)
    FREE_ALL (outs[k], douts[k]);
  FREE_ALL (obj, del, anchors, lab, tgt, gobj, gdel, prop, pscore, srois,
      stgt, rois, pooled, pin, cls, reg, gcls, greg, gin, mlog, mtgt, glog,
      mboxes, pos_idx, neg_idx, slab, smatch, mlab, mmatch);
  return rc;
}
