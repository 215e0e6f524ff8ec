/* Fuzz target of the safetensors parser (models/engine/safetensors.c).
 *
 * With -DWSI_LIBFUZZER (clang -fsanitize=fuzzer,address, see run.sh) this
 * is a libFuzzer target. Without it, main() replays files and directories
 * given on the command line through the same entry point, so the kept
 * corpus (tests/fuzz/corpus) is a regression test of the normal build. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <glib.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput (const uint8_t * data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t * data, size_t size)
{
  char err[512];
  WsiSafetensors *st = wsi_safetensors_parse (data, size, err, sizeof err);
  volatile float sink = 0;

  if (!st) {
    /* the message must be a terminated string */
    if (strlen (err) >= sizeof err)
      __builtin_trap ();
    return 0;
  }
  for (size_t i = 0; i < wsi_safetensors_n_tensors (st); i++) {
    const WsiTensor *t = wsi_safetensors_tensor (st, i);
    const float *v = wsi_safetensors_f32 (st, t, err, sizeof err);
    if (wsi_safetensors_find (st, t->name) != t)
      __builtin_trap ();
    if (v && t->n_elements > 0)
      sink += v[0] + v[t->n_elements - 1];
  }
  for (size_t i = 0; i < wsi_safetensors_n_metadata (st); i++) {
    const char *k = wsi_safetensors_metadata_key (st, i);
    if (!wsi_safetensors_metadata (st, k))
      __builtin_trap ();
  }
  wsi_safetensors_check_model_metadata (st, err, sizeof err);
  wsi_safetensors_free (st);
  (void) sink;
  return 0;
}

#ifndef WSI_LIBFUZZER
static int
replay_file (const char *path)
{
  gchar *buf;
  gsize len;
  GError *e = NULL;

  if (!g_file_get_contents (path, &buf, &len, &e)) {
    fprintf (stderr, "%s: %s\n", path, e->message);
    g_error_free (e);
    return 1;
  }
  LLVMFuzzerTestOneInput ((const uint8_t *) buf, len);
  g_free (buf);
  return 0;
}

int
main (int argc, char **argv)
{
  int n = 0, bad = 0;

  for (int a = 1; a < argc; a++) {
    GDir *dir = g_dir_open (argv[a], 0, NULL);
    if (!dir) {
      bad += replay_file (argv[a]);
      n++;
      continue;
    }
    const char *name;
    while ((name = g_dir_read_name (dir))) {
      gchar *p = g_build_filename (argv[a], name, NULL);
      if (g_file_test (p, G_FILE_TEST_IS_REGULAR)) {
        bad += replay_file (p);
        n++;
      }
      g_free (p);
    }
    g_dir_close (dir);
  }
  printf ("replayed %d inputs, %d unreadable\n", n, bad);
  return (bad || n == 0) ? 1 : 0;
}
#endif
