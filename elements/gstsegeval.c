/* segeval: compares predicted label patches with annotation label patches.
 *
 * A GstAggregator with two sink pads, "prediction" and "annotation" (GRAY8
 * class labels or GRAY16_LE instance ids). Patches are paired by their tile
 * meta (slide, level, level-0 x/y), not by arrival order. Pixel metrics
 * (confusion matrix, Dice/IoU per class) accumulate over the centre crops of
 * the valid areas; with instances=true every image is reassembled in memory
 * for object F1, PQ, AJI and object Dice. Results are posted as "segeval"
 * element messages and written as JSON at EOS. The prediction stream is
 * passed through unchanged on the src pad. See docs/segeval.md. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <gst/gst.h>
#include <gst/base/gstaggregator.h>
#include <gst/video/video.h>
#include <math.h>
#include <string.h>

#include "gstwsiseg.h"
#include "gstwsiaggregator.h"
#include "gstwsipair.h"
#include "gstwsiprops.h"
#include "gstwsitilemeta.h"
#include "wsimetrics.h"

GST_DEBUG_CATEGORY_STATIC (gst_seg_eval_debug);
#define GST_CAT_DEFAULT gst_seg_eval_debug

/* slide-match: the slide part of the pairing rule (gst/gstwsipair.h) */
typedef GstWsiSlideMatch GstSegEvalSlideMatch;
#define SEG_EVAL_MATCH_PATH GST_WSI_SLIDE_MATCH_PATH
#define SEG_EVAL_MATCH_NAME GST_WSI_SLIDE_MATCH_NAME
#define SEG_EVAL_MATCH_NONE GST_WSI_SLIDE_MATCH_NONE

#define GST_TYPE_SEG_EVAL_SLIDE_MATCH (gst_seg_eval_slide_match_get_type ())
static GType
gst_seg_eval_slide_match_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {SEG_EVAL_MATCH_PATH, "Same slide path", "path"},
    {SEG_EVAL_MATCH_NAME, "Same file name without its last extension",
        "name"},
    {SEG_EVAL_MATCH_NONE, "Slide ignored, position only", "none"},
    {0, NULL, NULL},
  };

  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstSegEvalSlideMatch", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

typedef enum
{
  SEG_EVAL_CONNECTIVITY_4 = 4,
  SEG_EVAL_CONNECTIVITY_8 = 8,
} GstSegEvalConnectivity;

#define GST_TYPE_SEG_EVAL_CONNECTIVITY (gst_seg_eval_connectivity_get_type ())
static GType
gst_seg_eval_connectivity_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {SEG_EVAL_CONNECTIVITY_4, "4-neighbours (left, right, up, down)", "4"},
    {SEG_EVAL_CONNECTIVITY_8, "8-neighbours (diagonals too)", "8"},
    {0, NULL, NULL},
  };

  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstSegEvalConnectivity", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

#define DEFAULT_IGNORE_INDEX -1
#define DEFAULT_NUM_CLASSES 0
#define DEFAULT_INTERVAL 100
#define DEFAULT_INSTANCE_CLASS 1
#define DEFAULT_CONNECTIVITY 8
#define DEFAULT_SLIDE_MATCH SEG_EVAL_MATCH_PATH
#define DEFAULT_MAX_PENDING 64
#define DEFAULT_MAX_IMAGE_PIXELS (G_GUINT64_CONSTANT (1) << 24)
#define MAX_IMAGE_PIXELS_LIMIT (G_GUINT64_CONSTANT (1) << 31)

enum
{
  PROP_0,
  PROP_LOCATION,
  PROP_IGNORE_INDEX,
  PROP_NUM_CLASSES,
  PROP_INTERVAL,
  PROP_INSTANCES,
  PROP_INSTANCE_CLASS,
  PROP_CONNECTIVITY,
  PROP_SLIDE_MATCH,
  PROP_MAX_PENDING,
  PROP_MAX_IMAGE_PIXELS,
  PROP_POST_MESSAGES,
};

enum
{
  SIDE_PRED = 0,
  SIDE_ANN = 1,
};

typedef struct
{
  gchar *location;
  gint ignore_index;
  gint num_classes;
  guint interval;
  gboolean instances;
  gint instance_class;
  gint connectivity;
  GstSegEvalSlideMatch slide_match;
  guint max_pending;
  guint64 max_image_pixels;
  gboolean post_messages;
} Settings;

/* The image being reassembled for instance metrics. */
typedef struct
{
  gchar *key, *name;
  gint width, height;
  guint pred_bpp, gt_bpp;
  guint8 *pred, *gt, *valid;
} Canvas;

#define GST_TYPE_SEG_EVAL (gst_seg_eval_get_type ())
G_DECLARE_FINAL_TYPE (GstSegEval, gst_seg_eval, GST, SEG_EVAL, GstAggregator);

struct _GstSegEval
{
  GstAggregator parent;

  GstAggregatorPad *pads[2];

  Settings props;               /* as set, under the object lock */
  Settings cfg;                 /* copy taken at start; interval and
                                 * post-messages are read from props */
  gint running;
  gint flushed;                 /* bit per pad: FLUSH_STOP seen (atomic) */

  GstVideoInfo info[2];
  gboolean have_info[2];
  GstCaps *pred_caps;

  GstWsiPairQueue *pairs;       /* patches waiting for their partner */
  guint64 unmatched[2];
  gboolean warned_unmatched;

