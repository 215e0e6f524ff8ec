/* stitchsink: stitches patches carrying GstWsiTileMeta back into the region
 * they were cut from and writes it as PNG, band by band.
 *
 * Memory: a band of full-width rows from the first unwritten row down to the
 * lowest row touched so far. Producers emit grid rows top to bottom
 * (docs/tile-meta.md), so rows above the top of the current buffer are final:
 * they are written (or spooled when the region height is unknown) and their
 * memory reused. Peak memory grows with region width x patch height.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gstwsiclasses.h"
#include "gstwsidetection.h"
#include "wsilimits.h"
#include "gstwsiprops.h"
#include "gstwsiseg.h"
#include "gstwsitensor.h"
#include "gstwsitilemeta.h"
#include "stitchblend.h"
#include "wsimetrics.h"
#include "stitchgeojson.h"
#include "stitchio.h"
#include "stitchinstance.h"
#include "stitchoverlay.h"

#include <gst/base/gstbasesink.h>
#include <gst/video/video.h>
#include <math.h>
#include <string.h>

GST_DEBUG_CATEGORY_STATIC (stitchsink_debug);
#define GST_CAT_DEFAULT stitchsink_debug

/* PNG's limit on the image height. */
#define MAX_REGION_HEIGHT G_MAXINT32
/* Probability tensors: classes per pixel. */
#define MAX_CLASSES 255

/* Stale "<output>.partial-XXXXXX" files older than this many seconds that no
 * writer holds are removed when an output is opened. */
#define STALE_TEMP_AGE_S 2
/* PNG tEXt key and GeoJSON member marking an output cut short at EOS. */
#define PARTIAL_KEY "wsiseg-partial"
/* Custom serialized downstream event: a grid position the producer skipped
 * (tissue detection), fields col, row (int). Counts as covered. */
#define TILE_SKIPPED_EVENT "wsi-tile-skipped"
/* Custom serialized downstream event of patchify: the stream ends before the
 * region was complete (fields slide, region-x/y/width/height). */
#define REGION_INCOMPLETE_EVENT "wsi-region-incomplete"


/* Same values as StitchBlendMode. */
typedef enum
{
  GST_STITCH_SINK_BLEND_CROP = STITCH_BLEND_CROP,
  GST_STITCH_SINK_BLEND_AVERAGE = STITCH_BLEND_AVERAGE,
  GST_STITCH_SINK_BLEND_GAUSSIAN = STITCH_BLEND_GAUSSIAN,
} GstStitchSinkBlend;

#define GST_TYPE_STITCH_SINK_BLEND (gst_stitch_sink_blend_get_type ())
static GType
gst_stitch_sink_blend_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {GST_STITCH_SINK_BLEND_CROP,
        "Keep the centre crop of each patch (overlap/2 trimmed per side)",
        "crop"},
    {GST_STITCH_SINK_BLEND_AVERAGE,
        "Probabilities: per-pixel mean of all patches covering the pixel",
        "average"},
    {GST_STITCH_SINK_BLEND_GAUSSIAN,
        "Probabilities: mean weighted by a 2-D gaussian centred on each patch",
        "gaussian"},
    {0, NULL, NULL}
  };

  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstStitchSinkBlend", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

typedef enum
{
  GST_STITCH_SINK_OBJECT_ANNOTATION,
  GST_STITCH_SINK_OBJECT_DETECTION,
} GstStitchSinkObjectType;

#define GST_TYPE_STITCH_SINK_OBJECT_TYPE (gst_stitch_sink_object_type_get_type ())
static GType
gst_stitch_sink_object_type_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {GST_STITCH_SINK_OBJECT_ANNOTATION, "QuPath annotations (regions)",
        "annotation"},
    {GST_STITCH_SINK_OBJECT_DETECTION,
        "QuPath detections (many small objects, e.g. nuclei)", "detection"},
    {0, NULL, NULL}
  };

  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstStitchSinkObjectType", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

typedef enum
{
  GST_STITCH_SINK_INSTANCES_AUTO,
  GST_STITCH_SINK_INSTANCES_OFF,
  GST_STITCH_SINK_INSTANCES_ON,
} GstStitchSinkInstances;

#define GST_TYPE_STITCH_SINK_INSTANCES (gst_stitch_sink_instances_get_type ())
static GType
gst_stitch_sink_instances_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {GST_STITCH_SINK_INSTANCES_AUTO,
        "GRAY16_LE patches are instance maps when the producer says so "
          "in-band (wsi-instances event, segment-maskrcnn)", "auto"},
    {GST_STITCH_SINK_INSTANCES_OFF, "GRAY16_LE patches are class labels",
        "off"},
    {GST_STITCH_SINK_INSTANCES_ON,
        "GRAY16_LE patches are instance maps (e.g. labelpatch "
          "instance-mode=instances)", "on"},
    {0, NULL, NULL}
  };

  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstStitchSinkInstances", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

enum
{
  PROP_0,
  PROP_INSTANCES,
  PROP_LOCATION,
  PROP_OVERLAY_LOCATION,
  PROP_BLEND,
  PROP_BACKGROUND,
  PROP_COMPRESSION_LEVEL,
  PROP_OVERLAY_MAX_SIZE,
  PROP_OVERLAY_OPACITY,
  PROP_CLASS_NAMES,
  PROP_CLASS_COLORS,
  PROP_PROGRESS_INTERVAL,
  PROP_SIGMA,
  PROP_PROBABILITY_LOCATION,
  PROP_PROBABILITY_CLASS,
  PROP_GEOJSON_LOCATION,
  PROP_GEOJSON_OBJECT_TYPE,
  PROP_GEOJSON_MIN_AREA,
  PROP_GEOJSON_BOUNDARY_CLASS,
  PROP_GEOJSON_BOUNDARY_GROW,
  PROP_MAX_BAND_ROWS,
  PROP_IMAGES_WRITTEN,
  PROP_POST_MESSAGES,
};

#define DEFAULT_BLEND GST_STITCH_SINK_BLEND_CROP
#define DEFAULT_BACKGROUND -1
#define DEFAULT_COMPRESSION_LEVEL 6
#define DEFAULT_OVERLAY_MAX_SIZE 2048
#define DEFAULT_OVERLAY_OPACITY 0.5
#define DEFAULT_PROGRESS_INTERVAL 64
#define DEFAULT_SIGMA 0.0
#define DEFAULT_PROBABILITY_CLASS 1
#define DEFAULT_GEOJSON_OBJECT_TYPE GST_STITCH_SINK_OBJECT_ANNOTATION
#define DEFAULT_GEOJSON_MIN_AREA 4
#define DEFAULT_GEOJSON_BOUNDARY_CLASS -1
#define DEFAULT_GEOJSON_BOUNDARY_GROW 2
#define DEFAULT_INSTANCES GST_STITCH_SINK_INSTANCES_AUTO

#define GST_TYPE_STITCH_SINK (gst_stitch_sink_get_type ())
G_DECLARE_FINAL_TYPE (GstStitchSink, gst_stitch_sink, GST, STITCH_SINK,
    GstBaseSink);

struct _GstStitchSink
{
  GstBaseSink parent;

  /* properties (object lock) */
  gchar *location;
  gchar *overlay_location;
  GstStitchSinkBlend blend;
  gint background;
  gint compression_level;
  guint overlay_max_size;
  gdouble overlay_opacity;
  gchar *class_names;
  gchar *class_colors;
  guint progress_interval;
  gdouble sigma;
  gchar *probability_location;
  guint probability_class;
  gchar *geojson_location;
  GstStitchSinkObjectType geojson_object_type;
  guint64 geojson_min_area;
  gint geojson_boundary_class;
  guint geojson_boundary_grow;
  guint64 max_band_rows;        /* peak over the run, read-only */
  guint images_written;
  gboolean post_messages;
  GstStitchSinkInstances instances;
  gint running;
  gboolean instances_in_band;   /* wsi-instances event seen */

  /* negotiated format; n_classes > 0: probability tensors */
  gboolean negotiated;
  GstVideoInfo info;
  gint frame_width, frame_height;
  gint channels, bytes_per_sample, bpp;
  gint n_classes;
  StitchBlendMode blend_mode;
  gfloat *weight_x, *weight_y;  /* per patch column / row */

  /* style: the properties at start, else the producer's wsi-classes event */
  StitchOverlayStyle style;
  gboolean user_names, user_colors;

  /* current image */
  gboolean active;
  gboolean any_tile;            /* a tile arrived since start/flush */
  guint image_index;
  gchar *slide;
  gint64 region_x, region_y, region_w0, region_h0;
  gint level;
  gdouble downsample;
  gint channels_img, bytes_per_sample_img, n_classes_img;
  gint64 width, height;         /* level pixels; height 0: unknown */
  gdouble mpp_x, mpp_y;
  gchar *out_location, *out_overlay_location;
  gchar *out_prob_location, *out_geojson_location;
  StitchPng *png, *prob_png;
  StitchSpool *spool, *prob_spool;
  StitchOverlay *overlay;
  StitchGeoJson *geojson;
  guint8 *label_row, *prob_row;         /* resolved probability rows */
  guint32 *label32_row;         /* labels for the GeoJSON tracer */
  guint prob_class_img;
  gint grid_cols, grid_rows;

  /* instance maps (stitchinstance.h): rows of global ids spooled, the PNG
   * written at the end when the number of objects is known */
  gboolean instance_img;
  StitchInstances *inst;
  StitchSpool *inst_spool;
  GstWsiDetection *det_table;
  StitchInstanceInfo *inst_info;
  guint n_table;

  /* band: rows [band_top, band_top + band_count) kept in memory */
  guint8 **band;
  guint band_count, band_alloc;
  guint8 **free_rows;
  guint free_count;
  gint64 band_top;              /* == rows finished (written or spooled) */
  gint64 extent;                /* lowest row touched + 1 */
  guint8 *bg_row;
  gsize row_bytes;
  gboolean order_warned;

  /* progress */
  guint64 patches;
  guint64 patches_since_message;
  gdouble fraction;
  guint64 grid_done;            /* grid positions up to the last one seen */
  gboolean measured;            /* patches carry tissue_fraction: upstream
                                 * may drop some, rely on its event */
  gboolean incomplete;          /* REGION_INCOMPLETE_EVENT for this image */
  gint64 last_message_us;
};

G_DEFINE_TYPE (GstStitchSink, gst_stitch_sink, GST_TYPE_BASE_SINK);
GST_ELEMENT_REGISTER_DEFINE (stitchsink, "stitchsink", GST_RANK_NONE,
    GST_TYPE_STITCH_SINK);

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK,
    GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE ("{ GRAY8, GRAY16_LE, RGB }") "; "
        GST_WSI_TENSOR_CAPS));

/* ---- location patterns ---- */

/* Expands %d / %0Nd (image index), %s (slide name without directory and
 * extension) and %% in @pattern. Other conversions are refused: the
 * pattern never reaches printf. */
