/* The one tensor-caps rule: NNStreamer other/tensors with one float32
 * tensor, dimensions "C:W:H" innermost first (channels interleaved per
 * pixel), optionally followed by a fourth dimension of 1 (NNStreamer rank
 * 4). Used by colornorm (3:W:H), segment-fcn (3:W:H in, C:W:H out) and
 * stitchsink (C:W:H). */
#pragma once

#include <gst/gst.h>

G_BEGIN_DECLS

#define GST_WSI_TENSOR_CAPS "other/tensors, format=(string)static, " \
    "num_tensors=(int)1, types=(string)float32"

/* Largest C, W or H a dimensions string may give. */
#define GST_WSI_TENSOR_MAX_DIM 65536

/* Parses "C:W:H[:1]" (spaces around numbers allowed, 1 <= C, W, H <=
 * GST_WSI_TENSOR_MAX_DIM). Any of the outputs may be NULL. */
gboolean gst_wsi_tensor_parse_dims (const gchar * dims, gint * channels,
    gint * width, gint * height);

/* TRUE if @s is fixed tensor caps by the rule above (num_tensors 1, types
 * float32, format static when given, valid dimensions). */
gboolean gst_wsi_tensor_structure_parse (const GstStructure * s,
    gint * channels, gint * width, gint * height);

/* other/tensors caps structure of one float32 tensor C:W:H:1; @width <= 0
 * leaves the dimensions out (not yet known). */
GstStructure *gst_wsi_tensor_structure_new (gint channels, gint width,
    gint height);

G_END_DECLS
