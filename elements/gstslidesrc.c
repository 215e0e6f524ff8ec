/* slidesrc: streams a whole-slide image (OpenSlide) or a PNG dataset as
 * fixed-size RGB tiles, each carrying a GstWsiTileMeta.
 *
 * gst-launch-1.0 slidesrc location=slide.svs level=0 ! fakesink
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gstwsiprops.h"
#include "gstwsiseg.h"
#include "gstwsitilemeta.h"
#include "wsislide.h"

#include <gst/base/gstpushsrc.h>
#include <gst/video/video.h>

#include <errno.h>
#include <glob.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

GST_DEBUG_CATEGORY_STATIC (gst_slidesrc_debug);
#define GST_CAT_DEFAULT gst_slidesrc_debug

#define DEFAULT_TILE_SIZE 1024
#define MAX_TILE_SIZE 16384
#define DEFAULT_LEVEL 0
#define DEFAULT_IS_LIVE FALSE
#define DEFAULT_RATE 0.0
#define DEFAULT_SHUFFLE FALSE
#define DEFAULT_SEED 0
#define DEFAULT_LOOP 1
#define DEFAULT_TARGET_MPP 0.0
#define DEFAULT_MPP 0.0
#define DEFAULT_MPP_TOLERANCE 0.01
#define MAX_MPP 1000.0
/* target-mpp may upsample level 0 at most this much */
#define MAX_UPSAMPLE 64.0
/* Largest level block (pixels) read at once when resampling a tile; larger
 * footprints are done in cells. WSISEG_SLIDESRC_RESAMPLE_LIMIT (pixels)
 * overrides it (tests use it to exercise the cells). */
#define MAX_RESAMPLE_BLOCK ((gsize) 4 * 1024 * 1024)

/* OpenSlide paints regions in chunks of this many level pixels (see
 * openslide_read_region); non-integer levels replay that chunking. */
#define OS_CHUNK 4096
/* Largest band (region width x OS_CHUNK rows, ARGB) kept in memory for
 * exact reads at non-integer levels; wider regions re-read chunks. The
 * environment variable WSISEG_SLIDESRC_BAND_LIMIT (bytes) overrides it
 * (tests use it to exercise the chunk path). */
#define MAX_BAND_BYTES ((gsize) 256 * 1024 * 1024)

typedef enum
{
  GST_SLIDESRC_ORDER_RASTER,
  GST_SLIDESRC_ORDER_SERPENTINE,
} GstSlideSrcOrder;

#define GST_TYPE_SLIDESRC_ORDER (gst_slidesrc_order_get_type ())
static GType
gst_slidesrc_order_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {GST_SLIDESRC_ORDER_RASTER, "Rows left to right, top to bottom",
        "raster"},
    {GST_SLIDESRC_ORDER_SERPENTINE,
        "Rows top to bottom, alternating left-to-right and right-to-left",
        "serpentine"},
    {0, NULL, NULL},
  };

  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstSlideSrcOrder", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

#define DEFAULT_ORDER GST_SLIDESRC_ORDER_RASTER

enum
{
  PROP_0,
  PROP_LOCATION,
  PROP_LEVEL,
  PROP_TILE_WIDTH,
  PROP_TILE_HEIGHT,
  PROP_REGION,
  PROP_IS_LIVE,
  PROP_TILES_PER_SECOND,
  PROP_ORDER,
  PROP_SHUFFLE,
  PROP_SEED,
  PROP_LOOP,
  PROP_TARGET_MPP,
  PROP_MPP,
  PROP_MPP_TOLERANCE,
  PROP_POST_MESSAGES,
};

#define GST_TYPE_SLIDESRC (gst_slidesrc_get_type ())
G_DECLARE_FINAL_TYPE (GstSlideSrc, gst_slidesrc, GST, SLIDESRC, GstPushSrc);

struct _GstSlideSrc
{
  GstPushSrc parent;

  /* properties (GST_OBJECT_LOCK) */
  gchar *location;
  gint level;
  gint tile_width, tile_height;
  gchar *region;
  gboolean is_live;
  gdouble rate;
  GstSlideSrcOrder order;
  gboolean shuffle;
  guint seed;
  guint loop;
  gdouble target_mpp;
  gdouble mpp;
  gdouble mpp_tolerance;
  gboolean post_messages;
  gint running;                 /* between start and stop */
  gint64 last_msg_us;

  /* streaming state: the item list */
  GPtrArray *items;             /* gchar* paths, sorted */
  guint *perm;                  /* visiting order of items */
  guint item_pos;               /* position in perm */
  guint epoch;
  GRand *rand;
  gboolean have_region;
  gboolean empty;               /* empty list or zero-area region: EOS */
  gint64 req_x, req_y, req_w, req_h;
  gint rate_n, rate_d;

  /* the open item */
  gboolean item_open;
  gchar *path;
  WsiSlide *slide;              /* elements/core/wsislide.h */
  gint item_level;
  gdouble ds;                   /* output pixels: level-0 pixels per pixel */
  gboolean integer_ds;
  gboolean resample;            /* target-mpp: ds differs from the level's */
  gdouble level_ds;             /* downsample of the level read */
  gboolean warned_upsample;
  gint64 level_w, level_h;      /* size of the level read */
  gint64 slide_w, slide_h;
  gint64 rx, ry, rw, rh;        /* region, level-0 */
  gint64 lw, lh;                /* region size at the level */
  gint cols, rows;
  gint64 tile_index;            /* next tile of this item, in walk order */
  gdouble mpp_x, mpp_y;
  guint8 bg[3];

  /* non-integer levels: a band of OpenSlide chunk rows and one tile row */
  guint32 *band;                /* premultiplied ARGB (wsislide.h) */
  gint64 band_cy;               /* chunk row held in band, -1: none */
  guint8 *row_rgb;              /* lw x tile_height RGB staging */
  gint row_loaded;              /* tile row in row_rgb, -1: none */

  guint32 *scratch;             /* ARGB chunk reads */
  gsize scratch_len;            /* bytes */

  /* resampling buffers (grown as needed, freed at stop) */
  guint8 *rs_rgb;               /* level block, RGB8 */
  gsize rs_rgb_len;
  gfloat *rs_tmp;               /* horizontally filtered rows, RGB float */
  gsize rs_tmp_len;

  GstVideoInfo vinfo;
  GstBufferPool *pool;
  guint64 frame;
};

G_DEFINE_TYPE (GstSlideSrc, gst_slidesrc, GST_TYPE_PUSH_SRC);
GST_ELEMENT_REGISTER_DEFINE (slidesrc, "slidesrc", GST_RANK_NONE,
    GST_TYPE_SLIDESRC);

static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC,
    GST_PAD_ALWAYS,
    GST_STATIC_CAPS ("video/x-raw, format = (string) RGB, "
        "width = (int) [ 1, 16384 ], height = (int) [ 1, 16384 ], "
        "framerate = (fraction) [ 0/1, MAX ]"));

static void gst_slidesrc_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec);
static void gst_slidesrc_get_property (GObject * object, guint prop_id,
    GValue * value, GParamSpec * pspec);
static void gst_slidesrc_finalize (GObject * object);
static gboolean gst_slidesrc_start (GstBaseSrc * bsrc);
static gboolean gst_slidesrc_stop (GstBaseSrc * bsrc);
static GstCaps *gst_slidesrc_get_caps (GstBaseSrc * bsrc, GstCaps * filter);
static gboolean gst_slidesrc_set_caps (GstBaseSrc * bsrc, GstCaps * caps);
static void gst_slidesrc_get_times (GstBaseSrc * bsrc, GstBuffer * buffer,
    GstClockTime * start, GstClockTime * end);
static gboolean gst_slidesrc_is_seekable (GstBaseSrc * bsrc);
static gboolean gst_slidesrc_do_seek (GstBaseSrc * bsrc, GstSegment * segment);
static GstFlowReturn gst_slidesrc_create (GstPushSrc * psrc,
    GstBuffer ** outbuf);

