/* labelpatch: replaces every RGB patch by its label patch (GRAY8 class
 * indices, or GRAY16_LE instance ids) of the same size, looked up through the
 * patch's GstWsiTileMeta in an annotation of its slide: a PNG label image
 * (any consistent scale of the slide) or QuPath GeoJSON polygons. A geometric
 * augmentation recorded by patchify (WsiAugmentMeta) is replayed on the
 * labels. Pixels without a label (padding, outside the slide) get the ignore
 * value. See docs/labelpatch.md. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <gst/gst.h>
#include <gst/video/video.h>
#include <gst/video/gstvideofilter.h>
#include <json-glib/json-glib.h>
#include <glib/gstdio.h>
#include <errno.h>
#include <math.h>
#include <string.h>

#include "gstwsiseg.h"
#include "gstwsiaugment.h"
#include "gstwsidetection.h"
#include "gstwsiprops.h"
#include "gstwsitilemeta.h"
#include "wsiannot.h"
#include "wsipng.h"

GST_DEBUG_CATEGORY_STATIC (gst_label_patch_debug);
#define GST_CAT_DEFAULT gst_label_patch_debug


/* Limits on untrusted annotation files. A mask of 2^28 pixels takes at
 * most 1 GiB while it is turned into labels (docs/labelpatch.md). */
#define MAX_MASK_PIXELS ((gsize) 1 << 28)
#define MAX_GEOJSON_BYTES (G_GINT64_CONSTANT (256) << 20)
#define MAX_GEOJSON_VERTICES (G_GUINT64_CONSTANT (1) << 26)
#define MAX_GEOJSON_DEPTH 8
/* FeatureCollections nested in 'features' are read this deep. */
#define MAX_COLLECTION_DEPTH 8
/* JSON nesting accepted before parsing: json-glib's parser recurses. */
#define MAX_JSON_NESTING 64
#define MAX_COORDINATE 1e12
/* Mask and slide aspect ratios may differ by this much. */
#define MAX_ASPECT_MISMATCH 0.01
#define UNCLASSIFIED_NAME "Unclassified"

typedef enum
{
  INSTANCE_MODE_CLASSES,
  INSTANCE_MODE_BOUNDARY,
  INSTANCE_MODE_INSTANCES,
} InstanceMode;

typedef enum
{
  UNKNOWN_CLASS_ERROR,
  UNKNOWN_CLASS_SKIP,
  UNKNOWN_CLASS_IGNORE,
} UnknownClass;

typedef enum
{
  CONNECTIVITY_4 = 4,
  CONNECTIVITY_8 = 8,
} Connectivity;

/* Error codes of annotation loading, mapped to GStreamer errors. */
enum
{
  LOAD_NOT_FOUND,
  LOAD_READ,
  LOAD_FORMAT,
  LOAD_SETTINGS,
  LOAD_TOO_LARGE,               /* over a size limit, or out of memory */
};

#define DEFAULT_IGNORE_INDEX -1
#define DEFAULT_NUM_CLASSES 0
#define DEFAULT_BINARY FALSE
#define DEFAULT_INSTANCE_MODE INSTANCE_MODE_CLASSES
#define DEFAULT_CONNECTIVITY CONNECTIVITY_4
#define DEFAULT_UNKNOWN_CLASS UNKNOWN_CLASS_ERROR
#define DEFAULT_BACKGROUND 0

/* Settings copied from the properties when streaming starts. */
typedef struct
{
  gchar *masks, *geojson;
  guint ignore;
  guint num_classes;
  gboolean binary;
  InstanceMode instance_mode;
  gint connectivity;
  UnknownClass unknown_class;
  guint background;
  GHashTable *classes;          /* name -> GUINT_TO_POINTER (label + 1) */
} LabelPatchConfig;

#define GST_TYPE_LABEL_PATCH (gst_label_patch_get_type ())
G_DECLARE_FINAL_TYPE (GstLabelPatch, gst_label_patch, GST, LABEL_PATCH,
    GstVideoFilter);

struct _GstLabelPatch
{
  GstVideoFilter parent;

  /* properties (object lock) */
  gchar *masks, *geojson, *class_map;
  gint ignore_index;
  guint num_classes;
  gboolean binary;
  InstanceMode instance_mode;
  Connectivity connectivity;
  UnknownClass unknown_class;
  guint background;

  gint running;

  /* streaming state */
  LabelPatchConfig cfg;
  gchar *cached_path;           /* annotation file loaded last */
  WsiLabelImage label;          /* PNG: 8-bit classes or 16-bit instances */
  WsiPolygonSet *polygons;      /* GeoJSON */
  gboolean warned_binary;
  guint8 *scratch;
  gsize scratch_size;
};

enum
{
  PROP_0,
  PROP_MASKS,
  PROP_GEOJSON,
  PROP_IGNORE_INDEX,
  PROP_NUM_CLASSES,
  PROP_BINARY,
  PROP_INSTANCE_MODE,
  PROP_BOUNDARY_CONNECTIVITY,
  PROP_CLASS_MAP,
  PROP_UNKNOWN_CLASS,
  PROP_BACKGROUND,
};

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK, GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE ("RGB")));
static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC, GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE ("{ GRAY8, GRAY16_LE }")));

#define GST_TYPE_LABEL_PATCH_INSTANCE_MODE (instance_mode_get_type ())
static GType
instance_mode_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {INSTANCE_MODE_CLASSES, "8-bit masks are class indices, 16-bit instance "
          "maps become 0 background / 1 foreground (GRAY8)", "classes"},
    {INSTANCE_MODE_BOUNDARY, "Masks are instance maps: 0 background, "
          "1 interior, 2 boundary (GRAY8)", "boundary"},
    {INSTANCE_MODE_INSTANCES, "Masks are instance maps, output the instance "
          "ids (GRAY16_LE)", "instances"},
    {0, NULL, NULL}
  };

  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstLabelPatchInstanceMode", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

#define GST_TYPE_LABEL_PATCH_UNKNOWN_CLASS (unknown_class_get_type ())
static GType
unknown_class_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {UNKNOWN_CLASS_ERROR, "A classification missing from class-map is an "
          "error", "error"},
    {UNKNOWN_CLASS_SKIP, "Features of unknown classes are left out",
        "skip"},
    {UNKNOWN_CLASS_IGNORE, "Features of unknown classes are painted with "
          "the ignore value", "ignore"},
    {0, NULL, NULL}
  };

  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstLabelPatchUnknownClass", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

