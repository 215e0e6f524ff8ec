/* Autoencoder for encoder pretraining: the encoder of a segmentation
 * architecture (param names and shapes as models/arch/wsinn-arch.c gives
 * them, so a pretrained checkpoint initialises the segmentation net by
 * name) + a light decoder that reconstructs the input.
 * The engine builds whole architectures only, so the encoders are rebuilt
 * here with the graph API (see docs/training.md, requests to the engine);
 * tests/train/test_pretrain.c checks the names and shapes stay identical. */
#include "wsitrain.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define BN_EPS 1e-5f
#define DECODER_WIDTH 32

static const char *
fmt (char *buf, size_t len, const char *f, ...)
    __attribute__((format (printf, 3, 4)));

static const char *
fmt (char *buf, size_t len, const char *f, ...)
{
  va_list ap;
  va_start (ap, f);
  vsnprintf (buf, len, f, ap);
  va_end (ap);
  return buf;
}

static int
conv_bn_relu (wsinn_net * net, int x, const char *prefix, int cout, int k,
    int dilation)
{
  char b[256];
  x = wsinn_conv (net, x, fmt (b, sizeof b, "%s.conv", prefix), cout, k, 1,
      dilation * (k / 2), dilation, 0);
  x = wsinn_batchnorm (net, x, fmt (b, sizeof b, "%s.bn", prefix), BN_EPS);
  return wsinn_activation (net, x, WSINN_ACT_RELU);
}

static int
unet_encoder (wsinn_net * net, int x, const wsinn_spec * spec)
{
  int depth = spec->depth ? spec->depth : 4;
  int base = spec->base_width ? spec->base_width : 32;
  char b[256];

  for (int i = 0; i <= depth; i++) {
    const char *p = i < depth ? fmt (b, sizeof b, "down.%d", i) : "bottom";
    char p1[256], p2[256];
    snprintf (p1, sizeof p1, "%s.conv1", p);
    snprintf (p2, sizeof p2, "%s.conv2", p);
    x = conv_bn_relu (net, x, p1, base << i, 3, 1);
    x = conv_bn_relu (net, x, p2, base << i, 3, 1);
    if (i < depth)
      x = wsinn_pooling (net, x, WSINN_POOL_MAX, 2, 2, 0);
  }
  return x;
}

static int
vgg_encoder (wsinn_net * net, int x, const wsinn_spec * spec, int os)
{
  static const int mult[5] = { 1, 2, 4, 8, 8 };
  static const int def_blocks[5] = { 2, 2, 3, 3, 3 };
  int base = spec->base_width ? spec->base_width : 32;
  const int *blocks = def_blocks;
  int stride = 1, dilation = 1;
  char b[256];

  for (int s = 0; s < 5; s++)
    if (spec->vgg_blocks[s])
      blocks = spec->vgg_blocks;
  for (int s = 0; s < 5; s++) {
    for (int j = 0; j < blocks[s]; j++)
      x = conv_bn_relu (net, x, fmt (b, sizeof b, "encoder.stages.%d.%d", s,
              j), base * mult[s], 3, dilation);
    if (stride * 2 <= os) {
      stride *= 2;
      x = wsinn_pooling (net, x, WSINN_POOL_MAX, 2, 2, 0);
    } else {
      dilation *= 2;
    }
  }
  return x;
}

static int
basic_block (wsinn_net * net, int x, const char *p, int cin, int cout,
    int stride, int dilation)
{
  char b[256];
  int idt = x, y;

  if (stride != 1 || cin != cout) {
    idt = wsinn_conv (net, x, fmt (b, sizeof b, "%s.downsample.0", p), cout,
        1, stride, 0, 1, 0);
    idt = wsinn_batchnorm (net, idt, fmt (b, sizeof b, "%s.downsample.1", p),
        BN_EPS);
  }
  y = wsinn_conv (net, x, fmt (b, sizeof b, "%s.conv1", p), cout, 3, stride,
      dilation, dilation, 0);
  y = wsinn_batchnorm (net, y, fmt (b, sizeof b, "%s.bn1", p), BN_EPS);
  y = wsinn_activation (net, y, WSINN_ACT_RELU);
  y = wsinn_conv (net, y, fmt (b, sizeof b, "%s.conv2", p), cout, 3, 1,
      dilation, dilation, 0);
  y = wsinn_batchnorm (net, y, fmt (b, sizeof b, "%s.bn2", p), BN_EPS);
  y = wsinn_add (net, y, idt);
  return wsinn_activation (net, y, WSINN_ACT_RELU);
}