static void
gst_slidesrc_class_init (GstSlideSrcClass * klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstBaseSrcClass *basesrc_class = GST_BASE_SRC_CLASS (klass);
  GstPushSrcClass *pushsrc_class = GST_PUSH_SRC_CLASS (klass);
  GParamFlags flags = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
      GST_PARAM_MUTABLE_READY;

  gobject_class->set_property = gst_slidesrc_set_property;
  gobject_class->get_property = gst_slidesrc_get_property;
  gobject_class->finalize = gst_slidesrc_finalize;

  g_object_class_install_property (gobject_class, PROP_LOCATION,
      g_param_spec_string ("location", "Location",
          "Slide (any format OpenSlide opens) or PNG image; a glob pattern "
          "('train/*.png', '*.svs') or '@list.txt' (one path per line) "
          "streams several files one after the other, in sorted order",
          NULL, flags));
  g_object_class_install_property (gobject_class, PROP_LEVEL,
      g_param_spec_int ("level", "Level",
          "Pyramid level to read (0 = full resolution, -1 = lowest "
          "resolution); PNG images have only level 0",
          -1, G_MAXINT, DEFAULT_LEVEL, flags));
  g_object_class_install_property (gobject_class, PROP_TILE_WIDTH,
      g_param_spec_int ("tile-width", "Tile width",
          "Width of every output buffer in output pixels (level pixels, or "
          "target-mpp pixels when resampling)",
          1, MAX_TILE_SIZE, DEFAULT_TILE_SIZE, flags));
  g_object_class_install_property (gobject_class, PROP_TILE_HEIGHT,
      g_param_spec_int ("tile-height", "Tile height",
          "Height of every output buffer in output pixels (level pixels, or "
          "target-mpp pixels when resampling)",
          1, MAX_TILE_SIZE, DEFAULT_TILE_SIZE, flags));
  g_object_class_install_property (gobject_class, PROP_REGION,
      g_param_spec_string ("region", "Region",
          "Region to stream, \"x,y,width,height\" in level-0 pixels; empty: "
          "the slide's openslide.bounds-* when present, else the whole "
          "slide", NULL, flags));
  g_object_class_install_property (gobject_class, PROP_IS_LIVE,
      g_param_spec_boolean ("is-live", "Is live",
          "Act as a live source (scanner emulation), paced by "
          "tiles-per-second", DEFAULT_IS_LIVE, flags));
  g_object_class_install_property (gobject_class, PROP_TILES_PER_SECOND,
      g_param_spec_double ("tiles-per-second", "Tiles per second",
          "Tile rate: buffer n gets pts n/rate and duration 1/rate "
          "(0: no timestamps when not live; running time of capture when live)",
          0.0, 100000.0, DEFAULT_RATE, flags));
  g_object_class_install_property (gobject_class, PROP_ORDER,
      g_param_spec_enum ("order", "Order", "Order in which tiles are walked",
          GST_TYPE_SLIDESRC_ORDER, DEFAULT_ORDER, flags));
  g_object_class_install_property (gobject_class, PROP_SHUFFLE,
      g_param_spec_boolean ("shuffle", "Shuffle",
          "Visit the files of a glob/list in a random order (reshuffled "
          "every epoch, reproducible from seed)", DEFAULT_SHUFFLE, flags));
  g_object_class_install_property (gobject_class, PROP_SEED,
      g_param_spec_uint ("seed", "Seed", "Random seed for shuffle",
          0, G_MAXUINT, DEFAULT_SEED, flags));
  g_object_class_install_property (gobject_class, PROP_LOOP,
      g_param_spec_uint ("loop", "Loop",
          "Number of passes (epochs) over the files, 0 = forever",
          0, G_MAXUINT, DEFAULT_LOOP, flags));
  g_object_class_install_property (gobject_class, PROP_TARGET_MPP,
      g_param_spec_double ("target-mpp", "Target microns per pixel",
          "Output pixel size in microns (0 = off): streams the slide "
          "resampled to this resolution from the best pyramid level (area "
          "average when shrinking, bilinear when enlarging). Needs the "
          "slide's mpp (or the mpp property); excludes level",
          0.0, MAX_MPP, DEFAULT_TARGET_MPP, flags));
  g_object_class_install_property (gobject_class, PROP_MPP,
      g_param_spec_double ("mpp", "Microns per pixel",
          "Level-0 pixel size in microns, overriding the slide's "
          "openslide.mpp-x/y (0 = from the slide; PNGs and generic TIFFs "
          "have none). Also sets the tile meta's mpp",
          0.0, MAX_MPP, DEFAULT_MPP, flags));
  g_object_class_install_property (gobject_class, PROP_MPP_TOLERANCE,
      g_param_spec_double ("mpp-tolerance", "mpp tolerance",
          "With target-mpp: a pyramid level whose pixel size is within this "
          "relative difference of target-mpp is streamed as is, without "
          "resampling (0 = always resample to exactly target-mpp)",
          0.0, 0.5, DEFAULT_MPP_TOLERANCE, flags));
  /* the slidesrc-info message of a file seen again (loop > 1, every epoch
   * of a training run) is periodic: posted only with post-messages */
  g_object_class_install_property (gobject_class, PROP_POST_MESSAGES,
      gst_wsi_param_spec_post_messages ());

  gst_element_class_add_static_pad_template (element_class, &src_template);
  gst_element_class_set_static_metadata (element_class,
      "Whole-slide image source", "Source/Video",
      "Reads a whole-slide image (OpenSlide) or PNG images region by region "
      "as RGB tiles with tile metadata", "gst-wsiseg");

  basesrc_class->start = GST_DEBUG_FUNCPTR (gst_slidesrc_start);
  basesrc_class->stop = GST_DEBUG_FUNCPTR (gst_slidesrc_stop);
  basesrc_class->get_caps = GST_DEBUG_FUNCPTR (gst_slidesrc_get_caps);
  basesrc_class->set_caps = GST_DEBUG_FUNCPTR (gst_slidesrc_set_caps);
  basesrc_class->get_times = GST_DEBUG_FUNCPTR (gst_slidesrc_get_times);
  basesrc_class->is_seekable = GST_DEBUG_FUNCPTR (gst_slidesrc_is_seekable);
  basesrc_class->do_seek = GST_DEBUG_FUNCPTR (gst_slidesrc_do_seek);
  pushsrc_class->create = GST_DEBUG_FUNCPTR (gst_slidesrc_create);

  gst_type_mark_as_plugin_api (GST_TYPE_SLIDESRC_ORDER, 0);
  GST_DEBUG_CATEGORY_INIT (gst_slidesrc_debug, "slidesrc", 0,
      "Whole-slide image source");
}

static void
gst_slidesrc_init (GstSlideSrc * self)
{
  self->level = DEFAULT_LEVEL;
  self->tile_width = DEFAULT_TILE_SIZE;
  self->tile_height = DEFAULT_TILE_SIZE;
  self->is_live = DEFAULT_IS_LIVE;
  self->rate = DEFAULT_RATE;
  self->order = DEFAULT_ORDER;
  self->shuffle = DEFAULT_SHUFFLE;
  self->seed = DEFAULT_SEED;
  self->loop = DEFAULT_LOOP;
  self->target_mpp = DEFAULT_TARGET_MPP;
  self->mpp = DEFAULT_MPP;
  self->mpp_tolerance = DEFAULT_MPP_TOLERANCE;
  self->band_cy = -1;
  self->row_loaded = -1;
  gst_base_src_set_format (GST_BASE_SRC (self), GST_FORMAT_TIME);
  gst_base_src_set_live (GST_BASE_SRC (self), DEFAULT_IS_LIVE);
}