  WsiConfusion cm;
  guint64 patches;
  Canvas canvas;
  GArray *images;               /* WsiImageResult */
  gboolean finished;
};

static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC, GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE ("{ GRAY8, GRAY16_LE }")));
static GstStaticPadTemplate pred_template =
GST_STATIC_PAD_TEMPLATE ("prediction", GST_PAD_SINK, GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE ("{ GRAY8, GRAY16_LE }")));
static GstStaticPadTemplate ann_template =
GST_STATIC_PAD_TEMPLATE ("annotation", GST_PAD_SINK, GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE ("{ GRAY8, GRAY16_LE }")));

G_DEFINE_TYPE (GstSegEval, gst_seg_eval, GST_TYPE_AGGREGATOR);
GST_ELEMENT_REGISTER_DEFINE_WITH_CODE (segeval, "segeval", GST_RANK_NONE,
    GST_TYPE_SEG_EVAL,
    GST_DEBUG_CATEGORY_INIT (gst_seg_eval_debug, "segeval", 0,
        "segmentation evaluation"));

static const gchar *
side_name (gint side)
{
  return side == SIDE_PRED ? "prediction" : "annotation";
}

/* ---- instance canvas ---- */

static void
canvas_clear (Canvas * c)
{
  g_clear_pointer (&c->key, g_free);
  g_clear_pointer (&c->name, g_free);
  g_clear_pointer (&c->pred, g_free);
  g_clear_pointer (&c->gt, g_free);
  g_clear_pointer (&c->valid, g_free);
  c->width = c->height = 0;
}

/* Computes the instance counts of the finished image and appends them. */
static void
canvas_finish (GstSegEval * self)
{
  Canvas *c = &self->canvas;
  gsize n = (gsize) c->width * c->height;
  WsiImageResult res = { 0 };
  WsiLabelView pv, gv;
  guint32 *pi, *gi;

  if (!c->key)
    return;
  pv = (WsiLabelView) {
  c->pred, (gsize) c->width * c->pred_bpp, c->pred_bpp};
  gv = (WsiLabelView) {
  c->gt, (gsize) c->width * c->gt_bpp, c->gt_bpp};
  pi = g_new (guint32, MAX (n, 1));
  gi = g_new (guint32, MAX (n, 1));
  wsi_instances_from_labels (&pv, c->valid, c->width, c->height,
      self->cfg.instance_class, self->cfg.connectivity, pi);
  wsi_instances_from_labels (&gv, c->valid, c->width, c->height,
      self->cfg.instance_class, self->cfg.connectivity, gi);
  wsi_instance_count (gi, pi, n, G_MAXUINT32 - 1, &res.counts);
  g_free (pi);
  g_free (gi);
  res.image = g_strdup (c->name);
  GST_DEBUG_OBJECT (self, "image %s: %" G_GUINT64_FORMAT " GT objects, %"
      G_GUINT64_FORMAT " predicted, %" G_GUINT64_FORMAT " matched", res.image,
      res.counts.n_gt, res.counts.n_pred, res.counts.tp);
  g_array_append_val (self->images, res);
  canvas_clear (c);
}

static gboolean
canvas_start (GstSegEval * self, const gchar * key, const GstWsiTileMeta * m)
{
  Canvas *c = &self->canvas;
  gint64 w, h;
  gsize n;

  gst_wsi_tile_meta_region_level_size (m, &w, &h);
  if (w <= 0 || h <= 0) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT,
        ("Patch of '%s' has no region size in its tile meta; instance "
            "metrics need the image size", m->slide ? m->slide : ""),
        (NULL));
    return FALSE;
  }
  if ((guint64) w * h > self->cfg.max_image_pixels) {
    GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
        ("Image '%s' is %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT " pixels, "
            "more than the limit max-image-pixels=%" G_GUINT64_FORMAT ": instance "
            "metrics reassemble whole images in memory; use them on tile "
            "datasets, or set instances=false for whole slides",
            m->slide ? m->slide : "", w, h, self->cfg.max_image_pixels),
        (NULL));
    return FALSE;
  }
  n = (gsize) w * h;
  c->key = g_strdup (key);
  c->name = g_strdup (m->slide ? m->slide : "");
  c->width = w;
  c->height = h;
  c->pred_bpp = GST_VIDEO_INFO_FORMAT (&self->info[SIDE_PRED]) ==
      GST_VIDEO_FORMAT_GRAY8 ? 1 : 2;
  c->gt_bpp = GST_VIDEO_INFO_FORMAT (&self->info[SIDE_ANN]) ==
      GST_VIDEO_FORMAT_GRAY8 ? 1 : 2;
  c->pred = g_try_malloc0 (n * c->pred_bpp);
  c->gt = g_try_malloc0 (n * c->gt_bpp);
  c->valid = g_try_malloc0 (n);
  if (!c->pred || !c->gt || !c->valid) {
    canvas_clear (c);
    GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
        ("Not enough memory reassembling image '%s' (%" G_GINT64_FORMAT "x%"
            G_GINT64_FORMAT ")", m->slide ? m->slide : "", w, h), (NULL));
    return FALSE;
  }
  return TRUE;
}

/* ---- properties ---- */

