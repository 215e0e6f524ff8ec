/* The slide reader: see wsislide.h. */
#include "wsislide.h"
#include "wsipng.h"

#include <openslide.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <glib/gstdio.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HAVE_X86_SIMD 1
#endif

/* Level pixels read at once by a thumbnail (one block, ARGB + RGB). */
#define THUMB_BLOCK_PIXELS ((gsize) 4 * 1024 * 1024)
/* Window side of a sampled overview. */
#define OVERVIEW_WINDOW 32

G_DEFINE_QUARK (wsi-slide-error-quark, wsi_slide_error);

struct _WsiSlide
{
  gchar *path;
  openslide_t *osr;
  guint8 *png;                  /* whole PNG, RGB8, stride width * 3 */
  gint64 width, height;         /* level 0 */
  gint nlevels;
  guint8 bg[3];
  guint32 *scratch;             /* ARGB read buffer */
  gsize scratch_len;            /* pixels */
  const gchar *const *no_props;
};

/* ------------------------------------------------------------------ */
/* The background rule                                                 */

static void
argb_to_rgb_scalar (const guint32 * src, guint8 * dst, gsize n,
    const guint8 bg[3])
{
  for (gsize i = 0; i < n; i++, dst += 3) {
    guint32 p = src[i];
    guint a = p >> 24;

    if (G_LIKELY (a == 255)) {
      dst[0] = (p >> 16) & 0xff;
      dst[1] = (p >> 8) & 0xff;
      dst[2] = p & 0xff;
    } else if (a == 0) {
      dst[0] = bg[0];
      dst[1] = bg[1];
      dst[2] = bg[2];
    } else {
      gdouble af = a / 255.0;
      for (gint c = 0; c < 3; c++) {
        guint v = (p >> (16 - 8 * c)) & 0xff;
        guint u = MIN (255u, v * 255u / a);
        dst[c] = (guint8) rint ((gdouble) u * af + (gdouble) bg[c] *
            (1.0 - af));
      }
    }
  }
}

#ifdef HAVE_X86_SIMD
/* Converts opaque pixels 4 at a time; stops at the first group holding a
 * non-opaque pixel. Writes 16 bytes per 12 produced, so it leaves at least
 * 2 pixels to the caller. Returns the pixels done. */
__attribute__ ((target ("ssse3")))
static gsize
argb_to_rgb_opaque_ssse3 (const guint32 * src, guint8 * dst, gsize n)
{
  const __m128i shuf = _mm_setr_epi8 (2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12,
      -1, -1, -1, -1);
  const __m128i amask = _mm_set1_epi32 ((gint) 0xff000000u);
  gsize i = 0;

  for (; i + 6 <= n; i += 4, dst += 12) {
    __m128i v = _mm_loadu_si128 ((const __m128i *) (src + i));
    if (_mm_movemask_epi8 (_mm_cmpeq_epi32 (_mm_and_si128 (v, amask),
                amask)) != 0xffff)
      break;
    _mm_storeu_si128 ((__m128i *) dst, _mm_shuffle_epi8 (v, shuf));
  }
  return i;
}

static gboolean
have_ssse3 (void)
{
  static gsize once = 0;
  static gboolean yes;

  if (g_once_init_enter (&once)) {
    __builtin_cpu_init ();
    yes = __builtin_cpu_supports ("ssse3");
    g_once_init_leave (&once, 1);
  }
  return yes;
}
#endif

void
wsi_slide_argb_to_rgb (const guint32 * src, guint8 * dst, gsize n,
    const guint8 bg[3])
{
#ifdef HAVE_X86_SIMD
  if (have_ssse3 ()) {
    while (n > 0) {
      gsize done = argb_to_rgb_opaque_ssse3 (src, dst, n), rest;
      src += done;
      dst += done * 3;
      n -= done;
      rest = MIN (n, 4);
      argb_to_rgb_scalar (src, dst, rest, bg);
      src += rest;
      dst += rest * 3;
      n -= rest;
    }
    return;
  }
#endif
  argb_to_rgb_scalar (src, dst, n, bg);
}

void
wsi_slide_fill_rgb (guint8 * dst, gsize n, const guint8 bg[3])
{
  for (gsize i = 0; i < n; i++, dst += 3) {
    dst[0] = bg[0];
    dst[1] = bg[1];
    dst[2] = bg[2];
  }
}

/* ------------------------------------------------------------------ */
/* Opening                                                             */