static gchar *
expand_location (const gchar * pattern, guint index, const gchar * slide,
    gboolean * has_pattern, GError ** error)
{
  GString *out = g_string_new (NULL);
  const gchar *p;

  if (has_pattern)
    *has_pattern = FALSE;
  for (p = pattern; *p; p++) {
    guint width = 0;
    gboolean zero = FALSE;

    if (*p != '%') {
      g_string_append_c (out, *p);
      continue;
    }
    p++;
    if (*p == '%') {
      g_string_append_c (out, '%');
      continue;
    }
    if (*p == '0') {
      zero = TRUE;
      p++;
    }
    while (g_ascii_isdigit (*p) && width < 100)
      width = width * 10 + (*p++ - '0');
    if (*p == 'd' || *p == 'u') {
      g_string_append_printf (out, zero ? "%0*u" : "%*u", (gint) width, index);
    } else if (*p == 's' && width == 0 && !zero) {
      gchar *base = g_path_get_basename (slide && *slide ? slide : "image");
      gchar *dot = strrchr (base, '.');
      gchar *c;
      if (dot && dot != base)
        *dot = '\0';
      for (c = base; *c; c++)
        if (*c == '/' || *c == '%' || !g_ascii_isprint (*c))
          *c = '_';
      g_string_append (out, *base && strcmp (base, ".") ? base : "image");
      g_free (base);
    } else {
      g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
          "location pattern '%s': only %%d, %%0Nd, %%s and %%%% are "
          "supported", pattern);
      g_string_free (out, TRUE);
      return NULL;
    }
    if (has_pattern)
      *has_pattern = TRUE;
  }
  return g_string_free (out, FALSE);
}

static gboolean
location_has_pattern (const gchar * location)
{
  gboolean has = FALSE;
  gchar *s;

  if (!location)
    return FALSE;
  s = expand_location (location, 0, NULL, &has, NULL);
  g_free (s);
  return has;
}

static void optional_output_failed (GstStitchSink * self, const gchar * what,
    const gchar * location, GError * err);

/* ---- band management ---- */

static void
fill_background (GstStitchSink * self, guint8 * row)
{
  gint bg = self->background;
  gsize x;

  if (self->n_classes_img > 0) {
    /* probability sums and weights: nothing contributed yet */
    memset (row, 0, self->row_bytes);
  } else if (self->channels_img == 3) {
    guint32 c = bg < 0 ? 0xffffff : (guint32) bg;
    guint8 rgb[3] = { (c >> 16) & 0xff, (c >> 8) & 0xff, c & 0xff };
    if (rgb[0] == rgb[1] && rgb[1] == rgb[2]) {
      memset (row, rgb[0], self->row_bytes);
      return;
    }
    for (x = 0; x < (gsize) self->width; x++)
      memcpy (row + 3 * x, rgb, 3);
  } else if (self->bytes_per_sample_img == 2) {
    guint v = bg < 0 ? 0 : MIN ((guint) bg, 65535);
    for (x = 0; x < (gsize) self->width; x++) {
      row[2 * x] = v & 0xff;
      row[2 * x + 1] = v >> 8;
    }
  } else {
    memset (row, bg < 0 ? 0 : MIN (bg, 255), self->row_bytes);
  }
}

static void
band_clear (GstStitchSink * self)
{
  guint i;

  for (i = 0; i < self->band_count; i++)
    g_free (self->band[i]);
  for (i = 0; i < self->free_count; i++)
    g_free (self->free_rows[i]);
  g_clear_pointer (&self->band, g_free);
  g_clear_pointer (&self->free_rows, g_free);
  g_clear_pointer (&self->bg_row, g_free);
  self->band_count = self->band_alloc = self->free_count = 0;
}

/* Grows the band so it covers rows up to @y_end (exclusive). */
static gboolean
band_extend (GstStitchSink * self, gint64 y_end)
{
  while (self->band_top + self->band_count < y_end) {
    guint8 *row;

    if (self->band_count == self->band_alloc) {
      self->band_alloc = MAX (64, self->band_alloc * 2);
      self->band = g_renew (guint8 *, self->band, self->band_alloc);
      self->free_rows = g_renew (guint8 *, self->free_rows, self->band_alloc);
    }
    if (self->free_count > 0)
      row = self->free_rows[--self->free_count];
    else if (!(row = g_try_malloc (self->row_bytes)))
      return FALSE;
    fill_background (self, row);
    self->band[self->band_count++] = row;
  }
  if (self->band_count > self->max_band_rows) {
    GST_OBJECT_LOCK (self);
    self->max_band_rows = self->band_count;
    GST_OBJECT_UNLOCK (self);
  }
  return TRUE;
}

/* One finished row: to the PNG (known height) or the spool (unknown), and
 * to the GeoJSON tracer. Probability rows are resolved to labels first. */
static gboolean
emit_row (GstStitchSink * self, gint64 y, const guint8 * row, GError ** error)
{
  if (self->n_classes_img > 0) {
    stitch_blend_resolve_row ((const gfloat *) row, self->width,
        self->n_classes_img, (guint8) CLAMP (self->background, 0, 255),
        self->label_row, self->prob_class_img,
        self->prob_png ? self->prob_row : NULL);
    row = self->label_row;
  }
  if (self->geojson) {
    gint64 x;
    GError *gerr = NULL;
    if (self->bytes_per_sample_img == 2)
      for (x = 0; x < self->width; x++)
        self->label32_row[x] = row[2 * x] | (row[2 * x + 1] << 8);
    else
      for (x = 0; x < self->width; x++)
        self->label32_row[x] = row[x];
    if (!stitch_geojson_push_row (self->geojson, self->label32_row, &gerr)) {
      stitch_geojson_abort (self->geojson);
      self->geojson = NULL;
      optional_output_failed (self, "GeoJSON", self->out_geojson_location,
          gerr);
    }
  }
  if (self->spool) {
    GError *perr = NULL;
    if (!stitch_spool_write_row (self->spool, row, error))
      return FALSE;
    if (self->prob_spool && !stitch_spool_write_row (self->prob_spool,
            self->prob_row, &perr)) {
      g_clear_pointer (&self->prob_spool, stitch_spool_free);
      stitch_png_abort (self->prob_png);
      self->prob_png = NULL;
      optional_output_failed (self, "probability map",
          self->out_prob_location, perr);
    }
    return TRUE;
  }
  if (self->overlay)
    stitch_overlay_push_row (self->overlay, y, row);
  if (!stitch_png_write_row (self->png, row, error))
    return FALSE;
  if (self->prob_png) {
    GError *perr = NULL;
    if (!stitch_png_write_row (self->prob_png, self->prob_row, &perr)) {
      stitch_png_abort (self->prob_png);
      self->prob_png = NULL;
      optional_output_failed (self, "probability map",
          self->out_prob_location, perr);
    }
  }
  return TRUE;
}

/* Writes every row above @y_end (exclusive) and recycles its memory. */
static gboolean
band_flush (GstStitchSink * self, gint64 y_end, GError ** error)
{
  guint done = 0;
  gboolean ok = TRUE;

  if (self->height > 0)
    y_end = MIN (y_end, self->height);
  while (ok && self->band_top < y_end) {
    const guint8 *row = done < self->band_count ? self->band[done] :
        self->bg_row;
    ok = emit_row (self, self->band_top, row, error);
    if (done < self->band_count)
      self->free_rows[self->free_count++] = self->band[done++];
    self->band_top++;
  }
  if (done > 0) {
    memmove (self->band, self->band + done,
        (self->band_count - done) * sizeof (guint8 *));
    self->band_count -= done;
  }
  return ok;
}

/* ---- image lifecycle ---- */

static void
image_reset (GstStitchSink * self)
{
  stitch_png_abort (self->png);
  self->png = NULL;
  stitch_png_abort (self->prob_png);
  self->prob_png = NULL;
  stitch_geojson_abort (self->geojson);
  self->geojson = NULL;
  g_clear_pointer (&self->spool, stitch_spool_free);
  g_clear_pointer (&self->prob_spool, stitch_spool_free);
  g_clear_pointer (&self->inst_spool, stitch_spool_free);
  g_clear_pointer (&self->inst, stitch_instances_free);
  self->instance_img = FALSE;
  g_clear_pointer (&self->overlay, stitch_overlay_free);
  g_clear_pointer (&self->slide, g_free);
  g_clear_pointer (&self->out_location, g_free);
  g_clear_pointer (&self->out_overlay_location, g_free);
  g_clear_pointer (&self->out_prob_location, g_free);
  g_clear_pointer (&self->out_geojson_location, g_free);
  g_clear_pointer (&self->label_row, g_free);
  g_clear_pointer (&self->prob_row, g_free);
  g_clear_pointer (&self->label32_row, g_free);
  band_clear (self);
  self->active = FALSE;
  self->band_top = 0;
  self->extent = 0;
  self->order_warned = FALSE;
  self->patches = 0;
  self->patches_since_message = 0;
  self->fraction = 0;
  self->grid_done = 0;
  self->measured = FALSE;
  self->incomplete = FALSE;
}

/* Grid positions of the image (0: unknown). */
static guint64
grid_expected (GstStitchSink * self)
{
  if (self->grid_cols > 0 && self->grid_rows > 0)
    return (guint64) self->grid_cols * (guint64) self->grid_rows;
  return 0;
}

/* Progress while streaming is periodic (post-messages); the message at the
 * end of an image (@final) is always posted and says whether it is
 * partial. */
static void
post_progress (GstStitchSink * self, gboolean final, gboolean partial)
{
  GstStructure *s;
  gboolean post;

  self->patches_since_message = 0;
  GST_OBJECT_LOCK (self);
  post = final || gst_wsi_periodic_message_due (self->post_messages,
      &self->last_message_us, 0);
  GST_OBJECT_UNLOCK (self);
  if (!post)
    return;
  s = gst_structure_new ("stitchsink-progress",
      "fraction", G_TYPE_DOUBLE, self->fraction,
      "rows-written", G_TYPE_UINT64, (guint64) self->band_top,
      "rows-total", G_TYPE_UINT64, (guint64) self->height,
      "patches", G_TYPE_UINT64, self->patches,
      "patches-expected", G_TYPE_UINT64, grid_expected (self),
      "image", G_TYPE_UINT, self->image_index,
      "location", G_TYPE_STRING, self->out_location, NULL);
  if (final)
    gst_structure_set (s, "final", G_TYPE_BOOLEAN, TRUE,
        "partial", G_TYPE_BOOLEAN, partial, NULL);
  gst_element_post_message (GST_ELEMENT (self),
      gst_message_new_element (GST_OBJECT (self), s));
}

/* An optional output (overlay, probability map, GeoJSON) failed: warn; the
 * other outputs go on. */
static void
optional_output_failed (GstStitchSink * self, const gchar * what,
    const gchar * location, GError * err)
{
  GST_ELEMENT_WARNING (self, RESOURCE, WRITE,
      ("Could not write the %s '%s'; the other outputs are kept.", what,
          location), ("%s", err ? err->message : "unknown error"));
  g_clear_error (&err);
}

/* Removes temp files a killed run left next to @location. */
static void
clean_stale (GstStitchSink * self, const gchar * location)
{
  guint n;

  if (!location)
    return;
  n = stitch_atomic_clean_stale (location, STALE_TEMP_AGE_S);
  if (n > 0)
    GST_INFO_OBJECT (self, "removed %u stale temp file%s of '%s' (left by a "
        "run that was killed)", n, n > 1 ? "s" : "", location);
}

/* Opens an output that goes along with the image: @pattern expanded like
 * location. */
static gboolean
expand_extra_location (GstStitchSink * self, const gchar * pattern,
    const GstWsiTileMeta * m, gchar ** out)
{
  GError *err = NULL;

  *out = NULL;
  if (!pattern)
    return TRUE;
  *out = expand_location (pattern, self->image_index, m->slide, NULL, &err);
  if (!*out) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS, ("%s", err->message), (NULL));
    g_error_free (err);
    return FALSE;
  }
  return TRUE;
}

