/* stitchsink instance maps (stitchinstance.h, docs/stitchsink.md).
 *
 * Held rows: the band (rows a later patch may still reach) keeps per pixel
 * the piece owning it (centre crop) and the piece of the last patch that saw
 * it; rows above the band wait in "pending" (owner layer only) until every
 * object in them is final. Pieces live in a union-find; each set keeps a
 * circular list of its pieces so a final object's pieces can be recycled
 * once its rows are written. */
#include "stitchinstance.h"

#include <string.h>

#define UNSEEN G_MAXUINT32
#define LOCAL_IDS 65536

typedef struct
{
  guint32 parent;               /* self: root; 0: free slot */
  guint32 next;                 /* circular list of the set */
  gint64 y_min, y_max;          /* rows seen, over the set at the root */
  guint64 area;                 /* this piece's pixels in its patch's view */
  gdouble wscore;               /* root: sum of area * score (score known) */
  guint64 wsum;                 /* root: sum of those areas */
  guint64 best_area;            /* root: largest piece and its class */
  gint best_class;
  guint32 n_pieces;
  guint32 gid;
  guint32 tmp;                  /* pixel counter while linking */
  gboolean final;
} Piece;

struct _StitchInstances
{
  gint64 width;
  StitchInstanceRowFunc row_func;
  gpointer data;
  /* band rows [band_top, band_top + n_band) */
  guint32 **owner, **seen;
  guint n_band, band_alloc;
  gint64 band_top;
  /* rows [emit_top, band_top) waiting */
  GPtrArray *pending;
  gint64 emit_top;
  GPtrArray *free_rows;
  guint32 *gid_row;
  GArray *pieces, *free_pieces;
  GArray *live, *finals;        /* root piece ids */
  GArray *objects;              /* StitchInstanceObject by gid */
  guint32 *local;               /* piece of local id, this patch */
  GArray *pairs, *touched;
  gint64 extent;
  guint64 peak_rows;
};

static inline Piece *
piece_at (StitchInstances * si, guint32 id)
{
  return &g_array_index (si->pieces, Piece, id);
}

static guint32
piece_find (StitchInstances * si, guint32 id)
{
  while (piece_at (si, id)->parent != id) {
    Piece *p = piece_at (si, id);
    p->parent = piece_at (si, p->parent)->parent;
    id = p->parent;
  }
  return id;
}

static guint32
piece_new (StitchInstances * si)
{
  Piece p = { 0 };
  guint32 id;

  if (si->free_pieces->len > 0) {
    id = g_array_index (si->free_pieces, guint32, si->free_pieces->len - 1);
    g_array_set_size (si->free_pieces, si->free_pieces->len - 1);
  } else {
    id = si->pieces->len;
    g_array_append_val (si->pieces, p);
  }
  p.parent = p.next = id;
  p.y_min = G_MAXINT64;
  p.y_max = G_MININT64;
  p.n_pieces = 1;
  *piece_at (si, id) = p;
  return id;
}

static void
piece_unite (StitchInstances * si, guint32 a, guint32 b)
{
  Piece *pa, *pb;
  guint32 t;

  a = piece_find (si, a);
  b = piece_find (si, b);
  if (a == b)
    return;
  if (b < a) {                  /* the older piece stays root */
    t = a;
    a = b;
    b = t;
  }
  pa = piece_at (si, a);
  pb = piece_at (si, b);
  pa->y_min = MIN (pa->y_min, pb->y_min);
  pa->y_max = MAX (pa->y_max, pb->y_max);
  pa->wscore += pb->wscore;
  pa->wsum += pb->wsum;
  if (pb->best_area > pa->best_area) {
    pa->best_area = pb->best_area;
    pa->best_class = pb->best_class;
  }
  pa->n_pieces += pb->n_pieces;
  t = pa->next;
  pa->next = pb->next;
  pb->next = t;
  pb->parent = a;
}

/* Recycles every piece of the final set @root. */
static void
set_free (StitchInstances * si, guint32 root)
{
  guint32 id = root;

  do {
    guint32 next = piece_at (si, id)->next;
    piece_at (si, id)->parent = 0;
    g_array_append_val (si->free_pieces, id);
    id = next;
  } while (id != root);
}