static gdouble
prop_double (openslide_t * osr, const gchar * name)
{
  const gchar *s = openslide_get_property_value (osr, name);
  gchar *end = NULL;
  gdouble v;

  if (!s)
    return 0.0;
  v = g_ascii_strtod (s, &end);
  if (end == s || !isfinite (v) || v < 0)
    return 0.0;
  return v;
}

static gboolean
prop_int64 (openslide_t * osr, const gchar * name, gint64 * out)
{
  const gchar *s = openslide_get_property_value (osr, name);
  gchar *end = NULL;

  if (!s || !*s)
    return FALSE;
  *out = g_ascii_strtoll (s, &end, 10);
  return *end == '\0';
}

/* File checks OpenSlide would report as "unsupported format". */
static gboolean
check_file (const gchar * path, GError ** error)
{
  GStatBuf st;
  gint fd;

  if (g_stat (path, &st) != 0) {
    gint err = errno;
    g_set_error (error, WSI_SLIDE_ERROR, err == ENOENT || err == ENOTDIR ?
        WSI_SLIDE_ERROR_NOT_FOUND : WSI_SLIDE_ERROR_OPEN,
        "Could not open \"%s\": %s.", path, g_strerror (err));
    return FALSE;
  }
  if (S_ISDIR (st.st_mode)) {
    g_set_error (error, WSI_SLIDE_ERROR, WSI_SLIDE_ERROR_OPEN,
        "Could not open \"%s\": it is a directory, not a slide or image.",
        path);
    return FALSE;
  }
  if (!S_ISREG (st.st_mode)) {
    g_set_error (error, WSI_SLIDE_ERROR, WSI_SLIDE_ERROR_OPEN,
        "Could not open \"%s\": not a regular file (a FIFO, socket or "
        "device), not a slide or image.", path);
    return FALSE;
  }
  if (st.st_size == 0) {
    g_set_error (error, WSI_SLIDE_ERROR, WSI_SLIDE_ERROR_OPEN,
        "Could not open \"%s\": the file is empty (0 bytes).", path);
    return FALSE;
  }
  /* so that permission denied is reported as such */
  fd = g_open (path, O_RDONLY, 0);
  if (fd < 0) {
    gint err = errno;
    g_set_error (error, WSI_SLIDE_ERROR, WSI_SLIDE_ERROR_OPEN,
        "Could not open \"%s\" for reading: %s.", path, g_strerror (err));
    return FALSE;
  }
  g_close (fd, NULL);
  return TRUE;
}

static gboolean
open_png (WsiSlide * s, GError ** error)
{
  GError *e = NULL;
  gint w, h;

  s->png = wsi_png_read_rgb8 (s->path, &w, &h, WSI_PNG_MAX_RGB_PIXELS,
      WSI_PNG_RGB_DEFAULT, &e);
  if (!s->png) {
    WsiSlideError code = WSI_SLIDE_ERROR_CORRUPT;
    if (g_error_matches (e, WSI_PNG_ERROR, WSI_PNG_ERROR_TOO_LARGE))
      code = WSI_SLIDE_ERROR_TOO_LARGE;
    else if (g_error_matches (e, WSI_PNG_ERROR, WSI_PNG_ERROR_NO_MEMORY))
      code = WSI_SLIDE_ERROR_NO_MEMORY;
    else if (g_error_matches (e, WSI_PNG_ERROR, WSI_PNG_ERROR_NOT_FOUND))
      code = WSI_SLIDE_ERROR_NOT_FOUND;
    else if (g_error_matches (e, WSI_PNG_ERROR, WSI_PNG_ERROR_OPEN))
      code = WSI_SLIDE_ERROR_OPEN;
    g_set_error (error, WSI_SLIDE_ERROR, code, "Could not decode PNG: %s.",
        e->message);
    g_error_free (e);
    return FALSE;
  }
  s->width = w;
  s->height = h;
  s->nlevels = 1;
  return TRUE;
}

