// Gradient norms in a fixed order (see grad_norm.h).
#include "train/grad_norm.h"

#include <algorithm>

namespace stem::train {

void block_squares(const kernels::Ops& k, const float* x, int64_t n, double* out) {
  for (int64_t at = 0; at < n; at += kNormBlock) *out++ = k.sum_squares(x + at, std::min(kNormBlock, n - at));
}

void row_squares(const kernels::Ops& k, const float* rows, int64_t U, int64_t C, double* out) {
  for (int64_t u = 0; u < U; ++u) out[u] = k.sum_squares(rows + u * C, C);
}

double ordered_total(const std::vector<double>& terms) {
  double total = 0;
  for (double t : terms) total += t;
  return total;
}

}  // namespace stem::train
