/* Segmentation metrics, see wsimetrics.h and docs/segeval.md. */
#include "wsimetrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NCLS WSI_METRICS_MAX_CLASSES

void
wsi_confusion_init (WsiConfusion * cm)
{
  cm->counts = g_new0 (guint64, NCLS * NCLS);
  cm->ignored = 0;
}

void
wsi_confusion_clear (WsiConfusion * cm)
{
  g_clear_pointer (&cm->counts, g_free);
  cm->ignored = 0;
}

void
wsi_confusion_reset (WsiConfusion * cm)
{
  memset (cm->counts, 0, sizeof (guint64) * NCLS * NCLS);
  cm->ignored = 0;
}

static inline guint
label_class (const WsiLabelView * v, guint raw)
{
  return v->bpp == 1 ? raw : raw > 0;
}

void
wsi_confusion_add (WsiConfusion * cm, const WsiLabelView * pred,
    const WsiLabelView * gt, gint width, gint height, gint ignore)
{
  gint x, y;

  if (pred->bpp == 1 && gt->bpp == 1) {
    for (y = 0; y < height; y++) {
      const guint8 *p = (const guint8 *) pred->data + y * pred->stride;
      const guint8 *g = (const guint8 *) gt->data + y * gt->stride;

      for (x = 0; x < width; x++) {
        if ((gint) g[x] == ignore)
          cm->ignored++;
        else
          cm->counts[g[x] * NCLS + p[x]]++;
      }
    }
    return;
  }
  for (y = 0; y < height; y++)
    for (x = 0; x < width; x++) {
      guint g = WSI_LABEL_AT (gt, x, y), p = WSI_LABEL_AT (pred, x, y);

      if ((gint) g == ignore)
        cm->ignored++;
      else
        cm->counts[label_class (gt, g) * NCLS + label_class (pred, p)]++;
    }
}

guint64
wsi_confusion_total (const WsiConfusion * cm)
{
  guint64 sum = 0;
  gint i;

  for (i = 0; i < NCLS * NCLS; i++)
    sum += cm->counts[i];
  return sum;
}

gint
wsi_confusion_n_classes (const WsiConfusion * cm, gint num_classes)
{
  gint g, p, top = 0;

  if (num_classes > 0)
    return MIN (num_classes, NCLS);
  for (g = 0; g < NCLS; g++)
    for (p = 0; p < NCLS; p++)
      if (cm->counts[g * NCLS + p])
        top = MAX (top, MAX (g, p) + 1);
  return MAX (top, 1);
}

void
wsi_confusion_class_score (const WsiConfusion * cm, gint cls,
    WsiClassScore * out)
{
  guint64 row = 0, col = 0;
  gint k;

  for (k = 0; k < NCLS; k++) {
    row += cm->counts[cls * NCLS + k];
    col += cm->counts[k * NCLS + cls];
  }
  out->tp = cm->counts[cls * NCLS + cls];
  out->gt_pixels = row;
  out->pred_pixels = col;
  out->fn = row - out->tp;
  out->fp = col - out->tp;
  if (row + col == 0) {
    out->dice = out->iou = NAN;
  } else {
    out->dice = 2.0 * out->tp / (gdouble) (row + col);
    out->iou = out->tp / (gdouble) (out->tp + out->fp + out->fn);
  }
}

void
wsi_confusion_means (const WsiConfusion * cm, gint n_classes,
    gdouble * mean_dice, gdouble * mean_iou)
{
  gdouble sd = 0, si = 0;
  gint c, n = 0;

  for (c = 0; c < n_classes; c++) {
    WsiClassScore s;

    wsi_confusion_class_score (cm, c, &s);
    if (isnan (s.dice))
      continue;
    sd += s.dice;
    si += s.iou;
    n++;
  }
  *mean_dice = n ? sd / n : NAN;
  *mean_iou = n ? si / n : NAN;
}

gdouble
wsi_confusion_accuracy (const WsiConfusion * cm)
{
  guint64 total = wsi_confusion_total (cm), right = 0;
  gint c;

  for (c = 0; c < NCLS; c++)
    right += cm->counts[c * NCLS + c];
  return total ? right / (gdouble) total : NAN;
}

void
wsi_metrics_crop_span (gint size, gint overlap, gint pad, gint valid,
    gint64 pos, gint64 extent, gboolean first, gboolean last, gint * k0,
    gint * k1)
{
  gint64 a = overlap / 2, b = size - (overlap - overlap / 2);

  if (first)
    a = 0;
  if (last)
    b = size;
  a = MAX (a, pad);
  b = MIN (b, (gint64) pad + valid);
  a = MAX (a, -pos);
  if (extent > 0)
    b = MIN (b, extent - pos);
  a = CLAMP (a, 0, size);
  b = CLAMP (b, a, size);
  *k0 = (gint) a;
  *k1 = (gint) b;
}

