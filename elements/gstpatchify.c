/* patchify: cuts a stream of RGB frames into overlapping square patches.
 *
 * Frames either carry a GstWsiTileMeta (slidesrc) that places them in a
 * region, or are laid on a grid (grid-columns x grid-rows, live scanners,
 * videotestsrc, appsrc). The element keeps a band of region rows (region
 * width x about frame height + 2 patch sizes), and emits a row of patches
 * once every frame covering it has arrived, following the patch grid and
 * order of docs/tile-meta.md. See docs/patchify.md. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <gst/gst.h>
#include <gst/video/video.h>
#include <math.h>
#include <string.h>

#include "gstwsiprops.h"
#include "gstwsiseg.h"
#include "gstwsitilemeta.h"
#include "wsitissue.h"
#include "wsilimits.h"
#include "gstwsiaugment.h"

GST_DEBUG_CATEGORY_STATIC (gst_patchify_debug);
#define GST_CAT_DEFAULT gst_patchify_debug


/* Widest region (level pixels) the band accepts: 2^24 px is 48 MiB a row
 * of band, far above any slide level in use. */
#define MAX_PATCH_SIZE 8192
/* Largest level-0 coordinate or size accepted from a tile meta. */
#define COORD_LIMIT (G_GINT64_CONSTANT (1) << 40)

typedef enum
{
  PAD_MODE_CONSTANT,
  PAD_MODE_REFLECT,
} PadMode;

typedef enum
{
  TISSUE_ACTION_DROP,
  TISSUE_ACTION_FLAG,
} TissueAction;

#define DEFAULT_PATCH_SIZE 256
#define DEFAULT_OVERLAP 0
#define DEFAULT_PAD_MODE PAD_MODE_CONSTANT
#define DEFAULT_PAD_VALUE 0xffffff
#define DEFAULT_GRID_COLUMNS 1
#define DEFAULT_GRID_ROWS 0
#define DEFAULT_MIN_TISSUE 0.0
#define DEFAULT_TISSUE_ACTION TISSUE_ACTION_DROP
#define DEFAULT_SEED 0

enum
{
  PROP_0,
  PROP_PATCH_SIZE,
  PROP_OVERLAP,
  PROP_PAD_MODE,
  PROP_PAD_VALUE,
  PROP_GRID_COLUMNS,
  PROP_GRID_ROWS,
  PROP_MIN_TISSUE,
  PROP_TISSUE_ACTION,
  PROP_TISSUE_THRESHOLD,
  PROP_AUGMENT_FLIP,
  PROP_AUGMENT_ROTATE,
  PROP_SEED,
  PROP_POST_MESSAGES,
};

#define GST_TYPE_PATCHIFY (gst_patchify_get_type ())
G_DECLARE_FINAL_TYPE (GstPatchify, gst_patchify, GST, PATCHIFY, GstElement);

struct _GstPatchify
{
  GstElement parent;

  GstPad *sinkpad, *srcpad;

  /* properties */
  gint patch_size, overlap;
  PadMode pad_mode;
  guint pad_value;
  gint grid_columns, grid_rows;
  gdouble min_tissue;
  TissueAction tissue_action;
  gdouble tissue_threshold;
  gboolean augment_flip, augment_rotate;
  guint seed;
  gboolean post_messages;
  WsiTissueTest tissue;         /* follows tissue-threshold */
  gint running;                 /* between READY->PAUSED and PAUSED->READY */

  /* output patches: RGB patch-size square, rows 4-byte aligned */
  GstVideoInfo out_info;

  /* stream */
  GstVideoInfo info;
  gboolean have_info;
  gboolean caps_sent;
  gint64 last_msg_us;
  GRand *rand;
  guint64 patches_out;
  GstClockTime last_end;
  GstClockTime last_pts_out;    /* keeps output timestamps monotonic */

  /* current region (active when region_w > 0) */
  GstWsiTileMeta region;        /* slide, level, downsample, region, slide size, mpp */
  gboolean grid_mode;
  gint64 region_w, region_h;    /* level pixels, region_h < 0: unknown */
  gint64 seen_h;                /* bottom of the lowest frame seen */
  guint64 grid_frames;          /* frames placed on the grid so far */
  gint grid_fw, grid_fh;

  /* band of region rows [band_y0, band_y0 + band_rows) */
  guint8 *band;
  gint64 band_y0, band_rows, band_cap;
  gsize row_bytes;

  gint64 final_rows;            /* rows [0, final_rows) are complete */
  gint64 next_row;              /* next patch row to emit */
  gboolean have_cur;
  gint64 cur_top, cur_bottom;   /* current row of input frames */
  gint64 cur_x0, cur_x1;        /* columns of it received so far */
  gint cur_count;
  gboolean warned_order;
};

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK, GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE ("RGB")));
static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC, GST_PAD_ALWAYS,
    GST_STATIC_CAPS (GST_VIDEO_CAPS_MAKE ("RGB")));

#define GST_TYPE_PATCHIFY_PAD_MODE (gst_patchify_pad_mode_get_type ())
static GType
gst_patchify_pad_mode_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {PAD_MODE_CONSTANT, "Fill with pad-value", "constant"},
    {PAD_MODE_REFLECT, "Mirror the region at its edge (edge pixel not "
          "repeated)", "reflect"},
    {0, NULL, NULL}
  };

  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstPatchifyPadMode", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

#define GST_TYPE_PATCHIFY_TISSUE_ACTION (gst_patchify_tissue_action_get_type ())
static GType
gst_patchify_tissue_action_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {TISSUE_ACTION_DROP, "Drop patches below min-tissue", "drop"},
    {TISSUE_ACTION_FLAG, "Keep every patch, the tile meta's tissue_fraction "
          "tells", "flag"},
    {0, NULL, NULL}
  };

  if (g_once_init_enter (&type)) {
    GType t = g_enum_register_static ("GstPatchifyTissueAction", values);
    g_once_init_leave (&type, t);
  }
  return type;
}

G_DEFINE_TYPE (GstPatchify, gst_patchify, GST_TYPE_ELEMENT);
GST_ELEMENT_REGISTER_DEFINE_WITH_CODE (patchify, "patchify", GST_RANK_NONE,
    GST_TYPE_PATCHIFY,
    GST_DEBUG_CATEGORY_INIT (gst_patchify_debug, "patchify", 0,
        "patch cutter"); gst_wsi_augment_meta_get_info ());

/* ---- geometry helpers ---- */

static inline gint64
stride_of (GstPatchify * self)
{
  return self->patch_size - self->overlap;
}

