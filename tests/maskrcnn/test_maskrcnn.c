/* Engine features for Mask R-CNN (several outputs, shared convs, frozen
 * BatchNorm, nearest resize, linear layers) by finite differences and edge
 * cases, and the Mask R-CNN inference / training step on a small random net
 * (no crash, finite values, empty sets): suites maskrcnn and asan. */
#include "wsimaskrcnn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

#define CHECK(cond, ...) do { if (!(cond)) { failures++; \
    printf ("FAIL %s:%d: ", __FILE__, __LINE__); printf (__VA_ARGS__); \
    printf ("\n"); } } while (0)

static uint64_t rs = 12345;
static float
frand (void)
{
  rs = rs * 6364136223846793005ull + 1442695040888963407ull;
  return (float) ((rs >> 40) / (double) (1ull << 24)) * 2.0f - 1.0f;
}

static void
fill (float *x, size_t n)
{
  for (size_t i = 0; i < n; i++)
    x[i] = frand ();
}

/* sum_k <R_k, out_k> of a forward */
static double
objective (wsinn_net * net, const float *x, int n, int h, int w, float **outs,
    float **r, const size_t *sz, int nout)
{
  char err[256];
  if (wsinn_net_forward_outputs (net, x, n, h, w, outs, err, sizeof err)) {
    printf ("forward: %s\n", err);
    return NAN;
  }
  double s = 0;
  for (int k = 0; k < nout; k++)
    for (size_t i = 0; i < sz[k]; i++)
      s += (double) outs[k][i] * (r[k] ? r[k][i] : 0.0);
  return s;
}

/* Analytic gradients of every trainable parameter and the input against
 * central differences (training mode), for sampled entries. */
static void
gradcheck (const char *what, wsinn_net * net, int n, int h, int w, int cin,
    float **r_in)
{
  char err[256];
  int nout = wsinn_net_n_outputs (net);
  float *outs[WSINN_MAX_OUTPUTS], *r[WSINN_MAX_OUTPUTS];
  size_t sz[WSINN_MAX_OUTPUTS];
  for (int k = 0; k < nout; k++) {
    int c, oh, ow;
    wsinn_net_output_shape_at (net, k, n, h, w, &c, &oh, &ow, err,
        sizeof err);
    sz[k] = (size_t) n * oh * ow * c;
    outs[k] = malloc (sz[k] * sizeof (float));
    r[k] = r_in[k] ? malloc (sz[k] * sizeof (float)) : NULL;
    if (r[k])
      fill (r[k], sz[k]);
  }
  size_t nx = (size_t) n * h * w * cin;
  float *x = malloc (nx * sizeof (float)), *dx = malloc (nx * sizeof (float));
  fill (x, nx);
  wsinn_net_set_training (net, 1);
  objective (net, x, n, h, w, outs, r, sz, nout);
  CHECK (!wsinn_net_backward_outputs (net, (const float *const *) r, dx, err,
          sizeof err), "%s backward: %s", what, err);
  const double eps = 1e-2;
  double worst = 0;
  for (size_t pi = 0; pi < wsinn_net_n_params (net); pi++) {
    wsinn_param *p = wsinn_net_param (net, pi);
    float gmax = 0;
    for (size_t i = 0; i < p->size; i++)
      gmax = fmaxf (gmax, fabsf (p->grad[i]));
    CHECK (!p->trainable || gmax > 0, "%s: %s has no gradient", what,
        p->name);
    for (size_t i = 0; i < p->size; i += 1 + p->size / 7) {
      float keep = p->data[i];
      p->data[i] = keep + (float) eps;
      wsinn_net_params_changed (net);
      double fp = objective (net, x, n, h, w, outs, r, sz, nout);
      p->data[i] = keep - (float) eps;
      wsinn_net_params_changed (net);
      double fm = objective (net, x, n, h, w, outs, r, sz, nout);
      p->data[i] = keep;
      wsinn_net_params_changed (net);
      double num = p->trainable ? (fp - fm) / (2 * eps) : 0.0;
      double e = fabs (num - p->grad[i]) / (0.02 * fabs (num) + 0.005 * gmax
          + 1e-4);
      worst = fmax (worst, e);
      CHECK (e <= 1, "%s: %s[%zu] analytic %g numeric %g", what, p->name, i,
          p->grad[i], num);
    }
  }
  float gmax = 0;
  for (size_t i = 0; i < nx; i++)
    gmax = fmaxf (gmax, fabsf (dx[i]));
  for (size_t i = 0; i < nx; i += 1 + nx / 11) {
    float keep = x[i];
    x[i] = keep + (float) eps;
    double fp = objective (net, x, n, h, w, outs, r, sz, nout);
    x[i] = keep - (float) eps;
    double fm = objective (net, x, n, h, w, outs, r, sz, nout);
    x[i] = keep;
    double num = (fp - fm) / (2 * eps);
    double e = fabs (num - dx[i]) / (0.02 * fabs (num) + 0.005 * gmax + 1e-4);
    worst = fmax (worst, e);
    CHECK (e <= 1, "%s: input[%zu] analytic %g numeric %g", what, i, dx[i],
        num);
  }
  printf ("%s: worst error %.3g of the tolerance (input gradient up to "
      "%.3g)\n", what, worst, gmax);
  for (int k = 0; k < nout; k++) {
    free (outs[k]);
    free (r[k]);
  }
  free (x);
  free (dx);
}