static void
gst_slidesrc_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec)
{
  GstSlideSrc *self = GST_SLIDESRC (object);

  /* everything but post-messages is read at start and shapes the caps, the
   * pool and the walk: refused while running */
  if (gst_wsi_property_refused (GST_ELEMENT (self), &self->running, pspec))
    return;

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_LOCATION:
      g_free (self->location);
      self->location = g_value_dup_string (value);
      break;
    case PROP_LEVEL:
      self->level = g_value_get_int (value);
      break;
    case PROP_TILE_WIDTH:
      self->tile_width = g_value_get_int (value);
      break;
    case PROP_TILE_HEIGHT:
      self->tile_height = g_value_get_int (value);
      break;
    case PROP_REGION:
      g_free (self->region);
      self->region = g_value_dup_string (value);
      break;
    case PROP_IS_LIVE:
      self->is_live = g_value_get_boolean (value);
      GST_OBJECT_UNLOCK (self);
      gst_base_src_set_live (GST_BASE_SRC (self), self->is_live);
      return;
    case PROP_TILES_PER_SECOND:
      self->rate = g_value_get_double (value);
      break;
    case PROP_ORDER:
      self->order = g_value_get_enum (value);
      break;
    case PROP_SHUFFLE:
      self->shuffle = g_value_get_boolean (value);
      break;
    case PROP_SEED:
      self->seed = g_value_get_uint (value);
      break;
    case PROP_LOOP:
      self->loop = g_value_get_uint (value);
      break;
    case PROP_TARGET_MPP:
      self->target_mpp = g_value_get_double (value);
      break;
    case PROP_MPP:
      self->mpp = g_value_get_double (value);
      break;
    case PROP_MPP_TOLERANCE:
      self->mpp_tolerance = g_value_get_double (value);
      break;
    case PROP_POST_MESSAGES:
      self->post_messages = g_value_get_boolean (value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_slidesrc_get_property (GObject * object, guint prop_id, GValue * value,
    GParamSpec * pspec)
{
  GstSlideSrc *self = GST_SLIDESRC (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_LOCATION:
      g_value_set_string (value, self->location);
      break;
    case PROP_LEVEL:
      g_value_set_int (value, self->level);
      break;
    case PROP_TILE_WIDTH:
      g_value_set_int (value, self->tile_width);
      break;
    case PROP_TILE_HEIGHT:
      g_value_set_int (value, self->tile_height);
      break;
    case PROP_REGION:
      g_value_set_string (value, self->region);
      break;
    case PROP_IS_LIVE:
      g_value_set_boolean (value, self->is_live);
      break;
    case PROP_TILES_PER_SECOND:
      g_value_set_double (value, self->rate);
      break;
    case PROP_ORDER:
      g_value_set_enum (value, self->order);
      break;
    case PROP_SHUFFLE:
      g_value_set_boolean (value, self->shuffle);
      break;
    case PROP_SEED:
      g_value_set_uint (value, self->seed);
      break;
    case PROP_LOOP:
      g_value_set_uint (value, self->loop);
      break;
    case PROP_TARGET_MPP:
      g_value_set_double (value, self->target_mpp);
      break;
    case PROP_MPP:
      g_value_set_double (value, self->mpp);
      break;
    case PROP_MPP_TOLERANCE:
      g_value_set_double (value, self->mpp_tolerance);
      break;
    case PROP_POST_MESSAGES:
      g_value_set_boolean (value, self->post_messages);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

/* ------------------------------------------------------------------ */
/* Item list                                                           */

static gboolean
has_glob_chars (const gchar * s)
{
  return strpbrk (s, "*?[") != NULL;
}

static gint
compare_paths (gconstpointer a, gconstpointer b)
{
  return g_strcmp0 (*(const gchar * const *) a, *(const gchar * const *) b);
}

/* Expands location into a sorted list of paths. */
static gboolean
gst_slidesrc_expand_location (GstSlideSrc * self, const gchar * location)
{
  GPtrArray *items = g_ptr_array_new_with_free_func (g_free);

  if (location[0] == '@') {
    const gchar *list = location + 1;
    gchar *contents = NULL, *dir, *nul;
    gchar **lines;
    gsize len = 0;
    GError *err = NULL;

    if (!g_file_get_contents (list, &contents, &len, &err)) {
      if (g_error_matches (err, G_FILE_ERROR, G_FILE_ERROR_NOENT))
        GST_ELEMENT_ERROR (self, RESOURCE, NOT_FOUND,
            ("Could not read file list \"%s\".", list), ("%s", err->message));
      else
        GST_ELEMENT_ERROR (self, RESOURCE, OPEN_READ,
            ("Could not read file list \"%s\": %s.", list, err->message),
            (NULL));
      g_clear_error (&err);
      g_ptr_array_unref (items);
      return FALSE;
    }
    /* the whole file is read: a NUL byte is not a short list */
    nul = memchr (contents, '\0', len);
    if (nul) {
      guint line = 1;
      for (const gchar * c = contents; c < nul; c++)
        line += *c == '\n';
      GST_ELEMENT_ERROR (self, STREAM, DECODE,
          ("File list \"%s\" has a NUL byte on line %u: not a text list of "
              "paths.", list, line), (NULL));
      g_free (contents);
      g_ptr_array_unref (items);
      return FALSE;
    }
    dir = g_path_get_dirname (list);
    lines = g_strsplit (contents, "\n", -1);
    for (gchar ** l = lines; *l; l++) {
      gchar *line = g_strstrip (*l);
      if (line[0] == '\0' || line[0] == '#')
        continue;
      if (g_path_is_absolute (line))
        g_ptr_array_add (items, g_strdup (line));
      else
        g_ptr_array_add (items, g_build_filename (dir, line, NULL));
    }
    g_strfreev (lines);
    g_free (dir);
    g_free (contents);
    if (items->len == 0)        /* an empty dataset: EOS without data */
      GST_ELEMENT_WARNING (self, RESOURCE, NOT_FOUND,
          ("File list \"%s\" names no files: nothing to stream.", list),
          (NULL));
  } else if (has_glob_chars (location)) {
    glob_t g;
    gint ret = glob (location, 0, NULL, &g);

    if (ret == 0) {
      for (gsize i = 0; i < g.gl_pathc; i++)
        g_ptr_array_add (items, g_strdup (g.gl_pathv[i]));
    }
    globfree (&g);
    if (items->len == 0) {
      GST_ELEMENT_ERROR (self, RESOURCE, NOT_FOUND,
          ("No file matches \"%s\".", location),
          ("glob() returned %d", ret));
      g_ptr_array_unref (items);
      return FALSE;
    }
  } else {
    g_ptr_array_add (items, g_strdup (location));
  }

  g_ptr_array_sort (items, compare_paths);
  self->items = items;
  self->empty |= items->len == 0;
  return TRUE;
}

static void
gst_slidesrc_new_epoch (GstSlideSrc * self)
{
  guint n = self->items->len;

  for (guint i = 0; i < n; i++)
    self->perm[i] = i;
  if (self->shuffle) {
    for (guint i = n - 1; i > 0; i--) {
      guint j = g_rand_int_range (self->rand, 0, (gint32) i + 1);
      guint t = self->perm[i];
      self->perm[i] = self->perm[j];
      self->perm[j] = t;
    }
  }
  self->item_pos = 0;
}

/* ------------------------------------------------------------------ */
/* Opening one item                                                    */

static void
gst_slidesrc_close_item (GstSlideSrc * self)
{
  g_clear_pointer (&self->slide, wsi_slide_free);
  g_clear_pointer (&self->band, g_free);
  g_clear_pointer (&self->row_rgb, g_free);
  g_clear_pointer (&self->path, g_free);
  self->band_cy = -1;
  self->row_loaded = -1;
  self->item_open = FALSE;
}

static gboolean
parse_region (const gchar * s, gint64 v[4])
{
  gchar **parts = g_strsplit (s, ",", -1);
  gboolean ok = g_strv_length (parts) == 4;

  for (gint i = 0; ok && i < 4; i++) {
    gchar *end = NULL;
    gchar *p = g_strstrip (parts[i]);
    gint64 x;

    errno = 0;
    x = g_ascii_strtoll (p, &end, 10);
    if (p[0] == '\0' || *end != '\0' || errno == ERANGE)
      ok = FALSE;
    v[i] = x;
  }
  g_strfreev (parts);
  return ok;
}

static void
post_info_message (GstSlideSrc * self, guint index)
{
  GstStructure *s;
  GValue widths = G_VALUE_INIT, heights = G_VALUE_INIT, dss = G_VALUE_INIT;
  GValue v = G_VALUE_INIT;
  gint nlevels = wsi_slide_get_level_count (self->slide);
  const gchar *vendor = wsi_slide_get_vendor (self->slide);
  gchar bgs[8];

  gst_value_array_init (&widths, 4);
  gst_value_array_init (&heights, 4);
  gst_value_array_init (&dss, 4);
  for (gint l = 0; l < nlevels; l++) {
    gint64 w, h;
    gdouble d = wsi_slide_get_level_downsample (self->slide, l);
    wsi_slide_get_level_dimensions (self->slide, l, &w, &h);
    g_value_init (&v, G_TYPE_INT64);
    g_value_set_int64 (&v, w);
    gst_value_array_append_value (&widths, &v);
    g_value_set_int64 (&v, h);
    gst_value_array_append_value (&heights, &v);
    g_value_unset (&v);
    g_value_init (&v, G_TYPE_DOUBLE);
    g_value_set_double (&v, d);
    gst_value_array_append_value (&dss, &v);
    g_value_unset (&v);
  }
  g_snprintf (bgs, sizeof (bgs), "%02X%02X%02X", self->bg[0], self->bg[1],
      self->bg[2]);

  s = gst_structure_new ("slidesrc-info",
      "location", G_TYPE_STRING, self->path,
      "index", G_TYPE_UINT, index,
      "epoch", G_TYPE_UINT, self->epoch,
      "vendor", G_TYPE_STRING, vendor,
      "level-count", G_TYPE_INT, nlevels,
      "level", G_TYPE_INT, self->item_level,
      "downsample", G_TYPE_DOUBLE, self->ds,
      "level-downsample", G_TYPE_DOUBLE, self->level_ds,
      "resampled", G_TYPE_BOOLEAN, self->resample,
      "width", G_TYPE_INT64, self->slide_w,
      "height", G_TYPE_INT64, self->slide_h,
      "mpp-x", G_TYPE_DOUBLE, self->mpp_x,
      "mpp-y", G_TYPE_DOUBLE, self->mpp_y,
      "tile-width", G_TYPE_INT, self->tile_width,
      "tile-height", G_TYPE_INT, self->tile_height,
      "grid-cols", G_TYPE_INT, self->cols,
      "grid-rows", G_TYPE_INT, self->rows,
      "region-x", G_TYPE_INT64, self->rx,
      "region-y", G_TYPE_INT64, self->ry,
      "region-width", G_TYPE_INT64, self->rw,
      "region-height", G_TYPE_INT64, self->rh,
      "level-region-width", G_TYPE_INT64, self->lw,
      "level-region-height", G_TYPE_INT64, self->lh,
      "background-color", G_TYPE_STRING, bgs, NULL);
  gst_structure_take_value (s, "level-widths", &widths);
  gst_structure_take_value (s, "level-heights", &heights);
  gst_structure_take_value (s, "level-downsamples", &dss);

  gst_element_post_message (GST_ELEMENT (self),
      gst_message_new_element (GST_OBJECT (self), s));
}

/* Upsampling (downsample < 1): the meta's x/y are whole level-0 pixels, so
 * a tile at output pixel lx is only placed exactly downstream when lx * ds
 * is a whole number. Warns once per start when the tile size breaks that. */
static void
warn_upsample_grid (GstSlideSrc * self)
{
  gdouble ds = self->ds;
  gint q = 0;

  if (self->warned_upsample)
    return;
  if (fabs (self->tile_width * ds - rint (self->tile_width * ds)) < 1e-6 &&
      fabs (self->tile_height * ds - rint (self->tile_height * ds)) < 1e-6)
    return;
  for (gint k = 1; k <= 1024 && !q; k++)
    if (fabs (k * ds - rint (k * ds)) < 1e-6)
      q = k;
  self->warned_upsample = TRUE;
  if (q)
    GST_ELEMENT_WARNING (self, RESOURCE, SETTINGS,
        ("target-mpp=%g upsamples \"%s\" (downsample %g): tile positions "
            "are stored in whole level-0 pixels, so downstream elements "
            "place %dx%d tiles up to a pixel off. Use a tile-width and "
            "tile-height (and a patchify patch-size minus overlap) that are "
            "multiples of %d.", self->target_mpp, self->path, ds,
            self->tile_width, self->tile_height, q), (NULL));
  else
    GST_ELEMENT_WARNING (self, RESOURCE, SETTINGS,
        ("target-mpp=%g upsamples \"%s\" (downsample %g): tile positions "
            "are stored in whole level-0 pixels, so downstream elements "
            "place tiles up to a pixel off at this downsample. Choose a "
            "target-mpp that is a simple fraction (1/2, 3/4, ...) of the "
            "slide's mpp.", self->target_mpp, self->path, ds), (NULL));
}

/* target-mpp: picks the level with the largest downsample whose pixels are
 * not coarser than target-mpp (level 0 when all are: upsampling). A level
 * within mpp-tolerance of the target is streamed as is; otherwise
 * self->resample is set and self->ds is the exact output downsample. */
static gboolean
choose_level_for_mpp (GstSlideSrc * self, gint nlevels)
{
  gdouble mpp0, target = self->target_mpp, tol, best = 0.0, d_out;
  gint level = 0;

  if (self->mpp_x > 0 && self->mpp_y > 0)
    mpp0 = (self->mpp_x + self->mpp_y) / 2.0;
  else
    mpp0 = MAX (self->mpp_x, self->mpp_y);
  if (!(mpp0 > 0) || !isfinite (mpp0)) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("\"%s\" does not say its pixel size (no openslide.mpp-x/y): set "
            "the mpp property to its level-0 microns per pixel to use "
            "target-mpp=%g.", self->path, target), (NULL));
    return FALSE;
  }
  if (self->mpp_x > 0 && self->mpp_y > 0 &&
      fabs (self->mpp_x / self->mpp_y - 1.0) > 0.01)
    GST_WARNING_OBJECT (self, "%s has non-square pixels (mpp %g x %g); "
        "resampling both axes by their mean %g", self->path, self->mpp_x,
        self->mpp_y, mpp0);
  d_out = target / mpp0;
  if (d_out < 1.0 / MAX_UPSAMPLE) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("target-mpp=%g is more than %g times finer than the pixels of \"%s\" "
            "(%g microns): upsampling that far is not supported.", target,
            MAX_UPSAMPLE, self->path, mpp0), (NULL));
    return FALSE;
  }
  tol = MAX (self->mpp_tolerance, 1e-9);
  for (gint l = 0; l < nlevels; l++) {
    gdouble d = wsi_slide_get_level_downsample (self->slide, l);
    if (d >= 1.0 && isfinite (d) && d <= d_out * (1.0 + tol) && d > best) {
      best = d;
      level = l;
    }
  }
  if (best == 0.0) {            /* finer than level 0: upsample level 0 */
    level = 0;
    best = wsi_slide_get_level_downsample (self->slide, 0);
    if (!(best >= 1.0) || !isfinite (best))
      best = 1.0;
  }
  self->item_level = level;
  self->level_ds = best;
  if (fabs (best / d_out - 1.0) <= tol) {
    self->ds = best;
    self->resample = FALSE;
  } else {
    self->ds = d_out;
    self->resample = TRUE;
  }
  if (self->ds < 1.0)
    warn_upsample_grid (self);
  GST_INFO_OBJECT (self, "target-mpp %g on %s (level-0 mpp %g): level %d "
      "(downsample %g), %s, output downsample %g", target, self->path, mpp0,
      level, best, self->resample ? "resampled" : "as is", self->ds);
  return TRUE;
}