static void
gst_seg_eval_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec)
{
  GstSegEval *self = GST_SEG_EVAL (object);
  Settings *s = &self->props;

  if (gst_wsi_property_refused (GST_ELEMENT (self), &self->running, pspec))
    return;
  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_LOCATION:
      g_free (s->location);
      s->location = g_value_dup_string (value);
      break;
    case PROP_IGNORE_INDEX:
      s->ignore_index = g_value_get_int (value);
      break;
    case PROP_NUM_CLASSES:
      s->num_classes = g_value_get_int (value);
      break;
    case PROP_INTERVAL:
      s->interval = g_value_get_uint (value);
      break;
    case PROP_INSTANCES:
      s->instances = g_value_get_boolean (value);
      break;
    case PROP_INSTANCE_CLASS:
      s->instance_class = g_value_get_int (value);
      break;
    case PROP_CONNECTIVITY:
      s->connectivity = g_value_get_enum (value);
      break;
    case PROP_SLIDE_MATCH:
      s->slide_match = g_value_get_enum (value);
      break;
    case PROP_MAX_PENDING:
      s->max_pending = g_value_get_uint (value);
      break;
    case PROP_MAX_IMAGE_PIXELS:
      s->max_image_pixels = g_value_get_uint64 (value);
      break;
    case PROP_POST_MESSAGES:
      s->post_messages = g_value_get_boolean (value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_seg_eval_get_property (GObject * object, guint prop_id, GValue * value,
    GParamSpec * pspec)
{
  GstSegEval *self = GST_SEG_EVAL (object);
  Settings *s = &self->props;

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_LOCATION:
      g_value_set_string (value, s->location);
      break;
    case PROP_IGNORE_INDEX:
      g_value_set_int (value, s->ignore_index);
      break;
    case PROP_NUM_CLASSES:
      g_value_set_int (value, s->num_classes);
      break;
    case PROP_INTERVAL:
      g_value_set_uint (value, s->interval);
      break;
    case PROP_INSTANCES:
      g_value_set_boolean (value, s->instances);
      break;
    case PROP_INSTANCE_CLASS:
      g_value_set_int (value, s->instance_class);
      break;
    case PROP_CONNECTIVITY:
      g_value_set_enum (value, s->connectivity);
      break;
    case PROP_SLIDE_MATCH:
      g_value_set_enum (value, s->slide_match);
      break;
    case PROP_MAX_PENDING:
      g_value_set_uint (value, s->max_pending);
      break;
    case PROP_MAX_IMAGE_PIXELS:
      g_value_set_uint64 (value, s->max_image_pixels);
      break;
    case PROP_POST_MESSAGES:
      g_value_set_boolean (value, s->post_messages);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

/* ---- reports ---- */

/* Annotation value skipped for the negotiated annotation format, -1: none. */
static gint
effective_ignore (GstSegEval * self)
{
  gboolean gray8 = GST_VIDEO_INFO_FORMAT (&self->info[SIDE_ANN]) ==
      GST_VIDEO_FORMAT_GRAY8;
  gint v = self->cfg.ignore_index;

  if (v < 0)
    return gray8 ? 255 : 65535;
  if (gray8 && v > 255)
    return -1;
  return v;
}

static void
fill_report_info (GstSegEval * self, WsiReportInfo * info)
{
  gboolean p8 = GST_VIDEO_INFO_FORMAT (&self->info[SIDE_PRED]) ==
      GST_VIDEO_FORMAT_GRAY8;
  gboolean a8 = GST_VIDEO_INFO_FORMAT (&self->info[SIDE_ANN]) ==
      GST_VIDEO_FORMAT_GRAY8;

  memset (info, 0, sizeof (*info));
  info->num_classes = self->cfg.num_classes;
  info->ignore = effective_ignore (self);
  info->instances = self->cfg.instances;
  info->instance_class = self->cfg.instance_class;
  info->instance_source = p8 != a8 ? "mixed" :
      (p8 ? "components" : "instance-map");
  info->connectivity = self->cfg.connectivity;
  info->patches = self->patches;
  info->unmatched_prediction = self->unmatched[SIDE_PRED];
  info->unmatched_annotation = self->unmatched[SIDE_ANN];
}

static void
set_double_array (GstStructure * s, const gchar * field, const gdouble * v,
    gint n)
{
  GValue arr = G_VALUE_INIT, item = G_VALUE_INIT;
  gint i;

  g_value_init (&arr, GST_TYPE_ARRAY);
  g_value_init (&item, G_TYPE_DOUBLE);
  for (i = 0; i < n; i++) {
    g_value_set_double (&item, v[i]);
    gst_value_array_append_value (&arr, &item);
  }
  gst_structure_take_value (s, field, &arr);
  g_value_unset (&item);
}

static void
post_report (GstSegEval * self, gboolean final)
{
  WsiReportInfo info;
  GstStructure *s;
  gint k = wsi_confusion_n_classes (&self->cm, self->cfg.num_classes), c;
  gdouble *dice = g_new (gdouble, k), *iou = g_new (gdouble, k);
  gdouble md, mi;
  gchar *json;

  fill_report_info (self, &info);
  for (c = 0; c < k; c++) {
    WsiClassScore sc;

    wsi_confusion_class_score (&self->cm, c, &sc);
    dice[c] = sc.dice;
    iou[c] = sc.iou;
  }
  wsi_confusion_means (&self->cm, k, &md, &mi);
  json = wsi_metrics_report_json (&info, &self->cm,
      (WsiImageResult *) self->images->data, self->images->len);

  s = gst_structure_new ("segeval",
      "final", G_TYPE_BOOLEAN, final,
      "patches", G_TYPE_UINT64, self->patches,
      "pixels", G_TYPE_UINT64, wsi_confusion_total (&self->cm),
      "ignored-pixels", G_TYPE_UINT64, self->cm.ignored,
      "num-classes", G_TYPE_INT, k,
      "mean-dice", G_TYPE_DOUBLE, md,
      "mean-iou", G_TYPE_DOUBLE, mi,
      "accuracy", G_TYPE_DOUBLE, wsi_confusion_accuracy (&self->cm),
      "unmatched-prediction", G_TYPE_UINT64, self->unmatched[SIDE_PRED],
      "unmatched-annotation", G_TYPE_UINT64, self->unmatched[SIDE_ANN],
      NULL);
  set_double_array (s, "dice", dice, k);
  set_double_array (s, "iou", iou, k);
  if (self->cfg.instances) {
    WsiInstanceCounts total = { 0 };
    WsiInstanceMetrics m;
    guint i;

    for (i = 0; i < self->images->len; i++)
      wsi_instance_counts_add (&total,
          &g_array_index (self->images, WsiImageResult, i).counts);
    wsi_instance_metrics (&total, &m);
    gst_structure_set (s, "images", G_TYPE_UINT, self->images->len,
        "f1", G_TYPE_DOUBLE, m.f1, "pq", G_TYPE_DOUBLE, m.pq,
        "sq", G_TYPE_DOUBLE, m.sq, "dq", G_TYPE_DOUBLE, m.dq,
        "aji", G_TYPE_DOUBLE, m.aji, NULL);
  }
  gst_structure_set (s, "json", G_TYPE_STRING, json, NULL);
  gst_element_post_message (GST_ELEMENT (self),
      gst_message_new_element (GST_OBJECT (self), s));

  if (final && self->cfg.location && *self->cfg.location) {
    GError *err = NULL;

    /* g_file_set_contents writes a temporary file and renames it */
    if (!g_file_set_contents (self->cfg.location, json, -1, &err)) {
      GST_ELEMENT_ERROR (self, RESOURCE, OPEN_WRITE,
          ("Could not write the report '%s': %s", self->cfg.location,
              err->message), (NULL));
      g_error_free (err);
    }
  }
  g_free (json);
  g_free (dice);
  g_free (iou);
}

/* ---- evaluation of one pair ---- */

static void
paint_canvas (GstSegEval * self, const GstWsiTileMeta * m,
    const GstVideoFrame * pf, const GstVideoFrame * af, gint x0, gint x1,
    gint y0, gint y1, gint ignore)
{
  Canvas *c = &self->canvas;
  gint64 ox = llround ((m->x - m->region_x) / m->downsample);
  gint64 oy = llround ((m->y - m->region_y) / m->downsample);
  WsiLabelView av = { GST_VIDEO_FRAME_PLANE_DATA (af, 0),
    GST_VIDEO_FRAME_PLANE_STRIDE (af, 0), c->gt_bpp
  };
  gint i, j;

  for (j = y0; j < y1; j++) {
    gint64 cy = oy + j;
    const guint8 *prow, *arow;

    if (cy < 0 || cy >= c->height)
      continue;
    prow = (const guint8 *) GST_VIDEO_FRAME_PLANE_DATA (pf, 0) +
        (gsize) j * GST_VIDEO_FRAME_PLANE_STRIDE (pf, 0);
    arow = (const guint8 *) GST_VIDEO_FRAME_PLANE_DATA (af, 0) +
        (gsize) j * GST_VIDEO_FRAME_PLANE_STRIDE (af, 0);
    for (i = x0; i < x1; i++) {
      gint64 cx = ox + i;
      gsize at;

      if (cx < 0 || cx >= c->width)
        continue;
      at = (gsize) cy * c->width + cx;
      memcpy (c->pred + at * c->pred_bpp, prow + (gsize) i * c->pred_bpp,
          c->pred_bpp);
      memcpy (c->gt + at * c->gt_bpp, arow + (gsize) i * c->gt_bpp,
          c->gt_bpp);
      c->valid[at] = (gint) WSI_LABEL_AT (&av, i, j) != ignore;
    }
  }
}

static gboolean
fitted_meta (GstSegEval * self, GstBuffer * buf, gint side,
    GstWsiTileMeta * out)
{
  GstWsiTileMeta *meta = gst_buffer_get_wsi_tile_meta (buf);
  gint w = GST_VIDEO_INFO_WIDTH (&self->info[side]);
  gint h = GST_VIDEO_INFO_HEIGHT (&self->info[side]);

  *out = *meta;
  gst_wsi_tile_meta_fit_to_size (out, w, h);
  if (out->width != w || out->height != h || !isfinite (out->downsample)
      || !(out->downsample > 0)
      || out->overlap < 0 || out->overlap >= MIN (w, h)) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT,
        ("Invalid tile meta on the %s pad (slide '%s', level-0 (%"
            G_GINT64_FORMAT ", %" G_GINT64_FORMAT ")): size %dx%d, frame %dx%d,"
            " overlap %d", side_name (side), meta->slide ? meta->slide : "",
            meta->x, meta->y, meta->width, meta->height, w, h, meta->overlap),
        (NULL));
    return FALSE;
  }
  return TRUE;
}

static GstFlowReturn
evaluate_pair (GstSegEval * self, GstBuffer * pbuf, GstBuffer * abuf,
    const gchar * key)
{
  GstWsiTileMeta pm, am;
  GstVideoFrame pf, af;
  gint x0, x1, y0, y1, ignore;
  WsiLabelView pv, av;
  GstFlowReturn ret = GST_FLOW_OK;
  guint interval;
  gboolean post_messages;

  if (!fitted_meta (self, pbuf, SIDE_PRED, &pm)
      || !fitted_meta (self, abuf, SIDE_ANN, &am))
    return GST_FLOW_ERROR;
  if (pm.width != am.width || pm.height != am.height) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT,
        ("Prediction (%dx%d) and annotation (%dx%d) patches of '%s' at "
            "level-0 (%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT ") differ in "
            "size", pm.width, pm.height, am.width, am.height,
            am.slide ? am.slide : "", am.x, am.y), (NULL));
    return GST_FLOW_ERROR;
  }

  /* centre crop of the valid area, in patch pixels */
  gst_wsi_pair_compared_area (&am, &x0, &x1, &y0, &y1);

  if (!gst_video_frame_map (&pf, &self->info[SIDE_PRED], pbuf, GST_MAP_READ))
    goto map_failed;
  if (!gst_video_frame_map (&af, &self->info[SIDE_ANN], abuf, GST_MAP_READ)) {
    gst_video_frame_unmap (&pf);
    goto map_failed;
  }
  pv.bpp = GST_VIDEO_FRAME_FORMAT (&pf) == GST_VIDEO_FORMAT_GRAY8 ? 1 : 2;
  pv.stride = GST_VIDEO_FRAME_PLANE_STRIDE (&pf, 0);
  pv.data = (const guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&pf, 0) +
      (gsize) y0 * pv.stride + (gsize) x0 * pv.bpp;
  av.bpp = GST_VIDEO_FRAME_FORMAT (&af) == GST_VIDEO_FORMAT_GRAY8 ? 1 : 2;
  av.stride = GST_VIDEO_FRAME_PLANE_STRIDE (&af, 0);
  av.data = (const guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&af, 0) +
      (gsize) y0 * av.stride + (gsize) x0 * av.bpp;
  ignore = effective_ignore (self);
  wsi_confusion_add (&self->cm, &pv, &av, x1 - x0, y1 - y0, ignore);

  if (self->cfg.instances) {
    if (self->canvas.key && strcmp (self->canvas.key, key) != 0)
      canvas_finish (self);
    if (!self->canvas.key && !canvas_start (self, key, &am))
      ret = GST_FLOW_ERROR;
    else
      paint_canvas (self, &am, &pf, &af, x0, x1, y0, y1, ignore);
  }
  gst_video_frame_unmap (&pf);
  gst_video_frame_unmap (&af);
  if (ret != GST_FLOW_OK)
    return ret;

  self->patches++;
  GST_LOG_OBJECT (self, "pair %" G_GUINT64_FORMAT ": '%s' (%" G_GINT64_FORMAT
      ", %" G_GINT64_FORMAT "), crop [%d,%d)x[%d,%d)", self->patches,
      am.slide ? am.slide : "", am.x, am.y, x0, x1, y0, y1);
  GST_OBJECT_LOCK (self);
  interval = self->props.interval;
  post_messages = self->props.post_messages;
  GST_OBJECT_UNLOCK (self);
  /* periodic report: opt-in (post-messages); the final one is always sent */
  if (post_messages && interval && self->patches % interval == 0)
    post_report (self, FALSE);
  return GST_FLOW_OK;

