/* wsinn: execution plans. A plan is the set of oneDNN primitives, C
 * kernels and memories for one input shape (n, h, w) and one mode
 * (inference or training), built once and reused. Activations keep the
 * layout the primitives choose (format "any"); only the user's NHWC input
 * and output are reordered. Design: docs/engine.md. */
#include "wsinn-private.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#define MAX_ARGS 12

typedef enum
{
  STEP_LAYER,                   /* a layer primitive */
  STEP_REORDER,                 /* layout change between layers */
  STEP_IO,                      /* user NHWC <-> internal layout */
  STEP_WEIGHTS,                 /* parameter layout change, gradients */
  STEP_SUM,                     /* gradient accumulation */
  STEP_HOST,                    /* C code */
} step_kind;

typedef struct _step step;
typedef struct _wconv_list wconv_list;
typedef void (*host_fn) (wsinn_net * net, wsinn_plan * plan, int node);

struct _step
{
  step_kind kind;
  int node;
  dnnl_primitive_t prim;
  const_dnnl_primitive_desc_t pd;
  int nargs;
  dnnl_exec_arg_t args[MAX_ARGS];
  host_fn host;
};

typedef struct
{
  step *v;
  int n, cap;
} step_list;

typedef struct
{
  int64_t n, c, h, w;
  int alias;                    /* node whose primitive writes this output */
  int fold_bn;                  /* conv: BatchNorm node folded in, or -1 */
  int post_relu;                /* ReLU fused as a post-op */
  dnnl_memory_desc_t md;        /* output layout; undef = not decided */
  dnnl_memory_t mem;
  dnnl_memory_t in_mem[WSINN_MAX_IN];   /* inputs as the primitive reads them */
  dnnl_primitive_desc_t fwd_pd;
  dnnl_memory_t w_plain, w_prim, b_mem, mean, var, ws;
  dnnl_memory_t diff;           /* training: gradient of the output */
  int bn_relu;                  /* training: ReLU fused into the BatchNorm */
  int bn_kernel;                /* training BatchNorm by the C kernels */
  dnnl_memory_t bn_dsrc;        /* where the BatchNorm kernel writes d input */
  dnnl_memory_t mid;            /* deconv as 1x1 conv: before the shuffle */
} nstate;

/* A weight layout change done in C (see wconv_run). */
typedef struct wconv_
{
  dnnl_memory_t src, dst;
  int64_t dims[4];
  int64_t *tab;                 /* src tables for dims 0..3, then dst */
  int64_t *t_src[4], *t_dst[4];
} wconv;

struct _wconv_list
{
  wconv *v;
  int n, cap;
  int64_t rows;
};

struct _wsinn_plan
{
  int n, h, w, training;
  int force_blocked;            /* activations in wsinn_activation_tag () */
  int n_nodes;
  nstate *ns;
  step_list prep, fwd, bwd;
  step_list din;                /* steps that only produce the input gradient */
  wconv_list wprep, wgrad;      /* batched weight / gradient layout changes */
  step in_step, din_step;
  step out_step[WSINN_MAX_OUTPUTS], dout_step[WSINN_MAX_OUTPUTS];
  int n_out;
  int has_din;
  dnnl_memory_t user_in, user_din;
  dnnl_memory_t user_out[WSINN_MAX_OUTPUTS], user_dout[WSINN_MAX_OUTPUTS];
  unsigned version_seen;
  int prepared, forwarded;
  /* owned objects */
  dnnl_primitive_t *prims;
  int n_prims, cap_prims;
  dnnl_primitive_desc_t *pds;
  int n_pds, cap_pds;
  dnnl_memory_t *mems;
  int n_mems, cap_mems;
  /* gradient accumulation scratch */
  dnnl_memory_t *scratch_mems;
  int n_scratch, cap_scratch;
  void *scratch;
  size_t scratch_size;
  size_t act_bytes;
  /* inference: activation buffers shared by layers whose lifetimes
   * (producing step .. last reading step) do not overlap */
  struct act_entry
  {
    dnnl_memory_t mem;
    size_t size;
    int start, end;
  } *acts;
  int n_acts, cap_acts;
  int *last_use;
  void **slots;
  int n_slots;
  struct shared_grad
  {
    float *buf;
    int param;
  } *sgrad;                     /* gradients of shared convs, summed last */
  int n_sgrad, cap_sgrad;
  double *bn_tmp;               /* BatchNorm kernels: partial sums */
  size_t bn_tmp_n;
  int in_node;
  dnnl_primitive_attr_t attr;   /* while building: user scratchpad mode */
  void *scratchpad;             /* one oneDNN scratchpad shared by all steps */
  size_t scratchpad_size;
  dnnl_engine_t engine;
  char *err;
  size_t errlen;
};

static void
plan_fail (wsinn_plan * p, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  if (p->err && p->errlen)
    vsnprintf (p->err, p->errlen, fmt, ap);
  va_end (ap);
}

#define GROW(arr, n, cap) do { \
    if ((n) == (cap)) { \
      int nc_ = (cap) ? 2 * (cap) : 32; \
      void *np_ = realloc ((arr), nc_ * sizeof *(arr)); \
      if (!np_) abort (); \
      (arr) = np_; (cap) = nc_; \
    } } while (0)

static const char *op_names[] = { "input", "conv", "deconv", "batchnorm",
  "activation", "pooling", "global_avgpool", "resize", "concat", "add",
  "softmax"
};

void
wsinn_plan_free (wsinn_plan * p)
{
  if (!p)
    return;
  for (int i = 0; i < p->n_prims; i++)
    dnnl_primitive_destroy (p->prims[i]);
  for (int i = 0; i < p->n_pds; i++)
    dnnl_primitive_desc_destroy (p->pds[i]);
  for (int i = 0; i < p->n_mems; i++)
    dnnl_memory_destroy (p->mems[i]);
  free (p->prims);
  free (p->pds);
  free (p->mems);
  free (p->scratch_mems);
  free (p->scratch);
  free (p->bn_tmp);
  for (int i = 0; i < p->n_sgrad; i++)
    free (p->sgrad[i].buf);
  free (p->sgrad);
  free (p->acts);
  free (p->last_use);
  for (int i = 0; i < p->n_slots; i++)
    free (p->slots[i]);
  free (p->slots);
  free (p->scratchpad);
  if (p->attr)
    dnnl_primitive_attr_destroy (p->attr);
  for (int i = 0; i < p->wprep.n; i++)
    free (p->wprep.v[i].tab);
  for (int i = 0; i < p->wgrad.n; i++)
    free (p->wgrad.v[i].tab);
  free (p->wprep.v);
  free (p->wgrad.v);
  free (p->prep.v);
  free (p->fwd.v);
  free (p->bwd.v);
  free (p->din.v);
  free (p->ns);
  free (p);
}

/* ------------------------------------------------------------- helpers */

static int
ok (wsinn_plan * p, dnnl_status_t st, int node, const char *what)
{
  if (st == dnnl_success)
    return 1;
  plan_fail (p, "oneDNN: %s failed for layer %d (%s)", what, node,
      dnnl_status2str (st));
  return 0;
}

static dnnl_memory_t
new_mem (wsinn_plan * p, const dnnl_memory_desc_t * md, void *handle)
{
  dnnl_memory_t m = NULL;
  if (dnnl_memory_create (&m, md, p->engine, handle) != dnnl_success)
    return NULL;
  GROW (p->mems, p->n_mems, p->cap_mems);
  p->mems[p->n_mems++] = m;
  return m;
}

static const dnnl_memory_desc_t *
mem_md (dnnl_memory_t m)
{
  const dnnl_memory_desc_t *md = NULL;
  dnnl_memory_get_memory_desc (m, &md);
  return md;
}


static dnnl_memory_t
alloc_mem (wsinn_plan * p, const dnnl_memory_desc_t * md)
{
  dnnl_memory_t m = NULL;
  if (dnnl_memory_create (&m, md, p->engine, DNNL_MEMORY_ALLOCATE)
      != dnnl_success)
    return NULL;
  GROW (p->mems, p->n_mems, p->cap_mems);
  p->mems[p->n_mems++] = m;
  return m;
}

static dnnl_memory_t
user_mem (wsinn_plan * p, const dnnl_memory_desc_t * md, void *handle)
{
  dnnl_memory_t m = NULL;
  if (dnnl_memory_create (&m, md, p->engine, handle) != dnnl_success)
    return NULL;
  GROW (p->mems, p->n_mems, p->cap_mems);
  p->mems[p->n_mems++] = m;
  return m;
}

static dnnl_primitive_desc_t
make_pd (wsinn_plan * p, const void *op_desc, const_dnnl_primitive_attr_t attr,
    const_dnnl_primitive_desc_t hint, int node, const char *what)
{
  dnnl_primitive_desc_t pd = NULL;
  if (!ok (p, dnnl_primitive_desc_create (&pd, op_desc, attr ? attr : p->attr,
              p->engine, hint), node, what))
    return NULL;
  GROW (p->pds, p->n_pds, p->cap_pds);
  p->pds[p->n_pds++] = pd;
  return pd;
}

static dnnl_primitive_t
make_prim (wsinn_plan * p, const_dnnl_primitive_desc_t pd, int node)
{
  dnnl_primitive_t prim = NULL;
  if (!ok (p, dnnl_primitive_create (&prim, pd), node, "primitive creation"))
    return NULL;
  GROW (p->prims, p->n_prims, p->cap_prims);
  p->prims[p->n_prims++] = prim;
  return prim;
}

static const dnnl_memory_desc_t *
query_md (const_dnnl_primitive_desc_t pd, dnnl_query_t what, int idx)
{
  return dnnl_primitive_desc_query_md (pd, what, idx);
}

static step *
add_step (step_list * l, step_kind kind, int node, dnnl_primitive_t prim,
    const_dnnl_primitive_desc_t pd)
{
  GROW (l->v, l->n, l->cap);
  step *s = &l->v[l->n++];
  memset (s, 0, sizeof *s);
  s->kind = kind;
  s->node = node;
  s->prim = prim;
  s->pd = pd;
  return s;
}

static void
arg (step * s, int what, dnnl_memory_t m)
{
  if (s->nargs < MAX_ARGS) {
    s->args[s->nargs].arg = what;
    s->args[s->nargs].memory = m;
    s->nargs++;
  }
}

static int
md_equal (const dnnl_memory_desc_t * a, const dnnl_memory_desc_t * b)
{
  return dnnl_memory_desc_equal (a, b);
}

/* A reorder primitive src -> dst into @s (already allocated step). */
static int
make_reorder (wsinn_plan * p, step * s, dnnl_memory_t src, dnnl_memory_t dst,
    int node)
{
  dnnl_primitive_desc_t pd = NULL;
  if (!ok (p, dnnl_reorder_primitive_desc_create (&pd, mem_md (src),
              p->engine, mem_md (dst), p->engine, p->attr), node, "reorder"))
    return 0;
  GROW (p->pds, p->n_pds, p->cap_pds);
  p->pds[p->n_pds++] = pd;
  s->prim = make_prim (p, pd, node);
  s->pd = pd;
  if (!s->prim)
    return 0;
  s->nargs = 0;
  arg (s, DNNL_ARG_FROM, src);
  arg (s, DNNL_ARG_TO, dst);
  return 1;
}

static int
add_reorder (wsinn_plan * p, step_list * l, step_kind kind, dnnl_memory_t src,
    dnnl_memory_t dst, int node)
{
  step *s = add_step (l, kind, node, NULL, NULL);
  return make_reorder (p, s, src, dst, node);
}

static void
dims4 (dnnl_dims_t d, int64_t n, int64_t c, int64_t h, int64_t w)
{
  d[0] = n;
  d[1] = c;
  d[2] = h;
  d[3] = w;
}

static void
md_any (dnnl_memory_desc_t * md, int64_t n, int64_t c, int64_t h, int64_t w)
{
  dnnl_dims_t d;
  dims4 (d, n, c, h, w);
  dnnl_memory_desc_init_by_tag (md, 4, d, dnnl_f32, dnnl_format_tag_any);
}

static void
md_tag (dnnl_memory_desc_t * md, int64_t n, int64_t c, int64_t h, int64_t w,
    dnnl_format_tag_t tag)
{
  dnnl_dims_t d;
  dims4 (d, n, c, h, w);
  dnnl_memory_desc_init_by_tag (md, 4, d, dnnl_f32, tag);
}

static void
md_vec (dnnl_memory_desc_t * md, int64_t c)
{
  dnnl_dims_t d = { c };
  dnnl_memory_desc_init_by_tag (md, 1, d, dnnl_f32, dnnl_x);
}

/* An activation memory alive from step @start to step @end (node
 * indexes). Training keeps every activation for backward; inference
 * places it in a shared buffer once the plan is built (assign_buffers). */
static dnnl_memory_t
act_mem (wsinn_plan * p, const dnnl_memory_desc_t * md, int start, int end)
{
  if (p->training) {
    dnnl_memory_t m = alloc_mem (p, md);
    if (m)
      p->act_bytes += dnnl_memory_desc_get_size (md);
    return m;
  }
  dnnl_memory_t m = new_mem (p, md, NULL);
  if (!m)
    return NULL;
  GROW (p->acts, p->n_acts, p->cap_acts);
  struct act_entry *e = &p->acts[p->n_acts++];
  e->mem = m;
  e->size = dnnl_memory_desc_get_size (md);
  e->start = start;
  e->end = end;
  return m;
}

static int
owner_of (wsinn_plan * p, int node)
{
  return p->ns[node].alias >= 0 ? p->ns[node].alias : node;
}

