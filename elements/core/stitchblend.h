/* stitchsink probability blending: float accumulator rows (C class sums and
 * one weight per pixel), patch weights, and the conversion of a finished
 * row to labels and a probability map. No GStreamer inside. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef enum
{
  STITCH_BLEND_CROP,            /* centre crop, weight 1, overwrites */
  STITCH_BLEND_AVERAGE,         /* every valid pixel, weight 1, adds */
  STITCH_BLEND_GAUSSIAN,        /* every valid pixel, gaussian weight, adds */
} StitchBlendMode;

/* Floats per pixel in an accumulator row: @n_classes sums + 1 weight. */
#define STITCH_BLEND_STRIDE(n_classes) ((gsize) (n_classes) + 1)

/* 1-D weights for a patch side of @size pixels: 1 for crop/average,
 * exp (-(i + 0.5 - size/2)^2 / (2 sigma^2)) for gaussian (@sigma <= 0:
 * size / 8). @weights holds @size floats. */
void stitch_blend_weights (StitchBlendMode mode, gint size, gdouble sigma,
    gfloat * weights);

/* Adds (or for crop, stores) @n pixels of a patch row into accumulator row
 * @acc: @src holds @n_classes floats per pixel, pixel i gets weight
 * @wy * @wx[i]. */
void stitch_blend_accumulate (StitchBlendMode mode, gfloat * acc,
    const gfloat * src, const gfloat * wx, gfloat wy, gint n, gint n_classes);

/* Resolves a finished accumulator row of @width pixels: @labels gets the
 * argmax class (lowest index on ties; one class: sum >= 0.5 * weight), or
 * @background where no patch contributed. When @prob is not NULL it gets
 * round (255 * p) of class @prob_class (one class: class 1 is the map,
 * class 0 its complement), 0 where nothing contributed. */
void stitch_blend_resolve_row (const gfloat * acc, gint64 width,
    gint n_classes, guint8 background, guint8 * labels, guint prob_class,
    guint8 * prob);

G_END_DECLS
