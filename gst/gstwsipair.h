/* Pairing an image (or prediction) patch with its annotation patch by tile
 * metadata -- one rule for every element: two patches are partners when
 * they are at the same place, i.e. the same slide (per GstWsiSlideMatch),
 * pyramid level and level-0 x/y. Two ways to use it:
 *  - ordered streams (two branches of one tee, segment-fcn's training and
 *    validation pads): gst_wsi_pair_peek() on two aggregator pads; when the
 *    heads are not partners the one with the smaller frame number has lost
 *    its partner and is skipped;
 *  - unordered streams (segeval): a GstWsiPairQueue holds patches until
 *    their partner arrives, or drops them after max-pending arrivals.
 * docs/architecture.md, "writing a second segmentation element". */
#pragma once

#include <gst/gst.h>
#include <gst/base/gstaggregator.h>

#include "gstwsitilemeta.h"

G_BEGIN_DECLS

typedef enum
{
  GST_WSI_SLIDE_MATCH_PATH,     /* the same slide string */
  GST_WSI_SLIDE_MATCH_NAME,     /* the same file name without extension */
  GST_WSI_SLIDE_MATCH_NONE,     /* slide ignored */
} GstWsiSlideMatch;

/* Where a patch is (the pairing key). */
typedef struct
{
  gchar *slide;                 /* key per GstWsiSlideMatch ("" for NONE) */
  gint level;
  gint64 x, y;
  guint64 frame;
} GstWsiPlace;

/* FALSE (place cleared) when @buf has no tile meta. */
gboolean gst_wsi_place_from_buffer (GstWsiPlace * place, GstBuffer * buf,
    GstWsiSlideMatch match);
void gst_wsi_place_clear (GstWsiPlace * place);
/* The pairing rule: same slide key, level and level-0 x/y. */
gboolean gst_wsi_place_equal (const GstWsiPlace * a, const GstWsiPlace * b);
/* "slide 'S', patch at level-0 (X, Y)" for messages (g_free). */
gchar *gst_wsi_place_describe (GstBuffer * buf);

/* What of a pair is compared (segeval, validation metrics): the centre
 * crop of the valid area, so that overlapping patches count every image
 * pixel once; @meta fitted to the patch size (valid downsample, overlap
 * below the patch size). Patch pixel spans [x0, x1) x [y0, y1). */
void gst_wsi_pair_compared_area (const GstWsiTileMeta * meta,
    gint * x0, gint * x1, gint * y0, gint * y1);

/* ---- ordered streams: peek at two aggregator pads ---- */

typedef enum
{
  GST_WSI_PAIR_READY,           /* *img (and *ann) hold the next pair */
  GST_WSI_PAIR_WAIT,            /* a pad has no data yet */
  GST_WSI_PAIR_SKIPPED,         /* an unpaired patch was dropped (warning) */
  GST_WSI_PAIR_EOS,             /* a stream ended */
  GST_WSI_PAIR_ERROR,           /* the heads disagree (error posted) */
} GstWsiPairStatus;

/* Peeks at the heads of @ipad and @apad (NULL: images only); the pair stays
 * queued on the pads until gst_wsi_pair_take(). Patches without tile meta
 * pair in arrival order. Heads that are not partners: the one of smaller
 * frame is dropped with a warning (its partner was lost upstream); equal
 * frames at different places are an error of @element. */
GstWsiPairStatus gst_wsi_pair_peek (GstElement * element,
    GstAggregatorPad * ipad, GstAggregatorPad * apad, GstBuffer ** img,
    GstBuffer ** ann);
/* Drops the peeked pair's buffers from the pads. */
void gst_wsi_pair_take (GstAggregatorPad * ipad, GstAggregatorPad * apad);

/* ---- unordered streams: a queue per side ---- */

typedef struct _GstWsiPairQueue GstWsiPairQueue;

/* A patch dropped without partner (@side 0 or 1); the buffer is freed
 * after the call. */
typedef void (*GstWsiPairUnmatchedFunc) (gint side, GstBuffer * buf,
    const GstWsiPlace * place, gpointer user_data);

GstWsiPairQueue *gst_wsi_pair_queue_new (GstWsiPairUnmatchedFunc unmatched,
    gpointer user_data);
void gst_wsi_pair_queue_free (GstWsiPairQueue * q);
/* Settings of the next pushes (e.g. at start). */
void gst_wsi_pair_queue_configure (GstWsiPairQueue * q,
    GstWsiSlideMatch match, guint max_pending);
/* Takes @buf, which must carry tile meta. Returns TRUE when its partner was
 * waiting: then @pair[0] / @pair[1] hold the side-0 / side-1 buffers and
 * @key their slide key (the caller owns all three). Otherwise @buf waits.
 * Then patches whose partner did not come among the next max-pending
 * arrivals of the other side are dropped (unmatched callback). */
gboolean gst_wsi_pair_queue_push (GstWsiPairQueue * q, gint side,
    GstBuffer * buf, GstBuffer * pair[2], gchar ** key);
/* Drops every waiting patch through the unmatched callback (EOS). */
void gst_wsi_pair_queue_drain (GstWsiPairQueue * q);
/* Drops every waiting patch silently and restarts the arrival counts. */
void gst_wsi_pair_queue_reset (GstWsiPairQueue * q);

G_END_DECLS