/* ---- instance maps ---- */

/* A finished row of global ids: spooled (the PNG format depends on the
 * number of objects, known at the end). */
static gboolean
instance_row (gint64 y, const guint32 * gids, gpointer data, GError ** error)
{
  GstStitchSink *self = data;

  return stitch_spool_write_ids (self->inst_spool, gids, self->width, error);
}

/* GeoJSON: class and score of object @gid. */
static void
instance_describe (guint32 gid, StitchGeoJsonInstance * out, gpointer data)
{
  GstStitchSink *self = data;
  const StitchInstanceObject *o = stitch_instances_get_object (self->inst,
      gid);

  if (o) {
    out->class_id = o->class_id;
    out->score = o->score;
  }
}

/* Class shown by the overlay for object @gid: its class, 1 when unknown
 * (label 0 is transparent). */
static guint16
instance_overlay_class (GstStitchSink * self, guint32 gid)
{
  const StitchInstanceObject *o = stitch_instances_get_object (self->inst,
      gid);

  return o && o->class_id > 0 ? (guint16) MIN (o->class_id, 65535) : 1;
}

static void
instance_error (GstStitchSink * self, GError * err)
{
  if (err->code == G_FILE_ERROR_NOSPC || err->code == G_FILE_ERROR_NOMEM)
    GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
        ("Cannot stitch the instance map '%s': %s.", self->out_location,
            err->message), (NULL));
  else
    GST_ELEMENT_ERROR (self, RESOURCE, WRITE,
        ("Could not write '%s'.", self->out_location), ("%s", err->message));
  g_error_free (err);
}

/* Writes the label PNG (16-bit grey, or 8-bit RGB beyond 65535 objects),
 * the GeoJSON and the overlay outlines from the spooled rows. */
static gboolean
instance_outputs (GstStitchSink * self, gint level, guint max_size,
    GError ** error)
{
  const gint64 w = self->width;
  guint32 count, *rows[3];
  guint16 *outline;
  guint8 *png_row;
  gboolean wide, ok = TRUE;
  gint64 y, x;

  if (!stitch_instances_finish (self->inst, self->height, error))
    return FALSE;
  count = stitch_instances_get_count (self->inst);
  wide = count > STITCH_INSTANCE_MAX_16BIT;
  if (!stitch_png_begin (self->png, (guint32) w, (guint32) self->height,
          wide ? 3 : 1, wide ? 8 : 16, level, error)
      || !stitch_spool_rewind (self->inst_spool, error))
    return FALSE;
  if (wide)
    GST_INFO_OBJECT (self, "%u objects: '%s' is 8-bit RGB, id = R << 16 | "
        "G << 8 | B", count, self->out_location);
  if (self->out_overlay_location)
    self->overlay = stitch_overlay_new (w, self->height, 1, 2, max_size);
  for (x = 0; x < 3; x++)
    rows[x] = g_new0 (guint32, w);
  outline = g_new (guint16, w);
  png_row = g_new (guint8, w * 3);
  /* rows[1] is row y, rows[0] the one above, rows[2] the one below */
  if (self->height > 0)
    ok = stitch_spool_read_ids (self->inst_spool, rows[2], w, error);
  for (y = 0; ok && y < self->height; y++) {
    guint32 *t = rows[0];
    rows[0] = rows[1];
    rows[1] = rows[2];
    rows[2] = t;
    if (y + 1 < self->height)
      ok = stitch_spool_read_ids (self->inst_spool, rows[2], w, error);
    else
      memset (rows[2], 0, w * sizeof (guint32));
    if (!ok)
      break;
    for (x = 0; x < w; x++) {
      guint32 id = rows[1][x];
      if (wide) {
        png_row[3 * x] = id >> 16;
        png_row[3 * x + 1] = (id >> 8) & 0xff;
        png_row[3 * x + 2] = id & 0xff;
      } else {
        png_row[2 * x] = id & 0xff;
        png_row[2 * x + 1] = id >> 8;
      }
    }
    if (!stitch_png_write_row (self->png, png_row, error)) {
      ok = FALSE;
      break;
    }
    if (self->geojson) {
      GError *gerr = NULL;
      if (!stitch_geojson_push_row (self->geojson, rows[1], &gerr)) {
        stitch_geojson_abort (self->geojson);
        self->geojson = NULL;
        optional_output_failed (self, "GeoJSON", self->out_geojson_location,
            gerr);
      }
    }
    if (self->overlay) {
      /* outline: an object pixel with a 4-neighbour of another id */
      for (x = 0; x < w; x++) {
        guint32 id = rows[1][x];
        gboolean edge = id && ((y > 0 && rows[0][x] != id)
            || (y + 1 < self->height && rows[2][x] != id)
            || (x > 0 && rows[1][x - 1] != id)
            || (x + 1 < w && rows[1][x + 1] != id));
        outline[x] = edge ? instance_overlay_class (self, id) : 0;
      }
      stitch_overlay_push_outline_row (self->overlay, y, outline);
    }
  }
  for (x = 0; x < 3; x++)
    g_free (rows[x]);
  g_free (outline);
  g_free (png_row);
  g_clear_pointer (&self->inst_spool, stitch_spool_free);
  return ok;
}

/* An instance label patch: its objects are merged into the global map. */
static gboolean
render_instances (GstStitchSink * self, GstBuffer * buffer,
    const GstWsiTileMeta * m, gint64 px, gint64 py)
{
  StitchInstancePatch p = { 0 };
  GstVideoFrame frame;
  GstVideoRegionOfInterestMeta *roi;
  gpointer state = NULL;
  GError *err = NULL;
  guint max_label = 0, n_det, i;
  gint k0, k1, j, clipped = 0;
  gboolean first_col = m->col == 0, first_row = m->row == 0;
  gboolean last_col = m->grid_cols > 0 && m->col == m->grid_cols - 1;
  gboolean last_row = m->grid_rows > 0 && m->row == m->grid_rows - 1;

  /* rows above this patch are final (raster order of grid rows) */
  if (!stitch_instances_advance (self->inst, py, &err)) {
    instance_error (self, err);
    return FALSE;
  }
  if (!gst_video_frame_map (&frame, &self->info, buffer, GST_MAP_READ)) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT,
        ("A GRAY16_LE %dx%d buffer of %" G_GSIZE_FORMAT " bytes does not "
            "hold the frame its caps describe.", self->frame_width,
            self->frame_height, gst_buffer_get_size (buffer)), (NULL));
    return FALSE;
  }
  p.labels = GST_VIDEO_FRAME_PLANE_DATA (&frame, 0);
  p.stride = GST_VIDEO_FRAME_PLANE_STRIDE (&frame, 0);
  p.width = m->width;
  p.height = m->height;
  p.px = px;
  p.py = py;
  wsi_metrics_crop_span (m->width, 0, m->pad_left, m->valid_width, px,
      self->width, TRUE, TRUE, &p.vx0, &p.vx1);
  wsi_metrics_crop_span (m->height, 0, m->pad_top, m->valid_height, py,
      self->height, TRUE, TRUE, &p.vy0, &p.vy1);
  wsi_metrics_crop_span (m->width, m->overlap, m->pad_left, m->valid_width,
      px, self->width, first_col, last_col, &k0, &k1);
  p.cx0 = k0;
  p.cx1 = k1;
  wsi_metrics_crop_span (m->height, m->overlap, m->pad_top, m->valid_height,
      py, self->height, first_row, last_row, &k0, &k1);
  p.cy0 = k0;
  p.cy1 = k1;

  /* the detections of the patch, by instance id */
  for (j = p.vy0; j < p.vy1; j++) {
    const guint8 *r = p.labels + (gsize) j * p.stride;
    gint i2;
    for (i2 = p.vx0; i2 < p.vx1; i2++)
      max_label = MAX (max_label, (guint) (r[2 * i2] | (r[2 * i2 + 1] << 8)));
  }
  while ((roi = (GstVideoRegionOfInterestMeta *)
          gst_buffer_iterate_meta_filtered (buffer, &state,
              GST_VIDEO_REGION_OF_INTEREST_META_API_TYPE))) {
    GstStructure *ps = gst_video_region_of_interest_meta_get_param (roi,
        GST_WSI_DETECTION_PARAM);
    guint id = 0;
    if (ps && (!gst_structure_get_uint (ps, "instance-id", &id) || id == 0
            || id > GST_WSI_DETECTION_MAX_ID)) {
      GST_ELEMENT_ERROR (self, STREAM, DECODE,
          ("A detection of patch (col %d, row %d) names instance id %u: "
              "instance label patches are 16-bit, ids are 1..%u.", m->col,
              m->row, id, GST_WSI_DETECTION_MAX_ID), ("%" GST_PTR_FORMAT, ps));
      gst_video_frame_unmap (&frame);
      return FALSE;
    }
  }
  if (max_label + 1 > self->n_table) {
    self->n_table = MAX (max_label + 1, 256);
    self->det_table = g_renew (GstWsiDetection, self->det_table,
        self->n_table);
    self->inst_info = g_renew (StitchInstanceInfo, self->inst_info,
        self->n_table);
  }
  n_det = gst_wsi_detection_fill_table (buffer, self->det_table,
      max_label + 1, NULL);
  for (i = 0; i <= max_label; i++) {
    self->inst_info[i].class_id = self->det_table[i].class_id;
    self->inst_info[i].score = self->det_table[i].score;
  }
  p.info = self->inst_info;
  p.n_info = max_label + 1;
  GST_LOG_OBJECT (self, "patch (%d, %d): labels up to %u, %u detections",
      m->col, m->row, max_label, n_det);

  if (!stitch_instances_add_patch (self->inst, &p, &clipped, &err)) {
    gst_video_frame_unmap (&frame);
    instance_error (self, err);
    return FALSE;
  }
  gst_video_frame_unmap (&frame);
  if (clipped > 0 && !self->order_warned) {
    GST_ELEMENT_WARNING (self, STREAM, FAILED,
        ("Tiles out of order: tile (col %d, row %d) reaches rows already "
            "written; those pixels are dropped.", m->col, m->row), (NULL));
    self->order_warned = TRUE;
  }
  self->extent = MAX (self->extent, stitch_instances_get_extent (self->inst));
  GST_OBJECT_LOCK (self);
  self->max_band_rows = MAX (self->max_band_rows,
      stitch_instances_get_peak_rows (self->inst));
  GST_OBJECT_UNLOCK (self);
  return TRUE;
}

