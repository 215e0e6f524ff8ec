/* The image-patch input of segmentation elements: gstwsipatch.h. */
#include <errno.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "gstwsibatch.h"
#include "gstwsipatch.h"
#include "gstwsitensor.h"
#include "gstwsitilemeta.h"

gboolean
gst_wsi_patch_caps_parse (GstElement * element, GstCaps * caps,
    gint * width, gint * height, gboolean * is_tensor, GstVideoInfo * vinfo)
{
  GstStructure *s = gst_caps_get_structure (caps, 0);
  gint channels = 0;

  *is_tensor = gst_structure_has_name (s, "other/tensors");
  if (*is_tensor) {
    if (gst_wsi_tensor_structure_parse (s, &channels, width, height)
        && channels == 3)
      return TRUE;
    if (element) {
      GstElementFactory *f = gst_element_get_factory (element);
      GST_ELEMENT_ERROR (element, STREAM, FORMAT,
          ("%s takes one float32 tensor with dimensions 3:W:H:1 "
              "(interleaved RGB, as colornorm emits), got %" GST_PTR_FORMAT,
              f ? GST_OBJECT_NAME (f) : GST_ELEMENT_NAME (element), caps),
          (NULL));
    }
    return FALSE;
  }
  if (!gst_video_info_from_caps (vinfo, caps))
    return FALSE;
  *width = GST_VIDEO_INFO_WIDTH (vinfo);
  *height = GST_VIDEO_INFO_HEIGHT (vinfo);
  return TRUE;
}

gboolean
gst_wsi_patch_input_differs (const GstWsiPatchInput * in, gint width,
    gint height, gboolean is_tensor)
{
  return width != in->width || height != in->height
      || is_tensor != in->is_tensor;
}

void
gst_wsi_patch_input_set (GstWsiPatchInput * in, gint width, gint height,
    gboolean is_tensor, const GstVideoInfo * vinfo)
{
  in->width = width;
  in->height = height;
  in->is_tensor = is_tensor;
  if (!is_tensor)
    in->vinfo = *vinfo;
}

static gboolean
fill_one (GstWsiPatchInput * in, GstElement * element,
    const WsiModelInfo * info, GstBuffer * buf, gfloat * dst)
{
  gsize n = (gsize) in->width * in->height * 3;
  GstVideoFrame frame;

  if (in->is_tensor) {
    if (gst_buffer_get_size (buf) != n * sizeof (gfloat)) {
      GST_ELEMENT_ERROR (element, STREAM, FORMAT,
          ("Tensor buffer of %" G_GSIZE_FORMAT " bytes, expected %"
              G_GSIZE_FORMAT " for 3:%d:%d:1 float32.",
              gst_buffer_get_size (buf), n * sizeof (gfloat), in->width,
              in->height), (NULL));
      return FALSE;
    }
    gst_buffer_extract (buf, 0, dst, n * sizeof (gfloat));
    return TRUE;
  }
  if (!gst_video_frame_map (&frame, &in->vinfo, buf, GST_MAP_READ)) {
    GST_ELEMENT_ERROR (element, STREAM, FORMAT,
        ("Could not map an RGB frame of %dx%d.", in->width, in->height),
        (NULL));
    return FALSE;
  }
  wsi_model_preprocess (info, GST_VIDEO_FRAME_PLANE_DATA (&frame, 0),
      GST_VIDEO_FRAME_PLANE_STRIDE (&frame, 0), in->width, in->height, dst);
  gst_video_frame_unmap (&frame);
  return TRUE;
}

gfloat *
gst_wsi_patch_input_fill (GstWsiPatchInput * in, GstElement * element,
    const WsiModelInfo * info, guint n, GstBuffer * const *images)
{
  const gsize elems = (gsize) in->width * in->height * 3;

  if (!gst_wsi_batch_grow ((gpointer *) & in->batch, &in->capacity,
          elems * n, sizeof (gfloat))) {
    GST_ELEMENT_ERROR (element, RESOURCE, NO_SPACE_LEFT,
        ("Not enough memory for a batch of %u patches of %dx%d.", n,
            in->width, in->height), ("Lower batch-size or the patch size."));
    return NULL;
  }
  for (guint i = 0; i < n; i++)
    if (!fill_one (in, element, info, images[i], in->batch + elems * i))
      return NULL;
  return in->batch;
}

void
gst_wsi_patch_input_check_resolution (GstWsiPatchInput * in,
    GstElement * element, GstBuffer * buf, gdouble model_mpp)
{
  const GstWsiTileMeta *m = gst_buffer_get_wsi_tile_meta (buf);
  gdouble mpp;

  if (!m || model_mpp <= 0 || m->mpp_x <= 0
      || g_strcmp0 (m->slide, in->resolution_checked) == 0)
    return;
  g_free (in->resolution_checked);
  in->resolution_checked = g_strdup (m->slide);
  mpp = m->mpp_x * m->downsample;
  if (mpp > 1.25 * model_mpp || mpp < 0.8 * model_mpp)
    GST_ELEMENT_WARNING (element, STREAM, FORMAT,
        ("Patches of '%s' have %.3f um/px but the model was trained at "
            "%.3f um/px.", m->slide, mpp, model_mpp),
        ("Read the slide at the model's resolution: slidesrc "
            "target-mpp=%g.", model_mpp));
}

void
gst_wsi_patch_input_clear (GstWsiPatchInput * in)
{
  g_clear_pointer (&in->batch, g_free);
  in->capacity = 0;
  g_clear_pointer (&in->resolution_checked, g_free);
}

gboolean
gst_wsi_report_unreadable (GstElement * element, const gchar * what,
    const gchar * path)
{
  if (!g_file_test (path, G_FILE_TEST_EXISTS)) {
    GST_ELEMENT_ERROR (element, RESOURCE, NOT_FOUND,
        ("%s \"%s\" does not exist.", what, path), (NULL));
    return TRUE;
  }
  if (g_file_test (path, G_FILE_TEST_IS_DIR)) {
    GST_ELEMENT_ERROR (element, RESOURCE, OPEN_READ,
        ("%s \"%s\" is a directory, not a model file.", what, path), (NULL));
    return TRUE;
  }
  if (g_access (path, R_OK) != 0) {
    gint e = errno;
    GST_ELEMENT_ERROR (element, RESOURCE, OPEN_READ,
        ("%s \"%s\" cannot be read: %s.", what, path, g_strerror (e)),
        (NULL));
    return TRUE;
  }
  return FALSE;
}
