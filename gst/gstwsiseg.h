/* Element registration shared by the plugin and the tests. */
#pragma once

#include <gst/gst.h>

G_BEGIN_DECLS

GST_ELEMENT_REGISTER_DECLARE (slidesrc);
GST_ELEMENT_REGISTER_DECLARE (patchify);
GST_ELEMENT_REGISTER_DECLARE (tissuemask);
GST_ELEMENT_REGISTER_DECLARE (stitchsink);
GST_ELEMENT_REGISTER_DECLARE (colornorm);
GST_ELEMENT_REGISTER_DECLARE (labelpatch);
GST_ELEMENT_REGISTER_DECLARE (segment_fcn);
GST_ELEMENT_REGISTER_DECLARE (segeval);
GST_ELEMENT_REGISTER_DECLARE (segment_maskrcnn);

G_END_DECLS
