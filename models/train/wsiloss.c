/* Losses on NHWC logits and their gradients (docs/training.md, "Losses").
 * Sums are accumulated in double; per-pixel math in float/double. */
#include "wsitrain.h"
#include "wsiargmax.h"

#include <glib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

void
wsi_loss_config_init (WsiLossConfig * cfg)
{
  memset (cfg, 0, sizeof *cfg);
  cfg->kind = WSI_LOSS_CE;
  cfg->ignore_index = 255;
  cfg->dice_smooth = 1.0f;
  cfg->ce_weight = 1.0f;
  cfg->dice_weight = 1.0f;
  cfg->pos_weight = 1.0f;
}

int
wsi_loss_config_set_class_weights (WsiLossConfig * cfg, const char *list,
    char *err, size_t errlen)
{
  gchar **w = g_strsplit (list ? list : "", ",", -1);
  guint n = g_strv_length (w);

  for (guint i = 0; i < n && i < WSI_LOSS_MAX_CLASSES; i++) {
    gchar *end = NULL;
    gdouble v = g_ascii_strtod (w[i], &end);
    if (!end || *end || !(v >= 0) || !isfinite (v)) {
      snprintf (err, errlen, "class-weights: '%s' is not a weight >= 0",
          w[i]);
      g_strfreev (w);
      return -1;
    }
    cfg->class_weights[i] = (float) v;
  }
  cfg->n_class_weights = (int) MIN (n, WSI_LOSS_MAX_CLASSES);
  g_strfreev (w);
  return 0;
}

static const char *const loss_names[] = {
  [WSI_LOSS_CE] = "ce",
  [WSI_LOSS_DICE] = "dice",
  [WSI_LOSS_CE_DICE] = "ce+dice",
  [WSI_LOSS_BCE] = "bce",
  [WSI_LOSS_MSE] = "mse",
};

int
wsi_loss_kind_from_string (const char *s)
{
  for (guint i = 0; i < G_N_ELEMENTS (loss_names); i++)
    if (s && g_ascii_strcasecmp (s, loss_names[i]) == 0)
      return (int) i;
  if (s && g_ascii_strcasecmp (s, "ce_dice") == 0)
    return WSI_LOSS_CE_DICE;
  return -1;
}

const char *
wsi_loss_kind_name (WsiLossKind kind)
{
  return (guint) kind < G_N_ELEMENTS (loss_names) ? loss_names[kind] : "?";
}

static gboolean
is_ignored (const WsiLossConfig * cfg, uint8_t label)
{
  return cfg->ignore_index >= 0 && label == cfg->ignore_index;
}

/* Labels must name a class (or be ignored): the first offender, or -1. */
static int64_t
check_labels (const WsiLossConfig * cfg, const uint8_t * labels, size_t n,
    int n_labels)
{
  for (size_t i = 0; i < n; i++)
    if (labels[i] >= n_labels && !is_ignored (cfg, labels[i]))
      return (int64_t) i;
  return -1;
}

/* Softmax of one pixel into @p (double); returns log-sum-exp. */
static double
softmax_pixel (const float *z, int c, double *p)
{
  double m = z[0], s = 0;
  for (int k = 1; k < c; k++)
    m = z[k] > m ? z[k] : m;
  for (int k = 0; k < c; k++) {
    p[k] = exp ((double) z[k] - m);
    s += p[k];
  }
  for (int k = 0; k < c; k++)
    p[k] /= s;
  return m + log (s);
}

/* Weighted mean NLL: sum_i w_yi * (lse_i - z_i,yi) / sum_i w_yi.
 * grad += scale * w_yi * (p_i - onehot_i) / sum_i w_yi. */