static int
resnet_encoder (wsinn_net * net, int x, const wsinn_spec * spec,
    const char *which, int os)
{
  static const int b18[4] = { 2, 2, 2, 2 }, b34[4] = { 3, 4, 6, 3 };
  const int *blocks = !strcmp (which, "resnet34") ? b34 : b18;
  int base = spec->base_width ? spec->base_width : 64;
  int cin = base, stride_now = 4, dilation = 1;
  char b[256];

  x = wsinn_conv (net, x, "encoder.conv1", base, 7, 2, 3, 1, 0);
  x = wsinn_batchnorm (net, x, "encoder.bn1", BN_EPS);
  x = wsinn_activation (net, x, WSINN_ACT_RELU);
  x = wsinn_pooling (net, x, WSINN_POOL_MAX, 3, 2, 1);
  for (int i = 0; i < 4; i++) {
    int w = base << i, stride = i == 0 ? 1 : 2;
    if (stride == 2) {
      if (stride_now * 2 <= os)
        stride_now *= 2;
      else {
        stride = 1;
        dilation *= 2;
      }
    }
    for (int j = 0; j < blocks[i]; j++) {
      x = basic_block (net, x, fmt (b, sizeof b, "encoder.layer%d.%d", i + 1,
              j), cin, w, j == 0 ? stride : 1, dilation);
      cin = w;
    }
  }
  return x;
}

wsinn_net *
wsi_pretrain_net_new (const wsinn_spec * spec, char *err, size_t errlen)
{
  wsinn_net *net;
  const char *enc;
  int x, f = -1, y;

  if (strcmp (spec->arch, "unet") && strcmp (spec->arch, "fcn8s")
      && strcmp (spec->arch, "deeplabv3")) {
    snprintf (err, errlen, "unknown arch '%s' (known: unet, fcn8s, "
        "deeplabv3)", spec->arch);
    return NULL;
  }
  enc = spec->encoder[0] ? spec->encoder : !strcmp (spec->arch, "unet") ?
      "unet" : !strcmp (spec->arch, "fcn8s") ? "vgg" : "resnet18";
  net = wsinn_net_new ();
  if (!net) {
    snprintf (err, errlen, "out of memory");
    return NULL;
  }
  err[0] = 0;
  x = wsinn_input (net, 3);
  if (!strcmp (spec->arch, "unet")) {
    if (strcmp (enc, "unet"))
      snprintf (err, errlen, "unet supports only encoder 'unet' (got '%s')",
          enc);
    else
      f = unet_encoder (net, x, spec);
  } else {
    int os = !strcmp (spec->arch, "fcn8s") ? 32 : spec->output_stride ?
        spec->output_stride : 16;
    if (!strcmp (enc, "vgg"))
      f = vgg_encoder (net, x, spec, os);
    else if (!strcmp (enc, "resnet18") || !strcmp (enc, "resnet34"))
      f = resnet_encoder (net, x, spec, enc, os);
    else
      snprintf (err, errlen, "unknown encoder '%s' (known: vgg, resnet18, "
          "resnet34)", enc);
  }
  if (f < 0) {
    if (!err[0])
      snprintf (err, errlen, "%s", wsinn_net_error (net) ?
          wsinn_net_error (net) : "cannot build the encoder");
    wsinn_net_free (net);
    return NULL;
  }
  y = wsinn_conv (net, f, "pretrain.reduce", DECODER_WIDTH, 1, 1, 0, 1, 0);
  y = wsinn_batchnorm (net, y, "pretrain.bn", BN_EPS);
  y = wsinn_activation (net, y, WSINN_ACT_RELU);
  y = wsinn_resize_like (net, y, x);
  y = wsinn_conv (net, y, "pretrain.out", 3, 3, 1, 1, 1, 1);
  wsinn_set_output (net, y);
  if (wsinn_net_error (net)) {
    snprintf (err, errlen, "%s", wsinn_net_error (net));
    wsinn_net_free (net);
    return NULL;
  }
  return net;
}
