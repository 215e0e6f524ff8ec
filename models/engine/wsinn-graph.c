/* wsinn: graph construction and named parameters. */
#include "wsinn-private.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static void
net_fail (wsinn_net * net, const char *fmt, ...)
{
  va_list ap;
  if (net->error[0])
    return;
  va_start (ap, fmt);
  vsnprintf (net->error, sizeof net->error, fmt, ap);
  va_end (ap);
}

wsinn_net *
wsinn_net_new (void)
{
  wsinn_net *net = calloc (1, sizeof *net);
  if (!net)
    return NULL;
  net->output = -1;
  net->bn_momentum = 0.1f;
  if (dnnl_engine_create (&net->engine, dnnl_cpu, 0) != dnnl_success
      || dnnl_stream_create (&net->stream, net->engine,
          dnnl_stream_default_flags) != dnnl_success) {
    net_fail (net, "oneDNN: cannot create a CPU engine");
  }
  return net;
}

void
wsinn_net_free (wsinn_net * net)
{
  if (!net)
    return;
  for (int i = 0; i < 2; i++)
    wsinn_plan_free (net->plans[i]);
  for (int i = 0; i < net->n_nodes; i++) {
    free (net->nodes[i].fold_w);
    free (net->nodes[i].fold_b);
  }
  for (size_t i = 0; i < net->n_params; i++) {
    free ((char *) net->params[i].name);
    free (net->params[i].data);
    free (net->params[i].grad);
  }
  free (net->params);
  free (net->nodes);
  if (net->stream)
    dnnl_stream_destroy (net->stream);
  if (net->engine)
    dnnl_engine_destroy (net->engine);
  free (net);
}

const char *
wsinn_net_error (const wsinn_net * net)
{
  return net->error[0] ? net->error : NULL;
}

/* Any change of the graph or of the mode drops the plans. */
static void
drop_plans (wsinn_net * net)
{
  for (int i = 0; i < 2; i++) {
    wsinn_plan_free (net->plans[i]);
    net->plans[i] = NULL;
  }
}

static int
add_param (wsinn_net * net, const char *prefix, const char *suffix,
    int ndims, const int64_t * shape, int trainable)
{
  char name[256];
  if (snprintf (name, sizeof name, "%s%s%s", prefix ? prefix : "",
          prefix && prefix[0] ? "." : "", suffix) >= (int) sizeof name) {
    net_fail (net, "parameter name too long: %s.%s", prefix, suffix);
    return -1;
  }
  for (size_t i = 0; i < net->n_params; i++)
    if (!strcmp (net->params[i].name, name)) {
      net_fail (net, "duplicate parameter name %s", name);
      return -1;
    }
  if (net->n_params == net->cap_params) {
    size_t cap = net->cap_params ? 2 * net->cap_params : 64;
    wsinn_param *p = realloc (net->params, cap * sizeof *p);
    if (!p) {
      net_fail (net, "out of memory");
      return -1;
    }
    net->params = p;
    net->cap_params = cap;
  }
  wsinn_param *p = &net->params[net->n_params];
  memset (p, 0, sizeof *p);
  p->name = strdup (name);
  p->ndims = ndims;
  p->size = 1;
  for (int d = 0; d < ndims; d++) {
    p->shape[d] = shape[d];
    p->size *= (size_t) shape[d];
  }
  p->data = calloc (p->size, sizeof (float));
  p->grad = calloc (p->size, sizeof (float));
  p->trainable = trainable;
  if (!p->name || !p->data || !p->grad) {
    net_fail (net, "out of memory");
    return -1;
  }
  return (int) net->n_params++;
}

static int
new_node (wsinn_net * net, wsinn_op op, int n_in, const int *in, int c)
{
  if (net->error[0])
    return -1;
  if (n_in > WSINN_MAX_IN) {
    net_fail (net, "too many inputs (%d, max %d)", n_in, WSINN_MAX_IN);
    return -1;
  }
  for (int i = 0; i < n_in; i++)
    if (in[i] < 0 || in[i] >= net->n_nodes) {
      net_fail (net, "layer input %d is not a node of the net", in[i]);
      return -1;
    }
  if (c <= 0) {
    net_fail (net, "layer with %d output channels", c);
    return -1;
  }
  if (net->n_nodes == net->cap_nodes) {
    int cap = net->cap_nodes ? 2 * net->cap_nodes : 64;
    wsinn_node *n = realloc (net->nodes, cap * sizeof *n);
    if (!n) {
      net_fail (net, "out of memory");
      return -1;
    }
    net->nodes = n;
    net->cap_nodes = cap;
  }
  wsinn_node *n = &net->nodes[net->n_nodes];
  memset (n, 0, sizeof *n);
  n->op = op;
  n->n_in = n_in;
  for (int i = 0; i < n_in; i++)
    n->in[i] = in[i];
  n->c = c;
  for (int i = 0; i < 4; i++)
    n->p[i] = -1;
  drop_plans (net);
  return net->n_nodes++;
}