/* Posts a reader error with the GStreamer error of docs/conventions.md. */
static void
post_slide_error (GstSlideSrc * self, const GError * error)
{
  const gchar *m = error->message;

  switch (error->code) {
    case WSI_SLIDE_ERROR_NOT_FOUND:
      GST_ELEMENT_ERROR (self, RESOURCE, NOT_FOUND, ("%s", m), (NULL));
      break;
    case WSI_SLIDE_ERROR_OPEN:
      GST_ELEMENT_ERROR (self, RESOURCE, OPEN_READ, ("%s", m), (NULL));
      break;
    case WSI_SLIDE_ERROR_FORMAT:
      GST_ELEMENT_ERROR (self, STREAM, WRONG_TYPE, ("%s", m), (NULL));
      break;
    case WSI_SLIDE_ERROR_TOO_LARGE:
    case WSI_SLIDE_ERROR_NO_MEMORY:
      GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT, ("%s", m), (NULL));
      break;
    case WSI_SLIDE_ERROR_ARGUMENT:
      GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS, ("%s", m), (NULL));
      break;
    default:
      GST_ELEMENT_ERROR (self, STREAM, DECODE, ("%s", m), (NULL));
      break;
  }
}

/* Reads level pixels through the reader; posts the error. */
static gboolean
read_region (GstSlideSrc * self, gint64 x, gint64 y, gint64 w, gint64 h,
    guint8 * rgb, gsize stride)
{
  GError *error = NULL;

  if (wsi_slide_read_region (self->slide, self->item_level, x, y, w, h, rgb,
          stride, &error))
    return TRUE;
  post_slide_error (self, error);
  g_error_free (error);
  return FALSE;
}

/* Opens item @index of the list, validates level and region and computes
 * the tile grid. Posts an element error and returns FALSE on bad input. */
