/* Shared GstAggregator behaviour (gstwsiaggregator.h). */
#include "gstwsiaggregator.h"

/* TRUE if the peer of every sink pad can seek in @format: the base class
 * waits for a FLUSH_STOP on each of them. */
static gboolean
upstream_seekable (GstAggregator * agg, GstFormat format)
{
  GList *pads = NULL;
  gboolean all = TRUE;

  GST_OBJECT_LOCK (agg);
  for (GList * l = GST_ELEMENT (agg)->sinkpads; l; l = l->next)
    pads = g_list_prepend (pads, gst_object_ref (l->data));
  GST_OBJECT_UNLOCK (agg);
  for (GList * l = pads; l && all; l = l->next) {
    GstQuery *q = gst_query_new_seeking (format);
    gboolean seekable = FALSE;
    if (gst_pad_peer_query (l->data, q))
      gst_query_parse_seeking (q, NULL, &seekable, NULL, NULL);
    all = seekable;
    gst_query_unref (q);
  }
  g_list_free_full (pads, gst_object_unref);
  return all;
}

gboolean
gst_wsi_aggregator_refuse_seek (GstAggregator * agg, GstEvent * event)
{
  GstFormat format;
  GstSeekFlags flags;

  if (GST_EVENT_TYPE (event) != GST_EVENT_SEEK)
    return FALSE;
  gst_event_parse_seek (event, NULL, &format, &flags, NULL, NULL, NULL, NULL);
  if (!(flags & GST_SEEK_FLAG_FLUSH) || upstream_seekable (agg, format))
    return FALSE;
  GST_INFO_OBJECT (agg, "flushing seek refused: upstream cannot seek");
  gst_event_unref (event);
  return TRUE;
}
