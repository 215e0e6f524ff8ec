/* Trainer tests (suite train), no reference needed beyond arithmetic:
 * - learning: U-Net (depth 2, base 8) segments bright discs on noise;
 * - resume: 2k steps straight == k steps, checkpoint, fresh trainer, k steps
 *   (bit-identical params and optimiser state; SGD and Adam with warmup,
 *   cosine schedule and a freeze phase); the checkpoint loads with
 *   wsi_model_load;
 * - a NaN input and a diverging learning rate are refused and leave every
 *   parameter, BatchNorm statistic and the step count as they were;
 * - freeze: frozen prefixes do not move for freeze_steps steps, then move;
 * - init-from counts (shape mismatches, prefixes, a pretraining checkpoint);
 * - pretraining net: encoder names/shapes equal the segmentation net's,
 *   its reconstruction loss falls;
 * - learning-rate schedules and configuration errors. */
#include "wsitrain.h"
#include "wsimodel.h"

#include <glib.h>
#include <glib/gstdio.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures, checks;

static void
check (int ok, const char *what, const char *fmt, ...)
    __attribute__((format (printf, 3, 4)));

static void
check (int ok, const char *what, const char *fmt, ...)
{
  char detail[512] = "";
  va_list ap;
  if (fmt) {
    va_start (ap, fmt);
    vsnprintf (detail, sizeof detail, fmt, ap);
    va_end (ap);
  }
  checks++;
  failures += !ok;
  printf ("%s: %s%s%s%s\n", ok ? "ok" : "FAIL", what, detail[0] ? " (" : "",
      detail, detail[0] ? ")" : "");
  fflush (stdout);
}

#define N 4
#define S 64

/* Bright discs (label 1) on dark noise (label 0); a ring of 255 (ignored)
 * around each disc edge. Input rescaled to about [0, 1]. */
static void
make_discs (GRand * rng, float *x, uint8_t * y)
{
  for (int b = 0; b < N; b++) {
    int nd = 1 + g_rand_int_range (rng, 0, 3);
    double cx[3], cy[3], r[3];
    for (int d = 0; d < nd; d++) {
      cx[d] = g_rand_double_range (rng, 10, S - 10);
      cy[d] = g_rand_double_range (rng, 10, S - 10);
      r[d] = g_rand_double_range (rng, 5, 12);
    }
    for (int i = 0; i < S; i++)
      for (int j = 0; j < S; j++) {
        size_t p = ((size_t) b * S + i) * S + j;
        double dist = 1e9;
        for (int d = 0; d < nd; d++)
          dist = MIN (dist, hypot (i - cy[d], j - cx[d]) - r[d]);
        int in = dist < 0;
        y[p] = fabs (dist) < 0.5 ? 255 : in;
        for (int c = 0; c < 3; c++)
          x[p * 3 + c] = (float) ((in ? 0.65 : 0.3) + g_rand_double_range (rng,
                  -0.25, 0.25) + (c == 1 ? -0.05 : 0));
      }
  }
}

static const char *const unet_meta[] = {
  "arch", "unet", "depth", "2", "base_width", "8", "n_classes", "2",
  "class_names", "[\"background\", \"disc\"]", NULL
};

static WsiTrainer *
new_unet (const WsiTrainConfig * cfg, WsiTrainTask task)
{
  char err[512];
  WsiTrainer *t = wsi_trainer_new (unet_meta, task, cfg, 7, err, sizeof err);
  if (!t) {
    printf ("FAIL: wsi_trainer_new: %s\n", err);
    exit (1);
  }
  return t;
}

static float *
snapshot (WsiTrainer * t, size_t * total)
{
  wsinn_net *net = wsi_trainer_net (t);
  size_t n = 0, off = 0;
  for (size_t i = 0; i < wsinn_net_n_params (net); i++)
    n += wsinn_net_param (net, i)->size;
  float *s = g_new (float, n);
  for (size_t i = 0; i < wsinn_net_n_params (net); i++) {
    wsinn_param *p = wsinn_net_param (net, i);
    memcpy (s + off, p->data, p->size * sizeof (float));
    off += p->size;
  }
  *total = n;
  return s;
}

