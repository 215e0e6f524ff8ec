/* Test driver: pushes hand-made RGB patches with a GstWsiTileMeta (and
 * optionally a WsiAugmentMeta) through labelpatch in a GstHarness and writes
 * the label patches, packed row by row, to a file. The Python tests make the
 * annotation files and the numpy references.
 *
 *   labelpatch-run --set masks=/tmp/m/{name}.png --slide /tmp/img/a.png \
 *       --size 64x48 --slide-size 200x100 --patch=-10,5 --patch 150,60 \
 *       [--ds 2] [--valid 4,0,60,48] [--flip-h] [--flip-v] [--rot90 1] \
 *       --out labels.raw
 *
 * --size is the patch before augmentation (the meta's size); with an odd
 * --rot90 the pushed frame is turned (height x width).
 * Prints the output format and one "meta ..." line per output buffer; on an
 * element error prints "ERROR: <message>" and exits with 2. */
#include <gst/gst.h>
#include <gst/check/gstcheck.h>
#include <gst/check/gstharness.h>
#include <gst/video/video.h>
#include <stdio.h>
#include <stdlib.h>

#include "gstwsitilemeta.h"

static gchar **sets, **patches, *slide, *size = (gchar *) "64x64";
static gchar *slide_size, *valid, *out_path;
static gdouble ds = 1.0;
static gboolean flip_h, flip_v, no_meta, aug_meta;
static gint rot90;

static GOptionEntry entries[] = {
  {"set", 0, 0, G_OPTION_ARG_STRING_ARRAY, &sets, "element property", "K=V"},
  {"slide", 0, 0, G_OPTION_ARG_STRING, &slide, "slide path in the meta", "P"},
  {"size", 0, 0, G_OPTION_ARG_STRING, &size, "patch size", "WxH"},
  {"slide-size", 0, 0, G_OPTION_ARG_STRING, &slide_size, "level-0 size",
      "WxH"},
  {"ds", 0, 0, G_OPTION_ARG_DOUBLE, &ds, "downsample", "D"},
  {"valid", 0, 0, G_OPTION_ARG_STRING, &valid, "pad-left,pad-top,w,h", "L"},
  {"patch", 0, 0, G_OPTION_ARG_STRING_ARRAY, &patches, "level-0 origin",
      "X,Y"},
  {"flip-h", 0, 0, G_OPTION_ARG_NONE, &flip_h, "augment: mirror", NULL},
  {"flip-v", 0, 0, G_OPTION_ARG_NONE, &flip_v, "augment: upside down", NULL},
  {"rot90", 0, 0, G_OPTION_ARG_INT, &rot90, "augment: quarter turns", "K"},
  {"aug-meta", 0, 0, G_OPTION_ARG_NONE, &aug_meta,
      "attach a WsiAugmentMeta even without flips/turns", NULL},
  {"no-meta", 0, 0, G_OPTION_ARG_NONE, &no_meta, "push without tile meta",
      NULL},
  {"out", 0, 0, G_OPTION_ARG_FILENAME, &out_path, "output file", "F"},
  {NULL}
};

static void
die (const gchar * msg)
{
  fprintf (stderr, "labelpatch-run: %s\n", msg);
  exit (1);
}

static gboolean
report_error (GstBus * bus)
{
  GstMessage *msg;
  gboolean found = FALSE;

  while ((msg = gst_bus_pop (bus))) {
    if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ERROR
        || GST_MESSAGE_TYPE (msg) == GST_MESSAGE_WARNING) {
      GError *err = NULL;
      gchar *dbg = NULL;
      gboolean is_error = GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ERROR;
      if (is_error)
        gst_message_parse_error (msg, &err, &dbg);
      else
        gst_message_parse_warning (msg, &err, &dbg);
      fprintf (stderr, "%s: %s [%s %d]\n", is_error ? "ERROR" : "WARNING",
          err->message, g_quark_to_string (err->domain), err->code);
      found |= is_error;
      g_error_free (err);
      g_free (dbg);
    }
    gst_message_unref (msg);
  }
  return found;
}