/* Last step (node index) that reads each node's output. */
static int
compute_last_use (wsinn_net * net, wsinn_plan * p)
{
  p->last_use = malloc ((size_t) net->n_nodes * sizeof *p->last_use);
  if (!p->last_use)
    return 0;
  for (int i = 0; i < net->n_nodes; i++)
    p->last_use[i] = i;
  for (int j = 0; j < net->n_nodes; j++) {
    wsinn_node *n = &net->nodes[j];
    if (p->ns[j].alias >= 0)
      continue;
    int n_data = n->op == OP_RESIZE ? 1 : n->n_in;
    for (int k = 0; k < n_data; k++) {
      int o = owner_of (p, n->in[k]);
      if (p->last_use[o] < j)
        p->last_use[o] = j;
    }
  }
  for (int k = 0; k < net->n_outputs; k++)
    p->last_use[owner_of (p, net->outputs[k])] = net->n_nodes;
  return 1;
}

/* Greedy interval packing: each activation takes a free buffer (best fit,
 * else the largest free one, grown) or a new one. */
static int
assign_buffers (wsinn_plan * p)
{
  int n = p->n_acts;
  size_t *size = calloc ((size_t) n + 1, sizeof *size);
  int *busy_until = calloc ((size_t) n + 1, sizeof *busy_until);
  int *slot_of = calloc ((size_t) n + 1, sizeof *slot_of);
  int n_slots = 0, good = size && busy_until && slot_of;
  for (int a = 1; a < n; a++)   /* stable sort by first step */
    for (int b = a; b > 0 && p->acts[b - 1].start > p->acts[b].start; b--) {
      struct act_entry t = p->acts[b];
      p->acts[b] = p->acts[b - 1];
      p->acts[b - 1] = t;
    }
  for (int a = 0; good && a < n; a++) {
    struct act_entry *e = &p->acts[a];
    int best = -1;
    for (int k = 0; k < n_slots; k++) {
      if (busy_until[k] >= e->start)
        continue;
      if (best < 0)
        best = k;
      else if (size[k] >= e->size) {
        if (size[best] < e->size || size[k] < size[best])
          best = k;
      } else if (size[best] < e->size && size[k] > size[best])
        best = k;
    }
    if (best < 0)
      best = n_slots++;
    if (size[best] < e->size)
      size[best] = e->size;
    busy_until[best] = e->end;
    slot_of[a] = best;
  }
  if (good) {
    p->slots = calloc ((size_t) n_slots + 1, sizeof *p->slots);
    good = p->slots != NULL;
  }
  for (int k = 0; good && k < n_slots; k++) {
    p->slots[k] = aligned_alloc (64, (size[k] + 63) / 64 * 64);
    good = p->slots[k] != NULL;
    p->n_slots = k + 1;
    p->act_bytes += size[k];
  }
  for (int a = 0; good && a < n; a++)
    dnnl_memory_set_data_handle (p->acts[a].mem, p->slots[slot_of[a]]);
  if (!good)
    plan_fail (p, "out of memory for activations");
  free (size);
  free (busy_until);
  free (slot_of);
  return good;
}

/* The memory of node @src as a primitive wanting @want reads it: the
 * node's own memory, or a reordered copy (counted as an inner reorder).
 * An input whose layout is not decided yet takes @want. */
static dnnl_memory_t
input_as (wsinn_plan * p, int src, const dnnl_memory_desc_t * want, int node)
{
  nstate *s = &p->ns[src];
  if (!s->mem) {                /* the net input: layout chosen by its first reader */
    s->md = *want;
    s->mem = act_mem (p, want, -1, p->last_use[src]);
    if (!s->mem)
      return NULL;
    return make_reorder (p, &p->in_step, p->user_in, s->mem, src) ? s->mem :
        NULL;
  }
  if (md_equal (&s->md, want))
    return s->mem;
  dnnl_memory_t m = act_mem (p, want, node, node);
  if (!m || !add_reorder (p, &p->fwd, STEP_REORDER, s->mem, m, node))
    return NULL;
  return m;
}

/* The layout of node @src for primitives that take the input as it is. */
static const dnnl_memory_desc_t *
input_md (wsinn_plan * p, int src)
{
  nstate *s = &p->ns[src];
  if (!s->mem) {
    static dnnl_memory_desc_t plain;
    md_tag (&plain, s->n, s->c, s->h, s->w, dnnl_nchw);
    return &plain;
  }
  return &s->md;
}

static int
set_output (wsinn_plan * p, int node, const dnnl_memory_desc_t * md)
{
  nstate *s = &p->ns[node];
  s->md = *md;
  s->mem = act_mem (p, md, node, p->last_use[node]);
  if (!s->mem) {
    plan_fail (p, "out of memory for the output of layer %d", node);
    return 0;
  }
  return 1;
}

/* ------------------------------------------------------------- host steps */

/* Inference: BatchNorm folded into the preceding convolution. */
static void
host_fold (wsinn_net * net, wsinn_plan * p, int node)
{
  wsinn_node *n = &net->nodes[node];
  wsinn_node *bn = &net->nodes[p->ns[node].fold_bn];
  const wsinn_param *w = &net->params[n->p[0]];
  const float *gamma = net->params[bn->p[0]].data;
  const float *beta = net->params[bn->p[1]].data;
  const float *mean = net->params[bn->p[2]].data;
  const float *var = net->params[bn->p[3]].data;
  size_t per_out = w->size / (size_t) n->c;
  for (int o = 0; o < n->c; o++) {
    float scale = gamma[o] / sqrtf (var[o] + bn->eps);
    float b = n->p[1] >= 0 ? net->params[n->p[1]].data[o] : 0.0f;
    for (size_t j = 0; j < per_out; j++)
      n->fold_w[o * per_out + j] = w->data[o * per_out + j] * scale;
    n->fold_b[o] = (b - mean[o]) * scale + beta[o];
  }
}

/* Training: running statistics as PyTorch updates them (unbiased var). */
static void
host_bn_running (wsinn_net * net, wsinn_plan * p, int node)
{
  wsinn_node *n = &net->nodes[node];
  nstate *s = &p->ns[node];
  float *rm = net->params[n->p[2]].data, *rv = net->params[n->p[3]].data;
  float *mean = NULL, *var = NULL;
  dnnl_memory_get_data_handle (s->mean, (void **) &mean);
  dnnl_memory_get_data_handle (s->var, (void **) &var);
  double cnt = (double) s->n * (double) s->h * (double) s->w;
  float unbias = cnt > 1 ? (float) (cnt / (cnt - 1)) : 1.0f;
  float m = net->bn_momentum;
  for (int c = 0; c < n->c; c++) {
    rm[c] = (1 - m) * rm[c] + m * mean[c];
    rv[c] = (1 - m) * rv[c] + m * var[c] * unbias;
  }
}

/* Training BatchNorm on nChw8c activations ([n][c/8][h*w][8]) by C kernels:
 * oneDNN's jit version synchronises its threads several times per call,
 * which costs far more than the arithmetic when the cores are shared.
 * Work items are (image, channel block) pairs; each pass is one OpenMP
 * loop without inner barriers. Statistics: sums of (x - shift), shift = a
 * sample of the channel, accumulated in float per chunk, in double over
 * chunks. The optional ReLU is applied on output (forward) and as the mask
 * y > 0 on the incoming gradient (backward), as PyTorch's ReLU. */

typedef float v8f __attribute__ ((vector_size (32)));
typedef int32_t v8i __attribute__ ((vector_size (32)));

#define BN_CHUNK 256

__attribute__ ((target_clones ("avx2", "default")))
static void
bn_sums_item (const float *x, int64_t hw, const float *shift_, double *out)
{
  v8f shift;
  memcpy (&shift, shift_, sizeof shift);
  double s[8] = { 0 }, q[8] = { 0 };
  for (int64_t i0 = 0; i0 < hw; i0 += BN_CHUNK) {
    int64_t i1 = i0 + BN_CHUNK < hw ? i0 + BN_CHUNK : hw;
    v8f a = { 0 }, a2 = { 0 };
    for (int64_t i = i0; i < i1; i++) {
      v8f v;
      memcpy (&v, x + 8 * i, sizeof v);
      v -= shift;
      a += v;
      a2 += v * v;
    }
    for (int k = 0; k < 8; k++) {
      s[k] += a[k];
      q[k] += a2[k];
    }
  }
  for (int k = 0; k < 8; k++) {
    out[k] = s[k];
    out[8 + k] = q[k];
  }
}

__attribute__ ((target_clones ("avx2", "default")))
static void
bn_norm_item (const float *x, float *y, int64_t hw, const float *sc_,
    const float *sh_, int relu)
{
  v8f sc, sh;
  memcpy (&sc, sc_, sizeof sc);
  memcpy (&sh, sh_, sizeof sh);
  const v8f zero = { 0 };
  for (int64_t i = 0; i < hw; i++) {
    v8f v;
    memcpy (&v, x + 8 * i, sizeof v);
    v = v * sc + sh;
    if (relu)
      v = (v8f) ((v8i) v & (v > zero));
    memcpy (y + 8 * i, &v, sizeof v);
  }
}

/* Backward pass 1: masks dy in place (ReLU), sums dy and dy * (x - mean). */
__attribute__ ((target_clones ("avx2", "default")))
static void
bn_bwd_sums_item (const float *x, const float *y, float *dy, int64_t hw,
    const float *mean_, int relu, double *out)
{
  v8f mean;
  memcpy (&mean, mean_, sizeof mean);
  const v8f zero = { 0 };
  double s[8] = { 0 }, q[8] = { 0 };
  for (int64_t i0 = 0; i0 < hw; i0 += BN_CHUNK) {
    int64_t i1 = i0 + BN_CHUNK < hw ? i0 + BN_CHUNK : hw;
    v8f a = { 0 }, a2 = { 0 };
    for (int64_t i = i0; i < i1; i++) {
      v8f g, v;
      memcpy (&g, dy + 8 * i, sizeof g);
      if (relu) {
        v8f o;
        memcpy (&o, y + 8 * i, sizeof o);
        g = (v8f) ((v8i) g & (o > zero));
        memcpy (dy + 8 * i, &g, sizeof g);
      }
      memcpy (&v, x + 8 * i, sizeof v);
      a += g;
      a2 += g * (v - mean);
    }
    for (int k = 0; k < 8; k++) {
      s[k] += a[k];
      q[k] += a2[k];
    }
  }
  for (int k = 0; k < 8; k++) {
    out[k] = s[k];
    out[8 + k] = q[k];
  }
}

/* Backward pass 2: dx = A * dy + B * x + C per channel. */
__attribute__ ((target_clones ("avx2", "default")))
static void
bn_bwd_dx_item (const float *x, const float *dy, float *dx, int64_t hw,
    const float *ka_, const float *kb_, const float *kc_)
{
  v8f ka, kb, kc;
  memcpy (&ka, ka_, sizeof ka);
  memcpy (&kb, kb_, sizeof kb);
  memcpy (&kc, kc_, sizeof kc);
  for (int64_t i = 0; i < hw; i++) {
    v8f v, g;
    memcpy (&v, x + 8 * i, sizeof v);
    memcpy (&g, dy + 8 * i, sizeof g);
    v = ka * g + kb * v + kc;
    memcpy (dx + 8 * i, &v, sizeof v);
  }
}

static float *
mem_ptr (dnnl_memory_t m)
{
  void *h = NULL;
  dnnl_memory_get_data_handle (m, &h);
  return h;
}

static void
host_bn_kernel_fwd (wsinn_net * net, wsinn_plan * p, int node)
{
  wsinn_node *n = &net->nodes[node];
  nstate *s = &p->ns[node];
  const float *x = mem_ptr (s->in_mem[0]);
  float *y = mem_ptr (s->mem), *mean = mem_ptr (s->mean),
      *var = mem_ptr (s->var);
  const float *gamma = net->params[n->p[0]].data;
  const float *beta = net->params[n->p[1]].data;
  const int64_t nb = s->n, cb = (s->c + 7) / 8, hw = s->h * s->w;
  const int64_t items = nb * cb;
  const double count = (double) nb * hw;
  double *part = p->bn_tmp;
  v8f *shift = (v8f *) (part + 16 * items), *sc = shift + cb, *sh = sc + cb;
  const int relu = s->bn_relu;

  for (int64_t b = 0; b < cb; b++)
    memcpy (&shift[b], x + b * hw * 8, sizeof (v8f));
#pragma omp parallel for schedule(static)
  for (int64_t it = 0; it < items; it++)
    bn_sums_item (x + it * hw * 8, hw, (float *) &shift[it % cb],
        part + 16 * it);
  for (int64_t b = 0; b < cb; b++)
    for (int k = 0; k < 8; k++) {
      int64_t c = b * 8 + k;
      double sum = 0, sq = 0;
      for (int64_t i = 0; i < nb; i++) {
        sum += part[16 * (i * cb + b) + k];
        sq += part[16 * (i * cb + b) + 8 + k];
      }
      double d = sum / count, v = sq / count - d * d;
      if (v < 0)
        v = 0;
      if (c < s->c) {
        mean[c] = (float) (shift[b][k] + d);
        var[c] = (float) v;
        float scale = gamma[c] / sqrtf ((float) v + n->eps);
        sc[b][k] = scale;
        sh[b][k] = beta[c] - mean[c] * scale;
      } else {
        sc[b][k] = sh[b][k] = 0;
      }
    }
#pragma omp parallel for schedule(static)
  for (int64_t it = 0; it < items; it++)
    bn_norm_item (x + it * hw * 8, y + it * hw * 8, hw,
        (float *) &sc[it % cb], (float *) &sh[it % cb], relu);
  host_bn_running (net, p, node);
}