/* ---- connected components: two passes with union-find ---- */

static guint32
uf_find (guint32 * parent, guint32 a)
{
  guint32 r = a;

  while (parent[r] != r)
    r = parent[r];
  while (parent[a] != r) {
    guint32 next = parent[a];
    parent[a] = r;
    a = next;
  }
  return r;
}

static guint32
uf_union (guint32 * parent, guint32 a, guint32 b)
{
  a = uf_find (parent, a);
  b = uf_find (parent, b);
  if (a == b)
    return a;
  if (a < b) {
    parent[b] = a;
    return a;
  }
  parent[a] = b;
  return b;
}

guint32
wsi_label_components (const guint8 * fg, gsize stride, gint width,
    gint height, gint connectivity, guint32 * out)
{
  gsize n = (gsize) width * height;
  guint32 *parent, *final;
  guint32 next = 1, count = 0;
  gint x, y;

  if (n == 0)
    return 0;
  /* provisional labels: at most one per foreground pixel */
  parent = g_new (guint32, n + 1);
  parent[0] = 0;

  for (y = 0; y < height; y++) {
    const guint8 *row = fg + y * stride;
    guint32 *o = out + (gsize) y * width;
    guint32 *up = y > 0 ? o - width : NULL;

    for (x = 0; x < width; x++) {
      guint32 l = 0, nb[4];
      gint k, nn = 0;

      if (!row[x]) {
        o[x] = 0;
        continue;
      }
      if (x > 0 && o[x - 1])
        nb[nn++] = o[x - 1];
      if (up) {
        if (up[x])
          nb[nn++] = up[x];
        if (connectivity == 8) {
          if (x > 0 && up[x - 1])
            nb[nn++] = up[x - 1];
          if (x + 1 < width && up[x + 1])
            nb[nn++] = up[x + 1];
        }
      }
      if (nn == 0) {
        l = next++;
        parent[l] = l;
      } else {
        l = uf_find (parent, nb[0]);
        for (k = 1; k < nn; k++)
          l = uf_union (parent, l, nb[k]);
      }
      o[x] = l;
    }
  }

  /* final ids in raster order of each component's first pixel */
  final = g_new0 (guint32, next);
  for (gsize i = 0; i < n; i++) {
    guint32 r;

    if (!out[i])
      continue;
    r = uf_find (parent, out[i]);
    if (!final[r])
      final[r] = ++count;
    out[i] = final[r];
  }
  g_free (final);
  g_free (parent);
  return count;
}

guint32
wsi_instances_from_labels (const WsiLabelView * v, const guint8 * valid,
    gint width, gint height, gint instance_class, gint connectivity,
    guint32 * out)
{
  gsize n = (gsize) width * height, i;
  guint32 top = 0;
  gint x, y;

  if (v->bpp == 1) {
    guint8 *fg = g_malloc (MAX (n, 1));

    for (y = 0, i = 0; y < height; y++)
      for (x = 0; x < width; x++, i++)
        fg[i] = (!valid || valid[i]) &&
            (gint) WSI_LABEL_AT (v, x, y) == instance_class;
    top = wsi_label_components (fg, width, width, height, connectivity, out);
    g_free (fg);
    return top;
  }
  for (y = 0, i = 0; y < height; y++)
    for (x = 0; x < width; x++, i++) {
      out[i] = (!valid || valid[i]) ? WSI_LABEL_AT (v, x, y) : 0;
      top = MAX (top, out[i]);
    }
  return top;
}

/* ---- instance metrics ---- */

typedef struct
{
  guint64 key;                  /* gt id << 32 | pred id */
  guint64 count;
} PairCount;

static int
pair_cmp (const void *a, const void *b)
{
  guint64 ka = ((const PairCount *) a)->key, kb = ((const PairCount *) b)->key;

  return ka < kb ? -1 : ka > kb;
}

/* TRUE when inter_a / union_a > inter_b / union_b (exact). */
static gboolean
iou_greater (guint64 inter_a, guint64 union_a, guint64 inter_b,
    guint64 union_b)
{
  /* counts are below 2^32 (checked by the caller), products fit */
  return inter_a * union_b > inter_b * union_a;
}

