/* Colour computations for H&E patches; see wsicolor.h. */
#include "wsicolor.h"

#include <math.h>
#include <string.h>

/* sRGB (D65) to XYZ, the matrix scikit-image uses. */
static const gdouble xyz_from_rgb[3][3] = {
  {0.412453, 0.357580, 0.180423},
  {0.212671, 0.715160, 0.072169},
  {0.019334, 0.119193, 0.950227},
};

static const gdouble white_d65[3] = { 0.95047, 1.0, 1.08883 };

/* Ruifrok & Johnston stain OD vectors (hematoxylin, eosin, DAB). */
static const gdouble hed_vectors[3][3] = {
  {0.65, 0.70, 0.29},
  {0.07, 0.99, 0.11},
  {0.27, 0.57, 0.78},
};

static gfloat srgb_to_linear[256];
/* f(t) of L*a*b* and 255 * sRGB gamma of a linear value, tabulated over
 * u = sqrt(t) (dense where the curves are steep), linear interpolation:
 * errors < 1e-4 L* units and < 1e-3 grey levels. */
#define CURVE_N 2048
static gfloat lab_f_tab[CURVE_N + 2];
static gfloat srgb_tab[CURVE_N + 2];
static gfloat od_of_u8[256];
/* Reinhard background weight by the darkest channel value (see header). */
static gfloat bg_weight[256];
/* Rows pre-divided by the white point: lab_m . rgb_lin = XYZ / white. */
static gfloat lab_m[3][3];
/* XYZ (times white) back to linear RGB. */
static gfloat rgb_m[3][3];

static gboolean
invert3 (const gdouble a[3][3], gdouble out[3][3])
{
  gdouble det = a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
      - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
      + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]);
  gint i, j;

  if (fabs (det) < 1e-12)
    return FALSE;
  for (i = 0; i < 3; i++) {
    for (j = 0; j < 3; j++) {
      gint r1 = (j + 1) % 3, r2 = (j + 2) % 3;
      gint c1 = (i + 1) % 3, c2 = (i + 2) % 3;
      out[i][j] = (a[r1][c1] * a[r2][c2] - a[r1][c2] * a[r2][c1]) / det;
    }
  }
  return TRUE;
}

static gsize init_done = 0;

void
wsi_color_init (void)
{
  if (g_once_init_enter (&init_done)) {
    gdouble inv[3][3];
    gint i, j;

    for (i = 0; i < 256; i++) {
      gdouble c = i / 255.0;
      srgb_to_linear[i] = (gfloat) (c > 0.04045 ?
          pow ((c + 0.055) / 1.055, 2.4) : c / 12.92);
      od_of_u8[i] = (gfloat) (-log ((i + 1) / WSI_OD_I0));
      bg_weight[i] = (gfloat) CLAMP ((-log ((i + 1) / WSI_OD_I0) -
              WSI_BACKGROUND_OD) / (WSI_STAIN_TISSUE_OD - WSI_BACKGROUND_OD), 0.0,
          1.0);
    }
    for (i = 0; i <= CURVE_N + 1; i++) {
      gdouble u = (gdouble) i / CURVE_N, t = MIN (u * u, 1.0);
      lab_f_tab[i] = (gfloat) (t > 0.008856 ? cbrt (t) : 7.787 * t + 16.0 /
          116.0);
      srgb_tab[i] = (gfloat) (255.0 * (t > 0.0031308 ? 1.055 * pow (t,
                  1.0 / 2.4) - 0.055 : 12.92 * t));
    }
    invert3 (xyz_from_rgb, inv);
    for (i = 0; i < 3; i++) {
      for (j = 0; j < 3; j++) {
        lab_m[i][j] = (gfloat) (xyz_from_rgb[i][j] / white_d65[i]);
        rgb_m[i][j] = (gfloat) (inv[i][j] * white_d65[j]);
      }
    }
    g_once_init_leave (&init_done, 1);
  }
}

/* Fitted with this file's definitions on all level-0 tissue pixels of the
 * bundled sample slide data/cmu-1-small-region.svs (docs/colornorm.md). */
