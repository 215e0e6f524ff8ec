/* stitchsink GeoJSON export (see stitchgeojson.h, docs/stitchsink.md).
 *
 * Streaming connected components: each row is cut into runs of equal
 * non-zero labels; a run joins the components of the runs of the previous
 * row it touches (8-connectivity: overlapping or diagonal) with union-find.
 * A component with no run in the newest row is complete: its runs are
 * rasterised into its bounding box, its boundary rings are traced along
 * pixel edges and it is written as one Feature. Memory: the runs of the
 * components still growing, plus one bounding-box bitmap while tracing.
 *
 * Instance boundaries (params.boundary_class, e.g. the nuclei model's ring):
 * the union-find above runs on the other labels only ("interiors"); a
 * boundary pixel never joins a component by itself. Per pixel, level 0 of a
 * small pipeline holds the component id of an interior pixel, BND for a
 * boundary pixel, NONE otherwise. Level s (1..k, k = boundary_grow) row r is
 * level s-1 row r with each BND pixel replaced by the first object id among
 * its level s-1 neighbours in the order N, W, E, S, NW, NE, SW, SE (BND if
 * none): one 1-pixel growth step with 4-neighbours ahead of diagonals, the
 * same result whatever the component ids are. Each step needs one row
 * below, so level k row r exists once row r + k has arrived; level k rows
 * are cut into runs of equal component root and added to that component.
 * Growth never unites components, so nuclei whose interiors are separated by
 * the ring stay apart. A component whose interior ended at row L can still
 * grow down to row L + k, which is final when row L + 2k arrives: it is
 * traced then. Ids of merged components stay allocated for 2k + 1 more rows
 * since level rows may still hold them. Memory: 3 (k + 1) rows of ids. */
#include "stitchgeojson.h"
#include "stitchio.h"

#include <errno.h>
#include <math.h>
#include <string.h>

/* Bounding boxes larger than this are not traced (bitmap bytes). */
#define MAX_TRACE_PIXELS (G_GUINT64_CONSTANT (1) << 32)

typedef struct
{
  gint32 y, x0, x1;             /* x1 exclusive */
} Run;

typedef struct
{
  gint32 x0, x1;
  guint32 label;
  gint32 comp;
} RowRun;

typedef struct
{
  gint32 parent;                /* self: root; -1: free slot */
  guint32 label;
  gint64 x_min, x_max, y_min, y_max;    /* inclusive */
  guint64 pixels;
  gint64 last_row, stamp;
  GArray *runs;                 /* Run */
} Comp;

typedef struct
{
  gint32 x, y;
} Vertex;

typedef struct
{
  GArray *v;                    /* Vertex, closed implicitly */
  gint64 area2;                 /* twice the shoelace area */
} Ring;

/* A component id waiting for row @row (boundary mode). */
typedef struct
{
  gint32 id;
  gint64 row;
} Delayed;

/* Level pixel values besides component ids (boundary mode). */
#define NONE -1
#define BND -2

struct _StitchGeoJson
{
  StitchAtomicFile file;
  StitchGeoJsonParams params;
  gint64 width, next_row;
  GArray *comps, *free_ids;
  GArray *prev, *cur;           /* RowRun */
  GArray *done, *merged;        /* gint32 comp ids */
  guint64 features, runs_held, peak_runs;
  gchar *json_error;
  /* boundary mode */
  gboolean grow;
  gint k;                       /* growth steps */
  gint32 *levels;               /* (k + 1) x 3 rows, row r in slot r % 3 */
  gint32 *outside;              /* NONE row: above row 0, below the end */
  gint64 end_row;               /* rows received, once committing */
  GArray *pending;              /* Delayed: complete at row (traced) */
  GArray *retired;              /* Delayed: merged ids, freed at row */
  guint64 orphans;
  guint64 skipped;              /* objects too large to trace */
  gchar *skip_message;          /* the first one */
  gboolean partial;
  gboolean ended;               /* stitch_geojson_end() done */
};

/* ---- components ---- */

static inline Comp *
comp_at (StitchGeoJson * g, gint32 id)
{
  return &g_array_index (g->comps, Comp, id);
}

static gint32
comp_find (StitchGeoJson * g, gint32 id)
{
  gint32 root = id, next;

  while (comp_at (g, root)->parent != root)
    root = comp_at (g, root)->parent;
  while (id != root) {
    next = comp_at (g, id)->parent;
    comp_at (g, id)->parent = root;
    id = next;
  }
  return root;
}

