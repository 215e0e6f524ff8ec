/* Test helper for the Python stitchsink tests: pushes patches read from a
 * raw file (grid rows x cols x P x P x sample, raster order) with hand-made
 * tile meta on patchify's grid into a stitchsink configured from
 * "property=value" arguments, then EOS.
 *
 *   stitch_feed --patches F --kind gray8|gray16|prob [--classes C]
 *     --width W --height H --patch P --overlap O [--downsample D]
 *     [--region-x X] [--region-y Y] [--mpp M] [--unknown-height]
 *     [--dims STR] [--drop c:r,...] [--detections F] [--instances-event]
 *     [prop=value ...]
 *
 * --detections: text lines "col row instance-id class-id score" attached
 * as wsi-detection metas (gst/gstwsidetection.h) to patch (col, row); an id
 * outside 1..65535 is attached raw (to test the refusal).
 * --instances-event: the sticky wsi-instances event after the caps.
 *
 * Prints the error message and exits 2 when the sink posts an error; prints
 * "max-band-rows N" on success. */
#include "stitchtest.h"
#include "gstwsidetection.h"

#include <stdlib.h>

typedef struct
{
  Grid g;
  gint kind_bytes;              /* bytes per pixel in the file */
  gint classes;
  gdouble mpp;
  guint8 *data;
  gsize patch_bytes;
  GArray *detections;           /* Detection, from the file */
} Feed;

typedef struct
{
  gint c, r, cls;
  guint64 id;
  gdouble score;
} Detection;

/* Parses the detections file once ("col row id class score" lines). */
static GArray *
parse_detections (const gchar * text)
{
  GArray *out = g_array_new (FALSE, FALSE, sizeof (Detection));
  gchar **lines = g_strsplit (text, "\n", -1), **l;

  for (l = lines; *l; l++) {
    gchar **t = g_strsplit_set (g_strstrip (*l), " \t", -1);
    if (g_strv_length (t) == 5) {
      Detection d = { atoi (t[0]), atoi (t[1]), atoi (t[3]),
        g_ascii_strtoull (t[2], NULL, 10), g_ascii_strtod (t[4], NULL)
      };
      g_array_append_val (out, d);
    }
    g_strfreev (t);
  }
  g_strfreev (lines);
  return out;
}

static void
add_detections (const Feed * f, GstBuffer * buf, gint c, gint r)
{
  guint i;

  for (i = 0; f->detections && i < f->detections->len; i++) {
    const Detection *d = &g_array_index (f->detections, Detection, i);
    if (d->c != c || d->r != r)
      continue;
    if (d->id >= 1 && d->id <= GST_WSI_DETECTION_MAX_ID)
      gst_wsi_detection_meta_add (buf, (guint) d->id, d->cls, "object",
          d->score, 0, 0, 1, 1);
    else {
      GstVideoRegionOfInterestMeta *roi =
          gst_buffer_add_video_region_of_interest_meta (buf, "object", 0, 0,
          1, 1);
      gst_video_region_of_interest_meta_add_param (roi,
          gst_structure_new (GST_WSI_DETECTION_PARAM, "score", G_TYPE_DOUBLE,
              d->score, "class-id", G_TYPE_INT, d->cls, "instance-id",
              G_TYPE_UINT, (guint) d->id, NULL));
    }
  }
}

static void
copy_pixel (const Grid * g, gint64 X, gint64 Y, gint c, gint r,
    gboolean valid, guint8 * px, gpointer data)
{
  /* unused: patches come from the file */
}

static GstBuffer *
feed_patch (const Feed * f, gint c, gint r)
{
  const Grid *g = &f->g;
  GstBuffer *buf;
  gsize off = ((gsize) r * grid_cols (g) + c) * f->patch_bytes;

  if (f->classes > 0) {
    /* reuse make_patch for the meta, then replace the memory */
    Grid gg = *g;
    GstBuffer *tmp;
    gg.format = GST_VIDEO_FORMAT_GRAY8;
    tmp = make_patch (&gg, c, r, copy_pixel, NULL);
    buf = gst_buffer_new_memdup (f->data + off, f->patch_bytes);
    gst_buffer_copy_into (buf, tmp, GST_BUFFER_COPY_METADATA, 0, -1);
    gst_buffer_unref (tmp);
  } else {
    GstMapInfo map;
    gint j, P = g->patch;
    GstVideoInfo info;
    buf = make_patch (g, c, r, copy_pixel, NULL);
    gst_video_info_set_format (&info, g->format, P, P);
    gst_buffer_map (buf, &map, GST_MAP_WRITE);
    for (j = 0; j < P; j++)
      memcpy (map.data + j * info.stride[0],
          f->data + off + (gsize) j * P * f->kind_bytes,
          (gsize) P * f->kind_bytes);
    gst_buffer_unmap (buf, &map);
  }
  if (f->mpp > 0) {
    GstWsiTileMeta *m = gst_buffer_get_wsi_tile_meta (buf);
    m->mpp_x = m->mpp_y = f->mpp;
  }
  add_detections (f, buf, c, r);
  return buf;
}

static gboolean
is_dropped (const gchar * drop, gint c, gint r)
{
  gchar key[32];
  gchar *padded;
  gboolean hit;

  if (!drop)
    return FALSE;
  g_snprintf (key, sizeof key, ",%d:%d,", c, r);
  padded = g_strdup_printf (",%s,", drop);
  hit = strstr (padded, key) != NULL;
  g_free (padded);
  return hit;
}

