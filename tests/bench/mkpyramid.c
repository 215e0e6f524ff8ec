/* Writes a synthetic pyramidal tiled TIFF (JPEG, BigTIFF) of any size,
 * tile by tile, in constant memory. OpenSlide reads it as a generic TIFF.
 * Usage: mkpyramid OUT.tif WIDTH HEIGHT */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <tiffio.h>

#define TILE 256

static uint8_t
clamp_u8 (float v)
{
  return v < 0 ? 0 : v > 255 ? 255 : (uint8_t) v;
}

static int
write_level (TIFF * tif, long width, long height, int scale, int reduced)
{
  float *colr = malloc (sizeof (float) * TILE), *rowr = malloc (sizeof (float) * TILE);
  float *colg = malloc (sizeof (float) * TILE), *rowg = malloc (sizeof (float) * TILE);
  uint8_t *tile = malloc (TILE * TILE * 3);
  int ok = 1;

  TIFFSetField (tif, TIFFTAG_SUBFILETYPE, reduced ? FILETYPE_REDUCEDIMAGE : 0);
  TIFFSetField (tif, TIFFTAG_IMAGEWIDTH, (uint32_t) width);
  TIFFSetField (tif, TIFFTAG_IMAGELENGTH, (uint32_t) height);
  TIFFSetField (tif, TIFFTAG_BITSPERSAMPLE, 8);
  TIFFSetField (tif, TIFFTAG_SAMPLESPERPIXEL, 3);
  TIFFSetField (tif, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
  TIFFSetField (tif, TIFFTAG_COMPRESSION, COMPRESSION_JPEG);
  TIFFSetField (tif, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_RGB);
  TIFFSetField (tif, TIFFTAG_JPEGQUALITY, 80);
  TIFFSetField (tif, TIFFTAG_TILEWIDTH, TILE);
  TIFFSetField (tif, TIFFTAG_TILELENGTH, TILE);

  for (long ty = 0; ty < height && ok; ty += TILE) {
    for (int j = 0; j < TILE; j++) {
      float y0 = (float) (ty + j) * scale;
      rowr[j] = 50.f * cosf (y0 / 411.f);
      rowg[j] = 60.f * sinf (y0 / 977.f);
    }
    for (long tx = 0; tx < width && ok; tx += TILE) {
      for (int i = 0; i < TILE; i++) {
        float x0 = (float) (tx + i) * scale;
        colr[i] = 50.f * sinf (x0 / 300.f);
        colg[i] = 60.f * cosf (x0 / 1301.f);
      }
      for (int j = 0; j < TILE; j++) {
        uint8_t *p = tile + (size_t) j * TILE * 3;
        for (int i = 0; i < TILE; i++, p += 3) {
          float tissue = colg[i] + rowg[j];     /* -120..120: blobs */
          p[0] = clamp_u8 (200 + colr[i] + rowr[j] - (tissue > 0 ? 40 : 0));
          p[1] = clamp_u8 (tissue > 0 ? 110 + tissue * 0.5f : 235);
          p[2] = clamp_u8 (tissue > 0 ? 190 : 240);
        }
      }
      if (TIFFWriteTile (tif, tile, (uint32_t) tx, (uint32_t) ty, 0, 0) < 0)
        ok = 0;
    }
  }
  free (colr);
  free (rowr);
  free (colg);
  free (rowg);
  free (tile);
  return ok && TIFFWriteDirectory (tif);
}

int
main (int argc, char **argv)
{
  TIFF *tif;
  long w, h;
  int scale = 1, reduced = 0;

  if (argc != 4 || (w = atol (argv[2])) <= 0 || (h = atol (argv[3])) <= 0) {
    fprintf (stderr, "usage: %s OUT.tif WIDTH HEIGHT\n", argv[0]);
    return 2;
  }
  tif = TIFFOpen (argv[1], "w8");
  if (!tif)
    return 1;
  for (;;) {
    if (!write_level (tif, w, h, scale, reduced)) {
      fprintf (stderr, "writing level %dx failed\n", scale);
      TIFFClose (tif);
      return 1;
    }
    if (w <= 1024 && h <= 1024)
      break;
    w = (w + 1) / 2;
    h = (h + 1) / 2;
    scale *= 2;
    reduced = 1;
  }
  TIFFClose (tif);
  return 0;
}
