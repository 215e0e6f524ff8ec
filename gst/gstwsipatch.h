/* The image-patch input of segmentation elements: RGB video or one float32
 * tensor 3:W:H:1 (interleaved RGB, as colornorm emits) per patch, turned
 * into the network's NHWC float batch with the model file's preprocessing;
 * the model's pixel size compared once per slide; unreadable model files
 * reported alike. Shared by segment-fcn and segment-maskrcnn.
 * docs/architecture.md, "writing a second segmentation element". */
#pragma once

#include <gst/gst.h>
#include <gst/video/video.h>
#include <gst/base/gstaggregator.h>

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

/* ---- output caps that follow from the input ---- */

/* Stores @caps (transfer full) in *@current and sets them on @agg's src
 * pad. */
void gst_wsi_patch_set_src_caps (GstAggregator * agg, GstCaps ** current,
    GstCaps * caps);
/* GstAggregator::update_src_caps: the @current output caps (never a
 * fixated template); NEED_DATA before the first input caps. */
GstFlowReturn gst_wsi_patch_update_src_caps (GstCaps * current,
    GstCaps * caps, GstCaps ** ret);

/* ---- the settings every segmentation element has ---- */

typedef struct
{
  gchar *model;                 /* model file */
  guint batch_size;
  guint64 batch_timeout;        /* ns, live streams */
  guint threads;                /* engine threads, 0 = all cores */
  guint64 max_memory;           /* bytes of one batch */
} GstWsiSegmentSettings;

/* Installs model, batch-size, batch-timeout, threads, max-memory with ids
 * @first_id ... @first_id + 4 (GST_PARAM_MUTABLE_READY). */
#define GST_WSI_SEGMENT_N_PROPS 5
void gst_wsi_segment_install_properties (GObjectClass * klass,
    guint first_id);
/* The element's own blurbs of those properties (static strings; NULL:
 * the common one). */
typedef struct
{
  const gchar *model, *batch_size, *max_memory;
} GstWsiSegmentBlurbs;
void gst_wsi_segment_install_properties_full (GObjectClass * klass,
    guint first_id, const GstWsiSegmentBlurbs * blurbs);
void gst_wsi_segment_settings_init (GstWsiSegmentSettings * s);
void gst_wsi_segment_settings_clear (GstWsiSegmentSettings * s);
/* set/get_property of those ids (@id - first_id); FALSE for others. */
gboolean gst_wsi_segment_settings_set (GstWsiSegmentSettings * s, guint id,
    const GValue * value);
gboolean gst_wsi_segment_settings_get (const GstWsiSegmentSettings * s,
    guint id, GValue * value);

/* The model file of an inference run (wsi_model_load); NULL with the error
 * posted (no model given, unreadable, malformed). */
WsiModel *gst_wsi_patch_load_model (GstElement * element, const gchar * path,
    guint threads);
/* Estimated engine memory of a batch of @n patches for the net of a model
 * file (inference), 0 when unknown. */
gdouble gst_wsi_patch_model_file_bytes (const gchar * path, guint n,
    gint width, gint height);
/* FALSE with a FORMAT error when the patch sides are not multiples of the
 * model's size multiple. */
gboolean gst_wsi_patch_check_size (GstElement * element,
    const WsiModelInfo * info, gint width, gint height);

/* ---- the model's classes: property text and in-band event ---- */

typedef struct
{
  gchar *text;                  /* "name:#rrggbb,...", the object lock */
  GstEvent *event;              /* wsi-classes, until stored on the src pad */
} GstWsiModelClasses;

/* From the model's class names and colours: the text (swapped under
 * @element's object lock, so readers never see freed model state) and the
 * sticky wsi-classes event, stored on @src at once when possible. */
void gst_wsi_model_classes_update (GstWsiModelClasses * c,
    GstElement * element, GstPad * src, const WsiModelInfo * info);
/* Stores a pending event on @src (it goes before the next buffer, GAP or
 * EOS); call after the caps. */
void gst_wsi_model_classes_send (GstWsiModelClasses * c, GstPad * src);
void gst_wsi_model_classes_clear (GstWsiModelClasses * c,
    GstElement * element);

/* Posts the error for a file that cannot be read (missing: NOT_FOUND,
 * directory or no permission: OPEN_READ) and returns TRUE; FALSE when it is
 * readable (a later failure then means malformed content). */
gboolean gst_wsi_report_unreadable (GstElement * element, const gchar * what,
    const gchar * path);

G_END_DECLS
