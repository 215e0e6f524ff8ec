/* wsidetect: the Mask R-CNN building blocks oneDNN lacks (docs/detect.md).
 *
 * Anchors, box coding, NMS / top-k / IoU, matcher and sampler, RoIAlign (single and
 * multi-level, forward and backward) and the detection losses with their gradients,
 * following torchvision 0.14's maskrcnn_resnet50_fpn semantics. Plain C, float32, no
 * GStreamer, no GLib. Boxes are (x1, y1, x2, y2) float quadruples in pixels of the
 * (padded) input image; RoIs are (batch_index, x1, y1, x2, y2). Index arrays are int32.
 * Functions returning int give 0 on success and -1 on bad arguments (NULL pointers,
 * negative sizes, allocation failure); counts are returned as int.
 */
#ifndef WSIDETECT_H
#define WSIDETECT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The kernels in use: "avx512", "avx2" or "baseline" (the best the CPU runs, capped by
 * the environment variable WSIDET_MAX_ISA=avx2|baseline). Results are bit-identical on
 * every ISA. wsidet_set_isa caps it at run time (NULL: back to the environment) and
 * returns the one now in use; not to be called while another thread computes. */
const char *wsidet_isa(void);
const char *wsidet_set_isa(const char *max_isa);

/* ---- 1. Anchors (torchvision AnchorGenerator) -------------------------------------- */

/* Cell anchors of one level: for each ratio r (outer) and size s (inner), in float32 as
 * torchvision: h = sqrt(r), w = 1/h, ws = w*s, hs = h*s, box round(-ws/2, -hs/2, ws/2,
 * hs/2) with round-half-to-even. out: n_sizes * n_ratios * 4 floats. */
int wsidet_cell_anchors(const float *sizes, int n_sizes, const float *ratios, int n_ratios,
                        float *out);
/* Stride of a level: image_size / grid_size (integer division, as torchvision). */
int wsidet_anchor_stride(int image_size, int grid_size);
/* Anchors of one level: for each grid cell (y major, then x), each of the n_cell cell
 * anchors shifted by (x*stride_w, y*stride_h). out: grid_h*grid_w*n_cell*4 floats.
 * Returns the number of anchors. The anchors of an image are the levels concatenated. */
int wsidet_grid_anchors(const float *cell, int n_cell, int grid_h, int grid_w,
                        int stride_h, int stride_w, float *out);

/* ---- 2. Box coding, clipping, small boxes (torchvision BoxCoder, box_ops) --------- */

typedef struct {
  float wx, wy, ww, wh;   /* weights: (1,1,1,1) RPN, (10,10,5,5) box head */
  float clip;             /* bbox_xform_clip: max of dw, dh before exp */
} WsidetBoxCoder;

/* clip = log(1000/16). */
void wsidet_box_coder_init(WsidetBoxCoder *bc, float wx, float wy, float ww, float wh);
/* Regression targets of gt boxes relative to reference boxes (proposals / anchors):
 * n x 4 each, out n x 4 (dx, dy, dw, dh). */
void wsidet_box_encode(const WsidetBoxCoder *bc, const float *gt, const float *ref, int n,
                       float *out);
/* Decode codes [n, k*4] (k boxes per reference, e.g. one per class) against boxes
 * [n, 4] into out [n, k, 4]. */
void wsidet_box_decode(const WsidetBoxCoder *bc, const float *codes, int k, const float *boxes,
                       int n, float *out);
/* Clamp x to [0, width], y to [0, height], in place. */
void wsidet_clip_boxes(float *boxes, int n, int height, int width);
/* Indices (ascending) of the boxes with width >= min_size and height >= min_size. */
int wsidet_remove_small_boxes(const float *boxes, int n, float min_size, int32_t *keep);

/* ---- 3. IoU, NMS, top-k ------------------------------------------------------------ */

