#include "gstwsiprops.h"

void
gst_wsi_set_running (GstElement * element, gint * running_flag,
    gboolean running)
{
  g_atomic_int_set (running_flag, running ? 1 : 0);
}

gboolean
gst_wsi_property_refused (GstElement * element, const gint * running_flag,
    const GParamSpec * pspec)
{
  if (pspec->flags & GST_PARAM_MUTABLE_PLAYING)
    return FALSE;
  if (!g_atomic_int_get ((gint *) running_flag))
    return FALSE;
  GST_WARNING_OBJECT (element, "property '%s' can only be changed in the "
      "NULL or READY state; ignored while running", pspec->name);
  GST_ELEMENT_WARNING (element, RESOURCE, SETTINGS,
      ("Property '%s' cannot be changed while the element is running; "
          "the new value was ignored.", pspec->name),
      ("set it before the pipeline starts (NULL or READY state)"));
  return TRUE;
}

gboolean
gst_wsi_periodic_message_due (gboolean post_messages, gint64 * last_us,
    gint64 interval_us)
{
  gint64 now;

  if (!post_messages)
    return FALSE;
  now = g_get_monotonic_time ();
  if (interval_us > 0 && *last_us != 0 && now - *last_us < interval_us)
    return FALSE;
  *last_us = now;
  return TRUE;
}

GParamSpec *
gst_wsi_param_spec_post_messages (void)
{
  return g_param_spec_boolean ("post-messages", "Post messages",
      "Post the element's periodic messages (per patch, step or row) on "
      "the bus; per-epoch, per-slide and final messages are always posted",
      FALSE, G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
      GST_PARAM_MUTABLE_PLAYING);
}