#define GST_TYPE_LABEL_PATCH_CONNECTIVITY (connectivity_get_type ())
static GType
connectivity_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {CONNECTIVITY_4, "4-neighbours (left, right, up, down)", "4"},
    {CONNECTIVITY_8, "8-neighbours (diagonals too)", "8"},
    {0, NULL, NULL}
  };

  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstLabelPatchConnectivity", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

G_DEFINE_TYPE (GstLabelPatch, gst_label_patch, GST_TYPE_VIDEO_FILTER);
GST_ELEMENT_REGISTER_DEFINE_WITH_CODE (labelpatch, "labelpatch",
    GST_RANK_NONE, GST_TYPE_LABEL_PATCH,
    GST_DEBUG_CATEGORY_INIT (gst_label_patch_debug, "labelpatch", 0,
        "label patches from annotations"));

/* ---- configuration ---- */

static void
config_clear (LabelPatchConfig * cfg)
{
  g_clear_pointer (&cfg->masks, g_free);
  g_clear_pointer (&cfg->geojson, g_free);
  g_clear_pointer (&cfg->classes, g_hash_table_unref);
}

/* "Tumor=1, Stroma=2" -> name -> label + 1 */
static GHashTable *
parse_class_map (const gchar * text, guint max_label, GError ** error)
{
  GHashTable *map = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
      NULL);
  gchar **items;
  guint i;

  if (!text)
    return map;
  items = g_strsplit (text, ",", -1);
  for (i = 0; items[i]; i++) {
    gchar *item = g_strstrip (items[i]), *eq, *name, *end = NULL;
    guint64 label;

    if (!*item)
      continue;
    eq = strrchr (item, '=');
    if (!eq) {
      g_set_error (error, WSI_ANNOT_ERROR, LOAD_SETTINGS,
          "class-map entry '%s' is not name=index", item);
      goto fail;
    }
    *eq = '\0';
    name = g_strstrip (item);
    label = g_ascii_strtoull (g_strstrip (eq + 1), &end, 10);
    if (!*name || end == eq + 1 || *end || label > max_label) {
      g_set_error (error, WSI_ANNOT_ERROR, LOAD_SETTINGS,
          "class-map entry '%s=%s': need a non-empty name and an index "
          "0..%u", name, eq + 1, max_label);
      goto fail;
    }
    if (g_hash_table_contains (map, name)) {
      g_set_error (error, WSI_ANNOT_ERROR, LOAD_SETTINGS,
          "class-map lists '%s' twice", name);
      goto fail;
    }
    g_hash_table_insert (map, g_strdup (name), GUINT_TO_POINTER (label + 1));
  }
  g_strfreev (items);
  return map;

fail:
  g_strfreev (items);
  g_hash_table_unref (map);
  return NULL;
}

static gboolean label_patch_configure (GstLabelPatch * self);

static gboolean
gst_label_patch_start (GstBaseTransform * trans)
{
  GstLabelPatch *self = GST_LABEL_PATCH (trans);

  /* before the settings are read: a later change is refused */
  gst_wsi_set_running (GST_ELEMENT (self), &self->running, TRUE);
  if (label_patch_configure (self))
    return TRUE;
  /* stop() is not called after a failed start */
  gst_wsi_set_running (GST_ELEMENT (self), &self->running, FALSE);
  return FALSE;
}

/* Copies and checks the settings; posts an error and returns FALSE when
 * they cannot work. */
static gboolean
label_patch_configure (GstLabelPatch * self)
{
  LabelPatchConfig *cfg = &self->cfg;
  GError *err = NULL;
  gchar *class_map, *check;
  gint ignore_index;

  config_clear (cfg);
  GST_OBJECT_LOCK (self);
  cfg->masks = (self->masks && *self->masks) ? g_strdup (self->masks) : NULL;
  cfg->geojson = (self->geojson && *self->geojson) ?
      g_strdup (self->geojson) : NULL;
  class_map = g_strdup (self->class_map);
  ignore_index = self->ignore_index;
  cfg->num_classes = self->num_classes;
  cfg->binary = self->binary;
  cfg->instance_mode = self->instance_mode;
  cfg->connectivity = self->connectivity;
  cfg->unknown_class = self->unknown_class;
  cfg->background = self->background;
  GST_OBJECT_UNLOCK (self);

  if (!cfg->masks == !cfg->geojson) {
    g_free (class_map);
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("Set exactly one of the properties 'masks' (PNG label images) and "
            "'geojson' (QuPath polygons)."), (NULL));
    return FALSE;
  }
  if (cfg->geojson && cfg->instance_mode != INSTANCE_MODE_CLASSES) {
    g_free (class_map);
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("instance-mode=boundary/instances needs PNG instance maps "
            "('masks'), not GeoJSON."), (NULL));
    return FALSE;
  }
  if (ignore_index < 0)
    cfg->ignore = cfg->instance_mode == INSTANCE_MODE_INSTANCES ? 65535 : 255;
  else
    cfg->ignore = ignore_index;
  if (cfg->instance_mode != INSTANCE_MODE_INSTANCES && cfg->ignore > 255) {
    g_free (class_map);
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("ignore-index %u does not fit the GRAY8 output (0..255).",
            cfg->ignore), (NULL));
    return FALSE;
  }
  if (cfg->background > 255) {
    g_free (class_map);
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("background %u does not fit the GRAY8 output (0..255).",
            cfg->background), (NULL));
    return FALSE;
  }
  check = wsi_annot_expand_pattern (cfg->masks ? cfg->masks : cfg->geojson,
      NULL, &err);
  g_free (check);
  if (!err)
    cfg->classes = parse_class_map (class_map, 255, &err);
  g_free (class_map);
  if (err) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS, ("%s", err->message), (NULL));
    g_error_free (err);
    return FALSE;
  }
  self->warned_binary = FALSE;
  return TRUE;
}

static void
drop_annotation (GstLabelPatch * self)
{
  g_clear_pointer (&self->cached_path, g_free);
  wsi_label_image_clear (&self->label);
  g_clear_pointer (&self->polygons, wsi_polygon_set_free);
}