map_failed:
  GST_ELEMENT_ERROR (self, STREAM, FORMAT,
      ("Could not map a label patch (does the buffer match the caps?)"),
      (NULL));
  return GST_FLOW_ERROR;
}

/* GstWsiPairUnmatchedFunc: counted in the report, warned about once. */
static void
drop_unmatched (gint side, GstBuffer * buf, const GstWsiPlace * place,
    gpointer user_data)
{
  GstSegEval *self = user_data;

  self->unmatched[side]++;
  GST_WARNING_OBJECT (self, "dropping %s patch of '%s' at level-0 (%"
      G_GINT64_FORMAT ", %" G_GINT64_FORMAT "): no partner arrived",
      side_name (side), place->slide, place->x, place->y);
  if (!self->warned_unmatched) {
    self->warned_unmatched = TRUE;
    GST_ELEMENT_WARNING (self, STREAM, FAILED,
        ("A %s patch has no partner on the other pad (slide '%s', level-0 "
            "(%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT ")); unmatched patches"
            " are left out and counted in the report", side_name (side),
            place->slide, place->x, place->y), (NULL));
  }
}

/* Takes @buf: pairs it with a waiting partner (gst/gstwsipair) or queues
 * it. */
static GstFlowReturn
accept_buffer (GstSegEval * self, gint side, GstBuffer * buf)
{
  GstBuffer *pair[2];
  gchar *key = NULL;
  GstFlowReturn ret = GST_FLOW_OK;

  if (!gst_buffer_get_wsi_tile_meta (buf)) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT,
        ("A %s patch has no tile metadata; segeval pairs patches by their "
            "slide position (put slidesrc/patchify upstream)",
            side_name (side)), (NULL));
    gst_buffer_unref (buf);
    return GST_FLOW_ERROR;
  }
  if (gst_wsi_pair_queue_push (self->pairs, side, buf, pair, &key)) {
    ret = evaluate_pair (self, pair[SIDE_PRED], pair[SIDE_ANN], key);
    gst_buffer_unref (pair[SIDE_PRED]);
    gst_buffer_unref (pair[SIDE_ANN]);
    g_free (key);
  }
  return ret;
}

