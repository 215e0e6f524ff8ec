/* Pure helpers of labelpatch (no GStreamer objects): annotation path
 * patterns, nearest-neighbour label lookup, instance boundaries, replay of
 * geometric augmentation and polygon rasterisation. */
#pragma once

#include <glib.h>

#include "wsipng.h"             /* WsiLabelImage */

G_BEGIN_DECLS

#define WSI_ANNOT_ERROR (wsi_annot_error_quark ())
GQuark wsi_annot_error_quark (void);

/* Expands an annotation path pattern for one slide/image path.
 * Placeholders: {path} the slide path as given, {dir} its directory ("."
 * when it has none), {file} base name, {name} base name without its last
 * extension, {stem} base name without any extension, {ext} last extension
 * without the dot (may be empty); "{{" and "}}" are literal braces.
 * Returns NULL and sets @error for an unknown or unterminated placeholder.
 * With @slide NULL it only validates @pattern (returns "" on success). */
gchar *wsi_annot_expand_pattern (const gchar * pattern, const gchar * slide,
    GError ** error);

/* Where a patch sits, in level-0 pixels: pixel (i, j) of the patch has its
 * centre at (x + (i + 0.5) * downsample, y + (j + 0.5) * downsample). Pixels
 * outside [valid_x, valid_x + valid_w) x [valid_y, valid_y + valid_h) are
 * padding. scale_x/scale_y are label-image pixels per level-0 pixel. */
typedef struct
{
  gdouble x, y, downsample;
  gint width, height;
  gint valid_x, valid_y, valid_w, valid_h;
  gdouble scale_x, scale_y;
} WsiPatchGeom;

/* Nearest-neighbour lookup: patch pixel (i, j) takes the label pixel
 * (floor (cx * scale_x), floor (cy * scale_y)) of its centre (cx, cy); pixels
 * that are padding or fall outside the label image get @ignore. @dst has the
 * depth of @img. */
void wsi_annot_sample (const WsiLabelImage * img, const WsiPatchGeom * geom,
    guint ignore, gpointer dst, gsize dst_stride);

/* Marks as @ignore every pixel of @dst (@bpp 1 or 2) that is padding or whose
 * centre lies outside the level-0 rectangle [0, limit_w) x [0, limit_h)
 * (a limit <= 0 means unbounded). */
void wsi_annot_mask_invalid (const WsiPatchGeom * geom, gint64 limit_w,
    gint64 limit_h, guint bpp, guint ignore, gpointer dst, gsize dst_stride);

/* Classes of an instance map (0 background, >0 instance id):
 * 0 background, 1 interior, 2 boundary. An instance pixel is boundary when one
 * of its neighbours inside the image (4-neighbours for @connectivity 4,
 * 8-neighbours for 8) has a different value, background included. */
guint8 *wsi_annot_instance_classes (const guint16 * inst, gint width,
    gint height, gboolean boundary, gint connectivity);

/* Replays a geometric augmentation on a label patch of @width x @height
 * (before augmentation): first a left-right mirror (@flip_h), then an
 * upside-down mirror (@flip_v), then @rot90 quarter turns counter-clockwise
 * (numpy.rot90 with k = rot90; negative turns clockwise). The output is
 * height x width when the number of turns is odd. */
void wsi_annot_augment (const guint8 * src, gint width, gint height,
    gsize src_stride, guint bpp, gboolean flip_h, gboolean flip_v,
    gint rot90, guint8 * dst, gsize dst_stride);

/* Polygons in level-0 coordinates, rasterised with the even-odd rule at
 * pixel centres; holes are rings of the same polygon. */
typedef struct _WsiPolygonSet WsiPolygonSet;

WsiPolygonSet *wsi_polygon_set_new (void);
void wsi_polygon_set_free (WsiPolygonSet * set);
guint wsi_polygon_set_n_polygons (const WsiPolygonSet * set);
guint64 wsi_polygon_set_n_vertices (const WsiPolygonSet * set);
void wsi_polygon_set_begin (WsiPolygonSet * set, guint label);
/* @xy holds @n_points (x, y) pairs; a closing point equal to the first is
 * dropped. Returns FALSE (ring not added) when fewer than 3 points remain. */
gboolean wsi_polygon_set_add_ring (WsiPolygonSet * set, const gdouble * xy,
    guint n_points);
/* Ends the polygon begun last; one without rings is dropped. */
void wsi_polygon_set_end (WsiPolygonSet * set);
/* Paints every polygon's label, in the order they were added, into the 8-bit
 * patch @dst where its centre test holds (later polygons paint over earlier
 * ones). Only polygons whose bounding box meets the patch are looked at, and
 * a polygon with many edges keeps an index of its edges by horizontal band
 * (built when it ends), so a scanline tests only the edges near it. Returns
 * the number of polygons touching the patch. */
guint wsi_polygon_set_rasterise (WsiPolygonSet * set,
    const WsiPatchGeom * geom, guint8 * dst, gsize dst_stride);
/* Edges tested by every rasterise call so far (a cost counter for tests). */
guint64 wsi_polygon_set_edges_visited (const WsiPolygonSet * set);

G_END_DECLS
