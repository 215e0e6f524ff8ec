/* wsiseg-eval: compares a predicted label PNG with a ground-truth label PNG
 * and prints the segeval JSON report (docs/segeval.md). */
#include "wsimetrics.h"

#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>

#define MAX_SIDE (1 << 20)
#define MAX_PIXELS (G_GUINT64_CONSTANT (1) << 31)

typedef struct
{
  gint width, height;
  guint bpp;
  guint8 *data;
} LabelImage;

typedef struct
{
  jmp_buf jmp;
  gchar msg[256];
} PngErr;

static void
on_png_error (png_structp png, png_const_charp msg)
{
  PngErr *e = png_get_error_ptr (png);

  g_strlcpy (e->msg, msg, sizeof (e->msg));
  longjmp (e->jmp, 1);
}

static void
on_png_warning (png_structp png, png_const_charp msg)
{
}

/* Grayscale (1..16 bit, alpha dropped) or indexed PNG: 8-bit values and
 * palette indices are labels, 16-bit values instance ids. */
static gboolean
load_labels (const gchar * path, LabelImage * img, GError ** error)
{
  PngErr err = { 0 };
  png_structp png = NULL;
  png_infop info = NULL;
  png_bytep *volatile rows = NULL;
  guint8 *volatile data = NULL;
  png_uint_32 w, h, y;
  int depth, ctype;
  guint8 sig[8];
  FILE *fp;

  fp = fopen (path, "rb");
  if (!fp) {
    g_set_error (error, G_FILE_ERROR, g_file_error_from_errno (errno),
        "cannot open '%s': %s", path, g_strerror (errno));
    return FALSE;
  }
  if (fread (sig, 1, 8, fp) != 8 || png_sig_cmp (sig, 0, 8)) {
    g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
        "'%s' is not a PNG file", path);
    fclose (fp);
    return FALSE;
  }
  png = png_create_read_struct (PNG_LIBPNG_VER_STRING, &err, on_png_error,
      on_png_warning);
  if (png)
    info = png_create_info_struct (png);
  if (!png || !info) {
    png_destroy_read_struct (png ? &png : NULL, NULL, NULL);
    fclose (fp);
    g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_NOMEM, "out of memory");
    return FALSE;
  }
  if (setjmp (err.jmp)) {
    g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
        "corrupt or truncated PNG '%s': %s", path, err.msg);
    goto fail;
  }
  png_set_user_limits (png, MAX_SIDE, MAX_SIDE);
  png_set_chunk_malloc_max (png, 16 << 20);
  png_init_io (png, fp);
  png_set_sig_bytes (png, 8);
  png_read_info (png, info);
  png_get_IHDR (png, info, &w, &h, &depth, &ctype, NULL, NULL, NULL);
  if (ctype & PNG_COLOR_MASK_COLOR && ctype != PNG_COLOR_TYPE_PALETTE) {
    g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
        "'%s' is a colour PNG; label images must be grayscale (class "
        "indices or 16-bit instance ids) or indexed", path);
    goto fail;
  }
  if ((guint64) w * h > MAX_PIXELS) {
    g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
        "'%s' is too large (%ux%u)", path, w, h);
    goto fail;
  }
  if (depth < 8)
    png_set_packing (png);      /* one byte per value, not rescaled */
  if (ctype & PNG_COLOR_MASK_ALPHA)
    png_set_strip_alpha (png);
  if (depth == 16 && G_BYTE_ORDER == G_LITTLE_ENDIAN)
    png_set_swap (png);
  png_read_update_info (png, info);
  img->bpp = depth == 16 ? 2 : 1;
  if (png_get_rowbytes (png, info) != (gsize) w * img->bpp) {
    g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
        "unexpected row size in '%s'", path);
    goto fail;
  }
  data = g_try_malloc ((gsize) w * h * img->bpp);
  rows = g_try_new (png_bytep, h);
  if (!data || !rows) {
    g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_NOMEM,
        "out of memory decoding '%s'", path);
    goto fail;
  }
  for (y = 0; y < h; y++)
    rows[y] = data + (gsize) y * w * img->bpp;
  png_read_image (png, rows);
  png_read_end (png, NULL);
  png_destroy_read_struct (&png, &info, NULL);
  fclose (fp);
  g_free (rows);
  img->width = w;
  img->height = h;
  img->data = data;
  return TRUE;

fail:
  png_destroy_read_struct (&png, &info, NULL);
  fclose (fp);
  g_free (rows);
  g_free (data);
  return FALSE;
}

