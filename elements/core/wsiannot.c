#include "wsiannot.h"

#include <math.h>
#include <string.h>

G_DEFINE_QUARK (wsi-annot-error-quark, wsi_annot_error);

/* ---- path patterns ---- */

static const gchar *
base_name_start (const gchar * path)
{
  const gchar *slash = strrchr (path, '/');

  return slash ? slash + 1 : path;
}

/* Appends the value of placeholder @key for @slide; FALSE if unknown. */
static gboolean
append_placeholder (GString * out, const gchar * key, gsize key_len,
    const gchar * slide)
{
  const gchar *file = base_name_start (slide);
  const gchar *last_dot = strrchr (file, '.');
  const gchar *first_dot = *file ? strchr (file + 1, '.') : NULL;

  if (last_dot == file)
    last_dot = NULL;            /* ".hidden" has no extension */
#define IS(k) (key_len == strlen (k) && !strncmp (key, k, key_len))
  if (IS ("path"))
    g_string_append (out, slide);
  else if (IS ("dir")) {
    if (file == slide)
      g_string_append_c (out, '.');
    else if (file - 1 == slide)
      g_string_append_c (out, '/');
    else
      g_string_append_len (out, slide, file - 1 - slide);
  } else if (IS ("file"))
    g_string_append (out, file);
  else if (IS ("name"))
    g_string_append_len (out, file, last_dot ? last_dot - file :
        (gssize) strlen (file));
  else if (IS ("stem"))
    g_string_append_len (out, file, first_dot ? first_dot - file :
        (gssize) strlen (file));
  else if (IS ("ext")) {
    if (last_dot)
      g_string_append (out, last_dot + 1);
  } else
    return FALSE;
#undef IS
  return TRUE;
}

gchar *
wsi_annot_expand_pattern (const gchar * pattern, const gchar * slide,
    GError ** error)
{
  GString *out = g_string_new (NULL);
  const gchar *p = pattern;

  while (*p) {
    const gchar *close;

    if ((p[0] == '{' && p[1] == '{') || (p[0] == '}' && p[1] == '}')) {
      g_string_append_c (out, *p);
      p += 2;
      continue;
    }
    if (*p != '{') {
      g_string_append_c (out, *p++);
      continue;
    }
    close = strchr (p, '}');
    if (!close) {
      g_set_error (error, WSI_ANNOT_ERROR, 0,
          "unterminated placeholder in path pattern '%s'", pattern);
      g_string_free (out, TRUE);
      return NULL;
    }
    if (!append_placeholder (out, p + 1, close - p - 1,
            slide ? slide : "dir/name.ext")) {
      g_set_error (error, WSI_ANNOT_ERROR, 0,
          "unknown placeholder '%.*s' in path pattern '%s' (known: {path} "
          "{dir} {file} {name} {stem} {ext})", (int) (close - p + 1), p,
          pattern);
      g_string_free (out, TRUE);
      return NULL;
    }
    p = close + 1;
  }
  if (!slide)
    g_string_truncate (out, 0);
  return g_string_free (out, FALSE);
}

/* ---- label lookup ---- */

static inline gboolean
in_valid (const WsiPatchGeom * g, gint i, gint j)
{
  return i >= g->valid_x && i < g->valid_x + g->valid_w &&
      j >= g->valid_y && j < g->valid_y + g->valid_h;
}

/* Label index of patch pixel @i along one axis, -1 when outside [0, size). */
static void
axis_lookup (gdouble origin, gdouble ds, gdouble scale, gint n, gint64 size,
    gint valid_from, gint valid_n, gint64 * idx)
{
  gint i;

  for (i = 0; i < n; i++) {
    gdouble c = floor ((origin + (i + 0.5) * ds) * scale);
    if (i < valid_from || i >= valid_from + valid_n || !(c >= 0)
        || c >= (gdouble) size)
      idx[i] = -1;
    else
      idx[i] = (gint64) c;
  }
}