static gboolean
gst_label_patch_stop (GstBaseTransform * trans)
{
  GstLabelPatch *self = GST_LABEL_PATCH (trans);

  gst_wsi_set_running (GST_ELEMENT (self), &self->running, FALSE);
  drop_annotation (self);
  config_clear (&self->cfg);
  g_clear_pointer (&self->scratch, g_free);
  self->scratch_size = 0;
  return TRUE;
}

/* ---- PNG label images ---- */

/* Reads a PNG label image (wsi_png_read_labels); errors become LOAD_*. */
static gboolean
load_png (const gchar * path, WsiLabelImage * img, GError ** error)
{
  GError *err = NULL;
  gint code;

  if (wsi_png_read_labels (path, img, MAX_MASK_PIXELS, &err))
    return TRUE;
  switch (err->code) {
    case WSI_PNG_ERROR_NOT_FOUND:
      code = LOAD_NOT_FOUND;
      break;
    case WSI_PNG_ERROR_OPEN:
      code = LOAD_READ;
      break;
    case WSI_PNG_ERROR_NO_MEMORY:
    case WSI_PNG_ERROR_TOO_LARGE:
      code = LOAD_TOO_LARGE;
      break;
    default:
      code = LOAD_FORMAT;
      break;
  }
  g_set_error_literal (error, WSI_ANNOT_ERROR, code, err->message);
  g_error_free (err);
  return FALSE;
}

static guint16 *
widen_to_16 (const guint8 * src, gsize n)
{
  guint16 *out = g_try_new (guint16, n);
  gsize i;

  if (out)
    for (i = 0; i < n; i++)
      out[i] = src[i];
  return out;
}

/* Turns the raw PNG into what the instance mode outputs. */
static gboolean
prepare_label_image (GstLabelPatch * self, const gchar * path,
    WsiLabelImage * img, GError ** error)
{
  LabelPatchConfig *cfg = &self->cfg;
  gsize n = (gsize) img->width * img->height, i;
  guint16 *inst = NULL;

  if (cfg->instance_mode == INSTANCE_MODE_CLASSES && img->bytes_per_pixel == 1) {
    guint8 *d = img->data;
    if (cfg->binary) {
      for (i = 0; i < n; i++)
        d[i] = d[i] != 0;
    } else if (!self->warned_binary) {
      gboolean only_0_255 = TRUE, has_255 = FALSE;
      for (i = 0; i < n && only_0_255; i++) {
        only_0_255 = d[i] == 0 || d[i] == 255;
        has_255 |= d[i] == 255;
      }
      if (only_0_255 && has_255 && cfg->ignore == 255) {
        self->warned_binary = TRUE;
        GST_ELEMENT_WARNING (self, STREAM, FORMAT,
            ("Mask '%s' holds only 0 and 255: with binary=false 255 is the "
                "ignore value. Set binary=true if it is a 0/255 binary "
                "mask.", path), (NULL));
      }
    }
    return TRUE;
  }

  /* 16-bit files, and every file in the instance modes, are instance maps */
  if (img->bytes_per_pixel == 1) {
    inst = widen_to_16 (img->data, n);
    if (!inst)
      goto oom;
    g_free (img->data);
    img->data = inst;
    img->bytes_per_pixel = 2;
  }
  inst = img->data;
  if (cfg->instance_mode == INSTANCE_MODE_INSTANCES) {
    for (i = 0; i < n; i++)
      if (inst[i] == cfg->ignore) {
        g_set_error (error, WSI_ANNOT_ERROR, LOAD_FORMAT,
            "instance map '%s' uses id %u, the ignore value: set "
            "ignore-index to an unused id", path, cfg->ignore);
        return FALSE;
      }
    return TRUE;
  }
  img->data = wsi_annot_instance_classes (inst, img->width, img->height,
      cfg->instance_mode == INSTANCE_MODE_BOUNDARY, cfg->connectivity);
  if (!img->data) {
    img->data = inst;
    goto oom;
  }
  g_free (inst);
  img->bytes_per_pixel = 1;
  return TRUE;

oom:
  g_set_error (error, WSI_ANNOT_ERROR, LOAD_TOO_LARGE,
      "Not enough memory converting mask '%s' (%dx%d)", path, img->width,
      img->height);
  return FALSE;
}

/* ---- GeoJSON polygons ---- */

typedef struct
{
  GstLabelPatch *self;
  const gchar *path;
  guint feature;
  GArray *xy;
} GeoJsonReader;

static gboolean
geojson_fail (GeoJsonReader * r, GError ** error, const gchar * what)
{
  g_set_error (error, WSI_ANNOT_ERROR, LOAD_FORMAT,
      "bad GeoJSON '%s', feature %u: %s", r->path, r->feature, what);
  return FALSE;
}

static gboolean
read_number (JsonNode * node, gdouble * out)
{
  GType t;

  if (!JSON_NODE_HOLDS_VALUE (node))
    return FALSE;
  t = json_node_get_value_type (node);
  if (t == G_TYPE_INT64)
    *out = (gdouble) json_node_get_int (node);
  else if (t == G_TYPE_DOUBLE)
    *out = json_node_get_double (node);
  else
    return FALSE;
  return isfinite (*out) && fabs (*out) <= MAX_COORDINATE;
}

/* One Polygon's coordinates: [exterior, hole, ...], each [[x, y], ...]. */
static gboolean
read_polygon (GeoJsonReader * r, WsiPolygonSet * set, JsonNode * coords,
    guint label, GError ** error)
{
  JsonArray *rings;
  guint i, j;

  if (!JSON_NODE_HOLDS_ARRAY (coords))
    return geojson_fail (r, error, "Polygon coordinates are not an array");
  rings = json_node_get_array (coords);
  wsi_polygon_set_begin (set, label);
  for (i = 0; i < json_array_get_length (rings); i++) {
    JsonNode *rn = json_array_get_element (rings, i);
    JsonArray *ring;
    guint n;

    if (!JSON_NODE_HOLDS_ARRAY (rn)) {
      wsi_polygon_set_end (set);
      return geojson_fail (r, error, "a ring is not an array");
    }
    ring = json_node_get_array (rn);
    n = json_array_get_length (ring);
    if (wsi_polygon_set_n_vertices (set) + n > MAX_GEOJSON_VERTICES) {
      wsi_polygon_set_end (set);
      g_set_error (error, WSI_ANNOT_ERROR, LOAD_TOO_LARGE,
          "GeoJSON '%s', feature %u: more than the limit of %"
          G_GUINT64_FORMAT " vertices in the file", r->path, r->feature,
          MAX_GEOJSON_VERTICES);
      return FALSE;
    }
    g_array_set_size (r->xy, 0);
    for (j = 0; j < n; j++) {
      JsonNode *pn = json_array_get_element (ring, j);
      JsonArray *pos;
      gdouble xy[2];

      if (!JSON_NODE_HOLDS_ARRAY (pn)
          || json_array_get_length (pos = json_node_get_array (pn)) < 2
          || !read_number (json_array_get_element (pos, 0), &xy[0])
          || !read_number (json_array_get_element (pos, 1), &xy[1])) {
        wsi_polygon_set_end (set);
        return geojson_fail (r, error, "a position is not [x, y] with finite "
            "numbers");
      }
      g_array_append_vals (r->xy, xy, 2);
    }
    if (!wsi_polygon_set_add_ring (set, (gdouble *) r->xy->data, n)) {
      wsi_polygon_set_end (set);
      return geojson_fail (r, error, "a ring has fewer than 3 points");
    }
  }
  wsi_polygon_set_end (set);
  return TRUE;
}

