// Attention of a chunk of queries against a KV cache on the CPU
// (kernels/infer_kernels.h; the matvecs are in matvec.cpp).
// A chunk of several rows goes through oneDNN GEMMs per (head, block of rows),
// like attention_forward; a single row (a decode step) takes a SIMD path per
// head, where GEMM call overhead would dominate: AVX-512 intrinsics when
// matvec_path() allows, else portable loops compiled per target (STEM_SIMD);
// heads split across threads only above kOneRowParallel, with no OpenMP
// region below it (cpu::parallel_for). Scores live in the caller's scratch,
// so neither path allocates. The decode step of several sequences
// (attention_cached_slots_forward) splits all their (sequence, head) pairs
// across threads at once. No backward: inference only.
#if defined(__x86_64__) && defined(__GNUC__)
#define STEM_ATTN_X86 1
// GCC 12's AVX-512 intrinsics trip its own -Wmaybe-uninitialized (bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#endif

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "backends/cpu/parallel.h"
#include "backends/cpu/vec_math.h"
#include "core/simd.h"
#include "kernels/infer_kernels.h"
#include "kernels/kernels.h"

namespace stem::kernels {
namespace {

constexpr int64_t kRowBlock = 32;  // query rows per task in the chunked path
constexpr int64_t kLanes = 16;     // independent accumulators: lets a float dot vectorise
// A decode step's attention splits heads across threads above this many
// multiply-adds per pass (H * ctx * hd): a fork/join costs a few microseconds.
constexpr int64_t kOneRowParallel = 65536;

// Dot product with kLanes partial sums folded pairwise (no -ffast-math needed
// to vectorise). Inline, so that each STEM_SIMD caller compiles it for its
// own target with no call per key.
inline float dot_lanes(const float* STEM_RESTRICT a, const float* STEM_RESTRICT b, int64_t n) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) acc[l] += a[i + l] * b[i + l];
  for (int64_t w = kLanes / 2; w > 0; w /= 2)
    for (int64_t l = 0; l < w; ++l) acc[l] += acc[l + w];
  float s = acc[0];
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// s[0..n) -> probabilities in place; s[n..width) zeroed.
STEM_SIMD void softmax_row(float* STEM_RESTRICT s, int64_t n, int64_t width) { cpu::softmax_prefix(s, n, width); }

// One query row of one head against keys 0..ctx-1 (a decode step), in one
// function so that the per-key dots and axpys inline.
STEM_SIMD void attend_one(float* STEM_RESTRICT out, float* STEM_RESTRICT s,
                          const float* STEM_RESTRICT q, const float* STEM_RESTRICT k,
                          const float* STEM_RESTRICT v, int64_t ctx, int64_t ldk, int64_t hd,
                          float scale) {
  for (int64_t j = 0; j < ctx; ++j) s[j] = scale * dot_lanes(q, k + j * ldk, hd);
  cpu::softmax_prefix(s, ctx, ctx);
  for (int64_t i = 0; i < hd; ++i) out[i] = 0.0f;
  for (int64_t j = 0; j < ctx; ++j) {
    const float p = s[j];
    const float* vj = v + j * ldk;
    for (int64_t i = 0; i < hd; ++i) out[i] += p * vj[i];
  }
}

#ifdef STEM_ATTN_X86
#define STEM_ATTN_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))

STEM_ATTN_AVX512 inline float hsum16(__m512 v) {
  const __m512 h = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0x4e));
  __m256 t = _mm512_castps512_ps256(h);
  __m128 u = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
  u = _mm_add_ps(u, _mm_movehl_ps(u, u));
  return _mm_cvtss_f32(_mm_add_ss(u, _mm_movehdup_ps(u)));
}