static void
test_engine (void)
{
  char err[256];
  float *on[2] = { (float *) 1, (float *) 1 }, *one[2] = { (float *) 1, NULL };

  /* shared conv: two uses of one weight, two outputs, then the second only */
  wsinn_net *net = wsinn_net_new ();
  int x = wsinn_input (net, 4);
  int a = wsinn_conv (net, x, "c", 4, 3, 1, 1, 1, 1);
  int t = wsinn_activation (net, a, WSINN_ACT_TANH);
  int b = wsinn_conv_shared (net, t, a);
  CHECK (wsinn_add_output (net, a) == 0 && wsinn_add_output (net, b) == 1,
      "outputs");
  CHECK (wsinn_net_n_params (net) == 2, "shared conv added parameters");
  wsinn_net_init_params (net, 1);
  gradcheck ("shared conv, two outputs", net, 2, 5, 6, 4, on);
  gradcheck ("shared conv, output 1 without gradient", net, 2, 5, 6, 4, one);
  CHECK (wsinn_add_output (net, a) < 0 && wsinn_net_error (net)
      && strstr (wsinn_net_error (net), "already output"), "duplicate output");
  wsinn_net_free (net);

  /* frozen BatchNorm: running statistics in training, no own gradient */
  net = wsinn_net_new ();
  x = wsinn_input (net, 3);
  a = wsinn_conv (net, x, "c", 8, 3, 1, 1, 1, 0);
  a = wsinn_batchnorm_frozen (net, a, "bn", 1e-5f);
  a = wsinn_activation (net, a, WSINN_ACT_TANH);  /* smooth: finite differences */
  a = wsinn_pooling (net, a, WSINN_POOL_MAX, 1, 2, 0);     /* LastLevelMaxPool */
  wsinn_set_output (net, a);
  wsinn_net_init_params (net, 2);
  wsinn_param *v = wsinn_net_find_param (net, "bn.running_var");
  wsinn_param *mu = wsinn_net_find_param (net, "bn.running_mean");
  for (int i = 0; i < 8; i++) {
    v->data[i] = 0.5f + 0.2f * i;
    mu->data[i] = 0.1f * i - 0.3f;
  }
  CHECK (!wsinn_net_find_param (net, "bn.weight")->trainable, "frozen");
  wsinn_net_params_changed (net);
  int c, oh, ow;
  wsinn_net_output_shape (net, 1, 7, 9, &c, &oh, &ow, err, sizeof err);
  CHECK (oh == 4 && ow == 5, "max-pool k1 s2 on 7x9: %dx%d", oh, ow);
  float in[7 * 9 * 3], o0[4 * 5 * 8], o1[4 * 5 * 8];
  fill (in, 7 * 9 * 3);
  wsinn_net_forward (net, in, 1, 7, 9, o0, err, sizeof err);
  wsinn_net_set_training (net, 1);
  wsinn_net_forward (net, in, 1, 7, 9, o1, err, sizeof err);
  float d = 0;
  for (int i = 0; i < 4 * 5 * 8; i++)
    d = fmaxf (d, fabsf (o0[i] - o1[i]));
  CHECK (d < 1e-5f, "frozen BN: training forward differs by %g", d);
  CHECK (v->data[0] == 0.5f, "frozen BN: running statistics changed");
  float *r1[1] = { (float *) 1 };
  gradcheck ("frozen BatchNorm + max-pool k1 s2", net, 2, 7, 9, 3, r1);
  wsinn_net_free (net);

  /* nearest 2x upsampling + add (FPN top-down), linear layer */
  net = wsinn_net_new ();
  x = wsinn_input (net, 3);
  a = wsinn_conv (net, x, "lat", 4, 1, 1, 0, 1, 1);
  b = wsinn_conv (net, x, "down", 4, 3, 2, 1, 1, 1);
  b = wsinn_resize_nearest_like (net, b, a);
  a = wsinn_add (net, a, b);
  wsinn_add_output (net, a);
  wsinn_net_init_params (net, 4);
  gradcheck ("nearest resize", net, 2, 6, 8, 3, r1);
  CHECK (wsinn_net_forward (net, in, 1, 7, 9, o0, err, sizeof err) < 0
      && strstr (err, "not an integer scale"), "nearest 4x5 -> 7x9: %s", err);
  wsinn_net_free (net);

  net = wsinn_net_new ();
  x = wsinn_input (net, 3);
  a = wsinn_linear (net, x, "fc", 5, 4, 1);
  wsinn_add_output (net, wsinn_linear (net, a, "fc2", 2, 1, 0));
  wsinn_param *fw = wsinn_net_find_param (net, "fc.weight");
  CHECK (fw && fw->ndims == 2 && fw->shape[0] == 5 && fw->shape[1] == 48,
      "linear weight shape");
  wsinn_net_init_params (net, 3);
  gradcheck ("linear", net, 3, 4, 4, 3, r1);
  CHECK (wsinn_net_output_shape_at (net, 1, 1, 4, 4, &c, &oh, &ow, err,
          sizeof err) < 0 && strstr (err, "no output 1"), "bad output index");
  wsinn_net_free (net);
}