static gboolean
image_begin (GstStitchSink * self, const GstWsiTileMeta * m)
{
  GError *err = NULL;
  gchar *location, *overlay_location, *prob_location, *geojson_location;
  const gchar *failed_location = NULL;
  gboolean ok;
  gint level;
  guint max_size;
  StitchGeoJsonParams gp = { 0 };

  GST_OBJECT_LOCK (self);
  location = g_strdup (self->location);
  overlay_location = g_strdup (self->overlay_location);
  prob_location = g_strdup (self->probability_location);
  geojson_location = g_strdup (self->geojson_location);
  level = self->compression_level;
  max_size = self->overlay_max_size;
  self->prob_class_img = self->probability_class;
  gp.detection = self->geojson_object_type == GST_STITCH_SINK_OBJECT_DETECTION;
  gp.min_area = self->geojson_min_area;
  gp.boundary_class = self->geojson_boundary_class;
  gp.boundary_grow = self->geojson_boundary_grow;
  self->instance_img = self->n_classes == 0 && self->channels == 1
      && self->bytes_per_sample == 2
      && (self->instances == GST_STITCH_SINK_INSTANCES_ON
      || (self->instances == GST_STITCH_SINK_INSTANCES_AUTO
          && self->instances_in_band));
  GST_OBJECT_UNLOCK (self);
  if (self->instance_img) {
    gp.boundary_class = -1;     /* objects are ids, not classes */
    gp.describe = instance_describe;
    gp.describe_data = self;
  }
  /* for tests: a smaller tracing limit than 2^32 pixels */
  if (g_getenv ("STITCHSINK_MAX_TRACE_PIXELS"))
    gp.max_trace_pixels = g_ascii_strtoull (g_getenv
        ("STITCHSINK_MAX_TRACE_PIXELS"), NULL, 10);

  ok = expand_extra_location (self, location, m, &self->out_location)
      && expand_extra_location (self, overlay_location, m,
      &self->out_overlay_location)
      && expand_extra_location (self, prob_location, m,
      &self->out_prob_location)
      && expand_extra_location (self, geojson_location, m,
      &self->out_geojson_location);
  g_free (location);
  g_free (overlay_location);
  g_free (prob_location);
  g_free (geojson_location);
  if (!ok)
    return FALSE;

  self->slide = g_strdup (m->slide ? m->slide : "");
  self->region_x = m->region_x;
  self->region_y = m->region_y;
  self->region_w0 = m->region_width;
  self->region_h0 = m->region_height;
  self->level = m->level;
  self->downsample = m->downsample;
  self->mpp_x = m->mpp_x;
  self->mpp_y = m->mpp_y;
  self->grid_cols = m->grid_cols;
  self->grid_rows = m->grid_rows;
  self->channels_img = self->channels;
  self->bytes_per_sample_img = self->bytes_per_sample;
  self->n_classes_img = self->n_classes;
  gst_wsi_tile_meta_region_level_size (m, &self->width, &self->height);
  if (m->region_height <= 0)
    self->height = 0;
  if (self->width <= 0 || self->width > WSI_MAX_REGION_WIDTH
      || self->height > MAX_REGION_HEIGHT) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT,
        ("tile metadata describes a %" G_GINT64_FORMAT " x %" G_GINT64_FORMAT
            " region at downsample %g: stitchsink needs a known region width "
            "of 1..%" G_GINT64_FORMAT " and a height up to %d level pixels", self->width,
            self->height, m->downsample, WSI_MAX_REGION_WIDTH, MAX_REGION_HEIGHT),
        (NULL));
    return FALSE;
  }
  self->row_bytes = (gsize) self->width * self->bpp;
  self->bg_row = g_try_malloc (self->row_bytes);
  if (self->n_classes_img > 0) {
    self->label_row = g_try_malloc (self->width);
    self->prob_row = g_try_malloc0 (self->width);
  }
  if (self->out_geojson_location)
    self->label32_row = g_try_new (guint32, self->width);
  if (!self->bg_row || (self->n_classes_img > 0 && (!self->label_row
              || !self->prob_row))
      || (self->out_geojson_location && !self->label32_row)) {
    GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
        ("Not enough memory for a %" G_GSIZE_FORMAT " byte row.", self->row_bytes),
        (NULL));
    return FALSE;
  }
  fill_background (self, self->bg_row);

  clean_stale (self, self->out_location);
  clean_stale (self, self->out_overlay_location);
  clean_stale (self, self->out_prob_location);
  clean_stale (self, self->out_geojson_location);

  /* output PNGs are labels (1 channel, 8 bit) for probability input */
  failed_location = self->out_location;
  self->png = stitch_png_new (self->out_location, &err);
  if (self->png && self->out_prob_location) {
    failed_location = self->out_prob_location;
    self->prob_png = stitch_png_new (self->out_prob_location, &err);
  }
  if (!err && self->out_geojson_location) {
    failed_location = self->out_geojson_location;
    gp.region_x = self->region_x;
    gp.region_y = self->region_y;
    gp.downsample = self->downsample;
    gp.mpp_x = self->mpp_x;
    gp.mpp_y = self->mpp_y;
    gp.style = &self->style;
    self->geojson = stitch_geojson_new (self->out_geojson_location,
        self->width, &gp, &err);
  }
  if (err) {
    GST_ELEMENT_ERROR (self, RESOURCE, OPEN_WRITE,
        ("Could not open '%s' for writing.", failed_location),
        ("%s", err->message));
    g_error_free (err);
    return FALSE;
  }
  if (self->instance_img) {
    self->inst = stitch_instances_new (self->width, instance_row, self);
    self->inst_spool = stitch_spool_new (self->out_location, 0, &err);
    if (!self->inst_spool)
      goto write_failed;
  } else if (self->height > 0) {
    if (!stitch_png_begin (self->png, (guint32) self->width,
            (guint32) self->height, self->channels_img,
            8 * self->bytes_per_sample_img, level, &err)
        || (self->prob_png && !stitch_png_begin (self->prob_png,
                (guint32) self->width, (guint32) self->height, 1, 8, level,
                &err)))
      goto write_failed;
    if (self->out_overlay_location)
      self->overlay = stitch_overlay_new (self->width, self->height,
          self->channels_img, self->bytes_per_sample_img, max_size);
  } else {
    self->spool = stitch_spool_new (self->out_location,
        (gsize) self->width * self->channels_img * self->bytes_per_sample_img,
        &err);
    if (!self->spool)
      goto write_failed;
    if (self->prob_png) {
      self->prob_spool = stitch_spool_new (self->out_prob_location,
          (gsize) self->width, &err);
      if (!self->prob_spool)
        goto write_failed;
    }
  }
  self->active = TRUE;
  GST_INFO_OBJECT (self, "image %u: %" G_GINT64_FORMAT " x %" G_GINT64_FORMAT
      " (level %d, downsample %g) of '%s' -> %s", self->image_index,
      self->width, self->height, self->level, self->downsample, self->slide,
      self->out_location);
  return TRUE;

write_failed:
  GST_ELEMENT_ERROR (self, RESOURCE, WRITE,
      ("Could not write '%s'.", self->out_location), ("%s", err->message));
  g_error_free (err);
  return FALSE;
}

/* Writes the remaining rows and every output; moves them into place. */
static gboolean
image_finish (GstStitchSink * self)
{
  GError *err = NULL;
  StitchOverlaySource source;
  const gchar *failed_location = NULL;
  guint max_size;
  gint level;
  guint64 expected;
  gboolean partial;
  gchar *text = NULL;           /* partial: what the outputs say */

  GST_OBJECT_LOCK (self);
  max_size = self->overlay_max_size;
  level = self->compression_level;
  GST_OBJECT_UNLOCK (self);

  if (self->instance_img) {
    if (self->height == 0)
      self->height = self->extent;
    if (self->height <= 0) {
      GST_ELEMENT_ERROR (self, STREAM, FAILED,
          ("No tile had pixels inside the region: nothing to write to '%s'.",
              self->out_location), (NULL));
      return FALSE;
    }
    if (!instance_outputs (self, level, max_size, &err)) {
      instance_error (self, err);
      return FALSE;
    }
  } else if (self->height > 0) {
    if (!band_flush (self, self->height, &err))
      goto write_failed;
  } else {
    /* Unknown height: the image ends at the lowest row any tile reached. */
    gint64 height, y;
    guint8 *row, *prob_row = NULL;

    if (!band_flush (self, self->band_top + self->band_count, &err))
      goto write_failed;
    height = MAX (self->extent, self->band_top);
    if (height <= 0) {
      GST_ELEMENT_ERROR (self, STREAM, FAILED,
          ("No tile had pixels inside the region: nothing to write to '%s'.",
              self->out_location), (NULL));
      return FALSE;
    }
    self->height = height;
    if (!band_flush (self, height, &err))
      goto write_failed;
    if (!stitch_png_begin (self->png, (guint32) self->width, (guint32) height,
            self->channels_img, 8 * self->bytes_per_sample_img, level, &err)
        || (self->prob_png && !stitch_png_begin (self->prob_png,
                (guint32) self->width, (guint32) height, 1, 8, level, &err)))
      goto write_failed;
    if (self->out_overlay_location)
      self->overlay = stitch_overlay_new (self->width, height,
          self->channels_img, self->bytes_per_sample_img, max_size);
    if (!stitch_spool_rewind (self->spool, &err)
        || (self->prob_spool && !stitch_spool_rewind (self->prob_spool,
                &err)))
      goto write_failed;
    row = g_malloc ((gsize) self->width * self->channels_img *
        self->bytes_per_sample_img);
    if (self->prob_spool)
      prob_row = g_malloc (self->width);
    for (y = 0; y < height; y++) {
      if (!stitch_spool_read_row (self->spool, row, &err)
          || !stitch_png_write_row (self->png, row, &err)
          || (prob_row && (!stitch_spool_read_row (self->prob_spool, prob_row,
                      &err)
                  || !stitch_png_write_row (self->prob_png, prob_row,
                      &err)))) {
        g_free (row);
        g_free (prob_row);
        goto write_failed;
      }
      if (self->overlay)
        stitch_overlay_push_row (self->overlay, y, row);
    }
    g_free (row);
    g_free (prob_row);
    g_clear_pointer (&self->spool, stitch_spool_free);
    g_clear_pointer (&self->prob_spool, stitch_spool_free);
  }

  /* EOS (or the next slide) before the last grid position: what arrived is
   * written, marked partial */
  expected = grid_expected (self);
  /* patchify says so; else (no tissue dropping upstream) the grid tells */
  partial = self->incomplete || (!self->measured && expected > 0
      && self->grid_done < expected);
  if (partial) {
    text = g_strdup_printf ("stream ended after %" G_GUINT64_FORMAT
        " of %" G_GUINT64_FORMAT " grid positions (%" G_GUINT64_FORMAT
        " patches received); the rest is background", self->grid_done,
        expected, self->patches);
    stitch_png_set_text (self->png, PARTIAL_KEY, text);
    if (self->prob_png)
      stitch_png_set_text (self->prob_png, PARTIAL_KEY, text);
    if (self->geojson)
      stitch_geojson_set_partial (self->geojson, TRUE);
    GST_ELEMENT_WARNING (self, STREAM, FAILED,
        ("The stream ended before the whole region was received: '%s' is "
            "partial (%" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT " grid "
            "positions).", self->out_location, self->grid_done, expected),
        ("%s", text));
  }

  /* the main output first: an optional one never costs it */
  if (!stitch_png_commit (self->png, &err)) {
    self->png = NULL;
    goto write_failed;
  }
  self->png = NULL;

  if (self->prob_png) {
    gboolean ok = stitch_png_commit (self->prob_png, &err);
    self->prob_png = NULL;
    if (!ok)
      optional_output_failed (self, "probability map",
          self->out_prob_location, err);
    err = NULL;
  }

  if (self->geojson) {
    gboolean ok = stitch_geojson_end (self->geojson, &err);
    if (ok) {
      const gchar *why = NULL;
      guint64 skipped = stitch_geojson_get_skipped (self->geojson, &why);
      GST_INFO_OBJECT (self, "%s: %" G_GUINT64_FORMAT " features, peak %"
          G_GUINT64_FORMAT " runs held, %" G_GUINT64_FORMAT " boundary "
          "pixels reached no object (dropped)", self->out_geojson_location,
          stitch_geojson_get_features (self->geojson),
          stitch_geojson_get_peak_runs (self->geojson),
          stitch_geojson_get_orphan_pixels (self->geojson));
      if (skipped > 0)
        GST_ELEMENT_WARNING (self, RESOURCE, NO_SPACE_LEFT,
            ("%" G_GUINT64_FORMAT " region%s left out of '%s': too large to "
                "trace (the size limit of one object's bounding box).",
                skipped, skipped > 1 ? "s" : "", self->out_geojson_location),
            ("first: %s", why));
      ok = stitch_geojson_commit (self->geojson, &err);
    } else {
      stitch_geojson_abort (self->geojson);
    }
    self->geojson = NULL;
    if (!ok)
      optional_output_failed (self, "GeoJSON", self->out_geojson_location,
          err);
    err = NULL;
  }

  if (self->overlay) {
    source.slide = self->slide;
    source.region_x = self->region_x;
    source.region_y = self->region_y;
    source.downsample = self->downsample;
    source.text_key = text ? PARTIAL_KEY : NULL;
    source.text_value = text;
    if (!stitch_overlay_write (self->overlay, self->out_overlay_location,
            &self->style, &source, &err))
      optional_output_failed (self, "overlay", self->out_overlay_location,
          err);
    err = NULL;
  }

  if (partial && expected > 0)
    self->fraction = (gdouble) self->grid_done / (gdouble) expected;
  else if (partial)
    self->fraction = self->height > 0 ? (gdouble) self->extent /
        self->height : -1.0;
  else
    self->fraction = 1.0;
  g_free (text);
  post_progress (self, TRUE, partial);
  GST_INFO_OBJECT (self, "wrote %s (%" G_GINT64_FORMAT " x %" G_GINT64_FORMAT
      ", %" G_GUINT64_FORMAT " patches, peak band %" G_GUINT64_FORMAT
      " rows%s)", self->out_location, self->width, self->height, self->patches,
      self->max_band_rows, partial ? ", partial" : "");
  GST_OBJECT_LOCK (self);
  self->images_written++;
  GST_OBJECT_UNLOCK (self);
  image_reset (self);
  self->image_index++;
  return TRUE;

write_failed:
  GST_ELEMENT_ERROR (self, RESOURCE, WRITE,
      ("Could not write '%s'.", failed_location ? failed_location :
          self->out_location), ("%s", err->message));
  g_error_free (err);
  g_free (text);
  return FALSE;
}

