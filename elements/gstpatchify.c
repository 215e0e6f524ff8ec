/* PLACEHOLDER: replaced by the real element. */
#include "gstwsiseg.h"

#define GST_TYPE_PATCHIFY (gst_patchify_get_type ())
G_DECLARE_FINAL_TYPE (GstPatchify, gst_patchify, GST, PATCHIFY, GstElement)
struct _GstPatchify { GstElement parent; };
G_DEFINE_TYPE (GstPatchify, gst_patchify, GST_TYPE_ELEMENT);
GST_ELEMENT_REGISTER_DEFINE (patchify, "patchify", GST_RANK_NONE, GST_TYPE_PATCHIFY);
static void gst_patchify_class_init (GstPatchifyClass * klass) {
  gst_element_class_set_static_metadata (GST_ELEMENT_CLASS (klass), "patchify", "Filter", "placeholder", "gst-wsiseg");
}
static void gst_patchify_init (GstPatchify * self) { }
