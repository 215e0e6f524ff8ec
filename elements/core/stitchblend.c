/* stitchsink probability blending (see stitchblend.h, docs/stitchsink.md). */
#include "stitchblend.h"
#include "wsiargmax.h"

#include <math.h>

void
stitch_blend_weights (StitchBlendMode mode, gint size, gdouble sigma,
    gfloat * weights)
{
  gint i;

  if (mode != STITCH_BLEND_GAUSSIAN) {
    for (i = 0; i < size; i++)
      weights[i] = 1.0f;
    return;
  }
  if (!(sigma > 0))
    sigma = size / 8.0;
  for (i = 0; i < size; i++) {
    gdouble d = (i + 0.5 - size / 2.0) / sigma;
    weights[i] = (gfloat) exp (-0.5 * d * d);
  }
}

void
stitch_blend_accumulate (StitchBlendMode mode, gfloat * acc,
    const gfloat * src, const gfloat * wx, gfloat wy, gint n, gint n_classes)
{
  const gsize stride = STITCH_BLEND_STRIDE (n_classes);
  gint i, c;

  if (mode == STITCH_BLEND_CROP) {
    for (i = 0; i < n; i++, acc += stride, src += n_classes) {
      for (c = 0; c < n_classes; c++)
        acc[c] = src[c];
      acc[n_classes] = 1.0f;
    }
    return;
  }
  for (i = 0; i < n; i++, acc += stride, src += n_classes) {
    gfloat w = wy * wx[i];
    for (c = 0; c < n_classes; c++)
      acc[c] += w * src[c];
    acc[n_classes] += w;
  }
}

static inline guint8
to_byte (gfloat p)
{
  gfloat v = p * 255.0f + 0.5f;

  if (!(v > 0.0f))              /* also NaN */
    return 0;
  return (guint8) (v >= 255.0f ? 255.0f : v);
}

void
stitch_blend_resolve_row (const gfloat * acc, gint64 width, gint n_classes,
    guint8 background, guint8 * labels, guint prob_class, guint8 * prob)
{
  const gsize stride = STITCH_BLEND_STRIDE (n_classes);
  gint64 x;

  for (x = 0; x < width; x++, acc += stride) {
    gfloat w = acc[n_classes];

    if (!(w > 0.0f)) {
      labels[x] = background;
      if (prob)
        prob[x] = 0;
      continue;
    }
    if (n_classes == 1) {
      labels[x] = acc[0] >= 0.5f * w;
      if (prob)
        prob[x] = to_byte (prob_class == 0 ? 1.0f - acc[0] / w : acc[0] / w);
    } else {
      labels[x] = (guint8) wsi_argmax (acc, n_classes);
      if (prob)
        prob[x] = to_byte (acc[prob_class] / w);
    }
  }
}