static gint32
comp_new (StitchGeoJson * g, guint32 label)
{
  Comp c = { 0 };
  gint32 id;

  c.label = label;
  c.x_min = c.y_min = G_MAXINT64;
  c.x_max = c.y_max = G_MININT64;
  c.last_row = c.stamp = -1;
  c.runs = g_array_new (FALSE, FALSE, sizeof (Run));
  if (g->free_ids->len > 0) {
    id = g_array_index (g->free_ids, gint32, g->free_ids->len - 1);
    g_array_set_size (g->free_ids, g->free_ids->len - 1);
    *comp_at (g, id) = c;
  } else {
    id = (gint32) g->comps->len;
    g_array_append_val (g->comps, c);
  }
  comp_at (g, id)->parent = id;
  return id;
}

static void
comp_free (StitchGeoJson * g, gint32 id)
{
  Comp *c = comp_at (g, id);

  if (c->runs) {
    g->runs_held -= c->runs->len;
    g_array_free (c->runs, TRUE);
  }
  c->runs = NULL;
  c->parent = -1;
  g_array_append_val (g->free_ids, id);
}

/* Merges the roots @a and @b; returns the new root (the one with more
 * runs, so appends stay cheap). */
static gint32
comp_unite (StitchGeoJson * g, gint32 a, gint32 b)
{
  Comp *ca = comp_at (g, a), *cb = comp_at (g, b);

  if (ca->runs->len < cb->runs->len) {
    Comp *t = ca;
    gint32 ti = a;
    ca = cb;
    a = b;
    cb = t;
    b = ti;
  }
  g_array_append_vals (ca->runs, cb->runs->data, cb->runs->len);
  g_array_free (cb->runs, TRUE);
  cb->runs = NULL;
  ca->x_min = MIN (ca->x_min, cb->x_min);
  ca->x_max = MAX (ca->x_max, cb->x_max);
  ca->y_min = MIN (ca->y_min, cb->y_min);
  ca->y_max = MAX (ca->y_max, cb->y_max);
  ca->pixels += cb->pixels;
  ca->last_row = MAX (ca->last_row, cb->last_row);
  cb->parent = a;
  g_array_append_val (g->merged, b);
  return a;
}

/* Adds a run of pixels; does not touch last_row (interior rows). */
static void
comp_append_run (StitchGeoJson * g, gint32 id, gint64 y, gint32 x0,
    gint32 x1)
{
  Comp *c = comp_at (g, id);
  Run r = { (gint32) y, x0, x1 };

  g_array_append_val (c->runs, r);
  c->x_min = MIN (c->x_min, x0);
  c->x_max = MAX (c->x_max, x1 - 1);
  c->y_min = MIN (c->y_min, y);
  c->y_max = MAX (c->y_max, y);
  c->pixels += (guint64) (x1 - x0);
  g->runs_held++;
  g->peak_runs = MAX (g->peak_runs, g->runs_held);
}

static void
comp_add_run (StitchGeoJson * g, gint32 id, gint64 y, gint32 x0, gint32 x1)
{
  comp_append_run (g, id, y, x0, x1);
  comp_at (g, id)->last_row = y;
}

/* ---- tracing ---- */

/* Directions E, S, W, N in image coordinates (y down); the object is on
 * the right of every boundary edge. */
static const gint DX[4] = { 1, 0, -1, 0 };
static const gint DY[4] = { 0, 1, 0, -1 };

#define OBJ 1
#define SEEN(d) (2 << (d))

/* Pixel in the quadrant (qx, qy) (each +-1) of vertex (vx, vy). */
static inline gsize
quad_index (gint64 bw, gint vx, gint vy, gint qx, gint qy)
{
  return (gsize) (vy + (qy > 0 ? 0 : -1)) * bw + (vx + (qx > 0 ? 0 : -1));
}

/* Follows one ring from the top edge of pixel (px, py). At a vertex where
 * two object pixels touch diagonally the ring turns to keep them together
 * (8-connected objects). Stores corners only. */
static void
trace_ring (guint8 * bm, gint64 bw, gint px, gint py, GArray * out)
{
  gint vx = px, vy = py, d = 0;

  g_array_set_size (out, 0);
  for (;;) {
    gint rd = (d + 1) & 3, nd;
    gboolean left, right;

    bm[quad_index (bw, vx, vy, DX[d] + DX[rd], DY[d] + DY[rd])] |= SEEN (d);
    vx += DX[d];
    vy += DY[d];
    left = bm[quad_index (bw, vx, vy, DX[d] - DX[rd], DY[d] - DY[rd])] & OBJ;
    right = bm[quad_index (bw, vx, vy, DX[d] + DX[rd], DY[d] + DY[rd])] & OBJ;
    nd = left ? (d + 3) & 3 : right ? d : rd;
    if (nd != d) {
      Vertex v = { vx, vy };
      g_array_append_val (out, v);
    }
    d = nd;
    if (vx == px && vy == py && d == 0)
      break;
  }
}

static gint64
ring_area2 (GArray * v)
{
  gint64 s = 0;
  guint i;

  for (i = 0; i < v->len; i++) {
    Vertex *a = &g_array_index (v, Vertex, i);
    Vertex *b = &g_array_index (v, Vertex, (i + 1) % v->len);
    s += (gint64) a->x * b->y - (gint64) b->x * a->y;
  }
  return s;
}