static inline gint64
patch_origin (GstPatchify * self, gint64 index)
{
  return index * stride_of (self) - self->overlap / 2;
}

static inline gint64
ceil_div (gint64 a, gint64 b)
{
  return (a + b - 1) / b;
}

/* Mirror @v into [0, n) without repeating the edge pixel. */
static inline gint64
reflect_index (gint64 v, gint64 n)
{
  gint64 period;

  if (n <= 1)
    return 0;
  period = 2 * n - 2;
  v %= period;
  if (v < 0)
    v += period;
  return v < n ? v : period - v;
}

/* ---- region and band ---- */

static void
region_clear (GstPatchify * self)
{
  g_clear_pointer (&self->region.slide, g_free);
  memset ((guint8 *) & self->region + sizeof (GstMeta), 0,
      sizeof (GstWsiTileMeta) - sizeof (GstMeta));
  self->region_w = 0;
  self->region_h = -1;
  self->seen_h = 0;
  self->grid_frames = 0;
  self->grid_mode = FALSE;
  g_clear_pointer (&self->band, g_free);
  self->band_y0 = self->band_rows = self->band_cap = 0;
  self->row_bytes = 0;
  self->final_rows = 0;
  self->next_row = 0;
  self->have_cur = FALSE;
  self->cur_top = self->cur_bottom = 0;
  self->cur_x0 = self->cur_x1 = 0;
  self->cur_count = 0;
}

static void
fill_pad_colour (GstPatchify * self, guint8 * dst, gsize pixels)
{
  guint8 r = (self->pad_value >> 16) & 0xff;
  guint8 g = (self->pad_value >> 8) & 0xff;
  guint8 b = self->pad_value & 0xff;
  gsize i;

  if (r == g && g == b) {
    memset (dst, r, pixels * 3);
    return;
  }
  for (i = 0; i < pixels; i++, dst += 3) {
    dst[0] = r;
    dst[1] = g;
    dst[2] = b;
  }
}

/* First region row still needed: the top of the next patch row, and for
 * reflect padding a patch size more (the bottom edge mirrors rows above). */
static gint64
band_keep_from (GstPatchify * self)
{
  gint64 keep = patch_origin (self, self->next_row);

  if (self->pad_mode == PAD_MODE_REFLECT)
    keep -= self->patch_size;
  return MAX (keep, 0);
}

/* Makes the band hold rows up to @y_end (exclusive), dropping rows nobody
 * needs any more. New rows start as pad colour (missing input). */
static gboolean
band_extend (GstPatchify * self, gint64 y_end)
{
  gint64 keep = band_keep_from (self);
  gint64 need;

  if (keep > self->band_y0) {
    gint64 drop = MIN (keep - self->band_y0, self->band_rows);
    if (drop < self->band_rows)
      memmove (self->band, self->band + drop * self->row_bytes,
          (self->band_rows - drop) * self->row_bytes);
    self->band_rows -= drop;
    self->band_y0 = keep;
  }

  need = y_end - self->band_y0;
  if (need <= self->band_rows)
    return TRUE;
  if (need > self->band_cap) {
    gint64 cap = MAX (need, self->band_cap + self->band_cap / 2);
    guint8 *mem;

    if ((guint64) cap > G_MAXSIZE / self->row_bytes)
      return FALSE;
    mem = g_try_realloc (self->band, cap * self->row_bytes);
    if (!mem)
      return FALSE;
    self->band = mem;
    self->band_cap = cap;
    GST_DEBUG_OBJECT (self, "band now %" G_GINT64_FORMAT " rows of %"
        G_GSIZE_FORMAT " bytes", cap, self->row_bytes);
  }
  fill_pad_colour (self, self->band + self->band_rows * self->row_bytes,
      (need - self->band_rows) * self->region_w);
  self->band_rows = need;
  return TRUE;
}

static inline const guint8 *
band_row (GstPatchify * self, gint64 y)
{
  if (y < self->band_y0 || y >= self->band_y0 + self->band_rows)
    return NULL;
  return self->band + (y - self->band_y0) * self->row_bytes;
}

/* ---- patches ---- */

static void
copy_patch_row (GstPatchify * self, guint8 * dst, const guint8 * src,
    gint64 left)
{
  gint64 p = self->patch_size, w = self->region_w, i;
  gint64 a = CLAMP (-left, 0, p);       /* first in-region column */
  gint64 b = CLAMP (w - left, a, p);    /* end of in-region columns */

  if (!src) {
    fill_pad_colour (self, dst, p);
    return;
  }
  if (b > a)
    memcpy (dst + a * 3, src + (left + a) * 3, (b - a) * 3);
  if (self->pad_mode == PAD_MODE_CONSTANT) {
    fill_pad_colour (self, dst, a);
    fill_pad_colour (self, dst + b * 3, p - b);
    return;
  }
  for (i = 0; i < a; i++)
    memcpy (dst + i * 3, src + reflect_index (left + i, w) * 3, 3);
  for (i = b; i < p; i++)
    memcpy (dst + i * 3, src + reflect_index (left + i, w) * 3, 3);
}

/* Applies flip-h, then flip-v, then @rot quarter turns counterclockwise
 * (numpy: fliplr, flipud, rot90(k=rot)) to a square RGB patch whose rows
 * are @stride bytes apart. @tmp holds two packed patches. */
static void
augment_patch (guint8 * data, gsize stride, guint8 * tmp, gint p,
    gboolean flip_h, gboolean flip_v, gint rot)
{
  gsize ps = (gsize) p * 3;
  guint8 *a = tmp, *b = tmp + ps * p, *t;
  gint i, j;

  for (j = 0; j < p; j++) {
    gint sj = flip_v ? p - 1 - j : j;
    for (i = 0; i < p; i++) {
      gint si = flip_h ? p - 1 - i : i;
      memcpy (a + j * ps + i * 3, data + sj * stride + si * 3, 3);
    }
  }
  /* out[j][i] = in[i][p-1-j] per quarter turn, i.e. one np.rot90 */
  for (; rot > 0; rot--) {
    for (j = 0; j < p; j++)
      for (i = 0; i < p; i++)
        memcpy (b + j * ps + i * 3, a + i * ps + (p - 1 - j) * 3, 3);
    t = a;
    a = b;
    b = t;
  }
  for (j = 0; j < p; j++)
    memcpy (data + j * stride, a + j * ps, ps);
}

