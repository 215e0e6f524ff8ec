/* Plans: activations stay in oneDNN's blocked layout between layers (no
 * reorder except the NHWC input and output), primitives are created once
 * per shape and reused, and bad input gives an error message, no crash. */
#define _GNU_SOURCE
#include "wsinn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failed, checks;

static void
check (int cond, const char *what, const char *detail)
{
  checks++;
  printf ("%s: %s%s%s\n", cond ? "ok" : "FAIL", what, detail ? " -- " : "",
      detail ? detail : "");
  if (!cond)
    failed++;
}

/* Every forward layer step writes the blocked activation layout the
 * engine chose for this CPU (nChw16c with AVX-512, nChw8c with AVX2). */
static int
all_blocked (wsinn_net * net, char *detail, size_t len)
{
  const char *want = wsinn_activation_layout ();
  size_t wl = strlen (want);
  char *buf = NULL;
  size_t size = 0;
  FILE *f = open_memstream (&buf, &size);
  wsinn_net_dump_plan (net, f);
  fclose (f);
  char *fwd = strstr (buf, "forward (");
  int layers = 0, blocked = 0;
  for (char *line = fwd ? strtok (fwd, "\n") : NULL; line;
      line = strtok (NULL, "\n")) {
    if (!strncmp (line, "backward", 8))
      break;
    if (strncmp (line, "  layer", 7))
      continue;
    layers++;
    size_t l = strlen (line);
    if (l > wl && !strcmp (line + l - wl, want))
      blocked++;
    else
      snprintf (detail, len, "not blocked: %s", line);
  }
  free (buf);
  if (blocked == layers)
    snprintf (detail, len, "%d layer outputs, all %s", layers, want);
  return layers > 0 && blocked == layers;
}

