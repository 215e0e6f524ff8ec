/* Mask R-CNN model files: metadata keys, tensor checks, load and save. */
#include "wsimrcnn-file.h"

#include <errno.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

typedef enum
{ KEY_INT, KEY_FLOAT, KEY_DOUBLE } KeyKind;

/* The numeric keys: name, type, accepted range (lo exclusive when
 * lo_open), where the value goes in WsiMrcnnModelInfo. */
typedef struct
{
  const char *key;
  KeyKind kind;
  double lo, hi;
  int lo_open;
  size_t offset;
} NumKey;

#define CFG(f) offsetof (WsiMrcnnModelInfo, cfg.f)
static const NumKey num_keys[] = {
  {"base_width", KEY_INT, 1, 1024, 0, CFG (spec.base_width)},
  {"fpn_channels", KEY_INT, 1, 4096, 0, CFG (spec.fpn_channels)},
  {"representation", KEY_INT, 1, 65536, 0, CFG (spec.representation)},
  {"box_pool", KEY_INT, 1, 64, 0, CFG (spec.box_pool)},
  {"mask_layers", KEY_INT, 0, 16, 0, CFG (spec.mask_layers)},
  {"mask_width", KEY_INT, 1, 4096, 0, CFG (spec.mask_width)},
  {"mask_dilation", KEY_INT, 1, 16, 0, CFG (spec.mask_dilation)},
  {"rpn_pre_nms_top_n", KEY_INT, 1, 100000, 0, CFG (rpn.pre_nms_top_n)},
  {"rpn_post_nms_top_n", KEY_INT, 1, 100000, 0, CFG (rpn.post_nms_top_n)},
  {"rpn_nms_iou", KEY_DOUBLE, 0, 1, 1, CFG (rpn.nms_thresh)},
  {"rpn_score_threshold", KEY_FLOAT, 0, 1, 0, CFG (rpn.score_thresh)},
  {"score_threshold", KEY_FLOAT, 0, 1, 0, CFG (det.score_thresh)},
  {"nms_iou", KEY_DOUBLE, 0, 1, 1, CFG (det.nms_thresh)},
  {"max_detections", KEY_INT, 1, 100000, 0, CFG (det.detections_per_img)},
  {"mask_threshold", KEY_FLOAT, 0, 1, 1, offsetof (WsiMrcnnModelInfo,
          mask_threshold)},
};
#undef CFG

static const char *const backbones[] = { "resnet18", "resnet34", NULL };

void
wsimrcnn_model_info_defaults (WsiMrcnnModelInfo * mi)
{
  memset (mi, 0, sizeof *mi);
  wsimrcnn_config_init (&mi->cfg);
  /* nuclei 8-40 px across at 0.25-0.5 um/px: one size per FPN level,
   * strides 4..64 */
  for (int l = 0; l < WSINN_FPN_LEVELS; l++)
    mi->cfg.anchor_sizes[l] = 8.0f * (float) (1 << l);
  mi->cfg.det.score_thresh = 0.5f;
  mi->cfg.det.detections_per_img = 300;
  mi->mask_threshold = 0.5f;
}

/* A string holding one JSON number, or a bare number: strict. */
static int
parse_number (const char *v, double *out)
{
  char *end = NULL;
  if (!v || !*v || g_ascii_isspace (*v))
    return 0;
  errno = 0;
  *out = g_ascii_strtod (v, &end);
  return end != v && *end == 0 && errno == 0 && isfinite (*out);
}

static int
read_num_key (const WsiSafetensors * st, const NumKey * k,
    WsiMrcnnModelInfo * mi, char *err, size_t errlen)
{
  const char *v = wsi_safetensors_metadata (st, k->key);
  double d;
  void *dst = (char *) mi + k->offset;
  if (!v)
    return 0;
  if (!parse_number (v, &d) || (k->kind == KEY_INT && d != floor (d))
      || d < k->lo || d > k->hi || (k->lo_open && d <= k->lo)) {
    snprintf (err, errlen, "metadata %s \"%.32s\" must be %s in %s%g, %g]",
        k->key, v, k->kind == KEY_INT ? "an integer" : "a number",
        k->lo_open ? "(" : "[", k->lo, k->hi);
    return -1;
  }
  if (k->kind == KEY_INT)
    *(int *) dst = (int) d;
  else if (k->kind == KEY_FLOAT)
    *(float *) dst = (float) d;
  else
    *(double *) dst = d;
  return 0;
}