/* (x2-x1)*(y2-y1) */
void wsidet_box_area(const float *boxes, int n, float *area);
/* IoU matrix out [na, nb] (torchvision box_iou: 0/0 gives NaN as there). */
void wsidet_box_iou(const float *a, int na, const float *b, int nb, float *out);
/* torchvision.ops.nms: boxes sorted by score descending (stable: ties keep the lower
 * index first); a box is dropped when its IoU with a kept box is > iou_threshold
 * (compared in double as torchvision; a zero-area pair has IoU NaN: never suppresses). keep gets the kept indices by
 * descending score; returns their number. n <= 0 returns 0. */
int wsidet_nms(const float *boxes, const float *scores, int n, double iou_threshold,
               int32_t *keep);
/* torchvision.ops.batched_nms: NMS independently per idxs value (class / level), the
 * kept indices of all groups merged by descending score (ties: lower index first). */
int wsidet_batched_nms(const float *boxes, const float *scores, const int32_t *idxs, int n,
                       double iou_threshold, int32_t *keep);
/* Indices of the min(k, n) largest scores, descending (ties: lower index first). */
int wsidet_topk(const float *scores, int n, int k, int32_t *idx);
/* RPN _get_top_n_idx for one image: scores of all levels concatenated (level l has
 * level_sizes[l] entries); per level the top min(k, size) indices (global, descending
 * within a level, levels in order). Returns the total. */
int wsidet_topk_per_level(const float *scores, const int *level_sizes, int n_levels, int k,
                          int32_t *idx);

/* RPN proposals of one image (RegionProposalNetwork.filter_proposals after decoding):
 * objectness [n] and deltas [n, 4] of the anchors [n, 4] of all levels concatenated
 * (level l has level_sizes[l]); per level the top pre_nms_top_n logits; decoded with
 * weights (1,1,1,1); sigmoid; clipped to (image_h, image_w); boxes smaller than
 * min_size (1e-3) and scores < score_thresh (0) dropped; NMS (nms_thresh 0.7) per
 * level; the first post_nms_top_n by score. out_boxes [post_nms_top_n, 4], out_scores
 * [post_nms_top_n]; returns their number (-1 on error). torchvision's defaults:
 * pre/post 2000/2000 in training, 1000/1000 in inference. */
typedef struct {
  int pre_nms_top_n, post_nms_top_n;
  double nms_thresh;
  float score_thresh;
  float min_size;
} WsidetRpnParams;
int wsidet_rpn_proposals(const WsidetRpnParams *p, const float *objectness, const float *deltas,
                         const float *anchors, const int *level_sizes, int n_levels,
                         int image_h, int image_w, float *out_boxes, float *out_scores);

/* RoIHeads.postprocess_detections for one image: class_logits [n, n_classes],
 * box_regression [n, n_classes*4] decoded against proposals [n, 4] with bc (10,10,5,5),
 * softmax scores, clipped boxes; background (class 0) dropped; scores > score_thresh
 * (0.05) kept; boxes smaller than min_size (1e-2) dropped; NMS (nms_thresh 0.5) per
 * class; the first detections_per_img (100) by score. Outputs [detections_per_img]
 * boxes (x4), scores, labels; returns their number (-1 on error). */
typedef struct {
  float score_thresh;
  double nms_thresh;
  int detections_per_img;
  float min_size;
} WsidetDetParams;
int wsidet_postprocess_detections(const WsidetDetParams *p, const WsidetBoxCoder *bc,
                                  const float *class_logits, const float *box_regression,
                                  const float *proposals, int n, int n_classes, int image_h,
                                  int image_w, float *out_boxes, float *out_scores,
                                  int32_t *out_labels);

/* roi_heads.paste_masks_in_image: each mask [m, m] (probabilities) padded by `padding`
 * (1), its box expanded by (m + 2 padding) / m and truncated to integers, the padded
 * mask resized bilinearly (align_corners=False) to the box's (h, w) = (y2 - y1 + 1,
 * x2 - x1 + 1) and pasted into out [k, im_h, im_w] (zero elsewhere). */
int wsidet_paste_masks(const float *masks, const float *boxes, int k, int m, int padding,
                       int im_h, int im_w, float *out);

