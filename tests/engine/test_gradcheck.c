/* Gradient checks by central finite differences, one small net per layer.
 * loss = sum(output * R) for a fixed random R; the analytic gradients from
 * wsinn_net_backward() must match (L(x + e) - L(x - e)) / 2e for sampled
 * entries of every parameter and of the input. Batch 2 throughout. */
#include "wsinn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 12345;

static double
urand (void)
{
  rng = rng * 6364136223846793005ull + 1442695040888963407ull;
  return (double) (rng >> 11) / (double) (1ull << 53);
}

typedef int (*build_fn) (wsinn_net * net, int x);

typedef struct
{
  const char *name;
  int cin, h, w;
  build_fn build;
  int kinks;                    /* piecewise-linear layer: distinct inputs */
} gcase;

/* 1x1 identity conv named "pre": blocked layout, values unchanged. */
static int
pre (wsinn_net * net, int x)
{
  return wsinn_conv (net, x, "pre", wsinn_net_channels (net, x), 1, 1, 0, 1,
      0);
}

static int b_conv3 (wsinn_net * n, int x) { return wsinn_conv (n, x, "c", 8, 3, 1, 1, 1, 1); }
static int b_conv_s2 (wsinn_net * n, int x) { return wsinn_conv (n, pre (n, x), "c", 16, 3, 2, 1, 1, 0); }
static int b_conv_dil (wsinn_net * n, int x) { return wsinn_conv (n, pre (n, x), "c", 8, 3, 1, 2, 2, 1); }
static int b_conv7 (wsinn_net * n, int x) { return wsinn_conv (n, x, "c", 8, 7, 2, 3, 1, 0); }
static int b_conv1_odd (wsinn_net * n, int x) { return wsinn_conv (n, pre (n, x), "c", 3, 1, 1, 0, 1, 1); }
static int b_deconv2 (wsinn_net * n, int x) { return wsinn_deconv (n, pre (n, x), "d", 8, 2, 2, 0, 0, 1); }
static int b_deconv4 (wsinn_net * n, int x) { return wsinn_deconv (n, x, "d", 3, 4, 2, 1, 0, 0); }
static int b_deconv16 (wsinn_net * n, int x) { return wsinn_deconv (n, x, "d", 2, 16, 8, 4, 0, 0); }
static int b_bn (wsinn_net * n, int x) { return wsinn_batchnorm (n, pre (n, x), "bn", 1e-5f); }
static int b_relu (wsinn_net * n, int x) { return wsinn_activation (n, pre (n, x), WSINN_ACT_RELU); }
static int b_sigmoid (wsinn_net * n, int x) { return wsinn_activation (n, pre (n, x), WSINN_ACT_SIGMOID); }
static int b_tanh (wsinn_net * n, int x) { return wsinn_activation (n, pre (n, x), WSINN_ACT_TANH); }
static int b_gelu (wsinn_net * n, int x) { return wsinn_activation (n, pre (n, x), WSINN_ACT_GELU); }
static int b_maxpool2 (wsinn_net * n, int x) { return wsinn_pooling (n, pre (n, x), WSINN_POOL_MAX, 2, 2, 0); }
static int b_maxpool3 (wsinn_net * n, int x) { return wsinn_pooling (n, pre (n, x), WSINN_POOL_MAX, 3, 2, 1); }
static int b_avgpool3 (wsinn_net * n, int x) { return wsinn_pooling (n, pre (n, x), WSINN_POOL_AVG, 3, 1, 1); }
static int b_gap (wsinn_net * n, int x) { return wsinn_global_avgpool (n, pre (n, x)); }
static int b_softmax (wsinn_net * n, int x) { return wsinn_softmax (n, pre (n, x)); }

static int
b_resize (wsinn_net * n, int x)
{
  int small = wsinn_pooling (n, pre (n, x), WSINN_POOL_AVG, 2, 2, 0);
  return wsinn_resize_like (n, wsinn_conv (n, small, "c", 8, 3, 1, 1, 1, 1),
      x);
}

static int
b_broadcast (wsinn_net * n, int x)
{
  int g = wsinn_global_avgpool (n, x);
  return wsinn_resize_like (n, wsinn_conv (n, g, "c", 8, 1, 1, 0, 1, 1), x);
}

static int
b_concat (wsinn_net * n, int x)
{
  int a = wsinn_conv (n, x, "a", 8, 3, 1, 1, 1, 0);
  int b = wsinn_conv (n, x, "b", 16, 1, 1, 0, 1, 1);
  int in[3] = { b, a, b };
  return wsinn_concat (n, 3, in);
}

