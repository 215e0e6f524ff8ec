/* stitchsink GeoJSON export: per-class regions of a label image that
 * arrives row by row, as QuPath-style features. No GStreamer inside.
 *
 * Objects are 8-connected sets of pixels of one label (label 0 is not
 * exported); holes are the 4-connected background regions they enclose.
 * Rings follow pixel edges (vertex (i, j) is the top-left corner of level
 * pixel (i, j)), are simple (rings may touch at single vertices) and keep
 * only corners; outer rings have a positive shoelace area in (x, y), holes a
 * negative one. */
#pragma once

#include <glib.h>

#include "stitchoverlay.h"

G_BEGIN_DECLS

typedef struct _StitchGeoJson StitchGeoJson;

typedef struct
{
  gint64 region_x, region_y;    /* level-0 origin of the label image */
  gdouble downsample;           /* level-0 pixels per label pixel */
  gdouble mpp_x, mpp_y;         /* microns per level-0 pixel, 0: unknown */
  gboolean detection;           /* objectType "detection", else "annotation" */
  guint64 min_area;             /* objects below this many pixels dropped */
  const StitchOverlayStyle *style;      /* class names and colours */
} StitchGeoJsonParams;

/* Opens the temp file next to @location for a label image @width wide. */
StitchGeoJson *stitch_geojson_new (const gchar * location, gint64 width,
    const StitchGeoJsonParams * params, GError ** error);
/* Next row of labels (rows 0, 1, ... in order). Objects that cannot grow
 * any more are traced and written. */
gboolean stitch_geojson_push_row (StitchGeoJson * geojson,
    const guint16 * labels, GError ** error);
/* Writes the remaining objects, closes the collection and renames the file
 * into place; frees @geojson. */
gboolean stitch_geojson_commit (StitchGeoJson * geojson, GError ** error);
/* Removes the temp file; frees @geojson. NULL-safe. */
void stitch_geojson_abort (StitchGeoJson * geojson);

guint64 stitch_geojson_get_features (StitchGeoJson * geojson);
/* Peak number of runs held for objects still growing. */
guint64 stitch_geojson_get_peak_runs (StitchGeoJson * geojson);

G_END_DECLS