static gboolean
read_geometry (GeoJsonReader * r, WsiPolygonSet * set, JsonObject * geom,
    guint label, guint depth, GError ** error)
{
  const gchar *type = json_object_get_string_member_with_default (geom,
      "type", NULL);
  JsonNode *coords = json_object_get_member (geom, "coordinates");
  guint i;

  if (!type)
    return geojson_fail (r, error, "geometry without a type");
  if (!strcmp (type, "Polygon"))
    return coords ? read_polygon (r, set, coords, label, error) :
        geojson_fail (r, error, "Polygon without coordinates");
  if (!strcmp (type, "MultiPolygon")) {
    JsonArray *polys;
    if (!coords || !JSON_NODE_HOLDS_ARRAY (coords))
      return geojson_fail (r, error, "MultiPolygon coordinates are not an "
          "array");
    polys = json_node_get_array (coords);
    for (i = 0; i < json_array_get_length (polys); i++)
      if (!read_polygon (r, set, json_array_get_element (polys, i), label,
              error))
        return FALSE;
    return TRUE;
  }
  if (!strcmp (type, "GeometryCollection")) {
    JsonNode *gn = json_object_get_member (geom, "geometries");
    JsonArray *geoms;
    if (depth >= MAX_GEOJSON_DEPTH)
      return geojson_fail (r, error, "GeometryCollections nested too deep");
    if (!gn || !JSON_NODE_HOLDS_ARRAY (gn))
      return geojson_fail (r, error, "GeometryCollection without geometries");
    geoms = json_node_get_array (gn);
    for (i = 0; i < json_array_get_length (geoms); i++) {
      JsonNode *g = json_array_get_element (geoms, i);
      if (!JSON_NODE_HOLDS_OBJECT (g))
        return geojson_fail (r, error, "a geometry is not an object");
      if (!read_geometry (r, set, json_node_get_object (g), label, depth + 1,
              error))
        return FALSE;
    }
    return TRUE;
  }
  /* points and lines have no area: nothing to paint */
  GST_DEBUG_OBJECT (r->self, "%s feature %u: %s skipped", r->path,
      r->feature, type);
  return TRUE;
}

/* QuPath: properties.classification.name (or .names joined by ": ");
 * features without a classification are "Unclassified". */
static gchar *
feature_class_name (JsonObject * feature)
{
  JsonNode *pn = json_object_get_member (feature, "properties");
  JsonNode *cn;
  JsonObject *cls;
  JsonNode *names;

  if (!pn || !JSON_NODE_HOLDS_OBJECT (pn))
    return g_strdup (UNCLASSIFIED_NAME);
  cn = json_object_get_member (json_node_get_object (pn), "classification");
  if (!cn || !JSON_NODE_HOLDS_OBJECT (cn))
    return g_strdup (UNCLASSIFIED_NAME);
  cls = json_node_get_object (cn);
  if (json_object_get_string_member_with_default (cls, "name", NULL))
    return g_strdup (json_object_get_string_member (cls, "name"));
  names = json_object_get_member (cls, "names");
  if (names && JSON_NODE_HOLDS_ARRAY (names)) {
    JsonArray *a = json_node_get_array (names);
    GString *s = g_string_new (NULL);
    guint i;
    for (i = 0; i < json_array_get_length (a); i++) {
      JsonNode *n = json_array_get_element (a, i);
      if (JSON_NODE_HOLDS_VALUE (n)
          && json_node_get_value_type (n) == G_TYPE_STRING)
        g_string_append_printf (s, "%s%s", s->len ? ": " : "",
            json_node_get_string (n));
    }
    return g_string_free (s, FALSE);
  }
  return g_strdup (UNCLASSIFIED_NAME);
}

static gboolean read_features (GeoJsonReader * r, WsiPolygonSet * set,
    JsonArray * features, guint depth, GError ** error);

static gboolean
read_feature (GeoJsonReader * r, WsiPolygonSet * set, JsonNode * node,
    guint depth, GError ** error)
{
  LabelPatchConfig *cfg = &r->self->cfg;
  JsonObject *feature;
  JsonNode *gn;
  gchar *name;
  gpointer value;
  guint label;
  gboolean ok;

  if (!JSON_NODE_HOLDS_OBJECT (node))
    return geojson_fail (r, error, "not an object");
  feature = json_node_get_object (node);
  if (!g_strcmp0 (json_object_get_string_member_with_default (feature,
              "type", NULL), "FeatureCollection")) {
    /* a FeatureCollection inside 'features': its features are read too */
    JsonNode *fn = json_object_get_member (feature, "features");
    if (depth >= MAX_COLLECTION_DEPTH)
      return geojson_fail (r, error, "FeatureCollections nested too deep");
    if (!fn || !JSON_NODE_HOLDS_ARRAY (fn))
      return geojson_fail (r, error, "nested FeatureCollection without a "
          "'features' array");
    return read_features (r, set, json_node_get_array (fn), depth + 1,
        error);
  }
  gn = json_object_get_member (feature, "geometry");
  if (!gn || JSON_NODE_HOLDS_NULL (gn))
    return TRUE;                /* a feature may lack geometry */
  if (!JSON_NODE_HOLDS_OBJECT (gn))
    return geojson_fail (r, error, "geometry is not an object");

  name = feature_class_name (feature);
  if (g_hash_table_lookup_extended (cfg->classes, name, NULL, &value)) {
    label = GPOINTER_TO_UINT (value) - 1;
  } else if (cfg->unknown_class == UNKNOWN_CLASS_SKIP) {
    g_free (name);
    return TRUE;
  } else if (cfg->unknown_class == UNKNOWN_CLASS_IGNORE) {
    label = cfg->ignore;
  } else {
    g_set_error (error, WSI_ANNOT_ERROR, LOAD_SETTINGS,
        "GeoJSON '%s', feature %u: classification '%s' is not in class-map "
        "(add it, or set unknown-class=skip or ignore)", r->path, r->feature,
        name);
    g_free (name);
    return FALSE;
  }
  g_free (name);
  ok = read_geometry (r, set, json_node_get_object (gn), label, 0, error);
  return ok;
}

