/* The class of a score vector (logits, probabilities or blended sums): the
 * index of the largest of @n values, the lowest index on ties (NaN never
 * wins over a number before it). The one argmax of the tree: training
 * accuracy, segment-fcn's labels and stitchsink's blended labels use it.
 * Header only, plain C: any layer may include it. */
#pragma once

static inline int
wsi_argmax (const float *v, int n)
{
  int best = 0;

  for (int k = 1; k < n; k++)
    if (v[k] > v[best])
      best = k;
  return best;
}
