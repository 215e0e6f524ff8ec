/* A segmentation model ready to run: a model file (safetensors) loaded into
 * the oneDNN engine, with the facts its metadata declares. No GStreamer. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum
{
  WSI_PREPROC_RESCALE01 = 0,    /* x / 255 */
  WSI_PREPROC_RESCALE11 = 1,    /* x / 127.5 - 1 */
  WSI_PREPROC_STANDARDIZE = 2,  /* (x / 255 - mean) / std */
} WsiPreprocMode;

typedef struct
{
  char arch[64];
  char encoder[64];
  int n_classes;
  char **class_names;           /* n_classes entries */
  uint8_t (*class_colors)[3];   /* n_classes entries */
  WsiPreprocMode preproc;
  float mean[3], std[3];        /* standardize only, on the [0,1] scale */
  double mpp;                   /* microns per pixel trained at, 0 unknown */
  int patch_size;               /* trained patch size, 0 unknown */
  int size_multiple;            /* input sides must be multiples of this */
} WsiModelInfo;

typedef struct _WsiModel WsiModel;

/* Returns NULL and fills @err (a message naming the problem) on failure. */
WsiModel *wsi_model_load (const char *path, int threads, char *err,
    size_t errlen);
const WsiModelInfo *wsi_model_info (const WsiModel * model);

/* @input: n x h x w x 3 float32 (NHWC), already preprocessed.
 * @probs: n x h x w x n_classes float32 (NHWC), softmax probabilities
 * (sigmoid for a one-class model). Returns 0 on success. */
int wsi_model_forward (WsiModel * model, const float *input, int n, int h,
    int w, float *probs, char *err, size_t errlen);

/* Converts 8-bit RGB pixels to the model's input with its preprocessing. */
void wsi_model_preprocess (const WsiModelInfo * info, const uint8_t * rgb,
    int stride, int w, int h, float *out);

void wsi_model_free (WsiModel * model);

/* The one check of a model file for inference, shared by segment-fcn
 * (wsi_model_load) and wsimodel-info: metadata, the architecture the engine
 * builds from it, and every parameter tensor present with its shape and no
 * stray tensor. Fills @info (free with wsi_model_info_clear()) and returns
 * 0 when wsi_model_load would accept the file; else -1 with the same
 * message in @err. */
int wsi_model_check (const char *path, WsiModelInfo * info, char *err,
    size_t errlen);

/* Reads only the facts (metadata) of a model file or checkpoint, e.g. for
 * training (tensors are not checked: a checkpoint also holds optimiser
 * state); free with wsi_model_info_clear(). Returns 0 on success. */
int wsi_model_info_load (const char *path, WsiModelInfo * info, char *err,
    size_t errlen);
void wsi_model_info_clear (WsiModelInfo * info);

/* The facts every model file declares whatever its arch (class names and
 * colours, preprocessing, mpp, patch size) read from an open file into
 * @info, whose arch, encoder, n_classes and size_multiple the caller has
 * set (also used by the Mask R-CNN loader, models/maskrcnn). 0 or -1 +
 * @err; on failure @info may hold partial lists: wsi_model_info_clear(). */
struct _WsiSafetensors;
int wsi_model_info_read (const struct _WsiSafetensors * st,
    WsiModelInfo * info, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
