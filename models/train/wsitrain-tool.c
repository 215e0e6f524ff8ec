/* wsitrain-tool: the training core from the command line (used by the
 * PyTorch parity tests, handy for experiments). docs/training.md.
 *
 *   wsitrain-tool loss KIND LOGITS.raw LABELS.raw N_PIXELS C GRAD.raw [opts]
 *       prints "loss ce dice n_valid n_correct"; writes d loss / d logits
 *   wsitrain-tool train MODEL INPUT.raw LABELS.raw N H W OUT.safetensors [opts]
 *       INPUT holds B batches of N x H x W x 3 float32 (NHWC), LABELS B x N x
 *       H x W uint8 (or "-" for --pretrain); step s uses batch s % B.
 *       Prints one line per step: "step S loss L accuracy A lr R".
 * options: --steps S --optim sgd|adam|adamw --lr X --momentum X --nesterov
 *   --wd X --beta1 X --beta2 X --eps X --clip X --schedule constant|step|cosine
 *   --warmup N --step-size N --gamma X --total-steps N --min-lr X
 *   --freeze a.,b. --freeze-steps K --loss ce|dice|ce+dice|bce|mse
 *   --weights w0,w1,.. --ignore I --smooth X --ce-weight X --dice-weight X
 *   --pos-weight X --target T.raw (mse) --resume --fresh SEED (MODEL is then a
 *   metadata file: key=value lines) --pretrain --init-from F --init-prefix P
 *   --threads T --export (write a model file without optimiser state) */
#include "wsitrain.h"

#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *
read_file (const char *path, size_t want, const char *what)
{
  gchar *data = NULL;
  gsize len = 0;
  GError *e = NULL;

  if (!g_file_get_contents (path, &data, &len, &e)) {
    fprintf (stderr, "%s: %s\n", what, e->message);
    exit (2);
  }
  if (want && len % want) {
    fprintf (stderr, "%s: %zu bytes, not a multiple of %zu\n", what,
        (size_t) len, want);
    exit (2);
  }
  return data;
}

static size_t
file_size (const char *path)
{
  FILE *f = fopen (path, "rb");
  long n;
  if (!f)
    return 0;
  fseek (f, 0, SEEK_END);
  n = ftell (f);
  fclose (f);
  return n < 0 ? 0 : (size_t) n;
}

typedef struct
{
  WsiTrainConfig cfg;
  int steps, resume, pretrain, export_only;
  int64_t fresh_seed;
  const char *init_from, *init_prefix, *target;
} Opts;