/* ---- 4. Matcher and sampler -------------------------------------------------------- */

#define WSIDET_BELOW_LOW_THRESHOLD (-1)
#define WSIDET_BETWEEN_THRESHOLDS (-2)

/* torchvision Matcher: quality [n_gt, n_pred] (box_iou(gt, pred)); matches[j] = the
 * gt with the highest quality for pred j (first on ties), or BELOW_LOW_THRESHOLD when
 * < low, BETWEEN_THRESHOLDS when in [low, high); allow_low_quality restores the match
 * of every pred that is a best pred of some gt. n_gt == 0 gives all BELOW_LOW_THRESHOLD
 * (torchvision raises; its callers then mark everything background). */
int wsidet_match(const float *quality, int n_gt, int n_pred, float high, float low,
                 int allow_low_quality, int32_t *matches);
/* Labels of matched preds as torchvision assigns them: match >= 0 -> gt_labels[match]
 * (1 when gt_labels is NULL: RPN), BELOW_LOW -> 0, BETWEEN -> -1 (ignored). */
void wsidet_match_labels(const int32_t *matches, int n, const int32_t *gt_labels,
                         int32_t *labels);

/* Deterministic RNG (splitmix64) for the sampler. */
typedef struct { uint64_t s; } WsidetRng;
void wsidet_rng_seed(WsidetRng *rng, uint64_t seed);
uint64_t wsidet_rng_next(WsidetRng *rng);
/* Uniform in [0, n), n > 0. */
uint32_t wsidet_rng_below(WsidetRng *rng, uint32_t n);
/* A random permutation of 0..n-1 (Fisher-Yates from the front: its first k entries
 * use only the first k draws). */
void wsidet_randperm(WsidetRng *rng, int n, int32_t *perm);
/* BalancedPositiveNegativeSampler for one image: positives = labels >= 1, negatives =
 * labels == 0; num_pos = min(#pos, (int)(batch * pos_fraction)), num_neg = min(#neg,
 * batch - num_pos); the chosen ones are the first num_pos / num_neg of a random
 * permutation (as positive[randperm(#pos)[:num_pos]]). Two 64-bit seeds are drawn from
 * rng: the first seeds the positives' permutation, the second the negatives'. Outputs
 * (each may be NULL): pos_mask / neg_mask [n] (0/1), pos_idx / neg_idx ascending (the
 * order torch.where(mask) gives). Returns 0, counts in *n_pos / *n_neg. */
int wsidet_sample_pos_neg(const int32_t *labels, int n, int batch_size, double pos_fraction,
                          WsidetRng *rng, uint8_t *pos_mask, uint8_t *neg_mask,
                          int32_t *pos_idx, int *n_pos, int32_t *neg_idx, int *n_neg);

/* RPN targets of one image (RegionProposalNetwork.assign_targets_to_anchors + encode):
 * IoU(gt, anchors), Matcher(high 0.7, low 0.3, low-quality matches allowed), labels [n]
 * 1 / 0 / -1 (float), targets [n, 4] = encode(matched gt, anchor) with weights (1,1,1,1)
 * (the first gt for unmatched anchors, a zero box without gt, as torchvision: only the
 * positives' targets are used). Needs n_gt * n floats of scratch. */
int wsidet_rpn_targets(const float *anchors, int n, const float *gt, int n_gt, float high,
                       float low, float *labels, float *targets);
/* Box-head training samples of one image (RoIHeads.select_training_samples): the gt
 * boxes appended to the proposals, Matcher(fg_iou 0.5, bg_iou 0.5), labels gt_labels /
 * 0 / -1, wsidet_sample_pos_neg(batch_size 512, pos_fraction 0.25, rng), and for the
 * sampled ones in ascending index order: out_rois [.., 4], out_labels, out_matched
 * (matched gt, 0 for background: for the mask targets) and out_targets [.., 4] =
 * encode(matched gt, roi) with bc (10,10,5,5); a zero box without gt, as torchvision.
 * At most min(batch_size, n_prop + n_gt) samples: size the outputs for that. Returns the
 * number of samples, -1 on error. */
