/* segment-maskrcnn: instance segmentation of patches with Mask R-CNN
 * (models/maskrcnn on the oneDNN engine).
 *
 * A GstAggregator batching patches like segment-fcn (gst/gstwsibatch, live
 * batch-timeout). Each input patch gives one GRAY16_LE instance label patch
 * (0 background, 1..N painted by descending score) carrying one
 * GstVideoRegionOfInterestMeta per instance (gst/gstwsidetection.h).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include <gst/base/gstaggregator.h>
#include <gst/video/video.h>

#include "gstwsiaggregator.h"
#include "gstwsibatch.h"
#include "gstwsiclasses.h"
#include "gstwsidetection.h"
#include "gstwsiprops.h"
#include "gstwsiseg.h"
#include "gstwsitensor.h"
#include "gstwsitilemeta.h"
#include "wsimrcnn-file.h"
#include "wsimrcnn-instances.h"
#include "wsinn.h"

GST_DEBUG_CATEGORY_STATIC (gst_segment_maskrcnn_debug);
#define GST_CAT_DEFAULT gst_segment_maskrcnn_debug

typedef enum
{
  MRCNN_MODE_INFER,
  MRCNN_MODE_TRAIN,
} MrcnnMode;

#define GST_TYPE_SEGMENT_MASKRCNN_MODE (gst_segment_maskrcnn_mode_get_type ())
static GType
gst_segment_maskrcnn_mode_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {MRCNN_MODE_INFER, "Detect and segment instances with the model",
        "infer"},
    {MRCNN_MODE_TRAIN, "Train on image + instance annotation pairs "
          "(request the 'annotation' pad)", "train"},
    {0, NULL, NULL}
  };

  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstSegmentMaskrcnnMode", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

#define GST_TYPE_SEGMENT_MASKRCNN (gst_segment_maskrcnn_get_type ())
G_DECLARE_FINAL_TYPE (GstSegmentMaskrcnn, gst_segment_maskrcnn, GST,
    SEGMENT_MASKRCNN, GstAggregator);

struct _GstSegmentMaskrcnn
{
  GstAggregator parent;

  /* properties (object lock) */
  gchar *model_path;
  gdouble score_threshold;      /* < 0: the model's */
  gdouble nms_iou;              /* 0: the model's */
  guint max_detections;         /* 0: the model's */
  guint batch_size;
  guint64 batch_timeout;
  guint threads;
  guint64 max_memory;
  MrcnnMode mode;
  gint post_messages;

  gint running;                 /* between start and stop (gstwsiprops) */
  gchar *classes;               /* the loaded model's class list, object lock */
  GstEvent *classes_event;      /* the same in-band, until stored on src */
  GstEvent *instances_event;    /* wsi-instances, until stored on src */

  /* model */
  wsimrcnn *net;
  WsiMrcnnModelInfo mi;
  gboolean have_info;
  gfloat applied_score;         /* detection settings the net has */
  gdouble applied_nms;
  gint applied_max;

  /* stream */
  GstAggregatorPad *image_pad;
  GstWsiBatch *batch;
  gboolean input_ok, input_is_tensor;
  gint width, height;
  GstVideoInfo in_vinfo;
  GstCaps *src_caps;
  gchar *resolution_checked;    /* slide whose pixel size was compared */

  /* batch arrays (elements) */
  gfloat *in_batch, *boxes, *scores, *masks;
  gint32 *labels;
  gint *counts;
  WsiMrcnnObject *objects;
  gsize in_capacity, boxes_capacity, scores_capacity, masks_capacity,
      labels_capacity, counts_capacity, objects_capacity;
};

enum
{
  PROP_0,
  PROP_MODEL,
  PROP_SCORE_THRESHOLD,
  PROP_NMS_IOU,
  PROP_MAX_DETECTIONS,
  PROP_BATCH_SIZE,
  PROP_BATCH_TIMEOUT,
  PROP_THREADS,
  PROP_MAX_MEMORY,
  PROP_CLASSES,
  PROP_MODE,
  PROP_POST_MESSAGES,
};

#define DEFAULT_BATCH_SIZE 1
#define DEFAULT_BATCH_TIMEOUT (100 * GST_MSECOND)
#define DEFAULT_MAX_MEMORY (G_GUINT64_CONSTANT (4) << 30)
/* the label patch holds ids 1..65534 (65535 is labelpatch's ignore) */
#define MAX_DETECTIONS_LIMIT 65534

static GstStaticPadTemplate sink_template =
GST_STATIC_PAD_TEMPLATE ("sink", GST_PAD_SINK, GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE ("RGB") "; " GST_WSI_TENSOR_CAPS));

static GstStaticPadTemplate src_template =
GST_STATIC_PAD_TEMPLATE ("src", GST_PAD_SRC, GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE ("GRAY16_LE")));

G_DEFINE_TYPE (GstSegmentMaskrcnn, gst_segment_maskrcnn, GST_TYPE_AGGREGATOR);
GST_ELEMENT_REGISTER_DEFINE (segment_maskrcnn, "segment-maskrcnn",
    GST_RANK_NONE, GST_TYPE_SEGMENT_MASKRCNN);