/* Features of a collection; @depth counts the collections around it. The
 * index in messages is the top-level feature's. */
static gboolean
read_features (GeoJsonReader * r, WsiPolygonSet * set, JsonArray * features,
    guint depth, GError ** error)
{
  guint i;

  for (i = 0; i < json_array_get_length (features); i++) {
    if (depth == 0)
      r->feature = i;
    if (!read_feature (r, set, json_array_get_element (features, i), depth,
            error))
      return FALSE;
  }
  return TRUE;
}

/* Deepest nesting of arrays/objects in @text (outside strings). */
static guint
json_nesting (const gchar * text, gsize len)
{
  guint depth = 0, deepest = 0;
  gboolean in_string = FALSE, escaped = FALSE;
  gsize i;

  for (i = 0; i < len; i++) {
    gchar ch = text[i];
    if (in_string) {
      if (escaped)
        escaped = FALSE;
      else if (ch == '\\')
        escaped = TRUE;
      else if (ch == '"')
        in_string = FALSE;
    } else if (ch == '"') {
      in_string = TRUE;
    } else if (ch == '[' || ch == '{') {
      depth++;
      deepest = MAX (deepest, depth);
    } else if ((ch == ']' || ch == '}') && depth > 0) {
      depth--;
    }
  }
  return deepest;
}

static WsiPolygonSet *
load_geojson (GstLabelPatch * self, const gchar * path, GError ** error)
{
  GeoJsonReader r = { self, path, 0, NULL };
  GStatBuf st;
  JsonParser *parser;
  JsonNode *root;
  JsonArray *features = NULL;
  WsiPolygonSet *set;
  GError *err = NULL;
  gchar *text = NULL;
  gsize len = 0;

  if (g_stat (path, &st) != 0) {
    gint e = errno;
    g_set_error (error, WSI_ANNOT_ERROR,
        e == ENOENT ? LOAD_NOT_FOUND : LOAD_READ,
        "cannot open GeoJSON '%s': %s", path, g_strerror (e));
    return NULL;
  }
  if (st.st_size > MAX_GEOJSON_BYTES) {
    g_set_error (error, WSI_ANNOT_ERROR, LOAD_TOO_LARGE,
        "GeoJSON '%s' is %" G_GINT64_FORMAT " bytes, more than the limit of %"
        G_GINT64_FORMAT " MiB", path, (gint64) st.st_size,
        MAX_GEOJSON_BYTES >> 20);
    return NULL;
  }
  if (!g_file_get_contents (path, &text, &len, &err)) {
    g_set_error (error, WSI_ANNOT_ERROR,
        g_error_matches (err, G_FILE_ERROR, G_FILE_ERROR_NOENT) ?
        LOAD_NOT_FOUND : LOAD_READ,
        "cannot read GeoJSON '%s': %s", path, err->message);
    g_error_free (err);
    return NULL;
  }
  if (len > (gsize) MAX_GEOJSON_BYTES || json_nesting (text, len) >
      MAX_JSON_NESTING) {
    g_set_error (error, WSI_ANNOT_ERROR, LOAD_FORMAT,
        "bad GeoJSON '%s': larger than %" G_GINT64_FORMAT " MiB or nested "
        "deeper than %d levels", path, MAX_GEOJSON_BYTES >> 20,
        MAX_JSON_NESTING);
    g_free (text);
    return NULL;
  }
  parser = json_parser_new_immutable ();
  if (!json_parser_load_from_data (parser, text, len, &err)) {
    g_set_error (error, WSI_ANNOT_ERROR, LOAD_FORMAT,
        "bad GeoJSON '%s': %s", path, err->message);
    g_error_free (err);
    g_object_unref (parser);
    g_free (text);
    return NULL;
  }
  g_clear_pointer (&text, g_free);
  root = json_parser_get_root (parser);
  if (root && JSON_NODE_HOLDS_ARRAY (root)) {
    features = json_array_ref (json_node_get_array (root));
  } else if (root && JSON_NODE_HOLDS_OBJECT (root)) {
    JsonObject *o = json_node_get_object (root);
    const gchar *type = json_object_get_string_member_with_default (o,
        "type", "");
    JsonNode *fn = json_object_get_member (o, "features");
    if (!strcmp (type, "FeatureCollection") && fn
        && JSON_NODE_HOLDS_ARRAY (fn)) {
      features = json_array_ref (json_node_get_array (fn));
    } else if (!strcmp (type, "Feature")) {
      features = json_array_new ();
      json_array_add_element (features, json_node_copy (root));
    }
  }
  if (!features) {
    g_set_error (error, WSI_ANNOT_ERROR, LOAD_FORMAT,
        "bad GeoJSON '%s': expected a FeatureCollection, a Feature or an "
        "array of Features", path);
    g_object_unref (parser);
    return NULL;
  }

  set = wsi_polygon_set_new ();
  r.xy = g_array_new (FALSE, FALSE, sizeof (gdouble));
  if (!read_features (&r, set, features, 0, error))
    g_clear_pointer (&set, wsi_polygon_set_free);
  g_array_unref (r.xy);
  json_array_unref (features);
  g_object_unref (parser);
  if (set)
    GST_INFO_OBJECT (self, "%s: %u polygons, %" G_GUINT64_FORMAT " vertices",
        path, wsi_polygon_set_n_polygons (set),
        wsi_polygon_set_n_vertices (set));
  return set;
}

/* ---- streaming ---- */

#define PATCH_FMT "slide '%s', patch at level-0 (%" G_GINT64_FORMAT ", %" \
    G_GINT64_FORMAT ")"
