/* "Tissue": the plugin's two definitions, both here (no GStreamer), each
 * named for its job (docs/patchify.md, docs/colornorm.md):
 *
 * - patch tissue (WsiTissueTest): patchify's and tissuemask's "is there
 *   tissue here?". log10 optical density; a pixel is tissue when its
 *   darkest channel is dark enough (any stain absorbs, so pale eosin and
 *   light hematoxylin count) and its brightest channel is not near-black
 *   (slide borders, pen). The threshold is a property (tissue-threshold).
 *
 * - stain-fit tissue (wsi_stain_tissue_pixel): the pixels colornorm's
 *   Reinhard and Macenko fits use. Natural-log OD >= 0.15 in ALL channels:
 *   Macenko's beta as the published method and the reference
 *   implementations apply it (OD = -ln ((I + 1) / 256)), so the fitted
 *   stains match them. Requiring every channel to absorb keeps out the
 *   near-white and single-channel pixels whose OD direction is noise, which
 *   the patch test must keep (a pale pink patch is still tissue).
 *
 * They differ on purpose: the first decides which patches to keep, the
 * second which pixels carry a reliable stain colour. At the shared 0.15 the
 * patch test accepts a pixel when some channel is <= 180, the stain-fit
 * test when all are <= 219; neither is derived from the other. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* --- patch tissue (patchify, tissuemask) ---------------------------------- */

/* Default optical-density threshold of the tissue test. */
#define WSI_TISSUE_DEFAULT_THRESHOLD 0.15
/* A pixel whose every channel is darker than this optical density (intensity
 * <= 24) is near-black (slide border, black background, dark pen): not tissue. */
#define WSI_TISSUE_BLACK_OD 1.0

/**
 * WsiTissueTest:
 * Lookup tables of the per-pixel test. Optical density of an 8-bit channel
 * value I is OD = -log10 ((I + 1) / 256). A pixel is tissue when its largest
 * channel OD exceeds the threshold and its smallest channel OD does not exceed
 * WSI_TISSUE_BLACK_OD. OD falls as I grows, so the largest OD belongs to the
 * darkest channel and the smallest OD to the brightest one.
 */
typedef struct
{
  gdouble threshold;
  guint8 dark_enough[256];      /* OD(I) > threshold */
  guint8 not_black[256];        /* OD(I) <= WSI_TISSUE_BLACK_OD */
} WsiTissueTest;

/* Optical density of one channel value. */
gdouble wsi_tissue_od (guint8 value);

void wsi_tissue_test_init (WsiTissueTest * test, gdouble threshold);

static inline gboolean
wsi_tissue_pixel (const WsiTissueTest * test, guint8 r, guint8 g, guint8 b)
{
  guint8 lo = MIN (r, MIN (g, b));
  guint8 hi = MAX (r, MAX (g, b));

  return test->dark_enough[lo] && test->not_black[hi];
}

/* Counts tissue pixels of a @width x @height block of packed RGB rows
 * @stride bytes apart. When @mask is not NULL, writes 1 (tissue) or 0 per
 * pixel into it, rows @mask_stride bytes apart. */
guint64 wsi_tissue_count_rgb (const WsiTissueTest * test, const guint8 * rgb,
    gint width, gint height, gint stride, guint8 * mask, gint mask_stride);

/* --- stain-fit tissue (colornorm's fits, elements/core/wsicolor.c) -------- */

/* Natural-log OD every channel must reach: -ln ((I + 1) / 256) >= 0.15 ... */
#define WSI_STAIN_TISSUE_OD 0.15
/* ... i.e. every channel value <= 219 (220 gives OD 0.147). */
#define WSI_STAIN_TISSUE_MAX_VALUE 219

static inline gboolean
wsi_stain_tissue_pixel (guint8 r, guint8 g, guint8 b)
{
  return r <= WSI_STAIN_TISSUE_MAX_VALUE && g <= WSI_STAIN_TISSUE_MAX_VALUE
      && b <= WSI_STAIN_TISSUE_MAX_VALUE;
}

/* Stain-fit tissue pixels of a @width x @height block of packed RGB rows
 * @stride bytes apart. */
gsize wsi_stain_tissue_count (const guint8 * rgb, gint width, gint height,
    gsize stride);

G_END_DECLS
