/* Colour computations for H&E patches (no GStreamer): CIE L*a*b*
 * conversion, Reinhard and Macenko stain normalisation, HED colour
 * augmentation. Used by colornorm; documented in docs/colornorm.md. */
#pragma once

#include <glib.h>

#include "wsitissue.h"

G_BEGIN_DECLS

/* Optical density of an 8-bit value v: OD = -ln((v + 1) / 256); never
 * infinite, 0 for v = 255. */
#define WSI_OD_I0 256.0
/* The fits use stain-fit tissue pixels (wsitissue.h: all of R, G, B have
 * OD >= WSI_STAIN_TISSUE_OD, i.e. all <= 219). Fewer tissue pixels than
 * this: no fit (stain step is the identity). */
#define WSI_MIN_TISSUE_PIXELS 100
/* Macenko: angle percentiles (alpha, 100 - alpha) and stain maximum
 * concentration percentile. */
#define WSI_MACENKO_ALPHA 1.0
#define WSI_MACENKO_MAX_PERCENTILE 99.0

/* Per-channel statistics of L*, a*, b* (population standard deviation). */
typedef struct
{
  gdouble mean[3];
  gdouble std[3];
} WsiLabStats;

/* Stain matrix: he[0] hematoxylin and he[1] eosin unit OD vectors (R, G, B)
 * and their 99th-percentile concentrations. */
typedef struct
{
  gdouble he[2][3];
  gdouble max_conc[2];
} WsiStainParams;

/* Sums over tissue pixels for Reinhard, and sampled tissue ODs for Macenko. */
typedef struct
{
  gdouble sum[3], sumsq[3];
  guint64 n_lab;
  gfloat *od;                   /* n_od x 3 */
  gsize n_od, cap_od;
  guint od_step, od_phase;      /* keep every od_step-th tissue pixel */
} WsiStainAcc;

#define WSI_ACC_LAB (1 << 0)
#define WSI_ACC_OD  (1 << 1)

void wsi_color_init (void);

/* Built-in H&E targets (docs/colornorm.md says where they come from). */
void wsi_default_lab_target (WsiLabStats * out);
void wsi_default_stain_target (WsiStainParams * out);

/* Exact conversions (float64), as scikit-image's rgb2lab with D65/2deg. */
void wsi_rgb8_to_lab (const guint8 rgb[3], gdouble lab[3]);

void wsi_stain_acc_init (WsiStainAcc * acc, gsize od_capacity, guint od_step);
void wsi_stain_acc_reset (WsiStainAcc * acc);
void wsi_stain_acc_clear (WsiStainAcc * acc);
/* Adds the stain-fit tissue pixels of an RGB image (3 bytes per pixel, rows @stride
 * bytes apart); returns how many tissue pixels it had. */
guint64 wsi_stain_acc_add (WsiStainAcc * acc, const guint8 * rgb, gint width,
    gint height, gsize stride, guint what);

/* FALSE when there are too few tissue pixels. */
gboolean wsi_lab_stats_fit (const WsiStainAcc * acc, WsiLabStats * out);
/* FALSE when degenerate (too few pixels, one colour, parallel stains). */
gboolean wsi_macenko_fit (const WsiStainAcc * acc, WsiStainParams * out);

/* numpy-style percentile (linear interpolation); reorders @v. */
gdouble wsi_percentile (gfloat * v, gsize n, gdouble p);

/* Reinhard background: a pixel whose largest OD (darkest channel) is
 * <= WSI_BACKGROUND_OD (all channels >= 243) keeps its colour, one with
 * largest OD >= WSI_STAIN_TISSUE_OD (some channel <= 219) is fully normalised,
 * linear in that OD in between. */
#define WSI_BACKGROUND_OD 0.05

/* Reinhard: L*a*b*' = L*a*b* * gain + offset per channel. */
typedef struct
{
  gfloat gain[3], offset[3];
  gboolean keep_background;
} WsiReinhardMap;

void wsi_reinhard_map (const WsiLabStats * src, const WsiLabStats * tgt,
    WsiReinhardMap * map);
/* @out: n RGB triplets as floats in [0, 255]. */
void wsi_reinhard_row (const guint8 * in, gfloat * out, gint n,
    const WsiReinhardMap * map);

/* A linear map of optical densities, OD' = m OD + t. */
typedef struct
{
  gfloat m[3][3];
  gfloat t[3];
} WsiOdMap;

/* OD' = HE_tgt diag(maxC_tgt / maxC_src) pinv(HE_src) OD, plus with
 * @keep_residual the part of OD outside the source stain plane. */
gboolean wsi_macenko_map (const WsiStainParams * src,
    const WsiStainParams * tgt, gboolean keep_residual, WsiOdMap * map);
void wsi_od_map_row_u8 (const guint8 * in, gfloat * out, gint n,
    const WsiOdMap * map);
/* In place on floats in [0, 255]. */
void wsi_od_map_row_f (gfloat * rgb, gint n, const WsiOdMap * map);

/* HED jitter: concentrations c = S^-1 OD (S: Ruifrok-Johnston H, E, DAB
 * vectors) become c * scale + shift. */
void wsi_hed_jitter_map (const gdouble scale[3], const gdouble shift[3],
    WsiOdMap * map);

void wsi_u8_to_float_row (const guint8 * in, gfloat * out, gint n);

G_END_DECLS