static gboolean
open_openslide (WsiSlide * s, GError ** error)
{
  const gchar *err, *bgs;

  s->osr = openslide_open (s->path);
  if (!s->osr) {
    g_set_error (error, WSI_SLIDE_ERROR, WSI_SLIDE_ERROR_FORMAT,
        "Could not open \"%s\": not a PNG and not a slide format OpenSlide "
        "recognizes.", s->path);
    return FALSE;
  }
  err = openslide_get_error (s->osr);
  if (err) {
    g_set_error (error, WSI_SLIDE_ERROR, WSI_SLIDE_ERROR_CORRUPT,
        "Could not open slide \"%s\": %s.", s->path, err);
    return FALSE;
  }
  s->nlevels = openslide_get_level_count (s->osr);
  openslide_get_level0_dimensions (s->osr, &s->width, &s->height);
  if (s->nlevels < 1 || s->width <= 0 || s->height <= 0) {
    g_set_error (error, WSI_SLIDE_ERROR, WSI_SLIDE_ERROR_CORRUPT,
        "Could not open slide \"%s\": it has no readable levels.", s->path);
    return FALSE;
  }
  bgs = openslide_get_property_value (s->osr,
      OPENSLIDE_PROPERTY_NAME_BACKGROUND_COLOR);
  if (bgs && strlen (bgs) == 6 && strspn (bgs, "0123456789abcdefABCDEF") == 6) {
    guint64 c = g_ascii_strtoull (bgs, NULL, 16);
    s->bg[0] = (c >> 16) & 0xff;
    s->bg[1] = (c >> 8) & 0xff;
    s->bg[2] = c & 0xff;
  }
  return TRUE;
}

WsiSlide *
wsi_slide_open (const gchar * path, GError ** error)
{
  static const gchar *const none[] = { NULL };
  WsiSlide *s;

  g_return_val_if_fail (path != NULL, NULL);
  if (!check_file (path, error))
    return NULL;
  s = g_new0 (WsiSlide, 1);
  s->path = g_strdup (path);
  s->bg[0] = s->bg[1] = s->bg[2] = 255;
  s->no_props = none;
  if (!(wsi_png_is_png (path) ? open_png (s, error) : open_openslide (s,
              error))) {
    wsi_slide_free (s);
    return NULL;
  }
  return s;
}

void
wsi_slide_free (WsiSlide * s)
{
  if (!s)
    return;
  g_clear_pointer (&s->osr, openslide_close);
  g_free (s->png);
  g_free (s->scratch);
  g_free (s->path);
  g_free (s);
}

const gchar *
wsi_slide_get_path (WsiSlide * s)
{
  return s->path;
}

gboolean
wsi_slide_is_png (WsiSlide * s)
{
  return s->png != NULL;
}

const gchar *
wsi_slide_get_vendor (WsiSlide * s)
{
  const gchar *v;

  if (s->png)
    return "png";
  v = openslide_get_property_value (s->osr, OPENSLIDE_PROPERTY_NAME_VENDOR);
  return v ? v : "unknown";
}

const gchar *
wsi_slide_get_property (WsiSlide * s, const gchar * name)
{
  return s->osr ? openslide_get_property_value (s->osr, name) : NULL;
}

const gchar *const *
wsi_slide_get_property_names (WsiSlide * s)
{
  return s->osr ? openslide_get_property_names (s->osr) : s->no_props;
}

gint
wsi_slide_get_level_count (WsiSlide * s)
{
  return s->nlevels;
}

void
wsi_slide_get_level_dimensions (WsiSlide * s, gint level, gint64 * w,
    gint64 * h)
{
  *w = s->width;
  *h = s->height;
  if (s->osr)
    openslide_get_level_dimensions (s->osr, level, w, h);
}

gdouble
wsi_slide_get_level_downsample (WsiSlide * s, gint level)
{
  return s->osr ? openslide_get_level_downsample (s->osr, level) : 1.0;
}

void
wsi_slide_get_mpp (WsiSlide * s, gdouble * mpp_x, gdouble * mpp_y)
{
  *mpp_x = s->osr ? prop_double (s->osr, OPENSLIDE_PROPERTY_NAME_MPP_X) : 0;
  *mpp_y = s->osr ? prop_double (s->osr, OPENSLIDE_PROPERTY_NAME_MPP_Y) : 0;
}

void
wsi_slide_get_background (WsiSlide * s, guint8 bg[3])
{
  memcpy (bg, s->bg, 3);
}

gboolean
wsi_slide_get_bounds (WsiSlide * s, gint64 * x, gint64 * y, gint64 * w,
    gint64 * h)
{
  gint64 bx, by, bw, bh;

  if (s->osr &&
      prop_int64 (s->osr, OPENSLIDE_PROPERTY_NAME_BOUNDS_X, &bx) &&
      prop_int64 (s->osr, OPENSLIDE_PROPERTY_NAME_BOUNDS_Y, &by) &&
      prop_int64 (s->osr, OPENSLIDE_PROPERTY_NAME_BOUNDS_WIDTH, &bw) &&
      prop_int64 (s->osr, OPENSLIDE_PROPERTY_NAME_BOUNDS_HEIGHT, &bh) &&
      bx >= 0 && by >= 0 && bw > 0 && bh > 0 &&
      bx <= s->width - bw && by <= s->height - bh) {
    *x = bx;
    *y = by;
    *w = bw;
    *h = bh;
    return TRUE;
  }
  return FALSE;
}

