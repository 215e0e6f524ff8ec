/* The one slide reader (no GStreamer): OpenSlide slides and PNG images, as
 * RGB with one transparency and background rule, used by slidesrc (the
 * streamed pixels), colornorm's thumbnail fit and stitchsink's overlay
 * underlay, so all three see the same colours. docs/slidesrc.md, "Slide
 * reader".
 *
 * Background rule: a slide's background is its openslide.background-color,
 * white when absent (always white for PNGs). OpenSlide's premultiplied ARGB
 * pixel (c, a) becomes: a = 255: c; a = 0: background; else c is
 * un-premultiplied u = min (255, c * 255 / a) (truncated, as
 * openslide-python does) and blended rint (u * a/255 + bg * (1 - a/255)).
 * PNG alpha is composited on white by wsipng. Pixels outside the image are
 * the background. Thumbnails average these composited pixels.
 *
 * A WsiSlide is used by one thread at a time (it keeps a scratch buffer);
 * open one per thread. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define WSI_SLIDE_ERROR (wsi_slide_error_quark ())
GQuark wsi_slide_error_quark (void);

typedef enum
{
  WSI_SLIDE_ERROR_NOT_FOUND,    /* no such file */
  WSI_SLIDE_ERROR_OPEN,         /* exists but cannot be opened: permission,
                                 * a directory, a FIFO, an empty file */
  WSI_SLIDE_ERROR_FORMAT,       /* neither a PNG nor a slide OpenSlide knows */
  WSI_SLIDE_ERROR_CORRUPT,      /* OpenSlide or libpng failed on the data */
  WSI_SLIDE_ERROR_TOO_LARGE,    /* a PNG over wsipng.h's limits */
  WSI_SLIDE_ERROR_NO_MEMORY,
  WSI_SLIDE_ERROR_ARGUMENT,     /* a level or size the slide does not have */
  WSI_SLIDE_ERROR_CANCELLED,
} WsiSlideError;

typedef struct _WsiSlide WsiSlide;

/* Opens @path: a PNG (by signature) or anything OpenSlide opens. Messages
 * name the file and the cause. */
WsiSlide *wsi_slide_open (const gchar * path, GError ** error);
void wsi_slide_free (WsiSlide * slide);

const gchar *wsi_slide_get_path (WsiSlide * slide);
gboolean wsi_slide_is_png (WsiSlide * slide);
/* OpenSlide's vendor, "unknown" when it has none, "png" for PNGs. */
const gchar *wsi_slide_get_vendor (WsiSlide * slide);
/* An OpenSlide property (NULL when absent; PNGs have none). */
const gchar *wsi_slide_get_property (WsiSlide * slide, const gchar * name);
/* NULL-terminated property names (empty for PNGs), owned by the slide. */
const gchar *const *wsi_slide_get_property_names (WsiSlide * slide);

gint wsi_slide_get_level_count (WsiSlide * slide);
void wsi_slide_get_level_dimensions (WsiSlide * slide, gint level,
    gint64 * width, gint64 * height);
/* Level-0 pixels per level pixel (1 for PNGs); NaN or < 1 means the slide
 * is broken. */
gdouble wsi_slide_get_level_downsample (WsiSlide * slide, gint level);
/* Level-0 microns per pixel (openslide.mpp-x/y), 0 when unknown. */
void wsi_slide_get_mpp (WsiSlide * slide, gdouble * mpp_x, gdouble * mpp_y);
/* The background colour of the rule above. */
void wsi_slide_get_background (WsiSlide * slide, guint8 bg[3]);
/* openslide.bounds-* when present and inside the slide. */
gboolean wsi_slide_get_bounds (WsiSlide * slide, gint64 * x, gint64 * y,
    gint64 * width, gint64 * height);

/* Level pixels of a region [@r0, @r0 + @len) (level-0, on an axis of @full
 * pixels) at a level of @level_size pixels and downsample @ds:
 * ceil (len / ds), except that a region reaching the slide's edge ends at
 * the level's edge (level_dimensions), never past it. */
