/* wsidetect: Mask R-CNN building blocks (torchvision 0.14 semantics). See wsidetect.h and
 * docs/detect.md. Built with -ffp-contract=off so that float expressions round as
 * torchvision's (non-FMA) kernels do. */
#include "wsidetect.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* Hot kernels (NMS row, RoIAlign taps) are compiled for AVX-512, AVX2 and baseline x86-64
 * and picked at run time from the CPU (capped by WSIDET_MAX_ISA or wsidet_set_isa). The
 * kernels are element-wise (no reductions across lanes, no FMA contraction), so every ISA
 * gives bit-identical results. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define WSIDET_X86 1
#define WSIDET_TARGET(t) __attribute__((target(t)))
#else
#define WSIDET_X86 0
#endif
#define WSIDET_INLINE static inline __attribute__((always_inline))

/* ---- 1. Anchors ------------------------------------------------------------------- */

int wsidet_cell_anchors(const float *sizes, int n_sizes, const float *ratios, int n_ratios,
                        float *out)
{
  if (!sizes || !ratios || !out || n_sizes < 0 || n_ratios < 0)
    return -1;
  int a = 0;
  for (int r = 0; r < n_ratios; r++) {
    float hr = sqrtf(ratios[r]);
    float wr = 1.0f / hr;
    for (int s = 0; s < n_sizes; s++, a++) {
      float ws = wr * sizes[s], hs = hr * sizes[s];
      out[a * 4 + 0] = nearbyintf(-ws / 2.0f);
      out[a * 4 + 1] = nearbyintf(-hs / 2.0f);
      out[a * 4 + 2] = nearbyintf(ws / 2.0f);
      out[a * 4 + 3] = nearbyintf(hs / 2.0f);
    }
  }
  return 0;
}

int wsidet_anchor_stride(int image_size, int grid_size)
{
  return grid_size > 0 ? image_size / grid_size : 0;
}

int wsidet_grid_anchors(const float *cell, int n_cell, int grid_h, int grid_w,
                        int stride_h, int stride_w, float *out)
{
  if (!cell || !out || n_cell < 0 || grid_h < 0 || grid_w < 0)
    return -1;
  size_t o = 0;
  for (int y = 0; y < grid_h; y++) {
    float sy = (float)((int64_t)y * stride_h);
    for (int x = 0; x < grid_w; x++) {
      float sx = (float)((int64_t)x * stride_w);
      for (int a = 0; a < n_cell; a++, o += 4) {
        out[o + 0] = sx + cell[a * 4 + 0];
        out[o + 1] = sy + cell[a * 4 + 1];
        out[o + 2] = sx + cell[a * 4 + 2];
        out[o + 3] = sy + cell[a * 4 + 3];
      }
    }
  }
  return grid_h * grid_w * n_cell;
}

/* ---- 2. Box coding ---------------------------------------------------------------- */

void wsidet_box_coder_init(WsidetBoxCoder *bc, float wx, float wy, float ww, float wh)
{
  bc->wx = wx;
  bc->wy = wy;
  bc->ww = ww;
  bc->wh = wh;
  bc->clip = (float)log(1000.0 / 16.0);
}

void wsidet_box_encode(const WsidetBoxCoder *bc, const float *gt, const float *ref, int n,
                       float *out)
{
  for (int i = 0; i < n; i++) {
    const float *p = ref + 4 * i, *g = gt + 4 * i;
    float ew = p[2] - p[0], eh = p[3] - p[1];
    float ecx = p[0] + 0.5f * ew, ecy = p[1] + 0.5f * eh;
    float gw = g[2] - g[0], gh = g[3] - g[1];
    float gcx = g[0] + 0.5f * gw, gcy = g[1] + 0.5f * gh;
    out[4 * i + 0] = bc->wx * (gcx - ecx) / ew;
    out[4 * i + 1] = bc->wy * (gcy - ecy) / eh;
    out[4 * i + 2] = bc->ww * logf(gw / ew);
    out[4 * i + 3] = bc->wh * logf(gh / eh);
  }
}

void wsidet_box_decode(const WsidetBoxCoder *bc, const float *codes, int k, const float *boxes,
                       int n, float *out)
{
  for (int i = 0; i < n; i++) {
    const float *b = boxes + 4 * i;
    float w = b[2] - b[0], h = b[3] - b[1];
    float cx = b[0] + 0.5f * w, cy = b[1] + 0.5f * h;
    for (int j = 0; j < k; j++) {
      const float *c = codes + ((size_t)i * k + j) * 4;
      float *o = out + ((size_t)i * k + j) * 4;
      float dx = c[0] / bc->wx, dy = c[1] / bc->wy;
      float dw = c[2] / bc->ww, dh = c[3] / bc->wh;
      if (dw > bc->clip)
        dw = bc->clip;
      if (dh > bc->clip)
        dh = bc->clip;
      float pcx = dx * w + cx, pcy = dy * h + cy;
      float pw = expf(dw) * w, ph = expf(dh) * h;
      float hw = 0.5f * pw, hh = 0.5f * ph;
      o[0] = pcx - hw;
      o[1] = pcy - hh;
      o[2] = pcx + hw;
      o[3] = pcy + hh;
    }
  }
}

static inline float clampf(float v, float lo, float hi)
{
  /* torch.clamp: NaN stays NaN */
  if (v < lo)
    v = lo;
  if (v > hi)
    v = hi;
  return v;
}

void wsidet_clip_boxes(float *boxes, int n, int height, int width)
{
  for (int i = 0; i < n; i++) {
    float *b = boxes + 4 * i;
    b[0] = clampf(b[0], 0.0f, (float)width);
    b[1] = clampf(b[1], 0.0f, (float)height);
    b[2] = clampf(b[2], 0.0f, (float)width);
    b[3] = clampf(b[3], 0.0f, (float)height);
  }
}

int wsidet_remove_small_boxes(const float *boxes, int n, float min_size, int32_t *keep)
{
  int m = 0;
  for (int i = 0; i < n; i++) {
    const float *b = boxes + 4 * i;
    if (b[2] - b[0] >= min_size && b[3] - b[1] >= min_size)
      keep[m++] = i;
  }
  return m;
}

/* ---- 3. IoU, NMS, top-k ------------------------------------------------------------ */

void wsidet_box_area(const float *boxes, int n, float *area)
{
  for (int i = 0; i < n; i++)
    area[i] = (boxes[4 * i + 2] - boxes[4 * i + 0]) * (boxes[4 * i + 3] - boxes[4 * i + 1]);
}

void wsidet_box_iou(const float *a, int na, const float *b, int nb, float *out)
{
  for (int i = 0; i < na; i++) {
    const float *p = a + 4 * i;
    float aa = (p[2] - p[0]) * (p[3] - p[1]);
    for (int j = 0; j < nb; j++) {
      const float *q = b + 4 * j;
      float ab = (q[2] - q[0]) * (q[3] - q[1]);
      float ltx = p[0] > q[0] ? p[0] : q[0], lty = p[1] > q[1] ? p[1] : q[1];
      float rbx = p[2] < q[2] ? p[2] : q[2], rby = p[3] < q[3] ? p[3] : q[3];
      float w = rbx - ltx, h = rby - lty;
      w = w < 0.0f ? 0.0f : w;
      h = h < 0.0f ? 0.0f : h;
      float inter = w * h;
      out[(size_t)i * nb + j] = inter / (aa + ab - inter);
    }
  }
}

typedef struct {
  float s;
  int32_t i;
} ScoreIdx;

/* Descending score, NaN first (as torch's descending sort), ties: lower index first. */
static int cmp_score_desc(const void *pa, const void *pb)
{
  const ScoreIdx *a = pa, *b = pb;
  int na = isnan(a->s), nb = isnan(b->s);
  if (na != nb)
    return na ? -1 : 1;
  if (!na) {
    if (a->s > b->s)
      return -1;
    if (a->s < b->s)
      return 1;
  }
  return (a->i > b->i) - (a->i < b->i);
}