/* Drops vertices lying on a straight line between their neighbours. */
static void
ring_drop_collinear (GArray * v)
{
  gboolean changed = TRUE;

  while (changed && v->len > 4) {
    guint i;
    changed = FALSE;
    for (i = 0; i < v->len && v->len > 4; i++) {
      Vertex *a = &g_array_index (v, Vertex, (i + v->len - 1) % v->len);
      Vertex *b = &g_array_index (v, Vertex, i);
      Vertex *c = &g_array_index (v, Vertex, (i + 1) % v->len);
      if ((gint64) (b->x - a->x) * (c->y - b->y) ==
          (gint64) (b->y - a->y) * (c->x - b->x)) {
        g_array_remove_index (v, i);
        changed = TRUE;
        i--;
      }
    }
  }
}

static void
add_ring (GPtrArray * rings, const Vertex * v, guint n)
{
  Ring *r = g_new0 (Ring, 1);

  guint i, first = 0;

  r->v = g_array_sized_new (FALSE, FALSE, sizeof (Vertex), n);
  g_array_append_vals (r->v, v, n);
  ring_drop_collinear (r->v);
  r->area2 = ring_area2 (r->v);
  /* start at the top-left corner: stable, readable output */
  for (i = 1; i < r->v->len; i++) {
    Vertex *a = &g_array_index (r->v, Vertex, i);
    Vertex *b = &g_array_index (r->v, Vertex, first);
    if (a->y < b->y || (a->y == b->y && a->x < b->x))
      first = i;
  }
  if (first > 0) {
    GArray *rot = g_array_sized_new (FALSE, FALSE, sizeof (Vertex),
        r->v->len);
    g_array_append_vals (rot, &g_array_index (r->v, Vertex, first),
        r->v->len - first);
    g_array_append_vals (rot, r->v->data, first);
    g_array_free (r->v, TRUE);
    r->v = rot;
  }
  g_ptr_array_add (rings, r);
}

static void
ring_free (gpointer p)
{
  Ring *r = p;
  g_array_free (r->v, TRUE);
  g_free (r);
}

static inline guint64
vertex_key (const Vertex * v)
{
  return ((guint64) (guint32) v->x << 32) | (guint32) v->y;
}

static gint
cmp_u64 (gconstpointer a, gconstpointer b)
{
  guint64 x = *(const guint64 *) a, y = *(const guint64 *) b;
  return x < y ? -1 : x > y;
}

/* Adds the ring @v to @rings, split into simple rings where it passes a
 * vertex twice (objects or holes touching at a corner). */
static void
add_split_rings (GPtrArray * rings, GArray * v)
{
  guint64 *keys = g_new (guint64, v->len);
  gboolean dup = FALSE;
  GHashTable *pos;
  GArray *stack;
  guint i;

  for (i = 0; i < v->len; i++)
    keys[i] = vertex_key (&g_array_index (v, Vertex, i));
  qsort (keys, v->len, sizeof (guint64), cmp_u64);
  for (i = 1; i < v->len && !dup; i++)
    dup = keys[i] == keys[i - 1];
  if (!dup) {
    g_free (keys);
    add_ring (rings, (Vertex *) v->data, v->len);
    return;
  }

  /* Stack walk: a vertex seen again closes the loop since its first visit. */
  pos = g_hash_table_new (g_int64_hash, g_int64_equal);
  stack = g_array_sized_new (FALSE, FALSE, sizeof (Vertex), v->len);
  for (i = 0; i < v->len; i++) {
    Vertex *x = &g_array_index (v, Vertex, i);
    gpointer found;

    keys[i] = vertex_key (x);
    found = g_hash_table_lookup (pos, &keys[i]);
    if (found) {
      guint k = GPOINTER_TO_UINT (found) - 1, j;
      add_ring (rings, &g_array_index (stack, Vertex, k), stack->len - k);
      for (j = k + 1; j < stack->len; j++) {
        guint64 key = vertex_key (&g_array_index (stack, Vertex, j));
        g_hash_table_remove (pos, &key);
      }
      g_array_set_size (stack, k + 1);
    } else {
      g_array_append_val (stack, *x);
      g_hash_table_insert (pos, &keys[i], GUINT_TO_POINTER (stack->len));
    }
  }
  if (stack->len > 0)
    add_ring (rings, (Vertex *) stack->data, stack->len);
  g_array_free (stack, TRUE);
  g_hash_table_destroy (pos);
  g_free (keys);
}

/* Even-odd test of the point (px2/2, py2/2) against ring @r (doubled
 * coordinates; the point never lies on a ring line). */