static gboolean
send_src_caps (GstPatchify * self)
{
  GstCaps *caps;
  gboolean ret;

  caps = gst_caps_new_simple ("video/x-raw",
      "format", G_TYPE_STRING, "RGB",
      "width", G_TYPE_INT, self->patch_size,
      "height", G_TYPE_INT, self->patch_size,
      "framerate", GST_TYPE_FRACTION, 0, 1,
      "pixel-aspect-ratio", GST_TYPE_FRACTION, 1, 1, NULL);
  ret = gst_pad_push_event (self->srcpad, gst_event_new_caps (caps));
  gst_caps_unref (caps);
  self->caps_sent = ret;
  return ret;
}

static GstFlowReturn
emit_patch (GstPatchify * self, gint64 c, gint64 r, gint64 height,
    GstClockTime pts, GstClockTime duration)
{
  gint64 p = self->patch_size, left = patch_origin (self, c);
  gint64 top = patch_origin (self, r), j;
  gint64 vx0 = MAX (left, 0), vx1 = MIN (left + p, self->region_w);
  gint64 vy0 = MAX (top, 0), vy1 = MIN (top + p, height);
  gint64 stride = stride_of (self);
  gdouble ds = self->region.downsample, fraction = 0.0, min_tissue;
  gboolean keep, flip_h = FALSE, flip_v = FALSE;
  gint rot = 0;
  GstBuffer *buf;
  GstMapInfo map;
  GstWsiTileMeta *m;
  WsiTissueTest tissue;
  TissueAction action;
  gboolean post_messages, aug_flip, aug_rotate;
  gsize ostride = GST_VIDEO_INFO_PLANE_STRIDE (&self->out_info, 0);

  buf = gst_buffer_new_allocate (NULL, GST_VIDEO_INFO_SIZE (&self->out_info),
      NULL);
  if (!buf || !gst_buffer_map (buf, &map, GST_MAP_WRITE)) {
    g_clear_pointer (&buf, gst_buffer_unref);
    GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
        ("Not enough memory for a %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT
            " patch", p, p), (NULL));
    return GST_FLOW_ERROR;
  }
  for (j = 0; j < p; j++) {
    gint64 y = top + j, sy = y;
    if (y < 0 || y >= height)
      sy = self->pad_mode == PAD_MODE_REFLECT ? reflect_index (y, height) : -1;
    copy_patch_row (self, map.data + j * ostride,
        sy >= 0 ? band_row (self, sy) : NULL, left);
    /* row padding to the 4-byte stride: deterministic bytes */
    memset (map.data + j * ostride + p * 3, 0, ostride - p * 3);
  }

  GST_OBJECT_LOCK (self);
  tissue = self->tissue;
  min_tissue = self->min_tissue;
  action = self->tissue_action;
  post_messages = self->post_messages;
  aug_flip = self->augment_flip;
  aug_rotate = self->augment_rotate;
  GST_OBJECT_UNLOCK (self);

  if (vx1 > vx0 && vy1 > vy0) {
    guint64 n = wsi_tissue_count_rgb (&tissue,
        map.data + (vy0 - top) * ostride + (vx0 - left) * 3,
        vx1 - vx0, vy1 - vy0, ostride, NULL, 0);
    fraction = (gdouble) n / ((vx1 - vx0) * (vy1 - vy0));
  }
  keep = action == TISSUE_ACTION_FLAG || fraction >= min_tissue;

  if (gst_wsi_periodic_message_due (post_messages, &self->last_msg_us, 0)) {
    GstStructure *s = gst_structure_new ("patchify-patch",
        "col", G_TYPE_INT, (gint) c, "row", G_TYPE_INT, (gint) r,
        "x", G_TYPE_INT64, self->region.region_x + (gint64) llround (left * ds),
        "y", G_TYPE_INT64, self->region.region_y + (gint64) llround (top * ds),
        "tissue-fraction", G_TYPE_DOUBLE, fraction,
        "kept", G_TYPE_BOOLEAN, keep, NULL);
    gst_element_post_message (GST_ELEMENT (self),
        gst_message_new_element (GST_OBJECT (self), s));
  }
  if (!keep) {
    GST_LOG_OBJECT (self, "patch (%" G_GINT64_FORMAT ",%" G_GINT64_FORMAT
        ") dropped, tissue %.3f", c, r, fraction);
    gst_buffer_unmap (buf, &map);
    gst_buffer_unref (buf);
    return GST_FLOW_OK;
  }

  if (aug_flip || aug_rotate) {
    GstCustomMeta *cm;
    guint8 *tmp = g_malloc ((gsize) p * p * 3 * 2);

    if (aug_flip) {
      flip_h = g_rand_boolean (self->rand);
      flip_v = g_rand_boolean (self->rand);
    }
    if (aug_rotate)
      rot = g_rand_int_range (self->rand, 0, 4);
    augment_patch (map.data, ostride, tmp, p, flip_h, flip_v, rot);
    g_free (tmp);
    cm = gst_buffer_add_custom_meta (buf, GST_WSI_AUGMENT_META_NAME);
    if (cm)
      gst_structure_set (gst_custom_meta_get_structure (cm),
          "flip-h", G_TYPE_BOOLEAN, flip_h, "flip-v", G_TYPE_BOOLEAN, flip_v,
          "rotate90", G_TYPE_INT, rot, NULL);
  }
  gst_buffer_unmap (buf, &map);

  m = gst_wsi_tile_meta_add (buf);
  gst_wsi_tile_meta_set_slide (m, self->region.slide);
  m->level = self->region.level;
  m->downsample = ds;
  m->x = self->region.region_x + (gint64) llround (left * ds);
  m->y = self->region.region_y + (gint64) llround (top * ds);
  m->width = m->height = p;
  m->pad_left = vx0 - left;
  m->pad_top = vy0 - top;
  m->valid_width = MAX (vx1 - vx0, 0);
  m->valid_height = MAX (vy1 - vy0, 0);
  m->col = c;
  m->row = r;
  m->grid_cols = ceil_div (self->region_w, stride);
  m->grid_rows = self->region_h >= 0 ? ceil_div (self->region_h, stride) : 0;
  m->overlap = self->overlap;
  m->region_x = self->region.region_x;
  m->region_y = self->region.region_y;
  m->region_width = self->region.region_width;
  /* height unknown (open-ended mosaic): 0, like grid_rows */
  m->region_height = self->region_h >= 0 ? self->region.region_height : 0;
  m->slide_width = self->region.slide_width;
  m->slide_height = self->region_h >= 0 ? self->region.slide_height : 0;
  m->mpp_x = self->region.mpp_x;
  m->mpp_y = self->region.mpp_y;
  m->level_width = self->region_w;
  m->level_height = self->region_h >= 0 ? self->region_h : 0;
  m->frame = self->patches_out;
  m->epoch = self->region.epoch;
  m->tissue_fraction = fraction;

  GST_BUFFER_PTS (buf) = pts;
  GST_BUFFER_DURATION (buf) = duration;
  GST_BUFFER_OFFSET (buf) = self->patches_out;
  GST_BUFFER_OFFSET_END (buf) = self->patches_out + 1;
  self->patches_out++;

  if (!self->caps_sent && !send_src_caps (self)) {
    gst_buffer_unref (buf);
    return GST_FLOW_NOT_NEGOTIATED;
  }
  return gst_pad_push (self->srcpad, buf);
}

