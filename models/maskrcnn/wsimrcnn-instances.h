/* Instance label patches <-> Mask R-CNN: training targets from a GRAY16
 * instance label patch (+ optional GRAY8 class map), and the GRAY16
 * instance label patch painted from detections (docs/maskrcnn-model.md).
 * Plain C, no GStreamer, no GLib. Label patches are little-endian 16-bit
 * (the host's order on x86); strides are in bytes. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WSIMRCNN_INSTANCE_IGNORE 65535  /* labelpatch's GRAY16 ignore value */
#define WSIMRCNN_CLASS_IGNORE 255       /* labelpatch's GRAY8 ignore value */

typedef struct
{
  int n;                        /* instances (ascending id) */
  int h, w;
  uint16_t *ids;                /* [n] their ids in the label patch */
  float *boxes;                 /* [n, 4] x0, y0, x1 + 1, y1 + 1 */
  int32_t *labels;              /* [n] classes 1 .. n_classes - 1 */
  float *masks;                 /* [n, h, w] 0 / 1 */
  uint32_t *areas;              /* [n] pixels */
  int n_unclassed;              /* instances without a class in the map: 1 */
  int n_small;                  /* instances dropped by min_area */
  size_t n_ignored;             /* pixels with the ignore value */
} WsiMrcnnTargets;

/* Targets of one patch (w x h): @inst ids (0 background, @ignore = no
 * annotation: neither background nor object, left out of every mask; -1 =
 * no ignore value), @classes NULL (every object class 1) or a per-pixel
 * class map whose majority class over an object's pixels (0 and 255 not
 * counted; ties: the lower class) is its class, 1 when it has none. Objects
 * smaller than @min_area pixels are dropped. More than @max_instances
 * objects, or a class >= @n_classes under an object, is an error naming
 * it. Returns 0 (t->n may be 0) or -1 + @err; free with
 * wsimrcnn_targets_clear(). */
int wsimrcnn_targets_from_labels (const uint16_t * inst, size_t inst_stride,
    int w, int h, const uint8_t * classes, size_t class_stride,
    int n_classes, int ignore, int max_instances, int min_area,
    WsiMrcnnTargets * t, char *err, size_t errlen);
void wsimrcnn_targets_clear (WsiMrcnnTargets * t);

typedef struct
{
  uint16_t id;                  /* in the label patch: 1 = highest score */
  int32_t class_id;
  float score;
  float box[4];                 /* the detector's box x1, y1, x2, y2 */
  int x0, y0, x1, y1;           /* bounding box of its pixels, x1/y1 exclusive */
  uint32_t area;                /* pixels painted */
  int detection;                /* index in the detection arrays */
} WsiMrcnnObject;

/* Paints @n detections (boxes [n, 4], scores, labels, masks [n, m, m]
 * probabilities as wsimrcnn_detect gives them) into @out (w x h GRAY16,
 * @out_stride bytes): a pixel belongs to the highest-scoring detection whose
 * pasted mask (wsidet_paste_masks; @image_masks [n, h, w] when already
 * pasted, else NULL) is >= @threshold, 0 when none. Detections that win no
 * pixel are left out; the others get ids 1, 2, ... by descending score
 * (ties: lower index first) and are listed in @objects (room for n).
 * Returns the number of objects, or -1 + @err (n > 65534, bad arguments,
 * out of memory). */
int wsimrcnn_paint (const float *boxes, const float *scores,
    const int32_t * labels, const float *masks, int m,
    const float *image_masks, int n, int w, int h, float threshold,
    uint16_t * out, size_t out_stride, WsiMrcnnObject * objects, char *err,
    size_t errlen);

#ifdef __cplusplus
}
#endif
