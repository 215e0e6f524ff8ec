/* stitchsink instance maps: per-patch instance label patches (0 =
 * background, 1..N = that patch's objects) merged into one map with global
 * object ids, band by band. No GStreamer inside (docs/stitchsink.md,
 * "Instances").
 *
 * Pixels: each output pixel comes from the patch whose centre crop holds it
 * (the crop rule of labels). Objects: a patch's object is a "piece"; pieces
 * of different patches are the same object when, over the pixels the new
 * patch shares with earlier patches (each pixel compared with the last
 * earlier patch that saw it), they share more than half of the smaller
 * one's pixels there. Pieces are united transitively (union-find). An object
 * is final once no later patch can reach it (its lowest row is above the top
 * of the current patch); a row is written once every object in it is final,
 * and objects get global ids 1..M in raster order of their first output
 * pixel. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Global ids are written as 16-bit grey up to this many objects, as 8-bit
 * RGB (id = R << 16 | G << 8 | B) up to STITCH_INSTANCE_MAX_OBJECTS. */
#define STITCH_INSTANCE_MAX_16BIT 65535u
#define STITCH_INSTANCE_MAX_OBJECTS 16777215u

typedef struct _StitchInstances StitchInstances;

/* What a patch says about its object with local id i (from the detection
 * meta); class_id -1 / score -1 when unknown. */
typedef struct
{
  gint class_id;
  gdouble score;
} StitchInstanceInfo;

/* A final object, by global id. */
typedef struct
{
  gint class_id;                /* class of its largest piece; -1: unknown */
  gdouble score;                /* piece scores weighted by piece pixels; -1 */
  guint64 area;                 /* output pixels */
  guint32 pieces;               /* patch pieces merged into it */
} StitchInstanceObject;

typedef struct
{
  const guint8 *labels;         /* little-endian uint16 per pixel */
  gsize stride;                 /* bytes per patch row */
  gint width, height;
  gint64 px, py;                /* image position of patch pixel (0, 0) */
  gint vx0, vx1, vy0, vy1;      /* seen area: valid and inside the image */
  gint cx0, cx1, cy0, cy1;      /* kept area (centre crop), inside the seen one */
  const StitchInstanceInfo *info;       /* indexed by local id, may be NULL */
  guint n_info;
} StitchInstancePatch;

/* Called for every finished row, y = 0, 1, ... in order: @gids holds the
 * image width's global ids (0 = background). */
typedef gboolean (*StitchInstanceRowFunc) (gint64 y, const guint32 * gids,
    gpointer data, GError ** error);

StitchInstances *stitch_instances_new (gint64 width,
    StitchInstanceRowFunc row_func, gpointer data);
void stitch_instances_free (StitchInstances * si);

/* Rows above @y_top are complete (no later patch reaches them): objects
 * that end above it are final, rows holding only final objects are written
 * through row_func. */
gboolean stitch_instances_advance (StitchInstances * si, gint64 y_top,
    GError ** error);
/* Adds a patch (after stitch_instances_advance() with its top row). Rows
 * above the first row still held are clipped (returns them in
 * *@clipped_rows, may be NULL). FALSE with an error when memory or the
 * object limit runs out. */
gboolean stitch_instances_add_patch (StitchInstances * si,
    const StitchInstancePatch * patch, gint * clipped_rows, GError ** error);
/* No more patches: every object is final; rows up to @height are written
 * (background below the last patch). */
gboolean stitch_instances_finish (StitchInstances * si, gint64 height,
    GError ** error);

/* Objects with a global id so far (ids 1..this). */
guint32 stitch_instances_get_count (StitchInstances * si);
const StitchInstanceObject *stitch_instances_get_object (StitchInstances * si,
    guint32 gid);
/* Lowest row any patch reached + 1. */
gint64 stitch_instances_get_extent (StitchInstances * si);
/* Peak rows held (band + rows waiting for objects to end). */
guint64 stitch_instances_get_peak_rows (StitchInstances * si);

G_END_DECLS