static GstBuffer *
make_patch (gint w, gint h, gint64 x, gint64 y, gint64 sw, gint64 sh,
    gint pl, gint pt, gint vw, gint vh, guint frame)
{
  GstVideoInfo info;
  GstBuffer *buf;
  GstWsiTileMeta *m;

  /* the pushed frame: turned by an odd rot90, rows 4-byte aligned */
  gst_video_info_set_format (&info, GST_VIDEO_FORMAT_RGB, (rot90 & 1) ? h : w,
      (rot90 & 1) ? w : h);
  buf = gst_buffer_new_allocate (NULL, GST_VIDEO_INFO_SIZE (&info), NULL);
  gst_buffer_memset (buf, 0, 0x80, GST_VIDEO_INFO_SIZE (&info));
  if (no_meta)
    return buf;
  m = gst_wsi_tile_meta_add (buf);
  gst_wsi_tile_meta_set_slide (m, slide);
  m->downsample = ds;
  m->x = x;
  m->y = y;
  m->width = w;
  m->height = h;
  m->pad_left = pl;
  m->pad_top = pt;
  m->valid_width = vw;
  m->valid_height = vh;
  m->slide_width = sw;
  m->slide_height = sh;
  m->region_width = sw;
  m->region_height = sh;
  m->frame = frame;
  if (flip_h || flip_v || rot90 || aug_meta) {
    const gchar *tags[] = { NULL };
    GstCustomMeta *cm;
    if (!gst_meta_get_info ("WsiAugmentMeta"))
      gst_meta_register_custom ("WsiAugmentMeta", tags, NULL, NULL, NULL);
    cm = gst_buffer_add_custom_meta (buf, "WsiAugmentMeta");
    gst_structure_set (gst_custom_meta_get_structure (cm),
        "flip-h", G_TYPE_BOOLEAN, flip_h, "flip-v", G_TYPE_BOOLEAN, flip_v,
        "rotate90", G_TYPE_INT, rot90, NULL);
  }
  return buf;
}

