/* stitchsink output helpers: atomic files, streaming PNG, raw row spool. */
#include "stitchio.h"

#include <errno.h>
#include <fcntl.h>
#include <png.h>
#include <setjmp.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <glib/gstdio.h>

static void
set_errno_error (GError ** error, int err, const gchar * what,
    const gchar * path)
{
  g_set_error (error, G_FILE_ERROR, g_file_error_from_errno (err),
      "%s '%s': %s", what, path, g_strerror (err));
}

/* fsync of the directory makes the rename itself durable. */
static void
sync_parent_dir (const gchar * path)
{
  gchar *dir = g_path_get_dirname (path);
  int fd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

  if (fd >= 0) {
    fsync (fd);
    close (fd);
  }
  g_free (dir);
}

/* "<base>.partial-XXXXXX": the temp name stitch_atomic_open() uses. */
static gboolean
is_temp_of (const gchar * name, const gchar * base)
{
  gsize n = strlen (base);

  return strncmp (name, base, n) == 0
      && strncmp (name + n, ".partial-", 9) == 0
      && strlen (name + n + 9) == 6;
}

guint
stitch_atomic_clean_stale (const gchar * location, guint min_age_s)
{
  gchar *dir = g_path_get_dirname (location);
  gchar *base = g_path_get_basename (location);
  GDir *d = g_dir_open (dir, 0, NULL);
  const gchar *name;
  guint removed = 0;
  time_t now = time (NULL);

  while (d && (name = g_dir_read_name (d))) {
    gchar *path;
    struct stat st;
    int fd;

    if (!is_temp_of (name, base))
      continue;
    path = g_build_filename (dir, name, NULL);
    /* a live writer holds an exclusive flock on its temp file */
    fd = open (path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd >= 0 && fstat (fd, &st) == 0 && S_ISREG (st.st_mode)
        && now - st.st_mtime >= (time_t) min_age_s
        && flock (fd, LOCK_EX | LOCK_NB) == 0) {
      if (g_unlink (path) == 0)
        removed++;
    }
    if (fd >= 0)
      close (fd);
    g_free (path);
  }
  if (d)
    g_dir_close (d);
  g_free (dir);
  g_free (base);
  return removed;
}

gboolean
stitch_atomic_open (StitchAtomicFile * af, const gchar * location,
    GError ** error)
{
  int fd;

  memset (af, 0, sizeof (*af));
  af->final_path = g_strdup (location);
  af->tmp_path = g_strdup_printf ("%s.partial-XXXXXX", location);
  fd = g_mkstemp_full (af->tmp_path, O_RDWR | O_CLOEXEC, 0666);
  if (fd < 0) {
    set_errno_error (error, errno, "Could not create a file next to",
        location);
    g_clear_pointer (&af->tmp_path, g_free);
    g_clear_pointer (&af->final_path, g_free);
    return FALSE;
  }
  /* held until close: marks the temp file as in use (see clean_stale) */
  flock (fd, LOCK_EX | LOCK_NB);
  af->fp = fdopen (fd, "wb");
  if (!af->fp) {
    set_errno_error (error, errno, "Could not open", af->tmp_path);
    close (fd);
    g_unlink (af->tmp_path);
    g_clear_pointer (&af->tmp_path, g_free);
    g_clear_pointer (&af->final_path, g_free);
    return FALSE;
  }
  return TRUE;
}

void
stitch_atomic_abort (StitchAtomicFile * af)
{
  if (af->fp)
    fclose (af->fp);
  if (af->tmp_path)
    g_unlink (af->tmp_path);
  g_free (af->tmp_path);
  g_free (af->final_path);
  memset (af, 0, sizeof (*af));
}

gboolean
stitch_atomic_commit (StitchAtomicFile * af, GError ** error)
{
  FILE *fp = af->fp;
  int err = 0;

  af->fp = NULL;
  if (fflush (fp) != 0 || fsync (fileno (fp)) != 0)
    err = errno;
  if (fclose (fp) != 0 && !err)
    err = errno;
  if (!err && g_rename (af->tmp_path, af->final_path) != 0)
    err = errno;
  if (err) {
    set_errno_error (error, err, "Could not write", af->final_path);
    stitch_atomic_abort (af);
    return FALSE;
  }
  sync_parent_dir (af->final_path);
  g_free (af->tmp_path);
  g_free (af->final_path);
  memset (af, 0, sizeof (*af));
  return TRUE;
}