static int
b_add (wsinn_net * n, int x)
{
  int a = wsinn_conv (n, x, "a", 8, 3, 1, 1, 1, 0);
  int b = wsinn_conv (n, x, "b", 8, 1, 1, 0, 1, 1);
  return wsinn_add (n, a, b);
}

/* A residual block as in ResNet (BN batch statistics, shared input). */
static int
b_resblock (wsinn_net * n, int x)
{
  int y = wsinn_conv (n, x, "conv1", 8, 3, 2, 1, 1, 0);
  y = wsinn_batchnorm (n, y, "bn1", 1e-5f);
  y = wsinn_activation (n, y, WSINN_ACT_TANH);
  y = wsinn_conv (n, y, "conv2", 8, 3, 1, 1, 1, 0);
  y = wsinn_batchnorm (n, y, "bn2", 1e-5f);
  int idt = wsinn_conv (n, x, "downsample.0", 8, 1, 2, 0, 1, 0);
  idt = wsinn_batchnorm (n, idt, "downsample.1", 1e-5f);
  return wsinn_activation (n, wsinn_add (n, y, idt), WSINN_ACT_SIGMOID);
}

static const gcase cases[] = {
  {"conv3x3_bias", 5, 6, 7, b_conv3, 0},
  {"conv3x3_stride2", 8, 8, 6, b_conv_s2, 0},
  {"conv3x3_dilation2", 8, 7, 7, b_conv_dil, 0},
  {"conv7x7_stride2", 3, 9, 8, b_conv7, 0},
  {"conv1x1_3out", 8, 5, 5, b_conv1_odd, 0},
  {"deconv2x2_s2_bias", 16, 4, 3, b_deconv2, 0},
  {"deconv4x4_s2_p1", 3, 4, 4, b_deconv4, 0},
  {"deconv16x16_s8_p4", 2, 2, 3, b_deconv16, 0},
  {"batchnorm_train", 8, 5, 4, b_bn, 0},
  {"relu", 8, 5, 5, b_relu, 1},
  {"sigmoid", 8, 4, 5, b_sigmoid, 0},
  {"tanh", 8, 4, 5, b_tanh, 0},
  {"gelu", 8, 4, 5, b_gelu, 0},
  {"maxpool2x2", 8, 6, 6, b_maxpool2, 1},
  {"maxpool3x3_s2_p1", 8, 7, 6, b_maxpool3, 1},
  {"avgpool3x3_p1", 8, 5, 6, b_avgpool3, 0},
  {"global_avgpool", 8, 5, 6, b_gap, 0},
  {"resize_bilinear", 8, 6, 8, b_resize, 0},
  {"resize_broadcast", 8, 5, 4, b_broadcast, 0},
  {"softmax", 8, 3, 4, b_softmax, 0},
  {"concat", 8, 5, 5, b_concat, 0},
  {"add", 8, 5, 5, b_add, 0},
  {"residual_block", 8, 6, 6, b_resblock, 0},
};

static double
loss_of (wsinn_net * net, const float *in, int n, int h, int w, float *out,
    const float *r, size_t osize)
{
  char err[256];
  if (wsinn_net_forward (net, in, n, h, w, out, err, sizeof err) < 0) {
    fprintf (stderr, "forward: %s\n", err);
    exit (1);
  }
  double l = 0;
  for (size_t i = 0; i < osize; i++)
    l += (double) out[i] * r[i];
  return l;
}

/* Checks @count sampled entries of @x (size @size) against @grad. */
static int
check_entries (const char *what, float *x, const float *grad, size_t size,
    int count, double eps, wsinn_net * net, const float *in, int n, int h,
    int w, float *out, const float *r, size_t osize)
{
  double gmax = 0;
  for (size_t i = 0; i < size; i++)
    gmax = fmax (gmax, fabs (grad[i]));
  int bad = 0;
  for (int k = 0; k < count && k < (int) size; k++) {
    size_t i = size <= (size_t) count ? (size_t) k : (size_t) (urand () * size);
    float keep = x[i];
    x[i] = keep + (float) eps;
    wsinn_net_params_changed (net);
    double lp = loss_of (net, in, n, h, w, out, r, osize);
    x[i] = keep - (float) eps;
    wsinn_net_params_changed (net);
    double lm = loss_of (net, in, n, h, w, out, r, osize);
    x[i] = keep;
    wsinn_net_params_changed (net);
    double num = (lp - lm) / (2 * eps);
    double ana = grad[i];
    double tol = 2e-2 * fmax (fabs (num), fabs (ana)) + 5e-3 * fmax (gmax, 1.0);
    if (!(fabs (num - ana) <= tol)) {
      printf ("    %s[%zu]: analytic %.6g numeric %.6g\n", what, i, ana, num);
      bad++;
    }
  }
  return bad;
}

