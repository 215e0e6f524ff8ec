/* Limits shared by several elements: one home each (docs/conventions.md). */
#ifndef WSI_LIMITS_H
#define WSI_LIMITS_H

#include <glib.h>

/* Widest region (level pixels) patchify cuts and stitchsink stitches: bounds
 * the band of rows each keeps. 2^22 is over ten times the widest scanner slide. */
#define WSI_MAX_REGION_WIDTH (G_GINT64_CONSTANT (1) << 22)

#endif