/* ---- PNG ---- */

struct _StitchPng
{
  StitchAtomicFile file;
  png_structp png;
  png_infop info;
  gchar errmsg[256];
  gchar *text_key, *text_value;
};

static void
png_error_cb (png_structp png_ptr, png_const_charp msg)
{
  StitchPng *p = png_get_error_ptr (png_ptr);

  g_strlcpy (p->errmsg, msg ? msg : "libpng error", sizeof (p->errmsg));
  png_longjmp (png_ptr, 1);
}

static void
png_warning_cb (png_structp png_ptr, png_const_charp msg)
{
}

static gboolean
png_failed (StitchPng * p, GError ** error)
{
  g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_IO,
      "Could not write PNG '%s': %s", p->file.final_path, p->errmsg);
  return FALSE;
}

StitchPng *
stitch_png_new (const gchar * location, GError ** error)
{
  StitchPng *p = g_new0 (StitchPng, 1);

  if (!stitch_atomic_open (&p->file, location, error)) {
    g_free (p);
    return NULL;
  }
  return p;
}

const gchar *
stitch_png_get_location (StitchPng * png)
{
  return png->file.final_path;
}

gboolean
stitch_png_begin (StitchPng * p, guint32 width, guint32 height,
    gint channels, gint bit_depth, gint compression_level, GError ** error)
{
  p->png = png_create_write_struct (PNG_LIBPNG_VER_STRING, p, png_error_cb,
      png_warning_cb);
  if (!p->png) {
    g_strlcpy (p->errmsg, "out of memory", sizeof (p->errmsg));
    return png_failed (p, error);
  }
  p->info = png_create_info_struct (p->png);
  if (!p->info) {
    g_strlcpy (p->errmsg, "out of memory", sizeof (p->errmsg));
    return png_failed (p, error);
  }
  if (setjmp (png_jmpbuf (p->png)))
    return png_failed (p, error);

  png_init_io (p->png, p->file.fp);
  /* Slides are large: lift libpng's default 1e6 pixel size limits. */
  png_set_user_limits (p->png, 0x7fffffff, 0x7fffffff);
  png_set_compression_level (p->png, CLAMP (compression_level, 0, 9));
  if (compression_level <= 0)
    png_set_filter (p->png, 0, PNG_FILTER_NONE);
  else if (compression_level <= 3)
    png_set_filter (p->png, 0, PNG_FILTER_SUB);
  png_set_IHDR (p->png, p->info, width, height, bit_depth,
      channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY,
      PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
      PNG_FILTER_TYPE_DEFAULT);
  png_write_info (p->png, p->info);
  if (bit_depth == 16)
    png_set_swap (p->png);
  return TRUE;
}

gboolean
stitch_png_write_row (StitchPng * p, const guint8 * row, GError ** error)
{
  if (setjmp (png_jmpbuf (p->png)))
    return png_failed (p, error);
  png_write_row (p->png, row);
  return TRUE;
}

static void
png_free_structs (StitchPng * p)
{
  if (p->png)
    png_destroy_write_struct (&p->png, p->info ? &p->info : NULL);
  p->png = NULL;
  p->info = NULL;
}

gboolean
stitch_png_commit (StitchPng * p, GError ** error)
{
  gboolean ok;

  if (setjmp (png_jmpbuf (p->png))) {
    png_failed (p, error);
    stitch_png_abort (p);
    return FALSE;
  }
  if (p->text_key) {
    /* after IDAT: written by png_write_end */
    png_text t;
    memset (&t, 0, sizeof (t));
    t.compression = PNG_TEXT_COMPRESSION_NONE;
    t.key = p->text_key;
    t.text = p->text_value;
    t.text_length = strlen (p->text_value);
    png_set_text (p->png, p->info, &t, 1);
  }
  png_write_end (p->png, p->info);
  png_free_structs (p);
  ok = stitch_atomic_commit (&p->file, error);
  g_free (p->text_key);
  g_free (p->text_value);
  g_free (p);
  return ok;
}

void
stitch_png_set_text (StitchPng * p, const gchar * key, const gchar * value)
{
  g_free (p->text_key);
  g_free (p->text_value);
  p->text_key = g_strdup (key);
  p->text_value = g_strdup (value);
}

void
stitch_png_abort (StitchPng * p)
{
  if (!p)
    return;
  png_free_structs (p);
  stitch_atomic_abort (&p->file);
  g_free (p->text_key);
  g_free (p->text_value);
  g_free (p);
}