int
main (void)
{
  char err[256], detail[256];
  wsinn_set_num_threads (2);
  printf ("activation layout on this CPU: %s (DNNL_MAX_CPU_ISA=%s)\n",
      wsinn_activation_layout (), getenv ("DNNL_MAX_CPU_ISA") ?
      getenv ("DNNL_MAX_CPU_ISA") : "unset");
  wsinn_spec spec;
  wsinn_spec_init (&spec);
  strcpy (spec.arch, "unet");
  spec.depth = 4;
  spec.base_width = 32;
  wsinn_net *net = wsinn_net_new_from_spec (&spec, err, sizeof err);
  check (net != NULL, "unet depth 4 base 32 built", net ? NULL : err);
  if (!net)
    return 1;
  wsinn_net_init_params (net, 1);
  int n = 2, h = 64, w = 48, oc, oh, ow;
  float *in = calloc ((size_t) n * h * w * 3, 4);
  for (size_t i = 0; i < (size_t) n * h * w * 3; i++)
    in[i] = (float) ((i * 7919) % 255) / 255.0f;
  wsinn_net_output_shape (net, n, h, w, &oc, &oh, &ow, err, sizeof err);
  float *out = calloc ((size_t) n * oh * ow * oc, 4);
  float *out2 = calloc ((size_t) n * oh * ow * oc, 4);

  size_t act_bytes[2] = { 0, 0 };
  for (int training = 0; training < 2; training++) {
    const char *mode = training ? "training" : "inference";
    wsinn_net_set_training (net, training);
    wsinn_stats st;
    int r = wsinn_net_forward (net, in, n, h, w, out, err, sizeof err);
    check (r == 0, mode, r ? err : "forward ran");
    wsinn_net_stats (net, &st);
    snprintf (detail, sizeof detail, "%d primitives, %d reorders (%d inner), "
        "%.1f MB activations", st.n_primitives, st.n_reorders,
        st.n_inner_reorders, st.activation_bytes / 1e6);
    check (st.n_inner_reorders == 0 && st.n_reorders == 2
        && st.n_primitives > 20, "no reorder between layers", detail);
    check (all_blocked (net, detail, sizeof detail),
        "activations in blocked layout", detail);
    act_bytes[training] = st.activation_bytes;
    if (!training) {
      /* 19 convs (BN folded, ReLU fused), 4 pools, 4 deconvs, 4 concats */
      snprintf (detail, sizeof detail, "%d primitives", st.n_primitives);
      check (st.n_primitives == (4 * 2 + 2 + 4 * 2 + 1) + 4 + 4 + 4,
          "BatchNorm folded and ReLU fused into the convolutions", detail);
    }
  }

  /* inference shares activation buffers between layers by lifetime */
  snprintf (detail, sizeof detail, "%.1f MB inference, %.1f MB training",
      act_bytes[0] / 1e6, act_bytes[1] / 1e6);
  check (act_bytes[0] > 0 && act_bytes[0] * 2 < act_bytes[1],
      "inference activations share buffers", detail);

  /* training then inference: the kept inference plan refolds BatchNorm
   * with the running statistics the training forward updated, exactly
   * as a fresh net with the same parameters */
  {
    float *g = calloc ((size_t) n * oh * ow * oc, 4);
    wsinn_net *fresh = wsinn_net_new_from_spec (&spec, err, sizeof err);
    int ok_run = g && fresh
        && wsinn_net_backward (net, g, NULL, err, sizeof err) == 0;
    wsinn_net_set_training (net, 0);
    ok_run = ok_run && wsinn_net_forward (net, in, n, h, w, out, err,
        sizeof err) == 0;
    for (size_t k = 0; ok_run && k < wsinn_net_n_params (net); k++) {
      wsinn_param *pa = wsinn_net_param (net, k);
      ok_run = wsinn_net_set_param (fresh, pa->name, pa->data, pa->ndims,
          pa->shape, err, sizeof err) == 0;
    }
    ok_run = ok_run && wsinn_net_forward (fresh, in, n, h, w, out2, err,
        sizeof err) == 0;
    check (ok_run && !memcmp (out, out2, (size_t) n * oh * ow * oc * 4),
        "inference after training uses the updated running statistics",
        ok_run ? NULL : err);
    wsinn_net_free (fresh);
    free (g);
  }

  /* primitives reused: same shape again builds nothing new */
  wsinn_net_set_training (net, 0);
  wsinn_stats a, b;
  wsinn_net_forward (net, in, n, h, w, out, err, sizeof err);
  wsinn_net_stats (net, &a);
  wsinn_net_forward (net, in, n, h, w, out2, err, sizeof err);
  wsinn_net_forward (net, in, 1, 32, 32, out2, err, sizeof err);
  wsinn_net_forward (net, in, n, h, w, out2, err, sizeof err);
  wsinn_net_stats (net, &b);
  snprintf (detail, sizeof detail, "%d plans before, %d after", a.n_plans_built,
      b.n_plans_built);
  check (b.n_plans_built == a.n_plans_built + 1,
      "plans cached per input shape", detail);
  check (!memcmp (out, out2, (size_t) n * oh * ow * oc * 4),
      "reused plan gives identical output", NULL);

  /* bad input: messages, no crash */
  int r = wsinn_net_forward (net, in, 1, 40, 40, out2, err, sizeof err);
  check (r < 0 && strstr (err, "multiple"), "40x40 input rejected for depth 4",
      err);
  r = wsinn_net_forward (net, in, 1, 8, 8, out2, err, sizeof err);
  check (r < 0 && strstr (err, "too small"), "8x8 input rejected", err);
  r = wsinn_net_forward (net, NULL, 1, 32, 32, out2, err, sizeof err);
  check (r < 0, "NULL input rejected", err);
  r = wsinn_net_backward (net, out, NULL, err, sizeof err);
  check (r < 0, "backward after an inference forward rejected", err);
  int64_t shape[4] = { 16, 3, 3, 3 };
  float *wt = calloc (32 * 27, 4);
  r = wsinn_net_set_param (net, "down.0.conv1.conv.weight", wt, 4, shape, err,
      sizeof err);
  check (r < 0 && strstr (err, "shape"), "wrong parameter shape rejected",
      err);
  r = wsinn_net_set_param (net, "no.such.weight", wt, 4, shape, err,
      sizeof err);
  check (r < 0, "unknown parameter rejected", err);
  wt[5] = 0.0f / 0.0f;
  shape[1] = 3;
  r = wsinn_net_set_param (net, "down.0.conv1.conv.weight", wt, 4,
      (int64_t[]) {32, 3, 3, 3}, err, sizeof err);
  check (r < 0 && strstr (err, "NaN"), "NaN parameter rejected", err);
  wsinn_spec_init (&spec);
  strcpy (spec.arch, "fcn9s");
  check (!wsinn_net_new_from_spec (&spec, err, sizeof err),
      "unknown arch rejected", err);
  check (wsinn_spec_set (&spec, "vgg_blocks", "[2, 2, 3]", err,
          sizeof err) < 0, "bad vgg_blocks rejected", err);
  check (wsinn_spec_set (&spec, "output_stride", "12", err, sizeof err) < 0,
      "bad output_stride rejected", err);

  free (wt);
  free (in);
  free (out);
  free (out2);
  wsinn_net_free (net);
  printf ("%d passed, %d failed\n", checks - failed, failed);
  return failed ? 1 : 0;
}