/* ---- GstAggregator ---- */

static void restart_evaluation (GstSegEval * self);

static GstFlowReturn
gst_seg_eval_aggregate (GstAggregator * agg, gboolean timeout)
{
  GstSegEval *self = GST_SEG_EVAL (agg);
  GstFlowReturn ret;
  GstBuffer *buf;
  gint side;

  /* both pads flushed from upstream (a seek that did not pass here): the
   * evaluation restarts before the first buffer after the flushes */
  if (g_atomic_int_get (&self->flushed) == 3) {
    g_atomic_int_set (&self->flushed, 0);
    restart_evaluation (self);
  }
  if (self->finished)
    return GST_FLOW_EOS;

  for (side = 0; side < 2; side++) {
    buf = gst_aggregator_pad_pop_buffer (self->pads[side]);
    if (!buf)
      continue;
    if (!self->have_info[side]) {
      gst_buffer_unref (buf);
      GST_ELEMENT_ERROR (self, STREAM, FORMAT,
          ("A buffer arrived before caps on the %s pad", side_name (side)),
          (NULL));
      return GST_FLOW_NOT_NEGOTIATED;
    }
    if (side == SIDE_PRED) {
      /* pass the prediction through, in arrival order */
      gst_aggregator_selected_samples (agg, GST_BUFFER_PTS (buf),
          GST_BUFFER_DTS (buf), GST_BUFFER_DURATION (buf), NULL);
      ret = gst_aggregator_finish_buffer (agg, gst_buffer_ref (buf));
      if (ret != GST_FLOW_OK && ret != GST_FLOW_NOT_LINKED) {
        gst_buffer_unref (buf);
        return ret;
      }
    }
    ret = accept_buffer (self, side, buf);
    if (ret != GST_FLOW_OK)
      return ret;
  }

  if (gst_aggregator_pad_is_eos (self->pads[SIDE_PRED])
      && gst_aggregator_pad_is_eos (self->pads[SIDE_ANN])
      && !gst_aggregator_pad_has_buffer (self->pads[SIDE_PRED])
      && !gst_aggregator_pad_has_buffer (self->pads[SIDE_ANN])) {
    gst_wsi_pair_queue_drain (self->pairs);
    if (self->cfg.instances)
      canvas_finish (self);
    self->finished = TRUE;
    post_report (self, TRUE);
    return GST_FLOW_EOS;
  }
  return GST_FLOW_OK;
}