static const WsiModelInfo *
model_info (GstSegmentMaskrcnn * self)
{
  return &self->mi.info;
}

/* Posts the error for a file that cannot be read and returns TRUE; FALSE
 * when it is readable (a later failure then means malformed content). */
static gboolean
report_unreadable (GstSegmentMaskrcnn * self, const gchar * what,
    const gchar * path)
{
  if (!g_file_test (path, G_FILE_TEST_EXISTS)) {
    GST_ELEMENT_ERROR (self, RESOURCE, NOT_FOUND,
        ("%s \"%s\" does not exist.", what, path), (NULL));
    return TRUE;
  }
  if (g_file_test (path, G_FILE_TEST_IS_DIR)) {
    GST_ELEMENT_ERROR (self, RESOURCE, OPEN_READ,
        ("%s \"%s\" is a directory, not a model file.", what, path), (NULL));
    return TRUE;
  }
  if (g_access (path, R_OK) != 0) {
    gint e = errno;
    GST_ELEMENT_ERROR (self, RESOURCE, OPEN_READ,
        ("%s \"%s\" cannot be read: %s.", what, path, g_strerror (e)),
        (NULL));
    return TRUE;
  }
  return FALSE;
}

/* Stores the pending in-band events on the source pad (once it is
 * active): the class names and the wsi-instances mark (the GRAY16 patches
 * are instance maps, for stitchsink's instances=auto); they go downstream
 * before the next buffer or EOS. */
static void
send_classes (GstSegmentMaskrcnn * self)
{
  GstPad *src = GST_AGGREGATOR_SRC_PAD (self);

  if (self->classes_event && gst_pad_store_sticky_event (src,
          self->classes_event) == GST_FLOW_OK)
    gst_clear_event (&self->classes_event);
  if (self->instances_event && gst_pad_store_sticky_event (src,
          self->instances_event) == GST_FLOW_OK)
    gst_clear_event (&self->instances_event);
}

/* The classes property and the sticky wsi-classes event (label values of
 * the class-id in the detection metas; the GRAY16 patch holds instance
 * ids, not classes). */
static void
update_classes (GstSegmentMaskrcnn * self)
{
  const WsiModelInfo *info = model_info (self);
  GString *s = g_string_new (NULL);
  gchar *old;

  for (gint c = 0; c < info->n_classes; c++)
    g_string_append_printf (s, "%s%s:#%02x%02x%02x", c ? "," : "",
        info->class_names[c], info->class_colors[c][0],
        info->class_colors[c][1], info->class_colors[c][2]);
  GST_OBJECT_LOCK (self);
  old = self->classes;
  self->classes = g_string_free (s, FALSE);
  GST_OBJECT_UNLOCK (self);
  g_free (old);
  gst_clear_event (&self->classes_event);
  if (info->n_classes > 0)
    self->classes_event = gst_wsi_classes_event_new_rgb ((guint)
        info->n_classes, (const gchar * const *) info->class_names,
        (const guint8 (*)[3]) info->class_colors);
  gst_clear_event (&self->instances_event);
  self->instances_event = gst_wsi_instances_event_new ();
  send_classes (self);
}

static gboolean
ensure_model (GstSegmentMaskrcnn * self)
{
  gchar err[512] = "";

  if (self->net)
    return TRUE;
  if (!self->model_path || !*self->model_path) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("No model file given."), ("Set the 'model' property to a Mask "
            "R-CNN .safetensors model file (see docs/model-format.md)."));
    return FALSE;
  }
  if (report_unreadable (self, "Model", self->model_path))
    return FALSE;
  self->net = wsimrcnn_load (self->model_path, &self->mi, err, sizeof err);
  if (!self->net) {
    GST_ELEMENT_ERROR (self, STREAM, DECODE,
        ("Could not load Mask R-CNN model \"%s\": %s", self->model_path,
            err), (NULL));
    return FALSE;
  }
  self->have_info = TRUE;
  self->applied_max = -1;
  GST_INFO_OBJECT (self, "loaded %s (%s, %d classes)", self->model_path,
      model_info (self)->encoder, model_info (self)->n_classes);
  update_classes (self);
  return TRUE;
}

/* The detection settings of the properties (the model's where unset). */
static void
detection_settings (GstSegmentMaskrcnn * self, gfloat * score, gdouble * nms,
    gint * max_det)
{
  const wsimrcnn_config *cfg = &self->mi.cfg;

  GST_OBJECT_LOCK (self);
  *score = self->score_threshold >= 0 ? (gfloat) self->score_threshold :
      cfg->det.score_thresh;
  *nms = self->nms_iou > 0 ? self->nms_iou : cfg->det.nms_thresh;
  *max_det = self->max_detections > 0 ? (gint) self->max_detections :
      MIN (cfg->det.detections_per_img, MAX_DETECTIONS_LIMIT);
  GST_OBJECT_UNLOCK (self);
}

