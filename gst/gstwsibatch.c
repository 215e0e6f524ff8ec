/* Batching of patches for GstAggregator elements: gstwsibatch.h. */
#include "gstwsibatch.h"
#include "gstwsiprops.h"
#include "gstwsitilemeta.h"

#define STATS_EVERY 64

struct _GstWsiBatch
{
  GstAggregator *agg;           /* not owned: the batch lives in it */
  GstWsiBatchRunFunc run;
  GstWsiBatchAcceptFunc accept;
  gpointer user_data;
  guint size;
  GPtrArray *images, *partners;
  /* stats */
  gchar *stats_name;
  gint *post_messages;
  gint64 last_stats_msg_us, first_time;
  guint64 patches, batches;
  gdouble busy_seconds;
  gboolean busy_marked;         /* the run callback timed its own work */
};

GstWsiBatch *
gst_wsi_batch_new (GstAggregator * agg, GstWsiBatchRunFunc run,
    GstWsiBatchAcceptFunc accept, gpointer user_data)
{
  GstWsiBatch *b = g_new0 (GstWsiBatch, 1);

  b->agg = agg;
  b->run = run;
  b->accept = accept;
  b->user_data = user_data;
  b->size = 1;
  b->images = g_ptr_array_new_with_free_func ((GDestroyNotify)
      gst_buffer_unref);
  b->partners = g_ptr_array_new_with_free_func ((GDestroyNotify)
      gst_buffer_unref);
  return b;
}

void
gst_wsi_batch_free (GstWsiBatch * batch)
{
  if (!batch)
    return;
  g_ptr_array_unref (batch->images);
  g_ptr_array_unref (batch->partners);
  g_free (batch->stats_name);
  g_free (batch);
}

void
gst_wsi_batch_set_size (GstWsiBatch * batch, guint size)
{
  batch->size = MAX (size, 1);
}

guint
gst_wsi_batch_get_size (const GstWsiBatch * batch)
{
  return batch->size;
}

guint
gst_wsi_batch_length (const GstWsiBatch * batch)
{
  return batch->images->len;
}

gboolean
gst_wsi_batch_is_full (const GstWsiBatch * batch)
{
  return batch->images->len >= batch->size;
}

void
gst_wsi_batch_add (GstWsiBatch * batch, GstBuffer * buf, GstBuffer * partner)
{
  g_ptr_array_add (batch->images, buf);
  if (partner)
    g_ptr_array_add (batch->partners, partner);
}

void
gst_wsi_batch_clear (GstWsiBatch * batch)
{
  g_ptr_array_set_size (batch->images, 0);
  g_ptr_array_set_size (batch->partners, 0);
}

GstFlowReturn
gst_wsi_batch_drain (GstWsiBatch * batch)
{
  const guint n = batch->images->len;
  GstFlowReturn ret;
  gint64 t0;

  if (n == 0)
    return GST_FLOW_OK;
  t0 = g_get_monotonic_time ();
  if (batch->first_time == 0)
    batch->first_time = t0;
  batch->busy_marked = FALSE;
  ret = batch->run (batch, n, (GstBuffer * const *) batch->images->pdata,
      batch->partners->len == n ?
      (GstBuffer * const *) batch->partners->pdata : NULL, batch->user_data);
  if (!batch->busy_marked)
    batch->busy_seconds += (g_get_monotonic_time () - t0) / 1e6;
  batch->batches++;
  gst_wsi_batch_clear (batch);
  return ret;
}

static void
post_stats (GstWsiBatch * b)
{
  gdouble wall = (g_get_monotonic_time () - b->first_time) / 1e6;
  GstStructure *s;

  if (!b->stats_name)
    return;
  s = gst_structure_new (b->stats_name,
      "patches", G_TYPE_UINT64, b->patches,
      "batches", G_TYPE_UINT64, b->batches,
      "mean-batch-latency-ms", G_TYPE_DOUBLE,
      b->batches ? 1000.0 * b->busy_seconds / b->batches : 0.0,
      "patches-per-second", G_TYPE_DOUBLE,
      wall > 0 ? b->patches / wall : 0.0,
      "inference-share", G_TYPE_DOUBLE,
      wall > 0 ? b->busy_seconds / wall : 0.0, NULL);
  gst_element_post_message (GST_ELEMENT (b->agg),
      gst_message_new_element (GST_OBJECT (b->agg), s));
}

GstFlowReturn
gst_wsi_batch_aggregate (GstWsiBatch * batch, GstAggregatorPad * pad,
    gboolean timeout)
{
  GstBuffer *buf = gst_aggregator_pad_pop_buffer (pad);
  GstFlowReturn ret;

  if (buf) {
    if (batch->accept && !batch->accept (batch, buf, batch->user_data)) {
      gst_buffer_unref (buf);
      return GST_FLOW_NOT_NEGOTIATED;
    }
    gst_wsi_batch_add (batch, buf, NULL);
    if (gst_wsi_batch_is_full (batch) || timeout)
      return gst_wsi_batch_drain (batch);
    return GST_FLOW_OK;
  }
  if (gst_aggregator_pad_is_eos (pad)) {
    ret = gst_wsi_batch_drain (batch);
    if (batch->patches)
      post_stats (batch);
    return ret == GST_FLOW_OK ? GST_FLOW_EOS : ret;
  }
  if (timeout)
    return gst_wsi_batch_drain (batch);
  return GST_FLOW_OK;
}