static ScoreIdx *sorted_scores(const float *scores, int n)
{
  ScoreIdx *v = malloc(sizeof(*v) * (size_t)(n > 0 ? n : 1));
  if (!v)
    return NULL;
  for (int i = 0; i < n; i++) {
    v[i].s = scores[i];
    v[i].i = i;
  }
  qsort(v, (size_t)n, sizeof(*v), cmp_score_desc);
  return v;
}

/* One pass of greedy NMS over SoA boxes already in score order: sets supp[j] for every
 * box j after i whose IoU with kept box i is > thr (compared in double as torchvision). */
WSIDET_INLINE void nms_row_body(const float *restrict x1, const float *restrict y1,
                    const float *restrict x2, const float *restrict y2,
                    const float *restrict area, int from, int n, float ix1, float iy1,
                    float ix2, float iy2, float iarea, double thr, uint8_t *restrict supp)
{
  for (int j = from; j < n; j++) {
    float xx1 = ix1 < x1[j] ? x1[j] : ix1;
    float yy1 = iy1 < y1[j] ? y1[j] : iy1;
    float xx2 = x2[j] < ix2 ? x2[j] : ix2;
    float yy2 = y2[j] < iy2 ? y2[j] : iy2;
    float w = xx2 - xx1, h = yy2 - yy1;
    w = 0.0f < w ? w : 0.0f;
    h = 0.0f < h ? h : 0.0f;
    float inter = w * h;
    float ovr = inter / (iarea + area[j] - inter);
    supp[j] |= (uint8_t)((double)ovr > thr);
  }
}

#define NMS_ROW_ARGS                                                                     \
  const float *restrict x1, const float *restrict y1, const float *restrict x2,          \
      const float *restrict y2, const float *restrict area, int from, int n, float ix1,  \
      float iy1, float ix2, float iy2, float iarea, double thr, uint8_t *restrict supp
#define NMS_ROW_CALL x1, y1, x2, y2, area, from, n, ix1, iy1, ix2, iy2, iarea, thr, supp
static void nms_row_base(NMS_ROW_ARGS) { nms_row_body(NMS_ROW_CALL); }
#if WSIDET_X86
WSIDET_TARGET("avx2") static void nms_row_avx2(NMS_ROW_ARGS) { nms_row_body(NMS_ROW_CALL); }
WSIDET_TARGET("avx512f") static void nms_row_avx512(NMS_ROW_ARGS) { nms_row_body(NMS_ROW_CALL); }
#endif

WSIDET_INLINE void taps_gather_body(float *restrict acc, const float *restrict a, const float *restrict b,
                        const float *restrict c, const float *restrict d, float w1, float w2,
                        float w3, float w4, int n)
{
  for (int i = 0; i < n; i++)
    acc[i] += w1 * a[i] + w2 * b[i] + w3 * c[i] + w4 * d[i];
}

WSIDET_INLINE void taps_scatter_body(float *a, float *b, float *c, float *d, const float *restrict g,
                         float w1, float w2, float w3, float w4, int n)
{
  /* a..d may coincide (samples on the last row / column): same-iteration updates only */
  for (int i = 0; i < n; i++) {
    float v = g[i];
    a[i] += v * w1;
    b[i] += v * w2;
    c[i] += v * w3;
    d[i] += v * w4;
  }
}

#define GATHER_ARGS                                                                      \
  float *restrict acc, const float *restrict a, const float *restrict b,                 \
      const float *restrict c, const float *restrict d, float w1, float w2, float w3,    \
      float w4, int n
#define GATHER_CALL acc, a, b, c, d, w1, w2, w3, w4, n
#define SCATTER_ARGS                                                                     \
  float *a, float *b, float *c, float *d, const float *restrict g, float w1, float w2,  \
      float w3, float w4, int n
#define SCATTER_CALL a, b, c, d, g, w1, w2, w3, w4, n
static void taps_gather_base(GATHER_ARGS) { taps_gather_body(GATHER_CALL); }
static void taps_scatter_base(SCATTER_ARGS) { taps_scatter_body(SCATTER_CALL); }
#if WSIDET_X86
WSIDET_TARGET("avx2") static void taps_gather_avx2(GATHER_ARGS) { taps_gather_body(GATHER_CALL); }
WSIDET_TARGET("avx2") static void taps_scatter_avx2(SCATTER_ARGS) { taps_scatter_body(SCATTER_CALL); }
WSIDET_TARGET("avx512f") static void taps_gather_avx512(GATHER_ARGS) { taps_gather_body(GATHER_CALL); }
WSIDET_TARGET("avx512f") static void taps_scatter_avx512(SCATTER_ARGS) { taps_scatter_body(SCATTER_CALL); }
#endif

typedef struct {
  const char *name;
  void (*nms_row)(NMS_ROW_ARGS);
  void (*gather)(GATHER_ARGS);
  void (*scatter)(SCATTER_ARGS);
} Kernels;

static const Kernels k_base = {"baseline", nms_row_base, taps_gather_base, taps_scatter_base};
#if WSIDET_X86
static const Kernels k_avx2 = {"avx2", nms_row_avx2, taps_gather_avx2, taps_scatter_avx2};
static const Kernels k_avx512 = {"avx512", nms_row_avx512, taps_gather_avx512,
                                 taps_scatter_avx512};
#endif
static const Kernels *volatile kern;

/* The best kernels the CPU runs, at most `cap` ("avx512", "avx2", "baseline"). */
static const Kernels *pick_kernels(const char *cap)
{
#if WSIDET_X86
  int level = 2;
  if (cap && !strcmp(cap, "avx2"))
    level = 1;
  else if (cap && (!strcmp(cap, "baseline") || !strcmp(cap, "sse2") || !strcmp(cap, "default")))
    level = 0;
  __builtin_cpu_init();
  if (level >= 2 && __builtin_cpu_supports("avx512f"))
    return &k_avx512;
  if (level >= 1 && __builtin_cpu_supports("avx2"))
    return &k_avx2;
#else
  (void)cap;
#endif
  return &k_base;
}

static const Kernels *kernels(void)
{
  const Kernels *k = kern;
  if (!k) /* benign race: every thread computes the same pointer */
    kern = k = pick_kernels(getenv("WSIDET_MAX_ISA"));
  return k;
}

const char *wsidet_isa(void)
{
  return kernels()->name;
}

const char *wsidet_set_isa(const char *max_isa)
{
  kern = pick_kernels(max_isa ? max_isa : getenv("WSIDET_MAX_ISA"));
  return kern->name;
}

/* Greedy NMS on m boxes (SoA, score order); kept[t] = 1 for kept ones. */
static void nms_sorted(const float *x1, const float *y1, const float *x2, const float *y2,
                       const float *area, int m, double thr, uint8_t *supp, uint8_t *kept)
{
  memset(supp, 0, (size_t)m);
  for (int t = 0; t < m; t++) {
    if (supp[t])
      continue;
    kept[t] = 1;
    kernels()->nms_row(x1, y1, x2, y2, area, t + 1, m, x1[t], y1[t], x2[t], y2[t], area[t], thr,
                       supp);
  }
}

typedef struct {
  int32_t g;   /* group */
  int32_t p;   /* position in score order */
} GroupPos;

static int cmp_group_pos(const void *pa, const void *pb)
{
  const GroupPos *a = pa, *b = pb;
  if (a->g != b->g)
    return (a->g > b->g) - (a->g < b->g);
  return (a->p > b->p) - (a->p < b->p);
}