/* Applies changed thresholds at a safe point (before a batch). */
static gboolean
apply_detection_settings (GstSegmentMaskrcnn * self)
{
  gfloat score;
  gdouble nms;
  gint max_det;
  gchar err[256] = "";

  detection_settings (self, &score, &nms, &max_det);
  if (score == self->applied_score && nms == self->applied_nms
      && max_det == self->applied_max)
    return TRUE;
  if (wsimrcnn_set_detection (self->net, score, nms, max_det, err,
          sizeof err) != 0) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("Invalid detection settings: %s", err), (NULL));
    return FALSE;
  }
  self->applied_score = score;
  self->applied_nms = nms;
  self->applied_max = max_det;
  return TRUE;
}

/* Estimated memory of a batch of @n patches: the engine's activations of
 * the features net and both heads (their RoIs) and the batch arrays. */
static gdouble
estimate_batch_bytes (GstSegmentMaskrcnn * self, gint width, gint height,
    guint n)
{
  const wsimrcnn_config *cfg = &self->mi.cfg;
  gfloat score;
  gdouble nms;
  gint D, P = cfg->rpn.post_nms_top_n, bp = cfg->spec.box_pool,
      mp = cfg->mask_pool, ms = 2 * cfg->mask_pool;
  gdouble engine, arrays, rois;

  detection_settings (self, &score, &nms, &D);
  engine = wsinn_net_memory_estimate (wsimrcnn_net (self->net, 0), (int) n,
      height, width, 0);
  engine += wsinn_net_memory_estimate (wsimrcnn_net (self->net, 1),
      (int) n * P, bp, bp, 0);
  engine += wsinn_net_memory_estimate (wsimrcnn_net (self->net, 2),
      (int) n * D, mp, mp, 0);
  /* RoIAlign inputs/outputs of the heads */
  rois = (gdouble) n * MAX (P, D) * cfg->spec.fpn_channels * MAX (bp * bp,
      mp * mp) * 2 * sizeof (gfloat);
  arrays = (gdouble) n * width * height * 3 * sizeof (gfloat)
      + (gdouble) n * D * (ms * ms + 6) * sizeof (gfloat)
      + (gdouble) width * height * sizeof (gfloat);
  return engine + rois + arrays;
}

static gboolean
ensure_batch_arrays (GstSegmentMaskrcnn * self, guint n, gint D)
{
  const gsize ms = 2 * (gsize) self->mi.cfg.mask_pool;
  const gsize npix = (gsize) self->width * self->height;

  if (gst_wsi_batch_grow ((gpointer *) & self->in_batch, &self->in_capacity,
          npix * 3 * n, sizeof (gfloat))
      && gst_wsi_batch_grow ((gpointer *) & self->boxes,
          &self->boxes_capacity, (gsize) n * D * 4, sizeof (gfloat))
      && gst_wsi_batch_grow ((gpointer *) & self->scores,
          &self->scores_capacity, (gsize) n * D, sizeof (gfloat))
      && gst_wsi_batch_grow ((gpointer *) & self->labels,
          &self->labels_capacity, (gsize) n * D, sizeof (gint32))
      && gst_wsi_batch_grow ((gpointer *) & self->masks,
          &self->masks_capacity, (gsize) n * D * ms * ms, sizeof (gfloat))
      && gst_wsi_batch_grow ((gpointer *) & self->counts,
          &self->counts_capacity, n, sizeof (gint))
      && gst_wsi_batch_grow ((gpointer *) & self->objects,
          &self->objects_capacity, (gsize) D, sizeof (WsiMrcnnObject)))
    return TRUE;
  GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
      ("Not enough memory for a batch of %u patches of %dx%d.", n,
          self->width, self->height), ("Lower batch-size or max-detections."));
  return FALSE;
}

/* Patch size and kind of image caps: one float32 tensor 3:W:H:1, or RGB
 * video (then @vinfo is filled). */
static gboolean
parse_patch_caps (GstCaps * caps, gint * width, gint * height,
    gboolean * is_tensor, GstVideoInfo * vinfo)
{
  GstStructure *s = gst_caps_get_structure (caps, 0);
  gint channels = 0;

  *is_tensor = gst_structure_has_name (s, "other/tensors");
  if (*is_tensor)
    return gst_wsi_tensor_structure_parse (s, &channels, width, height)
        && channels == 3;
  if (!gst_video_info_from_caps (vinfo, caps))
    return FALSE;
  *width = GST_VIDEO_INFO_WIDTH (vinfo);
  *height = GST_VIDEO_INFO_HEIGHT (vinfo);
  return TRUE;
}

static GstCaps *
make_src_caps (GstSegmentMaskrcnn * self, GstCaps * in_caps)
{
  GstStructure *s = gst_caps_get_structure (in_caps, 0);
  gint fn = 0, fd = 1;

  gst_structure_get_fraction (s, "framerate", &fn, &fd);
  return gst_caps_new_simple ("video/x-raw",
      "format", G_TYPE_STRING, "GRAY16_LE",
      "width", G_TYPE_INT, self->width,
      "height", G_TYPE_INT, self->height,
      "framerate", GST_TYPE_FRACTION, fn, fd, NULL);
}

