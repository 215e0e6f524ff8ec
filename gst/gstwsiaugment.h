/* The augmentation patchify applies to a patch (flips, quarter turns),
 * recorded in a custom meta so that labelpatch can replay it on the
 * annotation. One home for its name and fields. */
#pragma once

#include <gst/gst.h>

G_BEGIN_DECLS

/* GstCustomMeta name; structure fields "flip-h", "flip-v" (boolean, applied
 * first) and "rotate90" (int 0..3, counter-clockwise quarter turns). */
#define GST_WSI_AUGMENT_META_NAME "WsiAugmentMeta"

/* Registers the custom meta (no tags: transforms keep it) once. */
const GstMetaInfo *gst_wsi_augment_meta_get_info (void);

G_END_DECLS