static int
step (WsiTrainer * t, const float *x, const uint8_t * y, WsiStepResult * r)
{
  char err[512];
  if (wsi_trainer_step (t, x, N, S, S, y, r, err, sizeof err) != 0) {
    printf ("step error: %s\n", err);
    return -1;
  }
  return 0;
}

static void
test_learning (void)
{
  WsiTrainConfig cfg;
  GRand *rng = g_rand_new_with_seed (3);
  float *x = g_new (float, N * S * S * 3);
  uint8_t *y = g_new (uint8_t, N * S * S);
  WsiStepResult r;
  double first = 0, last = 0, acc = 0;
  const int steps = 40;
  char err[256];

  wsi_train_config_init (&cfg);
  cfg.optim = WSI_OPTIM_ADAM;
  cfg.lr = 1e-2;
  cfg.warmup_steps = 3;
  cfg.loss.kind = WSI_LOSS_CE_DICE;
  WsiTrainer *t = new_unet (&cfg, WSI_TASK_SEGMENT);
  gint64 t0 = g_get_monotonic_time ();
  for (int s = 0; s < steps; s++) {
    make_discs (rng, x, y);
    if (step (t, x, y, &r) != 0)
      break;
    if (s < 3)
      first += r.loss / 3;
    if (s >= steps - 5) {
      last += r.loss / 5;
      acc += r.accuracy / 5;
    }
  }
  /* held-out batches, inference mode (running statistics) */
  WsiLossResult ev;
  double ev_acc = 0;
  for (int k = 0; k < 2; k++) {
    make_discs (rng, x, y);
    if (wsi_trainer_evaluate (t, x, N, S, S, y, &ev, err, sizeof err) != 0)
      printf ("evaluate: %s\n", err);
    ev_acc += (double) ev.n_correct / MAX (1, ev.n_valid) / 2;
  }
  check (last < 0.3 * first && acc > 0.95 && ev_acc > 0.93,
      "U-Net learns bright discs on noise (40 steps, batch 4, 64x64)",
      "loss %.4f -> %.4f, train accuracy %.3f, held-out accuracy %.3f, "
      "%.1f ms/step", first, last, acc, ev_acc,
      (g_get_monotonic_time () - t0) / 1000.0 / steps);
  wsi_trainer_free (t);
  g_free (x);
  g_free (y);
  g_rand_free (rng);
}

/* Batches by step index, so any trainer sees the same data at step s. */
static void
batch_for_step (int64_t s, float *x, uint8_t * y)
{
  GRand *rng = g_rand_new_with_seed (100 + (guint32) s);
  make_discs (rng, x, y);
  g_rand_free (rng);
}

