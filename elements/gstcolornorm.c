/* colornorm: rescaling, standardisation, Reinhard / Macenko stain
 * normalisation and colour augmentation of RGB patches, output as float32
 * tensors (NNStreamer other/tensors, 3:W:H:1) or as RGB video.
 * See docs/colornorm.md. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gstwsiprops.h"
#include "gstwsiseg.h"
#include "gstwsitensor.h"
#include "gstwsitilemeta.h"
#include "wsicolor.h"
#include "wsipng.h"
#include "wsislide.h"
#include "wsitissue.h"

#include <gst/base/gstbasetransform.h>
#include <gst/video/video.h>

#include <errno.h>
#include <unistd.h>
#include <math.h>
#include <string.h>
#include <glib/gstdio.h>

GST_DEBUG_CATEGORY_STATIC (colornorm_debug);
#define GST_CAT_DEFAULT colornorm_debug

#define MAX_SIZE 32768
/* Sampled tissue ODs kept for one Macenko fit (12 MiB). */
#define OD_CAPACITY (1 << 20)
/* Thumbnail fit: pixels of the smallest level read at most (whole, else
 * windows over it: wsi_slide_read_overview), 48 MiB of RGB. */
#define THUMB_PIXELS ((guint64) 16 * 1024 * 1024)
/* PNG targets: alpha ignored, 16-bit truncated to 8. */
#define TARGET_PNG_FLAGS (WSI_PNG_RGB_DROP_ALPHA | WSI_PNG_RGB_TRUNCATE_16)

typedef enum
{
  MODE_RESCALE01,
  MODE_RESCALE11,
  MODE_STANDARDIZE,
  MODE_STANDARDIZE_PATCH,
  MODE_REINHARD,
  MODE_MACENKO,
} GstColorNormMode;

typedef enum
{
  FIT_PER_PATCH,
  FIT_FIRST_PATCHES,
  FIT_THUMBNAIL,
} GstColorNormFit;

#define GST_TYPE_COLORNORM_MODE (gst_colornorm_mode_get_type ())
static GType
gst_colornorm_mode_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {MODE_RESCALE01, "x / 255, in [0, 1]", "rescale01"},
    {MODE_RESCALE11, "x / 127.5 - 1, in [-1, 1]", "rescale11"},
    {MODE_STANDARDIZE, "(x / 255 - mean) / std with the mean and std "
          "properties", "standardize"},
    {MODE_STANDARDIZE_PATCH, "(x / 255 - mean) / std with the patch's own "
          "per-channel mean and std", "standardize-patch"},
    {MODE_REINHARD, "Reinhard: match L*a*b* channel statistics to the target",
        "reinhard"},
    {MODE_MACENKO, "Macenko: map the estimated H&E stain vectors to the "
          "target's", "macenko"},
    {0, NULL, NULL},
  };

  if (g_once_init_enter (&type))
    g_once_init_leave (&type, g_enum_register_static ("GstColorNormMode",
            values));
  return type;
}

#define GST_TYPE_COLORNORM_SCALE (gst_colornorm_scale_get_type ())
static GType
gst_colornorm_scale_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {MODE_RESCALE01, "x / 255, in [0, 1]", "rescale01"},
    {MODE_RESCALE11, "x / 127.5 - 1, in [-1, 1]", "rescale11"},
    {MODE_STANDARDIZE, "(x / 255 - mean) / std, mean and std properties",
        "standardize"},
    {MODE_STANDARDIZE_PATCH, "(x / 255 - mean) / std, patch statistics",
        "standardize-patch"},
    {0, NULL, NULL},
  };

  if (g_once_init_enter (&type))
    g_once_init_leave (&type, g_enum_register_static ("GstColorNormScale",
            values));
  return type;
}

#define GST_TYPE_COLORNORM_FIT (gst_colornorm_fit_get_type ())
static GType
gst_colornorm_fit_get_type (void)
{
  static GType type = 0;
  static const GEnumValue values[] = {
    {FIT_PER_PATCH, "Estimate the source stains on every patch", "per-patch"},
    {FIT_FIRST_PATCHES, "Estimate once per slide from its first fit-patches "
          "tissue patches (held back until then)", "first-patches"},
    {FIT_THUMBNAIL, "Estimate once per slide from its smallest pyramid level "
          "(OpenSlide, or the PNG itself)", "thumbnail"},
    {0, NULL, NULL},
  };

  if (g_once_init_enter (&type))
    g_once_init_leave (&type, g_enum_register_static ("GstColorNormFit",
            values));
  return type;
}

/* A thumbnail fit running in its own thread (fit=thumbnail). */
typedef struct
{
  gchar *slide;
  GstColorNormMode mode;
  gint *cancel;                 /* the element's thumb_cancel */
  /* results, read after the join */
  gboolean ok, cancelled;
  WsiLabStats lab;
  WsiStainParams stain;
  gchar *why;
  WsiSlideReadStats stats;
  gint width, height;
} ThumbJob;

/* One slide's source estimate, shared by the buffers held for it. */
typedef struct
{
  gint ref;
  GThread *thumb;               /* running ThumbJob, joined before use */
  ThumbJob *job;
  gchar *slide;
  GstColorNormMode mode;        /* what was accumulated */
  gboolean done, valid;
  WsiLabStats lab;
  WsiStainParams stain;
  WsiStainAcc acc;
  gboolean acc_ready;
  guint tissue_patches;
} SlideFit;

/* A held buffer, or a serialized event kept in order with them. */
typedef struct
{
  GstBuffer *buf;
  GstEvent *event;              /* instead of buf */
  SlideFit *fit;                /* NULL: needs no slide estimate */
} Held;

/* Buffers held at most while a slide's estimate is pending. */
#define MAX_HELD(fit_patches) (4 * (guint64) (fit_patches) + 32)

#define GST_TYPE_COLORNORM (gst_colornorm_get_type ())
G_DECLARE_FINAL_TYPE (GstColorNorm, gst_colornorm, GST, COLORNORM,
    GstBaseTransform);

struct _GstColorNorm
{
  GstBaseTransform parent;

  /* properties, object lock */
  GstColorNormMode mode;
  GstColorNormMode tensor_scale;
  gdouble mean[3], std[3];
  gchar *target_location;
  gboolean target_dirty;
  WsiLabStats target_lab;
  WsiStainParams target_stain;
  gboolean keep_residual;
  gboolean keep_background;
  GstColorNormFit fit_mode;
  guint fit_patches;
  gdouble fit_min_tissue;
  gboolean augment;
  gint64 seed;
  gdouble aug_scale, aug_shift, aug_hed_scale, aug_hed_shift;
  gboolean post_messages;
  gint64 last_notify_us;
  GRand *rand;
  /* latest source estimate, object lock */
  gboolean source_valid;
  WsiLabStats source_lab;
  WsiStainParams source_stain;

  /* streaming thread only */
  GstVideoInfo in_info;
  gboolean out_tensor;
  GstVideoInfo out_info;
  GQueue held;
  SlideFit *fit;
  SlideFit *active;
  gchar *thumb_failed;
  gint thumb_cancel;            /* atomic, any thread: stop the running
                                 * thumbnail job (at most one runs) */
  WsiStainAcc patch_acc;
  gfloat *row;
};

G_DEFINE_TYPE (GstColorNorm, gst_colornorm, GST_TYPE_BASE_TRANSFORM);
GST_ELEMENT_REGISTER_DEFINE_WITH_CODE (colornorm, "colornorm", GST_RANK_NONE,
    GST_TYPE_COLORNORM, wsi_color_init ());

enum
{
  PROP_0,
  PROP_MODE,
  PROP_TENSOR_SCALE,
  PROP_MEAN,
  PROP_STD,
  PROP_TARGET_LOCATION,
  PROP_TARGET_LAB_MEAN,
  PROP_TARGET_LAB_STD,
  PROP_TARGET_STAIN_MATRIX,
  PROP_TARGET_MAX_CONC,
  PROP_KEEP_RESIDUAL,
  PROP_KEEP_BACKGROUND,
  PROP_FIT,
  PROP_FIT_PATCHES,
  PROP_FIT_MIN_TISSUE,
  PROP_SOURCE_FITTED,
  PROP_SOURCE_LAB_MEAN,
  PROP_SOURCE_LAB_STD,
  PROP_SOURCE_STAIN_MATRIX,
  PROP_SOURCE_MAX_CONC,
  PROP_AUGMENT,
  PROP_SEED,
  PROP_AUGMENT_SCALE,
  PROP_AUGMENT_SHIFT,
  PROP_AUGMENT_HED_SCALE,
  PROP_AUGMENT_HED_SHIFT,
  PROP_POST_MESSAGES,
  N_PROPS
};

static GParamSpec *props[N_PROPS];

static const gdouble imagenet_mean[3] = { 0.485, 0.456, 0.406 };
static const gdouble imagenet_std[3] = { 0.229, 0.224, 0.225 };

#define TENSOR_CAPS GST_WSI_TENSOR_CAPS ", framerate=(fraction)[0/1, MAX]"
#define VIDEO_CAPS "video/x-raw, format=(string)RGB, " \
  "width=(int)[1, 32768], height=(int)[1, 32768], " \
  "framerate=(fraction)[0/1, MAX]"

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS (VIDEO_CAPS));
static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS (TENSOR_CAPS "; "
        VIDEO_CAPS));

