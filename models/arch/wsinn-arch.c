/* Segmentation architectures on the wsinn graph API. Module tree and
 * parameter names mirror models/reference/wsinn_ref.py exactly. */
#include "wsinn.h"

#include <ctype.h>
#include <stdarg.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BN_EPS 1e-5f

void
wsinn_spec_init (wsinn_spec * spec)
{
  memset (spec, 0, sizeof *spec);
  spec->n_classes = 2;
}

static int
parse_int (const char *s, int *out)
{
  char *end;
  errno = 0;
  long v = strtol (s, &end, 10);
  while (isspace ((unsigned char) *end))
    end++;
  if (errno || end == s || *end || v < -1000000 || v > 1000000)
    return -1;
  *out = (int) v;
  return 0;
}

/* "[a, b, c]" (JSON list of integers) with exactly @n entries. */
static int
parse_int_list (const char *s, int *out, int n)
{
  const char *q = s;
  while (isspace ((unsigned char) *q))
    q++;
  if (*q++ != '[')
    return -1;
  for (int i = 0; i < n; i++) {
    char *end;
    errno = 0;
    long v = strtol (q, &end, 10);
    if (errno || end == q || v < 0 || v > 100000)
      return -1;
    out[i] = (int) v;
    q = end;
    while (isspace ((unsigned char) *q))
      q++;
    if (*q != (i + 1 < n ? ',' : ']'))
      return -1;
    q++;
  }
  while (isspace ((unsigned char) *q))
    q++;
  return *q ? -1 : 0;
}

int
wsinn_spec_set (wsinn_spec * spec, const char *key, const char *value,
    char *err, size_t errlen)
{
  int bad = 0;
  if (!strcmp (key, "arch") || !strcmp (key, "encoder")) {
    char *dst = key[0] == 'a' ? spec->arch : spec->encoder;
    if (strlen (value) >= sizeof spec->arch)
      bad = 1;
    else
      strcpy (dst, value);
  } else if (!strcmp (key, "n_classes"))
    bad = parse_int (value, &spec->n_classes) || spec->n_classes < 1
        || spec->n_classes > 4096;
  else if (!strcmp (key, "depth"))
    bad = parse_int (value, &spec->depth) || spec->depth < 1
        || spec->depth > 8;
  else if (!strcmp (key, "base_width"))
    bad = parse_int (value, &spec->base_width) || spec->base_width < 1
        || spec->base_width > 4096;
  else if (!strcmp (key, "vgg_blocks"))
    bad = parse_int_list (value, spec->vgg_blocks, 5);
  else if (!strcmp (key, "output_stride"))
    bad = parse_int (value, &spec->output_stride)
        || (spec->output_stride != 8 && spec->output_stride != 16);
  else if (!strcmp (key, "aspp_width"))
    bad = parse_int (value, &spec->aspp_width) || spec->aspp_width < 1
        || spec->aspp_width > 8192;
  else if (!strcmp (key, "aspp_rates"))
    bad = parse_int_list (value, spec->aspp_rates, 3)
        || !spec->aspp_rates[0] || !spec->aspp_rates[1]
        || !spec->aspp_rates[2];
  if (bad) {
    snprintf (err, errlen, "bad value for %s: '%.60s'", key, value);
    return -1;
  }
  return 0;
}

int
wsinn_spec_size_multiple (const wsinn_spec * spec)
{
  if (!strcmp (spec->arch, "unet"))
    return 1 << (spec->depth ? spec->depth : 4);
  return 32;
}

/* ------------------------------------------------------------ blocks */

static const char *
name (char *buf, size_t len, const char *fmt, ...)
    __attribute__((format (printf, 3, 4)));

static const char *
name (char *buf, size_t len, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (buf, len, fmt, ap);
  va_end (ap);
  return buf;
}