static void
test_maskrcnn (void)
{
  char err[256];
  wsimrcnn_config cfg;
  wsimrcnn_config_init (&cfg);
  cfg.spec.base_width = 8;
  cfg.spec.fpn_channels = 16;
  cfg.spec.representation = 32;
  cfg.spec.mask_width = 16;
  cfg.spec.n_classes = 3;
  cfg.det.score_thresh = 0.0f;
  wsimrcnn *m = wsimrcnn_new (&cfg, err, sizeof err);
  CHECK (m, "wsimrcnn_new: %s", err);
  if (!m)
    return;
  for (int i = 0; i < 3; i++)
    wsinn_net_init_params (wsimrcnn_net (m, i), 7 + i);
  const int h = 64, w = 96, k = cfg.det.detections_per_img;
  float *img = malloc (sizeof (float) * h * w * 3);
  fill (img, (size_t) h * w * 3);
  float *boxes = malloc (sizeof (float) * k * 4), *scores =
      malloc (sizeof (float) * k), *masks = malloc (sizeof (float) * k * 784),
      *pasted = malloc (sizeof (float) * k * h * w);
  int32_t *labels = malloc (sizeof (int32_t) * k);
  int nd = wsimrcnn_detect (m, img, h, w, boxes, scores, labels, masks,
      pasted, err, sizeof err);
  CHECK (nd > 0, "detect: %d %s", nd, nd < 0 ? err : "");
  for (int i = 0; i < nd; i++)
    CHECK (labels[i] >= 1 && labels[i] < 3 && scores[i] >= 0
        && boxes[i * 4] >= 0 && boxes[i * 4 + 2] <= w && masks[i * 784] >= 0
        && masks[i * 784] <= 1, "detection %d", i);
  CHECK (wsimrcnn_detect (m, img, 60, 96, boxes, scores, labels, masks, NULL,
          err, sizeof err) < 0, "60x96 accepted");

  /* a batch of the image twice: both equal to the single-image result */
  {
    float *img2 = malloc (sizeof (float) * 2 * h * w * 3);
    float *b2 = malloc (sizeof (float) * 2 * k * 4), *s2 =
        malloc (sizeof (float) * 2 * k), *m2 =
        malloc (sizeof (float) * 2 * k * 784);
    int32_t *l2 = malloc (sizeof (int32_t) * 2 * k);
    int counts[2];
    memcpy (img2, img, sizeof (float) * h * w * 3);
    memcpy (img2 + h * w * 3, img, sizeof (float) * h * w * 3);
    CHECK (!wsimrcnn_detect_batch (m, img2, 2, h, w, b2, s2, l2, m2, NULL,
            counts, err, sizeof err), "batch: %s", err);
    for (int b = 0; b < 2; b++) {
      CHECK (counts[b] == nd, "batch image %d: %d detections, alone %d", b,
          counts[b], nd);
      float dmax = 0;
      for (int i = 0; i < nd && counts[b] == nd; i++) {
        CHECK (l2[b * k + i] == labels[i], "batch label %d", i);
        dmax = fmaxf (dmax, fabsf (s2[b * k + i] - scores[i]));
        for (int j = 0; j < 4; j++)
          dmax = fmaxf (dmax, fabsf (b2[(b * k + i) * 4 + j] - boxes[i * 4
                      + j]) / 100);
      }
      CHECK (dmax < 1e-4f, "batch image %d differs by %g", b, dmax);
    }
    free (img2);
    free (b2);
    free (s2);
    free (m2);
    free (l2);
  }

  float gt[8] = { 4, 6, 40, 30, 50, 10, 90, 60 };
  int32_t gl[2] = { 1, 2 };
  float *gm = calloc ((size_t) 2 * h * w, sizeof (float));
  for (int y = 10; y < 28; y++)
    for (int x = 8; x < 36; x++)
      gm[y * w + x] = 1;
  for (int y = 14; y < 56; y++)
    for (int x = 54; x < 86; x++)
      gm[h * w + y * w + x] = 1;
  wsimrcnn_losses L;
  for (int n_gt = 0; n_gt <= 2; n_gt += 2) {
    CHECK (!wsimrcnn_train_step (m, img, h, w, gt, gl, gm, n_gt, &L, err,
            sizeof err), "train step (%d gt): %s", n_gt, err);
    double s = L.rpn_objectness + L.rpn_box + L.classifier + L.box_reg
        + L.mask;
    CHECK (isfinite (s) && L.rpn_objectness > 0 && L.classifier > 0,
        "losses (%d gt): %g %g %g %g %g", n_gt, L.rpn_objectness, L.rpn_box,
        L.classifier, L.box_reg, L.mask);
    CHECK (n_gt || (L.rpn_box == 0 && L.box_reg == 0 && L.mask == 0),
        "no gt: box / mask losses %g %g %g", L.rpn_box, L.box_reg, L.mask);
    CHECK (!n_gt || L.mask > 0, "mask loss 0 with gt");
    printf ("train step, %d gt: losses %.4f %.4f %.4f %.4f %.4f\n", n_gt,
        L.rpn_objectness, L.rpn_box, L.classifier, L.box_reg, L.mask);
  }
  CHECK (wsimrcnn_train_step (m, img, h, w, NULL, NULL, NULL, 2, &L, err,
          sizeof err) < 0, "train step without gt arrays");
  wsimrcnn_free (m);
  wsimrcnn_config_init (&cfg);
  strcpy (cfg.spec.backbone, "vgg");
  CHECK (!wsimrcnn_new (&cfg, err, sizeof err)
      && strstr (err, "unknown Mask R-CNN backbone"), "bad backbone: %s", err);
  free (img);
  free (boxes);
  free (scores);
  free (masks);
  free (pasted);
  free (labels);
  free (gm);
}

int
main (void)
{
  test_engine ();
  test_maskrcnn ();
  if (failures)
    printf ("%d failures\n", failures);
  else
    printf ("all passed\n");
  return failures ? 1 : 0;
}
