/* lmvec.c - vectorisable float kernels of the model runtime (see lmvec.h).
 * CMake compiles this file with -O3 -ffast-math: reductions may be
 * reordered, which is what lets them vectorise; nothing here needs IEEE
 * special values. */
#include "model/lmvec.h"

#include <stdint.h>
#include <string.h>

float lmvec_max(const float *x, size_t n) {
  float m = x[0];
  for (size_t i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
  return m;
}

/* exp(v) for v <= 0: 2^k * p(r), k = round(v / ln 2), r = v - k ln 2 in two
 * steps (Cody-Waite), p Cephes' degree-6 polynomial of expf. k rounds by
 * truncating v / ln 2 - 0.5 (v <= 0): fast-math would fold the usual
 * add-and-subtract-2^23 trick away. */
static inline float exp_neg(float v) {
  v = v < -87.0f ? -87.0f : v;
  int32_t k = (int32_t)(v * 1.44269504088896341f - 0.5f);
  float fk = (float)k;
  float r = v - fk * 0.693359375f;
  r = r + fk * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = (k + 127) << 23;
  float s;
  memcpy(&s, &bits, sizeof s);
  return p * s;
}

void lmvec_exp_sums(const float *x, size_t n, float shift, double *z, double *zd) {
  double tz = 0, tzd = 0;
  for (size_t at = 0; at < n; at += 4096) {
    size_t end = n - at < 4096 ? n : at + 4096;
    float bz = 0, bzd = 0;
    for (size_t i = at; i < end; i++) {
      float d = x[i] - shift;
      float ex = exp_neg(d);
      bz += ex;
      bzd += ex * d;
    }
    tz += bz;
    tzd += bzd;
  }
  *z = tz;
  *zd = tzd;
}

void lmvec_softmax(float *x, size_t n, float scale) {
  float m = lmvec_max(x, n) * scale;
  double z = 0;
  for (size_t at = 0; at < n; at += 4096) {
    size_t end = n - at < 4096 ? n : at + 4096;
    float bz = 0;
    for (size_t i = at; i < end; i++) {
      float ex = exp_neg(x[i] * scale - m);
      x[i] = ex;
      bz += ex;
    }
    z += bz;
  }
  float inv = (float)(1.0 / z);
  for (size_t i = 0; i < n; i++) x[i] *= inv;
}

float lmvec_dot(const float *a, const float *b, size_t n) {
  float s = 0;
  for (size_t i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}