StitchInstances *
stitch_instances_new (gint64 width, StitchInstanceRowFunc row_func,
    gpointer data)
{
  StitchInstances *si = g_new0 (StitchInstances, 1);
  Piece none = { 0 };

  si->width = width;
  si->row_func = row_func;
  si->data = data;
  si->pending = g_ptr_array_new ();
  si->free_rows = g_ptr_array_new_with_free_func (g_free);
  si->gid_row = g_new (guint32, width);
  si->pieces = g_array_new (FALSE, FALSE, sizeof (Piece));
  g_array_append_val (si->pieces, none);        /* id 0: background */
  si->free_pieces = g_array_new (FALSE, FALSE, sizeof (guint32));
  si->live = g_array_new (FALSE, FALSE, sizeof (guint32));
  si->finals = g_array_new (FALSE, FALSE, sizeof (guint32));
  si->objects = g_array_new (FALSE, TRUE, sizeof (StitchInstanceObject));
  g_array_set_size (si->objects, 1);
  si->local = g_new0 (guint32, LOCAL_IDS);
  si->pairs = g_array_new (FALSE, FALSE, sizeof (guint64));
  si->touched = g_array_new (FALSE, FALSE, sizeof (guint32));
  return si;
}

void
stitch_instances_free (StitchInstances * si)
{
  guint i;

  if (!si)
    return;
  for (i = 0; i < si->n_band; i++) {
    g_free (si->owner[i]);
    g_free (si->seen[i]);
  }
  g_free (si->owner);
  g_free (si->seen);
  g_ptr_array_set_free_func (si->pending, g_free);
  g_ptr_array_free (si->pending, TRUE);
  g_ptr_array_free (si->free_rows, TRUE);
  g_free (si->gid_row);
  g_array_free (si->pieces, TRUE);
  g_array_free (si->free_pieces, TRUE);
  g_array_free (si->live, TRUE);
  g_array_free (si->finals, TRUE);
  g_array_free (si->objects, TRUE);
  g_free (si->local);
  g_array_free (si->pairs, TRUE);
  g_array_free (si->touched, TRUE);
  g_free (si);
}

static guint32 *
row_get (StitchInstances * si, guint32 fill)
{
  guint32 *row;
  gint64 x;

  if (si->free_rows->len > 0)
    row = g_ptr_array_steal_index_fast (si->free_rows,
        si->free_rows->len - 1);
  else if (!(row = g_try_new (guint32, si->width)))
    return NULL;
  if (fill == 0)
    memset (row, 0, (gsize) si->width * sizeof (guint32));
  else
    for (x = 0; x < si->width; x++)
      row[x] = fill;
  return row;
}

static void
note_peak (StitchInstances * si)
{
  si->peak_rows = MAX (si->peak_rows, (guint64) si->n_band +
      si->pending->len);
}

static gboolean
no_memory (GError ** error)
{
  g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_NOMEM,
      "Not enough memory for the instance rows");
  return FALSE;
}

/* Writes pending row @row (image row si->emit_top) with global ids. */
static gboolean
emit_row (StitchInstances * si, const guint32 * row, GError ** error)
{
  gint64 x;
  guint32 last = 0, last_gid = 0;

  for (x = 0; x < si->width; x++) {
    guint32 id = row[x];
    if (id == 0) {
      si->gid_row[x] = 0;
      continue;
    }
    if (id != last) {
      guint32 root = piece_find (si, id);
      Piece *p = piece_at (si, root);
      if (p->gid == 0) {
        StitchInstanceObject o = { 0 };
        if (si->objects->len > STITCH_INSTANCE_MAX_OBJECTS) {
          g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_NOSPC,
              "more than %u objects in one image (the limit of the 24-bit "
              "instance PNG)", STITCH_INSTANCE_MAX_OBJECTS);
          return FALSE;
        }
        o.class_id = p->best_class;
        o.score = p->wsum > 0 ? p->wscore / (gdouble) p->wsum : -1;
        o.pieces = p->n_pieces;
        p->gid = si->objects->len;
        g_array_append_val (si->objects, o);
      }
      last = id;
      last_gid = p->gid;
    }
    si->gid_row[x] = last_gid;
    g_array_index (si->objects, StitchInstanceObject, last_gid).area++;
  }
  return si->row_func (si->emit_top, si->gid_row, si->data, error);
}

/* Emits pending rows above @limit; recycles the pieces of final objects
 * whose rows are all written. */
static gboolean
emit_pending (StitchInstances * si, gint64 limit, GError ** error)
{
  guint done = 0, i, j;
  gboolean ok = TRUE;

  while (ok && done < si->pending->len && si->emit_top < limit) {
    guint32 *row = si->pending->pdata[done++];
    ok = emit_row (si, row, error);
    g_ptr_array_add (si->free_rows, row);
    si->emit_top++;
  }
  if (done > 0)
    g_ptr_array_remove_range (si->pending, 0, done);
  for (i = j = 0; i < si->finals->len; i++) {
    guint32 r = g_array_index (si->finals, guint32, i);
    if (piece_at (si, r)->y_max < si->emit_top)
      set_free (si, r);
    else
      g_array_index (si->finals, guint32, j++) = r;
  }
  g_array_set_size (si->finals, j);
  return ok;
}