gint64
wsi_slide_level_extent (gint64 r0, gint64 len, gint64 full, gdouble ds,
    gint64 level_size)
{
  gint64 n = (gint64) ceil (len / ds - 1e-9);
  gint64 avail = level_size - (gint64) floor (r0 / ds + 1e-9);

  if (avail < 1)
    return n;
  if (r0 + len >= full || n > avail)
    n = avail;
  return n;
}

/* ------------------------------------------------------------------ */
/* Region reads                                                        */

static guint32 *
scratch_get (WsiSlide * s, gsize pixels)
{
  if (pixels > G_MAXSIZE / sizeof (guint32))
    return NULL;
  if (s->scratch_len < pixels) {
    g_free (s->scratch);
    s->scratch = g_try_new (guint32, pixels);
    s->scratch_len = s->scratch ? pixels : 0;
  }
  return s->scratch;
}

gboolean
wsi_slide_read_argb (WsiSlide * s, gint level, gint64 x, gint64 y, gint64 w,
    gint64 h, guint32 * argb, GError ** error)
{
  const gchar *err;

  if (!s->osr || w <= 0 || h <= 0 || w > G_MAXINT32 || h > G_MAXINT32
      || level < 0 || level >= s->nlevels) {
    g_set_error (error, WSI_SLIDE_ERROR, WSI_SLIDE_ERROR_ARGUMENT,
        "Could not read \"%s\": not a slide, no level %d or a bad %"
        G_GINT64_FORMAT "x%" G_GINT64_FORMAT " region.", s->path, level, w, h);
    return FALSE;
  }
  openslide_read_region (s->osr, argb, x, y, level, w, h);
  err = openslide_get_error (s->osr);
  if (err) {
    g_set_error (error, WSI_SLIDE_ERROR, WSI_SLIDE_ERROR_CORRUPT,
        "Could not read slide \"%s\": %s.", s->path, err);
    return FALSE;
  }
  return TRUE;
}

gboolean
wsi_slide_read_region (WsiSlide * s, gint level, gint64 x, gint64 y,
    gint64 w, gint64 h, guint8 * rgb, gsize stride, GError ** error)
{
  if (w <= 0 || h <= 0 || level < 0 || level >= s->nlevels) {
    g_set_error (error, WSI_SLIDE_ERROR, WSI_SLIDE_ERROR_ARGUMENT,
        "Could not read \"%s\": no level %d or an empty %" G_GINT64_FORMAT
        "x%" G_GINT64_FORMAT " region.", s->path, level, w, h);
    return FALSE;
  }
  if (s->png) {
    gsize src_stride = (gsize) s->width * 3;
    gint64 x0 = CLAMP (x, 0, s->width), x1 = CLAMP (x + w, 0, s->width);

    for (gint64 r = 0; r < h; r++) {
      guint8 *row = rgb + (gsize) r * stride;
      gint64 sy = y + r;
      if (sy < 0 || sy >= s->height || x1 <= x0) {
        wsi_slide_fill_rgb (row, w, s->bg);
        continue;
      }
      wsi_slide_fill_rgb (row, x0 - x, s->bg);
      memcpy (row + (x0 - x) * 3, s->png + sy * src_stride + x0 * 3,
          (gsize) (x1 - x0) * 3);
      wsi_slide_fill_rgb (row + (x1 - x) * 3, x + w - x1, s->bg);
    }
    return TRUE;
  } else {
    guint32 *argb;

    if (w > G_MAXINT32 || h > G_MAXINT32
        || !(argb = scratch_get (s, (gsize) w * h))) {
      g_set_error (error, WSI_SLIDE_ERROR, WSI_SLIDE_ERROR_NO_MEMORY,
          "Not enough memory reading \"%s\" (level %d, %" G_GINT64_FORMAT "x%"
          G_GINT64_FORMAT " block).", s->path, level, w, h);
      return FALSE;
    }
    if (!wsi_slide_read_argb (s, level, x, y, w, h, argb, error))
      return FALSE;
    if (stride == (gsize) w * 3)
      wsi_slide_argb_to_rgb (argb, rgb, (gsize) w * h, s->bg);
    else
      for (gint64 r = 0; r < h; r++)
        wsi_slide_argb_to_rgb (argb + (gsize) r * w, rgb + (gsize) r * stride,
            w, s->bg);
    return TRUE;
  }
}