GstClockTime
gst_wsi_batch_next_time (const GstWsiBatch * batch, GstAggregatorPad * pad)
{
  GstBuffer *oldest;
  GstClockTime ts;

  if (batch->images->len == 0)
    return GST_CLOCK_TIME_NONE;
  oldest = g_ptr_array_index (batch->images, 0);
  ts = GST_BUFFER_PTS_IS_VALID (oldest) ? GST_BUFFER_PTS (oldest) :
      GST_BUFFER_DTS (oldest);
  if (!GST_CLOCK_TIME_IS_VALID (ts))
    return 0;
  ts = gst_segment_to_running_time (&pad->segment, GST_FORMAT_TIME, ts);
  /* outside the segment: no deadline to wait for, push now */
  return GST_CLOCK_TIME_IS_VALID (ts) ? ts : 0;
}

/* The aggregator's own latency, added to its "latency" property (which
 * stays the user's: it bounds what each sink pad queues). */
void
gst_wsi_batch_set_timeout (GstWsiBatch * batch, GstClockTime timeout)
{
  gst_aggregator_set_latency (batch->agg, timeout, timeout);
}

gboolean
gst_wsi_batch_check_memory (GstWsiBatch * batch, guint n, gint width,
    gint height, gdouble bytes, guint64 max_bytes)
{
  if (bytes <= max_bytes) {
    GST_DEBUG_OBJECT (batch->agg, "batch of %u patches of %dx%d: about "
        "%.1f MiB", n, width, height, bytes / (1 << 20));
    return TRUE;
  }
  GST_ELEMENT_ERROR (batch->agg, RESOURCE, NO_SPACE_LEFT,
      ("Not enough memory allowed: a batch of %u patches of %dx%d needs "
          "about %.2f GiB, beyond max-memory (%.2f GiB).", n, width, height,
          bytes / (1 << 30), max_bytes / (gdouble) (1 << 30)),
      ("Lower batch-size or the patch size, or raise max-memory."));
  return FALSE;
}

gboolean
gst_wsi_batch_grow (gpointer * array, gsize * capacity, gsize need,
    gsize elem_size)
{
  gpointer p;

  if (need <= *capacity)
    return TRUE;
  p = g_try_malloc_n (need, elem_size);
  if (!p)
    return FALSE;
  g_free (*array);
  *array = p;
  *capacity = need;
  return TRUE;
}

/* Metas without tags (tile, augmentation) describe the patch, not its
 * pixel layout: they carry over to the output; video metas do not. */
static gboolean
copy_untagged_meta (GstBuffer * in, GstMeta ** meta, gpointer out)
{
  const GstMetaInfo *info = (*meta)->info;
  const gchar *const *tags = gst_meta_api_type_get_tags (info->api);
  GstMetaTransformCopy copy = { FALSE, 0, (gsize) - 1 };

  if ((!tags || !tags[0]) && info->transform_func)
    info->transform_func (GST_BUFFER (out), *meta, in,
        _gst_meta_transform_copy, &copy);
  return TRUE;
}

void
gst_wsi_batch_copy_metadata (GstBuffer * out, GstBuffer * in)
{
  gst_buffer_copy_into (out, in, GST_BUFFER_COPY_FLAGS |
      GST_BUFFER_COPY_TIMESTAMPS, 0, -1);
  gst_buffer_foreach_meta (in, copy_untagged_meta, out);
}

GstFlowReturn
gst_wsi_batch_finish_buffer (GstWsiBatch * batch, GstBuffer * out,
    GstBuffer * in, gint width, gint height, gboolean fit)
{
  GstWsiTileMeta *meta;
  GstFlowReturn ret;

  gst_wsi_batch_copy_metadata (out, in);
  meta = gst_buffer_get_wsi_tile_meta (out);
  if (meta && fit)
    gst_wsi_tile_meta_fit_to_size (meta, width, height);
  ret = gst_aggregator_finish_buffer (batch->agg, out);
  batch->patches++;
  if (batch->patches % STATS_EVERY == 0 && batch->post_messages
      && gst_wsi_periodic_message_due (g_atomic_int_get
          (batch->post_messages), &batch->last_stats_msg_us, 0))
    post_stats (batch);
  return ret;
}

void
gst_wsi_batch_set_stats (GstWsiBatch * batch, const gchar * prefix,
    gint * post_messages)
{
  g_free (batch->stats_name);
  batch->stats_name = g_strdup_printf ("%s-stats", prefix);
  batch->post_messages = post_messages;
}

void
gst_wsi_batch_reset_stats (GstWsiBatch * batch)
{
  batch->patches = batch->batches = 0;
  batch->busy_seconds = 0;
  batch->first_time = 0;
  batch->last_stats_msg_us = 0;
}

void
gst_wsi_batch_busy (GstWsiBatch * batch, gint64 since_us)
{
  batch->busy_seconds += (g_get_monotonic_time () - since_us) / 1e6;
  batch->busy_marked = TRUE;
}

void
gst_wsi_batch_count (GstWsiBatch * batch, guint n)
{
  batch->patches += n;
}