static void
host_bn_kernel_bwd (wsinn_net * net, wsinn_plan * p, int node)
{
  wsinn_node *n = &net->nodes[node];
  nstate *s = &p->ns[node];
  const float *x = mem_ptr (s->in_mem[0]), *y = mem_ptr (s->mem);
  const float *mean = mem_ptr (s->mean), *var = mem_ptr (s->var);
  float *dy = mem_ptr (s->diff), *dx = mem_ptr (s->bn_dsrc);
  const float *gamma = net->params[n->p[0]].data;
  float *dgamma = net->params[n->p[0]].grad, *dbeta = net->params[n->p[1]].grad;
  const int64_t nb = s->n, cb = (s->c + 7) / 8, hw = s->h * s->w;
  const int64_t items = nb * cb;
  const double count = (double) nb * hw;
  double *part = p->bn_tmp;
  v8f *vm = (v8f *) (part + 16 * items), *ka = vm + cb, *kb = ka + cb,
      *kc = kb + cb;
  const int relu = s->bn_relu;

  for (int64_t b = 0; b < cb; b++)
    for (int k = 0; k < 8; k++)
      vm[b][k] = b * 8 + k < s->c ? mean[b * 8 + k] : 0;
#pragma omp parallel for schedule(static)
  for (int64_t it = 0; it < items; it++)
    bn_bwd_sums_item (x + it * hw * 8, y + it * hw * 8, dy + it * hw * 8, hw,
        (float *) &vm[it % cb], relu, part + 16 * it);
  for (int64_t b = 0; b < cb; b++)
    for (int k = 0; k < 8; k++) {
      int64_t c = b * 8 + k;
      double sdy = 0, sdyx = 0;
      for (int64_t i = 0; i < nb; i++) {
        sdy += part[16 * (i * cb + b) + k];
        sdyx += part[16 * (i * cb + b) + 8 + k];
      }
      if (c >= s->c) {
        ka[b][k] = kb[b][k] = kc[b][k] = 0;
        continue;
      }
      double rstd = 1.0 / sqrt ((double) var[c] + n->eps);
      double dg = sdyx * rstd;  /* sum dy * xhat */
      dgamma[c] = (float) dg;
      dbeta[c] = (float) sdy;
      double a = gamma[c] * rstd, q = a * rstd * dg / count;
      ka[b][k] = (float) a;
      kb[b][k] = (float) -q;
      kc[b][k] = (float) (q * mean[c] - a * sdy / count);
    }
#pragma omp parallel for schedule(static)
  for (int64_t it = 0; it < items; it++)
    bn_bwd_dx_item (x + it * hw * 8, dy + it * hw * 8, dx + it * hw * 8, hw,
        (float *) &ka[it % cb], (float *) &kb[it % cb],
        (float *) &kc[it % cb]);
}

/* ----------------------------------------------- weight layout changes */

/* Parameters change layout (PyTorch order -> a primitive's blocked layout
 * before the forward, weight gradients back after the backward) in C, all
 * tensors of a plan in one parallel loop: in training this runs every
 * step, and one loop costs less than a oneDNN reorder per tensor. The
 * offset of element (a, b, c, d) in a blocked layout is a sum of one table
 * entry per dimension. */

static int
offset_tables (const dnnl_memory_desc_t * md, int64_t * tab[4])
{
  if (md->format_kind != dnnl_blocked || md->ndims != 4)
    return 0;
  const dnnl_blocking_desc_t *b = &md->format_desc.blocking;
  for (int d = 0; d < 4; d++)
    for (int64_t x = 0; x < md->dims[d]; x++) {
      int64_t pos = x, off = 0, bs = 1;
      for (int k = b->inner_nblks - 1; k >= 0; k--) {
        if (b->inner_idxs[k] == d) {
          off += pos % b->inner_blks[k] * bs;
          pos /= b->inner_blks[k];
        }
        bs *= b->inner_blks[k];
      }
      tab[d][x] = off + pos * b->strides[d] + (d == 0 ? md->offset0 : 0);
    }
  return 1;
}

/* Adds src -> dst to @list (both 4-D, same dims); 0 if a layout is not
 * a plain blocked one (then the caller uses a oneDNN reorder). */
static int
wconv_add (wsinn_plan * p, wconv_list * list, dnnl_memory_t src,
    dnnl_memory_t dst)
{
  const dnnl_memory_desc_t *ms = mem_md (src), *md = mem_md (dst);
  size_t n = 0;
  for (int d = 0; d < 4 && ms->ndims == 4; d++)
    n += (size_t) ms->dims[d];
  int64_t *tab = n ? malloc (2 * n * sizeof *tab) : NULL;
  if (!tab)
    return 0;
  wconv c = { src, dst, {0}, tab, {0}, {0} };
  size_t o = 0;
  for (int d = 0; d < 4; d++) {
    c.dims[d] = ms->dims[d];
    c.t_src[d] = tab + o;
    c.t_dst[d] = tab + n + o;
    o += (size_t) ms->dims[d];
  }
  if (!offset_tables (ms, c.t_src) || !offset_tables (md, c.t_dst)) {
    free (tab);
    return 0;
  }
  /* the blocked side's padding stays zero: only real elements are written */
  void *h = NULL;
  dnnl_memory_get_data_handle (dst, &h);
  if (h)
    memset (h, 0, dnnl_memory_desc_get_size (md));
  GROW (list->v, list->n, list->cap);
  list->v[list->n++] = c;
  list->rows += c.dims[0];
  (void) p;
  return 1;
}

static void
wconv_run (wconv_list * list)
{
  int64_t rows = list->rows;
#pragma omp parallel for schedule(dynamic, 4)
  for (int64_t r = 0; r < rows; r++) {
    int64_t a = r;
    int k = 0;
    while (a >= list->v[k].dims[0])
      a -= list->v[k++].dims[0];
    const wconv *c = &list->v[k];
    const float *src = mem_ptr (c->src);
    float *dst = mem_ptr (c->dst);
    for (int64_t b = 0; b < c->dims[1]; b++) {
      int64_t sb = c->t_src[0][a] + c->t_src[1][b];
      int64_t db = c->t_dst[0][a] + c->t_dst[1][b];
      for (int64_t y = 0; y < c->dims[2]; y++) {
        int64_t sy = sb + c->t_src[2][y], dy = db + c->t_dst[2][y];
        for (int64_t x = 0; x < c->dims[3]; x++)
          dst[dy + c->t_dst[3][x]] = src[sy + c->t_src[3][x]];
      }
    }
  }
}

static void
host_wconv_prep (wsinn_net * net, wsinn_plan * p, int node)
{
  (void) net;
  (void) node;
  wconv_run (&p->wprep);
}

static void
host_wconv_grad (wsinn_net * net, wsinn_plan * p, int node)
{
  (void) net;
  (void) node;
  wconv_run (&p->wgrad);
}

/* A weight layout change: batched in @list when possible, else a oneDNN
 * reorder step in @steps. */
static int
weight_reorder (wsinn_plan * p, wconv_list * list, step_list * steps,
    dnnl_memory_t src, dnnl_memory_t dst, int node)
{
  if (wconv_add (p, list, src, dst))
    return 1;
  return add_reorder (p, steps, STEP_WEIGHTS, src, dst, node);
}

/* ------------------------------------------------------------- forward */

static dnnl_alg_kind_t
act_alg (int act, float *alpha)
{
  *alpha = 0.0f;
  switch (act) {
    case WSINN_ACT_SIGMOID:
      return dnnl_eltwise_logistic;
    case WSINN_ACT_TANH:
      return dnnl_eltwise_tanh;
    case WSINN_ACT_ELU:
      *alpha = 1.0f;
      return dnnl_eltwise_elu;
    case WSINN_ACT_GELU:
      return dnnl_eltwise_gelu_erf;
    default:
      return dnnl_eltwise_relu;
  }
}

static dnnl_primitive_attr_t
relu_attr (void)
{
  dnnl_primitive_attr_t attr = NULL;
  dnnl_post_ops_t po = NULL;
  dnnl_primitive_attr_create (&attr);
  dnnl_primitive_attr_set_scratchpad_mode (attr, dnnl_scratchpad_mode_user);
  dnnl_post_ops_create (&po);
  dnnl_post_ops_append_eltwise (po, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f);
  dnnl_primitive_attr_set_post_ops (attr, po);
  dnnl_post_ops_destroy (po);
  return attr;
}

/* A forward (de)convolution primitive descriptor, NULL when none fits. */
static dnnl_primitive_desc_t
conv_pd (wsinn_plan * p, int deconv, dnnl_prop_kind_t prop,
    const dnnl_memory_desc_t * src, const dnnl_memory_desc_t * wts,
    const dnnl_memory_desc_t * bias, const dnnl_memory_desc_t * dst,
    const dnnl_dims_t strides, const dnnl_dims_t dil, const dnnl_dims_t pl,
    const dnnl_dims_t pr, const_dnnl_primitive_attr_t attr)
{
  dnnl_primitive_desc_t pd = NULL;
  dnnl_status_t st;
  if (deconv) {
    dnnl_deconvolution_desc_t d;
    st = dnnl_dilated_deconvolution_forward_desc_init (&d, prop,
        dnnl_deconvolution_direct, src, wts, bias, dst, strides, dil, pl, pr);
    if (st == dnnl_success)
      st = dnnl_primitive_desc_create (&pd, &d, attr ? attr : p->attr,
          p->engine, NULL);
  } else {
    dnnl_convolution_desc_t d;
    st = dnnl_dilated_convolution_forward_desc_init (&d, prop,
        dnnl_convolution_direct, src, wts, bias, dst, strides, dil, pl, pr);
    if (st == dnnl_success)
      st = dnnl_primitive_desc_create (&pd, &d, attr ? attr : p->attr,
          p->engine, NULL);
  }
  if (st != dnnl_success)
    return NULL;
  GROW (p->pds, p->n_pds, p->cap_pds);
  p->pds[p->n_pds++] = pd;
  return pd;
}

static int
is_ref (const_dnnl_primitive_desc_t pd)
{
  const char *impl = "ref";
  dnnl_primitive_desc_query (pd, dnnl_query_impl_info_str, 0, &impl);
  return !strncmp (impl, "ref", 3);
}

/* Inference: a 2x2 stride-2 transposed convolution (U-Net upsampling) runs
 * as a 1x1 convolution to 4 x cout channels (one group of cout per pixel of
 * each output 2x2 cell) and a pixel shuffle that adds the bias: oneDNN's
 * 1x1 kernel is several times faster than its strided deconvolution. */
__attribute__ ((target_clones ("avx2", "default")))
static void
shuffle_row (const float *mid, float *out, int64_t w, int64_t group_stride,
    const float *bias8)
{
  v8f bv;
  memcpy (&bv, bias8, sizeof bv);
  for (int dy = 0; dy < 2; dy++)
    for (int dx = 0; dx < 2; dx++) {
      const float *m = mid + (dy * 2 + dx) * group_stride;
      float *o = out + dy * 2 * w * 8 + dx * 8;
      for (int64_t x = 0; x < w; x++) {
        v8f v;
        memcpy (&v, m + 8 * x, sizeof v);
        v += bv;
        memcpy (o + 16 * x, &v, sizeof v);
      }
    }
}

static void
host_deconv_shuffle (wsinn_net * net, wsinn_plan * p, int node)
{
  wsinn_node *n = &net->nodes[node];
  nstate *s = &p->ns[node];
  const float *mid = mem_ptr (s->mid);
  float *out = mem_ptr (s->mem);
  const float *bias = n->has_bias ? net->params[n->p[1]].data : NULL;
  const int64_t cb = s->c / 8, h = s->h / 2, w = s->w / 2;
  const int64_t rows = s->n * cb * h;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    int64_t img = r / (cb * h), b = r / h % cb, y = r % h;
    float b8[8] = { 0 };
    if (bias)
      memcpy (b8, bias + 8 * b, sizeof b8);
    shuffle_row (mid + (((img * 4 * cb + b) * h + y) * w) * 8,
        out + (((img * cb + b) * 2 * h + 2 * y) * 2 * w) * 8, w,
        cb * h * w * 8, b8);
  }
}

/* 1 if planned this way, 0 on error, -1 if not applicable. */
static int
plan_deconv_1x1 (wsinn_net * net, wsinn_plan * p, int i)
{
  wsinn_node *n = &net->nodes[i];
  nstate *s = &p->ns[i], *in = &p->ns[n->in[0]];
  dnnl_memory_desc_t blk, wts, mid, wfake, out, bias;
  if (p->training || n->op != OP_DECONV || n->k != 2 || n->stride != 2
      || n->pad || n->output_pad || n->dilation != 1 || n->c % 8 || !in->mem
      || s->post_relu)
    return -1;
  md_tag (&blk, in->n, in->c, in->h, in->w, dnnl_nChw8c);
  if (!md_equal (&in->md, &blk))
    return -1;
  dnnl_dims_t wd = { 4 * n->c, in->c, 1, 1 }, one = { 1, 1 }, zero = { 0, 0 };
  dnnl_memory_desc_init_by_tag (&wts, 4, wd, dnnl_f32, dnnl_format_tag_any);
  dnnl_memory_desc_init_by_tag (&wfake, 4, wd, dnnl_f32, dnnl_oihw);
  md_tag (&mid, in->n, 4 * n->c, in->h, in->w, dnnl_nChw8c);
  md_tag (&out, s->n, s->c, s->h, s->w, dnnl_nChw8c);
  dnnl_primitive_desc_t pd = conv_pd (p, 0, dnnl_forward_inference, &in->md,
      &wts, NULL, &mid, one, zero, zero, zero, NULL);
  if (!pd || is_ref (pd))
    return -1;
  dnnl_primitive_t prim = make_prim (p, pd, i);
  if (!prim)
    return 0;
  s->fwd_pd = pd;
  s->in_mem[0] = in->mem;
  s->mid = act_mem (p, &mid, i, i);
  if (!s->mid || !set_output (p, i, &out))
    return 0;
  s->w_plain = user_mem (p, &wfake, net->params[n->p[0]].data);
  s->w_prim = alloc_mem (p, query_md (pd, dnnl_query_weights_md, 0));
  if (!s->w_plain || !s->w_prim || !wconv_add (p, &p->wprep, s->w_plain,
          s->w_prim)) {
    plan_fail (p, "out of memory for layer %d", i);
    return 0;
  }
  /* PyTorch [cin][cout][2][2]: row g * cout + o of the 1x1 weights is
   * (o, g = 2 * dy + dx) of every input channel */
  wconv *c = &p->wprep.v[p->wprep.n - 1];
  for (int64_t r = 0; r < 4 * n->c; r++)
    c->t_src[0][r] = r % n->c * 4 + r / n->c;
  for (int64_t k = 0; k < in->c; k++)
    c->t_src[1][k] = k * n->c * 4;
  md_vec (&bias, n->c);
  step *st = add_step (&p->fwd, STEP_LAYER, i, prim, pd);
  arg (st, DNNL_ARG_SRC, s->in_mem[0]);
  arg (st, DNNL_ARG_WEIGHTS, s->w_prim);
  arg (st, DNNL_ARG_DST, s->mid);
  add_step (&p->fwd, STEP_HOST, i, NULL, NULL)->host = host_deconv_shuffle;
  return 1;
}