/* ------------------------------------------------------------------ */
/* Thumbnails                                                          */

static gboolean
cancelled (const gint * cancel, WsiSlide * s, GError ** error)
{
  if (cancel && g_atomic_int_get (cancel)) {
    g_set_error (error, WSI_SLIDE_ERROR, WSI_SLIDE_ERROR_CANCELLED,
        "Reading \"%s\" was cancelled.", s->path);
    return TRUE;
  }
  return FALSE;
}

/* One axis of a thumbnail: thumbnail pixel u covers level-0
 * [r0 + u * scale, r0 + (u + 1) * scale); level pixel a (of n in the
 * region at downsample ds) falls in thumbnail pixel floor (a * ds / scale).
 * The epsilon keeps whole ratios whole in floating point. */
typedef struct
{
  gdouble k;                    /* ds / scale */
  gint64 n_lev;                 /* level pixels in the region */
  gint n_out;
} ThumbAxis;

static inline gint64
axis_out (const ThumbAxis * ax, gint64 a)
{
  return MIN ((gint64) ax->n_out - 1, (gint64) floor (a * ax->k + 1e-7));
}

/* First level pixel of thumbnail pixel @u (n_lev past the last). */
static inline gint64
axis_first (const ThumbAxis * ax, gint64 u)
{
  gint64 a;

  if (u >= ax->n_out)
    return ax->n_lev;
  a = MAX (0, (gint64) ceil (u / ax->k - 1e-7) - 1);
  while (a < ax->n_lev && axis_out (ax, a) < u)
    a++;
  return MIN (a, ax->n_lev);
}

/* Every level pixel of the region averaged into its thumbnail pixel; reads
 * blocks of whole thumbnail rows, at most THUMB_BLOCK_PIXELS each. */
static gboolean
thumb_full (WsiSlide * s, gint level, gint64 x, gint64 y,
    const ThumbAxis * ax, const ThumbAxis * ay, const gint * cancel,
    guint8 * out, WsiSlideReadStats * st, GError ** error)
{
  gdouble ds = wsi_slide_get_level_downsample (s, level);
  gint ow = ax->n_out, oh = ay->n_out;
  gint64 lw = ax->n_lev;
  gint64 rows_per_out = (gint64) ceil (1.0 / ay->k) + 1;
  gint64 bw = MIN (lw, (gint64) MAX (1, THUMB_BLOCK_PIXELS / rows_per_out));
  gint64 group = MAX (1, (gint64) (THUMB_BLOCK_PIXELS / bw) / rows_per_out);
  guint64 *sums = NULL;
  guint32 *counts = NULL;
  guint8 *block = NULL;
  gboolean ok = FALSE;

  group = MIN (group, oh);
  sums = g_try_new0 (guint64, (gsize) ow * group * 3);
  counts = g_try_new0 (guint32, (gsize) ow * group);
  block = g_try_malloc ((gsize) bw * rows_per_out * group * 3);
  if (!sums || !counts || !block) {
    g_set_error (error, WSI_SLIDE_ERROR, WSI_SLIDE_ERROR_NO_MEMORY,
        "Not enough memory for a %dx%d thumbnail of \"%s\".", ow, oh, s->path);
    goto done;
  }

  for (gint64 v0 = 0; v0 < oh; v0 += group) {
    gint64 v1 = MIN (oh, v0 + group);
    gint64 b0 = axis_first (ay, v0), b1 = axis_first (ay, v1);

    memset (sums, 0, (gsize) ow * group * 3 * sizeof (guint64));
    memset (counts, 0, (gsize) ow * group * sizeof (guint32));
    for (gint64 a0 = 0; a0 < lw && b1 > b0; a0 += bw) {
      gint64 n = MIN (bw, lw - a0);

      if (cancelled (cancel, s, error))
        goto done;
      /* level pixel (a, b) starts at level-0 (x + a * ds, y + b * ds) */
      if (!wsi_slide_read_region (s, level, x + (gint64) llround (a0 * ds),
              y + (gint64) llround (b0 * ds), n, b1 - b0, block, n * 3,
              error))
        goto done;
      st->pixels_read += (guint64) n * (b1 - b0);
      st->reads++;
      for (gint64 b = b0; b < b1; b++) {
        gint64 v = axis_out (ay, b) - v0;
        const guint8 *p = block + (gsize) (b - b0) * n * 3;
        guint64 *srow = sums + (gsize) v * ow * 3;
        guint32 *crow = counts + (gsize) v * ow;
        for (gint64 a = a0; a < a0 + n; a++, p += 3) {
          gint64 u = axis_out (ax, a);
          srow[3 * u] += p[0];
          srow[3 * u + 1] += p[1];
          srow[3 * u + 2] += p[2];
          crow[u]++;
        }
      }
    }
    for (gint64 v = v0; v < v1; v++)
      for (gint64 u = 0; u < ow; u++) {
        gsize i = (gsize) (v - v0) * ow + u;
        guint8 *o = out + ((gsize) v * ow + u) * 3;
        if (counts[i] == 0) {   /* past the slide */
          memcpy (o, s->bg, 3);
          continue;
        }
        for (gint k = 0; k < 3; k++)
          o[k] = (guint8) ((sums[3 * i + k] + counts[i] / 2) / counts[i]);
      }
  }
  ok = TRUE;

done:
  g_free (sums);
  g_free (counts);
  g_free (block);
  return ok;
}

