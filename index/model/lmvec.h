/* lmvec.h - the float kernels of the model runtime (log-softmax statistics
 * over a vocabulary, attention softmax rows, dot products), kept in their own
 * file so that it alone is compiled with -O3 -ffast-math and vectorises:
 * with 150k-token vocabularies these loops cost as much as decoding.
 * Inputs must be finite. Pure functions: thread-safe. */
#ifndef CTXD_LMVEC_H
#define CTXD_LMVEC_H

#include <stddef.h>

/* Largest of x[0..n) (n > 0). */
float lmvec_max(const float *x, size_t n);

/* With d_i = x_i - shift: *z = sum exp(d_i) and *zd = sum exp(d_i) * d_i,
 * summed in float within blocks and in double across them. exp is a
 * polynomial with a relative error under 2e-7; d_i below -87 counts as
 * exp(-87) (about 1.6e-38). */
void lmvec_exp_sums(const float *x, size_t n, float shift, double *z, double *zd);

/* x[0..n) = softmax(x * scale) in place (n > 0). */
void lmvec_softmax(float *x, size_t n, float scale);

/* sum a_i * b_i. */
float lmvec_dot(const float *a, const float *b, size_t n);

#endif
