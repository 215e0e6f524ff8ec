/* Batching of patches for a GstAggregator element (segment-fcn and any other
 * element that runs a network on batches): collects buffers (each with an
 * optional partner, e.g. its annotation) up to the batch size, runs the
 * element's callback on the full batch, on a live timeout, at EOS and before
 * a caps change; outputs keep the order and the metadata of their inputs;
 * a memory guard refuses batches beyond the element's max-memory.
 * docs/architecture.md, "writing a second segmentation element". */
#pragma once

#include <gst/gst.h>
#include <gst/base/gstaggregator.h>

G_BEGIN_DECLS

typedef struct _GstWsiBatch GstWsiBatch;

/* Runs the @n collected buffers (@partners: n buffers, or NULL when none
 * were added). Outputs go out with gst_wsi_batch_finish_buffer(). The batch
 * is emptied after the call, whatever it returns. */
typedef GstFlowReturn (*GstWsiBatchRunFunc) (GstWsiBatch * batch, guint n,
    GstBuffer * const *images, GstBuffer * const *partners,
    gpointer user_data);

/* Checks a buffer gst_wsi_batch_aggregate() is about to add (e.g. caps
 * accepted, resolution warning); FALSE: refused, the flow is
 * GST_FLOW_NOT_NEGOTIATED (the callback posted the error). */
typedef gboolean (*GstWsiBatchAcceptFunc) (GstWsiBatch * batch,
    GstBuffer * buf, gpointer user_data);

GstWsiBatch *gst_wsi_batch_new (GstAggregator * agg, GstWsiBatchRunFunc run,
    GstWsiBatchAcceptFunc accept, gpointer user_data);
void gst_wsi_batch_free (GstWsiBatch * batch);

void gst_wsi_batch_set_size (GstWsiBatch * batch, guint size);
guint gst_wsi_batch_get_size (const GstWsiBatch * batch);
guint gst_wsi_batch_length (const GstWsiBatch * batch);
gboolean gst_wsi_batch_is_full (const GstWsiBatch * batch);

/* Takes @buf and @partner (may be NULL). */
void gst_wsi_batch_add (GstWsiBatch * batch, GstBuffer * buf,
    GstBuffer * partner);
/* Runs what was collected (nothing: GST_FLOW_OK) and empties the batch:
 * at EOS, before a caps change, at the end of an epoch. */
GstFlowReturn gst_wsi_batch_drain (GstWsiBatch * batch);
/* Drops what was collected (flush, stop). */
void gst_wsi_batch_clear (GstWsiBatch * batch);

/* The inference loop of GstAggregator::aggregate for one sink pad: pops a
 * buffer, runs the batch when full or on @timeout; at the pad's EOS drains,
 * posts the stats message and returns GST_FLOW_EOS. */
GstFlowReturn gst_wsi_batch_aggregate (GstWsiBatch * batch,
    GstAggregatorPad * pad, gboolean timeout);
/* GstAggregator::get_next_time: the running time of the oldest collected
 * patch (a partial live batch then waits for the aggregator latency). */
GstClockTime gst_wsi_batch_next_time (const GstWsiBatch * batch,
    GstAggregatorPad * pad);
/* The batch timeout becomes the aggregator's own latency (0: none). */
void gst_wsi_batch_set_timeout (GstWsiBatch * batch, GstClockTime timeout);

/* Memory guard: posts RESOURCE/NO_SPACE_LEFT naming max-memory and returns
 * FALSE when @bytes (the element's estimate for a batch of @n patches of
 * @width x @height) exceeds @max_bytes. */
gboolean gst_wsi_batch_check_memory (GstWsiBatch * batch, guint n,
    gint width, gint height, gdouble bytes, guint64 max_bytes);
/* Grows @*array to @need elements of @elem_size (contents not kept). */
gboolean gst_wsi_batch_grow (gpointer * array, gsize * capacity, gsize need,
    gsize elem_size);

/* An output of the batch: copies @in's flags, timestamps and untagged metas
 * (tile, augmentation; not video metas) to @out, fits the tile meta to
 * @width x @height when @fit, pushes it and counts it in the stats. */
GstFlowReturn gst_wsi_batch_finish_buffer (GstWsiBatch * batch,
    GstBuffer * out, GstBuffer * in, gint width, gint height, gboolean fit);
void gst_wsi_batch_copy_metadata (GstBuffer * out, GstBuffer * in);

/* Stats: "<prefix>-stats" element messages (patches, batches,
 * mean-batch-latency-ms, patches-per-second, inference-share): every 64
 * output patches when *@post_messages (read atomically) and due, and at EOS.
 * Busy time is the time spent in the run callback, or what it reports with
 * gst_wsi_batch_busy() (e.g. the forward pass alone). */
void gst_wsi_batch_set_stats (GstWsiBatch * batch, const gchar * prefix,
    gint * post_messages);
void gst_wsi_batch_reset_stats (GstWsiBatch * batch);
/* From a run callback: the network worked from @since_us
 * (g_get_monotonic_time) until now; the batch's busy time is then the sum
 * of these. */
void gst_wsi_batch_busy (GstWsiBatch * batch, gint64 since_us);
/* Counts @n patches run by a callback that pushes no output (training). */
void gst_wsi_batch_count (GstWsiBatch * batch, guint n);

G_END_DECLS
