/* stitchsink output helpers: atomic files, a streaming PNG writer, a raw row
 * spool. No GStreamer inside; errors are GErrors in G_FILE_ERROR. */
#pragma once

#include <glib.h>
#include <stdio.h>

G_BEGIN_DECLS

/* A file written under a temporary name in the final directory
 * ("<name>.partial-XXXXXX") and renamed over the final name on commit. */
typedef struct
{
  gchar *final_path;
  gchar *tmp_path;
  FILE *fp;
} StitchAtomicFile;

gboolean stitch_atomic_open (StitchAtomicFile * af, const gchar * location,
    GError ** error);
/* Flushes, fsyncs, closes and renames; on failure the temp file is removed. */
gboolean stitch_atomic_commit (StitchAtomicFile * af, GError ** error);
/* Closes and removes the temp file (no-op when not open). */
void stitch_atomic_abort (StitchAtomicFile * af);
/* Removes stale temp files of @location ("<name>.partial-XXXXXX" left by a
 * killed run): those no writer holds (the writer keeps an exclusive flock
 * on its temp file until it closes it) and not modified for @min_age_s
 * seconds. Returns how many were removed. */
guint stitch_atomic_clean_stale (const gchar * location, guint min_age_s);

/* Streaming PNG writer (libpng) on top of an atomic file. */
typedef struct _StitchPng StitchPng;

/* Creates the temp file only; the header is written by stitch_png_begin(). */
StitchPng *stitch_png_new (const gchar * location, GError ** error);
/* @channels 1 (gray) or 3 (RGB); @bit_depth 8 or 16 (16: rows are
 * little-endian samples). */
gboolean stitch_png_begin (StitchPng * png, guint32 width, guint32 height,
    gint channels, gint bit_depth, gint compression_level, GError ** error);
gboolean stitch_png_write_row (StitchPng * png, const guint8 * row,
    GError ** error);
/* A tEXt chunk written after the image data at commit. */
void stitch_png_set_text (StitchPng * png, const gchar * key,
    const gchar * value);
/* Finishes the image and renames it into place; frees @png. */
gboolean stitch_png_commit (StitchPng * png, GError ** error);
/* Removes the temp file; frees @png. NULL-safe. */
void stitch_png_abort (StitchPng * png);
const gchar *stitch_png_get_location (StitchPng * png);

/* Raw rows spooled to an anonymous (already unlinked) file next to
 * @near_location, read back in order. */
typedef struct _StitchSpool StitchSpool;

StitchSpool *stitch_spool_new (const gchar * near_location, gsize row_bytes,
    GError ** error);
gboolean stitch_spool_write_row (StitchSpool * spool, const guint8 * row,
    GError ** error);
gboolean stitch_spool_rewind (StitchSpool * spool, GError ** error);
gboolean stitch_spool_read_row (StitchSpool * spool, guint8 * row,
    GError ** error);
guint64 stitch_spool_get_rows (StitchSpool * spool);
/* Rows of 32-bit ids, run-length coded (instance maps are mostly
 * background): @width ids per row. A spool holds either these or raw
 * rows. */
gboolean stitch_spool_write_ids (StitchSpool * spool, const guint32 * ids,
    gint64 width, GError ** error);
gboolean stitch_spool_read_ids (StitchSpool * spool, guint32 * ids,
    gint64 width, GError ** error);
void stitch_spool_free (StitchSpool * spool);

G_END_DECLS