static gboolean
gst_slidesrc_open_item (GstSlideSrc * self, guint index)
{
  const gchar *path = g_ptr_array_index (self->items, index);
  GError *error = NULL;
  gint nlevels;

  gst_slidesrc_close_item (self);
  self->path = g_strdup (path);

  self->slide = wsi_slide_open (path, &error);
  if (!self->slide) {
    post_slide_error (self, error);
    g_error_free (error);
    return FALSE;
  }
  nlevels = wsi_slide_get_level_count (self->slide);
  wsi_slide_get_level_dimensions (self->slide, 0, &self->slide_w,
      &self->slide_h);
  wsi_slide_get_mpp (self->slide, &self->mpp_x, &self->mpp_y);
  wsi_slide_get_background (self->slide, self->bg);
  self->ds = 1.0;

  if (self->mpp > 0)
    self->mpp_x = self->mpp_y = self->mpp;

  /* level */
  self->resample = FALSE;
  if (self->target_mpp > 0) {
    if (!choose_level_for_mpp (self, nlevels))
      return FALSE;
  } else {
    self->item_level = self->level < 0 ? nlevels - 1 : self->level;
    if (self->item_level >= nlevels) {
      GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
          ("Level %d is out of range for \"%s\": it has %d level%s (0..%d).",
              self->level, path, nlevels, nlevels == 1 ? "" : "s",
              nlevels - 1), (NULL));
      return FALSE;
    }
    self->ds = wsi_slide_get_level_downsample (self->slide, self->item_level);
  }
  if (!self->resample && (!(self->ds >= 1.0) ||
          !isfinite (self->ds))) {
    GST_ELEMENT_ERROR (self, STREAM, DECODE,
        ("Slide \"%s\" reports an invalid downsample %g for level %d.",
            path, self->ds, self->item_level), (NULL));
    return FALSE;
  }
  if (!self->resample)
    self->level_ds = self->ds;
  wsi_slide_get_level_dimensions (self->slide, self->item_level,
      &self->level_w, &self->level_h);
  self->integer_ds = fabs (self->ds - rint (self->ds)) < 1e-9;

  /* region */
  if (self->have_region) {
    self->rx = self->req_x;
    self->ry = self->req_y;
    self->rw = self->req_w;
    self->rh = self->req_h;
  } else {
    self->rx = self->ry = 0;
    self->rw = self->slide_w;
    self->rh = self->slide_h;
    wsi_slide_get_bounds (self->slide, &self->rx, &self->ry, &self->rw,
        &self->rh);
  }
  if (self->rx < 0 || self->ry < 0 || self->rw <= 0 || self->rh <= 0 ||
      self->rx > self->slide_w - self->rw ||
      self->ry > self->slide_h - self->rh) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("Region %" G_GINT64_FORMAT ",%" G_GINT64_FORMAT ",%" G_GINT64_FORMAT
            ",%" G_GINT64_FORMAT " is outside \"%s\" (%" G_GINT64_FORMAT "x%"
            G_GINT64_FORMAT " level-0 pixels).", self->rx, self->ry,
            self->rw, self->rh, path, self->slide_w, self->slide_h), (NULL));
    return FALSE;
  }
  if (self->resample) {
    self->lw = (gint64) ceil (self->rw / self->ds - 1e-9);
    self->lh = (gint64) ceil (self->rh / self->ds - 1e-9);
  } else {
    self->lw = wsi_slide_level_extent (self->rx, self->rw, self->slide_w,
        self->ds, self->level_w);
    self->lh = wsi_slide_level_extent (self->ry, self->rh, self->slide_h,
        self->ds, self->level_h);
  }
  if (self->lw < 1)
    self->lw = 1;
  if (self->lh < 1)
    self->lh = 1;
  /* cols * rows is counted in 64 bits (tile_index) */
  if ((self->lw + self->tile_width - 1) / self->tile_width > G_MAXINT / 2 ||
      (self->lh + self->tile_height - 1) / self->tile_height > G_MAXINT / 2) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("Tile grid for \"%s\" is too large; use larger tiles.", path),
        (NULL));
    return FALSE;
  }
  self->cols = (gint) ((self->lw + self->tile_width - 1) / self->tile_width);
  self->rows = (gint) ((self->lh + self->tile_height - 1) / self->tile_height);
  self->tile_index = 0;
  self->item_open = TRUE;

  GST_INFO_OBJECT (self, "opened %s: level %d downsample %g (%s%s), region %"
      G_GINT64_FORMAT ",%" G_GINT64_FORMAT " %" G_GINT64_FORMAT "x%"
      G_GINT64_FORMAT ", level size %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT
      ", grid %dx%d", path, self->item_level, self->ds,
      self->integer_ds ? "integer" : "non-integer",
      self->resample ? ", resampled" : "", self->rx, self->ry,
      self->rw, self->rh, self->lw, self->lh, self->cols, self->rows);
  /* a file's info is news in the first epoch; every later epoch repeats
   * it (periodic: only with post-messages) */
  if (self->epoch == 0 || gst_wsi_periodic_message_due (self->post_messages,
          &self->last_msg_us, 0))
    post_info_message (self, index);
  return TRUE;
}

/* Opens the next item of the walk; returns FALSE at the end (no error) or
 * on error (@error set). */
static gboolean
gst_slidesrc_next_item (GstSlideSrc * self, gboolean * error)
{
  *error = FALSE;
  if (self->item_pos >= self->items->len) {
    self->epoch++;
    if (self->loop != 0 && self->epoch >= self->loop)
      return FALSE;
    gst_slidesrc_new_epoch (self);
  }
  if (!gst_slidesrc_open_item (self, self->perm[self->item_pos++])) {
    *error = TRUE;
    return FALSE;
  }
  return TRUE;
}

/* ------------------------------------------------------------------ */
/* Start / stop / caps                                                 */

static gboolean
gst_slidesrc_start (GstBaseSrc * bsrc)
{
  GstSlideSrc *self = GST_SLIDESRC (bsrc);
  gchar *location, *region;
  gboolean ok, error;

  /* from here on READY-only properties are refused */
  gst_wsi_set_running (GST_ELEMENT (self), &self->running, TRUE);
  self->empty = FALSE;
  GST_OBJECT_LOCK (self);
  location = g_strdup (self->location);
  region = g_strdup (self->region);
  GST_OBJECT_UNLOCK (self);

  if (!location || !*location) {
    GST_ELEMENT_ERROR (self, RESOURCE, NOT_FOUND,
        ("No file name specified for reading."),
        ("set the location property"));
    goto fail;
  }
  if (self->target_mpp > 0 && self->level != DEFAULT_LEVEL) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("target-mpp=%g and level=%d cannot be used together: target-mpp "
            "picks the pyramid level itself; unset one of them.",
            self->target_mpp, self->level), (NULL));
    goto fail;
  }
  self->have_region = FALSE;
  if (region && *region) {
    gint64 v[4];
    if (!parse_region (region, v)) {
      GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
          ("Region \"%s\" is invalid: expected \"x,y,width,height\" in "
              "level-0 pixels.", region), (NULL));
      goto fail;
    }
    if (v[2] < 0 || v[3] < 0 || v[0] < 0 || v[1] < 0) {
      GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
          ("Region \"%s\" is invalid: x, y, width and height must be >= 0.",
              region), (NULL));
      goto fail;
    }
    /* a zero-area region streams nothing: EOS without data */
    if (v[2] == 0 || v[3] == 0) {
      GST_ELEMENT_WARNING (self, RESOURCE, SETTINGS,
          ("Region \"%s\" has no area: nothing to stream.", region), (NULL));
      self->empty = TRUE;
    }
    self->req_x = v[0];
    self->req_y = v[1];
    self->req_w = v[2];
    self->req_h = v[3];
    self->have_region = TRUE;
  }
  if (self->rate > 0)
    gst_util_double_to_fraction (self->rate, &self->rate_n, &self->rate_d);
  else {
    self->rate_n = 0;
    self->rate_d = 1;
  }

  if (!gst_slidesrc_expand_location (self, location))
    goto fail;
  if (self->empty) {
    g_free (location);
    g_free (region);
    return TRUE;
  }
  self->perm = g_new (guint, self->items->len);
  self->rand = g_rand_new_with_seed (self->seed);
  self->epoch = 0;
  self->frame = 0;
  self->warned_upsample = FALSE;
  gst_slidesrc_new_epoch (self);

  ok = gst_slidesrc_next_item (self, &error);
  if (!ok) {
    if (!error)                 /* loop=... can't end before the first item */
      GST_ELEMENT_ERROR (self, RESOURCE, FAILED, ("Nothing to read."),
          (NULL));
    goto fail;
  }
  g_free (location);
  g_free (region);
  return TRUE;

fail:
  g_free (location);
  g_free (region);
  gst_slidesrc_stop (bsrc);
  return FALSE;
}

/* Seeking: tile n of the walk has pts n / tiles-per-second, so a TIME
 * seek goes to the first tile at or after the position. Without a rate the
 * walk has no time axis: only a seek to 0 (restart) is possible. Live
 * sources do not seek. */
static gboolean
gst_slidesrc_is_seekable (GstBaseSrc * bsrc)
{
  GstSlideSrc *self = GST_SLIDESRC (bsrc);

  return !gst_base_src_is_live (bsrc) && !self->empty && self->items != NULL;
}

static gboolean
gst_slidesrc_do_seek (GstBaseSrc * bsrc, GstSegment * segment)
{
  GstSlideSrc *self = GST_SLIDESRC (bsrc);
  guint64 target;
  gboolean error;

  if (segment->format != GST_FORMAT_TIME || segment->rate < 0)
    return FALSE;
  if (self->rate_n > 0)
    target = gst_util_uint64_scale_ceil (segment->start, self->rate_n,
        GST_SECOND * (guint64) self->rate_d);
  else if (segment->start == 0)
    target = 0;
  else
    return FALSE;
  segment->time = segment->start;
  segment->position = segment->start;
  if (target == self->frame)
    return TRUE;                /* also the initial seek at start */
  if (!self->items || self->empty)
    return FALSE;

  /* replay the walk from the start: same seed, same shuffles */
  GST_DEBUG_OBJECT (self, "seek to tile %" G_GUINT64_FORMAT, target);
  g_rand_set_seed (self->rand, self->seed);
  self->epoch = 0;
  self->frame = 0;
  gst_slidesrc_close_item (self);
  gst_slidesrc_new_epoch (self);
  while (self->frame < target) {
    gint64 total, n;

    if (!self->item_open && !gst_slidesrc_next_item (self, &error))
      return !error;            /* past the end: create() gives EOS */
    total = (gint64) self->cols * self->rows;
    n = MIN (total - self->tile_index, (gint64) (target - self->frame));
    self->tile_index += n;
    self->frame += n;
    if (self->tile_index >= total)
      gst_slidesrc_close_item (self);
  }
  return TRUE;
}

