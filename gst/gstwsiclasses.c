/* Class names and colours in-band (gstwsiclasses.h). */
#include "gstwsiclasses.h"

GstEvent *
gst_wsi_classes_event_new (guint n_classes, const gchar * const *names,
    const guint32 * colors)
{
  GstStructure *s = gst_structure_new_empty (GST_WSI_CLASSES_EVENT);
  GValue arr = G_VALUE_INIT, v = G_VALUE_INIT;
  guint i;

  gst_value_array_init (&arr, n_classes);
  g_value_init (&v, G_TYPE_STRING);
  for (i = 0; i < n_classes; i++) {
    g_value_set_string (&v, names && names[i] ? names[i] : "");
    gst_value_array_append_value (&arr, &v);
  }
  g_value_unset (&v);
  gst_structure_take_value (s, "names", &arr);
  if (colors) {
    gst_value_array_init (&arr, n_classes);
    g_value_init (&v, G_TYPE_UINT);
    for (i = 0; i < n_classes; i++) {
      g_value_set_uint (&v, colors[i] & 0xffffff);
      gst_value_array_append_value (&arr, &v);
    }
    g_value_unset (&v);
    gst_structure_take_value (s, "colors", &arr);
  }
  return gst_event_new_custom (GST_EVENT_CUSTOM_DOWNSTREAM_STICKY, s);
}

GstEvent *
gst_wsi_classes_event_new_rgb (guint n_classes, const gchar * const *names,
    const guint8 (*rgb)[3])
{
  guint32 *colors = NULL;
  GstEvent *ev;
  guint i;

  if (rgb) {
    colors = g_new (guint32, MAX (n_classes, 1));
    for (i = 0; i < n_classes; i++)
      colors[i] = (guint32) rgb[i][0] << 16 | (guint32) rgb[i][1] << 8
          | rgb[i][2];
  }
  ev = gst_wsi_classes_event_new (n_classes, names, colors);
  g_free (colors);
  return ev;
}

gboolean
gst_wsi_classes_event_parse (GstEvent * event, gchar *** names,
    guint32 ** colors, guint * n_classes)
{
  const GstStructure *s;
  const GValue *vn, *vc;
  guint i, n;

  if (!event || GST_EVENT_TYPE (event) != GST_EVENT_CUSTOM_DOWNSTREAM_STICKY)
    return FALSE;
  s = gst_event_get_structure (event);
  if (!s || !gst_structure_has_name (s, GST_WSI_CLASSES_EVENT))
    return FALSE;
  vn = gst_structure_get_value (s, "names");
  vc = gst_structure_get_value (s, "colors");
  if (!vn || !GST_VALUE_HOLDS_ARRAY (vn))
    return FALSE;
  n = gst_value_array_get_size (vn);
  if (vc && (!GST_VALUE_HOLDS_ARRAY (vc) || gst_value_array_get_size (vc) != n))
    return FALSE;
  for (i = 0; i < n; i++) {
    if (!G_VALUE_HOLDS_STRING (gst_value_array_get_value (vn, i))
        || (vc && !G_VALUE_HOLDS_UINT (gst_value_array_get_value (vc, i))))
      return FALSE;
  }
  *names = g_new0 (gchar *, n + 1);
  for (i = 0; i < n; i++)
    (*names)[i] = g_value_dup_string (gst_value_array_get_value (vn, i));
  *colors = NULL;
  if (vc) {
    *colors = g_new (guint32, MAX (n, 1));
    for (i = 0; i < n; i++)
      (*colors)[i] = g_value_get_uint (gst_value_array_get_value (vc, i))
          & 0xffffff;
  }
  *n_classes = n;
  return TRUE;
}