void
wsi_default_lab_target (WsiLabStats * out)
{
  static const WsiLabStats def = {
    {44.3936, 29.1188, -13.6075},
    {17.3983, 12.3196, 9.4064},
  };
  *out = def;
}

void
wsi_default_stain_target (WsiStainParams * out)
{
  static const WsiStainParams def = {
    {{0.8085, 0.5102, 0.2934}, {0.1742, 0.9051, 0.3879}},
    {3.1422, 3.0466},
  };
  *out = def;
}

/* --- L*a*b* ------------------------------------------------------------ */

static inline gdouble
lab_f (gdouble t)
{
  return t > 0.008856 ? cbrt (t) : 7.787 * t + 16.0 / 116.0;
}

void
wsi_rgb8_to_lab (const guint8 rgb[3], gdouble lab[3])
{
  gdouble lin[3], f[3];
  gint i;

  for (i = 0; i < 3; i++) {
    gdouble c = rgb[i] / 255.0;
    lin[i] = c > 0.04045 ? pow ((c + 0.055) / 1.055, 2.4) : c / 12.92;
  }
  for (i = 0; i < 3; i++)
    f[i] = lab_f ((xyz_from_rgb[i][0] * lin[0] + xyz_from_rgb[i][1] * lin[1]
            + xyz_from_rgb[i][2] * lin[2]) / white_d65[i]);
  lab[0] = 116.0 * f[1] - 16.0;
  lab[1] = 500.0 * (f[0] - f[1]);
  lab[2] = 200.0 * (f[1] - f[2]);
}

/* t in [0, 1] (larger values clamp) */
static inline gfloat
curve (const gfloat * tab, gfloat t)
{
  gfloat u = sqrtf (t > 0.0f ? t : 0.0f) * CURVE_N, frac;
  gint i;

  if (u >= CURVE_N)
    return tab[CURVE_N];
  i = (gint) u;
  frac = u - i;
  return tab[i] + frac * (tab[i + 1] - tab[i]);
}

static inline gfloat
lab_ff (gfloat t)
{
  return curve (lab_f_tab, t);
}

static inline gfloat
lab_finv (gfloat f)
{
  return f > 0.2068966f ? f * f * f : (f - 16.0f / 116.0f) * (1.0f / 7.787f);
}

static inline void
lab_of_u8 (const guint8 * p, gfloat lab[3])
{
  gfloat r = srgb_to_linear[p[0]], g = srgb_to_linear[p[1]],
      b = srgb_to_linear[p[2]];
  gfloat fx = lab_ff (lab_m[0][0] * r + lab_m[0][1] * g + lab_m[0][2] * b);
  gfloat fy = lab_ff (lab_m[1][0] * r + lab_m[1][1] * g + lab_m[1][2] * b);
  gfloat fz = lab_ff (lab_m[2][0] * r + lab_m[2][1] * g + lab_m[2][2] * b);

  lab[0] = 116.0f * fy - 16.0f;
  lab[1] = 500.0f * (fx - fy);
  lab[2] = 200.0f * (fy - fz);
}

static inline gfloat
linear_to_srgb255 (gfloat c)
{
  return curve (srgb_tab, c);
}

/* --- accumulation -------------------------------------------------------- */

void
wsi_stain_acc_init (WsiStainAcc * acc, gsize od_capacity, guint od_step)
{
  memset (acc, 0, sizeof (*acc));
  wsi_color_init ();
  acc->cap_od = od_capacity;
  acc->od = od_capacity ? g_new (gfloat, od_capacity * 3) : NULL;
  acc->od_step = MAX (od_step, 1);
}

void
wsi_stain_acc_reset (WsiStainAcc * acc)
{
  memset (acc->sum, 0, sizeof (acc->sum));
  memset (acc->sumsq, 0, sizeof (acc->sumsq));
  acc->n_lab = 0;
  acc->n_od = 0;
  acc->od_phase = 0;
}

void
wsi_stain_acc_clear (WsiStainAcc * acc)
{
  g_free (acc->od);
  memset (acc, 0, sizeof (*acc));
}