/* --- slide estimates ----------------------------------------------------- */

static SlideFit *
slide_fit_new (const gchar * slide, GstColorNormMode mode)
{
  SlideFit *f = g_new0 (SlideFit, 1);

  f->ref = 1;
  f->slide = g_strdup (slide ? slide : "");
  f->mode = mode;
  return f;
}

static SlideFit *
slide_fit_ref (SlideFit * f)
{
  if (f)
    f->ref++;
  return f;
}

static void
thumb_job_free (ThumbJob * job)
{
  g_free (job->slide);
  g_free (job->why);
  g_free (job);
}

static void
slide_fit_unref (SlideFit * f)
{
  if (f && --f->ref == 0) {
    if (f->thumb) {             /* not waited for: stop it */
      g_atomic_int_set (f->job->cancel, 1);
      g_thread_join (f->thumb);
      thumb_job_free (f->job);
    }
    wsi_stain_acc_clear (&f->acc);
    g_free (f->slide);
    g_free (f);
  }
}

static gboolean
is_stain_mode (GstColorNormMode m)
{
  return m == MODE_REINHARD || m == MODE_MACENKO;
}

/* Sets the source properties and notifies those whose value changed.
 * @periodic (a per-patch fit): notified only with post-messages. */
static void
publish_source (GstColorNorm * self, gboolean valid, GstColorNormMode mode,
    const WsiLabStats * lab, const WsiStainParams * stain, gboolean periodic)
{
  gboolean fitted_changed, lab_mean = FALSE, lab_std = FALSE;
  gboolean matrix = FALSE, conc = FALSE, notify;

  GST_OBJECT_LOCK (self);
  fitted_changed = self->source_valid != valid;
  self->source_valid = valid;
  if (valid && mode == MODE_REINHARD) {
    lab_mean = memcmp (self->source_lab.mean, lab->mean, sizeof (lab->mean));
    lab_std = memcmp (self->source_lab.std, lab->std, sizeof (lab->std));
    self->source_lab = *lab;
  }
  if (valid && mode == MODE_MACENKO) {
    matrix = memcmp (self->source_stain.he, stain->he, sizeof (stain->he));
    conc = memcmp (self->source_stain.max_conc, stain->max_conc,
        sizeof (stain->max_conc));
    self->source_stain = *stain;
  }
  notify = !periodic || gst_wsi_periodic_message_due (self->post_messages,
      &self->last_notify_us, 0);
  GST_OBJECT_UNLOCK (self);
  if (!notify)
    return;
  if (fitted_changed)
    g_object_notify_by_pspec (G_OBJECT (self), props[PROP_SOURCE_FITTED]);
  if (lab_mean)
    g_object_notify_by_pspec (G_OBJECT (self), props[PROP_SOURCE_LAB_MEAN]);
  if (lab_std)
    g_object_notify_by_pspec (G_OBJECT (self), props[PROP_SOURCE_LAB_STD]);
  if (matrix)
    g_object_notify_by_pspec (G_OBJECT (self),
        props[PROP_SOURCE_STAIN_MATRIX]);
  if (conc)
    g_object_notify_by_pspec (G_OBJECT (self), props[PROP_SOURCE_MAX_CONC]);
}

static void thumb_wait (GstColorNorm * self, SlideFit * f);

static void
slide_fit_finish (GstColorNorm * self, SlideFit * f)
{
  thumb_wait (self, f);
  if (f->done)
    return;
  if (f->mode == MODE_REINHARD)
    f->valid = wsi_lab_stats_fit (&f->acc, &f->lab);
  else
    f->valid = wsi_macenko_fit (&f->acc, &f->stain);
  f->done = TRUE;
  wsi_stain_acc_clear (&f->acc);
  GST_INFO_OBJECT (self, "slide '%s': source estimate from %u tissue patches "
      "%s", f->slide, f->tissue_patches, f->valid ? "done" :
      "impossible (too little tissue): stain step is the identity");
  publish_source (self, f->valid, f->mode, &f->lab, &f->stain, FALSE);
}

/* The real (non-padded) rectangle of a buffer, from its tile meta. */
static void
valid_rect (GstBuffer * buf, gint width, gint height, gint * x0, gint * y0,
    gint * w, gint * h)
{
  GstWsiTileMeta *m = gst_buffer_get_wsi_tile_meta (buf);

  *x0 = *y0 = 0;
  *w = width;
  *h = height;
  /* meta for another frame size (a videoscale upstream): whole frame */
  if (m && m->width == width && m->height == height
      && (m->valid_width == 0 || m->valid_height == 0)) {
    *w = *h = 0;                /* all padding: no pixel counts */
  } else if (m && m->valid_width > 0 && m->valid_height > 0
      && m->pad_left >= 0 && m->pad_top >= 0
      && m->valid_width <= width - m->pad_left
      && m->valid_height <= height - m->pad_top) {
    *x0 = m->pad_left;
    *y0 = m->pad_top;
    *w = m->valid_width;
    *h = m->valid_height;
  }
}

/* Adds a frame's tissue pixels to @acc if its tissue fraction reaches
 * @min_tissue; returns TRUE if it did. */
static gboolean
accumulate_frame (GstVideoFrame * frame, GstBuffer * buf, WsiStainAcc * acc,
    GstColorNormMode mode, gdouble min_tissue)
{
  gint x0, y0, w, h;
  const guint8 *data;
  gsize stride, tissue;

  valid_rect (buf, GST_VIDEO_FRAME_WIDTH (frame),
      GST_VIDEO_FRAME_HEIGHT (frame), &x0, &y0, &w, &h);
  stride = GST_VIDEO_FRAME_PLANE_STRIDE (frame, 0);
  data = (const guint8 *) GST_VIDEO_FRAME_PLANE_DATA (frame, 0) + y0 * stride
      + x0 * 3;
  tissue = wsi_stain_tissue_count (data, w, h, stride);
  if (tissue == 0 || tissue < min_tissue * (gdouble) w * h)
    return FALSE;
  wsi_stain_acc_add (acc, data, w, h, stride,
      mode == MODE_REINHARD ? WSI_ACC_LAB : WSI_ACC_OD);
  return TRUE;
}

/* --- reading images (target PNG, slide thumbnail) ------------------------ */

/* Fits Reinhard and Macenko statistics on a whole image. */
static gboolean
fit_image (const guint8 * rgb, gint width, gint height, guint what,
    WsiLabStats * lab, WsiStainParams * stain, GString * why)
{
  WsiStainAcc acc;
  gboolean ok = TRUE;
  guint64 tissue;
  guint step = (guint) MAX (1, ((guint64) width * height + OD_CAPACITY - 1)
      / OD_CAPACITY);

  wsi_stain_acc_init (&acc, (what & WSI_ACC_OD) ? OD_CAPACITY : 0, step);
  tissue = wsi_stain_acc_add (&acc, rgb, width, height, (gsize) width * 3,
      what);
  if ((what & WSI_ACC_LAB) && !wsi_lab_stats_fit (&acc, lab)) {
    g_string_append_printf (why, "L*a*b* statistics impossible (%"
        G_GUINT64_FORMAT " tissue pixels, or one colour)", tissue);
    ok = FALSE;
  }
  if ((what & WSI_ACC_OD) && !wsi_macenko_fit (&acc, stain)) {
    g_string_append_printf (why, "%sstain vectors impossible (%"
        G_GUINT64_FORMAT " tissue pixels, or fewer than two stains)",
        ok ? "" : "; ", tissue);
    ok = FALSE;
  }
  wsi_stain_acc_clear (&acc);
  return ok;
}

