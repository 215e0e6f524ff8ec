#include "gstwsitilemeta.h"

#include <gst/video/video.h>

#include <math.h>
#include <string.h>

GType
gst_wsi_tile_meta_api_get_type (void)
{
  static GType type = 0;
  static const gchar *tags[] = { NULL };

  if (g_once_init_enter (&type)) {
    /* The plugin and a test binary may both carry this code: reuse the
     * type whoever came first registered. */
    GType t = g_type_from_name ("GstWsiTileMetaAPI");
    if (!t)
      t = gst_meta_api_type_register ("GstWsiTileMetaAPI", tags);
    g_once_init_leave (&type, t);
  }
  return type;
}

static gboolean
tile_meta_init (GstMeta * meta, gpointer params, GstBuffer * buffer)
{
  GstWsiTileMeta *m = (GstWsiTileMeta *) meta;

  memset ((guint8 *) m + sizeof (GstMeta), 0,
      sizeof (GstWsiTileMeta) - sizeof (GstMeta));
  m->downsample = 1.0;
  m->tissue_fraction = -1.0;
  return TRUE;
}

static void
tile_meta_free (GstMeta * meta, GstBuffer * buffer)
{
  GstWsiTileMeta *m = (GstWsiTileMeta *) meta;

  g_clear_pointer (&m->slide, g_free);
}

static void
tile_meta_copy_fields (GstWsiTileMeta * dst, const GstWsiTileMeta * src)
{
  gchar *slide = g_strdup (src->slide);

  g_free (dst->slide);
  memcpy ((guint8 *) dst + sizeof (GstMeta), (const guint8 *) src +
      sizeof (GstMeta), sizeof (GstWsiTileMeta) - sizeof (GstMeta));
  dst->slide = slide;
}

/* The meta describes where the pixels come from: copies and format
 * conversions keep it as is; a scale rewrites sizes and downsample so that
 * level-0 coordinates stay right. Elements that cut or pad (patchify)
 * rewrite it themselves. */
static gboolean
tile_meta_transform (GstBuffer * dest, GstMeta * meta, GstBuffer * buffer,
    GQuark type, gpointer data)
{
  GstWsiTileMeta *src = (GstWsiTileMeta *) meta;
  GstWsiTileMeta *m;

  if (GST_META_TRANSFORM_IS_COPY (type)) {
    GstMetaTransformCopy *copy = data;
    if (copy->region)
      return TRUE;
  }
  if (gst_buffer_get_wsi_tile_meta (dest))
    return TRUE;
  m = gst_wsi_tile_meta_add_copy (dest, src);
  if (!m)
    return FALSE;
  if (GST_VIDEO_META_TRANSFORM_IS_SCALE (type)) {
    GstVideoMetaTransform *t = data;
    gst_wsi_tile_meta_fit_to_size (m, GST_VIDEO_INFO_WIDTH (t->out_info),
        GST_VIDEO_INFO_HEIGHT (t->out_info));
  }
  return TRUE;
}

const GstMetaInfo *
gst_wsi_tile_meta_get_info (void)
{
  static const GstMetaInfo *info = NULL;

  if (g_once_init_enter ((GstMetaInfo **) & info)) {
    const GstMetaInfo *mi = gst_meta_get_info ("GstWsiTileMeta");
    if (!mi)
      mi = gst_meta_register (GST_WSI_TILE_META_API_TYPE,
        "GstWsiTileMeta", sizeof (GstWsiTileMeta), tile_meta_init,
        tile_meta_free, tile_meta_transform);
    g_once_init_leave ((GstMetaInfo **) & info, (GstMetaInfo *) mi);
  }
  return info;
}

GstWsiTileMeta *
gst_wsi_tile_meta_add (GstBuffer * buffer)
{
  g_return_val_if_fail (GST_IS_BUFFER (buffer), NULL);
  return (GstWsiTileMeta *) gst_buffer_add_meta (buffer,
      GST_WSI_TILE_META_INFO, NULL);
}

GstWsiTileMeta *
gst_wsi_tile_meta_add_copy (GstBuffer * buffer, const GstWsiTileMeta * src)
{
  GstWsiTileMeta *m = gst_wsi_tile_meta_add (buffer);

  if (m)
    tile_meta_copy_fields (m, src);
  return m;
}

void
gst_wsi_tile_meta_set_slide (GstWsiTileMeta * meta, const gchar * slide)
{
  gchar *s = g_strdup (slide);

  g_free (meta->slide);
  meta->slide = s;
}

void
gst_wsi_tile_meta_region_level_size (const GstWsiTileMeta * meta,
    gint64 * width, gint64 * height)
{
  gdouble ds = meta->downsample > 0 ? meta->downsample : 1.0;

  /* the producer knows the level's real size (a non-whole downsample makes
   * ceil one pixel too many at the slide edge) */
  if (width)
    *width = meta->level_width > 0 ? meta->level_width :
        (gint64) ceil (meta->region_width / ds - 1e-9);
  if (height)
    *height = meta->level_height > 0 ? meta->level_height :
        (gint64) ceil (meta->region_height / ds - 1e-9);
}

gboolean
gst_wsi_tile_meta_fit_to_size (GstWsiTileMeta * meta, gint width, gint height)
{
  gdouble sx, sy;

  if (width <= 0 || height <= 0 || meta->width <= 0 || meta->height <= 0)
    return FALSE;
  if (width == meta->width && height == meta->height)
    return FALSE;
  sx = (gdouble) width / meta->width;
  sy = (gdouble) height / meta->height;
  meta->valid_width = (gint) lround (meta->valid_width * sx);
  meta->valid_height = (gint) lround (meta->valid_height * sy);
  meta->pad_left = (gint) lround (meta->pad_left * sx);
  meta->pad_top = (gint) lround (meta->pad_top * sy);
  meta->overlap = (gint) lround (meta->overlap * sx);
  if (meta->level_width > 0)
    meta->level_width = MAX (1, (gint64) llround (meta->level_width * sx));
  if (meta->level_height > 0)
    meta->level_height = MAX (1, (gint64) llround (meta->level_height * sy));
  meta->downsample /= sx;
  meta->width = width;
  meta->height = height;
  return TRUE;
}
