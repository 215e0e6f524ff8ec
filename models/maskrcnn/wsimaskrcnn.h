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
  /* training (torchvision's defaults) */
  WsidetRpnParams rpn_train;    /* 2000 / 2000, NMS 0.7 */
  float rpn_fg_iou, rpn_bg_iou; /* 0.7, 0.3 */
  int rpn_batch;                /* sampled anchors per image: 256 */
  double rpn_pos_fraction;      /* 0.5 */
  float box_fg_iou, box_bg_iou; /* 0.5, 0.5 */
  int box_batch;                /* sampled RoIs per image: 512 */
  double box_pos_fraction;      /* 0.25 */
  int box_loss;                 /* WSIDET_BOX_LOSS_SMOOTH_L1 (beta 1/9) */
  float beta;
  uint64_t seed;                /* sampler */
} wsimrcnn_config;

typedef struct
{
  double rpn_objectness, rpn_box, classifier, box_reg, mask;
} wsimrcnn_losses;

typedef struct _wsimrcnn wsimrcnn;

void wsimrcnn_config_init (wsimrcnn_config * cfg);     /* torchvision's */
wsimrcnn *wsimrcnn_new (const wsimrcnn_config * cfg, char *err,
    size_t errlen);
void wsimrcnn_free (wsimrcnn * m);
/* The configuration it was made with (det.* as last set). */
const wsimrcnn_config *wsimrcnn_get_config (const wsimrcnn * m);
/* Detection settings for the next calls (segment-maskrcnn's properties):
 * score threshold in [0, 1], NMS IoU in (0, 1], 1..100000 detections per
 * image (the size of the output arrays). 0 / -1 + @err. */
int wsimrcnn_set_detection (wsimrcnn * m, float score_thresh,
    double nms_iou, int max_detections, char *err, size_t errlen);
/* Reseeds the training samplers (anchors, RoIs): a trainer seeds each
 * image's step from its own seed and the step number, so that a resumed
 * run samples as the uninterrupted one. */
void wsimrcnn_set_seed (wsimrcnn * m, uint64_t seed);
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

/* The same for n images (NHWC, n x h x w x 3) in one batch (features net
 * once, RoI heads once over the RoIs of all images): image b's results at
 * boxes + b * D * 4, scores / labels + b * D, masks + b * D * (2 mask_pool)^2,
 * image_masks + b * D * h * w (D = det.detections_per_img); counts[b] its
 * number of detections. 0 / -1 + @err. */
int wsimrcnn_detect_batch (wsimrcnn * m, const float *images, int n, int h,
    int w, float *boxes, float *scores, int32_t * labels, float *masks,
    float *image_masks, int *counts, char *err, size_t errlen);

/* One training forward + backward on one image (torchvision's
 * MaskRCNN.train() losses): gt_boxes [n_gt, 4], gt_labels [n_gt] (1 ..
 * n_classes - 1), gt_masks [n_gt, h, w] (0 / 1). Writes the five losses and
 * every param->grad of the three nets: the gradient of their sum, through
 * RoIAlign backward into the FPN (proposals are constants, as torchvision
 * detaches them). The caller updates the parameters (then
 * wsinn_net_params_changed). n_gt may be 0 (background only). 0 / -1. */
int wsimrcnn_train_step (wsimrcnn * m, const float *image, int h, int w,
    const float *gt_boxes, const int32_t * gt_labels, const float *gt_masks,
    int n_gt, wsimrcnn_losses * losses, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