/* The level is coarser than the thumbnail (k > 1, e.g. a stitch upsampled
 * by target-mpp): each thumbnail pixel is the level pixel under its centre,
 * read in blocks of whole rows. */
static gboolean
thumb_nearest (WsiSlide * s, gint level, gint64 x, gint64 y,
    const ThumbAxis * ax, const ThumbAxis * ay, const gint * cancel,
    guint8 * out, WsiSlideReadStats * st, GError ** error)
{
  gdouble ds = wsi_slide_get_level_downsample (s, level);
  gint64 lw = ax->n_lev, rows = MAX (1, (gint64) (THUMB_BLOCK_PIXELS / lw));
  guint8 *block = g_try_malloc ((gsize) lw * MIN (rows, ay->n_lev) * 3);
  gint64 b0 = 0, b1 = 0;

  if (!block) {
    g_set_error (error, WSI_SLIDE_ERROR, WSI_SLIDE_ERROR_NO_MEMORY,
        "Not enough memory for a thumbnail of \"%s\".", s->path);
    return FALSE;
  }
  for (gint64 v = 0; v < ay->n_out; v++) {
    gint64 b = MIN (ay->n_lev - 1, (gint64) floor ((v + 0.5) / ay->k));
    guint8 *o = out + (gsize) v * ax->n_out * 3;

    if (b >= b1) {
      b0 = b;
      b1 = MIN (ay->n_lev, b0 + rows);
      if (cancelled (cancel, s, error) ||
          !wsi_slide_read_region (s, level, x, y + (gint64) llround (b0 * ds),
              lw, b1 - b0, block, (gsize) lw * 3, error)) {
        g_free (block);
        return FALSE;
      }
      st->pixels_read += (guint64) lw * (b1 - b0);
      st->reads++;
    }
    for (gint64 u = 0; u < ax->n_out; u++) {
      gint64 a = MIN (lw - 1, (gint64) floor ((u + 0.5) / ax->k));
      memcpy (o + u * 3, block + ((gsize) (b - b0) * lw + a) * 3, 3);
    }
  }
  g_free (block);
  return TRUE;
}

/* Window [*w0, *w1) of @q level pixels at the centre of thumbnail pixel @u,
 * inside the region; FALSE when the pixel is past the slide. */
static gboolean
axis_window (const ThumbAxis * ax, gint64 u, guint q, gint64 * w0,
    gint64 * w1)
{
  gint64 a0 = axis_first (ax, u), a1 = axis_first (ax, u + 1), c;

  if (a0 >= ax->n_lev)
    return FALSE;
  c = (a0 + MAX (a1, a0 + 1)) / 2;
  *w0 = CLAMP (c - (gint64) q / 2, 0, MAX (0, ax->n_lev - (gint64) q));
  *w1 = MIN (ax->n_lev, *w0 + q);
  return TRUE;
}

/* Each thumbnail pixel: the average of a @q x @q window (clipped to the
 * region) at the centre of its footprint, one read each. */