static int
run_case (const gcase * c)
{
  const int n = 2;
  char err[256];
  wsinn_net *net = wsinn_net_new ();
  int x = wsinn_input (net, c->cin);
  wsinn_set_output (net, c->build (net, x));
  if (wsinn_net_error (net)) {
    printf ("FAIL %s: build: %s\n", c->name, wsinn_net_error (net));
    return 1;
  }
  wsinn_net_init_params (net, 7);
  for (size_t i = 0; i < wsinn_net_n_params (net); i++) {
    wsinn_param *p = wsinn_net_param (net, i);
    if (!strcmp (p->name, "pre.weight")) {      /* identity */
      memset (p->data, 0, p->size * sizeof (float));
      for (int64_t k = 0; k < p->shape[0]; k++)
        p->data[k * p->shape[1] + k] = 1.0f;
    } else if (strstr (p->name, "bias") || strstr (p->name, "bn")) {
      for (size_t j = 0; j < p->size; j++)
        p->data[j] += (float) (0.4 * urand () - 0.2);
    }
  }
  wsinn_net_params_changed (net);
  wsinn_net_set_training (net, 1);
  int oc, oh, ow;
  if (wsinn_net_output_shape (net, n, c->h, c->w, &oc, &oh, &ow, err,
          sizeof err) < 0) {
    printf ("FAIL %s: %s\n", c->name, err);
    return 1;
  }
  size_t isize = (size_t) n * c->h * c->w * c->cin;
  size_t osize = (size_t) n * oh * ow * oc;
  float *in = malloc (isize * 4), *out = malloc (osize * 4);
  float *r = malloc (osize * 4), *din = malloc (isize * 4);
  if (c->kinks) {               /* distinct values, away from 0 and ties */
    for (size_t i = 0; i < isize; i++)
      in[i] = (float) (((double) i + 0.5) / isize * 2 - 1);
    for (size_t i = isize - 1; i > 0; i--) {
      size_t j = (size_t) (urand () * (i + 1));
      float t = in[i];
      in[i] = in[j];
      in[j] = t;
    }
  } else {
    for (size_t i = 0; i < isize; i++)
      in[i] = (float) (2 * urand () - 1);
  }
  for (size_t i = 0; i < osize; i++)
    r[i] = (float) (2 * urand () - 1);
  loss_of (net, in, n, c->h, c->w, out, r, osize);
  if (wsinn_net_backward (net, r, din, err, sizeof err) < 0) {
    printf ("FAIL %s: backward: %s\n", c->name, err);
    return 1;
  }
  double eps = c->kinks ? 1e-3 : 1e-2;
  int bad = check_entries ("input", in, din, isize, 16, eps, net, in, n,
      c->h, c->w, out, r, osize);
  int checked = 1;
  for (size_t i = 0; i < wsinn_net_n_params (net); i++) {
    wsinn_param *p = wsinn_net_param (net, i);
    if (!p->trainable || !strncmp (p->name, "pre.", 4))
      continue;
    /* the analytic gradient is overwritten by forward; keep a copy */
    float *g = malloc (p->size * 4);
    memcpy (g, p->grad, p->size * 4);
    bad += check_entries (p->name, p->data, g, p->size, 12, eps, net, in, n,
        c->h, c->w, out, r, osize);
    free (g);
    checked++;
  }
  printf ("%s %s: %d tensors checked (output %dx%dx%dx%d)\n",
      bad ? "FAIL" : "ok", c->name, checked, n, oc, oh, ow);
  free (in);
  free (out);
  free (r);
  free (din);
  wsinn_net_free (net);
  return bad != 0;
}

int
main (int argc, char **argv)
{
  int failed = 0, ran = 0;
  wsinn_set_num_threads (2);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    if (argc > 1 && !strstr (cases[i].name, argv[1]))
      continue;
    failed += run_case (&cases[i]);
    ran++;
  }
  printf ("%d passed, %d failed\n", ran - failed, failed);
  return failed ? 1 : 0;
}