/* ConvBNReLU: P.conv (no bias), P.bn, ReLU. */
static int
conv_bn_relu (wsinn_net * net, int x, const char *prefix, int cout, int k,
    int stride, int dilation)
{
  char b[256];
  x = wsinn_conv (net, x, name (b, sizeof b, "%s.conv", prefix), cout, k,
      stride, dilation * (k / 2), dilation, 0);
  x = wsinn_batchnorm (net, x, name (b, sizeof b, "%s.bn", prefix), BN_EPS);
  return wsinn_activation (net, x, WSINN_ACT_RELU);
}

static int
double_conv (wsinn_net * net, int x, const char *prefix, int cout)
{
  char b[256];
  x = conv_bn_relu (net, x, name (b, sizeof b, "%s.conv1", prefix), cout, 3,
      1, 1);
  return conv_bn_relu (net, x, name (b, sizeof b, "%s.conv2", prefix), cout,
      3, 1, 1);
}

/* VGGEncoder: writes the output of every stage into @feats (5). */
static int
vgg_encoder (wsinn_net * net, int x, const wsinn_spec * spec, int base,
    int output_stride, int *feats, int *channels)
{
  static const int mult[5] = { 1, 2, 4, 8, 8 };
  static const int def_blocks[5] = { 2, 2, 3, 3, 3 };
  const int *blocks = spec->vgg_blocks[0] || spec->vgg_blocks[1]
      || spec->vgg_blocks[2] || spec->vgg_blocks[3]
      || spec->vgg_blocks[4] ? spec->vgg_blocks : def_blocks;
  int stride = 1, dilation = 1;
  char b[256];
  for (int s = 0; s < 5; s++) {
    int w = base * mult[s];
    for (int j = 0; j < blocks[s]; j++)
      x = conv_bn_relu (net, x, name (b, sizeof b, "encoder.stages.%d.%d", s,
              j), w, 3, 1, dilation);
    if (stride * 2 <= output_stride) {
      stride *= 2;
      x = wsinn_pooling (net, x, WSINN_POOL_MAX, 2, 2, 0);
    } else {
      dilation *= 2;
    }
    feats[s] = x;
    channels[s] = w;
  }
  return 5;
}

/* BatchNorm2d, or torchvision's FrozenBatchNorm2d. */
static int
bn_layer (wsinn_net * net, int x, const char *prefix, int frozen)
{
  return frozen ? wsinn_batchnorm_frozen (net, x, prefix, BN_EPS) :
      wsinn_batchnorm (net, x, prefix, BN_EPS);
}

/* BasicBlock at prefix P. */
static int
basic_block (wsinn_net * net, int x, const char *p, int cin, int cout,
    int stride, int dilation, int frozen)
{
  char b[256];
  int idt = x;
  if (stride != 1 || cin != cout) {
    idt = wsinn_conv (net, x, name (b, sizeof b, "%s.downsample.0", p), cout,
        1, stride, 0, 1, 0);
    idt = bn_layer (net, idt, name (b, sizeof b, "%s.downsample.1", p),
        frozen);
  }
  int y = wsinn_conv (net, x, name (b, sizeof b, "%s.conv1", p), cout, 3,
      stride, dilation, dilation, 0);
  y = bn_layer (net, y, name (b, sizeof b, "%s.bn1", p), frozen);
  y = wsinn_activation (net, y, WSINN_ACT_RELU);
  y = wsinn_conv (net, y, name (b, sizeof b, "%s.conv2", p), cout, 3, 1,
      dilation, dilation, 0);
  y = bn_layer (net, y, name (b, sizeof b, "%s.bn2", p), frozen);
  y = wsinn_add (net, y, idt);
  return wsinn_activation (net, y, WSINN_ACT_RELU);
}

/* ResNet-18/34 under @prefix ("encoder", or "backbone.body" with frozen
 * BatchNorm for Mask R-CNN: torchvision's names below the prefix). */
