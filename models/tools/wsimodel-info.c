/* wsimodel-info: prints the facts a model file declares, one "key=value"
 * per line (arch, encoder, classes, class_names, class_colors, preprocess,
 * mpp, patch_size, size_multiple; for arch maskrcnn also its backbone,
 * anchors, mask size and detection settings), or one value with --get KEY.
 * Lets shell scripts (pipelines/demo.sh) set up a pipeline for a model. A
 * file segment-fcn (segment-maskrcnn) would refuse is refused here too
 * (wsi_model_check, wsimrcnn_load):
 *
 *   wsimodel-info MODEL [--get KEY] */
#include "wsimodel.h"
#include "wsimrcnn-file.h"

#include <glib.h>

#include <stdio.h>
#include <string.h>

static const char *const preproc_names[] = {
  "rescale01", "rescale11", "standardize"
};

static const char *wanted;      /* --get KEY, or NULL for all */
static int found;

static void
emit (const char *key, const char *value)
{
  if (wanted && strcmp (wanted, key) != 0)
    return;
  if (wanted)
    printf ("%s\n", value);
  else
    printf ("%s=%s\n", key, value);
  found = 1;
}

/* The arch a file declares is maskrcnn (a file that cannot be read is left
 * to wsi_model_check's messages). */
static int
is_maskrcnn (const char *path)
{
  char err[64];
  WsiSafetensors *st = wsi_safetensors_open (path, err, sizeof err);
  int yes = st && g_strcmp0 (wsi_safetensors_metadata (st, "arch"),
      "maskrcnn") == 0;
  wsi_safetensors_free (st);
  return yes;
}

int
main (int argc, char **argv)
{
  WsiModelInfo info;
  WsiMrcnnModelInfo mi;
  char err[512] = "", names[4096] = "", colors[4096] = "", num[64];
  size_t nn = 0, nc = 0;
  int ret = 0, mrcnn = 0;

  if (argc == 4 && strcmp (argv[2], "--get") == 0)
    wanted = argv[3];
  else if (argc != 2) {
    fprintf (stderr, "usage: %s MODEL [--get KEY]\n", argv[0]);
    return 2;
  }
  memset (&info, 0, sizeof info);
  memset (&mi, 0, sizeof mi);
  if (is_maskrcnn (argv[1])) {
    /* the check segment-maskrcnn's loader makes */
    wsimrcnn *m = wsimrcnn_load (argv[1], &mi, err, sizeof err);
    if (!m) {
      fprintf (stderr, "%s\n", err);
      return 1;
    }
    wsimrcnn_free (m);
    info = mi.info;
    memset (&mi.info, 0, sizeof mi.info);
    mrcnn = 1;
  } else if (wsi_model_check (argv[1], &info, err, sizeof err) != 0) {
    /* the same check segment-fcn's loader makes */
    fprintf (stderr, "%s: %s\n", argv[1], err);
    return 1;
  }
  for (int c = 0; c < info.n_classes; c++) {
    if (nn < sizeof names)
      nn += snprintf (names + nn, sizeof names - nn, "%s%s", c ? "," : "",
          info.class_names[c]);
    if (nc < sizeof colors)
      nc += snprintf (colors + nc, sizeof colors - nc, "%s%02x%02x%02x",
          c ? "," : "", info.class_colors[c][0], info.class_colors[c][1],
          info.class_colors[c][2]);
  }
  if (nn >= sizeof names || nc >= sizeof colors) {
    fprintf (stderr, "%s: class lists too long\n", argv[1]);
    ret = 1;
    goto done;
  }
  emit ("arch", info.arch);
  emit ("encoder", info.encoder);
  snprintf (num, sizeof num, "%d", info.n_classes);
  emit ("classes", num);
  emit ("class_names", names);
  emit ("class_colors", colors);
  emit ("preprocess", preproc_names[info.preproc]);
  snprintf (num, sizeof num, "%g", info.mpp);
  emit ("mpp", num);
  snprintf (num, sizeof num, "%d", info.patch_size);
  emit ("patch_size", num);
  snprintf (num, sizeof num, "%d", info.size_multiple);
  emit ("size_multiple", num);
  if (mrcnn) {
    /* the Mask R-CNN keys, as the file would be written back */
    static const char *const common[] = { "format", "format_version",
      "arch", "n_classes", "class_names", "class_colors", "preprocess",
      "mean", "std", "input_layout", "input_channels", "mpp", "patch_size",
      "size_multiple", "bn_eps", NULL
    };
    mi.info = info;
    char **kv = wsimrcnn_metadata_new (&mi, NULL);
    memset (&mi.info, 0, sizeof mi.info);
    for (int i = 0; kv[i] && kv[i + 1]; i += 2)
      if (!g_strv_contains (common, kv[i]))
        emit (kv[i], kv[i + 1]);
    g_strfreev (kv);
  }
  if (wanted && !found) {
    fprintf (stderr, "unknown key '%s'\n", wanted);
    ret = 2;
  }
done:
  wsi_model_info_clear (&info);
  return ret;
}