/* Band rows above @y_top go to pending; objects ending above it become
 * final; returns the first row a live object holds (G_MAXINT64: none). */
static gint64
finalise_above (StitchInstances * si, gint64 y_top, gboolean * ok)
{
  guint i, j, moved = 0;
  gint64 hold = G_MAXINT64;

  *ok = TRUE;
  while (si->band_top < y_top) {
    guint32 *row;
    if (moved < si->n_band) {
      row = si->owner[moved];
      g_ptr_array_add (si->free_rows, si->seen[moved]);
      moved++;
    } else if (!(row = row_get (si, 0))) {
      *ok = FALSE;
      break;
    }
    g_ptr_array_add (si->pending, row);
    si->band_top++;
  }
  if (moved > 0) {
    memmove (si->owner, si->owner + moved, (si->n_band - moved) *
        sizeof (guint32 *));
    memmove (si->seen, si->seen + moved, (si->n_band - moved) *
        sizeof (guint32 *));
    si->n_band -= moved;
  }
  note_peak (si);
  for (i = j = 0; i < si->live->len; i++) {
    guint32 r = g_array_index (si->live, guint32, i);
    Piece *p = piece_at (si, r);
    if (p->parent != r)
      continue;                 /* merged into another set */
    if (p->y_max < y_top) {
      p->final = TRUE;
      g_array_append_val (si->finals, r);
    } else {
      hold = MIN (hold, p->y_min);
      g_array_index (si->live, guint32, j++) = r;
    }
  }
  g_array_set_size (si->live, j);
  return hold;
}

gboolean
stitch_instances_advance (StitchInstances * si, gint64 y_top,
    GError ** error)
{
  gint64 hold;
  gboolean ok;

  if (y_top <= si->band_top)
    return TRUE;
  hold = finalise_above (si, y_top, &ok);
  if (!ok)
    return no_memory (error);
  return emit_pending (si, MIN (hold, y_top), error);
}

gboolean
stitch_instances_finish (StitchInstances * si, gint64 height,
    GError ** error)
{
  gboolean ok;

  finalise_above (si, MAX (si->band_top + si->n_band, height), &ok);
  if (!ok)
    return no_memory (error);
  if (!emit_pending (si, height, error))
    return FALSE;
  while (si->emit_top < height) {
    guint32 *row = row_get (si, 0);
    if (!row)
      return no_memory (error);
    ok = emit_row (si, row, error);
    g_ptr_array_add (si->free_rows, row);
    si->emit_top++;
    if (!ok)
      return FALSE;
  }
  return TRUE;
}

static inline guint
local_label (const StitchInstancePatch * p, gint i, gint j)
{
  const guint8 *s = p->labels + (gsize) j * p->stride + 2 * (gsize) i;
  return s[0] | (s[1] << 8);
}

static gint
cmp_u64 (gconstpointer a, gconstpointer b)
{
  guint64 x = *(const guint64 *) a, y = *(const guint64 *) b;
  return (x > y) - (x < y);
}

static void
count_pixel (StitchInstances * si, guint32 id)
{
  Piece *p = piece_at (si, id);
  if (p->tmp++ == 0)
    g_array_append_val (si->touched, id);
}

