/* Pairing patches by tile metadata: gstwsipair.h. */
#include <math.h>
#include <string.h>

#include "gstwsipair.h"
#include "gstwsitilemeta.h"
#include "wsimetrics.h"

static gchar *
slide_key (GstWsiSlideMatch match, const gchar * slide)
{
  gchar *base, *dot;

  if (match == GST_WSI_SLIDE_MATCH_NONE || !slide)
    return g_strdup ("");
  if (match == GST_WSI_SLIDE_MATCH_PATH)
    return g_strdup (slide);
  base = g_path_get_basename (slide);
  dot = strrchr (base, '.');
  if (dot && dot != base)
    *dot = '\0';
  return base;
}

gboolean
gst_wsi_place_from_buffer (GstWsiPlace * place, GstBuffer * buf,
    GstWsiSlideMatch match)
{
  GstWsiTileMeta *m = gst_buffer_get_wsi_tile_meta (buf);

  memset (place, 0, sizeof *place);
  if (!m)
    return FALSE;
  place->slide = slide_key (match, m->slide);
  place->level = m->level;
  place->x = m->x;
  place->y = m->y;
  place->frame = m->frame;
  return TRUE;
}

void
gst_wsi_place_clear (GstWsiPlace * place)
{
  g_clear_pointer (&place->slide, g_free);
}

gboolean
gst_wsi_place_equal (const GstWsiPlace * a, const GstWsiPlace * b)
{
  return a->level == b->level && a->x == b->x && a->y == b->y
      && g_strcmp0 (a->slide, b->slide) == 0;
}

gchar *
gst_wsi_place_describe (GstBuffer * buf)
{
  GstWsiTileMeta *m = gst_buffer_get_wsi_tile_meta (buf);

  if (!m)
    return g_strdup ("(patch without tile metadata)");
  return g_strdup_printf ("slide '%s', patch at level-0 (%" G_GINT64_FORMAT
      ", %" G_GINT64_FORMAT ")", m->slide ? m->slide : "", m->x, m->y);
}

void
gst_wsi_pair_compared_area (const GstWsiTileMeta * m, gint * x0, gint * x1,
    gint * y0, gint * y1)
{
  gint64 rw, rh, px, py;

  gst_wsi_tile_meta_region_level_size (m, &rw, &rh);
  px = llround ((m->x - m->region_x) / m->downsample);
  py = llround ((m->y - m->region_y) / m->downsample);
  wsi_metrics_crop_span (m->width, m->overlap, m->pad_left, m->valid_width,
      px, rw, m->col == 0, m->grid_cols > 0 && m->col == m->grid_cols - 1,
      x0, x1);
  wsi_metrics_crop_span (m->height, m->overlap, m->pad_top, m->valid_height,
      py, rh, m->row == 0, m->grid_rows > 0 && m->row == m->grid_rows - 1,
      y0, y1);
}

/* ------------------------------------------------------- ordered streams */

GstWsiPairStatus
gst_wsi_pair_peek (GstElement * element, GstAggregatorPad * ipad,
    GstAggregatorPad * apad, GstBuffer ** img, GstBuffer ** ann)
{
  GstWsiPlace pi, pa;
  gboolean have_i, have_a;
  GstWsiPairStatus status = GST_WSI_PAIR_READY;

  *img = gst_aggregator_pad_peek_buffer (ipad);
  *ann = apad ? gst_aggregator_pad_peek_buffer (apad) : NULL;
  if (!*img || (apad && !*ann)) {
    gboolean img_done = !*img && gst_aggregator_pad_is_eos (ipad);
    gboolean ann_done = apad && !*ann && gst_aggregator_pad_is_eos (apad);
    gst_clear_buffer (img);
    gst_clear_buffer (ann);
    if (!img_done && !ann_done)
      return GST_WSI_PAIR_WAIT;
    if (apad && img_done != ann_done)
      GST_ELEMENT_WARNING (element, STREAM, FAILED,
          ("The %s stream of pad %s ended before the other one; unpaired "
              "patches are not used.", img_done ? "image" : "annotation",
              GST_PAD_NAME (img_done ? ipad : apad)), (NULL));
    return GST_WSI_PAIR_EOS;
  }
  if (!*ann)
    return GST_WSI_PAIR_READY;
  have_i = gst_wsi_place_from_buffer (&pi, *img, GST_WSI_SLIDE_MATCH_PATH);
  have_a = gst_wsi_place_from_buffer (&pa, *ann, GST_WSI_SLIDE_MATCH_PATH);
  if (!have_i || !have_a || gst_wsi_place_equal (&pi, &pa)) {
    /* partners (or no tile meta: arrival order) */
  } else if (pi.frame != pa.frame) {
    gboolean drop_image = pi.frame < pa.frame;
    gchar *where = gst_wsi_place_describe (drop_image ? *img : *ann);
    GST_ELEMENT_WARNING (element, STREAM, FAILED,
        ("No %s for %s: patch skipped.", drop_image ? "annotation" : "image",
            where), (NULL));
    g_free (where);
    gst_aggregator_pad_drop_buffer (drop_image ? ipad : apad);
    status = GST_WSI_PAIR_SKIPPED;
  } else {
    gchar *a = gst_wsi_place_describe (*img), *b =
        gst_wsi_place_describe (*ann);
    GST_ELEMENT_ERROR (element, STREAM, FAILED,
        ("Image and annotation patches disagree: %s vs %s.", a, b),
        ("Feed both pads from the two branches of one tee after patchify."));
    g_free (a);
    g_free (b);
    status = GST_WSI_PAIR_ERROR;
  }
  gst_wsi_place_clear (&pi);
  gst_wsi_place_clear (&pa);
  if (status != GST_WSI_PAIR_READY) {
    gst_clear_buffer (img);
    gst_clear_buffer (ann);
  }
  return status;
}

