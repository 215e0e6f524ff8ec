/* wsinn-infer: runs a model file (safetensors, docs/model-format.md) on a raw
 * float32 NHWC input with the wsinn engine and writes the raw float32 NHWC
 * output. Used by the PyTorch parity tests and by hand:
 *
 *   wsinn-infer MODEL INPUT N H W OUTPUT [--probs] [--threads T]
 *       [--train] [--backward DIFF_OUT GRADS.safetensors] [--repeat R]
 *       [--dump-plan]
 *
 * --train runs the forward in training mode (BatchNorm batch statistics);
 * --backward reads the output gradient (NHWC raw) and saves every parameter
 * gradient plus "input" (NHWC) into a safetensors file. */
#include "safetensors.h"
#include "wsinn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static float *
read_raw (const char *path, size_t count, char *err, size_t errlen)
{
  FILE *f = fopen (path, "rb");
  if (!f) {
    snprintf (err, errlen, "cannot open %s: %s", path, strerror (errno));
    return NULL;
  }
  float *buf = malloc (count * sizeof (float) + 1);
  size_t got = buf ? fread (buf, sizeof (float), count, f) : 0;
  int extra = fgetc (f) != EOF;
  fclose (f);
  if (!buf || got != count || extra) {
    snprintf (err, errlen, "%s: expected exactly %zu float32 values (%zu "
        "bytes)", path, count, count * sizeof (float));
    free (buf);
    return NULL;
  }
  return buf;
}

static int
write_raw (const char *path, const float *data, size_t count, char *err,
    size_t errlen)
{
  char tmp[4096];
  snprintf (tmp, sizeof tmp, "%s.tmp%ld", path, (long) getpid ());
  FILE *f = fopen (tmp, "wb");
  if (!f || fwrite (data, sizeof (float), count, f) != count
      || fclose (f) != 0 || rename (tmp, path) != 0) {
    snprintf (err, errlen, "cannot write %s: %s", path, strerror (errno));
    remove (tmp);
    return -1;
  }
  return 0;
}

/* Builds the net a model file describes and loads every tensor by name. */
static wsinn_net *
load_model (const char *path, wsinn_output output, char *err, size_t errlen)
{
  WsiSafetensors *st = wsi_safetensors_open (path, err, errlen);
  if (!st)
    return NULL;
  wsinn_spec spec;
  wsinn_spec_init (&spec);
  if (!wsi_safetensors_metadata (st, "arch")) {
    snprintf (err, errlen, "%s: no 'arch' in the metadata", path);
    wsi_safetensors_free (st);
    return NULL;
  }
  for (size_t i = 0; i < wsi_safetensors_n_metadata (st); i++) {
    const char *k = wsi_safetensors_metadata_key (st, i);
    if (wsinn_spec_set (&spec, k, wsi_safetensors_metadata (st, k), err,
            errlen) < 0) {
      wsi_safetensors_free (st);
      return NULL;
    }
  }
  spec.output = output;
  wsinn_net *net = wsinn_net_new_from_spec (&spec, err, errlen);
  if (!net) {
    wsi_safetensors_free (st);
    return NULL;
  }
  size_t used = 0;
  for (size_t i = 0; i < wsinn_net_n_params (net); i++) {
    wsinn_param *p = wsinn_net_param (net, i);
    const WsiTensor *t = wsi_safetensors_find (st, p->name);
    if (!t) {
      snprintf (err, errlen, "%s: tensor %s missing (arch %s)", path,
          p->name, spec.arch);
      goto fail;
    }
    const float *v = wsi_safetensors_f32 (st, t, err, errlen);
    if (!v || wsinn_net_set_param (net, p->name, v, t->n_dims, t->shape, err,
            errlen) < 0)
      goto fail;
    used++;
  }
  for (size_t i = 0; i < wsi_safetensors_n_tensors (st); i++) {
    const WsiTensor *t = wsi_safetensors_tensor (st, i);
    if (!wsinn_net_find_param (net, t->name)
        && !strstr (t->name, "num_batches_tracked")) {
      snprintf (err, errlen, "%s: tensor %s is not part of a %s network",
          path, t->name, spec.arch);
      goto fail;
    }
  }
  wsi_safetensors_free (st);
  return net;
fail:
  wsinn_net_free (net);
  wsi_safetensors_free (st);
  return NULL;
}