int
wsinn_net_channels (const wsinn_net * net, int node)
{
  if (node < 0 || node >= net->n_nodes)
    return -1;
  return net->nodes[node].c;
}

int
wsinn_input (wsinn_net * net, int channels)
{
  for (int i = 0; i < net->n_nodes; i++)
    if (net->nodes[i].op == OP_INPUT) {
      net_fail (net, "the net already has an input");
      return -1;
    }
  return new_node (net, OP_INPUT, 0, NULL, channels);
}

static int
conv_like (wsinn_net * net, wsinn_op op, int src, const char *prefix,
    int cout, int k, int stride, int pad, int dilation, int output_pad,
    int bias)
{
  if (net->error[0])
    return -1;
  if (src < 0 || src >= net->n_nodes) {
    net_fail (net, "%s: input is not a node", prefix);
    return -1;
  }
  if (k < 1 || stride < 1 || pad < 0 || dilation < 1 || output_pad < 0
      || (op == OP_DECONV && output_pad >= stride)) {
    net_fail (net, "%s: bad kernel %d / stride %d / padding %d / dilation %d",
        prefix, k, stride, pad, dilation);
    return -1;
  }
  int cin = net->nodes[src].c;
  int id = new_node (net, op, 1, &src, cout);
  if (id < 0)
    return -1;
  wsinn_node *n = &net->nodes[id];
  n->k = k;
  n->stride = stride;
  n->pad = pad;
  n->dilation = dilation;
  n->output_pad = output_pad;
  n->has_bias = bias;
  int64_t wshape[4] = { op == OP_CONV ? cout : cin, op == OP_CONV ? cin : cout,
    k, k
  };
  int64_t bshape[1] = { cout };
  n->p[0] = add_param (net, prefix, "weight", 4, wshape, 1);
  if (bias)
    n->p[1] = add_param (net, prefix, "bias", 1, bshape, 1);
  return net->error[0] ? -1 : id;
}

int
wsinn_conv (wsinn_net * net, int src, const char *prefix, int cout, int k,
    int stride, int pad, int dilation, int bias)
{
  return conv_like (net, OP_CONV, src, prefix, cout, k, stride, pad, dilation,
      0, bias);
}

int
wsinn_conv_shared (wsinn_net * net, int src, int like)
{
  if (net->error[0])
    return -1;
  if (like < 0 || like >= net->n_nodes || net->nodes[like].op != OP_CONV
      || src < 0 || src >= net->n_nodes
      || net->nodes[src].c != net->nodes[net->nodes[like].in[0]].c) {
    net_fail (net, "shared conv: node %d is not a conv with %d input "
        "channels", like, src >= 0 && src < net->n_nodes ?
        net->nodes[src].c : -1);
    return -1;
  }
  wsinn_node o = net->nodes[like];
  int id = new_node (net, OP_CONV, 1, &src, o.c);
  if (id < 0)
    return -1;
  wsinn_node *n = &net->nodes[id];
  n->k = o.k;
  n->stride = o.stride;
  n->pad = o.pad;
  n->dilation = o.dilation;
  n->has_bias = o.has_bias;
  n->p[0] = o.p[0];
  n->p[1] = o.p[1];
  n->shared = 1;
  return id;
}

int
wsinn_linear (wsinn_net * net, int src, const char *prefix, int cout, int k,
    int bias)
{
  int id = conv_like (net, OP_CONV, src, prefix, cout, k, 1, 0, 1, 0, bias);
  if (id < 0)
    return -1;
  wsinn_param *w = &net->params[net->nodes[id].p[0]];
  w->ndims = 2;
  w->shape[1] = w->shape[1] * w->shape[2] * w->shape[3];
  w->shape[2] = w->shape[3] = 0;
  return id;
}

int
wsinn_deconv (wsinn_net * net, int src, const char *prefix, int cout, int k,
    int stride, int pad, int output_pad, int bias)
{
  return conv_like (net, OP_DECONV, src, prefix, cout, k, stride, pad, 1,
      output_pad, bias);
}

