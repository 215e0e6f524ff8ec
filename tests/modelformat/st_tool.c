/* Command-line front end of the safetensors parser, driven by the Python
 * tests of suite modelformat.
 *
 *   st_tool check FILE        exit 0 and "ok", or exit 1 and the error
 *   st_tool checkmeta FILE    check + gst-wsiseg metadata keys
 *   st_tool info FILE         JSON: tensors (name, dtype, shape), metadata
 *   st_tool convert IN OUT    re-save every float tensor as F32 with the C
 *                             writer (same order and metadata)
 *   st_tool writer-errors DIR the writer's refusals leave no file behind
 */
#include <stdio.h>
#include <string.h>
#include <math.h>

#include <glib.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include "safetensors.h"

static WsiSafetensors *
open_or_report (const char *path)
{
  char err[1024];
  WsiSafetensors *st = wsi_safetensors_open (path, err, sizeof err);

  if (!st)
    printf ("error: %s\n", err);
  return st;
}

static int
cmd_info (WsiSafetensors * st)
{
  JsonBuilder *b = json_builder_new ();
  JsonGenerator *g = json_generator_new ();
  JsonNode *root;
  char *text;

  json_builder_begin_object (b);
  json_builder_set_member_name (b, "tensors");
  json_builder_begin_array (b);
  for (size_t i = 0; i < wsi_safetensors_n_tensors (st); i++) {
    const WsiTensor *t = wsi_safetensors_tensor (st, i);
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "name");
    json_builder_add_string_value (b, t->name);
    json_builder_set_member_name (b, "dtype");
    json_builder_add_string_value (b, wsi_dtype_name (t->dtype));
    json_builder_set_member_name (b, "shape");
    json_builder_begin_array (b);
    for (int d = 0; d < t->n_dims; d++)
      json_builder_add_int_value (b, t->shape[d]);
    json_builder_end_array (b);
    json_builder_set_member_name (b, "offset");
    json_builder_add_int_value (b, (gint64) t->offset);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  json_builder_set_member_name (b, "metadata");
  json_builder_begin_object (b);
  for (size_t i = 0; i < wsi_safetensors_n_metadata (st); i++) {
    const char *k = wsi_safetensors_metadata_key (st, i);
    json_builder_set_member_name (b, k);
    json_builder_add_string_value (b, wsi_safetensors_metadata (st, k));
  }
  json_builder_end_object (b);
  json_builder_end_object (b);
  root = json_builder_get_root (b);
  json_generator_set_root (g, root);
  text = json_generator_to_data (g, NULL);
  printf ("%s\n", text);
  g_free (text);
  json_node_unref (root);
  g_object_unref (g);
  g_object_unref (b);
  return 0;
}

static int
cmd_convert (WsiSafetensors * st, const char *out)
{
  size_t n = wsi_safetensors_n_tensors (st), nm = wsi_safetensors_n_metadata (st);
  WsiTensorSpec *specs = g_new0 (WsiTensorSpec, n);
  const char **meta = g_new0 (const char *, 2 * nm + 1);
  char err[1024];
  int ret;

  for (size_t i = 0; i < n; i++) {
    const WsiTensor *t = wsi_safetensors_tensor (st, i);
    specs[i].name = t->name;
    specs[i].n_dims = t->n_dims;
    specs[i].shape = t->shape;
    specs[i].data = wsi_safetensors_f32 (st, t, err, sizeof err);
    if (!specs[i].data) {
      printf ("error: %s\n", err);
      g_free (specs);
      g_free (meta);
      return 1;
    }
  }
  for (size_t i = 0; i < nm; i++) {
    meta[2 * i] = wsi_safetensors_metadata_key (st, i);
    meta[2 * i + 1] = wsi_safetensors_metadata (st, meta[2 * i]);
  }
  ret = wsi_safetensors_save (out, specs, n, meta, err, sizeof err);
  if (ret != 0)
    printf ("error: %s\n", err);
  g_free (specs);
  g_free (meta);
  return ret ? 1 : 0;
}

static int failures;

static void
expect_refused (const char *what, const char *path, const WsiTensorSpec * t,
    size_t n, const char *const *meta, const char *want)
{
  char err[512] = "";
  int r = wsi_safetensors_save (path, t, n, meta, err, sizeof err);
  gboolean ok = r != 0 && strstr (err, want) != NULL;

  printf ("%s: %s (%s)\n", ok ? "ok" : "FAIL", what, err);
  failures += !ok;
}

/* The writer refuses bad input and never leaves a partial file; a refused
 * save over an existing file keeps the old one. */
