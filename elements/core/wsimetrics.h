/* Segmentation metrics (no GStreamer): pixel confusion matrix with per-class
 * Dice/IoU, connected components, and instance metrics (object F1, PQ, AJI,
 * object Dice) of one image, plus their JSON report. Used by the segeval
 * element and the wsiseg-eval tool; definitions in docs/segeval.md. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define WSI_METRICS_MAX_CLASSES 256

/* Pixel counts per (annotation class, predicted class), both 0..255. */
typedef struct
{
  guint64 *counts;              /* [gt * 256 + pred] */
  guint64 ignored;              /* annotation pixels equal to the ignore value */
} WsiConfusion;

void wsi_confusion_init (WsiConfusion * cm);
void wsi_confusion_clear (WsiConfusion * cm);
void wsi_confusion_reset (WsiConfusion * cm);

/* A window of a label image: 8-bit class labels (bpp 1) or 16-bit instance
 * ids in native byte order (bpp 2, 0 background). */
typedef struct
{
  gconstpointer data;
  gsize stride;                 /* bytes */
  guint bpp;
} WsiLabelView;

/* Class of a label: an 8-bit label is its own class, an instance id is
 * foreground (1) when > 0. */
#define WSI_LABEL_AT(v, x, y) ((v)->bpp == 1 ? \
    ((const guint8 *) (v)->data)[(gsize) (y) * (v)->stride + (x)] : \
    ((const guint16 *) ((const guint8 *) (v)->data + \
        (gsize) (y) * (v)->stride))[x])

/* Adds a @width x @height window. Annotation pixels whose raw value equals
 * @ignore (-1: none) are counted as ignored only; the others add one count
 * at (class of annotation, class of prediction). */
void wsi_confusion_add (WsiConfusion * cm, const WsiLabelView * pred,
    const WsiLabelView * gt, gint width, gint height, gint ignore);

guint64 wsi_confusion_total (const WsiConfusion * cm);

/* Classes to report: @num_classes when > 0, else 1 + the largest label seen
 * in either map (at least 1). */
gint wsi_confusion_n_classes (const WsiConfusion * cm, gint num_classes);

typedef struct
{
  guint64 tp, fp, fn;
  guint64 gt_pixels, pred_pixels;
  gdouble dice, iou;            /* NaN when the class is absent from both */
} WsiClassScore;

/* Scores of @cls (0..255). Labels >= the reported number of classes still
 * count as errors of the classes they are confused with. */
void wsi_confusion_class_score (const WsiConfusion * cm, gint cls,
    WsiClassScore * out);

/* Mean of the defined (non-NaN) Dice / IoU over classes [0, n_classes);
 * NaN if none is defined. */
void wsi_confusion_means (const WsiConfusion * cm, gint n_classes,
    gdouble * mean_dice, gdouble * mean_iou);

/* Fraction of counted pixels whose prediction equals the annotation. */
gdouble wsi_confusion_accuracy (const WsiConfusion * cm);

/* Which pixels of a patch count, along one axis: columns [*k0, *k1) of a
 * @size-pixel patch with @overlap, the centre crop (overlap/2 trimmed on
 * each side; the whole outer margin kept when @first / @last: the grid's
 * first / last column or row), intersected with the valid area [@pad,
 * @pad + @valid) and with the region (@pos: the patch's offset in the
 * region in level pixels, @extent: the region's size, <= 0 unknown). With
 * patchify's grid the crops tile the region: every pixel counts once. */
void wsi_metrics_crop_span (gint size, gint overlap, gint pad, gint valid,
    gint64 pos, gint64 extent, gboolean first, gboolean last, gint * k0,
    gint * k1);

/* Labels the connected components of the non-zero pixels of @fg (@width x
 * @height, row stride @stride bytes) with 4- or 8-connectivity. @out
 * (width * height) gets 0 for background and 1..n for components numbered
 * in raster order of their first pixel. Returns n. */
guint32 wsi_label_components (const guint8 * fg, gsize stride, gint width,
    gint height, gint connectivity, guint32 * out);

/* Object ids of a whole image (@width x @height) for instance metrics.
 * 8-bit labels: connected components of the pixels equal to
 * @instance_class; 16-bit: the ids themselves. Pixels where @valid (may be
 * NULL, row stride @width) is 0 are background. @out gets width * height
 * ids; returns the largest id. */
guint32 wsi_instances_from_labels (const WsiLabelView * v,
    const guint8 * valid, gint width, gint height, gint instance_class,
    gint connectivity, guint32 * out);

/* Sums of one or more images, enough to derive every instance metric. */
typedef struct
{
  guint64 n_gt, n_pred;         /* objects */
  guint64 tp, fp, fn;           /* matches at IoU > 0.5 */
  gdouble iou_sum;              /* IoU summed over matches */
  guint64 aji_inter, aji_union; /* AJI numerator and denominator */
  gdouble object_dice;          /* GlaS object Dice (one image only) */
} WsiInstanceCounts;

typedef struct
{
  gdouble precision, recall, f1;
  gdouble sq, dq, pq;
  gdouble aji;
  gdouble object_dice;
} WsiInstanceMetrics;

/* Instance counts of one image: @gt and @pred hold @n object ids (0 is
 * background; ids need not be consecutive). Returns FALSE if an id exceeds
 * @max_id (the caller's bound on ids, used to size tables). */
gboolean wsi_instance_count (const guint32 * gt, const guint32 * pred,
    gsize n, guint32 max_id, WsiInstanceCounts * out);

/* Adds @b's sums to @a (object_dice is not summed). */
void wsi_instance_counts_add (WsiInstanceCounts * a,
    const WsiInstanceCounts * b);

/* Metrics from counts; undefined ratios (0/0) are NaN. */
void wsi_instance_metrics (const WsiInstanceCounts * c,
    WsiInstanceMetrics * out);

/* A report: the pixel part and, optionally, instance results per image. */
typedef struct
{
  gchar *image;
  WsiInstanceCounts counts;
} WsiImageResult;

typedef struct
{
  /* settings echoed in the report */
  gint num_classes;             /* as given (0 = auto) */
  gint ignore;                  /* -1 none */
  gboolean instances;
  gint instance_class;          /* class of the components */
  const gchar *instance_source; /* "components", "instance-map", "mixed" */
  gint connectivity;
  /* stream bookkeeping (the element; 0 for the tool) */
  guint64 patches, unmatched_prediction, unmatched_annotation;
} WsiReportInfo;

/* Writes the JSON report (UTF-8, ends with a newline). @images may be NULL
 * or empty. */
gchar *wsi_metrics_report_json (const WsiReportInfo * info,
    const WsiConfusion * cm, const WsiImageResult * images, guint n_images);

G_END_DECLS
