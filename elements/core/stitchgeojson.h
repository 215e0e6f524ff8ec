/* stitchsink GeoJSON export: per-class regions of a label image that
 * arrives row by row, as QuPath-style features. No GStreamer inside.
 *
 * Objects are 8-connected sets of pixels of one label (label 0 is not
 * exported); holes are the 4-connected background regions they enclose.
 * Rings follow pixel edges (vertex (i, j) is the top-left corner of level
 * pixel (i, j)), are simple (rings may touch at single vertices) and keep
 * only corners; outer rings have a positive shoelace area in (x, y), holes a
 * negative one.
 *
 * Instance boundaries (boundary_class >= 1): pixels of that label are not
 * objects. Objects are the 8-connected components of the other non-zero
 * labels, each grown by up to boundary_grow 1-pixel steps into the boundary
 * pixels next to it (see stitchgeojson.c); boundary pixels no object reaches
 * are dropped. Rows are then traced boundary_grow rows late. */
#pragma once

#include <glib.h>

#include "stitchoverlay.h"

G_BEGIN_DECLS

typedef struct _StitchGeoJson StitchGeoJson;

/* Instance maps (labels are object ids): what the Feature of object @label
 * says. Filled by the params' describe callback. */
typedef struct
{
  gint class_id;                /* classification (a class label value); -1: "object" */
  gdouble score;                /* measurement "score"; < 0: not written */
} StitchGeoJsonInstance;

typedef void (*StitchGeoJsonDescribe) (guint32 label,
    StitchGeoJsonInstance * out, gpointer data);

typedef struct
{
  gint64 region_x, region_y;    /* level-0 origin of the label image */
  gdouble downsample;           /* level-0 pixels per label pixel */
  gdouble mpp_x, mpp_y;         /* microns per level-0 pixel, 0: unknown */
  gboolean detection;           /* objectType "detection", else "annotation" */
  guint64 min_area;             /* objects below this many pixels dropped */
  const StitchOverlayStyle *style;      /* class names and colours */
  gint boundary_class;          /* label of instance boundaries, < 1: none */
  guint boundary_grow;          /* growth steps into them, <= MAX below */
  guint64 max_trace_pixels;     /* bounding box limit, 0: 2^32 */
  /* instance maps: set, labels are object ids; the Feature's class and
   * score come from here and it gets measurements "Instance id", "score" */
  StitchGeoJsonDescribe describe;
  gpointer describe_data;
} StitchGeoJsonParams;

#define STITCH_GEOJSON_MAX_BOUNDARY_GROW 8

/* Opens the temp file next to @location for a label image @width wide. */
StitchGeoJson *stitch_geojson_new (const gchar * location, gint64 width,
    const StitchGeoJsonParams * params, GError ** error);
/* Next row of labels (rows 0, 1, ... in order). Objects that cannot grow
 * any more are traced and written. */
gboolean stitch_geojson_push_row (StitchGeoJson * geojson,
    const guint32 * labels, GError ** error);
/* No more rows: writes the remaining objects (the getters below are final
 * then). Called by stitch_geojson_commit() when not done before. */
gboolean stitch_geojson_end (StitchGeoJson * geojson, GError ** error);
/* Writes the remaining objects, closes the collection and renames the file
 * into place; frees @geojson, also on failure. */
gboolean stitch_geojson_commit (StitchGeoJson * geojson, GError ** error);
/* Marks the collection partial: a top-level "partial": true. */
void stitch_geojson_set_partial (StitchGeoJson * geojson, gboolean partial);
/* Objects not exported because their bounding box is larger than
 * max_trace_pixels (or could not be allocated); @first_reason: the first
 * one's description, owned by @geojson. */
guint64 stitch_geojson_get_skipped (StitchGeoJson * geojson,
    const gchar ** first_reason);
/* Removes the temp file; frees @geojson. NULL-safe. */
void stitch_geojson_abort (StitchGeoJson * geojson);

guint64 stitch_geojson_get_features (StitchGeoJson * geojson);
/* Peak number of runs held for objects still growing. */
guint64 stitch_geojson_get_peak_runs (StitchGeoJson * geojson);
/* Boundary pixels that no object reached (dropped). */
guint64 stitch_geojson_get_orphan_pixels (StitchGeoJson * geojson);

G_END_DECLS