static int
cmd_writer_errors (const char *dir)
{
  char *path = g_build_filename (dir, "w.safetensors", NULL);
  int64_t shape[2] = { 2, 2 };
  float good[4] = { 1, 2, 3, 4 }, nan4[4] = { 1, NAN, 3, 4 };
  WsiTensorSpec one = { "a", 2, shape, good };
  WsiTensorSpec dup[2] = { {"a", 2, shape, good}, {"a", 2, shape, good} };
  WsiTensorSpec bad = { "b", 2, shape, nan4 };
  const char *meta[] = { "k", "v", NULL };
  const char *dupmeta[] = { "k", "v", "k", "w", NULL };
  char err[512];
  WsiSafetensors *st;
  GDir *d;
  const char *entry;
  int n_files = 0;

  if (wsi_safetensors_save (path, &one, 1, meta, err, sizeof err) != 0) {
    printf ("FAIL: first save: %s\n", err);
    return 1;
  }
  expect_refused ("duplicate tensor names", path, dup, 2, NULL, "duplicate");
  expect_refused ("NaN value", path, &bad, 1, NULL, "NaN at element 1");
  expect_refused ("duplicate metadata", path, &one, 1, dupmeta, "duplicate");
  expect_refused ("missing directory", "/nonexistent-dir/x.safetensors", &one,
      1, NULL, "temporary file");
  st = wsi_safetensors_open (path, err, sizeof err);
  if (!st || wsi_safetensors_n_tensors (st) != 1
      || g_strcmp0 (wsi_safetensors_metadata (st, "k"), "v") != 0) {
    printf ("FAIL: the first file did not survive the refused saves\n");
    failures++;
  } else {
    const float *v = wsi_safetensors_f32 (st, wsi_safetensors_find (st, "a"),
        err, sizeof err);
    if (!v || memcmp (v, good, sizeof good) != 0) {
      printf ("FAIL: values changed\n");
      failures++;
    } else {
      printf ("ok: old file intact after refused saves\n");
    }
  }
  wsi_safetensors_free (st);
  d = g_dir_open (dir, 0, NULL);
  while (d && (entry = g_dir_read_name (d)))
    n_files++;
  if (d)
    g_dir_close (d);
  if (n_files != 1) {
    printf ("FAIL: %d files in %s, temporary files left behind\n", n_files,
        dir);
    failures++;
  } else {
    printf ("ok: no temporary files left\n");
  }
  g_free (path);
  return failures ? 1 : 0;
}

int
main (int argc, char **argv)
{
  WsiSafetensors *st;
  char err[1024];
  int ret = 0;

  if (argc == 3 && strcmp (argv[1], "writer-errors") == 0)
    return cmd_writer_errors (argv[2]);
  if (argc < 3) {
    fprintf (stderr, "usage: %s check|checkmeta|info FILE | convert IN OUT | "
        "writer-errors DIR\n", argv[0]);
    return 2;
  }
  st = open_or_report (argv[2]);
  if (!st)
    return 1;
  if (strcmp (argv[1], "check") == 0) {
    /* also convert every float tensor: exercises the conversions */
    for (size_t i = 0; i < wsi_safetensors_n_tensors (st); i++) {
      const WsiTensor *t = wsi_safetensors_tensor (st, i);
      if (t->dtype == WSI_DTYPE_F32 || t->dtype == WSI_DTYPE_F16
          || t->dtype == WSI_DTYPE_BF16 || t->dtype == WSI_DTYPE_F64) {
        if (!wsi_safetensors_f32 (st, t, err, sizeof err)) {
          printf ("error: %s\n", err);
          ret = 1;
          break;
        }
      }
    }
    if (!ret)
      printf ("ok: %zu tensors, %zu metadata keys\n",
          wsi_safetensors_n_tensors (st), wsi_safetensors_n_metadata (st));
  } else if (strcmp (argv[1], "checkmeta") == 0) {
    ret = wsi_safetensors_check_model_metadata (st, err, sizeof err) ? 1 : 0;
    if (ret)
      printf ("error: %s\n", err);
    else
      printf ("ok\n");
  } else if (strcmp (argv[1], "info") == 0) {
    ret = cmd_info (st);
  } else if (strcmp (argv[1], "convert") == 0 && argc == 4) {
    ret = cmd_convert (st, argv[3]);
  } else {
    fprintf (stderr, "unknown command %s\n", argv[1]);
    ret = 2;
  }
  wsi_safetensors_free (st);
  return ret;
}