int wsidet_roi_targets(const float *proposals, int n_prop, const float *gt,
                       const int32_t *gt_labels, int n_gt, float fg_iou, float bg_iou,
                       int batch_size, double pos_fraction, const WsidetBoxCoder *bc,
                       WsidetRng *rng, float *out_rois, int32_t *out_labels,
                       int32_t *out_matched, float *out_targets);

/* ---- 5. RoIAlign ------------------------------------------------------------------- */

typedef struct {
  int pooled_h, pooled_w;   /* output_size */
  float spatial_scale;      /* feature pixels per image pixel, e.g. 0.25 */
  int sampling_ratio;       /* samples per bin side; <= 0: ceil(roi size / pooled size) */
  int aligned;              /* 1: shift by -0.5 px (aligned=True) */
} WsidetRoiAlign;

/* torchvision.ops.roi_align forward: input NCHW [n, c, h, w], rois [k, 5], output
 * [k, c, pooled_h, pooled_w]. OpenMP over RoIs, channel-inner (the map is made NHWC
 * once per call). */
int wsidet_roi_align_forward(const WsidetRoiAlign *p, const float *input, int n, int c, int h,
                             int w, const float *rois, int k, float *output);
/* Backward: ACCUMULATES (+=) the gradient of the input into grad_input [n, c, h, w] from
 * grad_output [k, c, pooled_h, pooled_w]. Deterministic and independent of the thread
 * count: threads split the channels, each scatters its channels over the RoIs in order. */
int wsidet_roi_align_backward(const WsidetRoiAlign *p, const float *grad_output, int n, int c,
                              int h, int w, const float *rois, int k, float *grad_input);
/* The same on channel-last maps [n, h, w, c] (no transposition); output / grad_output
 * stay [k, c, pooled_h, pooled_w]. */
int wsidet_roi_align_forward_nhwc(const WsidetRoiAlign *p, const float *input, int n, int c,
                                  int h, int w, const float *rois, int k, float *output);
int wsidet_roi_align_backward_nhwc(const WsidetRoiAlign *p, const float *grad_output, int n,
                                   int c, int h, int w, const float *rois, int k,
                                   float *grad_input);

/* MultiScaleRoIAlign level assignment (torchvision LevelMapper). */
typedef struct {
  int k_min, k_max;          /* -log2(scale) of the first and last level */
  float canonical_scale;     /* 224 */
  float canonical_level;     /* 4 */
  float eps;                 /* 1e-6 */
} WsidetLevelMapper;

/* _infer_scale: 2^round(log2(feat_h / image_h)) (float32 log2, half-to-even round);
 * image_h is the max unpadded image height of the batch. */
double wsidet_infer_scale(int feat_h, int image_h);
/* k_min / k_max from the first and last scale, canonical 224 / 4 / 1e-6. */
void wsidet_level_mapper_init(WsidetLevelMapper *m, double scale_first, double scale_last);
/* Level index (0-based from k_min) of each box: clamp(floor(4 + log2(sqrt(area)/224)
 * + 1e-6), k_min, k_max) - k_min, in float32; boxes with a NaN size (negative area) get
 * -1 (torchvision pools them nowhere: zero output, no gradient). boxes has `stride`
 * floats per box with x1 at offset `off` (4/0 for boxes, 5/1 for RoIs). */
void wsidet_map_levels(const WsidetLevelMapper *m, const float *boxes, int stride, int off,
                       int n, int32_t *levels);

typedef struct {
  const float *data;   /* NCHW [n, c, h, w] (forward); NHWC [n, h, w, c] when nhwc */
  float *grad;         /* gradient in the same layout, accumulated (backward) */
  int h, w;
  double scale;        /* spatial scale of the level */
  int nhwc;            /* 0: NCHW, 1: channel-last (the engine's NHWC outputs) */
} WsidetFeatureLevel;