void
gst_wsi_pair_take (GstAggregatorPad * ipad, GstAggregatorPad * apad)
{
  gst_aggregator_pad_drop_buffer (ipad);
  if (apad)
    gst_aggregator_pad_drop_buffer (apad);
}

/* ----------------------------------------------------- unordered streams */

typedef struct
{
  GstBuffer *buffer;
  GstWsiPlace place;
  guint64 other_seen;           /* other side's arrivals when this one came */
} Waiting;

struct _GstWsiPairQueue
{
  GstWsiPairUnmatchedFunc unmatched;
  gpointer user_data;
  GstWsiSlideMatch match;
  guint max_pending;
  GQueue waiting[2];
  guint64 arrivals[2];
};

static void
waiting_free (Waiting * w)
{
  gst_buffer_unref (w->buffer);
  gst_wsi_place_clear (&w->place);
  g_free (w);
}

GstWsiPairQueue *
gst_wsi_pair_queue_new (GstWsiPairUnmatchedFunc unmatched,
    gpointer user_data)
{
  GstWsiPairQueue *q = g_new0 (GstWsiPairQueue, 1);

  q->unmatched = unmatched;
  q->user_data = user_data;
  q->max_pending = G_MAXUINT;
  g_queue_init (&q->waiting[0]);
  g_queue_init (&q->waiting[1]);
  return q;
}

void
gst_wsi_pair_queue_free (GstWsiPairQueue * q)
{
  if (!q)
    return;
  gst_wsi_pair_queue_reset (q);
  g_free (q);
}

void
gst_wsi_pair_queue_configure (GstWsiPairQueue * q, GstWsiSlideMatch match,
    guint max_pending)
{
  q->match = match;
  q->max_pending = max_pending;
}

static void
drop_unmatched (GstWsiPairQueue * q, gint side, Waiting * w)
{
  if (q->unmatched)
    q->unmatched (side, w->buffer, &w->place, q->user_data);
  waiting_free (w);
}

gboolean
gst_wsi_pair_queue_push (GstWsiPairQueue * q, gint side, GstBuffer * buf,
    GstBuffer * pair[2], gchar ** key)
{
  const gint other = 1 - side;
  Waiting *w = g_new0 (Waiting, 1);
  gboolean paired = FALSE;
  GList *l;

  w->buffer = buf;
  gst_wsi_place_from_buffer (&w->place, buf, q->match);
  q->arrivals[side]++;
  w->other_seen = q->arrivals[other];
  for (l = q->waiting[other].head; l; l = l->next) {
    Waiting *o = l->data;
    if (gst_wsi_place_equal (&w->place, &o->place)) {
      g_queue_delete_link (&q->waiting[other], l);
      pair[side] = w->buffer;
      pair[other] = o->buffer;
      *key = g_steal_pointer (&w->place.slide);
      gst_wsi_place_clear (&o->place);
      g_free (o);
      g_free (w);
      w = NULL;
      paired = TRUE;
      break;
    }
  }
  if (w)
    g_queue_push_tail (&q->waiting[side], w);
  /* a patch whose partner did not come among the next max-pending patches
   * of the other side is dropped */
  for (gint s = 0; s < 2; s++) {
    Waiting *h;
    while ((h = g_queue_peek_head (&q->waiting[s]))
        && q->arrivals[1 - s] - h->other_seen > q->max_pending)
      drop_unmatched (q, s, g_queue_pop_head (&q->waiting[s]));
  }
  return paired;
}

void
gst_wsi_pair_queue_drain (GstWsiPairQueue * q)
{
  Waiting *w;

  for (gint s = 0; s < 2; s++)
    while ((w = g_queue_pop_head (&q->waiting[s])))
      drop_unmatched (q, s, w);
}

void
gst_wsi_pair_queue_reset (GstWsiPairQueue * q)
{
  for (gint s = 0; s < 2; s++) {
    g_queue_clear_full (&q->waiting[s], (GDestroyNotify) waiting_free);
    q->arrivals[s] = 0;
  }
}