static gboolean
gst_slidesrc_stop (GstBaseSrc * bsrc)
{
  GstSlideSrc *self = GST_SLIDESRC (bsrc);

  gst_slidesrc_close_item (self);
  self->empty = FALSE;
  g_clear_pointer (&self->items, g_ptr_array_unref);
  g_clear_pointer (&self->perm, g_free);
  g_clear_pointer (&self->rand, g_rand_free);
  g_clear_pointer (&self->scratch, g_free);
  self->scratch_len = 0;
  g_clear_pointer (&self->rs_rgb, g_free);
  self->rs_rgb_len = 0;
  g_clear_pointer (&self->rs_tmp, g_free);
  self->rs_tmp_len = 0;
  if (self->pool) {
    gst_buffer_pool_set_active (self->pool, FALSE);
    gst_clear_object (&self->pool);
  }
  gst_wsi_set_running (GST_ELEMENT (self), &self->running, FALSE);
  return TRUE;
}

static GstCaps *
gst_slidesrc_get_caps (GstBaseSrc * bsrc, GstCaps * filter)
{
  GstSlideSrc *self = GST_SLIDESRC (bsrc);
  GstCaps *caps;
  gint tw, th, n = 0, d = 1;
  gdouble rate;

  GST_OBJECT_LOCK (self);
  tw = self->tile_width;
  th = self->tile_height;
  rate = self->rate;
  GST_OBJECT_UNLOCK (self);

  if (tw < 1 || th < 1)
    caps = gst_pad_get_pad_template_caps (GST_BASE_SRC_PAD (bsrc));
  else {
    if (rate > 0)
      gst_util_double_to_fraction (rate, &n, &d);
    caps = gst_caps_new_simple ("video/x-raw",
        "format", G_TYPE_STRING, "RGB",
        "width", G_TYPE_INT, tw, "height", G_TYPE_INT, th,
        "framerate", GST_TYPE_FRACTION, n, d, NULL);
  }
  if (filter) {
    GstCaps *tmp = gst_caps_intersect_full (filter, caps,
        GST_CAPS_INTERSECT_FIRST);
    gst_caps_unref (caps);
    caps = tmp;
  }
  return caps;
}

static gboolean
gst_slidesrc_set_caps (GstBaseSrc * bsrc, GstCaps * caps)
{
  GstSlideSrc *self = GST_SLIDESRC (bsrc);
  GstStructure *config;

  if (!gst_video_info_from_caps (&self->vinfo, caps))
    return FALSE;
  if (self->pool) {
    gst_buffer_pool_set_active (self->pool, FALSE);
    gst_clear_object (&self->pool);
  }
  self->pool = gst_buffer_pool_new ();
  config = gst_buffer_pool_get_config (self->pool);
  gst_buffer_pool_config_set_params (config, caps,
      GST_VIDEO_INFO_SIZE (&self->vinfo), 2, 0);
  if (!gst_buffer_pool_set_config (self->pool, config) ||
      !gst_buffer_pool_set_active (self->pool, TRUE)) {
    GST_ERROR_OBJECT (self, "could not configure buffer pool");
    gst_clear_object (&self->pool);
    return FALSE;
  }
  return TRUE;
}

static void
gst_slidesrc_get_times (GstBaseSrc * bsrc, GstBuffer * buffer,
    GstClockTime * start, GstClockTime * end)
{
  /* live: basesrc waits until the buffer's running time */
  if (gst_base_src_is_live (bsrc)) {
    GstClockTime pts = GST_BUFFER_PTS (buffer);
    if (GST_CLOCK_TIME_IS_VALID (pts)) {
      *start = pts;
      if (GST_BUFFER_DURATION_IS_VALID (buffer))
        *end = pts + GST_BUFFER_DURATION (buffer);
    }
  }
}

/* ------------------------------------------------------------------ */
/* Reading                                                             */

/* A reusable buffer of at least @bytes (its old content is not kept);
 * NULL when out of memory. */
static gpointer
grow_buffer (gpointer * buf, gsize * len, gsize bytes)
{
  if (*len < bytes) {
    g_free (*buf);
    *buf = g_try_malloc (bytes);
    *len = *buf ? bytes : 0;
  }
  return *buf;
}

static guint32 *
scratch_get (GstSlideSrc * self, gsize pixels)
{
  if (pixels > G_MAXSIZE / sizeof (guint32))
    return NULL;
  return grow_buffer ((gpointer *) & self->scratch, &self->scratch_len,
      pixels * sizeof (guint32));
}

/* Reads premultiplied ARGB through the reader; posts the error. */
static gboolean
read_argb (GstSlideSrc * self, gint64 x, gint64 y, gint64 w, gint64 h,
    guint32 * argb)
{
  GError *error = NULL;

  if (wsi_slide_read_argb (self->slide, self->item_level, x, y, w, h, argb,
          &error))
    return TRUE;
  post_slide_error (self, error);
  g_error_free (error);
  return FALSE;
}

/* Level-0 origin of OpenSlide chunk @k along one axis of a whole-region
 * read starting at @origin (same arithmetic as openslide_read_region). */
static inline gint64
chunk_origin (gint64 origin, gint64 k, gdouble ds)
{
  return (gint64) ((gdouble) origin + (gdouble) (k * OS_CHUNK) * ds);
}

/* Non-integer downsample: a read is only pixel-identical to the whole
 * region's read when it starts where OpenSlide starts its own chunk of
 * that read. Fills row_rgb with tile row @row (lw x tile rows) from whole
 * chunk rows read at their chunk origins. */
static gboolean
load_tile_row (GstSlideSrc * self, gint row)
{
  gint64 y0 = (gint64) row * self->tile_height;
  gint64 y1 = MIN (self->lh, y0 + self->tile_height);
  gsize band_bytes = (gsize) self->lw * MIN (OS_CHUNK, self->lh) * 4;
  const gchar *limit_env = g_getenv ("WSISEG_SLIDESRC_BAND_LIMIT");
  gsize limit = limit_env ? g_ascii_strtoull (limit_env, NULL, 10) :
      MAX_BAND_BYTES;
  gboolean use_band = band_bytes <= limit;

  if (!self->row_rgb) {
    self->row_rgb = g_try_malloc ((gsize) self->lw * self->tile_height * 3);
    if (!self->row_rgb)
      goto oom;
  }

  for (gint64 cy = y0 / OS_CHUNK; cy * OS_CHUNK < y1; cy++) {
    gint64 cy0 = cy * OS_CHUNK;
    gint64 ch = MIN (OS_CHUNK, self->lh - cy0);
    gint64 sy = chunk_origin (self->ry, cy, self->ds);
    gint64 from = MAX (y0, cy0), to = MIN (y1, cy0 + ch);

    if (use_band) {
      if (self->band_cy != cy) {
        if (!self->band) {
          self->band = g_try_malloc (band_bytes);
          if (!self->band)
            goto oom;
        }
        /* OpenSlide chunks the x axis itself, the same way */
        self->band_cy = -1;
        if (!read_argb (self, self->rx, sy, self->lw, ch, self->band))
          return FALSE;
        self->band_cy = cy;
      }
      for (gint64 y = from; y < to; y++)
        wsi_slide_argb_to_rgb (self->band + (gsize) (y - cy0) * self->lw,
            self->row_rgb + (gsize) (y - y0) * self->lw * 3, self->lw,
            self->bg);
    } else {
      /* too wide to hold a band: read each chunk from its origin down to
       * the rows needed (re-reads rows above, but stays exact) */
      for (gint64 cx = 0; cx * OS_CHUNK < self->lw; cx++) {
        gint64 cx0 = cx * OS_CHUNK;
        gint64 cw = MIN (OS_CHUNK, self->lw - cx0);
        gint64 sx = chunk_origin (self->rx, cx, self->ds);
        guint32 *tmp = scratch_get (self, (gsize) cw * (to - cy0));

        if (!tmp)
          goto oom;
        if (!read_argb (self, sx, sy, cw, to - cy0, tmp))
          return FALSE;
        for (gint64 y = from; y < to; y++)
          wsi_slide_argb_to_rgb (tmp + (gsize) (y - cy0) * cw,
              self->row_rgb + ((gsize) (y - y0) * self->lw + cx0) * 3, cw,
              self->bg);
      }
    }
  }
  self->row_loaded = row;
  return TRUE;

oom:
  GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
      ("Not enough memory reading \"%s\" at level %d.", self->path,
          self->item_level), (NULL));
  return FALSE;
}

/* ------------------------------------------------------------------ */
/* Resampling (target-mpp)                                             */

/* One axis of the resampling: output pixel k (region-relative) covers
 * level-0 [r0 + k*d_out, r0 + (k+1)*d_out). */
