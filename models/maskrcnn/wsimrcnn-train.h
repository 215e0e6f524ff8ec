/* Mask R-CNN as a model of the generic trainer (models/train/wsitrain.h,
 * wsi_trainer_new_for_model): nets = the three wsimrcnn nets, step =
 * wsimrcnn_train_step per image of the batch (losses and gradients averaged
 * over the images), evaluate = detections for validation. Optimisers,
 * schedules, freeze, clipping, non-finite refusal, checkpoints and resume
 * are the trainer's. No GStreamer. */
#pragma once

#include "wsimrcnn-file.h"
#include "wsimrcnn-instances.h"
#include "wsitrain.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The batch type of wsi_trainer_step_model / wsi_trainer_evaluate_model. */
typedef struct
{
  const float *images;          /* n x h x w x 3, NHWC, preprocessed */
  int n, h, w;                  /* sides multiples of 32 */
  const WsiMrcnnTargets *targets;       /* n (step; may be NULL to evaluate) */
} WsiMrcnnBatch;

/* Loss part names (WsiLossValues.names), torchvision's loss dict keys. */
#define WSIMRCNN_N_LOSSES 5
extern const char *const wsimrcnn_loss_names[WSIMRCNN_N_LOSSES];

/* Detections of the last evaluate call, per image b: counts[b] entries at
 * boxes + b * D * 4, scores / labels + b * D, masks + b * D * ms * ms (D =
 * max_detections, ms = mask size; wsimrcnn_paint() makes label patches). */
typedef struct
{
  int n, max_detections, mask_size;
  const int *counts;
  const float *boxes, *scores, *masks;
  const int32_t *labels;
} WsiMrcnnDetections;

/* A trainer of @m (taken, freed with the trainer) whose checkpoints carry
 * @mi's metadata (+ train_* keys). @sampler_seed: the RPN / RoI samplers of
 * step s, image b are seeded from (sampler_seed, s, b). NULL + @err. */
WsiTrainer *wsimrcnn_trainer_new (wsimrcnn * m, const WsiMrcnnModelInfo * mi,
    const WsiTrainConfig * cfg, uint64_t sampler_seed, char *err,
    size_t errlen);
/* The same from a model file or checkpoint (wsimrcnn_model_info_load +
 * wsi_trainer_load; @resume restores step, epoch, loss history and
 * optimiser state). */
WsiTrainer *wsimrcnn_trainer_new_from_file (const char *path,
    const WsiTrainConfig * cfg, int resume, uint64_t sampler_seed, char *err,
    size_t errlen);
/* The model of a trainer made by the calls above (NULL for others). */
wsimrcnn *wsimrcnn_trainer_model (WsiTrainer * t);
/* Valid until the next evaluate call. */
const WsiMrcnnDetections *wsimrcnn_trainer_detections (WsiTrainer * t);

#ifdef __cplusplus
}
#endif