/* Loads target-location if it changed; FALSE after posting an error. */
static gboolean
load_target (GstColorNorm * self)
{
  gchar *path;
  guint8 *rgb;
  gint w, h;
  GError *error = NULL;
  WsiLabStats lab;
  WsiStainParams stain;
  GString *why;
  gboolean ok;

  GST_OBJECT_LOCK (self);
  path = self->target_dirty ? g_strdup (self->target_location) : NULL;
  self->target_dirty = FALSE;
  GST_OBJECT_UNLOCK (self);
  if (!path || !*path) {
    g_free (path);
    return TRUE;
  }
  rgb = wsi_png_read_rgb8 (path, &w, &h, WSI_PNG_MAX_RGB_PIXELS,
      TARGET_PNG_FLAGS, &error);
  if (!rgb) {
    if (!g_file_test (path, G_FILE_TEST_EXISTS))
      GST_ELEMENT_ERROR (self, RESOURCE, NOT_FOUND,
          ("The stain target image \"%s\" does not exist.", path),
          ("%s", error ? error->message : ""));
    else if (g_access (path, R_OK) != 0)
      GST_ELEMENT_ERROR (self, RESOURCE, OPEN_READ,
          ("Cannot read the stain target image \"%s\": %s.", path,
              g_strerror (errno)), ("%s", error ? error->message : ""));
    else
      GST_ELEMENT_ERROR (self, STREAM, DECODE,
          ("The stain target image \"%s\" is not a readable PNG.", path),
          ("%s; target-location must be an H&E PNG image", error ?
              error->message : ""));
    g_clear_error (&error);
    g_free (path);
    return FALSE;
  }
  why = g_string_new (NULL);
  ok = fit_image (rgb, w, h, WSI_ACC_LAB | WSI_ACC_OD, &lab, &stain, why);
  g_free (rgb);
  if (!ok) {
    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("The stain target image \"%s\" has too little H&E tissue.", path),
        ("%s; tissue pixels are those with R, G and B all <= %d", why->str,
            WSI_STAIN_TISSUE_MAX_VALUE));
    g_string_free (why, TRUE);
    g_free (path);
    return FALSE;
  }
  g_string_free (why, TRUE);
  GST_INFO_OBJECT (self, "target from %s: L*a*b* mean %.2f %.2f %.2f", path,
      lab.mean[0], lab.mean[1], lab.mean[2]);
  GST_OBJECT_LOCK (self);
  self->target_lab = lab;
  self->target_stain = stain;
  GST_OBJECT_UNLOCK (self);
  g_object_notify_by_pspec (G_OBJECT (self), props[PROP_TARGET_LAB_MEAN]);
  g_object_notify_by_pspec (G_OBJECT (self), props[PROP_TARGET_LAB_STD]);
  g_object_notify_by_pspec (G_OBJECT (self), props[PROP_TARGET_STAIN_MATRIX]);
  g_object_notify_by_pspec (G_OBJECT (self), props[PROP_TARGET_MAX_CONC]);
  g_free (path);
  return TRUE;
}

/* The thumbnail job, in its own thread: the slide's overview through the
 * slide reader (bounded, the colours slidesrc streams), then the fit. */
static gpointer
thumb_job_run (gpointer data)
{
  ThumbJob *job = data;
  GError *error = NULL;
  WsiSlide *slide = NULL;
  guint8 *rgb = NULL;

  if (*job->slide)
    slide = wsi_slide_open (job->slide, &error);
  else
    job->why = g_strdup ("the buffers carry no slide path (GstWsiTileMeta)");
  if (slide)
    rgb = wsi_slide_read_overview (slide, THUMB_PIXELS, job->cancel,
        &job->width, &job->height, &job->stats, &error);
  if (rgb) {
    GString *why = g_string_new (NULL);
    job->ok = fit_image (rgb, job->width, job->height,
        job->mode == MODE_REINHARD ? WSI_ACC_LAB : WSI_ACC_OD, &job->lab,
        &job->stain, why);
    job->why = g_string_free (why, FALSE);
  } else if (error) {
    job->cancelled = g_error_matches (error, WSI_SLIDE_ERROR,
        WSI_SLIDE_ERROR_CANCELLED);
    job->why = g_strdup (error->message);
  }
  g_clear_error (&error);
  g_free (rgb);
  wsi_slide_free (slide);
  return NULL;
}

/* Starts the thumbnail fit of a new slide off the streaming thread; FALSE
 * after posting an error if no thread can be started. */
static gboolean
thumb_start (GstColorNorm * self, SlideFit * f)
{
  ThumbJob *job = g_new0 (ThumbJob, 1);
  GError *error = NULL;

  job->slide = g_strdup (f->slide);
  job->mode = f->mode;
  job->cancel = &self->thumb_cancel;
  g_atomic_int_set (&self->thumb_cancel, 0);
  f->thumb = g_thread_try_new ("colornorm-thumb", thumb_job_run, job, &error);
  if (!f->thumb) {
    GST_ELEMENT_ERROR (self, RESOURCE, NO_SPACE_LEFT,
        ("Cannot start the thumbnail fit of slide \"%s\".", f->slide),
        ("%s", error->message));
    g_error_free (error);
    thumb_job_free (job);
    return FALSE;
  }
  f->job = job;
  return TRUE;
}

/* Waits for @f's thumbnail fit, if one runs, and takes its result: the
 * estimate, or a warning and the first tissue patches instead. */
static void
thumb_wait (GstColorNorm * self, SlideFit * f)
{
  ThumbJob *job = f->job;

  if (!f->thumb)
    return;
  g_thread_join (f->thumb);
  f->thumb = NULL;
  f->job = NULL;
  if (job->ok) {
    GST_INFO_OBJECT (self, "slide '%s': thumbnail fit on %dx%d pixels (level "
        "%d, %" G_GUINT64_FORMAT " pixels read%s)", f->slide, job->width,
        job->height, job->stats.level, job->stats.pixels_read,
        job->stats.sampled ? ", sampled" : "");
    f->lab = job->lab;
    f->stain = job->stain;
    f->valid = TRUE;
    f->done = TRUE;
    wsi_stain_acc_clear (&f->acc);
    publish_source (self, TRUE, f->mode, &f->lab, &f->stain, FALSE);
  } else if (!job->cancelled) {
    GST_ELEMENT_WARNING (self, STREAM, FAILED,
        ("Cannot estimate the source stains from the slide overview; using "
            "the first tissue patches instead."), ("slide '%s': %s", f->slide,
            job->why ? job->why : ""));
    g_free (self->thumb_failed);
    self->thumb_failed = g_strdup (f->slide);
  }
  thumb_job_free (job);
}

/* --- held buffers (fit-once) --------------------------------------------- */

/* Maps an input frame with the strides of its GstVideoMeta, else those of
 * the caps (RGB rows 4-byte aligned); posts an error if it does not fit. */
static gboolean
map_input (GstColorNorm * self, GstVideoFrame * frame, GstBuffer * buf)
{
  GstVideoMeta *vm;

  if (gst_video_frame_map (frame, &self->in_info, buf, GST_MAP_READ))
    return TRUE;
  vm = gst_buffer_get_video_meta (buf);
  GST_ELEMENT_ERROR (self, STREAM, FORMAT, ("Cannot read the input buffer."),
      ("a %dx%d RGB buffer of %" G_GSIZE_FORMAT " bytes is smaller than the "
          "negotiated caps say (%" G_GSIZE_FORMAT " bytes, row stride %d)",
          GST_VIDEO_INFO_WIDTH (&self->in_info),
          GST_VIDEO_INFO_HEIGHT (&self->in_info), gst_buffer_get_size (buf),
          GST_VIDEO_INFO_SIZE (&self->in_info), vm ? vm->stride[0] :
          GST_VIDEO_INFO_PLANE_STRIDE (&self->in_info, 0)));
  return FALSE;
}

static guint
held_buffers (GstColorNorm * self)
{
  GList *l;
  guint n = 0;

  for (l = self->held.head; l; l = l->next)
    n += ((Held *) l->data)->buf != NULL;
  return n;
}

static void
held_clear (GstColorNorm * self)
{
  Held *h;

  while ((h = g_queue_pop_head (&self->held))) {
    if (h->buf)
      gst_buffer_unref (h->buf);
    if (h->event)
      gst_event_unref (h->event);
    slide_fit_unref (h->fit);
    g_free (h);
  }
  g_clear_pointer (&self->fit, slide_fit_unref);
}

static GstFlowReturn
gst_colornorm_submit_input_buffer (GstBaseTransform * trans,
    gboolean is_discont, GstBuffer * input)
{
  GstColorNorm *self = GST_COLORNORM (trans);
  GstColorNormMode mode;
  GstColorNormFit fit_mode;
  guint fit_patches;
  gdouble min_tissue;
  GstFlowReturn ret;
  GstBuffer *buf;
  Held *h;

  ret = GST_BASE_TRANSFORM_CLASS (gst_colornorm_parent_class)->
      submit_input_buffer (trans, is_discont, input);
  if (ret != GST_FLOW_OK || !trans->queued_buf)
    return ret;
  buf = trans->queued_buf;
  trans->queued_buf = NULL;

  GST_OBJECT_LOCK (self);
  mode = self->mode;
  fit_mode = self->fit_mode;
  fit_patches = self->fit_patches;
  min_tissue = self->fit_min_tissue;
  GST_OBJECT_UNLOCK (self);

  h = g_new0 (Held, 1);
  h->buf = buf;
  if (is_stain_mode (mode) && fit_mode != FIT_PER_PATCH) {
    GstWsiTileMeta *meta = gst_buffer_get_wsi_tile_meta (buf);
    const gchar *slide = meta && meta->slide ? meta->slide : "";

    if (self->fit && (strcmp (self->fit->slide, slide) != 0
            || self->fit->mode != mode)) {
      slide_fit_finish (self, self->fit);
      g_clear_pointer (&self->fit, slide_fit_unref);
    }
    if (!self->fit) {
      GST_DEBUG_OBJECT (self, "new slide '%s'", slide);
      self->fit = slide_fit_new (slide, mode);
      if (fit_mode == FIT_THUMBNAIL && g_strcmp0 (self->thumb_failed,
              slide) != 0 && !thumb_start (self, self->fit)) {
        gst_buffer_unref (buf);
        g_free (h);
        return GST_FLOW_ERROR;
      }
    }
    if (!self->fit->done && GST_VIDEO_INFO_FORMAT (&self->in_info) ==
        GST_VIDEO_FORMAT_RGB) {
      GstVideoFrame frame;
      SlideFit *f = self->fit;

      if (!f->acc_ready) {
        gdouble px = (gdouble) GST_VIDEO_INFO_WIDTH (&self->in_info) *
            GST_VIDEO_INFO_HEIGHT (&self->in_info) * fit_patches;
        wsi_stain_acc_init (&f->acc, mode == MODE_MACENKO ? OD_CAPACITY : 0,
            (guint) MAX (1.0, ceil (px / OD_CAPACITY)));
        f->acc_ready = TRUE;
      }
      if (!map_input (self, &frame, buf)) {
        gst_buffer_unref (buf);
        g_free (h);
        return GST_FLOW_ERROR;
      }
      if (accumulate_frame (&frame, buf, &f->acc, mode, min_tissue))
        f->tissue_patches++;
      gst_video_frame_unmap (&frame);
      if (f->tissue_patches >= fit_patches
          || held_buffers (self) + 1 >= MAX_HELD (fit_patches))
        slide_fit_finish (self, f);
    }
    h->fit = slide_fit_ref (self->fit);
    /* No tissue yet: later patches of the slide try again. */
    if (self->fit->done && !self->fit->valid)
      g_clear_pointer (&self->fit, slide_fit_unref);
  } else if (self->fit) {
    slide_fit_finish (self, self->fit);
    g_clear_pointer (&self->fit, slide_fit_unref);
  }
  g_queue_push_tail (&self->held, h);
  return GST_FLOW_OK;
}