#define PATCH_ARGS(m) (m)->slide, (m)->x, (m)->y

static void
post_load_error (GstLabelPatch * self, GError * err,
    const GstWsiTileMeta * m)
{
  gchar *text = g_strdup_printf ("%s (for " PATCH_FMT ")", err->message,
      PATCH_ARGS (m));

  switch (err->code) {
    case LOAD_NOT_FOUND:
      GST_ELEMENT_ERROR (self, RESOURCE, NOT_FOUND, ("%s", text), (NULL));
      break;
    case LOAD_READ:
      GST_ELEMENT_ERROR (self, RESOURCE, OPEN_READ, ("%s", text), (NULL));
      break;
    case LOAD_SETTINGS:
      GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS, ("%s", text), (NULL));
      break;
    case LOAD_TOO_LARGE:
      GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT, ("%s", text), (NULL));
      break;
    default:
      GST_ELEMENT_ERROR (self, STREAM, DECODE, ("%s", text), (NULL));
      break;
  }
  g_free (text);
}

/* Makes the annotation of @path current, loading it if needed. */
static gboolean
ensure_annotation (GstLabelPatch * self, const gchar * path,
    const GstWsiTileMeta * m)
{
  GError *err = NULL;

  if (self->cached_path && !strcmp (self->cached_path, path))
    return TRUE;
  drop_annotation (self);
  if (self->cfg.masks) {
    WsiLabelImage img = { 0, };
    if (load_png (path, &img, &err) &&
        !prepare_label_image (self, path, &img, &err))
      wsi_label_image_clear (&img);
    self->label = img;
  } else {
    self->polygons = load_geojson (self, path, &err);
  }
  if (err) {
    post_load_error (self, err, m);
    g_error_free (err);
    wsi_label_image_clear (&self->label);
    return FALSE;
  }
  GST_DEBUG_OBJECT (self, "loaded annotation %s", path);
  self->cached_path = g_strdup (path);
  return TRUE;
}

static gboolean
check_classes (GstLabelPatch * self, const guint8 * data, gint w, gint h,
    gsize stride, const gchar * path, const GstWsiTileMeta * m)
{
  guint n = self->cfg.num_classes, ignore = self->cfg.ignore;
  gint i, j;

  if (n == 0 || self->cfg.instance_mode == INSTANCE_MODE_INSTANCES)
    return TRUE;
  for (j = 0; j < h; j++)
    for (i = 0; i < w; i++) {
      guint v = data[j * stride + i];
      if (v >= n && v != ignore) {
        GST_ELEMENT_ERROR (self, STREAM, DECODE,
            ("Annotation '%s' has class index %u at patch pixel (%d, %d), "
                "beyond num-classes=%u (for " PATCH_FMT ")", path, v, i, j,
                n, PATCH_ARGS (m)), (NULL));
        return FALSE;
      }
    }
  return TRUE;
}

static GstFlowReturn
gst_label_patch_transform_frame (GstVideoFilter * filter,
    GstVideoFrame * in, GstVideoFrame * out)
{
  GstLabelPatch *self = GST_LABEL_PATCH (filter);
  LabelPatchConfig *cfg = &self->cfg;
  GstWsiTileMeta *meta = gst_buffer_get_wsi_tile_meta (in->buffer);
  GstWsiTileMeta *out_meta;
  GstCustomMeta *aug = gst_buffer_get_custom_meta (in->buffer,
      GST_WSI_AUGMENT_META_NAME);
  gint fw = GST_VIDEO_FRAME_WIDTH (out), fh = GST_VIDEO_FRAME_HEIGHT (out);
  guint8 *dst = GST_VIDEO_FRAME_PLANE_DATA (out, 0);
  gsize dst_stride = GST_VIDEO_FRAME_PLANE_STRIDE (out, 0);
  guint bpp = GST_VIDEO_FRAME_COMP_PSTRIDE (out, 0);
  gboolean flip_h = FALSE, flip_v = FALSE;
  gint rot = 0, w, h;
  GstWsiTileMeta m;
  WsiPatchGeom geom;
  GError *err = NULL;
  gchar *path;
  guint8 *labels;
  gsize stride;

  if (!meta || !meta->slide || !*meta->slide) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT,
        ("Patch without a slide path in its GstWsiTileMeta: labelpatch needs "
            "buffers from slidesrc/patchify."), (NULL));
    return GST_FLOW_ERROR;
  }
  if (aug) {
    GstStructure *s = gst_custom_meta_get_structure (aug);
    gst_structure_get_boolean (s, "flip-h", &flip_h);
    gst_structure_get_boolean (s, "flip-v", &flip_v);
    gst_structure_get_int (s, "rotate90", &rot);
  }
  /* the labels are made in the patch's own orientation, then turned */
  w = (rot & 1) ? fh : fw;
  h = (rot & 1) ? fw : fh;
  m = *meta;                    /* shallow: the slide string stays meta's */
  gst_wsi_tile_meta_fit_to_size (&m, w, h);

  path = wsi_annot_expand_pattern (cfg->masks ? cfg->masks : cfg->geojson,
      m.slide, &err);
  if (!path) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS, ("%s", err->message), (NULL));
    g_error_free (err);
    return GST_FLOW_ERROR;
  }
  if (!ensure_annotation (self, path, &m))
    goto error;

  geom.x = m.x;
  geom.y = m.y;
  geom.downsample = m.downsample > 0 ? m.downsample : 1.0;
  geom.width = w;
  geom.height = h;
  geom.valid_x = CLAMP (m.pad_left, 0, w);
  geom.valid_y = CLAMP (m.pad_top, 0, h);
  geom.valid_w = m.valid_width > 0 ? MIN (m.valid_width, w - geom.valid_x) :
      w - geom.valid_x;
  geom.valid_h = m.valid_height > 0 ? MIN (m.valid_height, h - geom.valid_y) :
      h - geom.valid_y;
  geom.scale_x = geom.scale_y = 1.0;

  if (flip_h || flip_v || (rot & 3)) {
    stride = (gsize) w * bpp;
    if (self->scratch_size < stride * h) {
      g_free (self->scratch);
      self->scratch_size = stride * h;
      self->scratch = g_malloc (self->scratch_size);
    }
    labels = self->scratch;
  } else {
    labels = dst;
    stride = dst_stride;
  }

  if (cfg->masks) {
    WsiLabelImage *img = &self->label;
    if (m.slide_width > 0 && m.slide_height > 0) {
      geom.scale_x = (gdouble) img->width / m.slide_width;
      geom.scale_y = (gdouble) img->height / m.slide_height;
      if (fabs (geom.scale_x / geom.scale_y - 1.0) > MAX_ASPECT_MISMATCH) {
        GST_ELEMENT_ERROR (self, STREAM, DECODE,
            ("Mask '%s' is %dx%d, not a scale of the %" G_GINT64_FORMAT "x%"
                G_GINT64_FORMAT " slide (aspect ratios differ by more than "
                "1%%) (for " PATCH_FMT ")", path, img->width, img->height,
                m.slide_width, m.slide_height, PATCH_ARGS (&m)), (NULL));
        goto error;
      }
    }
    if (img->bytes_per_pixel != bpp) {
      GST_ELEMENT_ERROR (self, CORE, NEGOTIATION, (NULL),
          ("label depth %u, output depth %u", img->bytes_per_pixel, bpp));
      goto error;
    }
    wsi_annot_sample (img, &geom, cfg->ignore, labels, stride);
  } else {
    gint j;
    for (j = 0; j < h; j++)
      memset (labels + j * stride, cfg->background, w);
    wsi_polygon_set_rasterise (self->polygons, &geom, labels, stride);
    wsi_annot_mask_invalid (&geom, m.slide_width, m.slide_height, 1,
        cfg->ignore, labels, stride);
  }
  if (bpp == 1 && !check_classes (self, labels, w, h, stride, path, &m))
    goto error;

  if (labels != dst)
    wsi_annot_augment (labels, w, h, stride, bpp, flip_h, flip_v, rot, dst,
        dst_stride);
