/* Detection meta convention (gstwsidetection.h). */
#include "gstwsidetection.h"

#include <math.h>
#include <string.h>

static guint
box_coord (gdouble v, gboolean up)
{
  gdouble r = up ? ceil (v) : floor (v);
  if (!(r > 0))                 /* also NaN */
    return 0;
  return r >= (gdouble) G_MAXUINT ? G_MAXUINT : (guint) r;
}

GstVideoRegionOfInterestMeta *
gst_wsi_detection_meta_add (GstBuffer * buf, guint instance_id, gint class_id,
    const gchar * class_name, gdouble score, gdouble x0, gdouble y0,
    gdouble x1, gdouble y1)
{
  GstVideoRegionOfInterestMeta *roi;
  guint bx0, by0, bx1, by1;

  g_return_val_if_fail (GST_IS_BUFFER (buf), NULL);
  if (instance_id == 0 || instance_id > GST_WSI_DETECTION_MAX_ID)
    return NULL;
  bx0 = box_coord (x0, FALSE);
  by0 = box_coord (y0, FALSE);
  bx1 = MAX (box_coord (x1, TRUE), bx0);
  by1 = MAX (box_coord (y1, TRUE), by0);
  roi = gst_buffer_add_video_region_of_interest_meta (buf,
      class_name ? class_name : "object", bx0, by0, bx1 - bx0, by1 - by0);
  roi->id = (gint) instance_id;
  gst_video_region_of_interest_meta_add_param (roi,
      gst_structure_new (GST_WSI_DETECTION_PARAM,
          "score", G_TYPE_DOUBLE, score,
          "class-id", G_TYPE_INT, class_id,
          "instance-id", G_TYPE_UINT, instance_id, NULL));
  return roi;
}

gboolean
gst_wsi_detection_from_roi (GstVideoRegionOfInterestMeta * roi,
    GstWsiDetection * det)
{
  GstStructure *s;
  guint id = 0;
  gint class_id = -1;
  gdouble score = -1;

  s = gst_video_region_of_interest_meta_get_param (roi,
      GST_WSI_DETECTION_PARAM);
  if (!s || !gst_structure_get_uint (s, "instance-id", &id) || id == 0
      || id > GST_WSI_DETECTION_MAX_ID)
    return FALSE;
  if (!gst_structure_get_int (s, "class-id", &class_id))
    class_id = -1;
  if (!gst_structure_get_double (s, "score", &score) || !isfinite (score))
    score = -1;
  det->instance_id = id;
  det->class_id = class_id;
  det->class_quark = roi->roi_type;
  det->score = score;
  det->x = roi->x;
  det->y = roi->y;
  det->w = roi->w;
  det->h = roi->h;
  return TRUE;
}

guint
gst_wsi_detection_fill_table (GstBuffer * buf, GstWsiDetection * table,
    guint n_table, guint * n_out_of_range)
{
  GstVideoRegionOfInterestMeta *roi;
  GstWsiDetection det;
  gpointer state = NULL;
  guint i, n = 0, out = 0;

  for (i = 0; i < n_table; i++) {
    memset (&table[i], 0, sizeof (table[i]));
    table[i].class_id = -1;
    table[i].score = -1;
  }
  while ((roi = (GstVideoRegionOfInterestMeta *)
          gst_buffer_iterate_meta_filtered (buf, &state,
              GST_VIDEO_REGION_OF_INTEREST_META_API_TYPE))) {
    if (!gst_wsi_detection_from_roi (roi, &det))
      continue;
    n++;
    if (det.instance_id >= n_table)
      out++;
    else
      table[det.instance_id] = det;
  }
  if (n_out_of_range)
    *n_out_of_range = out;
  return n;
}

GstEvent *
gst_wsi_instances_event_new (void)
{
  return gst_event_new_custom (GST_EVENT_CUSTOM_DOWNSTREAM_STICKY,
      gst_structure_new_empty (GST_WSI_INSTANCES_EVENT));
}