static int
resnet_encoder (wsinn_net * net, int x, const char *which, int base,
    int output_stride, int *feats, int *channels, const char *prefix,
    int frozen)
{
  static const int b18[4] = { 2, 2, 2, 2 }, b34[4] = { 3, 4, 6, 3 };
  const int *blocks = !strcmp (which, "resnet34") ? b34 : b18;
  char b[256];
  x = wsinn_conv (net, x, name (b, sizeof b, "%s.conv1", prefix), base, 7, 2,
      3, 1, 0);
  x = bn_layer (net, x, name (b, sizeof b, "%s.bn1", prefix), frozen);
  x = wsinn_activation (net, x, WSINN_ACT_RELU);
  x = wsinn_pooling (net, x, WSINN_POOL_MAX, 3, 2, 1);
  int cin = base, stride_now = 4, dilation = 1;
  for (int i = 0; i < 4; i++) {
    int w = base << i;
    int stride = i == 0 ? 1 : 2;
    if (stride == 2) {
      if (stride_now * 2 <= output_stride)
        stride_now *= 2;
      else {
        stride = 1;
        dilation *= 2;
      }
    }
    for (int j = 0; j < blocks[i]; j++) {
      x = basic_block (net, x, name (b, sizeof b, "%s.layer%d.%d", prefix,
              i + 1, j), cin, w, j == 0 ? stride : 1, dilation, frozen);
      cin = w;
    }
    feats[i] = x;
    channels[i] = w;
  }
  return 4;
}

static int
encoder (wsinn_net * net, int x, const wsinn_spec * spec, const char *enc,
    int output_stride, int *feats, int *channels, char *err, size_t errlen)
{
  if (!strcmp (enc, "vgg"))
    return vgg_encoder (net, x, spec, spec->base_width ? spec->base_width :
        32, output_stride, feats, channels);
  if (!strcmp (enc, "resnet18") || !strcmp (enc, "resnet34"))
    return resnet_encoder (net, x, enc, spec->base_width ? spec->base_width :
        64, output_stride, feats, channels, "encoder", 0);
  snprintf (err, errlen, "unknown encoder '%s' (known: vgg, resnet18, "
      "resnet34)", enc);
  return -1;
}

/* ----------------------------------------------------------- networks */

static int
build_unet (wsinn_net * net, int x, const wsinn_spec * spec)
{
  int depth = spec->depth ? spec->depth : 4;
  int base = spec->base_width ? spec->base_width : 32;
  int skips[16];
  char b[256];
  for (int i = 0; i < depth; i++) {
    x = double_conv (net, x, name (b, sizeof b, "down.%d", i), base << i);
    skips[i] = x;
    x = wsinn_pooling (net, x, WSINN_POOL_MAX, 2, 2, 0);
  }
  x = double_conv (net, x, "bottom", base << depth);
  for (int i = 0; i < depth; i++) {
    int c = base << (depth - i);
    int up = wsinn_deconv (net, x, name (b, sizeof b, "up.%d.upconv", i),
        c / 2, 2, 2, 0, 0, 1);
    int cat[2] = { skips[depth - 1 - i], up };
    x = wsinn_concat (net, 2, cat);
    x = double_conv (net, x, name (b, sizeof b, "up.%d.block", i), c / 2);
  }
  return wsinn_conv (net, x, "head", spec->n_classes, 1, 1, 0, 1, 1);
}

static int
build_fcn8s (wsinn_net * net, int x, const wsinn_spec * spec, const char *enc,
    char *err, size_t errlen)
{
  int feats[5], ch[5];
  int nf = encoder (net, x, spec, enc, 32, feats, ch, err, errlen);
  if (nf < 0)
    return -1;
  int n = spec->n_classes;
  int s8 = wsinn_conv (net, feats[nf - 3], "score8", n, 1, 1, 0, 1, 1);
  int s16 = wsinn_conv (net, feats[nf - 2], "score16", n, 1, 1, 0, 1, 1);
  int s32 = wsinn_conv (net, feats[nf - 1], "score32", n, 1, 1, 0, 1, 1);
  int y = wsinn_deconv (net, s32, "up32", n, 4, 2, 1, 0, 0);
  y = wsinn_add (net, y, s16);
  y = wsinn_deconv (net, y, "up16", n, 4, 2, 1, 0, 0);
  y = wsinn_add (net, y, s8);
  return wsinn_deconv (net, y, "up8", n, 16, 8, 4, 0, 0);
}

