/* Internals shared by the wsinn sources. */
#pragma once

#include "wsinn.h"

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

dnnl_format_tag_t wsinn_activation_tag (void);

#define WSINN_MAX_IN 8

typedef enum
{
  OP_INPUT,
  OP_CONV,
  OP_DECONV,
  OP_BN,
  OP_ACT,
  OP_POOL,
  OP_GAP,
  OP_RESIZE,
  OP_CONCAT,
  OP_ADD,
  OP_SOFTMAX,
} wsinn_op;

typedef struct
{
  wsinn_op op;
  int n_in;
  int in[WSINN_MAX_IN];
  int c;                        /* output channels */
  /* conv / deconv / pool */
  int k, stride, pad, dilation, output_pad, has_bias;
  int act;                      /* wsinn_act, or pool kind */
  float eps;
  int frozen;                   /* BN: running statistics also in training */
  int nearest;                  /* resize: nearest neighbour */
  int shared;                   /* conv: parameters of another conv */
  int p[4];                     /* parameter indexes (-1 none): conv w, b;
                                 * bn weight, bias, running_mean, running_var */
  int n_consumers;
  /* inference folding of a following BatchNorm (conv only) */
  float *fold_w, *fold_b;
} wsinn_node;

typedef struct _wsinn_plan wsinn_plan;

struct _wsinn_net
{
  wsinn_node *nodes;
  int n_nodes, cap_nodes;
  wsinn_param *params;
  size_t n_params, cap_params;
  int output;                   /* outputs[0] */
  int outputs[WSINN_MAX_OUTPUTS];
  int n_outputs;
  int training;
  float bn_momentum;
  char error[256];
  unsigned param_version;
  dnnl_engine_t engine;
  dnnl_stream_t stream;
  wsinn_plan *plans[2];         /* most recently used first */
  int n_plans_built;
};

/* wsinn-plan.c */
void wsinn_plan_free (wsinn_plan * plan);