static void
test_resume (const char *dir, WsiOptimKind kind)
{
  const int k = 3;
  WsiTrainConfig cfg;
  char err[512], path[512];
  float *x = g_new (float, N * S * S * 3);
  uint8_t *y = g_new (uint8_t, N * S * S);
  WsiStepResult r;
  size_t na, nb;

  wsi_train_config_init (&cfg);
  cfg.optim = kind;
  cfg.lr = kind == WSI_OPTIM_SGD ? 0.05 : 2e-3;
  cfg.weight_decay = 1e-3;
  cfg.nesterov = kind == WSI_OPTIM_SGD;
  cfg.schedule = WSI_SCHED_COSINE;
  cfg.warmup_steps = 2;
  cfg.total_steps = 2 * k;
  cfg.min_lr = cfg.lr * 0.1;
  wsi_train_config_set_freeze (&cfg, "down.0.", err, sizeof err);
  cfg.freeze_steps = 2;         /* inside the first half */

  WsiTrainer *a = new_unet (&cfg, WSI_TASK_SEGMENT);
  for (int s = 0; s < 2 * k; s++) {
    batch_for_step (wsi_trainer_get_step (a), x, y);
    step (a, x, y, &r);
  }
  WsiTrainer *b = new_unet (&cfg, WSI_TASK_SEGMENT);
  for (int s = 0; s < k; s++) {
    batch_for_step (wsi_trainer_get_step (b), x, y);
    step (b, x, y, &r);
  }
  wsi_trainer_set_epoch (b, 1);
  snprintf (path, sizeof path, "%s/ckpt-%s.safetensors", dir,
      wsi_optim_kind_name (kind));
  int saved = wsi_trainer_save (b, path, err, sizeof err);
  check (saved == 0, "checkpoint saved", "%s", saved ? err : path);
  wsi_trainer_free (b);

  WsiTrainer *c = wsi_trainer_new_from_file (path, &cfg, 1, err, sizeof err);
  check (c != NULL, "checkpoint resumed", "%s", c ? "" : err);
  if (!c)
    return;
  check (wsi_trainer_get_step (c) == k && wsi_trainer_get_epoch (c) == 1,
      "step and epoch restored", "step %" G_GINT64_FORMAT " epoch %d",
      wsi_trainer_get_step (c), wsi_trainer_get_epoch (c));
  for (int s = 0; s < k; s++) {
    batch_for_step (wsi_trainer_get_step (c), x, y);
    step (c, x, y, &r);
  }
  float *pa = snapshot (a, &na), *pc = snapshot (c, &nb);
  size_t diff = 0;
  for (size_t i = 0; i < MIN (na, nb); i++)
    diff += memcmp (&pa[i], &pc[i], 4) != 0;
  check (na == nb && diff == 0, wsi_optim_kind_name (kind),
      "2x%d steps == %d + checkpoint + %d: %zu of %zu values differ", k, k,
      k, diff, na);

  /* optimiser state equal too: save both and compare the files' tensors */
  char pa_path[512], pc_path[512];
  snprintf (pa_path, sizeof pa_path, "%s/a.safetensors", dir);
  snprintf (pc_path, sizeof pc_path, "%s/c.safetensors", dir);
  wsi_trainer_save (a, pa_path, err, sizeof err);
  wsi_trainer_save (c, pc_path, err, sizeof err);
  gchar *ca = NULL, *cc = NULL;
  gsize la = 0, lc = 0;
  g_file_get_contents (pa_path, &ca, &la, NULL);
  g_file_get_contents (pc_path, &cc, &lc, NULL);
  /* headers differ only in the loss history length; compare data sections */
  guint64 ha = 0, hc = 0;
  if (la > 8 && lc > 8) {
    memcpy (&ha, ca, 8);
    memcpy (&hc, cc, 8);
  }
  check (la - ha == lc - hc && la > ha + 8
      && memcmp (ca + 8 + ha, cc + 8 + hc, la - 8 - ha) == 0,
      "optimiser state tensors identical after resume", "%zu bytes of data",
      (size_t) (la - 8 - ha));
  g_free (ca);
  g_free (cc);

  /* the checkpoint is a model file */
  WsiModel *m = wsi_model_load (path, 1, err, sizeof err);
  check (m != NULL, "checkpoint loads with wsi_model_load (optimiser "
      "tensors skipped)", "%s", m ? "" : err);
  if (m) {
    float *probs = g_new (float, 1 * S * S * 2);
    batch_for_step (0, x, y);
    check (wsi_model_forward (m, x, 1, S, S, probs, err, sizeof err) == 0
        && fabsf (probs[0] + probs[1] - 1) < 1e-5, "checkpoint runs as a "
        "model", NULL);
    g_free (probs);
    wsi_model_free (m);
  }
  /* resuming with the other optimiser family is refused */
  WsiTrainConfig other = cfg;
  other.optim = kind == WSI_OPTIM_SGD ? WSI_OPTIM_ADAM : WSI_OPTIM_SGD;
  WsiTrainer *d = wsi_trainer_new_from_file (path, &other, 1, err,
      sizeof err);
  check (d == NULL && strstr (err, "same optimiser"),
      "resume with another optimiser refused", "%s", err);
  wsi_trainer_free (d);
  g_free (pa);
  g_free (pc);
  wsi_trainer_free (a);
  wsi_trainer_free (c);
  g_free (x);
  g_free (y);
}

