/* Conventions every element follows (docs/conventions.md): which properties
 * may change while running, and how periodic bus messages are gated. */
#pragma once

#include <gst/gst.h>

G_BEGIN_DECLS

/* Marks an element running (between start and stop). Elements call it in
 * start() before any setting is read and in stop(). */
void gst_wsi_set_running (GstElement * element, gint * running_flag,
    gboolean running);

/* TRUE when @pspec must not change now: the element is running and the
 * property lacks GST_PARAM_MUTABLE_PLAYING. Then it also logs a warning and
 * posts a GST_MESSAGE_WARNING naming the property; the caller ignores the
 * value. Call first thing in set_property. */
gboolean gst_wsi_property_refused (GstElement * element,
    const gint * running_flag, const GParamSpec * pspec);

/* Periodic messages (per patch, step or row) are posted only when the
 * element's post-messages property is TRUE, and then at most once per
 * @interval_us (0: every call). Per-epoch, per-slide and final messages are
 * always posted. Returns TRUE when a periodic message may be posted now;
 * @last_us holds the element's last posting time. */
gboolean gst_wsi_periodic_message_due (gboolean post_messages,
    gint64 * last_us, gint64 interval_us);

/* The GParamSpec of the shared post-messages property. */
GParamSpec *gst_wsi_param_spec_post_messages (void);

G_END_DECLS
