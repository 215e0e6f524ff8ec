/* Tile metadata carried on every buffer from slidesrc onwards. */
#pragma once

#include <gst/gst.h>

G_BEGIN_DECLS

#define GST_WSI_TILE_META_API_TYPE (gst_wsi_tile_meta_api_get_type ())
#define GST_WSI_TILE_META_INFO (gst_wsi_tile_meta_get_info ())

typedef struct _GstWsiTileMeta GstWsiTileMeta;

/**
 * GstWsiTileMeta:
 * @slide: slide identity (the path OpenSlide / libpng opened), owned by the meta
 * @level: pyramid level the pixels come from
 * @downsample: level-0 pixels per level pixel
 * @x, @y: level-0 coordinates of the buffer's top-left pixel (may be negative
 *   for a patch whose padding starts before the slide edge)
 * @width, @height: buffer size in level pixels (including padding)
 * @valid_width, @valid_height: non-padded part, starting at the top-left
 * @col, @row: position in the grid the producer walked
 * @grid_cols, @grid_rows: size of that grid (0 when unknown, e.g. live)
 * @overlap: overlap between neighbouring buffers, in level pixels
 * @region_x, @region_y, @region_width, @region_height: region being walked,
 *   level-0 pixels
 * @slide_width, @slide_height: level-0 slide size
 * @mpp_x, @mpp_y: microns per level-0 pixel, 0 when unknown
 * @frame: sequence number of the buffer in its producer's output order
 * @tissue_fraction: fraction of tissue pixels measured by patchify, negative
 *   when not measured
 * @epoch: pass over the source's files the pixels were read in (slidesrc
 *   loop), from 0
 * @pad_left, @pad_top: padding before the valid area (reflect/constant padding
 *   at the top/left edge); the valid area is
 *   [pad_left, pad_left + valid_width) x [pad_top, pad_top + valid_height)
 * @level_width, @level_height: size of the region in the buffer's pixels as
 *   the producer streams it (slidesrc: OpenSlide's level size for a region
 *   reaching the slide edge at a non-whole downsample); 0 when unknown
 *
 * Coordinates of pixel (i, j) of the buffer in level-0 units are
 * x + i * downsample, y + j * downsample.
 */
struct _GstWsiTileMeta
{
  GstMeta meta;

  gchar *slide;
  gint level;
  gdouble downsample;
  gint64 x, y;
  gint width, height;
  gint valid_width, valid_height;
  gint pad_left, pad_top;
  gint col, row;
  gint grid_cols, grid_rows;
  gint overlap;
  gint64 region_x, region_y, region_width, region_height;
  gint64 slide_width, slide_height;
  gdouble mpp_x, mpp_y;
  guint64 frame;
  gdouble tissue_fraction;
  guint epoch;
  gint64 level_width, level_height;
};

GType gst_wsi_tile_meta_api_get_type (void);
const GstMetaInfo *gst_wsi_tile_meta_get_info (void);

/* Adds a zeroed meta (downsample 1, tissue_fraction -1). */
GstWsiTileMeta *gst_wsi_tile_meta_add (GstBuffer * buffer);
/* Adds a copy of @src (including the slide string). */
GstWsiTileMeta *gst_wsi_tile_meta_add_copy (GstBuffer * buffer,
    const GstWsiTileMeta * src);
void gst_wsi_tile_meta_set_slide (GstWsiTileMeta * meta, const gchar * slide);

#define gst_buffer_get_wsi_tile_meta(b) \
  ((GstWsiTileMeta *) gst_buffer_get_meta ((b), GST_WSI_TILE_META_API_TYPE))

/* Size of the region in level pixels: level_width/height when set, else
 * ceil (region / downsample). */
void gst_wsi_tile_meta_region_level_size (const GstWsiTileMeta * meta,
    gint64 * width, gint64 * height);

/* Rewrites sizes, padding, overlap and downsample after the pixels were
 * scaled to @width x @height, keeping level-0 coordinates right. Elements
 * call it when a buffer's negotiated size differs from the meta's (a
 * videoscale upstream keeps the meta unchanged). Returns TRUE if it changed
 * anything. */
gboolean gst_wsi_tile_meta_fit_to_size (GstWsiTileMeta * meta, gint width,
    gint height);

G_END_DECLS
