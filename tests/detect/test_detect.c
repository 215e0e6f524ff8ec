/* Unit tests for models/detect (wsidetect): finite-difference gradient checks through
 * RoIAlign (single and multi-level) and every loss, determinism of the RoIAlign backward
 * across thread counts, empty sets and bad arguments. Parity with torchvision is in
 * test_vs_torchvision.py. */
#include "wsidetect.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static int failures;
#define CHECK(cond, ...)                                   \
  do {                                                     \
    if (!(cond)) {                                         \
      failures++;                                          \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                        \
      fprintf(stderr, "\n");                               \
    }                                                      \
  } while (0)

static uint64_t seed = 12345;
static double urand(void)
{
  seed = seed * 6364136223846793005ull + 1442695040888963407ull;
  return (double)(seed >> 11) / 9007199254740992.0;
}
static float nrand(void)
{
  double u1 = urand() + 1e-12, u2 = urand();
  return (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
}

static void fill_normal(float *a, size_t n)
{
  for (size_t i = 0; i < n; i++)
    a[i] = nrand();
}

/* ---- RoIAlign --------------------------------------------------------------------- */

static double dot(const float *a, const float *b, size_t n)
{
  double s = 0;
  for (size_t i = 0; i < n; i++)
    s += (double)a[i] * b[i];
  return s;
}

static void make_rois(float *rois, int k, int n, float W, float H)
{
  for (int i = 0; i < k; i++) {
    float x1 = (float)(urand() * 1.2 - 0.2) * W, y1 = (float)(urand() * 1.2 - 0.2) * H;
    rois[5 * i] = (float)(i % n);
    rois[5 * i + 1] = x1;
    rois[5 * i + 2] = y1;
    rois[5 * i + 3] = x1 + (float)urand() * 0.6f * W;
    rois[5 * i + 4] = y1 + (float)urand() * 0.6f * H;
  }
  /* edges: whole image, zero area, outside, on the far border */
  if (k >= 4) {
    float e[4][5] = {{0, 0, 0, W, H}, {0, 3, 3, 3, 3}, {0, -20, -20, -2, -2}, {0, W - 1, H - 1, W, H}};
    memcpy(rois, e, sizeof(e));
  }
}

static void test_roi_align_grad(int aligned, int sr)
{
  const int n = 2, c = 3, h = 9, w = 11, k = 12;
  WsidetRoiAlign p = {4, 5, 0.5f, sr, aligned};
  size_t nin = (size_t)n * c * h * w, nout = (size_t)k * c * 4 * 5;
  float *x = malloc(nin * 4), *g = malloc(nout * 4), *o = malloc(nout * 4), *gi = calloc(nin, 4);
  float rois[5 * 12];
  make_rois(rois, k, n, w / 0.5f, h / 0.5f);
  fill_normal(x, nin);
  fill_normal(g, nout);
  CHECK(wsidet_roi_align_forward(&p, x, n, c, h, w, rois, k, o) == 0, "forward");
  CHECK(wsidet_roi_align_backward(&p, g, n, c, h, w, rois, k, gi) == 0, "backward");
  /* adjoint identity: <g, A x> == <A^T g, x> */
  double l = dot(g, o, nout), r = dot(gi, x, nin);
  CHECK(fabs(l - r) <= 1e-4 * (fabs(l) + 1), "roi_align adjoint %g vs %g (aligned %d)", l, r,
        aligned);
  /* central differences on every input element (the op is linear: exact up to rounding) */
  double maxerr = 0;
  for (size_t i = 0; i < nin; i++) {
    float save = x[i], eps = 0.05f;
    x[i] = save + eps;
    wsidet_roi_align_forward(&p, x, n, c, h, w, rois, k, o);
    double lp = dot(g, o, nout);
    x[i] = save - eps;
    wsidet_roi_align_forward(&p, x, n, c, h, w, rois, k, o);
    double lm = dot(g, o, nout);
    x[i] = save;
    double fd = (lp - lm) / (2 * eps);
    double e = fabs(fd - gi[i]) / (fabs(fd) + 1e-2);
    if (e > maxerr)
      maxerr = e;
  }
  CHECK(maxerr < 1e-3, "roi_align fd gradient rel err %g (aligned %d sr %d)", maxerr, aligned, sr);
  free(x), free(g), free(o), free(gi);
}

static void test_multiscale_grad(void)
{
  const int n = 1, c = 2, L = 3, M = 3;
  int hs[3] = {16, 8, 4};
  float *x[3], *gr[3];
  WsidetFeatureLevel lv[3];
  for (int l = 0; l < L; l++) {
    x[l] = malloc(sizeof(float) * c * hs[l] * hs[l]);
    gr[l] = calloc((size_t)c * hs[l] * hs[l], sizeof(float));
    fill_normal(x[l], (size_t)c * hs[l] * hs[l]);
    lv[l] = (WsidetFeatureLevel){x[l], gr[l], hs[l], hs[l], 1.0 / (4 << l), 0};
  }
  WsidetLevelMapper m;
  wsidet_level_mapper_init(&m, lv[0].scale, lv[L - 1].scale);
  CHECK(m.k_min == 2 && m.k_max == 4, "k_min %d k_max %d", m.k_min, m.k_max);
  const int k = 10;
  float rois[50];
  make_rois(rois, k, n, 64, 64);
  /* large RoIs (partly outside the maps): the upper levels */
  float big[2][5] = {{0, 2, 3, 122, 125}, {0, -10, -10, 240, 236}};
  memcpy(rois + 5 * 4, big, sizeof(big));
  size_t nout = (size_t)k * c * M * M;
  float *o = malloc(nout * 4), *g = malloc(nout * 4);
  int32_t levels[10];
  fill_normal(g, nout);
  CHECK(wsidet_multiscale_roi_align_forward(lv, L, n, c, &m, M, M, 2, rois, k, o, levels) == 0,
        "ms forward");
  CHECK(wsidet_multiscale_roi_align_backward(lv, L, n, c, &m, M, M, 2, rois, k, g) == 0,
        "ms backward");
  double maxerr = 0;
  for (int l = 0; l < L; l++)
    for (int i = 0; i < c * hs[l] * hs[l]; i++) {
      float save = x[l][i], eps = 0.05f;
      x[l][i] = save + eps;
      wsidet_multiscale_roi_align_forward(lv, L, n, c, &m, M, M, 2, rois, k, o, NULL);
      double lp = dot(g, o, nout);
      x[l][i] = save - eps;
      wsidet_multiscale_roi_align_forward(lv, L, n, c, &m, M, M, 2, rois, k, o, NULL);
      double lm = dot(g, o, nout);
      x[l][i] = save;
      double fd = (lp - lm) / (2 * eps), e = fabs(fd - gr[l][i]) / (fabs(fd) + 1e-2);
      if (e > maxerr)
        maxerr = e;
    }
  CHECK(maxerr < 1e-3, "multiscale fd gradient rel err %g", maxerr);
  int used[3] = {0};
  for (int i = 0; i < k; i++)
    if (levels[i] >= 0 && levels[i] < 3)
      used[levels[i]]++;
  CHECK(used[0] > 0 && used[1] > 0 && used[2] > 0, "levels used %d %d %d", used[0], used[1], used[2]);
  for (int l = 0; l < L; l++)
    free(x[l]), free(gr[l]);
  free(o), free(g);
}

/* The backward must not depend on the thread count (no float atomics). */
static void test_roi_backward_deterministic(void)
{
#ifdef _OPENMP
  const int n = 1, c = 96, h = 32, w = 32, k = 300;
  WsidetRoiAlign p = {7, 7, 0.25f, 2, 0};
  size_t nin = (size_t)n * c * h * w, nout = (size_t)k * c * 49;
  float *g = malloc(nout * 4), *a = calloc(nin, 4), *b = calloc(nin, 4);
  float *rois = malloc(sizeof(float) * 5 * k);
  make_rois(rois, k, n, 128, 128);
  fill_normal(g, nout);
  int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  wsidet_roi_align_backward(&p, g, n, c, h, w, rois, k, a);
  omp_set_num_threads(4);
  wsidet_roi_align_backward(&p, g, n, c, h, w, rois, k, b);
  omp_set_num_threads(saved);
  CHECK(memcmp(a, b, nin * 4) == 0, "roi_align backward differs between 1 and 4 threads");
  free(g), free(a), free(b), free(rois);
#endif
}

/* Every ISA's kernels give bit-identical results (AVX-512 / AVX2 / baseline). */
static void test_isa_identical(void)
{
  const char *isas[3] = {"avx512", "avx2", "baseline"};
  const int n = 2, c = 40, h = 19, w = 23, k = 64, nbx = 700;
  WsidetRoiAlign p = {7, 7, 0.25f, -1, 0};
  size_t nin = (size_t)n * c * h * w, nout = (size_t)k * c * 49;
  float *x = malloc(nin * 4), *g = malloc(nout * 4), *rois = malloc(sizeof(float) * 5 * k);
  float *o[3], *gi[3];
  float *bx = malloc(sizeof(float) * 4 * nbx), *sc = malloc(sizeof(float) * nbx);
  int32_t *keep[3], nk[3];
  fill_normal(x, nin);
  fill_normal(g, nout);
  make_rois(rois, k, n, w * 4, h * 4);
  for (int i = 0; i < nbx; i++) {
    float x0 = (float)urand() * 200, y0 = (float)urand() * 200;
    bx[4 * i] = x0, bx[4 * i + 1] = y0;
    bx[4 * i + 2] = x0 + (float)urand() * 50, bx[4 * i + 3] = y0 + (float)urand() * 50;
    sc[i] = (float)(int)(urand() * 50); /* ties */
  }
  for (int t = 0; t < 3; t++) {
    const char *got = wsidet_set_isa(isas[t]);
    printf("isa cap %s: %s\n", isas[t], got);
    o[t] = malloc(nout * 4);
    gi[t] = calloc(nin, 4);
    keep[t] = malloc(sizeof(int32_t) * nbx);
    wsidet_roi_align_forward(&p, x, n, c, h, w, rois, k, o[t]);
    wsidet_roi_align_backward(&p, g, n, c, h, w, rois, k, gi[t]);
    nk[t] = wsidet_nms(bx, sc, nbx, 0.5, keep[t]);
    if (t) {
      CHECK(!memcmp(o[0], o[t], nout * 4), "roi_align forward differs on %s", got);
      CHECK(!memcmp(gi[0], gi[t], nin * 4), "roi_align backward differs on %s", got);
      CHECK(nk[0] == nk[t] && !memcmp(keep[0], keep[t], sizeof(int32_t) * nk[0]),
            "nms differs on %s", got);
    }
  }
  wsidet_set_isa(NULL);
  for (int t = 0; t < 3; t++)
    free(o[t]), free(gi[t]), free(keep[t]);
  free(x), free(g), free(rois), free(bx), free(sc);
}

/* ---- losses ----------------------------------------------------------------------- */

typedef double (*LossFn)(float *x, float *grad, void *ctx);

/* Central differences in float on every input: rel error of the analytic gradient. */
static double fd_check(LossFn f, float *x, int n, void *ctx, float eps)
{
  float *g = calloc((size_t)n, sizeof(float)), *dummy = calloc((size_t)n, sizeof(float));
  f(x, g, ctx);
  double maxerr = 0, gmax = 0;
  for (int i = 0; i < n; i++)
    gmax = fmax(gmax, fabs(g[i]));
  for (int i = 0; i < n; i++) {
    float save = x[i];
    x[i] = save + eps;
    float xp = x[i];
    double lp = f(x, NULL, ctx);
    x[i] = save - eps;
    float xm = x[i];
    double lm = f(x, NULL, ctx);
    x[i] = save;
    double fd = (lp - lm) / ((double)xp - xm);
    double e = fabs(fd - g[i]) / (gmax + 1e-12);
    if (e > maxerr)
      maxerr = e;
  }
  free(g), free(dummy);
  return maxerr;
}

typedef struct {
  const float *y;
  const int32_t *lab;
  int n, ncls, m;
  float beta;
  const int32_t *pi, *ni;
  int np, nn;
  const float *aux, *aux2;
  int part;
} Ctx;

static double f_bce(float *x, float *g, void *c)
{
  Ctx *t = c;
  return wsidet_bce_with_logits(x, t->y, t->n, g);
}
static double f_sl1(float *x, float *g, void *c)
{
  Ctx *t = c;
  return wsidet_smooth_l1(x, t->y, t->n, t->beta, 37.0, g);
}
static double f_ce(float *x, float *g, void *c)
{
  Ctx *t = c;
  return wsidet_cross_entropy(x, t->lab, t->n, t->ncls, g);
}
static double f_mask(float *x, float *g, void *c)
{
  Ctx *t = c;
  return wsidet_maskrcnn_loss(x, t->lab, t->y, t->n, t->ncls, t->m, g);
}
/* rpn: x = objectness [n] then deltas [n*4] */
static double f_rpn(float *x, float *g, void *c)
{
  Ctx *t = c;
  double lo, lb;
  wsidet_rpn_loss(x, x + t->n, t->y, t->aux, t->pi, t->np, t->ni, t->nn,
                  t->beta > 0 ? WSIDET_BOX_LOSS_SMOOTH_L1 : WSIDET_BOX_LOSS_L1, t->beta, &lo,
                  &lb, g, g ? g + t->n : NULL);
  return lo + lb;
}
/* fastrcnn: x = logits [n*ncls] then box regression [n*ncls*4] */
static double f_frcnn(float *x, float *g, void *c)
{
  Ctx *t = c;
  double lc, lb;
  size_t nl = (size_t)t->n * t->ncls;
  wsidet_fastrcnn_loss(x, x + nl, t->lab, t->y, t->n, t->ncls,
                       t->beta > 0 ? WSIDET_BOX_LOSS_SMOOTH_L1 : WSIDET_BOX_LOSS_L1, t->beta,
                       &lc, &lb, g, g ? g + nl : NULL);
  return lc + lb;
}

/* Moves values away from the smooth L1 / L1 kinks so that differences stay smooth. */
static void away_from_kinks(float *x, const float *y, int n, float beta, float margin)
{
  for (int i = 0; i < n; i++) {
    float d = x[i] - y[i];
    float kinks[3] = {-beta, 0.0f, beta};
    for (int q = 0; q < 3; q++)
      if (fabsf(d - kinks[q]) < margin)
        x[i] = y[i] + kinks[q] + (d >= kinks[q] ? margin : -margin);
  }
}

static void test_losses(void)
{
  enum { N = 40, NC = 4, MM = 5 };
  float x[N * NC * 5 + N], y[N * 4], t[N * MM * MM];
  int32_t lab[N];
  fill_normal(x, N);
  for (int i = 0; i < N; i++)
    y[i] = (float)urand();
  Ctx c = {.y = y, .n = N};
  double e = fd_check(f_bce, x, N, &c, 1e-2f);
  CHECK(e < 2e-3, "bce fd %g", e);

  for (int b = 0; b < 2; b++) {
    c.beta = b ? 1.0f / 9 : 0.0f;
    fill_normal(y, N);
    fill_normal(x, N);
    away_from_kinks(x, y, N, c.beta, 0.02f);
    e = fd_check(f_sl1, x, N, &c, 1e-3f);
    CHECK(e < 2e-3, "smooth l1 beta %g fd %g", c.beta, e);
  }

  for (int i = 0; i < N; i++)
    lab[i] = (int32_t)(urand() * NC);
  c.lab = lab;
  c.ncls = NC;
  fill_normal(x, N * NC);
  e = fd_check(f_ce, x, N * NC, &c, 1e-2f);
  CHECK(e < 2e-3, "cross entropy fd %g", e);

  /* mask loss: 6 RoIs, soft targets */
  c.n = 6;
  c.m = MM;
  for (int i = 0; i < 6 * MM * MM; i++)
    t[i] = (float)urand();
  c.y = t;
  fill_normal(x, 6 * NC * MM * MM);
  e = fd_check(f_mask, x, 6 * NC * MM * MM, &c, 1e-2f);
  CHECK(e < 2e-3, "mask loss fd %g", e);

  /* rpn: labels 1/0/-1, sampled subsets */
  float rl[N], tg[N * 4];
  int32_t pi[N], ni[N];
  int np = 0, nn = 0;
  for (int i = 0; i < N; i++) {
    rl[i] = (float)((int)(urand() * 3) - 1);
    if (rl[i] == 1 && urand() < 0.8)
      pi[np++] = i;
    else if (rl[i] == 0 && urand() < 0.6)
      ni[nn++] = i;
  }
  fill_normal(tg, N * 4);
  for (int b = 0; b < 2; b++) {
    Ctx r = {.y = rl, .aux = tg, .n = N, .pi = pi, .np = np, .ni = ni, .nn = nn,
             .beta = b ? 1.0f / 9 : 0.0f};
    fill_normal(x, N * 5);
    away_from_kinks(x + N, tg, N * 4, r.beta, 0.02f);
    e = fd_check(f_rpn, x, N * 5, &r, 1e-3f);
    CHECK(e < 2e-3, "rpn loss (beta %g) fd %g", r.beta, e);
  }

  /* fastrcnn */
  for (int b = 0; b < 2; b++) {
    Ctx f = {.lab = lab, .y = tg, .n = N, .ncls = NC, .beta = b ? 1.0f / 9 : 0.0f};
    fill_normal(x, N * NC * 5);
    for (int i = 0; i < N; i++)
      away_from_kinks(x + N * NC + (i * NC + lab[i]) * 4, tg + 4 * i, 4, f.beta, 0.02f);
    e = fd_check(f_frcnn, x, N * NC * 5, &f, 1e-3f);
    CHECK(e < 2e-3, "fastrcnn loss (beta %g) fd %g", f.beta, e);
  }
}

/* ---- edges ------------------------------------------------------------------------ */

static void test_edges(void)
{
  int32_t keep[8];
  CHECK(wsidet_nms(NULL, NULL, 0, 0.5, keep) == 0, "nms empty");
  CHECK(wsidet_batched_nms(NULL, NULL, NULL, 0, 0.5, keep) == 0, "batched nms empty");
  CHECK(wsidet_topk(NULL, 0, 5, keep) == 0, "topk empty");
  int32_t m[3];
  CHECK(wsidet_match(NULL, 0, 3, 0.7f, 0.3f, 1, m) == 0 && m[0] == -1 && m[2] == -1,
        "match without gt");
  CHECK(wsidet_match(NULL, 1, 3, 0.3f, 0.7f, 0, m) == -1, "match low > high refused");
  WsidetRng rng;
  wsidet_rng_seed(&rng, 1);
  int np = -1, nn = -1;
  CHECK(wsidet_sample_pos_neg(NULL, 0, 256, 0.5, &rng, NULL, NULL, NULL, &np, NULL, &nn) == 0 &&
            np == 0 && nn == 0, "sampler empty");
  /* deterministic sampler */
  int32_t labels[100], a[100], b[100];
  for (int i = 0; i < 100; i++)
    labels[i] = i % 3 == 0 ? 1 : (i % 3 == 1 ? 0 : -1);
  int na, nb, xa, xb;
  wsidet_rng_seed(&rng, 9);
  wsidet_sample_pos_neg(labels, 100, 16, 0.25, &rng, NULL, NULL, a, &na, NULL, &xa);
  wsidet_rng_seed(&rng, 9);
  wsidet_sample_pos_neg(labels, 100, 16, 0.25, &rng, NULL, NULL, b, &nb, NULL, &xb);
  CHECK(na == 4 && nb == 4 && xa == 12 && !memcmp(a, b, 16), "sampler deterministic");

  WsidetRoiAlign p = {7, 7, 1.0f, 2, 0};
  float map[16] = {0}, out[49];
  float roi_badbatch[5] = {3, 0, 0, 2, 2};
  CHECK(wsidet_roi_align_forward(&p, map, 1, 1, 4, 4, NULL, 0, NULL) == 0, "roi empty");
  for (int i = 0; i < 49; i++)
    out[i] = 1;
  CHECK(wsidet_roi_align_forward(&p, map, 1, 1, 4, 4, roi_badbatch, 1, out) == 0 &&
            out[0] == 0 && out[48] == 0, "roi with batch index out of range: zeros");
  /* NaN / infinite RoIs: zeros, no endless sampling */
  float roi_nan[3][5] = {{0, NAN, 0, 2, 2}, {0, 0, 0, INFINITY, 3}, {NAN, 0, 0, 2, 2}};
  WsidetRoiAlign pa = {7, 7, 1.0f, -1, 1};
  for (int i = 0; i < 3; i++) {
    for (int j = 0; j < 49; j++)
      out[j] = 1;
    CHECK(wsidet_roi_align_forward(&pa, map, 1, 1, 4, 4, roi_nan[i], 1, out) == 0 &&
              out[0] == 0 && out[48] == 0, "non-finite RoI %d: zeros", i);
  }
  WsidetRoiAlign bad = {0, 7, 1.0f, 2, 0};
  CHECK(wsidet_roi_align_forward(&bad, map, 1, 1, 4, 4, roi_badbatch, 1, out) == -1,
        "pooled 0 refused");
  CHECK(wsidet_roi_align_forward(&p, map, 1, 1, 0, 4, roi_badbatch, 1, out) == -1,
        "empty map refused");
  CHECK(wsidet_bce_with_logits(NULL, NULL, 0, NULL) == 0.0, "bce empty");
  CHECK(wsidet_cross_entropy(NULL, NULL, 0, 3, NULL) == 0.0, "ce empty");
  int32_t badlab[1] = {5};
  float lg[3] = {0}, br[12] = {0}, tg[4] = {0};
  double l1, l2;
  CHECK(wsidet_fastrcnn_loss(lg, br, badlab, tg, 1, 3, 0, 1.0f / 9, &l1, &l2, NULL, NULL) == -1,
        "label beyond classes refused");

  /* NMS on many boxes: kept boxes come by descending score, no pair above threshold */
  enum { NB = 3000 };
  float *bx = malloc(sizeof(float) * 4 * NB), *sc = malloc(sizeof(float) * NB);
  int32_t *kp = malloc(sizeof(int32_t) * NB);
  for (int i = 0; i < NB; i++) {
    float x0 = (float)urand() * 500, y0 = (float)urand() * 500;
    bx[4 * i] = x0, bx[4 * i + 1] = y0;
    bx[4 * i + 2] = x0 + 5 + (float)urand() * 60, bx[4 * i + 3] = y0 + 5 + (float)urand() * 60;
    sc[i] = (float)urand();
  }
  int nk = wsidet_nms(bx, sc, NB, 0.5, kp);
  int ok = nk > 0;
  for (int i = 1; i < nk; i++)
    ok &= sc[kp[i - 1]] >= sc[kp[i]];
  float iou;
  for (int i = 0; i < nk && ok; i += 7)
    for (int j = i + 1; j < nk; j += 5) {
      wsidet_box_iou(bx + 4 * kp[i], 1, bx + 4 * kp[j], 1, &iou);
      ok &= iou <= 0.5f;
    }
  CHECK(ok, "nms properties (%d kept)", nk);
  free(bx), free(sc), free(kp);
}

int main(void)
{
  printf("kernels: %s\n", wsidet_isa());
  test_roi_align_grad(0, -1);
  test_roi_align_grad(1, -1);
  test_roi_align_grad(0, 2);
  test_roi_align_grad(1, 3);
  test_multiscale_grad();
  test_roi_backward_deterministic();
  test_isa_identical();
  test_losses();
  test_edges();
  if (failures) {
    fprintf(stderr, "%d failures\n", failures);
    return 1;
  }
  printf("detect unit tests: ok\n");
  return 0;
}