static gboolean
ring_contains2 (const Ring * r, gint64 px2, gint64 py2)
{
  gboolean inside = FALSE;
  guint i, n = r->v->len;

  for (i = 0; i < n; i++) {
    const Vertex *a = &g_array_index (r->v, Vertex, i);
    const Vertex *b = &g_array_index (r->v, Vertex, (i + 1) % n);
    gint64 ay = 2 * (gint64) a->y, by = 2 * (gint64) b->y;
    if ((ay > py2) != (by > py2)) {
      /* x of the crossing, compared exactly: (px2 - ax) * (by - ay) vs
       * (bx - ax) * (py2 - ay) */
      gint64 ax = 2 * (gint64) a->x, bx = 2 * (gint64) b->x;
      gdouble xc = ax + (gdouble) (bx - ax) * (py2 - ay) / (gdouble) (by - ay);
      if (px2 < xc)
        inside = !inside;
    }
  }
  return inside;
}

/* ---- JSON ---- */

static void
append_number (GString * s, gdouble v)
{
  gchar buf[G_ASCII_DTOSTR_BUF_SIZE];

  if (v == floor (v) && fabs (v) < 1e15)
    g_string_append_printf (s, "%" G_GINT64_FORMAT, (gint64) v);
  else
    g_string_append (s, g_ascii_formatd (buf, sizeof buf, "%.15g", v));
}

static void
append_json_string (GString * s, const gchar * str)
{
  const guchar *p;

  g_string_append_c (s, '"');
  for (p = (const guchar *) str; *p; p++) {
    if (*p == '"' || *p == '\\')
      g_string_append_printf (s, "\\%c", *p);
    else if (*p < 0x20)
      g_string_append_printf (s, "\\u%04x", *p);
    else
      g_string_append_c (s, *p);
  }
  g_string_append_c (s, '"');
}

static void
append_ring (StitchGeoJson * g, GString * s, const Ring * r, gint64 ox,
    gint64 oy)
{
  const gdouble ds = g->params.downsample;
  guint i;

  g_string_append_c (s, '[');
  for (i = 0; i <= r->v->len; i++) {
    const Vertex *v = &g_array_index (r->v, Vertex, i % r->v->len);
    g_string_append (s, i ? ",[" : "[");
    append_number (s, g->params.region_x + (gdouble) (ox + v->x) * ds);
    g_string_append_c (s, ',');
    append_number (s, g->params.region_y + (gdouble) (oy + v->y) * ds);
    g_string_append_c (s, ']');
  }
  g_string_append_c (s, ']');
}

