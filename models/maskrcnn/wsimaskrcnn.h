/* wsimaskrcnn: Mask R-CNN inference on the wsinn engine (models/arch nets)
 * and the wsidetect blocks, as torchvision 0.14's MaskRCNN eval() forward
 * on one preprocessed image (no resize: the caller normalises; sides must
 * be multiples of 32). No GStreamer, no GLib. */
#pragma once

#include "wsinn.h"
#include "wsidetect.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct
{
  wsinn_maskrcnn_spec spec;
  float anchor_sizes[WSINN_FPN_LEVELS]; /* one size per level: 32..512 */
  float ratios[3];              /* 0.5, 1, 2 (spec.n_anchors of them) */
  WsidetRpnParams rpn;          /* eval: 1000 / 1000, NMS 0.7, score 0 */
  WsidetDetParams det;          /* score 0.05, NMS 0.5, 100 detections */
  int box_sampling, mask_sampling;      /* RoIAlign sampling ratio: 2 */
  int mask_pool;                /* 14 (mask logits 2x that) */
} wsimrcnn_config;

typedef struct _wsimrcnn wsimrcnn;

void wsimrcnn_config_init (wsimrcnn_config * cfg);     /* torchvision's */
wsimrcnn *wsimrcnn_new (const wsimrcnn_config * cfg, char *err,
    size_t errlen);
void wsimrcnn_free (wsimrcnn * m);
/* The three nets (to load parameters by name): 0 features, 1 box head,
 * 2 mask head. */
wsinn_net *wsimrcnn_net (wsimrcnn * m, int which);
/* Detections of one image (NHWC float, h x w x 3, preprocessed): boxes
 * [det.detections_per_img, 4], scores, labels, masks [.., 2 mask_pool]^2
 * (probability of the detected class), and when image_masks is not NULL
 * the masks pasted into the image [.., h, w] (paste_masks_in_image).
 * Returns the number of detections, -1 + @err. */
int wsimrcnn_detect (wsimrcnn * m, const float *image, int h, int w,
    float *boxes, float *scores, int32_t * labels, float *masks,
    float *image_masks, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