static void
test_refusal (void)
{
  WsiTrainConfig cfg;
  char err[512];
  float *x = g_new (float, N * S * S * 3);
  uint8_t *y = g_new (uint8_t, N * S * S);
  WsiStepResult r;
  size_t n0, n1;

  wsi_train_config_init (&cfg);
  WsiTrainer *t = new_unet (&cfg, WSI_TASK_SEGMENT);
  batch_for_step (0, x, y);
  step (t, x, y, &r);
  float *before = snapshot (t, &n0);

  x[1234] = NAN;
  int rc = wsi_trainer_step (t, x, N, S, S, y, &r, err, sizeof err);
  float *after = snapshot (t, &n1);
  check (rc != 0 && strstr (err, "refused") && n0 == n1
      && memcmp (before, after, n0 * 4) == 0 && wsi_trainer_get_step (t) == 1,
      "NaN input: step refused, params and BN statistics unchanged", "%s",
      err);
  g_free (after);

  batch_for_step (1, x, y);
  WsiTrainConfig wild = cfg;
  wild.lr = 1e39;              /* beyond float: the update overflows */
  wsi_trainer_set_config (t, &wild, err, sizeof err);
  err[0] = 0;
  rc = wsi_trainer_step (t, x, N, S, S, y, &r, err, sizeof err);
  after = snapshot (t, &n1);
  check (rc != 0 && strstr (err, "not finite")
      && memcmp (before, after, n0 * 4) == 0 && wsi_trainer_get_step (t) == 1,
      "diverging update (lr 1e39): step refused, nothing changed", "%s", err);
  g_free (after);

  wsi_trainer_set_config (t, &cfg, err, sizeof err);
  rc = step (t, x, y, &r);
  check (rc == 0 && wsi_trainer_get_step (t) == 2 && isfinite (r.loss),
      "training continues after refused steps", "loss %.4f", r.loss);

  uint8_t saved = y[10];
  y[10] = 7;
  rc = wsi_trainer_step (t, x, N, S, S, y, &r, err, sizeof err);
  check (rc != 0 && strstr (err, "label 7"), "label outside the classes "
      "refused", "%s", err);
  y[10] = saved;
  rc = wsi_trainer_step (t, x, N, 62, 62, y, &r, err, sizeof err);
  check (rc != 0, "input side 62 (not a multiple of 4) refused", "%s", err);
  g_free (before);
  g_free (x);
  g_free (y);
  wsi_trainer_free (t);
}

static void
test_freeze (void)
{
  WsiTrainConfig cfg;
  char err[256];
  float *x = g_new (float, N * S * S * 3);
  uint8_t *y = g_new (uint8_t, N * S * S);
  WsiStepResult r;

  wsi_train_config_init (&cfg);
  wsi_train_config_set_freeze (&cfg, "down., bottom.", err, sizeof err);
  cfg.freeze_steps = 2;
  WsiTrainer *t = new_unet (&cfg, WSI_TASK_SEGMENT);
  wsinn_net *net = wsi_trainer_net (t);
  wsinn_param *enc = wsinn_net_find_param (net, "down.0.conv1.conv.weight");
  wsinn_param *dec = wsinn_net_find_param (net, "head.weight");
  float e0 = enc->data[5], d0 = dec->data[5];
  int moved_enc = 0, moved_dec = 0, frozen = 0;
  for (int s = 0; s < 2; s++) {
    batch_for_step (s, x, y);
    step (t, x, y, &r);
    frozen = r.n_frozen;
  }
  moved_enc = enc->data[5] != e0;
  moved_dec = dec->data[5] != d0;
  check (!moved_enc && moved_dec && frozen == 18, "freeze 'down.,bottom.' "
      "for 2 steps: encoder still, decoder moves", "%d params frozen",
      frozen);
  batch_for_step (2, x, y);
  step (t, x, y, &r);
  check (enc->data[5] != e0 && r.n_frozen == 0, "after freeze_steps the "
      "encoder moves", NULL);
  wsi_trainer_free (t);
  g_free (x);
  g_free (y);
}

static int
count_prefix (wsinn_net * net, const char *const *prefixes)
{
  int n = 0;
  for (size_t i = 0; i < wsinn_net_n_params (net); i++)
    for (int k = 0; prefixes[k]; k++)
      if (g_str_has_prefix (wsinn_net_param (net, i)->name, prefixes[k])) {
        n++;
        break;
      }
  return n;
}

