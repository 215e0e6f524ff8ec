/* Timings of the detection building blocks (not a test): RoIAlign forward/backward,
 * multi-level RoIAlign, NMS. Usage: detect_bench [repeats]. Threads: OMP_NUM_THREADS. */
#include "wsidetect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static double now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t st = 7;
static float urand(void)
{
  st = st * 6364136223846793005ull + 1442695040888963407ull;
  return (float)((st >> 40) / 16777216.0);
}

static double cpu(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmpd(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

#define TIME(label, reps, stmt)                                 \
  do {                                                          \
    double t_[64], c_[64];                                      \
    int r_ = reps > 64 ? 64 : reps;                             \
    stmt; /* warm-up: first touch of the outputs */             \
    for (int i_ = 0; i_ < r_; i_++) {                           \
      double t0_ = now(), c0_ = cpu();                          \
      stmt;                                                     \
      t_[i_] = now() - t0_;                                     \
      c_[i_] = cpu() - c0_;                                     \
    }                                                           \
    qsort(t_, r_, sizeof(double), cmpd);                        \
    qsort(c_, r_, sizeof(double), cmpd);                        \
    printf("%-56s wall median %7.2f min %7.2f ms, cpu median %7.2f ms\n", label, \
           t_[r_ / 2] * 1e3, t_[0] * 1e3, c_[r_ / 2] * 1e3);    \
  } while (0)

int main(int argc, char **argv)
{
  int reps = argc > 1 ? atoi(argv[1]) : 7;
  int threads = 1;
#ifdef _OPENMP
  threads = omp_get_max_threads();
#endif
  printf("threads %d\n", threads);
  const int n = 1, c = 256, h = 64, w = 64, k = 512;
  size_t nin = (size_t)n * c * h * w;
  float *x = malloc(nin * 4), *gi = calloc(nin, 4);
  for (size_t i = 0; i < nin; i++)
    x[i] = urand() - 0.5f;
  float *rois = malloc(sizeof(float) * 5 * k);
  for (int i = 0; i < k; i++) {
    float x0 = urand() * 230, y0 = urand() * 230;
    rois[5 * i] = 0;
    rois[5 * i + 1] = x0, rois[5 * i + 2] = y0;
    rois[5 * i + 3] = x0 + 8 + urand() * 56, rois[5 * i + 4] = y0 + 8 + urand() * 56;
  }
  for (int M = 7; M <= 14; M += 7) {
    WsidetRoiAlign p = {M, M, 0.25f, 2, 0};
    size_t nout = (size_t)k * c * M * M;
    float *o = malloc(nout * 4);
    for (size_t i = 0; i < nout; i++)
      o[i] = urand();
    char lab[128];
    snprintf(lab, sizeof lab, "roi_align fwd 512 RoIs, 1x256x64x64, %dx%d, sr 2", M, M);
    TIME(lab, reps, wsidet_roi_align_forward(&p, x, n, c, h, w, rois, k, o));
    snprintf(lab, sizeof lab, "roi_align bwd 512 RoIs, 1x256x64x64, %dx%d, sr 2", M, M);
    TIME(lab, reps, wsidet_roi_align_backward(&p, o, n, c, h, w, rois, k, gi));
    free(o);
  }
  {
    WsidetRoiAlign p = {7, 7, 0.25f, -1, 0};
    float *o = malloc((size_t)k * c * 49 * 4);
    TIME("roi_align fwd 512 RoIs, 1x256x64x64, 7x7, adaptive", reps,
         wsidet_roi_align_forward(&p, x, n, c, h, w, rois, k, o));
    free(o);
  }
  /* FPN levels of a 256x256 patch: 64, 32, 16, 8 */
  {
    WsidetFeatureLevel lv[4];
    float *maps[4];
    for (int l = 0; l < 4; l++) {
      int s = 64 >> l;
      maps[l] = malloc(sizeof(float) * c * s * s);
      memcpy(maps[l], x, sizeof(float) * c * s * s);
      lv[l] = (WsidetFeatureLevel){maps[l], calloc((size_t)c * s * s, 4), s, s, 1.0 / (4 << l), 0};
    }
    WsidetLevelMapper m;
    wsidet_level_mapper_init(&m, lv[0].scale, lv[3].scale);
    float *o = malloc((size_t)k * c * 49 * 4);
    TIME("multiscale roi_align fwd 512 RoIs, FPN 64..8 x256, 7x7", reps,
         wsidet_multiscale_roi_align_forward(lv, 4, n, c, &m, 7, 7, 2, rois, k, o, NULL));
    TIME("multiscale roi_align bwd 512 RoIs, FPN 64..8 x256, 7x7", reps,
         wsidet_multiscale_roi_align_backward(lv, 4, n, c, &m, 7, 7, 2, rois, k, o));
    free(o);
    for (int l = 0; l < 4; l++)
      free(maps[l]), free((void *)lv[l].grad);
  }
  for (int nb = 1000; nb <= 10000; nb *= 10) {
    float *b = malloc(sizeof(float) * 4 * nb), *s = malloc(sizeof(float) * nb);
    int32_t *keep = malloc(sizeof(int32_t) * nb), *idx = malloc(sizeof(int32_t) * nb);
    for (int i = 0; i < nb; i++) {
      float x0 = urand() * 800, y0 = urand() * 800;
      b[4 * i] = x0, b[4 * i + 1] = y0;
      b[4 * i + 2] = x0 + 8 + urand() * 120, b[4 * i + 3] = y0 + 8 + urand() * 120;
      s[i] = urand();
      idx[i] = i % 5;
    }
    int nk = 0;
    char lab[128];
    snprintf(lab, sizeof lab, "nms %d boxes, iou 0.7", nb);
    TIME(lab, reps, nk = wsidet_nms(b, s, nb, 0.7, keep));
    printf("  kept %d\n", nk);
    snprintf(lab, sizeof lab, "batched_nms %d boxes, 5 groups, iou 0.7", nb);
    TIME(lab, reps, nk = wsidet_batched_nms(b, s, idx, nb, 0.7, keep));
    free(b), free(s), free(keep), free(idx);
  }
  free(x), free(gi), free(rois);
  return 0;
}
