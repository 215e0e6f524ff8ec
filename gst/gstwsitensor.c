/* Tensor caps (gstwsitensor.h). */
#include "gstwsitensor.h"

gboolean
gst_wsi_tensor_parse_dims (const gchar * dims, gint * channels, gint * width,
    gint * height)
{
  gchar **tok;
  guint n, i;
  gboolean ok;
  gint64 v[3] = { 0, 0, 0 };

  if (!dims)
    return FALSE;
  tok = g_strsplit (dims, ":", -1);
  n = g_strv_length (tok);
  ok = n >= 3 && n <= 4;
  for (i = 0; ok && i < n; i++) {
    gchar *end = NULL, *t = g_strstrip (tok[i]);
    gint64 x = g_ascii_strtoll (t, &end, 10);
    if (end == t || *end)
      ok = FALSE;
    else if (i < 3)
      v[i] = x;
    else if (x != 1)
      ok = FALSE;
  }
  g_strfreev (tok);
  for (i = 0; ok && i < 3; i++)
    ok = v[i] >= 1 && v[i] <= GST_WSI_TENSOR_MAX_DIM;
  if (!ok)
    return FALSE;
  if (channels)
    *channels = (gint) v[0];
  if (width)
    *width = (gint) v[1];
  if (height)
    *height = (gint) v[2];
  return TRUE;
}

gboolean
gst_wsi_tensor_structure_parse (const GstStructure * s, gint * channels,
    gint * width, gint * height)
{
  const gchar *format;
  gint n = 0;

  if (!gst_structure_has_name (s, "other/tensors")
      || !gst_structure_get_int (s, "num_tensors", &n) || n != 1
      || g_strcmp0 (gst_structure_get_string (s, "types"), "float32") != 0)
    return FALSE;
  format = gst_structure_get_string (s, "format");
  if (gst_structure_has_field (s, "format") && g_strcmp0 (format, "static"))
    return FALSE;
  return gst_wsi_tensor_parse_dims (gst_structure_get_string (s,
          "dimensions"), channels, width, height);
}

GstStructure *
gst_wsi_tensor_structure_new (gint channels, gint width, gint height)
{
  GstStructure *s = gst_structure_new ("other/tensors",
      "format", G_TYPE_STRING, "static",
      "num_tensors", G_TYPE_INT, 1,
      "types", G_TYPE_STRING, "float32", NULL);

  if (width > 0 && height > 0) {
    gchar *dims = g_strdup_printf ("%d:%d:%d:1", channels, width, height);
    gst_structure_set (s, "dimensions", G_TYPE_STRING, dims, NULL);
    g_free (dims);
  }
  return s;
}