static GstFlowReturn
gst_colornorm_generate_output (GstBaseTransform * trans, GstBuffer ** outbuf)
{
  GstColorNorm *self = GST_COLORNORM (trans);
  Held *h;
  GstFlowReturn ret;

  *outbuf = NULL;
  /* serialized events that came after the buffer pushed last */
  while ((h = g_queue_peek_head (&self->held)) && h->event) {
    g_queue_pop_head (&self->held);
    gst_pad_push_event (trans->srcpad, h->event);
    g_free (h);
  }
  /* the first buffer that needs a running thumbnail fit waits for it */
  if (h && h->fit)
    thumb_wait (self, h->fit);
  if (!h || (h->fit && !h->fit->done))
    return GST_FLOW_OK;
  g_queue_pop_head (&self->held);
  trans->queued_buf = h->buf;
  self->active = h->fit;
  g_free (h);
  ret = GST_BASE_TRANSFORM_CLASS (gst_colornorm_parent_class)->
      generate_output (trans, outbuf);
  g_clear_pointer (&self->active, slide_fit_unref);
  return ret;
}

/* Finishes any estimate in progress and pushes every held buffer. */
static GstFlowReturn
drain (GstColorNorm * self)
{
  GstBaseTransform *trans = GST_BASE_TRANSFORM (self);
  GstFlowReturn ret = GST_FLOW_OK;
  GList *l;

  if (g_queue_is_empty (&self->held))
    return GST_FLOW_OK;
  for (l = self->held.head; l; l = l->next) {
    Held *h = l->data;
    if (h->fit)
      slide_fit_finish (self, h->fit);
  }
  while (ret == GST_FLOW_OK) {
    GstBuffer *out = NULL;
    ret = gst_colornorm_generate_output (trans, &out);
    if (!out) {
      Held *h = g_queue_peek_head (&self->held);
      if (!h || (h->buf && h->fit && !h->fit->done))
        break;
      continue;
    }
    if (ret == GST_FLOW_OK)
      ret = gst_pad_push (trans->srcpad, out);
    else
      gst_buffer_unref (out);
  }
  if (ret != GST_FLOW_OK)
    held_clear (self);
  return ret;
}

static gboolean
gst_colornorm_sink_event (GstBaseTransform * trans, GstEvent * event)
{
  GstColorNorm *self = GST_COLORNORM (trans);

  switch (GST_EVENT_TYPE (event)) {
    case GST_EVENT_EOS:
    case GST_EVENT_CAPS:
    case GST_EVENT_SEGMENT:
    case GST_EVENT_STREAM_START:
      drain (self);
      break;
    case GST_EVENT_FLUSH_START:
      /* unblocks a streaming thread waiting for a thumbnail fit */
      g_atomic_int_set (&self->thumb_cancel, 1);
      break;
    case GST_EVENT_FLUSH_STOP:
      held_clear (self);
      break;
    default:
      /* GAP, TAG, custom...: stay behind the buffers held before them */
      if (GST_EVENT_IS_SERIALIZED (event) && !g_queue_is_empty (&self->held)) {
        Held *h = g_new0 (Held, 1);
        h->event = event;
        g_queue_push_tail (&self->held, h);
        return TRUE;
      }
      break;
  }
  return GST_BASE_TRANSFORM_CLASS (gst_colornorm_parent_class)->sink_event
      (trans, event);
}

/* Holding buffers for a slide estimate delays them: up to MAX_HELD frames
 * (fit=first-patches in the stain modes) on top of upstream's latency. */
static gboolean
gst_colornorm_query (GstBaseTransform * trans, GstPadDirection direction,
    GstQuery * query)
{
  GstColorNorm *self = GST_COLORNORM (trans);
  gboolean ret;

  ret = GST_BASE_TRANSFORM_CLASS (gst_colornorm_parent_class)->query (trans,
      direction, query);
  if (ret && direction == GST_PAD_SRC
      && GST_QUERY_TYPE (query) == GST_QUERY_LATENCY) {
    gboolean live, holds;
    GstClockTime min, max, frame = GST_CLOCK_TIME_NONE, extra;
    guint64 n;
    gint fn, fd;

    gst_query_parse_latency (query, &live, &min, &max);
    GST_OBJECT_LOCK (self);
    holds = is_stain_mode (self->mode) && self->fit_mode != FIT_PER_PATCH;
    n = MAX_HELD (self->fit_patches);
    GST_OBJECT_UNLOCK (self);
    fn = GST_VIDEO_INFO_FPS_N (&self->in_info);
    fd = GST_VIDEO_INFO_FPS_D (&self->in_info);
    if (fn > 0 && fd > 0)
      frame = gst_util_uint64_scale_int (GST_SECOND, fd, fn);
    if (live && holds) {
      if (GST_CLOCK_TIME_IS_VALID (frame)) {
        extra = n * frame;
        min += extra;
        if (GST_CLOCK_TIME_IS_VALID (max))
          max += extra;
      } else {
        /* no frame rate: the delay has no bound in time */
        max = GST_CLOCK_TIME_NONE;
      }
      GST_DEBUG_OBJECT (self, "latency: holding up to %" G_GUINT64_FORMAT
          " buffers -> min %" GST_TIME_FORMAT " max %" GST_TIME_FORMAT, n,
          GST_TIME_ARGS (min), GST_TIME_ARGS (max));
      gst_query_set_latency (query, live, min, max);
    }
  }
  return ret;
}

/* Strided input (GstVideoMeta) is read as it comes. */
static gboolean
gst_colornorm_propose_allocation (GstBaseTransform * trans,
    GstQuery * decide_query, GstQuery * query)
{
  gst_query_add_allocation_meta (query, GST_VIDEO_META_API_TYPE, NULL);
  return TRUE;
}

/* --- caps ---------------------------------------------------------------- */

/* Dimensions of an RGB tensor (gstwsitensor.h's rule) within colornorm's
 * size limit. */
static gboolean
parse_dimensions (const gchar * dims, gint * width, gint * height)
{
  gint c = 0, w = 0, h = 0;

  if (!gst_wsi_tensor_parse_dims (dims, &c, &w, &h) || c != 3 || w > MAX_SIZE
      || h > MAX_SIZE)
    return FALSE;
  *width = w;
  *height = h;
  return TRUE;
}

static GstStructure *
tensor_from_video (const GstStructure * s)
{
  const GValue *fr = gst_structure_get_value (s, "framerate");
  gint w = 0, h = 0;
  GstStructure *t;

  if (!gst_structure_get_int (s, "width", &w)
      || !gst_structure_get_int (s, "height", &h))
    w = h = 0;
  t = gst_wsi_tensor_structure_new (3, w, h);
  if (fr)
    gst_structure_set_value (t, "framerate", fr);
  return t;
}

static GstStructure *
video_from_tensor (const GstStructure * t)
{
  const GValue *v;
  GstStructure *s;
  gint n, w, h;

  v = gst_structure_get_value (t, "types");
  if (v && G_VALUE_HOLDS_STRING (v) && g_strcmp0 (g_value_get_string (v),
          "float32") != 0)
    return NULL;
  v = gst_structure_get_value (t, "format");
  if (v && G_VALUE_HOLDS_STRING (v) && g_strcmp0 (g_value_get_string (v),
          "static") != 0)
    return NULL;
  if (gst_structure_get_int (t, "num_tensors", &n) && n != 1)
    return NULL;
  s = gst_structure_new ("video/x-raw", "format", G_TYPE_STRING, "RGB", NULL);
  v = gst_structure_get_value (t, "dimensions");
  if (v && G_VALUE_HOLDS_STRING (v)) {
    if (!parse_dimensions (g_value_get_string (v), &w, &h)) {
      gst_structure_free (s);
      return NULL;
    }
    gst_structure_set (s, "width", G_TYPE_INT, w, "height", G_TYPE_INT, h,
        NULL);
  } else {
    gst_structure_set (s, "width", GST_TYPE_INT_RANGE, 1, MAX_SIZE,
        "height", GST_TYPE_INT_RANGE, 1, MAX_SIZE, NULL);
  }
  v = gst_structure_get_value (t, "framerate");
  if (v)
    gst_structure_set_value (s, "framerate", v);
  else
    gst_structure_set (s, "framerate", GST_TYPE_FRACTION_RANGE, 0, 1,
        G_MAXINT, 1, NULL);
  return s;
}