static gboolean
set_input_caps (GstSegmentMaskrcnn * self, GstCaps * caps)
{
  const WsiModelInfo *info;
  GstVideoInfo vinfo;
  GstCaps *src_caps;
  gboolean is_tensor;
  gint width = 0, height = 0;
  guint batch_size;
  guint64 max_memory;

  self->input_ok = FALSE;
  if (!ensure_model (self))
    return FALSE;
  info = model_info (self);
  if (!parse_patch_caps (caps, &width, &height, &is_tensor, &vinfo)) {
    if (is_tensor)
      GST_ELEMENT_ERROR (self, STREAM, FORMAT,
          ("segment-maskrcnn takes one float32 tensor with dimensions "
              "3:W:H:1 (interleaved RGB, as colornorm emits), got %"
              GST_PTR_FORMAT, caps), (NULL));
    return FALSE;
  }
  if (info->size_multiple > 1 && (width % info->size_multiple
          || height % info->size_multiple)) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT,
        ("Patch size %dx%d does not suit Mask R-CNN model %s: sides must be "
            "multiples of %d.", width, height, self->model_path,
            info->size_multiple),
        ("Set patchify patch-size to a multiple of %d.", info->size_multiple));
    return FALSE;
  }
  GST_OBJECT_LOCK (self);
  batch_size = self->batch_size;
  max_memory = self->max_memory;
  GST_OBJECT_UNLOCK (self);
  if (!gst_wsi_batch_check_memory (self->batch, batch_size, width, height,
          estimate_batch_bytes (self, width, height, batch_size), max_memory))
    return FALSE;
  /* patches of the old size go out before the size changes */
  if ((width != self->width || height != self->height
          || is_tensor != self->input_is_tensor)
      && gst_wsi_batch_drain (self->batch) != GST_FLOW_OK)
    return FALSE;
  self->width = width;
  self->height = height;
  self->input_is_tensor = is_tensor;
  if (!is_tensor)
    self->in_vinfo = vinfo;
  self->input_ok = TRUE;
  src_caps = make_src_caps (self, caps);
  GST_DEBUG_OBJECT (self, "output caps %" GST_PTR_FORMAT, src_caps);
  gst_caps_replace (&self->src_caps, src_caps);
  gst_aggregator_set_src_caps (GST_AGGREGATOR (self), src_caps);
  gst_caps_unref (src_caps);
  send_classes (self);
  return TRUE;
}

/* The output follows from the input: never fixate the template. */
static GstFlowReturn
gst_segment_maskrcnn_update_src_caps (GstAggregator * agg, GstCaps * caps,
    GstCaps ** ret)
{
  GstSegmentMaskrcnn *self = GST_SEGMENT_MASKRCNN (agg);

  if (!self->src_caps)
    return GST_AGGREGATOR_FLOW_NEED_DATA;
  *ret = gst_caps_intersect (caps, self->src_caps);
  if (gst_caps_is_empty (*ret)) {
    gst_caps_replace (ret, NULL);
    return GST_FLOW_NOT_NEGOTIATED;
  }
  return GST_FLOW_OK;
}

static gboolean
gst_segment_maskrcnn_sink_event (GstAggregator * agg, GstAggregatorPad * pad,
    GstEvent * event)
{
  GstSegmentMaskrcnn *self = GST_SEGMENT_MASKRCNN (agg);
  GstCaps *caps;

  if (GST_EVENT_TYPE (event) == GST_EVENT_CAPS && pad == self->image_pad) {
    gst_event_parse_caps (event, &caps);
    if (!set_input_caps (self, caps)) {
      gst_event_unref (event);
      return FALSE;
    }
  } else if (GST_EVENT_TYPE (event) == GST_EVENT_SEGMENT
      && pad == self->image_pad && self->mode == MRCNN_MODE_INFER) {
    const GstSegment *segment;
    gst_event_parse_segment (event, &segment);
    if (segment->format == GST_FORMAT_TIME)
      gst_aggregator_update_segment (agg, segment);
  }
  return GST_AGGREGATOR_CLASS (gst_segment_maskrcnn_parent_class)->sink_event
      (agg, pad, event);
}

/* One patch into the model's input (NHWC float): RGB with the model's
 * preprocessing, tensors as they are. */
static gboolean
fill_input (GstSegmentMaskrcnn * self, GstBuffer * buf, gfloat * dst)
{
  const gsize n = (gsize) self->width * self->height * 3;

  if (self->input_is_tensor) {
    if (gst_buffer_get_size (buf) != n * sizeof (gfloat)) {
      GST_ELEMENT_ERROR (self, STREAM, FORMAT,
          ("Tensor buffer of %" G_GSIZE_FORMAT " bytes, expected %"
              G_GSIZE_FORMAT " for 3:%d:%d:1 float32.",
              gst_buffer_get_size (buf), n * sizeof (gfloat), self->width,
              self->height), (NULL));
      return FALSE;
    }
    gst_buffer_extract (buf, 0, dst, n * sizeof (gfloat));
  } else {
    GstVideoFrame frame;
    if (!gst_video_frame_map (&frame, &self->in_vinfo, buf, GST_MAP_READ)) {
      GST_ELEMENT_ERROR (self, STREAM, FORMAT,
          ("Could not map an RGB frame of %dx%d.", self->width, self->height),
          (NULL));
      return FALSE;
    }
    wsi_model_preprocess (model_info (self), GST_VIDEO_FRAME_PLANE_DATA
        (&frame, 0), GST_VIDEO_FRAME_PLANE_STRIDE (&frame, 0), self->width,
        self->height, dst);
    gst_video_frame_unmap (&frame);
  }
  return TRUE;
}