static int nms_impl(const float *boxes, const float *scores, const int32_t *idxs, int n,
                    double thr, int32_t *keep)
{
  if (n <= 0)
    return 0;
  if (!boxes || !scores || !keep)
    return -1;
  ScoreIdx *ord = sorted_scores(scores, n);
  float *soa = malloc(sizeof(float) * 5 * (size_t)n);
  uint8_t *flags = calloc(2 * (size_t)n, 1);
  GroupPos *gp = idxs ? malloc(sizeof(*gp) * (size_t)n) : NULL;
  if (!ord || !soa || !flags || (idxs && !gp)) {
    free(ord), free(soa), free(flags), free(gp);
    return -1;
  }
  uint8_t *kept = flags, *supp = flags + n;
  float *x1 = soa, *y1 = soa + n, *x2 = soa + 2 * n, *y2 = soa + 3 * n, *ar = soa + 4 * n;
  if (!idxs) {
    for (int t = 0; t < n; t++) {
      const float *b = boxes + 4 * (size_t)ord[t].i;
      x1[t] = b[0], y1[t] = b[1], x2[t] = b[2], y2[t] = b[3];
      ar[t] = (b[2] - b[0]) * (b[3] - b[1]);
    }
    nms_sorted(x1, y1, x2, y2, ar, n, thr, supp, kept);
  } else {
    /* per group: its boxes in score order, gathered contiguously */
    for (int t = 0; t < n; t++) {
      gp[t].g = idxs[ord[t].i];
      gp[t].p = t;
    }
    qsort(gp, (size_t)n, sizeof(*gp), cmp_group_pos);
    uint8_t *gk = malloc((size_t)n);
    if (!gk) {
      free(ord), free(soa), free(flags), free(gp);
      return -1;
    }
    for (int s = 0; s < n;) {
      int e = s;
      while (e < n && gp[e].g == gp[s].g)
        e++;
      int m = e - s;
      if (m <= 0)
        break;
      for (int t = 0; t < m; t++) {
        const float *b = boxes + 4 * (size_t)ord[gp[s + t].p].i;
        x1[t] = b[0], y1[t] = b[1], x2[t] = b[2], y2[t] = b[3];
        ar[t] = (b[2] - b[0]) * (b[3] - b[1]);
      }
      memset(gk, 0, (size_t)m);
      nms_sorted(x1, y1, x2, y2, ar, m, thr, supp, gk);
      for (int t = 0; t < m; t++)
        kept[gp[s + t].p] = gk[t];
      s = e;
    }
    free(gk);
  }
  int nk = 0;
  for (int t = 0; t < n; t++)
    if (kept[t])
      keep[nk++] = ord[t].i;
  free(ord), free(soa), free(flags), free(gp);
  return nk;
}

int wsidet_nms(const float *boxes, const float *scores, int n, double iou_threshold,
               int32_t *keep)
{
  return nms_impl(boxes, scores, NULL, n, iou_threshold, keep);
}

int wsidet_batched_nms(const float *boxes, const float *scores, const int32_t *idxs, int n,
                       double iou_threshold, int32_t *keep)
{
  if (n > 0 && !idxs)
    return -1;
  return nms_impl(boxes, scores, idxs, n, iou_threshold, keep);
}

int wsidet_topk(const float *scores, int n, int k, int32_t *idx)
{
  if (n <= 0 || k <= 0)
    return 0;
  ScoreIdx *ord = sorted_scores(scores, n);
  if (!ord)
    return -1;
  int m = k < n ? k : n;
  for (int t = 0; t < m; t++)
    idx[t] = ord[t].i;
  free(ord);
  return m;
}

int wsidet_topk_per_level(const float *scores, const int *level_sizes, int n_levels, int k,
                          int32_t *idx)
{
  int off = 0, m = 0;
  for (int l = 0; l < n_levels; l++) {
    int r = wsidet_topk(scores + off, level_sizes[l], k, idx + m);
    if (r < 0)
      return -1;
    for (int t = 0; t < r; t++)
      idx[m + t] += off;
    m += r;
    off += level_sizes[l];
  }
  return m;
}

int wsidet_rpn_proposals(const WsidetRpnParams *p, const float *objectness, const float *deltas,
                         const float *anchors, const int *level_sizes, int n_levels,
                         int image_h, int image_w, float *out_boxes, float *out_scores)
{
  if (!p || n_levels < 0 || (n_levels > 0 && !level_sizes))
    return -1;
  int total = 0;
  for (int l = 0; l < n_levels; l++) {
    if (level_sizes[l] < 0)
      return -1;
    total += level_sizes[l];
  }
  if (total == 0 || p->post_nms_top_n <= 0)
    return 0;
  int32_t *idx = malloc(sizeof(int32_t) * (size_t)total * 3);
  float *bx = malloc(sizeof(float) * (size_t)total * 5);
  if (!idx || !bx) {
    free(idx), free(bx);
    return -1;
  }
  int32_t *lvl = idx + total, *keep = idx + 2 * total;
  float *sc = bx + 4 * (size_t)total;
  int m = wsidet_topk_per_level(objectness, level_sizes, n_levels, p->pre_nms_top_n, idx);
  if (m < 0) {
    free(idx), free(bx);
    return -1;
  }
  WsidetBoxCoder bc;
  wsidet_box_coder_init(&bc, 1, 1, 1, 1);
  /* level of each selected anchor, and its decoded box and probability */
  int l = 0, end = n_levels ? level_sizes[0] : 0, q = 0;
  for (int t = 0; t < m; t++) {
    while (idx[t] >= end && l + 1 < n_levels)
      end += level_sizes[++l];
    int i = idx[t];
    float b[4];
    wsidet_box_decode(&bc, deltas + 4 * (size_t)i, 1, anchors + 4 * (size_t)i, 1, b);
    wsidet_clip_boxes(b, 1, image_h, image_w);
    float s = (float)(1.0 / (1.0 + exp(-(double)objectness[i])));
    if (!(b[2] - b[0] >= p->min_size && b[3] - b[1] >= p->min_size) || !(s >= p->score_thresh))
      continue;
    memcpy(bx + 4 * (size_t)q, b, sizeof(b));
    sc[q] = s;
    lvl[q] = l;
    q++;
  }
  int nk = wsidet_batched_nms(bx, sc, lvl, q, p->nms_thresh, keep);
  if (nk < 0) {
    free(idx), free(bx);
    return -1;
  }
  if (nk > p->post_nms_top_n)
    nk = p->post_nms_top_n;
  for (int t = 0; t < nk; t++) {
    memcpy(out_boxes + 4 * (size_t)t, bx + 4 * (size_t)keep[t], 4 * sizeof(float));
    out_scores[t] = sc[keep[t]];
  }
  free(idx), free(bx);
  return nk;
}

int wsidet_postprocess_detections(const WsidetDetParams *p, const WsidetBoxCoder *bc,
                                  const float *class_logits, const float *box_regression,
                                  const float *proposals, int n, int n_classes, int image_h,
                                  int image_w, float *out_boxes, float *out_scores,
                                  int32_t *out_labels)
{
  if (!p || !bc || n < 0 || n_classes < 1)
    return -1;
  int cap = n * (n_classes - 1);
  if (cap == 0 || p->detections_per_img <= 0)
    return 0;
  float *bx = malloc(sizeof(float) * (size_t)cap * 5 + sizeof(float) * (size_t)n_classes * 5);
  int32_t *lab = malloc(sizeof(int32_t) * (size_t)cap * 2);
  if (!bx || !lab) {
    free(bx), free(lab);
    return -1;
  }
  float *sc = bx + 4 * (size_t)cap, *dec = sc + cap, *prob = dec + 4 * (size_t)n_classes;
  int32_t *keep = lab + cap;
  int q = 0;
  for (int i = 0; i < n; i++) {
    const float *lg = class_logits + (size_t)i * n_classes;
    double mx = lg[0], z = 0.0;
    for (int j = 1; j < n_classes; j++)
      mx = lg[j] > mx ? lg[j] : mx;
    for (int j = 0; j < n_classes; j++)
      z += exp(lg[j] - mx);
    for (int j = 0; j < n_classes; j++)
      prob[j] = (float)(exp(lg[j] - mx) / z);
    wsidet_box_decode(bc, box_regression + (size_t)i * n_classes * 4, n_classes,
                      proposals + 4 * (size_t)i, 1, dec);
    wsidet_clip_boxes(dec, n_classes, image_h, image_w);
    for (int j = 1; j < n_classes; j++) {
      const float *b = dec + 4 * j;
      if (!(prob[j] > p->score_thresh))
        continue;
      if (!(b[2] - b[0] >= p->min_size && b[3] - b[1] >= p->min_size))
        continue;
      memcpy(bx + 4 * (size_t)q, b, 4 * sizeof(float));
      sc[q] = prob[j];
      lab[q] = j;
      q++;
    }
  }
  int nk = wsidet_batched_nms(bx, sc, lab, q, p->nms_thresh, keep);
  if (nk < 0) {
    free(bx), free(lab);
    return -1;
  }
  if (nk > p->detections_per_img)
    nk = p->detections_per_img;
  for (int t = 0; t < nk; t++) {
    memcpy(out_boxes + 4 * (size_t)t, bx + 4 * (size_t)keep[t], 4 * sizeof(float));
    out_scores[t] = sc[keep[t]];
    out_labels[t] = lab[keep[t]];
  }
  free(bx), free(lab);
  return nk;
}