void
wsi_annot_sample (const WsiLabelImage * img, const WsiPatchGeom * g,
    guint ignore, gpointer dst, gsize dst_stride)
{
  gint64 *cols = g_new (gint64, g->width);
  gint64 *rows = g_new (gint64, g->height);
  gint i, j;

  axis_lookup (g->x, g->downsample, g->scale_x, g->width, img->width,
      g->valid_x, g->valid_w, cols);
  axis_lookup (g->y, g->downsample, g->scale_y, g->height, img->height,
      g->valid_y, g->valid_h, rows);

  for (j = 0; j < g->height; j++) {
    if (img->bytes_per_pixel == 1) {
      guint8 *d = (guint8 *) dst + j * dst_stride;
      const guint8 *s = rows[j] < 0 ? NULL :
          (const guint8 *) img->data + rows[j] * img->width;
      for (i = 0; i < g->width; i++)
        d[i] = (s && cols[i] >= 0) ? s[cols[i]] : ignore;
    } else {
      guint16 *d = (guint16 *) ((guint8 *) dst + j * dst_stride);
      const guint16 *s = rows[j] < 0 ? NULL :
          (const guint16 *) img->data + rows[j] * img->width;
      for (i = 0; i < g->width; i++)
        d[i] = (s && cols[i] >= 0) ? s[cols[i]] : ignore;
    }
  }
  g_free (cols);
  g_free (rows);
}

void
wsi_annot_mask_invalid (const WsiPatchGeom * g, gint64 limit_w,
    gint64 limit_h, guint bpp, guint ignore, gpointer dst, gsize dst_stride)
{
  gint64 *cols = g_new (gint64, g->width);
  gint64 *rows = g_new (gint64, g->height);
  gint i, j;

  /* scale 1: indices are level-0 pixels, compared with the limits */
  axis_lookup (g->x, g->downsample, 1.0, g->width,
      limit_w > 0 ? limit_w : G_MAXINT64, g->valid_x, g->valid_w, cols);
  axis_lookup (g->y, g->downsample, 1.0, g->height,
      limit_h > 0 ? limit_h : G_MAXINT64, g->valid_y, g->valid_h, rows);
  for (j = 0; j < g->height; j++) {
    guint8 *d8 = (guint8 *) dst + j * dst_stride;
    guint16 *d16 = (guint16 *) d8;
    for (i = 0; i < g->width; i++) {
      if (rows[j] >= 0 && cols[i] >= 0)
        continue;
      if (bpp == 1)
        d8[i] = ignore;
      else
        d16[i] = ignore;
    }
  }
  g_free (cols);
  g_free (rows);
}

/* ---- instance maps ---- */

guint8 *
wsi_annot_instance_classes (const guint16 * inst, gint w, gint h,
    gboolean boundary, gint connectivity)
{
  guint8 *out = g_try_malloc ((gsize) w * h);
  gint x, y;

  if (!out)
    return NULL;
  for (y = 0; y < h; y++) {
    const guint16 *row = inst + (gsize) y * w;
    guint8 *o = out + (gsize) y * w;
    for (x = 0; x < w; x++) {
      guint16 v = row[x];
      gboolean edge = FALSE;
      gint dy, dx;

      if (v == 0) {
        o[x] = 0;
        continue;
      }
      if (!boundary) {
        o[x] = 1;
        continue;
      }
      for (dy = -1; dy <= 1 && !edge; dy++) {
        gint yy = y + dy;
        if (yy < 0 || yy >= h)
          continue;
        for (dx = -1; dx <= 1; dx++) {
          gint xx = x + dx;
          if ((dx == 0 && dy == 0) || xx < 0 || xx >= w)
            continue;
          if (connectivity != 8 && dx != 0 && dy != 0)
            continue;
          if (inst[(gsize) yy * w + xx] != v) {
            edge = TRUE;
            break;
          }
        }
      }
      o[x] = edge ? 2 : 1;
    }
  }
  return out;
}

/* ---- augmentation replay ---- */

void
wsi_annot_augment (const guint8 * src, gint w, gint h, gsize src_stride,
    guint bpp, gboolean flip_h, gboolean flip_v, gint rot90, guint8 * dst,
    gsize dst_stride)
{
  gint k = ((rot90 % 4) + 4) % 4;
  gint ow = (k & 1) ? h : w, oh = (k & 1) ? w : h;
  gint ox, oy;

  /* For every output pixel walk the transforms backwards: undo the turns,
   * then the vertical flip, then the horizontal flip. */
  for (oy = 0; oy < oh; oy++) {
    guint8 *d = dst + oy * dst_stride;
    for (ox = 0; ox < ow; ox++) {
      gint sx, sy;
      /* numpy.rot90 (a, k): out[r, c] of one counter-clockwise turn of an
       * R x C array is a[c, C - 1 - r] */
      switch (k) {
        case 1:
          sx = w - 1 - oy;
          sy = ox;
          break;
        case 2:
          sx = w - 1 - ox;
          sy = h - 1 - oy;
          break;
        case 3:
          sx = oy;
          sy = h - 1 - ox;
          break;
        default:
          sx = ox;
          sy = oy;
          break;
      }
      if (flip_v)
        sy = h - 1 - sy;
      if (flip_h)
        sx = w - 1 - sx;
      memcpy (d + ox * bpp, src + sy * src_stride + sx * bpp, bpp);
    }
  }
}