// attend_one with explicit AVX-512: one FMA chain per key for the scores (the
// keys are independent, so they overlap), and the output held in registers,
// 64 floats at a time, while the values stream past. About 4x the portable
// version, which reduces each dot through memory.
STEM_ATTN_AVX512 void attend_one_avx512(float* out, float* s, const float* q, const float* k,
                                        const float* v, int64_t ctx, int64_t ldk, int64_t hd,
                                        float scale) {
  const int64_t n16 = hd / 16 * 16;
  const __mmask16 tail = static_cast<__mmask16>((1u << (hd - n16)) - 1u);
  for (int64_t j = 0; j < ctx; ++j) {
    const float* kj = k + j * ldk;
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n16; i += 16)
      acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), _mm512_loadu_ps(kj + i), acc);
    if (tail)
      acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, q + n16), _mm512_maskz_loadu_ps(tail, kj + n16), acc);
    s[j] = scale * hsum16(acc);
  }
  cpu::softmax_prefix(s, ctx, ctx);
  // Two sets of accumulators (even and odd keys) halve the FMA latency chain.
  for (int64_t i0 = 0; i0 < hd; i0 += 64) {
    __m512 o[2][4];
    __mmask16 m[4];
    for (int c = 0; c < 4; ++c) {
      const int64_t left = std::clamp<int64_t>(hd - i0 - 16 * c, 0, 16);
      m[c] = static_cast<__mmask16>((1u << left) - 1u);
      o[0][c] = o[1][c] = _mm512_setzero_ps();
    }
    int64_t j = 0;
    for (; j + 2 <= ctx; j += 2)
      for (int e = 0; e < 2; ++e) {
        const __m512 p = _mm512_set1_ps(s[j + e]);
        const float* vj = v + (j + e) * ldk + i0;
        for (int c = 0; c < 4; ++c)
          o[e][c] = _mm512_fmadd_ps(p, _mm512_maskz_loadu_ps(m[c], vj + 16 * c), o[e][c]);
      }
    if (j < ctx) {
      const __m512 p = _mm512_set1_ps(s[j]);
      const float* vj = v + j * ldk + i0;
      for (int c = 0; c < 4; ++c)
        o[0][c] = _mm512_fmadd_ps(p, _mm512_maskz_loadu_ps(m[c], vj + 16 * c), o[0][c]);
    }
    for (int c = 0; c < 4; ++c)
      _mm512_mask_storeu_ps(out + i0 + 16 * c, m[c], _mm512_add_ps(o[0][c], o[1][c]));
  }
}
#endif

}  // namespace

void attention_cached_forward(float* out, float* scratch, const float* q, const float* k_cache,
                              const float* v_cache, int64_t n, int64_t pos0, int64_t H,
                              int64_t Hkv, int64_t hd) {
  const int64_t group = H / Hkv, ctx = pos0 + n;
  const int64_t ldq = H * hd, ldk = Hkv * hd;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  if (n == 1) {
    auto* attend = &attend_one;
#ifdef STEM_ATTN_X86
    if (matvec_path() == MatvecPath::kAvx512) attend = &attend_one_avx512;
#endif
    cpu::parallel_for(H, H * ctx * hd > kOneRowParallel, [&](int64_t h) {
      const int64_t g = h / group;
      attend(out + h * hd, scratch + h * ctx, q + h * hd, k_cache + g * hd, v_cache + g * hd, ctx,
             ldk, hd, scale);
    });
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

void attention_cached_slots_forward(float* out, float* scratch, const float* q, const float* k_cache,
                                    const float* v_cache, int64_t slot_stride, const CachedQuery* queries,
                                    int64_t n_queries, int64_t H, int64_t Hkv, int64_t hd) {
  const int64_t group = H / Hkv, ld = H * hd, ldk = Hkv * hd;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  int64_t width = 0, work = 0;
  for (int64_t i = 0; i < n_queries; ++i) {
    width = std::max(width, queries[i].ctx);
    work += H * queries[i].ctx * hd;
  }
  auto* attend = &attend_one;
#ifdef STEM_ATTN_X86
  if (matvec_path() == MatvecPath::kAvx512) attend = &attend_one_avx512;
#endif
  cpu::parallel_for(n_queries * H, work > kOneRowParallel, [&](int64_t task) {
    const CachedQuery& c = queries[task / H];
    const int64_t h = task % H, g = h / group, at = c.slot * slot_stride + g * hd;
    attend(out + c.row * ld + h * hd, scratch + task * width, q + c.row * ld + h * hd, k_cache + at, v_cache + at,
           c.ctx, ldk, hd, scale);
  });
}

}  // namespace stem::kernels
