/* The machine's measured FMA peak: a register-resident loop of independent
 * fused multiply-adds on the widest vectors the CPU has (AVX-512, else
 * AVX2), on every thread at once. Nominal clocks from /proc/cpuinfo are not
 * used: the cores boost far above them. */
#pragma once

#include <immintrin.h>
#include <omp.h>
#include <stdint.h>

#define FMA_PEAK_CHAINS 12      /* independent accumulators: hides latency */

__attribute__ ((target ("avx512f")))
static float
fma_loop_avx512 (int64_t iters)
{
  __m512 acc[FMA_PEAK_CHAINS];
  __m512 a = _mm512_set1_ps (0.9999f), b = _mm512_set1_ps (1e-7f);
  for (int k = 0; k < FMA_PEAK_CHAINS; k++)
    acc[k] = _mm512_set1_ps ((float) k);
  for (int64_t i = 0; i < iters; i++)
#pragma GCC unroll 16
    for (int k = 0; k < FMA_PEAK_CHAINS; k++)
      acc[k] = _mm512_fmadd_ps (acc[k], a, b);
  float s = 0;
  for (int k = 0; k < FMA_PEAK_CHAINS; k++)
    s += _mm512_reduce_add_ps (acc[k]);
  return s;
}

__attribute__ ((target ("avx2,fma")))
static float
fma_loop_avx2 (int64_t iters)
{
  __m256 acc[FMA_PEAK_CHAINS];
  __m256 a = _mm256_set1_ps (0.9999f), b = _mm256_set1_ps (1e-7f);
  for (int k = 0; k < FMA_PEAK_CHAINS; k++)
    acc[k] = _mm256_set1_ps ((float) k);
  for (int64_t i = 0; i < iters; i++)
#pragma GCC unroll 16
    for (int k = 0; k < FMA_PEAK_CHAINS; k++)
      acc[k] = _mm256_fmadd_ps (acc[k], a, b);
  float buf[8], s = 0;
  for (int k = 0; k < FMA_PEAK_CHAINS; k++) {
    _mm256_storeu_ps (buf, acc[k]);
    for (int j = 0; j < 8; j++)
      s += buf[j];
  }
  return s;
}

/* GFLOP/s over @threads threads (best of 5 runs of ~0.2 s); @isa gets
 * "avx512" or "avx2". */
static double
fma_peak_gflops (int threads, const char **isa)
{
  __builtin_cpu_init ();
  int wide = __builtin_cpu_supports ("avx512f");
  int lanes = wide ? 16 : 8;
  int64_t iters = 20 * 1000 * 1000;
  double best = 0;
  volatile float sink = 0;
  *isa = wide ? "avx512" : "avx2";
  for (int rep = 0; rep < 5; rep++) {
    double t0 = omp_get_wtime ();
#pragma omp parallel num_threads (threads) reduction (+:sink)
    sink += wide ? fma_loop_avx512 (iters) : fma_loop_avx2 (iters);
    double t = omp_get_wtime () - t0;
    double g = (double) threads * iters * FMA_PEAK_CHAINS * lanes * 2 / t / 1e9;
    if (g > best)
      best = g;
  }
  return best;
}
