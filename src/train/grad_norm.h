// The squared gradient norms for clipping, summed in one fixed order that a
// process alone and ranks holding parts of the gradients both follow, so that
// they clip by the same factor bit for bit: the dense gradients bucket by
// bucket (the gradient arena's ranges, Trainer) in blocks of kNormBlock
// elements, the row-sparse ones row by row in id order. Each term is one
// sum_squares; a rank computes the terms of the blocks and rows it holds
// (whole ones: sharded optimizers split at block and row boundaries), the
// terms are summed over ranks (exactly: one rank holds each, the others add
// zeros) and then in order. It knows kernels and nothing of models.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/ops.h"

namespace stem::train {

inline constexpr int64_t kNormBlock = 256;  // 1 KB: sharded parts stay within a block of even

inline int64_t norm_blocks(int64_t n) { return (n + kNormBlock - 1) / kNormBlock; }

// out[k] = the squares of x's block k (norm_blocks(n) terms).
void block_squares(const kernels::Ops& k, const float* x, int64_t n, double* out);
// out[u] = the squares of row u of rows [U, C].
void row_squares(const kernels::Ops& k, const float* rows, int64_t U, int64_t C, double* out);
// The terms added one by one, in order.
double ordered_total(const std::vector<double>& terms);

}  // namespace stem::train