static gboolean
write_feature (StitchGeoJson * g, const Comp * c, GPtrArray * rings,
    gint64 ox, gint64 oy, GError ** error)
{
  const StitchOverlayStyle *style = g->params.style;
  const gdouble ds = g->params.downsample;
  GPtrArray *shells = g_ptr_array_new ();
  GPtrArray **holes;
  GString *s = g_string_sized_new (256);
  guint i, j;
  guint klass = c->label;
  guint32 color;
  gchar name_buf[32];
  const gchar *name;
  gboolean ok;
  StitchGeoJsonInstance inst = { 0 };
  gboolean instance = g->params.describe != NULL;

  if (instance) {
    inst.class_id = -1;
    inst.score = -1;
    g->params.describe (c->label, &inst, g->params.describe_data);
    klass = inst.class_id >= 0 ? (guint) inst.class_id : 0;
  }
  color = stitch_overlay_class_color (style, klass);

  for (i = 0; i < rings->len; i++)
    if (((Ring *) rings->pdata[i])->area2 > 0)
      g_ptr_array_add (shells, rings->pdata[i]);
  if (shells->len == 0) {       /* not reached for traced rings */
    g_ptr_array_free (shells, TRUE);
    g_string_free (s, TRUE);
    return TRUE;
  }
  holes = g_new0 (GPtrArray *, MAX (1, shells->len));
  for (i = 0; i < shells->len; i++)
    holes[i] = g_ptr_array_new ();
  /* Each hole goes to the smallest shell around its first pixel. */
  for (i = 0; i < rings->len; i++) {
    Ring *h = rings->pdata[i];
    Vertex *a, *b;
    gint fx, fy, best = -1;
    gint64 px2, py2;

    if (h->area2 >= 0 || shells->len == 0)
      continue;
    a = &g_array_index (h->v, Vertex, 0);
    b = &g_array_index (h->v, Vertex, 1);
    fx = (b->x > a->x) - (b->x < a->x);
    fy = (b->y > a->y) - (b->y < a->y);
    /* centre of the hole pixel left of the first edge */
    px2 = 2 * (gint64) a->x + fx + fy;
    py2 = 2 * (gint64) a->y + fy - fx;
    for (j = 0; j < shells->len; j++) {
      Ring *sh = shells->pdata[j];
      if (ring_contains2 (sh, px2, py2) && (best < 0
              || sh->area2 < ((Ring *) shells->pdata[best])->area2))
        best = j;
    }
    if (best < 0)
      best = 0;                 /* not reached for traced rings */
    g_ptr_array_add (holes[best], h);
  }

  if (instance && inst.class_id < 0)
    name = "object";
  else if (style && klass < style->n_names && style->names[klass]
      && *style->names[klass])
    name = style->names[klass];
  else {
    g_snprintf (name_buf, sizeof name_buf, "class %u", klass);
    name = name_buf;
  }

  g_string_append (s, g->features ? ",\n" : "\n");
  g_string_append (s, "{\"type\":\"Feature\",\"geometry\":{\"type\":");
  g_string_append (s, shells->len == 1 ? "\"Polygon\"" : "\"MultiPolygon\"");
  g_string_append (s, ",\"coordinates\":");
  if (shells->len != 1)
    g_string_append_c (s, '[');
  for (i = 0; i < shells->len; i++) {
    g_string_append (s, i ? ",[" : "[");
    append_ring (g, s, shells->pdata[i], ox, oy);
    for (j = 0; j < holes[i]->len; j++) {
      g_string_append_c (s, ',');
      append_ring (g, s, holes[i]->pdata[j], ox, oy);
    }
    g_string_append_c (s, ']');
  }
  if (shells->len != 1)
    g_string_append_c (s, ']');
  g_string_append (s, "},\"properties\":{\"objectType\":");
  g_string_append (s, g->params.detection ? "\"detection\"" :
      "\"annotation\"");
  g_string_append (s, ",\"classification\":{\"name\":");
  append_json_string (s, name);
  g_string_append_printf (s, ",\"color\":[%u,%u,%u]},\"measurements\":{"
      "\"Area px^2\":", (color >> 16) & 0xff, (color >> 8) & 0xff,
      color & 0xff);
  append_number (s, (gdouble) c->pixels * ds * ds);
  if (g->params.mpp_x > 0 && g->params.mpp_y > 0) {
    g_string_append (s, ",\"Area \\u00b5m^2\":");
    append_number (s, (gdouble) c->pixels * ds * ds * g->params.mpp_x *
        g->params.mpp_y);
  }
  if (instance) {
    g_string_append_printf (s, ",\"Instance id\":%u", c->label);
    if (inst.score >= 0) {
      g_string_append (s, ",\"score\":");
      append_number (s, inst.score);
    }
  }
  g_string_append (s, "}}}");

  ok = fwrite (s->str, 1, s->len, g->file.fp) == s->len;
  if (!ok)
    g_set_error (error, G_FILE_ERROR, g_file_error_from_errno (errno),
        "Could not write '%s': %s", g->file.final_path, g_strerror (errno));
  else
    g->features++;

  for (i = 0; i < shells->len; i++)
    g_ptr_array_free (holes[i], TRUE);
  g_free (holes);
  g_ptr_array_free (shells, TRUE);
  g_string_free (s, TRUE);
  return ok;
}

/* Traces and writes the finished component @id (not freed here). */
static gboolean
emit_component (StitchGeoJson * g, gint32 id, GError ** error)
{
  const Comp *c = comp_at (g, id);
  gint64 bw, bh, ox, oy;
  guint8 *bm;
  GPtrArray *rings;
  GArray *corners;
  guint i;
  gboolean ok;

  if (c->pixels < g->params.min_area || c->pixels == 0)
    return TRUE;
  /* bitmap with a one-pixel empty border; origin (ox, oy) in level pixels */
  bw = c->x_max - c->x_min + 3;
  bh = c->y_max - c->y_min + 3;
  ox = c->x_min - 1;
  oy = c->y_min - 1;
  if ((guint64) bw * (guint64) bh > (g->params.max_trace_pixels ?
          g->params.max_trace_pixels : MAX_TRACE_PIXELS)
      || !(bm = g_try_malloc0 ((gsize) bw * bh))) {
    /* an optional output: skip this object, keep the others */
    if (!g->skip_message)
      g->skip_message = g_strdup_printf ("region of class %u is too large "
          "to trace (bounding box %" G_GINT64_FORMAT " x %" G_GINT64_FORMAT
          " level pixels at (%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT "), "
          "limit %" G_GUINT64_FORMAT " pixels)", c->label, bw - 2, bh - 2,
          c->x_min, c->y_min, g->params.max_trace_pixels ?
          g->params.max_trace_pixels : MAX_TRACE_PIXELS);
    g->skipped++;
    return TRUE;
  }
  for (i = 0; i < c->runs->len; i++) {
    const Run *r = &g_array_index (c->runs, Run, i);
    memset (bm + (gsize) (r->y - oy) * bw + (r->x0 - ox), OBJ, r->x1 - r->x0);
  }

  rings = g_ptr_array_new_with_free_func (ring_free);
  corners = g_array_new (FALSE, FALSE, sizeof (Vertex));
  for (i = 0; i < c->runs->len; i++) {
    const Run *r = &g_array_index (c->runs, Run, i);
    gint py = (gint) (r->y - oy), px;
    for (px = (gint) (r->x0 - ox); px < r->x1 - ox; px++) {
      gsize k = (gsize) py * bw + px;
      if (!(bm[k - bw] & OBJ) && !(bm[k] & SEEN (0))) {
        trace_ring (bm, bw, px, py, corners);
        add_split_rings (rings, corners);
      }
    }
  }
  g_array_free (corners, TRUE);
  g_free (bm);

  ok = write_feature (g, c, rings, ox, oy, error);
  g_ptr_array_free (rings, TRUE);
  return ok;
}