#if G_BYTE_ORDER == G_BIG_ENDIAN
  if (bpp == 2) {
    gint i, j;
    for (j = 0; j < fh; j++) {
      guint16 *row = (guint16 *) (dst + j * dst_stride);
      for (i = 0; i < fw; i++)
        row[i] = GUINT16_TO_LE (row[i]);
    }
  }
#endif

  out_meta = gst_buffer_get_wsi_tile_meta (out->buffer);
  if (out_meta)
    gst_wsi_tile_meta_fit_to_size (out_meta, w, h);
  g_free (path);
  return GST_FLOW_OK;

error:
  g_free (path);
  return GST_FLOW_ERROR;
}

/* RGB on the sink side; GRAY8, or GRAY16_LE for instance ids, on the src
 * side; sizes and rates unchanged. */
static GstCaps *
gst_label_patch_transform_caps (GstBaseTransform * trans,
    GstPadDirection direction, GstCaps * caps, GstCaps * filter)
{
  GstLabelPatch *self = GST_LABEL_PATCH (trans);
  const gchar *format;
  GstCaps *res = gst_caps_copy (caps);
  guint i;

  if (direction == GST_PAD_SINK) {
    GST_OBJECT_LOCK (self);
    format = self->instance_mode == INSTANCE_MODE_INSTANCES ? "GRAY16_LE" :
        "GRAY8";
    GST_OBJECT_UNLOCK (self);
  } else {
    format = "RGB";
  }
  for (i = 0; i < gst_caps_get_size (res); i++) {
    GstStructure *s = gst_caps_get_structure (res, i);
    gst_structure_set (s, "format", G_TYPE_STRING, format, NULL);
    gst_structure_remove_fields (s, "colorimetry", "chroma-site", NULL);
  }
  if (filter) {
    GstCaps *tmp = gst_caps_intersect_full (filter, res,
        GST_CAPS_INTERSECT_FIRST);
    gst_caps_unref (res);
    res = tmp;
  }
  return res;
}

/* Instance maps say so in-band (stitchsink merges their objects). */
static gboolean
gst_label_patch_set_info (GstVideoFilter * filter, GstCaps * incaps,
    GstVideoInfo * in_info, GstCaps * outcaps, GstVideoInfo * out_info)
{
  if (GST_VIDEO_INFO_FORMAT (out_info) == GST_VIDEO_FORMAT_GRAY16_LE)
    gst_pad_push_event (GST_BASE_TRANSFORM_SRC_PAD (filter),
        gst_wsi_instances_event_new ());
  return TRUE;
}

/* ---- GObject ---- */