static gboolean
gst_seg_eval_sink_event (GstAggregator * agg, GstAggregatorPad * pad,
    GstEvent * event)
{
  GstSegEval *self = GST_SEG_EVAL (agg);
  gint side = pad == self->pads[SIDE_PRED] ? SIDE_PRED : SIDE_ANN;

  if (GST_EVENT_TYPE (event) == GST_EVENT_FLUSH_STOP)
    g_atomic_int_or (&self->flushed, 1 << side);
  if (GST_EVENT_TYPE (event) == GST_EVENT_CAPS) {
    GstCaps *caps;
    GstVideoInfo info;

    gst_event_parse_caps (event, &caps);
    if (!gst_video_info_from_caps (&info, caps)) {
      GST_ELEMENT_ERROR (self, STREAM, FORMAT,
          ("Invalid caps on the %s pad: %" GST_PTR_FORMAT, side_name (side),
              caps), (NULL));
      gst_event_unref (event);
      return FALSE;
    }
    if (self->have_info[side] && (self->canvas.key
            && GST_VIDEO_INFO_FORMAT (&info) !=
            GST_VIDEO_INFO_FORMAT (&self->info[side]))) {
      /* the canvas holds labels of the previous depth */
      canvas_finish (self);
    }
    self->info[side] = info;
    self->have_info[side] = TRUE;
    if (side == SIDE_PRED) {
      gst_caps_replace (&self->pred_caps, caps);
      gst_pad_mark_reconfigure (GST_AGGREGATOR_SRC_PAD (agg));
    }
  }
  return GST_AGGREGATOR_CLASS (gst_seg_eval_parent_class)->sink_event (agg,
      pad, event);
}

static gboolean
gst_seg_eval_src_event (GstAggregator * agg, GstEvent * event)
{
  if (gst_wsi_aggregator_refuse_seek (agg, event))
    return FALSE;
  return GST_AGGREGATOR_CLASS (gst_seg_eval_parent_class)->src_event (agg,
      event);
}

/* The src pad carries the prediction's caps. */
static GstFlowReturn
gst_seg_eval_update_src_caps (GstAggregator * agg, GstCaps * downstream,
    GstCaps ** ret)
{
  GstSegEval *self = GST_SEG_EVAL (agg);

  if (!self->pred_caps)
    return GST_AGGREGATOR_FLOW_NEED_DATA;
  if (!gst_caps_can_intersect (self->pred_caps, downstream)) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT,
        ("Downstream does not accept the prediction caps %" GST_PTR_FORMAT,
            self->pred_caps), (NULL));
    return GST_FLOW_NOT_NEGOTIATED;
  }
  *ret = gst_caps_ref (self->pred_caps);
  return GST_FLOW_OK;
}