/* ---- rows ---- */

StitchGeoJson *
stitch_geojson_new (const gchar * location, gint64 width,
    const StitchGeoJsonParams * params, GError ** error)
{
  StitchGeoJson *g = g_new0 (StitchGeoJson, 1);
  static const gchar header[] = "{\"type\":\"FeatureCollection\","
      "\"features\":[";

  if (!stitch_atomic_open (&g->file, location, error)) {
    g_free (g);
    return NULL;
  }
  g->params = *params;
  g->width = width;
  g->comps = g_array_new (FALSE, FALSE, sizeof (Comp));
  g->free_ids = g_array_new (FALSE, FALSE, sizeof (gint32));
  g->prev = g_array_new (FALSE, FALSE, sizeof (RowRun));
  g->cur = g_array_new (FALSE, FALSE, sizeof (RowRun));
  g->done = g_array_new (FALSE, FALSE, sizeof (gint32));
  g->merged = g_array_new (FALSE, FALSE, sizeof (gint32));
  g->end_row = G_MAXINT64;
  if (params->boundary_class >= 1) {
    gsize i, n = (gsize) width;

    g->grow = TRUE;
    g->k = (gint) MIN (params->boundary_grow,
        STITCH_GEOJSON_MAX_BOUNDARY_GROW);
    g->pending = g_array_new (FALSE, FALSE, sizeof (Delayed));
    g->retired = g_array_new (FALSE, FALSE, sizeof (Delayed));
    g->levels = g_try_new (gint32, (gsize) (g->k + 1) * 3 * n);
    g->outside = g_try_new (gint32, n);
    if (!g->levels || !g->outside) {
      g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_NOMEM,
          "Out of memory for %d rows of %" G_GINT64_FORMAT " boundary-growth "
          "ids for '%s'", 3 * (g->k + 1), width, location);
      stitch_geojson_abort (g);
      return NULL;
    }
    for (i = 0; i < n; i++)
      g->outside[i] = NONE;
  }
  if (fwrite (header, 1, sizeof header - 1, g->file.fp) != sizeof header - 1) {
    g_set_error (error, G_FILE_ERROR, g_file_error_from_errno (errno),
        "Could not write '%s': %s", location, g_strerror (errno));
    stitch_geojson_abort (g);
    return NULL;
  }
  return g;
}

/* Writes and frees the components in done, frees merged ones. */
static gboolean
finish_components (StitchGeoJson * g, GError ** error)
{
  gboolean ok = TRUE;
  guint i;

  for (i = 0; i < g->done->len; i++) {
    gint32 id = g_array_index (g->done, gint32, i);
    if (ok)
      ok = emit_component (g, id, error);
    comp_free (g, id);
  }
  for (i = 0; i < g->merged->len; i++)
    comp_free (g, g_array_index (g->merged, gint32, i));
  g_array_set_size (g->merged, 0);
  return ok;
}

/* ---- boundary growth ---- */

/* Row @r of level @s; NONE rows above the image and below its end. */
static inline gint32 *
level_row (StitchGeoJson * g, gint s, gint64 r)
{
  if (r < 0 || r >= g->end_row)
    return g->outside;
  return g->levels + ((gsize) s * 3 + (gsize) (r % 3)) * (gsize) g->width;
}

/* One growth step: @out is row @b with each BND pixel given the first
 * object id among its neighbours N, W, E, S, NW, NE, SW, SE (@a above, @c
 * below), BND if none. */
static void
grow_row (const gint32 * a, const gint32 * b, const gint32 * c, gint32 * out,
    gint32 w)
{
  gint32 x;

  for (x = 0; x < w; x++) {
    gint32 v = b[x];
    if (v == BND) {
      gboolean l = x > 0, r = x + 1 < w;
      if (a[x] >= 0)
        v = a[x];
      else if (l && b[x - 1] >= 0)
        v = b[x - 1];
      else if (r && b[x + 1] >= 0)
        v = b[x + 1];
      else if (c[x] >= 0)
        v = c[x];
      else if (l && a[x - 1] >= 0)
        v = a[x - 1];
      else if (r && a[x + 1] >= 0)
        v = a[x + 1];
      else if (l && c[x - 1] >= 0)
        v = c[x - 1];
      else if (r && c[x + 1] >= 0)
        v = c[x + 1];
    }
    out[x] = v;
  }
}