static GstCaps *
gst_colornorm_transform_caps (GstBaseTransform * trans,
    GstPadDirection direction, GstCaps * caps, GstCaps * filter)
{
  GstCaps *res = gst_caps_new_empty ();
  guint i, n = gst_caps_get_size (caps);

  if (direction == GST_PAD_SINK) {
    /* tensors preferred, then RGB video of the same size */
    for (i = 0; i < n; i++) {
      const GstStructure *s = gst_caps_get_structure (caps, i);
      if (gst_structure_has_name (s, "video/x-raw"))
        res = gst_caps_merge_structure (res, tensor_from_video (s));
    }
    for (i = 0; i < n; i++) {
      const GstStructure *s = gst_caps_get_structure (caps, i);
      if (gst_structure_has_name (s, "video/x-raw"))
        res = gst_caps_merge_structure (res, gst_structure_copy (s));
    }
  } else {
    for (i = 0; i < n; i++) {
      const GstStructure *s = gst_caps_get_structure (caps, i);
      GstStructure *v = NULL;
      if (gst_structure_has_name (s, "video/x-raw"))
        v = gst_structure_copy (s);
      else if (gst_structure_has_name (s, "other/tensors"))
        v = video_from_tensor (s);
      if (v)
        res = gst_caps_merge_structure (res, v);
    }
  }
  if (filter) {
    GstCaps *tmp = gst_caps_intersect_full (filter, res,
        GST_CAPS_INTERSECT_FIRST);
    gst_caps_unref (res);
    res = tmp;
  }
  GST_DEBUG_OBJECT (trans, "%s %" GST_PTR_FORMAT " -> %" GST_PTR_FORMAT,
      direction == GST_PAD_SINK ? "sink" : "src", caps, res);
  return res;
}

static GstCaps *
gst_colornorm_fixate_caps (GstBaseTransform * trans, GstPadDirection direction,
    GstCaps * caps, GstCaps * othercaps)
{
  GstStructure *in, *out;
  gint w, h, fn, fd;

  othercaps = gst_caps_truncate (othercaps);
  othercaps = gst_caps_make_writable (othercaps);
  if (gst_caps_is_empty (othercaps))
    return othercaps;
  in = gst_caps_get_structure (caps, 0);
  out = gst_caps_get_structure (othercaps, 0);
  if (direction == GST_PAD_SINK
      && gst_structure_has_name (in, "video/x-raw")
      && gst_structure_get_int (in, "width", &w)
      && gst_structure_get_int (in, "height", &h)) {
    if (gst_structure_has_name (out, "other/tensors")) {
      if (!gst_structure_has_field_typed (out, "dimensions", G_TYPE_STRING)) {
        gchar *dims = g_strdup_printf ("3:%d:%d:1", w, h);
        gst_structure_set (out, "dimensions", G_TYPE_STRING, dims, NULL);
        g_free (dims);
      }
    } else {
      gst_structure_fixate_field_nearest_int (out, "width", w);
      gst_structure_fixate_field_nearest_int (out, "height", h);
    }
    if (gst_structure_get_fraction (in, "framerate", &fn, &fd))
      gst_structure_fixate_field_nearest_fraction (out, "framerate", fn, fd);
  }
  return gst_caps_fixate (othercaps);
}

static gboolean
gst_colornorm_set_caps (GstBaseTransform * trans, GstCaps * incaps,
    GstCaps * outcaps)
{
  GstColorNorm *self = GST_COLORNORM (trans);
  GstStructure *out = gst_caps_get_structure (outcaps, 0);
  gint w, h;

  if (!gst_video_info_from_caps (&self->in_info, incaps)
      || GST_VIDEO_INFO_FORMAT (&self->in_info) != GST_VIDEO_FORMAT_RGB)
    goto bad;
  w = GST_VIDEO_INFO_WIDTH (&self->in_info);
  h = GST_VIDEO_INFO_HEIGHT (&self->in_info);
  if (gst_structure_has_name (out, "other/tensors")) {
    gint tw, th;
    if (!parse_dimensions (gst_structure_get_string (out, "dimensions"), &tw,
            &th) || tw != w || th != h)
      goto bad;
    self->out_tensor = TRUE;
  } else {
    if (!gst_video_info_from_caps (&self->out_info, outcaps)
        || GST_VIDEO_INFO_FORMAT (&self->out_info) != GST_VIDEO_FORMAT_RGB
        || GST_VIDEO_INFO_WIDTH (&self->out_info) != w
        || GST_VIDEO_INFO_HEIGHT (&self->out_info) != h)
      goto bad;
    self->out_tensor = FALSE;
  }
  g_free (self->row);
  self->row = g_new (gfloat, (gsize) w * 3);
  GST_INFO_OBJECT (self, "%dx%d RGB -> %s", w, h, self->out_tensor ?
      "float32 tensor 3:W:H:1" : "RGB video");
  return TRUE;

bad:
  GST_ERROR_OBJECT (self, "unsupported caps %" GST_PTR_FORMAT " -> %"
      GST_PTR_FORMAT, incaps, outcaps);
  return FALSE;
}

static gboolean
gst_colornorm_transform_size (GstBaseTransform * trans,
    GstPadDirection direction, GstCaps * caps, gsize size, GstCaps * othercaps,
    gsize * othersize)
{
  GstStructure *s = gst_caps_get_structure (othercaps, 0);
  GstVideoInfo info;
  gint w, h;

  if (gst_structure_has_name (s, "other/tensors")) {
    if (!parse_dimensions (gst_structure_get_string (s, "dimensions"), &w, &h))
      return FALSE;
    *othersize = (gsize) w * h * 3 * sizeof (gfloat);
    return TRUE;
  }
  if (!gst_video_info_from_caps (&info, othercaps))
    return FALSE;
  *othersize = GST_VIDEO_INFO_SIZE (&info);
  return TRUE;
}

/* --- transform ----------------------------------------------------------- */

typedef struct
{
  GstColorNormMode mode, scale;
  gdouble mean[3], std[3];
  WsiLabStats target_lab;
  WsiStainParams target_stain;
  gdouble min_tissue;
  gboolean keep_residual;
  gboolean keep_background;
  gboolean augment;
  gdouble aug[12];              /* rgb scale, rgb shift, hed scale, hed shift */
} Snapshot;

static void
take_snapshot (GstColorNorm * self, Snapshot * s)
{
  gint c;

  GST_OBJECT_LOCK (self);
  s->mode = self->mode;
  s->scale = is_stain_mode (self->mode) ? self->tensor_scale : self->mode;
  memcpy (s->mean, self->mean, sizeof (s->mean));
  memcpy (s->std, self->std, sizeof (s->std));
  s->target_lab = self->target_lab;
  s->target_stain = self->target_stain;
  s->min_tissue = self->fit_min_tissue;
  s->keep_residual = self->keep_residual;
  s->keep_background = self->keep_background;
  s->augment = self->augment;
  if (s->augment) {
    for (c = 0; c < 3; c++)
      s->aug[c] = g_rand_double_range (self->rand, 1.0 - self->aug_scale,
          1.0 + self->aug_scale);
    for (c = 0; c < 3; c++)
      s->aug[3 + c] = g_rand_double_range (self->rand, -self->aug_shift,
          self->aug_shift);
    for (c = 0; c < 3; c++)
      s->aug[6 + c] = g_rand_double_range (self->rand,
          1.0 - self->aug_hed_scale, 1.0 + self->aug_hed_scale);
    for (c = 0; c < 3; c++)
      s->aug[9 + c] = g_rand_double_range (self->rand, -self->aug_hed_shift,
          self->aug_hed_shift);
  }
  GST_OBJECT_UNLOCK (self);
}

typedef enum
{
  STAIN_NONE,
  STAIN_REINHARD,
  STAIN_OD,
} StainKind;