/* ---- polygons ---- */

/* Edge index of a polygon with many edges: its bounding box cut into
 * horizontal bands; band b lists (as point index pairs a, b) the edges whose
 * y span meets it, so a scanline tests only the edges of its band. */
typedef struct
{
  guint n_bands;
  gdouble band_h;
  guint32 *band_start;          /* n_bands + 1 offsets into edges */
  guint32 *edges;               /* pairs: current point, previous point */
} WsiEdgeIndex;

typedef struct
{
  guint label;
  guint first_ring, n_rings;
  gdouble x0, y0, x1, y1;       /* bounding box */
  WsiEdgeIndex *index;          /* NULL for small polygons */
} WsiPolygon;

typedef struct
{
  guint64 first_point;
  guint n_points;
} WsiRing;

struct _WsiPolygonSet
{
  GArray *polygons;             /* WsiPolygon */
  GArray *rings;                /* WsiRing */
  GArray *points;               /* gdouble x, y pairs */
  gboolean open;
  guint64 edges_visited;        /* edges tested by rasterise (for tests) */
};

/* Polygons with fewer edges are scanned whole. */
#define EDGE_INDEX_MIN_EDGES 64
/* Band entries allowed per edge before bands are made taller. */
#define EDGE_INDEX_MAX_FILL 4

static void
edge_index_free (WsiEdgeIndex * index)
{
  if (!index)
    return;
  g_free (index->band_start);
  g_free (index->edges);
  g_free (index);
}

static inline guint
edge_band (const WsiEdgeIndex * index, gdouble y0, gdouble y)
{
  gdouble b = floor ((y - y0) / index->band_h);

  if (!(b > 0))
    return 0;
  if (b >= index->n_bands)
    return index->n_bands - 1;
  return (guint) b;
}

/* Entries an index of @n_bands bands needs (capped at @cap + 1). */
static guint64
edge_index_count (const WsiPolygonSet * set, const WsiPolygon * poly,
    WsiEdgeIndex * index, guint32 * counts, guint64 cap)
{
  const gdouble *pts = (const gdouble *) set->points->data;
  guint64 total = 0;
  guint r;

  for (r = 0; r < poly->n_rings; r++) {
    const WsiRing *ring = &g_array_index (set->rings, WsiRing,
        poly->first_ring + r);
    const gdouble *v = pts + 2 * ring->first_point;
    guint a, b;
    for (a = 0, b = ring->n_points - 1; a < ring->n_points; b = a++) {
      gdouble ya = v[2 * a + 1], yb = v[2 * b + 1];
      guint b0, b1, k;
      if (ya == yb)
        continue;               /* never crosses a scanline */
      b0 = edge_band (index, poly->y0, MIN (ya, yb));
      b1 = edge_band (index, poly->y0, MAX (ya, yb));
      total += b1 - b0 + 1;
      if (total > cap)
        return cap + 1;
      if (counts)
        for (k = b0; k <= b1; k++)
          counts[k]++;
    }
  }
  return total;
}

/* Builds the band index of @poly: about one band per few edges, fewer
 * (taller) bands when long edges would be listed in too many of them. */
