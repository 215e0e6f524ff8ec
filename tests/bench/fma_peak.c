/* Prints the machine's measured FMA peak (fmapeak.h) for the Python
 * benchmarks: "<GFLOP/s> <isa> <threads>". */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "fmapeak.h"

int
main (int argc, char **argv)
{
  int threads = argc > 1 ? atoi (argv[1]) : (int) sysconf (_SC_NPROCESSORS_ONLN);
  const char *isa;
  double g = fma_peak_gflops (threads, &isa);
  printf ("%.1f %s %d\n", g, isa, threads);
  return 0;
}