/* A JSON list of min_n..max_n numbers > 0 (at most 1e5). Returns the count
 * or -1 + @err. */
static int
read_positive_list (const WsiSafetensors * st, const char *key, int min_n,
    int max_n, float *out, char *err, size_t errlen)
{
  const char *v = wsi_safetensors_metadata (st, key);
  JsonParser *p = json_parser_new ();
  int n = -1;
  if (v && json_parser_load_from_data (p, v, -1, NULL)
      && JSON_NODE_HOLDS_ARRAY (json_parser_get_root (p))) {
    JsonArray *a = json_node_get_array (json_parser_get_root (p));
    int len = (int) json_array_get_length (a);
    if (len >= min_n && len <= max_n) {
      n = len;
      for (int i = 0; i < len; i++) {
        JsonNode *e = json_array_get_element (a, i);
        double d = -1;
        if (JSON_NODE_HOLDS_VALUE (e)
            && (json_node_get_value_type (e) == G_TYPE_DOUBLE
                || json_node_get_value_type (e) == G_TYPE_INT64))
          d = json_node_get_double (e);
        if (!(d > 0 && d <= 1e5)) {
          n = -1;
          break;
        }
        out[i] = (float) d;
      }
    }
  }
  g_object_unref (p);
  if (n < 0) {
    if (min_n == max_n)
      snprintf (err, errlen, "metadata %s \"%.40s\" must be a JSON list of %d "
          "numbers in (0, 100000]", key, v ? v : "", min_n);
    else
      snprintf (err, errlen, "metadata %s \"%.40s\" must be a JSON list of "
          "%d to %d numbers in (0, 100000]", key, v ? v : "", min_n, max_n);
  }
  return n;
}

int
wsimrcnn_model_info_read (const WsiSafetensors * st, WsiMrcnnModelInfo * mi,
    char *err, size_t errlen)
{
  const char *v, *arch;
  double d;

  wsimrcnn_model_info_defaults (mi);
  if (wsi_safetensors_check_model_metadata (st, err, errlen) != 0)
    return -1;
  arch = wsi_safetensors_metadata (st, "arch");
  if (strcmp (arch, "maskrcnn") != 0) {
    snprintf (err, errlen, "arch %.32s is not a Mask R-CNN model (arch "
        "maskrcnn); segment-fcn runs it", arch);
    return -1;
  }
  parse_number (wsi_safetensors_metadata (st, "n_classes"), &d);
  if (d < 2) {
    snprintf (err, errlen, "metadata n_classes %g: a Mask R-CNN model has "
        "the background and at least one object class (>= 2)", d);
    return -1;
  }
  mi->cfg.spec.n_classes = (int) d;
  /* backbone (the other archs' "encoder" is accepted when it is missing) */
  v = wsi_safetensors_metadata (st, "backbone");
  if (!v)
    v = wsi_safetensors_metadata (st, "encoder");
  if (v) {
    int ok = 0;
    for (int i = 0; backbones[i]; i++)
      ok |= strcmp (v, backbones[i]) == 0;
    if (!ok) {
      snprintf (err, errlen, "metadata backbone \"%.32s\" is not one of "
          "resnet18, resnet34", v);
      return -1;
    }
    g_strlcpy (mi->cfg.spec.backbone, v, sizeof mi->cfg.spec.backbone);
  }
  for (size_t i = 0; i < G_N_ELEMENTS (num_keys); i++)
    if (read_num_key (st, &num_keys[i], mi, err, errlen) != 0)
      return -1;
  if ((v = wsi_safetensors_metadata (st, "mask_size"))) {
    if (!parse_number (v, &d) || d != floor (d) || d < 2 || d > 256
        || fmod (d, 2) != 0) {
      snprintf (err, errlen, "metadata mask_size \"%.32s\" must be an even "
          "integer in [2, 256] (mask head output side)", v);
      return -1;
    }
    mi->cfg.mask_pool = (int) d / 2;
  }
  if (wsi_safetensors_metadata (st, "anchor_sizes")
      && read_positive_list (st, "anchor_sizes", WSINN_FPN_LEVELS,
          WSINN_FPN_LEVELS, mi->cfg.anchor_sizes, err, errlen) < 0)
    return -1;
  if (wsi_safetensors_metadata (st, "aspect_ratios")) {
    int n = read_positive_list (st, "aspect_ratios", 1, 3, mi->cfg.ratios,
        err, errlen);
    if (n < 0)
      return -1;
    mi->cfg.spec.n_anchors = n;
  }
  if ((v = wsi_safetensors_metadata (st, "size_multiple"))
      && (!parse_number (v, &d) || d < 1 || fmod (d, 32) != 0)) {
    snprintf (err, errlen, "metadata size_multiple \"%.32s\": a Mask R-CNN "
        "input side must be a multiple of 32", v);
    return -1;
  }
  g_strlcpy (mi->info.arch, "maskrcnn", sizeof mi->info.arch);
  g_strlcpy (mi->info.encoder, mi->cfg.spec.backbone,
      sizeof mi->info.encoder);
  mi->info.n_classes = mi->cfg.spec.n_classes;
  mi->info.size_multiple = 32;
  if (wsi_model_info_read (st, &mi->info, err, errlen) != 0) {
    wsi_model_info_clear (&mi->info);
    return -1;
  }
  return 0;
}

