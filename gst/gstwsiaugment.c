/* Augmentation custom meta (gstwsiaugment.h). */
#include "gstwsiaugment.h"

const GstMetaInfo *
gst_wsi_augment_meta_get_info (void)
{
  static const GstMetaInfo *info = NULL;

  if (g_once_init_enter ((GstMetaInfo **) & info)) {
    static const gchar *tags[] = { NULL };
    const GstMetaInfo *mi = gst_meta_get_info (GST_WSI_AUGMENT_META_NAME);
    if (!mi)
      mi = gst_meta_register_custom (GST_WSI_AUGMENT_META_NAME, tags, NULL,
          NULL, NULL);
    g_once_init_leave ((GstMetaInfo **) & info, (GstMetaInfo *) mi);
  }
  return info;
}