static void
parse_opts (Opts * o, int argc, char **argv, int first)
{
  char err[256];
  for (int i = first; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    int takes = 1;
#define IS(s) (strcmp (a, s) == 0)
    if (IS ("--nesterov")) {
      o->cfg.nesterov = 1;
      takes = 0;
    } else if (IS ("--resume")) {
      o->resume = 1;
      takes = 0;
    } else if (IS ("--pretrain")) {
      o->pretrain = 1;
      takes = 0;
    } else if (IS ("--export")) {
      o->export_only = 1;
      takes = 0;
    } else if (!v) {
      fprintf (stderr, "option %s needs a value\n", a);
      exit (2);
    } else if (IS ("--steps"))
      o->steps = atoi (v);
    else if (IS ("--optim"))
      o->cfg.optim = wsi_optim_kind_from_string (v);
    else if (IS ("--lr"))
      o->cfg.lr = g_ascii_strtod (v, NULL);
    else if (IS ("--momentum"))
      o->cfg.momentum = g_ascii_strtod (v, NULL);
    else if (IS ("--wd"))
      o->cfg.weight_decay = g_ascii_strtod (v, NULL);
    else if (IS ("--beta1"))
      o->cfg.beta1 = g_ascii_strtod (v, NULL);
    else if (IS ("--beta2"))
      o->cfg.beta2 = g_ascii_strtod (v, NULL);
    else if (IS ("--eps"))
      o->cfg.eps = g_ascii_strtod (v, NULL);
    else if (IS ("--clip"))
      o->cfg.clip_grad_norm = g_ascii_strtod (v, NULL);
    else if (IS ("--schedule"))
      o->cfg.schedule = wsi_sched_kind_from_string (v);
    else if (IS ("--warmup"))
      o->cfg.warmup_steps = atoll (v);
    else if (IS ("--step-size"))
      o->cfg.step_size = atoll (v);
    else if (IS ("--gamma"))
      o->cfg.gamma = g_ascii_strtod (v, NULL);
    else if (IS ("--total-steps"))
      o->cfg.total_steps = atoll (v);
    else if (IS ("--min-lr"))
      o->cfg.min_lr = g_ascii_strtod (v, NULL);
    else if (IS ("--freeze")) {
      if (wsi_train_config_set_freeze (&o->cfg, v, err, sizeof err) != 0) {
        fprintf (stderr, "%s\n", err);
        exit (2);
      }
    } else if (IS ("--freeze-steps"))
      o->cfg.freeze_steps = atoll (v);
    else if (IS ("--loss"))
      o->cfg.loss.kind = wsi_loss_kind_from_string (v);
    else if (IS ("--weights")) {
      if (wsi_loss_config_set_class_weights (&o->cfg.loss, v, err,
              sizeof err) != 0) {
        fprintf (stderr, "%s\n", err);
        exit (2);
      }
    }
    else if (IS ("--ignore"))
      o->cfg.loss.ignore_index = atoi (v);
    else if (IS ("--smooth"))
      o->cfg.loss.dice_smooth = (float) g_ascii_strtod (v, NULL);
    else if (IS ("--ce-weight"))
      o->cfg.loss.ce_weight = (float) g_ascii_strtod (v, NULL);
    else if (IS ("--dice-weight"))
      o->cfg.loss.dice_weight = (float) g_ascii_strtod (v, NULL);
    else if (IS ("--pos-weight"))
      o->cfg.loss.pos_weight = (float) g_ascii_strtod (v, NULL);
    else if (IS ("--target"))
      o->target = v;
    else if (IS ("--fresh"))
      o->fresh_seed = atoll (v);
    else if (IS ("--init-from"))
      o->init_from = v;
    else if (IS ("--init-prefix"))
      o->init_prefix = v;
    else if (IS ("--threads"))
      o->cfg.threads = atoi (v);
    else {
      fprintf (stderr, "unknown option %s\n", a);
      exit (2);
    }
#undef IS
    i += takes;
  }
  if ((int) o->cfg.optim < 0 || (int) o->cfg.schedule < 0
      || (int) o->cfg.loss.kind < 0) {
    fprintf (stderr, "unknown optimiser, schedule or loss name\n");
    exit (2);
  }
}

static int
cmd_loss (int argc, char **argv)
{
  Opts o = { 0 };
  char err[256];
  WsiLossResult r;

  if (argc < 8) {
    fprintf (stderr, "usage: wsitrain-tool loss KIND LOGITS LABELS N_PIXELS "
        "C GRAD [options]\n");
    return 2;
  }
  wsi_train_config_init (&o.cfg);
  parse_opts (&o, argc, argv, 8);
  o.cfg.loss.kind = wsi_loss_kind_from_string (argv[2]);
  if ((int) o.cfg.loss.kind < 0) {
    fprintf (stderr, "unknown loss %s\n", argv[2]);
    return 2;
  }
  size_t n = strtoull (argv[5], NULL, 10);
  int c = atoi (argv[6]);
  float *logits = read_file (argv[3], n * c * 4, "logits");
  uint8_t *labels = o.cfg.loss.kind == WSI_LOSS_MSE ? NULL :
      read_file (argv[4], n, "labels");
  float *target = o.target ? read_file (o.target, n * c * 4, "target") : NULL;
  float *grad = g_new (float, n * c);
  if (wsi_loss_compute (&o.cfg.loss, logits, n, c, labels, target, grad, &r,
          err, sizeof err) != 0) {
    fprintf (stderr, "%s\n", err);
    return 1;
  }
  printf ("%.9g %.9g %.9g %" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT "\n",
      r.loss, r.ce, r.dice, r.n_valid, r.n_correct);
  if (!g_file_set_contents (argv[7], (const gchar *) grad, n * c * 4, NULL))
    return 1;
  g_free (logits);
  g_free (labels);
  g_free (target);
  g_free (grad);
  return 0;
}

/* key=value lines -> NULL-terminated pair list. */
static char **
read_metadata (const char *path)
{
  gchar *text = read_file (path, 0, "metadata");
  gchar **lines = g_strsplit (text, "\n", -1);
  GPtrArray *kv = g_ptr_array_new ();
  for (int i = 0; lines[i]; i++) {
    char *eq = strchr (lines[i], '=');
    if (!eq)
      continue;
    g_ptr_array_add (kv, g_strndup (lines[i], eq - lines[i]));
    g_ptr_array_add (kv, g_strdup (eq + 1));
  }
  g_ptr_array_add (kv, NULL);
  g_strfreev (lines);
  g_free (text);
  return (char **) g_ptr_array_free (kv, FALSE);
}