guint64
wsi_stain_acc_add (WsiStainAcc * acc, const guint8 * rgb, gint width,
    gint height, gsize stride, guint what)
{
  guint64 n = 0;
  gint x, y;

  for (y = 0; y < height; y++) {
    const guint8 *p = rgb + y * stride;
    gdouble s[3] = { 0, 0, 0 }, s2[3] = { 0, 0, 0 };
    guint64 nrow = 0;

    for (x = 0; x < width; x++, p += 3) {
      if (!wsi_stain_tissue_pixel (p[0], p[1], p[2]))
        continue;
      nrow++;
      if (what & WSI_ACC_LAB) {
        gfloat lab[3];
        gint c;
        lab_of_u8 (p, lab);
        for (c = 0; c < 3; c++) {
          s[c] += lab[c];
          s2[c] += (gdouble) lab[c] * lab[c];
        }
      }
      if ((what & WSI_ACC_OD) && acc->n_od < acc->cap_od) {
        if (acc->od_phase == 0) {
          gfloat *o = acc->od + acc->n_od * 3;
          o[0] = od_of_u8[p[0]];
          o[1] = od_of_u8[p[1]];
          o[2] = od_of_u8[p[2]];
          acc->n_od++;
        }
        if (++acc->od_phase >= acc->od_step)
          acc->od_phase = 0;
      }
    }
    if (what & WSI_ACC_LAB) {
      gint c;
      for (c = 0; c < 3; c++) {
        acc->sum[c] += s[c];
        acc->sumsq[c] += s2[c];
      }
      acc->n_lab += nrow;
    }
    n += nrow;
  }
  return n;
}

gboolean
wsi_lab_stats_fit (const WsiStainAcc * acc, WsiLabStats * out)
{
  gint c;

  if (acc->n_lab < WSI_MIN_TISSUE_PIXELS)
    return FALSE;
  for (c = 0; c < 3; c++) {
    gdouble m = acc->sum[c] / acc->n_lab;
    gdouble v = acc->sumsq[c] / acc->n_lab - m * m;
    out->mean[c] = m;
    out->std[c] = v > 0 ? sqrt (v) : 0.0;
  }
  /* One colour: nothing to match. */
  return out->std[0] + out->std[1] + out->std[2] > 1e-3;
}

/* --- percentiles and eigenvectors ---------------------------------------- */

static void
swapf (gfloat * a, gfloat * b)
{
  gfloat t = *a;
  *a = *b;
  *b = t;
}

/* After return v[k] is the k-th smallest, v[0..k) <= v[k] <= v(k..n). */
static void
select_kth (gfloat * v, gssize n, gssize k)
{
  gssize lo = 0, hi = n - 1;

  while (lo < hi) {
    gssize mid = lo + (hi - lo) / 2, i = lo, j = hi;
    gfloat pivot;

    /* median of three: v[lo] <= v[mid] <= v[hi] bound the scans */
    if (v[mid] < v[lo])
      swapf (&v[mid], &v[lo]);
    if (v[hi] < v[lo])
      swapf (&v[hi], &v[lo]);
    if (v[hi] < v[mid])
      swapf (&v[hi], &v[mid]);
    pivot = v[mid];
    while (i <= j) {
      while (v[i] < pivot)
        i++;
      while (v[j] > pivot)
        j--;
      if (i <= j) {
        swapf (&v[i], &v[j]);
        i++;
        j--;
      }
    }
    /* v[lo..j] <= pivot <= v[i..hi]; v(j..i) == pivot */
    if (k <= j)
      hi = j;
    else if (k >= i)
      lo = i;
    else
      return;
  }
}

gdouble
wsi_percentile (gfloat * v, gsize n, gdouble p)
{
  gdouble pos, frac, lo, hi;
  gsize k, i;

  if (n == 0)
    return 0.0;
  pos = CLAMP (p, 0.0, 100.0) / 100.0 * (n - 1);
  k = (gsize) floor (pos);
  if (k > n - 1)
    k = n - 1;
  frac = pos - k;
  select_kth (v, (gssize) n, (gssize) k);
  lo = v[k];
  if (frac <= 0.0 || k + 1 >= n)
    return lo;
  hi = v[k + 1];
  for (i = k + 2; i < n; i++)
    if (v[i] < hi)
      hi = v[i];
  return lo + (hi - lo) * frac;
}