/* ---- tiles ---- */

static gboolean
same_image (GstStitchSink * self, const GstWsiTileMeta * m)
{
  return g_strcmp0 (self->slide, m->slide ? m->slide : "") == 0
      && self->region_x == m->region_x && self->region_y == m->region_y
      && self->region_w0 == m->region_width
      && self->region_h0 == m->region_height;
}

/* Checks fields the stitcher relies on; the meta comes from upstream and
 * is not trusted. */
static gboolean
validate_meta (GstStitchSink * self, const GstWsiTileMeta * m)
{
  const gchar *problem = NULL;

  if (!(m->downsample > 0) || !isfinite (m->downsample) || m->downsample > 1e6)
    problem = "downsample is not a positive number";
  else if (m->region_width <= 0)
    problem = "region width is not set";
  else if (m->region_height < 0)
    problem = "region height is negative";
  else if (m->overlap < 0 || m->overlap >= MIN (m->width, m->height))
    problem = "overlap is negative or not smaller than the tile";
  else if (m->pad_left < 0 || m->pad_top < 0 || m->valid_width < 0
      || m->valid_height < 0)
    problem = "padding or valid size is negative";
  else if (fabs ((gdouble) m->x) > 1e15 || fabs ((gdouble) m->y) > 1e15
      || fabs ((gdouble) m->region_x) > 1e15
      || fabs ((gdouble) m->region_y) > 1e15
      || m->region_width > (gint64) 1e15 || m->region_height > (gint64) 1e15)
    problem = "coordinates are out of range";
  if (problem) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT,
        ("Invalid tile metadata (frame %" G_GUINT64_FORMAT ", col %d, row %d):"
            " %s.", m->frame, m->col, m->row, problem), (NULL));
    return FALSE;
  }
  return TRUE;
}

/* Adds tile columns [x0, x1) x rows [y0, y1) of a probability tensor at
 * (px, py) into the band. */
static gboolean
render_probabilities (GstStitchSink * self, GstBuffer * buffer, gint64 px,
    gint64 py, gint64 x0, gint64 x1, gint64 y0, gint64 y1)
{
  const gint nc = self->n_classes, w = self->frame_width;
  const gsize need = (gsize) w * self->frame_height * nc * sizeof (gfloat);
  const gsize stride = STITCH_BLEND_STRIDE (nc);
  GstMapInfo map;
  const gfloat *data;
  gpointer copy = NULL;
  gint64 y;

  if (!gst_buffer_map (buffer, &map, GST_MAP_READ)) {
    GST_ELEMENT_ERROR (self, RESOURCE, READ, ("Could not map buffer."),
        (NULL));
    return FALSE;
  }
  if (map.size < need) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT,
        ("Probability tensor holds %" G_GSIZE_FORMAT " bytes but dimensions "
            "%d:%d:%d:1 need %" G_GSIZE_FORMAT ".", map.size, nc, w,
            self->frame_height, need), (NULL));
    gst_buffer_unmap (buffer, &map);
    return FALSE;
  }
  data = (const gfloat *) map.data;
  if (((guintptr) map.data) % G_ALIGNOF (gfloat))
    data = copy = g_memdup2 (map.data, need);
  for (y = y0; y < y1; y++) {
    gfloat *dst = (gfloat *) self->band[py + y - self->band_top] +
        (gsize) (px + x0) * stride;
    stitch_blend_accumulate (self->blend_mode, dst,
        data + ((gsize) y * w + x0) * nc, self->weight_x + x0,
        self->weight_y[y], (gint) (x1 - x0), nc);
  }
  g_free (copy);
  gst_buffer_unmap (buffer, &map);
  return TRUE;
}

static GstFlowReturn render_tile (GstStitchSink * self, GstBuffer * buffer);

/* After an error the image in progress is discarded (its temp files
 * removed), also when EOS comes anyway. */
static GstFlowReturn
gst_stitch_sink_render (GstBaseSink * sink, GstBuffer * buffer)
{
  GstStitchSink *self = GST_STITCH_SINK (sink);
  GstFlowReturn ret = render_tile (self, buffer);

  if (ret != GST_FLOW_OK) {
    if (self->active)
      GST_INFO_OBJECT (self, "error: discarding %s", self->out_location);
    image_reset (self);
  }
  return ret;
}

static GstFlowReturn
render_tile (GstStitchSink * self, GstBuffer * buffer)
{
  GstWsiTileMeta *meta = gst_buffer_get_wsi_tile_meta (buffer);
  GstWsiTileMeta m;
  GstVideoFrame frame;
  GError *err = NULL;
  gint64 px, py, x0, x1, y0, y1, y;
  gboolean wrote_rows, first_col, last_col, first_row, last_row, blend;
  gint k0, k1;
  guint interval;

  if (!meta) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT,
        ("buffer has no tile metadata; put slidesrc or patchify upstream"),
        ("buffer %" GST_PTR_FORMAT " carries no GstWsiTileMeta", buffer));
    return GST_FLOW_ERROR;
  }
  if (!self->negotiated) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT, (NULL),
        ("buffer before caps"));
    return GST_FLOW_NOT_NEGOTIATED;
  }

  /* A copy adjusted to the negotiated size (a videoscale keeps the meta). */
  m = *meta;
  gst_wsi_tile_meta_fit_to_size (&m, self->frame_width, self->frame_height);
  if (m.width != self->frame_width || m.height != self->frame_height) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT,
        ("Tile metadata says %dx%d but the frame is %dx%d.", m.width, m.height,
            self->frame_width, self->frame_height), (NULL));
    return GST_FLOW_ERROR;
  }
  if (!validate_meta (self, &m))
    return GST_FLOW_ERROR;

  if (self->active && !same_image (self, &m)) {
    gchar *location;
    gboolean pattern;

    GST_OBJECT_LOCK (self);
    location = g_strdup (self->location);
    GST_OBJECT_UNLOCK (self);
    pattern = location_has_pattern (location);
    g_free (location);
    if (!pattern) {
      GST_ELEMENT_ERROR (self, STREAM, FAILED,
          ("A tile of another slide or region ('%s') arrived while stitching "
              "'%s'. Use a location pattern with %%d or %%s to write one "
              "file per slide.", m.slide ? m.slide : "", self->slide), (NULL));
      return GST_FLOW_ERROR;
    }
    GST_INFO_OBJECT (self, "new slide/region '%s': finishing %s", m.slide,
        self->out_location);
    if (!image_finish (self))
      return GST_FLOW_ERROR;
  }

  if (!self->active) {
    if (!image_begin (self, &m))
      return GST_FLOW_ERROR;
  } else if (m.level != self->level
      || fabs (m.downsample - self->downsample) > 1e-6 * self->downsample) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT,
        ("Tile level changed mid-stream (level %d, downsample %g; the image "
            "is at level %d, downsample %g): one output has one level.",
            m.level, m.downsample, self->level, self->downsample), (NULL));
    return GST_FLOW_ERROR;
  } else if (self->n_classes != self->n_classes_img) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT,
        ("Number of classes changed mid-image from %d to %d (0: labels or "
            "RGB); one image takes one kind of input.", self->n_classes_img,
            self->n_classes), (NULL));
    return GST_FLOW_ERROR;
  } else if (self->channels != self->channels_img
      || self->bytes_per_sample != self->bytes_per_sample_img) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT,
        ("Pixel format changed mid-image to %s.",
            gst_video_format_to_string (GST_VIDEO_INFO_FORMAT (&self->info))),
        (NULL));
    return GST_FLOW_ERROR;
  }
  self->any_tile = TRUE;

  /* Tile origin in the stitched image, level pixels. */
  px = llround ((m.x - self->region_x) / self->downsample);
  py = llround ((m.y - self->region_y) / self->downsample);

  /* Rows above this tile are final (raster order of grid rows). */
  if (self->height == 0 && py > MAX_REGION_HEIGHT) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT,
        ("Tile at row %" G_GINT64_FORMAT " is beyond PNG's height limit.", py),
        (NULL));
    return GST_FLOW_ERROR;
  }
  if (self->instance_img) {
    if (!render_instances (self, buffer, &m, px, py))
      return GST_FLOW_ERROR;
    wrote_rows = FALSE;
    goto done;
  }
  wrote_rows = py > self->band_top && (self->height == 0
      || self->band_top < self->height);
  if (!band_flush (self, py, &err)) {
    GST_ELEMENT_ERROR (self, RESOURCE, WRITE,
        ("Could not write '%s'.", self->out_location), ("%s", err->message));
    g_error_free (err);
    return GST_FLOW_ERROR;
  }

  first_col = m.col == 0;
  first_row = m.row == 0;
  last_col = m.grid_cols > 0 && m.col == m.grid_cols - 1;
  last_row = m.grid_rows > 0 && m.row == m.grid_rows - 1;
  /* the centre crop segeval and training validation count too; blending
   * keeps every valid pixel inside the region */
  blend = self->blend_mode != STITCH_BLEND_CROP;
  wsi_metrics_crop_span (m.width, blend ? 0 : m.overlap, m.pad_left,
      m.valid_width, px, self->width, blend || first_col, blend || last_col,
      &k0, &k1);
  x0 = k0;
  x1 = k1;
  wsi_metrics_crop_span (m.height, blend ? 0 : m.overlap, m.pad_top,
      m.valid_height, py, self->height, blend || first_row, blend || last_row,
      &k0, &k1);
  y0 = k0;
  y1 = k1;

  if (py + y0 < self->band_top && y1 > y0) {
    if (!self->order_warned)
      GST_ELEMENT_WARNING (self, STREAM, FAILED,
          ("Tiles out of order: tile (col %d, row %d) reaches rows already "
              "written; those pixels are dropped.", m.col, m.row),
          ("rows %" G_GINT64_FORMAT " < %" G_GINT64_FORMAT, py + y0,
              self->band_top));
    self->order_warned = TRUE;
    y0 = self->band_top - py;
  }

  if (x1 > x0 && y1 > y0) {
    if (!band_extend (self, py + y1)) {
      GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
          ("Not enough memory for the stitching band (%" G_GSIZE_FORMAT
              " bytes a row).", self->row_bytes), (NULL));
      return GST_FLOW_ERROR;
    }
    if (self->n_classes > 0) {
      if (!render_probabilities (self, buffer, px, py, x0, x1, y0, y1))
        return GST_FLOW_ERROR;
      self->extent = MAX (self->extent, py + y1);
      goto done;
    }
    /* strides from the GstVideoMeta if any, else GstVideoInfo's (RGB and
     * GRAY rows 4-byte aligned) */
    if (!gst_video_frame_map (&frame, &self->info, buffer, GST_MAP_READ)) {
      GstVideoMeta *vm = gst_buffer_get_video_meta (buffer);
      GST_ELEMENT_ERROR (self, STREAM, FORMAT,
          ("A %s %dx%d buffer of %" G_GSIZE_FORMAT " bytes does not hold the "
              "frame its caps describe (%" G_GSIZE_FORMAT " bytes, row stride "
              "%d).", gst_video_format_to_string (GST_VIDEO_INFO_FORMAT
                  (&self->info)), self->frame_width, self->frame_height,
              gst_buffer_get_size (buffer), GST_VIDEO_INFO_SIZE (&self->info),
              vm ? vm->stride[0] : GST_VIDEO_INFO_PLANE_STRIDE (&self->info,
                  0)), ("rows must be padded to the stride GstVideoInfo "
              "gives, or the buffer must carry a GstVideoMeta"));
      return GST_FLOW_ERROR;
    }
    for (y = y0; y < y1; y++) {
      const guint8 *src = (const guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&frame,
          0) + y * GST_VIDEO_FRAME_PLANE_STRIDE (&frame, 0) + x0 * self->bpp;
      guint8 *dst = self->band[py + y - self->band_top] + (px + x0) * self->bpp;
      memcpy (dst, src, (x1 - x0) * self->bpp);
    }
    gst_video_frame_unmap (&frame);
    self->extent = MAX (self->extent, py + y1);
  }