void
wsimrcnn_model_info_clear (WsiMrcnnModelInfo * mi)
{
  wsi_model_info_clear (&mi->info);
}

/* Opens @path; a file that is not safetensors says so. */
static WsiSafetensors *
open_file (const char *path, char *err, size_t errlen)
{
  char detail[400];
  FILE *f = fopen (path, "rb");
  if (!f) {
    snprintf (err, errlen, "%s: cannot open: %s", path, g_strerror (errno));
    return NULL;
  }
  fclose (f);
  WsiSafetensors *st = wsi_safetensors_open (path, detail, sizeof detail);
  if (!st)
    snprintf (err, errlen, "%s: not a model file (%s)", path, detail);
  return st;
}

int
wsimrcnn_model_info_load (const char *path, WsiMrcnnModelInfo * mi,
    char *err, size_t errlen)
{
  char e[400];
  WsiSafetensors *st = open_file (path, err, errlen);
  int rc;
  memset (mi, 0, sizeof *mi);
  if (!st)
    return -1;
  rc = wsimrcnn_model_info_read (st, mi, e, sizeof e);
  if (rc != 0)
    snprintf (err, errlen, "%s: %s", path, e);
  wsi_safetensors_free (st);
  return rc;
}

static void
shape_text (const int64_t * shape, int n, char *buf, size_t len)
{
  size_t o = snprintf (buf, len, "[");
  for (int i = 0; i < n && o < len; i++)
    o += snprintf (buf + o, len - o, "%s%lld", i ? "," : "",
        (long long) shape[i]);
  if (o < len)
    snprintf (buf + o, len - o, "]");
}

static wsinn_param *
find_param (wsimrcnn * m, const char *name)
{
  for (int i = 0; i < 3; i++) {
    wsinn_param *p = wsinn_net_find_param (wsimrcnn_net (m, i), name);
    if (p)
      return p;
  }
  return NULL;
}