dnnl_format_tag_t
wsinn_activation_tag (void)
{
  dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa ();
  return (isa & dnnl_cpu_isa_avx512_core) == dnnl_cpu_isa_avx512_core ?
      dnnl_nChw16c : dnnl_nChw8c;
}

const char *
wsinn_activation_layout (void)
{
  return wsinn_activation_tag () == dnnl_nChw16c ? "nChw16c" : "nChw8c";
}

static int
plan_conv (wsinn_net * net, wsinn_plan * p, int i)
{
  wsinn_node *n = &net->nodes[i];
  nstate *s = &p->ns[i];
  nstate *in = &p->ns[n->in[0]];
  int deconv = n->op == OP_DECONV;
  int r = plan_deconv_1x1 (net, p, i);
  if (r >= 0)
    return r;
  dnnl_prop_kind_t prop = p->training ? dnnl_forward_training :
      dnnl_forward_inference;
  dnnl_memory_desc_t src, wts, bias, dst, wplain;
  dnnl_dims_t wd = { n->c, in->c, n->k, n->k };
  dnnl_dims_t strides = { n->stride, n->stride };
  dnnl_dims_t dil = { n->dilation - 1, n->dilation - 1 };
  dnnl_dims_t pl = { n->pad, n->pad };
  dnnl_dims_t pr = { n->pad - n->output_pad, n->pad - n->output_pad };
  int with_bias = n->has_bias || s->fold_bn >= 0;

  md_any (&src, in->n, in->c, in->h, in->w);
  dnnl_memory_desc_init_by_tag (&wts, 4, wd, dnnl_f32, dnnl_format_tag_any);
  dnnl_memory_desc_init_by_tag (&wplain, 4, wd, dnnl_f32,
      deconv ? dnnl_iohw : dnnl_oihw);
  md_vec (&bias, n->c);
  md_any (&dst, s->n, s->c, s->h, s->w);

  dnnl_primitive_attr_t attr = s->post_relu ? relu_attr () : NULL;
  dnnl_primitive_desc_t pd = NULL;
  /* Second try of a plan (get_plan): activations in the one blocked
   * layout of this CPU's vector width. Left to choose, oneDNN's AVX-512
   * brgemm convolutions write nhwc, which its deconvolutions only read by
   * reference code (an inner reorder). */
  if (p->force_blocked) {
    dnnl_memory_desc_t bsrc = src, bdst;
    md_tag (&bdst, s->n, s->c, s->h, s->w, wsinn_activation_tag ());
    if (in->mem)
      bsrc = in->md;
    pd = conv_pd (p, deconv, prop, &bsrc, &wts, with_bias ? &bias : NULL,
        &bdst, strides, dil, pl, pr, attr);
    if (pd && !is_ref (pd)) {
      src = bsrc;
      dst = bdst;
    } else {
      pd = NULL;
    }
  }
  /* Else try reading the producer's layout as it is; keep that unless
   * only a reference implementation takes it. */
  if (!pd && in->mem && !md_equal (&in->md, &src)) {
    dnnl_memory_desc_t any_src = src;
    src = in->md;
    pd = deconv ? conv_pd (p, 1, prop, &src, &wts, with_bias ? &bias : NULL,
        &dst, strides, dil, pl, pr, attr) : conv_pd (p, 0, prop, &src, &wts,
        with_bias ? &bias : NULL, &dst, strides, dil, pl, pr, attr);
    const char *impl = "ref";
    if (pd)
      dnnl_primitive_desc_query (pd, dnnl_query_impl_info_str, 0, &impl);
    if (!pd || !strncmp (impl, "ref", 3)) {
      pd = NULL;
      src = any_src;
    }
  }
  if (pd) {
  } else if (deconv) {
    dnnl_deconvolution_desc_t d;
    if (!ok (p, dnnl_dilated_deconvolution_forward_desc_init (&d, prop,
                dnnl_deconvolution_direct, &src, &wts,
                with_bias ? &bias : NULL, &dst, strides, dil, pl, pr), i,
            "deconvolution descriptor"))
      return 0;
    pd = make_pd (p, &d, attr, NULL, i, "deconvolution");
  } else {
    dnnl_convolution_desc_t d;
    if (!ok (p, dnnl_dilated_convolution_forward_desc_init (&d, prop,
                dnnl_convolution_direct, &src, &wts,
                with_bias ? &bias : NULL, &dst, strides, dil, pl, pr), i,
            "convolution descriptor"))
      return 0;
    pd = make_pd (p, &d, attr, NULL, i, "convolution");
  }
  if (attr)
    dnnl_primitive_attr_destroy (attr);
  if (!pd)
    return 0;
  s->fwd_pd = pd;
  dnnl_primitive_t prim = make_prim (p, pd, i);
  if (!prim)
    return 0;
  s->in_mem[0] = input_as (p, n->in[0], query_md (pd, dnnl_query_src_md, 0),
      i);
  if (!s->in_mem[0] || !set_output (p, i, query_md (pd, dnnl_query_dst_md,
              0)))
    return 0;

  /* parameters: plain PyTorch layout -> the primitive's layout */
  float *wsrc = net->params[n->p[0]].data;
  float *bsrc = n->p[1] >= 0 ? net->params[n->p[1]].data : NULL;
  if (s->fold_bn >= 0) {
    size_t wsize = net->params[n->p[0]].size;
    if (!n->fold_w) {
      n->fold_w = calloc (wsize, sizeof (float));
      n->fold_b = calloc ((size_t) n->c, sizeof (float));
      if (!n->fold_w || !n->fold_b) {
        plan_fail (p, "out of memory");
        return 0;
      }
    }
    wsrc = n->fold_w;
    bsrc = n->fold_b;
    add_step (&p->prep, STEP_HOST, i, NULL, NULL)->host = host_fold;
  }
  s->w_plain = user_mem (p, &wplain, wsrc);
  const dnnl_memory_desc_t *wmd = query_md (pd, dnnl_query_weights_md, 0);
  if (md_equal (wmd, &wplain)) {
    s->w_prim = s->w_plain;
  } else {
    s->w_prim = alloc_mem (p, wmd);
    if (!s->w_prim || !weight_reorder (p, &p->wprep, &p->prep, s->w_plain,
            s->w_prim, i))
      return 0;
  }
  if (with_bias)
    s->b_mem = user_mem (p, &bias, bsrc);

  step *st = add_step (&p->fwd, STEP_LAYER, i, prim, pd);
  arg (st, DNNL_ARG_SRC, s->in_mem[0]);
  arg (st, DNNL_ARG_WEIGHTS, s->w_prim);
  if (with_bias)
    arg (st, DNNL_ARG_BIAS, s->b_mem);
  arg (st, DNNL_ARG_DST, s->mem);
  return 1;
}

static int
plan_bn (wsinn_net * net, wsinn_plan * p, int i)
{
  wsinn_node *n = &net->nodes[i];
  nstate *s = &p->ns[i];
  const dnnl_memory_desc_t *md = input_md (p, n->in[0]);
  dnnl_memory_desc_t vec, blocked;
  md_vec (&vec, n->c);
  md_tag (&blocked, s->n, s->c, s->h, s->w, dnnl_nChw8c);
  int global = !p->training || n->frozen;
  if (p->training && !n->frozen && md_equal (md, &blocked)
      && !getenv ("WSINN_NO_BN_KERNEL")) {
    s->bn_kernel = 1;
    s->in_mem[0] = input_as (p, n->in[0], md, i);
    if (!s->in_mem[0] || !set_output (p, i, md))
      return 0;
    s->mean = alloc_mem (p, &vec);
    s->var = alloc_mem (p, &vec);
    if (!s->mean || !s->var)
      return 0;
    int64_t cb = (s->c + 7) / 8;
    size_t need = (size_t) (16 * s->n * cb + 16 * cb);
    if (need > p->bn_tmp_n)
      p->bn_tmp_n = need;
    add_step (&p->fwd, STEP_LAYER, i, NULL, NULL)->host = host_bn_kernel_fwd;
    return 1;
  }
  dnnl_batch_normalization_desc_t d;
  unsigned flags = dnnl_use_scale | dnnl_use_shift;
  if (global)
    flags |= dnnl_use_global_stats;
  if (s->bn_relu)
    flags |= dnnl_fuse_norm_relu;
  if (!ok (p, dnnl_batch_normalization_forward_desc_init (&d,
              p->training ? dnnl_forward_training : dnnl_forward_inference,
              md, n->eps, flags), i,
          "batch norm descriptor"))
    return 0;
  dnnl_primitive_desc_t pd = make_pd (p, &d, NULL, NULL, i, "batch norm");
  dnnl_primitive_t prim = pd ? make_prim (p, pd, i) : NULL;
  if (!prim)
    return 0;
  s->fwd_pd = pd;
  s->in_mem[0] = input_as (p, n->in[0], query_md (pd, dnnl_query_src_md, 0),
      i);
  if (!s->in_mem[0] || !set_output (p, i, query_md (pd, dnnl_query_dst_md,
              0)))
    return 0;
  dnnl_memory_t scale = user_mem (p, &vec, net->params[n->p[0]].data);
  dnnl_memory_t shift = user_mem (p, &vec, net->params[n->p[1]].data);
  if (!global) {
    s->mean = alloc_mem (p, &vec);
    s->var = alloc_mem (p, &vec);
  } else {
    s->mean = user_mem (p, &vec, net->params[n->p[2]].data);
    s->var = user_mem (p, &vec, net->params[n->p[3]].data);
  }
  step *st = add_step (&p->fwd, STEP_LAYER, i, prim, pd);
  arg (st, DNNL_ARG_SRC, s->in_mem[0]);
  arg (st, DNNL_ARG_DST, s->mem);
  arg (st, DNNL_ARG_MEAN, s->mean);
  arg (st, DNNL_ARG_VARIANCE, s->var);
  arg (st, DNNL_ARG_SCALE, scale);
  arg (st, DNNL_ARG_SHIFT, shift);
  if (s->bn_relu) {
    s->ws = alloc_mem (p, query_md (pd, dnnl_query_workspace_md, 0));
    if (!s->ws)
      return 0;
    arg (st, DNNL_ARG_WORKSPACE, s->ws);
  }
  if (!global)
    add_step (&p->fwd, STEP_HOST, i, NULL, NULL)->host = host_bn_running;
  return 1;
}

static int
plan_act (wsinn_net * net, wsinn_plan * p, int i)
{
  wsinn_node *n = &net->nodes[i];
  nstate *s = &p->ns[i];
  const dnnl_memory_desc_t *md = input_md (p, n->in[0]);
  dnnl_eltwise_desc_t d;
  float alpha;
  dnnl_alg_kind_t alg = act_alg (n->act, &alpha);
  if (!ok (p, dnnl_eltwise_forward_desc_init (&d, p->training ?
              dnnl_forward_training : dnnl_forward_inference, alg, md, alpha,
              0.0f), i, "eltwise descriptor"))
    return 0;
  dnnl_primitive_desc_t pd = make_pd (p, &d, NULL, NULL, i, "eltwise");
  dnnl_primitive_t prim = pd ? make_prim (p, pd, i) : NULL;
  if (!prim)
    return 0;
  s->fwd_pd = pd;
  s->in_mem[0] = input_as (p, n->in[0], query_md (pd, dnnl_query_src_md, 0),
      i);
  if (!s->in_mem[0] || !set_output (p, i, query_md (pd, dnnl_query_dst_md,
              0)))
    return 0;
  step *st = add_step (&p->fwd, STEP_LAYER, i, prim, pd);
  arg (st, DNNL_ARG_SRC, s->in_mem[0]);
  arg (st, DNNL_ARG_DST, s->mem);
  return 1;
}

static void
pool_geometry (wsinn_node * n, nstate * in, dnnl_alg_kind_t * alg,
    dnnl_dims_t k, dnnl_dims_t st, dnnl_dims_t pl)
{
  if (n->op == OP_GAP) {
    *alg = dnnl_pooling_avg_exclude_padding;
    k[0] = st[0] = in->h;
    k[1] = st[1] = in->w;
    pl[0] = pl[1] = 0;
  } else {
    *alg = n->act == WSINN_POOL_MAX ? dnnl_pooling_max :
        dnnl_pooling_avg_include_padding;
    k[0] = k[1] = n->k;
    st[0] = st[1] = n->stride;
    pl[0] = pl[1] = n->pad;
  }
}