/* Cyclic Jacobi for a symmetric 3x3 matrix: eigenvalues @w, eigenvectors in
 * the columns of @v. */
static void
eigen_sym3 (gdouble a[3][3], gdouble w[3], gdouble v[3][3])
{
  gint i, j, k, sweep;

  for (i = 0; i < 3; i++)
    for (j = 0; j < 3; j++)
      v[i][j] = i == j;
  for (sweep = 0; sweep < 50; sweep++) {
    gdouble off = fabs (a[0][1]) + fabs (a[0][2]) + fabs (a[1][2]);
    if (off < 1e-300)
      break;
    for (i = 0; i < 2; i++) {
      for (j = i + 1; j < 3; j++) {
        gdouble theta, t, c, s;
        if (fabs (a[i][j]) < 1e-300)
          continue;
        theta = (a[j][j] - a[i][i]) / (2.0 * a[i][j]);
        t = (theta >= 0 ? 1.0 : -1.0) / (fabs (theta) + sqrt (theta * theta +
                1.0));
        c = 1.0 / sqrt (t * t + 1.0);
        s = t * c;
        for (k = 0; k < 3; k++) {
          gdouble aki = a[k][i], akj = a[k][j];
          a[k][i] = c * aki - s * akj;
          a[k][j] = s * aki + c * akj;
        }
        for (k = 0; k < 3; k++) {
          gdouble aik = a[i][k], ajk = a[j][k];
          a[i][k] = c * aik - s * ajk;
          a[j][k] = s * aik + c * ajk;
        }
        for (k = 0; k < 3; k++) {
          gdouble vki = v[k][i], vkj = v[k][j];
          v[k][i] = c * vki - s * vkj;
          v[k][j] = s * vki + c * vkj;
        }
      }
    }
  }
  for (i = 0; i < 3; i++)
    w[i] = a[i][i];
}

/* (H E) is 3x2; its pseudo-inverse rows are p[0], p[1]. */
static gboolean
pinv_he (const gdouble he[2][3], gdouble p[2][3])
{
  gdouble g00 = 0, g01 = 0, g11 = 0, det;
  gint c;

  for (c = 0; c < 3; c++) {
    g00 += he[0][c] * he[0][c];
    g01 += he[0][c] * he[1][c];
    g11 += he[1][c] * he[1][c];
  }
  det = g00 * g11 - g01 * g01;
  if (!(det > 1e-9))
    return FALSE;
  for (c = 0; c < 3; c++) {
    p[0][c] = (g11 * he[0][c] - g01 * he[1][c]) / det;
    p[1][c] = (g00 * he[1][c] - g01 * he[0][c]) / det;
  }
  return TRUE;
}