static gboolean
thumb_sampled (WsiSlide * s, gint level, gint64 x, gint64 y,
    const ThumbAxis * ax, const ThumbAxis * ay, guint q, const gint * cancel,
    guint8 * out, WsiSlideReadStats * st, GError ** error)
{
  gdouble ds = wsi_slide_get_level_downsample (s, level);
  guint8 *win = g_try_malloc ((gsize) q * q * 3);

  if (!win) {
    g_set_error (error, WSI_SLIDE_ERROR, WSI_SLIDE_ERROR_NO_MEMORY,
        "Not enough memory for a thumbnail of \"%s\".", s->path);
    return FALSE;
  }
  for (gint64 v = 0; v < ay->n_out; v++) {
    gint64 wy0, wy1;
    gboolean row = axis_window (ay, v, q, &wy0, &wy1);

    if (cancelled (cancel, s, error)) {
      g_free (win);
      return FALSE;
    }
    for (gint64 u = 0; u < ax->n_out; u++) {
      gint64 wx0, wx1, n;
      guint64 sum[3] = { 0, 0, 0 };
      guint8 *o = out + ((gsize) v * ax->n_out + u) * 3;

      if (!row || !axis_window (ax, u, q, &wx0, &wx1)) {
        memcpy (o, s->bg, 3);
        continue;
      }
      if (!wsi_slide_read_region (s, level, x + (gint64) llround (wx0 * ds),
              y + (gint64) llround (wy0 * ds), wx1 - wx0, wy1 - wy0, win,
              (gsize) (wx1 - wx0) * 3, error)) {
        g_free (win);
        return FALSE;
      }
      n = (wx1 - wx0) * (wy1 - wy0);
      st->pixels_read += n;
      st->reads++;
      for (gint64 i = 0; i < n; i++)
        for (gint k = 0; k < 3; k++)
          sum[k] += win[3 * i + k];
      for (gint k = 0; k < 3; k++)
        o[k] = (guint8) ((sum[k] + n / 2) / n);
    }
  }
  g_free (win);
  return TRUE;
}

gboolean
wsi_slide_read_thumbnail (WsiSlide * s, gint64 x, gint64 y, gint64 w,
    gint64 h, gdouble scale, gint ow, gint oh, guint64 max_read,
    const gint * cancel, guint8 * rgb, WsiSlideReadStats * stats,
    GError ** error)
{
  WsiSlideReadStats dummy;
  WsiSlideReadStats *st = stats ? stats : &dummy;
  ThumbAxis ax = { 0 }, ay = { 0 };
  gint level = 0, l;
  gdouble ds;

  memset (st, 0, sizeof (*st));
  if (ow <= 0 || oh <= 0 || w <= 0 || h <= 0 || x < 0 || y < 0
      || x > s->width - w || y > s->height - h || !(scale >= 1e-6)
      || !isfinite (scale)) {
    g_set_error (error, WSI_SLIDE_ERROR, WSI_SLIDE_ERROR_ARGUMENT,
        "Cannot make a %dx%d thumbnail (%g level-0 pixels a pixel) of region "
        "%" G_GINT64_FORMAT ",%" G_GINT64_FORMAT ",%" G_GINT64_FORMAT ",%"
        G_GINT64_FORMAT " of \"%s\" (%" G_GINT64_FORMAT "x%" G_GINT64_FORMAT
        ").", ow, oh, scale, x, y, w, h, s->path, s->width, s->height);
    return FALSE;
  }
  /* the coarsest level at most as coarse as the thumbnail ... */
  for (l = 1; l < s->nlevels; l++) {
    gdouble d = wsi_slide_get_level_downsample (s, l);
    if (isfinite (d) && d >= 1.0 && d <= scale * (1.0 + 1e-9))
      level = l;
  }
  /* ... or coarser, until the read fits max_read */
  for (l = level; l < s->nlevels; l++) {
    gdouble d = wsi_slide_get_level_downsample (s, l);
    gint64 sw, sh;
    if (!isfinite (d) || d < 1.0)
      continue;
    wsi_slide_get_level_dimensions (s, l, &sw, &sh);
    level = l;
    ax.n_lev = MAX (1, wsi_slide_level_extent (x, w, s->width, d, sw));
    ay.n_lev = MAX (1, wsi_slide_level_extent (y, h, s->height, d, sh));
    if ((guint64) ax.n_lev * ay.n_lev <= max_read)
      break;
  }
  if (ax.n_lev == 0) {
    g_set_error (error, WSI_SLIDE_ERROR, WSI_SLIDE_ERROR_CORRUPT,
        "\"%s\" has no level with a valid downsample.", s->path);
    return FALSE;
  }
  ds = wsi_slide_get_level_downsample (s, level);
  ax.k = ay.k = ds / scale;
  ax.n_out = ow;
  ay.n_out = oh;
  st->level = level;
  if (ax.k > 1.0 + 1e-9 && (guint64) ax.n_lev * ay.n_lev <= max_read)
    return thumb_nearest (s, level, x, y, &ax, &ay, cancel, rgb, st, error);
  if ((guint64) ax.n_lev * ay.n_lev <= max_read)
    return thumb_full (s, level, x, y, &ax, &ay, cancel, rgb, st, error);

  st->sampled = TRUE;
  st->window = (guint) CLAMP (floor (sqrt ((gdouble) max_read /
              ((gdouble) ow * oh))), 1.0, (gdouble) MIN (MIN (ax.n_lev,
              ay.n_lev), 4096));
  return thumb_sampled (s, level, x, y, &ax, &ay, st->window, cancel, rgb,
      st, error);
}