int
main (int argc, char **argv)
{
  GOptionContext *ctx = g_option_context_new ("- run labelpatch on patches");
  GError *err = NULL;
  GstElement *el;
  GstHarness *h;
  GstBus *bus;
  FILE *out;
  gint w, hh, pl = 0, pt = 0, vw, vh, i, status = 0;
  gint64 sw = 0, sh = 0;
  gchar *caps;

  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, &argc, &argv, &err))
    die (err->message);
  g_option_context_free (ctx);
  if (!out_path || !patches || (!slide && !no_meta))
    die ("need --out, --slide and at least one --patch");
  if (sscanf (size, "%dx%d", &w, &hh) != 2 || w <= 0 || hh <= 0)
    die ("bad --size");
  if (slide_size && sscanf (slide_size, "%" G_GINT64_FORMAT "x%"
          G_GINT64_FORMAT, &sw, &sh) != 2)
    die ("bad --slide-size");
  vw = w;
  vh = hh;
  if (valid && sscanf (valid, "%d,%d,%d,%d", &pl, &pt, &vw, &vh) != 4)
    die ("bad --valid");

  gst_init (NULL, NULL);
  gst_wsi_tile_meta_get_info ();
  el = gst_element_factory_make ("labelpatch", NULL);
  if (!el)
    die ("no labelpatch element (GST_PLUGIN_PATH?)");
  gst_object_ref_sink (el);
  for (i = 0; sets && sets[i]; i++) {
    gchar **kv = g_strsplit (sets[i], "=", 2);
    if (!kv[0] || !kv[1])
      die ("bad --set");
    gst_util_set_object_arg (G_OBJECT (el), kv[0], kv[1]);
    g_strfreev (kv);
  }
  bus = gst_bus_new ();
  gst_element_set_bus (el, bus);
  /* settings are checked when the element starts */
  if (gst_element_set_state (el, GST_STATE_PAUSED) == GST_STATE_CHANGE_FAILURE) {
    if (!report_error (bus))
      fprintf (stderr, "ERROR: labelpatch did not start\n");
    gst_element_set_state (el, GST_STATE_NULL);
    gst_object_unref (el);
    gst_object_unref (bus);
    return 2;
  }

  h = gst_harness_new_with_element (el, "sink", "src");
  caps = g_strdup_printf ("video/x-raw,format=RGB,width=%d,height=%d,"
      "framerate=0/1", (rot90 & 1) ? hh : w, (rot90 & 1) ? w : hh);
  gst_harness_set_src_caps_str (h, caps);
  g_free (caps);

  out = fopen (out_path, "wb");
  if (!out)
    die ("cannot write --out");
  for (i = 0; patches[i]; i++) {
    gint64 x, y;
    GstBuffer *res;
    GstFlowReturn ret;
    gchar **parts = g_strsplit (patches[i], ",", 3);

    if (g_strv_length (parts) < 2)
      die ("bad --patch");
    x = g_ascii_strtoll (parts[0], NULL, 10);
    y = g_ascii_strtoll (parts[1], NULL, 10);
    if (parts[2]) {
      g_free (slide);
      slide = g_strdup (parts[2]);
    }
    g_strfreev (parts);
    ret = gst_harness_push (h, make_patch (w, hh, x, y, sw, sh, pl, pt, vw,
            vh, i));
    if (ret != GST_FLOW_OK) {
      if (!report_error (bus))
        fprintf (stderr, "ERROR: flow %s without an error message\n",
            gst_flow_get_name (ret));
      status = 2;
      break;
    }
    res = gst_harness_pull (h);
    if (i == 0) {
      GstCaps *c = gst_pad_get_current_caps (h->sinkpad);
      GstStructure *s = gst_caps_get_structure (c, 0);
      gint cw = 0, ch = 0;
      gst_structure_get_int (s, "width", &cw);
      gst_structure_get_int (s, "height", &ch);
      printf ("format=%s width=%d height=%d\n",
          gst_structure_get_string (s, "format"), cw, ch);
      gst_caps_unref (c);
    }
    {
      GstVideoInfo info;
      GstVideoFrame frame;
      GstCaps *c = gst_pad_get_current_caps (h->sinkpad);
      GstWsiTileMeta *m = gst_buffer_get_wsi_tile_meta (res);
      gint row;

      gst_video_info_from_caps (&info, c);
      gst_caps_unref (c);
      if (!gst_video_frame_map (&frame, &info, res, GST_MAP_READ))
        die ("cannot map output");
      for (row = 0; row < GST_VIDEO_INFO_HEIGHT (&info); row++)
        fwrite ((guint8 *) GST_VIDEO_FRAME_PLANE_DATA (&frame, 0) +
            row * GST_VIDEO_FRAME_PLANE_STRIDE (&frame, 0),
            GST_VIDEO_FRAME_COMP_PSTRIDE (&frame, 0),
            GST_VIDEO_INFO_WIDTH (&info), out);
      gst_video_frame_unmap (&frame);
      if (m)
        printf ("meta slide=%s x=%" G_GINT64_FORMAT " y=%" G_GINT64_FORMAT
            " width=%d height=%d frame=%" G_GUINT64_FORMAT "\n", m->slide,
            m->x, m->y, m->width, m->height, m->frame);
      else
        printf ("meta none\n");
    }
    gst_buffer_unref (res);
  }
  if (status == 0)
    report_error (bus);         /* warnings */
  fclose (out);
  gst_harness_teardown (h);
  gst_object_unref (el);
  gst_object_unref (bus);
  g_strfreev (sets);
  g_strfreev (patches);
  return status;
}
