/* stitchsink overlay picture: a small downsampled copy of the stitched
 * rows, kept while streaming, composed at the end with a slide thumbnail
 * (the slide reader, wsislide.h: the colours slidesrc streams), the class
 * colours and a legend (cairo). No GStreamer inside. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct _StitchOverlay StitchOverlay;

typedef struct
{
  gdouble opacity;              /* mask opacity over a thumbnail, 0..1 */
  guint32 *colors;              /* 0xRRGGBB by class, user-given, may be NULL */
  guint n_colors;
  gchar **names;                /* class names by class, may be NULL */
  guint n_names;
} StitchOverlayStyle;

typedef struct
{
  const gchar *slide;           /* slide or PNG path, NULL/"" if none */
  gint64 region_x, region_y;    /* level-0 origin of the stitched region */
  gdouble downsample;           /* level-0 pixels per stitched pixel */
  const gchar *text_key;        /* a tEXt chunk for the PNG, or NULL */
  const gchar *text_value;
} StitchOverlaySource;

/* Integer decimation factor for a @width x @height image so that both
 * overlay sides are at most @max_size: ceil (max (w, h) / max_size). */
guint stitch_overlay_factor (gint64 width, gint64 height, guint max_size);

/* @channels 1 (labels, @bytes_per_sample 1 or 2) or 3 (RGB). */
StitchOverlay *stitch_overlay_new (gint64 width, gint64 height, gint channels,
    gint bytes_per_sample, guint max_size);
/* Rows must come in order, y = 0 .. height-1. */
void stitch_overlay_push_row (StitchOverlay * overlay, gint64 y,
    const guint8 * row);
guint stitch_overlay_get_width (StitchOverlay * overlay);
guint stitch_overlay_get_height (StitchOverlay * overlay);
/* Writes the picture atomically to @location (PNG). */
gboolean stitch_overlay_write (StitchOverlay * overlay, const gchar * location,
    const StitchOverlayStyle * style, const StitchOverlaySource * source,
    GError ** error);
void stitch_overlay_free (StitchOverlay * overlay);

/* Colour of class @k: the user's colour if given, else the default palette. */
guint32 stitch_overlay_class_color (const StitchOverlayStyle * style, guint k);
/* Parses "ff0000,#00ff00,..." into 0xRRGGBB values; NULL/"" gives none. */
gboolean stitch_overlay_parse_colors (const gchar * str, guint32 ** colors,
    guint * n_colors, GError ** error);

/* Instance outlines (labels overlay, 1 channel): every non-zero class in
 * @classes (the width's values) marks its overlay pixel, whatever the
 * decimation, so thin outlines survive it. Rows in order. */
void stitch_overlay_push_outline_row (StitchOverlay * overlay, gint64 y,
    const guint16 * classes);

G_END_DECLS