int
main (int argc, char **argv)
{
  Feed f = { 0 };
  const gchar *patches = NULL, *kind = "gray8", *dims = NULL, *drop = NULL;
  const gchar *detections = NULL;
  gboolean instances_event = FALSE;
  GstElement *sink;
  GstHarness *h;
  GstBus *bus;
  GError *err;
  gchar *contents = NULL, caps[256];
  gsize len = 0;
  guint64 band_rows = 0;
  gint i, c, r, rc = 0;
  GstFlowReturn ret = GST_FLOW_OK;

  gst_init (&argc, &argv);
  f.g.downsample = 1.0;
  f.g.slide = "feed";
  sink = gst_element_factory_make ("stitchsink", NULL);
  if (!sink) {
    g_printerr ("stitchsink not found (GST_PLUGIN_PATH?)\n");
    return 1;
  }
  for (i = 1; i < argc; i++) {
    const gchar *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
    if (!strcmp (a, "--patches"))
      patches = v, i++;
    else if (!strcmp (a, "--kind"))
      kind = v, i++;
    else if (!strcmp (a, "--classes"))
      f.classes = atoi (v), i++;
    else if (!strcmp (a, "--width"))
      f.g.width = atoi (v), i++;
    else if (!strcmp (a, "--height"))
      f.g.height = atoi (v), i++;
    else if (!strcmp (a, "--patch"))
      f.g.patch = atoi (v), i++;
    else if (!strcmp (a, "--overlap"))
      f.g.overlap = atoi (v), i++;
    else if (!strcmp (a, "--downsample"))
      f.g.downsample = g_ascii_strtod (v, NULL), i++;
    else if (!strcmp (a, "--region-x"))
      f.g.region_x = g_ascii_strtoll (v, NULL, 10), i++;
    else if (!strcmp (a, "--region-y"))
      f.g.region_y = g_ascii_strtoll (v, NULL, 10), i++;
    else if (!strcmp (a, "--mpp"))
      f.mpp = g_ascii_strtod (v, NULL), i++;
    else if (!strcmp (a, "--dims"))
      dims = v, i++;
    else if (!strcmp (a, "--drop"))
      drop = v, i++;
    else if (!strcmp (a, "--detections"))
      detections = v, i++;
    else if (!strcmp (a, "--instances-event"))
      instances_event = TRUE;
    else if (!strcmp (a, "--unknown-height"))
      f.g.unknown_height = TRUE;
    else if (strchr (a, '=')) {
      gchar **kv = g_strsplit (a, "=", 2);
      gst_util_set_object_arg (G_OBJECT (sink), kv[0], kv[1]);
      g_strfreev (kv);
    } else {
      g_printerr ("unknown argument %s\n", a);
      return 1;
    }
  }
  if (!strcmp (kind, "prob")) {
    f.g.format = GST_VIDEO_FORMAT_GRAY8;        /* meta only */
    f.kind_bytes = 4 * f.classes;
  } else if (!strcmp (kind, "gray16")) {
    f.g.format = GST_VIDEO_FORMAT_GRAY16_LE;
    f.kind_bytes = 2;
    f.classes = 0;
  } else {
    f.g.format = GST_VIDEO_FORMAT_GRAY8;
    f.kind_bytes = 1;
    f.classes = 0;
  }
  f.patch_bytes = (gsize) f.g.patch * f.g.patch * f.kind_bytes;
  if (!patches || !g_file_get_contents (patches, &contents, &len, NULL)
      || len != f.patch_bytes * grid_cols (&f.g) * grid_rows (&f.g)) {
    g_printerr ("patch file missing or not %d x %d patches of %" G_GSIZE_FORMAT
        " bytes\n", grid_rows (&f.g), grid_cols (&f.g), f.patch_bytes);
    return 1;
  }
  f.data = (guint8 *) contents;
  if (detections) {
    gchar *text = NULL;
    if (!g_file_get_contents (detections, &text, NULL, NULL)) {
      g_printerr ("detections file %s missing\n", detections);
      return 1;
    }
    f.detections = parse_detections (text);
    g_free (text);
  }

  bus = gst_bus_new ();
  gst_element_set_bus (sink, bus);
  h = gst_harness_new_with_element (sink, "sink", NULL);
  gst_object_unref (sink);
  if (f.classes > 0) {
    gchar *d = dims ? g_strdup (dims) : g_strdup_printf ("%d:%d:%d:1",
        f.classes, f.g.patch, f.g.patch);
    g_snprintf (caps, sizeof caps, "other/tensors,format=static,"
        "num_tensors=1,types=float32,dimensions=%s,framerate=0/1", d);
    g_free (d);
  } else {
    format_caps (f.g.format, f.g.patch, caps, sizeof caps);
  }
  gst_harness_set_src_caps_str (h, caps);
  if (instances_event)
    gst_harness_push_event (h, gst_wsi_instances_event_new ());

  for (r = 0; r < grid_rows (&f.g) && ret == GST_FLOW_OK; r++)
    for (c = 0; c < grid_cols (&f.g) && ret == GST_FLOW_OK; c++)
      if (!is_dropped (drop, c, r))
        ret = gst_harness_push (h, feed_patch (&f, c, r));
  if (ret == GST_FLOW_OK)
    gst_harness_push_event (h, gst_event_new_eos ());

  err = pop_error (bus);
  if (err) {
    g_print ("ERROR: %s\n", err->message);
    g_error_free (err);
    rc = 2;
  } else if (ret != GST_FLOW_OK) {
    g_print ("ERROR: flow %s\n", gst_flow_get_name (ret));
    rc = 2;
  } else {
    g_object_get (h->element, "max-band-rows", &band_rows, NULL);
    g_print ("max-band-rows %" G_GUINT64_FORMAT "\n", band_rows);
  }
  gst_harness_teardown (h);
  gst_object_unref (bus);
  g_free (contents);
  if (f.detections)
    g_array_free (f.detections, TRUE);
  return rc;
}