/* ---- spool ---- */

struct _StitchSpool
{
  FILE *fp;
  gchar *path;
  gsize row_bytes;
  guint64 rows;
};

StitchSpool *
stitch_spool_new (const gchar * near_location, gsize row_bytes,
    GError ** error)
{
  StitchSpool *s = g_new0 (StitchSpool, 1);
  gchar *dir = g_path_get_dirname (near_location);
  gchar *base = g_path_get_basename (near_location);
  int fd;

  s->path = g_strdup_printf ("%s/.%s.spool-XXXXXX", dir, base);
  g_free (dir);
  g_free (base);
  fd = g_mkstemp_full (s->path, O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    set_errno_error (error, errno, "Could not create spool file next to",
        near_location);
    g_free (s->path);
    g_free (s);
    return NULL;
  }
  /* Anonymous from now on: nothing to clean up after a crash. */
  g_unlink (s->path);
  s->fp = fdopen (fd, "w+b");
  if (!s->fp) {
    set_errno_error (error, errno, "Could not open spool file", s->path);
    close (fd);
    g_free (s->path);
    g_free (s);
    return NULL;
  }
  s->row_bytes = row_bytes;
  return s;
}

gboolean
stitch_spool_write_row (StitchSpool * s, const guint8 * row, GError ** error)
{
  if (fwrite (row, 1, s->row_bytes, s->fp) != s->row_bytes) {
    set_errno_error (error, errno ? errno : EIO, "Could not write spool file",
        s->path);
    return FALSE;
  }
  s->rows++;
  return TRUE;
}

gboolean
stitch_spool_rewind (StitchSpool * s, GError ** error)
{
  if (fflush (s->fp) != 0 || fseeko (s->fp, 0, SEEK_SET) != 0) {
    set_errno_error (error, errno, "Could not rewind spool file", s->path);
    return FALSE;
  }
  return TRUE;
}

gboolean
stitch_spool_read_row (StitchSpool * s, guint8 * row, GError ** error)
{
  if (fread (row, 1, s->row_bytes, s->fp) != s->row_bytes) {
    set_errno_error (error, errno ? errno : EIO, "Could not read spool file",
        s->path);
    return FALSE;
  }
  return TRUE;
}

/* Record: number of runs, then (length, id) pairs; guint32 each. */
gboolean
stitch_spool_write_ids (StitchSpool * s, const guint32 * ids, gint64 width,
    GError ** error)
{
  guint32 n = 0;
  gint64 x = 0;
  gboolean ok = TRUE;
  off_t start = ftello (s->fp);

  ok = fwrite (&n, sizeof n, 1, s->fp) == 1;
  while (ok && x < width) {
    guint32 run[2] = { 1, ids[x] };
    while (x + run[0] < width && ids[x + run[0]] == run[1])
      run[0]++;
    x += run[0];
    ok = fwrite (run, sizeof run, 1, s->fp) == 1;
    n++;
  }
  ok = ok && fseeko (s->fp, start, SEEK_SET) == 0
      && fwrite (&n, sizeof n, 1, s->fp) == 1
      && fseeko (s->fp, 0, SEEK_END) == 0;
  if (!ok) {
    set_errno_error (error, errno ? errno : EIO, "Could not write spool file",
        s->path);
    return FALSE;
  }
  s->rows++;
  return TRUE;
}

gboolean
stitch_spool_read_ids (StitchSpool * s, guint32 * ids, gint64 width,
    GError ** error)
{
  guint32 n, i, run[2];
  gint64 x = 0;

  if (fread (&n, sizeof n, 1, s->fp) != 1)
    goto failed;
  for (i = 0; i < n; i++) {
    if (fread (run, sizeof run, 1, s->fp) != 1 || run[0] > width - x)
      goto failed;
    while (run[0]--)
      ids[x++] = run[1];
  }
  if (x != width)
    goto failed;
  return TRUE;

failed:
  set_errno_error (error, errno ? errno : EIO, "Could not read spool file",
      s->path);
  return FALSE;
}

guint64
stitch_spool_get_rows (StitchSpool * s)
{
  return s->rows;
}

void
stitch_spool_free (StitchSpool * s)
{
  if (!s)
    return;
  if (s->fp)
    fclose (s->fp);
  g_free (s->path);
  g_free (s);
}