/* TRUE when the region's frames did not all arrive: the source stopped
 * early (EOS after SIGINT with gst-launch -e, a num-buffers limit). */
static gboolean
region_incomplete (GstPatchify * self)
{
  return self->region_h >= 0 && (!self->have_cur ||
      self->cur_bottom < self->region_h || self->cur_x0 > 0 ||
      self->cur_x1 < self->region_w);
}

/* At EOS of an incomplete region: does patch (@c, @r) touch pixels that
 * arrived? Rows above the last row of frames are complete; of that row,
 * columns [cur_x0, cur_x1) arrived. */
static gboolean
patch_touches_received (GstPatchify * self, gint64 c, gint64 r)
{
  gint64 left = patch_origin (self, c), top = patch_origin (self, r);

  if (!self->have_cur)
    return FALSE;
  if (top < self->cur_top)
    return TRUE;
  return top < self->cur_bottom && left < self->cur_x1 &&
      left + self->patch_size > self->cur_x0;
}

/* Emits every patch row whose rows are all complete. At EOS (or a region
 * change) the whole region is complete; with @trim (EOS of an incomplete
 * region) only patches touching received pixels are emitted, the rest of
 * the grid is counted in *@dropped. Patches get timestamps spread over
 * [pts, pts + duration) of the frame that completed them. */
static GstFlowReturn
emit_ready_rows_full (GstPatchify * self, gboolean at_end, gboolean trim,
    guint64 * dropped, GstClockTime pts, GstClockTime duration)
{
  gint64 stride = stride_of (self), height, rows_ready = 0, cols, r, c;
  gint64 n = 0, total;
  GstFlowReturn ret = GST_FLOW_OK;

  if (self->region_w <= 0)
    return GST_FLOW_OK;
  height = self->region_h >= 0 ? self->region_h : self->seen_h;
  if (at_end)
    self->final_rows = height;
  cols = ceil_div (self->region_w, stride);

  for (r = self->next_row;; r++) {
    gint64 top = patch_origin (self, r), bottom = top + self->patch_size;
    if (r * stride >= height)
      break;
    if (self->region_h >= 0 || at_end)
      bottom = MIN (bottom, height);
    if (self->final_rows < bottom)
      break;
    rows_ready++;
  }
  total = rows_ready * cols;
  for (r = self->next_row; r < self->next_row + rows_ready; r++) {
    for (c = 0; c < cols && ret == GST_FLOW_OK; c++, n++) {
      GstClockTime t = pts, d = GST_CLOCK_TIME_NONE;
      if (GST_CLOCK_TIME_IS_VALID (pts) && GST_CLOCK_TIME_IS_VALID (duration)) {
        t = pts + gst_util_uint64_scale (duration, n, total);
        d = gst_util_uint64_scale (duration, n + 1, total) -
            gst_util_uint64_scale (duration, n, total);
      }
      if (GST_CLOCK_TIME_IS_VALID (t) &&
          GST_CLOCK_TIME_IS_VALID (self->last_pts_out))
        t = MAX (t, self->last_pts_out);
      if (GST_CLOCK_TIME_IS_VALID (t))
        self->last_pts_out = t;
      if (trim && !patch_touches_received (self, c, r)) {
        (*dropped)++;
        continue;
      }
      ret = emit_patch (self, c, r, height, t, d);
    }
    if (ret != GST_FLOW_OK)
      break;
  }
  self->next_row += rows_ready;
  if (ret == GST_FLOW_OK && rows_ready > 0)
    GST_DEBUG_OBJECT (self, "emitted %" G_GINT64_FORMAT " patch rows, next %"
        G_GINT64_FORMAT, rows_ready, self->next_row);
  return ret;
}

static GstFlowReturn
emit_ready_rows (GstPatchify * self, gboolean at_end, GstClockTime pts,
    GstClockTime duration)
{
  return emit_ready_rows_full (self, at_end, FALSE, NULL, pts, duration);
}

/* Ends the current region. At a region change every remaining patch comes
 * out (missing frames read as pad-value). At EOS an incomplete region
 * only gives the patches touching received pixels (so a stopped run shuts
 * down at once), then a custom downstream event "wsi-region-incomplete"
 * tells consumers the rest of the grid is missing (docs/patchify.md). */
static GstFlowReturn
finish_region (GstPatchify * self, gboolean at_eos)
{
  gboolean trim = at_eos && self->region_w > 0 && region_incomplete (self);
  guint64 dropped = 0;
  GstFlowReturn ret;
  gint64 received = self->have_cur ? self->cur_bottom : 0;

  ret = emit_ready_rows_full (self, TRUE, trim, &dropped, self->last_end,
      GST_CLOCK_TIME_NONE);
  if (trim && ret == GST_FLOW_OK) {
    GstStructure *s = gst_structure_new ("wsi-region-incomplete",
        "slide", G_TYPE_STRING, self->region.slide,
        "level", G_TYPE_INT, self->region.level,
        "region-x", G_TYPE_INT64, self->region.region_x,
        "region-y", G_TYPE_INT64, self->region.region_y,
        "region-width", G_TYPE_INT64, self->region.region_width,
        "region-height", G_TYPE_INT64, self->region.region_height,
        "level-width", G_TYPE_INT64, self->region_w,
        "level-height", G_TYPE_INT64, self->region_h,
        "received-height", G_TYPE_INT64, received,
        "patches-dropped", G_TYPE_UINT64, dropped, NULL);

    GST_INFO_OBJECT (self, "EOS before the region was complete: %"
        G_GINT64_FORMAT " of %" G_GINT64_FORMAT " rows received, %"
        G_GUINT64_FORMAT " patches of the grid dropped", received,
        self->region_h, dropped);
    gst_element_post_message (GST_ELEMENT (self),
        gst_message_new_element (GST_OBJECT (self), gst_structure_copy (s)));
    gst_pad_push_event (self->srcpad,
        gst_event_new_custom (GST_EVENT_CUSTOM_DOWNSTREAM, s));
  }
  region_clear (self);
  return ret;
}

