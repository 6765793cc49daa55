// The x of the AVX-512 BF16 products (matvec.cpp, matvec_rows.cpp): x's even
// elements, then its odd ones, each half zero-padded to whole 64-byte lines
// of weights ((in + 31) / 32 * 16 floats), so that a line of 32 BF16 weights
// read as 16 dwords meets its x in two aligned loads. Nothing else.
#pragma once

#include <algorithm>
#include <cstdint>

namespace stem::kernels {

// Floats of one de-interleaved half.
inline int64_t bf16_x_half(int64_t in) { return (in + 31) / 32 * 16; }

// xeo[2 * bf16_x_half(in)] from x[in].
inline void deinterleave_bf16_x(float* xeo, const float* x, int64_t in) {
  const int64_t half = bf16_x_half(in);
  std::fill(xeo, xeo + 2 * half, 0.0f);
  for (int64_t i = 0; i < in; ++i) xeo[(i & 1) * half + i / 2] = x[i];
}

}  // namespace stem::kernels