static int
plan_pool (wsinn_net * net, wsinn_plan * p, int i)
{
  wsinn_node *n = &net->nodes[i];
  nstate *s = &p->ns[i], *in = &p->ns[n->in[0]];
  const dnnl_memory_desc_t *md = input_md (p, n->in[0]);
  dnnl_memory_desc_t dst;
  dnnl_dims_t k, st, pl, dil = { 0, 0 };
  dnnl_alg_kind_t alg;
  pool_geometry (n, in, &alg, k, st, pl);
  md_any (&dst, s->n, s->c, s->h, s->w);
  dnnl_pooling_v2_desc_t d;
  if (!ok (p, dnnl_pooling_v2_forward_desc_init (&d, p->training ?
              dnnl_forward_training : dnnl_forward_inference, alg, md, &dst,
              st, k, dil, pl, pl), i, "pooling descriptor"))
    return 0;
  dnnl_primitive_desc_t pd = make_pd (p, &d, NULL, NULL, i, "pooling");
  dnnl_primitive_t prim = pd ? make_prim (p, pd, i) : NULL;
  if (!prim)
    return 0;
  s->fwd_pd = pd;
  s->in_mem[0] = input_as (p, n->in[0], query_md (pd, dnnl_query_src_md, 0),
      i);
  if (!s->in_mem[0] || !set_output (p, i, query_md (pd, dnnl_query_dst_md,
              0)))
    return 0;
  step *stp = add_step (&p->fwd, STEP_LAYER, i, prim, pd);
  arg (stp, DNNL_ARG_SRC, s->in_mem[0]);
  arg (stp, DNNL_ARG_DST, s->mem);
  const dnnl_memory_desc_t *wsmd = query_md (pd, dnnl_query_workspace_md, 0);
  if (p->training && wsmd && wsmd->ndims > 0) {
    s->ws = alloc_mem (p, wsmd);
    if (!s->ws)
      return 0;
    arg (stp, DNNL_ARG_WORKSPACE, s->ws);
  }
  return 1;
}

static int
plan_resize (wsinn_net * net, wsinn_plan * p, int i)
{
  wsinn_node *n = &net->nodes[i];
  nstate *s = &p->ns[i];
  const dnnl_memory_desc_t *md = input_md (p, n->in[0]);
  dnnl_memory_desc_t dst;
  md_any (&dst, s->n, s->c, s->h, s->w);
  dnnl_resampling_desc_t d;
  if (!ok (p, dnnl_resampling_forward_desc_init (&d, p->training ?
              dnnl_forward_training : dnnl_forward_inference,
              n->nearest ? dnnl_resampling_nearest : dnnl_resampling_linear,
              NULL, md, &dst), i,
          "resampling descriptor"))
    return 0;
  dnnl_primitive_desc_t pd = make_pd (p, &d, NULL, NULL, i, "resampling");
  dnnl_primitive_t prim = pd ? make_prim (p, pd, i) : NULL;
  if (!prim)
    return 0;
  s->fwd_pd = pd;
  s->in_mem[0] = input_as (p, n->in[0], query_md (pd, dnnl_query_src_md, 0),
      i);
  if (!s->in_mem[0] || !set_output (p, i, query_md (pd, dnnl_query_dst_md,
              0)))
    return 0;
  step *st = add_step (&p->fwd, STEP_LAYER, i, prim, pd);
  arg (st, DNNL_ARG_SRC, s->in_mem[0]);
  arg (st, DNNL_ARG_DST, s->mem);
  return 1;
}

static int
plan_concat (wsinn_net * net, wsinn_plan * p, int i)
{
  wsinn_node *n = &net->nodes[i];
  nstate *s = &p->ns[i];
  dnnl_memory_desc_t srcs[WSINN_MAX_IN], dst;
  for (int k = 0; k < n->n_in; k++)
    srcs[k] = *input_md (p, n->in[k]);
  md_any (&dst, s->n, s->c, s->h, s->w);
  dnnl_primitive_desc_t pd = NULL;
  if (!ok (p, dnnl_concat_primitive_desc_create (&pd, &dst, n->n_in, 1, srcs,
              p->attr, p->engine), i, "concat"))
    return 0;
  GROW (p->pds, p->n_pds, p->cap_pds);
  p->pds[p->n_pds++] = pd;
  dnnl_primitive_t prim = make_prim (p, pd, i);
  if (!prim)
    return 0;
  s->fwd_pd = pd;
  for (int k = 0; k < n->n_in; k++) {
    s->in_mem[k] = input_as (p, n->in[k], &srcs[k], i);
    if (!s->in_mem[k])
      return 0;
  }
  if (!set_output (p, i, query_md (pd, dnnl_query_dst_md, 0)))
    return 0;
  step *st = add_step (&p->fwd, STEP_LAYER, i, prim, pd);
  for (int k = 0; k < n->n_in; k++)
    arg (st, DNNL_ARG_MULTIPLE_SRC + k, s->in_mem[k]);
  arg (st, DNNL_ARG_DST, s->mem);
  return 1;
}

static int
plan_add (wsinn_net * net, wsinn_plan * p, int i)
{
  wsinn_node *n = &net->nodes[i];
  nstate *s = &p->ns[i];
  dnnl_memory_desc_t a = *input_md (p, n->in[0]);
  dnnl_binary_desc_t d;
  if (!ok (p, dnnl_binary_desc_init (&d, dnnl_binary_add, &a, &a, &a), i,
          "binary descriptor"))
    return 0;
  dnnl_primitive_attr_t attr = s->post_relu ? relu_attr () : NULL;
  dnnl_primitive_desc_t pd = make_pd (p, &d, attr, NULL, i, "binary add");
  if (attr)
    dnnl_primitive_attr_destroy (attr);
  dnnl_primitive_t prim = pd ? make_prim (p, pd, i) : NULL;
  if (!prim)
    return 0;
  s->fwd_pd = pd;
  s->in_mem[0] = input_as (p, n->in[0], &a, i);
  s->in_mem[1] = s->in_mem[0] ? input_as (p, n->in[1], &a, i) : NULL;
  if (!s->in_mem[1] || !set_output (p, i, &a))
    return 0;
  step *st = add_step (&p->fwd, STEP_LAYER, i, prim, pd);
  arg (st, DNNL_ARG_SRC_0, s->in_mem[0]);
  arg (st, DNNL_ARG_SRC_1, s->in_mem[1]);
  arg (st, DNNL_ARG_DST, s->mem);
  return 1;
}

static int
plan_softmax (wsinn_net * net, wsinn_plan * p, int i)
{
  wsinn_node *n = &net->nodes[i];
  nstate *s = &p->ns[i];
  const dnnl_memory_desc_t *md = input_md (p, n->in[0]);
  dnnl_softmax_desc_t d;
  if (!ok (p, dnnl_softmax_forward_desc_init (&d, p->training ?
              dnnl_forward_training : dnnl_forward_inference, md, 1), i,
          "softmax descriptor"))
    return 0;
  dnnl_primitive_desc_t pd = make_pd (p, &d, NULL, NULL, i, "softmax");
  dnnl_primitive_t prim = pd ? make_prim (p, pd, i) : NULL;
  if (!prim)
    return 0;
  s->fwd_pd = pd;
  s->in_mem[0] = input_as (p, n->in[0], query_md (pd, dnnl_query_src_md, 0),
      i);
  if (!s->in_mem[0] || !set_output (p, i, query_md (pd, dnnl_query_dst_md,
              0)))
    return 0;
  step *st = add_step (&p->fwd, STEP_LAYER, i, prim, pd);
  arg (st, DNNL_ARG_SRC, s->in_mem[0]);
  arg (st, DNNL_ARG_DST, s->mem);
  return 1;
}

/* ------------------------------------------------------------ backward */

/* Where a layer writes the gradient for its input @t: the gradient memory of
 * @t if this is the first contribution, else a scratch memory that a sum
 * step then adds (call finish_contrib after the layer's step). */
typedef struct
{
  dnnl_memory_t dst;
  int t;
  int via_scratch;
  step_list *list;              /* where the layer step and the sum go */
} contrib;

/* Backward steps whose only result is the gradient of the net input run
 * only when the caller asks for that gradient (training never needs it). */
static step_list *
bwd_list (wsinn_plan * p, int t)
{
  return t == p->in_node ? &p->din : &p->bwd;
}

static int
grad_mem (wsinn_plan * p, int t)
{
  nstate *s = &p->ns[t];
  if (!s->diff) {
    s->diff = alloc_mem (p, &s->md);
    if (!s->diff) {
      plan_fail (p, "out of memory for gradients");
      return 0;
    }
  }
  return 1;
}

static int
begin_contrib (wsinn_plan * p, int t, char *written, contrib * c)
{
  c->t = t;
  c->via_scratch = written[t];
  c->list = bwd_list (p, t);
  if (!grad_mem (p, t))
    return 0;
  if (!written[t]) {
    written[t] = 1;
    c->dst = p->ns[t].diff;
    return 1;
  }
  c->dst = new_mem (p, &p->ns[t].md, NULL);
  if (!c->dst)
    return 0;
  size_t sz = dnnl_memory_desc_get_size (&p->ns[t].md);
  if (sz > p->scratch_size)
    p->scratch_size = sz;
  GROW (p->scratch_mems, p->n_scratch, p->cap_scratch);
  p->scratch_mems[p->n_scratch++] = c->dst;
  return 1;
}

static int
finish_contrib (wsinn_plan * p, contrib * c, int node)
{
  if (!c->via_scratch)
    return 1;
  const dnnl_memory_desc_t *md = &p->ns[c->t].md;
  dnnl_memory_desc_t srcs[2] = { *md, *md };
  float scales[2] = { 1.0f, 1.0f };
  dnnl_primitive_desc_t pd = NULL;
  if (!ok (p, dnnl_sum_primitive_desc_create (&pd, md, 2, scales, srcs,
              p->attr, p->engine), node, "gradient sum"))
    return 0;
  GROW (p->pds, p->n_pds, p->cap_pds);
  p->pds[p->n_pds++] = pd;
  dnnl_primitive_t prim = make_prim (p, pd, node);
  if (!prim)
    return 0;
  step *st = add_step (c->list, STEP_SUM, node, prim, pd);
  arg (st, DNNL_ARG_MULTIPLE_SRC, p->ns[c->t].diff);
  arg (st, DNNL_ARG_MULTIPLE_SRC + 1, c->dst);
  arg (st, DNNL_ARG_DST, p->ns[c->t].diff);
  return 1;
}

/* A (de)convolution data-gradient primitive descriptor, NULL if none. */
static dnnl_primitive_desc_t
bwd_data_pd (wsinn_plan * p, int deconv, const dnnl_memory_desc_t * dsrc,
    const dnnl_memory_desc_t * wts, const dnnl_memory_desc_t * ddst,
    const dnnl_dims_t strides, const dnnl_dims_t dil, const dnnl_dims_t pl,
    const dnnl_dims_t pr, const_dnnl_primitive_desc_t hint)
{
  dnnl_primitive_desc_t pd = NULL;
  dnnl_status_t st;
  if (deconv) {
    dnnl_deconvolution_desc_t d;
    st = dnnl_dilated_deconvolution_backward_data_desc_init (&d,
        dnnl_deconvolution_direct, dsrc, wts, ddst, strides, dil, pl, pr);
    if (st == dnnl_success)
      st = dnnl_primitive_desc_create (&pd, &d, p->attr, p->engine, hint);
  } else {
    dnnl_convolution_desc_t d;
    st = dnnl_dilated_convolution_backward_data_desc_init (&d,
        dnnl_convolution_direct, dsrc, wts, ddst, strides, dil, pl, pr);
    if (st == dnnl_success)
      st = dnnl_primitive_desc_create (&pd, &d, p->attr, p->engine, hint);
  }
  if (st != dnnl_success)
    return NULL;
  GROW (p->pds, p->n_pds, p->cap_pds);
  p->pds[p->n_pds++] = pd;
  return pd;
}

/* A private gradient buffer of a shared conv's parameter @param. */
static float *
shared_grad (wsinn_net * net, wsinn_plan * p, int param)
{
  float *b = calloc (net->params[param].size, sizeof (float));
  if (!b) {
    plan_fail (p, "out of memory for gradients");
    return NULL;
  }
  GROW (p->sgrad, p->n_sgrad, p->cap_sgrad);
  p->sgrad[p->n_sgrad].buf = b;
  p->sgrad[p->n_sgrad++].param = param;
  return b;
}

static void
host_shared_sum (wsinn_net * net, wsinn_plan * p, int node)
{
  (void) node;
  for (int i = 0; i < p->n_sgrad; i++) {
    wsinn_param *w = &net->params[p->sgrad[i].param];
    const float *b = p->sgrad[i].buf;
    for (size_t j = 0; j < w->size; j++)
      w->grad[j] += b[j];
  }
}