gboolean
wsi_instance_count (const guint32 * gt, const guint32 * pred, gsize n,
    guint32 max_id, WsiInstanceCounts * out)
{
  guint32 max_g = 0, max_p = 0;
  guint64 *area_g, *area_p;
  GArray *runs;
  PairCount *pairs;
  gsize i, np = 0;
  gboolean *used_p;
  guint64 *best_inter_p;
  guint32 *best_g_of_p;
  guint64 sum_area_g = 0, sum_area_p = 0;
  gdouble dice_g = 0, dice_p = 0;

  memset (out, 0, sizeof (*out));
  if (n >= G_MAXUINT32)
    return FALSE;
  for (i = 0; i < n; i++) {
    max_g = MAX (max_g, gt[i]);
    max_p = MAX (max_p, pred[i]);
  }
  if (max_g > max_id || max_p > max_id)
    return FALSE;

  area_g = g_new0 (guint64, (gsize) max_g + 1);
  area_p = g_new0 (guint64, (gsize) max_p + 1);
  runs = g_array_new (FALSE, FALSE, sizeof (PairCount));
  for (i = 0; i < n; i++) {
    guint32 g = gt[i], p = pred[i];

    area_g[g]++;
    area_p[p]++;
    if (g && p) {
      guint64 key = ((guint64) g << 32) | p;

      if (runs->len && g_array_index (runs, PairCount, runs->len - 1).key
          == key) {
        g_array_index (runs, PairCount, runs->len - 1).count++;
      } else {
        PairCount pc = { key, 1 };
        g_array_append_val (runs, pc);
      }
    }
  }
  /* merge runs of the same pair */
  if (runs->len > 1)
    qsort (runs->data, runs->len, sizeof (PairCount), pair_cmp);
  pairs = (PairCount *) runs->data;
  for (i = 0; i < runs->len; i++) {
    if (np && pairs[np - 1].key == pairs[i].key)
      pairs[np - 1].count += pairs[i].count;
    else
      pairs[np++] = pairs[i];
  }

  for (guint32 g = 1; g <= max_g; g++)
    if (area_g[g]) {
      out->n_gt++;
      sum_area_g += area_g[g];
    }
  for (guint32 p = 1; p <= max_p; p++)
    if (area_p[p]) {
      out->n_pred++;
      sum_area_p += area_p[p];
    }

  /* matches at IoU > 0.5 are unique by construction */
  for (i = 0; i < np; i++) {
    guint32 g = pairs[i].key >> 32, p = pairs[i].key & 0xffffffffu;
    guint64 inter = pairs[i].count;
    guint64 uni = area_g[g] + area_p[p] - inter;

    if (2 * inter > uni) {
      out->tp++;
      out->iou_sum += inter / (gdouble) uni;
    }
  }
  out->fp = out->n_pred - out->tp;
  out->fn = out->n_gt - out->tp;

  /* AJI: each GT object with its max-IoU prediction (lowest id on ties) */
  used_p = g_new0 (gboolean, (gsize) max_p + 1);
  best_inter_p = g_new0 (guint64, (gsize) max_p + 1);
  best_g_of_p = g_new0 (guint32, (gsize) max_p + 1);
  i = 0;
  for (guint32 g = 1; g <= max_g; g++) {
    guint64 b_inter = 0, b_union = 0, m_inter = 0;
    guint32 b_p = 0, m_p = 0;

    if (!area_g[g])
      continue;
    for (; i < np && (guint32) (pairs[i].key >> 32) == g; i++) {
      guint32 p = pairs[i].key & 0xffffffffu;
      guint64 inter = pairs[i].count;
      guint64 uni = area_g[g] + area_p[p] - inter;

      if (!b_p || iou_greater (inter, uni, b_inter, b_union)) {
        b_p = p;
        b_inter = inter;
        b_union = uni;
      }
      if (inter > m_inter) {    /* object Dice: max intersection */
        m_inter = inter;
        m_p = p;
      }
      if (inter > best_inter_p[p]) {
        best_inter_p[p] = inter;
        best_g_of_p[p] = g;
      }
    }
    if (b_p) {
      out->aji_inter += b_inter;
      out->aji_union += b_union;
      used_p[b_p] = TRUE;
    } else {
      out->aji_union += area_g[g];
    }
    if (m_p)
      dice_g += area_g[g] / (gdouble) sum_area_g *
          (2.0 * m_inter / (gdouble) (area_g[g] + area_p[m_p]));
  }
  for (guint32 p = 1; p <= max_p; p++) {
    if (!area_p[p])
      continue;
    if (!used_p[p])
      out->aji_union += area_p[p];
    if (best_g_of_p[p])
      dice_p += area_p[p] / (gdouble) sum_area_p *
          (2.0 * best_inter_p[p] /
          (gdouble) (area_p[p] + area_g[best_g_of_p[p]]));
  }
  out->object_dice = (out->n_gt + out->n_pred) ? 0.5 * (dice_g + dice_p) : NAN;

  g_free (used_p);
  g_free (best_inter_p);
  g_free (best_g_of_p);
  g_array_free (runs, TRUE);
  g_free (area_g);
  g_free (area_p);
  return TRUE;
}

