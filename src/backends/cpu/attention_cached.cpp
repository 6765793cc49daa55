// Attention of a chunk of queries against a KV cache on the CPU
// (kernels/infer_kernels.h; the matvecs are in matvec.cpp).
// A chunk of several rows goes through oneDNN GEMMs per (head, block of rows),
// like attention_forward; a single row (a decode step) takes a plain SIMD path
// per head, where GEMM call overhead would dominate. Scores live in the
// caller's scratch, so neither path allocates. No backward: inference only.
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "backends/cpu/vec_math.h"
#include "core/simd.h"
#include "kernels/infer_kernels.h"
#include "kernels/kernels.h"

namespace stem::kernels {
namespace {

constexpr int64_t kRowBlock = 32;  // query rows per task in the chunked path
constexpr int64_t kLanes = 16;     // independent accumulators: lets a float dot vectorise

// Dot product with kLanes partial sums (no -ffast-math needed to vectorise).
STEM_SIMD float dot_lanes(const float* STEM_RESTRICT a, const float* STEM_RESTRICT b, int64_t n) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) acc[l] += a[i + l] * b[i + l];
  float s = 0.0f;
  for (; i < n; ++i) s += a[i] * b[i];
  for (int64_t l = 0; l < kLanes; ++l) s += acc[l];
  return s;
}

STEM_SIMD void axpy(float* STEM_RESTRICT y, float a, const float* STEM_RESTRICT x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// s[0..n) -> probabilities in place; s[n..width) zeroed.
STEM_SIMD void softmax_row(float* STEM_RESTRICT s, int64_t n, int64_t width) { cpu::softmax_prefix(s, n, width); }

// One query row of one head against keys 0..ctx-1 (a decode step).
void attend_one(float* out, float* s, const float* q, const float* k, const float* v, int64_t ctx,
                int64_t ldk, int64_t hd, float scale) {
  for (int64_t j = 0; j < ctx; ++j) s[j] = scale * dot_lanes(q, k + j * ldk, hd);
  softmax_row(s, ctx, ctx);
  std::fill(out, out + hd, 0.0f);
  for (int64_t j = 0; j < ctx; ++j) axpy(out, s[j], v + j * ldk, hd);
}

}  // namespace

void attention_cached_forward(float* out, float* scratch, const float* q, const float* k_cache,
                              const float* v_cache, int64_t n, int64_t pos0, int64_t H,
                              int64_t Hkv, int64_t hd) {
  const int64_t group = H / Hkv, ctx = pos0 + n;
  const int64_t ldq = H * hd, ldk = Hkv * hd;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  if (n == 1) {
#pragma omp parallel for schedule(static) if (H * ctx * hd > 16384)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / group;
      attend_one(out + h * hd, scratch + h * ctx, q + h * hd, k_cache + g * hd, v_cache + g * hd,
                 ctx, ldk, hd, scale);
    }
    return;
  }
  const int64_t nblk = (n + kRowBlock - 1) / kRowBlock, tasks = H * nblk;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t blk = nblk - 1 - task % nblk;  // big blocks first
    const int64_t h = task / nblk, g = h / group;
    const int64_t i0 = blk * kRowBlock, i1 = std::min(n, i0 + kRowBlock), m = i1 - i0;
    const int64_t width = pos0 + i1;  // keys the block's last row sees
    float* S = scratch + (h * n + i0) * ctx;  // m x width, inside this task's m x ctx slice
    gemm(false, true, m, width, hd, scale, q + i0 * ldq + h * hd, ldq, k_cache + g * hd, ldk,
         0.0f, S, width);
    for (int64_t i = 0; i < m; ++i) softmax_row(S + i * width, pos0 + i0 + i + 1, width);
    gemm(false, false, m, hd, width, 1.0f, S, width, v_cache + g * hd, ldk, 0.0f,
         out + i0 * ldq + h * hd, ldq);
  }
}

}  // namespace stem::kernels