static gboolean
same_region (GstPatchify * self, const GstWsiTileMeta * m)
{
  const GstWsiTileMeta *a = &self->region;

  return !self->grid_mode && g_strcmp0 (a->slide, m->slide) == 0 &&
      a->level == m->level && a->downsample == m->downsample &&
      a->region_x == m->region_x && a->region_y == m->region_y &&
      a->region_width == m->region_width &&
      a->region_height == m->region_height && a->epoch == m->epoch;
}

static gboolean
start_region (GstPatchify * self, const GstWsiTileMeta * m, gboolean grid,
    gint64 width, gint64 height)
{
  GstWsiTileMeta *a = &self->region;

  region_clear (self);
  a->slide = g_strdup (m->slide ? m->slide : "");
  a->level = m->level;
  a->epoch = m->epoch;
  a->downsample = m->downsample;
  a->region_x = m->region_x;
  a->region_y = m->region_y;
  a->region_width = m->region_width;
  a->region_height = m->region_height;
  a->slide_width = m->slide_width;
  a->slide_height = m->slide_height;
  a->mpp_x = m->mpp_x;
  a->mpp_y = m->mpp_y;
  self->grid_mode = grid;
  self->region_h = height;
  if (width > WSI_MAX_REGION_WIDTH) {
    GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
        ("Region of %" G_GINT64_FORMAT " level pixels wide is over the limit "
            "of %" G_GINT64_FORMAT " for patchify's band of rows", width,
            WSI_MAX_REGION_WIDTH), (NULL));
    return FALSE;
  }
  if (width <= 0) {
    GST_ELEMENT_ERROR (self, STREAM, DECODE, ("Unusable region width"),
        ("region is %" G_GINT64_FORMAT " level pixels wide", width));
    return FALSE;
  }
  self->region_w = width;
  self->row_bytes = (gsize) width * 3;
  GST_DEBUG_OBJECT (self, "new region %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT
      " (%s)", width, height, grid ? "grid" : "tile meta");
  return TRUE;
}

/* Records where the frame's valid rows [top, bottom) sit and how far the
 * region is complete. Rows above a new row of input frames are final;
 * a full row of grid_cols frames completes its rows too. */
static void
track_rows (GstPatchify * self, gint64 top, gint64 bottom, gint64 x0,
    gint64 x1, gint grid_cols)
{
  if (!self->have_cur || top > self->cur_top) {
    self->final_rows = MAX (self->final_rows, top);
    self->have_cur = TRUE;
    self->cur_top = top;
    self->cur_bottom = bottom;
    self->cur_x0 = x1 > x0 ? x0 : G_MAXINT64;
    self->cur_x1 = x1 > x0 ? x1 : G_MININT64;
    self->cur_count = 0;
  } else if (top < self->cur_top && !self->warned_order) {
    GST_ELEMENT_WARNING (self, STREAM, FAILED,
        ("Input frames are not in row order (shuffled source?): patches "
            "already emitted miss later frames' pixels"),
        ("frame at row %" G_GINT64_FORMAT " arrived after one at row %"
            G_GINT64_FORMAT, top, self->cur_top));
    self->warned_order = TRUE;
  }
  self->cur_count++;
  self->cur_bottom = MAX (self->cur_bottom, bottom);
  if (top >= self->cur_top && x1 > x0) {
    self->cur_x0 = MIN (self->cur_x0, x0);
    self->cur_x1 = MAX (self->cur_x1, x1);
  }
  if (grid_cols > 0 && self->cur_count >= grid_cols)
    self->final_rows = MAX (self->final_rows, self->cur_bottom);
  self->seen_h = MAX (self->seen_h, bottom);
  if (self->region_h >= 0)
    self->final_rows = MIN (self->final_rows, self->region_h);
}