int
wsimrcnn_load_params (wsimrcnn * m, WsiSafetensors * st, char *err,
    size_t errlen)
{
  char have[160], want[160];
  for (int i = 0; i < 3; i++) {
    wsinn_net *net = wsimrcnn_net (m, i);
    for (size_t j = 0; j < wsinn_net_n_params (net); j++) {
      wsinn_param *p = wsinn_net_param (net, j);
      const WsiTensor *t = wsi_safetensors_find (st, p->name);
      int same = t && t->n_dims == p->ndims;
      for (int d = 0; same && d < p->ndims; d++)
        same = t->shape[d] == p->shape[d];
      shape_text (p->shape, p->ndims, want, sizeof want);
      if (!t) {
        snprintf (err, errlen, "tensor %s missing (model expects %s)",
            p->name, want);
        return -1;
      }
      if (!same) {
        shape_text (t->shape, t->n_dims, have, sizeof have);
        snprintf (err, errlen, "tensor %s has shape %s, model expects %s",
            p->name, have, want);
        return -1;
      }
      if (t->dtype != WSI_DTYPE_F32 && t->dtype != WSI_DTYPE_F16
          && t->dtype != WSI_DTYPE_BF16 && t->dtype != WSI_DTYPE_F64) {
        snprintf (err, errlen, "tensor %s has dtype %s, model expects F32 "
            "(or F16, BF16, F64)", p->name, wsi_dtype_name (t->dtype));
        return -1;
      }
      const float *data = wsi_safetensors_f32 (st, t, err, errlen);
      if (!data || wsinn_net_set_param (net, p->name, data, t->n_dims,
              t->shape, err, errlen) != 0)
        return -1;
    }
  }
  for (size_t i = 0; i < wsi_safetensors_n_tensors (st); i++) {
    const WsiTensor *t = wsi_safetensors_tensor (st, i);
    if (!g_str_has_prefix (t->name, "__optim__.") && !find_param (m, t->name)) {
      snprintf (err, errlen, "unexpected tensor %s for arch maskrcnn "
          "(backbone %s, %d classes)", t->name,
          wsimrcnn_get_config (m)->spec.backbone,
          wsimrcnn_get_config (m)->spec.n_classes);
      return -1;
    }
  }
  for (int i = 0; i < 3; i++)
    wsinn_net_params_changed (wsimrcnn_net (m, i));
  return 0;
}

wsimrcnn *
wsimrcnn_load (const char *path, WsiMrcnnModelInfo * mi, char *err,
    size_t errlen)
{
  WsiMrcnnModelInfo tmp;
  char e[512];
  wsimrcnn *m = NULL;
  WsiSafetensors *st = open_file (path, err, errlen);

  if (mi)
    memset (mi, 0, sizeof *mi);
  if (!st)
    return NULL;
  if (wsimrcnn_model_info_read (st, &tmp, e, sizeof e) != 0)
    goto fail;
  if (!(m = wsimrcnn_new (&tmp.cfg, e, sizeof e))
      || wsimrcnn_load_params (m, st, e, sizeof e) != 0) {
    wsimrcnn_model_info_clear (&tmp);
    goto fail;
  }
  for (int i = 0; i < 3; i++)
    wsinn_net_set_training (wsimrcnn_net (m, i), 0);
  wsi_safetensors_free (st);
  if (mi)
    *mi = tmp;
  else
    wsimrcnn_model_info_clear (&tmp);
  return m;
fail:
  snprintf (err, errlen, "%s: %s", path, e);
  wsimrcnn_free (m);
  wsi_safetensors_free (st);
  return NULL;
}

/* ---------------------------------------------------------------- save */

/* Shortest text that reads back as the same value. */
static char *
num_text (double v, int is_float)
{
  char buf[64];
  for (int prec = 1; prec <= 17; prec++) {
    char fmt[8];
    snprintf (fmt, sizeof fmt, "%%.%dg", prec);
    g_ascii_formatd (buf, sizeof buf, fmt, v);
    double back = g_ascii_strtod (buf, NULL);
    if (is_float ? (float) back == (float) v : back == v)
      break;
  }
  return g_strdup (buf);
}

static char *
json_of (JsonNode * node)
{
  JsonGenerator *g = json_generator_new ();
  json_generator_set_root (g, node);
  char *s = json_generator_to_data (g, NULL);
  g_object_unref (g);
  json_node_unref (node);
  return s;
}

static char *
float_list (const float *v, int n)
{
  GString *s = g_string_new ("[");
  for (int i = 0; i < n; i++) {
    char *t = num_text (v[i], 1);
    g_string_append_printf (s, "%s%s", i ? ", " : "", t);
    g_free (t);
  }
  g_string_append (s, "]");
  return g_string_free (s, FALSE);
}

static void
put (GPtrArray * kv, const char *key, char *value)
{
  for (guint i = 0; i + 1 < kv->len; i += 2)
    if (strcmp (g_ptr_array_index (kv, i), key) == 0) {
      g_free (g_ptr_array_index (kv, i + 1));
      g_ptr_array_index (kv, i + 1) = value;
      return;
    }
  g_ptr_array_add (kv, g_strdup (key));
  g_ptr_array_add (kv, value);
}