typedef struct
{
  gint64 r0, rlen;              /* region, level-0 pixels */
  gdouble d_out, d_lev;         /* output and level downsample */
  gint64 lev_size;              /* level size, level pixels */
} RsAxis;

/* Filter taps of @n output pixels along one axis: pixel k uses block pixels
 * [first[k], first[k] + count[k]) with weights w[k * max_taps + t]. The
 * block starts at level-0 @origin and is @len level pixels long. */
typedef struct
{
  gint n, max_taps;
  gint *first, *count;
  gfloat *w;
  gint64 origin, len;
} RsTaps;

static void
rs_taps_clear (RsTaps * t)
{
  g_clear_pointer (&t->first, g_free);
  g_clear_pointer (&t->count, g_free);
  g_clear_pointer (&t->w, g_free);
}

/* Footprint of output pixel @k in level pixels, clipped to [a, b). */
static inline void
rs_footprint (const RsAxis * ax, gint64 k, gdouble a, gdouble b,
    gdouble * u0, gdouble * u1)
{
  *u0 = MAX (a, (ax->r0 + k * ax->d_out) / ax->d_lev);
  *u1 = MIN (b, (ax->r0 + (k + 1) * ax->d_out) / ax->d_lev);
  if (*u1 <= *u0) {             /* past a level shorter than the region */
    *u1 = b;
    *u0 = MAX (a, b - 1.0);
  }
}

/* Centre of output pixel @k in level pixel units (pixel p has centre p),
 * clamped to the pixels of [a, b). */
static inline gdouble
rs_centre (const RsAxis * ax, gint64 k, gdouble a, gdouble b)
{
  gdouble cmin = floor (a), cmax = MAX (cmin, ceil (b) - 1.0);

  return CLAMP ((ax->r0 + (k + 0.5) * ax->d_out) / ax->d_lev - 0.5, cmin,
      cmax);
}

/* Area average (box of d_out/d_lev level pixels with fractional end
 * weights) when shrinking, bilinear (pixel centres aligned) when enlarging.
 * Both only use level pixels inside the region (clamped at its edges), so
 * a tile equals the same pixels of a whole-region resample. */
static void
rs_taps_compute (const RsAxis * ax, gint64 k0, gint n, RsTaps * t)
{
  gdouble s = ax->d_out / ax->d_lev;
  gdouble a_reg = ax->r0 / ax->d_lev;
  gdouble b_reg = MIN ((ax->r0 + ax->rlen) / ax->d_lev, (gdouble) ax->lev_size);
  gboolean area = s > 1.0;
  gdouble lo, hi, u0, u1, o;
  gint64 p0;

  /* non-integer downsample: blocks start at fractional level positions
   * and OpenSlide interpolates each block pixel from two level pixels; the
   * last level pixel would be blended with the transparency past it, so
   * it is not used (the same for every tile whatever its phase) */
  if (fabs (ax->d_lev - rint (ax->d_lev)) >= 1e-9)
    b_reg = MIN (b_reg, (gdouble) ax->lev_size - 1.0);
  if (b_reg < a_reg + 1e-6)     /* level smaller than the downsample says */
    b_reg = MAX ((ax->r0 + ax->rlen) / ax->d_lev, a_reg + 1e-6);

  /* block origin: a whole level pixel before the first footprint (one
   * pixel of margin), at the level-0 position OpenSlide maps closest to it
   * (exactly when the downsample is an integer) */
  if (area) {
    rs_footprint (ax, k0, a_reg, b_reg, &u0, &u1);
    lo = u0;
  } else {
    lo = floor (rs_centre (ax, k0, a_reg, b_reg));
  }
  p0 = MAX (0, (gint64) floor (lo) - 1);
  if (fabs (ax->d_lev - rint (ax->d_lev)) < 1e-9)
    t->origin = p0 * (gint64) rint (ax->d_lev);
  else
    t->origin = (gint64) llround (p0 * ax->d_lev);
  /* block pixel q covers level [o+q, o+q+1) */
  o = t->origin / ax->d_lev;

  if (area) {
    rs_footprint (ax, k0 + n - 1, a_reg, b_reg, &u0, &u1);
    hi = u1;
  } else {
    hi = floor (rs_centre (ax, k0 + n - 1, a_reg, b_reg)) + 2.0;
  }
  t->len = MAX (1, (gint64) ceil (hi - o) + 1);

  t->n = n;
  /* a box of s level pixels touches at most ceil(s) + 1 of them */
  t->max_taps = area ? (gint) MIN (ceil (s), ceil (b_reg - a_reg)) + 2 : 2;
  t->first = g_new (gint, n);
  t->count = g_new (gint, n);
  t->w = g_new0 (gfloat, (gsize) n * t->max_taps);

  for (gint i = 0; i < n; i++) {
    gint64 k = k0 + i;
    gfloat *w = t->w + (gsize) i * t->max_taps;

    if (area) {
      gdouble sum = 0;
      gint64 qa, qb;

      rs_footprint (ax, k, a_reg, b_reg, &u0, &u1);
      u0 -= o;
      u1 -= o;
      qa = CLAMP ((gint64) floor (u0), 0, t->len - 1);
      qb = MIN (t->len, (gint64) ceil (u1));
      qb = CLAMP (qb, qa + 1, qa + t->max_taps);
      for (gint64 q = qa; q < qb; q++)
        sum += MAX (0.0, MIN (u1, q + 1.0) - MAX (u0, (gdouble) q));
      if (!(sum > 0)) {
        qb = qa + 1;
        w[0] = 1.0f;
      } else {
        for (gint64 q = qa; q < qb; q++)
          w[q - qa] = (gfloat) (MAX (0.0, MIN (u1, q + 1.0) -
                  MAX (u0, (gdouble) q)) / sum);
      }
      t->first[i] = (gint) qa;
      t->count[i] = (gint) (qb - qa);
    } else {
      gdouble c = rs_centre (ax, k, a_reg, b_reg) - o;
      gint64 q = CLAMP ((gint64) floor (c), 0, t->len - 1);
      gdouble f = CLAMP (c - q, 0.0, 1.0);

      t->first[i] = (gint) q;
      if (f > 0 && q + 1 < t->len) {
        t->count[i] = 2;
        w[0] = (gfloat) (1.0 - f);
        w[1] = (gfloat) f;
      } else {
        t->count[i] = 1;
        w[0] = 1.0f;
      }
    }
  }
}

/* Level pixels [X/d, X/d + bw) x [Y/d, Y/d + bh) (level-0 origin X, Y) as
 * RGB8 composited on the background; PNG: level 0, outside = background. */
static gboolean
rs_read_block (GstSlideSrc * self, gint64 X, gint64 Y, gint64 bw, gint64 bh,
    guint8 * rgb)
{
  return read_region (self, X, Y, bw, bh, rgb, (gsize) bw * 3);
}

/* Resamples the @vw x @vh valid part of tile (@col, @row) into @data, cell
 * by cell: each cell reads one level block of about MAX_RESAMPLE_BLOCK
 * pixels, at most OS_CHUNK a side (so OpenSlide does not split it into
 * chunks placed at other sub-pixel phases); memory follows the tile, not
 * the slide. */
