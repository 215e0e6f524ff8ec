/* Loads a model file into the engine: metadata -> architecture spec,
 * tensors -> parameters (every parameter must be present with its shape,
 * no stray tensors), preprocessing and classes from the metadata. */
#include "wsimodel.h"

#include <json-glib/json-glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"
#include "wsinn.h"

struct _WsiModel
{
  WsiModelInfo info;
  wsinn_net *net;
  int threads;
};

/* Keys the loader reads itself; everything else is offered to the spec. */
static const char *const info_keys[] = {
  "format", "format_version", "class_names", "class_colors", "output",
  "preprocess", "mean", "std", "input_layout", "input_channels", "mpp",
  "patch_size", "size_multiple", "bn_eps", "description", "model_card", NULL
};

static gboolean
is_info_key (const char *key)
{
  for (int i = 0; info_keys[i]; i++)
    if (strcmp (key, info_keys[i]) == 0)
      return TRUE;
  return FALSE;
}

static JsonNode *
parse_json (const char *text)
{
  JsonParser *parser = json_parser_new ();
  JsonNode *root = NULL;

  if (text && json_parser_load_from_data (parser, text, -1, NULL))
    root = json_node_copy (json_parser_get_root (parser));
  g_object_unref (parser);
  return root;
}

static gboolean
json_is_number (JsonNode * n)
{
  return JSON_NODE_HOLDS_VALUE (n)
      && (json_node_get_value_type (n) == G_TYPE_DOUBLE
      || json_node_get_value_type (n) == G_TYPE_INT64);
}

static int
read_float3 (const WsiSafetensors * st, const char *key, float out[3],
    char *err, size_t errlen)
{
  JsonNode *root = parse_json (wsi_safetensors_metadata (st, key));
  JsonArray *a;
  int ok = 0;

  if (root && JSON_NODE_HOLDS_ARRAY (root)) {
    a = json_node_get_array (root);
    if (json_array_get_length (a) == 3) {
      ok = 1;
      for (int i = 0; i < 3; i++) {
        JsonNode *n = json_array_get_element (a, i);
        if (!json_is_number (n)) {
          ok = 0;
          break;
        }
        out[i] = (float) json_node_get_double (n);
        if (!isfinite (out[i]))
          ok = 0;
      }
    }
  }
  if (root)
    json_node_unref (root);
  if (!ok)
    snprintf (err, errlen, "metadata '%s' must be a list of 3 numbers", key);
  return ok ? 0 : -1;
}

static int
read_classes (WsiModelInfo * info, const WsiSafetensors * st, char *err,
    size_t errlen)
{
  JsonNode *names = parse_json (wsi_safetensors_metadata (st, "class_names"));
  JsonNode *colors =
      parse_json (wsi_safetensors_metadata (st, "class_colors"));
  const int n = info->n_classes;
  int ok = names && colors && JSON_NODE_HOLDS_ARRAY (names)
      && JSON_NODE_HOLDS_ARRAY (colors)
      && json_array_get_length (json_node_get_array (names)) == (guint) n
      && json_array_get_length (json_node_get_array (colors)) == (guint) n;

  if (ok) {
    info->class_names = g_new0 (char *, n + 1);
    info->class_colors = g_malloc0_n (n, sizeof *info->class_colors);
    for (int c = 0; c < n && ok; c++) {
      JsonNode *nm = json_array_get_element (json_node_get_array (names), c);
      JsonNode *col = json_array_get_element (json_node_get_array (colors), c);
      JsonArray *rgb;
      if (!JSON_NODE_HOLDS_VALUE (nm)
          || json_node_get_value_type (nm) != G_TYPE_STRING
          || !JSON_NODE_HOLDS_ARRAY (col)
          || json_array_get_length (rgb = json_node_get_array (col)) != 3) {
        ok = 0;
        break;
      }
      info->class_names[c] = g_strdup (json_node_get_string (nm));
      for (int k = 0; k < 3; k++) {
        JsonNode *e = json_array_get_element (rgb, k);
        gint64 v = -1;
        if (JSON_NODE_HOLDS_VALUE (e)
            && json_node_get_value_type (e) == G_TYPE_INT64)
          v = json_node_get_int (e);
        if (v < 0 || v > 255)
          ok = 0;
        info->class_colors[c][k] = (uint8_t) CLAMP (v, 0, 255);
      }
    }
  }
  if (names)
    json_node_unref (names);
  if (colors)
    json_node_unref (colors);
  if (!ok)
    snprintf (err, errlen, "metadata class_names/class_colors must list %d "
        "names and %d [r, g, b] colours", n, n);
  return ok ? 0 : -1;
}