/* Source index and weights of output pixel i when resizing in -> out (PyTorch's
 * upsample_bilinear2d, align_corners=False). */
static void lin_src(int in, int out, int i, int *i0, int *i1, float *l0, float *l1)
{
  if (in == out) {
    *i0 = *i1 = i;
    *l0 = 1.0f, *l1 = 0.0f;
    return;
  }
  float scale = (float)in / (float)out;
  float r = (float)((double)scale * (i + 0.5) - 0.5);
  if (r < 0)
    r = 0;
  *i0 = (int)r;
  *i1 = *i0 + (*i0 < in - 1 ? 1 : 0);
  float l = r - (float)*i0;
  l = l < 0 ? 0 : (l > 1 ? 1 : l);
  *l1 = l;
  *l0 = 1.0f - l;
}

int wsidet_paste_masks(const float *masks, const float *boxes, int k, int m, int padding,
                       int im_h, int im_w, float *out)
{
  if (k <= 0)
    return 0;
  if (!masks || !boxes || !out || m <= 0 || padding < 0 || im_h <= 0 || im_w <= 0)
    return -1;
  const int P = m + 2 * padding;
  float scale = (float)((double)P / m);
  float *pad = calloc((size_t)P * P, sizeof(float));
  if (!pad)
    return -1;
  for (int r = 0; r < k; r++) {
    float *o = out + (size_t)r * im_h * im_w;
    memset(o, 0, sizeof(float) * (size_t)im_h * im_w);
    for (int y = 0; y < m; y++)
      memcpy(pad + (size_t)(y + padding) * P + padding, masks + ((size_t)r * m + y) * m,
             sizeof(float) * m);
    const float *b = boxes + 4 * (size_t)r;
    float wh = (b[2] - b[0]) * 0.5f, hh = (b[3] - b[1]) * 0.5f;
    float xc = (b[2] + b[0]) * 0.5f, yc = (b[3] + b[1]) * 0.5f;
    wh *= scale;
    hh *= scale;
    int64_t bx0 = (int64_t)(xc - wh), bx1 = (int64_t)(xc + wh);
    int64_t by0 = (int64_t)(yc - hh), by1 = (int64_t)(yc + hh);
    int64_t w = bx1 - bx0 + 1, h = by1 - by0 + 1;
    w = w > 1 ? w : 1;
    h = h > 1 ? h : 1;
    int64_t x0 = bx0 > 0 ? bx0 : 0, x1 = bx1 + 1 < im_w ? bx1 + 1 : im_w;
    int64_t y0 = by0 > 0 ? by0 : 0, y1 = by1 + 1 < im_h ? by1 + 1 : im_h;
    for (int64_t y = y0; y < y1; y++) {
      int ya, yb;
      float la, lb;
      lin_src(P, (int)h, (int)(y - by0), &ya, &yb, &la, &lb);
      for (int64_t x = x0; x < x1; x++) {
        int xa, xb;
        float ka, kb;
        lin_src(P, (int)w, (int)(x - bx0), &xa, &xb, &ka, &kb);
        o[y * im_w + x] = la * (ka * pad[ya * P + xa] + kb * pad[ya * P + xb]) +
                          lb * (ka * pad[yb * P + xa] + kb * pad[yb * P + xb]);
      }
    }
  }
  free(pad);
  return 0;
}

/* ---- 4. Matcher and sampler -------------------------------------------------------- */

int wsidet_match(const float *quality, int n_gt, int n_pred, float high, float low,
                 int allow_low_quality, int32_t *matches)
{
  if (n_pred <= 0)
    return 0;
  if (!matches || (n_gt > 0 && !quality) || low > high)
    return -1;
  if (n_gt <= 0) {
    for (int j = 0; j < n_pred; j++)
      matches[j] = WSIDET_BELOW_LOW_THRESHOLD;
    return 0;
  }
  float *best = malloc(sizeof(float) * (size_t)n_pred);
  int32_t *all = malloc(sizeof(int32_t) * (size_t)n_pred);
  if (!best || !all) {
    free(best), free(all);
    return -1;
  }
  for (int j = 0; j < n_pred; j++) {
    float v = quality[j];
    int a = 0;
    for (int g = 1; g < n_gt; g++) {
      float q = quality[(size_t)g * n_pred + j];
      if (q > v || (isnan(q) && !isnan(v))) {
        v = q;
        a = g;
      }
    }
    best[j] = v;
    all[j] = a;
    matches[j] = a;
    if (v < low)
      matches[j] = WSIDET_BELOW_LOW_THRESHOLD;
    else if (v >= low && v < high)
      matches[j] = WSIDET_BETWEEN_THRESHOLDS;
  }
  if (allow_low_quality) {
    for (int g = 0; g < n_gt; g++) {
      const float *row = quality + (size_t)g * n_pred;
      float hi = row[0];
      for (int j = 1; j < n_pred; j++)
        if (row[j] > hi || (isnan(row[j]) && !isnan(hi)))
          hi = row[j];
      for (int j = 0; j < n_pred; j++)
        if (row[j] == hi)
          matches[j] = all[j];
    }
  }
  free(best), free(all);
  return 0;
}

void wsidet_match_labels(const int32_t *matches, int n, const int32_t *gt_labels,
                         int32_t *labels)
{
  for (int j = 0; j < n; j++) {
    int32_t m = matches[j];
    if (m >= 0)
      labels[j] = gt_labels ? gt_labels[m] : 1;
    else if (m == WSIDET_BELOW_LOW_THRESHOLD)
      labels[j] = 0;
    else
      labels[j] = -1;
  }
}

void wsidet_rng_seed(WsidetRng *rng, uint64_t seed)
{
  rng->s = seed;
}

