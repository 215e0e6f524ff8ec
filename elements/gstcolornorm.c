/* PLACEHOLDER: replaced by the real element. */
#include "gstwsiseg.h"

#define GST_TYPE_COLORNORM (gst_colornorm_get_type ())
G_DECLARE_FINAL_TYPE (GstColorNorm, gst_colornorm, GST, COLORNORM, GstElement)
struct _GstColorNorm { GstElement parent; };
G_DEFINE_TYPE (GstColorNorm, gst_colornorm, GST_TYPE_ELEMENT);
GST_ELEMENT_REGISTER_DEFINE (colornorm, "colornorm", GST_RANK_NONE, GST_TYPE_COLORNORM);
static void gst_colornorm_class_init (GstColorNormClass * klass) {
  gst_element_class_set_static_metadata (GST_ELEMENT_CLASS (klass), "colornorm", "Filter", "placeholder", "gst-wsiseg");
}
static void gst_colornorm_init (GstColorNorm * self) { }
