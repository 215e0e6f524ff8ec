/* gst/gstwsipair: the one pairing rule (slide per slide-match, level,
 * level-0 x/y) and the unordered queue segeval uses (max-pending drop). */
#include <gst/gst.h>

#include "gstwsipair.h"
#include "gstwsitilemeta.h"

static GstBuffer *
patch (const gchar * slide, gint level, gint64 x, gint64 y, guint64 frame)
{
  GstBuffer *b = gst_buffer_new ();
  GstWsiTileMeta *m = gst_wsi_tile_meta_add (b);

  gst_wsi_tile_meta_set_slide (m, slide);
  m->level = level;
  m->x = x;
  m->y = y;
  m->frame = frame;
  return b;
}

static gboolean
same (GstBuffer * a, GstBuffer * b, GstWsiSlideMatch match)
{
  GstWsiPlace pa, pb;
  gboolean r;

  g_assert_true (gst_wsi_place_from_buffer (&pa, a, match));
  g_assert_true (gst_wsi_place_from_buffer (&pb, b, match));
  r = gst_wsi_place_equal (&pa, &pb);
  gst_wsi_place_clear (&pa);
  gst_wsi_place_clear (&pb);
  gst_buffer_unref (a);
  gst_buffer_unref (b);
  return r;
}

static void
test_rule (void)
{
  GstWsiPlace p;
  GstBuffer *bare = gst_buffer_new ();

  g_assert_true (same (patch ("a/s1.svs", 0, 10, 20, 1),
          patch ("a/s1.svs", 0, 10, 20, 9), GST_WSI_SLIDE_MATCH_PATH));
  g_assert_false (same (patch ("a/s1.svs", 0, 10, 20, 1),
          patch ("a/s1.svs", 1, 10, 20, 1), GST_WSI_SLIDE_MATCH_PATH));
  g_assert_false (same (patch ("a/s1.svs", 0, 10, 20, 1),
          patch ("a/s1.svs", 0, 11, 20, 1), GST_WSI_SLIDE_MATCH_PATH));
  g_assert_false (same (patch ("a/s1.svs", 0, 10, 20, 1),
          patch ("b/s1.png", 0, 10, 20, 1), GST_WSI_SLIDE_MATCH_PATH));
  g_assert_true (same (patch ("a/s1.svs", 0, 10, 20, 1),
          patch ("b/s1.png", 0, 10, 20, 1), GST_WSI_SLIDE_MATCH_NAME));
  g_assert_true (same (patch ("a/s1.svs", 0, 10, 20, 1),
          patch ("b/s2.png", 0, 10, 20, 1), GST_WSI_SLIDE_MATCH_NONE));
  g_assert_false (gst_wsi_place_from_buffer (&p, bare,
          GST_WSI_SLIDE_MATCH_PATH));
  gst_buffer_unref (bare);
}

static void
count_unmatched (gint side, GstBuffer * buf, const GstWsiPlace * place,
    gpointer user_data)
{
  ((guint *) user_data)[side]++;
}

static void
test_queue (void)
{
  guint unmatched[2] = { 0, 0 };
  GstWsiPairQueue *q = gst_wsi_pair_queue_new (count_unmatched, unmatched);
  GstBuffer *pair[2];
  gchar *key = NULL;

  gst_wsi_pair_queue_configure (q, GST_WSI_SLIDE_MATCH_NAME, 2);
  /* out of order partners pair; side 0 always in pair[0] */
  g_assert_false (gst_wsi_pair_queue_push (q, 1, patch ("m/s.png", 0, 0, 0,
              0), pair, &key));
  g_assert_false (gst_wsi_pair_queue_push (q, 0, patch ("i/s.svs", 0, 8, 0,
              0), pair, &key));
  g_assert_true (gst_wsi_pair_queue_push (q, 0, patch ("i/s.svs", 0, 0, 0,
              1), pair, &key));
  g_assert_cmpstr (key, ==, "s");
  g_assert_cmpint (gst_buffer_get_wsi_tile_meta (pair[0])->frame, ==, 1);
  gst_buffer_unref (pair[0]);
  gst_buffer_unref (pair[1]);
  g_free (key);
  /* (8, 0) on side 0 waits; three side-1 arrivals without it drop it */
  for (gint i = 0; i < 3; i++)
    g_assert_false (gst_wsi_pair_queue_push (q, 1, patch ("m/s.png", 0, 100,
                i, 0), pair, &key));
  g_assert_cmpuint (unmatched[0], ==, 1);
  gst_wsi_pair_queue_drain (q);
  g_assert_cmpuint (unmatched[1], ==, 3);
  gst_wsi_pair_queue_free (q);
}

int
main (int argc, char **argv)
{
  gst_init (&argc, &argv);
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/pair/rule", test_rule);
  g_test_add_func ("/pair/queue", test_queue);
  return g_test_run ();
}