static void
test_pretrain_and_init (const char *dir)
{
  static const struct
  {
    const char *const meta[13];
    const char *const enc[3];
  } archs[] = {
    {{"arch", "unet", "depth", "2", "base_width", "8", NULL},
        {"down.", "bottom.", NULL}},
    {{"arch", "fcn8s", "encoder", "vgg", "base_width", "8", "vgg_blocks",
            "[1, 1, 2, 1, 1]", NULL}, {"encoder.", NULL}},
    {{"arch", "deeplabv3", "encoder", "resnet18", "base_width", "8",
            "aspp_width", "16", "output_stride", "8", NULL}, {"encoder.",
            NULL}},
    {{"arch", "deeplabv3", "encoder", "resnet34", "base_width", "8",
            "aspp_width", "16", NULL}, {"encoder.", NULL}},
  };
  char err[512], path[512], seg_path[512];
  WsiTrainConfig cfg;

  wsi_train_config_init (&cfg);
  cfg.optim = WSI_OPTIM_ADAM;
  cfg.lr = 3e-3;
  for (guint a = 0; a < G_N_ELEMENTS (archs); a++) {
    const char *name = archs[a].meta[1];
    WsiTrainer *pre = wsi_trainer_new (archs[a].meta, WSI_TASK_PRETRAIN, &cfg,
        1, err, sizeof err);
    WsiTrainer *seg = wsi_trainer_new (archs[a].meta, WSI_TASK_SEGMENT, &cfg,
        2, err, sizeof err);
    if (!pre || !seg) {
      check (0, "pretrain/segment nets built", "%s", err);
      continue;
    }
    wsinn_net *pn = wsi_trainer_net (pre), *sn = wsi_trainer_net (seg);
    int n_enc = 0, same = 1;
    for (size_t i = 0; i < wsinn_net_n_params (pn); i++) {
      wsinn_param *p = wsinn_net_param (pn, i);
      wsinn_param *q;
      if (g_str_has_prefix (p->name, "pretrain."))
        continue;
      n_enc++;
      q = wsinn_net_find_param (sn, p->name);
      if (!q || q->ndims != p->ndims
          || memcmp (q->shape, p->shape, p->ndims * sizeof (int64_t))) {
        printf ("  %s: %s not in the segmentation net with that shape\n",
            name, p->name);
        same = 0;
      }
    }
    int want = count_prefix (sn, archs[a].enc);
    check (same && n_enc == want, "pretraining net: encoder = segmentation "
        "encoder", "%s %s: %d encoder tensors, segmentation net has %d",
        name, archs[a].meta[3], n_enc, want);

    /* reconstruction loss falls (same batch, unet only to keep it short) */
    if (a == 0) {
      float *x = g_new (float, N * S * S * 3);
      uint8_t *y = g_new (uint8_t, N * S * S);
      WsiStepResult r;
      double l0 = 0, l1 = 0;
      batch_for_step (0, x, y);
      for (int s = 0; s < 40; s++) {
        wsi_trainer_step (pre, x, N, S, S, NULL, &r, err, sizeof err);
        if (s == 0)
          l0 = r.loss;
        l1 = r.loss;
      }
      check (l1 < 0.5 * l0, "pretraining: reconstruction MSE falls",
          "%.4f -> %.4f in 40 steps", l0, l1);
      g_free (x);
      g_free (y);
    }
    snprintf (path, sizeof path, "%s/pre-%u.safetensors", dir, a);
    if (wsi_trainer_save (pre, path, err, sizeof err) != 0)
      check (0, "pretraining checkpoint saved", "%s", err);
    WsiInitFromReport rep;
    int rc = wsi_trainer_init_from (seg, path, NULL, &rep, err, sizeof err);
    int n_pre = (int) wsinn_net_n_params (pn) - n_enc;
    check (rc == 0 && rep.n_copied == n_enc && rep.n_unused == n_pre
        && rep.n_shape_mismatch == 0, "init-from a pretraining checkpoint",
        "%s: copied %d of %d, %d unused (decoder), %d mismatched", name,
        rep.n_copied, rep.n_net_params, rep.n_unused, rep.n_shape_mismatch);
    wsinn_param *p0 = wsinn_net_param (pn, 0);
    wsinn_param *s0 = wsinn_net_find_param (sn, p0->name);
    check (s0 && memcmp (s0->data, p0->data, p0->size * 4) == 0,
        "init-from copies the values", "%s", p0->name);
    /* a pretraining checkpoint resumes as a pretraining trainer */
    if (a == 0) {
      WsiTrainer *again = wsi_trainer_new_from_file (path, &cfg, 1, err,
          sizeof err);
      check (again && wsi_trainer_task (again) == WSI_TASK_PRETRAIN
          && wsi_trainer_get_step (again) == 40, "pretraining checkpoint "
          "resumes as pretraining", "%s", again ? "" : err);
      wsi_trainer_free (again);
    }
    wsi_trainer_free (pre);
    wsi_trainer_free (seg);
  }

  /* segmentation model -> net with another class count: head mismatches */
  static const char *const meta3[] = { "arch", "unet", "depth", "2",
    "base_width", "8", "n_classes", "3", NULL
  };
  WsiTrainer *two = new_unet (&cfg, WSI_TASK_SEGMENT);
  snprintf (seg_path, sizeof seg_path, "%s/seg2.safetensors", dir);
  wsi_trainer_export (two, seg_path, err, sizeof err);
  WsiTrainer *three = wsi_trainer_new (meta3, WSI_TASK_SEGMENT, &cfg, 5, err,
      sizeof err);
  WsiInitFromReport rep;
  int rc = wsi_trainer_init_from (three, seg_path, NULL, &rep, err,
      sizeof err);
  int total = (int) wsinn_net_n_params (wsi_trainer_net (three));
  check (rc == 0 && rep.n_copied == total - 2 && rep.n_shape_mismatch == 2,
      "init-from 2-class model into a 3-class net", "copied %d of %d, %d "
      "shape mismatches (head.weight, head.bias)", rep.n_copied, total,
      rep.n_shape_mismatch);
  rc = wsi_trainer_init_from (three, seg_path, "down.0.,down.1.", &rep, err,
      sizeof err);
  static const char *const d01[] = { "down.0.", "down.1.", NULL };
  int want = count_prefix (wsi_trainer_net (three), d01);
  check (rc == 0 && rep.n_copied == want && rep.n_skipped_prefix == total - 2
      - want, "init-from with required prefixes", "copied %d (want %d), %d "
      "outside the prefixes", rep.n_copied, want, rep.n_skipped_prefix);
  rc = wsi_trainer_init_from (three, seg_path, "nothing.", &rep, err,
      sizeof err);
  check (rc != 0 && strstr (err, "no tensor"), "init-from matching nothing "
      "is an error", "%s", err);
  rc = wsi_trainer_init_from (three, "/nonexistent.safetensors", NULL, &rep,
      err, sizeof err);
  check (rc != 0, "init-from a missing file is an error", "%s", err);
  wsi_trainer_free (two);
  wsi_trainer_free (three);
}