gint64 wsi_slide_level_extent (gint64 r0, gint64 len, gint64 full, gdouble ds,
    gint64 level_size);

/* Reads @width x @height pixels of @level whose top-left is level-0 (@x,
 * @y) into @rgb (RGB8, row stride @stride) by the background rule, in ONE
 * OpenSlide read (so the pixels equal those of any larger read that starts
 * at the same place). PNG: level 0, outside the image = background. */
gboolean wsi_slide_read_region (WsiSlide * slide, gint level, gint64 x,
    gint64 y, gint64 width, gint64 height, guint8 * rgb, gsize stride,
    GError ** error);

/* The same read as premultiplied native-endian ARGB into @argb (@width x
 * @height, packed), for callers that keep a band and convert rows later
 * with wsi_slide_argb_to_rgb (). OpenSlide slides only (not PNGs). */
gboolean wsi_slide_read_argb (WsiSlide * slide, gint level, gint64 x,
    gint64 y, gint64 width, gint64 height, guint32 * argb, GError ** error);

/* Premultiplied native-endian ARGB (OpenSlide) -> RGB8 by the rule. */
void wsi_slide_argb_to_rgb (const guint32 * argb, guint8 * rgb, gsize n,
    const guint8 bg[3]);

/* Fills @n RGB8 pixels with @bg. */
void wsi_slide_fill_rgb (guint8 * rgb, gsize n, const guint8 bg[3]);

/* What a thumbnail read did. */
typedef struct
{
  gint level;                   /* level read */
  gboolean sampled;             /* windows, not the whole region */
  guint window;                 /* window side when sampled */
  guint64 pixels_read;          /* level pixels OpenSlide (or the PNG) gave */
  guint64 reads;                /* read calls */
} WsiSlideReadStats;

/* A picture: the level-0 region (@x, @y, @width, @height) as @out_w x
 * @out_h RGB8 (stride out_w * 3), thumbnail pixel (u, v) covering level-0
 * [x + u * scale, x + (u + 1) * scale) x [y + v * scale, ...) of the region
 * (a pixel past the region is the background). Reads the coarsest level
 * at most @scale coarse whose region is at most @max_read pixels (else
 * coarser ones), in blocks, and averages the pixels of the rule above that
 * fall in each thumbnail pixel: a box average of what slidesrc streams at
 * that level (a level coarser than the thumbnail, as for an upsampled
 * stitch, gives each thumbnail pixel the level pixel under its centre).
 * When even the coarsest level's region is larger than
 * @max_read (a single-level TIFF), each thumbnail pixel averages a window
 * of about sqrt (max_read / (out_w * out_h)) level pixels a side at the
 * centre of its footprint, one read each: at most
 * max (max_read, out_w * out_h) pixels are read. @cancel (may be NULL) is
 * polled between reads; non-zero stops with WSI_SLIDE_ERROR_CANCELLED. */
gboolean wsi_slide_read_thumbnail (WsiSlide * slide, gint64 x, gint64 y,
    gint64 width, gint64 height, gdouble scale, gint out_w, gint out_h,
    guint64 max_read, const gint * cancel, guint8 * rgb,
    WsiSlideReadStats * stats, GError ** error);

/* A sample of the slide's pixels for statistics (colornorm's stain fit):
 * pixels of the rule above, never averaged. The whole coarsest level when
 * it has at most @max_pixels pixels; else 32 x 32 windows on a regular grid
 * over it, side by side, at most @max_pixels pixels in all. At most
 * @max_pixels pixels are read, in blocks. @cancel as above. Free with
 * g_free (). */
guint8 *wsi_slide_read_overview (WsiSlide * slide, guint64 max_pixels,
    const gint * cancel, gint * width, gint * height,
    WsiSlideReadStats * stats, GError ** error);

G_END_DECLS