int
wsi_model_info_read (const WsiSafetensors * st, WsiModelInfo * info,
    char *err, size_t errlen)
{
  const char *pre = wsi_safetensors_metadata (st, "preprocess");
  const char *v;

  if (read_classes (info, st, err, errlen) != 0)
    return -1;
  if (g_strcmp0 (pre, "rescale01") == 0)
    info->preproc = WSI_PREPROC_RESCALE01;
  else if (g_strcmp0 (pre, "rescale11") == 0)
    info->preproc = WSI_PREPROC_RESCALE11;
  else if (g_strcmp0 (pre, "standardize") == 0) {
    info->preproc = WSI_PREPROC_STANDARDIZE;
    if (read_float3 (st, "mean", info->mean, err, errlen) != 0
        || read_float3 (st, "std", info->std, err, errlen) != 0)
      return -1;
    for (int i = 0; i < 3; i++)
      if (!(info->std[i] > 0)) {
        snprintf (err, errlen, "metadata std must be > 0");
        return -1;
      }
  } else {
    snprintf (err, errlen, "unknown preprocess '%s' (rescale01, rescale11 "
        "or standardize)", pre ? pre : "(missing)");
    return -1;
  }
  if ((v = wsi_safetensors_metadata (st, "mpp"))) {
    char *end = NULL;
    info->mpp = g_ascii_strtod (v, &end);
    if (end == v || *end || !isfinite (info->mpp) || info->mpp < 0) {
      snprintf (err, errlen, "metadata mpp '%.32s' must be a number >= 0 "
          "(microns per pixel; 0 = unknown)", v);
      return -1;
    }
  }
  if ((v = wsi_safetensors_metadata (st, "patch_size"))) {
    char *end = NULL;
    gint64 ps = g_ascii_strtoll (v, &end, 10);
    if (end == v || *end || ps < 0 || ps > 65536) {
      snprintf (err, errlen, "metadata patch_size '%.32s' must be an integer "
          "in 0..65536", v);
      return -1;
    }
    info->patch_size = (int) ps;
  }
  return 0;
}

static int
read_info (WsiModel * m, const WsiSafetensors * st, const wsinn_spec * spec,
    char *err, size_t errlen)
{
  g_strlcpy (m->info.arch, spec->arch, sizeof m->info.arch);
  g_strlcpy (m->info.encoder, spec->encoder, sizeof m->info.encoder);
  m->info.n_classes = spec->n_classes;
  m->info.size_multiple = wsinn_spec_size_multiple (spec);
  return wsi_model_info_read (st, &m->info, err, errlen);
}

static int
load_params (WsiModel * m, WsiSafetensors * st, char *err, size_t errlen)
{
  size_t n = wsinn_net_n_params (m->net);
  size_t used = 0;

  for (size_t i = 0; i < n; i++) {
    wsinn_param *p = wsinn_net_param (m->net, i);
    const WsiTensor *t = wsi_safetensors_find (st, p->name);
    const float *data;

    if (!t) {
      snprintf (err, errlen, "tensor '%s' missing for arch %s", p->name,
          m->info.arch);
      return -1;
    }
    data = wsi_safetensors_f32 (st, t, err, errlen);
    if (!data)
      return -1;
    if (t->n_dims > WSINN_MAX_DIMS || wsinn_net_set_param (m->net, p->name,
            data, t->n_dims, t->shape, err, errlen) != 0) {
      if (t->n_dims > WSINN_MAX_DIMS)
        snprintf (err, errlen, "tensor '%s' has %d dims", p->name, t->n_dims);
      return -1;
    }
    used++;
  }
  if (used != wsi_safetensors_n_tensors (st)) {
    for (size_t i = 0; i < wsi_safetensors_n_tensors (st); i++) {
      const WsiTensor *t = wsi_safetensors_tensor (st, i);
      /* optimiser state of a training checkpoint (docs/training.md) */
      if (g_str_has_prefix (t->name, "__optim__."))
        continue;
      if (!wsinn_net_find_param (m->net, t->name)) {
        snprintf (err, errlen, "unexpected tensor '%s' for arch %s", t->name,
            m->info.arch);
        return -1;
      }
    }
  }
  wsinn_net_params_changed (m->net);
  return 0;
}

