/* Shared GstAggregator behaviour of the plugin's aggregators (segment-fcn,
 * segeval, segment-maskrcnn). */
#pragma once

#include <gst/gst.h>
#include <gst/base/gstaggregator.h>

G_BEGIN_DECLS

/* GstAggregator 1.22 stops its streaming task for a flushing seek and
 * restarts it only when a FLUSH_STOP comes back on every sink pad: if the
 * upstream of one pad cannot seek (slidesrc ! patchify), the element would
 * stall for good. Call first thing in src_event: TRUE when @event is such a seek,
 * which is then consumed (unreffed) and the caller returns FALSE. */
gboolean gst_wsi_aggregator_refuse_seek (GstAggregator * agg,
    GstEvent * event);

G_END_DECLS
