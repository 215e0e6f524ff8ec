/* safetensors model files: a parser for untrusted input and an atomic
 * writer. No GStreamer. Format and checks: docs/model-format.md. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WSI_ST_MAX_HEADER (100u * 1024u * 1024u)        /* bytes */
#define WSI_ST_MAX_DIMS 8
#define WSI_ST_MAX_DEPTH 64     /* JSON nesting */

typedef enum
{
  WSI_DTYPE_BOOL,
  WSI_DTYPE_U8,
  WSI_DTYPE_I8,
  WSI_DTYPE_U16,
  WSI_DTYPE_I16,
  WSI_DTYPE_F16,
  WSI_DTYPE_BF16,
  WSI_DTYPE_U32,
  WSI_DTYPE_I32,
  WSI_DTYPE_F32,
  WSI_DTYPE_U64,
  WSI_DTYPE_I64,
  WSI_DTYPE_F64,
  WSI_DTYPE_COUNT
} WsiDtype;

typedef struct
{
  const char *name;
  WsiDtype dtype;
  int n_dims;
  int64_t shape[WSI_ST_MAX_DIMS];
  uint64_t n_elements;          /* product of shape (1 for a scalar) */
  uint64_t offset;              /* begin, relative to the data section */
  uint64_t n_bytes;
  const uint8_t *raw;           /* little-endian bytes inside the file */
} WsiTensor;

typedef struct _WsiSafetensors WsiSafetensors;

/* Opens and fully validates a file (mmap). Returns NULL and writes a
 * message naming the problem (and the tensor) into @err on failure. */
WsiSafetensors *wsi_safetensors_open (const char *path, char *err,
    size_t errlen);
/* Same on bytes in memory (copied). */
WsiSafetensors *wsi_safetensors_parse (const uint8_t * data, size_t len,
    char *err, size_t errlen);
void wsi_safetensors_free (WsiSafetensors * st);

/* Tensors in file order (by data offset). */
size_t wsi_safetensors_n_tensors (const WsiSafetensors * st);
const WsiTensor *wsi_safetensors_tensor (const WsiSafetensors * st,
    size_t index);
const WsiTensor *wsi_safetensors_find (const WsiSafetensors * st,
    const char *name);

/* The tensor's values as float32 (F32, F16, BF16, F64); the pointer stays
 * valid until wsi_safetensors_free(). NULL + @err for integer dtypes.
 * Not thread-safe (converted copies are cached). */
const float *wsi_safetensors_f32 (WsiSafetensors * st, const WsiTensor * t,
    char *err, size_t errlen);

/* __metadata__ (string values); NULL when absent. Keys sorted. */
const char *wsi_safetensors_metadata (const WsiSafetensors * st,
    const char *key);
size_t wsi_safetensors_n_metadata (const WsiSafetensors * st);
const char *wsi_safetensors_metadata_key (const WsiSafetensors * st,
    size_t index);

/* Checks the gst-wsiseg model keys (format, format_version, n_classes,
 * class_names, class_colors, preprocess, mean/std, ...) for presence and
 * syntax; the arch and its tensors are the engine's job. 0 when fine. */
int wsi_safetensors_check_model_metadata (const WsiSafetensors * st,
    char *err, size_t errlen);

const char *wsi_dtype_name (WsiDtype dtype);
size_t wsi_dtype_size (WsiDtype dtype);

/* A float32 tensor to save. */
typedef struct
{
  const char *name;
  int n_dims;
  const int64_t *shape;
  const float *data;            /* product(shape) values, C order */
} WsiTensorSpec;

/* Writes F32 tensors (in the given order) and metadata (@metadata: key,
 * value, key, value, ..., NULL; may be NULL) atomically: a temporary file
 * next to @path, fsync, rename. Refuses duplicate/empty names and NaN/Inf
 * values. Returns 0, or -1 with a message in @err. */
int wsi_safetensors_save (const char *path, const WsiTensorSpec * tensors,
    size_t n_tensors, const char *const *metadata, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
