/* Training benchmark: steps/s of the wsitrain trainer (U-Net depth 4, base
 * 32, batch 8, 256x256, 2 classes, cross-entropy, SGD momentum 0.9: forward,
 * loss, backward, update) beside PyTorch on the same step in the same run
 * (train_bench.py, 2 threads). Results: docs/benchmarks.md, "training".
 * usage: train_bench SOURCE_ROOT [STEPS] [BASE_WIDTH BATCH SIDE] [notorch]
 * (run by hand; the defaults are 3 steps, 32, 8, 256) */
#include "wsitrain.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


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

int
main (int argc, char **argv)
{
  const char *root = argc > 1 ? argv[1] : ".";
  int steps = argc > 2 ? atoi (argv[2]) : 3;
  int base = argc > 5 ? atoi (argv[3]) : 32;
  int B = argc > 5 ? atoi (argv[4]) : 8;
  int S = argc > 5 ? atoi (argv[5]) : 256;
  int torch = !(argc > 6 && !strcmp (argv[6], "notorch"));
  char base_str[16];
  snprintf (base_str, sizeof base_str, "%d", base > 0 ? base : 32);
  const char *const meta[] = { "arch", "unet", "depth", "4",
    "base_width", base_str, "n_classes", "2", NULL
  };
  char err[512], cmd[1024];
  WsiTrainConfig cfg;
  WsiStepResult r;

  if (steps < 1)
    steps = 1;
  if (B < 1 || S < 16 || S % 16) {
    fprintf (stderr, "bad batch %d or side %d (a multiple of 16)\n", B, S);
    return 1;
  }
  wsi_train_config_init (&cfg);
  cfg.lr = 0.01;
  cfg.momentum = 0.9;
  cfg.threads = 2;
  WsiTrainer *t = wsi_trainer_new (meta, WSI_TASK_SEGMENT, &cfg, 1, err,
      sizeof err);
  if (!t) {
    fprintf (stderr, "%s\n", err);
    return 1;
  }
  float *x = malloc (sizeof (float) * B * S * S * 3);
  uint8_t *y = malloc (B * S * S);
  unsigned s = 1;
  for (size_t i = 0; i < (size_t) B * S * S * 3; i++) {
    s = s * 1664525u + 1013904223u;
    x[i] = (float) (s >> 8) / (float) (1u << 24) * 2 - 1;
  }
  for (size_t i = 0; i < (size_t) B * S * S; i++)
    y[i] = (i / 97) % 2;

  print_load ("before");
  double best = 1e30;
  for (int k = 0; k <= steps; k++) {
    double t0 = now ();
    if (wsi_trainer_step (t, x, B, S, S, y, &r, err, sizeof err) != 0) {
      fprintf (stderr, "%s\n", err);
      return 1;
    }
    double dt = now () - t0;
    if (k > 0 && dt < best)
      best = dt;
    printf ("wsitrain step %d: %.3f s (loss %.4f)\n", k, dt, r.loss);
    fflush (stdout);
  }
  wsi_trainer_free (t);

  snprintf (cmd, sizeof cmd, "/usr/bin/python3 '%s/tests/bench/train_bench.py' "
      "'%s' %d %d %d %d", root, root, steps, base, B, S);
  FILE *p = torch ? popen (cmd, "r") : NULL;
  double ref = 0;
  char fmt[32] = "?";
  if (!p || fscanf (p, "%lf %31s", &ref, fmt) != 2)
    ref = 0;
  if (p)
    pclose (p);
  print_load ("after");
  printf ("\nU-Net d4 b%d, batch %d, %dx%d, SGD step (best of %d)\n", base,
      B, S, S, steps);
  printf ("%-22s %10s %10s\n", "", "s/step", "steps/s");
  printf ("%-22s %10.3f %10.3f\n", "wsitrain (oneDNN)", best, 1 / best);
  if (ref > 0) {
    printf ("%-22s %10.3f %10.3f  (%s)\n", "PyTorch 2 threads", ref, 1 / ref,
        fmt);
    printf ("speed-up %.2fx (goal >= 1.3x)\n", ref / best);
  } else {
    printf ("PyTorch reference did not run\n");
  }
  free (x);
  free (y);
  return 0;
}