int
wsinn_batchnorm (wsinn_net * net, int src, const char *prefix, float eps)
{
  if (net->error[0])
    return -1;
  if (src < 0 || src >= net->n_nodes || !(eps > 0)) {
    net_fail (net, "%s: bad BatchNorm input or epsilon", prefix);
    return -1;
  }
  int c = net->nodes[src].c;
  int id = new_node (net, OP_BN, 1, &src, c);
  if (id < 0)
    return -1;
  int64_t shape[1] = { c };
  net->nodes[id].eps = eps;
  net->nodes[id].p[0] = add_param (net, prefix, "weight", 1, shape, 1);
  net->nodes[id].p[1] = add_param (net, prefix, "bias", 1, shape, 1);
  net->nodes[id].p[2] = add_param (net, prefix, "running_mean", 1, shape, 0);
  net->nodes[id].p[3] = add_param (net, prefix, "running_var", 1, shape, 0);
  if (net->nodes[id].p[3] >= 0)
    for (int i = 0; i < c; i++) {
      net->params[net->nodes[id].p[0]].data[i] = 1.0f;
      net->params[net->nodes[id].p[3]].data[i] = 1.0f;
    }
  return net->error[0] ? -1 : id;
}

int
wsinn_batchnorm_frozen (wsinn_net * net, int src, const char *prefix,
    float eps)
{
  int id = wsinn_batchnorm (net, src, prefix, eps);
  if (id < 0)
    return -1;
  wsinn_node *n = &net->nodes[id];
  n->frozen = 1;
  for (int k = 0; k < 4; k++)
    net->params[n->p[k]].trainable = 0;
  return id;
}

int
wsinn_activation (wsinn_net * net, int src, wsinn_act act)
{
  if (act < WSINN_ACT_RELU || act > WSINN_ACT_GELU) {
    net_fail (net, "unknown activation %d", (int) act);
    return -1;
  }
  int c = src >= 0 && src < net->n_nodes ? net->nodes[src].c : 1;
  int id = new_node (net, OP_ACT, 1, &src, c);
  if (id >= 0)
    net->nodes[id].act = act;
  return id;
}

int
wsinn_pooling (wsinn_net * net, int src, wsinn_pool kind, int k, int stride,
    int pad)
{
  if (k < 1 || stride < 1 || pad < 0 || 2 * pad > k
      || (kind != WSINN_POOL_MAX && kind != WSINN_POOL_AVG)) {
    net_fail (net, "bad pooling: kernel %d stride %d padding %d", k, stride,
        pad);
    return -1;
  }
  int c = src >= 0 && src < net->n_nodes ? net->nodes[src].c : 1;
  int id = new_node (net, OP_POOL, 1, &src, c);
  if (id >= 0) {
    net->nodes[id].act = kind;
    net->nodes[id].k = k;
    net->nodes[id].stride = stride;
    net->nodes[id].pad = pad;
  }
  return id;
}

int
wsinn_global_avgpool (wsinn_net * net, int src)
{
  int c = src >= 0 && src < net->n_nodes ? net->nodes[src].c : 1;
  return new_node (net, OP_GAP, 1, &src, c);
}

int
wsinn_resize_like (wsinn_net * net, int src, int like)
{
  int in[2] = { src, like };
  int c = src >= 0 && src < net->n_nodes ? net->nodes[src].c : 1;
  return new_node (net, OP_RESIZE, 2, in, c);
}

int
wsinn_resize_nearest_like (wsinn_net * net, int src, int like)
{
  int id = wsinn_resize_like (net, src, like);
  if (id >= 0)
    net->nodes[id].nearest = 1;
  return id;
}

int
wsinn_concat (wsinn_net * net, int n, const int *srcs)
{
  int c = 0;
  if (n < 1) {
    net_fail (net, "concat of no input");
    return -1;
  }
  for (int i = 0; i < n; i++)
    c += srcs[i] >= 0 && srcs[i] < net->n_nodes ? net->nodes[srcs[i]].c : 0;
  return new_node (net, OP_CONCAT, n, srcs, c);
}

int
wsinn_add (wsinn_net * net, int a, int b)
{
  int in[2] = { a, b };
  if (a >= 0 && b >= 0 && a < net->n_nodes && b < net->n_nodes
      && net->nodes[a].c != net->nodes[b].c) {
    net_fail (net, "add of %d and %d channels", net->nodes[a].c,
        net->nodes[b].c);
    return -1;
  }
  int c = a >= 0 && a < net->n_nodes ? net->nodes[a].c : 1;
  return new_node (net, OP_ADD, 2, in, c);
}

int
wsinn_softmax (wsinn_net * net, int src)
{
  int c = src >= 0 && src < net->n_nodes ? net->nodes[src].c : 1;
  return new_node (net, OP_SOFTMAX, 1, &src, c);
}

int
wsinn_set_output (wsinn_net * net, int node)
{
  if (net->error[0])
    return -1;
  if (node < 0 || node >= net->n_nodes) {
    net_fail (net, "output %d is not a node", node);
    return -1;
  }
  net->output = node;
  net->outputs[0] = node;
  net->n_outputs = 1;
  drop_plans (net);
  return node;
}

