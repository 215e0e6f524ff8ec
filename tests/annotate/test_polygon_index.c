/* Polygon rasterisation with the edge index (elements/core/wsiannot.c), issue #9
 * point 14: a patch of a polygon with a million vertices must cost only the
 * edges near it (counted by wsi_polygon_set_edges_visited, not timed), and
 * give exactly what a scan over every edge gives. Suite annotate. */
#include <glib.h>
#include <math.h>
#include <string.h>

#include "wsiannot.h"

#define P 256

/* Reference: every edge of every ring tested for each row (the rule of
 * docs/labelpatch.md), even-odd fill at pixel centres. */
static void
brute_force (const gdouble * xy, guint n, const WsiPatchGeom * g,
    guint8 label, guint8 * out)
{
  GArray *xs = g_array_new (FALSE, FALSE, sizeof (gdouble));

  memset (out, 0, (gsize) g->width * g->height);
  for (gint j = 0; j < g->height; j++) {
    gdouble cy = g->y + (j + 0.5) * g->downsample;
    g_array_set_size (xs, 0);
    for (guint a = 0, b = n - 1; a < n; b = a++) {
      gdouble ya = xy[2 * a + 1], yb = xy[2 * b + 1];
      if ((ya <= cy) != (yb <= cy)) {
        gdouble xa = xy[2 * a], xb = xy[2 * b];
        gdouble xc = xa + (cy - ya) * (xb - xa) / (yb - ya);
        g_array_append_val (xs, xc);
      }
    }
    for (guint i = 0; i < (guint) g->width; i++) {
      gdouble cx = g->x + (i + 0.5) * g->downsample;
      guint left = 0;
      for (guint k = 0; k < xs->len; k++)
        left += g_array_index (xs, gdouble, k) <= cx;
      if (left & 1)
        out[j * g->width + i] = label;
    }
  }
  g_array_unref (xs);
}

static void
geom_at (WsiPatchGeom * g, gdouble x, gdouble y, gdouble ds)
{
  memset (g, 0, sizeof (*g));
  g->x = x;
  g->y = y;
  g->downsample = ds;
  g->width = g->height = P;
  g->valid_w = g->valid_h = P;
  g->scale_x = g->scale_y = 1.0;
}

/* Rasterises patches at @pos and compares with the brute force; returns the
 * largest number of edges one patch visited. */
static guint64
check_polygon (const gdouble * xy, guint n, const gdouble (*pos)[2],
    guint n_pos, gdouble ds)
{
  WsiPolygonSet *set = wsi_polygon_set_new ();
  guint8 *got = g_malloc ((gsize) P * P), *want = g_malloc ((gsize) P * P);
  guint64 worst = 0;

  wsi_polygon_set_begin (set, 7);
  g_assert_true (wsi_polygon_set_add_ring (set, xy, n));
  wsi_polygon_set_end (set);
  for (guint p = 0; p < n_pos; p++) {
    WsiPatchGeom g;
    guint64 before = wsi_polygon_set_edges_visited (set), cost;
    geom_at (&g, pos[p][0], pos[p][1], ds);
    memset (got, 0, (gsize) P * P);
    wsi_polygon_set_rasterise (set, &g, got, P);
    cost = wsi_polygon_set_edges_visited (set) - before;
    worst = MAX (worst, cost);
    brute_force (xy, n, &g, 7, want);
    for (gsize k = 0; k < (gsize) P * P; k++)
      if (got[k] != want[k])
        g_error ("patch (%g, %g) ds %g: pixel (%d, %d) is %u, want %u",
            pos[p][0], pos[p][1], ds, (gint) (k % P), (gint) (k / P), got[k],
            want[k]);
    g_test_message ("patch (%g, %g) ds %g: %" G_GUINT64_FORMAT " edges "
        "visited, %u in the polygon", pos[p][0], pos[p][1], ds, cost, n);
  }
  wsi_polygon_set_free (set);
  g_free (got);
  g_free (want);
  return worst;
}

/* A million-vertex wiggly ring 8000 pixels across. */
static void
test_big_polygon (void)
{
  const guint n = 1000000;
  gdouble *xy = g_new (gdouble, 2 * n);
  GRand *rand = g_rand_new_with_seed (5);
  static const gdouble pos[][2] = {
    {4872.3, 4901.7},           /* inside, far from the edge */
    {8900.5, 4950.2},           /* on the right edge */
    {4990.1, 800.6},            /* on the top edge */
    {100.0, 100.0},             /* outside, in the bounding box */
    {-3000.0, 5000.0},          /* outside the bounding box */
  };
  guint64 worst;

  for (guint i = 0; i < n; i++) {
    gdouble t = 2 * G_PI * i / n + g_rand_double_range (rand, 0, 1e-7);
    gdouble r = 4000 + 300 * sin (50 * t) + g_rand_double_range (rand, 0, 2);
    xy[2 * i] = 5000.25 + r * cos (t);
    xy[2 * i + 1] = 5000.75 + r * sin (t);
  }
  worst = check_polygon (xy, n, pos, G_N_ELEMENTS (pos), 1.0);
  /* scanning every edge would be P * n = 256 million per patch */
  g_assert_cmpuint (worst, <, (guint64) P * 2000);
  worst = check_polygon (xy, n, pos, 3, 4.0);
  g_assert_cmpuint (worst, <, (guint64) P * 8000);
  g_rand_free (rand);
  g_free (xy);
}

/* Long edges (a star whose spikes all reach the centre) cannot be banded
 * finely; the index grows coarser and stays exact. */
static void
test_long_edges (void)
{
  const guint n = 4000;
  gdouble *xy = g_new (gdouble, 2 * n);
  static const gdouble pos[][2] = {
    {900.2, 900.9}, {1000.5, 700.3}, {0.0, 0.0},
  };

  for (guint i = 0; i < n; i++) {
    gdouble t = 2 * G_PI * (i + 0.31) / n;
    gdouble r = (i & 1) ? 1000.0 : 3.7;
    xy[2 * i] = 1000.25 + r * cos (t);
    xy[2 * i + 1] = 1000.75 + r * sin (t);
  }
  check_polygon (xy, n, pos, G_N_ELEMENTS (pos), 1.0);
  check_polygon (xy, n, pos, G_N_ELEMENTS (pos), 3.0);
  g_free (xy);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/polygon-index/big-polygon", test_big_polygon);
  g_test_add_func ("/polygon-index/long-edges", test_long_edges);
  return g_test_run ();
}