/* MultiScaleRoIAlign forward over n_levels maps with the same n, c: each RoI pooled on
 * its mapped level (aligned=False as torchvision). levels_out [k] (may be NULL) gets the
 * level of each RoI. One level: all RoIs on it (as torchvision). */
int wsidet_multiscale_roi_align_forward(const WsidetFeatureLevel *lv, int n_levels, int n,
                                        int c, const WsidetLevelMapper *m, int pooled_h,
                                        int pooled_w, int sampling_ratio, const float *rois,
                                        int k, float *output, int32_t *levels_out);
/* Backward: accumulates into lv[l].grad. */
int wsidet_multiscale_roi_align_backward(const WsidetFeatureLevel *lv, int n_levels, int n,
                                         int c, const WsidetLevelMapper *m, int pooled_h,
                                         int pooled_w, int sampling_ratio, const float *rois,
                                         int k, const float *grad_output);

/* ---- 6. Losses (values in double; gradients of the returned loss, may be NULL) ---- */

/* mean over n of BCE with logits: max(x,0) - x*y + log(1 + exp(-|x|)). n == 0: 0. */
double wsidet_bce_with_logits(const float *x, const float *y, int n, float *grad);
/* sum over n of smooth L1 (|d| < beta: 0.5 d^2 / beta, else |d| - 0.5 beta; beta <= 0
 * is L1), divided by norm (norm <= 0: returns the sum). */
double wsidet_smooth_l1(const float *pred, const float *target, int n, float beta,
                        double norm, float *grad);
/* mean over n of -log softmax(logits[i])[labels[i]], logits [n, n_classes]. n == 0: 0. */
double wsidet_cross_entropy(const float *logits, const int32_t *labels, int n, int n_classes,
                            float *grad);

#define WSIDET_BOX_LOSS_SMOOTH_L1 0   /* torchvision 0.14 (default), beta 1/9 */
#define WSIDET_BOX_LOSS_L1 1          /* plain L1 (the seed) */

/* RegionProposalNetwork.compute_loss for one batch: objectness [n], deltas [n, 4],
 * labels [n] (1 / 0 / -1), targets [n, 4], the sampled indices (ascending). objectness
 * = BCE mean over the sampled; box = smooth L1 (beta) of the positives / #sampled. */
int wsidet_rpn_loss(const float *objectness, const float *deltas, const float *labels,
                    const float *targets, const int32_t *pos_idx, int n_pos,
                    const int32_t *neg_idx, int n_neg, int box_loss, float beta,
                    double *loss_objectness, double *loss_box, float *grad_objectness,
                    float *grad_deltas);
/* roi_heads.fastrcnn_loss: class_logits [n, n_classes], box_regression
 * [n, n_classes*4], labels [n] (0 = background), targets [n, 4]: cross-entropy mean, and
 * smooth L1 of the positives' regression at their label / n. */
int wsidet_fastrcnn_loss(const float *class_logits, const float *box_regression,
                         const int32_t *labels, const float *targets, int n, int n_classes,
                         int box_loss, float beta, double *loss_classifier,
                         double *loss_box_reg, float *grad_logits, float *grad_box);
/* roi_heads.project_masks_on_boxes: RoIAlign (aligned=False, scale 1, sampling -1) of
 * gt_masks [n_gt, h, w] (float 0/1) on boxes [k, 4] of gt matched[k] -> targets
 * [k, m, m] (soft values: torchvision does not threshold). */
int wsidet_project_masks(const float *gt_masks, int n_gt, int h, int w, const float *boxes,
                         const int32_t *matched, int k, int m, float *targets);
/* roi_heads.maskrcnn_loss: mask_logits [k, n_classes, m, m], labels [k], targets
 * [k, m, m]: mean BCE over k*m*m of the logits at each RoI's label. k == 0: 0. grad is
 * [k, n_classes, m, m] (zero off the label). */
double wsidet_maskrcnn_loss(const float *mask_logits, const int32_t *labels,
                            const float *targets, int k, int n_classes, int m, float *grad);

#ifdef __cplusplus
}
#endif
#endif
