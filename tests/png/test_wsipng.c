/* wsipng: every PNG kind (written here with libpng's writer) decodes to the
 * values computed independently from the written samples; bad files
 * (missing, empty, random bytes, truncated, corrupt, forged IHDR sizes,
 * mutated) give a GError naming the file, never a crash. Suites png, asan. */
#include <glib.h>
#include <glib/gstdio.h>
#include <math.h>
#include <png.h>
#include <string.h>
#include <zlib.h>

#include "wsipng.h"

#define BIG_MAX ((gsize) 1 << 31)

static gchar *tmpdir;

/* ---- writing test PNGs ---- */

typedef struct
{
  const gchar *name;
  gint ctype, depth;
  gboolean interlace, trns;
  gint width, height;
} Kind;

typedef struct
{
  const Kind *k;
  guint16 *samples;             /* width * height * channels */
  png_color palette[256];
  guint8 pal_alpha[256];
  gint n_palette, n_trans;
  png_color_16 key;             /* tRNS of gray / RGB */
} Image;

static gint
channels_of (gint ctype)
{
  switch (ctype) {
    case PNG_COLOR_TYPE_GRAY_ALPHA:
      return 2;
    case PNG_COLOR_TYPE_RGB:
      return 3;
    case PNG_COLOR_TYPE_RGB_ALPHA:
      return 4;
    default:
      return 1;
  }
}

static void
image_free (Image * im)
{
  g_free (im->samples);
}

/* Random samples; with a tRNS key, about one pixel in 5 equals the key. */
static void
image_make (Image * im, const Kind * k, guint32 seed)
{
  GRand *rand = g_rand_new_with_seed (seed);
  gint ch = channels_of (k->ctype);
  gsize n = (gsize) k->width * k->height, i;
  guint32 top = k->ctype == PNG_COLOR_TYPE_PALETTE ?
      MIN (256u, 1u << k->depth) : (1u << k->depth);
  gint c;

  memset (im, 0, sizeof (*im));
  im->k = k;
  if (k->ctype == PNG_COLOR_TYPE_PALETTE) {
    im->n_palette = (gint) top;
    for (c = 0; c < im->n_palette; c++) {
      im->palette[c].red = g_rand_int_range (rand, 0, 256);
      im->palette[c].green = g_rand_int_range (rand, 0, 256);
      im->palette[c].blue = g_rand_int_range (rand, 0, 256);
      im->pal_alpha[c] = g_rand_int_range (rand, 0, 256);
    }
    im->pal_alpha[0] = 255;
    im->n_trans = k->trns ? MAX (1, im->n_palette - 1) : 0;
  }
  im->key.gray = g_rand_int_range (rand, 0, top);
  im->key.red = g_rand_int_range (rand, 0, top);
  im->key.green = g_rand_int_range (rand, 0, top);
  im->key.blue = g_rand_int_range (rand, 0, top);
  im->samples = g_new (guint16, n * ch);
  for (i = 0; i < n; i++) {
    guint16 *s = im->samples + i * ch;
    if (k->trns && k->ctype != PNG_COLOR_TYPE_PALETTE
        && g_rand_int_range (rand, 0, 5) == 0) {
      if (k->ctype == PNG_COLOR_TYPE_GRAY) {
        s[0] = im->key.gray;
      } else {
        s[0] = im->key.red;
        s[1] = im->key.green;
        s[2] = im->key.blue;
      }
      continue;
    }
    for (c = 0; c < ch; c++)
      s[c] = g_rand_int_range (rand, 0, top);
    /* some fully opaque and fully transparent alpha values */
    if ((k->ctype & PNG_COLOR_MASK_ALPHA) && i % 7 == 0)
      s[ch - 1] = top - 1;
    if ((k->ctype & PNG_COLOR_MASK_ALPHA) && i % 11 == 0)
      s[ch - 1] = 0;
  }
  g_rand_free (rand);
}

