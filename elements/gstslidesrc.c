/* PLACEHOLDER: replaced by the real element. */
#include "gstwsiseg.h"

#define GST_TYPE_SLIDESRC (gst_slidesrc_get_type ())
G_DECLARE_FINAL_TYPE (GstSlideSrc, gst_slidesrc, GST, SLIDESRC, GstElement)
struct _GstSlideSrc { GstElement parent; };
G_DEFINE_TYPE (GstSlideSrc, gst_slidesrc, GST_TYPE_ELEMENT);
GST_ELEMENT_REGISTER_DEFINE (slidesrc, "slidesrc", GST_RANK_NONE, GST_TYPE_SLIDESRC);
static void gst_slidesrc_class_init (GstSlideSrcClass * klass) {
  gst_element_class_set_static_metadata (GST_ELEMENT_CLASS (klass), "slidesrc", "Filter", "placeholder", "gst-wsiseg");
}
static void gst_slidesrc_init (GstSlideSrc * self) { }
