/* The image-patch input of segmentation elements: RGB video or one float32
 * tensor 3:W:H:1 (interleaved RGB, as colornorm emits) per patch, turned
 * into the network's NHWC float batch with the model file's preprocessing;
 * the model's pixel size compared once per slide; unreadable model files
 * reported alike. Shared by segment-fcn and segment-maskrcnn.
 * docs/architecture.md, "writing a second segmentation element". */
#pragma once

#include <gst/gst.h>
#include <gst/video/video.h>

#include "wsimodel.h"

G_BEGIN_DECLS

typedef struct
{
  gint width, height;           /* patch size of the accepted caps */
  gboolean is_tensor;
  GstVideoInfo vinfo;           /* RGB caps */
  gfloat *batch;                /* n x h x w x 3 of the last fill */
  gsize capacity;               /* elements */
  gchar *resolution_checked;    /* slide whose pixel size was compared */
} GstWsiPatchInput;

/* Patch size and kind of caps (RGB video fills @vinfo). FALSE when they
 * are not a patch; a tensor that is not 3:W:H:1 also posts a FORMAT error
 * of @element (NULL: none). */
gboolean gst_wsi_patch_caps_parse (GstElement * element, GstCaps * caps,
    gint * width, gint * height, gboolean * is_tensor, GstVideoInfo * vinfo);
/* TRUE when @caps give other patches than @in holds (size or kind). */
gboolean gst_wsi_patch_input_differs (const GstWsiPatchInput * in,
    gint width, gint height, gboolean is_tensor);
void gst_wsi_patch_input_set (GstWsiPatchInput * in, gint width,
    gint height, gboolean is_tensor, const GstVideoInfo * vinfo);
/* @n patches into in->batch (grown as needed): tensors as they are, RGB
 * through wsi_model_preprocess (@info). NULL with the error posted. */
gfloat *gst_wsi_patch_input_fill (GstWsiPatchInput * in, GstElement * element,
    const WsiModelInfo * info, guint n, GstBuffer * const *images);
/* Warns once per slide when the patches' pixel size is far from
 * @model_mpp (both known). */
void gst_wsi_patch_input_check_resolution (GstWsiPatchInput * in,
    GstElement * element, GstBuffer * buf, gdouble model_mpp);
/* Frees the batch and the slide seen (stop, finalize). */
void gst_wsi_patch_input_clear (GstWsiPatchInput * in);

/* Posts the error for a file that cannot be read (missing: NOT_FOUND,
 * directory or no permission: OPEN_READ) and returns TRUE; FALSE when it is
 * readable (a later failure then means malformed content). */
gboolean gst_wsi_report_unreadable (GstElement * element, const gchar * what,
    const gchar * path);

G_END_DECLS