static void
test_schedules (void)
{
  WsiTrainConfig c;
  char err[256];
  wsi_train_config_init (&c);
  c.lr = 0.1;
  c.warmup_steps = 4;
  int ok = fabs (wsi_train_lr_at (&c, 0) - 0.025) < 1e-12
      && fabs (wsi_train_lr_at (&c, 3) - 0.1) < 1e-12
      && fabs (wsi_train_lr_at (&c, 100) - 0.1) < 1e-12;
  c.schedule = WSI_SCHED_STEP;
  c.step_size = 10;
  c.gamma = 0.5;
  ok &= fabs (wsi_train_lr_at (&c, 4 + 9) - 0.1) < 1e-12
      && fabs (wsi_train_lr_at (&c, 4 + 10) - 0.05) < 1e-12
      && fabs (wsi_train_lr_at (&c, 4 + 25) - 0.025) < 1e-12;
  c.schedule = WSI_SCHED_COSINE;
  c.total_steps = 104;
  c.min_lr = 0.01;
  ok &= fabs (wsi_train_lr_at (&c, 4) - 0.1) < 1e-12
      && fabs (wsi_train_lr_at (&c, 54) - 0.055) < 1e-12
      && fabs (wsi_train_lr_at (&c, 104) - 0.01) < 1e-12
      && fabs (wsi_train_lr_at (&c, 500) - 0.01) < 1e-12;
  check (ok, "learning-rate schedules: warmup, step, cosine", NULL);

  wsi_train_config_init (&c);
  c.lr = -1;
  check (wsi_train_config_check (&c, err, sizeof err) != 0
      && strstr (err, "lr"), "negative lr refused", "%s", err);
  wsi_train_config_init (&c);
  c.momentum = 1.5;
  check (wsi_train_config_check (&c, err, sizeof err) != 0,
      "momentum 1.5 refused", "%s", err);
  wsi_train_config_init (&c);
  c.loss.n_class_weights = 3;
  c.loss.class_weights[1] = NAN;
  check (wsi_train_config_check (&c, err, sizeof err) != 0,
      "NaN class weight refused", "%s", err);
  static const char *const bad_arch[] = { "arch", "resnet", NULL };
  wsi_train_config_init (&c);
  WsiTrainer *t = wsi_trainer_new (bad_arch, WSI_TASK_SEGMENT, &c, 1, err,
      sizeof err);
  check (t == NULL && strstr (err, "unknown arch"), "unknown arch refused",
      "%s", err);
}