static GstFlowReturn
gst_patchify_chain (GstPad * pad, GstObject * parent, GstBuffer * inbuf)
{
  GstPatchify *self = GST_PATCHIFY (parent);
  GstWsiTileMeta *in_meta = gst_buffer_get_wsi_tile_meta (inbuf);
  GstWsiTileMeta m;
  GstVideoFrame frame;
  GstFlowReturn ret = GST_FLOW_OK;
  gint fw, fh, grid_cols;
  gint64 fx, fy, vx, vy, vw, vh, y, x0, x1;
  GstClockTime pts = GST_BUFFER_PTS (inbuf), dur = GST_BUFFER_DURATION (inbuf);

  if (!self->have_info) {
    GST_ELEMENT_ERROR (self, STREAM, FORMAT, (NULL),
        ("buffer before caps"));
    gst_buffer_unref (inbuf);
    return GST_FLOW_NOT_NEGOTIATED;
  }
  fw = GST_VIDEO_INFO_WIDTH (&self->info);
  fh = GST_VIDEO_INFO_HEIGHT (&self->info);

  if (in_meta && in_meta->region_width > 0 && in_meta->region_height > 0) {
    gint64 rw, rh;

    m = *in_meta;               /* shallow copy, m.slide borrowed */
    gst_wsi_tile_meta_fit_to_size (&m, fw, fh);
    /* the meta comes from upstream: keep all arithmetic far from overflow */
    if (!(m.downsample >= 1e-6 && m.downsample <= 1e6) ||
        ABS (m.x) > COORD_LIMIT || ABS (m.y) > COORD_LIMIT ||
        ABS (m.region_x) > COORD_LIMIT || ABS (m.region_y) > COORD_LIMIT ||
        m.region_width > COORD_LIMIT || m.region_height > COORD_LIMIT) {
      GST_ELEMENT_ERROR (self, STREAM, DECODE, ("Invalid tile metadata"),
          ("downsample %g, x %" G_GINT64_FORMAT ", y %" G_GINT64_FORMAT
              ", region %" G_GINT64_FORMAT ",%" G_GINT64_FORMAT " %"
              G_GINT64_FORMAT "x%" G_GINT64_FORMAT, m.downsample, m.x, m.y,
              m.region_x, m.region_y, m.region_width, m.region_height));
      gst_buffer_unref (inbuf);
      return GST_FLOW_ERROR;
    }
    if (self->region_w > 0 && !same_region (self, &m))
      ret = finish_region (self, FALSE);
    if (ret != GST_FLOW_OK)
      goto done;
    gst_wsi_tile_meta_region_level_size (&m, &rw, &rh);
    if (self->region_w <= 0 && !start_region (self, &m, FALSE, rw, rh)) {
      ret = GST_FLOW_ERROR;
      goto done;
    }
    fx = (gint64) llround ((m.x - m.region_x) / m.downsample);
    fy = (gint64) llround ((m.y - m.region_y) / m.downsample);
    vx = CLAMP (m.pad_left, 0, fw);
    vy = CLAMP (m.pad_top, 0, fh);
    vw = m.valid_width > 0 ? MIN (m.valid_width, fw - vx) : fw - vx;
    vh = m.valid_height > 0 ? MIN (m.valid_height, fh - vy) : fh - vy;
    grid_cols = m.grid_cols;
  } else {
    gint cols, rows;
    guint64 n;

    GST_OBJECT_LOCK (self);
    cols = self->grid_columns;
    rows = self->grid_rows;
    GST_OBJECT_UNLOCK (self);
    /* a new mosaic: first frame, other geometry, or the last one is full */
    if (self->region_w > 0 && (!self->grid_mode || self->grid_fw != fw ||
            self->grid_fh != fh || self->region_w != (gint64) cols * fw ||
            (self->region_h >= 0 &&
                self->grid_frames >= (guint64) cols * (self->region_h / fh))))
      ret = finish_region (self, FALSE);
    if (ret != GST_FLOW_OK)
      goto done;
    if (self->region_w <= 0) {
      GstWsiTileMeta g;

      memset (&g, 0, sizeof (g));
      g.downsample = 1.0;
      g.region_width = g.slide_width = (gint64) cols * fw;
      g.region_height = g.slide_height = (gint64) rows * fh;
      if (!start_region (self, &g, TRUE, (gint64) cols * fw,
              rows > 0 ? (gint64) rows * fh : -1)) {
        ret = GST_FLOW_ERROR;
        goto done;
      }
      self->grid_fw = fw;
      self->grid_fh = fh;
    }
    n = self->grid_frames++;
    fx = (gint64) (n % cols) * fw;
    fy = (gint64) (n / cols) * fh;
    vx = vy = 0;
    vw = fw;
    vh = fh;
    grid_cols = cols;
  }

  /* the part of the frame inside the region */
  x0 = MAX (fx + vx, 0);
  x1 = MIN (fx + vx + vw, self->region_w);
  {
    gint64 top = fy + vy, bottom = fy + vy + vh;
    gint64 y0 = MAX (top, 0);
    gint64 y1 = self->region_h >= 0 ? MIN (bottom, self->region_h) : bottom;

    if (y1 > y0 && (!self->have_cur || y0 > self->cur_top)) {
      /* a new row of input frames: rows above it are complete; emit them
       * first so the band never spans a gap of missing frames */
      self->final_rows = MAX (self->final_rows, y0);
      if (self->region_h >= 0)
        self->final_rows = MIN (self->final_rows, self->region_h);
      ret = emit_ready_rows (self, FALSE, pts, dur);
      if (ret != GST_FLOW_OK)
        goto done;
    }
    if (y1 > y0 && x1 > x0) {
      if (!band_extend (self, y1)) {
        GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
            ("Not enough memory for the patch band"),
            ("%" G_GINT64_FORMAT " rows of %" G_GINT64_FORMAT " pixels",
                y1 - self->band_y0, self->region_w));
        ret = GST_FLOW_ERROR;
        goto done;
      }
      if (!gst_video_frame_map (&frame, &self->info, inbuf, GST_MAP_READ)) {
        GST_ELEMENT_ERROR (self, STREAM, FORMAT, (NULL),
            ("could not map the input frame: smaller than its caps say"));
        ret = GST_FLOW_ERROR;
        goto done;
      }
      for (y = MAX (y0, self->band_y0); y < y1; y++) {
        const guint8 *src = (const guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&frame,
            0) + (y - fy) * GST_VIDEO_FRAME_PLANE_STRIDE (&frame, 0) +
            (x0 - fx) * 3;
        memcpy (self->band + (y - self->band_y0) * self->row_bytes + x0 * 3,
            src, (x1 - x0) * 3);
      }
      gst_video_frame_unmap (&frame);
    }
    if (bottom > 0 && y1 > y0)
      track_rows (self, y0, y1, x0, x1, grid_cols);
  }

  if (GST_CLOCK_TIME_IS_VALID (pts))
    self->last_end = GST_CLOCK_TIME_IS_VALID (dur) ? pts + dur : pts;
  ret = emit_ready_rows (self, FALSE, pts, dur);
  if (ret == GST_FLOW_OK && self->region_h >= 0 &&
      self->next_row * stride_of (self) >= self->region_h)
    region_clear (self);        /* region done: free the band */

done:
  gst_buffer_unref (inbuf);
  return ret;
}

static gboolean
gst_patchify_sink_event (GstPad * pad, GstObject * parent, GstEvent * event)
{
  GstPatchify *self = GST_PATCHIFY (parent);

  switch (GST_EVENT_TYPE (event)) {
    case GST_EVENT_CAPS:{
      GstCaps *caps;
      GstVideoInfo info;

      gst_event_parse_caps (event, &caps);
      if (!gst_video_info_from_caps (&info, caps) ||
          GST_VIDEO_INFO_FORMAT (&info) != GST_VIDEO_FORMAT_RGB) {
        GST_ELEMENT_ERROR (self, STREAM, FORMAT, (NULL),
            ("patchify takes packed RGB frames, got %" GST_PTR_FORMAT, caps));
        gst_event_unref (event);
        return FALSE;
      }
      self->info = info;
      self->have_info = TRUE;
      gst_event_unref (event);
      return self->caps_sent ? TRUE : send_src_caps (self);
    }
    case GST_EVENT_EOS:
      if (finish_region (self, TRUE) != GST_FLOW_OK)
        GST_DEBUG_OBJECT (self, "flow stopped while flushing at EOS");
      break;
    case GST_EVENT_FLUSH_STOP:
      region_clear (self);
      self->last_end = self->last_pts_out = GST_CLOCK_TIME_NONE;
      break;
    default:
      break;
  }
  return gst_pad_event_default (pad, parent, event);
}