/* Checks the metadata and builds the architecture spec from it. */
static WsiSafetensors *
open_with_spec (const char *path, wsinn_spec * spec, char *err, size_t errlen)
{
  WsiSafetensors *st = wsi_safetensors_open (path, err, errlen);

  if (!st)
    return NULL;
  if (wsi_safetensors_check_model_metadata (st, err, errlen) != 0)
    goto fail;
  if (g_strcmp0 (wsi_safetensors_metadata (st, "arch"), "maskrcnn") == 0) {
    snprintf (err, errlen, "arch maskrcnn is an instance segmentation model "
        "(segment-maskrcnn runs it, models/maskrcnn/wsimrcnn-file.h loads it)");
    goto fail;
  }
  wsinn_spec_init (spec);
  for (size_t i = 0; i < wsi_safetensors_n_metadata (st); i++) {
    const char *key = wsi_safetensors_metadata_key (st, i);
    if (is_info_key (key) || g_str_has_prefix (key, "train_"))
      continue;
    if (wsinn_spec_set (spec, key, wsi_safetensors_metadata (st, key), err,
            errlen) != 0)
      goto fail;
  }
  return st;
fail:
  wsi_safetensors_free (st);
  return NULL;
}

static void
info_clear (WsiModelInfo * info)
{
  g_strfreev (info->class_names);
  g_free (info->class_colors);
  memset (info, 0, sizeof *info);
}

int
wsi_model_info_load (const char *path, WsiModelInfo * info, char *err,
    size_t errlen)
{
  WsiModel tmp = { 0 };
  wsinn_spec spec;
  WsiSafetensors *st = open_with_spec (path, &spec, err, errlen);
  int ret;

  memset (info, 0, sizeof *info);
  if (!st)
    return -1;
  ret = read_info (&tmp, st, &spec, err, errlen);
  wsi_safetensors_free (st);
  if (ret != 0) {
    info_clear (&tmp.info);
    return -1;
  }
  *info = tmp.info;
  return 0;
}

void
wsi_model_info_clear (WsiModelInfo * info)
{
  info_clear (info);
}

WsiModel *
wsi_model_load (const char *path, int threads, char *err, size_t errlen)
{
  WsiModel *m;
  wsinn_spec spec;
  WsiSafetensors *st = open_with_spec (path, &spec, err, errlen);

  if (!st)
    return NULL;
  m = g_new0 (WsiModel, 1);
  m->threads = threads;
  spec.output = WSINN_OUTPUT_PROBS;
  m->net = wsinn_net_new_from_spec (&spec, err, errlen);
  if (!m->net)
    goto fail;
  if (read_info (m, st, &spec, err, errlen) != 0
      || load_params (m, st, err, errlen) != 0)
    goto fail;
  wsinn_net_set_training (m->net, 0);
  wsi_safetensors_free (st);
  return m;

fail:
  wsi_safetensors_free (st);
  wsi_model_free (m);
  return NULL;
}

int
wsi_model_check (const char *path, WsiModelInfo * info, char *err,
    size_t errlen)
{
  WsiModel *m = wsi_model_load (path, 1, err, errlen);

  memset (info, 0, sizeof *info);
  if (!m)
    return -1;
  *info = m->info;
  memset (&m->info, 0, sizeof m->info);
  wsi_model_free (m);
  return 0;
}

const WsiModelInfo *
wsi_model_info (const WsiModel * model)
{
  return &model->info;
}

int
wsi_model_forward (WsiModel * model, const float *input, int n, int h, int w,
    float *probs, char *err, size_t errlen)
{
  if (model->threads > 0)
    wsinn_set_num_threads (model->threads);
  return wsinn_net_forward (model->net, input, n, h, w, probs, err, errlen);
}

void
wsi_model_preprocess (const WsiModelInfo * info, const uint8_t * rgb,
    int stride, int w, int h, float *out)
{
  float scale[3], offset[3];

  for (int c = 0; c < 3; c++) {
    switch (info->preproc) {
      case WSI_PREPROC_RESCALE11:
        scale[c] = 1.0f / 127.5f;
        offset[c] = -1.0f;
        break;
      case WSI_PREPROC_STANDARDIZE:
        scale[c] = 1.0f / (255.0f * info->std[c]);
        offset[c] = -info->mean[c] / info->std[c];
        break;
      default:
        scale[c] = 1.0f / 255.0f;
        offset[c] = 0.0f;
        break;
    }
  }
  for (int y = 0; y < h; y++) {
    const uint8_t *row = rgb + (size_t) y * stride;
    float *dst = out + (size_t) y * w * 3;
    for (int x = 0; x < w * 3; x++)
      dst[x] = row[x] * scale[x % 3] + offset[x % 3];
  }
}

void
wsi_model_free (WsiModel * model)
{
  if (!model)
    return;
  if (model->net)
    wsinn_net_free (model->net);
  info_clear (&model->info);
  g_free (model);
}