static int
bwd_conv (wsinn_net * net, wsinn_plan * p, int i, char *written)
{
  wsinn_node *n = &net->nodes[i];
  nstate *s = &p->ns[i];
  int t = n->in[0];
  nstate *in = &p->ns[t];
  int deconv = n->op == OP_DECONV;
  dnnl_dims_t wd = { n->c, in->c, n->k, n->k };
  dnnl_dims_t strides = { n->stride, n->stride };
  dnnl_dims_t dil = { n->dilation - 1, n->dilation - 1 };
  dnnl_dims_t pl = { n->pad, n->pad };
  dnnl_dims_t pr = { n->pad - n->output_pad, n->pad - n->output_pad };
  dnnl_memory_desc_t wany, bias, wplain;
  dnnl_memory_desc_init_by_tag (&wany, 4, wd, dnnl_f32, dnnl_format_tag_any);
  dnnl_memory_desc_init_by_tag (&wplain, 4, wd, dnnl_f32,
      deconv ? dnnl_iohw : dnnl_oihw);
  md_vec (&bias, n->c);
  const dnnl_memory_desc_t *src_md = mem_md (s->in_mem[0]);

  /* weights gradient */
  dnnl_primitive_desc_t pd;
  if (deconv) {
    dnnl_deconvolution_desc_t d;
    if (!ok (p, dnnl_dilated_deconvolution_backward_weights_desc_init (&d,
                dnnl_deconvolution_direct, src_md, &wany,
                n->has_bias ? &bias : NULL, &s->md, strides, dil, pl, pr), i,
            "deconvolution weights-gradient descriptor"))
      return 0;
    pd = make_pd (p, &d, NULL, s->fwd_pd, i, "deconvolution weights gradient");
  } else {
    dnnl_convolution_desc_t d;
    if (!ok (p, dnnl_dilated_convolution_backward_weights_desc_init (&d,
                dnnl_convolution_direct, src_md, &wany,
                n->has_bias ? &bias : NULL, &s->md, strides, dil, pl, pr), i,
            "convolution weights-gradient descriptor"))
      return 0;
    pd = make_pd (p, &d, NULL, s->fwd_pd, i, "convolution weights gradient");
  }
  dnnl_primitive_t prim = pd ? make_prim (p, pd, i) : NULL;
  if (!prim)
    return 0;
  float *gw = net->params[n->p[0]].grad;
  float *gb = n->has_bias ? net->params[n->p[1]].grad : NULL;
  if (n->shared && (!(gw = shared_grad (net, p, n->p[0]))
          || (n->has_bias && !(gb = shared_grad (net, p, n->p[1])))))
    return 0;
  dnnl_memory_t gplain = user_mem (p, &wplain, gw);
  const dnnl_memory_desc_t *dwmd = query_md (pd, dnnl_query_diff_weights_md,
      0);
  dnnl_memory_t dw = md_equal (dwmd, &wplain) ? gplain : alloc_mem (p, dwmd);
  step *st = add_step (&p->bwd, STEP_LAYER, i, prim, pd);
  arg (st, DNNL_ARG_SRC, s->in_mem[0]);
  arg (st, DNNL_ARG_DIFF_DST, s->diff);
  arg (st, DNNL_ARG_DIFF_WEIGHTS, dw);
  if (n->has_bias)
    arg (st, DNNL_ARG_DIFF_BIAS, user_mem (p, &bias, gb));
  if (dw != gplain && !weight_reorder (p, &p->wgrad, &p->bwd, dw, gplain, i))
    return 0;

  /* data gradient, in the layout of the input (or in the layout a jit
   * implementation wants, then reordered: e.g. 3 input channels) */
  contrib c;
  if (!begin_contrib (p, t, written, &c))
    return 0;
  step_list *list = c.list;
  pd = bwd_data_pd (p, deconv, &in->md, &wany, &s->md, strides, dil, pl, pr,
      s->fwd_pd);
  if (!pd || is_ref (pd)) {
    dnnl_memory_desc_t dany;
    md_any (&dany, in->n, in->c, in->h, in->w);
    dnnl_primitive_desc_t alt = bwd_data_pd (p, deconv, &dany, &wany, &s->md,
        strides, dil, pl, pr, s->fwd_pd);
    if (alt && (!pd || !is_ref (alt)))
      pd = alt;
  }
  if (!pd) {
    plan_fail (p, "oneDNN: %s data gradient failed for layer %d",
        deconv ? "deconvolution" : "convolution", i);
    return 0;
  }
  prim = make_prim (p, pd, i);
  if (!prim)
    return 0;
  const dnnl_memory_desc_t *wmd = query_md (pd, dnnl_query_weights_md, 0);
  dnnl_memory_t wb = s->w_plain;
  if (!md_equal (wmd, &wplain)) {
    if (md_equal (wmd, mem_md (s->w_prim)))
      wb = s->w_prim;
    else {
      wb = alloc_mem (p, wmd);
      if (!wb || (list == &p->din ? !add_reorder (p, list, STEP_WEIGHTS,
                  s->w_plain, wb, i) : !weight_reorder (p, &p->wprep,
                  &p->prep, s->w_plain, wb, i)))
        return 0;
    }
  }
  const dnnl_memory_desc_t *dsrc = query_md (pd, dnnl_query_diff_src_md, 0);
  dnnl_memory_t out = c.dst;
  int convert = !md_equal (dsrc, &in->md);
  if (convert && !(out = alloc_mem (p, dsrc)))
    return 0;
  st = add_step (list, STEP_LAYER, i, prim, pd);
  arg (st, DNNL_ARG_DIFF_DST, s->diff);
  arg (st, DNNL_ARG_WEIGHTS, wb);
  arg (st, DNNL_ARG_DIFF_SRC, out);
  if (convert && !add_reorder (p, list, STEP_REORDER, out, c.dst, i))
    return 0;
  return finish_contrib (p, &c, i);
}

static int
bwd_simple (wsinn_net * net, wsinn_plan * p, int i, char *written)
{
  wsinn_node *n = &net->nodes[i];
  nstate *s = &p->ns[i];
  int t = n->in[0];
  nstate *in = &p->ns[t];
  dnnl_primitive_desc_t pd = NULL;
  const char *what = op_names[n->op];
  union
  {
    dnnl_eltwise_desc_t e;
    dnnl_pooling_v2_desc_t pool;
    dnnl_resampling_desc_t r;
    dnnl_batch_normalization_desc_t bn;
    dnnl_softmax_desc_t sm;
  } d;
  dnnl_status_t stt = dnnl_success;
  float alpha;
  dnnl_dims_t k, str, pl, dil = { 0, 0 };
  dnnl_alg_kind_t alg;

  if (s->bn_kernel) {
    contrib c;
    if (!begin_contrib (p, t, written, &c))
      return 0;
    c.list = &p->bwd;           /* also computes parameter gradients */
    s->bn_dsrc = c.dst;
    add_step (&p->bwd, STEP_LAYER, i, NULL, NULL)->host = host_bn_kernel_bwd;
    return finish_contrib (p, &c, i);
  }
  switch (n->op) {
    case OP_ACT:
      alg = act_alg (n->act, &alpha);
      stt = dnnl_eltwise_backward_desc_init (&d.e, alg, &s->md,
          mem_md (s->in_mem[0]), alpha, 0.0f);
      break;
    case OP_POOL:
    case OP_GAP:
      pool_geometry (n, in, &alg, k, str, pl);
      stt = dnnl_pooling_v2_backward_desc_init (&d.pool, alg, &in->md,
          &s->md, str, k, dil, pl, pl);
      break;
    case OP_RESIZE:
      stt = dnnl_resampling_backward_desc_init (&d.r, n->nearest ?
          dnnl_resampling_nearest : dnnl_resampling_linear, NULL, &in->md,
          &s->md);
      break;
    case OP_BN:
      /* frozen: oneDNN has no backward_data with a scale; full backward,
       * the scale/shift gradients go to a scratch memory */
      stt = dnnl_batch_normalization_backward_desc_init (&d.bn, dnnl_backward,
          &s->md, mem_md (s->in_mem[0]), n->eps,
          dnnl_use_scale | dnnl_use_shift
          | (n->frozen ? dnnl_use_global_stats : 0)
          | (s->bn_relu ? dnnl_fuse_norm_relu : 0));
      break;
    case OP_SOFTMAX:
      stt = dnnl_softmax_backward_desc_init (&d.sm, &s->md, &s->md, 1);
      break;
    default:
      break;
  }
  if (!ok (p, stt, i, what))
    return 0;
  pd = make_pd (p, &d, NULL, s->fwd_pd, i, what);
  dnnl_primitive_t prim = pd ? make_prim (p, pd, i) : NULL;
  if (!prim)
    return 0;
  /* the layer's data gradient may want a layout other than the input's */
  const dnnl_memory_desc_t *dsrc = query_md (pd, dnnl_query_diff_src_md, 0);
  contrib c;
  if (!begin_contrib (p, t, written, &c))
    return 0;
  dnnl_memory_t out = c.dst;
  int convert = !md_equal (dsrc, &in->md);
  if (convert)
    out = alloc_mem (p, dsrc);
  if (n->op == OP_BN && !n->frozen)     /* also parameter gradients */
    c.list = &p->bwd;
  step_list *list = c.list;
  step *st = add_step (list, STEP_LAYER, i, prim, pd);
  arg (st, DNNL_ARG_DIFF_DST, s->diff);
  arg (st, DNNL_ARG_DIFF_SRC, out);
  switch (n->op) {
    case OP_ACT:
      arg (st, DNNL_ARG_SRC, s->in_mem[0]);
      break;
    case OP_POOL:
      if (s->ws)
        arg (st, DNNL_ARG_WORKSPACE, s->ws);
      break;
    case OP_BN:{
      dnnl_memory_desc_t vec;
      md_vec (&vec, n->c);
      arg (st, DNNL_ARG_SRC, s->in_mem[0]);
      arg (st, DNNL_ARG_MEAN, s->mean);
      arg (st, DNNL_ARG_VARIANCE, s->var);
      arg (st, DNNL_ARG_SCALE, user_mem (p, &vec, net->params[n->p[0]].data));
      arg (st, DNNL_ARG_SHIFT, user_mem (p, &vec, net->params[n->p[1]].data));
      if (n->frozen) {
        dnnl_memory_t junk = alloc_mem (p, &vec);
        arg (st, DNNL_ARG_DIFF_SCALE, junk);
        arg (st, DNNL_ARG_DIFF_SHIFT, junk);
        break;
      }
      arg (st, DNNL_ARG_DIFF_SCALE, user_mem (p, &vec,
              net->params[n->p[0]].grad));
      arg (st, DNNL_ARG_DIFF_SHIFT, user_mem (p, &vec,
              net->params[n->p[1]].grad));
      if (s->bn_relu)
        arg (st, DNNL_ARG_WORKSPACE, s->ws);
      break;
    }
    case OP_SOFTMAX:
      arg (st, DNNL_ARG_DST, s->mem);
      break;
    default:
      break;
  }
  if (convert && !add_reorder (p, list, STEP_REORDER, out, c.dst, i))
    return 0;
  return finish_contrib (p, &c, i);
}

/* concat: slices of the gradient; add: the gradient itself. */
static int
bwd_split (wsinn_net * net, wsinn_plan * p, int i, char *written)
{
  wsinn_node *n = &net->nodes[i];
  nstate *s = &p->ns[i];
  int64_t off = 0;
  void *base = NULL;
  dnnl_memory_get_data_handle (s->diff, &base);
  for (int k = 0; k < n->n_in; k++) {
    int t = n->in[k];
    nstate *in = &p->ns[t];
    dnnl_memory_t src = s->diff;
    if (n->op == OP_CONCAT) {
      dnnl_memory_desc_t sub;
      dnnl_dims_t dims, offs;
      dims4 (dims, in->n, in->c, in->h, in->w);
      dims4 (offs, 0, off, 0, 0);
      off += in->c;
      if (!ok (p, dnnl_memory_desc_init_submemory (&sub, &s->md, dims, offs),
              i, "concat gradient slice"))
        return 0;
      src = user_mem (p, &sub, base);
    }
    contrib c;
    if (!begin_contrib (p, t, written, &c)
        || !add_reorder (p, bwd_list (p, t), STEP_LAYER, src, c.dst, i)
        || !finish_contrib (p, &c, i))
      return 0;
  }
  return 1;
}

/* ------------------------------------------------------------ building */

static int
infer_shapes (wsinn_net * net, wsinn_plan * p)
{
  for (int i = 0; i < net->n_nodes; i++) {
    wsinn_node *n = &net->nodes[i];
    nstate *s = &p->ns[i];
    nstate *a = n->n_in ? &p->ns[n->in[0]] : NULL;
    s->c = n->c;
    s->n = p->n;
    int64_t h = 0, w = 0;
    switch (n->op) {
      case OP_INPUT:
        h = p->h;
        w = p->w;
        break;
      case OP_CONV:{
        int64_t ek = (int64_t) (n->k - 1) * n->dilation + 1;
        h = (a->h + 2 * n->pad - ek) / n->stride + 1;
        w = (a->w + 2 * n->pad - ek) / n->stride + 1;
        if (a->h + 2 * n->pad < ek || a->w + 2 * n->pad < ek)
          h = w = 0;
        break;
      }
      case OP_DECONV:
        h = (a->h - 1) * n->stride - 2 * n->pad + n->k + n->output_pad;
        w = (a->w - 1) * n->stride - 2 * n->pad + n->k + n->output_pad;
        break;
      case OP_POOL:
        h = (a->h + 2 * n->pad - n->k) / n->stride + 1;
        w = (a->w + 2 * n->pad - n->k) / n->stride + 1;
        if (a->h + 2 * n->pad < n->k || a->w + 2 * n->pad < n->k)
          h = w = 0;
        break;
      case OP_GAP:
        h = w = 1;
        break;
      case OP_RESIZE:
        h = p->ns[n->in[1]].h;
        w = p->ns[n->in[1]].w;
        if (n->nearest && (h % a->h || w % a->w)) {
          plan_fail (p, "layer %d (nearest resize): %lldx%lld to %lldx%lld "
              "is not an integer scale for a %dx%d input; the input size "
              "must be a multiple of the network's size multiple", i,
              (long long) a->w, (long long) a->h, (long long) w,
              (long long) h, p->w, p->h);
          return 0;
        }
        break;
      case OP_CONCAT:
      case OP_ADD:
        h = a->h;
        w = a->w;
        for (int k = 1; k < n->n_in; k++)
          if (p->ns[n->in[k]].h != h || p->ns[n->in[k]].w != w) {
            plan_fail (p, "layer %d (%s): inputs of %lldx%lld and %lldx%lld "
                "pixels for a %dx%d input; the input size must be a multiple "
                "of the network's size multiple", i, op_names[n->op],
                (long long) w, (long long) h, (long long) p->ns[n->in[k]].w,
                (long long) p->ns[n->in[k]].h, p->w, p->h);
            return 0;
          }
        break;
      default:
        h = a->h;
        w = a->w;
        break;
    }
    if (h < 1 || w < 1) {
      plan_fail (p, "layer %d (%s): a %dx%d input is too small for the "
          "network", i, op_names[n->op], p->w, p->h);
      return 0;
    }
    s->h = h;
    s->w = w;
    s->alias = -1;
    s->fold_bn = -1;
  }
  return 1;
}