static double
cross_entropy (const WsiLossConfig * cfg, const float *z, size_t n, int c,
    const uint8_t * labels, float *grad, double scale, double *p)
{
  double wsum = 0, lsum = 0;

  for (size_t i = 0; i < n; i++) {
    if (is_ignored (cfg, labels[i]))
      continue;
    wsum += cfg->n_class_weights ? cfg->class_weights[labels[i]] : 1.0;
  }
  if (wsum <= 0)
    return 0;
  for (size_t i = 0; i < n; i++) {
    const float *zi = z + i * c;
    int y = labels[i];
    double wy, lse;
    if (is_ignored (cfg, labels[i]))
      continue;
    wy = cfg->n_class_weights ? cfg->class_weights[y] : 1.0;
    lse = softmax_pixel (zi, c, p);
    lsum += wy * (lse - zi[y]);
    if (grad) {
      double g = scale * wy / wsum;
      for (int k = 0; k < c; k++)
        grad[i * c + k] += (float) (g * (p[k] - (k == y)));
    }
  }
  return lsum / wsum;
}

/* Probability of class k at pixel i (softmax, or sigmoid when c == 1). */
static void
probs_pixel (const float *zi, int c, double *p)
{
  if (c == 1)
    p[0] = 1.0 / (1.0 + exp (-(double) zi[0]));
  else
    softmax_pixel (zi, c, p);
}

/* Soft Dice over the whole batch, per class, mean over classes:
 * D_k = (2 I_k + s) / (P_k + G_k + s), L = 1 - mean_k D_k. */
static double
dice (const WsiLossConfig * cfg, const float *z, size_t n, int c,
    const uint8_t * labels, float *grad, double scale, double *p)
{
  double *inter = g_new0 (double, c);
  double *psum = g_new0 (double, c);
  double *gsum = g_new0 (double, c);
  double *dldp = g_new0 (double, c);
  const double s = cfg->dice_smooth;
  double dsum = 0;

  for (size_t i = 0; i < n; i++) {
    if (is_ignored (cfg, labels[i]))
      continue;
    probs_pixel (z + i * c, c, p);
    for (int k = 0; k < c; k++) {
      int g = c == 1 ? labels[i] == 1 : labels[i] == k;
      psum[k] += p[k];
      gsum[k] += g;
      inter[k] += g ? p[k] : 0.0;
    }
  }
  for (int k = 0; k < c; k++)
    dsum += (2 * inter[k] + s) / (psum[k] + gsum[k] + s);
  if (grad) {
    for (size_t i = 0; i < n; i++) {
      double dot = 0;
      if (is_ignored (cfg, labels[i]))
        continue;
      probs_pixel (z + i * c, c, p);
      for (int k = 0; k < c; k++) {
        int g = c == 1 ? labels[i] == 1 : labels[i] == k;
        double den = psum[k] + gsum[k] + s;
        dldp[k] = -scale / c * (2.0 * g * den - (2 * inter[k] + s))
            / (den * den);
        dot += p[k] * dldp[k];
      }
      for (int k = 0; k < c; k++) {
        double dz = c == 1 ? dldp[k] * p[k] * (1 - p[k])
            : p[k] * (dldp[k] - dot);
        grad[i * c + k] += (float) dz;
      }
    }
  }
  g_free (inter);
  g_free (psum);
  g_free (gsum);
  g_free (dldp);
  return 1.0 - dsum / c;
}

/* Mean over valid pixels of pw*y*softplus(-z) + (1-y)*softplus(z). */
static double
bce (const WsiLossConfig * cfg, const float *z, size_t n,
    const uint8_t * labels, float *grad, uint64_t n_valid)
{
  const double pw = cfg->pos_weight;
  double lsum = 0;

  if (n_valid == 0)
    return 0;
  for (size_t i = 0; i < n; i++) {
    double x = z[i], y, sp_pos, sp_neg, sig;
    if (is_ignored (cfg, labels[i]))
      continue;
    y = labels[i];
    sp_neg = fmax (-x, 0) + log1p (exp (-fabs (x)));  /* softplus(-x) */
    sp_pos = sp_neg + x;                /* softplus(x) */
    lsum += pw * y * sp_neg + (1 - y) * sp_pos;
    if (grad) {
      sig = 1.0 / (1.0 + exp (-x));
      grad[i] += (float) ((-pw * y * (1 - sig) + (1 - y) * sig) / n_valid);
    }
  }
  return lsum / n_valid;
}