done:
  self->patches++;
  self->patches_since_message++;
  /* kept monotone: a serpentine producer walks columns backwards */
  if (m.tissue_fraction >= 0)
    self->measured = TRUE;
  if (m.grid_cols > 0 && m.grid_rows > 0) {
    if (m.row >= 0 && m.col >= 0)
      self->grid_done = MAX (self->grid_done, MIN ((guint64) m.row *
              m.grid_cols + m.col + 1, grid_expected (self)));
    self->fraction = MAX (self->fraction,
        CLAMP (((gdouble) m.row * m.grid_cols + m.col + 1) /
            ((gdouble) m.grid_cols * m.grid_rows), 0.0, 1.0));
  }
  else if (self->height > 0)
    self->fraction = CLAMP ((gdouble) self->band_top / self->height, 0.0, 1.0);
  else
    self->fraction = -1.0;

  GST_OBJECT_LOCK (self);
  interval = self->progress_interval;
  GST_OBJECT_UNLOCK (self);
  if (wrote_rows || (interval > 0 && self->patches_since_message >= interval))
    post_progress (self, FALSE, FALSE);

  return GST_FLOW_OK;
}

/* ---- base sink ---- */

/* Class names and colours sent in-band by the producer (a wsi-classes
 * event, gstwsiclasses.h) where the properties leave them unset (names and
 * colours are taken independently). */
static void
style_from_event (GstStitchSink * self, GstEvent * event)
{
  gchar **names;
  guint32 *colors;
  guint i, n;

  if (!gst_wsi_classes_event_parse (event, &names, &colors, &n)) {
    GST_WARNING_OBJECT (self, "malformed %" GST_PTR_FORMAT, event);
    return;
  }
  if (!self->user_names) {
    g_strfreev (self->style.names);
    self->style.names = names;
    self->style.n_names = n;
    for (i = 0; i < n; i++)
      g_strstrip (names[i]);
    names = NULL;
  }
  if (!self->user_colors && colors) {
    g_free (self->style.colors);
    self->style.colors = colors;
    self->style.n_colors = n;
    colors = NULL;
  }
  GST_INFO_OBJECT (self, "class names/colours in-band: %" GST_PTR_FORMAT,
      gst_event_get_structure (event));
  g_strfreev (names);
  g_free (colors);
}

static gboolean
gst_stitch_sink_set_caps (GstBaseSink * sink, GstCaps * caps)
{
  GstStitchSink *self = GST_STITCH_SINK (sink);
  GstStructure *s = gst_caps_get_structure (caps, 0);
  GstStitchSinkBlend blend;
  gdouble sigma;
  guint prob_class;
  gboolean want_prob, want_geojson;
  gint nc = 0, w = 0, h = 0, boundary, background;
  gint max_label;

  GST_OBJECT_LOCK (self);
  blend = self->blend;
  sigma = self->sigma;
  prob_class = self->probability_class;
  want_prob = self->probability_location != NULL;
  want_geojson = self->geojson_location != NULL;
  boundary = self->geojson_boundary_class;
  background = self->background;
  GST_OBJECT_UNLOCK (self);

  if (gst_structure_has_name (s, "other/tensors")) {
    if (!gst_wsi_tensor_structure_parse (s, &nc, &w, &h) || nc > MAX_CLASSES) {
      GST_ELEMENT_ERROR (self, STREAM, FORMAT,
          ("stitchsink takes one float32 probability tensor with dimensions "
              "C:W:H:1 (C classes interleaved per pixel, 1 <= C <= %d), as "
              "segment-fcn output=probabilities emits; got dimensions '%s'.",
              MAX_CLASSES, GST_STR_NULL (gst_structure_get_string (s,
                      "dimensions"))), ("caps %" GST_PTR_FORMAT, caps));
      return FALSE;
    }
    if (want_prob && (nc > 1 ? prob_class >= (guint) nc : prob_class > 1)) {
      GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
          ("probability-class=%u but the tensors have %d class%s.", prob_class,
              nc, nc > 1 ? "es" : " (a one-class map: 0 or 1)"), (NULL));
      return FALSE;
    }
    if (want_geojson && boundary > 0 && (nc < 2 || boundary >= nc)) {
      if (nc < 2)
        GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
            ("geojson-boundary-class=%d but the tensors are a one-class map "
                "(labels 0 and 1): there is no room for a boundary class.",
                boundary), (NULL));
      else
        GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
            ("geojson-boundary-class=%d but the tensors have %d classes "
                "(labels 0..%d).", boundary, nc, nc - 1), (NULL));
      return FALSE;
    }
    self->channels = 1;
    self->bytes_per_sample = 1;
    self->bpp = (gint) (STITCH_BLEND_STRIDE (nc) * sizeof (gfloat));
    gst_video_info_init (&self->info);
  } else {
    GstVideoInfo info;
    const GstVideoFormatInfo *finfo;

    if (!gst_video_info_from_caps (&info, caps)) {
      GST_ELEMENT_ERROR (self, STREAM, FORMAT, (NULL),
          ("invalid caps %" GST_PTR_FORMAT, caps));
      return FALSE;
    }
    finfo = info.finfo;
    if (blend != GST_STITCH_SINK_BLEND_CROP) {
      GST_ELEMENT_ERROR (self, STREAM, FORMAT,
          ("blend=%s needs probability tensors (segment-fcn "
              "output=probabilities); %s patches can only be cropped: use "
              "blend=crop.", blend == GST_STITCH_SINK_BLEND_AVERAGE ?
              "average" : "gaussian", gst_video_format_to_string
              (GST_VIDEO_INFO_FORMAT (&info))), (NULL));
      return FALSE;
    }
    if (want_prob) {
      GST_ELEMENT_ERROR (self, STREAM, FORMAT,
          ("probability-location needs probability tensors (segment-fcn "
              "output=probabilities), not %s patches.",
              gst_video_format_to_string (GST_VIDEO_INFO_FORMAT (&info))),
          (NULL));
      return FALSE;
    }
    if (want_geojson && GST_VIDEO_INFO_FORMAT (&info) == GST_VIDEO_FORMAT_RGB) {
      GST_ELEMENT_ERROR (self, STREAM, FORMAT,
          ("geojson-location needs labels (GRAY8/GRAY16_LE) or probability "
              "tensors, not RGB patches."), (NULL));
      return FALSE;
    }
    if (want_geojson && boundary > 255
        && GST_VIDEO_INFO_FORMAT (&info) == GST_VIDEO_FORMAT_GRAY8) {
      GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
          ("geojson-boundary-class=%d but GRAY8 labels stop at 255.",
              boundary), (NULL));
      return FALSE;
    }
    self->info = info;
    w = GST_VIDEO_INFO_WIDTH (&info);
    h = GST_VIDEO_INFO_HEIGHT (&info);
    self->channels = GST_VIDEO_FORMAT_INFO_N_COMPONENTS (finfo);
    self->bytes_per_sample = GST_VIDEO_FORMAT_INFO_DEPTH (finfo, 0) > 8 ? 2 : 1;
    self->bpp = self->channels * self->bytes_per_sample;
  }

  /* background is a label for labels and probabilities: it must fit */
  max_label = nc > 0 ? 255 : self->channels == 3 ? 0xffffff :
      self->bytes_per_sample == 2 ? 65535 : 255;
  if (background > max_label) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("background=%d but the %s output holds labels up to %d.", background,
            nc > 0 ? "label (from probabilities)" : self->bytes_per_sample ==
            2 ? "GRAY16" : "GRAY8", max_label), (NULL));
    return FALSE;
  }
  self->n_classes = nc;
  self->frame_width = w;
  self->frame_height = h;
  self->blend_mode = (StitchBlendMode) blend;
  g_free (self->weight_x);
  g_free (self->weight_y);
  self->weight_x = g_new (gfloat, w);
  self->weight_y = g_new (gfloat, h);
  stitch_blend_weights (self->blend_mode, w, sigma, self->weight_x);
  stitch_blend_weights (self->blend_mode, h, sigma, self->weight_y);
  self->negotiated = TRUE;
  return TRUE;
}

static void
style_clear (GstStitchSink * self)
{
  g_clear_pointer (&self->style.colors, g_free);
  g_clear_pointer (&self->style.names, g_strfreev);
  self->style.n_colors = self->style.n_names = 0;
}