/* The only consumer of node @i, or -1 (none, several, or the output). */
static int
sole_consumer (wsinn_net * net, int i)
{
  int found = -1, count = 0;
  for (int k = 0; k < net->n_outputs; k++)
    count += net->outputs[k] == i;
  for (int j = i + 1; j < net->n_nodes; j++) {
    wsinn_node *n = &net->nodes[j];
    int n_data = n->op == OP_RESIZE ? 1 : n->n_in;
    for (int k = 0; k < n_data; k++)
      if (n->in[k] == i) {
        count++;
        found = j;
      }
  }
  return count == 1 ? found : -1;
}

static void
plan_fusions (wsinn_net * net, wsinn_plan * p)
{
  for (int i = 0; i < net->n_nodes; i++) {
    wsinn_node *n = &net->nodes[i];
    if (p->ns[i].alias >= 0)
      continue;
    int last = i;
    if (p->training) {          /* every output is kept: only BN + ReLU */
      int j = n->op == OP_BN && !n->frozen ? sole_consumer (net, i) : -1;
      if (j >= 0 && net->nodes[j].op == OP_ACT
          && net->nodes[j].act == WSINN_ACT_RELU) {
        p->ns[i].bn_relu = 1;
        p->ns[j].alias = i;
      }
      continue;
    }
    if (n->op == OP_CONV) {
      int j = sole_consumer (net, i);
      if (j >= 0 && net->nodes[j].op == OP_BN) {
        p->ns[i].fold_bn = j;
        p->ns[j].alias = i;
        last = j;
      }
    }
    if (n->op == OP_CONV || n->op == OP_ADD) {
      int j = sole_consumer (net, last);
      if (j >= 0 && net->nodes[j].op == OP_ACT
          && net->nodes[j].act == WSINN_ACT_RELU) {
        p->ns[i].post_relu = 1;
        p->ns[j].alias = i;
      }
    }
  }
}

/* Every primitive gets the plan's one scratchpad buffer (user mode): no
 * hidden per-thread buffer, and primitives may run in any thread. */
static int
scratchpad_list (wsinn_plan * p, step * v, int n, dnnl_memory_t ** mems,
    int *n_mems, int *cap)
{
  for (int i = 0; i < n; i++) {
    if (!v[i].pd || !v[i].prim)
      continue;
    const dnnl_memory_desc_t *md = query_md (v[i].pd,
        dnnl_query_scratchpad_md, 0);
    size_t size = md ? dnnl_memory_desc_get_size (md) : 0;
    if (!size)
      continue;
    dnnl_memory_t m = new_mem (p, md, NULL);
    if (!m || v[i].nargs >= MAX_ARGS) {
      plan_fail (p, "oneDNN: scratchpad for layer %d", v[i].node);
      return 0;
    }
    arg (&v[i], DNNL_ARG_SCRATCHPAD, m);
    GROW (*mems, *n_mems, *cap);
    (*mems)[(*n_mems)++] = m;
    if (size > p->scratchpad_size)
      p->scratchpad_size = size;
  }
  return 1;
}

static int
attach_scratchpad (wsinn_plan * p)
{
  dnnl_memory_t *mems = NULL;
  int n = 0, cap = 0, good = 1;
  step *single[] = { &p->in_step, &p->din_step };
  step_list *lists[] = { &p->prep, &p->fwd, &p->bwd, &p->din };
  for (int k = 0; k < 4 && good; k++)
    good = scratchpad_list (p, lists[k]->v, lists[k]->n, &mems, &n, &cap);
  for (int k = 0; k < 2 && good; k++)
    good = scratchpad_list (p, single[k], 1, &mems, &n, &cap);
  good = good && scratchpad_list (p, p->out_step, p->n_out, &mems, &n, &cap)
      && scratchpad_list (p, p->dout_step, p->n_out, &mems, &n, &cap);
  if (good && p->scratchpad_size) {
    p->scratchpad = aligned_alloc (64, (p->scratchpad_size + 63) / 64 * 64);
    if (!p->scratchpad) {
      plan_fail (p, "out of memory for the oneDNN scratchpad");
      good = 0;
    }
    for (int k = 0; good && k < n; k++)
      dnnl_memory_set_data_handle (mems[k], p->scratchpad);
  }
  free (mems);
  return good;
}

static wsinn_plan *
plan_build (wsinn_net * net, int n, int h, int w, int force_blocked,
    char *err, size_t errlen)
{
  wsinn_plan *p = calloc (1, sizeof *p);
  if (!p) {
    snprintf (err, errlen, "out of memory");
    return NULL;
  }
  p->force_blocked = force_blocked;
  p->n = n;
  p->h = h;
  p->w = w;
  p->training = net->training;
  p->err = err;
  p->errlen = errlen;
  p->n_nodes = net->n_nodes;
  p->ns = calloc ((size_t) net->n_nodes, sizeof *p->ns);
  p->engine = net->engine;
  if (!p->ns || !infer_shapes (net, p))
    goto fail;
  if (dnnl_primitive_attr_create (&p->attr) != dnnl_success
      || dnnl_primitive_attr_set_scratchpad_mode (p->attr,
          dnnl_scratchpad_mode_user) != dnnl_success) {
    plan_fail (p, "oneDNN: attribute creation failed");
    goto fail;
  }
  plan_fusions (net, p);
  if (!compute_last_use (net, p))
    goto fail;

  /* the user's NHWC input and output */
  int in_node = -1;
  for (int i = 0; i < net->n_nodes; i++)
    if (net->nodes[i].op == OP_INPUT)
      in_node = i;
  p->in_node = in_node;
  nstate *si = &p->ns[in_node];
  dnnl_memory_desc_t umd;
  md_tag (&umd, si->n, si->c, si->h, si->w, dnnl_nhwc);
  p->user_in = user_mem (p, &umd, NULL);
  p->in_step.kind = STEP_IO;
  p->n_out = net->n_outputs;
  for (int k = 0; k < p->n_out; k++) {
    nstate *so = &p->ns[net->outputs[k]];
    md_tag (&umd, so->n, so->c, so->h, so->w, dnnl_nhwc);
    p->user_out[k] = user_mem (p, &umd, NULL);
    p->out_step[k].kind = STEP_IO;
  }

  for (int i = 0; i < net->n_nodes; i++) {
    wsinn_node *nd = &net->nodes[i];
    nstate *s = &p->ns[i];
    int good = 1;
    if (s->alias >= 0) {        /* fused into its producer */
      s->md = p->ns[s->alias].md;
      s->mem = p->ns[s->alias].mem;
      continue;
    }
    switch (nd->op) {
      case OP_INPUT:
        break;                  /* layout chosen by the first reader */
      case OP_CONV:
      case OP_DECONV:
        good = plan_conv (net, p, i);
        break;
      case OP_BN:
        good = plan_bn (net, p, i);
        break;
      case OP_ACT:
        good = plan_act (net, p, i);
        break;
      case OP_POOL:
      case OP_GAP:
        good = plan_pool (net, p, i);
        break;
      case OP_RESIZE:
        good = plan_resize (net, p, i);
        break;
      case OP_CONCAT:
        good = plan_concat (net, p, i);
        break;
      case OP_ADD:
        good = plan_add (net, p, i);
        break;
      case OP_SOFTMAX:
        good = plan_softmax (net, p, i);
        break;
    }
    if (!good)
      goto fail;
  }
  if (!si->mem) {               /* the input feeds nothing that chose a layout */
    md_tag (&umd, si->n, si->c, si->h, si->w, dnnl_nchw);
    if (!input_as (p, in_node, &umd, in_node))
      goto fail;
  }
  for (int i = 0; i < net->n_nodes; i++)
    if (p->ns[i].alias >= 0) {  /* fused nodes created before their owner */
      p->ns[i].md = p->ns[p->ns[i].alias].md;
      p->ns[i].mem = p->ns[p->ns[i].alias].mem;
    }
  for (int k = 0; k < p->n_out; k++)
    if (!make_reorder (p, &p->out_step[k], p->ns[net->outputs[k]].mem,
            p->user_out[k], net->outputs[k]))
      goto fail;
  if (p->wprep.n)
    add_step (&p->prep, STEP_WEIGHTS, 0, NULL, NULL)->host =
        host_wconv_prep;
  if (p->bn_tmp_n) {
    p->bn_tmp = aligned_alloc (64, (p->bn_tmp_n * sizeof (double) + 63)
        / 64 * 64);
    if (!p->bn_tmp) {
      plan_fail (p, "out of memory");
      goto fail;
    }
  }

  if (p->training) {
    char *written = calloc ((size_t) net->n_nodes, 1);
    if (!written) {
      plan_fail (p, "out of memory");
      goto fail;
    }
    for (int k = 0; k < p->n_out; k++) {
      int o = net->outputs[k];
      nstate *so = &p->ns[o];
      md_tag (&umd, so->n, so->c, so->h, so->w, dnnl_nhwc);
      p->user_dout[k] = user_mem (p, &umd, NULL);
      p->dout_step[k].kind = STEP_IO;
      if (!grad_mem (p, o)
          || !make_reorder (p, &p->dout_step[k], p->user_dout[k], so->diff,
              o)) {
        free (written);
        goto fail;
      }
      written[o] = 1;
    }
    for (int i = net->n_nodes - 1; i >= 0; i--) {
      wsinn_node *nd = &net->nodes[i];
      int good = 1;
      if (!written[i] || nd->op == OP_INPUT)
        continue;               /* no gradient reaches this layer */
      if (p->ns[i].alias >= 0) {        /* ReLU fused into a BatchNorm */
        int o = p->ns[i].alias;
        p->ns[o].diff = p->ns[i].diff;
        written[o] = 1;
        continue;
      }
      switch (nd->op) {
        case OP_CONV:
        case OP_DECONV:
          good = bwd_conv (net, p, i, written);
          break;
        case OP_CONCAT:
        case OP_ADD:
          good = bwd_split (net, p, i, written);
          break;
        default:
          good = bwd_simple (net, p, i, written);
          break;
      }
      if (!good) {
        free (written);
        goto fail;
      }
    }
    if (p->wgrad.n)
      add_step (&p->bwd, STEP_WEIGHTS, 0, NULL, NULL)->host =
          host_wconv_grad;
    if (p->n_sgrad)
      add_step (&p->bwd, STEP_HOST, 0, NULL, NULL)->host = host_shared_sum;
    p->has_din = written[in_node];
    free (written);
    if (p->has_din) {
      md_tag (&umd, si->n, si->c, si->h, si->w, dnnl_nhwc);
      p->user_din = user_mem (p, &umd, NULL);
      p->din_step.kind = STEP_IO;
      if (!make_reorder (p, &p->din_step, si->diff, p->user_din, in_node))
        goto fail;
    }
    if (p->scratch_size) {
      p->scratch = aligned_alloc (64, (p->scratch_size + 63) / 64 * 64);
      if (!p->scratch) {
        plan_fail (p, "out of memory for gradient scratch");
        goto fail;
      }
      for (int k = 0; k < p->n_scratch; k++)
        dnnl_memory_set_data_handle (p->scratch_mems[k], p->scratch);
    }
  }
  if (!attach_scratchpad (p) || !assign_buffers (p))
    goto fail;
  dnnl_primitive_attr_destroy (p->attr);
  p->attr = NULL;
  p->err = NULL;
  net->n_plans_built++;
  return p;
fail:
  p->err = NULL;
  wsinn_plan_free (p);
  return NULL;
}

/* ----------------------------------------------------------- execution */

static int
run_steps (wsinn_net * net, wsinn_plan * p, step * v, int n, char *err,
    size_t errlen)
{
  for (int i = 0; i < n; i++) {
    if (v[i].host) {
      dnnl_stream_wait (net->stream);
      v[i].host (net, p, v[i].node);
      continue;
    }
    dnnl_status_t st = dnnl_primitive_execute (v[i].prim, net->stream,
        v[i].nargs, v[i].args);
    if (st != dnnl_success) {
      snprintf (err, errlen, "oneDNN: executing layer %d (%s) failed: %s",
          v[i].node, op_names[net->nodes[v[i].node].op],
          dnnl_status2str (st));
      return -1;
    }
  }
  return 0;
}

static int
plan_inner_reorders (const wsinn_plan * p)
{
  int r = 0;
  for (int i = 0; i < p->fwd.n; i++)
    r += p->fwd.v[i].kind == STEP_REORDER;
  return r;
}

static wsinn_plan *
get_plan (wsinn_net * net, int n, int h, int w, char *err, size_t errlen)
{
  for (int i = 0; i < 2; i++) {
    wsinn_plan *p = net->plans[i];
    if (p && p->n == n && p->h == h && p->w == w
        && p->training == net->training) {
      if (i == 1) {
        net->plans[1] = net->plans[0];
        net->plans[0] = p;
      }
      return p;
    }
  }
  /* Single-output nets: oneDNN's own layout choices first (fastest per
   * layer); when they need a reorder between layers, the CPU's one blocked
   * layout instead. Nets with several outputs (Mask R-CNN, checked against
   * torchvision that way) always use the blocked layout. */
  int multi = net->n_outputs > 1;
  wsinn_plan *p = plan_build (net, n, h, w, multi, err, errlen);
  if (!p)
    return NULL;
  if (!multi && plan_inner_reorders (p) > 0) {
    wsinn_plan *q = plan_build (net, n, h, w, 1, err, errlen);
    if (q && plan_inner_reorders (q) < plan_inner_reorders (p)) {
      wsinn_plan_free (p);
      p = q;
    } else {
      wsinn_plan_free (q);
    }
    if (q)
      net->n_plans_built--;
  }
  wsinn_plan_free (net->plans[1]);
  net->plans[1] = net->plans[0];
  net->plans[0] = p;
  return p;
}