int
wsi_loss_compute (const WsiLossConfig * cfg, const float *logits,
    size_t n_pixels, int channels, const uint8_t * labels,
    const float *target, float *grad, WsiLossResult * res, char *err,
    size_t errlen)
{
  WsiLossResult r = { 0 };
  double *p;
  int64_t bad;

  if (channels < 1 || channels > WSI_LOSS_MAX_CLASSES) {
    snprintf (err, errlen, "loss: %d channels (1..%d supported)", channels,
        WSI_LOSS_MAX_CLASSES);
    return -1;
  }
  if (grad)
    memset (grad, 0, n_pixels * channels * sizeof *grad);

  if (cfg->kind == WSI_LOSS_MSE) {
    double sum = 0;
    size_t total = n_pixels * channels;
    if (!target) {
      snprintf (err, errlen, "mse loss needs a target");
      return -1;
    }
    for (size_t i = 0; i < total; i++) {
      double d = (double) logits[i] - target[i];
      sum += d * d;
      if (grad)
        grad[i] = (float) (2.0 * d / total);
    }
    r.loss = total ? sum / total : 0;
    r.n_valid = n_pixels;
    *res = r;
    return 0;
  }

  if (!labels) {
    snprintf (err, errlen, "%s loss needs labels", wsi_loss_kind_name
        (cfg->kind));
    return -1;
  }
  if (cfg->kind == WSI_LOSS_BCE && channels != 1) {
    snprintf (err, errlen, "bce loss needs a one-class net (this one has %d "
        "classes: use ce)", channels);
    return -1;
  }
  if ((cfg->kind == WSI_LOSS_CE || cfg->kind == WSI_LOSS_CE_DICE)
      && channels == 1) {
    snprintf (err, errlen, "%s loss needs >= 2 classes (one-class net: use "
        "bce or dice)", wsi_loss_kind_name (cfg->kind));
    return -1;
  }
  if (cfg->n_class_weights && cfg->n_class_weights != channels) {
    snprintf (err, errlen, "%d class weights for %d classes",
        cfg->n_class_weights, channels);
    return -1;
  }
  bad = check_labels (cfg, labels, n_pixels, channels == 1 ? 2 : channels);
  if (bad >= 0) {
    snprintf (err, errlen, "label %u at pixel %" G_GINT64_FORMAT " is not a "
        "class of this %d-class net (nor the ignore index %d)",
        labels[bad], bad, channels, cfg->ignore_index);
    return -1;
  }

  for (size_t i = 0; i < n_pixels; i++) {
    const float *zi = logits + i * channels;
    int pred;
    if (is_ignored (cfg, labels[i]))
      continue;
    r.n_valid++;
    pred = channels == 1 ? zi[0] > 0 : wsi_argmax (zi, channels);
    r.n_correct += pred == labels[i];
  }

  p = g_new (double, channels);
  switch (cfg->kind) {
    case WSI_LOSS_CE:
      r.ce = cross_entropy (cfg, logits, n_pixels, channels, labels, grad,
          1.0, p);
      r.loss = r.ce;
      break;
    case WSI_LOSS_DICE:
      r.dice = dice (cfg, logits, n_pixels, channels, labels, grad, 1.0, p);
      r.loss = r.dice;
      break;
    case WSI_LOSS_CE_DICE:
      r.ce = cross_entropy (cfg, logits, n_pixels, channels, labels, grad,
          cfg->ce_weight, p);
      r.dice = dice (cfg, logits, n_pixels, channels, labels, grad,
          cfg->dice_weight, p);
      r.loss = cfg->ce_weight * r.ce + cfg->dice_weight * r.dice;
      break;
    case WSI_LOSS_BCE:
      r.ce = bce (cfg, logits, n_pixels, labels, grad, r.n_valid);
      r.loss = r.ce;
      break;
    default:
      g_free (p);
      snprintf (err, errlen, "unknown loss kind %d", cfg->kind);
      return -1;
  }
  g_free (p);
  if (r.n_valid == 0) {
    /* Nothing labelled: no signal (PyTorch would give NaN). */
    r.loss = r.ce = r.dice = 0;
    if (grad)
      memset (grad, 0, n_pixels * channels * sizeof *grad);
  }
  *res = r;
  return 0;
}
