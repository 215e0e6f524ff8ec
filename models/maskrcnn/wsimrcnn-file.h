/* Mask R-CNN model files (docs/model-format.md, arch maskrcnn): metadata
 * <-> wsimrcnn_config, a loader that checks every tensor of the three nets
 * by name, shape and dtype (torchvision maskrcnn_*_fpn state_dict names),
 * and an atomic saver. GLib + json-glib, no GStreamer. */
#pragma once

#include "safetensors.h"
#include "wsimaskrcnn.h"
#include "wsimodel.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct
{
  /* arch "maskrcnn", encoder = the backbone, classes (background first),
   * colours, preprocess, mpp, patch size, size_multiple 32 */
  WsiModelInfo info;
  /* nets, anchors, RPN / detector thresholds from the file (training
   * settings: torchvision's, wsimrcnn_config_init) */
  wsimrcnn_config cfg;
  float mask_threshold;         /* pasted mask probability painted: 0.5 */
} WsiMrcnnModelInfo;

/* The project's defaults of the keys a file may omit (nuclei at 0.25-0.5
 * um/px: anchors 8..128 px, score 0.5, 300 detections): @mi->cfg and
 * mask_threshold; the rest of @mi is zeroed. */
void wsimrcnn_model_info_defaults (WsiMrcnnModelInfo * mi);

/* Reads and checks the metadata of an open file (arch must be maskrcnn).
 * 0 or -1 + @err naming the key; free with wsimrcnn_model_info_clear(). */
int wsimrcnn_model_info_read (const WsiSafetensors * st,
    WsiMrcnnModelInfo * mi, char *err, size_t errlen);
/* The same from a path (metadata only: e.g. a checkpoint's facts). */
int wsimrcnn_model_info_load (const char *path, WsiMrcnnModelInfo * mi,
    char *err, size_t errlen);
void wsimrcnn_model_info_clear (WsiMrcnnModelInfo * mi);

/* Copies the tensors of @st into the three nets: every parameter present
 * with its shape and a float dtype (F32, F16, BF16, F64), and no tensor the
 * nets do not have ("__optim__." optimiser state of a checkpoint
 * excepted). 0 or -1 + @err naming the tensor, e.g. "tensor
 * roi_heads.box_predictor.cls_score.weight has shape [3,1024], model
 * expects [2,1024]". */
int wsimrcnn_load_params (wsimrcnn * m, WsiSafetensors * st, char *err,
    size_t errlen);

/* path -> a Mask R-CNN ready for wsimrcnn_detect (eval mode), its facts
 * in @mi when not NULL (free with wsimrcnn_model_info_clear()). NULL + @err
 * ("PATH: not a model file (...)", "PATH: metadata ...", "PATH: tensor
 * ..."). */
wsimrcnn *wsimrcnn_load (const char *path, WsiMrcnnModelInfo * mi,
    char *err, size_t errlen);

/* The metadata of a model as key, value, ..., NULL (g_strfreev): the
 * common keys, every Mask R-CNN key of @mi, then @extra (key, value, ...,
 * NULL; may be NULL; a key given twice keeps the extra value). */
char **wsimrcnn_metadata_new (const WsiMrcnnModelInfo * mi,
    const char *const *extra);

/* Writes the three nets' tensors (torchvision names), @extra tensors
 * (e.g. optimiser state; may be NULL) and @metadata (key, value, ...,
 * NULL) atomically (wsi_safetensors_save). 0 / -1 + @err. */
int wsimrcnn_save (wsimrcnn * m, const char *path,
    const char *const *metadata, const WsiTensorSpec * extra,
    size_t n_extra, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