/* The label patch of one image's detections, with a detection meta per
 * painted instance (box: the detector's, in patch pixels). */
static GstBuffer *
make_output (GstSegmentMaskrcnn * self, guint b, gint D, gint count)
{
  const WsiModelInfo *info = model_info (self);
  const gint ms = 2 * self->mi.cfg.mask_pool;
  const gsize stride = (gsize) self->width * 2;
  GstBuffer *out = gst_buffer_new_allocate (NULL, stride * self->height,
      NULL);
  GstMapInfo map;
  gchar err[256] = "";
  gint n_obj;

  gst_buffer_map (out, &map, GST_MAP_WRITE);
  n_obj = wsimrcnn_paint (self->boxes + (gsize) b * D * 4,
      self->scores + (gsize) b * D, self->labels + (gsize) b * D,
      self->masks + (gsize) b * D * ms * ms, ms, NULL, count, self->width,
      self->height, self->mi.mask_threshold, (guint16 *) map.data, stride,
      self->objects, err, sizeof err);
  gst_buffer_unmap (out, &map);
  if (n_obj < 0) {
    gst_buffer_unref (out);
    GST_ELEMENT_ERROR (self, LIBRARY, FAILED,
        ("Painting the instances failed: %s", err), (NULL));
    return NULL;
  }
  for (gint i = 0; i < n_obj; i++) {
    const WsiMrcnnObject *o = &self->objects[i];
    const gchar *name = o->class_id >= 0 && o->class_id < info->n_classes ?
        info->class_names[o->class_id] : NULL;
    gst_wsi_detection_meta_add (out, o->id, o->class_id, name, o->score,
        o->box[0], o->box[1], MIN (o->box[2], (gfloat) self->width),
        MIN (o->box[3], (gfloat) self->height));
  }
  return out;
}

/* GstWsiBatchRunFunc of inference: one detection pass over the batch, one
 * label patch per input, in order. */
static GstFlowReturn
run_inference (GstWsiBatch * batch, guint n, GstBuffer * const *images,
    GstBuffer * const *partners, gpointer user_data)
{
  GstSegmentMaskrcnn *self = user_data;
  const gsize in_elems = (gsize) self->width * self->height * 3;
  GstFlowReturn ret = GST_FLOW_OK;
  gchar err[512] = "";
  gint D;

  if (!apply_detection_settings (self))
    return GST_FLOW_ERROR;
  D = self->applied_max;
  if (!ensure_batch_arrays (self, n, D))
    return GST_FLOW_ERROR;
  for (guint i = 0; i < n; i++)
    if (!fill_input (self, images[i], self->in_batch + in_elems * i))
      return GST_FLOW_ERROR;
  if (self->threads > 0)
    wsinn_set_num_threads ((int) self->threads);
  if (wsimrcnn_detect_batch (self->net, self->in_batch, (int) n, self->height,
          self->width, self->boxes, self->scores, self->labels, self->masks,
          NULL, self->counts, err, sizeof err) != 0) {
    GST_ELEMENT_ERROR (self, LIBRARY, FAILED, ("Inference failed: %s", err),
        (NULL));
    return GST_FLOW_ERROR;
  }
  for (guint i = 0; i < n && ret == GST_FLOW_OK; i++) {
    GstBuffer *out = make_output (self, i, D, self->counts[i]);
    if (!out)
      return GST_FLOW_ERROR;
    ret = gst_wsi_batch_finish_buffer (batch, out, images[i], self->width,
        self->height, !self->input_is_tensor);
  }
  return ret;
}

/* Warns once per slide when the patches' pixel size is far from the one
 * the model was trained at (both known). */
static void
check_resolution (GstSegmentMaskrcnn * self, GstBuffer * buf)
{
  const GstWsiTileMeta *m = gst_buffer_get_wsi_tile_meta (buf);
  const gdouble model_mpp = model_info (self)->mpp;
  gdouble mpp;

  if (!m || model_mpp <= 0 || m->mpp_x <= 0
      || g_strcmp0 (m->slide, self->resolution_checked) == 0)
    return;
  g_free (self->resolution_checked);
  self->resolution_checked = g_strdup (m->slide);
  mpp = m->mpp_x * m->downsample;
  if (mpp > 1.25 * model_mpp || mpp < 0.8 * model_mpp)
    GST_ELEMENT_WARNING (self, STREAM, FORMAT,
        ("Patches of '%s' have %.3f um/px but the model was trained at "
            "%.3f um/px.", m->slide, mpp, model_mpp),
        ("Read the slide at the model's resolution: slidesrc "
            "target-mpp=%g.", model_mpp));
}

