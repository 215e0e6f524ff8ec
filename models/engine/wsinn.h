/* wsinn: a small neural-network engine on oneDNN (CPU, float32).
 * A network is a graph of layers whose parameters carry PyTorch state_dict
 * names; forward and backward (training) run through oneDNN primitives that
 * are created once per input shape and mode and then reused.
 * No GStreamer, no GLib. Errors: a message in a caller buffer (err, errlen).
 * Design and layer list: docs/engine.md. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _wsinn_net wsinn_net;

/* ------------------------------------------------------------ parameters */

#define WSINN_MAX_DIMS 4

typedef struct
{
  const char *name;             /* state_dict key, e.g. "down.0.conv1.conv.weight" */
  int ndims;
  int64_t shape[WSINN_MAX_DIMS];        /* PyTorch shape */
  size_t size;                  /* number of floats */
  float *data;                  /* PyTorch (C) order */
  float *grad;                  /* same shape; filled by wsinn_net_backward() */
  int trainable;                /* 0 for BatchNorm running statistics */
} wsinn_param;

size_t wsinn_net_n_params (const wsinn_net * net);
wsinn_param *wsinn_net_param (wsinn_net * net, size_t index);
wsinn_param *wsinn_net_find_param (wsinn_net * net, const char *name);
/* Copies @data (ndims/shape must match the parameter). 0 or -1 + @err. */
int wsinn_net_set_param (wsinn_net * net, const char *name, const float *data,
    int ndims, const int64_t * shape, char *err, size_t errlen);
/* Call after writing param->data directly (e.g. an optimizer step). */
void wsinn_net_params_changed (wsinn_net * net);
/* Fills every parameter deterministically: conv weights He-uniform, biases
 * 0, BatchNorm weight 1 / bias 0 / mean 0 / var 1. */
void wsinn_net_init_params (wsinn_net * net, uint64_t seed);

/* ------------------------------------------------------ building a graph */

typedef enum
{
  WSINN_ACT_RELU,
  WSINN_ACT_SIGMOID,
  WSINN_ACT_TANH,
  WSINN_ACT_ELU,
  WSINN_ACT_GELU,
} wsinn_act;

typedef enum
{
  WSINN_POOL_MAX,
  WSINN_POOL_AVG,               /* PyTorch count_include_pad=True */
} wsinn_pool;

/* Layer constructors return a node id (>= 0). On a bad argument they
 * return -1 and the net keeps the first error (see wsinn_net_error), so a
 * builder may chain calls and check once at the end. Parameter names are
 * "<prefix>.weight", "<prefix>.bias", "<prefix>.running_mean", ... */
wsinn_net *wsinn_net_new (void);
void wsinn_net_free (wsinn_net * net);
const char *wsinn_net_error (const wsinn_net * net);    /* NULL if none */

int wsinn_input (wsinn_net * net, int channels);
/* Conv2d: weight [cout, cin, k, k], optional bias [cout]. */
int wsinn_conv (wsinn_net * net, int src, const char *prefix, int cout, int k,
    int stride, int pad, int dilation, int bias);
/* A conv with the parameters (and geometry) of the conv node @like, e.g.
 * one head run on every FPN level; weight gradients of all users summed. */
int wsinn_conv_shared (wsinn_net * net, int src, int like);
/* nn.Linear on a k x k input flattened as PyTorch's flatten(NCHW): a k x k
 * valid convolution whose weight keeps the Linear shape [cout, cin*k*k]
 * (same memory order as the conv's [cout, cin, k, k]), so a state_dict
 * maps 1:1; output 1 x 1 x cout. k = 1: Linear on 1x1 maps. */
int wsinn_linear (wsinn_net * net, int src, const char *prefix, int cout,
    int k, int bias);
/* ConvTranspose2d: weight [cin, cout, k, k] (PyTorch layout), optional bias;
 * output size (in - 1) * stride - 2 * pad + k + output_pad. */
int wsinn_deconv (wsinn_net * net, int src, const char *prefix, int cout,
    int k, int stride, int pad, int output_pad, int bias);
/* BatchNorm2d (eps, momentum as PyTorch's defaults 1e-5 and 0.1). */
int wsinn_batchnorm (wsinn_net * net, int src, const char *prefix, float eps);
/* torchvision FrozenBatchNorm2d: the same four tensors, none trainable; the
 * running statistics are used in training too (gradient to the input only). */
int wsinn_batchnorm_frozen (wsinn_net * net, int src, const char *prefix,
    float eps);
