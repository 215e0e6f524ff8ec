/* Class names and colours in-band: a sticky custom downstream event that a
 * producer (segment-fcn, segment-maskrcnn) sends before its first buffer and
 * again when its model changes; consumers (stitchsink) read it from the
 * event or from their sink pad's sticky events (docs/tile-meta.md). */
#pragma once

#include <gst/gst.h>

G_BEGIN_DECLS

/* Structure name of the event; fields "names" (GstValueArray of strings,
 * one per label value from 0) and "colors" (GstValueArray of guint
 * 0xRRGGBB, same length; absent when the producer has none). */
#define GST_WSI_CLASSES_EVENT "wsi-classes"

/* A new GST_EVENT_CUSTOM_DOWNSTREAM_STICKY event. @colors may be NULL. */
GstEvent *gst_wsi_classes_event_new (guint n_classes,
    const gchar * const *names, const guint32 * colors);

/* Same, from per-class RGB triplets (a model file's class_colors). */
GstEvent *gst_wsi_classes_event_new_rgb (guint n_classes,
    const gchar * const *names, const guint8 (*rgb)[3]);

/* TRUE if @event is a well-formed classes event; then *@names (a GStrv,
 * n entries) and *@colors (n entries, or NULL when the event has none) are
 * new copies the caller frees. */
gboolean gst_wsi_classes_event_parse (GstEvent * event, gchar *** names,
    guint32 ** colors, guint * n_classes);

G_END_DECLS
