#include "wsitissue.h"

#include <math.h>

gdouble
wsi_tissue_od (guint8 value)
{
  return -log10 ((value + 1.0) / 256.0);
}

void
wsi_tissue_test_init (WsiTissueTest * test, gdouble threshold)
{
  gint i;

  test->threshold = threshold;
  for (i = 0; i < 256; i++) {
    gdouble od = wsi_tissue_od (i);
    test->dark_enough[i] = od > threshold;
    test->not_black[i] = od <= WSI_TISSUE_BLACK_OD;
  }
}

guint64
wsi_tissue_count_rgb (const WsiTissueTest * test, const guint8 * rgb,
    gint width, gint height, gint stride, guint8 * mask, gint mask_stride)
{
  guint64 count = 0;
  gint x, y;

  for (y = 0; y < height; y++) {
    const guint8 *p = rgb + (gsize) y * stride;
    guint8 *m = mask ? mask + (gsize) y * mask_stride : NULL;

    for (x = 0; x < width; x++, p += 3) {
      gboolean t = wsi_tissue_pixel (test, p[0], p[1], p[2]);
      count += t;
      if (m)
        m[x] = t;
    }
  }
  return count;
}

gsize
wsi_stain_tissue_count (const guint8 * rgb, gint width, gint height,
    gsize stride)
{
  gsize n = 0;
  gint x, y;

  for (y = 0; y < height; y++) {
    const guint8 *p = rgb + y * stride;
    for (x = 0; x < width; x++, p += 3)
      n += wsi_stain_tissue_pixel (p[0], p[1], p[2]);
  }
  return n;
}