static gboolean
gst_stitch_sink_start (GstBaseSink * sink)
{
  GstStitchSink *self = GST_STITCH_SINK (sink);
  GError *err = NULL;
  gchar *location, *overlay_location, *prob_location, *geojson_location;
  gchar *names, *colors;
  gboolean ok = TRUE;

  gst_wsi_set_running (GST_ELEMENT (self), &self->running, TRUE);
  GST_OBJECT_LOCK (self);
  location = g_strdup (self->location);
  overlay_location = g_strdup (self->overlay_location);
  prob_location = g_strdup (self->probability_location);
  geojson_location = g_strdup (self->geojson_location);
  names = g_strdup (self->class_names);
  colors = g_strdup (self->class_colors);
  self->style.opacity = self->overlay_opacity;
  self->max_band_rows = 0;
  self->images_written = 0;
  GST_OBJECT_UNLOCK (self);
  self->instances_in_band = FALSE;

  style_clear (self);
  if (!location || !*location) {
    GST_ELEMENT_ERROR (self, RESOURCE, NOT_FOUND,
        ("No output file name given: set the location property."), (NULL));
    ok = FALSE;
  } else if (!stitch_overlay_parse_colors (colors, &self->style.colors,
          &self->style.n_colors, &err)) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS, ("%s", err->message), (NULL));
    g_clear_error (&err);
    ok = FALSE;
  } else {
    /* every extra output follows location's pattern */
    const gchar *extra[3] = { overlay_location, prob_location,
      geojson_location
    };
    const gchar *extra_names[3] = { "overlay-location",
      "probability-location", "geojson-location"
    };
    gchar *t = expand_location (location, 0, NULL, NULL, &err);
    guint i;

    g_free (t);
    for (i = 0; i < G_N_ELEMENTS (extra) && !err; i++) {
      if (!extra[i])
        continue;
      t = expand_location (extra[i], 0, NULL, NULL, &err);
      g_free (t);
      if (!err && location_has_pattern (location)
          && !location_has_pattern (extra[i])) {
        GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
            ("location '%s' is a pattern but %s '%s' is not: give both a "
                "%%d or %%s.", location, extra_names[i], extra[i]), (NULL));
        ok = FALSE;
        break;
      }
    }
    if (err) {
      GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS, ("%s", err->message),
          (NULL));
      g_clear_error (&err);
      ok = FALSE;
    }
  }
  if (ok && names && *names) {
    guint i;
    self->style.names = g_strsplit (names, ",", -1);
    self->style.n_names = g_strv_length (self->style.names);
    for (i = 0; i < self->style.n_names; i++)
      g_strstrip (self->style.names[i]);
  }
  self->user_names = self->style.n_names > 0;
  self->user_colors = self->style.n_colors > 0;
  g_free (location);
  g_free (overlay_location);
  g_free (prob_location);
  g_free (geojson_location);
  g_free (names);
  g_free (colors);

  gst_video_info_init (&self->info);
  self->negotiated = FALSE;
  image_reset (self);
  self->image_index = 0;
  self->any_tile = FALSE;
  if (!ok)                      /* stop() is not called after a failed start */
    gst_wsi_set_running (GST_ELEMENT (self), &self->running, FALSE);
  return ok;
}

static gboolean
gst_stitch_sink_stop (GstBaseSink * sink)
{
  GstStitchSink *self = GST_STITCH_SINK (sink);

  if (self->active)
    GST_INFO_OBJECT (self, "stopped before EOS: discarding %s",
        self->out_location);
  image_reset (self);
  style_clear (self);
  gst_wsi_set_running (GST_ELEMENT (self), &self->running, FALSE);
  return TRUE;
}

/* Strided video (GstVideoMeta) is read as it comes. */
static gboolean
gst_stitch_sink_propose_allocation (GstBaseSink * sink, GstQuery * query)
{
  gst_query_add_allocation_meta (query, GST_VIDEO_META_API_TYPE, NULL);
  return TRUE;
}

static gboolean
gst_stitch_sink_event (GstBaseSink * sink, GstEvent * event)
{
  GstStitchSink *self = GST_STITCH_SINK (sink);

  switch (GST_EVENT_TYPE (event)) {
    case GST_EVENT_EOS:
      if (self->active) {
        if (!image_finish (self)) {
          image_reset (self);
          gst_event_unref (event);
          return FALSE;
        }
      } else if (!self->any_tile) {
        GST_ELEMENT_ERROR (self, STREAM, FAILED,
            ("Received no tiles: nothing to stitch into '%s'.",
                self->location), (NULL));
        gst_event_unref (event);
        return FALSE;
      }
      break;
    case GST_EVENT_CUSTOM_DOWNSTREAM:{
      const GstStructure *st = gst_event_get_structure (event);
      gint col, row;
      gint64 rx, ry, rw, rh;
      if (self->active && st && gst_structure_has_name (st,
              REGION_INCOMPLETE_EVENT)
          && g_strcmp0 (gst_structure_get_string (st, "slide") ?
              gst_structure_get_string (st, "slide") : "", self->slide) == 0
          && gst_structure_get_int64 (st, "region-x", &rx)
          && gst_structure_get_int64 (st, "region-y", &ry)
          && gst_structure_get_int64 (st, "region-width", &rw)
          && gst_structure_get_int64 (st, "region-height", &rh)
          && rx == self->region_x && ry == self->region_y
          && rw == self->region_w0 && rh == self->region_h0) {
        GST_INFO_OBJECT (self, "upstream: region incomplete, %s is partial",
            self->out_location);
        self->incomplete = TRUE;
      }
      if (self->active && st && gst_structure_has_name (st, TILE_SKIPPED_EVENT)
          && gst_structure_get_int (st, "col", &col)
          && gst_structure_get_int (st, "row", &row) && col >= 0 && row >= 0
          && grid_expected (self) > 0)
        self->grid_done = MAX (self->grid_done, MIN ((guint64) row *
                self->grid_cols + col + 1, grid_expected (self)));
      break;
    }
    case GST_EVENT_CUSTOM_DOWNSTREAM_STICKY:
      if (gst_event_has_name (event, GST_WSI_CLASSES_EVENT))
        style_from_event (self, event);
      if (gst_event_has_name (event, GST_WSI_INSTANCES_EVENT)) {
        GST_INFO_OBJECT (self, "in-band: GRAY16_LE patches are instance maps");
        self->instances_in_band = TRUE;
      }
      break;
    case GST_EVENT_FLUSH_STOP:
      if (self->active)
        GST_INFO_OBJECT (self, "flush: discarding %s", self->out_location);
      image_reset (self);
      self->any_tile = FALSE;
      break;
    default:
      break;
  }
  return GST_BASE_SINK_CLASS (gst_stitch_sink_parent_class)->event (sink,
      event);
}

/* ---- GObject ---- */