static int
save_grads (wsinn_net * net, const float *din, int n, int h, int w,
    const char *path, char *err, size_t errlen)
{
  size_t np = wsinn_net_n_params (net);
  WsiTensorSpec *specs = calloc (np + 1, sizeof *specs);
  int64_t in_shape[4] = { n, h, w, 3 };
  size_t k = 0;
  for (size_t i = 0; i < np; i++) {
    wsinn_param *p = wsinn_net_param (net, i);
    if (!p->trainable)
      continue;
    specs[k].name = p->name;
    specs[k].n_dims = p->ndims;
    specs[k].shape = p->shape;
    specs[k].data = p->grad;
    k++;
  }
  specs[k].name = "input";
  specs[k].n_dims = 4;
  specs[k].shape = in_shape;
  specs[k].data = din;
  k++;
  int r = wsi_safetensors_save (path, specs, k, NULL, err, errlen);
  free (specs);
  return r;
}

static void
usage (void)
{
  fprintf (stderr, "usage: wsinn-infer MODEL INPUT N H W OUTPUT [--probs] "
      "[--threads T] [--train] [--backward DIFF_OUT GRADS] [--repeat R] "
      "[--dump-plan]\n");
}

int
main (int argc, char **argv)
{
  char err[512] = "";
  if (argc < 7) {
    usage ();
    return 2;
  }
  const char *model = argv[1], *input = argv[2], *output = argv[6];
  int n = atoi (argv[3]), h = atoi (argv[4]), w = atoi (argv[5]);
  int threads = 0, train = 0, repeat = 1, dump = 0;
  wsinn_output out_kind = WSINN_OUTPUT_LOGITS;
  const char *dout_path = NULL, *grads_path = NULL;
  for (int i = 7; i < argc; i++) {
    if (!strcmp (argv[i], "--probs"))
      out_kind = WSINN_OUTPUT_PROBS;
    else if (!strcmp (argv[i], "--train"))
      train = 1;
    else if (!strcmp (argv[i], "--dump-plan"))
      dump = 1;
    else if (!strcmp (argv[i], "--threads") && i + 1 < argc)
      threads = atoi (argv[++i]);
    else if (!strcmp (argv[i], "--repeat") && i + 1 < argc)
      repeat = atoi (argv[++i]);
    else if (!strcmp (argv[i], "--backward") && i + 2 < argc) {
      dout_path = argv[++i];
      grads_path = argv[++i];
      train = 1;
    } else {
      usage ();
      return 2;
    }
  }
  if (n < 1 || h < 1 || w < 1 || n > 4096 || h > 65536 || w > 65536
      || (size_t) n * h * w > ((size_t) 1 << 31) || repeat < 1) {
    fprintf (stderr, "wsinn-infer: bad size N=%s H=%s W=%s\n", argv[3],
        argv[4], argv[5]);
    return 2;
  }
  wsinn_set_num_threads (threads);
  wsinn_net *net = load_model (model, out_kind, err, sizeof err);
  if (!net) {
    fprintf (stderr, "wsinn-infer: %s\n", err);
    return 1;
  }
  wsinn_net_set_training (net, train);
  int oc, oh, ow, status = 1;
  float *in = NULL, *out = NULL, *dout = NULL, *din = NULL;
  if (wsinn_net_output_shape (net, n, h, w, &oc, &oh, &ow, err,
          sizeof err) < 0)
    goto done;
  size_t isize = (size_t) n * h * w * 3, osize = (size_t) n * oh * ow * oc;
  in = read_raw (input, isize, err, sizeof err);
  out = malloc (osize * sizeof (float));
  if (!in || !out)
    goto done;
  struct timespec t0, t1;
  double best = 1e30;
  for (int r = 0; r < repeat; r++) {
    clock_gettime (CLOCK_MONOTONIC, &t0);
    if (wsinn_net_forward (net, in, n, h, w, out, err, sizeof err) < 0)
      goto done;
    clock_gettime (CLOCK_MONOTONIC, &t1);
    double s = (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
    best = s < best ? s : best;
  }
  if (repeat > 1)
    fprintf (stderr, "forward: best %.4f s of %d\n", best, repeat);
  if (dump)
    wsinn_net_dump_plan (net, stderr);
  if (write_raw (output, out, osize, err, sizeof err) < 0)
    goto done;
  if (dout_path) {
    dout = read_raw (dout_path, osize, err, sizeof err);
    din = malloc (isize * sizeof (float));
    if (!dout || !din
        || wsinn_net_backward (net, dout, din, err, sizeof err) < 0
        || save_grads (net, din, n, h, w, grads_path, err, sizeof err) < 0)
      goto done;
  }
  status = 0;
done:
  if (status)
    fprintf (stderr, "wsinn-infer: %s\n", err);
  free (in);
  free (out);
  free (dout);
  free (din);
  wsinn_net_free (net);
  return status;
}