static gboolean
resample_tile (GstSlideSrc * self, gint col, gint row, gint vw, gint vh,
    guint8 * data, gsize stride)
{
  RsAxis ax = { self->rx, self->rw, self->ds, self->level_ds, self->level_w };
  RsAxis ay = { self->ry, self->rh, self->ds, self->level_ds, self->level_h };
  RsTaps cx = { 0 }, cy = { 0 };
  gint64 lx = (gint64) col * self->tile_width;
  gint64 ly = (gint64) row * self->tile_height;
  const gchar *limit_env = g_getenv ("WSISEG_SLIDESRC_RESAMPLE_LIMIT");
  gsize limit = limit_env ? g_ascii_strtoull (limit_env, NULL, 10) :
      MAX_RESAMPLE_BLOCK;
  gdouble s = MAX (self->ds / self->level_ds, 1.0);
  /* output pixels per cell side: ~s level pixels each plus the margin */
  gint side = (gint) CLAMP ((MIN (OS_CHUNK, sqrt ((gdouble) limit)) - 4) / s,
      1.0, (gdouble) MAX_TILE_SIZE);
  gboolean ok = FALSE;

  for (gint i0 = 0; i0 < vw; i0 += side) {
    gint ncol = MIN (side, vw - i0), group;
    gsize row_floats = (gsize) ncol * 3;

    rs_taps_compute (&ax, lx + i0, ncol, &cx);
    group = (gint) CLAMP (((gdouble) limit / cx.len - 4.0) / s, 1.0,
        (gdouble) MIN (side, vh));

    for (gint j0 = 0; j0 < vh; j0 += group) {
      gint n = MIN (group, vh - j0);
      guint8 *rgb;
      gfloat *tmp, *acc;

      rs_taps_compute (&ay, ly + j0, n, &cy);
      rgb = grow_buffer ((gpointer *) & self->rs_rgb, &self->rs_rgb_len,
          (gsize) cx.len * cy.len * 3);
      tmp = grow_buffer ((gpointer *) & self->rs_tmp, &self->rs_tmp_len,
          ((gsize) cy.len + 1) * row_floats * sizeof (gfloat));
      if (!rgb || !tmp) {
        GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
            ("Not enough memory resampling \"%s\" (level %d, %" G_GINT64_FORMAT
                "x%" G_GINT64_FORMAT " block).", self->path, self->item_level,
                cx.len, cy.len), (NULL));
        goto done;
      }
      if (!rs_read_block (self, cx.origin, cy.origin, cx.len, cy.len, rgb))
        goto done;

      /* horizontal: each block row -> ncol filtered pixels */
      for (gint64 y = 0; y < cy.len; y++) {
        const guint8 *src = rgb + (gsize) y * cx.len * 3;
        gfloat *dst = tmp + (gsize) y * row_floats;
        for (gint i = 0; i < ncol; i++) {
          const gfloat *w = cx.w + (gsize) i * cx.max_taps;
          const guint8 *p = src + (gsize) cx.first[i] * 3;
          gfloat r = 0, g = 0, b = 0;
          for (gint t = 0; t < cx.count[i]; t++, p += 3) {
            r += w[t] * p[0];
            g += w[t] * p[1];
            b += w[t] * p[2];
          }
          dst[3 * i] = r;
          dst[3 * i + 1] = g;
          dst[3 * i + 2] = b;
        }
      }

      /* vertical: weighted sum of filtered rows -> output row */
      acc = tmp + (gsize) cy.len * row_floats;
      for (gint j = 0; j < n; j++) {
        const gfloat *w = cy.w + (gsize) j * cy.max_taps;
        guint8 *out = data + (gsize) (j0 + j) * stride + (gsize) i0 * 3;

        memset (acc, 0, row_floats * sizeof (gfloat));
        for (gint t = 0; t < cy.count[j]; t++) {
          const gfloat *src = tmp + (gsize) (cy.first[j] + t) * row_floats;
          for (gsize i = 0; i < row_floats; i++)
            acc[i] += w[t] * src[i];
        }
        for (gsize i = 0; i < row_floats; i++)
          out[i] = (guint8) CLAMP (floorf (acc[i] + 0.5f), 0.0f, 255.0f);
      }
      rs_taps_clear (&cy);
    }
    rs_taps_clear (&cx);
  }
  ok = TRUE;

done:
  rs_taps_clear (&cx);
  rs_taps_clear (&cy);
  return ok;
}

/* Writes tile (@col, @row) into @map (stride from vinfo), padding outside
 * the valid @vw x @vh area with the background colour. */
static gboolean
fill_tile (GstSlideSrc * self, gint col, gint row, gint vw, gint vh,
    guint8 * data, gsize stride)
{
  gint tw = self->tile_width, th = self->tile_height;
  gint64 lx = (gint64) col * tw, ly = (gint64) row * th;

  if (self->resample) {
    if (!resample_tile (self, col, row, vw, vh, data, stride))
      return FALSE;
  } else if (self->integer_ds) {
    /* PNG (level 0) or a whole downsample: one read of the valid part */
    gint64 ids = (gint64) rint (self->ds);

    if (!read_region (self, self->rx + lx * ids, self->ry + ly * ids, vw, vh,
            data, stride))
      return FALSE;
  } else {
    if (self->row_loaded != row && !load_tile_row (self, row))
      return FALSE;
    for (gint y = 0; y < vh; y++)
      memcpy (data + y * stride,
          self->row_rgb + ((gsize) y * self->lw + lx) * 3, (gsize) vw * 3);
  }

  /* padding */
  if (vw < tw)
    for (gint y = 0; y < vh; y++)
      wsi_slide_fill_rgb (data + y * stride + (gsize) vw * 3, tw - vw,
          self->bg);
  for (gint y = vh; y < th; y++)
    wsi_slide_fill_rgb (data + y * stride, tw, self->bg);
  return TRUE;
}

static GstFlowReturn
gst_slidesrc_create (GstPushSrc * psrc, GstBuffer ** outbuf)
{
  GstSlideSrc *self = GST_SLIDESRC (psrc);
  GstBaseSrc *bsrc = GST_BASE_SRC (psrc);
  GstBuffer *buf = NULL;
  GstVideoFrame vframe;
  GstWsiTileMeta *meta;
  GstFlowReturn ret;
  gint col, row, vw, vh;
  gint64 lx, ly;

  if (self->empty)
    return GST_FLOW_EOS;
  if (!self->item_open ||
      self->tile_index >= (gint64) self->cols * (gint64) self->rows) {
    gboolean error;
    if (!gst_slidesrc_next_item (self, &error))
      return error ? GST_FLOW_ERROR : GST_FLOW_EOS;
  }

  row = (gint) (self->tile_index / self->cols);
  col = (gint) (self->tile_index % self->cols);
  if (self->order == GST_SLIDESRC_ORDER_SERPENTINE && (row & 1))
    col = self->cols - 1 - col;
  lx = (gint64) col * self->tile_width;
  ly = (gint64) row * self->tile_height;
  vw = (gint) MIN (self->tile_width, self->lw - lx);
  vh = (gint) MIN (self->tile_height, self->lh - ly);

  if (!self->pool)
    return GST_FLOW_NOT_NEGOTIATED;
  ret = gst_buffer_pool_acquire_buffer (self->pool, &buf, NULL);
  if (ret != GST_FLOW_OK)
    return ret;
  if (!gst_video_frame_map (&vframe, &self->vinfo, buf, GST_MAP_WRITE)) {
    gst_buffer_unref (buf);
    GST_ELEMENT_ERROR (self, STREAM, FORMAT, ("Could not map buffer."),
        (NULL));
    return GST_FLOW_ERROR;
  }
  if (!fill_tile (self, col, row, vw, vh,
          GST_VIDEO_FRAME_PLANE_DATA (&vframe, 0),
          GST_VIDEO_FRAME_PLANE_STRIDE (&vframe, 0))) {
    gst_video_frame_unmap (&vframe);
    gst_buffer_unref (buf);
    return GST_FLOW_ERROR;
  }
  gst_video_frame_unmap (&vframe);

  meta = gst_wsi_tile_meta_add (buf);
  gst_wsi_tile_meta_set_slide (meta, self->path);
  meta->level = self->item_level;
  meta->downsample = self->ds;
  meta->x = self->rx + llround (lx * self->ds);
  meta->y = self->ry + llround (ly * self->ds);
  meta->width = self->tile_width;
  meta->height = self->tile_height;
  meta->valid_width = vw;
  meta->valid_height = vh;
  meta->col = col;
  meta->row = row;
  meta->grid_cols = self->cols;
  meta->grid_rows = self->rows;
  meta->overlap = 0;
  meta->region_x = self->rx;
  meta->region_y = self->ry;
  meta->region_width = self->rw;
  meta->region_height = self->rh;
  meta->slide_width = self->slide_w;
  meta->slide_height = self->slide_h;
  meta->mpp_x = self->mpp_x;
  meta->mpp_y = self->mpp_y;
  meta->level_width = self->lw;
  meta->level_height = self->lh;
  meta->frame = self->frame;
  meta->epoch = self->epoch;

  if (self->rate_n > 0) {
    GstClockTime pts = gst_util_uint64_scale (self->frame,
        GST_SECOND * self->rate_d, self->rate_n);
    GstClockTime next = gst_util_uint64_scale (self->frame + 1,
        GST_SECOND * self->rate_d, self->rate_n);
    GST_BUFFER_PTS (buf) = pts;
    GST_BUFFER_DURATION (buf) = next - pts;
  } else if (gst_base_src_is_live (bsrc)) {
    GstClock *clock = gst_element_get_clock (GST_ELEMENT (self));
    if (clock) {
      GstClockTime now = gst_clock_get_time (clock);
      GstClockTime base = gst_element_get_base_time (GST_ELEMENT (self));
      GST_BUFFER_PTS (buf) = now > base ? now - base : 0;
      gst_object_unref (clock);
    }
  }
  GST_BUFFER_OFFSET (buf) = self->frame;
  GST_BUFFER_OFFSET_END (buf) = self->frame + 1;

  self->frame++;
  self->tile_index++;
  *outbuf = buf;
  return GST_FLOW_OK;
}

static void
gst_slidesrc_finalize (GObject * object)
{
  GstSlideSrc *self = GST_SLIDESRC (object);

  gst_slidesrc_stop (GST_BASE_SRC (self));
  g_free (self->location);
  g_free (self->region);
  G_OBJECT_CLASS (gst_slidesrc_parent_class)->finalize (object);
}