static void
gst_stitch_sink_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec)
{
  GstStitchSink *self = GST_STITCH_SINK (object);

  if (gst_wsi_property_refused (GST_ELEMENT (self), &self->running, pspec))
    return;
  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_POST_MESSAGES:
      self->post_messages = g_value_get_boolean (value);
      break;
    case PROP_INSTANCES:
      self->instances = g_value_get_enum (value);
      break;
    case PROP_LOCATION:
      g_free (self->location);
      self->location = g_value_dup_string (value);
      break;
    case PROP_OVERLAY_LOCATION:
      g_free (self->overlay_location);
      self->overlay_location = g_value_dup_string (value);
      if (self->overlay_location && !*self->overlay_location)
        g_clear_pointer (&self->overlay_location, g_free);
      break;
    case PROP_BLEND:
      self->blend = g_value_get_enum (value);
      break;
    case PROP_BACKGROUND:
      self->background = g_value_get_int (value);
      break;
    case PROP_COMPRESSION_LEVEL:
      self->compression_level = g_value_get_int (value);
      break;
    case PROP_OVERLAY_MAX_SIZE:
      self->overlay_max_size = g_value_get_uint (value);
      break;
    case PROP_OVERLAY_OPACITY:
      self->overlay_opacity = g_value_get_double (value);
      break;
    case PROP_CLASS_NAMES:
      g_free (self->class_names);
      self->class_names = g_value_dup_string (value);
      break;
    case PROP_CLASS_COLORS:
      g_free (self->class_colors);
      self->class_colors = g_value_dup_string (value);
      break;
    case PROP_PROGRESS_INTERVAL:
      self->progress_interval = g_value_get_uint (value);
      break;
    case PROP_SIGMA:
      self->sigma = g_value_get_double (value);
      break;
    case PROP_PROBABILITY_LOCATION:
      g_free (self->probability_location);
      self->probability_location = g_value_dup_string (value);
      if (self->probability_location && !*self->probability_location)
        g_clear_pointer (&self->probability_location, g_free);
      break;
    case PROP_PROBABILITY_CLASS:
      self->probability_class = g_value_get_uint (value);
      break;
    case PROP_GEOJSON_LOCATION:
      g_free (self->geojson_location);
      self->geojson_location = g_value_dup_string (value);
      if (self->geojson_location && !*self->geojson_location)
        g_clear_pointer (&self->geojson_location, g_free);
      break;
    case PROP_GEOJSON_OBJECT_TYPE:
      self->geojson_object_type = g_value_get_enum (value);
      break;
    case PROP_GEOJSON_MIN_AREA:
      self->geojson_min_area = g_value_get_uint64 (value);
      break;
    case PROP_GEOJSON_BOUNDARY_CLASS:
      self->geojson_boundary_class = g_value_get_int (value);
      break;
    case PROP_GEOJSON_BOUNDARY_GROW:
      self->geojson_boundary_grow = g_value_get_uint (value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_stitch_sink_get_property (GObject * object, guint prop_id,
    GValue * value, GParamSpec * pspec)
{
  GstStitchSink *self = GST_STITCH_SINK (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_LOCATION:
      g_value_set_string (value, self->location);
      break;
    case PROP_OVERLAY_LOCATION:
      g_value_set_string (value, self->overlay_location);
      break;
    case PROP_BLEND:
      g_value_set_enum (value, self->blend);
      break;
    case PROP_BACKGROUND:
      g_value_set_int (value, self->background);
      break;
    case PROP_COMPRESSION_LEVEL:
      g_value_set_int (value, self->compression_level);
      break;
    case PROP_OVERLAY_MAX_SIZE:
      g_value_set_uint (value, self->overlay_max_size);
      break;
    case PROP_OVERLAY_OPACITY:
      g_value_set_double (value, self->overlay_opacity);
      break;
    case PROP_CLASS_NAMES:
      g_value_set_string (value, self->class_names);
      break;
    case PROP_CLASS_COLORS:
      g_value_set_string (value, self->class_colors);
      break;
    case PROP_PROGRESS_INTERVAL:
      g_value_set_uint (value, self->progress_interval);
      break;
    case PROP_SIGMA:
      g_value_set_double (value, self->sigma);
      break;
    case PROP_PROBABILITY_LOCATION:
      g_value_set_string (value, self->probability_location);
      break;
    case PROP_PROBABILITY_CLASS:
      g_value_set_uint (value, self->probability_class);
      break;
    case PROP_GEOJSON_LOCATION:
      g_value_set_string (value, self->geojson_location);
      break;
    case PROP_GEOJSON_OBJECT_TYPE:
      g_value_set_enum (value, self->geojson_object_type);
      break;
    case PROP_GEOJSON_MIN_AREA:
      g_value_set_uint64 (value, self->geojson_min_area);
      break;
    case PROP_GEOJSON_BOUNDARY_CLASS:
      g_value_set_int (value, self->geojson_boundary_class);
      break;
    case PROP_GEOJSON_BOUNDARY_GROW:
      g_value_set_uint (value, self->geojson_boundary_grow);
      break;
    case PROP_MAX_BAND_ROWS:
      g_value_set_uint64 (value, self->max_band_rows);
      break;
    case PROP_IMAGES_WRITTEN:
      g_value_set_uint (value, self->images_written);
      break;
    case PROP_POST_MESSAGES:
      g_value_set_boolean (value, self->post_messages);
      break;
    case PROP_INSTANCES:
      g_value_set_enum (value, self->instances);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_stitch_sink_finalize (GObject * object)
{
  GstStitchSink *self = GST_STITCH_SINK (object);

  image_reset (self);
  style_clear (self);
  g_free (self->location);
  g_free (self->overlay_location);
  g_free (self->class_names);
  g_free (self->class_colors);
  g_free (self->probability_location);
  g_free (self->geojson_location);
  g_free (self->weight_x);
  g_free (self->weight_y);
  g_free (self->det_table);
  g_free (self->inst_info);
  G_OBJECT_CLASS (gst_stitch_sink_parent_class)->finalize (object);
}

static void
gst_stitch_sink_class_init (GstStitchSinkClass * klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstBaseSinkClass *basesink_class = GST_BASE_SINK_CLASS (klass);
  const GParamFlags rw = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
      GST_PARAM_MUTABLE_READY;

  GST_DEBUG_CATEGORY_INIT (stitchsink_debug, "stitchsink", 0,
      "stitches tile patches into a PNG");

  gobject_class->set_property = gst_stitch_sink_set_property;
  gobject_class->get_property = gst_stitch_sink_get_property;
  gobject_class->finalize = gst_stitch_sink_finalize;

  g_object_class_install_property (gobject_class, PROP_LOCATION,
      g_param_spec_string ("location", "Location",
          "Output PNG file. With several slides/regions in one stream, a "
          "pattern: %d (or %05d) is the image index, %s the slide name",
          NULL, rw));
  g_object_class_install_property (gobject_class, PROP_OVERLAY_LOCATION,
      g_param_spec_string ("overlay-location", "Overlay location",
          "Optional PNG picture: slide thumbnail with the labels blended in "
          "colour and a legend (same patterns as location)", NULL, rw));
  g_object_class_install_property (gobject_class, PROP_BLEND,
      g_param_spec_enum ("blend", "Blend",
          "How overlapping patches are combined (average and gaussian need "
          "probability tensors)", GST_TYPE_STITCH_SINK_BLEND,
          DEFAULT_BLEND, rw));
  g_object_class_install_property (gobject_class, PROP_BACKGROUND,
      g_param_spec_int ("background", "Background",
          "Fill for areas no patch covers: 0xRRGGBB for RGB, the label for "
          "GRAY8/GRAY16 and probabilities (at most 255, 65535 for GRAY16); "
          "-1 = white for RGB, 0 for labels",
          -1, 0xffffff, DEFAULT_BACKGROUND, rw));
  g_object_class_install_property (gobject_class, PROP_COMPRESSION_LEVEL,
      g_param_spec_int ("compression-level", "Compression level",
          "zlib compression level of the PNGs (0 none, 1 fastest, 9 smallest)",
          0, 9, DEFAULT_COMPRESSION_LEVEL, rw));
  g_object_class_install_property (gobject_class, PROP_OVERLAY_MAX_SIZE,
      g_param_spec_uint ("overlay-max-size", "Overlay max size",
          "Longest side of the overlay picture at most this many pixels "
          "(integer decimation of the stitched image)",
          16, 8192, DEFAULT_OVERLAY_MAX_SIZE, rw));
  g_object_class_install_property (gobject_class, PROP_OVERLAY_OPACITY,
      g_param_spec_double ("overlay-opacity", "Overlay opacity",
          "Opacity of the class colours over the slide thumbnail",
          0.0, 1.0, DEFAULT_OVERLAY_OPACITY, rw));
  g_object_class_install_property (gobject_class, PROP_CLASS_NAMES,
      g_param_spec_string ("class-names", "Class names",
          "Comma-separated names by label value, from 0, for the legend "
          "(e.g. \"background,tissue\"); unnamed classes are \"class N\"",
          NULL, rw));
  g_object_class_install_property (gobject_class, PROP_CLASS_COLORS,
      g_param_spec_string ("class-colors", "Class colours",
          "Comma-separated hex colours by label value, from 0 (e.g. "
          "\"000000,ff0000\"); others come from a built-in palette. Label 0 "
          "is always transparent", NULL, rw));
  g_object_class_install_property (gobject_class, PROP_PROGRESS_INTERVAL,
      g_param_spec_uint ("progress-interval", "Progress interval",
          "With post-messages: post a stitchsink-progress message every this "
          "many patches (and whenever a band of rows is written); 0 = on "
          "bands only", 0, G_MAXUINT, DEFAULT_PROGRESS_INTERVAL,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_PLAYING));
  g_object_class_install_property (gobject_class, PROP_POST_MESSAGES,
      gst_wsi_param_spec_post_messages ());
  g_object_class_install_property (gobject_class, PROP_SIGMA,
      g_param_spec_double ("sigma", "Gaussian sigma",
          "blend=gaussian: standard deviation of the patch weight in level "
          "pixels; 0 = patch side / 8 (per axis)", 0.0, 65536.0,
          DEFAULT_SIGMA, rw));
  g_object_class_install_property (gobject_class, PROP_PROBABILITY_LOCATION,
      g_param_spec_string ("probability-location", "Probability location",
          "Optional GRAY8 PNG of the blended probability of "
          "probability-class (0..255); probability input only (same "
          "patterns as location)", NULL, rw));
  g_object_class_install_property (gobject_class, PROP_PROBABILITY_CLASS,
      g_param_spec_uint ("probability-class", "Probability class",
          "Class whose probability probability-location shows (for a "
          "one-class map: 1 the map, 0 its complement)", 0, MAX_CLASSES - 1,
          DEFAULT_PROBABILITY_CLASS, rw));
  g_object_class_install_property (gobject_class, PROP_GEOJSON_LOCATION,
      g_param_spec_string ("geojson-location", "GeoJSON location",
          "Optional GeoJSON FeatureCollection of the per-class regions of "
          "the label image (QuPath convention, level-0 pixel coordinates; "
          "same patterns as location)", NULL, rw));
  g_object_class_install_property (gobject_class, PROP_GEOJSON_OBJECT_TYPE,
      g_param_spec_enum ("geojson-object-type", "GeoJSON object type",
          "QuPath objectType of the exported regions",
          GST_TYPE_STITCH_SINK_OBJECT_TYPE, DEFAULT_GEOJSON_OBJECT_TYPE, rw));
  g_object_class_install_property (gobject_class, PROP_GEOJSON_MIN_AREA,
      g_param_spec_uint64 ("geojson-min-area", "GeoJSON minimum area",
          "Regions smaller than this many level pixels are not exported",
          0, G_MAXUINT64, DEFAULT_GEOJSON_MIN_AREA, rw));
  g_object_class_install_property (gobject_class, PROP_GEOJSON_BOUNDARY_CLASS,
      g_param_spec_int ("geojson-boundary-class", "GeoJSON boundary class",
          "Label of an instance-boundary class (e.g. 2, the nuclei model's "
          "ring); -1 or 0 (the background label) = none. When set, that class is not exported: each "
          "region of another class is grown into the boundary pixels next to "
          "it (geojson-boundary-grow steps), so one polygon covers a nucleus "
          "and its ring and touching nuclei stay apart; boundary pixels no "
          "region reaches are dropped. The PNG outputs are unchanged",
          -1, 65535, DEFAULT_GEOJSON_BOUNDARY_CLASS, rw));
  g_object_class_install_property (gobject_class, PROP_GEOJSON_BOUNDARY_GROW,
      g_param_spec_uint ("geojson-boundary-grow", "GeoJSON boundary growth",
          "geojson-boundary-class: 1-pixel growth steps of the regions into "
          "boundary pixels (4-neighbours before diagonals), i.e. the widest "
          "ring covered; 0 = boundary pixels are simply dropped",
          0, STITCH_GEOJSON_MAX_BOUNDARY_GROW, DEFAULT_GEOJSON_BOUNDARY_GROW,
          rw));
  g_object_class_install_property (gobject_class, PROP_INSTANCES,
      g_param_spec_enum ("instances", "Instances",
          "Whether GRAY16_LE patches are instance maps (per patch object "
          "ids, merged across patches into global ids; docs/stitchsink.md) "
          "or class labels", GST_TYPE_STITCH_SINK_INSTANCES,
          DEFAULT_INSTANCES, rw));
  g_object_class_install_property (gobject_class, PROP_MAX_BAND_ROWS,
      g_param_spec_uint64 ("max-band-rows", "Peak band rows",
          "Most full-width rows held in memory at once since start",
          0, G_MAXUINT64, 0, G_PARAM_READABLE | G_PARAM_STATIC_STRINGS));
  g_object_class_install_property (gobject_class, PROP_IMAGES_WRITTEN,
      g_param_spec_uint ("images-written", "Images written",
          "Output images completed since start", 0, G_MAXUINT, 0,
          G_PARAM_READABLE | G_PARAM_STATIC_STRINGS));

  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_set_static_metadata (element_class,
      "Tile stitcher sink", "Sink/File/Video",
      "Stitches patches with tile metadata back into a region PNG, band by "
      "band, with an optional overlay picture", "gst-wsiseg");

  basesink_class->start = GST_DEBUG_FUNCPTR (gst_stitch_sink_start);
  basesink_class->stop = GST_DEBUG_FUNCPTR (gst_stitch_sink_stop);
  basesink_class->set_caps = GST_DEBUG_FUNCPTR (gst_stitch_sink_set_caps);
  basesink_class->render = GST_DEBUG_FUNCPTR (gst_stitch_sink_render);
  basesink_class->event = GST_DEBUG_FUNCPTR (gst_stitch_sink_event);
  basesink_class->propose_allocation =
      GST_DEBUG_FUNCPTR (gst_stitch_sink_propose_allocation);

  gst_type_mark_as_plugin_api (GST_TYPE_STITCH_SINK_BLEND, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_STITCH_SINK_OBJECT_TYPE, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_STITCH_SINK_INSTANCES, 0);
}

static void
gst_stitch_sink_init (GstStitchSink * self)
{
  self->blend = DEFAULT_BLEND;
  self->background = DEFAULT_BACKGROUND;
  self->compression_level = DEFAULT_COMPRESSION_LEVEL;
  self->overlay_max_size = DEFAULT_OVERLAY_MAX_SIZE;
  self->overlay_opacity = DEFAULT_OVERLAY_OPACITY;
  self->progress_interval = DEFAULT_PROGRESS_INTERVAL;
  self->sigma = DEFAULT_SIGMA;
  self->probability_class = DEFAULT_PROBABILITY_CLASS;
  self->geojson_object_type = DEFAULT_GEOJSON_OBJECT_TYPE;
  self->geojson_min_area = DEFAULT_GEOJSON_MIN_AREA;
  self->geojson_boundary_class = DEFAULT_GEOJSON_BOUNDARY_CLASS;
  self->geojson_boundary_grow = DEFAULT_GEOJSON_BOUNDARY_GROW;
  self->instances = DEFAULT_INSTANCES;
  gst_video_info_init (&self->info);
  gst_base_sink_set_sync (GST_BASE_SINK (self), FALSE);
  /* no reason to keep the last patch alive */
  gst_base_sink_set_last_sample_enabled (GST_BASE_SINK (self), FALSE);
}