static int
build_deeplabv3 (wsinn_net * net, int x, const wsinn_spec * spec,
    const char *enc, char *err, size_t errlen)
{
  int os = spec->output_stride ? spec->output_stride : 16;
  int w = spec->aspp_width ? spec->aspp_width : 256;
  int rates[3] = { 6, 12, 18 };
  if (os == 8) {
    rates[0] = 12;
    rates[1] = 24;
    rates[2] = 36;
  }
  if (spec->aspp_rates[0])
    memcpy (rates, spec->aspp_rates, sizeof rates);
  int feats[5], ch[5];
  int input = x;
  int nf = encoder (net, x, spec, enc, os, feats, ch, err, errlen);
  if (nf < 0)
    return -1;
  int f = feats[nf - 1];
  int br[5];
  br[0] = conv_bn_relu (net, f, "aspp.b0", w, 1, 1, 1);
  br[1] = conv_bn_relu (net, f, "aspp.b1", w, 3, 1, rates[0]);
  br[2] = conv_bn_relu (net, f, "aspp.b2", w, 3, 1, rates[1]);
  br[3] = conv_bn_relu (net, f, "aspp.b3", w, 3, 1, rates[2]);
  int g = wsinn_global_avgpool (net, f);
  g = conv_bn_relu (net, g, "aspp.pool", w, 1, 1, 1);
  br[4] = wsinn_resize_like (net, g, f);        /* 1x1 -> broadcast */
  int y = wsinn_concat (net, 5, br);
  y = conv_bn_relu (net, y, "aspp.project", w, 1, 1, 1);
  y = conv_bn_relu (net, y, "head", w, 3, 1, 1);
  y = wsinn_conv (net, y, "classifier", spec->n_classes, 1, 1, 0, 1, 1);
  return wsinn_resize_like (net, y, input);
}

wsinn_net *
wsinn_net_new_from_spec (const wsinn_spec * spec, char *err, size_t errlen)
{
  if (spec->n_classes < 1) {
    snprintf (err, errlen, "n_classes must be >= 1 (got %d)",
        spec->n_classes);
    return NULL;
  }
  wsinn_net *net = wsinn_net_new ();
  if (!net) {
    snprintf (err, errlen, "out of memory");
    return NULL;
  }
  int x = wsinn_input (net, 3), y = -1;
  err[0] = 0;
  if (!strcmp (spec->arch, "unet")) {
    if (spec->encoder[0] && strcmp (spec->encoder, "unet"))
      snprintf (err, errlen, "unet supports only encoder 'unet' (got '%s')",
          spec->encoder);
    else
      y = build_unet (net, x, spec);
  } else if (!strcmp (spec->arch, "fcn8s")) {
    y = build_fcn8s (net, x, spec, spec->encoder[0] ? spec->encoder : "vgg",
        err, errlen);
  } else if (!strcmp (spec->arch, "deeplabv3")) {
    y = build_deeplabv3 (net, x, spec, spec->encoder[0] ? spec->encoder :
        "resnet18", err, errlen);
  } else {
    snprintf (err, errlen, "unknown arch '%s' (known: unet, fcn8s, "
        "deeplabv3)", spec->arch);
  }
  if (y >= 0 && spec->output == WSINN_OUTPUT_PROBS)
    y = spec->n_classes == 1 ? wsinn_activation (net, y, WSINN_ACT_SIGMOID) :
        wsinn_softmax (net, y);
  if (y >= 0)
    wsinn_set_output (net, y);
  if (wsinn_net_error (net) && !err[0])
    snprintf (err, errlen, "%s", wsinn_net_error (net));
  if (err[0] || y < 0) {
    if (!err[0])
      snprintf (err, errlen, "cannot build the network");
    wsinn_net_free (net);
    return NULL;
  }
  return net;
}