int
main (int argc, char **argv)
{
  gboolean instances = FALSE;
  gint instance_class = 1, connectivity = 8, num_classes = 0;
  gchar *ignore_str = NULL, *output = NULL;
  GOptionEntry entries[] = {
    {"instances", 'i', 0, G_OPTION_ARG_NONE, &instances,
        "Also compute instance metrics (object F1, PQ, AJI, object Dice)", NULL},
    {"class", 'c', 0, G_OPTION_ARG_INT, &instance_class,
          "Class whose connected components are the objects of 8-bit maps "
          "(default 1)", "N"},
    {"connectivity", 0, 0, G_OPTION_ARG_INT, &connectivity,
        "4 or 8 (default 8) for connected components", "C"},
    {"ignore", 0, 0, G_OPTION_ARG_STRING, &ignore_str,
          "Annotation value to skip: a number or 'none' (default 255 for "
          "8-bit, 65535 for 16-bit annotations)", "V"},
    {"num-classes", 'n', 0, G_OPTION_ARG_INT, &num_classes,
        "Classes to report (default: 1 + largest label seen)", "K"},
    {"output", 'o', 0, G_OPTION_ARG_FILENAME, &output,
        "Write the JSON here (atomically) instead of stdout", "FILE"},
    {NULL}
  };
  GOptionContext *ctx;
  GError *error = NULL;
  LabelImage pred = { 0 }, gt = { 0 };
  WsiLabelView pv, gv;
  WsiConfusion cm;
  WsiReportInfo info = { 0 };
  WsiImageResult res = { 0 };
  gint ignore;
  gchar *json;
  int status = 0;

  ctx = g_option_context_new ("PREDICTION.png ANNOTATION.png");
  g_option_context_set_summary (ctx,
      "Compares a predicted label image with its annotation and prints pixel "
      "Dice/IoU per class and, with --instances, object F1, PQ, AJI and "
      "object Dice as JSON.");
  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, &argc, &argv, &error)) {
    g_printerr ("wsiseg-eval: %s\n", error->message);
    return 2;
  }
  g_option_context_free (ctx);
  if (argc != 3) {
    g_printerr ("usage: wsiseg-eval [OPTION...] PREDICTION.png "
        "ANNOTATION.png (see --help)\n");
    return 2;
  }
  if (connectivity != 4 && connectivity != 8) {
    g_printerr ("wsiseg-eval: --connectivity must be 4 or 8\n");
    return 2;
  }
  if (instance_class < 0 || instance_class > 255 || num_classes < 0
      || num_classes > WSI_METRICS_MAX_CLASSES) {
    g_printerr ("wsiseg-eval: --class must be 0..255 and --num-classes "
        "0..256\n");
    return 2;
  }

  if (!load_labels (argv[1], &pred, &error)
      || !load_labels (argv[2], &gt, &error)) {
    g_printerr ("wsiseg-eval: %s\n", error->message);
    g_clear_error (&error);
    status = 1;
    goto done;
  }
  if (pred.width != gt.width || pred.height != gt.height) {
    g_printerr ("wsiseg-eval: sizes differ: prediction %dx%d, annotation "
        "%dx%d\n", pred.width, pred.height, gt.width, gt.height);
    status = 1;
    goto done;
  }

  if (!ignore_str)
    ignore = gt.bpp == 1 ? 255 : 65535;
  else if (g_ascii_strcasecmp (ignore_str, "none") == 0)
    ignore = -1;
  else {
    gchar *end;
    gint64 v = g_ascii_strtoll (ignore_str, &end, 10);

    if (*end || end == ignore_str || v < 0 || v > 65535) {
      g_printerr ("wsiseg-eval: --ignore must be 0..65535 or 'none'\n");
      status = 2;
      goto done;
    }
    ignore = v;
  }

  pv = (WsiLabelView) {
  pred.data, (gsize) pred.width * pred.bpp, pred.bpp};
  gv = (WsiLabelView) {
  gt.data, (gsize) gt.width * gt.bpp, gt.bpp};
  wsi_confusion_init (&cm);
  wsi_confusion_add (&cm, &pv, &gv, gt.width, gt.height, ignore);

  info.num_classes = num_classes;
  info.ignore = ignore;
  info.instances = instances;
  info.instance_class = instance_class;
  info.connectivity = connectivity;
  if (instances) {
    gsize n = (gsize) gt.width * gt.height, i;
    guint32 *gi = g_new (guint32, MAX (n, 1));
    guint32 *pi = g_new (guint32, MAX (n, 1));
    guint8 *valid = g_new (guint8, MAX (n, 1));

    for (i = 0; i < n; i++)
      valid[i] = (gint) WSI_LABEL_AT (&gv, i % gt.width, i / gt.width)
          != ignore;
    wsi_instances_from_labels (&pv, valid, gt.width, gt.height,
        instance_class, connectivity, pi);
    wsi_instances_from_labels (&gv, valid, gt.width, gt.height,
        instance_class, connectivity, gi);
    info.instance_source = pred.bpp == gt.bpp ?
        (gt.bpp == 2 ? "instance-map" : "components") : "mixed";
    res.image = argv[2];
    wsi_instance_count (gi, pi, n, G_MAXUINT32 - 1, &res.counts);
    g_free (gi);
    g_free (pi);
    g_free (valid);
  }
  json = wsi_metrics_report_json (&info, &cm, &res, instances ? 1 : 0);
  wsi_confusion_clear (&cm);
  if (output) {
    /* g_file_set_contents writes a temporary file and renames it */
    if (!g_file_set_contents (output, json, -1, &error)) {
      g_printerr ("wsiseg-eval: %s\n", error->message);
      g_clear_error (&error);
      status = 1;
    }
  } else {
    fputs (json, stdout);
  }
  g_free (json);

done:
  g_free (pred.data);
  g_free (gt.data);
  g_free (ignore_str);
  g_free (output);
  return status;
}