static gboolean
gst_patchify_src_query (GstPad * pad, GstObject * parent, GstQuery * query)
{
  GstPatchify *self = GST_PATCHIFY (parent);

  if (GST_QUERY_TYPE (query) == GST_QUERY_CAPS) {
    GstCaps *filter, *caps;

    gst_query_parse_caps (query, &filter);
    caps = gst_caps_new_simple ("video/x-raw",
        "format", G_TYPE_STRING, "RGB",
        "width", G_TYPE_INT, self->patch_size,
        "height", G_TYPE_INT, self->patch_size, NULL);
    if (filter) {
      GstCaps *tmp = gst_caps_intersect_full (filter, caps,
          GST_CAPS_INTERSECT_FIRST);
      gst_caps_unref (caps);
      caps = tmp;
    }
    gst_query_set_caps_result (query, caps);
    gst_caps_unref (caps);
    return TRUE;
  }
  return gst_pad_query_default (pad, parent, query);
}

static GstStateChangeReturn
gst_patchify_change_state (GstElement * element, GstStateChange transition)
{
  GstPatchify *self = GST_PATCHIFY (element);
  GstStateChangeReturn ret;

  if (transition == GST_STATE_CHANGE_READY_TO_PAUSED) {
    /* from here on READY-only properties are refused */
    gst_wsi_set_running (element, &self->running, TRUE);
    if (self->patch_size < 1 || self->patch_size > MAX_PATCH_SIZE ||
        self->overlap >= self->patch_size) {
      gst_wsi_set_running (element, &self->running, FALSE);
      GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
          ("Invalid patch geometry: patch-size=%d overlap=%d",
              self->patch_size, self->overlap),
          ("patch-size must be at least 1 and at most %d, and overlap "
              "smaller than patch-size", MAX_PATCH_SIZE));
      return GST_STATE_CHANGE_FAILURE;
    }
    region_clear (self);
    gst_video_info_set_format (&self->out_info, GST_VIDEO_FORMAT_RGB,
        self->patch_size, self->patch_size);
    self->have_info = FALSE;
    self->caps_sent = FALSE;
    self->last_msg_us = 0;
    self->patches_out = 0;
    self->last_end = GST_CLOCK_TIME_NONE;
    self->last_pts_out = GST_CLOCK_TIME_NONE;
    self->warned_order = FALSE;
    g_clear_pointer (&self->rand, g_rand_free);
    self->rand = g_rand_new_with_seed (self->seed);
  }

  ret = GST_ELEMENT_CLASS (gst_patchify_parent_class)->change_state (element,
      transition);

  if (transition == GST_STATE_CHANGE_READY_TO_PAUSED &&
      ret == GST_STATE_CHANGE_FAILURE)
    gst_wsi_set_running (element, &self->running, FALSE);
  if (transition == GST_STATE_CHANGE_PAUSED_TO_READY) {
    region_clear (self);
    g_clear_pointer (&self->rand, g_rand_free);
    gst_wsi_set_running (element, &self->running, FALSE);
  }
  return ret;
}

