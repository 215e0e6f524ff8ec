/* PLACEHOLDER: replaced by the real element. */
#include "gstwsiseg.h"

#define GST_TYPE_STITCHSINK (gst_stitchsink_get_type ())
G_DECLARE_FINAL_TYPE (GstStitchSink, gst_stitchsink, GST, STITCHSINK, GstElement)
struct _GstStitchSink { GstElement parent; };
G_DEFINE_TYPE (GstStitchSink, gst_stitchsink, GST_TYPE_ELEMENT);
GST_ELEMENT_REGISTER_DEFINE (stitchsink, "stitchsink", GST_RANK_NONE, GST_TYPE_STITCHSINK);
static void gst_stitchsink_class_init (GstStitchSinkClass * klass) {
  gst_element_class_set_static_metadata (GST_ELEMENT_CLASS (klass), "stitchsink", "Filter", "placeholder", "gst-wsiseg");
}
static void gst_stitchsink_init (GstStitchSink * self) { }