static void
edge_index_build (WsiPolygonSet * set, WsiPolygon * poly)
{
  const gdouble *pts = (const gdouble *) set->points->data;
  guint64 n_edges = 0, total, cap;
  WsiEdgeIndex *index;
  guint32 *fill;
  guint r, b;

  for (r = 0; r < poly->n_rings; r++)
    n_edges += g_array_index (set->rings, WsiRing,
        poly->first_ring + r).n_points;
  if (n_edges < EDGE_INDEX_MIN_EDGES || !(poly->y1 > poly->y0))
    return;
  index = g_new0 (WsiEdgeIndex, 1);
  index->n_bands = MIN (n_edges / 2, 1u << 22);
  cap = EDGE_INDEX_MAX_FILL * n_edges;
  for (;;) {
    index->band_h = (poly->y1 - poly->y0) / index->n_bands;
    if (!(index->band_h > 0)) {
      edge_index_free (index);
      return;
    }
    total = edge_index_count (set, poly, index, NULL, cap);
    if (total <= cap || index->n_bands == 1)
      break;
    index->n_bands /= 2;
  }
  if (total > G_MAXUINT32 / 2) {
    edge_index_free (index);
    return;
  }
  index->band_start = g_new0 (guint32, index->n_bands + 1);
  edge_index_count (set, poly, index, index->band_start + 1, G_MAXUINT64);
  for (b = 0; b < index->n_bands; b++)
    index->band_start[b + 1] += index->band_start[b];
  index->edges = g_new (guint32, 2 * total);
  fill = g_memdup2 (index->band_start, sizeof (guint32) * index->n_bands);
  for (r = 0; r < poly->n_rings; r++) {
    const WsiRing *ring = &g_array_index (set->rings, WsiRing,
        poly->first_ring + r);
    const gdouble *v = pts + 2 * ring->first_point;
    guint a, p;
    for (a = 0, p = ring->n_points - 1; a < ring->n_points; p = a++) {
      gdouble ya = v[2 * a + 1], yb = v[2 * p + 1];
      guint b0, b1, k;
      if (ya == yb)
        continue;
      b0 = edge_band (index, poly->y0, MIN (ya, yb));
      b1 = edge_band (index, poly->y0, MAX (ya, yb));
      for (k = b0; k <= b1; k++) {
        guint32 at = fill[k]++;
        index->edges[2 * at] = (guint32) (ring->first_point + a);
        index->edges[2 * at + 1] = (guint32) (ring->first_point + p);
      }
    }
  }
  g_free (fill);
  poly->index = index;
}

WsiPolygonSet *
wsi_polygon_set_new (void)
{
  WsiPolygonSet *set = g_new0 (WsiPolygonSet, 1);

  set->polygons = g_array_new (FALSE, FALSE, sizeof (WsiPolygon));
  set->rings = g_array_new (FALSE, FALSE, sizeof (WsiRing));
  set->points = g_array_new (FALSE, FALSE, sizeof (gdouble));
  return set;
}

void
wsi_polygon_set_free (WsiPolygonSet * set)
{
  guint i;

  if (!set)
    return;
  for (i = 0; i < set->polygons->len; i++)
    edge_index_free (g_array_index (set->polygons, WsiPolygon, i).index);
  g_array_unref (set->polygons);
  g_array_unref (set->rings);
  g_array_unref (set->points);
  g_free (set);
}

guint
wsi_polygon_set_n_polygons (const WsiPolygonSet * set)
{
  return set->polygons->len;
}

guint64
wsi_polygon_set_n_vertices (const WsiPolygonSet * set)
{
  return set->points->len / 2;
}

void
wsi_polygon_set_begin (WsiPolygonSet * set, guint label)
{
  WsiPolygon poly = { label, set->rings->len, 0, INFINITY, INFINITY,
    -INFINITY, -INFINITY, NULL
  };

  g_return_if_fail (!set->open);
  g_array_append_val (set->polygons, poly);
  set->open = TRUE;
}

gboolean
wsi_polygon_set_add_ring (WsiPolygonSet * set, const gdouble * xy,
    guint n_points)
{
  WsiPolygon *poly;
  WsiRing ring;
  guint i;

  g_return_val_if_fail (set->open, FALSE);
  if (n_points >= 2 && xy[0] == xy[2 * (n_points - 1)]
      && xy[1] == xy[2 * (n_points - 1) + 1])
    n_points--;
  if (n_points < 3)
    return FALSE;
  poly = &g_array_index (set->polygons, WsiPolygon, set->polygons->len - 1);
  ring.first_point = set->points->len / 2;
  ring.n_points = n_points;
  g_array_append_vals (set->points, xy, 2 * n_points);
  g_array_append_val (set->rings, ring);
  poly->n_rings++;
  for (i = 0; i < n_points; i++) {
    poly->x0 = MIN (poly->x0, xy[2 * i]);
    poly->x1 = MAX (poly->x1, xy[2 * i]);
    poly->y0 = MIN (poly->y0, xy[2 * i + 1]);
    poly->y1 = MAX (poly->y1, xy[2 * i + 1]);
  }
  return TRUE;
}