/* Adds the final row @y (level k) to its components as runs of equal root;
 * counts the boundary pixels no object reached. */
static void
emit_level_row (StitchGeoJson * g, const gint32 * row, gint64 y)
{
  gint32 x = 0, w = (gint32) g->width;

  while (x < w) {
    gint32 id = row[x], root, x0 = x;
    if (id < 0) {
      if (id == BND)
        g->orphans++;
      x++;
      continue;
    }
    root = comp_find (g, id);
    for (x++; x < w && row[x] >= 0 && (row[x] == id
            || comp_find (g, row[x]) == root); x++);
    comp_append_run (g, root, y, x0, x);
  }
}

/* Level 0 of input row @y: interior runs (g->prev, roots), BND, NONE. */
static void
fill_level0 (StitchGeoJson * g, const guint32 * labels, gint64 y)
{
  gint32 *row = level_row (g, 0, y);
  gint64 x;
  guint i;

  for (x = 0; x < g->width; x++)
    row[x] = (gint64) labels[x] == g->params.boundary_class ? BND : NONE;
  for (i = 0; i < g->prev->len; i++) {
    const RowRun *r = &g_array_index (g->prev, RowRun, i);
    gint32 j;
    for (j = r->x0; j < r->x1; j++)
      row[j] = r->comp;
  }
}

/* For input row @y (possibly past the end): level s row y - s for each
 * step, then the final row y - k goes to the components. */
static void
advance_levels (StitchGeoJson * g, gint64 y)
{
  gint s;

  for (s = 1; s <= g->k; s++) {
    gint64 r = y - s;
    if (r < 0 || r >= g->end_row)
      continue;
    grow_row (level_row (g, s - 1, r - 1), level_row (g, s - 1, r),
        level_row (g, s - 1, r + 1), level_row (g, s, r), (gint32) g->width);
  }
  if (y - g->k >= 0 && y - g->k < g->end_row)
    emit_level_row (g, level_row (g, g->k, y - g->k), y - g->k);
}

/* Traces and frees the pending components due by row @y, frees the
 * retired ids due by then (everything if @all). */
static gboolean
flush_delayed (StitchGeoJson * g, gint64 y, gboolean all, GError ** error)
{
  gboolean ok = TRUE;
  guint n;

  for (n = 0; n < g->pending->len; n++) {
    const Delayed *d = &g_array_index (g->pending, Delayed, n);
    if (!all && d->row > y)
      break;
    if (ok)
      ok = emit_component (g, d->id, error);
    comp_free (g, d->id);
  }
  if (n > 0)
    g_array_remove_range (g->pending, 0, n);
  for (n = 0; n < g->retired->len; n++) {
    const Delayed *d = &g_array_index (g->retired, Delayed, n);
    if (!all && d->row > y)
      break;
    comp_free (g, d->id);
  }
  if (n > 0)
    g_array_remove_range (g->retired, 0, n);
  return ok;
}

/* ---- row input ---- */

gboolean
stitch_geojson_push_row (StitchGeoJson * g, const guint32 * labels,
    GError ** error)
{
  gint64 y = g->next_row++;
  gint32 x, w = (gint32) g->width;
  guint i, j = 0, k;
  GArray *t;

  g_array_set_size (g->cur, 0);
  for (x = 0; x < w;) {
    RowRun r = { x, x, labels[x], -1 };
    while (r.x1 < w && labels[r.x1] == r.label)
      r.x1++;
    x = r.x1;
    if (r.label != 0 && (!g->grow
            || (gint64) r.label != g->params.boundary_class))
      g_array_append_val (g->cur, r);
  }

  for (i = 0; i < g->cur->len; i++) {
    RowRun *r = &g_array_index (g->cur, RowRun, i);
    gint32 id = -1;

    /* previous runs ending left of x0 - 1 touch no later run either */
    while (j < g->prev->len && g_array_index (g->prev, RowRun, j).x1 < r->x0)
      j++;
    for (k = j; k < g->prev->len; k++) {
      RowRun *p = &g_array_index (g->prev, RowRun, k);
      gint32 root;
      if (p->x0 > r->x1)
        break;
      if (p->label != r->label)
        continue;
      root = comp_find (g, p->comp);
      if (id < 0)
        id = root;
      else if (root != id)
        id = comp_unite (g, id, root);
    }
    if (id < 0)
      id = comp_new (g, r->label);
    if (g->grow)
      comp_at (g, id)->last_row = y;    /* pixels come from level k */
    else
      comp_add_run (g, id, y, r->x0, r->x1);
    r->comp = id;
  }

  for (i = 0; i < g->cur->len; i++) {
    RowRun *r = &g_array_index (g->cur, RowRun, i);
    r->comp = comp_find (g, r->comp);
  }
  /* roots of the previous row that got no run in this one are complete */
  g_array_set_size (g->done, 0);
  for (i = 0; i < g->prev->len; i++) {
    gint32 id = g_array_index (g->prev, RowRun, i).comp;
    Comp *c = comp_at (g, id);
    if (c->parent == id && c->last_row < y && c->stamp != y) {
      c->stamp = y;             /* queued once */
      if (g->grow) {
        Delayed d = { id, c->last_row + 2 * g->k };
        g_array_append_val (g->pending, d);
      } else {
        g_array_append_val (g->done, id);
      }
    }
  }
  t = g->prev;
  g->prev = g->cur;
  g->cur = t;
  if (g->grow) {
    /* level rows may hold merged ids until row y + 2k is final */
    for (i = 0; i < g->merged->len; i++) {
      Delayed d = { g_array_index (g->merged, gint32, i), y + 2 * g->k + 1 };
      g_array_append_val (g->retired, d);
    }
    g_array_set_size (g->merged, 0);
    fill_level0 (g, labels, y);
    advance_levels (g, y);
    return flush_delayed (g, y, FALSE, error);
  }
  return finish_components (g, error);
}

