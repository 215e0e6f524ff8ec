/* Detections of an instance-segmentation producer (segment-maskrcnn) on its
 * GRAY16_LE instance label patch: one GstVideoRegionOfInterestMeta per
 * instance, carrying a "wsi-detection" param structure (docs/tile-meta.md). */
#pragma once

#include <gst/gst.h>
#include <gst/video/video.h>

G_BEGIN_DECLS

/* Name of the param structure; fields score (double), class-id (int),
 * instance-id (uint). */
#define GST_WSI_DETECTION_PARAM "wsi-detection"

/* Largest instance id a 16-bit label patch can hold. */
#define GST_WSI_DETECTION_MAX_ID 65535u

typedef struct
{
  guint instance_id;            /* label value in the patch, 1..65535; 0 = none */
  gint class_id;                /* class label value; -1 when unknown */
  GQuark class_quark;           /* roi_type: quark of the class name */
  gdouble score;                /* 0..1; -1 when unknown */
  guint x, y, w, h;             /* box in patch pixels */
} GstWsiDetection;

/* Adds one detection: roi_type = quark of @class_name ("object" when NULL),
 * id = @instance_id, box [x0, x1) x [y0, y1) in patch pixels rounded
 * outwards (floor of x0/y0, ceil of x1/y1, negative values clamped to 0).
 * Returns the new meta, NULL when @instance_id is 0 or above
 * GST_WSI_DETECTION_MAX_ID. */
GstVideoRegionOfInterestMeta *gst_wsi_detection_meta_add (GstBuffer * buf,
    guint instance_id, gint class_id, const gchar * class_name,
    gdouble score, gdouble x0, gdouble y0, gdouble x1, gdouble y1);

/* Reads @roi; FALSE when it has no wsi-detection param (another element's
 * region of interest) or its instance-id is 0 or above the limit. */
gboolean gst_wsi_detection_from_roi (GstVideoRegionOfInterestMeta * roi,
    GstWsiDetection * det);

/* Fills @table[0..@n_table) indexed by instance id: entries without a
 * detection get instance_id 0, class_id -1, score -1. Returns the number of
 * wsi-detection metas on @buf; *@n_out_of_range (may be NULL) counts those
 * whose id is >= @n_table (not stored). A later meta with the same id
 * replaces an earlier one. */
guint gst_wsi_detection_fill_table (GstBuffer * buf, GstWsiDetection * table,
    guint n_table, guint * n_out_of_range);

/* Sticky custom downstream event a producer of instance label patches
 * sends before its first buffer (after the caps): its GRAY16_LE values are
 * object ids of each patch, not class labels. stitchsink then merges
 * objects across patches (instances=auto). No fields. */
#define GST_WSI_INSTANCES_EVENT "wsi-instances"

GstEvent *gst_wsi_instances_event_new (void);

G_END_DECLS