static int
check_net (wsinn_net * net, char *err, size_t errlen)
{
  if (net->error[0]) {
    snprintf (err, errlen, "%s", net->error);
    return -1;
  }
  int has_input = 0;
  for (int i = 0; i < net->n_nodes; i++)
    has_input |= net->nodes[i].op == OP_INPUT;
  if (!has_input || net->output < 0) {
    snprintf (err, errlen, "the network has no %s",
        has_input ? "output" : "input");
    return -1;
  }
  return 0;
}

int
wsinn_net_output_shape_at (wsinn_net * net, int index, int n, int h, int w,
    int *out_c, int *out_h, int *out_w, char *err, size_t errlen)
{
  if (check_net (net, err, errlen) < 0)
    return -1;
  if (n < 1 || h < 1 || w < 1) {
    snprintf (err, errlen, "bad input size %d x %d x %d", n, h, w);
    return -1;
  }
  wsinn_plan tmp;
  memset (&tmp, 0, sizeof tmp);
  tmp.n = n;
  tmp.h = h;
  tmp.w = w;
  tmp.err = err;
  tmp.errlen = errlen;
  tmp.ns = calloc ((size_t) net->n_nodes, sizeof *tmp.ns);
  if (!tmp.ns || !infer_shapes (net, &tmp)) {
    free (tmp.ns);
    return -1;
  }
  if (index < 0 || index >= net->n_outputs) {
    snprintf (err, errlen, "no output %d (the net has %d)", index,
        net->n_outputs);
    free (tmp.ns);
    return -1;
  }
  nstate *o = &tmp.ns[net->outputs[index]];
  *out_c = (int) o->c;
  *out_h = (int) o->h;
  *out_w = (int) o->w;
  free (tmp.ns);
  return 0;
}

double
wsinn_net_flops (wsinn_net * net, int n, int h, int w)
{
  char err[256];
  wsinn_plan tmp;
  memset (&tmp, 0, sizeof tmp);
  tmp.n = n;
  tmp.h = h;
  tmp.w = w;
  tmp.err = err;
  tmp.errlen = sizeof err;
  tmp.ns = calloc ((size_t) net->n_nodes, sizeof *tmp.ns);
  double flops = 0;
  if (tmp.ns && n > 0 && h > 0 && w > 0 && infer_shapes (net, &tmp)) {
    for (int i = 0; i < net->n_nodes; i++) {
      wsinn_node *nd = &net->nodes[i];
      if (nd->op != OP_CONV && nd->op != OP_DECONV)
        continue;
      nstate *in = &tmp.ns[nd->in[0]], *o = &tmp.ns[i];
      /* deconv: every input pixel meets the whole kernel */
      nstate *px = nd->op == OP_CONV ? o : in;
      flops += 2.0 * in->c * o->c * nd->k * nd->k * px->n * px->h * px->w;
    }
  }
  free (tmp.ns);
  return flops;
}

int
wsinn_net_output_shape (wsinn_net * net, int n, int h, int w, int *out_c,
    int *out_h, int *out_w, char *err, size_t errlen)
{
  return wsinn_net_output_shape_at (net, 0, n, h, w, out_c, out_h, out_w,
      err, errlen);
}

int
wsinn_net_forward_outputs (wsinn_net * net, const float *input, int n,
    int h, int w, float *const *outputs, char *err, size_t errlen)
{
  int oc, oh, ow;
  if (wsinn_net_output_shape (net, n, h, w, &oc, &oh, &ow, err, errlen) < 0)
    return -1;
  if (!input || !outputs) {
    snprintf (err, errlen, "no input or output buffer");
    return -1;
  }
  wsinn_plan *p = get_plan (net, n, h, w, err, errlen);
  if (!p)
    return -1;
  if (p->training || !p->prepared || p->version_seen != net->param_version) {
    if (run_steps (net, p, p->prep.v, p->prep.n, err, errlen) < 0)
      return -1;
    p->prepared = 1;
    p->version_seen = net->param_version;
  }
  dnnl_memory_set_data_handle (p->user_in, (void *) input);
  if (run_steps (net, p, &p->in_step, 1, err, errlen) < 0
      || run_steps (net, p, p->fwd.v, p->fwd.n, err, errlen) < 0)
    return -1;
  for (int k = 0; k < p->n_out; k++) {
    if (!outputs[k])
      continue;
    dnnl_memory_set_data_handle (p->user_out[k], outputs[k]);
    if (run_steps (net, p, &p->out_step[k], 1, err, errlen) < 0)
      return -1;
  }
  dnnl_stream_wait (net->stream);
  p->forwarded = 1;
  if (p->training)              /* running statistics changed: refold BN */
    net->param_version++;
  return 0;
}

int
wsinn_net_forward (wsinn_net * net, const float *input, int n, int h, int w,
    float *output, char *err, size_t errlen)
{
  float *outs[WSINN_MAX_OUTPUTS] = { output };
  if (!output) {
    snprintf (err, errlen, "no input or output buffer");
    return -1;
  }
  return wsinn_net_forward_outputs (net, input, n, h, w, outs, err, errlen);
}

int
wsinn_net_backward_outputs (wsinn_net * net,
    const float *const *diff_outputs, float *diff_input, char *err,
    size_t errlen)
{
  wsinn_plan *p = net->plans[0];
  if (!p || !p->training || !p->forwarded) {
    snprintf (err, errlen, "backward needs a forward in training mode first");
    return -1;
  }
  for (size_t i = 0; i < net->n_params; i++)
    memset (net->params[i].grad, 0, net->params[i].size * sizeof (float));
  for (int k = 0; k < p->n_out; k++) {
    const float *d = diff_outputs ? diff_outputs[k] : NULL;
    if (d) {
      dnnl_memory_set_data_handle (p->user_dout[k], (void *) d);
      if (run_steps (net, p, &p->dout_step[k], 1, err, errlen) < 0)
        return -1;
    } else {
      nstate *so = &p->ns[net->outputs[k]];
      void *h = NULL;
      dnnl_memory_get_data_handle (so->diff, &h);
      memset (h, 0, dnnl_memory_desc_get_size (&so->md));
    }
  }
  if (run_steps (net, p, p->bwd.v, p->bwd.n, err, errlen) < 0)
    return -1;
  if (diff_input) {
    if (p->has_din) {
      dnnl_memory_set_data_handle (p->user_din, diff_input);
      if (run_steps (net, p, p->din.v, p->din.n, err, errlen) < 0
          || run_steps (net, p, &p->din_step, 1, err, errlen) < 0)
        return -1;
    } else {
      memset (diff_input, 0, (size_t) p->n * p->h * p->w
          * p->ns[p->in_node].c * sizeof (float));
    }
  }
  dnnl_stream_wait (net->stream);
  return 0;
}

int
wsinn_net_backward (wsinn_net * net, const float *diff_output,
    float *diff_input, char *err, size_t errlen)
{
  const float *d[WSINN_MAX_OUTPUTS] = { diff_output };
  return wsinn_net_backward_outputs (net, d, diff_input, err, errlen);
}

void
wsinn_set_num_threads (int n)
{
  if (n > 0)
    omp_set_num_threads (n);
}

void
wsinn_net_stats (const wsinn_net * net, wsinn_stats * st)
{
  memset (st, 0, sizeof *st);
  st->n_plans_built = net->n_plans_built;
  const wsinn_plan *p = net->plans[0];
  if (!p)
    return;
  st->n_reorders = 2;
  for (int i = 0; i < p->fwd.n; i++) {
    if (p->fwd.v[i].kind == STEP_LAYER)
      st->n_primitives++;
    else if (p->fwd.v[i].kind == STEP_REORDER)
      st->n_inner_reorders++;
  }
  st->n_reorders += st->n_inner_reorders;
  st->activation_bytes = p->act_bytes;
}

size_t
wsinn_net_memory_estimate (wsinn_net * net, int n, int h, int w,
    int training)
{
  char err[256];
  wsinn_plan tmp;
  int *last = NULL;
  double peak = 0, params = 0;

  if (n < 1 || h < 1 || w < 1 || check_net (net, err, sizeof err) < 0)
    return 0;
  memset (&tmp, 0, sizeof tmp);
  tmp.n = n;
  tmp.h = h;
  tmp.w = w;
  tmp.err = err;
  tmp.errlen = sizeof err;
  tmp.ns = calloc ((size_t) net->n_nodes, sizeof *tmp.ns);
  last = calloc ((size_t) net->n_nodes, sizeof *last);
  if (!tmp.ns || !last || !infer_shapes (net, &tmp)) {
    free (tmp.ns);
    free (last);
    return 0;
  }
  /* float32, channels padded to the 16-channel blocks of the layout */
#define NODE_BYTES(i) (4.0 * tmp.ns[i].n * tmp.ns[i].h * tmp.ns[i].w \
    * ((tmp.ns[i].c + 15) / 16 * 16))
  for (int i = 0; i < net->n_nodes; i++)
    last[i] = i;
  for (int j = 0; j < net->n_nodes; j++)
    for (int k = 0; k < net->nodes[j].n_in; k++)
      if (last[net->nodes[j].in[k]] < j)
        last[net->nodes[j].in[k]] = j;
  for (int k = 0; k < net->n_outputs; k++)
    last[net->outputs[k]] = net->n_nodes;
  if (training) {
    /* every activation kept for backward, a gradient of each, and
     * parameter gradients plus two optimiser states */
    for (int i = 0; i < net->n_nodes; i++)
      peak += 2 * NODE_BYTES (i);
    for (size_t i = 0; i < net->n_params; i++)
      params += 4.0 * 4 * net->params[i].size;
  } else {
    /* activations alive at once (shared buffers); reorders, scratchpad
     * and the input/output copies add about 3/4 of that (measured: RSS
     * grows 1.7x the live activations with the patch area) */
    for (int t = 0; t < net->n_nodes; t++) {
      double live = 0;
      for (int i = 0; i <= t; i++)
        if (last[i] >= t)
          live += NODE_BYTES (i);
      if (live > peak)
        peak = live;
    }
    peak *= 1.75;
  }
#undef NODE_BYTES
  free (tmp.ns);
  free (last);
  peak += params;
  return peak > (double) SIZE_MAX ? SIZE_MAX : (size_t) peak;
}

/* "nChw8c"-style name of a 4-D memory layout. */
static void
md_name (const dnnl_memory_desc_t * md, char *buf, size_t len)
{
  if (md->format_kind != dnnl_blocked || md->ndims != 4) {
    snprintf (buf, len, "other");
    return;
  }
  const dnnl_blocking_desc_t *b = &md->format_desc.blocking;
  const char lo[] = "nchw", up[] = "NCHW";
  int order[4] = { 0, 1, 2, 3 }, blocked[4] = { 0 };
  for (int k = 0; k < b->inner_nblks; k++)
    blocked[b->inner_idxs[k]] = 1;
  for (int a = 0; a < 4; a++)   /* outer dims by decreasing stride */
    for (int c = a + 1; c < 4; c++)
      if (b->strides[order[c]] > b->strides[order[a]]) {
        int t = order[a];
        order[a] = order[c];
        order[c] = t;
      }
  size_t o = 0;
  for (int a = 0; a < 4 && o + 1 < len; a++)
    buf[o++] = blocked[order[a]] ? up[order[a]] : lo[order[a]];
  buf[o] = 0;
  for (int k = 0; k < b->inner_nblks && o < len; k++)
    o += snprintf (buf + o, len - o, "%lld%c", (long long) b->inner_blks[k],
        lo[b->inner_idxs[k]]);
}

static void
dump_list (const wsinn_net * net, const wsinn_plan * p, const step_list * l,
    const char *title, FILE * out)
{
  static const char *kinds[] = { "layer", "REORDER", "io", "weights", "sum",
    "host"
  };
  fprintf (out, "%s (%d steps)\n", title, l->n);
  for (int i = 0; i < l->n; i++) {
    const step *s = &l->v[i];
    const char *impl = "";
    char fmt[32] = "";
    if (!s->pd && s->kind == STEP_WEIGHTS) {
      fprintf (out, "  %-8s   - %d tensors (C, one loop)\n", kinds[s->kind],
          s->host == host_wconv_prep ? p->wprep.n : p->wgrad.n);
      continue;
    }
    if (!s->pd && s->kind == STEP_LAYER) {  /* a C kernel */
      impl = "wsinn:c";
      md_name (&p->ns[s->node].md, fmt, sizeof fmt);
    } else if (s->pd) {
      dnnl_primitive_desc_query (s->pd, dnnl_query_impl_info_str, 0, &impl);
      const dnnl_memory_desc_t *dst = query_md (s->pd, dnnl_query_dst_md, 0);
      if (!dst || !dst->ndims)
        dst = query_md (s->pd, dnnl_query_diff_src_md, 0);
      if (dst && dst->ndims)
        md_name (dst, fmt, sizeof fmt);
    }
    fprintf (out, "  %-8s %3d %-14s %-28s %s\n", kinds[s->kind], s->node,
        op_names[net->nodes[s->node].op], impl, fmt);
  }
}

void
wsinn_net_dump_plan (const wsinn_net * net, FILE * out)
{
  const wsinn_plan *p = net->plans[0];
  if (!p) {
    fprintf (out, "no plan\n");
    return;
  }
  fprintf (out, "plan %dx%dx%d %s\n", p->n, p->h, p->w,
      p->training ? "training" : "inference");
  dump_list (net, p, &p->prep, "prepare", out);
  dump_list (net, p, &p->fwd, "forward", out);
  if (p->training)
  {
    dump_list (net, p, &p->bwd, "backward", out);
    dump_list (net, p, &p->din, "input gradient (on request)", out);
  }
}