/* ---------------------------------------------------------- Mask R-CNN */

void
wsinn_maskrcnn_spec_init (wsinn_maskrcnn_spec * spec)
{
  memset (spec, 0, sizeof *spec);
  strcpy (spec->backbone, "resnet18");
  spec->base_width = 64;
  spec->fpn_channels = 256;
  spec->n_anchors = 3;
  spec->n_classes = 2;
  spec->representation = 1024;
  spec->box_pool = 7;
  spec->mask_layers = 4;
  spec->mask_width = 256;
  spec->mask_dilation = 1;
}

static int
mrcnn_check (const wsinn_maskrcnn_spec * s, char *err, size_t errlen)
{
  if (strcmp (s->backbone, "resnet18") && strcmp (s->backbone, "resnet34")) {
    snprintf (err, errlen, "unknown Mask R-CNN backbone '%s' (known: "
        "resnet18, resnet34)", s->backbone);
    return -1;
  }
  if (s->base_width < 1 || s->fpn_channels < 1 || s->n_anchors < 1
      || s->n_classes < 2 || s->representation < 1 || s->box_pool < 1
      || s->mask_layers < 0 || s->mask_layers > 16 || s->mask_width < 1
      || s->mask_dilation < 1) {
    snprintf (err, errlen, "bad Mask R-CNN hyperparameters (n_classes %d "
        "includes the background and must be >= 2)", s->n_classes);
    return -1;
  }
  return 0;
}

static wsinn_net *
mrcnn_finish (wsinn_net * net, char *err, size_t errlen)
{
  if (wsinn_net_error (net)) {
    snprintf (err, errlen, "%s", wsinn_net_error (net));
    wsinn_net_free (net);
    return NULL;
  }
  return net;
}

/* A new net for a valid @spec, else NULL and @err. */
static wsinn_net *
mrcnn_start (const wsinn_maskrcnn_spec * spec, char *err, size_t errlen)
{
  if (mrcnn_check (spec, err, errlen) < 0)
    return NULL;
  wsinn_net *net = wsinn_net_new ();
  if (!net)
    snprintf (err, errlen, "out of memory");
  return net;
}