uint64_t wsidet_rng_next(WsidetRng *rng)
{
  uint64_t z = (rng->s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint32_t wsidet_rng_below(WsidetRng *rng, uint32_t n)
{
  return (uint32_t)(((wsidet_rng_next(rng) >> 32) * (uint64_t)n) >> 32);
}

/* Fisher-Yates from the front over a[0..n), only the first k positions. */
static void partial_shuffle(WsidetRng *rng, int32_t *a, int n, int k)
{
  for (int i = 0; i < k && i < n - 1; i++) {
    int j = i + (int)wsidet_rng_below(rng, (uint32_t)(n - i));
    int32_t t = a[i];
    a[i] = a[j];
    a[j] = t;
  }
}

void wsidet_randperm(WsidetRng *rng, int n, int32_t *perm)
{
  for (int i = 0; i < n; i++)
    perm[i] = i;
  partial_shuffle(rng, perm, n, n);
}

int wsidet_sample_pos_neg(const int32_t *labels, int n, int batch_size, double pos_fraction,
                          WsidetRng *rng, uint8_t *pos_mask, uint8_t *neg_mask,
                          int32_t *pos_idx, int *n_pos, int32_t *neg_idx, int *n_neg)
{
  if (n < 0 || !rng || (n > 0 && !labels))
    return -1;
  int32_t *pos = malloc(sizeof(int32_t) * (size_t)(n + 1));
  int32_t *neg = malloc(sizeof(int32_t) * (size_t)(n + 1));
  uint8_t *pm = malloc((size_t)n + 1), *nm = malloc((size_t)n + 1);
  if (!pos || !neg || !pm || !nm) {
    free(pos), free(neg), free(pm), free(nm);
    return -1;
  }
  int np = 0, nn = 0;
  for (int i = 0; i < n; i++) {
    if (labels[i] >= 1)
      pos[np++] = i;
    else if (labels[i] == 0)
      neg[nn++] = i;
  }
  int want_pos = (int)(batch_size * pos_fraction);
  int kp = np < want_pos ? np : want_pos;
  if (kp < 0)
    kp = 0;
  int want_neg = batch_size - kp;
  int kn = nn < want_neg ? nn : want_neg;
  if (kn < 0)
    kn = 0;
  WsidetRng rp, rn;
  wsidet_rng_seed(&rp, wsidet_rng_next(rng));
  wsidet_rng_seed(&rn, wsidet_rng_next(rng));
  partial_shuffle(&rp, pos, np, kp);
  partial_shuffle(&rn, neg, nn, kn);
  memset(pm, 0, (size_t)n);
  memset(nm, 0, (size_t)n);
  for (int t = 0; t < kp; t++)
    pm[pos[t]] = 1;
  for (int t = 0; t < kn; t++)
    nm[neg[t]] = 1;
  int a = 0, b = 0;
  for (int i = 0; i < n; i++) {
    if (pm[i] && pos_idx)
      pos_idx[a++] = i;
    if (nm[i] && neg_idx)
      neg_idx[b++] = i;
  }
  if (pos_mask)
    memcpy(pos_mask, pm, (size_t)n);
  if (neg_mask)
    memcpy(neg_mask, nm, (size_t)n);
  if (n_pos)
    *n_pos = kp;
  if (n_neg)
    *n_neg = kn;
  free(pos), free(neg), free(pm), free(nm);
  return 0;
}

int wsidet_rpn_targets(const float *anchors, int n, const float *gt, int n_gt, float high,
                       float low, float *labels, float *targets)
{
  if (n <= 0)
    return 0;
  if (!anchors || !labels || !targets || n_gt < 0 || (n_gt > 0 && !gt))
    return -1;
  static const float zero_box[4] = {0, 0, 0, 0};
  WsidetBoxCoder bc;
  wsidet_box_coder_init(&bc, 1, 1, 1, 1);
  if (n_gt == 0) {
    for (int i = 0; i < n; i++) {
      labels[i] = 0.0f;
      wsidet_box_encode(&bc, zero_box, anchors + 4 * (size_t)i, 1, targets + 4 * (size_t)i);
    }
    return 0;
  }
  float *q = malloc(sizeof(float) * (size_t)n_gt * n);
  int32_t *m = malloc(sizeof(int32_t) * (size_t)n);
  if (!q || !m) {
    free(q), free(m);
    return -1;
  }
  wsidet_box_iou(gt, n_gt, anchors, n, q);
  int r = wsidet_match(q, n_gt, n, high, low, 1, m);
  if (r == 0)
    for (int i = 0; i < n; i++) {
      int g = m[i] > 0 ? m[i] : 0;
      labels[i] = m[i] >= 0 ? 1.0f : (m[i] == WSIDET_BELOW_LOW_THRESHOLD ? 0.0f : -1.0f);
      wsidet_box_encode(&bc, gt + 4 * (size_t)g, anchors + 4 * (size_t)i, 1,
                        targets + 4 * (size_t)i);
    }
  free(q), free(m);
  return r;
}

int wsidet_roi_targets(const float *proposals, int n_prop, const float *gt,
                       const int32_t *gt_labels, int n_gt, float fg_iou, float bg_iou,
                       int batch_size, double pos_fraction, const WsidetBoxCoder *bc,
                       WsidetRng *rng, float *out_rois, int32_t *out_labels,
                       int32_t *out_matched, float *out_targets)
{
  if (n_prop < 0 || n_gt < 0 || !bc || !rng || (n_prop > 0 && !proposals) ||
      (n_gt > 0 && (!gt || !gt_labels)))
    return -1;
  int n = n_prop + n_gt;
  if (n == 0)
    return 0;
  float *all = malloc(sizeof(float) * 4 * (size_t)n);
  float *q = n_gt ? malloc(sizeof(float) * (size_t)n_gt * n) : NULL;
  int32_t *m = malloc(sizeof(int32_t) * (size_t)n * 3);
  if (!all || !m || (n_gt && !q)) {
    free(all), free(q), free(m);
    return -1;
  }
  int32_t *lab = m + n, *idx = m + 2 * (size_t)n;
  if (n_prop)
    memcpy(all, proposals, sizeof(float) * 4 * (size_t)n_prop);
  if (n_gt)
    memcpy(all + 4 * (size_t)n_prop, gt, sizeof(float) * 4 * (size_t)n_gt);
  int r = 0;
  if (n_gt) {
    wsidet_box_iou(gt, n_gt, all, n, q);
    r = wsidet_match(q, n_gt, n, fg_iou, bg_iou, 0, m);
    if (r == 0)
      wsidet_match_labels(m, n, gt_labels, lab);
  } else {
    for (int i = 0; i < n; i++)
      m[i] = 0, lab[i] = 0;
  }
  int np = 0, nn = 0;
  uint8_t *pm = malloc((size_t)n * 2);
  if (r == 0 && pm)
    r = wsidet_sample_pos_neg(lab, n, batch_size, pos_fraction, rng, pm, pm + n, NULL, &np,
                              NULL, &nn);
  else
    r = -1;
  int cnt = 0;
  if (r == 0) {
    static const float zero_box[4] = {0, 0, 0, 0};
    for (int i = 0; i < n; i++)
      if (pm[i] || pm[n + i])
        idx[cnt++] = i;
    for (int t = 0; t < cnt; t++) {
      int i = idx[t];
      int g = m[i] > 0 ? m[i] : 0;
      memcpy(out_rois + 4 * (size_t)t, all + 4 * (size_t)i, 4 * sizeof(float));
      out_labels[t] = lab[i];
      out_matched[t] = g;
      wsidet_box_encode(bc, n_gt ? gt + 4 * (size_t)g : zero_box, all + 4 * (size_t)i, 1,
                        out_targets + 4 * (size_t)t);
    }
  }
  free(all), free(q), free(m), free(pm);
  return r == 0 ? cnt : -1;
}

/* ---- 5. RoIAlign ------------------------------------------------------------------- */

/* Geometry of one RoI, as torchvision's roi_align_kernel.cpp computes it (float). */
typedef struct {
  int b;
  float start_h, start_w, bin_h, bin_w;
  int grid_h, grid_w;
  int count;
} RoiGeom;

static void roi_geom(const WsidetRoiAlign *p, const float *roi, RoiGeom *g)
{
  float off = p->aligned ? 0.5f : 0.0f;
  float sc = p->spatial_scale;
  /* a batch index that is not a number in range pools nothing (zeros) */
  g->b = roi[0] >= 0.0f && roi[0] < 2147483647.0f ? (int)roi[0] : -1;
  g->start_w = roi[1] * sc - off;
  g->start_h = roi[2] * sc - off;
  float end_w = roi[3] * sc - off;
  float end_h = roi[4] * sc - off;
  float rw = end_w - g->start_w, rh = end_h - g->start_h;
  if (!p->aligned) {
    rw = rw > 1.0f ? rw : 1.0f;
    rh = rh > 1.0f ? rh : 1.0f;
  }
  g->bin_h = rh / (float)p->pooled_h;
  g->bin_w = rw / (float)p->pooled_w;
  float gh = p->sampling_ratio > 0 ? (float)p->sampling_ratio : ceilf(rh / (float)p->pooled_h);
  float gw = p->sampling_ratio > 0 ? (float)p->sampling_ratio : ceilf(rw / (float)p->pooled_w);
  /* NaN / infinite / absurd sizes: no samples (zeros) instead of an endless loop;
   * negative grids (inverted aligned RoIs) sample nothing in torchvision either */
  if (!(gh >= 0.0f && gh < 65536.0f) || !(gw >= 0.0f && gw < 65536.0f) || isnan(g->start_h) ||
      isnan(g->start_w) || isnan(g->bin_h) || isnan(g->bin_w))
    gh = gw = 0.0f;
  g->grid_h = (int)gh;
  g->grid_w = (int)gw;
  int c = g->grid_h * g->grid_w;
  g->count = c > 1 ? c : 1;
}

typedef struct {
  int p1, p2, p3, p4;      /* pixel offsets (y*w + x) */
  float w1, w2, w3, w4;
} Taps;

/* Bilinear taps of sample (y, x); 0 when the sample is outside the map. */
static inline int sample_taps(int height, int width, float y, float x, Taps *t)
{
  if (y < -1.0f || y > (float)height || x < -1.0f || x > (float)width)
    return 0;
  if (y <= 0)
    y = 0;
  if (x <= 0)
    x = 0;
  int yl = (int)y, xl = (int)x, yh, xh;
  if (yl >= height - 1) {
    yh = yl = height - 1;
    y = (float)yl;
  } else
    yh = yl + 1;
  if (xl >= width - 1) {
    xh = xl = width - 1;
    x = (float)xl;
  } else
    xh = xl + 1;
  float ly = y - (float)yl, lx = x - (float)xl;
  float hy = (float)(1.0 - (double)ly), hx = (float)(1.0 - (double)lx);
  t->w1 = hy * hx, t->w2 = hy * lx, t->w3 = ly * hx, t->w4 = ly * lx;
  t->p1 = yl * width + xl, t->p2 = yl * width + xh;
  t->p3 = yh * width + xl, t->p4 = yh * width + xh;
  return 1;
}

static inline float sample_y(const RoiGeom *g, int ph, int iy)
{
  return g->start_h + (float)ph * g->bin_h +
         (float)(iy + .5f) * g->bin_h / (float)g->grid_h;
}

static inline float sample_x(const RoiGeom *g, int pw, int ix)
{
  return g->start_w + (float)pw * g->bin_w +
         (float)(ix + .5f) * g->bin_w / (float)g->grid_w;
}

static int roialign_check(const WsidetRoiAlign *p, int n, int c, int h, int w, int k)
{
  if (!p || n < 0 || c < 0 || h <= 0 || w <= 0 || k < 0 || p->pooled_h <= 0 ||
      p->pooled_w <= 0)
    return -1;
  return 0;
}

/* Forward on NHWC input for the RoIs sel[0..ns) (all when sel is NULL: ns = k). */
static int roi_fwd_nhwc(const WsidetRoiAlign *p, const float *in, int n, int c, int h, int w,
                        const float *rois, const int32_t *sel, int ns, float *out)
{
  const int PH = p->pooled_h, PW = p->pooled_w, nb = PH * PW;
  const Kernels *kn = kernels();
  int err = 0;
  double work = (double)ns * nb * c;
#pragma omp parallel if (work > 200000.0)
  {
    float *acc = malloc(sizeof(float) * (size_t)(c > 0 ? c : 1));
    if (!acc) {
#pragma omp atomic write
      err = 1;
    }
#pragma omp for schedule(dynamic, 2)
    for (int s = 0; s < ns; s++) {
      if (!acc)
        continue;
      int r = sel ? sel[s] : s;
      RoiGeom g;
      roi_geom(p, rois + 5 * (size_t)r, &g);
      float *o = out + (size_t)r * c * nb;
      if (g.b < 0 || g.b >= n) {
        for (size_t t = 0; t < (size_t)c * nb; t++)
          o[t] = 0.0f;
        continue;
      }
      const float *base = in + (size_t)g.b * h * w * c;
      float cnt = (float)g.count;
      for (int ph = 0; ph < PH; ph++)
        for (int pw = 0; pw < PW; pw++) {
          memset(acc, 0, sizeof(float) * (size_t)c);
          for (int iy = 0; iy < g.grid_h; iy++) {
            float y = sample_y(&g, ph, iy);
            for (int ix = 0; ix < g.grid_w; ix++) {
              Taps t;
              if (!sample_taps(h, w, y, sample_x(&g, pw, ix), &t))
                continue;
              kn->gather(acc, base + (size_t)t.p1 * c, base + (size_t)t.p2 * c,
                          base + (size_t)t.p3 * c, base + (size_t)t.p4 * c, t.w1, t.w2,
                          t.w3, t.w4, c);
            }
          }
          float *ob = o + ph * PW + pw;
          for (int ch = 0; ch < c; ch++)
            ob[(size_t)ch * nb] = acc[ch] / cnt;
        }
    }
    free(acc);
  }
  return err ? -1 : 0;
}


/* Backward into NHWC gradient (accumulated). Threads own channel blocks; within a block
 * the RoIs, bins and samples are visited in order, so every channel's sum has the same
 * order whatever the block size: deterministic for any thread count. */
static int roi_bwd_nhwc(const WsidetRoiAlign *p, const float *gout, int n, int c, int h,
                        int w, const float *rois, const int32_t *sel, int ns, float *gin)
{
  const int PH = p->pooled_h, PW = p->pooled_w, nb = PH * PW;
  const Kernels *kn = kernels();
  int nthr = 1;
#ifdef _OPENMP
  nthr = omp_get_max_threads();
#endif
  /* one block per thread (multiples of 16 channels, at least 16) */
  int CB = (c + nthr - 1) / nthr;
  CB = (CB + 15) / 16 * 16;
  if (CB < 16)
    CB = 16;
  int nblk = (c + CB - 1) / CB;
  int err = 0;
  double work = (double)ns * nb * c;
#pragma omp parallel if (work > 200000.0 && nblk > 1)
  {
    float *gb = malloc(sizeof(float) * (size_t)nb * CB);
    if (!gb) {
#pragma omp atomic write
      err = 1;
    }
#pragma omp for schedule(dynamic, 1)
    for (int blk = 0; blk < nblk; blk++) {
      if (!gb)
        continue;
      int c0 = blk * CB;
      int cn = c - c0 < CB ? c - c0 : CB;
      for (int s = 0; s < ns; s++) {
        int r = sel ? sel[s] : s;
        RoiGeom g;
        roi_geom(p, rois + 5 * (size_t)r, &g);
        if (g.b < 0 || g.b >= n)
          continue;
        const float *go = gout + ((size_t)r * c + c0) * nb;
        /* [cn][nb] -> [nb][CB] in 16-channel strips (16 read streams, 64-byte writes) */
        for (int c16 = 0; c16 < cn; c16 += 16) {
          int ce = c16 + 16 < cn ? c16 + 16 : cn;
          for (int bi = 0; bi < nb; bi++)
            for (int cc = c16; cc < ce; cc++)
              gb[bi * CB + cc] = go[(size_t)cc * nb + bi];
        }
        float *base = gin + (size_t)g.b * h * w * c + c0;
        float cnt = (float)g.count;
        for (int ph = 0; ph < PH; ph++)
          for (int pw = 0; pw < PW; pw++) {
            const float *gv = gb + (ph * PW + pw) * CB;
            for (int iy = 0; iy < g.grid_h; iy++) {
              float y = sample_y(&g, ph, iy);
              for (int ix = 0; ix < g.grid_w; ix++) {
                Taps t;
                if (!sample_taps(h, w, y, sample_x(&g, pw, ix), &t))
                  continue;
                kn->scatter(base + (size_t)t.p1 * c, base + (size_t)t.p2 * c,
                             base + (size_t)t.p3 * c, base + (size_t)t.p4 * c, gv,
                             t.w1 / cnt, t.w2 / cnt, t.w3 / cnt, t.w4 / cnt, cn);
              }
            }
          }
      }
    }
    free(gb);
  }
  return err ? -1 : 0;
}

/* [n, c, hw] <-> [n, hw, c], tiled. to_nhwc: dst[n][hw][c] = src[n][c][hw];
 * else dst[n][c][hw] += src[n][hw][c]. */
static void transpose_maps(const float *src, float *dst, int n, int c, int hw, int to_nhwc)
{
  const int T = 32;
  int tiles_c = (c + T - 1) / T, tiles_p = (hw + T - 1) / T;
  long total = (long)n * tiles_c * tiles_p;
#pragma omp parallel for schedule(static) if (total > 64 && (double)n * c * hw > 262144.0)
  for (long t = 0; t < total; t++) {
    int b = (int)(t / ((long)tiles_c * tiles_p));
    int rem = (int)(t % ((long)tiles_c * tiles_p));
    int c0 = (rem / tiles_p) * T, p0 = (rem % tiles_p) * T;
    int c1 = c0 + T < c ? c0 + T : c, p1 = p0 + T < hw ? p0 + T : hw;
    const float *s = src + (size_t)b * c * hw;
    float *d = dst + (size_t)b * c * hw;
    if (to_nhwc) {
      for (int ch = c0; ch < c1; ch++)
        for (int q = p0; q < p1; q++)
          d[(size_t)q * c + ch] = s[(size_t)ch * hw + q];
    } else {
      for (int ch = c0; ch < c1; ch++)
        for (int q = p0; q < p1; q++)
          d[(size_t)ch * hw + q] += s[(size_t)q * c + ch];
    }
  }
}

static int roi_fwd_nchw(const WsidetRoiAlign *p, const float *in, int n, int c, int h, int w,
                        const float *rois, const int32_t *sel, int ns, float *out)
{
  if (ns == 0)
    return 0;
  if (c == 1)
    return roi_fwd_nhwc(p, in, n, c, h, w, rois, sel, ns, out);
  float *t = malloc(sizeof(float) * (size_t)n * c * h * w + 1);
  if (!t)
    return -1;
  transpose_maps(in, t, n, c, h * w, 1);
  int r = roi_fwd_nhwc(p, t, n, c, h, w, rois, sel, ns, out);
  free(t);
  return r;
}

static int roi_bwd_nchw(const WsidetRoiAlign *p, const float *gout, int n, int c, int h,
                        int w, const float *rois, const int32_t *sel, int ns, float *gin)
{
  if (ns == 0)
    return 0;
  if (c == 1)
    return roi_bwd_nhwc(p, gout, n, c, h, w, rois, sel, ns, gin);
  float *t = calloc((size_t)n * c * h * w + 1, sizeof(float));
  if (!t)
    return -1;
  int r = roi_bwd_nhwc(p, gout, n, c, h, w, rois, sel, ns, t);
  if (r == 0)
    transpose_maps(t, gin, n, c, h * w, 0);
  free(t);
  return r;
}

int wsidet_roi_align_forward(const WsidetRoiAlign *p, const float *input, int n, int c, int h,
                             int w, const float *rois, int k, float *output)
{
  if (roialign_check(p, n, c, h, w, k) || (k > 0 && (!input || !rois || !output)))
    return -1;
  return roi_fwd_nchw(p, input, n, c, h, w, rois, NULL, k, output);
}

int wsidet_roi_align_backward(const WsidetRoiAlign *p, const float *grad_output, int n, int c,
                              int h, int w, const float *rois, int k, float *grad_input)
{
  if (roialign_check(p, n, c, h, w, k) || (k > 0 && (!grad_output || !rois || !grad_input)))
    return -1;
  return roi_bwd_nchw(p, grad_output, n, c, h, w, rois, NULL, k, grad_input);
}

int wsidet_roi_align_forward_nhwc(const WsidetRoiAlign *p, const float *input, int n, int c,
                                  int h, int w, const float *rois, int k, float *output)
{
  if (roialign_check(p, n, c, h, w, k) || (k > 0 && (!input || !rois || !output)))
    return -1;
  return roi_fwd_nhwc(p, input, n, c, h, w, rois, NULL, k, output);
}

int wsidet_roi_align_backward_nhwc(const WsidetRoiAlign *p, const float *grad_output, int n,
                                   int c, int h, int w, const float *rois, int k,
                                   float *grad_input)
{
  if (roialign_check(p, n, c, h, w, k) || (k > 0 && (!grad_output || !rois || !grad_input)))
    return -1;
  return roi_bwd_nhwc(p, grad_output, n, c, h, w, rois, NULL, k, grad_input);
}

double wsidet_infer_scale(int feat_h, int image_h)
{
  double approx = (double)feat_h / (double)image_h;
  float l = nearbyintf(log2f((float)approx));
  return pow(2.0, (double)l);
}

void wsidet_level_mapper_init(WsidetLevelMapper *m, double scale_first, double scale_last)
{
  m->k_min = (int)(-(double)log2f((float)scale_first));
  m->k_max = (int)(-(double)log2f((float)scale_last));
  m->canonical_scale = 224.0f;
  m->canonical_level = 4.0f;
  m->eps = 1e-6f;
}

void wsidet_map_levels(const WsidetLevelMapper *m, const float *boxes, int stride, int off,
                       int n, int32_t *levels)
{
  for (int i = 0; i < n; i++) {
    const float *b = boxes + (size_t)i * stride + off;
    float area = (b[2] - b[0]) * (b[3] - b[1]);
    float s = sqrtf(area);
    float t = floorf(m->canonical_level + log2f(s / m->canonical_scale) + m->eps);
    if (isnan(t)) {
      levels[i] = -1;
      continue;
    }
    if (t < (float)m->k_min)
      t = (float)m->k_min;
    if (t > (float)m->k_max)
      t = (float)m->k_max;
    levels[i] = (int32_t)t - m->k_min;
  }
}

static int ms_select(const WsidetFeatureLevel *lv, int n_levels, const WsidetLevelMapper *m,
                     const float *rois, int k, int32_t *lev, int32_t *sel)
{
  if (n_levels == 1) {
    for (int i = 0; i < k; i++)
      lev[i] = 0;
  } else {
    wsidet_map_levels(m, rois, 5, 1, k, lev);
  }
  (void)lv;
  (void)sel;
  return 0;
}

static int ms_run(const WsidetFeatureLevel *lv, int n_levels, int n, int c,
                  const WsidetLevelMapper *m, int pooled_h, int pooled_w, int sampling_ratio,
                  const float *rois, int k, float *output, const float *grad_output,
                  int32_t *levels_out)
{
  if (!lv || n_levels <= 0 || k < 0 || (n_levels > 1 && !m))
    return -1;
  if (k == 0)
    return 0;
  int32_t *lev = malloc(sizeof(int32_t) * (size_t)k * 2);
  if (!lev)
    return -1;
  int32_t *sel = lev + k;
  ms_select(lv, n_levels, m, rois, k, lev, sel);
  int rc = 0;
  if (output) {
    /* RoIs pooled nowhere (NaN size) stay zero, as torchvision's zero-initialised result */
    for (int i = 0; i < k; i++)
      if (lev[i] < 0 || lev[i] >= n_levels)
        memset(output + (size_t)i * c * pooled_h * pooled_w, 0,
               sizeof(float) * (size_t)c * pooled_h * pooled_w);
  }
  for (int l = 0; l < n_levels && rc == 0; l++) {
    int ns = 0;
    for (int i = 0; i < k; i++)
      if (lev[i] == l)
        sel[ns++] = i;
    if (!ns)
      continue;
    WsidetRoiAlign p = {pooled_h, pooled_w, (float)lv[l].scale, sampling_ratio, 0};
    if (roialign_check(&p, n, c, lv[l].h, lv[l].w, k)) {
      rc = -1;
      break;
    }
    if (output && (!lv[l].data || lv[l].h <= 0))
      rc = -1;
    else if (!output && !lv[l].grad)
      rc = -1;
    else if (output)
      rc = (lv[l].nhwc ? roi_fwd_nhwc : roi_fwd_nchw)(&p, lv[l].data, n, c, lv[l].h, lv[l].w,
                                                      rois, sel, ns, output);
    else
      rc = (lv[l].nhwc ? roi_bwd_nhwc : roi_bwd_nchw)(&p, grad_output, n, c, lv[l].h, lv[l].w,
                                                      rois, sel, ns, lv[l].grad);
  }
  if (levels_out)
    memcpy(levels_out, lev, sizeof(int32_t) * (size_t)k);
  free(lev);
  return rc;
}

int wsidet_multiscale_roi_align_forward(const WsidetFeatureLevel *lv, int n_levels, int n,
                                        int c, const WsidetLevelMapper *m, int pooled_h,
                                        int pooled_w, int sampling_ratio, const float *rois,
                                        int k, float *output, int32_t *levels_out)
{
  if (k > 0 && (!output || !rois))
    return -1;
  return ms_run(lv, n_levels, n, c, m, pooled_h, pooled_w, sampling_ratio, rois, k, output,
                NULL, levels_out);
}

int wsidet_multiscale_roi_align_backward(const WsidetFeatureLevel *lv, int n_levels, int n,
                                         int c, const WsidetLevelMapper *m, int pooled_h,
                                         int pooled_w, int sampling_ratio, const float *rois,
                                         int k, const float *grad_output)
{
  if (k > 0 && (!grad_output || !rois))
    return -1;
  return ms_run(lv, n_levels, n, c, m, pooled_h, pooled_w, sampling_ratio, rois, k, NULL,
                grad_output, NULL);
}

/* ---- 6. Losses --------------------------------------------------------------------- */

static inline double bce1(double x, double y)
{
  return (x > 0 ? x : 0) - x * y + log1p(exp(-fabs(x)));
}

static inline double sigmoid(double x)
{
  return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
}

double wsidet_bce_with_logits(const float *x, const float *y, int n, float *grad)
{
  if (n <= 0)
    return 0.0;
  double s = 0.0;
  for (int i = 0; i < n; i++) {
    s += bce1(x[i], y[i]);
    if (grad)
      grad[i] = (float)((sigmoid(x[i]) - y[i]) / n);
  }
  return s / n;
}

static inline double sl1(double d, double beta, double *g)
{
  double z = fabs(d);
  if (beta > 0 && z < beta) {
    *g = d / beta;
    return 0.5 * z * z / beta;
  }
  *g = (d > 0) - (d < 0);
  return z - 0.5 * (beta > 0 ? beta : 0.0);
}

double wsidet_smooth_l1(const float *pred, const float *target, int n, float beta,
                        double norm, float *grad)
{
  double s = 0.0, sc = norm > 0 ? 1.0 / norm : 1.0;
  for (int i = 0; i < n; i++) {
    double g;
    s += sl1((double)pred[i] - target[i], beta, &g);
    if (grad)
      grad[i] = (float)(g * sc);
  }
  return s * sc;
}

double wsidet_cross_entropy(const float *logits, const int32_t *labels, int n, int n_classes,
                            float *grad)
{
  if (n <= 0)
    return 0.0;
  double s = 0.0;
  for (int i = 0; i < n; i++) {
    const float *l = logits + (size_t)i * n_classes;
    double mx = l[0];
    for (int j = 1; j < n_classes; j++)
      mx = l[j] > mx ? l[j] : mx;
    double z = 0.0;
    for (int j = 0; j < n_classes; j++)
      z += exp(l[j] - mx);
    double lz = log(z) + mx;
    s += lz - l[labels[i]];
    if (grad)
      for (int j = 0; j < n_classes; j++)
        grad[(size_t)i * n_classes + j] =
            (float)((exp(l[j] - lz) - (j == labels[i] ? 1.0 : 0.0)) / n);
  }
  return s / n;
}

int wsidet_rpn_loss(const float *objectness, const float *deltas, const float *labels,
                    const float *targets, const int32_t *pos_idx, int n_pos,
                    const int32_t *neg_idx, int n_neg, int box_loss, float beta,
                    double *loss_objectness, double *loss_box, float *grad_objectness,
                    float *grad_deltas)
{
  int ns = n_pos + n_neg;
  double lo = 0.0, lb = 0.0;
  float b = box_loss == WSIDET_BOX_LOSS_L1 ? 0.0f : beta;
  for (int t = 0; t < ns; t++) {
    int i = t < n_pos ? pos_idx[t] : neg_idx[t - n_pos];
    double x = objectness[i], y = labels[i];
    lo += bce1(x, y);
    if (grad_objectness)
      grad_objectness[i] = (float)((sigmoid(x) - y) / ns);
  }
  for (int t = 0; t < n_pos; t++) {
    int i = pos_idx[t];
    for (int q = 0; q < 4; q++) {
      double g;
      lb += sl1((double)deltas[4 * i + q] - targets[4 * i + q], b, &g);
      if (grad_deltas)
        grad_deltas[4 * i + q] = (float)(g / ns);
    }
  }
  if (loss_objectness)
    *loss_objectness = ns ? lo / ns : 0.0;
  if (loss_box)
    *loss_box = ns ? lb / ns : 0.0;
  return 0;
}

int wsidet_fastrcnn_loss(const float *class_logits, const float *box_regression,
                         const int32_t *labels, const float *targets, int n, int n_classes,
                         int box_loss, float beta, double *loss_classifier,
                         double *loss_box_reg, float *grad_logits, float *grad_box)
{
  if (n < 0 || n_classes <= 0)
    return -1;
  for (int i = 0; i < n; i++)
    if (labels[i] < 0 || labels[i] >= n_classes)
      return -1;
  double lc = wsidet_cross_entropy(class_logits, labels, n, n_classes, grad_logits);
  float b = box_loss == WSIDET_BOX_LOSS_L1 ? 0.0f : beta;
  double lb = 0.0;
  if (grad_box)
    memset(grad_box, 0, sizeof(float) * (size_t)n * n_classes * 4);
  for (int i = 0; i < n; i++) {
    if (labels[i] <= 0)
      continue;
    size_t o = ((size_t)i * n_classes + labels[i]) * 4;
    for (int q = 0; q < 4; q++) {
      double g;
      lb += sl1((double)box_regression[o + q] - targets[4 * i + q], b, &g);
      if (grad_box)
        grad_box[o + q] = (float)(g / n);
    }
  }
  if (loss_classifier)
    *loss_classifier = lc;
  if (loss_box_reg)
    *loss_box_reg = n ? lb / n : 0.0;
  return 0;
}

int wsidet_project_masks(const float *gt_masks, int n_gt, int h, int w, const float *boxes,
                         const int32_t *matched, int k, int m, float *targets)
{
  if (k <= 0)
    return 0;
  if (!gt_masks || !boxes || !matched || !targets || m <= 0)
    return -1;
  float *rois = malloc(sizeof(float) * 5 * (size_t)k);
  if (!rois)
    return -1;
  for (int i = 0; i < k; i++) {
    rois[5 * i] = (float)matched[i];
    memcpy(rois + 5 * i + 1, boxes + 4 * i, 4 * sizeof(float));
  }
  WsidetRoiAlign p = {m, m, 1.0f, -1, 0};
  int r = wsidet_roi_align_forward_nhwc(&p, gt_masks, n_gt, 1, h, w, rois, k, targets);
  free(rois);
  return r;
}

double wsidet_maskrcnn_loss(const float *mask_logits, const int32_t *labels,
                            const float *targets, int k, int n_classes, int m, float *grad)
{
  if (k <= 0)
    return 0.0;
  size_t mm = (size_t)m * m, tot = (size_t)k * mm;
  if (grad)
    memset(grad, 0, sizeof(float) * tot * n_classes);
  double s = 0.0;
  for (int i = 0; i < k; i++) {
    size_t o = ((size_t)i * n_classes + labels[i]) * mm;
    for (size_t q = 0; q < mm; q++) {
      double x = mask_logits[o + q], y = targets[i * mm + q];
      s += bce1(x, y);
      if (grad)
        grad[o + q] = (float)((sigmoid(x) - y) / (double)tot);
    }
  }
  return s / (double)tot;
}
