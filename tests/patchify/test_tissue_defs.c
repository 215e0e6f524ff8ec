/* The two named tissue definitions of elements/core/wsitissue.h: patch
 * tissue (patchify, tissuemask) and stain-fit tissue (colornorm's fits),
 * each checked against its documented formula, and the fits counting
 * exactly the stain-fit tissue pixels. */
#include <glib.h>
#include <math.h>

#include "wsicolor.h"
#include "wsitissue.h"

static void
test_patch_tissue (void)
{
  WsiTissueTest t;

  wsi_tissue_test_init (&t, WSI_TISSUE_DEFAULT_THRESHOLD);
  for (guint r = 0; r < 256; r += 3)
    for (guint g = 0; g < 256; g += 5)
      for (guint b = 0; b < 256; b += 7) {
        guint lo = MIN (r, MIN (g, b)), hi = MAX (r, MAX (g, b));
        /* log10 OD: darkest channel > 0.15, brightest <= 1.0 */
        gboolean want = -log10 ((lo + 1) / 256.0) > 0.15 &&
            -log10 ((hi + 1) / 256.0) <= 1.0;
        g_assert_cmpint (wsi_tissue_pixel (&t, r, g, b), ==, want);
      }
  /* the documented bounds at 0.15: some channel <= 180, none all <= 24 */
  g_assert_true (wsi_tissue_pixel (&t, 180, 250, 250));
  g_assert_false (wsi_tissue_pixel (&t, 181, 250, 250));
  g_assert_true (wsi_tissue_pixel (&t, 10, 10, 25));
  g_assert_false (wsi_tissue_pixel (&t, 10, 10, 24));
}

static void
test_stain_tissue (void)
{
  for (guint v = 0; v < 256; v++)
    g_assert_cmpint (v <= WSI_STAIN_TISSUE_MAX_VALUE, ==,
        -log ((v + 1) / 256.0) >= WSI_STAIN_TISSUE_OD);
  g_assert_true (wsi_stain_tissue_pixel (219, 219, 219));
  g_assert_false (wsi_stain_tissue_pixel (100, 100, 220));
  /* pale eosin: patch tissue, not a stain-fit pixel */
  {
    WsiTissueTest t;
    wsi_tissue_test_init (&t, WSI_TISSUE_DEFAULT_THRESHOLD);
    g_assert_true (wsi_tissue_pixel (&t, 235, 170, 225));
    g_assert_false (wsi_stain_tissue_pixel (235, 170, 225));
  }
}

/* The Reinhard/Macenko accumulation takes exactly the stain-fit pixels. */
static void
test_fit_uses_stain_tissue (void)
{
  GRand *rand = g_rand_new_with_seed (3);
  guint8 rgb[64 * 48 * 3];
  WsiStainAcc acc;
  guint64 n;

  for (gsize i = 0; i < sizeof (rgb); i++)
    rgb[i] = (guint8) g_rand_int_range (rand, 120, 256);
  wsi_stain_acc_init (&acc, 1 << 16, 1);
  n = wsi_stain_acc_add (&acc, rgb, 64, 48, 64 * 3, WSI_ACC_LAB | WSI_ACC_OD);
  g_assert_cmpuint (n, ==, wsi_stain_tissue_count (rgb, 64, 48, 64 * 3));
  g_assert_cmpuint (n, >, 100);
  wsi_stain_acc_clear (&acc);
  g_rand_free (rand);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/tissue/patch", test_patch_tissue);
  g_test_add_func ("/tissue/stain-fit", test_stain_tissue);
  g_test_add_func ("/tissue/fit-uses-stain-tissue", test_fit_uses_stain_tissue);
  return g_test_run ();
}
