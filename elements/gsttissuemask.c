/* tissuemask: labels every pixel of an RGB frame as tissue (1) or
 * background (0) with the tissue test patchify uses (patch tissue, elements/core/wsitissue.h).
 * Output is GRAY8 of the same size; padding pixels (outside the valid area
 * of the tile meta) are 0. The tile meta is kept. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <gst/gst.h>
#include <gst/video/video.h>
#include <gst/video/gstvideofilter.h>
#include <string.h>

#include "gstwsiseg.h"
#include "gstwsitilemeta.h"
#include "wsitissue.h"

GST_DEBUG_CATEGORY_STATIC (gst_tissue_mask_debug);
#define GST_CAT_DEFAULT gst_tissue_mask_debug

#define GST_TYPE_TISSUE_MASK (gst_tissue_mask_get_type ())
G_DECLARE_FINAL_TYPE (GstTissueMask, gst_tissue_mask, GST, TISSUE_MASK,
    GstVideoFilter);

struct _GstTissueMask
{
  GstVideoFilter parent;

  gdouble threshold;
  WsiTissueTest test;
};

enum
{
  PROP_0,
  PROP_TISSUE_THRESHOLD,
};

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK, GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE ("RGB")));
static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC, GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE ("GRAY8")));

G_DEFINE_TYPE (GstTissueMask, gst_tissue_mask, GST_TYPE_VIDEO_FILTER);
GST_ELEMENT_REGISTER_DEFINE_WITH_CODE (tissuemask, "tissuemask",
    GST_RANK_NONE, GST_TYPE_TISSUE_MASK,
    GST_DEBUG_CATEGORY_INIT (gst_tissue_mask_debug, "tissuemask", 0,
        "tissue mask"));

static void
gst_tissue_mask_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec)
{
  GstTissueMask *self = GST_TISSUE_MASK (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_TISSUE_THRESHOLD:
      self->threshold = g_value_get_double (value);
      wsi_tissue_test_init (&self->test, self->threshold);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_tissue_mask_get_property (GObject * object, guint prop_id,
    GValue * value, GParamSpec * pspec)
{
  GstTissueMask *self = GST_TISSUE_MASK (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_TISSUE_THRESHOLD:
      g_value_set_double (value, self->threshold);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

/* RGB on one side, GRAY8 on the other, everything else unchanged. */
static GstCaps *
gst_tissue_mask_transform_caps (GstBaseTransform * trans,
    GstPadDirection direction, GstCaps * caps, GstCaps * filter)
{
  const gchar *format = direction == GST_PAD_SINK ? "GRAY8" : "RGB";
  GstCaps *res = gst_caps_copy (caps);
  guint i;

  for (i = 0; i < gst_caps_get_size (res); i++) {
    GstStructure *s = gst_caps_get_structure (res, i);
    gst_structure_set (s, "format", G_TYPE_STRING, format, NULL);
    gst_structure_remove_fields (s, "colorimetry", "chroma-site", NULL);
  }
  if (filter) {
    GstCaps *tmp = gst_caps_intersect_full (filter, res,
        GST_CAPS_INTERSECT_FIRST);
    gst_caps_unref (res);
    res = tmp;
  }
  return res;
}

static GstFlowReturn
gst_tissue_mask_transform_frame (GstVideoFilter * filter,
    GstVideoFrame * in, GstVideoFrame * out)
{
  GstTissueMask *self = GST_TISSUE_MASK (filter);
  gint width = GST_VIDEO_FRAME_WIDTH (in);
  gint height = GST_VIDEO_FRAME_HEIGHT (in);
  const guint8 *src = GST_VIDEO_FRAME_PLANE_DATA (in, 0);
  gint src_stride = GST_VIDEO_FRAME_PLANE_STRIDE (in, 0);
  guint8 *dst = GST_VIDEO_FRAME_PLANE_DATA (out, 0);
  gint dst_stride = GST_VIDEO_FRAME_PLANE_STRIDE (out, 0);
  GstWsiTileMeta *meta = gst_buffer_get_wsi_tile_meta (in->buffer);
  gint vx = 0, vy = 0, vw = width, vh = height, y;
  WsiTissueTest test;

  GST_OBJECT_LOCK (self);
  test = self->test;
  GST_OBJECT_UNLOCK (self);

  if (meta) {
    GstWsiTileMeta m = *meta;   /* shallow: only sizes are read */
    gst_wsi_tile_meta_fit_to_size (&m, width, height);
    vx = CLAMP (m.pad_left, 0, width);
    vy = CLAMP (m.pad_top, 0, height);
    vw = m.valid_width > 0 ? MIN (m.valid_width, width - vx) : width - vx;
    vh = m.valid_height > 0 ? MIN (m.valid_height, height - vy) : height - vy;
  }

  for (y = 0; y < height; y++)
    memset (dst + (gsize) y * dst_stride, 0, width);
  if (vw > 0 && vh > 0)
    wsi_tissue_count_rgb (&test, src + (gsize) vy * src_stride + vx * 3,
        vw, vh, src_stride, dst + (gsize) vy * dst_stride + vx, dst_stride);
  return GST_FLOW_OK;
}

static void
gst_tissue_mask_class_init (GstTissueMaskClass * klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstBaseTransformClass *trans_class = GST_BASE_TRANSFORM_CLASS (klass);
  GstVideoFilterClass *filter_class = GST_VIDEO_FILTER_CLASS (klass);

  gobject_class->set_property = gst_tissue_mask_set_property;
  gobject_class->get_property = gst_tissue_mask_get_property;

  g_object_class_install_property (gobject_class, PROP_TISSUE_THRESHOLD,
      g_param_spec_double ("tissue-threshold", "Tissue threshold",
          "A pixel is tissue when its largest channel optical density "
          "-log10((I+1)/256) exceeds this (and it is not near-black)",
          0.0, 3.0, WSI_TISSUE_DEFAULT_THRESHOLD,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_PLAYING));

  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);
  gst_element_class_set_static_metadata (element_class, "Tissue mask",
      "Filter/Analyzer/Video",
      "Labels pixels of RGB slide patches as tissue (1) or background (0), "
      "GRAY8 output, tile meta kept", "gst-wsiseg");

  trans_class->transform_caps =
      GST_DEBUG_FUNCPTR (gst_tissue_mask_transform_caps);
  filter_class->transform_frame =
      GST_DEBUG_FUNCPTR (gst_tissue_mask_transform_frame);
}

static void
gst_tissue_mask_init (GstTissueMask * self)
{
  self->threshold = WSI_TISSUE_DEFAULT_THRESHOLD;
  wsi_tissue_test_init (&self->test, self->threshold);
}