/* Source estimate for this buffer: the slide's, or the patch's own. */
static StainKind
prepare_stain (GstColorNorm * self, const Snapshot * s, GstVideoFrame * in,
    GstBuffer * inbuf, WsiReinhardMap * rmap, WsiOdMap * omap)
{
  WsiLabStats lab = { {0} };
  WsiStainParams stain = { {{0}} };
  gboolean valid;

  if (!is_stain_mode (s->mode))
    return STAIN_NONE;
  if (self->active && self->active->mode == s->mode) {
    valid = self->active->valid;
    lab = self->active->lab;
    stain = self->active->stain;
  } else {
    if (!self->patch_acc.od && s->mode == MODE_MACENKO) {
      wsi_stain_acc_clear (&self->patch_acc);
      wsi_stain_acc_init (&self->patch_acc, OD_CAPACITY, 1);
    }
    wsi_stain_acc_reset (&self->patch_acc);
    self->patch_acc.od_step = MAX (1, (guint) (((guint64)
                GST_VIDEO_FRAME_WIDTH (in) * GST_VIDEO_FRAME_HEIGHT (in) +
                OD_CAPACITY - 1) / OD_CAPACITY));
    valid = accumulate_frame (in, inbuf, &self->patch_acc, s->mode,
        s->min_tissue);
    if (valid && s->mode == MODE_REINHARD)
      valid = wsi_lab_stats_fit (&self->patch_acc, &lab);
    else if (valid)
      valid = wsi_macenko_fit (&self->patch_acc, &stain);
    publish_source (self, valid, s->mode, &lab, &stain, TRUE);
  }
  if (!valid)
    return STAIN_NONE;
  if (s->mode == MODE_REINHARD) {
    wsi_reinhard_map (&lab, &s->target_lab, rmap);
    rmap->keep_background = s->keep_background;
    return STAIN_REINHARD;
  }
  return wsi_macenko_map (&stain, &s->target_stain, s->keep_residual,
      omap) ? STAIN_OD : STAIN_NONE;
}

static GstFlowReturn
gst_colornorm_transform (GstBaseTransform * trans, GstBuffer * inbuf,
    GstBuffer * outbuf)
{
  GstColorNorm *self = GST_COLORNORM (trans);
  GstVideoFrame in, outframe;
  GstMapInfo outmap;
  Snapshot s;
  StainKind kind;
  WsiReinhardMap rmap;
  WsiOdMap omap, hedmap;
  gboolean hed = FALSE;
  gfloat rgb_scale[3], rgb_shift[3], mul[3], add[3];
  gdouble sum[3] = { 0, 0, 0 }, sumsq[3] = { 0, 0, 0 };
  gint w, h, x, y, c;
  gfloat *row = self->row, *tensor = NULL;

  if (!load_target (self))
    return GST_FLOW_ERROR;
  if (!map_input (self, &in, inbuf))
    return GST_FLOW_ERROR;
  w = GST_VIDEO_FRAME_WIDTH (&in);
  h = GST_VIDEO_FRAME_HEIGHT (&in);
  if (self->out_tensor) {
    if (!gst_buffer_map (outbuf, &outmap, GST_MAP_WRITE))
      goto out_map_failed;
    if (outmap.size < (gsize) w * h * 3 * sizeof (gfloat)) {
      gst_buffer_unmap (outbuf, &outmap);
      goto out_map_failed;
    }
    tensor = (gfloat *) outmap.data;
  } else if (!gst_video_frame_map (&outframe, &self->out_info, outbuf,
          GST_MAP_WRITE)) {
    goto out_map_failed;
  }

  take_snapshot (self, &s);
  kind = prepare_stain (self, &s, &in, inbuf, &rmap, &omap);
  for (c = 0; c < 3; c++) {
    rgb_scale[c] = 1.0f;
    rgb_shift[c] = 0.0f;
  }
  if (s.augment) {
    for (c = 0; c < 3; c++) {
      rgb_scale[c] = (gfloat) s.aug[c];
      rgb_shift[c] = (gfloat) (s.aug[3 + c] * 255.0);
      if (s.aug[6 + c] != 1.0 || s.aug[9 + c] != 0.0)
        hed = TRUE;
    }
    if (hed)
      wsi_hed_jitter_map (s.aug + 6, s.aug + 9, &hedmap);
  }
  /* value v in [0, 255] -> tensor v * mul + add */
  for (c = 0; c < 3; c++) {
    switch (s.scale) {
      case MODE_RESCALE11:
        mul[c] = 1.0f / 127.5f;
        add[c] = -1.0f;
        break;
      case MODE_STANDARDIZE:
        mul[c] = (gfloat) (1.0 / (255.0 * s.std[c]));
        add[c] = (gfloat) (-s.mean[c] / s.std[c]);
        break;
      default:                 /* rescale01; standardize-patch: 2nd pass */
        mul[c] = 1.0f / 255.0f;
        add[c] = 0.0f;
        break;
    }
  }

  for (y = 0; y < h; y++) {
    const guint8 *src = (const guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&in, 0) +
        (gsize) y * GST_VIDEO_FRAME_PLANE_STRIDE (&in, 0);

    if (kind == STAIN_REINHARD)
      wsi_reinhard_row (src, row, w, &rmap);
    else if (kind == STAIN_OD)
      wsi_od_map_row_u8 (src, row, w, &omap);
    else
      wsi_u8_to_float_row (src, row, w);
    if (hed)
      wsi_od_map_row_f (row, w, &hedmap);
    if (s.augment) {
      for (x = 0; x < w * 3; x += 3) {
        for (c = 0; c < 3; c++) {
          gfloat v = row[x + c] * rgb_scale[c] + rgb_shift[c];
          row[x + c] = v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v);
        }
      }
    }
    if (tensor) {
      gfloat *o = tensor + (gsize) y * w * 3;
      for (x = 0; x < w * 3; x += 3)
        for (c = 0; c < 3; c++)
          o[x + c] = row[x + c] * mul[c] + add[c];
      if (s.scale == MODE_STANDARDIZE_PATCH) {
        for (x = 0; x < w * 3; x += 3)
          for (c = 0; c < 3; c++) {
            sum[c] += o[x + c];
            sumsq[c] += (gdouble) o[x + c] * o[x + c];
          }
      }
    } else {
      guint8 *o = (guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&outframe, 0) +
          (gsize) y * GST_VIDEO_FRAME_PLANE_STRIDE (&outframe, 0);
      for (x = 0; x < w * 3; x++)
        o[x] = (guint8) (row[x] + 0.5f);
    }
  }

  if (tensor && s.scale == MODE_STANDARDIZE_PATCH) {
    gdouble n = (gdouble) w * h;
    gfloat m[3], inv[3];
    gsize i, total = (gsize) w * h * 3;
    for (c = 0; c < 3; c++) {
      gdouble mean = sum[c] / n, var = sumsq[c] / n - mean * mean;
      gdouble sd = var > 0 ? sqrt (var) : 0.0;
      m[c] = (gfloat) mean;
      /* flat channel (< 1/16 of a grey level): centred, not scaled */
      inv[c] = sd > 1.0 / (255.0 * 16.0) ? (gfloat) (1.0 / sd) : 1.0f;
    }
    for (i = 0; i < total; i += 3)
      for (c = 0; c < 3; c++)
        tensor[i + c] = (tensor[i + c] - m[c]) * inv[c];
  }

  gst_video_frame_unmap (&in);
  if (tensor)
    gst_buffer_unmap (outbuf, &outmap);
  else
    gst_video_frame_unmap (&outframe);
  return GST_FLOW_OK;

out_map_failed:
  gst_video_frame_unmap (&in);
  GST_ELEMENT_ERROR (self, STREAM, FAILED, ("Cannot write the output buffer."),
      ("output buffer too small or not writable"));
  return GST_FLOW_ERROR;
}

/* --- life cycle ------------------------------------------------------------ */

static void
reseed (GstColorNorm * self)
{
  if (self->rand)
    g_rand_free (self->rand);
  if (self->seed >= 0)
    self->rand = g_rand_new_with_seed ((guint32) self->seed);
  else
    self->rand = g_rand_new ();
}

static gboolean
gst_colornorm_start (GstBaseTransform * trans)
{
  GstColorNorm *self = GST_COLORNORM (trans);

  GST_OBJECT_LOCK (self);
  reseed (self);
  self->target_dirty = self->target_location && *self->target_location;
  GST_OBJECT_UNLOCK (self);
  return load_target (self);
}

/* Going down to READY: a streaming thread waiting for a thumbnail fit
 * must not hold the pad deactivation up for a whole slide read. */
static GstStateChangeReturn
gst_colornorm_change_state (GstElement * element, GstStateChange transition)
{
  GstColorNorm *self = GST_COLORNORM (element);

  if (transition == GST_STATE_CHANGE_PAUSED_TO_READY)
    g_atomic_int_set (&self->thumb_cancel, 1);
  return GST_ELEMENT_CLASS (gst_colornorm_parent_class)->change_state
      (element, transition);
}

static gboolean
gst_colornorm_stop (GstBaseTransform * trans)
{
  GstColorNorm *self = GST_COLORNORM (trans);

  held_clear (self);
  g_clear_pointer (&self->thumb_failed, g_free);
  wsi_stain_acc_clear (&self->patch_acc);
  g_clear_pointer (&self->row, g_free);
  return TRUE;
}

static void
set_array (GValue * value, const gdouble * v, guint n)
{
  guint i;

  for (i = 0; i < n; i++) {
    GValue d = G_VALUE_INIT;
    g_value_init (&d, G_TYPE_DOUBLE);
    g_value_set_double (&d, v[i]);
    gst_value_array_append_and_take_value (value, &d);
  }
}

/* Copies a GstValueArray of exactly @n numbers, each finite and >= @min,
 * into @v; otherwise leaves @v alone and posts a warning (a bad value from
 * the user is not a programming error). Called without the object lock. */