void
wsi_instance_counts_add (WsiInstanceCounts * a, const WsiInstanceCounts * b)
{
  a->n_gt += b->n_gt;
  a->n_pred += b->n_pred;
  a->tp += b->tp;
  a->fp += b->fp;
  a->fn += b->fn;
  a->iou_sum += b->iou_sum;
  a->aji_inter += b->aji_inter;
  a->aji_union += b->aji_union;
}

static gdouble
ratio (gdouble num, gdouble den)
{
  return den > 0 ? num / den : NAN;
}

void
wsi_instance_metrics (const WsiInstanceCounts * c, WsiInstanceMetrics * out)
{
  gdouble half = c->tp + 0.5 * c->fp + 0.5 * c->fn;

  out->precision = ratio (c->tp, c->tp + c->fp);
  out->recall = ratio (c->tp, c->tp + c->fn);
  out->f1 = ratio (2.0 * c->tp, 2.0 * c->tp + c->fp + c->fn);
  out->sq = ratio (c->iou_sum, c->tp);
  out->dq = ratio (c->tp, half);
  out->pq = ratio (c->iou_sum, half);
  out->aji = ratio (c->aji_inter, c->aji_union);
  out->object_dice = c->object_dice;
}

/* ---- JSON ---- */

static void
json_num (GString * s, gdouble v)
{
  gchar buf[G_ASCII_DTOSTR_BUF_SIZE];

  if (!isfinite (v))
    g_string_append (s, "null");
  else
    g_string_append (s, g_ascii_formatd (buf, sizeof (buf), "%.15g", v));
}

static void
json_str (GString * s, const gchar * str)
{
  const guchar *c;

  g_string_append_c (s, '"');
  for (c = (const guchar *) str; *c; c++) {
    if (*c == '"' || *c == '\\')
      g_string_append_printf (s, "\\%c", *c);
    else if (*c < 0x20)
      g_string_append_printf (s, "\\u%04x", *c);
    else
      g_string_append_c (s, *c);
  }
  g_string_append_c (s, '"');
}

static void
json_metrics (GString * s, const WsiInstanceMetrics * m, gboolean with_prf,
    gboolean with_dice)
{
  if (with_prf) {
    g_string_append (s, "\"precision\": ");
    json_num (s, m->precision);
    g_string_append (s, ", \"recall\": ");
    json_num (s, m->recall);
    g_string_append (s, ", ");
  }
  g_string_append (s, "\"f1\": ");
  json_num (s, m->f1);
  g_string_append (s, ", \"sq\": ");
  json_num (s, m->sq);
  g_string_append (s, ", \"dq\": ");
  json_num (s, m->dq);
  g_string_append (s, ", \"pq\": ");
  json_num (s, m->pq);
  g_string_append (s, ", \"aji\": ");
  json_num (s, m->aji);
  if (with_dice) {
    g_string_append (s, ", \"object_dice\": ");
    json_num (s, m->object_dice);
  }
}

static void
json_counts (GString * s, const WsiInstanceCounts * c)
{
  g_string_append_printf (s, "\"gt_objects\": %" G_GUINT64_FORMAT
      ", \"pred_objects\": %" G_GUINT64_FORMAT ", \"tp\": %" G_GUINT64_FORMAT
      ", \"fp\": %" G_GUINT64_FORMAT ", \"fn\": %" G_GUINT64_FORMAT
      ", \"iou_sum\": ", c->n_gt, c->n_pred, c->tp, c->fp, c->fn);
  json_num (s, c->iou_sum);
  g_string_append_printf (s, ", \"aji_intersection\": %" G_GUINT64_FORMAT
      ", \"aji_union\": %" G_GUINT64_FORMAT ", ", c->aji_inter, c->aji_union);
}