/* Packs one row as the PNG stores it (MSB first, 16-bit big-endian). */
static void
pack_row (const Image * im, gint y, guint8 * out)
{
  const Kind *k = im->k;
  gint ch = channels_of (k->ctype);
  gsize n = (gsize) k->width * ch, i;
  const guint16 *s = im->samples + (gsize) y * n;

  if (k->depth == 16) {
    for (i = 0; i < n; i++) {
      out[2 * i] = s[i] >> 8;
      out[2 * i + 1] = s[i] & 0xff;
    }
  } else if (k->depth == 8) {
    for (i = 0; i < n; i++)
      out[i] = s[i];
  } else {
    gint per = 8 / k->depth;
    memset (out, 0, (n + per - 1) / per);
    for (i = 0; i < n; i++)
      out[i / per] |= s[i] << (8 - k->depth * (gint) (i % per + 1));
  }
}

static gchar *
write_png (const Image * im)
{
  const Kind *k = im->k;
  gchar *path = g_build_filename (tmpdir, k->name, NULL);
  FILE *fp = g_fopen (path, "wb");
  png_structp png;
  png_infop info;
  gsize rowbytes = ((gsize) k->width * channels_of (k->ctype) * k->depth + 7)
      / 8;
  guint8 *data = g_malloc0 (rowbytes * k->height);
  png_bytep *rows = g_new (png_bytep, k->height);
  gint y;

  g_assert_nonnull (fp);
  png = png_create_write_struct (PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  info = png_create_info_struct (png);
  g_assert_true (png && info);
  if (setjmp (png_jmpbuf (png)))
    g_error ("libpng failed writing %s", path);
  png_init_io (png, fp);
  png_set_IHDR (png, info, k->width, k->height, k->depth, k->ctype,
      k->interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
      PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (k->ctype == PNG_COLOR_TYPE_PALETTE) {
    png_set_PLTE (png, info, im->palette, im->n_palette);
    if (im->n_trans)
      png_set_tRNS (png, info, im->pal_alpha, im->n_trans, NULL);
  } else if (k->trns) {
    png_set_tRNS (png, info, NULL, 0, &im->key);
  }
  png_write_info (png, info);
  png_set_interlace_handling (png);
  for (y = 0; y < k->height; y++) {
    rows[y] = data + (gsize) y * rowbytes;
    pack_row (im, y, rows[y]);
  }
  png_write_image (png, rows);
  png_write_end (png, NULL);
  png_destroy_write_struct (&png, &info);
  fclose (fp);
  g_free (rows);
  g_free (data);
  return path;
}

/* ---- expected values, from the samples ---- */

static guint
to8 (guint v, gint depth, gboolean truncate16)
{
  if (depth == 16)
    return truncate16 ? v >> 8 : (2 * v + 257) / 514;   /* round (v / 257) */
  return v * 255 / ((1u << depth) - 1);
}

static void
expected_rgb (const Image * im, gsize i, WsiPngRgbFlags flags, guint8 out[3])
{
  const Kind *k = im->k;
  gint ch = channels_of (k->ctype);
  const guint16 *s = im->samples + i * ch;
  gboolean t16 = (flags & WSI_PNG_RGB_TRUNCATE_16) != 0;
  guint rgb[3], a = 255, c;

  if (k->ctype == PNG_COLOR_TYPE_PALETTE) {
    rgb[0] = im->palette[s[0]].red;
    rgb[1] = im->palette[s[0]].green;
    rgb[2] = im->palette[s[0]].blue;
    if (s[0] < im->n_trans)
      a = im->pal_alpha[s[0]];
  } else if (k->ctype & PNG_COLOR_MASK_COLOR) {
    for (c = 0; c < 3; c++)
      rgb[c] = to8 (s[c], k->depth, t16);
    if (k->ctype & PNG_COLOR_MASK_ALPHA)
      a = to8 (s[3], k->depth, t16);
    else if (k->trns && s[0] == im->key.red && s[1] == im->key.green
        && s[2] == im->key.blue)
      a = 0;
  } else {
    rgb[0] = rgb[1] = rgb[2] = to8 (s[0], k->depth, t16);
    if (k->ctype & PNG_COLOR_MASK_ALPHA)
      a = to8 (s[1], k->depth, t16);
    else if (k->trns && s[0] == im->key.gray)
      a = 0;
  }
  for (c = 0; c < 3; c++) {
    if (a == 255 || (flags & WSI_PNG_RGB_DROP_ALPHA))
      out[c] = rgb[c];
    else
      out[c] = (guint8) lrint (rgb[c] * (a / 255.0) + 255.0 * (1 - a / 255.0));
  }
}

/* ---- decoding every kind ---- */

static const Kind kinds[] = {
  {"g1.png", PNG_COLOR_TYPE_GRAY, 1, FALSE, FALSE, 37, 23},
  {"g2.png", PNG_COLOR_TYPE_GRAY, 2, FALSE, FALSE, 37, 23},
  {"g4.png", PNG_COLOR_TYPE_GRAY, 4, FALSE, FALSE, 37, 23},
  {"g8.png", PNG_COLOR_TYPE_GRAY, 8, FALSE, FALSE, 37, 23},
  {"g16.png", PNG_COLOR_TYPE_GRAY, 16, FALSE, FALSE, 37, 23},
  {"g2-trns.png", PNG_COLOR_TYPE_GRAY, 2, FALSE, TRUE, 37, 23},
  {"g8-trns.png", PNG_COLOR_TYPE_GRAY, 8, FALSE, TRUE, 37, 23},
  {"g16-trns.png", PNG_COLOR_TYPE_GRAY, 16, FALSE, TRUE, 37, 23},
  {"ga8.png", PNG_COLOR_TYPE_GRAY_ALPHA, 8, FALSE, FALSE, 37, 23},
  {"ga16.png", PNG_COLOR_TYPE_GRAY_ALPHA, 16, FALSE, FALSE, 37, 23},
  {"rgb8.png", PNG_COLOR_TYPE_RGB, 8, FALSE, FALSE, 37, 23},
  {"rgb16.png", PNG_COLOR_TYPE_RGB, 16, FALSE, FALSE, 37, 23},
  {"rgb8-trns.png", PNG_COLOR_TYPE_RGB, 8, FALSE, TRUE, 37, 23},
  {"rgb16-trns.png", PNG_COLOR_TYPE_RGB, 16, FALSE, TRUE, 37, 23},
  {"rgba8.png", PNG_COLOR_TYPE_RGB_ALPHA, 8, FALSE, FALSE, 37, 23},
  {"rgba16.png", PNG_COLOR_TYPE_RGB_ALPHA, 16, FALSE, FALSE, 37, 23},
  {"p1.png", PNG_COLOR_TYPE_PALETTE, 1, FALSE, FALSE, 37, 23},
  {"p2.png", PNG_COLOR_TYPE_PALETTE, 2, FALSE, FALSE, 37, 23},
  {"p4.png", PNG_COLOR_TYPE_PALETTE, 4, FALSE, FALSE, 37, 23},
  {"p8.png", PNG_COLOR_TYPE_PALETTE, 8, FALSE, FALSE, 37, 23},
  {"p2-trns.png", PNG_COLOR_TYPE_PALETTE, 2, FALSE, TRUE, 37, 23},
  {"p8-trns.png", PNG_COLOR_TYPE_PALETTE, 8, FALSE, TRUE, 37, 23},
  {"g1-i.png", PNG_COLOR_TYPE_GRAY, 1, TRUE, FALSE, 37, 23},
  {"g16-i.png", PNG_COLOR_TYPE_GRAY, 16, TRUE, FALSE, 37, 23},
  {"ga16-i.png", PNG_COLOR_TYPE_GRAY_ALPHA, 16, TRUE, FALSE, 37, 23},
  {"rgba8-i.png", PNG_COLOR_TYPE_RGB_ALPHA, 8, TRUE, FALSE, 37, 23},
  {"p4-i.png", PNG_COLOR_TYPE_PALETTE, 4, TRUE, FALSE, 37, 23},
  {"g8-1x1.png", PNG_COLOR_TYPE_GRAY, 8, FALSE, FALSE, 1, 1},
  {"rgba16-1x40-i.png", PNG_COLOR_TYPE_RGB_ALPHA, 16, TRUE, FALSE, 1, 40},
};

static void
check_rgb (const Image * im, const gchar * path, WsiPngRgbFlags flags)
{
  const Kind *k = im->k;
  GError *error = NULL;
  gint w = -1, h = -1;
  guint8 *rgb = wsi_png_read_rgb8 (path, &w, &h, BIG_MAX, flags, &error);
  gsize i, bad = 0;

  g_assert_no_error (error);
  g_assert_nonnull (rgb);
  g_assert_cmpint (w, ==, k->width);
  g_assert_cmpint (h, ==, k->height);
  for (i = 0; i < (gsize) w * h; i++) {
    guint8 want[3];
    expected_rgb (im, i, flags, want);
    if (memcmp (want, rgb + i * 3, 3) != 0 && bad++ == 0)
      g_test_message ("%s flags %d: pixel %" G_GSIZE_FORMAT " is %u,%u,%u, "
          "want %u,%u,%u", k->name, flags, i, rgb[i * 3], rgb[i * 3 + 1],
          rgb[i * 3 + 2], want[0], want[1], want[2]);
  }
  g_assert_cmpuint (bad, ==, 0);
  g_free (rgb);
}

static void
check_labels (const Image * im, const gchar * path)
{
  const Kind *k = im->k;
  GError *error = NULL;
  WsiLabelImage img;
  gboolean ok = wsi_png_read_labels (path, &img, BIG_MAX, &error);
  gsize i;

  if ((k->ctype & PNG_COLOR_MASK_COLOR) && k->ctype != PNG_COLOR_TYPE_PALETTE) {
    g_assert_false (ok);
    g_assert_error (error, WSI_PNG_ERROR, WSI_PNG_ERROR_COLOUR);
    g_assert_nonnull (strstr (error->message, path));
    g_assert_null (img.data);
    g_error_free (error);
    return;
  }
  g_assert_no_error (error);
  g_assert_true (ok);
  g_assert_cmpint (img.width, ==, k->width);
  g_assert_cmpint (img.height, ==, k->height);
  g_assert_cmpuint (img.bytes_per_pixel, ==, k->depth == 16 ? 2 : 1);
  for (i = 0; i < (gsize) k->width * k->height; i++) {
    guint want = im->samples[i * channels_of (k->ctype)];
    guint got = img.bytes_per_pixel == 2 ? ((guint16 *) img.data)[i] :
        ((guint8 *) img.data)[i];
    if (got != want)
      g_error ("%s: label %" G_GSIZE_FORMAT " is %u, want %u", k->name, i,
          got, want);
  }
  wsi_label_image_clear (&img);
  g_assert_null (img.data);
}

static void
test_kinds (void)
{
  guint i;

  for (i = 0; i < G_N_ELEMENTS (kinds); i++) {
    Image im;
    gchar *path;

    image_make (&im, &kinds[i], 1000 + i);
    path = write_png (&im);
    g_assert_true (wsi_png_is_png (path));
    check_rgb (&im, path, WSI_PNG_RGB_DEFAULT);
    check_rgb (&im, path, WSI_PNG_RGB_DROP_ALPHA);
    check_rgb (&im, path, WSI_PNG_RGB_TRUNCATE_16);
    check_rgb (&im, path,
        WSI_PNG_RGB_DROP_ALPHA | WSI_PNG_RGB_TRUNCATE_16);
    check_labels (&im, path);
    g_free (path);
    image_free (&im);
  }
}

/* ---- bad files ---- */

static gchar *
write_bytes (const gchar * name, const guint8 * data, gsize len)
{
  gchar *path = g_build_filename (tmpdir, name, NULL);

  g_assert_true (g_file_set_contents (path, (const gchar *) data, len, NULL));
  return path;
}

static void
append_chunk (GByteArray * out, const gchar * type, const guint8 * data,
    guint32 len)
{
  guint8 be[4] = { len >> 24, len >> 16, len >> 8, len };
  uLong crc = crc32 (0, (const Bytef *) type, 4);

  g_byte_array_append (out, be, 4);
  g_byte_array_append (out, (const guint8 *) type, 4);
  if (len)
    g_byte_array_append (out, data, len);
  crc = crc32 (crc, data, len);
  be[0] = crc >> 24;
  be[1] = crc >> 16;
  be[2] = crc >> 8;
  be[3] = crc;
  g_byte_array_append (out, be, 4);
}

/* A PNG whose IHDR declares @w x @h but whose IDAT holds a few rows. */
static gchar *
forged_png (const gchar * name, guint32 w, guint32 h, guint8 depth,
    guint8 ctype)
{
  static const guint8 sig[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };
  guint8 ihdr[13] = { w >> 24, w >> 16, w >> 8, w, h >> 24, h >> 16, h >> 8,
    h, depth, ctype, 0, 0, 0
  };
  guint8 raw[64] = { 0 }, z[128];
  uLongf zlen = sizeof (z);
  GByteArray *out = g_byte_array_new ();
  gchar *path;

  g_assert_cmpint (compress (z, &zlen, raw, sizeof (raw)), ==, Z_OK);
  g_byte_array_append (out, sig, 8);
  append_chunk (out, "IHDR", ihdr, 13);
  append_chunk (out, "IDAT", z, zlen);
  append_chunk (out, "IEND", NULL, 0);
  path = write_bytes (name, out->data, out->len);
  g_byte_array_unref (out);
  return path;
}

/* Both readers fail on @path with @code (or @code2) and a message naming
 * the file; @img comes back cleared. */
static void
expect_failure (const gchar * path, gsize max_pixels, gint code, gint code2)
{
  GError *error = NULL;
  WsiLabelImage img = { 7, 7, 1, NULL };
  gint w = -1, h = -1;
  guint8 *rgb;

  rgb = wsi_png_read_rgb8 (path, &w, &h, max_pixels, 0, &error);
  g_assert_null (rgb);
  g_assert_nonnull (error);
  g_assert_true (error->domain == WSI_PNG_ERROR);
  if (error->code != code && error->code != code2)
    g_error ("%s: code %d (%s), want %d", path, error->code, error->message,
        code);
  g_assert_nonnull (strstr (error->message, path));
  g_test_message ("rgb8: %s", error->message);
  g_clear_error (&error);

  g_assert_false (wsi_png_read_labels (path, &img, max_pixels, &error));
  g_assert_nonnull (error);
  g_assert_nonnull (strstr (error->message, path));
  if (error->code != code && error->code != code2
      && error->code != WSI_PNG_ERROR_COLOUR)
    g_error ("%s: labels code %d (%s), want %d", path, error->code,
        error->message, code);
  g_assert_null (img.data);
  g_assert_cmpint (img.width, ==, 0);
  g_clear_error (&error);
}

/* A valid 1-bit gray PNG of @w x @h zero pixels: a few hundred KB that
 * decode to gigabytes (a decompression bomb). */
static gchar *
bomb_png (const gchar * name, guint32 w, guint32 h)
{
  gchar *path = g_build_filename (tmpdir, name, NULL);
  FILE *fp = g_fopen (path, "wb");
  png_structp png;
  png_infop info;
  guint8 *row = g_malloc0 ((w + 7) / 8);
  guint32 y;

  g_assert_nonnull (fp);
  png = png_create_write_struct (PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  info = png_create_info_struct (png);
  g_assert_true (png && info);
  if (setjmp (png_jmpbuf (png)))
    g_error ("libpng failed writing %s", path);
  png_init_io (png, fp);
  png_set_compression_level (png, 1);
  png_set_IHDR (png, info, w, h, 1, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
      PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info (png, info);
  for (y = 0; y < h; y++)
    png_write_row (png, row);
  png_write_end (png, NULL);
  png_destroy_write_struct (&png, &info);
  fclose (fp);
  g_free (row);
  return path;
}

/* Issue #9 point 14: a small valid file whose pixel count is within the
 * caller's max_pixels but whose decoded size is not is refused before any
 * allocation, with the limit and the image size in the message. */
static void
test_decompression_bomb (void)
{
  gchar *path = bomb_png ("bomb.png", 40000, 40000);
  GStatBuf st;
  GError *error = NULL;
  WsiLabelImage img;
  gint w, h;

  g_assert_cmpint (g_stat (path, &st), ==, 0);
  g_test_message ("bomb: %" G_GINT64_FORMAT " bytes on disk",
      (gint64) st.st_size);
  g_assert_cmpint (st.st_size, <, 4 << 20);
  g_assert_cmpuint ((guint64) 40000 * 40000, <, BIG_MAX);
  expect_failure (path, BIG_MAX, WSI_PNG_ERROR_TOO_LARGE, -1);
  g_assert_null (wsi_png_read_rgb8 (path, &w, &h, BIG_MAX, 0, &error));
  g_assert_nonnull (strstr (error->message, "40000x40000"));
  g_assert_nonnull (strstr (error->message, "limit of 1024 MiB"));
  g_clear_error (&error);
  g_assert_false (wsi_png_read_labels (path, &img, BIG_MAX, &error));
  g_assert_nonnull (strstr (error->message, "40000x40000"));
  g_assert_nonnull (strstr (error->message, "limit"));
  g_clear_error (&error);
  g_unlink (path);
  g_free (path);
}

static GBytes *
good_png_bytes (const Kind * k)
{
  Image im;
  gchar *path, *data;
  gsize len;

  image_make (&im, k, 7);
  path = write_png (&im);
  g_assert_true (g_file_get_contents (path, &data, &len, NULL));
  g_free (path);
  image_free (&im);
  return g_bytes_new_take (data, len);
}

static void
test_bad_files (void)
{
  static const Kind big = { "big.png", PNG_COLOR_TYPE_RGB, 8, FALSE, FALSE,
    64, 64
  };
  GBytes *good = good_png_bytes (&big);
  gsize len;
  const guint8 *data = g_bytes_get_data (good, &len);
  guint8 junk[5008];
  GRand *rand = g_rand_new_with_seed (3);
  gchar *path;
  guint i;
  const gsize cuts[] = { 8, 20, 33, 40, 300, 0, 0 };
  gsize cut_list[G_N_ELEMENTS (cuts)];

  path = g_build_filename (tmpdir, "missing.png", NULL);
  expect_failure (path, BIG_MAX, WSI_PNG_ERROR_NOT_FOUND, -1);
  g_assert_false (wsi_png_is_png (path));
  g_free (path);

  expect_failure (tmpdir, BIG_MAX, WSI_PNG_ERROR_NOT_PNG,
      WSI_PNG_ERROR_OPEN);

  path = write_bytes ("empty.png", NULL, 0);
  expect_failure (path, BIG_MAX, WSI_PNG_ERROR_NOT_PNG, -1);
  g_assert_false (wsi_png_is_png (path));
  g_free (path);

  for (i = 0; i < sizeof (junk); i++)
    junk[i] = g_rand_int_range (rand, 0, 256);
  path = write_bytes ("random.png", junk, sizeof (junk));
  expect_failure (path, BIG_MAX, WSI_PNG_ERROR_NOT_PNG, -1);
  g_free (path);
  memcpy (junk, data, 8);       /* PNG signature, garbage after */
  path = write_bytes ("random-sig.png", junk, sizeof (junk));
  g_assert_true (wsi_png_is_png (path));
  expect_failure (path, BIG_MAX, WSI_PNG_ERROR_CORRUPT, -1);
  g_free (path);

  /* truncated: in the signature, IHDR, between chunks, in IDAT, no IEND */
  memcpy (cut_list, cuts, sizeof (cuts));
  cut_list[5] = len / 2;
  cut_list[6] = len - 12;
  for (i = 0; i < G_N_ELEMENTS (cut_list); i++) {
    gchar *name = g_strdup_printf ("truncated-%u.png", i);
    path = write_bytes (name, data, MIN (cut_list[i], len - 1));
    expect_failure (path, BIG_MAX, WSI_PNG_ERROR_CORRUPT, -1);
    g_free (path);
    g_free (name);
  }
  path = write_bytes ("truncated-sig.png", data, 5);
  expect_failure (path, BIG_MAX, WSI_PNG_ERROR_NOT_PNG, -1);
  g_free (path);

  /* a flipped byte in IDAT: CRC error */
  {
    guint8 *bad = g_memdup2 (data, len);
    bad[len / 2] ^= 0x55;
    path = write_bytes ("crc.png", bad, len);
    expect_failure (path, BIG_MAX, WSI_PNG_ERROR_CORRUPT, -1);
    g_free (path);
    g_free (bad);
  }

  /* more pixels than the caller accepts */
  path = write_bytes ("small.png", data, len);
  expect_failure (path, 64 * 64 - 1, WSI_PNG_ERROR_TOO_LARGE, -1);
  g_free (path);

  g_bytes_unref (good);
  g_rand_free (rand);
}

static void
test_forged_ihdr (void)
{
  gchar *path;
  GError *error = NULL;
  WsiLabelImage img;

  /* 10^10 pixels: refused before any allocation */
  path = forged_png ("huge.png", 100000, 100000, 8, PNG_COLOR_TYPE_GRAY);
  expect_failure (path, BIG_MAX, WSI_PNG_ERROR_TOO_LARGE, -1);
  g_free (path);
  /* the largest sides libpng allows with us, product beyond 2^32 */
  path = forged_png ("max-sides.png", WSI_PNG_MAX_SIDE, WSI_PNG_MAX_SIDE, 16,
      PNG_COLOR_TYPE_RGB_ALPHA);
  expect_failure (path, G_MAXSIZE, WSI_PNG_ERROR_TOO_LARGE,
      WSI_PNG_ERROR_NO_MEMORY);
  g_free (path);
  /* a side beyond WSI_PNG_MAX_SIDE: libpng's user limit */
  path = forged_png ("wide.png", WSI_PNG_MAX_SIDE + 1, 10, 8,
      PNG_COLOR_TYPE_GRAY);
  expect_failure (path, G_MAXSIZE, WSI_PNG_ERROR_CORRUPT, -1);
  g_free (path);
  path = forged_png ("zero.png", 0, 10, 8, PNG_COLOR_TYPE_GRAY);
  expect_failure (path, BIG_MAX, WSI_PNG_ERROR_CORRUPT, -1);
  g_free (path);
  path = forged_png ("depth3.png", 10, 10, 3, PNG_COLOR_TYPE_GRAY);
  expect_failure (path, BIG_MAX, WSI_PNG_ERROR_CORRUPT, -1);
  g_free (path);
  path = forged_png ("ctype5.png", 10, 10, 8, 5);
  expect_failure (path, BIG_MAX, WSI_PNG_ERROR_CORRUPT, -1);
  g_free (path);
  /* accepted size (256 MB buffer, untouched) but only a few rows of data */
  path = forged_png ("short-data.png", 16000, 16000, 8, PNG_COLOR_TYPE_GRAY);
  g_assert_false (wsi_png_read_labels (path, &img, BIG_MAX, &error));
  g_assert_true (g_error_matches (error, WSI_PNG_ERROR, WSI_PNG_ERROR_CORRUPT)
      || g_error_matches (error, WSI_PNG_ERROR, WSI_PNG_ERROR_NO_MEMORY));
  g_assert_null (img.data);
  g_clear_error (&error);
  g_free (path);
}

/* Random byte changes and cuts of valid files of several kinds: each read
 * either succeeds with the right size or fails with an error. */
static void
test_mutations (void)
{
  static const guint picks[] = { 0, 4, 9, 14, 19, 21, 25 };
  GRand *rand = g_rand_new_with_seed (5);
  gchar *path = g_build_filename (tmpdir, "mutant.png", NULL);
  guint p, t, failures = 0, runs = 0;

  for (p = 0; p < G_N_ELEMENTS (picks); p++) {
    const Kind *k = &kinds[picks[p]];
    GBytes *good = good_png_bytes (k);
    gsize len;
    const guint8 *data = g_bytes_get_data (good, &len);

    for (t = 0; t < 60; t++) {
      guint8 *m = g_memdup2 (data, len);
      gsize mlen = len, j, n = g_rand_int_range (rand, 1, 4);
      GError *error = NULL;
      WsiLabelImage img;
      gint w, h;
      guint8 *rgb;

      for (j = 0; j < n; j++)   /* keep the signature */
        m[g_rand_int_range (rand, 8, len)] = g_rand_int_range (rand, 0, 256);
      if (t % 3 == 0)
        mlen = g_rand_int_range (rand, 9, len);
      g_free (write_bytes ("mutant.png", m, mlen));
      rgb = wsi_png_read_rgb8 (path, &w, &h, BIG_MAX, 0, &error);
      g_assert_true ((rgb != NULL) != (error != NULL));
      if (rgb)
        g_assert_true (w > 0 && h > 0 && (gsize) w * h <= BIG_MAX);
      failures += rgb == NULL;
      g_free (rgb);
      g_clear_error (&error);
      if (wsi_png_read_labels (path, &img, BIG_MAX, &error)) {
        g_assert_nonnull (img.data);
        wsi_label_image_clear (&img);
      } else {
        g_assert_nonnull (error);
        g_assert_null (img.data);
        g_clear_error (&error);
      }
      runs++;
      g_free (m);
    }
    g_bytes_unref (good);
  }
  g_test_message ("%u of %u mutated files refused", failures, runs);
  g_assert_cmpuint (failures, >, runs / 2);
  g_rand_free (rand);
  g_free (path);
}

int
main (int argc, char **argv)
{
  int ret;

  g_test_init (&argc, &argv, NULL);
  tmpdir = g_dir_make_tmp ("wsipng-XXXXXX", NULL);
  g_assert_nonnull (tmpdir);
  g_test_add_func ("/wsipng/kinds", test_kinds);
  g_test_add_func ("/wsipng/bad-files", test_bad_files);
  g_test_add_func ("/wsipng/forged-ihdr", test_forged_ihdr);
  g_test_add_func ("/wsipng/mutations", test_mutations);
  g_test_add_func ("/wsipng/decompression-bomb", test_decompression_bomb);
  ret = g_test_run ();
  {
    GDir *d = g_dir_open (tmpdir, 0, NULL);
    const gchar *name;
    while (d && (name = g_dir_read_name (d))) {
      gchar *p = g_build_filename (tmpdir, name, NULL);
      g_unlink (p);
      g_free (p);
    }
    if (d)
      g_dir_close (d);
    g_rmdir (tmpdir);
  }
  g_free (tmpdir);
  return ret;
}