static void
reset_state (GstSegEval * self)
{
  gint side;

  gst_wsi_pair_queue_reset (self->pairs);
  for (side = 0; side < 2; side++) {
    self->unmatched[side] = 0;
    self->have_info[side] = FALSE;
  }
  g_atomic_int_set (&self->flushed, 0);
  self->warned_unmatched = FALSE;
  canvas_clear (&self->canvas);
  if (self->images) {
    guint i;

    for (i = 0; i < self->images->len; i++)
      g_free (g_array_index (self->images, WsiImageResult, i).image);
    g_array_set_size (self->images, 0);
  }
  gst_caps_replace (&self->pred_caps, NULL);
  self->patches = 0;
  self->finished = FALSE;
}

static gboolean seg_eval_configure (GstSegEval * self);

static gboolean
gst_seg_eval_start (GstAggregator * agg)
{
  GstSegEval *self = GST_SEG_EVAL (agg);

  /* before the settings are read: a later change is refused */
  gst_wsi_set_running (GST_ELEMENT (self), &self->running, TRUE);
  if (seg_eval_configure (self))
    return TRUE;
  /* stop() is not called after a failed start */
  gst_wsi_set_running (GST_ELEMENT (self), &self->running, FALSE);
  return FALSE;
}

static gboolean
seg_eval_configure (GstSegEval * self)
{
  gint side;

  GST_OBJECT_LOCK (self);
  g_free (self->cfg.location);
  self->cfg = self->props;
  self->cfg.location = g_strdup (self->props.location);
  GST_OBJECT_UNLOCK (self);

  if (self->cfg.connectivity != 4 && self->cfg.connectivity != 8) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("connectivity must be 4 or 8, not %d", self->cfg.connectivity),
        (NULL));
    return FALSE;
  }
  /* an unlinked sink pad would make the aggregator wait forever */
  for (side = 0; side < 2; side++) {
    if (!gst_pad_is_linked (GST_PAD (self->pads[side]))) {
      GST_ELEMENT_ERROR (self, CORE, PAD,
          ("The %s pad of segeval is not linked; link both the prediction "
              "and the annotation branch", side_name (side)), (NULL));
      return FALSE;
    }
  }
  reset_state (self);
  gst_wsi_pair_queue_configure (self->pairs, self->cfg.slide_match,
      self->cfg.max_pending);
  wsi_confusion_reset (&self->cm);
  return TRUE;
}

static gboolean
gst_seg_eval_stop (GstAggregator * agg)
{
  GstSegEval *self = GST_SEG_EVAL (agg);

  gst_wsi_set_running (GST_ELEMENT (self), &self->running, FALSE);
  reset_state (self);
  return TRUE;
}

/* A flush of both pads (a flushing seek) restarts the evaluation: patches
 * held from before it will never find partners, and the data that follows
 * would be counted twice. Negotiated caps stay (they are not resent). */
static void
restart_evaluation (GstSegEval * self)
{
  gint side;
  guint i;

  gst_wsi_pair_queue_reset (self->pairs);
  for (side = 0; side < 2; side++)
    self->unmatched[side] = 0;
  self->warned_unmatched = FALSE;
  canvas_clear (&self->canvas);
  for (i = 0; i < self->images->len; i++)
    g_free (g_array_index (self->images, WsiImageResult, i).image);
  g_array_set_size (self->images, 0);
  wsi_confusion_reset (&self->cm);
  self->patches = 0;
  self->finished = FALSE;
}

/* A seek through segeval: the source task is paused here. */
static GstFlowReturn
gst_seg_eval_flush (GstAggregator * agg)
{
  GstSegEval *self = GST_SEG_EVAL (agg);

  g_atomic_int_set (&self->flushed, 0);
  restart_evaluation (self);
  return GST_FLOW_OK;
}

static void
gst_seg_eval_finalize (GObject * object)
{
  GstSegEval *self = GST_SEG_EVAL (object);

  reset_state (self);
  gst_wsi_pair_queue_free (self->pairs);
  g_array_free (self->images, TRUE);
  wsi_confusion_clear (&self->cm);
  g_free (self->props.location);
  g_free (self->cfg.location);
  G_OBJECT_CLASS (gst_seg_eval_parent_class)->finalize (object);
}

static void
gst_seg_eval_init (GstSegEval * self)
{
  GstElementClass *klass = GST_ELEMENT_GET_CLASS (self);
  const gchar *names[2] = { "prediction", "annotation" };
  gint side;

  for (side = 0; side < 2; side++) {
    GstPadTemplate *templ = gst_element_class_get_pad_template (klass,
        names[side]);

    self->pads[side] = g_object_new (GST_TYPE_AGGREGATOR_PAD, "name",
        names[side], "direction", GST_PAD_SINK, "template", templ, NULL);
    gst_element_add_pad (GST_ELEMENT (self), GST_PAD (self->pads[side]));
  }
  self->props.ignore_index = DEFAULT_IGNORE_INDEX;
  self->props.num_classes = DEFAULT_NUM_CLASSES;
  self->props.interval = DEFAULT_INTERVAL;
  self->props.instance_class = DEFAULT_INSTANCE_CLASS;
  self->props.connectivity = DEFAULT_CONNECTIVITY;
  self->props.slide_match = DEFAULT_SLIDE_MATCH;
  self->props.max_pending = DEFAULT_MAX_PENDING;
  self->props.max_image_pixels = DEFAULT_MAX_IMAGE_PIXELS;
  self->cfg = self->props;
  self->images = g_array_new (FALSE, TRUE, sizeof (WsiImageResult));
  self->pairs = gst_wsi_pair_queue_new (drop_unmatched, self);
  wsi_confusion_init (&self->cm);
}