gchar *
wsi_metrics_report_json (const WsiReportInfo * info, const WsiConfusion * cm,
    const WsiImageResult * images, guint n_images)
{
  GString *s = g_string_new ("{\n");
  gint k = wsi_confusion_n_classes (cm, info->num_classes);
  gdouble md, mi;
  gint c, p;

  g_string_append_printf (s, "  \"patches\": %" G_GUINT64_FORMAT
      ",\n  \"unmatched_prediction\": %" G_GUINT64_FORMAT
      ",\n  \"unmatched_annotation\": %" G_GUINT64_FORMAT ",\n",
      info->patches, info->unmatched_prediction, info->unmatched_annotation);

  g_string_append_printf (s, "  \"pixel\": {\n    \"num_classes\": %d,\n"
      "    \"ignore_index\": %d,\n    \"pixels\": %" G_GUINT64_FORMAT
      ",\n    \"ignored_pixels\": %" G_GUINT64_FORMAT ",\n    \"accuracy\": ",
      k, info->ignore, wsi_confusion_total (cm), cm->ignored);
  json_num (s, wsi_confusion_accuracy (cm));
  wsi_confusion_means (cm, k, &md, &mi);
  g_string_append (s, ",\n    \"mean_dice\": ");
  json_num (s, md);
  g_string_append (s, ",\n    \"mean_iou\": ");
  json_num (s, mi);
  g_string_append (s, ",\n    \"classes\": [");
  for (c = 0; c < k; c++) {
    WsiClassScore sc;

    wsi_confusion_class_score (cm, c, &sc);
    g_string_append_printf (s, "%s\n      {\"class\": %d, \"dice\": ",
        c ? "," : "", c);
    json_num (s, sc.dice);
    g_string_append (s, ", \"iou\": ");
    json_num (s, sc.iou);
    g_string_append_printf (s, ", \"tp\": %" G_GUINT64_FORMAT ", \"fp\": %"
        G_GUINT64_FORMAT ", \"fn\": %" G_GUINT64_FORMAT ", \"gt_pixels\": %"
        G_GUINT64_FORMAT ", \"pred_pixels\": %" G_GUINT64_FORMAT "}",
        sc.tp, sc.fp, sc.fn, sc.gt_pixels, sc.pred_pixels);
  }
  g_string_append (s, "\n    ],\n    \"confusion\": [");
  for (c = 0; c < k; c++) {
    g_string_append (s, c ? ",\n      [" : "\n      [");
    for (p = 0; p < k; p++)
      g_string_append_printf (s, "%s%" G_GUINT64_FORMAT, p ? ", " : "",
          cm->counts[c * NCLS + p]);
    g_string_append_c (s, ']');
  }
  g_string_append (s, "\n    ]\n  }");

  if (info->instances) {
    WsiInstanceCounts total = { 0 };
    WsiInstanceMetrics m, mean = { 0 };
    gdouble *sums = (gdouble *) & mean;
    guint nfields = sizeof (WsiInstanceMetrics) / sizeof (gdouble), f;
    guint *defined = g_new0 (guint, nfields);
    guint i;

    g_string_append (s, ",\n  \"instance\": {\n    \"source\": ");
    json_str (s, info->instance_source ? info->instance_source : "components");
    g_string_append_printf (s, ",\n    \"class\": %d,\n    \"connectivity\": %d,"
        "\n    \"images\": [", info->instance_class, info->connectivity);
    for (i = 0; i < n_images; i++) {
      gdouble *vals = (gdouble *) & m;

      wsi_instance_metrics (&images[i].counts, &m);
      wsi_instance_counts_add (&total, &images[i].counts);
      for (f = 0; f < nfields; f++)
        if (isfinite (vals[f])) {
          sums[f] += vals[f];
          defined[f]++;
        }
      g_string_append (s, i ? ",\n      {\"image\": " : "\n      {\"image\": ");
      json_str (s, images[i].image ? images[i].image : "");
      g_string_append (s, ", ");
      json_counts (s, &images[i].counts);
      json_metrics (s, &m, TRUE, TRUE);
      g_string_append_c (s, '}');
    }
    for (f = 0; f < nfields; f++)
      sums[f] = defined[f] ? sums[f] / defined[f] : NAN;
    g_free (defined);
    wsi_instance_metrics (&total, &m);
    g_string_append_printf (s, "\n    ],\n    \"n_images\": %u,\n"
        "    \"aggregate\": {", n_images);
    json_counts (s, &total);
    json_metrics (s, &m, TRUE, FALSE);
    g_string_append (s, "},\n    \"mean_over_images\": {");
    json_metrics (s, &mean, TRUE, TRUE);
    g_string_append (s, "}\n  }");
  }
  g_string_append (s, "\n}\n");
  return g_string_free (s, FALSE);
}
