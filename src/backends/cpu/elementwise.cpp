// Elementwise kernels of the CPU backend: the residual add, in-place add and
// per-row scaling. Loops of a few thousand floats run on the calling thread
// (a fork/join costs more than they do); longer ones split into chunks.
#include <algorithm>

#include "backends/cpu/parallel.h"
#include "core/simd.h"
#include "kernels/kernels.h"

namespace stem::kernels {
namespace {

constexpr int64_t kChunk = 8192;

STEM_SIMD void add_chunk(float* STEM_RESTRICT out, const float* STEM_RESTRICT a,
                         const float* STEM_RESTRICT b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

STEM_SIMD void add_inplace_chunk(float* STEM_RESTRICT dst, const float* STEM_RESTRICT src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

STEM_SIMD void scale_chunk(float* STEM_RESTRICT x, int64_t n, float s) {
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

// body(i0, len) over [0, n) in chunks, on all threads when n is large.
template <class Body>
void chunked(int64_t n, const Body& body) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  cpu::parallel_for(chunks, n > 65536, [&](int64_t c) {
    const int64_t i0 = c * kChunk;
    body(i0, std::min(kChunk, n - i0));
  });
}

}  // namespace

void add(float* out, const float* a, const float* b, int64_t n) {
  chunked(n, [&](int64_t i0, int64_t len) { add_chunk(out + i0, a + i0, b + i0, len); });
}

void add_inplace(float* dst, const float* src, int64_t n) {
  chunked(n, [&](int64_t i0, int64_t len) { add_inplace_chunk(dst + i0, src + i0, len); });
}

void scale_rows(float* x, const float* s, int64_t R, int64_t C) {
  cpu::parallel_for(R, R * C > 65536, [&](int64_t r) {
    if (s[r] != 1.0f) scale_chunk(x + r * C, C, s[r]);
  });
}

}  // namespace stem::kernels