/* The checkpoint lock segment-fcn and wsitrain-tool share (issue 10):
 * one holder per path, the holder's pid in the refusal, stale temporary
 * files removed once held, free again after unlock. */
static void
test_checkpoint_lock (const char *dir)
{
  char *path = g_build_filename (dir, "ck.safetensors", NULL);
  char *stale = g_build_filename (dir, ".ck.safetensors.AbC123", NULL);
  char *other = g_build_filename (dir, ".cx.safetensors.AbC123", NULL);
  char err[512] = "", pid[32];
  int n_stale = -1, fd, fd2;

  g_file_set_contents (stale, "x", 1, NULL);
  g_file_set_contents (other, "x", 1, NULL);
  fd = wsi_checkpoint_lock (path, &n_stale, err, sizeof err);
  check (fd >= 0, "lock: first holder gets it", "%s", err);
  check (n_stale == 1 && !g_file_test (stale, G_FILE_TEST_EXISTS)
      && g_file_test (other, G_FILE_TEST_EXISTS),
      "lock: its own stale temporary file removed, others kept", "%d",
      n_stale);
  fd2 = wsi_checkpoint_lock (path, NULL, err, sizeof err);
  g_snprintf (pid, sizeof pid, "pid %d", (int) getpid ());
  check (fd2 == WSI_CHECKPOINT_LOCK_BUSY && strstr (err, pid) != NULL,
      "lock: a second holder is refused, naming the pid", "%d %s", fd2, err);
  wsi_checkpoint_unlock (path, fd);
  fd2 = wsi_checkpoint_lock (path, NULL, err, sizeof err);
  check (fd2 >= 0, "lock: free again after unlock", "%s", err);
  wsi_checkpoint_unlock (path, fd2);
  fd = wsi_checkpoint_lock ("/nonexistent-dir/ck.safetensors", NULL, err,
      sizeof err);
  check (fd == WSI_CHECKPOINT_LOCK_OPEN, "lock: missing directory refused",
      "%d %s", fd, err);
  g_free (path);
  g_free (stale);
  g_free (other);
}

int
main (int argc, char **argv)
{
  char *dir = g_dir_make_tmp ("wsitrain-XXXXXX", NULL);
  const char *only = argc > 1 ? argv[1] : "";

  wsinn_set_num_threads (1);  /* shared 2-core machine: no OpenMP spinning */
  if (!*only || !strcmp (only, "schedules"))
    test_schedules ();
  if (!*only || !strcmp (only, "learning"))
    test_learning ();
  if (!*only || !strcmp (only, "resume")) {
    test_resume (dir, WSI_OPTIM_SGD);
    test_resume (dir, WSI_OPTIM_ADAM);
  }
  if (!*only || !strcmp (only, "refusal"))
    test_refusal ();
  if (!*only || !strcmp (only, "freeze"))
    test_freeze ();
  if (!*only || !strcmp (only, "init"))
    test_pretrain_and_init (dir);
  if (!*only || !strcmp (only, "lock"))
    test_checkpoint_lock (dir);
  gchar *cmd = g_strdup_printf ("rm -rf '%s'", dir);
  if (system (cmd) != 0)
    fprintf (stderr, "could not remove %s\n", dir);
  g_free (cmd);
  g_free (dir);
  printf ("%d of %d checks passed\n", checks - failures, checks);
  return failures ? 1 : 0;
}