static gboolean
get_array (GstColorNorm * self, const GValue * value, const gchar * name,
    gdouble * v, guint n, gdouble min)
{
  guint i, size = gst_value_array_get_size (value);
  gchar *problem = NULL;

  if (size != n)
    problem = g_strdup_printf ("needs %u numbers, got %u", n, size);
  for (i = 0; !problem && i < n; i++) {
    const GValue *e = gst_value_array_get_value (value, i);
    if (G_VALUE_HOLDS_DOUBLE (e))
      v[i] = g_value_get_double (e);
    else if (G_VALUE_HOLDS_INT (e))
      v[i] = g_value_get_int (e);
    else
      problem = g_strdup ("must hold numbers");
    if (!problem && (!isfinite (v[i]) || v[i] < min))
      problem = g_strdup_printf ("value %g out of range (finite, >= %g)",
          v[i], min);
  }
  if (problem) {
    GST_WARNING_OBJECT (self, "%s %s; ignored", name, problem);
    GST_ELEMENT_WARNING (self, RESOURCE, SETTINGS,
        ("Invalid value for property '%s': %s; the value was ignored.", name,
            problem), (NULL));
    g_free (problem);
    return FALSE;
  }
  return TRUE;
}

static void
gst_colornorm_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec)
{
  GstColorNorm *self = GST_COLORNORM (object);
  gdouble v[6];
  gboolean ok = TRUE;

  /* arrays are checked before the lock: a refusal posts a message */
  switch (prop_id) {
    case PROP_MEAN:
    case PROP_TARGET_LAB_MEAN:
      ok = get_array (self, value, pspec->name, v, 3, -G_MAXDOUBLE);
      break;
    case PROP_STD:
      ok = get_array (self, value, pspec->name, v, 3, 1e-6);
      break;
    case PROP_TARGET_LAB_STD:
      ok = get_array (self, value, pspec->name, v, 3, 0.0);
      break;
    case PROP_TARGET_STAIN_MATRIX:
      ok = get_array (self, value, pspec->name, v, 6, -G_MAXDOUBLE);
      break;
    case PROP_TARGET_MAX_CONC:
      ok = get_array (self, value, pspec->name, v, 2, 1e-6);
      break;
    default:
      break;
  }
  if (!ok)
    return;

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODE:
      self->mode = g_value_get_enum (value);
      break;
    case PROP_TENSOR_SCALE:
      self->tensor_scale = g_value_get_enum (value);
      break;
    case PROP_MEAN:
      memcpy (self->mean, v, 3 * sizeof (gdouble));
      break;
    case PROP_STD:
      memcpy (self->std, v, 3 * sizeof (gdouble));
      break;
    case PROP_TARGET_LOCATION:
      g_free (self->target_location);
      self->target_location = g_value_dup_string (value);
      self->target_dirty = TRUE;
      break;
    case PROP_TARGET_LAB_MEAN:
      memcpy (self->target_lab.mean, v, 3 * sizeof (gdouble));
      break;
    case PROP_TARGET_LAB_STD:
      memcpy (self->target_lab.std, v, 3 * sizeof (gdouble));
      break;
    case PROP_TARGET_STAIN_MATRIX:
      memcpy (self->target_stain.he, v, 6 * sizeof (gdouble));
      break;
    case PROP_TARGET_MAX_CONC:
      memcpy (self->target_stain.max_conc, v, 2 * sizeof (gdouble));
      break;
    case PROP_KEEP_RESIDUAL:
      self->keep_residual = g_value_get_boolean (value);
      break;
    case PROP_KEEP_BACKGROUND:
      self->keep_background = g_value_get_boolean (value);
      break;
    case PROP_FIT:
      self->fit_mode = g_value_get_enum (value);
      break;
    case PROP_FIT_PATCHES:
      self->fit_patches = g_value_get_uint (value);
      break;
    case PROP_FIT_MIN_TISSUE:
      self->fit_min_tissue = g_value_get_double (value);
      break;
    case PROP_AUGMENT:
      self->augment = g_value_get_boolean (value);
      break;
    case PROP_SEED:
      self->seed = g_value_get_int64 (value);
      reseed (self);
      break;
    case PROP_AUGMENT_SCALE:
      self->aug_scale = g_value_get_double (value);
      break;
    case PROP_AUGMENT_SHIFT:
      self->aug_shift = g_value_get_double (value);
      break;
    case PROP_AUGMENT_HED_SCALE:
      self->aug_hed_scale = g_value_get_double (value);
      break;
    case PROP_AUGMENT_HED_SHIFT:
      self->aug_hed_shift = g_value_get_double (value);
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
gst_colornorm_get_property (GObject * object, guint prop_id, GValue * value,
    GParamSpec * pspec)
{
  GstColorNorm *self = GST_COLORNORM (object);

  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODE:
      g_value_set_enum (value, self->mode);
      break;
    case PROP_TENSOR_SCALE:
      g_value_set_enum (value, self->tensor_scale);
      break;
    case PROP_MEAN:
      set_array (value, self->mean, 3);
      break;
    case PROP_STD:
      set_array (value, self->std, 3);
      break;
    case PROP_TARGET_LOCATION:
      g_value_set_string (value, self->target_location);
      break;
    case PROP_TARGET_LAB_MEAN:
      set_array (value, self->target_lab.mean, 3);
      break;
    case PROP_TARGET_LAB_STD:
      set_array (value, self->target_lab.std, 3);
      break;
    case PROP_TARGET_STAIN_MATRIX:
      set_array (value, &self->target_stain.he[0][0], 6);
      break;
    case PROP_TARGET_MAX_CONC:
      set_array (value, self->target_stain.max_conc, 2);
      break;
    case PROP_KEEP_RESIDUAL:
      g_value_set_boolean (value, self->keep_residual);
      break;
    case PROP_KEEP_BACKGROUND:
      g_value_set_boolean (value, self->keep_background);
      break;
    case PROP_FIT:
      g_value_set_enum (value, self->fit_mode);
      break;
    case PROP_FIT_PATCHES:
      g_value_set_uint (value, self->fit_patches);
      break;
    case PROP_FIT_MIN_TISSUE:
      g_value_set_double (value, self->fit_min_tissue);
      break;
    case PROP_SOURCE_FITTED:
      g_value_set_boolean (value, self->source_valid);
      break;
    case PROP_SOURCE_LAB_MEAN:
      set_array (value, self->source_lab.mean, 3);
      break;
    case PROP_SOURCE_LAB_STD:
      set_array (value, self->source_lab.std, 3);
      break;
    case PROP_SOURCE_STAIN_MATRIX:
      set_array (value, &self->source_stain.he[0][0], 6);
      break;
    case PROP_SOURCE_MAX_CONC:
      set_array (value, self->source_stain.max_conc, 2);
      break;
    case PROP_AUGMENT:
      g_value_set_boolean (value, self->augment);
      break;
    case PROP_SEED:
      g_value_set_int64 (value, self->seed);
      break;
    case PROP_AUGMENT_SCALE:
      g_value_set_double (value, self->aug_scale);
      break;
    case PROP_AUGMENT_SHIFT:
      g_value_set_double (value, self->aug_shift);
      break;
    case PROP_AUGMENT_HED_SCALE:
      g_value_set_double (value, self->aug_hed_scale);
      break;
    case PROP_AUGMENT_HED_SHIFT:
      g_value_set_double (value, self->aug_hed_shift);
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
gst_colornorm_finalize (GObject * object)
{
  GstColorNorm *self = GST_COLORNORM (object);

  held_clear (self);
  g_free (self->target_location);
  g_free (self->thumb_failed);
  wsi_stain_acc_clear (&self->patch_acc);
  g_free (self->row);
  if (self->rand)
    g_rand_free (self->rand);
  G_OBJECT_CLASS (gst_colornorm_parent_class)->finalize (object);
}

/* Elements are range-checked by set_property (a refusal is a warning
 * message, not GObject's g_warning), so the element spec takes any number. */
static GParamSpec *
array_spec (const gchar * name, const gchar * nick, const gchar * blurb,
    gboolean writable)
{
  return gst_param_spec_array (name, nick, blurb,
      g_param_spec_double ("value", "Value", "One number", -G_MAXDOUBLE,
          G_MAXDOUBLE, 0.0, G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS),
      (writable ? G_PARAM_READWRITE | GST_PARAM_MUTABLE_PLAYING :
          G_PARAM_READABLE) | G_PARAM_STATIC_STRINGS);
}

static void
gst_colornorm_class_init (GstColorNormClass * klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstBaseTransformClass *trans_class = GST_BASE_TRANSFORM_CLASS (klass);
  const GParamFlags rw = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
      GST_PARAM_MUTABLE_PLAYING;

  GST_DEBUG_CATEGORY_INIT (colornorm_debug, "colornorm", 0,
      "colour normalisation of H&E patches");

  gobject_class->set_property = gst_colornorm_set_property;
  gobject_class->get_property = gst_colornorm_get_property;
  gobject_class->finalize = gst_colornorm_finalize;
  element_class->change_state = GST_DEBUG_FUNCPTR (gst_colornorm_change_state);

  props[PROP_MODE] = g_param_spec_enum ("mode", "Mode",
      "What to do with the colours", GST_TYPE_COLORNORM_MODE, MODE_RESCALE01,
      rw);
  props[PROP_TENSOR_SCALE] = g_param_spec_enum ("tensor-scale",
      "Tensor scale", "Value mapping of tensor output in the reinhard and "
      "macenko modes", GST_TYPE_COLORNORM_SCALE, MODE_RESCALE01, rw);
  props[PROP_MEAN] = array_spec ("mean", "Mean",
      "Per-channel R,G,B mean on the [0,1] scale for standardize "
      "(default ImageNet's <0.485, 0.456, 0.406>)", TRUE);
  props[PROP_STD] = array_spec ("std", "Std",
      "Per-channel R,G,B standard deviation on the [0,1] scale for "
      "standardize, each > 0 (default ImageNet's <0.229, 0.224, 0.225>)",
      TRUE);
  props[PROP_TARGET_LOCATION] = g_param_spec_string ("target-location",
      "Target location", "H&E reference PNG to fit the stain targets from at "
      "start (overrides the target-* properties); empty: built-in H&E "
      "target", NULL, rw);
  props[PROP_TARGET_LAB_MEAN] = array_spec ("target-lab-mean",
      "Target L*a*b* mean", "Reinhard target: mean L*, a*, b* of tissue",
      TRUE);
  props[PROP_TARGET_LAB_STD] = array_spec ("target-lab-std",
      "Target L*a*b* std", "Reinhard target: standard deviation of L*, a*, "
      "b* of tissue", TRUE);
  props[PROP_TARGET_STAIN_MATRIX] = array_spec ("target-stain-matrix",
      "Target stain matrix", "Macenko target: hematoxylin then eosin unit "
      "optical-density vectors, <Hr, Hg, Hb, Er, Eg, Eb>", TRUE);
  props[PROP_TARGET_MAX_CONC] = array_spec ("target-max-conc",
      "Target max concentrations", "Macenko target: 99th percentile of the "
      "hematoxylin and eosin concentrations", TRUE);
  props[PROP_KEEP_RESIDUAL] = g_param_spec_boolean ("keep-residual",
      "Keep residual", "Macenko: keep the part of each pixel's optical "
      "density that the two source stains do not explain (FALSE: rebuild "
      "pixels from H and E only, as in Macenko et al.)", TRUE, rw);
  props[PROP_KEEP_BACKGROUND] = g_param_spec_boolean ("keep-background",
      "Keep background", "Reinhard: leave near-white background unchanged "
      "(all channels >= 243; blended up to a channel <= 219) instead of "
      "tinting it with the tissue's colour map", TRUE, rw);
  props[PROP_FIT] = g_param_spec_enum ("fit", "Fit",
      "When to estimate the source stains (reinhard, macenko)",
      GST_TYPE_COLORNORM_FIT, FIT_FIRST_PATCHES, rw);
  props[PROP_FIT_PATCHES] = g_param_spec_uint ("fit-patches", "Fit patches",
      "Tissue patches per slide for fit=first-patches (buffers are held "
      "until then, at most 4 * fit-patches + 32)", 1, 1024, 8, rw);
  props[PROP_FIT_MIN_TISSUE] = g_param_spec_double ("fit-min-tissue",
      "Fit min tissue", "Fraction of tissue pixels a patch needs to be used "
      "for a stain estimate (else: not fitted / skipped)", 0.0, 1.0, 0.1, rw);
  props[PROP_SOURCE_FITTED] = g_param_spec_boolean ("source-fitted",
      "Source fitted", "Whether the latest source estimate succeeded (FALSE: "
      "too little tissue, stain step left the pixels unchanged)", FALSE,
      G_PARAM_READABLE | G_PARAM_STATIC_STRINGS);
  props[PROP_SOURCE_LAB_MEAN] = array_spec ("source-lab-mean",
      "Source L*a*b* mean", "Latest Reinhard source estimate: mean L*, a*, "
      "b*", FALSE);
  props[PROP_SOURCE_LAB_STD] = array_spec ("source-lab-std",
      "Source L*a*b* std", "Latest Reinhard source estimate: standard "
      "deviation of L*, a*, b*", FALSE);
  props[PROP_SOURCE_STAIN_MATRIX] = array_spec ("source-stain-matrix",
      "Source stain matrix", "Latest Macenko source estimate: <Hr, Hg, Hb, "
      "Er, Eg, Eb>", FALSE);
  props[PROP_SOURCE_MAX_CONC] = array_spec ("source-max-conc",
      "Source max concentrations", "Latest Macenko source estimate: 99th "
      "percentile H and E concentrations", FALSE);
  props[PROP_AUGMENT] = g_param_spec_boolean ("augment", "Augment",
      "Random colour augmentation per buffer (for training)", FALSE, rw);
  props[PROP_SEED] = g_param_spec_int64 ("seed", "Seed",
      "Seed of the augmentation random numbers (-1: a different seed every "
      "run)", -1, G_MAXUINT32, -1, rw);
  props[PROP_AUGMENT_SCALE] = g_param_spec_double ("augment-scale",
      "Augment scale", "Per-channel factor drawn from [1 - x, 1 + x]",
      0.0, 1.0, 0.1, rw);
  props[PROP_AUGMENT_SHIFT] = g_param_spec_double ("augment-shift",
      "Augment shift", "Per-channel shift drawn from [-x, x] on the [0,1] "
      "scale", 0.0, 1.0, 0.05, rw);
  props[PROP_AUGMENT_HED_SCALE] = g_param_spec_double ("augment-hed-scale",
      "Augment HED scale", "Per-stain (H, E, DAB) concentration factor drawn "
      "from [1 - x, 1 + x]", 0.0, 1.0, 0.05, rw);
  props[PROP_AUGMENT_HED_SHIFT] = g_param_spec_double ("augment-hed-shift",
      "Augment HED shift", "Per-stain concentration shift drawn from [-x, x] "
      "(optical density units)", 0.0, 1.0, 0.02, rw);
  props[PROP_POST_MESSAGES] = gst_wsi_param_spec_post_messages ();
  g_object_class_install_properties (gobject_class, N_PROPS, props);

  gst_element_class_set_static_metadata (element_class,
      "Colour normalisation", "Filter/Converter/Video",
      "Rescales, standardises, stain-normalises (Reinhard, Macenko) and "
      "colour-augments RGB patches, to float32 tensors or RGB video",
      "gst-wsiseg");
  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);

  trans_class->passthrough_on_same_caps = FALSE;
  trans_class->transform_caps =
      GST_DEBUG_FUNCPTR (gst_colornorm_transform_caps);
  trans_class->fixate_caps = GST_DEBUG_FUNCPTR (gst_colornorm_fixate_caps);
  trans_class->set_caps = GST_DEBUG_FUNCPTR (gst_colornorm_set_caps);
  trans_class->transform_size =
      GST_DEBUG_FUNCPTR (gst_colornorm_transform_size);
  trans_class->transform = GST_DEBUG_FUNCPTR (gst_colornorm_transform);
  trans_class->submit_input_buffer =
      GST_DEBUG_FUNCPTR (gst_colornorm_submit_input_buffer);
  trans_class->generate_output =
      GST_DEBUG_FUNCPTR (gst_colornorm_generate_output);
  trans_class->sink_event = GST_DEBUG_FUNCPTR (gst_colornorm_sink_event);
  trans_class->start = GST_DEBUG_FUNCPTR (gst_colornorm_start);
  trans_class->query = GST_DEBUG_FUNCPTR (gst_colornorm_query);
  trans_class->propose_allocation =
      GST_DEBUG_FUNCPTR (gst_colornorm_propose_allocation);
  trans_class->stop = GST_DEBUG_FUNCPTR (gst_colornorm_stop);

  gst_type_mark_as_plugin_api (GST_TYPE_COLORNORM_MODE, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_COLORNORM_SCALE, 0);
  gst_type_mark_as_plugin_api (GST_TYPE_COLORNORM_FIT, 0);
}

static void
gst_colornorm_init (GstColorNorm * self)
{
  self->mode = MODE_RESCALE01;
  self->tensor_scale = MODE_RESCALE01;
  memcpy (self->mean, imagenet_mean, sizeof (self->mean));
  memcpy (self->std, imagenet_std, sizeof (self->std));
  wsi_default_lab_target (&self->target_lab);
  wsi_default_stain_target (&self->target_stain);
  self->keep_residual = TRUE;
  self->keep_background = TRUE;
  self->fit_mode = FIT_FIRST_PATCHES;
  self->fit_patches = 8;
  self->fit_min_tissue = 0.1;
  self->seed = -1;
  self->aug_scale = 0.1;
  self->aug_shift = 0.05;
  self->aug_hed_scale = 0.05;
  self->aug_hed_shift = 0.02;
  g_queue_init (&self->held);
  gst_video_info_init (&self->in_info);
  gst_video_info_init (&self->out_info);
  gst_base_transform_set_passthrough (GST_BASE_TRANSFORM (self), FALSE);
  gst_base_transform_set_in_place (GST_BASE_TRANSFORM (self), FALSE);
}