char **
wsimrcnn_metadata_new (const WsiMrcnnModelInfo * mi,
    const char *const *extra)
{
  static const char *const preproc[] = { "rescale01", "rescale11",
    "standardize"
  };
  const WsiModelInfo *in = &mi->info;
  const wsimrcnn_config *c = &mi->cfg;
  GPtrArray *kv = g_ptr_array_new ();
  JsonArray *names = json_array_new (), *colors = json_array_new ();

  for (int i = 0; i < c->spec.n_classes; i++) {
    JsonArray *rgb = json_array_new ();
    json_array_add_string_element (names, in->class_names
        && in->class_names[i] ? in->class_names[i] : (i ? "object" :
            "background"));
    for (int k = 0; k < 3; k++)
      json_array_add_int_element (rgb, in->class_colors ?
          in->class_colors[i][k] : (i ? 255 : 0));
    json_array_add_array_element (colors, rgb);
  }
  put (kv, "format", g_strdup ("gst-wsiseg-model"));
  put (kv, "format_version", g_strdup ("1"));
  put (kv, "arch", g_strdup ("maskrcnn"));
  put (kv, "backbone", g_strdup (c->spec.backbone));
  put (kv, "n_classes", g_strdup_printf ("%d", c->spec.n_classes));
  put (kv, "class_names", json_of (json_node_init_array (json_node_alloc (),
              names)));
  put (kv, "class_colors", json_of (json_node_init_array (json_node_alloc (),
              colors)));
  json_array_unref (names);
  json_array_unref (colors);
  put (kv, "preprocess", g_strdup (preproc[in->preproc]));
  if (in->preproc == WSI_PREPROC_STANDARDIZE) {
    put (kv, "mean", float_list (in->mean, 3));
    put (kv, "std", float_list (in->std, 3));
  }
  put (kv, "input_layout", g_strdup ("NCHW"));
  put (kv, "input_channels", g_strdup ("RGB"));
  put (kv, "mpp", num_text (in->mpp, 0));
  put (kv, "patch_size", g_strdup_printf ("%d", in->patch_size));
  put (kv, "size_multiple", g_strdup ("32"));
  put (kv, "bn_eps", g_strdup ("1e-05"));
  put (kv, "anchor_sizes", float_list (c->anchor_sizes, WSINN_FPN_LEVELS));
  put (kv, "aspect_ratios", float_list (c->ratios, c->spec.n_anchors));
  put (kv, "mask_size", g_strdup_printf ("%d", 2 * c->mask_pool));
  for (size_t i = 0; i < G_N_ELEMENTS (num_keys); i++) {
    const NumKey *k = &num_keys[i];
    const void *src = (const char *) mi + k->offset;
    put (kv, k->key, k->kind == KEY_INT ? g_strdup_printf ("%d",
            *(const int *) src) : num_text (k->kind == KEY_FLOAT ?
            *(const float *) src : *(const double *) src,
            k->kind == KEY_FLOAT));
  }
  for (int i = 0; extra && extra[i] && extra[i + 1]; i += 2)
    put (kv, extra[i], g_strdup (extra[i + 1]));
  g_ptr_array_add (kv, NULL);
  return (char **) g_ptr_array_free (kv, FALSE);
}

int
wsimrcnn_save (wsimrcnn * m, const char *path, const char *const *metadata,
    const WsiTensorSpec * extra, size_t n_extra, char *err, size_t errlen)
{
  size_t n = n_extra, k = 0;
  for (int i = 0; i < 3; i++)
    n += wsinn_net_n_params (wsimrcnn_net (m, i));
  WsiTensorSpec *specs = g_new0 (WsiTensorSpec, n ? n : 1);
  for (int i = 0; i < 3; i++) {
    wsinn_net *net = wsimrcnn_net (m, i);
    for (size_t j = 0; j < wsinn_net_n_params (net); j++, k++) {
      wsinn_param *p = wsinn_net_param (net, j);
      specs[k].name = p->name;
      specs[k].n_dims = p->ndims;
      specs[k].shape = p->shape;
      specs[k].data = p->data;
    }
  }
  for (size_t j = 0; j < n_extra; j++)
    specs[k++] = extra[j];
  int rc = wsi_safetensors_save (path, specs, n, metadata, err, errlen);
  g_free (specs);
  return rc;
}