int wsinn_activation (wsinn_net * net, int src, wsinn_act act);
int wsinn_pooling (wsinn_net * net, int src, wsinn_pool kind, int k,
    int stride, int pad);
int wsinn_global_avgpool (wsinn_net * net, int src);
/* Bilinear resize (align_corners=False) of @src to the spatial size of
 * @like (only its shape is used). */
int wsinn_resize_like (wsinn_net * net, int src, int like);
/* Nearest-neighbour resize of @src to the size of @like (F.interpolate
 * mode="nearest", e.g. FPN top-down). The size ratio must be an integer
 * (checked when a plan is built), where oneDNN's and PyTorch's index rules
 * agree. */
int wsinn_resize_nearest_like (wsinn_net * net, int src, int like);
int wsinn_concat (wsinn_net * net, int n, const int *srcs);
int wsinn_add (wsinn_net * net, int a, int b);
int wsinn_softmax (wsinn_net * net, int src);   /* over channels */
/* Makes @node the only output (index 0). */
int wsinn_set_output (wsinn_net * net, int node);
/* Appends @node as one more output and returns its index (0 for the
 * first); distinct nodes, at most WSINN_MAX_OUTPUTS. */
#define WSINN_MAX_OUTPUTS 16
int wsinn_add_output (wsinn_net * net, int node);
int wsinn_net_n_outputs (const wsinn_net * net);
int wsinn_net_channels (const wsinn_net * net, int node);

/* ------------------------------------------------------- architectures */

typedef enum
{
  WSINN_OUTPUT_LOGITS,
  WSINN_OUTPUT_PROBS,           /* softmax, or sigmoid for one class */
} wsinn_output;

typedef struct
{
  char arch[32];                /* unet | fcn8s | deeplabv3 */
  char encoder[32];             /* unet | vgg | resnet18 | resnet34; "" default */
  int n_classes;
  int depth;                    /* unet; 0 = default 4 */
  int base_width;               /* 0 = default (32 unet/vgg, 64 resnet) */
  int vgg_blocks[5];            /* all 0 = default 2,2,3,3,3 */
  int output_stride;            /* deeplabv3: 8 or 16; 0 = 16 */
  int aspp_width;               /* 0 = 256 */
  int aspp_rates[3];            /* all 0 = default for the output stride */
  wsinn_output output;
} wsinn_spec;

void wsinn_spec_init (wsinn_spec * spec);
/* Sets one hyperparameter from a model-file metadata pair (arch, encoder,
 * n_classes, depth, base_width, vgg_blocks, output_stride, aspp_width,
 * aspp_rates; other keys are ignored). 0 or -1 + @err. */
int wsinn_spec_set (wsinn_spec * spec, const char *key, const char *value,
    char *err, size_t errlen);
/* Side multiple the input must have (2^depth for unet, 32 otherwise). */
int wsinn_spec_size_multiple (const wsinn_spec * spec);
wsinn_net *wsinn_net_new_from_spec (const wsinn_spec * spec, char *err,
    size_t errlen);

/* ---------------------------------------------------------- Mask R-CNN */

/* torchvision 0.14 maskrcnn_resnet50_fpn sub-networks on a ResNet-18/34
 * backbone, with torchvision's state_dict names (docs/engine.md). */
typedef struct
{
  char backbone[32];            /* resnet18 | resnet34 */
  int base_width;               /* 64 */
  int fpn_channels;             /* 256 */
  int n_anchors;                /* per location and level: 3 */
  int n_classes;                /* with the background: >= 2 */
  int representation;           /* box head fc6/fc7 width: 1024 */
  int box_pool;                 /* box RoI side: 7 */
  int mask_layers;              /* mask head convs: 4 */
  int mask_width;               /* 256 */
  int mask_dilation;            /* 1 */
} wsinn_maskrcnn_spec;

#define WSINN_FPN_LEVELS 5
void wsinn_maskrcnn_spec_init (wsinn_maskrcnn_spec * spec);   /* defaults */
/* backbone.body.* (FrozenBatchNorm) + backbone.fpn.* + rpn.head.* on an
 * RGB input (side a multiple of 32). 15 outputs: 0..4 FPN levels '0', '1',
 * '2', '3', 'pool' (strides 4..64, fpn_channels); 5 + l objectness of
 * level l (n_anchors); 10 + l box deltas (4 n_anchors): NHWC, so the
 * values are in torchvision's flattened (y, x, anchor[, coordinate]) order. */
wsinn_net *wsinn_maskrcnn_features (const wsinn_maskrcnn_spec * spec,
    char *err, size_t errlen);
