// Branch-free float math that the compiler vectorises inside STEM_SIMD loops:
// exp (Cephes polynomial, about 1 ulp on [-87, 88]; inputs are clamped there)
// and silu. Internal to the CPU backend.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace stem::cpu {

inline float exp_approx(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float z = x * 1.44269504088896341f;
  const float n = (z + 12582912.0f) - 12582912.0f;  // round to nearest, |z| < 2^22
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return e * scale;
}

inline float sigmoid_approx(float z) { return 1.0f / (1.0f + exp_approx(-z)); }

// Causal softmax of one score row: s[0..n) become probabilities in place,
// s[n..width) are zeroed. Returns the row's log-sum-exp. Inline so that each
// STEM_SIMD caller vectorises it for its own target.
inline float softmax_prefix(float* __restrict__ s, int64_t n, int64_t width) {
  float mx = s[0];
  for (int64_t j = 1; j < n; ++j) mx = std::max(mx, s[j]);
  float sum = 0.0f;
  for (int64_t j = 0; j < n; ++j) {
    const float e = exp_approx(s[j] - mx);
    s[j] = e;
    sum += e;
  }
  const float inv = 1.0f / sum;
  for (int64_t j = 0; j < n; ++j) s[j] *= inv;
  for (int64_t j = n; j < width; ++j) s[j] = 0.0f;
  return mx + std::log(sum);
}

}  // namespace stem::cpu