wsinn_net *
wsinn_maskrcnn_features (const wsinn_maskrcnn_spec * spec, char *err,
    size_t errlen)
{
  wsinn_net *net = mrcnn_start (spec, err, errlen);
  if (!net)
    return NULL;
  int c[4], ch[4], fpn[WSINN_FPN_LEVELS];
  int f = spec->fpn_channels;
  char b[256];
  int x = wsinn_input (net, 3);
  resnet_encoder (net, x, spec->backbone, spec->base_width, 32, c, ch,
      "backbone.body", 1);
  /* FPN (torchvision FeaturePyramidNetwork, LastLevelMaxPool) */
  int inner = wsinn_conv (net, c[3], "backbone.fpn.inner_blocks.3.0", f, 1,
      1, 0, 1, 1);
  fpn[3] = wsinn_conv (net, inner, "backbone.fpn.layer_blocks.3.0", f, 3, 1,
      1, 1, 1);
  for (int l = 2; l >= 0; l--) {
    int lat = wsinn_conv (net, c[l], name (b, sizeof b,
            "backbone.fpn.inner_blocks.%d.0", l), f, 1, 1, 0, 1, 1);
    int td = wsinn_resize_nearest_like (net, inner, lat);
    inner = wsinn_add (net, lat, td);
    fpn[l] = wsinn_conv (net, inner, name (b, sizeof b,
            "backbone.fpn.layer_blocks.%d.0", l), f, 3, 1, 1, 1, 1);
  }
  fpn[4] = wsinn_pooling (net, fpn[3], WSINN_POOL_MAX, 1, 2, 0);
  /* RPN head, shared by the levels */
  int conv = -1, cls = -1, reg = -1, obj[WSINN_FPN_LEVELS],
      del[WSINN_FPN_LEVELS];
  for (int l = 0; l < WSINN_FPN_LEVELS; l++) {
    int t;
    if (l == 0) {
      t = conv = wsinn_conv (net, fpn[l], "rpn.head.conv.0.0", f, 3, 1, 1, 1,
          1);
      t = wsinn_activation (net, t, WSINN_ACT_RELU);
      obj[l] = cls = wsinn_conv (net, t, "rpn.head.cls_logits",
          spec->n_anchors, 1, 1, 0, 1, 1);
      del[l] = reg = wsinn_conv (net, t, "rpn.head.bbox_pred",
          4 * spec->n_anchors, 1, 1, 0, 1, 1);
    } else {
      t = wsinn_conv_shared (net, fpn[l], conv);
      t = wsinn_activation (net, t, WSINN_ACT_RELU);
      obj[l] = wsinn_conv_shared (net, t, cls);
      del[l] = wsinn_conv_shared (net, t, reg);
    }
  }
  for (int l = 0; l < WSINN_FPN_LEVELS; l++)
    wsinn_add_output (net, fpn[l]);
  for (int l = 0; l < WSINN_FPN_LEVELS; l++)
    wsinn_add_output (net, obj[l]);
  for (int l = 0; l < WSINN_FPN_LEVELS; l++)
    wsinn_add_output (net, del[l]);
  return mrcnn_finish (net, err, errlen);
}

wsinn_net *
wsinn_maskrcnn_box_head (const wsinn_maskrcnn_spec * spec, char *err,
    size_t errlen)
{
  wsinn_net *net = mrcnn_start (spec, err, errlen);
  if (!net)
    return NULL;
  int r = spec->representation;
  int x = wsinn_input (net, spec->fpn_channels);
  x = wsinn_linear (net, x, "roi_heads.box_head.fc6", r, spec->box_pool, 1);
  x = wsinn_activation (net, x, WSINN_ACT_RELU);
  x = wsinn_linear (net, x, "roi_heads.box_head.fc7", r, 1, 1);
  x = wsinn_activation (net, x, WSINN_ACT_RELU);
  wsinn_add_output (net, wsinn_linear (net, x,
          "roi_heads.box_predictor.cls_score", spec->n_classes, 1, 1));
  wsinn_add_output (net, wsinn_linear (net, x,
          "roi_heads.box_predictor.bbox_pred", 4 * spec->n_classes, 1, 1));
  return mrcnn_finish (net, err, errlen);
}

wsinn_net *
wsinn_maskrcnn_mask_head (const wsinn_maskrcnn_spec * spec, char *err,
    size_t errlen)
{
  wsinn_net *net = mrcnn_start (spec, err, errlen);
  if (!net)
    return NULL;
  char b[256];
  int d = spec->mask_dilation;
  int x = wsinn_input (net, spec->fpn_channels);
  for (int i = 0; i < spec->mask_layers; i++) {
    x = wsinn_conv (net, x, name (b, sizeof b, "roi_heads.mask_head.%d.0", i),
        spec->mask_width, 3, 1, d, d, 1);
    x = wsinn_activation (net, x, WSINN_ACT_RELU);
  }
  x = wsinn_deconv (net, x, "roi_heads.mask_predictor.conv5_mask",
      spec->mask_width, 2, 2, 0, 0, 1);
  x = wsinn_activation (net, x, WSINN_ACT_RELU);
  x = wsinn_conv (net, x, "roi_heads.mask_predictor.mask_fcn_logits",
      spec->n_classes, 1, 1, 0, 1, 1);
  wsinn_add_output (net, x);
  return mrcnn_finish (net, err, errlen);
}