static gboolean
accept_patch (GstWsiBatch * batch, GstBuffer * buf, gpointer user_data)
{
  GstSegmentMaskrcnn *self = user_data;

  if (!self->net || !self->input_ok) {
    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION,
        ("Patches arrived without accepted caps."), (NULL));
    return FALSE;
  }
  check_resolution (self, buf);
  return TRUE;
}

static GstFlowReturn
gst_segment_maskrcnn_aggregate (GstAggregator * agg, gboolean timeout)
{
  GstSegmentMaskrcnn *self = GST_SEGMENT_MASKRCNN (agg);

  return gst_wsi_batch_aggregate (self->batch, self->image_pad, timeout);
}

static GstClockTime
gst_segment_maskrcnn_get_next_time (GstAggregator * agg)
{
  GstSegmentMaskrcnn *self = GST_SEGMENT_MASKRCNN (agg);

  if (self->mode != MRCNN_MODE_INFER)
    return GST_CLOCK_TIME_NONE;
  return gst_wsi_batch_next_time (self->batch, self->image_pad);
}

static gboolean
gst_segment_maskrcnn_src_event (GstAggregator * agg, GstEvent * event)
{
  if (gst_wsi_aggregator_refuse_seek (agg, event))
    return FALSE;
  return GST_AGGREGATOR_CLASS (gst_segment_maskrcnn_parent_class)->src_event
      (agg, event);
}

static gboolean
gst_segment_maskrcnn_start (GstAggregator * agg)
{
  GstSegmentMaskrcnn *self = GST_SEGMENT_MASKRCNN (agg);

  gst_wsi_set_running (GST_ELEMENT (self), &self->running, TRUE);
  gst_wsi_batch_reset_stats (self->batch);
  gst_wsi_batch_set_size (self->batch, self->batch_size);
  gst_wsi_batch_set_timeout (self->batch, self->mode == MRCNN_MODE_INFER ?
      self->batch_timeout : 0);
  self->input_ok = FALSE;
  g_clear_pointer (&self->resolution_checked, g_free);
  /* TODO(train): the shared train-mode pieces (gst/gstwsitrain) and the
   * Mask R-CNN trainer adapter are not in the tree yet */
  if (self->mode == MRCNN_MODE_TRAIN) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("mode=train is not available in this build of segment-maskrcnn."),
        ("Train with models/reference (PyTorch) and export the model file; "
            "see docs/segment-maskrcnn.md."));
    gst_wsi_set_running (GST_ELEMENT (self), &self->running, FALSE);
    return FALSE;
  }
  if (!ensure_model (self)) {
    /* stop() does not follow a failed start() */
    gst_wsi_set_running (GST_ELEMENT (self), &self->running, FALSE);
    return FALSE;
  }
  return TRUE;
}

static void
free_batch_arrays (GstSegmentMaskrcnn * self)
{
  g_clear_pointer (&self->in_batch, g_free);
  g_clear_pointer (&self->boxes, g_free);
  g_clear_pointer (&self->scores, g_free);
  g_clear_pointer (&self->labels, g_free);
  g_clear_pointer (&self->masks, g_free);
  g_clear_pointer (&self->counts, g_free);
  g_clear_pointer (&self->objects, g_free);
  self->in_capacity = self->boxes_capacity = self->scores_capacity = 0;
  self->labels_capacity = self->masks_capacity = self->counts_capacity = 0;
  self->objects_capacity = 0;
}

static void
free_model (GstSegmentMaskrcnn * self)
{
  g_clear_pointer (&self->net, wsimrcnn_free);
  if (self->have_info)
    wsimrcnn_model_info_clear (&self->mi);
  self->have_info = FALSE;
  memset (&self->mi, 0, sizeof self->mi);
}

static gboolean
gst_segment_maskrcnn_stop (GstAggregator * agg)
{
  GstSegmentMaskrcnn *self = GST_SEGMENT_MASKRCNN (agg);
  gchar *classes;

  gst_wsi_batch_clear (self->batch);
  free_batch_arrays (self);
  GST_OBJECT_LOCK (self);
  classes = g_steal_pointer (&self->classes);
  GST_OBJECT_UNLOCK (self);
  g_free (classes);
  gst_clear_event (&self->classes_event);
  gst_clear_event (&self->instances_event);
  free_model (self);
  gst_caps_replace (&self->src_caps, NULL);
  self->width = self->height = 0;
  gst_wsi_set_running (GST_ELEMENT (self), &self->running, FALSE);
  return TRUE;
}

/* A flushing seek: patches waiting for a batch are dropped. */
static GstFlowReturn
gst_segment_maskrcnn_flush (GstAggregator * agg)
{
  GstSegmentMaskrcnn *self = GST_SEGMENT_MASKRCNN (agg);
  GstAggregatorClass *parent =
      GST_AGGREGATOR_CLASS (gst_segment_maskrcnn_parent_class);

  gst_wsi_batch_clear (self->batch);
  return parent->flush ? parent->flush (agg) : GST_FLOW_OK;
}