static void
geojson_free (StitchGeoJson * g)
{
  guint i;

  for (i = 0; i < g->comps->len; i++)
    if (g_array_index (g->comps, Comp, i).runs)
      g_array_free (g_array_index (g->comps, Comp, i).runs, TRUE);
  g_array_free (g->comps, TRUE);
  g_array_free (g->free_ids, TRUE);
  g_array_free (g->prev, TRUE);
  g_array_free (g->cur, TRUE);
  g_array_free (g->done, TRUE);
  g_array_free (g->merged, TRUE);
  if (g->pending)
    g_array_free (g->pending, TRUE);
  if (g->retired)
    g_array_free (g->retired, TRUE);
  g_free (g->levels);
  g_free (g->outside);
  g_free (g->skip_message);
  g_free (g);
}

gboolean
stitch_geojson_end (StitchGeoJson * g, GError ** error)
{
  gboolean ok;
  guint i;

  if (g->ended)
    return TRUE;
  g->ended = TRUE;
  /* an empty row ends every component still growing */
  g_array_set_size (g->done, 0);
  for (i = 0; i < g->prev->len; i++) {
    gint32 id = g_array_index (g->prev, RowRun, i).comp;
    Comp *c = comp_at (g, id);
    if (c->parent == id && c->stamp != G_MAXINT64) {
      c->stamp = G_MAXINT64;
      if (g->grow) {
        Delayed d = { id, G_MAXINT64 };
        g_array_append_val (g->pending, d);
      } else {
        g_array_append_val (g->done, id);
      }
    }
  }
  g_array_set_size (g->prev, 0);
  if (g->grow) {
    /* the last k level rows: everything below the image is NONE */
    gint64 y;
    g->end_row = g->next_row;
    for (y = g->next_row; y < g->next_row + g->k; y++)
      advance_levels (g, y);
    ok = flush_delayed (g, 0, TRUE, error);
  } else {
    ok = finish_components (g, error);
  }
  return ok;
}

gboolean
stitch_geojson_commit (StitchGeoJson * g, GError ** error)
{
  const gchar *trailer = g->partial ? "\n],\"partial\":true}\n" : "\n]}\n";
  gsize n = strlen (trailer);
  gboolean ok = stitch_geojson_end (g, error);

  if (ok && fwrite (trailer, 1, n, g->file.fp) != n) {
    g_set_error (error, G_FILE_ERROR, g_file_error_from_errno (errno),
        "Could not write '%s': %s", g->file.final_path, g_strerror (errno));
    ok = FALSE;
  }
  if (ok)
    ok = stitch_atomic_commit (&g->file, error);
  else
    stitch_atomic_abort (&g->file);
  geojson_free (g);
  return ok;
}

void
stitch_geojson_abort (StitchGeoJson * g)
{
  if (!g)
    return;
  stitch_atomic_abort (&g->file);
  geojson_free (g);
}

guint64
stitch_geojson_get_features (StitchGeoJson * g)
{
  return g->features;
}

guint64
stitch_geojson_get_peak_runs (StitchGeoJson * g)
{
  return g->peak_runs;
}

void
stitch_geojson_set_partial (StitchGeoJson * g, gboolean partial)
{
  g->partial = partial;
}

guint64
stitch_geojson_get_skipped (StitchGeoJson * g, const gchar ** first_reason)
{
  if (first_reason)
    *first_reason = g->skip_message;
  return g->skipped;
}

guint64
stitch_geojson_get_orphan_pixels (StitchGeoJson * g)
{
  return g->orphans;
}