/* roi_heads.box_head (fc6, fc7 as wsinn_linear) + box_predictor on RoI
 * features: input n_rois x box_pool x box_pool x fpn_channels (NHWC, i.e.
 * RoIAlign's [k, c, p, p] transposed); outputs 0 class logits (n_classes),
 * 1 box regression (4 n_classes), each n_rois x 1 x 1 x C. */
wsinn_net *wsinn_maskrcnn_box_head (const wsinn_maskrcnn_spec * spec,
    char *err, size_t errlen);
/* roi_heads.mask_head + mask_predictor: input n_rois x 14 x 14 x
 * fpn_channels; output n_rois x 28 x 28 x n_classes mask logits. */
wsinn_net *wsinn_maskrcnn_mask_head (const wsinn_maskrcnn_spec * spec,
    char *err, size_t errlen);

/* ------------------------------------------------------------- running */

/* 0 = inference (BatchNorm folded into convolutions, fused post-ops),
 * 1 = training (batch statistics, running statistics updated with
 * momentum, every layer kept for backward). */
void wsinn_net_set_training (wsinn_net * net, int training);
/* Output size for an input of n x h x w; -1 + @err if the input does not
 * fit the graph (e.g. a side too small). */
int wsinn_net_output_shape (wsinn_net * net, int n, int h, int w,
    int *out_c, int *out_h, int *out_w, char *err, size_t errlen);
/* @input: n x h x w x cin float32 (NHWC); @output: n x oh x ow x cout
 * (NHWC). Returns 0, or -1 with a message. */
int wsinn_net_forward (wsinn_net * net, const float *input, int n, int h,
    int w, float *output, char *err, size_t errlen);
/* Several outputs: shape of output @index; forward writing output k into
 * outputs[k] (NHWC; NULL = not copied out); backward from one gradient per
 * output (diff_outputs[k] NULL, or diff_outputs NULL: zero). With one
 * output these equal wsinn_net_output_shape / _forward / _backward, which
 * on a net with several outputs use output 0 (the others' gradient 0). */
int wsinn_net_output_shape_at (wsinn_net * net, int index, int n, int h,
    int w, int *out_c, int *out_h, int *out_w, char *err, size_t errlen);
int wsinn_net_forward_outputs (wsinn_net * net, const float *input, int n,
    int h, int w, float *const *outputs, char *err, size_t errlen);
int wsinn_net_backward_outputs (wsinn_net * net,
    const float *const *diff_outputs, float *diff_input, char *err,
    size_t errlen);
/* After a training-mode forward: @diff_output has the output's shape
 * (NHWC). Writes every trainable param->grad (overwritten, not summed)
 * and, if @diff_input is not NULL, the input gradient (NHWC). */
int wsinn_net_backward (wsinn_net * net, const float *diff_output,
    float *diff_input, char *err, size_t errlen);

/* Threads used by oneDNN (OpenMP); 0 leaves the default. */
void wsinn_set_num_threads (int n);

typedef struct
{
  int n_primitives;             /* layer primitives executed per forward */
  int n_reorders;               /* reorders per forward, input/output included */
  int n_inner_reorders;         /* reorders between layers (0 is the goal) */
  int n_plans_built;            /* plans (primitive sets) created so far */
  size_t activation_bytes;      /* memory of the current plan's activations */
} wsinn_stats;

void wsinn_net_stats (const wsinn_net * net, wsinn_stats * stats);
/* Multiply-adds x 2 of the convolutions and transposed convolutions of one
 * forward at n x h x w (0 if the size does not fit). */
double wsinn_net_flops (wsinn_net * net, int n, int h, int w);
/* Estimated engine memory (bytes) of a forward at n x h x w without
 * building a plan: activations alive at once in inference (@training 0),
 * or every activation, its gradient and the parameter gradients and
 * optimiser state for a training step. Channels are counted padded to the
 * blocked layout. 0 if the size does not fit the net. */
size_t wsinn_net_memory_estimate (wsinn_net * net, int n, int h, int w,
    int training);
/* Prints the current plan: one line per step with primitive kind,
 * implementation and the memory format of its output. */
void wsinn_net_dump_plan (const wsinn_net * net, FILE * out);
/* The blocked activation layout the engine uses on this CPU ("nChw16c"
 * with AVX-512, "nChw8c" with AVX2; DNNL_MAX_CPU_ISA caps it). */
const char *wsinn_activation_layout (void);

#ifdef __cplusplus
}
#endif
