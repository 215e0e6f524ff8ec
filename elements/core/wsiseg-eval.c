/* wsiseg-eval: compares a predicted label PNG with a ground-truth label PNG
 * and prints the segeval JSON report (docs/segeval.md). */
#include "wsimetrics.h"
#include "wsipng.h"

#include <stdio.h>

#define MAX_PIXELS ((gsize) 1 << 31)

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
  WsiLabelImage pred = { 0 }, gt = { 0 };
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

  if (!wsi_png_read_labels (argv[1], &pred, MAX_PIXELS, &error)
      || !wsi_png_read_labels (argv[2], &gt, MAX_PIXELS, &error)) {
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
    ignore = gt.bytes_per_pixel == 1 ? 255 : 65535;
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
  pred.data, (gsize) pred.width * pred.bytes_per_pixel, pred.bytes_per_pixel};
  gv = (WsiLabelView) {
  gt.data, (gsize) gt.width * gt.bytes_per_pixel, gt.bytes_per_pixel};
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
    info.instance_source = pred.bytes_per_pixel == gt.bytes_per_pixel ?
        (gt.bytes_per_pixel == 2 ? "instance-map" : "components") : "mixed";
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
  wsi_label_image_clear (&pred);
  wsi_label_image_clear (&gt);
  g_free (ignore_str);
  g_free (output);
  return status;
}