int
wsinn_add_output (wsinn_net * net, int node)
{
  if (net->error[0])
    return -1;
  if (node < 0 || node >= net->n_nodes) {
    net_fail (net, "output %d is not a node", node);
    return -1;
  }
  for (int k = 0; k < net->n_outputs; k++)
    if (net->outputs[k] == node) {
      net_fail (net, "node %d is already output %d", node, k);
      return -1;
    }
  if (net->n_outputs >= WSINN_MAX_OUTPUTS) {
    net_fail (net, "more than %d outputs", WSINN_MAX_OUTPUTS);
    return -1;
  }
  net->outputs[net->n_outputs] = node;
  net->output = net->outputs[0];
  drop_plans (net);
  return net->n_outputs++;
}

int
wsinn_net_n_outputs (const wsinn_net * net)
{
  return net->n_outputs;
}

/* -------------------------------------------------------------- params */

size_t
wsinn_net_n_params (const wsinn_net * net)
{
  return net->n_params;
}

wsinn_param *
wsinn_net_param (wsinn_net * net, size_t index)
{
  return index < net->n_params ? &net->params[index] : NULL;
}

wsinn_param *
wsinn_net_find_param (wsinn_net * net, const char *name)
{
  for (size_t i = 0; i < net->n_params; i++)
    if (!strcmp (net->params[i].name, name))
      return &net->params[i];
  return NULL;
}

static void
shape_str (char *buf, size_t len, int ndims, const int64_t * shape)
{
  size_t o = 0;
  o += snprintf (buf + o, len - o, "[");
  for (int d = 0; d < ndims && o < len; d++)
    o += snprintf (buf + o, len - o, "%s%lld", d ? ", " : "",
        (long long) shape[d]);
  if (o < len)
    snprintf (buf + o, len - o, "]");
}

int
wsinn_net_set_param (wsinn_net * net, const char *name, const float *data,
    int ndims, const int64_t * shape, char *err, size_t errlen)
{
  wsinn_param *p = wsinn_net_find_param (net, name);
  if (!p) {
    snprintf (err, errlen, "the network has no parameter named %s", name);
    return -1;
  }
  int same = ndims == p->ndims;
  for (int d = 0; same && d < ndims; d++)
    same = shape[d] == p->shape[d];
  if (!same) {
    char want[96], got[96];
    shape_str (want, sizeof want, p->ndims, p->shape);
    shape_str (got, sizeof got, ndims < 0 ? 0 : ndims > 8 ? 8 : ndims, shape);
    snprintf (err, errlen, "parameter %s has shape %s, the network needs %s",
        name, got, want);
    return -1;
  }
  for (size_t i = 0; i < p->size; i++)
    if (!isfinite (data[i])) {
      snprintf (err, errlen, "parameter %s holds a NaN or infinite value",
          name);
      return -1;
    }
  memcpy (p->data, data, p->size * sizeof (float));
  net->param_version++;
  return 0;
}

void
wsinn_net_params_changed (wsinn_net * net)
{
  net->param_version++;
}

static uint64_t
splitmix (uint64_t * s)
{
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

void
wsinn_net_init_params (wsinn_net * net, uint64_t seed)
{
  uint64_t s = seed;
  for (int i = 0; i < net->n_nodes; i++) {
    wsinn_node *n = &net->nodes[i];
    if ((n->op == OP_CONV || n->op == OP_DECONV) && !n->shared) {
      wsinn_param *w = &net->params[n->p[0]];
      int64_t fan_in = (n->op == OP_CONV ? (int64_t) net->nodes[n->in[0]].c :
          w->shape[0]) * n->k * n->k;
      float bound = sqrtf (6.0f / (float) fan_in);
      for (size_t j = 0; j < w->size; j++)
        w->data[j] = bound * (2.0f * (float) (splitmix (&s) >> 40)
            / (float) (1ull << 24) - 1.0f);
      if (n->p[1] >= 0)
        memset (net->params[n->p[1]].data, 0, net->params[n->p[1]].size * 4);
    } else if (n->op == OP_BN) {
      for (int64_t c = 0; c < n->c; c++) {
        net->params[n->p[0]].data[c] = 1.0f;
        net->params[n->p[1]].data[c] = 0.0f;
        net->params[n->p[2]].data[c] = 0.0f;
        net->params[n->p[3]].data[c] = 1.0f;
      }
    }
  }
  net->param_version++;
}

void
wsinn_net_set_training (wsinn_net * net, int training)
{
  /* plans are per mode (get_plan matches it), so alternating training
   * steps and evaluation keeps both */
  net->training = !!training;
}
