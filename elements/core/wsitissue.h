/* Tissue detection shared by patchify and tissuemask: pure computation on
 * packed RGB pixels, no GStreamer objects. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

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

G_END_DECLS
