// Order statistics of a sample, for benchmark reports: quantile with linear
// interpolation between the closest ranks (q = 0.5: the median, the mean of
// the two middle values for an even count). 0 for an empty sample.
#pragma once

#include <algorithm>
#include <vector>

namespace stem::core {

inline double quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const size_t i = static_cast<size_t>(pos);
  const double frac = pos - static_cast<double>(i);
  return i + 1 < v.size() ? v[i] * (1 - frac) + v[i + 1] * frac : v[i];
}

}  // namespace stem::core
