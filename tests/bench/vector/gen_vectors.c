/* gen_vectors.c - deterministic clustered random vectors for the vector
 * benchmark: `clusters` Gaussian centres (N(0, 1) per coordinate), points
 * around them with a spread that decays over the coordinates as embedding
 * spectra do (coordinate j has standard deviation proportional to
 * 1/sqrt(1 + j), scaled to an average variance of sigma^2) and a per-cluster
 * scale drawn from [0.5, 1.5). Queries are drawn the same way, from the
 * same centres, with their own random stream.
 *
 * usage: gen_vectors BASE.f32 QUERIES.f32 [n=1000000] [dim=128]
 *                    [clusters=1000] [nq=1000] [seed=42] [sigma=0.5]
 * Writes vecfile.h files. Same arguments, same bytes, on every machine. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "vecfile.h"

typedef struct {
  uint64_t s;
  int have;
  double spare;
} rng;

static uint64_t next(rng *r) {
  uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static double unif(rng *r) {
  return ((next(r) >> 11) + 0.5) / 9007199254740992.0;
}

/* Box-Muller, both values used. */
static double gauss(rng *r) {
  if (r->have) {
    r->have = 0;
    return r->spare;
  }
  double m = sqrt(-2.0 * log(unif(r))), a = 6.283185307179586 * unif(r);
  r->spare = m * sin(a);
  r->have = 1;
  return m * cos(a);
}

static void draw(rng *r, float *out, uint64_t n, uint32_t dim,
                 const float *centres, const float *scale, uint32_t clusters,
                 const double *spread) {
  for (uint64_t i = 0; i < n; i++) {
    uint32_t c = (uint32_t)(next(r) % clusters);
    for (uint32_t j = 0; j < dim; j++)
      out[i * dim + j] = (float)(centres[(size_t)c * dim + j] +
                                 scale[c] * spread[j] * gauss(r));
  }
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr,
            "usage: gen_vectors BASE.f32 QUERIES.f32 [n] [dim] [clusters] "
            "[nq] [seed] [sigma]\n");
    return 2;
  }
  uint64_t n = argc > 3 ? strtoull(argv[3], NULL, 10) : 1000000;
  uint32_t dim = argc > 4 ? (uint32_t)strtoul(argv[4], NULL, 10) : 128;
  uint32_t clusters = argc > 5 ? (uint32_t)strtoul(argv[5], NULL, 10) : 1000;
  uint64_t nq = argc > 6 ? strtoull(argv[6], NULL, 10) : 1000;
  uint64_t seed = argc > 7 ? strtoull(argv[7], NULL, 10) : 42;
  double sigma = argc > 8 ? strtod(argv[8], NULL) : 0.5;
  if (n == 0 || dim == 0 || dim > 65536 || clusters == 0 || nq == 0 ||
      n > (UINT64_C(1) << 32) / dim) {
    fprintf(stderr, "gen_vectors: bad sizes\n");
    return 2;
  }
  double *spread = malloc(dim * sizeof *spread), sum = 0;
  for (uint32_t j = 0; j < dim; j++) sum += spread[j] = 1.0 / (1.0 + j);
  for (uint32_t j = 0; j < dim; j++) spread[j] = sigma * sqrt(spread[j] * dim / sum);
  float *centres = malloc((size_t)clusters * dim * sizeof *centres);
  float *scale = malloc(clusters * sizeof *scale);
  float *base = malloc(n * dim * sizeof *base), *q = malloc(nq * dim * sizeof *q);
  if (!centres || !scale || !base || !q) {
    fprintf(stderr, "gen_vectors: out of memory\n");
    return 1;
  }
  rng r = {seed, 0, 0};
  for (size_t i = 0; i < (size_t)clusters * dim; i++) centres[i] = (float)gauss(&r);
  for (uint32_t c = 0; c < clusters; c++) scale[c] = (float)(0.5 + unif(&r));
  rng rb = {seed * 3 + 1, 0, 0}, rq = {seed * 3 + 2, 0, 0};
  draw(&rb, base, n, dim, centres, scale, clusters, spread);
  draw(&rq, q, nq, dim, centres, scale, clusters, spread);
  if (vecfile_write(argv[1], "F32V", base, n, dim, sizeof(float)) ||
      vecfile_write(argv[2], "F32V", q, nq, dim, sizeof(float))) {
    perror("gen_vectors: write");
    return 1;
  }
  printf("gen n=%llu dim=%u clusters=%u nq=%llu seed=%llu sigma=%g\n",
         (unsigned long long)n, dim, clusters, (unsigned long long)nq,
         (unsigned long long)seed, sigma);
  free(spread);
  free(centres);
  free(scale);
  free(base);
  free(q);
  return 0;
}
