#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gstwsiseg.h"
#include "gstwsitilemeta.h"

static gboolean
plugin_init (GstPlugin * plugin)
{
  gboolean ok = FALSE;

  gst_wsi_tile_meta_get_info ();
  ok |= GST_ELEMENT_REGISTER (slidesrc, plugin);
  ok |= GST_ELEMENT_REGISTER (patchify, plugin);
  ok |= GST_ELEMENT_REGISTER (tissuemask, plugin);
  ok |= GST_ELEMENT_REGISTER (stitchsink, plugin);
  ok |= GST_ELEMENT_REGISTER (colornorm, plugin);
  ok |= GST_ELEMENT_REGISTER (labelpatch, plugin);
  ok |= GST_ELEMENT_REGISTER (segment_fcn, plugin);
  ok |= GST_ELEMENT_REGISTER (segeval, plugin);
  ok |= GST_ELEMENT_REGISTER (segment_maskrcnn, plugin);
  return ok;
}

GST_PLUGIN_DEFINE (GST_VERSION_MAJOR, GST_VERSION_MINOR, wsiseg,
    "Whole-slide image segmentation as a streaming dataflow",
    plugin_init, VERSION, GST_LICENSE, PACKAGE_NAME, GST_PACKAGE_ORIGIN)