static void
gst_label_patch_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec)
{
  GstLabelPatch *self = GST_LABEL_PATCH (object);
  gboolean reconfigure = FALSE;

  if (gst_wsi_property_refused (GST_ELEMENT (self), &self->running, pspec))
    return;
  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MASKS:
      g_free (self->masks);
      self->masks = g_value_dup_string (value);
      break;
    case PROP_GEOJSON:
      g_free (self->geojson);
      self->geojson = g_value_dup_string (value);
      break;
    case PROP_IGNORE_INDEX:
      self->ignore_index = g_value_get_int (value);
      break;
    case PROP_NUM_CLASSES:
      self->num_classes = g_value_get_uint (value);
      break;
    case PROP_BINARY:
      self->binary = g_value_get_boolean (value);
      break;
    case PROP_INSTANCE_MODE:
      reconfigure = (gint) self->instance_mode != g_value_get_enum (value);
      self->instance_mode = g_value_get_enum (value);
      break;
    case PROP_BOUNDARY_CONNECTIVITY:
      self->connectivity = g_value_get_enum (value);
      break;
    case PROP_CLASS_MAP:
      g_free (self->class_map);
      self->class_map = g_value_dup_string (value);
      break;
    case PROP_UNKNOWN_CLASS:
      self->unknown_class = g_value_get_enum (value);
      break;
    case PROP_BACKGROUND:
      self->background = g_value_get_uint (value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
  if (reconfigure)
    gst_base_transform_reconfigure_src (GST_BASE_TRANSFORM (self));
}

static void
gst_label_patch_get_property (GObject * object, guint prop_id,
    GValue * value, GParamSpec * pspec)
{
  GstLabelPatch *self = GST_LABEL_PATCH (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MASKS:
      g_value_set_string (value, self->masks);
      break;
    case PROP_GEOJSON:
      g_value_set_string (value, self->geojson);
      break;
    case PROP_IGNORE_INDEX:
      g_value_set_int (value, self->ignore_index);
      break;
    case PROP_NUM_CLASSES:
      g_value_set_uint (value, self->num_classes);
      break;
    case PROP_BINARY:
      g_value_set_boolean (value, self->binary);
      break;
    case PROP_INSTANCE_MODE:
      g_value_set_enum (value, self->instance_mode);
      break;
    case PROP_BOUNDARY_CONNECTIVITY:
      g_value_set_enum (value, self->connectivity);
      break;
    case PROP_CLASS_MAP:
      g_value_set_string (value, self->class_map);
      break;
    case PROP_UNKNOWN_CLASS:
      g_value_set_enum (value, self->unknown_class);
      break;
    case PROP_BACKGROUND:
      g_value_set_uint (value, self->background);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_label_patch_finalize (GObject * object)
{
  GstLabelPatch *self = GST_LABEL_PATCH (object);

  g_free (self->masks);
  g_free (self->geojson);
  g_free (self->class_map);
  drop_annotation (self);
  config_clear (&self->cfg);
  g_free (self->scratch);
  G_OBJECT_CLASS (gst_label_patch_parent_class)->finalize (object);
}

static void
gst_label_patch_class_init (GstLabelPatchClass * klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstBaseTransformClass *trans_class = GST_BASE_TRANSFORM_CLASS (klass);
  GstVideoFilterClass *filter_class = GST_VIDEO_FILTER_CLASS (klass);
  const GParamFlags flags = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
      GST_PARAM_MUTABLE_READY;

  gobject_class->set_property = gst_label_patch_set_property;
  gobject_class->get_property = gst_label_patch_get_property;
  gobject_class->finalize = gst_label_patch_finalize;

  g_object_class_install_property (gobject_class, PROP_MASKS,
      g_param_spec_string ("masks", "Mask path pattern",
          "PNG label image of each slide/image, e.g. '/data/masks/{name}.png' "
          "({path} {dir} {file} {name} {stem} {ext} come from the slide "
          "path). Grayscale or indexed PNG at any consistent scale of the "
          "slide", NULL, flags));
  g_object_class_install_property (gobject_class, PROP_GEOJSON,
      g_param_spec_string ("geojson", "GeoJSON path pattern",
          "QuPath GeoJSON export of each slide (polygons in level-0 pixels), "
          "same placeholders as 'masks'", NULL, flags));
  g_object_class_install_property (gobject_class, PROP_IGNORE_INDEX,
      g_param_spec_int ("ignore-index", "Ignore index",
          "Label of pixels without annotation (padding, outside the slide) "
          "for the loss to skip; -1: 255 for GRAY8, 65535 for GRAY16_LE",
          -1, 65535, DEFAULT_IGNORE_INDEX, flags));
  g_object_class_install_property (gobject_class, PROP_NUM_CLASSES,
      g_param_spec_uint ("num-classes", "Number of classes",
          "When > 0, a class index >= num-classes (other than the ignore "
          "value) is an error", 0, 256, DEFAULT_NUM_CLASSES, flags));
  g_object_class_install_property (gobject_class, PROP_BINARY,
      g_param_spec_boolean ("binary", "Binary masks",
          "8-bit masks are binary: every non-zero value becomes class 1 "
          "(for 0/255 masks)", DEFAULT_BINARY, flags));
  g_object_class_install_property (gobject_class, PROP_INSTANCE_MODE,
      g_param_spec_enum ("instance-mode", "Instance mode",
          "How instance maps (16-bit PNGs) are turned into labels",
          GST_TYPE_LABEL_PATCH_INSTANCE_MODE, DEFAULT_INSTANCE_MODE, flags));
  g_object_class_install_property (gobject_class,
      PROP_BOUNDARY_CONNECTIVITY, g_param_spec_enum ("boundary-connectivity",
          "Boundary connectivity",
          "Neighbours compared to find instance boundary pixels "
          "(instance-mode=boundary)", GST_TYPE_LABEL_PATCH_CONNECTIVITY,
          DEFAULT_CONNECTIVITY, flags));
  g_object_class_install_property (gobject_class, PROP_CLASS_MAP,
      g_param_spec_string ("class-map", "Class map",
          "GeoJSON classification name to class index, e.g. "
          "'Tumor=1,Stroma=2' (features without a classification are "
          "'Unclassified')", NULL, flags));
  g_object_class_install_property (gobject_class, PROP_UNKNOWN_CLASS,
      g_param_spec_enum ("unknown-class", "Unknown class",
          "What to do with a GeoJSON classification missing from class-map",
          GST_TYPE_LABEL_PATCH_UNKNOWN_CLASS, DEFAULT_UNKNOWN_CLASS, flags));
  g_object_class_install_property (gobject_class, PROP_BACKGROUND,
      g_param_spec_uint ("background", "Background class",
          "GeoJSON: label of slide pixels inside no polygon (set it to the "
          "ignore value for sparse annotations)", 0, 255, DEFAULT_BACKGROUND,
          flags));

  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);
  gst_element_class_set_static_metadata (element_class, "Label patch",
      "Filter/Converter/Video",
      "Replaces RGB slide patches by their label patches (class indices or "
      "instance ids) from PNG masks or QuPath GeoJSON, following the tile "
      "meta and patchify's augmentation", "gst-wsiseg");

  trans_class->start = GST_DEBUG_FUNCPTR (gst_label_patch_start);
  trans_class->stop = GST_DEBUG_FUNCPTR (gst_label_patch_stop);
  trans_class->transform_caps =
      GST_DEBUG_FUNCPTR (gst_label_patch_transform_caps);
  filter_class->set_info = GST_DEBUG_FUNCPTR (gst_label_patch_set_info);
  filter_class->transform_frame =
      GST_DEBUG_FUNCPTR (gst_label_patch_transform_frame);

  gst_type_mark_as_plugin_api (GST_TYPE_LABEL_PATCH_INSTANCE_MODE, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_LABEL_PATCH_UNKNOWN_CLASS, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_LABEL_PATCH_CONNECTIVITY, 0);
}

static void
gst_label_patch_init (GstLabelPatch * self)
{
  self->ignore_index = DEFAULT_IGNORE_INDEX;
  self->num_classes = DEFAULT_NUM_CLASSES;
  self->binary = DEFAULT_BINARY;
  self->instance_mode = DEFAULT_INSTANCE_MODE;
  self->connectivity = DEFAULT_CONNECTIVITY;
  self->unknown_class = DEFAULT_UNKNOWN_CLASS;
  self->background = DEFAULT_BACKGROUND;
}