gboolean
wsi_macenko_fit (const WsiStainAcc * acc, WsiStainParams * out)
{
  gsize n = acc->n_od, i;
  gdouble mean[3] = { 0, 0, 0 }, cov[3][3] = { {0} }, w[3], v[3][3];
  gdouble e1[3], e2[3], lo, hi, vlo[3], vhi[3], p[2][3];
  gint order[3] = { 0, 1, 2 }, a, b, c;
  gfloat *tmp;
  gboolean ok = FALSE;

  if (n < WSI_MIN_TISSUE_PIXELS)
    return FALSE;
  for (i = 0; i < n; i++)
    for (c = 0; c < 3; c++)
      mean[c] += acc->od[i * 3 + c];
  for (c = 0; c < 3; c++)
    mean[c] /= n;
  for (i = 0; i < n; i++) {
    gdouble d[3];
    for (c = 0; c < 3; c++)
      d[c] = acc->od[i * 3 + c] - mean[c];
    for (a = 0; a < 3; a++)
      for (b = a; b < 3; b++)
        cov[a][b] += d[a] * d[b];
  }
  for (a = 0; a < 3; a++)
    for (b = a; b < 3; b++)
      cov[b][a] = cov[a][b] = cov[a][b] / (n - 1);

  eigen_sym3 (cov, w, v);
  /* order by decreasing eigenvalue */
  for (a = 0; a < 3; a++)
    for (b = a + 1; b < 3; b++)
      if (w[order[b]] > w[order[a]]) {
        gint t = order[a];
        order[a] = order[b];
        order[b] = t;
      }
  if (!(w[order[0]] > 1e-9))
    return FALSE;               /* one colour */
  for (c = 0; c < 3; c++) {
    e1[c] = v[c][order[0]];
    e2[c] = v[c][order[1]];
  }
  if (e1[0] + e1[1] + e1[2] < 0)
    for (c = 0; c < 3; c++)
      e1[c] = -e1[c];
  if (e2[0] + e2[1] + e2[2] < 0)
    for (c = 0; c < 3; c++)
      e2[c] = -e2[c];

  tmp = g_new (gfloat, n * 2);
  for (i = 0; i < n; i++) {
    const gfloat *o = acc->od + i * 3;
    gdouble p1 = o[0] * e1[0] + o[1] * e1[1] + o[2] * e1[2];
    gdouble p2 = o[0] * e2[0] + o[1] * e2[1] + o[2] * e2[2];
    tmp[i] = (gfloat) atan2 (p2, p1);
  }
  lo = wsi_percentile (tmp, n, WSI_MACENKO_ALPHA);
  hi = wsi_percentile (tmp, n, 100.0 - WSI_MACENKO_ALPHA);
  if (fabs (sin (hi - lo)) < 1e-3)
    goto done;                  /* a single stain direction */
  for (c = 0; c < 3; c++) {
    vlo[c] = cos (lo) * e1[c] + sin (lo) * e2[c];
    vhi[c] = cos (hi) * e1[c] + sin (hi) * e2[c];
  }
  /* Hematoxylin absorbs more red than eosin. */
  for (c = 0; c < 3; c++) {
    out->he[0][c] = vlo[0] > vhi[0] ? vlo[c] : vhi[c];
    out->he[1][c] = vlo[0] > vhi[0] ? vhi[c] : vlo[c];
  }
  if (!pinv_he (out->he, p))
    goto done;
  for (i = 0; i < n; i++) {
    const gfloat *o = acc->od + i * 3;
    tmp[i] = (gfloat) (p[0][0] * o[0] + p[0][1] * o[1] + p[0][2] * o[2]);
    tmp[n + i] = (gfloat) (p[1][0] * o[0] + p[1][1] * o[1] + p[1][2] * o[2]);
  }
  out->max_conc[0] = wsi_percentile (tmp, n, WSI_MACENKO_MAX_PERCENTILE);
  out->max_conc[1] = wsi_percentile (tmp + n, n, WSI_MACENKO_MAX_PERCENTILE);
  ok = out->max_conc[0] > 1e-3 && out->max_conc[1] > 1e-3;

done:
  g_free (tmp);
  return ok;
}

/* --- per-pixel transforms ------------------------------------------------ */

void
wsi_reinhard_map (const WsiLabStats * src, const WsiLabStats * tgt,
    WsiReinhardMap * map)
{
  gint c;

  for (c = 0; c < 3; c++) {
    /* a flat source channel is shifted, not stretched */
    gdouble g = src->std[c] > 1e-3 ? tgt->std[c] / src->std[c] : 1.0;
    map->gain[c] = (gfloat) g;
    map->offset[c] = (gfloat) (tgt->mean[c] - src->mean[c] * g);
  }
  map->keep_background = TRUE;
}

void
wsi_reinhard_row (const guint8 * in, gfloat * out, gint n,
    const WsiReinhardMap * map)
{
  gint i;

  wsi_color_init ();
  for (i = 0; i < n; i++, in += 3, out += 3) {
    gfloat lab[3], fx, fy, fz, X, Y, Z;
    gint c;

    lab_of_u8 (in, lab);
    for (c = 0; c < 3; c++)
      lab[c] = lab[c] * map->gain[c] + map->offset[c];
    fy = (lab[0] + 16.0f) * (1.0f / 116.0f);
    fx = fy + lab[1] * (1.0f / 500.0f);
    fz = fy - lab[2] * (1.0f / 200.0f);
    X = lab_finv (fx);
    Y = lab_finv (fy);
    Z = lab_finv (fz);
    for (c = 0; c < 3; c++)
      out[c] = linear_to_srgb255 (rgb_m[c][0] * X + rgb_m[c][1] * Y +
          rgb_m[c][2] * Z);
    if (map->keep_background) {
      guint8 m = MIN (MIN (in[0], in[1]), in[2]);
      gfloat w = bg_weight[m];
      for (c = 0; c < 3; c++)
        out[c] = in[c] + w * (out[c] - in[c]);
    }
  }
}

