/* Mask R-CNN model of the generic trainer. */
#include "wsimrcnn-train.h"

#include <glib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

const char *const wsimrcnn_loss_names[WSIMRCNN_N_LOSSES] = {
  "loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg",
  "loss_mask"
};

typedef struct
{
  wsimrcnn *m;
  WsiTrainer *trainer;          /* for the step number */
  uint64_t seed;
  float **acc;                  /* gradient sums over a batch's images */
  /* last evaluate */
  WsiMrcnnDetections det;
  int *counts;
  float *boxes, *scores, *masks;
  int32_t *labels;
  size_t det_cap;               /* images the arrays hold */
} MrcnnModel;

static void
model_free (void *p)
{
  MrcnnModel *mm = p;
  int k = 0;
  for (int i = 0; mm->acc && i < 3; i++)
    for (size_t j = 0; j < wsinn_net_n_params (wsimrcnn_net (mm->m, i)); j++)
      g_free (mm->acc[k++]);
  g_free (mm->acc);
  wsimrcnn_free (mm->m);
  g_free (mm->counts);
  g_free (mm->boxes);
  g_free (mm->scores);
  g_free (mm->masks);
  g_free (mm->labels);
  g_free (mm);
}

/* splitmix64 of the seed, step and image: independent streams */
static uint64_t
mix (uint64_t x)
{
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

static void
set_losses (WsiLossValues * lv, const double *v)
{
  memset (lv, 0, sizeof *lv);
  lv->n = WSIMRCNN_N_LOSSES;
  for (int i = 0; i < WSIMRCNN_N_LOSSES; i++) {
    lv->names[i] = wsimrcnn_loss_names[i];
    lv->values[i] = v[i];
    lv->loss += v[i];
  }
}

static int
check_batch (const WsiMrcnnBatch * b, int need_targets, char *err,
    size_t errlen)
{
  if (!b || !b->images || b->n < 1 || b->h < 32 || b->w < 32 || b->h % 32
      || b->w % 32 || (need_targets && !b->targets)) {
    snprintf (err, errlen, "Mask R-CNN batch: %d images of %d x %d (sides "
        "multiples of 32)%s", b ? b->n : 0, b ? b->w : 0, b ? b->h : 0,
        need_targets && b && !b->targets ? ", no targets" : "");
    return -1;
  }
  for (int i = 0; need_targets && i < b->n; i++)
    if (b->targets[i].n > 0 && (b->targets[i].h != b->h
            || b->targets[i].w != b->w)) {
      snprintf (err, errlen, "Mask R-CNN batch: targets of image %d are "
          "%d x %d, the image %d x %d", i, b->targets[i].w, b->targets[i].h,
          b->w, b->h);
      return -1;
    }
  return 0;
}

static int
model_step (void *p, const WsiTrainConfig * cfg, const void *batch,
    WsiLossValues * lv, char *err, size_t errlen)
{
  MrcnnModel *mm = p;
  const WsiMrcnnBatch *b = batch;
  double sum[WSIMRCNN_N_LOSSES] = { 0 };
  int64_t step = mm->trainer ? wsi_trainer_get_step (mm->trainer) : 0;
  size_t img = (size_t) b->h * b->w * 3;
  (void) cfg;

  if (check_batch (b, 1, err, errlen) < 0)
    return -1;
  if (b->n > 1 && !mm->acc) {
    size_t np = 0;
    for (int i = 0; i < 3; i++)
      np += wsinn_net_n_params (wsimrcnn_net (mm->m, i));
    mm->acc = g_new0 (float *, np);
  }
  for (int i = 0; i < b->n; i++) {
    const WsiMrcnnTargets *t = &b->targets[i];
    wsimrcnn_losses l;
    wsimrcnn_set_seed (mm->m, mix (mix (mm->seed ^ mix ((uint64_t) step))
            + (uint64_t) i));
    if (wsimrcnn_train_step (mm->m, b->images + i * img, b->h, b->w,
            t->boxes, t->labels, t->masks, t->n, &l, err, errlen) < 0)
      return -1;
    sum[0] += l.rpn_objectness;
    sum[1] += l.rpn_box;
    sum[2] += l.classifier;
    sum[3] += l.box_reg;
    sum[4] += l.mask;
    if (b->n == 1)
      break;
    /* mean over the images: accumulate, the last writes the mean back */
    int k = 0;
    for (int n = 0; n < 3; n++) {
      wsinn_net *net = wsimrcnn_net (mm->m, n);
      for (size_t j = 0; j < wsinn_net_n_params (net); j++, k++) {
        wsinn_param *pa = wsinn_net_param (net, j);
        if (!pa->trainable)
          continue;
        if (!mm->acc[k])
          mm->acc[k] = g_new (float, pa->size);
        float *a = mm->acc[k];
        if (i == 0)
          memcpy (a, pa->grad, pa->size * sizeof (float));
        else
          for (size_t e = 0; e < pa->size; e++)
            a[e] += pa->grad[e];
        if (i == b->n - 1)
          for (size_t e = 0; e < pa->size; e++)
            pa->grad[e] = a[e] / (float) b->n;
      }
    }
  }
  for (int i = 0; i < WSIMRCNN_N_LOSSES; i++)
    sum[i] /= b->n;
  set_losses (lv, sum);
  return 0;
}

static int
model_evaluate (void *p, const WsiTrainConfig * cfg, const void *batch,
    WsiLossValues * lv, char *err, size_t errlen)
{
  MrcnnModel *mm = p;
  const WsiMrcnnBatch *b = batch;
  const wsimrcnn_config *c = wsimrcnn_get_config (mm->m);
  const int D = c->det.detections_per_img, ms = 2 * c->mask_pool;
  double zero[WSIMRCNN_N_LOSSES] = { 0 };
  (void) cfg;

  if (check_batch (b, 0, err, errlen) < 0)
    return -1;
  if ((size_t) b->n > mm->det_cap || mm->det.max_detections != D
      || mm->det.mask_size != ms) {
    g_free (mm->counts);
    g_free (mm->boxes);
    g_free (mm->scores);
    g_free (mm->masks);
    g_free (mm->labels);
    mm->counts = g_new0 (int, b->n);
    mm->boxes = g_try_new (float, (size_t) b->n * D * 4);
    mm->scores = g_try_new (float, (size_t) b->n * D);
    mm->labels = g_try_new (int32_t, (size_t) b->n * D);
    mm->masks = g_try_new (float, (size_t) b->n * D * ms * ms);
    mm->det_cap = b->n;
    if (!mm->boxes || !mm->scores || !mm->labels || !mm->masks) {
      mm->det_cap = 0;
      snprintf (err, errlen, "out of memory for the detections of %d images",
          b->n);
      return -1;
    }
  }
  mm->det.n = 0;
  mm->det.max_detections = D;
  mm->det.mask_size = ms;
  if (wsimrcnn_detect_batch (mm->m, b->images, b->n, b->h, b->w, mm->boxes,
          mm->scores, mm->labels, mm->masks, NULL, mm->counts, err,
          errlen) < 0)
    return -1;
  mm->det.n = b->n;
  mm->det.counts = mm->counts;
  mm->det.boxes = mm->boxes;
  mm->det.scores = mm->scores;
  mm->det.labels = mm->labels;
  mm->det.masks = mm->masks;
  /* torchvision's eval mode has no losses: the metrics come from the
   * detections */
  set_losses (lv, zero);
  lv->n = 0;
  return 0;
}

static const WsiTrainModelClass mrcnn_class = {
  model_step, model_evaluate, model_free
};

WsiTrainer *
wsimrcnn_trainer_new (wsimrcnn * m, const WsiMrcnnModelInfo * mi,
    const WsiTrainConfig * cfg, uint64_t sampler_seed, char *err,
    size_t errlen)
{
  MrcnnModel *mm = g_new0 (MrcnnModel, 1);
  wsinn_net *nets[3];
  char **kv = wsimrcnn_metadata_new (mi, NULL);
  mm->m = m;
  mm->seed = sampler_seed;
  for (int i = 0; i < 3; i++)
    nets[i] = wsimrcnn_net (m, i);
  WsiTrainer *t = wsi_trainer_new_for_model (&mrcnn_class, mm, nets, 3,
      "maskrcnn", (const char *const *) kv, cfg, err, errlen);
  g_strfreev (kv);
  if (t)
    mm->trainer = t;
  return t;
}

WsiTrainer *
wsimrcnn_trainer_new_from_file (const char *path, const WsiTrainConfig * cfg,
    int resume, uint64_t sampler_seed, char *err, size_t errlen)
{
  WsiMrcnnModelInfo mi;
  wsimrcnn *m;
  WsiTrainer *t;

  if (wsimrcnn_model_info_load (path, &mi, err, errlen) != 0)
    return NULL;
  m = wsimrcnn_new (&mi.cfg, err, errlen);
  t = m ? wsimrcnn_trainer_new (m, &mi, cfg, sampler_seed, err, errlen) :
      NULL;
  wsimrcnn_model_info_clear (&mi);
  if (t && wsi_trainer_load (t, path, resume, err, errlen) != 0) {
    wsi_trainer_free (t);
    return NULL;
  }
  return t;
}

wsimrcnn *
wsimrcnn_trainer_model (WsiTrainer * t)
{
  void *mm = wsi_trainer_model (t);
  /* only this model has three nets */
  return mm && wsi_trainer_n_nets (t) == 3 ? ((MrcnnModel *) mm)->m : NULL;
}

const WsiMrcnnDetections *
wsimrcnn_trainer_detections (WsiTrainer * t)
{
  MrcnnModel *mm = wsimrcnn_trainer_model (t) ? wsi_trainer_model (t) : NULL;
  return mm ? &mm->det : NULL;
}
