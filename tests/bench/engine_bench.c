/* Engine benchmark: GFLOP/s of a 3x3 convolution (64 -> 64, 256x256) and of
 * U-Net depth 4 base 32, FCN-8s (VGG) and DeepLabv3 (ResNet-18) on 256x256
 * (batch 1 and 8, inference), beside the machine's FMA peak and PyTorch's
 * figures from the same run (engine_bench.py). Results: docs/benchmarks.md,
 * section "engine".
 * usage: engine_bench [SOURCE_ROOT]   (runs by hand or `meson test --benchmark`) */
#include "wsinn.h"
#include "fmapeak.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define THREADS 2

static double
now (void)
{
  struct timespec t;
  clock_gettime (CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

static void
print_load (const char *when)
{
  FILE *f = fopen ("/proc/loadavg", "r");
  char buf[128] = "";
  if (f && fgets (buf, sizeof buf, f))
    printf ("load average %s: %s", when, buf);
  if (f)
    fclose (f);
}


/* Best forward time of @reps after one warm-up. */
static double
time_forward (wsinn_net * net, int n, int h, int w, int reps)
{
  char err[256];
  int oc, oh, ow;
  if (wsinn_net_output_shape (net, n, h, w, &oc, &oh, &ow, err,
          sizeof err) < 0) {
    fprintf (stderr, "%s\n", err);
    exit (1);
  }
  int cin = wsinn_net_channels (net, 0);
  float *in = malloc ((size_t) n * h * w * cin * 4);
  float *out = malloc ((size_t) n * oh * ow * oc * 4);
  for (size_t i = 0; i < (size_t) n * h * w * cin; i++)
    in[i] = (float) (i % 251) / 251.0f;
  double best = 1e30;
  for (int r = 0; r <= reps; r++) {
    double t = now ();
    if (wsinn_net_forward (net, in, n, h, w, out, err, sizeof err) < 0) {
      fprintf (stderr, "%s\n", err);
      exit (1);
    }
    t = now () - t;
    if (r > 0 && t < best)
      best = t;
  }
  free (in);
  free (out);
  return best;
}

static wsinn_net *
conv_chain (int count)
{
  wsinn_net *net = wsinn_net_new ();
  int x = wsinn_input (net, 64);
  char name[32];
  for (int i = 0; i < count; i++) {
    snprintf (name, sizeof name, "c%d", i);
    x = wsinn_conv (net, x, name, 64, 3, 1, 1, 1, 1);
  }
  wsinn_set_output (net, x);
  wsinn_net_init_params (net, 1);
  return net;
}

typedef struct
{
  const char *name, *what;
  double flops, secs, torch_secs;
  char torch_fmt[32];
} row;

int
main (int argc, char **argv)
{
  const char *root = argc > 1 ? argv[1] : getenv ("WSISEG_SOURCE_ROOT");
  wsinn_set_num_threads (THREADS);
  long cores = sysconf (_SC_NPROCESSORS_ONLN);
  const char *isa;
  double peak = fma_peak_gflops (THREADS, &isa);

  print_load ("before");
  enum
  { N_ROWS = 8 };
  row rows[N_ROWS] = {
    {"conv3x3", "3x3 conv 64->64, 1x256x256 (NHWC in/out)"},
    {"conv3x3x8", "8 chained 3x3 convs 64->64, 1x256x256"},
    {"unet_b1", "U-Net depth 4 base 32, 1x256x256"},
    {"unet_b8", "U-Net depth 4 base 32, 8x256x256"},
    {"fcn8s_b1", "FCN-8s (VGG base 32), 1x256x256"},
    {"fcn8s_b8", "FCN-8s (VGG base 32), 8x256x256"},
    {"deeplab_b1", "DeepLabv3 (ResNet-18, OS 16), 1x256x256"},
    {"deeplab_b8", "DeepLabv3 (ResNet-18, OS 16), 8x256x256"},
  };
  const char *archs[3] = { "unet", "fcn8s", "deeplabv3" };
  wsinn_net *net = conv_chain (1);
  rows[0].flops = wsinn_net_flops (net, 1, 256, 256);
  rows[0].secs = time_forward (net, 1, 256, 256, 10);
  wsinn_net_free (net);
  net = conv_chain (8);
  rows[1].flops = wsinn_net_flops (net, 1, 256, 256);
  rows[1].secs = time_forward (net, 1, 256, 256, 5);
  wsinn_net_free (net);

  for (int a = 0; a < 3; a++) {
    wsinn_spec spec;
    char err[256];
    wsinn_spec_init (&spec);
    strcpy (spec.arch, archs[a]);
    net = wsinn_net_new_from_spec (&spec, err, sizeof err);
    if (!net) {
      fprintf (stderr, "%s\n", err);
      return 1;
    }
    wsinn_net_init_params (net, 1);
    row *r = &rows[2 + 2 * a];
    r[0].flops = wsinn_net_flops (net, 1, 256, 256);
    r[0].secs = time_forward (net, 1, 256, 256, 5);
    r[1].flops = wsinn_net_flops (net, 8, 256, 256);
    r[1].secs = time_forward (net, 8, 256, 256, 3);
    wsinn_net_free (net);
  }

  /* PyTorch, same workloads */
  if (root) {
    char cmd[4096];
    snprintf (cmd, sizeof cmd, "/usr/bin/python3 '%s/tests/bench/engine_bench.py' "
        "'%s'", root, root);
    FILE *p = popen (cmd, "r");
    char line[256], name[64], fmt[32];
    double secs;
    while (p && fgets (line, sizeof line, p))
      if (sscanf (line, "%63s %lf %31s", name, &secs, fmt) == 3)
        for (int i = 0; i < N_ROWS; i++)
          if (!strcmp (rows[i].name, name)) {
            rows[i].torch_secs = secs;
            snprintf (rows[i].torch_fmt, sizeof rows[i].torch_fmt, "%s", fmt);
          }
    if (p)
      pclose (p);
  }

  print_load ("after");
  printf ("machine: %ld cores online, threads %d, activations %s\n",
      cores, THREADS, wsinn_activation_layout ());
  printf ("FMA peak: %.1f GFLOP/s, measured (register-resident %s FMA loop, "
      "%d threads)\n\n", peak, isa, THREADS);
  printf ("| workload | GFLOP | wsinn ms | wsinn GFLOP/s | %% peak | "
      "PyTorch ms | PyTorch GFLOP/s (layout) | wsinn / PyTorch |\n");
  printf ("|---|---|---|---|---|---|---|---|\n");
  for (int i = 0; i < N_ROWS; i++) {
    double g = rows[i].flops / rows[i].secs / 1e9;
    printf ("| %s | %.2f | %.1f | %.1f | %.0f%% | ", rows[i].what,
        rows[i].flops / 1e9, rows[i].secs * 1e3, g, 100 * g / peak);
    if (rows[i].torch_secs > 0)
      printf ("%.1f | %.1f (%s) | %.2fx |\n", rows[i].torch_secs * 1e3,
          rows[i].flops / rows[i].torch_secs / 1e9, rows[i].torch_fmt,
          rows[i].torch_secs / rows[i].secs);
    else
      printf ("- | - | - |\n");
  }
  return 0;
}