guint8 *
wsi_slide_read_overview (WsiSlide * s, guint64 max_pixels,
    const gint * cancel, gint * width, gint * height,
    WsiSlideReadStats * stats, GError ** error)
{
  WsiSlideReadStats dummy;
  WsiSlideReadStats *st = stats ? stats : &dummy;
  gint level = s->nlevels - 1;
  gdouble ds = wsi_slide_get_level_downsample (s, level);
  gint64 lw, lh, gx, gy, ow, oh, q;
  guint8 *rgb;

  memset (st, 0, sizeof (*st));
  st->level = level;
  wsi_slide_get_level_dimensions (s, level, &lw, &lh);
  if (lw <= 0 || lh <= 0 || !isfinite (ds) || ds < 1.0) {
    g_set_error (error, WSI_SLIDE_ERROR, WSI_SLIDE_ERROR_CORRUPT,
        "\"%s\": unusable pyramid level %d.", s->path, level);
    return NULL;
  }
  max_pixels = MAX (max_pixels, OVERVIEW_WINDOW * OVERVIEW_WINDOW);
  if ((guint64) lw * lh <= max_pixels) {
    /* the whole level, in blocks of whole rows */
    q = 0;
    gx = gy = 1;
    ow = lw;
    oh = lh;
  } else {
    /* windows on a regular grid, side by side */
    gdouble cells = (gdouble) max_pixels / (OVERVIEW_WINDOW * OVERVIEW_WINDOW);
    q = OVERVIEW_WINDOW;
    gx = CLAMP ((gint64) floor (sqrt (cells * lw / lh)), 1, MAX (1, lw / q));
    gy = CLAMP ((gint64) floor (cells / gx), 1, MAX (1, lh / q));
    ow = gx * MIN (q, lw);
    oh = gy * MIN (q, lh);
    st->sampled = TRUE;
    st->window = q;
  }
  if (ow > G_MAXINT / 3 || oh > G_MAXINT / 3 ||
      !(rgb = g_try_malloc ((gsize) ow * oh * 3))) {
    g_set_error (error, WSI_SLIDE_ERROR, WSI_SLIDE_ERROR_NO_MEMORY,
        "Not enough memory for a %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT
        " overview of \"%s\".", ow, oh, s->path);
    return NULL;
  }

  if (q == 0) {
    gint64 rows = MAX (1, (gint64) (THUMB_BLOCK_PIXELS / lw));
    for (gint64 b0 = 0; b0 < lh; b0 += rows) {
      gint64 n = MIN (rows, lh - b0);
      if (cancelled (cancel, s, error) ||
          !wsi_slide_read_region (s, level, 0, (gint64) llround (b0 * ds),
              lw, n, rgb + (gsize) b0 * lw * 3, (gsize) lw * 3, error))
        goto fail;
      st->pixels_read += (guint64) lw * n;
      st->reads++;
    }
  } else {
    gint64 qw = MIN (q, lw), qh = MIN (q, lh);
    for (gint64 j = 0; j < gy; j++)
      for (gint64 i = 0; i < gx; i++) {
        /* window centred in grid cell (i, j) of the level */
        gint64 wx = (lw * (2 * i + 1)) / (2 * gx) - qw / 2;
        gint64 wy = (lh * (2 * j + 1)) / (2 * gy) - qh / 2;
        wx = CLAMP (wx, 0, lw - qw);
        wy = CLAMP (wy, 0, lh - qh);
        if (cancelled (cancel, s, error) ||
            !wsi_slide_read_region (s, level, (gint64) llround (wx * ds),
                (gint64) llround (wy * ds), qw, qh,
                rgb + ((gsize) j * qh * ow + (gsize) i * qw) * 3,
                (gsize) ow * 3, error))
          goto fail;
        st->pixels_read += (guint64) qw * qh;
        st->reads++;
      }
  }
  *width = (gint) ow;
  *height = (gint) oh;
  return rgb;

fail:
  g_free (rgb);
  return NULL;
}
