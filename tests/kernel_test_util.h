// Helpers shared by the kernel tests (tests/test_kernels*.cpp): seeded random
// data, float <-> double copies, a relative comparison that names the worst
// element, and central finite differences in double. Header-only, no tests of
// its own, and no knowledge of any particular kernel.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

namespace stem::test {

using VecF = std::vector<float>;
using VecD = std::vector<double>;
using VecI = std::vector<int32_t>;

// Uniform in [-scale, scale].
inline VecF randu(std::mt19937& rng, int64_t n, float scale = 1.0f) {
  std::uniform_real_distribution<float> dist(-scale, scale);
  VecF v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

// Uniform integers in [0, K).
inline VecI rand_ids(std::mt19937& rng, int64_t n, int64_t K) {
  std::uniform_int_distribution<int32_t> dist(0, static_cast<int32_t>(K - 1));
  VecI v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

inline VecD to_d(const VecF& v) { return VecD(v.begin(), v.end()); }
inline VecF to_f(const VecD& v) {
  VecF r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = static_cast<float>(v[i]);
  return r;
}

template <class V>
double max_abs(const V& v) {
  double m = 0;
  for (auto x : v) m = std::max(m, std::abs(double(x)));
  return m;
}

inline double dot(const VecD& a, const VecD& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// max |got - want| / max(max |want|, floor) <= tol; on failure names the worst
// element. `floor` is the scale below which a reference counts as zero (a
// gradient that is exactly zero in exact arithmetic but float round-off in the
// kernel); keep it far below the magnitude of the data.
template <class A, class B>
::testing::AssertionResult near_rel(const A& got, const B& want, double tol, double floor = 1e-30) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << "size " << got.size() << " != " << want.size();
  const double scale = std::max(max_abs(want), floor);
  double worst = -1;
  size_t at = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double diff = std::abs(double(got[i]) - double(want[i]));
    if (!(diff <= worst)) {  // also catches NaN
      worst = diff;
      at = i;
    }
  }
  const double err = worst / scale;
  if (err <= tol) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "relative error " << err << " > " << tol << " (max|want| = " << scale << "); worst at ["
         << at << "] of " << got.size() << ": got " << double(got[at]) << ", want "
         << double(want[at]);
}

// dL/dp[i] for every i by central differences, p[i] perturbed by +-eps in place
// (restored afterwards). L reads p.
inline VecD finite_diff(VecD& p, const std::function<double()>& L, double eps = 1e-6) {
  VecD grad(p.size());
  for (size_t i = 0; i < p.size(); ++i) {
    const double saved = p[i];
    p[i] = saved + eps;
    const double lp = L();
    p[i] = saved - eps;
    const double lm = L();
    p[i] = saved;
    grad[i] = (lp - lm) / (2 * eps);
  }
  return grad;
}

// a + b elementwise (expected result of accumulating b onto a preset a).
inline VecF plus(const VecF& a, const VecF& b) {
  VecF r(a.size());
  for (size_t i = 0; i < a.size(); ++i) r[i] = a[i] + b[i];
  return r;
}

}  // namespace stem::test