gboolean
stitch_instances_add_patch (StitchInstances * si,
    const StitchInstancePatch * p, gint * clipped_rows, GError ** error)
{
  gint vy0 = p->vy0, cy0 = p->cy0, i, j;
  guint k, n_new = 0;
  guint32 first_new = 0;
  GArray *new_ids = g_array_new (FALSE, FALSE, sizeof (guint32));

  /* rows already written cannot change */
  if (p->py + vy0 < si->band_top)
    vy0 = (gint) MIN ((gint64) p->vy1, si->band_top - p->py);
  if (p->py + cy0 < si->band_top)
    cy0 = (gint) MIN ((gint64) p->cy1, si->band_top - p->py);
  if (clipped_rows)
    *clipped_rows = MAX (cy0 - p->cy0, 0);
  if (p->vx1 <= p->vx0 || p->vy1 <= vy0) {
    g_array_free (new_ids, TRUE);
    return TRUE;
  }

  /* band down to the last row seen */
  while (si->band_top + si->n_band < p->py + p->vy1) {
    guint32 *o, *s;
    if (si->n_band == si->band_alloc) {
      si->band_alloc = MAX (64, si->band_alloc * 2);
      si->owner = g_renew (guint32 *, si->owner, si->band_alloc);
      si->seen = g_renew (guint32 *, si->seen, si->band_alloc);
    }
    o = row_get (si, 0);
    s = o ? row_get (si, UNSEEN) : NULL;
    if (!s) {
      g_free (o);
      g_array_free (new_ids, TRUE);
      return no_memory (error);
    }
    si->owner[si->n_band] = o;
    si->seen[si->n_band++] = s;
  }
  note_peak (si);

  /* pieces of this patch */
  for (j = vy0; j < p->vy1; j++)
    for (i = p->vx0; i < p->vx1; i++) {
      guint l = local_label (p, i, j);
      Piece *pc;
      if (l == 0)
        continue;
      if (si->local[l] == 0) {
        guint32 id = piece_new (si);
        si->local[l] = id;
        g_array_append_val (new_ids, l);
        n_new++;
        if (!first_new)
          first_new = id;
      }
      pc = piece_at (si, si->local[l]);
      pc->area++;
      pc->y_min = MIN (pc->y_min, p->py + j);
      pc->y_max = MAX (pc->y_max, p->py + j);
    }
  for (k = 0; k < new_ids->len; k++) {
    guint l = g_array_index (new_ids, guint32, k);
    guint32 id = si->local[l];
    Piece *pc = piece_at (si, id);
    const StitchInstanceInfo *info = p->info && l < p->n_info ?
        &p->info[l] : NULL;
    pc->best_area = pc->area;
    pc->best_class = info ? info->class_id : -1;
    if (info && info->score >= 0) {
      pc->wscore = info->score * (gdouble) pc->area;
      pc->wsum = pc->area;
    }
    g_array_append_val (si->live, id);
  }

  /* link with the pieces earlier patches saw at the same pixels */
  g_array_set_size (si->pairs, 0);
  g_array_set_size (si->touched, 0);
  for (j = vy0; j < p->vy1; j++) {
    const guint32 *seen = si->seen[p->py + j - si->band_top] + p->px;
    for (i = p->vx0; i < p->vx1; i++) {
      guint32 prev = seen[i], cur;
      if (prev == UNSEEN)
        continue;
      cur = si->local[local_label (p, i, j)];
      if (prev)
        count_pixel (si, prev);
      if (cur)
        count_pixel (si, cur);
      if (prev && cur) {
        guint64 key = (guint64) prev << 32 | cur;
        g_array_append_val (si->pairs, key);
      }
    }
  }
  if (si->pairs->len > 0) {
    guint n = 1;
    g_array_sort (si->pairs, cmp_u64);
    for (k = 1; k <= si->pairs->len; k++) {
      guint64 key = g_array_index (si->pairs, guint64, k - 1);
      if (k < si->pairs->len && g_array_index (si->pairs, guint64, k) == key) {
        n++;
        continue;
      }
      {
        guint32 prev = key >> 32, cur = key & G_MAXUINT32;
        guint32 smaller = MIN (piece_at (si, prev)->tmp,
            piece_at (si, cur)->tmp);
        if (2 * (guint64) n > smaller)
          piece_unite (si, prev, cur);
      }
      n = 1;
    }
  }
  for (k = 0; k < si->touched->len; k++)
    piece_at (si, g_array_index (si->touched, guint32, k))->tmp = 0;

  /* this patch is now the last to have seen its view; it owns its crop */
  for (j = vy0; j < p->vy1; j++) {
    guint32 *seen = si->seen[p->py + j - si->band_top] + p->px;
    guint32 *owner = si->owner[p->py + j - si->band_top] + p->px;
    gboolean crop_row = j >= cy0 && j < p->cy1;
    for (i = p->vx0; i < p->vx1; i++) {
      guint32 id = si->local[local_label (p, i, j)];
      seen[i] = id;
      if (crop_row && i >= p->cx0 && i < p->cx1)
        owner[i] = id;
    }
  }
  si->extent = MAX (si->extent, p->py + p->vy1);
  for (k = 0; k < new_ids->len; k++)
    si->local[g_array_index (new_ids, guint32, k)] = 0;
  g_array_free (new_ids, TRUE);
  return TRUE;
}

guint32
stitch_instances_get_count (StitchInstances * si)
{
  return si->objects->len - 1;
}

const StitchInstanceObject *
stitch_instances_get_object (StitchInstances * si, guint32 gid)
{
  if (gid == 0 || gid >= si->objects->len)
    return NULL;
  return &g_array_index (si->objects, StitchInstanceObject, gid);
}

gint64
stitch_instances_get_extent (StitchInstances * si)
{
  return si->extent;
}

guint64
stitch_instances_get_peak_rows (StitchInstances * si)
{
  return si->peak_rows;
}