static void
gst_seg_eval_class_init (GstSegEvalClass * klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstAggregatorClass *agg_class = GST_AGGREGATOR_CLASS (klass);
  const GParamFlags flags = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
      GST_PARAM_MUTABLE_READY;

  gobject_class->set_property = gst_seg_eval_set_property;
  gobject_class->get_property = gst_seg_eval_get_property;
  gobject_class->finalize = gst_seg_eval_finalize;

  g_object_class_install_property (gobject_class, PROP_LOCATION,
      g_param_spec_string ("location", "Location",
          "JSON report written at EOS (atomically); empty: none", NULL,
          flags));
  g_object_class_install_property (gobject_class, PROP_IGNORE_INDEX,
      g_param_spec_int ("ignore-index", "Ignore index",
          "Annotation value left out of every metric; -1 means 255 for GRAY8 "
          "and 65535 for GRAY16_LE annotations", -1, 65535,
          DEFAULT_IGNORE_INDEX, flags));
  g_object_class_install_property (gobject_class, PROP_NUM_CLASSES,
      g_param_spec_int ("num-classes", "Number of classes",
          "Classes reported (0: 1 + the largest label seen)", 0,
          WSI_METRICS_MAX_CLASSES, DEFAULT_NUM_CLASSES, flags));
  g_object_class_install_property (gobject_class, PROP_INTERVAL,
      g_param_spec_uint ("interval", "Interval",
          "With post-messages=true, post a segeval message every N evaluated "
          "patch pairs (0: only the final one at EOS)", 0, G_MAXUINT,
          DEFAULT_INTERVAL, G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_INSTANCES,
      g_param_spec_boolean ("instances", "Instance metrics",
          "Reassemble every image and compute object F1, PQ, AJI and object "
          "Dice (images up to max-image-pixels)", FALSE, flags));
  g_object_class_install_property (gobject_class, PROP_INSTANCE_CLASS,
      g_param_spec_int ("instance-class", "Instance class",
          "Class whose connected components are the objects of GRAY8 label "
          "maps", 0, 255, DEFAULT_INSTANCE_CLASS, flags));
  g_object_class_install_property (gobject_class, PROP_CONNECTIVITY,
      g_param_spec_enum ("connectivity", "Connectivity",
          "Neighbours joining connected components",
          GST_TYPE_SEG_EVAL_CONNECTIVITY, DEFAULT_CONNECTIVITY, flags));
  g_object_class_install_property (gobject_class, PROP_SLIDE_MATCH,
      g_param_spec_enum ("slide-match", "Slide match",
          "How the slides of a prediction and an annotation patch must agree",
          GST_TYPE_SEG_EVAL_SLIDE_MATCH, DEFAULT_SLIDE_MATCH, flags));
  g_object_class_install_property (gobject_class, PROP_MAX_PENDING,
      g_param_spec_uint ("max-pending", "Max pending",
          "A patch is dropped as unmatched when its partner did not come "
          "among this many later patches of the other pad", 1, 1 << 20,
          DEFAULT_MAX_PENDING, flags));
  g_object_class_install_property (gobject_class, PROP_MAX_IMAGE_PIXELS,
      g_param_spec_uint64 ("max-image-pixels", "Max image pixels",
          "Largest image reassembled for instance metrics (level pixels)", 1,
          MAX_IMAGE_PIXELS_LIMIT, DEFAULT_MAX_IMAGE_PIXELS, flags));
  g_object_class_install_property (gobject_class, PROP_POST_MESSAGES,
      gst_wsi_param_spec_post_messages ());

  gst_element_class_add_static_pad_template_with_gtype (element_class,
      &src_template, GST_TYPE_AGGREGATOR_PAD);
  gst_element_class_add_static_pad_template_with_gtype (element_class,
      &pred_template, GST_TYPE_AGGREGATOR_PAD);
  gst_element_class_add_static_pad_template_with_gtype (element_class,
      &ann_template, GST_TYPE_AGGREGATOR_PAD);
  gst_element_class_set_static_metadata (element_class,
      "Segmentation evaluation", "Filter/Analyzer/Video",
      "Compares predicted label patches with annotations: pixel Dice/IoU per "
      "class, object F1, PQ, AJI and object Dice; bus messages and JSON",
      "gst-wsiseg");

  agg_class->aggregate = GST_DEBUG_FUNCPTR (gst_seg_eval_aggregate);
  agg_class->sink_event = GST_DEBUG_FUNCPTR (gst_seg_eval_sink_event);
  agg_class->src_event = GST_DEBUG_FUNCPTR (gst_seg_eval_src_event);
  agg_class->update_src_caps = GST_DEBUG_FUNCPTR (gst_seg_eval_update_src_caps);
  agg_class->start = GST_DEBUG_FUNCPTR (gst_seg_eval_start);
  agg_class->stop = GST_DEBUG_FUNCPTR (gst_seg_eval_stop);
  agg_class->flush = GST_DEBUG_FUNCPTR (gst_seg_eval_flush);

  gst_type_mark_as_plugin_api (GST_TYPE_SEG_EVAL_SLIDE_MATCH, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_SEG_EVAL_CONNECTIVITY, 0);
}