static void
gst_patchify_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec)
{
  GstPatchify *self = GST_PATCHIFY (object);

  /* geometry, padding, grid and augmentation settings only change in
   * NULL/READY: the band, the caps sent and the random stream follow them */
  if (gst_wsi_property_refused (GST_ELEMENT (self), &self->running, pspec))
    return;

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_PATCH_SIZE:
      self->patch_size = g_value_get_int (value);
      break;
    case PROP_OVERLAP:
      self->overlap = g_value_get_int (value);
      break;
    case PROP_PAD_MODE:
      self->pad_mode = g_value_get_enum (value);
      break;
    case PROP_PAD_VALUE:
      self->pad_value = g_value_get_uint (value);
      break;
    case PROP_GRID_COLUMNS:
      self->grid_columns = g_value_get_int (value);
      break;
    case PROP_GRID_ROWS:
      self->grid_rows = g_value_get_int (value);
      break;
    case PROP_MIN_TISSUE:
      self->min_tissue = g_value_get_double (value);
      break;
    case PROP_TISSUE_ACTION:
      self->tissue_action = g_value_get_enum (value);
      break;
    case PROP_TISSUE_THRESHOLD:
      self->tissue_threshold = g_value_get_double (value);
      wsi_tissue_test_init (&self->tissue, self->tissue_threshold);
      break;
    case PROP_AUGMENT_FLIP:
      self->augment_flip = g_value_get_boolean (value);
      break;
    case PROP_AUGMENT_ROTATE:
      self->augment_rotate = g_value_get_boolean (value);
      break;
    case PROP_SEED:
      self->seed = g_value_get_uint (value);
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
gst_patchify_get_property (GObject * object, guint prop_id, GValue * value,
    GParamSpec * pspec)
{
  GstPatchify *self = GST_PATCHIFY (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_PATCH_SIZE:
      g_value_set_int (value, self->patch_size);
      break;
    case PROP_OVERLAP:
      g_value_set_int (value, self->overlap);
      break;
    case PROP_PAD_MODE:
      g_value_set_enum (value, self->pad_mode);
      break;
    case PROP_PAD_VALUE:
      g_value_set_uint (value, self->pad_value);
      break;
    case PROP_GRID_COLUMNS:
      g_value_set_int (value, self->grid_columns);
      break;
    case PROP_GRID_ROWS:
      g_value_set_int (value, self->grid_rows);
      break;
    case PROP_MIN_TISSUE:
      g_value_set_double (value, self->min_tissue);
      break;
    case PROP_TISSUE_ACTION:
      g_value_set_enum (value, self->tissue_action);
      break;
    case PROP_TISSUE_THRESHOLD:
      g_value_set_double (value, self->tissue_threshold);
      break;
    case PROP_AUGMENT_FLIP:
      g_value_set_boolean (value, self->augment_flip);
      break;
    case PROP_AUGMENT_ROTATE:
      g_value_set_boolean (value, self->augment_rotate);
      break;
    case PROP_SEED:
      g_value_set_uint (value, self->seed);
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

static void
gst_patchify_finalize (GObject * object)
{
  GstPatchify *self = GST_PATCHIFY (object);

  region_clear (self);
  g_clear_pointer (&self->rand, g_rand_free);
  G_OBJECT_CLASS (gst_patchify_parent_class)->finalize (object);
}

static void
gst_patchify_class_init (GstPatchifyClass * klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  const GParamFlags ready = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
      GST_PARAM_MUTABLE_READY;
  const GParamFlags playing = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
      GST_PARAM_MUTABLE_PLAYING;

  gobject_class->set_property = gst_patchify_set_property;
  gobject_class->get_property = gst_patchify_get_property;
  gobject_class->finalize = gst_patchify_finalize;

  g_object_class_install_property (gobject_class, PROP_PATCH_SIZE,
      g_param_spec_int ("patch-size", "Patch size",
          "Width and height of the square output patches in level pixels, "
          "1 to " G_STRINGIFY (MAX_PATCH_SIZE) "; any size (rows of the RGB "
          "output are 4-byte aligned as GstVideoInfo says)",
          1, MAX_PATCH_SIZE, DEFAULT_PATCH_SIZE, ready));
  g_object_class_install_property (gobject_class, PROP_OVERLAP,
      g_param_spec_int ("overlap", "Overlap",
          "Pixels shared by neighbouring patches (must be smaller than "
          "patch-size, checked when the element starts); stride is "
          "patch-size - overlap", 0, MAX_PATCH_SIZE - 1, DEFAULT_OVERLAP,
          ready));
  g_object_class_install_property (gobject_class, PROP_PAD_MODE,
      g_param_spec_enum ("pad-mode", "Pad mode",
          "How pixels outside the region are filled",
          GST_TYPE_PATCHIFY_PAD_MODE, DEFAULT_PAD_MODE, ready));
  g_object_class_install_property (gobject_class, PROP_PAD_VALUE,
      g_param_spec_uint ("pad-value", "Pad value",
          "Colour 0xRRGGBB of constant padding (and of region pixels no frame "
          "covered); default white, the colour of slide background",
          0, 0xffffff, DEFAULT_PAD_VALUE, ready));
  g_object_class_install_property (gobject_class, PROP_GRID_COLUMNS,
      g_param_spec_int ("grid-columns", "Grid columns",
          "Frames without tile meta: frame n sits at column n % grid-columns, "
          "row n / grid-columns of a mosaic of equal frames",
          1, G_MAXINT16, DEFAULT_GRID_COLUMNS, ready));
  g_object_class_install_property (gobject_class, PROP_GRID_ROWS,
      g_param_spec_int ("grid-rows", "Grid rows",
          "Frames without tile meta: rows of the mosaic (0: unknown, the "
          "mosaic grows until EOS; otherwise a full mosaic starts a new one)",
          0, G_MAXINT16, DEFAULT_GRID_ROWS, ready));
  g_object_class_install_property (gobject_class, PROP_MIN_TISSUE,
      g_param_spec_double ("min-tissue", "Minimum tissue fraction",
          "Patches whose tissue fraction (of their non-padding pixels) is "
          "below this are dropped (tissue-action=drop); 0 keeps all",
          0.0, 1.0, DEFAULT_MIN_TISSUE, playing));
  g_object_class_install_property (gobject_class, PROP_TISSUE_ACTION,
      g_param_spec_enum ("tissue-action", "Tissue action",
          "What happens to patches below min-tissue",
          GST_TYPE_PATCHIFY_TISSUE_ACTION, DEFAULT_TISSUE_ACTION, playing));
  g_object_class_install_property (gobject_class, PROP_TISSUE_THRESHOLD,
      g_param_spec_double ("tissue-threshold", "Tissue threshold",
          "A pixel is tissue when its largest channel optical density "
          "-log10((I+1)/256) exceeds this and it is not near-black",
          0.0, 3.0, WSI_TISSUE_DEFAULT_THRESHOLD, playing));
  g_object_class_install_property (gobject_class, PROP_AUGMENT_FLIP,
      g_param_spec_boolean ("augment-flip", "Augment: flip",
          "Flip each patch horizontally and/or vertically at random "
          "(recorded in a WsiAugmentMeta custom meta)", FALSE, ready));
  g_object_class_install_property (gobject_class, PROP_AUGMENT_ROTATE,
      g_param_spec_boolean ("augment-rotate", "Augment: rotate",
          "Rotate each patch by a random multiple of 90 degrees "
          "(recorded in a WsiAugmentMeta custom meta)", FALSE, ready));
  g_object_class_install_property (gobject_class, PROP_SEED,
      g_param_spec_uint ("seed", "Seed",
          "Seed of the augmentation random generator (reset on every start)",
          0, G_MAXUINT, DEFAULT_SEED, ready));
  /* per patch: a 'patchify-patch' element message (col, row, x, y,
   * tissue-fraction, kept) */
  g_object_class_install_property (gobject_class, PROP_POST_MESSAGES,
      gst_wsi_param_spec_post_messages ());

  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);
  gst_element_class_set_static_metadata (element_class, "Patchify",
      "Filter/Converter/Video",
      "Cuts RGB frames (slide tiles or a live mosaic) into overlapping "
      "square patches with tile metadata, tissue detection and augmentation",
      "gst-wsiseg");
  element_class->change_state = GST_DEBUG_FUNCPTR (gst_patchify_change_state);

  gst_type_mark_as_plugin_api (GST_TYPE_PATCHIFY_PAD_MODE, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_PATCHIFY_TISSUE_ACTION, 0);
}

static void
gst_patchify_init (GstPatchify * self)
{
  self->sinkpad = gst_pad_new_from_static_template (&sink_template, "sink");
  gst_pad_set_chain_function (self->sinkpad,
      GST_DEBUG_FUNCPTR (gst_patchify_chain));
  gst_pad_set_event_function (self->sinkpad,
      GST_DEBUG_FUNCPTR (gst_patchify_sink_event));
  gst_element_add_pad (GST_ELEMENT (self), self->sinkpad);

  self->srcpad = gst_pad_new_from_static_template (&src_template, "src");
  gst_pad_set_query_function (self->srcpad,
      GST_DEBUG_FUNCPTR (gst_patchify_src_query));
  gst_pad_use_fixed_caps (self->srcpad);
  gst_element_add_pad (GST_ELEMENT (self), self->srcpad);

  self->patch_size = DEFAULT_PATCH_SIZE;
  self->overlap = DEFAULT_OVERLAP;
  self->pad_mode = DEFAULT_PAD_MODE;
  self->pad_value = DEFAULT_PAD_VALUE;
  self->grid_columns = DEFAULT_GRID_COLUMNS;
  self->grid_rows = DEFAULT_GRID_ROWS;
  self->min_tissue = DEFAULT_MIN_TISSUE;
  self->tissue_action = DEFAULT_TISSUE_ACTION;
  self->tissue_threshold = WSI_TISSUE_DEFAULT_THRESHOLD;
  wsi_tissue_test_init (&self->tissue, self->tissue_threshold);
  self->seed = DEFAULT_SEED;
  self->region_h = -1;
  self->last_end = self->last_pts_out = GST_CLOCK_TIME_NONE;
}