gboolean
wsi_macenko_map (const WsiStainParams * src, const WsiStainParams * tgt,
    gboolean keep_residual, WsiOdMap * map)
{
  gdouble p[2][3], s[2];
  gint r, c, k;

  if (!pinv_he (src->he, p))
    return FALSE;
  for (k = 0; k < 2; k++) {
    if (!(src->max_conc[k] > 1e-6))
      return FALSE;
    s[k] = tgt->max_conc[k] / src->max_conc[k];
  }
  for (r = 0; r < 3; r++) {
    for (c = 0; c < 3; c++) {
      gdouble m = tgt->he[0][r] * s[0] * p[0][c] +
          tgt->he[1][r] * s[1] * p[1][c];
      /* + (I - HE_src P) OD: the part the two stains do not explain */
      if (keep_residual)
        m += (r == c) - (src->he[0][r] * p[0][c] + src->he[1][r] * p[1][c]);
      map->m[r][c] = (gfloat) m;
    }
    map->t[r] = 0.0f;
  }
  return TRUE;
}

static inline void
od_to_rgb (const gfloat od[3], const WsiOdMap * map, gfloat * out)
{
  gint c;

  for (c = 0; c < 3; c++) {
    gfloat d = map->m[c][0] * od[0] + map->m[c][1] * od[1] +
        map->m[c][2] * od[2] + map->t[c];
    gfloat v = (gfloat) WSI_OD_I0 * expf (-d) - 1.0f;
    out[c] = v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v);
  }
}

void
wsi_od_map_row_u8 (const guint8 * in, gfloat * out, gint n,
    const WsiOdMap * map)
{
  gint i;

  wsi_color_init ();
  for (i = 0; i < n; i++, in += 3, out += 3) {
    gfloat od[3] = { od_of_u8[in[0]], od_of_u8[in[1]], od_of_u8[in[2]] };
    od_to_rgb (od, map, out);
  }
}

void
wsi_od_map_row_f (gfloat * rgb, gint n, const WsiOdMap * map)
{
  gint i;

  for (i = 0; i < n; i++, rgb += 3) {
    gfloat od[3];
    gint c;
    for (c = 0; c < 3; c++)
      od[c] = -logf ((rgb[c] + 1.0f) / (gfloat) WSI_OD_I0);
    od_to_rgb (od, map, rgb);
  }
}

void
wsi_hed_jitter_map (const gdouble scale[3], const gdouble shift[3],
    WsiOdMap * map)
{
  gdouble s[3][3], sinv[3][3];
  gint r, c, k;

  /* columns of s: unit stain vectors */
  for (k = 0; k < 3; k++) {
    gdouble norm = sqrt (hed_vectors[k][0] * hed_vectors[k][0] +
        hed_vectors[k][1] * hed_vectors[k][1] +
        hed_vectors[k][2] * hed_vectors[k][2]);
    for (r = 0; r < 3; r++)
      s[r][k] = hed_vectors[k][r] / norm;
  }
  invert3 (s, sinv);
  for (r = 0; r < 3; r++) {
    gdouble t = 0;
    for (c = 0; c < 3; c++) {
      gdouble m = 0;
      for (k = 0; k < 3; k++)
        m += s[r][k] * scale[k] * sinv[k][c];
      map->m[r][c] = (gfloat) m;
    }
    for (k = 0; k < 3; k++)
      t += s[r][k] * shift[k];
    map->t[r] = (gfloat) t;
  }
}

void
wsi_u8_to_float_row (const guint8 * in, gfloat * out, gint n)
{
  gint i;

  for (i = 0; i < n * 3; i++)
    out[i] = in[i];
}