static int
cmd_train (int argc, char **argv)
{
  Opts o = { 0 };
  char err[512];
  WsiTrainer *t;

  if (argc < 9) {
    fprintf (stderr, "usage: wsitrain-tool train MODEL INPUT LABELS N H W "
        "OUT [options]\n");
    return 2;
  }
  wsi_train_config_init (&o.cfg);
  o.steps = 1;
  o.fresh_seed = -1;
  parse_opts (&o, argc, argv, 9);
  int n = atoi (argv[5]), h = atoi (argv[6]), w = atoi (argv[7]);
  size_t px = (size_t) n * h * w;
  if (n < 1 || h < 1 || w < 1) {
    fprintf (stderr, "bad batch size\n");
    return 2;
  }
  size_t in_bytes = file_size (argv[3]);
  int n_batches = (int) (in_bytes / (px * 3 * 4));
  if (n_batches < 1 || in_bytes % (px * 3 * 4)) {
    fprintf (stderr, "input: %zu bytes is not a whole number of %dx%dx%dx3 "
        "float batches\n", in_bytes, n, h, w);
    return 2;
  }
  float *input = read_file (argv[3], px * 3 * 4, "input");
  uint8_t *labels = NULL;
  if (strcmp (argv[4], "-")) {
    labels = read_file (argv[4], px, "labels");
    if (file_size (argv[4]) != px * n_batches) {
      fprintf (stderr, "labels: expected %zu bytes\n", px * n_batches);
      return 2;
    }
  }

  if (o.fresh_seed >= 0) {
    char **meta = read_metadata (argv[2]);
    t = wsi_trainer_new ((const char *const *) meta, o.pretrain ?
        WSI_TASK_PRETRAIN : WSI_TASK_SEGMENT, &o.cfg, o.fresh_seed, err,
        sizeof err);
    g_strfreev (meta);
  } else {
    t = wsi_trainer_new_from_file (argv[2], &o.cfg, o.resume, err,
        sizeof err);
  }
  if (!t) {
    fprintf (stderr, "%s\n", err);
    return 1;
  }
  if (o.init_from) {
    WsiInitFromReport r;
    if (wsi_trainer_init_from (t, o.init_from, o.init_prefix, &r, err,
            sizeof err) != 0) {
      fprintf (stderr, "%s\n", err);
      return 1;
    }
    printf ("init-from copied %d of %d params (%d shape mismatches, %d "
        "outside prefix, %d unused)\n", r.n_copied, r.n_net_params,
        r.n_shape_mismatch, r.n_skipped_prefix, r.n_unused);
  }
  int status = 0;
  /* the checkpoint lock segment-fcn takes: one run per output file */
  int lock_fd = wsi_checkpoint_lock (argv[8], NULL, err, sizeof err);
  if (lock_fd < 0) {
    fprintf (stderr, "%s\n", err);
    wsi_trainer_free (t);
    g_free (input);
    g_free (labels);
    return 4;
  }
  for (int s = 0; s < o.steps; s++) {
    int b = (int) ((wsi_trainer_get_step (t)) % n_batches);
    WsiStepResult r;
    if (wsi_trainer_step (t, input + b * px * 3, n, h, w,
            labels ? labels + b * px : NULL, &r, err, sizeof err) != 0) {
      fprintf (stderr, "%s\n", err);
      status = 3;
      break;
    }
    printf ("step %" G_GINT64_FORMAT " loss %.9g accuracy %.6f lr %.9g "
        "grad_norm %.6g frozen %d\n", r.step, r.loss, r.accuracy, r.lr,
        r.grad_norm, r.n_frozen);
  }
  if ((o.export_only ? wsi_trainer_export (t, argv[8], err, sizeof err) :
          wsi_trainer_save (t, argv[8], err, sizeof err)) != 0) {
    fprintf (stderr, "%s\n", err);
    status = 1;
  }
  wsi_checkpoint_unlock (argv[8], lock_fd);
  wsi_trainer_free (t);
  g_free (input);
  g_free (labels);
  return status;
}

int
main (int argc, char **argv)
{
  if (argc >= 2 && !strcmp (argv[1], "loss"))
    return cmd_loss (argc, argv);
  if (argc >= 2 && !strcmp (argv[1], "train"))
    return cmd_train (argc, argv);
  fprintf (stderr, "usage: wsitrain-tool loss|train ... (see the source "
      "header or docs/training.md)\n");
  return 2;
}