void
wsi_polygon_set_end (WsiPolygonSet * set)
{
  WsiPolygon *poly;

  g_return_if_fail (set->open);
  set->open = FALSE;
  poly = &g_array_index (set->polygons, WsiPolygon, set->polygons->len - 1);
  if (poly->n_rings == 0)
    g_array_set_size (set->polygons, set->polygons->len - 1);
  else
    edge_index_build (set, poly);
}

guint64
wsi_polygon_set_edges_visited (const WsiPolygonSet * set)
{
  return set->edges_visited;
}

/* Adds the crossing of edge (a, b) with the scanline at @cy, if any. */
static inline void
add_crossing (const gdouble * pts, guint64 a, guint64 b, gdouble cy,
    GArray * xs)
{
  gdouble ya = pts[2 * a + 1], yb = pts[2 * b + 1];

  /* half-open: an edge counts for rows in [min y, max y) */
  if ((ya <= cy) != (yb <= cy)) {
    gdouble xa = pts[2 * a], xb = pts[2 * b];
    gdouble xc = xa + (cy - ya) * (xb - xa) / (yb - ya);
    g_array_append_val (xs, xc);
  }
}

static gint
compare_double (gconstpointer a, gconstpointer b)
{
  gdouble x = *(const gdouble *) a, y = *(const gdouble *) b;

  return x < y ? -1 : x > y;
}

/* First pixel whose centre x + (i + 0.5) * ds is >= @edge, clamped. */
static gint
first_centre_at_or_after (gdouble edge, gdouble origin, gdouble ds, gint n)
{
  gdouble i = ceil ((edge - origin) / ds - 0.5);

  if (i < 0)
    return 0;
  if (i > n)
    return n;
  return (gint) i;
}

guint
wsi_polygon_set_rasterise (WsiPolygonSet * set, const WsiPatchGeom * g,
    guint8 * dst, gsize dst_stride)
{
  GArray *xs = g_array_new (FALSE, FALSE, sizeof (gdouble));
  const gdouble *pts = (const gdouble *) set->points->data;
  gdouble px0 = g->x, py0 = g->y;
  gdouble px1 = g->x + g->width * g->downsample;
  gdouble py1 = g->y + g->height * g->downsample;
  guint p, touched = 0;

  for (p = 0; p < set->polygons->len; p++) {
    const WsiPolygon *poly = &g_array_index (set->polygons, WsiPolygon, p);
    gint j, j0, j1;

    if (poly->x1 < px0 || poly->x0 > px1 || poly->y1 < py0 || poly->y0 > py1)
      continue;
    touched++;
    j0 = first_centre_at_or_after (poly->y0, g->y, g->downsample, g->height);
    j1 = first_centre_at_or_after (poly->y1, g->y, g->downsample, g->height);
    for (j = j0; j < j1; j++) {
      gdouble cy = g->y + (j + 0.5) * g->downsample;
      guint r, k;

      g_array_set_size (xs, 0);
      if (poly->index) {
        const WsiEdgeIndex *index = poly->index;
        guint band = edge_band (index, poly->y0, cy), e;
        for (e = index->band_start[band]; e < index->band_start[band + 1];
            e++)
          add_crossing (pts, index->edges[2 * e], index->edges[2 * e + 1],
              cy, xs);
        set->edges_visited += index->band_start[band + 1] -
            index->band_start[band];
      } else {
        for (r = 0; r < poly->n_rings; r++) {
          const WsiRing *ring = &g_array_index (set->rings, WsiRing,
              poly->first_ring + r);
          guint64 first = ring->first_point;
          guint a, b;
          for (a = 0, b = ring->n_points - 1; a < ring->n_points; b = a++)
            add_crossing (pts, first + a, first + b, cy, xs);
          set->edges_visited += ring->n_points;
        }
      }
      if (xs->len < 2)
        continue;
      g_array_sort (xs, compare_double);
      for (k = 0; k + 1 < xs->len; k += 2) {
        gint i0 = first_centre_at_or_after (g_array_index (xs, gdouble, k),
            g->x, g->downsample, g->width);
        gint i1 = first_centre_at_or_after (g_array_index (xs, gdouble,
                k + 1), g->x, g->downsample, g->width);
        if (i1 > i0)
          memset (dst + j * dst_stride + i0, poly->label, i1 - i0);
      }
    }
  }
  g_array_unref (xs);
  return touched;
}