static void
gst_segment_maskrcnn_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec)
{
  GstSegmentMaskrcnn *self = GST_SEGMENT_MASKRCNN (object);

  if (gst_wsi_property_refused (GST_ELEMENT (self), &self->running, pspec))
    return;
  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODEL:
      g_free (self->model_path);
      self->model_path = g_value_dup_string (value);
      break;
    case PROP_SCORE_THRESHOLD:
      self->score_threshold = g_value_get_double (value);
      break;
    case PROP_NMS_IOU:
      self->nms_iou = g_value_get_double (value);
      break;
    case PROP_MAX_DETECTIONS:
      self->max_detections = g_value_get_uint (value);
      break;
    case PROP_BATCH_SIZE:
      self->batch_size = g_value_get_uint (value);
      break;
    case PROP_BATCH_TIMEOUT:
      self->batch_timeout = g_value_get_uint64 (value);
      break;
    case PROP_THREADS:
      self->threads = g_value_get_uint (value);
      break;
    case PROP_MAX_MEMORY:
      self->max_memory = g_value_get_uint64 (value);
      break;
    case PROP_MODE:
      self->mode = g_value_get_enum (value);
      break;
    case PROP_POST_MESSAGES:
      g_atomic_int_set (&self->post_messages, g_value_get_boolean (value));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_segment_maskrcnn_get_property (GObject * object, guint prop_id,
    GValue * value, GParamSpec * pspec)
{
  GstSegmentMaskrcnn *self = GST_SEGMENT_MASKRCNN (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODEL:
      g_value_set_string (value, self->model_path);
      break;
    case PROP_SCORE_THRESHOLD:
      g_value_set_double (value, self->score_threshold);
      break;
    case PROP_NMS_IOU:
      g_value_set_double (value, self->nms_iou);
      break;
    case PROP_MAX_DETECTIONS:
      g_value_set_uint (value, self->max_detections);
      break;
    case PROP_BATCH_SIZE:
      g_value_set_uint (value, self->batch_size);
      break;
    case PROP_BATCH_TIMEOUT:
      g_value_set_uint64 (value, self->batch_timeout);
      break;
    case PROP_THREADS:
      g_value_set_uint (value, self->threads);
      break;
    case PROP_MAX_MEMORY:
      g_value_set_uint64 (value, self->max_memory);
      break;
    case PROP_CLASSES:
      g_value_set_string (value, self->classes ? self->classes : "");
      break;
    case PROP_MODE:
      g_value_set_enum (value, self->mode);
      break;
    case PROP_POST_MESSAGES:
      g_value_set_boolean (value, g_atomic_int_get (&self->post_messages));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_segment_maskrcnn_finalize (GObject * object)
{
  GstSegmentMaskrcnn *self = GST_SEGMENT_MASKRCNN (object);

  g_free (self->model_path);
  g_free (self->classes);
  g_free (self->resolution_checked);
  gst_clear_event (&self->classes_event);
  gst_clear_event (&self->instances_event);
  free_batch_arrays (self);
  free_model (self);
  gst_wsi_batch_free (self->batch);
  gst_caps_replace (&self->src_caps, NULL);
  G_OBJECT_CLASS (gst_segment_maskrcnn_parent_class)->finalize (object);
}

#define READY_FLAGS (G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | \
    GST_PARAM_MUTABLE_READY)
#define PLAYING_FLAGS (G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | \
    GST_PARAM_MUTABLE_PLAYING)

static void
gst_segment_maskrcnn_class_init (GstSegmentMaskrcnnClass * klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstAggregatorClass *agg_class = GST_AGGREGATOR_CLASS (klass);

  GST_DEBUG_CATEGORY_INIT (gst_segment_maskrcnn_debug, "segment-maskrcnn", 0,
      "Mask R-CNN instance segmentation");

  gobject_class->set_property = gst_segment_maskrcnn_set_property;
  gobject_class->get_property = gst_segment_maskrcnn_get_property;
  gobject_class->finalize = gst_segment_maskrcnn_finalize;

  g_object_class_install_property (gobject_class, PROP_MODEL,
      g_param_spec_string ("model", "Model",
          "Mask R-CNN model file (.safetensors, arch maskrcnn): backbone, "
          "anchors, thresholds, classes and preprocessing", NULL,
          READY_FLAGS));
  g_object_class_install_property (gobject_class, PROP_SCORE_THRESHOLD,
      g_param_spec_double ("score-threshold", "Score threshold",
          "Smallest class score a detection keeps (-1: the model file's "
          "score_threshold)", -1.0, 1.0, -1.0, PLAYING_FLAGS));
  g_object_class_install_property (gobject_class, PROP_NMS_IOU,
      g_param_spec_double ("nms-iou", "NMS IoU",
          "Per-class non-maximum suppression: a detection overlapping a "
          "higher-scoring one by more than this IoU is dropped (0: the model "
          "file's nms_iou)", 0.0, 1.0, 0.0, PLAYING_FLAGS));
  g_object_class_install_property (gobject_class, PROP_MAX_DETECTIONS,
      g_param_spec_uint ("max-detections", "Maximum detections",
          "Most detections per patch (0: the model file's max_detections, at "
          "most 65534)", 0, MAX_DETECTIONS_LIMIT, 0, READY_FLAGS));
  g_object_class_install_property (gobject_class, PROP_BATCH_SIZE,
      g_param_spec_uint ("batch-size", "Batch size",
          "Patches per forward pass", 1, 256, DEFAULT_BATCH_SIZE,
          READY_FLAGS));
  g_object_class_install_property (gobject_class, PROP_BATCH_TIMEOUT,
      g_param_spec_uint64 ("batch-timeout", "Batch timeout",
          "Live streams: longest time (ns) a partial batch waits for more "
          "patches (becomes the aggregator latency when upstream is live)", 0,
          G_MAXUINT64, DEFAULT_BATCH_TIMEOUT, READY_FLAGS));
  g_object_class_install_property (gobject_class, PROP_THREADS,
      g_param_spec_uint ("threads", "Threads",
          "Compute threads for the engine (0 = all cores)", 0, 1024, 0,
          READY_FLAGS));
  g_object_class_install_property (gobject_class, PROP_MAX_MEMORY,
      g_param_spec_uint64 ("max-memory", "Maximum memory",
          "Largest estimated memory (bytes) of one batch: the engine's "
          "activations and the batch arrays; a patch size, batch-size or "
          "max-detections needing more is refused", 1 << 20, G_MAXUINT64,
          DEFAULT_MAX_MEMORY, READY_FLAGS));
  g_object_class_install_property (gobject_class, PROP_CLASSES,
      g_param_spec_string ("classes", "Classes",
          "Class names and colours of the loaded model (name:#rrggbb,...)",
          NULL, G_PARAM_READABLE | G_PARAM_STATIC_STRINGS));
  g_object_class_install_property (gobject_class, PROP_MODE,
      g_param_spec_enum ("mode", "Mode", "Inference, or training with the "
          "annotation pad", GST_TYPE_SEGMENT_MASKRCNN_MODE, MRCNN_MODE_INFER,
          READY_FLAGS));
  g_object_class_install_property (gobject_class, PROP_POST_MESSAGES,
      gst_wsi_param_spec_post_messages ());

  gst_element_class_add_static_pad_template_with_gtype (element_class,
      &sink_template, GST_TYPE_AGGREGATOR_PAD);
  gst_element_class_add_static_pad_template_with_gtype (element_class,
      &src_template, GST_TYPE_AGGREGATOR_PAD);
  gst_element_class_set_static_metadata (element_class,
      "Instance segmentation (Mask R-CNN)", "Filter/Analyzer/Video",
      "Detects and segments objects in slide patches with Mask R-CNN; emits "
      "16-bit instance label patches with one region-of-interest meta per "
      "object", "gst-wsiseg developers");

  agg_class->aggregate = GST_DEBUG_FUNCPTR (gst_segment_maskrcnn_aggregate);
  agg_class->sink_event = GST_DEBUG_FUNCPTR (gst_segment_maskrcnn_sink_event);
  agg_class->start = GST_DEBUG_FUNCPTR (gst_segment_maskrcnn_start);
  agg_class->stop = GST_DEBUG_FUNCPTR (gst_segment_maskrcnn_stop);
  agg_class->src_event = GST_DEBUG_FUNCPTR (gst_segment_maskrcnn_src_event);
  agg_class->flush = GST_DEBUG_FUNCPTR (gst_segment_maskrcnn_flush);
  agg_class->get_next_time =
      GST_DEBUG_FUNCPTR (gst_segment_maskrcnn_get_next_time);
  agg_class->update_src_caps =
      GST_DEBUG_FUNCPTR (gst_segment_maskrcnn_update_src_caps);

  gst_type_mark_as_plugin_api (GST_TYPE_SEGMENT_MASKRCNN_MODE, 0);
}

static void
gst_segment_maskrcnn_init (GstSegmentMaskrcnn * self)
{
  GstPadTemplate *templ =
      gst_element_class_get_pad_template (GST_ELEMENT_GET_CLASS (self), "sink");
  GstPad *pad = g_object_new (GST_TYPE_AGGREGATOR_PAD, "name", "sink",
      "direction", GST_PAD_SINK, "template", templ, NULL);

  gst_element_add_pad (GST_ELEMENT (self), pad);
  self->image_pad = GST_AGGREGATOR_PAD (pad);
  self->score_threshold = -1.0;
  self->nms_iou = 0.0;
  self->max_detections = 0;
  self->batch_size = DEFAULT_BATCH_SIZE;
  self->batch_timeout = DEFAULT_BATCH_TIMEOUT;
  self->max_memory = DEFAULT_MAX_MEMORY;
  self->batch = gst_wsi_batch_new (GST_AGGREGATOR (self), run_inference,
      accept_patch, self);
  gst_wsi_batch_set_stats (self->batch, "segment-maskrcnn",
      &self->post_messages);
}
